//! `fanout V M`: one channel with V viewers; the viewers send M chat messages in total at a fixed
//! offered rate (round robin over senders), and every participant (the broadcaster and all
//! viewers, the sender included) must receive each one.
//!
//! The rate is swept upwards (doubling, or the list given with `--rates`) and the sweep stops at
//! the first step that loses or reorders a message or misses the p99 latency objective; the
//! figures are those of the highest step that held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::common::{self, Ctx};
use crate::report::{Errors, Latency, Report};
use crate::sio::{Conn, Emitter};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Number of viewers in the channel.
    pub(crate) viewers: usize,
    /// Chat messages sent per rate step, over all senders (more if `--min-step-secs` needs it).
    pub(crate) messages: usize,
    /// Offered rates to try, in messages per second (comma separated). Default: start at
    /// `--start-deliveries` deliveries per second and double.
    #[arg(long, value_delimiter = ',')]
    pub(crate) rates: Vec<f64>,
    /// First automatic step, in deliveries per second (messages/s × participants).
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) start_deliveries: f64,
    /// Most automatic steps.
    #[arg(long, default_value_t = 12)]
    pub(crate) max_steps: usize,
    /// How long to wait for stragglers after the last send of a step.
    #[arg(long, default_value_t = 5)]
    pub(crate) drain_secs: u64,
    /// A step whose p99 delivery latency exceeds this did not hold.
    #[arg(long, default_value_t = 1000.0)]
    pub slo_p99_ms: f64,
    /// Length of each chat message, in characters (the protocol allows 1 to 200).
    #[arg(long, default_value_t = 64)]
    pub(crate) msg_chars: usize,
    /// Each step lasts at least this long at its rate (sends more than M messages if needed).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) min_step_secs: f64,
    /// Bisection steps between the last rate that held and the first that did not.
    #[arg(long, default_value_t = 2)]
    pub(crate) refine: usize,
    /// Viewers connecting at the same time during setup.
    #[arg(long, default_value_t = 200)]
    pub(crate) concurrency: usize,
}

/// What one participant received during one step.
struct Received {
    count: u64,
    reordered: u64,
    stale: u64,
    last_at: Option<Instant>,
    latency: Latency,
    /// With several nodes: messages sent from this participant's node, and from another.
    same_node: Latency,
    cross_node: Latency,
}

/// The outcome of one rate step.
struct Step {
    rate: f64,
    offered_per_s: f64,
    delivered: u64,
    expected: u64,
    reordered: u64,
    /// Messages of an earlier step that arrived during this one (a backlog draining).
    stale: u64,
    deliveries_per_s: f64,
    latency: Latency,
    /// Deliveries to a participant on the sender's node, and on another node (one hop through
    /// the cluster's relay on the way).
    same_node: Latency,
    cross_node: Latency,
    held: bool,
}

/// The viewers that send, and the node each is connected to (by position).
struct Senders {
    emitters: Vec<Emitter>,
    nodes: Arc<Vec<usize>>,
}

impl Senders {
    /// Whether the participants are spread over more than one node.
    fn several_nodes(&self) -> bool {
        self.nodes.iter().any(|&n| n != self.nodes[0])
    }
}

/// Extracts the `"message":"..."` value of a `new_message` packet without parsing it all.
fn message_text(packet: &str) -> Option<&str> {
    let start = packet.find("\"message\":\"")? + "\"message\":\"".len();
    let rest = &packet[start..];
    rest.find('"').map(|end| &rest[..end])
}

