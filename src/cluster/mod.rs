//! Cluster mode: several nodes behind a load balancer share every channel through Redis.
//!
//! - [`store`]: the channel registry's Redis backend (the same rules as in memory, made atomic
//!   with an optimistic compare-and-set script).
//! - [`node`]: heartbeats, noticing dead nodes and cleaning up after them, health.
//! - [`emits`]: a channel owner's events for sockets on every node, one publish per run.
//! - Socket.IO fan-out across nodes is socketioxide-redis's adapter over the same connection
//!   settings (see [`Connection::adapter`]).
//! - [`tls`]: `rediss://`: the certificates trusted, and what a failed handshake means.
//!
//! Without `--redis-url` none of this runs: the server keeps everything in memory.

mod batch;
mod emits;
mod forward;
mod hearing;
mod keys;
mod lease;
pub mod node;
mod replica;
mod store;
pub mod tls;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};
use fred::types::RespVersion;
use fred::types::config::TlsConnector;
use rand::RngExt;

pub use batch::CountTeller;
pub use emits::{Emits, Reach, Relay, Sockets};
pub use keys::Keys;
pub use node::Health;
pub use store::{ChatRenderer, ClusterRegistry, TreeRenderer};
pub use tls::Trust;

/// How long one Redis command may take before the operation fails (and health says why).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Cross-node messages buffered by each pub/sub connection before the task reading them takes
/// them: fred's default (32) overflowed in bursts, losing messages unseen. fred allocates this
/// ring up front, eight times over (one per kind of notice) for every client: 65,536 cost
/// 160 MB of memory per idle node. Both readers (the adapter's and `hearing.rs`) only move
/// each message on to a queue of their own, so they take it within a scheduling delay.
const PUBSUB_BUFFER: usize = 4_096;
/// Pause between reconnection attempts while Redis is away.
const RECONNECT_DELAY_MS: u32 = 500;

/// A node's id: random per process start, so a restarted node is a new node and its
/// predecessor's leftovers are reaped like any dead node's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let id: String = (0..12)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect();
        Self(Arc::from(id))
    }

    pub fn parse(id: &str) -> Self {
        Self(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --redis-url: {0}")]
    Url(String),
    #[error("--redis-ca-cert (REDIS_CA_CERT) {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("cannot set up TLS for Redis: {0}")]
    Tls(String),
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Redis at {url} is too old for cluster mode (need 7 or newer, RESP3): {reason}")]
    Version { url: String, reason: String },
}

/// The Redis connections of one node: commands (registry, heartbeats), pub/sub for the
/// Socket.IO adapter, and pub/sub for the registry's change feed, all reconnecting by
/// themselves.
pub struct Connection {
    pub client: fred::clients::Client,
    subscriber: fred::clients::SubscriberClient,
    /// The connection for the feed, the node's inbox and the emits channel (see `hearing.rs`):
    /// the adapter's dispatcher warns about any message on its connection that is not one of
    /// its channels.
    pub feed: fred::clients::SubscriberClient,
    pub keys: Keys,
    pub node: NodeId,
    pub health: Arc<Health>,
}

impl Connection {
    /// Connects both clients; fails (for one clear line at start-up) when Redis does not answer.
    /// A `rediss://` URL connects over TLS, trusting what `trust` says.
    pub async fn open(
        url: &str,
        prefix: &str,
        trust: tls::Trust<'_>,
    ) -> Result<Self, ClusterError> {
        // fred does not read a `?protocol=resp3` query (the form the `redis` crate documents);
        // accept it and set RESP3 ourselves, which socketioxide-redis's fred driver expects.
        let base = strip_protocol_query(url);
        let tls = match base.strip_prefix("rediss://") {
            Some(rest) => Some((format!("redis://{rest}"), tls::client_config(trust)?)),
            None => None,
        };
        // For `rediss://` fred would build TLS settings of its own (system roots only, failing
        // on any unreadable system certificate); the address is parsed as `redis://` and ours
        // are attached instead.
        let address = tls
            .as_ref()
            .map_or(base.as_str(), |(plain, _)| plain.as_str());
        let mut config = Config::from_url(address).map_err(|e| ClusterError::Url(e.to_string()))?;
        let uses_tls = tls.is_some();
        config.tls = tls.map(|(_, client)| TlsConnector::from(client).into());
        config.version = RespVersion::RESP3;
        config.fail_fast = true;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 2;
            })
            .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS));
        let unreachable = |e: fred::error::Error| {
            let url = redacted(&base);
            if let Some(reason) = tls::explain(&e, uses_tls) {
                return ClusterError::Unreachable { url, reason };
            }
            let reason = e.to_string();
            if reason.contains("HELLO") || reason.contains("unknown command") {
                ClusterError::Version { url, reason }
            } else {
                ClusterError::Unreachable { url, reason }
            }
        };
        let client = builder.build().map_err(unreachable)?;
        client.init().await.map_err(unreachable)?;
        // Only the subscribers hear messages: the command client keeps fred's small rings.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = PUBSUB_BUFFER);
        let subscriber = builder.build_subscriber_client().map_err(unreachable)?;
        let feed = builder.build_subscriber_client().map_err(unreachable)?;
        feed.init().await.map_err(unreachable)?;
        Ok(Self {
            client,
            subscriber,
            feed,
            keys: Keys::new(prefix),
            node: NodeId::generate(),
            health: Arc::new(Health::default()),
        })
    }

    /// The Socket.IO adapter's state over this node's pub/sub client. Subscriptions are
    /// re-made after every reconnection, so fan-out resumes when Redis comes back.
    pub async fn adapter(
        &self,
    ) -> Result<
        socketioxide_redis::RedisAdapterCtr<socketioxide_redis::drivers::fred::FredDriver>,
        ClusterError,
    > {
        let config =
            socketioxide_redis::RedisAdapterConfig::new().with_prefix(self.keys.adapter_prefix());
        let ctr = socketioxide_redis::RedisAdapterCtr::new_with_fred_config(
            self.subscriber.clone(),
            config,
        )
        .await
        .map_err(|e| ClusterError::Unreachable {
            url: "(pub/sub)".to_owned(),
            reason: e.to_string(),
        })?;
        drop(tokio::spawn(keep_subscriptions(
            self.subscriber.clone(),
            self.health.clone(),
        )));
        Ok(ctr)
    }

    /// Closes both connections (at shutdown, after the node has signed off).
    pub async fn close(&self) {
        let _ = self.feed.quit().await;
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }
}

