//! Configuration: one typed struct from flags with environment fallbacks, validated at start.
//! Defaults are the earlier server's, so `broadcast-server` with no arguments behaves like it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use serde_json::Value;

use crate::telemetry::LogFormat;

/// STUN servers the earlier page used; no TURN (the server does no media work).
pub const DEFAULT_ICE_SERVERS: &str =
    r#"[{"urls":"stun:stun.l.google.com:19302"},{"urls":"stun:stun1.l.google.com:19302"}]"#;

#[derive(Debug, Clone, Parser)]
#[command(name = "broadcast-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one). `PORT` is honoured as hosting platforms set it.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Seconds without signaling activity after which a channel that is not live is removed.
    #[arg(long, env = "CHANNEL_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub channel_ttl_secs: u64,

    /// Most channels at once; beyond it new channels are refused (never evicted).
    #[arg(long, env = "MAX_CHANNELS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_channels: u64,

    /// Allowed browser origins for Socket.IO (polling and WebSocket), comma-separated;
    /// `*` allows any, as the earlier server did.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*", value_delimiter = ',',
          value_parser = parse_origin)]
    pub cors_origins: Vec<Origin>,

    /// Sites that may show the embeds (`/embed/<channel_id>`, the player, and
    /// `/embed/<channel_id>/chat`) in a frame, comma-separated origins such as
    /// `https://blog.example.com` (scheme, host and optional port; no path, no wildcard). The
    /// server's own pages may always frame them; the main page is never framed.
    #[arg(long, env = "EMBED_ORIGINS", value_delimiter = ',', value_parser = parse_embed_origin)]
    pub embed_origins: Vec<EmbedOrigin>,

    /// ICE servers handed to the served page, as a JSON array of RTCIceServer objects
    /// (`[]` = host candidates only, e.g. for a LAN or tests).
    #[arg(long, env = "ICE_SERVERS", default_value = DEFAULT_ICE_SERVERS,
          value_parser = parse_ice_servers)]
    pub ice_servers: IceServers,

    /// TURN servers to hand the page with time-limited credentials minted per request (coturn's
    /// `use-auth-secret`), comma-separated `turn:host[:port][?transport=udp|tcp]` or `turns:…`
    /// URLs. Needs `--turn-secret`.
    #[arg(long, env = "TURN_URLS", value_delimiter = ',', value_parser = parse_turn_url)]
    pub turn_urls: Vec<String>,

    /// The secret shared with the TURN server (coturn's `static-auth-secret`), which signs the
    /// credentials. Needs `--turn-urls`. Prefer the environment variable: a command line is
    /// visible to every user of the machine. (Its value is kept out of `--help`, logs and
    /// error messages.)
    #[arg(long, env = "TURN_SECRET", hide_env_values = true, value_parser = TurnSecretParser)]
    pub turn_secret: Option<TurnSecret>,

    /// Seconds a minted TURN credential stays valid (the page fetches new ones before then).
    #[arg(long, env = "TURN_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub turn_ttl_secs: u64,

    /// PEM certificate chain; with `--tls-key`, serves HTTPS (browsers only allow camera access
    /// on other devices over HTTPS).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log output format; the level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Bearer token `GET /metrics` requires (`Authorization: Bearer <token>`); without it the
    /// endpoint is open. Prefer the environment variable: a command line is visible to every
    /// user of the machine. (Its value is kept out of `--help`, logs and error messages.)
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true, value_parser = MetricsTokenParser)]
    pub metrics_token: Option<MetricsToken>,

    /// Serve the page's static files from this directory instead of the copy built into the
    /// binary: for development, so edits show on reload without a rebuild.
    #[arg(long, env = "ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,

    /// Seconds to let in-flight requests finish on SIGTERM/SIGINT before closing.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Relay tree: viewers the broadcaster feeds directly (D) before viewers relay to each
    /// other; legacy viewers count and are always fed directly.
    #[arg(long, env = "RELAY_DIRECT", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub relay_direct: u64,

    /// Relay tree: viewers one relaying viewer feeds (F); 0 turns the tree off server-wide
    /// (every viewer fed by the broadcaster).
    #[arg(long, env = "RELAY_FANOUT", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    pub relay_fanout: u64,

    /// Relay tree: milliseconds a viewer waits for a relay with room before the broadcaster
    /// feeds it anyway (over D).
    #[arg(long, env = "RELAY_WAIT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub relay_wait_ms: u64,

    /// Seconds a channel is held for its broadcaster after its connection drops, when the
    /// broadcaster asked for it (`join_as_broadcaster {resume: true}`); 0 turns holding off.
    #[arg(long, env = "RESUME_GRACE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub resume_grace_secs: u64,

    /// Viewers that may wait (`join_as_viewer {wait: true}`) for one channel id that has no
    /// broadcaster yet.
    #[arg(long, env = "MAX_WAITING_PER_CHANNEL", default_value_t = 500)]
    pub max_waiting_per_channel: u64,

    /// Viewers that may wait in the whole waiting room (all channel ids together).
    #[arg(long, env = "MAX_WAITING", default_value_t = 10_000)]
    pub max_waiting: u64,

    /// Chat messages a channel keeps for viewers who join later (`chat_history`); 0 keeps
    /// none and sends no history.
    #[arg(long, env = "CHAT_HISTORY", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub chat_history: u64,

    /// A broadcaster's ban also holds the banned client's address, not only its client key
    /// and connection. Off by default: many people share one address behind a NAT or proxy.
    #[arg(long, env = "BAN_BY_ADDRESS", default_value_t = false)]
    pub ban_by_address: bool,

    /// Most open connections at once (capped below the process's open-file limit); beyond it
    /// a client gets `503 Service Unavailable` and the connection closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,

    /// Seconds a client may take to send a request's head; an idle keep-alive connection (not
    /// upgraded to WebSocket) is closed after the same time.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds a connection may accept no bytes at all from the server before it is closed
    /// (a client that stopped reading).
    #[arg(long, env = "WRITE_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,

    /// Packets queued for one client before it counts as not keeping up: the packet that does
    /// not fit is refused and the client is disconnected.
    #[arg(long, env = "MAX_QUEUED_PACKETS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_queued_packets: u64,

    /// Channels one connection may broadcast at once.
    #[arg(long, env = "MAX_CHANNELS_PER_SOCKET", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_channels_per_socket: u64,

    /// Channels broadcast from one client address at once.
    #[arg(long, env = "MAX_CHANNELS_PER_IP", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_channels_per_ip: u64,

    /// Socket.IO connections one client address may hold at once (0 = unlimited); over it the
    /// client gets `connect_error` "Too many connections from your network address…".
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u64,

    /// Load balancers or reverse proxies (addresses or CIDR blocks, comma-separated) whose
    /// `X-Forwarded-For` header names the client for per-address limits; from anybody else the
    /// header is ignored. `cloud-run` trusts Google Cloud Run's front end (set it on Cloud Run,
    /// where every request arrives through it; never elsewhere).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::client_addr::parse_proxy)]
    pub trusted_proxies: Vec<crate::client_addr::TrustedProxy>,

    /// Offers and answers one client may send to one peer per second (burst: twice that);
    /// over it the sender gets `relay_error`. 0 = unlimited.
    #[arg(long, env = "RATE_SDP", default_value_t = 5)]
    pub rate_sdp: u32,

    /// ICE candidates one client may send to one peer per second (burst: five times that, for
    /// the candidates a browser gathers at once).
    #[arg(long, env = "RATE_ICE", default_value_t = 20)]
    pub rate_ice: u32,

    /// Chat messages one client may send per second (burst: five times that); over it, `error`
    /// "Invalid message: too many requests…".
    #[arg(long, env = "RATE_CHAT", default_value_t = 2)]
    pub rate_chat: u32,

    /// Joins, alias, stop and relay-tree reports one client may send per second, together
    /// (burst: four times that); channel-list requests have a budget of their own at the same
    /// rate. Over it, `error` "Invalid data: too many requests…" ("Invalid alias:" for aliases).
    #[arg(long, env = "RATE_JOIN", default_value_t = 5)]
    pub rate_join: u32,

    /// Refused events per second (burst: ten times that) a client may collect before it is
    /// disconnected: a real page is never refused, a flood is.
    #[arg(long, env = "RATE_STRIKES", default_value_t = 5)]
    pub rate_strikes: u32,

    /// Cluster mode: the Redis (7 or later) that several nodes behind a load balancer share,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS (the certificate must
    /// be signed by a CA the system trusts or by one in `--redis-ca-cert`). Without it the
    /// server runs alone, in memory, as before. (Its value is kept out of `--help`: it may hold
    /// a password.)
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_parser = RedisUrlParser)]
    pub redis_url: Option<String>,

    /// Cluster mode over `rediss://`: a PEM file of CA certificates to trust for the Redis's
    /// certificate, besides the system's: for a Redis whose certificate a private CA signed
    /// (a managed Redis's own server CA, say). Read at start-up; only with `rediss://`, since
    /// `redis://` checks no certificate.
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Cluster mode over `rediss://` with `--redis-ca-cert`: trust that CA alone (not the
    /// system's) and accept its certificates whatever host name or address they name. For a
    /// managed Redis whose certificate names its address only in the common name, which TLS
    /// clients no longer read (Memorystore's, reportedly), and whose CA signs nothing else.
    #[arg(long, env = "REDIS_SKIP_HOSTNAME_CHECK")]
    pub redis_skip_hostname_check: bool,

    /// Cluster mode: prefix of every Redis key and pub/sub channel, so several deployments (or
    /// test runs) can share one Redis; every node of one deployment must use the same.
    #[arg(long, env = "REDIS_PREFIX", default_value = "broadcast", value_parser = parse_redis_prefix)]
    pub redis_prefix: String,

    /// Cluster mode: milliseconds between a node's heartbeats; the others notice a dead node
    /// within twice this (they then end its broadcasts and remove its viewers).
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub heartbeat_ms: u64,

    /// Transports clients may use: `polling,websocket` (long-polling first, then the upgrade,
    /// as the earlier server) or `websocket` (WebSocket only: for several nodes behind a load
    /// balancer without sticky sessions, which long-polling needs). The served page follows it.
    #[arg(long, env = "TRANSPORTS", default_value = "polling,websocket",
          value_parser = parse_transports)]
    pub transports: Transports,

    /// Webhooks: the `http://` or `https://` URL the server POSTs broadcast events to (started,
    /// stopped, resumed, ended), signed with `--webhook-secret`. Needs `--webhook-secret`.
    /// (Its value is kept out of `--help` and error messages: it may hold a token.)
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true, value_parser = WebhookUrlParser)]
    pub webhook_url: Option<WebhookUrl>,

    /// Webhooks: the secret that signs each request (`X-Broadcast-Signature`), shared with the
    /// receiver. Needs `--webhook-url`. Prefer the environment variable: a command line is
    /// visible to every user of the machine. (Its value is kept out of `--help`, logs and
    /// error messages.)
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, value_parser = WebhookSecretParser)]
    pub webhook_secret: Option<WebhookSecret>,

    /// The secret that signs invitations to private channels (`create_invite`), so that they
    /// survive a restart and every node of a cluster accepts any node's; without it each
    /// process draws a random one, and its invitations die with it (set it in cluster mode).
    /// Prefer the environment variable: a command line is visible to every user of the
    /// machine. (Its value is kept out of `--help`, logs and error messages.)
    #[arg(long, env = "INVITE_SECRET", hide_env_values = true, value_parser = InviteSecretParser)]
    pub invite_secret: Option<InviteSecret>,

    /// Probe a server running with this configuration on this host (`GET /livez` on `--host`,
    /// or loopback when it is 0.0.0.0 or ::, and `--port`) and exit 0 if it serves: a container
    /// health check without curl.
    #[arg(long)]
    pub healthcheck: bool,
}

