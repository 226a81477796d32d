//! The relay tree of one channel (PROTOCOL.md, "Relay tree"): who feeds whom.
//!
//! Viewers that can forward media relay the broadcast to a few others, so the broadcaster's
//! uplink carries at most `direct` streams however many watch. Pure domain logic: no sockets,
//! no clock of its own (callers pass `now`). Every operation returns the [`Notice`]s the
//! handlers turn into `upstream` and `downstream_left` events.
//!
//! Depth stays within one level of the full breadth-first tree (docs/RELAY-TREE.md, "Shape"):
//! a relay that leaves is replaced by a ready leaf from the deepest level, which takes over its
//! feeder and its children, so every subtree below keeps its feeder and nothing is re-indexed;
//! a place that frees above the deepest level is filled by a leaf from the deepest level when
//! that can empty the deepest level or the tree is deeper than the bound (otherwise the next
//! newcomer takes it). Work
//! per event is bounded by the nodes it concerns (the departed relay's children, a few index
//! look-ups), never the whole channel.
//!
//! Each viewer feeds at most its capacity: F unless it said less (`relay_capacity`), 0 once two
//! of its children reported its picture stalling (`upstream_stalled`). Children over it are
//! moved with the same hand-over and placement a departure uses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Moment;

use super::ids::SocketId;

/// The tree's limits (server options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeLimits {
    /// D: viewers the broadcaster feeds directly before relays take over (legacy leaves count).
    pub direct: usize,
    /// F: children one relaying viewer may feed; 0 turns the tree off.
    pub fanout: usize,
    /// How long a viewer waits for a relay with room before it gets the broadcaster, over D.
    pub wait: Duration,
}

/// Who feeds a viewer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Feeder {
    Broadcaster,
    Viewer(SocketId),
}

/// What somebody must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `upstream {peer_id, depth, seq}` to `viewer`: negotiate with this feeder. `seq` grows
    /// with every `upstream` of the tree: handlers emit after releasing the registry, so two
    /// moves of one viewer may leave in either order, and the page keeps the highest.
    Upstream {
        viewer: SocketId,
        feeder: Feeder,
        depth: usize,
        seq: u64,
    },
    /// `downstream_left {peer_id: child}` to `feeder`: close that child's connection.
    DownstreamLeft { feeder: Feeder, child: SocketId },
}

/// One viewer's place. In a cluster every node of a channel is written with the channel's
/// document, so fields at their empty value are left out (a 2,000-viewer channel's document
/// went from 503 to 303 KB); a missing field reads as empty, in earlier releases too
/// (serde reads a missing `Option` as `None`, and the sets carry `default`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    /// A tree viewer (joined with `relay: true`); otherwise a legacy leaf.
    relay: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<Feeder>,
    children: HashSet<SocketId>,
    /// 1 = fed by the broadcaster; meaningful while `anchored`.
    depth: usize,
    /// The node's chain of feeders reaches the broadcaster (no waiting ancestor).
    anchored: bool,
    /// Set by `relay_ready`: the sequence number of when it became eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eligible: Option<u64>,
    /// Order of joining, for going live again.
    joined: u64,
    /// While waiting: the key in the waiting queue and when the wait started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting: Option<(u64, Moment)>,
    /// A feeder this node reported as failed, excluded from its next assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avoid: Option<Feeder>,
    /// The feeder this node last reported as failed: moves made to keep the tree shallow never
    /// hang it there again (the next assignment's exclusion alone would let the next move undo
    /// the report at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reported: Option<Feeder>,
    /// When this node last reported its own feeder (`upstream_failed`, `upstream_stalled`):
    /// its children's pictures stall with its own, so their reports soon after are not held
    /// against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reported_at: Option<Moment>,
    /// The most children it said it can feed (`relay_capacity`); `None`: F. Above F counts as F.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<usize>,
    /// Its children that reported its picture stalling (`upstream_stalled`), distinct, kept up
    /// to [`STALLS_TO_DEMOTE`]: from then on it feeds nobody (its uplink or CPU cannot keep up,
    /// whatever its page thinks).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    stalled_by: BTreeSet<SocketId>,
}

/// Distinct children whose stall reports take a relay's capacity away: one could be the child's
/// own network; two point at the relay.
pub const STALLS_TO_DEMOTE: usize = 2;

/// How long after a relay reported its own feeder its children's stall reports are excused: the
/// picture it forwards stalled with its own.
pub const STALL_EXCUSE: Duration = Duration::from_secs(10);

