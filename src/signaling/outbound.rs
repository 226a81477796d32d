//! Every event the server sends: one payload type per event, its name written next to it.
//!
//! The emitting functions of the handlers (`Ctx::reply`, `send`, `emit_tree`, `announce`, the
//! connect-time emits) take a payload that implements [`Outbound`] and read the event's name
//! from its type, never from a string at the call site. So each operation has exactly one name,
//! which cannot be misspelt at one of the many places that emit it, and a grep for an event's
//! name finds the shape it carries, once.
//!
//! Events that carry the same shape (a bare `{channel_id}`, an SDP) still get a type each: a
//! `#[serde(transparent)]` wrapper around the shared struct, which serializes as that struct
//! does, so the wire bytes are the shared shape's.
//!
//! Shapes and field order are the wire contract of PROTOCOL.md and EXTENSIONS.md: legacy pages
//! depend on them byte for byte.

use serde::Serialize;
use serde_json::value::RawValue;

use super::payloads::RelayKind;
use crate::registry::chat::ChatMessage;
use crate::registry::errors::ErrorCode;
use crate::registry::listing::ChannelSummary;
use crate::registry::moderation::ViewerEntry;

/// A payload the server emits, and the one event name it goes out under.
pub trait Outbound: Serialize {
    /// The Socket.IO event name, as PROTOCOL.md or EXTENSIONS.md spells it.
    const EVENT: &'static str;
}

// ---- connection ----

/// `client_id`: the socket's public id, right after it connects.
#[derive(Debug, Serialize)]
pub struct ClientId<'a> {
    pub id: &'a str,
}

impl Outbound for ClientId<'_> {
    const EVENT: &'static str = "client_id";
}

/// `client_key`: the key a page keeps and presents in its handshake from then on.
#[derive(Debug, Serialize)]
pub struct ClientKeyIssued<'a> {
    pub key: &'a str,
}

impl Outbound for ClientKeyIssued<'_> {
    const EVENT: &'static str = "client_key";
}

// ---- refusals ----

/// `error`. Exactly `{message}` for legacy clients (their sessions are recorded that way);
/// `code` only for a socket that asked for codes when it connected.
#[derive(Debug, Serialize)]
pub struct ErrorMessage {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl Outbound for ErrorMessage {
    const EVENT: &'static str = "error";
}

/// `relay_error`: exactly `{event, message}` for legacy clients, `code` as for `error`.
#[derive(Debug, Serialize)]
pub struct RelayError {
    pub event: RelayKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl Outbound for RelayError {
    const EVENT: &'static str = "relay_error";
}

// ---- channels ----

/// The shape of the events that only name a channel: `{channel_id}`. Not sent by itself; each
/// such event wraps it in its own type below.
#[derive(Debug, Serialize)]
pub struct ChannelRef<'a> {
    pub channel_id: &'a str,
}

/// `broadcaster_ready`: the caller broadcasts on the channel.
#[derive(Debug, Serialize)]
pub struct BroadcasterReady<'a> {
    pub id: &'a str,
    pub channel_id: &'a str,
    /// Secret: lets this broadcaster resume after a dropped connection, or take over from
    /// another device (`force`). Given only to broadcasters that asked for resuming (legacy
    /// pages see the payload they always saw); every such `broadcaster_ready` carries a fresh
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<&'a str>,
}

impl Outbound for BroadcasterReady<'_> {
    const EVENT: &'static str = "broadcaster_ready";
}

/// `broadcaster_joined`: a channel a viewer waited for has gone live, and the viewer is one
/// of its viewers already (it may send its offer at once), unless the channel is private.
#[derive(Debug, Serialize)]
pub struct BroadcasterJoined<'a> {
    pub id: &'a str,
    pub channel_id: &'a str,
    /// Only present (as `true`) for a private channel: the waiter is not a viewer yet and must
    /// join with the password.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub password_required: bool,
}

impl Outbound for BroadcasterJoined<'_> {
    const EVENT: &'static str = "broadcaster_joined";
}

/// `broadcaster_replaced`: to a broadcaster another connection took its channel over from.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BroadcasterReplaced<'a>(pub ChannelRef<'a>);

impl Outbound for BroadcasterReplaced<'_> {
    const EVENT: &'static str = "broadcaster_replaced";
}

/// `channel_list`: the answer to a `join_as_viewer` without a channel.
#[derive(Debug, Serialize)]
pub struct ChannelList {
    pub channels: Vec<ChannelSummary>,
}

impl Outbound for ChannelList {
    const EVENT: &'static str = "channel_list";
}

