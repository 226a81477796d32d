//! One small function per event: decode, ask the registry, emit. No protocol state lives here.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;
use socketioxide::{BroadcastError, SocketError, SocketIo};

use super::Signaling;
use super::client_key::{ClientKey, IssuedKey};
use super::events::{Refusal, Request};
use super::limits::{Class, RateLimits, Verdict};
use super::outbound::{
    AliasSet, BansCleared, BroadcasterAvailable, BroadcasterDisconnected, BroadcasterJoined,
    BroadcasterReady, BroadcasterReconnecting, BroadcasterReplaced, BroadcasterStopped,
    ChannelList, ChannelRef, ChatHistory, ChatSettingsChanged, ClientId, ClientKeyIssued,
    DownstreamLeft, ErrorMessage, InviteCreated, InvitesRotated, MessageRemoved, NewMessage,
    Outbound, RelayError, RelayTree, RelayedAnswer, RelayedCandidate, RelayedOffer, RelayedSdp,
    Upstream, ViewerCount, ViewerList, ViewerMuted, ViewerRemoved, ViewerToken,
    WaitingForBroadcaster,
};
use super::payloads::{self, ErrorPrefix, RelayKind};
use super::refusals::{ErrorCodes, Refused};
use crate::channels::{Held, Registry};
use crate::cluster::{Emits, Relay};
use crate::invites::{Invitation, InviteKey, InviteRefusal};
use crate::metrics::{self, ModerationAction};
use crate::registry::broadcaster::BroadcastRequest;
use crate::registry::chat::{ChatDelivery, ChatMessage};
use crate::registry::errors::ChannelError;
use crate::registry::ids::SocketId;
use crate::registry::membership::{Departure, ViewerRequest};
use crate::registry::moderation::{ChatSettingsChange, ClientIdentity};
use crate::registry::relay::Activity;
use crate::registry::secrets;
use crate::registry::tree_events::{TreeEvent, TreeOp};
use crate::webhooks::{EndReason, Webhooks};

/// What a handler needs about the socket it serves.
pub struct Ctx<'a, A: Adapter> {
    registry: &'a Registry,
    limits: &'a RateLimits,
    io: &'a SocketIo<A>,
    socket: &'a SocketRef<A>,
    sid: SocketId,
    webhooks: &'a Webhooks,
    invites: &'a InviteKey,
    /// The channels' turns this event's handling holds (in memory): let go when the context
    /// is dropped, after the handler's emits, so the next operation on those channels emits
    /// after this one (`channels::turns`).
    held: Held,
}

impl<'a, A: Adapter> Ctx<'a, A> {
    pub fn new(state: &'a Signaling<A>, socket: &'a SocketRef<A>) -> Self {
        Self {
            registry: &state.registry,
            limits: &state.limits,
            io: &state.io,
            socket,
            sid: public_id(socket),
            webhooks: &state.webhooks,
            invites: &state.invites,
            held: Held::default(),
        }
    }

