//! Moderation by the channel's broadcaster: who each member is beyond its connection (its
//! client key, its address), removing and banning viewers, muting them, removing messages,
//! slow mode and chat off. EXTENSIONS.md, "Moderation", is the contract.
//!
//! Bans, mutes and the chat settings are part of the channel, so both backends apply the same
//! rules (cluster mode: every node, from the channel's document) and they go with the channel.
//! The time of a viewer's last message (slow mode) is not: a connection lives on one node, so
//! its node keeps it ([`ChatPace`]) and the channel is not rewritten for every message.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chat::default_name;
use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::membership::ViewerLeft;
use super::model::{Channel, State};

/// The longest slow mode a broadcaster may set, in seconds.
pub const MAX_SLOW_MODE: u32 = 3600;

/// Who a connection is beyond its socket id, as its join told the registry: what a ban or a
/// mute holds on to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientIdentity<'a> {
    /// Digest of the client key the page presented (a page that keeps one is a modern page).
    pub(crate) key: Option<&'a str>,
    /// Its address, where the operator lets bans hold addresses (`--ban-by-address`).
    pub(crate) addr: Option<IpAddr>,
}

/// What the channel remembers of a member that presented a key or an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<IpAddr>,
}

impl Identity {
    fn of(client: ClientIdentity) -> Option<Self> {
        (client.key.is_some() || client.addr.is_some()).then(|| Self {
            key: client.key.map(str::to_owned),
            addr: client.addr,
        })
    }
}

/// A channel's moderation: its bans, mutes and chat settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Moderation {
    /// Marks of banned clients: `k:<key digest>`, `a:<address>`, `s:<socket id>`.
    #[serde(default, skip_serializing_if = "HashSet::is_empty")]
    bans: HashSet<String>,
    /// Marks of muted clients: `k:<key digest>` or, for a client without a key, `s:<socket id>`.
    #[serde(default, skip_serializing_if = "HashSet::is_empty")]
    muted: HashSet<String>,
    /// Seconds between two messages of one viewer (0: off).
    #[serde(default)]
    pub(crate) slow_mode: u32,
    #[serde(default)]
    pub(crate) chat_off: bool,
}

impl Moderation {
    fn is_banned(&self, sid: &SocketId, client: ClientIdentity) -> bool {
        self.bans.contains(&socket_mark(sid))
            || client.key.is_some_and(|k| self.bans.contains(&key_mark(k)))
            || client
                .addr
                .is_some_and(|a| self.bans.contains(&addr_mark(a)))
    }

    /// The chat settings differ from a new channel's.
    pub(crate) fn has_settings(&self) -> bool {
        self.slow_mode > 0 || self.chat_off
    }

    pub(crate) fn settings(&self) -> ChatSettings {
        ChatSettings {
            slow_mode: self.slow_mode,
            chat_enabled: !self.chat_off,
        }
    }
}

fn socket_mark(sid: &SocketId) -> String {
    format!("s:{sid}")
}

fn key_mark(digest: &str) -> String {
    format!("k:{digest}")
}

fn addr_mark(addr: IpAddr) -> String {
    format!("a:{addr}")
}

/// The mark a mute holds: the member's key where it has one, else its connection.
fn mute_mark(channel: &Channel, sid: &SocketId) -> String {
    match channel.identities.get(sid).and_then(|i| i.key.as_deref()) {
        Some(key) => key_mark(key),
        None => socket_mark(sid),
    }
}

/// The chat settings a broadcaster sets (`chat_settings`), as everybody is told them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChatSettings {
    pub slow_mode: u32,
    pub chat_enabled: bool,
}

/// What a `chat_settings` changes: a field left out keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatSettingsChange {
    pub slow_mode: Option<u32>,
    pub chat_enabled: Option<bool>,
}

/// One viewer, as the broadcaster's viewer list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewerEntry {
    pub id: SocketId,
    pub name: String,
    pub muted: bool,
}

/// A viewer the broadcaster removed from its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub viewer: SocketId,
    pub banned: bool,
    /// The viewer presented a client key: its notice carries the error code.
    pub modern: bool,
    /// What its leaving changed, for its peers (as on a disconnect).
    pub left: ViewerLeft,
}

/// The members of a channel an announcement to modern pages goes to.
pub type ModernMembers = Vec<SocketId>;

impl Channel {
    /// Whether the member presented a client key (its page reads message ids).
    pub(crate) fn is_modern(&self, sid: &SocketId) -> bool {
        self.identities.get(sid).is_some_and(|i| i.key.is_some())
    }

    /// Members whose pages read message ids, the broadcaster first.
    pub(crate) fn modern_members(&self) -> ModernMembers {
        let mut members = Vec::new();
        if self.is_modern(&self.broadcaster) {
            members.push(self.broadcaster.clone());
        }
        members.extend(
            self.viewers
                .keys()
                .filter(|v| **v != self.broadcaster && self.is_modern(v))
                .cloned(),
        );
        members
    }

    /// Records who a member is, or forgets it when it presented nothing.
    pub(crate) fn identify(&mut self, sid: &SocketId, client: ClientIdentity) {
        match Identity::of(client) {
            Some(identity) => {
                self.identities.insert(sid.clone(), identity);
            }
            None => {
                self.identities.remove(sid);
            }
        }
    }

    /// A viewer's join, refused when the broadcaster banned it.
    pub(crate) fn admit(&self, sid: &SocketId, client: ClientIdentity) -> Result<(), ChannelError> {
        if self.moderation.is_banned(sid, client) {
            return Err(ChannelError::Banned);
        }
        Ok(())
    }

