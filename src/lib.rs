//! A self-hosted WebRTC signaling server for live browser broadcasts: one broadcaster, many
//! viewers, live chat. See PROTOCOL.md for the wire contract.

pub mod channels;
pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod healthcheck;
pub mod http;
pub mod invites;
pub mod metrics;
pub mod registry;
pub mod shutdown;
pub mod signaling;
pub mod telemetry;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_redis::FredAdapter;
use tokio::task::JoinHandle;

use channels::Registry;
use client_addr::{SessionsPerAddr, TrustedProxies};
use cluster::node::Node;
use cluster::{ClusterError, ClusterRegistry, Connection};
use config::Config;
use connection::{ConnectionLimits, GuardedAcceptor, PublicIds, Reconnector};
use registry::{MemoryRegistry, RegistryLimits};
use signaling::{RateLimits, Rates, SweeperGuard};

/// Transport settings of the earlier server (PROTOCOL.md "Transport settings").
const PING_INTERVAL: Duration = Duration::from_secs(25);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on every inbound message, polling body and WebSocket message alike.
const MAX_INBOUND_BYTES: usize = 1_000_000;
/// Bytes read from a WebSocket at a time; messages larger than this still arrive whole, and a
/// smaller buffer keeps idle connections lean.
const WS_READ_BUFFER: usize = 1024;
/// Cap on a connection's HTTP/1 read buffer, and so on a request head: roomy for a browser
/// with many cookies (Node's default is 16 KiB), bounded for a hostile client.
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// Pending connections the kernel queues for us (Linux caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 4096;

/// Why the server could not start; each message is one clear line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load TLS certificate/key ({cert}, {key}): {source}")]
    Tls {
        cert: String,
        key: String,
        source: std::io::Error,
    },
    #[error(
        "assets directory {0} has no main.js; fix --assets-dir (ASSETS_DIR), or leave it unset to serve the built-in files"
    )]
    Assets(String),
    #[error(transparent)]
    Template(#[from] http::TemplateError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot set up webhooks: {0}")]
    Webhooks(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Closes every socket of this node and, in cluster mode, signs the node off.
type Closer = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A server that is accepting connections.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub https: bool,
    handle: Handle<SocketAddr>,
    close: Closer,
    task: JoinHandle<std::io::Result<()>>,
    grace: Duration,
    _sweeper: SweeperGuard,
    webhooks: webhooks::Worker,
}

impl RunningServer {
    /// Base URL clients use, e.g. `http://127.0.0.1:3000`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting, disconnects every socket, lets in-flight requests finish, and waits.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.handle.graceful_shutdown(Some(self.grace));
        (self.close)().await;
        self.wait().await
    }

    /// Waits until the server stops, then gives webhook deliveries their short grace.
    pub async fn wait(self) -> Result<(), StartError> {
        let RunningServer {
            task,
            _sweeper: sweeper,
            webhooks,
            ..
        } = self;
        let result = served(task).await;
        drop(sweeper);
        webhooks.finish().await;
        result
    }

    /// Runs until SIGTERM/SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), StartError> {
        let RunningServer {
            handle,
            close,
            task,
            grace,
            _sweeper: sweeper,
            webhooks,
            ..
        } = self;
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopping.clone();
        let closing = tokio::spawn(async move {
            shutdown::signal().await;
            tracing::info!("shutting down: closing sockets, finishing in-flight requests");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            handle.graceful_shutdown(Some(grace));
            close().await;
        });
        let result = served(task).await;
        // The sign-off may already have run (in `closing`); the node's heartbeat does nothing
        // after it (`Node::sign_off`), and the task stops here.
        drop(sweeper);
        if stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // The sockets' departures and, in cluster mode, the node's sign-off finish before
            // the process exits (bounded: Redis commands time out).
            if tokio::time::timeout(grace + Duration::from_secs(5), closing)
                .await
                .is_err()
            {
                tracing::warn!("shutdown clean-up did not finish in time");
            }
        } else {
            closing.abort();
        }
        // After the sign-off, whose departures end broadcasts too.
        webhooks.finish().await;
        result
    }
}

