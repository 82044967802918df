//! `busrig cluster validate`: the seeds' rules for a cluster file or a
//! running cluster, each reported as pass, warn or fail.
//!
//! The rules (docs/semantics.md "Exchange rules"):
//! - parallel SCSI and FC arbitrated loop support 2 nodes, a switched
//!   fabric up to 8;
//! - majority on 2 nodes needs a witness (the cluster file refuses it
//!   anyway; reported for completeness);
//! - every physical disk is visible to all its possible owners (here: its
//!   LUN exists on the bus, which every node reaches);
//! - each Exchange virtual server is its own group with an IP address, a
//!   network name depending on it, at least one physical disk and the
//!   application (depending on the name and a disk); none lives in the
//!   default cluster group; with more than two nodes at most n-1 of them;
//! - an n-node cluster with e virtual servers needs 2n + e + 1 static
//!   addresses.

use std::collections::BTreeSet;

use busrig_http::HttpError;
use serde::Serialize;
use serde_json::Value;

use crate::admin::{self, AdminError};
use crate::admin_client::AdminClient;
use crate::config::{ClusterConfig, QuorumModel};
use crate::db::DbSnapshot;
use crate::node::quorum::Votes;
use crate::resource::{Catalog, ResourceType, DEFAULT_GROUP};

/// pass / warn / fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    /// `pass`, `warn` or `fail`, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub rule: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(rule: &str, verdict: Verdict, detail: String) -> Check {
    Check {
        rule: rule.into(),
        verdict,
        detail,
    }
}

/// What validation knows about the bus, when it can ask it.
#[derive(Debug, Clone, Default)]
pub struct BusFacts {
    /// `scsi`, `fc-al` or `fc-fabric`.
    pub topology: Option<String>,
    /// (target name, LUN) pairs the bus serves.
    pub luns: BTreeSet<(String, u16)>,
}

impl BusFacts {
    /// The facts in the bus control plane's `GET /status` answer: the
    /// first bus's topology and every LUN (target names lowercased).
    pub fn from_status(v: &Value) -> BusFacts {
        let mut facts = BusFacts {
            topology: v["buses"][0]["topology"].as_str().map(String::from),
            ..BusFacts::default()
        };
        for l in v["luns"].as_array().into_iter().flatten() {
            if let (Some(t), Some(n)) = (l["target"].as_str(), l["lun"].as_u64()) {
                facts.luns.insert((t.to_ascii_lowercase(), n as u16));
            }
        }
        facts
    }
}

/// A failure while gathering what validation checks.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The cluster's database could not be read from the member that
    /// answered.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The member's database answer did not decode.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The bus control plane could not be asked.
    #[error("bus control {addr}")]
    Bus {
        addr: String,
        #[source]
        source: HttpError,
    },
}

/// What `validate` checks besides the cluster file: the running
/// cluster's groups (none when no node answers) and, when a bus control
/// address is given, the bus's topology and LUNs (none when it answers
/// with an error).
pub async fn gather(
    client: &AdminClient,
    bus: Option<&str>,
) -> Result<(Catalog, BusFacts), FactsError> {
    let catalog = match client.status().await {
        Ok((addr, _)) => {
            let db = admin::request(&addr, "GET", "/db", None, client.secret()).await?;
            let db: DbSnapshot = serde_json::from_value(db)?;
            Catalog::from_db(&db)
        }
        Err(_) => Catalog::default(),
    };
    let mut facts = BusFacts::default();
    if let Some(b) = bus {
        let (code, v) = busrig_http::request(b, "GET", "/status", None, None)
            .await
            .map_err(|source| FactsError::Bus {
                addr: b.to_string(),
                source,
            })?;
        if code == 200 {
            facts = BusFacts::from_status(&v);
        }
    }
    Ok((catalog, facts))
}

/// Gathers the running cluster's facts ([`gather`]) and runs every rule
/// ([`validate`]) on them: what `busrig cluster validate` reports.
pub async fn check_running(
    cfg: &ClusterConfig,
    client: &AdminClient,
    bus: Option<&str>,
) -> Result<Vec<Check>, FactsError> {
    let (catalog, facts) = gather(client, bus).await?;
    Ok(validate(cfg, &catalog, &facts))
}

