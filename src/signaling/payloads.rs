//! Inbound payloads, validated, one struct per event (the outbound ones are in `outbound`).
//!
//! Inbound strings are trimmed while deserializing, so every length and pattern rule applies to
//! the trimmed value, as PROTOCOL.md requires. Decoding goes JSON text → `serde` (type errors,
//! named by field through `serde_path_to_error`) → `validator` (lengths and patterns).

use std::sync::LazyLock;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

pub const CHANNEL_ID_MAX_CHARS: usize = 20;
pub const ALIAS_MIN_CHARS: usize = 5;
pub const ALIAS_MAX_CHARS: usize = 20;
pub const MESSAGE_MAX_CHARS: usize = 200;
/// Real SDPs are 2–20 KiB; anything past this is not a session description.
pub const SDP_MAX_BYTES: usize = 64 * 1024;
/// Real candidates are a few hundred bytes.
pub const CANDIDATE_MAX_BYTES: usize = 4 * 1024;

/// Which prefix an event's validation errors carry; legacy pages route errors by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPrefix {
    Data,
    Alias,
    Message,
}

impl ErrorPrefix {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorPrefix::Data => "Invalid data",
            ErrorPrefix::Alias => "Invalid alias",
            ErrorPrefix::Message => "Invalid message",
        }
    }
}

/// A payload that failed decoding or validation; `Display` is the full user-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{prefix}: {reason}", prefix = .prefix.as_str())]
pub struct InvalidPayload {
    pub prefix: ErrorPrefix,
    pub reason: String,
}

/// Decodes and validates one event payload. A missing or `null` payload counts as `{}`.
pub fn decode<T: DeserializeOwned + Validate>(
    raw: Option<&RawValue>,
    prefix: ErrorPrefix,
) -> Result<T, InvalidPayload> {
    let invalid = |reason: String| InvalidPayload { prefix, reason };
    let text = object_text(raw).map_err(|e| invalid(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let reason = without_position(&e.into_inner());
        if path == "." {
            invalid(reason)
        } else {
            invalid(format!("{path}: {reason}"))
        }
    })?;
    value.validate().map_err(|e| invalid(first_reason(&e)))?;
    Ok(value)
}

/// serde_json's message without its " at line 1 column 17" suffix: the client sent one small
/// object, and the field path already says where the problem is.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => message,
    }
}

/// The payload's JSON text if it is an object (or `{}` when absent/null).
fn object_text(raw: Option<&RawValue>) -> Result<&str, &'static str> {
    let text = raw.map(|r| r.get().trim()).unwrap_or("null");
    match text.as_bytes().first() {
        Some(b'{') => Ok(text),
        _ if text == "null" => Ok("{}"),
        _ => Err("payload must be a JSON object"),
    }
}

/// One deterministic sentence out of validator's map of errors (fields in name order).
fn first_reason(errors: &ValidationErrors) -> String {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        if let ValidationErrorsKind::Field(list) = kind
            && let Some(err) = list.first()
        {
            return match &err.message {
                Some(message) => format!("{field} {message}"),
                None => format!("{field} is invalid"),
            };
        }
    }
    "payload is invalid".to_owned()
}

fn trimmed<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let value: Option<String> = Option::deserialize(de)?;
    Ok(value.map(|s| {
        let t = s.trim();
        if t.len() == s.len() { s } else { t.to_owned() }
    }))
}

/// `None` for an absent, null or empty channel id: the joins treat all three alike.
fn optional_channel_id<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(trimmed(de)?.filter(|s| !s.is_empty()))
}

fn failure(code: &'static str, message: String) -> ValidationError {
    ValidationError::new(code).with_message(message.into())
}

fn validate_channel_id(id: &str) -> Result<(), ValidationError> {
    let chars = id.chars().count();
    if chars == 0 {
        return Err(failure("required", "is required".into()));
    }
    if chars > CHANNEL_ID_MAX_CHARS {
        return Err(failure(
            "length",
            format!("must be at most {CHANNEL_ID_MAX_CHARS} characters (got {chars})"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(failure(
            "pattern",
            "may only contain letters, digits, '_' and '-'".into(),
        ));
    }
    Ok(())
}

fn validate_alias(alias: &str) -> Result<(), ValidationError> {
    let chars = alias.chars().count();
    if !(ALIAS_MIN_CHARS..=ALIAS_MAX_CHARS).contains(&chars) {
        return Err(failure(
            "length",
            format!("must be {ALIAS_MIN_CHARS} to {ALIAS_MAX_CHARS} characters (got {chars})"),
        ));
    }
    if !alias
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || c == '_' || c == '-')
    {
        return Err(failure(
            "pattern",
            "may only contain letters, digits, spaces, '_' and '-'".into(),
        ));
    }
    Ok(())
}

/// Markup that must never reach other people's screens, as the earlier server refused it. Any
/// `<script` is refused, closed or not and across lines: browsers accept any whitespace,
/// newlines included, before its attributes, and an unclosed one can borrow the `>` of the
/// markup a page puts after the message (found by fuzzing).
static FORBIDDEN_MARKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<script|javascript:|on(?:error|click|load)\s*=")
        .expect("static pattern compiles")
});

fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}')
}

fn validate_message(message: &str) -> Result<(), ValidationError> {
    let chars = message.chars().count();
    if !(1..=MESSAGE_MAX_CHARS).contains(&chars) {
        return Err(failure(
            "length",
            format!("must be 1 to {MESSAGE_MAX_CHARS} characters (got {chars})"),
        ));
    }
    if message.chars().any(is_forbidden_control) {
        return Err(failure(
            "control",
            "must not contain control characters".into(),
        ));
    }
    if FORBIDDEN_MARKUP.is_match(message) {
        return Err(failure(
            "markup",
            "must not contain scripts or inline event handlers".into(),
        ));
    }
    Ok(())
}

// ---- inbound ----

#[derive(Debug, Deserialize, Validate)]
pub struct JoinAsBroadcaster {
    #[serde(default, deserialize_with = "optional_channel_id")]
    #[validate(custom(function = "validate_channel_id"))]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub force: Option<bool>,
    /// `false`: this channel runs without the relay tree.
    #[serde(default)]
    pub relay: Option<bool>,
    /// `true`: hold the channel for a grace period when this connection drops.
    #[serde(default)]
    pub resume: Option<bool>,
    /// The token of an earlier `broadcaster_ready`: resume, or (with `force`) take over.
    #[serde(default)]
    #[validate(custom(function = "validate_token"))]
    pub resume_token: Option<Secret>,
    /// Makes a new channel private: unlisted, and viewers must give it.
    #[serde(default)]
    #[validate(custom(function = "validate_password"))]
    pub password: Option<Secret>,
}

/// A client's secret (resume token, password): never shown by `Debug`, so never logged.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

/// Validation errors may carry the value; a secret's stands in as a placeholder.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("…")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

const SECRET_MAX_CHARS: usize = 128;

fn validate_token(token: &Secret) -> Result<(), ValidationError> {
    let ok = (1..=SECRET_MAX_CHARS).contains(&token.0.len())
        && token
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(failure(
            "pattern",
            "resume_token must be the token a broadcaster_ready gave".into(),
        ))
    }
}

fn validate_password(password: &Secret) -> Result<(), ValidationError> {
    let chars = password.0.chars().count();
    if !(1..=SECRET_MAX_CHARS).contains(&chars) {
        return Err(failure(
            "length",
            format!("password must be 1 to {SECRET_MAX_CHARS} characters (got {chars})"),
        ));
    }
    if password.0.chars().any(char::is_control) {
        return Err(failure(
            "control",
            "password must not contain control characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Validate)]
pub struct JoinAsViewer {
    #[serde(default, deserialize_with = "optional_channel_id")]
    #[validate(custom(function = "validate_channel_id"))]
    pub channel_id: Option<String>,
    /// `true`: this page takes part in the relay tree; missing or `false`: a legacy leaf.
    #[serde(default)]
    pub relay: Option<bool>,
    /// A private channel's password.
    #[serde(default)]
    #[validate(custom(function = "validate_password"))]
    pub password: Option<Secret>,
    /// `true`: if the channel has no broadcaster yet, wait for one (the waiting room).
    #[serde(default)]
    pub wait: Option<bool>,
    /// `true`: give this viewer a token to come back with (its alias) after a dropped
    /// connection.
    #[serde(default)]
    pub resume: Option<bool>,
    /// The token of an earlier `viewer_token`.
    #[serde(default)]
    #[validate(custom(function = "validate_token"))]
    pub resume_token: Option<Secret>,
    /// `true`: this page shows earlier messages; send it `chat_history` after the join.
    #[serde(default)]
    pub history: Option<bool>,
    /// A private channel's invitation (`invite_created`), instead of its password.
    #[serde(default)]
    #[validate(custom(function = "validate_invite"))]
    pub invite: Option<Secret>,
}

fn validate_invite(invite: &Secret) -> Result<(), ValidationError> {
    let ok = (1..=crate::invites::MAX_TOKEN_LEN).contains(&invite.0.len())
        && invite
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(failure(
            "pattern",
            "must be the invitation an invite_created gave".into(),
        ))
    }
}

/// `create_invite`: the broadcaster of a private channel asks for an invitation.
#[derive(Debug, Deserialize, Validate)]
pub struct CreateInvite {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    /// How long the invitation admits viewers; a day when missing.
    #[serde(default)]
    #[validate(range(
        min = crate::invites::MIN_TTL_SECS,
        max = crate::invites::MAX_TTL_SECS,
        message = "must be 60 to 2592000 seconds (30 days)"
    ))]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Validate)]
