//! Alarms: what the chaos checkers (`busrig_lab::chaos::check`,
//! docs/chaos.md "Checkers") would flag, shown as soon as a round sees it.
//!
//! - two nodes holding one role at once (acting quorum owner, a group
//!   online), from the nodes' own logs and the lab's processes
//!   ([`check::intervals`], [`check::exclusive_roles`]); lab only;
//! - a write by a nexus that did not hold the LUN's reservation, from the
//!   bus audit ([`check::exclusive_writes`]);
//! - the quorum owner not holding the quorum disk's reservation
//!   ([`check::owner_is_holder`]) for longer than [`HOLDER_GRACE_MS`]: an
//!   arbitration takes a moment, so a shorter gap is not a fault; lab
//!   only (where LUN 0 is the quorum disk) and under the disk quorum
//!   models.

use std::collections::BTreeMap;

use busrig_lab::chaos::check::{self, NodeRecord, Violation, WriterRun};
use serde::Serialize;
use serde_json::Value;

use crate::collect::Snapshot;

/// How long the quorum owner may be without the quorum disk's reservation
/// before it is an alarm.
pub const HOLDER_GRACE_MS: u64 = 5000;

/// One alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// The checker: `overlap`, `write-without-reservation`,
    /// `owner-not-holder`.
    pub kind: String,
    pub text: String,
    /// When it began (Unix ms).
    pub since_ms: u64,
    /// Whether it still holds (an overlap that ended is kept, as history).
    pub active: bool,
}

/// What the alarms remember between rounds.
#[derive(Debug, Default)]
pub struct Alarms {
    /// Since when the quorum owner has been seen without the reservation.
    holder_gap: Option<u64>,
}

fn kind(v: &Violation) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j["checker"].as_str().map(String::from))
        .unwrap_or_else(|| "violation".into())
}

/// The holder of LUN `lun`'s reservation (SCSI-2, else persistent) in a
/// bus status.
fn holder(status: &Value, lun: u64) -> Option<String> {
    let l = status["luns"]
        .as_array()?
        .iter()
        .find(|l| l["lun"] == lun)?;
    l["scsi2_holder"]["initiator"]
        .as_str()
        .or_else(|| l["pr_reservation"]["initiator"].as_str())
        .map(String::from)
}

