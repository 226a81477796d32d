//! Inbound packets to typed requests: the whole decoding and validation of every event, with no
//! socket in sight, so it is unit-tested and fuzzed on its own (`fuzz/`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::payloads::{
    self, ChannelRequest, ChatSettingsRequest, CreateInvite, ErrorPrefix, FeederReport,
    InvalidPayload, JoinAsBroadcaster, JoinAsViewer, MuteViewer, Relay, RelayCapacity, RelayKind,
    RemoveMessage, RemoveViewer, SendMessage, SetAlias,
};

/// One event of PROTOCOL.md, decoded and validated.
#[derive(Debug)]
pub enum Request<'a> {
    JoinAsBroadcaster(JoinAsBroadcaster),
    JoinAsViewer(JoinAsViewer),
    Relay(RelayKind, Relay<'a>),
    SetAlias(SetAlias),
    SendMessage(SendMessage),
    /// The broadcaster's own chat message: `send_message`'s payload and rules.
    BroadcasterMessage(SendMessage),
    StopBroadcast(ChannelRequest),
    CreateInvite(CreateInvite),
    RotateInvites(ChannelRequest),
    /// Moderation by the channel's broadcaster (EXTENSIONS.md, "Moderation").
    ListViewers(ChannelRequest),
    RemoveViewer(RemoveViewer),
    UnbanAll(ChannelRequest),
    MuteViewer(MuteViewer),
    RemoveMessage(RemoveMessage),
    ChatSettings(ChatSettingsRequest),
    RelayReady(ChannelRequest),
    UpstreamFailed(FeederReport),
    UpstreamStalled(FeederReport),
    RelayCapacity(RelayCapacity),
}

/// Why an event was refused, and so which event answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `error {message}` with the event's prefix.
    Invalid(InvalidPayload),
    /// `relay_error {event, message}`: relays never get `error` (legacy pages treat `error` as
    /// "become a viewer").
    Relay(RelayKind, String),
}

/// Decodes the payload of `event`; `None` for an event the protocol does not know (ignored).
pub fn decode<'a>(
    event: &str,
    payload: Option<&'a RawValue>,
) -> Option<Result<Request<'a>, Refusal>> {
    use ErrorPrefix::{Alias, Data, Message};
    let invalid = Refusal::Invalid;
    let relay = |kind: RelayKind| {
        Some(
            payloads::decode_relay(payload, kind)
                .map(|r| Request::Relay(kind, r))
                .map_err(|message| Refusal::Relay(kind, message)),
        )
    };
    Some(match event {
        "join_as_broadcaster" => payloads::decode(payload, Data)
            .map(Request::JoinAsBroadcaster)
            .map_err(invalid),
        "join_as_viewer" => payloads::decode(payload, Data)
            .map(Request::JoinAsViewer)
            .map_err(invalid),
        "offer" => return relay(RelayKind::Offer),
        "answer" => return relay(RelayKind::Answer),
        "ice_candidate" => return relay(RelayKind::IceCandidate),
        "set_alias" => payloads::decode(payload, Alias)
            .map(Request::SetAlias)
            .map_err(invalid),
        "send_message" => payloads::decode(payload, Message)
            .map(Request::SendMessage)
            .map_err(invalid),
        "broadcaster_message" => payloads::decode(payload, Message)
            .map(Request::BroadcasterMessage)
            .map_err(invalid),
        "stop_broadcast" => payloads::decode(payload, Data)
            .map(Request::StopBroadcast)
            .map_err(invalid),
        "create_invite" => payloads::decode(payload, Data)
            .map(Request::CreateInvite)
            .map_err(invalid),
        "rotate_invites" => payloads::decode(payload, Data)
            .map(Request::RotateInvites)
            .map_err(invalid),
        "list_viewers" => payloads::decode(payload, Data)
            .map(Request::ListViewers)
            .map_err(invalid),
        "remove_viewer" => payloads::decode(payload, Data)
            .map(Request::RemoveViewer)
            .map_err(invalid),
        "unban_all" => payloads::decode(payload, Data)
            .map(Request::UnbanAll)
            .map_err(invalid),
        "mute_viewer" => payloads::decode(payload, Data)
            .map(Request::MuteViewer)
            .map_err(invalid),
        "remove_message" => payloads::decode(payload, Data)
            .map(Request::RemoveMessage)
            .map_err(invalid),
        "chat_settings" => payloads::decode(payload, Data)
            .map(Request::ChatSettings)
            .map_err(invalid),
        "relay_ready" => payloads::decode(payload, Data)
            .map(Request::RelayReady)
            .map_err(invalid),
        "upstream_failed" => payloads::decode(payload, Data)
            .map(Request::UpstreamFailed)
            .map_err(invalid),
        "upstream_stalled" => payloads::decode(payload, Data)
            .map(Request::UpstreamStalled)
            .map_err(invalid),
        "relay_capacity" => payloads::decode(payload, Data)
            .map(Request::RelayCapacity)
            .map_err(invalid),
        _ => return None,
    })
}

