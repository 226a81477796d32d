//! Logging set-up: `RUST_LOG` for the level, text or JSON lines on stdout.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Libraries that log whole frames (and spans holding them) below `info`: frames carry
/// passwords and resume tokens, which must never reach a log, so they stay at `info` whatever
/// `RUST_LOG` asks for.
const FRAME_LOGGERS: &[&str] = &[
    "socketioxide=info",
    "socketioxide_core=info",
    "socketioxide_redis=info",
    "engineioxide=info",
    "engineioxide_core=info",
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "fred=info",
];

/// How log lines are written (`--log-format`): text for people, JSON lines for collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Defaults to `info` when `RUST_LOG` is unset or invalid.
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in FRAME_LOGGERS {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

/// Runs `log` at most once a second per `gate`: warnings caused by a client (an abusive one
/// can cause thousands a second) must not flood the log.
pub fn throttled(gate: &std::sync::atomic::AtomicU64, log: impl FnOnce()) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let last = gate.load(std::sync::atomic::Ordering::Relaxed);
    if now > last
        && gate
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        log();
    }
}
