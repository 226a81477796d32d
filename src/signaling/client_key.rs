//! The client key: an identity a modern page keeps across its connections, so that a
//! broadcaster's ban or mute holds when the same browser comes back (EXTENSIONS.md,
//! "Moderation"). Asked for in the handshake's `auth` (`client_key`: the kept key, or `null`);
//! a connection that does not ask (every legacy page) has none and sees nothing new.

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::Value;

use crate::registry::secrets;

/// Characters of a key: 128 random bits in lowercase hex.
const KEY_LEN: usize = 32;

/// In a socket's extensions: the digest of the key it presented or was given. The registry
/// keeps only digests, so a stored document never holds a key a client could present.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub digest: String,
}

/// In a socket's extensions until it is sent: a key the server made for this connection.
#[derive(Debug, Clone)]
pub struct IssuedKey(pub String);

/// What the handshake said about a client key.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// No `client_key` property: a page that wants none.
    Nothing,
    /// A well-formed key it kept.
    Kept(String),
    /// The property, without a usable key: it wants one.
    New,
}

fn asked(auth: Option<&Value>) -> Asked {
    let Some(Value::Str(text, _)) = auth else {
        return Asked::Nothing;
    };
    let Ok(auth) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
        return Asked::Nothing;
    };
    match auth.get("client_key") {
        None => Asked::Nothing,
        Some(serde_json::Value::String(key)) if is_well_formed(key) => Asked::Kept(key.clone()),
        Some(_) => Asked::New,
    }
}

fn is_well_formed(key: &str) -> bool {
    key.len() == KEY_LEN && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads the handshake and gives the socket its key (a new one when it asked without a usable
/// one: it is sent by [`send_issued`] once the connection is up).
pub fn identify<A: Adapter>(socket: &SocketRef<A>, auth: Option<&Value>) {
    let key = match asked(auth) {
        Asked::Nothing => return,
        Asked::Kept(key) => key,
        Asked::New => {
            let key = secrets::IssuedToken::generate().token;
            socket.extensions.insert(IssuedKey(key.clone()));
            key
        }
    };
    socket.extensions.insert(ClientKey {
        digest: secrets::digest(&key),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str) -> Value {
        Value::Str(text.to_owned().into(), None)
    }

    #[test]
    fn only_the_property_asks_and_only_a_well_formed_key_is_kept() {
        let key = "0123456789abcdef0123456789abcdef";
        assert_eq!(asked(None), Asked::Nothing);
        assert_eq!(
            asked(Some(&auth(r#"{"error_codes":true}"#))),
            Asked::Nothing
        );
        assert_eq!(asked(Some(&auth("not json"))), Asked::Nothing);
        assert_eq!(
            asked(Some(&auth(&format!(r#"{{"client_key":"{key}"}}"#)))),
            Asked::Kept(key.to_owned())
        );
        for text in [
            r#"{"client_key":null}"#,
            r#"{"client_key":""}"#,
            r#"{"client_key":"0123456789ABCDEF0123456789ABCDEF"}"#,
            r#"{"client_key":"0123456789abcdef"}"#,
            r#"{"client_key":42}"#,
            r#"{"client_key":["0123456789abcdef0123456789abcdef"]}"#,
        ] {
            assert_eq!(asked(Some(&auth(text))), Asked::New, "{text}");
        }
    }
}
