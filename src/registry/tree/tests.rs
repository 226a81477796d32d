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
        seq: 0,
    }
}

/// The notices with every `upstream`'s `seq` checked (strictly increasing in the order given)
/// and then zeroed, so that tests state who is told what.
fn plain(notices: Vec<Notice>) -> Vec<Notice> {
    let mut last = 0;
    notices
        .into_iter()
        .map(|notice| match notice {
            Notice::Upstream {
                viewer,
                feeder,
                depth,
                seq,
            } => {
                assert!(seq > last, "seq grows: {seq} after {last}");
                last = seq;
                Notice::Upstream {
                    viewer,
                    feeder,
                    depth,
                    seq: 0,
                }
            }
            other => other,
        })
        .collect()
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
        assert!(
            node.children.len() <= node.room(fanout),
            "{name} feeds no more than its capacity"
        );
        if node.stalled_by.len() >= STALLS_TO_DEMOTE {
            assert!(
                node.children.is_empty(),
                "{name}, reported twice, feeds nobody"
            );
        }
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
    let leaves: BTreeSet<_> = tree
        .nodes
        .iter()
        .filter_map(|(name, n)| leaf_key(name, n))
        .collect();
    assert_eq!(tree.leaves, leaves, "leaf index");
    let spares: BTreeSet<_> = tree
        .nodes
        .iter()
        .filter(|(_, n)| n.eligible.is_some())
        .filter_map(|(name, n)| leaf_key(name, n))
        .collect();
    assert_eq!(tree.spares, spares, "spare index");
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
    assert_eq!(plain(tree.join(&id("legacy1"), false, now)), vec![]);
    assert_eq!(plain(tree.join(&id("legacy2"), false, now)), vec![]);
    assert_eq!(tree.direct_count(), 2);
    assert_eq!(tree.upstream_of("legacy2"), Some(&Feeder::Broadcaster));
    // A channel of legacy viewers only: their departure tells the broadcaster nothing new.
    assert_eq!(plain(tree.leave(&id("legacy1"), now)), vec![]);
    // Once a tree viewer has joined (a waits: the legacy leaf holds the one direct slot), the
    // broadcaster hears about every child it fed, and the freed slot goes to a.
    assert_eq!(plain(tree.join(&id("a"), true, now)), vec![]);
    assert_eq!(
        plain(tree.leave(&id("legacy2"), now)),
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
        plain(tree.join(&id("a"), true, now)),
        vec![up("a", Feeder::Broadcaster, 1)]
    );
    // The broadcaster is full and nobody relays yet: b waits.
    assert_eq!(plain(tree.join(&id("b"), true, now)), vec![]);
    // a plays: b gets a.
    assert_eq!(plain(tree.ready(&id("a"))), vec![up("b", v("a"), 2)]);
    assert_eq!(
        plain(tree.join(&id("c"), true, now)),
        vec![up("c", v("a"), 2)]
    );
    // a is full; b and c are not ready: d waits until one of them is.
    assert_eq!(plain(tree.join(&id("d"), true, now)), vec![]);
    assert_eq!(plain(tree.ready(&id("c"))), vec![up("d", v("c"), 3)]);
    assert!(plain(tree.ready(&id("b"))).is_empty());
    // The shallowest with the fewest children first: b (depth 2, no child) before c.
    assert_eq!(
        plain(tree.join(&id("e"), true, now)),
        vec![up("e", v("b"), 3)]
    );
    check(&tree);
    assert!(tree.are_linked("a", "b") && tree.are_linked("d", "c"));
    assert!(!tree.are_linked("a", "d"));
}

#[test]
fn a_relay_leaving_is_replaced_by_the_deepest_spare_leaf() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d", "e", "f"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a ← broadcaster; b, c ← a; d, f ← b (earlier eligible first); e ← c (fewest children).
    assert_eq!(tree.upstream_of("d"), Some(&v("b")));
    assert_eq!(tree.upstream_of("e"), Some(&v("c")));
    assert_eq!(tree.upstream_of("f"), Some(&v("b")));
    let notices = plain(tree.leave(&id("a"), now));
    // The broadcaster hears that a left; f (a ready leaf of the deepest level, the latest to
    // join) leaves b and takes a's place; b and c are told their new feeder at their old depth.
    // Nobody below b or c is told anything: they keep their feeders and depths.
    assert_eq!(
        notices,
        vec![
            left(Feeder::Broadcaster, "a"),
            left(v("b"), "f"),
            up("f", Feeder::Broadcaster, 1),
            up("b", v("f"), 2),
            up("c", v("f"), 2),
        ]
    );
    assert_eq!(tree.upstream_of("d"), Some(&v("b")));
    assert_eq!(tree.upstream_of("e"), Some(&v("c")));
    assert_eq!(tree.depths(), &[1, 2, 2]);
    check(&tree);
}