    /// Counts an event against the caller's rate; when over it, answers `error` with the
    /// event's prefix and, for a caller that keeps going, disconnects it.
    fn admit(&self, class: Class, prefix: ErrorPrefix) -> bool {
        let verdict = self.limits.check(&self.sid, class);
        if verdict != Verdict::Allow {
            self.error(Refused::RateLimited(payloads::InvalidPayload {
                prefix,
                reason: "too many requests; wait a moment and try again".to_owned(),
            }));
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

    /// Emits to the calling socket, under the event its payload type names.
    fn reply<T: Outbound>(&self, data: &T) {
        if let Err(e) = self.socket.emit(T::EVENT, data) {
            tracing::debug!(event = T::EVENT, "could not emit to caller: {e}");
        }
    }

    /// Emits to other sockets by id, serializing the payload once for all of them. `false` when
    /// some recipient's queue was full and the packet was dropped for it.
    async fn send<T: Outbound>(&self, targets: &[SocketId], data: &T) -> bool {
        send(self.io, targets, data).await
    }

    /// The one place refusals become the protocol's `error` event.
    fn error(&self, refusal: impl Into<Refused>) {
        let refusal = refusal.into();
        let code = refusal.code();
        metrics::refused(code.into());
        let message = refusal.to_string();
        tracing::debug!(%message, %code, "refused");
        let code = self.wants_codes().then_some(code);
        self.reply(&ErrorMessage { message, code });
    }

    /// The digest of the caller's client key, if it presented or was given one.
    fn client_key(&self) -> Option<String> {
        self.socket.extensions.get::<ClientKey>().map(|k| k.digest)
    }

    /// The caller's address where bans may hold addresses (`--ban-by-address`).
    fn bannable_addr(&self) -> Option<IpAddr> {
        if self.registry.limits().ban_by_address {
            self.socket.extensions.get::<ClientAddr>().map(|a| a.0)
        } else {
            None
        }
    }

    /// Whether this socket asked for error codes when it connected. Looked up only when
    /// refusing, so the events that go through pay nothing for it.
    fn wants_codes(&self) -> bool {
        self.socket.extensions.get::<ErrorCodes>().is_some()
    }
}

/// Emits to sockets by public id (each socket is in a room named after it), on whichever node
/// they are: the adapter forwards to other nodes in cluster mode. The payload is serialized
/// once for all of them, under the event its type names. `false` when some recipient's queue
/// was full and it missed the packet.
pub(super) async fn send<A: Adapter, T: Outbound>(
    io: &SocketIo<A>,
    targets: &[SocketId],
    data: &T,
) -> bool {
    send_named(io, targets, T::EVENT, data).await
}

/// [`send`] for an event whose name and payload were made elsewhere (an owner's events, as
/// `render_tree` made them).
async fn send_named<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    targets: &[SocketId],
    event: &str,
    data: &T,
) -> bool {
    if targets.is_empty() {
        return true;
    }
    // The namespace is gone once the server closes; an emit then has nobody left to reach.
    let Some(namespace) = io.of("/") else {
        tracing::debug!(event, "not delivered: the server is closing");
        return true;
    };
    // One recipient on this node (every relay to a local peer) is reached directly: through
    // the adapter each emit first publishes to the other nodes, a Redis round trip in cluster
    // mode, for a socket none of them has. A socket lives on one node for its whole life, so
    // each recipient's events from this node keep one way, and their order.
    if let [target] = targets {
        let here = held_here(io, target);
        let room = target.to_string();
        let operators = if here {
            namespace.to(room).local()
        } else {
            namespace.to(room)
        };
        return deliver(Box::pin(operators.emit(event, data)), event).await;
    }
    let rooms: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    deliver(Box::pin(namespace.to(rooms).emit(event, data)), event).await
}

/// Whether a socket is connected to this node (each socket is in a room named after it).
pub(super) fn held_here<A: Adapter>(io: &SocketIo<A>, target: &SocketId) -> bool {
    io.of("/")
        .is_some_and(|ns| !ns.to(target.to_string()).sockets().is_empty())
}

/// An adapter broadcast in flight.
pub(super) type Emit<'a> = Pin<Box<dyn Future<Output = Result<(), BroadcastError>> + Send + 'a>>;

/// Awaits an adapter broadcast. Callers await each one before the next, which is what keeps a
/// socket's events in order for its recipients with either adapter (the in-process one finishes
/// at once; the Redis one publishes in order on one connection).
/// Returns whether every recipient got the packet (a full per-socket queue drops it).
/// The future is boxed by the caller: that pins down its lifetimes where it is made, which the
/// compiler needs to see it is `Send` (the adapter's futures are opaque trait-method types).
pub(super) async fn deliver(fut: Emit<'_>, event: &str) -> bool {
    match fut.await {
        Ok(()) => true,
        // A recipient that disconnected meanwhile is an everyday race, not worth a warning.
        Err(BroadcastError::Socket(errors))
            if errors.iter().all(|e| matches!(e, SocketError::Closed)) =>
        {
            tracing::debug!(event, "recipient already gone");
            true
        }
        Err(BroadcastError::Socket(errors)) => {
            tracing::warn!(event, "not delivered to some sockets: {errors:?}");
            false
        }
        Err(e) => {
            // The cross-node bus failed (Redis away); the adapter publishes before it delivers
            // locally, so nobody got it. Not the recipients' fault: nobody is evicted for it.
            tracing::warn!(event, "not delivered: {e}");
            true
        }
    }
}

/// The public id of a socket, drawn at connection (see [`SocketId`] for why it is not the
/// transport's session id).
pub fn public_id<A: Adapter>(socket: &SocketRef<A>) -> SocketId {
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
pub fn assign_public_id<A: Adapter>(socket: &SocketRef<A>) -> SocketId {
    let id = SocketId::generate();
    socket.extensions.insert(id.clone());
    id
}

/// Joins the room named after the public id, so other sockets address this one by it through
/// the adapter (the same call then works across nodes). The session id never leaves the socket.
pub fn join_own_room<A: Adapter>(socket: &SocketRef<A>, id: &SocketId) {
    socket.join(id.to_string());
}

pub fn connect<A: Adapter>(socket: &SocketRef<A>, id: SocketId) {
    tracing::info!(sid = %id, transport = ?socket.transport_type(), "connected");
    emit_to(socket, &id, &ClientId { id: &id });
    // A key made for this connection goes to it once, right after its id.
    if let Some(IssuedKey(key)) = socket.extensions.remove::<IssuedKey>() {
        emit_to(socket, &id, &ClientKeyIssued { key: &key });
    }
}

/// Emits to a socket that has no handler context yet (it is connecting).
fn emit_to<A: Adapter, T: Outbound>(socket: &SocketRef<A>, id: &SocketId, data: &T) {
    if let Err(e) = socket.emit(T::EVENT, data) {
        tracing::debug!(sid = %id, event = T::EVENT, "could not send: {e}");
    }
}

/// Routes a decoded event to its handler, in PROTOCOL.md order.
pub async fn handle<A: Adapter>(ctx: &Ctx<'_, A>, request: Request<'_>) {
    match request {
        Request::JoinAsBroadcaster(r) => join_as_broadcaster(ctx, r).await,
        Request::JoinAsViewer(r) => join_as_viewer(ctx, r).await,
        Request::Relay(kind, r) => relay(ctx, kind, r).await,
        Request::SetAlias(r) => set_alias(ctx, r).await,
        Request::SendMessage(r) => send_message(ctx, r).await,
        Request::BroadcasterMessage(r) => broadcaster_message(ctx, r).await,
        Request::StopBroadcast(r) => stop_broadcast(ctx, r).await,
        Request::CreateInvite(r) => create_invite(ctx, r).await,
        Request::RotateInvites(r) => rotate_invites(ctx, r).await,
        Request::ListViewers(r) => list_viewers(ctx, r).await,
        Request::RemoveViewer(r) => remove_viewer(ctx, r).await,
        Request::UnbanAll(r) => unban_all(ctx, r).await,
        Request::MuteViewer(r) => mute_viewer(ctx, r).await,
        Request::RemoveMessage(r) => remove_message(ctx, r).await,
        Request::ChatSettings(r) => chat_settings(ctx, r).await,
        Request::RelayReady(r) => tree_op(ctx, r.channel_id, TreeOp::Ready).await,
        Request::UpstreamFailed(r) => {
            let about = r.peer_id.as_deref().map(SocketId::named_by_client);
            tree_op(ctx, r.channel_id, TreeOp::UpstreamFailed { about }).await
        }
        Request::UpstreamStalled(r) => {
            let about = r.peer_id.as_deref().map(SocketId::named_by_client);
            tree_op(ctx, r.channel_id, TreeOp::UpstreamStalled { about }).await
        }
        Request::RelayCapacity(r) => {
            // Validated to 0..=RELAY_CAPACITY_MAX, so it fits any usize.
            let capacity = usize::try_from(r.capacity.unwrap_or_default()).unwrap_or(usize::MAX);
            tree_op(ctx, r.channel_id, TreeOp::Capacity(capacity)).await
        }
    }
}

/// Answers an event that failed decoding: `error` with its prefix, or `relay_error` (which
/// also counts as a strike: relays are where junk floods come from).
pub async fn refuse<A: Adapter>(ctx: &Ctx<'_, A>, refusal: Refusal) {
    match refusal {
        Refusal::Invalid(e) => ctx.error(e),
        Refusal::Relay(kind, message) => {
            refuse_relay(ctx, kind, Refused::InvalidRelay(message));
            ctx.enforce(ctx.limits.strike(&ctx.sid));
        }
    }
}

/// The one place refusals of `offer`, `answer` and `ice_candidate` become `relay_error`.
fn refuse_relay<A: Adapter>(ctx: &Ctx<'_, A>, kind: RelayKind, refusal: Refused) {
    let code = refusal.code();
    metrics::refused(code.into());
    let message = refusal.to_string();
    tracing::debug!(event = kind.event(), %message, %code, "relay refused");
    let code = ctx.wants_codes().then_some(code);
    ctx.reply(&RelayError {
        event: kind,
        message,
        code,
    });
}

pub async fn join_as_broadcaster<A: Adapter>(
    ctx: &Ctx<'_, A>,
    request: payloads::JoinAsBroadcaster,
) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let password = match request.password {
        // Hashed off the event loop: argon2 is slow on purpose.
        Some(password) => match blocking(move || secrets::hash_password(&password.0)).await {
            Some(hash) => Some(hash),
            None => return ctx.error(Refused::PasswordNotStored),
        },
        None => None,
    };
    let fresh = secrets::IssuedToken::generate();
    // Asking for it, or presenting a token, is what makes a broadcaster resumable.
    let resumable = request.resume.unwrap_or(false) || request.resume_token.is_some();
    let presented = request.resume_token.as_ref().map(|t| secrets::digest(&t.0));
    let key = ctx.client_key();
    let broadcast = BroadcastRequest {
        addr: ctx.socket.extensions.get::<ClientAddr>().map(|a| a.0),
        force: request.force.unwrap_or(false),
        relay: request.relay.unwrap_or(true),
        resumable,
        presented: presented.as_deref(),
        fresh: &fresh.digest,
        password,
        key: key.as_deref(),
    };
    match ctx
        .registry
        .join_as_broadcaster(
            &ctx.held,
            &ctx.sid,
            request.channel_id.as_deref(),
            broadcast,
        )
        .await
    {
        Ok(started) => {
            metrics::broadcast_started(&started);
            ctx.webhooks.broadcast_started(&started);
            tracing::info!(sid = %ctx.sid, channel = %started.channel_id, "broadcaster ready");
            ctx.reply(&BroadcasterReady {
                id: &ctx.sid,
                channel_id: &started.channel_id,
                resume_token: started.resumable.then_some(fresh.token.as_str()),
            });
            // A modern page that resumes, takes over or goes live again shows the chat
            // settings as they are (a new channel has the defaults).
            if let Some(settings) = started.chat_settings
                && key.is_some()
            {
                ctx.reply(&ChatSettingsChanged {
                    channel_id: &started.channel_id,
                    slow_mode: settings.slow_mode,
                    chat_enabled: settings.chat_enabled,
                });
            }
            if !started.admitted.is_empty() {
                // The waiters are its first viewers: counted before they are told, so that
                // none of their offers (a waiter offers on `broadcaster_joined`) comes first.
                ctx.reply(&ViewerCount {
                    channel_id: &started.channel_id,
                    count: started.viewer_count,
                });
            }
            let joined = BroadcasterJoined {
                id: &ctx.sid,
                channel_id: &started.channel_id,
                password_required: started.private,
            };
            ctx.send(&started.lobby, &joined).await;
            if started.resumed || started.replaced.is_some() {
                // The new socket has not seen the audience it takes over.
                ctx.reply(&ViewerCount {
                    channel_id: &started.channel_id,
                    count: started.waiting_viewers.len(),
                });
            }
            if let Some(replaced) = &started.replaced {
                tracing::info!(sid = %ctx.sid, %replaced, channel = %started.channel_id, "broadcaster took over");
                let channel = ChannelRef {
                    channel_id: &started.channel_id,
                };
                ctx.send(
                    std::slice::from_ref(replaced),
                    &BroadcasterReplaced(channel),
                )
                .await;
            }
            ctx.send(
                &started.waiting_viewers,
                &BroadcasterAvailable {
                    broadcaster_id: &ctx.sid,
                    channel_id: &started.channel_id,
                },
            )
            .await;
            emit_tree(ctx.io, &started.tree).await;
        }
        Err(e) => ctx.error(e),
    }
}

pub async fn join_as_viewer<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::JoinAsViewer) {
    let class = match request.channel_id {
        Some(_) => Class::Join,
        None => Class::List,
    };
    if !ctx.admit(class, ErrorPrefix::Data) {
        return;
    }
    let Some(channel_id) = request.channel_id else {
        return match ctx.registry.list().await {
            Ok(channels) => ctx.reply(&ChannelList { channels }),
            Err(e) => ctx.error(e),
        };
    };
    let relay = request.relay.unwrap_or(false);
    // A private channel admits with its password or a valid invitation (which wins when both
    // are sent: the page sends the password only once an invitation was refused).
    let (verified, invite) = match ctx.registry.password_of(&channel_id).await {
        Ok(None) => (None, None),
        Ok(Some(_)) if request.invite.is_some() => {
            match check_invite(ctx, request.invite, &channel_id) {
                Some(generation) => (None, Some(generation)),
                None => return,
            }
        }
        Ok(Some(stored)) => match check_password(ctx, request.password, stored).await {
            Some(verified) => (Some(verified), None),
            None => return,
        },
        Err(e) => return ctx.error(e),
    };
    // Tokens only for viewers that asked (every legacy join skips the work).
    let resumable = request.resume.unwrap_or(false) || request.resume_token.is_some();
    let fresh = resumable.then(secrets::IssuedToken::generate);
    let presented = request.resume_token.as_ref().map(|t| secrets::digest(&t.0));
    let key = ctx.client_key();
    let viewer = ViewerRequest {
        relay,
        password: verified.as_deref(),
        invite,
        resumable,
        presented: presented.as_deref(),
        fresh: fresh.as_ref().map_or("", |f| f.digest.as_str()),
        client: ClientIdentity {
            key: key.as_deref(),
            addr: ctx.bannable_addr(),
            codes: ctx.wants_codes(),
        },
    };
    let mut joined = ctx
        .registry
        .join_as_viewer(&ctx.held, &ctx.sid, &channel_id, viewer)
        .await;
    if request.wait == Some(true) && matches!(joined, Err(ChannelError::NotFound(_))) {
        match ctx
            .registry
            .wait_for(&ctx.held, &ctx.sid, &channel_id, relay)
            .await
        {
            Ok(true) => {
                tracing::info!(sid = %ctx.sid, channel = %channel_id, "viewer waits for a broadcaster");
                let channel = ChannelRef {
                    channel_id: &channel_id,
                };
                return ctx.reply(&WaitingForBroadcaster(channel));
            }
            // Created meanwhile (a private one needs the password: the join says so).
            Ok(false) => {
                joined = ctx
                    .registry
                    .join_as_viewer(&ctx.held, &ctx.sid, &channel_id, viewer)
                    .await;
            }
            Err(e) => return ctx.error(e),
        }
    }
    if matches!(joined, Err(ChannelError::InvalidInvite)) {
        // Revoked by `rotate_invites` since it was issued: a refused credential, as a wrong
        // password is.
        ctx.enforce(ctx.limits.strike(&ctx.sid));
    }
    match joined {
        Ok(joined) => {
            tracing::info!(sid = %ctx.sid, channel = %channel_id, invited = invite.is_some(), "viewer joined");
            if joined.away {
                // Nobody to negotiate with until the broadcaster is back (then
                // `broadcaster_available` comes by itself).
                ctx.reply(&BroadcasterReconnecting(ChannelRef {
                    channel_id: &channel_id,
                }));
            } else {
                ctx.reply(&BroadcasterAvailable {
                    broadcaster_id: &joined.broadcaster,
                    channel_id: &channel_id,
                });
            }
            if let Some(fresh) = &fresh {
                let token = ViewerToken {
                    channel_id: &channel_id,
                    resume_token: &fresh.token,
                };
                ctx.reply(&token);
            }
            if let Some(alias) = &joined.alias {
                // Back within its grace: its alias is restored.
                ctx.reply(&AliasSet {
                    alias,
                    success: true,
                });
            }
            if joined.stopped {
                ctx.reply(&BroadcasterStopped(ChannelRef {
                    channel_id: &channel_id,
                }));
            }
            if let Some(settings) = joined.chat_settings
                && key.is_some()
            {
                ctx.reply(&ChatSettingsChanged {
                    channel_id: &channel_id,
                    slow_mode: settings.slow_mode,
                    chat_enabled: settings.chat_enabled,
                });
            }
            if !joined.count_told {
                tell_viewer_count(
                    ctx.io,
                    &joined.broadcaster,
                    &channel_id,
                    joined.viewer_count,
                )
                .await;
            }
            // After the count, as on leaving: the core events come first.
            emit_tree(ctx.io, &joined.tree).await;
            // Last, as it waits on storage in a cluster: meanwhile the channel's owner may
            // already send this viewer a newer move than the one above.
            if request.history == Some(true) && ctx.registry.limits().chat_history > 0 {
                send_chat_history(ctx, &channel_id).await;
            }
        }
        Err(e) => ctx.error(e),
    }
}

