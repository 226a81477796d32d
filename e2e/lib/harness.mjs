// One scenario's world: its own server, its own Chromium, one browser context per
// participant, and everything recorded under artifacts/<scenario>/.

import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { ARTIFACTS_DIR } from './paths.mjs';
import { startServer } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * Real camera and microphone capture come from Chromium's fake devices, granted without
 * a prompt. The rest keeps Chromium quiet on a closed network: it must reach nothing but
 * the loopback servers the scenario starts.
 */
export const CHROMIUM_ARGS = [
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  // On a machine with only a loopback interface WebRTC gathers no candidate without it.
  '--allow-loopback-in-peer-connection',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--disable-gpu',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-default-apps',
  '--disable-extensions',
  '--disable-domain-reliability',
  '--disable-client-side-phishing-detection',
  '--metrics-recording-only',
  '--safebrowsing-disable-auto-update',
  // Playwright's defaults throttle pages in background tabs; every participant here
  // is a page nobody looks at, and all of them must keep decoding video.
  '--disable-background-timer-throttling',
  '--disable-backgrounding-occluded-windows',
  '--disable-renderer-backgrounding',
];

// Chromium refuses to run its sandbox as root.
const SANDBOX_ARGS = process.getuid?.() === 0 ? ['--no-sandbox'] : [];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Scenario {
  /** @param {string} name used for the artifacts folder */
  constructor(name) {
    this.name = name;
    this.dir = path.join(ARTIFACTS_DIR, name);
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    this.consoleLog = path.join(this.dir, 'console.log');
    /** @type {Participant[]} */
    this.participants = [];
    /** Origins the pages may talk to; anything else is a failure. */
    this.allowedOrigins = new Set();
    this.outsideRequests = [];
    this.failedLoads = [];
    this.pageErrors = [];
    /** Content-Security-Policy violations any page reported, as lines (see cspViolationLine). */
    this.cspViolations = [];
    /**
     * Chromium's console messages about the policy: one per violation as well, but also from
     * where no page listener runs (a worker); shown when they outnumber the reports above.
     */
    this.cspConsole = [];
    this.server = null;
    /** Every server started, so all of them are stopped at the end. */
    this.servers = [];
    this.browser = null;
    this.cleanups = [];
  }

  log(line) {
    appendFileSync(this.consoleLog, `${new Date().toISOString()} ${line}\n`);
  }

  /**
   * Starts the release server (HTTP, or HTTPS with `tls`) for this scenario. A scenario that
   * restarts it (same `port`) gets one log per run: server.log, server-2.log, … (`name`:
   * `<name>.log` instead).
   */
  async startServer({ name, ...options } = {}) {
    this.serverRuns = (this.serverRuns ?? 0) + 1;
    const logName = name ? `${name}.log` : this.serverRuns === 1 ? 'server.log' : `server-${this.serverRuns}.log`;
    this.server = await this.#start(logName, options);
    this.log(`server at ${this.server.origin}`);
    return this.server;
  }

  /**
   * Starts one more server next to the scenario's own, e.g. a second node of a cluster; its
   * log is `<name>.log`. `s.server` stays what it was; both are stopped at the end.
   */
  async startNode(name, options = {}) {
    const node = await this.#start(`${name}.log`, options);
    this.log(`${name} at ${node.origin} (pid ${node.pid})`);
    return node;
  }

  async #start(logName, options) {
    const server = await startServer({ logFile: path.join(this.dir, logName), ...options });
    this.servers.push(server);
    this.allowedOrigins.add(server.origin);
    return server;
  }

  /** One fresh Chromium (Playwright gives each launch a new, empty user-data-dir). */
  async launchBrowser(extraArgs = []) {
    this.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [...SANDBOX_ARGS, ...CHROMIUM_ARGS, ...extraArgs],
      timeout: 30_000,
    });
    return this.browser;
  }

  /** Also runs when the scenario ends, failed or not. */
  onCleanup(fn) {
    this.cleanups.push(fn);
  }

  /**
   * A participant: a new browser context (own cookies, storage and socket) with one page.
   * @param {string} role e.g. "broadcaster", "viewer-1"; names its screenshot
   * @param {import('playwright-core').BrowserContextOptions} [contextOptions]
   * @param {object} [options]
   * @param {{width: number, height: number, frameRate: number}} [options.camera] the fake
   *   camera's picture: every `getUserMedia` video request of this participant asks for it
   *   (Chromium's fake device otherwise captures 640x480), so scenarios with many pages stay
   *   within a small machine's CPU
   * @param {{width: number, height: number, frameRate: number}} [options.screen] the fake
   *   screen's picture: every `getDisplayMedia` of this participant asks for at most this
   *   (Chromium's fake screen is 1280x720 at 30 fps; its fake devices need no picker). Also
   *   `window.__e2eCancelPicker = true` in the page makes the next one fail as a cancelled picker
   */
  async participant(role, contextOptions = {}, { camera, screen } = {}) {
    const context = await this.browser.newContext({
      viewport: { width: 1024, height: 768 },
      ...contextOptions,
    });
    context.setDefaultTimeout(15_000);
    // Every document of this participant (each navigation, each frame) reports the CSP
    // violations it sees, before any of its own scripts runs.
    await context.exposeBinding(CSP_BINDING, (_source, report) => this.#cspViolation(role, report));
    await context.addInitScript(reportCspViolations, CSP_BINDING);
    if (camera) await context.addInitScript(askForCamera, camera);
    if (screen) await context.addInitScript(askForScreen, screen);
    const page = await context.newPage();
    const participant = new Participant(this, role, context, page);
    this.participants.push(participant);

    context.on('request', (request) => this.#checkOrigin(role, request.url()));
    context.on('response', (response) => {
      if (response.status() >= 400) this.#failedResponse(role, response);
    });
    this.#watchPage(role, page);
    return participant;
  }

  /**
   * Another tab of `participant`'s browser context: the same cookies and storage (its
   * localStorage, so the page's client key), its own page and socket, watched like every page;
   * a participant of its own named `role` (requests of the context stay attributed to the first).
   */
  async newTab(participant, role) {
    const page = await participant.context.newPage();
    const tab = new Participant(this, role, participant.context, page);
    this.participants.push(tab);
    this.#watchPage(role, page);
    return tab;
  }

  /** What every page is watched for: its WebSockets' hosts, console, errors, dialogs. */
  #watchPage(role, page) {
    page.on('websocket', (ws) => this.#checkOrigin(role, ws.url()));
    page.on('console', (msg) => {
      const where = msg.location()?.url ? ` (${msg.location().url})` : '';
      this.log(`[${role}] console.${msg.type()}: ${msg.text()}${where}`);
      if (CSP_CONSOLE.test(msg.text())) this.cspConsole.push(`${role}: ${msg.text()}${where}`);
    });
    page.on('pageerror', (err) => {
      this.pageErrors.push(`${role}: ${err.message}`);
      this.log(`[${role}] PAGE ERROR: ${err.stack || err.message}`);
    });
    page.on('dialog', (dialog) => {
      // A JavaScript alert/confirm would mean user text ran as code, or the page blocks
      // on a modal no one answers. Either way it is a failure.
      this.pageErrors.push(`${role}: unexpected ${dialog.type()} dialog "${dialog.message()}"`);
      dialog.dismiss().catch(() => {});
    });
  }

  #cspViolation(role, report) {
    const line = cspViolationLine(role, report);
    this.cspViolations.push(line);
    this.log(`[${role}] CSP VIOLATION ${line}`);
  }

  #checkOrigin(role, url) {
    const { protocol, origin } = new URL(url);
    if (['data:', 'blob:', 'about:'].includes(protocol)) return;
    const httpOrigin = origin.replace(/^ws/, 'http');
    if (!this.allowedOrigins.has(httpOrigin)) {
      this.outsideRequests.push(`${role}: ${url}`);
      this.log(`[${role}] OUTSIDE REQUEST ${url}`);
    }
  }

  #failedResponse(role, response) {
    const url = new URL(response.url());
    this.log(`[${role}] HTTP ${response.status()} ${response.request().method()} ${url.href}`);
    // A browser asks for /favicon.ico on its own; every other failed load is the page's.
    if (url.pathname !== '/favicon.ico') {
      this.failedLoads.push(`${role}: HTTP ${response.status()} for ${url.href}`);
    }
  }

  /**
   * What went wrong in the pages whatever the scenario checked: uncaught errors and CSP
   * violations, as sections of a message (empty when none). A scenario that failed for another
   * reason shows them too: a blocked script or a thrown error usually is the cause.
   */
  pageProblems() {
    const sections = [];
    if (this.pageErrors.length) sections.push(`page errors:\n  ${this.pageErrors.join('\n  ')}`);
    if (this.cspViolations.length) {
      sections.push(`Content-Security-Policy violations:\n  ${this.cspViolations.join('\n  ')}`);
    }
    if (this.cspConsole.length > this.cspViolations.length) {
      sections.push(`console messages about the Content-Security-Policy:\n  ${this.cspConsole.join('\n  ')}`);
    }
    return sections;
  }

  /**
   * Fails the scenario if any page reached outside, failed to load its own files, threw, or
   * violated its Content-Security-Policy.
   */
  assertClean() {
    if (this.failedLoads.length) {
      throw new Error(`failed loads:\n  ${this.failedLoads.join('\n  ')}`);
    }
    if (this.outsideRequests.length) {
      throw new Error(`pages reached outside hosts:\n  ${this.outsideRequests.join('\n  ')}`);
    }
    const problems = this.pageProblems();
    if (problems.length) throw new Error(problems.join('\n'));
  }

  /** Screenshots every open page, closes the browser, stops the server: always runs. */
  async finish() {
    const problems = [];
    for (const p of this.participants) {
      if (p.page.isClosed()) continue;
      await p.page
        .screenshot({ path: path.join(this.dir, `${p.role}.png`), fullPage: true, timeout: 10_000 })
        .catch((err) => problems.push(`screenshot of ${p.role}: ${err.message}`));
    }
    for (const fn of this.cleanups.reverse()) {
      await Promise.resolve()
        .then(fn)
        .catch((err) => problems.push(`cleanup: ${err.message}`));
    }
    await this.browser?.close().catch((err) => problems.push(`browser close: ${err.message}`));
    for (const server of this.servers) {
      await server.stop().catch((err) => problems.push(`server stop: ${err.message}`));
    }
    for (const problem of problems) this.log(`FINISH: ${problem}`);
    return problems;
  }
}

