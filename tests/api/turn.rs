//! `GET /ice-servers`: the configured ICE servers plus, with `--turn-urls` and `--turn-secret`,
//! a TURN server with time-limited credentials in coturn's REST API scheme
//! (`use-auth-secret`): `username = "<expiry>:<id>"`, `credential = base64(HMAC-SHA1(secret,
//! username))`. The credential is checked here against that formula computed by the test
//! itself; the secret must never show in the page, `--help`, an error or the log.

use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{LoggedServer, spawn_app};

const SECRET: &str = "e2e-Sh4red-secret-for-turn-tests";
const TURN_URLS: &str = "turn:turn.example.test:3478?transport=udp,turns:turn.example.test:5349";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// HMAC-SHA1 (RFC 2104) written out here rather than taken from the server's `hmac` crate, so
/// the test checks the server against the formula and not against itself.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    use sha1::{Digest, Sha1};
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.map(|k| k ^ byte);
    let inner = Sha1::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha1::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Standard base64 with padding (RFC 4648 §4), as coturn compares it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// coturn's password for a REST API username.
fn coturn_credential(secret: &str, username: &str) -> String {
    base64(&hmac_sha1(secret.as_bytes(), username.as_bytes()))
}

#[test]
fn the_tests_own_formula_matches_a_known_vector() {
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"north",
    //   b"1700003600:Xk3q9ZpL0aB7cD2e", hashlib.sha1).digest()).decode())'
    assert_eq!(
        coturn_credential("north", "1700003600:Xk3q9ZpL0aB7cD2e"),
        "wXoa/gr79GHNoUBwrpf1bipAEo4="
    );
    assert_eq!(
        coturn_credential(&"k".repeat(100), "86400:x"),
        "fCpDLnm0aBLta9t9FFype+SiZOg="
    );
}

