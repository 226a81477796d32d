//! EXTENSIONS.md "Resume and takeover" and "Private channels" over real sockets: a broadcaster
//! whose connection drops keeps its channel for a grace period and resumes it with its token
//! from a new socket, another device takes over with the token, and a private channel is left
//! out of the list and admits only viewers that give its password.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Client, LoggedServer, QUIET, TestApp, sample_candidate, sample_sdp, spawn_app,
};

const WRONG_PASSWORD: &str = "Invalid data: password is missing or wrong for this channel";
const TOO_MANY: &str = "Invalid data: too many requests";

fn taken(channel: &str) -> String {
    format!("Channel {channel} already has a broadcaster")
}

/// The `resume_token` of a resumable channel's `broadcaster_ready`, checked for its shape:
/// `{id, channel_id, resume_token}` with 32 hex characters.
fn token_of(ready: &Value, sid: &str, channel: &str) -> String {
    assert_eq!(ready["id"], sid, "{ready}");
    assert_eq!(ready["channel_id"], channel, "{ready}");
    assert_eq!(ready.as_object().map(|o| o.len()), Some(3), "{ready}");
    let token = ready["resume_token"]
        .as_str()
        .unwrap_or_else(|| panic!("resume_token is a string: {ready}"))
        .to_owned();
    assert_eq!(token.len(), 32, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    token
}

/// A broadcaster of `channel` that asked for resuming, and its token.
async fn resumable(app: &TestApp, channel: &str) -> (Client, String) {
    let mut b = app.client().await;
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": channel, "resume": true}),
    );
    let ready = b.expect("broadcaster_ready").await;
    let token = token_of(&ready, &b.sid, channel);
    (b, token)
}

/// A legacy viewer that joined `channel`; the broadcaster's `viewer_count` is consumed.
async fn viewer(app: &TestApp, channel: &str, broadcaster: &mut Client) -> Client {
    let mut v = app.client().await;
    v.emit("join_as_viewer", json!({ "channel_id": channel }));
    assert_eq!(
        v.expect("broadcaster_available").await,
        json!({"broadcaster_id": broadcaster.sid, "channel_id": channel})
    );
    broadcaster.expect("viewer_count").await;
    v
}

