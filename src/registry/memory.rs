//! The in-memory backend ([`MemoryRegistry`]): the whole `State` behind one lock, which each
//! method takes to run one rule.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::broadcaster::{BroadcastRequest, BroadcastStarted, BroadcastStopped};
use super::chat::{ChatDelivery, ChatMessage};
use super::clock::{Moment, unix_now};
use super::errors::ChannelError;
use super::expiry::Expired;
use super::ids::{ChannelId, SocketId};
use super::listing::{Census, ChannelSummary};
use super::membership::{Departure, ViewerJoined, ViewerRequest};
use super::model::{ClosedChannel, RegistryLimits, State};
use super::moderation::{ChatPace, ChatSettings, ChatSettingsChange, Removal, Told, ViewerEntry};
use super::relay::Activity;
use super::tree_events::{TreeEvent, TreeOp};

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
    /// Each viewer's last message per channel, for slow mode.
    pace: ChatPace,
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
                pace: ChatPace::default(),
            }),
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.shared.limits
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
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
            key: None,
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

    /// Puts a viewer in the waiting room of a channel id without a broadcaster (`relay`: it
    /// joins the relay tree when it becomes a viewer); `Ok(false)`: the channel exists (join
    /// it instead).
    pub fn wait_for(
        &self,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<bool, ChannelError> {
        self.state().wait_for(
            &self.shared.limits,
            sid,
            &ChannelId::from(channel_id),
            relay,
            Moment::now(),
        )
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

    /// A viewer's report about its place in the relay tree (`relay_ready`, `upstream_failed`,
    /// `upstream_stalled`, `relay_capacity`).
    pub(crate) fn tree_op(
        &self,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        self.state().tree_op(sid, channel_id, op, Moment::now())
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

    /// How many viewers the channels `sid` broadcasts have.
    pub fn audience(&self, sid: &SocketId) -> usize {
        let state = self.state();
        state.sockets.get(sid).map_or(0, |m| {
            m.broadcasting
                .iter()
                .filter_map(|id| state.channels.get(id))
                .map(|c| c.viewers.len())
                .sum()
        })
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

    /// `send_message`: resolves the sender's display name and everyone in the channel, the
    /// sender included, and keeps the message in the channel's history, under the same lock
    /// (so the history's order is the order messages were accepted in).
    pub fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.recorded(channel_id, |state| {
            state.chat(sid, channel_id, message, unix_now(), &self.shared.pace)
        })
    }

    /// `broadcaster_message`: checks that `sid` broadcasts `channel_id`; returns everyone in
    /// the channel, and keeps the message in its history.
    pub fn broadcaster_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.recorded(channel_id, |state| {
            state.broadcaster_message(sid, channel_id, message, unix_now())
        })
    }

    /// Runs a chat rule and keeps the message it accepted in the channel's history, under one
    /// lock (so the history's order is the order messages were accepted in).
    fn recorded(
        &self,
        channel_id: &str,
        rule: impl FnOnce(&State) -> Result<ChatDelivery, ChannelError>,
    ) -> Result<ChatDelivery, ChannelError> {
        let mut state = self.state();
        let delivery = rule(&state)?;
        state.remember_message(
            channel_id,
            delivery.message.clone(),
            self.limits().chat_history,
        );
        Ok(delivery)
    }

    /// The channel's last chat messages, oldest first (none for an unknown channel).
    pub fn chat_history(&self, channel_id: &str) -> Vec<ChatMessage> {
        self.state().chat_history(channel_id)
    }

    /// The generation a new invitation to the channel carries (its broadcaster only).
    pub fn create_invite(&self, sid: &SocketId, channel_id: &str) -> Result<u64, ChannelError> {
        self.state().create_invite(sid, channel_id)
    }

    /// Revokes every invitation to the channel issued so far (its broadcaster only).
    pub fn rotate_invites(&self, sid: &SocketId, channel_id: &str) -> Result<u64, ChannelError> {
        self.state().rotate_invites(sid, channel_id, Moment::now())
    }

    /// `list_viewers` (its broadcaster only).
    pub fn list_viewers(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<ViewerEntry>, ChannelError> {
        self.state().list_viewers(sid, channel_id)
    }

    /// `remove_viewer`, with or without a ban (its broadcaster only).
    pub fn remove_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
    ) -> Result<Removal, ChannelError> {
        self.state()
            .remove_viewer(sid, channel_id, viewer, ban, Moment::now())
    }

    pub fn unban_all(&self, sid: &SocketId, channel_id: &str) -> Result<(), ChannelError> {
        self.state().unban_all(sid, channel_id)
    }

    pub fn mute_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        muted: bool,
    ) -> Result<(), ChannelError> {
        self.state().mute_viewer(sid, channel_id, viewer, muted)
    }

    /// `remove_message`: forgets it from the history; returns who is told.
    pub fn remove_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Told, ChannelError> {
        self.state().remove_message(sid, channel_id, message_id)
    }

    pub fn set_chat_settings(
        &self,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, Told), ChannelError> {
        self.state().set_chat_settings(sid, channel_id, change)
    }

    /// Marks the broadcast stopped: returns the viewers to tell. The channel stays.
    pub fn stop_broadcast(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<BroadcastStopped, ChannelError> {
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
