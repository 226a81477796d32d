// Broadcaster mode: camera and microphone, going live on a channel (again after Stop, after
// our own reconnect, after a server restart), and one answering peer connection per viewer it
// feeds. With the relay tree (the "Let viewers relay" switch, on by default) the server sends us
// only the first few viewers; the others are fed by viewers who pass the stream on, and the
// server's figures say how many sit at each depth.
//
// Every channel is resumable (`resume: true`): when our connection drops, the server holds the
// channel and its viewers for a grace period, and the `resume_token` of our latest
// `broadcaster_ready` takes it back (the viewers renegotiate; the camera stream is reused). The
// token is kept in memory and in sessionStorage (a reload of this tab resumes too), never in a
// URL or on screen. The same token on another device takes the broadcast over: this page then
// gets `broadcaster_replaced` and stops. An optional password makes the channel private.
//
// While live we may send a screen instead of the camera (screen.js), and record what we send
// into a local file (recording.js), and moderate the channel: remove, ban or mute viewers, set
// the chat's rules (moderation.js).

import { setChatEnabled, showChat } from "./chat.js";
import { behindText, initDelay, watchChild } from "./delay.js";
import {
  applyRemoteDescription, closeAllPeers, closePeer, createPeer, sendDescription,
} from "./peers.js";
import {
  bindModerationSocket, initModeration, onAudienceChanged, onModerationRefused, renderModeration,
  resetModeration,
} from "./moderation.js";
import { followTracks, initRecording, renderRecording, stopRecording } from "./recording.js";
import { endScreenShare, initScreen, renderScreen, sentTracks } from "./screen.js";
import { request } from "./signaling.js";
import { app, params, peers } from "./state.js";
import { $, flashButton, renderStatus, setPhase, showNotice, ui } from "./ui.js";

/**
 * After our own reconnect, the server may still hold our old socket's channel until it notices
 * that socket is gone (ping interval 25 s + timeout 20 s), so "already has a broadcaster" is
 * retried for a little longer than that.
 */
const REJOIN_RETRY_MS = 3000;
const REJOIN_RETRY_LIMIT = 20;

/** Where this tab keeps its resume token across reloads (sessionStorage: this tab only). */
const RESUME_STORAGE_KEY = "broadcast.resume";
/** The server's password limit, counted in Unicode characters like the server does. */
const PASSWORD_MAX_CHARS = 128;

const broadcaster = {
  localStream: null,
  /** True from Start until Stop/expiry/failure: offers are answered only while this holds. */
  wantLive: false,
  /** This page created its channel (so going live again uses `force: true`). */
  ownsChannel: false,
  /** The channel id asked for at Start (empty: let the server pick one). */
  requestedId: null,
  /** Retrying a join after our own reconnect; see REJOIN_RETRY_MS. */
  rejoinAttempts: 0,
  rejoinTimer: null,
  viewerCount: 0,
  /**
   * `{channelId, token, password, relay}`: the latest `resume_token`, the channel it resumes,
   * that channel's password ("" for a public one) and relay switch, so that a reload of this tab
   * resumes it as it was. Never shown, never in a URL.
   */
  resume: null,
  /** The password the channel was started with ("" for a public one); sent with every join. */
  password: "",
  /** Our last join presented a resume token. */
  sentToken: false,
};

/** What the password hint says, while it can be changed and once the channel has it. */
const PASSWORD_HINT = {
  open: "Makes the channel private: it is not listed, and viewers must enter this password to watch. The viewer link does not contain it; tell your viewers separately.",
  private: "Private channel: it is not listed, and viewers must enter the password to watch. The viewer link does not contain it; tell your viewers separately.",
  public: "Public channel: listed for everyone. To make it private, reload the page and start a new channel with a password.",
};

/** What the relay switch says, while it can be changed and once the channel has it. */
const RELAY_HINT = {
  open: "On: viewers pass your stream on to a few others, so your upload carries a few streams however many watch. Off: you send one stream to every viewer. Applies when you go live.",
  on: "Viewers relay on this channel. To change it, reload the page and start a new channel.",
  off: "Every viewer watches directly from you on this channel. To change it, reload the page and start a new channel.",
};

