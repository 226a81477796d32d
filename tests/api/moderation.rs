//! Moderation by the broadcaster (EXTENSIONS.md "Moderation"), in memory and across cluster
//! nodes: who may moderate, bans across reconnects, mutes, removed messages, slow mode and
//! chat off, and what legacy pages see of it (nothing, unless they are its subject).

use serde_json::{Value, json};

use crate::helpers::{Client, Cluster, spawn_app};

/// A modern page: it asks for a client key (`null`: it has none yet) and for error codes.
/// Returns the client and the key the server gave it.
async fn modern(ws_url: &str) -> (Client, String) {
    let mut client = Client::connect_with_auth(
        ws_url,
        Some(json!({"client_key": null, "error_codes": true})),
    )
    .await;
    let issued = client.expect("client_key").await;
    let key = issued["key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 32, "{issued}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{issued}");
    (client, key)
}

/// A modern page that presents the key it kept: it gets no new one.
async fn returning(ws_url: &str, key: &str) -> Client {
    let mut client = Client::connect_with_auth(
        ws_url,
        Some(json!({"client_key": key, "error_codes": true})),
    )
    .await;
    client.assert_silent().await;
    client
}

async fn join_channel(v: &mut Client, b: &mut Client, channel: &str) {
    v.emit("join_as_viewer", json!({"channel_id": channel}));
    v.expect("broadcaster_available").await;
    b.expect("viewer_count").await;
}

/// The whole rule set over one channel. `b_url` serves the broadcaster, `v_url` the viewers
/// (another node in cluster mode).
async fn moderation_rules(b_url: &str, v_url: &str) -> Vec<Client> {
    let (mut b, _) = modern(b_url).await;
    b.emit("join_as_broadcaster", json!({"channel_id": "mod"}));
    b.expect("broadcaster_ready").await;
    let (mut v, v_key) = modern(v_url).await;
    join_channel(&mut v, &mut b, "mod").await;
    let mut legacy = Client::connect(v_url).await;
    join_channel(&mut legacy, &mut b, "mod").await;

    // Modern pages get message ids; the legacy page exactly the three recorded fields.
    v.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "hello"}),
    );
    let seen_by_b = b.expect("new_message").await;
    let id = seen_by_b["id"]
        .as_str()
        .expect("id for a modern page")
        .to_owned();
    assert_eq!(
        seen_by_b.as_object().map(|o| o.len()),
        Some(4),
        "{seen_by_b}"
    );
    assert_eq!(v.expect("new_message").await["id"], id.as_str());
    let plain = legacy.expect("new_message").await;
    assert_eq!(plain.as_object().map(|o| o.len()), Some(3), "{plain}");

    // Only the broadcaster moderates.
    v.emit(
        "remove_message",
        json!({"channel_id": "mod", "message_id": id}),
    );
    v.expect_coded_error("not_the_broadcaster").await;
    v.emit("list_viewers", json!({"channel_id": "mod"}));
    v.expect_coded_error("not_the_broadcaster").await;
    legacy.emit(
        "remove_viewer",
        json!({"channel_id": "mod", "viewer_id": v.sid}),
    );
    legacy
        .expect_error("You are not the broadcaster of this channel")
        .await;

    // The viewer list: both viewers, by name, nobody muted.
    b.emit("list_viewers", json!({"channel_id": "mod"}));
    let list = b.expect("viewer_list").await;
    let viewers = list["viewers"].as_array().expect("viewers");
    assert_eq!(viewers.len(), 2, "{list}");
    let mut ids: Vec<&str> = viewers.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![v.sid.as_str(), legacy.sid.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        viewers
            .iter()
            .all(|e| e["muted"] == false && e["name"].as_str().unwrap().starts_with("Viewer-"))
    );

    // A removed message: modern pages are told, the legacy page is not.
    b.emit(
        "remove_message",
        json!({"channel_id": "mod", "message_id": id}),
    );
    for client in [&mut b, &mut v] {
        let removed = client.expect("message_removed").await;
        assert_eq!(removed, json!({"channel_id": "mod", "message_id": id}));
    }

    // Mute: refused with its code; the list shows it; unmute lets it talk again.
    b.emit(
        "mute_viewer",
        json!({"channel_id": "mod", "viewer_id": v.sid, "muted": true}),
    );
    let muted = b.expect("viewer_muted").await;
    assert_eq!(
        muted,
        json!({"channel_id": "mod", "viewer_id": v.sid, "muted": true})
    );
    v.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "let me talk"}),
    );
    assert_eq!(
        v.expect_coded_error("muted").await,
        "You are muted in this channel"
    );
    b.emit("list_viewers", json!({"channel_id": "mod"}));
    let list = b.expect("viewer_list").await;
    let entry = list["viewers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == v.sid.as_str())
        .cloned()
        .expect("the muted viewer is listed");
    assert_eq!(entry["muted"], true, "{list}");
    b.emit(
        "mute_viewer",
        json!({"channel_id": "mod", "viewer_id": v.sid, "muted": false}),
    );
    b.expect("viewer_muted").await;

    // Slow mode: the first message goes, the next is refused with the wait.
    b.emit(
        "chat_settings",
        json!({"channel_id": "mod", "slow_mode": 30}),
    );
    for client in [&mut b, &mut v] {
        let settings = client.expect("chat_settings").await;
        assert_eq!(
            settings,
            json!({"channel_id": "mod", "slow_mode": 30, "chat_enabled": true})
        );
    }
    legacy.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "one"}),
    );
    for client in [&mut b, &mut v, &mut legacy] {
        client.expect("new_message").await;
    }
    legacy.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "two"}),
    );
    let wait = legacy.expect_error_prefix("Slow mode: wait ").await;
    assert!(wait.ends_with(" s before your next message"), "{wait}");
    // The broadcaster is never slowed.
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "mod", "message": "a"}),
    );
    b.emit(
        "broadcaster_message",
        json!({"channel_id": "mod", "message": "b"}),
    );
    for client in [&mut b, &mut v, &mut legacy] {
        client.expect("new_message").await;
        client.expect("new_message").await;
    }
    // Chat off (slow mode kept): every viewer message is refused.
    b.emit(
        "chat_settings",
        json!({"channel_id": "mod", "chat_enabled": false}),
    );
    for client in [&mut b, &mut v] {
        let settings = client.expect("chat_settings").await;
        assert_eq!(settings["slow_mode"], 30);
        assert_eq!(settings["chat_enabled"], false);
    }
    v.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "anyone?"}),
    );
    v.expect_coded_error("chat_off").await;
    // A modern viewer joining now is told the settings.
    let (mut late, _) = modern(v_url).await;
    join_channel(&mut late, &mut b, "mod").await;
    let settings = late.expect("chat_settings").await;
    assert_eq!(settings["chat_enabled"], false, "{settings}");
    b.emit(
        "chat_settings",
        json!({"channel_id": "mod", "slow_mode": 0, "chat_enabled": true}),
    );
    for client in [&mut b, &mut v, &mut late] {
        client.expect("chat_settings").await;
    }

    // A ban: the viewer is told, the broadcaster gets its answer and the new count.
    b.emit(
        "remove_viewer",
        json!({"channel_id": "mod", "viewer_id": v.sid, "ban": true}),
    );
    let removed = b.expect("viewer_removed").await;
    assert_eq!(
        removed,
        json!({"channel_id": "mod", "viewer_id": v.sid, "banned": true})
    );
    assert_eq!(b.expect("viewer_count").await["count"], 2);
    assert_eq!(
        v.expect_coded_error("banned").await,
        "You are banned from this channel"
    );
    // It is no viewer any more.
    v.emit(
        "send_message",
        json!({"channel_id": "mod", "message": "still here?"}),
    );
    v.expect_coded_error("not_a_viewer").await;
    // The same connection, and a new one with the same key, cannot come back.
    v.emit("join_as_viewer", json!({"channel_id": "mod"}));
    v.expect_coded_error("banned").await;
    let mut again = returning(v_url, &v_key).await;
    again.emit("join_as_viewer", json!({"channel_id": "mod"}));
    again.expect_coded_error("banned").await;
    // A plain removal of the legacy viewer: it is told in words, and may join again.
    b.emit(
        "remove_viewer",
        json!({"channel_id": "mod", "viewer_id": legacy.sid}),
    );
    assert_eq!(b.expect("viewer_removed").await["banned"], false);
    b.expect("viewer_count").await;
    legacy
        .expect_error("You were removed from this channel by its broadcaster")
        .await;
    join_channel(&mut legacy, &mut b, "mod").await;

    // Naming somebody who does not watch, or nonsense.
    b.emit(
        "remove_viewer",
        json!({"channel_id": "mod", "viewer_id": v.sid}),
    );
    b.expect_coded_error("viewer_not_found").await;
    b.emit(
        "mute_viewer",
        json!({"channel_id": "mod", "viewer_id": b.sid, "muted": true}),
    );
    b.expect_coded_error("viewer_not_found").await;
    b.emit("remove_viewer", json!({"channel_id": "mod"}));
    assert_eq!(
        b.expect_coded_error("invalid_payload").await,
        "Invalid data: viewer_id is required"
    );
    b.emit(
        "remove_viewer",
        json!({"channel_id": "mod", "viewer_id": "<b>".repeat(30)}),
    );
    b.expect_coded_error("invalid_payload").await;
    b.emit(
        "chat_settings",
        json!({"channel_id": "mod", "slow_mode": 99999}),
    );
    assert_eq!(
        b.expect_coded_error("invalid_payload").await,
        "Invalid data: slow_mode must be 0 to 3600 seconds"
    );
    b.emit(
        "mute_viewer",
        json!({"channel_id": "mod", "viewer_id": legacy.sid}),
    );
    b.expect_coded_error("invalid_payload").await;
    b.emit(
        "remove_message",
        json!({"channel_id": "gone", "message_id": "abc"}),
    );
    b.expect_coded_error("channel_not_found").await;

    // Unbanned: the same key joins again.
    b.emit("unban_all", json!({"channel_id": "mod"}));
    assert_eq!(b.expect("bans_cleared").await, json!({"channel_id": "mod"}));
    join_channel(&mut again, &mut b, "mod").await;
    for client in [&mut b, &mut v, &mut legacy, &mut late, &mut again] {
        client.assert_silent().await;
    }
    vec![b, v, legacy, late, again]
}

