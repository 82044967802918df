//! The chaos run's checkers: pure functions over recorded histories, so
//! each can be tested on hand-made histories (docs/chaos.md, "Checkers").
//!
//! - [`linear`]: linearizability of the register workload, per key.
//! - [`exclusive_roles`]: at most one acting quorum owner, and each group
//!   online on at most one node, at every instant, from the nodes' own
//!   timestamped logs and the runner's record of kills and pauses.
//! - [`owner_is_holder`]: the quorum owner holds the quorum disk's
//!   reservation on the bus.
//! - [`exclusive_writes`]: every writer run in the bus audit was by the
//!   nexus holding the reservation when it started writing.
//! - [`mail`]: no acknowledged message lost or duplicated.
//! - [`liveness`]: after healing, the cluster converges within a bound.

pub mod linear;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// One broken invariant, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "checker", rename_all = "kebab-case")]
pub enum Violation {
    /// A key's register history is not linearizable.
    Linearizability(Box<linear::LinearViolation>),
    /// The linearizability search gave up (too many states).
    LinearizabilityUndecided { key: String, states: usize },
    /// Two nodes held a role that only one may hold, at the same time.
    Overlap(Overlap),
    /// The quorum owner does not hold the quorum disk's reservation.
    OwnerNotHolder {
        owner: String,
        holder: Option<String>,
    },
    /// A write to a LUN by a nexus that did not hold its reservation.
    WriteWithoutReservation {
        lun: u16,
        at_ms: u64,
        summary: String,
    },
    /// Acknowledged mail missing or stored twice.
    Mail {
        group: String,
        lost: u64,
        duplicates: u64,
        missing: Vec<String>,
    },
    /// After healing the cluster did not converge within the bound.
    Liveness { bound_ms: u64, state: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Linearizability(v) => write!(
                f,
                "key {}: not linearizable at {} {:?} via {} ({}..{:?} ms), window of {} operations",
                v.key,
                v.op.client,
                v.op.op,
                v.op.node,
                v.op.invoke_ms,
                v.op.complete_ms,
                v.window.len()
            ),
            Violation::LinearizabilityUndecided { key, states } => {
                write!(
                    f,
                    "key {key}: the linearizability search gave up after {states} states"
                )
            }
            Violation::Overlap(o) => write!(f, "{o}"),
            Violation::OwnerNotHolder { owner, holder } => write!(
                f,
                "quorum owner {owner} does not hold the quorum disk reservation (holder: {})",
                holder.as_deref().unwrap_or("none")
            ),
            Violation::WriteWithoutReservation { lun, summary, .. } => {
                write!(f, "LUN {lun}: write without the reservation: {summary}")
            }
            Violation::Mail {
                group,
                lost,
                duplicates,
                ..
            } => write!(
                f,
                "{group}: {lost} acknowledged messages lost, {duplicates} duplicated"
            ),
            Violation::Liveness { bound_ms, state } => {
                write!(f, "not converged within {bound_ms} ms of healing: {state}")
            }
        }
    }
}

/// What one node logged or had done to it, at a time (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub ms: u64,
    pub node: String,
    pub event: NodeEvent,
}

/// The events the role checker reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "event", content = "group", rename_all = "kebab-case")]
pub enum NodeEvent {
    /// The node's arbitration says it owns the quorum and acts as owner.
    OwnerOn,
    /// Any other arbitration step, or the cluster service stopping.
    OwnerOff,
    /// "group online" for a group.
    GroupOn(String),
    /// Taking a group offline, or the group failed here.
    GroupOff(String),
    /// Every group is being taken offline (the service stopped).
    AllGroupsOff,
    /// SIGKILL (the process and its applications are gone).
    Killed,
    /// SIGSTOP: the process does nothing until resumed.
    Paused,
    /// SIGCONT: the process acts again on whatever it believed.
    Resumed,
}

/// What only one node may hold at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "role", content = "group", rename_all = "kebab-case")]
pub enum Role {
    QuorumOwner,
    GroupOnline(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::QuorumOwner => f.write_str("acting quorum owner"),
            Role::GroupOnline(g) => write!(f, "group {g} online"),
        }
    }
}

