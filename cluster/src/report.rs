//! The text `busrig cluster` prints for people: the cluster status, the
//! group and resource tables of `GET /catalog`, the event log and the
//! checks of `validate`. With `--json` the CLI prints the admin
//! endpoint's JSON instead (docs/semantics.md "Interface contracts").

use std::fmt;

use serde_json::Value;

use crate::admin::ClusterStatus;
use crate::admin_client::{Event, EvsOpts, GroupChange, ResourceChange};
use crate::validate::{Check, Verdict};

/// `HH:MM:SS.mmm` UTC of a Unix time in milliseconds.
pub fn format_ms(ms: u64) -> String {
    busrig_lograte::text::time_of_day(ms)
}

/// The status as `busrig cluster status` shows it: the cluster's line,
/// then one row per node, then the node that answered.
impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Cluster {} ({}, profile {})",
            self.cluster, self.quorum_model, self.profile
        )?;
        if !self.member {
            writeln!(
                f,
                "  no member answered; {} is {} ({})",
                self.node, self.phase, self.arbitration
            )?;
        } else {
            writeln!(
                f,
                "  epoch {}, quorum owner {}, quorum log at update {}{}",
                self.epoch.unwrap_or(0),
                self.quorum_owner.as_deref().unwrap_or("none"),
                self.log_seq,
                if self.writes_held {
                    ", writes held"
                } else {
                    ""
                }
            )?;
        }
        writeln!(f, "  {:<16} {:<8} ADMIN", "NODE", "STATE")?;
        for n in &self.nodes {
            let mark = if self.quorum_owner.as_deref() == Some(n.name.as_str()) {
                "  (quorum owner)"
            } else {
                ""
            };
            writeln!(f, "  {:<16} {:<8} {}{mark}", n.name, n.state, n.admin)?;
        }
        write!(f, "  (answered by {})", self.node)
    }
}

/// One event of the cluster event log: time, node, what happened.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:<8} {}", format_ms(self.ms), self.node, self.text)
    }
}

/// `pass`, `warn` or `FAIL` (upper case, so failures stand out).
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One row of `busrig cluster validate`: verdict, rule, detail.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {:<32} {}", self.verdict, self.rule, self.detail)
    }
}

/// What `busrig cluster group ...` says once the change is committed.
impl fmt::Display for GroupChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, done) = match self {
            GroupChange::Create { name, .. } => (name, "created"),
            GroupChange::Set { name, .. } => (name, "changed"),
            GroupChange::Delete { name } => (name, "deleted"),
            GroupChange::Move { name, .. } => (name, "moving"),
            GroupChange::Online { name } => (name, "set online"),
            GroupChange::Offline { name } => (name, "set offline"),
        };
        write!(f, "group {name} {done}")
    }
}

/// What `busrig cluster resource ...` says once the change is committed.
impl fmt::Display for ResourceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, done) = match self {
            ResourceChange::Create { name, .. } => (name, "created"),
            ResourceChange::Set { name, .. } => (name, "changed"),
            ResourceChange::Delete { name } => (name, "deleted"),
            ResourceChange::Depend { name, on } => return write!(f, "{name} now depends on {on}"),
            ResourceChange::Fail { name } => (name, "failed"),
            ResourceChange::Online { name } => (name, "set online"),
            ResourceChange::Offline { name } => (name, "set offline"),
        };
        write!(f, "resource {name} {done}")
    }
}

/// What `busrig cluster evs create` says once the virtual server exists:
/// its address and its network name.
impl fmt::Display for EvsOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, ip, port) = (&self.name, &self.ip, self.port);
        let lower = name.to_ascii_lowercase();
        write!(
            f,
            "virtual server {name} created: {ip}:{port}, name {lower}"
        )
    }
}

fn strings(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
        .join(", ")
}

fn or_dash(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The groups of a `GET /catalog` answer, one row each after a header.
pub fn group_table(catalog: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:<10} {:<18} RESOURCES",
        "GROUP", "OWNER", "TARGET", "STATE"
    );
    for (n, g) in catalog["groups"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "\n{:<20} {:<10} {:<10} {:<18} {}",
            n,
            or_dash(&g["owner"]),
            or_dash(&g["target"]),
            or_dash(&g["state"]["state"]),
            strings(&g["resources"])
        ));
    }
    out
}

