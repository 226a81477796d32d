//! Group commit: this node's operations on one channel that read and write that channel alone
//! (viewers joining, relay-tree reports) run together, one load and one compare-and-set for
//! every operation queued meanwhile.
//!
//! A channel is one Redis document, so each write costs the whole channel (its viewers and
//! relay tree): a crowd joining one at a time costs O(viewers²). Run in batches, the rules still
//! apply one operation at a time in arrival order on the loaded channel (each rule is
//! all-or-nothing, as in memory, so one refused join leaves the others' state as it was), and
//! the batch's result is written once; a conflict with another node reruns the whole batch on
//! what it wrote. Every caller gets its own operation's outcome only once the batch is stored.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{NodeId, lock};
use crate::registry::clock::Moment;
use crate::registry::errors::ChannelError;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::membership::{Departure, ViewerJoined};
use crate::registry::model::{Channel, State};
use crate::registry::tree_events::TreeEvent;

/// Operations one batch takes at most: a bound on how long the channel's other writers (chat
/// settings, moderation, departures) wait behind it.
const MAX_BATCH: usize = 256;

/// What a batched operation returns, and the viewer count it has for the broadcaster.
pub(super) trait Settle {
    /// Every caller of a batch is answered at once, on several nodes, and their events leave in
    /// any order. With `told`, the batch's runner tells the broadcaster each operation's count
    /// itself, in the order the rules ran, before the next batch runs: the result is marked so
    /// that its caller does not, and the count it carries (taken when its rule ran) is returned
    /// for the runner. Without, the count is brought up to the channel as the whole batch left
    /// it, so that a count taken halfway through the batch is not the last one the broadcaster
    /// sees. `None`: no count for this channel's broadcaster (a relay-tree report).
    fn settle(&mut self, _channel: &Channel, _told: bool) -> Option<usize> {
        None
    }

    /// Takes the relay-tree events the batch's runner routes (see [`route_tree`]): those for
    /// other sockets than `caller`, and for a report about the tree its caller's own too (it
    /// is a member already, so nothing its node sends must come first). What is left, a
    /// joiner's own, its node sends after its other answers.
    fn take_routed_tree(&mut self, _caller: &SocketId) -> Vec<TreeEvent> {
        Vec::new()
    }

    /// Whether its caller's node sends its own relay-tree events (a join: after
    /// `broadcaster_available`), so that events other rules of its batch gave the same socket
    /// go with them.
    fn carries_own_tree(&self) -> bool {
        false
    }

    /// Puts `before` ahead of its caller's own relay-tree events and `after` behind them:
    /// events other operations of its batch gave its caller's socket (see [`route_tree`]).
    /// Returns what it cannot carry (it has no events for its caller).
    fn surround_tree(&mut self, before: Vec<TreeEvent>, after: Vec<TreeEvent>) -> Vec<TreeEvent> {
        before.into_iter().chain(after).collect()
    }
}

/// `events` with `before` ahead and `after` behind.
fn surround(events: &mut Vec<TreeEvent>, mut before: Vec<TreeEvent>, after: Vec<TreeEvent>) {
    before.append(events);
    before.extend(after);
    *events = before;
}

/// Moves out of `events` those for sockets other than `caller`.
fn others(events: &mut Vec<TreeEvent>, caller: &SocketId) -> Vec<TreeEvent> {
    let (own, others) = std::mem::take(events)
        .into_iter()
        .partition(|event| event.recipient() == caller);
    *events = own;
    others
}

impl Settle for ViewerJoined {
    fn settle(&mut self, channel: &Channel, told: bool) -> Option<usize> {
        self.count_told = told;
        if !told {
            self.viewer_count = channel.viewers.len();
        }
        Some(self.viewer_count)
    }

    fn take_routed_tree(&mut self, caller: &SocketId) -> Vec<TreeEvent> {
        others(&mut self.tree, caller)
    }

    fn carries_own_tree(&self) -> bool {
        true
    }

    fn surround_tree(&mut self, before: Vec<TreeEvent>, after: Vec<TreeEvent>) -> Vec<TreeEvent> {
        surround(&mut self.tree, before, after);
        Vec::new()
    }
}