#[tokio::test]
async fn the_broadcaster_moderates_in_memory() {
    let app = spawn_app(&[]).await;
    moderation_rules(&app.ws_url(), &app.ws_url()).await;
}

#[tokio::test]
async fn the_broadcaster_moderates_across_nodes() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, n) = (&cluster.nodes[0], &cluster.nodes[1]);
    let clients = moderation_rules(&a.ws_url(), &n.ws_url()).await;
    cluster.teardown(clients).await;
}

/// The next `event` for a broadcaster, past its bookkeeping (`viewer_count`, `relay_tree`).
async fn until(b: &mut Client, event: &str) -> Value {
    loop {
        let (name, mut args) = b.next().await;
        if name == event {
            return args.remove(0);
        }
        assert!(
            name == "viewer_count" || name == "relay_tree",
            "expected {event}, got {name} {args:?}"
        );
    }
}

/// A viewer of the relay tree that is ready to relay, with its first feeder's id.
async fn ready_tree_viewer(ws_url: &str) -> (Client, Value) {
    let mut v = Client::connect(ws_url).await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "tree", "relay": true}),
    );
    v.expect("broadcaster_available").await;
    let feeder = v.expect_upstream().await["peer_id"].clone();
    v.emit("relay_ready", json!({"channel_id": "tree"}));
    // Handled once the next event is answered (a socket's events are handled in order).
    v.emit("join_as_viewer", json!({}));
    v.expect("channel_list").await;
    (v, feeder)
}