/// Parses `s<step>.<seq> ...`.
fn tag(message: &str) -> Option<(u32, usize)> {
    let head = message.strip_prefix('s')?.split(' ').next()?;
    let (step, seq) = head.split_once('.')?;
    Some((step.parse().ok()?, seq.parse().ok()?))
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut conn: Conn,
    step: u32,
    messages: usize,
    sender_nodes: Arc<Vec<usize>>,
    base: Instant,
    sent: Arc<Vec<AtomicU64>>,
    deadline: Instant,
    errors: Arc<Errors>,
) -> (Conn, Received) {
    let mut r = Received {
        count: 0,
        reordered: 0,
        stale: 0,
        last_at: None,
        latency: Latency::default(),
        same_node: Latency::default(),
        cross_node: Latency::default(),
    };
    let senders = sender_nodes.len();
    // Last sequence number seen from each sender, plus one (0: none yet).
    let mut last = vec![0usize; senders];
    while (r.count as usize) < messages {
        let frame = match tokio::time::timeout_at(deadline.into(), conn.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                errors.add("participant disconnected during fanout");
                break;
            }
            Err(_) => break,
        };
        match frame.name() {
            "new_message" => {
                let Some((s, seq)) = message_text(frame.text.as_str()).and_then(tag) else {
                    errors.add(format!("unexpected message {}", frame.describe()));
                    continue;
                };
                if s != step || seq >= messages {
                    r.stale += 1;
                    continue;
                }
                let sender = seq % senders;
                if seq + 1 < last[sender] {
                    r.reordered += 1;
                }
                last[sender] = last[sender].max(seq + 1);
                let sent_at = base + Duration::from_nanos(sent[seq].load(Ordering::Acquire));
                let took = frame.at.saturating_duration_since(sent_at);
                r.latency.record(took);
                if sender_nodes[sender] == conn.node {
                    r.same_node.record(took);
                } else {
                    r.cross_node.record(took);
                }
                r.count += 1;
                r.last_at = Some(frame.at);
            }
            "error" | "relay_error" => errors.add(frame.describe()),
            _ => {}
        }
    }
    (conn, r)
}