impl Settle for Departure {
    fn settle(&mut self, channel: &Channel, told: bool) -> Option<usize> {
        let left = self.left.iter_mut().find(|l| l.channel_id == channel.id)?;
        left.count_told = told;
        if !told {
            left.viewer_count = channel.viewers.len();
        }
        Some(left.viewer_count)
    }

    fn take_routed_tree(&mut self, caller: &SocketId) -> Vec<TreeEvent> {
        self.left
            .iter_mut()
            .flat_map(|left| others(&mut left.tree, caller))
            .collect()
    }
}

/// A report about the tree: every event it gave is the runner's to send.
impl Settle for Vec<TreeEvent> {
    fn take_routed_tree(&mut self, _caller: &SocketId) -> Vec<TreeEvent> {
        std::mem::take(self)
    }
}

/// One queued operation, its result kept until the batch is stored.
pub(super) trait Pending: Send {
    /// Applies the operation's rule to the batch's state (again, when the batch is rerun).
    fn run(&mut self, state: &mut State, now: Moment);
    /// Brings its result up to the channel as the whole batch left it (`told`: see
    /// [`Settle::settle`]); the count it has for the broadcaster.
    fn settle(&mut self, channel: &Channel, told: bool) -> Option<usize>;
    /// Takes the relay-tree events its rule gave for other sockets than its caller's (none
    /// unless it ran and the batch is stored): the runner sends every operation's, in order,
    /// before the next batch, from this one node; its caller's node would send them in any
    /// order with other nodes' callers.
    fn take_routed_tree(&mut self) -> Vec<TreeEvent>;
    /// Its caller, once its rule ran and succeeded, when its caller's node sends the caller's
    /// own relay-tree events ([`Settle::carries_own_tree`]).
    fn carrier(&self) -> Option<&SocketId>;
    /// See [`Settle::surround_tree`] (nothing taken unless its rule succeeded).
    fn surround_tree(&mut self, before: Vec<TreeEvent>, after: Vec<TreeEvent>) -> Vec<TreeEvent>;
    /// Hands the caller its outcome: its rule's result, or the batch's failure to store.
    fn deliver(self: Box<Self>, failure: Option<&ChannelError>);
    /// The socket the operation adds to the channel and the node it lives on, when that is
    /// not this node (an operation forwarded to the channel's owner): the node's list of its
    /// sockets, which its survivors clean up should it die, must name the right one.
    fn home(&self) -> Option<(&SocketId, &NodeId)>;
    /// The operation stops running: its outcome is `Unavailable` (a forwarded one's sender
    /// asks the channel's new owner, or its node is gone).
    fn abandon(&mut self);
}

type Outcome<T> = Result<T, ChannelError>;

