//! Error codes (EXTENSIONS.md, "Error codes"): a client that asks for them in its handshake gets
//! a `code` for each cause of `error` and `relay_error`; every other client gets exactly the
//! payloads legacy pages know, with the same sentences.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, coded, sample_sdp, spawn_app};

/// An argon2 hash or check is slow on purpose, slower in a debug build with other tests running.
const HASHING: Duration = Duration::from_secs(30);

/// The next event, which must be `event`, after a password was hashed or checked.
async fn after_hashing(client: &mut Client, event: &str) -> Value {
    let (name, mut args) = tokio::time::timeout(HASHING, client.next_event())
        .await
        .unwrap_or_else(|_| panic!("{event} within {HASHING:?}"))
        .expect("connection open");
    assert_eq!(name, event, "expected {event}, got {name} {args:?}");
    assert_eq!(args.len(), 1, "{event} carries exactly one argument");
    args.remove(0)
}

/// A broadcaster on `channel` (legacy: it is not the one under test).
async fn live(app: &TestApp, channel: &str) -> Client {
    let mut broadcaster = app.client().await;
    broadcaster.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    broadcaster.expect("broadcaster_ready").await;
    broadcaster
}

#[tokio::test]
async fn codes_go_only_to_clients_that_ask() {
    let app = spawn_app(&[]).await;
    let _owner = live(&app, "room").await;
    let mut legacy = app.client().await;
    let mut coded_client = app.client_with_codes().await;
    // Asking for something else, or not exactly `true`, is not asking.
    let mut other_auth =
        Client::connect_with_auth(&app.ws_url(), Some(json!({"token": "x"}))).await;
    let mut not_true =
        Client::connect_with_auth(&app.ws_url(), Some(json!({"error_codes": "yes"}))).await;

    for (event, payload) in [
        ("join_as_viewer", json!({"channel_id": "nowhere"})),
        ("join_as_broadcaster", json!({"channel_id": "room"})),
        (
            "send_message",
            json!({"channel_id": "room", "message": "hi"}),
        ),
        ("set_alias", json!({"channel_id": "room", "alias": "x"})),
    ] {
        legacy.emit(event, payload.clone());
        let plain = legacy.expect("error").await;
        assert_eq!(plain.as_object().map(|o| o.len()), Some(1), "{plain}");
        for client in [&mut other_auth, &mut not_true] {
            client.emit(event, payload.clone());
            assert_eq!(client.expect("error").await, plain);
        }
        coded_client.emit(event, payload);
        let with_code = coded_client.expect("error").await;
        assert!(with_code["code"].is_string(), "{with_code}");
        // The same sentence for people either way.
        assert_eq!(with_code["message"], plain["message"]);
    }

    let stranger = "nobody-at-all";
    legacy.emit(
        "offer",
        json!({"target": stranger, "sdp": sample_sdp("offer")}),
    );
    let message = legacy.expect_relay_error("offer").await;
    coded_client.emit(
        "offer",
        json!({"target": stranger, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        coded_client
            .expect_coded_relay_error("offer", "not_peers")
            .await,
        message
    );
}

#[tokio::test]
async fn each_cause_has_its_code() {
    let app = spawn_app(&[]).await;
    let mut owner = live(&app, "room").await;
    let mut c = app.client_with_codes().await;

    // Not found: the joins name the channel, the other events do not; one code.
    c.emit("join_as_viewer", json!({"channel_id": "nowhere"}));
    assert_eq!(
        c.expect_coded_error("channel_not_found").await,
        "Channel nowhere not found or expired"
    );
    c.emit("stop_broadcast", json!({"channel_id": "nowhere"}));
    assert_eq!(
        c.expect_coded_error("channel_not_found").await,
        "Channel not found or expired"
    );

    c.emit("join_as_broadcaster", json!({"channel_id": "room"}));
    assert_eq!(
        c.expect_coded_error("channel_taken").await,
        "Channel room already has a broadcaster"
    );

    // Invalid payloads keep their event's prefix.
    c.emit("join_as_viewer", json!({"channel_id": "a b"}));
    assert!(
        c.expect_coded_error("invalid_payload")
            .await
            .starts_with("Invalid data: channel_id")
    );
    c.emit("set_alias", json!({"channel_id": "room", "alias": "Bo"}));
    assert!(
        c.expect_coded_error("invalid_payload")
            .await
            .starts_with("Invalid alias:")
    );
    c.emit(
        "send_message",
        json!({"channel_id": "room", "message": "<script>x</script>"}),
    );
    assert!(
        c.expect_coded_error("invalid_payload")
            .await
            .starts_with("Invalid message:")
    );

    // Not a viewer: both of the earlier server's sentences, one code.
    c.emit(
        "send_message",
        json!({"channel_id": "room", "message": "hi"}),
    );
    assert_eq!(
        c.expect_coded_error("not_a_viewer").await,
        "You must be a viewer in this channel to send messages"
    );
    c.emit("set_alias", json!({"channel_id": "room", "alias": "Alice"}));
    assert_eq!(
        c.expect_coded_error("not_a_viewer").await,
        "You must be a viewer in this channel"
    );
    c.emit("relay_ready", json!({"channel_id": "room"}));
    c.expect_coded_error("not_a_viewer").await;

    c.emit("stop_broadcast", json!({"channel_id": "room"}));
    assert_eq!(
        c.expect_coded_error("not_the_broadcaster").await,
        "You are not the broadcaster of this channel"
    );

    // Relays: a stranger, and a malformed payload.
    c.emit(
        "offer",
        json!({"target": owner.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        c.expect_coded_relay_error("offer", "not_peers").await,
        "Target is not a peer of yours in any channel"
    );
    c.emit("ice_candidate", json!({"target": owner.sid}));
    assert_eq!(
        c.expect_coded_relay_error("ice_candidate", "invalid_payload")
            .await,
        "candidate is required"
    );
    c.assert_silent().await;
    owner.assert_silent().await;
}

#[tokio::test]
async fn quotas_and_capacity_have_their_codes() {
    let app = spawn_app(&["--max-channels", "2", "--max-channels-per-socket", "1"]).await;
    let mut c = app.client_with_codes().await;
    c.emit("join_as_broadcaster", json!({"channel_id": "one"}));
    c.expect("broadcaster_ready").await;
    c.emit("join_as_broadcaster", json!({"channel_id": "two"}));
    c.expect_coded_error("too_many_channels").await;
    let _other = live(&app, "two").await;
    let mut late = app.client_with_codes().await;
    late.emit("join_as_broadcaster", json!({"channel_id": "three"}));
    assert!(
        late.expect_coded_error("at_capacity")
            .await
            .starts_with("Server is at capacity")
    );
}

#[tokio::test]
async fn missing_and_wrong_passwords_have_their_own_codes() {
    let app = spawn_app(&[]).await;
    let mut owner = app.client().await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "secret", "password": "open sesame"}),
    );
    after_hashing(&mut owner, "broadcaster_ready").await;
    let sentence = "Invalid data: password is missing or wrong for this channel";

    let mut c = app.client_with_codes().await;
    c.emit("join_as_viewer", json!({"channel_id": "secret"}));
    assert_eq!(c.expect_coded_error("password_required").await, sentence);
    c.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": "open sesame!"}),
    );
    let payload = after_hashing(&mut c, "error").await;
    assert_eq!(coded(&payload, "wrong_password", 2), sentence);

    // A legacy client reads one answer for both, as before.
    let mut legacy = app.client().await;
    legacy.emit("join_as_viewer", json!({"channel_id": "secret"}));
    legacy.expect_error(sentence).await;
    legacy.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": "nope"}),
    );
    assert_eq!(
        after_hashing(&mut legacy, "error").await,
        json!({ "message": sentence })
    );
}

