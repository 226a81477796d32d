//! Every refusal the server answers with `error` or `relay_error`, and the opt-in that adds
//! its machine-readable `code` (EXTENSIONS.md, "Error codes").
//!
//! Legacy pages and their recorded sessions expect exactly `{message}` and
//! `{event, message}`, so a code goes only to a socket that asked for codes in its Socket.IO
//! handshake (`auth: {error_codes: true}`); the sentence stays the same for everybody.

use socketioxide::handler::Value;
use thiserror::Error;

use super::payloads::{InvalidPayload, RelayKind};
use crate::registry::errors::{ChannelError, ErrorCode};

/// Why an event was refused. `Display` is the sentence people read (PROTOCOL.md's where it
/// prescribes one); [`Refused::code`] the cause programs read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    /// A rule of the channels.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The payload failed decoding or validation (`Invalid …:` prefixes).
    #[error(transparent)]
    Invalid(#[from] InvalidPayload),
    /// A relay's payload has the wrong shape or size (`relay_error` only, so no prefix).
    #[error("{0}")]
    InvalidRelay(String),
    /// Over an event's rate; the sentence carries the event's prefix, so legacy pages show it
    /// where they show that event's errors.
    #[error("{0}")]
    RateLimited(InvalidPayload),
    /// Over the rate of relays to one peer.
    #[error("Too many {} messages to this peer; wait a moment and try again", .0.event())]
    RelayRateLimited(RelayKind),
    /// The relay's target stopped reading; the message was lost.
    #[error("Target is not keeping up with its messages; try again")]
    Undelivered,
    /// Hashing a new channel's password failed on the server's side.
    #[error("Server could not store the password; try again")]
    PasswordNotStored,
}

impl Refused {
    /// The cause, for programs. Exhaustive and without a wildcard on purpose: a new refusal
    /// cannot be added without its code; the channels' own are [`ChannelError::code`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Refused::Channel(e) => e.code(),
            Refused::Invalid(_) | Refused::InvalidRelay(_) => ErrorCode::InvalidPayload,
            Refused::RateLimited(_) | Refused::RelayRateLimited(_) => ErrorCode::RateLimited,
            Refused::Undelivered => ErrorCode::Undelivered,
            Refused::PasswordNotStored => ErrorCode::InternalError,
        }
    }
}

/// In a socket's extensions: it asked for codes in its handshake.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodes;

/// Whether the handshake's `auth` payload asks for codes: `{"error_codes": true}` exactly. A
/// missing, malformed or different `auth` never refuses the connection; it asks for nothing.
pub fn asks_for_codes(auth: Option<&Value>) -> bool {
    let Some(Value::Str(text, _)) = auth else {
        return false;
    };
    // Read as a JSON value, not a struct: serde would take `[true]` for `{error_codes: true}`.
    // Anything else in the object (legacy pages may send what they like) is ignored.
    serde_json::from_str::<serde_json::Value>(text.as_str())
        .is_ok_and(|auth| auth.get("error_codes") == Some(&serde_json::Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::payloads::ErrorPrefix;

    fn auth(text: &str) -> Value {
        Value::Str(text.to_owned().into(), None)
    }

    #[test]
    fn only_error_codes_true_asks() {
        assert!(asks_for_codes(Some(&auth(r#"{"error_codes":true}"#))));
        assert!(asks_for_codes(Some(&auth(
            r#"{"token":"x","error_codes":true}"#
        ))));
        for text in [
            "{}",
            r#"{"error_codes":false}"#,
            r#"{"error_codes":"true"}"#,
            r#"{"error_codes":1}"#,
            "[true]",
            "null",
            "not json",
        ] {
            assert!(!asks_for_codes(Some(&auth(text))), "{text}");
        }
        assert!(!asks_for_codes(None));
    }

    #[test]
    fn refusals_keep_their_sentences_and_carry_their_codes() {
        let invalid = InvalidPayload {
            prefix: ErrorPrefix::Message,
            reason: "too many requests; wait a moment and try again".to_owned(),
        };
        let limited = Refused::RateLimited(invalid.clone());
        assert_eq!(limited.to_string(), invalid.to_string());
        assert_eq!(limited.code(), ErrorCode::RateLimited);
        assert_eq!(Refused::Invalid(invalid).code(), ErrorCode::InvalidPayload);
        assert_eq!(
            Refused::RelayRateLimited(RelayKind::IceCandidate).to_string(),
            "Too many ice_candidate messages to this peer; wait a moment and try again"
        );
        assert_eq!(
            Refused::from(ChannelError::NotPeers).code(),
            ErrorCode::NotPeers
        );
        assert_eq!(
            Refused::from(ChannelError::NotPeers).to_string(),
            "Target is not a peer of yours in any channel"
        );
    }
}
