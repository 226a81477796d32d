//! The registry's rules, through the in-memory backend: unit tests per operation, and a property
//! test that any sequence of operations keeps every index consistent.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use super::Stats;
use super::broadcaster::BroadcastRequest;
use super::clock::Moment;
use super::errors::{ChannelError, ViewerAction};
use super::ids::{ChannelId, SocketId};
use super::membership::{Departure, ViewerLeft, ViewerRequest};
use super::memory::MemoryRegistry;
use super::model::{Channel, ClosedChannel, RegistryLimits};
use super::peers::{Peers, PeersChange, relay_target};
use super::relay::Activity;
use super::tree::TreeLimits;
use super::tree_events::{TreeEvent, TreeOp};

const TREE: TreeLimits = TreeLimits {
    direct: 4,
    fanout: 2,
    wait: Duration::from_secs(10),
};

fn registry(max_channels: usize, ttl: Duration) -> MemoryRegistry {
    MemoryRegistry::new(RegistryLimits {
        max_channels,
        idle_ttl: ttl,
        max_channels_per_socket: 100,
        max_channels_per_addr: 100,
        tree: TREE,
        resume_grace: Duration::ZERO,
        max_waiting_per_channel: 10,
        max_waiting: 100,
        chat_history: 3,
        ban_by_address: false,
    })
}

fn sid(s: &str) -> SocketId {
    SocketId::from(s)
}

fn default_registry() -> MemoryRegistry {
    registry(100, Duration::from_secs(3600))
}