/// Which Engine.IO transports the server accepts (and the served page uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transports {
    /// Long-polling first, then the WebSocket upgrade: the earlier server's behaviour, and what
    /// gets through proxies that block WebSocket. Several nodes need sticky sessions for it.
    PollingAndWebsocket,
    /// WebSocket only: each session is one connection, so any node can hold it and a load
    /// balancer needs no stickiness.
    WebsocketOnly,
}

impl Transports {
    /// The transports for `SocketIo::builder().transports(…)`. The builder takes an array and
    /// treats it as a set (the entries are OR-ed into a bit mask), so a repeated entry means
    /// that one transport alone.
    pub fn socketio(self) -> [socketioxide::TransportType; 2] {
        use socketioxide::TransportType::{Polling, Websocket};
        match self {
            Self::PollingAndWebsocket => [Polling, Websocket],
            Self::WebsocketOnly => [Websocket, Websocket],
        }
    }

    /// The socket.io-client `transports` option the page connects with, in order.
    pub fn client_names(self) -> &'static [&'static str] {
        match self {
            Self::PollingAndWebsocket => &["polling", "websocket"],
            Self::WebsocketOnly => &["websocket"],
        }
    }
}

/// One allowed origin, or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Any,
    Exact(HeaderValue),
}

/// One site allowed to frame the embeds: `scheme://host[:port]` as browsers serialize an origin
/// (lower case), ready for a `frame-ancestors` source list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedOrigin(String);

