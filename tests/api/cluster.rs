//! Cluster mode (`--redis-url`): several server processes sharing channels through Redis. For
//! every client the cluster must behave exactly as one server does (protocol.rs's expectations,
//! with the participants spread over the nodes), notice a dead node within two heartbeats,
//! report a Redis outage and recover from it by itself, and leave nothing behind in Redis.
//!
//! Each test runs the real binary as child processes against a Redis prefix of its own (see
//! `helpers::Cluster`); its teardown checks that Redis holds nothing more under that prefix.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{
    Client, Cluster, EVENT_TIMEOUT, Node, Polling, RedisServer, free_port, keys_under,
    pubsub_channels_under, redis_cli, sample_candidate, sample_sdp, unique_prefix,
};

/// Flags for tests that open more channels from 127.0.0.1 than a real client address would.
const FEW_LIMITS: [&str; 4] = [
    "--max-channels-per-ip",
    "10000000",
    "--max-channels-per-socket",
    "10000",
];

/// The heartbeat of the death test, and the slack allowed on top of "within 2 × heartbeat"
/// for the notice to travel (Redis pub/sub, the WebSocket) on a busy CI machine. Shorter
/// heartbeats make a CPU-starved but live node look dead (its key lives 1.5 × heartbeat).
const HEARTBEAT_MS: u64 = 500;
const DEATH_SLACK: Duration = Duration::from_millis(500);
/// The heartbeat of the Redis outage test (it measures Redis, not the heartbeat).
const OUTAGE_HEARTBEAT_MS: &str = "1000";

/// A broadcaster on `b_node` and a viewer on `v_node` in `channel`, set-up events consumed.
async fn channel_across(b_node: &Node, v_node: &Node, channel: &str) -> (Client, Client) {
    let mut broadcaster = b_node.client().await;
    broadcaster.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    assert_eq!(
        broadcaster.expect("broadcaster_ready").await,
        json!({"id": broadcaster.sid, "channel_id": channel})
    );
    let viewer = join_viewer(v_node, &mut broadcaster, channel, 1).await;
    (broadcaster, viewer)
}

/// A new viewer on `node` joins `channel` of `broadcaster`, which then counts `count` viewers.
pub(crate) async fn join_viewer(
    node: &Node,
    broadcaster: &mut Client,
    channel: &str,
    count: u64,
) -> Client {
    let mut viewer = node.client().await;
    viewer.emit("join_as_viewer", json!({ "channel_id": channel }));
    assert_eq!(
        viewer.expect("broadcaster_available").await,
        json!({"broadcaster_id": broadcaster.sid, "channel_id": channel})
    );
    assert_eq!(
        broadcaster.expect("viewer_count").await,
        json!({"channel_id": channel, "count": count})
    );
    viewer
}

/// The next event of `client` (within 10 s) and how long after `since` it arrived.
async fn next_after(client: &mut Client, since: Instant) -> (String, Vec<Value>, Duration) {
    try_next_after(client, since)
        .await
        .unwrap_or_else(|| panic!("no event within 10 s ({:?} since the cue)", since.elapsed()))
}

/// The next event of `client` within 10 s, if any, and how long after `since` it arrived.
async fn try_next_after(
    client: &mut Client,
    since: Instant,
) -> Option<(String, Vec<Value>, Duration)> {
    let (name, args) = tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .ok()?
        .expect("connection open");
    Some((name, args, since.elapsed()))
}

/// `broadcaster_disconnected` carries `null` (or nothing).
fn assert_broadcaster_disconnected(name: &str, args: &[Value]) {
    assert_eq!(name, "broadcaster_disconnected", "got {name} {args:?}");
    assert!(args.is_empty() || args == [Value::Null], "{args:?}");
}

/// Every node reports `count` channels (the cluster-wide figure) within a moment.
async fn assert_channels_everywhere(cluster: &Cluster, count: u64) {
    assert_channels_on(&cluster.nodes.iter().collect::<Vec<_>>(), count).await;
}

/// These nodes report `count` channels (the cluster-wide figure) within a moment.
async fn assert_channels_on(nodes: &[&Node], count: u64) {
    for node in nodes {
        node.wait_health(
            &format!("channels == {count}"),
            Duration::from_secs(2),
            |status, h| status == 200 && h["channels"] == count,
        )
        .await;
    }
}

#[tokio::test]
async fn cluster_health_reports_its_node_and_cluster_wide_channels() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (status_a, health_a) = a.health().await;
    let (status_b, health_b) = b.health().await;
    for (status, health) in [(status_a, &health_a), (status_b, &health_b)] {
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["mode"], "cluster", "{health}");
        assert_eq!(health["channels"], 0, "{health}");
        assert_eq!(health["sockets"], 0, "{health}");
        let id = health["node_id"].as_str().expect("node_id is a string");
        assert!(!id.is_empty(), "{health}");
    }
    assert_ne!(health_a["node_id"], health_b["node_id"], "nodes differ");

    let mut broadcaster = a.client().await;
    broadcaster.emit("join_as_broadcaster", json!({"channel_id": "hello"}));
    broadcaster.expect("broadcaster_ready").await;
    // `channels` counts the whole cluster; `sockets` this node's own.
    assert_channels_everywhere(&cluster, 1).await;
    assert_eq!(a.health().await.1["sockets"], 1);
    assert_eq!(b.health().await.1["sockets"], 0);
    let viewer = join_viewer(b, &mut broadcaster, "hello", 1).await;
    assert_eq!(b.health().await.1["sockets"], 1);
    assert_eq!(a.health().await.1["sockets"], 1);

    // The deployment's keys and pub/sub channels live under its prefix.
    let keys = keys_under(cluster.redis_port, &cluster.prefix).await;
    assert!(!keys.is_empty(), "no key under {}", cluster.prefix);
    let channels = pubsub_channels_under(cluster.redis_port, &cluster.prefix).await;
    assert!(
        !channels.is_empty(),
        "no pub/sub channel under {} (socket.io fan-out must use the prefix too)",
        cluster.prefix
    );
    cluster.teardown(vec![broadcaster, viewer]).await;
}

