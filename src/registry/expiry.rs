//! What the passing of time ends: idle channels (the sweep), relay-tree waits past their limit,
//! and the grace of broadcasters that did not resume.

use std::collections::HashMap;
use std::time::Duration;

use super::clock::Moment;
use super::ids::ChannelId;
use super::model::{Channel, ClosedChannel, State};
use super::tree_events::TreeEvent;

/// What the passing of time ended: relay-tree waits and the grace of broadcasters that did not
/// come back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expired {
    pub tree: Vec<TreeEvent>,
    /// Closed: their viewers get `broadcaster_disconnected`.
    pub abandoned: Vec<ClosedChannel>,
}

impl Channel {
    /// The channel's next deadline: a relay-tree wait or the end of its broadcaster's grace.
    pub(crate) fn next_deadline(&self) -> Option<Moment> {
        match (self.tree.next_deadline(), self.away_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl State {
    /// Ends what the passing of time ends: relay-tree waits past their limit (those viewers get
    /// the broadcaster) and channels whose broadcaster did not resume within its grace.
    pub(crate) fn expire_waits(&mut self, now: Moment) -> Expired {
        let mut expired = Expired::default();
        for id in due(&self.waits, now) {
            let gone = self
                .channels
                .get(&id)
                .and_then(|c| c.away_until)
                .is_some_and(|until| until <= now);
            if gone {
                if let Some(closed) = self.close_channel(&id) {
                    expired.abandoned.push(closed);
                }
                continue;
            }
            if let Some(channel) = self.channels.get_mut(&id) {
                let notices = channel.tree.expire_waits(now);
                channel.address(notices, false, &mut expired.tree);
            }
            self.track_waits(&id);
        }
        expired
    }

    pub(crate) fn sweep(&mut self, ttl: Duration, now: Moment) -> Vec<ClosedChannel> {
        let expired: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.viewers.is_empty() && now.duration_since(c.last_activity) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| self.close_channel(id))
            .collect()
    }

    /// Keeps the index of channels with waiting viewers in step with one channel's tree.
    pub(crate) fn track_waits(&mut self, channel_id: &ChannelId) {
        match self
            .channels
            .get(channel_id)
            .and_then(Channel::next_deadline)
        {
            Some(deadline) => {
                self.waits.insert(channel_id.clone(), deadline);
            }
            None => {
                self.waits.remove(channel_id);
            }
        }
    }
}

/// The channels whose deadline has come.
pub(crate) fn due(deadlines: &HashMap<ChannelId, Moment>, now: Moment) -> Vec<ChannelId> {
    deadlines
        .iter()
        .filter(|(_, deadline)| **deadline <= now)
        .map(|(id, _)| id.clone())
        .collect()
}
