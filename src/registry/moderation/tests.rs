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
        client: ClientIdentity { key, addr },
        ..ViewerRequest::default()
    };
    r.join_verified(&sid(viewer), "room", request).map(|_| ())
}

fn live(r: &MemoryRegistry) {
    r.join_as_broadcaster(&sid("b"), None, Some("room"), false, true)
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
        assert!(removal.banned && removal.modern);
        assert_eq!(removal.left.viewer_count, 0);
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
    assert!(!removal.banned && !removal.modern);
    assert_eq!(
        r.chat(&sid("v"), "room", "hi"),
        Err(ChannelError::NotAViewer(
            crate::registry::errors::ViewerAction::Chat
        ))
    );
    join(&r, "v", None, None).unwrap();
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
    assert_eq!(told, vec![sid("v")], "the keyless broadcaster reads no ids");
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
        .join_verified(&sid("late"), "room", ViewerRequest::default())
        .unwrap();
    assert_eq!(joined.chat_settings, Some(settings));
}

#[test]
fn a_removed_message_leaves_the_history_and_modern_members_are_told() {
    let r = registry(false);
    r.start_broadcast(
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
    assert_eq!(gone.recipients.len(), 3);
    let told = r
        .remove_message(&sid("b"), "room", &gone.message.id)
        .unwrap();
    assert_eq!(told, vec![sid("b"), sid("v")]);
    let history: Vec<String> = r.chat_history("room").into_iter().map(|m| m.id).collect();
    assert_eq!(history, vec![kept.message.id]);
}

/// One step of a moderated channel's life, over three clients (keys 0..3) that connect under
/// ever new socket ids.
#[derive(Debug, Clone)]
enum Step {
    /// Client `k` joins on a new connection.
    Join(usize),
    /// Client `k`'s latest connection leaves.
    Leave(usize),
    /// The broadcaster bans client `k`'s latest connection (if it watches).
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
    /// Whatever happens, a client whose key was banned (and not unbanned since) is refused,
    /// every other client is admitted, and the viewer list is exactly who watches.
    #[test]
    fn a_ban_holds_through_any_sequence(steps in prop::collection::vec(step(), 1..40)) {
        let r = registry(false);
        live(&r);
        let keys = ["k0", "k1", "k2"];
        let mut banned: HashSet<usize> = HashSet::new();
        let mut latest: [Option<String>; 3] = [None, None, None];
        let mut watching: HashSet<String> = HashSet::new();
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::Join(k) => {
                    let conn = format!("c{n}-{k}");
                    let joined = join(&r, &conn, Some(keys[k]), None);
                    prop_assert_eq!(joined.is_err(), banned.contains(&k));
                    if joined.is_ok() {
                        watching.insert(conn.clone());
                        latest[k] = Some(conn);
                    }
                }
                Step::Leave(k) => {
                    if let Some(conn) = latest[k].take() {
                        r.disconnect(&sid(&conn));
                        watching.remove(&conn);
                    }
                }
                Step::Ban(k) => {
                    if let Some(conn) = latest[k].take() {
                        r.remove_viewer(&sid("b"), "room", &sid(&conn), true).unwrap();
                        watching.remove(&conn);
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
            prop_assert_eq!(&listed, &watching);
        }
    }
}
