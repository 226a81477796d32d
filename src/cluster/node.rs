//! A node's life in the cluster: its heartbeat, noticing dead nodes and cleaning up after
//! them, and the health `/healthz` reports.
//!
//! Timing, for a heartbeat interval H (`--heartbeat-ms`): a node refreshes its heartbeat key
//! every H/3 with a time-to-live of 3H/2, and looks for dead nodes every H/2. A node that dies
//! stops refreshing; its key is gone at most 3H/2 after its last refresh, and a survivor's next
//! look comes at most H/2 later: **a dead node is noticed within 2H**. A live node tolerates a
//! stall of about H before others would take it for dead.

use std::sync::Mutex;
use std::time::Duration;

use fred::prelude::{Client, Expiration, KeysInterface, SetOptions, SetsInterface};

use super::{ClusterRegistry, Keys, NodeId, lock};
use crate::registry::ids::SocketId;
use crate::registry::membership::Departure;

/// Whether this node can reach Redis; `/healthz` turns 503 with the reason while it cannot.
/// Commands and pub/sub go over separate connections, and each must work.
#[derive(Debug, Default)]
pub struct Health {
    problem: Condition,
    pubsub: Condition,
    /// This node's inbox (forwarded operations and their replies) is not subscribed: other
    /// nodes' joins to the channels it owns would reach nobody, and wait until they give up.
    inbox: Condition,
}

/// One way the node can be unwell: the reason while it is, logged when it starts and ends.
#[derive(Debug, Default)]
struct Condition(Mutex<Option<String>>);

impl Condition {
    fn set(&self, reason: String, what: &str) {
        let mut problem = lock(&self.0);
        if problem.is_none() {
            tracing::error!(%reason, "cluster {what}");
        }
        *problem = Some(reason);
    }

    fn clear(&self, what: &str) {
        if lock(&self.0).take().is_some() {
            tracing::info!("cluster {what}");
        }
    }

    fn reason(&self) -> Option<String> {
        lock(&self.0).clone()
    }
}

impl Health {
    pub fn down(&self, reason: String) {
        self.problem.set(reason, "storage unavailable");
    }

    pub fn up(&self) {
        self.problem.clear("storage reachable again");
    }

    pub fn pubsub_down(&self, reason: String) {
        self.pubsub.set(reason, "pub/sub unavailable");
    }

    pub fn pubsub_up(&self) {
        self.pubsub.clear("pub/sub subscribed again");
    }

    pub fn inbox_down(&self, reason: String) {
        self.inbox.set(reason, "inbox unsubscribed");
    }

    pub fn inbox_up(&self) {
        self.inbox.clear("inbox subscribed again");
    }

    /// The reason the node is unhealthy, if it is.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .reason()
            .or_else(|| self.pubsub.reason())
            .or_else(|| self.inbox.reason())
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Alive,
    /// Redis was unreachable; nothing changed.
    Failed,
    /// Others took this node for dead (or Redis lost its data) and cleaned up after it: its
    /// sockets are in no channel any more, so they must reconnect and join again.
    Reaped,
}

/// What a node's heartbeat key holds: the release level of its cluster protocol. Level 2
/// announces every channel write on the change feed (`replica.rs`); a node of an earlier
/// release writes "1" and announces nothing, so while one is alive no node trusts its replica.
/// Level 3 runs chat forwarded to it as a channel's owner (`ClusterRegistry::run_chat`): while
/// a node below is alive, each node sends its own sockets' chat. Level 4 hears the emits
/// channel (`emits.rs`): while a node below is alive, an owner sends its events through the
/// adapter, one publish each. Level 5 checks relays from other nodes on the emits channel:
/// while a node below is alive, relays to other nodes go through the adapter.
const HEARTBEAT_LEVEL: &str = "5";

/// What one look at the other nodes' heartbeats found.
struct Look {
    /// The lowest level among the live ones (this node's own when there are none).
    lowest: u32,
    /// Every live node's heartbeat was read.
    complete: bool,
    /// Nodes whose heartbeat is gone.
    dead: Vec<NodeId>,
}

/// A heartbeat's level as a number (0: unreadable).
fn level_of(level: &str) -> u32 {
    level.parse().unwrap_or(0)
}

pub struct Node {
    client: Client,
    keys: Keys,
    id: NodeId,
    heartbeat: Duration,
    registry: ClusterRegistry,
    health: std::sync::Arc<Health>,
    /// Whether this node has signed off, under the lock each heartbeat holds: a beat that began
    /// before the sign-off finishes first, and none after it announces the node again (the
    /// heartbeat task is still alive while the server drains, and an aborted task's command
    /// may already be on its way to Redis).
    signed_off: tokio::sync::Mutex<bool>,
}