/// Re-makes the adapter's subscriptions after every reconnection of the pub/sub client, and
/// keeps `/healthz` unhealthy until they are back: until then, events from other nodes would
/// not arrive. (fred's own `manage_subscriptions` gives up on the empty pattern list the
/// adapter leaves, so the shard channels the adapter uses are re-subscribed here.)
async fn keep_subscriptions(subscriber: fred::clients::SubscriberClient, health: Arc<Health>) {
    use fred::interfaces::{EventInterface, PubsubInterface};
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    loop {
        tokio::select! {
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                loop {
                    let channels: Vec<String> = subscriber
                        .tracked_shard_channels()
                        .into_iter()
                        .map(|c| c.to_string())
                        .collect();
                    match subscriber.ssubscribe(channels).await {
                        Ok(()) => {
                            health.pubsub_up();
                            break;
                        }
                        Err(e) => {
                            health.pubsub_down(format!("redis: pub/sub: {e}"));
                            tokio::time::sleep(Duration::from_millis(u64::from(RECONNECT_DELAY_MS))).await;
                        }
                    }
                }
            }
            error = errors.recv() => {
                match error {
                    Ok((e, _)) => health.pubsub_down(format!("redis: pub/sub: {e}")),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    Err(_) => {}
                }
            }
        }
    }
}

fn strip_protocol_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => {
            let rest: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("protocol="))
                .collect();
            if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            }
        }
        None => url.to_owned(),
    }
}

/// The URL without its password, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Locks a std mutex, surviving poison (the guarded data is always left consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_query_is_dropped_and_passwords_redacted() {
        assert_eq!(
            strip_protocol_query("redis://h:6379?protocol=resp3"),
            "redis://h:6379"
        );
        assert_eq!(
            strip_protocol_query("redis://h:6379/0?protocol=RESP3&x=1"),
            "redis://h:6379/0?x=1"
        );
        assert_eq!(redacted("redis://u:secret@h:6379"), "redis://…@h:6379");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(NodeId::generate(), NodeId::generate());
    }
}
