//! The channel registry: which channels exist, who broadcasts and who watches each, and the
//! per-socket index that keeps every operation proportional to the caller's own channels.
//!
//! Pure domain logic: no socket types, no I/O. Handlers call it and turn its results into emits,
//! so every rule of the protocol that concerns state lives here and is unit-tested here.
//!
//! Channels are authoritative state, so they live in plain maps rather than a TTL cache such as
//! mini-moka: such a cache drops an expired entry without telling anyone (it has no eviction
//! listener) and, when full, silently refuses new ones, while PROTOCOL.md wants a refused channel
//! answered ("Server is at capacity"), a live one kept forever, and a reaped one announced with
//! `channel_expired`. Expiry is therefore the registry's own sweep ([`Registry::sweep`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::clock::Moment;
use super::errors::ChannelError;
use super::secrets;
use super::tree::{Feeder, Notice, Tree, TreeLimits};

pub use super::ids::{ChannelId, SocketId};

/// Length of generated channel ids, as the earlier server made them.
const GENERATED_ID_LEN: usize = 8;
const GENERATED_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Limits the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// New channels beyond this count are refused; existing ones are never evicted.
    pub max_channels: usize,
    /// A channel that is not live and has seen no activity for this long is reaped.
    pub idle_ttl: Duration,
    /// Channels one socket may broadcast at once.
    pub max_channels_per_socket: usize,
    /// Channels broadcast from one client address at once.
    pub max_channels_per_addr: usize,
    /// The relay tree's limits (fan-out 0 turns it off).
    pub tree: TreeLimits,
    /// How long a resumable channel is held after its broadcaster's connection drops.
    pub resume_grace: Duration,
    /// Viewers that may wait for one channel id that has no broadcaster yet.
    pub max_waiting_per_channel: usize,
    /// Viewers that may wait in all of the waiting room.
    pub max_waiting: usize,
}

/// The in-memory registry: one process holds every channel (the default, single-node mode).
/// Cheap to clone.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    limits: RegistryLimits,
    /// A std mutex, not tokio's: every operation is short and never awaits while holding it,
    /// and one lock over channels *and* the socket index makes each event atomic, which is what
    /// keeps simultaneous disconnects from leaking channels or index entries.
    state: Mutex<State>,
}

/// The registry's data and every rule that changes it.
///
/// In memory it holds everything. In cluster mode a node loads only the part an operation
/// touches (its channels, the caller's membership, the cluster-wide counts), runs the same
/// operation on it, and writes back what changed atomically; so each rule lives here once.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) channels: HashMap<ChannelId, Channel>,
    /// Channels where some viewer waits for a feeder, by its deadline.
    pub(crate) waits: HashMap<ChannelId, Moment>,
    pub(crate) sockets: HashMap<SocketId, Membership>,
    /// Channels per broadcaster address (entries at zero are removed).
    pub(crate) by_addr: HashMap<IpAddr, usize>,
    /// For a partial state: how many channels exist in all (the capacity check's count).
    pub(crate) total_channels: Option<usize>,
    /// Viewers waiting for a channel that has no broadcaster yet (the waiting room).
    pub(crate) lobbies: HashMap<ChannelId, HashSet<SocketId>>,
    /// How many wait in all lobbies (in a partial state: as counted when it was loaded).
    pub(crate) waiting_total: usize,
}

/// The channels one socket takes part in; the index that bounds disconnect and relay work.
#[derive(Default, Clone, Debug, PartialEq)]
pub(crate) struct Membership {
    pub(crate) broadcasting: HashSet<ChannelId>,
    pub(crate) watching: HashSet<ChannelId>,
    /// Channels it waits for in the waiting room.
    pub(crate) waiting: HashSet<ChannelId>,
}

impl Membership {
    fn is_empty(&self) -> bool {
        self.broadcasting.is_empty() && self.watching.is_empty() && self.waiting.is_empty()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Channel {
    pub(crate) id: ChannelId,
    pub(crate) broadcaster: SocketId,
    /// Where the broadcaster connects from, when known: counted against its address's limit.
    pub(crate) owner_addr: Option<IpAddr>,
    pub(crate) created_at: f64,
    pub(crate) last_activity: Moment,
    /// Viewer socket id → alias (if set).
    pub(crate) viewers: HashMap<SocketId, Option<Arc<str>>>,
    /// Between `stop_broadcast` and going live again: viewers who join meanwhile are told.
    stopped: bool,
    /// Who feeds whom (PROTOCOL.md "Relay tree"); every viewer is in it.
    pub(crate) tree: Tree,
    /// Digest of the broadcaster's current resume token (see `secrets`).
    #[serde(default)]
    pub(crate) token: String,
    /// The broadcaster asked for its channel to be held when its connection drops.
    #[serde(default)]
    pub(crate) resumable: bool,
    /// Set while the broadcaster's connection is gone: the channel is held for it until then.
    #[serde(default)]
    pub(crate) away_until: Option<Moment>,
    /// Private channel: argon2 hash of its password (unlisted; viewers must give it).
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// Digests of the resume tokens of viewers that asked for resuming.
    #[serde(default)]
    pub(crate) viewer_tokens: HashMap<SocketId, String>,
    /// Places of departed resumable viewers, by token digest, until their grace ends. Nobody
    /// is told when one ends: they are pruned by the channel's next change, and go with it.
    #[serde(default)]
    pub(crate) held_viewers: HashMap<String, HeldViewer>,
}

/// What a resumable viewer gets back when it returns within the grace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldViewer {
    alias: Option<Arc<str>>,
    until: Moment,
}

impl Channel {
    /// The broadcaster while it is connected (not while the channel waits for it to resume).
    pub(crate) fn present_broadcaster(&self) -> Option<&SocketId> {
        match self.away_until {
            None => Some(&self.broadcaster),
            Some(_) => None,
        }
    }

    /// The channel's next deadline: a relay-tree wait or the end of its broadcaster's grace.
    pub(crate) fn next_deadline(&self) -> Option<Moment> {
        match (self.tree.next_deadline(), self.away_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Turns the tree's notices into addressed events (the broadcaster by its id), followed by
    /// the tree's figures for the broadcaster when they changed (`membership`: a viewer joined
    /// or left) and the channel uses the tree.
    fn address(&self, notices: Vec<Notice>, membership: bool, out: &mut Vec<TreeEvent>) {
        let changed = membership || !notices.is_empty();
        let id = |feeder: Feeder| match feeder {
            Feeder::Broadcaster => self.broadcaster.clone(),
            Feeder::Viewer(v) => v,
        };
        out.extend(notices.into_iter().map(|notice| match notice {
            Notice::Upstream {
                viewer,
                feeder,
                depth,
            } => TreeEvent::Upstream {
                channel_id: self.id.clone(),
                to: viewer,
                peer: id(feeder),
                depth,
            },
            Notice::DownstreamLeft { feeder, child } => TreeEvent::DownstreamLeft {
                channel_id: self.id.clone(),
                to: id(feeder),
                peer: child,
            },
        }));
        if changed && self.tree.in_use() {
            out.push(TreeEvent::Figures {
                channel_id: self.id.clone(),
                to: self.broadcaster.clone(),
                direct: self.tree.direct_count(),
                waiting: self.tree.waiting_count(),
                depths: self.tree.depths().to_vec(),
                version: self.tree.version(),
            });
        }
    }

    fn participants(&self) -> Vec<SocketId> {
        let mut all = Vec::with_capacity(self.viewers.len() + 1);
        all.push(self.broadcaster.clone());
        all.extend(
            self.viewers
                .keys()
                .filter(|v| **v != self.broadcaster)
                .cloned(),
        );
        all
    }
}

/// One entry of `channel_list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelSummary {
    pub id: ChannelId,
    pub broadcaster_sid: SocketId,
    pub created_at: f64,
    pub age_seconds: u64,
    pub last_activity: f64,
}

/// A relay-tree event for one socket: `upstream` or `downstream_left`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// Tell `to` to negotiate with `peer`, its feeder at `depth`.
    Upstream {
        channel_id: ChannelId,
        to: SocketId,
        peer: SocketId,
        depth: usize,
    },
    /// Tell the feeder `to` that its child `peer` left or was moved.
    DownstreamLeft {
        channel_id: ChannelId,
        to: SocketId,
        peer: SocketId,
    },
    /// `relay_tree` to the broadcaster: how its audience is fed.
    Figures {
        channel_id: ChannelId,
        to: SocketId,
        direct: usize,
        waiting: usize,
        depths: Vec<usize>,
        version: u64,
    },
}

/// Result of a successful `join_as_broadcaster`.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastStarted {
    pub channel_id: ChannelId,
    /// The channel is resumable: its `broadcaster_ready` carries the fresh token.
    pub resumable: bool,
    /// Viewers that waited for this channel id: they get `broadcaster_joined`.
    pub lobby: Vec<SocketId>,
    /// A takeover: the socket that broadcast until now (it is told it was replaced).
    pub replaced: Option<SocketId>,
    /// The broadcaster came back to its held channel (with its resume token).
    pub resumed: bool,
    /// Viewers already in the channel when its owner goes live again; they are told so.
    pub waiting_viewers: Vec<SocketId>,
    /// Their fresh feeders, sent after `broadcaster_available`.
    pub tree: Vec<TreeEvent>,
}

