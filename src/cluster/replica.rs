//! Each node's replica of the channels its own sockets are in, kept current by the change feed,
//! so that relays (offers, answers, ICE candidates) are authorized without a Redis read.
//!
//! Every write of a channel document goes through one script (`commit.lua`), which gives the
//! document a version that only grows (Redis's clock in microseconds, or one more than the
//! last) and publishes `<channel> <version>` on the deployment's feed in the same atomic step.
//! A node keeps the documents it last read or wrote ([`Replica::remember`]) and the newest
//! version the feed announced for each channel; a kept document is *current* while no newer
//! version was announced. A relay whose sender and target share a current document is
//! authorized from it; anything else (no document here, an older one, a refusal, a channel
//! whose activity must be written) takes the authoritative path through Redis, so the replica
//! can only make a relay faster, never refuse one.
//!
//! Besides the documents, a node follows each channel's *peers* ([`Peers`]: who may relay to
//! whom) change by change: every write also publishes, before its announcement, the
//! [`PeersChange`] from the version it replaced (`{"v", "c", "p", "d"}`, one JSON line), and a
//! node applies it to a copy at exactly that version, drops a copy it cannot apply (a write it
//! did not see), and builds a copy from any whole document it reads. So while a crowd arrives
//! (a new version with every batch) relays are still authorized here, where a kept document
//! would be stale after every batch and read again per relay.
//!
//! The window this leaves is the feed's own delay (one pub/sub hop, well under a millisecond
//! on one network): a relay authorized just before a departure's announcement arrives is
//! delivered, as one read from Redis just before the departure's write would have been.
//! While the feed's connection is down nothing is current (announcements may be lost), and
//! after it comes back every kept document is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::lock;
use crate::registry::clock::Moment;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::model::Channel;
use crate::registry::peers::{self, Peers, PeersChange};

/// Channels whose documents a node keeps at most; the least used go first.
const KEPT_CHANNELS: u64 = 4096;
/// A document nobody on this node used for this long is dropped.
const KEPT_IDLE: Duration = Duration::from_secs(300);
/// How long an announced version is remembered. A read or write that started before the
/// announcement ends within a few command timeouts, so a document it brings older than an
/// announcement this old cannot arrive any more.
const ANNOUNCED_FOR: Duration = Duration::from_secs(60);

/// One channel as this node last read or wrote it.
pub(super) struct Kept {
    /// The stored version (the compare-and-set's token, as stored).
    pub(super) version: String,
    /// The stored text (to tell whether an operation changed the channel).
    pub(super) raw: Arc<str>,
    pub(super) channel: Channel,
}

/// An announced version and when it arrived.
#[derive(Clone, Copy)]
struct Announced {
    version: u64,
    at: Instant,
}

/// Announcements kept before old ones are pruned.
const PRUNE_ABOVE: usize = 4096;

/// One channel's peers at one stored version.
struct Followed {
    version: u64,
    peers: Peers,
    /// When a read or write of this node last touched the channel: copies nobody here used
    /// for [`KEPT_IDLE`] go first when there are too many.
    touched: Instant,
}

/// A write's change of a channel's peers, as `commit.lua` publishes it: the version written,
/// the channel, the version replaced, and the change.
#[derive(Debug, serde::Deserialize)]
struct ChangeLine {
    v: u64,
    c: ChannelId,
    p: String,
    d: PeersChange,
}

/// The line `commit.lua` completes with the version it writes (`{"v":<version>,` + the rest
/// of this line without its opening brace).
pub(super) fn change_line(id: &ChannelId, replaced: &str, change: &PeersChange) -> String {
    serde_json::json!({"c": id, "p": replaced, "d": change}).to_string()
}