/// Splits an event packet `["name", payload, ...]` into its name and first argument, keeping the
/// argument as raw JSON. Extra arguments are ignored.
pub fn parse_packet(text: &str) -> serde_json::Result<(Cow<'_, str>, Option<&RawValue>)> {
    struct EventVisitor;
    impl<'de> Visitor<'de> for EventVisitor {
        type Value = (Cow<'de, str>, Option<&'de RawValue>);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an event array [name, payload?]")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let name: Cow<'de, str> = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
            let payload: Option<&'de RawValue> = seq.next_element()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok((name, payload))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = (&mut de).deserialize_seq(EventVisitor)?;
    de.end()?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_first_argument_raw() {
        let (name, payload) = parse_packet(r#"["offer",{"target":"x","sdp":{"a":1}},"extra"]"#)
            .expect("valid packet");
        assert_eq!(name, "offer");
        assert_eq!(
            payload.map(|p| p.get()),
            Some(r#"{"target":"x","sdp":{"a":1}}"#)
        );
        let (name, payload) = parse_packet(r#"["join_as_viewer"]"#).expect("valid packet");
        assert_eq!(name, "join_as_viewer");
        assert!(payload.is_none());
        let (_, payload) = parse_packet(r#"["join_as_viewer",null]"#).expect("valid packet");
        assert_eq!(payload.map(|p| p.get()), Some("null"));
        assert!(parse_packet("[]").is_err());
        assert!(parse_packet(r#"{"a":1}"#).is_err());
    }

    fn decoded(packet: &str) -> Option<Result<String, Refusal>> {
        let (name, payload) = parse_packet(packet).expect("valid packet");
        decode(&name, payload).map(|r| r.map(|req| format!("{req:?}")))
    }

    #[test]
    fn every_event_decodes_to_its_request_or_the_right_refusal() {
        assert!(
            decoded(r#"["join_as_viewer",{"channel_id":"c","relay":true}]"#)
                .unwrap()
                .unwrap()
                .starts_with("JoinAsViewer")
        );
        assert!(
            decoded(r#"["relay_ready",{"channel_id":"c"}]"#)
                .unwrap()
                .unwrap()
                .starts_with("RelayReady")
        );
        assert_eq!(decoded(r#"["nope",{}]"#), None);
        match decoded(r#"["offer",{"target":5}]"#).unwrap() {
            Err(Refusal::Relay(RelayKind::Offer, message)) => {
                assert_eq!(message, "target must be a string")
            }
            other => panic!("{other:?}"),
        }
        match decoded(r#"["send_message",{"channel_id":"c","message":""}]"#).unwrap() {
            Err(Refusal::Invalid(e)) => assert!(e.to_string().starts_with("Invalid message:")),
            other => panic!("{other:?}"),
        }
        assert!(
            decoded(r#"["relay_capacity",{"channel_id":"c","capacity":1}]"#)
                .unwrap()
                .unwrap()
                .starts_with("RelayCapacity")
        );
        assert!(
            decoded(r#"["upstream_stalled",{"channel_id":"c"}]"#)
                .unwrap()
                .unwrap()
                .starts_with("UpstreamStalled")
        );
        match decoded(r#"["relay_capacity",{"channel_id":"c","capacity":7000}]"#).unwrap() {
            Err(Refusal::Invalid(e)) => assert_eq!(
                e.to_string(),
                "Invalid data: capacity must be an integer from 0 to 100"
            ),
            other => panic!("{other:?}"),
        }
        match decoded(r#"["upstream_failed",null]"#).unwrap() {
            Err(Refusal::Invalid(e)) => {
                assert_eq!(e.to_string(), "Invalid data: channel_id is required")
            }
            other => panic!("{other:?}"),
        }
    }
}