#[test]
fn without_a_spare_leaf_the_orphans_are_placed_with_their_subtrees() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a; b, c ← a; d ← b, not ready. c reports a: it goes under b (the place it left under a
    // stays free: one place cannot take c and d up). Neither leaf has said `relay_ready` since.
    plain(tree.join(&id("d"), true, now));
    plain(tree.upstream_failed(&id("c"), now));
    assert_eq!(tree.upstream_of("c"), Some(&v("b")));
    assert_eq!(tree.upstream_of("d"), Some(&v("b")));
    let notices = plain(tree.leave(&id("a"), now));
    // No leaf can feed a's children, so the contract's rule applies: b takes the broadcaster's
    // place with its subtree (c and d).
    assert_eq!(
        notices,
        vec![
            left(Feeder::Broadcaster, "a"),
            up("b", Feeder::Broadcaster, 1)
        ]
    );
    check(&tree);
}

#[test]
fn a_place_freed_near_the_top_is_filled_when_that_empties_the_deepest_level() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    // a; b, c ← a; d, f ← b; e, g ← c; every one ready; h ← d at depth 4.
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    plain(tree.join(&id("h"), true, now));
    assert_eq!(tree.upstream_of("h"), Some(&v("d")));
    // e (a leaf at depth 3) leaves: c's place at depth 3 is shallower than h, the only viewer
    // at depth 4, which moves up (the level goes).
    assert_eq!(
        plain(tree.leave(&id("e"), now)),
        vec![left(v("c"), "e"), left(v("d"), "h"), up("h", v("c"), 3)]
    );
    assert_eq!(tree.depths(), &[1, 2, 4]);
    // f leaves too: its place under b cannot take the whole of depth 3 (four viewers) away,
    // so it waits for the next viewer.
    assert_eq!(plain(tree.leave(&id("f"), now)), vec![left(v("b"), "f")]);
    assert_eq!(
        plain(tree.join(&id("i"), true, now)),
        vec![up("i", v("b"), 3)]
    );
    check(&tree);
}

/// Where the tree is deeper than the bound, a freed place is filled from the deepest level;
/// where it is within it, a place that frees near the top moves nobody: a legacy viewer fed by
/// the broadcaster leaving a tree of 2,000 used to move a leaf up into its place, whose room
/// then pulled up the next leaf, and so on through half the tree (997 moves).
#[test]
fn a_freed_direct_place_does_not_pull_half_the_tree_up() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(2, 2), true);
    tree.go_live(now);
    tree.join(&id("legacy"), false, now);
    for i in 0..2000 {
        let name = format!("v{i}");
        tree.join(&id(&name), true, now);
        tree.ready(&id(&name));
    }
    let before = tree.depths().len();
    let mut moved = 0;
    let mut pending: Vec<SocketId> = Vec::new();
    for notice in tree.leave(&id("legacy"), now) {
        if let Notice::Upstream { viewer, .. } = notice {
            moved += 1;
            pending.push(viewer);
        }
    }
    // Every moved viewer plays and says `relay_ready`, which may move more.
    while let Some(viewer) = pending.pop() {
        for notice in tree.ready(&viewer) {
            if let Notice::Upstream { viewer, .. } = notice {
                moved += 1;
                pending.push(viewer);
            }
        }
    }
    assert_eq!(moved, 0);
    assert_eq!(tree.depths().len(), before);
    assert!(tree.depths().len() <= tree.optimal_depth() + 1);
    check(&tree);
}

#[test]
fn upstream_failed_of_a_relay_hands_its_children_to_a_spare_leaf() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a; b, c ← a; d, f ← b; e, g ← c. b (depth 2) says a fails it. No place at depth ≤ 2 but a's: instead of
    // sinking b's subtree, g (deepest ready leaf) takes b's place and children, and b starts
    // again as a leaf, where g was.
    assert_eq!(
        plain(tree.upstream_failed(&id("b"), now)),
        vec![
            left(v("a"), "b"),
            left(v("c"), "g"),
            up("g", v("a"), 2),
            up("d", v("g"), 3),
            up("f", v("g"), 3),
            up("b", v("c"), 3),
        ]
    );
    assert_eq!(tree.depths(), &[1, 2, 4]);
    check(&tree);
}

