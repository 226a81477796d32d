//! Domain errors. Each `Display` is the user-facing sentence PROTOCOL.md prescribes; handlers
//! decide which event carries it (`error` or `relay_error`) in one place.

use thiserror::Error;

use super::ids::ChannelId;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("Channel {0} already has a broadcaster")]
    AlreadyHasBroadcaster(ChannelId),
    #[error("Server is at capacity ({0} channels); try again later")]
    AtCapacity(usize),
    #[error("Channel {0} not found or expired")]
    NotFound(ChannelId),
    #[error("Channel not found or expired")]
    NotFoundOrExpired,
    #[error("You already broadcast {0} channels; stop one before starting another")]
    TooManyForSocket(usize),
    #[error("Too many channels from your network address (limit {0}); try again later")]
    TooManyForAddress(usize),
    #[error("You must be a viewer in this channel")]
    NotAViewer,
    #[error("You must be a viewer in this channel to send messages")]
    NotAViewerToChat,
    #[error("You are not the broadcaster of this channel")]
    NotTheBroadcaster,
    #[error("Target is not a peer of yours in any channel")]
    NotPeers,
    /// A private channel's password was missing or wrong (one answer for both: nothing to learn).
    #[error("Invalid data: password is missing or wrong for this channel")]
    WrongPassword,
    /// A private channel's invitation was forged, for another channel, expired or revoked (one
    /// answer for all: nothing to learn).
    #[error(
        "Invalid data: this invitation is invalid, expired or revoked; ask the broadcaster for a new link, or enter the password"
    )]
    InvalidInvite,
    /// `create_invite` or `rotate_invites` for a public channel, which needs no invitation.
    #[error("Invitations are for private channels; anyone with this channel's link can watch it")]
    NotPrivate,
    #[error("Too many viewers are waiting for a broadcaster; try again later")]
    WaitingRoomFull,
    /// Cluster mode only: the shared store (Redis) cannot be reached or answered nonsense.
    #[error("Server unavailable: its shared storage cannot be reached; try again shortly")]
    Unavailable,
}

impl ChannelError {
    /// Whether the refusal is the client's own doing, and so counts as a strike (enough of them
    /// and the client is disconnected). A refusal the server causes, its shared storage out of
    /// reach or too contended to answer in time, never is: a broadcaster answering a crowd of
    /// viewers must not be disconnected for the server's trouble.
    pub fn is_clients_fault(&self) -> bool {
        // Exhaustive on purpose: a new refusal must be placed on one side or the other.
        match self {
            // The server's storage, or the server being full: nothing the client did.
            Self::Unavailable | Self::AtCapacity(_) | Self::WaitingRoomFull => false,
            Self::AlreadyHasBroadcaster(_)
            | Self::NotFound(_)
            | Self::NotFoundOrExpired
            | Self::TooManyForSocket(_)
            | Self::TooManyForAddress(_)
            | Self::NotAViewer
            | Self::NotAViewerToChat
            | Self::NotTheBroadcaster
            | Self::NotPeers
            | Self::WrongPassword
            | Self::InvalidInvite
            | Self::NotPrivate => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_the_client_caused_are_strikes() {
        for refusal in [
            ChannelError::Unavailable,
            ChannelError::AtCapacity(1),
            ChannelError::WaitingRoomFull,
        ] {
            assert!(!refusal.is_clients_fault(), "{refusal:?}");
        }
        for refusal in [
            ChannelError::NotPeers,
            ChannelError::NotAViewer,
            ChannelError::NotTheBroadcaster,
            ChannelError::WrongPassword,
        ] {
            assert!(refusal.is_clients_fault(), "{refusal:?}");
        }
    }
}
