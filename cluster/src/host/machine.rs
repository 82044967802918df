//! The resource host's decisions as a pure state machine.
//!
//! [`ResourceHost::step`] takes what the async host observed (the node's
//! published status, the catalog, which group tasks are running, the wall
//! clock and the UTC hour) and returns what to do, in order: events to log,
//! Failover Manager changes to propose, stale group states to correct, and
//! group tasks to start, update or stop. The async host in `super` is a
//! driver that performs these [`HostAction`]s, the way `crate::driver`
//! performs a [`crate::node::Node`]'s actions (`docs/architecture.md`).
//! Random placement choices come from a seeded generator, so a seed and
//! the inputs fix every decision.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{ClusterConfig, NodeId};
use crate::db::Change;
use crate::driver::{NodePhase, NodeStatus};
use crate::failover::{Decision, FailoverManager, THRESHOLD_REASON};
use crate::resource::{Catalog, GroupStatus, Target};

/// Keys of the cluster event log: `event/MS-NODE-N`, oldest first.
pub const EVENT_PREFIX: &str = "event/";
/// Events kept; the quorum owner deletes older ones.
pub const EVENTS_KEPT: usize = 500;
/// How far past [`EVENTS_KEPT`] the log may grow before the owner prunes
/// it, so pruning is one batch now and then rather than one per event.
pub const EVENTS_SLACK: usize = 50;

/// What the host observed in one round.
#[derive(Debug, Clone, Copy)]
pub struct HostInput<'a> {
    /// The node's published status.
    pub status: &'a NodeStatus,
    /// The groups and resources from this node's copy of the database.
    pub catalog: &'a Catalog,
    /// The event log's keys, oldest first.
    pub event_keys: &'a [String],
    /// The groups whose tasks are running here (finished ones removed).
    pub running: &'a BTreeSet<String>,
    /// Milliseconds since the Unix epoch (failover counts are wall-clock
    /// times kept in the database across quorum owners).
    pub now_ms: u64,
    /// The UTC hour, for failback windows.
    pub hour: u8,
}

/// One thing for the driver to do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// The cluster service is not running here: take every group offline.
    StopAll,
    /// Append this text to the cluster event log.
    Event(String),
    /// Delete an old event-log entry.
    PruneEvent(String),
    /// A Failover Manager decision: log `event` (if any), then propose the
    /// change. If it does not commit, skip the round's remaining
    /// `Failover` actions (later decisions assumed the earlier ones).
    Failover {
        event: Option<String>,
        decision: Decision,
    },
    /// Record group `0` as offline on this node: it reported hosting it
    /// but no longer runs it (its cluster service stopped and restarted).
    ReportOffline(String),
    /// Start a group task for this group.
    Start(String),
    /// Hand the running group task the new catalog.
    Update(String),
    /// Tell the running group task to take its group offline.
    Stop(String),
}

/// The host's memory between rounds.
#[derive(Debug, Clone)]
pub struct ResourceHost {
    me: NodeId,
    fm: FailoverManager,
    /// The membership baseline for join/leave events.
    last_members: Option<BTreeSet<NodeId>>,
    rng: ChaCha8Rng,
}

