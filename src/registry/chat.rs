//! Chat: the name a viewer chats under (its alias), the broadcaster's own messages, and who
//! hears a message.

use std::sync::Arc;

use super::errors::ChannelError;
use super::ids::SocketId;
use super::model::{Channel, State};

/// Who must hear about a chat message, and under which name.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatDelivery {
    pub sender_name: String,
    pub recipients: Vec<SocketId>,
    /// Written by the channel's broadcaster (`broadcaster_message`), not by a viewer.
    pub from_broadcaster: bool,
}

/// The name the broadcaster's messages carry as `sender_id`: legacy pages show it as they show
/// a viewer's alias. It cannot be mistaken for a viewer's default name (`Viewer-…`), though a
/// viewer may choose it as an alias; pages that want certainty read `from_broadcaster`.
pub const BROADCASTER_NAME: &str = "Broadcaster";

impl Channel {
    fn participants(&self) -> Vec<SocketId> {
        let mut all = Vec::with_capacity(self.viewers.len() + 1);
        all.push(self.broadcaster.clone());
        all.extend(
            self.viewers
                .keys()
                .filter(|v| **v != self.broadcaster)
                .cloned(),
        );
        all
    }
}

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
            .ok_or(ChannelError::NotFoundOrExpired)?;
        let slot = channel
            .viewers
            .get_mut(sid)
            .ok_or(ChannelError::NotAViewer)?;
        *slot = Some(Arc::from(alias));
        Ok(())
    }

    pub(crate) fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        let channel = self
            .channels
            .get(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        let alias = channel
            .viewers
            .get(sid)
            .ok_or(ChannelError::NotAViewerToChat)?;
        let sender_name = match alias {
            Some(alias) => alias.to_string(),
            None => default_name(sid),
        };
        Ok(ChatDelivery {
            sender_name,
            recipients: channel.participants(),
            from_broadcaster: false,
        })
    }

    /// `broadcaster_message`: the broadcaster writes in its own channel's chat. Only its
    /// present broadcaster may (not a viewer, not a socket whose channel was taken over).
    pub(crate) fn broadcaster_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        let channel = self
            .channels
            .get(channel_id)
            .ok_or(ChannelError::NotFoundOrExpired)?;
        if channel.present_broadcaster() != Some(sid) {
            return Err(ChannelError::NotTheBroadcaster);
        }
        Ok(ChatDelivery {
            sender_name: BROADCASTER_NAME.to_owned(),
            recipients: channel.participants(),
            from_broadcaster: true,
        })
    }
}

/// The name a viewer without an alias chats under, as the earlier server named it.
fn default_name(sid: &str) -> String {
    let prefix: String = sid.chars().take(8).collect();
    format!("Viewer-{prefix}")
}