/// Runs every rule.
pub fn validate(cfg: &ClusterConfig, cat: &Catalog, bus: &BusFacts) -> Vec<Check> {
    let n = cfg.nodes.len();
    let mut out = Vec::new();
    // Node count against the topology.
    out.push(match bus.topology.as_deref() {
        Some(t @ ("scsi" | "fc-al")) if n > 2 => check(
            "nodes on the bus",
            Verdict::Fail,
            format!("{n} nodes on a {t} bus; parallel SCSI and FC-AL support 2"),
        ),
        Some("fc-fabric") if n > 8 => check(
            "nodes on the bus",
            Verdict::Fail,
            format!("{n} nodes on a switched fabric; at most 8 are supported"),
        ),
        Some(t) => check(
            "nodes on the bus",
            Verdict::Pass,
            format!("{n} nodes on a {t} bus"),
        ),
        None => check(
            "nodes on the bus",
            Verdict::Warn,
            format!("{n} nodes; the bus topology is unknown (give --bus or --lab)"),
        ),
    });
    // Quorum model.
    out.push(match &cfg.quorum {
        QuorumModel::Majority { witness: None } if n == 2 => check(
            "quorum model",
            Verdict::Fail,
            "majority on 2 nodes without a witness stops at the first failure".into(),
        ),
        QuorumModel::Majority { witness } => check(
            "quorum model",
            Verdict::Pass,
            format!(
                "majority: {} of {} votes needed{}",
                Votes::of(cfg).needed(),
                n + usize::from(witness.is_some()),
                if witness.is_some() {
                    " (with a witness)"
                } else {
                    ""
                }
            ),
        ),
        m => check(
            "quorum model",
            Verdict::Pass,
            format!("{} on the quorum disk", m.name()),
        ),
    });
    // Disks visible.
    let mut missing = Vec::new();
    let mut disks = 0;
    for (name, r) in &cat.resources {
        if r.spec.kind != ResourceType::PhysicalDisk {
            continue;
        }
        disks += 1;
        let Some(url) = r.spec.prop("disk") else {
            continue;
        };
        let Some((target, lun)) = url_target_lun(url) else {
            missing.push(format!("{name} ({url}: not an iSCSI URL with a LUN)"));
            continue;
        };
        if !bus.luns.is_empty() && !bus.luns.contains(&(target.clone(), lun)) {
            missing.push(format!("{name} ({target} LUN {lun} is not on the bus)"));
        }
    }
    out.push(if !missing.is_empty() {
        check(
            "disks visible to their owners",
            Verdict::Fail,
            missing.join("; "),
        )
    } else if bus.luns.is_empty() && disks > 0 {
        check(
            "disks visible to their owners",
            Verdict::Warn,
            format!("{disks} disk(s); the bus was not asked"),
        )
    } else {
        check(
            "disks visible to their owners",
            Verdict::Pass,
            format!("{disks} disk(s), each on the shared bus every node reaches"),
        )
    });
    // Exchange virtual servers.
    let evs: Vec<&String> = cat
        .groups
        .iter()
        .filter(|(_, g)| g.spec.exchange_virtual_server)
        .map(|(n, _)| n)
        .collect();
    for g in &evs {
        let members = cat.members(g);
        let has = |k: ResourceType| members.iter().filter(|(_, r)| r.spec.kind == k).count();
        let mut problems = Vec::new();
        if g.as_str() == DEFAULT_GROUP {
            problems.push("it is the default cluster group".to_string());
        }
        if has(ResourceType::IpAddress) == 0 {
            problems.push("no IP address".into());
        }
        let name_on_ip = members.iter().any(|(_, r)| {
            r.spec.kind == ResourceType::NetworkName
                && r.spec.depends_on.iter().any(|d| {
                    cat.resources
                        .get(d)
                        .is_some_and(|x| x.spec.kind == ResourceType::IpAddress)
                })
        });
        if !name_on_ip {
            problems.push("no network name depending on an IP address".into());
        }
        if has(ResourceType::PhysicalDisk) == 0 {
            problems.push("no physical disk".into());
        }
        if has(ResourceType::GenericApplication) + has(ResourceType::GenericScript) == 0 {
            problems.push("no application".into());
        }
        out.push(if problems.is_empty() {
            check(
                &format!("virtual server {g}"),
                Verdict::Pass,
                "own group with IP address, network name, disk and application".into(),
            )
        } else {
            check(
                &format!("virtual server {g}"),
                Verdict::Fail,
                problems.join("; "),
            )
        });
    }
    let e = evs.len();
    out.push(if n > 2 && e > n - 1 {
        check(
            "active/passive",
            Verdict::Fail,
            format!("{e} virtual servers on {n} nodes; at most {} (n-1)", n - 1),
        )
    } else {
        check(
            "active/passive",
            Verdict::Pass,
            format!("{e} virtual server(s) on {n} nodes"),
        )
    });
    // Static addresses: 2n + e + 1.
    let need = 2 * n + e + 1;
    let mut have: BTreeSet<std::net::IpAddr> = BTreeSet::new();
    for node in &cfg.nodes {
        have.insert(node.private.ip());
        have.insert(node.public.ip());
    }
    for r in cat.resources.values() {
        if let Some(a) = r.spec.prop("address").and_then(|a| a.parse().ok()) {
            have.insert(a);
        }
    }
    out.push(if have.len() >= need {
        check(
            "static addresses",
            Verdict::Pass,
            format!("2n + e + 1 = {need} needed, {} distinct configured", have.len()),
        )
    } else {
        check(
            "static addresses",
            Verdict::Warn,
            format!(
                "2n + e + 1 = {need} needed, {} distinct configured (a lab on loopback shares addresses)",
                have.len()
            ),
        )
    });
    out
}

