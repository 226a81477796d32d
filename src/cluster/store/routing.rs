//! Where an operation on one channel runs: on this node when it owns the channel (or nobody
//! does), else forwarded to its owner (`lease.rs`, `forward.rs`); and the leases' upkeep with
//! the node's heartbeat.

use std::time::Instant;

use fred::prelude::{LuaInterface, PubsubInterface};

use super::super::forward::{self, Answer, ChannelOp, Done, Message, Request};
use super::super::lease::{Lease, RELEASE, RENEW, Route, TAKE};
use super::super::{NodeId, lock};
use super::ClusterRegistry;
use crate::registry::errors::ChannelError;
use crate::registry::ids::ChannelId;

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
        // The last owner that did not answer, and when its time to answer ran out.
        let mut silent: Option<(NodeId, Instant)> = None;
        for _ in 0..ROUTE_ATTEMPTS {
            let route = match &silent {
                Some((quiet, since)) => self.route_after_silence(id, quiet, *since).await?,
                None => self.route(id).await?,
            };
            match route {
                Route::Here => return self.run_here(id, op, None).await,
                Route::There(owner) => {
                    if silent.as_ref().is_some_and(|(quiet, _)| *quiet == owner) {
                        // Redis still names it when a dead node's heartbeat would be gone:
                        // alive, yet not answering.
                        break;
                    }
                    match self.forward(&owner, id, &op).await {
                        Some(Answer::Done(outcome)) => return outcome,
                        Some(Answer::NotOwner) => {}
                        None => silent = Some((owner, Instant::now())),
                    }
                    lock(&self.inner.owners).forget_remote(id);
                }
            }
        }
        tracing::warn!(channel = %id, "could not reach the channel's owner");
        Err(ChannelError::Unavailable)
    }

    /// Where an operation on `id` runs after its owner `silent` did not answer in time (by
    /// `since`): while Redis still names it, asks again until a lease's time-to-live after
    /// `since`. A node that died before `since` has no heartbeat left by then (its key lives
    /// 3H/2 after its last beat), so its lease goes to the next taker; the forwarding timeout
    /// (H) alone is shorter than that, and an owner killed a moment before would otherwise
    /// fail every operation forwarded to it meanwhile. Returns the last answer: `silent` still,
    /// if it is alive.
    async fn route_after_silence(
        &self,
        id: &ChannelId,
        silent: &NodeId,
        since: Instant,
    ) -> Result<Route, ChannelError> {
        let ttl = super::super::lease::lease_ttl(self.inner.heartbeat);
        let deadline = since + ttl;
        let named = Route::There(silent.clone());
        loop {
            let route = self.route(id).await?;
            let now = Instant::now();
            if route != named || now >= deadline {
                return Ok(route);
            }
            tokio::time::sleep((ttl / 10).min(deadline - now)).await;
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

    /// Sends `op` to `owner` and waits for its answer; `None` when none came in time.
    async fn forward(&self, owner: &NodeId, id: &ChannelId, op: &ChannelOp) -> Option<Answer> {
        let waiting = &self.inner.waiting;
        let (request_id, reply) = waiting.open();
        let message = Message::Request(Request {
            id: request_id,
            from: self.inner.node.to_string(),
            channel: id.clone(),
            op: op.clone(),
        });
        let text = match serde_json::to_string(&message) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!("cannot encode a forwarded operation: {e}");
                waiting.close(request_id);
                return None;
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
                return None;
            }
            // Nobody listens on its inbox: the process is gone (stopped, or killed and its
            // connections closed with it). Silent at once, not after the timeout.
            Ok(0) => {
                waiting.close(request_id);
                tracing::debug!(channel = %id, owner = %owner, "the channel's owner has no inbox");
                return None;
            }
            Ok(_) => {}
        }
        let limit = forward::timeout(self.inner.heartbeat);
        match tokio::time::timeout(limit, reply).await {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                waiting.close(request_id);
                tracing::warn!(channel = %id, owner = %owner, "the channel's owner did not answer a forwarded operation in time");
                None
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
                    Answer::Done(this.run_here(&channel, op, from).await)
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
