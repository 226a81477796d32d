//! How long a relay in one channel waits while another channel does its heaviest work.
//!
//! In process, on the in-memory registry (the server's default): channel "x" has a broadcaster
//! and a viewer, and one thread authorizes relays between them without pause, timing each.
//! Meanwhile another thread, round after round, fills a channel with `--viewers` relay-tree
//! viewers (each reports `relay_ready`, so the tree is as deep as it gets), then makes the
//! first of them (fed by the broadcaster, a quarter of the audience under it with the default
//! D = 4) leave, which re-parents its whole subtree, then closes the channel. The relays that
//! started while a re-parent or a close ran are reported apart from the others: before each
//! channel had its own lock, they waited for it to finish.
//!
//! ```text
//! cargo run --release --example channel_isolation -- [--viewers 10000] [--rounds 20]
//! ```
//! What it leaves out: the sockets (each relay's and each re-parent's emits), which cost far
//! more than the registry and run outside it; `bench` measures those end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use broadcast_server::registry::relay::Activity;
use broadcast_server::registry::tree::TreeLimits;
use broadcast_server::registry::tree_events::{TreeEvent, TreeOp};
use broadcast_server::registry::{MemoryRegistry, RegistryLimits, ids::SocketId};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let viewers = arg("--viewers", 10_000);
    let rounds = arg("--rounds", 20);
    let registry = MemoryRegistry::new(RegistryLimits {
        max_channels: 1_000,
        idle_ttl: Duration::from_secs(3600),
        max_channels_per_socket: 1_000,
        max_channels_per_addr: 1_000,
        tree: TreeLimits {
            direct: 4,
            fanout: 2,
            wait: Duration::from_secs(10),
        },
        resume_grace: Duration::ZERO,
        max_waiting_per_channel: 100,
        max_waiting: 1_000,
        chat_history: 0,
        ban_by_address: false,
    });
    let (bx, vx) = (SocketId::generate(), SocketId::generate());
    registry
        .join_as_broadcaster(&bx, None, Some("x"), false, true)
        .expect("channel x starts");
    registry
        .join_as_viewer(&vx, "x", false)
        .expect("its viewer joins");

    // What the other thread is doing now: 0 nothing heavy, 1 a re-parent, 2 a close.
    let heavy_now = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let relays = {
        let (registry, stop, heavy_now) = (registry.clone(), stop.clone(), heavy_now.clone());
        std::thread::spawn(move || {
            let vx = vx.to_string();
            // Every relay's time while a heavy operation runs; otherwise every 64th (and the
            // slowest), so that the record never grows (a growing vector copies itself, which
            // would show up as a slow relay).
            let mut during: [Vec<Duration>; 3] = [
                Vec::with_capacity(1 << 20),
                Vec::with_capacity(1 << 20),
                Vec::with_capacity(1 << 20),
            ];
            let mut seen = [0usize; 3];
            let mut slowest = [Duration::ZERO; 3];
            while !stop.load(Ordering::Relaxed) {
                let kind = usize::from(heavy_now.load(Ordering::Acquire));
                let start = Instant::now();
                let target = registry.authorize_relay(&bx, &vx, Activity::Keep);
                let took = start.elapsed();
                assert!(target.is_ok(), "the relay in channel x is authorized");
                seen[kind] += 1;
                slowest[kind] = slowest[kind].max(took);
                let list = &mut during[kind];
                if (kind > 0 || seen[kind].is_multiple_of(64)) && list.len() < list.capacity() {
                    list.push(took);
                }
            }
            (during, seen, slowest)
        })
    };

    let mut heavy: Vec<(&str, Duration, usize)> = Vec::new();
    let timed = |kind: u8, op: &mut dyn FnMut() -> usize| {
        heavy_now.store(kind, Ordering::Release);
        let start = Instant::now();
        let moved = op();
        let took = start.elapsed();
        heavy_now.store(0, Ordering::Release);
        (took, moved)
    };
    for _ in 0..rounds {
        let channel = "y";
        let broadcaster = SocketId::generate();
        registry
            .join_as_broadcaster(&broadcaster, None, Some(channel), false, true)
            .expect("the crowded channel starts");
        let ids: Vec<SocketId> = (0..viewers).map(|_| SocketId::generate()).collect();
        for id in &ids {
            registry
                .join_as_viewer(id, channel, true)
                .expect("a viewer joins");
            registry
                .tree_op(id, channel, TreeOp::Ready)
                .expect("a viewer reports relay_ready");
        }
        let (took, moved) = timed(1, &mut || {
            let departure = registry.disconnect(&ids[0]);
            departure
                .left
                .iter()
                .flat_map(|left| &left.tree)
                .filter(|e| matches!(e, TreeEvent::Upstream { .. }))
                .count()
        });
        heavy.push(("re-parent", took, moved));
        let (took, moved) = timed(2, &mut || {
            let closed = registry.disconnect(&broadcaster);
            closed.closed.iter().map(|c| c.viewers.len()).sum()
        });
        heavy.push(("close", took, moved));
        for id in &ids[1..] {
            registry.disconnect(id);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut during, seen, slowest) = relays.join().expect("the relay thread ends");

    println!(
        "channel_isolation: {rounds} rounds of {viewers} relay-tree viewers (D 4, F 2) beside a relaying pair in another channel"
    );
    for kind in ["re-parent", "close"] {
        let ops: Vec<&(&str, Duration, usize)> = heavy.iter().filter(|h| h.0 == kind).collect();
        let mut took: Vec<Duration> = ops.iter().map(|h| h.1).collect();
        took.sort();
        let mut moved: Vec<usize> = ops.iter().map(|h| h.2).collect();
        moved.sort();
        println!(
            "{kind}: {} ops, viewers moved/closed p50 {}, duration p50 {} max {}",
            ops.len(),
            moved.get(moved.len() / 2).copied().unwrap_or(0),
            us(percentile(&took, 0.5)),
            us(percentile(&took, 1.0)),
        );
    }
    let names = ["otherwise", "while a re-parent ran", "while a close ran"];
    for (kind, name) in names.iter().enumerate() {
        let list = &mut during[kind];
        list.sort();
        println!(
            "relay in channel x {name}: {} relays, p50 {} p99 {} max {}",
            seen[kind],
            us(percentile(list, 0.5)),
            us(percentile(list, 0.99)),
            us(slowest[kind]),
        );
    }
}
