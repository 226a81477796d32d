// The scenarios: what people do with the served page, each in its own server and browser.
// Nothing is mocked: real Chromium, real fake-device capture, real peer connections
// over loopback, the real release server.

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import {
  assert,
  boxOf,
  chatLines,
  decodeProgress,
  decodeSamples,
  expectPlaying,
  iceServersOf,
  overflowingElements,
  selectedCandidates,
  sendingVideoStreams,
  startDecodeMonitor,
  waitForChatLine,
} from './lib/checks.mjs';
import { sleep } from './lib/harness.mjs';
import { deleteKeysUnder, keysLeftUnder, keysUnder, REDIS_URL } from './lib/redis.mjs';
import { makeSelfSignedCert } from './lib/server.mjs';
import { startHtmlServer, startLegacyPageServer } from './lib/static-server.mjs';
import { coturnCredential, startTurnServer } from './lib/turn.mjs';

/** A channel id no other scenario uses: `[A-Za-z0-9_-]`, at most 20 characters. */
const channelId = (tag) => `e2e-${tag}-${randomBytes(4).toString('hex')}`;

/** The time limit for "every viewer shows it", from the issue. */
const NOTICE_MS = 2_000;

/** Scenario 5's resume grace (`--resume-grace-secs`, 30 s by default): kept short to wait it out. */
const LEAVE_GRACE_SECS = 3;

async function serverAndBrowser(s, { tls, browserArgs } = {}) {
  await s.startServer({ tls });
  await s.launchBrowser(browserArgs);
}

/**
 * A broadcaster opens its link with a channel id, presses Start and goes live.
 * @param {object} [options]
 * @param {import('playwright-core').BrowserContextOptions} [options.contextOptions]
 * @param {object} [options.camera] its fake camera's size and rate (see Scenario.participant)
 * @param {object} [options.screen] its fake screen's size and rate (see Scenario.participant)
 * @param {boolean} [options.relay] the "Let viewers relay" switch (on by default)
 * @param {string} [options.role]
 * @param {(p: import('./lib/harness.mjs').Participant) => Promise<void>} [options.setup] runs
 *   before the page opens (e.g. an init script)
 * @param {string} [options.password] typed into the password field: a private channel
 * @returns {Promise<{broadcaster: import('./lib/harness.mjs').Participant, link: string}>}
 */
async function goLive(s, channel, { contextOptions, camera, screen, relay = true, role = 'broadcaster', setup, password } = {}) {
  const broadcaster = await s.participant(role, contextOptions, { camera, screen });
  if (setup) await setup(broadcaster);
  await broadcaster.goto(`${s.server.url}?broadcaster=true&channel=${channel}`);
  await broadcaster.waitForState('idle');
  const prefilled = await broadcaster.page.inputValue('#channel-id-input');
  assert(prefilled === channel, `${role}: #channel-id-input holds "${prefilled}", not the channel from the URL "${channel}"`);
  const switchedOn = await broadcaster.page.isChecked('#relay-switch');
  assert(switchedOn, `${role}: "Let viewers relay" is not on by default`);
  if (!relay) await broadcaster.page.uncheck('#relay-switch');
  if (password) await broadcaster.page.fill('#channel-password-input', password);

  await broadcaster.page.click('#start-btn');
  await broadcaster.waitForState('live', 20_000);
  await broadcaster.page.waitForFunction(() => document.querySelector('#local-video')?.videoWidth > 0, null, {
    timeout: 10_000,
  }).catch(() => {
    throw new Error('broadcaster: the local camera preview #local-video shows no picture');
  });

  // The viewer link appears once the server confirmed the channel.
  await broadcaster.page.waitForFunction(() => document.querySelector('#viewer-link')?.value, null, { timeout: 5_000 });
  const link = await broadcaster.page.inputValue('#viewer-link');
  const parsed = new URL(link);
  assert(
    parsed.origin === s.server.origin &&
      parsed.searchParams.get('viewer') === 'true' &&
      parsed.searchParams.get('channel') === channel,
    `broadcaster: #viewer-link is "${link}", expected ${s.server.url}?viewer=true&channel=${channel}`,
  );
  return { broadcaster, link };
}

/** A viewer opens the viewer link and its video plays. `setup` runs before the page opens. */
async function watch(s, role, link, contextOptions, setup) {
  const viewer = await s.participant(role, contextOptions);
  if (setup) await setup(viewer);
  await viewer.goto(link);
  await viewer.waitForState('live', 25_000);
  return viewer;
}

async function expectViewerCount(broadcaster, count) {
  try {
    await broadcaster.page.waitForFunction(
      (n) => document.querySelector('#viewer-count')?.textContent.trim() === String(n),
      count,
      { timeout: 5_000 },
    );
  } catch {
    const shown = await broadcaster.page.textContent('#viewer-count').catch(() => '(missing)');
    throw new Error(`broadcaster: #viewer-count shows "${shown}", expected ${count}`);
  }
}

/** The broadcaster holds one peer connection per viewer, no stale ones. */
async function expectPeerCount(broadcaster, count) {
  const outgoing = await broadcaster.page.evaluate(() => window.broadcastApp.peers.size);
  assert(outgoing === count, `broadcaster: ${outgoing} peer connections, expected ${count} (one per viewer)`);
}

/** All viewers reach `state` within NOTICE_MS of `since`; returns how long each took. */
async function allNotice(viewers, state, since) {
  const took = await Promise.all(
    viewers.map(async (v) => {
      await v.waitForState(state, NOTICE_MS + 1_000);
      return { role: v.role, ms: Date.now() - since };
    }),
  );
  for (const { role, ms } of took) {
    assert(ms <= NOTICE_MS, `${role}: showed "${state}" only after ${ms} ms (limit ${NOTICE_MS} ms)`);
  }
  return took.map(({ role, ms }) => `${role} ${ms} ms`).join(', ');
}

/**
 * A small fake camera, and small windows, for scenarios with many pages: every page decodes,
 * relays re-encode, and two CPU cores must keep up.
 */
const SMALL_CAMERA = { width: 320, height: 240, frameRate: 10 };
const SMALL_WINDOW = { viewport: { width: 640, height: 480 } };

/**
 * The relay scenario's tree: the broadcaster feeds one viewer, each relay two. The wait limit
 * only has to outlast a level of the tree getting ready, so nobody lands on the broadcaster.
 */
const RELAY_TREE_ARGS = ['--relay-direct=1', '--relay-fanout=2', '--relay-wait-ms=10000'];

/** The time limits of the relay scenario, from the issue (loopback). */
const REPARENT_PLAY_MS = 2_000;
const GRANDCHILD_GAP_MS = 1_000;

/**
 * A phone, as Chromium's device emulation makes one: a mobile user agent, `isMobile` (the mobile
 * viewport and meta-viewport handling) and touch. The page must not offer to relay on it.
 */
const PHONE = {
  viewport: { width: 393, height: 727 },
  deviceScaleFactor: 2.75,
  isMobile: true,
  hasTouch: true,
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36',
};

/** Counts, on a viewer's page, the most children it ever fed (`window.__e2eMostChildren`). */
function watchChildren(page) {
  return page.evaluate(() => {
    window.__e2eMostChildren = window.broadcastApp.relay.children.size;
    setInterval(() => {
      window.__e2eMostChildren = Math.max(window.__e2eMostChildren, window.broadcastApp.relay.children.size);
    }, 50);
  });
}

/**
 * Each viewer's place in the relay tree as its own page knows it (`broadcastApp.relay`), with
 * its depth found by walking the feeders up to the broadcaster (null: it does not get there).
 */
async function relayTreeOf(broadcaster, viewers) {
  const root = await broadcaster.page.evaluate(() => window.broadcastApp.myId);
  const nodes = await Promise.all(
    viewers.map(async (participant) => ({
      role: participant.role,
      participant,
      ...(await participant.page.evaluate(() => {
        const { myId, relay } = window.broadcastApp;
        return {
          id: myId,
          feeder: relay.upstream?.id ?? null,
          children: [...relay.children.keys()],
        };
      })),
    })),
  );
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const node of nodes) {
    let at = node;
    let depth = 1;
    while (at && at.feeder !== root && depth <= nodes.length) {
      at = byId.get(at.feeder);
      depth += 1;
    }
    node.depth = at && at.feeder === root ? depth : null;
  }
  const name = (id) => (id === root ? 'broadcaster' : byId.get(id)?.role ?? `unknown ${id}`);
  const shape = nodes
    .map((n) => `${n.role}@${n.depth ?? '?'}<-${n.feeder ? name(n.feeder) : 'nobody'}`)
    .join(', ');
  return { root, nodes, byId, shape };
}

/** Every viewer reaches the broadcaster, and each feeder counts it among its children. */
function expectConnectedTree(tree) {
  for (const node of tree.nodes) {
    assert(node.depth !== null, `${node.role} does not reach the broadcaster through its feeders: ${tree.shape}`);
    if (node.feeder !== tree.root) {
      const feeder = tree.byId.get(node.feeder);
      assert(
        feeder.children.includes(node.id),
        `${node.role} is fed by ${feeder.role}, which does not count it among its children: ${tree.shape}`,
      );
    }
  }
}

/** The broadcaster's figures of the relay tree and its display of them. */
async function expectTreeFigures(broadcaster, { direct, relayed }) {
  try {
    await broadcaster.page.waitForFunction(
      (want) => {
        const tree = window.broadcastApp.tree;
        return tree && tree.direct === want.direct && tree.relayed === want.relayed;
      },
      { direct, relayed },
      { timeout: 5_000 },
    );
  } catch {
    const seen = await broadcaster.page.evaluate(() => window.broadcastApp.tree);
    throw new Error(`broadcaster: relay tree figures ${JSON.stringify(seen)}, expected ${direct} direct and ${relayed} relayed`);
  }
  const shown = await broadcaster.page.textContent('#viewer-breakdown');
  assert(
    (await broadcaster.page.isVisible('#viewer-breakdown')) && shown.includes(`${relayed} relayed`),
    `broadcaster: #viewer-breakdown shows "${shown}", expected the ${relayed} relayed viewers`,
  );
  return shown.trim();
}

/** A legacy page (socket.io client 4.5.4, another origin) watches `channel` and connects. */
async function openLegacyViewer(s, channel, role = 'legacy-viewer') {
  const pages = await startLegacyPageServer();
  s.onCleanup(pages.close);
  s.allowedOrigins.add(pages.origin);
  const legacy = await s.participant(role);
  await legacy.goto(`${pages.origin}/?server=${encodeURIComponent(s.server.origin)}&channel=${channel}`);
  await legacy.page.waitForFunction(() => window.legacy?.pc?.connectionState === 'connected', null, {
    timeout: 25_000,
  }).catch(async () => {
    const seen = await legacy.page.evaluate(() => ({
      state: document.querySelector('#state').textContent,
      events: window.legacy.events,
      errors: window.legacy.errors,
      pc: window.legacy.pc?.connectionState,
    }));
    throw new Error(`${role}: no peer connection: ${JSON.stringify(seen)}`);
  });
  return legacy;
}

/** Milliseconds from `since` to the first frames decoded on a connection other than `old`. */
function playAgainAfter(samples, since, old) {
  const first = samples.find(([time, connection, frames]) => time >= since && connection !== 0 && connection !== old && frames > 0);
  return first ? first[0] - since : null;
}

/**
 * Waits until a page's decode monitor (startDecodeMonitor) has sampled decoded frames, at or after
 * `since`, on a connection other than the one it sampled last before `before`. The page's own
 * status may say "live" a moment earlier (it reads the same statistics on its own timer).
 */
async function untilDecodingAfresh(participant, { since, before, timeout }) {
  await participant.page.waitForFunction(
    ({ since, before }) => {
      const samples = window.__e2eDecode.samples;
      const earlier = samples.filter(([time]) => time < before);
      const old = earlier.length ? earlier[earlier.length - 1][1] : 0;
      return samples.some(([time, connection, frames]) => time >= since && connection !== 0 && connection !== old && frames > 0);
    },
    { since, before },
    { timeout, polling: 100 },
  ).catch(async () => {
    const state = await participant.status().catch(() => ({}));
    throw new Error(
      `${participant.role}: decoded no frame on a new connection within ${timeout} ms (status "${state.state}": "${state.text}")`,
    );
  });
}

/**
 * Waits until a viewer is fed by `feederId` and its status says it plays; returns how long that
 * took. A viewer still live from its previous feeder does not count.
 */
async function untilFedBy(participant, feederId, timeout) {
  const started = Date.now();
  await participant.page.waitForFunction(
    (id) => window.broadcastApp.relay?.upstream?.id === id &&
      window.broadcastApp.relay.upstream.playing &&
      document.querySelector('#status')?.dataset.state === 'live',
    feederId,
    { timeout, polling: 100 },
  ).catch(async () => {
    const seen = await participant.page.evaluate(() => ({
      feeder: window.broadcastApp.relay?.upstream?.id ?? null,
      playing: window.broadcastApp.relay?.upstream?.playing ?? null,
      state: document.querySelector('#status')?.dataset.state,
    })).catch(() => ({}));
    throw new Error(`${participant.role}: not playing from ${feederId} within ${timeout} ms: ${JSON.stringify(seen)}`);
  });
  return Date.now() - started;
}

/** The connection a page was sampling last before `since`. */
function connectionBefore(samples, since) {
  const before = samples.filter(([time]) => time < since);
  return before.length ? before[before.length - 1][1] : 0;
}

/**
 * The longest time without a newly decoded frame, from the last one before `since` to the end
 * of the samples (a stall still going on at the end counts up to the last sample).
 */
function longestDecodeGap(samples, since) {
  const progress = decodeProgress(samples);
  const start = progress.filter((t) => t <= since).pop() ?? since;
  const times = [start, ...progress.filter((t) => t > since), samples[samples.length - 1][0]];
  let longest = 0;
  for (let i = 1; i < times.length; i++) longest = Math.max(longest, times[i] - times[i - 1]);
  return longest;
}

/**
 * A broadcast without the tree: two viewers each play straight from the broadcaster, which
 * sends two streams, and say so in their status line. `relay`: the broadcaster's switch;
 * `tag` prefixes the participants' names.
 */
async function expectEveryoneDirect(s, tag, { relay, channel }) {
  const { broadcaster, link } = await goLive(s, channel, {
    contextOptions: SMALL_WINDOW,
    camera: SMALL_CAMERA,
    relay,
    role: `${tag}-broadcaster`,
  });
  const page = broadcaster.page;
  assert(await page.isDisabled('#relay-switch'), `${broadcaster.role}: the relay switch can still be changed while live`);
  const hint = (await page.textContent('#relay-hint')).trim();
  const viewers = [];
  for (const i of [1, 2]) viewers.push(await watch(s, `${tag}-viewer-${i}`, link, SMALL_WINDOW));
  await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
  const root = await page.evaluate(() => window.broadcastApp.myId);
  for (const v of viewers) {
    const feeder = await v.page.evaluate(() => window.broadcastApp.relay.upstream?.id);
    assert(feeder === root, `${v.role}: fed by ${feeder}, not by the broadcaster ${root}`);
    const { text } = await v.status();
    assert(/direct from the broadcaster/.test(text), `${v.role}: status "${text}" does not say it watches directly`);
  }
  const sending = await sendingVideoStreams(page);
  assert(sending === 2, `${broadcaster.role}: ${sending} outbound video streams sending, expected one per viewer (2)`);
  await expectViewerCount(broadcaster, 2);
  const breakdown = (await page.textContent('#viewer-breakdown')).trim();
  for (const p of [broadcaster, ...viewers]) await p.screenshot('end');
  for (const p of [broadcaster, ...viewers]) await p.page.close();
  return { hint, breakdown };
}

/**
 * How long keys under a stopped cluster's prefix may take to go: keys with a time to live
 * (a node's heartbeat lives about twice `--heartbeat-ms`, 2 s by default) expire on their own.
 */
const REDIS_LEFTOVER_GRACE_MS = 5_000;

/** The cluster scenario's resume grace (`--resume-grace-secs`), short so that it ends in the scenario. */
const CLUSTER_GRACE_SECS = 1;

/** A cluster node is ready once its /healthz says so. */
const clusterReady = (health) => health.status === 'ok' && health.mode === 'cluster';

