//! The in-memory backend ([`MemoryRegistry`]): each channel in a cell of its own, so that
//! channels never wait for each other.
//!
//! A cell is a [`State`] that holds one channel id: its channel or its waiting room, and the
//! index entries of its members, behind a lock of its own. Every rule runs on one cell exactly
//! as it would on a state holding every channel (the cluster runs the same rules on the part
//! of a channel it loads), so an operation waits only for operations on the same channel:
//! channels proceed in parallel on different cores, and a relay-tree re-parenting thousands of
//! viewers holds up no other channel's relays. One channel's operations still run one at a
//! time, in the order they take its lock, and each returns the events it caused before the
//! next starts.
//!
//! What spans channels is kept beside the cells, each in a small lock held only to update a
//! map, never while a rule runs (except for the two rules that check a limit against it):
//! - `places`: the channels each socket may be in (every cell that indexes it, and maybe some
//!   it has left), so that a disconnect or a relay visits only the caller's own cells;
//! - `counts`: channels in all, channels per broadcaster address and viewers waiting in all,
//!   which the capacity limits are checked against; each cell's change is added to them;
//! - `deadlines`: each channel's next deadline, for the expiry task.
//!
//! Lock order: at most one cell, then at most one of those; nothing locks a cell while holding
//! anything else.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Stats;
use super::broadcaster::{BroadcastRequest, BroadcastStarted, BroadcastStopped};
use super::chat::{ChatDelivery, ChatMessage};
use super::clock::{Moment, unix_now};
use super::errors::ChannelError;
use super::expiry::{Expired, due};
use super::ids::{ChannelId, SocketId, random_channel_id};
use super::listing::{Census, ChannelSummary, sort_listing};
use super::membership::{Departure, ViewerJoined, ViewerRequest};
use super::model::{ClosedChannel, RegistryLimits, State};
use super::moderation::{ChatPace, ChatSettings, ChatSettingsChange, Removal, Told, ViewerEntry};
use super::relay::Activity;
use super::tree_events::{TreeEvent, TreeOp};

mod places;
#[cfg(test)]
mod tests;

use places::Places;

/// The in-memory registry: one process holds every channel (the default, single-node mode).
/// Cheap to clone.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    limits: RegistryLimits,
    /// Each viewer's last message per channel, for slow mode.
    pace: ChatPace,
    /// Every channel id with a channel or a waiting room. Read-locked to find a cell; written
    /// only when a cell is made or retired.
    cells: RwLock<HashMap<ChannelId, Arc<Cell>>>,
    /// The channels each socket may be in: a superset of the cells that index it. An entry is
    /// added under the cell's lock by the operation that makes the socket a member, pruned
    /// when a relay finds the socket gone from that cell, and removed at disconnect.
    places: Places,
    counts: Mutex<Counts>,
    /// Each channel's next deadline (a relay-tree wait or a broadcaster's grace).
    deadlines: Mutex<HashMap<ChannelId, Moment>>,
}

/// The counts the limits are checked against, over all cells.
#[derive(Default)]
struct Counts {
    channels: usize,
    /// Channels per broadcaster address (entries at zero are removed).
    by_addr: HashMap<IpAddr, usize>,
    /// Viewers in all waiting rooms.
    waiting: usize,
}

/// One channel id's state behind its own lock.
#[derive(Default)]
struct Cell(Mutex<CellState>);

#[derive(Default)]
struct CellState {
    state: State,
    /// Emptied and taken out of `cells`: whoever found it before that looks again (and may
    /// make a new one), so no operation ever lands in a state nobody can reach.
    retired: bool,
}

/// What an operation on a channel id without a cell does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Absent {
    /// Runs on an empty state (reads, and rules that need the channel to exist).
    Empty,
    /// Makes the cell (the rules that may create a channel or a waiting room).
    Make,
}

/// How a rule may change the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// It never changes them.
    No,
    /// It may lower them (departures, expiry): it sees them as they stand, and its change is
    /// added to them after.
    After,
    /// It checks a limit against them and may raise them: they stay locked while it runs, so
    /// that two channels never both take the last place.
    Held,
}

