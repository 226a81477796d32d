'use strict';
// Reference peer for the benchmark: the broadcast signaling protocol (PROTOCOL.md, with the
// extensions the served page relies on) on the official `socket.io` server for Node.js.
//
// It keeps the same state, the same checks and the same emits as the Rust server so that the
// benchmark compares equal work: one channel registry with a per-socket index (bounded work per
// event), relay authorization, chat to every participant, validation with the same limits.
//
// Usage: node server.js [--host 127.0.0.1] [--port 0] [--max-channels 100]
//                       [--channel-ttl-secs 3600]
// Prints `listening on http://HOST:PORT` once it accepts connections.

const http = require('node:http');
const crypto = require('node:crypto');
const { Server } = require('socket.io');

// ---------------------------------------------------------------------------------------------
// Configuration: flags, then environment, then the defaults of the Rust server.

function option(name, env, fallback) {
  const flag = `--${name}`;
  const i = process.argv.indexOf(flag);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`${flag}=`));
  if (eq) return eq.slice(flag.length + 1);
  if (process.env[env] !== undefined) return process.env[env];
  return fallback;
}

const config = {
  host: option('host', 'HOST', '0.0.0.0'),
  port: Number(option('port', 'PORT', '3000')),
  maxChannels: Number(option('max-channels', 'MAX_CHANNELS', '100')),
  channelTtlMs: Number(option('channel-ttl-secs', 'CHANNEL_TTL_SECS', '3600')) * 1000,
};
for (const [key, value] of Object.entries(config)) {
  if (key !== 'host' && !(Number.isInteger(value) && value >= 0)) {
    console.error(`invalid ${key}: ${value}`);
    process.exit(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation, with the limits of PROTOCOL.md (lengths in Unicode characters, trimmed values).

const CHANNEL_ID = /^[A-Za-z0-9_-]{1,20}$/;
const ALIAS = /^[A-Za-z0-9\s_-]+$/;
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/;
const FORBIDDEN = /<script|javascript:|onerror\s*=|onclick\s*=|onload\s*=/i;
const MAX_SDP_BYTES = 64 * 1024;
const MAX_CANDIDATE_BYTES = 4 * 1024;

class Invalid extends Error {}

const chars = (s) => [...s].length;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** A missing or null payload counts as `{}`; anything else that is not an object is invalid. */
function payloadObject(data) {
  if (data === undefined || data === null) return {};
  if (!isObject(data)) throw new Invalid('payload must be a JSON object');
  return data;
}

function channelId(data, required) {
  const raw = data.channel_id;
  if (raw === undefined || raw === null) {
    if (required) throw new Invalid('channel_id is required');
    return null;
  }
  if (typeof raw !== 'string') throw new Invalid('channel_id must be a string');
  const id = raw.trim();
  if (id === '') {
    if (required) throw new Invalid('channel_id is required');
    return null;
  }
  if (chars(id) > 20) throw new Invalid('channel_id must be at most 20 characters');
  if (!CHANNEL_ID.test(id)) throw new Invalid('channel_id may contain only letters, digits, _ and -');
  return id;
}

function force(data) {
  if (data.force === undefined || data.force === null) return false;
  if (typeof data.force !== 'boolean') throw new Invalid('force must be a boolean');
  return data.force;
}

function alias(data) {
  if (typeof data.alias !== 'string') throw new Invalid('alias is required and must be a string');
  const value = data.alias.trim();
  const n = chars(value);
  if (n < 5 || n > 20) throw new Invalid('alias must be 5 to 20 characters');
  if (!ALIAS.test(value)) throw new Invalid('alias may contain only letters, digits, spaces, _ and -');
  return value;
}

function message(data) {
  if (typeof data.message !== 'string') throw new Invalid('message is required and must be a string');
  const value = data.message.trim();
  const n = chars(value);
  if (n < 1 || n > 200) throw new Invalid('message must be 1 to 200 characters');
  if (CONTROL.test(value)) throw new Invalid('message contains control characters');
  if (FORBIDDEN.test(value)) throw new Invalid('message contains forbidden content');
  return value;
}

// ---------------------------------------------------------------------------------------------
// The channel registry: channels, and a per-socket index that bounds the work of every event.

const nowUnix = () => Date.now() / 1000;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** id -> { id, broadcaster, createdAt, lastActivity (unix s), viewers: Map<sid, alias|null> } */
const channels = new Map();
/** sid -> { broadcasting: Set<channelId>, watching: Set<channelId> } */
const memberships = new Map();

function membership(sid) {
  let m = memberships.get(sid);
  if (!m) {
    m = { broadcasting: new Set(), watching: new Set() };
    memberships.set(sid, m);
  }
  return m;
}

function unindex(sid, id, which) {
  const m = memberships.get(sid);
  if (!m) return;
  m[which].delete(id);
  if (m.broadcasting.size === 0 && m.watching.size === 0) memberships.delete(sid);
}

function freshChannelId() {
  for (;;) {
    const bytes = crypto.randomBytes(8);
    let id = '';
    for (const b of bytes) id += ID_ALPHABET[b % ID_ALPHABET.length];
    if (!channels.has(id)) return id;
  }
}

const room = (id) => `channel:${id}`;

/** Removes a channel, its index entries and its room; returns it. */
function closeChannel(id) {
  const channel = channels.get(id);
  if (!channel) return null;
  channels.delete(id);
  unindex(channel.broadcaster, id, 'broadcasting');
  for (const viewer of channel.viewers.keys()) unindex(viewer, id, 'watching');
  io.in(room(id)).socketsLeave(room(id));
  return channel;
}

/** Whether `sender` and `target` share a channel as broadcaster and viewer (either way). */
function peersIn(sender, target) {
  const m = memberships.get(sender);
  if (!m) return null;
  for (const id of m.broadcasting) {
    const c = channels.get(id);
    if (c && c.viewers.has(target)) return c;
  }
  for (const id of m.watching) {
    const c = channels.get(id);
    if (c && c.broadcaster === target) return c;
  }
  return null;
}

function sendTo(sid, event, payload) {
  const socket = io.sockets.sockets.get(sid);
  if (socket) socket.emit(event, payload);
}

function viewerCount(channel) {
  sendTo(channel.broadcaster, 'viewer_count', { channel_id: channel.id, count: channel.viewers.size });
}

// ---------------------------------------------------------------------------------------------
// HTTP: health only (the page and assets are not part of the benchmark).

const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    const body = JSON.stringify({ status: 'ok', channels: channels.size, sockets: io.of('/').sockets.size });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found');
});

// Transport settings of PROTOCOL.md: ping 25 s / 20 s, 1,000,000-byte inbound bound.
const io = new Server(httpServer, {
  path: '/socket.io/',
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
  cors: { origin: '*' },
  transports: ['polling', 'websocket'],
});

// ---------------------------------------------------------------------------------------------
// Events, in PROTOCOL.md order.

io.on('connection', (socket) => {
  const sid = socket.id;
  socket.emit('client_id', { id: sid });

  /** Runs a handler, turning validation failures into `error {message: "<prefix> <reason>"}`. */
  const on = (event, prefix, handler) => {
    socket.on(event, (data) => {
      try {
        handler(data);
      } catch (err) {
        if (err instanceof Invalid) socket.emit('error', { message: `${prefix} ${err.message}` });
        else throw err;
      }
    });
  };

  on('join_as_broadcaster', 'Invalid data:', (raw) => {
    const data = payloadObject(raw);
    const requested = channelId(data, false);
    const again = force(data);
    const id = requested ?? freshChannelId();
    const existing = channels.get(id);
    if (existing) {
      if (again && existing.broadcaster === sid) {
        existing.lastActivity = nowUnix();
        socket.emit('broadcaster_ready', { id: sid, channel_id: id });
        for (const viewer of existing.viewers.keys()) {
          sendTo(viewer, 'broadcaster_available', { broadcaster_id: sid, channel_id: id });
        }
        return;
      }
      socket.emit('error', { message: `Channel ${id} already has a broadcaster` });
      return;
    }
    if (channels.size >= config.maxChannels) {
      socket.emit('error', {
        message: `Server is at capacity (${config.maxChannels} channels); try again later`,
      });
      return;
    }
    const now = nowUnix();
    channels.set(id, { id, broadcaster: sid, createdAt: now, lastActivity: now, viewers: new Map() });
    membership(sid).broadcasting.add(id);
    socket.join(room(id));
    socket.emit('broadcaster_ready', { id: sid, channel_id: id });
  });

  on('join_as_viewer', 'Invalid data:', (raw) => {
    const data = payloadObject(raw);
    const id = channelId(data, false);
    if (id === null) {
      const now = nowUnix();
      const list = [...channels.values()]
        .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1))
        .map((c) => ({
          id: c.id,
          broadcaster_sid: c.broadcaster,
          created_at: c.createdAt,
          age_seconds: Math.max(0, Math.floor(now - c.createdAt)),
          last_activity: c.lastActivity,
        }));
      socket.emit('channel_list', { channels: list });
      return;
    }
    const channel = channels.get(id);
    if (!channel) {
      socket.emit('error', { message: `Channel ${id} not found or expired` });
      return;
    }
    channel.lastActivity = nowUnix();
    const isNew = !channel.viewers.has(sid);
    if (isNew) channel.viewers.set(sid, null);
    membership(sid).watching.add(id);
    socket.join(room(id));
    socket.emit('broadcaster_available', { broadcaster_id: channel.broadcaster, channel_id: id });
    if (isNew) viewerCount(channel);
  });

  const relay = (event, field, maxBytes, refresh) => {
    socket.on(event, (data) => {
      const refuse = (reason) => socket.emit('relay_error', { event, message: reason });
      if (!isObject(data)) return refuse('payload must be a JSON object');
      if (typeof data.target !== 'string') return refuse('target is required and must be a string');
      const body = data[field];
      if (!isObject(body)) return refuse(`${field} is required and must be an object`);
      if (Buffer.byteLength(JSON.stringify(body)) > maxBytes) {
        return refuse(`${field} is larger than ${maxBytes} bytes`);
      }
      const channel = peersIn(sid, data.target);
      if (!channel) return refuse('target is not your peer in any channel');
      if (refresh) channel.lastActivity = nowUnix();
      sendTo(data.target, event, { [field]: body, sender: sid });
    });
  };
  relay('offer', 'sdp', MAX_SDP_BYTES, true);
  relay('answer', 'sdp', MAX_SDP_BYTES, true);
  relay('ice_candidate', 'candidate', MAX_CANDIDATE_BYTES, false);

  on('set_alias', 'Invalid alias:', (raw) => {
    const data = payloadObject(raw);
    const id = channelId(data, true);
    const value = alias(data);
    const channel = channels.get(id);
    if (!channel) return socket.emit('error', { message: 'Channel not found or expired' });
    if (!channel.viewers.has(sid)) {
      return socket.emit('error', { message: 'You must be a viewer in this channel' });
    }
    channel.viewers.set(sid, value);
    socket.emit('alias_set', { alias: value, success: true });
  });

  on('send_message', 'Invalid message:', (raw) => {
    const data = payloadObject(raw);
    const id = channelId(data, true);
    const text = message(data);
    const channel = channels.get(id);
    if (!channel) return socket.emit('error', { message: 'Channel not found or expired' });
    if (!channel.viewers.has(sid)) {
      return socket.emit('error', { message: 'You must be a viewer in this channel to send messages' });
    }
    const name = channel.viewers.get(sid) ?? `Viewer-${[...sid].slice(0, 8).join('')}`;
    // One encode, written to every participant: the broadcaster and all viewers (the room).
    io.to(room(id)).emit('new_message', { sender_id: name, message: text, timestamp: nowUnix() });
  });

  on('stop_broadcast', 'Invalid data:', (raw) => {
    const data = payloadObject(raw);
    const id = channelId(data, true);
    const channel = channels.get(id);
    if (!channel) return socket.emit('error', { message: 'Channel not found or expired' });
    if (channel.broadcaster !== sid) {
      return socket.emit('error', { message: 'You are not the broadcaster of this channel' });
    }
    channel.lastActivity = nowUnix();
    for (const viewer of channel.viewers.keys()) sendTo(viewer, 'broadcaster_stopped', { channel_id: id });
  });

  socket.on('disconnect', () => {
    const m = memberships.get(sid);
    if (!m) return;
    memberships.delete(sid);
    for (const id of m.broadcasting) {
      const closed = closeChannel(id);
      if (closed) for (const viewer of closed.viewers.keys()) sendTo(viewer, 'broadcaster_disconnected');
    }
    for (const id of m.watching) {
      const channel = channels.get(id);
      if (channel && channel.viewers.delete(sid)) viewerCount(channel);
    }
  });
});

// Idle channels without viewers are reaped after the TTL; a live channel never expires.
const sweepEvery = Math.max(1000, Math.min(config.channelTtlMs, 30000));
setInterval(() => {
  const cutoff = nowUnix() - config.channelTtlMs / 1000;
  for (const channel of [...channels.values()]) {
    if (channel.viewers.size === 0 && channel.lastActivity <= cutoff) {
      closeChannel(channel.id);
      sendTo(channel.broadcaster, 'channel_expired', { channel_id: channel.id });
    }
  }
}, sweepEvery).unref();

httpServer.listen({ host: config.host, port: config.port, backlog: 1024 }, () => {
  const { address, port } = httpServer.address();
  console.log(`listening on http://${address}:${port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
