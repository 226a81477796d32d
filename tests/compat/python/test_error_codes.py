"""Error codes through the official Python client: a client that asks in its handshake
(`auth={"error_codes": True}`) gets a `code` beside each message; one that does not gets
exactly the legacy payloads."""

import pytest

from conftest import assert_quiet, channel_id


@pytest.mark.parametrize("transport", ["default", "polling"])
def test_codes_only_for_clients_that_ask(world, transport):
    world.start()
    channel = channel_id("codes")
    owner = world.peer("broadcaster", "websocket")
    owner.emit("join_as_broadcaster", {"channel_id": channel})
    owner.expect("broadcaster_ready", {"id": owner.id, "channel_id": channel})
    coded = world.peer("coded", transport, auth={"error_codes": True})
    legacy = world.peer("legacy", transport)

    for p in (coded, legacy):
        p.emit("join_as_viewer", {"channel_id": "nope-404"})
    coded.expect("error", {"message": "Channel nope-404 not found or expired", "code": "channel_not_found"})
    legacy.expect_error("Channel nope-404 not found or expired")

    for p in (coded, legacy):
        p.emit("stop_broadcast", {"channel_id": channel})
    coded.expect("error", {"message": "You are not the broadcaster of this channel", "code": "not_the_broadcaster"})
    legacy.expect_error("You are not the broadcaster of this channel")

    for p in (coded, legacy):
        p.emit("set_alias", {"channel_id": channel, "alias": "x"})
    payload = coded.one("error")
    assert payload["code"] == "invalid_payload" and payload["message"].startswith("Invalid alias:")
    legacy.expect_error_prefix("Invalid alias:")

    for p in (coded, legacy):
        p.emit("answer", {"target": owner.id, "sdp": {"type": "answer", "sdp": "v=0"}})
    message = "Target is not a peer of yours in any channel"
    coded.expect("relay_error", {"event": "answer", "message": message, "code": "not_peers"})
    legacy.expect("relay_error", {"event": "answer", "message": message})
    assert_quiet(owner, coded, legacy)