const bui = {};

export const broadcasterMode = {
  init() {
    Object.assign(bui, {
      view: $("broadcaster-view"),
      startForm: $("start-form"),
      channelInput: $("channel-id-input"),
      startBtn: $("start-btn"),
      stopBtn: $("stop-btn"),
      localVideo: $("local-video"),
      placeholder: $("local-placeholder"),
      onAir: $("on-air"),
      viewerLink: $("viewer-link"),
      copyBtn: $("copy-link-btn"),
      viewerCount: $("viewer-count"),
      viewerCountLabel: $("viewer-count-label"),
      viewerBreakdown: $("viewer-breakdown"),
      relaySwitch: $("relay-switch"),
      relayHint: $("relay-hint"),
      passwordInput: $("channel-password-input"),
      passwordHint: $("channel-password-hint"),
      mediaStatus: $("media-status"),
      inviteArea: $("invite-area"),
      inviteLink: $("invite-link"),
      copyInviteBtn: $("copy-invite-btn"),
      rotateInvitesBtn: $("rotate-invites-btn"),
      deepestDelay: $("deepest-delay"),
    });
    initDelay(renderDeepestDelay);
    initScreen({
      button: $("screen-btn"),
      status: bui.mediaStatus,
      preview: bui.localVideo,
      camera: () => broadcaster.localStream,
      onSwitch: followTracks,
    });
    initRecording({
      button: $("record-btn"),
      indicator: $("recording-indicator"),
      time: $("recording-time"),
      status: bui.mediaStatus,
      link: $("recording-link"),
      tracks: sentTracks,
      channel: () => app.channelId,
    });
    initModeration({ onRemoved: onViewerRemoved });
    broadcaster.resume = loadResume();
    bui.view.hidden = false;
    bui.channelInput.value = (params.get("channel") || "").trim();
    if (resumeTokenFor(bui.channelInput.value)) bui.relaySwitch.checked = broadcaster.resume.relay;
    ui.chatInput.placeholder = "Message your viewers…";
    bui.startForm.addEventListener("submit", (event) => {
      event.preventDefault();
      startBroadcast();
    });
    bui.stopBtn.addEventListener("click", stopBroadcast);
    bui.copyBtn.addEventListener("click", copyViewerLink);
    bui.viewerLink.addEventListener("focus", () => bui.viewerLink.select());
    bui.copyInviteBtn.addEventListener("click", createInvite);
    bui.rotateInvitesBtn.addEventListener("click", rotateInvites);
    bui.inviteLink.addEventListener("focus", () => bui.inviteLink.select());
    app.phase = { state: "idle", text: "" };
  },

  bindSocket(socket) {
    socket.on("broadcaster_ready", onBroadcasterReady);
    socket.on("invite_created", onInviteCreated);
    socket.on("invites_rotated", onInvitesRotated);
    socket.on("offer", onViewerOffer);
    socket.on("viewer_count", onViewerCount);
    socket.on("relay_tree", onTreeFigures);
    socket.on("downstream_left", onDownstreamLeft);
    socket.on("channel_expired", onChannelExpired);
    socket.on("broadcaster_replaced", onBroadcasterReplaced);
    bindModerationSocket(socket);
  },

  onConnect(isReconnect) {
    if (!isReconnect) {
      const channelId = bui.channelInput.value.trim();
      if (resumeTokenFor(channelId)) {
        // This tab was live on that channel before a reload: Start takes it back.
        setPhase("idle", `Ready. Press Start to resume your broadcast on channel ${channelId}.`);
      } else {
        setPhase("idle", "Ready. Press Start to go live.");
      }
      return;
    }
    // Our old socket is gone: the server holds its channel for us (our viewers were told we are
    // reconnecting), or, after a server restart, knows nothing of it. Either way every viewer
    // negotiates afresh, so the old peer connections go; the camera stream stays.
    closeAllPeers();
    broadcaster.ownsChannel = false;
    // A held channel keeps its viewers (the server does not count them again for us).
    if (!resumeTokenFor(app.channelId)) setViewerCount(0);
    setTreeFigures(null);
    if (broadcaster.wantLive) {
      // Live before (or still starting): same channel id, or the one asked for at Start.
      const channelId = app.channelId || broadcaster.requestedId;
      broadcaster.rejoinAttempts = 0;
      setPhase("starting", "Reconnected. Going live again…");
      joinAsBroadcaster(channelId, true);
    } else if (app.phase.state === "stopped") {
      setPhase("stopped", `Broadcast stopped. Press Start to go live again on channel ${app.channelId}.`);
    } else {
      renderStatus();
    }
  },

  onClientId() {},

  onError(message, lastRequest, code) {
    if (lastRequest === "moderation" || code === "viewer_not_found") {
      // A moderation request refused (a viewer who left meanwhile, a rate limit): the
      // broadcast goes on.
      onModerationRefused(message, code);
      return;
    }
    if (lastRequest === "invite") {
      // create_invite or rotate_invites refused: the broadcast goes on.
      showNotice(message);
      return;
    }
    if (message.startsWith("Invalid data:") || lastRequest === "join") {
      onJoinRefused(message, code);
    } else {
      setPhase("error", message);
    }
  },

  render() {
    const connected = app.connection === "connected";
    const phase = app.phase.state;
    const canStart = connected && ["idle", "stopped", "expired", "error", "replaced"].includes(phase);
    bui.startBtn.disabled = !canStart;
    bui.startBtn.textContent = broadcaster.ownsChannel && phase === "stopped" ? "Go live again" : "Start";
    bui.stopBtn.disabled = !(connected && phase === "live");
    // A channel this page owns keeps its id; pick another one by reloading the page.
    bui.channelInput.disabled = broadcaster.ownsChannel || phase === "starting" || phase === "live";
    // The server fixes the tree when it creates the channel, so the switch is fixed with the
    // channel (a rejoin after a reconnect creates it again with the same setting).
    const relayFixed = broadcaster.ownsChannel || phase === "starting" || phase === "live";
    bui.relaySwitch.disabled = relayFixed;
    bui.relayHint.textContent = relayFixed ? RELAY_HINT[bui.relaySwitch.checked ? "on" : "off"] : RELAY_HINT.open;
    // The password, like the switch, is fixed with the channel.
    bui.passwordInput.disabled = relayFixed;
    bui.passwordHint.textContent = !relayFixed ? PASSWORD_HINT.open :
      isPrivate() ? PASSWORD_HINT.private : PASSWORD_HINT.public;
    bui.copyBtn.disabled = !bui.viewerLink.value;
    bui.inviteArea.hidden = !(isPrivate() && broadcaster.ownsChannel && phase === "live");
    bui.copyInviteBtn.disabled = !connected;
    bui.rotateInvitesBtn.disabled = !connected;
    bui.onAir.hidden = phase !== "live";
    renderScreen(phase === "live");
    renderRecording(Boolean(broadcaster.localStream));
    renderViewerCountLabel();
    renderBreakdown();
    renderModeration(phase === "live");
  },
};

