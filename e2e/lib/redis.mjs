// The Redis that cluster scenarios share, seen through `redis-cli`: is it there, and which
// keys does a run's prefix hold. Only keys under the run's own prefix are ever deleted.

import { execFile } from 'node:child_process';

/** The Redis the cluster nodes use; CI starts one on the default port before the tests. */
export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

function redisCli(args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-u', REDIS_URL, ...args], { timeout: 5_000 }, (err, stdout, stderr) => {
      if (err?.code === 'ENOENT') {
        reject(new Error('redis-cli is not installed (apt-get install redis-tools)'));
      } else if (err) {
        reject(new Error(`redis-cli ${args.join(' ')}: ${(stderr || stdout || err.message).trim()}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

/** Fails, saying so, unless Redis answers PING. */
export async function expectRedis() {
  let answer;
  try {
    answer = (await redisCli(['ping'])).trim();
  } catch (err) {
    answer = err.message;
  }
  if (answer !== 'PONG') {
    throw new Error(
      `Redis is not reachable at ${REDIS_URL} (PING answered: ${JSON.stringify(answer)}); ` +
        'the cluster scenario needs it: start redis-server, or set REDIS_URL',
    );
  }
}

/** Every key whose name starts with `prefix` (SCAN, never KEYS). */
export async function keysUnder(prefix) {
  const out = await redisCli(['--scan', '--pattern', `${prefix}*`]);
  return out.split('\n').filter(Boolean).sort();
}

/**
 * Waits up to `graceMs` for the keys under `prefix` to go (keys with a time to live expire
 * on their own); returns those still there.
 */
export async function keysLeftUnder(prefix, graceMs) {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const keys = await keysUnder(prefix);
    if (!keys.length || Date.now() >= deadline) return keys;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Deletes the keys under `prefix`, so a failed run leaves nothing behind either. */
export async function deleteKeysUnder(prefix) {
  const keys = await keysUnder(prefix);
  for (let i = 0; i < keys.length; i += 100) await redisCli(['del', ...keys.slice(i, i + 100)]);
  return keys.length;
}
