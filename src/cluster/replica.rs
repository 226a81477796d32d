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
//! The window this leaves is the feed's own delay (one pub/sub hop, well under a millisecond
//! on one network): a relay authorized just before a departure's announcement arrives is
//! delivered, as one read from Redis just before the departure's write would have been.
//! While the feed's connection is down nothing is current (announcements may be lost), and
//! after it comes back every kept document is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};

use super::lock;
use crate::registry::clock::Moment;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::model::Channel;

/// Channels whose documents a node keeps at most; the least used go first.
const KEPT_CHANNELS: u64 = 4096;
/// A document nobody on this node used for this long is dropped.
const KEPT_IDLE: Duration = Duration::from_secs(300);
/// How long an announced version is remembered. A read or write that started before the
/// announcement ends within a few command timeouts, so a document it brings older than an
/// announcement this old cannot arrive any more.
const ANNOUNCED_FOR: Duration = Duration::from_secs(60);
/// Pause between attempts to subscribe again while Redis is away.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

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
        }
    }
}

impl Replica {
    /// The kept document, current or not (a read compares its version with Redis's).
    pub(super) fn kept(&self, id: &ChannelId) -> Option<Arc<Kept>> {
        self.kept.get(id)
    }

    /// The kept document if no newer version of it was announced, while the feed is followed
    /// and every other node announces its writes.
    pub(super) fn current(&self, id: &ChannelId) -> Option<Arc<Kept>> {
        if !self.following.load(Ordering::Acquire) || !self.peers_announce.load(Ordering::Acquire) {
            return None;
        }
        let kept = self.kept.get(id)?;
        // A version that is not a number was written by a node that does not announce (a
        // rolling upgrade): such a document is never taken as current.
        let number = version_number(&kept.version)?;
        (number >= self.announced(id)).then_some(kept)
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
            let newer = self.kept.get(id).and_then(|k| version_number(&k.version));
            if number < self.announced(id) || newer.is_some_and(|k| k > number) {
                return kept;
            }
        }
        self.kept.insert(id.clone(), kept.clone());
        kept
    }

    /// The latest activity of `id` this node saw stored, if it saw any lately.
    pub(super) fn last_activity(&self, id: &ChannelId) -> Option<Moment> {
        self.activity.get(id)
    }

    /// How many viewers `id` had when this node last read or wrote it (0: unknown).
    pub(super) fn audience(&self, id: &ChannelId) -> usize {
        self.audiences.get(id).unwrap_or(0)
    }

    pub(super) fn forget(&self, id: &ChannelId) {
        self.kept.invalidate(id);
    }

    fn announced(&self, id: &ChannelId) -> u64 {
        lock(&self.announced).get(id).map_or(0, |a| a.version)
    }

    /// A feed announcement: `version` of channel `id` was written (or the channel deleted).
    /// An older kept document goes at once.
    fn announce(&self, id: ChannelId, version: u64) {
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
        self.peers_announce.store(all, Ordering::Release);
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
    fn interrupted(&self) {
        self.following.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.kept.invalidate_all();
    }

    /// Subscribed again: what is read from now on is followed.
    fn resumed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.kept.invalidate_all();
        self.following.store(true, Ordering::Release);
    }
}

/// Follows the feed on its own subscriber connection until it closes: applies every
/// announcement to the replica; when the connection fails, trusts nothing until it is
/// subscribed again. The feed only ever makes relays faster, so its outages are logged, not
/// reported as ill health: relays then take the authoritative path.
pub(super) async fn follow(subscriber: SubscriberClient, feed: String, replica: Arc<Replica>) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    subscribe(&subscriber, &feed, &replica).await;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if message.channel != feed.as_str() {
                        continue;
                    }
                    let Some(text) = message.value.as_str() else { continue };
                    for (id, version) in parse_announcements(&text) {
                        replica.announce(ChannelId::from(id), version);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "change feed lagged: dropping the replica");
                    replica.interrupted();
                    replica.resumed();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            error = errors.recv() => match error {
                Ok((e, _)) => {
                    if replica.following.load(Ordering::Acquire) {
                        tracing::warn!("change feed: {e}; relays go through Redis until it is back");
                    }
                    replica.interrupted();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                Err(_) => replica.interrupted(),
            },
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                replica.interrupted();
                subscribe(&subscriber, &feed, &replica).await;
            }
        }
    }
}

