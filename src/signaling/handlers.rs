//! One small function per event: decode, ask the registry, emit. No protocol state lives here.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use socketioxide::BroadcastError;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;
use validator::Validate;

use super::Signaling;
use super::channels::{Activity, Registry, SocketId, unix_now};
use super::payloads::{
    self, AliasSet, BroadcasterAvailable, BroadcasterReady, ChannelList, ChannelRef, ClientId,
    ErrorMessage, ErrorPrefix, NewMessage, RelayError, RelayKind, RelayedCandidate, RelayedSdp,
    ViewerCount,
};

/// What a handler needs about the socket it serves.
pub struct Ctx<'a> {
    registry: &'a Registry,
    socket: &'a SocketRef,
    sid: SocketId,
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a Signaling, socket: &'a SocketRef) -> Self {
        Self {
            registry: &state.registry,
            socket,
            sid: Arc::from(socket.id.to_string()),
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

    /// Decodes and validates a payload, answering `error` with the event's prefix when invalid.
    fn decode<T: DeserializeOwned + Validate>(
        &self,
        payload: Option<&RawValue>,
        prefix: ErrorPrefix,
    ) -> Option<T> {
        payloads::decode(payload, prefix)
            .map_err(|e| self.error(e))
            .ok()
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

pub fn connect(socket: &SocketRef) {
    // Join a room named after our own id so other sockets can be addressed by id through the
    // adapter (the same call then works across nodes).
    socket.join(socket.id);
    tracing::info!(sid = %socket.id, transport = ?socket.transport_type(), "connected");
    if let Err(e) = socket.emit(
        "client_id",
        &ClientId {
            id: &socket.id.to_string(),
        },
    ) {
        tracing::debug!(sid = %socket.id, "could not send client_id: {e}");
    }
}

pub fn join_as_broadcaster(ctx: &Ctx, payload: Option<&RawValue>) {
    let Some(request) = ctx.decode::<payloads::JoinAsBroadcaster>(payload, ErrorPrefix::Data)
    else {
        return;
    };
    let force = request.force.unwrap_or(false);
    match ctx
        .registry
        .join_as_broadcaster(&ctx.sid, request.channel_id.as_deref(), force)
    {
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
        }
        Err(e) => ctx.error(e),
    }
}

pub fn join_as_viewer(ctx: &Ctx, payload: Option<&RawValue>) {
    let Some(request) = ctx.decode::<payloads::JoinAsViewer>(payload, ErrorPrefix::Data) else {
        return;
    };
    let Some(channel_id) = request.channel_id else {
        let channels = ctx.registry.list();
        return ctx.reply("channel_list", &ChannelList { channels });
    };
    match ctx.registry.join_as_viewer(&ctx.sid, &channel_id) {
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
                &[joined.broadcaster],
                "viewer_count",
                &ViewerCount {
                    channel_id: &channel_id,
                    count: joined.viewer_count,
                },
            );
        }
        Err(e) => ctx.error(e),
    }
}

/// `offer`, `answer` and `ice_candidate`: relayed only between a channel's broadcaster and its
/// viewers; every refusal is a `relay_error`, never `error` (legacy pages treat `error` as
/// "become a viewer").
pub fn relay(ctx: &Ctx, payload: Option<&RawValue>, kind: RelayKind) {
    let refuse = |message: String| {
        tracing::debug!(event = kind.event(), %message, "relay refused");
        ctx.reply(
            "relay_error",
            &RelayError {
                event: kind,
                message,
            },
        );
    };
    let relay = match payloads::decode_relay(payload, kind) {
        Ok(r) => r,
        Err(message) => return refuse(message),
    };
    let activity = match kind {
        RelayKind::Offer | RelayKind::Answer => Activity::Refresh,
        RelayKind::IceCandidate => Activity::Keep,
    };
    if let Err(e) = ctx
        .registry
        .authorize_relay(&ctx.sid, &relay.target, activity)
    {
        return refuse(e.to_string());
    }
    tracing::debug!(target_sid = %relay.target, "relaying");
    let target = [SocketId::from(relay.target.as_str())];
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
        // Signaling lost in silence leaves a viewer waiting forever; say so, so it can retry.
        refuse("Target is not keeping up with its messages; try again".to_owned());
    }
}

pub fn set_alias(ctx: &Ctx, payload: Option<&RawValue>) {
    let Some(request) = ctx.decode::<payloads::SetAlias>(payload, ErrorPrefix::Alias) else {
        return;
    };
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

pub fn send_message(ctx: &Ctx, payload: Option<&RawValue>) {
    let Some(request) = ctx.decode::<payloads::SendMessage>(payload, ErrorPrefix::Message) else {
        return;
    };
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

pub fn stop_broadcast(ctx: &Ctx, payload: Option<&RawValue>) {
    let Some(request) = ctx.decode::<payloads::StopBroadcast>(payload, ErrorPrefix::Data) else {
        return;
    };
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

pub fn disconnect(ctx: &Ctx, reason: DisconnectReason) {
    let departure = ctx.registry.disconnect(&ctx.sid);
    tracing::info!(
        sid = %ctx.sid,
        ?reason,
        closed_channels = departure.closed.len(),
        "disconnected"
    );
    for closed in &departure.closed {
        tracing::info!(sid = %ctx.sid, channel = %closed.channel_id, viewers = closed.viewers.len(), "channel closed: broadcaster left");
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
    }
}