/// The ids of `channel_list`, asked by `asker`.
async fn listed(asker: &mut Client) -> Vec<String> {
    asker.emit("join_as_viewer", json!({}));
    let list = asker.expect("channel_list").await;
    list["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .map(|c| c["id"].as_str().expect("channel id").to_owned())
        .collect()
}

/// The broadcaster of `channel` as `channel_list` shows it.
async fn listed_broadcaster(asker: &mut Client, channel: &str) -> Value {
    asker.emit("join_as_viewer", json!({}));
    let list = asker.expect("channel_list").await;
    list["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .find(|c| c["id"] == channel)
        .unwrap_or_else(|| panic!("{channel} is listed: {list}"))["broadcaster_sid"]
        .clone()
}

async fn expect_disconnected(client: &mut Client) {
    let (name, args) = client.next().await;
    assert_eq!(name, "broadcaster_disconnected", "{args:?}");
    assert!(args.is_empty() || args == vec![Value::Null], "{args:?}");
}

/// `from` relays an offer, an answer and a candidate to `to`, which receives each as sent.
async fn relays_reach(from: &Client, to: &mut Client) {
    from.emit(
        "offer",
        json!({"target": to.sid, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        to.expect("offer").await,
        json!({"sdp": sample_sdp("offer"), "sender": from.sid})
    );
    from.emit(
        "answer",
        json!({"target": to.sid, "sdp": sample_sdp("answer")}),
    );
    assert_eq!(
        to.expect("answer").await,
        json!({"sdp": sample_sdp("answer"), "sender": from.sid})
    );
    from.emit(
        "ice_candidate",
        json!({"target": to.sid, "candidate": sample_candidate()}),
    );
    assert_eq!(
        to.expect("ice_candidate").await,
        json!({"candidate": sample_candidate(), "sender": from.sid})
    );
}

/// Every relay from `from` to `target` is refused with `relay_error`.
async fn relays_refused(from: &mut Client, target: &str) {
    from.emit(
        "offer",
        json!({"target": target, "sdp": sample_sdp("offer")}),
    );
    assert_eq!(
        from.expect_relay_error("offer").await,
        "Target is not a peer of yours in any channel"
    );
    from.emit(
        "answer",
        json!({"target": target, "sdp": sample_sdp("answer")}),
    );
    from.expect_relay_error("answer").await;
    from.emit(
        "ice_candidate",
        json!({"target": target, "candidate": sample_candidate()}),
    );
    from.expect_relay_error("ice_candidate").await;
}

/// Another token of the right shape, which the server never gave.
fn made_up_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// How long an answer that waits for an argon2 hash or check may take: slow on purpose, and
/// slower still in a debug build with other tests running.
const HASHING: Duration = Duration::from_secs(30);

/// The next event of `client`, which must be `event`, after a password was hashed or checked.
async fn after_hashing(client: &mut Client, event: &str) -> Value {
    let (name, mut args) = tokio::time::timeout(HASHING, client.next_event())
        .await
        .unwrap_or_else(|_| panic!("{event} within {HASHING:?}"))
        .expect("connection open");
    assert_eq!(name, event, "expected {event}, got {name} {args:?}");
    assert_eq!(args.len(), 1, "{event} carries exactly one argument");
    args.remove(0)
}

// ---- tokens ----

#[tokio::test]
async fn only_a_resumable_broadcaster_gets_a_token() {
    let app = spawn_app(&[]).await;
    // Legacy payloads (and an explicit `resume: false`) see exactly the earlier answer.
    for (channel, payload) in [
        ("plain", json!({"channel_id": "plain"})),
        (
            "flagless",
            json!({"channel_id": "flagless", "resume": false}),
        ),
    ] {
        let mut b = app.client().await;
        b.emit("join_as_broadcaster", payload);
        assert_eq!(
            b.expect("broadcaster_ready").await,
            json!({"id": b.sid, "channel_id": channel})
        );
        b.assert_silent().await;
    }
    let (mut b, _) = resumable(&app, "kept").await;
    b.assert_silent().await;
    // A generated channel id works the same way.
    let mut g = app.client().await;
    g.emit("join_as_broadcaster", json!({"resume": true}));
    let ready = g.expect("broadcaster_ready").await;
    let channel = ready["channel_id"].as_str().expect("channel_id").to_owned();
    assert_eq!(channel.len(), 8, "{ready}");
    token_of(&ready, &g.sid, &channel);
}

#[tokio::test]
async fn every_broadcaster_ready_of_a_resumable_channel_carries_a_fresh_token() {
    let app = spawn_app(&[]).await;
    let (mut b, first) = resumable(&app, "fresh").await;
    // Going live again, asking for resuming again: a new token; the previous one is spent.
    b.emit("stop_broadcast", json!({"channel_id": "fresh"}));
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "fresh", "force": true, "resume": true}),
    );
    let second = token_of(&b.expect("broadcaster_ready").await, &b.sid, "fresh");
    assert_ne!(second, first);
    let mut other = app.client().await;
    other.emit(
        "join_as_broadcaster",
        json!({"channel_id": "fresh", "force": true, "resume_token": first}),
    );
    other.expect_error(&taken("fresh")).await;
    b.assert_silent().await;
    // The current one takes over, and the ready it brings has a token of its own.
    other.emit(
        "join_as_broadcaster",
        json!({"channel_id": "fresh", "force": true, "resume_token": second}),
    );
    let third = token_of(
        &other.expect("broadcaster_ready").await,
        &other.sid,
        "fresh",
    );
    assert_ne!(third, first);
    assert_ne!(third, second);
    assert_eq!(
        b.expect("broadcaster_replaced").await,
        json!({"channel_id": "fresh"})
    );
    // Tokens of different channels differ too.
    let mut tokens = vec![first, second, third];
    for i in 0..5 {
        let (_, token) = resumable(&app, &format!("many{i}")).await;
        assert!(!tokens.contains(&token), "{token} given twice");
        tokens.push(token);
    }
}

/// The channel stays resumable, so going live again (a legacy-style `{channel_id, force}`)
/// must hand out the token that replaces the spent one: otherwise nobody holds a valid token
/// and the next dropped connection loses the channel.
#[tokio::test]
async fn going_live_again_on_a_resumable_channel_gives_a_fresh_token() {
    let app = spawn_app(&["--resume-grace-secs", "5"]).await;
    let (mut b, first) = resumable(&app, "relive").await;
    let mut v = viewer(&app, "relive", &mut b).await;
    b.emit("stop_broadcast", json!({"channel_id": "relive"}));
    v.expect("broadcaster_stopped").await;
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "relive", "force": true}),
    );
    let second = token_of(&b.expect("broadcaster_ready").await, &b.sid, "relive");
    assert_ne!(second, first);
    v.expect("broadcaster_available").await;
    // The channel is still held when this connection drops, and the new token resumes it.
    b.close();
    v.expect("broadcaster_reconnecting").await;
    let mut again = app.client().await;
    again.emit(
        "join_as_broadcaster",
        json!({"channel_id": "relive", "resume_token": second}),
    );
    token_of(
        &again.expect("broadcaster_ready").await,
        &again.sid,
        "relive",
    );
    assert_eq!(
        v.expect("broadcaster_available").await["broadcaster_id"],
        again.sid
    );
}

