'use strict';
// Idle connections from the official `socket.io-client` (WebSocket transport only), held while
// the server's resident memory is read: the same figure as `bench idle`, measured with the
// client real pages use rather than the generator's own, so that the two can be compared.
//
// Usage: node idle.js N --url http://127.0.0.1:PORT --pid PID [--hold-secs 30]
//                       [--concurrency 200] [--source-ips 32]
// Prints one JSON line: rss_before_kib (fresh server), rss_held_kib (after the hold),
// rss_per_conn_bytes = (held - before) * 1024 / connected, and the client's own figures.

const fs = require('node:fs');
const { io } = require('socket.io-client');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const connections = Number(process.argv[2]);
const url = option('url', 'http://127.0.0.1:3000');
const pid = option('pid', null);
const holdSecs = Number(option('hold-secs', '30'));
const concurrency = Number(option('concurrency', '200'));
const sourceIps = Number(option('source-ips', '32'));

if (!Number.isInteger(connections) || connections <= 0) {
  console.error('usage: node idle.js N --url http://127.0.0.1:PORT --pid PID [--hold-secs 30]');
  process.exit(2);
}
// Like the generator: loopback only, so that a typo never loads somebody else's server.
const host = new URL(url).hostname;
if (!/^127\./.test(host) && host !== 'localhost') {
  console.error(`refusing a non-loopback --url: ${url}`);
  process.exit(2);
}

/** VmRSS of a process in KiB, or null without a pid. */
function rssKib(of) {
  if (of === null) return null;
  const status = fs.readFileSync(`/proc/${of}/status`, 'utf8');
  const line = status.split('\n').find((l) => l.startsWith('VmRSS:'));
  return line ? Number(line.split(/\s+/)[1]) : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One socket on its own connection, resolved once connected (rejected on an error). */
function open(index) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: 20000,
      // Several loopback source addresses, as the generator does, so ports never run out.
      localAddress: `127.0.0.${2 + (index % sourceIps)}`,
    });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (e) => {
      socket.close();
      reject(e);
    });
  });
}

async function main() {
  const before = rssKib(pid);
  const ownBefore = process.memoryUsage().rss / 1024;
  const sockets = [];
  let errors = 0;
  let next = 0;
  const started = Date.now();
  async function worker() {
    while (next < connections) {
      const index = next++;
      try {
        sockets.push(await open(index));
      } catch (e) {
        errors += 1;
        if (errors <= 5) console.error(`connection ${index}: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, connections) }, worker));
  const connectSecs = (Date.now() - started) / 1000;
  let lost = 0;
  for (const socket of sockets) socket.on('disconnect', () => (lost += 1));

  // Let the connection burst settle, then hold (the server pings every 25 s).
  await sleep(2000);
  const heldStart = rssKib(pid);
  await sleep(holdSecs * 1000);
  const held = rssKib(pid);
  const ownHeld = process.memoryUsage().rss / 1024;
  const connected = sockets.length;
  const lostDuringHold = lost;
  for (const socket of sockets) socket.close();

  const perConn = (b, h) => (b === null || h === null || connected === 0 ? null : ((h - b) * 1024) / connected);
  const result = {
    scenario: 'idle-official-client',
    client: `socket.io-client ${require('socket.io-client/package.json').version}`,
    node: process.version,
    connections,
    connected,
    connect_per_s: connected / Math.max(connectSecs, 1e-9),
    hold_secs: holdSecs,
    rss_before_kib: before,
    rss_held_start_kib: heldStart,
    rss_held_kib: held,
    rss_per_conn_bytes: perConn(before, held),
    client_rss_per_conn_bytes: perConn(ownBefore, ownHeld),
    lost_during_hold: lostDuringHold,
    errors,
  };
  console.log(JSON.stringify(result));
  await sleep(500);
  process.exit(errors > 0 || lostDuringHold > 0 ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
