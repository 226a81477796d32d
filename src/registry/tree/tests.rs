use std::time::Duration;

use crate::registry::clock::Moment;

use proptest::prelude::*;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn limits(direct: usize, fanout: usize) -> TreeLimits {
    TreeLimits {
        direct,
        fanout,
        wait: WAIT,
    }
}

fn id(s: &str) -> SocketId {
    SocketId::from(s)
}

fn v(s: &str) -> Feeder {
    Feeder::Viewer(id(s))
}

fn up(viewer: &str, feeder: Feeder, depth: usize) -> Notice {
    Notice::Upstream {
        viewer: id(viewer),
        feeder,
        depth,
    }
}

fn left(feeder: Feeder, child: &str) -> Notice {
    Notice::DownstreamLeft {
        feeder,
        child: id(child),
    }
}

/// Every structural invariant of the tree; panics with the broken one.
fn check(tree: &Tree) {
    let fanout = tree.limits.fanout;
    for (name, node) in &tree.nodes {
        match &node.parent {
            Some(Feeder::Broadcaster) => assert!(tree.direct.contains(name), "{name} in direct"),
            Some(Feeder::Viewer(p)) => {
                let parent = tree.nodes.get(p).expect("parent exists");
                assert!(parent.children.contains(name), "{p} lists child {name}");
                assert!(parent.relay, "only tree viewers feed others");
            }
            None => assert!(!tree.direct.contains(name)),
        }
        for child in &node.children {
            assert_eq!(
                tree.nodes.get(child).and_then(|c| c.parent.clone()),
                Some(Feeder::Viewer(name.clone())),
                "{child} points back to {name}"
            );
        }
        assert!(node.children.len() <= fanout, "fan-out held at {name}");
        // No cycles: walking up ends at the broadcaster or at a node waiting for a feeder, and
        // the walk gives the depth of anchored nodes.
        let mut at = name.clone();
        let mut steps = 0;
        let anchored = loop {
            steps += 1;
            assert!(steps <= tree.nodes.len() + 1, "cycle through {name}");
            match &tree.nodes[&at].parent {
                Some(Feeder::Broadcaster) => break true,
                Some(Feeder::Viewer(p)) => at = p.clone(),
                None => break false,
            }
        };
        assert_eq!(node.anchored, anchored, "anchored flag of {name}");
        if anchored {
            assert_eq!(node.depth, steps, "depth of {name}");
        }
        // A waiting viewer has no feeder and is queued; nobody else is.
        match node.waiting {
            Some((key, _)) => {
                assert!(node.parent.is_none() && node.relay && tree.live);
                assert_eq!(tree.waiting.get(&key), Some(name));
            }
            None => assert!(!tree.waiting.values().any(|w| w == name)),
        }
        if tree.live && node.parent.is_none() {
            assert!(node.waiting.is_some(), "{name} is fed or waits while live");
        }
        if !tree.live {
            assert!(node.parent.is_none() && node.children.is_empty());
        }
    }
    for name in &tree.direct {
        assert_eq!(tree.nodes[name].parent, Some(Feeder::Broadcaster));
    }
    assert_eq!(
        tree.waiting.len(),
        tree.nodes.values().filter(|n| n.waiting.is_some()).count()
    );
    // The depth counts match the anchored nodes.
    let mut counts = Vec::new();
    for node in tree.nodes.values().filter(|n| n.anchored) {
        if counts.len() < node.depth {
            counts.resize(node.depth, 0);
        }
        counts[node.depth - 1] += 1;
    }
    assert_eq!(tree.depths(), counts.as_slice(), "depth counts");
    // The candidate index is exactly the anchored, eligible viewers with room.
    let expected: BTreeSet<_> = tree
        .nodes
        .iter()
        .filter_map(|(name, n)| candidate_key(name, n, fanout))
        .collect();
    assert_eq!(tree.candidates, expected);
    // Nobody waits while a feeder has room for it.
    for w in tree.waiting.values() {
        assert_eq!(
            tree.best_feeder(w),
            None,
            "{w} waits although a feeder has room"
        );
    }
}

