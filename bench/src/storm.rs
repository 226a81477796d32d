//! `storm N`: one broadcaster; N viewers arrive with bounded concurrency, join, and negotiate
//! (offer with a ~3 KB SDP → immediate answer, 4 ICE candidates each way).
//!
//! A viewer counts as negotiated once it has the answer and all the broadcaster's candidates;
//! the storm is over once every viewer is negotiated and the broadcaster has every viewer's
//! candidates. Connections stay open until the end, as real viewers would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::common::{self, Ctx};
use crate::probe;
use crate::report::{Errors, Latency, Report};
use crate::sdp;
use crate::sio::{Conn, Held};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StormArgs {
    /// Number of viewers.
    pub(crate) viewers: usize,
    /// Viewers connecting and negotiating at the same time.
    #[arg(long, default_value_t = 200)]
    pub(crate) concurrency: usize,
    /// ICE candidates each side sends per negotiation.
    #[arg(long, default_value_t = 4)]
    pub(crate) candidates: u32,
    /// Give up after this long.
    #[arg(long, default_value_t = 180)]
    pub(crate) timeout_secs: u64,
}

fn packet(event: &str, target: &str, field: &str, body: &str) -> String {
    format!(
        "42[\"{event}\",{{\"target\":{},\"{field}\":{body}}}]",
        Value::String(target.to_owned())
    )
}

/// What the broadcaster saw.
#[derive(Default)]
struct BroadcasterCounts {
    offers: AtomicUsize,
    candidates: AtomicUsize,
}

/// Answers every offer at once with an answer and its candidates; counts viewers' candidates.
async fn run_broadcaster(
    mut conn: Conn,
    candidates: u32,
    counts: Arc<BroadcasterCounts>,
    errors: Arc<Errors>,
    mut stop: oneshot::Receiver<()>,
) -> Conn {
    let emitter = conn.emitter();
    let answer = sdp::answer();
    let own: Vec<String> = (0..candidates).map(|k| sdp::candidate(0, k)).collect();
    loop {
        let frame = tokio::select! {
            frame = conn.recv() => frame,
            _ = &mut stop => break,
        };
        let Some(frame) = frame else {
            errors.add("broadcaster connection closed");
            break;
        };
        match frame.name() {
            "offer" => {
                let payload = frame.payload();
                let Some(sender) = payload["sender"].as_str() else {
                    errors.add(format!("offer without sender: {}", frame.describe()));
                    continue;
                };
                emitter.raw(packet("answer", sender, "sdp", &answer));
                for c in &own {
                    emitter.raw(packet("ice_candidate", sender, "candidate", c));
                }
                counts.offers.fetch_add(1, Ordering::Relaxed);
            }
            "ice_candidate" => {
                counts.candidates.fetch_add(1, Ordering::Relaxed);
            }
            "error" | "relay_error" => errors.add(format!("broadcaster got {}", frame.describe())),
            _ => {}
        }
    }
    conn
}

struct Negotiated {
    held: Held,
    offer_to_answer: Duration,
    done: Instant,
    /// The node the viewer is connected to.
    node: usize,
}

/// One viewer: connect, join, offer, trickle, and wait for the answer and candidates.
async fn run_viewer(
    ctx_target: Arc<crate::sio::Target>,
    i: usize,
    channel: String,
    broadcaster_sid: Arc<str>,
    candidates: u32,
    deadline: Instant,
    dropped: Arc<AtomicUsize>,
) -> Result<Negotiated, String> {
    let mut conn = Conn::connect(&ctx_target, i, deadline).await?;
    let node = conn.node;
    conn.emit(
        "join_as_viewer",
        &serde_json::json!({ "channel_id": channel }),
    );
    let available = conn
        .expect("broadcaster_available", deadline)
        .await?
        .payload();
    let broadcaster = available["broadcaster_id"]
        .as_str()
        .ok_or("broadcaster_available without broadcaster_id")?
        .to_owned();
    if *broadcaster != *broadcaster_sid {
        return Err(format!(
            "broadcaster_available names {broadcaster}, but the broadcaster's socket id is {broadcaster_sid}"
        ));
    }
    let emitter = conn.emitter();
    let offer = sdp::offer(i as u64);
    let sent = Instant::now();
    emitter.raw(packet("offer", &broadcaster, "sdp", &offer));
    for k in 0..candidates {
        emitter.raw(packet(
            "ice_candidate",
            &broadcaster,
            "candidate",
            &sdp::candidate(i as u64, k),
        ));
    }
    let mut answered = None;
    let mut received = 0;
    while answered.is_none() || received < candidates {
        let frame = tokio::time::timeout_at(deadline.into(), conn.recv())
            .await
            .map_err(|_| "timed out waiting for answer and candidates".to_string())?
            .ok_or("connection closed before negotiation finished")?;
        match frame.name() {
            "answer" => answered = Some(frame.at),
            "ice_candidate" => received += 1,
            "error" | "relay_error" | "broadcaster_disconnected" => {
                return Err(format!("viewer got {}", frame.describe()));
            }
            _ => {}
        }
    }
    let answered = answered.unwrap_or(sent);
    Ok(Negotiated {
        held: conn.hold(dropped),
        offer_to_answer: answered.duration_since(sent),
        done: Instant::now(),
        node,
    })
}

