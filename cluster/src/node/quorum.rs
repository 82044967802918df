//! The quorum model a [`Node`] delegates to, and the vote arithmetic the
//! models decide by.
//!
//! Under the disk models (`disk-scsi2`, `disk-pr`) the node's [`Arbiter`]
//! challenges for and defends the shared quorum disk, and the partition
//! with its owner continues (the owner's quorum log in [`DiskQuorum`],
//! `node/disk.rs`); under `majority` the votes of the nodes (and the
//! witness) decide ([`Majority`], `node/majority.rs`). Both implement
//! [`QuorumModel`]: hooks that [`Node`] calls with its [`Core`] (the common
//! protocol's state) wherever the models differ, and the steps of the
//! common protocol that involve the model (adopting a view, entering a
//! regroup, installing a view as owner), which the models take too. The
//! one place that tells the models apart is [`Quorum::model`].
//!
//! [`Arbiter`]: crate::arbiter::Arbiter

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::disk::DiskQuorum;
use super::majority::Majority;
use super::{Core, OpKind, Regroup};
use crate::arbiter::DiskResult;
use crate::config::{ClusterConfig, NodeId, QuorumModel as ModelName};
use crate::db::{DbSnapshot, Replica};
use crate::message::{Body, Net, View};

/// The quorum model of a node, carrying the model's own state.
#[derive(Debug)]
pub(super) enum Quorum {
    /// The shared quorum disk decides: the node's arbiter (kept in
    /// [`Core`], idle under the majority model) and the owner's quorum log.
    Disk(Box<DiskQuorum>),
    /// A majority of votes decides.
    Majority(Box<Majority>),
}

impl Quorum {
    /// The model `cfg` names, for node `me` starting at `now`.
    pub(super) fn new(cfg: &ClusterConfig, me: NodeId, now: Duration) -> Quorum {
        match &cfg.quorum {
            ModelName::Majority { witness } => {
                Quorum::Majority(Box::new(Majority::new(cfg, me, witness.is_some(), now)))
            }
            ModelName::DiskScsi2 | ModelName::DiskPr => Quorum::Disk(Box::new(DiskQuorum::new())),
        }
    }

    pub(super) fn model(&self) -> &dyn QuorumModel {
        match self {
            Quorum::Disk(d) => d.as_ref(),
            Quorum::Majority(m) => m.as_ref(),
        }
    }

    pub(super) fn model_mut(&mut self) -> &mut dyn QuorumModel {
        match self {
            Quorum::Disk(d) => d.as_mut(),
            Quorum::Majority(m) => m.as_mut(),
        }
    }
}

/// What a quorum model decides, and the steps it takes, on a node's
/// [`Core`]. The required methods are the model's hooks; the provided ones
/// are the common protocol's steps that call a hook in the middle, so the
/// models take them too (a regroup coordinator adopts the view it
/// installs).
pub(super) trait QuorumModel: std::fmt::Debug {
    // ----- what the model decides --------------------------------------

    /// The model's own test of acting as quorum owner now (holding the
    /// disk with a valid lease; majority: settled owner with a majority of
    /// live votes).
    fn acting(&self, core: &Core, now: Duration) -> bool;

    /// While [`QuorumModel::acting`], the instant it turns false if no
    /// input arrives first: the lease's end. What is published for readers
    /// that check it later (docs/semantics.md, "Acting owner").
    fn acting_until(&self, core: &Core, now: Duration) -> Option<Duration>;

    /// The owner may take global updates: the disk is held (majority: the
    /// replica is recovered).
    fn holds_lock(&self, core: &Core) -> bool;

    /// The node has nothing to offer or compare yet (majority: its local
    /// replica is not recovered; never under the disk models).
    fn awaits_replica(&self) -> bool {
        false
    }

    /// Whether this node's database is the cluster's, not a copy left
    /// from an earlier life: under the disk models a joiner takes the
    /// owner's database with its acceptance and a forming owner reads the
    /// quorum log, so always; under the majority model only once the
    /// replica was replaced by, or shown equal to, the owner's or a
    /// regroup's (docs/semantics.md, "Acting on the database").
    fn db_current(&self) -> bool {
        true
    }

