//! `idle N`: N Socket.IO sockets connected and held (only pings flow) for a fixed time.
//! Figures: the server's resident memory per connection (`VmRSS` before connecting and while
//! held) and its CPU use while idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, Ctx};
use crate::probe;
use crate::report::{Errors, Report};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IdleArgs {
    /// Number of sockets.
    pub(crate) connections: usize,
    /// How long to hold them once all are connected.
    #[arg(long, default_value_t = 30)]
    pub(crate) hold_secs: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub(crate) concurrency: usize,
}

pub(crate) async fn run(ctx: &Ctx, args: &IdleArgs) -> Report {
    let mut report = Report::new("idle", &ctx.label);
    report.param("connections", args.connections);
    report.param("hold_secs", args.hold_secs);
    let errors = Arc::new(Errors::default());
    if let Some(limit) = probe::open_files_limit()
        && args.connections as u64 + 64 > limit
    {
        report.fail(format!(
            "{} sockets need more open files than this process may have ({limit}); raise `ulimit -n`",
            args.connections
        ));
        return report;
    }
    if ctx.pids.is_empty() {
        report.note("no --pid: memory and CPU figures are not available");
    }

    let rss_before = ctx.rss_kib();
    let own_before = probe::own_rss_kib();
    let drops_before = probe::listen_drops();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    let conns = common::viewers(
        ctx,
        args.connections,
        None,
        args.concurrency,
        deadline,
        &errors,
    )
    .await;
    let connect_time = start.elapsed();
    let drops = drops_before
        .zip(probe::listen_drops())
        .map(|(a, b)| (b - a) as f64);
    let connected = conns.len();
    let dropped = Arc::new(AtomicUsize::new(0));
    let held: Vec<_> = conns.into_iter().map(|c| c.hold(dropped.clone())).collect();

    // Let the connection burst settle before the idle window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held_start = ctx.rss_kib();
    let cpu_start = ctx.cpu_secs();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let cpu_end = ctx.cpu_secs();
    let window = window.elapsed().as_secs_f64();
    let rss_held = ctx.rss_kib();
    let own_held = probe::own_rss_kib();
    let health = probe::healthz(ctx.target.addr).await;
    let lost = dropped.load(Ordering::Relaxed);

    drop(held);
    let after = common::settle(ctx, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = ctx.rss_kib();

    let per_conn = |before: Option<f64>, held: Option<f64>| {
        before
            .zip(held)
            .filter(|_| connected > 0)
            .map(|(b, h)| (h - b) * 1024.0 / connected as f64)
    };
    report.figure("connections", args.connections as f64);
    report.figure("connected", connected as f64);
    report.figure(
        "connect_per_s",
        connected as f64 / connect_time.as_secs_f64().max(1e-9),
    );
    report.figure("listen_drops", drops);
    report.figure("rss_before_kib", rss_before);
    report.figure("rss_held_kib", rss_held);
    report.figure("rss_per_conn_bytes", per_conn(rss_before, rss_held));
    report.figure(
        "rss_growth_during_hold_kib",
        rss_held_start.zip(rss_held).map(|(a, b)| b - a),
    );
    report.figure(
        "cpu_idle_pct",
        cpu_start
            .zip(cpu_end)
            .map(|(a, b)| 100.0 * (b - a) / window),
    );
    report.figure("rss_after_close_kib", rss_after);
    report.figure(
        "bench_rss_per_conn_bytes",
        per_conn(own_before.map(|v| v as f64), own_held.map(|v| v as f64)),
    );
    match health {
        Ok(h) if h.sockets as usize >= connected => {}
        Ok(h) => errors.add(format!(
            "healthz counted {} sockets while {connected} were held",
            h.sockets
        )),
        Err(e) => errors.add(e),
    }
    match after {
        Ok(h) if h.sockets == 0 && h.channels == 0 => {}
        Ok(h) => errors.add(format!(
            "after closing, healthz still counts {} sockets and {} channels",
            h.sockets, h.channels
        )),
        Err(e) => errors.add(e),
    }
    if lost > 0 {
        errors.add(format!("{lost} idle sockets were closed by the server"));
    }
    report.errors(&errors);
    report
}
