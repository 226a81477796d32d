// What a legacy page sees when something is refused: relay authorization (`relay_error`, never
// `error`), validation errors with the prefixes pages route by, and the exact texts of the
// core table. Every refusal must reach the sender only, and nobody else may receive anything.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CLIENTS, assertQuiet, channelId, world } from '../lib/peer.js';
import { BROADCASTER_ANSWER, BROADCASTER_CANDIDATES, VIEWER_CANDIDATES, VIEWER_OFFER } from '../lib/webrtc.js';

/** A broadcaster live on a fresh channel with `viewers` viewers joined. */
async function liveChannel(peer, name, { viewers = 1, transport = 'websocket' } = {}) {
  const channel = channelId(name);
  const broadcaster = await peer(`broadcaster of ${name}`, transport);
  broadcaster.emit('join_as_broadcaster', { channel_id: channel });
  await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
  const joined = [];
  for (let i = 1; i <= viewers; i += 1) {
    const viewer = await peer(`viewer ${i} of ${name}`, transport);
    viewer.emit('join_as_viewer', { channel_id: channel });
    await viewer.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
    joined.push(viewer);
  }
  return { channel, broadcaster, viewers: joined, viewer: joined[0] };
}

for (const client of CLIENTS) {
  describe(`refusals seen by ${client.name}`, () => {
    it('refuses relays outside a broadcaster-viewer pair with relay_error; the target receives nothing', async (t) => {
      const { peer } = await world(t, client);
      const a = await liveChannel(peer, 'a', { viewers: 2 });
      const b = await liveChannel(peer, 'b');
      const stranger = await peer('stranger', 'default');

      stranger.emit('offer', { target: a.broadcaster.id, sdp: VIEWER_OFFER });
      await stranger.expectRelayError('offer');
      stranger.emit('answer', { target: a.viewer.id, sdp: BROADCASTER_ANSWER });
      await stranger.expectRelayError('answer');
      stranger.emit('ice_candidate', { target: a.viewer.id, candidate: BROADCASTER_CANDIDATES[0] });
      await stranger.expectRelayError('ice_candidate');

      // A viewer of another channel, a broadcaster of another channel, a fellow viewer.
      b.viewer.emit('offer', { target: a.broadcaster.id, sdp: VIEWER_OFFER });
      await b.viewer.expectRelayError('offer');
      a.broadcaster.emit('answer', { target: b.viewer.id, sdp: BROADCASTER_ANSWER });
      await a.broadcaster.expectRelayError('answer');
      b.broadcaster.emit('ice_candidate', { target: a.broadcaster.id, candidate: BROADCASTER_CANDIDATES[0] });
      await b.broadcaster.expectRelayError('ice_candidate');
      a.viewers[0].emit('ice_candidate', { target: a.viewers[1].id, candidate: VIEWER_CANDIDATES[0] });
      await a.viewers[0].expectRelayError('ice_candidate');

      // Nobody at all.
      stranger.emit('offer', { target: 'no-such-socket-id', sdp: VIEWER_OFFER });
      await stranger.expectRelayError('offer');

      await assertQuiet(stranger, a.broadcaster, ...a.viewers, b.broadcaster, b.viewer);

      // The refused senders are still connected and the real pairs still work.
      a.viewer.emit('offer', { target: a.broadcaster.id, sdp: VIEWER_OFFER });
      await a.broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: a.viewer.id });
      b.broadcaster.emit('answer', { target: b.viewer.id, sdp: BROADCASTER_ANSWER });
      await b.viewer.expect('answer', { sdp: BROADCASTER_ANSWER, sender: b.broadcaster.id });
      await assertQuiet(stranger, a.broadcaster, ...a.viewers, b.broadcaster, b.viewer);
    });

    it('refuses malformed and oversized relays with relay_error and keeps the connection', async (t) => {
      const { peer } = await world(t, client);
      const { broadcaster, viewer } = await liveChannel(peer, 'malformed', { transport: 'default' });
      const target = broadcaster.id;
      const bigSdp = { type: 'offer', sdp: `v=0\r\n${'a=x-filler:0123456789abcdef\r\n'.repeat(2400)}` };
      assert.ok(JSON.stringify(bigSdp).length > 64 * 1024);
      const bigCandidate = { ...VIEWER_CANDIDATES[0], candidate: `${VIEWER_CANDIDATES[0].candidate} ${'x'.repeat(4200)}` };

      const refused = [
        ['offer', { target }],
        ['offer', { target, sdp: null }],
        ['offer', { target, sdp: VIEWER_OFFER.sdp }],
        ['offer', { sdp: VIEWER_OFFER }],
        ['offer', { target: 42, sdp: VIEWER_OFFER }],
        ['offer', { target: null, sdp: VIEWER_OFFER }],
        ['offer', { target, sdp: bigSdp }],
        ['offer', 'not an object'],
        ['offer'],
        ['ice_candidate', { target, candidate: null }],
        ['ice_candidate', { target, candidate: VIEWER_CANDIDATES[0].candidate }],
        ['ice_candidate', { target }],
        ['ice_candidate', { target, candidate: bigCandidate }],
        ['ice_candidate', [target, VIEWER_CANDIDATES[0]]],
      ];
      for (const [event, ...args] of refused) {
        viewer.emit(event, ...args);
        await viewer.expectRelayError(event);
      }
      broadcaster.emit('answer', { target: viewer.id, sdp: [] });
      await broadcaster.expectRelayError('answer');
      await assertQuiet(broadcaster, viewer);

      // Large but legal payloads go through unchanged.
      const largeSdp = { type: 'offer', sdp: `v=0\r\n${'a=x-filler:0123456789abcdef\r\n'.repeat(1800)}` };
      assert.ok(JSON.stringify(largeSdp).length < 60 * 1024);
      viewer.emit('offer', { target, sdp: largeSdp });
      await broadcaster.expect('offer', { sdp: largeSdp, sender: viewer.id });
      const largeCandidate = { ...VIEWER_CANDIDATES[1], candidate: `${VIEWER_CANDIDATES[1].candidate} ${'y'.repeat(3000)}` };
      viewer.emit('ice_candidate', { target, candidate: largeCandidate });
      await broadcaster.expect('ice_candidate', { candidate: largeCandidate, sender: viewer.id });
      await assertQuiet(broadcaster, viewer);
    });

    it('prefixes validation errors with Invalid data:/Invalid alias:/Invalid message:', async (t) => {
      const { peer } = await world(t, client);
      const { channel, broadcaster, viewer } = await liveChannel(peer, 'valid', { viewers: 1 });
      const other = await peer('lonely socket', 'default');

      const cases = [
        [other, 'Invalid data:', 'join_as_broadcaster', { channel_id: 'has space' }],
        [other, 'Invalid data:', 'join_as_broadcaster', { channel_id: 'x'.repeat(21) }],
        [other, 'Invalid data:', 'join_as_broadcaster', { channel_id: 'bad/slash' }],
        [other, 'Invalid data:', 'join_as_broadcaster', { channel_id: 12345678 }],
        [other, 'Invalid data:', 'join_as_broadcaster', { force: 'yes' }],
        [other, 'Invalid data:', 'join_as_broadcaster', 'just a string'],
        [other, 'Invalid data:', 'join_as_viewer', { channel_id: 'ünïcode' }],
        [other, 'Invalid data:', 'join_as_viewer', [channel]],
        [other, 'Invalid data:', 'join_as_viewer', 7],
        [broadcaster, 'Invalid data:', 'stop_broadcast', {}],
        [broadcaster, 'Invalid data:', 'stop_broadcast', { channel_id: '' }],
        [broadcaster, 'Invalid data:', 'stop_broadcast'],
        [broadcaster, 'Invalid data:', 'stop_broadcast', { channel_id: 'no spaces allowed' }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel, alias: 'Bob' }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel, alias: '  Bob  ' }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel, alias: 'x'.repeat(21) }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel, alias: 'Zoë Smith' }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel, alias: '<b>bold</b>' }],
        [viewer, 'Invalid alias:', 'set_alias', { channel_id: channel }],
        [viewer, 'Invalid alias:', 'set_alias', null],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: '' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: ' \n\t ' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'm'.repeat(201) }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'hi <script>alert(1)</script>' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'see <SCRIPT src=x>' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'JavaScript:alert(1)' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: '<img src=x OnError =alert(1)>' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'ring \u0007 bell' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 'del \u007f' }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel, message: 42 }],
        [viewer, 'Invalid message:', 'send_message', { channel_id: channel }],
        [viewer, 'Invalid message:', 'send_message'],
      ];
      for (const [who, prefix, event, ...args] of cases) {
        who.emit(event, ...args);
        await who.expectErrorPrefix(prefix).catch((err) => {
          err.message = `${event} ${JSON.stringify(args)}: ${err.message}`;
          throw err;
        });
      }
      await assertQuiet(broadcaster, viewer, other);

      // None of that harmed the channel.
      other.emit('join_as_viewer', {});
      const list = await other.one('channel_list');
      assert.deepEqual(list.channels.map((c) => c.id), [channel]);
      await assertQuiet(broadcaster, viewer, other);
    });

    it('accepts input at the edges of the limits, trimmed, and ignores unknown fields', async (t) => {
      const { peer } = await world(t, client);
      const channel = 'Az09_-edge-20-chars_';
      assert.equal(channel.length, 20);
      const broadcaster = await peer('broadcaster', 'websocket');
      broadcaster.emit('join_as_broadcaster', { channel_id: channel, force: false, client: 'newer', extra: { a: 1 } });
      await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
      const viewer = await peer('viewer', 'default');
      viewer.emit('join_as_viewer', { channel_id: channel, hint: true });
      await viewer.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });

      for (const [sent, stored] of [['  Bobby  ', 'Bobby'], ['A_b-1', 'A_b-1'], ['Twenty chars exactly', 'Twenty chars exactly']]) {
        viewer.emit('set_alias', { channel_id: channel, alias: sent, colour: 'red' });
        await viewer.expect('alias_set', { alias: stored, success: true });
      }

      const messages = [
        ['line one\nline two\tand a tab\r\nend', 'line one\nline two\tand a tab\r\nend'],
        ['😀'.repeat(200), '😀'.repeat(200)],
        [`  ${'é'.repeat(200)}  `, 'é'.repeat(200)],
        ['I like javascript and scripts', 'I like javascript and scripts'],
      ];
      for (const [sent, relayed] of messages) {
        viewer.emit('send_message', { channel_id: channel, message: sent, format: 'plain' });
        for (const p of [broadcaster, viewer]) {
          const got = await p.one('new_message');
          assert.equal(got.sender_id, 'Twenty chars exactly');
          assert.equal(got.message, relayed);
        }
      }
      await assertQuiet(broadcaster, viewer);
    });

    it('answers each refused core request with its exact error text', async (t) => {
      const { peer } = await world(t, client);
      const { channel, broadcaster, viewer } = await liveChannel(peer, 'texts');
      const other = await liveChannel(peer, 'other');
      const stranger = await peer('stranger', 'default');

      stranger.emit('join_as_broadcaster', { channel_id: channel });
      await stranger.expectError(`Channel ${channel} already has a broadcaster`);
      stranger.emit('join_as_viewer', { channel_id: 'nope-404' });
      await stranger.expectError('Channel nope-404 not found or expired');

      stranger.emit('set_alias', { channel_id: 'nope-404', alias: 'Stranger' });
      await stranger.expectError('Channel not found or expired');
      stranger.emit('set_alias', { channel_id: channel, alias: 'Stranger' });
      await stranger.expectError('You must be a viewer in this channel');
      other.viewer.emit('set_alias', { channel_id: channel, alias: 'Wrong room' });
      await other.viewer.expectError('You must be a viewer in this channel');
      broadcaster.emit('set_alias', { channel_id: channel, alias: 'The host' });
      await broadcaster.expectError('You must be a viewer in this channel');

      stranger.emit('send_message', { channel_id: 'nope-404', message: 'hello?' });
      await stranger.expectError('Channel not found or expired');
      stranger.emit('send_message', { channel_id: channel, message: 'hello?' });
      await stranger.expectError('You must be a viewer in this channel to send messages');
      broadcaster.emit('send_message', { channel_id: channel, message: 'hello from the host' });
      await broadcaster.expectError('You must be a viewer in this channel to send messages');

      stranger.emit('stop_broadcast', { channel_id: 'nope-404' });
      await stranger.expectError('Channel not found or expired');
      viewer.emit('stop_broadcast', { channel_id: channel });
      await viewer.expectError('You are not the broadcaster of this channel');
      other.broadcaster.emit('stop_broadcast', { channel_id: channel });
      await other.broadcaster.expectError('You are not the broadcaster of this channel');

      await assertQuiet(stranger, broadcaster, viewer, other.broadcaster, other.viewer);

      // The refused broadcaster took nothing over: the owner still relays with its viewer.
      viewer.emit('offer', { target: broadcaster.id, sdp: VIEWER_OFFER });
      await broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: viewer.id });
      await assertQuiet(stranger, broadcaster, viewer, other.broadcaster, other.viewer);
    });
  });
}
