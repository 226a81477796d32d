// The viewer's part in the relay tree (PROTOCOL.md, "Relay tree"): the server names our feeder
// in `upstream` (the broadcaster, or a viewer who passes the stream on); we offer to it exactly
// as legacy viewers offer to the broadcaster, play what comes back, and forward those same
// tracks to the viewers the server hangs below us (they offer to us; we answer as the
// broadcaster does).
//
// Moving us (a new `upstream` while we have one) never disturbs our own children: their peer
// connections stay, and as soon as the new feeder's tracks arrive each child's senders switch
// to them with `replaceTrack`, which needs no renegotiation. Our own player keeps the old
// feeder's last picture until the new one's frames decode, then the old connection closes.
// A feeder whose connection fails, or that delivers no first frame within FIRST_FRAME_MS, is
// reported with `upstream_failed`; one whose picture stalls once it played (no frame for
// STALL_MS, or under a third of the sender's frame rate for SLOW_MS) with `upstream_stalled`,
// which also counts against a relaying feeder (EXTENSIONS.md, "Relay tree"). Either way the
// server gives us another one.
//
// We offer to pass the stream on only when this device is likely to manage it: not on a phone
// or tablet, not over a cellular or data-saving connection (capacity 0: the server hangs nobody
// below us). Otherwise the server's fan-out applies until our outgoing streams are held back by
// bandwidth or CPU (`qualityLimitationReason` of their outbound RTP stats): then we report a
// capacity of one child fewer than we feed, and the server moves one away.
//
// viewer.js owns the page (status line, player, joining); this module owns the peer
// connections of a tree viewer and tells viewer.js what happened through the hooks of
// `initRelay`. Its state is `window.broadcastApp.relay` (read by tests and the console).

import { forgetFeeder, watchChild, watchFeeder } from "./delay.js";
import {
  applyRemoteDescription, closePeer, createPeer, forgetPeer, sendDescription,
} from "./peers.js";
import { isConnected, request } from "./signaling.js";
import { app, peers } from "./state.js";

/** No first video frame from a new feeder for this long: ask the server for another (PROTOCOL.md). */
const FIRST_FRAME_MS = 5000;
/** No new video frame for this long once the feeder's picture played: it stalled. */
const STALL_MS = 2000;
/** Decoding under SLOW_RATIO of the sender's frame rate for this long: it stalled too. */
const SLOW_MS = 10000;
const SLOW_RATIO = 1 / 3;
/**
 * The sender's frame rate is the best rate this page decoded (over RATE_WINDOW_MS) in the
 * REFERENCE_MS before the SLOW_MS being judged: a relay re-encodes, so only the page knows what
 * the picture had. A reference under MIN_REFERENCE_FPS (a still screen share) judges nothing.
 */
const RATE_WINDOW_MS = 1000;
const REFERENCE_MS = 60000;
const MIN_REFERENCE_FPS = 6;
/** How often our children's outbound video is checked for a quality limitation. */
const QUALITY_SAMPLE_MS = 2000;
/** Held back by bandwidth or CPU for this share of the last LIMIT_WINDOW_MS: offer one fewer. */
const LIMIT_WINDOW_MS = 10000;
const LIMITED_SHARE = 0.8;
/** A child's stream gets this long to ramp up before its limitation counts. */
const QUALITY_GRACE_MS = 10000;
/** How often our feeder's inbound video is sampled for the stall check, once it plays. */
const SAMPLE_MS = 500;
/** ... and until its first frames, which make us `relay_ready` and "live" without delay. */
const FIRST_FRAMES_SAMPLE_MS = 100;

/**
 * @typedef {object} Upstream our feeder and the connection to it
 * @property {string} id the feeder's public id (`peer_id`)
 * @property {number} depth 1 = the broadcaster feeds us; as the server said when it placed us
 * @property {RTCPeerConnection} pc
 * @property {MediaStream} stream what the player shows: this feeder's tracks
 * @property {boolean} playing frames have been decoded from this feeder
 * @property {boolean} reported `upstream_failed` was sent for this feeder
 * @property {number} frames inbound video frames decoded so far (last sample)
 * @property {number} progressAt when `frames` last grew (or when we were placed)
 * @property {number} sampledAt when its stats were last read
 */

