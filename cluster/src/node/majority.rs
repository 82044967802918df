//! The `majority` quorum model (Majority Node Set, optional witness disk).
//!
//! # Votes
//!
//! Every node has one vote and the witness disk, if configured, one more;
//! a partition acts only with [`Votes::needed`] of them. The
//! view's owner (its coordinator, the Global Update locker) acts while it
//! holds that many *live* votes: its own, a member's acknowledgement
//! ([`Body::LeaseAck`]) of one of its heartbeats sent less than one lease
//! (`Timing::majority_lease`, half the detection time) ago, and the
//! witness while its [`Arbiter`] acts as the witness's owner.
//!
//! # Why two owners never act at once (the lease)
//!
//! A voter promises: after acknowledging owner A it acknowledges no other
//! owner, and does not count itself as owner, until one lease has passed
//! since its last acknowledgement to A; a process that starts makes the
//! same promise for its previous life (it waits one lease from its start).
//! Suppose A and B both act at instant `x`. Their live vote sets are
//! majorities, so they share a vote. Not the witness: the PR arbiter lets
//! one node act as its owner at a time (see `crate::arbiter`). So a node M
//! acknowledged both, each for a heartbeat sent after `x - lease`, both
//! acknowledgements sent before `x`. Whichever of the two M sent later it
//! sent at least one lease after the earlier, which it sent after `x -
//! lease`: so after `x`. Contradiction. (M = A or B is the same argument
//! with "counts itself" for one of the acknowledgements.) This needs no
//! clock agreement, only clocks that run at about the same rate, and it
//! does not depend on how views were installed: regroup decides who may
//! try, the votes decide who may act.
//!
//! # Where the cluster database lives
//!
//! There is no shared quorum disk. Each node keeps a replica of the
//! quorum log in the usual on-disk format (`crate::quorum_log` via
//! `crate::log_manager`) on [`DiskId::Local`], a file in its data folder.
//! Checkpoints hold a [`ReplicaCheckpoint`] (database, tag, highest epoch
//! seen); records are [`LogEntry`]s with the epoch they were written in.
//!
//! Global update: the acting owner writes change `seq` to its own log with
//! FUA, then sends it ([`Body::Replicate`], naming the replica position it
//! extends, as Raft's AppendEntries does) to every member; a member whose
//! replica is at that position writes it with FUA and acknowledges. The
//! change is durable (`Action::Durable`, `Committed`) once it is in the
//! logs of `(nodes / 2) + 1` nodes. The witness holds no data, so it never
//! counts towards that: a 2-node cluster with a witness keeps running its
//! resources on one node, but commits database changes again only when
//! both nodes are up. (A witness that held a replica, like Windows Server
//! 2008's disk witness, would lift that; it is not done here.)
//!
//! Regroup: each participant sends its replica with its regroup message.
//! The coordinator installs a view only if the participants it heard
//! directly, plus the witness, make a majority of votes; it adopts the
//! greatest replica among them by `(tag, seq)` and sends it with the
//! install, and every member replaces its replica with it (a checkpoint),
//! dropping any uncommitted suffix. Any majority of votes shares a node
//! with any `(nodes / 2) + 1` nodes, so the adopted replica holds every
//! committed change. Installed epochs are unique to their coordinator
//! (`epoch % 32 == node id`) and a node persists the highest epoch it has
//! seen in its checkpoints, so a tag names one writer and equal positions
//! mean equal contents.
//!
//! # Without a majority
//!
//! Nodes that cannot gather a majority hold writes and report no owner,
//! and, as under the disk models, stop their cluster service when no
//! owner came online in time; the service manager (the simulator, the lab)
//! restarts them, and a restarted node asks to join and otherwise forms
//! by regroup with every configured node, so a healed partition settles
//! into one view.

use serde::{Deserialize, Serialize};

use super::quorum::Votes;
use super::*;
use crate::db::{ApplyError, Replica};
use crate::log_manager::{LogError, LogWrite, QuorumLog};

/// Installed epochs are `k * EPOCH_STRIDE + coordinator`: unique per node.
pub(super) const EPOCH_STRIDE: u64 = 32;

/// What a local-log checkpoint holds under the majority model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReplicaCheckpoint {
    tag: u64,
    max_epoch: u64,
    db: DbSnapshot,
}

/// Why a change cannot be added to the local replica.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReplicaError {
    /// The database refuses the change (diverged, or out of sequence).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The local quorum log is not open (not recovered yet, or stopped).
    #[error("local log not open")]
    LogClosed,
    /// The local quorum log cannot take the checkpoint or the record.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What to do once a batch of local-log writes is on the disk.
#[derive(Debug, Clone)]
pub(super) enum LocalDone {
    /// A member logged a replicated change: acknowledge it.
    Ack { owner: NodeId, epoch: u64, seq: u64 },
    /// A checkpoint holding `max_epoch` is on the disk.
    Persisted { max_epoch: u64 },
    /// The owner logged its own change: apply it (unless the replica was
    /// replaced since, by a checkpoint queued after it) and replicate it.
    OwnerEntry {
        epoch: u64,
        seq: u64,
        change: Change,
        generation: u64,
    },
}

/// The owner's change waiting for a majority of node replicas.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    epoch: u64,
    prev: (u64, u64),
    seq: u64,
    change: Change,
    origin: NodeId,
    id: u64,
    /// Set once the owner's own log holds it.
    logged: bool,
    acked: BTreeSet<NodeId>,
}

