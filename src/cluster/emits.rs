//! Events a channel's owner sends to its members on every node, in the order its rules ran,
//! with one publish for a whole run of them.
//!
//! Through the Socket.IO adapter every event is its own publish, and a run's publishes must be
//! awaited one after another to keep their order for every member (started together they were
//! seen to arrive swapped now and then): a run of chat paid one Redis round trip per message.
//! Here the owner puts a run's events in one [`Emits`], publishes it once on the deployment's
//! emits channel and sends the same events to its own sockets; every other node hears it on
//! its feed connection and sends each event, in order, to those of the recipients it holds.
//! Redis hands every subscriber the messages of one connection in the order they were
//! published, and each node handles them one after another: every member reads one order.
//!
//! A relay (offer, answer, ICE candidate) to a socket on another node takes the same channel,
//! alone: the node holding its target checks that the sender may still reach it before it
//! delivers ([`Relay`]).
//!
//! What an event carries is the transport's business: the payload is kept as the JSON the
//! signaling layer serialized, and the event's name as it gave it.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::registry::errors::ChannelError;
use crate::registry::ids::SocketId;
use crate::registry::relay::RelayKind;

use super::NodeId;

/// Events for sockets anywhere in the cluster, in the order they must arrive.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Emits {
    /// Each distinct recipient list once: a run of chat goes to the same members message after
    /// message, and a list of 200 members is most of a message's size.
    #[serde(rename = "l")]
    lists: Vec<Vec<SocketId>>,
    /// Each event: its name, its payload, and which of `lists` receives it.
    #[serde(rename = "e")]
    events: Vec<(Cow<'static, str>, Box<RawValue>, usize)>,
}

impl Emits {
    /// Adds an event for `to` (nobody: nothing added). The payload is one JSON value, sent as
    /// the event's one argument: no binary attachments, no several arguments.
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        event: &'static str,
        data: &T,
        to: &[SocketId],
    ) -> Result<(), serde_json::Error> {
        if to.is_empty() {
            return Ok(());
        }
        let data = serde_json::value::to_raw_value(data)?;
        let list = match self.lists.iter().rposition(|list| list.as_slice() == to) {
            Some(list) => list,
            None => {
                self.lists.push(to.to_vec());
                self.lists.len() - 1
            }
        };
        self.events.push((Cow::Borrowed(event), data, list));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Each recipient, once per list it is in.
    pub fn recipients(&self) -> impl Iterator<Item = &SocketId> {
        self.lists.iter().flatten()
    }

    /// Each event in order: its name, its payload, its recipients. An event naming a list that
    /// is not there (a message from a broken peer) is skipped.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue, &[SocketId])> {
        self.events.iter().filter_map(|(event, data, list)| {
            let to = self.lists.get(*list)?;
            Some((event.as_ref(), data.as_ref(), to.as_slice()))
        })
    }
}

/// Where the transport sends a set of events: to the recipients this node holds, or to all of
/// them through the Socket.IO adapter (each event one publish, awaited in turn: how an owner
/// sends while some node alive does not hear the emits channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Here,
    Everywhere,
}

/// A relay for a socket on another node than its sender's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Relay {
    #[serde(rename = "s")]
    pub from: SocketId,
    #[serde(rename = "t")]
    pub to: SocketId,
    #[serde(rename = "k")]
    pub kind: RelayKind,
    /// The payload, as the sender's node serialized it.
    #[serde(rename = "d")]
    pub data: Box<RawValue>,
    /// The sender reads error codes (it asked for them when it connected): a refusal by the
    /// target's node carries one.
    #[serde(rename = "c", default)]
    pub codes: bool,
}

/// What the cluster needs of the transport (the signaling layer, given with
/// [`ClusterRegistry::attach_sockets`](super::ClusterRegistry::attach_sockets)).
pub trait Sockets: Send + Sync {
    /// Sends events to their recipients, in the order given.
    fn emit(&self, emits: Emits, reach: Reach) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Whether a socket is connected to this node.
    fn holds(&self, sid: &SocketId) -> bool;
    /// Delivers a relay from another node to its target here or, when this node found that
    /// its sender may no longer reach it, tells the sender why not.
    fn relay(
        &self,
        relay: Relay,
        refusal: Option<ChannelError>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What a message on the emits channel carries.
#[derive(Debug)]
pub(super) enum Body {
    /// A channel owner's events.
    Events(Emits),
    Relay(Relay),
}

/// One message on the emits channel: who published it (it sent to its own sockets already),
/// and either a channel owner's events (`x`, as level 4 writes them) or a relay (`r`).
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "f")]
    from: &'a str,
    #[serde(rename = "x", skip_serializing_if = "Option::is_none")]
    events: Option<&'a Emits>,
    #[serde(rename = "r", skip_serializing_if = "Option::is_none")]
    relay: Option<&'a Relay>,
}

/// (Not flattened: serde cannot read a raw payload out of a flattened struct.)
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "f")]
    from: String,
    #[serde(rename = "x")]
    events: Option<Emits>,
    #[serde(rename = "r")]
    relay: Option<Relay>,
}