    /// Whether this node, as its view's owner, holds every committed
    /// change, so it may answer reads and confirm its members' (disk
    /// models: once the quorum log is recovered; a forming owner's copy is
    /// empty until then). The majority owner adopts the greatest replica
    /// before it installs its view, so always.
    fn owner_db_complete(&self) -> bool {
        true
    }

    /// The model's own deadlines (arbiter timers, vote and promise
    /// expiry).
    fn next_deadlines(&self, core: &Core, now: Duration) -> Vec<Duration>;

    /// A quorum may lie outside the current view (majority: forming,
    /// healing), so a regroup is announced to every configured node and a
    /// regroup from outside the view is taken in; under the disk models
    /// the disk's holder is in the old view or among those heard.
    fn reaches_beyond_view(&self) -> bool;

    /// An owner tells a stale node (one outside its view that believes it
    /// is a member) the current view.
    fn tells_stale_members(&self, core: &Core, now: Duration) -> bool;

    /// An owner admits a joiner only by regrouping with it (majority: it
    /// has no majority now).
    fn admits_only_by_regroup(&self, core: &Core, now: Duration) -> bool;

    /// The owner's log is ready for a joiner (the disk models' quorum log
    /// is recovered and idle).
    fn log_ready(&self) -> bool;

    /// The epoch of a view the owner installs on its own, above `above`.
    fn install_epoch(&self, core: &Core, above: u64) -> u64;

    /// Whether the owner may change the view on its own now; otherwise it
    /// regroups.
    fn owner_may_install(&self, core: &Core, now: Duration) -> bool;

    /// This node's replica, for regroup messages (majority).
    fn replica(&self, core: &Core) -> Option<Replica> {
        let _ = core;
        None
    }

    // ----- the model's steps -------------------------------------------

    /// Time passes (before the common protocol's timers).
    fn tick(&mut self, core: &mut Core, now: Duration);

    /// Nobody admitted this node while joining: form the cluster.
    fn form(&mut self, core: &mut Core, now: Duration);

    /// A member is about to send heartbeats in `view`.
    fn heartbeat_due(&mut self, core: &mut Core, now: Duration, view: &View);

    /// The view's quorum deadline passed.
    fn quorum_deadline(&mut self, core: &mut Core, now: Duration);

    /// As regroup coordinator, the collection window ended with `seen`.
    fn end_collection(
        &mut self,
        core: &mut Core,
        now: Duration,
        epoch: u64,
        seen: BTreeMap<NodeId, bool>,
    );

    /// A newer view that includes this node was installed (with the
    /// coordinator's chosen replica under the majority model).
    fn on_install(
        &mut self,
        core: &mut Core,
        now: Duration,
        view: View,
        replica: Option<(u64, Replica)>,
    );

    /// A heartbeat of `view` epoch `epoch` arrived on `net`, carrying the
    /// sender's database number `db_seq`.
    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(
        &mut self,
        core: &mut Core,
        now: Duration,
        net: Net,
        from: NodeId,
        seq: u64,
        epoch: u64,
        db_seq: u64,
    );

    /// A regroup message arrived while this node is still joining.
    fn regroup_heard_while_joining(&mut self, core: &mut Core, now: Duration);

    /// A regroup participant heard directly sent its replica.
    fn heard_replica(&mut self, from: NodeId, replica: Replica);

    /// A member admitted us with the owner's database `db`: take it, or
    /// refuse the admission for now (false).
    fn take_join_db(&mut self, core: &mut Core, db: DbSnapshot) -> bool;

    /// The owner of `view` left the cluster cleanly.
    fn owner_left(&mut self, core: &mut Core, now: Duration, view: &View, owner: NodeId);

    /// The locker takes the next queued change, as the model commits.
    fn pump_gum(&mut self, core: &mut Core, now: Duration);

    /// The owner's database arrived (the disk models).
    fn on_db_sync(&mut self, core: &mut Core, from: NodeId, db: DbSnapshot);

    /// A member asks the locker for the database.
    fn on_sync_request(&mut self, core: &mut Core, from: NodeId);

    /// A message of the model's own protocol (majority: votes and
    /// replication).
    fn step(&mut self, core: &mut Core, now: Duration, from: NodeId, body: Body);

    /// A disk operation of `kind` the model issued finished.
    fn disk_done(
        &mut self,
        core: &mut Core,
        now: Duration,
        kind: OpKind,
        id: u64,
        result: DiskResult,
    );

