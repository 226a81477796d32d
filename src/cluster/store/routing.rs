//! Where an operation on one channel runs: on this node when it owns the channel (or nobody
//! does), else forwarded to its owner (`lease.rs`, `forward.rs`); and the leases' upkeep with
//! the node's heartbeat.

use std::time::Instant;

use fred::prelude::{LuaInterface, PubsubInterface};

use super::super::forward::{self, Answer, ChannelOp, Done, Message, Request};
use super::super::lease::{Lease, RELEASE, RENEW, Route, TAKE};
use super::super::{NodeId, lock};
use super::ClusterRegistry;
use crate::registry::clock::Moment;
use crate::registry::errors::ChannelError;
use crate::registry::ids::ChannelId;

/// A forwarded request whose answer is still awaited after the forwarding timeout.
struct Awaited {
    id: u64,
    reply: tokio::sync::oneshot::Receiver<Answer>,
}

/// What forwarding an operation came to.
enum Sent {
    Answered(Answer),
    /// No answer in time (the request, if it reached the owner's inbox).
    Silent(Option<Awaited>),
}

/// What waiting out a silent owner came to.
enum AfterSilence {
    /// Its answer came after all.
    Answered(Answer),
    /// Where the operation runs now.
    Route(Route),
}

/// How many times an operation looks for its channel's owner before it gives up: a lease
/// changes hands at most a couple of times in a moment (a hand-off, a death).
const ROUTE_ATTEMPTS: usize = 3;

