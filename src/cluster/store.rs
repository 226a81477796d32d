//! The channel registry's Redis backend.
//!
//! Every operation reads the part of the registry it concerns (its channels' documents, the
//! caller's memberships, the counts it checks), runs the very same rules the in-memory registry
//! runs ([`State`]) on that part, and hands what changed to one Lua script that applies it only
//! if every channel it read still has the version it read (optimistic concurrency; a conflict
//! reloads and runs the rule again). So no node ever writes on the strength of a stale read,
//! and each rule of the protocol is still written once.
//!
//! Layout (see [`Keys`]): a channel is one hash {v: version, d: JSON document with its viewers,
//! aliases and relay tree}; a sorted set lists channels by creation time (`channel_list` order,
//! the capacity count); per-socket sets say which channels a socket broadcasts and watches
//! (derived from the documents, written in the same script); per-address counters; a sorted
//! set of channels with relay-tree waits by deadline; per-node sets of sockets to clean up when
//! the node dies. Nothing is written that the last leaver does not delete.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, HashesInterface, KeysInterface, ListInterface, LuaInterface,
    PubsubInterface, SetsInterface, SortedSetsInterface,
};
use futures_util::future::try_join_all;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::batch::{self, Batches, CountTeller, Running};
use super::emits::{self, Body, Emits, Reach, Relay, Sockets};
use super::forward::{self, ChannelOp, Done, Waiting};
use super::hearing;
use super::lease::{Owners, lease_ttl};
use super::replica::{self, Kept, Replica, version_number};
use super::{Health, Keys, NodeId};
use crate::registry::Stats;
use crate::registry::broadcaster::{BroadcastRequest, BroadcastStarted, BroadcastStopped};
use crate::registry::chat::{ChatDelivery, ChatMessage};
use crate::registry::clock::{Moment, unix_now};
use crate::registry::errors::ChannelError;
use crate::registry::expiry::Expired;
use crate::registry::ids::random_channel_id;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::listing::{Census, ChannelSummary};
use crate::registry::membership::{Departure, OwnedViewerRequest, ViewerJoined, ViewerRequest};
use crate::registry::model::{Channel, ClosedChannel, Membership, RegistryLimits, State, Waiter};
use crate::registry::moderation::{
    ChatPace, ChatSettings, ChatSettingsChange, Removal, Told, ViewerEntry,
};
use crate::registry::peers::PeersChange;
use crate::registry::relay::Activity;
use crate::registry::tree_events::{TreeEvent, TreeOp};

mod routing;

const COMMIT: &str = include_str!("commit.lua");

/// Appends a chat message to its channel's history only while the channel exists, and trims
/// the list to its bound, in one step: a message accepted just before its channel closed can
/// never leave a list behind the channel's deletion (which removes the list in the same
/// script as the document).
/// KEYS: the channel's document, its history. ARGV: how many to keep, then the messages
/// (JSON), oldest first.
const REMEMBER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 2))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
return 1
";

/// Removes the message with an id from its channel's history list (`remove_message`); entries
/// that do not decode are left alone. KEYS: the history. ARGV: the message id.
const FORGET: &str = r"
local removed = 0
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, message = pcall(cjson.decode, entry)
  if ok and type(message) == 'table' and message['id'] == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, entry)
  end
end
return removed
";

/// One channel id's waiting room: who waits, and how each asked to join.
type Lobby = HashMap<SocketId, Waiter>;

/// A waiter as stored in its lobby's document (a JSON list of them).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredWaiter {
    Waiter {
        id: String,
        relay: bool,
        since: Moment,
    },
    /// The first layout: the id alone (a leaf, in no particular order).
    Id(String),
}

/// Reads a lobby's document; an unreadable one counts as empty (its waiters wait in vain
/// rather than break the broadcaster's join).
fn parse_lobby(doc: &str) -> Lobby {
    serde_json::from_str::<Vec<StoredWaiter>>(doc)
        .unwrap_or_default()
        .into_iter()
        .map(|stored| match stored {
            StoredWaiter::Waiter { id, relay, since } => {
                (SocketId::from_stored(&id), Waiter { relay, since })
            }
            StoredWaiter::Id(id) => (
                SocketId::from_stored(&id),
                Waiter {
                    relay: false,
                    since: Moment::from_millis(0),
                },
            ),
        })
        .collect()
}

/// Conflicting writers retry this often before the caller is told to try again; each retry
/// reloads, so only a channel under a storm of simultaneous changes ever gets there.
const MAX_ATTEMPTS: usize = 64;

/// Channels with this many viewers let their batches fill for [`LINGER`] (see `run_batches`).
const LINGER_FROM: usize = 100;
const LINGER: Duration = Duration::from_millis(3);

/// A kept copy checked against the stored version.
enum Checked {
    Current(Arc<Kept>),
    /// No such channel any more (the copy is forgotten).
    Gone,
    /// The stored version, newer than the copy.
    Stored(String),
}

#[derive(Clone)]
pub struct ClusterRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    keys: Keys,
    limits: RegistryLimits,
    node: NodeId,
    health: Arc<Health>,
    /// One queue per channel for this node's writers: they would only defeat each other's
    /// compare-and-set (a crowd joining one channel), so they take turns, and conflicts are
    /// left to writers on other nodes.
    queues: std::sync::Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<()>>>>,
    /// Joins and relay-tree reports waiting for their channel's next batch (see `batch.rs`).
    batches: Batches,
    /// One read of a channel's new document at a time (see `fetch`).
    fetches: std::sync::Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<()>>>>,
    /// The documents this node last read or wrote, kept current by the change feed: reads
    /// fetch only a version where it matches, and relays are authorized without Redis.
    replica: Arc<Replica>,
    /// This node's viewers' last message per channel, for slow mode (a connection lives on
    /// one node, so nobody else needs it).
    pace: ChatPace,
    /// The channels this node owns and the owners it forwards to (see `lease.rs`).
    owners: std::sync::Mutex<Owners>,
    /// Forwarded operations waiting for their owner's answer (see `forward.rs`).
    waiting: Arc<Waiting>,
    /// `--heartbeat-ms`: the lease's time-to-live and the forwarding timeout derive from it.
    heartbeat: Duration,
    /// How the runner of a channel's batches tells its broadcaster the count (see
    /// [`CountTeller`]); until it is given, each caller tells it, as in memory.
    teller: std::sync::OnceLock<CountTeller>,
    /// How the owner of a channel turns its chat into events (see [`ClusterRegistry::run_chat`]).
    chat_renderer: std::sync::OnceLock<ChatRenderer>,
    /// How the runner of a channel's batches turns their relay-tree events for other sockets
    /// than the callers' into events (see `run_batches`); until it is given, each caller's
    /// node sends them, as in memory.
    tree_renderer: std::sync::OnceLock<TreeRenderer>,
    /// The transport: how events are sent to sockets, and which are here (see `emits.rs`).
    sockets: std::sync::OnceLock<Arc<dyn Sockets>>,
    /// Chat messages waiting for their channel's chat to run on this node, its owner.
    chats: std::sync::Mutex<HashMap<ChannelId, Vec<QueuedChat>>>,
    /// Every other live node runs forwarded chat (its heartbeat's level): until then each
    /// node sends its own sockets' messages, as a node of an earlier release does.
    owners_chat: std::sync::atomic::AtomicBool,
    /// Every other live node hears the emits channel (its heartbeat's level): until then an
    /// owner sends its events through the adapter, one publish each.
    emits_heard: std::sync::atomic::AtomicBool,
    /// Every other live node checks relays from other nodes (its heartbeat's level): until
    /// then relays to sockets on other nodes go through the adapter, unchecked there.
    relays_checked: std::sync::atomic::AtomicBool,
    /// The level the flags above were last set from (see [`ClusterRegistry::peers_at_level`]).
    peers_level: std::sync::atomic::AtomicU32,
}

/// What an operation read of one channel (absent channels are read as `None`).
struct Read {
    /// The document as read (shared with the replica, not copied): a write compares its
    /// text, and publishes how it changed the channel's peers (see `replica.rs`).
    kept: Arc<Kept>,
    wait: Option<Moment>,
}

impl Read {
    fn version(&self) -> &str {
        &self.kept.version
    }

    fn channel(&self) -> &Channel {
        &self.kept.channel
    }
}

/// A chat message waiting for its channel's owner to run it (see `ClusterRegistry::run_chat`).
struct QueuedChat {
    op: ChannelOp,
    /// After this its sender may have given up on it (see `forward::Request`).
    deadline: Option<Moment>,
    reply: oneshot::Sender<Result<Done, ChannelError>>,
}

/// A channel document an attempt writes.
struct Written {
    raw: Arc<str>,
    /// The version it replaces and how its peers changed (none for a new channel).
    change: Option<(String, PeersChange)>,
}

/// One attempt of an operation: the part of the registry it loaded.
#[derive(Default)]
struct Txn {
    state: State,
    read: HashMap<ChannelId, Option<Read>>,
    /// Waiting-room lobbies read: version and members.
    lobbies: HashMap<ChannelId, Option<(String, Lobby)>>,
    /// Writes besides the channels' own (index entries of the caller).
    extra: Plan,
    /// The lease this write is made under (an owner's batch): the channel and its token.
    fence: Option<(ChannelId, String)>,
    /// Sockets the attempt adds that live on other nodes (forwarded joins), by node.
    homes: HashMap<SocketId, NodeId>,
}