/// Majority-model state of a node.
#[derive(Debug)]
pub(super) struct Majority {
    pub(super) witness: Option<Arbiter>,
    log: Option<QuorumLog>,
    /// The read of the local log region, while recovering.
    loading: Option<u64>,
    /// The local replica was recovered: the node may take part.
    pub(super) ready: bool,
    queue: VecDeque<(LogWrite, Vec<LocalDone>)>,
    in_flight: Option<(u64, Vec<LocalDone>)>,
    /// Epoch of the change at `db.seq`.
    pub(super) tag: u64,
    /// The last owner this node acknowledged, and when.
    last_ack: Option<(NodeId, Duration)>,
    /// Owner: send time of the latest heartbeat each member acknowledged.
    acks: BTreeMap<NodeId, Duration>,
    /// Owner: recent heartbeats (seq, sent).
    probes: VecDeque<(u64, Duration)>,
    pending: Option<Pending>,
    /// Regroup: replicas of the participants heard directly.
    replicas: BTreeMap<NodeId, Replica>,
    lease: Duration,
    /// Whether the node acted as owner at the last check (for logs).
    acting: bool,
    /// Bumped whenever the replica is replaced wholesale.
    generation: u64,
    /// Owner: the highest change each member acknowledged having on its
    /// disk; members behind the owner get its replica every heartbeat.
    member_seq: BTreeMap<NodeId, u64>,
    /// Member: the highest change taken from (owner, view epoch), so an
    /// older `ReplicaSync` overtaken by later changes is not adopted (sim
    /// seed 8175: a member went back one change and stayed there).
    taken: Option<(NodeId, u64, u64)>,
    /// The highest epoch written in a checkpoint (or entry) on the disk.
    /// A node votes in a view (acknowledges, or counts itself) only once
    /// its epoch is on the disk, so any later majority reports it and the
    /// next coordinator installs above it, even after restarts (sim seed
    /// 18533: two restarted nodes installed a lower epoch than a change
    /// logged before, and a committed change lost the comparison).
    persisted_epoch: u64,
    /// The replica was adopted from, or extended in step with, the
    /// cluster's since this life started: until then it is the copy the
    /// previous life left, and nothing may act on it (issue 16, defect 2:
    /// a restarted node brought a group online from its stale replica).
    synced: bool,
}

/// The next installed epoch above `above` that belongs to node `me`: each
/// node installs only epochs of its own residue modulo [`EPOCH_STRIDE`], so
/// two coordinators never install the same epoch.
pub(super) fn next_epoch(above: u64, me: NodeId) -> u64 {
    (above / EPOCH_STRIDE + 1) * EPOCH_STRIDE + u64::from(me)
}

impl Majority {
    /// Node `me` starting at `now`, with a witness disk or not.
    pub(super) fn new(cfg: &ClusterConfig, me: NodeId, witness: bool, now: Duration) -> Majority {
        Majority {
            witness: witness.then(|| Arbiter::witness(cfg.timing, pr_key(me))),
            log: None,
            loading: None,
            ready: false,
            queue: VecDeque::new(),
            in_flight: None,
            tag: 0,
            // A previous life of this process may have acknowledged an
            // owner up to now: keep its promise.
            last_ack: Some((NodeId::MAX, now)),
            acks: BTreeMap::new(),
            probes: VecDeque::new(),
            pending: None,
            replicas: BTreeMap::new(),
            lease: cfg.timing.majority_lease(),
            acting: false,
            generation: 0,
            member_seq: BTreeMap::new(),
            taken: None,
            persisted_epoch: 0,
            synced: false,
        }
    }

    /// Live votes for `me` as owner of `view` now: its own (once the
    /// view's epoch is on its disk and no other owner's lease binds it),
    /// each member that acknowledged a heartbeat sent less than one lease
    /// ago, and the witness while its arbiter acts as owner.
    fn votes(&self, me: NodeId, view: &View, now: Duration) -> usize {
        let mut votes =
            usize::from(self.may_vote_for(me, now) && self.persisted_epoch >= view.epoch);
        votes += view
            .members
            .iter()
            .filter(|&&n| n != me)
            .filter(|n| self.acks.get(n).is_some_and(|&t| now < t + self.lease))
            .count();
        if self
            .witness
            .as_ref()
            .is_some_and(|w| w.is_acting_owner(now))
        {
            votes += 1;
        }
        votes
    }

    /// Whether this node may vote for (acknowledge, or be) `owner` now.
    fn may_vote_for(&self, owner: NodeId, now: Duration) -> bool {
        match self.last_ack {
            None => true,
            Some((o, t)) => o == owner || now >= t + self.lease,
        }
    }

    /// A settled owner that lacks only its own vote, for its view's epoch
    /// is not on its disk yet (queued or in flight), and would act with it.
    fn acts_once_epoch_persisted(&self, core: &Core, now: Duration) -> bool {
        let Phase::Member(ms) = &core.phase else {
            return false;
        };
        let me = core.me;
        if ms.regroup.is_some() || ms.view.owner != Some(me) || !self.ready {
            return false;
        }
        let waiting_for_disk = self.persisted_epoch < ms.view.epoch;
        let own = usize::from(waiting_for_disk && self.may_vote_for(me, now));
        own == 1 && Votes::of(&core.cfg).has_quorum(self.votes(me, &ms.view, now) + own)
    }

    /// Live votes for this node as owner now.
    fn live_votes(&self, core: &Core, now: Duration) -> usize {
        core.view().map_or(0, |view| self.votes(core.me, view, now))
    }

    /// The owner holds the witness; anyone else lets it go.
    fn witness_duty(&mut self, core: &mut Core, now: Duration) {
        let me = core.me;
        let owner = matches!(&core.phase, Phase::Member(ms) if ms.view.owner == Some(me));
        let regrouping = core.in_regroup();
        let Some(w) = self.witness.as_mut() else {
            return;
        };
        if owner && !regrouping && w.is_idle() {
            tracing::info!(node = me, "owner arbitrates for the witness disk");
            let outs = w.become_challenger(now);
            self.on_witness(core, now, outs);
        } else if !owner && !regrouping && !w.is_idle() {
            let op = w.release();
            let w = Arbiter::witness(core.cfg.timing, pr_key(core.me));
            self.witness = Some(w);
            if let Some(op) = op {
                tracing::info!(node = core.me, "not the owner: releasing the witness disk");
                core.issue_on(OpKind::Release, DiskId::Witness, op);
            }
        }
    }

