//! One channel's events reach every socket in the order its rules produced them, however many
//! cores handle its sockets (EXTENSIONS.md, "One registry, two backends": each channel's turn).
//! The server runs on four worker threads here, so two sockets' events on one channel are
//! handled in parallel.

use serde_json::json;

use crate::helpers::{Client, Cluster, EmitsListener, redis_cli, spawn_app};

const VIEWERS: usize = 60;
const MESSAGES: usize = 100;
/// Chat as fast as the test writes, from one address.
const CHATTY: [&str; 6] = [
    "--max-connections-per-ip",
    "0",
    "--rate-chat",
    "0",
    "--rate-strikes",
    "0",
];

/// Viewers joining at once: the broadcaster's `viewer_count`s go 1, 2, …, N, the last one the
/// real count (computed out of order, a stale count would be the last one it sees).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_counts_arrive_in_the_order_of_the_joins() {
    let app = spawn_app(&["--max-connections-per-ip", "0", "--rate-strikes", "0"]).await;
    for round in 0..3 {
        let channel = format!("order{round}");
        let mut b = app.client().await;
        b.emit("join_as_broadcaster", json!({"channel_id": channel}));
        b.expect("broadcaster_ready").await;
        let mut viewers = Vec::new();
        for _ in 0..VIEWERS {
            viewers.push(app.client().await);
        }
        for v in &viewers {
            v.emit("join_as_viewer", json!({"channel_id": channel}));
        }
        let mut counts = Vec::new();
        for _ in 0..VIEWERS {
            let count = b.expect("viewer_count").await;
            counts.push(count["count"].as_u64().expect("a count"));
        }
        let expected: Vec<u64> = (1..=VIEWERS as u64).collect();
        assert_eq!(counts, expected, "round {round}");
        // Leaving at once: down to zero, in order.
        for v in &viewers {
            v.close();
        }
        let mut counts = Vec::new();
        for _ in 0..VIEWERS {
            let count = b.expect("viewer_count").await;
            counts.push(count["count"].as_u64().expect("a count"));
        }
        let expected: Vec<u64> = (0..VIEWERS as u64).rev().collect();
        assert_eq!(counts, expected, "round {round}");
        b.close();
    }
}

/// Two viewers write at once: every member reads the messages in one and the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_reads_the_chat_in_one_order() {
    let app = spawn_app(&CHATTY).await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "talk"}));
    b.expect("broadcaster_ready").await;
    let mut members: Vec<Client> = Vec::new();
    for _ in 0..4 {
        let mut v = app.client().await;
        v.emit("join_as_viewer", json!({"channel_id": "talk"}));
        v.expect("broadcaster_available").await;
        b.expect("viewer_count").await;
        members.push(v);
    }
    all_read_one_order(b, members, "talk").await;
}

/// Two viewers and the broadcaster `b` write `MESSAGES` messages each at once in `channel`:
/// every member (`members`, then `b`) must read all of them in one order. Gives them back.
async fn all_read_one_order(mut b: Client, mut members: Vec<Client>, channel: &str) -> Vec<Client> {
    for round in 0..MESSAGES {
        members[0].emit(
            "send_message",
            json!({"channel_id": channel, "message": format!("a{round}")}),
        );
        members[1].emit(
            "send_message",
            json!({"channel_id": channel, "message": format!("b{round}")}),
        );
        b.emit(
            "broadcaster_message",
            json!({"channel_id": channel, "message": format!("c{round}")}),
        );
    }
    let mut orders = Vec::new();
    for member in members.iter_mut().chain([&mut b]) {
        let mut order = Vec::new();
        for _ in 0..3 * MESSAGES {
            let message = member.expect("new_message").await;
            order.push(message["message"].as_str().expect("text").to_owned());
        }
        member.assert_silent().await;
        orders.push(order);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "one order for everyone");
    }
    members.push(b);
    members
}

