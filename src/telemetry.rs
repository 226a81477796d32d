//! Logging set-up: `RUST_LOG` for the level, text or JSON lines on stdout.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Defaults to `info` when `RUST_LOG` is unset or invalid.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
