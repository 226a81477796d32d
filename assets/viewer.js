// Viewer mode: join a channel, offer to its broadcaster (recvonly) and play what comes back;
// wait through a stopped stream, and keep asking for a broadcaster who left.

import {
  forgetAliasOwner, initAlias, onAliasSet, renderAliasCurrent, restoreAlias, setAliasEnabled,
  setChatEnabled, showChat, showChatError,
} from "./chat.js";
import { applyRemoteDescription, closeAllPeers, createPeer, plainDescription } from "./peers.js";
import { initPicker, onChannelList, renderPicker, requestChannelList } from "./picker.js";
import { emit, request } from "./signaling.js";
import { app, params, peers } from "./state.js";
import { $, renderStatus, setPhase } from "./ui.js";

/**
 * A viewer whose broadcaster dropped keeps asking for the channel for a while, so it comes
 * back by itself when the broadcaster reconnects (their channel is recreated under the same id).
 */
const LEFT_POLL_MS = 5000;
/**
 * The first asks come sooner (doubling up to LEFT_POLL_MS): a broadcaster who reloads its
 * page, or a restarted server, is usually back within a second or two.
 */
const LEFT_POLL_FIRST_MS = 1000;
const LEFT_POLL_LIMIT = 60;
/** Delay before a viewer asks for a fresh negotiation after its peer connection failed. */
const PEER_RETRY_BASE_MS = 2000;
const PEER_RETRY_MAX_MS = 30000;

const viewer = {
  broadcasterId: null,
  /** In the channel as far as the server knows (between broadcaster_available and leaving). */
  joined: false,
  peerRetries: 0,
  peerRetryTimer: null,
  leftPolls: 0,
  leftPollTimer: null,
};

const vui = {};

/** What the empty player says, by viewer state (the status line has the details). */
const PLAYER_PLACEHOLDER = {
  waiting: "Waiting for video…",
  stopped: "Stream paused",
  "broadcaster-left": "The broadcaster left",
};

export const viewerMode = {
  init() {
    Object.assign(vui, {
      view: $("viewer-view"),
      video: $("remote-video"),
      placeholder: $("remote-placeholder"),
      unmuteBtn: $("unmute-btn"),
    });
    const channel = (params.get("channel") || "").trim();
    initPicker(channel, (channelId) => channelId === app.channelId && viewer.joined);
    initAlias();
    app.channelId = channel || null;
    app.phase = { state: "idle", text: "" };

    vui.unmuteBtn.addEventListener("click", toggleMute);
    vui.video.addEventListener("playing", onRemotePlaying);
  },

  bindSocket(socket) {
    socket.on("channel_list", onChannelList);
    socket.on("broadcaster_available", onBroadcasterAvailable);
    socket.on("answer", onBroadcasterAnswer);
    socket.on("broadcaster_stopped", onBroadcasterStopped);
    socket.on("broadcaster_disconnected", onBroadcasterDisconnected);
    socket.on("alias_set", onAliasSet);
  },

  onConnect(isReconnect) {
    requestChannelList();
    if (!app.channelId) {
      setPhase("idle", "Pick a live channel to watch, or enter a channel id.");
      return;
    }
    if (isReconnect && app.phase.state === "not-found") {
      renderStatus();
      return;
    }
    if (isReconnect && app.phase.state === "broadcaster-left") {
      pollForReturningBroadcaster();
      return;
    }
    // First visit with &channel=, or our reconnect: the server forgot our old socket, so
    // join again; broadcaster_available then starts a fresh negotiation.
    joinChannel(app.channelId, isReconnect ? "rejoin" : "join");
  },

  onClientId() {
    renderAliasCurrent();
  },

  onError(message, lastRequest) {
    const notFound = /not found or expired/.test(message);
    if (notFound && app.phase.state === "broadcaster-left" && lastRequest === "poll") {
      // Still gone; keep waiting quietly.
      return;
    }
    if (notFound && lastRequest === "rejoin") {
      // After our own reconnect the broadcaster may simply not be back yet (e.g. the server
      // restarted); wait for it as if it had left.
      leaveChannel();
      setPhase("broadcaster-left", "The broadcast is gone for now. This page reconnects if it comes back.");
      pollForReturningBroadcaster();
      return;
    }
    if (notFound && (lastRequest === "join" || lastRequest === "poll")) {
      leaveChannel();
      setPhase("not-found", message);
      requestChannelList();
      return;
    }
    setPhase("error", message);
  },

  render() {
    const inChannel = Boolean(app.channelId) &&
      ["waiting", "live", "stopped", "broadcaster-left"].includes(app.phase.state);
    vui.view.hidden = !inChannel;
    vui.placeholder.textContent = PLAYER_PLACEHOLDER[app.phase.state] || PLAYER_PLACEHOLDER.waiting;
    showChat(inChannel || viewer.joined);
    setChatEnabled(viewer.joined && app.connection === "connected");
    setAliasEnabled(viewer.joined && app.connection === "connected");
    renderPicker();
  },
};

function joinChannel(channelId, kind = "join") {
  app.channelId = channelId;
  setPhase("waiting", `Joining channel ${channelId}…`);
  request(kind, "join_as_viewer", { channel_id: channelId });
}

function leaveChannel() {
  stopLeftPolling();
  clearTimeout(viewer.peerRetryTimer);
  closeAllPeers();
  clearRemoteVideo();
  viewer.joined = false;
  viewer.broadcasterId = null;
  forgetAliasOwner();
  showChatError("");
}

