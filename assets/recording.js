// Broadcaster mode: a recording of what we send, made in this browser with MediaRecorder (WebM
// with audio) and handed over as a file download on Stop. Nothing goes to the server.
//
// One recording stays one file across switches between camera and screen. A MediaRecorder
// gives up when a track of its stream is added or removed, and a switch swaps the tracks we
// send, so the recorder records a stream of its own whose two tracks never change:
// - video: each frame of whatever video we send, fitted into one frame size (frameSize), goes
//   to a track generator (MediaStreamTrackProcessor → MediaStreamTrackGenerator, where the
//   browser has them), else a canvas draws it (`captureStream`);
// - audio: the destination of a Web Audio graph, whose source is swapped on a switch.
// A switch only changes what feeds them (followTracks). Restarting the recorder instead would
// cut the recording into several files, or into one that players stop at the first cut.

import { app } from "./state.js";

/** The first type this browser records: VP9 or VP8 video with Opus audio, else its WebM. */
const MIME_TYPES = ["video/webm;codecs=vp9,opus", "video/webm;codecs=vp8,opus", "video/webm"];
/** The recorder hands its data over this often (memory grows by chunks, not at the end). */
const CHUNK_MS = 1000;
/** How often the elapsed time is redrawn. */
const TICK_MS = 250;
/** The canvas fallback draws this many frames per second. */
const CANVAS_FPS = 30;

const rec = {
  recorder: null,
  chunks: [],
  /** The video and audio feeds of the recorder's own stream (see above). */
  video: null,
  audio: null,
  startedAt: 0,
  timer: null,
  /** The latest file's blob URL, kept for the download link until the next one. */
  url: null,
};

/**
 * `window.broadcastApp.recording`, read by tests and the console: `state` ("inactive" |
 * "recording" | "saving"), `mimeType`, `startedAt` (Date.now()), `switches` (sources followed
 * during the recording), `bytes` and `fileName` of the latest file.
 */
const status = { state: "inactive", mimeType: "", startedAt: 0, switches: 0, bytes: 0, fileName: "" };

const el = { button: null, indicator: null, time: null, status: null, link: null };
let currentTracks = () => ({ video: null, audio: null });
let channelName = () => "";

/** Whether this browser can record at all. */
export function canRecord() {
  return typeof window.MediaRecorder === "function" && MIME_TYPES.some((t) => MediaRecorder.isTypeSupported(t));
}

/**
 * Wires the controls. `options`: `button`, `indicator` and `time` (shown while recording),
 * `status` (the line saying what happened), `link` (the <a download> of the latest file),
 * `tracks()` (what we send now, by kind), `channel()` (names the file).
 */
export function initRecording(options) {
  Object.assign(el, {
    button: options.button,
    indicator: options.indicator,
    time: options.time,
    status: options.status,
    link: options.link,
  });
  currentTracks = options.tracks;
  channelName = options.channel;
  app.recording = status;
  el.button.addEventListener("click", () => (rec.recorder ? stopRecording() : startRecording()));
  if (!canRecord()) el.button.title = "This browser cannot record WebM video.";
}

/** Recording is possible while we have something to send (the camera is on). */
export function renderRecording(available) {
  const recording = Boolean(rec.recorder);
  el.button.textContent = recording ? "Stop recording" : "Record";
  el.button.disabled = status.state === "saving" || (!recording && (!available || !canRecord()));
  el.indicator.hidden = !recording;
}

/** What we send changed: the recording goes on from the new tracks. */
export function followTracks(tracks) {
  if (!rec.recorder) return;
  rec.video.follow(tracks.video);
  rec.audio.follow(tracks.audio);
  status.switches += 1;
}