/// The script's input, built up write by write.
#[derive(Default)]
struct Plan {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    checks: Vec<Value>,
    writes: Vec<Value>,
    docs: Vec<String>,
    cap: Option<Value>,
    addr: Option<Value>,
    waiting: Option<Value>,
    /// Heartbeat keys that must exist (the nodes of forwarded joins, see `run_batches`).
    alive: Vec<usize>,
}

impl Plan {
    /// The 1-based KEYS index of `key`.
    fn key(&mut self, key: String) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.keys.push(key.clone());
        self.index.insert(key, self.keys.len());
        self.keys.len()
    }

    fn write(&mut self, op: &str, key: String, mut fields: Value) {
        let k = self.key(key);
        fields["op"] = json!(op);
        fields["k"] = json!(k);
        self.writes.push(fields);
    }

    fn merge(&mut self, other: Plan) {
        for mut w in other.writes {
            if let Some(k) = w["k"].as_u64() {
                let key = other.keys[k as usize - 1].clone();
                w["k"] = json!(self.key(key));
            }
            self.writes.push(w);
        }
    }
}

/// Outcome of one attempt: done, or a conflict to retry.
type Attempt<T> = Result<Option<T>, ChannelError>;

/// Runs an attempt (a block evaluating to an [`Attempt`], `?` allowed) until it is not a
/// conflict. A macro rather than a function taking an async closure: the compiler cannot yet
/// prove such closures' futures `Send`.
macro_rules! retrying {
    ($self:ident, $attempt:block) => {{
        let mut n = 0usize;
        loop {
            let outcome: Attempt<_> = async { $attempt }.await;
            match outcome {
                Err(e) => break Err(e),
                Ok(Some(done)) => break Ok(done),
                Ok(None) => {
                    n += 1;
                    if n >= MAX_ATTEMPTS {
                        tracing::warn!(
                            "registry operation gave up after {MAX_ATTEMPTS} conflicting attempts"
                        );
                        break Err(ChannelError::Unavailable);
                    }
                    $self.backoff(n).await;
                }
            }
        }
    }};
}

