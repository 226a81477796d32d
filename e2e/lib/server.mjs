// Starts and stops the real release server for one scenario, and makes the
// throw-away TLS certificate the HTTPS scenario needs.

import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
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

/**
 * Server options that take no value; every other argument must be `--name=value` (see
 * `checkServerArgs`). None is used today.
 */
const VALUELESS_FLAGS = new Set([]);
/** Options whose value is a secret: better given through `env` (TURN_SECRET, METRICS_TOKEN). */
const SECRET_FLAGS = new Set(['--turn-secret', '--metrics-token']);
/**
 * The only variables of the runner's environment a server inherits: nothing of the developer's
 * shell (a `REDIS_URL` meant for the cluster scenario, a `TURN_SECRET`, a `PORT`) may configure
 * the server under test behind the scenario's back.
 */
const INHERITED_ENV = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ', 'RUST_BACKTRACE', 'SSL_CERT_FILE', 'SSL_CERT_DIR'];

/**
 * Throws unless every argument is `--name=value` (or a known valueless flag). A value given as
 * an argument of its own is read as a flag when it starts with "-" (a random secret does one
 * time in 64: "unexpected argument '-9' found"), and the parser's error then quotes it. The
 * message names the position and the flag before it, never the value.
 */
export function checkServerArgs(args) {
  args.forEach((arg, i) => {
    const where = `server argument ${i + 1}${i > 0 ? ` (after ${String(args[i - 1]).split('=')[0]})` : ''}`;
    if (typeof arg !== 'string') throw new Error(`${where} is not a string`);
    const flag = arg.split('=')[0];
    if (SECRET_FLAGS.has(flag) && !arg.includes('=')) {
      throw new Error(`${where}: ${flag} takes its value as ${flag}=VALUE or, better, from the environment, never as the next argument`);
    }
    if (!arg.startsWith('--')) {
      throw new Error(`${where} is a value on its own: give every value as --flag=value (a value starting with "-" would be read as a flag)`);
    }
    if (!arg.includes('=') && !VALUELESS_FLAGS.has(flag)) {
      throw new Error(`${where}: ${flag} has no "=value"; give every value as ${flag}=value, in the same argument`);
    }
  });
  return args;
}

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

/** A TCP port free on 127.0.0.1 right now (the kernel's pick for a listener on port 0). */
async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * Runs the server on 127.0.0.1 with an ephemeral port and no ICE servers (the page
 * must connect with host candidates alone), and resolves once it is ready: once it announced
 * its address, or, with `ready`, once `GET /healthz` answers 200 with a body `ready` accepts
 * (the port is then picked beforehand).
 *
 * @param {object} options
 * @param {string} options.logFile where the server's stdout and stderr go
 * @param {{cert: string, key: string}} [options.tls] PEM paths: serve HTTPS
 * @param {number} [options.port] a fixed port (to restart on the same address); 0 = any
 * @param {string[]} [options.extraArgs] each `--name=value` (checkServerArgs)
 * @param {Record<string, string>} [options.env] environment variables for the server, the way
 *   to hand it secrets (`TURN_SECRET`, `METRICS_TOKEN`): not in its command line
 * @param {(health: object) => boolean} [options.ready] readiness from `/healthz` (plain HTTP)
 * @returns {Promise<{url: string, origin: string, pid: number,
 *   stop: () => Promise<{code: number|null, signal: string|null, killed: boolean}>}>}
 */
export async function startServer({ logFile, tls, port = 0, extraArgs = [], env = {}, ready }) {
  if (ready && tls) throw new Error('readiness from /healthz is only read over plain HTTP');
  if (ready && port === 0) port = await freePort();
  const args = ['--host=127.0.0.1', `--port=${port}`, '--ice-servers=[]', ...extraArgs];
  if (tls) args.push(`--tls-cert=${tls.cert}`, `--tls-key=${tls.key}`);
  checkServerArgs(args);
  const inherited = Object.fromEntries(INHERITED_ENV.filter((name) => name in process.env).map((name) => [name, process.env[name]]));

  const log = createWriteStream(logFile);
  // The repository root is the working directory so the server finds templates/ and
  // assets/ the way it does when run from a checkout.
  const child = spawn(SERVER_BIN, args, {
    cwd: REPO_DIR,
    env: { ...inherited, RUST_LOG: process.env.RUST_LOG || 'info', LOG_FORMAT: 'text', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  // A process that could not be spawned (no such file) emits `error` and never `exit`.
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
    child.once('error', () => {
      if (child.pid === undefined) {
        running.delete(child);
        resolve({ code: null, signal: null });
      }
    });
  });
  child.stderr.pipe(log, { end: false });
  child.stdout.pipe(log, { end: false });

  // Resolves with how the server ended: `{code, signal}`, `killed` if it needed SIGKILL.
  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      let killed = false;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      await new Promise((resolve) => log.end(resolve));
      return { ...(await exited), killed };
    })();
    return stopping;
  };

  let timer;
  const gaveUp = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`server was not ready within ${START_TIMEOUT_MS} ms; see ${logFile}`)), START_TIMEOUT_MS);
    child.once('error', (err) => reject(new Error(`cannot start ${SERVER_BIN}: ${err.message}`)));
    exited.then(({ code, signal }) =>
      reject(new Error(`server exited before it was ready (code ${code}, signal ${signal}); see ${logFile}`)));
  });
  let origin;
  try {
    origin = await Promise.race([
      ready ? untilHealthy(`http://127.0.0.1:${port}`, ready, () => stopping !== null) : announcedOrigin(child),
      gaveUp,
    ]);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { origin, url: `${origin}/`, pid: child.pid, stop };
}

/** The address the server announces in its log (`listening on http://IP:PORT`). */
function announcedOrigin(child) {
  return new Promise((resolve) => {
    let seen = '';
    const scan = (chunk) => {
      seen += chunk.toString();
      const match = LISTENING.exec(seen);
      if (match) {
        child.stdout.off('data', scan);
        resolve(`${match[1]}://${match[2]}:${match[3]}`);
      }
    };
    child.stdout.on('data', scan);
  });
}

/**
 * Polls `GET /healthz` until it answers 200 with a JSON body `ready` accepts; resolves with
 * the origin. Stops polling once `cancelled()` (the start gave up meanwhile).
 */
async function untilHealthy(origin, ready, cancelled) {
  while (!cancelled()) {
    try {
      const response = await fetch(`${origin}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (response.status === 200 && ready(await response.json())) return origin;
    } catch {
      // Not listening yet, or not answering yet: ask again.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return origin;
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