/// Result of a successful `join_as_viewer`.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerJoined {
    pub broadcaster: SocketId,
    pub viewer_count: usize,
    /// The broadcaster stopped and has not gone live again yet.
    pub stopped: bool,
    /// The broadcaster's connection dropped and the channel waits for it to resume.
    pub away: bool,
    /// The viewer asked for resuming: its join answer carries the fresh token.
    pub resumable: bool,
    /// The viewer's alias came back with its token.
    pub alias: Option<String>,
    /// The new viewer's feeder, when it joined the tree and one has room.
    pub tree: Vec<TreeEvent>,
}

/// Who must hear about a chat message, and under which name.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatDelivery {
    pub sender_name: String,
    pub recipients: Vec<SocketId>,
}

/// A channel whose broadcaster is gone or whose idle time ran out, and who was in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedChannel {
    pub channel_id: ChannelId,
    pub broadcaster: SocketId,
    pub viewers: Vec<SocketId>,
}

/// A channel held for its broadcaster, whose connection dropped: its viewers are told.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldChannel {
    pub channel_id: ChannelId,
    pub viewers: Vec<SocketId>,
}

/// What the passing of time ended: relay-tree waits and the grace of broadcasters that did not
/// come back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expired {
    pub tree: Vec<TreeEvent>,
    /// Closed: their viewers get `broadcaster_disconnected`.
    pub abandoned: Vec<ClosedChannel>,
}

/// A viewer left a channel; its broadcaster may want the new count, and the tree healed.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerLeft {
    pub channel_id: ChannelId,
    pub broadcaster: SocketId,
    pub viewer_count: usize,
    pub tree: Vec<TreeEvent>,
}

/// Everything a disconnect changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Departure {
    pub closed: Vec<ClosedChannel>,
    pub held: Vec<HeldChannel>,
    pub left: Vec<ViewerLeft>,
}

/// How the channels stand, for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// Channels with their broadcaster connected and streaming.
    pub live: usize,
    /// Channels whose broadcaster stopped (and may go live again).
    pub stopped: usize,
    /// Channels held for a broadcaster whose connection dropped.
    pub held: usize,
    /// Viewers of each channel.
    pub viewers: Vec<usize>,
    /// Depth of each channel's relay tree (1 = everyone fed by the broadcaster).
    pub tree_depths: Vec<usize>,
}

/// Whether a relay refreshes the channel's activity (offers and answers do, ICE does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Refresh,
    Keep,
}

/// Counts for the health endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegistryStats {
    pub channels: usize,
    pub indexed_sockets: usize,
    /// Client addresses that own at least one channel.
    pub indexed_addresses: usize,
}

impl MemoryRegistry {
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.shared.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update elsewhere; the maps are still structurally
        // valid, so keep serving rather than take the whole server down.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a channel owned by `sid` (connected from `addr`), or lets its owner go live again
    /// with `force`.
    pub fn join_as_broadcaster(
        &self,
        sid: &SocketId,
        addr: Option<IpAddr>,
        channel_id: Option<&str>,
        force: bool,
        relay: bool,
    ) -> Result<BroadcastStarted, ChannelError> {
        let request = BroadcastRequest {
            addr,
            force,
            relay,
            resumable: false,
            presented: None,
            fresh: "",
            password: None,
        };
        self.start_broadcast(sid, channel_id, request)
    }

    /// `join_as_broadcaster` with every option (resume, takeover, private channels).
    pub(crate) fn start_broadcast(
        &self,
        sid: &SocketId,
        channel_id: Option<&str>,
        request: BroadcastRequest,
    ) -> Result<BroadcastStarted, ChannelError> {
        let mut state = self.state();
        let channel_id = match channel_id {
            Some(id) => ChannelId::from(id),
            None => state.fresh_channel_id(),
        };
        state.join_as_broadcaster(self.limits(), sid, channel_id, request, Moment::now())
    }

    /// Puts a viewer in the waiting room of a channel id without a broadcaster;
    /// `Ok(false)`: the channel exists (join it instead).
    pub fn wait_for(&self, sid: &SocketId, channel_id: &str) -> Result<bool, ChannelError> {
        self.state()
            .wait_for(&self.shared.limits, sid, &ChannelId::from(channel_id))
    }

    /// How the channels stand (for `/metrics`).
    pub fn census(&self) -> Census {
        self.state().census()
    }

    /// The stored password hash of a private channel.
    pub fn password_of(&self, channel_id: &str) -> Option<String> {
        self.state().password_of(channel_id)
    }

    /// Lists channels, oldest first.
    pub fn list(&self) -> Vec<ChannelSummary> {
        self.state().list(Moment::now())
    }

    /// Adds `sid` as a viewer of `channel_id` (idempotent; an alias already set is kept).
    /// `relay`: it joins the relay tree (else it is a leaf fed by the broadcaster).
    pub fn join_as_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<ViewerJoined, ChannelError> {
        let request = ViewerRequest {
            relay,
            ..ViewerRequest::default()
        };
        self.join_verified(sid, channel_id, request)
    }

    /// `join_as_viewer`, for a private channel with the password hash the caller's password
    /// was verified against.
    pub(crate) fn join_verified(
        &self,
        sid: &SocketId,
        channel_id: &str,
        request: ViewerRequest,
    ) -> Result<ViewerJoined, ChannelError> {
        self.state()
            .join_as_viewer(sid, channel_id, request, Moment::now())
    }

    /// `relay_ready`: the viewer plays the stream and may feed others; waiting viewers may get
    /// it as their feeder.
    pub fn relay_ready(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        self.state()
            .tree_op(sid, channel_id, TreeOp::Ready, Moment::now())
    }

    /// `upstream_failed`: the viewer lost its media; it gets another feeder (or waits).
    pub fn upstream_failed(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        self.state()
            .tree_op(sid, channel_id, TreeOp::UpstreamFailed, Moment::now())
    }

    /// Viewers that waited for a feeder past the wait limit get the broadcaster. Touches only
    /// the channels where somebody waits.
    pub fn expire_waits(&self, now: Moment) -> Expired {
        self.state().expire_waits(now)
    }

    /// The earliest wait deadline of any channel, if anybody waits.
    pub fn next_wait_deadline(&self) -> Option<Moment> {
        self.state().waits.values().min().copied()
    }

