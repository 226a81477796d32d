//! The secrets clients hold for their channels: resume tokens and channel passwords.
//!
//! Neither is ever stored or logged as given. A resume token is 128 random bits, so a fast
//! digest (SHA-256) is enough to keep the stored form useless to whoever reads the registry
//! (Redis in cluster mode); a password is chosen by a person, so it is stored as a salted,
//! deliberately slow argon2 hash. Comparisons take the same time whatever matches.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a resume token (128 bits).
const TOKEN_BYTES: usize = 16;

/// A fresh resume token as given to its client, and the digest the registry keeps.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub digest: String,
}

impl IssuedToken {
    pub fn generate() -> Self {
        let bytes: [u8; TOKEN_BYTES] = rand::rng().random();
        let token = hex::encode(bytes);
        let digest = digest(&token);
        Self { token, digest }
    }
}

/// The stored form of a resume token.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a presented token's digest is the stored one, in constant time.
pub fn digests_match(presented: &str, stored: &str) -> bool {
    presented.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// A channel password's stored form (argon2id, random salt, PHC string). Slow on purpose:
/// callers run it off the event loop.
pub fn hash_password(password: &str) -> Option<String> {
    match Argon2::default().hash_password(password.as_bytes()) {
        Ok(hash) => Some(hash.to_string()),
        Err(e) => {
            tracing::error!("cannot hash a channel password: {e}");
            None
        }
    }
}

/// Whether `password` is the one `stored` was made from (argon2 compares in constant time).
pub fn verify_password(password: &str, stored: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_128_bit_and_stored_only_as_digests() {
        let a = IssuedToken::generate();
        let b = IssuedToken::generate();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 32);
        assert_ne!(a.digest, a.token);
        assert!(digests_match(&digest(&a.token), &a.digest));
        assert!(!digests_match(&digest(&b.token), &a.digest));
    }

    #[test]
    fn passwords_are_salted_and_verified() {
        let one = hash_password("correct horse").unwrap();
        let two = hash_password("correct horse").unwrap();
        assert_ne!(one, two, "a random salt each time");
        assert!(!one.contains("correct horse"));
        assert!(verify_password("correct horse", &one));
        assert!(!verify_password("wrong horse", &one));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn hashes_made_by_argon2_0_5_still_verify() {
        // Made by the argon2 0.5 crate (random salt, default parameters); in cluster mode such
        // hashes can sit in Redis while nodes are upgraded one by one.
        let stored = "$argon2id$v=19$m=19456,t=2,p=1$3mXD5iuRIeHEPyAkOUZOBQ$KtpxksL9LYdcTviJfU16WDPp3rehppDu/3r15trj2PY";
        assert!(verify_password("correct horse", stored));
        assert!(!verify_password("wrong horse", stored));
        let fresh = hash_password("correct horse").unwrap();
        assert!(
            fresh.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{fresh}"
        );
    }
}