/// The replica (cheap to share: one per node, behind an `Arc`).
pub(super) struct Replica {
    kept: mini_moka::sync::Cache<ChannelId, Arc<Kept>>,
    /// The newest version the feed announced, per channel, and when: for a read or write in
    /// flight while a newer version is announced (an announcement also drops an older kept
    /// document at once, so this only has to outlive such an operation). A plain map pruned
    /// by age: a cache could refuse an entry, and a lost announcement is a wrong answer.
    announced: std::sync::Mutex<HashMap<ChannelId, Announced>>,
    /// Moves on whenever announcements may have been missed (the feed dropped or lagged): a
    /// read or write that began before keeps nothing.
    generation: AtomicU64,
    /// Whether the feed is subscribed now: nothing is current otherwise.
    following: AtomicBool,
    /// Whether every other live node announces its writes (a rolling upgrade from a release
    /// that does not leaves this false until its last node is gone): nothing is current
    /// otherwise. False until the first look at the other nodes.
    peers_announce: AtomicBool,
    /// Viewers per channel, as last read or written: the bound of a broadcaster's event queue
    /// (see `signaling/mailbox.rs`), which must not shrink when a kept document goes.
    audiences: mini_moka::sync::Cache<ChannelId, usize>,
    /// The latest activity seen per channel in a document read or written, which only grows:
    /// proof that an offer need not write it again, kept when a newer version drops the
    /// document (see `ClusterRegistry::authorize_from_index`).
    activity: mini_moka::sync::Cache<ChannelId, Moment>,
    /// Each channel's peers, followed change by change (see the module comment). Taken before
    /// `announced` wherever both are: a copy is installed only if no newer version was
    /// announced, and the feed applies a change and records its announcement, atomically.
    followed: std::sync::RwLock<HashMap<ChannelId, Followed>>,
    /// The channels each socket of this node joined, as broadcaster or viewer: where a relay
    /// of its looks first. Entries are hints: a channel it has left since fails the check in
    /// the document and falls through to Redis.
    /// `true` where it joined as the broadcaster.
    joined: std::sync::Mutex<HashMap<SocketId, HashMap<ChannelId, bool>>>,
}

impl Default for Replica {
    fn default() -> Self {
        Self {
            kept: mini_moka::sync::Cache::builder()
                .max_capacity(KEPT_CHANNELS)
                .time_to_idle(KEPT_IDLE)
                .build(),
            announced: std::sync::Mutex::default(),
            generation: AtomicU64::new(0),
            audiences: mini_moka::sync::Cache::builder()
                .max_capacity(KEPT_CHANNELS)
                .time_to_idle(KEPT_IDLE)
                .build(),
            activity: mini_moka::sync::Cache::builder()
                .max_capacity(KEPT_CHANNELS)
                .time_to_idle(KEPT_IDLE)
                .build(),
            following: AtomicBool::new(false),
            peers_announce: AtomicBool::new(false),
            joined: std::sync::Mutex::default(),
            followed: std::sync::RwLock::default(),
        }
    }
}

impl Replica {
    /// The kept document, current or not (a read compares its version with Redis's).
    pub(super) fn kept(&self, id: &ChannelId) -> Option<Arc<Kept>> {
        self.kept.get(id)
    }

    /// Where announcements stand: taken before a read or write, handed to
    /// [`Replica::remember`] after it.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what was just read from or written to Redis, unless announcements may have been
    /// missed since `generation`, or a newer version is known (kept or announced). Returns it
    /// either way, shared.
    pub(super) fn remember(
        &self,
        id: &ChannelId,
        version: String,
        raw: Arc<str>,
        channel: Channel,
        generation: u64,
    ) -> Arc<Kept> {
        self.audiences.insert(id.clone(), channel.viewers.len());
        if self
            .activity
            .get(id)
            .is_none_or(|seen| seen < channel.last_activity)
        {
            self.activity.insert(id.clone(), channel.last_activity);
        }
        let kept = Arc::new(Kept {
            version,
            raw,
            channel,
        });
        if generation != self.generation() {
            return kept;
        }
        if let Some(number) = version_number(&kept.version) {
            self.follow_from(id, number, &kept.channel, generation);
            let newer = self.kept.get(id).and_then(|k| version_number(&k.version));
            if number < self.announced(id) || newer.is_some_and(|k| k > number) {
                return kept;
            }
        }
        self.kept.insert(id.clone(), kept.clone());
        kept
    }