/// A node holding a role from `start_ms` to `end_ms` (`None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub node: String,
    pub role: Role,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
}

/// Two nodes holding the same role at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub role: Role,
    pub nodes: [String; 2],
    pub from_ms: u64,
    pub to_ms: u64,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on both {} and {} for {} ms (from {} to {})",
            self.role,
            self.nodes[0],
            self.nodes[1],
            self.to_ms - self.from_ms,
            self.from_ms,
            self.to_ms
        )
    }
}

/// The intervals in which each node held each role, from its records in
/// time order. A paused process holds nothing while paused (it can issue
/// nothing); on resume it holds again what it believed it held.
pub fn intervals(records: &[NodeRecord]) -> Vec<Interval> {
    #[derive(Default)]
    struct Node {
        believes: BTreeSet<Role>,
        paused: bool,
        open: BTreeMap<Role, u64>,
    }
    let mut sorted: Vec<&NodeRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.ms);
    let mut nodes: BTreeMap<&str, Node> = BTreeMap::new();
    let mut out = Vec::new();
    let close = |n: &mut Node, role: &Role, at: u64, out: &mut Vec<Interval>, name: &str| {
        if let Some(s) = n.open.remove(role) {
            out.push(Interval {
                node: name.to_string(),
                role: role.clone(),
                start_ms: s,
                end_ms: Some(at),
            });
        }
    };
    for r in sorted {
        let n = nodes.entry(r.node.as_str()).or_default();
        let gain = |n: &mut Node, role: Role| {
            if n.believes.insert(role.clone()) && !n.paused {
                n.open.entry(role).or_insert(r.ms);
            }
        };
        match &r.event {
            NodeEvent::OwnerOn => gain(n, Role::QuorumOwner),
            NodeEvent::GroupOn(g) => gain(n, Role::GroupOnline(g.clone())),
            NodeEvent::OwnerOff => {
                n.believes.remove(&Role::QuorumOwner);
                close(n, &Role::QuorumOwner, r.ms, &mut out, &r.node);
            }
            NodeEvent::GroupOff(g) => {
                let role = Role::GroupOnline(g.clone());
                n.believes.remove(&role);
                close(n, &role, r.ms, &mut out, &r.node);
            }
            NodeEvent::AllGroupsOff | NodeEvent::Killed => {
                let all: Vec<Role> = n
                    .believes
                    .iter()
                    .filter(|x| r.event == NodeEvent::Killed || **x != Role::QuorumOwner)
                    .cloned()
                    .collect();
                for role in all {
                    n.believes.remove(&role);
                    close(n, &role, r.ms, &mut out, &r.node);
                }
                if r.event == NodeEvent::Killed {
                    n.paused = false;
                }
            }
            NodeEvent::Paused => {
                n.paused = true;
                let open: Vec<Role> = n.open.keys().cloned().collect();
                for role in open {
                    close(n, &role, r.ms, &mut out, &r.node);
                }
            }
            NodeEvent::Resumed => {
                n.paused = false;
                for role in n.believes.clone() {
                    n.open.entry(role).or_insert(r.ms);
                }
            }
        }
    }
    for (name, n) in nodes {
        for (role, s) in n.open {
            out.push(Interval {
                node: name.to_string(),
                role,
                start_ms: s,
                end_ms: None,
            });
        }
    }
    out.sort_by(|a, b| (a.start_ms, &a.node).cmp(&(b.start_ms, &b.node)));
    out
}

/// Every pair of intervals of one role on two nodes that overlap for a
/// positive time.
pub fn exclusive_roles(intervals: &[Interval]) -> Vec<Overlap> {
    let mut out = Vec::new();
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.role != b.role || a.node == b.node {
                continue;
            }
            let from = a.start_ms.max(b.start_ms);
            let to = a
                .end_ms
                .unwrap_or(u64::MAX)
                .min(b.end_ms.unwrap_or(u64::MAX));
            if to > from {
                let mut nodes = [a.node.clone(), b.node.clone()];
                nodes.sort();
                out.push(Overlap {
                    role: a.role.clone(),
                    nodes,
                    from_ms: from,
                    to_ms: if to == u64::MAX { from } else { to },
                });
            }
        }
    }
    out
}

