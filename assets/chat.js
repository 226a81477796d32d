// Chat, in both modes: viewers write with `send_message`, the broadcaster with
// `broadcaster_message` (EXTENSIONS.md "Chat"), and the broadcaster's messages are marked for
// everyone; and the viewer's chat name (alias). Moderation (EXTENSIONS.md "Moderation"):
// messages carry their `id` (we present a client key), the broadcaster removes one with the
// button on it and every page hides it on `message_removed`; the channel's slow mode and
// "chat off" are shown by the input (`chat_settings`). User-supplied text is only ever
// inserted with textContent.

import { app, mode } from "./state.js";
import { request, whenClientId } from "./signaling.js";
import { $, ui } from "./ui.js";

/** The server's chat limit, counted in Unicode characters like the server does. */
const CHAT_MAX_CHARS = 200;
/** Older chat lines are dropped past this, so a long session does not grow without bound. */
const CHAT_LOG_LIMIT = 500;
/** A message's Remove button is pressed again only after this (its removal may have been refused). */
const REMOVE_RETRY_MS = 3000;

const chat = {
  /** Last text sent, restored into the input if the server rejects it. */
  lastSent: "",
  /** Set when the server refuses our messages for good (a server without the broadcaster's chat). */
  readOnly: false,
  /** The mode's wish: the input is open while in a channel and connected (setChatEnabled). */
  enabled: false,
  /** The channel's chat settings as the server last said (`chat_settings`); the defaults until then. */
  settings: { slowMode: 0, chatEnabled: true },
  /**
   * Ids of messages the broadcaster removed: a `chat_history` or `new_message` that crossed the
   * removal does not bring one back.
   */
  removed: new Set(),
};

/** The channel's chat settings when the server says nothing (EXTENSIONS.md "Moderation"). */
const DEFAULT_SETTINGS = { slowMode: 0, chatEnabled: true };

export function initChat() {
  ui.chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  ui.chatInput.addEventListener("input", updateChatCount);
  updateChatCount();
}

export function showChat(visible) {
  ui.chatPanel.hidden = !visible;
  ui.layout.classList.toggle("with-chat", visible);
}

export function setChatEnabled(enabled) {
  chat.enabled = enabled;
  // A viewer cannot write while the broadcaster has turned the chat off; the broadcaster's own
  // messages are never limited.
  const off = mode !== "broadcaster" && !chat.settings.chatEnabled;
  ui.chatInput.disabled = !enabled || chat.readOnly || off;
  ui.chatSend.disabled = !enabled || chat.readOnly || off;
}

/**
 * `chat_settings {channel_id, slow_mode, chat_enabled}`: the broadcaster changed them, or we
 * joined a channel whose settings are not the defaults. Shown by the input; `onChange` (the
 * broadcaster's controls) hears of them too.
 */
export function onChatSettings(payload) {
  if (!payload || payload.channel_id !== app.channelId) return;
  const slowMode = Number.isInteger(payload.slow_mode) && payload.slow_mode > 0 ? payload.slow_mode : 0;
  applyChatSettings({ slowMode, chatEnabled: payload.chat_enabled !== false });
}

let settingsListener = () => {};

/** The broadcaster's chat controls follow what the server says. */
export function onChatSettingsChange(listener) {
  settingsListener = listener;
}

/**
 * A new membership starts from the defaults: the server only says so when a channel's
 * settings differ from them.
 */
export function resetChatSettings() {
  applyChatSettings({ ...DEFAULT_SETTINGS });
}

function applyChatSettings(settings) {
  chat.settings = settings;
  const el = $("chat-settings");
  const parts = [];
  if (!settings.chatEnabled) parts.push(mode === "broadcaster" ? "Chat is off for viewers" : "Chat is off");
  else if (settings.slowMode > 0) parts.push(`Slow mode: ${settings.slowMode} s`);
  if (el) {
    el.textContent = parts.join(" · ");
    el.hidden = parts.length === 0;
  }
  if (!settings.chatEnabled && mode !== "broadcaster") ui.chatError.textContent = "";
  setChatEnabled(chat.enabled);
  settingsListener(settings);
}

function charCount(text) {
  // The server counts Unicode characters (code points), not UTF-16 units.
  return [...text].length;
}

function updateChatCount() {
  const count = charCount(ui.chatInput.value.trim());
  ui.chatCount.textContent = `${count}/${CHAT_MAX_CHARS}`;
  ui.chatCount.classList.toggle("over", count > CHAT_MAX_CHARS);
}