// ---- holding a dropped broadcaster's channel ----

#[tokio::test]
async fn a_dropped_resumable_broadcaster_keeps_its_channel_during_the_grace() {
    let app = spawn_app(&[]).await;
    let (mut b, _token) = resumable(&app, "hold").await;
    let mut v = viewer(&app, "hold", &mut b).await;
    b.close();
    assert_eq!(
        v.expect("broadcaster_reconnecting").await,
        json!({"channel_id": "hold"})
    );
    v.assert_silent().await;

    // The channel is still there, under its departed broadcaster.
    let mut stranger = app.client().await;
    assert_eq!(listed(&mut stranger).await, vec!["hold"]);
    assert_eq!(listed_broadcaster(&mut stranger, "hold").await, b.sid);

    // Nobody takes the id: not without a token, not with force, not with a made-up token.
    for payload in [
        json!({"channel_id": "hold"}),
        json!({"channel_id": "hold", "force": true}),
        json!({"channel_id": "hold", "resume": true}),
        json!({"channel_id": "hold", "resume_token": made_up_token()}),
        json!({"channel_id": "hold", "force": true, "resume_token": made_up_token()}),
    ] {
        stranger.emit("join_as_broadcaster", payload);
        stranger.expect_error(&taken("hold")).await;
    }

    // A viewer joining now hears that the broadcaster is reconnecting, not that it is there.
    let mut late = app.client().await;
    late.emit("join_as_viewer", json!({"channel_id": "hold"}));
    assert_eq!(
        late.expect("broadcaster_reconnecting").await,
        json!({"channel_id": "hold"})
    );
    late.assert_silent().await;

    // Relays to the departed broadcaster are refused.
    relays_refused(&mut v, &b.sid).await;
    relays_refused(&mut late, &b.sid).await;
    v.assert_silent().await;
    stranger.assert_silent().await;
}

#[tokio::test]
async fn resuming_with_the_token_from_a_new_socket_restores_the_channel() {
    let app = spawn_app(&[]).await;
    let (mut b, token) = resumable(&app, "back").await;
    let mut early = viewer(&app, "back", &mut b).await;
    b.close();
    early.expect("broadcaster_reconnecting").await;
    let mut late = app.client().await;
    late.emit("join_as_viewer", json!({"channel_id": "back"}));
    late.expect("broadcaster_reconnecting").await;

    // The token alone (no `resume` flag, no `force`) resumes, from any socket.
    let mut again = app.client().await;
    again.emit(
        "join_as_broadcaster",
        json!({"channel_id": "back", "resume_token": token}),
    );
    let fresh = token_of(&again.expect("broadcaster_ready").await, &again.sid, "back");
    assert_ne!(fresh, token);
    // The new socket learns the audience it takes back.
    assert_eq!(
        again.expect("viewer_count").await,
        json!({"channel_id": "back", "count": 2})
    );
    for v in [&mut early, &mut late] {
        assert_eq!(
            v.expect("broadcaster_available").await,
            json!({"broadcaster_id": again.sid, "channel_id": "back"})
        );
        v.assert_silent().await;
    }

    // Viewers and the new broadcaster negotiate both ways; the old id stays refused.
    relays_reach(&early, &mut again).await;
    relays_reach(&again, &mut early).await;
    relays_reach(&late, &mut again).await;
    relays_reach(&again, &mut late).await;
    relays_refused(&mut early, &b.sid).await;

    let mut asker = app.client().await;
    assert_eq!(listed_broadcaster(&mut asker, "back").await, again.sid);

    // The old token no longer works, neither for a takeover now…
    let mut thief = app.client().await;
    thief.emit(
        "join_as_broadcaster",
        json!({"channel_id": "back", "force": true, "resume_token": token}),
    );
    thief.expect_error(&taken("back")).await;
    // …nor for resuming after the next drop; the fresh one does.
    again.close();
    early.expect("broadcaster_reconnecting").await;
    late.expect("broadcaster_reconnecting").await;
    thief.emit(
        "join_as_broadcaster",
        json!({"channel_id": "back", "resume_token": token}),
    );
    thief.expect_error(&taken("back")).await;
    thief.emit(
        "join_as_broadcaster",
        json!({"channel_id": "back", "resume_token": fresh}),
    );
    token_of(&thief.expect("broadcaster_ready").await, &thief.sid, "back");
    for v in [&mut early, &mut late] {
        assert_eq!(
            v.expect("broadcaster_available").await["broadcaster_id"],
            thief.sid
        );
    }
    // It is the channel's broadcaster in every respect: it can stop the broadcast.
    thief.emit("stop_broadcast", json!({"channel_id": "back"}));
    for v in [&mut early, &mut late] {
        assert_eq!(
            v.expect("broadcaster_stopped").await,
            json!({"channel_id": "back"})
        );
    }
}

