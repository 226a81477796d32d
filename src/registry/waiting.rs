//! The waiting room: viewers waiting for a channel id that has no broadcaster yet. They are
//! handed to the broadcaster that creates it (`join_as_broadcaster`) and forgotten when they
//! disconnect.

use std::collections::HashSet;

use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::model::{RegistryLimits, State};

impl State {
    /// Puts a viewer in the waiting room of a channel id that has no broadcaster yet.
    /// `Ok(false)`: the channel exists after all (the caller joins it instead).
    pub(crate) fn wait_for(
        &mut self,
        limits: &RegistryLimits,
        sid: &SocketId,
        channel_id: &ChannelId,
    ) -> Result<bool, ChannelError> {
        if self.channels.contains_key(channel_id) {
            return Ok(false);
        }
        let lobby = self.lobbies.get(channel_id);
        if lobby.is_some_and(|l| l.contains(sid)) {
            return Ok(true);
        }
        if lobby.map_or(0, HashSet::len) >= limits.max_waiting_per_channel
            || self.waiting_total >= limits.max_waiting
        {
            return Err(ChannelError::WaitingRoomFull);
        }
        self.lobbies
            .entry(channel_id.clone())
            .or_default()
            .insert(sid.clone());
        self.waiting_total += 1;
        self.sockets
            .entry(sid.clone())
            .or_default()
            .waiting
            .insert(channel_id.clone());
        Ok(true)
    }
}