/** How Chromium's console words a CSP violation ("… violates the following Content Security Policy directive …"). */
const CSP_CONSOLE = /Content.Security.Policy/i;

/** The page function through which documents report CSP violations (a Playwright binding). */
const CSP_BINDING = '__e2eCspViolation';

/**
 * Runs in every document before its own scripts: each `securitypolicyviolation` (fired at the
 * element, the document or the window, and seen at the window, which every one of them reaches)
 * goes to the test through `binding`. The page cannot have caught it first: this listener is
 * the first one registered, in the capture phase.
 */
function reportCspViolations(binding) {
  window.addEventListener(
    'securitypolicyviolation',
    (event) => {
      const report = window[binding];
      if (typeof report !== 'function') return;
      Promise.resolve(
        report({
          directive: event.effectiveDirective || event.violatedDirective,
          blockedURI: event.blockedURI,
          disposition: event.disposition,
          documentURI: event.documentURI,
          sourceFile: event.sourceFile,
          line: event.lineNumber,
          column: event.columnNumber,
          sample: event.sample,
        }),
      ).catch(() => {
        // The page is closing; nothing to report to any more.
      });
    },
    true,
  );
}

/**
 * One violation as a line: who, the violated directive, what was blocked (`inline`, `eval`,
 * a URL) and where.
 */
