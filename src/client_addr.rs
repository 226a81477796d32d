//! Which network address a client connects from, for per-address limits.
//!
//! Behind a load balancer every connection comes from the balancer, so the client's own
//! address is taken from `X-Forwarded-For`, but only when the connection comes from a proxy
//! the operator listed: anybody else could write any address into that header and so escape
//! every per-address limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use ipnet::IpNet;

/// One `--trusted-proxies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxy {
    /// A proxy at this address or in this block.
    Net(IpNet),
    /// Google Cloud Run's front end: every request reaches the container through it, from an
    /// internal address Cloud Run does not document (so no address list could name it), and it
    /// appends the address it saw to `X-Forwarded-For`. So the container's peer is always the
    /// front end, whatever its address, and the header's last entry is the client's.
    CloudRun,
}

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// The TCP peer is a trusted proxy whatever its address (`cloud-run`: nothing reaches
    /// the container except through the platform's front end).
    any_peer: bool,
}

impl TrustedProxies {
    pub fn new(entries: &[TrustedProxy]) -> Self {
        let mut proxies = Self::default();
        for entry in entries {
            match entry {
                TrustedProxy::Net(net) => proxies.nets.push(*net),
                TrustedProxy::CloudRun => proxies.any_peer = true,
            }
        }
        proxies
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the
    /// address it saw, so entries left of an untrusted one may be forged).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.any_peer && !self.contains(&peer) {
            return peer;
        }
        let hops = forwarded_for
            .iter()
            .flat_map(|header| header.split(','))
            .map(|hop| hop.trim().parse::<IpAddr>());
        let mut client = peer;
        for hop in hops.rev() {
            match hop {
                Ok(ip) if self.contains(&ip) => client = ip,
                Ok(ip) => return ip,
                // An unreadable entry: trust nothing to its left.
                Err(_) => return client,
            }
        }
        client
    }

    /// The client address of the request that opened a Socket.IO session.
    pub fn of_request(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())?;
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Some(self.client_ip(peer, &forwarded))
    }
}

/// Open Socket.IO sessions per client address, against a cap: one address (a bot, or a script
/// looping on reconnect) cannot hold every connection the server has.
#[derive(Debug)]
pub struct SessionsPerAddr {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl SessionsPerAddr {
    /// `limit` 0 = unlimited.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // One map operation per critical section: a poisoned map is still a valid map.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new session from `addr`; `false` when the address is at its cap.
    pub fn try_take(&self, addr: IpAddr) -> bool {
        let mut open = self.lock();
        let count = open.entry(addr).or_default();
        if self.limit > 0 && *count >= self.limit {
            if *count == 0 {
                open.remove(&addr);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back the slot of a session that ended.
    pub fn release(&self, addr: IpAddr) {
        let mut open = self.lock();
        if let Some(count) = open.get_mut(&addr) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&addr);
            }
        }
    }

    /// Addresses with at least one session (for `/healthz` and leak checks).
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }
}

/// Says so when the `cloud-run` preset is set outside Cloud Run (which always sets
/// `K_SERVICE` in a container's environment): there, nothing stands between clients and the
/// server, and any client could pick its address for the per-address limits.
pub fn warn_if_outside_cloud_run(entries: &[TrustedProxy]) {
    if entries.contains(&TrustedProxy::CloudRun) && std::env::var_os("K_SERVICE").is_none() {
        tracing::warn!(
            "--trusted-proxies {CLOUD_RUN} outside Cloud Run (K_SERVICE is not set): every client \
             may choose its own address for the per-address limits through X-Forwarded-For"
        );
    }
}

/// The `--trusted-proxies` preset for Google Cloud Run (see [`TrustedProxy::CloudRun`]).
pub const CLOUD_RUN: &str = "cloud-run";

/// Parses one `--trusted-proxies` entry: an address, a CIDR block or the `cloud-run` preset.
pub fn parse_proxy(s: &str) -> Result<TrustedProxy, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case(CLOUD_RUN) {
        return Ok(TrustedProxy::CloudRun);
    }
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(TrustedProxy::Net)
        .map_err(|_| {
            format!("trusted proxy `{s}` must be an IP address, a CIDR block or `{CLOUD_RUN}`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &["198.51.100.1"]),
            ip("203.0.113.9")
        );
        let lb = TrustedProxies::new(&[parse_proxy("10.0.0.0/8").unwrap()]);
        assert_eq!(
            lb.client_ip(ip("10.1.2.3"), &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        // A forged leftmost entry is ignored: the balancer appended the real one last.
        assert_eq!(
            lb.client_ip(ip("10.1.2.3"), &["1.1.1.1, 198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            lb.client_ip(ip("10.1.2.3"), &["198.51.100.1", "10.9.9.9"]),
            ip("198.51.100.1")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &["junk"]), ip("10.1.2.3"));
        assert!(parse_proxy("nope").is_err());
        let sessions = SessionsPerAddr::new(2);
        let home = ip("198.51.100.7");
        assert!(sessions.try_take(home) && sessions.try_take(home));
        assert!(!sessions.try_take(home), "third session from one address");
        assert!(sessions.try_take(ip("203.0.113.1")));
        sessions.release(home);
        assert!(sessions.try_take(home));
        for addr in [home, home, ip("203.0.113.1")] {
            sessions.release(addr);
        }
        assert_eq!(sessions.addresses(), 0);
        assert_eq!(
            parse_proxy("::1").unwrap(),
            TrustedProxy::Net("::1/128".parse().unwrap())
        );
    }

    /// Cloud Run: the peer is the front end at an address nobody documents, and the front end
    /// appends the address it saw, so the last entry is the client even when the client sent
    /// a header of its own.
    #[test]
    fn cloud_run_takes_the_entry_its_front_end_appended() {
        let run = TrustedProxies::new(&[parse_proxy("cloud-run").unwrap()]);
        let front_end = ip("169.254.1.1");
        assert_eq!(
            run.client_ip(front_end, &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            run.client_ip(ip("10.20.30.40"), &["198.51.100.1"]),
            ip("198.51.100.1"),
            "the front end's address is not part of the contract"
        );
        // A client's own header: the front end appended the real address after it.
        assert_eq!(
            run.client_ip(front_end, &["203.0.113.66, 198.51.100.1"]),
            ip("198.51.100.1")
        );
        // No header (not through the front end, e.g. a local run): the peer.
        assert_eq!(run.client_ip(front_end, &[]), front_end);
        // An external HTTPS load balancer in front of Cloud Run appends its own forwarding
        // rule's address last: listing it as well skips it.
        let behind_lb = TrustedProxies::new(&[
            parse_proxy("CLOUD-RUN").unwrap(),
            parse_proxy("34.120.0.7").unwrap(),
        ]);
        assert_eq!(
            behind_lb.client_ip(front_end, &["198.51.100.1, 34.120.0.7"]),
            ip("198.51.100.1")
        );
        assert!(parse_proxy("cloud-runner").is_err());
    }
}
