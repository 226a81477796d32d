// Broadcaster mode: moderating its channel (EXTENSIONS.md "Moderation"). The viewer list
// (`list_viewers`, refreshed when it is opened and whenever the viewer count changes) with
// Remove, Ban and Mute/Unmute for each viewer, "Unban all", and the chat's rules: slow mode and
// chat on/off (`chat_settings`). Removing a single chat message is the button on the message
// (chat.js). The server's answers show in the notice line; a removed viewer's peer connection
// is closed by broadcaster.js (`onRemoved`). Names are user-supplied: only ever textContent.

import { onChatSettingsChange } from "./chat.js";
import { request } from "./signaling.js";
import { app } from "./state.js";
import { $, showNotice } from "./ui.js";

/**
 * The list is asked for at most this often: moderation shares the server's budget of joins
 * (a few per second), and a crowd arriving at once changes the count many times.
 */
const LIST_REFRESH_MIN_MS = 1000;
/** The slow mode choices (seconds; 0 is off), beside whatever the server says is set. */
const SLOW_MODE_CHOICES = [0, 5, 30, 60];

const moderation = {
  /** The last `viewer_list`: `[{id, name, muted}]`, ordered by name. */
  viewers: [],
  /** When `list_viewers` was last sent, and a refresh waiting for its turn. */
  listedAt: 0,
  listTimer: null,
  /** broadcaster.js: close the peer connection to a removed viewer. */
  onRemoved: () => {},
};

const mui = {};

/** Wires the panel. `onRemoved(viewerId)` runs when the server confirms a removal. */
export function initModeration({ onRemoved }) {
  moderation.onRemoved = onRemoved;
  Object.assign(mui, {
    panel: $("moderation-panel"),
    list: $("viewer-list"),
    empty: $("viewer-list-empty"),
    unbanAll: $("unban-all-btn"),
    slowMode: $("slow-mode-select"),
    chatSwitch: $("chat-enabled-switch"),
  });
  mui.slowMode.replaceChildren(
    ...SLOW_MODE_CHOICES.map((seconds) => new Option(seconds === 0 ? "Off" : `${seconds} s`, String(seconds))),
  );
  mui.panel.addEventListener("toggle", () => {
    if (mui.panel.open) refreshViewerList();
  });
  mui.unbanAll.addEventListener("click", unbanAll);
  mui.slowMode.addEventListener("change", sendChatSettings);
  mui.chatSwitch.addEventListener("change", sendChatSettings);
  onChatSettingsChange(showChatSettings);
}

export function bindModerationSocket(socket) {
  socket.on("viewer_list", onViewerList);
  socket.on("viewer_removed", onViewerRemoved);
  socket.on("viewer_muted", onViewerMuted);
  socket.on("bans_cleared", onBansCleared);
}

/** Only the channel's present broadcaster moderates: the panel works while we are live. */
export function renderModeration(live) {
  const connected = app.connection === "connected";
  mui.panel.hidden = !live;
  for (const control of [mui.unbanAll, mui.slowMode, mui.chatSwitch]) control.disabled = !connected;
  for (const button of mui.list.querySelectorAll("button")) button.disabled = !connected;
}

/** The viewer count changed: someone joined or left, so the open list is stale. */
export function onAudienceChanged() {
  if (mui.panel.open) refreshViewerList();
}

/** A new channel (or none): its viewers and its rules start afresh. */
export function resetModeration() {
  moderation.viewers = [];
  renderViewerList();
}

/** Asks for the list now, or as soon as LIST_REFRESH_MIN_MS has passed since the last ask. */
function refreshViewerList() {
  if (moderation.listTimer !== null) return;
  const wait = Math.max(0, moderation.listedAt + LIST_REFRESH_MIN_MS - Date.now());
  moderation.listTimer = setTimeout(() => {
    moderation.listTimer = null;
    if (!app.channelId || !app.socket.connected || mui.panel.hidden) return;
    moderation.listedAt = Date.now();
    request("moderation", "list_viewers", { channel_id: app.channelId });
  }, wait);
}

function onViewerList(payload) {
  if (!payload || payload.channel_id !== app.channelId || !Array.isArray(payload.viewers)) return;
  moderation.viewers = payload.viewers
    .filter((v) => v && typeof v.id === "string")
    .map((v) => ({ id: v.id, name: typeof v.name === "string" ? v.name : v.id, muted: v.muted === true }));
  renderViewerList();
}