impl ClusterRegistry {
    /// Runs `op` on its channel's owner: here, or forwarded. A refusal the cluster causes (an
    /// owner that cannot be reached) is `Unavailable`, never the client's fault.
    pub(super) async fn on_owner(
        &self,
        id: &ChannelId,
        op: ChannelOp,
    ) -> Result<Done, ChannelError> {
        // An owner runs a forwarded operation only until this moment (see `Request`): after
        // it, its sender may have given up and told its client so.
        let limit = forward::timeout(self.inner.heartbeat);
        let ttl = super::super::lease::lease_ttl(self.inner.heartbeat);
        let allowed = u64::try_from((limit + ttl * 2 / 3).as_millis()).unwrap_or(u64::MAX);
        let deadline = Moment::from_millis(Moment::now().as_millis().saturating_add(allowed));
        // The owner that went silent, when, and its request, whose answer may still come.
        let mut silent: Option<(NodeId, Instant)> = None;
        let mut awaited: Option<Awaited> = None;
        let mut outcome = Err(ChannelError::Unavailable);
        for _ in 0..ROUTE_ATTEMPTS {
            let route = match &silent {
                Some((quiet, since)) => {
                    match self
                        .route_after_silence(id, quiet, *since, awaited.as_mut())
                        .await
                    {
                        Ok(AfterSilence::Answered(Answer::Done(done))) => {
                            outcome = done;
                            break;
                        }
                        Ok(AfterSilence::Answered(Answer::NotOwner)) => {
                            lock(&self.inner.owners).forget_remote(id);
                            self.route(id).await
                        }
                        Ok(AfterSilence::Route(route)) => Ok(route),
                        Err(e) => Err(e),
                    }
                }
                None => self.route(id).await,
            };
            let route = match route {
                Ok(route) => route,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            match route {
                Route::Here => {
                    outcome = self.run_here(id, op, None, None).await;
                    break;
                }
                Route::There(owner) => {
                    if silent.as_ref().is_some_and(|(quiet, _)| *quiet == owner) {
                        // Redis still names it when a dead node's heartbeat would be gone:
                        // alive, yet not answering.
                        tracing::warn!(channel = %id, "could not reach the channel's owner");
                        break;
                    }
                    if let Some(old) = awaited.take() {
                        self.inner.waiting.close(old.id);
                    }
                    match self.forward(&owner, id, &op, deadline).await {
                        Sent::Answered(Answer::Done(done)) => {
                            outcome = done;
                            break;
                        }
                        Sent::Answered(Answer::NotOwner) => silent = None,
                        Sent::Silent(still) => {
                            awaited = still;
                            silent = Some((owner, Instant::now()));
                        }
                    }
                    lock(&self.inner.owners).forget_remote(id);
                }
            }
        }
        if let Some(old) = awaited {
            self.inner.waiting.close(old.id);
        }
        outcome
    }

    /// Where an operation on `id` runs after its owner `silent` did not answer in time (by
    /// `since`): while Redis still names it, asks again until a lease's time-to-live after
    /// `since`. A node that died before `since` has no heartbeat left by then (its key lives
    /// 3H/2 after its last beat), so its lease goes to the next taker; the forwarding timeout
    /// (H) alone is shorter than that, and an owner killed a moment before would otherwise
    /// fail every operation forwarded to it meanwhile. Meanwhile the silent owner's answer is
    /// still taken if it comes (a slow owner, not a dead one): the operation ran there. Returns
    /// that answer, or the last route: `silent` still, if it is alive.
    async fn route_after_silence(
        &self,
        id: &ChannelId,
        silent: &NodeId,
        since: Instant,
        mut awaited: Option<&mut Awaited>,
    ) -> Result<AfterSilence, ChannelError> {
        let ttl = super::super::lease::lease_ttl(self.inner.heartbeat);
        let deadline = since + ttl;
        let named = Route::There(silent.clone());
        loop {
            let route = self.route(id).await?;
            let now = Instant::now();
            if route != named || now >= deadline {
                return Ok(AfterSilence::Route(route));
            }
            let pause = tokio::time::sleep((ttl / 10).min(deadline - now));
            tokio::pin!(pause);
            let mut dropped = false;
            match awaited.as_deref_mut() {
                Some(awaited) => tokio::select! {
                    answer = &mut awaited.reply => {
                        if let Ok(answer) = answer {
                            return Ok(AfterSilence::Answered(answer));
                        }
                        // Its slot was closed: nothing more will come (never polled again).
                        dropped = true;
                        (&mut pause).await;
                    }
                    () = &mut pause => {}
                },
                None => pause.await,
            }
            if dropped {
                awaited = None;
            }
            lock(&self.inner.owners).forget_remote(id);
        }
    }

    /// Where an operation on `id` runs: from what this node knows, else by taking the lease
    /// (which answers the live holder's instead, if there is one).
    pub(super) async fn route(&self, id: &ChannelId) -> Result<Route, ChannelError> {
        let sent = Instant::now();
        if let Some(route) = lock(&self.inner.owners).route(id, sent) {
            return Ok(route);
        }
        let keys = self.keys();
        let ttl = super::super::lease::lease_ttl(self.inner.heartbeat);
        let token: Option<String> = self
            .inner
            .client
            .eval(
                TAKE,
                vec![keys.owner(id), keys.channel(id)],
                vec![
                    self.inner.node.to_string(),
                    ttl.as_millis().to_string(),
                    keys.heartbeat_prefix(),
                ],
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let lease = token.as_deref().and_then(Lease::parse);
        if token.is_some() && lease.is_none() {
            tracing::error!(channel = %id, ?token, "unreadable channel lease");
            return Err(ChannelError::Unavailable);
        }
        Ok(lock(&self.inner.owners).record(id, lease, sent))
    }

    /// The token of the lease this node may write `id` under now, if it holds one.
    pub(super) fn fence(&self, id: &ChannelId) -> Option<String> {
        lock(&self.inner.owners).fence(id, Instant::now())
    }

    /// Stops acting as `id`'s owner (the commit script found another holder).
    pub(super) fn lost_lease(&self, id: &ChannelId) {
        lock(&self.inner.owners).lost(id);
    }

    /// Sends `op` to `owner` and waits for its answer until the forwarding timeout; silent
    /// when none came (with the request, still awaited, when it reached the owner's inbox).
    async fn forward(
        &self,
        owner: &NodeId,
        id: &ChannelId,
        op: &ChannelOp,
        deadline: Moment,
    ) -> Sent {
        let waiting = &self.inner.waiting;
        let (request_id, reply) = waiting.open();
        let message = Message::Request(Request {
            id: request_id,
            from: self.inner.node.to_string(),
            channel: id.clone(),
            op: op.clone(),
            deadline: deadline.as_millis(),
        });
        let text = match serde_json::to_string(&message) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!("cannot encode a forwarded operation: {e}");
                waiting.close(request_id);
                return Sent::Silent(None);
            }
        };
        let sent: Result<i64, _> = self
            .inner
            .client
            .publish(self.keys().inbox(owner), text)
            .await;
        match sent {
            Err(e) => {
                waiting.close(request_id);
                self.unavailable(e);
                return Sent::Silent(None);
            }
            // Nobody listens on its inbox: the process is gone (stopped, or killed and its
            // connections closed with it), or its subscription is being made again. Silent at
            // once, not after the timeout.
            Ok(0) => {
                waiting.close(request_id);
                tracing::debug!(channel = %id, owner = %owner, "the channel's owner has no inbox");
                return Sent::Silent(None);
            }
            Ok(_) => {}
        }
        let mut awaited = Awaited {
            id: request_id,
            reply,
        };
        let limit = forward::timeout(self.inner.heartbeat);
        match tokio::time::timeout(limit, &mut awaited.reply).await {
            Ok(Ok(answer)) => Sent::Answered(answer),
            Ok(Err(_)) => Sent::Silent(None),
            Err(_) => {
                tracing::warn!(channel = %id, owner = %owner, "the channel's owner did not answer a forwarded operation in time");
                Sent::Silent(Some(awaited))
            }
        }
    }

