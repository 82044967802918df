//! Fault injection on the emulated bus.
//!
//! Faults on one initiator's path (matched by initiator name) and on one LUN.
//! The data path asks this module cheap questions (one atomic load when no
//! fault is set), and the control plane sets and clears faults. Every change
//! is logged through tracing with its time and kept in a bounded event list
//! that `busrig bus status` shows.
//!
//! Path faults, as a storage engineer would inject them on a real fabric:
//! - `freeze`: the initiator's commands get no answer until `thaw` (a hung
//!   path or a stuck HBA); the commands are held, not lost;
//! - `delay MS`: every command waits MS milliseconds before it runs;
//! - `drop`: the initiator's connections are closed now (a link bounce); it
//!   may log in again;
//! - `cut` / `restore`: connections closed and logins refused until restored
//!   (a pulled cable or a zoning change);
//! - `fail N SENSE`: the next N media-access commands fail with that sense.
//!
//! LUN faults (`offline` / `online`) make the LUN answer NOT READY; the
//! power-cycle fault lives with the logical unit's write cache.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use busrig_proto::scsi::sense::{Sense, SenseKey};
use serde::Serialize;

use crate::lu::now_ms;
use tokio::sync::watch;

/// How many fault events `status` keeps.
const EVENT_LOG_LEN: usize = 256;

/// Faults currently set on one initiator's path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathFault {
    pub frozen: bool,
    pub delay_ms: u64,
    pub cut: bool,
    /// Media commands still to fail, with the sense they fail with.
    pub fail_remaining: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_sense: Option<String>,
    #[serde(skip)]
    fail_with: Option<Sense>,
}

impl PathFault {
    fn is_clear(&self) -> bool {
        !self.frozen && self.delay_ms == 0 && !self.cut && self.fail_remaining == 0
    }
}

/// One fault or reset event, for the status report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The same time in RFC 3339, UTC.
    pub time: String,
    pub what: String,
}

impl State {
    /// Appends an event, dropping the oldest past [`EVENT_LOG_LEN`].
    fn push_event(&mut self, what: String) {
        let time_ms = now_ms();
        self.events.push_back(FaultEvent {
            time_ms,
            time: busrig_lograte::text::rfc3339(time_ms),
            what,
        });
        while self.events.len() > EVENT_LOG_LEN {
            self.events.pop_front();
        }
    }
}

#[derive(Default)]
struct State {
    paths: BTreeMap<String, PathFault>,
    /// (target, lun) pairs that are offline.
    offline: BTreeMap<(String, u64), ()>,
    events: VecDeque<FaultEvent>,
}

/// The fault state of one bus emulator process.
pub struct Faults {
    /// Fast path: false when no path fault is set at all.
    any_path_fault: AtomicBool,
    any_lun_offline: AtomicBool,
    state: Mutex<State>,
    /// Bumped on every change so waiting connections re-check their faults.
    changed: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::new()
    }
}

/// Parses `KEY/ASC/ASCQ` in hex (for example `3/11/00` for an unrecovered
/// read error) into a sense condition.
pub fn parse_sense(s: &str) -> Result<Sense, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [k, a, q] = parts.as_slice() else {
        return Err(format!(
            "sense must be KEY/ASC/ASCQ in hex (for example 3/11/00), got {s:?}"
        ));
    };
    let hex = |x: &str, what: &str| {
        u8::from_str_radix(x.trim_start_matches("0x"), 16)
            .map_err(|_| format!("bad {what} {x:?} in sense {s:?}"))
    };
    let key = Some(hex(k, "sense key")?)
        .filter(|v| *v <= 0x0f)
        .and_then(SenseKey::from_u8)
        .ok_or_else(|| format!("unknown sense key {k:?} in {s:?}"))?;
    Ok(Sense {
        key,
        asc: hex(a, "ASC")?,
        ascq: hex(q, "ASCQ")?,
        information: None,
        field: None,
        progress: None,
    })
}

impl Faults {
    pub fn new() -> Faults {
        Faults {
            any_path_fault: AtomicBool::new(false),
            any_lun_offline: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        }
    }

