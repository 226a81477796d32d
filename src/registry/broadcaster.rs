//! A broadcast's life: going live (a new channel, within the limits on channels per socket, per
//! address and in all), going live again, resuming after a dropped connection, taking over from
//! another device, and stopping.

use std::collections::HashMap;
use std::net::IpAddr;

use rand::RngExt;

use super::chat::ChatHistory;
use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::model::{Channel, RegistryLimits, State, Waiter};
use super::moderation::{ChatSettings, ClientIdentity, Moderation};
use super::secrets;
use super::tree::Tree;
use super::tree_events::TreeEvent;

/// Result of a successful `join_as_broadcaster`.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastStarted {
    pub channel_id: ChannelId,
    /// The channel is resumable: its `broadcaster_ready` carries the fresh token.
    pub resumable: bool,
    /// Viewers that waited for this channel id: they get `broadcaster_joined`.
    pub lobby: Vec<SocketId>,
    /// Those of them that are viewers of the channel now (all of them, unless it is private:
    /// a password is checked when its viewer joins, and a waiter gave none that could be).
    pub admitted: Vec<SocketId>,
    /// The channel is private: its waiters must join with the password.
    pub private: bool,
    /// Viewers in the channel now (its broadcaster's `viewer_count` when waiters came in).
    pub viewer_count: usize,
    /// A takeover: the socket that broadcast until now (it is told it was replaced).
    pub replaced: Option<SocketId>,
    /// The broadcaster came back to its held channel (with its resume token).
    pub resumed: bool,
    /// Viewers already in the channel when its owner goes live again; they are told so.
    pub waiting_viewers: Vec<SocketId>,
    /// Their fresh feeders, sent after `broadcaster_available`.
    pub tree: Vec<TreeEvent>,
    /// The channel existed and was live before this join (neither stopped nor new).
    pub was_live: bool,
    /// The channel's chat settings, when they differ from a new channel's (a broadcaster that
    /// resumes, takes over or goes live again shows them as they are).
    pub chat_settings: Option<ChatSettings>,
}

/// Result of a successful `stop_broadcast`.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastStopped {
    /// The viewers to tell.
    pub viewers: Vec<SocketId>,
    /// Most viewers at once during the broadcast that ends here.
    pub peak_viewers: usize,
    /// It was live until now (not already stopped).
    pub was_live: bool,
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
    /// Digest of the client key its page presented (its page reads message ids).
    pub(crate) key: Option<&'a str>,
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
            key,
        } = request;
        let identity = ClientIdentity {
            key,
            addr: None,
            codes: false,
        };
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
            let was_live = !channel.stopped;
            if !was_live {
                // A new broadcast: its peak counts from the audience still in the channel.
                channel.peak_viewers = channel.viewers.len();
            }
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
                admitted: Vec::new(),
                private: channel.password.is_some(),
                viewer_count: channel.viewers.len(),
                replaced,
                resumed: resume,
                waiting_viewers: channel.viewers.keys().cloned().collect(),
                tree,
                was_live,
                chat_settings: channel
                    .moderation
                    .has_settings()
                    .then(|| channel.moderation.settings()),
            };
            // The previous broadcaster's socket keeps its identity while it watches.
            if previous != *sid && !channel.viewers.contains_key(&previous) {
                channel.identities.remove(&previous);
            }
            channel.identify(sid, identity);
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
        let owned =
            self.broadcasting_elsewhere + self.sockets.get(sid).map_or(0, |m| m.broadcasting.len());
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
        let private = password.is_some();
        let mut channel = Channel {
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
            // Random, not 0: invitations to an earlier channel of the same id (reaped, closed,
            // or lost with an in-memory server's restart) must never admit to this one.
            invite_generation: rand::rng().random(),
            viewer_tokens: HashMap::new(),
            held_viewers: HashMap::new(),
            peak_viewers: 0,
            history: ChatHistory::default(),
            identities: HashMap::new(),
            moderation: Moderation::default(),
        };
        channel.identify(sid, identity);
        self.sockets
            .entry(sid.clone())
            .or_default()
            .broadcasting
            .insert(channel_id.clone());
        let mut waiters: Vec<(SocketId, Waiter)> = self
            .lobbies
            .remove(&channel_id)
            .map(|lobby| lobby.into_iter().collect())
            .unwrap_or_default();
        waiters.sort_by(|(a, wa), (b, wb)| (wa.since, a).cmp(&(wb.since, b)));
        self.waiting_total = self.waiting_total.saturating_sub(waiters.len());
        let lobby: Vec<SocketId> = waiters.iter().map(|(viewer, _)| viewer.clone()).collect();
        for viewer in &lobby {
            self.unindex(viewer, &channel_id, |m| &mut m.waiting);
        }
        let admitted = if private { Vec::new() } else { lobby.clone() };
        let tree = self.admit_waiters(&mut channel, &waiters, private, now);
        let viewer_count = channel.viewers.len();
        self.channels.insert(channel_id.clone(), channel);
        self.track_waits(&channel_id);
        Ok(BroadcastStarted {
            channel_id,
            resumable,
            lobby,
            admitted,
            private,
            viewer_count,
            replaced: None,
            resumed: false,
            waiting_viewers: Vec::new(),
            tree,
            was_live: false,
            chat_settings: None,
        })
    }

    /// Makes the viewers that waited for a new channel its viewers, in order of arrival, as
    /// their own joins would have (tree places included), so that each may send its offer as
    /// soon as it hears `broadcaster_joined`. Not in a private channel: nobody checked their
    /// password (they join with it, as anybody else).
    fn admit_waiters(
        &mut self,
        channel: &mut Channel,
        waiters: &[(SocketId, Waiter)],
        private: bool,
        now: Moment,
    ) -> Vec<TreeEvent> {
        let mut tree = Vec::new();
        if private || waiters.is_empty() {
            return tree;
        }
        let mut notices = Vec::new();
        for (viewer, waiter) in waiters {
            channel.viewers.insert(viewer.clone(), None);
            // A broadcaster that waited for its own channel watches it as a leaf.
            let relay = waiter.relay && *viewer != channel.broadcaster;
            notices.extend(channel.tree.join(viewer, relay, now));
            self.sockets
                .entry(viewer.clone())
                .or_default()
                .watching
                .insert(channel.id.clone());
        }
        channel.peak_viewers = channel.viewers.len();
        channel.address(notices, true, &mut tree);
        tree
    }

    pub(crate) fn stop_broadcast(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        now: Moment,
    ) -> Result<BroadcastStopped, ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFound(None))?;
        if channel.broadcaster != *sid {
            return Err(ChannelError::NotTheBroadcaster);
        }
        let was_live = !channel.stopped;
        channel.last_activity = now;
        channel.stopped = true;
        channel.tree.stop();
        let stopped = BroadcastStopped {
            viewers: channel.viewers.keys().cloned().collect(),
            peak_viewers: channel.peak_viewers,
            was_live,
        };
        let key = channel.id.clone();
        self.track_waits(&key);
        Ok(stopped)
    }
}
