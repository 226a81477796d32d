//! How long a relay in one channel waits while another channel does its heaviest work.
//!
//! In process, on the in-memory registry (the server's default): channel "x" has a broadcaster
//! and a viewer, and one thread authorizes relays between them without pause, timing each.
//! Meanwhile another thread, round after round, fills a channel with `--viewers` relay-tree
//! viewers (each reports `relay_ready`, so the tree is as deep as it gets), then makes the
//! first of them (fed by the broadcaster, a quarter of the audience under it with the default
//! D = 4) leave, which re-parents its subtree, then closes the channel. The relays that
//! overlapped the crowd's joins, a re-parent or a close are reported apart from the others:
//! while every channel shared one lock, they waited for it.
//!
//! ```text
//! cargo run --release --example channel_isolation -- [--viewers 10000] [--rounds 20]
//! ```
//! What it leaves out: the sockets (each relay's and each re-parent's emits), which cost far
//! more than the registry and run outside it; `bench` measures those end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
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
        .open_channel(&bx, None, Some("x"), false, true)
        .expect("channel x starts");
    registry.watch(&vx, "x", false).expect("its viewer joins");

    // What the other thread does now (0 nothing, 1 a crowd joins, 2 a re-parent, 3 a close),
    // and how many of those have started or ended: a relay that saw the count change while it
    // ran overlapped one, even if it started before and ended after.
    let doing = Arc::new(AtomicU8::new(0));
    let changes = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let relays = {
        let (registry, stop) = (registry.clone(), stop.clone());
        let (doing, changes, last) = (doing.clone(), changes.clone(), last.clone());
        std::thread::spawn(move || {
            let vx = vx.to_string();
            // Every 64th relay's time outside the heavy operations (and the slowest), all of
            // them during; never more than was reserved (a growing vector copies itself,
            // which would show up as a slow relay).
            let mut times: [Vec<Duration>; 4] =
                std::array::from_fn(|_| Vec::with_capacity(1 << 20));
            let mut seen = [0usize; 4];
            let mut slowest = [Duration::ZERO; 4];
            while !stop.load(Ordering::Relaxed) {
                let before = changes.load(Ordering::Acquire);
                let now_doing = doing.load(Ordering::Acquire);
                let start = Instant::now();
                let target = registry.authorize_relay(&bx, &vx, Activity::Keep);
                let took = start.elapsed();
                assert!(target.is_ok(), "the relay in channel x is authorized");
                let kind = if now_doing != 0 {
                    now_doing
                } else if changes.load(Ordering::Acquire) != before {
                    last.load(Ordering::Acquire)
                } else {
                    0
                };
                let kind = usize::from(kind);
                seen[kind] += 1;
                slowest[kind] = slowest[kind].max(took);
                let list = &mut times[kind];
                if (kind > 0 || seen[kind].is_multiple_of(64)) && list.len() < list.capacity() {
                    list.push(took);
                }
            }
            (times, seen, slowest)
        })
    };

    let mut heavy: Vec<(&str, Duration, usize)> = Vec::new();
    let timed = |kind: u8, op: &mut dyn FnMut() -> usize| {
        last.store(kind, Ordering::Release);
        doing.store(kind, Ordering::Release);
        changes.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        let moved = op();
        let took = start.elapsed();
        doing.store(0, Ordering::Release);
        changes.fetch_add(1, Ordering::AcqRel);
        (took, moved)
    };
    for _ in 0..rounds {
        let channel = "y";
        let broadcaster = SocketId::generate();
        registry
            .open_channel(&broadcaster, None, Some(channel), false, true)
            .expect("the crowded channel starts");
        let ids: Vec<SocketId> = (0..viewers).map(|_| SocketId::generate()).collect();
        let (took, moved) = timed(1, &mut || {
            for id in &ids {
                registry.watch(id, channel, true).expect("a viewer joins");
                registry
                    .tree_op(id, channel, TreeOp::Ready)
                    .expect("a viewer reports relay_ready");
            }
            ids.len()
        });
        heavy.push(("crowd joins", took, moved));
        let (took, moved) = timed(2, &mut || {
            let departure = registry.disconnect(&ids[0]);
            departure
                .left
                .iter()
                .flat_map(|left| &left.tree)
                .filter(|e| matches!(e, TreeEvent::Upstream { .. }))
                .count()
        });
        heavy.push(("re-parent", took, moved));
        let (took, moved) = timed(3, &mut || {
            let closed = registry.disconnect(&broadcaster);
            closed.closed.iter().map(|c| c.viewers.len()).sum()
        });
        heavy.push(("close", took, moved));
        for id in &ids[1..] {
            registry.disconnect(id);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut times, seen, slowest) = relays.join().expect("the relay thread ends");

    println!(
        "channel_isolation: {rounds} rounds of {viewers} relay-tree viewers (D 4, F 2) beside a relaying pair in another channel"
    );
    for kind in ["crowd joins", "re-parent", "close"] {
        let ops: Vec<&(&str, Duration, usize)> = heavy.iter().filter(|h| h.0 == kind).collect();
        let mut took: Vec<Duration> = ops.iter().map(|h| h.1).collect();
        took.sort();
        let mut moved: Vec<usize> = ops.iter().map(|h| h.2).collect();
        moved.sort();
        println!(
            "{kind}: {} ops, viewers joined/moved/closed p50 {}, duration p50 {} max {}",
            ops.len(),
            moved.get(moved.len() / 2).copied().unwrap_or(0),
            us(percentile(&took, 0.5)),
            us(percentile(&took, 1.0)),
        );
    }
    let names = [
        "otherwise",
        "while a crowd joined",
        "while a re-parent ran",
        "while a close ran",
    ];
    for (kind, name) in names.iter().enumerate() {
        let list = &mut times[kind];
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
