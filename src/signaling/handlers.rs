//! One small function per event: decode, ask the registry, emit. No protocol state lives here.

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use socketioxide::BroadcastError;
use socketioxide::SocketError;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;

use super::Signaling;
use super::channels::{Activity, Departure, Registry, SocketId, TreeEvent, unix_now};
use super::events::{Refusal, Request};
use super::limits::{Class, RateLimits, Verdict};
use super::payloads::{
    self, AliasSet, BroadcasterAvailable, BroadcasterReady, ChannelList, ChannelRef, ClientId,
    DownstreamLeft, ErrorMessage, ErrorPrefix, NewMessage, RelayError, RelayKind, RelayTree,
    RelayedCandidate, RelayedSdp, Upstream, ViewerCount,
};
use socketioxide::adapter::LocalAdapter;
use socketioxide::operators::BroadcastOperators;

/// What a handler needs about the socket it serves.
pub struct Ctx<'a> {
    registry: &'a Registry,
    limits: &'a RateLimits,
    socket: &'a SocketRef,
    sid: SocketId,
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a Signaling, socket: &'a SocketRef) -> Self {
        Self {
            registry: &state.registry,
            limits: &state.limits,
            socket,
            sid: public_id(socket),
        }
    }

    /// Counts an event against the caller's rate; when over it, answers `error` with the
    /// event's prefix and, for a caller that keeps going, disconnects it.
    fn admit(&self, class: Class, prefix: ErrorPrefix) -> bool {
        let verdict = self.limits.check(&self.sid, class);
        if verdict != Verdict::Allow {
            self.error(payloads::InvalidPayload {
                prefix,
                reason: "too many requests; wait a moment and try again".to_owned(),
            });
        }
        self.enforce(verdict)
    }

    /// Acts on a verdict: `true` when the event may go ahead.
    fn enforce(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Allow => true,
            Verdict::Refuse => false,
            Verdict::Disconnect => {
                // Logged once per socket: it is gone right after.
                tracing::warn!(sid = %self.sid, "disconnecting a client that ignored its rate limits");
                if let Err(e) = self.socket.clone().disconnect() {
                    tracing::debug!("could not disconnect: {e}");
                }
                false
            }
        }
    }

    /// Emits to the calling socket.
    fn reply<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        if let Err(e) = self.socket.emit(event, data) {
            tracing::debug!(event, "could not emit to caller: {e}");
        }
    }

    /// Emits to other sockets by id, serializing the payload once for all of them. `false` when
    /// some recipient's queue was full and the packet was dropped for it.
    fn send<T: Serialize + ?Sized>(&self, targets: &[SocketId], event: &str, data: &T) -> bool {
        if targets.is_empty() {
            return true;
        }
        let rooms: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        deliver(self.socket.within(rooms).emit(event, data), event)
    }

    /// The one place domain errors become the protocol's `error` event.
    fn error(&self, message: impl ToString) {
        let message = message.to_string();
        tracing::debug!(%message, "refused");
        self.reply("error", &ErrorMessage { message });
    }
}

/// Drives an adapter broadcast to completion. The in-process adapter finishes broadcasts
/// synchronously (its future is ready on first poll), which keeps emits in event order without a
/// task per emit. A cross-node adapter will need an async hand-off here.
/// Returns whether every recipient got the packet (a full per-socket queue drops it).
pub(super) fn deliver(fut: impl Future<Output = Result<(), BroadcastError>>, event: &str) -> bool {
    let fut = pin!(fut);
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => true,
        // A recipient that disconnected meanwhile is an everyday race, not worth a warning.
        Poll::Ready(Err(BroadcastError::Socket(errors)))
            if errors.iter().all(|e| matches!(e, SocketError::Closed)) =>
        {
            tracing::debug!(event, "recipient already gone");
            true
        }
        Poll::Ready(Err(e)) => {
            tracing::warn!(event, "not delivered to some sockets: {e}");
            false
        }
        Poll::Pending => {
            tracing::error!(event, "adapter did not deliver synchronously");
            false
        }
    }
}

/// The public id of a socket, drawn at connection (see [`SocketId`] for why it is not the
/// transport's session id).
pub fn public_id(socket: &SocketRef) -> SocketId {
    socket.extensions.get::<SocketId>().unwrap_or_else(|| {
        // `connect` stores the id before any handler can run; a socket without one would be a
        // bug, and a fresh id at least never exposes the session id.
        tracing::error!("socket without a public id");
        SocketId::generate()
    })
}