/// The counts a cell was shown, to tell its change from them afterwards.
struct Shown {
    channels: usize,
    waiting: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// A poisoned lock means a panic mid-update elsewhere; the maps are still structurally valid,
/// so keep serving rather than take the whole server down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryRegistry {
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                pace: ChatPace::default(),
                cells: RwLock::default(),
                places: Places::default(),
                counts: Mutex::default(),
                deadlines: Mutex::default(),
            }),
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.shared.limits
    }

    fn cell(&self, id: &ChannelId) -> Option<Arc<Cell>> {
        read(&self.shared.cells).get(id).cloned()
    }

    fn cell_or_new(&self, id: &ChannelId) -> Arc<Cell> {
        if let Some(cell) = self.cell(id) {
            return cell;
        }
        write(&self.shared.cells)
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// Runs `rule` on the cell of `id`. Without one, `absent` says what happens: the rule runs
    /// on an empty state (a channel id nobody uses: it answers as for an unknown channel, and
    /// the state is dropped), or a cell is made for it.
    fn in_cell<R>(
        &self,
        id: &ChannelId,
        absent: Absent,
        counted: Counted,
        addr: Option<IpAddr>,
        rule: impl FnOnce(&mut State) -> R,
    ) -> R {
        loop {
            let cell = match (self.cell(id), absent) {
                (Some(cell), _) => cell,
                (None, Absent::Make) => self.cell_or_new(id),
                (None, Absent::Empty) => return rule(&mut State::default()),
            };
            let mut held = lock(&cell.0);
            if held.retired {
                continue;
            }
            return self.run(id, &cell, &mut held, counted, addr, rule);
        }
    }

    /// Runs a rule on a locked cell, then brings what spans channels in step with it: the
    /// counts (`addr`: an address the rule may count a new channel against), the channel's
    /// deadline, and the cell's own place in `cells` once it is empty.
    fn run<R>(
        &self,
        id: &ChannelId,
        cell: &Arc<Cell>,
        held: &mut CellState,
        counted: Counted,
        addr: Option<IpAddr>,
        rule: impl FnOnce(&mut State) -> R,
    ) -> R {
        let state = &mut held.state;
        let deadline = state.waits.get(id).copied();
        let out = match counted {
            Counted::No => rule(state),
            Counted::After => {
                let shown = show(state, addr, &lock(&self.shared.counts));
                let out = rule(state);
                settle(state, shown, &mut lock(&self.shared.counts));
                out
            }
            Counted::Held => {
                let mut counts = lock(&self.shared.counts);
                let shown = show(state, addr, &counts);
                let out = rule(state);
                settle(state, shown, &mut counts);
                out
            }
        };
        let now_due = state.waits.get(id).copied();
        if now_due != deadline {
            let mut deadlines = lock(&self.shared.deadlines);
            match now_due {
                Some(due) => deadlines.insert(id.clone(), due),
                None => deadlines.remove(id),
            };
        }
        if state.channels.is_empty() && state.lobbies.is_empty() {
            debug_assert!(state.sockets.is_empty(), "an empty cell indexes nobody");
            held.retired = true;
            let mut cells = write(&self.shared.cells);
            if cells.get(id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                cells.remove(id);
            }
        }
        out
    }

    /// Notes that `sid` may be in `id`'s cell; called under that cell's lock by the rule that
    /// made it a member, so a disconnect that reads `places` after it visits the cell.
    fn place(&self, sid: &SocketId, id: &ChannelId) {
        self.shared.places.add(sid, id);
    }

    /// Forgets that `sid` may be in `id`'s cell; called under that cell's lock (or with no such
    /// cell) by an operation of `sid`'s own, which none of its joins can overtake.
    fn unplace(&self, sid: &SocketId, id: &ChannelId) {
        self.shared.places.remove(sid, id);
    }

    /// Forgets the places of sockets a rule just took out of `id`'s cell (a closed channel's
    /// members, removed viewers, waiters of a private channel); called under that cell's lock,
    /// which their own `place` in it also takes, so a join of theirs is never forgotten.
    fn unplace_gone<'a>(
        &self,
        state: &State,
        id: &ChannelId,
        gone: impl IntoIterator<Item = &'a SocketId>,
    ) {
        let gone = gone
            .into_iter()
            .filter(|sid| !state.sockets.contains_key(*sid));
        self.shared.places.remove_all(gone, id);
    }

    fn places_of(&self, sid: &SocketId) -> Vec<ChannelId> {
        self.shared.places.of(sid)
    }

    /// Every cell, for the operations that look at all channels.
    fn every_id(&self) -> Vec<ChannelId> {
        read(&self.shared.cells).keys().cloned().collect()
    }

    /// [`MemoryRegistry::join_as_broadcaster`] in its simple form (no resume token, password or
    /// client key), for the examples and tests: creates a channel owned by `sid` (connected
    /// from `addr`), or lets its owner go live again with `force`.
    pub fn open_channel(
        &self,
        sid: &SocketId,
        addr: Option<IpAddr>,
        channel_id: Option<&str>,
        force: bool,
        relay: bool,
    ) -> Result<BroadcastStarted, ChannelError> {
        let request = BroadcastRequest {
            addr,
            force,
            relay,
            resumable: false,
            presented: None,
            fresh: "",
            password: None,
            key: None,
        };
        self.join_as_broadcaster(sid, channel_id, request)
    }

    /// `join_as_broadcaster`, with every option (resume, takeover, private channels).
    pub(crate) fn join_as_broadcaster(
        &self,
        sid: &SocketId,
        channel_id: Option<&str>,
        request: BroadcastRequest,
    ) -> Result<BroadcastStarted, ChannelError> {
        let id = match channel_id {
            Some(id) => ChannelId::from(id),
            None => self.fresh_channel_id(),
        };
        // The caller's own operations run one at a time, so what it broadcasts elsewhere
        // cannot grow meanwhile (it can only shrink, which errs on the strict side).
        let elsewhere = self.broadcasting_elsewhere(sid, &id);
        let addr = request.addr;
        self.in_cell(&id, Absent::Make, Counted::Held, addr, |state| {
            state.broadcasting_elsewhere = elsewhere;
            let started =
                state.join_as_broadcaster(self.limits(), sid, id.clone(), request, Moment::now());
            state.broadcasting_elsewhere = 0;
            if let Ok(started) = &started {
                self.place(sid, &id);
                self.unplace_gone(state, &id, &started.lobby);
                self.unplace_gone(state, &id, started.replaced.as_ref());
            }
            started
        })
    }

    /// How many channels other than `id` the socket broadcasts.
    fn broadcasting_elsewhere(&self, sid: &SocketId, id: &ChannelId) -> usize {
        self.places_of(sid)
            .iter()
            .filter(|other| *other != id)
            .filter(|other| {
                self.on(other, |state| {
                    state
                        .sockets
                        .get(sid)
                        .is_some_and(|m| !m.broadcasting.is_empty())
                })
            })
            .count()
    }

    fn fresh_channel_id(&self) -> ChannelId {
        loop {
            let id = random_channel_id();
            if self.cell(&id).is_none() {
                return id;
            }
        }
    }

    /// Puts a viewer in the waiting room of a channel id without a broadcaster (`relay`: it
    /// joins the relay tree when it becomes a viewer); `Ok(false)`: the channel exists (join
    /// it instead).
    pub fn wait_for(
        &self,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<bool, ChannelError> {
        let id = ChannelId::from(channel_id);
        self.in_cell(&id, Absent::Make, Counted::Held, None, |state| {
            let waits = state.wait_for(self.limits(), sid, &id, relay, Moment::now());
            if waits == Ok(true) {
                self.place(sid, &id);
            }
            waits
        })
    }

    /// How the channels stand (for `/metrics`).
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for id in self.every_id() {
            self.on(&id, |state| {
                state.count_into(&mut census);
            });
        }
        census
    }

    /// The stored password hash of a private channel.
    pub fn password_of(&self, channel_id: &str) -> Option<String> {
        self.on_channel(channel_id, |state| state.password_of(channel_id))
    }

    /// Lists channels, oldest first.
    pub fn list(&self) -> Vec<ChannelSummary> {
        let now = Moment::now();
        let mut list = Vec::new();
        for id in self.every_id() {
            self.on(&id, |state| {
                state.list_into(now, &mut list);
            });
        }
        sort_listing(&mut list);
        list
    }

    /// [`MemoryRegistry::join_as_viewer`] in its simple form (a public channel, no token or
    /// client key), for the examples and tests: adds `sid` as a viewer of `channel_id`
    /// (idempotent; an alias already set is kept). `relay`: it joins the relay tree (else it is
    /// a leaf fed by the broadcaster).
    pub fn watch(
        &self,
        sid: &SocketId,
        channel_id: &str,
        relay: bool,
    ) -> Result<ViewerJoined, ChannelError> {
        let request = ViewerRequest {
            relay,
            ..ViewerRequest::default()
        };
        self.join_as_viewer(sid, channel_id, request)
    }

    /// `join_as_viewer`, with every option (for a private channel, the password hash the
    /// caller's password was verified against).
    pub(crate) fn join_as_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        request: ViewerRequest,
    ) -> Result<ViewerJoined, ChannelError> {
        let id = ChannelId::from(channel_id);
        self.on(&id, |state| {
            let joined = state.join_as_viewer(sid, channel_id, request, Moment::now());
            if joined.is_ok() {
                self.place(sid, &id);
            }
            joined
        })
    }

    /// Runs a rule about the channel `channel_id` on its cell.
    fn on_channel<R>(&self, channel_id: &str, rule: impl FnOnce(&mut State) -> R) -> R {
        self.on(&ChannelId::from(channel_id), rule)
    }

    /// Runs a rule that changes no count and makes no cell.
    fn on<R>(&self, id: &ChannelId, rule: impl FnOnce(&mut State) -> R) -> R {
        self.in_cell(id, Absent::Empty, Counted::No, None, rule)
    }

    /// A viewer's report about its place in the relay tree (`relay_ready`, `upstream_failed`,
    /// `upstream_stalled`, `relay_capacity`). Public for `examples/channel_isolation.rs`.
    pub fn tree_op(
        &self,
        sid: &SocketId,
        channel_id: &str,
        op: TreeOp,
    ) -> Result<Vec<TreeEvent>, ChannelError> {
        self.on_channel(channel_id, |state| {
            state.tree_op(sid, channel_id, op, Moment::now())
        })
    }

    /// Viewers that waited for a feeder past the wait limit get the broadcaster, and channels
    /// whose broadcaster did not come back within its grace close. Visits only the channels
    /// with a deadline due.
    pub fn expire_waits(&self, now: Moment) -> Expired {
        let due = due(&lock(&self.shared.deadlines), now);
        let mut expired = Expired::default();
        for id in due {
            let found = self.in_cell(&id, Absent::Empty, Counted::After, None, |state| {
                let found = state.expire_waits(now);
                for closed in &found.abandoned {
                    self.unplace_gone(state, &id, &closed.viewers);
                }
                found
            });
            expired.tree.extend(found.tree);
            expired.abandoned.extend(found.abandoned);
        }
        expired
    }

    /// The earliest wait deadline of any channel, if anybody waits.
    pub fn next_wait_deadline(&self) -> Option<Moment> {
        lock(&self.shared.deadlines).values().min().copied()
    }

    /// Checks that `sender` and `target` share a channel as broadcaster and viewer (either way),
    /// and returns the target's id. Looks only at the sender's own channels, one at a time.
    pub fn authorize_relay(
        &self,
        sender: &SocketId,
        target: &str,
        activity: Activity,
    ) -> Result<SocketId, ChannelError> {
        let now = Moment::now();
        for id in self.places_of(sender) {
            let found = self.on(&id, |state| {
                if !state.sockets.contains_key(sender) {
                    // It left this channel (a relay is the sender's own operation, which none
                    // of its joins can overtake).
                    self.unplace(sender, &id);
                    return None;
                }
                state.authorize_relay(sender, target, activity, now).ok()
            });
            if let Some(target) = found {
                return Ok(target);
            }
        }
        Err(ChannelError::NotPeers)
    }

    /// How many viewers the channels `sid` broadcasts have.
    pub fn audience(&self, sid: &SocketId) -> usize {
        self.places_of(sid)
            .iter()
            .map(|id| {
                self.on(id, |state| {
                    let broadcasts = state
                        .sockets
                        .get(sid)
                        .is_some_and(|m| m.broadcasting.contains(id));
                    match state.channels.get(id) {
                        Some(channel) if broadcasts => channel.viewers.len(),
                        _ => 0,
                    }
                })
            })
            .sum()
    }

    /// Stores the alias of a viewer of `channel_id`.
    pub fn set_alias(
        &self,
        sid: &SocketId,
        channel_id: &str,
        alias: &str,
    ) -> Result<(), ChannelError> {
        self.on_channel(channel_id, |state| state.set_alias(sid, channel_id, alias))
    }

    /// `send_message`: resolves the sender's display name and everyone in the channel, the
    /// sender included, and keeps the message in the channel's history, under the channel's
    /// lock (so the history's order is the order messages were accepted in).
    pub fn chat(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.recorded(channel_id, |state| {
            state.chat(sid, channel_id, message, unix_now(), &self.shared.pace)
        })
    }

    /// `broadcaster_message`: checks that `sid` broadcasts `channel_id`; returns everyone in
    /// the channel, and keeps the message in its history.
    pub fn broadcaster_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message: &str,
    ) -> Result<ChatDelivery, ChannelError> {
        self.recorded(channel_id, |state| {
            state.broadcaster_message(sid, channel_id, message, unix_now())
        })
    }

    /// Runs a chat rule and keeps the message it accepted in the channel's history, under one
    /// lock (so the history's order is the order messages were accepted in).
    fn recorded(
        &self,
        channel_id: &str,
        rule: impl FnOnce(&State) -> Result<ChatDelivery, ChannelError>,
    ) -> Result<ChatDelivery, ChannelError> {
        let limit = self.limits().chat_history;
        self.on_channel(channel_id, |state| {
            let delivery = rule(state)?;
            state.remember_message(channel_id, delivery.message.clone(), limit);
            Ok(delivery)
        })
    }

    /// The channel's last chat messages, oldest first (none for an unknown channel).
    pub fn chat_history(&self, channel_id: &str) -> Vec<ChatMessage> {
        self.on_channel(channel_id, |state| state.chat_history(channel_id))
    }

    /// The generation a new invitation to the channel carries (its broadcaster only).
    pub fn create_invite(&self, sid: &SocketId, channel_id: &str) -> Result<u64, ChannelError> {
        self.on_channel(channel_id, |state| state.create_invite(sid, channel_id))
    }

    /// Revokes every invitation to the channel issued so far (its broadcaster only).
    pub fn rotate_invites(&self, sid: &SocketId, channel_id: &str) -> Result<u64, ChannelError> {
        self.on_channel(channel_id, |state| {
            state.rotate_invites(sid, channel_id, Moment::now())
        })
    }

    /// `list_viewers` (its broadcaster only).
    pub fn list_viewers(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<Vec<ViewerEntry>, ChannelError> {
        self.on_channel(channel_id, |state| state.list_viewers(sid, channel_id))
    }

    /// `remove_viewer`, with or without a ban (its broadcaster only).
    pub fn remove_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        ban: bool,
    ) -> Result<Removal, ChannelError> {
        let id = ChannelId::from(channel_id);
        self.on(&id, |state| {
            let removal = state.remove_viewer(sid, channel_id, viewer, ban, Moment::now());
            if let Ok(removal) = &removal {
                self.unplace_gone(state, &id, removal.removed.iter().map(|r| &r.viewer));
            }
            removal
        })
    }

    pub fn unban_all(&self, sid: &SocketId, channel_id: &str) -> Result<(), ChannelError> {
        self.on_channel(channel_id, |state| state.unban_all(sid, channel_id))
    }

    pub fn mute_viewer(
        &self,
        sid: &SocketId,
        channel_id: &str,
        viewer: &SocketId,
        muted: bool,
    ) -> Result<(), ChannelError> {
        self.on_channel(channel_id, |state| {
            state.mute_viewer(sid, channel_id, viewer, muted)
        })
    }

    /// `remove_message`: forgets it from the history; returns who is told.
    pub fn remove_message(
        &self,
        sid: &SocketId,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Told, ChannelError> {
        self.on_channel(channel_id, |state| {
            state.remove_message(sid, channel_id, message_id)
        })
    }

    pub fn set_chat_settings(
        &self,
        sid: &SocketId,
        channel_id: &str,
        change: ChatSettingsChange,
    ) -> Result<(ChatSettings, Told), ChannelError> {
        self.on_channel(channel_id, |state| {
            state.set_chat_settings(sid, channel_id, change)
        })
    }

    /// Marks the broadcast stopped: returns the viewers to tell. The channel stays.
    pub fn stop_broadcast(
        &self,
        sid: &SocketId,
        channel_id: &str,
    ) -> Result<BroadcastStopped, ChannelError> {
        self.on_channel(channel_id, |state| {
            state.stop_broadcast(sid, channel_id, Moment::now())
        })
    }

    /// The channel ids a socket is in (a channel or its waiting room): what a disconnect or a
    /// relay of it concerns.
    pub fn channels_of(&self, sid: &SocketId) -> Vec<ChannelId> {
        self.shared.places.of(sid)
    }

    /// Removes a socket everywhere: its own channels close, and it leaves those it watched.
    /// Visits only the socket's own channels, one at a time.
    pub fn disconnect(&self, sid: &SocketId) -> Departure {
        let grace = self.shared.limits.resume_grace;
        let now = Moment::now();
        let ids = self.shared.places.take(sid);
        let mut departure = Departure::default();
        for id in ids {
            let part = self.in_cell(&id, Absent::Empty, Counted::After, None, |state| {
                let part = state.disconnect(sid, grace, now);
                for closed in &part.closed {
                    self.unplace_gone(state, &id, &closed.viewers);
                }
                part
            });
            departure.closed.extend(part.closed);
            departure.held.extend(part.held);
            departure.left.extend(part.left);
        }
        departure
    }

    /// Reaps channels idle for longer than the TTL, except live ones (a broadcaster with at least
    /// one viewer). Returns them so their broadcasters can be told.
    pub fn sweep(&self, now: Moment) -> Vec<ClosedChannel> {
        let ttl = self.shared.limits.idle_ttl;
        let mut closed = Vec::new();
        for id in self.every_id() {
            closed.extend(
                self.in_cell(&id, Absent::Empty, Counted::After, None, |state| {
                    let swept = state.sweep(ttl, now);
                    for gone in &swept {
                        self.unplace_gone(state, &id, [&gone.broadcaster]);
                    }
                    swept
                }),
            );
        }
        closed
    }

    pub fn stats(&self) -> Stats {
        let counts = lock(&self.shared.counts);
        Stats {
            channels: counts.channels,
            // Exact: every rule that takes a socket out of a cell forgets its place there.
            indexed_sockets: self.shared.places.len(),
            indexed_addresses: counts.by_addr.len(),
        }
    }

    /// Every cell merged into one state, to check the indexes against the channels.
    #[cfg(test)]
    pub(super) fn state(&self) -> State {
        let mut merged = State::default();
        for id in self.every_id() {
            self.on(&id, |state| {
                for (id, channel) in &state.channels {
                    merged.channels.insert(id.clone(), channel.clone());
                }
                merged.waits.extend(state.waits.clone());
                merged.lobbies.extend(state.lobbies.clone());
                for (sid, membership) in &state.sockets {
                    let entry = merged.sockets.entry(sid.clone()).or_default();
                    entry
                        .broadcasting
                        .extend(membership.broadcasting.iter().cloned());
                    entry.watching.extend(membership.watching.iter().cloned());
                    entry.waiting.extend(membership.waiting.iter().cloned());
                }
            });
        }
        let counts = lock(&self.shared.counts);
        merged.by_addr = counts.by_addr.clone();
        merged.waiting_total = counts.waiting;
        merged
    }

    /// Runs a rule on one channel's cell as the registry would, at a time of the test's choice.
    #[cfg(test)]
    pub(super) fn on_cell<R>(&self, channel_id: &str, rule: impl FnOnce(&mut State) -> R) -> R {
        self.in_cell(
            &ChannelId::from(channel_id),
            Absent::Make,
            Counted::After,
            None,
            rule,
        )
    }
}