    /// Checks that `sender` and `target` share a channel as broadcaster and viewer (either way),
    /// and returns the target's id. Looks only at the sender's own channels.
    pub fn authorize_relay(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<SocketId, ChannelError> {
        self.state()
            .authorize_relay(sender, target, activity, Moment::now())
    }

    /// Stores the alias of a viewer of `channel_id`.
    pub fn set_alias(
        &self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        self.state().set_alias(sid, channel_id, alias)
    }

    /// Resolves the sender's display name and everyone in the channel, the sender included.
    pub fn chat(&self, sid: &SocketId, channel_id: &str) -> Result<ChatDelivery, ChannelError> {
        self.state().chat(sid, channel_id)
    }

    /// Marks the broadcast stopped: returns the viewers to tell. The channel stays.
    pub fn stop_broadcast(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<SocketId>, ChannelError> {
        self.state().stop_broadcast(sid, channel_id, Moment::now())
    }

    /// Removes a socket everywhere: its own channels close, and it leaves those it watched.
    /// Touches only the socket's own channels.
    pub fn disconnect(&self, sid: &SocketId) -> Departure {
        let grace = self.shared.limits.resume_grace;
        self.state().disconnect(sid, grace, Moment::now())
    }

    /// Reaps channels idle for longer than the TTL, except live ones (a broadcaster with at least
    /// one viewer). Returns them so their broadcasters can be told.
    pub fn sweep(&self, now: Moment) -> Vec<ClosedChannel> {
        self.state().sweep(self.shared.limits.idle_ttl, now)
    }

    pub fn stats(&self) -> RegistryStats {
        let state = self.state();
        RegistryStats {
            channels: state.channels.len(),
            indexed_sockets: state.sockets.len(),
            indexed_addresses: state.by_addr.len(),
        }
    }
}

/// The options of a `join_as_broadcaster` besides the ids.
#[derive(Debug, Clone)]
pub(crate) struct BroadcastRequest<'a> {
    pub(crate) addr: Option<IpAddr>,
    pub(crate) force: bool,
    pub(crate) relay: bool,
    /// Hold the channel when the broadcaster's connection drops.
    pub(crate) resumable: bool,
    /// Digest of the resume token the client presented, if any.
    pub(crate) presented: Option<&'a str>,
    /// Digest of the token this `broadcaster_ready` will carry (every one carries a fresh one).
    pub(crate) fresh: &'a str,
    /// Hash of the password that makes a new channel private.
    pub(crate) password: Option<String>,
}

/// The options of a `join_as_viewer` besides the ids.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ViewerRequest<'a> {
    /// It joins the relay tree (else it is a leaf fed by the broadcaster).
    pub(crate) relay: bool,
    /// For a private channel: the stored hash the caller's password was verified against.
    pub(crate) password: Option<&'a str>,
    /// It asked for resuming (or presented a token).
    pub(crate) resumable: bool,
    /// Digest of the resume token it presented, if any.
    pub(crate) presented: Option<&'a str>,
    /// Digest of the token its join answer will carry.
    pub(crate) fresh: &'a str,
}

/// A viewer's report about its place in the relay tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeOp {
    Ready,
    UpstreamFailed,
}

