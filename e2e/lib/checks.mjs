// Assertions about what a person would see: video that really plays, audio that really
// arrives, chat lines, and a layout that fits a phone.

import { sleep } from './harness.mjs';

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** How long decoded frames are watched, and how many new ones must show up meanwhile. */
const WATCH_MS = 2_000;
const MIN_NEW_FRAMES = 5;

/**
 * Counters of what a page has received over all its peer connections, from `getStats()`.
 * `source` names where the page keeps them: `app` is the served page's debug handle
 * `window.broadcastApp.peers`, `legacy` the legacy test page's `window.legacy.pc`.
 * (No `eval`: the served page may well forbid it with a Content-Security-Policy.)
 */
async function receivedStats(page, source) {
  return page.evaluate(async (source) => {
    const pcs = source === 'legacy'
      ? [window.legacy.pc].filter(Boolean)
      : [...window.broadcastApp.peers.values()];
    const total = { peers: pcs.length, framesDecoded: 0, frameWidth: 0, audioPackets: 0, audioBytes: 0 };
    for (const pc of pcs) {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          total.framesDecoded += s.framesDecoded || 0;
          total.frameWidth = Math.max(total.frameWidth, s.frameWidth || 0);
        } else if (s.kind === 'audio') {
          total.audioPackets += s.packetsReceived || 0;
          total.audioBytes += s.bytesReceived || 0;
        }
      });
    }
    return total;
  }, source);
}

/** Counts frames the <video> element actually presents, with requestVideoFrameCallback. */
async function startFrameCounter(page, selector) {
  await page.evaluate((sel) => {
    const video = document.querySelector(sel);
    window.__e2ePresented = 0;
    const tick = () => {
      window.__e2ePresented += 1;
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }, selector);
}

/**
 * The video element at `selector` really plays: it has a picture size, is not paused,
 * carries an audio track, and over two seconds new video frames are decoded and
 * presented while audio packets keep arriving.
 *
 * @param {import('playwright-core').Page} page
 * @param {object} options
 * @param {string} options.role for messages
 * @param {string} [options.selector] the video element
 * @param {'app'|'legacy'} [options.pcs] where the receiving RTCPeerConnections are kept
 * @returns {Promise<{frames: number, width: number, height: number}>}
 */
export async function expectPlaying(page, {
  role,
  selector = '#remote-video',
  pcs = 'app',
  timeout = 20_000,
}) {
  try {
    await page.waitForFunction(
      (sel) => {
        const v = document.querySelector(sel);
        return v && v.videoWidth > 0 && !v.paused && v.readyState >= 2;
      },
      selector,
      { timeout, polling: 100 },
    );
  } catch {
    const seen = await page.evaluate((sel) => {
      const v = document.querySelector(sel);
      return v
        ? { videoWidth: v.videoWidth, paused: v.paused, readyState: v.readyState, hasStream: !!v.srcObject, error: v.error?.message }
        : 'no such element';
    }, selector);
    throw new Error(`${role}: ${selector} is not playing after ${timeout} ms: ${JSON.stringify(seen)}`);
  }

  const tracks = await page.evaluate((sel) => {
    const stream = document.querySelector(sel).srcObject;
    const describe = (t) => ({ kind: t.kind, state: t.readyState });
    return stream && typeof stream.getTracks === 'function' ? stream.getTracks().map(describe) : [];
  }, selector);
  assert(
    tracks.some((t) => t.kind === 'audio' && t.state === 'live'),
    `${role}: the playing stream has no live audio track (tracks: ${JSON.stringify(tracks)})`,
  );

  await startFrameCounter(page, selector);
  const before = await receivedStats(page, pcs);
  await sleep(WATCH_MS);
  const after = await receivedStats(page, pcs);
  const presented = await page.evaluate(() => window.__e2ePresented);
  const size = await page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return { width: v.videoWidth, height: v.videoHeight };
  }, selector);

  const decoded = after.framesDecoded - before.framesDecoded;
  assert(after.peers > 0, `${role}: no peer connection to take stats from`);
  assert(
    decoded >= MIN_NEW_FRAMES,
    `${role}: only ${decoded} video frames decoded in ${WATCH_MS} ms (before ${before.framesDecoded}, after ${after.framesDecoded})`,
  );
  assert(
    presented >= MIN_NEW_FRAMES,
    `${role}: the video element presented only ${presented} frames in ${WATCH_MS} ms`,
  );
  assert(
    after.audioPackets > before.audioPackets && after.audioBytes > 0,
    `${role}: no audio received in ${WATCH_MS} ms (packets ${before.audioPackets} → ${after.audioPackets})`,
  );
  return { frames: decoded, presented, ...size };
}

/** The ICE servers every peer connection of the page was created with. */
export function iceServersOf(page) {
  return page.evaluate(() =>
    [...window.broadcastApp.peers.values()].map((pc) => pc.getConfiguration().iceServers),
  );
}

/**
 * For each peer connection of the served page: its remote id, its ICE configuration (transport
 * policy and servers) and the selected candidate pair's local and remote candidate types
 * (`host`, `srflx`, `prflx`, `relay`; null while none is selected), from `getStats()`.
 */
export function selectedCandidates(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const [remoteId, pc] of window.broadcastApp.peers) {
      const report = await pc.getStats();
      const stats = new Map();
      report.forEach((s) => stats.set(s.id, s));
      const transport = [...stats.values()].find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport && stats.get(transport.selectedCandidatePairId);
      const { iceTransportPolicy, iceServers } = pc.getConfiguration();
      out.push({
        remoteId,
        state: pc.connectionState,
        iceTransportPolicy,
        iceServers,
        local: pair ? stats.get(pair.localCandidateId)?.candidateType ?? null : null,
        remote: pair ? stats.get(pair.remoteCandidateId)?.candidateType ?? null : null,
        relayProtocol: pair ? stats.get(pair.localCandidateId)?.relayProtocol ?? null : null,
      });
    }
    return out;
  });
}

