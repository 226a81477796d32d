//! PROTOCOL.md's core event table, row by row, against the real server.

use crate::helpers::{channel_with_viewer, sample_candidate, sample_sdp, spawn_app};
use serde_json::json;

#[tokio::test]
async fn connection_sends_client_id_matching_socket_id() {
    let app = spawn_app(&[]).await;
    // `Client::connect` asserts `client_id {id}` equals the handshake sid.
    let mut client = app.client().await;
    client.assert_silent().await;
}

#[tokio::test]
async fn broadcaster_joins_with_generated_channel_id() {
    let app = spawn_app(&[]).await;
    let mut b = app.client().await;
    for payload in [
        None,
        Some(json!(null)),
        Some(json!({})),
        Some(json!({"channel_id": ""})),
    ] {
        let mut fresh = app.client().await;
        match payload {
            None => fresh.emit_bare("join_as_broadcaster"),
            Some(p) => fresh.emit("join_as_broadcaster", p),
        }
        let ready = fresh.expect("broadcaster_ready").await;
        assert_eq!(ready["id"], fresh.sid.as_str());
        let id = ready["channel_id"].as_str().expect("channel_id");
        assert_eq!(id.len(), 8);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{id}"
        );
        assert_eq!(ready.as_object().map(|o| o.len()), Some(2));
    }
    b.emit("join_as_broadcaster", json!({"channel_id": "room-1"}));
    assert_eq!(
        b.expect("broadcaster_ready").await,
        json!({"id": b.sid, "channel_id": "room-1"})
    );
    b.assert_silent().await;
}

#[tokio::test]
async fn second_broadcaster_on_a_channel_is_refused() {
    let app = spawn_app(&[]).await;
    let mut first = app.client().await;
    first.emit("join_as_broadcaster", json!({"channel_id": "taken"}));
    first.expect("broadcaster_ready").await;
    let mut second = app.client().await;
    second.emit("join_as_broadcaster", json!({"channel_id": "taken"}));
    second
        .expect_error("Channel taken already has a broadcaster")
        .await;
    // force does not let anyone else take over a live broadcast.
    second.emit(
        "join_as_broadcaster",
        json!({"channel_id": "taken", "force": true}),
    );
    second
        .expect_error("Channel taken already has a broadcaster")
        .await;
    first.assert_silent().await;
}

#[tokio::test]
async fn viewer_without_channel_gets_the_list_oldest_first() {
    let app = spawn_app(&[]).await;
    let mut viewer = app.client().await;
    viewer.emit("join_as_viewer", json!({}));
    assert_eq!(viewer.expect("channel_list").await, json!({"channels": []}));

    let mut b1 = app.client().await;
    b1.emit("join_as_broadcaster", json!({"channel_id": "older"}));
    b1.expect("broadcaster_ready").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut b2 = app.client().await;
    b2.emit("join_as_broadcaster", json!({"channel_id": "newer"}));
    b2.expect("broadcaster_ready").await;

    for payload in [None, Some(json!(null)), Some(json!({"channel_id": null}))] {
        match payload {
            None => viewer.emit_bare("join_as_viewer"),
            Some(p) => viewer.emit("join_as_viewer", p),
        }
        let list = viewer.expect("channel_list").await;
        let channels = list["channels"].as_array().expect("channels array");
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0]["id"], "older");
        assert_eq!(channels[0]["broadcaster_sid"], b1.sid.as_str());
        assert_eq!(channels[1]["id"], "newer");
        for c in channels {
            assert!(c["created_at"].is_f64(), "{c}");
            assert!(c["last_activity"].is_f64(), "{c}");
            assert!(c["age_seconds"].is_u64(), "{c}");
            assert_eq!(c.as_object().map(|o| o.len()), Some(5), "{c}");
        }
        assert!(channels[0]["created_at"].as_f64() < channels[1]["created_at"].as_f64());
    }
    viewer.assert_silent().await;
}

