//! One cluster node as a pure state machine: Node Manager (heartbeats,
//! join, evict), Membership Manager (regroup), quorum arbiter, Log Manager
//! and Global Update Manager together.
//!
//! The driver feeds it time and inputs — [`Node::tick`], [`Node::step`]
//! (an authenticated message), [`Node::disk_done`], [`Node::propose`],
//! [`Node::shutdown`] — and performs the [`Action`]s it collects, taken with
//! [`Node::take_actions`] (raft-rs's Ready pattern). [`Node::next_deadline`]
//! says when to tick next. Nothing here reads a clock or does I/O.
//!
//! Replays: `step` takes an envelope only if it is fresh — not from an
//! earlier incarnation of its sender, not addressed to an earlier life of
//! this node, and with a sequence number the sender's window has not seen
//! ([`replay`], docs/semantics.md "Replayed messages"). Whatever it
//! refuses is counted and reported, never a sign of life.
//!
//! Phases: `Joining` (looking for a member to admit us) -> `Forming`
//! (nobody answered: arbitrate for the quorum disk alone) -> `Member`
//! (with an optional regroup in progress) -> `Stopped` (the cluster service
//! stops; the service manager restarts it as a new incarnation).
//!
//! Regroup: a member that suspects another (silent on every network), or
//! hears of a newer epoch, enters regroup `epoch`: it holds shared-disk
//! writes and announces itself to the old view's members for a collection
//! window; the lowest node it heard from is the coordinator, which installs
//! the view of every node it heard, naming the participant that holds the
//! quorum disk as owner. A view without an owner holds writes until its
//! lowest member has won the quorum disk by challenge; if that member loses
//! it stops, and the others stop when no owner appears in time. So a
//! partition continues only where the quorum owner is, and the disk
//! arbitration — not the regroup — is what makes two owners impossible.
//!
//! Global updates: the quorum owner is the locker. It takes one change at a
//! time, writes it to the quorum log with FUA (only while its lease is
//! valid), and only then applies it, reports it committed, and sends it to
//! every member, which applies updates strictly in sequence order. A member
//! that cannot apply an update is evicted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::arbiter::{ArbOut, Arbiter, DiskId, DiskOp, DiskResult};
use crate::config::{ClusterConfig, NodeId};
use crate::db::{Change, DbSnapshot, LogEntry};
use crate::log_manager::{self, LogConfig};
use crate::message::{Body, Envelope, JoinRefusal, Net, View};
use crate::node_manager::{Detector, Liveness};
use quorum::{Quorum, QuorumModel};
use replay::{PeerLife, Replay, ReplayLog, ReplayWindow};

/// Why a node cannot be built from a cluster file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The name is not in the cluster file.
    #[error("node {0:?} is not in the cluster file")]
    UnknownNode(String),
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an (unsigned) message on a network; the driver signs it.
    Send { net: Net, env: Envelope },
    /// Issue a disk operation; report the result with `disk_done(id, ..)`.
    Disk { id: u64, disk: DiskId, op: DiskOp },
    /// Hold (true) or release (false) writes to shared data disks.
    HoldWrites(bool),
    /// The locker made update `seq` durable in the quorum log and applied
    /// it; `origin` proposed it as request `id`.
    Durable {
        origin: NodeId,
        id: u64,
        seq: u64,
        change: Change,
    },
    /// A change this node proposed was committed as `seq`.
    Committed { id: u64, seq: u64 },
    /// A change this node proposed was refused.
    Rejected { id: u64, reason: String },
    /// Stop the cluster service (the node leaves the cluster).
    StopClusterService { reason: String },
    /// Client read `id` ([`Node::read`]) may be answered from the database
    /// as it is now.
    ReadReady { id: u64 },
    /// Client read `id` is refused.
    ReadRefused { id: u64, why: NotReadable },
}

/// Why a node does not answer a client's read from its copy of the
/// database (docs/semantics.md, "Reading the database").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReadable {
    /// Joining, forming, regrouping or stopped: its copy may be an
    /// earlier life's or may miss changes the members commit meanwhile.
    #[error("this node is not a settled member of the cluster: its copy of the database may be stale; read from a member")]
    NotMember,
    /// A member whose replica is still the one its previous life left,
    /// before the owner's replaces it.
    #[error("this node has not yet received the owner's copy of the database; read from another member or retry")]
    NotCurrent,
    /// The node is its view's owner but its lease ran out (it was stopped
    /// past it, or lost its votes): another node may own the cluster now.
    #[error("this node's quorum-owner lease has run out: its copy of the database may be stale; read from a member or retry")]
    NoLease,
    /// The node owns the cluster but has not yet read the quorum log, so
    /// its copy may miss committed changes.
    #[error("this node owns the quorum but has not yet recovered the quorum log; retry")]
    LogNotRecovered,
    /// The owner did not confirm the read: it does not act as owner, it
    /// does not count this node a member, or it did not answer in time.
    #[error("the quorum owner did not confirm this node's copy of the database; read from another member or retry")]
    NotConfirmed,
}

/// How a client's read goes on after [`Node::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    /// Answer from the database now: this node acts as owner within its
    /// lease.
    Now,
    /// Wait for [`Action::ReadReady`] or [`Action::ReadRefused`] with this id.
    Pending(u64),
}

/// A client's read waiting for the owner's read index (or, with it, for
/// this node's copy to reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingRead {
    owner: NodeId,
    /// The owner's database sequence number when it confirmed the read.
    index: Option<u64>,
    /// Refused if not answered by then.
    until: Duration,
}

/// A regroup in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regroup {
    pub epoch: u64,
    /// Participants heard in this regroup, and which of them hold the
    /// quorum disk.
    pub seen: BTreeMap<NodeId, bool>,
    pub stage: RegroupStage,
}