impl ResourceHost {
    /// The host of node `me`; `seed` fixes the random placement choices.
    pub fn new(me: NodeId, seed: u64) -> ResourceHost {
        ResourceHost {
            me,
            fm: FailoverManager::default(),
            last_members: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Whether the cluster service runs here well enough to host groups:
    /// a member whose database is the cluster's (a restarted majority node
    /// waits for the owner's replica, issue 16 defect 2).
    pub fn is_active(st: &NodeStatus) -> bool {
        st.stopped.is_none() && st.view.is_some() && st.phase != NodePhase::Joining && st.db_current
    }

    /// One round: what to do now.
    pub fn step(&mut self, cfg: &ClusterConfig, input: HostInput<'_>) -> Vec<HostAction> {
        let st = input.status;
        let Some(view) = st.view.as_ref().filter(|_| Self::is_active(st)) else {
            return if input.running.is_empty() {
                Vec::new()
            } else {
                vec![HostAction::StopAll]
            };
        };
        let mut out = Vec::new();
        let name_of = |id: NodeId| cfg.nodes[usize::from(id)].name.clone();
        // The Failover Manager runs on the quorum owner.
        let owner_here = st.acting_owner && view.owner == Some(self.me) && !st.writes_held;
        let members: BTreeSet<NodeId> = view.members.iter().copied().collect();
        if owner_here {
            if let Some(prev) = &self.last_members {
                for n in members.difference(prev) {
                    out.push(HostAction::Event(format!(
                        "node {} joined the cluster (epoch {})",
                        name_of(*n),
                        view.epoch
                    )));
                }
                for n in prev.difference(&members) {
                    out.push(HostAction::Event(format!(
                        "node {} left the cluster (epoch {})",
                        name_of(*n),
                        view.epoch
                    )));
                }
            }
            let keys = input.event_keys;
            if keys.len() > EVENTS_KEPT + EVENTS_SLACK {
                out.extend(
                    keys[..keys.len() - EVENTS_KEPT]
                        .iter()
                        .map(|k| HostAction::PruneEvent(k.clone())),
                );
            }
        }
        // The baseline for membership events: what this node logged as
        // owner, or the settled view of another owner (who logs it). A view
        // that names this node owner before it acts keeps the old baseline,
        // so a new owner still reports who left while it took over.
        let other_owner_settled = view.owner.is_some_and(|o| o != self.me) && !st.writes_held;
        if owner_here || other_owner_settled || self.last_members.is_none() {
            self.last_members = Some(members);
        }
        if owner_here {
            let rng = &mut self.rng;
            let decisions = self.fm.decide(
                cfg,
                input.catalog,
                view,
                input.now_ms,
                input.hour,
                // `placement` asks only with a non-empty candidate list.
                |c| c[rng.gen_range(0..c.len())],
            );
            for d in decisions {
                let event = match &d.change {
                    Change::Put { key, value } if key.ends_with("/owner") => Some(format!(
                        "failover manager: group {} to {value}: {}",
                        d.group, d.reason
                    )),
                    Change::Put { key, .. } if key.ends_with("/state") => {
                        Some(format!("failover manager: group {}: {}", d.group, d.reason))
                    }
                    _ => None,
                };
                out.push(HostAction::Failover { event, decision: d });
            }
        }
        let me = name_of(self.me);
        for (g, rec) in &input.catalog.groups {
            let stale = rec
                .state
                .as_ref()
                .is_some_and(|s| s.node == me && !s.state.is_down());
            if stale && !input.running.contains(g) && rec.owner.as_deref() != Some(me.as_str()) {
                out.push(HostAction::ReportOffline(g.clone()));
            }
        }
        let want: BTreeSet<&String> = input
            .catalog
            .groups
            .iter()
            .filter(|(_, g)| g.owner.as_deref() == Some(me.as_str()) && g.target == Target::Online)
            .filter(|(_, g)| {
                // A group that failed here stays down until it moves (or
                // the administrator brings it online again).
                !g.state.as_ref().is_some_and(|s| {
                    s.state == GroupStatus::Failed
                        && (s.node == me || s.reason.as_deref() == Some(THRESHOLD_REASON))
                })
            })
            .map(|(n, _)| n)
            .collect();
        for g in input.running {
            out.push(if want.contains(g) {
                HostAction::Update(g.clone())
            } else {
                HostAction::Stop(g.clone())
            });
        }
        if !st.writes_held {
            out.extend(
                want.into_iter()
                    .filter(|g| !input.running.contains(*g))
                    .map(|g| HostAction::Start(g.clone())),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbSnapshot;
    use crate::message::View;
    use crate::resource::{group_key, Failback, GroupSpec, GroupState};

    const SEED: u64 = 7;

    fn cfg() -> ClusterConfig {
        ClusterConfig::for_tests(&["NODE1", "NODE2", "NODE3"])
    }

    /// Node status of a settled member; `owner` is the quorum owner.
    fn status(members: &[NodeId], owner: NodeId, paused: &[NodeId]) -> NodeStatus {
        NodeStatus {
            view: Some(View {
                epoch: 3,
                members: members.to_vec(),
                owner: Some(owner),
                paused: paused.to_vec(),
            }),
            acting_owner: true,
            phase: NodePhase::Member,
            db_current: true,
            ..NodeStatus::default()
        }
    }

    /// One group `G` with `spec` and `owner`, and the state
    /// `(state, reporting node, reason)`.
    fn catalog(
        spec: GroupSpec,
        owner: Option<&str>,
        state: Option<(GroupStatus, &str, Option<&str>)>,
    ) -> Catalog {
        let mut db = DbSnapshot::default();
        db.entries.insert(
            group_key("G", "spec"),
            serde_json::to_string(&spec).expect("spec"),
        );
        if let Some(o) = owner {
            db.entries.insert(group_key("G", "owner"), o.into());
        }
        if let Some((s, node, reason)) = state {
            let st = GroupState {
                state: s,
                node: node.into(),
                reason: reason.map(str::to_string),
            };
            db.entries.insert(
                group_key("G", "state"),
                serde_json::to_string(&st).expect("state"),
            );
        }
        Catalog::from_db(&db)
    }

    fn pref(names: &[&str]) -> GroupSpec {
        GroupSpec {
            preferred_owners: names.iter().map(|s| s.to_string()).collect(),
            ..GroupSpec::default()
        }
    }

    fn step(
        host: &mut ResourceHost,
        st: &NodeStatus,
        cat: &Catalog,
        running: &[&str],
        hour: u8,
    ) -> Vec<HostAction> {
        let running: BTreeSet<String> = running.iter().map(|s| s.to_string()).collect();
        host.step(
            &cfg(),
            HostInput {
                status: st,
                catalog: cat,
                event_keys: &[],
                running: &running,
                now_ms: 1_000_000,
                hour,
            },
        )
    }

    /// The owner the round's Failover Manager decisions give `G`, if any.
    fn moved_to(actions: &[HostAction]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            HostAction::Failover {
                decision:
                    Decision {
                        change: Change::Put { key, value },
                        ..
                    },
                ..
            } if key.ends_with("/owner") => Some(value.clone()),
            _ => None,
        })
    }

    fn threshold_hit(actions: &[HostAction]) -> bool {
        actions.iter().any(|a| {
            matches!(a, HostAction::Failover { decision: Decision { change: Change::Put { key, value }, .. }, .. }
                if key.ends_with("/state") && value.contains(THRESHOLD_REASON))
        })
    }

    /// The quorum owner's Failover Manager decisions, one row per case.
    #[test]
    fn failover_decisions() {
        let one_failover = GroupSpec {
            failover_threshold: 0,
            ..pref(&["NODE1", "NODE2", "NODE3"])
        };
        let failback = |window| GroupSpec {
            failback: Failback {
                allow: true,
                window,
            },
            ..pref(&["NODE1", "NODE2"])
        };
        struct Row {
            case: &'static str,
            spec: GroupSpec,
            owner: Option<&'static str>,
            state: Option<(GroupStatus, &'static str, Option<&'static str>)>,
            /// Members before and in this round (NODE2, id 1, owns the quorum).
            before: &'static [NodeId],
            now: &'static [NodeId],
            paused: &'static [NodeId],
            hour: u8,
            to: Option<&'static str>,
            threshold: bool,
        }
        let online = |n| Some((GroupStatus::Online, n, None));
        let rows = [
            Row {
                case: "unowned group goes to the first preferred node",
                spec: pref(&["NODE3", "NODE1"]),
                owner: None,
                state: None,
                before: &[0, 1, 2],
                now: &[0, 1, 2],
                paused: &[],
                hour: 12,
                to: Some("NODE3"),
                threshold: false,
            },
            Row {
                case: "paused nodes get nothing",
                spec: pref(&["NODE3", "NODE1"]),
                owner: None,
                state: None,
                before: &[0, 1, 2],
                now: &[0, 1, 2],
                paused: &[2],
                hour: 12,
                to: Some("NODE1"),
                threshold: false,
            },
            Row {
                case: "owner death fails over to the next preferred node",
                spec: pref(&["NODE1", "NODE3", "NODE2"]),
                owner: Some("NODE1"),
                state: online("NODE1"),
                before: &[0, 1, 2],
                now: &[1, 2],
                paused: &[],
                hour: 12,
                to: Some("NODE3"),
                threshold: false,
            },
            Row {
                case: "group failed on its owner (restart threshold used up) moves away",
                spec: pref(&["NODE1", "NODE2", "NODE3"]),
                owner: Some("NODE1"),
                state: Some((GroupStatus::Failed, "NODE1", None)),
                before: &[0, 1, 2],
                now: &[0, 1, 2],
                paused: &[],
                hour: 12,
                to: Some("NODE2"),
                threshold: false,
            },
            Row {
                case: "failover threshold reached: marked failed, stays put",
                spec: one_failover.clone(),
                owner: Some("NODE1"),
                state: online("NODE1"),
                before: &[0, 1, 2],
                now: &[1, 2],
                paused: &[],
                hour: 12,
                to: None,
                threshold: true,
            },
            Row {
                case: "stuck at the failover threshold: nothing more",
                spec: one_failover,
                owner: Some("NODE1"),
                state: Some((GroupStatus::Failed, "NODE1", Some(THRESHOLD_REASON))),
                before: &[0, 1, 2],
                now: &[1, 2],
                paused: &[],
                hour: 12,
                to: None,
                threshold: false,
            },
            Row {
                case: "failback inside the window",
                spec: failback(Some((2, 4))),
                owner: Some("NODE2"),
                state: online("NODE2"),
                before: &[1, 2],
                now: &[0, 1, 2],
                paused: &[],
                hour: 3,
                to: Some("NODE1"),
                threshold: false,
            },
            Row {
                case: "failback outside the window waits",
                spec: failback(Some((2, 4))),
                owner: Some("NODE2"),
                state: online("NODE2"),
                before: &[1, 2],
                now: &[0, 1, 2],
                paused: &[],
                hour: 12,
                to: None,
                threshold: false,
            },
            Row {
                case: "failback prevented",
                spec: pref(&["NODE1", "NODE2"]),
                owner: Some("NODE2"),
                state: online("NODE2"),
                before: &[1, 2],
                now: &[0, 1, 2],
                paused: &[],
                hour: 3,
                to: None,
                threshold: false,
            },
        ];
        for r in rows {
            let cat = catalog(r.spec, r.owner, r.state);
            let mut host = ResourceHost::new(1, SEED);
            step(&mut host, &status(r.before, 1, &[]), &cat, &[], r.hour);
            let a = step(&mut host, &status(r.now, 1, r.paused), &cat, &[], r.hour);
            assert_eq!(moved_to(&a).as_deref(), r.to, "{}: {a:?}", r.case);
            assert_eq!(threshold_hit(&a), r.threshold, "{}: {a:?}", r.case);
        }
    }

    /// Which group tasks this node starts, updates or stops, one row per case.
    #[test]
    fn group_task_decisions() {
        use HostAction::{ReportOffline, Start, Stop, Update};
        let spec = || pref(&["NODE1", "NODE2"]);
        let failed = |node, reason| Some((GroupStatus::Failed, node, reason));
        // Node NODE1 (id 0); NODE2 owns the quorum so no failover decisions.
        // (case, catalog, groups running here, writes held, expected actions)
        type Row<'a> = (&'a str, Catalog, &'a [&'a str], bool, Vec<HostAction>);
        let rows: Vec<Row> = vec![
            (
                "owned here: start",
                catalog(spec(), Some("NODE1"), None),
                &[],
                false,
                vec![Start("G".into())],
            ),
            (
                "owned here and running: hand it the catalog",
                catalog(
                    spec(),
                    Some("NODE1"),
                    Some((GroupStatus::Online, "NODE1", None)),
                ),
                &["G"],
                false,
                vec![Update("G".into())],
            ),
            (
                "moved away: stop",
                catalog(
                    spec(),
                    Some("NODE2"),
                    Some((GroupStatus::Online, "NODE1", None)),
                ),
                &["G"],
                false,
                vec![Stop("G".into())],
            ),
            (
                "failed here stays down until it moves",
                catalog(spec(), Some("NODE1"), failed("NODE1", None)),
                &[],
                false,
                vec![],
            ),
            (
                "failed at the failover threshold elsewhere stays down",
                catalog(
                    spec(),
                    Some("NODE1"),
                    failed("NODE2", Some(THRESHOLD_REASON)),
                ),
                &[],
                false,
                vec![],
            ),
            (
                "failed elsewhere, then moved here: start",
                catalog(spec(), Some("NODE1"), failed("NODE2", None)),
                &[],
                false,
                vec![Start("G".into())],
            ),
            (
                "writes held: no new task",
                catalog(spec(), Some("NODE1"), None),
                &[],
                true,
                vec![],
            ),
            (
                "reported online here but not run and not owned: report offline",
                catalog(
                    spec(),
                    Some("NODE2"),
                    Some((GroupStatus::Online, "NODE1", None)),
                ),
                &[],
                false,
                vec![ReportOffline("G".into())],
            ),
        ];
        for (case, cat, running, held, want) in rows {
            let mut host = ResourceHost::new(0, SEED);
            let mut st = status(&[0, 1], 1, &[]);
            st.writes_held = held;
            assert_eq!(step(&mut host, &st, &cat, running, 12), want, "{case}");
        }
    }

    #[test]
    fn inactive_service_stops_every_group() {
        let cat = catalog(pref(&["NODE1"]), Some("NODE1"), None);
        let mut host = ResourceHost::new(0, SEED);
        let mut joining = status(&[0, 1], 1, &[]);
        joining.phase = NodePhase::Joining;
        let mut stopped = status(&[0, 1], 1, &[]);
        stopped.stopped = Some("lost quorum".into());
        // A restarted majority node, a member before the owner's replica
        // replaced its stale one (issue 16, defect 2).
        let mut stale = status(&[0, 1], 1, &[]);
        stale.db_current = false;
        for st in [joining, stopped, stale, NodeStatus::default()] {
            assert_eq!(
                step(&mut host, &st, &cat, &["G"], 12),
                vec![HostAction::StopAll]
            );
            assert!(step(&mut host, &st, &cat, &[], 12).is_empty());
        }
    }

    #[test]
    fn owner_logs_membership_and_prunes_events() {
        let cat = Catalog::default();
        let mut host = ResourceHost::new(0, SEED);
        let none = BTreeSet::new();
        let keys: Vec<String> = (0..EVENTS_KEPT + EVENTS_SLACK + 1)
            .map(|i| format!("{EVENT_PREFIX}{i:05}"))
            .collect();
        let input = |st| HostInput {
            status: st,
            catalog: &cat,
            event_keys: &keys,
            running: &none,
            now_ms: 0,
            hour: 12,
        };
        let c = cfg();
        let (s01, s02, s012) = (
            status(&[0, 1], 0, &[]),
            status(&[0, 2], 0, &[]),
            status(&[0, 1, 2], 0, &[]),
        );
        // The first round sets the baseline; the oldest 51 events go.
        let a = host.step(&c, input(&s01));
        let pruned: Vec<&HostAction> = a
            .iter()
            .filter(|a| matches!(a, HostAction::PruneEvent(_)))
            .collect();
        assert_eq!(pruned.len(), EVENTS_SLACK + 1);
        assert_eq!(pruned[0], &HostAction::PruneEvent(keys[0].clone()));
        let a = host.step(&c, input(&s02));
        let events: Vec<&HostAction> = a
            .iter()
            .filter(|a| matches!(a, HostAction::Event(_)))
            .collect();
        assert_eq!(
            events,
            [
                &HostAction::Event("node NODE3 joined the cluster (epoch 3)".into()),
                &HostAction::Event("node NODE2 left the cluster (epoch 3)".into()),
            ]
        );
        // Not the quorum owner: no events, no pruning, no failover manager.
        let mut other = ResourceHost::new(1, SEED);
        other.step(&c, input(&s01));
        assert!(other.step(&c, input(&s012)).is_empty());
    }

    #[test]
    fn the_seed_fixes_random_choices() {
        // No preferred owners: placement picks at random among the nodes.
        let cat = catalog(GroupSpec::default(), None, None);
        let pick = |seed| {
            let mut host = ResourceHost::new(0, seed);
            moved_to(&step(&mut host, &status(&[0, 1, 2], 0, &[]), &cat, &[], 12))
        };
        assert_eq!(pick(1), pick(1));
        let all: BTreeSet<Option<String>> = (0..64).map(pick).collect();
        assert!(all.len() > 1, "{all:?}");
    }
}
