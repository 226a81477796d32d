//! Every Redis key and pub/sub prefix cluster mode uses, in one place. All start with the
//! deployment's `--redis-prefix`, so several deployments (or parallel tests) share one Redis
//! and `SCAN <prefix>*` finds everything one of them left.

use std::net::IpAddr;

use crate::registry::ids::{ChannelId, SocketId};

use super::NodeId;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The Socket.IO adapter's channels (socketioxide-redis).
    pub fn adapter_prefix(&self) -> String {
        format!("{}:sio", self.prefix)
    }

    /// A channel's document: hash {v: version, d: JSON}.
    pub fn channel(&self, id: &ChannelId) -> String {
        format!("{}:ch:{id}", self.prefix)
    }

    /// The change feed (a pub/sub channel, not a key): every write of a channel document is
    /// announced on it as "<channel> <version>" (see `replica.rs`).
    pub fn feed(&self) -> String {
        format!("{}:feed", self.prefix)
    }

    /// The emits channel (pub/sub): a channel owner's events for sockets on every node, a run
    /// of them per message (see `emits.rs`).
    pub fn emits(&self) -> String {
        format!("{}:emits", self.prefix)
    }

    /// Every channel id, scored by creation time: `channel_list` order and the capacity count.
    pub fn channel_index(&self) -> String {
        format!("{}:channels", self.prefix)
    }

    /// A channel's last chat messages: a list of JSON messages, oldest first, trimmed to
    /// `--chat-history`; deleted with the channel.
    pub fn chat_history(&self, id: &ChannelId) -> String {
        format!("{}:chat:{id}", self.prefix)
    }

    /// Channels where a relay-tree viewer waits for a feeder, scored by its deadline (ms).
    pub fn waits(&self) -> String {
        format!("{}:waits", self.prefix)
    }

    /// Channels a socket broadcasts.
    pub fn broadcasting(&self, sid: &SocketId) -> String {
        format!("{}:sock:{sid}:b", self.prefix)
    }

    /// Channels a socket watches.
    pub fn watching(&self, sid: &SocketId) -> String {
        format!("{}:sock:{sid}:w", self.prefix)
    }

    /// Viewers waiting for a channel id that has no broadcaster yet: hash {v, d: JSON list}.
    pub fn lobby(&self, id: &ChannelId) -> String {
        format!("{}:lobby:{id}", self.prefix)
    }

    /// Channel ids a socket waits for.
    pub fn waiting(&self, sid: &SocketId) -> String {
        format!("{}:sock:{sid}:l", self.prefix)
    }

    /// How many viewers wait in all (the server-wide waiting-room limit).
    pub fn waiting_total(&self) -> String {
        format!("{}:waiting", self.prefix)
    }

    /// How many channels broadcasters at one address own.
    pub fn addr(&self, addr: &IpAddr) -> String {
        format!("{}:addr:{addr}", self.prefix)
    }

    /// Every node that has announced itself and not yet been reaped.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A node's heartbeat: it exists while the node lives.
    pub fn heartbeat(&self, node: &NodeId) -> String {
        format!("{}{node}", self.heartbeat_prefix())
    }

    /// What every heartbeat key starts with (the lease script checks a holder's heartbeat).
    pub fn heartbeat_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// A channel's lease: `"<node> <epoch>"` of its owner (see `lease.rs`).
    pub fn owner(&self, id: &ChannelId) -> String {
        format!("{}:owner:{id}", self.prefix)
    }

    /// A node's inbox (a pub/sub channel): operations forwarded to it, replies to its own
    /// (see `forward.rs`).
    pub fn inbox(&self, node: &NodeId) -> String {
        format!("{}:to:{node}", self.prefix)
    }

    /// Sockets of a node that joined some channel: what to clean up when it dies.
    pub fn node_sockets(&self, node: &NodeId) -> String {
        format!("{}:node:{node}:socks", self.prefix)
    }

    /// Held by the one survivor cleaning up after a dead node.
    pub fn reaper(&self, node: &NodeId) -> String {
        format!("{}:reap:{node}", self.prefix)
    }
}
