//! The channels this node serves, behind one interface over the registry's two backends: in
//! memory ([`MemoryRegistry`]; one node, the default) and in Redis ([`ClusterRegistry`]; several
//! nodes share every channel). Both run the same rules (`crate::registry`); they differ only in
//! where the state lives and how an operation is made atomic (a mutex there, an optimistic Redis
//! transaction here). The methods are async because the Redis backend is; the in-memory one
//! awaits only its channel's turn (below). Kept outside `registry/` so that the rules know
//! nothing of the cluster.
//!
//! In memory, an operation that changes a channel first takes the channel's turn ([`turns`])
//! and its caller's job keeps it until that operation's events are emitted, so each channel's
//! events leave in the order its rules produced them. The methods that do take the job's
//! [`Held`] turns.

mod turns;

pub use turns::{Held, Turns};

use crate::cluster::ClusterRegistry;
use crate::registry::broadcaster::{BroadcastRequest, BroadcastStarted, BroadcastStopped};
use crate::registry::chat::{ChatDelivery, ChatMessage};
use crate::registry::clock::Moment;
use crate::registry::errors::ChannelError;
use crate::registry::expiry::Expired;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::listing::{Census, ChannelSummary};
use crate::registry::membership::{Departure, ViewerJoined, ViewerRequest};
use crate::registry::model::ClosedChannel;
use crate::registry::moderation::{ChatSettings, ChatSettingsChange, Removal, Told, ViewerEntry};
use crate::registry::relay::Activity;
use crate::registry::tree_events::{TreeEvent, TreeOp};
use crate::registry::{MemoryRegistry, RegistryLimits, Stats};

/// Cheap to clone; every clone shares the same channels.
#[derive(Clone)]
pub enum Registry {
    Memory(MemoryRegistry, Turns),
    Cluster(ClusterRegistry),
}

/// The channel id an operation names, as a turn's key.
fn one(channel_id: &str) -> [ChannelId; 1] {
    [ChannelId::from(channel_id)]
}

impl Registry {
    /// The in-memory registry, its channels' turns with it.
    pub fn memory(registry: MemoryRegistry) -> Self {
        Registry::Memory(registry, Turns::default())
    }

    /// Whether the registry can serve now: always in memory; in cluster mode, while Redis
    /// answers. A client's events pile up while it cannot, through no fault of the client's.
    pub fn is_available(&self) -> bool {
        match self {
            Registry::Memory(..) => true,
            Registry::Cluster(r) => r.problem().is_none(),
        }
    }