impl EmbedOrigin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `--embed-origins` entry. Strict, because the value goes into a security header: a path
/// would be ignored by browsers (and suggests a misunderstanding), a wildcard would let any
/// site frame the player, and a stray `;` or space would smuggle in another directive.
fn parse_embed_origin(s: &str) -> Result<EmbedOrigin, String> {
    let origin = s.trim();
    let invalid = |why: &str| {
        format!("embed origin `{origin}` must look like https://blog.example.com[:port] ({why})")
    };
    let (scheme, authority) = origin
        .split_once("://")
        .ok_or_else(|| invalid("scheme://host"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("http or https"));
    }
    if authority.contains('*') {
        return Err(invalid("no wildcards"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(invalid("no path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid("bad IPv6 address"))?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid("bad IPv6 address"))?;
        match after {
            "" => (authority, None),
            _ => (
                &authority[..addr.len() + 2],
                Some(after.strip_prefix(':').ok_or_else(|| invalid("bad port"))?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')));
    if !host_ok {
        return Err(invalid("bad host"));
    }
    if port.is_some_and(|p| {
        !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().map_or(true, |p| p == 0)
    }) {
        return Err(invalid("bad port"));
    }
    Ok(EmbedOrigin(origin.to_ascii_lowercase()))
}

/// Validated ICE server list, kept as JSON for the page.
#[derive(Debug, Clone, PartialEq)]
pub struct IceServers(pub Value);

fn parse_origin(s: &str) -> Result<Origin, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(Origin::Any);
    }
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("origin `{s}` must look like https://example.com[:port]"))?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "origin `{s}` must look like https://example.com[:port] (no path)"
        ));
    }
    HeaderValue::from_str(s)
        .map(Origin::Exact)
        .map_err(|_| format!("origin `{s}` is not a valid header value"))
}

fn parse_ice_servers(s: &str) -> Result<IceServers, String> {
    let value: Value =
        serde_json::from_str(s).map_err(|e| format!("ICE servers must be a JSON array: {e}"))?;
    let servers = value
        .as_array()
        .ok_or("ICE servers must be a JSON array of objects")?;
    for (i, server) in servers.iter().enumerate() {
        let urls = server
            .get("urls")
            .ok_or_else(|| format!("ICE server #{i} has no `urls`"))?;
        let ok = match urls {
            Value::String(u) => is_ice_url(u),
            Value::Array(list) => {
                !list.is_empty() && list.iter().all(|u| u.as_str().is_some_and(is_ice_url))
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "ICE server #{i}: `urls` must be stun:/stuns:/turn:/turns: URLs"
            ));
        }
    }
    Ok(IceServers(value))
}

/// The secret shared with the TURN server. Its `Debug` never shows it, so neither does a
/// logged or printed `Config`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(String);

impl TurnSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing credentials only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// Reads `--turn-secret` without ever quoting it in an error (clap quotes the value of a
/// failed function parser).
#[derive(Debug, Clone, Copy)]
struct TurnSecretParser;

impl clap::builder::TypedValueParser for TurnSecretParser {
    type Value = TurnSecret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<TurnSecret, clap::Error> {
        non_empty_secret(cmd, value, "--turn-secret (TURN_SECRET)").map(TurnSecret::new)
    }
}

/// A secret flag's value: any non-empty UTF-8 string. The error names the flag, never the value.
fn non_empty_secret(
    cmd: &clap::Command,
    value: &std::ffi::OsStr,
    flag: &str,
) -> Result<String, clap::Error> {
    match value.to_str() {
        Some(secret) if !secret.trim().is_empty() => Ok(secret.to_owned()),
        _ => Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("{flag} must be a non-empty UTF-8 string\n"),
        )
        .with_cmd(cmd)),
    }
}