/// A removed relay's children get new feeders, as when a relay leaves.
#[tokio::test]
async fn a_removed_relay_loses_its_children_to_other_feeders() {
    let app = spawn_app(&["--relay-direct", "1", "--relay-fanout", "2"]).await;
    let (mut b, _) = modern(&app.ws_url()).await;
    b.emit("join_as_broadcaster", json!({"channel_id": "tree"}));
    b.expect("broadcaster_ready").await;
    let (mut relay, feeder) = ready_tree_viewer(&app.ws_url()).await;
    assert_eq!(feeder, b.sid.as_str());
    let (mut c, feeder_c) = ready_tree_viewer(&app.ws_url()).await;
    let (mut d, feeder_d) = ready_tree_viewer(&app.ws_url()).await;
    assert_eq!(feeder_c, relay.sid.as_str());
    assert_eq!(feeder_d, relay.sid.as_str());
    b.emit(
        "remove_viewer",
        json!({"channel_id": "tree", "viewer_id": relay.sid, "ban": true}),
    );
    until(&mut b, "viewer_removed").await;
    // A page without a client key is told in words only.
    relay.expect_error("You are banned from this channel").await;
    // One child takes the relay's place, and feeds the other.
    let (up_c, up_d) = (c.expect_upstream().await, d.expect_upstream().await);
    let feeders = [up_c["peer_id"].clone(), up_d["peer_id"].clone()];
    assert!(feeders.contains(&json!(b.sid)), "{feeders:?}");
    assert!(!feeders.contains(&json!(relay.sid)), "{feeders:?}");
    relay.assert_silent().await;
}

