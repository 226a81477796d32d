//! Each channel's turn: one event's handling at a time changes a channel *and emits what that
//! change says*, so every socket hears a channel's events in the order its rules produced them.
//!
//! The in-memory registry runs each channel's rules one at a time under the channel's lock
//! (`registry::memory`), but the events a rule produces are emitted by the handler after that
//! lock is let go: two sockets' events on one channel, handled on two cores, could then emit in
//! the other order (a broadcaster's `viewer_count` going 2 then 1 and staying wrong, two chat
//! messages reaching two viewers in different orders, an offer reaching a viewer after its
//! departure was announced). A turn is taken before the rule runs and held by the event's job
//! until its emits are done ([`Held`] is dropped with the job's context), so the next operation
//! on the channel starts only once the previous one's events are out.
//!
//! Turns are async (a job waiting for one yields; its socket's later events queue behind it in
//! the socket's mailbox) and first come, first served. A job takes the turns of one operation at
//! once, in the channels' order, so two jobs never wait for each other: a job that moves on to
//! an operation on other channels lets go of the turns it holds first (no handler emits an
//! operation's events after starting the next one).
//!
//! Relays (offers, answers, candidates) take no turn: one sender's relays already leave in its
//! order (its mailbox), and they are most of a crowd's events; queuing each on its channel's
//! turn cost a quarter more server CPU in `bench storm 2000`.
//!
//! Only the in-memory backend takes turns. In cluster mode a node's turn would order only that
//! node's emits, and would stop this node's joins from sharing a batch; ordering there is the
//! channel owner's (docs/CHANNEL-OWNERSHIP.md, step 4).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use crate::registry::ids::ChannelId;

/// Enough shards that two cores rarely meet on one: every ordered event takes and returns a
/// turn.
const SHARDS: usize = 64;

type Turn = Arc<tokio::sync::Mutex<()>>;
type Shard = HashMap<ChannelId, Turn>;

/// The channels' turns. Cheap to clone; every clone shares them. A channel has an entry only
/// while some job holds or waits for its turn.
#[derive(Clone)]
pub struct Turns(Arc<Shards>);

struct Shards {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Turns {
    fn default() -> Self {
        Self(Arc::new(Shards {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }))
    }
}

impl Shards {
    fn shard(&self, id: &ChannelId) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(id) as usize) % SHARDS;
        // A poisoned shard is still a valid map: nothing panics between its reads and writes.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Turns {
    /// Waits for the turns of `ids` (an operation's channels) and keeps them in `held` until it
    /// is dropped. Turns `held` has already are kept without waiting; when it holds others, it
    /// lets go of them first (see the module's comment).
    pub async fn take(&self, held: &Held, ids: impl IntoIterator<Item = ChannelId>) {
        let mut ids: Vec<ChannelId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        {
            let mut kept = held.lock();
            if !ids.iter().all(|id| kept.iter().any(|k| &k.id == id)) {
                kept.clear();
            }
            ids.retain(|id| !kept.iter().any(|k| &k.id == id));
        }
        for id in ids {
            let turn = self.0.shard(&id).entry(id.clone()).or_default().clone();
            let guard = turn.clone().lock_owned().await;
            held.lock().push(Kept {
                shards: self.0.clone(),
                id,
                turn: Some(turn),
                guard: Some(guard),
            });
        }
    }
}

/// The turns one event's job holds, let go when it is dropped (after the job's emits).
#[derive(Default)]
pub struct Held(Mutex<Vec<Kept>>);

impl Held {
    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many turns are held (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One held turn.
struct Kept {
    shards: Arc<Shards>,
    id: ChannelId,
    turn: Option<Turn>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        // The turn goes first (to the next job waiting, if any), then the entry, unless a job
        // still holds or waits for it. Every holder lets go of its clone under the shard's
        // lock and reads the count there, so the last one out sees the map's alone. (A wait
        // abandoned halfway, its job dropped, lets go of its clone outside the lock and may
        // leave the entry until the channel id is used again.)
        self.guard.take();
        let mut shard = self.shards.shard(&self.id);
        self.turn.take();
        if shard
            .get(&self.id)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            shard.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn entries(turns: &Turns) -> usize {
        turns.0.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    fn ids(names: &[&str]) -> Vec<ChannelId> {
        names.iter().map(|n| ChannelId::from(*n)).collect()
    }

    #[tokio::test]
    async fn a_turn_waits_for_the_holder_and_is_forgotten_after() {
        let turns = Turns::default();
        let first = Held::default();
        turns.take(&first, ids(&["x"])).await;
        let second = Held::default();
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), turns.take(&second, ids(&["x"])));
        assert!(waiting.await.is_err(), "the second job waits for the first");
        // Another channel does not wait.
        let other = Held::default();
        turns.take(&other, ids(&["y"])).await;
        drop(first);
        turns.take(&second, ids(&["x"])).await;
        assert_eq!(second.len(), 1);
        drop(second);
        drop(other);
        assert_eq!(
            entries(&turns),
            0,
            "no entry is left once nobody holds a turn"
        );
    }

    #[tokio::test]
    async fn a_job_keeps_its_turns_and_lets_go_before_taking_others() {
        let turns = Turns::default();
        let held = Held::default();
        turns.take(&held, ids(&["b", "a", "b"])).await;
        assert_eq!(held.len(), 2);
        // Again the same: kept, no wait on itself.
        turns.take(&held, ids(&["a"])).await;
        assert_eq!(held.len(), 2);
        // Others: what it held is let go first, so another job can have it.
        turns.take(&held, ids(&["c"])).await;
        assert_eq!(held.len(), 1);
        let other = Held::default();
        tokio::time::timeout(
            Duration::from_millis(50),
            turns.take(&other, ids(&["a", "b"])),
        )
        .await
        .expect("a and b were let go");
        drop(held);
        drop(other);
        assert_eq!(entries(&turns), 0);
    }

    /// Jobs on one channel from many tasks run one at a time, in the order they asked, and jobs
    /// over overlapping sets of channels never wait for each other forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_on_shared_channels_run_one_at_a_time_and_finish() {
        let turns = Turns::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let names = ["a", "b", "c", "d"];
        let mut tasks = Vec::new();
        for task in 0..16 {
            let turns = turns.clone();
            let inside = inside.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..200 {
                    let pick = (task * 7 + round * 3) % names.len();
                    let set = if round % 3 == 0 {
                        ids(&[names[pick], names[(pick + 1) % names.len()]])
                    } else {
                        ids(&[names[pick]])
                    };
                    let held = Held::default();
                    turns.take(&held, set.clone()).await;
                    if set.iter().any(|id| id.as_str() == "a") {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "one job in a");
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    drop(held);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let all = async {
            for task in tasks {
                task.await.expect("no job panicked");
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("no deadlock");
        assert_eq!(done.load(Ordering::SeqCst), 16 * 200);
        assert_eq!(entries(&turns), 0);
    }
}