impl Node {
    /// How many children it may feed: its reported capacity within F, 0 once demoted.
    fn room(&self, fanout: usize) -> usize {
        if self.stalled_by.len() >= STALLS_TO_DEMOTE {
            return 0;
        }
        self.capacity.map_or(fanout, |c| c.min(fanout))
    }
}

/// One channel's tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tree {
    limits: TreeLimits,
    /// False when the tree is off for this channel (fan-out 0, or the broadcaster joined with
    /// `relay: false`): everybody is fed by the broadcaster.
    enabled: bool,
    /// Between `stop_broadcast` and going live again nobody is fed.
    live: bool,
    nodes: HashMap<SocketId, Node>,
    /// The broadcaster's children (legacy leaves and tree viewers).
    direct: HashSet<SocketId>,
    /// Anchored eligible viewers with room: (depth, children, eligible seq, id), best first.
    candidates: BTreeSet<(usize, usize, u64, SocketId)>,
    /// Anchored tree viewers without children: (depth, joined, id), deepest last. The leaves
    /// that move up when a place above them frees.
    #[serde(default)]
    leaves: BTreeSet<(usize, u64, SocketId)>,
    /// The eligible ones among `leaves`: who can take a departed relay's place.
    #[serde(default)]
    spares: BTreeSet<(usize, u64, SocketId)>,
    /// Waiting viewers in order of arrival.
    waiting: BTreeMap<u64, SocketId>,
    /// Anchored viewers per depth (index 0 = depth 1), kept in step by [`Tree::update`], so
    /// the broadcaster's display costs nothing to produce.
    depth_counts: Vec<usize>,
    /// A tree viewer has joined at some point: only then does the broadcaster get the tree's
    /// figures (a channel of legacy pages sees no new event).
    in_use: bool,
    seq: u64,
}

impl Tree {
    pub fn new(limits: TreeLimits, relay_allowed: bool) -> Self {
        Self {
            limits,
            enabled: relay_allowed && limits.fanout > 0,
            live: true,
            nodes: HashMap::new(),
            direct: HashSet::new(),
            candidates: BTreeSet::new(),
            leaves: BTreeSet::new(),
            spares: BTreeSet::new(),
            waiting: BTreeMap::new(),
            depth_counts: Vec::new(),
            in_use: false,
            seq: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A viewer joins (`relay`: it asked for the tree). Legacy leaves attach to the broadcaster
    /// at once and are told nothing (they offer the broadcaster, as they always did).
    pub fn join(&mut self, viewer: &SocketId, relay: bool, now: Moment) -> Vec<Notice> {
        if self.nodes.contains_key(viewer) {
            return Vec::new();
        }
        let joined = self.next_seq();
        self.in_use |= relay;
        self.nodes.insert(
            viewer.clone(),
            Node {
                relay,
                parent: None,
                children: HashSet::new(),
                depth: 0,
                anchored: false,
                eligible: None,
                joined,
                waiting: None,
                avoid: None,
                reported: None,
                reported_at: None,
                capacity: None,
                stalled_by: BTreeSet::new(),
            },
        );
        let mut notices = Vec::new();
        if self.live {
            self.place(viewer, now, &mut notices);
            self.fill_from_below(&mut notices);
        }
        notices
    }

    /// `relay_ready`: the viewer plays the stream and may feed others from now on.
    pub fn ready(&mut self, viewer: &SocketId) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(node) = self.nodes.get(viewer) else {
            return notices;
        };
        if !self.enabled || !node.relay || node.eligible.is_some() || node.parent.is_none() {
            return notices;
        }
        let seq = self.next_seq();
        self.update(viewer, |n| n.eligible = Some(seq));
        self.serve_waiting(&mut notices);
        // Its places may be shallower than the deepest viewers (it was moved up).
        self.fill_from_below(&mut notices);
        notices
    }

    /// `upstream_failed`: the viewer lost its media; it is moved, avoiding the feeder it
    /// reported. Its own children stay with it when a place no deeper than its own is free;
    /// otherwise a spare leaf takes over its place and its children (as when a relay leaves),
    /// so the report of one viewer never sinks a whole subtree.
    pub fn upstream_failed(&mut self, viewer: &SocketId, now: Moment) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(node) = self.nodes.get(viewer) else {
            return notices;
        };
        if !node.relay || !self.live {
            return notices;
        }
        let Some(old) = node.parent.clone() else {
            // Already waiting for a feeder: nothing to move.
            return notices;
        };
        let (anchored, depth, feeds) = (node.anchored, node.depth, !node.children.is_empty());
        self.update(viewer, |n| {
            n.avoid = Some(old.clone());
            n.reported = Some(old);
            n.reported_at = Some(now);
        });
        let sinks = match self.best_feeder(viewer) {
            Some(feeder) => self.depth_below(&feeder) > depth,
            None => true,
        };
        match self.spare_for(viewer) {
            Some(spare) if anchored && feeds && sinks => {
                self.hand_over(viewer, &spare, &mut notices)
            }
            _ => self.detach(viewer, &mut notices),
        }
        self.update(viewer, |n| n.eligible = None);
        self.place(viewer, now, &mut notices);
        self.serve_waiting(&mut notices);
        self.fill_from_below(&mut notices);
        notices
    }

