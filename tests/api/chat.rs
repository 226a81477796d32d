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

/// Joins `channel` asking for the history; returns its messages after checking the event.
async fn join_with_history(v: &mut Client, channel: &str) -> Vec<Value> {
    v.emit(
        "join_as_viewer",
        json!({"channel_id": channel, "history": true}),
    );
    v.expect("broadcaster_available").await;
    let history = v.expect("chat_history").await;
    assert_eq!(history["channel_id"], channel, "{history}");
    assert_eq!(history.as_object().map(|o| o.len()), Some(2), "{history}");
    history["messages"].as_array().expect("messages").clone()
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["message"].as_str().expect("message text"))
        .collect()
}

/// A late viewer gets the channel's last messages, oldest first, each a `new_message` payload
/// with its `id` (and the broadcaster's mark), bounded by `--chat-history 3`. `talker` and
/// `late` may be on different nodes than the broadcaster.
async fn a_late_viewer_gets_the_last_messages(
    b: Client,
    talker: Client,
    mut late: Client,
    mut legacy: Client,
) -> Vec<Client> {
    let (mut b, mut talker) = channel(b, talker, "history").await;
    // Nothing said yet: an empty history, so the page knows it has everything.
    assert!(join_with_history(&mut late, "history").await.is_empty());
    b.expect("viewer_count").await;
    for i in 0..4 {
        talker.emit(
            "send_message",
            json!({"channel_id": "history", "message": format!("m{i}")}),
        );
    }
    for client in [&mut b, &mut talker, &mut late] {
        for _ in 0..4 {
            client.expect("new_message").await;
        }
    }
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "history", "message": "from the stage"}),
    );
    for client in [&mut b, &mut talker, &mut late] {
        client.expect("new_message").await;
    }
    // The late viewer joins again (as after a reload): the last three, in order.
    let messages = join_with_history(&mut late, "history").await;
    assert_eq!(texts(&messages), ["m2", "m3", "from the stage"]);
    let talker_name = format!("Viewer-{}", &talker.sid[..8]);
    for m in &messages[..2] {
        assert_eq!(m["sender_id"], talker_name.as_str(), "{m}");
        assert!(m["timestamp"].is_f64(), "{m}");
        assert_eq!(m["id"].as_str().map(str::len), Some(16), "{m}");
        assert_eq!(m.as_object().map(|o| o.len()), Some(4), "{m}");
    }
    assert_eq!(messages[2]["sender_id"], "Broadcaster");
    assert_eq!(messages[2]["from_broadcaster"], true);
    assert_ne!(messages[0]["id"], messages[1]["id"]);
    b.expect("viewer_count").await;
    // A page that does not ask (every legacy page) gets no history.
    legacy.emit("join_as_viewer", json!({"channel_id": "history"}));
    legacy.expect("broadcaster_available").await;
    b.expect("viewer_count").await;
    for client in [&mut b, &mut talker, &mut late, &mut legacy] {
        client.assert_silent().await;
    }
    vec![b, talker, late, legacy]
}

#[tokio::test]
async fn a_late_viewer_gets_the_last_messages_in_memory() {
    let app = spawn_app(&["--chat-history", "3"]).await;
    let clients = [
        app.client().await,
        app.client().await,
        app.client().await,
        app.client().await,
    ];
    let [b, talker, late, legacy] = clients;
    a_late_viewer_gets_the_last_messages(b, talker, late, legacy).await;
}

#[tokio::test]
async fn a_late_viewer_gets_the_last_messages_across_nodes() {
    let cluster = Cluster::start(2, &["--chat-history", "3"]).await;
    let (a, n) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (b, talker, late, legacy) = (
        a.client().await,
        a.client().await,
        n.client().await,
        n.client().await,
    );
    let clients = a_late_viewer_gets_the_last_messages(b, talker, late, legacy).await;
    // Teardown checks that the history list went with the channel.
    cluster.teardown(clients).await;
}

#[tokio::test]
async fn the_history_keeps_fifty_messages_by_default() {
    let app = spawn_app(&["--rate-chat", "1000"]).await;
    let (mut b, v) = channel(app.client().await, app.client().await, "long").await;
    for i in 0..55 {
        v.emit(
            "send_message",
            json!({"channel_id": "long", "message": format!("m{i}")}),
        );
        b.expect("new_message").await;
    }
    let mut late = app.client().await;
    let messages = join_with_history(&mut late, "long").await;
    let expected: Vec<String> = (5..55).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&messages), expected);
}

#[tokio::test]
async fn without_a_history_nothing_is_kept_or_sent() {
    let app = spawn_app(&["--chat-history", "0"]).await;
    let (mut b, v) = channel(app.client().await, app.client().await, "mute").await;
    v.emit(
        "send_message",
        json!({"channel_id": "mute", "message": "hello"}),
    );
    b.expect("new_message").await;
    let mut late = app.client().await;
    late.emit(
        "join_as_viewer",
        json!({"channel_id": "mute", "history": true}),
    );
    late.expect("broadcaster_available").await;
    late.assert_silent().await;
}

/// The history goes with its channel: a broadcaster that comes back on the same id starts an
/// empty chat, on whichever node.
async fn the_history_goes_with_the_channel(
    b: Client,
    v: Client,
    b_again: Client,
    mut late: Client,
) -> Vec<Client> {
    let (mut b, mut v) = channel(b, v, "brief").await;
    v.emit(
        "send_message",
        json!({"channel_id": "brief", "message": "before"}),
    );
    b.expect("new_message").await;
    v.expect("new_message").await;
    b.close();
    v.expect("broadcaster_disconnected").await;
    let (b_again, v) = channel(b_again, v, "brief").await;
    assert!(join_with_history(&mut late, "brief").await.is_empty());
    vec![b, v, b_again, late]
}

#[tokio::test]
async fn the_history_goes_with_the_channel_in_memory() {
    let app = spawn_app(&[]).await;
    let clients = [
        app.client().await,
        app.client().await,
        app.client().await,
        app.client().await,
    ];
    let [b, v, b_again, late] = clients;
    the_history_goes_with_the_channel(b, v, b_again, late).await;
}

#[tokio::test]
async fn the_history_goes_with_the_channel_across_nodes() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, n) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (b, v, b_again, late) = (
        a.client().await,
        n.client().await,
        n.client().await,
        a.client().await,
    );
    let clients = the_history_goes_with_the_channel(b, v, b_again, late).await;
    cluster.teardown(clients).await;
}
