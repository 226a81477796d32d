// Viewer mode: join a channel as a relay-tree viewer, play what our feeder sends (relay.js
// negotiates with it and passes the stream on to the viewers below us), say where the picture
// comes from; wait through a stopped stream or a reconnecting broadcaster, keep asking for a
// broadcaster who left, and ask for the password of a private channel. A viewer the broadcaster
// removed or banned (EXTENSIONS.md "Moderation") stops playing and does not join again by itself.

import {
  forgetAliasOwner, initAlias, onAliasSet, renderAliasCurrent, resetChatSettings, restoreAlias,
  setAliasEnabled, setChatEnabled, showChat, showChatError,
} from "./chat.js";
import { behindText, initDelay } from "./delay.js";
import { initPicker, onChannelList, renderPicker, requestChannelList } from "./picker.js";
import {
  bindRelaySocket, holdRelay, initRelay, isUpstreamPlaying, relay, resetRelay,
} from "./relay.js";
import { request } from "./signaling.js";
import { app, embed, initialChannel, initialInvite } from "./state.js";
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

const viewer = {
  /** In the channel as far as the server knows (between broadcaster_available and leaving). */
  joined: false,
  leftPolls: 0,
  leftPollTimer: null,
  /**
   * A private channel's password as the viewer typed it; sent with every join (rejoins after
   * a reconnect too). Kept in memory only: never in the address, on screen or in storage.
   */
  password: null,
  /**
   * A private channel's invitation from the link (`#invite=`), sent with every join instead
   * of a password until the server refuses it.
   */
  invite: initialInvite,
  /**
   * "removed" or "banned" once the broadcaster took us out of the channel (the error's code):
   * this page then never joins it again by itself; a person may reload (a ban still holds).
   */
  barred: null,
};

const vui = {};

/** What the empty player says, by viewer state (the status line has the details). */
const PLAYER_PLACEHOLDER = {
  waiting: "Waiting for video…",
  stopped: "Stream paused",
  "broadcaster-reconnecting": "Broadcaster reconnecting…",
  "broadcaster-left": "The broadcaster left",
};

