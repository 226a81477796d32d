//! Per-socket rate limits: generous enough that a real page never meets them, tight enough
//! that one client cannot flood a peer, the chat, or the server's answers.
//!
//! Relays are limited per (sender, target) pair rather than per sender: a broadcaster answers
//! every viewer, so its own rate grows with its audience, while what one peer may push at
//! another does not. Pairs are only counted once the relay is authorized, so made-up targets
//! never create entries. Every refusal is also a *strike*; a client that keeps going after
//! being told is disconnected.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Config;
use crate::registry::ids::SocketId;

/// What one class of event may do: a rate per second and a burst. A rate of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(per_second);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// The configured rates of each class.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub sdp: Rate,
    pub ice: Rate,
    pub chat: Rate,
    pub join: Rate,
    /// Refusals a client may collect (per second, burst) before it is disconnected.
    pub strikes: Rate,
}

impl Rates {
    /// The rates the flags set; each burst a fixed multiple of its rate.
    pub fn from_config(config: &Config) -> Self {
        let rate = |per_second: u32, burst: u32| Rate { per_second, burst };
        Self {
            sdp: rate(config.rate_sdp, config.rate_sdp.saturating_mul(2)),
            ice: rate(config.rate_ice, config.rate_ice.saturating_mul(5)),
            chat: rate(config.rate_chat, config.rate_chat.saturating_mul(5)),
            join: rate(config.rate_join, config.rate_join.saturating_mul(4)),
            strikes: rate(config.rate_strikes, config.rate_strikes.saturating_mul(10)),
        }
    }
}

/// Which limit an event counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Chat,
    /// `join_as_broadcaster`, `join_as_viewer` with a channel, `set_alias`, `stop_broadcast`.
    Join,
    /// `join_as_viewer` without a channel: the channel list, the largest answer there is.
    List,
    /// A password check for a private channel (slow on purpose, and a guessing target).
    Password,
}

/// Whether an event may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this one and tell the client.
    Refuse,
    /// Refuse, and the client has ignored enough refusals to be disconnected.
    Disconnect,
}

type Limiter<K> = Option<DefaultKeyedRateLimiter<K>>;

/// All limiters of the server; cheap to share behind an `Arc`.
pub struct RateLimits {
    sdp: Limiter<(SocketId, SocketId)>,
    ice: Limiter<(SocketId, SocketId)>,
    chat: Limiter<SocketId>,
    join: Limiter<SocketId>,
    list: Limiter<SocketId>,
    password: Limiter<SocketId>,
    strikes: Limiter<SocketId>,
}

/// Password attempts one socket may make: a person mistyping gets three tries at once, a
/// guesser one a second (and each costs it a strike when wrong).
const PASSWORD_RATE: Rate = Rate {
    per_second: 1,
    burst: 3,
};

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Limiter<K> {
    rate.quota().map(DefaultKeyedRateLimiter::keyed)
}

fn allows<K: std::hash::Hash + Eq + Clone>(limiter: &Limiter<K>, key: &K) -> bool {
    limiter.as_ref().is_none_or(|l| l.check_key(key).is_ok())
}

impl RateLimits {
    pub fn new(rates: Rates) -> Self {
        Self {
            sdp: limiter(rates.sdp),
            ice: limiter(rates.ice),
            chat: limiter(rates.chat),
            join: limiter(rates.join),
            list: limiter(rates.join),
            password: limiter(PASSWORD_RATE),
            strikes: limiter(rates.strikes),
        }
    }

    /// Counts one event of `class` from `sender`.
    pub fn check(&self, sender: &SocketId, class: Class) -> Verdict {
        let limiter = match class {
            Class::Chat => &self.chat,
            Class::Join => &self.join,
            Class::List => &self.list,
            Class::Password => &self.password,
        };
        if allows(limiter, sender) {
            Verdict::Allow
        } else {
            self.strike(sender)
        }
    }

    /// Counts one authorized relay from `sender` to `target`; `sdp` for offers and answers.
    pub fn check_relay(&self, sender: &SocketId, target: &SocketId, sdp: bool) -> Verdict {
        let limiter = if sdp { &self.sdp } else { &self.ice };
        // The tuple clones two `Arc`s; only done for relays that are already authorized.
        if allows(limiter, &(sender.clone(), target.clone())) {
            Verdict::Allow
        } else {
            self.strike(sender)
        }
    }

    /// Records a refusal that was not a rate (a relay to a stranger, say) as a strike.
    pub fn strike(&self, sender: &SocketId) -> Verdict {
        if allows(&self.strikes, sender) {
            Verdict::Refuse
        } else {
            Verdict::Disconnect
        }
    }

    /// Forgets clients whose buckets are full again; called periodically so departed sockets
    /// leave nothing behind.
    pub fn forget_idle(&self) {
        for limiter in [
            &self.chat,
            &self.join,
            &self.list,
            &self.password,
            &self.strikes,
        ]
        .into_iter()
        .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.sdp, &self.ice].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Entries held across all limiters (for `/healthz` and leak tests).
    pub fn tracked(&self) -> usize {
        let singles: usize = [
            &self.chat,
            &self.join,
            &self.list,
            &self.password,
            &self.strikes,
        ]
        .into_iter()
        .flatten()
        .map(|l| l.len())
        .sum();
        let pairs: usize = [&self.sdp, &self.ice]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum();
        singles + pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> Rates {
        let r = |per_second, burst| Rate { per_second, burst };
        Rates {
            sdp: r(5, 10),
            ice: r(20, 50),
            chat: r(2, 5),
            join: r(5, 10),
            strikes: r(1, 3),
        }
    }

    #[test]
    fn burst_then_refusals_then_disconnect() {
        let limits = RateLimits::new(rates());
        let talker = SocketId::from("talker");
        let verdicts: Vec<Verdict> = (0..9).map(|_| limits.check(&talker, Class::Chat)).collect();
        // Five in the burst, then three refusals (the strike burst), then out.
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..8], &[Verdict::Refuse; 3]);
        assert_eq!(verdicts[8], Verdict::Disconnect);
        // Somebody else is not affected.
        assert_eq!(
            limits.check(&SocketId::from("other"), Class::Chat),
            Verdict::Allow
        );
    }

    #[test]
    fn relays_count_per_pair() {
        let limits = RateLimits::new(rates());
        let (b, v1, v2) = (
            SocketId::from("b"),
            SocketId::from("v1"),
            SocketId::from("v2"),
        );
        for _ in 0..10 {
            assert_eq!(limits.check_relay(&b, &v1, true), Verdict::Allow);
        }
        assert_eq!(limits.check_relay(&b, &v1, true), Verdict::Refuse);
        // The broadcaster may still answer another viewer, and send it candidates.
        assert_eq!(limits.check_relay(&b, &v2, true), Verdict::Allow);
        assert_eq!(limits.check_relay(&b, &v1, false), Verdict::Allow);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut r = rates();
        r.chat = Rate {
            per_second: 0,
            burst: 0,
        };
        let limits = RateLimits::new(r);
        let s = SocketId::from("s");
        assert!((0..1000).all(|_| limits.check(&s, Class::Chat) == Verdict::Allow));
        assert_eq!(limits.tracked(), 0);
    }
}
