//! The quorum model a [`Node`] delegates to, and the vote arithmetic the
//! models decide by.
//!
//! Under the disk models (`disk-scsi2`, `disk-pr`) the node's [`Arbiter`]
//! challenges for and defends the shared quorum disk, and the partition
//! with its owner continues (the owner's quorum log in [`DiskQuorum`], the
//! steps in `node/disk.rs`); under `majority` the votes of the nodes (and
//! the witness) decide, with the state in [`Majority`] and the steps in
//! `node/majority.rs`. [`Node`] holds one [`Quorum`] and, at each step
//! where the models differ, dispatches with one `match` on it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::disk::DiskQuorum;
use super::majority::Majority;
use crate::config::{ClusterConfig, NodeId, QuorumModel};
use crate::message::View;

/// The quorum model of a node, carrying the model's own state.
#[derive(Debug)]
pub(super) enum Quorum {
    /// The shared quorum disk decides: the node's arbiter (kept by
    /// [`Node`], idle under the majority model) and the owner's quorum log.
    Disk(Box<DiskQuorum>),
    /// A majority of votes decides.
    Majority(Box<Majority>),
}

impl Quorum {
    /// The model `cfg` names, for node `me` starting at `now`.
    pub(super) fn new(cfg: &ClusterConfig, me: NodeId, now: Duration) -> Quorum {
        match &cfg.quorum {
            QuorumModel::Majority { witness } => {
                Quorum::Majority(Box::new(Majority::new(cfg, me, witness.is_some(), now)))
            }
            QuorumModel::DiskScsi2 | QuorumModel::DiskPr => {
                Quorum::Disk(Box::new(DiskQuorum::new()))
            }
        }
    }

    /// Majority: the local replica is not recovered yet, so the node has
    /// nothing to offer or compare (never under the disk models).
    pub(super) fn awaits_replica(&self) -> bool {
        matches!(self, Quorum::Majority(m) if !m.ready)
    }

    /// The disk model's state, if that is the model.
    pub(super) fn disk(&self) -> Option<&DiskQuorum> {
        match self {
            Quorum::Disk(d) => Some(d),
            Quorum::Majority(_) => None,
        }
    }

    /// The disk model's state, if that is the model.
    pub(super) fn disk_mut(&mut self) -> Option<&mut DiskQuorum> {
        match self {
            Quorum::Disk(d) => Some(d),
            Quorum::Majority(_) => None,
        }
    }

    /// The majority model's state, if that is the model.
    pub(super) fn majority(&self) -> Option<&Majority> {
        match self {
            Quorum::Majority(m) => Some(m),
            Quorum::Disk(_) => None,
        }
    }

    /// The majority model's state, if that is the model.
    pub(super) fn majority_mut(&mut self) -> Option<&mut Majority> {
        match self {
            Quorum::Majority(m) => Some(m),
            Quorum::Disk(_) => None,
        }
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
        let witness = matches!(cfg.quorum, QuorumModel::Majority { witness: Some(_) });
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
