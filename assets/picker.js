// Viewer mode: the list of live channels and the channel-id form. Picking a channel navigates,
// so one page watches exactly one channel.

import { emit, isConnected } from "./signaling.js";
import { app, embed } from "./state.js";
import { $ } from "./ui.js";

/** How often the channel list is fetched again while the page is visible. */
const CHANNEL_LIST_REFRESH_MS = 10000;
/** How often the displayed channel ages tick between fetches. */
const AGE_TICK_MS = 1000;

const picker = {
  channels: [],
  channelsReceivedAt: 0,
  /** Whether the page is watching this channel id (marked in the list). */
  isWatching: () => false,
};

const pui = {};

/**
 * Shows the picker with `channel` in the form, and keeps the list fresh. `isWatching(id)`
 * tells which row to mark as the one being watched.
 */
export function initPicker(channel, isWatching) {
  Object.assign(pui, {
    picker: $("channel-picker"),
    list: $("channel-list"),
    listEmpty: $("channel-list-empty"),
    refreshBtn: $("refresh-channels-btn"),
    joinForm: $("join-form"),
    channelInput: $("channel-input"),
  });
  picker.isWatching = isWatching;
  pui.picker.hidden = false;
  pui.channelInput.value = channel || "";

  pui.refreshBtn.addEventListener("click", requestChannelList);
  pui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    goToChannel(pui.channelInput.value.trim());
  });
  setInterval(tickChannelAges, AGE_TICK_MS);
  setInterval(() => {
    if (!document.hidden) requestChannelList();
  }, CHANNEL_LIST_REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) requestChannelList();
  });
}

export function renderPicker() {
  pui.refreshBtn.disabled = app.connection !== "connected";
  renderChannelMarks();
}

/** Manual entry and list links both navigate, so one page watches exactly one channel. */
function goToChannel(channelId) {
  if (!channelId) {
    pui.channelInput.focus();
    return;
  }
  window.location.assign(channelHref(channelId));
}

function channelHref(channelId) {
  return `/?viewer=true&channel=${encodeURIComponent(channelId)}`;
}

export function requestChannelList() {
  // An embed shows one channel and no list.
  if (embed) return;
  // A join without a channel id only lists channels; it does not change membership.
  if (isConnected()) emit("join_as_viewer", {});
}

export function onChannelList(payload) {
  picker.channels = payload && Array.isArray(payload.channels) ? payload.channels : [];
  picker.channelsReceivedAt = Date.now();
  renderChannelList();
}

/** Updates the list in place (keyed by channel id) so a click never lands on a replaced row. */
function renderChannelList() {
  const existing = new Map();
  for (const item of pui.list.querySelectorAll("li[data-channel-id]")) {
    existing.set(item.dataset.channelId, item);
  }
  const rows = picker.channels
    .filter((channel) => channel && typeof channel.id === "string")
    .map((channel) => existing.get(channel.id) || createChannelRow(channel.id));
  pui.list.replaceChildren(...rows);
  pui.listEmpty.hidden = rows.length > 0;
  tickChannelAges();
  renderChannelMarks();
}

function createChannelRow(channelId) {
  const item = document.createElement("li");
  item.className = "channel";
  item.dataset.channelId = channelId;
  const name = document.createElement("span");
  name.className = "channel-name";
  name.textContent = channelId;
  const age = document.createElement("span");
  age.className = "channel-age";
  const link = document.createElement("a");
  link.className = "join-channel button";
  link.href = channelHref(channelId);
  link.textContent = "Watch";
  link.setAttribute("aria-label", `Watch channel ${channelId}`);
  item.append(name, age, link);
  return item;
}

function tickChannelAges() {
  const elapsed = Math.max(0, Math.floor((Date.now() - picker.channelsReceivedAt) / 1000));
  const ages = new Map(picker.channels.map((c) => [c.id, Number(c.age_seconds) || 0]));
  for (const item of pui.list.querySelectorAll("li[data-channel-id]")) {
    const ageEl = item.querySelector(".channel-age");
    const seconds = (ages.get(item.dataset.channelId) || 0) + elapsed;
    ageEl.textContent = `started ${formatAge(seconds)} ago`;
  }
}

function formatAge(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min`;
}

/** Marks the channel this page is watching in the list. */
function renderChannelMarks() {
  if (!pui.list) return;
  for (const item of pui.list.querySelectorAll("li[data-channel-id]")) {
    const current = picker.isWatching(item.dataset.channelId);
    item.classList.toggle("current", current);
    const link = item.querySelector(".join-channel");
    link.textContent = current ? "Watching" : "Watch";
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}
