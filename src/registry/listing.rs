//! What the registry tells about its channels: `channel_list`, the census for `/metrics`, and a
//! private channel's stored password hash.

use serde::Serialize;

use super::clock::Moment;
use super::ids::{ChannelId, SocketId};
use super::model::State;

/// One entry of `channel_list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelSummary {
    pub id: ChannelId,
    pub broadcaster_sid: SocketId,
    pub created_at: f64,
    pub age_seconds: u64,
    pub last_activity: f64,
}

/// How the channels stand, for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// Channels with their broadcaster connected and streaming.
    pub live: usize,
    /// Channels whose broadcaster stopped (and may go live again).
    pub stopped: usize,
    /// Channels held for a broadcaster whose connection dropped.
    pub held: usize,
    /// Viewers of each channel.
    pub viewers: Vec<usize>,
    /// Depth of each channel's relay tree (1 = everyone fed by the broadcaster).
    pub tree_depths: Vec<usize>,
}

impl State {
    pub(crate) fn list(&self, now: Moment) -> Vec<ChannelSummary> {
        let mut list = Vec::new();
        self.list_into(now, &mut list);
        sort_listing(&mut list);
        list
    }

    /// Adds this state's public channels to a listing (unsorted: see [`sort_listing`]).
    pub(crate) fn list_into(&self, now: Moment, list: &mut Vec<ChannelSummary>) {
        let now = now.as_unix_secs();
        list.extend(
            self.channels
                .iter()
                .filter(|(_, c)| c.password.is_none())
                .map(|(id, c)| ChannelSummary {
                    id: id.clone(),
                    broadcaster_sid: c.broadcaster.clone(),
                    created_at: c.created_at,
                    age_seconds: (now - c.created_at).max(0.0) as u64,
                    last_activity: c.last_activity.as_unix_secs(),
                }),
        );
    }

    pub(crate) fn census(&self) -> Census {
        let mut census = Census::default();
        self.count_into(&mut census);
        census
    }

    /// Adds this state's channels to a census.
    pub(crate) fn count_into(&self, census: &mut Census) {
        for channel in self.channels.values() {
            if channel.away_until.is_some() {
                census.held += 1;
            } else if channel.stopped {
                census.stopped += 1;
            } else {
                census.live += 1;
            }
            census.viewers.push(channel.viewers.len());
            census.tree_depths.push(channel.tree.depths().len());
        }
    }

    /// The stored password hash of a private channel (`None`: public or unknown).
    pub(crate) fn password_of(&self, channel_id: &str) -> Option<String> {
        self.channels.get(channel_id)?.password.clone()
    }
}

/// `channel_list`'s order: oldest first, ties by id.
pub(crate) fn sort_listing(list: &mut [ChannelSummary]) {
    list.sort_by(|a, b| {
        a.created_at
            .total_cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}