/// The secret that signs webhook requests. Its `Debug` never shows it, so neither does a
/// logged or printed `Config`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Reads `--webhook-secret` without ever quoting it in an error.
#[derive(Debug, Clone, Copy)]
struct WebhookSecretParser;

impl clap::builder::TypedValueParser for WebhookSecretParser {
    type Value = WebhookSecret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<WebhookSecret, clap::Error> {
        non_empty_secret(cmd, value, "--webhook-secret (WEBHOOK_SECRET)").map(WebhookSecret::new)
    }
}

/// The bearer token `/metrics` requires (`--metrics-token`). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken(String);

impl MetricsToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the endpoint's check only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

/// Reads `--metrics-token` without ever quoting it in an error (clap quotes the value of a
/// failed function parser).
#[derive(Debug, Clone, Copy)]
struct MetricsTokenParser;

impl clap::builder::TypedValueParser for MetricsTokenParser {
    type Value = MetricsToken;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<MetricsToken, clap::Error> {
        // What fits an `Authorization: Bearer …` header as it is.
        match value.to_str() {
            Some(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(MetricsToken::new(token))
            }
            _ => Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--metrics-token (METRICS_TOKEN) must be printable ASCII without spaces\n",
            )
            .with_cmd(cmd)),
        }
    }
}

/// The secret that signs invitations. Its `Debug` never shows it, so neither does a logged or
/// printed `Config`.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteSecret(String);

impl std::fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteSecret(<redacted>)")
    }
}

/// Reads `--invite-secret` without ever quoting it in an error.
#[derive(Debug, Clone, Copy)]
struct InviteSecretParser;

impl clap::builder::TypedValueParser for InviteSecretParser {
    type Value = InviteSecret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<InviteSecret, clap::Error> {
        non_empty_secret(cmd, value, "--invite-secret (INVITE_SECRET)").map(InviteSecret)
    }
}

/// Where webhooks go: an `http` or `https` URL with a host. Its `Debug` and `Display` show the
/// scheme, host and port only: a path or query may hold the receiver's token.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(reqwest::Url);

impl WebhookUrl {
    /// The whole URL, for sending only.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = &self.0;
        write!(
            f,
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        )?;
        match url.port() {
            Some(port) => write!(f, ":{port}/…"),
            None => f.write_str("/…"),
        }
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// Reads `--webhook-url` without ever quoting it in an error (it may hold a token).
#[derive(Debug, Clone, Copy)]
struct WebhookUrlParser;

impl clap::builder::TypedValueParser for WebhookUrlParser {
    type Value = WebhookUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<WebhookUrl, clap::Error> {
        let url = value
            .to_str()
            .and_then(|v| reqwest::Url::parse(v.trim()).ok())
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some());
        url.map(WebhookUrl).ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--webhook-url (WEBHOOK_URL) must look like https://host[:port]/path (http or https)\n",
            )
            .with_cmd(cmd)
        })
    }
}

