// One real socket.io-client connection plus a recorder of every event the server sends it, so a
// test can take the events it expects in turn and then check that nothing else arrived.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { io as io454 } from 'sio454';
import { io as ioLatest } from 'siolatest';

import { startServer } from './server.js';

const require = createRequire(import.meta.url);

/**
 * The official clients under test: 4.5.4 is what legacy pages pin, the other the newest 4.x.
 * `SIO_CLIENTS=sio454` (or `siolatest`, comma-separated) restricts a run to some of them.
 */
const ALL_CLIENTS = [
  { pkg: 'sio454', io: io454 },
  { pkg: 'siolatest', io: ioLatest },
].map((client) => ({
  ...client,
  name: `socket.io-client@${require(`${client.pkg}/package.json`).version}`,
}));

const wanted = (process.env.SIO_CLIENTS || '').split(',').map((s) => s.trim()).filter(Boolean);
export const CLIENTS = wanted.length
  ? ALL_CLIENTS.filter((c) => wanted.includes(c.pkg))
  : ALL_CLIENTS;
if (CLIENTS.length === 0) throw new Error(`SIO_CLIENTS=${process.env.SIO_CLIENTS} matches no client`);

/** How the client reaches the server: its defaults (polling, then upgrade) or one transport. */
export const TRANSPORTS = {
  default: undefined,
  websocket: ['websocket'],
  polling: ['polling'],
};

const EVENT_TIMEOUT_MS = 5_000;
/** How long a test waits for stray events before it concludes that none will come. */
export const QUIET_MS = 300;

/**
 * Events of this project's extensions that legacy pages ignore: they may arrive at any time
 * without failing a test, but their payload must still have the documented shape.
 */
const TOLERATED = {
  viewer_count(args) {
    assert.equal(args.length, 1, 'viewer_count carries one argument');
    assert.deepEqual(Object.keys(args[0]).sort(), ['channel_id', 'count']);
    assert.equal(typeof args[0].channel_id, 'string');
    assert.ok(Number.isInteger(args[0].count) && args[0].count >= 0, 'count is a natural number');
  },
};