/// `broadcaster_available`: the viewer may send its offer to the broadcaster.
#[derive(Debug, Serialize)]
pub struct BroadcasterAvailable<'a> {
    pub broadcaster_id: &'a str,
    pub channel_id: &'a str,
}

impl Outbound for BroadcasterAvailable<'_> {
    const EVENT: &'static str = "broadcaster_available";
}

/// `waiting_for_broadcaster`: the viewer waits for the channel to go live.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct WaitingForBroadcaster<'a>(pub ChannelRef<'a>);

impl Outbound for WaitingForBroadcaster<'_> {
    const EVENT: &'static str = "waiting_for_broadcaster";
}

/// `broadcaster_reconnecting`: the channel is held while its broadcaster may resume.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BroadcasterReconnecting<'a>(pub ChannelRef<'a>);

impl Outbound for BroadcasterReconnecting<'_> {
    const EVENT: &'static str = "broadcaster_reconnecting";
}

/// `broadcaster_stopped`: the broadcaster stopped, and the channel stays.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BroadcasterStopped<'a>(pub ChannelRef<'a>);

impl Outbound for BroadcasterStopped<'_> {
    const EVENT: &'static str = "broadcaster_stopped";
}

/// `broadcaster_disconnected`: the channel closed. Carries `null`, as `()` did.
#[derive(Debug, Serialize)]
pub struct BroadcasterDisconnected;

impl Outbound for BroadcasterDisconnected {
    const EVENT: &'static str = "broadcaster_disconnected";
}

/// `channel_expired`: to the broadcaster of a channel reaped after its idle TTL.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ChannelExpired<'a>(pub ChannelRef<'a>);

impl Outbound for ChannelExpired<'_> {
    const EVENT: &'static str = "channel_expired";
}

/// `viewer_count`: to the broadcaster, whenever its audience changes.
#[derive(Debug, Serialize)]
pub struct ViewerCount<'a> {
    pub channel_id: &'a str,
    pub count: usize,
}

impl Outbound for ViewerCount<'_> {
    const EVENT: &'static str = "viewer_count";
}

/// `viewer_token`: a resumable viewer's token for this channel.
#[derive(Debug, Serialize)]
pub struct ViewerToken<'a> {
    pub channel_id: &'a str,
    pub resume_token: &'a str,
}

impl Outbound for ViewerToken<'_> {
    const EVENT: &'static str = "viewer_token";
}

// ---- invitations ----

/// `invite_created`: a signed invitation to the channel, and when it ends (Unix seconds).
#[derive(Debug, Serialize)]
pub struct InviteCreated<'a> {
    pub channel_id: &'a str,
    pub invite: &'a str,
    pub expires_at: u64,
}

impl Outbound for InviteCreated<'_> {
    const EVENT: &'static str = "invite_created";
}

/// `invites_rotated`: every invitation to the channel so far is revoked.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct InvitesRotated<'a>(pub ChannelRef<'a>);

impl Outbound for InvitesRotated<'_> {
    const EVENT: &'static str = "invites_rotated";
}

// ---- relays ----

/// The shape of a relayed session description: `{sdp, sender}`. Not sent by itself: `offer`
/// and `answer` each wrap it.
#[derive(Debug, Serialize)]
pub struct RelayedSdp<'a> {
    pub sdp: &'a RawValue,
    pub sender: &'a str,
}

/// `offer`, relayed to its target.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RelayedOffer<'a>(pub RelayedSdp<'a>);

impl Outbound for RelayedOffer<'_> {
    const EVENT: &'static str = "offer";
}

/// `answer`, relayed to its target.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RelayedAnswer<'a>(pub RelayedSdp<'a>);

impl Outbound for RelayedAnswer<'_> {
    const EVENT: &'static str = "answer";
}

/// `ice_candidate`, relayed to its target.
#[derive(Debug, Serialize)]
pub struct RelayedCandidate<'a> {
    pub candidate: &'a RawValue,
    pub sender: &'a str,
}

impl Outbound for RelayedCandidate<'_> {
    const EVENT: &'static str = "ice_candidate";
}

// ---- chat ----

/// `alias_set`: the viewer's alias, set or restored.
#[derive(Debug, Serialize)]
pub struct AliasSet<'a> {
    pub alias: &'a str,
    pub success: bool,
}

impl Outbound for AliasSet<'_> {
    const EVENT: &'static str = "alias_set";
}

