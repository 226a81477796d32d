#!/usr/bin/env node
// Runs the end-to-end scenarios one after another, each with its own server and browser,
// each under a time limit. Prints one line per scenario with its duration, and as the
// last line `N passed, N failed`; exits 1 if anything failed.
//
//   node run.mjs                 every scenario
//   node run.mjs chat 9          only scenarios whose name contains "chat" or "9"
//   node run.mjs --repeat 2      everything twice in a row (flake check)
//
// Environment: SERVER_BIN (default ../target/release/broadcast-server), CHROMIUM
// (default /usr/bin/chromium), E2E_TIMEOUT_MS (per scenario, default 120000), TURNSERVER,
// REDIS_URL.
//
// Before each scenario its prerequisites (the server binary, Chromium, and what it lists in
// `needs`: coturn, Redis) are probed; a missing one fails it at once, saying how to install it.

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { CHROMIUM, Scenario } from './lib/harness.mjs';
import { ARTIFACTS_DIR } from './lib/paths.mjs';
import { missingFor } from './lib/prerequisites.mjs';
import { SERVER_BIN } from './lib/server.mjs';
import { TURNSERVER } from './lib/turn.mjs';
import { scenarios } from './scenarios.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 120_000);

function parseArgs(argv) {
  const filters = [];
  let repeat = 1;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--repeat') repeat = Number(argv[++i]);
    else if (arg.startsWith('--repeat=')) repeat = Number(arg.slice('--repeat='.length));
    else filters.push(arg);
  }
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat wants a positive integer');
  return { filters, repeat };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function runOne(scenario) {
  const s = new Scenario(scenario.name);
  const started = Date.now();
  let error = null;
  let detail = '';
  try {
    const missing = await missingFor(scenario, { serverBin: SERVER_BIN, chromium: CHROMIUM, turnserver: TURNSERVER });
    if (missing.length) throw new Error(missing.join('\n'));
    detail = (await withTimeout(scenario.run(s), TIMEOUT_MS, scenario.name)) ?? '';
    s.assertClean();
  } catch (err) {
    error = err;
    // An uncaught page error or a blocked script usually is the cause of whatever timed out
    // after it (assertClean's own error already holds them).
    const seen = s.pageProblems().filter((section) => !err.message.includes(section));
    if (seen.length) error = new Error(`${err.message}\n${seen.join('\n')}`);
  }
  // Screenshots, browser and server go away whatever happened above.
  const problems = await s.finish();
  if (!error && problems.length) error = new Error(problems.join('; '));
  return { name: scenario.name, seconds: (Date.now() - started) / 1000, error, detail, dir: s.dir };
}

async function main() {
  const { filters, repeat } = parseArgs(process.argv.slice(2));
  const selected = scenarios.filter((sc) => !filters.length || filters.some((f) => sc.name.includes(f)));
  if (!selected.length) {
    console.log(`no scenario matches ${filters.join(' ')}; known: ${scenarios.map((sc) => sc.name).join(', ')}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  mkdirSync(ARTIFACTS_DIR, { recursive: true });

  const results = [];
  for (let round = 1; round <= repeat; round++) {
    if (repeat > 1) console.log(`round ${round} of ${repeat}`);
    for (const scenario of selected) {
      const result = await runOne(scenario);
      results.push({ round, ...result });
      const time = `${result.seconds.toFixed(1)} s`;
      if (result.error) {
        console.log(`FAIL ${scenario.name} (${time}): ${scenario.title}`);
        // Playwright's messages carry terminal colour codes; the log is read as plain text.
        const message = String(result.error.message).replace(/\x1b\[[0-9;]*m/g, '');
        console.log(`     ${message.split('\n').join('\n     ')}`);
        console.log(`     artifacts: ${path.relative(process.cwd(), result.dir) || '.'}`);
      } else {
        console.log(`ok   ${scenario.name} (${time})${result.detail ? `: ${result.detail}` : ''}`);
      }
    }
  }

  writeFileSync(
    path.join(ARTIFACTS_DIR, 'summary.json'),
    JSON.stringify(
      results.map(({ round, name, seconds, error, detail }) => ({
        round, name, seconds, passed: !error, detail, error: error?.message ?? null,
      })),
      null,
      2,
    ),
  );
  const failed = results.filter((r) => r.error).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.log(`runner crashed: ${err.stack || err}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