function sendChat() {
  // Trim like legacy pages; the server trims too. An empty message is simply not sent.
  const message = ui.chatInput.value.trim();
  if (!message || !app.channelId || !app.socket.connected) return;
  showChatError("");
  chat.lastSent = message;
  // `send_message` from a broadcaster keeps its contract answer (the viewer error); the
  // broadcaster writes with an event of its own.
  const event = mode === "broadcaster" ? "broadcaster_message" : "send_message";
  request("chat", event, { channel_id: app.channelId, message });
  ui.chatInput.value = "";
  updateChatCount();
}

export function onChatRefused(message, code) {
  showChatError(message);
  if (code === "chat_off" && chat.settings.chatEnabled) {
    // The settings crossed our message: the refusal says the chat is off.
    applyChatSettings({ ...chat.settings, chatEnabled: false });
  }
  if (mode === "broadcaster" && (code === "not_a_viewer" || code === "not_the_broadcaster")) {
    // This server does not let us write here; keep the chat readable and say so.
    chat.readOnly = true;
    ui.chatInput.value = "";
    ui.chatInput.placeholder = "Only viewers can write here";
    setChatEnabled(false);
    updateChatCount();
  }
}

export function showChatError(text) {
  ui.chatError.textContent = text;
  if (text && !ui.chatInput.value && chat.lastSent) {
    // Give the rejected text back so the user can fix it rather than retype it.
    ui.chatInput.value = chat.lastSent;
    updateChatCount();
  }
}

export function onNewMessage(payload) {
  if (!payload || typeof payload.message !== "string") return;
  const id = messageId(payload);
  if (id !== null && chat.removed.has(id)) return;
  const sender = typeof payload.sender_id === "string" ? payload.sender_id : "Someone";
  const fromBroadcaster = payload.from_broadcaster === true;
  const isOwn = mode === "broadcaster" ? fromBroadcaster : !fromBroadcaster && sender === myChatName();
  // Our message came back: whatever went wrong before is over.
  if (isOwn) ui.chatError.textContent = "";
  appendChatMessage(sender, payload.message, payload.timestamp, { isOwn, fromBroadcaster, id });
}

/**
 * `message_removed {channel_id, message_id}`: the broadcaster removed a message; it leaves
 * every page (and stays away if the history or a late copy brings it again).
 */
export function onMessageRemoved(payload) {
  if (!payload || payload.channel_id !== app.channelId || typeof payload.message_id !== "string") return;
  chat.removed.add(payload.message_id);
  for (const item of ui.chatLog.querySelectorAll(".chat-msg")) {
    if (item.dataset.id === payload.message_id) item.remove();
  }
}

/** A message's id (modern pages get one), or null. */
function messageId(message) {
  return typeof message.id === "string" && message.id ? message.id : null;
}

/**
 * `chat_history` (we join with `history: true`): the channel's last messages, oldest first.
 * They go before the live ones in time order, and a message already shown (a live one that
 * crossed the history, or one we saw before a reconnect) is not shown twice.
 */