export const relay = {
  /** @type {Upstream|null} */
  upstream: null,
  /**
   * The feeder we were moved away from, kept only until the new one's frames decode (its last
   * picture stays on screen meanwhile). No longer in `peers`: the server stops relaying to it.
   * @type {Upstream|null}
   */
  previous: null,
  /** Child id → its RTCPeerConnection (also in `peers`, which routes ICE candidates). */
  children: new Map(),
  /** The tracks we forward, by kind: the latest feeder's, null until it sent one. */
  tracks: { video: null, audio: null },
  /** `upstream` events received (a test reads it to tell that a viewer was not moved). */
  placements: 0,
  /**
   * The `seq` of the last `upstream` we acted on. The server may emit two moves of ours in
   * either order; one whose `seq` is not above this is older than our placement and ignored.
   */
  lastSeq: 0,
  /**
   * The most children we said we can feed (`relay_capacity`), or null: as many as the server
   * allows. Sent before each `relay_ready`, so the server knows it before we are eligible.
   */
  capacity: null,
  /** Why `capacity` is set (the status line says it), or "". */
  capacityWhy: "",
  /** Decoded frame rates of our feeders, `{at, fps}` per RATE_WINDOW_MS, the last REFERENCE_MS. */
  rates: [],
  /**
   * The broadcaster's connection dropped and the server holds the channel for it
   * (`broadcaster_reconnecting`): our connections stay, and whatever picture still arrives keeps
   * playing, but a feeder that stops is not reported; the whole tree is placed afresh when the
   * broadcaster is back (`broadcaster_available`, then `upstream`).
   */
  held: false,
};

/**
 * Names what we forward in our children's SDP (its id only; it holds no tracks): one stream,
 * whichever feeder the tracks come from.
 */
const forwardStream = new MediaStream();

/** What viewer.js wants to hear; see initRelay. */
const hooks = {
  onPlacing: () => {},
  onTracks: () => {},
  onPlaying: () => {},
  onInterrupted: () => {},
  onFailed: () => {},
  onChildren: () => {},
  onCapacity: () => {},
};

let sampleTimer = null;
/** A getStats() is in flight (a slow one must not pile up behind the timer). */
let sampling = false;
let qualityTimer = null;
let checkingQuality = false;

/**
 * Wires the module. `handlers`:
 * - `onPlacing(upstream, moved)`: a feeder was named; `moved` when we had one before
 * - `onTracks(stream)`: the player should show `stream` (a new feeder's tracks)
 * - `onPlaying(upstream)`: frames are decoding from the current feeder
 * - `onInterrupted(upstream)`: its connection is interrupted (it may recover by itself)
 * - `onFailed(upstream, why)`: we reported it with `upstream_failed` and wait for another
 * - `onChildren(count)`: the number of viewers we feed changed
 * - `onCapacity(capacity, why)`: we lowered what we offer (`relay.capacity`)
 */
export function initRelay(handlers) {
  Object.assign(hooks, handlers);
  app.relay = relay;
  // From the console (and the tests): `broadcastApp.relay.limit(0)` stops passing the stream on.
  relay.limit = (capacity) => limitCapacity(capacity, "limited by hand");
  const unfit = deviceUnfitToRelay();
  if (unfit) {
    relay.capacity = 0;
    relay.capacityWhy = unfit;
  }
}

/**
 * Why this device should not pass the stream on, or "": a phone or tablet (a small uplink and a
 * battery), or a cellular or data-saving connection (the viewer pays for what it uploads).
 */
