//! Webhooks: the operator's other systems learn that a broadcast started, stopped, resumed or
//! ended, as signed JSON POSTed to `--webhook-url` (the contract: EXTENSIONS.md, "Webhooks").
//!
//! Handlers never wait for a receiver: [`Webhooks::send`] puts the event in a bounded queue
//! and returns; one background task ([`Worker`]) delivers the queue in order, retrying network
//! errors, `5xx` and `429` with exponential backoff. When the queue is full the oldest event
//! goes (the newest say how things stand now), counted in `/metrics` and logged once per
//! burst. In cluster mode each event is sent by the node whose registry operation produced it,
//! so it is sent once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{WebhookSecret, WebhookUrl};
use crate::metrics::{self, WebhookOutcome};
use crate::registry::broadcaster::{BroadcastStarted, BroadcastStopped};
use crate::registry::clock::unix_now;
use crate::registry::ids::ChannelId;
use crate::registry::model::ClosedChannel;

/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Broadcast-Signature";
/// Events waiting for delivery at most; beyond it the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 1000;
/// Attempts per event, the first included.
const MAX_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles before each next one (1 s, 2 s, 4 s, 8 s).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one attempt may take, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deliveries may go on once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What happened to a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// A channel went live: created, or live again after `stop_broadcast`.
    #[serde(rename = "broadcast.started")]
    Started,
    /// Its broadcaster sent `stop_broadcast`; the channel stays and may go live again.
    #[serde(rename = "broadcast.stopped")]
    Stopped,
    /// Its broadcaster came back within the resume grace, or another device took it over.
    #[serde(rename = "broadcast.resumed")]
    Resumed,
    /// The channel is gone for good.
    #[serde(rename = "broadcast.ended")]
    Ended,
}

/// Why a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its broadcaster disconnected without asking to resume (or its node stopped or died).
    Disconnected,
    /// Its broadcaster dropped and did not resume within the grace.
    NotResumed,
    /// It was idle past `--channel-ttl-secs`.
    Expired,
}

/// One webhook event: the request body, as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEvent {
    /// Unique per event (32 hex characters); retries send the same, so receivers can ignore a
    /// repeat.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened: Unix time in seconds (a float, as the protocol's timestamps).
    pub at: f64,
    pub channel_id: ChannelId,
    /// Cluster mode: the node that sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// `stopped` and `ended`: the most viewers at once during the broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_viewers: Option<usize>,
    /// `ended`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

impl WebhookEvent {
    /// An event that happens now, with a fresh id.
    pub fn new(kind: EventType, channel_id: ChannelId) -> Self {
        let id: [u8; 16] = rand::rng().random();
        Self {
            id: hex::encode(id),
            kind,
            at: unix_now(),
            channel_id,
            node_id: None,
            peak_viewers: None,
            reason: None,
        }
    }

    /// What a successful `join_as_broadcaster` means for webhooks: `resumed` for a resume or a
    /// takeover, `started` when the channel was not live, nothing for its owner's repeated
    /// join while live.
    pub fn of_start(started: &BroadcastStarted) -> Option<Self> {
        let kind = if started.resumed || started.replaced.is_some() {
            EventType::Resumed
        } else if !started.was_live {
            EventType::Started
        } else {
            return None;
        };
        Some(Self::new(kind, started.channel_id.clone()))
    }

    /// A `stop_broadcast` of a live channel (a repeated one changes nothing).
    pub fn of_stop(channel_id: &str, stopped: &BroadcastStopped) -> Option<Self> {
        stopped.was_live.then(|| Self {
            peak_viewers: Some(stopped.peak_viewers),
            ..Self::new(EventType::Stopped, ChannelId::from(channel_id))
        })
    }

    /// A channel closed.
    pub fn of_end(closed: &ClosedChannel, reason: EndReason) -> Self {
        Self {
            peak_viewers: Some(closed.peak_viewers),
            reason: Some(reason),
            ..Self::new(EventType::Ended, closed.channel_id.clone())
        }
    }
}

