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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};

use super::{Health, lock};
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

/// The replica (cheap to share: one per node, behind an `Arc`).
pub(super) struct Replica {
    kept: mini_moka::sync::Cache<ChannelId, Arc<Kept>>,
    /// The newest version the feed announced, per channel.
    announced: mini_moka::sync::Cache<ChannelId, u64>,
    /// Whether the feed is subscribed now: nothing is current otherwise.
    following: AtomicBool,
    /// The channels each socket of this node joined, as broadcaster or viewer: where a relay
    /// of its looks first. Entries are hints: a channel it has left since fails the check in
    /// the document and falls through to Redis.
    joined: std::sync::Mutex<HashMap<SocketId, HashSet<ChannelId>>>,
}

impl Default for Replica {
    fn default() -> Self {
        Self {
            kept: mini_moka::sync::Cache::builder()
                .max_capacity(KEPT_CHANNELS)
                .time_to_idle(KEPT_IDLE)
                .build(),
            announced: mini_moka::sync::Cache::builder()
                .max_capacity(KEPT_CHANNELS * 4)
                .time_to_live(ANNOUNCED_FOR)
                .build(),
            following: AtomicBool::new(false),
            joined: std::sync::Mutex::default(),
        }
    }
}

impl Replica {
    /// The kept document, current or not (a read compares its version with Redis's).
    pub(super) fn kept(&self, id: &ChannelId) -> Option<Arc<Kept>> {
        self.kept.get(id)
    }

    /// The kept document if no newer version of it was announced, while the feed is followed.
    pub(super) fn current(&self, id: &ChannelId) -> Option<Arc<Kept>> {
        if !self.following.load(Ordering::Acquire) {
            return None;
        }
        let kept = self.kept.get(id)?;
        // A version that is not a number was written by a node that does not announce (a
        // rolling upgrade): such a document is never taken as current.
        let number: u64 = kept.version.parse().ok()?;
        let announced = self.announced.get(id).unwrap_or(0);
        (number >= announced).then_some(kept)
    }

    /// Keeps what was just read from or written to Redis.
    pub(super) fn remember(
        &self,
        id: &ChannelId,
        version: String,
        raw: Arc<str>,
        channel: Channel,
    ) {
        let kept = Kept {
            version,
            raw,
            channel,
        };
        self.kept.insert(id.clone(), Arc::new(kept));
    }

    pub(super) fn forget(&self, id: &ChannelId) {
        self.kept.invalidate(id);
    }

    /// A feed announcement: `version` of channel `id` was written (or the channel deleted).
    fn announce(&self, id: ChannelId, version: u64) {
        let newest = self.announced.get(&id).map_or(version, |v| v.max(version));
        self.announced.insert(id, newest);
    }

    /// Records that a socket of this node joined a channel (as broadcaster or viewer).
    pub(super) fn joined(&self, sid: &SocketId, id: &ChannelId) {
        lock(&self.joined)
            .entry(sid.clone())
            .or_default()
            .insert(id.clone());
    }

    /// Forgets a socket of this node (it disconnected).
    pub(super) fn gone(&self, sid: &SocketId) {
        lock(&self.joined).remove(sid);
    }

    /// The channels a socket joined, per [`Replica::joined`].
    pub(super) fn channels_of(&self, sid: &SocketId) -> Vec<ChannelId> {
        lock(&self.joined)
            .get(sid)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every kept document (announcements may have been missed).
    fn forget_all(&self) {
        self.kept.invalidate_all();
    }
}

/// Follows the feed on its own subscriber connection until it closes: applies every
/// announcement to the replica, and after each reconnection subscribes again and drops what
/// was kept.
pub(super) async fn follow(
    subscriber: SubscriberClient,
    feed: String,
    replica: Arc<Replica>,
    health: Arc<Health>,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    subscribe(&subscriber, &feed, &replica, &health).await;
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
                    replica.forget_all();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                replica.following.store(false, Ordering::Release);
                subscribe(&subscriber, &feed, &replica, &health).await;
            }
        }
    }
}

/// Subscribes (retrying while Redis is away), then starts trusting fresh reads again.
async fn subscribe(subscriber: &SubscriberClient, feed: &str, replica: &Replica, health: &Health) {
    loop {
        match subscriber.subscribe(feed).await {
            Ok(()) => {
                replica.forget_all();
                replica.following.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                health.pubsub_down(format!("redis: change feed: {e}"));
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        }
    }
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
        replica
    }

    #[test]
    fn a_kept_document_is_current_until_a_newer_version_is_announced() {
        let replica = following();
        let id = ChannelId::from("c");
        replica.remember(&id, "5".into(), Arc::from("{}"), channel());
        assert!(replica.current(&id).is_some());
        replica.announce(id.clone(), 5);
        assert!(replica.current(&id).is_some(), "its own announcement");
        replica.announce(id.clone(), 6);
        assert!(replica.current(&id).is_none(), "a newer write elsewhere");
        assert!(
            replica.kept(&id).is_some(),
            "kept for reads that compare versions"
        );
        replica.remember(&id, "7".into(), Arc::from("{}"), channel());
        assert!(replica.current(&id).is_some());
    }

    #[test]
    fn an_announcement_that_overtakes_the_read_it_follows_still_counts() {
        let replica = following();
        let id = ChannelId::from("c");
        replica.announce(id.clone(), 9);
        replica.announce(id.clone(), 8);
        replica.remember(&id, "8".into(), Arc::from("{}"), channel());
        assert!(replica.current(&id).is_none());
    }

    #[test]
    fn nothing_is_current_unless_the_feed_is_followed_or_for_unannounced_versions() {
        let id = ChannelId::from("c");
        let idle = Replica::default();
        idle.remember(&id, "5".into(), Arc::from("{}"), channel());
        assert!(idle.current(&id).is_none());
        let replica = following();
        replica.remember(&id, "9f3a0c11d2e4b5a6".into(), Arc::from("{}"), channel());
        assert!(replica.current(&id).is_none());
    }

    #[test]
    fn joined_channels_are_hints_forgotten_with_the_socket() {
        let replica = following();
        let sid = SocketId::from("s");
        replica.joined(&sid, &ChannelId::from("a"));
        replica.joined(&sid, &ChannelId::from("a"));
        assert_eq!(replica.channels_of(&sid), vec![ChannelId::from("a")]);
        replica.gone(&sid);
        assert!(replica.channels_of(&sid).is_empty());
    }
}
