//! Invitations to private channels (EXTENSIONS.md "Invitations"): only the broadcaster creates
//! them; a valid one admits a viewer without the password; an expired, forged, misdirected or
//! revoked one admits nobody; with a shared `--invite-secret` any node of a cluster accepts any
//! node's invitations.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use broadcast_server::invites::{Invitation, InviteKey};
use serde_json::{Value, json};

use crate::helpers::{Client, Cluster, TestApp, spawn_app};

const SECRET: &str = "invite-test-secret";
const REFUSED: &str = "Invalid data: this invitation is invalid, expired or revoked; ask the broadcaster for a new link, or enter the password";
const WRONG_PASSWORD: &str = "Invalid data: password is missing or wrong for this channel";

/// Creating a private channel hashes its password (argon2, slow on purpose, slower in debug).
const HASHING: Duration = Duration::from_secs(30);

async fn after_hashing(client: &mut Client, event: &str) -> Value {
    let (name, mut args) = tokio::time::timeout(HASHING, client.next_event())
        .await
        .unwrap_or_else(|_| panic!("{event} within {HASHING:?}"))
        .expect("connection open");
    assert_eq!(name, event, "expected {event}, got {name} {args:?}");
    args.remove(0)
}

/// A broadcaster live on a private channel.
async fn private_channel(client: Client, channel: &str) -> Client {
    let mut owner = client;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": channel, "password": "open sesame"}),
    );
    after_hashing(&mut owner, "broadcaster_ready").await;
    owner
}

/// `create_invite` answered with `invite_created`: the invitation.
async fn create_invite(owner: &mut Client, channel: &str, ttl_seconds: u64) -> String {
    owner.emit(
        "create_invite",
        json!({"channel_id": channel, "ttl_seconds": ttl_seconds}),
    );
    let created = owner.expect("invite_created").await;
    assert_eq!(created["channel_id"], channel, "{created}");
    let expires_at = created["expires_at"].as_u64().expect("expires_at: seconds");
    let now = broadcast_server::invites::unix_now();
    assert!(
        (now + ttl_seconds - 5..=now + ttl_seconds + 5).contains(&expires_at),
        "{created}"
    );
    created["invite"].as_str().expect("invite").to_owned()
}

/// A fresh viewer (a legacy leaf: no relay-tree events to wade through) joins with `invite`:
/// its first answer, `broadcaster_available` when admitted or the one `error` when refused.
async fn join_with(app_client: Client, channel: &str, invite: &str) -> (Client, Value) {
    let mut viewer = app_client;
    viewer.emit(
        "join_as_viewer",
        json!({"channel_id": channel, "invite": invite}),
    );
    let (name, mut args) = viewer.next().await;
    let answer = json!({"event": name, "data": args.remove(0)});
    (viewer, answer)
}

fn admitted(owner: &Client, channel: &str) -> Value {
    json!({"event": "broadcaster_available", "data": {"broadcaster_id": owner.sid, "channel_id": channel}})
}

fn refused() -> Value {
    json!({"event": "error", "data": {"message": REFUSED}})
}

async fn app_with_secret() -> TestApp {
    spawn_app(&["--invite-secret", SECRET]).await
}

#[tokio::test]
async fn only_the_broadcaster_of_a_private_channel_creates_invitations() {
    let app = app_with_secret().await;
    let mut owner = private_channel(app.client().await, "secret").await;
    let mut public = app.client().await;
    public.emit("join_as_broadcaster", json!({"channel_id": "open"}));
    public.expect("broadcaster_ready").await;

    let mut other = app.client().await;
    other.emit("create_invite", json!({"channel_id": "secret"}));
    other
        .expect_error("You are not the broadcaster of this channel")
        .await;
    other.emit("rotate_invites", json!({"channel_id": "secret"}));
    other
        .expect_error("You are not the broadcaster of this channel")
        .await;
    public.emit("create_invite", json!({"channel_id": "open"}));
    public
        .expect_error(
            "Invitations are for private channels; anyone with this channel's link can watch it",
        )
        .await;
    owner.emit("create_invite", json!({"channel_id": "nope"}));
    owner
        .expect_error("Channel nope not found or expired")
        .await;
    for bad in [
        json!({"channel_id": "secret", "ttl_seconds": 59}),
        json!({}),
    ] {
        owner.emit("create_invite", bad.clone());
        let message = owner.expect_error_prefix("Invalid data:").await;
        assert!(
            message.contains("ttl_seconds") || message.contains("channel_id"),
            "{bad}: {message}"
        );
    }

    // Without `ttl_seconds`, a day.
    owner.emit("create_invite", json!({"channel_id": "secret"}));
    let created = owner.expect("invite_created").await;
    let in_a_day = broadcast_server::invites::unix_now() + 24 * 3600;
    let expires_at = created["expires_at"].as_u64().unwrap();
    assert!(expires_at.abs_diff(in_a_day) <= 5, "{created}");
    owner.assert_silent().await;
}

