//! Log-flood limits: at most one line per key per interval, and a count of
//! the lines held back, reported on the next line that key writes.
//!
//! A peer that sends junk as fast as it can (datagrams that fail
//! authentication, logins with a wrong secret) must not turn each refusal
//! into a log line: at ten thousand a second that is megabytes of the same
//! line, and the one line an engineer needs scrolls away. The caller asks
//! [`RateLimitedLog::check`] before each line and writes it only on
//! [`Verdict::Log`], adding the suppressed count when it is not zero:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use busrig_lograte::{RateLimitedLog, Verdict};
//!
//! let mut limit = RateLimitedLog::new(Duration::from_secs(10), 64);
//! let t0 = Instant::now();
//! assert_eq!(limit.check(&"10.0.0.9", t0), Verdict::Log { suppressed: 0 });
//! for _ in 0..500 {
//!     assert_eq!(limit.check(&"10.0.0.9", t0), Verdict::Quiet);
//! }
//! // The next line, once the interval is over, says what was held back.
//! let later = t0 + Duration::from_secs(10);
//! assert_eq!(limit.check(&"10.0.0.9", later), Verdict::Log { suppressed: 500 });
//! ```
//!
//! The table is bounded: at most `capacity` keys are tracked. When it is
//! full, keys whose interval is over and that hold nothing back are
//! forgotten; if none is, a new key shares one overflow entry with every
//! other untracked key, so a flood from ever-changing senders still writes
//! at most one line per interval more. Time is an input, read by the
//! caller, so the helper is a pure state machine (docs/architecture.md
//! "Pure cores and drivers").
//!
//! [`text`] holds the other half of readable logs and output: times and
//! error chains written for a person.

pub mod text;

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the line; `suppressed` lines of this key (or of the overflow
    /// group) were held back since the previous one.
    Log { suppressed: u64 },
    /// Hold it back; it is counted.
    Quiet,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the last line of this key was written.
    opened: Instant,
    suppressed: u64,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            opened: now,
            suppressed: 0,
        }
    }

    fn over(&self, now: Instant, interval: Duration) -> bool {
        now.saturating_duration_since(self.opened) >= interval
    }

    fn tick(&mut self, now: Instant, interval: Duration) -> Verdict {
        if self.over(now, interval) {
            let suppressed = std::mem::take(&mut self.suppressed);
            self.opened = now;
            Verdict::Log { suppressed }
        } else {
            self.suppressed += 1;
            Verdict::Quiet
        }
    }
}

/// At most one line per key per interval; see the module documentation.
#[derive(Debug)]
pub struct RateLimitedLog<K> {
    interval: Duration,
    capacity: usize,
    windows: HashMap<K, Window>,
    /// Shared by keys that found the table full.
    overflow: Option<Window>,
}

impl<K: Hash + Eq + Clone> RateLimitedLog<K> {
    /// One line per key per `interval`, for at most `capacity` keys (at
    /// least one) plus the overflow group.
    pub fn new(interval: Duration, capacity: usize) -> RateLimitedLog<K> {
        RateLimitedLog {
            interval,
            capacity: capacity.max(1),
            windows: HashMap::new(),
            overflow: None,
        }
    }

    /// The event `key` happened at `now`: write its line or hold it back.
    pub fn check(&mut self, key: &K, now: Instant) -> Verdict {
        let interval = self.interval;
        if let Some(w) = self.windows.get_mut(key) {
            return w.tick(now, interval);
        }
        if self.windows.len() >= self.capacity {
            self.windows
                .retain(|_, w| w.suppressed > 0 || !w.over(now, interval));
        }
        if self.windows.len() < self.capacity {
            self.windows.insert(key.clone(), Window::new(now));
            return Verdict::Log { suppressed: 0 };
        }
        match &mut self.overflow {
            Some(w) => w.tick(now, interval),
            None => {
                self.overflow = Some(Window::new(now));
                Verdict::Log { suppressed: 0 }
            }
        }
    }

    /// Keys tracked now (not counting the overflow group).
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_key_per_interval_with_the_count() {
        let mut l = RateLimitedLog::new(10 * SEC, 8);
        let t0 = Instant::now();
        assert_eq!(l.check(&1, t0), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(&1, t0 + 9 * SEC), Verdict::Quiet);
        assert_eq!(l.check(&1, t0 + 9 * SEC), Verdict::Quiet);
        // Another key has its own window.
        assert_eq!(l.check(&2, t0 + 9 * SEC), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(&1, t0 + 10 * SEC), Verdict::Log { suppressed: 2 });
        // The count starts again after a line.
        assert_eq!(l.check(&1, t0 + 11 * SEC), Verdict::Quiet);
        assert_eq!(l.check(&1, t0 + 20 * SEC), Verdict::Log { suppressed: 1 });
        assert_eq!(l.check(&1, t0 + 40 * SEC), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_full_table_forgets_quiet_keys_then_shares_one_overflow_line() {
        let mut l = RateLimitedLog::new(10 * SEC, 2);
        let t0 = Instant::now();
        assert_eq!(l.check(&1, t0), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(&2, t0), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(&2, t0), Verdict::Quiet);
        // Full: every new key goes to the overflow group.
        assert_eq!(l.check(&3, t0), Verdict::Log { suppressed: 0 });
        for k in 4..100 {
            assert_eq!(l.check(&k, t0 + SEC), Verdict::Quiet);
        }
        assert_eq!(l.tracked(), 2);
        // Key 1's window is over and it holds nothing back: it is
        // forgotten to make room. Key 2 still owes its count and stays.
        assert_eq!(l.check(&100, t0 + 10 * SEC), Verdict::Log { suppressed: 0 });
        assert_eq!(l.tracked(), 2);
        assert_eq!(l.check(&2, t0 + 10 * SEC), Verdict::Log { suppressed: 1 });
        // The overflow group reports what it held back.
        assert_eq!(
            l.check(&101, t0 + 10 * SEC),
            Verdict::Log { suppressed: 96 }
        );
    }

    #[test]
    fn a_clock_that_goes_back_does_not_open_a_window() {
        let mut l = RateLimitedLog::new(10 * SEC, 4);
        let t0 = Instant::now() + 100 * SEC;
        assert_eq!(l.check(&1, t0), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(&1, t0 - 50 * SEC), Verdict::Quiet);
    }
}
