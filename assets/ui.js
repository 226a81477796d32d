// The status line, the notice, and small DOM helpers. What the socket is doing takes precedence
// over what the page is doing: a lost connection is shown even while "live".

import { app } from "./state.js";

const NOTICE_MS = 6000;

export const $ = (id) => document.getElementById(id);

/** Elements every mode uses; each mode looks up its own when it starts. */
export const ui = {
  status: $("status"),
  notice: $("notice"),
  layout: $("layout"),
  modeBroadcaster: $("mode-broadcaster"),
  modeViewer: $("mode-viewer"),
  chatPanel: $("chat-panel"),
  chatLog: $("chat-log"),
  chatError: $("chat-error"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  chatSend: $("chat-send"),
  chatCount: $("chat-count"),
};

const CONNECTION_TEXT = {
  connecting: "Connecting to the server…",
  reconnecting: "Connection to the server lost. Reconnecting…",
  unreachable: "Cannot reach the server. Still trying…",
};

/** The page mode's controller, whose `render()` follows every status change. */
let controller = null;

export function useController(modeController) {
  controller = modeController;
}

/** Records what the page is doing and shows it unless a connection problem is more urgent. */
export function setPhase(state, text) {
  app.phase = { state, text };
  renderStatus();
}

export function setConnection(connection) {
  app.connection = connection;
  renderStatus();
}

export function renderStatus() {
  const connected = app.connection === "connected";
  // A page-level error (e.g. the client script failed to load) outranks "connecting".
  const showPhase = connected || app.phase.state === "error";
  const state = showPhase ? app.phase.state : app.connection;
  const text = showPhase ? app.phase.text : CONNECTION_TEXT[app.connection];
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  document.body.dataset.state = state;
  if (controller) controller.render();
}

/** A short message that does not replace the status line, e.g. a refused relay. */
let noticeTimer = null;
export function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    ui.notice.hidden = true;
  }, NOTICE_MS);
}

/** Shows `text` on a button for a moment, then its own label again. */
export function flashButton(button, text) {
  const original = button.dataset.label || button.textContent;
  button.dataset.label = original;
  button.textContent = text;
  clearTimeout(button.flashTimer);
  button.flashTimer = setTimeout(() => {
    button.textContent = original;
  }, 1500);
}