#[tokio::test]
async fn a_valid_invitation_admits_without_the_password() {
    let app = app_with_secret().await;
    let mut owner = private_channel(app.client().await, "secret").await;
    let invite = create_invite(&mut owner, "secret", 600).await;

    let (mut guest, answer) = join_with(app.client().await, "secret", &invite).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    assert_eq!(
        owner.expect("viewer_count").await,
        json!({"channel_id": "secret", "count": 1})
    );
    guest.assert_silent().await;
    // The same link works for several viewers while it is valid.
    let (_second, answer) = join_with(app.client().await, "secret", &invite).await;
    assert_eq!(answer, admitted(&owner, "secret"));

    // The invitation never replaces a password that is wrong: sent without it, the password
    // rules apply as before.
    let mut v = app.client().await;
    v.emit("join_as_viewer", json!({"channel_id": "secret"}));
    v.expect_error(WRONG_PASSWORD).await;
}

#[tokio::test]
async fn expired_forged_and_misdirected_invitations_are_refused() {
    let app = app_with_secret().await;
    let mut owner = private_channel(app.client().await, "secret").await;
    owner.emit(
        "join_as_broadcaster",
        json!({"channel_id": "other", "password": "other pass"}),
    );
    after_hashing(&mut owner, "broadcaster_ready").await;
    let invite = create_invite(&mut owner, "secret", 600).await;
    let for_other = create_invite(&mut owner, "other", 600).await;

    // Signed with the server's secret for the channel's generation (read from the server's
    // own invitation), but expired a second ago.
    let generation = generation_of(&invite);
    let key = InviteKey::from_secret(SECRET.as_bytes());
    let expired = key.sign(&Invitation {
        channel_id: "secret".to_owned(),
        generation,
        expires_at: broadcast_server::invites::unix_now() - 1,
    });
    // The same but valid: the test's signing agrees with the server's.
    let valid = key.sign(&Invitation {
        channel_id: "secret".to_owned(),
        generation,
        expires_at: broadcast_server::invites::unix_now() + 60,
    });
    // One bit flipped in the payload (the expiry pushed to another value) and in the tag.
    let (payload, tag) = invite.split_once('.').unwrap();
    let mut bytes = BASE64URL.decode(payload).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let forged_payload = format!("{}.{tag}", BASE64URL.encode(&bytes));
    let mut tag_bytes = BASE64URL.decode(tag).unwrap();
    tag_bytes[0] ^= 0x80;
    let forged_tag = format!("{payload}.{}", BASE64URL.encode(&tag_bytes));
    let other_secret = InviteKey::from_secret(b"another secret").sign(&Invitation {
        channel_id: "secret".to_owned(),
        generation,
        expires_at: broadcast_server::invites::unix_now() + 60,
    });

    for (what, token) in [
        ("expired", expired.as_str()),
        ("payload bit flipped", &forged_payload),
        ("tag bit flipped", &forged_tag),
        ("signed with another secret", &other_secret),
        ("for another channel", &for_other),
        ("not a token", "not-a-token"),
    ] {
        let (mut v, answer) = join_with(app.client().await, "secret", token).await;
        assert_eq!(answer, refused(), "{what}");
        // Refused viewers are not in the channel.
        v.emit(
            "send_message",
            json!({"channel_id": "secret", "message": "let me in"}),
        );
        v.expect_error("You must be a viewer in this channel to send messages")
            .await;
    }
    let mut v = app.client().await;
    v.emit(
        "join_as_viewer",
        json!({"channel_id": "secret", "invite": "has spaces"}),
    );
    v.expect_error("Invalid data: invite must be the invitation an invite_created gave")
        .await;
    owner.assert_silent().await;

    let (_, answer) = join_with(app.client().await, "secret", &valid).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    let (_, answer) = join_with(app.client().await, "secret", &invite).await;
    assert_eq!(answer, admitted(&owner, "secret"));
}

