// Starts and stops the real release server for one scenario, and makes the
// throw-away TLS certificate the HTTPS scenario needs.

import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { E2E_DIR, REPO_DIR } from './paths.mjs';

/** The binary under test; `SERVER_BIN` overrides it (relative paths are taken from e2e/). */
export const SERVER_BIN = path.resolve(
  E2E_DIR,
  process.env.SERVER_BIN || '../target/release/broadcast-server',
);

const LISTENING = /listening on (https?):\/\/([0-9.]+):(\d+)/;
const START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;

/** Every server still running, so an abrupt exit of the runner can still stop them. */
const running = new Set();

function killAll() {
  for (const child of running) child.kill('SIGKILL');
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/**
 * Runs the server on 127.0.0.1 with an ephemeral port and no ICE servers (the page
 * must connect with host candidates alone), and resolves once it announced its address.
 *
 * @param {object} options
 * @param {string} options.logFile where the server's stdout and stderr go
 * @param {{cert: string, key: string}} [options.tls] PEM paths: serve HTTPS
 * @param {number} [options.port] a fixed port (to restart on the same address); 0 = any
 * @param {string[]} [options.extraArgs]
 * @returns {Promise<{url: string, origin: string, stop: () => Promise<void>}>}
 */
export async function startServer({ logFile, tls, port = 0, extraArgs = [] }) {
  const args = ['--host', '127.0.0.1', '--port', String(port), '--ice-servers', '[]', ...extraArgs];
  if (tls) args.push('--tls-cert', tls.cert, '--tls-key', tls.key);

  const log = createWriteStream(logFile);
  // The repository root is the working directory so the server finds templates/ and
  // assets/ the way it does when run from a checkout.
  const child = spawn(SERVER_BIN, args, {
    cwd: REPO_DIR,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', LOG_FORMAT: 'text', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  child.stderr.pipe(log, { end: false });

  const origin = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`server did not announce its address within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${SERVER_BIN}: ${err.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited before listening (code ${code}, signal ${signal}); see ${logFile}`));
    });
    child.stdout.on('data', (chunk) => {
      log.write(chunk);
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
      await new Promise((resolve) => log.end(resolve));
    })();
    return stopping;
  };
  return { origin, url: `${origin}/`, stop };
}

/**
 * A self-signed certificate for 127.0.0.1 in a fresh temporary folder, plus the base64
 * SHA-256 of its public key, which is what Chromium's
 * `--ignore-certificate-errors-spki-list` wants: Chromium trusts this one key, nothing else.
 */
export function makeSelfSignedCert() {
  const dir = mkdtempSync(path.join(tmpdir(), 'broadcast-e2e-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const publicKeyDer = execFileSync('openssl', ['pkey', '-in', key, '-pubout', '-outform', 'der']);
  const spki = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: publicKeyDer })
    .toString('base64');
  return { cert, key, spki, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
