// The whole life of a legacy broadcast, as the legacy page drives it, with the official
// socket.io-client (4.5.4 and the newest 4.x) on every transport a browser may end up using.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CLIENTS, assertQuiet, channelId, world } from '../lib/peer.js';
import {
  BROADCASTER_ANSWER,
  BROADCASTER_CANDIDATES,
  VIEWER_CANDIDATES,
  VIEWER_OFFER,
} from '../lib/webrtc.js';

const now = () => Date.now() / 1000;

/** Checks one `channel_list` entry: every field, its type, and plausible times. */
function assertChannelEntry(entry, { id, broadcasterSid, notBefore }) {
  assert.deepEqual(
    Object.keys(entry).sort(),
    ['age_seconds', 'broadcaster_sid', 'created_at', 'id', 'last_activity'],
    'channel_list entry fields',
  );
  assert.equal(entry.id, id);
  assert.equal(entry.broadcaster_sid, broadcasterSid);
  assert.equal(typeof entry.created_at, 'number');
  assert.ok(
    entry.created_at >= notBefore - 1 && entry.created_at <= now() + 1,
    `created_at ${entry.created_at} is unix seconds around now`,
  );
  assert.ok(Number.isInteger(entry.age_seconds), `age_seconds ${entry.age_seconds} is an integer`);
  assert.ok(entry.age_seconds >= 0 && entry.age_seconds <= now() - notBefore + 1, 'age_seconds');
  assert.equal(typeof entry.last_activity, 'number');
  assert.ok(
    entry.last_activity >= entry.created_at - 0.001 && entry.last_activity <= now() + 1,
    `last_activity ${entry.last_activity} lies between created_at and now`,
  );
}

/** Checks a `new_message` payload and returns it. */
function assertNewMessage(payload, { senderId, message }) {
  assert.deepEqual(Object.keys(payload).sort(), ['message', 'sender_id', 'timestamp']);
  assert.equal(payload.sender_id, senderId);
  assert.equal(payload.message, message);
  assert.equal(typeof payload.timestamp, 'number');
  assert.ok(Math.abs(payload.timestamp - now()) < 5, `timestamp ${payload.timestamp} is unix seconds now`);
  return payload;
}

/** The transports a peer went through, given how it was configured. */
const EXPECTED_TRANSPORTS = {
  default: ['polling', 'websocket'],
  websocket: ['websocket'],
  polling: ['polling'],
};

/** Sessions where the peers do not all use the same transport. */
const MIXED = [
  { broadcaster: 'polling', viewer1: 'default', viewer2: 'websocket' },
  { broadcaster: 'websocket', viewer1: 'polling', viewer2: 'default' },
];

/**
 * Broadcaster, two viewers and a full session: list, join, offer/answer/ICE, alias, chat,
 * stop, disconnect. `modes` gives each peer's transport.
 */
