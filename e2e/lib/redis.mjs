// The Redis that cluster scenarios share, seen through `redis-cli`: is it there, and which
// keys does a run's prefix hold. Only keys under the run's own prefix are ever deleted.

import { execFile } from 'node:child_process';

/** The Redis the cluster nodes use; CI starts one on the default port before the tests. */
export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

function redisCli(args, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-u', REDIS_URL, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err?.code === 'ENOENT') {
        reject(new Error('redis-cli is not on PATH; install it with bash scripts/install-test-deps.sh'));
      } else if (err?.killed) {
        reject(new Error(`no answer within ${timeoutMs} ms`));
      } else if (err) {
        reject(new Error(`redis-cli ${args.join(' ')}: ${(stderr || stdout || err.message).trim()}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

/** What Redis answered `PING` (`PONG` when it is there), or what went wrong; never rejects. */
export async function pingRedis(timeoutMs) {
  try {
    return (await redisCli(['ping'], timeoutMs)).trim();
  } catch (err) {
    return err.message;
  }
}

/** A Redis URL without its password, for messages. */
export function redactUrl(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.href;
  } catch {
    return '(an unparsable URL)';
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