/** A node's `/healthz` body (null if it does not answer). */
async function healthOf(node) {
  try {
    const response = await fetch(`${node.origin}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** Waits (up to `ms`) until a node counts no socket, e.g. after every page on it closed. */
async function untilNoSockets(node, ms = 3_000) {
  const deadline = Date.now() + ms;
  let health = await healthOf(node);
  while (health && typeof health.sockets === 'number' && health.sockets > 0 && Date.now() < deadline) {
    await sleep(100);
    health = await healthOf(node);
  }
  return health;
}

/** The same link, on another node of the cluster. */
function onNode(link, node) {
  const url = new URL(link);
  url.host = new URL(node.origin).host;
  return url.href;
}

/**
 * The TURN scenario's credential lifetime: the shortest the server allows, so that the pages'
 * refresh (at 80 % of it, 48 s) comes within the scenario.
 */
const TURN_TTL_SECS = 60;
/** How far a username's expiry may be from the page's fetch time + TTL (clock steps, rounding). */
const TURN_EXPIRY_SLACK_SECS = 5;

/**
 * Runs in the page before its own scripts: every RTCPeerConnection may use relay candidates
 * only (`iceTransportPolicy: "relay"`), whatever the page asks for. A test hook like
 * askForCamera, so the page itself has no such switch.
 */
function relayOnly() {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class RelayOnlyPeerConnection extends Native {
    constructor(configuration = {}, ...rest) {
      super({ ...configuration, iceTransportPolicy: 'relay' }, ...rest);
    }
  };
}

/** A page's ICE bookkeeping (`broadcastApp.ice`: source, ttl, fetches, times). */
const iceStateOf = (page) => page.evaluate(() => ({ ...window.broadcastApp.ice }));

/**
 * Every peer connection of a page is relay-only, was created with the TURN server and a
 * credential that is coturn's HMAC of its username, and its selected candidate pair is relay
 * on both ends. Returns, per connection, its remote id and TURN username.
 */
async function expectRelayed(participant, turn, count) {
  const { role, page } = participant;
  let pcs = [];
  const deadline = Date.now() + 10_000;
  for (;;) {
    pcs = await selectedCandidates(page);
    if (pcs.length === count && pcs.every((pc) => pc.local && pc.remote)) break;
    if (Date.now() > deadline) break;
    await sleep(200);
  }
  const shape = pcs.map(({ state, iceTransportPolicy, local, remote, iceServers }) => ({
    state, iceTransportPolicy, local, remote, urls: iceServers.map((server) => server.urls),
  }));
  assert(pcs.length === count, `${role}: ${pcs.length} peer connections, expected ${count}: ${JSON.stringify(shape)}`);
  const ice = await iceStateOf(page);
  assert(ice.source === 'server' && ice.fetches >= 1, `${role}: its ICE servers are not from /ice-servers: ${JSON.stringify(ice)}`);
  return pcs.map((pc, i) => {
    assert(pc.iceTransportPolicy === 'relay', `${role}: a peer connection is not relay-only: ${JSON.stringify(shape[i])}`);
    const server = pc.iceServers.find((entry) => [].concat(entry.urls).includes(turn.url));
    assert(server, `${role}: a peer connection was created without the TURN server ${turn.url}: ${JSON.stringify(shape[i])}`);
    assert(
      server.credential === coturnCredential(turn.secret, server.username),
      `${role}: the TURN credential is not base64(HMAC-SHA1(secret, username)) for username ${server.username}`,
    );
    assert(
      pc.local === 'relay' && pc.remote === 'relay',
      `${role}: the selected candidate pair is ${pc.local}/${pc.remote}, not relay/relay: ${JSON.stringify(shape[i])}`,
    );
    return { remoteId: pc.remoteId, username: server.username, protocol: pc.relayProtocol };
  });
}

/** The expiry (unix seconds) a TURN username carries. */
const expiryOf = (username) => Number(username.split(':')[0]);

/**
 * The resume scenario: how long the broadcaster's network is off, and the limit for its viewers
 * to play again once it is back (the server holds the channel 30 s by default; the page retries
 * its connection at least every 2 s).
 */
const OFFLINE_MS = 5_000;
const RESUME_PLAY_MS = 10_000;

/** Runs in the page before its own scripts: counts its camera requests (`__e2eCameraRequests`). */
function countCameraRequests() {
  const devices = navigator.mediaDevices;
  if (!devices || typeof devices.getUserMedia !== 'function') return;
  const getUserMedia = devices.getUserMedia.bind(devices);
  window.__e2eCameraRequests = 0;
  devices.getUserMedia = (constraints) => {
    window.__e2eCameraRequests += 1;
    return getUserMedia(constraints);
  };
}

/**
 * From now on, notes every change of the page's `#status` in `window.__e2eStates` as
 * `[time, state, text, player shown]`; `statusHistory` reads them.
 */
function recordStatus(page) {
  return page.evaluate(() => {
    const status = document.querySelector('#status');
    const seen = [];
    window.__e2eStates = seen;
    const note = () => {
      const view = document.querySelector('#viewer-view');
      seen.push([Date.now(), status.dataset.state, status.textContent.trim(), Boolean(view && !view.hidden)]);
    };
    note();
    new MutationObserver(note).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

const statusHistory = (page) => page.evaluate(() => window.__e2eStates);

/** What a broadcaster page holds: its public id, the resume token of this tab, camera requests. */
function broadcasterSession(page) {
  return page.evaluate(() => {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem('broadcast.resume'));
    } catch {
      saved = null;
    }
    return {
      id: window.broadcastApp.myId,
      token: saved?.token ?? null,
      channelId: saved?.channelId ?? null,
      cameraRequests: window.__e2eCameraRequests,
    };
  });
}

/** Notes every URL a participant's page requests or opens a WebSocket to, into `requested`. */
function noteRequests(p, requested) {
  p.context.on('request', (request) => requested.push(`${p.role} ${request.url()}`));
  p.page.on('websocket', (ws) => requested.push(`${p.role} ${ws.url()}`));
}

/**
 * A secret is in no page's address, not on any screen (text or a visible field's value), in no
 * requested URL and not in the server's log.
 */
async function expectSecretHidden(s, what, value, participants, requested) {
  const encoded = encodeURIComponent(value);
  for (const p of participants) {
    if (p.page.isClosed()) continue;
    const url = p.page.url();
    assert(!url.includes(value) && !url.includes(encoded), `${p.role}: ${what} is in the page's address ${url}`);
    const shown = await p.page.evaluate(() => [
      document.documentElement.innerText,
      ...[...document.querySelectorAll('input:not([type="password"])')].map((input) => input.value),
    ].join('\n'));
    assert(!shown.includes(value), `${p.role}: ${what} is on the screen`);
  }
  const inUrl = requested.find((line) => line.includes(value) || line.includes(encoded));
  assert(!inUrl, `${what} is in a requested URL: ${inUrl}`);
  const serverLog = readFileSync(path.join(s.dir, 'server.log'), 'utf8');
  assert(!serverLog.includes(value), `${what} is in the server's log`);
}

/**
 * Waits (up to `ms`) until the scenario has collected new CSP violation reports and console
 * messages since `since` (their counts then); returns the new ones.
 */
async function newCspViolations(s, since, ms = 3_000) {
  const deadline = Date.now() + ms;
  const arrived = () => s.cspViolations.length > since.reports && s.cspConsole.length > since.console;
  while (!arrived() && Date.now() < deadline) await sleep(50);
  return { reports: s.cspViolations.slice(since.reports), console: s.cspConsole.slice(since.console) };
}

/**
 * The fake camera and screen of scenarios 18 and 19, small for two cores and of different
 * shapes: the camera 16:9, the screen 4:3 (Chromium's fake screen is 1280x720, 16:9, unless
 * capped; capped, it scales its 4:3 source down). A viewer tells them apart by the shape of
 * the frames it presents, whatever size the encoders pick under load.
 */
const WIDE_CAMERA = { width: 320, height: 180, frameRate: 10 };
const SMALL_SCREEN = { width: 480, height: 360, frameRate: 10 };
/** Frames wider than this are the camera's (16:9 = 1.78); the screen's are 4:3 (1.33). */
const WIDE_ASPECT = 1.55;
/** The time limit for a switch between camera and screen to show on every viewer, from the issue. */
const SWITCH_MS = 1_000;

/**
 * From now on the page notes each change of shape of the frames its player presents (the
 * video element's own frame callbacks): `[Date.now(), width, height, wide]`.
 */
async function startShapeMonitor(participant, selector = '#remote-video') {
  await participant.page.evaluate(({ selector, wideAspect }) => {
    const video = document.querySelector(selector);
    const shapes = [];
    window.__e2eShapes = shapes;
    const tick = (_now, frame) => {
      if (window.__e2eShapes !== shapes) return;
      const wide = frame.width / frame.height > wideAspect;
      if (!shapes.length || shapes[shapes.length - 1][3] !== wide) shapes.push([Date.now(), frame.width, frame.height, wide]);
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }, { selector, wideAspect: WIDE_ASPECT });
  await participant.page.waitForFunction(() => window.__e2eShapes.length > 0, null, { timeout: 5_000, polling: 50 })
    .catch(() => {
      throw new Error(`${participant.role}: its player presented no frame within 5 s`);
    });
}

/**
 * For each viewer, how long after `since` (the broadcaster's Date.now() when its senders got
 * the new tracks) its player first presented a frame of the wanted shape. Waits well past the
 * limit so that a slow viewer's time is printed rather than a timeout; the caller judges.
 */
async function untilShape(viewers, { wide, since }) {
  const what = wide ? 'the camera (16:9)' : 'the screen (4:3)';
  const waitMs = SWITCH_MS + 9_000;
  return Promise.all(viewers.map(async (v) => {
    const found = await v.page.waitForFunction(
      ({ wide, since }) => window.__e2eShapes.find(([time, , , isWide]) => time >= since && isWide === wide),
      { wide, since },
      { timeout: waitMs, polling: 50 },
    ).catch(async () => {
      const shapes = await v.page.evaluate(() => window.__e2eShapes).catch(() => null);
      throw new Error(`${v.role}: presented no frame of ${what} within ${waitMs} ms of the switch; shapes since its monitor started: ${JSON.stringify(shapes)}`);
    });
    const [time, width, height] = await found.jsonValue();
    return { role: v.role, ms: time - since, size: `${width}x${height}` };
  }));
}

/** Every viewer saw the switch within SWITCH_MS; the times as `role ms (size)`. */
function expectSwitchSeen(times, what) {
  for (const { role, ms } of times) {
    assert(ms <= SWITCH_MS, `${role}: showed ${what} only ${ms} ms after the switch (limit ${SWITCH_MS} ms)`);
  }
  return times.map(({ role, ms, size }) => `${role} ${ms} ms (${size})`).join(', ');
}

/**
 * Runs `action` on the broadcaster and waits until its page sends `kind` ("camera" or
 * "screen"); resolves with the page's Date.now() when its senders got the new tracks.
 */
async function switchSource(broadcaster, kind, action) {
  const before = await broadcaster.page.evaluate(() => window.broadcastApp.source.switches);
  await action();
  const switched = await broadcaster.page.waitForFunction(
    ({ kind, before }) => {
      const source = window.broadcastApp.source;
      return source.kind === kind && source.switches > before && source.switchedAt;
    },
    { kind, before },
    { timeout: 10_000, polling: 50 },
  ).catch(async () => {
    const source = await broadcaster.page.evaluate(() => window.broadcastApp.source);
    const said = await broadcaster.page.textContent('#media-status');
    throw new Error(`broadcaster: does not send its ${kind} within 10 s: ${JSON.stringify(source)}, "${said}"`);
  });
  return switched.jsonValue();
}

/** The broadcaster's video senders carry the screen (`displaySurface` in their settings) or not. */
async function expectSending(broadcaster, kind) {
  const sent = await broadcaster.page.evaluate(() =>
    [...window.broadcastApp.peers.values()].flatMap((pc) => pc.getSenders())
      .filter((sender) => sender.track?.kind === 'video')
      .map((sender) => ({ label: sender.track.label, surface: sender.track.getSettings().displaySurface ?? null, state: sender.track.readyState })));
  const want = kind === 'screen';
  assert(
    sent.length > 0 && sent.every((t) => Boolean(t.surface) === want && t.state === 'live'),
    `broadcaster: its video senders should carry its ${kind}: ${JSON.stringify(sent)}`,
  );
}

/**
 * Notes each page's peer connections (objects and SDP) and counts, from now on, the `offer`
 * events the server relays to it (on the page's own socket) and the `upstream` events it gets.
 */
async function noteConnections(participants) {
  await Promise.all(participants.map((p) => p.page.evaluate(() => {
    const app = window.broadcastApp;
    window.__e2eConnections = {
      peers: new Map(app.peers),
      sdp: new Map([...app.peers].map(([id, pc]) => [id, [pc.localDescription?.sdp, pc.remoteDescription?.sdp]])),
      placements: app.relay?.placements ?? 0,
    };
    if (!window.__e2eOffers) {
      window.__e2eOffers = { count: 0 };
      app.socket.on('offer', () => {
        window.__e2eOffers.count += 1;
      });
    }
    window.__e2eOffers.count = 0;
  })));
}

/** Each page still holds the very connections noted: same objects, same SDP, connected, no offer. */
async function expectSameConnections(participants, when) {
  for (const p of participants) {
    const seen = await p.page.evaluate(() => {
      const app = window.broadcastApp;
      const noted = window.__e2eConnections;
      const changed = [];
      if (app.peers.size !== noted.peers.size) changed.push(`${noted.peers.size} connections before, ${app.peers.size} now`);
      for (const [id, pc] of noted.peers) {
        const [local, remote] = noted.sdp.get(id);
        if (app.peers.get(id) !== pc) changed.push(`${id}: replaced`);
        else if (pc.localDescription?.sdp !== local || pc.remoteDescription?.sdp !== remote) changed.push(`${id}: renegotiated`);
        else if (pc.connectionState !== 'connected') changed.push(`${id}: ${pc.connectionState}`);
      }
      return { changed, offers: window.__e2eOffers.count, placements: (app.relay?.placements ?? 0) - noted.placements };
    });
    assert(
      seen.changed.length === 0 && seen.offers === 0 && seen.placements === 0,
      `${p.role}: ${when}, its peer connections changed: ${JSON.stringify(seen)}`,
    );
  }
}

/** EBML ids of the WebM elements the recording check reads. */
const EBML = {
  header: 0x1a45dfa3,
  docType: 0x4282,
  segment: 0x18538067,
  tracks: 0x1654ae6b,
  trackEntry: 0xae,
  trackType: 0x83,
  codecId: 0x86,
};

/**
 * The start of a WebM file as its bytes say it: the EBML header's DocType and the Tracks
 * element's entries (`type`: 1 video, 2 audio; `codec`: e.g. `V_VP9`, `A_OPUS`). A recorder's
 * Segment and Clusters have an unknown size (all ones): they run to the end of their parent.
 */
function readWebm(bytes) {
  const vint = (at, keepMarker) => {
    const first = bytes[at];
    let length = 1;
    while (length <= 8 && !(first & (0x80 >> (length - 1)))) length += 1;
    if (length > 8 || at + length > bytes.length) throw new Error(`no EBML number at byte ${at}`);
    const mask = 0xff >> length;
    let value = keepMarker ? first : first & mask;
    let unknown = !keepMarker && (first & mask) === mask;
    for (let i = 1; i < length; i++) {
      value = value * 256 + bytes[at + i];
      if (bytes[at + i] !== 0xff) unknown = false;
    }
    return { value, length, unknown };
  };
  const children = (start, end) => {
    const found = [];
    for (let at = start; at < end;) {
      const id = vint(at, true);
      const size = vint(at + id.length, false);
      const from = at + id.length + size.length;
      const to = size.unknown ? end : Math.min(end, from + size.value);
      found.push({ id: id.value, from, to });
      // Tracks come before the first Cluster; an unknown-sized Cluster ends the walk anyway.
      if (id.value === EBML.tracks) break;
      at = to;
    }
    return found;
  };
  const uint = ({ from, to }) => [...bytes.subarray(from, to)].reduce((n, b) => n * 256 + b, 0);
  const text = ({ from, to }) => bytes.toString('latin1', from, to).replace(/\0+$/, '');

  const top = children(0, bytes.length);
  const header = top.find((e) => e.id === EBML.header);
  const segment = top.find((e) => e.id === EBML.segment);
  const docType = header && children(header.from, header.to).find((e) => e.id === EBML.docType);
  const tracks = segment && children(segment.from, segment.to).find((e) => e.id === EBML.tracks);
  const entries = tracks ? children(tracks.from, tracks.to).filter((e) => e.id === EBML.trackEntry) : [];
  return {
    docType: docType ? text(docType) : null,
    tracks: entries.map((entry) => {
      const fields = children(entry.from, entry.to);
      const type = fields.find((e) => e.id === EBML.trackType);
      const codec = fields.find((e) => e.id === EBML.codecId);
      return { type: type ? uint(type) : null, codec: codec ? text(codec) : null };
    }),
  };
}

/**
 * Plays a recording (its blob URL) in the page, at double speed: the frame sizes it presents,
 * and which source each run of frames shows, told by the left edge of the picture: black where
 * the 4:3 screen is fitted into the 16:9 frame, the fake camera's green where it fills it.
 */
function playback(page, url) {
  return page.evaluate(async (url) => {
    const video = document.createElement('video');
    video.muted = true;
    video.style.width = '160px';
    document.body.append(video);
    const canvas = document.createElement('canvas');
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const sizes = [];
    const sources = [];
    try {
      await new Promise((resolve, reject) => {
        const tick = (_now, frame) => {
          const size = `${frame.width}x${frame.height}`;
          if (!sizes.includes(size)) sizes.push(size);
          canvas.width = frame.width;
          canvas.height = frame.height;
          context.drawImage(video, 0, 0);
          const [r, g, b] = context.getImageData(4, Math.floor(frame.height / 2), 1, 1).data;
          const source = r + g + b < 60 ? 'screen' : 'camera';
          if (sources[sources.length - 1] !== source) sources.push(source);
          video.requestVideoFrameCallback(tick);
        };
        video.requestVideoFrameCallback(tick);
        video.onended = resolve;
        video.onerror = () => reject(new Error(`the recording does not play: ${video.error?.message}`));
        video.src = url;
        video.playbackRate = 2;
        video.play().catch(reject);
      });
    } finally {
      video.remove();
    }
    return { sizes, sources };
  }, url);
}

// -----------------------------------------------------------------------------------------------
// Scenario 25: glass-to-glass delay per hop of the relay tree
// -----------------------------------------------------------------------------------------------

/** The timestamp picture: its size, the code's grid, and how fast it is drawn. */
const STAMP = { width: 320, height: 240, columns: 8, rows: 6, frameRate: 15 };
/** How long every viewer's delay is sampled once the tree stands. */
const DELAY_SAMPLE_MS = 15_000;
/** Each viewer decodes at least this many stamps in that time (15 fps would give 225). */
const MIN_STAMPS = 60;
/** A generous bound on any glass-to-glass delay over loopback, three hops deep. */
const MAX_DELAY_MS = 5_000;
/**
 * The page's own estimate (delay.js) against the measured delay, per viewer (medians): within
 * this many milliseconds, or this share of the measured delay, whichever is larger.
 */
const ESTIMATE_SLACK_MS = 250;
const ESTIMATE_SLACK_SHARE = 0.5;
/** How soon the broadcaster knows the depth-3 viewers' delay once the tree stands. */
const DEEPEST_KNOWN_MS = 15_000;
/**
 * Chromium's spare renderer would be handed to whichever page opens next: without it, the
 * renderer processes that appear while a participant's page opens are that participant's.
 */
const NO_SPARE_RENDERER = ['--disable-features=SpareRendererForSitePerProcess'];

/**
 * Runs in the broadcaster's page before its own scripts: the camera is a canvas that draws, 15
 * times a second, the time of drawing (`Date.now()`: every page reads the same system clock,
 * where `performance.timeOrigin` is fixed per page when it opens and two pages' can disagree
 * by tens of milliseconds; its low 32 bits) as 48 black or white blocks of 40x40 pixels: 32
 * bits of time, then 16 bits of check (the two halves XORed with 0xA5A5), most significant
 * first, row by row. Blocks that large survive VP8 at any bitrate and any scaling the encoders
 * pick. Audio is the fake microphone, as the page asked.
 */
function stampCamera(stamp) {
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints = {}) => {
    if (!constraints.video) return getUserMedia(constraints);
    const canvas = document.createElement('canvas');
    canvas.width = stamp.width;
    canvas.height = stamp.height;
    const ctx = canvas.getContext('2d');
    const cellW = stamp.width / stamp.columns;
    const cellH = stamp.height / stamp.rows;
    const draw = () => {
      const now = Date.now();
      const value = now % 2 ** 32;
      const check = ((value >>> 16) ^ (value & 0xffff) ^ 0xa5a5) & 0xffff;
      const bits = [];
      for (let i = 31; i >= 0; i--) bits.push(Math.floor(value / 2 ** i) % 2);
      for (let i = 15; i >= 0; i--) bits.push((check >> i) & 1);
      bits.forEach((bit, i) => {
        ctx.fillStyle = bit ? '#fff' : '#000';
        ctx.fillRect((i % stamp.columns) * cellW, Math.floor(i / stamp.columns) * cellH, cellW, cellH);
      });
    };
    draw();
    setInterval(draw, 1000 / stamp.frameRate);
    // No frame rate: a frame is captured each time the canvas changes, right after drawing.
    const stream = canvas.captureStream();
    if (constraints.audio) {
      const audio = await getUserMedia({ audio: constraints.audio });
      for (const track of audio.getAudioTracks()) stream.addTrack(track);
    }
    return stream;
  };
}

/**
 * Starts reading the stamps a viewer's player presents (`requestVideoFrameCallback`: each
 * frame as it is shown, with the time it is expected on screen, on the system clock as the
 * stamp's): each frame is drawn small into a canvas, every block's centre read as black or
 * white, and a code whose check holds gives one sample, display time − drawing time. Every 500 ms the page's own estimate
 * (`broadcastApp.delay.behind`) is noted too. Everything lands in `window.__e2eDelay`.
 */
async function startStampReader(participant) {
  await participant.page.evaluate((stamp) => {
    const video = document.querySelector('#remote-video');
    const w = stamp.columns * 8;
    const h = stamp.rows * 8;
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const state = { samples: [], bad: 0, frames: 0, estimates: [], hops: [], running: true };
    window.__e2eDelay = state;
    const read = () => {
      ctx.drawImage(video, 0, 0, w, h);
      const { data } = ctx.getImageData(0, 0, w, h);
      const bits = [];
      for (let r = 0; r < stamp.rows; r++) {
        for (let c = 0; c < stamp.columns; c++) {
          let sum = 0;
          for (let y = r * 8 + 2; y < r * 8 + 6; y++) {
            for (let x = c * 8 + 2; x < c * 8 + 6; x++) sum += data[(y * w + x) * 4 + 1];
          }
          bits.push(sum / 16 > 128 ? 1 : 0);
        }
      }
      let value = 0;
      for (let i = 0; i < 32; i++) value = value * 2 + bits[i];
      let check = 0;
      for (let i = 32; i < 48; i++) check = (check << 1) | bits[i];
      return check === (((value >>> 16) ^ (value & 0xffff) ^ 0xa5a5) & 0xffff) ? value : null;
    };
    const onFrame = (_now, meta) => {
      if (!state.running) return;
      state.frames += 1;
      const shown = Date.now() + (meta.expectedDisplayTime - performance.now());
      const value = read();
      if (value === null) {
        state.bad += 1;
      } else {
        // The low 32 bits of the drawing time: the drawing time nearest to now with those bits.
        const drawn = shown - ((((shown % 2 ** 32) - value) % 2 ** 32) + 2 ** 32) % 2 ** 32;
        state.samples.push(shown - drawn);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    const noteEstimate = () => {
      if (!state.running) return;
      const { behind, hop } = window.broadcastApp.delay ?? {};
      if (typeof behind === 'number') state.estimates.push(behind * 1000);
      if (hop) state.hops.push(hop);
      setTimeout(noteEstimate, 500);
    };
    setTimeout(noteEstimate, 500);
  }, STAMP);
}

/**
 * Notes the broadcaster's figure of the deepest viewer (`broadcastApp.delay.deepest`) every
 * 500 ms, in `window.__e2eDeepest`, until `stopDeepestNotes`.
 */
async function startDeepestNotes(participant) {
  await participant.page.evaluate(() => {
    const state = { notes: [], running: true };
    window.__e2eDeepest = state;
    const note = () => {
      if (!state.running) return;
      const deepest = window.broadcastApp.delay?.deepest;
      if (deepest) state.notes.push({ depth: deepest.depth, ms: deepest.behind * 1000 });
      setTimeout(note, 500);
    };
    setTimeout(note, 500);
  });
}

function stopDeepestNotes(participant) {
  return participant.page.evaluate(() => {
    window.__e2eDeepest.running = false;
    return window.__e2eDeepest.notes;
  });
}

/** Stops a page's stamp reader; returns what it collected. */
function stopStampReader(participant) {
  return participant.page.evaluate(() => {
    const state = window.__e2eDelay;
    state.running = false;
    const { samples, bad, frames, estimates, hops } = state;
    return { samples, bad, frames, estimates, hops };
  });
}

/** The `q`-quantile (0..1) of `values` (nearest rank); null for none. */
function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Renderer process id → its CPU time in seconds, from the browser (CDP `SystemInfo`). */
async function rendererCpu(cdp) {
  const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
  return new Map(processInfo.filter((p) => p.type === 'renderer').map((p) => [p.id, p.cpuTime]));
}

/**
 * Opens a participant's page and notes which renderer processes appeared meanwhile: that
 * participant's (its browser context shares none with another, and the spare renderer is off).
 */
async function openNoting(cdp, owners, open) {
  const before = await rendererCpu(cdp);
  const participant = await open();
  const after = await rendererCpu(cdp);
  const mine = [...after.keys()].filter((pid) => !before.has(pid));
  assert(mine.length > 0, `${participant.role}: no renderer process appeared for its page`);
  owners.set(participant.role, mine);
  return participant;
}

/** CPU seconds each participant's renderer processes spent between two readings. */
function cpuBetween(owners, before, after) {
  const spent = new Map();
  for (const [role, pids] of owners) {
    spent.set(role, pids.reduce((sum, pid) => sum + Math.max(0, (after.get(pid) ?? 0) - (before.get(pid) ?? 0)), 0));
  }
  return spent;
}

/**
 * Waits until the tree has its full breadth-first shape (`perDepth` viewers at depths 1, 2, …)
 * and every viewer plays; returns it.
 */
async function untilTreeShape(broadcaster, viewers, perDepth, timeout) {
  const deadline = Date.now() + timeout;
  let tree;
  for (;;) {
    tree = await relayTreeOf(broadcaster, viewers);
    const counts = perDepth.map((_, i) => tree.nodes.filter((n) => n.depth === i + 1).length);
    const playing = await Promise.all(viewers.map((v) => v.page.evaluate(() => Boolean(window.broadcastApp.relay?.upstream?.playing))));
    if (counts.every((n, i) => n === perDepth[i]) && playing.every(Boolean)) return tree;
    if (Date.now() > deadline) {
      throw new Error(`the tree never took the shape ${perDepth.join(' + ')} within ${timeout} ms: ${tree.shape}`);
    }
    await sleep(250);
  }
}

/** The chat lines of a page with this exact text. */
function chatItemsWithText(page, text) {
  return page.evaluate((t) =>
    [...document.querySelectorAll('#chat-log .chat-msg')]
      .filter((m) => m.querySelector('.chat-text')?.textContent === t)
      .map((m) => ({ id: m.dataset.id ?? null })),
  text);
}

/** Waits until a page's chat log no longer shows a line with this exact text. */
async function untilChatLineGone(participant, text, timeout = 5_000) {
  await participant.page.waitForFunction(
    (t) => ![...document.querySelectorAll('#chat-log .chat-text')].some((e) => e.textContent === t),
    text,
    { timeout, polling: 50 },
  ).catch(async () => {
    const lines = await chatLines(participant.page).catch(() => []);
    throw new Error(`${participant.role}: the removed message ${JSON.stringify(text)} still shows: ${JSON.stringify(lines)}`);
  });
}

/** Waits until an element's text includes `text` (a notice, an error line). */
async function untilTextShows(participant, selector, text, timeout = 5_000) {
  await participant.page.waitForFunction(
    ({ selector, text }) => {
      const el = document.querySelector(selector);
      return el && !el.hidden && el.textContent.includes(text);
    },
    { selector, text },
    { timeout, polling: 50 },
  ).catch(async () => {
    const shown = await participant.page.evaluate((sel) => {
      const el = document.querySelector(sel);
      return el ? `${el.hidden ? '(hidden) ' : ''}"${el.textContent.trim()}"` : '(missing)';
    }, selector).catch(() => '(page gone)');
    throw new Error(`${participant.role}: ${selector} shows ${shown}, expected it to say "${text}"`);
  });
}

/**
 * What a page plays and holds: its player's stream, its peer connections (open ones), and its
 * `#status`. A viewer that was taken out of its channel plays nothing and holds none.
 */
function playbackOf(participant) {
  return participant.page.evaluate(() => {
    const video = document.querySelector('#remote-video');
    const open = [...window.broadcastApp.peers.values()].filter((pc) => pc.connectionState !== 'closed');
    return {
      stream: Boolean(video?.srcObject),
      playing: Boolean(video && video.srcObject && !video.paused && video.videoWidth > 0),
      peers: open.length,
      upstream: Boolean(window.broadcastApp.relay?.upstream),
      state: document.querySelector('#status')?.dataset.state,
      text: document.querySelector('#status')?.textContent.trim(),
    };
  });
}

/** A viewer the broadcaster banned: the banned notice, no picture, no peer connection. */
async function expectBanned(participant) {
  await participant.waitForState('banned', 10_000);
  const seen = await playbackOf(participant);
  assert(
    seen.text.includes('You are banned from this channel') && !seen.stream && !seen.playing && seen.peers === 0 && !seen.upstream,
    `${participant.role}: expected the banned notice and no playback, got ${JSON.stringify(seen)}`,
  );
  return seen;
}

export const scenarios = [
  {
    name: '1-three-viewers-play',
    title: 'broadcaster goes live, three viewers open the link and play video and audio',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s1');
      const { broadcaster, link } = await goLive(s, channel);
      const viewers = await Promise.all([1, 2, 3].map((i) => watch(s, `viewer-${i}`, link)));
      const results = await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      await expectViewerCount(broadcaster, 3);

      await expectPeerCount(broadcaster, 3);
      // The server was started with --ice-servers '[]': the page must use exactly that,
      // so no STUN server anywhere is contacted and host candidates carry the call.
      for (const p of [broadcaster, ...viewers]) {
        const configs = await iceServersOf(p.page);
        assert(
          configs.every((servers) => servers.length === 0),
          `${p.role}: peer connections use ICE servers ${JSON.stringify(configs)} although the server hands out []`,
        );
      }
      return results.map((r, i) => `viewer-${i + 1}: ${r.width}x${r.height}, ${r.frames} frames/2 s`).join('; ');
    },
  },

  {
    name: '2-pick-from-list',
    title: 'a viewer without a channel in the URL picks the live channel from the list',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s2');
      await goLive(s, channel);
      const viewer = await s.participant('viewer');
      await viewer.goto(`${s.server.url}?viewer=true`);
      await viewer.waitForState('idle');
      const entry = viewer.page.locator(`#channel-list li[data-channel-id="${channel}"]`);
      await entry.waitFor({ state: 'visible', timeout: 5_000 }).catch(async () => {
        const ids = await viewer.page.$$eval('#channel-list li', (lis) => lis.map((li) => li.dataset.channelId));
        throw new Error(`viewer: channel ${channel} is not in #channel-list (it lists ${JSON.stringify(ids)})`);
      });
      const entryText = await entry.textContent();
      assert(entryText.includes(channel), `viewer: the list entry does not show the channel id: "${entryText}"`);
      await entry.locator('.join-channel').click();
      await viewer.waitForState('live', 25_000);
      const r = await expectPlaying(viewer.page, { role: viewer.role });
      return `${r.width}x${r.height}, ${r.frames} frames/2 s`;
    },
  },

  {
    name: '3-chat',
    title: 'chat: alias errors, messages reach everyone with the alias, script is refused, nothing is HTML',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s3');
      const { broadcaster, link } = await goLive(s, channel);
      const [alice, other] = await Promise.all([watch(s, 'viewer-alias', link), watch(s, 'viewer-other', link)]);
      const everyone = [broadcaster, alice, other];
      const page = alice.page;

      // A too-short alias: the dialog stays open and shows the server's reason.
      await page.click('#alias-btn');
      await page.waitForSelector('#alias-dialog[open]', { timeout: 3_000 });
      await page.fill('#alias-input', 'Bob');
      await page.click('#alias-save');
      await page.waitForFunction(
        () => document.querySelector('#alias-error')?.textContent.includes('Invalid alias:'),
        null,
        { timeout: 5_000 },
      ).catch(async () => {
        const shown = await page.textContent('#alias-error').catch(() => '(missing)');
        throw new Error(`viewer-alias: #alias-error shows "${shown}" after a 3-character alias, expected the server's "Invalid alias: ..."`);
      });
      assert(await page.isVisible('#alias-error'), 'viewer-alias: #alias-error is not visible');
      assert(await page.$('#alias-dialog[open]'), 'viewer-alias: the alias dialog closed although the alias was refused');
      await alice.screenshot('alias-refused');

      // A valid alias: the dialog closes and the alias shows.
      const alias = 'Alice_e2e';
      await page.fill('#alias-input', alias);
      await page.click('#alias-save');
      await page.waitForSelector('#alias-dialog[open]', { state: 'detached', timeout: 5_000 }).catch(() => {
        throw new Error('viewer-alias: the alias dialog stayed open after a valid alias');
      });
      await page.waitForFunction((a) => document.querySelector('#alias-current')?.textContent.includes(a), alias, {
        timeout: 3_000,
      });

      // Markup in a message is allowed by the server and must show as plain text.
      const message = 'Hello <b>bold</b> <i>it</i> <img src="x.png"> & "quotes"';
      await page.fill('#chat-input', message);
      await page.click('#chat-send');
      for (const p of everyone) {
        await waitForChatLine(p.page, { role: p.role, sender: alias, text: message });
      }

      // Someone without an alias is shown by the server's default name.
      const plain = 'hi, no alias here';
      await other.page.fill('#chat-input', plain);
      await other.page.click('#chat-send');
      for (const p of everyone) {
        await waitForChatLine(p.page, { role: p.role, sender: 'Viewer-', text: plain });
      }

      // A script tag is refused by the server, and the error is shown to its author.
      const before = await Promise.all(everyone.map((p) => chatLines(p.page)));
      await page.fill('#chat-input', '<script>alert("e2e")</script>');
      await page.click('#chat-send');
      await page.waitForFunction(
        () => document.querySelector('#chat-error')?.textContent.includes('Invalid message:'),
        null,
        { timeout: 5_000 },
      ).catch(async () => {
        const shown = await page.textContent('#chat-error').catch(() => '(missing)');
        throw new Error(`viewer-alias: #chat-error shows "${shown}" after a <script> message, expected "Invalid message: ..."`);
      });
      assert(await page.isVisible('#chat-error'), 'viewer-alias: #chat-error is not visible');
      await sleep(1_000);
      for (const [i, p] of everyone.entries()) {
        const after = await chatLines(p.page);
        assert(
          after.length === before[i].length,
          `${p.role}: the refused message still appeared: ${JSON.stringify(after.slice(before[i].length))}`,
        );
        const markup = await p.page.$$eval(
          '#chat-log .chat-text *, #chat-log .chat-sender *, #chat-log img, #chat-log script',
          (els) => els.map((e) => e.outerHTML),
        );
        assert(markup.length === 0, `${p.role}: chat text was rendered as HTML: ${markup.join(' ')}`);
      }
      return `alias "${alias}", 2 messages seen by 3 participants, <script> refused`;
    },
  },

  {
    name: '4-stop-and-restart',
    title: 'broadcaster stops (viewers see it within 2 s), starts again, a reloaded viewer plays',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s4');
      const { broadcaster, link } = await goLive(s, channel);
      const viewers = await Promise.all([1, 2].map((i) => watch(s, `viewer-${i}`, link)));
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));

      const since = Date.now();
      await broadcaster.page.click('#stop-btn');
      const noticed = await allNotice(viewers, 'stopped', since);
      await broadcaster.waitForState('stopped', 5_000);
      await Promise.all(viewers.map((v) => v.screenshot('stopped')));

      await broadcaster.page.click('#start-btn');
      await broadcaster.waitForState('live', 20_000);
      const [again] = viewers;
      await again.page.reload({ waitUntil: 'load' });
      await again.waitForState('live', 25_000);
      const r = await expectPlaying(again.page, { role: again.role });
      return `stopped noticed: ${noticed}; after restart ${again.role} ${r.frames} frames/2 s`;
    },
  },

  {
    name: '5-broadcaster-leaves',
    title: 'broadcaster closes the page: viewers see "reconnecting" within 2 s, then "broadcaster left" when the grace ends, and the channel leaves the list',
    async run(s) {
      // The page asks the server to hold its channel when its connection drops (a reload resumes
      // it); a closed page looks just the same, so the channel closes when that grace ends.
      await s.startServer({ extraArgs: [`--resume-grace-secs=${LEAVE_GRACE_SECS}`] });
      await s.launchBrowser();
      const channel = channelId('s5');
      const { broadcaster } = await goLive(s, channel);
      const link = `${s.server.url}?viewer=true&channel=${channel}`;
      const viewers = await Promise.all([1, 2].map((i) => watch(s, `viewer-${i}`, link)));
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));

      const lister = await s.participant('list-viewer');
      await lister.goto(`${s.server.url}?viewer=true`);
      const entry = lister.page.locator(`#channel-list li[data-channel-id="${channel}"]`);
      await entry.waitFor({ state: 'visible', timeout: 5_000 });

      await broadcaster.screenshot('before-leaving');
      const since = Date.now();
      await broadcaster.page.close();
      const noticed = await allNotice(viewers, 'broadcaster-reconnecting', since);
      const graceMs = LEAVE_GRACE_SECS * 1000;
      const left = await Promise.all(viewers.map(async (v) => {
        await v.waitForState('broadcaster-left', graceMs + NOTICE_MS + 1_000);
        const ms = Date.now() - since;
        assert(ms <= graceMs + NOTICE_MS, `${v.role}: showed "broadcaster-left" only ${ms} ms after the page closed (grace ${graceMs} ms + ${NOTICE_MS} ms)`);
        return `${v.role} ${ms} ms`;
      }));
      for (const v of viewers) {
        const { text } = await v.status();
        assert(/left/i.test(text), `${v.role}: status says "${text}", which does not tell the broadcaster left`);
      }

      await lister.page.click('#refresh-channels-btn');
      await entry.waitFor({ state: 'detached', timeout: 5_000 }).catch(() => {
        throw new Error(`list-viewer: channel ${channel} is still listed after its broadcaster left`);
      });
      return `reconnecting noticed: ${noticed}; broadcaster-left after the ${LEAVE_GRACE_SECS} s grace: ${left.join(', ')}`;
    },
  },

  {
    name: '6-unknown-channel',
    title: 'a viewer link to a channel that does not exist says so',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s6');
      const viewer = await s.participant('viewer');
      await viewer.goto(`${s.server.url}?viewer=true&channel=${channel}`);
      await viewer.waitForState('not-found', 10_000);
      const { text } = await viewer.status();
      assert(
        text.includes(channel) && /not found|does not exist|doesn't exist|no such/i.test(text),
        `viewer: status "${text}" does not clearly say channel ${channel} does not exist`,
      );
      assert(await viewer.page.isVisible('#status'), 'viewer: #status is not visible');
      return `"${text}"`;
    },
  },

  {
    name: '7-legacy-client',
    title: 'a legacy page with socket.io client 4.5.4 (polling, then upgrade) watches a served-page broadcast',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s7');
      const { broadcaster } = await goLive(s, channel);
      const legacy = await openLegacyViewer(s, channel);
      const r = await expectPlaying(legacy.page, { role: legacy.role, pcs: 'legacy' });

      await legacy.page.waitForFunction(() => window.legacy.upgradedTo === 'websocket', null, { timeout: 10_000 })
        .catch(() => {});
      const transport = await legacy.page.evaluate(() => ({
        first: window.legacy.firstTransport,
        upgradedTo: window.legacy.upgradedTo,
        errors: window.legacy.errors,
      }));
      assert(transport.first === 'polling', `legacy-viewer: first transport was ${transport.first}, not polling`);
      assert(transport.upgradedTo === 'websocket', `legacy-viewer: never upgraded to websocket (${JSON.stringify(transport)})`);
      assert(transport.errors.length === 0, `legacy-viewer: got error events ${JSON.stringify(transport.errors)}`);
      await expectViewerCount(broadcaster, 1);
      return `polling → websocket, ${r.width}x${r.height}, ${r.frames} frames/2 s`;
    },
  },

  {
    name: '8-mobile-viewer',
    title: 'a phone-sized touch viewer plays and chats, and nothing overflows the viewport',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s8');
      const { broadcaster, link } = await goLive(s, channel);
      const phone = await watch(s, 'phone-viewer', link, {
        viewport: { width: 390, height: 844 },
        deviceScaleFactor: 2,
        isMobile: true,
        hasTouch: true,
      });
      const r = await expectPlaying(phone.page, { role: phone.role });
      const page = phone.page;

      // A phone lays a page out 980 px wide and shrinks it when it has no device-width
      // viewport, and widens the layout past 390 px when content does not fit.
      const layoutWidth = await page.evaluate(() => window.innerWidth);
      if (layoutWidth !== 390) {
        const overflowing = await overflowingElements(page);
        throw new Error(
          `phone-viewer: the page lays out ${layoutWidth} px wide on a 390 px phone ` +
            `(no width=device-width viewport meta, or content wider than the screen)` +
            (overflowing.length ? `:\n  ${overflowing.join('\n  ')}` : ''),
        );
      }

      const video = await boxOf(page, '#remote-video');
      assert(video?.visible, 'phone-viewer: #remote-video is not visible');
      assert(
        video.left >= -1 && video.right <= video.viewportWidth + 1 && video.width >= video.viewportWidth * 0.6,
        `phone-viewer: the video spans x ${video.left}..${video.right} in a ${video.viewportWidth} px viewport`,
      );
      for (const sel of ['#chat-input', '#chat-send']) {
        const b = await boxOf(page, sel);
        assert(b?.visible, `phone-viewer: ${sel} is not visible`);
        assert(b.left >= -1 && b.right <= b.viewportWidth + 1, `phone-viewer: ${sel} sticks out of the viewport`);
        assert(b.height >= 24 && b.width >= 24, `phone-viewer: ${sel} is ${b.width}x${b.height} px, too small to touch`);
      }

      const text = 'hello from a phone';
      await page.tap('#chat-input');
      await page.keyboard.type(text);
      await page.tap('#chat-send');
      await waitForChatLine(page, { role: phone.role, sender: 'Viewer-', text });
      await waitForChatLine(broadcaster.page, { role: 'broadcaster', sender: 'Viewer-', text });

      await page.evaluate(() => window.scrollTo(0, 0));
      await phone.screenshot('layout');
      const overflowing = await overflowingElements(page);
      assert(overflowing.length === 0, `phone-viewer: content overflows the viewport:\n  ${overflowing.join('\n  ')}`);
      return `${r.width}x${r.height} in a 390 px viewport, chat sent by touch`;
    },
  },

  {
    name: '9-https',
    title: 'over HTTPS with a self-signed certificate, broadcaster and viewer still play',
    async run(s) {
      const cert = makeSelfSignedCert();
      s.onCleanup(cert.cleanup);
      await serverAndBrowser(s, {
        tls: { cert: cert.cert, key: cert.key },
        // Chromium trusts exactly this certificate's key and no other bad certificate.
        browserArgs: [`--ignore-certificate-errors-spki-list=${cert.spki}`],
      });
      assert(s.server.origin.startsWith('https://'), `server announced ${s.server.origin}, not https`);
      const channel = channelId('s9');
      const { link } = await goLive(s, channel);
      assert(link.startsWith('https://'), `broadcaster: viewer link ${link} is not https`);
      const viewer = await watch(s, 'viewer', link);
      const r = await expectPlaying(viewer.page, { role: viewer.role });
      const transport = await viewer.page.evaluate(() => window.broadcastApp.socket.io?.engine?.transport?.name);
      return `${r.width}x${r.height}, ${r.frames} frames/2 s, socket transport ${transport}`;
    },
  },

  {
    name: '10-server-restart',
    title: 'the server restarts (a deploy): both pages show the lost connection, then the broadcast resumes by itself',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s10');
      const { broadcaster, link } = await goLive(s, channel);
      const viewer = await watch(s, 'viewer', link);
      await expectPlaying(viewer.page, { role: viewer.role });

      const port = Number(new URL(s.server.origin).port);
      const stoppedAt = Date.now();
      await s.server.stop();
      const lost = await allNotice([broadcaster, viewer], ['reconnecting', 'unreachable'], stoppedAt);
      await broadcaster.screenshot('server-down');
      await viewer.screenshot('server-down');

      // A fresh server on the same address knows nothing: the broadcaster must go live again
      // and the viewer find it again, with no one touching either page.
      await s.startServer({ port });
      const restartedAt = Date.now();
      await broadcaster.waitForState('live', 30_000);
      const broadcasterBack = Date.now() - restartedAt;
      await viewer.waitForState('live', 30_000);
      const viewerBack = Date.now() - restartedAt;
      const r = await expectPlaying(viewer.page, { role: viewer.role });

      const health = await fetch(`${s.server.url}healthz`).then((res) => res.json());
      assert(
        health.channels === 1 && health.sockets === 2 && health.indexed_sockets === 2,
        `the restarted server holds ${JSON.stringify(health)}, expected the channel again with both pages in it`,
      );
      await expectViewerCount(broadcaster, 1);
      await expectPeerCount(broadcaster, 1);
      return `lost noticed: ${lost}; live again after restart: broadcaster ${broadcasterBack} ms, viewer ${viewerBack} ms; ${r.width}x${r.height}, ${r.frames} frames/2 s`;
    },
  },

  {
    name: '11-relay-tree',
    title: 'seven viewers relay the broadcast along a tree; it heals when a relay leaves, without a stall below it; a legacy viewer is fed directly',
    async run(s) {
      await s.startServer({ extraArgs: RELAY_TREE_ARGS });
      await s.launchBrowser();
      const channel = channelId('s11');
      const { broadcaster, link } = await goLive(s, channel, { contextOptions: SMALL_WINDOW, camera: SMALL_CAMERA });
      const viewers = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((i) => watch(s, `viewer-${i}`, link, SMALL_WINDOW)));
      const played = await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));

      // The tree, from each page's own view: 1 direct, 2 per relay, so 7 viewers make 3 levels.
      const tree = await relayTreeOf(broadcaster, viewers);
      expectConnectedTree(tree);
      const depth = Math.max(...tree.nodes.map((n) => n.depth));
      assert(depth >= 3, `the relay tree is only ${depth} deep: ${tree.shape}`);
      const sending = await sendingVideoStreams(broadcaster.page);
      assert(sending === 1, `broadcaster: ${sending} outbound video streams sending, expected exactly 1 (${tree.shape})`);
      await Promise.all(
        tree.nodes.filter((n) => n.children.length).map(async (n) => {
          const out = await sendingVideoStreams(n.participant.page);
          assert(out === n.children.length, `${n.role}: ${out} outbound video streams sending, expected one per child (${n.children.length})`);
        }),
      );
      await expectViewerCount(broadcaster, 7);
      const figures = await expectTreeFigures(broadcaster, { direct: 1, relayed: 6 });

      // The depth-1 relay leaves. What must not change below its children is noted first.
      const leaving = tree.nodes.find((n) => n.depth === 1 && n.children.some((c) => tree.byId.get(c).children.length));
      assert(leaving, `no depth-1 relay with grandchildren: ${tree.shape}`);
      const children = leaving.children.map((id) => tree.byId.get(id));
      const grandchildren = children.flatMap((c) => c.children.map((id) => tree.byId.get(id)));
      for (const c of children) {
        await c.participant.page.evaluate(() => {
          window.__e2eChildren = new Map(window.broadcastApp.relay.children);
        });
      }
      for (const g of grandchildren) {
        await g.participant.page.evaluate(() => {
          const { relay } = window.broadcastApp;
          const pc = relay.upstream.pc;
          window.__e2eFeed = {
            pc,
            placements: relay.placements,
            local: pc.localDescription.sdp,
            remote: pc.remoteDescription.sdp,
          };
        });
      }
      const watched = [...children, ...grandchildren];
      await Promise.all(watched.map((n) => n.participant.screenshot('before-relay-leaves')));
      await Promise.all(watched.map((n) => startDecodeMonitor(n.participant.page)));
      await sleep(1_000);

      const closedAt = Date.now();
      await leaving.participant.page.close();
      await Promise.all(children.map((c) => c.participant.waitForState('live', 10_000)));
      // A ready leaf from the deepest level (here a grandchild) takes the departed relay's place
      // and children (RELAY-TREE.md, "Shape"): it moves, the other grandchildren must not.
      // The children may still say "live" from before the server noticed the departure (a
      // busy machine): wait for the move itself, then give a second one time to show.
      const moved = async () => {
        const found = [];
        for (const g of grandchildren) {
          const placements = await g.participant.page.evaluate(
            () => window.broadcastApp.relay.placements - window.__e2eFeed.placements,
          );
          if (placements > 0) found.push(g);
        }
        return found;
      };
      const movedBy = Date.now() + 10_000;
      while ((await moved()).length === 0 && Date.now() < movedBy) await sleep(100);
      await sleep(500);
      const movedUp = await moved();
      assert(
        movedUp.length === 1,
        `expected one grandchild to take ${leaving.role}'s place, moved: ${movedUp.map((g) => g.role).join(', ') || 'none'}`,
      );
      const spare = movedUp[0];
      await spare.participant.waitForState('live', 10_000);
      const stayed = grandchildren.filter((g) => g !== spare);
      await sleep(Math.max(0, closedAt + 4_000 - Date.now()));
      const samples = await Promise.all(watched.map((n) => decodeSamples(n.participant.page)));
      const byRole = new Map(watched.map((n, i) => [n.role, samples[i]]));

      const playAgain = [...children, spare].map((c) => {
        const own = byRole.get(c.role);
        const ms = playAgainAfter(own, closedAt, connectionBefore(own, closedAt));
        assert(ms !== null, `${c.role}: no frames from a new feeder within 4 s after its feeder ${leaving.role} left`);
        assert(ms <= REPARENT_PLAY_MS, `${c.role}: played again only ${ms} ms after its feeder left (limit ${REPARENT_PLAY_MS} ms)`);
        return `${c.role} ${ms} ms`;
      });
      const gaps = [];
      for (const g of stayed) {
        const own = byRole.get(g.role);
        const connections = new Set(own.map(([, connection]) => connection));
        assert(
          connections.size === 1 && connections.has(1),
          `${g.role}: its connection to its feeder changed while the relay above it left (connections sampled: ${[...connections]})`,
        );
        const gap = longestDecodeGap(own, closedAt);
        assert(gap <= GRANDCHILD_GAP_MS, `${g.role}: decoded no frame for ${gap} ms while the relay above it left (limit ${GRANDCHILD_GAP_MS} ms)`);
        const same = await g.participant.page.evaluate(() => {
          const { relay } = window.broadcastApp;
          const feed = window.__e2eFeed;
          const pc = relay.upstream?.pc;
          return {
            samePc: pc === feed.pc,
            placements: relay.placements - feed.placements,
            sameSdp: pc?.localDescription?.sdp === feed.local && pc?.remoteDescription?.sdp === feed.remote,
            state: pc?.connectionState,
          };
        });
        assert(
          same.samePc && same.placements === 0 && same.sameSdp && same.state === 'connected',
          `${g.role}: its feeder connection was replaced or renegotiated: ${JSON.stringify(same)}`,
        );
        gaps.push(`${g.role} ${gap} ms`);
      }
      for (const c of children) {
        const kept = await c.participant.page.evaluate((spareId) => {
          const now = window.broadcastApp.relay.children;
          return [...window.__e2eChildren]
            .filter(([id]) => id !== spareId)
            .every(([id, pc]) => now.get(id) === pc && pc.connectionState === 'connected');
        }, spare.id);
        assert(kept, `${c.role}: the connections to its own children did not survive its move`);
      }

      // Healed: everybody still reaches the broadcaster, which still sends one stream.
      const rest = viewers.filter((v) => v !== leaving.participant);
      const healed = await relayTreeOf(broadcaster, rest);
      expectConnectedTree(healed);
      await Promise.all(rest.map((v) => expectPlaying(v.page, { role: v.role })));
      const sendingHealed = await sendingVideoStreams(broadcaster.page);
      assert(sendingHealed === 1, `broadcaster: ${sendingHealed} outbound video streams after healing, expected 1 (${healed.shape})`);

      // A legacy page never joins the tree: the broadcaster feeds it, over the direct limit.
      const legacy = await openLegacyViewer(s, channel);
      await expectPlaying(legacy.page, { role: legacy.role, pcs: 'legacy' });
      const withLegacy = await sendingVideoStreams(broadcaster.page);
      assert(withLegacy === 2, `broadcaster: ${withLegacy} outbound video streams with a legacy viewer, expected 2`);
      await expectViewerCount(broadcaster, 7);

      const size = `${played[0].width}x${played[0].height}`;
      return `${size}, depth ${depth}; "${figures}"; ${leaving.role} left, ${spare.role} took its place: played again after ${playAgain.join(', ')}; ` +
        `grandchildren's longest decode gap ${gaps.join(', ')}; legacy viewer fed directly (2 streams at the broadcaster)`;
    },
  },

  {
    name: '12-relay-off',
    title: 'without the tree (the broadcaster switches relaying off, or the server runs --relay-fanout 0) every viewer watches directly',
    async run(s) {
      // The broadcaster's switch, on a server whose tree would put the second viewer under the first.
      await s.startServer({ extraArgs: ['--relay-direct=1'] });
      await s.launchBrowser();
      const off = await expectEveryoneDirect(s, 'switch-off', { relay: false, channel: channelId('s12a') });
      assert(/directly from you/.test(off.hint), `the relay hint while live with relaying off says "${off.hint}"`);

      // A server with the tree turned off, and a broadcaster with the switch on (the default).
      await s.server.stop();
      await s.startServer({ extraArgs: ['--relay-direct=1', '--relay-fanout=0'] });
      const serverOff = await expectEveryoneDirect(s, 'fanout-0', { relay: true, channel: channelId('s12b') });
      return `switch off: "${off.breakdown}"; --relay-fanout 0: "${serverOff.breakdown}"`;
    },
  },

  {
    name: '13-cluster',
    title: 'two nodes share one Redis: broadcaster on node A, viewers on A and B play; Redis is left empty',
    // The runner fails the scenario at once when Redis does not answer PING.
    needs: ['redis'],
    async run(s) {
      // A prefix of this run alone: nothing of another run is seen, and nothing is left.
      const prefix = `e2e-${randomBytes(4).toString('hex')}`;
      // A short resume grace: the served page asks for its channel to be held when its
      // connection drops, so after the pages close the channel lives on for that long.
      const cluster = {
        // The URL may carry a password: it goes through the environment, not the command line.
        env: { REDIS_URL },
        extraArgs: [`--redis-prefix=${prefix}`, `--resume-grace-secs=${CLUSTER_GRACE_SECS}`],
        ready: clusterReady,
      };
      s.onCleanup(async () => {
        // Had the scenario failed half-way: stop the nodes, then remove what they left.
        for (const node of s.servers) await node.stop();
        const removed = await deleteKeysUnder(prefix);
        if (removed) s.log(`cleanup: deleted ${removed} keys under ${prefix}`);
      });
      // Both start at once; neither is left starting when the other fails.
      const started = await Promise.allSettled([
        s.startServer({ name: 'node-a', ...cluster }),
        s.startNode('node-b', cluster),
      ]);
      const failed = started.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      const [nodeA, nodeB] = started.map((r) => r.value);
      await s.launchBrowser();

      const channel = channelId('s13');
      const { broadcaster, link } = await goLive(s, channel);
      const placed = [
        ['viewer-1-node-a', nodeA],
        ['viewer-2-node-b', nodeB],
        ['viewer-3-node-b', nodeB],
      ];
      const viewers = await Promise.all(placed.map(([role, node]) => watch(s, role, onNode(link, node))));
      const results = await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      await expectViewerCount(broadcaster, 3);
      await expectPeerCount(broadcaster, 3);
      for (const [i, [role, node]] of placed.entries()) {
        const origin = new URL(viewers[i].page.url()).origin;
        assert(origin === node.origin, `${role}: its page is served by ${origin}, not by its node ${node.origin}`);
      }
      const live = await keysUnder(prefix);
      assert(live.length > 0, `Redis holds no key under ${prefix} while the channel is live: do the nodes use it?`);
      const sockets = await Promise.all([nodeA, nodeB].map(async (n) => (await healthOf(n))?.sockets ?? '?'));

      // The end: everyone leaves, the nodes stop, and Redis holds nothing of this run.
      const everyone = [broadcaster, ...viewers];
      for (const p of everyone) await p.screenshot('end');
      for (const p of everyone) await p.page.close();
      await Promise.all([nodeA, nodeB].map((n) => untilNoSockets(n)));
      // The broadcaster's channel is held for its grace; a node closes it when that ends.
      const heldUntil = Date.now() + CLUSTER_GRACE_SECS * 1000 + 3_000;
      while ((await keysUnder(prefix)).some((key) => key.startsWith(`${prefix}:ch:`)) && Date.now() < heldUntil) await sleep(200);
      const stopped = await Promise.all([nodeA.stop(), nodeB.stop()]);
      for (const [i, how] of stopped.entries()) {
        assert(!how.killed, `node ${'AB'[i]} did not exit within 5 s of SIGTERM (it was killed); see node-${'ab'[i]}.log`);
      }
      const since = Date.now();
      const left = await keysLeftUnder(prefix, REDIS_LEFTOVER_GRACE_MS);
      assert(
        left.length === 0,
        `Redis still holds ${left.length} keys under ${prefix} ${REDIS_LEFTOVER_GRACE_MS} ms after both nodes stopped ` +
          `(deleted now): ${left.slice(0, 20).join(', ')}`,
      );
      const played = results.map((r, i) => `${placed[i][0]}: ${r.width}x${r.height}, ${r.frames} frames/2 s`);
      return `${played.join('; ')}; sockets A ${sockets[0]}, B ${sockets[1]}; ` +
        `${live.length} keys under the prefix while live, none ${Date.now() - since} ms after the nodes stopped`;
    },
  },

  {
    name: '14-turn-relay',
    title: 'through a real coturn with time-limited credentials: relay-only pages play, and new connections get fresh credentials',
    needs: ['turnserver'],
    async run(s) {
      const turn = await startTurnServer({ logFile: path.join(s.dir, 'turnserver.log') });
      s.onCleanup(async () => {
        const how = await turn.stop();
        if (how.killed) throw new Error('turnserver did not exit within 5 s of SIGTERM (it was killed)');
      });
      s.log(`turnserver at ${turn.url} (pid ${turn.pid})`);
      // The secret goes through the environment: never in the command line, where any user of
      // the machine sees it and where one starting with "-" would be read as a flag.
      await s.startServer({
        env: { TURN_SECRET: turn.secret },
        extraArgs: [`--turn-urls=${turn.url}`, `--turn-ttl-secs=${TURN_TTL_SECS}`],
      });
      await s.launchBrowser();

      // Every page may only use relay candidates, and every URL it requests is noted.
      const requested = [];
      const relayOnlyPage = async (p) => {
        await p.context.addInitScript(relayOnly);
        p.context.on('request', (request) => requested.push(`${p.role} ${request.method()} ${request.url()}`));
      };
      const channel = channelId('s14');
      const { broadcaster, link } = await goLive(s, channel, { setup: relayOnlyPage });
      const viewer = await watch(s, 'viewer-1', link, undefined, relayOnlyPage);
      const played = await expectPlaying(viewer.page, { role: viewer.role });
      const [viewerFeed] = await expectRelayed(viewer, turn, 1);
      const [first] = await expectRelayed(broadcaster, turn, 1);
      const fetched = await iceStateOf(broadcaster.page);
      assert(
        Math.abs(expiryOf(first.username) - (fetched.fetchedAt / 1000 + TURN_TTL_SECS)) <= TURN_EXPIRY_SLACK_SECS,
        `broadcaster: username ${first.username} does not expire ${TURN_TTL_SECS} s after the page fetched it (${fetched.fetchedAt})`,
      );
      assert(fetched.ttl === TURN_TTL_SECS, `broadcaster: /ice-servers said ttl ${fetched.ttl}, not ${TURN_TTL_SECS}`);

      // Before the credentials expire the page fetches new ones, and a new connection uses them.
      const refreshAfter = fetched.refreshAt - fetched.fetchedAt;
      assert(
        Math.abs(refreshAfter - TURN_TTL_SECS * 800) <= 1_000,
        `broadcaster: next fetch planned ${refreshAfter} ms after the last, expected at 80 % of ${TURN_TTL_SECS} s`,
      );
      await broadcaster.page.waitForFunction(() => window.broadcastApp.ice.fetches >= 2, null, {
        timeout: Math.max(0, fetched.refreshAt - Date.now()) + 10_000,
        polling: 500,
      }).catch(async () => {
        throw new Error(`broadcaster: no new /ice-servers fetch by 80 % of the TTL: ${JSON.stringify(await iceStateOf(broadcaster.page))}`);
      });
      const second = await watch(s, 'viewer-2', link, undefined, relayOnlyPage);
      await expectPlaying(second.page, { role: second.role });
      await expectRelayed(second, turn, 1);
      const feeds = await expectRelayed(broadcaster, turn, 2);
      const secondId = await second.page.evaluate(() => window.broadcastApp.myId);
      const fresh = feeds.find((feed) => feed.remoteId === secondId);
      assert(fresh, `broadcaster: no peer connection to viewer-2 (${secondId})`);
      assert(
        fresh.username !== first.username && expiryOf(fresh.username) >= expiryOf(first.username) + TURN_TTL_SECS / 2,
        `broadcaster: its connection to viewer-2 uses ${fresh.username}, not the credentials fetched after ${first.username}`,
      );

      // Nothing secret in a URL, on the screen, in a console or in the server's log.
      const secrets = [
        ['the TURN secret', turn.secret],
        ...[first, fresh, viewerFeed].flatMap((feed) => {
          const credential = coturnCredential(turn.secret, feed.username);
          return [['a TURN credential', credential], ['a TURN credential', encodeURIComponent(credential)]];
        }),
      ];
      for (const p of [broadcaster, viewer, second]) {
        const text = await p.page.evaluate(() => document.documentElement.innerText);
        for (const [what, value] of secrets) assert(!text.includes(value), `${p.role}: ${what} is on the screen`);
      }
      for (const [what, value] of [...secrets, ...[first, fresh].map((feed) => ['a TURN username', feed.username])]) {
        const inUrl = requested.find((line) => line.includes(value) || line.includes(encodeURIComponent(value)));
        assert(!inUrl, `${what} is in a requested URL: ${inUrl}`);
      }
      const consoles = readFileSync(s.consoleLog, 'utf8');
      const serverLog = readFileSync(path.join(s.dir, 'server.log'), 'utf8');
      for (const [what, value] of secrets) {
        assert(!consoles.includes(value), `${what} is in a page's console (${s.consoleLog})`);
        assert(!serverLog.includes(value), `${what} is in the server's log`);
      }

      // coturn itself allocated relays for the minted usernames, the first and the fresh one.
      const turnLog = path.join(s.dir, 'turnserver.log');
      const allocated = (username) => readFileSync(turnLog, 'utf8').includes(`user <${username}>: incoming packet ALLOCATE processed, success`);
      const deadline = Date.now() + 3_000;
      while (!(allocated(first.username) && allocated(fresh.username)) && Date.now() < deadline) await sleep(100);
      for (const feed of [first, fresh]) {
        assert(allocated(feed.username), `turnserver.log shows no successful ALLOCATE for ${feed.username}`);
      }
      const allocations = (readFileSync(turnLog, 'utf8').match(/ALLOCATE processed, success/g) || []).length;
      const fetches = requested.filter((line) => line.includes('/ice-servers')).length;
      return `${played.width}x${played.height}, ${played.frames} frames/2 s over relay/relay (${viewerFeed.protocol}); ` +
        `${fetches} /ice-servers fetches, refreshed after ${(refreshAfter / 1000).toFixed(0)} s; ` +
        `viewer-2 on fresh credentials; ${allocations} coturn allocations`;
    },
  },

  {
    name: '15-resume-offline',
    title: "the broadcaster's network drops for 5 s: with no one touching a page it resumes its channel and the viewers play again; a duplicated tab takes over",
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s15');
      const requested = [];
      const { broadcaster, link } = await goLive(s, channel, {
        setup: async (p) => {
          await p.context.addInitScript(countCameraRequests);
          noteRequests(p, requested);
        },
      });
      const viewers = await Promise.all([1, 2].map((i) => watch(s, `viewer-${i}`, link)));
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      await expectViewerCount(broadcaster, 2);
      await expectPeerCount(broadcaster, 2);
      const before = await broadcasterSession(broadcaster.page);
      assert(before.token && before.channelId === channel, `broadcaster: this tab keeps no resume token for ${channel} (sessionStorage)`);
      await broadcaster.page.evaluate(() => {
        window.__e2eLocal = document.querySelector('#local-video').srcObject;
      });

      // The broadcaster's network goes away for OFFLINE_MS (its own browser context only).
      await Promise.all(viewers.map((v) => recordStatus(v.page)));
      await Promise.all(viewers.map((v) => startDecodeMonitor(v.page)));
      await sleep(500);
      const offlineAt = Date.now();
      await broadcaster.context.setOffline(true);
      const lostAfter = await broadcaster.waitForState(['reconnecting', 'unreachable'], OFFLINE_MS);
      await sleep(Math.max(0, offlineAt + OFFLINE_MS - 1_000 - Date.now()));
      await Promise.all([broadcaster, ...viewers].map((p) => p.screenshot('offline')));
      await sleep(Math.max(0, offlineAt + OFFLINE_MS - Date.now()));
      await broadcaster.context.setOffline(false);
      const onlineAt = Date.now();

      // Nobody touches a page: the broadcaster resumes, and the viewers play from it again. A
      // viewer may never have left "live" (the picture over loopback kept flowing), so what is
      // waited for is frames decoded on a new connection, as its decode monitor sampled them.
      await broadcaster.waitForState('live', RESUME_PLAY_MS);
      const broadcasterBack = Date.now() - onlineAt;
      await Promise.all(viewers.map((v) => untilDecodingAfresh(v, {
        since: onlineAt,
        before: offlineAt,
        timeout: Math.max(0, onlineAt + RESUME_PLAY_MS + 5_000 - Date.now()),
      })));
      await Promise.all(viewers.map((v) => v.waitForState('live', 5_000)));
      const samples = await Promise.all(viewers.map((v) => decodeSamples(v.page)));
      const resumed = viewers.map((v, i) => {
        const own = samples[i];
        const ms = playAgainAfter(own, onlineAt, connectionBefore(own, offlineAt));
        assert(ms !== null, `${v.role}: decoded no frame on a new connection after the broadcaster came back online`);
        assert(ms <= RESUME_PLAY_MS, `${v.role}: played again only ${ms} ms after the broadcaster came back online (limit ${RESUME_PLAY_MS} ms)`);
        return { role: v.role, ms, frozen: longestDecodeGap(own, offlineAt) };
      });
      const after = await broadcasterSession(broadcaster.page);
      assert(after.id && after.id !== before.id, 'broadcaster: same public id after the network came back (its connection never dropped?)');
      assert(after.token && after.token !== before.token, 'broadcaster: the resume did not renew the resume token');
      assert(
        after.cameraRequests === before.cameraRequests,
        `broadcaster: asked for the camera again on resuming (${before.cameraRequests} → ${after.cameraRequests} getUserMedia calls)`,
      );
      const sameStream = await broadcaster.page.evaluate(() => {
        const now = document.querySelector('#local-video').srcObject;
        return now === window.__e2eLocal && now.getTracks().every((track) => track.readyState === 'live');
      });
      assert(sameStream, 'broadcaster: the camera stream was replaced or stopped by the resume');
      const played = await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      await expectViewerCount(broadcaster, 2);
      await expectPeerCount(broadcaster, 2);
      const newId = after.id;
      for (const v of viewers) {
        const feeder = await v.page.evaluate(() => window.broadcastApp.relay.upstream?.id);
        assert(feeder === newId, `${v.role}: fed by ${feeder}, not by the resumed broadcaster ${newId}`);
      }

      // Meanwhile the viewers kept their player, never thought the broadcast had ended, and said
      // the broadcaster was reconnecting if the server noticed it was gone.
      const noticed = [];
      for (const [i, v] of viewers.entries()) {
        const history = (await statusHistory(v.page)).filter(([time]) => time >= offlineAt);
        const bad = history.find(([, state, , shown]) => !shown || ['broadcaster-left', 'not-found', 'error', 'idle'].includes(state));
        assert(!bad, `${v.role}: while the broadcaster was away it showed ${JSON.stringify(bad)}`);
        const waiting = history.find(([, state]) => state === 'broadcaster-reconnecting');
        if (waiting) {
          assert(/Broadcaster reconnecting/.test(waiting[2]), `${v.role}: status "${waiting[2]}" while the broadcaster reconnects`);
          noticed.push(`${v.role} after ${waiting[0] - offlineAt} ms`);
        }
        resumed[i].shown = history.map(([, state]) => state).filter((st, k, all) => st !== all[k - 1]).join('>');
      }
      await expectSecretHidden(s, 'a resume token', before.token, [broadcaster, ...viewers], requested);
      await expectSecretHidden(s, 'a resume token', after.token, [broadcaster, ...viewers], requested);

      // A duplicate of the tab (sessionStorage is copied with it) presses Start: the broadcast
      // moves there, the first tab stops and says so, and the viewers follow.
      const stored = await broadcaster.page.evaluate(() => sessionStorage.getItem('broadcast.resume'));
      const { broadcaster: duplicate } = await goLive(s, channel, {
        role: 'duplicate-tab',
        setup: async (p) => {
          await p.context.addInitScript((value) => {
            try {
              if (location.origin !== 'null' && !sessionStorage.getItem('broadcast.resume')) {
                sessionStorage.setItem('broadcast.resume', value);
              }
            } catch {
              // about:blank has no storage.
            }
          }, stored);
          noteRequests(p, requested);
        },
      });
      await broadcaster.waitForState('replaced', 5_000);
      const replaced = await broadcaster.status();
      assert(/continues on another device/.test(replaced.text), `broadcaster: status "${replaced.text}" after another tab took over`);
      const released = await broadcaster.page.evaluate(() => ({
        preview: Boolean(document.querySelector('#local-video').srcObject),
        peers: window.broadcastApp.peers.size,
        token: sessionStorage.getItem('broadcast.resume'),
      }));
      assert(!released.preview && released.peers === 0 && !released.token, `broadcaster: still holds ${JSON.stringify({ ...released, token: Boolean(released.token) })} after the takeover`);
      // A viewer still shows "live" from the first tab until it hears of the takeover: what is
      // waited for is a viewer playing from the new tab.
      const duplicateId = await duplicate.page.evaluate(() => window.broadcastApp.myId);
      await Promise.all(viewers.map((v) => untilFedBy(v, duplicateId, RESUME_PLAY_MS)));
      for (const v of viewers) {
        await expectPlaying(v.page, { role: v.role });
        const feeder = await v.page.evaluate(() => window.broadcastApp.relay.upstream?.id);
        assert(feeder === duplicateId, `${v.role}: fed by ${feeder}, not by the tab that took over (${duplicateId})`);
      }
      await expectPeerCount(duplicate, 2);

      const times = resumed.map((r) => `${r.role} ${r.ms} ms (no new frame for ${r.frozen} ms; ${r.shown})`).join(', ');
      return `offline noticed by the broadcaster after ${lostAfter} ms; back online: broadcaster live after ${broadcasterBack} ms, ` +
        `viewers played again after ${times}; "broadcaster reconnecting" shown: ${noticed.length ? noticed.join(', ') : 'no (the server had not noticed the drop)'}; ` +
        `${played[0].width}x${played[0].height}, camera asked once; duplicated tab took over, first tab "${replaced.text}"`;
    },
  },

  {
    name: '16-private-channel',
    title: 'a private channel is not listed; its link asks for the password, a wrong one is refused, the right one plays',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s16');
      const password = `pw ${randomBytes(6).toString('hex')}`;
      const requested = [];
      const { broadcaster, link } = await goLive(s, channel, { password, setup: async (p) => noteRequests(p, requested) });
      assert(!link.includes(password) && !link.includes(encodeURIComponent(password)), `broadcaster: the viewer link ${link} holds the password`);
      assert(await broadcaster.page.isDisabled('#channel-password-input'), 'broadcaster: the password can still be changed while live');
      const hint = (await broadcaster.page.textContent('#channel-password-hint')).trim();
      assert(/private/i.test(hint) && /not listed/.test(hint), `broadcaster: the password hint while live says "${hint}"`);

      // A public channel beside it is listed; the private one is not.
      const publicChannel = channelId('s16pub');
      await goLive(s, publicChannel, { role: 'public-broadcaster', contextOptions: SMALL_WINDOW, camera: SMALL_CAMERA });
      const lister = await s.participant('list-viewer');
      await lister.goto(`${s.server.url}?viewer=true`);
      await lister.waitForState('idle');
      await lister.page.locator(`#channel-list li[data-channel-id="${publicChannel}"]`).waitFor({ state: 'visible', timeout: 5_000 });
      const listed = await lister.page.$$eval('#channel-list li', (lis) => lis.map((li) => li.dataset.channelId));
      assert(!listed.includes(channel), `list-viewer: the private channel ${channel} is listed: ${JSON.stringify(listed)}`);

      // The link asks for the password.
      const viewer = await s.participant('viewer');
      noteRequests(viewer, requested);
      await viewer.goto(link);
      await viewer.waitForState('password', 10_000);
      const page = viewer.page;
      assert(await page.isVisible('#password-form'), 'viewer: no password form for a private channel');
      assert(await page.isHidden('#viewer-view'), 'viewer: the player shows before the password was given');
      const asked = await viewer.status();
      await viewer.screenshot('asked');

      // A wrong one: the server's message, and the form again.
      await page.fill('#password-input', `${password}-wrong`);
      await page.click('#password-submit');
      await page.waitForFunction(
        () => document.querySelector('#password-error')?.textContent.includes('password is missing or wrong'),
        null,
        { timeout: 5_000 },
      ).catch(async () => {
        const shown = await page.textContent('#password-error').catch(() => '(missing)');
        throw new Error(`viewer: #password-error shows "${shown}" after a wrong password, expected the server's message`);
      });
      await viewer.waitForState('password', 2_000);
      assert(await page.isVisible('#password-form'), 'viewer: the password form is gone after a wrong password');
      const refused = (await page.textContent('#password-error')).trim();
      await viewer.screenshot('wrong-password');

      // The right one plays.
      await page.fill('#password-input', password);
      await page.click('#password-submit');
      await viewer.waitForState('live', 25_000);
      assert(await page.isHidden('#password-form'), 'viewer: the password form still shows while watching');
      const r = await expectPlaying(page, { role: viewer.role });
      await expectViewerCount(broadcaster, 1);
      await expectSecretHidden(s, 'the password', password, [broadcaster, viewer, lister], requested);
      return `unlisted (list: ${listed.length} other channel); asked: "${asked.text}"; wrong: "${refused}"; right: ${r.width}x${r.height}, ${r.frames} frames/2 s`;
    },
  },

  {
    name: '17-csp-check',
    title: "the page is served with a Content-Security-Policy, and the suite's check catches a violation of it (an injected inline script)",
    async run(s) {
      await serverAndBrowser(s);
      const viewer = await s.participant('viewer');
      const response = await viewer.goto(`${s.server.url}?viewer=true`);
      await viewer.waitForState('idle');
      const policy = (await response.allHeaders())['content-security-policy'] ?? '';
      const scriptSrc = /(?:^|;)\s*script-src([^;]*)/.exec(policy)?.[1].trim();
      assert(
        scriptSrc !== undefined && !/'unsafe-inline'|'unsafe-eval'/.test(scriptSrc),
        `the page's Content-Security-Policy does not forbid inline scripts: "${policy}"`,
      );
      assert(!s.cspViolations.length, `the page violated its policy while loading:\n  ${s.cspViolations.join('\n  ')}`);

      // A script injected into the page, as an XSS would: blocked, and reported by the checker.
      const before = { reports: s.cspViolations.length, console: s.cspConsole.length };
      await viewer.page.evaluate(() => {
        const script = document.createElement('script');
        script.textContent = 'window.__e2eInjectedRan = true;';
        document.body.append(script);
      });
      const caught = await newCspViolations(s, before);
      const ran = await viewer.page.evaluate(() => window.__e2eInjectedRan === true);
      assert(!ran, 'an injected inline script ran in the page');
      assert(
        caught.reports.length === 1 && caught.console.length === 1,
        `the checker collected ${caught.reports.length} reports and ${caught.console.length} console messages for one injected script: ${JSON.stringify(caught)}`,
      );
      let failure = null;
      try {
        s.assertClean();
      } catch (err) {
        failure = err.message;
      }
      assert(
        failure && /Content-Security-Policy violations/.test(failure) && /script-src/.test(failure) && /inline/.test(failure),
        `the scenario's checks did not fail on the violation (they said ${JSON.stringify(failure)})`,
      );
      // The console alone catches it too (a violation in a worker has no page listener).
      const reports = s.cspViolations.splice(before.reports);
      try {
        s.assertClean();
        failure = null;
      } catch (err) {
        failure = err.message;
      }
      assert(
        failure && /console messages about the Content-Security-Policy/.test(failure),
        `the checks did not fail on the console's message alone (they said ${JSON.stringify(failure)})`,
      );
      // That violation was this check's own doing; any other still fails the scenario.
      s.cspConsole.splice(before.console);
      return `policy "${policy}"; an injected inline script was blocked and failed the checks: ${reports[0]}`;
    },
  },

  {
    name: '18-screen-share',
    title: 'the broadcaster switches to its screen and back (and the browser ends a share) while three viewers, one through a relay, keep their connections and show each switch within 1 s',
    async run(s) {
      await s.startServer({ extraArgs: RELAY_TREE_ARGS });
      await s.launchBrowser();
      const channel = channelId('s18');
      const { broadcaster, link } = await goLive(s, channel, {
        contextOptions: SMALL_WINDOW, camera: WIDE_CAMERA, screen: SMALL_SCREEN,
      });
      const viewers = await Promise.all([1, 2, 3].map((i) => watch(s, `viewer-${i}`, link, SMALL_WINDOW)));
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      const tree = await relayTreeOf(broadcaster, viewers);
      expectConnectedTree(tree);
      assert(tree.nodes.some((n) => n.depth >= 2), `no viewer is fed through a relay: ${tree.shape}`);
      const depthOf = new Map(tree.nodes.map((n) => [n.role, n.depth]));
      const page = broadcaster.page;
      const button = page.locator('#screen-btn');
      const label = async () => (await button.textContent()).trim();
      assert(await button.isEnabled() && (await label()) === 'Share screen', `broadcaster: #screen-btn says "${await label()}" (enabled: ${await button.isEnabled()}) while live`);

      // A cancelled picker changes nothing, and the page says so.
      await page.evaluate(() => {
        window.__e2eCancelPicker = true;
      });
      await button.click();
      await page.waitForFunction(() => /cancelled/i.test(document.querySelector('#media-status')?.textContent), null, { timeout: 5_000 })
        .catch(async () => {
          throw new Error(`broadcaster: a cancelled picker is not reported: #media-status says "${await page.textContent('#media-status')}"`);
        });
      const cancelled = (await page.textContent('#media-status')).trim();
      assert(
        (await page.evaluate(() => window.broadcastApp.source.kind)) === 'camera' && (await label()) === 'Share screen' && (await button.isEnabled()),
        `broadcaster: after a cancelled picker the page no longer sends its camera, or its button says "${await label()}"`,
      );

      const everyone = [broadcaster, ...viewers];
      await noteConnections(everyone);
      await Promise.all(viewers.map((v) => startShapeMonitor(v)));
      for (const v of viewers) {
        const first = await v.page.evaluate(() => window.__e2eShapes[0]);
        assert(first[3], `${v.role}: shows ${first[1]}x${first[2]} frames before the switch, not the 16:9 camera`);
      }
      const withDepth = (times) => times.map((t) => ({ ...t, role: `${t.role}@${depthOf.get(t.role)}` }));

      const toScreen = await switchSource(broadcaster, 'screen', () => button.click());
      const screenTimes = withDepth(await untilShape(viewers, { wide: false, since: toScreen }));
      await expectSending(broadcaster, 'screen');
      assert((await label()) === 'Back to camera', `broadcaster: #screen-btn says "${await label()}" while sharing`);
      const sharing = (await page.textContent('#media-status')).trim();
      assert(/sharing your screen/.test(sharing), `broadcaster: #media-status says "${sharing}" while sharing`);
      const preview = await page.evaluate(() => {
        const v = document.querySelector('#local-video');
        return v.videoWidth / v.videoHeight;
      });
      assert(preview < WIDE_ASPECT, `broadcaster: its preview does not show the screen (aspect ${preview.toFixed(2)})`);
      await expectSameConnections(everyone, 'after the switch to the screen');

      const toCamera = await switchSource(broadcaster, 'camera', () => button.click());
      const cameraTimes = withDepth(await untilShape(viewers, { wide: true, since: toCamera }));
      await expectSending(broadcaster, 'camera');
      assert((await label()) === 'Share screen', `broadcaster: #screen-btn says "${await label()}" back on the camera`);
      await expectSameConnections(everyone, 'after the switch back to the camera');

      // The browser's own "Stop sharing" ends the screen's track: the page goes back to the camera.
      const again = await switchSource(broadcaster, 'screen', () => button.click());
      const againTimes = withDepth(await untilShape(viewers, { wide: false, since: again }));
      const ended = await switchSource(broadcaster, 'camera', () => page.evaluate(() => {
        const pc = [...window.broadcastApp.peers.values()][0];
        pc.getSenders().find((sender) => sender.track?.kind === 'video').track.dispatchEvent(new Event('ended'));
      }));
      const endedTimes = withDepth(await untilShape(viewers, { wide: true, since: ended }));
      const endedText = (await page.textContent('#media-status')).trim();
      assert(/ended/.test(endedText), `broadcaster: #media-status says "${endedText}" after the browser ended the share`);
      await expectSending(broadcaster, 'camera');
      await expectSameConnections(everyone, 'after the browser ended the share');
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));

      const summary = [
        `to screen: ${expectSwitchSeen(screenTimes, 'the screen')}`,
        `back to camera: ${expectSwitchSeen(cameraTimes, 'the camera')}`,
        `screen again: ${expectSwitchSeen(againTimes, 'the screen')}`,
        `share ended by the browser: ${expectSwitchSeen(endedTimes, 'the camera')}`,
      ];
      return `${tree.shape}; no offer, same connections; ${summary.join('; ')}; cancelled picker: "${cancelled}"`;
    },
  },

  {
    name: '19-local-recording',
    title: 'the broadcaster records about 3 s across a switch to its screen; Stop downloads one WebM file with a video and an audio track',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s19');
      const { broadcaster } = await goLive(s, channel, { camera: WIDE_CAMERA, screen: SMALL_SCREEN });
      const page = broadcaster.page;
      const record = page.locator('#record-btn');
      const label = async () => (await record.textContent()).trim();
      assert(await record.isEnabled() && (await label()) === 'Record', `broadcaster: #record-btn says "${await label()}" (enabled: ${await record.isEnabled()}) while live`);
      assert(await page.isHidden('#recording-indicator'), 'broadcaster: the recording indicator shows before recording');

      await record.click();
      await page.waitForFunction(
        () => window.broadcastApp.recording.state === 'recording' && !document.querySelector('#recording-indicator').hidden,
        null,
        { timeout: 5_000 },
      ).catch(async () => {
        throw new Error(`broadcaster: not recording after Record: ${JSON.stringify(await page.evaluate(() => window.broadcastApp.recording))}, "${await page.textContent('#media-status')}"`);
      });
      assert((await label()) === 'Stop recording', `broadcaster: #record-btn says "${await label()}" while recording`);
      const { mimeType } = await page.evaluate(() => window.broadcastApp.recording);

      // About 1.5 s of camera, then the screen, then more: the recording goes on across the switch.
      const elapsed = (ms) => page.waitForFunction((ms) => Date.now() - window.broadcastApp.recording.startedAt >= ms, ms, { timeout: 15_000, polling: 100 });
      await elapsed(1_500);
      await switchSource(broadcaster, 'screen', () => page.click('#screen-btn'));
      await elapsed(3_000);
      // The indicator counts the time.
      await page.waitForFunction(() => /^0:0[3-9]$/.test(document.querySelector('#recording-time').textContent), null, { timeout: 5_000 })
        .catch(async () => {
          throw new Error(`broadcaster: the recording indicator shows "${await page.textContent('#recording-indicator')}" after 3 s`);
        });
      const shown = (await page.textContent('#recording-indicator')).replace(/\s+/g, ' ').trim();
      await broadcaster.screenshot('recording');

      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 15_000 }), record.click()]);
      const name = download.suggestedFilename();
      assert(
        new RegExp(`^broadcast-${channel}-\\d{8}-\\d{6}\\.webm$`).test(name),
        `the download is named "${name}", expected broadcast-${channel}-<yyyymmdd-hhmmss>.webm`,
      );
      const file = path.join(s.dir, name);
      await download.saveAs(file);
      const bytes = readFileSync(file);
      const magic = bytes.subarray(0, 4).toString('hex');
      assert(magic === '1a45dfa3', `${name} starts with ${magic}, not the EBML header 1a45dfa3`);
      const webm = readWebm(bytes);
      assert(webm.docType === 'webm', `${name}: DocType "${webm.docType}", expected "webm"`);
      const video = webm.tracks.filter((t) => t.type === 1);
      const audio = webm.tracks.filter((t) => t.type === 2);
      assert(
        video.length === 1 && /^V_VP[89]$/.test(video[0].codec) && audio.length === 1 && audio[0].codec === 'A_OPUS',
        `${name}: tracks ${JSON.stringify(webm.tracks)}, expected one VP8/VP9 video and one Opus audio track`,
      );
      assert(bytes.length > 20_000, `${name} holds only ${bytes.length} bytes for 3 s`);

      const after = await page.evaluate(() => ({
        recording: window.broadcastApp.recording,
        href: document.querySelector('#recording-link').href,
        download: document.querySelector('#recording-link').download,
        linkHidden: document.querySelector('#recording-link').hidden,
        indicatorHidden: document.querySelector('#recording-indicator').hidden,
        status: document.querySelector('#media-status').textContent,
      }));
      assert(
        after.recording.state === 'inactive' && after.recording.bytes === bytes.length && after.recording.fileName === name,
        `broadcaster: the page's recording says ${JSON.stringify(after.recording)} after the ${bytes.length}-byte download ${name}`,
      );
      assert(after.recording.switches >= 1, `broadcaster: the recording did not follow the switch to the screen: ${JSON.stringify(after.recording)}`);
      assert(
        after.href.startsWith('blob:') && after.download === name && !after.linkHidden && after.indicatorHidden && after.status.includes(name),
        `broadcaster: after Stop recording the page shows ${JSON.stringify(after)}`,
      );
      assert((await label()) === 'Record', `broadcaster: #record-btn says "${await label()}" after the recording`);

      // The file plays back, the camera's frames then the screen's: one recording across the switch.
      const played = await playback(page, after.href);
      assert(
        played.sizes.length === 1 && played.sources.join(' then ') === 'camera then screen',
        `${name} plays back ${JSON.stringify(played)}: expected one frame size, the camera's frames then the screen's (with black bars)`,
      );
      await expectViewerCount(broadcaster, 0);
      assert((await broadcaster.status()).state === 'live', 'broadcaster: no longer live after recording');

      const tracks = webm.tracks.map((t) => t.codec).join(' + ');
      return `${name}: ${bytes.length} bytes, ${mimeType}, EBML header ${magic}, DocType ${webm.docType}, tracks ${tracks}; ` +
        `played back ${played.sizes[0]} frames, ${played.sources.join(' then ')}; indicator "${shown}"`;
    },
  },

  {
    name: '20-chat-history',
    title: 'the broadcaster writes and viewers see it marked; a late viewer sees the earlier messages first, then live ones',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s20');
      const { broadcaster, link } = await goLive(s, channel);
      const early = await watch(s, 'viewer-early', link);

      // The broadcaster's chat input is open, and what it writes reaches the viewer, marked.
      const welcome = 'Welcome, everyone!';
      assert(!(await broadcaster.page.isDisabled('#chat-input')), 'broadcaster: #chat-input is disabled while live');
      await broadcaster.page.fill('#chat-input', welcome);
      await broadcaster.page.click('#chat-send');
      for (const p of [broadcaster, early]) {
        await waitForChatLine(p.page, { role: p.role, sender: 'Broadcaster', text: welcome });
      }
      const marked = (page) =>
        page.$$eval('#chat-log .chat-msg', (items) =>
          items.map((li) => ({
            text: li.querySelector('.chat-text')?.textContent,
            fromBroadcaster: li.classList.contains('from-broadcaster'),
            history: li.classList.contains('history'),
          })),
        );
      const seenEarly = await marked(early.page);
      assert(
        seenEarly.some((m) => m.text === welcome && m.fromBroadcaster),
        `viewer-early: the broadcaster's message is not marked .from-broadcaster: ${JSON.stringify(seenEarly)}`,
      );
      const question = 'Can everyone hear the sound?';
      await early.page.fill('#chat-input', question);
      await early.page.click('#chat-send');
      for (const p of [broadcaster, early]) {
        await waitForChatLine(p.page, { role: p.role, sender: 'Viewer-', text: question });
      }

      // A viewer who opens the link now gets both, before anything said after it joined.
      const late = await watch(s, 'viewer-late', link);
      for (const text of [welcome, question]) {
        await waitForChatLine(late.page, { role: late.role, sender: null, text });
      }
      const answer = 'Loud and clear.';
      await broadcaster.page.fill('#chat-input', answer);
      await broadcaster.page.click('#chat-send');
      await waitForChatLine(late.page, { role: late.role, sender: 'Broadcaster', text: answer });
      const seenLate = await marked(late.page);
      const order = seenLate.map((m) => m.text);
      assert(
        JSON.stringify(order) === JSON.stringify([welcome, question, answer]),
        `viewer-late: the chat shows ${JSON.stringify(order)}, expected the history (each message once) then the live answer`,
      );
      assert(
        seenLate[0].fromBroadcaster && seenLate[0].history && !seenLate[1].fromBroadcaster && seenLate[1].history &&
          seenLate[2].fromBroadcaster && !seenLate[2].history,
        `viewer-late: marks ${JSON.stringify(seenLate)}`,
      );
      await late.screenshot('history-and-live');
      return `late viewer saw ${seenLate.length} lines: 2 from the history, 1 live; broadcaster's lines marked`;
    },
  },
  {
    name: '21-embed',
    title: 'a site of --embed-origins frames the player, which plays muted and relays to a viewer, and the chat; another site is refused',
    async run(s) {
      // Two sites on other origins than the server: the first is listed, the second is not.
      const frameHtml = (frames) =>
        `<!doctype html><meta charset="utf-8"><title>A blog</title><h1>Our live show</h1>${frames}`;
      const pages = {};
      const listed = await startHtmlServer(pages);
      const other = await startHtmlServer(pages);
      for (const site of [listed, other]) {
        s.onCleanup(site.close);
        s.allowedOrigins.add(site.origin);
      }
      // One direct place: the embedded player takes it, so the next viewer is relayed through it.
      await s.startServer({ extraArgs: [`--embed-origins=${listed.origin}`, '--relay-direct=1'] });
      await s.launchBrowser();
      const channel = channelId('s21');
      const unknown = channelId('s21n');
      const { broadcaster, link } = await goLive(s, channel);
      const embedUrl = `${s.server.origin}/embed/${channel}`;
      pages['/player'] = frameHtml(
        `<iframe id="player" src="${embedUrl}" width="640" height="360" allow="autoplay"></iframe>` +
          `<iframe id="unknown" src="${s.server.origin}/embed/${unknown}" width="320" height="180"></iframe>`,
      );
      pages['/chat'] = frameHtml(`<iframe id="chat" src="${embedUrl}/chat" width="360" height="480"></iframe>`);

      const frameOf = async (participant, id) => {
        const handle = await participant.page.waitForSelector(`iframe#${id}`);
        const frame = await handle.contentFrame();
        assert(frame, `${participant.role}: iframe#${id} has no frame`);
        return frame;
      };

      // The listed site: the player plays, muted, with its Unmute button and nothing else.
      const site = await s.participant('embed-site');
      await site.goto(`${listed.origin}/player`);
      const player = await frameOf(site, 'player');
      const r = await expectPlaying(player, { role: 'embed-player', timeout: 25_000 });
      const shown = await player.evaluate(() => ({
        muted: document.querySelector('#remote-video').muted,
        unmute: !document.querySelector('#unmute-btn').hidden && document.querySelector('#unmute-btn').offsetParent !== null,
        topbar: document.querySelector('.topbar').offsetParent !== null,
        chat: document.querySelector('#chat-panel').offsetParent !== null,
        picker: document.querySelector('#channel-picker').offsetParent !== null,
        state: document.body.dataset.state,
        depth: window.broadcastApp.relay?.upstream?.depth,
      }));
      assert(
        shown.muted && shown.unmute && !shown.topbar && !shown.chat && !shown.picker && shown.depth === 1,
        `embed-player: expected a muted player with its Unmute button, fed by the broadcaster, and nothing else: ${JSON.stringify(shown)}`,
      );
      await player.click('#unmute-btn');
      assert(!(await player.evaluate(() => document.querySelector('#remote-video').muted)), 'embed-player: Unmute left the video muted');

      // The relay tree works inside the frame: the next viewer is fed by the embedded player.
      const viewer = await watch(s, 'viewer', link);
      await expectPlaying(viewer.page, { role: viewer.role });
      const depth = await viewer.page.evaluate(() => window.broadcastApp.relay?.upstream?.depth);
      assert(depth === 2, `viewer: fed at depth ${depth}, expected 2 (relayed by the embedded player)`);
      const children = await player.evaluate(() => window.broadcastApp.relay.children.size);
      assert(children === 1, `embed-player: relays to ${children} viewers, expected 1`);

      // An unknown channel says so in the player.
      const missing = await frameOf(site, 'unknown');
      await missing.waitForFunction(
        () => /not found/.test(document.querySelector('#remote-placeholder')?.textContent || ''),
        null,
        { timeout: 10_000 },
      ).catch(async () => {
        const text = await missing.evaluate(() => document.querySelector('#remote-placeholder')?.textContent);
        throw new Error(`embed-unknown: the player says "${text}", not that the channel is not found`);
      });

      // The chat embed: the broadcaster's words arrive, and it plays nothing.
      const chatSite = await s.participant('embed-chat-site');
      await chatSite.goto(`${listed.origin}/chat`);
      const chat = await frameOf(chatSite, 'chat');
      await chat.waitForFunction(() => !document.querySelector('#chat-panel').hidden, null, { timeout: 10_000 });
      const hello = 'Hello, blog readers!';
      await broadcaster.page.fill('#chat-input', hello);
      await broadcaster.page.click('#chat-send');
      await waitForChatLine(chat, { role: 'embed-chat', sender: 'Broadcaster', text: hello });
      const chatPeers = await chat.evaluate(() => window.broadcastApp.peers.size);
      assert(chatPeers === 0, `embed-chat: ${chatPeers} peer connections, expected none`);

      // A site not listed: the browser refuses to show the embed in its frame.
      const refusedSite = await s.participant('unlisted-site');
      const refusals = [];
      refusedSite.page.on('console', (msg) => {
        if (/frame-ancestors/.test(msg.text())) refusals.push(msg.text());
      });
      await refusedSite.goto(`${other.origin}/player`);
      const deadline = Date.now() + 10_000;
      while (refusals.length === 0 && Date.now() < deadline) await sleep(100);
      assert(refusals.length > 0, 'unlisted-site: no frame-ancestors refusal in the console');
      const blocked = await frameOf(refusedSite, 'player');
      const ran = await blocked.evaluate(() => Boolean(window.broadcastApp)).catch(() => false);
      assert(!ran, 'unlisted-site: the embed ran in the frame of a site not in --embed-origins');
      // Those refusals are the point of this step, not a fault of the page.
      s.cspConsole = s.cspConsole.filter((line) => !(line.startsWith('unlisted-site:') && /frame-ancestors/.test(line)));
      s.cspViolations = s.cspViolations.filter((line) => !(line.startsWith('unlisted-site:') && /frame-ancestors/.test(line)));
      await site.screenshot('embedded');
      return `embedded player ${r.width}x${r.height}, ${r.frames} frames/2 s, relays to 1; chat embed got the broadcaster's line; unlisted site refused`;
    },
  },
  {
    name: '22-invite-link',
    title: "a private channel's invite link plays without the password; after Revoke it asks for the password again",
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s22');
      const password = `pw ${randomBytes(6).toString('hex')}`;
      const requested = [];
      const { broadcaster, link } = await goLive(s, channel, { password, setup: async (p) => noteRequests(p, requested) });
      const bpage = broadcaster.page;
      assert(await bpage.isVisible('#invite-area'), 'broadcaster: no invite links for a private channel');
      await bpage.click('#copy-invite-btn');
      await bpage.waitForFunction(() => document.querySelector('#invite-link')?.value, null, { timeout: 5_000 });
      const inviteLink = await bpage.inputValue('#invite-link');
      const parsed = new URL(inviteLink);
      const token = new URLSearchParams(parsed.hash.slice(1)).get('invite');
      assert(
        parsed.origin === s.server.origin && parsed.search === new URL(link).search && token,
        `broadcaster: the invite link is "${inviteLink}", expected the viewer link with #invite=<token>`,
      );

      // The invite link plays at once: no password asked.
      const guest = await s.participant('invited-viewer');
      noteRequests(guest, requested);
      await guest.goto(inviteLink);
      await guest.waitForState('live', 25_000);
      const r = await expectPlaying(guest.page, { role: guest.role });
      assert(await guest.page.isHidden('#password-form'), 'invited-viewer: the password form shows');
      await expectViewerCount(broadcaster, 1);
      const inUrl = requested.find((line) => line.includes(token));
      assert(!inUrl, `the invitation is in a requested URL: ${inUrl}`);
      const serverLog = readFileSync(path.join(s.dir, 'server.log'), 'utf8');
      assert(!serverLog.includes(token), "the invitation is in the server's log");

      // Revoked: the field empties; the old link now asks for the password, with the reason.
      await bpage.click('#rotate-invites-btn');
      await bpage.waitForFunction(() => document.querySelector('#invite-link')?.value === '', null, { timeout: 5_000 });
      const late = await s.participant('late-viewer', SMALL_WINDOW);
      await late.goto(inviteLink);
      await late.waitForState('password', 10_000);
      const error = (await late.page.textContent('#password-error')).trim();
      assert(/invitation is invalid, expired or revoked/.test(error), `late-viewer: #password-error says "${error}"`);
      await late.page.fill('#password-input', password);
      await late.page.click('#password-submit');
      await late.waitForState('live', 25_000);
      await expectViewerCount(broadcaster, 2);
      assert(await guest.page.evaluate(() => window.broadcastApp.relay?.upstream?.playing), 'invited-viewer: stopped playing after the rotation');
      return `invited viewer ${r.width}x${r.height}, ${r.frames} frames/2 s; revoked link asked: "${error}"`;
    },
  },
  {
    name: '23-relay-capacity',
    title: 'a relay that drops its capacity to 0 loses its children; each plays again from another feeder within 2 s, and it gets no new child',
    async run(s) {
      await s.startServer({ extraArgs: RELAY_TREE_ARGS });
      await s.launchBrowser();
      const channel = channelId('s23');
      const { broadcaster, link } = await goLive(s, channel, { contextOptions: SMALL_WINDOW, camera: SMALL_CAMERA });
      // One after the other, so the tree is known: viewer-1 is fed by the broadcaster and
      // feeds the other two.
      const viewers = [];
      for (const i of [1, 2, 3]) viewers.push(await watch(s, `viewer-${i}`, link, SMALL_WINDOW));
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));
      const tree = await relayTreeOf(broadcaster, viewers);
      expectConnectedTree(tree);
      const relayNode = tree.nodes.find((n) => n.children.length === 2);
      assert(relayNode && relayNode.depth === 1, `no depth-1 relay feeding two viewers: ${tree.shape}`);
      const relayPage = relayNode.participant.page;
      const children = relayNode.children.map((id) => tree.byId.get(id));
      await Promise.all(children.map((c) => startDecodeMonitor(c.participant.page)));
      await sleep(1_000);

      // The relay can feed nobody any more (as when its uplink gives out): the server hands
      // its children to another feeder, and tells it to close their connections.
      const cutAt = Date.now();
      await relayPage.evaluate(() => window.broadcastApp.relay.limit(0));
      await relayPage.waitForFunction(() => window.broadcastApp.relay.children.size === 0, null, { timeout: 5_000 })
        .catch(() => {
          throw new Error(`${relayNode.role}: still feeds viewers 5 s after dropping its capacity to 0`);
        });
      await sleep(Math.max(0, cutAt + 4_000 - Date.now()));
      const samples = await Promise.all(children.map((c) => decodeSamples(c.participant.page)));
      const back = children.map((c, i) => {
        const ms = playAgainAfter(samples[i], cutAt, connectionBefore(samples[i], cutAt));
        assert(ms !== null, `${c.role}: no frames from a new feeder within 4 s after ${relayNode.role} dropped its capacity`);
        assert(ms <= REPARENT_PLAY_MS, `${c.role}: played again only ${ms} ms after ${relayNode.role} dropped its capacity (limit ${REPARENT_PLAY_MS} ms)`);
        return `${c.role} ${ms} ms`;
      });

      // Healed: everybody reaches the broadcaster and plays, the relay too, and feeds nobody.
      await relayPage.waitForFunction(() => window.broadcastApp.relay.upstream?.playing, null, { timeout: 10_000 })
        .catch(() => {
          throw new Error(`${relayNode.role}: does not play again after dropping its capacity`);
        });
      const status = await relayNode.participant.status();
      assert(/not passing it on/.test(status.text), `${relayNode.role}: the status line says "${status.text}"`);
      await watchChildren(relayPage);
      const healed = await relayTreeOf(broadcaster, viewers);
      expectConnectedTree(healed);
      await Promise.all(viewers.map((v) => expectPlaying(v.page, { role: v.role })));

      // A newcomer is never hung below it.
      const late = await watch(s, 'viewer-4', link, SMALL_WINDOW);
      await expectPlaying(late.page, { role: late.role });
      const withLate = await relayTreeOf(broadcaster, [...viewers, late]);
      expectConnectedTree(withLate);
      const lateNode = withLate.nodes.find((n) => n.participant === late);
      assert(lateNode.feeder !== relayNode.id, `viewer-4 is fed by ${relayNode.role}, which can feed nobody: ${withLate.shape}`);
      const most = await relayPage.evaluate(() => window.__e2eMostChildren);
      assert(most === 0, `${relayNode.role}: fed ${most} viewers after dropping its capacity to 0`);
      return `${relayNode.role} dropped to 0: ${back.join(', ')}; then ${withLate.shape}`;
    },
  },

  {
    name: '24-phone-never-relays',
    title: 'a viewer whose page opens as a phone (mobile user agent, touch) watches but never feeds another viewer',
    async run(s) {
      // A short wait: with the phone holding the broadcaster's only direct place, the next
      // viewer gets the broadcaster after it (over D), and the third that viewer.
      await s.startServer({ extraArgs: ['--relay-direct=1', '--relay-fanout=2', '--relay-wait-ms=3000'] });
      await s.launchBrowser();
      const channel = channelId('s24');
      const { broadcaster, link } = await goLive(s, channel, { contextOptions: SMALL_WINDOW, camera: SMALL_CAMERA });
      const phone = await watch(s, 'phone', link, PHONE);
      await watchChildren(phone.page);
      const offered = await phone.page.evaluate(() => ({
        capacity: window.broadcastApp.relay.capacity,
        why: window.broadcastApp.relay.capacityWhy,
      }));
      assert(offered.capacity === 0, `phone: offers to feed ${offered.capacity} viewers (${offered.why})`);
      const status = await phone.status();
      assert(/not passing it on \(on a phone or tablet\)/.test(status.text), `phone: the status line says "${status.text}"`);

      const desktops = [];
      for (const i of [1, 2]) desktops.push(await watch(s, `desktop-${i}`, link, SMALL_WINDOW));
      const everyone = [phone, ...desktops];
      await Promise.all(everyone.map((v) => expectPlaying(v.page, { role: v.role })));
      const tree = await relayTreeOf(broadcaster, everyone);
      expectConnectedTree(tree);
      const phoneNode = tree.nodes.find((n) => n.participant === phone);
      assert(phoneNode.depth === 1, `phone: not fed by the broadcaster: ${tree.shape}`);
      for (const n of tree.nodes) {
        assert(n.feeder !== phoneNode.id, `${n.role} is fed by the phone: ${tree.shape}`);
      }
      const most = await phone.page.evaluate(() => window.__e2eMostChildren);
      assert(most === 0, `phone: fed ${most} viewers`);
      return `${tree.shape}; phone: "${status.text}"`;
    },
  },
  {
    name: '25-delay-per-hop',
    title: 'a timestamp drawn into the picture measures glass-to-glass delay per depth of the relay tree; pages estimate and show their own',
    async run(s) {
      await s.startServer({ extraArgs: RELAY_TREE_ARGS });
      await s.launchBrowser(NO_SPARE_RENDERER);
      const cdp = await s.browser.newBrowserCDPSession();
      const owners = new Map();
      const channel = channelId('s25');
      let link;
      const broadcaster = await openNoting(cdp, owners, async () => {
        const opened = await goLive(s, channel, {
          contextOptions: SMALL_WINDOW,
          setup: (p) => p.context.addInitScript(stampCamera, STAMP),
        });
        link = opened.link;
        return opened.broadcaster;
      });
      // One page at a time, so each renderer process is known to be its page's.
      const viewers = [];
      for (const i of [1, 2, 3, 4, 5, 6, 7]) {
        viewers.push(await openNoting(cdp, owners, async () => {
          const viewer = await s.participant(`viewer-${i}`, SMALL_WINDOW);
          await viewer.goto(link);
          return viewer;
        }));
      }
      await Promise.all(viewers.map((v) => v.waitForState('live', 25_000)));
      const tree = await untilTreeShape(broadcaster, viewers, [1, 2, 4], 30_000);
      expectConnectedTree(tree);
      // The figures climb the tree a level a second: down to depth 3, then its reports back up.
      await broadcaster.page.waitForFunction(() => window.broadcastApp.delay?.deepest?.depth === 3, null, {
        timeout: DEEPEST_KNOWN_MS,
        polling: 100,
      }).catch(async () => {
        const deepest = await broadcaster.page.evaluate(() => window.broadcastApp.delay?.deepest ?? null);
        throw new Error(`broadcaster: knew of no depth-3 viewer's delay within ${DEEPEST_KNOWN_MS} ms of the tree standing (deepest: ${JSON.stringify(deepest)})`);
      });

      // Sampling: every viewer reads the stamps it shows; CPU time of every page meanwhile.
      await Promise.all(viewers.map(startStampReader));
      await startDeepestNotes(broadcaster);
      const cpuBefore = await rendererCpu(cdp);
      const startedAt = Date.now();
      await sleep(DELAY_SAMPLE_MS);
      const cpuAfter = await rendererCpu(cdp);
      const seconds = (Date.now() - startedAt) / 1000;
      const read = await Promise.all(viewers.map(stopStampReader));
      const deepestNotes = await stopDeepestNotes(broadcaster);
      const cpu = cpuBetween(owners, cpuBefore, cpuAfter);
      const after = await relayTreeOf(broadcaster, viewers);
      assert(
        after.nodes.every((n) => tree.byId.get(n.id)?.depth === n.depth && tree.byId.get(n.id)?.feeder === n.feeder),
        `the tree changed while the delay was sampled: before ${tree.shape}; after ${after.shape}`,
      );

      const rows = tree.nodes.map((node, i) => {
        const { samples, bad, frames, estimates, hops } = read[i];
        assert(
          samples.length >= MIN_STAMPS,
          `${node.role} (depth ${node.depth}): only ${samples.length} stamps read in ${seconds.toFixed(1)} s (${frames} frames shown, ${bad} unreadable)`,
        );
        const low = Math.min(...samples);
        const high = Math.max(...samples);
        assert(low > 0 && high < MAX_DELAY_MS, `${node.role} (depth ${node.depth}): delays from ${low.toFixed(0)} to ${high.toFixed(0)} ms, expected within 0..${MAX_DELAY_MS} ms`);
        assert(estimates.length > 0, `${node.role} (depth ${node.depth}): the page never estimated its own delay`);
        return {
          node,
          samples,
          bad,
          frames,
          p50: quantile(samples, 0.5),
          p95: quantile(samples, 0.95),
          estimates,
          estimate: quantile(estimates, 0.5),
          jitter: quantile(hops.map((h) => h.jitter * 1000), 0.5),
          decode: quantile(hops.map((h) => h.decode * 1000), 0.5),
          cpu: cpu.get(node.role),
        };
      });
      for (const row of rows) {
        const slack = Math.max(ESTIMATE_SLACK_MS, ESTIMATE_SLACK_SHARE * row.p50);
        assert(
          Math.abs(row.estimate - row.p50) <= slack,
          `${row.node.role} (depth ${row.node.depth}): the page estimates ${row.estimate.toFixed(0)} ms behind live, ` +
            `measured ${row.p50.toFixed(0)} ms (median; allowed ±${slack.toFixed(0)} ms)`,
        );
      }

      // What the pages show: each viewer its own delay, the broadcaster the deepest viewer's.
      for (const v of viewers) {
        const shown = (await v.page.textContent('#viewer-delay')).trim();
        assert(
          (await v.page.isVisible('#viewer-delay')) && /^≈ \d+\.\d s behind live$/.test(shown),
          `${v.role}: #viewer-delay shows "${shown}", expected "≈ N.N s behind live"`,
        );
      }
      const deepest = (await broadcaster.page.textContent('#deepest-delay')).trim();
      assert(
        (await broadcaster.page.isVisible('#deepest-delay')) && /^Deepest viewer \(depth 3\): ≈ \d+\.\d s behind live\.$/.test(deepest),
        `broadcaster: #deepest-delay shows "${deepest}", expected the depth-3 viewers' delay`,
      );

      // Per depth: every sample of the viewers at that depth.
      const depths = [1, 2, 3].map((depth) => {
        const at = rows.filter((r) => r.node.depth === depth);
        const all = at.flatMap((r) => r.samples);
        assert(all.length > 0, `no stamp read at depth ${depth}`);
        return {
          depth,
          viewers: at.length,
          count: all.length,
          p50: quantile(all, 0.5),
          p95: quantile(all, 0.95),
          estimate: quantile(at.flatMap((r) => r.estimates), 0.5),
        };
      });
      // The broadcaster's figure: the depth-3 viewers', as they reported it up the tree.
      const reported = deepestNotes.filter((n) => n.depth === 3).map((n) => n.ms);
      assert(
        reported.length === deepestNotes.length && reported.length > 0,
        `broadcaster: the deepest viewer it knew of was at depth 3 in only ${reported.length} of ${deepestNotes.length} notes`,
      );
      const deepestMs = quantile(reported, 0.5);
      const relayCpu = rows
        .filter((r) => r.node.children.length)
        .map((r) => `${r.node.role}@${r.node.depth} ${(r.cpu / seconds * 100).toFixed(0)} %`);
      const leafCpu = rows.filter((r) => !r.node.children.length).map((r) => r.cpu / seconds * 100);
      const broadcasterCpu = cpu.get(broadcaster.role) / seconds * 100;
      const ms = (x) => (x === null ? '–' : x.toFixed(0));
      const table = [
        '| depth | viewers | stamps | p50 ms | p95 ms | added p50 ms | page estimate ms |',
        '|---:|---:|---:|---:|---:|---:|---:|',
        ...depths.map((d, i) => `| ${d.depth} | ${d.viewers} | ${d.count} | ${ms(d.p50)} | ${ms(d.p95)} | ` +
          `${ms(d.p50 - (i ? depths[i - 1].p50 : 0))} | ${ms(d.estimate)} |`),
      ];
      const perViewer = rows.map((r) => `| ${r.node.role} | ${r.node.depth} | ${r.node.children.length} | ${r.samples.length} | ${r.bad} | ` +
        `${ms(r.p50)} | ${ms(r.p95)} | ${ms(r.estimate)} | ${ms(r.jitter)} | ${ms(r.decode)} | ` +
        `${r.cpu.toFixed(2)} (${(r.cpu / seconds * 100).toFixed(0)} %) |`);
      const report = [
        `# 25-delay-per-hop, ${new Date().toISOString()}`,
        '',
        `${STAMP.width}x${STAMP.height} stamp at ${STAMP.frameRate} fps, ${seconds.toFixed(1)} s of samples; ${s.browser.version()}; ` +
          `the broadcaster's figure of the deepest viewer (depth 3): ${ms(deepestMs)} ms (median of ${reported.length})`,
        '',
        ...table,
        '',
        '| page | depth | feeds | stamps | unreadable | p50 ms | p95 ms | estimate ms | of which jitter buffer ms | decode ms | renderer CPU s (% of a core) |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
        `| broadcaster | 0 | 1 | | | | | | | | ${cpu.get(broadcaster.role).toFixed(2)} (${broadcasterCpu.toFixed(0)} %) |`,
        ...perViewer,
      ].join('\n');
      writeFileSync(path.join(s.dir, 'delay.md'), `${report}\n`);
      s.log(`\n${report}`);
      await Promise.all([broadcaster, ...viewers].map((p) => p.screenshot('delay')));
      return `${seconds.toFixed(0)} s of stamps; per depth p50/p95 (added p50) [page estimate]: ` +
        depths.map((d, i) => `${d.depth}: ${ms(d.p50)}/${ms(d.p95)} ms (+${ms(d.p50 - (i ? depths[i - 1].p50 : 0))}) [${ms(d.estimate)}]`).join(', ') +
        `; renderer CPU: broadcaster ${broadcasterCpu.toFixed(0)} %, relays ${relayCpu.join(', ')}, ` +
        `leaves ${leafCpu.map((c) => c.toFixed(0)).join('/')} %; broadcaster's deepest viewer ${ms(deepestMs)} ms (median), shows "${deepest}"` +
        `\n${table.join('\n')}`;
    },
  },
  {
    name: '26-moderation-ban',
    title: 'the broadcaster removes a message, mutes and bans a viewer; a new tab of the banned viewer is refused, another viewer plays',
    async run(s) {
      await serverAndBrowser(s);
      const channel = channelId('s26');
      const { broadcaster, link } = await goLive(s, channel);
      const bpage = broadcaster.page;
      const viewer = await watch(s, 'viewer', link);
      await expectPlaying(viewer.page, { role: viewer.role });
      await expectViewerCount(broadcaster, 1);
      const viewerId = await viewer.page.evaluate(() => window.broadcastApp.myId);
      const key = await viewer.page.evaluate(() => localStorage.getItem('broadcast.clientKey'));
      assert(/^[0-9a-f]{32}$/.test(key ?? ''), `viewer: the page kept no client key in localStorage (${JSON.stringify(key)})`);

      // The viewer chats; its messages carry their ids. The broadcaster removes the first one
      // with the button on it: it leaves both pages, the second stays.
      const first = 'First message, to be removed';
      const second = 'Second message, stays';
      for (const text of [first, second]) {
        await viewer.page.fill('#chat-input', text);
        await viewer.page.click('#chat-send');
        for (const p of [broadcaster, viewer]) await waitForChatLine(p.page, { role: p.role, sender: 'Viewer-', text });
      }
      const [seenByViewer] = await chatItemsWithText(viewer.page, first);
      assert(seenByViewer?.id, `viewer: its message carries no id (${JSON.stringify(seenByViewer)})`);
      const firstOnBroadcaster = bpage.locator('#chat-log .chat-msg', { has: bpage.locator('.chat-text', { hasText: first }) });
      assert(!(await viewer.page.$('#chat-log .chat-remove')), 'viewer: a viewer sees Remove buttons on messages');
      await firstOnBroadcaster.locator('.chat-remove').click();
      for (const p of [viewer, broadcaster]) await untilChatLineGone(p, first);
      assert((await chatItemsWithText(viewer.page, second)).length === 1, 'viewer: the message that was not removed is gone too');

      // The viewer list: the viewer is there, by its default name; Mute refuses its next message.
      await bpage.click('#moderation-panel > summary');
      const row = bpage.locator(`#viewer-list li[data-viewer-id="${viewerId}"]`);
      await row.waitFor({ state: 'visible', timeout: 5_000 }).catch(async () => {
        const rows = await bpage.$$eval('#viewer-list li', (lis) => lis.map((li) => `${li.dataset.viewerId}: ${li.textContent}`));
        throw new Error(`broadcaster: the viewer ${viewerId} is not in #viewer-list (${JSON.stringify(rows)})`);
      });
      const listed = (await row.locator('.viewer-name').textContent()).trim();
      assert(listed.startsWith('Viewer-'), `broadcaster: the viewer is listed as "${listed}"`);
      await row.locator('.mute-btn').click();
      await untilTextShows(broadcaster, `#viewer-list li[data-viewer-id="${viewerId}"] .viewer-muted`, 'muted');
      await untilTextShows(broadcaster, '#notice', 'is muted');
      assert((await row.locator('.mute-btn').textContent()).trim() === 'Unmute', 'broadcaster: the muted viewer has no Unmute button');
      const refused = 'Am I muted?';
      await viewer.page.fill('#chat-input', refused);
      await viewer.page.click('#chat-send');
      await untilTextShows(viewer, '#chat-error', 'You are muted in this channel');
      await sleep(500);
      assert((await chatItemsWithText(bpage, refused)).length === 0, 'broadcaster: the muted viewer\'s message arrived');

      // Ban: the viewer's page stops playing, closes its connections and says why; the
      // broadcaster closed its connection to it.
      await row.locator('.ban-btn').click();
      await expectBanned(viewer);
      await untilTextShows(broadcaster, '#notice', 'is banned');
      await expectViewerCount(broadcaster, 0);
      await row.waitFor({ state: 'detached', timeout: 5_000 });
      await bpage.waitForFunction(() => window.broadcastApp.peers.size === 0, null, { timeout: 5_000 }).catch(async () => {
        throw new Error(`broadcaster: still ${await bpage.evaluate(() => window.broadcastApp.peers.size)} peer connections after the ban`);
      });
      await viewer.screenshot('banned');

      // The banned viewer opens the link in a new tab of the same browser: same client key,
      // refused, nothing plays.
      const tab = await s.newTab(viewer, 'viewer-new-tab');
      await tab.goto(link);
      await expectBanned(tab);
      const tabKey = await tab.page.evaluate(() => localStorage.getItem('broadcast.clientKey'));
      assert(tabKey === key, 'viewer-new-tab: presented another client key than the first tab');

      // Someone else still joins and plays.
      const other = await watch(s, 'viewer-2', link, SMALL_WINDOW);
      const r = await expectPlaying(other.page, { role: other.role });
      await expectViewerCount(broadcaster, 1);
      const otherId = await other.page.evaluate(() => window.broadcastApp.myId);
      await bpage.waitForFunction(
        (id) => [...document.querySelectorAll('#viewer-list li')].map((li) => li.dataset.viewerId).join() === id,
        otherId,
        { timeout: 5_000 },
      ).catch(() => {
        throw new Error('broadcaster: #viewer-list does not list exactly the second viewer');
      });

      // Neither of the banned viewer's tabs came back by itself.
      for (const p of [viewer, tab]) await expectBanned(p);
      await tab.screenshot('refused');

      // The chat's rules: slow mode shows by the second viewer's input and refuses its second
      // message; chat off closes its input.
      await bpage.selectOption('#slow-mode-select', '30');
      await untilTextShows(other, '#chat-settings', 'Slow mode: 30 s');
      await other.page.fill('#chat-input', 'One message');
      await other.page.click('#chat-send');
      await waitForChatLine(bpage, { role: broadcaster.role, sender: 'Viewer-', text: 'One message' });
      await other.page.fill('#chat-input', 'Another one at once');
      await other.page.click('#chat-send');
      await untilTextShows(other, '#chat-error', 'Slow mode: wait');
      await bpage.uncheck('#chat-enabled-switch');
      await untilTextShows(other, '#chat-settings', 'Chat is off');
      assert(await other.page.isDisabled('#chat-input'), 'viewer-2: #chat-input is open while the chat is off');
      await other.screenshot('chat-off');

      // Unban all: the new tab, reloaded, plays; the first tab still does not rejoin by itself.
      await bpage.click('#unban-all-btn');
      await untilTextShows(broadcaster, '#notice', 'lifted');
      await tab.page.reload();
      await tab.waitForState('live', 25_000);
      await expectViewerCount(broadcaster, 2);
      await expectBanned(viewer);
      return `message removed, mute refused "${refused}", ban stopped the viewer; its new tab refused; viewer-2 ${r.width}x${r.height}, ${r.frames} frames/2 s; slow mode and chat off refused; after Unban all the tab plays`;
    },
  },
];
