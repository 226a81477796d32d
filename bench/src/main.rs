//! Load generator for the broadcast signaling server (and any server speaking its protocol).
//!
//! It speaks Socket.IO v5 over WebSocket with a client of its own (`sio`), targets loopback
//! only, and every scenario is bounded in count and time. Each scenario prints a table and one
//! JSON line; `compare` lays two servers' JSON lines side by side.

mod churn;
mod common;
mod fanout;
mod idle;
mod probe;
mod report;
mod sdp;
mod sio;
mod storm;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use common::Ctx;
use report::Report;

#[derive(Parser)]
#[command(
    version,
    about = "Socket.IO load generator for the signaling server (loopback only)"
)]
struct Cli {
    /// The server under test (loopback only).
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Several nodes of one cluster instead of `--url` (comma separated, loopback only): the
    /// broadcaster connects to the first, viewers round-robin to all (`storm`, `fanout` and
    /// `tree`).
    #[arg(long, global = true, value_delimiter = ',', conflicts_with = "url")]
    nodes: Vec<String>,
    /// The server's process id, for memory and CPU figures; with several nodes, each node's
    /// (comma separated): the figures are sums over them.
    #[arg(long, global = true, value_delimiter = ',')]
    pid: Vec<u32>,
    /// A name for the server in the results.
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// Append each scenario's JSON line to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    /// Loopback source addresses to spread connections over (127.0.0.2 upwards).
    #[arg(long, global = true, default_value_t = 32)]
    source_ips: usize,
    /// Worker threads of the generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N viewers join and negotiate with one broadcaster.
    Storm(storm::StormArgs),
    /// V viewers chat in one channel; everyone receives every message.
    Fanout(fanout::FanoutArgs),
    /// N sockets held idle: memory per connection and idle CPU.
    Idle(idle::IdleArgs),
    /// N viewers join and leave continuously; memory must not grow and nothing may be left.
    Churn(churn::ChurnArgs),
    /// N viewers join the relay tree; the depth-1 relay with the largest subtree leaves.
    Tree(tree::TreeArgs),
    /// All four scenarios in turn, waiting for the server to be empty between them.
    All(AllArgs),
    /// Side-by-side table of two servers' JSON lines: ours, the peer's, and the ratio.
    Compare { ours: PathBuf, peer: PathBuf },
    /// Table of several runs' JSON lines (e.g. in-memory, 1 node on Redis, 2 nodes on Redis),
    /// each with its ratio to the first.
    Ratios {
        /// The run the others are measured against.
        base: PathBuf,
        /// The other runs.
        #[arg(required = true)]
        others: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct AllArgs {
    /// Viewers of `storm`.
    #[arg(long, default_value_t = 2000)]
    storm: usize,
    /// Viewers of `fanout`.
    #[arg(long, default_value_t = 200)]
    fanout_viewers: usize,
    /// Messages per rate step of `fanout`.
    #[arg(long, default_value_t = 2000)]
    fanout_messages: usize,
    /// Offered rates of `fanout` (messages/s, comma separated); default: automatic sweep.
    #[arg(long, value_delimiter = ',')]
    fanout_rates: Vec<f64>,
    /// Sockets of `idle`.
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Hold time of `idle`.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Viewer slots of `churn`.
    #[arg(long, default_value_t = 500)]
    churn: usize,
    /// Seconds per phase of `churn`.
    #[arg(long, default_value_t = 15)]
    churn_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tables = match &cli.command {
        Command::Compare { ours, peer } => Some(report::compare(ours, peer)),
        Command::Ratios { base, others } => Some(report::ratios(base, others)),
        _ => None,
    };
    if let Some(printed) = tables {
        return match printed {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let target = match target(&cli) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let ctx = Ctx {
        target,
        pids: cli.pid.clone(),
        label: cli.label.clone(),
        json_out: cli.json_out.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .expect("the generator needs a tokio runtime");
    let ok = runtime.block_on(run(&ctx, cli.command));
    // Connections still closing in the background need not be waited for.
    runtime.shutdown_timeout(Duration::from_secs(2));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The server under test from `--url` or `--nodes`. Only `storm`, `fanout` and `tree` know how
/// to spread over several nodes: the others read one server's `/healthz` for their verdicts.
fn target(cli: &Cli) -> Result<sio::Target, String> {
    if cli.nodes.is_empty() {
        return sio::Target::parse(&cli.url, cli.source_ips).map_err(|e| format!("--url {e}"));
    }
    let urls: Vec<&str> = cli.nodes.iter().map(String::as_str).collect();
    let target = sio::Target::nodes(&urls, cli.source_ips).map_err(|e| format!("--nodes {e}"))?;
    let spreads = matches!(
        cli.command,
        Command::Storm(_) | Command::Fanout(_) | Command::Tree(_)
    );
    if target.node_count() > 1 && !spreads {
        return Err(
            "--nodes with more than one node: only storm, fanout and tree spread over several nodes"
                .into(),
        );
    }
    if !cli.pid.is_empty() && cli.pid.len() != target.node_count() {
        return Err(format!(
            "--pid: {} process ids for {} nodes (give one per node, in the same order)",
            cli.pid.len(),
            target.node_count()
        ));
    }
    Ok(target)
}

async fn run(ctx: &Ctx, command: Command) -> bool {
    let mut reports: Vec<Report> = Vec::new();
    let mut emit = |r: Report| {
        r.print(ctx.json_out.as_deref());
        let ok = r.ok;
        reports.push(r);
        ok
    };
    match command {
        Command::Storm(a) => emit(storm::run(ctx, &a).await),
        Command::Fanout(a) => emit(fanout::run(ctx, &a).await),
        Command::Idle(a) => emit(idle::run(ctx, &a).await),
        Command::Churn(a) => emit(churn::run(ctx, &a).await),
        Command::Tree(a) => emit(tree::run(ctx, &a).await),
        Command::All(a) => {
            let mut ok = true;
            between(ctx).await;
            let storm = storm::StormArgs {
                viewers: a.storm,
                concurrency: 200,
                candidates: 4,
                timeout_secs: 300,
            };
            ok &= emit(storm::run(ctx, &storm).await);
            between(ctx).await;
            let fanout = fanout::FanoutArgs {
                viewers: a.fanout_viewers,
                messages: a.fanout_messages,
                rates: a.fanout_rates.clone(),
                start_deliveries: 20_000.0,
                max_steps: 12,
                min_step_secs: 3.0,
                drain_secs: 5,
                slo_p99_ms: 1000.0,
                msg_chars: 64,
                refine: 2,
                concurrency: 200,
            };
            ok &= emit(fanout::run(ctx, &fanout).await);
            between(ctx).await;
            let idle = idle::IdleArgs {
                connections: a.idle,
                hold_secs: a.idle_secs,
                concurrency: 200,
            };
            ok &= emit(idle::run(ctx, &idle).await);
            between(ctx).await;
            let churn = churn::ChurnArgs {
                viewers: a.churn,
                secs: a.churn_secs,
                phases: 2,
                tolerance_kib: 4096,
            };
            ok &= emit(churn::run(ctx, &churn).await);
            ok
        }
        Command::Compare { .. } | Command::Ratios { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// Waits for the server to be empty again so one scenario does not measure another's leftovers.
async fn between(ctx: &Ctx) {
    if let Ok(h) = common::settle(ctx, Duration::from_secs(60)).await
        && (h.sockets != 0 || h.channels != 0)
    {
        eprintln!("warning: the server still counts {h:?} before the next scenario");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}