function onBroadcasterAvailable(payload) {
  if (!payload || typeof payload.broadcaster_id !== "string") return;
  if (payload.channel_id && payload.channel_id !== app.channelId) return;
  stopLeftPolling();
  viewer.joined = true;
  restoreAlias();
  setPhase("waiting", `Joined channel ${app.channelId}. Waiting for video…`);
  offerToBroadcaster(payload.broadcaster_id);
}

/** Viewers make the offer (recvonly); every broadcaster_available starts a fresh connection. */
async function offerToBroadcaster(broadcasterId) {
  closeAllPeers();
  clearRemoteVideo();
  viewer.broadcasterId = broadcasterId;
  const pc = createPeer(broadcasterId, onViewerPeerState);
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = ({ track }) => {
    stream.addTrack(track);
    vui.unmuteBtn.hidden = false;
    if (vui.video.srcObject !== stream) vui.video.srcObject = stream;
    vui.video.play().catch(() => {
      // Autoplay with sound can be refused; the video starts muted, so this is rare.
    });
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    if (peers.get(broadcasterId) !== pc) return;
    emit("offer", { target: broadcasterId, sdp: plainDescription(pc.localDescription) });
  } catch (err) {
    console.error("Could not create an offer", err);
    setPhase("error", `Could not start the video connection: ${err.message || err}`);
  }
}

async function onBroadcasterAnswer(payload) {
  if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
  const pc = peers.get(payload.sender);
  if (!pc) return;
  try {
    await applyRemoteDescription(payload.sender, pc, payload.sdp);
  } catch (err) {
    console.error("Could not apply the broadcaster's answer", err);
    schedulePeerRetry();
  }
}

function onViewerPeerState(broadcasterId, pc) {
  const state = pc.connectionState;
  if (state === "connected") {
    viewer.peerRetries = 0;
    if (isRemoteVideoPlaying()) showWatching();
  } else if (state === "disconnected") {
    setPhase("waiting", "Connection to the broadcaster interrupted. Waiting for it to recover…");
  } else if (state === "failed") {
    setPhase("waiting", "Lost the connection to the broadcaster. Retrying…");
    schedulePeerRetry();
  }
}

/** Asks the server for broadcaster_available again, which restarts negotiation. */
function schedulePeerRetry() {
  clearTimeout(viewer.peerRetryTimer);
  const delay = Math.min(PEER_RETRY_BASE_MS * 2 ** viewer.peerRetries, PEER_RETRY_MAX_MS);
  viewer.peerRetries += 1;
  viewer.peerRetryTimer = setTimeout(() => {
    if (app.socket.connected && viewer.joined && app.channelId) {
      request("join", "join_as_viewer", { channel_id: app.channelId });
    }
  }, delay);
}

function onRemotePlaying() {
  vui.placeholder.hidden = true;
  const pc = viewer.broadcasterId && peers.get(viewer.broadcasterId);
  if (pc && pc.connectionState !== "failed") showWatching();
}

function isRemoteVideoPlaying() {
  const video = vui.video;
  return Boolean(video.srcObject) && !video.paused && video.readyState >= 2;
}

function showWatching() {
  setPhase("live", `Watching channel ${app.channelId}`);
}

function clearRemoteVideo() {
  vui.video.srcObject = null;
  vui.placeholder.hidden = false;
  vui.unmuteBtn.hidden = true;
}

function toggleMute() {
  vui.video.muted = !vui.video.muted;
  vui.unmuteBtn.textContent = vui.video.muted ? "Unmute" : "Mute";
  if (!vui.video.muted) vui.video.play().catch(() => {});
}

function onBroadcasterStopped(payload) {
  if (payload && payload.channel_id && payload.channel_id !== app.channelId) return;
  clearTimeout(viewer.peerRetryTimer);
  closeAllPeers();
  clearRemoteVideo();
  // We are still in the channel: broadcaster_available arrives when it goes live again.
  setPhase("stopped", "The broadcaster stopped the stream. It resumes here if they go live again.");
}

function onBroadcasterDisconnected() {
  // The server removed the channel, and our membership (and alias) with it.
  leaveChannel();
  setPhase("broadcaster-left", "Broadcaster left the channel. This page reconnects if they come back.");
  requestChannelList();
  pollForReturningBroadcaster();
}

/** The server removed the channel; ask for it again for a while in case it comes back. */
function pollForReturningBroadcaster() {
  stopLeftPolling();
  viewer.leftPolls = 0;
  const poll = () => {
    if (app.phase.state !== "broadcaster-left") return;
    if (viewer.leftPolls >= LEFT_POLL_LIMIT) {
      setPhase("broadcaster-left", "Broadcaster left the channel.");
      return;
    }
    viewer.leftPolls += 1;
    if (app.socket.connected) request("poll", "join_as_viewer", { channel_id: app.channelId });
    viewer.leftPollTimer = setTimeout(poll, leftPollDelay(viewer.leftPolls));
  };
  viewer.leftPollTimer = setTimeout(poll, leftPollDelay(0));
}

function leftPollDelay(pollsSoFar) {
  return Math.min(LEFT_POLL_MS, LEFT_POLL_FIRST_MS * 2 ** pollsSoFar);
}

function stopLeftPolling() {
  clearTimeout(viewer.leftPollTimer);
  viewer.leftPollTimer = null;
}