/** The chat lines of a page as `{sender, text}`, in order. */
export function chatLines(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#chat-log .chat-msg')].map((m) => ({
      sender: m.querySelector('.chat-sender')?.textContent.trim(),
      text: m.querySelector('.chat-text')?.textContent,
    })),
  );
}

/** Waits until a page's chat log holds a line with this sender and exact text. */
export async function waitForChatLine(page, { role, sender, text, timeout = 5_000 }) {
  try {
    await page.waitForFunction(
      ({ sender, text }) =>
        [...document.querySelectorAll('#chat-log .chat-msg')].some(
          (m) =>
            m.querySelector('.chat-text')?.textContent === text &&
            (sender === null || m.querySelector('.chat-sender')?.textContent.trim().includes(sender)),
        ),
      { sender, text },
      { timeout, polling: 50 },
    );
  } catch {
    const lines = await chatLines(page).catch(() => []);
    throw new Error(
      `${role}: chat line ${JSON.stringify({ sender, text })} did not appear within ${timeout} ms; ` +
        `chat log: ${JSON.stringify(lines)}`,
    );
  }
}

/**
 * Elements that stick out of the viewport sideways, as descriptions. An element clipped by
 * a scrolling or hidden-overflow ancestor does not count: that ancestor is what is seen.
 */
export function overflowingElements(page) {
  return page.evaluate(() => {
    // The phone's own width, not the layout width a too-wide page may have forced.
    const width = Math.min(document.documentElement.clientWidth, window.visualViewport?.width ?? Infinity, screen.width);
    const found = [];
    if (document.documentElement.scrollWidth > width) {
      found.push(`document is ${document.documentElement.scrollWidth}px wide in a ${width}px viewport`);
    }
    const describe = (el) =>
      el.tagName.toLowerCase() + (el.id ? `#${el.id}` : '') +
      [...el.classList].map((c) => `.${c}`).join('');
    const clippedByAncestor = (el) => {
      for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== 'visible') return true;
      }
      return false;
    };
    for (const el of document.body.querySelectorAll('*')) {
      if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if ((r.left < -1 || r.right > width + 1) && !clippedByAncestor(el)) {
        found.push(`${describe(el)} spans x ${Math.round(r.left)}..${Math.round(r.right)} in a ${width}px viewport`);
      }
    }
    return found;
  });
}

/** The on-screen box of an element, and whether it is visible at all. */
export function boxOf(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {
      visible: el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true }),
      left: r.left,
      right: r.right,
      top: r.top,
      width: r.width,
      height: r.height,
      viewportWidth: document.documentElement.clientWidth,
    };
  }, selector);
}

/**
 * How many outbound video streams of the served page are really sending: over `ms`, the
 * stream encoded new frames and sent new bytes (`getStats()` of every peer connection in
 * `window.broadcastApp.peers`).
 */
export async function sendingVideoStreams(page, ms = 1_000) {
  const sample = () => page.evaluate(async () => {
    const streams = {};
    let n = 0;
    for (const pc of window.broadcastApp.peers.values()) {
      n += 1;
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          streams[`${n}/${s.id}`] = { frames: s.framesEncoded || 0, bytes: s.bytesSent || 0 };
        }
      });
    }
    return streams;
  });
  const before = await sample();
  await sleep(ms);
  const after = await sample();
  return Object.entries(after).filter(([key, now]) => {
    const then = before[key];
    return then && now.frames > then.frames && now.bytes > then.bytes;
  }).length;
}

/**
 * Starts sampling, every `everyMs` in the page, the video frames decoded from the page's
 * feeder in the relay tree (`window.broadcastApp.relay.upstream`): `[time, connection, frames]`
 * where `connection` numbers each distinct RTCPeerConnection object in order of appearance
 * (0: no feeder). `decodeSamples` reads them.
 */
export function startDecodeMonitor(page, everyMs = 100) {
  return page.evaluate((everyMs) => {
    const monitor = { samples: [], connections: [], busy: false };
    window.__e2eDecode = monitor;
    monitor.timer = setInterval(async () => {
      const upstream = window.broadcastApp.relay?.upstream;
      if (!upstream) {
        monitor.samples.push([Date.now(), 0, 0]);
        return;
      }
      if (monitor.busy) return;
      if (!monitor.connections.includes(upstream.pc)) monitor.connections.push(upstream.pc);
      const connection = monitor.connections.indexOf(upstream.pc) + 1;
      monitor.busy = true;
      let frames = 0;
      try {
        const report = await upstream.pc.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
      } catch {
        // A closed connection has no stats: no progress.
      } finally {
        monitor.busy = false;
      }
      monitor.samples.push([Date.now(), connection, frames]);
    }, everyMs);
  }, everyMs);
}

/** Stops a page's decode monitor and returns its samples `[time, connection, frames]`. */
export function decodeSamples(page) {
  return page.evaluate(() => {
    const monitor = window.__e2eDecode;
    clearInterval(monitor.timer);
    return monitor.samples;
  });
}

/**
 * The times at which new frames were decoded: a sample with more frames than the previous
 * one on the same connection, or the first frames of a connection not sampled before.
 */
export function decodeProgress(samples) {
  const times = [];
  let previous = null;
  for (const [time, connection, frames] of samples) {
    const grew = previous && previous[1] === connection ? frames > previous[2] : frames > 0;
    if (connection !== 0 && grew) times.push(time);
    previous = [time, connection, frames];
  }
  return times;
}
