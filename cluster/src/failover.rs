//! The Failover Manager: which node owns each group.
//!
//! It runs on the quorum owner (the Global Update locker), reads the
//! groups from the database ([`Catalog`]) and the membership from the view,
//! and returns the owner changes to propose as global updates. Placement
//! itself is [`crate::placement`] (the seeds' preferred-owner table); this
//! module decides *when* a group moves:
//!
//! - a group with no owner, or brought online by the administrator, goes
//!   to the best possible node;
//! - a group whose owner left the view fails over (next preferred node);
//! - a group its owner reports `failed` (a resource used up its restart
//!   threshold) fails over away from that node;
//! - both failovers count against the group's failover threshold (default
//!   10 in 6 h, kept in the database so a new quorum owner sees the same
//!   count); past it the group is marked failed and stays where it is;
//! - when a group's preferred owner joins, the group fails back if its
//!   policy allows, at once or when the failback window opens.
//!
//! Pure: time, the hour of day and the random choice are inputs.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ClusterConfig, NodeId};
use crate::db::Change;
use crate::message::View;
use crate::placement::{
    self, AntiAffinityClassNames, FailbackPolicy, FailbackWindow, GroupPlacement, HostedGroup,
    NodeState, NodeView, PossibleOwners, PreferredOwners,
};
use crate::resource::{group_key, put_json, Catalog, GroupRecord, GroupState, GroupStatus, Target};

/// One decision, with the reason for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub group: String,
    pub change: Change,
    pub reason: String,
}

/// The reason text of a group that used up its failover threshold.
pub const THRESHOLD_REASON: &str = "failover threshold reached";

/// What the Failover Manager remembers between rounds (in memory on the
/// quorum owner; a new owner starts afresh, which at worst delays a
/// pending failback until the preferred node's next join).
#[derive(Debug, Clone, Default)]
pub struct FailoverManager {
    prev_members: Option<BTreeSet<NodeId>>,
    pending_failback: BTreeSet<String>,
}

fn ids(cfg: &ClusterConfig, names: &[String]) -> Vec<NodeId> {
    names.iter().filter_map(|n| cfg.node_id(n)).collect()
}

/// The placement view of one group.
pub fn placement_of(
    cfg: &ClusterConfig,
    cat: &Catalog,
    name: &str,
    g: &GroupRecord,
) -> GroupPlacement {
    let resource_owners = cat
        .members(name)
        .into_iter()
        .filter(|(_, r)| !r.spec.possible_owners.is_empty())
        .map(|(_, r)| PossibleOwners::new(ids(cfg, &r.spec.possible_owners)))
        .collect();
    GroupPlacement {
        name: name.to_string(),
        preferred: PreferredOwners::new(ids(cfg, &g.spec.preferred_owners)),
        resource_owners,
        anti_affinity: AntiAffinityClassNames::new(g.spec.anti_affinity.iter().cloned()),
        failback: if g.spec.failback.allow {
            FailbackPolicy::Allow {
                window: g.spec.failback.window.map(|(s, e)| FailbackWindow {
                    start_hour: s,
                    end_hour: e,
                }),
            }
        } else {
            FailbackPolicy::Prevent
        },
    }
}

/// Every node's placement state and the groups it hosts.
pub fn node_views(cfg: &ClusterConfig, cat: &Catalog, view: &View) -> Vec<NodeView> {
    let mut hosted: BTreeMap<NodeId, Vec<HostedGroup>> = BTreeMap::new();
    for (name, g) in &cat.groups {
        if let Some(o) = g.owner.as_deref().and_then(|o| cfg.node_id(o)) {
            hosted.entry(o).or_default().push(HostedGroup {
                name: name.clone(),
                anti_affinity: AntiAffinityClassNames::new(g.spec.anti_affinity.iter().cloned()),
            });
        }
    }
    (0..cfg.nodes.len() as NodeId)
        .map(|id| {
            let state = if !view.contains(id) {
                NodeState::Down
            } else if view.paused.contains(&id) {
                NodeState::Paused
            } else {
                NodeState::Up
            };
            NodeView {
                id,
                state,
                hosted: hosted.remove(&id).unwrap_or_default(),
            }
        })
        .collect()
}