async function startBroadcast() {
  if (!app.socket.connected) return;
  const requested = broadcaster.ownsChannel ? app.channelId : bui.channelInput.value.trim();
  // After a reload, the password of the channel this tab resumes unless another one is typed.
  const password = broadcaster.ownsChannel ? broadcaster.password :
    bui.passwordInput.value || resumedPasswordFor(requested);
  const passwordProblem = checkPassword(password);
  if (passwordProblem) {
    setPhase("error", passwordProblem);
    bui.passwordInput.focus();
    return;
  }
  broadcaster.password = password;
  setPhase("starting", "Starting camera and microphone…");
  try {
    await ensureLocalStream();
  } catch (err) {
    console.error("getUserMedia failed", err);
    setPhase("error", cameraErrorText(err));
    return;
  }
  broadcaster.wantLive = true;
  broadcaster.rejoinAttempts = 0;
  broadcaster.requestedId = requested || null;
  setPhase("starting", "Going live…");
  // `force` lets the owner of a stopped channel go live again under the same id.
  joinAsBroadcaster(broadcaster.requestedId, broadcaster.ownsChannel);
}

function joinAsBroadcaster(channelId, force) {
  clearTimeout(broadcaster.rejoinTimer);
  // `relay: false` runs the channel without the tree: the server sends us every viewer.
  // `resume: true`: if our connection drops, the server holds the channel for us a while.
  const payload = { channel_id: channelId, force, relay: bui.relaySwitch.checked, resume: true };
  const token = resumeTokenFor(channelId);
  if (token) {
    // Resumes the channel the server holds for us, or, with `force`, takes it over from our
    // own old connection when the server has not noticed yet that it is gone (or from this
    // tab before a reload).
    payload.resume_token = token;
    payload.force = true;
  }
  broadcaster.sentToken = Boolean(token);
  // Only a new channel takes it; sent every time, so a channel that closed meanwhile (its
  // grace ran out, the server restarted) comes back private, never public.
  if (broadcaster.password) payload.password = broadcaster.password;
  request("join", "join_as_broadcaster", payload);
}