/// Where a regroup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegroupStage {
    /// Collecting participants until the deadline; resend at `resend`.
    Collect { until: Duration, resend: Duration },
    /// Waiting for the coordinator's install.
    AwaitInstall { until: Duration },
}

/// A member's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub view: View,
    pub regroup: Option<Regroup>,
    /// The view has no owner: a member arbitrates; stop if none is online
    /// by this time.
    pub quorum_deadline: Option<Duration>,
}

/// The node's phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Asking the members to admit us; form alone at `form_at`.
    Joining {
        form_at: Duration,
        next_ask: Duration,
    },
    /// Arbitrating for the quorum disk to form the cluster.
    Forming,
    Member(Membership),
    /// The cluster service stopped.
    Stopped(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Arbiter,
    Log,
    Release,
    /// Majority: the local replica of the quorum log.
    Local,
    /// Majority: the witness arbiter.
    Witness,
}

/// Everything of a node but its quorum model: configuration, phase,
/// database, the peers and their replay windows, the failure detector and
/// the actions collected. The model ([`QuorumModel`]) works on it.
#[derive(Debug)]
struct Core {
    cfg: Arc<ClusterConfig>,
    me: NodeId,
    incarnation: u64,
    phase: Phase,
    /// The disk models' quorum-disk arbiter. Under the majority model it
    /// stays idle (the witness has its own, in `Majority`); it is kept here
    /// rather than in `DiskQuorum` because [`Node::arbiter`] reports its
    /// role whatever the model.
    arbiter: Arbiter,
    detector: Detector,
    db: DbSnapshot,
    gum_queue: VecDeque<(NodeId, u64, Change)>,
    gum_seen: BTreeSet<(NodeId, u64, u64)>,
    pending_apply: BTreeMap<u64, (Change, Option<(NodeId, u64)>)>,
    ops: BTreeMap<u64, OpKind>,
    next_op: u64,
    next_request: u64,
    hb_seq: u64,
    next_heartbeat: Duration,
    max_epoch: u64,
    last_tick: Option<Duration>,
    /// Each sender's newest incarnation heard and its replay window.
    peers: BTreeMap<NodeId, PeerLife>,
    /// The last sequence number sent to each node in this incarnation.
    sent_seq: BTreeMap<NodeId, u64>,
    replays: ReplayLog,
    holding: bool,
    actions: Vec<Action>,
    /// Client reads waiting for the owner's read index, by read id.
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
}

/// One cluster node: the common protocol in [`Core`], and the quorum model
/// it delegates to wherever the models differ.
#[derive(Debug)]
pub struct Node {
    core: Core,
    /// The quorum model and its state.
    quorum: Quorum,
}

/// The PR key of node `id`: "bus" and the node number, never zero.
pub fn pr_key(id: NodeId) -> u64 {
    0x6275_7300_0000_0000 | (u64::from(id) + 1)
}

impl Node {
    /// A node starting its cluster service at `now` as `incarnation` (a
    /// number that grows with every start, e.g. the start time).
    pub fn new(
        cfg: Arc<ClusterConfig>,
        name: &str,
        incarnation: u64,
        now: Duration,
    ) -> Result<Node, NodeError> {
        let me = cfg
            .node_id(name)
            .ok_or_else(|| NodeError::UnknownNode(name.into()))?;
        let timing = cfg.timing;
        let quorum = Quorum::new(&cfg, me, now);
        let form_at = now + timing.heartbeat * (6 + 2 * u32::from(me));
        let core = Core {
            arbiter: Arbiter::new(&cfg.quorum, timing, pr_key(me)),
            detector: Detector::new(timing),
            cfg,
            me,
            incarnation,
            phase: Phase::Joining {
                form_at,
                next_ask: now,
            },
            db: DbSnapshot::default(),
            gum_queue: VecDeque::new(),
            gum_seen: BTreeSet::new(),
            pending_apply: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            next_request: 1,
            hb_seq: 0,
            next_heartbeat: now,
            max_epoch: 0,
            last_tick: None,
            peers: BTreeMap::new(),
            sent_seq: BTreeMap::new(),
            replays: ReplayLog::default(),
            holding: false,
            actions: Vec::new(),
            reads: BTreeMap::new(),
            next_read: 1,
        };
        Ok(Node { core, quorum })
    }

