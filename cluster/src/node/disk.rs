//! The disk quorum models (`disk-scsi2`, `disk-pr`): the node's
//! [`Arbiter`] challenges for and defends the shared quorum disk, and the
//! owner keeps the cluster database in the quorum log on that disk (the
//! Log Manager). The arbitration itself lives in [`crate::arbiter`]; this
//! module holds the owner's quorum-log state and the [`Node`] steps that
//! only the disk models take.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::*;
use crate::db::{Change, DbSnapshot, LogEntry};
use crate::log_manager::{self, LogWrite, QuorumLog};

/// The disk models' state beyond the arbiter: the owner's quorum log.
#[derive(Debug)]
pub(super) struct DiskQuorum {
    log: Option<QuorumLog>,
    log_state: LogState,
    /// Log writes not issued yet: they go out one at a time, in order.
    log_pending: VecDeque<LogWrite>,
}

impl DiskQuorum {
    pub(super) fn new() -> DiskQuorum {
        DiskQuorum {
            log: None,
            log_state: LogState::Closed,
            log_pending: VecDeque::new(),
        }
    }

    /// Forgets the log: recovered again the next time the quorum comes
    /// online here.
    pub(super) fn close(&mut self) {
        self.log = None;
        self.log_state = LogState::Closed;
        self.log_pending.clear();
    }

    /// The log is recovered and no update is being written.
    pub(super) fn is_ready(&self) -> bool {
        matches!(self.log_state, LogState::Ready)
    }

    /// The log is recovered, so the database here is the committed one a
    /// member may take.
    pub(super) fn serves_db(&self) -> bool {
        matches!(self.log_state, LogState::Ready | LogState::Writing { .. })
    }
}

/// Why the owner may not issue its next quorum-log write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum LogWriteError {
    /// The arbiter no longer acts as the disk's owner (its lease ran out,
    /// e.g. while the node was paused between two writes).
    #[error("the quorum disk lease expired")]
    LeaseExpired,
}

/// Quorum log state on the owner.
#[derive(Debug)]
enum LogState {
    /// Not the owner, or not online yet.
    Closed,
    /// Reading the log region (op id).
    Reading(u64),
    /// Formatting or checkpointing (op ids still out).
    Preparing(BTreeSet<u64>),
    Ready,
    /// Writing update `seq` (op ids still out).
    Writing {
        ops: BTreeSet<u64>,
        seq: u64,
        change: Change,
        origin: NodeId,
        id: u64,
    },
}

impl Node {
    fn set_log_state(&mut self, state: LogState) {
        if let Some(d) = self.quorum.disk_mut() {
            d.log_state = state;
        }
    }

    /// The quorum came online here: read the log region to recover the
    /// database, unless the log is already open.
    pub(super) fn disk_open_log(&mut self) {
        if !self
            .quorum
            .disk()
            .is_some_and(|d| matches!(d.log_state, LogState::Closed))
        {
            return;
        }
        let cfg = self.log_config();
        let op = self.issue(
            OpKind::Log,
            DiskOp::Read {
                offset: cfg.region_offset,
                len: cfg.region_len as usize,
            },
        );
        self.set_log_state(LogState::Reading(op));
    }

    /// A view was adopted: the lowest member of a view without an owner
    /// challenges for the quorum disk, and an owner with its log recovered
    /// sends the members the database.
    pub(super) fn disk_adopted_view(&mut self, now: Duration, view: &View) {
        if quorum::disk_challenges(view, self.me, self.arbiter.is_idle()) {
            tracing::info!(
                node = self.me,
                epoch = view.epoch,
                "view without quorum owner: challenging"
            );
            let outs = self.arbiter.become_challenger(now);
            self.on_arbiter(now, outs);
        }
        if view.owner == Some(self.me) && self.quorum.disk().is_some_and(DiskQuorum::serves_db) {
            self.sync_members();
        }
    }

    /// A newer view that includes this node was installed.
    pub(super) fn disk_on_install(&mut self, now: Duration, view: View) {
        // Only the owner holds the quorum disk; an install naming another
        // owner while we hold it would mean two owners: keep ours and let
        // arbitration settle it (the other cannot be acting).
        if self.arbiter.holds() && view.owner.is_some_and(|o| o != self.me) {
            self.start_regroup(now, view.epoch + 1);
            return;
        }
        self.adopt_view(now, view);
    }

    /// Disk models, as regroup coordinator: install the view of every node
    /// heard, owned by the participant that holds the quorum disk.
    pub(super) fn disk_end_collection(
        &mut self,
        now: Duration,
        epoch: u64,
        seen: BTreeMap<NodeId, bool>,
    ) {
        let owner = quorum::disk_owner(&seen);
        let paused = self.paused_among(seen.keys());
        let view = View {
            epoch,
            members: seen.keys().copied().collect(),
            owner,
            paused,
        };
        tracing::info!(node = self.me, epoch, members = ?view.members, ?owner, "regroup installs view");
        self.send_install(seen.keys().copied(), &view, None);
        self.adopt_view(now, view);
    }