/// `chat_history` to a viewer that joined asking for it: the channel's last messages, oldest
/// first, in one event (also when there are none, so the page knows it has the whole history).
/// Legacy pages never ask, so they see exactly the joins they always saw.
async fn send_chat_history<A: Adapter>(ctx: &Ctx<'_, A>, channel_id: &str) {
    match ctx.registry.chat_history(channel_id).await {
        Ok(messages) => ctx.reply(&ChatHistory {
            channel_id,
            messages: &messages,
        }),
        // The join itself succeeded; the page goes on with live messages only.
        Err(e) => tracing::debug!(channel = %channel_id, "no chat history for a joiner: {e}"),
    }
}

/// Checks a private channel's password: `Some(stored hash)` when it matches; otherwise the
/// caller has been answered. Attempts are rate limited and every wrong one is a strike.
async fn check_password<A: Adapter>(
    ctx: &Ctx<'_, A>,
    given: Option<payloads::Secret>,
    stored: String,
) -> Option<String> {
    if !ctx.admit(Class::Password, ErrorPrefix::Data) {
        return None;
    }
    let refusal = match given {
        Some(given) => {
            let hash = stored.clone();
            if blocking(move || secrets::verify_password(&given.0, &hash)).await {
                return Some(stored);
            }
            ChannelError::WrongPassword
        }
        None => ChannelError::PasswordRequired,
    };
    ctx.error(refusal);
    ctx.enforce(ctx.limits.strike(&ctx.sid));
    None
}

