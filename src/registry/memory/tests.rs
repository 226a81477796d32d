//! The cells against one whole state: any sequence of operations gives the same answers and
//! leaves the same channels and indexes as the single state the rules were written for, and
//! operations on many channels from many threads at once leave nothing behind.

use std::collections::HashSet;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::MemoryRegistry;
use crate::registry::broadcaster::BroadcastRequest;
use crate::registry::clock::Moment;
use crate::registry::ids::{ChannelId, SocketId};
use crate::registry::membership::{Departure, ViewerRequest};
use crate::registry::model::{ClosedChannel, RegistryLimits, State};
use crate::registry::moderation::ChatPace;
use crate::registry::relay::Activity;
use crate::registry::tree::TreeLimits;
use crate::registry::tree_events::TreeOp;

/// Small limits, so that every one of them is reached; the relay tree off, so that both sides
/// place viewers alike (a tree's choices may follow hash order; the tree is a channel's own
/// business, which a cell runs exactly as a whole state does).
fn limits() -> RegistryLimits {
    RegistryLimits {
        max_channels: 3,
        idle_ttl: Duration::from_secs(3600),
        max_channels_per_socket: 2,
        max_channels_per_addr: 2,
        tree: TreeLimits {
            direct: 1,
            fanout: 0,
            wait: Duration::from_secs(10),
        },
        resume_grace: Duration::from_secs(30),
        max_waiting_per_channel: 2,
        max_waiting: 3,
        chat_history: 3,
        ban_by_address: false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Broadcast(u8, u8, bool),
    Resume(u8, u8, bool),
    Watch(u8, u8),
    Wait(u8, u8),
    Relay(u8, u8),
    Ready(u8, u8),
    Stop(u8, u8),
    Chat(u8, u8),
    Remove(u8, u8, u8, bool),
    Disconnect(u8),
    Sweep,
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..8, 0u8..5, any::<bool>()).prop_map(|(s, c, f)| Op::Broadcast(s, c, f)),
        2 => (0u8..8, 0u8..5, any::<bool>()).prop_map(|(s, c, f)| Op::Resume(s, c, f)),
        4 => (0u8..8, 0u8..5).prop_map(|(s, c)| Op::Watch(s, c)),
        2 => (0u8..8, 0u8..5).prop_map(|(s, c)| Op::Wait(s, c)),
        3 => (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Relay(a, b)),
        1 => (0u8..8, 0u8..5).prop_map(|(s, c)| Op::Ready(s, c)),
        1 => (0u8..8, 0u8..5).prop_map(|(s, c)| Op::Stop(s, c)),
        2 => (0u8..8, 0u8..5).prop_map(|(s, c)| Op::Chat(s, c)),
        1 => (0u8..8, 0u8..5, 0u8..8, any::<bool>()).prop_map(|(s, c, v, b)| Op::Remove(s, c, v, b)),
        3 => (0u8..8).prop_map(Op::Disconnect),
        1 => Just(Op::Sweep),
        1 => Just(Op::Expire),
    ]
}

fn name(i: u8) -> SocketId {
    SocketId::from(format!("s{i}").as_str())
}

fn channel(i: u8) -> String {
    format!("c{i}")
}

/// Even sockets ask for resuming; every token's digest is "t".
fn request(s: u8, force: bool, presented: Option<&'static str>) -> BroadcastRequest<'static> {
    BroadcastRequest {
        addr: Some(IpAddr::from([10, 0, 0, s % 3])),
        force,
        relay: true,
        resumable: s.is_multiple_of(2),
        presented,
        fresh: "t",
        password: None,
        key: None,
    }
}

/// A list compared as a set of its entries' descriptions: hash maps give their keys in an
/// order of their own, which is no part of an answer.
fn set<T: Debug>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut all: Vec<String> = items.into_iter().map(|i| format!("{i:?}")).collect();
    all.sort();
    all
}

fn closed(c: &[ClosedChannel]) -> Vec<String> {
    set(c.iter().map(|c| {
        (
            &c.channel_id,
            &c.broadcaster,
            set(&c.viewers),
            c.peak_viewers,
        )
    }))
}

