//! The two names the protocol deals in: a client's public id and a channel id.
//!
//! Both are cheap to clone (`Arc<str>`) and borrow as `&str`, so maps keyed by them are looked
//! up with the raw strings clients send (`target`, `channel_id`) without allocating.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Length of a public id: as long as a Socket.IO id, so clients that size or slice ids see no
/// difference.
const PUBLIC_ID_LEN: usize = 16;
/// URL-safe base64 alphabet, as Socket.IO ids use.
const PUBLIC_ID_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Length of generated channel ids, as the earlier server made them.
const GENERATED_ID_LEN: usize = 8;
const GENERATED_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A client's public id: what `client_id` announces and other clients use as `target`,
/// `broadcaster_id`, `sender`, `peer_id`.
///
/// It is drawn at random for each connection and is deliberately **not** the Engine.IO session
/// id: every public id is published to other clients, and the session id is the credential that
/// lets a request post into, poll or upgrade a session. Keeping the two apart is what stops one
/// client from hijacking another's transport (PROTOCOL.md, "never transport credentials").
/// Deserialized only from the server's own shared state (cluster mode), never from clients.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SocketId(Arc<str>);

impl SocketId {
    /// A fresh random id (96 bits: 16 characters of a 64-character alphabet, from the thread's
    /// CSPRNG).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let id: String = (0..PUBLIC_ID_LEN)
            .map(|_| PUBLIC_ID_ALPHABET[rng.random_range(0..PUBLIC_ID_ALPHABET.len())] as char)
            .collect();
        Self(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id read back from the server's own shared state (cluster mode), never from a client.
    pub fn from_stored(id: &str) -> Self {
        Self(Arc::from(id))
    }

    /// Whether `id` has the shape of an id this server generates (a client may name anything;
    /// such a name can be no socket's, and need not be looked up anywhere).
    pub fn has_public_shape(id: &str) -> bool {
        id.len() == PUBLIC_ID_LEN && id.bytes().all(|c| PUBLIC_ID_ALPHABET.contains(&c))
    }

    /// An id a client named (a moderation event's `viewer_id`, a report's `peer_id`, validated
    /// in its payload): only ever compared with or looked up among the channel's members, never
    /// trusted as one.
    pub fn named_by_client(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

/// Tests name sockets by hand (`"viewer-1"`); the server only ever generates them.
#[cfg(test)]
impl From<&str> for SocketId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

/// A channel id that passed validation (`[A-Za-z0-9_-]{1,20}`) or that the server generated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(Arc<str>);

impl ChannelId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Payload validation has already checked the pattern; this only takes ownership.
impl From<&str> for ChannelId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl From<String> for ChannelId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

/// A channel id in the earlier server's format (8 lowercase letters and digits).
pub(crate) fn random_channel_id() -> ChannelId {
    let mut rng = rand::rng();
    let id: String = (0..GENERATED_ID_LEN)
        .map(|_| GENERATED_ID_ALPHABET[rng.random_range(0..GENERATED_ID_ALPHABET.len())] as char)
        .collect();
    ChannelId::from(id)
}

macro_rules! str_like {
    ($t:ty) => {
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}
str_like!(SocketId);
str_like!(ChannelId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_url_safe_distinct_and_socket_io_sized() {
        let a = SocketId::generate();
        let b = SocketId::generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), PUBLIC_ID_LEN);
        assert!(a.bytes().all(|c| PUBLIC_ID_ALPHABET.contains(&c)));
    }
}