/// `from` sends an offer and right after it 20 candidates; `to` gets them in that order.
async fn offer_then_candidates_in_order(from: &Client, to: &mut Client) {
    from.emit(
        "offer",
        json!({"target": to.sid, "sdp": sample_sdp("offer")}),
    );
    for i in 0..20 {
        let mut candidate = sample_candidate();
        candidate["sdpMLineIndex"] = json!(i);
        from.emit(
            "ice_candidate",
            json!({"target": to.sid, "candidate": candidate}),
        );
    }
    assert_eq!(to.expect("offer").await["sender"], from.sid.as_str());
    for i in 0..20 {
        let relayed = to.expect("ice_candidate").await;
        assert_eq!(relayed["candidate"]["sdpMLineIndex"], i, "{relayed}");
        assert_eq!(relayed["sender"], from.sid.as_str());
    }
}

#[tokio::test]
async fn offer_answer_and_ice_cross_nodes_both_ways_in_order() {
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (mut bc, mut v) = channel_across(a, b, "relay").await;

    v.emit(
        "offer",
        json!({"target": bc.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        bc.expect("offer").await,
        json!({"sdp": sample_sdp("offer"), "sender": v.sid})
    );
    bc.emit(
        "answer",
        json!({"target": v.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(
        v.expect("answer").await,
        json!({"sdp": sample_sdp("answer"), "sender": bc.sid})
    );
    v.emit(
        "ice_candidate",
        json!({"target": bc.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        bc.expect("ice_candidate").await,
        json!({"candidate": sample_candidate(), "sender": v.sid})
    );
    bc.emit(
        "ice_candidate",
        json!({"target": v.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        v.expect("ice_candidate").await,
        json!({"candidate": sample_candidate(), "sender": bc.sid})
    );
    // Opaque objects cross the cluster as received, whatever they hold.
    let odd = json!({"type": "offer", "sdp": "x", "nested": {"ü": [1, 2.5, null, true]}});
    v.emit("offer", json!({"target": bc.sid, "sdp": odd}));
    assert_eq!(bc.expect("offer").await["sdp"], odd);

    // Order: the candidates a browser sends right after its offer arrive after it, in order,
    // in both directions.
    offer_then_candidates_in_order(&v, &mut bc).await;
    offer_then_candidates_in_order(&bc, &mut v).await;

    // A socket on a third node that shares no channel with them is refused, both ways.
    let mut outsider = c.client().await;
    outsider.emit(
        "offer",
        json!({"target": bc.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        outsider.expect_relay_error("offer").await,
        "Target is not a peer of yours in any channel"
    );
    bc.emit(
        "ice_candidate",
        json!({"target": outsider.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        bc.expect_relay_error("ice_candidate").await,
        "Target is not a peer of yours in any channel"
    );
    bc.assert_silent().await;
    v.assert_silent().await;
    outsider.assert_silent().await;
    cluster.teardown(vec![bc, v, outsider]).await;
}

#[tokio::test]
async fn chat_reaches_every_participant_on_every_node_with_aliases() {
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (mut bc, mut v1) = channel_across(a, b, "chat").await;
    let mut v2 = join_viewer(c, &mut bc, "chat", 2).await;
    let mut v3 = join_viewer(a, &mut bc, "chat", 3).await;
    let mut outsider = c.client().await;

    // set_alias rules, wherever the channel lives.
    v1.emit("set_alias", json!({"channel_id": "nope", "alias": "Alice"}));
    v1.expect_error("Channel not found or expired").await;
    outsider.emit(
        "set_alias",
        json!({"channel_id": "chat", "alias": "Mallory"}),
    );
    outsider
        .expect_error("You must be a viewer in this channel")
        .await;
    bc.emit("set_alias", json!({"channel_id": "chat", "alias": "Owner"}));
    bc.expect_error("You must be a viewer in this channel")
        .await;

    // A viewer on B speaks: everyone on A, B and C hears it, the sender included.
    v1.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "  hello all  "}),
    );
    let default_name = format!("Viewer-{}", &v1.sid[..8]);
    for client in [&mut bc, &mut v1, &mut v2, &mut v3] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["sender_id"], default_name.as_str(), "{msg}");
        assert_eq!(msg["message"], "hello all");
        assert!(msg["timestamp"].is_f64(), "{msg}");
        assert_eq!(msg.as_object().map(|o| o.len()), Some(3), "{msg}");
    }

    // A viewer on C with an alias.
    v2.emit(
        "set_alias",
        json!({"channel_id": "chat", "alias": "  Bobby  "}),
    );
    assert_eq!(
        v2.expect("alias_set").await,
        json!({"alias": "Bobby", "success": true})
    );
    let long = "😀".repeat(200);
    v2.emit(
        "send_message",
        json!({"channel_id": "chat", "message": long}),
    );
    for client in [&mut bc, &mut v1, &mut v2, &mut v3] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["sender_id"], "Bobby", "{msg}");
        assert_eq!(msg["message"], long.as_str());
    }

    // A viewer on the broadcaster's own node.
    v3.emit(
        "set_alias",
        json!({"channel_id": "chat", "alias": "Carol C"}),
    );
    v3.expect("alias_set").await;
    v3.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "from A"}),
    );
    for client in [&mut bc, &mut v1, &mut v2, &mut v3] {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["sender_id"], "Carol C", "{msg}");
        assert_eq!(msg["message"], "from A");
    }

    // Refusals: the broadcaster and an outsider are not viewers.
    bc.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "hi"}),
    );
    bc.expect_error("You must be a viewer in this channel to send messages")
        .await;
    outsider.emit(
        "send_message",
        json!({"channel_id": "chat", "message": "hi"}),
    );
    outsider
        .expect_error("You must be a viewer in this channel to send messages")
        .await;
    v1.emit(
        "send_message",
        json!({"channel_id": "nope", "message": "hi"}),
    );
    v1.expect_error("Channel not found or expired").await;
    for client in [&mut bc, &mut v1, &mut v2, &mut v3, &mut outsider] {
        client.assert_silent().await;
    }
    cluster.teardown(vec![bc, v1, v2, v3, outsider]).await;
}