/// The network address a socket's client connects from (see `client_addr`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Gives a new socket its public id; call before any handler of it can run.
pub fn assign_public_id(socket: &SocketRef) -> SocketId {
    let id = SocketId::generate();
    socket.extensions.insert(id.clone());
    id
}

pub fn connect(socket: &SocketRef, id: SocketId) {
    // Join a room named after the public id so other sockets are addressed by it through the
    // adapter (the same call then works across nodes). The session id never leaves this socket.
    socket.join(id.to_string());
    tracing::info!(sid = %id, transport = ?socket.transport_type(), "connected");
    if let Err(e) = socket.emit("client_id", &ClientId { id: &id }) {
        tracing::debug!(sid = %id, "could not send client_id: {e}");
    }
}

/// Routes a decoded event to its handler, in PROTOCOL.md order.
pub fn handle(ctx: &Ctx, request: Request<'_>) {
    match request {
        Request::JoinAsBroadcaster(r) => join_as_broadcaster(ctx, r),
        Request::JoinAsViewer(r) => join_as_viewer(ctx, r),
        Request::Relay(kind, r) => relay(ctx, kind, r),
        Request::SetAlias(r) => set_alias(ctx, r),
        Request::SendMessage(r) => send_message(ctx, r),
        Request::StopBroadcast(r) => stop_broadcast(ctx, r),
        Request::RelayReady(r) => tree_report(ctx, r, TreeReport::Ready),
        Request::UpstreamFailed(r) => tree_report(ctx, r, TreeReport::UpstreamFailed),
    }
}

/// Answers an event that failed decoding: `error` with its prefix, or `relay_error` (which
/// also counts as a strike: relays are where junk floods come from).
pub fn refuse(ctx: &Ctx, refusal: Refusal) {
    match refusal {
        Refusal::Invalid(e) => ctx.error(e),
        Refusal::Relay(kind, message) => {
            refuse_relay(ctx, kind, message);
            ctx.enforce(ctx.limits.strike(&ctx.sid));
        }
    }
}

fn refuse_relay(ctx: &Ctx, kind: RelayKind, message: String) {
    tracing::debug!(event = kind.event(), %message, "relay refused");
    ctx.reply(
        "relay_error",
        &RelayError {
            event: kind,
            message,
        },
    );
}

pub fn join_as_broadcaster(ctx: &Ctx, request: payloads::JoinAsBroadcaster) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let force = request.force.unwrap_or(false);
    let relay = request.relay.unwrap_or(true);
    let addr = ctx.socket.extensions.get::<ClientAddr>().map(|a| a.0);
    match ctx.registry.join_as_broadcaster(
        &ctx.sid,
        addr,
        request.channel_id.as_deref(),
        force,
        relay,
    ) {
        Ok(started) => {
            tracing::info!(sid = %ctx.sid, channel = %started.channel_id, "broadcaster ready");
            ctx.reply(
                "broadcaster_ready",
                &BroadcasterReady {
                    id: &ctx.sid,
                    channel_id: &started.channel_id,
                },
            );
            ctx.send(
                &started.waiting_viewers,
                "broadcaster_available",
                &BroadcasterAvailable {
                    broadcaster_id: &ctx.sid,
                    channel_id: &started.channel_id,
                },
            );
            emit_tree(&|to| ctx.socket.within(to), &started.tree);
        }
        Err(e) => ctx.error(e),
    }
}

pub fn join_as_viewer(ctx: &Ctx, request: payloads::JoinAsViewer) {
    let class = match request.channel_id {
        Some(_) => Class::Join,
        None => Class::List,
    };
    if !ctx.admit(class, ErrorPrefix::Data) {
        return;
    }
    let Some(channel_id) = request.channel_id else {
        let channels = ctx.registry.list();
        return ctx.reply("channel_list", &ChannelList { channels });
    };
    let relay = request.relay.unwrap_or(false);
    match ctx.registry.join_as_viewer(&ctx.sid, &channel_id, relay) {
        Ok(joined) => {
            tracing::info!(sid = %ctx.sid, channel = %channel_id, "viewer joined");
            ctx.reply(
                "broadcaster_available",
                &BroadcasterAvailable {
                    broadcaster_id: &joined.broadcaster,
                    channel_id: &channel_id,
                },
            );
            if joined.stopped {
                ctx.reply(
                    "broadcaster_stopped",
                    &ChannelRef {
                        channel_id: &channel_id,
                    },
                );
            }
            ctx.send(
                std::slice::from_ref(&joined.broadcaster),
                "viewer_count",
                &ViewerCount {
                    channel_id: &channel_id,
                    count: joined.viewer_count,
                },
            );
            // After the count, as on leaving: the core events come first.
            emit_tree(&|to| ctx.socket.within(to), &joined.tree);
        }
        Err(e) => ctx.error(e),
    }
}