/// With `--ban-by-address` a ban also holds the address: every client from it is refused
/// (all of these connect from loopback); without it a new keyless client is admitted.
#[tokio::test]
async fn a_ban_holds_the_address_only_when_the_operator_allows_it() {
    for by_address in [false, true] {
        let app = if by_address {
            spawn_app(&["--ban-by-address"]).await
        } else {
            spawn_app(&[]).await
        };
        let mut b = app.client().await;
        b.emit("join_as_broadcaster", json!({"channel_id": "addr"}));
        b.expect("broadcaster_ready").await;
        let mut v = app.client().await;
        join_channel(&mut v, &mut b, "addr").await;
        b.emit(
            "remove_viewer",
            json!({"channel_id": "addr", "viewer_id": v.sid, "ban": true}),
        );
        b.expect("viewer_removed").await;
        b.expect("viewer_count").await;
        v.expect_error("You are banned from this channel").await;
        let mut fresh = app.client().await;
        fresh.emit("join_as_viewer", json!({"channel_id": "addr"}));
        if by_address {
            fresh.expect_error("You are banned from this channel").await;
        } else {
            fresh.expect("broadcaster_available").await;
        }
    }
}

/// A modern broadcaster going live again is told the channel's chat settings, which it kept.
#[tokio::test]
async fn a_broadcaster_going_live_again_is_told_the_chat_settings() {
    let app = spawn_app(&[]).await;
    let (mut b, _) = modern(&app.ws_url()).await;
    b.emit("join_as_broadcaster", json!({"channel_id": "again"}));
    b.expect("broadcaster_ready").await;
    b.emit(
        "chat_settings",
        json!({"channel_id": "again", "slow_mode": 10}),
    );
    b.expect("chat_settings").await;
    b.emit("stop_broadcast", json!({"channel_id": "again"}));
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "again", "force": true}),
    );
    b.expect("broadcaster_ready").await;
    let settings = b.expect("chat_settings").await;
    assert_eq!(
        settings,
        json!({"channel_id": "again", "slow_mode": 10, "chat_enabled": true})
    );
    b.assert_silent().await;
}