#[tokio::test]
async fn relay_tree_viewers_get_their_upstream_again_after_a_resume() {
    let app = spawn_app(&[]).await;
    let (b, token) = resumable(&app, "treeback").await;
    let mut v = app.client().await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "treeback", "relay": true}),
    );
    v.expect("broadcaster_available").await;
    assert_eq!(
        v.expect_upstream().await,
        json!({"channel_id": "treeback", "peer_id": b.sid, "depth": 1})
    );
    b.close();
    v.expect("broadcaster_reconnecting").await;
    let mut again = app.client().await;
    again.emit(
        "join_as_broadcaster",
        json!({"channel_id": "treeback", "resume_token": token}),
    );
    let (name, args) = again.next().await;
    assert_eq!(name, "broadcaster_ready", "{args:?}");
    assert_eq!(
        v.expect("broadcaster_available").await,
        json!({"broadcaster_id": again.sid, "channel_id": "treeback"})
    );
    assert_eq!(
        v.expect_upstream().await,
        json!({"channel_id": "treeback", "peer_id": again.sid, "depth": 1})
    );
    v.assert_silent().await;
    // The new broadcaster may hear the tree's figures first; then the viewer's offer.
    v.emit(
        "offer",
        json!({"target": again.sid, "sdp": sample_sdp("offer")}),
    );
    loop {
        let (name, args) = again.next().await;
        match name.as_str() {
            "viewer_count" | "relay_tree" => {}
            "offer" => {
                assert_eq!(
                    args,
                    vec![json!({"sdp": sample_sdp("offer"), "sender": v.sid})]
                );
                break;
            }
            other => panic!("unexpected {other} {args:?}"),
        }
    }
}

#[tokio::test]
async fn after_the_grace_the_channel_closes_and_its_id_is_free() {
    let app = spawn_app(&["--resume-grace-secs", "1"]).await;
    let (mut b, token) = resumable(&app, "brief").await;
    let mut v = viewer(&app, "brief", &mut b).await;
    let dropped = Instant::now();
    b.close();
    v.expect("broadcaster_reconnecting").await;
    expect_disconnected(&mut v).await;
    let held = dropped.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "held for {held:?} with a grace of 1 s"
    );

    let mut stranger = app.client().await;
    assert!(listed(&mut stranger).await.is_empty());
    stranger.emit("join_as_viewer", json!({"channel_id": "brief"}));
    stranger
        .expect_error("Channel brief not found or expired")
        .await;
    // Anybody may now broadcast under the id; the old viewer is no longer in it.
    stranger.emit("join_as_broadcaster", json!({"channel_id": "brief"}));
    assert_eq!(
        stranger.expect("broadcaster_ready").await,
        json!({"id": stranger.sid, "channel_id": "brief"})
    );
    // The old token does not reclaim it.
    let mut late = app.client().await;
    late.emit(
        "join_as_broadcaster",
        json!({"channel_id": "brief", "resume_token": token}),
    );
    late.expect_error(&taken("brief")).await;
    v.assert_silent().await;
    stranger.assert_silent().await;
}