pub struct SetAlias {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(required(message = "is required"), custom(function = "validate_alias"))]
    pub alias: Option<String>,
}

#[derive(Debug, Deserialize, Validate)]
pub struct SendMessage {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_message")
    )]
    pub message: Option<String>,
}

/// A payload that names one channel: `stop_broadcast`, `relay_ready`, and the moderation
/// events that act on the whole channel.
#[derive(Debug, Deserialize, Validate)]
pub struct ChannelRequest {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
}

/// `upstream_failed` and `upstream_stalled`: a tree viewer reports its feeder, which it may
/// name (`peer_id`, the feeder of the `upstream` it acts on) so that a report crossing a move
/// on the wire is not taken for one about the new feeder.
#[derive(Debug, Deserialize, Validate)]
pub struct FeederReport {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(custom(function = "validate_sent_id"))]
    pub peer_id: Option<String>,
}

/// Longest socket id or message id a moderation event may name: ids are shorter, and a longer
/// one names nobody.
const MODERATED_ID_MAX_CHARS: usize = 64;

/// A viewer's public id or a message id: short, and of the characters ids are made of.
fn validate_sent_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(failure("required", "is required".into()));
    }
    if id.len() > MODERATED_ID_MAX_CHARS
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(failure(
            "pattern",
            format!(
                "must be an id the server sent (letters, digits, '_' and '-', at most {MODERATED_ID_MAX_CHARS})"
            ),
        ));
    }
    Ok(())
}

/// `remove_viewer`: the broadcaster removes a viewer, banning it with `ban: true`.
#[derive(Debug, Deserialize, Validate)]
pub struct RemoveViewer {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_sent_id")
    )]
    pub viewer_id: Option<String>,
    #[serde(default)]
    pub ban: Option<bool>,
}

/// `mute_viewer`: the broadcaster mutes (or unmutes) a viewer's chat.
#[derive(Debug, Deserialize, Validate)]
pub struct MuteViewer {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_sent_id")
    )]
    pub viewer_id: Option<String>,
    #[serde(default)]
    #[validate(required(message = "is required"))]
    pub muted: Option<bool>,
}

/// `remove_message`: the broadcaster removes a chat message.
#[derive(Debug, Deserialize, Validate)]
pub struct RemoveMessage {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_sent_id")
    )]
    pub message_id: Option<String>,
}

/// `chat_settings`: slow mode and chat off; a field left out keeps its value.
#[derive(Debug, Deserialize, Validate)]
pub struct ChatSettingsRequest {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default)]
    #[validate(range(
        max = crate::registry::moderation::MAX_SLOW_MODE,
        message = "must be 0 to 3600 seconds"
    ))]
    pub slow_mode: Option<u32>,
    #[serde(default)]
    pub chat_enabled: Option<bool>,
}

/// The largest capacity a page may report: the largest F a server can be configured with
/// (`--relay-fanout`). A page does not know its server's F; the server uses at most its own.
pub const RELAY_CAPACITY_MAX: u64 = 100;

/// `relay_capacity`: how many viewers a tree viewer can feed from now on.
#[derive(Debug, Deserialize, Validate)]
pub struct RelayCapacity {
    #[serde(default, deserialize_with = "trimmed")]
    #[validate(
        required(message = "is required"),
        custom(function = "validate_channel_id")
    )]
    pub channel_id: Option<String>,
    #[serde(default)]
    #[validate(
        required(message = "is required"),
        range(max = RELAY_CAPACITY_MAX, message = "must be an integer from 0 to 100")
    )]
    pub capacity: Option<u64>,
}

pub use crate::registry::relay::RelayKind;

/// The field of a relayed event that carries its body.
fn relay_field(kind: RelayKind) -> &'static str {
    match kind {
        RelayKind::Offer | RelayKind::Answer => "sdp",
        RelayKind::IceCandidate => "candidate",
    }
}

