//! The relay tree over real sockets (PROTOCOL.md "Relay tree"): assignment, re-parenting,
//! waiting, stop and going live again, and relay authorization along the tree.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Client, Cluster, EmitsListener, TestApp, sample_candidate, sample_sdp, spawn_app,
};

/// A tree server with D = 1, F = 2 (and a short wait unless a test gives its own).
async fn tree_app(extra: &[&str]) -> TestApp {
    let mut args = vec!["--relay-direct", "1", "--relay-fanout", "2"];
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

/// The broadcaster of `channel`, with its `broadcaster_ready` consumed.
async fn broadcaster(app: &TestApp, channel: &str) -> Client {
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    b.expect("broadcaster_ready").await;
    b
}

/// A tree viewer that joined `channel` (its `broadcaster_available` consumed).
async fn tree_viewer(app: &TestApp, channel: &str) -> Client {
    let mut v = app.client().await;
    v.emit(
        "join_as_viewer",
        json!({ "channel_id": channel, "relay": true }),
    );
    v.expect("broadcaster_available").await;
    v
}

/// Takes the broadcaster's bookkeeping events (`viewer_count`, `relay_tree`) up to and
/// including the `relay_tree` that says `depths` and `waiting`.
async fn until_figures(b: &mut Client, depths: Value, waiting: usize) -> Value {
    loop {
        let (name, args) = b.next().await;
        match name.as_str() {
            "viewer_count" => {}
            "relay_tree" if args[0]["depths"] == depths && args[0]["waiting"] == waiting => {
                return args[0].clone();
            }
            "relay_tree" => {}
            other => panic!("unexpected {other} {args:?}"),
        }
    }
}

async fn until_depths(b: &mut Client, depths: Value) -> Value {
    until_figures(b, depths, 0).await
}

/// The next event other than the broadcaster's bookkeeping (`viewer_count`, `relay_tree`).
async fn expect_past_figures(b: &mut Client, event: &str) -> Value {
    loop {
        let (name, mut args) = b.next().await;
        if name != "viewer_count" && name != "relay_tree" {
            assert_eq!(name, event, "{args:?}");
            return args.remove(0);
        }
    }
}

/// `relay_ready`, and waits until the server has handled it: one socket's events are handled
/// in order, so the answer to a channel list asked right after it follows it. (The tree's
/// choices depend on who is ready; two sockets' events race each other.)
async fn ready(viewer: &mut Client, channel: &str) {
    viewer.emit("relay_ready", json!({ "channel_id": channel }));
    viewer.emit("join_as_viewer", json!({}));
    viewer.expect("channel_list").await;
}

fn upstream(channel: &str, peer: &str, depth: usize) -> Value {
    json!({"channel_id": channel, "peer_id": peer, "depth": depth})
}

#[tokio::test]
async fn viewers_fill_the_tree_level_by_level_and_relay_to_their_feeder() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "tree").await;
    let mut a = tree_viewer(&app, "tree").await;
    assert_eq!(a.expect_upstream().await, upstream("tree", &b.sid, 1));
    // The broadcaster is full (D = 1) and nobody relays yet: the next viewer waits.
    let mut c = tree_viewer(&app, "tree").await;
    c.assert_silent().await;
    until_figures(&mut b, json!([1]), 1).await;
    // a plays the stream: c is fed by a, at depth 2.
    a.emit("relay_ready", json!({"channel_id": "tree"}));
    assert_eq!(c.expect_upstream().await, upstream("tree", &a.sid, 2));
    let mut figures = until_depths(&mut b, json!([1, 1])).await;
    assert!(figures["version"].as_u64().is_some());
    figures.as_object_mut().unwrap().remove("version");
    assert_eq!(
        figures,
        json!({"channel_id": "tree", "direct": 1, "relayed": 1, "waiting": 0, "depths": [1, 1]})
    );

    // c negotiates with a exactly as a legacy viewer does with its broadcaster.
    c.emit(
        "offer",
        json!({"target": a.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(a.expect("offer").await["sender"], c.sid);
    a.emit(
        "answer",
        json!({"target": c.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(c.expect("answer").await["sender"], a.sid);
    a.emit(
        "ice_candidate",
        json!({"target": c.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(c.expect("ice_candidate").await["sender"], a.sid);
    // Two viewers that are not feeder and child are no peers.
    let mut d = tree_viewer(&app, "tree").await;
    assert_eq!(d.expect_upstream().await, upstream("tree", &a.sid, 2));
    d.emit(
        "offer",
        json!({"target": c.sid, "sdp": sample_sdp("offer")}),
    );
    d.expect_relay_error("offer").await;
    c.assert_silent().await;
}

#[tokio::test]
async fn legacy_viewers_are_fed_by_the_broadcaster_and_see_nothing_new() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "mixed").await;
    let mut a = tree_viewer(&app, "mixed").await;
    a.expect_upstream().await;
    a.emit("relay_ready", json!({"channel_id": "mixed"}));
    // A legacy viewer: attached to the broadcaster at once, over D, told nothing new.
    let mut legacy = app.client().await;
    legacy.emit("join_as_viewer", json!({"channel_id": "mixed"}));
    legacy.expect("broadcaster_available").await;
    legacy.emit(
        "offer",
        json!({"target": b.sid, "sdp": sample_sdp("offer")}),
    );
    legacy.assert_silent().await;
    until_depths(&mut b, json!([2])).await;
    assert_eq!(b.expect("offer").await["sender"], legacy.sid);
    // Its departure is announced to its feeder, the broadcaster, after the count.
    legacy.close();
    legacy.expect_closed().await;
    assert_eq!(b.expect("viewer_count").await["count"], 1);
    assert_eq!(
        b.expect("downstream_left").await,
        json!({"channel_id": "mixed", "peer_id": legacy.sid})
    );
}

#[tokio::test]
async fn a_relay_that_leaves_is_replaced_and_its_children_keep_theirs() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "heal").await;
    // r ← broadcaster; c1, c2 ← r; g ← c1.
    let mut r = tree_viewer(&app, "heal").await;
    r.expect_upstream().await;
    r.emit("relay_ready", json!({"channel_id": "heal"}));
    let mut c1 = tree_viewer(&app, "heal").await;
    assert_eq!(c1.expect_upstream().await, upstream("heal", &r.sid, 2));
    c1.emit("relay_ready", json!({"channel_id": "heal"}));
    let mut c2 = tree_viewer(&app, "heal").await;
    assert_eq!(c2.expect_upstream().await, upstream("heal", &r.sid, 2));
    let mut g = tree_viewer(&app, "heal").await;
    assert_eq!(g.expect_upstream().await, upstream("heal", &c1.sid, 3));
    until_depths(&mut b, json!([1, 2, 1])).await;

    // The depth-1 relay leaves. No ready leaf can take its place (c2 and g have not said
    // `relay_ready`), so its children are placed again at once, each with its subtree; the
    // grandchild is not told anything (its feeder keeps it and swaps tracks).
    r.close();
    r.expect_closed().await;
    assert_eq!(b.expect("viewer_count").await["count"], 3);
    assert_eq!(
        b.expect("downstream_left").await,
        json!({"channel_id": "heal", "peer_id": r.sid})
    );
    // c1 (joined first) takes the broadcaster's free slot; c2 goes under c1 beside g.
    assert_eq!(c1.expect_upstream().await, upstream("heal", &b.sid, 1));
    // c1 must say relay_ready again before it feeds anyone new: c2 waits until it does.
    c2.assert_silent().await;
    c1.emit("relay_ready", json!({"channel_id": "heal"}));
    assert_eq!(c2.expect_upstream().await, upstream("heal", &c1.sid, 2));
    g.assert_silent().await;
    until_depths(&mut b, json!([1, 2])).await;
    // The former feeder is no longer a peer of c2.
    c2.emit(
        "offer",
        json!({"target": r.sid, "sdp": sample_sdp("offer")}),
    );
    c2.expect_relay_error("offer").await;
}

#[tokio::test]
async fn a_relay_that_leaves_is_replaced_by_the_deepest_ready_leaf() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "spare").await;
    // r ← broadcaster; c1, c2 ← r; g ← c1; every one plays.
    let mut r = tree_viewer(&app, "spare").await;
    r.expect_upstream().await;
    ready(&mut r, "spare").await;
    let mut c1 = tree_viewer(&app, "spare").await;
    assert_eq!(c1.expect_upstream().await, upstream("spare", &r.sid, 2));
    ready(&mut c1, "spare").await;
    let mut c2 = tree_viewer(&app, "spare").await;
    assert_eq!(c2.expect_upstream().await, upstream("spare", &r.sid, 2));
    ready(&mut c2, "spare").await;
    let mut g = tree_viewer(&app, "spare").await;
    // Under c1 or c2: both play and have room (their `relay_ready`s travel on two sockets, so
    // which one the server saw first is not the test's to decide).
    let placed = g.expect_upstream().await;
    let g_feeder = placed["peer_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(placed, upstream("spare", &g_feeder, 3));
    assert!(g_feeder == c1.sid || g_feeder == c2.sid, "{placed}");
    ready(&mut g, "spare").await;
    until_depths(&mut b, json!([1, 2, 1])).await;

    // r leaves: g, the ready leaf of the deepest level, takes its place and its children.
    r.close();
    r.expect_closed().await;
    assert_eq!(b.expect("viewer_count").await["count"], 3);
    assert_eq!(
        b.expect("downstream_left").await,
        json!({"channel_id": "spare", "peer_id": r.sid})
    );
    let old_feeder = if g_feeder == c1.sid { &mut c1 } else { &mut c2 };
    assert_eq!(
        old_feeder.expect("downstream_left").await,
        json!({"channel_id": "spare", "peer_id": g.sid})
    );
    assert_eq!(g.expect_upstream().await, upstream("spare", &b.sid, 1));
    assert_eq!(c1.expect_upstream().await, upstream("spare", &g.sid, 2));
    assert_eq!(c2.expect_upstream().await, upstream("spare", &g.sid, 2));
    until_depths(&mut b, json!([1, 2])).await;
    for v in [&mut c1, &mut c2, &mut g] {
        v.assert_silent().await;
    }
    // The new link relays.
    c2.emit(
        "offer",
        json!({"target": g.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(g.expect("offer").await["sender"], c2.sid);
}

#[tokio::test]
async fn upstream_failed_moves_the_viewer_and_tells_the_old_feeder() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "fail").await;
    let mut a = tree_viewer(&app, "fail").await;
    a.expect_upstream().await;
    a.emit("relay_ready", json!({"channel_id": "fail"}));
    let mut c = tree_viewer(&app, "fail").await;
    assert_eq!(c.expect_upstream().await, upstream("fail", &a.sid, 2));
    c.emit("relay_ready", json!({"channel_id": "fail"}));
    let mut d = tree_viewer(&app, "fail").await;
    assert_eq!(d.expect_upstream().await, upstream("fail", &a.sid, 2));
    // d lost its media from a: it is moved to c (a is excluded), and a is told.
    d.emit("upstream_failed", json!({"channel_id": "fail"}));
    assert_eq!(
        a.expect("downstream_left").await,
        json!({"channel_id": "fail", "peer_id": d.sid})
    );
    assert_eq!(d.expect_upstream().await, upstream("fail", &c.sid, 3));
    until_depths(&mut b, json!([1, 1, 1])).await;
    // a and d are no longer peers; c and d are.
    d.emit(
        "offer",
        json!({"target": a.sid, "sdp": sample_sdp("offer")}),
    );
    d.expect_relay_error("offer").await;
    d.emit(
        "offer",
        json!({"target": c.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(c.expect("offer").await["sender"], d.sid);
}

#[tokio::test]
async fn a_waiting_viewer_gets_the_broadcaster_after_the_wait_limit() {
    let app = tree_app(&["--relay-wait-ms", "300"]).await;
    let mut b = broadcaster(&app, "wait").await;
    let mut a = tree_viewer(&app, "wait").await;
    a.expect_upstream().await;
    let mut c = tree_viewer(&app, "wait").await;
    let started = tokio::time::Instant::now();
    assert_eq!(c.expect_upstream().await, upstream("wait", &b.sid, 1));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    until_depths(&mut b, json!([2])).await;
}

#[tokio::test]
async fn stop_dissolves_the_tree_and_going_live_sends_fresh_upstreams() {
    let app = tree_app(&[]).await;
    let mut b = broadcaster(&app, "again").await;
    let mut a = tree_viewer(&app, "again").await;
    a.expect_upstream().await;
    a.emit("relay_ready", json!({"channel_id": "again"}));
    let mut c = tree_viewer(&app, "again").await;
    assert_eq!(c.expect_upstream().await, upstream("again", &a.sid, 2));
    b.emit("stop_broadcast", json!({"channel_id": "again"}));
    a.expect("broadcaster_stopped").await;
    c.expect("broadcaster_stopped").await;
    // Nobody is eligible any more: a and c are no longer feeder and child.
    c.emit(
        "offer",
        json!({"target": a.sid, "sdp": sample_sdp("offer")}),
    );
    c.expect_relay_error("offer").await;
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "again", "force": true}),
    );
    expect_past_figures(&mut b, "broadcaster_ready").await;
    // broadcaster_available first, then a fresh upstream: a (joined first) gets the
    // broadcaster; c waits for a relay.
    a.expect("broadcaster_available").await;
    assert_eq!(a.expect_upstream().await, upstream("again", &b.sid, 1));
    c.expect("broadcaster_available").await;
    c.assert_silent().await;
    a.emit("relay_ready", json!({"channel_id": "again"}));
    assert_eq!(c.expect_upstream().await, upstream("again", &a.sid, 2));
}

#[tokio::test]
async fn a_channel_without_the_tree_feeds_everyone_directly() {
    let off = ["--relay-direct", "1", "--relay-fanout", "0"];
    let on = ["--relay-direct", "1", "--relay-fanout", "2"];
    for (server, broadcaster_relay) in [(off, true), (on, false)] {
        let app = spawn_app(&server).await;
        let mut b = app.client().await;
        b.emit(
            "join_as_broadcaster",
            json!({"channel_id": "flat", "relay": broadcaster_relay}),
        );
        b.expect("broadcaster_ready").await;
        for _ in 0..3 {
            let mut v = tree_viewer(&app, "flat").await;
            assert_eq!(v.expect_upstream().await, upstream("flat", &b.sid, 1));
            v.emit("relay_ready", json!({"channel_id": "flat"}));
            v.assert_silent().await;
        }
    }
}

#[tokio::test]
async fn tree_reports_are_validated_and_need_membership() {
    let app = tree_app(&[]).await;
    let _b = broadcaster(&app, "rules").await;
    let mut stranger = app.client().await;
    stranger.emit("relay_ready", json!({"channel_id": "rules"}));
    stranger
        .expect_error("You must be a viewer in this channel")
        .await;
    stranger.emit("upstream_failed", json!({"channel_id": "nope"}));
    stranger.expect_error("Channel not found or expired").await;
    stranger.emit("relay_ready", json!({}));
    stranger
        .expect_error("Invalid data: channel_id is required")
        .await;
    stranger.emit(
        "join_as_viewer",
        json!({"channel_id": "rules", "relay": "yes"}),
    );
    stranger.expect_error_prefix("Invalid data: relay").await;
    // Nothing was left behind by any of it.
    stranger.close();
    stranger.expect_closed().await;
    assert_eq!(app.health().await["indexed_sockets"], 1);
}

/// `relay_capacity`, and waits until the server has handled it (see [`ready`]).
async fn capacity(viewer: &mut Client, channel: &str, capacity: u64) {
    viewer.emit(
        "relay_capacity",
        json!({ "channel_id": channel, "capacity": capacity }),
    );
    viewer.emit("join_as_viewer", json!({}));
    viewer.expect("channel_list").await;
}

fn left(channel: &str, peer: &str) -> Value {
    json!({"channel_id": channel, "peer_id": peer})
}

#[tokio::test]
async fn a_relay_at_capacity_zero_hands_its_children_over_and_gets_no_new_ones() {
    let app = tree_app(&[]).await;
    let b = broadcaster(&app, "cap").await;
    let mut a = tree_viewer(&app, "cap").await;
    assert_eq!(a.expect_upstream().await, upstream("cap", &b.sid, 1));
    ready(&mut a, "cap").await;
    let mut c = tree_viewer(&app, "cap").await;
    assert_eq!(c.expect_upstream().await, upstream("cap", &a.sid, 2));
    ready(&mut c, "cap").await;
    let mut d = tree_viewer(&app, "cap").await;
    assert_eq!(d.expect_upstream().await, upstream("cap", &a.sid, 2));
    // a can feed nobody any more: c (a ready leaf) takes its place and d; a closes both
    // connections and is placed again once c plays.
    a.emit(
        "relay_capacity",
        json!({"channel_id": "cap", "capacity": 0}),
    );
    assert_eq!(c.expect_upstream().await, upstream("cap", &b.sid, 1));
    assert_eq!(d.expect_upstream().await, upstream("cap", &c.sid, 2));
    let mut gone = vec![
        a.expect("downstream_left").await,
        a.expect("downstream_left").await,
    ];
    gone.sort_by_key(|g| g["peer_id"].as_str().map(str::to_owned));
    let mut expected = vec![left("cap", &c.sid), left("cap", &d.sid)];
    expected.sort_by_key(|g| g["peer_id"].as_str().map(str::to_owned));
    assert_eq!(gone, expected);
    ready(&mut c, "cap").await;
    assert_eq!(a.expect_upstream().await, upstream("cap", &c.sid, 2));
    ready(&mut a, "cap").await;
    ready(&mut d, "cap").await;
    // a plays, at depth 2 beside d, with no child: the newcomer still goes to d.
    let mut e = tree_viewer(&app, "cap").await;
    assert_eq!(e.expect_upstream().await, upstream("cap", &d.sid, 3));
    a.assert_silent().await;
}

#[tokio::test]
async fn two_childrens_stall_reports_take_the_relays_children_away() {
    let app = spawn_app(&[
        "--relay-direct",
        "1",
        "--relay-fanout",
        "3",
        "--relay-wait-ms",
        "300",
    ])
    .await;
    let b = broadcaster(&app, "stall").await;
    let mut a = tree_viewer(&app, "stall").await;
    assert_eq!(a.expect_upstream().await, upstream("stall", &b.sid, 1));
    ready(&mut a, "stall").await;
    let mut children = Vec::new();
    for _ in 0..3 {
        let mut v = tree_viewer(&app, "stall").await;
        assert_eq!(v.expect_upstream().await, upstream("stall", &a.sid, 2));
        ready(&mut v, "stall").await;
        children.push(v);
    }
    let [c, d, e] = &mut children[..] else {
        unreachable!("three children")
    };
    // c's picture from a stalls: c moves (under d), a keeps feeding the others.
    c.emit("upstream_stalled", json!({"channel_id": "stall"}));
    assert_eq!(a.expect("downstream_left").await, left("stall", &c.sid));
    assert_eq!(c.expect_upstream().await, upstream("stall", &d.sid, 3));
    a.assert_silent().await;
    // e's too: a second child, so a feeds nobody from now on. d, its last child, is placed
    // again with its subtree (it gets the broadcaster after the wait: nobody else has room).
    e.emit("upstream_stalled", json!({"channel_id": "stall"}));
    assert_eq!(a.expect("downstream_left").await, left("stall", &e.sid));
    assert_eq!(e.expect_upstream().await, upstream("stall", &d.sid, 3));
    assert_eq!(a.expect("downstream_left").await, left("stall", &d.sid));
    assert_eq!(d.expect_upstream().await, upstream("stall", &b.sid, 1));
    // Whatever a says about its capacity, a newcomer is not given to it.
    capacity(&mut a, "stall", 3).await;
    ready(d, "stall").await;
    let mut f = tree_viewer(&app, "stall").await;
    assert_eq!(f.expect_upstream().await, upstream("stall", &d.sid, 2));
    a.assert_silent().await;
}

#[tokio::test]
async fn capacity_and_stall_reports_are_validated_and_need_membership() {
    let app = tree_app(&[]).await;
    let _b = broadcaster(&app, "rules").await;
    let mut stranger = app.client_with_codes().await;
    stranger.emit(
        "relay_capacity",
        json!({"channel_id": "rules", "capacity": 1}),
    );
    assert_eq!(
        stranger.expect_coded_error("not_a_viewer").await,
        "You must be a viewer in this channel"
    );
    stranger.emit("upstream_stalled", json!({"channel_id": "rules"}));
    stranger.expect_coded_error("not_a_viewer").await;
    stranger.emit("upstream_stalled", json!({"channel_id": "nope"}));
    assert_eq!(
        stranger.expect_coded_error("channel_not_found").await,
        "Channel not found or expired"
    );
    for (payload, message) in [
        (
            json!({"channel_id": "rules", "capacity": 101}),
            "Invalid data: capacity must be an integer from 0 to 100",
        ),
        (
            json!({"channel_id": "rules", "capacity": -1}),
            "Invalid data: capacity: invalid value: integer `-1`, expected u64",
        ),
        (
            json!({"channel_id": "rules", "capacity": "2"}),
            "Invalid data: capacity: invalid type: string \"2\", expected u64",
        ),
        (
            json!({"channel_id": "rules"}),
            "Invalid data: capacity is required",
        ),
        (
            json!({"capacity": 1}),
            "Invalid data: channel_id is required",
        ),
    ] {
        stranger.emit("relay_capacity", payload);
        assert_eq!(
            stranger.expect_coded_error("invalid_payload").await,
            message
        );
    }
    // A legacy viewer (or one not in the tree) may say it: nothing changes, nothing is sent.
    let mut legacy = app.client().await;
    legacy.emit("join_as_viewer", json!({"channel_id": "rules"}));
    legacy.expect("broadcaster_available").await;
    capacity(&mut legacy, "rules", 0).await;
    legacy.emit("upstream_stalled", json!({"channel_id": "rules"}));
    legacy.assert_silent().await;
}

/// A tree viewer on a cluster node (its `broadcaster_available` consumed).
async fn cluster_viewer(cluster: &Cluster, node: usize, channel: &str) -> Client {
    let mut v = cluster.nodes[node].client().await;
    v.emit(
        "join_as_viewer",
        json!({ "channel_id": channel, "relay": true }),
    );
    v.expect("broadcaster_available").await;
    v
}

/// In a cluster the channel, tree included, is a document in Redis that every event loads and
/// stores: capacities and stall reports made on one node hold for events on the other.
#[tokio::test]
async fn capacities_and_stall_reports_hold_across_a_cluster() {
    let cluster = Cluster::start(
        2,
        &[
            "--relay-direct",
            "1",
            "--relay-fanout",
            "2",
            "--relay-wait-ms",
            "300",
        ],
    )
    .await;
    let mut b = cluster.nodes[0].client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "ctree"}));
    b.expect("broadcaster_ready").await;
    let mut a = cluster_viewer(&cluster, 1, "ctree").await;
    assert_eq!(a.expect_upstream().await, upstream("ctree", &b.sid, 1));
    ready(&mut a, "ctree").await;
    // a (node 1) can feed nobody: c (node 0) gets the broadcaster after the wait, over D.
    capacity(&mut a, "ctree", 0).await;
    let mut c = cluster_viewer(&cluster, 0, "ctree").await;
    assert_eq!(c.expect_upstream().await, upstream("ctree", &b.sid, 1));
    ready(&mut c, "ctree").await;
    let mut d = cluster_viewer(&cluster, 1, "ctree").await;
    assert_eq!(d.expect_upstream().await, upstream("ctree", &c.sid, 2));
    ready(&mut d, "ctree").await;
    let mut e = cluster_viewer(&cluster, 0, "ctree").await;
    assert_eq!(e.expect_upstream().await, upstream("ctree", &c.sid, 2));
    ready(&mut e, "ctree").await;
    // Two of c's children, one on each node, say its picture stalls: each moves, and c feeds
    // nobody from then on.
    d.emit("upstream_stalled", json!({"channel_id": "ctree"}));
    assert_eq!(c.expect("downstream_left").await, left("ctree", &d.sid));
    assert_eq!(d.expect_upstream().await, upstream("ctree", &e.sid, 3));
    e.emit("upstream_stalled", json!({"channel_id": "ctree"}));
    assert_eq!(c.expect("downstream_left").await, left("ctree", &e.sid));
    assert_eq!(e.expect_upstream().await, upstream("ctree", &b.sid, 1));
    ready(&mut e, "ctree").await;
    // Neither a nor c gets the newcomer.
    let mut f = cluster_viewer(&cluster, 1, "ctree").await;
    assert_eq!(f.expect_upstream().await, upstream("ctree", &e.sid, 2));
    a.assert_silent().await;
    c.assert_silent().await;
    cluster.teardown(vec![b, a, c, d, e, f]).await;
}

/// A report names the feeder it is about (`peer_id`): one about a feeder the viewer no longer
/// has (a move crossed it on the wire) changes nothing, one about its feeder moves it. The
/// same contract in memory and across two nodes: `b`, `a`, `c`, `d` are fresh connections.
async fn reports_about_a_former_feeder_change_nothing(
    mut b: Client,
    mut a: Client,
    mut c: Client,
    mut d: Client,
    channel: &str,
) -> Vec<Client> {
    b.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    b.expect("broadcaster_ready").await;
    a.emit(
        "join_as_viewer",
        json!({ "channel_id": channel, "relay": true }),
    );
    a.expect("broadcaster_available").await;
    assert_eq!(a.expect_upstream().await, upstream(channel, &b.sid, 1));
    ready(&mut a, channel).await;
    for v in [&mut c, &mut d] {
        v.emit(
            "join_as_viewer",
            json!({ "channel_id": channel, "relay": true }),
        );
        v.expect("broadcaster_available").await;
        assert_eq!(v.expect_upstream().await, upstream(channel, &a.sid, 2));
        ready(v, channel).await;
    }
    // d names feeders it does not have: nobody hears of it, and its place stays.
    d.emit(
        "upstream_failed",
        json!({ "channel_id": channel, "peer_id": c.sid }),
    );
    d.emit(
        "upstream_stalled",
        json!({ "channel_id": channel, "peer_id": b.sid }),
    );
    d.assert_silent().await;
    a.assert_silent().await;
    c.assert_silent().await;
    d.emit(
        "offer",
        json!({"target": a.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(a.expect("offer").await["sender"], d.sid);
    // d names a, its feeder: it is moved to c, and a is told.
    d.emit(
        "upstream_failed",
        json!({ "channel_id": channel, "peer_id": a.sid }),
    );
    assert_eq!(a.expect("downstream_left").await, left(channel, &d.sid));
    assert_eq!(d.expect_upstream().await, upstream(channel, &c.sid, 3));
    // What is not an id the server sends is refused before anything else.
    d.emit(
        "upstream_stalled",
        json!({ "channel_id": channel, "peer_id": 7 }),
    );
    d.expect_error_prefix("Invalid data: peer_id").await;
    d.emit(
        "upstream_failed",
        json!({ "channel_id": channel, "peer_id": "x".repeat(65) }),
    );
    d.expect_error_prefix("Invalid data: peer_id").await;
    vec![b, a, c, d]
}

#[tokio::test]
async fn reports_naming_a_former_feeder_change_nothing_in_memory() {
    let app = tree_app(&[]).await;
    let clients = [
        app.client().await,
        app.client().await,
        app.client().await,
        app.client().await,
    ];
    let [b, a, c, d] = clients;
    reports_about_a_former_feeder_change_nothing(b, a, c, d, "named").await;
}

#[tokio::test]
async fn reports_naming_a_former_feeder_change_nothing_across_a_cluster() {
    let cluster = Cluster::start(2, &["--relay-direct", "1", "--relay-fanout", "2"]).await;
    let b = cluster.nodes[0].client().await;
    let a = cluster.nodes[1].client().await;
    let c = cluster.nodes[0].client().await;
    let d = cluster.nodes[1].client().await;
    let clients = reports_about_a_former_feeder_change_nothing(b, a, c, d, "cnamed").await;
    cluster.teardown(clients).await;
}

/// A channel's owner sends the relay-tree moves its rules make for other sockets than the
/// caller's, in their order, itself: a relay on the owner's node leaves, and its two children
/// on the other node hear of their new places through the emits channel, not through the
/// adapter from whichever node handled the departure.
#[tokio::test]
async fn in_a_cluster_the_owner_sends_the_moves_a_departure_makes() {
    let cluster = Cluster::start(2, &["--relay-direct", "1", "--relay-fanout", "2"]).await;
    let mut b = cluster.nodes[0].client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "moves"}));
    b.expect("broadcaster_ready").await;
    let mut r = cluster_viewer(&cluster, 0, "moves").await;
    assert_eq!(r.expect_upstream().await, upstream("moves", &b.sid, 1));
    ready(&mut r, "moves").await;
    let mut children = Vec::new();
    for _ in 0..2 {
        let mut c = cluster_viewer(&cluster, 1, "moves").await;
        assert_eq!(c.expect_upstream().await, upstream("moves", &r.sid, 2));
        ready(&mut c, "moves").await;
        children.push(c);
    }
    let listener = EmitsListener::start(&cluster).await;
    r.close();
    // One of them takes the broadcaster's free place; the other its place below it.
    let moves = [
        children[0].expect_upstream().await,
        children[1].expect_upstream().await,
    ];
    let top = usize::from(moves[0] != upstream("moves", &b.sid, 1));
    assert_eq!(moves[top], upstream("moves", &b.sid, 1), "{moves:?}");
    let below = upstream("moves", &children[top].sid, 2);
    assert_eq!(moves[1 - top], below, "{moves:?}");
    let heard = listener.messages().await;
    for c in &children {
        assert!(
            heard
                .iter()
                .any(|m| m.contains("\"upstream\"") && m.contains(&c.sid)),
            "{}'s move on the emits channel: {heard:?}",
            c.sid
        );
    }
    children.extend([b]);
    cluster.teardown(children).await;
}
