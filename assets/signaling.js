// The Socket.IO connection: connecting and reconnecting, our id from `client_id`, and the
// helpers every mode emits through. The vendored client (a classic script) defines `io`.

import { app, serverConfig } from "./state.js";
import { setConnection, showNotice } from "./ui.js";

/** Failed reconnect attempts after which "reconnecting" becomes "unreachable". */
const UNREACHABLE_AFTER_ATTEMPTS = 3;
/**
 * The longest wait between reconnect attempts (socket.io-client's default is 5 s). A
 * broadcaster whose network comes back is live again, and its viewers play again, within about
 * this much: the server holds its channel for a grace period (`--resume-grace-secs`, 30 s by
 * default), and every second of waiting is a second of frozen picture for the whole audience.
 */
const RECONNECT_DELAY_MAX_MS = 2000;

/** Callbacks waiting for this connection's `client_id`; dropped when the connection is lost. */
let clientIdWaiters = [];

/**
 * Where the page keeps its client key (EXTENSIONS.md, "Moderation"): the identity a
 * broadcaster's ban or mute holds on to, so it is kept across reloads and tabs (localStorage).
 */
const CLIENT_KEY_STORAGE_KEY = "broadcast.clientKey";
/** What the server gives out: 32 lowercase hex characters. */
const CLIENT_KEY_PATTERN = /^[0-9a-f]{32}$/;
/**
 * The key of this page in memory as well: where storage is refused (a framed embed whose
 * browser blocks a third party's storage) the key still holds across our reconnects.
 */
let clientKey = null;

/**
 * Opens the connection, which then reconnects by itself. `controller` is the page mode's
 * (`onConnect`, `onClientId`); `onServerError(message, code)` gets each `error` event: the
 * message to show people, and the code to decide on (EXTENSIONS.md, "Error codes").
 * Returns the socket so the caller can bind the other events.
 */
export function connect(controller, onServerError) {
  // By default polling first, then upgrade: the same order legacy pages use, and it works
  // through proxies that block WebSocket. A server running WebSocket-only (several nodes behind
  // a load balancer without sticky sessions, where a polling session would hit another node)
  // says `["websocket"]`.
  // `auth` asks the server for error codes (EXTENSIONS.md, "Error codes") and presents our
  // client key (null when we have none yet: the server then gives us one in `client_key`). It
  // is a function so that every reconnect presents the key we hold by then. Legacy pages, which
  // send neither, get exactly the messages and no message ids.
  const socket = window.io({
    transports: serverConfig.transports,
    reconnectionDelayMax: RECONNECT_DELAY_MAX_MS,
    auth: (send) => send({ error_codes: true, client_key: loadClientKey() }),
  });
  app.socket = socket;

  socket.on("connect", () => onConnect(controller));
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.io.on("reconnect_attempt", (attempt) => {
    app.reconnectAttempts = attempt;
  });

  socket.on("client_id", (payload) => onClientId(controller, payload));
  socket.on("client_key", onClientKey);
  socket.on("error", (payload) => onServerError(messageOf(payload), codeOf(payload)));
  socket.on("relay_error", onRelayError);
  return socket;
}

function onConnect(controller) {
  const isReconnect = app.everConnected;
  app.everConnected = true;
  app.reconnectAttempts = 0;
  // Our id is not known yet: `client_id` names us on this connection (see whenClientId).
  setConnection("connected");
  controller.onConnect(isReconnect);
}

/** The server's id for us, the one peers and chat know us by; only `client_id` says it. */
function onClientId(controller, payload) {
  if (!payload || typeof payload.id !== "string") {
    console.warn("Ignoring a client_id without an id", payload);
    return;
  }
  app.myId = payload.id;
  const waiters = clientIdWaiters;
  clientIdWaiters = [];
  for (const callback of waiters) callback(app.myId);
  controller.onClientId();
}

/** The key we present, from memory or storage; null when we have none (or it is damaged). */
function loadClientKey() {
  if (clientKey) return clientKey;
  try {
    const stored = localStorage.getItem(CLIENT_KEY_STORAGE_KEY);
    if (stored && CLIENT_KEY_PATTERN.test(stored)) clientKey = stored;
  } catch {
    // Storage refused: a key in memory only (this page's connections).
  }
  return clientKey;
}

/** The server gave us a key (we had none, or a damaged one): present it from now on. */
function onClientKey(payload) {
  if (!payload || typeof payload.key !== "string" || !CLIENT_KEY_PATTERN.test(payload.key)) {
    console.warn("Ignoring a client_key without a key");
    return;
  }
  clientKey = payload.key;
  try {
    localStorage.setItem(CLIENT_KEY_STORAGE_KEY, clientKey);
  } catch {
    // Kept in memory for this page only.
  }
}

/**
 * Calls `callback(ourId)` at once if this connection's `client_id` has arrived, else when it
 * does; not at all if the connection is lost first (a new one starts over).
 */
export function whenClientId(callback) {
  if (app.myId !== null) callback(app.myId);
  else clientIdWaiters.push(callback);
}

function onDisconnect(reason) {
  // The id belonged to this connection; the next one gets its own `client_id`.
  app.myId = null;
  clientIdWaiters = [];
  if (reason === "io client disconnect") return;
  if (reason === "io server disconnect") {
    // The server closed us on purpose; Socket.IO does not retry that by itself.
    app.socket.connect();
  }
  // Peer connections stay up: media flows peer-to-peer and may survive a signaling blip.
  setConnection("reconnecting");
}

function onConnectError(err) {
  console.warn("Socket.IO connection failed:", err && err.message);
  const gaveUp = !app.everConnected || app.reconnectAttempts >= UNREACHABLE_AFTER_ATTEMPTS;
  setConnection(gaveUp ? "unreachable" : "reconnecting");
}

/** Emits an event whose failure is not reported by `error` (relays, listing channels). */
export function emit(event, payload) {
  app.socket.emit(event, payload);
}

/** Emits a request whose failure would come back as an `error` event. */
export function request(kind, event, payload) {
  app.lastRequest = kind;
  app.socket.emit(event, payload);
}

export function isConnected() {
  return Boolean(app.socket && app.socket.connected);
}

function messageOf(payload) {
  if (payload && typeof payload.message === "string") return payload.message;
  return typeof payload === "string" ? payload : "Unknown error from the server";
}

/**
 * The error's code (EXTENSIONS.md, "Error codes"), or null. The page decides on codes and
 * shows messages; a code it does not know (a newer server's) is treated like no code.
 */
function codeOf(payload) {
  return payload && typeof payload.code === "string" ? payload.code : null;
}

function onRelayError(payload) {
  // The server refused to pass on our offer/answer/candidate; the peer is usually gone (the
  // code says why; the notice shows the message either way).
  console.warn("relay_error", payload);
  const event = payload && typeof payload.event === "string" ? payload.event : "signal";
  showNotice(`Could not deliver ${event}: ${messageOf(payload)}`);
}
