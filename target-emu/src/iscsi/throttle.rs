//! Failed logins: the delay that slows CHAP guessing, and the log-flood
//! limit on refusals (docs/semantics.md "The wire").
//!
//! Each (initiator name, source address) pair that fails authentication
//! waits before its refusal is sent: `first_delay_ms` after the first
//! failure, twice as long after each further one, up to `max_delay_ms`. The
//! wait is the refused connection's own (an async sleep before the Login
//! Response), so other logins, from other names or other addresses, go on
//! at full speed. A successful login, or `forget_after_secs` without a
//! failure, starts the pair again from the first delay. At most `tracked`
//! pairs are remembered; the one idle longest makes room for a new one.
//!
//! A pure state machine: the caller passes the time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use busrig_lograte::{RateLimitedLog, Verdict};

use crate::config::LoginFailureLimits;

/// At most one "login refused" line per pair in this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Pairs whose refusals are logged separately; beyond that they share one
/// line per interval.
const REFUSAL_LOG_PAIRS: usize = 256;

/// Where a login comes from: the address without the port (a guesser opens
/// a new connection, and a new port, for every guess). In-process streams
/// have no address and count as one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    Unaddressed,
}

impl Source {
    /// The source of a connection whose peer is written `peer`
    /// (`address:port` for TCP, a label for in-process streams).
    pub fn of_peer(peer: &str) -> Source {
        match peer.parse::<SocketAddr>() {
            Ok(a) => Source::Ip(a.ip()),
            Err(_) => Source::Unaddressed,
        }
    }
}

/// Whose failures are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginKey {
    /// The InitiatorName of the login, lower-cased; empty when it never
    /// got that far.
    pub initiator: String,
    pub source: Source,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed-login delays and the refusal log limit of one portal.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginFailureLimits,
    failures: HashMap<LoginKey, Failures>,
    log: RateLimitedLog<LoginKey>,
}

impl LoginThrottle {
    pub fn new(limits: LoginFailureLimits) -> LoginThrottle {
        LoginThrottle {
            limits,
            failures: HashMap::new(),
            log: RateLimitedLog::new(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_PAIRS),
        }
    }

    fn forget_after(&self) -> Duration {
        Duration::from_secs(self.limits.forget_after_secs)
    }

    /// The delay after the `count`th failure in a row.
    fn delay_after(&self, count: u32) -> Duration {
        let first = self.limits.first_delay_ms;
        let doubled = first.saturating_mul(1u64 << (count.saturating_sub(1)).min(32));
        Duration::from_millis(doubled.min(self.limits.max_delay_ms))
    }

    /// `key` failed authentication at `now`: how long its refusal waits.
    pub fn failed(&mut self, key: &LoginKey, now: Instant) -> Duration {
        let forget = self.forget_after();
        if let Some(f) = self.failures.get_mut(key) {
            if now.saturating_duration_since(f.last) >= forget {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            let count = f.count;
            return self.delay_after(count);
        }
        if self.failures.len() >= self.limits.tracked {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < forget);
        }
        if self.failures.len() >= self.limits.tracked {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.failures.remove(&k);
            }
        }
        self.failures.insert(
            key.clone(),
            Failures {
                count: 1,
                last: now,
            },
        );
        self.delay_after(1)
    }

    /// `key` logged in: its failures are forgotten.
    pub fn succeeded(&mut self, key: &LoginKey) {
        self.failures.remove(key);
    }

    /// Whether to log the refusal of `key` at `now` (see
    /// [`busrig_lograte`]).
    pub fn log_refusal(&mut self, key: &LoginKey, now: Instant) -> Verdict {
        self.log.check(key, now)
    }

    /// Pairs with failures remembered now.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn key(name: &str, ip: &str) -> LoginKey {
        LoginKey {
            initiator: name.into(),
            source: Source::Ip(ip.parse().unwrap()),
        }
    }

    fn limits(tracked: usize) -> LoginFailureLimits {
        LoginFailureLimits {
            first_delay_ms: 100,
            max_delay_ms: 1000,
            forget_after_secs: 60,
            tracked,
        }
    }

    #[test]
    fn delay_doubles_per_failure_up_to_the_cap() {
        let mut t = LoginThrottle::new(limits(16));
        let k = key("iqn.x", "10.0.0.1");
        let now = Instant::now();
        let delays: Vec<_> = (0..6).map(|_| t.failed(&k, now)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(|d| d * MS).to_vec()
        );
        // Many failures never overflow.
        for _ in 0..100 {
            assert_eq!(t.failed(&k, now), 1000 * MS);
        }
    }

    #[test]
    fn pairs_are_independent_and_success_or_time_resets() {
        let mut t = LoginThrottle::new(limits(16));
        let now = Instant::now();
        let a = key("iqn.a", "10.0.0.1");
        t.failed(&a, now);
        t.failed(&a, now);
        // Same name from another address, another name from the same one.
        assert_eq!(t.failed(&key("iqn.a", "10.0.0.2"), now), 100 * MS);
        assert_eq!(t.failed(&key("iqn.b", "10.0.0.1"), now), 100 * MS);
        assert_eq!(t.failed(&a, now), 400 * MS);
        t.succeeded(&a);
        assert_eq!(t.failed(&a, now), 100 * MS);
        assert_eq!(t.failed(&a, now), 200 * MS);
        assert_eq!(t.failed(&a, now + Duration::from_secs(60)), 100 * MS);
    }

    #[test]
    fn memory_is_bounded_by_tracked() {
        let mut t = LoginThrottle::new(limits(8));
        let now = Instant::now();
        for i in 0..1000u32 {
            let k = key(&format!("iqn.spray-{i}"), "10.0.0.1");
            t.failed(&k, now + i * MS);
            assert!(t.tracked() <= 8);
        }
        // The pair failing right now is kept; the oldest made room.
        let last = key("iqn.spray-999", "10.0.0.1");
        assert_eq!(t.failed(&last, now + 1000 * MS), 200 * MS);
    }

    #[test]
    fn delay_zero_turns_it_off() {
        let mut t = LoginThrottle::new(LoginFailureLimits {
            first_delay_ms: 0,
            max_delay_ms: 0,
            ..limits(4)
        });
        let k = key("iqn.x", "10.0.0.1");
        assert_eq!(t.failed(&k, Instant::now()), Duration::ZERO);
        assert_eq!(t.failed(&k, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn source_ignores_the_port() {
        assert_eq!(
            Source::of_peer("192.0.2.7:50123"),
            Source::of_peer("192.0.2.7:50999")
        );
        assert_eq!(
            Source::of_peer("[::1]:3260"),
            Source::Ip("::1".parse().unwrap())
        );
        assert_eq!(Source::of_peer("duplex-3"), Source::Unaddressed);
    }
}