impl Alarms {
    /// The alarms of this round.
    pub fn update(
        &mut self,
        snap: &Snapshot,
        records: &[NodeRecord],
        audit: &[WriterRun],
        quorum_lun: Option<u64>,
        now: u64,
    ) -> Vec<Alarm> {
        let mut out = Vec::new();
        for o in check::exclusive_roles(&check::intervals(records)) {
            let active = o.to_ms == o.from_ms;
            let v = Violation::Overlap(o.clone());
            out.push(Alarm {
                kind: kind(&v),
                text: match active {
                    true => format!("{} on both {} and {}, now", o.role, o.nodes[0], o.nodes[1]),
                    false => v.to_string(),
                },
                since_ms: o.from_ms,
                active,
            });
        }
        for (v, at) in check::exclusive_writes(audit)
            .into_iter()
            .zip(audit.iter().filter(|r| !r.reserved_by_writer))
        {
            out.push(Alarm {
                kind: kind(&v),
                text: v.to_string(),
                since_ms: at.start_ms,
                active: now.saturating_sub(at.end_ms) < 10_000,
            });
        }
        let disk_quorum = snap
            .cluster
            .quorum_model
            .as_deref()
            .is_some_and(|m| m.starts_with("disk"));
        let gap = match (quorum_lun, &snap.cluster.quorum_owner, &snap.bus.status) {
            (Some(lun), Some(owner), Some(st)) if disk_quorum => {
                check::owner_is_holder(owner, holder(st, lun).as_deref())
            }
            _ => None,
        };
        match gap {
            Some(v) => {
                let since = *self.holder_gap.get_or_insert(now);
                if now.saturating_sub(since) >= HOLDER_GRACE_MS {
                    out.push(Alarm {
                        kind: kind(&v),
                        text: v.to_string(),
                        since_ms: since,
                        active: true,
                    });
                }
            }
            None => self.holder_gap = None,
        }
        // The same alarm once, the latest first.
        let mut seen = BTreeMap::new();
        for a in out {
            seen.entry((a.kind.clone(), a.text.clone())).or_insert(a);
        }
        let mut v: Vec<Alarm> = seen.into_values().collect();
        v.sort_by_key(|a| std::cmp::Reverse((a.active, a.since_ms)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ClusterView;
    use busrig_lab::chaos::check::NodeEvent;
    use serde_json::json;

    /// The role records of a node's log lines (as the lab's nodes write
    /// them) and of the dashboard's process observations.
    fn records(lines: &[(&str, &str)]) -> Vec<NodeRecord> {
        lines
            .iter()
            .flat_map(|(node, line)| busrig_lab::chaos::logs::parse(node, line))
            .collect()
    }

    fn snap(owner: &str, holder: &str) -> Snapshot {
        let mut s = Snapshot {
            cluster: ClusterView {
                quorum_owner: Some(owner.into()),
                quorum_model: Some("disk-scsi2".into()),
                ..ClusterView::default()
            },
            ..Snapshot::default()
        };
        s.bus.status = Some(json!({"luns": [{"lun": 0, "scsi2_holder": {"initiator": holder}}]}));
        s
    }

    #[test]
    fn two_nodes_with_one_group_is_an_alarm_at_once() {
        let on = "2026-12-02T16:51:20.000Z  INFO busrig_cluster::host: group online group=EVS1";
        let later = "2026-12-02T16:51:21.000Z  INFO busrig_cluster::host: group online group=EVS1";
        let records = records(&[("NODE1", on), ("NODE2", later)]);
        let a = Alarms::default().update(&Snapshot::default(), &records, &[], None, 30);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, "overlap");
        assert!(a[0].active);
        assert!(
            a[0].text.contains("NODE1") && a[0].text.contains("NODE2"),
            "{}",
            a[0].text
        );
        // NODE1 seen gone before NODE2 took the group: no alarm.
        let mut records = records.clone();
        records.insert(
            1,
            NodeRecord {
                ms: records[0].ms + 500,
                node: "NODE1".into(),
                event: NodeEvent::Killed,
            },
        );
        assert!(Alarms::default()
            .update(&Snapshot::default(), &records, &[], None, 30)
            .is_empty());
    }

    #[test]
    fn a_write_without_the_reservation_is_an_alarm() {
        let run = |reserved| WriterRun {
            lun: 2,
            start_ms: 100,
            end_ms: 200,
            initiator: "iqn.x:NODE2".into(),
            reserved_by_writer: reserved,
            summary: "iqn.x:NODE2 wrote while NODE1 held it".into(),
        };
        let mut al = Alarms::default();
        let a = al.update(
            &Snapshot::default(),
            &[],
            &[run(true), run(false)],
            None,
            300,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, "write-without-reservation");
        assert!(a[0].text.starts_with("LUN 2"), "{}", a[0].text);
    }

    #[test]
    fn the_owner_without_the_reservation_waits_for_the_grace() {
        let mut al = Alarms::default();
        let bad = snap("NODE1", "iqn.2026-11.io.busrig:NODE2");
        assert!(al.update(&bad, &[], &[], Some(0), 1000).is_empty());
        assert!(al
            .update(&bad, &[], &[], Some(0), 1000 + HOLDER_GRACE_MS - 1)
            .is_empty());
        let a = al.update(&bad, &[], &[], Some(0), 1000 + HOLDER_GRACE_MS);
        assert_eq!(a[0].kind, "owner-not-holder");
        let good = snap("NODE1", "iqn.2026-11.io.busrig:NODE1");
        assert!(al.update(&good, &[], &[], Some(0), 9000).is_empty());
        assert!(
            al.update(&bad, &[], &[], Some(0), 9001).is_empty(),
            "the gap starts again"
        );
    }
}
