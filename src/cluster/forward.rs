//! Forwarding: a node that does not own a channel sends the operation to the node that does
//! (see `lease.rs`) and waits for its outcome, over Redis pub/sub.
//!
//! Each node listens on `<prefix>:to:<node>`. A request is `{id, from, channel, op}`; its reply
//! goes to the sender's channel as `{id, answer}`. A sender that hears nothing within the
//! timeout asks Redis for the owner again, for as long as a dead owner's heartbeat could still
//! live (its lease is taken over once it is gone), and answers its client `Server unavailable`
//! only when Redis still names the silent owner after that: never a strike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::batch::Settle;
use super::lock;
use crate::registry::chat::ChatDelivery;
use crate::registry::clock::Moment;
use crate::registry::errors::ChannelError;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::membership::{Departure, OwnedViewerRequest, ViewerJoined};
use crate::registry::model::{Channel, Membership, State};
use crate::registry::tree_events::{TreeEvent, TreeOp};

/// An operation on one channel that its owner runs, wherever its socket lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum ChannelOp {
    /// `join_as_viewer` (after the caller's node checked its password or invitation).
    Join {
        sid: SocketId,
        request: OwnedViewerRequest,
    },
    /// `relay_ready`, `upstream_failed`, `upstream_stalled`, `relay_capacity`.
    Tree { sid: SocketId, report: TreeOp },
    /// The departure of a socket that watched this channel and nothing else.
    Leave { sid: SocketId },
    /// `send_message` (a viewer's) or `broadcaster_message`: its owner runs the rule, keeps
    /// the message and sends it, so that every member reads the channel's chat in one order
    /// (not in a batch: see `ClusterRegistry::run_chat`).
    Chat {
        sid: SocketId,
        message: String,
        from_broadcaster: bool,
    },
}

/// What a [`ChannelOp`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Done {
    Joined(ViewerJoined),
    Tree(Vec<TreeEvent>),
    Left(Departure),
    Chat(ChatDelivery),
}

impl ChannelOp {
    /// The socket the operation is about.
    pub(super) fn socket(&self) -> &SocketId {
        match self {
            ChannelOp::Join { sid, .. }
            | ChannelOp::Tree { sid, .. }
            | ChannelOp::Leave { sid }
            | ChannelOp::Chat { sid, .. } => sid,
        }
    }

    /// Runs the operation's rule on `state`, which holds the channel `id` (when it exists).
    pub(super) fn apply(
        &self,
        state: &mut State,
        id: &ChannelId,
        grace: Duration,
        now: Moment,
    ) -> Result<Done, ChannelError> {
        match self {
            ChannelOp::Join { sid, request } => state
                .join_as_viewer(sid, id.as_str(), request.as_request(), now)
                .map(Done::Joined),
            ChannelOp::Tree { sid, report } => state
                .tree_op(sid, id.as_str(), report.clone(), now)
                .map(Done::Tree),
            ChannelOp::Leave { sid } => {
                let only = Membership {
                    watching: [id.clone()].into(),
                    ..Membership::default()
                };
                state.sockets.insert(sid.clone(), only);
                Ok(Done::Left(state.disconnect(sid, grace, now)))
            }
            ChannelOp::Chat { .. } => {
                tracing::error!("a chat message was put in a channel's batch");
                Err(ChannelError::Unavailable)
            }
        }
    }
}

impl Settle for Done {
    fn settle(&mut self, channel: &Channel, told: bool) -> Option<usize> {
        match self {
            Done::Joined(joined) => joined.settle(channel, told),
            Done::Tree(events) => events.settle(channel, told),
            Done::Left(departure) => departure.settle(channel, told),
            Done::Chat(_) => None,
        }
    }

    fn take_routed_tree(&mut self, caller: &SocketId) -> Vec<TreeEvent> {
        match self {
            Done::Joined(joined) => joined.take_routed_tree(caller),
            Done::Tree(events) => events.take_routed_tree(caller),
            Done::Left(departure) => departure.take_routed_tree(caller),
            Done::Chat(_) => Vec::new(),
        }
    }

    fn carries_own_tree(&self) -> bool {
        match self {
            Done::Joined(joined) => joined.carries_own_tree(),
            Done::Tree(_) | Done::Left(_) | Done::Chat(_) => false,
        }
    }

    fn surround_tree(&mut self, before: Vec<TreeEvent>, after: Vec<TreeEvent>) -> Vec<TreeEvent> {
        match self {
            Done::Joined(joined) => joined.surround_tree(before, after),
            // A reporter's, departed socket's or sender's events are all the runner's.
            Done::Tree(_) | Done::Left(_) | Done::Chat(_) => {
                before.into_iter().chain(after).collect()
            }
        }
    }
}

