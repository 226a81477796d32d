//! `churn N`: N viewer slots join and leave one channel continuously for a fixed time (each
//! cycle: connect, `join_as_viewer`, wait for `broadcaster_available`, close).
//!
//! It runs in phases of equal length. A leak grows the server's memory with every cycle, so it
//! shows as growth from one phase to the next; memory the allocator merely keeps after the first
//! phase does not grow again. Afterwards `/healthz` must count no channel and no socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{self, Ctx};
use crate::probe;
use crate::report::{Errors, Latency, Report};
use crate::sio::{Conn, Target};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChurnArgs {
    /// Viewer slots cycling at the same time.
    pub(crate) viewers: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 15)]
    pub(crate) secs: u64,
    /// Number of phases (at least 2 to tell a leak from allocator retention).
    #[arg(long, default_value_t = 2)]
    pub(crate) phases: usize,
    /// Phase-to-phase memory growth tolerated, in KiB, on top of 5% of the server's RSS.
    #[arg(long, default_value_t = 4096)]
    pub(crate) tolerance_kib: u64,
}

/// One slot: cycle until `until`, return the join latencies.
async fn slot(
    target: Arc<Target>,
    slot: usize,
    slots: usize,
    channel: String,
    until: Instant,
    cycles: Arc<AtomicU64>,
    errors: Arc<Errors>,
) -> Latency {
    let mut latency = Latency::default();
    let mut round = 0;
    while Instant::now() < until {
        // A fresh source address and port every cycle, as new browser tabs would have.
        let index = 1 + slot + round * slots;
        round += 1;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        let joined = async {
            let mut conn = Conn::connect(&target, index, deadline).await?;
            conn.emit("join_as_viewer", &json!({ "channel_id": channel }));
            conn.expect("broadcaster_available", deadline).await?;
            Ok::<_, String>(conn)
        }
        .await;
        match joined {
            Ok(conn) => {
                latency.record(started.elapsed());
                cycles.fetch_add(1, Ordering::Relaxed);
                drop(conn);
            }
            Err(e) => {
                errors.add(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    latency
}

/// Waits until only the broadcaster is left, then reads the server's memory.
async fn quiet_rss(ctx: &Ctx, errors: &Errors) -> Option<f64> {
    match probe::wait_health(ctx.target.addr, Duration::from_secs(30), |h| h.sockets <= 1).await {
        Ok(h) if h.sockets <= 1 => {}
        Ok(h) => errors.add(format!("{} sockets still counted after a phase", h.sockets)),
        Err(e) => errors.add(e),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.rss_kib()
}

pub(crate) async fn run(ctx: &Ctx, args: &ChurnArgs) -> Report {
    let mut report = Report::new("churn", &ctx.label);
    report.param("viewers", args.viewers);
    report.param("secs_per_phase", args.secs);
    report.param("phases", args.phases);
    let errors = Arc::new(Errors::default());
    if ctx.pids.is_empty() {
        report.note("no --pid: the leak check needs the server's memory; only healthz is checked");
    }
    let channel = common::channel_name("churn");
    let broadcaster =
        match common::broadcaster(ctx, &channel, Instant::now() + Duration::from_secs(30)).await {
            Ok(conn) => conn,
            Err(e) => {
                report.fail(format!("broadcaster: {e}"));
                return report;
            }
        };
    // The broadcaster hears every join and leave (viewer_count); keep its inbox drained.
    let broadcaster_dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let broadcaster = broadcaster.hold(broadcaster_dropped.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rss_before = ctx.rss_kib();
    let cycles = Arc::new(AtomicU64::new(0));
    let mut latency = Latency::default();
    let mut rss_phases = Vec::new();
    let drops_before = probe::listen_drops();
    let started = Instant::now();
    for _ in 0..args.phases.max(1) {
        let until = Instant::now() + Duration::from_secs(args.secs);
        let mut set = JoinSet::new();
        for s in 0..args.viewers {
            set.spawn(slot(
                ctx.target.clone(),
                s,
                args.viewers,
                channel.clone(),
                until,
                cycles.clone(),
                errors.clone(),
            ));
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(l) => latency.merge(&l),
                Err(e) => errors.add(format!("task: {e}")),
            }
        }
        rss_phases.push(quiet_rss(ctx, &errors).await);
    }
    let churn_time = started.elapsed().as_secs_f64();
    if broadcaster_dropped.load(Ordering::Relaxed) > 0 {
        errors.add("the broadcaster was disconnected during churn");
    }
    drop(broadcaster);
    let leftover = common::settle(ctx, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = ctx.rss_kib();

    let total = cycles.load(Ordering::Relaxed);
    let first = rss_phases.first().copied().flatten();
    let last = rss_phases.last().copied().flatten();
    let growth = if rss_phases.len() >= 2 {
        first.zip(last).map(|(a, b)| b - a)
    } else {
        None
    };
    report.figure("viewers", args.viewers as f64);
    report.figure("cycles", total as f64);
    report.figure("cycles_per_s", total as f64 / churn_time.max(1e-9));
    report.figure("join_p50_ms", latency.ms(0.50));
    report.figure("join_p99_ms", latency.ms(0.99));
    report.figure("join_max_ms", latency.max_ms());
    report.figure(
        "listen_drops",
        drops_before
            .zip(probe::listen_drops())
            .map(|(a, b)| (b - a) as f64),
    );
    report.figure("rss_before_kib", rss_before);
    for (i, rss) in rss_phases.iter().enumerate() {
        report.figure(&format!("rss_after_phase{}_kib", i + 1), *rss);
    }
    report.figure("rss_after_kib", rss_after);
    report.figure("rss_phase_growth_kib", growth);
    report.figure(
        "rss_return_kib",
        rss_before.zip(rss_after).map(|(a, b)| b - a),
    );
    match leftover {
        Ok(h) => {
            report.figure("leftover_channels", h.channels as f64);
            report.figure("leftover_sockets", h.sockets as f64);
            if h.channels != 0 || h.sockets != 0 {
                report.fail(format!(
                    "healthz still counts {} channels and {} sockets",
                    h.channels, h.sockets
                ));
            }
        }
        Err(e) => errors.add(e),
    }
    if let (Some(growth), Some(last)) = (growth, last) {
        let tolerance = args.tolerance_kib as f64 + 0.05 * last;
        if growth > tolerance {
            report.fail(format!(
                "memory grew {growth:.0} KiB from the first phase to the last (tolerance {tolerance:.0} KiB): leak suspected"
            ));
        }
    }
    report.errors(&errors);
    report
}