    /// Runs an operation another node forwarded, if this node owns its channel (asking Redis
    /// unless it holds the lease), and publishes the answer.
    pub(super) fn serve(&self, request: Request) {
        let this = self.clone();
        drop(tokio::spawn(async move {
            let Request {
                id,
                from,
                channel,
                op,
                deadline,
            } = request;
            // The sender found this node named as the owner (in Redis, or recently enough): an
            // owner this node remembers seeing elsewhere is no reason to refuse. Answering
            // `NotOwner` from that memory while Redis names this node would send the sender
            // back here until it gives up.
            lock(&this.inner.owners).forget_remote(&channel);
            let answer = match this.route(&channel).await {
                Ok(Route::Here) => {
                    let from = NodeId::parse(&from);
                    let from = (from != this.inner.node).then_some(from);
                    let deadline = Some(Moment::from_millis(deadline));
                    match this.run_here(&channel, op, from, deadline).await {
                        // It lost the lease while the batch ran (the operation was left out):
                        // the sender asks Redis for the owner.
                        Err(ChannelError::Unavailable) if this.fence(&channel).is_none() => {
                            Answer::NotOwner
                        }
                        outcome => Answer::Done(outcome),
                    }
                }
                Ok(Route::There(_)) => Answer::NotOwner,
                Err(e) => Answer::Done(Err(e)),
            };
            let reply = Message::Reply { id, answer };
            let text = match serde_json::to_string(&reply) {
                Ok(text) => text,
                Err(e) => {
                    tracing::error!("cannot encode a forwarded operation's answer: {e}");
                    return;
                }
            };
            let to = this.keys().inbox(&NodeId::parse(&from));
            if let Err(e) = this.inner.client.publish::<(), _, _>(to, text).await {
                tracing::warn!("could not answer a forwarded operation: {e}");
            }
        }));
    }

    /// Renews every lease this node holds (with each heartbeat); leases of channels that are
    /// gone are released, and lost ones forgotten.
    pub async fn renew_leases(&self) {
        let held = lock(&self.inner.owners).held();
        let sent = Instant::now();
        if held.is_empty() {
            // Only the remote owners it remembers, which age out here.
            lock(&self.inner.owners).renewed(&[], sent);
            return;
        }
        let ttl = super::super::lease::lease_ttl(self.inner.heartbeat);
        let keys = self.keys();
        let mut lua_keys = Vec::with_capacity(held.len() * 2);
        let mut args = Vec::with_capacity(held.len() + 1);
        args.push(ttl.as_millis().to_string());
        for (id, token) in &held {
            lua_keys.push(keys.owner(id));
            lua_keys.push(keys.channel(id));
            args.push(token.clone());
        }
        let answer: Result<Vec<i64>, _> = self.inner.client.eval(RENEW, lua_keys, args).await;
        match answer {
            Ok(kept) => {
                let answers: Vec<_> = held
                    .into_iter()
                    .zip(kept)
                    .map(|((id, token), k)| (id, token, k == 1))
                    .collect();
                lock(&self.inner.owners).renewed(&answers, sent);
            }
            // Not renewed: the leases run out on their own time, and this node stops acting on
            // them when they do.
            Err(e) => tracing::warn!("could not renew channel leases: {e}"),
        }
    }

    /// Gives up every lease this node holds (at sign-off): the next operation on each
    /// channel, on any node, takes it.
    pub async fn release_leases(&self) {
        let held = {
            let mut owners = lock(&self.inner.owners);
            let held = owners.held();
            owners.clear();
            held
        };
        if held.is_empty() {
            return;
        }
        let keys = self.keys();
        let (ids, tokens): (Vec<_>, Vec<_>) = held.into_iter().unzip();
        let lua_keys: Vec<String> = ids.iter().map(|id| keys.owner(id)).collect();
        let released: Result<i64, _> = self.inner.client.eval(RELEASE, lua_keys, tokens).await;
        if let Err(e) = released {
            tracing::warn!("could not release channel leases (they run out by themselves): {e}");
        }
    }
}
