//! `tree N`: one broadcaster; N viewers join its relay tree (PROTOCOL.md, "Relay tree"), then
//! the depth-1 relay with the largest subtree leaves, a few times over. Protocol only, no media.
//!
//! Each viewer joins with `relay: true` and sends `relay_ready` as soon as it gets an
//! `upstream` (the stream "plays" at once), so it may feed others from then on; at most
//! `--concurrency` viewers are between connecting and their first `upstream` at a time, like a
//! crowd arriving. Assignment latency runs from `join_as_viewer` to that `upstream`, so viewers
//! that wait for a relay to become ready count with their wait.
//!
//! The tree is known three ways, which must agree: the server's `relay_tree` figures (viewers
//! per depth), the depth each viewer was told in its `upstream`, and the depths that follow from
//! the feeders the viewers were told. The figures are asked for afresh once the channel is quiet
//! (see [`fresh_figures`]); when the last `relay_tree` the broadcaster had received differs from
//! them, the server sent the figures out of order, and `relay_tree_stale` counts it.
//!
//! Re-parenting: the depth-1 relay with the largest subtree closes its socket; the clock runs
//! until each of its children has its new `upstream`, and every event any connection of the
//! channel receives from the close until nothing arrives for `--quiet-ms` is counted. Those
//! messages should grow with the departed relay's children, not with the channel.
//!
//! Churn (`--churn`, `--churn-top`): hours of an audience coming and going, compressed. A
//! random relay (a viewer that feeds somebody; every so often a depth-1 one) closes its socket
//! and a new viewer joins in its stead, one departure at a time with a quiet period after each.
//! The depth after each quiet period is compared with the full breadth-first tree's for the
//! channel's size at that moment, and each departure's `upstream` events (viewers moved) and
//! time to its children's new `upstream` are recorded.
//!
//! Several nodes of one cluster (`--nodes`): the broadcaster joins on the first node and the
//! viewers round-robin over all of them, as in `storm`. Nothing here reads a server's
//! `/healthz`: the channel's figures are the broadcaster's `relay_tree` events (whichever node
//! computed them, the broadcaster's node delivers them), the depths and feeders are what the
//! viewers were told on their own nodes, and CPU and memory are sums over `--pid`. With more
//! than one node the assignment latency is also split by the viewer's node (the broadcaster's,
//! or another), and `cross_node_feeds` counts viewers fed by a viewer (or the broadcaster) on
//! another node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::common::{self, Ctx};
use crate::probe;
use crate::report::{Errors, Latency, Report};
use crate::sio::{Conn, Frame, Target};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TreeArgs {
    /// Number of tree viewers.
    pub(crate) viewers: usize,
    /// Viewers between connecting and their first `upstream` at the same time.
    #[arg(long, default_value_t = 200)]
    pub(crate) concurrency: usize,
    /// Re-parent measurements: each one disconnects the depth-1 relay with the largest subtree.
    #[arg(long, default_value_t = 5)]
    pub(crate) reparents: usize,
    /// A phase is over once no connection has received an event for this long.
    #[arg(long, default_value_t = 500)]
    pub(crate) quiet_ms: u64,
    /// Give up joining after this long.
    #[arg(long, default_value_t = 180)]
    pub(crate) timeout_secs: u64,
    /// After the re-parent measurements: this many departures of random relays, each
    /// followed by a new viewer joining.
    #[arg(long, default_value_t = 0)]
    pub(crate) churn: usize,
    /// Departures of random depth-1 relays spread among the `--churn` ones (in addition).
    #[arg(long, default_value_t = 0)]
    pub(crate) churn_top: usize,
    /// Seed of the churn's choices (the same seed picks the same positions in the tree).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

/// The events counted apart; everything else is `other`.
const KINDS: [&str; 5] = [
    "upstream",
    "downstream_left",
    "relay_tree",
    "viewer_count",
    "other",
];

/// Every event any connection of the channel received, by kind, and when the latest arrived.
struct Traffic {
    base: Instant,
    counts: [AtomicU64; KINDS.len()],
    /// Nanoseconds from `base` to the latest event.
    last_ns: AtomicU64,
}

impl Traffic {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            counts: Default::default(),
            last_ns: AtomicU64::new(0),
        }
    }

    fn saw(&self, frame: &Frame) {
        let kind = KINDS
            .iter()
            .position(|k| *k == frame.name())
            .unwrap_or(KINDS.len() - 1);
        self.counts[kind].fetch_add(1, Ordering::Relaxed);
        let at = frame.at.saturating_duration_since(self.base).as_nanos() as u64;
        self.last_ns.fetch_max(at, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; KINDS.len()] {
        std::array::from_fn(|k| self.counts[k].load(Ordering::Relaxed))
    }

    /// How long no connection has received anything.
    fn quiet_for(&self) -> Duration {
        let last = self.base + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed));
        last.elapsed()
    }
}

/// The broadcaster's latest `relay_tree` figures.
#[derive(Debug, Clone, Default, PartialEq)]
struct Figures {
    direct: usize,
    relayed: usize,
    waiting: usize,
    /// Index 0 = depth 1 (fed by the broadcaster).
    depths: Vec<usize>,
}

impl Figures {
    fn parse(payload: &Value) -> Option<Self> {
        let count = |k: &str| payload[k].as_u64().map(|v| v as usize);
        Some(Self {
            direct: count("direct")?,
            relayed: count("relayed")?,
            waiting: count("waiting")?,
            depths: payload["depths"]
                .as_array()?
                .iter()
                .map(|v| v.as_u64().map(|v| v as usize))
                .collect::<Option<_>>()?,
        })
    }
}

/// What the broadcaster heard about its tree.
#[derive(Default)]
struct Heard {
    latest: Mutex<Option<Figures>>,
    /// How many `relay_tree` events arrived.
    received: AtomicU64,
    /// The most viewers waiting for a feeder in any `relay_tree` so far.
    waiting_max: AtomicU64,
}