    /// Starts following `id`'s peers from a whole document at `version`, or starts again from
    /// it where the copy followed is older (a write this node did not hear of, from a node
    /// that does not publish changes): not where the copy is that version or newer, nor where
    /// the document is stale already (a newer version announced, the feed interrupted since
    /// the read began). Nothing is built while some node does not publish its changes.
    fn follow_from(&self, id: &ChannelId, version: u64, channel: &Channel, generation: u64) {
        if !self.peers_announce.load(Ordering::Acquire) {
            return;
        }
        if read(&self.followed)
            .get(id)
            .is_some_and(|copy| copy.version >= version)
        {
            return;
        }
        let peers = Peers::of(channel);
        let mut followed = write(&self.followed);
        if followed.get(id).is_some_and(|copy| copy.version >= version)
            || generation != self.generation()
            || version < self.announced(id)
        {
            return;
        }
        let now = Instant::now();
        if followed.len() >= KEPT_CHANNELS as usize && !followed.contains_key(id) {
            followed.retain(|_, f| now.duration_since(f.touched) < KEPT_IDLE);
            if followed.len() >= KEPT_CHANNELS as usize {
                return;
            }
        }
        followed.insert(
            id.clone(),
            Followed {
                version,
                peers,
                touched: now,
            },
        );
    }

    /// This node's own write of `id`, from stored version `replaced` to `version`: applied to
    /// a copy at `replaced` at once, so that the writer's next relay sees it (its own
    /// announcement follows, and finds the copy at `version` already).
    pub(super) fn advance(
        &self,
        id: &ChannelId,
        replaced: &str,
        version: u64,
        change: PeersChange,
    ) {
        let mut followed = write(&self.followed);
        if let Some(copy) = followed.get_mut(id)
            && version_number(replaced) == Some(copy.version)
        {
            copy.peers.apply(change);
            copy.version = version;
            copy.touched = Instant::now();
        }
    }

    /// Applies a published change to the copy at the version it replaced; a copy that is
    /// older than that missed a write and goes.
    fn follow_change(followed: &mut HashMap<ChannelId, Followed>, line: ChangeLine) {
        let Some(copy) = followed.get_mut(&line.c) else {
            return;
        };
        if version_number(&line.p) == Some(copy.version) {
            copy.peers.apply(line.d);
            copy.version = line.v;
        } else if copy.version < line.v {
            followed.remove(&line.c);
        }
    }

    /// A relay authorized from the followed peers of `sender`'s channels, with the activity
    /// of the channel that allows it; `None`: nothing followed here allows it (the caller asks
    /// Redis). Only while the feed is followed and every node publishes its changes.
    pub(super) fn relay(&self, sender: &SocketId, target: &str) -> Option<(SocketId, Moment)> {
        if !self.following.load(Ordering::Acquire) || !self.peers_announce.load(Ordering::Acquire) {
            return None;
        }
        let channels = self.channels_of(sender);
        let followed = read(&self.followed);
        channels.iter().find_map(|id| {
            let copy = followed.get(id)?;
            let found = peers::relay_target(&copy.peers, sender, target)?;
            Some((found, copy.peers.last_activity))
        })
    }

    /// Whether `sender` may relay to `target`, a socket of this node, by the followed peers of
    /// the channels `target` joined through this node: `Some(false)` only when every one of
    /// them is followed and none allows it, `None` when one is not followed, or nothing is, or
    /// the target joined nothing through this node (a waiter let in by another node).
    pub(super) fn reaches(&self, sender: &SocketId, target: &SocketId) -> Option<bool> {
        if !self.following.load(Ordering::Acquire) || !self.peers_announce.load(Ordering::Acquire) {
            return None;
        }
        let channels = self.channels_of(target);
        if channels.is_empty() {
            return None;
        }
        let followed = read(&self.followed);
        let mut known = true;
        for id in &channels {
            match followed.get(id) {
                Some(copy) => {
                    if peers::relay_target(&copy.peers, sender, target.as_str()).is_some() {
                        return Some(true);
                    }
                }
                None => known = false,
            }
        }
        known.then_some(false)
    }