/// The generation an invitation names (`v1:<channel>:<generation>:<expires_at>`).
fn generation_of(invite: &str) -> u64 {
    let (payload, _) = invite.split_once('.').expect("payload.tag");
    let payload = String::from_utf8(BASE64URL.decode(payload).expect("base64url")).expect("text");
    payload
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("a generation")
}

/// A channel closed and created again under the same id (by anybody) starts a new random
/// generation: the earlier channel's invitations never admit to it.
#[tokio::test]
async fn an_earlier_channel_of_the_same_id_has_no_say() {
    let app = app_with_secret().await;
    let mut owner = private_channel(app.client().await, "secret").await;
    let invite = create_invite(&mut owner, "secret", 600).await;
    owner.close();
    drop(owner);
    // The disconnect closes the channel (it was not resumable).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.health().await["channels"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the channel closes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = private_channel(app.client().await, "secret").await;
    let (_, answer) = join_with(app.client().await, "secret", &invite).await;
    assert_eq!(answer, refused());
    drop(next);
}

#[tokio::test]
async fn rotating_revokes_earlier_invitations_only() {
    let app = app_with_secret().await;
    let mut owner = private_channel(app.client().await, "secret").await;
    let old = create_invite(&mut owner, "secret", 600).await;
    let (_early, answer) = join_with(app.client().await, "secret", &old).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    owner.expect("viewer_count").await;

    owner.emit("rotate_invites", json!({"channel_id": "secret"}));
    assert_eq!(
        owner.expect("invites_rotated").await,
        json!({"channel_id": "secret"})
    );
    let (_, answer) = join_with(app.client().await, "secret", &old).await;
    assert_eq!(answer, refused(), "revoked");
    let new = create_invite(&mut owner, "secret", 600).await;
    assert_ne!(new, old);
    let (_, answer) = join_with(app.client().await, "secret", &new).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    assert_eq!(
        owner.expect("viewer_count").await,
        json!({"channel_id": "secret", "count": 2}),
        "the viewer admitted before the rotation stays"
    );
}

/// A restart draws a new per-process key without `--invite-secret`; with it, invitations
/// outlive the process (checked across two nodes below, the same key in two processes).
#[tokio::test]
async fn without_a_secret_another_process_refuses_the_invitation() {
    let first = spawn_app(&[]).await;
    let mut owner = private_channel(first.client().await, "secret").await;
    let invite = create_invite(&mut owner, "secret", 600).await;
    let (_, answer) = join_with(first.client().await, "secret", &invite).await;
    assert_eq!(answer, admitted(&owner, "secret"));

    let second = spawn_app(&[]).await;
    let other_owner = private_channel(second.client().await, "secret").await;
    let (_, answer) = join_with(second.client().await, "secret", &invite).await;
    assert_eq!(answer, refused());
    drop(other_owner);
}

#[tokio::test]
async fn a_shared_secret_lets_every_node_admit_and_revoke() {
    let cluster = Cluster::start(2, &["--invite-secret", SECRET]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut owner = private_channel(a.client().await, "secret").await;
    let invite = create_invite(&mut owner, "secret", 600).await;

    let (on_b, answer) = join_with(b.client().await, "secret", &invite).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    assert_eq!(
        owner.expect("viewer_count").await,
        json!({"channel_id": "secret", "count": 1})
    );

    // Rotated on node A: node B refuses the old invitation at once.
    owner.emit("rotate_invites", json!({"channel_id": "secret"}));
    owner.expect("invites_rotated").await;
    let (refused_on_b, answer) = join_with(b.client().await, "secret", &invite).await;
    assert_eq!(answer, refused());
    let new = create_invite(&mut owner, "secret", 600).await;
    let (again_on_b, answer) = join_with(b.client().await, "secret", &new).await;
    assert_eq!(answer, admitted(&owner, "secret"));
    for node in &cluster.nodes {
        let log = node.log_text();
        for secret in [SECRET, &invite, &new] {
            assert!(!log.contains(secret), "a node logged a secret");
        }
    }
    cluster
        .teardown(vec![owner, on_b, refused_on_b, again_on_b])
        .await;
}
