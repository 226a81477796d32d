// A real TURN server for the relay scenario: Debian's coturn (`turnserver`) on loopback, with
// time-limited credentials (`use-auth-secret`) under a secret made for the run. Stopped by its
// own process id.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** coturn's server: `TURNSERVER`, or `turnserver` on PATH. */
export const TURNSERVER = process.env.TURNSERVER || 'turnserver';
const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

/** turnserver processes still running, so an abrupt exit of the runner stops them too. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** coturn's password for a REST API username: base64(HMAC-SHA1(secret, username)). */
export function coturnCredential(secret, username) {
  return createHmac('sha1', secret).update(username).digest('base64');
}

/** A port free for both UDP and TCP on 127.0.0.1 right now (coturn listens on both). */
async function freePort() {
  for (let attempt = 0; attempt < 20; attempt++) {
    const udp = dgram.createSocket('udp4');
    const port = await new Promise((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
    });
    const tcpFree = await new Promise((resolve) => {
      const probe = net.createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    await new Promise((resolve) => udp.close(resolve));
    if (tcpFree) return port;
  }
  throw new Error('no port free for both UDP and TCP on 127.0.0.1');
}

/** Whether a STUN Binding request to 127.0.0.1:`port` gets a Binding success response. */
function stunAnswers(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const transaction = randomBytes(12);
    // RFC 5389 header: Binding request (0x0001), no attributes, the magic cookie, a transaction id.
    const request = Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), transaction]);
    const done = (ok) => {
      clearTimeout(timer);
      socket.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('error', () => done(false));
    socket.on('message', (reply) => {
      if (reply.length >= 20 && reply.readUInt16BE(0) === 0x0101 && reply.subarray(8, 20).equals(transaction)) done(true);
    });
    socket.send(request, port, '127.0.0.1');
  });
}

/**
 * Starts `turnserver` on 127.0.0.1 (listening and relaying there, peers on loopback allowed,
 * no TLS/DTLS, no CLI, no configuration file) and resolves once it answers STUN.
 *
 * @param {object} options
 * @param {string} options.logFile where its output goes
 * @returns {Promise<{port: number, secret: string, pid: number, url: string,
 *   stop: () => Promise<{code: number|null, signal: string|null, killed: boolean}>}>}
 */
export async function startTurnServer({ logFile }) {
  const port = await freePort();
  // Always starting with "-": a secret is any string, and one that looks like a flag must still
  // reach coturn and the server as a value (`--flag=value` or the environment, never an argument
  // of its own, which a parser reads as a flag).
  const secret = `-${randomBytes(24).toString('base64url')}`;
  // Its database and pid file go to a folder of its own rather than /var.
  const dir = mkdtempSync(path.join(tmpdir(), 'broadcast-e2e-turn-'));
  const args = [
    '-n',
    `--listening-port=${port}`,
    '--listening-ip=127.0.0.1',
    '--relay-ip=127.0.0.1',
    '--use-auth-secret',
    `--static-auth-secret=${secret}`,
    '--realm=test',
    '--no-tls',
    '--no-dtls',
    '--allow-loopback-peers',
    '--no-cli',
    '--no-rfc5780',
    '--log-file=stdout',
    // Logs each allocation with its username, which the scenario looks for.
    '--verbose',
    `--userdb=${path.join(dir, 'turndb')}`,
    `--pidfile=${path.join(dir, 'turnserver.pid')}`,
  ];
  const log = createWriteStream(logFile);
  const child = spawn(TURNSERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
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
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const failed = new Promise((_, reject) => {
    child.once('error', (err) => {
      const hint = err.code === 'ENOENT' ? '; install it with bash scripts/install-test-deps.sh' : '';
      reject(new Error(`cannot start ${TURNSERVER}: ${err.message}${hint}`));
    });
    exited.then(({ code, signal }) => reject(new Error(`turnserver exited (code ${code}, signal ${signal}); see ${logFile}`)));
  });
  // Only the start waits on these; a later exit shows in the scenario's own checks.
  failed.catch(() => {});

  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      let killed = false;
      if (child.pid && child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          killed = true;
          process.kill(child.pid, 'SIGKILL');
        }, STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      await new Promise((resolve) => log.end(resolve));
      rmSync(dir, { recursive: true, force: true });
      return { ...(await exited), killed };
    })();
    return stopping;
  };

  const ready = (async () => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (await stunAnswers(port)) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`turnserver did not answer STUN on 127.0.0.1:${port} within ${START_TIMEOUT_MS} ms; see ${logFile}`);
  })();
  ready.catch(() => {});
  try {
    await Promise.race([ready, failed]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, secret, pid: child.pid, url: `turn:127.0.0.1:${port}?transport=udp`, stop };
}
