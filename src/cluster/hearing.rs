//! What a node hears on its own subscriber connection: the change feed (`replica.rs`), its
//! inbox (`forward.rs`) and the emits channel (`emits.rs`), in one task, one message at a time,
//! in the order Redis sent them.
//!
//! Why one task: Redis sends one connection's messages in the order it ran their publishes,
//! and an owner publishes a write's announcement (on the feed) before the events that follow
//! from it (on the emits channel). Heard by a task per channel, a node could act on the events
//! before it applied the write; heard here, never.

use std::future::Future;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Pause between attempts to subscribe again while Redis is away.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// Messages heard but not yet handled. The connection's own buffer is a ring of fixed size
/// allocated up front (see `PUBSUB_BUFFER` in `mod.rs`), and handling a message may wait (on
/// sockets, on Redis): a task that only moves each message from that ring to this queue keeps
/// the ring small, and this queue takes memory only for the messages it holds.
const HEARD_BUFFER: usize = 65_536;

/// One message moved off the connection's ring, or how many the ring lost.
enum Heard {
    Message(Message),
    Lagged(u64),
}

/// What the node does with what it hears.
pub(super) trait Ear: Send + 'static {
    /// A message on one of the channels; the next is not heard before this one is done.
    fn heard(&self, channel: &str, text: &str) -> impl Future<Output = ()> + Send;
    /// `missed` messages were lost: the connection's buffer overflowed.
    fn lagged(&self, missed: u64);
    /// The connection failed: messages may be lost until [`Ear::up`].
    fn down(&self, reason: String);
    /// Every channel is subscribed (again).
    fn up(&self);
}

/// Hears `channels` on `subscriber` until the connection closes for good, subscribing again
/// after every reconnection.
pub(super) async fn hear(subscriber: SubscriberClient, channels: Vec<String>, ear: impl Ear) {
    let mut messages = drain(subscriber.message_rx());
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    ear.down("redis: subscribing".to_owned());
    subscribe(&subscriber, &channels, &ear).await;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Heard::Message(message)) => {
                    let Some(text) = message.value.as_str() else { continue };
                    ear.heard(&message.channel, &text).await;
                }
                Some(Heard::Lagged(missed)) => ear.lagged(missed),
                None => return,
            },
            error = errors.recv() => match error {
                Ok((e, _)) => ear.down(format!("redis: pub/sub: {e}")),
                Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(_)) => ear.down("redis: pub/sub: errors".to_owned()),
            },
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                ear.down("redis: pub/sub: subscribing again".to_owned());
                subscribe(&subscriber, &channels, &ear).await;
            }
        }
    }
}

/// Moves every message off the connection's ring as soon as it arrives, in order.
fn drain(mut ring: tokio::sync::broadcast::Receiver<Message>) -> mpsc::Receiver<Heard> {
    let (queue, heard) = mpsc::channel(HEARD_BUFFER);
    drop(tokio::spawn(async move {
        loop {
            let next = match ring.recv().await {
                Ok(message) => Heard::Message(message),
                Err(RecvError::Lagged(missed)) => Heard::Lagged(missed),
                Err(RecvError::Closed) => return,
            };
            if queue.send(next).await.is_err() {
                return;
            }
        }
    }));
    heard
}

/// Subscribes to every channel, retrying while Redis is away.
async fn subscribe(subscriber: &SubscriberClient, channels: &[String], ear: &impl Ear) {
    loop {
        match subscriber.subscribe(channels.to_vec()).await {
            Ok(()) => {
                ear.up();
                return;
            }
            Err(e) => {
                ear.down(format!("redis: pub/sub: {e}"));
                tracing::debug!("cannot subscribe yet: {e}");
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        }
    }
}