function renderViewerList() {
  mui.list.replaceChildren(...moderation.viewers.map(viewerItem));
  mui.empty.hidden = moderation.viewers.length > 0;
  renderModeration(app.phase.state === "live");
}

function viewerItem(viewer) {
  const item = document.createElement("li");
  item.className = "viewer-item";
  item.dataset.viewerId = viewer.id;
  item.classList.toggle("muted", viewer.muted);
  const name = document.createElement("span");
  name.className = "viewer-name";
  name.textContent = viewer.name;
  const badge = document.createElement("span");
  badge.className = "viewer-muted";
  badge.textContent = "muted";
  badge.hidden = !viewer.muted;
  const actions = document.createElement("span");
  actions.className = "viewer-actions";
  actions.append(
    actionButton("mute-btn", viewer.muted ? "Unmute" : "Mute", () => muteViewer(viewer.id, !viewer.muted)),
    actionButton("remove-btn", "Remove", () => removeViewer(viewer.id, false)),
    actionButton("ban-btn danger", "Ban", () => removeViewer(viewer.id, true)),
  );
  item.append(name, badge, actions);
  return item;
}

function actionButton(className, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}

function removeViewer(viewerId, ban) {
  if (!app.channelId || !app.socket.connected) return;
  request("moderation", "remove_viewer", { channel_id: app.channelId, viewer_id: viewerId, ban });
}

function muteViewer(viewerId, muted) {
  if (!app.channelId || !app.socket.connected) return;
  request("moderation", "mute_viewer", { channel_id: app.channelId, viewer_id: viewerId, muted });
}

function unbanAll() {
  if (!app.channelId || !app.socket.connected) return;
  request("moderation", "unban_all", { channel_id: app.channelId });
}

/** The name the list shows for a viewer, for the notices. */
function nameOf(viewerId) {
  const viewer = moderation.viewers.find((v) => v.id === viewerId);
  return viewer ? viewer.name : "The viewer";
}

/** `viewer_removed {channel_id, viewer_id, banned}`: it is out; so is our connection to it. */
function onViewerRemoved(payload) {
  if (!payload || payload.channel_id !== app.channelId || typeof payload.viewer_id !== "string") return;
  const name = nameOf(payload.viewer_id);
  moderation.onRemoved(payload.viewer_id);
  moderation.viewers = moderation.viewers.filter((v) => v.id !== payload.viewer_id);
  renderViewerList();
  showNotice(payload.banned ? `${name} is banned from this channel.` : `${name} was removed from this channel.`);
}

/** `viewer_muted {channel_id, viewer_id, muted}`. */
function onViewerMuted(payload) {
  if (!payload || payload.channel_id !== app.channelId || typeof payload.viewer_id !== "string") return;
  const muted = payload.muted === true;
  const viewer = moderation.viewers.find((v) => v.id === payload.viewer_id);
  if (viewer) viewer.muted = muted;
  renderViewerList();
  const name = nameOf(payload.viewer_id);
  showNotice(muted ? `${name} is muted: their messages are refused.` : `${name} can write again.`);
}

function onBansCleared(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  showNotice("Every ban of this channel is lifted: banned viewers may join again.");
}

/** A moderation request was refused: the broadcast goes on; the list may be stale. */
export function onModerationRefused(message, code) {
  showNotice(message);
  if (code === "viewer_not_found") refreshViewerList();
}

function sendChatSettings() {
  if (!app.channelId || !app.socket.connected) return;
  const slowMode = Number(mui.slowMode.value) || 0;
  request("moderation", "chat_settings", {
    channel_id: app.channelId,
    slow_mode: slowMode,
    chat_enabled: mui.chatSwitch.checked,
  });
}

/** The controls follow the channel's settings as the server confirms them. */
function showChatSettings({ slowMode, chatEnabled }) {
  if (!mui.slowMode) return;
  const value = String(slowMode);
  if (![...mui.slowMode.options].some((option) => option.value === value)) {
    // A value set elsewhere (another device of ours): shown as it is.
    mui.slowMode.append(new Option(`${slowMode} s`, value));
  }
  mui.slowMode.value = value;
  mui.chatSwitch.checked = chatEnabled;
}
