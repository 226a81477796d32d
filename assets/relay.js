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
// A feeder that stops delivering frames for STALL_MS, or whose connection fails, is reported
// with `upstream_failed`; the server then gives us another one.
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

/** No new video frame from our feeder for this long: ask the server for another (PROTOCOL.md). */
const STALL_MS = 5000;
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
};

let sampleTimer = null;
/** A getStats() is in flight (a slow one must not pile up behind the timer). */
let sampling = false;

/**
 * Wires the module. `handlers`:
 * - `onPlacing(upstream, moved)`: a feeder was named; `moved` when we had one before
 * - `onTracks(stream)`: the player should show `stream` (a new feeder's tracks)
 * - `onPlaying(upstream)`: frames are decoding from the current feeder
 * - `onInterrupted(upstream)`: its connection is interrupted (it may recover by itself)
 * - `onFailed(upstream, why)`: we reported it with `upstream_failed` and wait for another
 * - `onChildren(count)`: the number of viewers we feed changed
 */
export function initRelay(handlers) {
  Object.assign(hooks, handlers);
  app.relay = relay;
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
  stopSampling();
  dropPrevious();
  if (relay.upstream) closePeer(relay.upstream.id);
  relay.upstream = null;
  for (const childId of [...relay.children.keys()]) closePeer(childId);
  relay.children.clear();
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

/** Asks the server for another feeder (once per feeder); it answers with `upstream`. */
function reportFailed(upstream, why) {
  if (upstream.reported || relay.upstream !== upstream || relay.held) return;
  upstream.reported = true;
  console.warn(`Feeder ${upstream.id} lost: ${why}; asking for another`);
  // A report queued while offline would reach the server for a socket that is not in the
  // channel; after a reconnect the page joins afresh anyway.
  if (isConnected() && app.channelId) {
    request("tree", "upstream_failed", { channel_id: app.channelId });
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

// Sampling the feeder's inbound video: the first decoded frames make us `relay_ready`; no new
// frame for STALL_MS makes us report it. Runs while we have a feeder: often until it plays,
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
  } else if (now - upstream.progressAt >= STALL_MS) {
    reportFailed(upstream, `no video frame for ${STALL_MS / 1000} s`);
  }
}

function onFirstFrames(upstream) {
  upstream.playing = true;
  dropPrevious();
  hooks.onTracks(upstream.stream);
  // Eligible to feed others from now on; again after each move (the server resets it).
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
  relay.children.set(childId, pc);
  watchChild(childId, pc);
  hooks.onChildren(relay.children.size);
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
}