    /// The latest activity of `id` this node saw stored, if it saw any lately.
    pub(super) fn last_activity(&self, id: &ChannelId) -> Option<Moment> {
        self.activity.get(id)
    }

    /// How many viewers `id` had when this node last read or wrote it (0: unknown).
    pub(super) fn audience(&self, id: &ChannelId) -> usize {
        self.audiences.get(id).unwrap_or(0)
    }

    /// `id` is gone (read or written so): nothing of it is kept.
    pub(super) fn forget(&self, id: &ChannelId) {
        self.kept.invalidate(id);
        write(&self.followed).remove(id);
    }

    fn announced(&self, id: &ChannelId) -> u64 {
        lock(&self.announced).get(id).map_or(0, |a| a.version)
    }

    /// A feed announcement: `version` of channel `id` was written (or the channel deleted).
    /// An older kept document goes at once.
    fn announce(&self, followed: &mut HashMap<ChannelId, Followed>, id: ChannelId, version: u64) {
        if followed.get(&id).is_some_and(|f| f.version < version) {
            followed.remove(&id);
        }
        if let Some(kept) = self.kept.get(&id)
            && version_number(&kept.version).is_none_or(|k| k < version)
        {
            self.kept.invalidate(&id);
        }
        let now = Instant::now();
        let mut announced = lock(&self.announced);
        if announced.len() > PRUNE_ABOVE {
            announced.retain(|_, a| now.duration_since(a.at) < ANNOUNCED_FOR);
        }
        let entry = announced
            .entry(id)
            .or_insert(Announced { version, at: now });
        entry.version = entry.version.max(version);
        entry.at = now;
    }

    /// Records whether every other live node announces its writes.
    pub(super) fn set_peers_announce(&self, all: bool) {
        if self.peers_announce.swap(all, Ordering::AcqRel) != all {
            // Copies are built only while every node publishes; one built before a node that
            // does not publish came or went may have missed its writes.
            write(&self.followed).clear();
        }
    }

    /// Records that a socket of this node joined a channel, as its broadcaster or not.
    pub(super) fn joined(&self, sid: &SocketId, id: &ChannelId, broadcaster: bool) {
        let mut joined = lock(&self.joined);
        let role = joined
            .entry(sid.clone())
            .or_default()
            .entry(id.clone())
            .or_default();
        *role |= broadcaster;
    }

    /// Forgets a socket of this node (it disconnected).
    pub(super) fn gone(&self, sid: &SocketId) {
        lock(&self.joined).remove(sid);
    }

    /// This node deleted `id`: no socket of this node is in it any more. (Only here, under the
    /// channel's turn: a read that finds a channel gone may race a join creating it again.)
    pub(super) fn deleted(&self, id: &ChannelId) {
        self.forget(id);
        for channels in lock(&self.joined).values_mut() {
            channels.remove(id);
        }
    }