/// `new_message`. A viewer's carries exactly the three fields of PROTOCOL.md (recorded legacy
/// sessions check the set); the fields after them are additions, present only when they say
/// something.
#[derive(Debug, Serialize)]
pub struct NewMessage<'a> {
    pub sender_id: &'a str,
    pub message: &'a str,
    pub timestamp: f64,
    /// The channel's broadcaster wrote it (`broadcaster_message`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_broadcaster: bool,
    /// The message's id (as in `chat_history`): on the broadcaster's messages, and for pages
    /// that presented a client key (EXTENSIONS.md, "Moderation").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

impl Outbound for NewMessage<'_> {
    const EVENT: &'static str = "new_message";
}

/// `chat_history`: a joining viewer that asked for it gets the channel's last messages,
/// oldest first, each a `new_message` payload with its `id` (and `from_broadcaster`).
#[derive(Debug, Serialize)]
pub struct ChatHistory<'a> {
    pub channel_id: &'a str,
    pub messages: &'a [ChatMessage],
}

impl Outbound for ChatHistory<'_> {
    const EVENT: &'static str = "chat_history";
}

/// `chat_settings`: the channel's slow mode and whether its chat is on.
#[derive(Debug, Serialize)]
pub struct ChatSettingsChanged<'a> {
    pub channel_id: &'a str,
    pub slow_mode: u32,
    pub chat_enabled: bool,
}

impl Outbound for ChatSettingsChanged<'_> {
    const EVENT: &'static str = "chat_settings";
}

// ---- moderation ----

/// `viewer_list`: the broadcaster's view of its channel's viewers.
#[derive(Debug, Serialize)]
pub struct ViewerList<'a> {
    pub channel_id: &'a str,
    pub viewers: &'a [ViewerEntry],
}

impl Outbound for ViewerList<'_> {
    const EVENT: &'static str = "viewer_list";
}

/// `viewer_removed`: the broadcaster's answer to `remove_viewer`.
#[derive(Debug, Serialize)]
pub struct ViewerRemoved<'a> {
    pub channel_id: &'a str,
    pub viewer_id: &'a str,
    pub banned: bool,
}

impl Outbound for ViewerRemoved<'_> {
    const EVENT: &'static str = "viewer_removed";
}

/// `bans_cleared`: the broadcaster's answer to `unban_all`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BansCleared<'a>(pub ChannelRef<'a>);

impl Outbound for BansCleared<'_> {
    const EVENT: &'static str = "bans_cleared";
}

/// `viewer_muted`: the broadcaster's answer to `mute_viewer`.
#[derive(Debug, Serialize)]
pub struct ViewerMuted<'a> {
    pub channel_id: &'a str,
    pub viewer_id: &'a str,
    pub muted: bool,
}

impl Outbound for ViewerMuted<'_> {
    const EVENT: &'static str = "viewer_muted";
}

/// `message_removed`: to everyone in the channel that reads message ids.
#[derive(Debug, Serialize)]
pub struct MessageRemoved<'a> {
    pub channel_id: &'a str,
    pub message_id: &'a str,
}

impl Outbound for MessageRemoved<'_> {
    const EVENT: &'static str = "message_removed";
}

// ---- relay tree ----

/// `upstream`: the peer a tree viewer is fed by from now on.
#[derive(Debug, Serialize)]
pub struct Upstream<'a> {
    pub channel_id: &'a str,
    pub peer_id: &'a str,
    pub depth: usize,
    /// Grows with every `upstream` of the channel: moves of one viewer may arrive out of
    /// order, and the page acts only on one newer than the last it acted on.
    pub seq: u64,
}

impl Outbound for Upstream<'_> {
    const EVENT: &'static str = "upstream";
}

/// `downstream_left`: a peer this socket fed no longer is (it left, or was moved).
#[derive(Debug, Serialize)]
pub struct DownstreamLeft<'a> {
    pub channel_id: &'a str,
    pub peer_id: &'a str,
}

impl Outbound for DownstreamLeft<'_> {
    const EVENT: &'static str = "downstream_left";
}

/// `relay_tree`: how a channel's audience is fed: `depths[0]` = fed by the broadcaster,
/// `depths[1]` = at depth 2, and so on; `waiting` have no feeder yet.
#[derive(Debug, Serialize)]
pub struct RelayTree<'a> {
    pub channel_id: &'a str,
    pub direct: usize,
    pub relayed: usize,
    pub waiting: usize,
    pub depths: &'a [usize],
    /// Grows with every change: figures may arrive out of order, the highest is current.
    pub version: u64,
}

impl Outbound for RelayTree<'_> {
    const EVENT: &'static str = "relay_tree";
}

#[cfg(test)]
mod tests {
    use socketioxide_core::parser::is_ser_tuple;

    use super::*;