/// A `turn:` or `turns:` URL (RFC 7065): `turn:host[:port][?transport=udp|tcp]`, the host a
/// name, an IPv4 address or a bracketed IPv6 address.
fn parse_turn_url(s: &str) -> Result<String, String> {
    let url = s.trim();
    let invalid = || {
        format!(
            "TURN URL `{url}` must look like turn:host[:port][?transport=udp|tcp] or turns:host[:port][?transport=tcp]"
        )
    };
    let (scheme, rest) = url.split_once(':').ok_or_else(invalid)?;
    if !matches!(scheme, "turn" | "turns") {
        return Err(invalid());
    }
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(invalid)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?;
        match after {
            "" => (addr, None),
            _ => (addr, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let query_ok = match query {
        None => true,
        Some("transport=tcp") => true,
        // TURN over TLS runs on TCP only.
        Some("transport=udp") => scheme == "turn",
        Some(_) => false,
    };
    if host_ok && port_ok && query_ok {
        Ok(url.to_owned())
    } else {
        Err(invalid())
    }
}

/// Checks a Redis URL's scheme only (the Redis client parses the rest at start-up). A parser of
/// its own rather than a function because clap quotes the value of a failed function, and a
/// Redis URL may hold a password.
#[derive(Debug, Clone, Copy)]
struct RedisUrlParser;

impl clap::builder::TypedValueParser for RedisUrlParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let url = value.to_str().map(str::trim).unwrap_or_default();
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"));
        match rest {
            Some(rest) if !rest.is_empty() => Ok(url.to_owned()),
            _ => Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--redis-url (REDIS_URL) must look like redis://host:6379 or rediss://host:6380\n",
            )
            .with_cmd(cmd)),
        }
    }
}

fn parse_redis_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "Redis prefix `{s}` must be 1 to 64 letters, digits, `_`, `.`, `:` or `-`"
        ))
    }
}

fn parse_transports(s: &str) -> Result<Transports, String> {
    let names: Vec<&str> = s.split(',').map(str::trim).collect();
    match names.as_slice() {
        ["polling", "websocket"] => Ok(Transports::PollingAndWebsocket),
        ["websocket"] => Ok(Transports::WebsocketOnly),
        _ => Err(format!(
            "transports `{s}` must be `polling,websocket` (the default) or `websocket`"
        )),
    }
}

fn is_ice_url(u: &str) -> bool {
    ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| u.starts_with(p) && u.len() > p.len())
}

impl Config {
    /// Reads the configuration from the command line and the environment, checks the options
    /// that only make sense together, and on any problem prints one line and exits (status 2,
    /// as for any bad option).
    pub fn load() -> Self {
        Self::try_load_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Config::load`] from these arguments (the first is the program name), returning the
    /// error instead of exiting.
    pub fn try_load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        config.check().map_err(|message| {
            clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message + "\n")
                .with_cmd(&<Self as clap::CommandFactory>::command())
        })?;
        Ok(config)
    }

    /// Options that clap checks one by one but that only make sense together. (Not clap's
    /// `requires`: its message spans several lines and names no environment variable.)
    pub fn check(&self) -> Result<(), String> {
        self.check_turn()?;
        self.check_webhooks()?;
        self.check_redis_tls()
    }

    fn check_webhooks(&self) -> Result<(), String> {
        match (self.webhook_url.is_some(), self.webhook_secret.is_some()) {
            (true, false) => Err(
                "--webhook-url (WEBHOOK_URL) needs --webhook-secret (WEBHOOK_SECRET), which signs every request; set both, or neither"
                    .to_owned(),
            ),
            (false, true) => Err(
                "--webhook-secret (WEBHOOK_SECRET) needs --webhook-url (WEBHOOK_URL), where the signed events go; set both, or neither"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    /// The key that signs invitations: `--invite-secret`, or one drawn for this process.
    pub fn invite_key(&self) -> crate::invites::InviteKey {
        match &self.invite_secret {
            Some(InviteSecret(secret)) => crate::invites::InviteKey::from_secret(secret.as_bytes()),
            None => crate::invites::InviteKey::random(),
        }
    }

    /// Where webhooks go and the secret that signs them, when both are set.
    pub fn webhooks(&self) -> Option<(WebhookUrl, WebhookSecret)> {
        Some((self.webhook_url.clone()?, self.webhook_secret.clone()?))
    }

    fn check_turn(&self) -> Result<(), String> {
        match (self.turn_urls.is_empty(), self.turn_secret.is_some()) {
            (false, false) => Err(
                "--turn-urls (TURN_URLS) needs --turn-secret (TURN_SECRET), the secret shared with the TURN server; set both, or neither"
                    .to_owned(),
            ),
            (true, true) => Err(
                "--turn-secret (TURN_SECRET) needs --turn-urls (TURN_URLS), the TURN servers it signs credentials for; set both, or neither"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    /// `--redis-ca-cert` only means something for a `rediss://` URL; anywhere else it would be
    /// ignored, and a deployment that meant to use TLS would run without it unnoticed.
    fn check_redis_tls(&self) -> Result<(), String> {
        match (&self.redis_ca_cert, self.redis_url.as_deref()) {
            (Some(_), None) => Err(
                "--redis-ca-cert (REDIS_CA_CERT) needs a rediss:// --redis-url (REDIS_URL): it is the CA to trust for Redis over TLS"
                    .to_owned(),
            ),
            (Some(_), Some(_)) if !self.redis_uses_tls() => Err(
                "--redis-ca-cert (REDIS_CA_CERT) is set but --redis-url (REDIS_URL) is redis://, which does not use TLS: use rediss://, or drop --redis-ca-cert"
                    .to_owned(),
            ),
            (None, _) if self.redis_skip_hostname_check => Err(
                "--redis-skip-hostname-check (REDIS_SKIP_HOSTNAME_CHECK) needs --redis-ca-cert (REDIS_CA_CERT): only certificates of a CA of your own may skip the host name check"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    /// Whether cluster mode talks to Redis over TLS (`rediss://`).
    pub fn redis_uses_tls(&self) -> bool {
        self.redis_url
            .as_deref()
            .is_some_and(|url| url.starts_with("rediss://"))
    }

    pub fn channel_ttl(&self) -> Duration {
        Duration::from_secs(self.channel_ttl_secs)
    }

    /// How long a resumable channel is held after its broadcaster's connection drops.
    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs(self.resume_grace_secs)
    }

    /// The relay tree's limits.
    pub fn tree_limits(&self) -> crate::registry::tree::TreeLimits {
        crate::registry::tree::TreeLimits {
            direct: usize::try_from(self.relay_direct).unwrap_or(usize::MAX),
            fanout: usize::try_from(self.relay_fanout).unwrap_or(usize::MAX),
            wait: Duration::from_millis(self.relay_wait_ms),
        }
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    /// Cluster mode: how often a node refreshes its heartbeat in Redis.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// `None` when any origin is allowed.
    pub fn allowed_origins(&self) -> Option<Vec<HeaderValue>> {
        if self.cors_origins.contains(&Origin::Any) {
            return None;
        }
        Some(
            self.cors_origins
                .iter()
                .filter_map(|o| match o {
                    Origin::Exact(v) => Some(v.clone()),
                    Origin::Any => None,
                })
                .collect(),
        )
    }

    /// The `--assets-dir` override, if given; without it the built-in files are served.
    pub fn assets_dir(&self) -> Option<&std::path::Path> {
        self.assets_dir.as_deref()
    }

    /// A configuration with defaults, for tests and embedding.
    pub fn default_for_tests() -> Self {
        Self::parse_from(["broadcast-server", "--host", "127.0.0.1", "--port", "0"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["broadcast-server"];
        all.extend_from_slice(args);
        Config::try_parse_from(all)
    }

    #[test]
    fn defaults_match_the_earlier_server() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.channel_ttl_secs, 3600);
        assert_eq!(c.max_channels, 100);
        assert_eq!(c.allowed_origins(), None);
        assert_eq!(c.ice_servers.0.as_array().map(Vec::len), Some(2));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.redis_url, None, "cluster mode is off without a Redis URL");
        assert_eq!(c.redis_prefix, "broadcast");
        assert_eq!(c.heartbeat(), Duration::from_millis(2000));
        assert_eq!(c.transports, Transports::PollingAndWebsocket);
    }

    #[test]
    fn a_redis_url_switches_cluster_mode_on() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://user:secret@redis.example:6380/2",
            "redis://localhost:6379?protocol=resp3",
        ] {
            assert_eq!(
                parse(&["--redis-url", url]).unwrap().redis_url.as_deref(),
                Some(url)
            );
        }
        for bad in [
            "127.0.0.1:6379",
            "http://redis:6379",
            "redis://",
            "REDIS://x",
            "",
        ] {
            let err = parse(&["--redis-url", bad]).unwrap_err().to_string();
            assert!(
                err.contains("--redis-url (REDIS_URL) must look like redis://"),
                "{bad}: {err}"
            );
        }
        let err = parse(&["--redis-url", "http://user:secret@redis"])
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("secret"),
            "the URL may hold a password: {err}"
        );
    }

