//! Failover Manager placement: where a group goes on "Move Group" to best
//! possible, where it goes on failover, when it fails back, and when a failing
//! resource is restarted in place or its group gives up.
//!
//! Everything here is a pure function of its inputs (docs/architecture.md
//! "Pure cores and drivers"): the cluster view, the hour of day and the
//! current time are passed in, and the random choice of a "random node" is
//! an injected function so tests are deterministic.
//!
//! The preferred-owner semantics are Microsoft's table for Windows Server
//! 2003 clusters, summarised in docs/semantics.md "Placement":
//!
//! ```text
//! Preferred list   | Move group to best possible        | Failover (node or group failure)
//! -----------------+------------------------------------+-----------------------------------------
//! all nodes        | highest node in the list that is   | next node on the preferred list
//!                  | up and running                     |
//! subset of nodes  | highest node in the list that is   | next node on the preferred list; if the
//!                  | up; if none is up, a random node   | host is last on the list or not on it,
//!                  |                                    | a random node
//! empty            | a random node                      | a random node
//! ```
//!
//! The table does not wrap: a host that is last on the list goes to a random
//! node, not back to the top (line 343). "Next node" is read as the next node
//! after the host that can take the group, so a group cascades past nodes
//! that are down (line 399, "cascading failover"). The "all nodes" row is the
//! "subset" row with every node listed, so one rule serves both.
//!
//! Around the table: possible owners restrict every choice (seed 001 line
//! 131, "A Node must be specified as a possible owner of a resource in order
//! for us to failover to that Node"); a paused node "cannot accept resource
//! groups" (seed 004 line 427); on failover a group with
//! `AntiAffinityClassNames` prefers nodes hosting no group of the same class,
//! and only if every node hosts one is the preferred list used over all of
//! them (seed 004 line 327, N+I).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::config::NodeId;

/// The ordered preferred-owner list of a group, most preferred first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreferredOwners(Vec<NodeId>);

impl PreferredOwners {
    /// Builds the list in order; a node listed twice keeps its first place.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        let mut seen = BTreeSet::new();
        PreferredOwners(nodes.into_iter().filter(|n| seen.insert(*n)).collect())
    }

    /// The nodes, most preferred first.
    pub fn as_slice(&self) -> &[NodeId] {
        &self.0
    }

    /// The preferred owner: the first node on the list, if any.
    pub fn first(&self) -> Option<NodeId> {
        self.0.first().copied()
    }

    /// Where `node` stands on the list (0 = most preferred).
    pub fn position(&self, node: NodeId) -> Option<usize> {
        self.0.iter().position(|n| *n == node)
    }
}

/// The nodes on which one resource may be brought online.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PossibleOwners(BTreeSet<NodeId>);

impl PossibleOwners {
    /// The possible-owner set of a resource.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        PossibleOwners(nodes.into_iter().collect())
    }

    /// Whether `node` may host the resource.
    pub fn contains(&self, node: NodeId) -> bool {
        self.0.contains(&node)
    }
}

/// A group's `AntiAffinityClassNames`: a group avoids nodes hosting a group
/// that shares any of these names. Empty names are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiAffinityClassNames(BTreeSet<String>);

impl AntiAffinityClassNames {
    /// The class names; empty strings are dropped.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        AntiAffinityClassNames(
            names
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
        )
    }

    /// Whether no class is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the two share a class name.
    pub fn conflicts_with(&self, other: &AntiAffinityClassNames) -> bool {
        self.0.intersection(&other.0).next().is_some()
    }
}

/// A node's state as the Failover Manager sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Member of the cluster, accepts groups.
    Up,
    /// Member of the cluster, keeps what it owns, accepts no group.
    Paused,
    /// Not a member.
    Down,
}

/// A group currently hosted on a node, as far as placement cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedGroup {
    /// Group name.
    pub name: String,
    /// The group's anti-affinity classes.
    pub anti_affinity: AntiAffinityClassNames,
}

/// One node of the cluster view handed to the placement functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Up, paused or down.
    pub state: NodeState,
    /// Groups the node hosts now.
    pub hosted: Vec<HostedGroup>,
}

impl NodeView {
    /// A node in `state` hosting nothing.
    pub fn new(id: NodeId, state: NodeState) -> Self {
        NodeView {
            id,
            state,
            hosted: Vec::new(),
        }
    }