#[tokio::test]
async fn channel_list_is_cluster_wide_and_oldest_first() {
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let mut viewer = c.client().await;
    viewer.emit("join_as_viewer", json!({}));
    assert_eq!(viewer.expect("channel_list").await, json!({"channels": []}));
    viewer.emit("join_as_viewer", json!({"channel_id": "ghost"}));
    viewer
        .expect_error("Channel ghost not found or expired")
        .await;

    let mut broadcasters = Vec::new();
    for (node, id) in [(a, "older"), (b, "newer"), (c, "newest")] {
        let mut broadcaster = node.client().await;
        broadcaster.emit("join_as_broadcaster", json!({"channel_id": id}));
        broadcaster.expect("broadcaster_ready").await;
        broadcasters.push(broadcaster);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for payload in [None, Some(json!(null)), Some(json!({"channel_id": null}))] {
        match payload {
            None => viewer.emit_bare("join_as_viewer"),
            Some(p) => viewer.emit("join_as_viewer", p),
        }
        let list = viewer.expect("channel_list").await;
        let channels = list["channels"].as_array().expect("channels array");
        let ids: Vec<&str> = channels.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(ids, ["older", "newer", "newest"], "{list}");
        for (channel, broadcaster) in channels.iter().zip(&broadcasters) {
            assert_eq!(channel["broadcaster_sid"], broadcaster.sid.as_str());
            assert!(channel["created_at"].is_f64(), "{channel}");
            assert!(channel["last_activity"].is_f64(), "{channel}");
            assert!(channel["age_seconds"].is_u64(), "{channel}");
            assert_eq!(channel.as_object().map(|o| o.len()), Some(5), "{channel}");
        }
        let created: Vec<f64> = channels
            .iter()
            .filter_map(|c| c["created_at"].as_f64())
            .collect();
        assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");
    }

    // Joining a channel of another node works like joining a local one.
    viewer.emit("join_as_viewer", json!({"channel_id": "newer", "extra": 1}));
    assert_eq!(
        viewer.expect("broadcaster_available").await,
        json!({"broadcaster_id": broadcasters[1].sid, "channel_id": "newer"})
    );
    assert_eq!(
        broadcasters[1].expect("viewer_count").await,
        json!({"channel_id": "newer", "count": 1})
    );
    viewer.assert_silent().await;
    for broadcaster in &mut broadcasters {
        broadcaster.assert_silent().await;
    }
    broadcasters.push(viewer);
    cluster.teardown(broadcasters).await;
}

#[tokio::test]
async fn capacity_is_counted_across_nodes() {
    let cluster = Cluster::start(2, &["--max-channels", "2"]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // Node A fills the cluster.
    let mut first = a.client().await;
    first.emit("join_as_broadcaster", json!({"channel_id": "one"}));
    first.expect("broadcaster_ready").await;
    let (mut bc, v) = channel_across(a, b, "two").await;

    // Node B refuses a third, named or not.
    let mut late = b.client().await;
    late.emit("join_as_broadcaster", json!({"channel_id": "three"}));
    let message = late.expect_error_prefix("Server is at capacity").await;
    assert!(message.contains('2'), "{message}");
    late.emit("join_as_broadcaster", json!({}));
    late.expect_error_prefix("Server is at capacity").await;
    // Existing channels are untouched and still work.
    v.emit(
        "offer",
        json!({"target": bc.sid, "sdp": sample_sdp("offer")}),
    );
    bc.expect("offer").await;
    first.assert_silent().await;
    late.emit("join_as_viewer", json!({}));
    let list = late.expect("channel_list").await;
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(2), "{list}");

    // Room frees up on B when a broadcaster on A leaves.
    first.close();
    assert_channels_everywhere(&cluster, 1).await;
    late.emit("join_as_broadcaster", json!({"channel_id": "three"}));
    late.expect("broadcaster_ready").await;
    bc.assert_silent().await;
    cluster.teardown(vec![first, bc, v, late]).await;
}

#[tokio::test]
async fn one_broadcaster_per_channel_across_nodes() {
    let cluster = Cluster::start(2, &FEW_LIMITS).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut first = a.client().await;
    first.emit("join_as_broadcaster", json!({"channel_id": "taken"}));
    first.expect("broadcaster_ready").await;
    let mut second = b.client().await;
    second.emit("join_as_broadcaster", json!({"channel_id": "taken"}));
    second
        .expect_error("Channel taken already has a broadcaster")
        .await;
    // force does not let anybody else take over a live broadcast, from any node.
    second.emit(
        "join_as_broadcaster",
        json!({"channel_id": "taken", "force": true}),
    );
    second
        .expect_error("Channel taken already has a broadcaster")
        .await;
    first.assert_silent().await;

    // Two nodes claiming the same new channel at the same moment: exactly one wins.
    for round in 0..8 {
        let id = format!("race-{round}");
        first.emit("join_as_broadcaster", json!({ "channel_id": id }));
        second.emit("join_as_broadcaster", json!({ "channel_id": id }));
        let (x, y) = tokio::join!(first.next(), second.next());
        let refused = json!({"message": format!("Channel {id} already has a broadcaster")});
        let won =
            |(name, args): &(String, Vec<Value>)| name == "broadcaster_ready" && args.len() == 1;
        let lost =
            |(name, args): &(String, Vec<Value>)| name == "error" && *args == [refused.clone()];
        assert!(
            (won(&x) && lost(&y)) || (lost(&x) && won(&y)),
            "{id}: A got {x:?}, B got {y:?}"
        );
    }
    first.emit("join_as_viewer", json!({}));
    let list = first.expect("channel_list").await;
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(9), "{list}");
    first.assert_silent().await;
    second.assert_silent().await;
    cluster.teardown(vec![first, second]).await;
}