    #[test]
    fn redis_prefix_is_a_short_key_safe_name() {
        for prefix in ["b", "broadcast", "test_1.node-a:x", &"p".repeat(64)] {
            assert_eq!(
                parse(&["--redis-prefix", prefix]).unwrap().redis_prefix,
                prefix
            );
        }
        for bad in ["", "with space", "a/b", "{tag}", "é", &"p".repeat(65)] {
            let err = parse(&["--redis-prefix", bad]).unwrap_err().to_string();
            assert!(err.contains("must be 1 to 64 letters"), "{bad}: {err}");
        }
    }

    #[test]
    fn heartbeat_is_bounded() {
        assert_eq!(
            parse(&["--heartbeat-ms", "100"]).unwrap().heartbeat(),
            Duration::from_millis(100)
        );
        assert!(parse(&["--heartbeat-ms", "60000"]).is_ok());
        assert!(parse(&["--heartbeat-ms", "99"]).is_err());
        assert!(parse(&["--heartbeat-ms", "60001"]).is_err());
        assert!(parse(&["--heartbeat-ms", "soon"]).is_err());
    }

    #[test]
    fn transports_are_both_or_websocket_only() {
        use socketioxide::TransportType::{Polling, Websocket};
        let both = parse(&["--transports", "polling,websocket"])
            .unwrap()
            .transports;
        assert_eq!(both, Transports::PollingAndWebsocket);
        assert_eq!(both.socketio(), [Polling, Websocket]);
        assert_eq!(both.client_names(), ["polling", "websocket"]);
        let ws = parse(&["--transports", "websocket"]).unwrap().transports;
        assert_eq!(ws, Transports::WebsocketOnly);
        assert!(!ws.socketio().contains(&Polling));
        assert_eq!(ws.client_names(), ["websocket"]);
        assert_eq!(
            parse(&["--transports", "polling, websocket"])
                .unwrap()
                .transports,
            Transports::PollingAndWebsocket
        );
        for bad in [
            "polling",
            "websocket,polling",
            "webtransport",
            "",
            "websocket,websocket",
        ] {
            let err = parse(&["--transports", bad]).unwrap_err().to_string();
            assert!(
                err.contains("must be `polling,websocket` (the default) or `websocket`"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn origins_list_restricts() {
        let c = parse(&["--cors-origins", "https://a.example,http://b.example:8080"]).unwrap();
        let origins = c.allowed_origins().unwrap();
        assert_eq!(origins.len(), 2);
        assert!(parse(&["--cors-origins", "a.example"]).is_err());
        assert!(parse(&["--cors-origins", "https://a.example/path"]).is_err());
    }

    #[test]
    fn embed_origins_are_exact_origins() {
        assert!(
            parse(&[]).unwrap().embed_origins.is_empty(),
            "none by default"
        );
        let c = parse(&[
            "--embed-origins",
            "https://Blog.Example.com, http://127.0.0.1:8080,https://[::1]:8443",
        ])
        .unwrap();
        let origins: Vec<&str> = c.embed_origins.iter().map(EmbedOrigin::as_str).collect();
        assert_eq!(
            origins,
            [
                "https://blog.example.com",
                "http://127.0.0.1:8080",
                "https://[::1]:8443"
            ]
        );
        for bad in [
            "blog.example.com",
            "ftp://blog.example.com",
            "https://blog.example.com/",
            "https://blog.example.com/path",
            "https://*.example.com",
            "*",
            "https://",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:80x",
            "https://a.example; script-src *",
            "https://user@a.example",
            "https://[::1",
            "",
        ] {
            let err = parse(&["--embed-origins", bad]).unwrap_err().to_string();
            assert!(
                err.contains("must look like https://blog.example.com[:port]"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--ice-servers", "{}"]).is_err());
        assert!(parse(&["--ice-servers", r#"[{"urls":"http://x"}]"#]).is_err());
        assert!(parse(&["--ice-servers", "[]"]).is_ok());
        assert!(
            parse(&[
                "--ice-servers",
                r#"[{"urls":["stun:a:1","turn:b:2"],"username":"u"}]"#
            ])
            .is_ok()
        );
        assert!(parse(&["--channel-ttl-secs", "0"]).is_err());
        assert!(parse(&["--max-channels", "0"]).is_err());
        assert!(parse(&["--port", "70000"]).is_err());
        assert!(
            parse(&["--tls-cert", "cert.pem"]).is_err(),
            "cert needs key"
        );
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    fn load(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["broadcast-server"];
        all.extend_from_slice(args);
        Config::try_load_from(all)
    }

    #[test]
    fn turn_is_off_by_default_with_an_hour_of_ttl() {
        let c = load(&[]).unwrap();
        assert!(c.turn_urls.is_empty());
        assert_eq!(c.turn_secret, None);
        assert_eq!(c.turn_ttl_secs, 3600);
    }

    #[test]
    fn turn_urls_and_secret_are_read_together() {
        let c = load(&[
            "--turn-urls",
            "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349,turn:[::1]:3478",
            "--turn-secret",
            "s3cret",
            "--turn-ttl-secs",
            "60",
        ])
        .unwrap();
        assert_eq!(
            c.turn_urls,
            [
                "turn:turn.example.com:3478?transport=udp",
                "turns:turn.example.com:5349",
                "turn:[::1]:3478"
            ]
        );
        assert_eq!(
            c.turn_secret.as_ref().map(TurnSecret::expose),
            Some(&b"s3cret"[..])
        );
        assert_eq!(c.turn_ttl_secs, 60);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn turn_urls_must_be_turn_or_turns() {
        for good in [
            "turn:127.0.0.1",
            "turn:127.0.0.1:3478?transport=tcp",
            "turns:turn.example.com",
            "turn:[2001:db8::1]",
        ] {
            assert!(parse(&["--turn-urls", good]).is_ok(), "{good}");
        }
        for bad in [
            "stun:stun.example.com",
            "turn:",
            "turn://host",
            "http://host",
            "turn:host:0",
            "turn:host:99999",
            "turn:host?transport=sctp",
            "turns:host?transport=udp",
            "turn:[not-v6]:3478",
            "turn:host name",
            "",
        ] {
            let err = parse(&["--turn-urls", bad]).unwrap_err().to_string();
            assert!(err.contains("must look like turn:host"), "{bad}: {err}");
        }
    }

    #[test]
    fn turn_ttl_is_a_minute_to_a_day() {
        assert!(parse(&["--turn-ttl-secs", "60"]).is_ok());
        assert!(parse(&["--turn-ttl-secs", "86400"]).is_ok());
        assert!(parse(&["--turn-ttl-secs", "59"]).is_err());
        assert!(parse(&["--turn-ttl-secs", "86401"]).is_err());
    }

    #[test]
    fn half_a_turn_config_is_one_clear_line() {
        for (args, names) in [
            (
                &["--turn-urls", "turn:t:3478"][..],
                "--turn-urls (TURN_URLS) needs",
            ),
            (
                &["--turn-secret", "s3cret"][..],
                "--turn-secret (TURN_SECRET) needs",
            ),
        ] {
            let err = load(args).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("error: {names}")), "{text}");
            assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let err = parse(&["--turn-secret", " "]).unwrap_err().to_string();
        assert!(err.contains("must be a non-empty"), "{err}");
    }

    #[test]
    fn redis_ca_cert_goes_with_rediss_only() {
        let c = load(&[
            "--redis-url",
            "rediss://u:secret@redis.example:6380",
            "--redis-ca-cert",
            "server-ca.pem",
        ])
        .unwrap();
        assert!(c.redis_uses_tls());
        assert_eq!(
            c.redis_ca_cert.as_deref(),
            Some(std::path::Path::new("server-ca.pem"))
        );
        let c = load(&["--redis-url", "rediss://redis.example:6380"]).unwrap();
        assert!(c.redis_uses_tls(), "system roots alone");
        assert_eq!(c.redis_ca_cert, None);
        assert!(
            !load(&["--redis-url", "redis://h:6379"])
                .unwrap()
                .redis_uses_tls()
        );
        assert!(!load(&[]).unwrap().redis_uses_tls());
        let skip = [
            "--redis-url",
            "rediss://h:6378",
            "--redis-skip-hostname-check",
        ];
        let err = load(&skip).unwrap_err().to_string();
        assert!(err.contains("needs --redis-ca-cert"), "{err}");
        let c = load(&[&skip[..], &["--redis-ca-cert", "ca.pem"]].concat()).unwrap();
        assert!(c.redis_skip_hostname_check);

        for (args, expected) in [
            (
                &[
                    "--redis-url",
                    "redis://u:secret@h:6379",
                    "--redis-ca-cert",
                    "ca.pem",
                ][..],
                "error: --redis-ca-cert (REDIS_CA_CERT) is set but --redis-url (REDIS_URL) is redis://",
            ),
            (
                &["--redis-ca-cert", "ca.pem"][..],
                "error: --redis-ca-cert (REDIS_CA_CERT) needs a rediss:// --redis-url",
            ),
        ] {
            let text = load(args).unwrap_err().to_string();
            assert!(text.starts_with(expected), "{text}");
            assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn webhook_url_and_secret_are_read_together() {
        let c = load(&[
            "--webhook-url",
            "https://hooks.example.com:8443/in?token=t0ken",
            "--webhook-secret",
            "wh-s3cret",
        ])
        .unwrap();
        let (url, secret) = c.webhooks().expect("both set");
        assert_eq!(
            url.expose().as_str(),
            "https://hooks.example.com:8443/in?token=t0ken"
        );
        assert_eq!(secret.expose(), b"wh-s3cret");
        let shown = format!("{c:?} {url}");
        assert!(
            !shown.contains("wh-s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        assert!(load(&[]).unwrap().webhooks().is_none());

        for (args, expected) in [
            (
                &["--webhook-url", "http://127.0.0.1:9/hook"][..],
                "error: --webhook-url (WEBHOOK_URL) needs --webhook-secret",
            ),
            (
                &["--webhook-secret", "wh-s3cret"][..],
                "error: --webhook-secret (WEBHOOK_SECRET) needs --webhook-url",
            ),
        ] {
            let text = load(args).unwrap_err().to_string();
            assert!(text.starts_with(expected), "{text}");
            assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
            assert!(!text.contains("wh-s3cret"), "{text}");
        }
        for bad in [
            "ftp://x/y",
            "hooks.example.com/in",
            "https://",
            "mailto:t0ken@example.com",
        ] {
            let err = parse(&["--webhook-url", bad]).unwrap_err().to_string();
            assert!(
                err.contains("--webhook-url (WEBHOOK_URL) must look like"),
                "{bad}: {err}"
            );
            assert!(!err.contains("t0ken"), "{err}");
        }
        let err = parse(&["--webhook-secret", " "]).unwrap_err().to_string();
        assert!(
            err.contains("--webhook-secret (WEBHOOK_SECRET) must be a non-empty"),
            "{err}"
        );
    }

    #[test]
    fn invite_secret_is_optional_and_never_shown() {
        let c = load(&[]).unwrap();
        assert_eq!(c.invite_secret, None);
        assert!(c.invite_key().is_ephemeral());
        let c = load(&["--invite-secret", "inv-s3cret"]).unwrap();
        assert!(!c.invite_key().is_ephemeral());
        assert!(!format!("{c:?} {:?}", c.invite_key()).contains("inv-s3cret"));
        let err = parse(&["--invite-secret", " "]).unwrap_err().to_string();
        assert!(
            err.contains("--invite-secret (INVITE_SECRET) must be a non-empty"),
            "{err}"
        );
        let hidden = <Config as clap::CommandFactory>::command()
            .get_arguments()
            .find(|a| a.get_id() == "invite_secret")
            .map(|a| a.is_hide_env_values_set());
        assert_eq!(hidden, Some(true));
    }

    #[test]
    fn turn_secret_is_kept_out_of_help() {
        // The binary's `--help` with the variable set is checked in tests/api/turn.rs.
        let arg = <Config as clap::CommandFactory>::command()
            .get_arguments()
            .find(|a| a.get_id() == "turn_secret")
            .map(|a| a.is_hide_env_values_set());
        assert_eq!(arg, Some(true));
    }
}