async function fullFlow(t, client, modes) {
  const { peer } = await world(t, client);
  const channel = channelId('live');
  const startedAt = now();

  // The broadcaster connects (client_id checked by peer()) and goes live.
  const broadcaster = await peer('broadcaster', modes.broadcaster);
  broadcaster.emit('join_as_broadcaster', { channel_id: channel });
  await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });

  // A viewer asks for the list, then picks the channel.
  const viewer1 = await peer('viewer1', modes.viewer1);
  assert.notEqual(viewer1.id, broadcaster.id);
  viewer1.emit('join_as_viewer', {});
  const list = await viewer1.one('channel_list');
  assert.deepEqual(Object.keys(list), ['channels']);
  assert.equal(list.channels.length, 1, `one channel listed: ${JSON.stringify(list)}`);
  assertChannelEntry(list.channels[0], {
    id: channel,
    broadcasterSid: broadcaster.id,
    notBefore: startedAt,
  });

  viewer1.emit('join_as_viewer', { channel_id: channel });
  await viewer1.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });

  // Offer viewer → broadcaster, answer back, candidates both ways, all relayed as sent.
  viewer1.emit('offer', { target: broadcaster.id, sdp: VIEWER_OFFER });
  await broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: viewer1.id });

  broadcaster.emit('answer', { target: viewer1.id, sdp: BROADCASTER_ANSWER });
  await viewer1.expect('answer', { sdp: BROADCASTER_ANSWER, sender: broadcaster.id });

  for (const candidate of VIEWER_CANDIDATES) {
    viewer1.emit('ice_candidate', { target: broadcaster.id, candidate });
  }
  for (const candidate of BROADCASTER_CANDIDATES) {
    broadcaster.emit('ice_candidate', { target: viewer1.id, candidate });
  }
  for (const candidate of VIEWER_CANDIDATES) {
    await broadcaster.expect('ice_candidate', { candidate, sender: viewer1.id });
  }
  for (const candidate of BROADCASTER_CANDIDATES) {
    await viewer1.expect('ice_candidate', { candidate, sender: broadcaster.id });
  }

  // A second viewer joins directly (it knows the id) and never sets an alias.
  const viewer2 = await peer('viewer2', modes.viewer2);
  viewer2.emit('join_as_viewer', { channel_id: channel });
  await viewer2.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });

  // Alias, then chat: every participant gets each message, the sender included.
  viewer1.emit('set_alias', { channel_id: channel, alias: 'Alice Smith' });
  await viewer1.expect('alias_set', { alias: 'Alice Smith', success: true });

  viewer1.emit('send_message', { channel_id: channel, message: 'Hello everyone! 👋' });
  const fromAlice = [];
  for (const p of [broadcaster, viewer1, viewer2]) {
    fromAlice.push(assertNewMessage(await p.one('new_message'), {
      senderId: 'Alice Smith',
      message: 'Hello everyone! 👋',
    }));
  }
  assert.deepEqual(fromAlice[1], fromAlice[0], 'the same message reaches everyone');
  assert.deepEqual(fromAlice[2], fromAlice[0], 'the same message reaches everyone');

  viewer2.emit('send_message', { channel_id: channel, message: '  nice stream\nthanks  ' });
  const anonymous = `Viewer-${viewer2.id.slice(0, 8)}`;
  for (const p of [broadcaster, viewer1, viewer2]) {
    assertNewMessage(await p.one('new_message'), { senderId: anonymous, message: 'nice stream\nthanks' });
  }

  // Stop: viewers are told, the channel stays listed.
  broadcaster.emit('stop_broadcast', { channel_id: channel });
  await viewer1.expect('broadcaster_stopped', { channel_id: channel });
  await viewer2.expect('broadcaster_stopped', { channel_id: channel });
  viewer2.emit('join_as_viewer', {});
  const afterStop = await viewer2.one('channel_list');
  assert.deepEqual(afterStop.channels.map((c) => c.id), [channel], 'a stopped channel stays listed');
  assertChannelEntry(afterStop.channels[0], { id: channel, broadcasterSid: broadcaster.id, notBefore: startedAt });

  await assertQuiet(broadcaster, viewer1, viewer2);

  // Every peer reached the transport it was configured for (defaults upgraded to WebSocket).
  for (const [p, mode] of [[broadcaster, modes.broadcaster], [viewer1, modes.viewer1], [viewer2, modes.viewer2]]) {
    if (mode === 'default') await p.upgraded();
    assert.deepEqual(p.transports, EXPECTED_TRANSPORTS[mode], `${p.label}: transports used`);
  }

  // The broadcaster goes away: viewers are told (no payload) and the channel is gone.
  broadcaster.close();
  for (const p of [viewer1, viewer2]) {
    const args = await p.next('broadcaster_disconnected');
    assert.ok(
      args.length === 0 || (args.length === 1 && args[0] === null),
      `${p.label}: broadcaster_disconnected carries nothing, got ${JSON.stringify(args)}`,
    );
  }
  viewer1.emit('join_as_viewer', {});
  await viewer1.expect('channel_list', { channels: [] });
  viewer2.emit('join_as_viewer', { channel_id: channel });
  await viewer2.expectError(`Channel ${channel} not found or expired`);

  await assertQuiet(broadcaster, viewer1, viewer2);
}

