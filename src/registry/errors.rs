//! Domain errors. Each `Display` is the user-facing sentence PROTOCOL.md prescribes; handlers
//! decide which event carries it (`error` or `relay_error`) in one place.
//!
//! Each variant is one cause, and [`ChannelError::code`] names it for programs: clients that ask
//! for codes get it beside the sentence (EXTENSIONS.md, "Error codes"). Where the earlier server
//! worded one cause two ways (a join names the channel, the other events do not), the wording is
//! a field of the variant, so a cause never has two codes.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use super::ids::ChannelId;

/// Serialized only between the nodes of one deployment (a forwarded operation's outcome).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ChannelError {
    #[error("Channel {0} already has a broadcaster")]
    AlreadyHasBroadcaster(ChannelId),
    #[error("Server is at capacity ({0} channels); try again later")]
    AtCapacity(usize),
    /// No such channel. The joins name it (`Some`); the other events answer with the earlier
    /// server's unnamed sentence (`None`).
    #[error("Channel {}not found or expired", Named(.0.as_ref()))]
    NotFound(Option<ChannelId>),
    #[error("You already broadcast {0} channels; stop one before starting another")]
    TooManyForSocket(usize),
    #[error("Too many channels from your network address (limit {0}); try again later")]
    TooManyForAddress(usize),
    /// The caller does not watch the channel; the earlier server said so differently for chat.
    #[error("You must be a viewer in this channel{}", .0.suffix())]
    NotAViewer(ViewerAction),
    #[error("You are not the broadcaster of this channel")]
    NotTheBroadcaster,
    #[error("Target is not a peer of yours in any channel")]
    NotPeers,
    /// A private channel's password was not given. The sentence is the wrong one's: a person
    /// reads one answer for both, while a program (which knows what it sent) gets its own code.
    #[error("Invalid data: password is missing or wrong for this channel")]
    PasswordRequired,
    /// A private channel's password was given and does not match.
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
    /// A moderation event names a socket that does not watch the channel.
    #[error("No such viewer in this channel")]
    ViewerNotFound,
    /// The broadcaster banned this client (see `moderation`).
    #[error("You are banned from this channel")]
    Banned,
    /// The broadcaster muted this viewer.
    #[error("You are muted in this channel")]
    Muted,
    /// The channel's slow mode: the viewer must wait this many more seconds.
    #[error("Slow mode: wait {0} s before your next message")]
    SlowMode(u32),
    /// The broadcaster turned the chat off.
    #[error("Chat is turned off in this channel")]
    ChatOff,
    /// A viewer the broadcaster removed from its channel (without a ban) is told so with this.
    #[error("You were removed from this channel by its broadcaster")]
    Removed,
    /// The channel holds as many bans (or mutes) as it may.
    #[error("This channel holds as many bans and mutes as it may ({0}); lift some first")]
    TooManyMarks(usize),
    /// Cluster mode only: the shared store (Redis) cannot be reached or answered nonsense.
    #[error("Server unavailable: its shared storage cannot be reached; try again shortly")]
    Unavailable,
}

/// What a caller that is not a viewer of a channel tried to do there (only the wording differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewerAction {
    /// `set_alias`, `relay_ready`, `upstream_failed`, `upstream_stalled`, `relay_capacity`.
    Other,
    /// `send_message`.
    Chat,
}

impl ViewerAction {
    fn suffix(self) -> &'static str {
        match self {
            ViewerAction::Other => "",
            ViewerAction::Chat => " to send messages",
        }
    }
}

