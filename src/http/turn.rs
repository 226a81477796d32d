//! Time-limited TURN credentials, minted per request for `GET /ice-servers`.
//!
//! This is the scheme of coturn's `use-auth-secret` / `static-auth-secret` (the "TURN REST
//! API"): the server and the TURN server share a secret and nothing else. A credential is
//!
//! ```text
//! username   = "<unix time it expires>:<opaque random id>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! and the TURN server recomputes the HMAC from the username, refusing it once the time in it
//! has passed. So nothing is stored, no user database is kept in sync, and a credential that
//! leaks is worth something for one TTL at most. (coturn checks the expiry when an allocation
//! is made: a call that started in time keeps its relay after it.)
//!
//! The secret and the credentials are never logged, and the secret never leaves this process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt as _;
use serde::Serialize;
use serde_json::Value;
use sha1::Sha1;

use crate::config::{Config, TurnSecret};

/// Characters of the opaque id in a username: no `:`, which coturn reads as the separator
/// between the expiry and the id.
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Length of that id: 16 characters of 62, about 95 bits, so two are never the same.
const ID_LEN: usize = 16;

/// `base64(HMAC-SHA1(secret, username))`: the password coturn expects for `username`.
pub fn credential(secret: &[u8], username: &str) -> String {
    // HMAC takes a key of any length (a long one is hashed first), so this cannot fail.
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A username that expires at `expires` (unix seconds), with a fresh random id.
pub fn username(expires: u64) -> String {
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect();
    format!("{expires}:{id}")
}

/// One TURN entry of the list: an `RTCIceServer` with long-term credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Mints credentials for the configured TURN servers.
#[derive(Clone)]
pub struct Minter {
    urls: Vec<String>,
    secret: TurnSecret,
    ttl: Duration,
}

impl Minter {
    pub fn new(urls: Vec<String>, secret: TurnSecret, ttl: Duration) -> Self {
        Self { urls, secret, ttl }
    }

    /// Credentials valid from `now` for the TTL.
    pub fn mint(&self, now: SystemTime) -> TurnServer {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let username = username((now + self.ttl).as_secs());
        TurnServer {
            urls: self.urls.clone(),
            credential: credential(self.secret.expose(), &username),
            username,
        }
    }
}

/// Everything `/ice-servers` answers with: the configured servers (`--ice-servers`, what the
/// page also gets in its config JSON) and, with TURN configured, fresh credentials for it.
#[derive(Clone)]
pub struct IceServers {
    configured: Vec<Value>,
    turn: Option<Minter>,
    ttl: Duration,
}

/// The JSON of `GET /ice-servers`.
#[derive(Debug, Serialize)]
pub struct IceServersAnswer<'a> {
    /// `RTCIceServer` objects, ready for `new RTCPeerConnection({iceServers})`.
    pub ice_servers: Vec<IceServer<'a>>,
    /// Seconds the credentials stay valid; the page asks again before they run out.
    pub ttl: u64,
}

/// One entry of [`IceServersAnswer::ice_servers`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum IceServer<'a> {
    Configured(&'a Value),
    Turn(TurnServer),
}

impl IceServers {
    pub fn from_config(config: &Config) -> Self {
        let configured = config.ice_servers.0.as_array().cloned().unwrap_or_default();
        let ttl = Duration::from_secs(config.turn_ttl_secs);
        let turn = config
            .turn_secret
            .as_ref()
            .filter(|_| !config.turn_urls.is_empty())
            .map(|secret| Minter::new(config.turn_urls.clone(), secret.clone(), ttl));
        Self {
            configured,
            turn,
            ttl,
        }
    }

    /// The TURN URLs credentials are minted for (none without TURN).
    pub fn turn_urls(&self) -> &[String] {
        self.turn.as_ref().map_or(&[], |minter| &minter.urls)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The list for one request: the configured servers, then the TURN servers with
    /// credentials minted now.
    pub fn answer(&self, now: SystemTime) -> IceServersAnswer<'_> {
        let mut ice_servers: Vec<IceServer<'_>> =
            self.configured.iter().map(IceServer::Configured).collect();
        if let Some(minter) = &self.turn {
            ice_servers.push(IceServer::Turn(minter.mint(now)));
            crate::metrics::turn_credential_minted();
        }
        IceServersAnswer {
            ice_servers,
            ttl: self.ttl.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    /// Vectors computed independently of this code, e.g.
    /// `python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"north",
    /// b"1700003600:Xk3q9ZpL0aB7cD2e", hashlib.sha1).digest()).decode())'`, or
    /// `printf %s 1700003600:Xk3q9ZpL0aB7cD2e | openssl dgst -sha1 -hmac north -binary | base64`.
    #[test]
    fn turn_credential_matches_known_vectors() {
        assert_eq!(
            credential(b"north", "1700003600:Xk3q9ZpL0aB7cD2e"),
            "wXoa/gr79GHNoUBwrpf1bipAEo4="
        );
        // A secret longer than SHA-1's 64-byte block is hashed first (RFC 2104).
        assert_eq!(
            credential("k".repeat(100).as_bytes(), "86400:x"),
            "fCpDLnm0aBLta9t9FFype+SiZOg="
        );
    }

    #[test]
    fn turn_username_is_expiry_then_an_opaque_id() {
        let name = username(1_700_003_600);
        let (expires, id) = name.split_once(':').expect("expiry:id");
        assert_eq!(expires, "1700003600");
        assert_eq!(id.len(), ID_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_ne!(username(1), username(1), "each username gets its own id");
    }

    #[test]
    fn turn_credentials_expire_ttl_after_now() {
        let minter = Minter::new(
            vec!["turn:turn.example:3478".into()],
            TurnSecret::new("north"),
            Duration::from_secs(600),
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minted = minter.mint(now);
        assert_eq!(minted.urls, ["turn:turn.example:3478"]);
        let (expires, _) = minted.username.split_once(':').expect("expiry:id");
        assert_eq!(expires, "1700000600", "now + ttl");
        assert_eq!(minted.credential, credential(b"north", &minted.username));
        assert_ne!(
            minter.mint(now).username,
            minted.username,
            "minted per call"
        );
    }

    fn config(args: &[&str]) -> Config {
        let mut all = vec![
            "broadcast-server",
            "--ice-servers",
            r#"[{"urls":"stun:a:1"}]"#,
        ];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("valid config")
    }

    #[test]
    fn turn_answer_lists_configured_servers_then_turn() {
        let now = SystemTime::now();
        let without = IceServers::from_config(&config(&[]));
        let json = serde_json::to_value(without.answer(now)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"ice_servers": [{"urls": "stun:a:1"}], "ttl": 3600})
        );
        assert!(without.turn_urls().is_empty());

        let with = IceServers::from_config(&config(&[
            "--turn-urls",
            "turn:t:3478?transport=udp,turns:t:5349",
            "--turn-secret",
            "north",
            "--turn-ttl-secs",
            "60",
        ]));
        let json = serde_json::to_value(with.answer(now)).expect("serializes");
        assert_eq!(json["ttl"], 60);
        let servers = json["ice_servers"].as_array().expect("a list");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0], serde_json::json!({"urls": "stun:a:1"}));
        assert_eq!(
            servers[1]["urls"],
            serde_json::json!(["turn:t:3478?transport=udp", "turns:t:5349"])
        );
        let username = servers[1]["username"].as_str().expect("username");
        assert_eq!(
            servers[1]["credential"].as_str(),
            Some(credential(b"north", username).as_str())
        );
    }
}