#[tokio::test]
async fn stop_broadcast_and_going_live_again_reach_viewers_on_other_nodes() {
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (mut bc, mut v) = channel_across(a, b, "stopme").await;
    bc.emit("stop_broadcast", json!({"channel_id": "nope"}));
    bc.expect_error("Channel not found or expired").await;
    v.emit("stop_broadcast", json!({"channel_id": "stopme"}));
    v.expect_error("You are not the broadcaster of this channel")
        .await;

    bc.emit("stop_broadcast", json!({"channel_id": "stopme"}));
    assert_eq!(
        v.expect("broadcaster_stopped").await,
        json!({"channel_id": "stopme"})
    );
    bc.assert_silent().await;
    assert_channels_everywhere(&cluster, 1).await;

    // Someone joining on a third node while stopped is told right away, after the usual answer.
    let mut late = c.client().await;
    late.emit("join_as_viewer", json!({"channel_id": "stopme"}));
    assert_eq!(
        late.expect("broadcaster_available").await,
        json!({"broadcaster_id": bc.sid, "channel_id": "stopme"})
    );
    assert_eq!(
        late.expect("broadcaster_stopped").await,
        json!({"channel_id": "stopme"})
    );
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "stopme", "count": 2})
    );

    // Without force the owner is refused, as before.
    bc.emit("join_as_broadcaster", json!({"channel_id": "stopme"}));
    bc.expect_error("Channel stopme already has a broadcaster")
        .await;
    // With force it goes live again; the viewers on B and C are told.
    bc.emit(
        "join_as_broadcaster",
        json!({"channel_id": "stopme", "force": true}),
    );
    assert_eq!(
        bc.expect("broadcaster_ready").await,
        json!({"id": bc.sid, "channel_id": "stopme"})
    );
    for viewer in [&mut v, &mut late] {
        assert_eq!(
            viewer.expect("broadcaster_available").await,
            json!({"broadcaster_id": bc.sid, "channel_id": "stopme"})
        );
    }
    late.emit(
        "offer",
        json!({"target": bc.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(bc.expect("offer").await["sender"], late.sid.as_str());
    for client in [&mut bc, &mut v, &mut late] {
        client.assert_silent().await;
    }
    cluster.teardown(vec![bc, v, late]).await;
}

#[tokio::test]
async fn disconnects_are_told_across_nodes() {
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (mut bc, v1) = channel_across(a, b, "bye").await;
    let mut v2 = join_viewer(c, &mut bc, "bye", 2).await;

    // A viewer on B leaves: the broadcaster on A gets the count, and nothing else.
    let v1_sid = v1.sid.clone();
    v1.close();
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "bye", "count": 1})
    );
    bc.assert_silent().await;
    bc.emit(
        "offer",
        json!({"target": v1_sid, "sdp": sample_sdp("offer")}),
    );
    bc.expect_relay_error("offer").await;

    // The broadcaster on A leaves: the viewer on C is told, and the channel is gone everywhere.
    bc.close();
    let (name, args) = v2.next().await;
    assert_broadcaster_disconnected(&name, &args);
    assert_channels_everywhere(&cluster, 0).await;
    v2.emit("join_as_viewer", json!({}));
    assert_eq!(v2.expect("channel_list").await, json!({"channels": []}));
    v2.emit("join_as_viewer", json!({"channel_id": "bye"}));
    v2.expect_error("Channel bye not found or expired").await;
    v2.assert_silent().await;
    cluster.teardown(vec![bc, v1, v2]).await;
}

