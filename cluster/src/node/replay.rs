//! Replay protection for cluster messages (docs/semantics.md "Replayed
//! messages").
//!
//! Every envelope carries the sender's incarnation, the receiver's
//! incarnation as the sender last heard it (`to_incarnation`, 0 before
//! first contact) and a sequence number the sender counts up per receiver
//! within its incarnation. All three are under the HMAC, so a receiver that
//! checks them after authentication refuses:
//!
//! - an envelope of an earlier incarnation of its sender than one it has
//!   already heard (the sender restarted since);
//! - an envelope addressed to an earlier life of the receiver (captured
//!   before the receiver restarted, when its windows were empty);
//! - an envelope whose sequence number it has already accepted, or one too
//!   far behind the newest to tell.
//!
//! The last check is the anti-replay window of IPsec (RFC 4303 §3.4.3): the
//! highest number accepted and a bitmap of the [`WINDOW`] numbers below it,
//! so datagrams reordered across the two cluster networks are still taken
//! once each.

use std::time::Duration;

use crate::config::NodeId;

/// How many sequence numbers below the highest accepted one the window
/// remembers. Cluster traffic to one receiver is a few datagrams per
/// heartbeat interval, and the two networks reorder it by milliseconds.
pub const WINDOW: u64 = 128;

/// The sliding window of sequence numbers accepted from one sender in one
/// incarnation (RFC 4303 §3.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    /// The highest sequence number accepted (0: none yet).
    top: u64,
    /// Bit `i` set: `top - i` was accepted (bit 0 is `top` itself).
    seen: u128,
}

/// Why an authenticated envelope was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// From an earlier incarnation of the sender than one already heard.
    OldIncarnation { known: u64 },
    /// Addressed to an earlier life of this node.
    OtherLife { addressed: u64 },
    /// This sequence number was already accepted.
    Duplicate,
    /// Too far behind the newest accepted number to tell (or zero, which
    /// no sender uses).
    BelowWindow { top: u64 },
}

impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replay::OldIncarnation { known } => {
                write!(
                    f,
                    "from an earlier incarnation (incarnation {known} is known)"
                )
            }
            Replay::OtherLife { addressed } => {
                write!(
                    f,
                    "addressed to this node's earlier incarnation {addressed}"
                )
            }
            Replay::Duplicate => write!(f, "sequence number already seen"),
            Replay::BelowWindow { top } => {
                write!(f, "sequence number too old (newest seen is {top})")
            }
        }
    }
}

impl ReplayWindow {
    /// Whether `seq` would be accepted, without recording it.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::BelowWindow { top: self.top });
        }
        if seq > self.top {
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= WINDOW {
            return Err(Replay::BelowWindow { top: self.top });
        }
        if self.seen & (1u128 << behind) != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Records `seq` as accepted; call only after [`check`](Self::check)
    /// passed and the message was authenticated. A number behind the
    /// window changes nothing (`check` refuses it anyway).
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
        } else if self.top - seq < WINDOW {
            self.seen |= 1u128 << (self.top - seq);
        }
    }
}

/// What this node knows of one sender: its newest incarnation heard and
/// the window of that incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLife {
    pub incarnation: u64,
    pub window: ReplayWindow,
}

impl PeerLife {
    /// Checks an authenticated envelope from this sender: an incarnation
    /// at least the known one, and a sequence number new to its window. A
    /// newer incarnation starts a new window; it is recorded only by
    /// [`accept`](Self::accept).
    pub fn check(&self, incarnation: u64, seq: u64) -> Result<(), Replay> {
        match incarnation.cmp(&self.incarnation) {
            std::cmp::Ordering::Less => Err(Replay::OldIncarnation {
                known: self.incarnation,
            }),
            std::cmp::Ordering::Greater => ReplayWindow::default().check(seq),
            std::cmp::Ordering::Equal => self.window.check(seq),
        }
    }

    /// Records an envelope [`check`](Self::check) passed.
    pub fn accept(&mut self, incarnation: u64, seq: u64) {
        if incarnation > self.incarnation {
            *self = PeerLife {
                incarnation,
                window: ReplayWindow::default(),
            };
        }
        self.window.accept(seq);
    }
}