    fn on_witness(&mut self, core: &mut Core, now: Duration, outs: Vec<ArbOut>) {
        for o in outs {
            match o {
                ArbOut::Issue(op) => {
                    core.issue_on(OpKind::Witness, DiskId::Witness, op);
                }
                ArbOut::Won => tracing::info!(node = core.me, "won the witness disk"),
                ArbOut::Online => {
                    tracing::info!(node = core.me, "witness disk online: its vote counts here")
                }
                ArbOut::Lost(why) => {
                    tracing::warn!(node = core.me, %why, "witness arbitration lost: no witness vote");
                    self.witness = Some(Arbiter::witness(core.cfg.timing, pr_key(core.me)));
                }
            }
        }
        self.update(core, now);
    }

    /// Logs gaining and losing the majority, and holds the owner's writes
    /// while it has none.
    fn update(&mut self, core: &mut Core, now: Duration) {
        if core.is_stopped() {
            return;
        }
        let acting = self.acting(core, now);
        let was = self.acting;
        if acting != was {
            self.acting = acting;
            let votes = self.live_votes(core, now);
            let need = Votes::of(&core.cfg).needed();
            if acting {
                tracing::info!(
                    node = core.me,
                    votes,
                    need,
                    "gained a majority: acting as owner"
                );
            } else {
                tracing::warn!(
                    node = core.me,
                    votes,
                    need,
                    "lost the majority: holding writes"
                );
            }
        }
        let settled_owner = matches!(&core.phase,
            Phase::Member(ms) if ms.regroup.is_none() && ms.view.owner == Some(core.me));
        if settled_owner {
            core.hold_writes(!acting);
            let deadline = now + self.quorum_timeout(core);
            if let Phase::Member(ms) = &mut core.phase {
                if acting {
                    ms.quorum_deadline = None;
                } else if ms.quorum_deadline.is_none() {
                    // An owner that lost its majority gets as long as
                    // after a regroup to win it back, then stops.
                    ms.quorum_deadline = Some(deadline);
                }
            }
        }
    }

    fn quorum_timeout(&self, core: &Core) -> Duration {
        let t = core.cfg.timing;
        t.challenge_wait * 3 + t.heartbeat * 20
    }

    /// A view of this node alone, without an owner: the starting point of
    /// a regroup that forms the cluster.
    fn enter_pseudo_view(&mut self, core: &mut Core, now: Duration) {
        // Epoch 0: any regroup is newer, so this node joins whichever it
        // hears.
        let view = View {
            epoch: 0,
            members: vec![core.me],
            owner: None,
            paused: vec![],
        };
        core.detector.watch_only(Vec::new(), now);
        core.phase = Phase::Member(Membership {
            view,
            regroup: None,
            quorum_deadline: Some(now + self.quorum_timeout(core)),
        });
        core.hold_writes(true);
    }

    /// A regroup ended without a majority: no owner here.
    fn no_quorum(&mut self, core: &mut Core, now: Duration) {
        let deadline = now + self.quorum_timeout(core);
        if let Phase::Member(ms) = &mut core.phase {
            ms.regroup = None;
            ms.view.owner = None;
            if ms.quorum_deadline.is_none() {
                ms.quorum_deadline = Some(deadline);
            }
        }
        core.hold_writes(true);
        self.pending = None;
        self.acks.clear();
        self.update(core, now);
    }

    /// Replaces this node's replica with `r` if it differs, and persists
    /// it as a checkpoint; `done` runs once the replica is on the disk.
    fn adopt_replica(&mut self, core: &mut Core, r: Replica, done: Option<LocalDone>) {
        if !self.ready {
            return;
        }
        self.synced = true;
        if r.tag == self.tag && r.db == core.db {
            self.queue_writes(core, Vec::new(), done);
            return;
        }
        tracing::info!(
            node = core.me,
            from = ?(self.tag, core.db.seq),
            to = ?r.position(),
            "replica replaced by the owner's"
        );
        core.db = r.db;
        self.tag = r.tag;
        self.generation += 1;
        core.pending_apply.clear();
        self.persist_snapshot(core, done);
    }

    /// Puts `max_epoch` on the disk (a checkpoint) if it is not yet.
    fn persist_epoch(&mut self, core: &mut Core) {
        let covers = |ds: &Vec<LocalDone>| {
            ds.iter().any(
                |d| matches!(d, LocalDone::Persisted { max_epoch } if *max_epoch >= core.max_epoch),
            )
        };
        let queued = self.queue.iter().any(|(_, ds)| covers(ds))
            || self.in_flight.as_ref().is_some_and(|(_, ds)| covers(ds));
        if self.ready && self.persisted_epoch < core.max_epoch && !queued {
            self.persist_snapshot(core, None);
        }
    }

    // ----- local log -----------------------------------------------------

    fn persist_snapshot(&mut self, core: &mut Core, done: Option<LocalDone>) {
        let max_epoch = core.max_epoch;
        let cp = ReplicaCheckpoint {
            tag: self.tag,
            max_epoch: core.max_epoch,
            db: core.db.clone(),
        };
        let snap = serde_json::to_vec(&cp).expect("checkpoint serializes");
        let Some(log) = self.log.as_mut() else {
            return;
        };
        match log_manager::checkpoint_all(log, &snap) {
            Ok(w) => {
                self.queue_writes(core, w, Some(LocalDone::Persisted { max_epoch }));
                self.queue_writes(core, Vec::new(), done);
            }
            Err(e) => self.stop(core, format!("local quorum log checkpoint: {e}")),
        }
    }

