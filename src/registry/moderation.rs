//! Moderation by the channel's broadcaster: who each member is beyond its connection (its
//! client key, its address), removing and banning viewers, muting them, removing messages,
//! slow mode and chat off. EXTENSIONS.md, "Moderation", is the contract.
//!
//! Bans, mutes and the chat settings are part of the channel, so both backends apply the same
//! rules (cluster mode: every node, from the channel's document) and they go with the channel.
//! The time of a viewer's last message (slow mode) is not: a connection lives on one node, so
//! its node keeps it ([`ChatPace`]) and the channel is not rewritten for every message.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
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

/// Most bans, and most mutes, one channel holds: its document stays small whatever a
/// broadcaster clicks. Marks of connections (useless once the connection is gone) are dropped
/// first when a set is full.
pub const MAX_MARKS: usize = 1000;

/// Who a connection is beyond its socket id, as its join told the registry: what a ban or a
/// mute holds on to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientIdentity<'a> {
    /// Digest of the client key the page presented (a page that keeps one is a modern page).
    pub(crate) key: Option<&'a str>,
    /// Its address, where the operator lets bans hold addresses (`--ban-by-address`).
    pub(crate) addr: Option<IpAddr>,
    /// It asked for error codes: a notice to it (removed, banned) carries the code. Kept in
    /// the channel because the notice may leave from another node than the viewer's own.
    pub(crate) codes: bool,
}

/// What the channel remembers of a member that presented a key, an address or asked for codes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) codes: bool,
}

impl Identity {
    fn of(client: ClientIdentity) -> Option<Self> {
        (client.key.is_some() || client.addr.is_some() || client.codes).then(|| Self {
            key: client.key.map(str::to_owned),
            addr: client.addr,
            codes: client.codes,
        })
    }

    fn client(&self) -> ClientIdentity<'_> {
        ClientIdentity {
            key: self.key.as_deref(),
            addr: self.addr,
            codes: self.codes,
        }
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
        !self.bans.is_empty()
            && (self.bans.contains(&socket_mark(sid))
                || client.key.is_some_and(|k| self.bans.contains(&key_mark(k)))
                || client
                    .addr
                    .is_some_and(|a| self.bans.contains(&addr_mark(a))))
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

/// An IPv4 address as it is; an IPv6 address by its /64, the network one subscriber gets (a
/// client picks a new address within it at will).
fn addr_mark(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => format!("a:{v4}"),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("a:{}/64", Ipv6Addr::from(network))
        }
    }
}

/// Adds a mark to a bounded set: when full, the marks of connections are dropped first; `false`
/// when it is full of marks that hold keys or addresses.
fn add_mark(marks: &mut HashSet<String>, mark: String) -> bool {
    if marks.len() >= MAX_MARKS && !marks.contains(&mark) {
        marks.retain(|m| !m.starts_with("s:"));
        if marks.len() >= MAX_MARKS {
            return false;
        }
    }
    marks.insert(mark);
    true
}

/// The chat settings a broadcaster sets (`chat_settings`), as everybody is told them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One connection a removal took out of the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    pub viewer: SocketId,
    /// It asked for error codes: its notice carries the code.
    pub codes: bool,
}

/// What `remove_viewer` did: the named viewer, and with a ban every other connection of the
/// same client (same key, or same address where bans hold addresses), left the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub removed: Vec<Removed>,
    pub banned: bool,
    /// What their leaving changed, for their peers (as on a disconnect).
    pub left: Vec<ViewerLeft>,
}

/// The members of a channel a moderation announcement goes to.
pub type Told = Vec<SocketId>;

impl Channel {
    /// Whether the member presented a client key (its page reads message ids).
    pub(crate) fn is_modern(&self, sid: &SocketId) -> bool {
        self.identities.get(sid).is_some_and(|i| i.key.is_some())
    }

    /// Members whose pages read message ids, and the broadcaster (which moderates, so it is
    /// told what it did) whatever its page.
    pub(crate) fn told_of_moderation(&self) -> Told {
        let mut members = vec![self.broadcaster.clone()];
        members.extend(
            self.viewers
                .keys()
                .filter(|v| **v != self.broadcaster && self.is_modern(v))
                .cloned(),
        );
        members
    }

    /// Everyone in the channel, the broadcaster first, split by whether their pages read
    /// message ids: (without, with).
    pub(crate) fn chat_audience(&self) -> (Vec<SocketId>, Vec<SocketId>) {
        let (mut plain, mut with_ids) = (Vec::new(), Vec::with_capacity(self.viewers.len() + 1));
        let viewers = self.viewers.keys().filter(|v| **v != self.broadcaster);
        for member in std::iter::once(&self.broadcaster).chain(viewers) {
            if self.is_modern(member) {
                with_ids.push(member.clone());
            } else {
                plain.push(member.clone());
            }
        }
        (plain, with_ids)
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

    /// Whether a member is banned now (a ban may name its client after this connection joined).
    fn is_banned_member(&self, sid: &SocketId) -> bool {
        let client = self
            .identities
            .get(sid)
            .map(Identity::client)
            .unwrap_or_default();
        self.moderation.is_banned(sid, client)
    }

    /// A viewer of the channel a moderation event names (never its broadcaster).
    fn named_viewer(&self, viewer: &SocketId) -> Result<(), ChannelError> {
        if *viewer == self.broadcaster || !self.viewers.contains_key(viewer) {
            return Err(ChannelError::ViewerNotFound);
        }
        Ok(())
    }

    /// The mark a mute (and slow mode) holds: the member's key where it has one, else its
    /// connection.
    fn member_mark(&self, sid: &SocketId) -> String {
        match self.identities.get(sid).and_then(|i| i.key.as_deref()) {
            Some(key) => key_mark(key),
            None => socket_mark(sid),
        }
    }

    /// A viewer's chat message at `now` (unix seconds), within the channel's moderation; a
    /// message it lets through counts for slow mode in `pace`.
    pub(crate) fn check_chat(
        &self,
        sid: &SocketId,
        now: f64,
        pace: &ChatPace,
    ) -> Result<(), ChannelError> {
        let moderation = &self.moderation;
        if moderation.chat_off {
            return Err(ChannelError::ChatOff);
        }
        if !moderation.muted.is_empty() && moderation.muted.contains(&self.member_mark(sid)) {
            return Err(ChannelError::Muted);
        }
        if self.is_banned_member(sid) {
            return Err(ChannelError::Banned);
        }
        if moderation.slow_mode > 0 {
            // By key where it has one, so that a reconnect does not reset the wait.
            let who = self.member_mark(sid);
            if let Some(last) = pace.last(&who, &self.id) {
                let wait = f64::from(moderation.slow_mode) - (now - last);
                if wait > 0.0 {
                    // Whole seconds, rounded up: "wait 0 s" would be a lie.
                    return Err(ChannelError::SlowMode(wait.ceil() as u32));
                }
            }
            pace.sent(who, &self.id, now);
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
                    .contains(&channel.member_mark(viewer)),
            })
            .collect();
        viewers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(viewers)
    }