/// Checks a private channel's invitation: the generation it names when it is ours, for this
/// channel and not expired (whether that generation is still the channel's is the registry's
/// to say); otherwise the caller has been answered. Limited and struck like passwords.
fn check_invite<A: Adapter>(
    ctx: &Ctx<'_, A>,
    invite: Option<payloads::Secret>,
    channel_id: &str,
) -> Option<u64> {
    if !ctx.admit(Class::Password, ErrorPrefix::Data) {
        return None;
    }
    let verdict = match invite {
        Some(invite) => ctx
            .invites
            .verify(&invite.0, channel_id, crate::invites::unix_now()),
        None => Err(InviteRefusal::Malformed),
    };
    match verdict {
        Ok(invitation) => Some(invitation.generation),
        Err(refusal) => {
            // Why, for whoever debugs a link; never the token.
            tracing::debug!(sid = %ctx.sid, channel = %channel_id, %refusal, "invitation refused");
            ctx.error(ChannelError::InvalidInvite);
            ctx.enforce(ctx.limits.strike(&ctx.sid));
            None
        }
    }
}

/// `create_invite`: the broadcaster of a private channel gets a signed invitation for its
/// viewer links (`invite_created`).
pub async fn create_invite<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::CreateInvite) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx.registry.create_invite(&ctx.sid, &channel_id).await {
        Ok(generation) => {
            let ttl = request
                .ttl_seconds
                .unwrap_or(crate::invites::DEFAULT_TTL_SECS);
            let invitation = Invitation {
                channel_id: channel_id.clone(),
                generation,
                expires_at: crate::invites::unix_now().saturating_add(ttl),
            };
            let invite = ctx.invites.sign(&invitation);
            tracing::info!(sid = %ctx.sid, channel = %channel_id, ttl_secs = ttl, "invitation created");
            ctx.reply(&InviteCreated {
                channel_id: &channel_id,
                invite: &invite,
                expires_at: invitation.expires_at,
            });
        }
        Err(e) => ctx.error(e),
    }
}