export const viewerMode = {
  init() {
    Object.assign(vui, {
      view: $("viewer-view"),
      video: $("remote-video"),
      placeholder: $("remote-placeholder"),
      unmuteBtn: $("unmute-btn"),
      passwordPanel: $("password-panel"),
      passwordForm: $("password-form"),
      passwordInput: $("password-input"),
      passwordError: $("password-error"),
      passwordSubmit: $("password-submit"),
      delay: $("viewer-delay"),
    });
    initDelay(renderDelay);
    const channel = initialChannel;
    initPicker(channel, (channelId) => channelId === app.channelId && viewer.joined);
    initAlias();
    app.channelId = channel || null;
    app.phase = { state: "idle", text: "" };

    vui.unmuteBtn.addEventListener("click", toggleMute);
    vui.passwordForm.addEventListener("submit", (event) => {
      event.preventDefault();
      submitPassword();
    });
    vui.video.addEventListener("playing", onRemotePlaying);
    initRelay({
      onPlacing,
      onTracks: showStream,
      onPlaying: showWatching,
      onInterrupted: () => {
        setPhase("waiting", `Connection to ${sourceName()} interrupted. Waiting for it to recover…`);
      },
      onFailed: () => {
        setPhase("waiting", `Lost the picture from ${sourceName()}. Finding another source…`);
      },
      onChildren: () => {
        if (app.phase.state === "live") showWatching();
      },
      onCapacity: () => {
        if (app.phase.state === "live") showWatching();
      },
    });
  },

  bindSocket(socket) {
    socket.on("channel_list", onChannelList);
    socket.on("broadcaster_available", onBroadcasterAvailable);
    socket.on("broadcaster_reconnecting", onBroadcasterReconnecting);
    bindRelaySocket(socket);
    socket.on("broadcaster_stopped", onBroadcasterStopped);
    socket.on("broadcaster_disconnected", onBroadcasterDisconnected);
    socket.on("alias_set", onAliasSet);
  },

  onConnect(isReconnect) {
    requestChannelList();
    if (!app.channelId && embed) {
      setPhase("not-found", "No channel to show: the embed's address names none.");
      return;
    }
    if (!app.channelId) {
      setPhase("idle", "Pick a live channel to watch, or enter a channel id.");
      return;
    }
    if (isReconnect && (viewer.barred || ["not-found", "password"].includes(app.phase.state))) {
      // Nothing to rejoin: the channel was not found, it still waits for its password, or its
      // broadcaster removed us.
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

  onError(message, lastRequest, code) {
    if (code === "removed" || code === "banned") {
      // The broadcaster took us out (now, or a ban from before refused our join): whatever
      // we asked last.
      barFromChannel(code, message);
      return;
    }
    if (viewer.barred) {
      // A late answer to something we asked before we were taken out changes nothing.
      console.info("Ignoring an error after leaving the channel:", message);
      return;
    }
    if (lastRequest === "tree") {
      // A `relay_ready`/`upstream_failed` that crossed the channel closing or our leaving it;
      // the events that explain it arrive on their own.
      console.info("Relay tree report refused:", message);
      return;
    }
    if (code === "invalid_invite") {
      // Expired or revoked: the password is the other way in.
      viewer.invite = null;
      askForPassword(message);
      return;
    }
    if (code === "password_required" || code === "wrong_password") {
      // A private channel: ask for its password, saying what was wrong with the one we sent.
      askForPassword(code === "wrong_password" ? message : "");
      return;
    }
    if (lastRequest === "password" && (code === "invalid_payload" || code === "rate_limited")) {
      // The password typed is not one the server takes, or too many tries at once.
      askForPassword(message);
      return;
    }
    const notFound = code === "channel_not_found";
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
    if (notFound && ["join", "poll", "password"].includes(lastRequest)) {
      leaveChannel();
      setPhase("not-found", message);
      requestChannelList();
      return;
    }
    setPhase("error", message);
  },

  render() {
    const inChannel = Boolean(app.channelId) &&
      ["waiting", "live", "stopped", "broadcaster-reconnecting", "broadcaster-left"].includes(app.phase.state);
    // The player embed is the player alone: it says everything, an unknown channel included.
    vui.view.hidden = !inChannel && !(embed && embed.kind === "player");
    vui.passwordPanel.hidden = app.phase.state !== "password";
    vui.passwordSubmit.disabled = app.connection !== "connected";
    vui.placeholder.textContent = placeholderText();
    showChat(inChannel || viewer.joined);
    setChatEnabled(viewer.joined && app.connection === "connected");
    setAliasEnabled(viewer.joined && app.connection === "connected");
    renderPicker();
  },
};

/** What the empty player says; an embed, which has no status line, says what it would. */
function placeholderText() {
  const state = app.phase.state;
  if (embed && app.connection !== "connected") return "Connecting…";
  if (embed && !PLAYER_PLACEHOLDER[state] && app.phase.text && state !== "idle") return app.phase.text;
  return PLAYER_PLACEHOLDER[state] || PLAYER_PLACEHOLDER.waiting;
}

function joinChannel(channelId, kind = "join") {
  if (viewer.barred) return;
  app.channelId = channelId;
  setPhase("waiting", `Joining channel ${channelId}…`);
  requestJoin(kind);
}

/**
 * Every join names the channel and asks for a place in the relay tree (`relay: true`) and for
 * the chat's last messages (`history: true`), with the invitation from the link if any, and the
 * password once the channel asked for one.
 * The chat embed plays nothing: it joins as a leaf (`relay: false`) and never offers, so no
 * feeder spends a stream on it.
 */
function requestJoin(kind) {
  if (viewer.barred) return;
  // The server sends `chat_settings` after the join only when they are not the defaults.
  resetChatSettings();
  const relayPlace = !(embed && embed.kind === "chat");
  const payload = { channel_id: app.channelId, relay: relayPlace, history: true };
  if (viewer.invite) payload.invite = viewer.invite;
  if (viewer.password !== null) payload.password = viewer.password;
  request(kind, "join_as_viewer", payload);
}

/**
 * The server refused our join for want of the right password: ask for it (again). `error` is
 * the server's message when the one we sent was refused, "" when we sent none.
 */
function askForPassword(error) {
  leaveChannel();
  viewer.password = null;
  setPhase("password", `Channel ${app.channelId} is private: enter its password to watch.`);
  vui.passwordError.textContent = error;
  vui.passwordInput.value = "";
  vui.passwordInput.focus();
}

function submitPassword() {
  const password = vui.passwordInput.value;
  if (!password) {
    vui.passwordError.textContent = "Enter the channel's password.";
    vui.passwordInput.focus();
    return;
  }
  if (!app.socket.connected) return;
  vui.passwordError.textContent = "";
  viewer.password = password;
  vui.passwordInput.value = "";
  joinChannel(app.channelId, "password");
}

function leaveChannel() {
  stopLeftPolling();
  resetRelay();
  clearRemoteVideo();
  viewer.joined = false;
  forgetAliasOwner();
  showChatError("");
}

function onBroadcasterAvailable(payload) {
  if (!payload || typeof payload.broadcaster_id !== "string") return;
  if (payload.channel_id && payload.channel_id !== app.channelId) return;
  if (viewer.barred) return;
  stopLeftPolling();
  viewer.joined = true;
  restoreAlias();
  const wasReconnecting = app.phase.state === "broadcaster-reconnecting";
  // A fresh place in the channel (first join, our reconnect, the broadcaster live again, back
  // after its connection dropped, or on another device): whatever we were connected to belongs
  // to the old one. `upstream` names our feeder, at once when one has room, else as soon as one
  // has. A picture still on screen stays until the new stream's.
  resetRelay();
  if (!vui.video.srcObject) clearRemoteVideo();
  if (embed && embed.kind === "chat") {
    // The chat embed plays nothing, so it waits for no place in the tree.
    setPhase("live", `Live: the chat of channel ${app.channelId}`);
  } else if (wasReconnecting) {
    setPhase("waiting", "The broadcaster is back. Reconnecting to the stream…");
  } else {
    setPhase("waiting", `Joined channel ${app.channelId}. Waiting for a free place: the broadcaster or another viewer will pass the stream on to you shortly…`);
  }
}

/**
 * The broadcaster's connection dropped; the server holds the channel for it a while (we stay
 * in it) and sends `broadcaster_available` when it is back. A viewer joining meanwhile gets
 * this instead of `broadcaster_available`. The player and whatever still arrives stay.
 */
function onBroadcasterReconnecting(payload) {
  if (payload && payload.channel_id && payload.channel_id !== app.channelId) return;
  if (viewer.barred) return;
  stopLeftPolling();
  if (!viewer.joined) {
    viewer.joined = true;
    restoreAlias();
  }
  holdRelay();
  setPhase("broadcaster-reconnecting", "Broadcaster reconnecting… The stream continues here when they are back.");
}

/** The server named our feeder (`moved`: instead of the one we had). */
function onPlacing(upstream, moved) {
  const source = upstream.depth === 1 ? "the broadcaster" : `another viewer (depth ${upstream.depth})`;
  if (moved) {
    // The last picture stays on screen until the new feeder's arrives.
    setPhase("waiting", `Your source changed. Reconnecting through ${source}…`);
  } else {
    setPhase("waiting", `Connecting to ${source}…`);
  }
}

/** Where our picture comes from, for the status line. */
function sourceName() {
  const upstream = relay.upstream;
  if (!upstream) return "your source";
  return upstream.depth === 1 ? "the broadcaster" : "the viewer relaying to you";
}

/** A new feeder's tracks: the player switches to them. */
function showStream(stream) {
  vui.unmuteBtn.hidden = false;
  if (vui.video.srcObject !== stream) vui.video.srcObject = stream;
  vui.video.play().catch(() => {
    // Autoplay with sound can be refused; the video starts muted, so this is rare.
  });
}

function onRemotePlaying() {
  vui.placeholder.hidden = true;
  if (isUpstreamPlaying()) showWatching();
}

/** Frames decode from our feeder: say where they come from, and whom we pass them on to. */
function showWatching() {
  const upstream = relay.upstream;
  if (!upstream || !upstream.playing) return;
  const from = upstream.depth === 1 ? "direct from the broadcaster" : `relayed, depth ${upstream.depth}`;
  const children = relay.children.size;
  const passing = children === 0 ? "" :
    ` · passing it on to ${children} ${children === 1 ? "viewer" : "viewers"}`;
  setPhase("live", `Watching live (${from})${passing}${relayLimit()}`);
}

/** What the status line says when we pass the stream on to fewer viewers than we could. */
function relayLimit() {
  if (relay.capacity === null) return "";
  if (relay.capacity === 0) return ` · not passing it on (${relay.capacityWhy})`;
  return ` · passing it on to at most ${relay.capacity} (${relay.capacityWhy})`;
}

/** How far behind live our picture is (delay.js estimates it), while we watch. */
function renderDelay(delay) {
  const show = app.phase.state === "live" && isUpstreamPlaying() && delay.behind !== null;
  vui.delay.hidden = !show;
  if (show) vui.delay.textContent = behindText(delay.behind);
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
  if (viewer.barred) return;
  // The tree is dissolved: our feeder and our children stop too.
  resetRelay();
  clearRemoteVideo();
  // We are still in the channel: broadcaster_available arrives when it goes live again.
  setPhase("stopped", "The broadcaster stopped the stream. It resumes here if they go live again.");
}

function onBroadcasterDisconnected() {
  if (viewer.barred) return;
  // The server removed the channel, and our membership (and alias) with it.
  leaveChannel();
  setPhase("broadcaster-left", "Broadcaster left the channel. This page reconnects if they come back.");
  requestChannelList();
  pollForReturningBroadcaster();
}

/**
 * The broadcaster removed (`removed`) or banned (`banned`) us, or a ban refused our join: the
 * picture stops, every peer connection closes (our feeder's and those of viewers we relayed to,
 * whom the server places elsewhere), and the page says why and stays out of the channel.
 */
function barFromChannel(code, message) {
  viewer.barred = code;
  leaveChannel();
  viewer.password = null;
  viewer.invite = null;
  setPhase(code, message);
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
    if (app.socket.connected) requestJoin("poll");
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