fn departure(d: &Departure) -> String {
    let held = set(d.held.iter().map(|h| (&h.channel_id, set(&h.viewers))));
    let left = set(&d.left);
    format!("{:?}", (closed(&d.closed), held, left))
}

/// The registry as it was: every channel in one state behind one lock.
struct Whole {
    limits: RegistryLimits,
    state: State,
    pace: ChatPace,
}

/// Runs one operation on both and describes each answer the same way.
fn apply(op: &Op, cells: &MemoryRegistry, whole: &mut Whole) -> (String, String) {
    let now = Moment::now();
    let w = &mut whole.state;
    let limits = &whole.limits;
    match *op {
        Op::Broadcast(s, c, force) | Op::Resume(s, c, force) => {
            let presented = matches!(op, Op::Resume(..)).then_some("t");
            let started = |r: Result<crate::registry::broadcaster::BroadcastStarted, _>| {
                format!(
                    "{:?}",
                    r.map(|s| (
                        s.channel_id,
                        s.resumable,
                        set(s.lobby),
                        set(s.admitted),
                        s.viewer_count,
                        s.replaced,
                        s.resumed,
                        set(s.waiting_viewers),
                        s.was_live,
                    ))
                )
            };
            let a = cells.join_as_broadcaster(
                &name(s),
                Some(&channel(c)),
                request(s, force, presented),
            );
            let id = ChannelId::from(channel(c));
            let b = w.join_as_broadcaster(limits, &name(s), id, request(s, force, presented), now);
            (started(a), started(b))
        }
        Op::Watch(s, c) => {
            let joined = |r: Result<crate::registry::membership::ViewerJoined, _>| {
                format!(
                    "{:?}",
                    r.map(|j| (j.broadcaster, j.viewer_count, j.stopped, j.away, j.alias))
                )
            };
            let a = cells.join_as_viewer(&name(s), &channel(c), ViewerRequest::default());
            let b = w.join_as_viewer(&name(s), &channel(c), ViewerRequest::default(), now);
            (joined(a), joined(b))
        }
        Op::Wait(s, c) => {
            let a = cells.wait_for(&name(s), &channel(c), false);
            let b = w.wait_for(limits, &name(s), &ChannelId::from(channel(c)), false, now);
            (format!("{a:?}"), format!("{b:?}"))
        }
        Op::Relay(a, b) => {
            let target = format!("s{b}");
            let x = cells.authorize_relay(&name(a), &target, Activity::Keep);
            let y = w.authorize_relay(&name(a), &target, Activity::Keep, now);
            (format!("{x:?}"), format!("{y:?}"))
        }
        Op::Ready(s, c) => {
            let a = cells.tree_op(&name(s), &channel(c), TreeOp::Ready);
            let b = w.tree_op(&name(s), &channel(c), TreeOp::Ready, now);
            (format!("{a:?}"), format!("{b:?}"))
        }
        Op::Stop(s, c) => {
            let stopped = |r: Result<crate::registry::broadcaster::BroadcastStopped, _>| {
                format!(
                    "{:?}",
                    r.map(|s| (set(s.viewers), s.peak_viewers, s.was_live))
                )
            };
            let a = cells.stop_broadcast(&name(s), &channel(c));
            let b = w.stop_broadcast(&name(s), &channel(c), now);
            (stopped(a), stopped(b))
        }
        Op::Chat(s, c) => {
            let chat = |r: Result<crate::registry::chat::ChatDelivery, _>| {
                format!(
                    "{:?}",
                    r.map(|d| (d.message.sender_id, set(d.plain), set(d.with_ids)))
                )
            };
            let a = cells.chat(&name(s), &channel(c), "hi");
            let b = w.chat(&name(s), &channel(c), "hi", 0.0, &whole.pace);
            (chat(a), chat(b))
        }
        Op::Remove(s, c, v, ban) => {
            let removal = |r: Result<crate::registry::moderation::Removal, _>| {
                format!(
                    "{:?}",
                    r.map(|r| (
                        set(r.removed.iter().map(|r| &r.viewer)),
                        r.banned,
                        set(r.left)
                    ))
                )
            };
            let a = cells.remove_viewer(&name(s), &channel(c), &name(v), ban);
            let b = w.remove_viewer(&name(s), &channel(c), &name(v), ban, now);
            (removal(a), removal(b))
        }
        Op::Disconnect(s) => {
            let a = cells.disconnect(&name(s));
            let b = w.disconnect(&name(s), limits.resume_grace, now);
            (departure(&a), departure(&b))
        }
        Op::Sweep => {
            let later = now + Duration::from_secs(7200);
            let a = cells.sweep(later);
            let b = w.sweep(limits.idle_ttl, later);
            (format!("{:?}", closed(&a)), format!("{:?}", closed(&b)))
        }
        Op::Expire => {
            let later = now + Duration::from_secs(3600);
            let a = cells.expire_waits(later);
            let b = w.expire_waits(later);
            (
                format!("{:?}", (closed(&a.abandoned), set(a.tree))),
                format!("{:?}", (closed(&b.abandoned), set(b.tree))),
            )
        }
    }
}