    /// `upstream_stalled`: the viewer's picture from its feeder stalls. It is moved as for
    /// `upstream_failed`; a relaying feeder also counts the report, and at [`STALLS_TO_DEMOTE`]
    /// distinct children it loses its capacity (its other children are moved away). A report
    /// while the feeder does not play from its own feeder yet (moved, no `relay_ready` since),
    /// or within [`STALL_EXCUSE`] of the feeder's own report, is not counted: the stall came
    /// from above it.
    pub fn upstream_stalled(&mut self, viewer: &SocketId, now: Moment) -> Vec<Notice> {
        let feeder = self
            .nodes
            .get(viewer)
            .filter(|n| n.relay && self.live)
            .and_then(|n| n.parent.clone());
        let mut notices = self.upstream_failed(viewer, now);
        let Some(Feeder::Viewer(relay)) = feeder else {
            return notices;
        };
        // A relay that does not play from its own feeder yet (moved, no `relay_ready` since),
        // or that reported its feeder a moment ago, forwards a picture that stalled above it.
        let excused = self.nodes.get(&relay).is_none_or(|n| {
            n.eligible.is_none()
                || n.reported_at
                    .is_some_and(|at| now.duration_since(at) < STALL_EXCUSE)
        });
        if excused {
            return notices;
        }
        let reporter = viewer.clone();
        self.update(&relay, |n| {
            if n.stalled_by.len() < STALLS_TO_DEMOTE {
                n.stalled_by.insert(reporter);
            }
        });
        self.shed_excess(&relay, now, &mut notices);
        self.serve_waiting(&mut notices);
        self.fill_from_below(&mut notices);
        notices
    }

    /// `relay_capacity`: how many children the viewer can feed from now on (within F). Children
    /// over it are moved away; a raised capacity may take waiting viewers or move leaves up.
    pub fn set_capacity(&mut self, viewer: &SocketId, capacity: usize, now: Moment) -> Vec<Notice> {
        let mut notices = Vec::new();
        match self.nodes.get(viewer) {
            Some(node) if node.relay && node.capacity != Some(capacity) => {}
            _ => return notices,
        }
        self.update(viewer, |n| n.capacity = Some(capacity));
        self.shed_excess(viewer, now, &mut notices);
        self.serve_waiting(&mut notices);
        self.fill_from_below(&mut notices);
        notices
    }

    /// How many children `viewer` may feed now (0 for an unknown viewer).
    pub fn capacity_of(&self, viewer: &str) -> usize {
        self.nodes
            .get(viewer)
            .map_or(0, |n| n.room(self.limits.fanout))
    }

    /// Moves the children `relay` has over its capacity. At capacity 0 a spare leaf takes its
    /// place and children (as when it leaves: the subtrees keep their feeders and the tree its
    /// shape) and the relay is placed again, as a leaf (it may wait for a feeder like any
    /// viewer that moved); otherwise, and without a spare, the latest to join of its children
    /// are placed again, each with its subtree (and may wait).
    fn shed_excess(&mut self, relay: &SocketId, now: Moment, notices: &mut Vec<Notice>) {
        let fanout = self.limits.fanout;
        let Some(node) = self.nodes.get(relay) else {
            return;
        };
        let room = node.room(fanout);
        if node.children.len() <= room {
            return;
        }
        if room == 0
            && node.anchored
            && let Some(spare) = self.spare_for(relay)
        {
            // Unlike a relay that left or failed, this one still sends to them: it is told to
            // close every child's connection (the spare's too, when the spare was its child).
            let mut children: Vec<(u64, SocketId)> = node
                .children
                .iter()
                .filter_map(|c| self.nodes.get(c).map(|n| (n.joined, c.clone())))
                .collect();
            children.sort();
            self.hand_over(relay, &spare, notices);
            notices.extend(
                children
                    .into_iter()
                    .map(|(_, child)| Notice::DownstreamLeft {
                        feeder: Feeder::Viewer(relay.clone()),
                        child,
                    }),
            );
            self.update(relay, |n| n.eligible = None);
            self.place(relay, now, notices);
            return;
        }
        let mut children: Vec<(u64, SocketId)> = node
            .children
            .iter()
            .filter_map(|c| self.nodes.get(c).map(|n| (n.joined, c.clone())))
            .collect();
        children.sort();
        let excess = children.split_off(room.min(children.len()));
        let feeder = Feeder::Viewer(relay.clone());
        for (_, child) in &excess {
            self.detach(child, notices);
            self.update(child, |n| {
                // Re-parented: eligible again after its next `relay_ready`.
                n.eligible = None;
                n.avoid = Some(feeder.clone());
            });
        }
        for (_, child) in &excess {
            self.place(child, now, notices);
        }
    }