export class Peer {
  /**
   * @param {{name: string, io: Function}} client
   * @param {string} url
   * @param {{label: string, transport?: keyof TRANSPORTS, auth?: object}} options
   *   `auth`: the handshake's auth payload (legacy pages send none).
   */
  constructor(client, url, { label, transport = 'default', auth }) {
    this.label = `${label} (${client.name}, ${transport})`;
    this.inbox = [];
    this.waiters = [];
    this.transports = [];
    this.closedByTest = false;
    this.disconnectReason = null;
    /** The Engine.IO handshake (`sid`, `upgrades`, `pingInterval`, `pingTimeout`, `maxPayload`). */
    this.handshake = null;
    this.socket = client.io(url, {
      autoConnect: false,
      forceNew: true,
      reconnection: false,
      transports: TRANSPORTS[transport],
      ...(auth ? { auth } : {}),
    });
    this.socket.onAny((event, ...args) => this.#receive(event, args));
    this.socket.on('disconnect', (reason) => {
      this.disconnectReason = reason;
    });
  }

  /** Connects and takes the `client_id` the server sends first, checking it is the socket id and not the session id. */
  async connect() {
    const connected = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('connect_error', (err) => reject(new Error(`${this.label}: ${err.message}`)));
    });
    this.socket.connect();
    const engine = this.socket.io.engine;
    engine.once('handshake', (data) => {
      this.handshake = data;
    });
    this.transports.push(engine.transport.name);
    engine.on('upgrade', (transport) => this.transports.push(transport.name));
    await connected;
    assert.equal(typeof this.socket.id, 'string');
    assert.ok(this.socket.id.length > 0);
    await this.expect('client_id', { id: this.socket.id });
    // The published id is never the transport's session id (the credential of this connection).
    assert.notEqual(this.socket.io.engine.id, this.socket.id);
    return this;
  }

  get id() {
    return this.socket.id;
  }

  /** The transport in use now. */
  get transport() {
    return this.socket.io.engine.transport.name;
  }

  /** Resolves once the connection runs over WebSocket (after an upgrade from polling). */
  async upgraded(timeoutMs = EVENT_TIMEOUT_MS) {
    const engine = this.socket.io.engine;
    if (engine.transport.name === 'websocket') return;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.label}: no upgrade to websocket within ${timeoutMs} ms`)),
        timeoutMs,
      );
      engine.once('upgrade', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    assert.equal(engine.transport.name, 'websocket');
  }

  /** Emits `event`; `emit(event)` sends no argument at all, as `socket.emit(event)` would. */
  emit(event, ...args) {
    this.socket.emit(event, ...args);
  }

  #receive(event, args) {
    const index = this.waiters.findIndex((w) => w.event === event);
    if (index >= 0) {
      const [waiter] = this.waiters.splice(index, 1);
      waiter.resolve(args);
    } else {
      this.inbox.push({ event, args });
    }
  }

  /** The arguments of the next `event` not taken yet, waiting for it if needed. */
  next(event, timeoutMs = EVENT_TIMEOUT_MS) {
    const index = this.inbox.findIndex((e) => e.event === event);
    if (index >= 0) return Promise.resolve(this.inbox.splice(index, 1)[0].args);
    return new Promise((resolve, reject) => {
      const waiter = {
        event,
        resolve: (args) => {
          clearTimeout(timer);
          resolve(args);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(
          `${this.label}: no '${event}' within ${timeoutMs} ms; received instead: ${describe(this.inbox)}`,
        ));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Takes the next `event` and checks it carries exactly the one argument `payload`. */
  async expect(event, payload) {
    const args = await this.next(event);
    assert.deepStrictEqual(args, [payload], `${this.label}: payload of '${event}'`);
    return args[0];
  }

  /** Takes the next `event` and returns its single argument for the caller to check. */
  async one(event) {
    const args = await this.next(event);
    assert.equal(args.length, 1, `${this.label}: '${event}' carries one argument, got ${JSON.stringify(args)}`);
    return args[0];
  }

  /** Takes the next `error` and checks its message is exactly `message`. */
  async expectError(message) {
    return this.expect('error', { message });
  }

  /** Takes the next `error` and checks its message starts with `prefix`; returns the message. */
  async expectErrorPrefix(prefix) {
    const payload = await this.one('error');
    assert.deepEqual(Object.keys(payload), ['message'], `${this.label}: error payload keys`);
    assert.equal(typeof payload.message, 'string');
    assert.ok(
      payload.message.startsWith(prefix) && payload.message.length > prefix.length,
      `${this.label}: error message ${JSON.stringify(payload.message)} should start with ${JSON.stringify(prefix)} and give a reason`,
    );
    return payload.message;
  }

  /** Takes the next `relay_error` and checks it names `event` and gives a reason. */
  async expectRelayError(event) {
    const payload = await this.one('relay_error');
    assert.deepEqual(Object.keys(payload).sort(), ['event', 'message'], `${this.label}: relay_error keys`);
    assert.equal(payload.event, event, `${this.label}: relay_error.event`);
    assert.equal(typeof payload.message, 'string');
    assert.ok(payload.message.length > 0, 'relay_error.message is not empty');
    return payload;
  }

  /** Everything received and not taken, except tolerated extension events (which are checked). */
  unexpected() {
    const left = [];
    for (const entry of this.inbox) {
      const check = TOLERATED[entry.event];
      if (check) check(entry.args);
      else left.push(entry);
    }
    return left;
  }

  /** Takes and returns the tolerated `event`s received so far (e.g. `viewer_count`). */
  drain(event) {
    const taken = this.inbox.filter((e) => e.event === event).map((e) => e.args);
    this.inbox = this.inbox.filter((e) => e.event !== event);
    return taken;
  }

  close() {
    this.closedByTest = true;
    this.socket.disconnect();
  }
}

function describe(inbox) {
  if (inbox.length === 0) return 'nothing';
  return inbox.map((e) => `${e.event} ${JSON.stringify(e.args)}`).join(', ');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits `QUIET_MS` and then checks that no peer received an event the test did not take and
 * that every peer the test did not close is still connected.
 */
export async function assertQuiet(...peers) {
  await sleep(QUIET_MS);
  for (const peer of peers) {
    assert.deepStrictEqual(peer.unexpected(), [], `${peer.label}: unexpected events`);
    if (!peer.closedByTest) {
      assert.equal(peer.disconnectReason, null, `${peer.label}: disconnected unexpectedly`);
      assert.equal(peer.socket.connected, true, `${peer.label}: still connected`);
    }
  }
}

/**
 * A test's world: its own server and every peer it opens, torn down by `close()` whatever
 * happened. `peer()` connects a new client and takes its `client_id`.
 */
export async function world(t, client, { extraArgs } = {}) {
  const server = await startServer({ extraArgs });
  const peers = [];
  t.after(async () => {
    for (const p of peers) p.socket.disconnect();
    await server.stop();
  });
  return {
    server,
    async peer(label, transport = 'default', { auth } = {}) {
      const p = new Peer(client, server.url, { label, transport, auth });
      peers.push(p);
      return p.connect();
    },
  };
}

let counter = 0;
/** A channel id unique within this test process, valid for the protocol (`[A-Za-z0-9_-]{1,20}`). */
export function channelId(prefix = 'ch') {
  counter += 1;
  return `${prefix}-${process.pid % 10000}-${counter}`.slice(0, 20);
}
