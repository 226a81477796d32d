//! The waiting room (docs/EXTENSIONS.md "Waiting room"), in memory and across cluster nodes.

use serde_json::json;

use crate::helpers::{Client, Cluster, spawn_app};

/// Waits for `channel`, checking the answer.
async fn wait_for(viewer: &mut Client, channel: &str) {
    viewer.emit(
        "join_as_viewer",
        json!({"channel_id": channel, "wait": true}),
    );
    assert_eq!(
        viewer.expect("waiting_for_broadcaster").await,
        json!({"channel_id": channel})
    );
}

#[tokio::test]
async fn viewers_wait_for_a_broadcaster_then_join() {
    let app = spawn_app(&[]).await;
    let mut early = app.client().await;
    let mut leaver = app.client().await;
    wait_for(&mut early, "soon").await;
    wait_for(&mut leaver, "soon").await;
    // Idempotent, and nothing is listed or created by waiting.
    wait_for(&mut early, "soon").await;
    early.emit("join_as_viewer", json!({}));
    assert_eq!(early.expect("channel_list").await, json!({"channels": []}));
    // Without `wait` (every legacy page) an unknown channel is an error, as before.
    let mut legacy = app.client().await;
    legacy.emit("join_as_viewer", json!({"channel_id": "soon"}));
    legacy
        .expect_error("Channel soon not found or expired")
        .await;
    leaver.close();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "soon"}));
    b.expect("broadcaster_ready").await;
    assert_eq!(
        early.expect("broadcaster_joined").await,
        json!({"id": b.sid, "channel_id": "soon"})
    );
    legacy.assert_silent().await;
    // The waiting viewer now joins as usual.
    early.emit("join_as_viewer", json!({"channel_id": "soon"}));
    assert_eq!(
        early.expect("broadcaster_available").await,
        json!({"broadcaster_id": b.sid, "channel_id": "soon"})
    );
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "soon", "count": 1})
    );
    // `wait` on a live channel is an ordinary join.
    let mut late = app.client().await;
    late.emit(
        "join_as_viewer",
        json!({"channel_id": "soon", "wait": true}),
    );
    late.expect("broadcaster_available").await;
    for c in [&early, &late, &b, &legacy] {
        c.close();
    }
}

#[tokio::test]
async fn the_waiting_room_is_bounded_per_channel_and_overall() {
    let app = spawn_app(&["--max-waiting-per-channel", "2", "--max-waiting", "3"]).await;
    let mut clients = Vec::new();
    for channel in ["a", "a", "b"] {
        let mut c = app.client().await;
        wait_for(&mut c, channel).await;
        clients.push(c);
    }
    let mut third_a = app.client().await;
    third_a.emit("join_as_viewer", json!({"channel_id": "a", "wait": true}));
    third_a
        .expect_error("Too many viewers are waiting for a broadcaster; try again later")
        .await;
    let mut overall = app.client().await;
    overall.emit("join_as_viewer", json!({"channel_id": "c", "wait": true}));
    overall
        .expect_error("Too many viewers are waiting for a broadcaster; try again later")
        .await;
    // Leaving frees a place.
    clients.pop().expect("a client").close();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    wait_for(&mut overall, "c").await;
}

#[tokio::test]
async fn a_viewer_waits_on_one_node_for_a_broadcaster_on_another() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut viewer = b.client().await;
    wait_for(&mut viewer, "later").await;
    let mut broadcaster = a.client().await;
    broadcaster.emit("join_as_broadcaster", json!({"channel_id": "later"}));
    broadcaster.expect("broadcaster_ready").await;
    assert_eq!(
        viewer.expect("broadcaster_joined").await,
        json!({"id": broadcaster.sid, "channel_id": "later"})
    );
    viewer.emit("join_as_viewer", json!({"channel_id": "later"}));
    viewer.expect("broadcaster_available").await;
    // A second waiter who leaves before anyone broadcasts leaves nothing behind.
    let mut gone = a.client().await;
    wait_for(&mut gone, "never").await;
    cluster.teardown(vec![viewer, broadcaster, gone]).await;
}
