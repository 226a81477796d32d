//! Which channels each socket may be in, beside the cells (see `memory`): what a disconnect
//! or a relay reads to visit only the caller's own cells.
//!
//! Sharded by socket: every relay reads its sender's entry and every join or departure writes
//! one, from every core at once, and the departures of a closing 10,000-viewer channel write
//! 10,000; one lock over all of them would make each of those wait on all the others.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use crate::registry::ids::{ChannelId, SocketId};

/// Enough shards that two cores rarely meet on one.
const SHARDS: usize = 64;

type Shard = HashMap<SocketId, HashSet<ChannelId>>;

pub(super) struct Places {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Places {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Places {
    fn index(&self, sid: &SocketId) -> usize {
        (self.hasher.hash_one(sid) as usize) % SHARDS
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A poisoned shard is still a valid map (see `memory::lock`).
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, sid: &SocketId) -> MutexGuard<'_, Shard> {
        self.lock(self.index(sid))
    }

    pub(super) fn add(&self, sid: &SocketId, id: &ChannelId) {
        self.shard(sid)
            .entry(sid.clone())
            .or_default()
            .insert(id.clone());
    }

    pub(super) fn remove(&self, sid: &SocketId, id: &ChannelId) {
        let mut shard = self.shard(sid);
        if let Some(ids) = shard.get_mut(sid) {
            ids.remove(id);
            if ids.is_empty() {
                shard.remove(sid);
            }
        }
    }

    /// `remove` for many sockets (a closing channel's viewers), taking each shard once.
    pub(super) fn remove_all<'a>(&self, sids: impl Iterator<Item = &'a SocketId>, id: &ChannelId) {
        let mut by_shard: Vec<Vec<&SocketId>> = vec![Vec::new(); SHARDS];
        for sid in sids {
            by_shard[self.index(sid)].push(sid);
        }
        for (index, sids) in by_shard.iter().enumerate() {
            if sids.is_empty() {
                continue;
            }
            let mut shard = self.lock(index);
            for sid in sids {
                if let Some(ids) = shard.get_mut(*sid) {
                    ids.remove(id);
                    if ids.is_empty() {
                        shard.remove(*sid);
                    }
                }
            }
        }
    }

    /// Takes every channel of a socket (it disconnects).
    pub(super) fn take(&self, sid: &SocketId) -> HashSet<ChannelId> {
        self.shard(sid).remove(sid).unwrap_or_default()
    }

    pub(super) fn of(&self, sid: &SocketId) -> Vec<ChannelId> {
        self.shard(sid)
            .get(sid)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sockets with at least one place.
    pub(super) fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    /// Every entry, for the tests' checks.
    #[cfg(test)]
    pub(super) fn all(&self) -> HashMap<SocketId, HashSet<ChannelId>> {
        (0..SHARDS).flat_map(|i| self.lock(i).clone()).collect()
    }
}