/// The largest body a relayed event may carry.
fn relay_max_bytes(kind: RelayKind) -> usize {
    match kind {
        RelayKind::Offer | RelayKind::Answer => SDP_MAX_BYTES,
        RelayKind::IceCandidate => CANDIDATE_MAX_BYTES,
    }
}

/// `{target, sdp}` or `{target, candidate}`; the body stays raw JSON so it is relayed exactly
/// as received without being parsed into a tree and serialized again.
#[derive(Debug, Deserialize)]
struct RelayWire<'a> {
    #[serde(default)]
    target: Option<serde_json::Value>,
    #[serde(default, borrow)]
    sdp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    candidate: Option<&'a RawValue>,
}

/// A relay request that passed shape and size checks (authorization is the registry's job).
#[derive(Debug)]
pub struct Relay<'a> {
    pub target: String,
    pub body: &'a RawValue,
}

/// Decodes a relay payload, refusing anything that is not `{target: string, <field>: object}`
/// within the size bound.
pub fn decode_relay(raw: Option<&RawValue>, kind: RelayKind) -> Result<Relay<'_>, String> {
    let text = object_text(raw).map_err(str::to_owned)?;
    let wire: RelayWire<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let target = match wire.target {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => t,
        Some(serde_json::Value::String(_)) | None | Some(serde_json::Value::Null) => {
            return Err("target is required".to_owned());
        }
        Some(_) => return Err("target must be a string".to_owned()),
    };
    let field = relay_field(kind);
    let body = match kind {
        RelayKind::Offer | RelayKind::Answer => wire.sdp,
        RelayKind::IceCandidate => wire.candidate,
    }
    .filter(|b| b.get() != "null")
    .ok_or_else(|| format!("{field} is required"))?;
    if !body.get().starts_with('{') {
        return Err(format!("{field} must be an object"));
    }
    let size = body.get().len();
    if size > relay_max_bytes(kind) {
        return Err(format!(
            "{field} is too large ({size} bytes; at most {} bytes)",
            relay_max_bytes(kind)
        ));
    }
    Ok(Relay { target, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn decode_str<T: DeserializeOwned + Validate>(
        json: Option<&str>,
        prefix: ErrorPrefix,
    ) -> Result<T, String> {
        let boxed = json.map(raw);
        decode::<T>(boxed.as_deref(), prefix).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_null_and_empty_payloads_are_empty_objects_for_joins() {
        for json in [
            None,
            Some("null"),
            Some("{}"),
            Some(r#"{"channel_id": null}"#),
        ] {
            let p: JoinAsViewer = decode_str(json, ErrorPrefix::Data).unwrap();
            assert_eq!(p.channel_id, None);
        }
        let p: JoinAsBroadcaster = decode_str(
            Some(r#"{"channel_id":"  ","force":true}"#),
            ErrorPrefix::Data,
        )
        .unwrap();
        assert_eq!(p.channel_id, None);
        assert_eq!(p.force, Some(true));
    }

    #[test]
    fn non_objects_are_invalid() {
        for json in [r#""room""#, "5", "[1,2]", "true"] {
            let err = decode_str::<JoinAsViewer>(Some(json), ErrorPrefix::Data).unwrap_err();
            assert_eq!(err, "Invalid data: payload must be a JSON object");
        }
    }

    #[test]
    fn channel_id_rules() {
        let ok: JoinAsViewer =
            decode_str(Some(r#"{"channel_id":" abc_DEF-123 "}"#), ErrorPrefix::Data).unwrap();
        assert_eq!(ok.channel_id.as_deref(), Some("abc_DEF-123"));
        let twenty = "a".repeat(20);
        assert!(
            decode_str::<JoinAsViewer>(
                Some(&format!(r#"{{"channel_id":"{twenty}"}}"#)),
                ErrorPrefix::Data
            )
            .is_ok()
        );
        let err = decode_str::<JoinAsViewer>(
            Some(&format!(r#"{{"channel_id":"{twenty}a"}}"#)),
            ErrorPrefix::Data,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Invalid data: channel_id must be at most 20 characters (got 21)"
        );
        let err =
            decode_str::<JoinAsBroadcaster>(Some(r#"{"channel_id":"a b"}"#), ErrorPrefix::Data)
                .unwrap_err();
        assert!(
            err.starts_with("Invalid data: channel_id may only contain"),
            "{err}"
        );
        let err = decode_str::<JoinAsViewer>(Some(r#"{"channel_id":"é"}"#), ErrorPrefix::Data)
            .unwrap_err();
        assert!(err.starts_with("Invalid data: channel_id"), "{err}");
        let err =
            decode_str::<JoinAsViewer>(Some(r#"{"channel_id":5}"#), ErrorPrefix::Data).unwrap_err();
        assert_eq!(
            err,
            "Invalid data: channel_id: invalid type: integer `5`, expected a string"
        );
        let err = decode_str::<JoinAsBroadcaster>(Some(r#"{"force":"yes"}"#), ErrorPrefix::Data)
            .unwrap_err();
        assert_eq!(
            err,
            "Invalid data: force: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn required_channel_id_for_stop_alias_and_chat() {
        for json in [None, Some("{}"), Some(r#"{"channel_id":""}"#)] {
            let err = decode_str::<ChannelRequest>(json, ErrorPrefix::Data).unwrap_err();
            assert_eq!(err, "Invalid data: channel_id is required");
        }
        let err =
            decode_str::<SetAlias>(Some(r#"{"alias":"Alice"}"#), ErrorPrefix::Alias).unwrap_err();
        assert_eq!(err, "Invalid alias: channel_id is required");
        let err = decode_str::<SendMessage>(Some(r#"{"message":"hi"}"#), ErrorPrefix::Message)
            .unwrap_err();
        assert_eq!(err, "Invalid message: channel_id is required");
    }

    #[test]
    fn alias_rules_apply_to_trimmed_value() {
        let ok: SetAlias = decode_str(
            Some(r#"{"channel_id":"c","alias":"  Bob Smith  "}"#),
            ErrorPrefix::Alias,
        )
        .unwrap();
        assert_eq!(ok.alias.as_deref(), Some("Bob Smith"));
        let err = decode_str::<SetAlias>(
            Some(r#"{"channel_id":"c","alias":"  Bob  "}"#),
            ErrorPrefix::Alias,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Invalid alias: alias must be 5 to 20 characters (got 3)"
        );
        let err = decode_str::<SetAlias>(
            Some(&format!(
                r#"{{"channel_id":"c","alias":"{}"}}"#,
                "x".repeat(21)
            )),
            ErrorPrefix::Alias,
        )
        .unwrap_err();
        assert!(err.contains("(got 21)"), "{err}");
        let err = decode_str::<SetAlias>(
            Some(r#"{"channel_id":"c","alias":"Bob<b>x"}"#),
            ErrorPrefix::Alias,
        )
        .unwrap_err();
        assert!(
            err.starts_with("Invalid alias: alias may only contain"),
            "{err}"
        );
        let err =
            decode_str::<SetAlias>(Some(r#"{"channel_id":"c"}"#), ErrorPrefix::Alias).unwrap_err();
        assert_eq!(err, "Invalid alias: alias is required");
    }

    #[test]
    fn message_rules() {
        let ok = |m: &str| {
            decode_str::<SendMessage>(
                Some(&serde_json::json!({"channel_id": "c", "message": m}).to_string()),
                ErrorPrefix::Message,
            )
        };
        assert_eq!(ok("  hi  ").unwrap().message.as_deref(), Some("hi"));
        assert!(ok("line\nbreak\tand\rcr").is_ok());
        assert!(
            ok(&"😀".repeat(200)).is_ok(),
            "200 emoji are 200 characters"
        );
        assert_eq!(
            ok(&"😀".repeat(201)).unwrap_err(),
            "Invalid message: message must be 1 to 200 characters (got 201)"
        );
        assert_eq!(
            ok("   ").unwrap_err(),
            "Invalid message: message must be 1 to 200 characters (got 0)"
        );
        for bad in [
            "a\u{0}b", "a\u{8}b", "a\u{b}x", "x\u{c}y", "x\u{1f}y", "x\u{7f}", "x\u{e}y",
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains("control characters"), "{bad:?}: {err}");
        }
        for bad in [
            "<script>alert(1)</script>",
            "<SCRIPT src=x>",
            "go to JavaScript:alert(1)",
            "<img onerror=x>",
            "<a ONCLICK  = y>",
            "<body onload\t=z>",
            "<script\n>alert(1)</script>",
            "<script\nsrc=//evil.example/x.js>",
            "<script\r\n\tsrc=x\n>",
            "<ScRiPt\u{a0}src=x>",
            "an unclosed <script src=//evil.example/x.js",
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains("scripts"), "{bad:?}: {err}");
        }
        assert!(ok("I like scripts and javascript").is_ok());
        assert!(ok("onload is a word").is_ok());
        let err = decode_str::<SendMessage>(
            Some(r#"{"channel_id":"c","message":42}"#),
            ErrorPrefix::Message,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Invalid message: message: invalid type: integer `42`, expected a string"
        );
    }

    #[test]
    fn relay_capacity_is_an_integer_from_0_to_100() {
        let ok: RelayCapacity = decode_str(
            Some(r#"{"channel_id":"c","capacity":0}"#),
            ErrorPrefix::Data,
        )
        .unwrap();
        assert_eq!(ok.capacity, Some(0));
        let ok: RelayCapacity = decode_str(
            Some(r#"{"channel_id":"c","capacity":100}"#),
            ErrorPrefix::Data,
        )
        .unwrap();
        assert_eq!(ok.capacity, Some(RELAY_CAPACITY_MAX));
        for (json, message) in [
            (
                r#"{"channel_id":"c"}"#,
                "Invalid data: capacity is required",
            ),
            (
                r#"{"channel_id":"c","capacity":101}"#,
                "Invalid data: capacity must be an integer from 0 to 100",
            ),
            (
                r#"{"channel_id":"c","capacity":-1}"#,
                "Invalid data: capacity: invalid value: integer `-1`, expected u64",
            ),
            (
                r#"{"channel_id":"c","capacity":1.5}"#,
                "Invalid data: capacity: invalid type: floating point `1.5`, expected u64",
            ),
            (
                r#"{"channel_id":"c","capacity":"2"}"#,
                "Invalid data: capacity: invalid type: string \"2\", expected u64",
            ),
            (r#"{"capacity":1}"#, "Invalid data: channel_id is required"),
        ] {
            let err = decode_str::<RelayCapacity>(Some(json), ErrorPrefix::Data).unwrap_err();
            assert_eq!(err, message, "{json}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let ok: ChannelRequest = decode_str(
            Some(r#"{"channel_id":"c","extra":[1,{"x":2}]}"#),
            ErrorPrefix::Data,
        )
        .unwrap();
        assert_eq!(ok.channel_id.as_deref(), Some("c"));
    }

    #[test]
    fn relay_shapes() {
        let offer = raw(r#"{"target":"abc","sdp":{"type":"offer","sdp":"v=0"},"x":1}"#);
        let relay = decode_relay(Some(&offer), RelayKind::Offer).unwrap();
        assert_eq!(relay.target, "abc");
        assert_eq!(relay.body.get(), r#"{"type":"offer","sdp":"v=0"}"#);

        let cases = [
            (r#"{"sdp":{}}"#, RelayKind::Offer, "target is required"),
            (
                r#"{"target":5,"sdp":{}}"#,
                RelayKind::Offer,
                "target must be a string",
            ),
            (r#"{"target":"a"}"#, RelayKind::Answer, "sdp is required"),
            (
                r#"{"target":"a","sdp":null}"#,
                RelayKind::Answer,
                "sdp is required",
            ),
            (
                r#"{"target":"a","sdp":"v=0"}"#,
                RelayKind::Answer,
                "sdp must be an object",
            ),
            (
                r#"{"target":"a","candidate":null}"#,
                RelayKind::IceCandidate,
                "candidate is required",
            ),
            (
                r#"{"target":"a","candidate":[1]}"#,
                RelayKind::IceCandidate,
                "candidate must be an object",
            ),
            ("[1]", RelayKind::Offer, "payload must be a JSON object"),
        ];
        for (json, kind, expected) in cases {
            let r = raw(json);
            assert_eq!(
                decode_relay(Some(&r), kind).unwrap_err(),
                expected,
                "{json}"
            );
        }
        assert_eq!(
            decode_relay(None, RelayKind::Offer).unwrap_err(),
            "target is required"
        );

        let big = format!(
            r#"{{"target":"a","candidate":{{"candidate":"{}"}}}}"#,
            "x".repeat(CANDIDATE_MAX_BYTES)
        );
        let r = raw(&big);
        let err = decode_relay(Some(&r), RelayKind::IceCandidate).unwrap_err();
        assert!(err.starts_with("candidate is too large"), "{err}");
        let sdp = format!(
            r#"{{"target":"a","sdp":{{"sdp":"{}"}}}}"#,
            "x".repeat(SDP_MAX_BYTES)
        );
        let r = raw(&sdp);
        assert!(decode_relay(Some(&r), RelayKind::Offer).is_err());
    }
}