    /// A viewer's chat message at `now` (unix seconds), after its previous one at `last_sent`.
    pub(crate) fn check_chat(
        &self,
        sid: &SocketId,
        now: f64,
        last_sent: Option<f64>,
    ) -> Result<(), ChannelError> {
        let moderation = &self.moderation;
        if moderation.chat_off {
            return Err(ChannelError::ChatOff);
        }
        if !moderation.muted.is_empty() && moderation.muted.contains(&mute_mark(self, sid)) {
            return Err(ChannelError::Muted);
        }
        if moderation.slow_mode > 0
            && let Some(last) = last_sent
        {
            let wait = f64::from(moderation.slow_mode) - (now - last);
            if wait > 0.0 {
                // Whole seconds, rounded up: "wait 0 s" would be a lie.
                return Err(ChannelError::SlowMode(wait.ceil() as u32));
            }
        }
        Ok(())
    }
}

impl State {
    /// The channel, when `sid` is its present broadcaster: only it moderates.
    fn moderated(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<&mut Channel, ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFound(None))?;
        if channel.present_broadcaster() != Some(sid) {
            return Err(ChannelError::NotTheBroadcaster);
        }
        Ok(channel)
    }

    /// `list_viewers`: the channel's viewers by name.
    pub(crate) fn list_viewers(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<ViewerEntry>, ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        let mut viewers: Vec<ViewerEntry> = channel
            .viewers
            .iter()
            .filter(|(viewer, _)| **viewer != channel.broadcaster)
            .map(|(viewer, alias)| ViewerEntry {
                id: viewer.clone(),
                name: alias
                    .as_deref()
                    .map_or_else(|| default_name(viewer), str::to_owned),
                muted: channel
                    .moderation
                    .muted
                    .contains(&mute_mark(channel, viewer)),
            })
            .collect();
        viewers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(viewers)
    }

    /// `remove_viewer`: the viewer leaves the channel as on a disconnect, except that its
    /// place is not held for it; with `ban`, it cannot join again while the channel lives.
    pub(crate) fn remove_viewer(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
        now: Moment,
    ) -> Result<Removal, ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        if *viewer == channel.broadcaster || !channel.viewers.contains_key(viewer) {
            return Err(ChannelError::ViewerNotFound);
        }
        let identity = channel.identities.get(viewer).cloned().unwrap_or_default();
        let modern = identity.key.is_some();
        if ban {
            let marks = &mut channel.moderation.bans;
            marks.insert(socket_mark(viewer));
            if let Some(key) = &identity.key {
                marks.insert(key_mark(key));
            }
            if let Some(addr) = identity.addr {
                marks.insert(addr_mark(addr));
            }
        }
        channel.viewers.remove(viewer);
        channel.identities.remove(viewer);
        channel.viewer_tokens.remove(viewer);
        let notices = channel.tree.leave(viewer, now);
        let mut tree = Vec::new();
        channel.address(notices, true, &mut tree);
        let left = ViewerLeft {
            channel_id: channel.id.clone(),
            broadcaster: channel.broadcaster.clone(),
            viewer_count: channel.viewers.len(),
            tree,
        };
        let key = channel.id.clone();
        self.unindex(viewer, &key, |m| &mut m.watching);
        self.track_waits(&key);
        Ok(Removal {
            viewer: viewer.clone(),
            banned: ban,
            modern,
            left,
        })
    }

    /// `unban_all`: forgets every ban of the channel.
    pub(crate) fn unban_all(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<(), ChannelError> {
        self.moderated(sid, channel_id)?.moderation.bans.clear();
        Ok(())
    }

    /// `mute_viewer`: a muted viewer's messages are refused, across its reconnects when it
    /// presented a key.
    pub(crate) fn mute_viewer(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        muted: bool,
    ) -> Result<(), ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        if *viewer == channel.broadcaster || !channel.viewers.contains_key(viewer) {
            return Err(ChannelError::ViewerNotFound);
        }
        let mark = mute_mark(channel, viewer);
        if muted {
            channel.moderation.muted.insert(mark);
        } else {
            channel.moderation.muted.remove(&mark);
        }
        Ok(())
    }

    /// `remove_message`: checks the caller may; returns who is told (the history is each
    /// backend's to edit).
    pub(crate) fn remove_message(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<ModernMembers, ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        channel.history.forget(message_id);
        Ok(channel.modern_members())
    }

    /// `chat_settings`: slow mode and chat off; returns the settings now and who is told.
    pub(crate) fn set_chat_settings(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, ModernMembers), ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        if let Some(slow_mode) = change.slow_mode {
            channel.moderation.slow_mode = slow_mode.min(MAX_SLOW_MODE);
        }
        if let Some(enabled) = change.chat_enabled {
            channel.moderation.chat_off = !enabled;
        }
        Ok((channel.moderation.settings(), channel.modern_members()))
    }
}

/// When each of this node's viewers last wrote in each channel, for slow mode. Entries vanish
/// an hour after the message (the longest slow mode), and nobody needs to be told: a cache.
#[derive(Clone)]
pub struct ChatPace(mini_moka::sync::Cache<(SocketId, ChannelId), f64>);

impl Default for ChatPace {
    fn default() -> Self {
        Self(
            mini_moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(u64::from(MAX_SLOW_MODE)))
                .build(),
        )
    }
}

impl ChatPace {
    pub(crate) fn last(&self, sid: &SocketId, channel_id: &str) -> Option<f64> {
        self.0.get(&(sid.clone(), ChannelId::from(channel_id)))
    }

    pub(crate) fn sent(&self, sid: &SocketId, channel_id: &str, at: f64) {
        self.0
            .insert((sid.clone(), ChannelId::from(channel_id)), at);
    }
}
