//! A channel's relay tree ([`super::tree`]) seen from the registry: viewers' reports about their
//! place in it, and the tree's notices turned into events addressed to sockets.

use serde::{Deserialize, Serialize};

use super::clock::Moment;
use super::errors::{ChannelError, ViewerAction};
use super::ids::{ChannelId, SocketId};
use super::model::{Channel, State};
use super::tree::{Feeder, Notice};

/// A relay-tree event for one socket: `upstream` or `downstream_left`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeEvent {
    /// Tell `to` to negotiate with `peer`, its feeder at `depth`; `seq` orders the moves of
    /// one viewer (see [`Notice::Upstream`]).
    Upstream {
        channel_id: ChannelId,
        to: SocketId,
        peer: SocketId,
        depth: usize,
        seq: u64,
    },
    /// Tell the feeder `to` that its child `peer` left or was moved.
    DownstreamLeft {
        channel_id: ChannelId,
        to: SocketId,
        peer: SocketId,
    },
    /// `relay_tree` to the broadcaster: how its audience is fed.
    Figures {
        channel_id: ChannelId,
        to: SocketId,
        direct: usize,
        waiting: usize,
        depths: Vec<usize>,
        version: u64,
    },
}

impl TreeEvent {
    /// The socket it is for.
    pub fn recipient(&self) -> &SocketId {
        match self {
            TreeEvent::Upstream { to, .. }
            | TreeEvent::DownstreamLeft { to, .. }
            | TreeEvent::Figures { to, .. } => to,
        }
    }
}

/// A viewer's report about its place in the relay tree: `relay_ready`, `upstream_failed`,
/// `upstream_stalled` and `relay_capacity`, one name from the event to the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeOp {
    Ready,
    /// `upstream_failed`: no media from its feeder. `about`: the feeder the page means (see
    /// [`TreeOp::is_stale`]).
    UpstreamFailed {
        about: Option<SocketId>,
    },
    /// `upstream_stalled`: the picture from its feeder stalls.
    UpstreamStalled {
        about: Option<SocketId>,
    },
    /// `relay_capacity`: how many children it can feed.
    Capacity(usize),
}

impl TreeOp {
    /// A report about a feeder the viewer no longer has. Moves and reports cross on the wire:
    /// a page that reports the feeder it was just moved away from would otherwise have its new
    /// feeder avoided, and a stall counted against it (two and a good relay stops relaying).
    /// A report that names no feeder (an older page) is about the current one.
    fn is_stale(&self, channel: &Channel, viewer: &SocketId) -> bool {
        let (Self::UpstreamFailed { about: Some(about) }
        | Self::UpstreamStalled { about: Some(about) }) = self
        else {
            return false;
        };
        match channel.tree.upstream_of(viewer) {
            Some(Feeder::Broadcaster) => channel.broadcaster != *about,
            Some(Feeder::Viewer(feeder)) => feeder != about,
            None => true,
        }
    }
}

impl Channel {
    /// Turns the tree's notices into addressed events (the broadcaster by its id), followed by
    /// the tree's figures for the broadcaster when they changed (`membership`: a viewer joined
    /// or left) and the channel uses the tree.
    pub(super) fn address(&self, notices: Vec<Notice>, membership: bool, out: &mut Vec<TreeEvent>) {
        let changed = membership || !notices.is_empty();
        let id = |feeder: Feeder| match feeder {
            Feeder::Broadcaster => self.broadcaster.clone(),
            Feeder::Viewer(v) => v,
        };
        out.extend(notices.into_iter().map(|notice| match notice {
            Notice::Upstream {
                viewer,
                feeder,
                depth,
                seq,
            } => TreeEvent::Upstream {
                channel_id: self.id.clone(),
                to: viewer,
                peer: id(feeder),
                depth,
                seq,
            },
            Notice::DownstreamLeft { feeder, child } => TreeEvent::DownstreamLeft {
                channel_id: self.id.clone(),
                to: id(feeder),
                peer: child,
            },
        }));
        if changed && self.tree.in_use() {
            out.push(TreeEvent::Figures {
                channel_id: self.id.clone(),
                to: self.broadcaster.clone(),
                direct: self.tree.direct_count(),
                waiting: self.tree.waiting_count(),
                depths: self.tree.depths().to_vec(),
                version: self.tree.version(),
            });
        }
    }
}

impl State {
    /// Runs a tree report on behalf of a viewer of the channel.
    pub(crate) fn tree_op(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
        now: Moment,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFound(None))?;
        if !channel.viewers.contains_key(sid) {
            return Err(ChannelError::NotAViewer(ViewerAction::Other));
        }
        if op.is_stale(channel, sid) {
            return Ok(Vec::new());
        }
        let notices = match op {
            TreeOp::Ready => channel.tree.ready(sid),
            TreeOp::UpstreamFailed { .. } => channel.tree.upstream_failed(sid, now),
            TreeOp::UpstreamStalled { .. } => channel.tree.upstream_stalled(sid, now),
            TreeOp::Capacity(capacity) => channel.tree.set_capacity(sid, capacity, now),
        };
        let mut events = Vec::new();
        channel.address(notices, false, &mut events);
        let key = channel.id.clone();
        self.track_waits(&key);
        Ok(events)
    }
}
