//! What every scenario shares: the server under test and the steps they all take.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::probe;
use crate::report::Errors;
use crate::sio::{Conn, Target};

/// The server under test and where results go.
pub(crate) struct Ctx {
    pub(crate) target: Arc<Target>,
    /// The server's process ids (one per node), for memory and CPU figures from `/proc`.
    pub(crate) pids: Vec<u32>,
    pub(crate) label: String,
    pub(crate) json_out: Option<PathBuf>,
}

impl Ctx {
    /// Resident memory of the server: the sum over its nodes.
    pub(crate) fn rss_kib(&self) -> Option<f64> {
        self.sum(|pid| probe::rss_kib(pid).map(|v| v as f64))
    }

    /// CPU time of the server: the sum over its nodes.
    pub(crate) fn cpu_secs(&self) -> Option<f64> {
        self.sum(probe::cpu_secs)
    }

    /// A figure summed over every process, or `None` without processes or when one is gone.
    fn sum(&self, figure: impl Fn(u32) -> Option<f64>) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| figure(pid)).sum()
    }

    /// CPU time of the generator itself: shows when it, not the server, is the bottleneck.
    pub(crate) fn own_cpu_secs(&self) -> Option<f64> {
        probe::cpu_secs(std::process::id())
    }
}

/// A channel id unique to this run: `[a-z0-9-]`, at most 20 characters.
pub(crate) fn channel_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut n = (nanos as u64) ^ u64::from(std::process::id()) << 40;
    let mut suffix = String::new();
    for _ in 0..8 {
        suffix.push(b"abcdefghijklmnopqrstuvwxyz0123456789"[(n % 36) as usize] as char);
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

/// Connects the broadcaster of a new channel; returns it once `broadcaster_ready` arrives.
pub(crate) async fn broadcaster(
    ctx: &Ctx,
    channel: &str,
    deadline: Instant,
) -> Result<Conn, String> {
    let mut conn = Conn::connect(&ctx.target, 0, deadline).await?;
    conn.emit("join_as_broadcaster", &json!({ "channel_id": channel }));
    conn.expect("broadcaster_ready", deadline).await?;
    Ok(conn)
}

/// Connects `n` viewers with at most `concurrency` handshakes in flight; each joins `channel`
/// (when given) and waits for `broadcaster_available`. Failures are counted in `errors`.
pub(crate) async fn viewers(
    ctx: &Ctx,
    n: usize,
    channel: Option<&str>,
    concurrency: usize,
    deadline: Instant,
    errors: &Arc<Errors>,
) -> Vec<Conn> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let target = ctx.target.clone();
        let channel = channel.map(str::to_owned);
        set.spawn(async move {
            let _permit = permit;
            let mut conn = Conn::connect(&target, i + 1, deadline).await?;
            if let Some(channel) = channel {
                conn.emit("join_as_viewer", &json!({ "channel_id": channel }));
                conn.expect("broadcaster_available", deadline).await?;
            }
            Ok::<_, String>(conn)
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    conns
}

/// Waits until the server reports no socket and no channel (up to `limit`), so one scenario
/// does not measure the leftovers of the previous one. Returns the last counts seen.
pub(crate) async fn settle(ctx: &Ctx, limit: Duration) -> Result<probe::Health, String> {
    probe::wait_health(ctx.target.addr, limit, |h| {
        h.sockets == 0 && h.channels == 0
    })
    .await
}