/// `rotate_invites`: the broadcaster revokes every invitation to its channel so far
/// (`invites_rotated`). Viewers already in the channel stay.
pub async fn rotate_invites<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::ChannelRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx.registry.rotate_invites(&ctx.sid, &channel_id).await {
        Ok(_) => {
            tracing::info!(sid = %ctx.sid, channel = %channel_id, "invitations rotated");
            ctx.reply(&InvitesRotated(ChannelRef {
                channel_id: &channel_id,
            }));
        }
        Err(e) => ctx.error(e),
    }
}

/// Runs CPU-heavy work (password hashing) off the event loop.
async fn blocking<T: Default + Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

/// `offer`, `answer` and `ice_candidate`: relayed only between a channel's broadcaster and its
/// viewers; every refusal is a `relay_error`, never `error` (legacy pages treat `error` as
/// "become a viewer").
pub async fn relay<A: Adapter>(ctx: &Ctx<'_, A>, kind: RelayKind, relay: payloads::Relay<'_>) {
    // Every refusal the client caused is also a strike: one that keeps sending junk is
    // disconnected.
    let refuse = |refusal: Refused| refuse_relay(ctx, kind, refusal);
    let activity = match kind {
        RelayKind::Offer | RelayKind::Answer => Activity::Refresh,
        RelayKind::IceCandidate => Activity::Keep,
    };
    let target = match ctx
        .registry
        .authorize_relay(&ctx.sid, &relay.target, activity)
        .await
    {
        Ok(target) => target,
        Err(e) => {
            let strike = e.is_clients_fault();
            refuse(Refused::Channel(e));
            if strike {
                ctx.enforce(ctx.limits.strike(&ctx.sid));
            }
            return;
        }
    };
    let sdp = matches!(kind, RelayKind::Offer | RelayKind::Answer);
    let verdict = ctx.limits.check_relay(&ctx.sid, &target, sdp);
    if verdict != Verdict::Allow {
        refuse(Refused::RelayRateLimited(kind));
        ctx.enforce(verdict);
        return;
    }
    tracing::debug!(target_sid = %target, "relaying");
    let target = [target];
    let sdp = RelayedSdp {
        sdp: relay.body,
        sender: &ctx.sid,
    };
    let sent = match kind {
        RelayKind::Offer => send_relay(ctx, kind, &target, &RelayedOffer(sdp)).await,
        RelayKind::Answer => send_relay(ctx, kind, &target, &RelayedAnswer(sdp)).await,
        RelayKind::IceCandidate => {
            let candidate = RelayedCandidate {
                candidate: relay.body,
                sender: &ctx.sid,
            };
            send_relay(ctx, kind, &target, &candidate).await
        }
    };
    let delivered = match sent {
        Ok(delivered) => delivered,
        // The server could not send it (storage away): the sender hears so, nobody is blamed.
        Err(e) => return refuse(Refused::Channel(e)),
    };
    if delivered {
        metrics::relayed(kind);
    }
    if !delivered {
        // The target's queue is full: it has stopped reading (or reads far too slowly for
        // signaling). Holding more for it would only pin memory, so it is disconnected, and
        // the sender hears that the message was lost rather than waiting forever.
        refuse(Refused::Undelivered);
        evict(ctx, &target[0]).await;
    }
}

