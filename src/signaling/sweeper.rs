//! Background reaping of abandoned channels (PROTOCOL.md difference 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketioxide::SocketIo;
use tokio::task::JoinHandle;

use super::channels::Registry;
use super::handlers::{deliver, emit_tree};
use super::limits::RateLimits;
use super::payloads::ChannelRef;

/// Stops the sweeper when dropped, so its lifetime is the server's and never leaks past it.
#[must_use = "the sweeper stops when this guard is dropped"]
pub struct SweeperGuard(JoinHandle<()>);

impl Drop for SweeperGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often to look for relay-tree viewers whose wait for a feeder ran out.
const WAIT_CHECK: Duration = Duration::from_millis(100);

/// How often to look for idle channels: often enough that a channel outlives its TTL by at most
/// a tenth of it (and never more than a minute), rarely enough to cost nothing.
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Starts the sweeper; reaped channels' broadcasters (still connected, or they would have been
/// removed on disconnect) get `channel_expired`.
/// It also lets the rate limiters forget clients that have gone quiet.
pub fn spawn_sweeper(registry: Registry, limits: Arc<RateLimits>, io: SocketIo) -> SweeperGuard {
    let period = sweep_interval(registry.limits().idle_ttl);
    SweeperGuard(tokio::spawn(async move {
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
                    let events = registry.expire_waits(Instant::now());
                    emit_tree(&|to| io.to(to), &events);
                    continue;
                }
            }
            limits.forget_idle();
            for closed in registry.sweep(Instant::now()) {
                tracing::info!(channel = %closed.channel_id, "channel expired after idle TTL");
                deliver(
                    io.to(closed.broadcaster.to_string()).emit(
                        "channel_expired",
                        &ChannelRef {
                            channel_id: &closed.channel_id,
                        },
                    ),
                    "channel_expired",
                );
            }
        }
    }))
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