impl Node {
    pub fn new(
        client: Client,
        keys: Keys,
        id: NodeId,
        heartbeat: Duration,
        registry: ClusterRegistry,
        health: std::sync::Arc<Health>,
    ) -> Self {
        Self {
            client,
            keys,
            id,
            heartbeat,
            registry,
            health,
            signed_off: tokio::sync::Mutex::new(false),
        }
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn beat_interval(&self) -> Duration {
        self.heartbeat / 3
    }

    pub fn check_interval(&self) -> Duration {
        self.heartbeat / 2
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from((self.heartbeat * 3 / 2).as_millis()).unwrap_or(i64::MAX)
    }

    /// Refreshes the heartbeat and checks that the cluster still counts this node.
    pub async fn beat(&self) -> Beat {
        let signed_off = self.signed_off.lock().await;
        if *signed_off {
            return Beat::Alive;
        }
        let refreshed: Result<(), _> = self
            .client
            .set(
                self.keys.heartbeat(&self.id),
                HEARTBEAT_LEVEL,
                Some(Expiration::PX(self.ttl_ms())),
                None,
                false,
            )
            .await;
        if let Err(e) = refreshed {
            self.health.down(format!("redis: {e}"));
            return Beat::Failed;
        }
        // The leases of the channels this node owns run out with its heartbeat (`lease.rs`).
        self.registry.renew_leases().await;
        let added: Result<u64, _> = self.client.sadd(self.keys.nodes(), self.id.as_str()).await;
        match added {
            Ok(added) => {
                self.health.up();
                if added == 1 {
                    Beat::Reaped
                } else {
                    Beat::Alive
                }
            }
            Err(e) => {
                self.health.down(format!("redis: {e}"));
                Beat::Failed
            }
        }
    }

    /// Joins the cluster at start-up (before any socket connects).
    pub async fn announce(&self) -> Result<(), String> {
        match self.beat().await {
            Beat::Failed => Err(self.health.problem().unwrap_or_default()),
            _ => Ok(()),
        }
    }

    /// Reads the other nodes' levels once and records the lowest (see
    /// [`ClusterRegistry::peers_at_level`]): at start-up, before this node serves anyone, so
    /// that its first relays already take the way they will keep (a switch of ways may
    /// reorder a sender's relays).
    /// Tries for up to one heartbeat to read every live node's level.
    pub async fn learn_levels(&self) {
        let until = tokio::time::Instant::now() + self.heartbeat;
        loop {
            match self.look().await {
                Some(look) if look.complete => {
                    return self.registry.peers_at_level(look.lowest, true);
                }
                _ if tokio::time::Instant::now() >= until => {
                    tracing::warn!("could not read every node's level; starting at the lowest");
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Cleans up after every node whose heartbeat is gone; returns what changed, for the
    /// survivors' peers to be told. Exactly one survivor reaps each dead node.
    pub async fn reap_dead(&self) -> Vec<Departure> {
        let Some(look) = self.look().await else {
            return Vec::new();
        };
        self.registry.peers_at_level(look.lowest, look.complete);
        let mut departures = Vec::new();
        for node in look.dead {
            let claimed: Result<Option<String>, _> = self
                .client
                .set(
                    self.keys.reaper(&node),
                    self.id.as_str(),
                    Some(Expiration::PX(30_000)),
                    Some(SetOptions::NX),
                    false,
                )
                .await;
            if !matches!(claimed, Ok(Some(_))) {
                continue;
            }
            tracing::warn!(dead = %node, "a node stopped its heartbeat; cleaning up after it");
            departures.extend(self.remove_sockets_of(&node).await);
            let cleared: Result<(), _> = async {
                self.client
                    .del::<(), _>(self.keys.node_sockets(&node))
                    .await?;
                self.client
                    .srem::<(), _, _>(self.keys.nodes(), node.as_str())
                    .await?;
                self.client.del::<(), _>(self.keys.reaper(&node)).await
            }
            .await;
            if let Err(e) = cleared {
                tracing::warn!(dead = %node, "cleanup unfinished, retried on the next look: {e}");
            }
        }
        departures
    }

    /// The other nodes as their heartbeats say (`None`: Redis did not answer).
    async fn look(&self) -> Option<Look> {
        let nodes: Vec<String> = self.client.smembers(self.keys.nodes()).await.ok()?;
        let mut look = Look {
            lowest: level_of(HEARTBEAT_LEVEL),
            complete: true,
            dead: Vec::new(),
        };
        for node in nodes.iter().filter(|n| n.as_str() != self.id.as_str()) {
            let node = NodeId::parse(node);
            let heartbeat: Result<Option<String>, _> =
                self.client.get(self.keys.heartbeat(&node)).await;
            match heartbeat {
                Ok(Some(level)) => look.lowest = look.lowest.min(level_of(&level)),
                Ok(None) => look.dead.push(node),
                // A heartbeat that cannot be read (Redis away a moment) says nothing of its
                // node's level: the level may then go down (to a lower one read), not up,
                // rather than every node switching to the earliest release's ways and back
                // (each switch may reorder events in flight).
                Err(_) => look.complete = false,
            }
        }
        Some(look)
    }

    async fn remove_sockets_of(&self, node: &NodeId) -> Vec<Departure> {
        let sids: Vec<String> = self
            .client
            .smembers(self.keys.node_sockets(node))
            .await
            .unwrap_or_default();
        let mut departures = Vec::with_capacity(sids.len());
        for sid in sids {
            departures.push(
                self.registry
                    .remove_socket(&SocketId::from_stored(&sid), node)
                    .await,
            );
        }
        departures
    }

    /// Leaves the cluster at shutdown: whatever this node's sockets still hold is removed
    /// (returned for the peers to be told), then its heartbeat and registration.
    pub async fn sign_off(&self) -> Vec<Departure> {
        // Under the lock: a beat in flight finishes first, and every later one does nothing.
        *self.signed_off.lock().await = true;
        let departures = self.remove_sockets_of(&self.id).await;
        // Its channels go on: the state is in Redis, and the next operation on each, on any
        // node, takes the lease this node gives up here.
        self.registry.release_leases().await;
        let result: Result<(), fred::error::Error> = async {
            self.client
                .del::<(), _>(self.keys.node_sockets(&self.id))
                .await?;
            self.client
                .srem::<(), _, _>(self.keys.nodes(), self.id.as_str())
                .await?;
            self.client
                .del::<(), _>(self.keys.heartbeat(&self.id))
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("could not sign off from the cluster (others will reap this node): {e}");
        }
        departures
    }
}
