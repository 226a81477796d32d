// What a scenario needs from the machine besides Node: the server binary, Chromium, and for some
// coturn or Redis. Each is probed in well under a second before the scenario starts, so a missing
// tool fails the scenario at once, saying what is missing and how to install it, instead of
// letting it run into its time limit.

import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';

import { pingRedis, REDIS_URL, redactUrl } from './redis.mjs';

const INSTALL = 'install it with bash scripts/install-test-deps.sh';
/** A Redis that does not answer PING within this long is as good as absent. */
const REDIS_PING_TIMEOUT_MS = 1_000;

/** Whether `file` is an executable regular file. */
function isExecutable(file) {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** `command -v name`: the executable a spawn of `name` would run, or null. */
export function onPath(name) {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return null;
}

/**
 * What each prerequisite needs, as probes that resolve with a problem (null: fine). The names
 * are what scenarios list in `needs`; `server` and `chromium` every scenario needs.
 */
const PROBES = {
  async server({ serverBin }) {
    if (isExecutable(serverBin)) return null;
    return `the server binary is not at ${serverBin}: build it with cargo build --release --bin broadcast-server, or set SERVER_BIN`;
  },
  async chromium({ chromium }) {
    if (isExecutable(chromium)) return null;
    const where = process.env.CHROMIUM ? `CHROMIUM=${chromium}` : `${chromium} (or CHROMIUM=…)`;
    return `Chromium is not at ${where}; ${INSTALL}`;
  },
  async turnserver({ turnserver }) {
    if (onPath(turnserver)) return null;
    return process.env.TURNSERVER
      ? `coturn's turnserver is not at TURNSERVER=${turnserver}; ${INSTALL}`
      : `coturn's turnserver is not on PATH (or TURNSERVER=…); ${INSTALL}`;
  },
  async redis() {
    if (!onPath('redis-cli')) return `redis-cli (Debian's redis-tools) is not on PATH; ${INSTALL}`;
    const answer = await pingRedis(REDIS_PING_TIMEOUT_MS);
    if (answer === 'PONG') return null;
    return `Redis at ${redactUrl(REDIS_URL)} does not answer PING (${answer}); bash scripts/install-test-deps.sh ` +
      'installs and starts one on 127.0.0.1:6379 (or set REDIS_URL)';
  },
};

/**
 * The problems that keep a scenario from running, one line each, prefixed with its name; empty
 * when everything it `needs` (plus the server binary and Chromium) is there.
 *
 * @param {{name: string, needs?: string[]}} scenario
 * @param {{serverBin: string, chromium: string, turnserver: string}} where
 */
export async function missingFor(scenario, where) {
  const needs = ['server', 'chromium', ...(scenario.needs ?? [])];
  const problems = await Promise.all(
    needs.map((need) => {
      const probe = PROBES[need];
      if (!probe) return `unknown prerequisite "${need}" (known: ${Object.keys(PROBES).join(', ')})`;
      return probe(where);
    }),
  );
  return problems.filter(Boolean).map((problem) => `${scenario.name}: ${problem}`);
}
