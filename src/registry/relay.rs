//! Relay authorization: who may hand an offer, an answer or an ICE candidate to whom.

use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::SocketId;
use super::model::State;

/// Whether a relay refreshes the channel's activity (offers and answers do, ICE does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Refresh,
    Keep,
}

impl State {
    pub(crate) fn authorize_relay(
        &mut self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
        now: Moment,
    ) -> Result<SocketId, ChannelError> {
        let State {
            channels, sockets, ..
        } = self;
        let membership = sockets.get(sender).ok_or(ChannelError::NotPeers)?;
        let (shared, target) = membership
            .broadcasting
            .iter()
            .find_map(|id| {
                let channel = channels.get(id)?;
                let (viewer, _) = channel.viewers.get_key_value(target)?;
                Some((id, viewer.clone()))
            })
            .or_else(|| {
                membership.watching.iter().find_map(|id| {
                    let channel = channels.get(id)?;
                    if channel.broadcaster.as_str() == target {
                        // Nobody to relay to while the channel waits for its broadcaster.
                        let present = channel.present_broadcaster()?;
                        return Some((id, present.clone()));
                    }
                    // A tree viewer and its current feeder or child (PROTOCOL.md "Relay
                    // authorization"): both are viewers of this channel.
                    if channel.tree.are_linked(sender, target) {
                        let (viewer, _) = channel.viewers.get_key_value(target)?;
                        return Some((id, viewer.clone()));
                    }
                    None
                })
            })
            .ok_or(ChannelError::NotPeers)?;
        if activity == Activity::Refresh
            && let Some(channel) = channels.get_mut(shared)
        {
            channel.last_activity = now;
        }
        Ok(target)
    }
}
