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
//! What an event carries is the transport's business: the payload is kept as the JSON the
//! signaling layer serialized, and the event's name as it gave it.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::registry::ids::SocketId;

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
    /// Adds an event for `to` (nobody: nothing added).
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

/// Sends events to sockets in the given order: the transport's emit, given by the signaling
/// layer ([`ClusterRegistry::emit_with`](super::ClusterRegistry::emit_with)).
pub type Emitter =
    Arc<dyn Fn(Emits, Reach) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One message on the emits channel: who published it (it sent to its own sockets already).
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "f")]
    from: &'a str,
    #[serde(rename = "x")]
    emits: &'a Emits,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "f")]
    from: String,
    /// Not flattened: serde cannot read a raw payload out of a flattened struct.
    #[serde(rename = "x")]
    emits: Emits,
}

/// The text published for `emits` from node `from`.
pub(super) fn message(from: &NodeId, emits: &Emits) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Outgoing {
        from: from.as_str(),
        emits,
    })
}

/// The events of a message on the emits channel, unless this node published it (it sent
/// them to its own sockets already) or it is unreadable.
pub(super) fn heard(text: &str, node: &NodeId) -> Option<Emits> {
    match serde_json::from_str::<Incoming>(text) {
        Ok(incoming) if incoming.from == node.as_str() => None,
        Ok(incoming) => Some(incoming.emits),
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
        let text = message(&NodeId::parse("n1"), &emits).unwrap();
        let incoming: Incoming = serde_json::from_str(&text).unwrap();
        assert_eq!(incoming.from, "n1");
        assert_eq!(
            serde_json::to_string(&incoming.emits).unwrap(),
            serde_json::to_string(&emits).unwrap()
        );
    }

    #[test]
    fn an_event_naming_a_missing_list_is_skipped() {
        let emits: Emits =
            serde_json::from_str(r#"{"l":[["a"]],"e":[["x",1,0],["y",2,5]]}"#).unwrap();
        let names: Vec<&str> = emits.iter().map(|(e, _, _)| e).collect();
        assert_eq!(names, ["x"]);
    }
}