/** Why the server would refuse this password (1 to 128 characters, no control characters). */
function checkPassword(password) {
  if (!password) return null;
  if ([...password].length > PASSWORD_MAX_CHARS) {
    return `The password is too long: at most ${PASSWORD_MAX_CHARS} characters.`;
  }
  // Rust's char::is_control: the C0 and C1 control characters.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(password)) {
    return "The password must not contain control characters.";
  }
  return null;
}

function isPrivate() {
  return Boolean(broadcaster.password);
}

/** The resume token for `channelId`, if we hold one. */
function resumeTokenFor(channelId) {
  const resume = broadcaster.resume;
  return resume && channelId && resume.channelId === channelId ? resume.token : null;
}

function resumedPasswordFor(channelId) {
  const resume = broadcaster.resume;
  return resume && channelId && resume.channelId === channelId ? resume.password : "";
}

function saveResume(channelId, token) {
  broadcaster.resume = { channelId, token, password: broadcaster.password, relay: bui.relaySwitch.checked };
  try {
    sessionStorage.setItem(RESUME_STORAGE_KEY, JSON.stringify(broadcaster.resume));
  } catch {
    // Storage may be off (private mode, quota): resuming after our own reconnect still works.
  }
}

function forgetResume() {
  broadcaster.resume = null;
  try {
    sessionStorage.removeItem(RESUME_STORAGE_KEY);
  } catch {
    // Nothing stored then.
  }
}

function loadResume() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(RESUME_STORAGE_KEY) || "null");
    if (saved && typeof saved.channelId === "string" && typeof saved.token === "string") {
      const password = typeof saved.password === "string" ? saved.password : "";
      return { channelId: saved.channelId, token: saved.token, password, relay: saved.relay !== false };
    }
  } catch {
    // Unreadable: start without.
  }
  return null;
}

/** Reuses the camera across Stop/Start so the preview stays on. */
async function ensureLocalStream() {
  if (broadcaster.localStream && broadcaster.localStream.active) return broadcaster.localStream;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("insecure-context");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (err) {
    // No microphone (or it is busy) should not prevent a video-only broadcast.
    if (err && err.name === "NotAllowedError") throw err;
    stream = await navigator.mediaDevices.getUserMedia({ video: true });
  }
  broadcaster.localStream = stream;
  bui.localVideo.srcObject = stream;
  bui.placeholder.hidden = true;
  bui.localVideo.play().catch(() => {});
  return stream;
}

function cameraErrorText(err) {
  const name = err && err.name;
  if (err && err.message === "insecure-context") {
    return "The camera needs a secure page: open this site over HTTPS (or on localhost).";
  }
  if (name === "NotAllowedError") {
    return "Camera access was denied. Allow the camera for this site, then press Start again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No camera found. Connect one and press Start again.";
  }
  if (name === "NotReadableError") {
    return "The camera is in use by another application. Close it and press Start again.";
  }
  return `Could not start the camera: ${(err && err.message) || name || "unknown error"}`;
}

