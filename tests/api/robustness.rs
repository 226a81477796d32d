//! Validation, authorization, limits, expiry, transports and races, against the real server.

use std::time::Duration;

use crate::helpers::{Polling, channel_with_viewer, sample_candidate, sample_sdp, spawn_app};
use serde_json::{Value, json};

#[tokio::test]
async fn join_payloads_that_are_not_objects_are_invalid_data() {
    let app = spawn_app(&[]).await;
    let mut c = app.client().await;
    for bad in [json!("room"), json!(5), json!([1]), json!(true)] {
        c.emit("join_as_broadcaster", bad.clone());
        c.expect_error("Invalid data: payload must be a JSON object")
            .await;
        c.emit("join_as_viewer", bad);
        c.expect_error("Invalid data: payload must be a JSON object")
            .await;
    }
    c.assert_silent().await;
    assert_eq!(app.health().await["channels"], 0);
}

#[tokio::test]
async fn channel_id_and_force_validation() {
    let app = spawn_app(&[]).await;
    let mut c = app.client().await;
    let cases = [
        json!({"channel_id": "a".repeat(21)}),
        json!({"channel_id": "has space"}),
        json!({"channel_id": "semi;colon"}),
        json!({"channel_id": "ünï"}),
        json!({"channel_id": 42}),
        json!({"channel_id": ["x"]}),
        json!({"force": "yes"}),
    ];
    for payload in cases {
        c.emit("join_as_broadcaster", payload.clone());
        let message = c.expect_error_prefix("Invalid data:").await;
        let field = if payload.get("force").is_some() {
            "force"
        } else {
            "channel_id"
        };
        assert!(message.contains(field), "{message} names {field}");
    }
    for payload in [
        json!({"channel_id": "a".repeat(21)}),
        json!({"channel_id": 1}),
    ] {
        c.emit("join_as_viewer", payload);
        c.expect_error_prefix("Invalid data: channel_id").await;
    }
    // Trimmed ids and a 20-character id are fine.
    c.emit(
        "join_as_broadcaster",
        json!({"channel_id": format!("  {}  ", "b".repeat(20))}),
    );
    assert_eq!(
        c.expect("broadcaster_ready").await["channel_id"],
        "b".repeat(20)
    );
    c.assert_silent().await;
}

#[tokio::test]
async fn required_fields_get_event_specific_prefixes() {
    let app = spawn_app(&[]).await;
    let mut c = app.client().await;
    c.emit_bare("stop_broadcast");
    c.expect_error("Invalid data: channel_id is required").await;
    c.emit("stop_broadcast", json!(null));
    c.expect_error("Invalid data: channel_id is required").await;
    c.emit("stop_broadcast", json!("x"));
    c.expect_error_prefix("Invalid data:").await;
    c.emit_bare("set_alias");
    c.expect_error_prefix("Invalid alias:").await;
    c.emit("set_alias", json!({"channel_id": "c"}));
    c.expect_error("Invalid alias: alias is required").await;
    c.emit("set_alias", json!({"channel_id": "c", "alias": "  Bob  "}));
    c.expect_error("Invalid alias: alias must be 5 to 20 characters (got 3)")
        .await;
    c.emit("set_alias", json!({"channel_id": "c", "alias": "Bob<img>"}));
    c.expect_error_prefix("Invalid alias: alias").await;
    c.emit(
        "set_alias",
        json!({"channel_id": "c", "alias": "x".repeat(21)}),
    );
    c.expect_error_prefix("Invalid alias: alias").await;
    c.emit("set_alias", json!([1]));
    c.expect_error_prefix("Invalid alias:").await;
    c.emit_bare("send_message");
    c.expect_error_prefix("Invalid message:").await;
    c.emit("send_message", json!({"channel_id": "c"}));
    c.expect_error("Invalid message: message is required").await;
    c.emit("send_message", json!({"channel_id": "c", "message": 7}));
    c.expect_error_prefix("Invalid message: message").await;
    for hostile in [
        "<ScRiPt src=//evil>",
        "click javascript:void(0)",
        "<img src=x onerror =alert(1)>",
        "<a onclick=x>",
        "<body ONLOAD=x>",
        "bell\u{7}",
        "nul\u{0}byte",
        "del\u{7f}",
    ] {
        c.emit(
            "send_message",
            json!({"channel_id": "c", "message": hostile}),
        );
        c.expect_error_prefix("Invalid message: message").await;
    }
    c.assert_silent().await;
}

