//! The portal's table of sessions, and the CmdSN window of one session.
//!
//! A session is named by its TSIH, which the target assigns in the final
//! Login Response (RFC 7143 §11.13.4), and identified on the initiator side
//! by initiator name + ISID + target portal group (RFC 7143 §4.4.2). A new
//! login with the same initiator name and ISID to the same target and TSIH 0
//! reinstates the session: the old one is closed before the new one enters
//! full feature phase (RFC 7143 §6.3.5).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use busrig_proto::serial;
use tokio_util::sync::CancellationToken;

use super::memory::ConnMemory;
use crate::nexus::ItNexus;

/// A live session as the rest of the portal sees it.
#[derive(Debug)]
pub struct SessionHandle {
    pub tsih: u16,
    /// Initiator name, lowercased (iSCSI names compare case-insensitively,
    /// RFC 7143 §4.2.7.1).
    pub initiator: String,
    pub isid: [u8; 6],
    /// Index of the target; `None` for a discovery session.
    pub target: Option<usize>,
    /// The I_T nexus of a normal session.
    pub nexus: Option<ItNexus>,
    pub peer: String,
    /// Cancelled to make the session end (reinstatement, cold reset,
    /// shutdown).
    pub kill: CancellationToken,
    /// Cancelled by the session once it has fully ended: tasks aborted and
    /// the nexus loss reported.
    pub ended: CancellationToken,
    /// What the connection holds for its initiator (docs/limits.md).
    pub memory: Arc<ConnMemory>,
}

impl SessionHandle {
    /// The ISID as 12 hex digits, for logs.
    pub fn isid_hex(&self) -> String {
        self.isid.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a login asks of the table.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub initiator: String,
    pub isid: [u8; 6],
    pub target: Option<usize>,
    pub nexus: Option<ItNexus>,
    pub peer: String,
}

#[derive(Default)]
struct Inner {
    next_tsih: u16,
    by_tsih: HashMap<u16, Arc<SessionHandle>>,
}

/// Every session of the portal.
#[derive(Default)]
pub struct SessionTable {
    inner: Mutex<Inner>,
}

/// Why a session could not be entered in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// Every TSIH is in use.
    NoTsih,
}

impl SessionTable {
    pub fn new() -> SessionTable {
        SessionTable::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug elsewhere; the map
        // itself stays consistent, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session with this TSIH.
    pub fn by_tsih(&self, tsih: u16) -> Option<Arc<SessionHandle>> {
        self.lock().by_tsih.get(&tsih).cloned()
    }

    /// Enters a new session under a fresh TSIH. A normal session with the
    /// same initiator name, ISID and target is taken out of the table and
    /// returned, for the caller to close (reinstatement).
    pub fn admit(
        &self,
        new: NewSession,
    ) -> Result<(Arc<SessionHandle>, Option<Arc<SessionHandle>>), AdmitError> {
        let mut inner = self.lock();
        let old = if new.target.is_some() {
            let key = inner
                .by_tsih
                .iter()
                .find(|(_, s)| {
                    s.target == new.target && s.isid == new.isid && s.initiator == new.initiator
                })
                .map(|(k, _)| *k);
            key.and_then(|k| inner.by_tsih.remove(&k))
        } else {
            None
        };
        let mut tsih = None;
        for _ in 0..=u16::MAX {
            // TSIH 0 means "new session" on the wire, so it is never given out.
            inner.next_tsih = inner.next_tsih.wrapping_add(1).max(1);
            if !inner.by_tsih.contains_key(&inner.next_tsih) {
                tsih = Some(inner.next_tsih);
                break;
            }
        }
        let Some(tsih) = tsih else {
            if let Some(old) = old {
                inner.by_tsih.insert(old.tsih, old);
            }
            return Err(AdmitError::NoTsih);
        };
        let handle = Arc::new(SessionHandle {
            tsih,
            initiator: new.initiator,
            isid: new.isid,
            target: new.target,
            nexus: new.nexus,
            peer: new.peer,
            kill: CancellationToken::new(),
            ended: CancellationToken::new(),
            memory: Arc::default(),
        });
        inner.by_tsih.insert(tsih, handle.clone());
        Ok((handle, old))
    }

    /// Removes the session if the table still holds this very handle.
    pub fn remove(&self, handle: &Arc<SessionHandle>) {
        let mut inner = self.lock();
        if inner
            .by_tsih
            .get(&handle.tsih)
            .is_some_and(|h| Arc::ptr_eq(h, handle))
        {
            inner.by_tsih.remove(&handle.tsih);
        }
    }

    /// Distinct initiator names with a normal session to any of `targets`.
    pub fn initiators_on(&self, targets: &HashSet<usize>) -> HashSet<String> {
        self.lock()
            .by_tsih
            .values()
            .filter(|s| s.target.is_some_and(|t| targets.contains(&t)))
            .map(|s| s.initiator.clone())
            .collect()
    }

    /// Sessions matching `pred`.
    pub fn select(&self, pred: impl Fn(&SessionHandle) -> bool) -> Vec<Arc<SessionHandle>> {
        self.lock()
            .by_tsih
            .values()
            .filter(|s| pred(s))
            .cloned()
            .collect()
    }
}

/// The CmdSN window of a session (RFC 7143 §4.2.2.1).
///
/// ExpCmdSN advances as non-immediate commands are delivered in order.
/// MaxCmdSN opens the window to `queue_depth` commands that are delivered but
/// not finished, and never moves backwards: an initiator keeps the largest
/// MaxCmdSN it has seen, so shrinking it would make us drop commands the
/// initiator was allowed to send. While the connection is out of memory
/// (docs/limits.md) the window is held: MaxCmdSN stays where it is, so the
/// initiator sends nothing beyond what it was already allowed.
#[derive(Debug, Clone)]
pub struct CmdWindow {
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    depth: u32,
    in_flight: u32,
    held: bool,
}

impl CmdWindow {
    /// The window after login: the login's CmdSN is the first expected one.
    pub fn new(exp_cmd_sn: u32, depth: u32) -> CmdWindow {
        let depth = depth.max(1);
        CmdWindow {
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(depth - 1),
            depth,
            in_flight: 0,
            held: false,
        }
    }