/// Describes what a state holds, leaving out times (each side reads its own clock).
fn holdings(state: &State) -> String {
    let channels = set(state.channels.values().map(|c| {
        (
            &c.id,
            &c.broadcaster,
            set(&c.viewers),
            c.stopped,
            c.away_until.is_some(),
            c.owner_addr,
            c.peak_viewers,
            set(c.held_viewers.keys()),
        )
    }));
    let sockets = set(state
        .sockets
        .iter()
        .map(|(sid, m)| (sid, set(&m.broadcasting), set(&m.watching), set(&m.waiting))));
    let lobbies = set(state.lobbies.iter().map(|(id, l)| (id, set(l.keys()))));
    format!(
        "channels {channels:?}\nsockets {sockets:?}\nlobbies {lobbies:?}\naddresses {:?}\nwaiting {}\nwaits {:?}",
        set(&state.by_addr),
        state.waiting_total,
        set(state.waits.keys()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Cells answer every operation as one whole state does, and hold the same channels and
    /// indexes after each (the cross-channel limits included: channels in all, per address,
    /// per socket, waiting viewers in all).
    #[test]
    fn cells_answer_and_hold_what_one_whole_state_does(ops in proptest::collection::vec(op(), 1..80)) {
        let cells = MemoryRegistry::new(limits());
        let mut whole = Whole { limits: limits(), state: State::default(), pace: ChatPace::default() };
        for op in &ops {
            let (a, b) = apply(op, &cells, &mut whole);
            prop_assert_eq!(a, b, "{:?}", op);
            prop_assert_eq!(holdings(&cells.state()), holdings(&whole.state), "after {:?}", op);
            let stats = cells.stats();
            prop_assert_eq!(stats.channels, whole.state.channels.len());
            prop_assert_eq!(stats.indexed_sockets, whole.state.sockets.len(), "places after {:?}", op);
            prop_assert_eq!(stats.indexed_addresses, whole.state.by_addr.len());
        }
        for s in 0..8 {
            let (a, b) = apply(&Op::Disconnect(s), &cells, &mut whole);
            prop_assert_eq!(a, b);
        }
        let (a, b) = apply(&Op::Expire, &cells, &mut whole);
        prop_assert_eq!(a, b);
        prop_assert_eq!(holdings(&cells.state()), holdings(&whole.state));
        prop_assert_eq!(cells.stats(), crate::registry::Stats { channels: 0, indexed_sockets: 0, indexed_addresses: 0 });
        prop_assert!(cells.every_id().is_empty(), "every cell retired");
        prop_assert!(cells.shared.places.all().is_empty());
        prop_assert!(super::lock(&cells.shared.deadlines).is_empty());
    }
}

/// Numbers below `n` from a seed (a linear congruential generator: the same run each time).
fn numbers(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    }
}

/// Threads that each own some sockets (a socket's own operations run one at a time, as its
/// connection runs them) join, wait for, broadcast, relay in and leave a few shared channels
/// at once: nothing is lost or left over, and the counts stay exact.
#[test]
fn concurrent_operations_on_shared_channels_leave_nothing_behind() {
    let mut l = limits();
    l.max_channels = 4;
    l.max_waiting = 50;
    l.max_waiting_per_channel = 50;
    l.tree.fanout = 2;
    let cells = Arc::new(MemoryRegistry::new(l));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let cells = cells.clone();
            std::thread::spawn(move || {
                let mut next = numbers(u64::from(t) * 7919 + 1);
                for _ in 0..3000 {
                    // Sockets 10t..10t+9 belong to this thread; channels are shared.
                    let s = SocketId::from(format!("t{t}s{}", next(10)).as_str());
                    let c = format!("c{}", next(6));
                    match next(8) {
                        0 => {
                            let _ =
                                cells.join_as_broadcaster(&s, Some(&c), request(t, false, None));
                        }
                        1 | 2 => {
                            let _ = cells.watch(&s, &c, true);
                        }
                        3 => {
                            let _ = cells.wait_for(&s, &c, true);
                        }
                        4 => {
                            let target = format!("t{}s{}", next(4), next(10));
                            let _ = cells.authorize_relay(&s, &target, Activity::Refresh);
                        }
                        5 => {
                            let _ = cells.tree_op(&s, &c, TreeOp::Ready);
                        }
                        _ => {
                            cells.disconnect(&s);
                        }
                    }
                }
                for i in 0..10 {
                    cells.disconnect(&SocketId::from(format!("t{t}s{i}").as_str()));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no thread panics");
    }
    // Held channels end with their grace.
    cells.expire_waits(Moment::now() + Duration::from_secs(3600));
    assert_eq!(
        cells.stats(),
        crate::registry::Stats {
            channels: 0,
            indexed_sockets: 0,
            indexed_addresses: 0
        }
    );
    let state = cells.state();
    assert!(state.channels.is_empty() && state.lobbies.is_empty());
    assert_eq!(state.waiting_total, 0);
    assert!(cells.every_id().is_empty());
    assert!(cells.shared.places.all().is_empty());
    assert!(super::lock(&cells.shared.deadlines).is_empty());
}

/// Every kind of operation (takeovers, resumes, removals, stops included) from many threads
/// while another sweeps, expires and reads without pause: the limits hold throughout, and
/// whenever everything stands still, what spans the cells matches them exactly.
#[test]
fn spanning_maps_match_the_cells_under_concurrent_operations() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let mut l = limits();
    l.max_channels = 6;
    l.max_channels_per_addr = 3;
    l.max_waiting = 7;
    l.max_waiting_per_channel = 3;
    l.tree.fanout = 2;
    l.idle_ttl = Duration::from_millis(1);
    l.resume_grace = Duration::from_millis(2);
    let cells = Arc::new(MemoryRegistry::new(l.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Held by the sweeper for each of its passes, and by the checks between rounds.
    let pause = Arc::new(Mutex::new(()));
    let sweeper = {
        let cells = cells.clone();
        let (stop, pause) = (stop.clone(), pause.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _pass = super::lock(&pause);
                cells.sweep(Moment::now());
                cells.expire_waits(Moment::now());
                let _ = cells.stats();
                let _ = cells.list();
                {
                    let c = super::lock(&cells.shared.counts);
                    assert!(c.channels <= 6, "channels {}", c.channels);
                    assert!(c.waiting <= 7, "waiting {}", c.waiting);
                    assert!(c.by_addr.values().all(|&n| n <= 3));
                }
            }
        })
    };
    for round in 0..20u64 {
        let threads: Vec<_> = (0..3u8)
            .map(|t| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    let mut next = numbers(u64::from(t) * 7919 + 1 + round * 104729);
                    for _ in 0..2000 {
                        let s = SocketId::from(format!("t{t}s{}", next(6)).as_str());
                        let c = format!("c{}", next(8));
                        match next(12) {
                            0 => {
                                let _ = cells.join_as_broadcaster(
                                    &s,
                                    Some(&c),
                                    request(t + next(2) as u8, false, None),
                                );
                            }
                            1 => {
                                let _ = cells.join_as_broadcaster(
                                    &s,
                                    Some(&c),
                                    request(2 * t, true, Some("t")),
                                );
                            }
                            2 | 3 => {
                                let _ = cells.watch(&s, &c, true);
                            }
                            4 => {
                                let _ = cells.wait_for(&s, &c, next(2) == 0);
                            }
                            5 => {
                                let target = format!("t{}s{}", next(3), next(6));
                                let _ = cells.authorize_relay(&s, &target, Activity::Refresh);
                            }
                            6 => {
                                let _ = cells.tree_op(&s, &c, TreeOp::Ready);
                            }
                            7 => {
                                let v =
                                    SocketId::from(format!("t{}s{}", next(3), next(6)).as_str());
                                let _ = cells.remove_viewer(&s, &c, &v, next(2) == 0);
                            }
                            8 => {
                                let _ = cells.stop_broadcast(&s, &c);
                            }
                            9 => {
                                let _ = cells.audience(&s);
                            }
                            _ => {
                                cells.disconnect(&s);
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no thread panics");
        }
        let _still = super::lock(&pause);
        let merged = cells.state();
        let mut by_addr: HashMap<IpAddr, usize> = HashMap::new();
        for channel in merged.channels.values() {
            if let Some(addr) = channel.owner_addr {
                *by_addr.entry(addr).or_default() += 1;
            }
        }
        let waiting: usize = merged.lobbies.values().map(HashMap::len).sum();
        assert_eq!(
            merged.by_addr, by_addr,
            "round {round}: channels per address"
        );
        assert_eq!(
            merged.waiting_total, waiting,
            "round {round}: waiting viewers"
        );
        assert_eq!(cells.stats().channels, merged.channels.len());
        let places = cells.shared.places.all();
        let indexed: HashMap<SocketId, HashSet<ChannelId>> = merged
            .sockets
            .iter()
            .map(|(sid, m)| {
                let all = m.broadcasting.iter().chain(&m.watching).chain(&m.waiting);
                (sid.clone(), all.cloned().collect())
            })
            .collect();
        assert_eq!(places, indexed, "round {round}: places");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.join().expect("sweeper");
    for t in 0..3 {
        for i in 0..6 {
            cells.disconnect(&SocketId::from(format!("t{t}s{i}").as_str()));
        }
    }
    std::thread::sleep(Duration::from_millis(5));
    cells.expire_waits(Moment::now() + Duration::from_secs(3600));
    cells.sweep(Moment::now() + Duration::from_secs(3600));
    let state = cells.state();
    assert!(
        state.channels.is_empty() && state.lobbies.is_empty(),
        "left: {}",
        holdings(&state)
    );
    assert_eq!(state.waiting_total, 0);
    assert!(state.by_addr.is_empty(), "by_addr {:?}", state.by_addr);
    assert_eq!(super::lock(&cells.shared.counts).channels, 0);
    assert!(cells.every_id().is_empty());
    assert!(cells.shared.places.all().is_empty());
    assert!(super::lock(&cells.shared.deadlines).is_empty());
}

/// A long-lived viewer that watches one channel after another (each closing when its
/// broadcaster leaves) keeps every channel id it ever watched in `places`, relays and all.
#[test]
fn a_long_lived_viewer_leaves_no_trail_of_places() {
    let cells = MemoryRegistry::new(RegistryLimits {
        max_channels: 1000,
        ..limits()
    });
    let viewer = SocketId::from("viewer");
    for i in 0..200 {
        let b = SocketId::from(format!("b{i}").as_str());
        let c = format!("c{i}");
        cells
            .open_channel(&b, None, Some(&c), false, false)
            .unwrap();
        cells.watch(&viewer, &c, false).unwrap();
        // It negotiates with the broadcaster, as every page does.
        cells
            .authorize_relay(&viewer, &format!("b{i}"), Activity::Refresh)
            .unwrap();
        cells.disconnect(&b);
    }
    let kept = cells
        .shared
        .places
        .all()
        .get(&viewer)
        .map_or(0, HashSet::len);
    assert_eq!(kept, 0, "channel ids kept for a viewer that is in none");
}