function deviceUnfitToRelay() {
  const ua = navigator.userAgent || "";
  const coarseTouch = navigator.maxTouchPoints > 1 &&
    typeof matchMedia === "function" && matchMedia("(pointer: coarse)").matches;
  if (navigator.userAgentData?.mobile === true || /Mobi|Android|iPad|iPhone/i.test(ua) || coarseTouch) {
    return "on a phone or tablet";
  }
  const connection = navigator.connection;
  if (connection?.saveData) return "data saver is on";
  if (connection?.type === "cellular") return "on a cellular connection";
  return "";
}

/**
 * Offers at most `capacity` children from now on (never more than before): the server moves
 * the ones over it to other feeders. `why` is for the status line.
 */
function limitCapacity(capacity, why) {
  const lowered = Math.max(0, Math.floor(capacity));
  if (relay.capacity !== null && lowered >= relay.capacity) return;
  relay.capacity = lowered;
  relay.capacityWhy = why;
  console.warn(`Passing the stream on to at most ${lowered} viewers: ${why}`);
  reportCapacity();
  hooks.onCapacity(lowered, why);
}

function reportCapacity() {
  if (relay.capacity === null || !isConnected() || !app.channelId) return;
  request("tree", "relay_capacity", { channel_id: app.channelId, capacity: relay.capacity });
}

export function bindRelaySocket(socket) {
  socket.on("upstream", onUpstream);
  socket.on("answer", onUpstreamAnswer);
  socket.on("offer", onChildOffer);
  socket.on("downstream_left", onDownstreamLeft);
}

/** Whether the current feeder's frames are decoding. */
export function isUpstreamPlaying() {
  return Boolean(relay.upstream && relay.upstream.playing);
}

/**
 * The broadcaster is reconnecting: keep every connection (media may still flow), but stop
 * watching our feeder and reporting it; see `relay.held`. resetRelay (or a new `upstream`) ends it.
 */
export function holdRelay() {
  relay.held = true;
  stopSampling();
}

/**
 * Closes every connection of the tree: our feeder and our children. The server has dissolved
 * or forgotten our place (a stop, the broadcaster left, a fresh join after our reconnect).
 */
export function resetRelay() {
  relay.held = false;
  // Our next place may come from a new channel of the same id, whose `seq` starts afresh.
  relay.lastSeq = 0;
  relay.rates = [];
  stopSampling();
  dropPrevious();
  if (relay.upstream) closePeer(relay.upstream.id);
  relay.upstream = null;
  for (const childId of [...relay.children.keys()]) closePeer(childId);
  relay.children.clear();
  stopQualityChecks();
  relay.tracks = { video: null, audio: null };
  forgetFeeder();
  hooks.onChildren(0);
}

// -----------------------------------------------------------------------------------------------
// Our feeder
// -----------------------------------------------------------------------------------------------

function onUpstream(payload) {
  if (!payload || typeof payload.peer_id !== "string") return;
  if (payload.channel_id && payload.channel_id !== app.channelId) return;
  // A server without `seq` sends none: every `upstream` counts, in order of arrival.
  if (Number.isSafeInteger(payload.seq)) {
    if (payload.seq <= relay.lastSeq) return;
    relay.lastSeq = payload.seq;
  }
  relay.placements += 1;
  relay.held = false;
  const depth = Number.isInteger(payload.depth) && payload.depth > 0 ? payload.depth : 1;
  const moved = relay.upstream !== null;
  if (moved) {
    // The old feeder is no longer our peer on the server: stop signaling to it at once, but
    // keep its connection (and its last frame) until the new feeder's tracks arrive.
    dropPrevious();
    relay.previous = relay.upstream;
    forgetPeer(relay.previous.id);
    relay.upstream = null;
  }
  connectUpstream(payload.peer_id, depth, moved);
}

