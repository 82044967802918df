//! The disk quorum models (`disk-scsi2`, `disk-pr`): the node's
//! [`Arbiter`] (in [`Core`]) challenges for and defends the shared quorum
//! disk, and the owner keeps the cluster database in the quorum log on
//! that disk (the Log Manager). The arbitration itself lives in
//! [`crate::arbiter`]; this module holds the owner's quorum-log state,
//! [`DiskQuorum`], and its [`QuorumModel`] steps.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::*;
use crate::db::{Change, DbSnapshot, LogEntry, Replica};
use crate::log_manager::{self, LogWrite, QuorumLog};

/// The disk models' state beyond the arbiter: the owner's quorum log.
#[derive(Debug)]
pub(super) struct DiskQuorum {
    log: Option<QuorumLog>,
    log_state: LogState,
    /// Log writes not issued yet: they go out one at a time, in order.
    log_pending: VecDeque<LogWrite>,
    /// The owner, its heartbeat number and its database number in the
    /// last heartbeat a member heard from it.
    owner_db_seq: Option<(NodeId, u64, u64)>,
}

impl DiskQuorum {
    pub(super) fn new() -> DiskQuorum {
        DiskQuorum {
            log: None,
            log_state: LogState::Closed,
            log_pending: VecDeque::new(),
            owner_db_seq: None,
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

impl DiskQuorum {
    fn set_log_state(&mut self, state: LogState) {
        self.log_state = state;
    }

    /// The quorum came online here: read the log region to recover the
    /// database, unless the log is already open.
    fn open_log(&mut self, core: &mut Core) {
        if !matches!(self.log_state, LogState::Closed) {
            return;
        }
        let cfg = core.log_config();
        let op = core.issue(
            OpKind::Log,
            DiskOp::Read {
                offset: cfg.region_offset,
                len: cfg.region_len as usize,
            },
        );
        self.set_log_state(LogState::Reading(op));
    }

    /// Queues `writes` and issues the first: the quorum log's crash safety
    /// needs them on the disk in order, so each waits for the previous
    /// one's completion ([`Self::next_log_write`]).
    fn issue_log_writes(&mut self, core: &mut Core, writes: Vec<LogWrite>) -> BTreeSet<u64> {
        self.log_pending = writes.into();
        let w = self.log_pending.pop_front();
        w.map(|w| self.issue_log_write(core, w))
            .into_iter()
            .collect()
    }

    /// The next queued log write, if this node may still write: a node
    /// that was paused between two writes may have lost the quorum meanwhile
    /// and must not write again (the caller stops then).
    fn next_log_write(
        &mut self,
        core: &mut Core,
        now: Duration,
    ) -> Result<Option<u64>, LogWriteError> {
        if self.log_pending.is_empty() {
            return Ok(None);
        }
        if !core.arbiter.is_acting_owner(now) {
            return Err(LogWriteError::LeaseExpired);
        }
        Ok(self
            .log_pending
            .pop_front()
            .map(|w| self.issue_log_write(core, w)))
    }

    fn issue_log_write(&mut self, core: &mut Core, w: LogWrite) -> u64 {
        core.issue(
            OpKind::Log,
            DiskOp::Write {
                offset: w.offset,
                data: w.data,
            },
        )
    }

    fn on_log_done(&mut self, core: &mut Core, now: Duration, id: u64, result: DiskResult) {
        let state = std::mem::replace(&mut self.log_state, LogState::Closed);
        match (state, result) {
            (LogState::Reading(op), DiskResult::Data(region)) if op == id => {
                let cfg = core.log_config();
                let opened = match log_manager::open_region(&cfg, &region) {
                    Ok(x) => x,
                    Err(e) => return self.stop(core, format!("quorum log unreadable: {e}")),
                };
                let mut writes = Vec::new();
                let mut db = DbSnapshot::default();
                let log = match opened {
                    Some((log, rec)) => {
                        if let Some((_, cp)) = rec.checkpoint {
                            match serde_json::from_slice::<DbSnapshot>(&cp) {
                                Ok(s) => db = s,
                                Err(e) => {
                                    return self.stop(
                                        core,
                                        format!("quorum log checkpoint unreadable: {e}"),
                                    )
                                }
                            }
                        }
                        if let Some(cut) = rec.cut {
                            tracing::warn!(node = core.me, %cut, "quorum log cut");
                        }
                        db.replay(rec.records.iter().map(|(_, r)| r.as_slice()));
                        log
                    }
                    None => match log_manager::format_and_open(&cfg, &core.cfg.name) {
                        Ok((log, w)) => {
                            writes = w;
                            log
                        }
                        Err(e) => return self.stop(core, format!("quorum log format: {e}")),
                    },
                };
                let mut log = log;
                tracing::info!(node = core.me, seq = db.seq, "quorum log recovered");
                let logged_seq = db.seq;
                if db.seq >= core.db.seq {
                    core.db = db;
                }
                core.pending_apply.clear();
                // Checkpoint whenever this node's database is ahead of what
                // the log replays to: appends continue from `core.db.seq`,
                // and a gap between the log's last change and the next
                // record would end every later replay there.
                if core.db.seq > logged_seq || (core.db.seq > 0 && log.needs_checkpoint()) {
                    let snap = serde_json::to_vec(&core.db).expect("snapshot serializes");
                    match log_manager::checkpoint_all(&mut log, &snap) {
                        Ok(w) => writes.extend(w),
                        Err(e) => return self.stop(core, format!("quorum log checkpoint: {e}")),
                    }
                }
                self.log = Some(log);
                if writes.is_empty() {
                    self.set_log_state(LogState::Ready);
                    core.sync_members();
                } else if core.arbiter.is_acting_owner(now) {
                    let ops = self.issue_log_writes(core, writes);
                    self.set_log_state(LogState::Preparing(ops));
                } else {
                    self.stop(core, "lease expired while recovering the quorum log".into());
                }
            }
            (LogState::Preparing(mut ops), DiskResult::Good) => {
                ops.remove(&id);
                match self.next_log_write(core, now) {
                    Ok(next) => ops.extend(next),
                    Err(LogWriteError::LeaseExpired) => {
                        return self
                            .stop(core, "lease expired while preparing the quorum log".into())
                    }
                }
                if ops.is_empty() {
                    self.set_log_state(LogState::Ready);
                    core.sync_members();
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
                match self.next_log_write(core, now) {
                    Ok(next) => ops.extend(next),
                    Err(LogWriteError::LeaseExpired) => {
                        return self.stop(core, "lease expired while writing the quorum log".into())
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
                core.db
                    .apply(seq, &change)
                    .expect("the locker checked the change before logging it");
                core.actions.push(Action::Durable {
                    origin,
                    id: req,
                    seq,
                    change: change.clone(),
                });
                if origin == core.me {
                    core.actions.push(Action::Committed { id: req, seq });
                }
                for n in core.others() {
                    core.send(
                        n,
                        Body::GumApply {
                            seq,
                            change: change.clone(),
                            origin: Some((origin, req)),
                        },
                    );
                }
            }
            (_, r) => self.stop(core, format!("quorum log I/O failed: {r:?}")),
        }
    }

    fn close_log(&mut self, core: &mut Core) {
        self.close();
        core.ops.retain(|_, k| *k != OpKind::Log);
    }

    fn on_arbiter(&mut self, core: &mut Core, now: Duration, outs: Vec<ArbOut>) {
        for o in outs {
            match o {
                ArbOut::Issue(op) => {
                    core.issue(OpKind::Arbiter, op);
                }
                ArbOut::Won => {
                    tracing::info!(node = core.me, "won the quorum disk");
                    // Whatever this node knew of the log may be stale (it
                    // may have lost and regained the disk): recover it
                    // again once online, and forget writes still out.
                    self.close_log(core);
                }
                ArbOut::Online => self.quorum_online(core, now),
                ArbOut::Lost(why) => {
                    self.stop(core, format!("quorum arbitration: {why}"));
                    return;
                }
            }
        }
    }

    /// The arbiter brought the quorum online here: form or take over as
    /// owner, then recover the quorum log.
    fn quorum_online(&mut self, core: &mut Core, now: Duration) {
        tracing::info!(node = core.me, "quorum online");
        match core.phase.clone() {
            Phase::Forming => {
                let view = View {
                    epoch: core.max_epoch + 1,
                    members: vec![core.me],
                    owner: Some(core.me),
                    paused: vec![],
                };
                self.adopt_view(core, now, view);
            }
            Phase::Member(m) => {
                let mut v = m.view.clone();
                v.owner = Some(core.me);
                self.install_as_owner(core, now, v);
            }
            _ => {}
        }
        self.open_log(core);
    }
}

impl QuorumModel for DiskQuorum {
    fn acting(&self, core: &Core, now: Duration) -> bool {
        core.arbiter.is_acting_owner(now)
    }

    fn acting_until(&self, core: &Core, now: Duration) -> Option<Duration> {
        core.arbiter.acting_until(now)
    }

    fn holds_lock(&self, core: &Core) -> bool {
        core.arbiter.holds()
    }

    fn next_deadlines(&self, core: &Core, now: Duration) -> Vec<Duration> {
        core.arbiter.next_deadline(now).into_iter().collect()
    }

    fn reaches_beyond_view(&self) -> bool {
        false
    }

    fn tells_stale_members(&self, _core: &Core, _now: Duration) -> bool {
        true
    }

    fn admits_only_by_regroup(&self, _core: &Core, _now: Duration) -> bool {
        false
    }

    fn log_ready(&self) -> bool {
        self.is_ready()
    }

    fn owner_db_complete(&self) -> bool {
        self.serves_db()
    }

    fn install_epoch(&self, _core: &Core, above: u64) -> u64 {
        above + 1
    }

    fn owner_may_install(&self, _core: &Core, _now: Duration) -> bool {
        true
    }

    fn tick(&mut self, core: &mut Core, now: Duration) {
        let outs = core.arbiter.tick(now);
        self.on_arbiter(core, now, outs);
    }

    /// Nobody answered: arbitrate for the quorum disk to form the cluster.
    fn form(&mut self, core: &mut Core, now: Duration) {
        tracing::info!(
            node = core.me,
            "no member answered: arbitrating to form the cluster"
        );
        core.phase = Phase::Forming;
        core.hold_writes(true);
        let outs = core.arbiter.become_challenger(now);
        self.on_arbiter(core, now, outs);
    }

    fn heartbeat_due(&mut self, _core: &mut Core, _now: Duration, _view: &View) {}

    /// The view's quorum deadline passed: stop unless this node holds the
    /// quorum disk and is on its way online.
    fn quorum_deadline(&mut self, core: &mut Core, _now: Duration) {
        if !core.arbiter.holds() {
            self.stop(core, "no quorum owner came online after the regroup".into());
            return;
        }
        // We hold the reservation and are on our way online: the
        // arbiter's own timers take over. Left set, the deadline
        // stayed in the past and `next_deadline` asked for a tick at
        // the same instant forever (sim: "asks to be ticked again and
        // again", seed 2536 with the real quorum log).
        if let Phase::Member(mm) = &mut core.phase {
            mm.quorum_deadline = None;
        }
    }

    /// Disk models, as regroup coordinator: install the view of every node
    /// heard, owned by the participant that holds the quorum disk.
    fn end_collection(
        &mut self,
        core: &mut Core,
        now: Duration,
        epoch: u64,
        seen: BTreeMap<NodeId, bool>,
    ) {
        let owner = quorum::disk_owner(&seen);
        let paused = core.paused_among(seen.keys());
        let view = View {
            epoch,
            members: seen.keys().copied().collect(),
            owner,
            paused,
        };
        tracing::info!(node = core.me, epoch, members = ?view.members, ?owner, "regroup installs view");
        core.send_install(seen.keys().copied(), &view, None);
        self.adopt_view(core, now, view);
    }

    /// A newer view that includes this node was installed.
    fn on_install(
        &mut self,
        core: &mut Core,
        now: Duration,
        view: View,
        _replica: Option<(u64, Replica)>,
    ) {
        // Only the owner holds the quorum disk; an install naming another
        // owner while we hold it would mean two owners: keep ours and let
        // arbitration settle it (the other cannot be acting).
        if core.arbiter.holds() && view.owner.is_some_and(|o| o != core.me) {
            self.start_regroup(core, now, view.epoch + 1);
            return;
        }
        self.adopt_view(core, now, view);
    }

    /// Heartbeats carry no votes under the disk models.
    /// A member compares its database with the owner's number of the
    /// owner's previous heartbeat: an update sent before that heartbeat
    /// has had a heartbeat interval to arrive, so still missing it means
    /// its GumApply was lost on every network (UDP), and nothing else
    /// would repair that until the next update. The member then asks for
    /// the database (docs/semantics.md, "Global updates"). Comparing with
    /// the previous heartbeat's number rather than this one keeps updates
    /// still in flight from causing a full sync.
    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(
        &mut self,
        core: &mut Core,
        _now: Duration,
        _net: Net,
        from: NodeId,
        seq: u64,
        epoch: u64,
        db_seq: u64,
    ) {
        if from == core.me || !core.settled_owner_is(from, epoch) {
            // Other members' heartbeats carry their own numbers.
            return;
        }
        match self.owner_db_seq {
            // The same heartbeat on the other network.
            Some((o, s, _)) if o == from && s == seq => return,
            Some((o, _, prev)) if o == from && core.db.seq < prev => {
                tracing::info!(
                    node = core.me,
                    owner = from,
                    have = core.db.seq,
                    owner_had = prev,
                    "missed a global update: asking the owner for the database"
                );
                core.send(from, Body::SyncRequest);
            }
            _ => {}
        }
        self.owner_db_seq = Some((from, seq, db_seq));
    }

    /// A joining node waits to be admitted, or forms by arbitration.
    fn regroup_heard_while_joining(&mut self, _core: &mut Core, _now: Duration) {}

    fn heard_replica(&mut self, _from: NodeId, _replica: Replica) {}

    /// The owner's database, recovered from the log.
    fn take_join_db(&mut self, core: &mut Core, db: DbSnapshot) -> bool {
        core.db = db;
        core.pending_apply.clear();
        true
    }

    /// Every member computes the same view without the owner; its lowest
    /// member arbitrates.
    fn owner_left(&mut self, core: &mut Core, now: Duration, view: &View, owner: NodeId) {
        let mut nv = view.clone();
        nv.members.retain(|&n| n != owner);
        nv.paused.retain(|&n| n != owner);
        nv.owner = None;
        nv.epoch += 1;
        self.adopt_view(core, now, nv);
    }

    /// The locker takes the next queued change: check, log with FUA, then
    /// apply and distribute when the write completes.
    fn pump_gum(&mut self, core: &mut Core, now: Duration) {
        if !self.is_locker(core)
            || !self.is_ready()
            || !core.arbiter.is_acting_owner(now)
            || core.in_regroup()
        {
            return;
        }
        if let Some((origin, id, change)) = core.next_valid_gum() {
            let seq = core.db.seq + 1;
            let Some(log) = self.log.as_mut() else {
                return self.stop(core, "quorum log not open while ready".into());
            };
            let mut writes = Vec::new();
            if log.needs_checkpoint() {
                let snap = serde_json::to_vec(&core.db).expect("snapshot serializes");
                match log_manager::checkpoint_all(log, &snap) {
                    Ok(w) => writes.extend(w),
                    Err(e) => return self.stop(core, format!("quorum log checkpoint: {e}")),
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
                Err(e) => return self.stop(core, format!("quorum log append: {e}")),
            }
            let ops = self.issue_log_writes(core, writes);
            self.set_log_state(LogState::Writing {
                ops,
                seq,
                change,
                origin,
                id,
            });
        }
    }

    fn on_db_sync(&mut self, core: &mut Core, from: NodeId, db: DbSnapshot) {
        let Some(view) = core.view() else {
            return;
        };
        if view.owner != Some(from) || db.seq < core.db.seq {
            return;
        }
        core.db = db;
        core.pending_apply = core.pending_apply.split_off(&(core.db.seq + 1));
        core.apply_pending(from);
    }

    /// A member asks the locker for the database (it missed updates, or
    /// joined a new view).
    fn on_sync_request(&mut self, core: &mut Core, from: NodeId) {
        if self.is_locker(core) && self.serves_db() {
            let db = core.db.clone();
            core.send(from, Body::DbSync { db });
        }
    }

    /// The majority model's votes and replication: a disk-model node
    /// neither sends nor takes part in them.
    fn step(&mut self, _core: &mut Core, _now: Duration, _from: NodeId, _body: Body) {}

    fn disk_done(
        &mut self,
        core: &mut Core,
        now: Duration,
        kind: OpKind,
        id: u64,
        result: DiskResult,
    ) {
        match kind {
            OpKind::Arbiter => {
                let outs = core.arbiter.on_result(now, result);
                self.on_arbiter(core, now, outs);
            }
            OpKind::Log => self.on_log_done(core, now, id, result),
            // The majority model's disks: never issued here.
            OpKind::Release | OpKind::Local | OpKind::Witness => {}
        }
    }

    /// The node's arbiter releases the quorum disk itself.
    fn release(&mut self, _core: &mut Core) {}

    /// A view was adopted: the lowest member of a view without an owner
    /// challenges for the quorum disk, and an owner with its log recovered
    /// sends the members the database.
    fn adopted_view(&mut self, core: &mut Core, now: Duration, view: &View) {
        if quorum::disk_challenges(view, core.me, core.arbiter.is_idle()) {
            tracing::info!(
                node = core.me,
                epoch = view.epoch,
                "view without quorum owner: challenging"
            );
            let outs = core.arbiter.become_challenger(now);
            self.on_arbiter(core, now, outs);
        }
        if view.owner == Some(core.me) && self.serves_db() {
            core.sync_members();
        }
    }

    fn stopped(&mut self, _core: &mut Core) {
        self.close();
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
