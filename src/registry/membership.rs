//! Viewers joining a channel (private channels, resumable viewers) and sockets leaving: a
//! disconnect closes or holds the socket's own channels and takes it out of those it watched.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::model::ClosedChannel;
use super::model::{Channel, HeldViewer, State};
use super::moderation::{ChatSettings, ClientIdentity};
use super::tree_events::TreeEvent;

/// Result of a successful `join_as_viewer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewerJoined {
    pub broadcaster: SocketId,
    pub viewer_count: usize,
    /// The broadcaster is told the count by someone else: in cluster mode, the channel's
    /// owner tells it once per batch, in the batches' order (`cluster/batch.rs`); the caller
    /// does not.
    #[serde(default)]
    pub count_told: bool,
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
    /// The channel's chat settings, when the broadcaster changed them from a new channel's.
    pub chat_settings: Option<ChatSettings>,
}

/// The options of a `join_as_viewer` besides the ids.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ViewerRequest<'a> {
    /// It joins the relay tree (else it is a leaf fed by the broadcaster).
    pub(crate) relay: bool,
    /// For a private channel: the stored hash the caller's password was verified against.
    pub(crate) password: Option<&'a str>,
    /// For a private channel: the generation named by the caller's valid invitation (its
    /// signature, channel and expiry already checked), instead of a password.
    pub(crate) invite: Option<u64>,
    /// It asked for resuming (or presented a token).
    pub(crate) resumable: bool,
    /// Digest of the resume token it presented, if any.
    pub(crate) presented: Option<&'a str>,
    /// Digest of the token its join answer will carry.
    pub(crate) fresh: &'a str,
    /// Who it is beyond its connection: what a ban or a mute holds on to.
    pub(crate) client: ClientIdentity<'a>,
}

/// A [`ViewerRequest`] that owns its strings: what a join carries when another task runs it
/// (cluster mode runs a node's joins to one channel together, see `cluster/batch.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OwnedViewerRequest {
    relay: bool,
    password: Option<String>,
    invite: Option<u64>,
    resumable: bool,
    presented: Option<String>,
    fresh: String,
    key: Option<String>,
    addr: Option<std::net::IpAddr>,
    codes: bool,
}

impl From<ViewerRequest<'_>> for OwnedViewerRequest {
    fn from(r: ViewerRequest<'_>) -> Self {
        Self {
            relay: r.relay,
            password: r.password.map(str::to_owned),
            invite: r.invite,
            resumable: r.resumable,
            presented: r.presented.map(str::to_owned),
            fresh: r.fresh.to_owned(),
            key: r.client.key.map(str::to_owned),
            addr: r.client.addr,
            codes: r.client.codes,
        }
    }
}

impl OwnedViewerRequest {
    pub(crate) fn as_request(&self) -> ViewerRequest<'_> {
        ViewerRequest {
            relay: self.relay,
            password: self.password.as_deref(),
            invite: self.invite,
            resumable: self.resumable,
            presented: self.presented.as_deref(),
            fresh: &self.fresh,
            client: ClientIdentity {
                key: self.key.as_deref(),
                addr: self.addr,
                codes: self.codes,
            },
        }
    }
}

/// A channel held for its broadcaster, whose connection dropped: its viewers are told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldChannel {
    pub channel_id: ChannelId,
    pub viewers: Vec<SocketId>,
}

/// A viewer left a channel; its broadcaster may want the new count, and the tree healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewerLeft {
    pub channel_id: ChannelId,
    pub broadcaster: SocketId,
    pub viewer_count: usize,
    /// As [`ViewerJoined::count_told`].
    #[serde(default)]
    pub count_told: bool,
    pub tree: Vec<TreeEvent>,
}

/// Everything a disconnect changed.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Departure {
    pub closed: Vec<ClosedChannel>,
    pub held: Vec<HeldChannel>,
    pub left: Vec<ViewerLeft>,
}

impl State {
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
            invite,
            resumable,
            presented,
            fresh,
            client,
        } = request;
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or_else(|| ChannelError::NotFound(Some(ChannelId::from(channel_id))))?;
        if let Some(stored) = &channel.password
            && password != Some(stored.as_str())
            && invite != Some(channel.invite_generation)
        {
            // An invitation that got this far was revoked by `rotate_invites`.
            return Err(match (invite, password) {
                (Some(_), _) => ChannelError::InvalidInvite,
                (None, Some(_)) => ChannelError::WrongPassword,
                // Made private after the caller looked: it brought no password for it.
                (None, None) => ChannelError::PasswordRequired,
            });
        }
        if *sid != channel.broadcaster {
            // The broadcaster watching its own channel is never refused its own channel (tabs of
            // one browser share a key, so it may have banned its own test tab).
            channel.admit(sid, client)?;
        }
        channel.last_activity = now;
        channel.held_viewers.retain(|_, held| held.until > now);
        let returning = presented.and_then(|digest| channel.held_viewers.remove(digest));
        let alias = returning.and_then(|held| held.alias);
        let slot = channel.viewers.entry(sid.clone()).or_insert(None);
        if alias.is_some() {
            slot.clone_from(&alias);
        }
        channel.peak_viewers = channel.peak_viewers.max(channel.viewers.len());
        if *sid != channel.broadcaster {
            channel.identify(sid, client);
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
            count_told: false,
            stopped: channel.stopped,
            away: channel.away_until.is_some(),
            resumable: resumable || presented.is_some(),
            alias: alias.map(|a| a.to_string()),
            tree,
            chat_settings: channel
                .moderation
                .has_settings()
                .then(|| channel.moderation.settings()),
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

    /// `grace`: how long a resumable channel is held for its broadcaster.
    pub(crate) fn disconnect(&mut self, sid: &SocketId, grace: Duration, now: Moment) -> Departure {
        let Some(membership) = self.sockets.remove(sid) else {
            return Departure::default();
        };
        let mut departure = Departure::default();
        for channel_id in &membership.waiting {
            if let Some(lobby) = self.lobbies.get_mut(channel_id)
                && lobby.remove(sid).is_some()
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
                && let Some(left) = channel.leave_viewer(sid, grace, now)
            {
                departure.left.push(left);
                self.track_waits(&channel_id);
            }
        }
        departure
    }
}

impl Channel {
    /// A viewer leaves: its tree children move, and a resumable viewer's place is held for it
    /// for `grace` (none: zero). `None` when it did not watch. The socket index is the
    /// caller's to update.
    pub(crate) fn leave_viewer(
        &mut self,
        sid: &SocketId,
        grace: Duration,
        now: Moment,
    ) -> Option<ViewerLeft> {
        let alias = self.viewers.remove(sid)?;
        if *sid != self.broadcaster {
            self.identities.remove(sid);
        }
        self.held_viewers.retain(|_, held| held.until > now);
        if let Some(digest) = self.viewer_tokens.remove(sid)
            && !grace.is_zero()
        {
            let held = HeldViewer {
                alias,
                until: now + grace,
            };
            self.held_viewers.insert(digest, held);
        }
        let notices = self.tree.leave(sid, now);
        let mut tree = Vec::new();
        self.address(notices, true, &mut tree);
        Some(ViewerLeft {
            channel_id: self.id.clone(),
            broadcaster: self.broadcaster.clone(),
            viewer_count: self.viewers.len(),
            count_told: false,
            tree,
        })
    }
}