#[tokio::test]
async fn validation_runs_before_channel_checks_and_allows_newlines() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "nl").await;
    v.emit(
        "send_message",
        json!({"channel_id": "nl", "message": "line one\nline\ttwo\r"}),
    );
    assert_eq!(
        v.expect("new_message").await["message"],
        "line one\nline\ttwo"
    );
    assert_eq!(
        b.expect("new_message").await["message"],
        "line one\nline\ttwo"
    );
    // An invalid message to an unknown channel is a validation error first.
    v.emit("send_message", json!({"channel_id": "nope", "message": ""}));
    v.expect_error_prefix("Invalid message:").await;
    b.assert_silent().await;
}

#[tokio::test]
async fn relay_is_refused_outside_a_shared_channel_and_target_gets_nothing() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "auth").await;
    let (mut other_b, mut other_v) = channel_with_viewer(&app, "auth2").await;
    let mut stranger = app.client().await;

    stranger.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    let message = stranger.expect_relay_error("offer").await;
    assert!(!message.is_empty());
    // A viewer of another channel cannot reach this broadcaster, nor its viewers.
    other_v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    other_v.expect_relay_error("offer").await;
    other_b.emit(
        "answer",
        json!({"target": v.sid, "sdp": sample_sdp("answer")}),
    );
    other_b.expect_relay_error("answer").await;
    // Two viewers are not peers.
    let mut v2 = app.client().await;
    v2.emit("join_as_viewer", json!({"channel_id": "auth"}));
    v2.expect("broadcaster_available").await;
    b.expect("viewer_count").await;
    v2.emit(
        "ice_candidate",
        json!({"target": v.sid, "candidate": sample_candidate()}),
    );
    v2.expect_relay_error("ice_candidate").await;
    // Unknown target.
    v.emit(
        "offer",
        json!({"target": "not-a-socket", "sdp": sample_sdp("offer")}),
    );
    v.expect_relay_error("offer").await;

    for c in [
        &mut b,
        &mut v,
        &mut other_b,
        &mut other_v,
        &mut v2,
        &mut stranger,
    ] {
        c.assert_silent().await;
    }
}

#[tokio::test]
async fn malformed_and_oversized_relays_get_relay_error_and_connection_stays() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "shape").await;
    let big_sdp = json!({"type": "offer", "sdp": "a".repeat(64 * 1024)});
    let big_candidate = json!({"candidate": "c".repeat(4 * 1024)});
    let cases: Vec<(&str, Value)> = vec![
        ("offer", json!({"sdp": sample_sdp("offer")})),
        ("offer", json!({"target": 12, "sdp": sample_sdp("offer")})),
        ("offer", json!({"target": b.sid})),
        ("offer", json!({"target": b.sid, "sdp": "v=0"})),
        ("answer", json!({"target": b.sid, "sdp": null})),
        ("offer", json!({"target": b.sid, "sdp": big_sdp})),
        ("ice_candidate", json!({"target": b.sid, "candidate": null})),
        (
            "ice_candidate",
            json!({"target": b.sid, "candidate": "candidate:1"}),
        ),
        (
            "ice_candidate",
            json!({"target": b.sid, "candidate": big_candidate}),
        ),
        ("ice_candidate", json!("just a string")),
    ];
    for (event, payload) in cases {
        v.emit(event, payload.clone());
        let message = v.expect_relay_error(event).await;
        assert!(!message.is_empty(), "{event} {payload}");
    }
    v.emit_bare("offer");
    v.expect_relay_error("offer").await;
    b.assert_silent().await;
    // Still connected and working.
    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    b.expect("offer").await;
}

#[tokio::test]
async fn messages_over_one_megabyte_close_only_that_connection() {
    let app = spawn_app(&[]).await;
    let (mut b, v) = channel_with_viewer(&app, "huge").await;
    let mut hostile = app.client().await;
    hostile.emit(
        "offer",
        json!({"target": b.sid, "sdp": {"sdp": "x".repeat(1_000_001)}}),
    );
    hostile.expect_closed().await;
    // Nobody else is disturbed.
    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    b.expect("offer").await;
}

#[tokio::test]
async fn capacity_is_refused_and_existing_channels_survive() {
    let app = spawn_app(&["--max-channels", "2"]).await;
    let mut a = app.client().await;
    a.emit("join_as_broadcaster", json!({"channel_id": "one"}));
    a.expect("broadcaster_ready").await;
    let (mut b, v) = channel_with_viewer(&app, "two").await;
    let mut late = app.client().await;
    late.emit("join_as_broadcaster", json!({"channel_id": "three"}));
    let message = late.expect_error_prefix("Server is at capacity").await;
    assert!(message.contains('2'), "{message}");
    late.emit("join_as_broadcaster", json!({}));
    late.expect_error_prefix("Server is at capacity").await;
    // Existing channels are untouched and still work.
    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    b.expect("offer").await;
    a.assert_silent().await;
    late.emit("join_as_viewer", json!({}));
    let list = late.expect("channel_list").await;
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(2));
    // Room frees up when a broadcaster leaves.
    a.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    late.emit("join_as_broadcaster", json!({"channel_id": "three"}));
    late.expect("broadcaster_ready").await;
}