export function cspViolationLine(role, report) {
  const where = report.sourceFile ? ` at ${report.sourceFile}:${report.line}:${report.column}` : '';
  const sample = report.sample ? ` (sample: ${JSON.stringify(report.sample)})` : '';
  const mode = report.disposition === 'report' ? ' (report-only)' : '';
  return `${role}: ${report.directive}${mode} blocked ${report.blockedURI || '(no URI)'} ` +
    `in ${report.documentURI}${where}${sample}`;
}

/**
 * Runs in the page before its own scripts: video requests ask for `camera`'s size and rate
 * (the page's own constraints, if any, win where they say something else).
 */
function askForCamera(camera) {
  const devices = navigator.mediaDevices;
  if (!devices || typeof devices.getUserMedia !== 'function') return;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = (constraints = {}) => {
    if (!constraints.video) return getUserMedia(constraints);
    const own = typeof constraints.video === 'object' ? constraints.video : {};
    const video = {
      width: { ideal: camera.width },
      height: { ideal: camera.height },
      frameRate: { ideal: camera.frameRate, max: camera.frameRate },
      ...own,
    };
    return getUserMedia({ ...constraints, video });
  };
}

/**
 * Runs in the page before its own scripts: screen captures ask for at most `screen`'s size and
 * rate (`getDisplayMedia` allows no `min` or `exact`); `window.__e2eCancelPicker` makes the next
 * one fail the way a person's Cancel in the picker does.
 */
