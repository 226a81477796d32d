//! Background work that no client event triggers: reaping idle channels (PROTOCOL.md
//! difference 4), ending relay-tree waits, and in cluster mode the node's heartbeat and the
//! clean-up after dead nodes.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::task::JoinHandle;

use super::handlers::{announce, emit_tree, send};
use super::limits::RateLimits;
use super::outbound::{BroadcasterDisconnected, ChannelExpired, ChannelRef};
use crate::channels::Registry;
use crate::cluster::node::{Beat, Node};
use crate::connection::Reconnector;
use crate::registry::clock::Moment;
use crate::webhooks::{EndReason, Webhooks};

/// Stops the background tasks when dropped, so their lifetime is the server's.
#[must_use = "the sweeper stops when this guard is dropped"]
pub struct SweeperGuard(Vec<JoinHandle<()>>);

impl Drop for SweeperGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How often to look for relay-tree viewers whose wait for a feeder ran out.
const WAIT_CHECK: Duration = Duration::from_millis(100);

/// How often to look for idle channels: often enough that a channel outlives its TTL by at most
/// a tenth of it (and never more than a minute), rarely enough to cost nothing.
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Starts the background work; reaped channels' broadcasters (still connected, or they would
/// have been removed on disconnect) get `channel_expired`. It also lets the rate limiters
/// forget clients that have gone quiet. In cluster mode every node sweeps; the registry's
/// compare-and-set makes exactly one of them act on each channel.
pub fn spawn_sweeper<A: Adapter>(
    registry: Registry,
    limits: Arc<RateLimits>,
    io: SocketIo<A>,
    node: Option<(Arc<Node>, Reconnector)>,
    webhooks: Webhooks,
) -> SweeperGuard {
    let period = sweep_interval(registry.limits().idle_ttl);
    let mut tasks = Vec::new();
    if let Some((node, reconnector)) = node {
        tasks.push(tokio::spawn(run_node(
            node,
            io.clone(),
            reconnector,
            webhooks.clone(),
        )));
    }
    tasks.push(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Relay-tree waits end within this of their deadline; the check touches only the
        // channels where somebody waits.
        let mut waits = tokio::time::interval(WAIT_CHECK);
        waits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = waits.tick() => {
                    let expired = registry.expire_waits(Moment::now()).await;
                    emit_tree(&io, &expired.tree).await;
                    webhooks.broadcasts_ended(&expired.abandoned, EndReason::NotResumed);
                    for closed in expired.abandoned {
                        tracing::info!(channel = %closed.channel_id, "channel closed: its broadcaster did not resume in time");
                        send(&io, &closed.viewers, &BroadcasterDisconnected).await;
                    }
                    continue;
                }
            }
            limits.forget_idle();
            let reaped = registry.sweep(Moment::now()).await;
            webhooks.broadcasts_ended(&reaped, EndReason::Expired);
            for closed in reaped {
                tracing::info!(channel = %closed.channel_id, "channel expired after idle TTL");
                let expired = ChannelExpired(ChannelRef {
                    channel_id: &closed.channel_id,
                });
                send(
                    &io,
                    std::slice::from_ref(&closed.broadcaster),
                    &expired,
                )
                .await;
            }
        }
    }));
    SweeperGuard(tasks)
}

/// The node's heartbeat and its watch over the others (timing in [`crate::cluster::node`]).
async fn run_node<A: Adapter>(
    node: Arc<Node>,
    io: SocketIo<A>,
    reconnector: Reconnector,
    webhooks: Webhooks,
) {
    let mut beat = tokio::time::interval(node.beat_interval());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(node.check_interval());
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if node.beat().await == Beat::Reaped {
                    // The cluster forgot this node (Redis lost its data, or took it for dead):
                    // its sockets are in no channel any more. Dropping their connections makes
                    // every client reconnect and join again (a Socket.IO disconnect would tell the
                    // official client to stay away), which restores a consistent picture.
                    tracing::warn!(node = %node.id(), "the cluster dropped this node's state; reconnecting its clients");
                    reconnector.drop_all();
                }
            }
            _ = look.tick() => {
                for departure in node.reap_dead().await {
                    announce(&io, &webhooks, departure).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_scales_with_ttl_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(50)),
            Duration::from_millis(100)
        );
    }
}