    /// A viewer leaves (or disconnects): its feeder is told. A relay's place and children go
    /// to a spare leaf from the deepest level when there is one; otherwise its children are
    /// placed again, each with its subtree.
    pub fn leave(&mut self, viewer: &SocketId, now: Moment) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(node) = self.nodes.get(viewer) else {
            return notices;
        };
        if node.anchored
            && !node.children.is_empty()
            && let Some(spare) = self.spare_for(viewer)
        {
            self.hand_over(viewer, &spare, &mut notices);
        }
        self.detach(viewer, &mut notices);
        self.update(viewer, |n| n.eligible = None);
        let Some(node) = self.nodes.remove(viewer) else {
            return notices;
        };
        if let Some((key, _)) = node.waiting {
            self.waiting.remove(&key);
        }
        let mut orphans: Vec<(u64, SocketId)> = node
            .children
            .iter()
            .filter_map(|c| self.nodes.get(c).map(|n| (n.joined, c.clone())))
            .collect();
        orphans.sort();
        for (_, orphan) in &orphans {
            self.update(orphan, |child| {
                child.parent = None;
                // Re-parented: eligible again after its next `relay_ready`.
                child.eligible = None;
            });
            self.set_anchored(orphan, false);
        }
        for (_, orphan) in &orphans {
            self.place(orphan, now, &mut notices);
        }
        self.serve_waiting(&mut notices);
        self.fill_from_below(&mut notices);
        notices
    }

    /// `stop_broadcast`: the tree dissolves; nobody is fed or eligible until going live again.
    pub fn stop(&mut self) {
        self.live = false;
        self.direct.clear();
        self.candidates.clear();
        self.leaves.clear();
        self.spares.clear();
        self.waiting.clear();
        self.depth_counts.clear();
        for node in self.nodes.values_mut() {
            node.parent = None;
            node.children.clear();
            node.anchored = false;
            node.eligible = None;
            node.waiting = None;
            node.avoid = None;
            node.reported = None;
            node.reported_at = None;
            node.depth = 0;
        }
    }

    /// Going live again: every viewer still here is placed afresh, in order of joining.
    pub fn go_live(&mut self, now: Moment) -> Vec<Notice> {
        let mut notices = Vec::new();
        if self.live {
            return notices;
        }
        self.live = true;
        let mut order: Vec<(u64, SocketId)> = self
            .nodes
            .iter()
            .map(|(id, n)| (n.joined, id.clone()))
            .collect();
        order.sort();
        for (_, viewer) in order {
            self.place(&viewer, now, &mut notices);
        }
        notices
    }

    /// Viewers that waited past the limit get the broadcaster, over D.
    pub fn expire_waits(&mut self, now: Moment) -> Vec<Notice> {
        let mut notices = Vec::new();
        while let Some((&key, viewer)) = self.waiting.first_key_value() {
            let viewer = viewer.clone();
            let since = self
                .nodes
                .get(&viewer)
                .and_then(|n| n.waiting.map(|(_, since)| since));
            match since {
                Some(since) if now.duration_since(since) < self.limits.wait => break,
                Some(_) => self.attach(&viewer, Feeder::Broadcaster, &mut notices),
                None => {
                    self.waiting.remove(&key);
                }
            }
        }
        // A waiter fed at last may bring a subtree of ready relays with room (found by the
        // property test): they serve whoever still waits.
        self.serve_waiting(&mut notices);
        self.fill_from_below(&mut notices);
        notices
    }

    /// When the oldest waiter's limit runs out, if anybody waits.
    pub fn next_deadline(&self) -> Option<Moment> {
        let (_, viewer) = self.waiting.first_key_value()?;
        let (_, since) = self.nodes.get(viewer)?.waiting?;
        Some(since + self.limits.wait)
    }

    /// The current feeder of a viewer.
    pub fn upstream_of(&self, viewer: &str) -> Option<&Feeder> {
        self.nodes.get(viewer)?.parent.as_ref()
    }

    /// Whether `a` and `b` are feeder and child, either way (relay authorization).
    pub fn are_linked(&self, a: &str, b: &str) -> bool {
        let parent_is = |child: &str, parent: &str| matches!(self.upstream_of(child), Some(Feeder::Viewer(p)) if p.as_str() == parent);
        parent_is(a, b) || parent_is(b, a)
    }

    /// How many viewers the broadcaster feeds directly.
    pub fn direct_count(&self) -> usize {
        self.direct.len()
    }

    /// Viewers fed through the tree at each depth (index 0 = fed by the broadcaster).
    pub fn depths(&self) -> &[usize] {
        &self.depth_counts
    }

    /// Viewers waiting for a feeder.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Whether a tree viewer ever joined (the broadcaster then gets the tree's figures).
    pub fn in_use(&self) -> bool {
        self.in_use
    }

    /// A number that grows with every change of the tree: figures computed by concurrent
    /// handlers may leave in either order, and the receiver keeps the newest.
    pub fn version(&self) -> u64 {
        self.seq
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The depth a child of `feeder` has.
    fn depth_below(&self, feeder: &Feeder) -> usize {
        match feeder {
            Feeder::Broadcaster => 1,
            Feeder::Viewer(id) => self.nodes.get(id).map_or(usize::MAX, |n| n.depth + 1),
        }
    }

    /// The spare leaf that takes over `relay`'s place and children: the deepest eligible leaf
    /// below the relay's level (the latest to join among equals) that neither reported the
    /// feeder it would get nor is reported by a child it would feed, and that can feed as many
    /// children as the relay has. Taking it from the deepest level never deepens the tree; its
    /// own place frees at that level, where nothing hangs deeper.
    fn spare_for(&self, relay: &SocketId) -> Option<SocketId> {
        if !self.enabled || !self.live {
            return None;
        }
        let fanout = self.limits.fanout;
        let node = self.nodes.get(relay)?;
        let feeder = node.parent.as_ref()?;
        let children = &node.children;
        // Only from below the relay's level: the spare then moves up, never sideways.
        self.spares
            .iter()
            .rev()
            .take_while(|(depth, _, _)| *depth > node.depth)
            .map(|(_, _, id)| id)
            .find(|id| {
                let spare = Feeder::Viewer((*id).clone());
                *id != relay
                    && self.nodes.get(*id).is_some_and(|n| {
                        n.reported.as_ref() != Some(feeder) && n.room(fanout) >= children.len()
                    })
                    && children.iter().all(|c| {
                        self.nodes
                            .get(c)
                            .is_none_or(|n| n.reported.as_ref() != Some(&spare))
                    })
            })
            .cloned()
    }

    /// `spare` (an anchored eligible leaf) takes `relay`'s place: `relay`'s feeder now feeds
    /// `spare`, and `spare` feeds `relay`'s children, whose subtrees keep their feeders and
    /// depths. Told: both old feeders (`downstream_left`), `spare` and the children
    /// (`upstream`). `relay` is left unattached, without children.
    fn hand_over(&mut self, relay: &SocketId, spare: &SocketId, notices: &mut Vec<Notice>) {
        let (Some(node), Some(spare_node)) = (self.nodes.get(relay), self.nodes.get(spare)) else {
            return;
        };
        let (Some(feeder), Some(spare_feeder)) = (node.parent.clone(), spare_node.parent.clone())
        else {
            return;
        };
        let depth = node.depth;
        let relay_feeder = Feeder::Viewer(relay.clone());
        // The spare leaves its own feeder (told, unless that is the relay itself).
        match &spare_feeder {
            Feeder::Broadcaster => {
                self.direct.remove(spare);
            }
            Feeder::Viewer(p) => self.update(p, |n| {
                n.children.remove(spare);
            }),
        }
        // The relay's place goes to the spare.
        match &feeder {
            Feeder::Broadcaster => {
                self.direct.remove(relay);
                self.direct.insert(spare.clone());
            }
            Feeder::Viewer(p) => {
                let spare = spare.clone();
                self.update(p, |n| {
                    n.children.remove(relay);
                    n.children.insert(spare);
                });
            }
        }
        notices.push(Notice::DownstreamLeft {
            feeder: feeder.clone(),
            child: relay.clone(),
        });
        if spare_feeder != relay_feeder {
            notices.push(Notice::DownstreamLeft {
                feeder: spare_feeder,
                child: spare.clone(),
            });
        }
        let mut children: Vec<(u64, SocketId)> = self
            .nodes
            .get(relay)
            .map(|n| n.children.iter())
            .into_iter()
            .flatten()
            .filter_map(|c| self.nodes.get(c).map(|n| (n.joined, c.clone())))
            .collect();
        children.sort();
        self.update(relay, |n| {
            n.parent = None;
            n.children.clear();
            n.anchored = false;
        });
        let adopted: HashSet<SocketId> = children.iter().map(|(_, c)| c.clone()).collect();
        self.update(spare, |n| {
            n.parent = Some(feeder.clone());
            n.children = adopted;
            n.depth = depth;
            // Moved: eligible for new children again after its next `relay_ready`.
            n.eligible = None;
            n.avoid = None;
        });
        let seq = self.next_seq();
        notices.push(Notice::Upstream {
            viewer: spare.clone(),
            feeder,
            depth,
            seq,
        });
        let spare_feeds = Feeder::Viewer(spare.clone());
        for (_, child) in children {
            self.update(&child, |n| {
                n.parent = Some(spare_feeds.clone());
                n.eligible = None;
            });
            let seq = self.next_seq();
            notices.push(Notice::Upstream {
                viewer: child,
                feeder: spare_feeds.clone(),
                depth: depth + 1,
                seq,
            });
        }
    }

    /// The shallowest free place: the broadcaster under D, else the shallowest candidate.
    fn free_place(&self) -> Option<(usize, Feeder)> {
        if self.direct.len() < self.limits.direct {
            return Some((1, Feeder::Broadcaster));
        }
        let (depth, _, _, id) = self.candidates.first()?;
        Some((depth + 1, Feeder::Viewer(id.clone())))
    }

    /// Keeps every viewer at most as deep as the shallowest free place: while a leaf hangs
    /// deeper than it, the deepest such leaf moves up into it. Each move takes one viewer up at
    /// least one level and frees a place only at the level it left, where nothing is deeper,
    /// so a tree that kept the rule before an event needs at most one move after it.
    fn fill_from_below(&mut self, notices: &mut Vec<Notice>) {
        if !self.enabled || !self.live {
            return;
        }
        // Each move lowers the sum of depths; the bound only guards against a bug.
        for _ in 0..=self.nodes.len() {
            // Waiting viewers come first, also for the place a moved leaf left.
            self.serve_waiting(notices);
            if !self.worth_filling() {
                return;
            }
            let Some((depth, feeder)) = self.free_place() else {
                return;
            };
            let leaf = self
                .leaves
                .iter()
                .rev()
                .take_while(|(d, _, _)| *d > depth)
                .map(|(_, _, id)| id)
                .find(|id| {
                    self.nodes
                        .get(*id)
                        .is_some_and(|n| n.reported.as_ref() != Some(&feeder))
                })
                .cloned();
            let Some(leaf) = leaf else {
                return;
            };
            self.detach(&leaf, notices);
            // Moved: eligible again after its next `relay_ready`.
            self.update(&leaf, |n| n.eligible = None);
            self.attach(&leaf, feeder, notices);
        }
    }

    /// Whether a free place above the deepest level should pull a leaf up now: when the tree
    /// is deeper than the bound (the full breadth-first tree's depth + 1), or when the free
    /// places above the deepest level can take every viewer on it (the moves then take that
    /// level away). Otherwise the place waits for the next newcomer: filling it would move a
    /// leaf up whose own room would pull up the next one, and so on through half the tree (a
    /// legacy viewer fed by the broadcaster leaving a tree of 2,000 moved 997 viewers so).
    fn worth_filling(&self) -> bool {
        let depths = self.depths();
        let deepest = depths.len();
        if deepest <= 1 {
            return false;
        }
        if deepest > self.optimal_depth() + 1 {
            return true;
        }
        let on_deepest = depths[deepest - 1];
        let fanout = self.limits.fanout;
        let mut free = self.limits.direct.saturating_sub(self.direct.len());
        // Best first: by depth, so the places above the deepest level come first.
        for (depth, children, _, id) in &self.candidates {
            if free >= on_deepest || depth + 1 >= deepest {
                break;
            }
            let room = self.nodes.get(id).map_or(0, |n| n.room(fanout));
            free += room.saturating_sub(*children);
        }
        free >= on_deepest
    }

    /// The depth of the full breadth-first tree of the anchored tree viewers: the broadcaster
    /// feeds as many of them as it may (D, or more after waits ran out, less the legacy leaves
    /// it feeds), every tree viewer feeds F. Legacy leaves are always at depth 1.
    pub(crate) fn optimal_depth(&self) -> usize {
        let viewers = self
            .nodes
            .values()
            .filter(|n| n.relay && n.anchored)
            .count();
        if viewers == 0 {
            return 0;
        }
        if !self.enabled {
            return 1;
        }
        let legacy = self
            .direct
            .iter()
            .filter(|d| self.nodes.get(*d).is_some_and(|n| !n.relay))
            .count();
        let mut width = self
            .limits
            .direct
            .max(self.direct.len())
            .saturating_sub(legacy);
        let (mut depth, mut room) = (1, width);
        while room < viewers && width > 0 {
            width = width.saturating_mul(self.limits.fanout);
            room = room.saturating_add(width);
            depth += 1;
        }
        depth
    }

    /// Finds a feeder for an unattached viewer, or queues it.
    fn place(&mut self, viewer: &SocketId, now: Moment, notices: &mut Vec<Notice>) {
        let Some(node) = self.nodes.get(viewer) else {
            return;
        };
        let (attached, relay, waiting) =
            (node.parent.is_some(), node.relay, node.waiting.is_some());
        if attached || !self.live {
            return;
        }
        if !relay || !self.enabled {
            return self.attach(viewer, Feeder::Broadcaster, notices);
        }
        match self.best_feeder(viewer) {
            Some(feeder) => self.attach(viewer, feeder, notices),
            None => {
                if !waiting {
                    let key = self.next_seq();
                    self.waiting.insert(key, viewer.clone());
                    self.update(viewer, |n| n.waiting = Some((key, now)));
                }
            }
        }
    }

    /// Assignment rules 1 and 2 for `viewer`, avoiding its subtree and the feeder it reported.
    fn best_feeder(&self, viewer: &SocketId) -> Option<Feeder> {
        let avoid = self.nodes.get(viewer)?.avoid.as_ref();
        if self.direct.len() < self.limits.direct && avoid != Some(&Feeder::Broadcaster) {
            return Some(Feeder::Broadcaster);
        }
        self.candidates
            .iter()
            .map(|(_, _, _, id)| id)
            .find(|id| avoid != Some(&Feeder::Viewer((*id).clone())) && !self.is_within(id, viewer))
            .map(|id| Feeder::Viewer(id.clone()))
    }

    /// Whether `node` is `root` or one of its descendants (walks up: O(depth)).
    fn is_within(&self, node: &SocketId, root: &SocketId) -> bool {
        let mut at = node;
        // The tree has no cycles; the bound only guards against a bug becoming a hang.
        for _ in 0..=self.nodes.len() {
            if at == root {
                return true;
            }
            match self.nodes.get(at).and_then(|n| n.parent.as_ref()) {
                Some(Feeder::Viewer(parent)) => at = parent,
                _ => return false,
            }
        }
        false
    }

    /// Serves waiting viewers in order of arrival while any feeder has room for them.
    fn serve_waiting(&mut self, notices: &mut Vec<Notice>) {
        if !self.live || self.waiting.is_empty() {
            return;
        }
        // Until a pass places nobody: placing one waiter anchors its subtree, whose relays may
        // have room for a waiter passed over earlier in the pass.
        loop {
            let queue: Vec<SocketId> = self.waiting.values().cloned().collect();
            let mut placed = false;
            for viewer in queue {
                if self.candidates.is_empty() && self.direct.len() >= self.limits.direct {
                    return;
                }
                if let Some(feeder) = self.best_feeder(&viewer) {
                    self.attach(&viewer, feeder, notices);
                    placed = true;
                }
            }
            if !placed {
                return;
            }
        }
    }

    /// Puts `viewer` (unattached) under `feeder`, telling it when it is a tree viewer.
    fn attach(&mut self, viewer: &SocketId, feeder: Feeder, notices: &mut Vec<Notice>) {
        let parent_depth = match &feeder {
            Feeder::Broadcaster => 0,
            Feeder::Viewer(p) => match self.nodes.get(p) {
                Some(n) => n.depth,
                None => return,
            },
        };
        let Some(node) = self.nodes.get(viewer) else {
            return;
        };
        if let Some((key, _)) = node.waiting {
            self.waiting.remove(&key);
        }
        let relay = node.relay;
        self.update(viewer, |n| {
            n.parent = Some(feeder.clone());
            n.waiting = None;
            n.avoid = None;
        });
        match &feeder {
            Feeder::Broadcaster => {
                self.direct.insert(viewer.clone());
            }
            Feeder::Viewer(p) => {
                let child = viewer.clone();
                self.update(p, |n| {
                    n.children.insert(child);
                });
            }
        }
        self.set_depths(viewer, parent_depth + 1);
        if relay {
            let seq = self.next_seq();
            notices.push(Notice::Upstream {
                viewer: viewer.clone(),
                feeder,
                depth: parent_depth + 1,
                seq,
            });
        }
    }

    /// Takes `viewer` from its feeder (which is told); its subtree is no longer anchored.
    fn detach(&mut self, viewer: &SocketId, notices: &mut Vec<Notice>) {
        let Some(parent) = self.nodes.get(viewer).and_then(|n| n.parent.clone()) else {
            return;
        };
        match &parent {
            Feeder::Broadcaster => {
                self.direct.remove(viewer);
            }
            Feeder::Viewer(p) => {
                self.update(p, |n| {
                    n.children.remove(viewer);
                });
            }
        }
        let relay = self.nodes.get(viewer).is_some_and(|n| n.relay);
        self.update(viewer, |n| n.parent = None);
        self.set_anchored(viewer, false);
        // In a channel where no tree viewer ever joined, the broadcaster hears nothing new when
        // a legacy viewer leaves: exactly what legacy pages and their recorded sessions show.
        if relay || self.in_use {
            notices.push(Notice::DownstreamLeft {
                feeder: parent,
                child: viewer.clone(),
            });
        }
    }

    /// Applies `change` to a node, keeping the candidate index in step.
    fn update(&mut self, id: &SocketId, change: impl FnOnce(&mut Node)) {
        let fanout = self.limits.fanout;
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        if let Some(key) = candidate_key(id, node, fanout) {
            self.candidates.remove(&key);
        }
        if let Some(key) = leaf_key(id, node) {
            if node.eligible.is_some() {
                self.spares.remove(&key);
            }
            self.leaves.remove(&key);
        }
        let before = node.anchored.then_some(node.depth);
        change(node);
        let after = node.anchored.then_some(node.depth);
        if let Some(key) = candidate_key(id, node, fanout) {
            self.candidates.insert(key);
        }
        if let Some(key) = leaf_key(id, node) {
            if node.eligible.is_some() {
                self.spares.insert(key.clone());
            }
            self.leaves.insert(key);
        }
        if before != after {
            if let Some(depth) = before
                && let Some(count) = self.depth_counts.get_mut(depth.saturating_sub(1))
            {
                *count = count.saturating_sub(1);
            }
            if let Some(depth) = after {
                let at = depth.saturating_sub(1);
                if self.depth_counts.len() <= at {
                    self.depth_counts.resize(at + 1, 0);
                }
                self.depth_counts[at] += 1;
            }
            while self.depth_counts.last() == Some(&0) {
                self.depth_counts.pop();
            }
        }
    }

    /// Sets the depth of `root` and its subtree (now anchored) after it was attached.
    fn set_depths(&mut self, root: &SocketId, depth: usize) {
        let mut stack = vec![(root.clone(), depth)];
        while let Some((id, depth)) = stack.pop() {
            self.update(&id, |n| {
                n.depth = depth;
                n.anchored = true;
            });
            if let Some(node) = self.nodes.get(&id) {
                stack.extend(node.children.iter().map(|c| (c.clone(), depth + 1)));
            }
        }
    }

    /// Marks a subtree as cut off from the broadcaster (or not).
    fn set_anchored(&mut self, root: &SocketId, anchored: bool) {
        let mut stack = vec![root.clone()];
        while let Some(id) = stack.pop() {
            self.update(&id, |n| n.anchored = anchored);
            if let Some(node) = self.nodes.get(&id) {
                stack.extend(node.children.iter().cloned());
            }
        }
    }
}

/// The node's key in the leaf index: an anchored tree viewer that feeds nobody.
fn leaf_key(id: &SocketId, node: &Node) -> Option<(usize, u64, SocketId)> {
    (node.relay && node.anchored && node.parent.is_some() && node.children.is_empty())
        .then(|| (node.depth, node.joined, id.clone()))
}

/// The node's key in the candidate index, when it is a candidate.
fn candidate_key(
    id: &SocketId,
    node: &Node,
    fanout: usize,
) -> Option<(usize, usize, u64, SocketId)> {
    let seq = node.eligible?;
    (node.anchored && node.parent.is_some() && node.children.len() < node.room(fanout))
        .then(|| (node.depth, node.children.len(), seq, id.clone()))
}

#[cfg(test)]
mod tests;