    // ----- observation -------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.core.me
    }

    pub fn phase(&self) -> &Phase {
        &self.core.phase
    }

    /// When each peer was last heard on each network (private, public).
    pub fn last_heard(&self) -> Vec<(NodeId, [Duration; 2])> {
        self.core.detector.last_heard()
    }

    /// The current view, if a member.
    pub fn view(&self) -> Option<&View> {
        self.core.view()
    }

    pub fn db(&self) -> &DbSnapshot {
        &self.core.db
    }

    pub fn arbiter(&self) -> &Arbiter {
        &self.core.arbiter
    }

    /// Authenticated messages refused as replays since this node started
    /// (`replay`).
    pub fn replays_refused(&self) -> u64 {
        self.core.replays.total()
    }

    /// Acts as quorum owner now: holds the disk, online, lease valid
    /// (majority: owner of its view with a majority of live votes).
    pub fn is_acting_owner(&self, now: Duration) -> bool {
        self.quorum.model().is_acting_owner(&self.core, now)
    }

    /// While acting as quorum owner, the instant it stops acting unless an
    /// input (a renewal, an acknowledgement) arrives first: its lease's
    /// end. `None` when not acting now.
    pub fn acting_owner_until(&self, now: Duration) -> Option<Duration> {
        self.quorum.model().acting_owner_until(&self.core, now)
    }

    /// The life of the cluster service this node is (its incarnation).
    pub fn incarnation(&self) -> u64 {
        self.core.incarnation
    }

    /// Whether this node's database is the cluster's rather than a copy
    /// left by an earlier life (the quorum model's `db_current`): the
    /// resource host acts on nothing before.
    pub fn db_current(&self) -> bool {
        self.quorum.model().db_current()
    }

    /// Shared-disk writes are held (regroup, or no quorum owner yet).
    pub fn writes_held(&self) -> bool {
        self.core.holding
    }

    pub fn is_stopped(&self) -> bool {
        self.core.is_stopped()
    }

    /// Whether the node is a settled member (no regroup, owner known).
    pub fn is_settled_member(&self) -> bool {
        matches!(&self.core.phase, Phase::Member(m) if m.regroup.is_none() && m.view.owner.is_some())
    }

    /// Takes the actions collected so far.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.core.actions)
    }

    /// When `tick` should be called next (`now`: the time of the last
    /// input).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let mut d: Vec<Duration> = self.core.reads.values().map(|r| r.until).collect();
        match &self.core.phase {
            Phase::Stopped(_) => return None,
            // Majority: nothing to do before the local replica is read.
            Phase::Joining { .. } if self.quorum.model().awaits_replica() => {}
            Phase::Joining { form_at, next_ask } => {
                d.push(*form_at);
                d.push(*next_ask);
            }
            Phase::Forming => {}
            Phase::Member(m) => {
                d.push(self.core.next_heartbeat);
                d.extend(self.core.detector.next_deadline());
                if let Some(q) = m.quorum_deadline {
                    d.push(q);
                }
                match &m.regroup {
                    Some(Regroup {
                        stage: RegroupStage::Collect { until, resend },
                        ..
                    }) => {
                        d.push(*until);
                        d.push(*resend);
                    }
                    Some(Regroup {
                        stage: RegroupStage::AwaitInstall { until },
                        ..
                    }) => d.push(*until),
                    None => {}
                }
            }
        }
        d.extend(self.quorum.model().next_deadlines(&self.core, now));
        d.into_iter().min()
    }

    /// The model and the core, to call the model with.
    fn parts(&mut self) -> (&mut dyn QuorumModel, &mut Core) {
        (self.quorum.model_mut(), &mut self.core)
    }

    fn stop(&mut self, reason: impl Into<String>) {
        let (q, core) = self.parts();
        q.stop(core, reason.into());
    }

    fn start_regroup(&mut self, now: Duration, epoch: u64) {
        let (q, core) = self.parts();
        q.start_regroup(core, now, epoch);
    }

    fn adopt_view(&mut self, now: Duration, view: View) {
        let (q, core) = self.parts();
        q.adopt_view(core, now, view);
    }

    fn install_as_owner(&mut self, now: Duration, view: View) {
        let (q, core) = self.parts();
        q.install_as_owner(core, now, view);
    }

    fn is_locker(&self) -> bool {
        self.quorum.model().is_locker(&self.core)
    }

    /// The locker takes the next queued change, as its quorum model
    /// commits changes.
    fn pump_gum(&mut self, now: Duration) {
        let (q, core) = self.parts();
        q.pump_gum(core, now);
    }

    // ----- inputs ------------------------------------------------------

    /// Time passes.
    pub fn tick(&mut self, now: Duration) {
        if self.core.is_stopped() {
            return;
        }
        // A jump longer than the detection time means this process did not
        // run (paused): its view of the peers is stale, not theirs of it.
        if let Some(last) = self.core.last_tick {
            if now.saturating_sub(last) >= self.core.cfg.timing.detection() {
                self.core.detector.reset(now);
            }
        }
        self.core.last_tick = Some(now);
        let (q, core) = self.parts();
        q.tick(core, now);
        if self.core.is_stopped() {
            return;
        }
        match self.core.phase.clone() {
            Phase::Joining { form_at, next_ask } => {
                if self.quorum.model().awaits_replica() {
                    // Nothing to offer or compare before the local
                    // replica is recovered.
                } else if now >= form_at {
                    let (q, core) = self.parts();
                    q.form(core, now);
                } else if now >= next_ask {
                    for n in self.core.all_others() {
                        self.core.send(n, Body::JoinRequest);
                    }
                    self.core.phase = Phase::Joining {
                        form_at,
                        next_ask: now + self.core.cfg.timing.heartbeat * 2,
                    };
                }
            }
            Phase::Forming | Phase::Stopped(_) => {}
            Phase::Member(m) => self.tick_member(now, m),
        }
        self.pump_gum(now);
        self.settle_reads(now);
    }

    fn tick_member(&mut self, now: Duration, m: Membership) {
        let hb = self.core.cfg.timing.heartbeat;
        if now >= self.core.next_heartbeat {
            self.core.hb_seq += 1;
            let (q, core) = self.parts();
            q.heartbeat_due(core, now, &m.view);
            let view = Some((m.view.epoch, m.view.members.clone()));
            for n in self.core.others() {
                for net in Net::ALL {
                    self.core.send_on(
                        n,
                        net,
                        Body::Heartbeat {
                            seq: self.core.hb_seq,
                            view: view.clone(),
                            db_seq: self.core.db.seq,
                        },
                    );
                }
            }
            self.core.next_heartbeat = now + hb;
        }
        for ev in self.core.detector.tick(now) {
            match ev {
                Liveness::Suspect { peer } => {
                    tracing::info!(node = self.core.me, peer, "peer silent on all networks");
                    if m.regroup.is_none() {
                        self.start_regroup(now, m.view.epoch.max(self.core.max_epoch) + 1);
                    }
                }
                Liveness::NetworkWarning { peer, net } => {
                    tracing::warn!(
                        node = self.core.me,
                        peer,
                        ?net,
                        "missed heartbeats on one network"
                    );
                }
                Liveness::NetworkRecovered { .. } => {}
            }
        }
        let Phase::Member(m) = self.core.phase.clone() else {
            return;
        };
        if m.quorum_deadline.is_some_and(|q| now >= q) {
            let (q, core) = self.parts();
            q.quorum_deadline(core, now);
            if self.core.is_stopped() {
                return;
            }
        }
        if let Some(rg) = m.regroup {
            match rg.stage {
                RegroupStage::Collect { until, resend } => {
                    if now >= until {
                        self.end_collection(now, rg.epoch, rg.seen.clone());
                    } else if now >= resend {
                        self.quorum
                            .model()
                            .announce_regroup(&mut self.core, &m.view, &rg);
                        if let Phase::Member(mm) = &mut self.core.phase {
                            if let Some(r) = &mut mm.regroup {
                                r.stage = RegroupStage::Collect {
                                    until,
                                    resend: now + hb,
                                };
                            }
                        }
                    }
                }
                RegroupStage::AwaitInstall { until } => {
                    if now >= until {
                        self.start_regroup(now, rg.epoch.max(self.core.max_epoch) + 1);
                    }
                }
            }
        }
    }

    /// An authenticated message arrived on `net`.
    pub fn step(&mut self, now: Duration, net: Net, env: Envelope) {
        if self.core.is_stopped() || env.to != self.core.me || env.from == self.core.me {
            return;
        }
        let from = env.from;
        if let Err(why) = self.core.check_fresh(&env) {
            self.core
                .replays
                .refused(now, self.core.me, from, env.seq, why);
            return;
        }
        self.core
            .peers
            .entry(from)
            .or_insert(PeerLife {
                incarnation: env.incarnation,
                window: ReplayWindow::default(),
            })
            .accept(env.incarnation, env.seq);
        // A join request comes from a fresh incarnation: whatever that node
        // was in our view, that instance is gone, so it is no sign of life.
        if env.body != Body::JoinRequest {
            self.core.detector.heard(from, net, now);
        }
        match env.body {
            Body::Heartbeat { view, seq, db_seq } => {
                // Majority: a heartbeat is also the owner's request for a
                // vote (a lease acknowledgement). Disk models: the owner's
                // database number shows a member an update it lost.
                if let Some((epoch, _)) = &view {
                    let epoch = *epoch;
                    let (q, core) = self.parts();
                    q.on_heartbeat(core, now, net, from, seq, epoch, db_seq);
                }
                self.on_heartbeat(now, from, view)
            }
            Body::Regroup {
                epoch,
                seen,
                holds_quorum,
                replica,
            } => {
                if matches!(self.core.phase, Phase::Joining { .. }) {
                    let (q, core) = self.parts();
                    q.regroup_heard_while_joining(core, now);
                }
                self.on_regroup(now, from, epoch, &seen, holds_quorum, replica)
            }
            Body::Install { view, replica } => self.on_install(now, from, view, replica),
            Body::JoinRequest => self.on_join_request(now, from),
            Body::JoinAccept { view, db } => self.on_join_accept(now, view, db),
            Body::JoinRefuse { .. } => {
                // A cluster exists: keep asking rather than form alone.
                if let Phase::Joining { next_ask, .. } = self.core.phase {
                    self.core.phase = Phase::Joining {
                        form_at: now
                            + self.core.cfg.timing.heartbeat * (6 + 2 * u32::from(self.core.me)),
                        next_ask,
                    };
                }
            }
            Body::Exit => self.on_exit(now, from),
            Body::GumRequest { id, change } => {
                if self.is_locker() && self.core.gum_seen.insert((from, env.incarnation, id)) {
                    self.core.gum_queue.push_back((from, id, change));
                }
            }
            Body::GumApply {
                seq,
                change,
                origin,
            } => self.on_gum_apply(now, from, seq, change, origin),
            Body::GumNack { seq, reason } => {
                if self.is_locker() {
                    tracing::warn!(node = self.core.me, peer = from, seq, %reason, "member failed an update: evicting");
                    self.evict(now, from);
                }
            }
            Body::GumReject { id, reason } => {
                self.core.actions.push(Action::Rejected { id, reason });
            }
            Body::DbSync { db } => {
                let (q, core) = self.parts();
                q.on_db_sync(core, from, db);
            }
            Body::SyncRequest => {
                let (q, core) = self.parts();
                q.on_sync_request(core, from);
            }
            Body::Evict => {
                if self.core.view().is_some_and(|v| v.owner == Some(from)) {
                    self.stop("evicted by the cluster");
                }
            }
            body @ (Body::LeaseAck { .. }
            | Body::Replicate { .. }
            | Body::ReplicateAck { .. }
            | Body::ReplicaSync { .. }) => {
                // The majority model's votes and replication: a disk-model
                // node neither sends nor takes part in them.
                let (q, core) = self.parts();
                q.step(core, now, from, body);
            }
            Body::GumCommitted { id, seq } => {
                if self.core.view().is_some_and(|v| v.owner == Some(from)) {
                    self.core.actions.push(Action::Committed { id, seq });
                }
            }
            Body::ReadIndex { id } => self.on_read_index(now, from, id),
            Body::ReadIndexReply { id, seq } => {
                if let Some(r) = self.core.reads.get_mut(&id) {
                    if r.owner == from {
                        match seq {
                            Some(seq) => r.index = Some(seq),
                            None => {
                                self.core.reads.remove(&id);
                                self.core.actions.push(Action::ReadRefused {
                                    id,
                                    why: NotReadable::NotConfirmed,
                                });
                            }
                        }
                    }
                }
            }
        }
        self.pump_gum(now);
        self.settle_reads(now);
    }

    /// A disk operation finished.
    pub fn disk_done(&mut self, now: Duration, id: u64, result: DiskResult) {
        let Some(kind) = self.core.ops.remove(&id) else {
            return;
        };
        if self.core.is_stopped() {
            return;
        }
        if kind != OpKind::Release {
            let (q, core) = self.parts();
            q.disk_done(core, now, kind, id, result);
        }
        self.pump_gum(now);
        self.settle_reads(now);
    }

    /// A client asks to read the database through this node. A member's
    /// copy may be stale without the member knowing: it was stopped
    /// (SIGSTOP) while the others excluded it and committed changes, or an
    /// update is still on its way to it. So only the owner, within its
    /// lease, answers at once; any other member first asks the owner for
    /// its database sequence number (the read barrier, as Raft's
    /// ReadIndex, Ongaro's thesis §6.4) and answers once its own copy has
    /// reached it (docs/semantics.md, "Reading the database"). The owner
    /// confirms only while it acts as owner, at a moment after the client
    /// sent its read, so every change acknowledged before that is in the
    /// answer.
    pub fn read(&mut self, now: Duration) -> Result<ReadStart, NotReadable> {
        if !self.is_settled_member() {
            return Err(NotReadable::NotMember);
        }
        if !self.db_current() {
            return Err(NotReadable::NotCurrent);
        }
        let owner = self
            .core
            .view()
            .and_then(|v| v.owner)
            .expect("a settled member knows its owner");
        if owner == self.core.me {
            return if !self.is_acting_owner(now) {
                Err(NotReadable::NoLease)
            } else if !self.quorum.model().owner_db_complete() {
                Err(NotReadable::LogNotRecovered)
            } else {
                Ok(ReadStart::Now)
            };
        }
        let id = self.core.next_read;
        self.core.next_read += 1;
        self.core.send(owner, Body::ReadIndex { id });
        self.core.reads.insert(
            id,
            PendingRead {
                owner,
                index: None,
                until: now + self.core.cfg.timing.heartbeat * 4,
            },
        );
        Ok(ReadStart::Pending(id))
    }

    /// Proposes a database change; returns the request id, or None when
    /// this node cannot take updates now (not a member, no locker).
    pub fn propose(&mut self, now: Duration, change: Change) -> Option<u64> {
        let owner = self.core.view()?.owner?;
        let id = self.core.next_request;
        self.core.next_request += 1;
        if owner == self.core.me {
            self.core.gum_queue.push_back((self.core.me, id, change));
            self.pump_gum(now);
        } else {
            self.core.send(owner, Body::GumRequest { id, change });
        }
        Some(id)
    }

    /// Clean stop: release the quorum if held, announce exit.
    pub fn shutdown(&mut self, _now: Duration) {
        if self.core.is_stopped() {
            return;
        }
        let others = self.core.others();
        if let Some(op) = self.core.arbiter.release() {
            self.core.issue(OpKind::Release, op);
        }
        let (q, core) = self.parts();
        q.release(core);
        for n in others {
            self.core.send(n, Body::Exit);
        }
        self.stop("shut down");
    }

    /// Administrator: evict `node` (only the locker acts on it).
    pub fn evict(&mut self, now: Duration, node: NodeId) {
        if !self.is_locker() || node == self.core.me {
            return;
        }
        let Some(v) = self.core.view().cloned() else {
            return;
        };
        if !v.contains(node) {
            return;
        }
        self.core.send(node, Body::Evict);
        let mut nv = v.clone();
        nv.members.retain(|&n| n != node);
        nv.paused.retain(|&n| n != node);
        self.install_as_owner(now, nv);
    }

    /// Administrator: pause or resume `node` (only the locker acts on it).
    pub fn set_paused(&mut self, now: Duration, node: NodeId, paused: bool) {
        if !self.is_locker() {
            return;
        }
        let Some(mut v) = self.core.view().cloned() else {
            return;
        };
        if !v.contains(node) || v.paused.contains(&node) == paused {
            return;
        }
        if paused {
            v.paused.push(node);
            v.paused.sort();
        } else {
            v.paused.retain(|&n| n != node);
        }
        self.install_as_owner(now, v);
    }

    fn end_collection(&mut self, now: Duration, epoch: u64, seen: BTreeMap<NodeId, bool>) {
        let coordinator = *seen.keys().next().expect("self is always seen");
        if coordinator != self.core.me {
            if let Phase::Member(m) = &mut self.core.phase {
                if let Some(r) = &mut m.regroup {
                    r.stage = RegroupStage::AwaitInstall {
                        until: now + self.core.cfg.timing.heartbeat * 4,
                    };
                }
            }
            return;
        }
        let (q, core) = self.parts();
        q.end_collection(core, now, epoch, seen);
    }

    // ----- message handlers -----------------------------------------------

    /// The owner confirms a member's read with its database sequence
    /// number, only while it acts as owner and counts the asker a member
    /// (so the changes it commits reach the asker).
    fn on_read_index(&mut self, now: Duration, from: NodeId, id: u64) {
        let me = self.core.me;
        let confirms = self.is_settled_member()
            && self
                .core
                .view()
                .is_some_and(|v| v.owner == Some(me) && v.contains(from))
            && self.is_acting_owner(now)
            && self.quorum.model().owner_db_complete();
        let seq = confirms.then_some(self.core.db.seq);
        self.core.send(from, Body::ReadIndexReply { id, seq });
    }

    /// Answers or refuses the reads waiting for the owner: ready once the
    /// copy has reached the owner's index; refused when the node is no
    /// longer a settled member of that owner's view with a current copy,
    /// or at the deadline.
    fn settle_reads(&mut self, now: Duration) {
        if self.core.reads.is_empty() {
            return;
        }
        let owner = if self.is_settled_member() && self.db_current() {
            self.core.view().and_then(|v| v.owner)
        } else {
            None
        };
        let seq = self.core.db.seq;
        let done: Vec<(u64, Option<NotReadable>)> = self
            .core
            .reads
            .iter()
            .filter_map(|(&id, r)| {
                if owner != Some(r.owner) {
                    Some((id, Some(NotReadable::NotMember)))
                } else if r.index.is_some_and(|i| seq >= i) {
                    Some((id, None))
                } else if now >= r.until {
                    Some((id, Some(NotReadable::NotConfirmed)))
                } else {
                    None
                }
            })
            .collect();
        for (id, refused) in done {
            self.core.reads.remove(&id);
            self.core.actions.push(match refused {
                None => Action::ReadReady { id },
                Some(why) => Action::ReadRefused { id, why },
            });
        }
    }

    fn on_heartbeat(&mut self, now: Duration, from: NodeId, their: Option<(u64, Vec<NodeId>)>) {
        let Some(view) = self.core.view().cloned() else {
            return;
        };
        let Some((epoch, members)) = their else {
            return;
        };
        self.core.max_epoch = self.core.max_epoch.max(epoch);
        if !view.contains(from) {
            // A stale node that believes it is still a member: the owner
            // tells it the current view, which excludes it, so it stops.
            let may_tell = self.quorum.model().tells_stale_members(&self.core, now);
            if members.contains(&self.core.me) && view.owner == Some(self.core.me) && may_tell {
                // An Install at or below the stale node's own epoch would be
                // ignored: an owner that formed after a restart can be
                // behind (sim seed 3144: the owner at epoch 1 told a stale
                // member at epoch 6 about its view, in vain, until the end).
                // Reinstall ours above it first.
                let view = if epoch >= view.epoch {
                    self.install_as_owner(now, view);
                    self.core.view().cloned().expect("just installed")
                } else {
                    view
                };
                self.core.send(
                    from,
                    Body::Install {
                        view,
                        replica: None,
                    },
                );
            }
            return;
        }
        let in_regroup = self.core.in_regroup();
        if !in_regroup && (epoch != view.epoch || members != view.members) && epoch >= view.epoch {
            self.start_regroup(now, epoch.max(self.core.max_epoch) + 1);
        }
    }

    fn on_regroup(
        &mut self,
        now: Duration,
        from: NodeId,
        epoch: u64,
        seen: &[NodeId],
        holds: bool,
        replica: Option<crate::db::Replica>,
    ) {
        let Some(view) = self.core.view().cloned() else {
            return;
        };
        self.core.max_epoch = self.core.max_epoch.max(epoch);
        if epoch <= view.epoch && self.quorum.model().reaches_beyond_view() && !view.contains(from)
        {
            // Majority: a node outside our view (forming, or back from a
            // partition) regroups below our epoch. The acting owner takes
            // it in; it adopts the install and asks for the replica.
            if self.is_acting_owner(now) {
                tracing::info!(
                    node = self.core.me,
                    joiner = from,
                    "taking a regrouping node into the view"
                );
                let mut nv = view.clone();
                nv.members.push(from);
                nv.members.sort();
                self.install_as_owner(now, nv);
            }
            return;
        }
        if epoch <= view.epoch {
            // The sender missed our install: regroup again with it.
            let in_regroup = self.core.in_regroup();
            if view.contains(from) && !in_regroup {
                self.start_regroup(now, self.core.max_epoch + 1);
            }
            return;
        }
        let current = match &self.core.phase {
            Phase::Member(m) => m.regroup.as_ref().map(|r| r.epoch),
            _ => None,
        };
        match current {
            Some(e) if e > epoch => return,
            Some(e) if e == epoch => {}
            _ => self.start_regroup(now, epoch),
        }
        if let Phase::Member(m) = &mut self.core.phase {
            if let Some(r) = &mut m.regroup {
                if r.epoch == epoch {
                    r.seen.insert(from, holds);
                    if let Some(rep) = replica {
                        self.quorum.model_mut().heard_replica(from, rep);
                    }
                    // Whom the sender saw is seen too. A node that resumed
                    // with an old view regroups only with the members of
                    // that view; without this the coordinator never heard
                    // of it, installed views without it, and it pulled its
                    // old peers into a new regroup every round (sim seed
                    // 3497: regroup still cycling at the end). A node only
                    // seen through others is not counted as holding the
                    // quorum: the holder announces that itself.
                    for &n in seen {
                        r.seen.entry(n).or_insert(false);
                    }
                }
            }
        }
    }

    fn on_install(
        &mut self,
        now: Duration,
        from: NodeId,
        view: View,
        replica: Option<(u64, crate::db::Replica)>,
    ) {
        let Phase::Member(m) = &self.core.phase else {
            return;
        };
        self.core.max_epoch = self.core.max_epoch.max(view.epoch);
        if view.epoch <= m.view.epoch {
            return;
        }
        if let Some(r) = &m.regroup {
            if view.epoch < r.epoch {
                return;
            }
        }
        if !view.contains(self.core.me) {
            self.stop(format!(
                "excluded from the cluster by node {from} at epoch {}",
                view.epoch
            ));
            return;
        }
        let (q, core) = self.parts();
        q.on_install(core, now, view, replica);
    }

    fn on_join_request(&mut self, now: Duration, from: NodeId) {
        let Some(view) = self.core.view().cloned() else {
            return;
        };
        let regrouping = self.core.in_regroup();
        if view.owner == Some(from) && !regrouping {
            // The quorum owner restarted: the cluster has lost its owner.
            tracing::info!(
                node = self.core.me,
                owner = from,
                "quorum owner restarted: regroup"
            );
            self.start_regroup(now, view.epoch.max(self.core.max_epoch) + 1);
            let reason = JoinRefusal::Busy;
            self.core.send(from, Body::JoinRefuse { reason });
            return;
        }
        if view.owner != Some(self.core.me) {
            let reason = if regrouping {
                JoinRefusal::Busy
            } else {
                JoinRefusal::NotOwner { owner: view.owner }
            };
            self.core.send(from, Body::JoinRefuse { reason });
            return;
        }
        if !regrouping && self.quorum.model().admits_only_by_regroup(&self.core, now) {
            // Majority: an owner without a majority regroups with every
            // node, the joiner included (it takes part from Joining).
            tracing::info!(
                node = self.core.me,
                joiner = from,
                "owner without a majority: regroup with the joiner"
            );
            self.start_regroup(now, view.epoch.max(self.core.max_epoch) + 1);
            self.core.send(
                from,
                Body::JoinRefuse {
                    reason: JoinRefusal::Busy,
                },
            );
            return;
        }
        let log_ready = self.quorum.model().log_ready();
        if regrouping || !log_ready || !self.is_acting_owner(now) {
            self.core.send(
                from,
                Body::JoinRefuse {
                    reason: JoinRefusal::Busy,
                },
            );
            return;
        }
        let view = if view.contains(from) {
            view
        } else {
            let mut nv = view.clone();
            nv.members.push(from);
            nv.members.sort();
            self.install_as_owner(now, nv);
            self.core.view().cloned().expect("just installed")
        };
        tracing::info!(
            node = self.core.me,
            joiner = from,
            epoch = view.epoch,
            "admitting joiner"
        );
        let db = self.core.db.clone();
        self.core.send(from, Body::JoinAccept { view, db });
    }

    fn on_join_accept(&mut self, now: Duration, view: View, db: DbSnapshot) {
        if !matches!(self.core.phase, Phase::Joining { .. }) || !view.contains(self.core.me) {
            return;
        }
        let (q, core) = self.parts();
        if !q.take_join_db(core, db) {
            return;
        }
        tracing::info!(node = self.core.me, epoch = view.epoch, "joined");
        self.adopt_view(now, view);
    }

    fn on_exit(&mut self, now: Duration, from: NodeId) {
        let Some(view) = self.core.view().cloned() else {
            return;
        };
        if !view.contains(from) {
            return;
        }
        if view.owner == Some(from) {
            let (q, core) = self.parts();
            q.owner_left(core, now, &view, from);
        } else if view.owner == Some(self.core.me) {
            let mut nv = view.clone();
            nv.members.retain(|&n| n != from);
            nv.paused.retain(|&n| n != from);
            self.install_as_owner(now, nv);
        }
    }

    fn on_gum_apply(
        &mut self,
        _now: Duration,
        from: NodeId,
        seq: u64,
        change: Change,
        origin: Option<(NodeId, u64)>,
    ) {
        let Some(view) = self.core.view() else {
            return;
        };
        if view.owner != Some(from) || seq <= self.core.db.seq {
            return;
        }
        let gap = seq > self.core.db.seq + 1;
        self.core.pending_apply.insert(seq, (change, origin));
        if gap {
            self.core.send(from, Body::SyncRequest);
        }
        self.core.apply_pending(from);
    }
}