/// Tells a channel's broadcaster its viewer count: the transport's emit, given by the
/// signaling layer ([`ClusterRegistry::tell_counts_with`](super::ClusterRegistry)). The
/// runner of a channel's batches calls it once per stored batch with a join or a departure,
/// before the next batch runs, with each of the batch's counts in the order their rules ran:
/// the callers of a batch are answered on several nodes, and counts each of them told would
/// reach the broadcaster in any order (a count going down in the middle of a crowd's arrival,
/// a stale one last).
pub type CountTeller = Arc<
    dyn Fn(SocketId, ChannelId, Vec<usize>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

struct Rule<T, F> {
    rule: F,
    /// The socket the operation is about.
    caller: SocketId,
    home: Option<(SocketId, NodeId)>,
    abandoned: bool,
    result: Option<Outcome<T>>,
    reply: oneshot::Sender<Outcome<T>>,
}

impl<T, F> Pending for Rule<T, F>
where
    T: Settle + Send,
    F: FnMut(&mut State, Moment) -> Outcome<T> + Send,
{
    fn run(&mut self, state: &mut State, now: Moment) {
        self.result = Some(if self.abandoned {
            Err(ChannelError::Unavailable)
        } else {
            (self.rule)(state, now)
        });
    }

    fn settle(&mut self, channel: &Channel, told: bool) -> Option<usize> {
        match &mut self.result {
            Some(Ok(result)) => result.settle(channel, told),
            _ => None,
        }
    }

    fn take_routed_tree(&mut self) -> Vec<TreeEvent> {
        match &mut self.result {
            Some(Ok(result)) => result.take_routed_tree(&self.caller),
            _ => Vec::new(),
        }
    }

    fn carrier(&self) -> Option<&SocketId> {
        match &self.result {
            Some(Ok(result)) if result.carries_own_tree() => Some(&self.caller),
            _ => None,
        }
    }

    fn surround_tree(&mut self, before: Vec<TreeEvent>, after: Vec<TreeEvent>) -> Vec<TreeEvent> {
        match &mut self.result {
            Some(Ok(result)) => result.surround_tree(before, after),
            _ => before.into_iter().chain(after).collect(),
        }
    }

    fn deliver(self: Box<Self>, failure: Option<&ChannelError>) {
        let outcome = match (failure, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(ChannelError::Unavailable),
        };
        // A caller that went away (its socket closed) no longer waits: nothing to tell.
        let _ = self.reply.send(outcome);
    }

    fn home(&self) -> Option<(&SocketId, &NodeId)> {
        self.home.as_ref().map(|(sid, node)| (sid, node))
    }

    fn abandon(&mut self) {
        self.abandoned = true;
    }
}

/// Sorts out a stored batch's relay-tree events, in the order the rules ran: a joiner's own
/// and those other rules of the batch gave the same socket go with the join's outcome (its
/// node sends them after its `broadcaster_available`: ahead of its own when an earlier rule
/// gave them, behind when a later one did); the rest, every report's included, are returned,
/// for the batch's runner to send before the next batch.
pub(super) fn route_tree(ops: &mut [Box<dyn Pending>]) -> Vec<TreeEvent> {
    let mut callers: HashMap<SocketId, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(caller) = op.carrier() {
            callers.entry(caller.clone()).or_default().push(i);
        }
    }
    let mut before: Vec<Vec<TreeEvent>> = vec![Vec::new(); ops.len()];
    let mut after: Vec<Vec<TreeEvent>> = vec![Vec::new(); ops.len()];
    let mut runner = Vec::new();
    for (i, op) in ops.iter_mut().enumerate() {
        for event in op.take_routed_tree() {
            let Some(theirs) = callers.get(event.recipient()) else {
                runner.push(event);
                continue;
            };
            match (theirs.iter().find(|&&j| j > i), theirs.last()) {
                (Some(&later), _) => before[later].push(event),
                (None, Some(&last)) => after[last].push(event),
                (None, None) => runner.push(event),
            }
        }
    }
    for (op, (before, after)) in ops.iter_mut().zip(before.into_iter().zip(after)) {
        if !before.is_empty() || !after.is_empty() {
            runner.extend(op.surround_tree(before, after));
        }
    }
    runner
}

/// An operation for [`Batches::push`] about `caller`'s socket, and where its outcome arrives
/// (an error if the batch was dropped unrun). `home`: see [`Pending::home`].
pub(super) fn pending<T, F>(
    rule: F,
    caller: SocketId,
    home: Option<(SocketId, NodeId)>,
) -> (Box<dyn Pending>, oneshot::Receiver<Outcome<T>>)
where
    T: Settle + Send + 'static,
    F: FnMut(&mut State, Moment) -> Outcome<T> + Send + 'static,
{
    let (reply, outcome) = oneshot::channel();
    let op = Rule {
        rule,
        caller,
        home,
        abandoned: false,
        result: None,
        reply,
    };
    (Box::new(op), outcome)
}

/// Queued operations per channel. A channel has an entry exactly while one task runs its
/// batches: the first operation queued starts it, and it ends when it finds the queue empty.
#[derive(Default)]
pub(super) struct Batches {
    queues: Mutex<HashMap<ChannelId, Vec<Box<dyn Pending>>>>,
}

impl Batches {
    /// Queues an operation; `true` when no task runs this channel's batches, so the caller
    /// must start one.
    pub(super) fn push(&self, id: &ChannelId, op: Box<dyn Pending>) -> bool {
        let mut queues = lock(&self.queues);
        match queues.get_mut(id) {
            Some(queue) => {
                queue.push(op);
                false
            }
            None => {
                queues.insert(id.clone(), vec![op]);
                true
            }
        }
    }