function onBroadcasterReady(payload) {
  if (!payload || typeof payload.channel_id !== "string") return;
  const channelId = payload.channel_id;
  // Every `broadcaster_ready` of a resumable channel carries a fresh token; the last one works.
  if (typeof payload.resume_token === "string") saveResume(channelId, payload.resume_token);
  if (!broadcaster.wantLive) {
    // A late reply to a join we no longer want: keep the channel, but do not go live unasked.
    broadcaster.ownsChannel = true;
    app.channelId = channelId;
    request("stop", "stop_broadcast", { channel_id: channelId });
    return;
  }
  if (channelId !== app.channelId) {
    setViewerCount(0);
    setTreeFigures(null);
    resetModeration();
  }
  app.channelId = channelId;
  broadcaster.ownsChannel = true;
  broadcaster.rejoinAttempts = 0;
  bui.channelInput.value = channelId;
  bui.viewerLink.value = viewerUrl(channelId);
  // Reloading the page keeps the channel id.
  window.history.replaceState(null, "", `?broadcaster=true&channel=${encodeURIComponent(channelId)}`);
  showChat(true);
  setChatEnabled(true);
  setPhase("live", `Live on channel ${channelId}`);
}

function viewerUrl(channelId) {
  const url = new URL(window.location.pathname, window.location.origin);
  url.search = `?viewer=true&channel=${encodeURIComponent(channelId)}`;
  return url.href;
}

function onJoinRefused(message, code) {
  const channelId = app.channelId || broadcaster.requestedId;
  const taken = code === "channel_taken";
  if (broadcaster.sentToken && taken) {
    // Our token resumes or takes over any channel it belongs to, so the channel has another
    // broadcaster with a newer token: our other device, or someone after the channel closed.
    forgetResume();
    if (isRejoin()) {
      stopAsReplaced(`This broadcast continues on another device: channel ${channelId} has another broadcaster now.`);
      return;
    }
  }
  const retriable = taken && isRejoin() &&
    broadcaster.wantLive && app.phase.state === "starting" &&
    broadcaster.rejoinAttempts < REJOIN_RETRY_LIMIT;
  if (retriable) {
    // Our previous connection still holds the channel until the server times it out.
    broadcaster.rejoinAttempts += 1;
    setPhase("starting", `Reconnected. Waiting for the server to release channel ${channelId}…`);
    broadcaster.rejoinTimer = setTimeout(() => joinAsBroadcaster(channelId, true), REJOIN_RETRY_MS);
    return;
  }
  // A token the server does not take as one (damaged storage): start without it next time. A
  // join that sends a token names the channel the token was given for (an id the server took
  // then) and a password this page checked, so an invalid payload can only be the token.
  if (code === "invalid_payload" && broadcaster.sentToken) forgetResume();
  broadcaster.wantLive = false;
  setPhase("error", message);
}

/** A join is a rejoin when it re-creates the channel this page was live on before. */
function isRejoin() {
  return !broadcaster.ownsChannel && bui.viewerLink.value !== "";
}

async function onViewerOffer(payload) {
  if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
  if (!broadcaster.wantLive || !broadcaster.localStream) {
    console.info("Ignoring an offer while not live", payload.sender);
    return;
  }
  const viewerId = payload.sender;
  // A viewer offers again after any hiccup; the new offer replaces its old connection.
  closePeer(viewerId);
  const pc = createPeer(viewerId, onBroadcasterPeerState);
  // Our viewers report the deepest viewer's delay over a data channel of it (delay.js).
  watchChild(viewerId, pc);
  renderBreakdown();
  try {
    if (!(await applyRemoteDescription(viewerId, pc, payload.sdp))) return;
    // Tracks are added after the offer so they reuse the viewer's recvonly transceivers. What
    // we send: the camera and microphone, or the screen while it is shared.
    for (const track of Object.values(sentTracks())) {
      if (track) pc.addTrack(track, broadcaster.localStream);
    }
    await sendDescription("answer", viewerId, pc, await pc.createAnswer());
  } catch (err) {
    console.error("Could not answer viewer", viewerId, err);
    if (peers.get(viewerId) === pc) closePeer(viewerId);
  }
}

function onBroadcasterPeerState(viewerId, pc) {
  // A legacy server does not say when a viewer leaves; its failed connection does.
  if (pc.connectionState === "failed" || pc.connectionState === "closed") {
    closePeer(viewerId);
    renderBreakdown();
  }
}