#[test]
fn broadcaster_gets_generated_id_when_none_given() {
    let r = default_registry();
    let started = r.open_channel(&sid("b"), None, None, false, true).unwrap();
    assert_eq!(started.channel_id.len(), 8);
    assert!(
        started
            .channel_id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert!(started.waiting_viewers.is_empty());
}

#[test]
fn broadcaster_who_also_watches_gets_each_message_once_and_leaves_nothing() {
    let r = default_registry();
    let (b, v) = (sid("b"), sid("v"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    assert_eq!(
        r.chat(&b, "room", "hi").map(|_| ()),
        Err(ChannelError::NotAViewer(ViewerAction::Chat))
    );
    r.watch(&b, "room", false).unwrap();
    r.watch(&v, "room", false).unwrap();
    let delivery = r.chat(&b, "room", "hi").unwrap();
    let mut recipients = delivery.plain.clone();
    recipients.sort();
    assert_eq!(recipients, vec![b.clone(), v.clone()]);

    let departure = r.disconnect(&b);
    assert_eq!(departure.closed.len(), 1);
    r.disconnect(&v);
    let stats = r.stats();
    assert_eq!((stats.channels, stats.indexed_sockets), (0, 0));
}

#[test]
fn second_broadcaster_is_refused() {
    let r = default_registry();
    r.open_channel(&sid("b1"), None, Some("room"), false, true)
        .unwrap();
    let err = r
        .open_channel(&sid("b2"), None, Some("room"), true, true)
        .unwrap_err();
    assert_eq!(err.to_string(), "Channel room already has a broadcaster");
    let err = r
        .open_channel(&sid("b1"), None, Some("room"), false, true)
        .unwrap_err();
    assert_eq!(
        err,
        ChannelError::AlreadyHasBroadcaster(ChannelId::from("room"))
    );
}

#[test]
fn owner_goes_live_again_with_force_and_viewers_are_returned() {
    let r = default_registry();
    let b = sid("b");
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&sid("v"), "room", false).unwrap();
    assert!(!r.watch(&sid("v"), "room", false).unwrap().stopped);
    assert_eq!(
        r.stop_broadcast(&b, "room").unwrap().viewers,
        vec![sid("v")]
    );
    assert!(r.watch(&sid("late"), "room", false).unwrap().stopped);
    let mut again = r.open_channel(&b, None, Some("room"), true, true).unwrap();
    again.waiting_viewers.sort();
    assert_eq!(again.waiting_viewers, vec![sid("late"), sid("v")]);
    assert!(!r.watch(&sid("later"), "room", false).unwrap().stopped);
}

#[test]
fn one_socket_or_address_cannot_take_every_channel() {
    let r = MemoryRegistry::new(RegistryLimits {
        max_channels: 100,
        idle_ttl: Duration::from_secs(60),
        max_channels_per_socket: 2,
        max_channels_per_addr: 3,
        tree: TREE,
        resume_grace: Duration::ZERO,
        max_waiting_per_channel: 10,
        max_waiting: 100,
        chat_history: 3,
        ban_by_address: false,
    });
    let home: IpAddr = "198.51.100.7".parse().unwrap();
    let hog = sid("hog");
    for id in ["a", "b"] {
        r.open_channel(&hog, Some(home), Some(id), false, true)
            .unwrap();
    }
    let err = r
        .open_channel(&hog, Some(home), Some("c"), false, true)
        .unwrap_err();
    assert_eq!(err, ChannelError::TooManyForSocket(2));
    // Going live again on an owned channel is not a new channel.
    r.stop_broadcast(&hog, "a").unwrap();
    r.open_channel(&hog, Some(home), Some("a"), true, true)
        .unwrap();
    // The same address from another socket: one more, then refused.
    r.open_channel(&sid("twin"), Some(home), Some("c"), false, true)
        .unwrap();
    let err = r
        .open_channel(&sid("twin"), Some(home), Some("d"), false, true)
        .unwrap_err();
    assert_eq!(err, ChannelError::TooManyForAddress(3));
    assert!(err.to_string().contains("network address"));
    // Other addresses are not affected.
    r.open_channel(
        &sid("other"),
        "203.0.113.1".parse().ok(),
        Some("d"),
        false,
        true,
    )
    .unwrap();
    // Leaving frees the slots and leaves no index entry behind.
    r.disconnect(&hog);
    r.disconnect(&sid("twin"));
    r.disconnect(&sid("other"));
    assert_eq!(
        r.stats(),
        Stats {
            channels: 0,
            indexed_sockets: 0,
            indexed_addresses: 0
        }
    );
}

#[test]
fn capacity_is_refused_and_nothing_is_evicted() {
    let r = registry(2, Duration::from_secs(3600));
    r.open_channel(&sid("a"), None, Some("a"), false, true)
        .unwrap();
    r.open_channel(&sid("b"), None, Some("b"), false, true)
        .unwrap();
    let err = r
        .open_channel(&sid("c"), None, Some("c"), false, true)
        .unwrap_err();
    assert_eq!(err, ChannelError::AtCapacity(2));
    assert!(err.to_string().starts_with("Server is at capacity"));
    let ids: Vec<_> = r.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![ChannelId::from("a"), ChannelId::from("b")]);
    assert_eq!(r.stats().indexed_sockets, 2);
}

#[test]
fn list_is_oldest_first_with_fields() {
    let r = default_registry();
    r.open_channel(&sid("b1"), None, Some("first"), false, true)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    r.open_channel(&sid("b2"), None, Some("second"), false, true)
        .unwrap();
    let list = r.list();
    assert_eq!(list.len(), 2);
    assert_eq!(&*list[0].id, "first");
    assert_eq!(&*list[0].broadcaster_sid, "b1");
    assert_eq!(&*list[1].id, "second");
    assert!(list[0].created_at < list[1].created_at);
    assert_eq!(list[0].age_seconds, 0);
    assert!(list[0].last_activity >= list[0].created_at);
}

#[test]
fn viewer_join_unknown_channel() {
    let r = default_registry();
    let err = r.watch(&sid("v"), "nope", false).unwrap_err();
    assert_eq!(err.to_string(), "Channel nope not found or expired");
    assert_eq!(r.stats().indexed_sockets, 0);
}

#[test]
fn relay_only_between_broadcaster_and_its_viewers() {
    let r = default_registry();
    let (b, v, stranger, other_b) = (sid("b"), sid("v"), sid("s"), sid("ob"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.open_channel(&other_b, None, Some("other"), false, true)
        .unwrap();
    r.watch(&v, "room", false).unwrap();
    r.watch(&stranger, "other", false).unwrap();

    assert!(r.authorize_relay(&v, "b", Activity::Refresh).is_ok());
    assert!(r.authorize_relay(&b, "v", Activity::Refresh).is_ok());
    assert_eq!(
        r.authorize_relay(&stranger, "b", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
    assert_eq!(
        r.authorize_relay(&b, "s", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
    // Two viewers of one channel are not peers of each other.
    let v2 = sid("v2");
    r.watch(&v2, "room", false).unwrap();
    assert_eq!(
        r.authorize_relay(&v, "v2", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
    // Unknown sockets and unknown targets.
    assert_eq!(
        r.authorize_relay(&sid("ghost"), "b", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
    assert_eq!(
        r.authorize_relay(&b, "ghost", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
}

#[test]
fn alias_and_chat_names() {
    let r = default_registry();
    let (b, v1, v2) = (sid("bbbbbbbbbbbb"), sid("abcdefghijkl"), sid("zzzzzzzzzz"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&v1, "room", false).unwrap();
    r.watch(&v2, "room", false).unwrap();

    let chat = r.chat(&v1, "room", "hi").unwrap();
    assert_eq!(chat.message.sender_id, "Viewer-abcdefgh");
    let mut recipients = chat.plain.clone();
    recipients.sort();
    let mut expected = vec![b.clone(), v1.clone(), v2.clone()];
    expected.sort();
    assert_eq!(recipients, expected);
    assert_eq!(chat.plain[0], b, "broadcaster comes first");

    r.set_alias(&v1, "room", "Alice").unwrap();
    assert_eq!(
        r.chat(&v1, "room", "hi").unwrap().message.sender_id,
        "Alice"
    );
    // Rejoining keeps the alias.
    r.watch(&v1, "room", false).unwrap();
    assert_eq!(
        r.chat(&v1, "room", "hi").unwrap().message.sender_id,
        "Alice"
    );

    assert_eq!(
        r.set_alias(&b, "room", "Owner"),
        Err(ChannelError::NotAViewer(ViewerAction::Other))
    );
    assert_eq!(
        r.chat(&b, "room", "hi"),
        Err(ChannelError::NotAViewer(ViewerAction::Chat))
    );
    assert_eq!(r.chat(&v1, "gone", "hi"), Err(ChannelError::NotFound(None)));
    assert_eq!(
        r.set_alias(&v1, "gone", "Alice"),
        Err(ChannelError::NotFound(None))
    );
}

#[test]
fn peak_viewers_count_each_broadcast_from_its_start() {
    let r = default_registry();
    let (b, v1, v2, v3) = (sid("b"), sid("v1"), sid("v2"), sid("v3"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&v1, "room", false).unwrap();
    r.watch(&v2, "room", false).unwrap();
    r.disconnect(&v2);
    assert_eq!(r.stop_broadcast(&b, "room").unwrap().peak_viewers, 2);
    let again = r.open_channel(&b, None, Some("room"), true, true).unwrap();
    assert!(!again.was_live, "live again after a stop");
    let repeat = r.open_channel(&b, None, Some("room"), true, true).unwrap();
    assert!(repeat.was_live, "a repeated join while live");
    r.watch(&v3, "room", false).unwrap();
    let departure = r.disconnect(&b);
    let peaks: Vec<usize> = departure.closed.iter().map(|c| c.peak_viewers).collect();
    assert_eq!(peaks, [2], "v1 stayed, v3 joined: the new broadcast's peak");
}

#[test]
fn stop_broadcast_rules() {
    let r = default_registry();
    let (b, v) = (sid("b"), sid("v"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&v, "room", false).unwrap();
    assert_eq!(
        r.stop_broadcast(&v, "room"),
        Err(ChannelError::NotTheBroadcaster)
    );
    assert_eq!(
        r.stop_broadcast(&b, "nope"),
        Err(ChannelError::NotFound(None))
    );
    let stopped = r.stop_broadcast(&b, "room").unwrap();
    assert_eq!(stopped.viewers, vec![v]);
    assert_eq!((stopped.peak_viewers, stopped.was_live), (1, true));
    assert!(
        !r.stop_broadcast(&b, "room").unwrap().was_live,
        "stopped already"
    );
    assert_eq!(r.stats().channels, 1, "the channel stays after stop");
}

#[test]
fn broadcaster_disconnect_closes_its_channels_and_unindexes_viewers() {
    let r = default_registry();
    let (b, v1, v2) = (sid("b"), sid("v1"), sid("v2"));
    r.open_channel(&b, None, Some("one"), false, true).unwrap();
    r.open_channel(&b, None, Some("two"), false, true).unwrap();
    r.watch(&v1, "one", false).unwrap();
    r.watch(&v2, "two", false).unwrap();

    let mut departure = r.disconnect(&b);
    departure
        .closed
        .sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
    assert_eq!(departure.closed.len(), 2);
    assert_eq!(departure.closed[0].viewers, vec![v1.clone()]);
    assert_eq!(departure.closed[1].viewers, vec![v2.clone()]);
    assert_eq!(
        r.stats(),
        Stats {
            channels: 0,
            indexed_sockets: 0,
            indexed_addresses: 0
        }
    );
    assert_eq!(r.disconnect(&v1), Departure::default());
}

#[test]
fn viewer_disconnect_leaves_and_reports_count() {
    let r = default_registry();
    let (b, v1, v2) = (sid("b"), sid("v1"), sid("v2"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&v1, "room", false).unwrap();
    assert_eq!(r.watch(&v2, "room", false).unwrap().viewer_count, 2);
    let departure = r.disconnect(&v1);
    assert!(departure.closed.is_empty());
    assert_eq!(
        departure.left,
        vec![ViewerLeft {
            channel_id: ChannelId::from("room"),
            broadcaster: b.clone(),
            viewer_count: 1,
            count_told: false,
            // Legacy viewers only: nothing new for the broadcaster.
            tree: vec![],
        }]
    );
    assert_eq!(r.stats().indexed_sockets, 2);
    assert_eq!(
        r.authorize_relay(&b, "v1", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
}

#[test]
fn idle_channel_without_viewers_expires_but_live_one_never_does() {
    let ttl = Duration::from_millis(30);
    let r = registry(10, ttl);
    r.open_channel(&sid("idle"), None, Some("idle"), false, true)
        .unwrap();
    r.open_channel(&sid("live"), None, Some("live"), false, true)
        .unwrap();
    r.watch(&sid("v"), "live", false).unwrap();

    assert!(r.sweep(Moment::now()).is_empty(), "nothing is idle yet");
    std::thread::sleep(ttl * 2);
    let reaped = r.sweep(Moment::now());
    assert_eq!(
        reaped,
        vec![ClosedChannel {
            channel_id: ChannelId::from("idle"),
            broadcaster: sid("idle"),
            viewers: vec![],
            peak_viewers: 0,
        }]
    );
    let ids: Vec<_> = r.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![ChannelId::from("live")]);
    // Far in the future, the live channel still stays.
    assert!(
        r.sweep(Moment::now() + Duration::from_secs(86_400))
            .is_empty()
    );
    // Once its last viewer leaves, it is idle and goes at the next sweep past the TTL.
    r.disconnect(&sid("v"));
    assert_eq!(r.sweep(Moment::now() + ttl * 2).len(), 1);
    assert_eq!(
        r.stats(),
        Stats {
            channels: 0,
            indexed_sockets: 0,
            indexed_addresses: 0
        }
    );
}

#[test]
fn a_resumable_viewer_gets_its_alias_back_within_the_grace_only() {
    let r = MemoryRegistry::new(RegistryLimits {
        resume_grace: Duration::from_secs(30),
        ..default_registry().limits().clone()
    });
    r.open_channel(&sid("b"), None, Some("room"), false, true)
        .unwrap();
    let request = |presented, fresh| ViewerRequest {
        resumable: true,
        presented,
        fresh,
        ..ViewerRequest::default()
    };
    let joined = r
        .join_as_viewer(&sid("v1"), "room", request(None, "d1"))
        .unwrap();
    assert!(joined.resumable && joined.alias.is_none());
    r.set_alias(&sid("v1"), "room", "Alice").unwrap();
    r.disconnect(&sid("v1"));
    // Another token gets nothing back; the right one gets the alias, once.
    let stranger = r
        .join_as_viewer(&sid("x"), "room", request(Some("nope"), "dx"))
        .unwrap();
    assert_eq!(stranger.alias, None);
    let back = r
        .join_as_viewer(&sid("v2"), "room", request(Some("d1"), "d2"))
        .unwrap();
    assert_eq!(back.alias.as_deref(), Some("Alice"));
    assert_eq!(
        r.chat(&sid("v2"), "room", "hi").unwrap().message.sender_id,
        "Alice"
    );
    let again = r
        .join_as_viewer(&sid("v3"), "room", request(Some("d1"), "d3"))
        .unwrap();
    assert_eq!(again.alias, None, "a token works once");
    // After the grace the place is gone.
    r.disconnect(&sid("v2"));
    let late = r.on_cell("room", |state| {
        state.join_as_viewer(
            &sid("v4"),
            "room",
            request(Some("d2"), "d4"),
            Moment::now() + Duration::from_secs(31),
        )
    });
    assert_eq!(late.unwrap().alias, None);
}

#[test]
fn waiting_room_fills_up_hands_over_and_forgets_leavers() {
    let r = default_registry();
    let (w1, w2, w3) = (sid("w1"), sid("w2"), sid("w3"));
    assert_eq!(r.wait_for(&w1, "soon", false), Ok(true));
    assert_eq!(r.wait_for(&w1, "soon", false), Ok(true), "idempotent");
    assert_eq!(r.wait_for(&w2, "soon", false), Ok(true));
    assert_eq!(r.wait_for(&w3, "later", false), Ok(true));
    assert!(r.list().is_empty(), "waiting creates no channel");
    r.disconnect(&w3);
    let started = r
        .open_channel(&sid("b"), None, Some("soon"), false, true)
        .unwrap();
    assert_eq!(
        started.lobby,
        vec![w1.clone(), w2.clone()],
        "in order of arrival"
    );
    assert_eq!(
        started.admitted, started.lobby,
        "the waiters are its viewers now"
    );
    assert_eq!(started.viewer_count, 2);
    assert_eq!(
        r.wait_for(&w1, "soon", false),
        Ok(false),
        "the channel exists now"
    );
    {
        let state = r.state();
        assert!(state.lobbies.is_empty());
        assert_eq!(state.waiting_total, 0);
        assert!(state.sockets[&w1].waiting.is_empty());
        assert!(state.sockets[&w1].watching.contains("soon"));
    }
    // They may relay to the broadcaster at once; joining again changes nothing.
    assert_eq!(r.authorize_relay(&w1, "b", Activity::Keep), Ok(sid("b")));
    assert_eq!(r.watch(&w2, "soon", false).unwrap().viewer_count, 2);
    check_indexes(&r);
}

#[test]
fn waiters_of_a_private_channel_must_join_with_its_password() {
    let r = default_registry();
    let w = sid("w");
    assert_eq!(r.wait_for(&w, "secret", true), Ok(true));
    let request = BroadcastRequest {
        addr: None,
        force: false,
        relay: true,
        resumable: false,
        presented: None,
        fresh: "",
        password: Some("hash".to_owned()),
        key: None,
    };
    let started = r
        .join_as_broadcaster(&sid("b"), Some("secret"), request)
        .unwrap();
    assert_eq!(started.lobby, vec![w.clone()]);
    assert!(started.private);
    assert!(started.admitted.is_empty());
    assert_eq!(started.viewer_count, 0);
    assert_eq!(
        r.authorize_relay(&w, "b", Activity::Keep),
        Err(ChannelError::NotPeers)
    );
    assert!(!r.state().sockets.contains_key(&w));
    check_indexes(&r);
}

#[test]
fn tree_waiters_get_their_places_when_the_broadcaster_arrives() {
    let r = default_registry();
    let w = sid("w");
    assert_eq!(r.wait_for(&w, "tree", true), Ok(true));
    let started = r
        .open_channel(&sid("b"), None, Some("tree"), false, true)
        .unwrap();
    assert!(started.tree.iter().any(|e| matches!(
        e,
        TreeEvent::Upstream { to, peer, depth: 1, .. } if *to == w && *peer == sid("b")
    )));
    check_indexes(&r);
}

#[test]
fn waiting_room_limits_per_channel_and_overall() {
    let r = default_registry(); // 10 per channel, 100 overall
    for i in 0..10 {
        assert_eq!(r.wait_for(&sid(&format!("a{i}")), "one", false), Ok(true));
    }
    assert_eq!(
        r.wait_for(&sid("a10"), "one", false),
        Err(ChannelError::WaitingRoomFull)
    );
    for i in 0..90 {
        let channel = format!("c{}", i / 9);
        assert_eq!(
            r.wait_for(&sid(&format!("b{i}")), &channel, false),
            Ok(true)
        );
    }
    assert_eq!(
        r.wait_for(&sid("late"), "other", false),
        Err(ChannelError::WaitingRoomFull)
    );
}

#[test]
fn activity_refresh_postpones_expiry() {
    let ttl = Duration::from_millis(50);
    let r = registry(10, ttl);
    let b = sid("b");
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // A stop refreshes activity too.
    r.stop_broadcast(&b, "room").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(r.sweep(Moment::now()).is_empty());
}

#[test]
fn concurrent_disconnects_leave_nothing_behind() {
    let r = default_registry();
    let b = sid("b");
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    let viewers: Vec<SocketId> = (0..50).map(|i| sid(&format!("v{i}"))).collect();
    for v in &viewers {
        r.watch(v, "room", false).unwrap();
    }
    std::thread::scope(|scope| {
        scope.spawn(|| r.disconnect(&b));
        for v in &viewers {
            let r = r.clone();
            scope.spawn(move || r.disconnect(v));
        }
    });
    assert_eq!(
        r.stats(),
        Stats {
            channels: 0,
            indexed_sockets: 0,
            indexed_addresses: 0
        }
    );
}

/// Follows every channel's [`Peers`] as a cluster's replica does, from the changes alone
/// (through their published JSON): each must equal the channel's own peers after every
/// operation, and authorize exactly the relays the channel does.
fn follow_peers(
    r: &MemoryRegistry,
    last: &mut HashMap<ChannelId, Channel>,
    followed: &mut HashMap<ChannelId, Peers>,
) {
    let state = r.state();
    last.retain(|id, _| state.channels.contains_key(id));
    followed.retain(|id, _| state.channels.contains_key(id));
    for (id, channel) in &state.channels {
        let now = Peers::of(channel);
        match (last.get(id), followed.get_mut(id)) {
            (Some(before), Some(copy)) => {
                let change = PeersChange::between(before, channel);
                let wire = serde_json::to_string(&change).expect("a change encodes");
                copy.apply(serde_json::from_str(&wire).expect("a change decodes"));
            }
            _ => {
                followed.insert(id.clone(), now.clone());
            }
        }
        assert_eq!(followed.get(id), Some(&now), "followed peers of {id}");
        let copy = &followed[id];
        for a in 0..8 {
            for b in 0..8 {
                let (a, b) = (sid(&format!("s{a}")), format!("s{b}"));
                assert_eq!(
                    relay_target(copy, &a, &b),
                    channel.relay_target(&a, &b),
                    "relay {a} -> {b} in {id}"
                );
            }
        }
        last.insert(id.clone(), channel.clone());
    }
}

/// Every index agrees with the channels: the socket index lists exactly the channels each
/// socket broadcasts or watches (and no socket without any), the address counts match the
/// owners, and the wait index matches the trees.
fn check_indexes(r: &MemoryRegistry) {
    let state = r.state();
    type Sets = (HashSet<ChannelId>, HashSet<ChannelId>, HashSet<ChannelId>);
    let mut expected: HashMap<SocketId, Sets> = HashMap::new();
    for (id, lobby) in &state.lobbies {
        assert!(!lobby.is_empty(), "empty lobby {id} kept");
        assert!(
            !state.channels.contains_key(id),
            "lobby of a live channel {id}"
        );
        for sid in lobby.keys() {
            expected
                .entry(sid.clone())
                .or_default()
                .2
                .insert(id.clone());
        }
    }
    assert_eq!(
        state.waiting_total,
        state.lobbies.values().map(HashMap::len).sum::<usize>(),
        "waiting count"
    );
    let mut by_addr: HashMap<IpAddr, usize> = HashMap::new();
    for (id, channel) in &state.channels {
        // A channel held for its dropped broadcaster is indexed under nobody.
        if let Some(broadcaster) = channel.present_broadcaster() {
            expected
                .entry(broadcaster.clone())
                .or_default()
                .0
                .insert(id.clone());
        }
        for viewer in channel.viewers.keys() {
            expected
                .entry(viewer.clone())
                .or_default()
                .1
                .insert(id.clone());
        }
        if let Some(addr) = channel.owner_addr {
            *by_addr.entry(addr).or_default() += 1;
        }
        assert_eq!(
            state.waits.get(id).copied(),
            channel.next_deadline(),
            "wait index of {id}"
        );
    }
    let actual: HashMap<SocketId, Sets> = state
        .sockets
        .iter()
        .map(|(sid, m)| {
            let sets = (
                m.broadcasting.clone(),
                m.watching.clone(),
                m.waiting.clone(),
            );
            (sid.clone(), sets)
        })
        .collect();
    assert_eq!(actual, expected, "socket index");
    assert_eq!(state.by_addr, by_addr, "address index");
    assert!(state.waits.keys().all(|id| state.channels.contains_key(id)));
}

#[derive(Debug, Clone)]
enum Op {
    Broadcast(u8, u8, bool),
    Watch(u8, u8, bool),
    Relay(u8, u8),
    Ready(u8, u8),
    Failed(u8, u8),
    Stop(u8, u8),
    Disconnect(u8),
    Sweep,
    /// `join_as_broadcaster` presenting the token (resume, or takeover with `force`).
    Resume(u8, u8, bool),
    /// Time passes beyond every grace and wait.
    Expire,
    /// `join_as_viewer {wait: true}` for a channel without a broadcaster.
    Wait(u8, u8),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, f)| Op::Broadcast(s, c, f)),
        4 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, r)| Op::Watch(s, c, r)),
        3 => (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Relay(a, b)),
        3 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Ready(s, c)),
        1 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Failed(s, c)),
        1 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Stop(s, c)),
        2 => (0u8..8).prop_map(Op::Disconnect),
        1 => Just(Op::Sweep),
        2 => (0u8..8, 0u8..3, any::<bool>()).prop_map(|(s, c, f)| Op::Resume(s, c, f)),
        1 => Just(Op::Expire),
        2 => (0u8..8, 0u8..3).prop_map(|(s, c)| Op::Wait(s, c)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Arbitrary sequences of joins (both kinds), relays, tree reports, stops, sweeps and
    /// disconnects keep every index consistent, relays are authorized only between peers
    /// (broadcaster and viewer of one channel, or feeder and child in its tree), and nothing
    /// is left once everybody has disconnected.
    #[test]
    fn registry_invariants_hold_for_any_sequence(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let r = MemoryRegistry::new(RegistryLimits {
            max_channels: 2,
            idle_ttl: Duration::from_secs(3600),
            max_channels_per_socket: 2,
            max_channels_per_addr: 2,
            tree: TreeLimits { direct: 1, fanout: 1, wait: Duration::from_secs(10) },
            resume_grace: Duration::from_secs(30),
            max_waiting_per_channel: 2,
            max_waiting: 3,
            chat_history: 3,
            ban_by_address: false,
        });
        let name = |i: u8| sid(&format!("s{i}"));
        let channel = |i: u8| format!("c{i}");
        let addr = |i: u8| Some(IpAddr::from([10, 0, 0, i % 3]));
        let (mut last, mut followed) = (HashMap::new(), HashMap::new());
        // Even sockets ask for resuming; every token's digest is "t" (the rules compare
        // digests; making them is `secrets`' business).
        let request = |s: u8, force: bool, presented: Option<&'static str>| BroadcastRequest {
            addr: addr(s),
            force,
            relay: true,
            resumable: s.is_multiple_of(2),
            presented,
            fresh: "t",
            password: None,
            key: None,
        };
        for op in ops {
            match op {
                Op::Broadcast(s, c, force) => {
                    let _ = r.join_as_broadcaster(&name(s), Some(&channel(c)), request(s, force, None));
                }
                Op::Resume(s, c, force) => {
                    let before = r.state().channels.get(channel(c).as_str()).map(|ch| (ch.broadcaster.clone(), ch.away_until.is_some()));
                    let result = r.join_as_broadcaster(&name(s), Some(&channel(c)), request(s, force, Some("t")));
                    if let (Some((previous, away)), Ok(started)) = (before, &result) {
                        // A held channel is resumed; a live one only taken over with force.
                        proptest::prop_assert!(away || force || previous == name(s));
                        proptest::prop_assert_eq!(
                            started.replaced.clone(),
                            (!away && previous != name(s)).then_some(previous)
                        );
                    }
                }
                Op::Expire => { r.expire_waits(Moment::now() + Duration::from_secs(3600)); }
                Op::Wait(s, c) => {
                    let exists = r.state().channels.contains_key(channel(c).as_str());
                    let result = r.wait_for(&name(s), &channel(c), s.is_multiple_of(2));
                    if exists {
                        proptest::prop_assert_eq!(result, Ok(false));
                    }
                }
                Op::Watch(s, c, relay) => { let _ = r.watch(&name(s), &channel(c), relay); }
                Op::Relay(a, b) => {
                    let allowed = r.authorize_relay(&name(a), &format!("s{b}"), Activity::Keep).is_ok();
                    let state = r.state();
                    let peers = state.channels.values().any(|ch| {
                        let (a, b) = (name(a), name(b));
                        let present = ch.present_broadcaster();
                        (present == Some(&a) && ch.viewers.contains_key(&b))
                            || (present == Some(&b) && ch.viewers.contains_key(&a))
                            || (ch.viewers.contains_key(&a)
                                && ch.viewers.contains_key(&b)
                                && ch.tree.are_linked(&a, &b))
                    });
                    proptest::prop_assert_eq!(allowed, peers, "relay s{} -> s{}", a, b);
                }
                Op::Ready(s, c) => { let _ = r.tree_op(&name(s), &channel(c), TreeOp::Ready); }
                Op::Failed(s, c) => { let _ = r.tree_op(&name(s), &channel(c), TreeOp::UpstreamFailed { about: None }); }
                Op::Stop(s, c) => { let _ = r.stop_broadcast(&name(s), &channel(c)); }
                Op::Disconnect(s) => { r.disconnect(&name(s)); }
                Op::Sweep => { r.sweep(Moment::now() + Duration::from_secs(7200)); }
            }
            check_indexes(&r);
            follow_peers(&r, &mut last, &mut followed);
        }
        for s in 0..8 {
            r.disconnect(&name(s));
        }
        check_indexes(&r);
        // Held channels go when their grace ends, announced.
        let held = r.state().channels.len();
        let expired = r.expire_waits(Moment::now() + Duration::from_secs(3600));
        proptest::prop_assert_eq!(expired.abandoned.len(), held);
        check_indexes(&r);
        proptest::prop_assert_eq!(
            r.stats(),
            Stats { channels: 0, indexed_sockets: 0, indexed_addresses: 0 }
        );
        proptest::prop_assert!(r.state().waits.is_empty());
        proptest::prop_assert!(r.state().lobbies.is_empty());
    }
}

#[test]
fn only_the_present_broadcaster_writes_as_the_broadcaster() {
    let r = default_registry();
    let (b, v) = (sid("b"), sid("v"));
    r.open_channel(&b, None, Some("talk"), false, true).unwrap();
    r.watch(&v, "talk", false).unwrap();
    let delivery = r.broadcaster_message(&b, "talk", "hi").unwrap();
    assert_eq!(delivery.message.sender_id, "Broadcaster");
    assert!(delivery.message.from_broadcaster);
    assert_eq!(delivery.plain, vec![b.clone(), v.clone()]);
    assert!(!r.chat(&v, "talk", "hi").unwrap().message.from_broadcaster);
    assert_eq!(
        r.broadcaster_message(&v, "talk", "hi"),
        Err(ChannelError::NotTheBroadcaster)
    );
    assert_eq!(
        r.broadcaster_message(&b, "nowhere", "hi"),
        Err(ChannelError::NotFound(None))
    );
    assert_eq!(
        r.chat(&b, "talk", "hi"),
        Err(ChannelError::NotAViewer(ViewerAction::Chat))
    );
}

#[test]
fn a_channel_keeps_its_last_messages_in_order_and_forgets_them_with_it() {
    let r = default_registry(); // keeps 3
    let (b, v) = (sid("b"), sid("v"));
    r.open_channel(&b, None, Some("room"), false, true).unwrap();
    r.watch(&v, "room", false).unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(r.chat(&v, "room", &format!("m{i}")).unwrap().message.id);
    }
    ids.push(
        r.broadcaster_message(&b, "room", "hello")
            .unwrap()
            .message
            .id,
    );
    let history = r.chat_history("room");
    let texts: Vec<&str> = history.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["m2", "m3", "hello"], "the last three, oldest first");
    let kept: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        kept,
        ids[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(history[2].from_broadcaster && !history[1].from_broadcaster);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        5,
        "ids are unique"
    );
    r.disconnect(&b);
    assert!(r.chat_history("room").is_empty(), "gone with the channel");

    let off = MemoryRegistry::new(RegistryLimits {
        chat_history: 0,
        ban_by_address: false,
        ..default_registry().limits().clone()
    });
    off.open_channel(&b, None, Some("room"), false, true)
        .unwrap();
    off.broadcaster_message(&b, "room", "hello").unwrap();
    assert!(off.chat_history("room").is_empty(), "0 keeps nothing");
}

#[test]
fn invitations_admit_while_their_generation_is_the_channels() {
    let r = default_registry();
    let private = BroadcastRequest {
        addr: None,
        force: false,
        relay: true,
        resumable: false,
        presented: None,
        fresh: "",
        password: Some("hash".to_owned()),
        key: None,
    };
    r.join_as_broadcaster(&sid("b"), Some("secret"), private)
        .unwrap();
    r.open_channel(&sid("p"), None, Some("open"), false, true)
        .unwrap();
    let first = r.create_invite(&sid("b"), "secret").unwrap();
    assert_eq!(
        r.create_invite(&sid("b"), "secret"),
        Ok(first),
        "until rotated"
    );
    assert_eq!(
        r.create_invite(&sid("v"), "secret"),
        Err(ChannelError::NotTheBroadcaster)
    );
    assert_eq!(
        r.create_invite(&sid("p"), "open"),
        Err(ChannelError::NotPrivate)
    );
    assert_eq!(
        r.create_invite(&sid("b"), "nope"),
        Err(ChannelError::NotFound(Some(ChannelId::from("nope"))))
    );
    let invited = |generation| ViewerRequest {
        invite: Some(generation),
        ..ViewerRequest::default()
    };
    assert!(
        r.join_as_viewer(&sid("v1"), "secret", invited(first))
            .is_ok()
    );
    assert_eq!(
        r.rotate_invites(&sid("v1"), "secret"),
        Err(ChannelError::NotTheBroadcaster)
    );
    let second = first.wrapping_add(1);
    assert_eq!(r.rotate_invites(&sid("b"), "secret"), Ok(second));
    assert_eq!(
        r.join_as_viewer(&sid("v2"), "secret", invited(first))
            .map(|_| ()),
        Err(ChannelError::InvalidInvite),
        "revoked"
    );
    assert_eq!(
        r.join_as_viewer(&sid("v2"), "secret", ViewerRequest::default())
            .map(|_| ()),
        Err(ChannelError::PasswordRequired)
    );
    assert!(
        r.join_as_viewer(&sid("v2"), "secret", invited(second))
            .is_ok()
    );
    assert_eq!(
        r.state().channels["secret"].viewers.len(),
        2,
        "a viewer admitted before the rotation stays"
    );
    check_indexes(&r);
}

#[test]
fn a_report_about_a_feeder_the_viewer_no_longer_has_changes_nothing() {
    let r = default_registry();
    let (b, v) = (sid("b"), sid("v"));
    r.open_channel(&b, None, Some("hops"), false, true).unwrap();
    let joined = r.watch(&v, "hops", true).unwrap();
    assert!(joined.tree.iter().any(|e| matches!(
        e,
        TreeEvent::Upstream { to, peer, .. } if *to == v && *peer == b
    )));
    let feeder = |r: &MemoryRegistry| r.state().channels["hops"].tree.upstream_of("v").cloned();
    let before = feeder(&r);
    assert!(before.is_some());

    // Naming a feeder it does not have (it was moved since the page decided to report).
    for op in [
        TreeOp::UpstreamFailed {
            about: Some(sid("former")),
        },
        TreeOp::UpstreamStalled {
            about: Some(sid("former")),
        },
    ] {
        assert_eq!(r.tree_op(&v, "hops", op), Ok(Vec::new()));
        assert_eq!(feeder(&r), before);
    }

    // Naming its feeder, or none (an older page): the report moves it.
    let moved = r
        .tree_op(&v, "hops", TreeOp::UpstreamFailed { about: Some(b) })
        .unwrap();
    assert!(!moved.is_empty());
    assert_ne!(feeder(&r), before);
    check_indexes(&r);
}