#[allow(clippy::too_many_arguments)]
async fn step(
    conns: &mut Vec<Conn>,
    senders: &Senders,
    channel: &str,
    number: u32,
    rate: f64,
    args: &FanoutArgs,
    errors: &Arc<Errors>,
) -> Step {
    // At high rates M messages are a burst, not a load: stretch the step to a minimum length.
    let messages = args
        .messages
        .max((rate * args.min_step_secs).ceil() as usize);
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let planned = Duration::from_secs_f64(messages as f64 / rate);
    let deadline = base + planned + Duration::from_secs(args.drain_secs);
    let mut set = JoinSet::new();
    for conn in conns.drain(..) {
        set.spawn(receive(
            conn,
            number,
            messages,
            senders.nodes.clone(),
            base,
            sent.clone(),
            deadline,
            errors.clone(),
        ));
    }

    // Pace the sends: message k is due at base + k / rate; whatever is due goes out at once.
    let channel_json = Value::String(channel.to_owned()).to_string();
    let padding = "x".repeat(args.msg_chars.saturating_sub(16));
    let start = Instant::now();
    let mut k = 0;
    while k < messages {
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as usize + 1).min(messages);
        while k < due {
            sent[k].store(base.elapsed().as_nanos() as u64, Ordering::Release);
            let packet = format!(
                "42[\"send_message\",{{\"channel_id\":{channel_json},\"message\":\"s{number}.{k} {padding}\"}}]"
            );
            senders.emitters[k % senders.emitters.len()].raw(packet);
            k += 1;
        }
        if k < messages {
            let next = start + Duration::from_secs_f64(k as f64 / rate);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    let send_time = start.elapsed().as_secs_f64().max(1e-9);

    let mut delivered = 0;
    let mut reordered = 0;
    let mut stale = 0;
    let mut last_at = start;
    let mut latency = Latency::default();
    let mut same_node = Latency::default();
    let mut cross_node = Latency::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((conn, r)) => {
                delivered += r.count;
                reordered += r.reordered;
                stale += r.stale;
                if let Some(at) = r.last_at {
                    last_at = last_at.max(at);
                }
                latency.merge(&r.latency);
                same_node.merge(&r.same_node);
                cross_node.merge(&r.cross_node);
                conns.push(conn);
            }
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    let expected = (messages * (senders.emitters.len() + 1)) as u64;
    let span = last_at.duration_since(start).as_secs_f64().max(1e-9);
    let held = delivered == expected
        && reordered == 0
        && latency.ms(0.99).is_some_and(|p| p <= args.slo_p99_ms);
    Step {
        rate,
        offered_per_s: messages as f64 / send_time,
        delivered,
        expected,
        reordered,
        stale,
        deliveries_per_s: delivered as f64 / span,
        latency,
        same_node,
        cross_node,
        held,
    }
}

/// Runs one step, writes its line into the report, and lets any backlog drain.
#[allow(clippy::too_many_arguments)]
async fn noted_step(
    conns: &mut Vec<Conn>,
    senders: &Senders,
    channel: &str,
    number: &mut u32,
    rate: f64,
    args: &FanoutArgs,
    errors: &Arc<Errors>,
    report: &mut Report,
) -> Step {
    let s = step(conns, senders, channel, *number, rate, args, errors).await;
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let by_node = if senders.several_nodes() {
        format!(
            " (same node p50 {} ms, p99 {} ms; cross-node p50 {} ms, p99 {} ms)",
            ms(s.same_node.ms(0.5)),
            ms(s.same_node.ms(0.99)),
            ms(s.cross_node.ms(0.5)),
            ms(s.cross_node.ms(0.99)),
        )
    } else {
        String::new()
    };
    report.note(format!(
        "step {number}: offered {:.1} msg/s (achieved {:.1}), delivered {}/{} ({:.0}/s), reordered {}, late from an earlier step {}, p50 {} ms, p99 {} ms{by_node}: {}",
        s.rate,
        s.offered_per_s,
        s.delivered,
        s.expected,
        s.deliveries_per_s,
        s.reordered,
        s.stale,
        ms(s.latency.ms(0.5)),
        ms(s.latency.ms(0.99)),
        if s.held { "held" } else { "did not hold" },
    ));
    *number += 1;
    // A step that did not hold may leave a backlog in the server; let it drain first.
    let pause = if s.held { 500 } else { 3000 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    s
}

pub(crate) async fn run(ctx: &Ctx, args: &FanoutArgs) -> Report {
    let mut report = Report::new("fanout", &ctx.label);
    report.param("viewers", args.viewers);
    report.param("messages_per_step", args.messages);
    report.param("min_step_secs", args.min_step_secs);
    report.param("slo_p99_ms", args.slo_p99_ms);
    let errors = Arc::new(Errors::default());
    if args.viewers == 0 || args.messages == 0 {
        report.fail("viewers and messages must be positive");
        return report;
    }
    if !(17..=200).contains(&args.msg_chars) {
        report.fail("--msg-chars must be 17 to 200");
        return report;
    }
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    let channel = common::channel_name("fanout");
    let broadcaster = match common::broadcaster(ctx, &channel, setup_deadline).await {
        Ok(conn) => conn,
        Err(e) => {
            report.fail(format!("broadcaster: {e}"));
            return report;
        }
    };
    let viewers = common::viewers(
        ctx,
        args.viewers,
        Some(&channel),
        args.concurrency,
        setup_deadline,
        &errors,
    )
    .await;
    if viewers.len() < args.viewers {
        report.errors(&errors);
        report.fail(format!(
            "only {} of {} viewers joined",
            viewers.len(),
            args.viewers
        ));
        return report;
    }
    let senders = Senders {
        emitters: viewers.iter().map(Conn::emitter).collect(),
        nodes: Arc::new(viewers.iter().map(|c| c.node).collect()),
    };
    let mut conns = viewers;
    conns.push(broadcaster);
    // Let join notifications (viewer_count) drain before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let participants = (args.viewers + 1) as f64;
    let rates: Vec<f64> = if args.rates.is_empty() {
        let first = (args.start_deliveries / participants).max(1.0);
        (0..args.max_steps)
            .map(|i| first * 2f64.powi(i as i32))
            .collect()
    } else {
        args.rates.clone()
    };

    let cpu_before = ctx.cpu_secs();
    let own_before = ctx.own_cpu_secs();
    let mut best: Option<Step> = None;
    let mut lost_total = 0;
    let mut reordered_total = 0;
    let mut limit: Option<f64> = None;
    let mut number = 0;
    for &rate in &rates {
        let s = noted_step(
            &mut conns,
            &senders,
            &channel,
            &mut number,
            rate,
            args,
            &errors,
            &mut report,
        )
        .await;
        lost_total += s.expected - s.delivered;
        reordered_total += s.reordered;
        if !s.held {
            limit = Some(s.rate);
            break;
        }
        let generator_bound = s.offered_per_s < 0.9 * s.rate;
        best = Some(s);
        if generator_bound {
            report.note("the generator could not offer the rate any faster; sweep stopped");
            break;
        }
    }
    // Narrow the gap between the last rate that held and the first that did not.
    if let (Some(mut lo), Some(mut hi)) = (best.as_ref().map(|s| s.rate), limit) {
        for _ in 0..args.refine {
            let mid = (lo + hi) / 2.0;
            let s = noted_step(
                &mut conns,
                &senders,
                &channel,
                &mut number,
                mid,
                args,
                &errors,
                &mut report,
            )
            .await;
            lost_total += s.expected - s.delivered;
            reordered_total += s.reordered;
            if s.held {
                lo = mid;
                best = Some(s);
            } else {
                hi = mid;
                limit = Some(hi);
            }
        }
    }
    let cpu_after = ctx.cpu_secs();
    let own_after = ctx.own_cpu_secs();

    report.figure("viewers", args.viewers as f64);
    report.figure("best_rate_msgs_per_s", best.as_ref().map(|s| s.rate));
    report.figure(
        "best_deliveries_per_s",
        best.as_ref().map(|s| s.deliveries_per_s),
    );
    report.figure(
        "latency_p50_ms",
        best.as_ref().and_then(|s| s.latency.ms(0.50)),
    );
    report.figure(
        "latency_p99_ms",
        best.as_ref().and_then(|s| s.latency.ms(0.99)),
    );
    if senders.several_nodes() {
        report.figure(
            "same_node_latency_p50_ms",
            best.as_ref().and_then(|s| s.same_node.ms(0.50)),
        );
        report.figure(
            "same_node_latency_p99_ms",
            best.as_ref().and_then(|s| s.same_node.ms(0.99)),
        );
        report.figure(
            "cross_node_latency_p50_ms",
            best.as_ref().and_then(|s| s.cross_node.ms(0.50)),
        );
        report.figure(
            "cross_node_latency_p99_ms",
            best.as_ref().and_then(|s| s.cross_node.ms(0.99)),
        );
    }
    report.figure("first_failing_msgs_per_s", limit);
    report.figure("losses", lost_total as f64);
    report.figure("reordered", reordered_total as f64);
    report.figure(
        "server_cpu_s",
        cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    );
    report.figure("bench_cpu_s", own_before.zip(own_after).map(|(a, b)| b - a));
    report.figure("server_rss_kib", ctx.rss_kib());
    report.errors(&errors);
    if best.is_none() {
        report.fail("no rate step held");
    }
    drop(senders);
    drop(conns);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_found_in_a_new_message_packet() {
        let packet = r#"42["new_message",{"sender_id":"Viewer-abc","message":"s2.17 xxxx","timestamp":1.5}]"#;
        assert_eq!(message_text(packet), Some("s2.17 xxxx"));
        assert_eq!(message_text(packet).and_then(tag), Some((2, 17)));
    }
}