    /// Whether the node hosts a group, other than `group`, sharing one of
    /// `classes`.
    fn hosts_class(&self, group: &str, classes: &AntiAffinityClassNames) -> bool {
        self.hosted
            .iter()
            .any(|h| h.name != group && h.anti_affinity.conflicts_with(classes))
    }
}

/// Whether, and when, a group moves back to its preferred owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailbackPolicy {
    /// The group stays where it is.
    #[default]
    Prevent,
    /// The group moves back when its preferred owner rejoins, at once
    /// (`window: None`) or only inside the window.
    Allow {
        /// Hours of the day in which failback may happen.
        window: Option<FailbackWindow>,
    },
}

/// Hours of the day `[start_hour, end_hour)` in which failback is allowed,
/// each 0..=23. A window whose end is before its start wraps midnight
/// (22..4 is 22:00-03:59); start == end is an empty window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailbackWindow {
    /// First hour inside the window.
    pub start_hour: u8,
    /// First hour after the window.
    pub end_hour: u8,
}

impl FailbackWindow {
    /// Whether `hour` (0..=23) lies inside the window.
    pub fn contains(&self, hour: u8) -> bool {
        let (s, e) = (self.start_hour, self.end_hour);
        if s <= e {
            s <= hour && hour < e
        } else {
            hour >= s || hour < e
        }
    }
}

/// What placement needs to know about a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlacement {
    /// Group name.
    pub name: String,
    /// Preferred owners, most preferred first.
    pub preferred: PreferredOwners,
    /// Possible owners of each resource in the group; the group's possible
    /// owners are their intersection (no resources: any node).
    pub resource_owners: Vec<PossibleOwners>,
    /// The group's `AntiAffinityClassNames`.
    pub anti_affinity: AntiAffinityClassNames,
    /// Failback policy.
    pub failback: FailbackPolicy,
}

impl GroupPlacement {
    /// Whether `node` is a possible owner of every resource in the group.
    pub fn is_possible_owner(&self, node: NodeId) -> bool {
        self.resource_owners.iter().all(|p| p.contains(node))
    }

    /// Nodes that may take the group now: up (not paused, not down) and
    /// possible owners, in the order of `nodes`.
    fn eligible(&self, nodes: &[NodeView]) -> Vec<NodeId> {
        nodes
            .iter()
            .filter(|n| n.state == NodeState::Up && self.is_possible_owner(n.id))
            .map(|n| n.id)
            .collect()
    }
}

/// Picks among `candidates` with the injected random choice; `None` if there
/// is nothing to pick from.
fn pick_random(
    candidates: &[NodeId],
    rng_pick: impl FnOnce(&[NodeId]) -> NodeId,
) -> Option<NodeId> {
    if candidates.is_empty() {
        return None;
    }
    let pick = rng_pick(candidates);
    debug_assert!(
        candidates.contains(&pick),
        "rng_pick chose outside the candidates"
    );
    Some(pick)
}

/// "Move group to best possible" (seed table, first column): the highest
/// node on the preferred list that is up; with an empty list, or none of it
/// up, a random up node. Possible owners and paused nodes restrict both.
///
/// The random choice (the table's "subset" and "empty" rows) is injected,
/// as for [`choose_failover`].
pub fn choose_move_best_possible(
    group: &GroupPlacement,
    nodes: &[NodeView],
    rng_pick: impl FnOnce(&[NodeId]) -> NodeId,
) -> Option<NodeId> {
    let candidates = group.eligible(nodes);
    group
        .preferred
        .as_slice()
        .iter()
        .copied()
        .find(|p| candidates.contains(p))
        .or_else(|| pick_random(&candidates, rng_pick))
}

/// Failover after the failure of the node `from` or of the group on it
/// (seed table, second column): the next node after `from` on the preferred
/// list that can take the group; if the list is empty, exhausted, or `from`
/// is not on it, a random node. `from` itself is never chosen.
///
/// With `AntiAffinityClassNames` set, the choice is made among nodes hosting
/// no group of the same class when there is one; otherwise among all.
pub fn choose_failover(
    group: &GroupPlacement,
    from: NodeId,
    nodes: &[NodeView],
    rng_pick: impl FnOnce(&[NodeId]) -> NodeId,
) -> Option<NodeId> {
    let mut candidates: Vec<NodeId> = group
        .eligible(nodes)
        .into_iter()
        .filter(|n| *n != from)
        .collect();
    if !group.anti_affinity.is_empty() {
        let free: Vec<NodeId> = candidates
            .iter()
            .copied()
            .filter(|id| {
                nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .is_some_and(|n| !n.hosts_class(&group.name, &group.anti_affinity))
            })
            .collect();
        if !free.is_empty() {
            candidates = free;
        }
    }
    let preferred = group.preferred.as_slice();
    let next = group.preferred.position(from).and_then(|i| {
        preferred[i + 1..]
            .iter()
            .copied()
            .find(|p| candidates.contains(p))
    });
    next.or_else(|| pick_random(&candidates, rng_pick))
}

