//! The Socket.IO side of the server: registers the default namespace and routes each event of
//! PROTOCOL.md to its handler.
//!
//! Events are dispatched through each socket's [`mailbox::Mailbox`] instead of socketioxide's
//! closure handlers (which spawn one task per event and so may run a socket's events out of
//! order: an ICE candidate overtaking its offer, a chat message overtaking the previous one).
//! One fallback handler per socket, not one per event, keeps per-connection memory small.
//! Everything is generic over the Socket.IO adapter: in-process, or Redis in cluster mode.

mod across;
mod client_key;
pub mod events;
mod handlers;
pub mod limits;
mod mailbox;
pub mod outbound;
pub mod payloads;
pub mod refusals;
mod sweeper;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide_core::adapter::DefinedAdapter;

pub use limits::{Rate, RateLimits, Rates};

use crate::channels::Registry;
use crate::client_addr::{SessionsPerAddr, TrustedProxies};
use crate::connection::PublicIds;
use crate::invites::InviteKey;
use crate::registry::membership::Departure;
use crate::webhooks::Webhooks;
pub use sweeper::{SweeperGuard, spawn_sweeper};

/// Shared state every handler sees.
pub struct Signaling<A: Adapter> {
    io: SocketIo<A>,
    registry: Registry,
    limits: Arc<RateLimits>,
    public_ids: PublicIds,
    proxies: Arc<TrustedProxies>,
    sessions: Arc<SessionsPerAddr>,
    /// When a refusal was last logged: one abusive address must not flood the log.
    log_gate: Arc<AtomicU64>,
    /// Broadcast lifecycle events for the operator's receiver (a no-op without one).
    webhooks: Webhooks,
    /// Signs and checks invitations to private channels.
    invites: Arc<InviteKey>,
}

impl<A: Adapter> Clone for Signaling<A> {
    fn clone(&self) -> Self {
        Self {
            io: self.io.clone(),
            registry: self.registry.clone(),
            limits: self.limits.clone(),
            public_ids: self.public_ids.clone(),
            proxies: self.proxies.clone(),
            sessions: self.sessions.clone(),
            log_gate: self.log_gate.clone(),
            webhooks: self.webhooks.clone(),
            invites: self.invites.clone(),
        }
    }
}

/// What the handlers share, besides the Socket.IO handle.
pub struct Parts {
    pub registry: Registry,
    pub limits: Arc<RateLimits>,
    pub public_ids: PublicIds,
    pub proxies: TrustedProxies,
    pub sessions: Arc<SessionsPerAddr>,
    pub webhooks: Webhooks,
    pub invites: InviteKey,
}

/// Registers the protocol on the default namespace. With a cross-node adapter the returned
/// initialization must be awaited before serving.
pub fn attach<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, parts: Parts) -> A::InitRes {
    let Parts {
        registry,
        limits,
        public_ids,
        proxies,
        sessions,
        webhooks,
        invites,
    } = parts;
    if let Registry::Cluster(cluster) = &registry {
        let counts_io = io.clone();
        cluster.tell_counts_with(Arc::new(move |broadcaster, channel, counts| {
            let io = counts_io.clone();
            Box::pin(async move {
                for count in counts {
                    handlers::tell_viewer_count(&io, &broadcaster, channel.as_str(), count).await;
                }
            })
        }));
        cluster.render_chat_with(Arc::new(handlers::render_chat));
        cluster.render_tree_with(Arc::new(handlers::render_tree));
        cluster.attach_sockets(Arc::new(across::Across { io: io.clone() }));
    }
    io.ns(
        "/",
        OnConnect(Arc::new(Signaling {
            io: io.clone(),
            registry,
            limits,
            public_ids,
            proxies: Arc::new(proxies),
            sessions,
            log_gate: Arc::new(AtomicU64::new(0)),
            webhooks,
            invites: Arc::new(invites),
        })),
    )
}

/// Decodes an event and hands it to its handler; anything unknown is ignored. The events and
/// their handlers are listed in PROTOCOL.md order in `events::decode` and `handlers::handle`.
async fn dispatch<A: Adapter>(state: &Signaling<A>, socket: &SocketRef<A>, text: &str) {
    let (event, payload) = match events::parse_packet(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Logs name sockets by their public id: the session id is a credential.
            tracing::debug!(sid = %handlers::public_id(socket), "unreadable event packet: {e}");
            return;
        }
    };
    let ctx = handlers::Ctx::new(state, socket);
    match events::decode(&event, payload) {
        Some(Ok(request)) => handlers::handle(&ctx, request).await,
        Some(Err(refusal)) => handlers::refuse(&ctx, refusal).await,
        None => tracing::debug!(%event, "ignoring unknown event"),
    }
}