/**
 * We removed or banned a viewer (`viewer_removed`): our connection to it goes, if we fed it.
 * The server moves the viewers it relayed to, as when a viewer leaves.
 */
function onViewerRemoved(viewerId) {
  closePeer(viewerId);
  renderBreakdown();
}

/** A viewer we fed left the channel or was moved under a relaying viewer. */
function onDownstreamLeft(payload) {
  if (!payload || typeof payload.peer_id !== "string" || payload.channel_id !== app.channelId) return;
  closePeer(payload.peer_id);
  renderBreakdown();
}

function onViewerCount(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  if (typeof payload.count === "number") setViewerCount(payload.count);
  // A server may carry the tree's figures here too; either way they are optional.
  if (Array.isArray(payload.depths)) onTreeFigures(payload);
}

/**
 * `relay_tree {channel_id, direct, relayed, waiting, depths, version}`: who is fed how. Figures
 * may arrive out of order; an older `version` than the one shown is ignored.
 */
function onTreeFigures(payload) {
  if (!payload || payload.channel_id !== app.channelId || !Array.isArray(payload.depths)) return;
  if (Number.isInteger(payload.version)) {
    const same = app.tree && app.tree.channelId === payload.channel_id;
    const shown = same && Number.isInteger(app.tree.version) ? app.tree.version : -1;
    if (payload.version < shown) return;
  }
  const depths = payload.depths.map((n) => (Number.isInteger(n) && n >= 0 ? n : 0));
  const relayedByDepth = depths.slice(1).reduce((sum, n) => sum + n, 0);
  setTreeFigures({
    direct: Number.isInteger(payload.direct) ? payload.direct : depths[0] || 0,
    relayed: Number.isInteger(payload.relayed) ? payload.relayed : relayedByDepth,
    waiting: Number.isInteger(payload.waiting) ? payload.waiting : 0,
    depths,
    version: Number.isInteger(payload.version) ? payload.version : undefined,
    channelId: payload.channel_id,
  });
}

function setTreeFigures(figures) {
  app.tree = figures;
  renderBreakdown();
}

/**
 * How the audience is fed: directly by us, relayed (by depth), waiting. From the server's
 * figures when it sends them, else from our own peer connections.
 */
function renderBreakdown() {
  const el = bui.viewerBreakdown;
  const live = app.phase.state === "live";
  if (!live) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  const tree = app.tree;
  if (!bui.relaySwitch.checked) {
    el.textContent = `You send ${streams(tree ? tree.direct : peers.size)} directly; viewers do not relay on this channel.`;
    return;
  }
  if (!tree) {
    el.textContent = `You send ${streams(peers.size)} directly.`;
    return;
  }
  const parts = [`You send ${streams(tree.direct)} directly`];
  if (tree.relayed > 0) {
    const byDepth = tree.depths
      .map((count, i) => ({ count, depth: i + 1 }))
      .slice(1)
      .filter(({ count }) => count > 0)
      .map(({ count, depth }) => `depth ${depth}: ${count}`)
      .join(", ");
    parts.push(`${tree.relayed} relayed by viewers (${byDepth})`);
  } else {
    parts.push("none relayed");
  }
  if (tree.waiting > 0) parts.push(`${tree.waiting} waiting for a place`);
  el.textContent = `${parts.join(" · ")}.`;
}

/** How far behind live the deepest viewer is, as its subtree reported it up the tree. */
function renderDeepestDelay(delay) {
  const el = bui.deepestDelay;
  const deepest = delay.deepest;
  if (app.phase.state !== "live" || !deepest) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  const where = deepest.depth === 1 ? "watching directly" : `depth ${deepest.depth}`;
  el.textContent = `Deepest viewer (${where}): ${behindText(deepest.behind)}.`;
}

function streams(count) {
  return `${count} ${count === 1 ? "stream" : "streams"}`;
}

function setViewerCount(count) {
  if (count !== broadcaster.viewerCount) onAudienceChanged();
  broadcaster.viewerCount = count;
  bui.viewerCount.textContent = String(count);
  renderViewerCountLabel();
}