/// The target name and LUN of an iSCSI URL.
fn url_target_lun(url: &str) -> Option<(String, u16)> {
    let u = busrig_initiator::IscsiUrl::parse(url).ok()?;
    Some((u.target.clone()?.to_ascii_lowercase(), u.lun?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{group_key, resource_key, GroupSpec, ResourceSpec};

    fn cfg(n: usize) -> ClusterConfig {
        let names: Vec<String> = (1..=n).map(|i| format!("N{i}")).collect();
        ClusterConfig::for_tests(&names)
    }

    fn evs_db(groups: &[&str], complete: bool) -> Catalog {
        let mut db = DbSnapshot::default();
        // The default group with the cluster's own IP address.
        db.entries.insert(
            group_key(DEFAULT_GROUP, "spec"),
            serde_json::to_string(&GroupSpec::default()).unwrap(),
        );
        let mut cip = ResourceSpec::new(DEFAULT_GROUP, ResourceType::IpAddress);
        cip.properties.insert("address".into(), "10.9.9.9".into());
        db.entries.insert(
            resource_key("Cluster IP", "spec"),
            serde_json::to_string(&cip).unwrap(),
        );
        for (i, g) in groups.iter().enumerate() {
            let spec = GroupSpec {
                exchange_virtual_server: true,
                ..GroupSpec::default()
            };
            db.entries
                .insert(group_key(g, "spec"), serde_json::to_string(&spec).unwrap());
            let mut add = |r: &str, kind, deps: &[&str], props: &[(&str, String)]| {
                let mut s = ResourceSpec::new(g, kind);
                s.depends_on = deps.iter().map(|d| format!("{g}-{d}")).collect();
                s.properties = props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                db.entries.insert(
                    resource_key(&format!("{g}-{r}"), "spec"),
                    serde_json::to_string(&s).unwrap(),
                );
            };
            add(
                "ip",
                ResourceType::IpAddress,
                &[],
                &[("address", format!("10.1.0.{}", i + 1))],
            );
            add(
                "name",
                ResourceType::NetworkName,
                &["ip"],
                &[("name", g.to_string())],
            );
            add(
                "disk",
                ResourceType::PhysicalDisk,
                &[],
                &[(
                    "disk",
                    format!("iscsi://127.0.0.1/iqn.2026-11.io.busrig:bus0/{}", i + 1),
                )],
            );
            if complete {
                add(
                    "app",
                    ResourceType::GenericApplication,
                    &["name", "disk"],
                    &[("command", "x".into())],
                );
            }
        }
        Catalog::from_db(&db)
    }

    fn verdict(checks: &[Check], rule: &str) -> Verdict {
        checks
            .iter()
            .find(|c| c.rule == rule)
            .map(|c| c.verdict)
            .unwrap()
    }

    fn fabric(luns: u16) -> BusFacts {
        BusFacts {
            topology: Some("fc-fabric".into()),
            luns: (0..=luns)
                .map(|l| ("iqn.2026-11.io.busrig:bus0".to_string(), l))
                .collect(),
        }
    }

    #[test]
    fn four_nodes_three_virtual_servers_pass() {
        let c = validate(
            &cfg(4),
            &evs_db(&["EVS1", "EVS2", "EVS3"], true),
            &fabric(3),
        );
        assert!(c.iter().all(|x| x.verdict == Verdict::Pass), "{c:#?}");
        let addr = c.iter().find(|x| x.rule == "static addresses").unwrap();
        assert!(addr.detail.contains("= 12 needed"), "{addr:?}");
    }

    #[test]
    fn rules_that_fail() {
        // Three nodes on parallel SCSI.
        let scsi = BusFacts {
            topology: Some("scsi".into()),
            ..fabric(3)
        };
        let c = validate(&cfg(3), &Catalog::default(), &scsi);
        assert_eq!(verdict(&c, "nodes on the bus"), Verdict::Fail);
        // Three virtual servers on three nodes: at most two.
        let c = validate(&cfg(3), &evs_db(&["A", "B", "C"], true), &fabric(3));
        assert_eq!(verdict(&c, "active/passive"), Verdict::Fail);
        // A virtual server without its application, one in the default group.
        let c = validate(
            &cfg(4),
            &evs_db(&["EVS1", DEFAULT_GROUP], false),
            &fabric(3),
        );
        assert_eq!(verdict(&c, "virtual server EVS1"), Verdict::Fail);
        let d = c
            .iter()
            .find(|x| x.rule == format!("virtual server {DEFAULT_GROUP}"))
            .unwrap();
        assert!(d.detail.contains("default cluster group"), "{d:?}");
        // A disk the bus does not have.
        let c = validate(&cfg(4), &evs_db(&["EVS1", "EVS2"], true), &fabric(1));
        assert_eq!(verdict(&c, "disks visible to their owners"), Verdict::Fail);
    }

    #[test]
    fn bus_facts_from_the_control_planes_status() {
        let v = serde_json::json!({
            "buses": [{ "topology": "fc-fabric" }],
            "luns": [{ "target": "IQN.X:Disks", "lun": 3 }, { "target": "y" }],
        });
        let f = BusFacts::from_status(&v);
        assert_eq!(f.topology.as_deref(), Some("fc-fabric"));
        assert_eq!(f.luns, BTreeSet::from([("iqn.x:disks".to_string(), 3)]));
        assert_eq!(BusFacts::from_status(&serde_json::json!({})).topology, None);
    }
}