/** Viewers make the offer (recvonly), as legacy viewers do with the broadcaster. */
async function connectUpstream(peerId, depth, moved) {
  const pc = createPeer(peerId, onUpstreamState);
  /** @type {Upstream} */
  const upstream = {
    id: peerId,
    depth,
    pc,
    stream: new MediaStream(),
    playing: false,
    reported: false,
    frames: 0,
    progressAt: performance.now(),
    sampledAt: 0,
    rateFrom: null,
    playingSince: 0,
  };
  relay.upstream = upstream;
  hooks.onPlacing(upstream, moved);
  startSampling();

  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  // How far behind live we are travels over a data channel of this connection (delay.js).
  watchFeeder(pc, depth);
  pc.ontrack = ({ track }) => {
    if (relay.upstream !== upstream) return;
    upstream.stream.addTrack(track);
    // Our children get the new feeder's frames the moment they flow.
    forward(track);
    // A first feeder is shown at once; after a move, the old picture stays until the new one's
    // frames decode (onFirstFrames).
    if (!relay.previous) hooks.onTracks(upstream.stream);
  };
  try {
    await sendDescription("offer", peerId, pc, await pc.createOffer());
  } catch (err) {
    console.error("Could not create an offer", err);
    reportFailed(upstream, "the offer could not be made");
  }
}

async function onUpstreamAnswer(payload) {
  if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
  const upstream = relay.upstream;
  if (!upstream || upstream.id !== payload.sender || peers.get(upstream.id) !== upstream.pc) return;
  try {
    await applyRemoteDescription(upstream.id, upstream.pc, payload.sdp);
  } catch (err) {
    console.error("Could not apply the feeder's answer", err);
    reportFailed(upstream, "its answer was unusable");
  }
}

function onUpstreamState(peerId, pc) {
  const upstream = relay.upstream;
  if (!upstream || upstream.pc !== pc || relay.held) return;
  if (pc.connectionState === "failed") {
    reportFailed(upstream, "the connection failed");
  } else if (pc.connectionState === "disconnected") {
    // Often recovers by itself; if frames do not come back, the stall check reports it.
    hooks.onInterrupted(upstream);
  } else if (pc.connectionState === "connected" && upstream.playing) {
    hooks.onPlaying(upstream);
  }
}

/**
 * Asks the server for another feeder (once per feeder); it answers with `upstream`. `event`:
 * `upstream_failed` (no media at all), or `upstream_stalled` (its picture stalled after playing,
 * which counts against a relaying feeder).
 */
function reportFailed(upstream, why, event = "upstream_failed") {
  if (upstream.reported || relay.upstream !== upstream || relay.held) return;
  upstream.reported = true;
  console.warn(`Feeder ${upstream.id} lost: ${why}; asking for another`);
  // A report queued while offline would reach the server for a socket that is not in the
  // channel; after a reconnect the page joins afresh anyway.
  if (isConnected() && app.channelId) {
    // Naming the feeder: a move of ours may be on its way, and the server must not take this
    // report for one about our next feeder.
    request("tree", event, { channel_id: app.channelId, peer_id: upstream.id });
  }
  hooks.onFailed(upstream, why);
}

function dropPrevious() {
  const previous = relay.previous;
  relay.previous = null;
  if (!previous) return;
  // Already out of `peers` (forgetPeer), unless the same id feeds us again.
  if (peers.get(previous.id) === previous.pc) forgetPeer(previous.id);
  previous.pc.close();
}

// Sampling the feeder's inbound video: the first decoded frames make us `relay_ready`; none
// within FIRST_FRAME_MS, no new frame for STALL_MS or too few for SLOW_MS make us report it. Runs while we have a feeder: often until it plays,
// then every SAMPLE_MS.

function startSampling() {
  if (sampleTimer === null) sampleTimer = setInterval(sampleUpstream, FIRST_FRAMES_SAMPLE_MS);
}

function stopSampling() {
  clearInterval(sampleTimer);
  sampleTimer = null;
}