impl Done {
    /// The outcome of a join; anything else is the owner misunderstanding the request.
    pub(super) fn joined(self) -> Result<ViewerJoined, ChannelError> {
        match self {
            Done::Joined(joined) => Ok(joined),
            other => Err(mismatch(&other)),
        }
    }

    pub(super) fn tree(self) -> Result<Vec<TreeEvent>, ChannelError> {
        match self {
            Done::Tree(events) => Ok(events),
            other => Err(mismatch(&other)),
        }
    }

    pub(super) fn chat(self) -> Result<ChatDelivery, ChannelError> {
        match self {
            Done::Chat(delivery) => Ok(delivery),
            other => Err(mismatch(&other)),
        }
    }

    pub(super) fn left(self) -> Result<Departure, ChannelError> {
        match self {
            Done::Left(departure) => Ok(departure),
            other => Err(mismatch(&other)),
        }
    }
}

fn mismatch(done: &Done) -> ChannelError {
    tracing::error!(
        ?done,
        "a forwarded operation came back with another's outcome"
    );
    ChannelError::Unavailable
}

/// What the owner answers.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Answer {
    Done(Result<Done, ChannelError>),
    /// It does not own the channel (any more): ask Redis who does.
    NotOwner,
}

/// A forwarded operation, as the owner receives it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    pub(super) id: u64,
    /// The sender's node, where the reply goes.
    pub(super) from: String,
    pub(super) channel: ChannelId,
    pub(super) op: ChannelOp,
    /// Wall-clock milliseconds after which the owner must not run it: its sender gives up
    /// a little later and tells its client so, and an operation run after that would leave
    /// a viewer in a channel whose client was told it could not join.
    pub(super) deadline: u64,
}

/// What travels on a node's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Message {
    Request(Request),
    Reply { id: u64, answer: Answer },
}

/// Requests this node sent and waits for.
#[derive(Default)]
pub(super) struct Waiting {
    next: AtomicU64,
    replies: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
}

impl Waiting {
    /// A fresh correlation id and where its reply arrives.
    pub(super) fn open(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.replies).insert(id, tx);
        (id, rx)
    }

    /// Stops waiting for `id` (it timed out or could not be sent).
    pub(super) fn close(&self, id: u64) {
        lock(&self.replies).remove(&id);
    }

    /// Hands a reply to its waiter; a late one (timed out) is dropped.
    fn arrived(&self, id: u64, answer: Answer) {
        if let Some(tx) = lock(&self.replies).remove(&id) {
            let _ = tx.send(answer);
        }
    }
}

/// How long a sender waits for the owner's answer before asking Redis who owns the channel.
pub(super) fn timeout(heartbeat: Duration) -> Duration {
    heartbeat.max(Duration::from_millis(500))
}

/// A message on this node's inbox: a reply goes to its waiter, a request to `serve` (which
/// runs it in its own task and publishes the answer). Lost requests time out at their
/// senders, which ask again.
pub(super) fn received(text: &str, waiting: &Waiting, serve: impl FnOnce(Request)) {
    match serde_json::from_str::<Message>(text) {
        Ok(Message::Request(request)) => serve(request),
        Ok(Message::Reply { id, answer }) => waiting.arrived(id, answer),
        Err(e) => tracing::warn!("unreadable message from another node: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back() {
        let request = Message::Request(Request {
            id: 7,
            from: "n1".into(),
            channel: ChannelId::from("c"),
            deadline: 1_700_000_000_000,
            op: ChannelOp::Tree {
                sid: SocketId::from("v"),
                report: TreeOp::UpstreamFailed {
                    about: Some(SocketId::from("f")),
                },
            },
        });
        let text = serde_json::to_string(&request).expect("encodes");
        match serde_json::from_str::<Message>(&text).expect("decodes") {
            Message::Request(r) => {
                assert_eq!(r.id, 7);
                assert!(matches!(r.op, ChannelOp::Tree { .. }));
            }
            other => panic!("{other:?}"),
        }
        let reply = Message::Reply {
            id: 7,
            answer: Answer::Done(Err(ChannelError::NotFound(Some(ChannelId::from("c"))))),
        };
        let text = serde_json::to_string(&reply).expect("encodes");
        match serde_json::from_str::<Message>(&text).expect("decodes") {
            Message::Reply {
                answer: Answer::Done(Err(e)),
                ..
            } => assert_eq!(e, ChannelError::NotFound(Some(ChannelId::from("c")))),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reply_reaches_its_waiter_and_a_late_one_is_dropped() {
        let waiting = Waiting::default();
        let (id, rx) = waiting.open();
        waiting.arrived(id, Answer::NotOwner);
        assert!(matches!(rx.await, Ok(Answer::NotOwner)));
        let (id, rx) = waiting.open();
        waiting.close(id);
        waiting.arrived(id, Answer::NotOwner);
        assert!(rx.await.is_err(), "closed: nobody waits");
    }
}