#[test]
fn legacy_viewers_attach_to_the_broadcaster_silently() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    assert_eq!(tree.join(&id("legacy1"), false, now), vec![]);
    assert_eq!(tree.join(&id("legacy2"), false, now), vec![]);
    assert_eq!(tree.direct_count(), 2);
    assert_eq!(tree.upstream_of("legacy2"), Some(&Feeder::Broadcaster));
    // A channel of legacy viewers only: their departure tells the broadcaster nothing new.
    assert_eq!(tree.leave(&id("legacy1"), now), vec![]);
    // Once a tree viewer has joined (a waits: the legacy leaf holds the one direct slot), the
    // broadcaster hears about every child it fed, and the freed slot goes to a.
    assert_eq!(tree.join(&id("a"), true, now), vec![]);
    assert_eq!(
        tree.leave(&id("legacy2"), now),
        vec![
            left(Feeder::Broadcaster, "legacy2"),
            up("a", Feeder::Broadcaster, 1)
        ]
    );
    check(&tree);
}

#[test]
fn tree_fills_breadth_first_once_relays_are_ready() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    assert_eq!(
        tree.join(&id("a"), true, now),
        vec![up("a", Feeder::Broadcaster, 1)]
    );
    // The broadcaster is full and nobody relays yet: b waits.
    assert_eq!(tree.join(&id("b"), true, now), vec![]);
    // a plays: b gets a.
    assert_eq!(tree.ready(&id("a")), vec![up("b", v("a"), 2)]);
    assert_eq!(tree.join(&id("c"), true, now), vec![up("c", v("a"), 2)]);
    // a is full; b and c are not ready: d waits until one of them is.
    assert_eq!(tree.join(&id("d"), true, now), vec![]);
    assert_eq!(tree.ready(&id("c")), vec![up("d", v("c"), 3)]);
    assert!(tree.ready(&id("b")).is_empty());
    // The shallowest with the fewest children first: b (depth 2, no child) before c.
    assert_eq!(tree.join(&id("e"), true, now), vec![up("e", v("b"), 3)]);
    check(&tree);
    assert!(tree.are_linked("a", "b") && tree.are_linked("d", "c"));
    assert!(!tree.are_linked("a", "d"));
}

#[test]
fn a_relay_leaving_moves_its_children_who_keep_theirs() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d", "e", "f"] {
        tree.join(&id(name), true, now);
        tree.ready(&id(name));
    }
    // a ← broadcaster; b, c ← a; d, f ← b (earlier eligible first); e ← c (fewest children).
    assert_eq!(tree.upstream_of("d"), Some(&v("b")));
    assert_eq!(tree.upstream_of("e"), Some(&v("c")));
    assert_eq!(tree.upstream_of("f"), Some(&v("b")));
    let notices = tree.leave(&id("a"), now);
    // The broadcaster hears that a left; b takes the free direct slot; c, whose own child e
    // is excluded, goes under d (depth 2 under b, first eligible with room). Nobody below b
    // or c is told anything: they keep their feeders.
    assert_eq!(
        notices,
        vec![
            left(Feeder::Broadcaster, "a"),
            up("b", Feeder::Broadcaster, 1),
            up("c", v("d"), 3),
        ]
    );
    assert_eq!(tree.upstream_of("e"), Some(&v("c")));
    check(&tree);
}

#[test]
fn a_waiting_viewer_gets_the_broadcaster_after_the_wait_limit() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 1), true);
    tree.join(&id("a"), true, now);
    tree.ready(&id("a"));
    assert_eq!(tree.join(&id("b"), true, now), vec![up("b", v("a"), 2)]);
    // a is full and b does not play yet: c waits.
    assert_eq!(tree.join(&id("c"), true, now), vec![]);
    assert_eq!(tree.next_deadline(), Some(now + WAIT));
    assert!(tree.expire_waits(now + WAIT / 2).is_empty());
    assert_eq!(
        tree.expire_waits(now + WAIT),
        vec![up("c", Feeder::Broadcaster, 1)]
    );
    assert_eq!(tree.direct_count(), 2);
    assert_eq!(tree.next_deadline(), None);
    check(&tree);
}

#[test]
fn upstream_failed_avoids_the_reported_feeder() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c"] {
        tree.join(&id(name), true, now);
        tree.ready(&id(name));
    }
    // c ← a (a has b and c). c says a failed it: it goes to b, not back to a.
    assert_eq!(tree.upstream_of("c"), Some(&v("a")));
    let notices = tree.upstream_failed(&id("c"), now);
    assert_eq!(notices, vec![left(v("a"), "c"), up("c", v("b"), 3)]);
    check(&tree);
    // The former upstream is no longer a peer.
    assert!(!tree.are_linked("a", "c"));
}

