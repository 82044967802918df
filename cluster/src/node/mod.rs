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
use quorum::Quorum;
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

/// One cluster node.
#[derive(Debug)]
pub struct Node {
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
        Ok(Node {
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
            quorum,
        })
    }

    // ----- observation -------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.me
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The current view, if a member.
    pub fn view(&self) -> Option<&View> {
        match &self.phase {
            Phase::Member(m) => Some(&m.view),
            _ => None,
        }
    }

    pub fn db(&self) -> &DbSnapshot {
        &self.db
    }

    pub fn arbiter(&self) -> &Arbiter {
        &self.arbiter
    }

    /// Authenticated messages refused as replays since this node started
    /// (`replay`).
    pub fn replays_refused(&self) -> u64 {
        self.replays.total()
    }

    /// Acts as quorum owner now: holds the disk, online, lease valid
    /// (majority: owner of its view with a majority of live votes).
    pub fn is_acting_owner(&self, now: Duration) -> bool {
        !self.is_stopped()
            && match &self.quorum {
                Quorum::Majority(_) => self.maj_acting(now),
                Quorum::Disk(_) => self.arbiter.is_acting_owner(now),
            }
    }

    /// Shared-disk writes are held (regroup, or no quorum owner yet).
    pub fn writes_held(&self) -> bool {
        self.holding
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped(_))
    }

    /// Whether the node is a settled member (no regroup, owner known).
    pub fn is_settled_member(&self) -> bool {
        matches!(&self.phase, Phase::Member(m) if m.regroup.is_none() && m.view.owner.is_some())
    }

    /// The nodes of the current view's paused set that are among `seen`
    /// (a regroup keeps a pause only for nodes that take part).
    pub(crate) fn paused_among<'a>(
        &self,
        seen: impl IntoIterator<Item = &'a NodeId>,
    ) -> Vec<NodeId> {
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

    /// Takes the actions collected so far.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When `tick` should be called next (`now`: the time of the last
    /// input).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let mut d: Vec<Duration> = Vec::new();
        match &self.phase {
            Phase::Stopped(_) => return None,
            // Majority: nothing to do before the local replica is read.
            Phase::Joining { .. } if self.quorum.awaits_replica() => {}
            Phase::Joining { form_at, next_ask } => {
                d.push(*form_at);
                d.push(*next_ask);
            }
            Phase::Forming => {}
            Phase::Member(m) => {
                d.push(self.next_heartbeat);
                d.extend(self.detector.next_deadline());
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
        match &self.quorum {
            Quorum::Majority(m) => d.extend(m.next_deadline(now)),
            Quorum::Disk(_) => d.extend(self.arbiter.next_deadline(now)),
        }
        d.into_iter().min()
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

    fn issue(&mut self, kind: OpKind, op: DiskOp) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, kind);
        self.actions.push(Action::Disk {
            id,
            disk: DiskId::Quorum,
            op,
        });
        id
    }

    fn hold_writes(&mut self, hold: bool) {
        if self.holding != hold {
            self.holding = hold;
            self.actions.push(Action::HoldWrites(hold));
        }
    }

    fn close_log(&mut self) {
        if let Some(d) = self.quorum.disk_mut() {
            d.close();
        }
        self.ops.retain(|_, k| *k != OpKind::Log);
    }

    fn stop(&mut self, reason: impl Into<String>) {
        if self.is_stopped() {
            return;
        }
        let reason = reason.into();
        tracing::warn!(node = self.me, %reason, "stopping cluster service");
        self.arbiter = Arbiter::new(&self.cfg.quorum, self.cfg.timing, pr_key(self.me));
        match &mut self.quorum {
            Quorum::Majority(m) => {
                m.witness = m
                    .witness
                    .as_ref()
                    .map(|_| Arbiter::witness(self.cfg.timing, pr_key(self.me)));
            }
            Quorum::Disk(d) => d.close(),
        }
        self.hold_writes(true);
        self.phase = Phase::Stopped(reason.clone());
        self.actions.push(Action::StopClusterService { reason });
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

    // ----- inputs ------------------------------------------------------

    /// Time passes.
    pub fn tick(&mut self, now: Duration) {
        if self.is_stopped() {
            return;
        }
        // A jump longer than the detection time means this process did not
        // run (paused): its view of the peers is stale, not theirs of it.
        if let Some(last) = self.last_tick {
            if now.saturating_sub(last) >= self.cfg.timing.detection() {
                self.detector.reset(now);
            }
        }
        self.last_tick = Some(now);
        match self.quorum {
            Quorum::Majority(_) => self.maj_tick(now),
            Quorum::Disk(_) => {
                let outs = self.arbiter.tick(now);
                self.on_arbiter(now, outs);
            }
        }
        if self.is_stopped() {
            return;
        }
        match self.phase.clone() {
            Phase::Joining { form_at, next_ask } => {
                if self.quorum.awaits_replica() {
                    // Nothing to offer or compare before the local
                    // replica is recovered.
                } else if now >= form_at {
                    match self.quorum {
                        Quorum::Majority(_) => self.maj_form(now),
                        Quorum::Disk(_) => self.become_forming(now),
                    }
                } else if now >= next_ask {
                    for n in self.all_others() {
                        self.send(n, Body::JoinRequest);
                    }
                    self.phase = Phase::Joining {
                        form_at,
                        next_ask: now + self.cfg.timing.heartbeat * 2,
                    };
                }
            }
            Phase::Forming | Phase::Stopped(_) => {}
            Phase::Member(m) => self.tick_member(now, m),
        }
        self.pump_gum(now);
    }

    fn tick_member(&mut self, now: Duration, m: Membership) {
        let hb = self.cfg.timing.heartbeat;
        if now >= self.next_heartbeat {
            self.hb_seq += 1;
            if matches!(self.quorum, Quorum::Majority(_)) && m.view.owner == Some(self.me) {
                self.maj_probe_sent(self.hb_seq, now);
                self.maj_resend();
            }
            let view = Some((m.view.epoch, m.view.members.clone()));
            for n in self.others() {
                for net in Net::ALL {
                    self.send_on(
                        n,
                        net,
                        Body::Heartbeat {
                            seq: self.hb_seq,
                            view: view.clone(),
                        },
                    );
                }
            }
            self.next_heartbeat = now + hb;
        }
        for ev in self.detector.tick(now) {
            match ev {
                Liveness::Suspect { peer } => {
                    tracing::info!(node = self.me, peer, "peer silent on all networks");
                    if m.regroup.is_none() {
                        self.start_regroup(now, m.view.epoch.max(self.max_epoch) + 1);
                    }
                }
                Liveness::NetworkWarning { peer, net } => {
                    tracing::warn!(
                        node = self.me,
                        peer,
                        ?net,
                        "missed heartbeats on one network"
                    );
                }
                Liveness::NetworkRecovered { .. } => {}
            }
        }
        let Phase::Member(m) = self.phase.clone() else {
            return;
        };
        if m.quorum_deadline.is_some_and(|q| now >= q) {
            match self.quorum {
                Quorum::Majority(_) => self.maj_quorum_deadline(now),
                Quorum::Disk(_) => self.disk_quorum_deadline(),
            }
            if self.is_stopped() {
                return;
            }
        }
        if let Some(rg) = m.regroup {
            match rg.stage {
                RegroupStage::Collect { until, resend } => {
                    if now >= until {
                        self.end_collection(now, rg.epoch, rg.seen.clone());
                    } else if now >= resend {
                        self.announce_regroup(&m.view, &rg);
                        if let Phase::Member(mm) = &mut self.phase {
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
                        self.start_regroup(now, rg.epoch.max(self.max_epoch) + 1);
                    }
                }
            }
        }
    }

    /// An authenticated message arrived on `net`.
    pub fn step(&mut self, now: Duration, net: Net, env: Envelope) {
        if self.is_stopped() || env.to != self.me || env.from == self.me {
            return;
        }
        let from = env.from;
        if let Err(why) = self.check_fresh(&env) {
            self.replays.refused(now, self.me, from, env.seq, why);
            return;
        }
        self.peers
            .entry(from)
            .or_insert(PeerLife {
                incarnation: env.incarnation,
                window: ReplayWindow::default(),
            })
            .accept(env.incarnation, env.seq);
        // A join request comes from a fresh incarnation: whatever that node
        // was in our view, that instance is gone, so it is no sign of life.
        if env.body != Body::JoinRequest {
            self.detector.heard(from, net, now);
        }
        match env.body {
            Body::Heartbeat { view, seq } => {
                // Majority: a heartbeat is also the owner's request for a
                // vote (a lease acknowledgement).
                if let (Quorum::Majority(_), Some((epoch, _))) = (&self.quorum, &view) {
                    let epoch = *epoch;
                    self.maj_on_heartbeat(now, net, from, seq, epoch);
                }
                self.on_heartbeat(now, from, view)
            }
            Body::Regroup {
                epoch,
                seen,
                holds_quorum,
                replica,
            } => {
                if self.quorum.majority().is_some_and(|m| m.ready)
                    && matches!(self.phase, Phase::Joining { .. })
                {
                    // Majority: nodes form together, by regroup; a node
                    // still asking to join takes part.
                    self.maj_enter_pseudo_view(now);
                }
                self.on_regroup(now, from, epoch, &seen, holds_quorum, replica)
            }
            Body::Install { view, replica } => self.on_install(now, from, view, replica),
            Body::JoinRequest => self.on_join_request(now, from),
            Body::JoinAccept { view, db } => self.on_join_accept(now, view, db),
            Body::JoinRefuse { .. } => {
                // A cluster exists: keep asking rather than form alone.
                if let Phase::Joining { next_ask, .. } = self.phase {
                    self.phase = Phase::Joining {
                        form_at: now + self.cfg.timing.heartbeat * (6 + 2 * u32::from(self.me)),
                        next_ask,
                    };
                }
            }
            Body::Exit => self.on_exit(now, from),
            Body::GumRequest { id, change } => {
                if self.is_locker() && self.gum_seen.insert((from, env.incarnation, id)) {
                    self.gum_queue.push_back((from, id, change));
                }
            }
            Body::GumApply {
                seq,
                change,
                origin,
            } => self.on_gum_apply(now, from, seq, change, origin),
            Body::GumNack { seq, reason } => {
                if self.is_locker() {
                    tracing::warn!(node = self.me, peer = from, seq, %reason, "member failed an update: evicting");
                    self.evict(now, from);
                }
            }
            Body::GumReject { id, reason } => {
                self.actions.push(Action::Rejected { id, reason });
            }
            Body::DbSync { db } => match self.quorum {
                // Majority: members take the owner's tagged replica instead.
                Quorum::Majority(_) => {}
                Quorum::Disk(_) => self.on_db_sync(from, db),
            },
            Body::SyncRequest => match self.quorum {
                Quorum::Majority(_) => self.maj_on_sync_request(from),
                Quorum::Disk(_) => self.disk_on_sync_request(from),
            },
            Body::Evict => {
                if self.view().is_some_and(|v| v.owner == Some(from)) {
                    self.stop("evicted by the cluster");
                }
            }
            body @ (Body::LeaseAck { .. }
            | Body::Replicate { .. }
            | Body::ReplicateAck { .. }
            | Body::ReplicaSync { .. }) => match self.quorum {
                Quorum::Majority(_) => self.maj_step(now, from, body),
                // The majority model's votes and replication: a disk-model
                // node neither sends nor takes part in them.
                Quorum::Disk(_) => {}
            },
            Body::GumCommitted { id, seq } => {
                if self.view().is_some_and(|v| v.owner == Some(from)) {
                    self.actions.push(Action::Committed { id, seq });
                }
            }
        }
        self.pump_gum(now);
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

    /// A disk operation finished.
    pub fn disk_done(&mut self, now: Duration, id: u64, result: DiskResult) {
        let Some(kind) = self.ops.remove(&id) else {
            return;
        };
        if self.is_stopped() {
            return;
        }
        match kind {
            OpKind::Arbiter => {
                let outs = self.arbiter.on_result(now, result);
                self.on_arbiter(now, outs);
            }
            OpKind::Log => self.on_log_done(now, id, result),
            OpKind::Release => {}
            OpKind::Local => self.maj_on_local_done(now, id, result),
            OpKind::Witness => {
                let outs = match self.quorum.majority_mut().and_then(|m| m.witness.as_mut()) {
                    Some(w) => w.on_result(now, result),
                    None => vec![],
                };
                self.maj_on_witness(now, outs);
            }
        }
        self.pump_gum(now);
    }

    /// Proposes a database change; returns the request id, or None when
    /// this node cannot take updates now (not a member, no locker).
    pub fn propose(&mut self, now: Duration, change: Change) -> Option<u64> {
        let owner = self.view()?.owner?;
        let id = self.next_request;
        self.next_request += 1;
        if owner == self.me {
            self.gum_queue.push_back((self.me, id, change));
            self.pump_gum(now);
        } else {
            self.send(owner, Body::GumRequest { id, change });
        }
        Some(id)
    }

    /// Clean stop: release the quorum if held, announce exit.
    pub fn shutdown(&mut self, _now: Duration) {
        if self.is_stopped() {
            return;
        }
        let others = self.others();
        if let Some(op) = self.arbiter.release() {
            self.issue(OpKind::Release, op);
        }
        if let Some(op) = self
            .quorum
            .majority_mut()
            .and_then(|m| m.witness.as_mut()?.release())
        {
            self.maj_issue_release(op);
        }
        for n in others {
            self.send(n, Body::Exit);
        }
        self.stop("shut down");
    }

    /// Administrator: evict `node` (only the locker acts on it).
    pub fn evict(&mut self, now: Duration, node: NodeId) {
        if !self.is_locker() || node == self.me {
            return;
        }
        let Some(v) = self.view().cloned() else {
            return;
        };
        if !v.contains(node) {
            return;
        }
        self.send(node, Body::Evict);
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
        let Some(mut v) = self.view().cloned() else {
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

    // ----- transitions -------------------------------------------------

    fn become_forming(&mut self, now: Duration) {
        tracing::info!(
            node = self.me,
            "no member answered: arbitrating to form the cluster"
        );
        self.phase = Phase::Forming;
        self.hold_writes(true);
        let outs = self.arbiter.become_challenger(now);
        self.on_arbiter(now, outs);
    }

    fn on_arbiter(&mut self, now: Duration, outs: Vec<ArbOut>) {
        for o in outs {
            match o {
                ArbOut::Issue(op) => {
                    self.issue(OpKind::Arbiter, op);
                }
                ArbOut::Won => {
                    tracing::info!(node = self.me, "won the quorum disk");
                    // Whatever this node knew of the log may be stale (it
                    // may have lost and regained the disk): recover it
                    // again once online, and forget writes still out.
                    self.close_log();
                }
                ArbOut::Online => self.quorum_online(now),
                ArbOut::Lost(why) => {
                    self.stop(format!("quorum arbitration: {why}"));
                    return;
                }
            }
        }
    }

    /// The arbiter brought the quorum online here: form or take over as
    /// owner, then recover the quorum log.
    fn quorum_online(&mut self, now: Duration) {
        tracing::info!(node = self.me, "quorum online");
        match self.phase.clone() {
            Phase::Forming => {
                let view = View {
                    epoch: self.max_epoch + 1,
                    members: vec![self.me],
                    owner: Some(self.me),
                    paused: vec![],
                };
                self.adopt_view(now, view);
            }
            Phase::Member(m) => {
                let mut v = m.view.clone();
                v.owner = Some(self.me);
                self.install_as_owner(now, v);
            }
            _ => {}
        }
        self.disk_open_log();
    }

    /// As owner: install `view` with the next epoch and tell everyone.
    fn install_as_owner(&mut self, now: Duration, mut view: View) {
        if matches!(self.quorum, Quorum::Majority(_)) && !self.is_acting_owner(now) {
            // Majority: only an owner that holds a majority changes the
            // view on its own (its replica holds every committed change,
            // which its members then take); otherwise regroup.
            let in_regroup = matches!(&self.phase, Phase::Member(m) if m.regroup.is_some());
            if !in_regroup {
                let epoch = self.view().map_or(0, |v| v.epoch).max(self.max_epoch) + 1;
                self.start_regroup(now, epoch);
            }
            return;
        }
        let cur = self.view().map_or(0, |v| v.epoch);
        view.epoch = match self.quorum {
            Quorum::Majority(_) => majority::next_epoch(cur.max(self.max_epoch), self.me),
            Quorum::Disk(_) => cur.max(self.max_epoch) + 1,
        };
        view.owner = Some(self.me);
        self.send_install(view.members.clone(), &view, None);
        self.adopt_view(now, view);
    }

    fn adopt_view(&mut self, now: Duration, view: View) {
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
        match self.quorum {
            Quorum::Majority(_) => {
                self.maj_persist_epoch();
                self.maj_update(now);
            }
            Quorum::Disk(_) => self.disk_adopted_view(now, &view),
        }
        // A member asks the owner of each new view for the database: the
        // owner's own `DbSync` may have arrived before this view (and been
        // dropped as not from our owner), or been sent while we were paused
        // and sent to an older view. Without this a member could settle
        // with an old database (sim seeds 1040 and 4291 with the real
        // quorum log: a paused member resumed into the view at seq 0).
        if let Some(owner) = view.owner.filter(|&o| o != self.me) {
            self.send(owner, Body::SyncRequest);
        }
    }

    fn sync_members(&mut self) {
        let db = self.db.clone();
        for n in self.others() {
            self.send(n, Body::DbSync { db: db.clone() });
        }
    }

    fn start_regroup(&mut self, now: Duration, epoch: u64) {
        let Phase::Member(m) = &mut self.phase else {
            return;
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
        let view = m.view.clone();
        if let Some(m) = self.quorum.majority_mut() {
            m.regroup_started();
        }
        self.hold_writes(true);
        self.announce_regroup(&view, &rg);
    }

    fn announce_regroup(&mut self, view: &View, rg: &Regroup) {
        let mut to: BTreeSet<NodeId> = view.members.iter().copied().collect();
        to.extend(rg.seen.keys().copied());
        match self.quorum {
            // A majority may lie outside the old view (forming, healing).
            Quorum::Majority(_) => to.extend(self.all_others()),
            // The quorum disk's holder is in the old view or among those
            // heard.
            Quorum::Disk(_) => {}
        }
        to.remove(&self.me);
        let body = Body::Regroup {
            epoch: rg.epoch,
            seen: rg.seen.keys().copied().collect(),
            holds_quorum: self.arbiter.holds(),
            replica: self.maj_replica(),
        };
        for n in to {
            self.send(n, body.clone());
        }
    }

    fn end_collection(&mut self, now: Duration, epoch: u64, seen: BTreeMap<NodeId, bool>) {
        let coordinator = *seen.keys().next().expect("self is always seen");
        if coordinator != self.me {
            if let Phase::Member(m) = &mut self.phase {
                if let Some(r) = &mut m.regroup {
                    r.stage = RegroupStage::AwaitInstall {
                        until: now + self.cfg.timing.heartbeat * 4,
                    };
                }
            }
            return;
        }
        match self.quorum {
            Quorum::Majority(_) => self.maj_end_collection(now, epoch, seen),
            Quorum::Disk(_) => self.disk_end_collection(now, epoch, seen),
        }
    }

    // ----- message handlers -----------------------------------------------

    fn on_heartbeat(&mut self, now: Duration, from: NodeId, their: Option<(u64, Vec<NodeId>)>) {
        let Some(view) = self.view().cloned() else {
            return;
        };
        let Some((epoch, members)) = their else {
            return;
        };
        self.max_epoch = self.max_epoch.max(epoch);
        if !view.contains(from) {
            // A stale node that believes it is still a member: the owner
            // tells it the current view, which excludes it, so it stops.
            let may_tell = match self.quorum {
                Quorum::Majority(_) => self.is_acting_owner(now),
                Quorum::Disk(_) => true,
            };
            if members.contains(&self.me) && view.owner == Some(self.me) && may_tell {
                // An Install at or below the stale node's own epoch would be
                // ignored: an owner that formed after a restart can be
                // behind (sim seed 3144: the owner at epoch 1 told a stale
                // member at epoch 6 about its view, in vain, until the end).
                // Reinstall ours above it first.
                let view = if epoch >= view.epoch {
                    self.install_as_owner(now, view);
                    self.view().cloned().expect("just installed")
                } else {
                    view
                };
                self.send(
                    from,
                    Body::Install {
                        view,
                        replica: None,
                    },
                );
            }
            return;
        }
        let in_regroup = matches!(&self.phase, Phase::Member(m) if m.regroup.is_some());
        if !in_regroup && (epoch != view.epoch || members != view.members) && epoch >= view.epoch {
            self.start_regroup(now, epoch.max(self.max_epoch) + 1);
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
        let Some(view) = self.view().cloned() else {
            return;
        };
        self.max_epoch = self.max_epoch.max(epoch);
        if epoch <= view.epoch && matches!(self.quorum, Quorum::Majority(_)) && !view.contains(from)
        {
            // Majority: a node outside our view (forming, or back from a
            // partition) regroups below our epoch. The acting owner takes
            // it in; it adopts the install and asks for the replica.
            if self.is_acting_owner(now) {
                tracing::info!(
                    node = self.me,
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
            let in_regroup = matches!(&self.phase, Phase::Member(m) if m.regroup.is_some());
            if view.contains(from) && !in_regroup {
                self.start_regroup(now, self.max_epoch + 1);
            }
            return;
        }
        let current = match &self.phase {
            Phase::Member(m) => m.regroup.as_ref().map(|r| r.epoch),
            _ => None,
        };
        match current {
            Some(e) if e > epoch => return,
            Some(e) if e == epoch => {}
            _ => self.start_regroup(now, epoch),
        }
        if let Phase::Member(m) = &mut self.phase {
            if let Some(r) = &mut m.regroup {
                if r.epoch == epoch {
                    r.seen.insert(from, holds);
                    if let Some(m) = self.quorum.majority_mut() {
                        if let Some(rep) = replica {
                            m.heard_replica(from, rep);
                        }
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
        let Phase::Member(m) = &self.phase else {
            return;
        };
        self.max_epoch = self.max_epoch.max(view.epoch);
        if view.epoch <= m.view.epoch {
            return;
        }
        if let Some(r) = &m.regroup {
            if view.epoch < r.epoch {
                return;
            }
        }
        if !view.contains(self.me) {
            self.stop(format!(
                "excluded from the cluster by node {from} at epoch {}",
                view.epoch
            ));
            return;
        }
        match self.quorum {
            Quorum::Majority(_) => self.maj_on_install(now, view, replica),
            Quorum::Disk(_) => self.disk_on_install(now, view),
        }
    }

    fn on_join_request(&mut self, now: Duration, from: NodeId) {
        let Some(view) = self.view().cloned() else {
            return;
        };
        let regrouping = matches!(&self.phase, Phase::Member(m) if m.regroup.is_some());
        if view.owner == Some(from) && !regrouping {
            // The quorum owner restarted: the cluster has lost its owner.
            tracing::info!(
                node = self.me,
                owner = from,
                "quorum owner restarted: regroup"
            );
            self.start_regroup(now, view.epoch.max(self.max_epoch) + 1);
            let reason = JoinRefusal::Busy;
            self.send(from, Body::JoinRefuse { reason });
            return;
        }
        if view.owner != Some(self.me) {
            let reason = if regrouping {
                JoinRefusal::Busy
            } else {
                JoinRefusal::NotOwner { owner: view.owner }
            };
            self.send(from, Body::JoinRefuse { reason });
            return;
        }
        if matches!(self.quorum, Quorum::Majority(_)) && !regrouping && !self.is_acting_owner(now) {
            // Majority: an owner without a majority regroups with every
            // node, the joiner included (it takes part from Joining).
            tracing::info!(
                node = self.me,
                joiner = from,
                "owner without a majority: regroup with the joiner"
            );
            self.start_regroup(now, view.epoch.max(self.max_epoch) + 1);
            self.send(
                from,
                Body::JoinRefuse {
                    reason: JoinRefusal::Busy,
                },
            );
            return;
        }
        let log_ready = match &self.quorum {
            Quorum::Majority(_) => true,
            Quorum::Disk(d) => d.is_ready(),
        };
        if regrouping || !log_ready || !self.is_acting_owner(now) {
            self.send(
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
            self.view().cloned().expect("just installed")
        };
        tracing::info!(
            node = self.me,
            joiner = from,
            epoch = view.epoch,
            "admitting joiner"
        );
        let db = self.db.clone();
        self.send(from, Body::JoinAccept { view, db });
    }

    fn on_join_accept(&mut self, now: Duration, view: View, db: DbSnapshot) {
        if !matches!(self.phase, Phase::Joining { .. }) || !view.contains(self.me) {
            return;
        }
        match self.quorum {
            // Majority: the owner sends its tagged replica on our
            // SyncRequest, which needs our own replica recovered first.
            Quorum::Majority(_) if self.quorum.awaits_replica() => return,
            Quorum::Majority(_) => {}
            // Disk models: the owner's database, recovered from the log.
            Quorum::Disk(_) => {
                self.db = db;
                self.pending_apply.clear();
            }
        }
        tracing::info!(node = self.me, epoch = view.epoch, "joined");
        self.adopt_view(now, view);
    }

    fn on_exit(&mut self, now: Duration, from: NodeId) {
        let Some(view) = self.view().cloned() else {
            return;
        };
        if !view.contains(from) {
            return;
        }
        if view.owner == Some(from) {
            match self.quorum {
                // The locker left: regroup for a new one.
                Quorum::Majority(_) => self.start_regroup(now, view.epoch.max(self.max_epoch) + 1),
                // Every member computes the same view without the owner;
                // its lowest member arbitrates.
                Quorum::Disk(_) => {
                    let mut nv = view.clone();
                    nv.members.retain(|&n| n != from);
                    nv.paused.retain(|&n| n != from);
                    nv.owner = None;
                    nv.epoch += 1;
                    self.adopt_view(now, nv);
                }
            }
        } else if view.owner == Some(self.me) {
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
        let Some(view) = self.view() else {
            return;
        };
        if view.owner != Some(from) || seq <= self.db.seq {
            return;
        }
        let gap = seq > self.db.seq + 1;
        self.pending_apply.insert(seq, (change, origin));
        if gap {
            self.send(from, Body::SyncRequest);
        }
        self.apply_pending(from);
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

    // ----- Log Manager and Global Update Manager (locker side) ------------

    fn is_locker(&self) -> bool {
        self.view().is_some_and(|v| v.owner == Some(self.me))
            && match &self.quorum {
                Quorum::Majority(m) => m.ready,
                Quorum::Disk(_) => self.arbiter.holds(),
            }
    }

    fn log_config(&self) -> LogConfig {
        log_manager::region_config(self.cfg.log_limit)
    }

    /// The locker takes the next queued change, as its quorum model
    /// commits changes.
    fn pump_gum(&mut self, now: Duration) {
        match self.quorum {
            Quorum::Majority(_) => self.maj_pump_gum(now),
            Quorum::Disk(_) => self.disk_pump_gum(now),
        }
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
