//! The waiting room: viewers waiting for a channel id that has no broadcaster yet. The
//! broadcaster that creates it (`join_as_broadcaster`) takes them in as its first viewers, so
//! that a page may send its offer as soon as it hears `broadcaster_joined`; they are forgotten
//! when they disconnect.

use std::collections::HashMap;

use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::model::{RegistryLimits, State, Waiter};

impl State {
    /// Puts a viewer in the waiting room of a channel id that has no broadcaster yet.
    /// `Ok(false)`: the channel exists after all (the caller joins it instead).
    pub(crate) fn wait_for(
        &mut self,
        limits: &RegistryLimits,
        sid: &SocketId,
        channel_id: &ChannelId,
        relay: bool,
        now: Moment,
    ) -> Result<bool, ChannelError> {
        if self.channels.contains_key(channel_id) {
            return Ok(false);
        }
        let lobby = self.lobbies.get(channel_id);
        if lobby.is_some_and(|l| l.contains_key(sid)) {
            return Ok(true);
        }
        if lobby.map_or(0, HashMap::len) >= limits.max_waiting_per_channel
            || self.waiting_total >= limits.max_waiting
        {
            return Err(ChannelError::WaitingRoomFull);
        }
        self.lobbies
            .entry(channel_id.clone())
            .or_default()
            .insert(sid.clone(), Waiter { relay, since: now });
        self.waiting_total += 1;
        self.sockets
            .entry(sid.clone())
            .or_default()
            .waiting
            .insert(channel_id.clone());
        Ok(true)
    }
}
