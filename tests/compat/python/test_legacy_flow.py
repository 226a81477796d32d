"""The legacy broadcast flow driven by the official Python client (`socketio.Client`) against the
real server: default transports (polling, then upgrade), WebSocket only and polling only."""

import time

import pytest

from conftest import assert_quiet, channel_id

VIEWER_OFFER = {
    "type": "offer",
    "sdp": "\r\n".join([
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Vw3q",
        "a=ice-pwd:Yl2fGd3e1kB8xAp4Q0sJtLm+",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 5B:1F:0C:8A:3E:77:91:D2:4C:AA:6E:0F:BB:13:29:E4:7D:55:08:C1:9A:2B:F3:66:40:DE:71:8C:05:B9:EA:12",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Vw3q",
        "a=ice-pwd:Yl2fGd3e1kB8xAp4Q0sJtLm+",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 5B:1F:0C:8A:3E:77:91:D2:4C:AA:6E:0F:BB:13:29:E4:7D:55:08:C1:9A:2B:F3:66:40:DE:71:8C:05:B9:EA:12",
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "",
    ]),
}

BROADCASTER_ANSWER = {
    "type": "answer",
    "sdp": "\r\n".join([
        "v=0",
        "o=- 8291735710325993402 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS 3f1c9d2e-6a4b-4e0f-9b7d-1c2a3b4c5d6e",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Kp9z",
        "a=ice-pwd:Qm7rT2vX9cB4nL1wE6yH0sUa",
        "a=fingerprint:sha-256 A0:9C:44:21:7E:D3:58:BB:06:1F:C2:9D:73:E8:4A:35:0B:6F:D1:82:2C:97:E5:48:3A:BF:60:14:C7:D9:2E:81",
        "a=setup:active",
        "a=mid:0",
        "a=sendonly",
        "a=msid:3f1c9d2e-6a4b-4e0f-9b7d-1c2a3b4c5d6e 8e2d1c0b-aaaa-4bbb-8ccc-0d1e2f3a4b5c",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=ssrc:2231627014 cname:4TOk42mSjXCkVIa6",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Kp9z",
        "a=ice-pwd:Qm7rT2vX9cB4nL1wE6yH0sUa",
        "a=fingerprint:sha-256 A0:9C:44:21:7E:D3:58:BB:06:1F:C2:9D:73:E8:4A:35:0B:6F:D1:82:2C:97:E5:48:3A:BF:60:14:C7:D9:2E:81",
        "a=setup:active",
        "a=mid:1",
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=ssrc:1498327651 cname:4TOk42mSjXCkVIa6",
        "",
    ]),
}

VIEWER_CANDIDATES = [
    {
        "candidate": "candidate:1467250027 1 udp 2122260223 192.168.1.23 53094 typ host generation 0 ufrag Vw3q network-id 1",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "Vw3q",
    },
    {
        "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 53094 typ srflx raddr 192.168.1.23 rport 53094 generation 0 ufrag Vw3q",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "Vw3q",
    },
]

BROADCASTER_CANDIDATES = [
    {
        "candidate": "candidate:3921043725 1 udp 2122262783 3f6c1e7a-52d4-4b8e-9a10-6c2d7e8f9a0b.local 61457 typ host generation 0 ufrag Kp9z",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "Kp9z",
    },
    {
        "candidate": "candidate:2743419163 1 tcp 1518280447 192.168.1.40 9 typ host tcptype active generation 0 ufrag Kp9z",
        "sdpMid": "1",
        "sdpMLineIndex": 1,
        "usernameFragment": "Kp9z",
    },
]

# The transport each configured mode ends up on.
FINAL_TRANSPORT = {"default": "websocket", "websocket": "websocket", "polling": "polling"}


def is_float_seconds(value, not_before):
    return isinstance(value, float) and not_before - 1 <= value <= time.time() + 1


def assert_channel_entry(entry, channel, broadcaster_sid, not_before):
    assert sorted(entry) == ["age_seconds", "broadcaster_sid", "created_at", "id", "last_activity"]
    assert entry["id"] == channel
    assert entry["broadcaster_sid"] == broadcaster_sid
    assert is_float_seconds(entry["created_at"], not_before), entry
    assert is_float_seconds(entry["last_activity"], entry["created_at"] - 0.001), entry
    age = entry["age_seconds"]
    assert isinstance(age, int) and not isinstance(age, bool), entry
    assert 0 <= age <= time.time() - not_before + 1