#[test]
fn a_waiting_viewer_gets_the_broadcaster_after_the_wait_limit() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 1), true);
    plain(tree.join(&id("a"), true, now));
    plain(tree.ready(&id("a")));
    assert_eq!(
        plain(tree.join(&id("b"), true, now)),
        vec![up("b", v("a"), 2)]
    );
    // a is full and b does not play yet: c waits.
    assert_eq!(plain(tree.join(&id("c"), true, now)), vec![]);
    assert_eq!(tree.next_deadline(), Some(now + WAIT));
    assert!(plain(tree.expire_waits(now + WAIT / 2)).is_empty());
    assert_eq!(
        plain(tree.expire_waits(now + WAIT)),
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
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // c ← a (a has b and c). c says a failed it: it goes to b, not back to a.
    assert_eq!(tree.upstream_of("c"), Some(&v("a")));
    let notices = plain(tree.upstream_failed(&id("c"), now));
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
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    plain(tree.join(&id("legacy"), false, now));
    tree.stop();
    check(&tree);
    assert_eq!(plain(tree.join(&id("late"), true, now)), vec![]);
    let notices = plain(tree.go_live(now));
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
        plain(tree.ready(&id("a"))),
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
                plain(tree.join(&id(name), true, now)),
                vec![up(name, Feeder::Broadcaster, 1)]
            );
            assert!(plain(tree.ready(&id(name))).is_empty());
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
        plain(tree.join(&name, true, now));
        plain(tree.ready(&name));
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

#[test]
fn a_relay_without_capacity_gets_no_children() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    plain(tree.join(&id("a"), true, now));
    // a says it can feed nobody (a phone, say) before it plays.
    assert!(tree.set_capacity(&id("a"), 0, now).is_empty());
    plain(tree.ready(&id("a")));
    // The broadcaster is full and a feeds nobody: b waits, then gets the broadcaster.
    assert!(plain(tree.join(&id("b"), true, now)).is_empty());
    assert_eq!(tree.capacity_of("a"), 0);
    assert_eq!(
        plain(tree.expire_waits(now + WAIT)),
        vec![up("b", Feeder::Broadcaster, 1)]
    );
    check(&tree);
}

#[test]
fn a_capacity_over_f_counts_as_f_and_one_lowered_moves_the_latest_child() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    assert!(tree.set_capacity(&id("a"), 50, now).is_empty());
    assert_eq!(tree.capacity_of("a"), 2);
    // a; b, c ← a; d ← b. a can feed one only: c (the later) moves, under b.
    assert_eq!(
        plain(tree.set_capacity(&id("a"), 1, now)),
        vec![left(v("a"), "c"), up("c", v("b"), 3)]
    );
    check(&tree);
    // Raised again: one place at depth 2 cannot take both viewers at depth 3 up, so nobody
    // moves; the next join takes it.
    assert!(plain(tree.set_capacity(&id("a"), 2, now)).is_empty());
    assert_eq!(
        plain(tree.join(&id("e"), true, now)),
        vec![up("e", v("a"), 2)]
    );
    check(&tree);
}

#[test]
fn a_relay_dropping_to_capacity_zero_hands_its_children_to_a_spare() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a; b, c ← a; d, f ← b; e, g ← c. b drops to 0: g takes its place and children, and b
    // starts again as a leaf, where g was.
    assert_eq!(
        plain(tree.set_capacity(&id("b"), 0, now)),
        vec![
            left(v("a"), "b"),
            left(v("c"), "g"),
            up("g", v("a"), 2),
            up("d", v("g"), 3),
            up("f", v("g"), 3),
            left(v("b"), "d"),
            left(v("b"), "f"),
            up("b", v("c"), 3),
        ]
    );
    check(&tree);
    // b says `relay_ready` again and stays a leaf: nobody is hung under it.
    plain(tree.ready(&id("b")));
    plain(tree.join(&id("h"), true, now));
    assert_ne!(tree.upstream_of("h"), Some(&v("b")));
    check(&tree);
}

