//! `GET /metrics` in Prometheus's text format, and every metric's name and meaning.
//!
//! Two kinds of figures, kept apart on purpose:
//!
//! - **What happened** (counters: relays, refusals, resumes, takeovers, TURN credentials) lives
//!   in the `metrics` crate's Prometheus recorder. It is one per process, built once; call sites
//!   elsewhere are one line (`metrics::relayed(kind)`, `metrics::refused(reason)`), and the
//!   handles are registered up front so that every series shows (at 0) from the first scrape.
//! - **How things stand** (sockets by transport, channels by state, viewers and relay-tree depth
//!   per channel) is computed from the server's own state at each scrape and written after the
//!   recorder's part. A global gauge could not do that: several servers in one process (the
//!   integration tests) would overwrite each other's values, and when the census fails (cluster
//!   mode, Redis away) the series should go missing, not repeat the last value forever.
//!
//! `--metrics-token` guards the endpoint with `Authorization: Bearer <token>`.

use std::fmt::Write as _;
use std::sync::{Arc, Once, OnceLock};

use ::metrics::{Counter, Key, Label, Recorder as _};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use sha2::{Digest, Sha256};
use socketioxide::adapter::Adapter;
use socketioxide::{SocketIo, TransportType};
use subtle::ConstantTimeEq;

use crate::channels::Registry;
use crate::config::MetricsToken;
use crate::registry::broadcaster::BroadcastStarted;
use crate::registry::errors::ErrorCode;
use crate::registry::listing::Census;
use crate::registry::relay::RelayKind;

pub const RELAYED: &str = "broadcast_relayed_total";
pub const REFUSALS: &str = "broadcast_refusals_total";
pub const RESUMES: &str = "broadcast_resumes_total";
pub const TAKEOVERS: &str = "broadcast_takeovers_total";
pub const TURN_CREDENTIALS: &str = "broadcast_turn_credentials_total";
pub const WEBHOOKS_DELIVERED: &str = "broadcast_webhooks_delivered_total";
pub const WEBHOOKS_FAILED: &str = "broadcast_webhooks_failed_total";
pub const WEBHOOKS_DROPPED: &str = "broadcast_webhooks_dropped_total";
pub const MODERATION: &str = "broadcast_moderation_actions_total";
pub const SOCKETS: &str = "broadcast_sockets";
pub const CHANNELS: &str = "broadcast_channels";
pub const CHANNEL_VIEWERS: &str = "broadcast_channel_viewers";
pub const TREE_DEPTH: &str = "broadcast_relay_tree_depth";

/// Bucket bounds of [`CHANNEL_VIEWERS`] (`+Inf` is added).
const VIEWER_BUCKETS: [usize; 14] = [
    0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000,
];
/// Bucket bounds of [`TREE_DEPTH`]: one per level where trees are (a fan-out of 2 reaches a
/// thousand viewers in ten levels), coarser beyond.
const DEPTH_BUCKETS: [usize; 13] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20];

/// Why an event was refused: the `reason` label of [`REFUSALS`]. A fixed, small set, so the
/// series stay few whatever clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The payload failed decoding or validation.
    Invalid,
    /// Over a rate limit (events, relays to one peer).
    RateLimited,
    /// The channel already has a broadcaster.
    Taken,
    /// The server is full (`--max-channels`, the waiting room).
    Capacity,
    /// Over a per-socket or per-address limit (channels, connections).
    Quota,
    /// No such channel.
    NotFound,
    /// The caller's role does not allow it (not a viewer, not the broadcaster).
    Forbidden,
    /// A relay to a socket that is not the sender's peer.
    NotPeers,
    /// A private channel's password was missing or wrong, or its invitation invalid.
    WrongPassword,
    /// Cluster mode: the shared store cannot be reached.
    Unavailable,
    /// A relay's target stopped reading; the message was lost.
    Undelivered,
    /// Anything else (a server-side failure).
    Other,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Invalid,
        Reason::RateLimited,
        Reason::Taken,
        Reason::Capacity,
        Reason::Quota,
        Reason::NotFound,
        Reason::Forbidden,
        Reason::NotPeers,
        Reason::WrongPassword,
        Reason::Unavailable,
        Reason::Undelivered,
        Reason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::RateLimited => "rate_limited",
            Reason::Taken => "taken",
            Reason::Capacity => "capacity",
            Reason::Quota => "quota",
            Reason::NotFound => "not_found",
            Reason::Forbidden => "forbidden",
            Reason::NotPeers => "not_peers",
            Reason::WrongPassword => "wrong_password",
            Reason::Unavailable => "unavailable",
            Reason::Undelivered => "undelivered",
            Reason::Other => "other",
        }
    }
}