async function sampleUpstream() {
  const upstream = relay.upstream;
  if (!upstream) return stopSampling();
  if (upstream.reported || sampling) return;
  if (upstream.playing && performance.now() - upstream.sampledAt < SAMPLE_MS) return;
  sampling = true;
  let frames;
  try {
    frames = await framesDecoded(upstream.pc);
  } finally {
    sampling = false;
  }
  if (relay.upstream !== upstream || upstream.reported) return;
  const now = performance.now();
  upstream.sampledAt = now;
  if (frames > upstream.frames) {
    upstream.frames = frames;
    upstream.progressAt = now;
    if (!upstream.playing) onFirstFrames(upstream);
  } else if (!upstream.playing && now - upstream.progressAt >= FIRST_FRAME_MS) {
    reportFailed(upstream, `no video frame for ${FIRST_FRAME_MS / 1000} s`);
    return;
  } else if (upstream.playing && now - upstream.progressAt >= STALL_MS) {
    reportFailed(upstream, `no video frame for ${STALL_MS / 1000} s`, "upstream_stalled");
    return;
  }
  if (upstream.playing) noteRate(upstream, frames, now);
}

/**
 * Records the decoded frame rate per RATE_WINDOW_MS and reports a feeder whose picture ran
 * under SLOW_RATIO of the sender's rate (see MIN_REFERENCE_FPS) for all of the last SLOW_MS.
 * Only a viewer's feed is judged: the broadcaster's rate is the sender's by definition.
 */
function noteRate(upstream, frames, now) {
  if (!upstream.rateFrom) {
    upstream.rateFrom = { at: now, frames };
    return;
  }
  const elapsed = now - upstream.rateFrom.at;
  if (elapsed < RATE_WINDOW_MS) return;
  const fps = ((frames - upstream.rateFrom.frames) * 1000) / elapsed;
  upstream.rateFrom = { at: now, frames };
  relay.rates.push({ at: now, fps, feeder: upstream.id });
  while (relay.rates.length && relay.rates[0].at < now - REFERENCE_MS - SLOW_MS) relay.rates.shift();
  if (upstream.depth < 2 || now - upstream.playingSince < SLOW_MS) return;
  const judged = relay.rates.filter((r) => r.at >= now - SLOW_MS);
  const before = relay.rates.filter((r) => r.at < now - SLOW_MS);
  const reference = Math.max(0, ...before.map((r) => r.fps));
  if (reference < MIN_REFERENCE_FPS || judged.some((r) => r.feeder !== upstream.id)) return;
  if (judged.every((r) => r.fps < reference * SLOW_RATIO)) {
    const best = Math.max(...judged.map((r) => r.fps));
    reportFailed(
      upstream,
      `at most ${best.toFixed(1)} frames/s for ${SLOW_MS / 1000} s, under a third of ${reference.toFixed(1)}`,
      "upstream_stalled",
    );
  }
}

function onFirstFrames(upstream) {
  upstream.playing = true;
  upstream.playingSince = performance.now();
  dropPrevious();
  hooks.onTracks(upstream.stream);
  // Eligible to feed others from now on; again after each move (the server resets it). What we
  // can feed goes first, so the server never counts on more.
  reportCapacity();
  if (isConnected() && app.channelId) {
    request("tree", "relay_ready", { channel_id: app.channelId });
  }
  hooks.onPlaying(upstream);
}

async function framesDecoded(pc) {
  let frames = 0;
  try {
    const report = await pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "video") frames += stat.framesDecoded || 0;
    });
  } catch {
    // A closed connection has no stats: no progress.
  }
  return frames;
}

// -----------------------------------------------------------------------------------------------
// Our children
// -----------------------------------------------------------------------------------------------

/** A child offers (recvonly); we answer with the tracks we receive, as the broadcaster does. */
async function onChildOffer(payload) {
  if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
  const childId = payload.sender;
  if (relay.upstream && childId === relay.upstream.id) return;
  // A child offers again after any hiccup; the new offer replaces its old connection.
  closeChild(childId);
  const pc = createPeer(childId, onChildState);
  pc.relayedSince = performance.now();
  relay.children.set(childId, pc);
  watchChild(childId, pc);
  hooks.onChildren(relay.children.size);
  startQualityChecks();
  try {
    if (!(await applyRemoteDescription(childId, pc, payload.sdp))) return;
    // The offer made one transceiver per kind; we only send on them. A kind our feeder has
    // not sent yet starts without a track and gets one by replaceTrack when it arrives. The
    // answer does not depend on the tracks, so it does not wait for them to be set.
    const setting = pc.getTransceivers().map((transceiver) => {
      transceiver.direction = "sendonly";
      if (transceiver.sender.setStreams) transceiver.sender.setStreams(forwardStream);
      return transceiver.sender.replaceTrack(relay.tracks[transceiver.receiver.track.kind] || null);
    });
    await sendDescription("answer", childId, pc, await pc.createAnswer());
    await Promise.all(setting);
  } catch (err) {
    console.error("Could not answer viewer", childId, err);
    if (peers.get(childId) === pc) closeChild(childId);
  }
}