#[tokio::test]
async fn abandoned_channel_expires_and_broadcaster_is_told_but_live_one_stays() {
    let app = spawn_app(&["--channel-ttl-secs", "1"]).await;
    let mut idle = app.client().await;
    idle.emit("join_as_broadcaster", json!({"channel_id": "idle"}));
    idle.expect("broadcaster_ready").await;
    let (mut live_b, mut live_v) = channel_with_viewer(&app, "live").await;

    let expired = tokio::time::timeout(Duration::from_secs(4), idle.expect("channel_expired"))
        .await
        .expect("channel_expired within TTL plus a sweep");
    assert_eq!(expired, json!({"channel_id": "idle"}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let health = app.health().await;
    assert_eq!(health["channels"], 1, "{health}");
    // The live channel still relays, and the expired one is gone for viewers.
    live_v.emit(
        "offer",
        json!({"target": live_b.sid, "sdp": sample_sdp("offer")}),
    );
    live_b.expect("offer").await;
    live_v.emit("join_as_viewer", json!({"channel_id": "idle"}));
    live_v
        .expect_error("Channel idle not found or expired")
        .await;
    live_b.assert_silent().await;
    // The expired broadcaster can start afresh.
    idle.emit("join_as_broadcaster", json!({"channel_id": "idle"}));
    idle.expect("broadcaster_ready").await;
}

#[tokio::test]
async fn broadcaster_and_fifty_viewers_disconnecting_at_once_leave_nothing() {
    let app = spawn_app(&[]).await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "race"}));
    b.expect("broadcaster_ready").await;
    let mut viewers = Vec::new();
    for _ in 0..50 {
        let mut v = app.client().await;
        v.emit("join_as_viewer", json!({"channel_id": "race"}));
        v.expect("broadcaster_available").await;
        viewers.push(v);
    }
    let health = app.health().await;
    assert_eq!(health["channels"], 1);
    assert_eq!(health["indexed_sockets"], 51);
    b.close();
    for v in &viewers {
        v.close();
    }
    let mut last = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = app.health().await;
        if last["sockets"] == 0 {
            break;
        }
    }
    assert_eq!(
        last,
        json!({"status": "ok", "mode": "memory", "channels": 0, "sockets": 0, "indexed_sockets": 0,
               "indexed_addresses": 0, "client_addresses": 0})
    );
}

#[tokio::test]
async fn polling_client_sending_fifty_packets_in_one_post_loses_none() {
    // About the transport, not rate limits: 50 answers to one peer at once is over them.
    let app = spawn_app(&["--rate-sdp", "0"]).await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "burst"}));
    b.expect("broadcaster_ready").await;

    let mut polling = Polling::open(&app).await;
    polling.post(&["40".into()]).await;
    let hello = polling.events(1).await;
    assert_eq!(hello[0][0], "client_id");
    let viewer_sid = hello[0][1]["id"].as_str().unwrap().to_owned();
    polling
        .post(&[format!(
            "42{}",
            json!(["join_as_viewer", {"channel_id": "burst"}])
        )])
        .await;
    assert_eq!(polling.events(1).await[0][0], "broadcaster_available");
    b.expect("viewer_count").await;

    let mut burst = vec![format!(
        "42{}",
        json!(["offer", {"target": b.sid, "sdp": sample_sdp("offer")}])
    )];
    for i in 0..49 {
        let mut c = sample_candidate();
        c["sdpMLineIndex"] = json!(i);
        burst.push(format!(
            "42{}",
            json!(["ice_candidate", {"target": b.sid, "candidate": c}])
        ));
    }
    polling.post(&burst).await;
    assert_eq!(b.expect("offer").await["sender"], viewer_sid.as_str());
    for i in 0..49 {
        let ice = b.expect("ice_candidate").await;
        assert_eq!(ice["candidate"]["sdpMLineIndex"], i, "in order");
        assert_eq!(ice["sender"], viewer_sid.as_str());
    }
    b.assert_silent().await;

    // And the broadcaster's answers to a burst reach the polling viewer, none lost.
    for i in 0..50 {
        let mut sdp = sample_sdp("answer");
        sdp["n"] = json!(i);
        b.emit("answer", json!({"target": viewer_sid, "sdp": sdp}));
    }
    let answers = polling.events(50).await;
    assert_eq!(answers.len(), 50);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a[0], "answer");
        assert_eq!(a[1]["sdp"]["n"], i);
    }
}