/// The serving task's result.
async fn served(task: JoinHandle<std::io::Result<()>>) -> Result<(), StartError> {
    match task.await {
        Ok(result) => result.map_err(StartError::Serve),
        Err(join) => Err(StartError::Serve(std::io::Error::other(join))),
    }
}

/// The connection cap actually enforced: the configured one, kept below the open-file limit
/// (less room for the listener, logs and a margin) so that going over it is answered with a
/// 503 instead of failed accepts and a server that no longer answers `/healthz`.
fn connection_cap(configured: u64) -> usize {
    const RESERVED_FDS: u64 = 64;
    let configured = usize::try_from(configured).unwrap_or(usize::MAX);
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) if soft > RESERVED_FDS * 2 => {
            let fd_cap = usize::try_from(soft - RESERVED_FDS).unwrap_or(usize::MAX);
            if fd_cap < configured {
                tracing::info!(
                    "connection limit {fd_cap} (open-file limit {soft}); raise it with ulimit -n"
                );
            }
            configured.min(fd_cap)
        }
        _ => configured,
    }
}

/// Binds with a deep accept queue: a crowd joining at once (a popular stream going live) would
/// overflow the default 128 and its connection attempts would wait for the kernel's
/// one-second retry.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)?.into_std()
}

/// Makes aws-lc-rs the process's rustls provider (the one axum-server's HTTPS, fred's
/// `rediss://` and reqwest's webhooks are built with), unless one is installed already. Without it rustls guesses from
/// its crate features and panics when it finds two: a test build also compiles in ring (for
/// the test client), and a crate added later might too.
fn install_crypto_provider() {
    // An error means a provider is installed already (by an embedding program): keep it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Binds, builds the app and starts serving in the background.
pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
    install_crypto_provider();
    client_addr::warn_if_outside_cloud_run(&config.trusted_proxies);
    if let Some(dir) = config.assets_dir()
        && !http::assets_present(dir)
    {
        return Err(StartError::Assets(dir.display().to_string()));
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(RustlsConfig::from_pem_file(cert, key).await.map_err(
            |source| StartError::Tls {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                source,
            },
        )?),
        _ => None,
    };
    let pages = http::render_pages(config)?;

    let registry_limits = RegistryLimits {
        max_channels: usize::try_from(config.max_channels).unwrap_or(usize::MAX),
        idle_ttl: config.channel_ttl(),
        max_channels_per_socket: usize::try_from(config.max_channels_per_socket)
            .unwrap_or(usize::MAX),
        max_channels_per_addr: usize::try_from(config.max_channels_per_ip).unwrap_or(usize::MAX),
        tree: config.tree_limits(),
        resume_grace: config.resume_grace(),
        max_waiting_per_channel: usize::try_from(config.max_waiting_per_channel)
            .unwrap_or(usize::MAX),
        max_waiting: usize::try_from(config.max_waiting).unwrap_or(usize::MAX),
        chat_history: usize::try_from(config.chat_history).unwrap_or(usize::MAX),
        ban_by_address: config.ban_by_address,
    };
    let public_ids = PublicIds::default();
    let sessions = Arc::new(SessionsPerAddr::new(
        usize::try_from(config.max_connections_per_ip).unwrap_or(usize::MAX),
    ));
    let reconnector = Reconnector::default();
    let parts = Parts {
        config,
        pages,
        public_ids: public_ids.clone(),
        sessions,
        reconnector: reconnector.clone(),
    };
    let assembled = match &config.redis_url {
        None => {
            let registry = Registry::memory(MemoryRegistry::new(registry_limits));
            let built = socketio_settings(SocketIo::builder(), config).build_layer();
            parts.assemble::<LocalAdapter>(registry, built, None, |()| {
                Box::pin(std::future::ready(Ok(())))
            })
        }
        Some(url) => {
            let trust = cluster::Trust {
                ca_file: config.redis_ca_cert.as_deref(),
                any_name: config.redis_skip_hostname_check,
            };
            let connection = Connection::open(url, &config.redis_prefix, trust).await?;
            let adapter = connection.adapter().await?;
            let builder = SocketIo::builder().with_adapter::<FredAdapter<_>>(adapter);
            let built = socketio_settings(builder, config).build_layer();
            let registry = ClusterRegistry::new(
                connection.client.clone(),
                connection.keys.clone(),
                registry_limits,
                connection.node.clone(),
                connection.health.clone(),
                config.heartbeat(),
            );
            registry
                .follow_feed(connection.feed.clone(), config.heartbeat())
                .await;
            let node = Arc::new(Node::new(
                connection.client.clone(),
                connection.keys.clone(),
                connection.node.clone(),
                config.heartbeat(),
                registry.clone(),
                connection.health.clone(),
            ));
            node.announce()
                .await
                .map_err(|reason| ClusterError::Unreachable {
                    url: "Redis".to_owned(),
                    reason,
                })?;
            node.learn_levels().await;
            tracing::info!(node = %node.id(), prefix = %config.redis_prefix, "cluster mode: joined");
            let cluster = ClusterNode {
                node,
                connection: Arc::new(connection),
            };
            parts.assemble(Registry::Cluster(registry), built, Some(cluster), |init| {
                Box::pin(async move {
                    init.await.map_err(|e| ClusterError::Unreachable {
                        url: "Redis (pub/sub)".to_owned(),
                        reason: e.to_string(),
                    })
                })
            })
        }
    };
    let assembled = assembled?;
    assembled.init.await?;
    let Assembled {
        app,
        close,
        sweeper,
        webhooks,
        ..
    } = assembled;

    let addr = SocketAddr::new(config.host, config.port);
    let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;

    let handle = Handle::new();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let https = tls.is_some();
    let limits = ConnectionLimits {
        max_connections: connection_cap(config.max_connections),
        write_stall: config.write_timeout(),
        first_byte: config.header_timeout(),
    };
    let open = Arc::new(AtomicUsize::new(0));
    let mut server =
        axum_server::from_tcp(listener).map_err(|source| StartError::Bind { addr, source })?;
    server
        .http_builder()
        .http1()
        .max_buf_size(HTTP1_MAX_BUF)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout());
    let server = server.handle(handle.clone());
    let task = match tls {
        Some(tls) => tokio::spawn(
            server
                .acceptor(GuardedAcceptor::new(
                    RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new()),
                    limits,
                    open,
                    public_ids,
                    reconnector,
                ))
                .serve(service),
        ),
        None => tokio::spawn(
            server
                .acceptor(GuardedAcceptor::new(
                    NoDelayAcceptor::new(),
                    limits,
                    open,
                    public_ids,
                    reconnector,
                ))
                .serve(service),
        ),
    };
    let server = RunningServer {
        local_addr,
        https,
        handle,
        close,
        task,
        grace: config.shutdown_grace(),
        _sweeper: sweeper,
        webhooks,
    };
    tracing::info!("listening on {}", server.url());
    Ok(server)
}