/// The quorum owner `owner` against the quorum LUN's reservation holder
/// (an initiator name, which ends with `:NODE`; see docs/architecture.md).
pub fn owner_is_holder(owner: &str, holder: Option<&str>) -> Option<Violation> {
    let holds = holder.is_some_and(|h| {
        h.rsplit_once(':')
            .is_some_and(|(_, n)| n.eq_ignore_ascii_case(owner))
    });
    (!holds).then(|| Violation::OwnerNotHolder {
        owner: owner.to_string(),
        holder: holder.map(String::from),
    })
}

/// One writer run of the bus audit (`GET /audit?lun=N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WriterRun {
    #[serde(default)]
    pub lun: u16,
    pub start_ms: u64,
    pub end_ms: u64,
    pub initiator: String,
    pub reserved_by_writer: bool,
    pub summary: String,
}

/// Every writer run whose writer did not hold the reservation.
pub fn exclusive_writes(runs: &[WriterRun]) -> Vec<Violation> {
    runs.iter()
        .filter(|r| !r.reserved_by_writer)
        .map(|r| Violation::WriteWithoutReservation {
            lun: r.lun,
            at_ms: r.start_ms,
            summary: r.summary.clone(),
        })
        .collect()
}

/// The counts of a mail load's final report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MailReport {
    pub acknowledged: u64,
    pub acknowledged_but_missing: u64,
    pub duplicates: u64,
    #[serde(default)]
    pub missing: Vec<String>,
}

/// Acknowledged mail lost or duplicated on `group`.
pub fn mail(group: &str, r: &MailReport) -> Option<Violation> {
    (r.acknowledged_but_missing > 0 || r.duplicates > 0).then(|| Violation::Mail {
        group: group.to_string(),
        lost: r.acknowledged_but_missing,
        duplicates: r.duplicates,
        missing: r.missing.iter().take(20).cloned().collect(),
    })
}