pub(crate) async fn run(ctx: &Ctx, args: &StormArgs) -> Report {
    let mut report = Report::new("storm", &ctx.label);
    report.param("viewers", args.viewers);
    report.param("concurrency", args.concurrency);
    report.param("candidates", args.candidates);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let errors = Arc::new(Errors::default());
    let channel = common::channel_name("storm");

    let broadcaster = match common::broadcaster(ctx, &channel, deadline).await {
        Ok(conn) => conn,
        Err(e) => {
            report.fail(format!("broadcaster: {e}"));
            return report;
        }
    };
    let broadcaster_sid: Arc<str> = Arc::from(broadcaster.sid.as_str());
    let broadcaster_node = broadcaster.node;
    let counts = Arc::new(BroadcasterCounts::default());
    let (stop, stop_rx) = oneshot::channel();
    let answering = tokio::spawn(run_broadcaster(
        broadcaster,
        args.candidates,
        counts.clone(),
        errors.clone(),
        stop_rx,
    ));

    let cpu_before = ctx.cpu_secs();
    let drops_before = probe::listen_drops();
    let own_before = ctx.own_cpu_secs();
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..args.viewers {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let target = ctx.target.clone();
        let channel = channel.clone();
        let broadcaster_sid = broadcaster_sid.clone();
        let dropped = dropped.clone();
        let candidates = args.candidates;
        set.spawn(async move {
            let result = run_viewer(
                target,
                i + 1,
                channel,
                broadcaster_sid,
                candidates,
                deadline,
                dropped,
            )
            .await;
            drop(permit);
            result
        });
    }
    let mut latency = Latency::default();
    // With several nodes: viewers on the broadcaster's node, and viewers on another, whose
    // offer and answer each cross from one node to the other.
    let mut same_node = Latency::default();
    let mut cross_node = Latency::default();
    let mut held = Vec::with_capacity(args.viewers);
    let mut last_done = start;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(n)) => {
                latency.record(n.offer_to_answer);
                if n.node == broadcaster_node {
                    same_node.record(n.offer_to_answer);
                } else {
                    cross_node.record(n.offer_to_answer);
                }
                last_done = last_done.max(n.done);
                held.push(n.held);
            }
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    // The broadcaster must also have every negotiated viewer's candidates.
    let expected = held.len() * args.candidates as usize;
    let complete_before = counts.candidates.load(Ordering::Relaxed) >= expected;
    while counts.candidates.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = counts.candidates.load(Ordering::Relaxed);
    if got < expected {
        errors.add(format!(
            "broadcaster received {got} of {expected} candidates"
        ));
    }
    let all_done = if complete_before {
        last_done
    } else {
        Instant::now().max(last_done)
    };
    let wall = all_done.duration_since(start);
    let cpu_after = ctx.cpu_secs();
    let own_after = ctx.own_cpu_secs();
    let rss = ctx.rss_kib();
    let negotiated = held.len();

    report.figure("viewers", args.viewers as f64);
    report.figure("negotiated", negotiated as f64);
    report.figure("wall_s", wall.as_secs_f64());
    report.figure(
        "negotiations_per_s",
        negotiated as f64 / wall.as_secs_f64().max(1e-9),
    );
    report.figure("offer_answer_p50_ms", latency.ms(0.50));
    report.figure("offer_answer_p95_ms", latency.ms(0.95));
    report.figure("offer_answer_p99_ms", latency.ms(0.99));
    report.figure("offer_answer_max_ms", latency.max_ms());
    if ctx.target.node_count() > 1 {
        report.figure("offer_answer_same_node_p50_ms", same_node.ms(0.50));
        report.figure("offer_answer_same_node_p99_ms", same_node.ms(0.99));
        report.figure("offer_answer_cross_node_p50_ms", cross_node.ms(0.50));
        report.figure("offer_answer_cross_node_p99_ms", cross_node.ms(0.99));
    }
    report.figure(
        "server_cpu_s",
        cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    );
    report.figure("bench_cpu_s", own_before.zip(own_after).map(|(a, b)| b - a));
    report.figure("server_rss_kib", rss);
    report.figure(
        "listen_drops",
        drops_before
            .zip(probe::listen_drops())
            .map(|(a, b)| (b - a) as f64),
    );
    let lost = dropped.load(Ordering::Relaxed);
    if lost > 0 {
        errors.add(format!(
            "{lost} negotiated viewers were disconnected by the server"
        ));
    }
    report.errors(&errors);
    if negotiated < args.viewers {
        report.fail(format!(
            "{negotiated} of {} viewers negotiated",
            args.viewers
        ));
    }

    let _ = stop.send(());
    drop(held);
    if let Ok(conn) = answering.await {
        drop(conn);
    }
    report
}
