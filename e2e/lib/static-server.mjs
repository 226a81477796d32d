// A tiny HTTP server on its own ephemeral loopback port for the legacy page: a different
// origin from the broadcast server, as a legacy page hosted elsewhere would be.

import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

import { E2E_DIR } from './paths.mjs';

const FILES = {
  '/': { file: path.join(E2E_DIR, 'legacy', 'viewer.html'), type: 'text/html; charset=utf-8' },
  '/socket.io.min.js': {
    file: path.join(E2E_DIR, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js'),
    type: 'text/javascript; charset=utf-8',
  },
};

/** @returns {Promise<{origin: string, close: () => Promise<void>}>} */
export async function startLegacyPageServer() {
  const server = http.createServer(async (req, res) => {
    const entry = FILES[new URL(req.url, 'http://x').pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(entry.file);
      res.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-store' }).end(body);
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/**
 * A tiny HTTP server on its own ephemeral loopback port serving the given HTML documents by
 * path: another site's pages, e.g. one that frames an embed.
 * @param {Record<string, string>} pages path → HTML
 * @returns {Promise<{origin: string, close: () => Promise<void>}>}
 */
export async function startHtmlServer(pages) {
  const server = http.createServer((req, res) => {
    const html = pages[new URL(req.url, 'http://x').pathname];
    if (html === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