#[tokio::test]
async fn idle_channel_expires_once_and_live_ones_across_nodes_stay() {
    let cluster = Cluster::start(2, &["--channel-ttl-secs", "1"]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut idle = a.client().await;
    idle.emit("join_as_broadcaster", json!({"channel_id": "idle"}));
    idle.expect("broadcaster_ready").await;
    // Live channels whose viewer is on the other node, one each way.
    let (mut live_a, mut live_av) = channel_across(a, b, "live-a").await;
    let (mut live_b, mut live_bv) = channel_across(b, a, "live-b").await;

    let expired = tokio::time::timeout(Duration::from_secs(4), idle.expect("channel_expired"))
        .await
        .expect("channel_expired within the TTL plus a sweep");
    assert_eq!(expired, json!({"channel_id": "idle"}));
    // Told once, not once per node.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.assert_silent().await;
    assert_channels_everywhere(&cluster, 2).await;

    // The live channels still relay, and the expired one is gone for viewers on both nodes.
    for (broadcaster, viewer) in [(&mut live_a, &mut live_av), (&mut live_b, &mut live_bv)] {
        viewer.emit(
            "offer",
            json!({"target": broadcaster.sid, "sdp": sample_sdp("offer")}),
        );
        assert_eq!(
            broadcaster.expect("offer").await["sender"],
            viewer.sid.as_str()
        );
        viewer.emit("join_as_viewer", json!({"channel_id": "idle"}));
        viewer
            .expect_error("Channel idle not found or expired")
            .await;
        broadcaster.assert_silent().await;
        viewer.assert_silent().await;
    }
    // The expired broadcaster can start afresh.
    idle.emit("join_as_broadcaster", json!({"channel_id": "idle"}));
    idle.expect("broadcaster_ready").await;
    cluster
        .teardown(vec![idle, live_a, live_av, live_b, live_bv])
        .await;
}

#[tokio::test]
async fn long_polling_viewer_and_websocket_only_node() {
    let mut cluster = Cluster::start(2, &[]).await;
    let ws_only = cluster.add_node(&["--transports", "websocket"]).await;
    let (a, b, c) = (
        &cluster.nodes[0],
        &cluster.nodes[1],
        &cluster.nodes[ws_only],
    );
    let mut bc = a.client().await;
    bc.emit("join_as_broadcaster", json!({"channel_id": "poll"}));
    bc.expect("broadcaster_ready").await;

    // The legacy client's first transport on B, the broadcaster on A.
    let mut polling = Polling::open_url(&b.url()).await;
    polling.post(&["40".into()]).await;
    let polling_sid = polling.expect("client_id").await["id"]
        .as_str()
        .expect("client_id")
        .to_owned();
    polling
        .emit("join_as_viewer", json!({"channel_id": "poll"}))
        .await;
    assert_eq!(
        polling.expect("broadcaster_available").await,
        json!({"broadcaster_id": bc.sid, "channel_id": "poll"})
    );
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "poll", "count": 1})
    );
    bc.emit(
        "offer",
        json!({"target": polling_sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        polling.expect("offer").await,
        json!({"sdp": sample_sdp("offer"), "sender": bc.sid})
    );

    // `--transports websocket`: no long-polling handshake, WebSocket as usual.
    let refused = reqwest::get(format!("{}/socket.io/?EIO=4&transport=polling", c.url()))
        .await
        .expect("node answers");
    assert!(
        refused.status().is_client_error(),
        "polling handshake on a websocket-only node: {}",
        refused.status()
    );
    let v = join_viewer(c, &mut bc, "poll", 2).await;
    polling.close().await;
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "poll", "count": 1})
    );
    cluster.teardown(vec![bc, v]).await;
}