/// After healing at `healed_ms`: converged at `converged_ms` (`None`: not
/// by the end of the wait) within `bound_ms`; `state` says what was seen.
pub fn liveness(
    healed_ms: u64,
    converged_ms: Option<u64>,
    bound_ms: u64,
    state: &str,
) -> Option<Violation> {
    match converged_ms {
        Some(c) if c.saturating_sub(healed_ms) <= bound_ms => None,
        _ => Some(Violation::Liveness {
            bound_ms,
            state: state.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: u64, node: &str, event: NodeEvent) -> NodeRecord {
        NodeRecord {
            ms,
            node: node.into(),
            event,
        }
    }
    use NodeEvent::*;

    #[test]
    fn a_clean_handover_passes() {
        let h = [
            rec(0, "NODE1", OwnerOn),
            rec(0, "NODE1", GroupOn("EVS1".into())),
            rec(100, "NODE1", Killed),
            rec(900, "NODE2", OwnerOn),
            rec(1500, "NODE2", GroupOn("EVS1".into())),
        ];
        let iv = intervals(&h);
        assert_eq!(iv.len(), 4, "{iv:?}");
        assert!(exclusive_roles(&iv).is_empty());
    }

    #[test]
    fn overlapping_owners_are_flagged() {
        let h = [
            rec(0, "NODE1", OwnerOn),
            rec(500, "NODE2", OwnerOn),
            rec(700, "NODE1", OwnerOff),
        ];
        let o = exclusive_roles(&intervals(&h));
        assert_eq!(
            o,
            vec![Overlap {
                role: Role::QuorumOwner,
                nodes: ["NODE1".into(), "NODE2".into()],
                from_ms: 500,
                to_ms: 700
            }]
        );
    }

    #[test]
    fn a_paused_owner_holds_nothing_until_it_resumes_believing() {
        // Paused from 100 to 2000 while NODE2 takes over at 900 and NODE1
        // notices only at 2300: overlap 2000..2300, not 900..2000.
        let h = [
            rec(0, "NODE1", OwnerOn),
            rec(100, "NODE1", Paused),
            rec(900, "NODE2", OwnerOn),
            rec(2000, "NODE1", Resumed),
            rec(2300, "NODE1", OwnerOff),
        ];
        let o = exclusive_roles(&intervals(&h));
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].from_ms, o[0].to_ms), (2000, 2300));
        // Noticing before it was resumed would pass.
        let fine = [
            rec(0, "NODE1", OwnerOn),
            rec(100, "NODE1", Paused),
            rec(900, "NODE2", OwnerOn),
            rec(2000, "NODE1", Resumed),
            rec(2000, "NODE1", OwnerOff),
        ];
        assert!(exclusive_roles(&intervals(&fine)).is_empty());
        // Its lease ran out at 400, during the pause (the node logs that
        // instant when it runs again, `logs::parse` puts the record
        // there): it resumes believing nothing.
        let mut lease = fine.to_vec();
        lease.pop();
        lease.push(rec(400, "NODE1", OwnerOff));
        assert!(exclusive_roles(&intervals(&lease)).is_empty());
    }

    #[test]
    fn a_group_online_twice_is_flagged_and_a_service_stop_ends_groups() {
        let g = || "EVS1".to_string();
        let bad = [
            rec(0, "NODE1", GroupOn(g())),
            rec(50, "NODE2", GroupOn(g())),
            rec(60, "NODE1", GroupOff(g())),
        ];
        let o = exclusive_roles(&intervals(&bad));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].role, Role::GroupOnline(g()));
        let good = [
            rec(0, "NODE1", GroupOn(g())),
            rec(0, "NODE1", OwnerOn),
            rec(40, "NODE1", AllGroupsOff),
            rec(50, "NODE2", GroupOn(g())),
        ];
        let iv = intervals(&good);
        assert!(exclusive_roles(&iv).is_empty());
        // AllGroupsOff leaves the quorum role alone.
        assert!(iv
            .iter()
            .any(|i| i.role == Role::QuorumOwner && i.end_ms.is_none()));
    }

    #[test]
    fn owner_against_the_reservation_holder() {
        let ini = "iqn.2026-11.io.busrig:lab:node2";
        assert_eq!(owner_is_holder("NODE2", Some(ini)), None);
        assert!(owner_is_holder("NODE1", Some(ini)).is_some());
        assert!(owner_is_holder("NODE1", None).is_some());
    }

    #[test]
    fn a_write_by_a_non_holder_is_flagged() {
        let run = |ok: bool| WriterRun {
            lun: 1,
            start_ms: 10,
            end_ms: 20,
            initiator: "iqn:x:node1".into(),
            reserved_by_writer: ok,
            summary: "s".into(),
        };
        assert!(exclusive_writes(&[run(true), run(true)]).is_empty());
        let v = exclusive_writes(&[run(true), run(false)]);
        assert_eq!(v.len(), 1);
        assert!(v[0].to_string().contains("LUN 1"));
    }

    #[test]
    fn lost_or_duplicated_mail_is_flagged() {
        let mut r = MailReport {
            acknowledged: 100,
            ..MailReport::default()
        };
        assert_eq!(mail("EVS1", &r), None);
        r.duplicates = 1;
        assert!(mail("EVS1", &r).is_some());
        r.duplicates = 0;
        r.acknowledged_but_missing = 2;
        assert!(mail("EVS1", &r)
            .unwrap()
            .to_string()
            .contains("2 acknowledged"));
    }

    #[test]
    fn liveness_within_the_bound() {
        assert_eq!(liveness(1000, Some(5000), 4000, ""), None);
        assert!(liveness(1000, Some(5001), 4000, "").is_some());
        assert!(liveness(1000, None, 4000, "no owner").is_some());
    }
}