    /// How many viewers the channels `sid` broadcasts have, as far as this node knows without
    /// waiting (in cluster mode: from its replica; 0 when it holds none of them).
    pub fn audience(&self, sid: &SocketId) -> usize {
        match self {
            Registry::Memory(r, _) => r.audience(sid),
            Registry::Cluster(r) => r.audience(sid),
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        match self {
            Registry::Memory(r, _) => r.limits(),
            Registry::Cluster(r) => r.limits(),
        }
    }

    pub(crate) async fn join_as_broadcaster(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: Option<&str>,
        request: BroadcastRequest<'_>,
    ) -> Result<BroadcastStarted, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, channel_id.map(ChannelId::from)).await;
                r.join_as_broadcaster(sid, channel_id, request)
            }
            Registry::Cluster(r) => r.join_as_broadcaster(sid, channel_id, request).await,
        }
    }

    /// Puts a viewer in the waiting room of a channel id without a broadcaster (`relay`: it
    /// joins the relay tree when the broadcaster arrives); `Ok(false)`: the channel exists
    /// (join it instead).
    pub async fn wait_for(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<bool, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.wait_for(sid, channel_id, relay)
            }
            Registry::Cluster(r) => r.wait_for(sid, channel_id, relay).await,
        }
    }

    /// How the channels stand, for `/metrics` (cluster mode: the whole deployment).
    pub async fn census(&self) -> Result<Census, ChannelError> {
        match self {
            Registry::Memory(r, _) => Ok(r.census()),
            Registry::Cluster(r) => r.census().await,
        }
    }

    /// The stored password hash of a private channel (`None`: public or unknown).
    pub async fn password_of(&self, channel_id: &str) -> Result<Option<String>, ChannelError> {
        match self {
            Registry::Memory(r, _) => Ok(r.password_of(channel_id)),
            Registry::Cluster(r) => r.password_of(channel_id).await,
        }
    }

    pub async fn list(&self) -> Result<Vec<ChannelSummary>, ChannelError> {
        match self {
            Registry::Memory(r, _) => Ok(r.list()),
            Registry::Cluster(r) => r.list().await,
        }
    }

    pub(crate) async fn join_as_viewer(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        request: ViewerRequest<'_>,
    ) -> Result<ViewerJoined, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.join_as_viewer(sid, channel_id, request)
            }
            Registry::Cluster(r) => r.join_as_viewer(sid, channel_id, request).await,
        }
    }

    /// A viewer's report about its place in the relay tree (`relay_ready`, `upstream_failed`,
    /// `upstream_stalled`, `relay_capacity`).
    pub(crate) async fn tree_op(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.tree_op(sid, channel_id, op)
            }
            Registry::Cluster(r) => r.tree_op(sid, channel_id, op).await,
        }
    }

    pub async fn expire_waits(&self, now: Moment) -> Expired {
        match self {
            Registry::Memory(r, _) => r.expire_waits(now),
            Registry::Cluster(r) => r.expire_waits(now).await,
        }
    }

    pub async fn authorize_relay(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<SocketId, ChannelError> {
        match self {
            Registry::Memory(r, _) => r.authorize_relay(sender, target, activity),
            Registry::Cluster(r) => r.authorize_relay(sender, target, activity).await,
        }
    }

    pub async fn set_alias(
        &self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        match self {
            Registry::Memory(r, _) => r.set_alias(sid, channel_id, alias),
            Registry::Cluster(r) => r.set_alias(sid, channel_id, alias).await,
        }
    }

    /// `send_message`: who hears a viewer's message; the message is kept in the history.
    pub async fn chat(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.chat(sid, channel_id, message)
            }
            Registry::Cluster(r) => r.chat(sid, channel_id, message).await,
        }
    }

    /// The channel's last chat messages, oldest first, for a joining viewer.
    pub async fn chat_history(&self, channel_id: &str) -> Result<Vec<ChatMessage>, ChannelError> {
        match self {
            Registry::Memory(r, _) => Ok(r.chat_history(channel_id)),
            Registry::Cluster(r) => r.chat_history(channel_id).await,
        }
    }

    /// The broadcaster's own chat message: who hears it; it is kept in the history.
    pub async fn broadcaster_message(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.broadcaster_message(sid, channel_id, message)
            }
            Registry::Cluster(r) => r.broadcaster_message(sid, channel_id, message).await,
        }
    }

    /// `create_invite`: the invitation generation a new invitation carries (see `invites`).
    pub async fn create_invite(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<u64, ChannelError> {
        match self {
            Registry::Memory(r, _) => r.create_invite(sid, channel_id),
            Registry::Cluster(r) => r.create_invite(sid, channel_id).await,
        }
    }

    /// `rotate_invites`: revokes every invitation to the channel issued so far.
    pub async fn rotate_invites(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<u64, ChannelError> {
        match self {
            Registry::Memory(r, _) => r.rotate_invites(sid, channel_id),
            Registry::Cluster(r) => r.rotate_invites(sid, channel_id).await,
        }
    }

    /// `list_viewers`: the channel's viewers, for its broadcaster's moderation.
    pub async fn list_viewers(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<ViewerEntry>, ChannelError> {
        match self {
            Registry::Memory(r, _) => r.list_viewers(sid, channel_id),
            Registry::Cluster(r) => r.list_viewers(sid, channel_id).await,
        }
    }

    /// `remove_viewer`: the viewer leaves the channel (banned with `ban`).
    pub async fn remove_viewer(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
    ) -> Result<Removal, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.remove_viewer(sid, channel_id, viewer, ban)
            }
            Registry::Cluster(r) => r.remove_viewer(sid, channel_id, viewer, ban).await,
        }
    }

    /// `unban_all`: forgets the channel's bans.
    pub async fn unban_all(&self, sid: &SocketId, channel_id: &str) -> Result<(), ChannelError> {
        match self {
            Registry::Memory(r, _) => r.unban_all(sid, channel_id),
            Registry::Cluster(r) => r.unban_all(sid, channel_id).await,
        }
    }

    /// `mute_viewer`: mutes or unmutes a viewer's chat.
    pub async fn mute_viewer(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        muted: bool,
    ) -> Result<(), ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.mute_viewer(sid, channel_id, viewer, muted)
            }
            Registry::Cluster(r) => r.mute_viewer(sid, channel_id, viewer, muted).await,
        }
    }

    /// `remove_message`: removes a message from the history; who is told.
    pub async fn remove_message(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Told, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.remove_message(sid, channel_id, message_id)
            }
            Registry::Cluster(r) => r.remove_message(sid, channel_id, message_id).await,
        }
    }

    /// `chat_settings`: slow mode and chat off; who is told.
    pub async fn set_chat_settings(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, Told), ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.set_chat_settings(sid, channel_id, change)
            }
            Registry::Cluster(r) => r.set_chat_settings(sid, channel_id, change).await,
        }
    }

    pub async fn stop_broadcast(
        &self,
        held: &Held,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<BroadcastStopped, ChannelError> {
        match self {
            Registry::Memory(r, turns) => {
                turns.take(held, one(channel_id)).await;
                r.stop_broadcast(sid, channel_id)
            }
            Registry::Cluster(r) => r.stop_broadcast(sid, channel_id).await,
        }
    }

    /// Removes a socket everywhere. In cluster mode a failure leaves its entries for the
    /// dead-node reaper or a retry; the departure is then empty.
    pub async fn disconnect(&self, held: &Held, sid: &SocketId) -> Departure {
        match self {
            Registry::Memory(r, turns) => {
                // Read again once the turns are held: another socket's event that evicts this
                // one may run while this socket's own event joins a channel.
                let mut ids = r.channels_of(sid);
                loop {
                    turns.take(held, ids.iter().cloned()).await;
                    let now = r.channels_of(sid);
                    if now.iter().all(|id| ids.contains(id)) {
                        break;
                    }
                    ids.extend(now);
                }
                r.disconnect(sid)
            }
            Registry::Cluster(r) => r.disconnect(sid).await,
        }
    }

    pub async fn sweep(&self, now: Moment) -> Vec<ClosedChannel> {
        match self {
            Registry::Memory(r, _) => r.sweep(now),
            Registry::Cluster(r) => r.sweep(now).await,
        }
    }

    pub async fn stats(&self) -> Stats {
        match self {
            Registry::Memory(r, _) => r.stats(),
            Registry::Cluster(r) => r.stats().await,
        }
    }
}