/// Drains the broadcaster's events (`viewer_count` and `relay_tree` on every join), keeping
/// the latest `relay_tree`, until `stop`.
async fn broadcaster(
    mut conn: Conn,
    traffic: Arc<Traffic>,
    heard: Arc<Heard>,
    errors: Arc<Errors>,
    mut stop: oneshot::Receiver<()>,
) -> Conn {
    loop {
        let frame = tokio::select! {
            frame = conn.recv() => frame,
            _ = &mut stop => break,
        };
        let Some(frame) = frame else {
            errors.add("the broadcaster was disconnected");
            break;
        };
        traffic.saw(&frame);
        match frame.name() {
            "relay_tree" => match Figures::parse(&frame.payload()) {
                Some(figures) => {
                    heard
                        .waiting_max
                        .fetch_max(figures.waiting as u64, Ordering::Relaxed);
                    *heard.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(figures);
                    heard.received.fetch_add(1, Ordering::Release);
                }
                None => errors.add(format!("malformed relay_tree: {}", frame.describe())),
            },
            "error" | "relay_error" => errors.add(format!("broadcaster got {}", frame.describe())),
            _ => {}
        }
    }
    conn
}

/// What viewer tasks tell the scenario.
enum Update {
    Connected {
        viewer: usize,
        sid: String,
        /// The node it is connected to.
        node: usize,
    },
    Upstream {
        viewer: usize,
        peer: String,
        depth: usize,
        at: Instant,
        /// Set on the viewer's first `upstream`: time since its `join_as_viewer`.
        assigned_after: Option<Duration>,
    },
    /// Never connected, or no `upstream` within the time limit.
    Failed,
    /// The server closed the connection.
    Gone { viewer: usize },
}

/// What every viewer task shares.
struct Shared {
    target: Arc<Target>,
    channel: String,
    updates: mpsc::UnboundedSender<Update>,
    traffic: Arc<Traffic>,
    errors: Arc<Errors>,
    /// Set when the scenario closes everything: the channel's end is not an error then.
    ending: AtomicBool,
    join_deadline: Instant,
    /// `upstream` events that arrived after a newer one of the same viewer (a lower `seq`):
    /// ignored, as the served page ignores them (EXTENSIONS.md, `upstream.seq`).
    stale_upstreams: AtomicU64,
}

