//! The broadcaster's chat (EXTENSIONS.md "Chat"), in memory and across cluster nodes.

use serde_json::{Value, json};

use crate::helpers::{Client, Cluster, spawn_app};

/// The next `new_message`, checked for the broadcaster's shape: the legacy fields, and
/// `from_broadcaster: true`; returns it.
async fn expect_broadcaster_message(client: &mut Client, message: &str) -> Value {
    let msg = client.expect("new_message").await;
    assert_eq!(msg["sender_id"], "Broadcaster", "{msg}");
    assert_eq!(msg["message"], message, "{msg}");
    assert!(msg["timestamp"].is_f64(), "{msg}");
    assert_eq!(msg["from_broadcaster"], true, "{msg}");
    msg
}

/// A broadcaster of `channel` and a viewer who joined it.
async fn channel(mut b: Client, mut v: Client, channel: &str) -> (Client, Client) {
    b.emit("join_as_broadcaster", json!({"channel_id": channel}));
    b.expect("broadcaster_ready").await;
    v.emit("join_as_viewer", json!({"channel_id": channel}));
    v.expect("broadcaster_available").await;
    b.expect("viewer_count").await;
    (b, v)
}

/// The broadcaster writes with `broadcaster_message`: everyone hears it as `new_message`,
/// marked; a plain `send_message` from it still gets the viewer error; a viewer cannot use the
/// broadcaster's event.
async fn the_broadcaster_talks_back(b: Client, v: Client, other: Client) -> Vec<Client> {
    let (mut b, mut v) = channel(b, v, "talk").await;
    let mut other = other;
    other.emit("join_as_viewer", json!({"channel_id": "talk"}));
    other.expect("broadcaster_available").await;
    b.expect("viewer_count").await;

    b.emit(
        "broadcaster_message",
        json!({"channel_id": "talk", "message": "  welcome, all  "}),
    );
    for client in [&mut b, &mut v, &mut other] {
        expect_broadcaster_message(client, "welcome, all").await;
    }
    // A viewer's message keeps exactly the recorded shape.
    v.emit(
        "send_message",
        json!({"channel_id": "talk", "message": "thanks"}),
    );
    for client in [&mut b, &mut v, &mut other] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg.as_object().map(|o| o.len()), Some(3), "{msg}");
    }

    // The contract's answer to a broadcaster's send_message is unchanged.
    b.emit(
        "send_message",
        json!({"channel_id": "talk", "message": "hi"}),
    );
    b.expect_error("You must be a viewer in this channel to send messages")
        .await;
    // A viewer cannot speak as the broadcaster, nor anybody in a channel that is not theirs.
    v.emit(
        "broadcaster_message",
        json!({"channel_id": "talk", "message": "I am the boss"}),
    );
    v.expect_error("You are not the broadcaster of this channel")
        .await;
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "nowhere", "message": "hi"}),
    );
    b.expect_error("Channel not found or expired").await;
    // The same validation as send_message.
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "talk", "message": "<script>alert(1)</script>"}),
    );
    b.expect_error_prefix("Invalid message:").await;
    b.emit("broadcaster_message", json!({"channel_id": "talk"}));
    b.expect_error("Invalid message: message is required").await;
    for client in [&mut b, &mut v, &mut other] {
        client.assert_silent().await;
    }
    vec![b, v, other]
}

#[tokio::test]
async fn the_broadcaster_talks_back_in_memory() {
    let app = spawn_app(&[]).await;
    let (b, v, other) = (app.client().await, app.client().await, app.client().await);
    the_broadcaster_talks_back(b, v, other).await;
}

#[tokio::test]
async fn the_broadcaster_talks_back_across_nodes() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, n) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (b, v, other) = (a.client().await, n.client().await, a.client().await);
    let clients = the_broadcaster_talks_back(b, v, other).await;
    cluster.teardown(clients).await;
}

#[tokio::test]
async fn the_broadcasters_messages_count_against_the_chat_rate() {
    let app = spawn_app(&["--rate-chat", "1"]).await; // a burst of 5
    let (mut b, mut v) = channel(app.client().await, app.client().await, "rated").await;
    for i in 0..5 {
        b.emit(
            "broadcaster_message",
            json!({"channel_id": "rated", "message": format!("m{i}")}),
        );
    }
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "rated", "message": "one too many"}),
    );
    for i in 0..5 {
        expect_broadcaster_message(&mut v, &format!("m{i}")).await;
        expect_broadcaster_message(&mut b, &format!("m{i}")).await;
    }
    b.expect_error("Invalid message: too many requests; wait a moment and try again")
        .await;
    v.assert_silent().await;
}