#[tokio::test]
async fn killed_node_is_noticed_within_two_heartbeats() {
    let heartbeat = HEARTBEAT_MS.to_string();
    let mut cluster = Cluster::start(3, &["--heartbeat-ms", &heartbeat]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    // On A (to be killed): the broadcaster of "doomed", and a viewer of "safe".
    let (mut doomed_b, mut doomed_v1) = channel_across(a, b, "doomed").await;
    let mut doomed_v2 = join_viewer(c, &mut doomed_b, "doomed", 2).await;
    let (mut safe_b, mut safe_v1) = channel_across(b, a, "safe").await;
    let mut safe_v2 = join_viewer(c, &mut safe_b, "safe", 2).await;
    let lost_sid = safe_v1.sid.clone();
    assert_channels_everywhere(&cluster, 2).await;

    let killed_at = Instant::now();
    cluster.nodes[0].kill().await;
    let (on_b, on_c, count) = tokio::join!(
        next_after(&mut doomed_v1, killed_at),
        next_after(&mut doomed_v2, killed_at),
        next_after(&mut safe_b, killed_at),
    );
    let bound = Duration::from_millis(2 * HEARTBEAT_MS) + DEATH_SLACK;
    println!(
        "dead node noticed (heartbeat {HEARTBEAT_MS} ms, bound {bound:?}): \
         broadcaster_disconnected on B after {:?}, on C after {:?}; viewer_count after {:?}",
        on_b.2, on_c.2, count.2
    );
    assert_broadcaster_disconnected(&on_b.0, &on_b.1);
    assert_broadcaster_disconnected(&on_c.0, &on_c.1);
    assert_eq!(count.0, "viewer_count", "{count:?}");
    assert_eq!(count.1, [json!({"channel_id": "safe", "count": 1})]);
    for (what, took) in [
        ("broadcaster_disconnected on B", on_b.2),
        ("broadcaster_disconnected on C", on_c.2),
        ("viewer_count", count.2),
    ] {
        assert!(took <= bound, "{what} after {took:?}, beyond {bound:?}");
    }
    // The killed node's clients lost their connection.
    safe_v1.expect_closed().await;
    doomed_b.expect_closed().await;

    let (b, c) = (&cluster.nodes[1], &cluster.nodes[2]);
    assert_channels_on(&[b, c], 1).await;
    // The channel of the surviving broadcaster is otherwise untouched: it relays, it is listed.
    safe_v2.emit(
        "offer",
        json!({"target": safe_b.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(safe_b.expect("offer").await["sender"], safe_v2.sid.as_str());
    safe_b.emit(
        "answer",
        json!({"target": safe_v2.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(
        safe_v2.expect("answer").await["sender"],
        safe_b.sid.as_str()
    );
    safe_b.emit(
        "offer",
        json!({"target": lost_sid, "sdp": sample_sdp("offer")}),
    );
    safe_b.expect_relay_error("offer").await;
    doomed_v1.emit("join_as_viewer", json!({}));
    let list = doomed_v1.expect("channel_list").await;
    let channels = list["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 1, "{list}");
    assert_eq!(channels[0]["id"], "safe");
    assert_eq!(channels[0]["broadcaster_sid"], safe_b.sid.as_str());
    doomed_v2.emit("join_as_viewer", json!({"channel_id": "doomed"}));
    doomed_v2
        .expect_error("Channel doomed not found or expired")
        .await;

    // The killed node's viewer reconnects to a survivor and carries on.
    let back = join_viewer(b, &mut safe_b, "safe", 2).await;
    // The dead broadcaster's channel id is free again.
    let mut reborn = c.client().await;
    reborn.emit("join_as_broadcaster", json!({"channel_id": "doomed"}));
    reborn.expect("broadcaster_ready").await;
    for client in [&mut safe_b, &mut safe_v2, &mut doomed_v1, &mut doomed_v2] {
        client.assert_silent().await;
    }
    cluster
        .teardown(vec![
            doomed_b, doomed_v1, doomed_v2, safe_b, safe_v1, safe_v2, back, reborn,
        ])
        .await;
}

#[tokio::test]
async fn stopped_node_tells_peers_at_once_and_its_clients_reconnect() {
    let mut cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (leaving_b, mut staying_v) = channel_across(a, b, "leaving").await;
    let (mut staying_b, leaving_v) = channel_across(b, a, "staying").await;

    // SIGTERM (a deploy): the peers are told at once, not after the heartbeat bound (4 s here:
    // a heartbeat-based notice would take at least 1.5 × 2 s).
    let stopped_at = Instant::now();
    let (status, disconnected, count) = tokio::join!(
        cluster.nodes[0].terminate(),
        try_next_after(&mut staying_v, stopped_at),
        try_next_after(&mut staying_b, stopped_at),
    );
    println!(
        "graceful stop: exit {status}; viewer on B got {disconnected:?}; broadcaster on B got \
         {count:?}"
    );
    assert!(
        status.success(),
        "exit 0 on SIGTERM, got {status}: {}",
        cluster.nodes[0].log_text()
    );
    let disconnected = disconnected.expect("the viewer on B is told within 10 s");
    let count = count.expect("the broadcaster on B is told within 10 s");
    assert_broadcaster_disconnected(&disconnected.0, &disconnected.1);
    assert_eq!(count.0, "viewer_count", "{count:?}");
    assert_eq!(count.1, [json!({"channel_id": "staying", "count": 0})]);
    for (what, took) in [
        ("broadcaster_disconnected", disconnected.2),
        ("viewer_count", count.2),
    ] {
        assert!(took < Duration::from_secs(2), "{what} after {took:?}");
    }
    // Its clients saw their transport close, not an "io server disconnect" (after which the
    // official client would not reconnect).
    for client in [&leaving_b, &leaving_v] {
        assert!(
            !client.got_disconnect_packet(),
            "SIGTERM sent a DISCONNECT packet"
        );
    }
    // The viewer comes back through the survivor.
    let back = join_viewer(&cluster.nodes[1], &mut staying_b, "staying", 1).await;
    assert_channels_on(&[&cluster.nodes[1]], 1).await;
    staying_b.assert_silent().await;
    staying_v.assert_silent().await;
    cluster
        .teardown(vec![leaving_b, leaving_v, staying_b, staying_v, back])
        .await;
}

#[tokio::test]
async fn redis_outage_is_reported_and_recovered_from() {
    let mut redis = RedisServer::start(free_port()).await;
    let mut cluster =
        Cluster::start_on(redis.port, 2, &["--heartbeat-ms", OUTAGE_HEARTBEAT_MS]).await;
    for node in &cluster.nodes {
        assert_eq!(node.health().await.0, 200);
    }
    let mut early = cluster.nodes[0].client().await;

    redis.kill().await;
    let lost_at = Instant::now();
    for node in &cluster.nodes {
        let (_, health, took) = node
            .wait_health(
                "503 while Redis is down",
                Duration::from_secs(10),
                |s, _| s == 503,
            )
            .await;
        println!(
            "redis down: node {} says 503 after {took:?}: {health}",
            node.addr
        );
        assert_eq!(health["status"], "unavailable", "{health}");
        let reason = health["reason"].as_str().expect("a reason");
        assert!(reason.starts_with("redis: "), "{health}");
        // Not ready (balancers stop sending clients), but alive (nobody restarts it).
        let (ready, body) = node.probe("/readyz").await;
        assert_eq!(ready, 503, "{body}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("redis: ")),
            "{body}"
        );
        assert_eq!(node.probe("/livez").await.0, 200);
    }
    println!(
        "both nodes unhealthy {:?} after Redis died",
        lost_at.elapsed()
    );
    early.emit("join_as_broadcaster", json!({"channel_id": "during"}));
    early.expect_error_prefix("Server unavailable").await;
    early.emit("join_as_viewer", json!({"channel_id": "during"}));
    early.expect_error_prefix("Server unavailable").await;
    // A relay is refused with the server's reason (each waits out the command timeout, so a
    // few; that such refusals are never strikes is `ChannelError::is_clients_fault`'s test).
    for _ in 0..3 {
        early.emit(
            "ice_candidate",
            json!({"target": "someone", "candidate": sample_candidate()}),
        );
        let refused = early.expect_relay_error("ice_candidate").await;
        assert!(refused.starts_with("Server unavailable"), "{refused}");
    }
    for node in &mut cluster.nodes {
        assert!(node.is_running(), "node exited: {}", node.log_text());
    }

    redis.restart().await;
    let back_at = Instant::now();
    for node in &cluster.nodes {
        let (_, health, took) = node
            .wait_health("200 once Redis is back", Duration::from_secs(15), |s, _| {
                s == 200
            })
            .await;
        println!("redis back: node {} healthy after {took:?}", node.addr);
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(node.probe("/readyz").await.0, 200);
    }
    println!(
        "both nodes healthy {:?} after Redis came back",
        back_at.elapsed()
    );
    // A client connected before the outage may be kept, or be made to reconnect (the node's
    // state in Redis may be gone): then by a transport close, never an "io server disconnect",
    // after which the official client would not reconnect (PROTOCOL.md, SIGTERM).
    early.emit("join_as_viewer", json!({}));
    let early_dropped = match tokio::time::timeout(EVENT_TIMEOUT, early.next_event()).await {
        Ok(Some((name, args))) => {
            assert_eq!(name, "channel_list", "{args:?}");
            false
        }
        Ok(None) => {
            println!(
                "redis back: the early client was disconnected (DISCONNECT packet: {})",
                early.got_disconnect_packet()
            );
            true
        }
        Err(_) => panic!(
            "no answer to join_as_viewer after Redis came back (DISCONNECT packet seen: {})",
            early.got_disconnect_packet()
        ),
    };
    // A broadcast, and a viewer on the other node, work again, fan-out included.
    let (mut broadcaster, mut viewer) =
        channel_across(&cluster.nodes[0], &cluster.nodes[1], "after").await;
    viewer.emit(
        "offer",
        json!({"target": broadcaster.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        broadcaster.expect("offer").await["sender"],
        viewer.sid.as_str()
    );
    viewer.emit(
        "send_message",
        json!({"channel_id": "after", "message": "back"}),
    );
    for client in [&mut broadcaster, &mut viewer] {
        assert_eq!(client.expect("new_message").await["message"], "back");
    }
    for node in &mut cluster.nodes {
        assert!(node.is_running(), "node exited: {}", node.log_text());
        assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
    }
    broadcaster.assert_silent().await;
    viewer.assert_silent().await;
    let io_server_disconnect = early_dropped && early.got_disconnect_packet();
    cluster.teardown(vec![early, broadcaster, viewer]).await;
    drop(redis);
    // Checked last, so that the rest of the recovery is checked either way.
    assert!(
        !io_server_disconnect,
        "after Redis came back the node ended a client's session with a Socket.IO DISCONNECT \
         packet (\"io server disconnect\"): the official client does not reconnect after it; \
         close the transport instead, as on SIGTERM"
    );
}

#[tokio::test]
async fn redis_down_at_start_exits_1_with_one_error_line() {
    let closed = free_port();
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--redis-url", &format!("redis://127.0.0.1:{closed}")])
        .args(["--redis-prefix", &unique_prefix()])
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(8), run)
        .await
        .expect("the server gives up within a few seconds")
        .expect("run the server binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "exited after {:?} with {}: {stderr}",
        started.elapsed(),
        output.status
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line on stderr, got {stderr:?}");
    assert!(lines[0].to_lowercase().contains("redis"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Relays are authorized from each node's replica of its sockets' channels (EXTENSIONS.md
/// "Cluster mode"), which the change feed keeps current. A relay sent right after the sender
/// was told of a change (a viewer on another node left; its channel was taken over on another
/// node) must already be refused: the change is announced before anybody is told of it.
#[tokio::test]
async fn relays_right_after_a_change_on_another_node_are_refused() {
    // A short hold, so that the resumable channel is gone by the teardown.
    let mut flags = FEW_LIMITS.to_vec();
    flags.extend(["--resume-grace-secs", "1"]);
    let cluster = Cluster::start(2, &flags).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut bc = a.client().await;
    bc.emit("join_as_broadcaster", json!({ "channel_id": "window" }));
    bc.expect("broadcaster_ready").await;
    let mut left = Vec::new();
    for _ in 0..20 {
        let viewer = join_viewer(b, &mut bc, "window", 1).await;
        // The broadcaster's relays reach it (and warm this node's replica).
        bc.emit(
            "offer",
            json!({"target": viewer.sid, "sdp": sample_sdp("offer")}),
        );
        let mut viewer = viewer;
        viewer.expect("offer").await;
        viewer.close();
        assert_eq!(
            bc.expect("viewer_count").await,
            json!({"channel_id": "window", "count": 0})
        );
        bc.emit(
            "ice_candidate",
            json!({"target": viewer.sid, "candidate": sample_candidate()}),
        );
        bc.expect_relay_error("ice_candidate").await;
        left.push(viewer);
    }
    bc.assert_silent().await;

    // A resumable channel on A taken over from B: the replaced broadcaster's next relay to
    // its viewer is refused.
    let mut first = a.client().await;
    first.emit(
        "join_as_broadcaster",
        json!({"channel_id": "desk", "resume": true}),
    );
    let ready = first.expect("broadcaster_ready").await;
    let token = ready["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    let mut v = join_viewer(a, &mut first, "desk", 1).await;
    first.emit(
        "offer",
        json!({"target": v.sid, "sdp": sample_sdp("offer")}),
    );
    v.expect("offer").await;
    let mut second = b.client().await;
    second.emit(
        "join_as_broadcaster",
        json!({"channel_id": "desk", "force": true, "resume_token": token}),
    );
    second.expect("broadcaster_ready").await;
    assert_eq!(
        first.expect("broadcaster_replaced").await,
        json!({"channel_id": "desk"})
    );
    first.emit(
        "ice_candidate",
        json!({"target": v.sid, "candidate": sample_candidate()}),
    );
    first.expect_relay_error("ice_candidate").await;
    let mut all = vec![bc, first, second, v];
    all.extend(left);
    cluster.teardown(all).await;
}

/// The receiving node's check (EXTENSIONS.md "Relays checked where they arrive"): a relay from
/// another node reaches its target only if the sender may still reach it there. The window it
/// closes (a sender's node that has not yet heard of the target's departure) lasts one pub/sub
/// hop, too short to hit on purpose; so the test publishes the relay a sender's node would
/// have published, once while the viewer is in the channel and once after it was removed.
#[tokio::test]
async fn a_relay_arriving_after_its_target_left_is_not_delivered() {
    let cluster = Cluster::start(2, &FEW_LIMITS).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (mut bc, mut v) = channel_across(b, a, "gate").await;
    // The viewer's offer and the broadcaster's answer cross the nodes, as in every negotiation
    // (the viewer's node follows the channel's peers from then on).
    v.emit(
        "offer",
        json!({"target": bc.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(bc.expect("offer").await["sender"], v.sid.as_str());
    bc.emit(
        "answer",
        json!({"target": v.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(v.expect("answer").await["sender"], bc.sid.as_str());
    let emits = format!("{}:emits", cluster.prefix);
    let (from, to) = (bc.sid.clone(), v.sid.clone());
    let relay_from_b = |n: u64| {
        json!({"f": "a-sender-node", "r": {
            "s": from, "t": to, "k": "ice_candidate",
            "d": {"candidate": {"candidate": format!("candidate:{n}")}, "sender": from},
        }})
        .to_string()
    };
    redis_cli(cluster.redis_port, &["PUBLISH", &emits, &relay_from_b(1)])
        .await
        .expect("published");
    let candidate = v.expect("ice_candidate").await;
    assert_eq!(candidate["candidate"]["candidate"], "candidate:1");
    assert_eq!(candidate["sender"], bc.sid.as_str());

    bc.emit(
        "remove_viewer",
        json!({"channel_id": "gate", "viewer_id": v.sid}),
    );
    bc.expect("viewer_removed").await;
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "gate", "count": 0})
    );
    v.expect("error").await;
    redis_cli(cluster.redis_port, &["PUBLISH", &emits, &relay_from_b(2)])
        .await
        .expect("published");
    bc.expect_relay_error("ice_candidate").await;
    v.assert_silent().await;
    bc.assert_silent().await;
    cluster.teardown(vec![bc, v]).await;
}

/// The next event of `client` within `limit` (a password hashed or checked is slow on purpose),
/// which must be `event`; its one argument.
async fn after_slow(client: &mut Client, event: &str, limit: Duration) -> Value {
    let (name, mut args) = tokio::time::timeout(limit, client.next_event())
        .await
        .unwrap_or_else(|_| panic!("{event} within {limit:?}"))
        .expect("connection open");
    assert_eq!(name, event, "expected {event}, got {name} {args:?}");
    args.remove(0)
}

/// A private channel admits viewers on another node by its password, which that node reads
/// beside the channel's document (field `p`), not from the document; a document without it
/// (written by an earlier release) is read instead, with the same answers.
#[tokio::test]
async fn a_private_channel_admits_its_password_on_every_node() {
    const WRONG: &str = "Invalid data: password is missing or wrong for this channel";
    let slow = Duration::from_secs(30);
    let cluster = Cluster::start(2, &FEW_LIMITS).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut bc = a.client().await;
    bc.emit(
        "join_as_broadcaster",
        json!({"channel_id": "vault", "password": "open sesame"}),
    );
    after_slow(&mut bc, "broadcaster_ready", slow).await;
    let key = format!("{}:ch:vault", cluster.prefix);
    let stored = crate::helpers::redis_cli(cluster.redis_port, &["HGET", &key, "p"])
        .await
        .expect("redis-cli");
    assert!(
        stored.trim().starts_with("$argon2"),
        "the hash beside the document: {stored:?}"
    );

    let mut clients = Vec::new();
    for legacy in [false, true] {
        if legacy {
            crate::helpers::redis_cli(cluster.redis_port, &["HDEL", &key, "p"])
                .await
                .expect("redis-cli");
        }
        let mut without = b.client().await;
        without.emit("join_as_viewer", json!({"channel_id": "vault"}));
        without.expect_error(WRONG).await;
        let mut wrong = b.client().await;
        wrong.emit(
            "join_as_viewer",
            json!({"channel_id": "vault", "password": "open sesame!"}),
        );
        assert_eq!(
            after_slow(&mut wrong, "error", slow).await,
            json!({"message": WRONG})
        );
        let mut right = b.client().await;
        right.emit(
            "join_as_viewer",
            json!({"channel_id": "vault", "password": "open sesame"}),
        );
        assert_eq!(
            after_slow(&mut right, "broadcaster_available", slow).await,
            json!({"broadcaster_id": bc.sid, "channel_id": "vault"}),
            "legacy document: {legacy}"
        );
        let count = if legacy { 2 } else { 1 };
        assert_eq!(
            bc.expect("viewer_count").await,
            json!({"channel_id": "vault", "count": count})
        );
        clients.extend([without, wrong, right]);
    }
    // A public channel's field is empty: no password asked.
    let mut open = a.client().await;
    open.emit("join_as_broadcaster", json!({"channel_id": "lobby"}));
    open.expect("broadcaster_ready").await;
    let public = crate::helpers::redis_cli(
        cluster.redis_port,
        &["HGET", &format!("{}:ch:lobby", cluster.prefix), "p"],
    )
    .await
    .expect("redis-cli");
    assert_eq!(public.trim(), "", "public: an empty hash");
    let guest = join_viewer(b, &mut open, "lobby", 1).await;
    bc.assert_silent().await;
    clients.extend([bc, open, guest]);
    cluster.teardown(clients).await;
}