    /// Holds MaxCmdSN where it is (`true`) or lets it follow the room
    /// again (`false`).
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    /// MaxCmdSN to advertise now.
    pub fn max_cmd_sn(&mut self) -> u32 {
        if self.held {
            return self.max_cmd_sn;
        }
        let room = self.depth.saturating_sub(self.in_flight);
        // room 0 gives ExpCmdSN - 1: the window is closed (RFC 7143 §4.2.2.1).
        let candidate = self.exp_cmd_sn.wrapping_add(room).wrapping_sub(1);
        if serial::lt(self.max_cmd_sn, candidate) {
            self.max_cmd_sn = candidate;
        }
        self.max_cmd_sn
    }

    /// Whether a non-immediate PDU with this CmdSN may be accepted:
    /// ExpCmdSN <= cmd_sn <= MaxCmdSN in serial arithmetic.
    pub fn accepts(&self, cmd_sn: u32) -> bool {
        !serial::lt(cmd_sn, self.exp_cmd_sn) && !serial::lt(self.max_cmd_sn, cmd_sn)
    }

    /// The PDU with CmdSN == ExpCmdSN was delivered.
    pub fn advance(&mut self) {
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
    }

    /// A command entered execution (counts against the window).
    pub fn started(&mut self) {
        self.in_flight += 1;
    }

    /// A command that had started finished.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_exp_to_max_and_never_shrinks() {
        let mut w = CmdWindow::new(10, 4);
        assert_eq!(w.max_cmd_sn(), 13);
        assert!(w.accepts(10) && w.accepts(13));
        assert!(!w.accepts(9) && !w.accepts(14));
        // Four commands delivered and running: the window closes...
        for _ in 0..4 {
            w.advance();
            w.started();
        }
        assert_eq!(w.exp_cmd_sn(), 14);
        assert_eq!(w.max_cmd_sn(), 13);
        assert!(!w.accepts(14));
        // ...and opens again as they finish.
        w.finished();
        assert_eq!(w.max_cmd_sn(), 14);
        assert!(w.accepts(14));
        // An immediate command in flight does not pull MaxCmdSN back.
        w.started();
        assert_eq!(w.max_cmd_sn(), 14);
    }

    #[test]
    fn a_held_window_does_not_advance_until_released() {
        let mut w = CmdWindow::new(0, 4);
        assert_eq!(w.max_cmd_sn(), 3);
        w.advance();
        w.hold(true);
        assert_eq!(w.max_cmd_sn(), 3, "held: MaxCmdSN stays");
        assert!(w.accepts(3), "what was granted stays granted");
        w.hold(false);
        assert_eq!(w.max_cmd_sn(), 4);
    }

    #[test]
    fn window_wraps_around_zero() {
        let mut w = CmdWindow::new(u32::MAX - 1, 8);
        assert_eq!(w.max_cmd_sn(), 5);
        assert!(w.accepts(u32::MAX) && w.accepts(0) && w.accepts(5));
        assert!(!w.accepts(6) && !w.accepts(u32::MAX - 2));
    }

    #[test]
    fn reinstatement_returns_the_old_session() {
        let t = SessionTable::new();
        let new = |isid: u8, target| NewSession {
            initiator: "iqn.a".into(),
            isid: [isid; 6],
            target,
            nexus: None,
            peer: "p".into(),
        };
        let (a, old) = t.admit(new(1, Some(0))).unwrap();
        assert!(old.is_none());
        let (b, old) = t.admit(new(2, Some(0))).unwrap();
        assert!(old.is_none());
        assert_ne!(a.tsih, b.tsih);
        let (c, old) = t.admit(new(1, Some(0))).unwrap();
        assert_eq!(old.unwrap().tsih, a.tsih);
        assert!(t.by_tsih(a.tsih).is_none());
        assert!(t.by_tsih(c.tsih).is_some());
        // Removing the stale handle leaves the new one alone.
        t.remove(&a);
        assert_eq!(t.select(|_| true).len(), 2);
        let targets: HashSet<usize> = [0].into_iter().collect();
        assert_eq!(t.initiators_on(&targets).len(), 1);
    }
}