    /// Logs change `seq` of `epoch` (checkpointing first if the log is
    /// full); `done` runs once it is on the disk. A member applies it at
    /// once (its in-memory replica is its log as queued); the owner only
    /// when it is on its disk, so its replica never leaves the node (in a
    /// regroup or a sync) before its own log holds it.
    fn log_change(
        &mut self,
        core: &mut Core,
        seq: u64,
        epoch: u64,
        change: &Change,
        done: LocalDone,
    ) -> Result<(), ReplicaError> {
        let apply_now = matches!(done, LocalDone::Ack { .. });
        core.db.check(change)?;
        let mut writes = Vec::new();
        let cp = ReplicaCheckpoint {
            tag: self.tag,
            max_epoch: core.max_epoch,
            db: core.db.clone(),
        };
        let payload = serde_json::to_vec(&LogEntry {
            seq,
            change: change.clone(),
            epoch,
        })
        .expect("entries serialize");
        let log = self.log.as_mut().ok_or(ReplicaError::LogClosed)?;
        if log.needs_checkpoint() {
            let snap = serde_json::to_vec(&cp).expect("checkpoint serializes");
            writes.extend(log_manager::checkpoint_all(log, &snap)?);
        }
        writes.extend(log.append(&payload)?.1);
        if apply_now {
            core.db.apply(seq, change)?;
            self.tag = epoch;
        }
        self.queue_writes(core, writes, Some(done));
        Ok(())
    }

    fn queue_writes(&mut self, core: &mut Core, writes: Vec<LogWrite>, done: Option<LocalDone>) {
        let n = writes.len();
        for (i, w) in writes.into_iter().enumerate() {
            let d = if i + 1 == n { done.clone() } else { None };
            self.queue.push_back((w, d.into_iter().collect()));
        }
        if n == 0 {
            if let Some(d) = done {
                // Nothing new to write: done once what is queued is.
                if let Some((_, ds)) = self.queue.back_mut() {
                    ds.push(d);
                } else if let Some((_, ds)) = self.in_flight.as_mut() {
                    ds.push(d);
                } else {
                    self.local_done(core, d);
                }
            }
        }
        self.pump_local(core);
    }

    /// Local writes go out one at a time, in order (the log's crash
    /// safety relies on it).
    fn pump_local(&mut self, core: &mut Core) {
        if self.in_flight.is_some() {
            return;
        }
        let Some((w, done)) = self.queue.pop_front() else {
            return;
        };
        let id = core.issue_on(
            OpKind::Local,
            DiskId::Local,
            DiskOp::Write {
                offset: w.offset,
                data: w.data,
            },
        );
        self.in_flight = Some((id, done));
    }

    fn on_local_done(&mut self, core: &mut Core, now: Duration, id: u64, result: DiskResult) {
        if self.loading == Some(id) {
            self.loading = None;
            match result {
                DiskResult::Data(region) => self.recover(core, &region),
                r => self.stop(core, format!("local quorum log unreadable: {r:?}")),
            }
            return;
        }
        let Some((op, done)) = self.in_flight.take() else {
            return;
        };
        if op != id {
            self.in_flight = Some((op, done));
            return;
        }
        if result != DiskResult::Good {
            return self.stop(core, format!("local quorum log write failed: {result:?}"));
        }
        for d in done {
            self.local_done(core, d);
        }
        self.pump_local(core);
        self.pump_gum(core, now);
    }

    fn recover(&mut self, core: &mut Core, region: &[u8]) {
        let cfg = core.log_config();
        let opened = match log_manager::open_region(&cfg, region) {
            Ok(x) => x,
            Err(e) => return self.stop(core, format!("local quorum log unreadable: {e}")),
        };
        let mut db = DbSnapshot::default();
        let mut tag = 0;
        let mut max_epoch = 0;
        let mut writes = Vec::new();
        let log = match opened {
            Some((log, rec)) => {
                if let Some((_, cp)) = rec.checkpoint {
                    match serde_json::from_slice::<ReplicaCheckpoint>(&cp) {
                        Ok(c) => {
                            db = c.db;
                            tag = c.tag;
                            max_epoch = c.max_epoch;
                        }
                        Err(e) => {
                            return self
                                .stop(core, format!("local quorum log checkpoint unreadable: {e}"))
                        }
                    }
                }
                if let Some(cut) = rec.cut {
                    tracing::warn!(node = core.me, %cut, "local quorum log cut");
                }
                if let Some(epoch) = db.replay(rec.records.iter().map(|(_, r)| r.as_slice())) {
                    tag = epoch;
                }
                log
            }
            None => match log_manager::format_and_open(&cfg, &core.cfg.name) {
                Ok((log, w)) => {
                    writes = w;
                    log
                }
                Err(e) => return self.stop(core, format!("local quorum log format: {e}")),
            },
        };
        tracing::info!(
            node = core.me,
            tag,
            seq = db.seq,
            max_epoch,
            "local replica recovered"
        );
        core.db = db;
        core.max_epoch = core.max_epoch.max(max_epoch).max(tag);
        self.tag = tag;
        self.log = Some(log);
        self.ready = true;
        self.persisted_epoch = max_epoch.max(tag);
        self.queue_writes(core, writes, None);
    }

    fn local_done(&mut self, core: &mut Core, done: LocalDone) {
        match done {
            LocalDone::Persisted { max_epoch } => {
                self.persisted_epoch = self.persisted_epoch.max(max_epoch);
            }
            LocalDone::Ack { owner, epoch, seq } => {
                core.send(owner, Body::ReplicateAck { epoch, seq });
            }
            LocalDone::OwnerEntry {
                epoch,
                seq,
                change,
                generation,
            } => {
                if generation != self.generation {
                    return;
                }
                if let Err(e) = core.db.apply(seq, &change) {
                    return self.stop(core, format!("own logged change does not apply: {e}"));
                }
                self.tag = epoch;
                let me = core.me;
                let Some(p) = self.pending.as_mut() else {
                    return;
                };
                if p.epoch != epoch || p.seq != seq {
                    return;
                }
                p.logged = true;
                p.acked.insert(me);
                self.replicate_pending(core, None);
                self.check_commit(core);
            }
        }
    }