/// `offer`, `answer` and `ice_candidate`: relayed only between a channel's broadcaster and its
/// viewers; every refusal is a `relay_error`, never `error` (legacy pages treat `error` as
/// "become a viewer").
pub fn relay(ctx: &Ctx, kind: RelayKind, relay: payloads::Relay<'_>) {
    // Every refusal is also a strike: a client that keeps sending junk is disconnected.
    let refuse = |message: String| refuse_relay(ctx, kind, message);
    let activity = match kind {
        RelayKind::Offer | RelayKind::Answer => Activity::Refresh,
        RelayKind::IceCandidate => Activity::Keep,
    };
    let target = match ctx
        .registry
        .authorize_relay(&ctx.sid, &relay.target, activity)
    {
        Ok(target) => target,
        Err(e) => {
            refuse(e.to_string());
            ctx.enforce(ctx.limits.strike(&ctx.sid));
            return;
        }
    };
    let sdp = matches!(kind, RelayKind::Offer | RelayKind::Answer);
    let verdict = ctx.limits.check_relay(&ctx.sid, &target, sdp);
    if verdict != Verdict::Allow {
        refuse(format!(
            "Too many {} messages to this peer; wait a moment and try again",
            kind.event()
        ));
        ctx.enforce(verdict);
        return;
    }
    tracing::debug!(target_sid = %target, "relaying");
    let target = [target];
    let delivered = match kind {
        RelayKind::Offer | RelayKind::Answer => ctx.send(
            &target,
            kind.event(),
            &RelayedSdp {
                sdp: relay.body,
                sender: &ctx.sid,
            },
        ),
        RelayKind::IceCandidate => ctx.send(
            &target,
            kind.event(),
            &RelayedCandidate {
                candidate: relay.body,
                sender: &ctx.sid,
            },
        ),
    };
    if !delivered {
        // The target's queue is full: it has stopped reading (or reads far too slowly for
        // signaling). Holding more for it would only pin memory, so it is disconnected, and
        // the sender hears that the message was lost rather than waiting forever.
        refuse("Target is not keeping up with its messages; try again".to_owned());
        evict(ctx, &target[0]);
    }
}

/// Removes a socket that stopped reading from every channel at once, telling its peers as a
/// disconnect would. Its transport closes by itself: with its queue full, the next heartbeat
/// ping cannot be queued (socketioxide cannot send it a disconnect packet either), and a
/// connection that takes no bytes is closed by the connection layer.
fn evict(ctx: &Ctx, target: &SocketId) {
    tracing::info!(target_sid = %target, "evicting a client that stopped reading");
    let fut = pin!(ctx.socket.within(target.to_string()).disconnect());
    if let Poll::Ready(Err(e)) = fut.poll(&mut Context::from_waker(Waker::noop())) {
        tracing::debug!("could not disconnect it yet: {e:?}");
    }
    announce(ctx, target, ctx.registry.disconnect(target));
}

pub fn set_alias(ctx: &Ctx, request: payloads::SetAlias) {
    if !ctx.admit(Class::Join, ErrorPrefix::Alias) {
        return;
    }
    let (channel_id, alias) = (
        request.channel_id.unwrap_or_default(),
        request.alias.unwrap_or_default(),
    );
    match ctx.registry.set_alias(&ctx.sid, &channel_id, &alias) {
        Ok(()) => ctx.reply(
            "alias_set",
            &AliasSet {
                alias: &alias,
                success: true,
            },
        ),
        Err(e) => ctx.error(e),
    }
}