/// Sends a relay to its target. To a socket on another node of a cluster whose nodes all check
/// relays, over the emits channel: the target's node delivers it only if the sender may still
/// reach the target (`ClusterRegistry::relay_across`). `false` when the target is here and its
/// queue was full; an error when it could not be sent.
async fn send_relay<A: Adapter, T: Outbound>(
    ctx: &Ctx<'_, A>,
    kind: RelayKind,
    target: &[SocketId; 1],
    data: &T,
) -> Result<bool, ChannelError> {
    if let Registry::Cluster(cluster) = ctx.registry
        && cluster.checks_relays()
        && !held_here(ctx.io, &target[0])
    {
        let data = serde_json::value::to_raw_value(data).map_err(|e| {
            tracing::error!(event = T::EVENT, "not relayed: cannot serialize it: {e}");
            ChannelError::Unavailable
        })?;
        let relay = Relay {
            from: ctx.sid.clone(),
            to: target[0].clone(),
            kind,
            data,
            codes: ctx.wants_codes(),
        };
        return cluster.relay_across(relay).await.map(|()| true);
    }
    Ok(ctx.send(target, data).await)
}

/// Removes a socket that stopped reading from every channel at once, telling its peers as a
/// disconnect would. Its transport closes by itself: with its queue full, the next heartbeat
/// ping cannot be queued (socketioxide cannot send it a disconnect packet either), and a
/// connection that takes no bytes is closed by the connection layer.
async fn evict<A: Adapter>(ctx: &Ctx<'_, A>, target: &SocketId) {
    // Every disconnect the server makes is a warning with its reason: an operator must be
    // able to tell a client's fault from the server's.
    tracing::warn!(target_sid = %target, "disconnecting a client that stopped reading: its queue of outgoing packets is full (--max-queued-packets)");
    let Some(namespace) = ctx.io.of("/") else {
        return;
    };
    let disconnect: Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(namespace.to(target.to_string()).disconnect());
    if let Err(e) = disconnect.await {
        tracing::debug!("could not disconnect it yet: {e:?}");
    }
    announce(
        ctx.io,
        ctx.webhooks,
        ctx.registry.disconnect(&ctx.held, target).await,
    )
    .await;
}

pub async fn set_alias<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::SetAlias) {
    if !ctx.admit(Class::Join, ErrorPrefix::Alias) {
        return;
    }
    let (channel_id, alias) = (
        request.channel_id.unwrap_or_default(),
        request.alias.unwrap_or_default(),
    );
    match ctx.registry.set_alias(&ctx.sid, &channel_id, &alias).await {
        Ok(()) => ctx.reply(&AliasSet {
            alias: &alias,
            success: true,
        }),
        Err(e) => ctx.error(e),
    }
}

pub async fn send_message<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::SendMessage) {
    if !ctx.admit(Class::Chat, ErrorPrefix::Message) {
        return;
    }
    let (channel_id, message) = (
        request.channel_id.unwrap_or_default(),
        request.message.unwrap_or_default(),
    );
    match ctx
        .registry
        .chat(&ctx.held, &ctx.sid, &channel_id, &message)
        .await
    {
        Ok(delivery) => deliver_message(ctx, &delivery).await,
        Err(e) => ctx.error(e),
    }
}

/// `broadcaster_message`: the broadcaster writes in its channel's chat. A new event rather than
/// `send_message`, whose answer to a broadcaster (the viewer error) legacy pages rely on; the
/// same validation, rate and delivery as a viewer's message.
pub async fn broadcaster_message<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::SendMessage) {
    if !ctx.admit(Class::Chat, ErrorPrefix::Message) {
        return;
    }
    let (channel_id, message) = (
        request.channel_id.unwrap_or_default(),
        request.message.unwrap_or_default(),
    );
    match ctx
        .registry
        .broadcaster_message(&ctx.held, &ctx.sid, &channel_id, &message)
        .await
    {
        Ok(delivery) => deliver_message(ctx, &delivery).await,
        Err(e) => ctx.error(e),
    }
}

/// Sends a chat message to everyone in its channel as `new_message`. A viewer's carries the
/// three fields of PROTOCOL.md and nothing else (legacy sessions are recorded that way), except
/// to pages that presented a client key, which also get its id (to remove it, or hide it when
/// it is removed); the broadcaster's, a new kind of message, carries its mark and its id.
///
/// In cluster mode the channel's owner sends it (see `signaling::attach`) and the delivery
/// comes back `told`: nothing is sent again.
async fn deliver_message<A: Adapter>(ctx: &Ctx<'_, A>, delivery: &ChatDelivery) {
    if !delivery.told {
        send_chat(ctx.io, delivery).await;
    }
}