/// The Socket.IO settings both adapters share.
fn socketio_settings<A: Adapter>(
    builder: SocketIoBuilder<A>,
    config: &Config,
) -> SocketIoBuilder<A> {
    builder
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .max_payload(MAX_INBOUND_BYTES as u64)
        .ws_max_message_size(MAX_INBOUND_BYTES)
        .ws_max_frame_size(MAX_INBOUND_BYTES)
        .max_buffer_size(usize::try_from(config.max_queued_packets).unwrap_or(usize::MAX))
        .ws_read_buffer_size(WS_READ_BUFFER)
        .transports(config.transports.socketio())
}

/// A node of a cluster: what shutdown needs to sign it off.
#[derive(Clone)]
struct ClusterNode {
    node: Arc<Node>,
    connection: Arc<Connection>,
}

/// What the app is built from, whichever the adapter.
struct Parts<'a> {
    config: &'a Config,
    pages: http::Pages,
    public_ids: PublicIds,
    sessions: Arc<SessionsPerAddr>,
    reconnector: Reconnector,
}

/// The adapter's initialization, awaited before serving (subscriptions in cluster mode).
type Init = Pin<Box<dyn Future<Output = Result<(), ClusterError>> + Send>>;

/// The assembled app, ready to serve once `init` is done.
struct Assembled {
    app: axum::Router,
    init: Init,
    close: Closer,
    sweeper: SweeperGuard,
    webhooks: webhooks::Worker,
}