/// The text published for `body` from node `from`.
pub(super) fn message(from: &NodeId, body: &Body) -> Result<String, serde_json::Error> {
    let (events, relay) = match body {
        Body::Events(emits) => (Some(emits), None),
        Body::Relay(relay) => (None, Some(relay)),
    };
    serde_json::to_string(&Outgoing {
        from: from.as_str(),
        events,
        relay,
    })
}

/// What a message on the emits channel carries, unless this node published it (it sent its
/// events to its own sockets already, and holds no relay's target) or it is unreadable.
pub(super) fn heard(text: &str, node: &NodeId) -> Option<Body> {
    // Every node hears its own publishes too: those are skipped before they are read (a relay
    // carries a whole SDP, and with two nodes every relay is one of them).
    if text
        .strip_prefix(r#"{"f":""#)
        .and_then(|rest| rest.strip_prefix(node.as_str()))
        .is_some_and(|rest| rest.starts_with('"'))
    {
        return None;
    }
    match serde_json::from_str::<Incoming>(text) {
        Ok(incoming) if incoming.from == node.as_str() => None,
        Ok(Incoming {
            events: Some(emits),
            ..
        }) => Some(Body::Events(emits)),
        Ok(Incoming {
            relay: Some(relay), ..
        }) => Some(Body::Relay(relay)),
        Ok(_) => {
            tracing::warn!("a message from another node with neither events nor a relay");
            None
        }
        Err(e) => {
            tracing::warn!("unreadable events from another node: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> SocketId {
        SocketId::named_by_client(s)
    }

    #[test]
    fn one_list_for_events_to_the_same_members() {
        let members = [sid("a"), sid("b")];
        let mut emits = Emits::default();
        emits.push("new_message", &"one", &members).unwrap();
        emits.push("new_message", &"two", &members).unwrap();
        emits.push("viewer_count", &2, &[sid("a")]).unwrap();
        emits.push("new_message", &"nobody", &[]).unwrap();
        emits.push("new_message", &"three", &members).unwrap();
        assert_eq!(emits.lists.len(), 2);
        let read: Vec<(String, String, usize)> = emits
            .iter()
            .map(|(e, d, to)| (e.to_owned(), d.get().to_owned(), to.len()))
            .collect();
        assert_eq!(
            read,
            [
                ("new_message".into(), "\"one\"".into(), 2),
                ("new_message".into(), "\"two\"".into(), 2),
                ("viewer_count".into(), "2".into(), 1),
                ("new_message".into(), "\"three\"".into(), 2),
            ]
        );
    }

    #[test]
    fn a_message_reads_back_with_its_sender() {
        let mut emits = Emits::default();
        emits
            .push("new_message", &serde_json::json!({"m": "hi"}), &[sid("a")])
            .unwrap();
        let expected = serde_json::to_string(&emits).unwrap();
        let text = message(&NodeId::parse("n1"), &Body::Events(emits.clone())).unwrap();
        assert!(heard(&text, &NodeId::parse("n1")).is_none(), "its own");
        // A node whose name begins another's hears the other.
        let longer = message(&NodeId::parse("n12"), &Body::Events(emits.clone())).unwrap();
        assert!(heard(&longer, &NodeId::parse("n1")).is_some(), "another's");
        let Some(Body::Events(read)) = heard(&text, &NodeId::parse("n2")) else {
            panic!("events read back: {text}");
        };
        assert_eq!(serde_json::to_string(&read).unwrap(), expected);
    }

    /// What a node of level 4 publishes reads the same.
    #[test]
    fn events_as_level_4_writes_them_read_back() {
        let text = r#"{"f":"n1","x":{"l":[["a"]],"e":[["new_message",{"m":1},0]]}}"#;
        let Some(Body::Events(read)) = heard(text, &NodeId::parse("n2")) else {
            panic!("events read back");
        };
        let names: Vec<&str> = read.iter().map(|(e, _, _)| e).collect();
        assert_eq!(names, ["new_message"]);
    }

    #[test]
    fn a_relay_reads_back() {
        let relay = Relay {
            from: sid("a"),
            to: sid("b"),
            kind: RelayKind::Answer,
            data: serde_json::value::to_raw_value(&serde_json::json!({"sdp": "x"})).unwrap(),
            codes: true,
        };
        let text = message(&NodeId::parse("n1"), &Body::Relay(relay)).unwrap();
        let Some(Body::Relay(read)) = heard(&text, &NodeId::parse("n2")) else {
            panic!("a relay read back: {text}");
        };
        assert_eq!((read.from, read.to), (sid("a"), sid("b")));
        assert_eq!(read.kind, RelayKind::Answer);
        assert_eq!(read.data.get(), r#"{"sdp":"x"}"#);
        assert!(read.codes);
    }

    #[test]
    fn an_event_naming_a_missing_list_is_skipped() {
        let emits: Emits =
            serde_json::from_str(r#"{"l":[["a"]],"e":[["x",1,0],["y",2,5]]}"#).unwrap();
        let names: Vec<&str> = emits.iter().map(|(e, _, _)| e).collect();
        assert_eq!(names, ["x"]);
    }
}
