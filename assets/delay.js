// How far behind live the picture is, estimated by the pages themselves (no server involved).
//
// Each hop of the picture costs its sender an encode (and a wait in its pacer) and its
// receiver a network trip, a wait in the jitter buffer and a decode; WebRTC's statistics
// measure each of those on the page where it happens. So every page adds its own share to its
// feeder's and passes the sum on, over a small data channel that the viewer opens on the
// connection to its feeder (it is part of the viewer's offer, so nothing else is negotiated):
//
// - feeder → viewer, every REPORT_MS: `{behind}`, seconds from capture to the moment the
//   feeder's packets for this viewer leave it (the broadcaster: its encode and pacer time; a
//   relaying viewer: its own delay plus its encode and pacer time for this viewer);
// - viewer → feeder, every REPORT_MS: `{depth, behind}`, the deepest viewer of the sender's
//   subtree (itself included; among equally deep ones the furthest behind), so the broadcaster
//   learns the deepest viewer's delay from its direct viewers alone.
//
// A viewer's own delay = its feeder's `behind` + half the connection's round trip + the jitter
// buffer's wait + the decode time, each averaged over the last REPORT_MS and smoothed over a
// few of them. Not counted: the camera's capture and the screen's refresh (a frame or two
// each), so the figure is a floor; the `25-delay-per-hop` end-to-end scenario compares it
// with the delay measured from a timestamp drawn into the picture. Legacy pages never open
// the channel and see nothing; a viewer whose feeder sends no figure (a legacy broadcaster
// page) counts the broadcaster's share as 0 and shows nothing below depth 1.
//
// Its state is `window.broadcastApp.delay` (read by tests and the console).

import { app } from "./state.js";

/** How often figures are computed and sent up and down the tree. */
const REPORT_MS = 1000;
/** A figure from a peer older than this is forgotten (the peer left or stopped reporting). */
const STALE_MS = 5000;
/** Figures from peers are believed within these bounds only; anything else is dropped. */
const MAX_BEHIND_S = 120;
const MAX_DEPTH = 1000;
const MAX_MESSAGE_CHARS = 200;
/**
 * Our hop's parts are smoothed (each new second's reading moves them this share of the way), so
 * the figure shown does not jump with every frame that came late.
 */
const SMOOTHING = 0.3;
/** The data channel's label: one per connection between a feeder and a viewer. */
const LABEL = "delay";

/**
 * @typedef {object} Counters the cumulative WebRTC counters a delay is averaged from
 * @property {number} count frames (or packets) counted so far
 * @property {number} total seconds summed over them
 */

export const delay = {
  /** Viewer: seconds from capture to our screen; null until known. */
  behind: null,
  /** Viewer: our own hop's parts in seconds `{network, jitter, decode}`; null until known. */
  hop: null,
  /** Viewer: our feeder's last `behind` (seconds), null until one arrived. */
  feeder: null,
  /**
   * The deepest viewer we know of, `{depth, behind}`: in our subtree (a viewer, itself
   * included) or in the whole broadcast (the broadcaster). Null until known.
   */
  deepest: null,
};

/** The connection to our feeder and its channel (viewer mode). */
let feed = null;
/** Child id → `{pc, channel, report, reportAt, outbound}`: the viewers we feed. */
const children = new Map();
let timer = null;
let ticking = false;
/** What sending a viewer the picture costs us (seconds), and whose statistics tell it next. */
let sendCost = 0;
let costTurn = 0;
/** Renders the figures after each computation (the mode's display). */
let onUpdate = () => {};

/** `render(delay)` runs after every computation; the mode shows what it wants of it. */
export function initDelay(render) {
  onUpdate = render;
  app.delay = delay;
}

/**
 * A viewer's new connection to its feeder: opens the channel (call before the offer is made,
 * so that the offer carries it). The previous feeder's figures are forgotten.
 */