/// One tree viewer: join, `relay_ready` after every `upstream`, count every event, until
/// `close` fires (or its sender is dropped); dropping the connection closes the socket. Its
/// first `upstream` must arrive by `deadline`.
async fn viewer(
    shared: Arc<Shared>,
    viewer: usize,
    permit: OwnedSemaphorePermit,
    mut close: oneshot::Receiver<()>,
    deadline: Instant,
) {
    let mut permit = Some(permit);
    // The `seq` of the latest `upstream` acted on.
    let mut last_seq: Option<u64> = None;
    let mut conn = match Conn::connect(&shared.target, viewer + 1, deadline).await {
        Ok(conn) => conn,
        Err(e) => {
            shared.errors.add(e);
            let _ = shared.updates.send(Update::Failed);
            return;
        }
    };
    let _ = shared.updates.send(Update::Connected {
        viewer,
        sid: conn.sid.clone(),
        node: conn.node,
    });
    let ready = json!({ "channel_id": shared.channel });
    let sent = Instant::now();
    conn.emit(
        "join_as_viewer",
        &json!({ "channel_id": shared.channel, "relay": true }),
    );
    let join_deadline = tokio::time::Instant::from_std(deadline);
    loop {
        tokio::select! {
            frame = conn.recv() => {
                let Some(frame) = frame else {
                    if !shared.ending.load(Ordering::Relaxed) {
                        shared.errors.add("a viewer was disconnected by the server");
                    }
                    let _ = shared.updates.send(Update::Gone { viewer });
                    return;
                };
                shared.traffic.saw(&frame);
                match frame.name() {
                    "upstream" => {
                        let payload = frame.payload();
                        let (Some(peer), Some(depth)) =
                            (payload["peer_id"].as_str(), payload["depth"].as_u64())
                        else {
                            shared.errors.add(format!("malformed upstream: {}", frame.describe()));
                            continue;
                        };
                        // Moves of one viewer may arrive out of order when nodes emit them;
                        // `seq` says which is the latest (an older server sends none).
                        if let Some(seq) = payload["seq"].as_u64() {
                            if last_seq.is_some_and(|last| seq <= last) {
                                shared.stale_upstreams.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            last_seq = Some(seq);
                        }
                        // The stream plays at once: this viewer may feed others.
                        conn.emit("relay_ready", &ready);
                        let assigned_after = permit.take().map(|p| {
                            drop(p);
                            frame.at.saturating_duration_since(sent)
                        });
                        let _ = shared.updates.send(Update::Upstream {
                            viewer,
                            peer: peer.to_owned(),
                            depth: depth as usize,
                            at: frame.at,
                            assigned_after,
                        });
                    }
                    "error" | "relay_error" | "broadcaster_disconnected" | "broadcaster_stopped"
                        if !shared.ending.load(Ordering::Relaxed) =>
                    {
                        shared.errors.add(format!("viewer got {}", frame.describe()));
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(join_deadline), if permit.is_some() => {
                shared.errors.add("timed out waiting for upstream");
                permit = None;
                let _ = shared.updates.send(Update::Failed);
            }
            _ = &mut close => return,
        }
    }
}

/// One viewer as the scenario knows it from its updates.
#[derive(Default)]
struct Member {
    sid: Option<String>,
    /// The node it is connected to.
    node: usize,
    /// Socket id of its feeder, from its latest `upstream`.
    parent: Option<String>,
    told_depth: Option<usize>,
    upstream_at: Option<Instant>,
    /// When it was told of a new feeder after its first one: the moves it had to make.
    moved_at: Vec<Instant>,
    /// Those of them the tree's rules chose (its feeder was still there: it was a spare that
    /// moved up, or it was placed better), not forced by its feeder's departure.
    chosen_at: Vec<Instant>,
    gone: bool,
}

/// The scenario's view of the audience, kept up to date from the viewers' updates.
struct Audience {
    updates: mpsc::UnboundedReceiver<Update>,
    broadcaster: String,
    /// The node the broadcaster is connected to.
    broadcaster_node: usize,
    members: Vec<Member>,
    by_sid: HashMap<String, usize>,
    joined: usize,
    failed: usize,
    assigned: Latency,
    /// The assignment latency of viewers on the broadcaster's node, and on another node.
    assigned_same_node: Latency,
    assigned_cross_node: Latency,
    last_assigned: Option<Instant>,
}

/// How often waiting loops look at the clock when no update arrives.
const TICK: Duration = Duration::from_millis(5);

impl Audience {
    fn new(
        updates: mpsc::UnboundedReceiver<Update>,
        broadcaster: String,
        broadcaster_node: usize,
        n: usize,
    ) -> Self {
        Self {
            updates,
            broadcaster,
            broadcaster_node,
            members: (0..n).map(|_| Member::default()).collect(),
            by_sid: HashMap::with_capacity(n),
            joined: 0,
            failed: 0,
            assigned: Latency::default(),
            assigned_same_node: Latency::default(),
            assigned_cross_node: Latency::default(),
            last_assigned: None,
        }
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Connected { viewer, sid, node } => {
                self.by_sid.insert(sid.clone(), viewer);
                self.members[viewer].sid = Some(sid);
                self.members[viewer].node = node;
            }
            Update::Upstream {
                viewer,
                peer,
                depth,
                at,
                assigned_after,
            } => {
                let feeder_left = self.members[viewer]
                    .parent
                    .as_ref()
                    .and_then(|p| self.by_sid.get(p))
                    .is_some_and(|&f| self.members[f].gone);
                let m = &mut self.members[viewer];
                if m.parent.is_some() {
                    m.moved_at.push(at);
                    if !feeder_left {
                        m.chosen_at.push(at);
                    }
                }
                m.parent = Some(peer);
                m.told_depth = Some(depth);
                m.upstream_at = Some(at);
                if let Some(after) = assigned_after {
                    self.joined += 1;
                    self.assigned.record(after);
                    if m.node == self.broadcaster_node {
                        self.assigned_same_node.record(after);
                    } else {
                        self.assigned_cross_node.record(after);
                    }
                    self.last_assigned = Some(self.last_assigned.map_or(at, |l| l.max(at)));
                }
            }
            Update::Failed => self.failed += 1,
            Update::Gone { viewer } => self.members[viewer].gone = true,
        }
    }

    /// Applies updates until `done` holds (true) or `deadline` passes (false).
    async fn follow(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                update = self.updates.recv() => match update {
                    Some(update) => self.apply(update),
                    None => tokio::time::sleep(TICK).await,
                },
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Applies updates until no connection has received anything for `quiet`.
    async fn settle(&mut self, traffic: &Traffic, quiet: Duration, deadline: Instant) -> bool {
        self.follow(deadline, |_| traffic.quiet_for() >= quiet)
            .await
    }

    fn present(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.sid.is_some() && !m.gone)
    }

    /// Each feeder's children (present viewers), by the feeder's socket id.
    fn children(&self) -> HashMap<&str, Vec<usize>> {
        let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, m) in self.present() {
            if let Some(parent) = &m.parent {
                children.entry(parent.as_str()).or_default().push(i);
            }
        }
        children
    }

    /// Viewers per depth as the feeders say (walking down from the broadcaster), and how many
    /// present viewers that walk does not reach.
    fn depths_from_parents(&self) -> (Vec<usize>, usize) {
        let children = self.children();
        let mut counts = Vec::new();
        let mut reached = 0;
        let mut level: Vec<usize> = children
            .get(self.broadcaster.as_str())
            .cloned()
            .unwrap_or_default();
        while !level.is_empty() {
            counts.push(level.len());
            reached += level.len();
            level = level
                .iter()
                .filter_map(|&v| self.members[v].sid.as_deref())
                .filter_map(|sid| children.get(sid))
                .flatten()
                .copied()
                .collect();
        }
        (counts, self.present().count() - reached)
    }

    /// Viewers per depth as each was told in its latest `upstream`.
    fn told_depths(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for (_, m) in self.present() {
            if let Some(d) = m.told_depth.filter(|d| *d > 0) {
                if counts.len() < d {
                    counts.resize(d, 0);
                }
                counts[d - 1] += 1;
            }
        }
        counts
    }

    /// Present viewers with a feeder, and how many of them it feeds from another node than
    /// theirs (the broadcaster's node for the broadcaster; a feeder not known is not counted).
    fn cross_node_feeds(&self) -> (usize, usize) {
        let mut fed = 0;
        let mut cross = 0;
        for (_, m) in self.present() {
            let Some(parent) = m.parent.as_deref() else {
                continue;
            };
            let feeder_node = if parent == self.broadcaster {
                Some(self.broadcaster_node)
            } else {
                self.by_sid.get(parent).map(|&f| self.members[f].node)
            };
            fed += 1;
            cross += usize::from(feeder_node.is_some_and(|n| n != m.node));
        }
        (fed, cross)
    }

    /// The most children any viewer feeds.
    fn max_fanout(&self) -> usize {
        let children = self.children();
        children
            .iter()
            .filter(|(feeder, _)| **feeder != self.broadcaster)
            .map(|(_, c)| c.len())
            .max()
            .unwrap_or(0)
    }

    /// The depth-1 viewer with the most viewers below it: (viewer, its children, subtree size
    /// without itself). `None` when no depth-1 viewer feeds anybody.
    fn largest_depth1_relay(&self) -> Option<(usize, Vec<usize>, usize)> {
        let children = self.children();
        let below = |root: usize| {
            let mut count = 0;
            let mut stack = vec![root];
            while let Some(v) = stack.pop() {
                if let Some(c) = self.members[v].sid.as_deref().and_then(|s| children.get(s)) {
                    count += c.len();
                    stack.extend(c);
                }
            }
            count
        };
        children
            .get(self.broadcaster.as_str())?
            .iter()
            .map(|&v| (v, below(v)))
            .filter(|(_, size)| *size > 0)
            .max_by_key(|(_, size)| *size)
            .map(|(v, size)| {
                let sid = self.members[v].sid.as_deref().unwrap_or_default();
                (v, children.get(sid).cloned().unwrap_or_default(), size)
            })
    }
}

/// Depth of a full breadth-first tree of `n` viewers: depth d holds D·F^(d−1).
fn full_tree_depth(n: usize, direct: usize, fanout: usize) -> Option<usize> {
    if n == 0 || direct == 0 {
        return None;
    }
    let (mut depth, mut capacity, mut level) = (0, 0usize, direct);
    while capacity < n {
        depth += 1;
        capacity = capacity.saturating_add(level);
        if fanout == 0 && capacity < n {
            return None;
        }
        level = level.saturating_mul(fanout);
    }
    Some(depth)
}

impl Heard {
    fn latest(&self) -> Option<Figures> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `count` `relay_tree` events have arrived (false: `deadline` passed first).
    async fn wait_received(&self, count: u64, deadline: Instant) -> bool {
        while self.received.load(Ordering::Acquire) < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(TICK).await;
        }
        true
    }
}

/// The server's figures as they are now, once the channel is quiet, and the last `relay_tree`
/// the broadcaster had received before when it differed from them (a stale display).
///
/// There is no request for the figures, so a legacy viewer joins and leaves: each change sends
/// the broadcaster a fresh `relay_tree`. The probe leaves only once the first has arrived, so
/// the second is computed and sent after everything else and describes the tree as it is.
async fn fresh_figures(
    shared: &Shared,
    heard: &Heard,
    quiet: Duration,
) -> Result<(Figures, Option<Option<Figures>>), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pushed = heard.latest();
    let seen = heard.received.load(Ordering::Acquire);
    let mut probe = Conn::connect(&shared.target, 0, deadline).await?;
    probe.emit("join_as_viewer", &json!({ "channel_id": shared.channel }));
    probe.expect("broadcaster_available", deadline).await?;
    if !heard.wait_received(seen + 1, deadline).await {
        return Err("no relay_tree after a legacy viewer joined".into());
    }
    drop(probe);
    if !heard.wait_received(seen + 2, deadline).await {
        return Err("no relay_tree after a legacy viewer left".into());
    }
    while shared.traffic.quiet_for() < quiet && Instant::now() < deadline {
        tokio::time::sleep(TICK).await;
    }
    let fresh = heard.latest().ok_or("no relay_tree")?;
    let stale = (pushed.as_ref() != Some(&fresh)).then_some(pushed);
    Ok((fresh, stale))
}