impl From<ErrorCode> for Reason {
    /// Exhaustive on purpose: a new code must be given its reason here. The reasons are
    /// coarser than the codes (the series stay few, and dashboards keep their labels).
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::ChannelTaken => Reason::Taken,
            ErrorCode::AtCapacity | ErrorCode::WaitingRoomFull => Reason::Capacity,
            ErrorCode::ChannelNotFound => Reason::NotFound,
            ErrorCode::TooManyChannels | ErrorCode::TooManyFromAddress => Reason::Quota,
            ErrorCode::NotAViewer
            | ErrorCode::NotTheBroadcaster
            | ErrorCode::NotPrivate
            | ErrorCode::ViewerNotFound
            | ErrorCode::Banned
            | ErrorCode::Removed
            | ErrorCode::Muted
            | ErrorCode::SlowMode
            | ErrorCode::ChatOff
            | ErrorCode::TooManyBans => Reason::Forbidden,
            ErrorCode::NotPeers => Reason::NotPeers,
            // A refused invitation is a refused credential too.
            ErrorCode::PasswordRequired | ErrorCode::WrongPassword | ErrorCode::InvalidInvite => {
                Reason::WrongPassword
            }
            ErrorCode::InvalidPayload => Reason::Invalid,
            ErrorCode::RateLimited => Reason::RateLimited,
            ErrorCode::Undelivered => Reason::Undelivered,
            ErrorCode::Unavailable => Reason::Unavailable,
            ErrorCode::InternalError => Reason::Other,
        }
    }
}

/// The process's recorder: built once, whatever the number of servers.
fn recorder() -> &'static PrometheusRecorder {
    static RECORDER: OnceLock<PrometheusRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| PrometheusBuilder::new().build_recorder())
}

/// The counters, registered on [`recorder`] directly (not through the global recorder), so
/// they count even when the embedding program installed a recorder of its own.
struct Counters {
    relayed: [Counter; 3],
    refusals: [Counter; Reason::ALL.len()],
    resumes: Counter,
    takeovers: Counter,
    turn_credentials: Counter,
    webhooks_delivered: Counter,
    webhooks_failed: Counter,
    webhooks_dropped: Counter,
    moderation: [Counter; ModerationAction::ALL.len()],
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let recorder = recorder();
        let describe = |name: &'static str, text: &'static str| {
            recorder.describe_counter(name.into(), None, text.into());
        };
        describe(
            RELAYED,
            "Signaling messages relayed between a broadcaster and its viewers, by event.",
        );
        describe(REFUSALS, "Events and connections refused, by reason.");
        describe(
            RESUMES,
            "Broadcasters that came back to their held channel with its resume token.",
        );
        describe(
            TAKEOVERS,
            "Live broadcasts taken over by another connection holding the resume token.",
        );
        describe(
            TURN_CREDENTIALS,
            "TURN credentials minted for GET /ice-servers.",
        );
        describe(
            WEBHOOKS_DELIVERED,
            "Webhook events the receiver accepted (a 2xx answer).",
        );
        describe(
            WEBHOOKS_FAILED,
            "Webhook events given up on: refused (4xx other than 429), or failing every attempt.",
        );
        describe(
            MODERATION,
            "Moderation actions broadcasters took in their channels, by action.",
        );
        describe(
            WEBHOOKS_DROPPED,
            "Webhook events never sent: the queue was full, or the server stopped first.",
        );
        let counter = |name: &'static str, label: Option<(&'static str, &'static str)>| {
            let labels: Vec<Label> = label.map(|(k, v)| Label::new(k, v)).into_iter().collect();
            let metadata = ::metrics::Metadata::new(
                module_path!(),
                ::metrics::Level::INFO,
                Some(module_path!()),
            );
            recorder.register_counter(&Key::from_parts(name, labels), &metadata)
        };
        let relayed = RelayKind::ALL.map(|kind| counter(RELAYED, Some(("event", kind.event()))));
        Counters {
            relayed,
            refusals: Reason::ALL.map(|reason| counter(REFUSALS, Some(("reason", reason.label())))),
            resumes: counter(RESUMES, None),
            takeovers: counter(TAKEOVERS, None),
            turn_credentials: counter(TURN_CREDENTIALS, None),
            webhooks_delivered: counter(WEBHOOKS_DELIVERED, None),
            webhooks_failed: counter(WEBHOOKS_FAILED, None),
            webhooks_dropped: counter(WEBHOOKS_DROPPED, None),
            moderation: ModerationAction::ALL
                .map(|action| counter(MODERATION, Some(("action", action.label())))),
        }
    })
}