#[test]
fn without_a_spare_a_relay_at_capacity_zero_has_its_children_placed_again() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(2, 2), true);
    for name in ["a", "b"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    plain(tree.join(&id("c"), true, now));
    // a, b ← broadcaster; c ← a, not playing yet. No spare below a: c is placed again, under b.
    assert_eq!(
        plain(tree.set_capacity(&id("a"), 0, now)),
        vec![left(v("a"), "c"), up("c", v("b"), 2)]
    );
    check(&tree);
}

#[test]
fn two_childrens_stall_reports_take_the_relays_capacity() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(2, 2), true);
    for name in ["a", "b", "c", "d", "e"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a, b ← broadcaster; c, e ← a; d ← b.
    assert_eq!(tree.upstream_of("c"), Some(&v("a")));
    assert_eq!(tree.upstream_of("e"), Some(&v("a")));
    // c stalls: it moves (under b), a keeps its capacity.
    assert_eq!(
        plain(tree.upstream_stalled(&id("c"), now)),
        vec![left(v("a"), "c"), up("c", v("b"), 2)]
    );
    assert_eq!(tree.capacity_of("a"), 2);
    // c again, now under b: one report against b, none more against a.
    plain(tree.ready(&id("c")));
    plain(tree.upstream_stalled(&id("c"), now));
    assert_eq!(tree.capacity_of("a"), 2);
    assert_eq!(tree.capacity_of("b"), 2);
    // e, a second child of a: a feeds nobody from now on, whatever it reports.
    plain(tree.upstream_stalled(&id("e"), now));
    assert_eq!(tree.capacity_of("a"), 0);
    assert!(tree.nodes["a"].children.is_empty());
    assert!(tree.set_capacity(&id("a"), 2, now).is_empty());
    assert_eq!(tree.capacity_of("a"), 0);
    check(&tree);
}

#[test]
fn stall_reports_soon_after_the_relays_own_report_are_excused() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a ← broadcaster; b, c ← a. a reported its own feeder a moment ago (as when its picture
    // stalled): its children's pictures stalled with its own.
    tree.update(&id("a"), |n| n.reported_at = Some(now));
    plain(tree.upstream_stalled(&id("b"), now + Duration::from_secs(1)));
    assert!(tree.nodes["a"].stalled_by.is_empty());
    // Past the excuse, a report counts.
    plain(tree.upstream_stalled(&id("c"), now + STALL_EXCUSE));
    assert_eq!(tree.nodes["a"].stalled_by.len(), 1);
    assert_eq!(tree.capacity_of("a"), 2);
    check(&tree);
}

#[test]
fn stall_reports_against_a_relay_that_does_not_play_yet_are_excused() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c", "d", "e", "f"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    // a; b, c ← a; d, f ← b; e ← c. a leaves: f takes its place, b and c move under f and
    // must say `relay_ready` again; until b does, what it forwards is not its fault.
    plain(tree.leave(&id("a"), now));
    assert_eq!(tree.upstream_of("b"), Some(&v("f")));
    assert_eq!(tree.upstream_of("d"), Some(&v("b")));
    plain(tree.upstream_stalled(&id("d"), now));
    assert!(tree.nodes["b"].stalled_by.is_empty());
    check(&tree);
}

#[test]
fn capacities_and_stall_reports_survive_storage_and_older_documents_load() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for name in ["a", "b", "c"] {
        plain(tree.join(&id(name), true, now));
        plain(tree.ready(&id(name)));
    }
    plain(tree.set_capacity(&id("b"), 1, now));
    plain(tree.upstream_stalled(&id("c"), now));
    let stored = serde_json::to_value(&tree).expect("a tree serializes");
    let loaded: Tree = serde_json::from_value(stored.clone()).expect("and loads");
    assert_eq!(loaded.capacity_of("b"), 1);
    assert_eq!(loaded.nodes["a"].stalled_by, tree.nodes["a"].stalled_by);
    check(&loaded);
    // A channel stored by a server without capacities: every viewer may feed F.
    let mut older = stored;
    for node in older["nodes"].as_object_mut().expect("nodes").values_mut() {
        let node = node.as_object_mut().expect("a node");
        for field in ["capacity", "stalled_by", "reported_at"] {
            node.remove(field);
        }
    }
    let loaded: Tree = serde_json::from_value(older).expect("an older document loads");
    assert_eq!(loaded.capacity_of("b"), 2);
    assert!(loaded.nodes["a"].stalled_by.is_empty());
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
    Capacity(u8, u8),
    Stalled(u8),
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
        2 => (0u8..14, 0u8..4).prop_map(|(i, c)| Op::Capacity(i, c)),
        2 => (0u8..14).prop_map(Op::Stalled),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary sequences of joins (legacy and tree), `relay_ready`, `upstream_failed`,
    /// `upstream_stalled`, `relay_capacity`, leaves, stops, going live again and the passing
    /// of time keep every invariant (a viewer never feeds more than its capacity), and leave
    /// nothing behind once everybody has left; a relay at capacity 0 is given no child.
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
                Op::Capacity(i, c) => { tree.set_capacity(&name(i), c.into(), now); }
                Op::Stalled(i) => { tree.upstream_stalled(&name(i), now); }
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

