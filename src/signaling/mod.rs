//! The Socket.IO side of the server: registers the default namespace and routes each event of
//! PROTOCOL.md to its handler.
//!
//! Events are dispatched *inline*, in the order they arrive on the connection, instead of through
//! socketioxide's closure handlers (which spawn one task per event and so may run a socket's
//! events out of order: an ICE candidate overtaking its offer, a chat message overtaking the
//! previous one). Every handler is short and never awaits, so running it on the connection's own
//! task is both ordered and cheaper. One fallback handler per socket, not one per event, keeps
//! per-connection memory small.

pub mod channels;
pub mod errors;
pub mod events;
mod handlers;
pub mod ids;
pub mod limits;
pub mod payloads;
mod sweeper;
pub mod tree;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};

pub use channels::{Registry, RegistryLimits};
pub use limits::{Rate, RateLimits, Rates};

use crate::client_addr::{SessionsPerAddr, TrustedProxies};
use crate::connection::PublicIds;
pub use sweeper::{SweeperGuard, spawn_sweeper};

/// Shared state every handler sees.
#[derive(Clone)]
pub struct Signaling {
    registry: Registry,
    limits: Arc<RateLimits>,
    public_ids: PublicIds,
    proxies: Arc<TrustedProxies>,
    sessions: Arc<SessionsPerAddr>,
    /// When a refusal was last logged: one abusive address must not flood the log.
    log_gate: Arc<AtomicU64>,
}

/// Registers the protocol on the default namespace.
pub fn attach(
    io: &SocketIo,
    registry: Registry,
    limits: Arc<RateLimits>,
    public_ids: PublicIds,
    proxies: TrustedProxies,
    sessions: Arc<SessionsPerAddr>,
) {
    io.ns(
        "/",
        OnConnect(Signaling {
            registry,
            limits,
            public_ids,
            proxies: Arc::new(proxies),
            sessions,
            log_gate: Arc::new(AtomicU64::new(0)),
        }),
    );
}

/// Decodes an event and hands it to its handler; anything unknown is ignored. The events and
/// their handlers are listed in PROTOCOL.md order in `events::decode` and `handlers::handle`.
fn dispatch(state: &Signaling, socket: &SocketRef, event: &str, payload: Option<&RawValue>) {
    let ctx = handlers::Ctx::new(state, socket);
    match events::decode(event, payload) {
        Some(Ok(request)) => handlers::handle(&ctx, request),
        Some(Err(refusal)) => handlers::refuse(&ctx, refusal),
        None => tracing::debug!(event, "ignoring unknown event"),
    }
}

/// Marker for the handler traits implemented below (they are generic over an extractor tuple).
pub struct Inline;

#[derive(Clone)]
struct OnConnect(Signaling);

impl ConnectHandler<LocalAdapter, Inline> for OnConnect {
    /// Runs before socketioxide sends the CONNECT packet: the socket gets its public id here,
    /// so that the packet leaves with it (see [`PublicIds`]).
    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket>,
        _auth: &'a Option<Value>,
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
                return Box::pin(std::future::ready(Err(refusal)));
            }
            // Holding a `ClientAddr` means holding a slot: the disconnect handler gives it back.
            socket.extensions.insert(handlers::ClientAddr(addr));
        }
        let id = handlers::assign_public_id(&socket);
        self.0.public_ids.insert(socket.id.as_str(), id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn call(&self, s: Arc<Socket>, _auth: Option<Value>) {
        let socket = SocketRef::from(s);
        // The handlers go in before anything else, so no early event can miss them.
        let id = handlers::public_id(&socket);
        socket.on_fallback(OnEvent(self.0.clone()));
        socket.on_disconnect(OnDisconnect(self.0.clone()));
        handlers::connect(&socket, id);
    }
}

struct OnEvent(Signaling);

impl MessageHandler<LocalAdapter, Inline> for OnEvent {
    fn call(&self, s: Arc<Socket>, value: Value, _ack_id: Option<i64>) {
        let socket = SocketRef::from(s);
        // Logs name sockets by their public id: the session id is a credential.
        let Value::Str(text, _) = &value else {
            tracing::debug!(sid = %handlers::public_id(&socket), "ignoring binary event");
            return;
        };
        match events::parse_packet(text.as_str()) {
            Ok((event, payload)) => {
                let _span = tracing::debug_span!("event", event = %event).entered();
                dispatch(&self.0, &socket, &event, payload);
            }
            Err(e) => tracing::debug!(
                sid = %handlers::public_id(&socket),
                "unreadable event packet: {e}"
            ),
        }
    }
}

struct OnDisconnect(Signaling);

impl DisconnectHandler<LocalAdapter, Inline> for OnDisconnect {
    fn call_with_defer(&self, s: Arc<Socket>, reason: DisconnectReason, defer: fn(Arc<Socket>)) {
        let socket = SocketRef::from(s.clone());
        self.0.public_ids.remove(socket.id.as_str());
        if let Some(handlers::ClientAddr(addr)) = socket.extensions.get::<handlers::ClientAddr>() {
            self.0.sessions.release(addr);
        }
        handlers::disconnect(&handlers::Ctx::new(&self.0, &socket), reason);
        defer(s);
    }
}