impl Core {
    /// The current view, if a member.
    fn view(&self) -> Option<&View> {
        match &self.phase {
            Phase::Member(m) => Some(&m.view),
            _ => None,
        }
    }

    fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped(_))
    }

    /// A member with a regroup in progress.
    fn in_regroup(&self) -> bool {
        matches!(&self.phase, Phase::Member(m) if m.regroup.is_some())
    }

    /// Whether `from` owns this node's view of `epoch` and no regroup is
    /// under way: what the owner's heartbeats and updates are checked by.
    fn settled_owner_is(&self, from: NodeId, epoch: u64) -> bool {
        matches!(&self.phase, Phase::Member(ms)
            if ms.regroup.is_none() && ms.view.owner == Some(from) && ms.view.epoch == epoch)
    }

    /// Owner of its view.
    fn is_owner(&self) -> bool {
        self.view().is_some_and(|v| v.owner == Some(self.me))
    }

    /// The nodes of the current view's paused set that are among `seen`
    /// (a regroup keeps a pause only for nodes that take part).
    fn paused_among<'a>(&self, seen: impl IntoIterator<Item = &'a NodeId>) -> Vec<NodeId> {
        let Some(v) = self.view() else {
            return Vec::new();
        };
        let seen: BTreeSet<NodeId> = seen.into_iter().copied().collect();
        v.paused
            .iter()
            .copied()
            .filter(|p| seen.contains(p))
            .collect()
    }

    // ----- plumbing ----------------------------------------------------

    /// Sends `Install` of `view` to every node of `to` but this one: the
    /// coordinator's last step of a regroup, or an owner's view change.
    fn send_install(
        &mut self,
        to: impl IntoIterator<Item = NodeId>,
        view: &View,
        replica: Option<(u64, crate::db::Replica)>,
    ) {
        for n in to {
            if n != self.me {
                self.send(
                    n,
                    Body::Install {
                        view: view.clone(),
                        replica: replica.clone(),
                    },
                );
            }
        }
    }

    fn send(&mut self, to: NodeId, body: Body) {
        for net in Net::ALL {
            self.send_on(to, net, body.clone());
        }
    }

    fn send_on(&mut self, to: NodeId, net: Net, body: Body) {
        let seq = self.sent_seq.entry(to).or_insert(0);
        *seq += 1;
        let seq = *seq;
        self.actions.push(Action::Send {
            net,
            env: Envelope {
                cluster: self.cfg.name.clone(),
                from: self.me,
                to,
                incarnation: self.incarnation,
                to_incarnation: self.peers.get(&to).map_or(0, |p| p.incarnation),
                seq,
                body,
            },
        });
    }

    /// Issues `op` on the quorum disk.
    fn issue(&mut self, kind: OpKind, op: DiskOp) -> u64 {
        self.issue_on(kind, DiskId::Quorum, op)
    }

    fn issue_on(&mut self, kind: OpKind, disk: DiskId, op: DiskOp) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, kind);
        self.actions.push(Action::Disk { id, disk, op });
        id
    }

    /// Stops the cluster service, unless stopped already; whether it
    /// stopped now (the model then forgets its own state,
    /// [`QuorumModel::stopped`]).
    fn stop(&mut self, reason: String) -> bool {
        if self.is_stopped() {
            return false;
        }
        tracing::warn!(node = self.me, %reason, "stopping cluster service");
        self.arbiter = Arbiter::new(&self.cfg.quorum, self.cfg.timing, pr_key(self.me));
        self.hold_writes(true);
        self.phase = Phase::Stopped(reason.clone());
        self.actions.push(Action::StopClusterService { reason });
        true
    }

    /// The common part of adopting `view`: watch its members, become a
    /// member, hold writes while it has no owner. The model's part
    /// follows ([`QuorumModel::adopt_view`]).
    fn enter_view(&mut self, now: Duration, view: &View) {
        self.max_epoch = self.max_epoch.max(view.epoch);
        let peers: Vec<NodeId> = view
            .members
            .iter()
            .copied()
            .filter(|&n| n != self.me)
            .collect();
        self.detector.watch_only(peers, now);
        let no_owner = view.owner.is_none();
        let deadline = no_owner.then(|| {
            let t = self.cfg.timing;
            now + t.online_delay + t.challenge_wait * 2 + t.heartbeat * 20
        });
        self.phase = Phase::Member(Membership {
            view: view.clone(),
            regroup: None,
            quorum_deadline: deadline,
        });
        self.hold_writes(no_owner);
    }

    /// A member asks the owner of each new view for the database: the
    /// owner's own `DbSync` may have arrived before this view (and been
    /// dropped as not from our owner), or been sent while we were paused
    /// and sent to an older view. Without this a member could settle with
    /// an old database (sim seeds 1040 and 4291 with the real quorum log:
    /// a paused member resumed into the view at seq 0).
    fn ask_owner_for_db(&mut self, view: &View) {
        if let Some(owner) = view.owner.filter(|&o| o != self.me) {
            self.send(owner, Body::SyncRequest);
        }
    }

    /// The common part of entering regroup `epoch`: the regroup state,
    /// collecting from now; the old view and the regroup, to announce it
    /// with ([`QuorumModel::start_regroup`]). None when not a member.
    fn begin_regroup(&mut self, now: Duration, epoch: u64) -> Option<(View, Regroup)> {
        let Phase::Member(m) = &mut self.phase else {
            return None;
        };
        tracing::info!(node = self.me, epoch, "regroup");
        self.max_epoch = self.max_epoch.max(epoch);
        let hb = self.cfg.timing.heartbeat;
        let mut seen = BTreeMap::new();
        seen.insert(self.me, self.arbiter.holds());
        let rg = Regroup {
            epoch,
            seen,
            stage: RegroupStage::Collect {
                until: now + hb * 3,
                resend: now + hb,
            },
        };
        m.regroup = Some(rg.clone());
        Some((m.view.clone(), rg))
    }

    fn hold_writes(&mut self, hold: bool) {
        if self.holding != hold {
            self.holding = hold;
            self.actions.push(Action::HoldWrites(hold));
        }
    }

    fn members(&self) -> Vec<NodeId> {
        self.view().map(|v| v.members.clone()).unwrap_or_default()
    }

    fn others(&self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|&n| n != self.me)
            .collect()
    }

    fn all_others(&self) -> Vec<NodeId> {
        (0..self.cfg.nodes.len() as NodeId)
            .filter(|&n| n != self.me)
            .collect()
    }

    /// Whether an authenticated envelope is new: not from an earlier
    /// incarnation of its sender, not addressed to an earlier life of this
    /// node, and with a sequence number not accepted before (`replay`).
    fn check_fresh(&self, env: &Envelope) -> Result<(), Replay> {
        if env.to_incarnation != 0 && env.to_incarnation != self.incarnation {
            return Err(Replay::OtherLife {
                addressed: env.to_incarnation,
            });
        }
        match self.peers.get(&env.from) {
            Some(p) => p.check(env.incarnation, env.seq),
            None => ReplayWindow::default().check(env.seq),
        }
    }

    fn sync_members(&mut self) {
        let db = self.db.clone();
        for n in self.others() {
            self.send(n, Body::DbSync { db: db.clone() });
        }
    }

    fn apply_pending(&mut self, locker: NodeId) {
        while let Some((change, origin)) = self.pending_apply.remove(&(self.db.seq + 1)) {
            let seq = self.db.seq + 1;
            if let Err(e) = self.db.apply(seq, &change) {
                self.send(
                    locker,
                    Body::GumNack {
                        seq,
                        reason: e.to_string(),
                    },
                );
                return;
            }
            if let Some((o, id)) = origin {
                if o == self.me {
                    self.actions.push(Action::Committed { id, seq });
                }
            }
        }
    }

    fn log_config(&self) -> LogConfig {
        log_manager::region_config(self.cfg.log_limit)
    }

    /// Takes the next queued change that applies to the database; changes
    /// that do not are refused to whoever proposed them on the way.
    fn next_valid_gum(&mut self) -> Option<(NodeId, u64, Change)> {
        while let Some((origin, id, change)) = self.gum_queue.pop_front() {
            match self.db.check(&change) {
                Ok(()) => return Some((origin, id, change)),
                Err(e) => {
                    let reason = e.to_string();
                    if origin == self.me {
                        self.actions.push(Action::Rejected { id, reason });
                    } else {
                        self.send(origin, Body::GumReject { id, reason });
                    }
                }
            }
        }
        None
    }
}

mod disk;
mod majority;
pub mod quorum;
pub mod replay;

#[cfg(test)]
mod tests;