/// One re-parenting: the departed relay, and what it cost.
struct Reparent {
    channel: usize,
    children: usize,
    subtree: usize,
    /// From closing the relay to the last orphan's new `upstream`.
    time: Option<Duration>,
    events: [u64; KINDS.len()],
    max_depth: usize,
    /// The broadcaster's last `relay_tree` afterwards did not describe the tree.
    stale: bool,
}

/// Closes the depth-1 relay with the largest subtree and measures the re-parenting.
async fn reparent(
    audience: &mut Audience,
    closers: &mut [Option<oneshot::Sender<()>>],
    shared: &Shared,
    heard: &Heard,
    quiet: Duration,
    errors: &Errors,
) -> Option<Reparent> {
    let traffic = &*shared.traffic;
    let limit = Instant::now() + Duration::from_secs(30);
    if !audience.settle(traffic, quiet, limit).await {
        errors.add("the channel never went quiet before re-parenting");
    }
    let (victim, orphans, subtree) = audience.largest_depth1_relay()?;
    let channel = audience.present().count();
    let before = traffic.snapshot();
    let closed = Instant::now();
    // Dropping the sender closes the socket just as sending would.
    closers[victim].take();
    audience.members[victim].gone = true;
    let deadline = closed + Duration::from_secs(30);
    let moved = |a: &Audience| {
        orphans
            .iter()
            .all(|&o| a.members[o].upstream_at.is_some_and(|at| at > closed))
    };
    let all_moved = audience.follow(deadline, moved).await;
    let time = all_moved.then(|| {
        orphans
            .iter()
            .filter_map(|&o| audience.members[o].upstream_at)
            .max()
            .map_or(Duration::ZERO, |at| at.duration_since(closed))
    });
    if !all_moved {
        errors.add(format!(
            "not every orphan got a new upstream within 30 s ({} children)",
            orphans.len()
        ));
    }
    if !audience.settle(traffic, quiet, deadline).await {
        errors.add("the channel never went quiet after re-parenting");
    }
    let after = traffic.snapshot();
    let events = std::array::from_fn(|k| after[k] - before[k]);
    // The server's figures must match the feeders the viewers were given.
    let (from_parents, unreached) = audience.depths_from_parents();
    let mut stale = false;
    match fresh_figures(shared, heard, quiet).await {
        Ok((fresh, was_stale)) => {
            stale = was_stale.is_some();
            if fresh.depths != from_parents || unreached != 0 {
                errors.add(format!(
                    "after re-parenting, relay_tree depths {:?} but the upstreams give {from_parents:?} ({unreached} unreached)",
                    fresh.depths
                ));
            }
        }
        Err(e) => errors.add(e),
    }
    Some(Reparent {
        channel,
        children: orphans.len(),
        subtree,
        time,
        events,
        max_depth: from_parents.len(),
        stale,
    })
}

/// A small deterministic generator (splitmix64): the churn's choices, the same for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One churn departure and the quiet period after it.
struct Departure {
    /// A depth-1 relay (else any relay).
    top: bool,
    children: usize,
    /// `upstream` events from the close until the channel was quiet: viewers moved.
    moves: u64,
    /// From the close to the last of its children's new `upstream`.
    time: Option<Duration>,
    /// Depth afterwards (from the feeders the viewers were told), and the full breadth-first
    /// tree's for the channel's size then.
    depth: usize,
    optimal: Option<usize>,
}