    /// `remove_viewer`: the viewer leaves the channel as on a disconnect, except that its
    /// place is not held for it; with `ban`, it cannot join again while the channel lives, and
    /// every other connection of the same client leaves with it.
    pub(crate) fn remove_viewer(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
        now: Moment,
    ) -> Result<Removal, ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        channel.named_viewer(viewer)?;
        let mut leaving = vec![viewer.clone()];
        if ban {
            let identity = channel.identities.get(viewer).cloned().unwrap_or_default();
            let marks = std::iter::once(socket_mark(viewer))
                .chain(identity.key.as_deref().map(key_mark))
                .chain(identity.addr.map(addr_mark));
            for mark in marks {
                if !add_mark(&mut channel.moderation.bans, mark) {
                    return Err(ChannelError::TooManyMarks(MAX_MARKS));
                }
            }
            let others: Vec<SocketId> = channel
                .viewers
                .keys()
                .filter(|v| *v != viewer && **v != channel.broadcaster)
                .filter(|v| channel.is_banned_member(v))
                .cloned()
                .collect();
            leaving.extend(others);
        }
        let mut removal = Removal {
            removed: Vec::with_capacity(leaving.len()),
            banned: ban,
            left: Vec::with_capacity(leaving.len()),
        };
        for gone in &leaving {
            let codes = channel.identities.get(gone).is_some_and(|i| i.codes);
            if let Some(left) = channel.leave_viewer(gone, Duration::ZERO, now) {
                removal.removed.push(Removed {
                    viewer: gone.clone(),
                    codes,
                });
                removal.left.push(left);
            }
        }
        let key = channel.id.clone();
        for gone in &leaving {
            self.unindex(gone, &key, |m| &mut m.watching);
        }
        self.track_waits(&key);
        Ok(removal)
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
        channel.named_viewer(viewer)?;
        let mark = channel.member_mark(viewer);
        if !muted {
            channel.moderation.muted.remove(&mark);
        } else if !add_mark(&mut channel.moderation.muted, mark) {
            return Err(ChannelError::TooManyMarks(MAX_MARKS));
        }
        Ok(())
    }

    /// `remove_message`: checks the caller may; returns who is told (the history is each
    /// backend's to edit: in memory here, in cluster mode a Redis list).
    pub(crate) fn remove_message(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Told, ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        channel.history.forget(message_id);
        Ok(channel.told_of_moderation())
    }

    /// `chat_settings`: slow mode and chat off; returns the settings now and who is told.
    pub(crate) fn set_chat_settings(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, Told), ChannelError> {
        let channel = self.moderated(sid, channel_id)?;
        // The payload's validation bounds `slow_mode` (0 to MAX_SLOW_MODE).
        if let Some(slow_mode) = change.slow_mode {
            channel.moderation.slow_mode = slow_mode;
        }
        if let Some(enabled) = change.chat_enabled {
            channel.moderation.chat_off = !enabled;
        }
        Ok((channel.moderation.settings(), channel.told_of_moderation()))
    }
}

/// When each viewer of this node last wrote in a channel in slow mode (by its key where it has
/// one, else its connection). Only messages under slow mode are kept, for at most an hour (the
/// longest slow mode), and nobody needs to be told when one goes: a cache. A viewer that falls
/// out of a full cache merely gets its next message through early.
#[derive(Clone)]
pub struct ChatPace(mini_moka::sync::Cache<(String, ChannelId), f64>);

/// Most viewers whose last slow-mode message one node remembers: more than the connections a
/// node holds by default (`--max-connections` 50,000).
const PACE_CAPACITY: u64 = 100_000;

impl Default for ChatPace {
    fn default() -> Self {
        Self(
            mini_moka::sync::Cache::builder()
                .max_capacity(PACE_CAPACITY)
                .time_to_live(Duration::from_secs(u64::from(MAX_SLOW_MODE)))
                .build(),
        )
    }
}

impl ChatPace {
    fn last(&self, who: &str, channel_id: &ChannelId) -> Option<f64> {
        self.0.get(&(who.to_owned(), channel_id.clone()))
    }

    fn sent(&self, who: String, channel_id: &ChannelId, at: f64) {
        self.0.insert((who, channel_id.clone()), at);
    }
}

#[cfg(test)]
mod tests;
