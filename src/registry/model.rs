//! The registry's data: which channels exist, who broadcasts and who watches each, and the
//! per-socket index that keeps every operation proportional to the caller's own channels.
//!
//! Channels are authoritative state, so they live in plain maps rather than a TTL cache such as
//! mini-moka: such a cache drops an expired entry without telling anyone (it has no eviction
//! listener) and, when full, silently refuses new ones, while PROTOCOL.md wants a refused channel
//! answered ("Server is at capacity"), a live one kept forever, and a reaped one announced with
//! `channel_expired`. Expiry is therefore the registry's own sweep (`crate::channels::Registry::sweep`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chat::ChatHistory;
use super::clock::Moment;
use super::ids::{ChannelId, SocketId};
use super::moderation::{Identity, Moderation};
use super::tree::{Tree, TreeLimits};

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
    /// Chat messages a channel keeps for viewers who join later (0: none, no `chat_history`).
    pub chat_history: usize,
    /// A ban also holds the banned client's address (`--ban-by-address`).
    pub ban_by_address: bool,
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
    pub(crate) lobbies: HashMap<ChannelId, HashMap<SocketId, Waiter>>,
    /// How many wait in all lobbies (in a partial state: as counted when it was loaded).
    pub(crate) waiting_total: usize,
    /// For a partial state that holds only some of the caller's channels (in memory, one
    /// channel's cell): how many channels the caller broadcasts outside it, counted against
    /// its per-socket limit with those it holds.
    pub(crate) broadcasting_elsewhere: usize,
}

/// A viewer in the waiting room: what its join asked for, so that the broadcaster's arrival
/// can make it a member exactly as its own `join_as_viewer` would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    /// It asked for the relay tree (`relay: true`).
    pub(crate) relay: bool,
    /// When it started waiting: waiters are placed in order of arrival, as joins would be.
    pub(crate) since: Moment,
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
    pub(super) stopped: bool,
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
    /// Invitations naming another generation admit nobody: it starts at a random value when the
    /// channel is created and `rotate_invites` bumps it (see `invites`). Documents written
    /// before invitations existed read as 0.
    #[serde(default)]
    pub(crate) invite_generation: u64,
    /// Digests of the resume tokens of viewers that asked for resuming.
    #[serde(default)]
    pub(crate) viewer_tokens: HashMap<SocketId, String>,
    /// Places of departed resumable viewers, by token digest, until their grace ends. Nobody
    /// is told when one ends: they are pruned by the channel's next change, and go with it.
    #[serde(default)]
    pub(crate) held_viewers: HashMap<String, HeldViewer>,
    /// Most viewers at once since the broadcast started (created, or live again after
    /// `stop_broadcast`): reported by webhooks. In the channel, so that every node sees it.
    #[serde(default)]
    pub(crate) peak_viewers: usize,
    /// Its last chat messages, in memory only: cluster mode keeps them in a Redis list beside
    /// the document, so that a chat message never rewrites (or contends for) the channel.
    #[serde(skip)]
    pub(crate) history: ChatHistory,
    /// Who its members are beyond their connections (key digests, addresses where bans may
    /// hold them): only members that presented one (see `moderation`).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub(crate) identities: HashMap<SocketId, Identity>,
    /// Its bans, mutes and chat settings.
    #[serde(default)]
    pub(crate) moderation: Moderation,
}

/// What a resumable viewer gets back when it returns within the grace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldViewer {
    pub(super) alias: Option<Arc<str>>,
    pub(super) until: Moment,
}

impl Channel {
    /// The broadcaster while it is connected (not while the channel waits for it to resume).
    pub(crate) fn present_broadcaster(&self) -> Option<&SocketId> {
        match self.away_until {
            None => Some(&self.broadcaster),
            Some(_) => None,
        }
    }
}

/// A channel whose broadcaster is gone or whose idle time ran out, and who was in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedChannel {
    pub channel_id: ChannelId,
    pub broadcaster: SocketId,
    pub viewers: Vec<SocketId>,
    /// Most viewers at once during its last broadcast.
    pub peak_viewers: usize,
}

impl State {
    /// Removes a channel and every index entry pointing at it.
    pub(super) fn close_channel(&mut self, channel_id: &ChannelId) -> Option<ClosedChannel> {
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
            peak_viewers: channel.peak_viewers,
        })
    }

    pub(super) fn unindex(
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
}