def assert_new_message(payload, sender_id, message):
    assert sorted(payload) == ["message", "sender_id", "timestamp"]
    assert payload["sender_id"] == sender_id
    assert payload["message"] == message
    assert isinstance(payload["timestamp"], float)
    assert abs(payload["timestamp"] - time.time()) < 5
    return payload


@pytest.mark.parametrize(
    "modes",
    [
        ("default", "default", "default"),
        ("websocket", "websocket", "websocket"),
        ("polling", "polling", "polling"),
        ("polling", "default", "websocket"),
    ],
    ids=["default-transports", "websocket-only", "polling-only", "mixed"],
)
def test_legacy_flow(world, modes):
    world.start()
    channel = channel_id("live")
    started_at = time.time()

    broadcaster = world.peer("broadcaster", modes[0])
    broadcaster.emit("join_as_broadcaster", {"channel_id": channel})
    broadcaster.expect("broadcaster_ready", {"id": broadcaster.id, "channel_id": channel})

    viewer1 = world.peer("viewer1", modes[1])
    assert viewer1.id != broadcaster.id
    viewer1.emit("join_as_viewer", {})
    listing = viewer1.one("channel_list")
    assert list(listing) == ["channels"]
    assert len(listing["channels"]) == 1, listing
    assert_channel_entry(listing["channels"][0], channel, broadcaster.id, started_at)

    viewer1.emit("join_as_viewer", {"channel_id": channel})
    viewer1.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})

    viewer1.emit("offer", {"target": broadcaster.id, "sdp": VIEWER_OFFER})
    broadcaster.expect("offer", {"sdp": VIEWER_OFFER, "sender": viewer1.id})
    broadcaster.emit("answer", {"target": viewer1.id, "sdp": BROADCASTER_ANSWER})
    viewer1.expect("answer", {"sdp": BROADCASTER_ANSWER, "sender": broadcaster.id})

    for candidate in VIEWER_CANDIDATES:
        viewer1.emit("ice_candidate", {"target": broadcaster.id, "candidate": candidate})
    for candidate in BROADCASTER_CANDIDATES:
        broadcaster.emit("ice_candidate", {"target": viewer1.id, "candidate": candidate})
    for candidate in VIEWER_CANDIDATES:
        broadcaster.expect("ice_candidate", {"candidate": candidate, "sender": viewer1.id})
    for candidate in BROADCASTER_CANDIDATES:
        viewer1.expect("ice_candidate", {"candidate": candidate, "sender": broadcaster.id})

    viewer2 = world.peer("viewer2", modes[2])
    viewer2.emit("join_as_viewer", {"channel_id": channel})
    viewer2.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})

    viewer1.emit("set_alias", {"channel_id": channel, "alias": "Alice Smith"})
    viewer1.expect("alias_set", {"alias": "Alice Smith", "success": True})

    viewer1.emit("send_message", {"channel_id": channel, "message": "Hello everyone! 👋"})
    received = [
        assert_new_message(p.one("new_message"), "Alice Smith", "Hello everyone! 👋")
        for p in (broadcaster, viewer1, viewer2)
    ]
    assert received[0] == received[1] == received[2], "the same message reaches everyone"

    viewer2.emit("send_message", {"channel_id": channel, "message": "  nice stream\nthanks  "})
    anonymous = "Viewer-" + viewer2.id[:8]
    for p in (broadcaster, viewer1, viewer2):
        assert_new_message(p.one("new_message"), anonymous, "nice stream\nthanks")

    broadcaster.emit("stop_broadcast", {"channel_id": channel})
    viewer1.expect("broadcaster_stopped", {"channel_id": channel})
    viewer2.expect("broadcaster_stopped", {"channel_id": channel})
    viewer2.emit("join_as_viewer", {})
    after_stop = viewer2.one("channel_list")
    assert [c["id"] for c in after_stop["channels"]] == [channel], "a stopped channel stays listed"

    assert_quiet(broadcaster, viewer1, viewer2)
    for peer, mode in zip((broadcaster, viewer1, viewer2), modes):
        assert peer.transport == FINAL_TRANSPORT[mode], peer.label

    broadcaster.close()
    for p in (viewer1, viewer2):
        args = p.next("broadcaster_disconnected")
        assert args in ([], [None]), f"{p.label}: broadcaster_disconnected carries nothing, got {args}"
    viewer1.emit("join_as_viewer", {})
    viewer1.expect("channel_list", {"channels": []})
    viewer2.emit("join_as_viewer", {"channel_id": channel})
    viewer2.expect_error(f"Channel {channel} not found or expired")
    assert_quiet(broadcaster, viewer1, viewer2)


