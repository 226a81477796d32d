//! Relay authorization: who may hand an offer, an answer or an ICE candidate to whom.

use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::SocketId;
use super::model::{Channel, State};
use super::peers;

/// The three relayed events. A domain name, not a payload: metrics count relays by kind and
/// refusals name it, without either depending on the transport's decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayKind {
    Offer,
    Answer,
    IceCandidate,
}

impl RelayKind {
    pub const ALL: [RelayKind; 3] = [RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate];

    /// The event's name in PROTOCOL.md.
    pub fn event(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::IceCandidate => "ice_candidate",
        }
    }
}

/// Whether a relay refreshes the channel's activity (offers and answers do, ICE does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Refresh,
    Keep,
}

impl Channel {
    /// Whether `sender` may relay to `target` within this channel, and the target's id if so
    /// (the rule: [`peers::relay_target`]).
    pub(crate) fn relay_target(&self, sender: &SocketId, target: &str) -> Option<SocketId> {
        peers::relay_target(self, sender, target)
    }
}

impl State {
    /// Authorizes a relay from the sender's own channels (see [`Channel::relay_target`]); an
    /// offer or answer also counts as activity of the channel they share.
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
            .chain(&membership.watching)
            .find_map(|id| Some((id, channels.get(id)?.relay_target(sender, target)?)))
            .ok_or(ChannelError::NotPeers)?;
        if activity == Activity::Refresh
            && let Some(channel) = channels.get_mut(shared)
        {
            channel.last_activity = now;
        }
        Ok(target)
    }
}
