//! Invitations: links a private channel's broadcaster hands out so viewers can watch without
//! the password.
//!
//! An invitation is a token the server signs and never stores: `<payload>.<mac>`, both base64url
//! without padding, the payload `v1:<channel_id>:<generation>:<expires_at>` (channel ids are
//! `[A-Za-z0-9_-]`, so `:` cannot occur in one) and the MAC HMAC-SHA256 over it with the
//! server's invite key. Nothing to store means nothing to replicate between cluster nodes:
//! any node with the same key checks any node's invitations. Revocation is the one piece of
//! state: the channel's invitation generation, which the token names and `rotate_invites` bumps,
//! so every earlier token stops matching at once.
//!
//! A token is a credential; like passwords it never appears in logs (`Debug` hides it).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt;
use sha2::Sha256;

/// Random bytes in a per-process key (256 bits, HMAC-SHA256's block of security).
const KEY_BYTES: usize = 32;

/// Format and domain tag of the payload: a future format, or another use of the same key,
/// can never be mistaken for this one.
const VERSION: &str = "v1";

/// The longest token a client may present: twice what this server issues, so a longer string
/// is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 256;

/// Shortest and longest lifetime a broadcaster may ask for (`ttl_seconds`), and the default.
pub const MIN_TTL_SECS: u64 = 60;
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// The key that signs invitations. Its `Debug` never shows it.
#[derive(Clone)]
pub struct InviteKey {
    key: Vec<u8>,
    /// Whether the key was drawn at start-up (no `--invite-secret`): its invitations die with
    /// the process and no other node accepts them.
    ephemeral: bool,
}

impl std::fmt::Debug for InviteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteKey")
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

/// What a valid invitation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub channel_id: String,
    /// The channel's invitation generation when it was issued; the channel's current one must
    /// still be the same for it to admit anybody.
    pub generation: u64,
    /// Unix seconds after which it admits nobody.
    pub expires_at: u64,
}

/// Why a presented invitation admits nobody. One message for the client whatever the reason
/// (a forger learns nothing); the variants are for tests and debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InviteRefusal {
    #[error("malformed")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("for another channel")]
    OtherChannel,
    #[error("expired")]
    Expired,
}

impl InviteKey {
    /// The operator's `--invite-secret`, shared by every node of a cluster.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
            ephemeral: false,
        }
    }

    /// A random key for this process alone.
    pub fn random() -> Self {
        let bytes: [u8; KEY_BYTES] = rand::rng().random();
        Self {
            key: bytes.to_vec(),
            ephemeral: true,
        }
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(payload);
        mac
    }

    /// A signed token for `invitation`.
    pub fn sign(&self, invitation: &Invitation) -> String {
        let payload = format!(
            "{VERSION}:{}:{}:{}",
            invitation.channel_id, invitation.generation, invitation.expires_at
        );
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", BASE64URL.encode(payload), BASE64URL.encode(tag))
    }

    /// What `token` says, if this key signed it for `channel_id` and it has not expired at
    /// `now` (Unix seconds). The signature is checked first, in constant time, before anything
    /// in the payload is believed.
    pub fn verify(
        &self,
        token: &str,
        channel_id: &str,
        now: u64,
    ) -> Result<Invitation, InviteRefusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InviteRefusal::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(InviteRefusal::Malformed)?;
        let payload = BASE64URL
            .decode(payload)
            .map_err(|_| InviteRefusal::Malformed)?;
        let tag = BASE64URL
            .decode(tag)
            .map_err(|_| InviteRefusal::Malformed)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| InviteRefusal::BadSignature)?;
        let invitation = parse_payload(&payload).ok_or(InviteRefusal::Malformed)?;
        if invitation.channel_id != channel_id {
            return Err(InviteRefusal::OtherChannel);
        }
        if invitation.expires_at <= now {
            return Err(InviteRefusal::Expired);
        }
        Ok(invitation)
    }
}

fn parse_payload(payload: &[u8]) -> Option<Invitation> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':');
    let (version, channel_id, generation, expires_at) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != VERSION || parts.next().is_some() {
        return None;
    }
    Some(Invitation {
        channel_id: channel_id.to_owned(),
        generation: generation.parse().ok()?,
        expires_at: expires_at.parse().ok()?,
    })
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(channel_id: &str, generation: u64, expires_at: u64) -> Invitation {
        Invitation {
            channel_id: channel_id.to_owned(),
            generation,
            expires_at,
        }
    }

    #[test]
    fn a_signed_invitation_verifies_until_it_expires() {
        let key = InviteKey::from_secret(b"invite-secret");
        let issued = invitation("room_1-a", 3, 1_000);
        let token = key.sign(&issued);
        assert!(token.len() < MAX_TOKEN_LEN / 2, "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "URL-safe: {token}"
        );
        assert_eq!(key.verify(&token, "room_1-a", 999), Ok(issued));
        assert_eq!(
            key.verify(&token, "room_1-a", 1_000),
            Err(InviteRefusal::Expired)
        );
        assert_eq!(
            key.verify(&token, "other", 999),
            Err(InviteRefusal::OtherChannel)
        );
    }

    #[test]
    fn another_key_or_a_flipped_bit_is_refused() {
        let key = InviteKey::from_secret(b"invite-secret");
        let token = key.sign(&invitation("room", 0, 1_000));
        assert_eq!(
            InviteKey::from_secret(b"other-secret").verify(&token, "room", 1),
            Err(InviteRefusal::BadSignature)
        );
        assert_eq!(
            InviteKey::random().verify(&token, "room", 1),
            Err(InviteRefusal::BadSignature)
        );
        // Flip one bit of every byte of the payload and of the tag, one at a time.
        let (payload, tag) = token.split_once('.').unwrap();
        let payload = BASE64URL.decode(payload).unwrap();
        let tag = BASE64URL.decode(tag).unwrap();
        for i in 0..payload.len() {
            let mut forged = payload.clone();
            forged[i] ^= 1;
            let token = format!("{}.{}", BASE64URL.encode(&forged), BASE64URL.encode(&tag));
            assert!(key.verify(&token, "room", 1).is_err(), "payload byte {i}");
        }
        for i in 0..tag.len() {
            let mut forged = tag.clone();
            forged[i] ^= 0x80;
            let token = format!(
                "{}.{}",
                BASE64URL.encode(&payload),
                BASE64URL.encode(&forged)
            );
            assert_eq!(
                key.verify(&token, "room", 1),
                Err(InviteRefusal::BadSignature),
                "tag byte {i}"
            );
        }
    }

    #[test]
    fn junk_is_malformed() {
        let key = InviteKey::from_secret(b"k");
        for junk in [
            "",
            ".",
            "abc",
            "a.b.c",
            "!!!.???",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(key.verify(junk, "room", 1).is_err(), "{junk}");
        }
        // Well signed but not our format.
        let tag = key.mac(b"v2:room:0:9").finalize().into_bytes();
        let token = format!(
            "{}.{}",
            BASE64URL.encode("v2:room:0:9"),
            BASE64URL.encode(tag)
        );
        assert_eq!(key.verify(&token, "room", 1), Err(InviteRefusal::Malformed));
    }

    #[test]
    fn the_key_never_shows() {
        let key = InviteKey::from_secret(b"s3cret-key");
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(!key.is_ephemeral());
        assert!(InviteKey::random().is_ephemeral());
    }
}
