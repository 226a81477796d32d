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
    #[error("Too many viewers are waiting for a broadcaster; try again later")]
    WaitingRoomFull,
    /// Cluster mode only: the shared store (Redis) cannot be reached or answered nonsense.
    #[error("Server unavailable: its shared storage cannot be reached; try again shortly")]
    Unavailable,
}