    /// The view's quorum deadline passed: stop unless this node holds the
    /// quorum disk and is on its way online.
    pub(super) fn disk_quorum_deadline(&mut self) {
        if !self.arbiter.holds() {
            self.stop("no quorum owner came online after the regroup");
            return;
        }
        // We hold the reservation and are on our way online: the
        // arbiter's own timers take over. Left set, the deadline
        // stayed in the past and `next_deadline` asked for a tick at
        // the same instant forever (sim: "asks to be ticked again and
        // again", seed 2536 with the real quorum log).
        if let Phase::Member(mm) = &mut self.phase {
            mm.quorum_deadline = None;
        }
    }

    /// A member asks the locker for the database (it missed updates, or
    /// joined a new view).
    pub(super) fn disk_on_sync_request(&mut self, from: NodeId) {
        if self.is_locker() && self.quorum.disk().is_some_and(DiskQuorum::serves_db) {
            let db = self.db.clone();
            self.send(from, Body::DbSync { db });
        }
    }

    pub(super) fn on_db_sync(&mut self, from: NodeId, db: DbSnapshot) {
        let Some(view) = self.view() else {
            return;
        };
        if view.owner != Some(from) || db.seq < self.db.seq {
            return;
        }
        self.db = db;
        self.pending_apply = self.pending_apply.split_off(&(self.db.seq + 1));
        self.apply_pending(from);
    }

    /// Queues `writes` and issues the first: the quorum log's crash safety
    /// needs them on the disk in order, so each waits for the previous
    /// one's completion ([`Self::next_log_write`]).
    fn issue_log_writes(&mut self, writes: Vec<LogWrite>) -> BTreeSet<u64> {
        let w = self.quorum.disk_mut().and_then(|d| {
            d.log_pending = writes.into();
            d.log_pending.pop_front()
        });
        w.map(|w| self.issue_log_write(w)).into_iter().collect()
    }

    /// The next queued log write, if this node may still write: a node
    /// that was paused between two writes may have lost the quorum meanwhile
    /// and must not write again (the caller stops then).
    fn next_log_write(&mut self, now: Duration) -> Result<Option<u64>, LogWriteError> {
        let Some(d) = self.quorum.disk_mut().filter(|d| !d.log_pending.is_empty()) else {
            return Ok(None);
        };
        if !self.arbiter.is_acting_owner(now) {
            return Err(LogWriteError::LeaseExpired);
        }
        Ok(d.log_pending.pop_front().map(|w| self.issue_log_write(w)))
    }

    fn issue_log_write(&mut self, w: LogWrite) -> u64 {
        self.issue(
            OpKind::Log,
            DiskOp::Write {
                offset: w.offset,
                data: w.data,
            },
        )
    }