impl State {
    pub(crate) fn join_as_broadcaster(
        &mut self,
        limits: &RegistryLimits,
        sid: &SocketId,
        channel_id: ChannelId,
        request: BroadcastRequest,
        now: Moment,
    ) -> Result<BroadcastStarted, ChannelError> {
        let BroadcastRequest {
            addr,
            force,
            relay,
            resumable,
            presented,
            fresh,
            password,
        } = request;
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            let holds_token =
                presented.is_some_and(|digest| secrets::digests_match(digest, &channel.token));
            let owner_again = force && channel.broadcaster == *sid && channel.away_until.is_none();
            // Resume: the broadcaster's connection dropped and it is back (with its token).
            // Takeover: `force` with the token replaces a live broadcaster (another device).
            let resume = channel.away_until.is_some() && holds_token;
            let takeover = force && holds_token && !owner_again && !resume;
            if !(owner_again || resume || takeover) {
                return Err(ChannelError::AlreadyHasBroadcaster(channel_id));
            }
            let previous = std::mem::replace(&mut channel.broadcaster, sid.clone());
            let replaced = (takeover && previous != *sid).then_some(previous.clone());
            channel.last_activity = now;
            channel.stopped = false;
            channel.away_until = None;
            channel.token = fresh.to_owned();
            channel.resumable = channel.resumable || resumable;
            if resume || takeover {
                // Every viewer renegotiates with the new broadcaster socket, as after going live
                // again: the tree is placed afresh so that each tree viewer gets its `upstream`
                // (a tree still marked live would send none, and its viewers would wait forever).
                channel.tree.stop();
            }
            let notices = channel.tree.go_live(now);
            let mut tree = Vec::new();
            channel.address(notices, true, &mut tree);
            let started = BroadcastStarted {
                channel_id: channel_id.clone(),
                resumable: channel.resumable,
                lobby: Vec::new(),
                replaced,
                resumed: resume,
                waiting_viewers: channel.viewers.keys().cloned().collect(),
                tree,
            };
            if started.replaced.is_some() {
                self.unindex(&previous, &channel_id, |m| &mut m.broadcasting);
            }
            // A resumed channel was indexed under nobody while held.
            self.sockets
                .entry(sid.clone())
                .or_default()
                .broadcasting
                .insert(channel_id.clone());
            self.track_waits(&channel_id);
            return Ok(started);
        }
        let owned = self.sockets.get(sid).map_or(0, |m| m.broadcasting.len());
        if owned >= limits.max_channels_per_socket {
            return Err(ChannelError::TooManyForSocket(
                limits.max_channels_per_socket,
            ));
        }
        if let Some(addr) = addr
            && self.by_addr.get(&addr).copied().unwrap_or(0) >= limits.max_channels_per_addr
        {
            return Err(ChannelError::TooManyForAddress(
                limits.max_channels_per_addr,
            ));
        }
        let total = self.total_channels.unwrap_or(self.channels.len());
        if total >= limits.max_channels {
            return Err(ChannelError::AtCapacity(limits.max_channels));
        }
        if let Some(addr) = addr {
            *self.by_addr.entry(addr).or_default() += 1;
        }
        if let Some(total) = &mut self.total_channels {
            *total += 1;
        }
        self.channels.insert(
            channel_id.clone(),
            Channel {
                id: channel_id.clone(),
                broadcaster: sid.clone(),
                owner_addr: addr,
                created_at: now.as_unix_secs(),
                last_activity: now,
                viewers: HashMap::new(),
                stopped: false,
                tree: Tree::new(limits.tree, relay),
                token: fresh.to_owned(),
                resumable,
                away_until: None,
                password,
                viewer_tokens: HashMap::new(),
                held_viewers: HashMap::new(),
            },
        );
        self.sockets
            .entry(sid.clone())
            .or_default()
            .broadcasting
            .insert(channel_id.clone());
        let lobby: Vec<SocketId> = self
            .lobbies
            .remove(&channel_id)
            .map(|waiting| waiting.into_iter().collect())
            .unwrap_or_default();
        self.waiting_total = self.waiting_total.saturating_sub(lobby.len());
        for viewer in &lobby {
            self.unindex(viewer, &channel_id, |m| &mut m.waiting);
        }
        Ok(BroadcastStarted {
            channel_id,
            resumable,
            lobby,
            replaced: None,
            resumed: false,
            waiting_viewers: Vec::new(),
            tree: Vec::new(),
        })
    }

    pub(crate) fn list(&self, now: Moment) -> Vec<ChannelSummary> {
        let now = now.as_unix_secs();
        let mut list: Vec<ChannelSummary> = self
            .channels
            .iter()
            .filter(|(_, c)| c.password.is_none())
            .map(|(id, c)| ChannelSummary {
                id: id.clone(),
                broadcaster_sid: c.broadcaster.clone(),
                created_at: c.created_at,
                age_seconds: (now - c.created_at).max(0.0) as u64,
                last_activity: c.last_activity.as_unix_secs(),
            })
            .collect();
        list.sort_by(|a, b| {
            a.created_at
                .total_cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        list
    }

    /// `password`: the stored hash the caller's password was verified against, if any.
    pub(crate) fn join_as_viewer(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        request: ViewerRequest,
        now: Moment,
    ) -> Result<ViewerJoined, ChannelError> {
        let ViewerRequest {
            relay,
            password,
            resumable,
            presented,
            fresh,
        } = request;
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or_else(|| ChannelError::NotFound(ChannelId::from(channel_id)))?;
        if let Some(stored) = &channel.password
            && password != Some(stored.as_str())
        {
            return Err(ChannelError::WrongPassword);
        }
        channel.last_activity = now;
        channel.held_viewers.retain(|_, held| held.until > now);
        let returning = presented.and_then(|digest| channel.held_viewers.remove(digest));
        let alias = returning.and_then(|held| held.alias);
        let slot = channel.viewers.entry(sid.clone()).or_insert(None);
        if alias.is_some() {
            slot.clone_from(&alias);
        }
        if resumable || presented.is_some() {
            channel.viewer_tokens.insert(sid.clone(), fresh.to_owned());
        }
        // A broadcaster watching its own channel never relays to itself.
        let relay = relay && *sid != channel.broadcaster;
        let notices = channel.tree.join(sid, relay, now);
        let mut tree = Vec::new();
        channel.address(notices, true, &mut tree);
        let joined = ViewerJoined {
            broadcaster: channel.broadcaster.clone(),
            viewer_count: channel.viewers.len(),
            stopped: channel.stopped,
            away: channel.away_until.is_some(),
            resumable: resumable || presented.is_some(),
            alias: alias.map(|a| a.to_string()),
            tree,
        };
        let key = channel.id.clone();
        self.track_waits(&key);
        self.sockets
            .entry(sid.clone())
            .or_default()
            .watching
            .insert(key);
        Ok(joined)
    }

    /// Puts a viewer in the waiting room of a channel id that has no broadcaster yet.
    /// `Ok(false)`: the channel exists after all (the caller joins it instead).
    pub(crate) fn wait_for(
        &mut self,
        limits: &RegistryLimits,
        sid: &SocketId,
        channel_id: &ChannelId,
    ) -> Result<bool, ChannelError> {
        if self.channels.contains_key(channel_id) {
            return Ok(false);
        }
        let lobby = self.lobbies.get(channel_id);
        if lobby.is_some_and(|l| l.contains(sid)) {
            return Ok(true);
        }
        if lobby.map_or(0, HashSet::len) >= limits.max_waiting_per_channel
            || self.waiting_total >= limits.max_waiting
        {
            return Err(ChannelError::WaitingRoomFull);
        }
        self.lobbies
            .entry(channel_id.clone())
            .or_default()
            .insert(sid.clone());
        self.waiting_total += 1;
        self.sockets
            .entry(sid.clone())
            .or_default()
            .waiting
            .insert(channel_id.clone());
        Ok(true)
    }

    /// Runs a tree report on behalf of a viewer of the channel.
    pub(crate) fn tree_op(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
        now: Moment,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        if !channel.viewers.contains_key(sid) {
            return Err(ChannelError::NotAViewer);
        }
        let notices = match op {
            TreeOp::Ready => channel.tree.ready(sid),
            TreeOp::UpstreamFailed => channel.tree.upstream_failed(sid, now),
        };
        let mut events = Vec::new();
        channel.address(notices, false, &mut events);
        let key = channel.id.clone();
        self.track_waits(&key);
        Ok(events)
    }

    /// Ends what the passing of time ends: relay-tree waits past their limit (those viewers get
    /// the broadcaster) and channels whose broadcaster did not resume within its grace.
    pub(crate) fn expire_waits(&mut self, now: Moment) -> Expired {
        let due: Vec<ChannelId> = self
            .waits
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut expired = Expired::default();
        for id in due {
            let gone = self
                .channels
                .get(&id)
                .and_then(|c| c.away_until)
                .is_some_and(|until| until <= now);
            if gone {
                if let Some(closed) = self.close_channel(&id) {
                    expired.abandoned.push(closed);
                }
                continue;
            }
            if let Some(channel) = self.channels.get_mut(&id) {
                let notices = channel.tree.expire_waits(now);
                channel.address(notices, false, &mut expired.tree);
            }
            self.track_waits(&id);
        }
        expired
    }

    pub(crate) fn census(&self) -> Census {
        let mut census = Census::default();
        for channel in self.channels.values() {
            if channel.away_until.is_some() {
                census.held += 1;
            } else if channel.stopped {
                census.stopped += 1;
            } else {
                census.live += 1;
            }
            census.viewers.push(channel.viewers.len());
            census.tree_depths.push(channel.tree.depths().len());
        }
        census
    }

    /// The stored password hash of a private channel (`None`: public or unknown).
    pub(crate) fn password_of(&self, channel_id: &str) -> Option<String> {
        self.channels.get(channel_id)?.password.clone()
    }

    pub(crate) fn authorize_relay(
        &mut self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
        now: Moment,
    ) -> Result<SocketId, ChannelError> {
        let State {
            channels, sockets, ..
        } = self;
        let membership = sockets.get(sender).ok_or(ChannelError::NotPeers)?;
        let (shared, target) = membership
            .broadcasting
            .iter()
            .find_map(|id| {
                let channel = channels.get(id)?;
                let (viewer, _) = channel.viewers.get_key_value(target)?;
                Some((id, viewer.clone()))
            })
            .or_else(|| {
                membership.watching.iter().find_map(|id| {
                    let channel = channels.get(id)?;
                    if channel.broadcaster.as_str() == target {
                        // Nobody to relay to while the channel waits for its broadcaster.
                        let present = channel.present_broadcaster()?;
                        return Some((id, present.clone()));
                    }
                    // A tree viewer and its current feeder or child (PROTOCOL.md "Relay
                    // authorization"): both are viewers of this channel.
                    if channel.tree.are_linked(sender, target) {
                        let (viewer, _) = channel.viewers.get_key_value(target)?;
                        return Some((id, viewer.clone()));
                    }
                    None
                })
            })
            .ok_or(ChannelError::NotPeers)?;
        if activity == Activity::Refresh
            && let Some(channel) = channels.get_mut(shared)
        {
            channel.last_activity = now;
        }
        Ok(target)
    }

    pub(crate) fn set_alias(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        let slot = channel
            .viewers
            .get_mut(sid)
            .ok_or(ChannelError::NotAViewer)?;
        *slot = Some(Arc::from(alias));
        Ok(())
    }

    pub(crate) fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        let channel = self
            .channels
            .get(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        let alias = channel
            .viewers
            .get(sid)
            .ok_or(ChannelError::NotAViewerToChat)?;
        let sender_name = match alias {
            Some(alias) => alias.to_string(),
            None => default_name(sid),
        };
        Ok(ChatDelivery {
            sender_name,
            recipients: channel.participants(),
        })
    }

    pub(crate) fn stop_broadcast(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        now: Moment,
    ) -> Result<Vec<SocketId>, ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        if channel.broadcaster != *sid {
            return Err(ChannelError::NotTheBroadcaster);
        }
        channel.last_activity = now;
        channel.stopped = true;
        channel.tree.stop();
        let viewers = channel.viewers.keys().cloned().collect();
        let key = channel.id.clone();
        self.track_waits(&key);
        Ok(viewers)
    }

    /// `grace`: how long a resumable channel is held for its broadcaster.
    pub(crate) fn disconnect(&mut self, sid: &SocketId, grace: Duration, now: Moment) -> Departure {
        let Some(membership) = self.sockets.remove(sid) else {
            return Departure::default();
        };
        let mut departure = Departure::default();
        for channel_id in &membership.waiting {
            if let Some(lobby) = self.lobbies.get_mut(channel_id)
                && lobby.remove(sid)
            {
                self.waiting_total = self.waiting_total.saturating_sub(1);
                if lobby.is_empty() {
                    self.lobbies.remove(channel_id);
                }
            }
        }
        for channel_id in membership.broadcasting {
            let hold = !grace.is_zero()
                && self
                    .channels
                    .get(&channel_id)
                    .is_some_and(|c| c.resumable && c.broadcaster == *sid);
            if hold {
                if let Some(channel) = self.channels.get_mut(&channel_id) {
                    channel.away_until = Some(now + grace);
                    departure.held.push(HeldChannel {
                        channel_id: channel_id.clone(),
                        viewers: channel.viewers.keys().cloned().collect(),
                    });
                }
                self.track_waits(&channel_id);
            } else if let Some(closed) = self.close_channel(&channel_id) {
                departure.closed.push(closed);
            }
        }
        for channel_id in membership.watching {
            if let Some(channel) = self.channels.get_mut(&channel_id)
                && let Some(alias) = channel.viewers.remove(sid)
            {
                channel.held_viewers.retain(|_, held| held.until > now);
                if let Some(digest) = channel.viewer_tokens.remove(sid)
                    && !grace.is_zero()
                {
                    let held = HeldViewer {
                        alias,
                        until: now + grace,
                    };
                    channel.held_viewers.insert(digest, held);
                }
                let notices = channel.tree.leave(sid, now);
                let mut tree = Vec::new();
                channel.address(notices, true, &mut tree);
                departure.left.push(ViewerLeft {
                    channel_id: channel_id.clone(),
                    broadcaster: channel.broadcaster.clone(),
                    viewer_count: channel.viewers.len(),
                    tree,
                });
                self.track_waits(&channel_id);
            }
        }
        departure
    }

    pub(crate) fn sweep(&mut self, ttl: Duration, now: Moment) -> Vec<ClosedChannel> {
        let expired: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.viewers.is_empty() && now.duration_since(c.last_activity) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| self.close_channel(id))
            .collect()
    }

    /// Keeps the index of channels with waiting viewers in step with one channel's tree.
    pub(crate) fn track_waits(&mut self, channel_id: &ChannelId) {
        match self
            .channels
            .get(channel_id)
            .and_then(Channel::next_deadline)
        {
            Some(deadline) => {
                self.waits.insert(channel_id.clone(), deadline);
            }
            None => {
                self.waits.remove(channel_id);
            }
        }
    }

    /// Removes a channel and every index entry pointing at it.
    fn close_channel(&mut self, channel_id: &ChannelId) -> Option<ClosedChannel> {
        let channel = self.channels.remove(channel_id)?;
        if let Some(total) = &mut self.total_channels {
            *total = total.saturating_sub(1);
        }
        self.waits.remove(channel_id);
        self.unindex(&channel.broadcaster, channel_id, |m| &mut m.broadcasting);
        if let Some(addr) = channel.owner_addr
            && let Some(count) = self.by_addr.get_mut(&addr)
        {
            *count -= 1;
            if *count == 0 {
                self.by_addr.remove(&addr);
            }
        }
        let viewers: Vec<SocketId> = channel.viewers.into_keys().collect();
        for viewer in &viewers {
            self.unindex(viewer, channel_id, |m| &mut m.watching);
        }
        Some(ClosedChannel {
            channel_id: channel_id.clone(),
            broadcaster: channel.broadcaster,
            viewers,
        })
    }

    fn unindex(
        &mut self,
        sid: &SocketId,
        channel_id: &ChannelId,
        set: impl FnOnce(&mut Membership) -> &mut HashSet<ChannelId>,
    ) {
        if let Some(membership) = self.sockets.get_mut(sid) {
            set(membership).remove(channel_id);
            if membership.is_empty() {
                self.sockets.remove(sid);
            }
        }
    }

    fn fresh_channel_id(&self) -> ChannelId {
        loop {
            let id = random_channel_id();
            if !self.channels.contains_key(&id) {
                return id;
            }
        }
    }
}