/// `GET /ice-servers`: its `Cache-Control` and JSON body.
async fn ice_servers(url: &str) -> (String, Value) {
    let response = reqwest::get(format!("{url}/ice-servers"))
        .await
        .expect("/ice-servers answers");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(
        headers["content-type"], "application/json",
        "/ice-servers is JSON"
    );
    let cache = headers["cache-control"].to_str().expect("ascii").to_owned();
    (cache, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn ice_servers_without_turn_are_the_configured_ones_with_the_ttl() {
    let app = spawn_app(&[]).await;
    let (cache, body) = ice_servers(&app.url()).await;
    assert_eq!(cache, "no-store");
    assert_eq!(
        body,
        json!({
            "ice_servers": [
                {"urls": "stun:stun.l.google.com:19302"},
                {"urls": "stun:stun1.l.google.com:19302"}
            ],
            "ttl": 3600
        }),
        "the default STUN servers, as the page's config has them"
    );

    let app = spawn_app(&["--ice-servers", "[]", "--turn-ttl-secs", "120"]).await;
    let (cache, body) = ice_servers(&app.url()).await;
    assert_eq!(cache, "no-store");
    assert_eq!(body, json!({"ice_servers": [], "ttl": 120}));
}

#[tokio::test]
async fn ice_servers_with_turn_carry_fresh_coturn_credentials() {
    let configured = json!([{"urls": "stun:stun.example.test:3478"}]);
    let app = spawn_app(&[
        "--ice-servers",
        &configured.to_string(),
        "--turn-urls",
        TURN_URLS,
        "--turn-secret",
        SECRET,
        "--turn-ttl-secs",
        "600",
    ])
    .await;

    let before = unix_now();
    let (cache, body) = ice_servers(&app.url()).await;
    let after = unix_now();
    assert_eq!(cache, "no-store", "credentials are minted per request");
    assert_eq!(body["ttl"], 600);
    let servers = body["ice_servers"]
        .as_array()
        .expect("ice_servers is a list");
    assert_eq!(servers.len(), 2, "{body}");
    assert_eq!(servers[0], configured[0], "the configured servers first");

    let turn = &servers[1];
    let mut keys: Vec<&str> = turn
        .as_object()
        .expect("an RTCIceServer object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["credential", "urls", "username"], "{turn}");
    assert_eq!(
        turn["urls"],
        json!([
            "turn:turn.example.test:3478?transport=udp",
            "turns:turn.example.test:5349"
        ])
    );
    let username = turn["username"].as_str().expect("username is a string");
    let (expiry, id) = username.split_once(':').expect("<expiry>:<id>");
    let expiry: u64 = expiry.parse().expect("the expiry is unix seconds");
    assert!(
        (before + 600..=after + 600).contains(&expiry),
        "expiry {expiry} is not now + ttl ({before}..={after} + 600)"
    );
    assert!(
        id.len() >= 8 && !id.contains(':'),
        "an opaque id without the separator: {id}"
    );
    assert_eq!(
        turn["credential"].as_str(),
        Some(coturn_credential(SECRET, username).as_str()),
        "credential = base64(HMAC-SHA1(secret, username))"
    );

    let (_, again) = ice_servers(&app.url()).await;
    let other = again["ice_servers"][1]["username"]
        .as_str()
        .expect("username");
    assert_ne!(other, username, "every request gets its own username");
    assert_eq!(
        again["ice_servers"][1]["credential"].as_str(),
        Some(coturn_credential(SECRET, other).as_str())
    );

    // The page gets only the configured servers in its HTML, never the secret.
    let page = reqwest::get(format!("{}/?viewer=true", app.url()))
        .await
        .expect("page")
        .text()
        .await
        .expect("page body");
    assert!(!page.contains(SECRET), "the secret is in the page");
    assert!(page.contains("stun:stun.example.test:3478"));
}

/// Runs the binary with `args` and only `env` of the TURN variables, expecting it to stop.
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broadcast-server"));
    command
        .args(args)
        .env_remove("TURN_URLS")
        .env_remove("TURN_SECRET")
        .env_remove("TURN_TTL_SECS")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .expect("the binary stops by itself")
        .expect("the binary runs")
}

/// Arguments, environment variables, and how the error line starts.
type HalfConfig = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn half_a_turn_config_stops_start_up_with_one_clear_line() {
    let cases: [HalfConfig; 4] = [
        (
            &["--turn-urls", "turn:127.0.0.1:3478"],
            &[],
            "error: --turn-urls (TURN_URLS) needs --turn-secret (TURN_SECRET)",
        ),
        (
            &[],
            &[("TURN_URLS", "turn:127.0.0.1:3478")],
            "error: --turn-urls (TURN_URLS) needs --turn-secret (TURN_SECRET)",
        ),
        (
            &["--turn-secret", SECRET],
            &[],
            "error: --turn-secret (TURN_SECRET) needs --turn-urls (TURN_URLS)",
        ),
        (
            &[],
            &[("TURN_SECRET", SECRET)],
            "error: --turn-secret (TURN_SECRET) needs --turn-urls (TURN_URLS)",
        ),
    ];
    for (args, env, expected) in cases {
        let out = run_binary(args, env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            !stderr.contains(SECRET),
            "the secret is in the error: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} {env:?}: nothing on stdout");
    }
}

#[tokio::test]
async fn bad_turn_options_are_refused_without_showing_the_secret() {
    let out = run_binary(
        &[
            "--turn-urls",
            "stun:127.0.0.1:3478",
            "--turn-secret",
            SECRET,
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("TURN URL `stun:127.0.0.1:3478` must look like turn:host"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");

    let out = run_binary(
        &["--turn-ttl-secs", "59"],
        &[("TURN_URLS", "turn:127.0.0.1"), ("TURN_SECRET", SECRET)],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("60..=86400"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");

    let out = run_binary(&["--turn-secret", ""], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--turn-secret (TURN_SECRET) must be a non-empty"),
        "{stderr}"
    );

    // --help names the variable but never shows its value.
    let out = run_binary(&["--help"], &[("TURN_SECRET", SECRET)]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{help}");
    assert!(
        help.contains("--turn-secret") && help.contains("TURN_SECRET"),
        "{help}"
    );
    assert!(
        help.contains("--turn-urls") && help.contains("--turn-ttl-secs"),
        "{help}"
    );
    assert!(!help.contains(SECRET), "the secret is in --help");
}

#[tokio::test]
async fn the_log_never_shows_the_secret_or_a_credential() {
    let server = LoggedServer::start(
        &["--ice-servers", "[]", "--turn-urls", TURN_URLS],
        &[("TURN_SECRET", SECRET), ("RUST_LOG", "trace")],
    )
    .await;
    let url = server.url.clone();

    let (_, body) = ice_servers(&url).await;
    let turn = &body["ice_servers"][0];
    let username = turn["username"].as_str().expect("username").to_owned();
    let credential = turn["credential"].as_str().expect("credential").to_owned();
    assert_eq!(credential, coturn_credential(SECRET, &username));
    reqwest::get(format!("{url}/?broadcaster=true"))
        .await
        .expect("page");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.stop().await;
    assert!(
        log.contains("/ice-servers"),
        "the request was logged at trace level: {log}"
    );
    assert!(
        log.contains("TURN: /ice-servers mints time-limited credentials"),
        "{log}"
    );
    for (what, text) in [
        ("the secret", SECRET),
        ("a username", &username),
        ("a credential", &credential),
    ] {
        assert!(!log.contains(text), "{what} is in the log: {log}");
    }
}
