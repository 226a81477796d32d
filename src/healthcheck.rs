//! `--healthcheck`: a dependency-free probe for container health checks (the runtime image has
//! no curl). It asks `/livez`, not `/readyz`: a container check decides whether the process is
//! worth keeping, and a Redis outage (seen by every node at once) must not get every node
//! restarted.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use clap::Parser;

use crate::config::Config;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a server started with `config` answers on this host: its `--host`, or the loopback
/// address of the same family when it listens on every address.
pub fn local_addr(config: &Config) -> SocketAddr {
    let ip = match config.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.port)
}

/// Probes the local server's `/livez`; `Err` says why it is unhealthy.
pub fn probe(config: &Config) -> Result<(), String> {
    let addr = local_addr(config);
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if config.tls_cert.is_some() {
        // Accepting connections is the signal we can check without a TLS client.
        return Ok(());
    }
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .and_then(|()| stream.write_all(b"GET /livez HTTP/1.0\r\nHost: localhost\r\n\r\n"))
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

/// `broadcast-server --healthcheck …`: whether these arguments ask for the probe.
pub fn requested(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|arg| arg == "--healthcheck")
}

/// Runs the probe for these arguments (the first is the program name). Only what the probe
/// needs is read (host, port, TLS): the options are parsed but not checked together, so an
/// environment that is only complete with the server's own command line (a `REDIS_CA_CERT`
/// whose `--redis-url` is a flag, say) does not fail the check of a server that runs fine.
pub fn run(args: Vec<OsString>) -> Result<(), String> {
    let own_args = args.len();
    let own = Config::try_parse_from(args).map_err(|e| e.to_string())?;
    probe(&target(own, own_args))
}

/// The configuration to probe with. In a container the health check is a second process that
/// has the image's environment but not the server's command line (`docker run IMAGE --port
/// 8080` would leave it probing `PORT`): when it is started with `--healthcheck` alone and
/// process 1 is this same program, it reads process 1's arguments instead, so a host or port
/// given on the command line is honoured.
pub fn target(own: Config, own_args: usize) -> Config {
    if own_args > 2 || !process_one_is_us() {
        return own;
    }
    let Ok(cmdline) = std::fs::read("/proc/1/cmdline") else {
        return own;
    };
    let mut args = split_cmdline(&cmdline);
    args.push("--healthcheck".into());
    Config::try_parse_from(args).unwrap_or(own)
}

/// Whether process 1 runs the same executable as this process (Linux only; elsewhere, never).
fn process_one_is_us() -> bool {
    match (
        std::fs::read_link("/proc/1/exe"),
        std::fs::read_link("/proc/self/exe"),
    ) {
        (Ok(one), Ok(me)) => one == me,
        _ => false,
    }
}

/// `/proc/PID/cmdline`: the arguments, each ended by a NUL byte (so an empty argument is an
/// empty piece between two NULs, and only the piece after the last NUL is no argument).
#[cfg(unix)]
fn split_cmdline(cmdline: &[u8]) -> Vec<OsString> {
    use std::os::unix::ffi::OsStrExt;
    let body = cmdline.strip_suffix(&[0]).unwrap_or(cmdline);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|arg| std::ffi::OsStr::from_bytes(arg).to_owned())
        .collect()
}

#[cfg(not(unix))]
fn split_cmdline(_cmdline: &[u8]) -> Vec<OsString> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[test]
    fn probes_the_servers_own_host_and_port() {
        let config = Config::try_parse_from(["b", "--port", "8080"]).expect("config");
        assert_eq!(local_addr(&config).to_string(), "127.0.0.1:8080");
        let config = Config::try_parse_from(["b", "--host", "::", "--port", "81"]).expect("v6");
        assert_eq!(local_addr(&config).to_string(), "[::1]:81");
        let config = Config::try_parse_from(["b", "--host", "10.1.2.3"]).expect("host");
        assert_eq!(local_addr(&config).ip().to_string(), "10.1.2.3");
    }

    #[test]
    fn reads_the_arguments_of_process_one() {
        let args = split_cmdline(b"broadcast-server\0--redis-prefix\0\0--port\08080\0");
        assert_eq!(args.len(), 5, "an empty argument is kept: {args:?}");
        let args = split_cmdline(b"broadcast-server\0--port\08080\0");
        let mut with_probe = args.clone();
        with_probe.push("--healthcheck".into());
        let config = Config::try_parse_from(with_probe).expect("config");
        assert_eq!((config.port, config.healthcheck), (8080, true));
        assert_eq!(args.len(), 3);
    }
}