export function onChatHistory(payload) {
  if (!payload || payload.channel_id !== app.channelId || !Array.isArray(payload.messages)) return;
  const log = ui.chatLog;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  for (const m of payload.messages) {
    if (!m || typeof m.message !== "string") continue;
    const id = messageId(m);
    if (id !== null && chat.removed.has(id)) continue;
    const sender = typeof m.sender_id === "string" ? m.sender_id : "Someone";
    const fromBroadcaster = m.from_broadcaster === true;
    const key = messageKey(sender, m.message, m.timestamp);
    if ([...log.children].some((li) => li.dataset.key === key)) continue;
    const isOwn = mode === "broadcaster" ? fromBroadcaster : !fromBroadcaster && sender === myChatName();
    const item = chatItem(sender, m.message, m.timestamp, { isOwn, fromBroadcaster, id });
    item.classList.add("history");
    const later = [...log.children].find((li) => Number(li.dataset.ts) > m.timestamp);
    log.insertBefore(item, later || null);
  }
  while (log.children.length > CHAT_LOG_LIMIT) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

/** What tells one message from another on the page (live ones carry no id: legacy shape). */
function messageKey(sender, text, timestamp) {
  return JSON.stringify([sender, timestamp, text]);
}

/**
 * The name the server attaches to our messages: our alias, or "Viewer-" + 8 chars of our id;
 * null while we do not know our id yet.
 */
function myChatName() {
  if (mode !== "viewer") return null;
  if (alias.name) return alias.name;
  return app.myId ? `Viewer-${[...app.myId].slice(0, 8).join("")}` : null;
}

function appendChatMessage(sender, text, timestamp, { isOwn, fromBroadcaster, id }) {
  const log = ui.chatLog;
  // Follow new messages only if the reader was already at the bottom.
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;

  log.append(chatItem(sender, text, timestamp, { isOwn, fromBroadcaster, id }));

  while (log.children.length > CHAT_LOG_LIMIT) log.firstElementChild.remove();
  if (atBottom || isOwn) log.scrollTop = log.scrollHeight;
}

function chatItem(sender, text, timestamp, { isOwn, fromBroadcaster, id }) {
  const item = document.createElement("li");
  item.className = "chat-msg";
  if (isOwn) item.classList.add("own");
  // The broadcaster's messages stand out (the server marks them; a viewer may not fake it).
  if (fromBroadcaster) item.classList.add("from-broadcaster");
  if (id) item.dataset.id = id;
  item.dataset.key = messageKey(sender, text, timestamp);
  if (typeof timestamp === "number") item.dataset.ts = String(timestamp);
  const senderEl = document.createElement("span");
  senderEl.className = "chat-sender";
  senderEl.textContent = sender;
  const textEl = document.createElement("span");
  textEl.className = "chat-text";
  textEl.textContent = text;
  item.append(senderEl, textEl);
  const time = formatChatTime(timestamp);
  if (time) {
    const timeEl = document.createElement("time");
    timeEl.className = "chat-time";
    timeEl.dateTime = time.iso;
    timeEl.textContent = time.label;
    item.append(timeEl);
  }
  if (id && mode === "broadcaster") item.append(removeButton(id));
  return item;
}

/** The broadcaster's button on each message with an id: removes it for everyone. */
function removeButton(id) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "chat-remove link-btn";
  button.textContent = "Remove";
  button.title = "Remove this message for everyone";
  button.addEventListener("click", () => {
    if (!app.channelId || !app.socket.connected) return;
    button.disabled = true;
    request("moderation", "remove_message", { channel_id: app.channelId, message_id: id });
    // `message_removed` takes the message away; if it is refused instead, try again later.
    setTimeout(() => {
      button.disabled = false;
    }, REMOVE_RETRY_MS);
  });
  return button;
}

function formatChatTime(timestamp) {
  if (typeof timestamp !== "number" || !Number.isFinite(timestamp)) return null;
  const date = new Date(timestamp * 1000);
  return {
    iso: date.toISOString(),
    label: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  };
}

// -----------------------------------------------------------------------------------------------
// Alias: a viewer's chat name, kept by the server per channel membership
// -----------------------------------------------------------------------------------------------

const alias = {
  name: null,
  /**
   * Our id (`client_id`) when the server stored the alias; null once that membership is gone
   * (reconnect, channel removed), so the alias is sent again on the next join.
   */
  ownerId: null,
};

const aui = {};

/** Viewer mode only: shows the name and wires the dialog. */
export function initAlias() {
  Object.assign(aui, {
    area: $("alias-area"),
    current: $("alias-current"),
    button: $("alias-btn"),
    dialog: $("alias-dialog"),
    form: $("alias-form"),
    input: $("alias-input"),
    cancel: $("alias-cancel"),
  });
  aui.area.hidden = false;
  aui.button.addEventListener("click", openAliasDialog);
  aui.cancel.addEventListener("click", () => aui.dialog.close());
  aui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveAlias();
  });
}

export function setAliasEnabled(enabled) {
  aui.button.disabled = !enabled;
}

function openAliasDialog() {
  aui.input.value = alias.name || "";
  showAliasError("");
  aui.dialog.showModal();
  aui.input.focus();
}

function saveAlias() {
  if (!app.channelId || !app.socket.connected) return;
  showAliasError("");
  // Trimmed like legacy pages; the server validates and explains what is wrong.
  const name = aui.input.value.trim();
  request("alias", "set_alias", { channel_id: app.channelId, alias: name });
}

export function onAliasSet(payload) {
  if (!payload || typeof payload.alias !== "string") return;
  alias.name = payload.alias;
  alias.ownerId = app.myId;
  renderAliasCurrent();
  showAliasError("");
  if (aui.dialog.open) aui.dialog.close();
}

/**
 * After a reconnect the server knows us under a new id, without alias: give it ours again.
 * Which id we have is known only from `client_id`, so this waits for it.
 */
export function restoreAlias() {
  if (!alias.name) return;
  whenClientId((myId) => {
    if (alias.name && alias.ownerId !== myId) {
      request("alias", "set_alias", { channel_id: app.channelId, alias: alias.name });
    }
  });
}

/** Our membership (and the alias the server kept with it) is gone. */
export function forgetAliasOwner() {
  alias.ownerId = null;
}

export function renderAliasCurrent() {
  if (aui.current) aui.current.textContent = myChatName() || "";
}

export function showAliasError(text) {
  const el = $("alias-error");
  if (el) el.textContent = text;
}