/// What the churn needs of the running scenario.
struct Churning<'a> {
    shared: &'a Arc<Shared>,
    closers: &'a mut Vec<Option<oneshot::Sender<()>>>,
    tasks: &'a mut JoinSet<()>,
    quiet: Duration,
    /// D and F as observed after the joins.
    direct: Option<usize>,
    fanout: usize,
}

impl Audience {
    /// Present viewers that feed somebody: at depth 1 only (`top`), or anywhere.
    fn relays(&self, top: bool) -> Vec<(usize, Vec<usize>)> {
        let children = self.children();
        let feeds = |v: usize| {
            self.members[v]
                .sid
                .as_deref()
                .and_then(|sid| children.get(sid))
                .filter(|c| !c.is_empty())
                .map(|c| (v, c.clone()))
        };
        if top {
            children
                .get(self.broadcaster.as_str())
                .into_iter()
                .flatten()
                .filter_map(|&v| feeds(v))
                .collect()
        } else {
            self.present().filter_map(|(v, _)| feeds(v)).collect()
        }
    }
}

/// One departure of a random relay, then a newcomer in its stead; `None` when no relay is left.
async fn depart_and_rejoin(
    audience: &mut Audience,
    churning: &mut Churning<'_>,
    rng: &mut Rng,
    top: bool,
    errors: &Errors,
) -> Option<Departure> {
    let traffic = &*churning.shared.traffic;
    let relays = audience.relays(top);
    if relays.is_empty() {
        return None;
    }
    let (victim, orphans) = relays[rng.below(relays.len())].clone();
    let before = traffic.snapshot();
    let closed = Instant::now();
    churning.closers[victim].take();
    audience.members[victim].gone = true;
    let deadline = closed + Duration::from_secs(30);
    let moved = |a: &Audience| {
        orphans
            .iter()
            .all(|&o| a.members[o].upstream_at.is_some_and(|at| at > closed))
    };
    let all_moved = audience.follow(deadline, moved).await;
    let time = all_moved.then(|| {
        orphans
            .iter()
            .filter_map(|&o| audience.members[o].upstream_at)
            .max()
            .map_or(Duration::ZERO, |at| at.duration_since(closed))
    });
    if !all_moved {
        errors.add("churn: not every child of a departed relay got a new upstream within 30 s");
    }
    if !audience.settle(traffic, churning.quiet, deadline).await {
        errors.add("churn: the channel never went quiet after a departure");
    }
    let moves = traffic.snapshot()[0] - before[0];
    let (depths, unreached) = audience.depths_from_parents();
    if unreached != 0 {
        errors.add(format!(
            "churn: {unreached} viewers not reached from the broadcaster"
        ));
    }
    let present = audience.present().count();
    let departure = Departure {
        top,
        children: orphans.len(),
        moves,
        time,
        depth: depths.len(),
        optimal: churning
            .direct
            .and_then(|d| full_tree_depth(present, d, churning.fanout)),
    };

    // A newcomer, so that the channel keeps its size.
    let newcomer = audience.members.len();
    audience.members.push(Member::default());
    let (close, close_rx) = oneshot::channel();
    churning.closers.push(Some(close));
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.ok()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    churning.tasks.spawn(viewer(
        churning.shared.clone(),
        newcomer,
        permit,
        close_rx,
        deadline,
    ));
    let failed = audience.failed;
    audience
        .follow(deadline, |a| {
            a.members[newcomer].upstream_at.is_some() || a.failed > failed
        })
        .await;
    if !audience.settle(traffic, churning.quiet, deadline).await {
        errors.add("churn: the channel never went quiet after a newcomer joined");
    }
    Some(departure)
}