#[tokio::test]
async fn without_a_grace_a_resumable_channel_closes_at_once() {
    let app = spawn_app(&["--resume-grace-secs", "0"]).await;
    let (mut b, _token) = resumable(&app, "nohold").await;
    let mut v = viewer(&app, "nohold", &mut b).await;
    b.close();
    expect_disconnected(&mut v).await;
    v.assert_silent().await;
    let mut stranger = app.client().await;
    assert!(listed(&mut stranger).await.is_empty());
    stranger.emit("join_as_broadcaster", json!({"channel_id": "nohold"}));
    stranger.expect("broadcaster_ready").await;
}

#[tokio::test]
async fn a_broadcaster_that_did_not_ask_for_resuming_closes_its_channel_at_once() {
    let app = spawn_app(&[]).await;
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "legacy"}));
    b.expect("broadcaster_ready").await;
    let mut v = viewer(&app, "legacy", &mut b).await;
    b.close();
    expect_disconnected(&mut v).await;
    v.assert_silent().await;
    let mut stranger = app.client().await;
    assert!(listed(&mut stranger).await.is_empty());
}

// ---- takeover ----

#[tokio::test]
async fn takeover_with_the_token_replaces_a_live_broadcaster() {
    let app = spawn_app(&[]).await;
    let (mut first, token) = resumable(&app, "desk").await;
    let mut v = viewer(&app, "desk", &mut first).await;

    // Without the token, with a wrong one, or with the token but without force: refused.
    let mut second = app.client().await;
    for payload in [
        json!({"channel_id": "desk", "force": true}),
        json!({"channel_id": "desk", "force": true, "resume_token": made_up_token()}),
        json!({"channel_id": "desk", "resume_token": token}),
    ] {
        second.emit("join_as_broadcaster", payload);
        second.expect_error(&taken("desk")).await;
    }
    first.assert_silent().await;
    v.assert_silent().await;

    second.emit(
        "join_as_broadcaster",
        json!({"channel_id": "desk", "force": true, "resume_token": token}),
    );
    let fresh = token_of(
        &second.expect("broadcaster_ready").await,
        &second.sid,
        "desk",
    );
    assert_ne!(fresh, token);
    assert_eq!(
        second.expect("viewer_count").await,
        json!({"channel_id": "desk", "count": 1})
    );
    assert_eq!(
        first.expect("broadcaster_replaced").await,
        json!({"channel_id": "desk"})
    );
    assert_eq!(
        v.expect("broadcaster_available").await,
        json!({"broadcaster_id": second.sid, "channel_id": "desk"})
    );
    v.assert_silent().await;

    // The old socket is no longer the broadcaster: no relays either way, no stop.
    relays_refused(&mut first, &v.sid).await;
    relays_refused(&mut v, &first.sid).await;
    first.emit("stop_broadcast", json!({"channel_id": "desk"}));
    first
        .expect_error("You are not the broadcaster of this channel")
        .await;
    // The new one is.
    relays_reach(&v, &mut second).await;
    relays_reach(&second, &mut v).await;
    let mut asker = app.client().await;
    assert_eq!(listed_broadcaster(&mut asker, "desk").await, second.sid);

    // The replaced token is spent.
    let mut third = app.client().await;
    third.emit(
        "join_as_broadcaster",
        json!({"channel_id": "desk", "force": true, "resume_token": token}),
    );
    third.expect_error(&taken("desk")).await;

    // The old socket leaving concerns nobody any more.
    first.close();
    first.expect_closed().await;
    v.assert_silent().await;
    second.assert_silent().await;
    assert_eq!(listed_broadcaster(&mut asker, "desk").await, second.sid);
}

// ---- private channels ----

