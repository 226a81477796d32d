// Starts and stops the real server binary for one test: each test gets its own process on an
// ephemeral loopback port, so tests cannot see each other's channels.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SUITE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO_DIR = path.resolve(SUITE_DIR, '../../..');

/** The binary under test; `SERVER_BIN` overrides it (a relative path is taken from the suite). */
export const SERVER_BIN = path.resolve(
  SUITE_DIR,
  process.env.SERVER_BIN || '../../../target/release/broadcast-server',
);

const LISTENING = /listening on (https?):\/\/([0-9.]+):(\d+)/;
const START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3_000;
/** How much of the server's output is kept to explain a failure. */
const KEPT_OUTPUT_CHARS = 20_000;

/** Every server still running, so an abrupt end of the test process still stops them. */
const running = new Set();

process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of running) child.kill('SIGKILL');
    process.exit(130);
  });
}

/**
 * Runs the server on 127.0.0.1 with an ephemeral port and resolves once it announced its
 * address. The caller must `stop()` it (use `t.after` / `after`), whatever happens.
 *
 * @param {object} [options]
 * @param {string[]} [options.extraArgs] more command-line flags, e.g. `['--max-channels', '1']`
 * @returns {Promise<{url: string, output: () => string,
 *   stop: () => Promise<{code: number|null, signal: string|null}>}>} `stop` sends SIGTERM (SIGKILL
 *   after a grace period) and resolves with how the process ended
 */
export async function startServer({ extraArgs = [] } = {}) {
  const args = ['--host', '127.0.0.1', '--port', '0', ...extraArgs];
  const child = spawn(SERVER_BIN, args, {
    cwd: REPO_DIR,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', LOG_FORMAT: 'text' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  // Both pipes are drained for the whole life of the process: a full pipe would stall it.
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-KEPT_OUTPUT_CHARS);
  };
  child.stderr.on('data', keep);

  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });

  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const fail = (message) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${message}\n--- server output ---\n${output}`));
    };
    const timer = setTimeout(
      () => fail(`server did not announce its address within ${START_TIMEOUT_MS} ms`),
      START_TIMEOUT_MS,
    );
    child.once('error', (err) => fail(`cannot start ${SERVER_BIN}: ${err.message}`));
    exited.then(({ code, signal }) => fail(`server exited before listening (code ${code}, signal ${signal})`));
    child.stdout.on('data', (chunk) => {
      keep(chunk);
      if (seen === null) return;
      seen += chunk.toString();
      const match = LISTENING.exec(seen);
      if (match) {
        seen = null;
        clearTimeout(timer);
        resolve(`${match[1]}://${match[2]}:${match[3]}`);
      }
    });
  });

  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      return exited;
    })();
    return stopping;
  };
  return { url, output: () => output, stop };
}
