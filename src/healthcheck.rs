//! `--healthcheck`: a dependency-free probe for container health checks (the runtime image has
//! no curl).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes the local server; `Err` says why it is unhealthy.
pub fn probe(config: &Config) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if config.tls_cert.is_some() {
        // Accepting connections is the signal we can check without a TLS client.
        return Ok(());
    }
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .and_then(|()| stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n"))
        .map_err(|e| format!("cannot send probe: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no answer: {e}"))?;
    if head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200" {
        Ok(())
    } else {
        Err(format!("unhealthy: {}", String::from_utf8_lossy(&head)))
    }
}