/// A channel id in the earlier server's format (8 lowercase letters and digits).
pub(crate) fn random_channel_id() -> ChannelId {
    let mut rng = rand::rng();
    let id: String = (0..GENERATED_ID_LEN)
        .map(|_| GENERATED_ID_ALPHABET[rng.random_range(0..GENERATED_ID_ALPHABET.len())] as char)
        .collect();
    ChannelId::from(id)
}

/// The name a viewer without an alias chats under, as the earlier server named it.
fn default_name(sid: &str) -> String {
    let prefix: String = sid.chars().take(8).collect();
    format!("Viewer-{prefix}")
}

/// Unix time in seconds as a float, the protocol's timestamp format.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: TreeLimits = TreeLimits {
        direct: 4,
        fanout: 2,
        wait: Duration::from_secs(10),
    };

    fn registry(max_channels: usize, ttl: Duration) -> MemoryRegistry {
        MemoryRegistry::new(RegistryLimits {
            max_channels,
            idle_ttl: ttl,
            max_channels_per_socket: 100,
            max_channels_per_addr: 100,
            tree: TREE,
            resume_grace: Duration::ZERO,
            max_waiting_per_channel: 10,
            max_waiting: 100,
        })
    }

    fn sid(s: &str) -> SocketId {
        SocketId::from(s)
    }

    fn default_registry() -> MemoryRegistry {
        registry(100, Duration::from_secs(3600))
    }

    #[test]
    fn broadcaster_gets_generated_id_when_none_given() {
        let r = default_registry();
        let started = r
            .join_as_broadcaster(&sid("b"), None, None, false, true)
            .unwrap();
        assert_eq!(started.channel_id.len(), 8);
        assert!(
            started
                .channel_id
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(started.waiting_viewers.is_empty());
    }

    #[test]
    fn broadcaster_who_also_watches_gets_each_message_once_and_leaves_nothing() {
        let r = default_registry();
        let (b, v) = (sid("b"), sid("v"));
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        assert_eq!(
            r.chat(&b, "room").map(|_| ()),
            Err(ChannelError::NotAViewerToChat)
        );
        r.join_as_viewer(&b, "room", false).unwrap();
        r.join_as_viewer(&v, "room", false).unwrap();
        let delivery = r.chat(&b, "room").unwrap();
        let mut recipients = delivery.recipients.clone();
        recipients.sort();
        assert_eq!(recipients, vec![b.clone(), v.clone()]);

        let departure = r.disconnect(&b);
        assert_eq!(departure.closed.len(), 1);
        r.disconnect(&v);
        let stats = r.stats();
        assert_eq!((stats.channels, stats.indexed_sockets), (0, 0));
    }

    #[test]
    fn second_broadcaster_is_refused() {
        let r = default_registry();
        r.join_as_broadcaster(&sid("b1"), None, Some("room"), false, true)
            .unwrap();
        let err = r
            .join_as_broadcaster(&sid("b2"), None, Some("room"), true, true)
            .unwrap_err();
        assert_eq!(err.to_string(), "Channel room already has a broadcaster");
        let err = r
            .join_as_broadcaster(&sid("b1"), None, Some("room"), false, true)
            .unwrap_err();
        assert_eq!(
            err,
            ChannelError::AlreadyHasBroadcaster(ChannelId::from("room"))
        );
    }

    #[test]
    fn owner_goes_live_again_with_force_and_viewers_are_returned() {
        let r = default_registry();
        let b = sid("b");
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        r.join_as_viewer(&sid("v"), "room", false).unwrap();
        assert!(!r.join_as_viewer(&sid("v"), "room", false).unwrap().stopped);
        assert_eq!(r.stop_broadcast(&b, "room").unwrap(), vec![sid("v")]);
        assert!(
            r.join_as_viewer(&sid("late"), "room", false)
                .unwrap()
                .stopped
        );
        let mut again = r
            .join_as_broadcaster(&b, None, Some("room"), true, true)
            .unwrap();
        again.waiting_viewers.sort();
        assert_eq!(again.waiting_viewers, vec![sid("late"), sid("v")]);
        assert!(
            !r.join_as_viewer(&sid("later"), "room", false)
                .unwrap()
                .stopped
        );
    }

    #[test]
    fn one_socket_or_address_cannot_take_every_channel() {
        let r = MemoryRegistry::new(RegistryLimits {
            max_channels: 100,
            idle_ttl: Duration::from_secs(60),
            max_channels_per_socket: 2,
            max_channels_per_addr: 3,
            tree: TREE,
            resume_grace: Duration::ZERO,
            max_waiting_per_channel: 10,
            max_waiting: 100,
        });
        let home: IpAddr = "198.51.100.7".parse().unwrap();
        let hog = sid("hog");
        for id in ["a", "b"] {
            r.join_as_broadcaster(&hog, Some(home), Some(id), false, true)
                .unwrap();
        }
        let err = r
            .join_as_broadcaster(&hog, Some(home), Some("c"), false, true)
            .unwrap_err();
        assert_eq!(err, ChannelError::TooManyForSocket(2));
        // Going live again on an owned channel is not a new channel.
        r.stop_broadcast(&hog, "a").unwrap();
        r.join_as_broadcaster(&hog, Some(home), Some("a"), true, true)
            .unwrap();
        // The same address from another socket: one more, then refused.
        r.join_as_broadcaster(&sid("twin"), Some(home), Some("c"), false, true)
            .unwrap();
        let err = r
            .join_as_broadcaster(&sid("twin"), Some(home), Some("d"), false, true)
            .unwrap_err();
        assert_eq!(err, ChannelError::TooManyForAddress(3));
        assert!(err.to_string().contains("network address"));
        // Other addresses are not affected.
        r.join_as_broadcaster(
            &sid("other"),
            "203.0.113.1".parse().ok(),
            Some("d"),
            false,
            true,
        )
        .unwrap();
        // Leaving frees the slots and leaves no index entry behind.
        r.disconnect(&hog);
        r.disconnect(&sid("twin"));
        r.disconnect(&sid("other"));
        assert_eq!(
            r.stats(),
            RegistryStats {
                channels: 0,
                indexed_sockets: 0,
                indexed_addresses: 0
            }
        );
    }

    #[test]
    fn capacity_is_refused_and_nothing_is_evicted() {
        let r = registry(2, Duration::from_secs(3600));
        r.join_as_broadcaster(&sid("a"), None, Some("a"), false, true)
            .unwrap();
        r.join_as_broadcaster(&sid("b"), None, Some("b"), false, true)
            .unwrap();
        let err = r
            .join_as_broadcaster(&sid("c"), None, Some("c"), false, true)
            .unwrap_err();
        assert_eq!(err, ChannelError::AtCapacity(2));
        assert!(err.to_string().starts_with("Server is at capacity"));
        let ids: Vec<_> = r.list().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![ChannelId::from("a"), ChannelId::from("b")]);
        assert_eq!(r.stats().indexed_sockets, 2);
    }

    #[test]
    fn list_is_oldest_first_with_fields() {
        let r = default_registry();
        r.join_as_broadcaster(&sid("b1"), None, Some("first"), false, true)
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        r.join_as_broadcaster(&sid("b2"), None, Some("second"), false, true)
            .unwrap();
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!(&*list[0].id, "first");
        assert_eq!(&*list[0].broadcaster_sid, "b1");
        assert_eq!(&*list[1].id, "second");
        assert!(list[0].created_at < list[1].created_at);
        assert_eq!(list[0].age_seconds, 0);
        assert!(list[0].last_activity >= list[0].created_at);
    }

    #[test]
    fn viewer_join_unknown_channel() {
        let r = default_registry();
        let err = r.join_as_viewer(&sid("v"), "nope", false).unwrap_err();
        assert_eq!(err.to_string(), "Channel nope not found or expired");
        assert_eq!(r.stats().indexed_sockets, 0);
    }

    #[test]
    fn relay_only_between_broadcaster_and_its_viewers() {
        let r = default_registry();
        let (b, v, stranger, other_b) = (sid("b"), sid("v"), sid("s"), sid("ob"));
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        r.join_as_broadcaster(&other_b, None, Some("other"), false, true)
            .unwrap();
        r.join_as_viewer(&v, "room", false).unwrap();
        r.join_as_viewer(&stranger, "other", false).unwrap();

        assert!(r.authorize_relay(&v, "b", Activity::Refresh).is_ok());
        assert!(r.authorize_relay(&b, "v", Activity::Refresh).is_ok());
        assert_eq!(
            r.authorize_relay(&stranger, "b", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
        assert_eq!(
            r.authorize_relay(&b, "s", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
        // Two viewers of one channel are not peers of each other.
        let v2 = sid("v2");
        r.join_as_viewer(&v2, "room", false).unwrap();
        assert_eq!(
            r.authorize_relay(&v, "v2", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
        // Unknown sockets and unknown targets.
        assert_eq!(
            r.authorize_relay(&sid("ghost"), "b", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
        assert_eq!(
            r.authorize_relay(&b, "ghost", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
    }

    #[test]
    fn alias_and_chat_names() {
        let r = default_registry();
        let (b, v1, v2) = (sid("bbbbbbbbbbbb"), sid("abcdefghijkl"), sid("zzzzzzzzzz"));
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        r.join_as_viewer(&v1, "room", false).unwrap();
        r.join_as_viewer(&v2, "room", false).unwrap();

        let chat = r.chat(&v1, "room").unwrap();
        assert_eq!(chat.sender_name, "Viewer-abcdefgh");
        let mut recipients = chat.recipients.clone();
        recipients.sort();
        let mut expected = vec![b.clone(), v1.clone(), v2.clone()];
        expected.sort();
        assert_eq!(recipients, expected);
        assert_eq!(chat.recipients[0], b, "broadcaster comes first");

        r.set_alias(&v1, "room", "Alice").unwrap();
        assert_eq!(r.chat(&v1, "room").unwrap().sender_name, "Alice");
        // Rejoining keeps the alias.
        r.join_as_viewer(&v1, "room", false).unwrap();
        assert_eq!(r.chat(&v1, "room").unwrap().sender_name, "Alice");

        assert_eq!(
            r.set_alias(&b, "room", "Owner"),
            Err(ChannelError::NotAViewer)
        );
        assert_eq!(r.chat(&b, "room"), Err(ChannelError::NotAViewerToChat));
        assert_eq!(r.chat(&v1, "gone"), Err(ChannelError::NotFoundOrExpired));
        assert_eq!(
            r.set_alias(&v1, "gone", "Alice"),
            Err(ChannelError::NotFoundOrExpired)
        );
    }

    #[test]
    fn stop_broadcast_rules() {
        let r = default_registry();
        let (b, v) = (sid("b"), sid("v"));
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        r.join_as_viewer(&v, "room", false).unwrap();
        assert_eq!(
            r.stop_broadcast(&v, "room"),
            Err(ChannelError::NotTheBroadcaster)
        );
        assert_eq!(
            r.stop_broadcast(&b, "nope"),
            Err(ChannelError::NotFoundOrExpired)
        );
        assert_eq!(r.stop_broadcast(&b, "room").unwrap(), vec![v]);
        assert_eq!(r.stats().channels, 1, "the channel stays after stop");
    }

    #[test]
    fn broadcaster_disconnect_closes_its_channels_and_unindexes_viewers() {
        let r = default_registry();
        let (b, v1, v2) = (sid("b"), sid("v1"), sid("v2"));
        r.join_as_broadcaster(&b, None, Some("one"), false, true)
            .unwrap();
        r.join_as_broadcaster(&b, None, Some("two"), false, true)
            .unwrap();
        r.join_as_viewer(&v1, "one", false).unwrap();
        r.join_as_viewer(&v2, "two", false).unwrap();

        let mut departure = r.disconnect(&b);
        departure
            .closed
            .sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
        assert_eq!(departure.closed.len(), 2);
        assert_eq!(departure.closed[0].viewers, vec![v1.clone()]);
        assert_eq!(departure.closed[1].viewers, vec![v2.clone()]);
        assert_eq!(
            r.stats(),
            RegistryStats {
                channels: 0,
                indexed_sockets: 0,
                indexed_addresses: 0
            }
        );
        assert_eq!(r.disconnect(&v1), Departure::default());
    }

    #[test]
    fn viewer_disconnect_leaves_and_reports_count() {
        let r = default_registry();
        let (b, v1, v2) = (sid("b"), sid("v1"), sid("v2"));
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        r.join_as_viewer(&v1, "room", false).unwrap();
        assert_eq!(
            r.join_as_viewer(&v2, "room", false).unwrap().viewer_count,
            2
        );
        let departure = r.disconnect(&v1);
        assert!(departure.closed.is_empty());
        assert_eq!(
            departure.left,
            vec![ViewerLeft {
                channel_id: ChannelId::from("room"),
                broadcaster: b.clone(),
                viewer_count: 1,
                // Legacy viewers only: nothing new for the broadcaster.
                tree: vec![],
            }]
        );
        assert_eq!(r.stats().indexed_sockets, 2);
        assert_eq!(
            r.authorize_relay(&b, "v1", Activity::Keep),
            Err(ChannelError::NotPeers)
        );
    }

    #[test]
    fn idle_channel_without_viewers_expires_but_live_one_never_does() {
        let ttl = Duration::from_millis(30);
        let r = registry(10, ttl);
        r.join_as_broadcaster(&sid("idle"), None, Some("idle"), false, true)
            .unwrap();
        r.join_as_broadcaster(&sid("live"), None, Some("live"), false, true)
            .unwrap();
        r.join_as_viewer(&sid("v"), "live", false).unwrap();

        assert!(r.sweep(Moment::now()).is_empty(), "nothing is idle yet");
        std::thread::sleep(ttl * 2);
        let reaped = r.sweep(Moment::now());
        assert_eq!(
            reaped,
            vec![ClosedChannel {
                channel_id: ChannelId::from("idle"),
                broadcaster: sid("idle"),
                viewers: vec![]
            }]
        );
        let ids: Vec<_> = r.list().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![ChannelId::from("live")]);
        // Far in the future, the live channel still stays.
        assert!(
            r.sweep(Moment::now() + Duration::from_secs(86_400))
                .is_empty()
        );
        // Once its last viewer leaves, it is idle and goes at the next sweep past the TTL.
        r.disconnect(&sid("v"));
        assert_eq!(r.sweep(Moment::now() + ttl * 2).len(), 1);
        assert_eq!(
            r.stats(),
            RegistryStats {
                channels: 0,
                indexed_sockets: 0,
                indexed_addresses: 0
            }
        );
    }

    #[test]
    fn a_resumable_viewer_gets_its_alias_back_within_the_grace_only() {
        let r = MemoryRegistry::new(RegistryLimits {
            resume_grace: Duration::from_secs(30),
            ..default_registry().limits().clone()
        });
        r.join_as_broadcaster(&sid("b"), None, Some("room"), false, true)
            .unwrap();
        let request = |presented, fresh| ViewerRequest {
            resumable: true,
            presented,
            fresh,
            ..ViewerRequest::default()
        };
        let joined = r
            .join_verified(&sid("v1"), "room", request(None, "d1"))
            .unwrap();
        assert!(joined.resumable && joined.alias.is_none());
        r.set_alias(&sid("v1"), "room", "Alice").unwrap();
        r.disconnect(&sid("v1"));
        // Another token gets nothing back; the right one gets the alias, once.
        let stranger = r
            .join_verified(&sid("x"), "room", request(Some("nope"), "dx"))
            .unwrap();
        assert_eq!(stranger.alias, None);
        let back = r
            .join_verified(&sid("v2"), "room", request(Some("d1"), "d2"))
            .unwrap();
        assert_eq!(back.alias.as_deref(), Some("Alice"));
        assert_eq!(r.chat(&sid("v2"), "room").unwrap().sender_name, "Alice");
        let again = r
            .join_verified(&sid("v3"), "room", request(Some("d1"), "d3"))
            .unwrap();
        assert_eq!(again.alias, None, "a token works once");
        // After the grace the place is gone.
        r.disconnect(&sid("v2"));
        let late = r.state().join_as_viewer(
            &sid("v4"),
            "room",
            request(Some("d2"), "d4"),
            Moment::now() + Duration::from_secs(31),
        );
        assert_eq!(late.unwrap().alias, None);
    }

    #[test]
    fn waiting_room_fills_up_hands_over_and_forgets_leavers() {
        let r = default_registry();
        let (w1, w2, w3) = (sid("w1"), sid("w2"), sid("w3"));
        assert_eq!(r.wait_for(&w1, "soon"), Ok(true));
        assert_eq!(r.wait_for(&w1, "soon"), Ok(true), "idempotent");
        assert_eq!(r.wait_for(&w2, "soon"), Ok(true));
        assert_eq!(r.wait_for(&w3, "later"), Ok(true));
        assert!(r.list().is_empty(), "waiting creates no channel");
        r.disconnect(&w3);
        let started = r
            .join_as_broadcaster(&sid("b"), None, Some("soon"), false, true)
            .unwrap();
        let mut lobby = started.lobby;
        lobby.sort();
        assert_eq!(lobby, vec![w1.clone(), w2.clone()]);
        assert_eq!(r.wait_for(&w1, "soon"), Ok(false), "the channel exists now");
        let state = r.state();
        assert!(state.lobbies.is_empty());
        assert_eq!(state.waiting_total, 0);
        assert!(!state.sockets.contains_key(&w1));
    }

    #[test]
    fn waiting_room_limits_per_channel_and_overall() {
        let r = default_registry(); // 10 per channel, 100 overall
        for i in 0..10 {
            assert_eq!(r.wait_for(&sid(&format!("a{i}")), "one"), Ok(true));
        }
        assert_eq!(
            r.wait_for(&sid("a10"), "one"),
            Err(ChannelError::WaitingRoomFull)
        );
        for i in 0..90 {
            let channel = format!("c{}", i / 9);
            assert_eq!(r.wait_for(&sid(&format!("b{i}")), &channel), Ok(true));
        }
        assert_eq!(
            r.wait_for(&sid("late"), "other"),
            Err(ChannelError::WaitingRoomFull)
        );
    }

    #[test]
    fn activity_refresh_postpones_expiry() {
        let ttl = Duration::from_millis(50);
        let r = registry(10, ttl);
        let b = sid("b");
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        // A stop refreshes activity too.
        r.stop_broadcast(&b, "room").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.sweep(Moment::now()).is_empty());
    }

    #[test]
    fn concurrent_disconnects_leave_nothing_behind() {
        let r = default_registry();
        let b = sid("b");
        r.join_as_broadcaster(&b, None, Some("room"), false, true)
            .unwrap();
        let viewers: Vec<SocketId> = (0..50).map(|i| sid(&format!("v{i}"))).collect();
        for v in &viewers {
            r.join_as_viewer(v, "room", false).unwrap();
        }
        std::thread::scope(|scope| {
            scope.spawn(|| r.disconnect(&b));
            for v in &viewers {
                let r = r.clone();
                scope.spawn(move || r.disconnect(v));
            }
        });
        assert_eq!(
            r.stats(),
            RegistryStats {
                channels: 0,
                indexed_sockets: 0,
                indexed_addresses: 0
            }
        );
    }

    /// Every index agrees with the channels: the socket index lists exactly the channels each
    /// socket broadcasts or watches (and no socket without any), the address counts match the
    /// owners, and the wait index matches the trees.
    fn check_indexes(r: &MemoryRegistry) {
        let state = r.state();
        type Sets = (HashSet<ChannelId>, HashSet<ChannelId>, HashSet<ChannelId>);
        let mut expected: HashMap<SocketId, Sets> = HashMap::new();
        for (id, lobby) in &state.lobbies {
            assert!(!lobby.is_empty(), "empty lobby {id} kept");
            assert!(
                !state.channels.contains_key(id),
                "lobby of a live channel {id}"
            );
            for sid in lobby {
                expected
                    .entry(sid.clone())
                    .or_default()
                    .2
                    .insert(id.clone());
            }
        }
        assert_eq!(
            state.waiting_total,
            state.lobbies.values().map(HashSet::len).sum::<usize>(),
            "waiting count"
        );
        let mut by_addr: HashMap<IpAddr, usize> = HashMap::new();
        for (id, channel) in &state.channels {
            // A channel held for its dropped broadcaster is indexed under nobody.
            if let Some(broadcaster) = channel.present_broadcaster() {
                expected
                    .entry(broadcaster.clone())
                    .or_default()
                    .0
                    .insert(id.clone());
            }
            for viewer in channel.viewers.keys() {
                expected
                    .entry(viewer.clone())
                    .or_default()
                    .1
                    .insert(id.clone());
            }
            if let Some(addr) = channel.owner_addr {
                *by_addr.entry(addr).or_default() += 1;
            }
            assert_eq!(
                state.waits.get(id).copied(),
                channel.next_deadline(),
                "wait index of {id}"
            );
        }
        let actual: HashMap<SocketId, Sets> = state
            .sockets
            .iter()
            .map(|(sid, m)| {
                let sets = (
                    m.broadcasting.clone(),
                    m.watching.clone(),
                    m.waiting.clone(),
                );
                (sid.clone(), sets)
            })
            .collect();
        assert_eq!(actual, expected, "socket index");
        assert_eq!(state.by_addr, by_addr, "address index");
        assert!(state.waits.keys().all(|id| state.channels.contains_key(id)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Broadcast(u8, u8, bool),
        Watch(u8, u8, bool),
        Relay(u8, u8),
        Ready(u8, u8),
        Failed(u8, u8),
        Stop(u8, u8),
        Disconnect(u8),
        Sweep,
        /// `join_as_broadcaster` presenting the token (resume, or takeover with `force`).
        Resume(u8, u8, bool),
        /// Time passes beyond every grace and wait.
        Expire,
        /// `join_as_viewer {wait: true}` for a channel without a broadcaster.
        Wait(u8, u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            2 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, f)| Op::Broadcast(s, c, f)),
            4 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, r)| Op::Watch(s, c, r)),
            3 => (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Relay(a, b)),
            3 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Ready(s, c)),
            1 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Failed(s, c)),
            1 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Stop(s, c)),
            2 => (0u8..8).prop_map(Op::Disconnect),
            1 => Just(Op::Sweep),
            2 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, f)| Op::Resume(s, c, f)),
            1 => Just(Op::Expire),
            2 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Wait(s, c)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary sequences of joins (both kinds), relays, tree reports, stops, sweeps and
        /// disconnects keep every index consistent, relays are authorized only between peers
        /// (broadcaster and viewer of one channel, or feeder and child in its tree), and nothing
        /// is left once everybody has disconnected.
        #[test]
        fn registry_invariants_hold_for_any_sequence(
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let r = MemoryRegistry::new(RegistryLimits {
                max_channels: 2,
                idle_ttl: Duration::from_secs(3600),
                max_channels_per_socket: 2,
                max_channels_per_addr: 2,
                tree: TreeLimits { direct: 1, fanout: 1, wait: Duration::from_secs(10) },
                resume_grace: Duration::from_secs(30),
                max_waiting_per_channel: 2,
                max_waiting: 3,
            });
            let name = |i: u8| sid(&format!("s{i}"));
            let channel = |i: u8| format!("c{i}");
            let addr = |i: u8| Some(IpAddr::from([10, 0, 0, i % 3]));
            // Even sockets ask for resuming; every token's digest is "t" (the rules compare
            // digests; making them is `secrets`' business).
            let request = |s: u8, force: bool, presented: Option<&'static str>| BroadcastRequest {
                addr: addr(s),
                force,
                relay: true,
                resumable: s.is_multiple_of(2),
                presented,
                fresh: "t",
                password: None,
            };
            for op in ops {
                match op {
                    Op::Broadcast(s, c, force) => {
                        let _ = r.start_broadcast(&name(s), Some(&channel(c)), request(s, force, None));
                    }
                    Op::Resume(s, c, force) => {
                        let before = r.state().channels.get(channel(c).as_str()).map(|ch| (ch.broadcaster.clone(), ch.away_until.is_some()));
                        let result = r.start_broadcast(&name(s), Some(&channel(c)), request(s, force, Some("t")));
                        if let (Some((previous, away)), Ok(started)) = (before, &result) {
                            // A held channel is resumed; a live one only taken over with force.
                            proptest::prop_assert!(away || force || previous == name(s));
                            proptest::prop_assert_eq!(
                                started.replaced.clone(),
                                (!away && previous != name(s)).then_some(previous)
                            );
                        }
                    }
                    Op::Expire => { r.expire_waits(Moment::now() + Duration::from_secs(3600)); }
                    Op::Wait(s, c) => {
                        let exists = r.state().channels.contains_key(channel(c).as_str());
                        let result = r.wait_for(&name(s), &channel(c));
                        if exists {
                            proptest::prop_assert_eq!(result, Ok(false));
                        }
                    }
                    Op::Watch(s, c, relay) => { let _ = r.join_as_viewer(&name(s), &channel(c), relay); }
                    Op::Relay(a, b) => {
                        let allowed = r.authorize_relay(&name(a), &format!("s{b}"), Activity::Keep).is_ok();
                        let state = r.state();
                        let peers = state.channels.values().any(|ch| {
                            let (a, b) = (name(a), name(b));
                            let present = ch.present_broadcaster();
                            (present == Some(&a) && ch.viewers.contains_key(&b))
                                || (present == Some(&b) && ch.viewers.contains_key(&a))
                                || (ch.viewers.contains_key(&a)
                                    && ch.viewers.contains_key(&b)
                                    && ch.tree.are_linked(&a, &b))
                        });
                        proptest::prop_assert_eq!(allowed, peers, "relay s{} -> s{}", a, b);
                    }
                    Op::Ready(s, c) => { let _ = r.relay_ready(&name(s), &channel(c)); }
                    Op::Failed(s, c) => { let _ = r.upstream_failed(&name(s), &channel(c)); }
                    Op::Stop(s, c) => { let _ = r.stop_broadcast(&name(s), &channel(c)); }
                    Op::Disconnect(s) => { r.disconnect(&name(s)); }
                    Op::Sweep => { r.sweep(Moment::now() + Duration::from_secs(7200)); }
                }
                check_indexes(&r);
            }
            for s in 0..8 {
                r.disconnect(&name(s));
            }
            check_indexes(&r);
            // Held channels go when their grace ends, announced.
            let held = r.state().channels.len();
            let expired = r.expire_waits(Moment::now() + Duration::from_secs(3600));
            proptest::prop_assert_eq!(expired.abandoned.len(), held);
            check_indexes(&r);
            proptest::prop_assert_eq!(
                r.stats(),
                RegistryStats { channels: 0, indexed_sockets: 0, indexed_addresses: 0 }
            );
            proptest::prop_assert!(r.state().waits.is_empty());
            proptest::prop_assert!(r.state().lobbies.is_empty());
        }
    }
}