/// A channel id followed by a space, or nothing.
struct Named<'a>(Option<&'a ChannelId>);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id} "),
            None => Ok(()),
        }
    }
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
            // A person's ordinary attempts (a message typed too soon, a banned viewer trying
            // again): refused, never held against the connection.
            Self::Banned | Self::Muted | Self::SlowMode(_) | Self::ChatOff | Self::Removed => false,
            // A broadcaster acting on a viewer list a moment old (the viewer just left), or on
            // a channel full of bans: a person's click, never held against its broadcast.
            Self::ViewerNotFound | Self::TooManyMarks(_) => false,
            Self::AlreadyHasBroadcaster(_)
            | Self::NotFound(_)
            | Self::TooManyForSocket(_)
            | Self::TooManyForAddress(_)
            | Self::NotAViewer(_)
            | Self::NotTheBroadcaster
            | Self::NotPeers
            | Self::PasswordRequired
            | Self::WrongPassword
            | Self::InvalidInvite
            | Self::NotPrivate => true,
        }
    }

    /// The cause, for programs. Exhaustive and without a wildcard on purpose: a new refusal
    /// cannot be added without its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyHasBroadcaster(_) => ErrorCode::ChannelTaken,
            Self::AtCapacity(_) => ErrorCode::AtCapacity,
            Self::NotFound(_) => ErrorCode::ChannelNotFound,
            Self::TooManyForSocket(_) => ErrorCode::TooManyChannels,
            Self::TooManyForAddress(_) => ErrorCode::TooManyFromAddress,
            Self::NotAViewer(_) => ErrorCode::NotAViewer,
            Self::NotTheBroadcaster => ErrorCode::NotTheBroadcaster,
            Self::NotPeers => ErrorCode::NotPeers,
            Self::PasswordRequired => ErrorCode::PasswordRequired,
            Self::WrongPassword => ErrorCode::WrongPassword,
            Self::InvalidInvite => ErrorCode::InvalidInvite,
            Self::NotPrivate => ErrorCode::NotPrivate,
            Self::WaitingRoomFull => ErrorCode::WaitingRoomFull,
            Self::ViewerNotFound => ErrorCode::ViewerNotFound,
            Self::Banned => ErrorCode::Banned,
            Self::Muted => ErrorCode::Muted,
            Self::SlowMode(_) => ErrorCode::SlowMode,
            Self::ChatOff => ErrorCode::ChatOff,
            Self::Removed => ErrorCode::Removed,
            Self::TooManyMarks(_) => ErrorCode::TooManyBans,
            Self::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// Why the server refused an event, for programs: the `code` of `error` and `relay_error` sent
/// to clients that asked for codes when they connected (legacy clients never see it). Stable:
/// a code, once published, keeps its meaning; causes are added, never renamed. The table in
/// EXTENSIONS.md lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No such channel (never created, closed, or reaped).
    ChannelNotFound,
    /// The channel already has a broadcaster (another socket's, or held for one).
    ChannelTaken,
    /// The server holds as many channels as it may (`--max-channels`).
    AtCapacity,
    /// The waiting room for channels without a broadcaster is full.
    WaitingRoomFull,
    /// This connection broadcasts as many channels as one may.
    TooManyChannels,
    /// The client's network address owns as many channels as one may.
    TooManyFromAddress,
    /// The caller does not watch the channel.
    NotAViewer,
    /// The caller is not the channel's broadcaster.
    NotTheBroadcaster,
    /// A relay to a socket that is not the sender's peer.
    NotPeers,
    /// A private channel, and no password was given.
    PasswordRequired,
    /// A private channel, and the password given does not match.
    WrongPassword,
    /// An invitation that is forged, for another channel, expired or revoked.
    InvalidInvite,
    /// Invitations asked for a public channel.
    NotPrivate,
    /// The payload failed decoding or validation (the message names the field).
    InvalidPayload,
    /// A moderation event names a socket that does not watch the channel.
    ViewerNotFound,
    /// The broadcaster banned this client.
    Banned,
    /// Sent to a viewer its broadcaster removed from the channel (without a ban).
    Removed,
    /// The broadcaster muted this viewer.
    Muted,
    /// Too soon after the viewer's previous message (the channel's slow mode).
    SlowMode,
    /// The broadcaster turned the chat off.
    ChatOff,
    /// The channel holds as many bans (or mutes) as it may.
    TooManyBans,
    /// Over a rate limit: wait a moment.
    RateLimited,
    /// A relay's target stopped reading its messages; this one was lost.
    Undelivered,
    /// Cluster mode: the shared storage cannot be reached; try again shortly.
    Unavailable,
    /// The server failed on its side (not the client's doing); try again.
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::ChannelNotFound,
        ErrorCode::ChannelTaken,
        ErrorCode::AtCapacity,
        ErrorCode::WaitingRoomFull,
        ErrorCode::TooManyChannels,
        ErrorCode::TooManyFromAddress,
        ErrorCode::NotAViewer,
        ErrorCode::NotTheBroadcaster,
        ErrorCode::NotPeers,
        ErrorCode::PasswordRequired,
        ErrorCode::WrongPassword,
        ErrorCode::InvalidInvite,
        ErrorCode::NotPrivate,
        ErrorCode::InvalidPayload,
        ErrorCode::ViewerNotFound,
        ErrorCode::Banned,
        ErrorCode::Removed,
        ErrorCode::Muted,
        ErrorCode::SlowMode,
        ErrorCode::ChatOff,
        ErrorCode::TooManyBans,
        ErrorCode::RateLimited,
        ErrorCode::Undelivered,
        ErrorCode::Unavailable,
        ErrorCode::InternalError,
    ];

    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ChannelNotFound => "channel_not_found",
            ErrorCode::ChannelTaken => "channel_taken",
            ErrorCode::AtCapacity => "at_capacity",
            ErrorCode::WaitingRoomFull => "waiting_room_full",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::TooManyFromAddress => "too_many_from_address",
            ErrorCode::NotAViewer => "not_a_viewer",
            ErrorCode::NotTheBroadcaster => "not_the_broadcaster",
            ErrorCode::NotPeers => "not_peers",
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::InvalidInvite => "invalid_invite",
            ErrorCode::NotPrivate => "not_private",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::ViewerNotFound => "viewer_not_found",
            ErrorCode::Banned => "banned",
            ErrorCode::Removed => "removed",
            ErrorCode::Muted => "muted",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::ChatOff => "chat_off",
            ErrorCode::TooManyBans => "too_many_bans",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Undelivered => "undelivered",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized as its wire string, from [`ErrorCode::as_str`] alone.
impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant, written out: adding a variant breaks `code`'s match until it has a
    /// code, and this list until it is tested.
    fn every_variant() -> Vec<ChannelError> {
        vec![
            ChannelError::AlreadyHasBroadcaster(ChannelId::from("c")),
            ChannelError::AtCapacity(1),
            ChannelError::NotFound(Some(ChannelId::from("c"))),
            ChannelError::TooManyForSocket(1),
            ChannelError::TooManyForAddress(1),
            ChannelError::NotAViewer(ViewerAction::Other),
            ChannelError::NotTheBroadcaster,
            ChannelError::NotPeers,
            ChannelError::PasswordRequired,
            ChannelError::WrongPassword,
            ChannelError::InvalidInvite,
            ChannelError::NotPrivate,
            ChannelError::WaitingRoomFull,
            ChannelError::ViewerNotFound,
            ChannelError::Banned,
            ChannelError::Muted,
            ChannelError::SlowMode(3),
            ChannelError::ChatOff,
            ChannelError::Removed,
            ChannelError::TooManyMarks(1000),
            ChannelError::Unavailable,
        ]
    }

    #[test]
    fn every_variant_has_a_distinct_code() {
        let errors = every_variant();
        let mut codes: Vec<&str> = errors.iter().map(|e| e.code().as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len(), "{codes:?}");
    }

    #[test]
    fn codes_are_distinct_snake_case_and_listed() {
        let mut codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert!(codes.iter().all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && !c.starts_with('_')
                && !c.ends_with('_')
        }));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for error in every_variant() {
            assert!(ErrorCode::ALL.contains(&error.code()), "{error:?}");
        }
        assert_eq!(
            serde_json::to_string(&ErrorCode::ChannelTaken).unwrap(),
            r#""channel_taken""#
        );
    }

    #[test]
    fn one_cause_keeps_each_of_its_legacy_sentences() {
        assert_eq!(
            ChannelError::NotFound(Some(ChannelId::from("abc"))).to_string(),
            "Channel abc not found or expired"
        );
        assert_eq!(
            ChannelError::NotFound(None).to_string(),
            "Channel not found or expired"
        );
        assert_eq!(
            ChannelError::NotAViewer(ViewerAction::Other).to_string(),
            "You must be a viewer in this channel"
        );
        assert_eq!(
            ChannelError::NotAViewer(ViewerAction::Chat).to_string(),
            "You must be a viewer in this channel to send messages"
        );
        assert_eq!(
            ChannelError::PasswordRequired.to_string(),
            ChannelError::WrongPassword.to_string()
        );
    }

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
            ChannelError::NotAViewer(ViewerAction::Other),
            ChannelError::NotTheBroadcaster,
            ChannelError::WrongPassword,
            ChannelError::PasswordRequired,
        ] {
            assert!(refusal.is_clients_fault(), "{refusal:?}");
        }
    }
}