    pub(super) fn on_log_done(&mut self, now: Duration, id: u64, result: DiskResult) {
        let Some(d) = self.quorum.disk_mut() else {
            return;
        };
        let state = std::mem::replace(&mut d.log_state, LogState::Closed);
        match (state, result) {
            (LogState::Reading(op), DiskResult::Data(region)) if op == id => {
                let cfg = self.log_config();
                let opened = match log_manager::open_region(&cfg, &region) {
                    Ok(x) => x,
                    Err(e) => return self.stop(format!("quorum log unreadable: {e}")),
                };
                let mut writes = Vec::new();
                let mut db = DbSnapshot::default();
                let log = match opened {
                    Some((log, rec)) => {
                        if let Some((_, cp)) = rec.checkpoint {
                            match serde_json::from_slice::<DbSnapshot>(&cp) {
                                Ok(s) => db = s,
                                Err(e) => {
                                    return self
                                        .stop(format!("quorum log checkpoint unreadable: {e}"))
                                }
                            }
                        }
                        if let Some(cut) = rec.cut {
                            tracing::warn!(node = self.me, %cut, "quorum log cut");
                        }
                        db.replay(rec.records.iter().map(|(_, r)| r.as_slice()));
                        log
                    }
                    None => match log_manager::format_and_open(&cfg, &self.cfg.name) {
                        Ok((log, w)) => {
                            writes = w;
                            log
                        }
                        Err(e) => return self.stop(format!("quorum log format: {e}")),
                    },
                };
                let mut log = log;
                tracing::info!(node = self.me, seq = db.seq, "quorum log recovered");
                let logged_seq = db.seq;
                if db.seq >= self.db.seq {
                    self.db = db;
                }
                self.pending_apply.clear();
                // Checkpoint whenever this node's database is ahead of what
                // the log replays to: appends continue from `self.db.seq`,
                // and a gap between the log's last change and the next
                // record would end every later replay there.
                if self.db.seq > logged_seq || (self.db.seq > 0 && log.needs_checkpoint()) {
                    let snap = serde_json::to_vec(&self.db).expect("snapshot serializes");
                    match log_manager::checkpoint_all(&mut log, &snap) {
                        Ok(w) => writes.extend(w),
                        Err(e) => return self.stop(format!("quorum log checkpoint: {e}")),
                    }
                }
                if let Some(d) = self.quorum.disk_mut() {
                    d.log = Some(log);
                }
                if writes.is_empty() {
                    self.set_log_state(LogState::Ready);
                    self.sync_members();
                } else if self.arbiter.is_acting_owner(now) {
                    let ops = self.issue_log_writes(writes);
                    self.set_log_state(LogState::Preparing(ops));
                } else {
                    self.stop("lease expired while recovering the quorum log");
                }
            }
            (LogState::Preparing(mut ops), DiskResult::Good) => {
                ops.remove(&id);
                match self.next_log_write(now) {
                    Ok(next) => ops.extend(next),
                    Err(LogWriteError::LeaseExpired) => {
                        return self.stop("lease expired while preparing the quorum log")
                    }
                }
                if ops.is_empty() {
                    self.set_log_state(LogState::Ready);
                    self.sync_members();
                } else {
                    self.set_log_state(LogState::Preparing(ops));
                }
            }
            (
                LogState::Writing {
                    mut ops,
                    seq,
                    change,
                    origin,
                    id: req,
                },
                DiskResult::Good,
            ) => {
                ops.remove(&id);
                match self.next_log_write(now) {
                    Ok(next) => ops.extend(next),
                    Err(LogWriteError::LeaseExpired) => {
                        return self.stop("lease expired while writing the quorum log")
                    }
                }
                if !ops.is_empty() {
                    self.set_log_state(LogState::Writing {
                        ops,
                        seq,
                        change,
                        origin,
                        id: req,
                    });
                    return;
                }
                self.set_log_state(LogState::Ready);
                self.db
                    .apply(seq, &change)
                    .expect("the locker checked the change before logging it");
                self.actions.push(Action::Durable {
                    origin,
                    id: req,
                    seq,
                    change: change.clone(),
                });
                if origin == self.me {
                    self.actions.push(Action::Committed { id: req, seq });
                }
                for n in self.others() {
                    self.send(
                        n,
                        Body::GumApply {
                            seq,
                            change: change.clone(),
                            origin: Some((origin, req)),
                        },
                    );
                }
            }
            (_, r) => self.stop(format!("quorum log I/O failed: {r:?}")),
        }
    }

    /// The locker takes the next queued change: check, log with FUA, then
    /// apply and distribute when the write completes.
    pub(super) fn disk_pump_gum(&mut self, now: Duration) {
        if !self.is_locker()
            || !self.quorum.disk().is_some_and(DiskQuorum::is_ready)
            || !self.arbiter.is_acting_owner(now)
            || matches!(&self.phase, Phase::Member(m) if m.regroup.is_some())
        {
            return;
        }
        if let Some((origin, id, change)) = self.next_valid_gum() {
            let seq = self.db.seq + 1;
            let Some(log) = self.quorum.disk_mut().and_then(|d| d.log.as_mut()) else {
                return self.stop("quorum log not open while ready");
            };
            let mut writes = Vec::new();
            if log.needs_checkpoint() {
                let snap = serde_json::to_vec(&self.db).expect("snapshot serializes");
                match log_manager::checkpoint_all(log, &snap) {
                    Ok(w) => writes.extend(w),
                    Err(e) => return self.stop(format!("quorum log checkpoint: {e}")),
                }
            }
            let payload = serde_json::to_vec(&LogEntry {
                seq,
                change: change.clone(),
                epoch: 0,
            })
            .expect("entries serialize");
            match log.append(&payload) {
                Ok((_, w)) => writes.extend(w),
                Err(e) => return self.stop(format!("quorum log append: {e}")),
            }
            let ops = self.issue_log_writes(writes);
            self.set_log_state(LogState::Writing {
                ops,
                seq,
                change,
                origin,
                id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_log_is_neither_ready_nor_serving_the_database() {
        let mut d = DiskQuorum::new();
        assert!(!d.is_ready());
        assert!(!d.serves_db());
        d.log_state = LogState::Ready;
        assert!(d.is_ready());
        assert!(d.serves_db());
        d.log_state = LogState::Writing {
            ops: BTreeSet::from([1]),
            seq: 1,
            change: Change::Put {
                key: "k".into(),
                value: "v".into(),
            },
            origin: 0,
            id: 1,
        };
        assert!(!d.is_ready(), "one update at a time");
        assert!(d.serves_db());
        d.log_pending.push_back(LogWrite {
            offset: 0,
            data: vec![0; 512],
        });
        d.close();
        assert!(!d.is_ready());
        assert!(!d.serves_db());
        assert!(d.log.is_none() && d.log_pending.is_empty());
    }
}