@pytest.mark.parametrize("transport", ["default", "websocket"])
def test_fresh_channel_id_when_absent(world, transport):
    world.start()
    seen = set()
    peers = []
    for args in [(), (None,), ({},), ({"channel_id": None},), ({"channel_id": ""},)]:
        b = world.peer(f"broadcaster {args}", transport)
        peers.append(b)
        b.emit("join_as_broadcaster", *args)
        ready = b.one("broadcaster_ready")
        assert sorted(ready) == ["channel_id", "id"]
        assert ready["id"] == b.id
        cid = ready["channel_id"]
        assert len(cid) == 8 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in cid), cid
        assert cid not in seen
        seen.add(cid)
    assert_quiet(*peers)


@pytest.mark.parametrize("transport", ["default", "websocket"])
def test_strangers_get_relay_error_and_targets_nothing(world, transport):
    world.start()
    channel = channel_id("guarded")
    broadcaster = world.peer("broadcaster", transport)
    broadcaster.emit("join_as_broadcaster", {"channel_id": channel})
    broadcaster.expect("broadcaster_ready", {"id": broadcaster.id, "channel_id": channel})
    viewer = world.peer("viewer", transport)
    viewer.emit("join_as_viewer", {"channel_id": channel})
    viewer.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})
    stranger = world.peer("stranger", transport)

    stranger.emit("offer", {"target": broadcaster.id, "sdp": VIEWER_OFFER})
    stranger.expect_relay_error("offer")
    stranger.emit("answer", {"target": viewer.id, "sdp": BROADCASTER_ANSWER})
    stranger.expect_relay_error("answer")
    stranger.emit("ice_candidate", {"target": viewer.id, "candidate": BROADCASTER_CANDIDATES[0]})
    stranger.expect_relay_error("ice_candidate")
    viewer.emit("ice_candidate", {"target": broadcaster.id, "candidate": None})
    viewer.expect_relay_error("ice_candidate")
    viewer.emit("offer", {"target": broadcaster.id})
    viewer.expect_relay_error("offer")
    assert_quiet(broadcaster, viewer, stranger)

    viewer.emit("offer", {"target": broadcaster.id, "sdp": VIEWER_OFFER})
    broadcaster.expect("offer", {"sdp": VIEWER_OFFER, "sender": viewer.id})
    assert_quiet(broadcaster, viewer, stranger)


