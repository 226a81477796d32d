//! `GET /metrics`: Prometheus's text format, the figures of how things stand (sockets, channels,
//! viewers, tree depth) computed per server at each scrape, the counters moving after real
//! events, and the `--metrics-token` gate.
//!
//! The counters are the process's (one recorder per process, as a deployment has one server per
//! process), and this binary runs many servers at once: in-process tests assert that a counter
//! went up, never by exactly how much. The cluster test runs each node as a process of its own,
//! so there the counts are exact.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    Cluster, EVENT_TIMEOUT, Polling, TestApp, channel_with_viewer, sample_candidate, sample_sdp,
    spawn_app,
};

/// One scrape: each sample's series (`name` or `name{labels}`, as rendered) and its value.
#[derive(Debug)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Parses the text format: `# HELP` / `# TYPE` comments, blank lines, and sample lines
    /// `name{label="value",…} value`; anything else fails the test.
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix("# ") {
                assert!(
                    comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                    "unknown comment: {line}"
                );
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name_end = series.find('{').unwrap_or(series.len());
            let (name, labels) = series.split_at(name_end);
            assert!(
                !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name: {line}"
            );
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in inner.split(',') {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name: {line}"
                    );
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "unquoted label value: {line}"
                    );
                }
            }
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "series twice: {series}"
            );
        }
        Scrape(samples)
    }

    /// The value of a series that must be there.
    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing from {:#?}", self.0))
    }

    /// How much a series grew since `before`.
    fn delta(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

/// `GET /metrics` with an optional `Authorization` header: its status, headers and body.
async fn get_metrics(url: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("/metrics answers")
}

/// A successful scrape of `url`, parsed.
async fn scrape_url(url: &str, authorization: Option<&str>) -> Scrape {
    let response = get_metrics(url, authorization).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(&response.text().await.expect("body"))
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_url(&app.url(), None).await
}

/// Scrapes until `ok` holds (figures of a disconnect settle a moment after it).
async fn scrape_until(app: &TestApp, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let scrape = scrape(app).await;
        if ok(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what}: {scrape:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RELAYED_OFFER: &str = r#"broadcast_relayed_total{event="offer"}"#;
const RELAYED_ANSWER: &str = r#"broadcast_relayed_total{event="answer"}"#;
const RELAYED_ICE: &str = r#"broadcast_relayed_total{event="ice_candidate"}"#;
const LIVE: &str = r#"broadcast_channels{state="live"}"#;
const STOPPED: &str = r#"broadcast_channels{state="stopped"}"#;
const HELD: &str = r#"broadcast_channels{state="held"}"#;
const WEBSOCKET: &str = r#"broadcast_sockets{transport="websocket"}"#;
const POLLING: &str = r#"broadcast_sockets{transport="polling"}"#;

fn refusals(reason: &str) -> String {
    format!(r#"broadcast_refusals_total{{reason="{reason}"}}"#)
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_series_from_the_start() {
    let app = spawn_app(&[]).await;
    let first = scrape(&app).await;
    for series in [
        RELAYED_OFFER,
        RELAYED_ANSWER,
        RELAYED_ICE,
        "broadcast_resumes_total",
        "broadcast_takeovers_total",
        "broadcast_turn_credentials_total",
        "broadcast_webhooks_delivered_total",
        "broadcast_webhooks_failed_total",
        "broadcast_webhooks_dropped_total",
        r#"broadcast_channel_viewers_bucket{le="+Inf"}"#,
        "broadcast_channel_viewers_sum",
        r#"broadcast_relay_tree_depth_bucket{le="+Inf"}"#,
        "broadcast_relay_tree_depth_count",
    ] {
        first.get(series);
    }
    for reason in [
        "invalid",
        "rate_limited",
        "taken",
        "capacity",
        "quota",
        "not_found",
        "forbidden",
        "not_peers",
        "wrong_password",
        "unavailable",
        "undelivered",
        "other",
    ] {
        first.get(&refusals(reason));
    }
    for action in [
        "remove",
        "ban",
        "unban_all",
        "mute",
        "unmute",
        "remove_message",
        "chat_settings",
    ] {
        first.get(&format!(
            r#"broadcast_moderation_actions_total{{action="{action}"}}"#
        ));
    }
    // This server's own figures: nothing yet.
    for series in [
        WEBSOCKET,
        POLLING,
        LIVE,
        STOPPED,
        HELD,
        "broadcast_channel_viewers_count",
    ] {
        assert_eq!(first.get(series), 0.0, "{series}");
    }
    let text = get_metrics(&app.url(), None)
        .await
        .text()
        .await
        .expect("body");
    for line in [
        "# TYPE broadcast_relayed_total counter",
        "# TYPE broadcast_sockets gauge",
        "# TYPE broadcast_channels gauge",
        "# TYPE broadcast_channel_viewers histogram",
        "# TYPE broadcast_relay_tree_depth histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("# HELP broadcast_refusals_total ")),
        "counters are described:\n{text}"
    );
}

#[tokio::test]
async fn metrics_follow_relays_refusals_and_channel_states() {
    let app = spawn_app(&[]).await;
    let before = scrape(&app).await;
    let (mut broadcaster, mut viewer) = channel_with_viewer(&app, "metered").await;

    broadcaster.emit(
        "offer",
        json!({"target": viewer.sid, "sdp": sample_sdp("offer")}),
    );
    viewer.expect("offer").await;
    viewer.emit(
        "answer",
        json!({"target": broadcaster.sid, "sdp": sample_sdp("answer")}),
    );
    broadcaster.expect("answer").await;
    viewer.emit(
        "ice_candidate",
        json!({"target": broadcaster.sid, "candidate": sample_candidate()}),
    );
    broadcaster.expect("ice_candidate").await;
    // Refusals: the channel is taken, a relay to a stranger, an unknown channel, a bad payload.
    let mut other = app.client().await;
    other.emit("join_as_broadcaster", json!({"channel_id": "metered"}));
    other
        .expect_error("Channel metered already has a broadcaster")
        .await;
    other.emit(
        "offer",
        json!({"target": viewer.sid, "sdp": sample_sdp("offer")}),
    );
    other.expect_relay_error("offer").await;
    other.emit("join_as_viewer", json!({"channel_id": "nowhere"}));
    other
        .expect_error("Channel nowhere not found or expired")
        .await;
    other.emit("join_as_viewer", json!({"channel_id": 5}));
    other.expect_error_prefix("Invalid data").await;

    let after = scrape(&app).await;
    for series in [RELAYED_OFFER, RELAYED_ANSWER, RELAYED_ICE] {
        assert!(after.delta(&before, series) >= 1.0, "{series}");
    }
    for reason in ["taken", "not_peers", "not_found", "invalid"] {
        assert!(after.delta(&before, &refusals(reason)) >= 1.0, "{reason}");
    }
    // This server's own state, exactly.
    assert_eq!(after.get(LIVE), 1.0);
    assert_eq!(after.get(STOPPED), 0.0);
    assert_eq!(after.get(HELD), 0.0);
    assert_eq!(after.get(WEBSOCKET), 3.0);
    assert_eq!(after.get(POLLING), 0.0);
    assert_eq!(after.get("broadcast_channel_viewers_count"), 1.0);
    assert_eq!(after.get("broadcast_channel_viewers_sum"), 1.0);
    assert_eq!(
        after.get(r#"broadcast_channel_viewers_bucket{le="0"}"#),
        0.0
    );
    assert_eq!(
        after.get(r#"broadcast_channel_viewers_bucket{le="1"}"#),
        1.0
    );
    assert_eq!(after.get("broadcast_relay_tree_depth_count"), 1.0);

    broadcaster.emit("stop_broadcast", json!({"channel_id": "metered"}));
    viewer.expect("broadcaster_stopped").await;
    let stopped = scrape(&app).await;
    assert_eq!(stopped.get(LIVE), 0.0);
    assert_eq!(stopped.get(STOPPED), 1.0);

    for client in [&broadcaster, &viewer, &other] {
        client.close();
    }
    scrape_until(&app, "sockets and channels gone", |s| {
        s.get(WEBSOCKET) == 0.0 && s.get(STOPPED) == 0.0 && s.get(LIVE) == 0.0
    })
    .await;
}

#[tokio::test]
async fn metrics_count_resumes_takeovers_and_held_channels() {
    let app = spawn_app(&[]).await;
    let before = scrape(&app).await;
    let mut first = app.client().await;
    first.emit(
        "join_as_broadcaster",
        json!({"channel_id": "again", "resume": true}),
    );
    let token = first.expect("broadcaster_ready").await["resume_token"].clone();
    first.close();
    let held = scrape_until(&app, "the channel is held", |s| s.get(HELD) == 1.0).await;
    assert_eq!(held.get(LIVE), 0.0);

    let mut second = app.client().await;
    second.emit(
        "join_as_broadcaster",
        json!({"channel_id": "again", "resume_token": token}),
    );
    let token = second.expect("broadcaster_ready").await["resume_token"].clone();
    second.expect("viewer_count").await;
    let resumed = scrape(&app).await;
    assert!(resumed.delta(&before, "broadcast_resumes_total") >= 1.0);
    assert_eq!(resumed.get(LIVE), 1.0);
    assert_eq!(resumed.get(HELD), 0.0);

    let mut third = app.client().await;
    third.emit(
        "join_as_broadcaster",
        json!({"channel_id": "again", "force": true, "resume_token": token}),
    );
    third.expect("broadcaster_ready").await;
    second.expect("broadcaster_replaced").await;
    let taken_over = scrape(&app).await;
    assert!(taken_over.delta(&before, "broadcast_takeovers_total") >= 1.0);
    assert_eq!(taken_over.get(LIVE), 1.0);
}

#[tokio::test]
async fn metrics_count_polling_sockets_and_turn_credentials() {
    let app = spawn_app(&[
        "--turn-urls",
        "turn:turn.example.test:3478",
        "--turn-secret",
        "metrics-test-secret",
    ])
    .await;
    let before = scrape(&app).await;
    let mut polling = Polling::open(&app).await;
    polling.post(&["40".to_owned()]).await;
    polling.expect("client_id").await;
    let mut websocket = app.client().await;
    let counted = scrape(&app).await;
    assert_eq!(counted.get(POLLING), 1.0);
    assert_eq!(counted.get(WEBSOCKET), 1.0);

    let answer = reqwest::get(format!("{}/ice-servers", app.url()))
        .await
        .expect("/ice-servers answers");
    assert_eq!(answer.status(), 200);
    let after = scrape(&app).await;
    assert!(after.delta(&before, "broadcast_turn_credentials_total") >= 1.0);

    polling.close().await;
    websocket.close();
    websocket.expect_closed().await;
    scrape_until(&app, "both sockets gone", |s| {
        s.get(POLLING) == 0.0 && s.get(WEBSOCKET) == 0.0
    })
    .await;
}

#[tokio::test]
async fn metrics_token_gates_the_endpoint() {
    const TOKEN: &str = "m3trics-T0ken_for.tests";
    let app = spawn_app(&["--metrics-token", TOKEN]).await;
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer m3trics-T0ken_for.test"),
        Some("Basic bTN0cmljcy1UMGtlbl9mb3IudGVzdHM="),
        Some(TOKEN),
    ] {
        let response = get_metrics(&app.url(), authorization).await;
        assert_eq!(response.status(), 401, "{authorization:?}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("broadcast_"), "no metric leaks: {body}");
        assert!(!body.contains(TOKEN), "{body}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let scrape = scrape_url(&app.url(), Some(&bearer)).await;
    scrape.get(RELAYED_OFFER);
    scrape.get(LIVE);
    // The rest of the server is not behind the token.
    let health = reqwest::get(format!("{}/healthz", app.url()))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    // Without the flag the endpoint is open (every other test scrapes without a header).
    let open = spawn_app(&[]).await;
    assert_eq!(get_metrics(&open.url(), None).await.status(), 200);
}

/// Cluster mode: every node reports the channels of the whole deployment and its own sockets
/// and counters (each node a process of its own, so counts are exact here).
#[tokio::test]
async fn metrics_in_cluster_mode_cover_the_deployment() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut broadcaster = a.client().await;
    broadcaster.emit("join_as_broadcaster", json!({"channel_id": "spread"}));
    broadcaster.expect("broadcaster_ready").await;
    let mut viewer = b.client().await;
    viewer.emit("join_as_viewer", json!({"channel_id": "spread"}));
    viewer.expect("broadcaster_available").await;
    broadcaster.expect("viewer_count").await;
    broadcaster.emit(
        "offer",
        json!({"target": viewer.sid, "sdp": sample_sdp("offer")}),
    );
    viewer.expect("offer").await;

    let on_a = scrape_url(&a.url(), None).await;
    let on_b = scrape_url(&b.url(), None).await;
    for (node, scrape) in [("a", &on_a), ("b", &on_b)] {
        assert_eq!(scrape.get(LIVE), 1.0, "node {node}");
        assert_eq!(
            scrape.get("broadcast_channel_viewers_sum"),
            1.0,
            "node {node}"
        );
        assert_eq!(scrape.get(WEBSOCKET), 1.0, "node {node}: its own socket");
    }
    // The relay is counted where its sender is connected.
    assert_eq!(on_a.get(RELAYED_OFFER), 1.0);
    assert_eq!(on_b.get(RELAYED_OFFER), 0.0);
    cluster.teardown(vec![broadcaster, viewer]).await;
}