#[tokio::test]
async fn viewer_joins_unknown_and_known_channels() {
    let app = spawn_app(&[]).await;
    let mut viewer = app.client().await;
    viewer.emit("join_as_viewer", json!({"channel_id": "ghost"}));
    viewer
        .expect_error("Channel ghost not found or expired")
        .await;

    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "show"}));
    b.expect("broadcaster_ready").await;
    viewer.emit("join_as_viewer", json!({"channel_id": "show", "extra": 1}));
    assert_eq!(
        viewer.expect("broadcaster_available").await,
        json!({"broadcaster_id": b.sid, "channel_id": "show"})
    );
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "show", "count": 1})
    );
    viewer.assert_silent().await;
}

#[tokio::test]
async fn offer_answer_and_ice_are_relayed_both_ways() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "relay").await;

    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        b.expect("offer").await,
        json!({"sdp": sample_sdp("offer"), "sender": v.sid})
    );
    b.emit(
        "answer",
        json!({"target": v.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(
        v.expect("answer").await,
        json!({"sdp": sample_sdp("answer"), "sender": b.sid})
    );
    v.emit(
        "ice_candidate",
        json!({"target": b.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        b.expect("ice_candidate").await,
        json!({"candidate": sample_candidate(), "sender": v.sid})
    );
    b.emit(
        "ice_candidate",
        json!({"target": v.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        v.expect("ice_candidate").await,
        json!({"candidate": sample_candidate(), "sender": b.sid})
    );
    // Opaque objects are relayed as received, whatever they hold.
    let odd = json!({"type": "offer", "sdp": "x", "nested": {"ü": [1, 2.5, null, true]}});
    v.emit("offer", json!({"target": b.sid, "sdp": odd}));
    assert_eq!(b.expect("offer").await["sdp"], odd);
    b.assert_silent().await;
    v.assert_silent().await;
}

#[tokio::test]
async fn relay_keeps_event_order_of_a_socket() {
    let app = spawn_app(&[]).await;
    let (mut b, v) = channel_with_viewer(&app, "order").await;
    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    for i in 0..30 {
        let mut c = sample_candidate();
        c["sdpMLineIndex"] = json!(i);
        v.emit("ice_candidate", json!({"target": b.sid, "candidate": c}));
    }
    assert_eq!(b.expect("offer").await["sender"], v.sid.as_str());
    for i in 0..30 {
        assert_eq!(
            b.expect("ice_candidate").await["candidate"]["sdpMLineIndex"],
            i
        );
    }
}

#[tokio::test]
async fn set_alias_rules() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "alias").await;
    let mut outsider = app.client().await;

    v.emit("set_alias", json!({"channel_id": "nope", "alias": "Alice"}));
    v.expect_error("Channel not found or expired").await;
    outsider.emit(
        "set_alias",
        json!({"channel_id": "alias", "alias": "Mallory"}),
    );
    outsider
        .expect_error("You must be a viewer in this channel")
        .await;
    b.emit(
        "set_alias",
        json!({"channel_id": "alias", "alias": "Owner"}),
    );
    b.expect_error("You must be a viewer in this channel").await;

    v.emit(
        "set_alias",
        json!({"channel_id": "alias", "alias": "  Alice W  "}),
    );
    assert_eq!(
        v.expect("alias_set").await,
        json!({"alias": "Alice W", "success": true})
    );
    v.assert_silent().await;
}

#[tokio::test]
async fn chat_reaches_every_participant_with_alias_or_default_name() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v1) = channel_with_viewer(&app, "chat").await;
    let mut v2 = app.client().await;
    v2.emit("join_as_viewer", json!({"channel_id": "chat"}));
    v2.expect("broadcaster_available").await;
    b.expect("viewer_count").await;

    v1.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "  hello all  "}),
    );
    let default_name = format!("Viewer-{}", &v1.sid[..8]);
    for client in [&mut b, &mut v1, &mut v2] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["sender_id"], default_name.as_str());
        assert_eq!(msg["message"], "hello all");
        assert!(msg["timestamp"].is_f64());
        assert_eq!(msg.as_object().map(|o| o.len()), Some(3));
    }

    v2.emit("set_alias", json!({"channel_id": "chat", "alias": "Bobby"}));
    v2.expect("alias_set").await;
    v2.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "😀".repeat(200)}),
    );
    for client in [&mut b, &mut v1, &mut v2] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["sender_id"], "Bobby");
    }
    for client in [&mut b, &mut v1, &mut v2] {
        client.assert_silent().await;
    }
}