impl ClusterRegistry {
    pub fn new(
        client: Client,
        keys: Keys,
        limits: RegistryLimits,
        node: NodeId,
        health: Arc<Health>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                keys,
                limits,
                owners: std::sync::Mutex::new(Owners::new(node.clone(), lease_ttl(heartbeat))),
                node,
                health,
                waiting: Arc::default(),
                heartbeat,
                queues: std::sync::Mutex::default(),
                batches: Batches::default(),
                fetches: std::sync::Mutex::default(),
                replica: Arc::default(),
                pace: ChatPace::default(),
                teller: std::sync::OnceLock::new(),
                chat_renderer: std::sync::OnceLock::new(),
                tree_renderer: std::sync::OnceLock::new(),
                sockets: std::sync::OnceLock::new(),
                chats: std::sync::Mutex::default(),
                owners_chat: std::sync::atomic::AtomicBool::new(false),
                emits_heard: std::sync::atomic::AtomicBool::new(false),
                relays_checked: std::sync::atomic::AtomicBool::new(false),
                peers_level: std::sync::atomic::AtomicU32::new(0),
            }),
        }
    }

    /// How to tell a broadcaster its channel's viewer count (the transport's emit): from then
    /// on the batches' runner tells it once per batch, in the batches' order.
    pub fn tell_counts_with(&self, teller: CountTeller) {
        if self.inner.teller.set(teller).is_err() {
            tracing::debug!("the count teller was given twice; the first stays");
        }
    }

    /// How a chat message becomes events for its channel's members (the transport's
    /// payloads): once this and [`Self::attach_sockets`] are given, each channel's owner sends its
    /// chat (see [`ClusterRegistry::run_chat`]).
    pub fn render_chat_with(&self, renderer: ChatRenderer) {
        if self.inner.chat_renderer.set(renderer).is_err() {
            tracing::debug!("the chat renderer was given twice; the first stays");
        }
    }

    /// How relay-tree events become the transport's events: once this and
    /// [`Self::attach_sockets`] are given, the runner of a channel's batches sends their
    /// events for other sockets than the callers' (see `run_batches`).
    pub fn render_tree_with(&self, renderer: TreeRenderer) {
        if self.inner.tree_renderer.set(renderer).is_err() {
            tracing::debug!("the tree renderer was given twice; the first stays");
        }
    }

    /// The transport: how events are sent to sockets (by the owner of their channel, and on
    /// hearing another owner's events on the emits channel) and relays delivered.
    pub fn attach_sockets(&self, sockets: Arc<dyn Sockets>) {
        if self.inner.sockets.set(sockets).is_err() {
            tracing::debug!("the sockets were given twice; the first stay");
        }
    }

    /// Whether a relay to a socket on another node goes over the emits channel, to be checked
    /// by the target's node ([`Self::relay_across`]); otherwise, through the adapter.
    pub fn checks_relays(&self) -> bool {
        self.inner
            .relays_checked
            .load(std::sync::atomic::Ordering::Acquire)
            && self.inner.sockets.get().is_some()
    }

    /// Sends a relay to its target's node, which checks that the sender may still reach the
    /// target before it delivers it ([`Self::recheck_relay`]). Published on the command
    /// connection like every other relay of its sender from this node: they arrive in order.
    /// `Unavailable` when it could not be sent.
    pub async fn relay_across(&self, relay: Relay) -> Result<(), ChannelError> {
        let text = emits::message(&self.inner.node, &Body::Relay(relay)).map_err(|e| {
            tracing::error!("relay not sent: cannot serialize it: {e}");
            ChannelError::Unavailable
        })?;
        self.publish_emits(text).await.map_err(|e| {
            tracing::warn!("relay not sent to other nodes: {e}");
            ChannelError::Unavailable
        })
    }

    /// The receiving node's check of a relay from another node to one of its sockets: its
    /// sender's node authorized it, maybe just before the target left a channel through this
    /// node. This node applies its own writes at once and hears every other write before any
    /// relay that follows it (`hearing.rs`), so its followed peers are never older than what
    /// the sender's node saw. A relay they do not allow is checked once more in Redis, so a
    /// refusal always comes from storage; one the server cannot check (storage away) goes
    /// through, as the sender's node let it.
    async fn recheck_relay(&self, from: &SocketId, to: &SocketId) -> Option<ChannelError> {
        if self.inner.replica.reaches(from, to) != Some(false) {
            return None;
        }
        self.authorize_relay(from, to.as_str(), Activity::Keep)
            .await
            .err()
            .filter(ChannelError::is_clients_fault)
    }

    /// Sends a channel's events, as its owner, to their recipients on every node in the order
    /// given: published once on the emits channel (every other node sends them to its own
    /// sockets) and sent to this node's; one by one through the adapter while some live node
    /// does not hear the emits channel.
    async fn emit_everywhere(&self, emits: Emits) {
        let Some(sockets) = self.inner.sockets.get() else {
            return;
        };
        if emits.is_empty() {
            return;
        }
        // Every recipient here (a batch's news for its broadcaster, on its own node): nobody
        // elsewhere has anything to hear.
        if emits.recipients().all(|sid| sockets.holds(sid)) {
            return sockets.emit(emits, Reach::Here).await;
        }
        if !self
            .inner
            .emits_heard
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return sockets.emit(emits, Reach::Everywhere).await;
        }
        let body = Body::Events(emits);
        let text = match emits::message(&self.inner.node, &body) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!("events not sent: cannot serialize them: {e}");
                return;
            }
        };
        // Published first, as the adapter does: when Redis fails, nobody gets the run rather
        // than this node's members alone.
        if let Err(e) = self.publish_emits(text).await {
            tracing::warn!("events not sent: {e}");
            return;
        }
        if let Body::Events(emits) = body {
            sockets.emit(emits, Reach::Here).await;
        }
    }

    /// Publishes on the emits channel, once: fred writes a command again when its connection
    /// closed with the command in flight, and a publish Redis had run already would then send
    /// a whole run twice.
    async fn publish_emits(&self, text: String) -> Result<(), fred::error::Error> {
        let once = fred::types::config::Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        self.inner
            .client
            .with_options(&once)
            .publish::<i64, _, _>(self.keys().emits(), text)
            .await
            .map(drop)
    }

    /// Hears the change feed, this node's inbox (forwarded operations and their replies) and
    /// the emits channel on their own connection, in order, for as long as it lives (see
    /// `hearing.rs`). Returns once they are subscribed (or after `wait`), so that a node
    /// announces itself to the others only when it hears what they send it.
    pub async fn follow_feed(&self, subscriber: fred::clients::SubscriberClient, wait: Duration) {
        let keys = self.keys();
        let (subscribed, first) = oneshot::channel();
        let ear = NodeEar {
            feed: keys.feed(),
            inbox: keys.inbox(&self.inner.node),
            emits: keys.emits(),
            registry: self.clone(),
            subscribed: std::sync::Mutex::new(Some(subscribed)),
        };
        let channels = vec![ear.feed.clone(), ear.inbox.clone(), ear.emits.clone()];
        drop(tokio::spawn(hearing::hear(subscriber, channels, ear)));
        if tokio::time::timeout(wait, first).await.is_err() {
            tracing::warn!("not subscribed yet to the cluster's channels; going on");
        }
    }

    /// Records the lowest cluster protocol level among the other live nodes (see `node.rs`):
    /// the replica is trusted only while all announce their writes (2), chat goes to the
    /// channel's owner only while all run forwarded chat (3), an owner publishes its events on
    /// the emits channel only while all hear it (4), and relays to other nodes take it only
    /// while all check them (5).
    /// With `complete` false (some heartbeat could not be read), `level` is the lowest of those
    /// read: the level may go down to it, never up.
    pub fn peers_at_level(&self, level: u32, complete: bool) {
        let previous = self
            .inner
            .peers_level
            .load(std::sync::atomic::Ordering::Acquire);
        let level = if complete { level } else { level.min(previous) };
        self.inner
            .peers_level
            .store(level, std::sync::atomic::Ordering::Release);
        self.inner.replica.set_peers_announce(level >= 2);
        self.inner
            .owners_chat
            .store(level >= 3, std::sync::atomic::Ordering::Release);
        self.inner
            .emits_heard
            .store(level >= 4, std::sync::atomic::Ordering::Release);
        self.inner
            .relays_checked
            .store(level >= 5, std::sync::atomic::Ordering::Release);
    }

    /// Waits for this node's turn to write `id` (see `Inner::queues`).
    async fn turn(&self, id: &ChannelId) -> tokio::sync::OwnedMutexGuard<()> {
        let queue = super::lock(&self.inner.queues)
            .entry(id.clone())
            .or_default()
            .clone();
        queue.lock_owned().await
    }

    /// Runs `op` on channel `id` in this node's next batch for it (see `batch.rs`): with
    /// every operation queued meanwhile, one load and one write for all of them. Only the
    /// channel's owner, or any node for a channel that does not exist, calls this (see
    /// `routing.rs`).
    /// `from`: the node that forwarded it, if another, and the time after which it must not
    /// run (see `forward::Request`).
    async fn run_here(
        &self,
        id: &ChannelId,
        op: ChannelOp,
        from: Option<NodeId>,
        deadline: Option<Moment>,
    ) -> Result<Done, ChannelError> {
        if let ChannelOp::Chat { .. } = &op {
            return self.run_chat(id, op, deadline).await;
        }
        let grace = self.inner.limits.resume_grace;
        let channel = id.clone();
        let caller = op.socket().clone();
        let home = from.map(|node| (caller.clone(), node));
        let (op, outcome) = batch::pending(
            move |state: &mut State, now| {
                if deadline.is_some_and(|deadline| now > deadline) {
                    return Err(ChannelError::Unavailable);
                }
                op.apply(state, &channel, grace, now)
            },
            caller,
            home,
        );
        if self.inner.batches.push(id, op) {
            let this = self.clone();
            let id = id.clone();
            drop(tokio::spawn(async move { this.run_batches(&id).await }));
        }
        // Dropped unrun only if the batch's task panicked.
        outcome.await.unwrap_or(Err(ChannelError::Unavailable))
    }

    /// Runs a channel's batches until its queue is empty, each in this node's turn for the
    /// channel: operations queued while an earlier writer holds it join the next batch.
    async fn run_batches(&self, id: &ChannelId) {
        let mut running = Running {
            batches: &self.inner.batches,
            id,
            finished: false,
        };
        loop {
            let _turn = self.turn(id).await;
            // A big channel's write costs its size: a moment's wait lets a crowd's joins share
            // one (a few milliseconds against the tens each one alone added to a crowd's wait).
            let audience = self.inner.replica.audience(id);
            if audience >= LINGER_FROM {
                tokio::time::sleep(LINGER).await;
            }
            let Some(mut ops) = self.inner.batches.next(id) else {
                running.finished = true;
                return;
            };
            tracing::debug!(channel = %id, ops = ops.len(), audience, "batch");
            let mut fenced = false;
            let stored = retrying!(self, {
                let mut txn = self.begin(std::slice::from_ref(id)).await?;
                // The owner's write carries its lease: refused once another node took it.
                txn.fence = self.fence(id).map(|token| (id.clone(), token));
                if fenced && txn.fence.is_none() {
                    // The lease went while this batch ran: the operations other nodes
                    // forwarded are theirs to run again on the new owner, not this node's.
                    for op in ops.iter_mut().filter(|op| op.home().is_some()) {
                        op.abandon();
                    }
                }
                fenced = txn.fence.is_some();
                // A join forwarded by a node that died meanwhile would list its socket under
                // that node after the reaper is done with it: nobody would ever remove it.
                let homes: HashSet<NodeId> = ops
                    .iter()
                    .filter_map(|op| op.home().map(|(_, node)| node.clone()))
                    .collect();
                let dead = self.dead_homes(homes).await?;
                for op in ops
                    .iter_mut()
                    .filter(|op| op.home().is_some_and(|(_, node)| dead.contains(node)))
                {
                    op.abandon();
                }
                txn.homes = ops
                    .iter()
                    .filter_map(|op| op.home())
                    .map(|(sid, node)| (sid.clone(), node.clone()))
                    .collect();
                let now = Moment::now();
                for op in &mut ops {
                    op.run(&mut txn.state, now);
                }
                let teller = self.inner.teller.get();
                let mut tell = None;
                if let Some(channel) = txn.state.channels.get(id) {
                    let counts: Vec<usize> = ops
                        .iter_mut()
                        .filter_map(|op| op.settle(channel, teller.is_some()))
                        .collect();
                    if let Some(teller) = teller.filter(|_| !counts.is_empty()) {
                        tell = Some((teller, channel.broadcaster.clone(), counts));
                    }
                }
                Ok(self.commit(txn).await?.map(|()| tell))
            });
            let (failure, tell) = match stored {
                Ok(tell) => (None, tell),
                Err(e) => (Some(e), None),
            };
            // Told before the next batch can run (this task runs them one after another, and
            // the turn is held): one channel's counts reach its broadcaster in order.
            if let Some((teller, broadcaster, counts)) = tell {
                teller(broadcaster, id.clone(), counts).await;
            }
            // Then the relay-tree moves of other sockets than the callers', in the rules'
            // order, from this one node (each caller's node sends its own socket's, and those
            // other rules of the batch gave it).
            let renders = self
                .inner
                .tree_renderer
                .get()
                .filter(|_| failure.is_none() && self.inner.sockets.get().is_some());
            if let Some(render) = renders {
                let events = batch::route_tree(&mut ops);
                if !events.is_empty() {
                    let mut emits = Emits::default();
                    render(&events, &mut emits);
                    self.emit_everywhere(emits).await;
                }
            }
            for op in ops {
                op.deliver(failure.as_ref());
            }
        }
    }

    /// Those of `homes` (nodes that forwarded operations) whose heartbeat is gone.
    async fn dead_homes(&self, homes: HashSet<NodeId>) -> Result<HashSet<NodeId>, ChannelError> {
        let mut dead = HashSet::new();
        for node in homes {
            let alive: bool = self
                .inner
                .client
                .exists(self.keys().heartbeat(&node))
                .await
                .map_err(|e| self.unavailable(e))?;
            if !alive {
                dead.insert(node);
            }
        }
        Ok(dead)
    }

    /// Waits until no other task of this node reads `id`'s document (see `fetch`).
    async fn fetching(&self, id: &ChannelId) -> tokio::sync::OwnedMutexGuard<()> {
        let reads = super::lock(&self.inner.fetches)
            .entry(id.clone())
            .or_default()
            .clone();
        reads.lock_owned().await
    }

    /// Forgets the queues nobody waits in.
    fn forget_idle_queues(&self) {
        super::lock(&self.inner.queues).retain(|_, queue| Arc::strong_count(queue) > 1);
        super::lock(&self.inner.fetches).retain(|_, reads| Arc::strong_count(reads) > 1);
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.inner.limits
    }

    /// Why the shared storage cannot serve now (Redis unreachable), if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.inner.health.problem()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Turns a Redis failure into the client-facing refusal, and says so on `/healthz`.
    fn unavailable(&self, e: impl std::fmt::Display) -> ChannelError {
        self.inner.health.down(format!("redis: {e}"));
        ChannelError::Unavailable
    }

    /// Waits a little before retrying a conflicting attempt, spreading simultaneous writers
    /// of one channel apart.
    async fn backoff(&self, attempt: usize) {
        if attempt >= 2 {
            let jitter = rand::rng().random_range(0..=(attempt as u64).min(20));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
    }

    /// Reads a channel: its version, and its document only when this node's kept copy is not
    /// that version. The copy is shared, not cloned: a check that only reads (a relay) costs
    /// nothing in the channel's size.
    async fn fetch(&self, id: &ChannelId) -> Result<Option<Arc<Kept>>, ChannelError> {
        let seen = match self.inner.replica.kept(id) {
            Some(kept) => match self.check_kept(id, kept).await? {
                Checked::Current(kept) => return Ok(Some(kept)),
                Checked::Gone => return Ok(None),
                Checked::Stored(version) => Some(version),
            },
            None => None,
        };
        // One read of a channel's document per node at a time: during a crowd's arrival every
        // relay finds the kept copy outdated (or dropped by the feed) at once, and each one
        // reading and parsing the whole channel again was most of a node's work.
        let _fetching = self.fetching(id).await;
        if let Some(kept) = self.inner.replica.kept(id) {
            match seen {
                // At least what was stored after this call began.
                Some(seen) if version_at_least(&kept.version, &seen) => return Ok(Some(kept)),
                Some(_) => {}
                // Kept while this call waited, but perhaps read before it began, with a write
                // since that the feed has not announced yet: it must be the stored version.
                None => match self.check_kept(id, kept).await? {
                    Checked::Current(kept) => return Ok(Some(kept)),
                    Checked::Gone => return Ok(None),
                    Checked::Stored(_) => {}
                },
            }
        }
        self.read_document(id).await
    }

    /// Whether a kept copy is the stored version (one small read, not the document).
    async fn check_kept(&self, id: &ChannelId, kept: Arc<Kept>) -> Result<Checked, ChannelError> {
        let version: Option<String> = self
            .inner
            .client
            .hget(self.keys().channel(id), "v")
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(match version {
            None => {
                self.inner.replica.forget(id);
                Checked::Gone
            }
            Some(v) if v == kept.version => Checked::Current(kept),
            Some(v) => Checked::Stored(v),
        })
    }

    /// Reads a channel's whole document from Redis and keeps it.
    async fn read_document(&self, id: &ChannelId) -> Result<Option<Arc<Kept>>, ChannelError> {
        let key = self.keys().channel(id);
        let client = &self.inner.client;
        let generation = self.inner.replica.generation();
        let fields: Vec<Option<String>> = client
            .hmget(key, vec!["v", "d"])
            .await
            .map_err(|e| self.unavailable(e))?;
        let (Some(Some(version)), Some(Some(raw))) = (fields.first(), fields.get(1)) else {
            self.inner.replica.forget(id);
            return Ok(None);
        };
        let channel: Channel = serde_json::from_str(raw).map_err(|e| {
            tracing::error!(channel = %id, "unreadable channel document: {e}");
            ChannelError::Unavailable
        })?;
        Ok(Some(self.inner.replica.remember(
            id,
            version.clone(),
            Arc::from(raw.as_str()),
            channel,
            generation,
        )))
    }

    /// Reads a channel for an operation that may change it: its own copy, and what was read.
    async fn load(&self, id: &ChannelId) -> Result<Option<(Read, Channel)>, ChannelError> {
        Ok(self.fetch(id).await?.map(|kept| {
            let channel = kept.channel.clone();
            let wait = channel.next_deadline();
            (Read { kept, wait }, channel)
        }))
    }

    /// Starts an attempt with these channels loaded.
    async fn begin(&self, ids: &[ChannelId]) -> Result<Txn, ChannelError> {
        let loaded = try_join_all(ids.iter().map(|id| self.load(id))).await?;
        let mut txn = Txn::default();
        for (id, found) in ids.iter().zip(loaded) {
            match found {
                Some((read, channel)) => {
                    txn.state.channels.insert(id.clone(), channel);
                    txn.state.track_waits(id);
                    txn.read.insert(id.clone(), Some(read));
                }
                None => {
                    txn.read.insert(id.clone(), None);
                }
            }
        }
        Ok(txn)
    }

    async fn membership(&self, sid: &SocketId) -> Result<Membership, ChannelError> {
        let client = &self.inner.client;
        let (b, w, l): (Vec<String>, Vec<String>, Vec<String>) = tokio::try_join!(
            client.smembers(self.keys().broadcasting(sid)),
            client.smembers(self.keys().watching(sid)),
            client.smembers(self.keys().waiting(sid)),
        )
        .map_err(|e| self.unavailable(e))?;
        Ok(Membership {
            broadcasting: b.into_iter().map(ChannelId::from).collect(),
            watching: w.into_iter().map(ChannelId::from).collect(),
            waiting: l.into_iter().map(ChannelId::from).collect(),
        })
    }

    /// Adds these waiting-room lobbies (and the server-wide waiting count) to an attempt.
    async fn load_lobbies(&self, txn: &mut Txn, ids: &[ChannelId]) -> Result<(), ChannelError> {
        let client = &self.inner.client;
        let docs = try_join_all(ids.iter().map(|id| async move {
            let fields: Vec<Option<String>> =
                client.hmget(self.keys().lobby(id), vec!["v", "d"]).await?;
            Ok::<_, fred::error::Error>(fields)
        }))
        .await
        .map_err(|e| self.unavailable(e))?;
        for (id, fields) in ids.iter().zip(docs) {
            let found = match (fields.first(), fields.get(1)) {
                (Some(Some(v)), Some(Some(d))) => {
                    let members = parse_lobby(d);
                    txn.state.lobbies.insert(id.clone(), members.clone());
                    Some((v.clone(), members))
                }
                _ => None,
            };
            txn.lobbies.insert(id.clone(), found);
        }
        let total: Option<usize> = client
            .get(self.keys().waiting_total())
            .await
            .map_err(|e| self.unavailable(e))?;
        txn.state.waiting_total = total.unwrap_or(0);
        Ok(())
    }

    /// Starts an attempt with the caller's memberships and all their channels loaded.
    async fn begin_for(&self, sid: &SocketId) -> Result<Txn, ChannelError> {
        let membership = self.membership(sid).await?;
        let ids: Vec<ChannelId> = membership
            .broadcasting
            .iter()
            .chain(&membership.watching)
            .cloned()
            .collect();
        let mut txn = self.begin(&ids).await?;
        if !membership.broadcasting.is_empty()
            || !membership.watching.is_empty()
            || !membership.waiting.is_empty()
        {
            txn.state.sockets.insert(sid.clone(), membership);
        }
        Ok(txn)
    }

    /// Writes what the attempt changed, if what it read is unchanged. `Ok(None)`: conflict.
    async fn commit(&self, txn: Txn) -> Result<Option<()>, ChannelError> {
        let keys = self.keys();
        let mut plan = Plan::default();
        let Txn {
            state,
            read,
            lobbies,
            extra,
            fence,
            homes,
        } = txn;
        self.plan_lobbies(&mut plan, &state, &lobbies);
        // Documents written (in the order of their `putv`s), remembered with the versions the
        // script gave them.
        let mut written: Vec<(ChannelId, Written)> = Vec::new();
        let mut removed: Vec<ChannelId> = Vec::new();
        // Waiters a new channel took in are indexed on their own nodes already.
        let waiters: HashSet<&SocketId> = lobbies
            .values()
            .flatten()
            .flat_map(|(_, members)| members.keys())
            .collect();
        for (id, before) in &read {
            let k = plan.key(keys.channel(id));
            let v = before.as_ref().map_or("", |r| r.version());
            plan.checks.push(json!({"k": k, "v": v}));
        }
        for (id, before) in read {
            let after = state.channels.get(&id);
            match (before, after) {
                (None, None) => {}
                (Some(before), None) => {
                    self.plan_removal(&mut plan, &id, &before);
                    removed.push(id);
                }
                (before, Some(channel)) => {
                    if let Some(write) = self.plan_update(
                        &mut plan,
                        &id,
                        before.as_ref(),
                        channel,
                        &waiters,
                        &homes,
                    )? {
                        written.push((id, write));
                    }
                }
            }
        }
        plan.merge(extra);
        if plan.writes.is_empty() {
            return Ok(Some(()));
        }
        let lease = fence
            .as_ref()
            .map(|(id, token)| json!({"k": plan.key(keys.owner(id)), "t": token}));
        let mut spec = json!({
            "checks": plan.checks,
            "writes": plan.writes,
            "feed": keys.feed(),
        });
        if let Some(lease) = lease {
            spec["lease"] = lease;
        }
        if !plan.alive.is_empty() {
            spec["alive"] = json!(plan.alive);
        }
        if let Some(cap) = plan.cap {
            spec["cap"] = cap;
        }
        if let Some(addr) = plan.addr {
            spec["addr"] = addr;
        }
        if let Some(waiting) = plan.waiting {
            spec["waiting"] = waiting;
        }
        let mut args = Vec::with_capacity(plan.docs.len() + 1);
        args.push(spec.to_string());
        args.extend(plan.docs);
        let generation = self.inner.replica.generation();
        let answer: Vec<i64> = self
            .inner
            .client
            .eval(COMMIT, plan.keys, args)
            .await
            .map_err(|e| self.unavailable(e))?;
        match answer.first().copied().unwrap_or(i64::MIN) {
            1 => {
                let mut channels = state.channels;
                for ((id, write), version) in written.into_iter().zip(answer.iter().skip(1)) {
                    if let (Some((replaced, change)), Ok(version)) =
                        (write.change, u64::try_from(*version))
                    {
                        self.inner.replica.advance(&id, &replaced, version, change);
                    }
                    if let Some(channel) = channels.remove(&id) {
                        self.inner.replica.remember(
                            &id,
                            version.to_string(),
                            write.raw,
                            channel,
                            generation,
                        );
                    }
                }
                for id in &removed {
                    self.inner.replica.deleted(id);
                    // Its lease went with it (`plan_removal`).
                    self.lost_lease(id);
                }
                Ok(Some(()))
            }
            0 => Ok(None),
            -1 => Err(ChannelError::AtCapacity(self.inner.limits.max_channels)),
            -2 => Err(ChannelError::TooManyForAddress(
                self.inner.limits.max_channels_per_addr,
            )),
            -3 => Err(ChannelError::WaitingRoomFull),
            // A node whose join this batch carries died since its check: checked again.
            -5 => Ok(None),
            -4 => {
                // Another node took the lease: this node stops acting as the owner, and the
                // batch is tried again as any node's write (its callers wait no longer).
                if let Some((id, _)) = &fence {
                    tracing::info!(channel = %id, "lost a channel's lease while writing it");
                    self.lost_lease(id);
                }
                Ok(None)
            }
            _ => {
                tracing::error!(?answer, "unexpected answer from the commit script");
                Err(ChannelError::Unavailable)
            }
        }
    }

    /// Writes for the waiting-room lobbies an attempt read: their documents, the members'
    /// indexes, and the server-wide count (guarded when it grows).
    fn plan_lobbies(
        &self,
        plan: &mut Plan,
        state: &State,
        lobbies: &HashMap<ChannelId, Option<(String, Lobby)>>,
    ) {
        let keys = self.keys();
        let empty = Lobby::new();
        let mut delta: i64 = 0;
        for (id, before) in lobbies {
            let k = plan.key(keys.lobby(id));
            let v = before.as_ref().map_or("", |(v, _)| v.as_str());
            plan.checks.push(json!({"k": k, "v": v}));
            let old = before.as_ref().map_or(&empty, |(_, m)| m);
            let new = state.lobbies.get(id).unwrap_or(&empty);
            if old == new {
                continue;
            }
            if new.is_empty() {
                plan.write("del", keys.lobby(id), json!({}));
            } else {
                let mut waiters: Vec<(&SocketId, &Waiter)> = new.iter().collect();
                waiters.sort_unstable_by_key(|(id, _)| *id);
                let members: Vec<StoredWaiter> = waiters
                    .into_iter()
                    .map(|(id, waiter)| StoredWaiter::Waiter {
                        id: id.to_string(),
                        relay: waiter.relay,
                        since: waiter.since,
                    })
                    .collect();
                plan.docs.push(json!(members).to_string());
                let a = plan.docs.len() + 1;
                let version = format!("{:016x}", rand::rng().random::<u64>());
                plan.write("put", keys.lobby(id), json!({"v": version, "a": a}));
            }
            for joined in new.keys().filter(|w| !old.contains_key(*w)) {
                plan.write("sadd", keys.waiting(joined), json!({"m": id.as_str()}));
                let mine = keys.node_sockets(&self.inner.node);
                plan.write("sadd", mine, json!({"m": joined.as_str()}));
            }
            for left in old.keys().filter(|w| !new.contains_key(*w)) {
                plan.write("srem", keys.waiting(left), json!({"m": id.as_str()}));
            }
            delta += new.len() as i64 - old.len() as i64;
        }
        if delta != 0 {
            if delta > 0 {
                let k = plan.key(keys.waiting_total());
                plan.waiting =
                    Some(json!({"k": k, "max": self.inner.limits.max_waiting, "n": delta}));
            }
            plan.write("incr", keys.waiting_total(), json!({"n": delta}));
        }
    }

    fn plan_removal(&self, plan: &mut Plan, id: &ChannelId, before: &Read) {
        let keys = self.keys();
        plan.write("delv", keys.channel(id), json!({"id": id.as_str()}));
        plan.write("del", keys.chat_history(id), json!({}));
        // Its lease goes with it: a channel created again under this id starts a new one.
        plan.write("del", keys.owner(id), json!({}));
        plan.write("zrem", keys.channel_index(), json!({"m": id.as_str()}));
        plan.write("zrem", keys.waits(), json!({"m": id.as_str()}));
        if let Some(broadcaster) = before.channel().present_broadcaster() {
            plan.write(
                "srem",
                keys.broadcasting(broadcaster),
                json!({"m": id.as_str()}),
            );
        }
        for viewer in before.channel().viewers.keys() {
            plan.write("srem", keys.watching(viewer), json!({"m": id.as_str()}));
        }
        if let Some(addr) = before.channel().owner_addr {
            plan.write("incr", keys.addr(&addr), json!({"n": -1}));
        }
    }

    fn plan_update(
        &self,
        plan: &mut Plan,
        id: &ChannelId,
        before: Option<&Read>,
        channel: &Channel,
        waiters: &HashSet<&SocketId>,
        homes: &HashMap<SocketId, NodeId>,
    ) -> Result<Option<Written>, ChannelError> {
        let keys = self.keys();
        let doc = serde_json::to_string(channel).map_err(|e| {
            tracing::error!("cannot encode a channel: {e}");
            ChannelError::Unavailable
        })?;
        let mut written = None;
        if before.is_none_or(|b| *b.kept.raw != *doc) {
            // Its password hash (empty: public) beside the document, for a joining viewer's
            // node to verify a password without reading the whole channel.
            let password = channel.password.as_deref().unwrap_or("");
            let mut fields = json!({"id": id.as_str(), "p": password});
            // How its peers changed, for the nodes following them: published with the version
            // it replaces, which the compare-and-set guarantees is the one read.
            let change = before.map(|b| {
                let change = PeersChange::between(b.channel(), channel);
                fields["c"] = json!(replica::change_line(id, b.version(), &change));
                (b.version().to_owned(), change)
            });
            written = Some(Written {
                raw: Arc::from(doc.as_str()),
                change,
            });
            plan.docs.push(doc);
            fields["a"] = json!(plan.docs.len() + 1);
            plan.write("putv", keys.channel(id), fields);
        }
        let mine = keys.node_sockets(&self.inner.node);
        if before.is_none() {
            let k = plan.key(keys.channel_index());
            plan.cap = Some(json!({"k": k, "max": self.inner.limits.max_channels}));
            plan.write(
                "zadd",
                keys.channel_index(),
                json!({"s": format!("{:.6}", channel.created_at), "m": id.as_str()}),
            );
            if let Some(addr) = channel.owner_addr {
                let k = plan.key(keys.addr(&addr));
                plan.addr = Some(json!({"k": k, "max": self.inner.limits.max_channels_per_addr}));
                plan.write("incr", keys.addr(&addr), json!({"n": 1}));
            }
        }
        // The broadcaster: a new channel's, one that resumed or took over, or one that dropped
        // (the channel is then held for it and indexed under nobody).
        let present = channel.present_broadcaster();
        let previous = before.and_then(|b| b.channel().present_broadcaster());
        if present != previous {
            if let Some(gone) = previous {
                plan.write("srem", keys.broadcasting(gone), json!({"m": id.as_str()}));
            }
            if let Some(now_present) = present {
                // Only the caller ever becomes a broadcaster, and the caller is this node's.
                plan.write(
                    "sadd",
                    keys.broadcasting(now_present),
                    json!({"m": id.as_str()}),
                );
                plan.write("sadd", mine.clone(), json!({"m": now_present.as_str()}));
            }
        }
        let empty = HashMap::new();
        let old = before.map_or(&empty, |b| &b.channel().viewers);
        for viewer in channel.viewers.keys().filter(|v| !old.contains_key(*v)) {
            plan.write("sadd", keys.watching(viewer), json!({"m": id.as_str()}));
            // Only the caller ever joins: this node's, or another's that forwarded its join
            // here; or a waiter a new channel took in, which its own node listed when it began
            // to wait.
            if !waiters.contains(viewer) {
                let home = homes.get(viewer).map(|node| {
                    let k = plan.key(keys.heartbeat(node));
                    if !plan.alive.contains(&k) {
                        plan.alive.push(k);
                    }
                    keys.node_sockets(node)
                });
                let list = home.unwrap_or_else(|| mine.clone());
                plan.write("sadd", list, json!({"m": viewer.as_str()}));
            }
        }
        for viewer in old.keys().filter(|v| !channel.viewers.contains_key(*v)) {
            plan.write("srem", keys.watching(viewer), json!({"m": id.as_str()}));
        }
        let wait = channel.next_deadline();
        if wait != before.and_then(|b| b.wait) {
            match wait {
                Some(deadline) => plan.write(
                    "zadd",
                    keys.waits(),
                    json!({"s": deadline.as_millis().to_string(), "m": id.as_str()}),
                ),
                None => plan.write("zrem", keys.waits(), json!({"m": id.as_str()})),
            }
        }
        Ok(written)
    }

    async fn channel_count(&self) -> Result<usize, ChannelError> {
        self.inner
            .client
            .zcard(self.keys().channel_index())
            .await
            .map_err(|e| self.unavailable(e))
    }

    pub(crate) async fn join_as_broadcaster(
        &self,
        sid: &SocketId,
        channel_id: Option<&str>,
        request: BroadcastRequest<'_>,
    ) -> Result<BroadcastStarted, ChannelError> {
        let addr = request.addr;
        let turn = match channel_id {
            Some(id) => Some(self.turn(&ChannelId::from(id)).await),
            None => None,
        };
        let started = retrying!(self, {
            let id = channel_id.map_or_else(random_channel_id, ChannelId::from);
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            if channel_id.is_none() && txn.state.channels.contains_key(&id) {
                return Ok(None); // a generated id that is taken: draw another
            }
            let membership = self.membership(sid).await?;
            txn.state.sockets.insert(sid.clone(), membership);
            if let Some(addr) = addr {
                let count: Option<usize> = self
                    .inner
                    .client
                    .get(self.keys().addr(&addr))
                    .await
                    .map_err(|e| self.unavailable(e))?;
                txn.state.by_addr.insert(addr, count.unwrap_or(0));
            }
            txn.state.total_channels = Some(self.channel_count().await?);
            if !txn.state.channels.contains_key(&id) {
                // A new channel takes in whoever waited for its id.
                self.load_lobbies(&mut txn, std::slice::from_ref(&id))
                    .await?;
            }
            let started = txn.state.join_as_broadcaster(
                &self.inner.limits,
                sid,
                id,
                request.clone(),
                Moment::now(),
            )?;
            Ok(self.commit(txn).await?.map(|()| started))
        })
        .inspect(|started| self.inner.replica.joined(sid, &started.channel_id, true))?;
        drop(turn);
        // Asked of Redis, not of this node's memory of a former owner (the channel may be
        // new under an old id).
        super::lock(&self.inner.owners).forget_remote(&started.channel_id);
        // The broadcaster's node owns its channel, unless a live node already does (one that
        // held it across a resume on another node). Best effort: without the lease now, the
        // first operation that needs an owner takes it.
        if let Err(e) = self.route(&started.channel_id).await {
            tracing::debug!(channel = %started.channel_id, "could not take a new channel's lease: {e}");
        }
        Ok(started)
    }

    /// How the channels of the whole deployment stand (loads every channel: for `/metrics`).
    pub async fn census(&self) -> Result<Census, ChannelError> {
        let ids = self.all_channel_ids().await?;
        Ok(self.begin(&ids).await?.state.census())
    }

    pub async fn wait_for(
        &self,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<bool, ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            self.load_lobbies(&mut txn, std::slice::from_ref(&id))
                .await?;
            let membership = self.membership(sid).await?;
            txn.state.sockets.insert(sid.clone(), membership);
            let waiting = txn
                .state
                .wait_for(&self.inner.limits, sid, &id, relay, Moment::now())?;
            Ok(self.commit(txn).await?.map(|()| waiting))
        })
    }

    /// Reads the hash kept beside the document (one small read: every viewer's join asks,
    /// and a crowd's would otherwise read the whole channel each); a document written by an
    /// earlier release has none, and is read instead.
    pub async fn password_of(&self, channel_id: &str) -> Result<Option<String>, ChannelError> {
        let id = ChannelId::from(channel_id);
        let stored: Option<String> = self
            .inner
            .client
            .hget(self.keys().channel(&id), "p")
            .await
            .map_err(|e| self.unavailable(e))?;
        match stored {
            Some(hash) => Ok(Some(hash).filter(|h| !h.is_empty())),
            None => Ok(self
                .fetch(&id)
                .await?
                .and_then(|kept| kept.channel.password.clone())),
        }
    }

    pub async fn list(&self) -> Result<Vec<ChannelSummary>, ChannelError> {
        let ids = self.all_channel_ids().await?;
        let txn = self.begin(&ids).await?;
        Ok(txn.state.list(Moment::now()))
    }

    async fn all_channel_ids(&self) -> Result<Vec<ChannelId>, ChannelError> {
        let ids: Vec<String> = self
            .inner
            .client
            .zrange(self.keys().channel_index(), 0, -1, None, false, None, false)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(ids.into_iter().map(ChannelId::from).collect())
    }

    pub(crate) async fn join_as_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        request: ViewerRequest<'_>,
    ) -> Result<ViewerJoined, ChannelError> {
        let id = ChannelId::from(channel_id);
        let op = ChannelOp::Join {
            sid: sid.clone(),
            request: OwnedViewerRequest::from(request),
        };
        self.on_owner(&id, op)
            .await
            .and_then(Done::joined)
            .inspect(|_| self.inner.replica.joined(sid, &id, false))
    }

    /// A viewer's report about its place in the relay tree, in its channel's batch.
    pub(crate) async fn tree_op(
        &self,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        let id = ChannelId::from(channel_id);
        let op = ChannelOp::Tree {
            sid: sid.clone(),
            report: op,
        };
        self.on_owner(&id, op).await.and_then(Done::tree)
    }

    /// Every node runs this; the compare-and-set lets exactly one of them act on each wait.
    pub async fn expire_waits(&self, now: Moment) -> Expired {
        let due: Result<Vec<String>, _> = self
            .inner
            .client
            .zrangebyscore(self.keys().waits(), 0, now.as_millis() as f64, false, None)
            .await;
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                self.unavailable(e);
                return Expired::default();
            }
        };
        let mut expired = Expired::default();
        for id in due.into_iter().map(ChannelId::from) {
            let result = retrying!(self, {
                let mut txn = self.begin(std::slice::from_ref(&id)).await?;
                if !txn.state.channels.contains_key(&id) {
                    // Closed meanwhile: drop the stale wait entry with it.
                    txn.extra
                        .write("zrem", self.keys().waits(), json!({"m": id.as_str()}));
                }
                let moved = txn.state.expire_waits(now);
                Ok(self.commit(txn).await?.map(|()| moved))
            });
            match result {
                Ok(done) => {
                    expired.tree.extend(done.tree);
                    expired.abandoned.extend(done.abandoned);
                }
                Err(e) => tracing::debug!(channel = %id, "wait expiry deferred: {e}"),
            }
        }
        expired
    }

    pub async fn authorize_relay(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<SocketId, ChannelError> {
        if let Some(target) = self.authorize_from_replica(sender, target, activity) {
            return Ok(target);
        }
        if let Some(found) = self.authorize_from_index(sender, target, activity).await? {
            return Ok(found);
        }
        if let Some(found) = self.authorize_from_stored(sender, target, activity).await? {
            return Ok(found);
        }
        retrying!(self, {
            let mut txn = self.begin_for(sender).await?;
            let now = Moment::now();
            let found = txn
                .state
                .authorize_relay(sender, target, Activity::Keep, now)?;
            let step = self.activity_step();
            let stale = txn
                .state
                .channels
                .values()
                .any(|c| now.duration_since(c.last_activity) >= step);
            if activity == Activity::Keep || !stale {
                return Ok(Some(found));
            }
            txn.state.authorize_relay(sender, target, activity, now)?;
            Ok(self.commit(txn).await?.map(|()| found))
        })
    }

    /// A relay between a broadcaster and one of its viewers, either way, authorized from the
    /// socket indexes alone: a channel both in the broadcaster's `sock:<sid>:b` (which holds a
    /// channel only while its broadcaster is connected) and in the viewer's `sock:<sid>:w`.
    /// The commit script writes those with the documents, so this is as current as the
    /// document, in one round trip whatever the channel's size (during a crowd's arrival the
    /// document changes with every batch, and reading it again for each viewer's offer was
    /// most of a node's work). `None`: not such peers (the tree's links need the document), or
    /// an offer or answer whose channel's activity may be due to move on.
    async fn authorize_from_index(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<Option<SocketId>, ChannelError> {
        if !SocketId::has_public_shape(target) {
            // No socket's name: the authoritative path refuses it without key names built
            // from whatever the client sent.
            return Ok(None);
        }
        let named = SocketId::named_by_client(target);
        let keys = self.keys();
        let client = &self.inner.client;
        let (sender_broadcasts, sender_watches): (Vec<String>, Vec<String>) = tokio::try_join!(
            client.sinter(vec![keys.broadcasting(sender), keys.watching(&named)]),
            client.sinter(vec![keys.watching(sender), keys.broadcasting(&named)]),
        )
        .map_err(|e| self.unavailable(e))?;
        let Some(shared) = sender_broadcasts.first().or(sender_watches.first()) else {
            return Ok(None);
        };
        if activity == Activity::Refresh {
            // Activity only grows: any stored version that showed it recent enough is proof
            // that it is; without one, the authoritative path decides and writes it.
            let recent = self
                .inner
                .replica
                .last_activity(&ChannelId::from(shared.as_str()))
                .is_some_and(|seen| Moment::now().duration_since(seen) < self.activity_step());
            if !recent {
                return Ok(None);
            }
        }
        Ok(Some(SocketId::from_stored(target)))
    }

    /// A relay authorized from what Redis holds now (the sender's memberships, each channel at
    /// its stored version, the kept copy where it is that version), without copying a channel:
    /// during a crowd's arrival the replica is rarely current, and a copy per relay cost
    /// O(viewers) each. `None` when the relay must write the channel's activity (the
    /// transaction below does that) or is refused (the transaction gives the refusal).
    async fn authorize_from_stored(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<Option<SocketId>, ChannelError> {
        let membership = self.membership(sender).await?;
        let step = self.activity_step();
        let now = Moment::now();
        for id in membership.broadcasting.iter().chain(&membership.watching) {
            let Some(kept) = self.fetch(id).await? else {
                continue;
            };
            if let Some(found) = kept.channel.relay_target(sender, target) {
                let due = now.duration_since(kept.channel.last_activity) >= step;
                return Ok((activity == Activity::Keep || !due).then_some(found));
            }
        }
        Ok(None)
    }

    /// A relay authorized by the peers this node follows (see `replica.rs`), without Redis;
    /// `None` sends it the authoritative way (nothing followed here allows it, or an offer or
    /// answer whose channel's stored activity is due to move on).
    fn authorize_from_replica(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Option<SocketId> {
        let (found, last_activity) = self.inner.replica.relay(sender, target)?;
        let due = Moment::now().duration_since(last_activity) >= self.activity_step();
        (activity == Activity::Keep || !due).then_some(found)
    }

    /// How many viewers the channels `sid` broadcasts have, as this node last read or wrote
    /// them (a bound for its event queue, not a rule).
    pub fn audience(&self, sid: &SocketId) -> usize {
        let replica = &self.inner.replica;
        replica
            .broadcasts_of(sid)
            .iter()
            .map(|id| replica.audience(id))
            .sum()
    }

    /// How far a channel's stored activity may lag: an offer or answer keeps its channel from
    /// idling out, but writing the whole channel for each one would make every negotiation
    /// contend with every join, so it moves on in steps (a tenth of the TTL, at most a second).
    fn activity_step(&self) -> Duration {
        (self.inner.limits.idle_ttl / 10).min(Duration::from_secs(1))
    }

    pub async fn set_alias(
        &self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            txn.state.set_alias(sid, channel_id, alias)?;
            self.commit(txn).await
        })
    }

    /// `send_message`. Once every node runs forwarded chat (see [`ClusterRegistry::peers_at_level`])
    /// and the transport said how to send it, the channel's owner runs it ([`Self::run_chat`])
    /// and sends it itself: the delivery comes back `told`. Until then, this node.
    pub async fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.chat_op(sid, channel_id, message, false).await
    }

    /// `broadcaster_message`: as [`Self::chat`].
    pub async fn broadcaster_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.chat_op(sid, channel_id, message, true).await
    }

    async fn chat_op(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
        from_broadcaster: bool,
    ) -> Result<ChatDelivery, ChannelError> {
        let id = ChannelId::from(channel_id);
        let op = ChannelOp::Chat {
            sid: sid.clone(),
            message: message.to_owned(),
            from_broadcaster,
        };
        let by_owner = self
            .inner
            .owners_chat
            .load(std::sync::atomic::Ordering::Acquire)
            && self.inner.chat_renderer.get().is_some()
            && self.inner.sockets.get().is_some();
        if by_owner {
            return self.on_owner(&id, op).await.and_then(Done::chat);
        }
        let kept = self.fetch(&id).await?;
        let delivery = chat_rule(kept.as_ref().map(|k| &k.channel), &op, &self.inner.pace)?;
        self.remember(channel_id, &[&delivery.message]).await?;
        Ok(delivery)
    }

    /// Runs a chat message on the channel's owner: in this node's turn for the channel (not
    /// while a batch of the channel runs), its rule on the channel as stored, the message kept
    /// in the history, then sent to every member. Messages that arrive while the channel's
    /// chat runs wait and run next, together: one read of the channel and one write of the
    /// history for all, then all sent in arrival order, before the next messages run: one set
    /// of events for this node's members and every other node's ([`Self::emit_everywhere`]),
    /// so every member reads one order.
    /// Not in the channel's batches: a rerun batch would run slow mode's rule twice.
    async fn run_chat(
        &self,
        id: &ChannelId,
        op: ChannelOp,
        deadline: Option<Moment>,
    ) -> Result<Done, ChannelError> {
        let (reply, outcome) = oneshot::channel();
        let first = {
            let mut chats = super::lock(&self.inner.chats);
            let queue = chats.entry(id.clone()).or_default();
            queue.push(QueuedChat {
                op,
                deadline,
                reply,
            });
            queue.len() == 1
        };
        if first {
            let this = self.clone();
            let id = id.clone();
            drop(tokio::spawn(async move { this.run_chats(&id).await }));
        }
        outcome.await.unwrap_or(Err(ChannelError::Unavailable))
    }

    /// Runs a channel's queued chat until none is left (see [`Self::run_chat`]).
    async fn run_chats(&self, id: &ChannelId) {
        loop {
            let turn = self.turn(id).await;
            let queued = {
                let mut chats = super::lock(&self.inner.chats);
                match chats.get_mut(id) {
                    Some(queue) if !queue.is_empty() => std::mem::take(queue),
                    _ => {
                        chats.remove(id);
                        return;
                    }
                }
            };
            self.run_chat_batch(id, queued).await;
            drop(turn);
        }
    }

    /// One read, each message's rule in arrival order, one write of the history, then each
    /// sent in order and its sender answered. Nothing is kept or sent once its sender may have
    /// given up on it (its client told `Server unavailable`) or another node may have taken
    /// the channel over (and run it again there): checked before each step that cannot be
    /// undone. (A channel that does not exist has no lease: its refusal comes from the rule.)
    async fn run_chat_batch(&self, id: &ChannelId, queued: Vec<QueuedChat>) {
        let in_time = |deadline: Option<Moment>| deadline.is_none_or(|d| Moment::now() <= d);
        let kept = match self.fetch(id).await {
            Ok(kept) => kept,
            Err(e) => {
                for chat in queued {
                    let _ = chat.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut accepted: Vec<(ChatDelivery, oneshot::Sender<Result<Done, ChannelError>>)> =
            Vec::new();
        for chat in queued {
            let outcome = if in_time(chat.deadline) {
                chat_rule(
                    kept.as_ref().map(|k| &k.channel),
                    &chat.op,
                    &self.inner.pace,
                )
            } else {
                Err(ChannelError::Unavailable)
            };
            match outcome {
                Ok(delivery) if self.fence(id).is_some() => accepted.push((delivery, chat.reply)),
                Ok(_) => {
                    let _ = chat.reply.send(Err(ChannelError::Unavailable));
                }
                Err(e) => {
                    let _ = chat.reply.send(Err(e));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let messages: Vec<&ChatMessage> = accepted.iter().map(|(d, _)| &d.message).collect();
        if let Err(e) = self.remember(id.as_str(), &messages).await {
            for (_, reply) in accepted {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let told = self.inner.sockets.get().is_some();
        if let Some(render) = self.inner.chat_renderer.get().filter(|_| told) {
            if self.fence(id).is_none() {
                for (_, reply) in accepted {
                    let _ = reply.send(Err(ChannelError::Unavailable));
                }
                return;
            }
            let mut emits = Emits::default();
            for (delivery, _) in &accepted {
                render(delivery, &mut emits);
            }
            self.emit_everywhere(emits).await;
        }
        for (mut delivery, reply) in accepted {
            if told {
                // Its sender's node needs the outcome, not the channel's member list.
                delivery.told = true;
                delivery.plain.clear();
                delivery.with_ids.clear();
            }
            let _ = reply.send(Ok(Done::Chat(delivery)));
        }
    }

    /// Keeps messages in their channel's history list, oldest first (see [`REMEMBER`]).
    async fn remember(
        &self,
        channel_id: &str,
        messages: &[&ChatMessage],
    ) -> Result<(), ChannelError> {
        let limit = self.inner.limits.chat_history;
        if limit == 0 || messages.is_empty() {
            return Ok(());
        }
        let id = ChannelId::from(channel_id);
        let mut args = vec![limit.to_string()];
        for message in messages {
            args.push(serde_json::to_string(message).map_err(|e| {
                tracing::error!("cannot encode a chat message: {e}");
                ChannelError::Unavailable
            })?);
        }
        let keys = vec![self.keys().channel(&id), self.keys().chat_history(&id)];
        let _: i64 = self
            .inner
            .client
            .eval(REMEMBER, keys, args)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    /// The channel's last chat messages, oldest first; unreadable entries are skipped.
    pub async fn chat_history(&self, channel_id: &str) -> Result<Vec<ChatMessage>, ChannelError> {
        if self.inner.limits.chat_history == 0 {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = self
            .inner
            .client
            .lrange(
                self.keys().chat_history(&ChannelId::from(channel_id)),
                0,
                -1,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(stored
            .iter()
            .filter_map(|m| serde_json::from_str(m).ok())
            .collect())
    }

    pub async fn create_invite(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<u64, ChannelError> {
        let txn = self.begin(&[ChannelId::from(channel_id)]).await?;
        txn.state.create_invite(sid, channel_id)
    }

    /// Bumps the channel's invitation generation in its document, so every node refuses the
    /// older invitations from then on.
    pub async fn rotate_invites(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<u64, ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            let generation = txn.state.rotate_invites(sid, channel_id, Moment::now())?;
            Ok(self.commit(txn).await?.map(|()| generation))
        })
    }

    pub async fn list_viewers(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<ViewerEntry>, ChannelError> {
        let mut txn = self.begin(&[ChannelId::from(channel_id)]).await?;
        txn.state.list_viewers(sid, channel_id)
    }

    pub async fn remove_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
    ) -> Result<Removal, ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            let removal = txn
                .state
                .remove_viewer(sid, channel_id, viewer, ban, Moment::now())?;
            Ok(self.commit(txn).await?.map(|()| removal))
        })
    }

    pub async fn unban_all(&self, sid: &SocketId, channel_id: &str) -> Result<(), ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            txn.state.unban_all(sid, channel_id)?;
            self.commit(txn).await
        })
    }

    pub async fn mute_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        muted: bool,
    ) -> Result<(), ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            txn.state.mute_viewer(sid, channel_id, viewer, muted)?;
            self.commit(txn).await
        })
    }

    /// Checks the caller may, then removes the message from the history list (see
    /// [`FORGET`]); the document does not change.
    pub async fn remove_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Told, ChannelError> {
        let id = ChannelId::from(channel_id);
        let mut txn = self.begin(std::slice::from_ref(&id)).await?;
        let told = txn.state.remove_message(sid, channel_id, message_id)?;
        let _: i64 = self
            .inner
            .client
            .eval(
                FORGET,
                vec![self.keys().chat_history(&id)],
                vec![message_id.to_owned()],
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(told)
    }

    pub async fn set_chat_settings(
        &self,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, Told), ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            let told = txn.state.set_chat_settings(sid, channel_id, change)?;
            Ok(self.commit(txn).await?.map(|()| told))
        })
    }

    pub async fn stop_broadcast(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<BroadcastStopped, ChannelError> {
        let id = ChannelId::from(channel_id);
        let _turn = self.turn(&id).await;
        retrying!(self, {
            let mut txn = self.begin(std::slice::from_ref(&id)).await?;
            let stopped = txn.state.stop_broadcast(sid, channel_id, Moment::now())?;
            Ok(self.commit(txn).await?.map(|()| stopped))
        })
    }

    /// Removes a socket of this node everywhere.
    pub async fn disconnect(&self, sid: &SocketId) -> Departure {
        self.remove_socket(sid, &self.inner.node).await
    }

    /// Removes a socket of `node` (this one, or a dead one being reaped) everywhere.
    pub async fn remove_socket(&self, sid: &SocketId, node: &NodeId) -> Departure {
        if *node == self.inner.node {
            self.inner.replica.gone(sid);
        }
        // Its channels' turns, in one order everywhere so that no two removals wait on each
        // other (a crowd leaving one channel at once would otherwise mostly conflict).
        let mut turns = Vec::new();
        if let Ok(membership) = self.membership(sid).await {
            if let Some(departure) = self.leave_one(sid, node, &membership).await {
                return departure;
            }
            let mut ids: Vec<ChannelId> = membership
                .broadcasting
                .into_iter()
                .chain(membership.watching)
                .chain(membership.waiting)
                .collect();
            ids.sort();
            ids.dedup();
            for id in &ids {
                turns.push(self.turn(id).await);
            }
        }
        let result = retrying!(self, {
            let mut txn = self.begin_for(sid).await?;
            let waits: Vec<ChannelId> = txn
                .state
                .sockets
                .get(sid)
                .map(|m| m.waiting.iter().cloned().collect())
                .unwrap_or_default();
            if !waits.is_empty() {
                self.load_lobbies(&mut txn, &waits).await?;
            }
            let grace = self.inner.limits.resume_grace;
            let departure = txn.state.disconnect(sid, grace, Moment::now());
            txn.extra.write(
                "srem",
                self.keys().node_sockets(node),
                json!({"m": sid.as_str()}),
            );
            Ok(self.commit(txn).await?.map(|()| departure))
        });
        result.unwrap_or_else(|e| {
            // Its entries stay until a retry or, if this node dies, the reaper; nothing is lost
            // for its peers but a late notice.
            tracing::warn!(sid = %sid, "could not remove a departed socket from Redis: {e}");
            Departure::default()
        })
    }

    /// The departure of a socket that only watched one channel (a crowd's every viewer), in
    /// that channel's next batch: a crowd leaving at once costs a few writes, not one each.
    /// `None`: it had other parts (broadcaster, waiting room, several channels), or the batch
    /// could not be stored; the full removal then runs.
    async fn leave_one(
        &self,
        sid: &SocketId,
        node: &NodeId,
        membership: &Membership,
    ) -> Option<Departure> {
        if !membership.broadcasting.is_empty()
            || !membership.waiting.is_empty()
            || membership.watching.len() != 1
        {
            return None;
        }
        let id = membership.watching.iter().next()?.clone();
        let op = ChannelOp::Leave { sid: sid.clone() };
        let departure = self.on_owner(&id, op).await.and_then(Done::left).ok()?;
        // Its membership went with the batch; the node's list of its sockets is only for the
        // reaper, which finds nothing left to do should this node die before this.
        if let Err(e) = self
            .inner
            .client
            .srem::<(), _, _>(self.keys().node_sockets(node), sid.as_str())
            .await
        {
            tracing::debug!(sid = %sid, "could not drop a departed socket from its node's list: {e}");
        }
        Some(departure)
    }

    pub async fn sweep(&self, now: Moment) -> Vec<ClosedChannel> {
        self.forget_idle_queues();
        let ttl = self.inner.limits.idle_ttl;
        let candidates = match self.all_channel_ids().await {
            Ok(ids) => match self.begin(&ids).await {
                Ok(txn) => txn
                    .state
                    .channels
                    .values()
                    .filter(|c| c.viewers.is_empty() && now.duration_since(c.last_activity) >= ttl)
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>(),
                Err(_) => return Vec::new(),
            },
            Err(_) => return Vec::new(),
        };
        let mut closed = Vec::new();
        for id in candidates {
            let result = retrying!(self, {
                let mut txn = self.begin(std::slice::from_ref(&id)).await?;
                let reaped = txn.state.sweep(ttl, now);
                Ok(self.commit(txn).await?.map(|()| reaped))
            });
            if let Ok(reaped) = result {
                closed.extend(reaped);
            }
        }
        closed
    }

    pub async fn stats(&self) -> Stats {
        let channels = self.channel_count().await.unwrap_or(0);
        let indexed_sockets: usize = self
            .inner
            .client
            .scard(self.keys().node_sockets(&self.inner.node))
            .await
            .unwrap_or(0);
        Stats {
            channels,
            indexed_sockets,
            indexed_addresses: 0,
        }
    }
}