/// Shows a cell the counts as they stand: the channels and waiting viewers in all, and the
/// channels of its own channel's address and of `addr` (what its rule may count or release).
fn show(state: &mut State, addr: Option<IpAddr>, counts: &Counts) -> Shown {
    state.total_channels = Some(counts.channels);
    state.waiting_total = counts.waiting;
    let owners = state.channels.values().filter_map(|c| c.owner_addr);
    for addr in owners.chain(addr) {
        if let Some(&n) = counts.by_addr.get(&addr) {
            state.by_addr.insert(addr, n);
        }
    }
    Shown {
        channels: counts.channels,
        waiting: counts.waiting,
        by_addr: state.by_addr.clone(),
    }
}

/// Adds what a rule changed in a cell's counts to the counts, and clears them from the cell
/// (they are only ever a view of the counts).
fn settle(state: &mut State, shown: Shown, counts: &mut Counts) {
    let channels = state.total_channels.take().unwrap_or(shown.channels);
    counts.channels = (counts.channels + channels).saturating_sub(shown.channels);
    counts.waiting = (counts.waiting + state.waiting_total).saturating_sub(shown.waiting);
    state.waiting_total = 0;
    let after = std::mem::take(&mut state.by_addr);
    let addrs: HashSet<IpAddr> = after.keys().chain(shown.by_addr.keys()).copied().collect();
    for addr in addrs {
        let now = after.get(&addr).copied().unwrap_or(0);
        let before = shown.by_addr.get(&addr).copied().unwrap_or(0);
        let total = counts.by_addr.get(&addr).copied().unwrap_or(0);
        match (total + now).saturating_sub(before) {
            0 => counts.by_addr.remove(&addr),
            n => counts.by_addr.insert(addr, n),
        };
    }
}