/// Whether a group should move back now that `rejoined` is a member again:
/// only if the policy allows it, `rejoined` is the group's preferred owner
/// (first on the list) and a possible owner, and `now_hour` (0..=23) is inside
/// the window when there is one. The seeds' failback attempt limit (seed 004
/// line 403) is not modelled here.
pub fn should_fail_back(group: &GroupPlacement, rejoined: NodeId, now_hour: u8) -> bool {
    let FailbackPolicy::Allow { window } = group.failback else {
        return false;
    };
    group.preferred.first() == Some(rejoined)
        && group.is_possible_owner(rejoined)
        && window.is_none_or(|w| w.contains(now_hour))
}

/// At most `count` events within `period` (docs/semantics.md "Timing profiles": restart threshold 3 in
/// 900 s; group failover threshold 10 in 6 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// How many events the period allows.
    pub count: u32,
    /// The sliding period.
    pub period: Duration,
}

impl Threshold {
    /// Resource restart threshold default: 3 restarts in 900 s.
    pub const RESTART_DEFAULT: Threshold = Threshold {
        count: 3,
        period: Duration::from_secs(900),
    };
    /// Group failover threshold default: 10 failovers in 6 h.
    pub const FAILOVER_DEFAULT: Threshold = Threshold {
        count: 10,
        period: Duration::from_secs(6 * 3600),
    };
}

/// Event times inside a sliding period. An event at `t` counts at `now`
/// while `now - t < period`: one exactly a period old has expired.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlidingCount {
    threshold: Threshold,
    events: VecDeque<Duration>,
}

impl SlidingCount {
    fn new(threshold: Threshold) -> Self {
        SlidingCount {
            threshold,
            events: VecDeque::new(),
        }
    }

    /// Drops expired events, then records one at `now` if the threshold
    /// allows it; returns whether it did.
    fn try_record(&mut self, now: Duration) -> bool {
        let period = self.threshold.period;
        while self
            .events
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= period)
        {
            self.events.pop_front();
        }
        if self.events.len() < self.threshold.count as usize {
            self.events.push_back(now);
            true
        } else {
            false
        }
    }
}

/// What the Resource Monitor does with a failed resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it on this node.
    RestartLocally,
    /// The restart threshold is used up: fail the group over.
    FailGroup,
}

/// Restarts of one resource on its current node, against the restart
/// threshold and period. `now` is time since any fixed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartTracker(SlidingCount);

impl Default for RestartTracker {
    fn default() -> Self {
        RestartTracker::new(Threshold::RESTART_DEFAULT)
    }
}

impl RestartTracker {
    /// A tracker with no restarts yet.
    pub fn new(threshold: Threshold) -> Self {
        RestartTracker(SlidingCount::new(threshold))
    }

    /// The resource failed at `now`: restart it in place while fewer than
    /// `count` restarts happened in the period, else fail the group over
    /// (which starts the count afresh, as the resource moves).
    pub fn on_failure(&mut self, now: Duration) -> RestartDecision {
        if self.0.try_record(now) {
            RestartDecision::RestartLocally
        } else {
            self.0.events.clear();
            RestartDecision::FailGroup
        }
    }
}

/// What the Failover Manager does with a failed group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverDecision {
    /// Move the group to another node.
    FailOver,
    /// The failover threshold is used up: the group stays failed.
    StayFailed,
}

/// Failovers of one group against the group failover threshold and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverTracker(SlidingCount);

impl Default for FailoverTracker {
    fn default() -> Self {
        FailoverTracker::new(Threshold::FAILOVER_DEFAULT)
    }
}

impl FailoverTracker {
    /// A tracker with no failovers yet.
    pub fn new(threshold: Threshold) -> Self {
        FailoverTracker(SlidingCount::new(threshold))
    }