/// How often the refused replays are reported, at most.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Counts refused replays and reports them in a WARN at most once per
/// [`REPORT_INTERVAL`], not once per datagram (a replaying attacker would
/// otherwise flood the log).
#[derive(Debug, Clone, Default)]
pub struct ReplayLog {
    /// Every replay refused since the node started.
    total: u64,
    /// Refused since the last report.
    unreported: u64,
    last_report: Option<Duration>,
}

impl ReplayLog {
    /// Every replay refused so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts one refusal; logs it now if the last report is old enough.
    pub fn refused(&mut self, now: Duration, me: NodeId, from: NodeId, seq: u64, why: Replay) {
        self.total += 1;
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_sub(t) >= REPORT_INTERVAL);
        if due {
            tracing::warn!(
                node = me,
                peer = from,
                seq,
                refused = self.unreported,
                total = self.total,
                "refused replayed cluster messages (latest: {why}); \
                 someone is re-sending captured traffic, or a datagram was duplicated"
            );
            self.unreported = 0;
            self.last_report = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_numbers_are_taken_once() {
        let mut w = ReplayWindow::default();
        for s in 1..=300 {
            assert_eq!(w.check(s), Ok(()), "{s}");
            w.accept(s);
            assert_eq!(w.check(s), Err(Replay::Duplicate), "{s} again");
        }
        assert_eq!(w.check(300 - WINDOW + 1), Err(Replay::Duplicate));
        assert_eq!(w.check(300 - WINDOW), Err(Replay::BelowWindow { top: 300 }));
    }

    #[test]
    fn reordered_numbers_inside_the_window_are_taken_once() {
        let mut w = ReplayWindow::default();
        for s in [5, 3, 9, 4, 1, 2, 8, 6, 7] {
            assert_eq!(w.check(s), Ok(()), "{s}");
            w.accept(s);
        }
        for s in 1..=9 {
            assert_eq!(w.check(s), Err(Replay::Duplicate), "{s}");
        }
        assert_eq!(w.check(10), Ok(()));
    }

    #[test]
    fn a_gap_keeps_the_missing_numbers_acceptable() {
        let mut w = ReplayWindow::default();
        w.accept(1);
        w.accept(100);
        for s in 2..100 {
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
        assert_eq!(w.check(1), Err(Replay::Duplicate));
        // A jump past the whole window forgets everything below it.
        w.accept(100 + WINDOW);
        assert_eq!(w.check(100), Err(Replay::BelowWindow { top: 100 + WINDOW }));
        assert_eq!(w.check(101), Ok(()));
        assert_eq!(w.check(100 + WINDOW), Err(Replay::Duplicate));
    }

    #[test]
    fn recording_a_number_behind_the_window_changes_nothing() {
        let mut w = ReplayWindow::default();
        w.accept(1_000);
        let before = w;
        w.accept(1);
        assert_eq!(w, before);
    }

    #[test]
    fn zero_is_never_a_sequence_number() {
        let w = ReplayWindow::default();
        assert_eq!(w.check(0), Err(Replay::BelowWindow { top: 0 }));
    }

    #[test]
    fn an_earlier_incarnation_is_refused_and_a_later_one_starts_afresh() {
        let mut p = PeerLife {
            incarnation: 7,
            window: ReplayWindow::default(),
        };
        p.accept(7, 1);
        p.accept(7, 2);
        assert_eq!(p.check(7, 2), Err(Replay::Duplicate));
        assert_eq!(p.check(6, 50), Err(Replay::OldIncarnation { known: 7 }));
        // The restarted sender counts from 1 again.
        assert_eq!(p.check(8, 1), Ok(()));
        p.accept(8, 1);
        assert_eq!(p.check(8, 1), Err(Replay::Duplicate));
        assert_eq!(p.check(7, 3), Err(Replay::OldIncarnation { known: 8 }));
    }

    #[test]
    fn refusals_are_counted_each_but_reported_once_per_interval() {
        let mut log = ReplayLog::default();
        let t0 = Duration::from_secs(100);
        log.refused(t0, 0, 1, 3, Replay::Duplicate);
        assert_eq!((log.total(), log.unreported), (1, 0));
        for i in 1..50 {
            log.refused(
                t0 + Duration::from_millis(i * 50),
                0,
                1,
                3,
                Replay::Duplicate,
            );
        }
        assert_eq!((log.total(), log.unreported), (50, 49));
        log.refused(t0 + REPORT_INTERVAL, 0, 1, 3, Replay::Duplicate);
        assert_eq!((log.total(), log.unreported), (51, 0));
    }
}