    /// The next batch, oldest first; `None` (and the channel's entry gone) when nothing is
    /// queued, so the next operation starts a new task.
    pub(super) fn next(&self, id: &ChannelId) -> Option<Vec<Box<dyn Pending>>> {
        let mut queues = lock(&self.queues);
        let queue = queues.get_mut(id)?;
        if queue.is_empty() {
            queues.remove(id);
            return None;
        }
        let n = queue.len().min(MAX_BATCH);
        Some(queue.drain(..n).collect())
    }

    /// Drops a channel's queue whose task ended without emptying it (it panicked): its callers
    /// get an error instead of waiting forever, and the next operation starts a new task.
    pub(super) fn abandon(&self, id: &ChannelId) {
        lock(&self.queues).remove(id);
    }
}

/// Held by the task running a channel's batches: if it ends without finding the queue empty
/// (it unwinds, or the runtime drops it), the queue goes with it, so later operations start a
/// new task instead of waiting behind one that is gone.
pub(super) struct Running<'a> {
    pub(super) batches: &'a Batches,
    pub(super) id: &'a ChannelId,
    /// Set when [`Batches::next`] found the queue empty and removed it: a queue there now is
    /// a newer task's.
    pub(super) finished: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.batches.abandon(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Settle for u32 {}
    impl Settle for () {}

    fn caller() -> SocketId {
        SocketId::named_by_client("caller")
    }

    fn counting(
        log: std::sync::Arc<Mutex<Vec<u32>>>,
        n: u32,
    ) -> impl FnMut(&mut State, Moment) -> Outcome<u32> {
        move |_, _| {
            lock(&log).push(n);
            if n.is_multiple_of(2) {
                Ok(n)
            } else {
                Err(ChannelError::Unavailable)
            }
        }
    }

    #[tokio::test]
    async fn operations_run_in_arrival_order_and_each_caller_gets_its_own_outcome() {
        let batches = Batches::default();
        let id = ChannelId::from("c");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut replies = Vec::new();
        for n in 0..5 {
            let (op, reply) = pending(counting(log.clone(), n), caller(), None);
            assert_eq!(
                batches.push(&id, op),
                n == 0,
                "only the first starts a task"
            );
            replies.push(reply);
        }
        let mut ops = batches.next(&id).expect("queued");
        let mut state = State::default();
        for op in &mut ops {
            op.run(&mut state, Moment::from_millis(0));
        }
        for op in ops {
            op.deliver(None);
        }
        assert!(batches.next(&id).is_none(), "empty: the task ends");
        let (op, _reply) = pending(counting(log.clone(), 9), caller(), None);
        assert!(batches.push(&id, op), "after the end a new task starts");
        assert_eq!(*lock(&log), vec![0, 1, 2, 3, 4]);
        for (n, reply) in replies.into_iter().enumerate() {
            let outcome = reply.await.expect("delivered");
            if n.is_multiple_of(2) {
                assert_eq!(outcome, Ok(n as u32));
            } else {
                assert_eq!(outcome, Err(ChannelError::Unavailable));
            }
        }
    }

    #[tokio::test]
    async fn a_batch_that_could_not_be_stored_fails_every_caller() {
        let batches = Batches::default();
        let id = ChannelId::from("c");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (op, reply) = pending(counting(log, 2), caller(), None);
        batches.push(&id, op);
        let mut ops = batches.next(&id).expect("queued");
        ops[0].run(&mut State::default(), Moment::from_millis(0));
        let failure = ChannelError::Unavailable;
        ops.pop().expect("one").deliver(Some(&failure));
        assert_eq!(reply.await.expect("delivered"), Err(failure));
    }

    #[test]
    fn a_batch_holds_at_most_its_bound() {
        let batches = Batches::default();
        let id = ChannelId::from("c");
        for _ in 0..MAX_BATCH + 3 {
            let (op, _) = pending(|_: &mut State, _| Ok(()), caller(), None);
            batches.push(&id, op);
        }
        assert_eq!(batches.next(&id).map(|b| b.len()), Some(MAX_BATCH));
        assert_eq!(batches.next(&id).map(|b| b.len()), Some(3));
        assert!(batches.next(&id).is_none());
    }

    #[tokio::test]
    async fn a_task_gone_before_its_queue_emptied_takes_the_queue_with_it() {
        let batches = Batches::default();
        let id = ChannelId::from("c");
        let (op, reply) = pending(|_: &mut State, _| Ok(()), caller(), None);
        assert!(batches.push(&id, op), "the first starts a task");
        // The task is dropped (a cancelled task, a panic) with the operation still queued.
        drop(Running {
            batches: &batches,
            id: &id,
            finished: false,
        });
        assert!(reply.await.is_err(), "its caller is not left waiting");
        let (op, _) = pending(|_: &mut State, _| Ok(()), caller(), None);
        assert!(
            batches.push(&id, op),
            "the next operation starts a new task"
        );

        // A task that found its queue empty leaves a newer task's queue alone.
        assert!(batches.next(&id).is_some());
        assert!(batches.next(&id).is_none());
        let (op, _) = pending(|_: &mut State, _| Ok(()), caller(), None);
        assert!(batches.push(&id, op));
        drop(Running {
            batches: &batches,
            id: &id,
            finished: true,
        });
        assert!(!batches.push(&id, pending(|_: &mut State, _| Ok(()), caller(), None).0));
    }

    fn up(to: &str, seq: u64) -> TreeEvent {
        TreeEvent::Upstream {
            channel_id: ChannelId::from("c"),
            to: SocketId::named_by_client(to),
            peer: SocketId::named_by_client("feeder"),
            depth: 1,
            seq,
        }
    }

    /// A join's outcome, as far as the tree goes: its caller's node sends its own events.
    #[derive(Debug, Clone, PartialEq)]
    struct Joined(Vec<TreeEvent>);

    impl Settle for Joined {
        fn take_routed_tree(&mut self, caller: &SocketId) -> Vec<TreeEvent> {
            others(&mut self.0, caller)
        }

        fn carries_own_tree(&self) -> bool {
            true
        }

        fn surround_tree(
            &mut self,
            before: Vec<TreeEvent>,
            after: Vec<TreeEvent>,
        ) -> Vec<TreeEvent> {
            surround(&mut self.0, before, after);
            Vec::new()
        }
    }

    /// A batched operation of `who` whose rule gives `result` (or fails).
    fn batched<T: Settle + Clone + Send + 'static>(
        who: &str,
        result: Option<T>,
    ) -> (Box<dyn Pending>, oneshot::Receiver<Outcome<T>>) {
        let rule = move |_: &mut State, _| result.clone().ok_or(ChannelError::Unavailable);
        pending(rule, SocketId::named_by_client(who), None)
    }

    #[tokio::test]
    async fn a_batchs_tree_events_go_with_their_recipients_join_in_the_rules_order() {
        let (a, a_reply) = batched("a", Some(Joined(vec![up("a", 1), up("x", 2), up("b", 3)])));
        let (b, b_reply) = batched("b", Some(Joined(vec![up("b", 4), up("a", 5)])));
        let (c, _) = batched::<Joined>("c", None);
        // A report: every event it gives is the runner's, its reporter's own too.
        let (d, d_reply) = batched("d", Some(vec![up("c", 6), up("d", 7), up("a", 8)]));
        let mut ops = vec![a, b, c, d];
        let mut state = State::default();
        for op in &mut ops {
            op.run(&mut state, Moment::now());
        }
        // x is in no operation of the batch, c's join failed, d reported: the runner sends theirs.
        assert_eq!(route_tree(&mut ops), [up("x", 2), up("c", 6), up("d", 7)]);
        for op in ops {
            op.deliver(None);
        }
        // b's own after what the earlier rule gave it; a's own before what later ones did.
        let a_events = a_reply.await.unwrap().unwrap();
        assert_eq!(a_events, Joined(vec![up("a", 1), up("a", 5), up("a", 8)]));
        let b_events = b_reply.await.unwrap().unwrap();
        assert_eq!(b_events, Joined(vec![up("b", 3), up("b", 4)]));
        assert_eq!(d_reply.await.unwrap().unwrap(), []);
    }
}