#[test]
fn stop_dissolves_and_going_live_places_everyone_again() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(2, 2), true);
    for name in ["a", "b", "c"] {
        tree.join(&id(name), true, now);
        tree.ready(&id(name));
    }
    tree.join(&id("legacy"), false, now);
    tree.stop();
    check(&tree);
    assert_eq!(tree.join(&id("late"), true, now), vec![]);
    let notices = tree.go_live(now);
    // In order of joining: a and b get the broadcaster; nobody is eligible yet, so c waits;
    // the legacy leaf attaches over D silently; late waits.
    assert_eq!(
        notices,
        vec![
            up("a", Feeder::Broadcaster, 1),
            up("b", Feeder::Broadcaster, 1)
        ]
    );
    assert_eq!(tree.direct_count(), 3);
    check(&tree);
    assert_eq!(
        tree.ready(&id("a")),
        vec![up("c", v("a"), 2), up("late", v("a"), 2)]
    );
    check(&tree);
}

#[test]
fn without_the_tree_everyone_is_fed_by_the_broadcaster() {
    let now = Moment::now();
    for mut tree in [
        Tree::new(limits(1, 2), false),
        Tree::new(limits(1, 0), true),
    ] {
        for name in ["a", "b", "c"] {
            assert_eq!(
                tree.join(&id(name), true, now),
                vec![up(name, Feeder::Broadcaster, 1)]
            );
            assert!(tree.ready(&id(name)).is_empty());
        }
        assert_eq!(tree.direct_count(), 3);
        check(&tree);
    }
}

#[test]
fn depth_grows_with_the_logarithm_of_the_audience() {
    let now = Moment::now();
    let (d, f) = (4, 2);
    let mut tree = Tree::new(limits(d, f), true);
    let n = 1000;
    for i in 0..n {
        let name = id(&format!("v{i}"));
        tree.join(&name, true, now);
        tree.ready(&name);
    }
    check(&tree);
    // Depth k holds up to D·F^(k−1): 4 + 8 + … + 512 = 1020 ≥ 1000 at depth 8.
    let deepest = tree.nodes.values().map(|n| n.depth).max().unwrap();
    assert_eq!(deepest, 8);
    assert_eq!(tree.direct_count(), d);
    for i in 0..n {
        tree.leave(&id(&format!("v{i}")), now);
    }
    assert!(tree.nodes.is_empty() && tree.direct.is_empty() && tree.candidates.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8, bool),
    Ready(u8),
    Failed(u8),
    Leave(u8),
    Stop,
    GoLive,
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..14, any::<bool>()).prop_map(|(i, relay)| Op::Join(i, relay)),
        4 => (0u8..14).prop_map(Op::Ready),
        2 => (0u8..14).prop_map(Op::Failed),
        2 => (0u8..14).prop_map(Op::Leave),
        1 => Just(Op::Stop),
        1 => Just(Op::GoLive),
        1 => (0u16..12_000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary sequences of joins (legacy and tree), `relay_ready`, `upstream_failed`,
    /// leaves, stops, going live again and the passing of time keep every invariant, and leave
    /// nothing behind once everybody has left.
    #[test]
    fn invariants_hold_for_any_sequence(
        direct in 1usize..4,
        fanout in 0usize..4,
        relay_allowed in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let start = Moment::now();
        let mut now = start;
        let mut tree = Tree::new(limits(direct, fanout), relay_allowed);
        let mut expired = false;
        for op in ops {
            let name = |i: u8| id(&format!("v{i}"));
            match op {
                Op::Join(i, relay) => { tree.join(&name(i), relay, now); }
                Op::Ready(i) => { tree.ready(&name(i)); }
                Op::Failed(i) => { tree.upstream_failed(&name(i), now); }
                Op::Leave(i) => { tree.leave(&name(i), now); }
                Op::Stop => tree.stop(),
                Op::GoLive => { tree.go_live(now); }
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms.into());
                    expired |= !tree.expire_waits(now).is_empty();
                }
            }
            check(&tree);
            // The broadcaster feeds more than D tree viewers only after a wait ran out (or
            // with the tree off).
            let tree_direct = tree.direct.iter().filter(|d| tree.nodes[*d].relay).count();
            prop_assert!(tree_direct <= direct || expired || !tree.enabled);
        }
        let everyone: Vec<SocketId> = tree.nodes.keys().cloned().collect();
        for viewer in everyone {
            tree.leave(&viewer, now);
            check(&tree);
        }
        prop_assert!(tree.nodes.is_empty());
        prop_assert!(tree.direct.is_empty());
        prop_assert!(tree.candidates.is_empty());
        prop_assert!(tree.waiting.is_empty());
    }
}