    /// The group failed at `now`: fail it over while fewer than `count`
    /// failovers happened in the period, else leave it failed.
    pub fn on_group_failure(&mut self, now: Duration) -> FailoverDecision {
        if self.0.try_record(now) {
            FailoverDecision::FailOver
        } else {
            FailoverDecision::StayFailed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::{Down, Paused, Up};

    fn node(id: NodeId, state: NodeState) -> NodeView {
        NodeView::new(id, state)
    }

    fn hosting(id: NodeId, group: &str, class: &str) -> NodeView {
        NodeView {
            id,
            state: Up,
            hosted: vec![HostedGroup {
                name: group.into(),
                anti_affinity: AntiAffinityClassNames::new([class]),
            }],
        }
    }

    fn group(preferred: &[NodeId]) -> GroupPlacement {
        GroupPlacement {
            name: "g".into(),
            preferred: PreferredOwners::new(preferred.iter().copied()),
            ..Default::default()
        }
    }

    /// The injected random choice: always the last candidate, so a test can
    /// tell it apart from a preferred-list choice; records what it was
    /// offered.
    struct Rng {
        asked: Option<Vec<NodeId>>,
    }

    impl Rng {
        fn pick(&mut self) -> impl FnOnce(&[NodeId]) -> NodeId + '_ {
            |c: &[NodeId]| {
                self.asked = Some(c.to_vec());
                *c.last().unwrap()
            }
        }
    }

    enum Op {
        MoveBestPossible,
        Failover { from: NodeId },
    }

    struct Row {
        name: &'static str,
        group: GroupPlacement,
        nodes: Vec<NodeView>,
        op: Op,
        want: Option<NodeId>,
        /// The candidates the random choice must see; `None` = not asked.
        want_random_over: Option<Vec<NodeId>>,
    }

    fn rows() -> Vec<Row> {
        let four = || vec![node(1, Up), node(2, Up), node(3, Up), node(4, Up)];
        let restricted = |pref: &[NodeId], owners: &[&[NodeId]]| GroupPlacement {
            resource_owners: owners
                .iter()
                .map(|o| PossibleOwners::new(o.iter().copied()))
                .collect(),
            ..group(pref)
        };
        let evs = |name: &str, pref: &[NodeId]| GroupPlacement {
            name: name.into(),
            anti_affinity: AntiAffinityClassNames::new(["exchange-evs"]),
            ..group(pref)
        };
        vec![
            // Seed 004 line 342, "Contains all nodes in cluster".
            Row {
                name: "all nodes / move best possible: highest node in list that is up",
                group: group(&[2, 1, 3, 4]),
                nodes: vec![node(1, Up), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::MoveBestPossible,
                want: Some(1),
                want_random_over: None,
            },
            Row {
                name: "all nodes / failover: next node on the preferred list",
                group: group(&[1, 2, 3, 4]),
                nodes: vec![node(1, Down), node(2, Up), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(2),
                want_random_over: None,
            },
            Row {
                name: "all nodes / failover: next node down, cascades to the one after",
                group: group(&[1, 2, 3, 4]),
                nodes: vec![node(1, Down), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(3),
                want_random_over: None,
            },
            // Seed 004 lines 342-343, "Contains a subset of the nodes".
            Row {
                name: "subset / move best possible: highest node in list that is up",
                group: group(&[3, 2]),
                nodes: vec![node(1, Up), node(2, Up), node(3, Down), node(4, Up)],
                op: Op::MoveBestPossible,
                want: Some(2),
                want_random_over: None,
            },
            Row {
                name: "subset / move best possible: no listed node up, random node",
                group: group(&[3, 2]),
                nodes: vec![node(1, Up), node(2, Down), node(3, Down), node(4, Up)],
                op: Op::MoveBestPossible,
                want: Some(4),
                want_random_over: Some(vec![1, 4]),
            },
            Row {
                name: "subset / failover: next node on the preferred list",
                group: group(&[2, 4]),
                nodes: vec![node(1, Up), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 2 },
                want: Some(4),
                want_random_over: None,
            },
            Row {
                name: "subset / failover: host last on the list, random node (no wrap)",
                group: group(&[2, 4]),
                nodes: vec![node(1, Up), node(2, Up), node(3, Up), node(4, Down)],
                op: Op::Failover { from: 4 },
                want: Some(3),
                want_random_over: Some(vec![1, 2, 3]),
            },
            Row {
                name: "subset / failover: host not in the preferred list, random node",
                group: group(&[2, 4]),
                nodes: vec![node(1, Down), node(2, Up), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(4),
                want_random_over: Some(vec![2, 3, 4]),
            },
            Row {
                name: "subset / failover: rest of the list down (exhausted), random node",
                group: group(&[1, 2]),
                nodes: vec![node(1, Down), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(4),
                want_random_over: Some(vec![3, 4]),
            },
            // Seed 004 line 344, "Empty".
            Row {
                name: "empty / move best possible: random node",
                group: group(&[]),
                nodes: four(),
                op: Op::MoveBestPossible,
                want: Some(4),
                want_random_over: Some(vec![1, 2, 3, 4]),
            },
            Row {
                name: "empty / failover: random node",
                group: group(&[]),
                nodes: vec![node(1, Up), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 2 },
                want: Some(4),
                want_random_over: Some(vec![1, 3, 4]),
            },
            // Possible owners (seed 001 line 131; seed 004 line 315).
            Row {
                name: "possible owners: best possible skips a non-owner",
                group: restricted(&[1, 2, 3], &[&[2, 3], &[1, 3]]),
                nodes: four(),
                op: Op::MoveBestPossible,
                want: Some(3),
                want_random_over: None,
            },
            Row {
                name: "possible owners: failover pair, next node not an owner",
                group: restricted(&[1, 2, 3], &[&[1, 3]]),
                nodes: vec![node(1, Down), node(2, Up), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(3),
                want_random_over: None,
            },
            Row {
                name: "possible owners: random choice only among owners",
                group: restricted(&[], &[&[1, 2, 3], &[1, 2]]),
                nodes: vec![node(1, Down), node(2, Up), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: Some(2),
                want_random_over: Some(vec![2]),
            },
            Row {
                name: "possible owners: no up owner, nowhere to go",
                group: restricted(&[1, 2], &[&[1, 2]]),
                nodes: vec![node(1, Down), node(2, Down), node(3, Up), node(4, Up)],
                op: Op::Failover { from: 1 },
                want: None,
                want_random_over: None,
            },
            // Paused nodes (seed 004 line 427).
            Row {
                name: "paused: best possible skips a paused preferred node",
                group: group(&[1, 2]),
                nodes: vec![node(1, Paused), node(2, Up)],
                op: Op::MoveBestPossible,
                want: Some(2),
                want_random_over: None,
            },
            Row {
                name: "paused: failover skips a paused next node",
                group: group(&[1, 2, 3]),
                nodes: vec![node(1, Down), node(2, Paused), node(3, Up)],
                op: Op::Failover { from: 1 },
                want: Some(3),
                want_random_over: None,
            },
            Row {
                name: "paused: random choice never offers a paused node",
                group: group(&[]),
                nodes: vec![node(1, Down), node(2, Up), node(3, Paused)],
                op: Op::Failover { from: 1 },
                want: Some(2),
                want_random_over: Some(vec![2]),
            },
            Row {
                name: "paused: only paused nodes left, nowhere to go",
                group: group(&[1, 2]),
                nodes: vec![node(1, Down), node(2, Paused)],
                op: Op::Failover { from: 1 },
                want: None,
                want_random_over: None,
            },
            // Anti-affinity (seed 004 line 327, N+I).
            Row {
                name: "N+I: 4 nodes, 3 active EVS of one class, failover to the passive node",
                group: evs("evs1", &[1, 2, 3, 4]),
                nodes: vec![
                    NodeView {
                        state: Down,
                        ..hosting(1, "evs1", "exchange-evs")
                    },
                    hosting(2, "evs2", "exchange-evs"),
                    hosting(3, "evs3", "exchange-evs"),
                    node(4, Up),
                ],
                op: Op::Failover { from: 1 },
                want: Some(4),
                want_random_over: None,
            },
            Row {
                name: "N+I: empty preferred list, random only among nodes free of the class",
                group: evs("evs1", &[]),
                nodes: vec![
                    node(1, Down),
                    hosting(2, "evs2", "exchange-evs"),
                    node(3, Up),
                    node(4, Up),
                ],
                op: Op::Failover { from: 1 },
                want: Some(4),
                want_random_over: Some(vec![3, 4]),
            },
            Row {
                name: "N+I: every node hosts the class, preferred list used",
                group: evs("evs1", &[1, 3, 2]),
                nodes: vec![
                    node(1, Down),
                    hosting(2, "evs2", "exchange-evs"),
                    hosting(3, "evs3", "exchange-evs"),
                ],
                op: Op::Failover { from: 1 },
                want: Some(3),
                want_random_over: None,
            },
            Row {
                name: "N+I: a group of another class does not repel",
                group: evs("evs1", &[1, 2, 3]),
                nodes: vec![
                    node(1, Down),
                    hosting(2, "sql", "sql-instance"),
                    hosting(3, "evs3", "exchange-evs"),
                ],
                op: Op::Failover { from: 1 },
                want: Some(2),
                want_random_over: None,
            },
            Row {
                name: "N+I: free node not a possible owner, falls back to preferred list",
                group: GroupPlacement {
                    resource_owners: vec![PossibleOwners::new([1, 2, 3])],
                    ..evs("evs1", &[1, 3, 2])
                },
                nodes: vec![
                    node(1, Down),
                    hosting(2, "evs2", "exchange-evs"),
                    hosting(3, "evs3", "exchange-evs"),
                    node(4, Up),
                ],
                op: Op::Failover { from: 1 },
                want: Some(3),
                want_random_over: None,
            },
            // Group failure: the host is up but the group leaves it.
            Row {
                name: "group failure: host up but never chosen again",
                group: group(&[]),
                nodes: vec![node(1, Up), node(2, Up)],
                op: Op::Failover { from: 1 },
                want: Some(2),
                want_random_over: Some(vec![2]),
            },
        ]
    }

    #[test]
    fn placement_table() {
        for row in rows() {
            let mut rng = Rng { asked: None };
            let got = match row.op {
                Op::MoveBestPossible => {
                    choose_move_best_possible(&row.group, &row.nodes, rng.pick())
                }
                Op::Failover { from } => choose_failover(&row.group, from, &row.nodes, rng.pick()),
            };
            assert_eq!(got, row.want, "row: {}", row.name);
            assert_eq!(
                rng.asked, row.want_random_over,
                "random choice, row: {}",
                row.name
            );
        }
    }

    #[test]
    fn failback_table() {
        let allow = |window: Option<(u8, u8)>| FailbackPolicy::Allow {
            window: window.map(|(start_hour, end_hour)| FailbackWindow {
                start_hour,
                end_hour,
            }),
        };
        // (name, policy, rejoined node, hour, want); preferred list [1, 2].
        let rows: &[(&str, FailbackPolicy, NodeId, u8, bool)] = &[
            (
                "prevent: never fails back",
                FailbackPolicy::Prevent,
                1,
                12,
                false,
            ),
            ("allow immediately", allow(None), 1, 3, true),
            (
                "allow: rejoined node is not the preferred owner",
                allow(None),
                2,
                3,
                false,
            ),
            ("window 9..17: inside", allow(Some((9, 17))), 1, 12, true),
            (
                "window 9..17: first hour is inside",
                allow(Some((9, 17))),
                1,
                9,
                true,
            ),
            (
                "window 9..17: end hour is outside",
                allow(Some((9, 17))),
                1,
                17,
                false,
            ),
            ("window 9..17: outside", allow(Some((9, 17))), 1, 3, false),
            (
                "window 22..4 wraps midnight: 23 inside",
                allow(Some((22, 4))),
                1,
                23,
                true,
            ),
            (
                "window 22..4 wraps midnight: 0 inside",
                allow(Some((22, 4))),
                1,
                0,
                true,
            ),
            (
                "window 22..4 wraps midnight: 3 inside",
                allow(Some((22, 4))),
                1,
                3,
                true,
            ),
            (
                "window 22..4 wraps midnight: 4 outside",
                allow(Some((22, 4))),
                1,
                4,
                false,
            ),
            (
                "window 22..4 wraps midnight: 12 outside",
                allow(Some((22, 4))),
                1,
                12,
                false,
            ),
            (
                "window 22..4 wraps midnight: 21 outside",
                allow(Some((22, 4))),
                1,
                21,
                false,
            ),
            ("window 5..5 is empty", allow(Some((5, 5))), 1, 5, false),
        ];
        for &(name, policy, rejoined, hour, want) in rows {
            let g = GroupPlacement {
                failback: policy,
                ..group(&[1, 2])
            };
            assert_eq!(should_fail_back(&g, rejoined, hour), want, "row: {name}");
        }
        let not_owner = GroupPlacement {
            failback: allow(None),
            resource_owners: vec![PossibleOwners::new([2])],
            ..group(&[1, 2])
        };
        assert!(
            !should_fail_back(&not_owner, 1, 0),
            "possible owners: preferred owner not a possible owner"
        );
        assert!(!should_fail_back(
            &GroupPlacement {
                failback: allow(None),
                ..group(&[])
            },
            1,
            0
        ));
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn restart_threshold_table() {
        use RestartDecision::{FailGroup, RestartLocally};
        // (name, failure times in seconds, decisions), default 3 in 900 s.
        let rows: &[(&str, &[u64], &[RestartDecision])] = &[
            (
                "three restarts within the period, the fourth failure fails the group",
                &[0, 10, 20, 30],
                &[RestartLocally, RestartLocally, RestartLocally, FailGroup],
            ),
            (
                "fourth failure one second inside the period fails the group",
                &[0, 10, 20, 899],
                &[RestartLocally, RestartLocally, RestartLocally, FailGroup],
            ),
            (
                "fourth failure exactly one period after the first: first expired",
                &[0, 10, 20, 900],
                &[
                    RestartLocally,
                    RestartLocally,
                    RestartLocally,
                    RestartLocally,
                ],
            ),
            (
                "failures spread wider than the period always restart",
                &[0, 900, 1800, 2700, 3600],
                &[RestartLocally; 5],
            ),
            (
                "after failing the group the count starts afresh",
                &[0, 1, 2, 3, 4],
                &[
                    RestartLocally,
                    RestartLocally,
                    RestartLocally,
                    FailGroup,
                    RestartLocally,
                ],
            ),
        ];
        for &(name, times, want) in rows {
            let mut t = RestartTracker::default();
            let got: Vec<_> = times.iter().map(|&x| t.on_failure(s(x))).collect();
            assert_eq!(got, want, "row: {name}");
        }
        let mut never = RestartTracker::new(Threshold {
            count: 0,
            period: s(900),
        });
        assert_eq!(
            never.on_failure(s(0)),
            FailGroup,
            "threshold 0: no restarts"
        );
    }

    #[test]
    fn failover_threshold_table() {
        use FailoverDecision::{FailOver, StayFailed};
        const H: u64 = 3600;
        let ten: Vec<u64> = (0..10).map(|i| i * 60).collect();
        let with = |last: u64| ten.iter().copied().chain([last]).collect::<Vec<_>>();
        let ten_then = |last| {
            let mut d = vec![FailOver; 10];
            d.push(last);
            d
        };
        // (name, failure times, decisions), default 10 in 6 h.
        let rows: Vec<(&str, Vec<u64>, Vec<FailoverDecision>)> = vec![
            (
                "exactly the threshold: ten failovers",
                ten.clone(),
                vec![FailOver; 10],
            ),
            (
                "eleventh failure inside the period stays failed",
                with(6 * H - 1),
                ten_then(StayFailed),
            ),
            (
                "eleventh failure exactly one period after the first fails over",
                with(6 * H),
                ten_then(FailOver),
            ),
            (
                "eleventh failure well after the period fails over",
                with(7 * H),
                ten_then(FailOver),
            ),
        ];
        for (name, times, want) in rows {
            let mut t = FailoverTracker::default();
            let got: Vec<_> = times.iter().map(|&x| t.on_group_failure(s(x))).collect();
            assert_eq!(got, want, "row: {name}");
        }
        // Once failed, it stays failed until the period lets an old failover go.
        let mut t = FailoverTracker::default();
        for x in &ten {
            t.on_group_failure(s(*x));
        }
        assert_eq!(t.on_group_failure(s(H)), StayFailed);
        assert_eq!(t.on_group_failure(s(2 * H)), StayFailed);
        assert_eq!(t.on_group_failure(s(6 * H)), FailOver);
    }

    #[test]
    fn preferred_owners_keep_first_place_of_duplicates() {
        assert_eq!(PreferredOwners::new([2, 1, 2, 3]).as_slice(), &[2, 1, 3]);
        assert!(AntiAffinityClassNames::new([""]).is_empty());
    }
}