#[tokio::test]
async fn a_private_channel_is_unlisted_and_admits_only_its_password() {
    let app = spawn_app(&[]).await;
    let mut owner = app.client().await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "secret", "password": "open sesame"}),
    );
    assert_eq!(
        after_hashing(&mut owner, "broadcaster_ready").await,
        json!({"id": owner.sid, "channel_id": "secret"})
    );
    let mut public = app.client().await;
    public.emit("join_as_broadcaster", json!({"channel_id": "open"}));
    public.expect("broadcaster_ready").await;

    let mut asker = app.client().await;
    assert_eq!(listed(&mut asker).await, vec!["open"]);

    // Missing, null or wrong: one answer for all (a fresh socket each time, under the rate).
    let mut v = app.client().await;
    v.emit("join_as_viewer", json!({"channel_id": "secret"}));
    v.expect_error(WRONG_PASSWORD).await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": null}),
    );
    v.expect_error(WRONG_PASSWORD).await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": "open sesame!"}),
    );
    assert_eq!(
        after_hashing(&mut v, "error").await,
        json!({"message": WRONG_PASSWORD})
    );
    let mut case = app.client().await;
    case.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": "Open Sesame"}),
    );
    assert_eq!(
        after_hashing(&mut case, "error").await,
        json!({"message": WRONG_PASSWORD})
    );
    // A refused viewer is not in the channel: it cannot chat there.
    case.emit(
        "send_message",
        json!({"channel_id": "secret", "message": "let me in"}),
    );
    case.expect_error("You must be a viewer in this channel to send messages")
        .await;
    owner.assert_silent().await;

    let mut guest = app.client().await;
    guest.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "password": "open sesame"}),
    );
    assert_eq!(
        after_hashing(&mut guest, "broadcaster_available").await,
        json!({"broadcaster_id": owner.sid, "channel_id": "secret"})
    );
    assert_eq!(
        owner.expect("viewer_count").await,
        json!({"channel_id": "secret", "count": 1})
    );
    relays_reach(&guest, &mut owner).await;
    guest.assert_silent().await;
    // Still unlisted with a viewer in it.
    assert_eq!(listed(&mut asker).await, vec!["open"]);
}

/// Only a *new* channel is made private: a password given when an existing channel goes live
/// again changes nothing, and a private channel stays private across a resume.
#[tokio::test]
async fn a_password_only_makes_a_new_channel_private() {
    let app = spawn_app(&[]).await;
    let (mut public, _) = resumable(&app, "lobby").await;
    public.emit("stop_broadcast", json!({"channel_id": "lobby"}));
    public.emit(
        "join_as_broadcaster",
        json!({"channel_id": "lobby", "force": true, "resume": true, "password": "late pass"}),
    );
    after_hashing(&mut public, "broadcaster_ready").await;
    let mut asker = app.client().await;
    assert_eq!(listed(&mut asker).await, vec!["lobby"]);
    let mut v = app.client().await;
    v.emit("join_as_viewer", json!({"channel_id": "lobby"}));
    v.expect("broadcaster_available").await;

    let mut owner = app.client().await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "hidden", "resume": true, "password": "kept secret"}),
    );
    let token = token_of(
        &after_hashing(&mut owner, "broadcaster_ready").await,
        &owner.sid,
        "hidden",
    );
    owner.close();
    owner.expect_closed().await;
    let mut again = app.client().await;
    again.emit(
        "join_as_broadcaster",
        json!({"channel_id": "hidden", "resume_token": token}),
    );
    token_of(
        &again.expect("broadcaster_ready").await,
        &again.sid,
        "hidden",
    );
    assert_eq!(listed(&mut asker).await, vec!["lobby"]);
    let mut stranger = app.client().await;
    stranger.emit("join_as_viewer", json!({"channel_id": "hidden"}));
    stranger.expect_error(WRONG_PASSWORD).await;
    stranger.emit(
        "join_as_viewer",
        json!({"channel_id": "hidden", "password": "kept secret"}),
    );
    assert_eq!(
        after_hashing(&mut stranger, "broadcaster_available").await,
        json!({"broadcaster_id": again.sid, "channel_id": "hidden"})
    );
}

#[tokio::test]
async fn a_private_channel_password_is_validated() {
    let app = spawn_app(&[]).await;
    let too_long_ascii = "p".repeat(129);
    let too_long_wide = "é".repeat(129);
    for (i, password) in [
        "".to_owned(),
        too_long_ascii.clone(),
        too_long_wide,
        "bell\u{7}char".to_owned(),
        "new\nline".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let channel = format!("bad{i}");
        let mut b = app.client().await;
        b.emit(
            "join_as_broadcaster",
            json!({"channel_id": channel, "password": password}),
        );
        let message = b.expect_error_prefix("Invalid data:").await;
        assert!(message.contains("password"), "{message:?} names the field");
        if !password.is_empty() {
            assert!(
                !message.contains(&password),
                "{message:?} shows the password"
            );
        }
        // Nothing was created.
        b.emit("join_as_viewer", json!({"channel_id": channel}));
        b.expect_error(&format!("Channel {channel} not found or expired"))
            .await;
    }
    // Not a string: invalid as well.
    let mut b = app.client().await;
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": "typed", "password": 1234}),
    );
    let message = b.expect_error_prefix("Invalid data:").await;
    assert!(message.contains("password"), "{message:?} names the field");

    // The bounds themselves are fine: 1 character, and 128 characters (not bytes).
    for (channel, password) in [("one", "x".to_owned()), ("wide", "é".repeat(128))] {
        let mut owner = app.client().await;
        owner.emit(
            "join_as_broadcaster",
            json!({"channel_id": channel, "password": password}),
        );
        after_hashing(&mut owner, "broadcaster_ready").await;
        let mut guest = app.client().await;
        guest.emit(
            "join_as_viewer",
            json!({"channel_id": channel, "password": password}),
        );
        after_hashing(&mut guest, "broadcaster_available").await;
    }
}