/// What an operation remembers of a channel it read, to plan its writes.
/// What a node does with what it hears on its subscriber connection.
struct NodeEar {
    feed: String,
    inbox: String,
    emits: String,
    registry: ClusterRegistry,
    /// Told the first time the channels are subscribed.
    subscribed: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl hearing::Ear for NodeEar {
    async fn heard(&self, channel: &str, text: &str) {
        let inner = &self.registry.inner;
        if channel == self.feed {
            inner.replica.heard(text);
        } else if channel == self.inbox {
            forward::received(text, &inner.waiting, |request| {
                self.registry.serve(request);
            });
        } else if channel == self.emits
            && let (Some(body), Some(sockets)) =
                (emits::heard(text, &inner.node), inner.sockets.get())
        {
            match body {
                Body::Events(emits) => sockets.emit(emits, Reach::Here).await,
                Body::Relay(relay) if sockets.holds(&relay.to) => {
                    let refusal = self.registry.recheck_relay(&relay.from, &relay.to).await;
                    sockets.relay(relay, refusal).await;
                }
                Body::Relay(_) => {}
            }
        }
    }

    fn lagged(&self, missed: u64) {
        // Forwarded operations lost time out at their senders, which ask again; the replica
        // may have missed announcements, so it starts over.
        tracing::warn!(
            missed,
            "pub/sub lagged: forwarded operations, announcements or events lost"
        );
        self.registry.inner.replica.interrupted();
        self.registry.inner.replica.resumed();
    }

    fn down(&self, reason: String) {
        self.registry.inner.replica.down(&reason);
        self.registry.inner.health.inbox_down(reason);
    }

    fn up(&self) {
        self.registry.inner.replica.resumed();
        self.registry.inner.health.inbox_up();
        if let Some(subscribed) = super::lock(&self.subscribed).take() {
            let _ = subscribed.send(());
        }
    }
}

/// Adds a chat message's events for its channel's members to a run's events: the transport's
/// payloads, given by the signaling layer ([`ClusterRegistry::render_chat_with`]), called by
/// the channel's owner for each message of one run of the channel's chat.
pub type ChatRenderer = Arc<dyn Fn(&ChatDelivery, &mut Emits) + Send + Sync>;

/// Relay-tree events as the transport's events (see [`ClusterRegistry::render_tree_with`]).
pub type TreeRenderer = Arc<dyn Fn(&[TreeEvent], &mut Emits) + Send + Sync>;

/// A chat operation's rule on its channel as stored (`None`: no such channel): a viewer's
/// message or the broadcaster's.
fn chat_rule(
    channel: Option<&Channel>,
    op: &ChannelOp,
    pace: &ChatPace,
) -> Result<ChatDelivery, ChannelError> {
    let channel = channel.ok_or(ChannelError::NotFound(None))?;
    match op {
        ChannelOp::Chat {
            sid,
            message,
            from_broadcaster: false,
        } => channel.chat(sid, message, unix_now(), pace),
        ChannelOp::Chat {
            sid,
            message,
            from_broadcaster: true,
        } => channel.broadcaster_message(sid, message, unix_now()),
        other => {
            tracing::error!(?other, "not a chat operation");
            Err(ChannelError::Unavailable)
        }
    }
}

/// Whether stored version `kept` is `seen` or newer (versions are decimal numbers that only
/// grow; one that is not, from an older release, is only ever equal to itself).
fn version_at_least(kept: &str, seen: &str) -> bool {
    match (version_number(kept), version_number(seen)) {
        (Some(kept), Some(seen)) => kept >= seen,
        _ => kept == seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lobbies_read_both_layouts() {
        let old = parse_lobby(r#"["a","b"]"#);
        assert_eq!(old.len(), 2);
        assert!(!old[&SocketId::from("a")].relay);
        let new = parse_lobby(r#"[{"id":"a","relay":true,"since":1500}]"#);
        assert_eq!(
            new[&SocketId::from("a")],
            Waiter {
                relay: true,
                since: Moment::from_millis(1500)
            }
        );
        assert!(parse_lobby("not json").is_empty());
    }
}
