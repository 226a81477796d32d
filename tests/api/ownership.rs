//! Channel ownership in cluster mode (`src/cluster/lease.rs`), with real server processes on a
//! real Redis: the broadcaster's node owns its channel and the other nodes forward their joins
//! to it; a killed owner is replaced by a live node without its channel's participants noticing;
//! a former owner's fenced write is refused and retried without losing anything; a stopped owner
//! hands its channels over at once. Each test ends with nothing left under its prefix.
//!
//! Some tests make a node the owner of a channel whose broadcaster is elsewhere by writing the
//! lease by hand, as a take by that node would have (see [`hand_lease`]).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::join_viewer;
use crate::helpers::{Client, Cluster, Node, redis_cli};

/// The heartbeat of the tests that kill a node (as `cluster.rs`'s death test: shorter ones make
/// a CPU-starved but live node look dead), and the slack allowed on top of a bound measured in
/// heartbeats for events to travel (Redis pub/sub, the WebSocket) on a busy machine.
const HEARTBEAT_MS: u64 = 500;
const SLACK: Duration = Duration::from_millis(500);
/// What the text logs say when a node's fenced write is refused (`ClusterRegistry::commit`).
const LOST_LEASE: &str = "lost a channel's lease while writing it";

/// The node's id, as its `/healthz` gives it.
async fn node_id(node: &Node) -> String {
    let (_, health) = node.health().await;
    health["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("node_id in {health}"))
        .to_owned()
}

/// `GET` of a key: `None` when it does not exist.
async fn get(cluster: &Cluster, key: &str) -> Option<String> {
    let out = redis_cli(cluster.redis_port, &["GET", key])
        .await
        .expect("redis-cli GET works");
    let value = out.trim_end_matches('\n');
    (!value.is_empty()).then(|| value.to_owned())
}

/// `PTTL` of a key (-2: no such key, -1: no time-to-live).
async fn pttl(cluster: &Cluster, key: &str) -> i64 {
    redis_cli(cluster.redis_port, &["PTTL", key])
        .await
        .expect("redis-cli PTTL works")
        .trim()
        .parse()
        .expect("PTTL answers a number")
}

fn lease_key(cluster: &Cluster, channel: &str) -> String {
    format!("{}:owner:{channel}", cluster.prefix)
}

fn heartbeat_key(cluster: &Cluster, node: &str) -> String {
    format!("{}:node:{node}", cluster.prefix)
}

/// A channel's lease as stored: its holder and epoch, `None` when nobody holds it.
async fn lease(cluster: &Cluster, channel: &str) -> Option<(String, u64)> {
    let token = get(cluster, &lease_key(cluster, channel)).await?;
    let (node, epoch) = token
        .split_once(' ')
        .unwrap_or_else(|| panic!("a lease is \"<node> <epoch>\", got {token:?}"));
    let epoch = epoch
        .parse()
        .unwrap_or_else(|_| panic!("a lease's epoch is a number, got {token:?}"));
    Some((node.to_owned(), epoch))
}

/// Writes `"<node> <epoch>"` as the channel's lease (`SET … PX 60000`), as a take by `node`
/// would have, while the node that held it still believes it does. The epoch is also made the
/// channel's epoch counter (its document's `e` field, which a take increments) in the same
/// atomic step: a take writes only epochs it drew from there, so a later take draws a higher
/// one, as it would have had `node` taken the lease itself.
async fn hand_lease(cluster: &Cluster, channel: &str, node: &str, epoch: u64) {
    const SCRIPT: &str = "redis.call('HSET', KEYS[1], 'e', ARGV[2]) \
                          return redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)";
    let document = format!("{}:ch:{channel}", cluster.prefix);
    let token = format!("{node} {epoch}");
    let out = redis_cli(
        cluster.redis_port,
        &[
            "EVAL",
            SCRIPT,
            "2",
            &document,
            &lease_key(cluster, channel),
            &token,
            &epoch.to_string(),
        ],
    )
    .await
    .expect("redis-cli EVAL works");
    assert_eq!(out.trim(), "OK", "setting the lease by hand: {out:?}");
    assert_eq!(
        lease(cluster, channel).await,
        Some((node.to_owned(), epoch))
    );
}

/// The sockets a node lists as its own (for the reaper, should it die).
async fn sockets_of(cluster: &Cluster, node: &str) -> Vec<String> {
    let key = format!("{}:node:{node}:socks", cluster.prefix);
    let out = redis_cli(cluster.redis_port, &["SMEMBERS", &key])
        .await
        .expect("redis-cli SMEMBERS works");
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits until `node` refreshes its heartbeat after this call began. Each beat refreshes the
/// heartbeat key, then renews the node's leases; beats run one after the other, a third of a
/// heartbeat apart.
async fn a_beat_begins(cluster: &Cluster, node: &str) {
    let key = heartbeat_key(cluster, node);
    let started = Instant::now();
    let mut last = pttl(cluster, &key).await;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = pttl(cluster, &key).await;
        assert!(now > 0, "node {node} has no heartbeat");
        if now > last {
            return;
        }
        last = now;
        assert!(
            started.elapsed() < cluster.heartbeat,
            "node {node} did not beat within {:?}",
            cluster.heartbeat
        );
    }
}

/// Waits until the node holding `channel`'s lease has renewed it: its time-to-live is then the
/// lease's own (3H/2), no longer the minute it was set by hand with. Proof that the holder
/// acts on it as its own.
async fn renewed_by_its_holder(cluster: &Cluster, channel: &str) {
    let ttl = cluster.heartbeat * 3 / 2;
    let key = lease_key(cluster, channel);
    let started = Instant::now();
    loop {
        let left = pttl(cluster, &key).await;
        if left > 0 && left <= ttl.as_millis() as i64 {
            return;
        }
        assert!(
            started.elapsed() < cluster.heartbeat * 2,
            "the lease of {channel} not renewed by its holder: pttl {left} ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broadcaster on `node` starts `channel`.
async fn broadcast(node: &Node, channel: &str) -> Client {
    let mut broadcaster = node.client().await;
    broadcaster.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    assert_eq!(
        broadcaster.expect("broadcaster_ready").await,
        json!({"id": broadcaster.sid, "channel_id": channel})
    );
    broadcaster
}

/// The ids of the viewers the broadcaster lists in `channel`, sorted.
async fn listed_viewers(broadcaster: &mut Client, channel: &str) -> Vec<String> {
    broadcaster.emit("list_viewers", json!({ "channel_id": channel }));
    let list = broadcaster.expect("viewer_list").await;
    let mut ids: Vec<String> = list["viewers"]
        .as_array()
        .unwrap_or_else(|| panic!("viewers in {list}"))
        .iter()
        .map(|v| v["id"].as_str().expect("a viewer id").to_owned())
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted_sids(clients: &[&Client]) -> Vec<String> {
    let mut sids: Vec<String> = clients.iter().map(|c| c.sid.clone()).collect();
    sids.sort_unstable();
    sids
}

/// Nothing at all arrives for `client` until `until`.
async fn silent_until(client: &mut Client, until: Instant, what: &str) {
    let left = until.saturating_duration_since(Instant::now());
    if let Ok(Some((name, args))) = tokio::time::timeout(left, client.next_event()).await {
        panic!("{what}: unexpected {name} {args:?}");
    }
}

/// The broadcaster writes, then `speaker` does: every one of `everyone` (the broadcaster
/// first) hears both.
async fn chat_round(everyone: &mut [&mut Client], speaker: usize, channel: &str, text: &str) {
    let from_broadcaster = format!("{text} (from the broadcaster)");
    everyone[0].emit(
        "broadcaster_message",
        json!({"channel_id": channel, "message": from_broadcaster}),
    );
    for client in everyone.iter_mut() {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["message"], from_broadcaster.as_str(), "{msg}");
    }
    let from_viewer = format!("{text} (from a viewer)");
    everyone[speaker].emit(
        "send_message",
        json!({"channel_id": channel, "message": from_viewer}),
    );
    for client in everyone.iter_mut() {
        let msg = client.expect("new_message").await;
        assert_eq!(msg["message"], from_viewer.as_str(), "{msg}");
    }
}

/// Waits until the node's log says `line` (logs are written as they happen, but by another
/// process).
async fn wait_for_log(node: &Node, line: &str) {
    let started = Instant::now();
    while !node.log_text().contains(line) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "node {} never logged {line:?}: {}",
            node.addr,
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The broadcaster's node takes the lease when the channel starts, with the channel's first
/// epoch, and keeps it while ten viewers join at once on two other nodes: their nodes find it
/// alive and forward the joins to it. Each viewer is listed under its own node for the reaper,
/// not under the owner that wrote its join.
#[tokio::test]
async fn the_broadcasters_node_owns_its_channel_and_joins_elsewhere_are_forwarded() {
    const VIEWERS: usize = 10;
    let cluster = Cluster::start(3, &[]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (id_a, id_b, id_c) = (node_id(a).await, node_id(b).await, node_id(c).await);

    let mut bc = broadcast(a, "owned").await;
    assert_eq!(
        lease(&cluster, "owned").await,
        Some((id_a.clone(), 1)),
        "the broadcaster's node owns its new channel, at the first epoch"
    );

    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push([b, c][i % 2].client().await);
    }
    // All at once: B's and C's joins are in flight to A together.
    for v in &viewers {
        v.emit("join_as_viewer", json!({"channel_id": "owned"}));
    }
    for v in &mut viewers {
        assert_eq!(
            v.expect("broadcaster_available").await,
            json!({"broadcaster_id": bc.sid, "channel_id": "owned"})
        );
    }
    // One count per join; counts told by two nodes may cross on the way, but the whole audience
    // is counted once every join is in.
    let mut counts = Vec::new();
    for _ in 0..VIEWERS {
        let count = bc.expect("viewer_count").await;
        assert_eq!(count["channel_id"], "owned", "{count}");
        counts.push(count["count"].as_u64().expect("a count"));
    }
    assert_eq!(counts.iter().max(), Some(&(VIEWERS as u64)), "{counts:?}");
    bc.assert_silent().await;
    let all: Vec<&Client> = viewers.iter().collect();
    assert_eq!(listed_viewers(&mut bc, "owned").await, sorted_sids(&all));

    assert_eq!(
        lease(&cluster, "owned").await,
        Some((id_a.clone(), 1)),
        "nobody else took the lease"
    );
    // Each viewer is its own node's to clean up after, not the owner's.
    let (on_a, on_b, on_c) = (
        sockets_of(&cluster, &id_a).await,
        sockets_of(&cluster, &id_b).await,
        sockets_of(&cluster, &id_c).await,
    );
    assert_eq!(on_a, [bc.sid.as_str()], "A lists its broadcaster only");
    for (i, v) in viewers.iter().enumerate() {
        let (home, list) = [("B", &on_b), ("C", &on_c)][i % 2];
        assert!(
            list.contains(&v.sid),
            "viewer {} of node {home} not in its node's list {list:?}",
            v.sid
        );
    }
    assert_eq!(on_b.len() + on_c.len(), VIEWERS, "B: {on_b:?}, C: {on_c:?}");
    for node in &cluster.nodes {
        assert!(!node.log_text().contains(LOST_LEASE), "{}", node.log_text());
    }
    viewers.push(bc);
    cluster.teardown(viewers).await;
}

/// The owner of a channel whose broadcaster and viewers are all on other nodes is killed: the
/// next join (on a third node) takes the lease over as soon as the dead owner's heartbeat is
/// gone, with a higher epoch, and succeeds within two heartbeats; the participants notice
/// nothing, and their chat goes on.
#[tokio::test]
async fn a_killed_owner_is_replaced_and_its_channel_goes_on_unnoticed() {
    let heartbeat = HEARTBEAT_MS.to_string();
    let mut cluster = Cluster::start(3, &["--heartbeat-ms", &heartbeat]).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (id_a, id_b, id_c) = (node_id(a).await, node_id(b).await, node_id(c).await);

    let mut bc = broadcast(b, "orphan").await;
    assert_eq!(lease(&cluster, "orphan").await, Some((id_b.clone(), 1)));
    // A owns the channel, though nothing of it is on A.
    hand_lease(&cluster, "orphan", &id_a, 5).await;
    let mut v_c = join_viewer(c, &mut bc, "orphan", 1).await;
    // The join was forwarded to A, which took the lease as its own (its take found it its own)
    // and renews it.
    renewed_by_its_holder(&cluster, "orphan").await;
    assert_eq!(lease(&cluster, "orphan").await, Some((id_a.clone(), 5)));
    let mut v_b = join_viewer(b, &mut bc, "orphan", 2).await;
    assert_eq!(lease(&cluster, "orphan").await, Some((id_a.clone(), 5)));
    assert!(sockets_of(&cluster, &id_a).await.is_empty());
    assert_eq!(sockets_of(&cluster, &id_c).await, [v_c.sid.as_str()]);
    assert_eq!(
        sorted_sids(&[&bc, &v_b]),
        {
            let mut on_b = sockets_of(&cluster, &id_b).await;
            on_b.sort_unstable();
            on_b
        },
        "B lists its broadcaster and its viewer"
    );

    let killed_at = Instant::now();
    cluster.nodes[0].kill().await;
    // At once, while A's heartbeat (and lease) still live.
    let mut late = cluster.nodes[2].client().await;
    late.emit("join_as_viewer", json!({"channel_id": "orphan"}));
    let answer = tokio::time::timeout(Duration::from_secs(10), late.next_event())
        .await
        .expect("an answer to the join within 10 s")
        .expect("connection open");
    let took = killed_at.elapsed();
    let bound = Duration::from_millis(2 * HEARTBEAT_MS) + SLACK;
    println!("join after the owner was killed: {answer:?} after {took:?} (bound {bound:?})");
    assert_eq!(
        answer,
        (
            "broadcaster_available".to_owned(),
            vec![json!({"broadcaster_id": bc.sid, "channel_id": "orphan"})]
        ),
        "a join right after the owner died"
    );
    assert!(
        took <= bound,
        "the join succeeded after {took:?}, beyond {bound:?}"
    );
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "orphan", "count": 3})
    );
    let (holder, epoch) = lease(&cluster, "orphan")
        .await
        .expect("the channel has an owner again");
    assert!(
        holder == id_b || holder == id_c,
        "the lease went to a live node, not {holder}"
    );
    assert!(
        epoch > 5,
        "the new lease's epoch {epoch} is above the dead owner's"
    );

    // The participants notice nothing, during the time the survivors need to notice the death
    // and clean up after it, and a little more.
    let quiet_until = killed_at + Duration::from_millis(2 * HEARTBEAT_MS) + SLACK * 2;
    silent_until(&mut v_b, quiet_until, "the viewer on B").await;
    // The others' events wait in their queues meanwhile.
    v_c.assert_silent().await;
    late.assert_silent().await;
    bc.assert_silent().await;
    let all = sorted_sids(&[&v_b, &v_c, &late]);
    assert_eq!(listed_viewers(&mut bc, "orphan").await, all);
    // Chat between the broadcaster and each viewer still works, both ways.
    let mut everyone = [&mut bc, &mut v_b, &mut v_c, &mut late];
    chat_round(&mut everyone, 1, "orphan", "after the death, B").await;
    chat_round(&mut everyone, 2, "orphan", "after the death, C").await;
    chat_round(&mut everyone, 3, "orphan", "after the death, late").await;
    assert_eq!(lease(&cluster, "orphan").await, Some((holder, epoch)));
    for client in [&mut bc, &mut v_b, &mut v_c, &mut late] {
        client.assert_silent().await;
    }
    cluster.teardown(vec![bc, v_b, v_c, late]).await;
}

/// A node that still believes it owns a channel after another node took its lease over writes
/// under its former token: the write is refused, it stops acting as the owner and writes again
/// as any node does, and its viewer joins. The new owner's lease is never overwritten, and the
/// former owner's later joins go to it.
#[tokio::test]
async fn a_former_owners_fenced_write_is_refused_and_nothing_is_lost() {
    // A long heartbeat: the former owner keeps believing in its lease until its next renewal,
    // a third of a heartbeat after the last one.
    let cluster = Cluster::start(2, &["--heartbeat-ms", "6000"]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (id_a, id_b) = (node_id(a).await, node_id(b).await);
    let mut bc = broadcast(a, "fenced").await;
    assert_eq!(lease(&cluster, "fenced").await, Some((id_a.clone(), 1)));

    // Right after A renewed its leases (a beat renews them right after the heartbeat, and the
    // next beat is 2 s away), B takes this one over behind A's back.
    a_beat_begins(&cluster, &id_a).await;
    tokio::time::sleep(cluster.heartbeat / 12).await;
    hand_lease(&cluster, "fenced", &id_b, 99).await;
    let v_a = join_viewer(a, &mut bc, "fenced", 1).await;
    // A wrote the join under its own token, was refused, and wrote it again.
    wait_for_log(a, LOST_LEASE).await;
    assert_eq!(lease(&cluster, "fenced").await, Some((id_b.clone(), 99)));

    let v_b = join_viewer(b, &mut bc, "fenced", 2).await;
    assert_eq!(lease(&cluster, "fenced").await, Some((id_b.clone(), 99)));
    // A asks Redis now, and forwards to B.
    let v_a2 = join_viewer(a, &mut bc, "fenced", 3).await;
    assert_eq!(lease(&cluster, "fenced").await, Some((id_b.clone(), 99)));
    renewed_by_its_holder(&cluster, "fenced").await;
    assert_eq!(
        a.log_text().matches(LOST_LEASE).count(),
        1,
        "A gave up the lease once: {}",
        a.log_text()
    );
    assert!(!b.log_text().contains(LOST_LEASE), "{}", b.log_text());

    // Nothing is lost: every viewer is in the channel, each listed under its own node.
    assert_eq!(
        listed_viewers(&mut bc, "fenced").await,
        sorted_sids(&[&v_a, &v_b, &v_a2])
    );
    let mut on_a = sockets_of(&cluster, &id_a).await;
    on_a.sort_unstable();
    assert_eq!(on_a, sorted_sids(&[&bc, &v_a, &v_a2]));
    assert_eq!(sockets_of(&cluster, &id_b).await, [v_b.sid.as_str()]);
    bc.assert_silent().await;
    cluster.teardown(vec![bc, v_a, v_b, v_a2]).await;
}

/// SIGTERM of a channel's owner (not its broadcaster's node): it releases the lease as it signs
/// off, so the next join on another node takes it at once instead of waiting for an answer;
/// the participants elsewhere are told nothing but the departure of the stopped node's viewer.
#[tokio::test]
async fn a_stopped_owner_hands_its_channel_over_silently() {
    let mut cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (id_a, id_b) = (node_id(a).await, node_id(b).await);
    let mut bc = broadcast(b, "handover").await;
    assert_eq!(lease(&cluster, "handover").await, Some((id_b.clone(), 1)));
    // A viewer on the node to be stopped (forwarded to B, the owner then).
    let v_a = join_viewer(a, &mut bc, "handover", 1).await;

    // A owns the channel. B learns it at its next renewal; then B's viewer's join is forwarded
    // to A, which takes the lease as its own.
    hand_lease(&cluster, "handover", &id_a, 5).await;
    // A beat of B's begins after the lease changed hands, and another one after it: by then
    // the first one's renewal found B's lease gone.
    a_beat_begins(&cluster, &id_b).await;
    a_beat_begins(&cluster, &id_b).await;
    let mut v_b = join_viewer(b, &mut bc, "handover", 2).await;
    let forwarded_at = Instant::now();
    renewed_by_its_holder(&cluster, "handover").await;
    assert_eq!(lease(&cluster, "handover").await, Some((id_a.clone(), 5)));
    for node in [a, b] {
        assert!(!node.log_text().contains(LOST_LEASE), "{}", node.log_text());
    }

    let stopped_at = Instant::now();
    let (status, count) = tokio::join!(
        cluster.nodes[0].terminate(),
        tokio::time::timeout(Duration::from_secs(10), bc.next_event()),
    );
    println!(
        "owner stopped: exit {status} after {:?}",
        stopped_at.elapsed()
    );
    assert!(
        status.success(),
        "exit 0 on SIGTERM, got {status}: {}",
        cluster.nodes[0].log_text()
    );
    // The stopped node's viewer left; that is all the broadcaster hears.
    let (name, args) = count
        .expect("the broadcaster is told within 10 s")
        .expect("connection open");
    assert_eq!(
        (name.as_str(), args.as_slice()),
        (
            "viewer_count",
            [json!({"channel_id": "handover", "count": 1})].as_slice()
        )
    );
    let lease_after = lease(&cluster, "handover").await;
    assert!(
        lease_after.as_ref().is_none_or(|(node, _)| *node != id_a),
        "the stopped node still holds the lease: {lease_after:?}"
    );

    // B trusts a remote owner it forwarded to for half a heartbeat without asking Redis
    // (`Owners::remote_trust`); after that it asks, finds the lease free and takes it.
    let b = &cluster.nodes[1];
    let trust = cluster.heartbeat / 2;
    tokio::time::sleep(trust.saturating_sub(forwarded_at.elapsed())).await;
    let mut late = b.client().await;
    let asked_at = Instant::now();
    late.emit("join_as_viewer", json!({"channel_id": "handover"}));
    assert_eq!(
        late.expect("broadcaster_available").await,
        json!({"broadcaster_id": bc.sid, "channel_id": "handover"})
    );
    let took = asked_at.elapsed();
    // The forwarding timeout is the heartbeat: well under it means nobody waited for A.
    let prompt = cluster.heartbeat / 4;
    println!("join on B after the owner stopped: {took:?} (bound {prompt:?})");
    assert!(
        took < prompt,
        "the join took {took:?}, not under {prompt:?}"
    );
    assert_eq!(
        bc.expect("viewer_count").await,
        json!({"channel_id": "handover", "count": 2})
    );
    let (holder, epoch) = lease(&cluster, "handover")
        .await
        .expect("the channel has an owner again");
    assert_eq!(holder, id_b, "B took the lease");
    assert!(epoch > 5, "epoch {epoch} above the stopped owner's");

    // B's viewer heard nothing of it all.
    v_b.assert_silent().await;
    bc.assert_silent().await;
    assert_eq!(
        listed_viewers(&mut bc, "handover").await,
        sorted_sids(&[&v_b, &late])
    );
    let mut everyone = [&mut bc, &mut v_b, &mut late];
    chat_round(&mut everyone, 1, "handover", "after the stop").await;
    chat_round(&mut everyone, 2, "handover", "after the stop, late").await;
    for client in [&mut bc, &mut v_b, &mut late] {
        client.assert_silent().await;
    }
    cluster.teardown(vec![bc, v_a, v_b, late]).await;
}
