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
        }
    }

    pub(super) fn heard_replica(&mut self, from: NodeId, r: Replica) {
        self.replicas.insert(from, r);
    }

    /// Deadlines of the majority model: vote expiry, promise expiry, the
    /// witness arbiter.
    pub(super) fn next_deadline(&self, now: Duration) -> Vec<Duration> {
        let m = self;
        let mut d: Vec<Duration> = m
            .acks
            .values()
            .map(|&t| t + m.lease)
            .filter(|&t| t > now)
            .collect();
        if let Some((_, t)) = m.last_ack {
            if t + m.lease > now {
                d.push(t + m.lease);
            }
        }
        if let Some(w) = &m.witness {
            d.extend(w.next_deadline(now));
        }
        d
    }

    /// Regroup starts: the owner's change in progress is abandoned (it is
    /// not durable; the regroup decides whether it survives).
    pub(super) fn regroup_started(&mut self) {
        let m = self;
        m.pending = None;
        m.replicas.clear();
        m.acks.clear();
        m.member_seq.clear();
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
}

impl Node {
    fn maj(&self) -> &Majority {
        self.quorum.majority().expect("majority model")
    }

    fn maj_mut(&mut self) -> &mut Majority {
        self.quorum.majority_mut().expect("majority model")
    }

    pub(super) fn maj_ready(&self) -> bool {
        self.quorum.majority().is_some_and(|m| m.ready)
    }

    /// This node's replica, for regroup messages.
    pub(super) fn maj_replica(&self) -> Option<Replica> {
        self.quorum.majority().filter(|m| m.ready).map(|m| Replica {
            tag: m.tag,
            db: self.db.clone(),
            max_epoch: self.max_epoch,
        })
    }

    /// Live votes for this node as owner now.
    fn maj_votes(&self, now: Duration) -> usize {
        self.view()
            .map_or(0, |view| self.maj().votes(self.me, view, now))
    }

    /// Acts as owner: settled owner of the view with a majority of live
    /// votes and a recovered replica.
    pub(super) fn maj_acting(&self, now: Duration) -> bool {
        match &self.phase {
            Phase::Member(ms) if ms.regroup.is_none() && ms.view.owner == Some(self.me) => {
                self.maj().ready && Votes::of(&self.cfg).has_quorum(self.maj_votes(now))
            }
            _ => false,
        }
    }