def test_validation_errors_have_the_documented_prefixes(world):
    world.start()
    channel = channel_id("valid")
    broadcaster = world.peer("broadcaster", "websocket")
    broadcaster.emit("join_as_broadcaster", {"channel_id": channel})
    broadcaster.expect("broadcaster_ready", {"id": broadcaster.id, "channel_id": channel})
    viewer = world.peer("viewer", "default")
    viewer.emit("join_as_viewer", {"channel_id": channel})
    viewer.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})
    other = world.peer("lonely socket", "default")

    cases = [
        (other, "Invalid data:", "join_as_broadcaster", {"channel_id": "has space"}),
        (other, "Invalid data:", "join_as_broadcaster", {"channel_id": "x" * 21}),
        (other, "Invalid data:", "join_as_broadcaster", "just a string"),
        (other, "Invalid data:", "join_as_viewer", {"channel_id": 42}),
        (broadcaster, "Invalid data:", "stop_broadcast", {}),
        (viewer, "Invalid alias:", "set_alias", {"channel_id": channel, "alias": "Bob"}),
        (viewer, "Invalid alias:", "set_alias", {"channel_id": channel, "alias": "  Bob  "}),
        (viewer, "Invalid alias:", "set_alias", {"channel_id": channel, "alias": "Zoë Smith"}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "   "}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "m" * 201}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "<script>x</script>"}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "javascript:alert(1)"}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "img onload =x"}),
        (viewer, "Invalid message:", "send_message", {"channel_id": channel, "message": "bell \x07"}),
    ]
    for who, prefix, event, payload in cases:
        who.emit(event, payload)
        try:
            who.expect_error_prefix(prefix)
        except AssertionError as err:
            raise AssertionError(f"{event} {payload!r}: {err}") from None
    assert_quiet(broadcaster, viewer, other)

    # 200 characters (not bytes) is still fine, and tabs and newlines are allowed.
    for message in ["😀" * 200, "line one\nline two\tend"]:
        viewer.emit("send_message", {"channel_id": channel, "message": message})
        for p in (broadcaster, viewer):
            assert_new_message(p.one("new_message"), "Viewer-" + viewer.id[:8], message)
    assert_quiet(broadcaster, viewer, other)


def test_core_error_texts(world):
    world.start()
    channel = channel_id("texts")
    broadcaster = world.peer("broadcaster", "websocket")
    broadcaster.emit("join_as_broadcaster", {"channel_id": channel})
    broadcaster.expect("broadcaster_ready", {"id": broadcaster.id, "channel_id": channel})
    viewer = world.peer("viewer", "websocket")
    viewer.emit("join_as_viewer", {"channel_id": channel})
    viewer.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})
    stranger = world.peer("stranger", "default")

    stranger.emit("join_as_broadcaster", {"channel_id": channel})
    stranger.expect_error(f"Channel {channel} already has a broadcaster")
    stranger.emit("join_as_viewer", {"channel_id": "nope-404"})
    stranger.expect_error("Channel nope-404 not found or expired")
    stranger.emit("set_alias", {"channel_id": "nope-404", "alias": "Stranger"})
    stranger.expect_error("Channel not found or expired")
    stranger.emit("set_alias", {"channel_id": channel, "alias": "Stranger"})
    stranger.expect_error("You must be a viewer in this channel")
    stranger.emit("send_message", {"channel_id": channel, "message": "hello?"})
    stranger.expect_error("You must be a viewer in this channel to send messages")
    viewer.emit("stop_broadcast", {"channel_id": channel})
    viewer.expect_error("You are not the broadcaster of this channel")
    stranger.emit("stop_broadcast", {"channel_id": "nope-404"})
    stranger.expect_error("Channel not found or expired")
    assert_quiet(broadcaster, viewer, stranger)


@pytest.mark.parametrize("transport", ["default", "websocket", "polling"])
def test_transport_settings_and_large_messages(world, transport):
    """Ping 25 s / 20 s as before, and a ~930 kB message inside the 1,000,000-byte bound is
    refused by content (relay_error), not by dropping the connection."""
    world.start()
    channel = channel_id("big")
    broadcaster = world.peer("broadcaster", "websocket")
    broadcaster.emit("join_as_broadcaster", {"channel_id": channel})
    broadcaster.expect("broadcaster_ready", {"id": broadcaster.id, "channel_id": channel})
    viewer = world.peer("viewer", transport)
    assert (viewer.sio.eio.ping_interval, viewer.sio.eio.ping_timeout) == (25.0, 20.0)
    viewer.emit("join_as_viewer", {"channel_id": channel})
    viewer.expect("broadcaster_available", {"broadcaster_id": broadcaster.id, "channel_id": channel})

    huge_sdp = {"type": "offer", "sdp": "v=0\r\n" + "a=x-filler:0123456789abcdef\r\n" * 30_000}
    viewer.emit("offer", {"target": broadcaster.id, "sdp": huge_sdp})
    viewer.expect_relay_error("offer")
    assert_quiet(broadcaster, viewer)

    viewer.emit("offer", {"target": broadcaster.id, "sdp": VIEWER_OFFER})
    broadcaster.expect("offer", {"sdp": VIEWER_OFFER, "sender": viewer.id})
    assert_quiet(broadcaster, viewer)
