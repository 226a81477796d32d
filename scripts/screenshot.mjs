// Makes docs/screenshot.png (1200 px wide, the whole page): the served page of a broadcaster
// that is live, with one viewer watching and a chat line from it. Uses the release build and the e2e suite's playwright-core
// with Chromium's fake camera:
//
//   cargo build --release --bin broadcast-server
//   (cd e2e && npm ci)
//   node scripts/screenshot.mjs [out.png]
//
// SERVER_BIN and CHROMIUM override the server binary and the browser, as in e2e/README.md.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { chromium } = createRequire(path.join(REPO_DIR, 'e2e', 'package.json'))('playwright-core');
// The browser and its flags are the e2e suite's: one list to keep right.
const { CHROMIUM, CHROMIUM_ARGS } = await import('../e2e/lib/harness.mjs');

const SERVER_BIN = path.resolve(REPO_DIR, process.env.SERVER_BIN || 'target/release/broadcast-server');
const OUT = path.resolve(process.argv[2] || path.join(REPO_DIR, 'docs', 'screenshot.png'));
const VIEWPORT = { width: 1200, height: 750 };

async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function untilServing(url, deadline = Date.now() + 15_000) {
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${url}/livez`)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${SERVER_BIN} did not answer on ${url} within 15 s`);
}

const state = (page, wanted, timeout) =>
  page.waitForSelector(`#status[data-state="${wanted}"]`, { state: 'attached', timeout });

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = spawn(SERVER_BIN, ['--host', '127.0.0.1', '--port', String(port), '--ice-servers', '[]'], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
let browser;
try {
  await untilServing(url);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', ...CHROMIUM_ARGS],
  });

  const broadcaster = await (await browser.newContext({ viewport: VIEWPORT })).newPage();
  await broadcaster.goto(`${url}/?broadcaster=true&channel=demo`);
  await state(broadcaster, 'idle', 15_000);
  await broadcaster.click('#start-btn');
  await state(broadcaster, 'live', 20_000);
  await broadcaster.waitForFunction(() => document.querySelector('#viewer-link')?.value, null, { timeout: 5_000 });
  const link = await broadcaster.inputValue('#viewer-link');

  const viewer = await (await browser.newContext({ viewport: VIEWPORT })).newPage();
  await viewer.goto(link);
  await state(viewer, 'live', 25_000);
  await viewer.click('#alias-btn');
  await viewer.fill('#alias-input', 'Alice');
  await viewer.click('#alias-save');
  await viewer.waitForSelector('#alias-dialog[open]', { state: 'detached', timeout: 5_000 });
  await viewer.fill('#chat-input', 'Hello from the audience!');
  await viewer.click('#chat-send');

  await broadcaster.waitForFunction(
    () => document.querySelector('#chat-panel')?.textContent.includes('Hello from the audience!'),
    null,
    { timeout: 5_000 },
  );
  await broadcaster.waitForFunction(() => document.querySelector('#viewer-count')?.textContent.trim() === '1');
  // Let the preview show a few frames and the status settle.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  // Clicking may have left focus rings and a scrolled page.
  await broadcaster.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  // The whole page: status, camera, controls, viewer link and count, chat.
  await broadcaster.screenshot({ path: OUT, fullPage: true });
  console.log(`wrote ${OUT}`);
} finally {
  await browser?.close();
  server.kill('SIGTERM');
}