/** Viewers stay in a stopped channel, waiting; only a live one is being watched. */
function renderViewerCountLabel() {
  const count = broadcaster.viewerCount;
  const noun = count === 1 ? "viewer" : "viewers";
  bui.viewerCountLabel.textContent = app.phase.state === "live" ? `${noun} watching` : `${noun} waiting`;
}

function stopBroadcast() {
  if (!app.channelId) return;
  broadcaster.wantLive = false;
  clearTimeout(broadcaster.rejoinTimer);
  request("stop", "stop_broadcast", { channel_id: app.channelId });
  // Viewers are told by the server (the tree dissolves); the camera preview stays on, the
  // screen is no longer captured.
  closeAllPeers();
  endScreenShare();
  setTreeFigures(null);
  setPhase("stopped", `Broadcast stopped. Press "Go live again" to resume channel ${app.channelId}.`);
}

function onChannelExpired(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  broadcaster.wantLive = false;
  broadcaster.ownsChannel = false;
  closeAllPeers();
  endScreenShare();
  bui.viewerLink.value = "";
  setViewerCount(0);
  setTreeFigures(null);
  setChatEnabled(false);
  setPhase("expired", `Channel ${payload.channel_id} closed after a while without viewers. Press Start to go live again.`);
}

/**
 * The same broadcaster (its resume token) took the channel over from another device or tab:
 * this page stops sending and lets the camera go.
 */
function onBroadcasterReplaced(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  stopAsReplaced("This broadcast continues on another device. This page no longer sends your camera.");
}

function stopAsReplaced(text) {
  broadcaster.wantLive = false;
  broadcaster.ownsChannel = false;
  clearTimeout(broadcaster.rejoinTimer);
  // Our token stopped working when the other device got its own.
  forgetResume();
  closeAllPeers();
  stopLocalStream();
  bui.viewerLink.value = "";
  setViewerCount(0);
  setTreeFigures(null);
  setChatEnabled(false);
  setPhase("replaced", text);
}

function stopLocalStream() {
  // A recording of the camera ends with it (its file downloads); so does a screen share.
  stopRecording();
  endScreenShare();
  if (broadcaster.localStream) {
    for (const track of broadcaster.localStream.getTracks()) track.stop();
  }
  broadcaster.localStream = null;
  bui.localVideo.srcObject = null;
  bui.placeholder.hidden = false;
}

/** How long the page's invitations admit viewers (`ttl_seconds`). */
const INVITE_TTL_SECONDS = 24 * 3600;

/** "Copy invite link": asks the server for a signed invitation to our private channel. */
function createInvite() {
  if (!app.channelId || !app.socket.connected) return;
  request("invite", "create_invite", { channel_id: app.channelId, ttl_seconds: INVITE_TTL_SECONDS });
}

/**
 * The viewer link with the invitation in its fragment: the viewer page sends it with its
 * join, and no server or proxy log ever sees it.
 */
async function onInviteCreated(payload) {
  if (!payload || payload.channel_id !== app.channelId || typeof payload.invite !== "string") return;
  bui.inviteLink.value = `${viewerUrl(app.channelId)}#invite=${encodeURIComponent(payload.invite)}`;
  await copyField(bui.inviteLink, bui.copyInviteBtn);
}

/** "Revoke all invite links": every invitation so far stops working; viewers watching stay. */
function rotateInvites() {
  if (!app.channelId || !app.socket.connected) return;
  request("invite", "rotate_invites", { channel_id: app.channelId });
}

function onInvitesRotated(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  bui.inviteLink.value = "";
  showNotice("Earlier invite links no longer work. Viewers already watching stay.");
}

async function copyViewerLink() {
  await copyField(bui.viewerLink, bui.copyBtn);
}

/** Copies a link field to the clipboard, or selects it for the user to copy. */
async function copyField(field, button) {
  const link = field.value;
  if (!link) return;
  let copied = false;
  try {
    // Needs a secure context (HTTPS or localhost).
    await navigator.clipboard.writeText(link);
    copied = true;
  } catch {
    copied = false;
  }
  field.focus();
  field.select();
  flashButton(button, copied ? "Copied!" : "Selected");
}