#[tokio::test]
async fn password_attempts_are_rate_limited_per_socket() {
    let app = spawn_app(&[]).await;
    let mut owner = app.client().await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "vault", "password": "correct horse"}),
    );
    after_hashing(&mut owner, "broadcaster_ready").await;

    // Three attempts at once are answered; the fourth, right or not, is refused.
    let mut guesser = app.client().await;
    for _ in 0..3 {
        guesser.emit("join_as_viewer", json!({"channel_id": "vault"}));
    }
    guesser.emit(
        "join_as_viewer",
        json!({"channel_id": "vault", "password": "correct horse"}),
    );
    for _ in 0..3 {
        guesser.expect_error(WRONG_PASSWORD).await;
    }
    let refusal = guesser.expect_error_prefix(TOO_MANY).await;
    assert_eq!(
        refusal,
        "Invalid data: too many requests; wait a moment and try again"
    );
    guesser.assert_silent().await;

    // Per socket: somebody else gets in at once.
    let mut guest = app.client().await;
    guest.emit(
        "join_as_viewer",
        json!({"channel_id": "vault", "password": "correct horse"}),
    );
    after_hashing(&mut guest, "broadcaster_available").await;

    // A second later the guesser has one attempt again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    guesser.emit(
        "join_as_viewer",
        json!({"channel_id": "vault", "password": "correct horse"}),
    );
    assert_eq!(
        after_hashing(&mut guesser, "broadcaster_available").await,
        json!({"broadcaster_id": owner.sid, "channel_id": "vault"})
    );
}

#[tokio::test]
async fn a_password_guesser_that_keeps_going_is_disconnected() {
    let app = spawn_app(&[]).await;
    let mut owner = app.client().await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "safe", "password": "s3cret-phrase"}),
    );
    after_hashing(&mut owner, "broadcaster_ready").await;

    let mut guesser = app.client().await;
    // Guesses, and then attempts that do not wait for any answer. (Only attempts refused
    // before their check can come faster than one a second: a socket's events are handled in
    // order, and a check takes over a second in a debug build on a busy machine, long enough
    // for the rate to allow the next one. So the stream goes on without passwords.)
    for i in 0..3 {
        guesser.emit(
            "join_as_viewer",
            json!({"channel_id": "safe", "password": format!("guess-{i}")}),
        );
    }
    for _ in 3..200 {
        guesser.emit("join_as_viewer", json!({"channel_id": "safe"}));
    }
    let started = Instant::now();
    let (mut wrong, mut limited) = (0u64, 0u64);
    // Disconnected: the Socket.IO DISCONNECT packet (after which the official client closes
    // its transport and does not reconnect), or the transport closed by the server.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the guesser is still connected ({wrong} wrong, {limited} limited)"
        );
        match tokio::time::timeout(QUIET, guesser.next_event()).await {
            Ok(Some((name, args))) => {
                assert_eq!(name, "error", "{args:?}");
                let message = args[0]["message"].as_str().expect("message");
                if message == WRONG_PASSWORD {
                    wrong += 1;
                } else {
                    assert!(message.starts_with(TOO_MANY), "{message:?}");
                    limited += 1;
                }
            }
            Ok(None) => break true,
            Err(_) if guesser.got_disconnect_packet() => break false,
            Err(_) => {}
        }
    };
    assert!(
        closed || guesser.got_disconnect_packet(),
        "the guesser was told it is disconnected"
    );
    // Three at once, then at most one a second (each check is slow on purpose, so fewer).
    let bound = 3 + started.elapsed().as_secs() + 1;
    assert!(
        (3..=bound).contains(&wrong),
        "{wrong} guesses checked in {:?}",
        started.elapsed()
    );
    assert!(limited > 0 && wrong + limited < 200, "{wrong} + {limited}");
    // The server forgot the guesser: only the owner is left.
    assert_eq!(app.health().await["sockets"], 1);
    // The owner noticed nothing; the channel still admits its password.
    owner.assert_silent().await;
    let mut guest = app.client().await;
    guest.emit(
        "join_as_viewer",
        json!({"channel_id": "safe", "password": "s3cret-phrase"}),
    );
    after_hashing(&mut guest, "broadcaster_available").await;
}