#[tokio::test]
async fn rate_limits_have_their_code_and_keep_the_prefix() {
    let app = spawn_app(&["--rate-chat", "1", "--rate-sdp", "1"]).await;
    let mut owner = live(&app, "room").await;
    let mut c = app.client_with_codes().await;
    // Chat: a burst of five, each refused for its own reason, then the rate.
    for _ in 0..5 {
        c.emit(
            "send_message",
            json!({"channel_id": "room", "message": "hi"}),
        );
        c.expect_coded_error("not_a_viewer").await;
    }
    c.emit(
        "send_message",
        json!({"channel_id": "room", "message": "hi"}),
    );
    assert_eq!(
        c.expect_coded_error("rate_limited").await,
        "Invalid message: too many requests; wait a moment and try again"
    );

    // Relays: two offers to the broadcaster go through, the third is over the pair's rate.
    let mut viewer = app.client_with_codes().await;
    viewer.emit("join_as_viewer", json!({"channel_id": "room"}));
    viewer.expect("broadcaster_available").await;
    owner.expect("viewer_count").await;
    for _ in 0..2 {
        viewer.emit(
            "offer",
            json!({"target": owner.sid, "sdp": sample_sdp("offer")}),
        );
        owner.expect("offer").await;
    }
    viewer.emit(
        "offer",
        json!({"target": owner.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        viewer
            .expect_coded_relay_error("offer", "rate_limited")
            .await,
        "Too many offer messages to this peer; wait a moment and try again"
    );
    owner.assert_silent().await;
}
