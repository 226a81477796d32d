//! What cluster mode asks of this transport (`cluster::Sockets`): sending a channel owner's
//! events to the sockets here, knowing which sockets are here, and delivering relays that
//! other nodes' sockets sent to them once this node checked them.

use std::future::Future;
use std::pin::Pin;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use super::handlers::{deliver, held_here, send};
use super::outbound::RelayError;
use super::refusals::Refused;
use crate::cluster::{Emits, Reach, Relay, Sockets};
use crate::metrics;
use crate::registry::errors::ChannelError;
use crate::registry::ids::SocketId;

/// This node's sockets, for the cluster.
pub(super) struct Across<A: Adapter> {
    pub io: SocketIo<A>,
}

impl<A: Adapter> Sockets for Across<A> {
    fn emit(&self, emits: Emits, reach: Reach) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let io = self.io.clone();
        Box::pin(async move { send_emits(&io, &emits, reach).await })
    }

    fn holds(&self, sid: &SocketId) -> bool {
        held_here(&self.io, sid)
    }

    fn relay(
        &self,
        relay: Relay,
        refusal: Option<ChannelError>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let io = self.io.clone();
        Box::pin(async move { deliver_relay(&io, relay, refusal).await })
    }
}

/// Sends events in order, each to those of its recipients this node holds or, through the
/// adapter, to all of them (see `cluster::emits`). Each awaited before the next, as [`send`].
async fn send_emits<A: Adapter>(io: &SocketIo<A>, emits: &Emits, reach: Reach) {
    for (event, data, to) in emits.iter() {
        let Some(namespace) = io.of("/") else {
            tracing::debug!("events not delivered: the server is closing");
            return;
        };
        let rooms: Vec<String> = to.iter().map(|t| t.to_string()).collect();
        let operators = match reach {
            Reach::Here => namespace.to(rooms).local(),
            Reach::Everywhere => namespace.to(rooms),
        };
        deliver(Box::pin(operators.emit(event, data)), event).await;
    }
}

/// A relay from another node to a socket here: delivered, or refused to its sender with
/// `relay_error` as its own node would have (never a strike: the race is the server's, not
/// the client's).
async fn deliver_relay<A: Adapter>(io: &SocketIo<A>, relay: Relay, refusal: Option<ChannelError>) {
    let event = relay.kind.event();
    match refusal {
        None => {
            let Some(namespace) = io.of("/") else {
                return;
            };
            let room = relay.to.to_string();
            deliver(
                Box::pin(namespace.to(room).local().emit(event, &relay.data)),
                event,
            )
            .await;
        }
        Some(e) => {
            let refusal = Refused::Channel(e);
            let code = refusal.code();
            metrics::refused(code.into());
            let message = refusal.to_string();
            tracing::debug!(event, %message, %code, "relay refused by its target's node");
            let error = RelayError {
                event: relay.kind,
                message,
                code: relay.codes.then_some(code),
            };
            send(io, std::slice::from_ref(&relay.from), &error).await;
        }
    }
}