/// Sends a chat message as [`deliver_message`] says.
async fn send_chat<A: Adapter>(io: &SocketIo<A>, delivery: &ChatDelivery) {
    let (plain, with_id) = new_messages(&delivery.message);
    send(io, &delivery.plain, &plain).await;
    send(io, &delivery.with_ids, &with_id).await;
}

/// A chat message's events as [`deliver_message`] says, for its channel's owner to send in a
/// cluster (see `ClusterRegistry::render_chat_with`).
pub(super) fn render_chat(delivery: &ChatDelivery, emits: &mut Emits) {
    let (plain, with_id) = new_messages(&delivery.message);
    push_emit(emits, &delivery.plain, &plain);
    push_emit(emits, &delivery.with_ids, &with_id);
}

/// A chat message's `new_message` for legacy pages, and for pages that read message ids.
fn new_messages(message: &ChatMessage) -> (NewMessage<'_>, NewMessage<'_>) {
    let with_id = NewMessage {
        sender_id: &message.sender_id,
        message: &message.message,
        timestamp: message.timestamp,
        from_broadcaster: message.from_broadcaster,
        id: Some(message.id.as_str()),
    };
    let plain = NewMessage {
        id: message.from_broadcaster.then_some(message.id.as_str()),
        ..with_id
    };
    (plain, with_id)
}

/// Adds an event, under the name its type gives it, to events an owner sends.
fn push_emit<T: Outbound>(emits: &mut Emits, targets: &[SocketId], data: &T) {
    if let Err(e) = emits.push(T::EVENT, data, targets) {
        tracing::error!(event = T::EVENT, "not sent: cannot serialize it: {e}");
    }
}

/// `list_viewers`: the broadcaster's viewer list.
pub async fn list_viewers<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::ChannelRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx.registry.list_viewers(&ctx.sid, &channel_id).await {
        Ok(viewers) => ctx.reply(&ViewerList {
            channel_id: &channel_id,
            viewers: &viewers,
        }),
        Err(e) => ctx.error(e),
    }
}

/// `remove_viewer`: the viewer leaves as on a disconnect (its peers are told the same way),
/// the broadcaster gets `viewer_removed`, and the viewer an `error` saying why.
pub async fn remove_viewer<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::RemoveViewer) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    let viewer = SocketId::named_by_client(&request.viewer_id.unwrap_or_default());
    let ban = request.ban.unwrap_or(false);
    let removal = match ctx
        .registry
        .remove_viewer(&ctx.held, &ctx.sid, &channel_id, &viewer, ban)
        .await
    {
        Ok(removal) => removal,
        Err(e) => return ctx.error(e),
    };
    metrics::moderated(if ban {
        ModerationAction::Ban
    } else {
        ModerationAction::Remove
    });
    tracing::info!(sid = %ctx.sid, channel = %channel_id, viewer = %viewer, banned = ban, "viewer removed by the broadcaster");
    ctx.reply(&ViewerRemoved {
        channel_id: &channel_id,
        viewer_id: &viewer,
        banned: ban,
    });
    let why = if ban {
        ChannelError::Banned
    } else {
        ChannelError::Removed
    };
    for removed in &removal.removed {
        metrics::refused(why.code().into());
        let notice = ErrorMessage {
            message: why.to_string(),
            code: removed.codes.then_some(why.code()),
        };
        ctx.send(std::slice::from_ref(&removed.viewer), &notice)
            .await;
    }
    announce(
        ctx.io,
        ctx.webhooks,
        Departure {
            left: removal.left,
            ..Departure::default()
        },
    )
    .await;
}

/// `unban_all`: the channel forgets its bans.
pub async fn unban_all<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::ChannelRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx.registry.unban_all(&ctx.sid, &channel_id).await {
        Ok(()) => {
            metrics::moderated(ModerationAction::UnbanAll);
            ctx.reply(&BansCleared(ChannelRef {
                channel_id: &channel_id,
            }));
        }
        Err(e) => ctx.error(e),
    }
}

/// `mute_viewer`: mutes or unmutes a viewer's chat.
pub async fn mute_viewer<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::MuteViewer) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    let viewer = SocketId::named_by_client(&request.viewer_id.unwrap_or_default());
    let muted = request.muted.unwrap_or(true);
    match ctx
        .registry
        .mute_viewer(&ctx.held, &ctx.sid, &channel_id, &viewer, muted)
        .await
    {
        Ok(()) => {
            metrics::moderated(if muted {
                ModerationAction::Mute
            } else {
                ModerationAction::Unmute
            });
            ctx.reply(&ViewerMuted {
                channel_id: &channel_id,
                viewer_id: &viewer,
                muted,
            });
        }
        Err(e) => ctx.error(e),
    }
}

/// `remove_message`: the message leaves the history, and every page that reads ids hides it.
pub async fn remove_message<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::RemoveMessage) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    let message_id = request.message_id.unwrap_or_default();
    match ctx
        .registry
        .remove_message(&ctx.held, &ctx.sid, &channel_id, &message_id)
        .await
    {
        Ok(told) => {
            metrics::moderated(ModerationAction::RemoveMessage);
            let removed = MessageRemoved {
                channel_id: &channel_id,
                message_id: &message_id,
            };
            ctx.send(&told, &removed).await;
        }
        Err(e) => ctx.error(e),
    }
}

/// `chat_settings`: slow mode and chat off, announced to every page that reads them.
pub async fn chat_settings<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::ChatSettingsRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    let change = ChatSettingsChange {
        slow_mode: request.slow_mode,
        chat_enabled: request.chat_enabled,
    };
    match ctx
        .registry
        .set_chat_settings(&ctx.held, &ctx.sid, &channel_id, change)
        .await
    {
        Ok((settings, told)) => {
            metrics::moderated(ModerationAction::ChatSettings);
            let changed = ChatSettingsChanged {
                channel_id: &channel_id,
                slow_mode: settings.slow_mode,
                chat_enabled: settings.chat_enabled,
            };
            ctx.send(&told, &changed).await;
        }
        Err(e) => ctx.error(e),
    }
}

