// The intentional differences from the earlier server and the served page's extensions, seen
// through the official client: legacy pages must keep working around them.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CLIENTS, QUIET_MS, assertQuiet, channelId, world } from '../lib/peer.js';
import { BROADCASTER_ANSWER, VIEWER_OFFER } from '../lib/webrtc.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const client of CLIENTS) {
  describe(`extensions seen by ${client.name}`, () => {
    it('lets the owner go live again with force: true after stop_broadcast, and viewers hear of it', async (t) => {
      const { peer } = await world(t, client);
      const channel = channelId('again');
      const broadcaster = await peer('broadcaster', 'default');
      broadcaster.emit('join_as_broadcaster', { channel_id: channel });
      await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
      const viewers = [await peer('viewer1', 'websocket'), await peer('viewer2', 'polling')];
      for (const v of viewers) {
        v.emit('join_as_viewer', { channel_id: channel });
        await v.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
      }

      broadcaster.emit('stop_broadcast', { channel_id: channel });
      for (const v of viewers) await v.expect('broadcaster_stopped', { channel_id: channel });

      // Without force the channel is taken, by its owner too; with force only the owner may.
      broadcaster.emit('join_as_broadcaster', { channel_id: channel });
      await broadcaster.expectError(`Channel ${channel} already has a broadcaster`);
      const intruder = await peer('intruder', 'websocket');
      intruder.emit('join_as_broadcaster', { channel_id: channel, force: true });
      await intruder.expectError(`Channel ${channel} already has a broadcaster`);
      await assertQuiet(broadcaster, intruder, ...viewers);

      broadcaster.emit('join_as_broadcaster', { channel_id: channel, force: true });
      await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
      for (const v of viewers) {
        await v.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
      }

      // The viewers reconnect their peer connections the usual way.
      for (const v of viewers) {
        v.emit('offer', { target: broadcaster.id, sdp: VIEWER_OFFER });
        await broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: v.id });
        broadcaster.emit('answer', { target: v.id, sdp: BROADCASTER_ANSWER });
        await v.expect('answer', { sdp: BROADCASTER_ANSWER, sender: broadcaster.id });
      }
      await assertQuiet(broadcaster, intruder, ...viewers);
    });

    it('tells the broadcaster its viewer count as viewers come and go', async (t) => {
      const { peer } = await world(t, client);
      const channel = channelId('count');
      const broadcaster = await peer('broadcaster', 'websocket');
      broadcaster.emit('join_as_broadcaster', { channel_id: channel });
      await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
      await sleep(QUIET_MS);
      for (const args of broadcaster.drain('viewer_count')) {
        assert.deepEqual(args, [{ channel_id: channel, count: 0 }], 'an initial count can only be 0');
      }

      const first = await peer('first viewer', 'default');
      first.emit('join_as_viewer', { channel_id: channel });
      await first.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
      await broadcaster.expect('viewer_count', { channel_id: channel, count: 1 });

      const second = await peer('second viewer', 'polling');
      second.emit('join_as_viewer', { channel_id: channel });
      await second.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
      await broadcaster.expect('viewer_count', { channel_id: channel, count: 2 });

      first.close();
      await broadcaster.expect('viewer_count', { channel_id: channel, count: 1 });
      second.close();
      await broadcaster.expect('viewer_count', { channel_id: channel, count: 0 });

      await assertQuiet(broadcaster, first, second);
      assert.deepEqual(broadcaster.drain('viewer_count'), [], 'no further counts');
    });

    it('refuses a channel beyond --max-channels and harms no existing one', async (t) => {
      const { peer } = await world(t, client, { extraArgs: ['--max-channels', '2'] });
      const ids = [channelId('cap1'), channelId('cap2')];
      const owners = [];
      for (const id of ids) {
        const b = await peer(`broadcaster of ${id}`, 'websocket');
        b.emit('join_as_broadcaster', { channel_id: id });
        await b.expect('broadcaster_ready', { id: b.id, channel_id: id });
        owners.push(b);
      }
      const late = await peer('late broadcaster', 'default');
      late.emit('join_as_broadcaster', { channel_id: channelId('cap3') });
      await late.expectErrorPrefix('Server is at capacity');
      late.emit('join_as_broadcaster', {});
      await late.expectErrorPrefix('Server is at capacity');

      const viewer = await peer('viewer', 'websocket');
      viewer.emit('join_as_viewer', {});
      const list = await viewer.one('channel_list');
      assert.deepEqual(list.channels.map((c) => c.id), ids, 'both channels are still there');
      viewer.emit('join_as_viewer', { channel_id: ids[0] });
      await viewer.expect('broadcaster_available', { broadcaster_id: owners[0].id, channel_id: ids[0] });
      await assertQuiet(late, viewer, ...owners);

      // Room frees up when a broadcaster leaves.
      owners[1].close();
      await sleep(500);
      const freed = channelId('cap4');
      late.emit('join_as_broadcaster', { channel_id: freed });
      await late.expect('broadcaster_ready', { id: late.id, channel_id: freed });
      await assertQuiet(late, viewer, ...owners);
    });

    it('adds error codes for a client that asks in its handshake auth, and only for it', async (t) => {
      const { peer } = await world(t, client);
      const channel = channelId('codes');
      const owner = await peer('broadcaster', 'websocket');
      owner.emit('join_as_broadcaster', { channel_id: channel });
      await owner.expect('broadcaster_ready', { id: owner.id, channel_id: channel });
      // Polling first, then the upgrade: the auth of the one handshake holds for both.
      const coded = await peer('coded', 'default', { auth: { error_codes: true } });
      const legacy = await peer('legacy', 'default');

      for (const p of [coded, legacy]) p.emit('join_as_broadcaster', { channel_id: channel });
      const taken = `Channel ${channel} already has a broadcaster`;
      await coded.expect('error', { message: taken, code: 'channel_taken' });
      await legacy.expectError(taken);

      for (const p of [coded, legacy]) p.emit('send_message', { channel_id: channel, message: 'hi' });
      const notViewer = 'You must be a viewer in this channel to send messages';
      await coded.expect('error', { message: notViewer, code: 'not_a_viewer' });
      await legacy.expectError(notViewer);

      await coded.upgraded();
      coded.emit('join_as_viewer', { channel_id: 'a b' });
      const invalid = await coded.one('error');
      assert.equal(invalid.code, 'invalid_payload');
      assert.ok(invalid.message.startsWith('Invalid data: channel_id'), invalid.message);

      for (const p of [coded, legacy]) p.emit('offer', { target: owner.id, sdp: VIEWER_OFFER });
      const message = 'Target is not a peer of yours in any channel';
      await coded.expect('relay_error', { event: 'offer', message, code: 'not_peers' });
      await legacy.expect('relay_error', { event: 'offer', message });
      await assertQuiet(owner, coded, legacy);
    });

    it('reaps an idle channel with channel_expired but never a live one', async (t) => {
      const { peer } = await world(t, client, { extraArgs: ['--channel-ttl-secs', '2'] });
      const idle = channelId('idle');
      const live = channelId('live');
      const idleOwner = await peer('idle broadcaster', 'websocket');
      idleOwner.emit('join_as_broadcaster', { channel_id: idle });
      await idleOwner.expect('broadcaster_ready', { id: idleOwner.id, channel_id: idle });
      const liveOwner = await peer('live broadcaster', 'default');
      liveOwner.emit('join_as_broadcaster', { channel_id: live });
      await liveOwner.expect('broadcaster_ready', { id: liveOwner.id, channel_id: live });
      const viewer = await peer('viewer', 'default');
      viewer.emit('join_as_viewer', { channel_id: live });
      await viewer.expect('broadcaster_available', { broadcaster_id: liveOwner.id, channel_id: live });

      const expired = await idleOwner.next('channel_expired', 10_000);
      assert.deepEqual(expired, [{ channel_id: idle }]);
      await sleep(2_500);

      viewer.emit('join_as_viewer', {});
      const list = await viewer.one('channel_list');
      assert.deepEqual(list.channels.map((c) => c.id), [live], 'only the live channel is left');
      // The live channel still relays; the idle owner's channel is gone for good.
      viewer.emit('offer', { target: liveOwner.id, sdp: VIEWER_OFFER });
      await liveOwner.expect('offer', { sdp: VIEWER_OFFER, sender: viewer.id });
      viewer.emit('join_as_viewer', { channel_id: idle });
      await viewer.expectError(`Channel ${idle} not found or expired`);
      await assertQuiet(idleOwner, liveOwner, viewer);
    });
  });
}
