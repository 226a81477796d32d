// The ICE servers new peer connections use. The server mints them per request at
// `GET /ice-servers`: the STUN servers it is configured with and, when it runs with TURN, a
// TURN server with credentials that expire after `ttl` seconds. So the page asks once before
// its first peer connection and again before they expire; a connection keeps the servers it was
// created with (a TURN server checks credentials when a relay is set up, not afterwards).
//
// Credentials never go into a URL, the screen or the console.

import { app, serverConfig } from "./state.js";

const ENDPOINT = "/ice-servers";
/** How long the first answer may take before the page goes on with the config's servers. */
const FETCH_TIMEOUT_MS = 5_000;
/** Ask again when this share of the credentials' lifetime has passed. */
const REFRESH_AT = 0.8;
/** After a failed request, ask again this soon (the servers we have stay in use meanwhile). */
const RETRY_MS = 30_000;

/** The list for new peer connections: the config's servers until the first answer. */
let current = serverConfig.iceServers;
let refreshTimer = null;
/** The request under way, if any: callers share it. */
let inFlight = null;

/**
 * What tests and the console may read (`window.broadcastApp.ice`); never the credentials:
 * `source` ("config" until the server answered, then "server"), `ttl` (seconds), `fetches`
 * (answers received), `fetchedAt` and `refreshAt` (ms since the epoch).
 */
app.ice = { source: "config", ttl: null, fetches: 0, fetchedAt: null, refreshAt: null };

/** The ICE servers for a peer connection created now. */
export function currentIceServers() {
  // A device that slept past the refresh (timers do not run then) asks at once; this
  // connection makes do with what we have, the next ones get fresh credentials.
  if (app.ice.refreshAt !== null && Date.now() > app.ice.refreshAt + RETRY_MS) refresh();
  return current;
}

/**
 * Fetches the list before the first peer connection; resolves once it is there, or once the
 * request failed or took too long (the config's servers are used then, and it is retried).
 */
export async function loadIceServers() {
  await refresh();
}

function refresh() {
  inFlight ??= fetchIceServers().finally(() => {
    inFlight = null;
  });
  return inFlight;
}

async function fetchIceServers() {
  clearTimeout(refreshTimer);
  let nextMs = RETRY_MS;
  try {
    const response = await fetch(ENDPOINT, {
      cache: "no-store",
      credentials: "same-origin",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (!body || !Array.isArray(body.ice_servers) || !(body.ttl > 0)) {
      throw new Error("the answer has no ice_servers list and ttl");
    }
    current = body.ice_servers;
    nextMs = body.ttl * 1000 * REFRESH_AT;
    const now = Date.now();
    Object.assign(app.ice, {
      source: "server",
      ttl: body.ttl,
      fetches: app.ice.fetches + 1,
      fetchedAt: now,
      refreshAt: now + nextMs,
    });
  } catch (err) {
    console.warn(`Could not fetch ICE servers (${err.message}); using the ones the page has`);
  }
  refreshTimer = setTimeout(refresh, nextMs);
}