#[tokio::test]
async fn polling_client_upgrades_to_websocket_and_keeps_its_session() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app(&[]).await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "upgrade"}));
    b.expect("broadcaster_ready").await;

    let mut polling = Polling::open(&app).await;
    polling.post(&["40".into()]).await;
    let hello = polling.events(1).await;
    let viewer_sid = hello[0][1]["id"].as_str().unwrap().to_owned();

    let ws_url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        app.server.local_addr, polling.session
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) if t.as_str() == "3probe" => break,
            _ => {}
        }
    }
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text(format!(
        "42{}",
        json!(["join_as_viewer", {"channel_id": "upgrade"}])
    )))
    .await
    .unwrap();
    let available = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) if t.as_str().starts_with("42") => {
                break serde_json::from_str::<Value>(&t.as_str()[2..]).unwrap();
            }
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            _ => {}
        }
    };
    assert_eq!(
        available,
        json!(["broadcaster_available", {"broadcaster_id": b.sid, "channel_id": "upgrade"}])
    );
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "upgrade", "count": 1})
    );
    ws.send(Message::text(format!(
        "42{}",
        json!(["offer", {"target": b.sid, "sdp": sample_sdp("offer")}])
    )))
    .await
    .unwrap();
    assert_eq!(b.expect("offer").await["sender"], viewer_sid.as_str());
}

#[tokio::test]
async fn unknown_events_and_garbage_frames_harm_nothing() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = channel_with_viewer(&app, "junk").await;
    v.emit("no_such_event", json!({"x": 1}));
    v.assert_silent().await;
    b.assert_silent().await;
    // A frame that is not a Socket.IO packet ends that connection only.
    v.send_raw("42[\"offer\",");
    v.expect_closed().await;
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "junk", "count": 0})
    );
    let mut v2 = app.client().await;
    v2.emit("join_as_viewer", json!({"channel_id": "junk"}));
    v2.expect("broadcaster_available").await;
}

#[tokio::test]
async fn relay_to_a_socket_that_stopped_reading_is_refused_and_it_is_disconnected() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // Without the ICE rate limit a sender can fill a queue quickly; a short queue fills sooner.
    // (The flood's tail, refused once the reader is gone, would otherwise count as strikes.)
    let app = spawn_app(&[
        "--rate-ice",
        "0",
        "--rate-strikes",
        "0",
        "--max-queued-packets",
        "64",
    ])
    .await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "stuck"}));
    b.expect("broadcaster_ready").await;

    // A viewer that joins, then never reads again.
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    ws.send(Message::text("40")).await.unwrap();
    let viewer_sid = loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap()
            && let Some(body) = t.as_str().strip_prefix("42")
        {
            let event: Value = serde_json::from_str(body).unwrap();
            assert_eq!(event[0], "client_id");
            break event[1]["id"].as_str().unwrap().to_owned();
        }
    };
    ws.send(Message::text(format!(
        "42{}",
        json!(["join_as_viewer", {"channel_id": "stuck"}])
    )))
    .await
    .unwrap();
    b.expect("viewer_count").await;

    let candidate = json!({"target": viewer_sid, "candidate": {"candidate": "x".repeat(3000)}});
    let mut refused = None;
    for round in 0..40 {
        for _ in 0..2000 {
            b.emit("ice_candidate", candidate.clone());
        }
        if let Ok(Some((name, args))) =
            tokio::time::timeout(Duration::from_millis(200), b.next_event()).await
        {
            refused = Some((round, name, args));
            break;
        }
    }
    let (_, name, args) = refused.expect("a full queue is reported to the sender");
    assert_eq!(name, "relay_error");
    assert_eq!(args[0]["event"], "ice_candidate");
    assert!(
        args[0]["message"]
            .as_str()
            .unwrap()
            .contains("not keeping up"),
        "{args:?}"
    );
    // The reader that stopped is disconnected at once, and its broadcaster told.
    loop {
        let (name, args) = b.next().await;
        if name == "viewer_count" {
            assert_eq!(args[0], json!({"channel_id": "stuck", "count": 0}));
            break;
        }
        assert_eq!(name, "relay_error", "{args:?}");
    }
    assert_eq!(app.health().await["indexed_sockets"], 1);
    drop(ws);
}
