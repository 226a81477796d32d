//! A private channel's invitations: which generation a new one carries, and rotating them.
//!
//! The tokens themselves are signed and checked outside the registry (`crate::invites`); the
//! registry keeps the one fact a token cannot carry, whether it has been revoked: the channel's
//! invitation generation. A join with a valid invitation is admitted only while the generation
//! it names is still the channel's (see `join_as_viewer`).

use super::clock::Moment;
use super::errors::ChannelError;
use super::ids::{ChannelId, SocketId};
use super::model::State;

impl State {
    /// `create_invite`: the generation an invitation to `channel_id` must carry. Only the
    /// channel's broadcaster may invite, and only to a private channel (a public one needs no
    /// invitation: its link is enough).
    pub(crate) fn create_invite(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<u64, ChannelError> {
        let channel = self
            .channels
            .get(channel_id)
            .ok_or_else(|| ChannelError::NotFound(Some(ChannelId::from(channel_id))))?;
        if channel.broadcaster != *sid {
            return Err(ChannelError::NotTheBroadcaster);
        }
        if channel.password.is_none() {
            return Err(ChannelError::NotPrivate);
        }
        Ok(channel.invite_generation)
    }

    /// `rotate_invites`: every invitation issued so far stops admitting anybody. Viewers already
    /// in the channel stay. Returns the new generation.
    pub(crate) fn rotate_invites(
        &mut self,
        sid: &SocketId,
        channel_id: &str,
        now: Moment,
    ) -> Result<u64, ChannelError> {
        self.create_invite(sid, channel_id)?;
        let channel = self
            .channels
            .get_mut(channel_id)
            .ok_or_else(|| ChannelError::NotFound(Some(ChannelId::from(channel_id))))?;
        channel.invite_generation = channel.invite_generation.wrapping_add(1);
        channel.last_activity = now;
        Ok(channel.invite_generation)
    }
}