    fn issue_on(&mut self, kind: OpKind, disk: DiskId, op: DiskOp) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, kind);
        self.actions.push(Action::Disk { id, disk, op });
        id
    }

    // ----- timers ----------------------------------------------------------

    pub(super) fn maj_tick(&mut self, now: Duration) {
        if !self.maj().ready && self.maj().loading.is_none() {
            let cfg = self.log_config();
            let op = self.issue_on(
                OpKind::Local,
                DiskId::Local,
                DiskOp::Read {
                    offset: cfg.region_offset,
                    len: cfg.region_len as usize,
                },
            );
            self.maj_mut().loading = Some(op);
        }
        let outs = match &mut self.maj_mut().witness {
            Some(w) => w.tick(now),
            None => vec![],
        };
        self.on_witness(now, outs);
        self.maj_witness_duty(now);
        self.maj_update(now);
    }

    /// The owner holds the witness; anyone else lets it go.
    fn maj_witness_duty(&mut self, now: Duration) {
        let me = self.me;
        let owner = matches!(&self.phase, Phase::Member(ms) if ms.view.owner == Some(me));
        let regrouping = matches!(&self.phase, Phase::Member(ms) if ms.regroup.is_some());
        let Some(w) = self.maj_mut().witness.as_mut() else {
            return;
        };
        if owner && !regrouping && w.is_idle() {
            tracing::info!(node = me, "owner arbitrates for the witness disk");
            let outs = w.become_challenger(now);
            self.on_witness(now, outs);
        } else if !owner && !regrouping && !w.is_idle() {
            let op = w.release();
            let w = Arbiter::witness(self.cfg.timing, pr_key(self.me));
            self.maj_mut().witness = Some(w);
            if let Some(op) = op {
                tracing::info!(node = self.me, "not the owner: releasing the witness disk");
                self.issue_on(OpKind::Release, DiskId::Witness, op);
            }
        }
    }

    fn on_witness(&mut self, now: Duration, outs: Vec<ArbOut>) {
        for o in outs {
            match o {
                ArbOut::Issue(op) => {
                    self.issue_on(OpKind::Witness, DiskId::Witness, op);
                }
                ArbOut::Won => tracing::info!(node = self.me, "won the witness disk"),
                ArbOut::Online => {
                    tracing::info!(node = self.me, "witness disk online: its vote counts here")
                }
                ArbOut::Lost(why) => {
                    tracing::warn!(node = self.me, %why, "witness arbitration lost: no witness vote");
                    self.maj_mut().witness =
                        Some(Arbiter::witness(self.cfg.timing, pr_key(self.me)));
                }
            }
        }
        self.maj_update(now);
    }

    /// Logs gaining and losing the majority, and holds the owner's writes
    /// while it has none.
    pub(super) fn maj_update(&mut self, now: Duration) {
        if self.is_stopped() {
            return;
        }
        let acting = self.maj_acting(now);
        let was = self.maj().acting;
        if acting != was {
            self.maj_mut().acting = acting;
            let votes = self.maj_votes(now);
            let need = Votes::of(&self.cfg).needed();
            if acting {
                tracing::info!(
                    node = self.me,
                    votes,
                    need,
                    "gained a majority: acting as owner"
                );
            } else {
                tracing::warn!(
                    node = self.me,
                    votes,
                    need,
                    "lost the majority: holding writes"
                );
            }
        }
        let settled_owner = matches!(&self.phase,
            Phase::Member(ms) if ms.regroup.is_none() && ms.view.owner == Some(self.me));
        if settled_owner {
            self.hold_writes(!acting);
            let deadline = now + self.maj_quorum_timeout();
            if let Phase::Member(ms) = &mut self.phase {
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

    /// Majority: the quorum deadline passed.
    pub(super) fn maj_quorum_deadline(&mut self, now: Duration) {
        let Phase::Member(ms) = &self.phase else {
            return;
        };
        match ms.view.owner {
            Some(o) if o != self.me => {}
            Some(_) if self.maj_acting(now) => {}
            _ => {
                let votes = self.maj_votes(now);
                let need = Votes::of(&self.cfg).needed();
                return self.stop(format!(
                    "no majority: {votes} of {need} votes after the regroup"
                ));
            }
        }
        if let Phase::Member(ms) = &mut self.phase {
            ms.quorum_deadline = None;
        }
    }

    fn maj_quorum_timeout(&self) -> Duration {
        let t = self.cfg.timing;
        t.challenge_wait * 3 + t.heartbeat * 20
    }

    // ----- forming -----------------------------------------------------------

    /// Nobody admitted us: regroup with every configured node.
    pub(super) fn maj_form(&mut self, now: Duration) {
        tracing::info!(
            node = self.me,
            "no member answered: regrouping with every node to form a majority"
        );
        self.maj_enter_pseudo_view(now);
        self.start_regroup(now, self.max_epoch + 1);
    }

    /// A view of this node alone, without an owner: the starting point of
    /// a regroup that forms the cluster.
    pub(super) fn maj_enter_pseudo_view(&mut self, now: Duration) {
        // Epoch 0: any regroup is newer, so this node joins whichever it
        // hears.
        let view = View {
            epoch: 0,
            members: vec![self.me],
            owner: None,
            paused: vec![],
        };
        self.detector.watch_only(Vec::new(), now);
        self.phase = Phase::Member(Membership {
            view,
            regroup: None,
            quorum_deadline: Some(now + self.maj_quorum_timeout()),
        });
        self.hold_writes(true);
    }

    /// The coordinator's end of collection under the majority model.
    pub(super) fn maj_end_collection(
        &mut self,
        now: Duration,
        epoch: u64,
        seen: BTreeMap<NodeId, bool>,
    ) {
        let mut direct = self.maj().replicas.clone();
        if let Some(r) = self.maj_replica() {
            direct.insert(self.me, r);
        }
        let need = Votes::of(&self.cfg).needed();
        let nodes = direct.len();
        let witness = self.maj().witness.is_some();
        let holds_witness = self
            .maj()
            .witness
            .as_ref()
            .is_some_and(|w| w.is_acting_owner(now));
        let votes = nodes + usize::from(witness);
        if !self.maj_ready() || votes < need {
            tracing::warn!(
                node = self.me,
                epoch,
                heard = ?direct.keys().collect::<Vec<_>>(),
                votes = nodes + usize::from(holds_witness),
                need,
                "regroup without a majority: no view installed"
            );
            self.maj_no_quorum(now);
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
        let above = epoch.max(self.max_epoch).max(top_tag);
        let rg_epoch = epoch;
        let epoch = next_epoch(above, self.me);
        let paused = self.paused_among(seen.keys());
        let view = View {
            epoch,
            members: seen.keys().copied().collect(),
            owner: Some(self.me),
            paused,
        };
        tracing::info!(
            node = self.me,
            epoch,
            members = ?view.members,
            node_votes = nodes,
            need,
            adopted = ?best.position(),
            "regroup installs view as owner (majority)"
        );
        self.send_install(seen.keys().copied(), &view, Some((rg_epoch, best.clone())));
        self.max_epoch = self.max_epoch.max(epoch);
        self.maj_adopt_replica(best, None);
        self.adopt_view(now, view);
        let deadline = now + self.maj_quorum_timeout();
        if let Phase::Member(ms) = &mut self.phase {
            ms.quorum_deadline = Some(deadline);
        }
        self.maj_witness_duty(now);
        self.maj_update(now);
    }

    /// A regroup ended without a majority: no owner here.
    fn maj_no_quorum(&mut self, now: Duration) {
        let deadline = now + self.maj_quorum_timeout();
        if let Phase::Member(ms) = &mut self.phase {
            ms.regroup = None;
            ms.view.owner = None;
            if ms.quorum_deadline.is_none() {
                ms.quorum_deadline = Some(deadline);
            }
        }
        self.hold_writes(true);
        self.maj_mut().pending = None;
        self.maj_mut().acks.clear();
        self.maj_update(now);
    }

    /// A newer view that includes this node was installed, with the
    /// coordinator's chosen replica if a regroup installed it.
    pub(super) fn maj_on_install(
        &mut self,
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
            let in_it = matches!(&self.phase, Phase::Member(m)
                if m.regroup.as_ref().is_some_and(|rg| rg.epoch == rg_epoch));
            if !in_it {
                return;
            }
            self.maj_adopt_replica(r, None);
        }
        self.adopt_view(now, view);
    }

    pub(super) fn maj_issue_release(&mut self, op: DiskOp) {
        self.issue_on(OpKind::Release, DiskId::Witness, op);
    }

    pub(super) fn maj_on_witness(&mut self, now: Duration, outs: Vec<ArbOut>) {
        self.on_witness(now, outs);
    }

    /// Replaces this node's replica with `r` if it differs, and persists
    /// it as a checkpoint; `done` runs once the replica is on the disk.
    pub(super) fn maj_adopt_replica(&mut self, r: Replica, done: Option<LocalDone>) {
        if !self.maj_ready() {
            return;
        }
        if r.tag == self.maj().tag && r.db == self.db {
            self.maj_queue_writes(Vec::new(), done);
            return;
        }
        tracing::info!(
            node = self.me,
            from = ?(self.maj().tag, self.db.seq),
            to = ?r.position(),
            "replica replaced by the owner's"
        );
        self.db = r.db;
        self.maj_mut().tag = r.tag;
        self.maj_mut().generation += 1;
        self.pending_apply.clear();
        self.maj_persist_snapshot(done);
    }

    /// Puts `max_epoch` on the disk (a checkpoint) if it is not yet.
    pub(super) fn maj_persist_epoch(&mut self) {
        let m = self.maj();
        let covers = |ds: &Vec<LocalDone>| {
            ds.iter().any(
                |d| matches!(d, LocalDone::Persisted { max_epoch } if *max_epoch >= self.max_epoch),
            )
        };
        let queued = m.queue.iter().any(|(_, ds)| covers(ds))
            || m.in_flight.as_ref().is_some_and(|(_, ds)| covers(ds));
        if m.ready && m.persisted_epoch < self.max_epoch && !queued {
            self.maj_persist_snapshot(None);
        }
    }

    // ----- local log -----------------------------------------------------

    fn maj_persist_snapshot(&mut self, done: Option<LocalDone>) {
        let max_epoch = self.max_epoch;
        let cp = ReplicaCheckpoint {
            tag: self.maj().tag,
            max_epoch: self.max_epoch,
            db: self.db.clone(),
        };
        let snap = serde_json::to_vec(&cp).expect("checkpoint serializes");
        let Some(log) = self.maj_mut().log.as_mut() else {
            return;
        };
        match log_manager::checkpoint_all(log, &snap) {
            Ok(w) => {
                self.maj_queue_writes(w, Some(LocalDone::Persisted { max_epoch }));
                self.maj_queue_writes(Vec::new(), done);
            }
            Err(e) => self.stop(format!("local quorum log checkpoint: {e}")),
        }
    }

    /// Logs change `seq` of `epoch` (checkpointing first if the log is
    /// full); `done` runs once it is on the disk. A member applies it at
    /// once (its in-memory replica is its log as queued); the owner only
    /// when it is on its disk, so its replica never leaves the node (in a
    /// regroup or a sync) before its own log holds it.
    fn maj_log_change(
        &mut self,
        seq: u64,
        epoch: u64,
        change: &Change,
        done: LocalDone,
    ) -> Result<(), ReplicaError> {
        let apply_now = matches!(done, LocalDone::Ack { .. });
        self.db.check(change)?;
        let mut writes = Vec::new();
        let cp = ReplicaCheckpoint {
            tag: self.maj().tag,
            max_epoch: self.max_epoch,
            db: self.db.clone(),
        };
        let payload = serde_json::to_vec(&LogEntry {
            seq,
            change: change.clone(),
            epoch,
        })
        .expect("entries serialize");
        let log = self.maj_mut().log.as_mut().ok_or(ReplicaError::LogClosed)?;
        if log.needs_checkpoint() {
            let snap = serde_json::to_vec(&cp).expect("checkpoint serializes");
            writes.extend(log_manager::checkpoint_all(log, &snap)?);
        }
        writes.extend(log.append(&payload)?.1);
        if apply_now {
            self.db.apply(seq, change)?;
            self.maj_mut().tag = epoch;
        }
        self.maj_queue_writes(writes, Some(done));
        Ok(())
    }

    fn maj_queue_writes(&mut self, writes: Vec<LogWrite>, done: Option<LocalDone>) {
        let n = writes.len();
        for (i, w) in writes.into_iter().enumerate() {
            let d = if i + 1 == n { done.clone() } else { None };
            self.maj_mut().queue.push_back((w, d.into_iter().collect()));
        }
        if n == 0 {
            if let Some(d) = done {
                // Nothing new to write: done once what is queued is.
                let m = self.maj_mut();
                if let Some((_, ds)) = m.queue.back_mut() {
                    ds.push(d);
                } else if let Some((_, ds)) = m.in_flight.as_mut() {
                    ds.push(d);
                } else {
                    self.maj_local_done(d);
                }
            }
        }
        self.maj_pump_local();
    }

    /// Local writes go out one at a time, in order (the log's crash
    /// safety relies on it).
    fn maj_pump_local(&mut self) {
        if self.maj().in_flight.is_some() {
            return;
        }
        let Some((w, done)) = self.maj_mut().queue.pop_front() else {
            return;
        };
        let id = self.issue_on(
            OpKind::Local,
            DiskId::Local,
            DiskOp::Write {
                offset: w.offset,
                data: w.data,
            },
        );
        self.maj_mut().in_flight = Some((id, done));
    }

    pub(super) fn maj_on_local_done(&mut self, now: Duration, id: u64, result: DiskResult) {
        if self.maj().loading == Some(id) {
            self.maj_mut().loading = None;
            match result {
                DiskResult::Data(region) => self.maj_recover(&region),
                r => self.stop(format!("local quorum log unreadable: {r:?}")),
            }
            return;
        }
        let Some((op, done)) = self.maj_mut().in_flight.take() else {
            return;
        };
        if op != id {
            self.maj_mut().in_flight = Some((op, done));
            return;
        }
        if result != DiskResult::Good {
            return self.stop(format!("local quorum log write failed: {result:?}"));
        }
        for d in done {
            self.maj_local_done(d);
        }
        self.maj_pump_local();
        self.maj_pump_gum(now);
    }

    fn maj_recover(&mut self, region: &[u8]) {
        let cfg = self.log_config();
        let opened = match log_manager::open_region(&cfg, region) {
            Ok(x) => x,
            Err(e) => return self.stop(format!("local quorum log unreadable: {e}")),
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
                                .stop(format!("local quorum log checkpoint unreadable: {e}"))
                        }
                    }
                }
                if let Some(cut) = rec.cut {
                    tracing::warn!(node = self.me, %cut, "local quorum log cut");
                }
                if let Some(epoch) = db.replay(rec.records.iter().map(|(_, r)| r.as_slice())) {
                    tag = epoch;
                }
                log
            }
            None => match log_manager::format_and_open(&cfg, &self.cfg.name) {
                Ok((log, w)) => {
                    writes = w;
                    log
                }
                Err(e) => return self.stop(format!("local quorum log format: {e}")),
            },
        };
        tracing::info!(
            node = self.me,
            tag,
            seq = db.seq,
            max_epoch,
            "local replica recovered"
        );
        self.db = db;
        self.max_epoch = self.max_epoch.max(max_epoch).max(tag);
        let m = self.maj_mut();
        m.tag = tag;
        m.log = Some(log);
        m.ready = true;
        m.persisted_epoch = max_epoch.max(tag);
        self.maj_queue_writes(writes, None);
    }

    fn maj_local_done(&mut self, done: LocalDone) {
        match done {
            LocalDone::Persisted { max_epoch } => {
                let m = self.maj_mut();
                m.persisted_epoch = m.persisted_epoch.max(max_epoch);
            }
            LocalDone::Ack { owner, epoch, seq } => {
                self.send(owner, Body::ReplicateAck { epoch, seq });
            }
            LocalDone::OwnerEntry {
                epoch,
                seq,
                change,
                generation,
            } => {
                if generation != self.maj().generation {
                    return;
                }
                if let Err(e) = self.db.apply(seq, &change) {
                    return self.stop(format!("own logged change does not apply: {e}"));
                }
                self.maj_mut().tag = epoch;
                let me = self.me;
                let Some(p) = self.maj_mut().pending.as_mut() else {
                    return;
                };
                if p.epoch != epoch || p.seq != seq {
                    return;
                }
                p.logged = true;
                p.acked.insert(me);
                self.maj_replicate_pending(None);
                self.maj_check_commit();
            }
        }
    }

    // ----- lease -----------------------------------------------------------

    /// The owner sent heartbeat `seq` at `now`.
    pub(super) fn maj_probe_sent(&mut self, seq: u64, now: Duration) {
        let m = self.maj_mut();
        m.probes.push_back((seq, now));
        while m.probes.len() > 64 {
            m.probes.pop_front();
        }
    }

    /// A heartbeat from `from`: acknowledge it if `from` is our owner.
    pub(super) fn maj_on_heartbeat(
        &mut self,
        now: Duration,
        net: Net,
        from: NodeId,
        seq: u64,
        epoch: u64,
    ) {
        let ok = matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(from) && ms.view.epoch == epoch);
        if !ok || !self.maj().ready || !self.maj().may_vote_for(from, now) {
            return;
        }
        if self.maj().persisted_epoch < epoch {
            // Vote in this view only once its epoch is on our disk.
            self.maj_persist_epoch();
            return;
        }
        self.maj_mut().last_ack = Some((from, now));
        self.send_on(from, net, Body::LeaseAck { epoch, seq });
    }

    /// A message of the majority model's votes and replication arrived
    /// from `from`; the other bodies are the common protocol's.
    pub(super) fn maj_step(&mut self, now: Duration, from: NodeId, body: Body) {
        match body {
            Body::LeaseAck { seq, .. } => self.maj_on_lease_ack(now, from, seq),
            Body::Replicate {
                epoch,
                prev,
                seq,
                change,
                ..
            } => self.maj_on_replicate(from, epoch, prev, seq, change),
            Body::ReplicateAck { epoch, seq } => self.maj_on_replicate_ack(now, from, epoch, seq),
            Body::ReplicaSync { epoch, replica } => self.maj_on_replica_sync(from, epoch, replica),
            _ => {}
        }
    }

    fn maj_on_lease_ack(&mut self, now: Duration, from: NodeId, seq: u64) {
        let owner = self.view().is_some_and(|v| v.owner == Some(self.me));
        if !owner {
            return;
        }
        let m = self.maj_mut();
        let Some(&(_, sent)) = m.probes.iter().find(|(s, _)| *s == seq) else {
            return;
        };
        let e = m.acks.entry(from).or_insert(sent);
        *e = (*e).max(sent);
        self.maj_update(now);
    }

    // ----- global updates ----------------------------------------------------

    pub(super) fn maj_pump_gum(&mut self, now: Duration) {
        if self.is_stopped() || self.maj().pending.is_some() || !self.maj_acting(now) {
            return;
        }
        // One change at a time: the next waits until this one is durable.
        if let Some((origin, id, change)) = self.next_valid_gum() {
            let epoch = self.view().map_or(0, |v| v.epoch);
            let prev = (self.maj().tag, self.db.seq);
            let seq = self.db.seq + 1;
            self.maj_mut().pending = Some(Pending {
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
                generation: self.maj().generation,
            };
            if let Err(e) = self.maj_log_change(seq, epoch, &change, done) {
                self.stop(format!("local quorum log append: {e}"));
            }
        }
    }

    /// Sends the pending change to the members that have not acknowledged
    /// it (all of them, or just `to`).
    fn maj_replicate_pending(&mut self, to: Option<NodeId>) {
        let Some(p) = self.maj().pending.clone() else {
            return;
        };
        if !p.logged {
            return;
        }
        let targets: Vec<NodeId> = match to {
            Some(n) => vec![n],
            None => self.others(),
        };
        for n in targets {
            if p.acked.contains(&n) {
                continue;
            }
            self.send(
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
    pub(super) fn maj_resend(&mut self) {
        self.maj_replicate_pending(None);
        if !self.maj_ready() {
            return;
        }
        let Some(epoch) = self.view().map(|v| v.epoch) else {
            return;
        };
        let behind: Vec<NodeId> = self
            .others()
            .into_iter()
            .filter(|n| !matches!(self.maj().member_seq.get(n), Some(&s) if s >= self.db.seq))
            .filter(|n| {
                // The pending change's own resend covers a member that
                // only lacks that one.
                !matches!(&self.maj().pending, Some(p) if p.logged && !p.acked.contains(n))
            })
            .collect();
        let replica = Replica {
            tag: self.maj().tag,
            db: self.db.clone(),
            max_epoch: self.max_epoch,
        };
        for n in behind {
            self.send(
                n,
                Body::ReplicaSync {
                    epoch,
                    replica: replica.clone(),
                },
            );
        }
    }

    fn maj_on_replicate_ack(&mut self, now: Duration, from: NodeId, epoch: u64, seq: u64) {
        let current = matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(self.me) && epoch <= ms.view.epoch);
        if current {
            let e = self.maj_mut().member_seq.entry(from).or_insert(seq);
            *e = (*e).max(seq);
        }
        if let Some(p) = self.maj_mut().pending.as_mut() {
            if p.epoch == epoch && p.seq == seq {
                p.acked.insert(from);
            }
        }
        self.maj_check_commit();
        self.maj_pump_gum(now);
    }

    /// Durable once on `(nodes / 2) + 1` node replicas.
    fn maj_check_commit(&mut self) {
        let Some(p) = self.maj().pending.clone() else {
            return;
        };
        // The owner may have installed newer views of its own since (joins,
        // evictions); a regroup would have dropped the pending change.
        let owner_now = matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(self.me));
        if !p.logged || !Votes::of(&self.cfg).is_committed(p.acked.len()) || !owner_now {
            return;
        }
        self.maj_mut().pending = None;
        tracing::debug!(
            node = self.me,
            seq = p.seq,
            replicas = p.acked.len(),
            "change committed"
        );
        self.actions.push(Action::Durable {
            origin: p.origin,
            id: p.id,
            seq: p.seq,
            change: p.change,
        });
        if p.origin == self.me {
            self.actions.push(Action::Committed {
                id: p.id,
                seq: p.seq,
            });
        } else {
            self.send(
                p.origin,
                Body::GumCommitted {
                    id: p.id,
                    seq: p.seq,
                },
            );
        }
    }

    /// Whether `from` is our settled owner at `epoch`.
    fn maj_from_owner(&self, from: NodeId, epoch: u64) -> bool {
        matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(from) && ms.view.epoch == epoch)
            && self.maj_ready()
    }

    fn maj_on_replicate(
        &mut self,
        from: NodeId,
        epoch: u64,
        prev: (u64, u64),
        seq: u64,
        change: Change,
    ) {
        // `epoch` is the change's: the owner may have installed newer views
        // of its own (joins) since it logged it.
        let ours = matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(from) && epoch <= ms.view.epoch);
        if !ours || !self.maj_ready() {
            return;
        }
        let here = (self.maj().tag, self.db.seq);
        if here == (epoch, seq) {
            // A resend of what we hold: acknowledge again if it is on the
            // disk (otherwise the pending write acknowledges it).
            if self.maj().queue.is_empty() && self.maj().in_flight.is_none() {
                self.send(from, Body::ReplicateAck { epoch, seq });
            }
            return;
        }
        if here != prev {
            self.send(from, Body::SyncRequest);
            return;
        }
        let done = LocalDone::Ack {
            owner: from,
            epoch,
            seq,
        };
        let view_epoch = self.view().map_or(0, |v| v.epoch);
        self.maj_mut().taken = Some((from, view_epoch, seq));
        if let Err(e) = self.maj_log_change(seq, epoch, &change, done) {
            tracing::warn!(node = self.me, seq, error = %e, "cannot take a replicated change: asking for the owner's replica");
            self.send(from, Body::SyncRequest);
        }
    }

    pub(super) fn maj_on_sync_request(&mut self, from: NodeId) {
        let owner = matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(self.me) && ms.view.contains(from));
        if !owner || !self.maj_ready() {
            return;
        }
        let epoch = self.view().map_or(0, |v| v.epoch);
        // The owner's replica as it is on its disk (a pending change is
        // applied only once logged here).
        let replica = Replica {
            tag: self.maj().tag,
            db: self.db.clone(),
            max_epoch: self.max_epoch,
        };
        self.send(from, Body::ReplicaSync { epoch, replica });
        self.maj_replicate_pending(Some(from));
    }

    fn maj_on_replica_sync(&mut self, from: NodeId, epoch: u64, replica: Replica) {
        if !self.maj_from_owner(from, epoch) {
            return;
        }
        let seq = replica.db.seq;
        if matches!(self.maj().taken, Some((o, e, s)) if o == from && e == epoch && s > seq) {
            return;
        }
        self.maj_mut().taken = Some((from, epoch, seq));
        let done = LocalDone::Ack {
            owner: from,
            epoch,
            seq,
        };
        self.maj_adopt_replica(replica, Some(done));
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
