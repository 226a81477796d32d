// Page-wide state every module shares: the mode from the query string, the peer connections,
// and `app`, which is also `window.broadcastApp` (the debug handle for tests and the console).

export const params = new URLSearchParams(window.location.search);
export const mode = readMode(params);

/**
 * Remote id → RTCPeerConnection. Broadcaster: one per viewer it feeds. Viewer: its feeder (the
 * broadcaster or a relaying viewer) and each viewer it relays to.
 */
export const peers = new Map();

export const app = {
  mode,
  socket: null,
  peers,
  /**
   * Our id as the server announced it in `client_id`; null until then on each connection.
   * Never `socket.id`: that is the transport's private session id, not our public id.
   */
  myId: null,
  everConnected: false,
  /** "connecting" | "connected" | "reconnecting" | "unreachable" */
  connection: "connecting",
  reconnectAttempts: 0,
  /** What the page is doing regardless of the socket: the `data-state` shown while connected. */
  phase: { state: "idle", text: "" },
  /** The channel this page broadcasts or watches. */
  channelId: null,
  /**
   * The request whose failure an `error` event most likely reports. The protocol's `error`
   * carries no request id, so unprefixed errors are routed by what we asked last.
   */
  lastRequest: null,
  /** Viewer mode: the relay tree's state (relay.js): feeder, children, forwarded tracks. */
  relay: null,
  /** Broadcaster mode: the latest figures of its channel's relay tree, when the server sends them. */
  tree: null,
};

// Debug handle for tests and the console (the contract promises `socket` and `peers`).
window.broadcastApp = app;

function readMode(query) {
  if (isFlagSet(query, "broadcaster")) return "broadcaster";
  if (isFlagSet(query, "viewer")) return "viewer";
  return "landing";
}

function isFlagSet(query, name) {
  if (!query.has(name)) return false;
  return !["false", "0", "no"].includes(query.get(name).toLowerCase());
}