function startRecording() {
  if (rec.recorder || !canRecord()) return;
  const mimeType = MIME_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
  const tracks = currentTracks();
  if (!tracks.video) {
    say("Nothing to record yet: start your camera first.");
    return;
  }
  let recorder;
  try {
    rec.video = videoFeed(tracks.video);
    rec.audio = audioFeed();
    rec.video.follow(tracks.video);
    rec.audio.follow(tracks.audio);
    recorder = new MediaRecorder(new MediaStream([rec.video.track, rec.audio.track]), { mimeType });
  } catch (err) {
    console.error("Could not start recording", err);
    releaseFeeds();
    say(`Could not start recording: ${err.message || err.name}`);
    return;
  }
  rec.recorder = recorder;
  rec.chunks = [];
  rec.startedAt = Date.now();
  Object.assign(status, { state: "recording", mimeType, startedAt: rec.startedAt, switches: 0 });
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data && event.data.size > 0) rec.chunks.push(event.data);
  });
  recorder.addEventListener("stop", () => saveRecording(recorder));
  recorder.addEventListener("error", (event) => {
    console.error("Recording failed", event.error);
    say(`Recording failed: ${(event.error && event.error.message) || "unknown error"}. What was recorded is saved.`);
  });
  recorder.start(CHUNK_MS);
  rec.timer = setInterval(showElapsed, TICK_MS);
  showElapsed();
  renderRecording(Boolean(currentTracks().video));
  say("Recording. The file stays on this device; Stop recording downloads it.");
}

/** Stops the recording (if any); the file downloads once the recorder hands its last data over. */
export function stopRecording() {
  const recorder = rec.recorder;
  if (!recorder) return;
  status.state = "saving";
  clearInterval(rec.timer);
  rec.timer = null;
  if (recorder.state !== "inactive") recorder.stop();
  else saveRecording(recorder);
  renderRecording(Boolean(currentTracks().video));
}

function saveRecording(recorder) {
  if (rec.recorder !== recorder) return;
  rec.recorder = null;
  clearInterval(rec.timer);
  rec.timer = null;
  releaseFeeds();
  const blob = new Blob(rec.chunks, { type: "video/webm" });
  rec.chunks = [];
  if (rec.url) URL.revokeObjectURL(rec.url);
  rec.url = URL.createObjectURL(blob);
  const fileName = `broadcast-${channelName() || "local"}-${stamp(new Date(rec.startedAt))}.webm`;
  Object.assign(status, { state: "inactive", bytes: blob.size, fileName });
  el.link.href = rec.url;
  el.link.download = fileName;
  el.link.textContent = `Download the recording again (${fileSize(blob.size)})`;
  el.link.hidden = false;
  renderRecording(Boolean(currentTracks().video));
  el.link.click();
  say(`Recording saved as ${fileName} (${fileSize(blob.size)}).`);
}

function releaseFeeds() {
  if (rec.video) rec.video.stop();
  if (rec.audio) rec.audio.stop();
  rec.video = null;
  rec.audio = null;
}