    /// Clean stop: release what the model holds (the witness).
    fn release(&mut self, core: &mut Core);

    /// A regroup started: work in progress of the old view is abandoned.
    fn regroup_started(&mut self) {}

    /// The model's part of adopting `view`.
    fn adopted_view(&mut self, core: &mut Core, now: Duration, view: &View);

    /// The cluster service stopped: forget what the model held.
    fn stopped(&mut self, core: &mut Core);

    // ----- the common protocol's steps that involve the model ------------

    /// Acts as quorum owner now.
    fn is_acting_owner(&self, core: &Core, now: Duration) -> bool {
        !core.is_stopped() && self.acting(core, now)
    }

    /// While acting as quorum owner, when it stops acting if no input
    /// arrives before (the end of its lease); `None` when not acting.
    fn acting_owner_until(&self, core: &Core, now: Duration) -> Option<Duration> {
        if !self.is_acting_owner(core, now) {
            return None;
        }
        self.acting_until(core, now)
    }

    /// The owner of its view, and it may take global updates.
    fn is_locker(&self, core: &Core) -> bool {
        core.is_owner() && self.holds_lock(core)
    }

    /// Stops the cluster service.
    fn stop(&mut self, core: &mut Core, reason: String) {
        if core.stop(reason) {
            self.stopped(core);
        }
    }

    fn adopt_view(&mut self, core: &mut Core, now: Duration, view: View) {
        core.enter_view(now, &view);
        self.adopted_view(core, now, &view);
        core.ask_owner_for_db(&view);
    }

    /// Enters regroup `epoch`: hold shared-disk writes and announce it.
    fn start_regroup(&mut self, core: &mut Core, now: Duration, epoch: u64) {
        let Some((view, rg)) = core.begin_regroup(now, epoch) else {
            return;
        };
        self.regroup_started();
        core.hold_writes(true);
        self.announce_regroup(core, &view, &rg);
    }

    /// Sends regroup `rg` to the old view's members, those heard, and
    /// under the majority model every node.
    fn announce_regroup(&self, core: &mut Core, view: &View, rg: &Regroup) {
        let mut to: BTreeSet<NodeId> = view.members.iter().copied().collect();
        to.extend(rg.seen.keys().copied());
        if self.reaches_beyond_view() {
            to.extend(core.all_others());
        }
        to.remove(&core.me);
        let body = Body::Regroup {
            epoch: rg.epoch,
            seen: rg.seen.keys().copied().collect(),
            holds_quorum: core.arbiter.holds(),
            replica: self.replica(core),
        };
        for n in to {
            core.send(n, body.clone());
        }
    }

    /// As owner: install `view` with the next epoch and tell everyone.
    fn install_as_owner(&mut self, core: &mut Core, now: Duration, mut view: View) {
        if !self.owner_may_install(core, now) {
            // Majority: only an owner that holds a majority changes the
            // view on its own (its replica holds every committed change,
            // which its members then take); otherwise regroup.
            if !core.in_regroup() {
                let epoch = core.view().map_or(0, |v| v.epoch).max(core.max_epoch) + 1;
                self.start_regroup(core, now, epoch);
            }
            return;
        }
        let cur = core.view().map_or(0, |v| v.epoch);
        view.epoch = self.install_epoch(core, cur.max(core.max_epoch));
        view.owner = Some(core.me);
        core.send_install(view.members.clone(), &view, None);
        self.adopt_view(core, now, view);
    }
}

/// The votes of a majority-model cluster: one per node, one more for the
/// witness disk if configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Votes {
    nodes: usize,
    witness: bool,
}

impl Votes {
    /// `nodes` votes, and one more if a witness disk is configured.
    pub fn new(nodes: usize, witness: bool) -> Votes {
        Votes { nodes, witness }
    }

    /// The votes of the cluster `cfg` describes (the witness counts only
    /// under the majority model).
    pub fn of(cfg: &ClusterConfig) -> Votes {
        let witness = matches!(cfg.quorum, ModelName::Majority { witness: Some(_) });
        Votes::new(cfg.nodes.len(), witness)
    }

    /// Every vote there is.
    pub fn voters(self) -> usize {
        self.nodes + usize::from(self.witness)
    }

