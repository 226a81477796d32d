//! The moderation rules on the in-memory registry (the cluster runs the same rules on the
//! same `State`): who may moderate, what a ban and a mute hold on to, and a property test that
//! a ban holds through any sequence of joins, leaves and reconnects.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::{ChatSettingsChange, ClientIdentity};
use crate::registry::errors::ChannelError;
use crate::registry::ids::SocketId;
use crate::registry::membership::ViewerRequest;
use crate::registry::memory::MemoryRegistry;
use crate::registry::model::RegistryLimits;
use crate::registry::tree::TreeLimits;

fn registry(ban_by_address: bool) -> MemoryRegistry {
    MemoryRegistry::new(RegistryLimits {
        max_channels: 100,
        idle_ttl: Duration::from_secs(3600),
        max_channels_per_socket: 100,
        max_channels_per_addr: 100,
        tree: TreeLimits {
            direct: 4,
            fanout: 2,
            wait: Duration::from_secs(10),
        },
        resume_grace: Duration::ZERO,
        max_waiting_per_channel: 10,
        max_waiting: 100,
        chat_history: 5,
        ban_by_address,
    })
}

fn sid(s: &str) -> SocketId {
    SocketId::from(s)
}

fn join(
    r: &MemoryRegistry,
    viewer: &str,
    key: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<(), ChannelError> {
    let request = ViewerRequest {
        client: ClientIdentity {
            key,
            addr,
            codes: key.is_some(),
        },
        ..ViewerRequest::default()
    };
    r.join_as_viewer(&sid(viewer), "room", request).map(|_| ())
}

fn live(r: &MemoryRegistry) {
    r.open_channel(&sid("b"), None, Some("room"), false, true)
        .unwrap();
}

#[test]
fn only_the_present_broadcaster_moderates() {
    let r = registry(false);
    live(&r);
    join(&r, "v", Some("kv"), None).unwrap();
    join(&r, "w", None, None).unwrap();
    for caller in ["v", "w", "stranger"] {
        let caller = sid(caller);
        assert_eq!(
            r.remove_viewer(&caller, "room", &sid("w"), true),
            Err(ChannelError::NotTheBroadcaster)
        );
        assert_eq!(
            r.mute_viewer(&caller, "room", &sid("w"), true),
            Err(ChannelError::NotTheBroadcaster)
        );
        assert_eq!(
            r.list_viewers(&caller, "room"),
            Err(ChannelError::NotTheBroadcaster)
        );
    }
    assert_eq!(
        r.remove_viewer(&sid("b"), "elsewhere", &sid("w"), false),
        Err(ChannelError::NotFound(None))
    );
    assert_eq!(
        r.remove_viewer(&sid("b"), "room", &sid("b"), false),
        Err(ChannelError::ViewerNotFound)
    );
}

/// The registry bans what it was told of the viewer: the handler gives it the address only
/// under `--ban-by-address`.
#[test]
fn a_ban_holds_the_key_the_connection_and_an_address_it_was_given() {
    let addr: IpAddr = "192.0.2.7".parse().unwrap();
    for by_address in [false, true] {
        let r = registry(by_address);
        live(&r);
        let given = by_address.then_some(addr);
        join(&r, "v", Some("kv"), given).unwrap();
        let removal = r.remove_viewer(&sid("b"), "room", &sid("v"), true).unwrap();
        assert!(removal.banned);
        assert_eq!(removal.removed.len(), 1);
        assert_eq!(removal.left[0].viewer_count, 0);
        assert_eq!(join(&r, "v", None, None), Err(ChannelError::Banned));
        assert_eq!(join(&r, "v2", Some("kv"), None), Err(ChannelError::Banned));
        // Another key behind the same address: refused only where the address was banned.
        let same_address = join(&r, "v3", Some("other"), given);
        assert_eq!(same_address.is_err(), by_address, "by_address {by_address}");
        r.unban_all(&sid("b"), "room").unwrap();
        join(&r, "v2", Some("kv"), None).unwrap();
    }
}

#[test]
fn a_removal_without_a_ban_lets_the_viewer_back() {
    let r = registry(false);
    live(&r);
    join(&r, "v", None, None).unwrap();
    let removal = r
        .remove_viewer(&sid("b"), "room", &sid("v"), false)
        .unwrap();
    assert!(!removal.banned && !removal.removed[0].codes);
    assert_eq!(
        r.chat(&sid("v"), "room", "hi"),
        Err(ChannelError::NotAViewer(
            crate::registry::errors::ViewerAction::Chat
        ))
    );
    join(&r, "v", None, None).unwrap();
}

/// A ban takes every connection of the banned client out of the channel at once (tabs of one
/// browser share its key), and none of them may chat meanwhile.
#[test]
fn a_ban_takes_every_connection_of_the_client_out() {
    let r = registry(false);
    live(&r);
    join(&r, "tab1", Some("kv"), None).unwrap();
    join(&r, "tab2", Some("kv"), None).unwrap();
    join(&r, "other", Some("ko"), None).unwrap();
    let removal = r
        .remove_viewer(&sid("b"), "room", &sid("tab1"), true)
        .unwrap();
    let mut gone: Vec<String> = removal
        .removed
        .iter()
        .map(|g| g.viewer.to_string())
        .collect();
    gone.sort();
    assert_eq!(gone, ["tab1", "tab2"]);
    assert!(removal.removed.iter().all(|g| g.codes));
    assert_eq!(removal.left.last().map(|l| l.viewer_count), Some(1));
    assert!(r.chat(&sid("other"), "room", "still here").is_ok());
}

/// The broadcaster may ban its own test tab (same key) and still watch its own channel.
#[test]
fn the_broadcaster_is_never_banned_from_its_own_channel() {
    let r = registry(false);
    r.join_as_broadcaster(
        &sid("b"),
        Some("room"),
        crate::registry::broadcaster::BroadcastRequest {
            addr: None,
            force: false,
            relay: true,
            resumable: false,
            presented: None,
            fresh: "",
            password: None,
            key: Some("kb"),
        },
    )
    .unwrap();
    join(&r, "test-tab", Some("kb"), None).unwrap();
    r.remove_viewer(&sid("b"), "room", &sid("test-tab"), true)
        .unwrap();
    assert_eq!(
        join(&r, "tab-2", Some("kb"), None),
        Err(ChannelError::Banned)
    );
    join(&r, "b", Some("kb"), None).unwrap();
}

/// Bans and mutes are bounded per channel; marks of connections make room first.
#[test]
fn bans_are_bounded_and_connection_marks_go_first() {
    let r = registry(false);
    live(&r);
    for i in 0..super::MAX_MARKS {
        let v = format!("v{i}");
        join(&r, &v, None, None).unwrap();
        r.remove_viewer(&sid("b"), "room", &sid(&v), true).unwrap();
    }
    // Full of connection marks: a keyed ban still fits (they are dropped).
    join(&r, "keyed", Some("k"), None).unwrap();
    r.remove_viewer(&sid("b"), "room", &sid("keyed"), true)
        .unwrap();
    assert_eq!(
        join(&r, "again", Some("k"), None),
        Err(ChannelError::Banned)
    );
    for i in 0..super::MAX_MARKS {
        let v = format!("w{i}");
        let key = format!("key{i}");
        join(&r, &v, Some(&key), None).unwrap();
        let banned = r.remove_viewer(&sid("b"), "room", &sid(&v), true);
        if banned.is_err() {
            assert_eq!(banned, Err(ChannelError::TooManyMarks(super::MAX_MARKS)));
            // Refused: the viewer stays.
            assert!(r.chat(&sid(&v), "room", "hi").is_ok());
            return;
        }
    }
    panic!("bans never reached their bound");
}

#[test]
fn a_mute_holds_the_key_across_connections_and_a_keyless_viewer_by_its_connection() {
    let r = registry(false);
    live(&r);
    join(&r, "v", Some("kv"), None).unwrap();
    join(&r, "w", None, None).unwrap();
    r.mute_viewer(&sid("b"), "room", &sid("v"), true).unwrap();
    r.mute_viewer(&sid("b"), "room", &sid("w"), true).unwrap();
    assert_eq!(r.chat(&sid("v"), "room", "x"), Err(ChannelError::Muted));
    assert_eq!(r.chat(&sid("w"), "room", "x"), Err(ChannelError::Muted));
    let listed = r.list_viewers(&sid("b"), "room").unwrap();
    assert!(listed.iter().all(|e| e.muted), "{listed:?}");
    // The same key on a new connection is still muted; a new keyless connection is not.
    join(&r, "v-again", Some("kv"), None).unwrap();
    join(&r, "w-again", None, None).unwrap();
    assert_eq!(
        r.chat(&sid("v-again"), "room", "x"),
        Err(ChannelError::Muted)
    );
    assert!(r.chat(&sid("w-again"), "room", "x").is_ok());
    r.mute_viewer(&sid("b"), "room", &sid("v-again"), false)
        .unwrap();
    assert!(r.chat(&sid("v"), "room", "x").is_ok());
}

#[test]
fn slow_mode_and_chat_off_hold_viewers_but_never_the_broadcaster() {
    let r = registry(false);
    live(&r);
    join(&r, "v", Some("kv"), None).unwrap();
    let slow = ChatSettingsChange {
        slow_mode: Some(60),
        chat_enabled: None,
    };
    let (settings, told) = r.set_chat_settings(&sid("b"), "room", slow).unwrap();
    assert_eq!((settings.slow_mode, settings.chat_enabled), (60, true));
    assert_eq!(
        told,
        vec![sid("b"), sid("v")],
        "the broadcaster, and modern pages"
    );
    r.chat(&sid("v"), "room", "first").unwrap();
    match r.chat(&sid("v"), "room", "second") {
        Err(ChannelError::SlowMode(wait)) => assert!((59..=60).contains(&wait), "{wait}"),
        other => panic!("{other:?}"),
    }
    let off = ChatSettingsChange {
        slow_mode: None,
        chat_enabled: Some(false),
    };
    let (settings, _) = r.set_chat_settings(&sid("b"), "room", off).unwrap();
    assert_eq!((settings.slow_mode, settings.chat_enabled), (60, false));
    assert_eq!(r.chat(&sid("v"), "room", "x"), Err(ChannelError::ChatOff));
    assert!(r.broadcaster_message(&sid("b"), "room", "1").is_ok());
    assert!(r.broadcaster_message(&sid("b"), "room", "2").is_ok());
    // A joining viewer learns the settings; they go with the channel.
    let joined = r
        .join_as_viewer(&sid("late"), "room", ViewerRequest::default())
        .unwrap();
    assert_eq!(joined.chat_settings, Some(settings));
}

#[test]
fn a_removed_message_leaves_the_history_and_modern_members_are_told() {
    let r = registry(false);
    r.join_as_broadcaster(
        &sid("b"),
        Some("room"),
        crate::registry::broadcaster::BroadcastRequest {
            addr: None,
            force: false,
            relay: true,
            resumable: false,
            presented: None,
            fresh: "",
            password: None,
            key: Some("kb"),
        },
    )
    .unwrap();
    join(&r, "v", Some("kv"), None).unwrap();
    join(&r, "legacy", None, None).unwrap();
    let kept = r.chat(&sid("legacy"), "room", "keep me").unwrap();
    let gone = r.chat(&sid("v"), "room", "remove me").unwrap();
    assert_eq!(gone.with_ids, vec![sid("b"), sid("v")]);
    assert_eq!(gone.plain, vec![sid("legacy")]);
    let told = r
        .remove_message(&sid("b"), "room", &gone.message.id)
        .unwrap();
    assert_eq!(told, vec![sid("b"), sid("v")]);
    let history: Vec<String> = r.chat_history("room").into_iter().map(|m| m.id).collect();
    assert_eq!(history, vec![kept.message.id]);
}

/// One step of a moderated channel's life, over three clients (keys 0..3) that connect under
/// ever new socket ids, several at once (tabs).
#[derive(Debug, Clone)]
enum Step {
    /// Client `k` joins on a new connection.
    Join(usize),
    /// Client `k`'s latest connection leaves.
    Leave(usize),
    /// The broadcaster bans client `k` by its latest connection (if one watches).
    Ban(usize),
    UnbanAll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize).prop_map(Step::Join),
        (0..3usize).prop_map(Step::Leave),
        (0..3usize).prop_map(Step::Ban),
        Just(Step::UnbanAll),
    ]
}

