//! Configuration: one typed struct from flags with environment fallbacks, validated at start.
//! Defaults are the earlier server's, so `broadcast-server` with no arguments behaves like it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::{Parser, ValueEnum};
use serde_json::Value;

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

    /// ICE servers handed to the served page, as a JSON array of RTCIceServer objects
    /// (`[]` = host candidates only, e.g. for a LAN or tests).
    #[arg(long, env = "ICE_SERVERS", default_value = DEFAULT_ICE_SERVERS,
          value_parser = parse_ice_servers)]
    pub ice_servers: IceServers,

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

    /// Directory of the page's static files (defaults to `./assets`, else the source tree's).
    #[arg(long, env = "ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,

    /// Seconds to let in-flight requests finish on SIGTERM/SIGINT before closing.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Probe a server running with this configuration on this host (`GET /healthz` on
    /// 127.0.0.1:PORT) and exit 0 if healthy: a container health check without curl.
    #[arg(long)]
    pub healthcheck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One allowed origin, or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Any,
    Exact(HeaderValue),
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

fn is_ice_url(u: &str) -> bool {
    ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| u.starts_with(p) && u.len() > p.len())
}

impl Config {
    pub fn channel_ttl(&self) -> Duration {
        Duration::from_secs(self.channel_ttl_secs)
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

    pub fn assets_dir(&self) -> PathBuf {
        if let Some(dir) = &self.assets_dir {
            return dir.clone();
        }
        let local = PathBuf::from("assets");
        if local.is_dir() {
            local
        } else {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets"))
        }
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
}