/// Across two nodes, as in memory: the channel's owner runs every message's rule and sends it
/// (EXTENSIONS.md, "Chat through the owner"), so members on both nodes, written to from both,
/// read one order. Before, each node sent its own senders' messages, and members on the two
/// nodes read them interleaved differently.
#[tokio::test]
async fn across_nodes_every_member_reads_the_chat_in_one_order() {
    let cluster = Cluster::start(2, &CHATTY).await;
    let listener = EmitsListener::start(&cluster).await;
    let everyone = all_read_one_order_across(&cluster).await;
    assert!(
        !listener.messages().await.is_empty(),
        "the owner's runs go out on the emits channel"
    );
    cluster.teardown(everyone).await;
}

/// [`all_read_one_order`] with the broadcaster on the first node, and the two writing viewers
/// on the other node than the broadcaster's and on its own.
async fn all_read_one_order_across(cluster: &Cluster) -> Vec<Client> {
    let mut b = cluster.nodes[0].client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "talk"}));
    b.expect("broadcaster_ready").await;
    let mut members: Vec<Client> = Vec::new();
    for i in [1, 0, 1, 0] {
        let mut v = cluster.nodes[i].client().await;
        v.emit("join_as_viewer", json!({"channel_id": "talk"}));
        v.expect("broadcaster_available").await;
        b.expect("viewer_count").await;
        members.push(v);
    }
    all_read_one_order(b, members, "talk").await
}

/// While a node of an earlier release is alive (heartbeat level 3: it runs forwarded chat but
/// does not hear the emits channel), the owner sends its chat through the adapter, one
/// publish per event, awaited in turn: still one order for every member on every node.
#[tokio::test]
async fn across_nodes_beside_an_earlier_node_the_chat_keeps_one_order() {
    let cluster = Cluster::start(2, &CHATTY).await;
    let earlier = format!("{}:node:earlier-node", cluster.prefix);
    let nodes = format!("{}:nodes", cluster.prefix);
    redis_cli(cluster.redis_port, &["SET", &earlier, "3", "EX", "60"])
        .await
        .expect("a heartbeat written");
    redis_cli(cluster.redis_port, &["SADD", &nodes, "earlier-node"])
        .await
        .expect("a node announced");
    // Each node reads the others' levels once per heartbeat.
    tokio::time::sleep(cluster.heartbeat * 3).await;
    let listener = EmitsListener::start(&cluster).await;
    let everyone = all_read_one_order_across(&cluster).await;
    assert_eq!(
        listener.messages().await.len(),
        0,
        "nothing on the emits channel, which an earlier node does not hear"
    );
    redis_cli(cluster.redis_port, &["SREM", &nodes, "earlier-node"]).await;
    redis_cli(cluster.redis_port, &["DEL", &earlier]).await;
    cluster.teardown(everyone).await;
}

/// The broadcaster's next `count` `viewer_count`s, and then a moment of silence (nothing may
/// come after them).
async fn next_counts(b: &mut Client, count: usize) -> Vec<u64> {
    let mut counts = Vec::new();
    while counts.len() < count {
        counts.push(
            b.expect("viewer_count").await["count"]
                .as_u64()
                .expect("a count"),
        );
    }
    b.assert_silent().await;
    counts
}

/// Across two nodes, as in memory: viewers of one channel join at once over both, then leave
/// at once, and the broadcaster reads one count per join and per departure, in the order the
/// channel's owner ran them (the owner tells them, once per batch, before the next batch runs;
/// before, each node told its own viewers' counts, and they crossed on the way).
#[tokio::test]
async fn across_nodes_the_counts_arrive_in_the_order_of_the_joins() {
    let cluster = Cluster::start(2, &["--max-connections-per-ip", "0"]).await;
    let mut b = cluster.nodes[0].client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "crowd"}));
    b.expect("broadcaster_ready").await;
    let all = VIEWERS * 2;
    let mut viewers = Vec::new();
    for i in 0..all {
        viewers.push(cluster.nodes[i % 2].client().await);
    }
    // All at once, so that the joins of each node share batches.
    for v in &viewers {
        v.emit("join_as_viewer", json!({"channel_id": "crowd"}));
    }
    let expected: Vec<u64> = (1..=all as u64).collect();
    assert_eq!(next_counts(&mut b, all).await, expected);
    for v in &viewers {
        v.close();
    }
    let expected: Vec<u64> = (0..all as u64).rev().collect();
    assert_eq!(next_counts(&mut b, all).await, expected);
    cluster.teardown(vec![b]).await;
}
