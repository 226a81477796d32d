// Chat, in both modes: viewers write with `send_message`, the broadcaster with
// `broadcaster_message` (EXTENSIONS.md "Chat"), and the broadcaster's messages are marked for
// everyone; and the viewer's chat name (alias). User-supplied text is only ever inserted with
// textContent.

import { app, mode } from "./state.js";
import { request, whenClientId } from "./signaling.js";
import { $, ui } from "./ui.js";

/** The server's chat limit, counted in Unicode characters like the server does. */
const CHAT_MAX_CHARS = 200;
/** Older chat lines are dropped past this, so a long session does not grow without bound. */
const CHAT_LOG_LIMIT = 500;

const chat = {
  /** Last text sent, restored into the input if the server rejects it. */
  lastSent: "",
  /** Set when the server refuses our messages for good (a server without the broadcaster's chat). */
  readOnly: false,
};

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
  ui.chatInput.disabled = !enabled || chat.readOnly;
  ui.chatSend.disabled = !enabled || chat.readOnly;
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
  const sender = typeof payload.sender_id === "string" ? payload.sender_id : "Someone";
  const fromBroadcaster = payload.from_broadcaster === true;
  const isOwn = mode === "broadcaster" ? fromBroadcaster : !fromBroadcaster && sender === myChatName();
  // Our message came back: whatever went wrong before is over.
  if (isOwn) ui.chatError.textContent = "";
  appendChatMessage(sender, payload.message, payload.timestamp, { isOwn, fromBroadcaster });
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
    const sender = typeof m.sender_id === "string" ? m.sender_id : "Someone";
    const fromBroadcaster = m.from_broadcaster === true;
    const key = messageKey(sender, m.message, m.timestamp);
    if ([...log.children].some((li) => li.dataset.key === key)) continue;
    const isOwn = mode === "broadcaster" ? fromBroadcaster : !fromBroadcaster && sender === myChatName();
    const item = chatItem(sender, m.message, m.timestamp, { isOwn, fromBroadcaster });
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

function appendChatMessage(sender, text, timestamp, { isOwn, fromBroadcaster }) {
  const log = ui.chatLog;
  // Follow new messages only if the reader was already at the bottom.
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;

  log.append(chatItem(sender, text, timestamp, { isOwn, fromBroadcaster }));

  while (log.children.length > CHAT_LOG_LIMIT) log.firstElementChild.remove();
  if (atBottom || isOwn) log.scrollTop = log.scrollHeight;
}

function chatItem(sender, text, timestamp, { isOwn, fromBroadcaster }) {
  const item = document.createElement("li");
  item.className = "chat-msg";
  if (isOwn) item.classList.add("own");
  // The broadcaster's messages stand out (the server marks them; a viewer may not fake it).
  if (fromBroadcaster) item.classList.add("from-broadcaster");
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
  return item;
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