pub fn send_message(ctx: &Ctx, request: payloads::SendMessage) {
    if !ctx.admit(Class::Chat, ErrorPrefix::Message) {
        return;
    }
    let (channel_id, message) = (
        request.channel_id.unwrap_or_default(),
        request.message.unwrap_or_default(),
    );
    match ctx.registry.chat(&ctx.sid, &channel_id) {
        Ok(delivery) => {
            ctx.send(
                &delivery.recipients,
                "new_message",
                &NewMessage {
                    sender_id: &delivery.sender_name,
                    message: &message,
                    timestamp: unix_now(),
                },
            );
        }
        Err(e) => ctx.error(e),
    }
}

pub fn stop_broadcast(ctx: &Ctx, request: payloads::ChannelRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx.registry.stop_broadcast(&ctx.sid, &channel_id) {
        Ok(viewers) => {
            tracing::info!(sid = %ctx.sid, channel = %channel_id, viewers = viewers.len(), "broadcast stopped");
            ctx.send(
                &viewers,
                "broadcaster_stopped",
                &ChannelRef {
                    channel_id: &channel_id,
                },
            );
        }
        Err(e) => ctx.error(e),
    }
}

/// `relay_ready` and `upstream_failed`: the viewer's part in the relay tree.
pub fn tree_report(ctx: &Ctx, request: payloads::ChannelRequest, report: TreeReport) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    let result = match report {
        TreeReport::Ready => ctx.registry.relay_ready(&ctx.sid, &channel_id),
        TreeReport::UpstreamFailed => ctx.registry.upstream_failed(&ctx.sid, &channel_id),
    };
    match result {
        Ok(events) => {
            tracing::debug!(?report, moved = events.len(), "relay tree");
            emit_tree(&|to| ctx.socket.within(to), &events);
        }
        Err(e) => ctx.error(e),
    }
}

/// Which report a tree viewer sent.
#[derive(Debug, Clone, Copy)]
pub enum TreeReport {
    Ready,
    UpstreamFailed,
}

/// Sends relay-tree events, each to its one socket (`to` addresses a socket by public id).
pub(super) fn emit_tree(
    to: &dyn Fn(String) -> BroadcastOperators<LocalAdapter>,
    events: &[TreeEvent],
) {
    for event in events {
        match event {
            TreeEvent::Upstream {
                channel_id,
                to: viewer,
                peer,
                depth,
            } => deliver(
                to(viewer.to_string()).emit(
                    "upstream",
                    &Upstream {
                        channel_id,
                        peer_id: peer,
                        depth: *depth,
                    },
                ),
                "upstream",
            ),
            TreeEvent::DownstreamLeft {
                channel_id,
                to: feeder,
                peer,
            } => deliver(
                to(feeder.to_string()).emit(
                    "downstream_left",
                    &DownstreamLeft {
                        channel_id,
                        peer_id: peer,
                    },
                ),
                "downstream_left",
            ),
            TreeEvent::Figures {
                channel_id,
                to: broadcaster,
                direct,
                waiting,
                depths,
                version,
            } => deliver(
                to(broadcaster.to_string()).emit(
                    "relay_tree",
                    &RelayTree {
                        channel_id,
                        direct: *direct,
                        relayed: depths.iter().skip(1).sum(),
                        waiting: *waiting,
                        depths,
                        version: *version,
                    },
                ),
                "relay_tree",
            ),
        };
    }
}

pub fn disconnect(ctx: &Ctx, reason: DisconnectReason) {
    let departure = ctx.registry.disconnect(&ctx.sid);
    tracing::info!(
        sid = %ctx.sid,
        ?reason,
        closed_channels = departure.closed.len(),
        "disconnected"
    );
    announce(ctx, &ctx.sid, departure);
}

/// Tells everybody a departure concerns.
fn announce(ctx: &Ctx, sid: &SocketId, departure: Departure) {
    for closed in &departure.closed {
        tracing::info!(sid = %sid, channel = %closed.channel_id, viewers = closed.viewers.len(), "channel closed: broadcaster left");
        ctx.send(&closed.viewers, "broadcaster_disconnected", &());
    }
    for left in &departure.left {
        ctx.send(
            std::slice::from_ref(&left.broadcaster),
            "viewer_count",
            &ViewerCount {
                channel_id: &left.channel_id,
                count: left.viewer_count,
            },
        );
        // After the count, so a broadcaster sees the core events first.
        emit_tree(&|to| ctx.socket.within(to), &left.tree);
    }
}