/// Subscribes (retrying while Redis is away), then starts trusting fresh reads again.
async fn subscribe(subscriber: &SubscriberClient, feed: &str, replica: &Replica) {
    loop {
        match subscriber.subscribe(feed).await {
            Ok(()) => {
                replica.resumed();
                return;
            }
            Err(e) => {
                tracing::debug!("change feed: cannot subscribe yet: {e}");
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
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

/// `"<channel> <version>"` lines, as `commit.lua` publishes them.
fn parse_announcements(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (id, version) = line.rsplit_once(' ')?;
        Some((id, version.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_line_by_line_and_skip_junk() {
        let parsed: Vec<_> = parse_announcements("a 12\nb c 7\nbad\nd x").collect();
        assert_eq!(parsed, vec![("a", 12), ("b c", 7)]);
    }

    fn channel() -> Channel {
        let limits = crate::registry::tree::TreeLimits {
            direct: 1,
            fanout: 0,
            wait: Duration::from_secs(1),
        };
        let tree = crate::registry::tree::Tree::new(limits, false);
        serde_json::from_value(serde_json::json!({
            "id": "c", "broadcaster": "b", "owner_addr": null, "created_at": 0.0,
            "last_activity": 0, "viewers": {}, "stopped": false, "tree": tree
        }))
        .expect("a minimal channel document")
    }

    fn following() -> Replica {
        let replica = Replica::default();
        replica.following.store(true, Ordering::Release);
        replica.set_peers_announce(true);
        replica
    }

    #[test]
    fn a_kept_document_is_current_until_a_newer_version_is_announced() {
        let replica = following();
        let id = ChannelId::from("c");
        replica.remember(
            &id,
            "5".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_some());
        replica.announce(id.clone(), 5);
        assert!(replica.current(&id).is_some(), "its own announcement");
        replica.announce(id.clone(), 6);
        assert!(replica.current(&id).is_none(), "a newer write elsewhere");
        assert!(
            replica.kept(&id).is_none(),
            "an older document goes at once"
        );
        // An older read that finishes late keeps nothing.
        replica.remember(
            &id,
            "5".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.kept(&id).is_none());
        replica.remember(
            &id,
            "7".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_some());
    }

    #[test]
    fn an_announcement_that_overtakes_the_read_it_follows_still_counts() {
        let replica = following();
        let id = ChannelId::from("c");
        replica.announce(id.clone(), 9);
        replica.announce(id.clone(), 8);
        replica.remember(
            &id,
            "8".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_none());
    }

    #[test]
    fn nothing_is_current_unless_the_feed_is_followed_or_for_unannounced_versions() {
        let id = ChannelId::from("c");
        let idle = Replica::default();
        idle.remember(
            &id,
            "5".into(),
            Arc::from("{}"),
            channel(),
            idle.generation(),
        );
        assert!(idle.current(&id).is_none());
        let replica = following();
        replica.remember(
            &id,
            "9f3a0c11d2e4b5a6".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_none());
        // A node of an earlier release is alive: it writes without announcing.
        replica.remember(
            &id,
            "5".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_some());
        replica.set_peers_announce(false);
        assert!(replica.current(&id).is_none());
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
        replica.interrupted();
        replica.remember(&id, "5".into(), Arc::from("{}"), channel(), before);
        assert!(replica.kept(&id).is_none());
        assert!(replica.current(&id).is_none());
        replica.resumed();
        replica.remember(
            &id,
            "5".into(),
            Arc::from("{}"),
            channel(),
            replica.generation(),
        );
        assert!(replica.current(&id).is_some());
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