/// The resources of a `GET /catalog` answer, one row each after a header.
pub fn resource_table(catalog: &Value) -> String {
    let mut out = format!(
        "{:<16} {:<16} {:<20} {:<15} {:<8} DEPENDS ON",
        "RESOURCE", "GROUP", "TYPE", "STATE", "NODE"
    );
    for (n, r) in catalog["resources"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "\n{:<16} {:<16} {:<20} {:<15} {:<8} {}",
            n,
            or_dash(&r["spec"]["group"]),
            or_dash(&r["spec"]["type"]),
            or_dash(&r["state"]["state"]),
            or_dash(&r["state"]["node"]),
            strings(&r["spec"]["depends-on"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{catalog_json, NodeEntry, NodeState};
    use crate::driver::NodePhase;
    use crate::resource::Catalog;
    use serde_json::json;

    #[test]
    fn times_are_utc_clock_times() {
        assert_eq!(format_ms(0), "00:00:00.000");
        assert_eq!(format_ms(86_400_000 + 3_723_004), "01:02:03.004");
    }

    fn status(member: bool) -> ClusterStatus {
        ClusterStatus {
            cluster: "LAB".into(),
            node: "NODE2".into(),
            phase: NodePhase::Member,
            member,
            epoch: Some(4),
            quorum_owner: Some("NODE1".into()),
            quorum_model: "disk-scsi2".into(),
            profile: "fast".into(),
            log_seq: 17,
            writes_held: false,
            acting_owner: false,
            arbitration: "idle".into(),
            heartbeats: Vec::new(),
            nodes: vec![
                NodeEntry {
                    name: "NODE1".into(),
                    state: NodeState::Online,
                    admin: "127.0.0.1:7001".into(),
                },
                NodeEntry {
                    name: "NODE2".into(),
                    state: NodeState::Online,
                    admin: "127.0.0.1:7002".into(),
                },
            ],
        }
    }

    #[test]
    fn status_marks_the_quorum_owner() {
        let text = status(true).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Cluster LAB (disk-scsi2, profile fast)");
        assert_eq!(
            lines[1],
            "  epoch 4, quorum owner NODE1, quorum log at update 17"
        );
        assert_eq!(lines[2], "  NODE             STATE    ADMIN");
        // `NodeState`'s Display writes the bare word, so the STATE column
        // is not padded (the output `busrig cluster status` has always had).
        assert_eq!(
            lines[3],
            "  NODE1            online 127.0.0.1:7001  (quorum owner)"
        );
        assert_eq!(lines[4], "  NODE2            online 127.0.0.1:7002");
        assert_eq!(lines[5], "  (answered by NODE2)");
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn status_of_a_non_member_says_so() {
        let text = status(false).to_string();
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("  no member answered; NODE2 is ")),
            "{text}"
        );
    }

    #[test]
    fn checks_line_up_and_failures_shout() {
        let c = Check {
            rule: "quorum-disk".into(),
            verdict: Verdict::Fail,
            detail: "no quorum LUN".into(),
        };
        assert_eq!(
            c.to_string(),
            format!("FAIL  {:<32} no quorum LUN", "quorum-disk")
        );
        let e = Event {
            ms: 1_000,
            node: "NODE1".into(),
            text: "group EVS1 online".into(),
        };
        assert_eq!(e.to_string(), "00:00:01.000 NODE1    group EVS1 online");
    }

    #[test]
    fn tables_show_a_dash_for_what_is_unknown() {
        let empty = catalog_json(&Catalog::default());
        assert_eq!(group_table(&empty).lines().count(), 1);
        assert_eq!(resource_table(&empty).lines().count(), 1);
        let c = json!({
            "groups": { "EVS1": { "owner": "NODE1", "target": "online",
                "state": { "state": "online", "node": "NODE1" }, "resources": ["Disk1", "IP1"] } },
            "resources": { "IP1": { "spec": { "group": "EVS1", "type": "ip-address",
                "depends-on": ["Disk1"] }, "state": null } },
        });
        let g = group_table(&c);
        assert_eq!(
            g.lines().nth(1),
            Some(
                format!(
                    "{:<20} {:<10} {:<10} {:<18} Disk1, IP1",
                    "EVS1", "NODE1", "online", "online"
                )
                .as_str()
            )
        );
        let r = resource_table(&c);
        assert_eq!(
            r.lines().nth(1),
            Some(
                format!(
                    "{:<16} {:<16} {:<20} {:<15} {:<8} Disk1",
                    "IP1", "EVS1", "ip-address", "-", "-"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn changes_say_what_was_committed() {
        let name = || "EVS1".to_string();
        let g = GroupChange::Move {
            name: name(),
            to: None,
        };
        assert_eq!(g.to_string(), "group EVS1 moving");
        assert_eq!(
            GroupChange::Offline { name: name() }.to_string(),
            "group EVS1 set offline"
        );
        let d = ResourceChange::Depend {
            name: "IP1".into(),
            on: "Disk1".into(),
        };
        assert_eq!(d.to_string(), "IP1 now depends on Disk1");
        assert_eq!(
            ResourceChange::Fail { name: "IP1".into() }.to_string(),
            "resource IP1 failed"
        );
    }

    #[test]
    fn a_new_virtual_server_names_its_address_and_network_name() {
        let o = EvsOpts {
            name: "EVS1".into(),
            ip: "127.0.2.1".into(),
            disks: vec!["iscsi://h/iqn.x:t/1".into()],
            port: 2525,
            preferred: Vec::new(),
            anti_affinity: vec!["EVS".into()],
            failback_allow: false,
            bin: "busrig".into(),
        };
        assert_eq!(
            o.to_string(),
            "virtual server EVS1 created: 127.0.2.1:2525, name evs1"
        );
    }
}