pub async fn stop_broadcast<A: Adapter>(ctx: &Ctx<'_, A>, request: payloads::ChannelRequest) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = request.channel_id.unwrap_or_default();
    match ctx
        .registry
        .stop_broadcast(&ctx.held, &ctx.sid, &channel_id)
        .await
    {
        Ok(stopped) => {
            ctx.webhooks.broadcast_stopped(&channel_id, &stopped);
            tracing::info!(sid = %ctx.sid, channel = %channel_id, viewers = stopped.viewers.len(), "broadcast stopped");
            let channel = ChannelRef {
                channel_id: &channel_id,
            };
            ctx.send(&stopped.viewers, &BroadcasterStopped(channel))
                .await;
        }
        Err(e) => ctx.error(e),
    }
}

/// `relay_ready`, `upstream_failed`, `upstream_stalled` and `relay_capacity`: the viewer's
/// part in the relay tree.
async fn tree_op<A: Adapter>(ctx: &Ctx<'_, A>, channel_id: Option<String>, op: TreeOp) {
    if !ctx.admit(Class::Join, ErrorPrefix::Data) {
        return;
    }
    let channel_id = channel_id.unwrap_or_default();
    tracing::debug!(?op, channel = %channel_id, "relay tree report");
    match ctx
        .registry
        .tree_op(&ctx.held, &ctx.sid, &channel_id, op)
        .await
    {
        Ok(events) => {
            tracing::debug!(moved = events.len(), "relay tree report applied");
            emit_tree(ctx.io, &events).await;
        }
        Err(e) => ctx.error(e),
    }
}

/// Sends relay-tree events, each to its one socket.
pub(super) async fn emit_tree<A: Adapter>(io: &SocketIo<A>, events: &[TreeEvent]) {
    if events.is_empty() {
        return;
    }
    let mut emits = Emits::default();
    render_tree(events, &mut emits);
    for (event, data, to) in emits.iter() {
        send_named(io, to, event, data).await;
    }
}

/// Relay-tree events as what pages read, in order: how this node sends them ([`emit_tree`]),
/// and how a channel's owner in a cluster sends those of its batches (see
/// `ClusterRegistry::render_tree_with`).
pub(super) fn render_tree(events: &[TreeEvent], emits: &mut Emits) {
    for event in events {
        match event {
            TreeEvent::Upstream {
                channel_id,
                to,
                peer,
                depth,
                seq,
            } => {
                let upstream = Upstream {
                    channel_id,
                    peer_id: peer,
                    depth: *depth,
                    seq: *seq,
                };
                push_emit(emits, std::slice::from_ref(to), &upstream);
            }
            TreeEvent::DownstreamLeft {
                channel_id,
                to,
                peer,
            } => {
                let left = DownstreamLeft {
                    channel_id,
                    peer_id: peer,
                };
                push_emit(emits, std::slice::from_ref(to), &left);
            }
            TreeEvent::Figures {
                channel_id,
                to,
                direct,
                waiting,
                depths,
                version,
            } => {
                let figures = RelayTree {
                    channel_id,
                    direct: *direct,
                    relayed: depths.iter().skip(1).sum(),
                    waiting: *waiting,
                    depths,
                    version: *version,
                };
                push_emit(emits, std::slice::from_ref(to), &figures);
            }
        }
    }
}

pub async fn disconnect<A: Adapter>(ctx: &Ctx<'_, A>, reason: DisconnectReason) {
    let departure = ctx.registry.disconnect(&ctx.held, &ctx.sid).await;
    tracing::info!(
        sid = %ctx.sid,
        ?reason,
        closed_channels = departure.closed.len(),
        "disconnected"
    );
    announce(ctx.io, ctx.webhooks, departure).await;
}

/// `viewer_count` to a channel's broadcaster.
pub(super) async fn tell_viewer_count<A: Adapter>(
    io: &SocketIo<A>,
    broadcaster: &SocketId,
    channel_id: &str,
    count: usize,
) {
    let count = ViewerCount { channel_id, count };
    send(io, std::slice::from_ref(broadcaster), &count).await;
}

/// Tells everybody a departure concerns.
pub(super) async fn announce<A: Adapter>(
    io: &SocketIo<A>,
    webhooks: &Webhooks,
    departure: Departure,
) {
    webhooks.broadcasts_ended(&departure.closed, EndReason::Disconnected);
    for held in &departure.held {
        tracing::info!(channel = %held.channel_id, viewers = held.viewers.len(), "broadcaster dropped; channel held for it to resume");
        let channel = ChannelRef {
            channel_id: &held.channel_id,
        };
        send(io, &held.viewers, &BroadcasterReconnecting(channel)).await;
    }
    for closed in &departure.closed {
        tracing::info!(sid = %closed.broadcaster, channel = %closed.channel_id, viewers = closed.viewers.len(), "channel closed: broadcaster left");
        send(io, &closed.viewers, &BroadcasterDisconnected).await;
    }
    for left in &departure.left {
        if !left.count_told {
            tell_viewer_count(io, &left.broadcaster, &left.channel_id, left.viewer_count).await;
        }
        // After the count, so a broadcaster sees the core events first.
        emit_tree(io, &left.tree).await;
    }
}
