// Broadcaster mode: what we send, the camera or a screen. A switch puts the other tracks on the
// senders of every peer connection we feed with `RTCRtpSender.replaceTrack`, which needs no
// renegotiation: viewers keep their connections and see the new picture as soon as its first
// frames arrive. Relaying viewers need nothing either: they forward the track they receive
// (relay.js), and a receiver's track stays the same object whatever we put on our sender.
//
// The screen comes with the tab's or the system's audio when the browser offers it and the
// person keeps it ticked in the picker; otherwise the microphone stays on. Stopping the share
// from the browser's own UI ends the screen track, and we go back to the camera. Stop, an
// expired channel or a takeover end the share too: a screen is never captured while not live.

import { app, peers } from "./state.js";

/**
 * What we ask the browser for. The tab or system audio is offered but never required, and our
 * own tab is left out of the picker: sharing it would show the page inside itself.
 */
const DISPLAY_OPTIONS = {
  video: true,
  audio: true,
  systemAudio: "include",
  selfBrowserSurface: "exclude",
};

const screen = {
  /** getDisplayMedia's stream while we send it. */
  stream: null,
  /** The picker is open (the button waits for it). */
  picking: false,
  /** Sharing is possible now (live); set by renderScreen. */
  allowed: false,
};

/** Set by initScreen. */
const el = { button: null, status: null, preview: null };
let cameraStream = () => null;
let onSwitch = () => {};

/**
 * `window.broadcastApp.source`, read by tests and the console: `kind` ("camera" | "screen"),
 * `switchedAt` (Date.now() when the senders got the current tracks) and `switches`.
 */
const source = { kind: "camera", switchedAt: 0, switches: 0 };

/** Whether this browser can share a screen at all. */
export function canShareScreen() {
  return Boolean(navigator.mediaDevices && typeof navigator.mediaDevices.getDisplayMedia === "function");
}

/**
 * Wires the button. `options`: `button`, `status` (the line saying what happened), `preview`
 * (our own <video>: it shows what we send), `camera()` (the camera and microphone stream, or
 * null), `onSwitch(tracks)` (what we send changed; `tracks` as sentTracks returns them).
 */
export function initScreen(options) {
  el.button = options.button;
  el.status = options.status;
  el.preview = options.preview;
  cameraStream = options.camera;
  onSwitch = options.onSwitch;
  app.source = source;
  el.button.addEventListener("click", () => (screen.stream ? backToCamera() : shareScreen()));
  if (!canShareScreen()) el.button.title = "This browser cannot share a screen.";
}

/** The button follows the page: Share while live, Back to camera whenever a screen is sent. */
export function renderScreen(live) {
  screen.allowed = live;
  const sharing = Boolean(screen.stream);
  el.button.textContent = sharing ? "Back to camera" : "Share screen";
  el.button.disabled = !canShareScreen() || screen.picking || (!sharing && !live);
}

/** The tracks we send now, by kind (null for a kind we do not send). */
export function sentTracks() {
  const camera = cameraStream();
  const cameraVideo = camera ? camera.getVideoTracks()[0] || null : null;
  const cameraAudio = camera ? camera.getAudioTracks()[0] || null : null;
  if (!screen.stream) return { video: cameraVideo, audio: cameraAudio };
  return {
    video: screen.stream.getVideoTracks()[0] || cameraVideo,
    audio: screen.stream.getAudioTracks()[0] || cameraAudio,
  };
}

/** Whether a screen is being sent. */
export function isSharingScreen() {
  return Boolean(screen.stream);
}

async function shareScreen() {
  if (!canShareScreen() || screen.picking || screen.stream || !screen.allowed) return;
  screen.picking = true;
  renderScreen(screen.allowed);
  say("Choose a screen, window or tab to share…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia(DISPLAY_OPTIONS);
  } catch (err) {
    screen.picking = false;
    renderScreen(screen.allowed);
    say(pickerErrorText(err));
    return;
  }
  screen.picking = false;
  const video = stream.getVideoTracks()[0];
  if (!screen.allowed || !video) {
    // The broadcast stopped while the picker was open (or nothing came back).
    for (const track of stream.getTracks()) track.stop();
    renderScreen(screen.allowed);
    say(video ? "The broadcast is not live; the screen is not shared." : "The browser shared no picture.");
    return;
  }
  // Text stays sharp; under load the frame rate gives way rather than the resolution.
  if ("contentHint" in video) video.contentHint = "detail";
  // The browser's own "Stop sharing" ends the track (no `ended` fires for our own stop()).
  video.addEventListener("ended", () => {
    if (screen.stream === stream) backToCamera("Screen sharing ended. You are sending your camera again.");
  });
  screen.stream = stream;
  await send();
  const audio = stream.getAudioTracks().length ? "with its audio" : "with your microphone";
  say(`You are sharing your screen ${audio}.`);
}

/** Sends the camera (and microphone) again; the screen capture ends. */
export async function backToCamera(text = "You are sending your camera again.") {
  if (!screen.stream) return;
  releaseScreen();
  await send();
  say(text);
}

/**
 * Ends a share without touching the senders: the broadcast stopped and its peer connections
 * are closed or about to be.
 */
export function endScreenShare() {
  if (!screen.stream) return;
  releaseScreen();
  showPreview();
  onSwitch(sentTracks());
  say("");
}

function releaseScreen() {
  const stream = screen.stream;
  screen.stream = null;
  for (const track of stream.getTracks()) track.stop();
  renderScreen(screen.allowed);
}

/** Puts the tracks of the moment on every sender we feed viewers with; no renegotiation. */
async function send() {
  const tracks = sentTracks();
  source.kind = screen.stream ? "screen" : "camera";
  source.switchedAt = Date.now();
  source.switches += 1;
  const replacing = [];
  for (const pc of peers.values()) {
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.stopped) continue;
      const track = tracks[transceiver.receiver.track.kind] || null;
      if (transceiver.sender.track === track) continue;
      replacing.push(transceiver.sender.replaceTrack(track).catch((err) => {
        console.warn("Could not switch a sent track", err);
      }));
    }
  }
  showPreview();
  renderScreen(screen.allowed);
  onSwitch(tracks);
  await Promise.all(replacing);
}

/** Our own preview shows what we send: the screen while shared, else the camera. */
function showPreview() {
  const camera = cameraStream();
  const wanted = screen.stream ? new MediaStream(screen.stream.getVideoTracks()) : camera;
  if (el.preview.srcObject !== wanted) {
    el.preview.srcObject = wanted;
    if (wanted) el.preview.play().catch(() => {});
  }
}

function pickerErrorText(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "AbortError") {
    return "Screen sharing was cancelled. You are still sending your camera.";
  }
  if (name === "NotFoundError" || name === "NotReadableError") {
    return "No screen could be captured. You are still sending your camera.";
  }
  return `Could not share the screen: ${(err && err.message) || name || "unknown error"}. You are still sending your camera.`;
}

function say(text) {
  el.status.textContent = text;
}