    /// The channels a socket joined, per [`Replica::joined`].
    pub(super) fn channels_of(&self, sid: &SocketId) -> Vec<ChannelId> {
        lock(&self.joined)
            .get(sid)
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The channels a socket joined as their broadcaster.
    pub(super) fn broadcasts_of(&self, sid: &SocketId) -> Vec<ChannelId> {
        lock(&self.joined)
            .get(sid)
            .map(|ids| {
                ids.iter()
                    .filter(|(_, broadcaster)| **broadcaster)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Announcements may be missed from now on (the feed dropped or lagged): nothing is
    /// current, and reads and writes in flight keep nothing.
    pub(super) fn interrupted(&self) {
        self.following.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.kept.invalidate_all();
        write(&self.followed).clear();
    }

    /// The feed's connection failed. The feed only ever makes relays faster, so its outages
    /// are logged, not reported as ill health: relays then take the authoritative path.
    pub(super) fn down(&self, reason: &str) {
        if self.following.load(Ordering::Acquire) {
            tracing::warn!("change feed: {reason}; relays go through Redis until it is back");
        }
        self.interrupted();
    }

    /// Subscribed again: what is read from now on is followed.
    pub(super) fn resumed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.kept.invalidate_all();
        write(&self.followed).clear();
        self.following.store(true, Ordering::Release);
    }
}

impl Replica {
    /// One message of the feed: its changes and announcements, in order, at once.
    pub(super) fn heard(&self, text: &str) {
        enum Heard<'a> {
            Change(ChangeLine),
            Announced(&'a str, u64),
        }
        // Parsed before the lock is taken: relays read the copies meanwhile.
        let heard: Vec<Heard> = text
            .lines()
            .filter_map(|line| {
                if line.starts_with('{') {
                    serde_json::from_str::<ChangeLine>(line)
                        .map_err(|e| tracing::debug!("change feed: unreadable change: {e}"))
                        .ok()
                        .map(Heard::Change)
                } else {
                    parse_announcement(line).map(|(id, version)| Heard::Announced(id, version))
                }
            })
            .collect();
        let mut followed = write(&self.followed);
        for item in heard {
            match item {
                Heard::Change(line) => Self::follow_change(&mut followed, line),
                Heard::Announced(id, version) => {
                    self.announce(&mut followed, ChannelId::from(id), version);
                }
            }
        }
    }
}

/// A stored version as a number, by `commit.lua`'s rule: plain decimal digits that a double
/// holds exactly (at most 16 digits, below 2^53). Anything else was written by an earlier
/// release (random hex, or digits the script does not count) and is only ever equal to itself:
/// taken as a number, a digits-only one could look newer than every version written after it.
pub(super) fn version_number(version: &str) -> Option<u64> {
    if version.is_empty() || version.len() > 16 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok().filter(|n| *n < 1 << 53)
}

/// A `"<channel> <version>"` line, as `commit.lua` publishes them.
fn parse_announcement(line: &str) -> Option<(&str, u64)> {
    let (id, version) = line.rsplit_once(' ')?;
    Some((id, version.parse().ok()?))
}

fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_line_by_line_and_skip_junk() {
        let parsed: Vec<_> = "a 12\nb c 7\nbad\nd x"
            .lines()
            .filter_map(parse_announcement)
            .collect();
        assert_eq!(parsed, vec![("a", 12), ("b c", 7)]);
    }

    /// Channel `c`: broadcaster `b` and the viewers named.
    fn channel(viewers: &[&str]) -> Channel {
        let limits = crate::registry::tree::TreeLimits {
            direct: 1,
            fanout: 0,
            wait: Duration::from_secs(1),
        };
        let tree = crate::registry::tree::Tree::new(limits, false);
        let viewers: serde_json::Map<String, serde_json::Value> = viewers
            .iter()
            .map(|v| ((*v).to_owned(), serde_json::Value::Null))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "c", "broadcaster": "b", "owner_addr": null, "created_at": 0.0,
            "last_activity": 0, "viewers": viewers, "stopped": false, "tree": tree
        }))
        .expect("a minimal channel document")
    }

    /// A replica following the feed, where `b` broadcasts `c` and `v1`, `v2` watch it.
    fn following() -> Replica {
        let replica = Replica::default();
        replica.following.store(true, Ordering::Release);
        replica.set_peers_announce(true);
        let id = ChannelId::from("c");
        replica.joined(&SocketId::from("b"), &id, true);
        replica.joined(&SocketId::from("v1"), &id, false);
        replica.joined(&SocketId::from("v2"), &id, false);
        replica
    }

    fn remember(replica: &Replica, version: &str, viewers: &[&str], generation: u64) {
        replica.remember(
            &ChannelId::from("c"),
            version.into(),
            Arc::from("{}"),
            channel(viewers),
            generation,
        );
    }

    /// The feed's message for a write of `c` from `replaced` to `version` that changed its
    /// peers from `before` to `after` viewers.
    fn write_line(replaced: u64, version: u64, before: &[&str], after: &[&str]) -> String {
        let change = PeersChange::between(&channel(before), &channel(after));
        let line = change_line(&ChannelId::from("c"), &replaced.to_string(), &change);
        format!("{{\"v\":{version},{}\nc {version}", &line[1..])
    }

    fn relays(replica: &Replica, from: &str, to: &str) -> bool {
        replica.relay(&SocketId::from(from), to).is_some()
    }

    #[test]
    fn an_announcement_drops_an_older_kept_document() {
        let replica = following();
        let id = ChannelId::from("c");
        remember(&replica, "5", &[], replica.generation());
        replica.heard("c 5");
        assert!(replica.kept(&id).is_some(), "its own announcement");
        replica.heard("c 6");
        assert!(replica.kept(&id).is_none(), "a newer write elsewhere");
        // An older read that finishes late keeps nothing.
        remember(&replica, "5", &[], replica.generation());
        assert!(replica.kept(&id).is_none());
        remember(&replica, "7", &[], replica.generation());
        assert!(replica.kept(&id).is_some());
    }

    /// The receiving node's check: known only where every channel its target joined here is
    /// followed; a refusal only when none of them allows the relay.
    #[test]
    fn a_relay_reaches_a_socket_here_by_the_peers_of_its_channels() {
        let replica = following();
        let reaches =
            |from: &str, to: &str| replica.reaches(&SocketId::from(from), &SocketId::from(to));
        assert_eq!(reaches("b", "v1"), None, "nothing followed yet");
        remember(&replica, "5", &["v1"], replica.generation());
        assert_eq!(reaches("b", "v1"), Some(true));
        assert_eq!(reaches("v1", "b"), Some(true));
        assert_eq!(
            reaches("b", "v2"),
            Some(false),
            "v2 is in no channel with b"
        );
        replica.heard(&write_line(5, 6, &["v1"], &[]));
        assert_eq!(reaches("b", "v1"), Some(false), "v1 left");
        assert_eq!(
            reaches("x", "nobody"),
            None,
            "a socket that joined nothing here"
        );
        // Another channel v1 joined here, not followed: nothing is known.
        replica.joined(&SocketId::from("v1"), &ChannelId::from("d"), false);
        assert_eq!(reaches("b", "v1"), None);
        replica.interrupted();
        assert_eq!(reaches("b", "v1"), None, "the feed dropped");
    }

    #[test]
    fn peers_follow_each_write_from_the_version_they_replace() {
        let replica = following();
        remember(&replica, "5", &["v1"], replica.generation());
        assert!(relays(&replica, "b", "v1") && relays(&replica, "v1", "b"));
        assert!(!relays(&replica, "b", "v2"));
        replica.heard(&write_line(5, 6, &["v1"], &["v1", "v2"]));
        assert!(relays(&replica, "b", "v2"), "a join, followed");
        replica.heard(&write_line(6, 7, &["v1", "v2"], &["v2"]));
        assert!(!relays(&replica, "b", "v1"), "a departure, followed");
        assert!(!relays(&replica, "v1", "b"));
        // A repeated or older change changes nothing.
        replica.heard(&write_line(5, 6, &["v1"], &["v1", "v2"]));
        assert!(!relays(&replica, "b", "v1") && relays(&replica, "b", "v2"));
        // A write this node did not see (8 → 9 while it holds 7): the copy goes, and with it
        // every relay it allowed (they ask Redis).
        replica.heard(&write_line(8, 9, &["v2"], &["v1", "v2"]));
        assert!(!relays(&replica, "b", "v2"));
        // A newer whole document starts it again.
        remember(&replica, "9", &["v1", "v2"], replica.generation());
        assert!(relays(&replica, "b", "v1"));
        // An announcement without a change (a deletion, a node of an earlier release) too.
        replica.heard("c 10");
        assert!(!relays(&replica, "b", "v1"));
    }

    #[test]
    fn the_writers_own_change_applies_at_once_and_its_announcement_later_changes_nothing() {
        let replica = following();
        let id = ChannelId::from("c");
        remember(&replica, "5", &["v1"], replica.generation());
        let change = PeersChange::between(&channel(&["v1"]), &channel(&["v2"]));
        replica.advance(&id, "5", 6, change.clone());
        assert!(relays(&replica, "b", "v2") && !relays(&replica, "b", "v1"));
        replica.heard(&write_line(5, 6, &["v1"], &["v2"]));
        assert!(relays(&replica, "b", "v2") && !relays(&replica, "b", "v1"));
        // Applied to no other version than the one it replaced.
        replica.advance(&id, "5", 7, change);
        assert!(relays(&replica, "b", "v2"));
    }

    #[test]
    fn a_newer_document_replaces_an_older_copy_and_a_node_that_does_not_publish_clears_all() {
        let replica = following();
        remember(&replica, "5", &["v1"], replica.generation());
        // Version 6 (v1 left) written by a node that publishes nothing, then read here.
        remember(&replica, "6", &[], replica.generation());
        assert!(!relays(&replica, "b", "v1"));
        replica.set_peers_announce(false);
        remember(&replica, "7", &["v1"], replica.generation());
        replica.set_peers_announce(true);
        assert!(
            !relays(&replica, "b", "v1"),
            "nothing built meanwhile is kept"
        );
        remember(&replica, "8", &["v1"], replica.generation());
        assert!(relays(&replica, "b", "v1"));
    }

    #[test]
    fn a_read_overtaken_by_a_newer_announcement_follows_nothing() {
        let replica = following();
        replica.heard(&write_line(8, 9, &[], &["v1"]));
        remember(&replica, "8", &[], replica.generation());
        assert!(!relays(&replica, "v1", "b"));
        assert!(replica.kept(&ChannelId::from("c")).is_none());
    }

    #[test]
    fn nothing_relays_here_unless_the_feed_is_followed_and_every_node_publishes() {
        let idle = Replica::default();
        idle.joined(&SocketId::from("b"), &ChannelId::from("c"), true);
        remember(&idle, "5", &["v1"], idle.generation());
        assert!(!relays(&idle, "b", "v1"));
        let replica = following();
        // A version written by an earlier release (random hex) is never followed.
        remember(&replica, "9f3a0c11d2e4b5a6", &["v1"], replica.generation());
        assert!(!relays(&replica, "b", "v1"));
        remember(&replica, "5", &["v1"], replica.generation());
        assert!(relays(&replica, "b", "v1"));
        // A node of an earlier release is alive: it writes without publishing.
        replica.set_peers_announce(false);
        assert!(!relays(&replica, "b", "v1"));
    }

    #[test]
    fn joined_channels_are_hints_forgotten_with_the_socket() {
        let replica = following();
        let sid = SocketId::from("s");
        replica.joined(&sid, &ChannelId::from("a"), false);
        replica.joined(&sid, &ChannelId::from("a"), true);
        replica.joined(&sid, &ChannelId::from("b"), false);
        let mut all = replica.channels_of(&sid);
        all.sort();
        assert_eq!(all, vec![ChannelId::from("a"), ChannelId::from("b")]);
        assert_eq!(replica.broadcasts_of(&sid), vec![ChannelId::from("a")]);
        replica.gone(&sid);
        assert!(replica.channels_of(&sid).is_empty());
    }

    #[test]
    fn a_read_that_spans_an_interruption_of_the_feed_keeps_nothing() {
        let replica = following();
        let id = ChannelId::from("c");
        let before = replica.generation();
        remember(&replica, "4", &["v1"], before);
        replica.interrupted();
        assert!(
            !relays(&replica, "b", "v1"),
            "an interruption drops every copy"
        );
        remember(&replica, "5", &["v1"], before);
        assert!(replica.kept(&id).is_none());
        replica.resumed();
        assert!(!relays(&replica, "b", "v1"));
        remember(&replica, "5", &["v1"], replica.generation());
        assert!(replica.kept(&id).is_some());
        assert!(relays(&replica, "b", "v1"));
    }

    #[test]
    fn only_versions_the_script_counts_are_numbers() {
        assert_eq!(
            version_number("1733356800123456"),
            Some(1_733_356_800_123_456)
        );
        assert_eq!(version_number("42"), Some(42));
        // An earlier release's random hex, digits only or not, and what a double cannot hold.
        for other in [
            "",
            "9a3f",
            "12345678901234567",
            "9007199254740992",
            "5e12",
            "-1",
            "+1",
        ] {
            assert_eq!(version_number(other), None, "{other:?}");
        }
        assert_eq!(version_number("9007199254740991"), Some((1 << 53) - 1));
    }
}