/// The signature of one request: hex HMAC-SHA256 of `"<timestamp>.<body>"` under the secret.
pub fn sign(secret: &[u8], timestamp: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The [`SIGNATURE_HEADER`] value: `t=<timestamp>,v1=<signature>`.
pub fn signature_header(secret: &[u8], timestamp: u64, body: &str) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// The handle handlers send through. Cheap to clone; without `--webhook-url` it does nothing.
#[derive(Clone, Default)]
pub struct Webhooks {
    queue: Option<Arc<Queue>>,
    node_id: Option<Arc<str>>,
}

impl Webhooks {
    /// Starts the delivery task when a URL and secret are configured. `node_id`: cluster mode.
    pub fn start(
        target: Option<(WebhookUrl, WebhookSecret)>,
        node_id: Option<String>,
    ) -> Result<(Self, Worker), reqwest::Error> {
        let Some((url, secret)) = target else {
            return Ok((Self::default(), Worker::idle()));
        };
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            // A redirect would send the signed event somewhere the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("broadcast-server/", env!("CARGO_PKG_VERSION")))
            .build()?;
        tracing::info!(receiver = %url, "webhooks: broadcast events are POSTed to the receiver");
        let queue = Arc::new(Queue::new(QUEUE_CAPACITY));
        let cancel = CancellationToken::new();
        let receiver = Receiver {
            client,
            url,
            secret,
        };
        let task = tokio::spawn(run(queue.clone(), receiver, cancel.clone()));
        let webhooks = Self {
            queue: Some(queue),
            node_id: node_id.map(Arc::from),
        };
        Ok((
            webhooks,
            Worker {
                cancel,
                task: Some(task),
            },
        ))
    }

    /// Queues an event for delivery; never waits.
    pub fn send(&self, mut event: WebhookEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        event.node_id = self.node_id.as_deref().map(str::to_owned);
        queue.push(event);
    }

    /// After a successful `join_as_broadcaster`.
    pub fn broadcast_started(&self, started: &BroadcastStarted) {
        if let Some(event) = WebhookEvent::of_start(started) {
            self.send(event);
        }
    }

    /// After a successful `stop_broadcast`.
    pub fn broadcast_stopped(&self, channel_id: &str, stopped: &BroadcastStopped) {
        if let Some(event) = WebhookEvent::of_stop(channel_id, stopped) {
            self.send(event);
        }
    }

    /// After channels closed.
    pub fn broadcasts_ended(&self, closed: &[ClosedChannel], reason: EndReason) {
        for channel in closed {
            self.send(WebhookEvent::of_end(channel, reason));
        }
    }
}

/// The delivery task's lifetime: dropping it stops the task, which then gets
/// [`SHUTDOWN_GRACE`] for what is in flight; [`Worker::finish`] also waits for that.
#[must_use = "webhook delivery stops when this guard is dropped"]
pub struct Worker {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    fn idle() -> Self {
        Self {
            cancel: CancellationToken::new(),
            task: None,
        }
    }

    /// Stops the task and waits until it has delivered what it could within the grace.
    pub async fn finish(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), task)
                .await
                .is_err()
        {
            tracing::warn!("webhooks: delivery did not stop in time");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The bounded queue between handlers and the delivery task.
struct Queue {
    capacity: usize,
    /// A std mutex: pushing and popping never await while holding it.
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    events: VecDeque<WebhookEvent>,
    /// Events dropped since the queue was last empty: one warning per burst.
    dropped_in_burst: u64,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, event: WebhookEvent) {
        let mut pending = self.lock();
        if pending.events.len() >= self.capacity {
            pending.events.pop_front();
            pending.dropped_in_burst += 1;
            metrics::webhooks(WebhookOutcome::Dropped, 1);
            if pending.dropped_in_burst == 1 {
                tracing::warn!(
                    capacity = self.capacity,
                    "webhooks: the queue is full (the receiver is slow or down); dropping the oldest events"
                );
            }
        }
        pending.events.push_back(event);
        drop(pending);
        self.ready.notify_one();
    }

    fn try_pop(&self) -> Option<WebhookEvent> {
        let mut pending = self.lock();
        let event = pending.events.pop_front();
        if pending.events.is_empty() && pending.dropped_in_burst > 0 {
            tracing::warn!(
                dropped = pending.dropped_in_burst,
                "webhooks: the queue has caught up; events were dropped meanwhile"
            );
            pending.dropped_in_burst = 0;
        }
        event
    }

    /// The next event, waiting for one.
    async fn pop(&self) -> WebhookEvent {
        loop {
            if let Some(event) = self.try_pop() {
                return event;
            }
            // A push between `try_pop` and here leaves a permit: this returns at once.
            self.ready.notified().await;
        }
    }

    fn len(&self) -> usize {
        self.lock().events.len()
    }
}

/// Where and how events are sent.
struct Receiver {
    client: reqwest::Client,
    url: WebhookUrl,
    secret: WebhookSecret,
}

/// How one attempt ended.
enum Attempt {
    Accepted,
    /// Worth another try: a network error, a timeout, `5xx` or `429`.
    Retry(String),
    /// The receiver refused it: trying again would not help.
    Refused(reqwest::StatusCode),
}

impl Receiver {
    async fn attempt(&self, body: &str) -> Attempt {
        let timestamp = unix_now() as u64;
        let signature = signature_header(self.secret.expose(), timestamp, body);
        let sent = self
            .client
            .post(self.url.expose().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempt::Accepted,
            Ok(response)
                if response.status().is_server_error()
                    || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                Attempt::Retry(format!("status {}", response.status()))
            }
            Ok(response) => Attempt::Refused(response.status()),
            // Without the URL: it may hold the receiver's token.
            Err(e) => Attempt::Retry(describe(&e.without_url())),
        }
    }

    /// Delivers one event, retrying with backoff; `true` when the receiver accepted it.
    async fn deliver(&self, event: &WebhookEvent) -> bool {
        let body = match serde_json::to_string(event) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!("webhooks: cannot encode an event: {e}");
                return false;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(&body).await {
                Attempt::Accepted => {
                    tracing::debug!(id = %event.id, kind = ?event.kind, channel = %event.channel_id, attempt, "webhook delivered");
                    return true;
                }
                Attempt::Refused(status) => {
                    tracing::warn!(id = %event.id, kind = ?event.kind, channel = %event.channel_id, %status, receiver = %self.url, "webhook refused by the receiver; not retried");
                    return false;
                }
                Attempt::Retry(why) if attempt == MAX_ATTEMPTS => {
                    tracing::warn!(id = %event.id, kind = ?event.kind, channel = %event.channel_id, attempts = attempt, receiver = %self.url, "webhook not delivered: {why}");
                }
                Attempt::Retry(why) => {
                    tracing::debug!(id = %event.id, attempt, "webhook attempt failed ({why}); retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        false
    }
}

/// An error's chain in one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn record(delivered: bool) {
    let outcome = match delivered {
        true => WebhookOutcome::Delivered,
        false => WebhookOutcome::Failed,
    };
    metrics::webhooks(outcome, 1);
}

/// The delivery task: one event at a time, in order. Once cancelled, what is in flight and
/// what is queued get [`SHUTDOWN_GRACE`] in all; the rest counts as dropped.
async fn run(queue: Arc<Queue>, receiver: Receiver, cancel: CancellationToken) {
    let deadline = loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break Instant::now() + SHUTDOWN_GRACE,
            event = queue.pop() => event,
        };
        let delivery = receiver.deliver(&event);
        tokio::pin!(delivery);
        tokio::select! {
            delivered = &mut delivery => record(delivered),
            () = cancel.cancelled() => {
                let deadline = Instant::now() + SHUTDOWN_GRACE;
                match tokio::time::timeout_at(deadline, delivery).await {
                    Ok(delivered) => record(delivered),
                    Err(_) => record(false),
                }
                break deadline;
            }
        }
    };
    while Instant::now() < deadline {
        let Some(event) = queue.try_pop() else {
            return;
        };
        match tokio::time::timeout_at(deadline, receiver.deliver(&event)).await {
            Ok(delivered) => record(delivered),
            Err(_) => record(false),
        }
    }
    let left = queue.len();
    if left > 0 {
        metrics::webhooks(WebhookOutcome::Dropped, left as u64);
        tracing::warn!(
            dropped = left,
            "webhooks: the server stopped before these events were sent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> WebhookEvent {
        WebhookEvent::new(
            EventType::Started,
            ChannelId::from(format!("c{n}").as_str()),
        )
    }

    /// Computed independently:
    /// `printf %s '1700000000.<body>' | openssl dgst -sha256 -hmac whsec-test`.
    #[test]
    fn signature_matches_a_known_vector() {
        let body = r#"{"id":"0123456789abcdef0123456789abcdef","type":"broadcast.started","at":1700000000.25,"channel_id":"room"}"#;
        assert_eq!(
            signature_header(b"whsec-test", 1_700_000_000, body),
            "t=1700000000,v1=cffd4e974839a53c9cc3c7ee08b1d02809f7e3161c65fb09c77b8ebc1f80af96"
        );
    }

    #[test]
    fn the_body_is_small_and_stable() {
        let mut started = event(0);
        started.id = "0123456789abcdef0123456789abcdef".to_owned();
        started.at = 1_700_000_000.25;
        started.channel_id = ChannelId::from("room");
        assert_eq!(
            serde_json::to_string(&started).unwrap(),
            r#"{"id":"0123456789abcdef0123456789abcdef","type":"broadcast.started","at":1700000000.25,"channel_id":"room"}"#
        );
        let closed = ClosedChannel {
            channel_id: ChannelId::from("room"),
            broadcaster: crate::registry::ids::SocketId::from("b"),
            viewers: Vec::new(),
            peak_viewers: 7,
        };
        let mut ended = WebhookEvent::of_end(&closed, EndReason::NotResumed);
        ended.node_id = Some("node-1".to_owned());
        let value = serde_json::to_value(&ended).unwrap();
        assert_eq!(value["type"], "broadcast.ended");
        assert_eq!(value["peak_viewers"], 7);
        assert_eq!(value["reason"], "not_resumed");
        assert_eq!(value["node_id"], "node-1");
        assert_eq!(value["id"].as_str().map(str::len), Some(32));
        assert_ne!(event(0).id, event(0).id, "ids are unique");
    }

    #[test]
    fn starts_map_to_started_resumed_or_nothing() {
        let start = |was_live, resumed, replaced: Option<&str>| BroadcastStarted {
            channel_id: ChannelId::from("room"),
            resumable: false,
            lobby: Vec::new(),
            admitted: Vec::new(),
            private: false,
            viewer_count: 0,
            replaced: replaced.map(crate::registry::ids::SocketId::from),
            resumed,
            waiting_viewers: Vec::new(),
            tree: Vec::new(),
            was_live,
            chat_settings: None,
        };
        let kind = |s: BroadcastStarted| WebhookEvent::of_start(&s).map(|e| e.kind);
        assert_eq!(kind(start(false, false, None)), Some(EventType::Started));
        assert_eq!(kind(start(true, true, None)), Some(EventType::Resumed));
        assert_eq!(
            kind(start(true, false, Some("old"))),
            Some(EventType::Resumed)
        );
        assert_eq!(
            kind(start(true, false, None)),
            None,
            "a repeated join while live"
        );
        let stop = |was_live| BroadcastStopped {
            viewers: Vec::new(),
            peak_viewers: 3,
            was_live,
        };
        assert_eq!(
            WebhookEvent::of_stop("room", &stop(true)).and_then(|e| e.peak_viewers),
            Some(3)
        );
        assert!(WebhookEvent::of_stop("room", &stop(false)).is_none());
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let queue = Queue::new(3);
        for n in 0..5 {
            queue.push(event(n));
        }
        assert_eq!(queue.len(), 3);
        let left: Vec<String> = std::iter::from_fn(|| queue.try_pop())
            .map(|e| e.channel_id.to_string())
            .collect();
        assert_eq!(left, ["c2", "c3", "c4"]);
        assert_eq!(
            queue.lock().dropped_in_burst,
            0,
            "the burst ends once caught up"
        );
    }

    #[tokio::test]
    async fn without_a_url_sending_does_nothing() {
        let (webhooks, worker) = Webhooks::start(None, None).unwrap();
        webhooks.send(event(0));
        assert!(webhooks.queue.is_none());
        worker.finish().await;
    }
}