    /// Every outbound event. A new [`Outbound`] type goes here too (the count below checks).
    const EVENTS: &[&str] = &[
        ClientId::EVENT,
        ClientKeyIssued::EVENT,
        ErrorMessage::EVENT,
        RelayError::EVENT,
        BroadcasterReady::EVENT,
        BroadcasterJoined::EVENT,
        BroadcasterReplaced::EVENT,
        ChannelList::EVENT,
        BroadcasterAvailable::EVENT,
        WaitingForBroadcaster::EVENT,
        BroadcasterReconnecting::EVENT,
        BroadcasterStopped::EVENT,
        BroadcasterDisconnected::EVENT,
        ChannelExpired::EVENT,
        ViewerCount::EVENT,
        ViewerToken::EVENT,
        InviteCreated::EVENT,
        InvitesRotated::EVENT,
        RelayedOffer::EVENT,
        RelayedAnswer::EVENT,
        RelayedCandidate::EVENT,
        AliasSet::EVENT,
        NewMessage::EVENT,
        ChatHistory::EVENT,
        ChatSettingsChanged::EVENT,
        ViewerList::EVENT,
        ViewerRemoved::EVENT,
        BansCleared::EVENT,
        ViewerMuted::EVENT,
        MessageRemoved::EVENT,
        Upstream::EVENT,
        DownstreamLeft::EVENT,
        RelayTree::EVENT,
    ];

    /// Whether `doc` names `event` as a word of its own (not as part of a longer name).
    fn names(doc: &str, event: &str) -> bool {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        doc.match_indices(event).any(|(at, _)| {
            let before = doc[..at].chars().next_back();
            let after = doc[at + event.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
    }

    #[test]
    fn every_event_is_listed_distinct_and_documented() {
        // The marker is split so that this test's own text does not count.
        let impls = include_str!("outbound.rs")
            .matches(&["impl ", "Outbound for "].concat())
            .count();
        assert_eq!(
            EVENTS.len(),
            impls,
            "an Outbound type is missing from EVENTS"
        );

        let mut sorted = EVENTS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            EVENTS.len(),
            "two payload types share an event"
        );

        let docs = [
            include_str!("../../docs/PROTOCOL.md"),
            include_str!("../../docs/EXTENSIONS.md"),
        ];
        for event in EVENTS {
            assert!(
                docs.iter().any(|doc| names(doc, event)),
                "`{event}` is in neither PROTOCOL.md nor EXTENSIONS.md"
            );
        }
    }

    #[test]
    fn the_relayed_events_are_the_relay_kinds() {
        assert_eq!(RelayKind::Offer.event(), RelayedOffer::EVENT);
        assert_eq!(RelayKind::Answer.event(), RelayedAnswer::EVENT);
        assert_eq!(RelayKind::IceCandidate.event(), RelayedCandidate::EVENT);
    }

    /// The per-event wrappers are the shared shape on the wire: the same JSON, and one argument
    /// of the event (Socket.IO spreads a tuple-like payload over several).
    #[test]
    fn wrappers_serialize_as_the_shared_shape() {
        fn wire<T: Serialize>(payload: &T) -> String {
            assert!(!is_ser_tuple(payload), "would be sent as several arguments");
            serde_json::to_string(payload).expect("serializable")
        }
        let channel = || ChannelRef { channel_id: "c-1" };
        let shared = wire(&channel());
        assert_eq!(shared, r#"{"channel_id":"c-1"}"#);
        for wrapped in [
            wire(&BroadcasterReplaced(channel())),
            wire(&WaitingForBroadcaster(channel())),
            wire(&BroadcasterReconnecting(channel())),
            wire(&BroadcasterStopped(channel())),
            wire(&ChannelExpired(channel())),
            wire(&InvitesRotated(channel())),
            wire(&BansCleared(channel())),
        ] {
            assert_eq!(wrapped, shared);
        }

        let body = RawValue::from_string(r#"{"type":"offer","sdp":"v=0"}"#.to_owned())
            .expect("valid JSON");
        let sdp = || RelayedSdp {
            sdp: &body,
            sender: "s",
        };
        let shared = wire(&sdp());
        assert_eq!(
            shared,
            r#"{"sdp":{"type":"offer","sdp":"v=0"},"sender":"s"}"#
        );
        assert_eq!(wire(&RelayedOffer(sdp())), shared);
        assert_eq!(wire(&RelayedAnswer(sdp())), shared);

        // `null`, one argument, as the `()` it replaces.
        assert_eq!(wire(&BroadcasterDisconnected), wire(&()));
        assert_eq!(wire(&BroadcasterDisconnected), "null");
    }
}