export function watchFeeder(pc, depth) {
  feed = { pc, depth, channel: null, feederAt: 0, inbound: null };
  delay.feeder = null;
  delay.hop = null;
  try {
    const channel = pc.createDataChannel(LABEL, { ordered: false, maxRetransmits: 0 });
    const mine = feed;
    channel.onmessage = ({ data }) => {
      const message = parse(data);
      if (!message || feed !== mine || !isSeconds(message.behind)) return;
      delay.feeder = message.behind;
      mine.feederAt = performance.now();
    };
    feed.channel = channel;
  } catch (err) {
    // No data channels here: the page still plays, it only shows no delay.
    console.info("No delay figures on this connection", err);
  }
  start();
}

/** The viewer left the tree (or the channel): no feeder, no figures. */
export function forgetFeeder() {
  feed = null;
  delay.behind = null;
  delay.hop = null;
  delay.feeder = null;
  delay.deepest = null;
  onUpdate(delay);
}

/** A connection to a viewer we feed (broadcaster or relaying viewer): its channel arrives. */
export function watchChild(childId, pc) {
  const child = { pc, channel: null, report: null, reportAt: 0, outbound: null };
  children.set(childId, child);
  pc.ondatachannel = ({ channel }) => {
    if (channel.label !== LABEL || children.get(childId) !== child) return;
    child.channel = channel;
    channel.onmessage = ({ data }) => {
      const message = parse(data);
      if (!message || !isSeconds(message.behind) || !Number.isInteger(message.depth)) return;
      if (message.depth < 1 || message.depth > MAX_DEPTH) return;
      child.report = { depth: message.depth, behind: message.behind };
      child.reportAt = performance.now();
    };
  };
  start();
}

function start() {
  if (timer === null) timer = setInterval(tick, REPORT_MS);
}

async function tick() {
  if (ticking) return;
  ticking = true;
  try {
    await update();
  } catch (err) {
    console.warn("Could not update the delay figures", err);
  } finally {
    ticking = false;
  }
}

async function update() {
  const now = performance.now();
  for (const [id, child] of children) {
    if (child.pc.signalingState === "closed") children.delete(id);
  }
  if (feed && feed.pc.signalingState === "closed") feed = null;
  if (!feed && children.size === 0) {
    clearInterval(timer);
    timer = null;
  }

  // Our own delay (viewers): the feeder's share plus our hop.
  const current = feed;
  if (current) {
    const hop = await receivingHop(current);
    if (feed !== current) return;
    if (current.feederAt && now - current.feederAt > STALE_MS) delay.feeder = null;
    if (hop) delay.hop = smoothed(delay.hop, hop);
    const feederShare = delay.feeder ?? (current.depth === 1 ? 0 : null);
    delay.behind = delay.hop && feederShare !== null
      ? feederShare + delay.hop.network + delay.hop.jitter + delay.hop.decode
      : null;
  }

  // The deepest viewer: ourselves (a viewer) and the fresh reports of the viewers we feed.
  let deepest = current && delay.behind !== null ? { depth: current.depth, behind: delay.behind } : null;
  for (const child of children.values()) {
    if (!child.report || now - child.reportAt > STALE_MS) continue;
    deepest = deeper(deepest, child.report);
  }
  delay.deepest = deepest;
  if (current && deepest) send(current.channel, deepest);

  // Down: each viewer we feed gets our delay plus what sending costs us. That cost is about
  // the same for every viewer we feed (one encoder each, same picture), so one connection's
  // statistics a tick, in turn, keep it fresh: a broadcaster feeding a hundred viewers
  // directly (no tree) does not read a hundred connections' statistics every second.
  const base = current ? delay.behind : 0;
  const open = [...children.values()].filter((c) => c.channel && c.channel.readyState === "open");
  if (base !== null && open.length > 0) {
    costTurn = (costTurn + 1) % open.length;
    const cost = await sendingCost(open[costTurn]);
    if (cost !== null) sendCost = cost;
    for (const child of open) send(child.channel, { behind: round(base + sendCost) });
  }
  onUpdate(delay);
}

/** Each part of `hop` moved SMOOTHING of the way from `before` (the first reading as it is). */
function smoothed(before, hop) {
  if (!before) return hop;
  const part = (name) => before[name] + SMOOTHING * (hop[name] - before[name]);
  return { network: part("network"), jitter: part("jitter"), decode: part("decode") };
}

