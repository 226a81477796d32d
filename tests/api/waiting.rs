//! The waiting room (docs/EXTENSIONS.md "Waiting room"), in memory and across cluster nodes.

use serde_json::json;

use crate::helpers::{Client, Cluster, sample_sdp, spawn_app};

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
    // It is the channel's viewer already: its broadcaster counts it.
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "soon", "count": 1})
    );
    legacy.assert_silent().await;
    // Joining again as well (a page written for the first waiting room) changes nothing.
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
    // A second waiter who leaves before anyone broadcasts leaves nothing behind.
    let mut gone = a.client().await;
    wait_for(&mut gone, "never").await;
    cluster.teardown(vec![viewer, broadcaster, gone]).await;
}

/// The waiting room as a page expects it: on `broadcaster_joined` the waiting viewer sends its
/// offer at once (nothing else), and the broadcaster gets it; the answer comes back. Run in
/// memory and across two cluster nodes.
async fn a_waiting_viewer_offers_as_soon_as_the_broadcaster_joins(
    mut viewer: Client,
    mut b: Client,
) -> Vec<Client> {
    wait_for(&mut viewer, "early").await;
    b.emit("join_as_broadcaster", json!({"channel_id": "early"}));
    b.expect("broadcaster_ready").await;
    let joined = viewer.expect("broadcaster_joined").await;
    assert_eq!(joined, json!({"id": b.sid, "channel_id": "early"}));
    viewer.emit(
        "offer",
        json!({"target": joined["id"], "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "early", "count": 1})
    );
    assert_eq!(
        b.expect("offer").await,
        json!({"sdp": sample_sdp("offer"), "sender": viewer.sid})
    );
    b.emit(
        "answer",
        json!({"target": viewer.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(
        viewer.expect("answer").await,
        json!({"sdp": sample_sdp("answer"), "sender": b.sid})
    );
    // Its departure is counted like any viewer's.
    viewer.close();
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "early", "count": 0})
    );
    b.assert_silent().await;
    vec![viewer, b]
}

#[tokio::test]
async fn a_waiting_viewer_offers_at_once_in_memory() {
    let app = spawn_app(&[]).await;
    let (viewer, b) = (app.client().await, app.client().await);
    a_waiting_viewer_offers_as_soon_as_the_broadcaster_joins(viewer, b).await;
}

#[tokio::test]
async fn a_waiting_viewer_offers_at_once_across_nodes() {
    let cluster = Cluster::start(2, &[]).await;
    let viewer = cluster.nodes[1].client().await;
    let b = cluster.nodes[0].client().await;
    let clients = a_waiting_viewer_offers_as_soon_as_the_broadcaster_joins(viewer, b).await;
    cluster.teardown(clients).await;
}

/// A tree viewer that waited gets its `upstream` after `broadcaster_joined`, as after a join.
async fn a_waiting_tree_viewer_gets_its_place(mut viewer: Client, mut b: Client) -> Vec<Client> {
    viewer.emit(
        "join_as_viewer",
        json!({"channel_id": "treed", "wait": true, "relay": true}),
    );
    viewer.expect("waiting_for_broadcaster").await;
    b.emit("join_as_broadcaster", json!({"channel_id": "treed"}));
    b.expect("broadcaster_ready").await;
    viewer.expect("broadcaster_joined").await;
    assert_eq!(
        viewer.expect_upstream().await,
        json!({"channel_id": "treed", "peer_id": b.sid, "depth": 1})
    );
    b.expect("viewer_count").await;
    assert_eq!(b.expect("relay_tree").await["direct"], 1);
    vec![viewer, b]
}

#[tokio::test]
async fn a_waiting_tree_viewer_gets_its_place_in_memory() {
    let app = spawn_app(&[]).await;
    let (viewer, b) = (app.client().await, app.client().await);
    a_waiting_tree_viewer_gets_its_place(viewer, b).await;
}

#[tokio::test]
async fn a_waiting_tree_viewer_gets_its_place_across_nodes() {
    let cluster = Cluster::start(2, &[]).await;
    let viewer = cluster.nodes[1].client().await;
    let b = cluster.nodes[0].client().await;
    let clients = a_waiting_tree_viewer_gets_its_place(viewer, b).await;
    cluster.teardown(clients).await;
}

#[tokio::test]
async fn a_waiter_of_a_private_channel_joins_with_its_password() {
    let app = spawn_app(&[]).await;
    let mut viewer = app.client().await;
    wait_for(&mut viewer, "hidden").await;
    let mut b = app.client().await;
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "hidden", "password": "open sesame"}),
    );
    b.expect("broadcaster_ready").await;
    assert_eq!(
        viewer.expect("broadcaster_joined").await,
        json!({"id": b.sid, "channel_id": "hidden", "password_required": true})
    );
    // Not a viewer without the password: an offer is refused, nothing reaches the broadcaster.
    viewer.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    viewer.expect_relay_error("offer").await;
    b.assert_silent().await;
    viewer.emit(
        "join_as_viewer",
        json!({"channel_id": "hidden", "password": "open sesame"}),
    );
    viewer.expect("broadcaster_available").await;
    assert_eq!(
        b.expect("viewer_count").await,
        json!({"channel_id": "hidden", "count": 1})
    );
}