    fn update<R>(&self, what: String, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        let r = f(&mut st);
        st.paths.retain(|_, p| !p.is_clear());
        self.any_path_fault
            .store(st.paths.values().any(|p| !p.is_clear()), Ordering::Release);
        self.any_lun_offline
            .store(!st.offline.is_empty(), Ordering::Release);
        tracing::warn!(fault = %what, "fault injection");
        st.push_event(what);
        drop(st);
        self.changed.send_modify(|g| *g += 1);
        r
    }

    /// Records a reset or other bus event in the same log as the faults.
    pub fn record(&self, what: String) {
        self.state.lock().unwrap().push_event(what);
    }

    fn path<'a>(st: &'a mut State, initiator: &str) -> &'a mut PathFault {
        st.paths.entry(initiator.to_string()).or_default()
    }

    pub fn freeze(&self, initiator: &str) {
        self.update(format!("freeze {initiator}"), |st| {
            Self::path(st, initiator).frozen = true
        });
    }

    pub fn thaw(&self, initiator: &str) {
        self.update(format!("thaw {initiator}"), |st| {
            Self::path(st, initiator).frozen = false
        });
    }

    /// Sets (or with 0 clears) a per-command delay.
    pub fn delay(&self, initiator: &str, ms: u64) {
        self.update(format!("delay {initiator} {ms} ms"), |st| {
            Self::path(st, initiator).delay_ms = ms
        });
    }

    /// Records that the initiator's connections were dropped (the portal
    /// closes them); it may log in again at once.
    pub fn drop_connections(&self, initiator: &str) {
        self.update(format!("drop {initiator}"), |_| ());
    }

    /// Refuses the initiator's logins until `restore` (the portal closes its
    /// current connections).
    pub fn cut(&self, initiator: &str) {
        self.update(format!("cut {initiator}"), |st| {
            Self::path(st, initiator).cut = true
        });
    }

    pub fn restore(&self, initiator: &str) {
        self.update(format!("restore {initiator}"), |st| {
            Self::path(st, initiator).cut = false
        });
    }

    /// The next `n` media-access commands of `initiator` fail with `sense`.
    pub fn fail(&self, initiator: &str, n: u32, sense: Sense) {
        self.update(
            format!("fail {initiator} next {n} media commands with {sense}"),
            |st| {
                let p = Self::path(st, initiator);
                p.fail_remaining = n;
                p.fail_with = Some(sense);
                p.fail_sense = Some(format!(
                    "{:x}/{:02x}/{:02x}",
                    sense.key as u8, sense.asc, sense.ascq
                ));
            },
        );
    }

    /// Clears every path fault of `initiator` (thaw, no delay, restore, no failures).
    pub fn clear(&self, initiator: &str) {
        self.update(format!("clear faults of {initiator}"), |st| {
            st.paths.remove(initiator);
        });
    }

    pub fn set_lun_offline(&self, target: &str, lun: u64, offline: bool) {
        let what = format!(
            "lun {lun} of {target} {}",
            if offline { "offline" } else { "online" }
        );
        self.update(what, |st| {
            if offline {
                st.offline.insert((target.to_string(), lun), ());
            } else {
                st.offline.remove(&(target.to_string(), lun));
            }
        });
    }

    pub fn is_lun_offline(&self, target: &str, lun: u64) -> bool {
        self.any_lun_offline.load(Ordering::Acquire)
            && self
                .state
                .lock()
                .unwrap()
                .offline
                .contains_key(&(target.to_string(), lun))
    }

    /// Whether a login from `initiator` is refused (its path is cut).
    pub fn login_refused(&self, initiator: &str) -> bool {
        self.any_path_fault.load(Ordering::Acquire)
            && self
                .state
                .lock()
                .unwrap()
                .paths
                .get(initiator)
                .is_some_and(|p| p.cut)
    }

    /// A receiver that changes whenever any fault changes (commands held by
    /// a freeze wait on it for the thaw).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn frozen_and_delay(&self, initiator: &str) -> (bool, u64) {
        if !self.any_path_fault.load(Ordering::Acquire) {
            return (false, 0);
        }
        let st = self.state.lock().unwrap();
        st.paths
            .get(initiator)
            .map_or((false, 0), |p| (p.frozen, p.delay_ms))
    }

    pub fn is_frozen(&self, initiator: &str) -> bool {
        self.frozen_and_delay(initiator).0
    }

    /// Holds a command of `initiator` while its path is frozen, then applies
    /// the configured delay. Returns at once when no fault is set.
    pub async fn gate(&self, initiator: &str) {
        let mut rx = self.subscribe();
        loop {
            let (frozen, delay) = self.frozen_and_delay(initiator);
            if !frozen {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Takes one injected failure for a media-access command of `initiator`.
    pub fn take_failure(&self, initiator: &str) -> Option<Sense> {
        if !self.any_path_fault.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.state.lock().unwrap();
        let p = st.paths.get_mut(initiator)?;
        if p.fail_remaining == 0 {
            return None;
        }
        p.fail_remaining -= 1;
        let sense = p.fail_with;
        if p.fail_remaining == 0 {
            p.fail_with = None;
            p.fail_sense = None;
            let any = st.paths.values().any(|p| !p.is_clear());
            self.any_path_fault.store(any, Ordering::Release);
        }
        sense
    }

    /// Path faults currently set, by initiator name.
    pub fn paths(&self) -> BTreeMap<String, PathFault> {
        self.state
            .lock()
            .unwrap()
            .paths
            .iter()
            .filter(|(_, p)| !p.is_clear())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Offline LUNs as (target, lun).
    pub fn offline_luns(&self) -> Vec<(String, u64)> {
        self.state.lock().unwrap().offline.keys().cloned().collect()
    }

    pub fn events(&self) -> Vec<FaultEvent> {
        self.state.lock().unwrap().events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busrig_proto::scsi::sense::Asc;

    #[test]
    fn parse_sense_forms() {
        let s = parse_sense("3/11/00").unwrap();
        assert_eq!((s.key, s.asc, s.ascq), (SenseKey::MediumError, 0x11, 0));
        assert_eq!(parse_sense("0x2/0x04/0x12").unwrap().asc, 0x04);
        assert!(parse_sense("3/11").is_err());
        assert!(parse_sense("zz/11/00").is_err());
        assert!(parse_sense("1f/11/00").is_err());
    }

    #[test]
    fn fail_counts_down_and_clears() {
        let f = Faults::new();
        assert_eq!(f.take_failure("a"), None);
        f.fail("a", 2, Sense::new(Asc::UNRECOVERED_READ_ERROR));
        assert_eq!(f.take_failure("b"), None);
        assert_eq!(f.take_failure("a").unwrap().asc, 0x11);
        assert_eq!(f.take_failure("a").unwrap().asc, 0x11);
        assert_eq!(f.take_failure("a"), None);
        assert!(f.paths().is_empty());
    }

    #[test]
    fn cut_refuses_logins_until_restore() {
        let f = Faults::new();
        f.cut("a");
        assert!(f.login_refused("a"));
        assert!(!f.login_refused("b"));
        f.drop_connections("b");
        assert!(!f.login_refused("b"));
        f.restore("a");
        assert!(!f.login_refused("a"));
        let log: Vec<String> = f.events().into_iter().map(|e| e.what).collect();
        assert_eq!(log, ["cut a", "drop b", "restore a"]);
    }

    #[tokio::test]
    async fn gate_holds_until_thaw() {
        let f = std::sync::Arc::new(Faults::new());
        f.freeze("a");
        let f2 = f.clone();
        let held = tokio::spawn(async move { f2.gate("a").await });
        // Another initiator is not held.
        f.gate("b").await;
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        f.thaw("a");
        held.await.unwrap();
        assert!(f.events().iter().any(|e| e.what == "thaw a"));
    }

    #[test]
    fn lun_offline_toggles() {
        let f = Faults::new();
        assert!(!f.is_lun_offline("t", 1));
        f.set_lun_offline("t", 1, true);
        assert!(f.is_lun_offline("t", 1));
        assert!(!f.is_lun_offline("t", 2));
        f.set_lun_offline("t", 1, false);
        assert!(!f.is_lun_offline("t", 1));
    }
}
