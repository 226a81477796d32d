//! Every inbound event's decoding and validation, fed arbitrary bytes: a Socket.IO event packet
//! (`["name", payload, ...]`) as a client would send it, and the same bytes as the payload of
//! every event the protocol knows. Nothing may panic, and an accepted request must hold what
//! validation promises.
#![no_main]

use broadcast_server::signaling::events::{self, Refusal, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const EVENTS: [&str; 21] = [
    "join_as_broadcaster",
    "join_as_viewer",
    "offer",
    "answer",
    "ice_candidate",
    "set_alias",
    "send_message",
    "broadcaster_message",
    "stop_broadcast",
    "create_invite",
    "rotate_invites",
    "relay_ready",
    "upstream_failed",
    "upstream_stalled",
    "relay_capacity",
    "list_viewers",
    "remove_viewer",
    "unban_all",
    "mute_viewer",
    "remove_message",
    "chat_settings",
];

fn check(request: Option<Result<Request<'_>, Refusal>>) {
    match request {
        Some(Ok(Request::JoinAsBroadcaster(r))) => channel_ok(r.channel_id.as_deref()),
        Some(Ok(Request::JoinAsViewer(r))) => {
            channel_ok(r.channel_id.as_deref());
            if let Some(invite) = r.invite {
                assert!((1..=256).contains(&invite.0.len()));
            }
        }
        Some(Ok(Request::CreateInvite(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            if let Some(ttl) = r.ttl_seconds {
                assert!((60..=2_592_000).contains(&ttl), "{ttl}");
            }
        }
        Some(Ok(Request::SetAlias(r))) => {
            let alias = r.alias.expect("a valid alias is present");
            assert!((5..=20).contains(&alias.chars().count()), "{alias:?}");
            assert_eq!(alias.trim(), alias);
        }
        Some(Ok(Request::SendMessage(r) | Request::BroadcasterMessage(r))) => {
            let message = r.message.expect("a valid message is present");
            assert!((1..=200).contains(&message.chars().count()));
            assert!(!message.to_lowercase().contains("<script"));
        }
        Some(Ok(Request::Relay(_, relay))) => {
            assert!(!relay.target.trim().is_empty());
            assert!(relay.body.get().starts_with('{'));
        }
        Some(Ok(
            Request::StopBroadcast(r)
            | Request::RotateInvites(r)
            | Request::RelayReady(r)
            | Request::ListViewers(r)
            | Request::UnbanAll(r),
        )) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
        }
        Some(Ok(Request::UpstreamFailed(r) | Request::UpstreamStalled(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            if let Some(peer) = r.peer_id.as_deref() {
                moderated_id_ok(peer);
            }
        }
        Some(Ok(Request::RelayCapacity(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            assert!(r.capacity.expect("required") <= 100);
        }
        Some(Ok(Request::RemoveViewer(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            moderated_id_ok(r.viewer_id.as_deref().expect("required"));
        }
        Some(Ok(Request::MuteViewer(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            moderated_id_ok(r.viewer_id.as_deref().expect("required"));
            assert!(r.muted.is_some());
        }
        Some(Ok(Request::RemoveMessage(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            moderated_id_ok(r.message_id.as_deref().expect("required"));
        }
        Some(Ok(Request::ChatSettings(r))) => {
            channel_ok(Some(r.channel_id.as_deref().expect("required")));
            assert!(r.slow_mode.is_none_or(|s| s <= 3600));
        }
        Some(Err(Refusal::Invalid(e))) => assert!(e.to_string().starts_with("Invalid ")),
        Some(Err(Refusal::Relay(_, message))) => assert!(!message.is_empty()),
        None => {}
    }
}

fn moderated_id_ok(id: &str) {
    assert!(!id.is_empty() && id.len() <= 64, "{id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
}

fn channel_ok(id: Option<&str>) {
    if let Some(id) = id {
        assert!(!id.is_empty() && id.chars().count() <= 20, "{id:?}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((name, payload)) = events::parse_packet(text) {
        check(events::decode(&name, payload));
    }
    let payload: Option<&RawValue> = serde_json::from_str(text).ok();
    for event in EVENTS {
        check(events::decode(event, payload));
    }
});
