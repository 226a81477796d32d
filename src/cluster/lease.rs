//! Channel ownership: a lease in Redis with an epoch (a fencing token).
//!
//! One node, the channel's owner, runs the operations that change one channel alone (viewers
//! joining, relay-tree reports, a lone viewer's departure) in its batches; the other nodes
//! forward theirs to it (`forward.rs`). A crowd joining one channel over several nodes is then
//! one writer's batches instead of every node's compare-and-sets defeating each other.
//!
//! The lease is `<prefix>:owner:<channel>` = `"<node> <epoch>"`, with a time-to-live of 3H/2
//! (H: `--heartbeat-ms`), renewed with the node's heartbeat every H/3: it runs out when the
//! node's own heartbeat key does. The epoch is the channel document's `e` field, incremented
//! by every take: it grows for as long as the channel exists and goes with it. A node takes
//! the lease when nobody holds it or its holder's heartbeat is gone (a dead owner is replaced
//! at once, not when the lease runs out), normally when its broadcaster starts the channel.
//!
//! Every batch the owner writes carries its token, and the commit script refuses it unless the
//! lease still holds exactly that token: a paused or partitioned former owner cannot write once
//! a successor took over. Correctness never rests on the lease alone (every write is still a
//! compare-and-set on the channel's version); the lease decides who writes, so that writers do
//! not collide.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::NodeId;
use crate::registry::ids::ChannelId;

/// Takes the lease unless a live node holds it (the script says how).
pub(super) const TAKE: &str = include_str!("lease_take.lua");
/// Renews the leases this node holds, releasing those whose channel is gone.
pub(super) const RENEW: &str = include_str!("lease_renew.lua");
/// Releases the leases this node holds (at sign-off).
pub(super) const RELEASE: &str = include_str!("lease_release.lua");

/// The lease's time-to-live for a heartbeat interval H: 3H/2, like the node's heartbeat key, so
/// that a dead owner's lease runs out when its node is taken for dead.
pub(super) fn lease_ttl(heartbeat: Duration) -> Duration {
    heartbeat * 3 / 2
}

/// A lease as stored: its holder and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) node: NodeId,
    pub(super) epoch: u64,
}

impl Lease {
    /// Reads a stored token (`"<node> <epoch>"`); `None` for anything else.
    pub(super) fn parse(token: &str) -> Option<Self> {
        let (node, epoch) = token.split_once(' ')?;
        if node.is_empty() {
            return None;
        }
        Some(Self {
            node: NodeId::parse(node),
            epoch: epoch.parse().ok()?,
        })
    }

    /// The stored form, which the commit script compares exactly.
    pub(super) fn token(&self) -> String {
        format!("{} {}", self.node, self.epoch)
    }
}

/// Where an operation on a channel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// On this node: it owns the channel, or nobody does (no such channel: the rule answers).
    Here,
    /// On its owner.
    There(NodeId),
}

/// What this node knows of the owners: the leases it holds, until when it may act on them,
/// and the owners it recently forwarded to. Time is passed in, so that tests decide it.
#[derive(Debug)]
pub(super) struct Owners {
    me: NodeId,
    /// The lease's time-to-live.
    ttl: Duration,
    held: HashMap<ChannelId, Held>,
    seen: HashMap<ChannelId, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    /// Acting on the lease stops here: its time-to-live counted from before the command that
    /// took or renewed it was sent, so never later than Redis lets it run out.
    until: Instant,
}

#[derive(Debug, Clone)]
struct Seen {
    node: NodeId,
    at: Instant,
}