/// What pages do: a viewer plays (and says `relay_ready`) soon after each `upstream`. Sends
/// `relay_ready` for every placed tree viewer that is not eligible until nothing changes, and
/// returns the notices that caused.
fn settle(tree: &mut Tree) -> Vec<Notice> {
    let mut notices = Vec::new();
    loop {
        let mut unready: Vec<(u64, SocketId)> = tree
            .nodes
            .iter()
            .filter(|(_, n)| n.relay && n.parent.is_some() && n.eligible.is_none())
            .map(|(name, n)| (n.joined, name.clone()))
            .collect();
        if unready.is_empty() || !tree.enabled {
            return notices;
        }
        unready.sort();
        for (_, viewer) in unready {
            notices.extend(tree.ready(&viewer));
        }
    }
}

fn optimal_depth(tree: &Tree) -> usize {
    tree.optimal_depth()
}

#[derive(Debug, Clone)]
enum Churn {
    Join(u8, bool),
    Failed(u8),
    Leave(u8),
    Wait(u16),
}

fn churn() -> impl Strategy<Value = Churn> {
    prop_oneof![
        6 => (0u8..40, prop::bool::weighted(0.9)).prop_map(|(i, relay)| Churn::Join(i, relay)),
        1 => (0u8..40).prop_map(Churn::Failed),
        4 => (0u8..40).prop_map(Churn::Leave),
        1 => (0u16..12_000).prop_map(Churn::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Viewers join, leave, report failed feeders and play soon after each `upstream` (every
    /// event is followed by the `relay_ready`s of the pages it moved). After every event:
    /// - no leaf hangs deeper than the shallowest free place, unless it reported that place's
    ///   feeder; when none does, the depth is at most the full breadth-first tree's (see
    ///   [`optimal_depth`]) + 1;
    /// - a departure moves at most F + 2 viewers (the spare, the departed relay's children and
    ///   one leaf moved up), an `upstream_failed` at most F + 3 (the reporter too), besides the
    ///   viewers of the deepest level when the event lets that whole level go up;
    /// - a viewer moves down or sideways only when it reports its feeder or its feeder leaves
    ///   or reports; every other move takes it up at least one level, so between two such
    ///   events a viewer is moved at most (its depth − 1) times.
    #[test]
    fn depth_stays_within_one_level_of_optimal(
        direct in 1usize..4,
        fanout in 1usize..4,
        ops in proptest::collection::vec(churn(), 1..120),
    ) {
        let mut now = Moment::now();
        let mut tree = Tree::new(limits(direct, fanout), true);
        for op in ops {
            let name = |i: u8| id(&format!("v{i}"));
            let before: HashMap<SocketId, (usize, Option<Feeder>)> = tree
                .nodes
                .iter()
                .filter(|(_, n)| n.anchored)
                .map(|(k, n)| (k.clone(), (n.depth, n.parent.clone())))
                .collect();
            let deepest_before = tree.depths().len();
            let (notices, cause) = match op {
                Churn::Join(i, relay) => (tree.join(&name(i), relay, now), None),
                Churn::Failed(i) => (tree.upstream_failed(&name(i), now), Some(name(i))),
                Churn::Leave(i) => (tree.leave(&name(i), now), Some(name(i))),
                Churn::Wait(ms) => {
                    now += Duration::from_millis(ms.into());
                    (tree.expire_waits(now), None)
                }
            };
            let moved: Vec<&SocketId> = notices
                .iter()
                .filter_map(|n| match n {
                    Notice::Upstream { viewer, .. } if before.contains_key(viewer) => Some(viewer),
                    _ => None,
                })
                .collect();
            // When the event lets the whole deepest level go up (the free places above it can
            // take every viewer left on it), those viewers move too, each up a level: the
            // bound is on the rest.
            let level_went = tree.depths().len() < deepest_before;
            let moves = moved
                .iter()
                .filter(|v| !(level_went && before[**v].0 == deepest_before))
                .count();
            match op {
                Churn::Leave(_) => prop_assert!(moves <= fanout + 2, "{moves} moves for a departure"),
                Churn::Failed(_) => prop_assert!(moves <= fanout + 3, "{moves} moves for a report"),
                _ => {}
            }
            let notices = [notices, settle(&mut tree)].concat();
            check(&tree);
            // Which way each viewer placed before the event moved.
            let mut depth_now: HashMap<SocketId, usize> =
                before.iter().map(|(k, (d, _))| (k.clone(), *d)).collect();
            for notice in &notices {
                let Notice::Upstream { viewer, depth, .. } = notice else { continue };
                if let Some(old) = depth_now.insert(viewer.clone(), *depth) {
                    let feeder_went = cause.as_ref().is_some_and(|c| {
                        c == viewer || before[viewer].1 == Some(Feeder::Viewer(c.clone()))
                    });
                    prop_assert!(
                        *depth < old || feeder_went,
                        "{viewer} moved from depth {old} to {depth}"
                    );
                }
            }
            // Deeper than the bound only while a leaf kept from the feeder it reported hangs
            // below a free place (then the place stays free).
            let deepest = tree.depths().len();
            let optimal = optimal_depth(&tree);
            if deepest > optimal + 1 {
                let mut kept = false;
                if let Some((place, feeder)) = tree.free_place() {
                    for (_, _, leaf) in tree.leaves.iter().filter(|(d, _, _)| *d > place) {
                        prop_assert_eq!(tree.nodes[leaf].reported.as_ref(), Some(&feeder));
                        kept = true;
                    }
                }
                prop_assert!(kept, "depth {deepest}, optimal {optimal}");
            }
        }
    }
}

/// A cluster keeps the tree in the channel's document: what one release writes, it and the
/// release before it read back as the same tree (the earlier one wrote every field).
#[test]
fn a_tree_reads_back_from_its_short_form_and_from_the_full_one() {
    let now = Moment::now();
    let mut tree = Tree::new(limits(1, 2), true);
    for viewer in ["a", "b", "c", "d"] {
        tree.join(&id(viewer), true, now);
    }
    tree.join(&id("legacy"), false, now);
    tree.ready(&id("a"));
    tree.set_capacity(&id("a"), 1, now);
    tree.upstream_stalled(&id("b"), now);
    // Sets of ids are written in their hash order, which differs between two copies.
    fn canonical(tree: &Tree) -> serde_json::Value {
        fn sort(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Array(items) => {
                    items.iter_mut().for_each(sort);
                    if items.iter().all(serde_json::Value::is_string) {
                        items.sort_by_key(|item| item.to_string());
                    }
                }
                serde_json::Value::Object(fields) => fields.values_mut().for_each(sort),
                _ => {}
            }
        }
        let mut v = serde_json::to_value(tree).expect("serializable");
        sort(&mut v);
        v
    }
    let short = canonical(&tree);
    let read: Tree = serde_json::from_value(short.clone()).expect("reads back");
    assert_eq!(canonical(&read), short);
    check(&read);

    // Every field written, as the release before this one did.
    let mut full = short.clone();
    for node in full["nodes"].as_object_mut().expect("nodes").values_mut() {
        let node = node.as_object_mut().expect("a node");
        for field in [
            "parent",
            "eligible",
            "waiting",
            "avoid",
            "reported",
            "reported_at",
            "capacity",
        ] {
            node.entry(field).or_insert(serde_json::Value::Null);
        }
        node.entry("stalled_by").or_insert(serde_json::json!([]));
    }
    assert_ne!(full, short);
    let read: Tree = serde_json::from_value(full).expect("reads the full form");
    assert_eq!(canonical(&read), short);
    let legacy = short["nodes"]["legacy"].as_object().expect("legacy node");
    assert!(!legacy.contains_key("eligible") && !legacy.contains_key("stalled_by"));
}