/** The deeper of two `{depth, behind}`; between equally deep ones, the one further behind. */
function deeper(a, b) {
  if (!a) return b;
  if (b.depth !== a.depth) return b.depth > a.depth ? b : a;
  return b.behind > a.behind ? b : a;
}

/**
 * Our hop from the feeder's stats: half the round trip, and the jitter buffer's wait and the
 * decode time per frame over the last interval. Null while no frame was decoded in it.
 */
async function receivingHop(current) {
  let report;
  try {
    report = await current.pc.getStats();
  } catch {
    return null;
  }
  let inbound = null;
  let rtt = null;
  const pairs = new Map();
  let selectedPair = null;
  report.forEach((stat) => {
    if (stat.type === "inbound-rtp" && stat.kind === "video") inbound = stat;
    if (stat.type === "candidate-pair") pairs.set(stat.id, stat);
    if (stat.type === "transport" && stat.selectedCandidatePairId) selectedPair = stat.selectedCandidatePairId;
  });
  const pair = pairs.get(selectedPair) || [...pairs.values()].find((p) => p.nominated && p.state === "succeeded");
  if (pair && Number.isFinite(pair.currentRoundTripTime)) rtt = pair.currentRoundTripTime;
  if (!inbound) return null;
  const now = {
    jitter: { count: inbound.jitterBufferEmittedCount || 0, total: inbound.jitterBufferDelay || 0 },
    decode: { count: inbound.framesDecoded || 0, total: inbound.totalDecodeTime || 0 },
  };
  const before = current.inbound;
  current.inbound = now;
  const jitter = perItem(before && before.jitter, now.jitter);
  const decode = perItem(before && before.decode, now.decode);
  if (jitter === null || decode === null) return null;
  return { network: rtt === null ? 0 : rtt / 2, jitter, decode };
}

/**
 * What sending to one viewer costs: encode time per frame and the pacer's wait per packet,
 * since its statistics were last read; null when nothing was sent meanwhile.
 */
async function sendingCost(child) {
  let report;
  try {
    report = await child.pc.getStats();
  } catch {
    return null;
  }
  let outbound = null;
  report.forEach((stat) => {
    if (stat.type === "outbound-rtp" && stat.kind === "video") outbound = stat;
  });
  if (!outbound) return null;
  const now = {
    encode: { count: outbound.framesEncoded || 0, total: outbound.totalEncodeTime || 0 },
    pacer: { count: outbound.packetsSent || 0, total: outbound.totalPacketSendDelay || 0 },
  };
  const before = child.outbound;
  child.outbound = now;
  const encode = perItem(before && before.encode, now.encode);
  const pacer = perItem(before && before.pacer, now.pacer);
  return encode === null ? null : encode + (pacer ?? 0);
}

/** Seconds per item between two readings of a counter (the first reading: since the start). */
function perItem(before, now) {
  const count = now.count - (before ? before.count : 0);
  const total = now.total - (before ? before.total : 0);
  if (count <= 0 || !(total >= 0)) return null;
  return total / count;
}

function send(channel, message) {
  if (!channel || channel.readyState !== "open") return;
  try {
    channel.send(JSON.stringify(message));
  } catch {
    // Closing meanwhile: the next tick forgets it.
  }
}

/** A peer's message: a small JSON object, or null. */
function parse(data) {
  if (typeof data !== "string" || data.length > MAX_MESSAGE_CHARS) return null;
  try {
    const message = JSON.parse(data);
    return message && typeof message === "object" && !Array.isArray(message) ? message : null;
  } catch {
    return null;
  }
}

function isSeconds(value) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= MAX_BEHIND_S;
}

function round(seconds) {
  return Math.round(seconds * 1000) / 1000;
}

/** "≈ 0.4 s behind live" (at least 0.1 s: nothing is live to the millisecond). */
export function behindText(seconds) {
  const shown = Math.max(0.1, Math.round(seconds * 10) / 10);
  return `≈ ${shown.toFixed(1)} s behind live`;
}