impl Owners {
    pub(super) fn new(me: NodeId, ttl: Duration) -> Self {
        Self {
            me,
            ttl,
            held: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// How long a remote owner is trusted without asking Redis again: a third of the lease, so
    /// that a node that handed its channels over (or died) is asked at most that long after.
    fn remote_trust(&self) -> Duration {
        self.ttl / 3
    }

    /// Where to run an operation on `id` without asking Redis, if this node knows.
    pub(super) fn route(&self, id: &ChannelId, now: Instant) -> Option<Route> {
        if let Some(held) = self.held.get(id)
            && now < held.until
        {
            return Some(Route::Here);
        }
        let seen = self.seen.get(id)?;
        (now.saturating_duration_since(seen.at) < self.remote_trust())
            .then(|| Route::There(seen.node.clone()))
    }

    /// The token of the lease this node may act on for `id` now, if any.
    pub(super) fn fence(&self, id: &ChannelId, now: Instant) -> Option<String> {
        let held = self.held.get(id).filter(|h| now < h.until)?;
        Some(
            Lease {
                node: self.me.clone(),
                epoch: held.epoch,
            }
            .token(),
        )
    }

    /// Records what a take answered (`sent`: when the take was sent); returns the route.
    pub(super) fn record(&mut self, id: &ChannelId, lease: Option<Lease>, sent: Instant) -> Route {
        match lease {
            None => {
                self.held.remove(id);
                self.seen.remove(id);
                Route::Here
            }
            Some(lease) if lease.node == self.me => {
                self.seen.remove(id);
                self.held.insert(
                    id.clone(),
                    Held {
                        epoch: lease.epoch,
                        until: sent + self.ttl,
                    },
                );
                Route::Here
            }
            Some(lease) => {
                self.held.remove(id);
                self.seen.insert(
                    id.clone(),
                    Seen {
                        node: lease.node.clone(),
                        at: sent,
                    },
                );
                Route::There(lease.node)
            }
        }
    }

    /// Forgets a remote owner that did not answer or said it no longer owns `id`.
    pub(super) fn forget_remote(&mut self, id: &ChannelId) {
        self.seen.remove(id);
    }

    /// Stops acting on a lease Redis says this node no longer holds.
    pub(super) fn lost(&mut self, id: &ChannelId) {
        self.held.remove(id);
    }

    /// Every lease this node holds, with its token, for renewal or release.
    pub(super) fn held(&self) -> Vec<(ChannelId, String)> {
        self.held
            .iter()
            .map(|(id, held)| {
                let lease = Lease {
                    node: self.me.clone(),
                    epoch: held.epoch,
                };
                (id.clone(), lease.token())
            })
            .collect()
    }

    /// Records a renewal sent at `sent`: the leases still held run until `sent + ttl`, the
    /// others are dropped. Each answer names a lease by its token, so a lease taken again
    /// meanwhile (a newer epoch) is left alone.
    pub(super) fn renewed(&mut self, answers: &[(ChannelId, String, bool)], sent: Instant) {
        for (id, token, kept) in answers {
            let Some(held) = self.held.get_mut(id) else {
                continue;
            };
            let me = Lease {
                node: self.me.clone(),
                epoch: held.epoch,
            };
            if me.token() != *token {
                continue;
            }
            if *kept {
                held.until = held.until.max(sent + self.ttl);
            } else {
                self.held.remove(id);
            }
        }
        self.seen
            .retain(|_, seen| sent.saturating_duration_since(seen.at) < self.ttl);
    }

    /// Forgets every lease (after releasing them at sign-off).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(3000);

    fn owners() -> Owners {
        Owners::new(NodeId::parse("a"), TTL)
    }

    fn lease(node: &str, epoch: u64) -> Option<Lease> {
        Some(Lease {
            node: NodeId::parse(node),
            epoch,
        })
    }

    #[test]
    fn tokens_read_back_and_nonsense_is_refused() {
        let l = Lease {
            node: NodeId::parse("0123abcd"),
            epoch: 42,
        };
        assert_eq!(Lease::parse(&l.token()), Some(l));
        for bad in ["", "node", " 3", "node x", "node -1", "node 1.5"] {
            assert_eq!(Lease::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_held_lease_routes_here_until_its_time_runs_out() {
        let mut o = owners();
        let id = ChannelId::from("c");
        let t0 = Instant::now();
        assert_eq!(o.route(&id, t0), None, "unknown: ask Redis");
        assert_eq!(o.record(&id, lease("a", 7), t0), Route::Here);
        assert_eq!(o.route(&id, t0 + TTL / 2), Some(Route::Here));
        assert_eq!(o.fence(&id, t0 + TTL / 2).as_deref(), Some("a 7"));
        assert_eq!(o.route(&id, t0 + TTL), None, "expired: ask again");
        assert_eq!(
            o.fence(&id, t0 + TTL),
            None,
            "never acts on an expired lease"
        );
    }

    #[test]
    fn renewal_extends_only_the_lease_it_names() {
        let mut o = owners();
        let id = ChannelId::from("c");
        let t0 = Instant::now();
        o.record(&id, lease("a", 1), t0);
        let sent = t0 + TTL / 3;
        o.renewed(&[(id.clone(), "a 1".into(), true)], sent);
        assert_eq!(o.route(&id, t0 + TTL), Some(Route::Here));
        // Taken again meanwhile (epoch 2): an answer about epoch 1 changes nothing.
        o.record(&id, lease("a", 2), sent);
        o.renewed(&[(id.clone(), "a 1".into(), false)], sent);
        assert_eq!(o.fence(&id, sent).as_deref(), Some("a 2"));
        o.renewed(&[(id.clone(), "a 2".into(), false)], sent);
        assert_eq!(o.route(&id, sent), None, "lost: ask again");
    }

    #[test]
    fn a_remote_owner_is_trusted_briefly_and_forgotten_on_silence() {
        let mut o = owners();
        let id = ChannelId::from("c");
        let t0 = Instant::now();
        let b = NodeId::parse("b");
        assert_eq!(o.record(&id, lease("b", 3), t0), Route::There(b.clone()));
        assert_eq!(o.route(&id, t0), Some(Route::There(b)));
        assert_eq!(o.fence(&id, t0), None);
        assert_eq!(o.route(&id, t0 + TTL / 3), None);
        o.record(&id, lease("b", 3), t0);
        o.forget_remote(&id);
        assert_eq!(o.route(&id, t0), None);
    }

    #[test]
    fn remembered_remote_owners_age_out_with_the_heartbeat() {
        let mut o = owners();
        let t0 = Instant::now();
        for n in 0..100 {
            o.record(
                &ChannelId::from(format!("c{n}").as_str()),
                lease("b", 1),
                t0,
            );
        }
        o.renewed(&[], t0 + TTL / 2);
        assert_eq!(o.seen.len(), 100, "still young");
        o.renewed(&[], t0 + TTL);
        assert!(
            o.seen.is_empty(),
            "a node that owns nothing forgets them too"
        );
    }

    #[test]
    fn no_channel_runs_here_unfenced() {
        let mut o = owners();
        let id = ChannelId::from("c");
        let t0 = Instant::now();
        o.record(&id, lease("a", 1), t0);
        assert_eq!(o.record(&id, None, t0), Route::Here);
        assert_eq!(o.fence(&id, t0), None);
        assert!(o.held().is_empty());
    }
}