/// The handle `/metrics` renders from. The first call installs the recorder as the process's
/// global one (so that metrics recorded by libraries land there too), unless a global recorder
/// is already installed: then ours still counts everything of this module, and only the
/// libraries' metrics go to the other one.
pub fn handle() -> PrometheusHandle {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if ::metrics::set_global_recorder(recorder()).is_err() {
            tracing::info!(
                "another metrics recorder is installed; /metrics shows this server's metrics only"
            );
        }
    });
    // Registers the counters, so that they render before anything has happened.
    counters();
    recorder().handle()
}

/// A signaling message was handed on to its target.
pub fn relayed(kind: RelayKind) {
    let index = match kind {
        RelayKind::Offer => 0,
        RelayKind::Answer => 1,
        RelayKind::IceCandidate => 2,
    };
    counters().relayed[index].increment(1);
}

/// An event or a connection was refused.
pub fn refused(reason: Reason) {
    if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
        counters().refusals[i].increment(1);
    }
}

/// A broadcaster went live: counts it if it resumed its held channel or took one over.
pub fn broadcast_started(started: &BroadcastStarted) {
    if started.resumed {
        counters().resumes.increment(1);
    }
    if started.replaced.is_some() {
        counters().takeovers.increment(1);
    }
}

/// A TURN credential was minted.
pub fn turn_credential_minted() {
    counters().turn_credentials.increment(1);
}

/// A broadcaster's moderation action (EXTENSIONS.md, "Moderation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModerationAction {
    Remove,
    Ban,
    UnbanAll,
    Mute,
    Unmute,
    RemoveMessage,
    ChatSettings,
}

impl ModerationAction {
    pub const ALL: [ModerationAction; 7] = [
        ModerationAction::Remove,
        ModerationAction::Ban,
        ModerationAction::UnbanAll,
        ModerationAction::Mute,
        ModerationAction::Unmute,
        ModerationAction::RemoveMessage,
        ModerationAction::ChatSettings,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ModerationAction::Remove => "remove",
            ModerationAction::Ban => "ban",
            ModerationAction::UnbanAll => "unban_all",
            ModerationAction::Mute => "mute",
            ModerationAction::Unmute => "unmute",
            ModerationAction::RemoveMessage => "remove_message",
            ModerationAction::ChatSettings => "chat_settings",
        }
    }
}

/// A broadcaster took a moderation action.
pub fn moderated(action: ModerationAction) {
    if let Some(i) = ModerationAction::ALL.iter().position(|a| *a == action) {
        counters().moderation[i].increment(1);
    }
}

/// What became of a webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Delivered,
    Failed,
    Dropped,
}

/// Webhook events that were delivered, given up on, or dropped.
pub fn webhooks(outcome: WebhookOutcome, count: u64) {
    let counters = counters();
    let counter = match outcome {
        WebhookOutcome::Delivered => &counters.webhooks_delivered,
        WebhookOutcome::Failed => &counters.webhooks_failed,
        WebhookOutcome::Dropped => &counters.webhooks_dropped,
    };
    counter.increment(count);
}

/// Sockets of this node by transport, at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SocketCounts {
    pub polling: usize,
    pub websocket: usize,
}

/// Counts this node's sockets when called (the HTTP side cannot name the adapter's type).
pub type Sockets = Arc<dyn Fn() -> SocketCounts + Send + Sync>;

