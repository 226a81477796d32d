// Page-wide state every module shares: the mode from the query string, the server's
// configuration for the page, the peer connections, and `app`, which is also
// `window.broadcastApp` (the debug handle for tests and the console).

export const params = new URLSearchParams(window.location.search);

/** The socket.io-client transports when the server says nothing usable: polling, then upgrade. */
const DEFAULT_TRANSPORTS = ["polling", "websocket"];

/**
 * What the server configured for the page (the JSON in `#config`): `iceServers` (RTCIceServer
 * objects; `[]` means host candidates only; ice.js uses them until `/ice-servers` answers, or
 * when it cannot), `transports` (`["websocket"]` when the server
 * runs WebSocket-only, e.g. several nodes behind a load balancer without sticky sessions) and,
 * in an embed, `embed` ("player" or "chat").
 */
export const serverConfig = readServerConfig();

/**
 * In an embed (`/embed/<channel_id>` or `/embed/<channel_id>/chat`, framed by another site):
 * `{kind: "player" | "chat", channelId}`; null on the page itself. An embed is viewer mode
 * showing one part of it.
 */
export const embed = readEmbed(serverConfig.embed);
export const mode = embed ? "viewer" : readMode(params);
/**
 * A private channel's invitation from the address's fragment (`#invite=…`, from the
 * broadcaster's "Copy invite link"); the fragment never reaches the server's logs.
 */
export const initialInvite = readInvite();
/** The channel named by the address: the embed's path, or `&channel=`. */
export const initialChannel = embed ? embed.channelId : (params.get("channel") || "").trim();

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
  /**
   * How far behind live (delay.js): a viewer's own estimate (`behind`, `hop`, `feeder`) and the
   * deepest viewer it knows of (`deepest`); the broadcaster's `deepest` is its audience's.
   */
  delay: null,
  /**
   * Broadcaster mode: what it sends (screen.js): `kind` ("camera" | "screen"), `switchedAt`
   * (Date.now() when the senders got those tracks), `switches`.
   */
  source: null,
  /**
   * Broadcaster mode: its local recording (recording.js): `state` ("inactive" | "recording" |
   * "saving"), `mimeType`, `startedAt`, `switches`, and `bytes` and `fileName` of the last file.
   */
  recording: null,
  /** The server's configuration for the page (`iceServers`, `transports`). */
  serverConfig,
  /**
   * Where new peer connections' ICE servers come from (ice.js): `source` ("config" or
   * "server"), `ttl`, `fetches`, `fetchedAt`, `refreshAt`. Never the credentials themselves.
   */
  ice: null,
};

// Debug handle for tests and the console (the contract promises `socket` and `peers`).
window.broadcastApp = app;

function readServerConfig() {
  const config = { iceServers: [], transports: DEFAULT_TRANSPORTS, embed: null };
  let parsed;
  try {
    parsed = JSON.parse(document.getElementById("config")?.textContent || "{}");
  } catch (err) {
    console.error("Unreadable server config; using host candidates only", err);
    return config;
  }
  if (parsed && Array.isArray(parsed.iceServers)) config.iceServers = parsed.iceServers;
  if (parsed && (parsed.embed === "player" || parsed.embed === "chat")) config.embed = parsed.embed;
  const transports = parsed && parsed.transports;
  if (
    Array.isArray(transports) &&
    transports.length > 0 &&
    transports.every((t) => t === "polling" || t === "websocket")
  ) {
    config.transports = transports;
  }
  return config;
}

function readInvite() {
  const invite = new URLSearchParams(window.location.hash.slice(1)).get("invite");
  return invite ? invite.trim() : null;
}

function readEmbed(kind) {
  if (!kind) return null;
  // The server routes /embed/<channel_id> and /embed/<channel_id>/chat here.
  const segment = window.location.pathname.split("/")[2] || "";
  let channelId = "";
  try {
    channelId = decodeURIComponent(segment).trim();
  } catch {
    // A malformed escape: no channel, which the player says.
  }
  return { kind, channelId };
}

function readMode(query) {
  if (isFlagSet(query, "broadcaster")) return "broadcaster";
  if (isFlagSet(query, "viewer")) return "viewer";
  return "landing";
}

function isFlagSet(query, name) {
  if (!query.has(name)) return false;
  return !["false", "0", "no"].includes(query.get(name).toLowerCase());
}