function showElapsed() {
  const seconds = Math.max(0, Math.floor((Date.now() - rec.startedAt) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  el.time.textContent = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  el.time.dateTime = `PT${seconds}S`;
}

/** `yyyymmdd-hhmmss` in local time. */
function stamp(date) {
  const two = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}${two(date.getMonth() + 1)}${two(date.getDate())}-` +
    `${two(date.getHours())}${two(date.getMinutes())}${two(date.getSeconds())}`;
}

function fileSize(bytes) {
  return bytes < 1_000_000 ? `${Math.max(1, Math.round(bytes / 1000))} kB` : `${(bytes / 1_000_000).toFixed(1)} MB`;
}

function say(text) {
  el.status.textContent = text;
}

// -----------------------------------------------------------------------------------------------
// The recorder's own tracks
// -----------------------------------------------------------------------------------------------

/**
 * The recording's frame: 16:9 (the shape of most screens), as tall as the first source (360 to
 * 1080 lines). Every source is fitted into it, with black bars where its shape differs: a WebM
 * file has one frame size for players, which otherwise stretch every later source to the first
 * one's shape.
 */
function frameSize(track) {
  const settings = track.getSettings ? track.getSettings() : {};
  const height = 2 * Math.round(Math.min(1080, Math.max(360, settings.height || 720)) / 2);
  return { width: 2 * Math.round((height * 16) / 9 / 2), height };
}

/** Draws `image` (`width` x `height`) as large as it fits, centred, on black. */
function drawFitted(context, image, width, height) {
  const { width: frameWidth, height: frameHeight } = context.canvas;
  const scale = Math.min(frameWidth / width, frameHeight / height);
  const w = Math.round(width * scale);
  const h = Math.round(height * scale);
  context.fillStyle = "#000";
  context.fillRect(0, 0, frameWidth, frameHeight);
  context.drawImage(image, Math.round((frameWidth - w) / 2), Math.round((frameHeight - h) / 2), w, h);
}

/** A video track that never changes, fed from whichever track `follow` names. */
function videoFeed(first) {
  const size = frameSize(first);
  const breakoutBox = typeof window.MediaStreamTrackGenerator === "function" &&
    typeof window.MediaStreamTrackProcessor === "function" &&
    typeof window.OffscreenCanvas === "function" && typeof window.VideoFrame === "function";
  return breakoutBox ? generatorFeed(size) : canvasFeed(size);
}

/**
 * Chromium: each frame of the followed track is drawn as it arrives and handed to a track
 * generator. Driven by the frames, not by timers, so it keeps its pace in a background tab
 * (the broadcaster's tab is one while it shares another tab).
 */
function generatorFeed(size) {
  const generator = new MediaStreamTrackGenerator({ kind: "video" });
  const writer = generator.writable.getWriter();
  const canvas = new OffscreenCanvas(size.width, size.height);
  const context = canvas.getContext("2d");
  let reader = null;

  async function pump(own) {
    for (;;) {
      let result;
      try {
        result = await own.read();
      } catch {
        return;
      }
      if (result.done) return;
      const frame = result.value;
      if (reader !== own) {
        frame.close();
        return;
      }
      let drawn;
      try {
        drawFitted(context, frame, frame.displayWidth, frame.displayHeight);
        // Our own clock: frames of different sources have timestamps of their own.
        drawn = new VideoFrame(canvas, { timestamp: Math.round(performance.now() * 1000) });
      } finally {
        frame.close();
      }
      try {
        // The generator takes the frame over (and closes it).
        await writer.write(drawn);
      } catch {
        drawn.close();
        return;
      }
    }
  }

  function follow(track) {
    if (reader) reader.cancel().catch(() => {});
    reader = track ? new MediaStreamTrackProcessor({ track }).readable.getReader() : null;
    if (reader) pump(reader);
  }

  return {
    track: generator,
    follow,
    stop() {
      follow(null);
      writer.close().catch(() => {});
      generator.stop();
    },
  };
}

/** Elsewhere: a canvas draws the followed track on a timer, and records as its own track. */
function canvasFeed(size) {
  const canvas = document.createElement("canvas");
  canvas.width = size.width;
  canvas.height = size.height;
  const context = canvas.getContext("2d");
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  const track = canvas.captureStream(CANVAS_FPS).getVideoTracks()[0];
  const timer = setInterval(() => {
    if (video.readyState >= 2 && video.videoWidth) drawFitted(context, video, video.videoWidth, video.videoHeight);
  }, 1000 / CANVAS_FPS);
  return {
    track,
    follow(source) {
      video.srcObject = source ? new MediaStream([source]) : null;
      if (source) video.play().catch(() => {});
    },
    stop() {
      clearInterval(timer);
      video.srcObject = null;
      track.stop();
    },
  };
}

/** An audio track that never changes (silence while nothing feeds it). */
function audioFeed() {
  const context = new AudioContext();
  const destination = context.createMediaStreamDestination();
  let node = null;
  // Started by the Record click, so the browser lets it run; resume() covers one that did not.
  if (context.state === "suspended") context.resume().catch(() => {});
  return {
    track: destination.stream.getAudioTracks()[0],
    follow(source) {
      if (node) node.disconnect();
      node = source ? context.createMediaStreamSource(new MediaStream([source])) : null;
      if (node) node.connect(destination);
    },
    stop() {
      if (node) node.disconnect();
      node = null;
      context.close().catch(() => {});
    },
  };
}