/// [`Sockets`] of a Socket.IO server: its local sockets, by their transport now (a long-polling
/// client that upgraded counts as WebSocket).
pub fn sockets_of<A: Adapter>(io: &SocketIo<A>) -> Sockets {
    let io = io.clone();
    Arc::new(move || {
        let mut counts = SocketCounts::default();
        let Some(namespace) = io.of("/") else {
            return counts;
        };
        for socket in namespace.local().sockets() {
            match socket.transport_type() {
                TransportType::Polling => counts.polling += 1,
                TransportType::Websocket => counts.websocket += 1,
            }
        }
        counts
    })
}

/// What `/metrics` needs.
#[derive(Clone)]
struct Endpoint {
    handle: PrometheusHandle,
    registry: Registry,
    sockets: Sockets,
    gate: Gate,
}

/// Who may read `/metrics`: anybody, or holders of the token.
#[derive(Clone)]
struct Gate {
    /// SHA-256 of the token: comparing digests takes the same time whatever the length of what
    /// a client presents.
    token: Option<[u8; 32]>,
}

impl Gate {
    fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(expected).into()
    }
}

/// The `/metrics` route, to merge into the app's router.
pub fn router<S: Clone + Send + Sync + 'static>(
    token: Option<&MetricsToken>,
    registry: Registry,
    sockets: Sockets,
) -> Router<S> {
    let endpoint = Endpoint {
        handle: handle(),
        registry,
        sockets,
        gate: Gate::new(token.map(MetricsToken::expose)),
    };
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(endpoint)
}

/// Prometheus's text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn scrape(State(endpoint): State<Endpoint>, headers: HeaderMap) -> Response {
    if !endpoint.gate.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metrics\""),
            )],
            "/metrics needs Authorization: Bearer <the --metrics-token>\n",
        )
            .into_response();
    }
    let census = match endpoint.registry.census().await {
        Ok(census) => Some(census),
        Err(e) => {
            tracing::warn!("/metrics without channel figures: {e}");
            None
        }
    };
    let mut body = endpoint.handle.render();
    render_state(&mut body, (endpoint.sockets)(), census.as_ref());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

