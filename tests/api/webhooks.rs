//! Webhooks (EXTENSIONS.md "Webhooks"): a real receiver on a local port checks each request's
//! signature the way an operator's would; events arrive in order with the broadcast's peak
//! viewer count; a `500` is retried and a `400` is not; a receiver that never answers delays
//! no client and the queue stays bounded; the secret never reaches the log; in a cluster each
//! event is sent once, and a dead node's broadcast is ended by a survivor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::process::Command;

use crate::helpers::{Client, Cluster, LoggedServer, Node, TestApp, spawn_app};

const SECRET: &str = "wh-Sh4red-secret-for-webhook-tests";
/// How long a request that should come may take (the first retry waits 1 s).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hook {
    body: Value,
    /// The signature header was well formed, fresh and matched the body under [`SECRET`].
    signed: bool,
}

/// A webhook receiver on 127.0.0.1: records every request and answers with the scripted
/// statuses in turn, then `200`.
struct Receiver {
    url: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

#[derive(Clone)]
struct ReceiverState {
    hooks: Arc<Mutex<Vec<Hook>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            hooks: hooks.clone(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hooks"),
            hooks,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().expect("hooks lock").clone()
    }

    /// Polls until at least `count` requests arrived; returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Hook> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let hooks = self.hooks();
            if hooks.len() >= count {
                return hooks;
            }
            assert!(
                Instant::now() < deadline,
                "{count} webhook requests expected, got {hooks:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let signed = headers
        .get("x-broadcast-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|header| signature_holds(header, &body));
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.hooks.lock().expect("hooks lock").push(Hook {
        body: parsed,
        signed,
    });
    let status = state.script.lock().expect("script lock").pop_front();
    StatusCode::from_u16(status.unwrap_or(200)).expect("a status")
}

/// What a receiver checks: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// with `t` within five minutes of now.
fn signature_holds(header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => return false,
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut mac = <Hmac<Sha256>>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    now.abs_diff(t) <= 300 && mac.verify_slice(&v1).is_ok()
}

async fn app_for(url: &str, extra: &[&str]) -> TestApp {
    let mut args = vec!["--webhook-url", url, "--webhook-secret", SECRET];
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

/// The broadcaster's `join_as_broadcaster`, answered with `broadcaster_ready`.
async fn go_live(b: &mut Client, channel: &str, force: bool) {
    b.emit(
        "join_as_broadcaster",
        json!({"channel_id": channel, "force": force}),
    );
    b.expect("broadcaster_ready").await;
}

/// A viewer connected to `ws_url` that joined `channel`; the broadcaster has seen the count it
/// makes.
async fn viewer(ws_url: &str, b: &mut Client, channel: &str, count: usize) -> Client {
    let mut v = Client::connect(ws_url).await;
    v.emit("join_as_viewer", json!({"channel_id": channel}));
    v.expect("broadcaster_available").await;
    let counted = b.expect("viewer_count").await;
    assert_eq!(counted["count"], count, "{counted}");
    v
}

/// A broadcast that starts, stops, goes live again and ends, as the receiver sees it.
const LIFECYCLE: [&str; 4] = [
    "broadcast.started",
    "broadcast.stopped",
    "broadcast.started",
    "broadcast.ended",
];

/// The event types, in arrival order.
fn types(hooks: &[Hook]) -> Vec<String> {
    hooks
        .iter()
        .map(|h| h.body["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn started_stopped_started_ended_arrive_signed_in_order_with_peak_viewers() {
    let receiver = Receiver::start(&[]).await;
    let app = app_for(&receiver.url, &[]).await;
    let mut b = app.client().await;
    go_live(&mut b, "show", false).await;
    let mut v1 = viewer(&app.ws_url(), &mut b, "show", 1).await;
    let v2 = viewer(&app.ws_url(), &mut b, "show", 2).await;
    v2.close();
    assert_eq!(b.expect("viewer_count").await["count"], 1);

    b.emit("stop_broadcast", json!({"channel_id": "show"}));
    v1.expect("broadcaster_stopped").await;
    // A repeated stop changes nothing, and sends nothing.
    b.emit("stop_broadcast", json!({"channel_id": "show"}));
    v1.expect("broadcaster_stopped").await;
    let hooks = receiver.wait_for(2).await;
    assert_eq!(types(&hooks), ["broadcast.started", "broadcast.stopped"]);

    // Live again: the new broadcast's peak starts from the viewer still there.
    go_live(&mut b, "show", true).await;
    v1.expect("broadcaster_available").await;
    let _v3 = viewer(&app.ws_url(), &mut b, "show", 2).await;
    let _v4 = viewer(&app.ws_url(), &mut b, "show", 3).await;
    b.close();
    v1.expect("broadcaster_disconnected").await;

    let hooks = receiver.wait_for(4).await;
    assert_eq!(types(&hooks), LIFECYCLE);
    for hook in &hooks {
        assert!(hook.signed, "signature checks: {hook:?}");
        assert_eq!(hook.body["channel_id"], "show", "{hook:?}");
        assert!(hook.body.get("node_id").is_none(), "memory mode: {hook:?}");
    }
    let peaks: Vec<&Value> = hooks.iter().map(|h| &h.body["peak_viewers"]).collect();
    assert_eq!(peaks, [&Value::Null, &json!(2), &Value::Null, &json!(3)]);
    assert_eq!(hooks[3].body["reason"], "disconnected");
    let mut ids: Vec<&str> = hooks.iter().filter_map(|h| h.body["id"].as_str()).collect();
    assert!(ids.iter().all(|id| id.len() == 32), "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 4, "unique ids");
    let times: Vec<f64> = hooks.iter().filter_map(|h| h.body["at"].as_f64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(times.len(), 4);
    let keys: Vec<&String> = hooks[3].body.as_object().expect("object").keys().collect();
    assert_eq!(
        keys.len(),
        6,
        "id, type, at, channel_id, peak_viewers, reason: {keys:?}"
    );
}

#[tokio::test]
async fn a_500_is_retried_until_delivered_once_and_a_400_is_not_retried() {
    let receiver = Receiver::start(&[500, 200, 400]).await;
    let app = app_for(&receiver.url, &[]).await;
    let mut b = app.client().await;
    go_live(&mut b, "retry", false).await;

    let hooks = receiver.wait_for(2).await;
    assert_eq!(types(&hooks), ["broadcast.started", "broadcast.started"]);
    assert_eq!(hooks[0].body, hooks[1].body, "a retry sends the same event");
    assert!(hooks.iter().all(|h| h.signed));

    b.emit("stop_broadcast", json!({"channel_id": "retry"}));
    let hooks = receiver.wait_for(3).await;
    assert_eq!(hooks[2].body["type"], "broadcast.stopped");
    // A retry would come after 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.hooks().len(), 3, "neither event was sent again");
}

/// A receiver that accepts connections and never answers; it keeps them open.
async fn silent_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}/hooks")
}

fn dropped(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("broadcast_webhooks_dropped_total "))
        .and_then(|v| v.parse().ok())
        .expect("the dropped counter renders")
}

async fn scrape(app: &TestApp) -> String {
    reqwest::get(format!("{}/metrics", app.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_client_and_the_queue_stays_bounded() {
    let url = silent_receiver().await;
    let app = app_for(
        &url,
        &[
            "--rate-join",
            "0",
            "--max-channels",
            "2000",
            "--max-channels-per-socket",
            "2000",
            "--max-channels-per-ip",
            "2000",
        ],
    )
    .await;
    let before = dropped(&scrape(&app).await);
    let mut b = app.client().await;
    let mut v = {
        go_live(&mut b, "busy", false).await;
        viewer(&app.ws_url(), &mut b, "busy", 1).await
    };

    // A hundred events more than the queue holds, while the first delivery hangs. (One event
    // per round trip: two frames in a row would wait for the test client's delayed ACKs.)
    const CHANNELS: usize = 1100;
    let started = Instant::now();
    for n in 0..CHANNELS {
        go_live(&mut b, &format!("c{n}"), false).await;
    }
    // Had a handler waited for the receiver, each would have taken the 5-s attempt timeout.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "events were handled while the receiver hangs: {:?}",
        started.elapsed()
    );

    // Deliveries are pending; a chat round trip and another broadcaster's start stay fast.
    let round_trip = Instant::now();
    v.emit(
        "send_message",
        json!({"channel_id": "busy", "message": "still fast?"}),
    );
    assert_eq!(b.expect("new_message").await["message"], "still fast?");
    v.expect("new_message").await;
    let mut other = app.client().await;
    go_live(&mut other, "elsewhere", false).await;
    assert!(
        round_trip.elapsed() < Duration::from_secs(2),
        "round trips took {:?}",
        round_trip.elapsed()
    );

    // 1 + 1,100 + 1 events, one in flight and 1,000 queued: the oldest others were dropped.
    let after = dropped(&scrape(&app).await);
    assert!(
        after - before >= (1 + CHANNELS + 1 - 1 - 1000) as f64,
        "dropped {before} → {after}"
    );
}

#[tokio::test]
async fn the_log_and_help_never_show_the_webhook_secret() {
    let receiver = Receiver::start(&[503]).await;
    // A token in the URL's query stays out of the log too.
    let url = format!("{}?token=url-t0ken-for-webhooks", receiver.url);
    let server = LoggedServer::start(
        &[],
        &[
            ("WEBHOOK_URL", &url),
            ("WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "trace"),
        ],
    )
    .await;
    let ws = server.ws_url();
    let mut b = Client::connect(&ws).await;
    go_live(&mut b, "quiet", false).await;
    // Refused once (503), then delivered.
    let hooks = receiver.wait_for(2).await;
    assert!(hooks.iter().all(|h| h.signed));
    b.close();
    receiver.wait_for(3).await;
    let log = server.stop().await;
    assert!(
        log.contains("webhooks: broadcast events are POSTed"),
        "{log}"
    );
    assert!(
        log.contains("webhook attempt failed"),
        "the retry was logged: {log}"
    );
    for (what, text) in [
        ("the secret", SECRET),
        ("the URL's token", "url-t0ken-for-webhooks"),
    ] {
        assert!(!log.contains(text), "{what} is in the log: {log}");
    }

    let help = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
        .arg("--help")
        .env("WEBHOOK_URL", &url)
        .env("WEBHOOK_SECRET", SECRET)
        .output()
        .await
        .expect("--help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("WEBHOOK_SECRET") && help.contains("--webhook-url"),
        "{help}"
    );
    assert!(!help.contains(SECRET), "the secret is in --help");
    assert!(!help.contains("url-t0ken"), "the URL is in --help");
}

#[tokio::test]
async fn in_a_cluster_each_event_is_sent_once_and_a_survivor_ends_a_dead_nodes_broadcast() {
    let receiver = Receiver::start(&[]).await;
    let mut cluster = Cluster::start(
        3,
        &[
            "--heartbeat-ms",
            "500",
            "--webhook-url",
            &receiver.url,
            "--webhook-secret",
            SECRET,
        ],
    )
    .await;
    let node_id = |i: usize| {
        let node: &Node = &cluster.nodes[i];
        async move { node.health().await.1["node_id"].clone() }
    };
    let (a_id, b_id, c_id) = (node_id(0).await, node_id(1).await, node_id(2).await);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    // The broadcaster on A; its viewers on B and C count towards the peak all the same.
    let mut bc = a.client().await;
    go_live(&mut bc, "spread", false).await;
    let mut v1 = viewer(&b.ws_url(), &mut bc, "spread", 1).await;
    let mut v2 = viewer(&c.ws_url(), &mut bc, "spread", 2).await;
    bc.emit("stop_broadcast", json!({"channel_id": "spread"}));
    v1.expect("broadcaster_stopped").await;
    go_live(&mut bc, "spread", true).await;
    v1.expect("broadcaster_available").await;
    v2.expect("broadcaster_stopped").await;
    v2.expect("broadcaster_available").await;

    // Delivery is asynchronous and a killed node loses what it had queued: the three lifecycle
    // events of A's broadcaster are delivered before A dies.
    receiver.wait_for(3).await;
    // A dies: a survivor reaps its broadcaster and ends the broadcast.
    cluster.nodes[0].kill().await;
    v1.expect("broadcaster_disconnected").await;
    let hooks = receiver.wait_for(4).await;
    // Nothing is sent twice (every node has the same receiver).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hooks_after = receiver.hooks();
    assert_eq!(hooks_after.len(), 4, "{hooks_after:#?}");
    assert_eq!(types(&hooks), LIFECYCLE);
    assert!(hooks.iter().all(|h| h.signed));
    for hook in &hooks[..3] {
        assert_eq!(
            hook.body["node_id"], a_id,
            "sent by the broadcaster's node: {hook:?}"
        );
    }
    let ended = &hooks[3].body;
    assert!(
        ended["node_id"] == b_id || ended["node_id"] == c_id,
        "sent by a survivor: {ended}"
    );
    assert_eq!(ended["reason"], "disconnected");
    assert_eq!(hooks[1].body["peak_viewers"], 2);
    assert_eq!(ended["peak_viewers"], 2);
    cluster.teardown(vec![v1, v2]).await;
}