for (const client of CLIENTS) {
  describe(`legacy flow with ${client.name}`, () => {
    for (const mode of ['default', 'websocket', 'polling']) {
      it(`runs a whole session with every peer on ${mode === 'default' ? 'default transports (polling, then upgrade)' : `${mode} only`}`, async (t) => {
        await fullFlow(t, client, { broadcaster: mode, viewer1: mode, viewer2: mode });
      });
    }

    for (const modes of MIXED) {
      it(`runs a whole session with peers on mixed transports ${JSON.stringify(modes)}`, async (t) => {
        await fullFlow(t, client, modes);
      });
    }

    it('gives a fresh 8-character id when channel_id is absent, null or empty', async (t) => {
      const { peer } = await world(t, client);
      const ways = [[], [null], [{}], [{ channel_id: null }], [{ channel_id: '' }], [{ force: false }]];
      const seen = new Set();
      const peers = [];
      for (const args of ways) {
        const b = await peer(`broadcaster ${JSON.stringify(args)}`, 'websocket');
        peers.push(b);
        b.emit('join_as_broadcaster', ...args);
        const ready = await b.one('broadcaster_ready');
        assert.deepEqual(Object.keys(ready).sort(), ['channel_id', 'id']);
        assert.equal(ready.id, b.id);
        assert.match(ready.channel_id, /^[a-z0-9]{8}$/, `fresh id for ${JSON.stringify(args)}`);
        assert.ok(!seen.has(ready.channel_id), 'fresh ids differ');
        seen.add(ready.channel_id);
      }
      const viewer = await peer('viewer', 'websocket');
      for (const args of [[], [null], [{ channel_id: null }], [{ channel_id: '' }]]) {
        viewer.emit('join_as_viewer', ...args);
        const list = await viewer.one('channel_list');
        assert.deepEqual(new Set(list.channels.map((c) => c.id)), seen, `list for ${JSON.stringify(args)}`);
      }
      await assertQuiet(viewer, ...peers);
    });

    it('lists channels oldest first and drops a channel when its broadcaster leaves', async (t) => {
      const { peer } = await world(t, client);
      const startedAt = now();
      const ids = [channelId('first'), channelId('second'), channelId('third')];
      const broadcasters = [];
      for (const id of ids) {
        const b = await peer(`broadcaster of ${id}`, 'websocket');
        b.emit('join_as_broadcaster', { channel_id: id });
        await b.expect('broadcaster_ready', { id: b.id, channel_id: id });
        broadcasters.push(b);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const viewer = await peer('viewer', 'default');
      viewer.emit('join_as_viewer', {});
      const list = await viewer.one('channel_list');
      assert.deepEqual(list.channels.map((c) => c.id), ids, 'oldest first');
      list.channels.forEach((entry, i) => assertChannelEntry(entry, {
        id: ids[i],
        broadcasterSid: broadcasters[i].id,
        notBefore: startedAt,
      }));
      assert.ok(list.channels[0].created_at <= list.channels[1].created_at);
      assert.ok(list.channels[1].created_at <= list.channels[2].created_at);

      broadcasters[1].close();
      await new Promise((resolve) => setTimeout(resolve, 500));
      viewer.emit('join_as_viewer', {});
      const after = await viewer.one('channel_list');
      assert.deepEqual(after.channels.map((c) => c.id), [ids[0], ids[2]]);
      await assertQuiet(viewer, ...broadcasters);
    });

    it('keeps chat, stop and disconnect news within their own channel', async (t) => {
      const { peer } = await world(t, client);
      const rooms = [];
      for (const name of ['room-a', 'room-b']) {
        const channel = channelId(name);
        const broadcaster = await peer(`broadcaster of ${name}`, 'websocket');
        broadcaster.emit('join_as_broadcaster', { channel_id: channel });
        await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
        const viewer = await peer(`viewer of ${name}`, 'default');
        viewer.emit('join_as_viewer', { channel_id: channel });
        await viewer.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
        rooms.push({ channel, broadcaster, viewer });
      }
      const [a, b] = rooms;
      const everyone = [a.broadcaster, a.viewer, b.broadcaster, b.viewer];

      a.viewer.emit('send_message', { channel_id: a.channel, message: 'only for room a' });
      for (const p of [a.broadcaster, a.viewer]) {
        assertNewMessage(await p.one('new_message'), {
          senderId: `Viewer-${a.viewer.id.slice(0, 8)}`,
          message: 'only for room a',
        });
      }
      // A viewer of room b cannot post into room a.
      b.viewer.emit('send_message', { channel_id: a.channel, message: 'sneaking in' });
      await b.viewer.expectError('You must be a viewer in this channel to send messages');
      await assertQuiet(...everyone);

      a.broadcaster.emit('stop_broadcast', { channel_id: a.channel });
      await a.viewer.expect('broadcaster_stopped', { channel_id: a.channel });
      await assertQuiet(...everyone);

      a.broadcaster.close();
      const args = await a.viewer.next('broadcaster_disconnected');
      assert.ok(args.length === 0 || (args.length === 1 && args[0] === null));
      await assertQuiet(...everyone);

      // Room b carries on.
      b.viewer.emit('offer', { target: b.broadcaster.id, sdp: VIEWER_OFFER });
      await b.broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: b.viewer.id });
      await assertQuiet(...everyone);
    });

    it('keeps the channel and tells no one when a viewer leaves', async (t) => {
      const { peer } = await world(t, client);
      const channel = channelId('leave');
      const broadcaster = await peer('broadcaster', 'websocket');
      broadcaster.emit('join_as_broadcaster', { channel_id: channel });
      await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
      const leaving = await peer('leaving viewer', 'default');
      const staying = await peer('staying viewer', 'websocket');
      for (const v of [leaving, staying]) {
        v.emit('join_as_viewer', { channel_id: channel });
        await v.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
      }
      const leftId = leaving.id;
      leaving.close();
      await new Promise((resolve) => setTimeout(resolve, 500));

      // The one who left is no longer reachable; the one who stayed still is.
      broadcaster.emit('answer', { target: leftId, sdp: BROADCASTER_ANSWER });
      await broadcaster.expectRelayError('answer');
      broadcaster.emit('answer', { target: staying.id, sdp: BROADCASTER_ANSWER });
      await staying.expect('answer', { sdp: BROADCASTER_ANSWER, sender: broadcaster.id });

      staying.emit('join_as_viewer', {});
      const list = await staying.one('channel_list');
      assert.deepEqual(list.channels.map((c) => c.id), [channel]);
      await assertQuiet(broadcaster, staying, leaving);
    });
  });
}