    // ----- lease -----------------------------------------------------------

    /// The owner sent heartbeat `seq` at `now`.
    fn probe_sent(&mut self, seq: u64, now: Duration) {
        self.probes.push_back((seq, now));
        while self.probes.len() > 64 {
            self.probes.pop_front();
        }
    }

    fn on_lease_ack(&mut self, core: &mut Core, now: Duration, from: NodeId, seq: u64) {
        let owner = core.view().is_some_and(|v| v.owner == Some(core.me));
        if !owner {
            return;
        }
        let Some(&(_, sent)) = self.probes.iter().find(|(s, _)| *s == seq) else {
            return;
        };
        let e = self.acks.entry(from).or_insert(sent);
        *e = (*e).max(sent);
        self.update(core, now);
    }

    /// Sends the pending change to the members that have not acknowledged
    /// it (all of them, or just `to`).
    fn replicate_pending(&mut self, core: &mut Core, to: Option<NodeId>) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        if !p.logged {
            return;
        }
        let targets: Vec<NodeId> = match to {
            Some(n) => vec![n],
            None => core.others(),
        };
        for n in targets {
            if p.acked.contains(&n) {
                continue;
            }
            core.send(
                n,
                Body::Replicate {
                    epoch: p.epoch,
                    prev: p.prev,
                    seq: p.seq,
                    change: p.change.clone(),
                    origin: Some((p.origin, p.id)),
                },
            );
        }
    }

    /// Every heartbeat: resends the pending change, and the owner's
    /// replica to members that have not acknowledged being up to date.
    fn resend(&mut self, core: &mut Core) {
        self.replicate_pending(core, None);
        if !self.ready {
            return;
        }
        let Some(epoch) = core.view().map(|v| v.epoch) else {
            return;
        };
        let behind: Vec<NodeId> = core
            .others()
            .into_iter()
            .filter(|n| !matches!(self.member_seq.get(n), Some(&s) if s >= core.db.seq))
            .filter(|n| {
                // The pending change's own resend covers a member that
                // only lacks that one.
                !matches!(&self.pending, Some(p) if p.logged && !p.acked.contains(n))
            })
            .collect();
        let replica = Replica {
            tag: self.tag,
            db: core.db.clone(),
            max_epoch: core.max_epoch,
        };
        for n in behind {
            core.send(
                n,
                Body::ReplicaSync {
                    epoch,
                    replica: replica.clone(),
                },
            );
        }
    }

    fn on_replicate_ack(
        &mut self,
        core: &mut Core,
        now: Duration,
        from: NodeId,
        epoch: u64,
        seq: u64,
    ) {
        let current = matches!(&core.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(core.me) && epoch <= ms.view.epoch);
        if current {
            let e = self.member_seq.entry(from).or_insert(seq);
            *e = (*e).max(seq);
        }
        if let Some(p) = self.pending.as_mut() {
            if p.epoch == epoch && p.seq == seq {
                p.acked.insert(from);
            }
        }
        self.check_commit(core);
        self.pump_gum(core, now);
    }

    /// Durable once on `(nodes / 2) + 1` node replicas.
    fn check_commit(&mut self, core: &mut Core) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        // The owner may have installed newer views of its own since (joins,
        // evictions); a regroup would have dropped the pending change.
        let owner_now = matches!(&core.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(core.me));
        if !p.logged || !Votes::of(&core.cfg).is_committed(p.acked.len()) || !owner_now {
            return;
        }
        self.pending = None;
        tracing::debug!(
            node = core.me,
            seq = p.seq,
            replicas = p.acked.len(),
            "change committed"
        );
        core.actions.push(Action::Durable {
            origin: p.origin,
            id: p.id,
            seq: p.seq,
            change: p.change,
        });
        if p.origin == core.me {
            core.actions.push(Action::Committed {
                id: p.id,
                seq: p.seq,
            });
        } else {
            core.send(
                p.origin,
                Body::GumCommitted {
                    id: p.id,
                    seq: p.seq,
                },
            );
        }
    }

    /// Whether `from` is our settled owner at `epoch`.
    fn is_from_owner(&self, core: &Core, from: NodeId, epoch: u64) -> bool {
        core.settled_owner_is(from, epoch) && self.ready
    }

    fn on_replicate(
        &mut self,
        core: &mut Core,
        from: NodeId,
        epoch: u64,
        prev: (u64, u64),
        seq: u64,
        change: Change,
    ) {
        // `epoch` is the change's: the owner may have installed newer views
        // of its own (joins) since it logged it.
        let ours = matches!(&core.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(from) && epoch <= ms.view.epoch);
        if !ours || !self.ready {
            return;
        }
        let here = (self.tag, core.db.seq);
        if here == (epoch, seq) {
            // Equal positions are equal contents (module documentation).
            self.synced = true;
            // A resend of what we hold: acknowledge again if it is on the
            // disk (otherwise the pending write acknowledges it).
            if self.queue.is_empty() && self.in_flight.is_none() {
                core.send(from, Body::ReplicateAck { epoch, seq });
            }
            return;
        }
        if here != prev {
            core.send(from, Body::SyncRequest);
            return;
        }
        let done = LocalDone::Ack {
            owner: from,
            epoch,
            seq,
        };
        let view_epoch = core.view().map_or(0, |v| v.epoch);
        self.taken = Some((from, view_epoch, seq));
        match self.log_change(core, seq, epoch, &change, done) {
            // The replica was at the owner's position: it is the cluster's.
            Ok(()) => self.synced = true,
            Err(e) => {
                tracing::warn!(node = core.me, seq, error = %e, "cannot take a replicated change: asking for the owner's replica");
                core.send(from, Body::SyncRequest);
            }
        }
    }

    fn on_replica_sync(&mut self, core: &mut Core, from: NodeId, epoch: u64, replica: Replica) {
        if !self.is_from_owner(core, from, epoch) {
            return;
        }
        let seq = replica.db.seq;
        if matches!(self.taken, Some((o, e, s)) if o == from && e == epoch && s > seq) {
            return;
        }
        self.taken = Some((from, epoch, seq));
        let done = LocalDone::Ack {
            owner: from,
            epoch,
            seq,
        };
        self.adopt_replica(core, replica, Some(done));
    }
}