// ---- nothing secret in the log ----

/// Runs a private, resumable channel through every path a secret travels (a password set,
/// refused, too long and accepted; tokens issued and presented for a takeover and a resume)
/// against the binary with `RUST_LOG=rust_log`, and returns each secret found in its output
/// with the lines that show it.
async fn secrets_in_the_log(rust_log: &str) -> Vec<(&'static str, Vec<String>)> {
    let server = LoggedServer::start(&[], &[("RUST_LOG", rust_log)]).await;
    let ws_url = server.ws_url();

    const PASSWORD: &str = "Tr0ub4dor-and-3";
    const GUESS: &str = "guessing-Pa55word";
    let too_long = "Q".repeat(129);
    let mut owner = Client::connect(&ws_url).await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "quiet", "password": PASSWORD, "resume": true}),
    );
    let first = token_of(
        &after_hashing(&mut owner, "broadcaster_ready").await,
        &owner.sid,
        "quiet",
    );
    let mut bad = Client::connect(&ws_url).await;
    bad.emit(
        "join_as_broadcaster",
        json!({"channel_id": "loud", "password": too_long}),
    );
    bad.expect_error_prefix("Invalid data:").await;
    let mut v = Client::connect(&ws_url).await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "quiet", "password": GUESS}),
    );
    assert_eq!(
        after_hashing(&mut v, "error").await,
        json!({"message": WRONG_PASSWORD})
    );
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "quiet", "password": PASSWORD}),
    );
    after_hashing(&mut v, "broadcaster_available").await;
    // A takeover and a resume: tokens travel in both directions.
    let mut other = Client::connect(&ws_url).await;
    other.emit(
        "join_as_broadcaster",
        json!({"channel_id": "quiet", "force": true, "resume_token": first}),
    );
    let second = token_of(
        &other.expect("broadcaster_ready").await,
        &other.sid,
        "quiet",
    );
    v.expect("broadcaster_available").await;
    other.close();
    v.expect("broadcaster_reconnecting").await;
    let mut third_socket = Client::connect(&ws_url).await;
    third_socket.emit(
        "join_as_broadcaster",
        json!({"channel_id": "quiet", "resume_token": second}),
    );
    let third = token_of(
        &third_socket.expect("broadcaster_ready").await,
        &third_socket.sid,
        "quiet",
    );
    v.expect("broadcaster_available").await;
    // Lines written after the last answer have little time to reach the pipe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.stop().await;
    assert!(log.contains("broadcaster ready"), "the log was read: {log}");
    [
        ("the password", PASSWORD),
        ("a wrong password", GUESS),
        ("an invalid password", too_long.as_str()),
        ("the first token", first.as_str()),
        ("the second token", second.as_str()),
        ("the third token", third.as_str()),
    ]
    .into_iter()
    .map(|(what, text)| {
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect();
        (what, lines)
    })
    .filter(|(_, lines)| !lines.is_empty())
    .collect()
}

#[tokio::test]
async fn the_log_never_shows_a_password_or_a_resume_token() {
    let found = secrets_in_the_log("info").await;
    assert!(found.is_empty(), "secrets in the log: {found:#?}");
}

/// As `the_log_never_shows_a_password_or_a_resume_token`, with everything logged (as the TURN
/// secret is checked in `turn.rs`): an operator who turns on debugging must not collect
/// secrets either.
#[tokio::test]
async fn the_trace_log_never_shows_a_password_or_a_resume_token() {
    let found = secrets_in_the_log("trace").await;
    assert!(found.is_empty(), "secrets in the log: {found:#?}");
}

/// The server's own code at its most verbose (how an operator debugs the server itself).
#[tokio::test]
async fn the_servers_own_trace_log_never_shows_a_password_or_a_resume_token() {
    let found = secrets_in_the_log("info,broadcast_server=trace").await;
    assert!(found.is_empty(), "secrets in the log: {found:#?}");
}