function askForScreen(screen) {
  const devices = navigator.mediaDevices;
  if (!devices || typeof devices.getDisplayMedia !== 'function') return;
  const getDisplayMedia = devices.getDisplayMedia.bind(devices);
  devices.getDisplayMedia = (options = {}) => {
    if (window.__e2eCancelPicker) {
      window.__e2eCancelPicker = false;
      return Promise.reject(new DOMException('Permission denied by user', 'NotAllowedError'));
    }
    const own = typeof options.video === 'object' ? options.video : {};
    const video = {
      width: { max: screen.width },
      height: { max: screen.height },
      frameRate: { max: screen.frameRate },
      ...own,
    };
    return getDisplayMedia({ ...options, video });
  };
}

export class Participant {
  constructor(scenario, role, context, page) {
    this.scenario = scenario;
    this.role = role;
    this.context = context;
    this.page = page;
  }

  /** Opens `url` and waits for its load event; resolves with the document's response. */
  async goto(url) {
    this.scenario.log(`[${this.role}] goto ${url}`);
    return this.page.goto(url, { waitUntil: 'load' });
  }

  /** A screenshot now (the final ones are taken by Scenario.finish). */
  async screenshot(label) {
    await this.page.screenshot({
      path: path.join(this.scenario.dir, `${this.role}-${label}.png`),
      fullPage: true,
    });
  }

  /** The `#status` line: its `data-state` and its text. */
  status() {
    return this.page.evaluate(() => {
      const el = document.querySelector('#status');
      return el ? { state: el.dataset.state, text: el.textContent.trim() } : { state: null, text: '(no #status)' };
    });
  }

  /**
   * Waits until `#status[data-state]` is one of `states`.
   * @param {string|string[]} states
   * @returns {Promise<number>} milliseconds waited
   */
  async waitForState(states, timeout = 15_000) {
    const wanted = [].concat(states);
    const started = Date.now();
    try {
      await this.page.waitForFunction(
        (w) => w.includes(document.querySelector('#status')?.dataset.state),
        wanted,
        { timeout, polling: 50 },
      );
    } catch (err) {
      if (this.page.isClosed()) throw err;
      const now = await this.status().catch(() => ({ state: '?', text: err.message }));
      throw new Error(
        `${this.role}: #status never became ${wanted.join('|')} within ${timeout} ms; ` +
          `it is "${now.state}" ("${now.text}")`,
      );
    }
    return Date.now() - started;
  }
}
