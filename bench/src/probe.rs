//! What the benchmark reads about the server besides its sockets: resident memory and CPU time
//! from `/proc/PID`, and the counts of `GET /healthz`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Linux's USER_HZ: the unit of utime/stime in `/proc/PID/stat` on every mainstream platform.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The benchmark's own resident set size in KiB.
pub(crate) fn own_rss_kib() -> Option<u64> {
    status_field("/proc/self/status", "VmRSS:")
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU time of the process, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// The soft limit on open files of this process.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
}

/// Counts reported by `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    pub(crate) channels: u64,
    pub(crate) sockets: u64,
}

/// One `GET /healthz` over a fresh HTTP/1.1 connection.
pub(crate) async fn healthz(addr: SocketAddr) -> Result<Health, String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("healthz connect: {e}"))?;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("healthz write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("healthz read: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("healthz: malformed response")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "healthz: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        // Tolerate chunked encoding: the JSON object is the first `{...}` of the body.
        let start = body.find('{').ok_or("healthz: no JSON body")?;
        let end = body.rfind('}').ok_or("healthz: no JSON body")?;
        let v: Value = serde_json::from_str(&body[start..=end])
            .map_err(|e| format!("healthz: bad JSON: {e}"))?;
        let count = |k: &str| v[k].as_u64().ok_or_else(|| format!("healthz: missing {k}"));
        Ok(Health {
            channels: count("channels")?,
            sockets: count("sockets")?,
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "healthz: timed out".to_string())?
}

/// Polls `/healthz` until `done` holds or `limit` passes; returns the last answer.
pub(crate) async fn wait_health(
    addr: SocketAddr,
    limit: Duration,
    done: impl Fn(Health) -> bool,
) -> Result<Health, String> {
    let deadline = Instant::now() + limit;
    loop {
        let health = healthz(addr).await?;
        if done(health) || Instant::now() >= deadline {
            return Ok(health);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The host's count of connection attempts dropped at a full listen queue (`ListenDrops` of
/// `/proc/net/netstat`): each one costs a client a SYN retransmission, one second or more.
pub(crate) fn listen_drops() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenDrops")
        .and_then(|(_, v)| v.parse().ok())
}
