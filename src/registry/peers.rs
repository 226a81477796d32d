//! Who may relay to whom in one channel, and nothing else: the part of a [`Channel`] that
//! relay authorization reads (its present broadcaster, its viewers, who feeds whom in its relay
//! tree, its last activity), small enough to keep per channel on every node of a cluster and
//! to follow change by change.
//!
//! A cluster's node authorizes offers, answers, candidates and chat from its copy of a
//! channel's [`Peers`] without a Redis read (`crate::cluster`'s replica). Every write of a
//! channel publishes the [`PeersChange`] between the peers it read and the peers it wrote; a
//! node applies them in order, so its copy stays current during a crowd's arrival, when the
//! whole channel changes with every batch and reading it again per relay cost O(viewers).
//!
//! The rule itself ([`relay_target`]) is written once, over [`Relaying`], which both the full
//! channel and its peers implement: the in-memory server, a cluster's transaction and a
//! cluster's replica decide every relay the same way.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::clock::Moment;
use super::ids::SocketId;
use super::model::Channel;
use super::tree::Feeder;

/// What relay authorization reads of a channel.
pub(crate) trait Relaying {
    /// The broadcaster while it is connected (not while the channel waits for it to resume).
    fn present_broadcaster(&self) -> Option<&SocketId>;
    /// The viewer named `id`, as stored.
    fn viewer(&self, id: &str) -> Option<&SocketId>;
    /// The viewer that feeds `child` in the relay tree (none when the broadcaster feeds it,
    /// or nobody does yet).
    fn feeder_of(&self, child: &str) -> Option<&SocketId>;
}

/// Whether `sender` may relay to `target` within this channel, and the target's id if so:
/// its broadcaster and any viewer, either way; two viewers that are feeder and child in the
/// relay tree (PROTOCOL.md "Relay authorization"). Nobody reaches a broadcaster whose
/// connection is gone while the channel waits for it to resume.
pub(crate) fn relay_target(
    channel: &impl Relaying,
    sender: &SocketId,
    target: &str,
) -> Option<SocketId> {
    let present = channel.present_broadcaster();
    if present == Some(sender) {
        return channel.viewer(target).cloned();
    }
    channel.viewer(sender.as_str())?;
    if let Some(broadcaster) = present.filter(|b| b.as_str() == target) {
        return Some(broadcaster.clone());
    }
    let feeds = |child: &str, feeder: &str| {
        channel
            .feeder_of(child)
            .is_some_and(|f| f.as_str() == feeder)
    };
    if feeds(sender.as_str(), target) || feeds(target, sender.as_str()) {
        return channel.viewer(target).cloned();
    }
    None
}

impl Relaying for Channel {
    fn present_broadcaster(&self) -> Option<&SocketId> {
        Channel::present_broadcaster(self)
    }

    fn viewer(&self, id: &str) -> Option<&SocketId> {
        self.viewers.get_key_value(id).map(|(viewer, _)| viewer)
    }

    fn feeder_of(&self, child: &str) -> Option<&SocketId> {
        match self.tree.upstream_of(child) {
            Some(Feeder::Viewer(feeder)) => Some(feeder),
            _ => None,
        }
    }
}

/// One channel's peers (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peers {
    pub(crate) broadcaster: Option<SocketId>,
    pub(crate) viewers: HashSet<SocketId>,
    /// Child → the viewer that feeds it (children of the broadcaster are not listed).
    feeders: HashMap<SocketId, SocketId>,
    pub(crate) last_activity: Moment,
}

impl Relaying for Peers {
    fn present_broadcaster(&self) -> Option<&SocketId> {
        self.broadcaster.as_ref()
    }

    fn viewer(&self, id: &str) -> Option<&SocketId> {
        self.viewers.get(id)
    }

    fn feeder_of(&self, child: &str) -> Option<&SocketId> {
        self.feeders.get(child)
    }
}

/// How one write changed a channel's [`Peers`]: what a node applies to the copy it holds of
/// the version before. Field names are short: one is published per channel write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeersChange {
    /// The broadcaster now present, when another one is (or it came back).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    broadcaster: Option<SocketId>,
    /// The broadcaster is away (its channel held for it to resume) or gone.
    #[serde(rename = "n", default, skip_serializing_if = "std::ops::Not::not")]
    away: bool,
    /// Viewers that joined.
    #[serde(rename = "j", default, skip_serializing_if = "Vec::is_empty")]
    joined: Vec<SocketId>,
    /// Viewers that left.
    #[serde(rename = "l", default, skip_serializing_if = "Vec::is_empty")]
    left: Vec<SocketId>,
    /// Children whose feeder changed, and their feeder now (`None`: the broadcaster, or
    /// nobody).
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    fed: Vec<(SocketId, Option<SocketId>)>,
    /// The channel's last activity, when it moved.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    activity: Option<Moment>,
}

impl Peers {
    /// A channel's peers as it stands.
    pub(crate) fn of(channel: &Channel) -> Self {
        Self {
            broadcaster: channel.present_broadcaster().cloned(),
            viewers: channel.viewers.keys().cloned().collect(),
            feeders: channel
                .viewers
                .keys()
                .filter_map(|child| {
                    let feeder = Relaying::feeder_of(channel, child.as_str())?;
                    Some((child.clone(), feeder.clone()))
                })
                .collect(),
            last_activity: channel.last_activity,
        }
    }

    /// Applies a change made to these very peers (the version it was computed from).
    pub(crate) fn apply(&mut self, change: PeersChange) {
        if change.away {
            self.broadcaster = None;
        }
        if let Some(broadcaster) = change.broadcaster {
            self.broadcaster = Some(broadcaster);
        }
        for viewer in change.left {
            self.feeders.remove(&viewer);
            self.viewers.remove(&viewer);
        }
        self.viewers.extend(change.joined);
        for (child, feeder) in change.fed {
            match feeder {
                Some(feeder) => self.feeders.insert(child, feeder),
                None => self.feeders.remove(&child),
            };
        }
        if let Some(activity) = change.activity {
            self.last_activity = activity;
        }
    }
}

impl PeersChange {
    /// How a write changed a channel's peers, from the channel it read to the channel it
    /// writes: applied to the peers of `before`, it gives those of `after`. O(viewers) lookups
    /// and nothing copied but what changed: an owner's batch computes one per write.
    pub(crate) fn between(before: &Channel, after: &Channel) -> Self {
        let joined = after
            .viewers
            .keys()
            .filter(|v| !before.viewers.contains_key(*v))
            .cloned()
            .collect();
        let left = before
            .viewers
            .keys()
            .filter(|v| !after.viewers.contains_key(*v))
            .cloned()
            .collect();
        let fed = after
            .viewers
            .keys()
            .filter_map(|v| {
                let now = Relaying::feeder_of(after, v.as_str());
                (now != Relaying::feeder_of(before, v.as_str())).then(|| (v.clone(), now.cloned()))
            })
            .collect();
        let (was, is) = (before.present_broadcaster(), after.present_broadcaster());
        Self {
            broadcaster: if was != is { is.cloned() } else { None },
            away: was.is_some() && is.is_none(),
            joined,
            left,
            fed,
            activity: (before.last_activity != after.last_activity).then_some(after.last_activity),
        }
    }
}
