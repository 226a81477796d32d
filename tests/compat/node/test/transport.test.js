// The transport settings the earlier server had and legacy pages were tuned for: ping 25 s /
// 20 s, and a 1,000,000-byte bound on inbound messages on polling and WebSocket alike.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CLIENTS, assertQuiet, channelId, world } from '../lib/peer.js';
import { VIEWER_OFFER } from '../lib/webrtc.js';

const MESSAGE_BOUND = 1_000_000;

for (const client of CLIENTS) {
  describe(`transport settings seen by ${client.name}`, () => {
    it('announces ping 25 s / 20 s, a 1,000,000-byte payload bound and the WebSocket upgrade', async (t) => {
      const { peer } = await world(t, client);
      const polling = await peer('polling first', 'default');
      assert.deepEqual(
        {
          upgrades: polling.handshake.upgrades,
          pingInterval: polling.handshake.pingInterval,
          pingTimeout: polling.handshake.pingTimeout,
          maxPayload: polling.handshake.maxPayload,
        },
        { upgrades: ['websocket'], pingInterval: 25_000, pingTimeout: 20_000, maxPayload: MESSAGE_BOUND },
      );
      const websocket = await peer('websocket only', 'websocket');
      assert.equal(websocket.handshake.pingInterval, 25_000);
      assert.equal(websocket.handshake.pingTimeout, 20_000);
      await polling.upgraded();
      await assertQuiet(polling, websocket);
    });

    it('on SIGTERM closes the transport, not the session, so legacy pages reconnect by themselves', async (t) => {
      const { server, peer } = await world(t, client);
      const peers = [await peer('polling', 'polling'), await peer('websocket', 'websocket')];
      const reasons = Promise.all(
        peers.map((p) => new Promise((resolve) => p.socket.once('disconnect', resolve))),
      );
      const exit = await server.stop();
      // "io server disconnect" would tell the client not to reconnect: a deploy would leave
      // every legacy page dead until reloaded.
      assert.deepEqual(await reasons, ['transport close', 'transport close']);
      assert.deepEqual(exit, { code: 0, signal: null }, 'the server stops by itself, in time');
    });

    for (const transport of ['polling', 'websocket']) {
      it(`takes messages just under the bound over ${transport} and refuses them by content, not by closing`, async (t) => {
        const { peer } = await world(t, client);
        const channel = channelId('big');
        const broadcaster = await peer('broadcaster', 'websocket');
        broadcaster.emit('join_as_broadcaster', { channel_id: channel });
        await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
        const viewer = await peer('viewer', transport);
        viewer.emit('join_as_viewer', { channel_id: channel });
        await viewer.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });

        // ~950 kB: inside the transport bound, far over the 64 KiB relay limit for an SDP.
        const hugeSdp = { type: 'offer', sdp: `v=0\r\n${'a=x-filler:0123456789abcdef\r\n'.repeat(30_000)}` };
        const size = JSON.stringify(['offer', { target: broadcaster.id, sdp: hugeSdp }]).length;
        assert.ok(size > 900_000 && size < MESSAGE_BOUND - 1_000, `packet is ${size} bytes`);
        viewer.emit('offer', { target: broadcaster.id, sdp: hugeSdp });
        await viewer.expectRelayError('offer');

        viewer.emit('send_message', { channel_id: channel, message: 'x'.repeat(900_000) });
        await viewer.expectErrorPrefix('Invalid message:');
        await assertQuiet(broadcaster, viewer);

        // Still the same connection, still relaying.
        viewer.emit('offer', { target: broadcaster.id, sdp: VIEWER_OFFER });
        await broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: viewer.id });
        await assertQuiet(broadcaster, viewer);
      });

      it(`survives a message over the bound over ${transport} without harming anyone else`, async (t) => {
        const { peer } = await world(t, client);
        const channel = channelId('over');
        const broadcaster = await peer('broadcaster', 'websocket');
        broadcaster.emit('join_as_broadcaster', { channel_id: channel });
        await broadcaster.expect('broadcaster_ready', { id: broadcaster.id, channel_id: channel });
        const viewer = await peer('viewer', 'default');
        viewer.emit('join_as_viewer', { channel_id: channel });
        await viewer.expect('broadcaster_available', { broadcaster_id: broadcaster.id, channel_id: channel });
        const flooder = await peer('flooder', transport);

        // Whatever the server does with the flooder (dropping the message or the connection),
        // it must not relay it and the others must not notice.
        flooder.closedByTest = true;
        flooder.emit('send_message', { channel_id: channel, message: 'x'.repeat(1_200_000) });
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        flooder.drain('error');

        viewer.emit('offer', { target: broadcaster.id, sdp: VIEWER_OFFER });
        await broadcaster.expect('offer', { sdp: VIEWER_OFFER, sender: viewer.id });
        viewer.emit('join_as_viewer', {});
        const list = await viewer.one('channel_list');
        assert.deepEqual(list.channels.map((c) => c.id), [channel]);
        await assertQuiet(broadcaster, viewer, flooder);
      });
    }
  });
}
