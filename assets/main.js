// The served page: one broadcaster streams camera and microphone peer-to-peer to many viewers,
// with a chat for everyone in the channel. The server only relays signaling (see PROTOCOL.md);
// media never passes through it.
//
// The mode comes from the query string: ?broadcaster=true[&channel=ID], ?viewer=true[&channel=ID],
// or neither (landing view). Element ids and the `data-state` values of #status are a contract
// with the end-to-end tests; keep them stable.
//
// Plain ES modules, no build step; this one starts the page and wires the others together:
//   state.js        page-wide state (`window.broadcastApp`)
//   ui.js           status line, notice, DOM helpers
//   signaling.js    the Socket.IO connection, our id (`client_id`), emit helpers
//   ice.js          the ICE servers (fresh TURN credentials) for new peer connections
//   peers.js        RTCPeerConnections and ICE candidates, both modes
//   chat.js         chat and the viewer's alias
//   broadcaster.js  broadcaster mode
//   moderation.js   the broadcaster's viewer list (remove, ban, mute) and chat rules
//   screen.js       the broadcaster's camera or screen, switched on every sender it feeds
//   recording.js    the broadcaster's local recording of what it sends
//   viewer.js       viewer mode; picker.js its channel list
//   relay.js        a viewer's place in the relay tree: its feeder, and the viewers it feeds
// User-supplied text is only ever inserted with textContent.

import { broadcasterMode } from "./broadcaster.js";
import {
  initChat, onChatHistory, onChatRefused, onChatSettings, onMessageRemoved, onNewMessage, showAliasError,
  showChatError,
} from "./chat.js";
import { loadIceServers } from "./ice.js";
import { onIceCandidate } from "./peers.js";
import { connect } from "./signaling.js";
import { app, mode } from "./state.js";
import { $, setPhase, ui, useController } from "./ui.js";
import { viewerMode } from "./viewer.js";

/** Landing mode: no socket work beyond showing that the server is reachable. */
const landingMode = {
  init() {
    $("landing-view").hidden = false;
    app.phase = { state: "idle", text: "Connected. Go live or watch a broadcast." };
  },
  bindSocket() {},
  onConnect() {
    setPhase("idle", "Connected. Go live or watch a broadcast.");
  },
  onClientId() {},
  onError(message) {
    setPhase("error", message);
  },
  render() {},
};

async function start() {
  markActiveMode();
  const controller = { broadcaster: broadcasterMode, viewer: viewerMode, landing: landingMode }[mode];
  useController(controller);
  controller.init();
  initChat();
  if (typeof window.io !== "function") {
    setPhase("error", "The page's Socket.IO client failed to load; reload the page.");
    return;
  }
  // Peer connections start from socket events, so none exists before this: each gets the
  // server's ICE servers (with TURN credentials minted for us), or the config's if that
  // request fails. The landing view makes no peer connection.
  if (mode !== "landing") await loadIceServers();
  const socket = connect(controller, (message, code) => routeError(controller, message, code));
  socket.on("ice_candidate", onIceCandidate);
  socket.on("new_message", onNewMessage);
  socket.on("chat_history", onChatHistory);
  socket.on("message_removed", onMessageRemoved);
  socket.on("chat_settings", onChatSettings);
  controller.bindSocket(socket);
}

function markActiveMode() {
  const active = { broadcaster: ui.modeBroadcaster, viewer: ui.modeViewer }[mode];
  if (active) active.setAttribute("aria-current", "page");
  document.body.dataset.mode = mode;
}

/** Codes that refuse a viewer's `send_message` and nothing else. */
const CHAT_REFUSALS = new Set(["muted", "slow_mode", "chat_off"]);

/**
 * Routes a server `error` to the part of the screen it concerns, and hands on its code for the
 * mode to decide what to do. The prefixes say which event was refused (part of the protocol, not
 * a cause: the code is); errors without one are attributed to the last request we made.
 */
function routeError(controller, message, code) {
  console.warn("Server error:", code, message);
  // The broadcaster's rules for viewers' messages (EXTENSIONS.md "Moderation") answer only
  // `send_message`, whatever we asked since.
  if (CHAT_REFUSALS.has(code)) return onChatRefused(message, code);
  // Being taken out of the channel concerns the whole page, whatever we asked last.
  if (code === "removed" || code === "banned") return controller.onError(message, app.lastRequest, code);
  if (message.startsWith("Invalid message:")) return showChatError(message);
  if (message.startsWith("Invalid alias:")) return showAliasError(message);
  if (app.lastRequest === "chat") return onChatRefused(message, code);
  if (app.lastRequest === "alias") return showAliasError(message);
  return controller.onError(message, app.lastRequest, code);
}

start();
