//! Chat: the name a viewer chats under (its alias), the broadcaster's own messages, who hears
//! a message, and the channel's recent messages for viewers who join later (its history).

use std::collections::VecDeque;
use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::errors::{ChannelError, ViewerAction};
use super::ids::SocketId;
use super::model::{Channel, State};
use super::moderation::ChatPace;

/// Who must hear about a chat message, and the message itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatDelivery {
    pub message: ChatMessage,
    /// Everyone in the channel whose page reads no message ids (legacy pages).
    pub plain: Vec<SocketId>,
    /// Everyone in the channel whose page reads message ids (it presented a client key).
    pub with_ids: Vec<SocketId>,
    /// Sent already, by the channel's owner (cluster mode: see `ClusterRegistry::chat`): the
    /// caller sends nothing.
    #[serde(default)]
    pub told: bool,
}

/// One chat message: a `new_message` payload with the additions a modern page reads. The
/// channel's history keeps these, and `chat_history` sends them as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Unique within the channel (random), so that a later event can name a message (to
    /// remove it, say) and a page can tell a message it has from one it has not.
    pub id: String,
    pub sender_id: String,
    pub message: String,
    pub timestamp: f64,
    /// Written by the channel's broadcaster (`broadcaster_message`), not by a viewer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_broadcaster: bool,
}

impl ChatMessage {
    fn new(sender_id: String, message: &str, timestamp: f64, from_broadcaster: bool) -> Self {
        Self {
            id: message_id(),
            sender_id,
            message: message.to_owned(),
            timestamp,
            from_broadcaster,
        }
    }
}

/// Characters of a message id: 64 random bits in hex.
const MESSAGE_ID_LEN: usize = 16;

fn message_id() -> String {
    let bits: u64 = rand::rng().random();
    format!("{bits:0MESSAGE_ID_LEN$x}")
}

/// A channel's last messages, oldest first: a ring that keeps at most the configured number
/// (`--chat-history`), so a channel's memory for chat is bounded however long it lives. It
/// lives in the in-memory channel and goes with it; cluster mode keeps it in Redis instead
/// (a list per channel, trimmed alike), so it is never part of the channel's document.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChatHistory(VecDeque<ChatMessage>);

impl ChatHistory {
    /// Adds a message, forgetting the oldest beyond `limit` (0 keeps nothing).
    pub(crate) fn remember(&mut self, message: ChatMessage, limit: usize) {
        if limit == 0 {
            self.0.clear();
            return;
        }
        while self.0.len() >= limit {
            self.0.pop_front();
        }
        self.0.push_back(message);
    }

    /// Forgets a removed message (`remove_message`).
    pub(crate) fn forget(&mut self, id: &str) {
        self.0.retain(|m| m.id != id);
    }

    pub(crate) fn messages(&self) -> Vec<ChatMessage> {
        self.0.iter().cloned().collect()
    }
}

/// The name the broadcaster's messages carry as `sender_id`: legacy pages show it as they show
/// a viewer's alias. It cannot be mistaken for a viewer's default name (`Viewer-…`), though a
/// viewer may choose it as an alias; pages that want certainty read `from_broadcaster`.
pub const BROADCASTER_NAME: &str = "Broadcaster";

impl State {
    pub(crate) fn set_alias(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or(ChannelError::NotFound(None))?;
        let slot = channel
            .viewers
            .get_mut(sid)
            .ok_or(ChannelError::NotAViewer(ViewerAction::Other))?;
        *slot = Some(Arc::from(alias));
        Ok(())
    }

    /// `send_message`: a viewer's message, stamped `now` (unix seconds), within the channel's
    /// moderation (`pace`: this node's record of viewers' last messages, for slow mode).
    pub(crate) fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
        now: f64,
        pace: &ChatPace,
    ) -> Result<ChatDelivery, ChannelError> {
        self.channels
            .get(channel_id)
            .ok_or(ChannelError::NotFound(None))?
            .chat(sid, message, now, pace)
    }

    /// `broadcaster_message`: see [`Channel::broadcaster_message`].
    pub(crate) fn broadcaster_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
        now: f64,
    ) -> Result<ChatDelivery, ChannelError> {
        self.channels
            .get(channel_id)
            .ok_or(ChannelError::NotFound(None))?
            .broadcaster_message(sid, message, now)
    }

    /// Keeps a delivered message in its channel's history (in memory; gone with the channel).
    pub(crate) fn remember_message(
        &mut self,
        channel_id: &str,
        message: ChatMessage,
        limit: usize,
    ) {
        if let Some(channel) = self.channels.get_mut(channel_id) {
            channel.history.remember(message, limit);
        }
    }

    /// The channel's last messages, oldest first, for a viewer who joins.
    pub(crate) fn chat_history(&self, channel_id: &str) -> Vec<ChatMessage> {
        self.channels
            .get(channel_id)
            .map(|c| c.history.messages())
            .unwrap_or_default()
    }
}

/// The name a viewer without an alias chats under, as the earlier server named it.
pub(crate) fn default_name(sid: &str) -> String {
    let prefix: String = sid.chars().take(8).collect();
    format!("Viewer-{prefix}")
}

impl Channel {
    /// A viewer's message in this channel (see [`State::chat`]); the rule reads the channel
    /// alone, so a cluster's owner runs it on the stored channel without copying it.
    pub(crate) fn chat(
        &self,
        sid: &SocketId,
        message: &str,
        now: f64,
        pace: &ChatPace,
    ) -> Result<ChatDelivery, ChannelError> {
        let alias = self
            .viewers
            .get(sid)
            .ok_or(ChannelError::NotAViewer(ViewerAction::Chat))?;
        self.check_chat(sid, now, pace)?;
        let sender_name = match alias {
            Some(alias) => alias.to_string(),
            None => default_name(sid),
        };
        let (plain, with_ids) = self.chat_audience();
        Ok(ChatDelivery {
            message: ChatMessage::new(sender_name, message, now, false),
            plain,
            with_ids,
            told: false,
        })
    }

    /// `broadcaster_message`: the broadcaster writes in its own channel's chat. Only its
    /// present broadcaster may (not a viewer, not a socket whose channel was taken over).
    pub(crate) fn broadcaster_message(
        &self,
        sid: &SocketId,
        message: &str,
        now: f64,
    ) -> Result<ChatDelivery, ChannelError> {
        if self.present_broadcaster() != Some(sid) {
            return Err(ChannelError::NotTheBroadcaster);
        }
        let (plain, with_ids) = self.chat_audience();
        Ok(ChatDelivery {
            message: ChatMessage::new(BROADCASTER_NAME.to_owned(), message, now, true),
            plain,
            with_ids,
            told: false,
        })
    }
}