impl Parts<'_> {
    /// Attaches the protocol, starts the background work, and builds the router.
    fn assemble<A: Adapter + socketioxide_core::adapter::DefinedAdapter>(
        self,
        registry: Registry,
        (layer, io): (socketioxide::layer::SocketIoLayer<A>, SocketIo<A>),
        cluster: Option<ClusterNode>,
        init: impl FnOnce(A::InitRes) -> Init,
    ) -> Result<Assembled, StartError> {
        let (hooks, worker) = webhooks::Webhooks::start(
            self.config.webhooks(),
            cluster.as_ref().map(|c| c.node.id().to_string()),
        )
        .map_err(|e| StartError::Webhooks(e.to_string()))?;
        let limits = Arc::new(RateLimits::new(Rates::from_config(self.config)));
        let invites = self.config.invite_key();
        if invites.is_ephemeral() && self.config.redis_url.is_some() {
            tracing::warn!(
                "no --invite-secret: invitations to private channels work only on the node that made them, and end with it; set the same INVITE_SECRET on every node"
            );
        } else if invites.is_ephemeral() {
            tracing::info!(
                "no --invite-secret: invitations to private channels end when this process does"
            );
        }
        let init = init(signaling::attach(
            &io,
            signaling::Parts {
                registry: registry.clone(),
                limits: limits.clone(),
                public_ids: self.public_ids.clone(),
                proxies: TrustedProxies::new(&self.config.trusted_proxies),
                sessions: self.sessions.clone(),
                webhooks: hooks.clone(),
                invites,
            },
        ));
        let sweeper = signaling::spawn_sweeper(
            registry.clone(),
            limits,
            io.clone(),
            cluster
                .as_ref()
                .map(|c| (c.node.clone(), self.reconnector.clone())),
            hooks.clone(),
        );
        let status = cluster.as_ref().map(|c| http::ClusterStatus {
            node: c.node.id().clone(),
            health: c.connection.health.clone(),
        });
        let shared = http::Shared {
            registry,
            sessions: self.sessions,
            public_ids: self.public_ids,
            cluster: status,
            sockets: metrics::sockets_of(&io),
        };
        let app = http::router(self.config, self.pages, shared, layer);
        let close: Closer = Arc::new(move || {
            let io = io.clone();
            let cluster = cluster.clone();
            let hooks = hooks.clone();
            Box::pin(async move {
                if let Some(cluster) = &cluster {
                    // Whatever this node's sockets hold goes first, while the namespace can
                    // still emit: peers are told now, not when the heartbeat runs out.
                    for departure in cluster.node.sign_off().await {
                        signaling::announce(&io, &hooks, departure).await;
                    }
                }
                io.close().await;
                if let Some(cluster) = cluster {
                    cluster.connection.close().await;
                }
            })
        });
        Ok(Assembled {
            app,
            init,
            close,
            sweeper,
            webhooks: worker,
        })
    }
}

/// Starts the server and serves until a shutdown signal.
pub async fn run(config: Config) -> Result<(), StartError> {
    start(&config).await?.run_until_signal().await
}