/** Every child switches to `track` without renegotiating; nothing below us is disturbed. */
function forward(track) {
  relay.tracks[track.kind] = track;
  for (const pc of relay.children.values()) {
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.receiver.track.kind !== track.kind || transceiver.stopped) continue;
      transceiver.sender.replaceTrack(track).catch((err) => {
        console.warn("Could not switch a forwarded track", err);
      });
    }
  }
}

function onDownstreamLeft(payload) {
  if (!payload || typeof payload.peer_id !== "string") return;
  if (payload.channel_id && payload.channel_id !== app.channelId) return;
  // Only ever a child: the server says this to feeders.
  if (relay.children.has(payload.peer_id)) closeChild(payload.peer_id);
}

function onChildState(childId, pc) {
  if (pc.connectionState === "failed" || pc.connectionState === "closed") closeChild(childId);
}

function closeChild(childId) {
  if (!relay.children.delete(childId)) return;
  closePeer(childId);
  hooks.onChildren(relay.children.size);
  if (relay.children.size === 0) stopQualityChecks();
}

// Checking our children's outbound video: a stream held back by bandwidth or CPU for most of
// LIMIT_WINDOW_MS means we feed more than this device can; we offer one child fewer.

function startQualityChecks() {
  if (qualityTimer === null) qualityTimer = setInterval(checkQuality, QUALITY_SAMPLE_MS);
}

function stopQualityChecks() {
  clearInterval(qualityTimer);
  qualityTimer = null;
}

async function checkQuality() {
  if (checkingQuality || relay.children.size === 0) return;
  checkingQuality = true;
  let limited = null;
  try {
    const now = performance.now();
    for (const pc of relay.children.values()) {
      if (now - pc.relayedSince < QUALITY_GRACE_MS) continue;
      const reason = await limitation(pc);
      if (reason) limited = reason;
    }
  } finally {
    checkingQuality = false;
  }
  if (limited && relay.children.size > 0) {
    limitCapacity(relay.children.size - 1, `outgoing streams limited by ${limited}`);
    // The children left judge afresh, with one stream fewer to send.
    for (const pc of relay.children.values()) pc.qualitySamples = [];
  }
}

/**
 * "bandwidth" or "cpu" when the connection's outbound video was held back by it for at least
 * LIMITED_SHARE of the last LIMIT_WINDOW_MS (from `qualityLimitationDurations`, seconds spent
 * per reason), else "".
 */
async function limitation(pc) {
  let durations = null;
  try {
    const report = await pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "outbound-rtp" && stat.kind === "video" && stat.qualityLimitationDurations) {
        durations = stat.qualityLimitationDurations;
      }
    });
  } catch {
    return "";
  }
  if (!durations) return "";
  const now = performance.now();
  const samples = pc.qualitySamples || (pc.qualitySamples = []);
  samples.push({ at: now, bandwidth: durations.bandwidth || 0, cpu: durations.cpu || 0 });
  while (samples.length > 1 && samples[1].at <= now - LIMIT_WINDOW_MS) samples.shift();
  const oldest = samples[0];
  const span = now - oldest.at;
  if (span < LIMIT_WINDOW_MS) return "";
  const newest = samples[samples.length - 1];
  for (const reason of ["bandwidth", "cpu"]) {
    if ((newest[reason] - oldest[reason]) * 1000 >= LIMITED_SHARE * span) return reason;
  }
  return "";
}