impl FailoverManager {
    /// One round: the changes to propose now. `now_ms` is wall-clock time
    /// (failover counts are kept in the database across owners), `hour` the
    /// UTC hour for failback windows, `pick` the random choice among nodes.
    pub fn decide(
        &mut self,
        cfg: &ClusterConfig,
        cat: &Catalog,
        view: &View,
        now_ms: u64,
        hour: u8,
        mut pick: impl FnMut(&[NodeId]) -> NodeId,
    ) -> Vec<Decision> {
        let members: BTreeSet<NodeId> = view.members.iter().copied().collect();
        let joined: BTreeSet<NodeId> = match &self.prev_members {
            Some(prev) => members.difference(prev).copied().collect(),
            None => BTreeSet::new(),
        };
        self.prev_members = Some(members);
        let mut nodes = node_views(cfg, cat, view);
        let name_of = |id: NodeId| cfg.nodes[usize::from(id)].name.clone();
        let mut out = Vec::new();

        for (gname, g) in &cat.groups {
            let place = placement_of(cfg, cat, gname, g);
            // Failback: the preferred owner joined.
            if let Some(first) = place.preferred.first() {
                if joined.contains(&first)
                    && g.owner.as_deref().and_then(|o| cfg.node_id(o)) != Some(first)
                    && place.failback != FailbackPolicy::Prevent
                {
                    self.pending_failback.insert(gname.clone());
                }
            }
            if g.target == Target::Offline {
                self.pending_failback.remove(gname);
                continue;
            }
            let stuck = g.state.as_ref().is_some_and(|s| {
                s.state == GroupStatus::Failed && s.reason.as_deref() == Some(THRESHOLD_REASON)
            });
            if stuck {
                continue;
            }
            let owner = g.owner.as_deref().and_then(|o| cfg.node_id(o));
            let failed_here = g.state.as_ref().is_some_and(|s| {
                s.state == GroupStatus::Failed
                    && owner.is_some_and(|o| cfg.node_id(&s.node) == Some(o))
            });
            let chosen = match owner {
                None => placement::choose_move_best_possible(&place, &nodes, &mut pick)
                    .map(|n| (n, "placed on the best possible node".to_string(), false)),
                Some(o) if !view.contains(o) => {
                    placement::choose_failover(&place, o, &nodes, &mut pick).map(|n| {
                        (
                            n,
                            format!("failover: {} left the cluster", name_of(o)),
                            true,
                        )
                    })
                }
                Some(o) if failed_here => placement::choose_failover(&place, o, &nodes, &mut pick)
                    .map(|n| {
                        (
                            n,
                            format!("failover: the group failed on {}", name_of(o)),
                            true,
                        )
                    }),
                Some(o) => {
                    let first = place.preferred.first();
                    let back = self.pending_failback.contains(gname)
                        && first.is_some_and(|f| {
                            f != o
                                && nodes.iter().any(|n| n.id == f && n.state == NodeState::Up)
                                && placement::should_fail_back(&place, f, hour)
                        })
                        && g.state
                            .as_ref()
                            .is_some_and(|s| s.state == GroupStatus::Online);
                    if back {
                        self.pending_failback.remove(gname);
                        first.map(|f| {
                            (
                                f,
                                format!("failback to preferred owner {}", name_of(f)),
                                false,
                            )
                        })
                    } else {
                        None
                    }
                }
            };
            let Some((to, reason, counts)) = chosen else {
                continue;
            };
            if counts {
                let period_ms = g.spec.failover_period_secs.saturating_mul(1000);
                let mut recent: Vec<u64> = g
                    .failovers
                    .iter()
                    .copied()
                    .filter(|t| now_ms.saturating_sub(*t) < period_ms)
                    .collect();
                if recent.len() >= g.spec.failover_threshold as usize {
                    out.push(Decision {
                        group: gname.clone(),
                        change: put_json(
                            group_key(gname, "state"),
                            &GroupState {
                                state: GroupStatus::Failed,
                                node: g.state.as_ref().map(|s| s.node.clone()).unwrap_or_default(),
                                reason: Some(THRESHOLD_REASON.into()),
                            },
                        ),
                        reason: format!(
                            "{} failovers in {} s: the group stays failed",
                            recent.len(),
                            g.spec.failover_period_secs
                        ),
                    });
                    continue;
                }
                recent.push(now_ms);
                out.push(Decision {
                    group: gname.clone(),
                    change: put_json(group_key(gname, "failovers"), &recent),
                    reason: "failover counted".into(),
                });
            }
            out.push(Decision {
                group: gname.clone(),
                change: Change::Put {
                    key: group_key(gname, "owner"),
                    value: name_of(to),
                },
                reason,
            });
            // Later groups in this round see the move (anti-affinity).
            for n in nodes.iter_mut() {
                n.hosted.retain(|h| &h.name != gname);
                if n.id == to {
                    n.hosted.push(HostedGroup {
                        name: gname.clone(),
                        anti_affinity: place.anti_affinity.clone(),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbSnapshot;
    use crate::resource::{Failback, GroupSpec};

    fn cfg(n: usize) -> ClusterConfig {
        let names: Vec<String> = (1..=n).map(|i| format!("NODE{i}")).collect();
        ClusterConfig::for_tests(&names)
    }

    fn view(members: &[NodeId], paused: &[NodeId]) -> View {
        View {
            epoch: 1,
            members: members.to_vec(),
            owner: Some(members[0]),
            paused: paused.to_vec(),
        }
    }

    struct Db(DbSnapshot);

    impl Db {
        fn new() -> Db {
            Db(DbSnapshot::default())
        }
        fn group(
            mut self,
            g: &str,
            spec: GroupSpec,
            owner: Option<&str>,
            state: Option<GroupStatus>,
        ) -> Db {
            self.0
                .entries
                .insert(group_key(g, "spec"), serde_json::to_string(&spec).unwrap());
            if let Some(o) = owner {
                self.0.entries.insert(group_key(g, "owner"), o.into());
                if let Some(s) = state {
                    let st = GroupState {
                        state: s,
                        node: o.into(),
                        reason: None,
                    };
                    self.0
                        .entries
                        .insert(group_key(g, "state"), serde_json::to_string(&st).unwrap());
                }
            }
            self
        }
        fn apply(&mut self, ds: &[Decision]) {
            for d in ds {
                if let Change::Put { key, value } = &d.change {
                    self.0.entries.insert(key.clone(), value.clone());
                }
            }
        }
        fn cat(&self) -> Catalog {
            Catalog::from_db(&self.0)
        }
    }

    fn pref(names: &[&str]) -> GroupSpec {
        GroupSpec {
            preferred_owners: names.iter().map(|s| s.to_string()).collect(),
            ..GroupSpec::default()
        }
    }

    fn owners(ds: &[Decision]) -> Vec<(String, String)> {
        ds.iter()
            .filter_map(|d| match &d.change {
                Change::Put { key, value } if key.ends_with("/owner") => {
                    Some((d.group.clone(), value.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn new_group_goes_to_best_possible() {
        let c = cfg(3);
        let db = Db::new().group("G", pref(&["NODE3", "NODE1"]), None, None);
        let mut fm = FailoverManager::default();
        let d = fm.decide(
            &c,
            &db.cat(),
            &view(&[0, 1, 2], &[]),
            0,
            12,
            |_| unreachable!(),
        );
        assert_eq!(owners(&d), vec![("G".into(), "NODE3".into())]);
        // Preferred node paused: the next preferred one.
        let d = fm.decide(
            &c,
            &db.cat(),
            &view(&[0, 1, 2], &[2]),
            0,
            12,
            |_| unreachable!(),
        );
        assert_eq!(owners(&d), vec![("G".into(), "NODE1".into())]);
    }

    #[test]
    fn owner_death_fails_over_to_next_preferred_and_counts() {
        let c = cfg(3);
        let mut db = Db::new().group(
            "G",
            pref(&["NODE1", "NODE2", "NODE3"]),
            Some("NODE1"),
            Some(GroupStatus::Online),
        );
        let mut fm = FailoverManager::default();
        let d = fm.decide(
            &c,
            &db.cat(),
            &view(&[1, 2], &[]),
            1000,
            12,
            |_| unreachable!(),
        );
        assert_eq!(owners(&d), vec![("G".into(), "NODE2".into())]);
        db.apply(&d);
        assert_eq!(db.cat().groups["G"].failovers, vec![1000]);
        // Settled: nothing more to do.
        assert!(fm
            .decide(&c, &db.cat(), &view(&[1, 2], &[]), 2000, 12, |_| 0)
            .is_empty());
    }

    #[test]
    fn failed_group_moves_away_until_the_threshold() {
        let c = cfg(2);
        let spec = GroupSpec {
            failover_threshold: 2,
            failover_period_secs: 60,
            ..pref(&["NODE1", "NODE2"])
        };
        let mut db = Db::new().group("G", spec, Some("NODE1"), Some(GroupStatus::Failed));
        let mut fm = FailoverManager::default();
        let v = view(&[0, 1], &[]);
        for (t, from, to) in [(1_000, "NODE1", "NODE2"), (2_000, "NODE2", "NODE1")] {
            let d = fm.decide(&c, &db.cat(), &v, t, 12, |c| c[0]);
            assert_eq!(
                owners(&d),
                vec![("G".into(), to.to_string())],
                "from {from}"
            );
            db.apply(&d);
            // The new owner reports failure too.
            let st = GroupState {
                state: GroupStatus::Failed,
                node: to.into(),
                reason: None,
            };
            db.0.entries
                .insert(group_key("G", "state"), serde_json::to_string(&st).unwrap());
        }
        // Third failure inside the period: stays failed.
        let d = fm.decide(&c, &db.cat(), &v, 3_000, 12, |c| c[0]);
        assert!(owners(&d).is_empty());
        db.apply(&d);
        let st = db.cat().groups["G"].state.clone().unwrap();
        assert_eq!(
            (st.state, st.reason.as_deref()),
            (GroupStatus::Failed, Some(THRESHOLD_REASON))
        );
        assert!(fm.decide(&c, &db.cat(), &v, 4_000, 12, |c| c[0]).is_empty());
    }

    #[test]
    fn failback_in_window_only() {
        let c = cfg(2);
        let spec = GroupSpec {
            failback: Failback {
                allow: true,
                window: Some((2, 4)),
            },
            ..pref(&["NODE1", "NODE2"])
        };
        let db = Db::new().group("G", spec, Some("NODE2"), Some(GroupStatus::Online));
        let mut fm = FailoverManager::default();
        assert!(fm
            .decide(&c, &db.cat(), &view(&[1], &[]), 0, 12, |c| c[0])
            .is_empty());
        // NODE1 rejoins at 12:00, outside 02-04: no failback yet.
        assert!(fm
            .decide(&c, &db.cat(), &view(&[0, 1], &[]), 0, 12, |c| c[0])
            .is_empty());
        assert!(fm
            .decide(&c, &db.cat(), &view(&[0, 1], &[]), 0, 13, |c| c[0])
            .is_empty());
        // The window opens: back to NODE1.
        let d = fm.decide(&c, &db.cat(), &view(&[0, 1], &[]), 0, 2, |c| c[0]);
        assert_eq!(owners(&d), vec![("G".into(), "NODE1".into())]);
    }

    #[test]
    fn failback_prevented_and_immediate() {
        let c = cfg(2);
        let prevent = Db::new().group(
            "G",
            pref(&["NODE1", "NODE2"]),
            Some("NODE2"),
            Some(GroupStatus::Online),
        );
        let mut fm = FailoverManager::default();
        fm.decide(&c, &prevent.cat(), &view(&[1], &[]), 0, 12, |c| c[0]);
        assert!(fm
            .decide(&c, &prevent.cat(), &view(&[0, 1], &[]), 0, 12, |c| c[0])
            .is_empty());
        let spec = GroupSpec {
            failback: Failback {
                allow: true,
                window: None,
            },
            ..pref(&["NODE1", "NODE2"])
        };
        let now = Db::new().group("G", spec, Some("NODE2"), Some(GroupStatus::Online));
        let mut fm = FailoverManager::default();
        fm.decide(&c, &now.cat(), &view(&[1], &[]), 0, 12, |c| c[0]);
        let d = fm.decide(&c, &now.cat(), &view(&[0, 1], &[]), 0, 12, |c| c[0]);
        assert_eq!(owners(&d), vec![("G".into(), "NODE1".into())]);
    }

    #[test]
    fn anti_affinity_sends_groups_to_the_passive_node() {
        // Four nodes, three EVS groups on NODE1-3 with one class, NODE4
        // passive: when NODE1 dies its group goes to NODE4 (N+1).
        let c = cfg(4);
        let evs = |p: &[&str]| GroupSpec {
            anti_affinity: vec!["EVS".into()],
            ..pref(p)
        };
        let db = Db::new()
            .group(
                "EVS1",
                evs(&["NODE1", "NODE2", "NODE3", "NODE4"]),
                Some("NODE1"),
                Some(GroupStatus::Online),
            )
            .group(
                "EVS2",
                evs(&["NODE2"]),
                Some("NODE2"),
                Some(GroupStatus::Online),
            )
            .group(
                "EVS3",
                evs(&["NODE3"]),
                Some("NODE3"),
                Some(GroupStatus::Online),
            );
        let mut fm = FailoverManager::default();
        let d = fm.decide(
            &c,
            &db.cat(),
            &view(&[1, 2, 3], &[]),
            0,
            12,
            |_| unreachable!(),
        );
        assert_eq!(owners(&d), vec![("EVS1".into(), "NODE4".into())]);
    }

    #[test]
    fn offline_groups_stay_put_and_possible_owners_restrict() {
        let c = cfg(3);
        let mut db = Db::new().group(
            "G",
            pref(&["NODE1", "NODE2", "NODE3"]),
            Some("NODE1"),
            Some(GroupStatus::Online),
        );
        db.0.entries
            .insert(group_key("G", "target"), "offline".into());
        let mut fm = FailoverManager::default();
        assert!(fm
            .decide(&c, &db.cat(), &view(&[1, 2], &[]), 0, 12, |c| c[0])
            .is_empty());
        db.0.entries.remove(&group_key("G", "target"));
        let mut r = crate::resource::ResourceSpec::new(
            "G",
            crate::resource::ResourceType::GenericApplication,
        );
        r.properties.insert("command".into(), "x".into());
        r.possible_owners = vec!["NODE1".into(), "NODE3".into()];
        db.0.entries
            .insert("resource/A/spec".into(), serde_json::to_string(&r).unwrap());
        let d = fm.decide(
            &c,
            &db.cat(),
            &view(&[1, 2], &[]),
            0,
            12,
            |_| unreachable!(),
        );
        assert_eq!(owners(&d), vec![("G".into(), "NODE3".into())]);
    }
}