    /// Votes a partition needs to act: a strict majority, so two disjoint
    /// partitions can never both have it.
    pub fn needed(self) -> usize {
        self.voters() / 2 + 1
    }

    /// Whether `live` votes let a partition act (own the view, run
    /// resources); a partition without them holds writes and stops.
    pub fn has_quorum(self, live: usize) -> bool {
        live >= self.needed()
    }

    /// Node replicas a change must be on to be committed: the witness
    /// holds no data, so this is a majority of the nodes alone, which any
    /// later quorum of votes intersects.
    pub fn replicas_needed(self) -> usize {
        self.nodes / 2 + 1
    }

    /// Whether a change on `replicas` node logs is committed.
    pub fn is_committed(self, replicas: usize) -> bool {
        replicas >= self.replicas_needed()
    }
}

/// Disk models: the owner of a view a regroup coordinator installs is the
/// participant that holds the quorum disk, if any did.
pub(super) fn disk_owner(seen: &BTreeMap<NodeId, bool>) -> Option<NodeId> {
    seen.iter().find(|(_, &holds)| holds).map(|(&n, _)| n)
}

/// Disk models: whether `me` challenges for the quorum disk on adopting
/// `view`. Only when the view has no owner, and only its lowest member, so
/// one challenger per view; the arbiter's challenge then decides against
/// any defender outside the view.
pub(super) fn disk_challenges(view: &View, me: NodeId, arbiter_idle: bool) -> bool {
    view.owner.is_none() && arbiter_idle && view.members.iter().copied().min() == Some(me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_needs_a_majority_of_node_replicas() {
        for (nodes, need) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            let v = Votes::new(nodes, false);
            assert_eq!(v.replicas_needed(), need, "{nodes} nodes");
            assert!(v.is_committed(need));
            assert!(!v.is_committed(need - 1));
        }
    }

    #[test]
    fn witness_adds_one_vote_but_no_replica() {
        let two = Votes::new(2, false);
        let two_w = Votes::new(2, true);
        assert_eq!(two.voters(), 2);
        assert_eq!(two_w.voters(), 3);
        assert_eq!(two.needed(), 2);
        assert_eq!(two_w.needed(), 2);
        // One node and the witness act; one node alone does not.
        assert!(two_w.has_quorum(2));
        assert!(!two.has_quorum(1));
        // The witness holds no data: commits still need both nodes.
        assert_eq!(two_w.replicas_needed(), 2);
        // With an odd node count the witness raises the bar by one.
        assert_eq!(Votes::new(3, false).needed(), 2);
        assert_eq!(Votes::new(3, true).needed(), 3);
    }

    #[test]
    fn a_minority_partition_has_no_quorum() {
        let v = Votes::new(5, false);
        assert!(!v.has_quorum(2));
        assert!(v.has_quorum(3));
        // An even split: neither half acts.
        let v = Votes::new(4, false);
        assert!(!v.has_quorum(2));
        // Two disjoint partitions never both have a quorum.
        for nodes in 1..=9 {
            for witness in [false, true] {
                let v = Votes::new(nodes, witness);
                for a in 0..=v.voters() {
                    assert!(!(v.has_quorum(a) && v.has_quorum(v.voters() - a)));
                }
            }
        }
    }

    fn view(members: &[NodeId], owner: Option<NodeId>) -> View {
        View {
            epoch: 1,
            members: members.to_vec(),
            owner,
            paused: Default::default(),
        }
    }

    #[test]
    fn disk_owner_is_the_participant_holding_the_disk() {
        let seen: BTreeMap<NodeId, bool> = [(0, false), (1, true), (2, false)].into();
        assert_eq!(disk_owner(&seen), Some(1));
        let seen: BTreeMap<NodeId, bool> = [(0, false), (2, false)].into();
        assert_eq!(disk_owner(&seen), None);
    }

    #[test]
    fn disk_only_the_lowest_idle_member_of_an_ownerless_view_challenges() {
        let v = view(&[1, 2, 3], None);
        assert!(disk_challenges(&v, 1, true));
        assert!(!disk_challenges(&v, 2, true));
        // Already challenging or defending: no second challenge.
        assert!(!disk_challenges(&v, 1, false));
        // The view has an owner defending the disk: nobody challenges.
        assert!(!disk_challenges(&view(&[1, 2, 3], Some(3)), 1, true));
    }
}
