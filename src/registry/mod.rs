//! The channel registry: which channels exist, who broadcasts and who watches each, and the
//! rules that change them.
//!
//! Pure domain logic: no socket types, no I/O. Handlers call it and turn its results into emits,
//! so every rule of the protocol that concerns state lives here and is unit-tested here. The
//! data is [`model::State`]; each rule is a method on it, in the file of its concept
//! ([`broadcaster`], [`membership`], [`waiting`], [`relay`], [`chat`], [`tree_events`],
//! [`expiry`], [`listing`]).
//!
//! The rules never know where the state lives: the in-memory backend ([`memory`]) holds it in
//! this process, the cluster (`crate::cluster`) in Redis, and `crate::channels` is the one
//! interface over both that the transport uses.

pub mod broadcaster;
pub mod chat;
pub mod clock;
pub mod errors;
pub mod expiry;
pub mod ids;
pub mod invites;
pub mod listing;
pub mod membership;
pub mod memory;
pub mod model;
pub mod moderation;
pub mod peers;
pub mod relay;
pub mod secrets;
pub mod tree;
pub mod tree_events;
pub mod waiting;

#[cfg(test)]
mod tests;

pub use memory::MemoryRegistry;
pub use model::RegistryLimits;

/// Counts for the health endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Channels in the whole deployment.
    pub channels: usize,
    /// Sockets in this node's index (in memory: every socket in a channel).
    pub indexed_sockets: usize,
    /// Client addresses that own at least one channel (in memory).
    pub indexed_addresses: usize,
}