/// The most of these moments (in order) that fall within any one `window`.
fn most_within(moments: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, at) in moments.iter().enumerate() {
        while at.duration_since(moments[first]) > window {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}

fn quantile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(at).copied()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

pub(crate) async fn run(ctx: &Ctx, args: &TreeArgs) -> Report {
    let mut report = Report::new("tree", &ctx.label);
    report.param("viewers", args.viewers);
    report.param("concurrency", args.concurrency);
    report.param("reparents", args.reparents);
    report.param("churn", args.churn);
    report.param("churn_top", args.churn_top);
    report.param("seed", args.seed);
    let errors = Arc::new(Errors::default());
    if let Some(limit) = probe::open_files_limit()
        && args.viewers as u64 + 64 > limit
    {
        report.fail(format!(
            "{} viewers need more open files than this process may have ({limit}); raise `ulimit -n`",
            args.viewers
        ));
        return report;
    }
    let quiet = Duration::from_millis(args.quiet_ms);
    let join_deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let channel = common::channel_name("tree");
    let conn = match common::broadcaster(ctx, &channel, join_deadline).await {
        Ok(conn) => conn,
        Err(e) => {
            report.fail(format!("broadcaster: {e}"));
            return report;
        }
    };
    let traffic = Arc::new(Traffic::new());
    let heard = Arc::new(Heard::default());
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let mut audience = Audience::new(updates, conn.sid.clone(), conn.node, args.viewers);
    let (stop_broadcaster, stop_rx) = oneshot::channel();
    let listening = tokio::spawn(broadcaster(
        conn,
        traffic.clone(),
        heard.clone(),
        errors.clone(),
        stop_rx,
    ));
    let shared = Arc::new(Shared {
        target: ctx.target.clone(),
        channel,
        updates: updates_tx,
        traffic: traffic.clone(),
        errors: errors.clone(),
        ending: AtomicBool::new(false),
        join_deadline,
        stale_upstreams: AtomicU64::new(0),
    });

    // The crowd: a viewer holds its permit from connecting until its first upstream.
    let cpu_before = ctx.cpu_secs();
    let own_before = ctx.own_cpu_secs();
    let drops_before = probe::listen_drops();
    let start = Instant::now();
    let arrivals = {
        let shared = shared.clone();
        let n = args.viewers;
        let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
        tokio::spawn(async move {
            let mut closers = Vec::with_capacity(n);
            let mut tasks = JoinSet::new();
            for i in 0..n {
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let (close, close_rx) = oneshot::channel();
                closers.push(Some(close));
                let deadline = shared.join_deadline;
                tasks.spawn(viewer(shared.clone(), i, permit, close_rx, deadline));
            }
            (closers, tasks)
        })
    };
    let n = args.viewers;
    audience
        .follow(join_deadline, |a| a.joined + a.failed >= n)
        .await;
    let join_wall = audience
        .last_assigned
        .map(|at| at.duration_since(start).as_secs_f64());
    let cpu_after = ctx.cpu_secs();
    let own_after = ctx.own_cpu_secs();
    let drops = drops_before
        .zip(probe::listen_drops())
        .map(|(a, b)| (b - a) as f64);
    let rss = ctx.rss_kib();
    let (mut closers, mut tasks) = match arrivals.await {
        Ok(spawned) => spawned,
        Err(e) => {
            report.fail(format!("task: {e}"));
            return report;
        }
    };
    if !audience
        .settle(&traffic, quiet, Instant::now() + Duration::from_secs(30))
        .await
    {
        errors.add("the channel never went quiet after the joins");
    }

    // The tree three ways: the server's figures, the depths told, the feeders told.
    let mut stale = 0;
    let joined_figures = match fresh_figures(&shared, &heard, quiet).await {
        Ok((fresh, was_stale)) => {
            if let Some(pushed) = was_stale {
                stale += 1;
                report.note(format!(
                    "after the joins, the broadcaster's last relay_tree was stale: depths {:?}, the tree's: {:?}",
                    pushed.map(|f| f.depths),
                    fresh.depths
                ));
            }
            Some(fresh)
        }
        Err(e) => {
            errors.add(e);
            None
        }
    };
    let told = audience.told_depths();
    let (from_parents, unreached) = audience.depths_from_parents();
    let server_depths = joined_figures
        .as_ref()
        .map(|f| f.depths.clone())
        .unwrap_or_default();
    if server_depths != told || server_depths != from_parents || unreached != 0 {
        errors.add(format!(
            "relay_tree depths {server_depths:?}, depths told {told:?}, depths from the feeders {from_parents:?} ({unreached} unreached)"
        ));
    }
    let direct = joined_figures.as_ref().map(|f| f.direct);
    let fanout = audience.max_fanout();
    report.note(format!(
        "viewers per depth (relay_tree, from depth 1): {server_depths:?}; told in upstream: {told:?}; from the feeders: {from_parents:?}"
    ));

    report.figure("viewers", n as f64);
    report.figure("joined", audience.joined as f64);
    report.figure("join_wall_s", join_wall);
    report.figure(
        "joins_per_s",
        join_wall.map(|w| audience.joined as f64 / w.max(1e-9)),
    );
    report.figure("assign_p50_ms", audience.assigned.ms(0.50));
    report.figure("assign_p99_ms", audience.assigned.ms(0.99));
    report.figure("assign_max_ms", audience.assigned.max_ms());
    if ctx.target.node_count() > 1 {
        report.figure(
            "assign_same_node_p50_ms",
            audience.assigned_same_node.ms(0.50),
        );
        report.figure(
            "assign_same_node_p99_ms",
            audience.assigned_same_node.ms(0.99),
        );
        report.figure(
            "assign_cross_node_p50_ms",
            audience.assigned_cross_node.ms(0.50),
        );
        report.figure(
            "assign_cross_node_p99_ms",
            audience.assigned_cross_node.ms(0.99),
        );
        let (fed, cross) = audience.cross_node_feeds();
        report.figure("cross_node_feeds", cross as f64);
        report.note(format!(
            "{cross} of {fed} viewers are fed from another node than theirs ({} nodes)",
            ctx.target.node_count()
        ));
    }
    report.figure(
        "waiting_max",
        heard.waiting_max.load(Ordering::Relaxed) as f64,
    );
    report.figure("direct", direct.map(|d| d as f64));
    report.figure("relayed", joined_figures.as_ref().map(|f| f.relayed as f64));
    report.figure("max_fanout", fanout as f64);
    report.figure("max_depth", server_depths.len() as f64);
    report.figure(
        "full_tree_depth",
        direct
            .and_then(|d| full_tree_depth(audience.joined, d, fanout))
            .map(|d| d as f64),
    );
    for (d, count) in server_depths.iter().enumerate() {
        report.figure(&format!("depth_{}", d + 1), *count as f64);
    }
    report.figure(
        "join_server_cpu_s",
        cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    );
    report.figure(
        "join_bench_cpu_s",
        own_before.zip(own_after).map(|(a, b)| b - a),
    );
    report.figure("server_rss_kib", rss);
    report.figure("listen_drops", drops);

    // Re-parenting, a few times: the tree changes after each, so each picks afresh.
    let mut runs = Vec::new();
    if audience.joined == n {
        for run in 1..=args.reparents {
            let Some(r) =
                reparent(&mut audience, &mut closers, &shared, &heard, quiet, &errors).await
            else {
                report.note("no depth-1 relay feeds anybody: nothing to re-parent");
                break;
            };
            let breakdown: Vec<String> = KINDS
                .iter()
                .zip(r.events)
                .filter(|(_, c)| *c > 0)
                .map(|(k, c)| format!("{k} {c}"))
                .collect();
            report.note(format!(
                "re-parent {run}: a depth-1 relay left (children: {}, viewers below it: {}, channel: {} viewers); last new upstream after {} ms; {} events ({}); max depth after: {}{}",
                r.children,
                r.subtree,
                r.channel,
                r.time
                    .map_or("-".into(), |t| format!("{:.3}", t.as_secs_f64() * 1e3)),
                r.events.iter().sum::<u64>(),
                breakdown.join(", "),
                r.max_depth,
                if r.stale {
                    "; the broadcaster's last relay_tree was stale"
                } else {
                    ""
                },
            ));
            stale += usize::from(r.stale);
            runs.push(r);
        }
    } else {
        report.note("not every viewer joined: re-parenting skipped");
    }
    let times: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.time.map(|t| t.as_secs_f64() * 1e3))
        .collect();
    let events: Vec<f64> = runs
        .iter()
        .map(|r| r.events.iter().sum::<u64>() as f64)
        .collect();
    report.figure("reparent_runs", runs.len() as f64);
    report.figure(
        "reparent_children",
        median(runs.iter().map(|r| r.children as f64).collect()),
    );
    report.figure(
        "reparent_subtree",
        median(runs.iter().map(|r| r.subtree as f64).collect()),
    );
    report.figure(
        "reparent_channel",
        median(runs.iter().map(|r| r.channel as f64).collect()),
    );
    report.figure("reparent_ms_median", median(times.clone()));
    report.figure("reparent_ms_max", times.iter().copied().reduce(f64::max));
    report.figure("reparent_events_median", median(events.clone()));
    report.figure(
        "reparent_events_max",
        events.iter().copied().reduce(f64::max),
    );
    // Events beyond one `upstream` per orphan: constant if the cost follows the children.
    report.figure(
        "reparent_events_over_children_max",
        runs.iter()
            .map(|r| r.events.iter().sum::<u64>() as f64 - r.children as f64)
            .reduce(f64::max),
    );
    report.figure(
        "max_depth_after_reparents",
        runs.last().map(|r| r.max_depth as f64),
    );

    // Churn: random relays leave and newcomers take their number, one at a time.
    let total = args.churn + args.churn_top;
    if audience.joined >= n && total > 0 {
        let mut rng = Rng(args.seed);
        let mut churning = Churning {
            shared: &shared,
            closers: &mut closers,
            tasks: &mut tasks,
            quiet,
            direct,
            fanout,
        };
        let started = Instant::now();
        let mut departures = Vec::with_capacity(total);
        for k in 0..total {
            // The depth-1 departures spread evenly among the others.
            let top = (k + 1) * args.churn_top / total > k * args.churn_top / total;
            let Some(d) =
                depart_and_rejoin(&mut audience, &mut churning, &mut rng, top, &errors).await
            else {
                report.note(format!("churn {}: no relay left to depart", k + 1));
                break;
            };
            if (k + 1) % 50 == 0 || k == 0 || top && k < 20 {
                report.note(format!(
                    "churn {}: {} relay left ({} children); {} viewers moved; children's last upstream after {} ms; depth {} (optimal {})",
                    k + 1,
                    if d.top { "a depth-1" } else { "a" },
                    d.children,
                    d.moves,
                    d.time
                        .map_or("-".into(), |t| format!("{:.3}", t.as_secs_f64() * 1e3)),
                    d.depth,
                    d.optimal.map_or("-".into(), |o| o.to_string()),
                ));
            }
            departures.push(d);
        }
        let wall = started.elapsed().as_secs_f64();
        let of = |top: Option<bool>| {
            departures
                .iter()
                .filter(move |d| top.is_none_or(|t| d.top == t))
        };
        let moves = |top| of(top).map(|d| d.moves as f64).collect::<Vec<_>>();
        let times = |top| {
            of(top)
                .filter_map(|d| d.time.map(|t| t.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
        };
        let over: Vec<f64> = departures
            .iter()
            .filter_map(|d| d.optimal.map(|o| d.depth as f64 - o as f64))
            .collect();
        report.figure("churn_departures", departures.len() as f64);
        report.figure("churn_top_departures", of(Some(true)).count() as f64);
        report.figure("churn_wall_s", wall);
        for (name, top) in [("churn", None), ("churn_top", Some(true))] {
            report.figure(&format!("{name}_moves_p50"), quantile(moves(top), 0.5));
            report.figure(
                &format!("{name}_moves_max"),
                moves(top).into_iter().reduce(f64::max),
            );
            report.figure(
                &format!("{name}_reparent_ms_p50"),
                quantile(times(top), 0.5),
            );
            report.figure(
                &format!("{name}_reparent_ms_max"),
                times(top).into_iter().reduce(f64::max),
            );
        }
        report.figure(
            "churn_moves_total",
            departures.iter().map(|d| d.moves as f64).sum::<f64>(),
        );
        // Nobody moved over and over: per viewer, its moves during the churn, and the most in
        // any one minute of it.
        let moves_of: Vec<Vec<Instant>> = audience
            .members
            .iter()
            .map(|m| {
                m.moved_at
                    .iter()
                    .copied()
                    .filter(|at| *at >= started)
                    .collect()
            })
            .collect();
        let chosen_of: Vec<Vec<Instant>> = audience
            .members
            .iter()
            .map(|m| {
                m.chosen_at
                    .iter()
                    .copied()
                    .filter(|at| *at >= started)
                    .collect()
            })
            .collect();
        report.figure(
            "churn_chosen_moves_of_one_viewer_max",
            chosen_of.iter().map(|m| m.len() as f64).reduce(f64::max),
        );
        report.figure(
            "churn_chosen_moves_of_one_viewer_per_minute_max",
            chosen_of
                .iter()
                .map(|m| most_within(m, Duration::from_secs(60)) as f64)
                .reduce(f64::max),
        );
        report.figure(
            "churn_viewers_moved_per_minute",
            Some(moves_of.iter().map(Vec::len).sum::<usize>() as f64 / (wall / 60.0).max(1e-9)),
        );
        report.figure(
            "churn_moves_of_one_viewer_max",
            moves_of.iter().map(|m| m.len() as f64).reduce(f64::max),
        );
        report.figure(
            "churn_moves_of_one_viewer_per_minute_max",
            moves_of
                .iter()
                .map(|m| most_within(m, Duration::from_secs(60)) as f64)
                .reduce(f64::max),
        );
        report.figure(
            "churn_depth_max",
            departures.iter().map(|d| d.depth as f64).reduce(f64::max),
        );
        report.figure(
            "churn_depth_final",
            departures.last().map(|d| d.depth as f64),
        );
        report.figure(
            "churn_optimal_final",
            departures.last().and_then(|d| d.optimal).map(|o| o as f64),
        );
        report.figure(
            "churn_over_optimal_max",
            over.iter().copied().reduce(f64::max),
        );
        report.figure(
            "churn_periods_over_optimal_plus_1",
            over.iter().filter(|o| **o > 1.0).count() as f64,
        );
        // The tree three ways, once more at the end.
        let (from_parents, unreached) = audience.depths_from_parents();
        match fresh_figures(&shared, &heard, quiet).await {
            Ok((fresh, was_stale)) => {
                stale += usize::from(was_stale.is_some());
                if fresh.depths != from_parents || unreached != 0 {
                    errors.add(format!(
                        "after the churn, relay_tree depths {:?} but the upstreams give {from_parents:?} ({unreached} unreached)",
                        fresh.depths
                    ));
                }
                report.note(format!(
                    "viewers per depth after the churn: {:?}",
                    fresh.depths
                ));
            }
            Err(e) => errors.add(e),
        }
    }
    // Not an error of the generator's making: the server sent an older `relay_tree` after a
    // newer one (two handlers emitting in the other order than they computed).
    report.figure("relay_tree_stale", stale as f64);
    report.figure(
        "upstream_stale",
        shared.stale_upstreams.load(Ordering::Relaxed) as f64,
    );
    report.errors(&errors);
    if audience.joined < n {
        report.fail(format!(
            "{} of {n} viewers got an upstream",
            audience.joined
        ));
    }

    // The broadcaster leaves first: the channel closes at once instead of re-parenting as
    // each viewer goes.
    shared.ending.store(true, Ordering::Relaxed);
    let _ = stop_broadcaster.send(());
    if let Ok(conn) = listening.await {
        drop(conn);
    }
    drop(closers);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_within_counts_the_busiest_window() {
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        let window = Duration::from_secs(60);
        assert_eq!(most_within(&[], window), 0);
        assert_eq!(most_within(&[at(0)], window), 1);
        assert_eq!(
            most_within(&[at(0), at(10), at(70), at(75), at(80)], window),
            3
        );
        assert_eq!(most_within(&[at(0), at(60), at(120)], window), 2);
    }

    #[test]
    fn full_tree_depth_follows_the_levels() {
        // D = 4, F = 2: 4, 8, 16, ... per depth.
        assert_eq!(full_tree_depth(4, 4, 2), Some(1));
        assert_eq!(full_tree_depth(5, 4, 2), Some(2));
        assert_eq!(full_tree_depth(12, 4, 2), Some(2));
        assert_eq!(full_tree_depth(13, 4, 2), Some(3));
        assert_eq!(full_tree_depth(10_000, 4, 2), Some(12));
        assert_eq!(full_tree_depth(9, 4, 0), None);
        assert_eq!(full_tree_depth(7, 4, 1), Some(2));
    }

    #[test]
    fn feeds_and_assignments_are_split_by_node() {
        // Broadcaster "b" on node 0; viewers 0..4 round-robin over two nodes, as `--nodes`
        // places connections 1..=4: nodes 0, 1, 0, 1.
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut audience = Audience::new(rx, "b".into(), 0, 4);
        let at = Instant::now();
        for (viewer, node) in [0, 1, 0, 1].into_iter().enumerate() {
            audience.apply(Update::Connected {
                viewer,
                sid: format!("v{viewer}"),
                node,
            });
        }
        // v0 and v1 from the broadcaster, v2 from v1 (node 1 → 0), v3 from v1 (1 → 1).
        for (viewer, peer, depth) in [(0, "b", 1), (1, "b", 1), (2, "v1", 2), (3, "v1", 2)] {
            audience.apply(Update::Upstream {
                viewer,
                peer: peer.into(),
                depth,
                at,
                assigned_after: Some(Duration::from_millis(1 + viewer as u64)),
            });
        }
        // Cross: v1 (node 1, fed by the broadcaster on 0) and v2 (node 0, fed by v1 on 1).
        assert_eq!(audience.cross_node_feeds(), (4, 2));
        assert_eq!(audience.joined, 4);
        // The histogram keeps microseconds to a few significant digits.
        let max_ms = |l: &Latency| l.max_ms().map(f64::round);
        assert_eq!(max_ms(&audience.assigned_same_node), Some(3.0));
        assert_eq!(max_ms(&audience.assigned_cross_node), Some(4.0));
        assert_eq!(max_ms(&audience.assigned), Some(4.0));
        // A viewer that left no longer counts; its children still have their feeder's node.
        audience.apply(Update::Gone { viewer: 1 });
        assert_eq!(audience.cross_node_feeds(), (3, 1));
        // One node: nobody is fed from another.
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut single = Audience::new(rx, "b".into(), 0, 1);
        single.apply(Update::Connected {
            viewer: 0,
            sid: "v0".into(),
            node: 0,
        });
        single.apply(Update::Upstream {
            viewer: 0,
            peer: "b".into(),
            depth: 1,
            at,
            assigned_after: Some(Duration::from_millis(1)),
        });
        assert_eq!(single.cross_node_feeds(), (1, 0));
        assert_eq!(single.assigned_cross_node.max_ms(), None);
    }

    #[test]
    fn relay_tree_figures_are_read() {
        let payload =
            json!({"channel_id": "c", "direct": 4, "relayed": 8, "waiting": 1, "depths": [4, 8]});
        assert_eq!(
            Figures::parse(&payload),
            Some(Figures {
                direct: 4,
                relayed: 8,
                waiting: 1,
                depths: vec![4, 8],
            })
        );
    }
}