#[tokio::test]
async fn chat_refusals() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "chat2").await;
    v.emit(
        "send_message",
        json!({"channel_id": "nope", "message": "hi"}),
    );
    v.expect_error("Channel not found or expired").await;
    b.emit(
        "send_message",
        json!({"channel_id": "chat2", "message": "hi"}),
    );
    b.expect_error("You must be a viewer in this channel to send messages")
        .await;
    v.emit(
        "send_message",
        json!({"channel_id": "chat2", "message": "😀".repeat(201)}),
    );
    v.expect_error_prefix("Invalid message:").await;
    v.emit(
        "send_message",
        json!({"channel_id": "chat2", "message": "<script>x</script>"}),
    );
    v.expect_error_prefix("Invalid message:").await;
    v.emit(
        "send_message",
        json!({"channel_id": "chat2", "message": "a\u{7}b"}),
    );
    v.expect_error_prefix("Invalid message:").await;
    v.emit(
        "send_message",
        json!({"channel_id": "chat2", "message": "   "}),
    );
    v.expect_error_prefix("Invalid message:").await;
    b.assert_silent().await;
    v.assert_silent().await;
}

#[tokio::test]
async fn stop_broadcast_rules_and_channel_stays() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "stopme").await;
    b.emit("stop_broadcast", json!({"channel_id": "nope"}));
    b.expect_error("Channel not found or expired").await;
    v.emit("stop_broadcast", json!({"channel_id": "stopme"}));
    v.expect_error("You are not the broadcaster of this channel")
        .await;

    b.emit("stop_broadcast", json!({"channel_id": "stopme"}));
    assert_eq!(
        v.expect("broadcaster_stopped").await,
        json!({"channel_id": "stopme"})
    );
    b.assert_silent().await;
    assert_eq!(app.health().await["channels"], 1);

    // Someone joining while stopped is told right away, after the usual answer.
    let mut late = app.client().await;
    late.emit("join_as_viewer", json!({"channel_id": "stopme"}));
    late.expect("broadcaster_available").await;
    assert_eq!(
        late.expect("broadcaster_stopped").await,
        json!({"channel_id": "stopme"})
    );
    b.expect("viewer_count").await;

    // The owner goes live again with force; the waiting viewer is told.
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "stopme", "force": true}),
    );
    assert_eq!(
        b.expect("broadcaster_ready").await,
        json!({"id": b.sid, "channel_id": "stopme"})
    );
    assert_eq!(
        v.expect("broadcaster_available").await,
        json!({"broadcaster_id": b.sid, "channel_id": "stopme"})
    );
    late.expect("broadcaster_available").await;
}

#[tokio::test]
async fn broadcaster_disconnect_notifies_viewers_and_removes_channel() {
    let app = spawn_app(&[]).await;
    let (b, mut v) = channel_with_viewer(&app, "bye").await;
    b.close();
    let (name, args) = v.next().await;
    assert_eq!(name, "broadcaster_disconnected");
    assert!(
        args.is_empty() || args == vec![serde_json::Value::Null],
        "{args:?}"
    );
    v.emit("join_as_viewer", json!({}));
    assert_eq!(v.expect("channel_list").await, json!({"channels": []}));
    v.emit("join_as_viewer", json!({"channel_id": "bye"}));
    v.expect_error("Channel bye not found or expired").await;
}

#[tokio::test]
async fn viewer_disconnect_leaves_the_channel() {
    let app = spawn_app(&[]).await;
    let (mut b, v) = channel_with_viewer(&app, "leave").await;
    let v_sid = v.sid.clone();
    v.close();
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "leave", "count": 0})
    );
    // A channel of legacy viewers: nothing but the count, as legacy sessions recorded it.
    b.assert_silent().await;
    b.emit(
        "offer",
        json!({"target": v_sid, "sdp": sample_sdp("offer")}),
    );
    b.expect_relay_error("offer").await;
    let health = app.health().await;
    assert_eq!(health["channels"], 1);
    assert_eq!(health["indexed_sockets"], 1);
}