/// Waits (briefly) until socketioxide has marked the socket connected. A client may send its
/// first event the moment it reads the CONNECT packet, which socketioxide writes just before it
/// marks the socket connected, on another task; an answer emitted in between would be refused.
/// Only such an early event ever waits (it then queues, keeping the socket's order).
async fn connected<A: Adapter>(socket: &SocketRef<A>) {
    for _ in 0..200 {
        if socket.connected() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Marker for the handler traits implemented below (they are generic over an extractor tuple).
pub struct Inline;

/// The handlers share one copy of the state: every socket holds two of them (for its events
/// and its disconnect) for its whole life, so each is a pointer rather than a copy of it.
struct OnConnect<A: Adapter>(Arc<Signaling<A>>);

impl<A: Adapter> Clone for OnConnect<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<A: Adapter> ConnectHandler<A, Inline> for OnConnect<A> {
    /// Runs before socketioxide sends the CONNECT packet: the socket gets its public id here,
    /// so that the packet leaves with it (see [`PublicIds`]).
    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<A>>,
        auth: &'a Option<Value>,
    ) -> Pin<Box<dyn Future<Output = Result<(), Box<dyn fmt::Display + Send>>> + Send + 'a>> {
        let socket = SocketRef::from(s);
        if let Some(addr) = self.0.proxies.of_request(socket.req_parts()) {
            if !self.0.sessions.try_take(addr) {
                // The client's `connect_error` carries this; nothing was kept for it.
                let refusal: Box<dyn fmt::Display + Send> =
                    Box::new("Too many connections from your network address; try again later");
                crate::telemetry::throttled(
                    &self.0.log_gate,
                    || tracing::warn!(%addr, "refused a connection: too many from this address"),
                );
                crate::metrics::refused(crate::metrics::Reason::Quota);
                return Box::pin(std::future::ready(Err(refusal)));
            }
            // Holding a `ClientAddr` means holding a slot: the disconnect handler gives it back.
            socket.extensions.insert(handlers::ClientAddr(addr));
        }
        // Asked once per connection: the official clients send the same `auth` again when
        // they reconnect, so a page keeps its codes across reconnects.
        if refusals::asks_for_codes(auth.as_ref()) {
            socket.extensions.insert(refusals::ErrorCodes);
        }
        client_key::identify(&socket, auth.as_ref());
        let id = handlers::assign_public_id(&socket);
        self.0.public_ids.insert(socket.id.as_str(), id.clone());
        // The handlers go in here, before socketioxide sends the CONNECT packet: the client
        // may send its first event the moment it reads that packet, and `call` below runs
        // later, on another task; an event with no handler yet would be dropped unseen.
        let mailbox = mailbox::Mailbox::new();
        socket.on_fallback(OnEvent(self.0.clone(), mailbox.clone()));
        socket.on_disconnect(OnDisconnect(self.0.clone(), mailbox));
        handlers::join_own_room(&socket, &id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn call(&self, s: Arc<Socket<A>>, _auth: Option<Value>) {
        let socket = SocketRef::from(s);
        handlers::connect(&socket, handlers::public_id(&socket));
    }
}

struct OnEvent<A: Adapter>(Arc<Signaling<A>>, mailbox::Mailbox);

impl<A: Adapter> MessageHandler<A, Inline> for OnEvent<A> {
    fn call(&self, s: Arc<Socket<A>>, value: Value, _ack_id: Option<i64>) {
        let socket = SocketRef::from(s);
        let Value::Str(text, _) = value else {
            tracing::debug!(sid = %handlers::public_id(&socket), "ignoring binary event");
            return;
        };
        let state = self.0.clone();
        let job_socket = socket.clone();
        let size = text.len();
        let job: mailbox::Job = Box::pin(async move {
            connected(&job_socket).await;
            dispatch(&state, &job_socket, text.as_str()).await;
        });
        let sid = handlers::public_id(&socket);
        let registry = &self.0.registry;
        if self
            .1
            .submit(job, size, || registry.audience(&sid))
            .is_err()
        {
            tracing::debug!(%sid, "dropping an event: too many waiting for this socket");
            // While the shared storage is away every event waits out its timeout: the queue
            // fills through the server's fault, not the client's, and costs it no strike.
            if !self.0.registry.is_available() {
                return;
            }
            if self.0.limits.strike(&sid) == limits::Verdict::Disconnect {
                tracing::warn!(%sid, "disconnecting a client that kept sending faster than it was served");
                let _ = socket.disconnect();
            }
        }
    }
}

struct OnDisconnect<A: Adapter>(Arc<Signaling<A>>, mailbox::Mailbox);

impl<A: Adapter> DisconnectHandler<A, Inline> for OnDisconnect<A> {
    fn call_with_defer(
        &self,
        s: Arc<Socket<A>>,
        reason: DisconnectReason,
        defer: fn(Arc<Socket<A>>),
    ) {
        let socket = SocketRef::from(s.clone());
        self.0.public_ids.remove(socket.id.as_str());
        if let Some(handlers::ClientAddr(addr)) = socket.extensions.get::<handlers::ClientAddr>() {
            self.0.sessions.release(addr);
        }
        let state = self.0.clone();
        // After every event the socket sent before it, like any other event.
        self.1.submit_last(Box::pin(async move {
            handlers::disconnect(&handlers::Ctx::new(&state, &socket), reason).await;
        }));
        defer(s);
    }
}

/// Tells everybody a departure concerns (at shutdown, for what this node's sockets still held).
pub async fn announce<A: Adapter>(io: &SocketIo<A>, webhooks: &Webhooks, departure: Departure) {
    handlers::announce(io, webhooks, departure).await;
}