/// Appends how things stand now: sockets, and without a census (Redis away) nothing about
/// channels, so those series go stale instead of repeating old values.
fn render_state(out: &mut String, sockets: SocketCounts, census: Option<&Census>) {
    family(
        out,
        SOCKETS,
        "gauge",
        "Socket.IO connections of this node, by transport.",
    );
    sample(out, SOCKETS, &[("transport", "polling")], sockets.polling);
    sample(
        out,
        SOCKETS,
        &[("transport", "websocket")],
        sockets.websocket,
    );
    let Some(census) = census else {
        return;
    };
    family(
        out,
        CHANNELS,
        "gauge",
        "Channels by state (cluster mode: of the whole deployment).",
    );
    for (state, count) in [
        ("live", census.live),
        ("stopped", census.stopped),
        ("held", census.held),
    ] {
        sample(out, CHANNELS, &[("state", state)], count);
    }
    histogram(
        out,
        CHANNEL_VIEWERS,
        "Viewers per channel, over the channels open now (recomputed at each scrape: use histogram_quantile on it directly, not on rate()).",
        &VIEWER_BUCKETS,
        &census.viewers,
    );
    histogram(
        out,
        TREE_DEPTH,
        "Relay tree depth per channel (0: no viewers, 1: every viewer fed by the broadcaster), over the channels open now (recomputed at each scrape).",
        &DEPTH_BUCKETS,
        &census.tree_depths,
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line; label values here are fixed words, never client data (nothing to escape).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: usize) {
    out.push_str(name);
    if !labels.is_empty() {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = write!(out, "{{{}}}", labels.join(","));
    }
    let _ = writeln!(out, " {value}");
}

/// A histogram of `values` with cumulative buckets `le` (and `+Inf`), `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[usize], values: &[usize]) {
    family(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for bound in bounds {
        let count = values.iter().filter(|v| **v <= *bound).count();
        sample(out, &bucket, &[("le", &bound.to_string())], count);
    }
    sample(out, &bucket, &[("le", "+Inf")], values.len());
    sample(out, &format!("{name}_sum"), &[], values.iter().sum());
    sample(out, &format!("{name}_count"), &[], values.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_snake_case_labels() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn codes_map_to_their_reasons() {
        assert_eq!(Reason::from(ErrorCode::AtCapacity), Reason::Capacity);
        assert_eq!(Reason::from(ErrorCode::NotPeers), Reason::NotPeers);
        assert_eq!(Reason::from(ErrorCode::ChannelNotFound), Reason::NotFound);
        assert_eq!(
            Reason::from(ErrorCode::PasswordRequired),
            Reason::WrongPassword
        );
        assert_eq!(Reason::from(ErrorCode::RateLimited), Reason::RateLimited);
        assert_eq!(Reason::from(ErrorCode::InternalError), Reason::Other);
    }

    #[test]
    fn state_renders_as_prometheus_text() {
        let census = Census {
            live: 2,
            stopped: 1,
            held: 0,
            viewers: vec![0, 3, 12],
            tree_depths: vec![0, 1, 2],
        };
        let mut out = String::new();
        render_state(
            &mut out,
            SocketCounts {
                polling: 1,
                websocket: 4,
            },
            Some(&census),
        );
        for line in [
            "# TYPE broadcast_sockets gauge",
            "broadcast_sockets{transport=\"polling\"} 1",
            "broadcast_sockets{transport=\"websocket\"} 4",
            "broadcast_channels{state=\"live\"} 2",
            "broadcast_channels{state=\"stopped\"} 1",
            "broadcast_channels{state=\"held\"} 0",
            "# TYPE broadcast_channel_viewers histogram",
            "broadcast_channel_viewers_bucket{le=\"0\"} 1",
            "broadcast_channel_viewers_bucket{le=\"2\"} 1",
            "broadcast_channel_viewers_bucket{le=\"5\"} 2",
            "broadcast_channel_viewers_bucket{le=\"20\"} 3",
            "broadcast_channel_viewers_bucket{le=\"+Inf\"} 3",
            "broadcast_channel_viewers_sum 15",
            "broadcast_channel_viewers_count 3",
            "broadcast_relay_tree_depth_bucket{le=\"1\"} 2",
            "broadcast_relay_tree_depth_count 3",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
    }

    #[test]
    fn without_a_census_only_sockets_show() {
        let mut out = String::new();
        render_state(&mut out, SocketCounts::default(), None);
        assert!(out.contains("broadcast_sockets{transport=\"websocket\"} 0"));
        assert!(!out.contains(CHANNELS), "{out}");
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn the_token_is_a_bearer_token() {
        assert!(
            Gate::new(None).authorized(&HeaderMap::new()),
            "open without a token"
        );
        let guarded = Gate::new(Some("s3cret"));
        assert!(!guarded.authorized(&HeaderMap::new()));
        assert!(guarded.authorized(&with_authorization("Bearer s3cret")));
        assert!(guarded.authorized(&with_authorization("bearer s3cret")));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer",
            "Bearer ",
        ] {
            assert!(!guarded.authorized(&with_authorization(wrong)), "{wrong}");
        }
    }

    #[test]
    fn the_token_is_kept_out_of_help_and_debug() {
        let arg = <crate::config::Config as clap::CommandFactory>::command()
            .get_arguments()
            .find(|a| a.get_id() == "metrics_token")
            .map(|a| a.is_hide_env_values_set());
        assert_eq!(arg, Some(true));
        let config = crate::config::Config::try_load_from([
            "broadcast-server",
            "--metrics-token",
            "s3cret-token",
        ])
        .expect("valid");
        assert!(config.metrics_token.is_some());
        assert!(!format!("{config:?}").contains("s3cret-token"));
        for bad in ["", "with space", "tab\tbed", "é"] {
            let err =
                crate::config::Config::try_load_from(["broadcast-server", "--metrics-token", bad])
                    .expect_err(bad)
                    .to_string();
            assert!(
                err.contains("--metrics-token (METRICS_TOKEN) must be"),
                "{err}"
            );
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }

    #[test]
    fn counters_render_from_the_start() {
        let text = handle().render();
        for line in [
            "broadcast_relayed_total{event=\"ice_candidate\"}",
            "broadcast_refusals_total{reason=\"wrong_password\"}",
            "broadcast_resumes_total",
            "broadcast_takeovers_total",
            "broadcast_turn_credentials_total",
            "broadcast_webhooks_delivered_total",
            "broadcast_webhooks_failed_total",
            "broadcast_webhooks_dropped_total",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{line} "))),
                "{line} missing from:\n{text}"
            );
        }
    }
}