impl QuorumModel for Majority {
    /// Acts as owner: settled owner of the view with a majority of live
    /// votes and a recovered replica.
    fn acting(&self, core: &Core, now: Duration) -> bool {
        match &core.phase {
            Phase::Member(ms) if ms.regroup.is_none() && ms.view.owner == Some(core.me) => {
                self.ready && Votes::of(&core.cfg).has_quorum(self.live_votes(core, now))
            }
            _ => false,
        }
    }

    /// The instant the live votes fall below a majority with no new
    /// acknowledgement: each member's acknowledgement counts for one lease
    /// (`votes`), the witness until its arbiter's lease ends, and this
    /// node's own vote does not expire.
    fn acting_until(&self, core: &Core, now: Duration) -> Option<Duration> {
        if !self.acting(core, now) {
            return None;
        }
        let view = core.view()?;
        let me = core.me;
        let mut ends: Vec<Duration> = Vec::new();
        if self.may_vote_for(me, now) && self.persisted_epoch >= view.epoch {
            ends.push(Duration::MAX);
        }
        ends.extend(
            view.members
                .iter()
                .filter(|&&n| n != me)
                .filter_map(|n| self.acks.get(n))
                .map(|&t| t + self.lease)
                .filter(|&end| now < end),
        );
        if let Some(end) = self.witness.as_ref().and_then(|w| w.acting_until(now)) {
            ends.push(end);
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends.get(Votes::of(&core.cfg).needed() - 1).copied()
    }

    fn holds_lock(&self, _core: &Core) -> bool {
        self.ready
    }

    fn db_current(&self) -> bool {
        self.synced
    }

    fn awaits_replica(&self) -> bool {
        !self.ready
    }

    /// Deadlines of the majority model: vote expiry, promise expiry, the
    /// witness arbiter.
    fn next_deadlines(&self, _core: &Core, now: Duration) -> Vec<Duration> {
        let mut d: Vec<Duration> = self
            .acks
            .values()
            .map(|&t| t + self.lease)
            .filter(|&t| t > now)
            .collect();
        if let Some((_, t)) = self.last_ack {
            if t + self.lease > now {
                d.push(t + self.lease);
            }
        }
        if let Some(w) = &self.witness {
            d.extend(w.next_deadline(now));
        }
        d
    }

    /// A majority may lie outside the old view (forming, healing).
    fn reaches_beyond_view(&self) -> bool {
        true
    }

    fn tells_stale_members(&self, core: &Core, now: Duration) -> bool {
        self.is_acting_owner(core, now)
    }

    /// An owner without a majority regroups with every node, the joiner
    /// included (it takes part from Joining). An owner whose only missing
    /// vote is its own, waiting for its view's epoch to reach its disk (it
    /// has just admitted a joiner), is not without one: it answers busy.
    /// Otherwise the joiner's request on the second network, right behind
    /// the first, started a regroup the joiner (the lowest node) then
    /// coordinated and owned, and its Failover Manager never saw it join
    /// (issue 22; `a_restarted_node_rejoins_under_the_owner_that_took_over`
    /// in `tests/sim.rs`).
    fn admits_only_by_regroup(&self, core: &Core, now: Duration) -> bool {
        !self.is_acting_owner(core, now) && !self.acts_once_epoch_persisted(core, now)
    }

    fn log_ready(&self) -> bool {
        true
    }

    fn install_epoch(&self, core: &Core, above: u64) -> u64 {
        next_epoch(above, core.me)
    }

    fn owner_may_install(&self, core: &Core, now: Duration) -> bool {
        self.is_acting_owner(core, now)
    }

    /// This node's replica, for regroup messages.
    fn replica(&self, core: &Core) -> Option<Replica> {
        self.ready.then(|| Replica {
            tag: self.tag,
            db: core.db.clone(),
            max_epoch: core.max_epoch,
        })
    }

    fn tick(&mut self, core: &mut Core, now: Duration) {
        if !self.ready && self.loading.is_none() {
            let cfg = core.log_config();
            let op = core.issue_on(
                OpKind::Local,
                DiskId::Local,
                DiskOp::Read {
                    offset: cfg.region_offset,
                    len: cfg.region_len as usize,
                },
            );
            self.loading = Some(op);
        }
        let outs = match &mut self.witness {
            Some(w) => w.tick(now),
            None => vec![],
        };
        self.on_witness(core, now, outs);
        self.witness_duty(core, now);
        self.update(core, now);
    }

    /// Nobody admitted us: regroup with every configured node.
    fn form(&mut self, core: &mut Core, now: Duration) {
        tracing::info!(
            node = core.me,
            "no member answered: regrouping with every node to form a majority"
        );
        self.enter_pseudo_view(core, now);
        self.start_regroup(core, now, core.max_epoch + 1);
    }

    /// The owner's heartbeats are its requests for votes; it resends what
    /// members lack with them.
    fn heartbeat_due(&mut self, core: &mut Core, now: Duration, view: &View) {
        if view.owner == Some(core.me) {
            self.probe_sent(core.hb_seq, now);
            self.resend(core);
        }
    }

    /// Majority: the quorum deadline passed.
    fn quorum_deadline(&mut self, core: &mut Core, now: Duration) {
        let Phase::Member(ms) = &core.phase else {
            return;
        };
        match ms.view.owner {
            Some(o) if o != core.me => {}
            Some(_) if self.acting(core, now) => {}
            _ => {
                let votes = self.live_votes(core, now);
                let need = Votes::of(&core.cfg).needed();
                return self.stop(
                    core,
                    format!("no majority: {votes} of {need} votes after the regroup"),
                );
            }
        }
        if let Phase::Member(ms) = &mut core.phase {
            ms.quorum_deadline = None;
        }
    }

    /// The coordinator's end of collection under the majority model.
    fn end_collection(
        &mut self,
        core: &mut Core,
        now: Duration,
        epoch: u64,
        seen: BTreeMap<NodeId, bool>,
    ) {
        let mut direct = self.replicas.clone();
        if let Some(r) = self.replica(core) {
            direct.insert(core.me, r);
        }
        let need = Votes::of(&core.cfg).needed();
        let nodes = direct.len();
        let witness = self.witness.is_some();
        let holds_witness = self
            .witness
            .as_ref()
            .is_some_and(|w| w.is_acting_owner(now));
        let votes = nodes + usize::from(witness);
        if !self.ready || votes < need {
            tracing::warn!(
                node = core.me,
                epoch,
                heard = ?direct.keys().collect::<Vec<_>>(),
                votes = nodes + usize::from(holds_witness),
                need,
                "regroup without a majority: no view installed"
            );
            self.no_quorum(core, now);
            return;
        }
        let best = direct
            .values()
            .max_by_key(|r| r.position())
            .cloned()
            .expect("self is a participant");
        let top_tag = direct
            .values()
            .map(|r| r.tag.max(r.max_epoch))
            .max()
            .unwrap_or(0);
        let above = epoch.max(core.max_epoch).max(top_tag);
        let rg_epoch = epoch;
        let epoch = next_epoch(above, core.me);
        let paused = core.paused_among(seen.keys());
        let view = View {
            epoch,
            members: seen.keys().copied().collect(),
            owner: Some(core.me),
            paused,
        };
        tracing::info!(
            node = core.me,
            epoch,
            members = ?view.members,
            node_votes = nodes,
            need,
            adopted = ?best.position(),
            "regroup installs view as owner (majority)"
        );
        core.send_install(seen.keys().copied(), &view, Some((rg_epoch, best.clone())));
        core.max_epoch = core.max_epoch.max(epoch);
        self.adopt_replica(core, best, None);
        self.adopt_view(core, now, view);
        let deadline = now + self.quorum_timeout(core);
        if let Phase::Member(ms) = &mut core.phase {
            ms.quorum_deadline = Some(deadline);
        }
        self.witness_duty(core, now);
        self.update(core, now);
    }

    /// A newer view that includes this node was installed, with the
    /// coordinator's chosen replica if a regroup installed it.
    fn on_install(
        &mut self,
        core: &mut Core,
        now: Duration,
        view: View,
        replica: Option<(u64, Replica)>,
    ) {
        // A regroup's install counts only for who is still in that
        // regroup: the coordinator compared the replicas reported in
        // it, and a node that has moved on since (and maybe logged
        // changes committed elsewhere) must not take an older replica
        // (sim seed 947: a resumed node coordinated with stale regroup
        // messages).
        if let Some((rg_epoch, r)) = replica {
            let in_it = matches!(&core.phase, Phase::Member(m)
                if m.regroup.as_ref().is_some_and(|rg| rg.epoch == rg_epoch));
            if !in_it {
                return;
            }
            self.adopt_replica(core, r, None);
        }
        self.adopt_view(core, now, view);
    }

    /// A heartbeat from `from`: acknowledge it if `from` is our owner.
    fn on_heartbeat(
        &mut self,
        core: &mut Core,
        now: Duration,
        net: Net,
        from: NodeId,
        seq: u64,
        epoch: u64,
        _db_seq: u64,
    ) {
        if !self.synced && self.ready && core.settled_owner_is(from, epoch) {
            // The owner's ReplicaSync for our join did not come (lost, or
            // sent before it installed the view): ask again.
            core.send(from, Body::SyncRequest);
        }
        if !core.settled_owner_is(from, epoch) || !self.ready || !self.may_vote_for(from, now) {
            return;
        }
        if self.persisted_epoch < epoch {
            // Vote in this view only once its epoch is on our disk.
            self.persist_epoch(core);
            return;
        }
        self.last_ack = Some((from, now));
        core.send_on(from, net, Body::LeaseAck { epoch, seq });
    }

    /// Nodes form together, by regroup: a node still asking to join takes
    /// part.
    fn regroup_heard_while_joining(&mut self, core: &mut Core, now: Duration) {
        if self.ready {
            self.enter_pseudo_view(core, now);
        }
    }

    fn heard_replica(&mut self, from: NodeId, r: Replica) {
        self.replicas.insert(from, r);
    }

    /// The owner sends its tagged replica on our SyncRequest, which needs
    /// our own replica recovered first.
    fn take_join_db(&mut self, _core: &mut Core, _db: DbSnapshot) -> bool {
        self.ready
    }

    /// The locker left: regroup for a new one.
    fn owner_left(&mut self, core: &mut Core, now: Duration, view: &View, _owner: NodeId) {
        self.start_regroup(core, now, view.epoch.max(core.max_epoch) + 1);
    }

    fn pump_gum(&mut self, core: &mut Core, now: Duration) {
        if core.is_stopped() || self.pending.is_some() || !self.acting(core, now) {
            return;
        }
        // One change at a time: the next waits until this one is durable.
        if let Some((origin, id, change)) = core.next_valid_gum() {
            let epoch = core.view().map_or(0, |v| v.epoch);
            let prev = (self.tag, core.db.seq);
            let seq = core.db.seq + 1;
            self.pending = Some(Pending {
                epoch,
                prev,
                seq,
                change: change.clone(),
                origin,
                id,
                logged: false,
                acked: BTreeSet::new(),
            });
            let done = LocalDone::OwnerEntry {
                epoch,
                seq,
                change: change.clone(),
                generation: self.generation,
            };
            if let Err(e) = self.log_change(core, seq, epoch, &change, done) {
                self.stop(core, format!("local quorum log append: {e}"));
            }
        }
    }

    /// Members take the owner's tagged replica instead.
    fn on_db_sync(&mut self, _core: &mut Core, _from: NodeId, _db: DbSnapshot) {}

    fn on_sync_request(&mut self, core: &mut Core, from: NodeId) {
        let owner = matches!(&core.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(core.me) && ms.view.contains(from));
        if !owner || !self.ready {
            return;
        }
        let epoch = core.view().map_or(0, |v| v.epoch);
        // The owner's replica as it is on its disk (a pending change is
        // applied only once logged here).
        let replica = Replica {
            tag: self.tag,
            db: core.db.clone(),
            max_epoch: core.max_epoch,
        };
        core.send(from, Body::ReplicaSync { epoch, replica });
        self.replicate_pending(core, Some(from));
    }

    /// A message of the majority model's votes and replication arrived
    /// from `from`; the other bodies are the common protocol's.
    fn step(&mut self, core: &mut Core, now: Duration, from: NodeId, body: Body) {
        match body {
            Body::LeaseAck { seq, .. } => self.on_lease_ack(core, now, from, seq),
            Body::Replicate {
                epoch,
                prev,
                seq,
                change,
                ..
            } => self.on_replicate(core, from, epoch, prev, seq, change),
            Body::ReplicateAck { epoch, seq } => self.on_replicate_ack(core, now, from, epoch, seq),
            Body::ReplicaSync { epoch, replica } => {
                self.on_replica_sync(core, from, epoch, replica)
            }
            _ => {}
        }
    }

    fn disk_done(
        &mut self,
        core: &mut Core,
        now: Duration,
        kind: OpKind,
        id: u64,
        result: DiskResult,
    ) {
        match kind {
            OpKind::Local => self.on_local_done(core, now, id, result),
            OpKind::Witness => {
                let outs = match self.witness.as_mut() {
                    Some(w) => w.on_result(now, result),
                    None => vec![],
                };
                self.on_witness(core, now, outs);
            }
            // The disk models' operations: never issued here.
            OpKind::Arbiter | OpKind::Log | OpKind::Release => {}
        }
    }

    fn release(&mut self, core: &mut Core) {
        if let Some(op) = self.witness.as_mut().and_then(|w| w.release()) {
            core.issue_on(OpKind::Release, DiskId::Witness, op);
        }
    }

    /// Regroup starts: the owner's change in progress is abandoned (it is
    /// not durable; the regroup decides whether it survives).
    fn regroup_started(&mut self) {
        self.pending = None;
        self.replicas.clear();
        self.acks.clear();
        self.member_seq.clear();
    }

    fn adopted_view(&mut self, core: &mut Core, now: Duration, _view: &View) {
        self.persist_epoch(core);
        self.update(core, now);
    }

    fn stopped(&mut self, core: &mut Core) {
        if self.witness.is_some() {
            self.witness = Some(Arbiter::witness(core.cfg.timing, pr_key(core.me)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn cfg(nodes: usize) -> ClusterConfig {
        let mut s = String::from(
            "name = \"T\"\nsecret = \"0123456789abcdef\"\nquorum-log-limit = 65536\n\
             [quorum]\nmodel = \"majority\"\n",
        );
        for i in 0..nodes {
            s += &format!(
                "[[node]]\nname = \"N{i}\"\nprivate = \"127.0.0.1:{}\"\npublic = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                7000 + i,
                7100 + i,
                7200 + i
            );
        }
        ClusterConfig::from_toml(&s).expect("test cluster file parses")
    }

    #[test]
    fn next_epoch_is_above_and_of_the_nodes_own_residue() {
        for me in [0, 1, 5] {
            for above in [0, 1, 31, 32, 33, 100] {
                let e = next_epoch(above, me);
                assert!(e > above, "{e} > {above}");
                assert_eq!(e % EPOCH_STRIDE, u64::from(me));
                assert!(e - above <= EPOCH_STRIDE + u64::from(me));
            }
        }
    }

    #[test]
    fn votes_count_self_only_with_the_epoch_on_disk_and_members_within_the_lease() {
        let cfg = cfg(3);
        let mut m = Majority::new(&cfg, 0, false, Duration::ZERO);
        let view = View {
            epoch: 33,
            members: vec![0, 1, 2],
            owner: Some(0),
            paused: vec![],
        };
        let lease = m.lease;
        // A new process keeps its previous life's promise for one lease,
        // and counts itself only once the view's epoch is on its disk.
        m.persisted_epoch = 33;
        assert_eq!(m.votes(0, &view, lease / 2), 0);
        assert_eq!(m.votes(0, &view, lease), 1);
        m.persisted_epoch = 32;
        assert_eq!(m.votes(0, &view, lease), 0);
        m.persisted_epoch = 33;
        // A member's acknowledgement counts for one lease from the probe.
        let sent = lease * 2;
        m.acks.insert(1, sent);
        assert_eq!(m.votes(0, &view, sent), 2);
        assert_eq!(m.votes(0, &view, sent + lease), 1);
        // Acknowledgements from outside the view do not count.
        m.acks.insert(7, sent);
        assert_eq!(m.votes(0, &view, sent), 2);
    }
}