proptest! {
    /// Whatever happens, a client whose key was banned (and not unbanned since) is refused and
    /// none of its connections stays, every other client is admitted, and the viewer list is
    /// exactly who watches.
    #[test]
    fn a_ban_holds_through_any_sequence(steps in prop::collection::vec(step(), 1..40)) {
        let r = registry(false);
        live(&r);
        let keys = ["k0", "k1", "k2"];
        let mut banned: HashSet<usize> = HashSet::new();
        // Each client's connections that watch, oldest first.
        let mut connections: [Vec<String>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::Join(k) => {
                    let conn = format!("c{n}-{k}");
                    let joined = join(&r, &conn, Some(keys[k]), None);
                    prop_assert_eq!(joined.is_err(), banned.contains(&k));
                    if joined.is_ok() {
                        connections[k].push(conn);
                    }
                }
                Step::Leave(k) => {
                    if let Some(conn) = connections[k].pop() {
                        r.disconnect(&sid(&conn));
                    }
                }
                Step::Ban(k) => {
                    if let Some(conn) = connections[k].last().cloned() {
                        let removal = r.remove_viewer(&sid("b"), "room", &sid(&conn), true).unwrap();
                        prop_assert_eq!(removal.removed.len(), connections[k].len());
                        connections[k].clear();
                        banned.insert(k);
                    }
                }
                Step::UnbanAll => {
                    r.unban_all(&sid("b"), "room").unwrap();
                    banned.clear();
                }
            }
            let listed: HashSet<String> = r
                .list_viewers(&sid("b"), "room")
                .unwrap()
                .into_iter()
                .map(|e| e.id.to_string())
                .collect();
            let watching: HashSet<String> = connections.iter().flatten().cloned().collect();
            prop_assert_eq!(&listed, &watching);
        }
    }
}
