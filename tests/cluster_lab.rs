//! Real-process cluster tests with `busrig lab`: a `busrig target` and
//! three `busrig node` processes per quorum model, and the faults of the
//! cluster issue thrown at them in turn (kill -9 of the owner, a private
//! network partition, a paused owner, a node cut off on both networks, a
//! late joiner). Each step asserts what the nodes and the bus say.
//!
//! `BUSRIG_LAB_LOG=debug` makes the nodes log more; the lab folder's logs are
//! printed when a step fails.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use busrig_cluster::admin::{self, ClusterStatus};
use serde_json::{json, Value};

mod common;
use common::lab::{busrig, Lab, POLL};

impl Lab {
    /// The quorum owner a member names. A busy machine can delay a
    /// heartbeat into a regroup between two checks, so this waits, within
    /// one takeover bound, for a member that names an owner.
    fn owner(&self) -> String {
        let until = Instant::now() + self.takeover_bound();
        loop {
            let found = self
                .names()
                .iter()
                .filter_map(|n| self.status(n))
                .find(|s| s.member)
                .and_then(|s| s.quorum_owner);
            if let Some(o) = found {
                return o;
            }
            assert!(
                Instant::now() < until,
                "no member names a quorum owner{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Every node in `nodes` is a settled member of one view with an acting owner.
    fn settled(&self, nodes: &[String]) -> bool {
        let st: Vec<ClusterStatus> = nodes.iter().filter_map(|n| self.status(n)).collect();
        if st.len() != nodes.len() || st.iter().any(|s| !s.member || s.writes_held) {
            return false;
        }
        let same = st
            .iter()
            .all(|s| s.epoch == st[0].epoch && s.quorum_owner == st[0].quorum_owner);
        let acting = st[0]
            .quorum_owner
            .as_ref()
            .and_then(|o| self.status(o))
            .is_some_and(|s| s.acting_owner);
        same && acting && nodes.iter().all(|n| st[0].state_of(n) == Some("online"))
    }

    /// How long a takeover may take in this profile: detection, a regroup,
    /// the challenge and the online delay, with slack for a busy machine.
    fn takeover_bound(&self) -> Duration {
        let t = &self.cfg.timing;
        t.detection() * 3 + t.challenge_wait + t.online_delay + Duration::from_secs(3)
    }

    /// The node the bus shows holding the quorum LUN (SCSI-2 holder or PR
    /// reservation holder), by the `:NODE` end of its initiator name.
    fn bus_holder(&self) -> Option<String> {
        let bus = self.bus();
        let lun0 = bus["luns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lun"] == json!(0))
            .cloned()
            .unwrap();
        let initiator = lun0["scsi2_holder"]["initiator"]
            .as_str()
            .or_else(|| lun0["pr_reservation"]["initiator"].as_str())?;
        let tail = initiator.rsplit(':').next()?;
        self.names()
            .into_iter()
            .find(|n| n.eq_ignore_ascii_case(tail))
    }

    fn db_put(&self, node: &str, key: &str, value: &str) -> Result<u64, String> {
        self.rt
            .block_on(admin::request(
                &self.admin_of(node),
                "POST",
                "/db",
                Some(&json!({"op": "put", "key": key, "value": value})),
                Some(&self.cfg.secret),
            ))
            .map(|v| v["seq"].as_u64().unwrap_or(0))
            .map_err(|e| e.to_string())
    }

    fn db(&self, node: &str) -> Value {
        self.rt
            .block_on(admin::request(
                &self.admin_of(node),
                "GET",
                "/db",
                None,
                Some(&self.cfg.secret),
            ))
            .expect("db")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Whether an audit run was written by `node`.
fn by(run: &Value, node: &str) -> bool {
    run["initiator"]
        .as_str()
        .and_then(|i| i.rsplit(':').next())
        .is_some_and(|t| t.eq_ignore_ascii_case(node))
}

/// The whole fault sequence for one quorum model.
fn scenario(quorum: &str) {
    let lab = Lab::up(3, quorum, "fast");
    let all = lab.names();
    let bound = lab.takeover_bound();
    let detection = lab.cfg.timing.detection();
    assert!(lab.settled(&all), "formed{}", lab.logs());
    // Majority has no quorum disk: votes, not the bus, decide.
    let disk = quorum != "majority";
    if disk {
        assert_eq!(
            lab.bus_holder(),
            Some(lab.owner()),
            "bus holder is the owner"
        );
    }
    lab.db_put(&lab.owner(), "cluster/created-by", "test")
        .expect("first update");

    // 1. kill -9 the quorum owner: another node owns the quorum in bound.
    let victim = lab.owner();
    lab.lab(&["kill", &victim]);
    let took = lab.wait("takeover after kill -9", bound, |l| {
        all.iter()
            .filter(|n| **n != victim)
            .any(|n| l.status(n).is_some_and(|s| s.acting_owner))
    });
    let new_owner = lab.owner();
    assert_ne!(new_owner, victim);
    if disk {
        assert_eq!(
            lab.bus_holder(),
            Some(new_owner.clone()),
            "bus holder follows"
        );
    }
    eprintln!("{quorum}: takeover after kill -9 of {victim} in {took:?}");
    lab.lab(&["start", &victim, "--wait"]);
    lab.wait("rejoin after restart", bound, |l| l.settled(&all));

    // 2. Partition only the owner's private network: heartbeats continue
    // on the public one, so nothing fails over.
    let owner = lab.owner();
    let epoch = lab.status(&owner).unwrap().epoch;
    lab.lab(&["partition", &owner, "--net", "private"]);
    // Nothing to wait for: the claim is that nothing happens for several
    // detection times.
    std::thread::sleep(detection * 5);
    for n in &all {
        let s = lab.status(n).expect("node answers");
        assert_eq!(
            (s.epoch, s.quorum_owner.as_deref()),
            (epoch, Some(owner.as_str())),
            "{n} after a private-only partition{}",
            lab.logs()
        );
    }
    lab.lab(&["heal", &owner]);

    // 3. Pause the owner past detection; an update sent to it waits in its
    // socket. Resumed, it must stop without writing: the update is refused
    // and the bus audit shows no write of it after the takeover.
    let paused = lab.owner();
    lab.lab(&["pause", &paused]);
    let paused_admin = lab.admin_of(&paused);
    let secret = lab.cfg.secret.clone();
    let pending = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(admin::request(
            &paused_admin,
            "POST",
            "/db",
            Some(&json!({"op": "put", "key": "written/by-paused-owner", "value": "x"})),
            Some(&secret),
        ))
        .map_err(|e| e.to_string())
    });
    lab.wait("takeover from a paused owner", bound, |l| {
        all.iter()
            .filter(|n| **n != paused)
            .any(|n| l.status(n).is_some_and(|s| s.acting_owner))
    });
    let takeover_ms = now_ms();
    let log_before = lab.log_of(&paused).len();
    lab.lab(&["resume", &paused]);
    let answer = pending.join().unwrap();
    // The resumed node must not commit the update as owner. Its queued
    // request may still commit later through the new owner, once the
    // node has restarted its service and rejoined; then it is everywhere
    // (checked below) and was written by the new owner (the audit).
    if disk {
        lab.wait("old owner stops its cluster service", bound, |l| {
            l.log_of(&paused)[log_before..].contains("cluster service stopping")
        });
    } else {
        // Majority: the resumed owner finds it has no majority, holds its
        // writes and regroups. The queued update commits only if a later
        // majority takes it, and then everywhere (checked below).
        lab.wait("old owner loses the majority", bound, |l| {
            l.log_of(&paused)[log_before..].contains("lost the majority")
        });
    }
    let late: Vec<Value> = lab
        .audit(0)
        .into_iter()
        .filter(|r| by(r, &paused) && r["end_ms"].as_u64().unwrap_or(0) >= takeover_ms)
        .collect();
    assert!(
        late.is_empty(),
        "old owner wrote after the takeover: {late:?}"
    );
    lab.wait("paused node rejoins", bound * 2, |l| l.settled(&all));
    let want = if answer.is_ok() {
        Some(json!("x"))
    } else {
        None
    };
    for n in &all {
        assert_eq!(
            lab.db(n)["entries"].get("written/by-paused-owner").cloned(),
            want,
            "{n}: the update answered {answer:?}"
        );
    }

    // 4. Partition both networks of a node that is not the owner: only
    // the other side (the owner's) keeps the quorum. The cut-off node
    // regroups alone, challenges, loses to the live owner's defense and
    // stops, again and again, without ever acting as owner.
    let owner = lab.owner();
    let cut = all.iter().find(|n| **n != owner).unwrap().clone();
    let others: Vec<String> = all.iter().filter(|n| **n != cut).cloned().collect();
    lab.lab(&["partition", &cut, "--net", "both"]);
    lab.wait("the others drop the cut-off node", bound, |l| {
        l.status(&owner)
            .is_some_and(|s| s.acting_owner && s.state_of(&cut) == Some("offline"))
    });
    lab.wait("the cut-off node challenges and loses", bound, |l| {
        l.log_of(&cut).contains("cluster service stopping")
    });
    let until = Instant::now() + detection * 5;
    while Instant::now() < until {
        assert!(
            !lab.status(&cut).is_some_and(|s| s.acting_owner),
            "{cut} acts as owner while cut off{}",
            lab.logs()
        );
        std::thread::sleep(POLL);
    }
    assert!(
        lab.settled(&others),
        "the owner's side is undisturbed{}",
        lab.logs()
    );
    assert_eq!(lab.owner(), owner);
    // The bus never shows the cut-off node as holder. Under SCSI-2 its
    // challenges reset the bus, so right after one the holder is nobody
    // until the owner's next renewal.
    let holder = lab.bus_holder();
    if quorum == "disk-scsi2" {
        assert!(
            holder.is_none() || holder.as_ref() == Some(&owner),
            "bus holder {holder:?}, owner {owner}"
        );
    } else if disk {
        assert_eq!(holder, Some(owner.clone()));
    }
    lab.lab(&["heal", &cut]);
    lab.wait("cut-off node rejoins", bound * 2, |l| l.settled(&all));

    // 5. A node joining late replays the log and agrees on the database.
    let owner = lab.owner();
    let late = all.iter().find(|n| **n != owner).unwrap().clone();
    lab.lab(&["kill", &late]);
    lab.wait("others notice", bound, |l| {
        l.status(&owner)
            .is_some_and(|s| s.state_of(&late) == Some("offline"))
    });
    for i in 0..5 {
        lab.db_put(&owner, &format!("late/{i}"), &format!("v{i}"))
            .expect("update while a node is down");
    }
    lab.lab(&["start", &late, "--wait"]);
    lab.wait("late joiner settles", bound, |l| l.settled(&all));
    let want = lab.db(&owner);
    assert_eq!(want["entries"]["late/4"], json!("v4"));
    for n in &all {
        assert_eq!(lab.db(n), want, "{n}'s database");
    }
}

#[test]
fn disk_scsi2_cluster_survives_the_faults() {
    scenario("disk-scsi2");
}

#[test]
fn majority_cluster_survives_the_faults() {
    scenario("majority");
}

#[test]
fn disk_pr_cluster_survives_the_faults() {
    scenario("disk-pr");
}

/// The database's configuration: every entry but the event log.
fn config_of(db: &Value) -> Value {
    db["entries"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("event/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

fn cli(lab: &Lab, args: &[&str]) -> Output {
    let d = lab.path().to_str().unwrap();
    let mut a = vec!["cluster", "--lab", d];
    a.extend_from_slice(args);
    busrig(&a)
}

fn cli_ok(lab: &Lab, args: &[&str]) -> String {
    let out = cli(lab, args);
    assert!(
        out.status.success(),
        "busrig cluster {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        lab.logs()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `busrig cluster`: the status contract, database updates, backup and
/// restore, pause/resume/evict, and status when the first node is down.
#[test]
fn cluster_admin_verbs() {
    let lab = Lab::up(3, "disk-scsi2", "fast");
    let all = lab.names();
    let v: Value = serde_json::from_str(&cli_ok(&lab, &["status", "--json"])).unwrap();
    assert_eq!(v["cluster"], json!("LAB"));
    assert!(v["epoch"].as_u64().is_some());
    let owner = v["quorum_owner"].as_str().unwrap().to_string();
    let states: Vec<(String, String)> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        all.iter()
            .map(|n| (n.clone(), "online".to_string()))
            .collect::<Vec<_>>()
    );

    // docs/security.md: the lab's cluster file holds the secret every
    // credential derives from, so only its owner may read it.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(busrig_lab::cluster_file(lab.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "cluster file mode {mode:o}");

    // Issue 14, defect 3: a local user without the cluster file changes
    // nothing, on any node; reading the status stays open on loopback.
    let attack = [
        ("/group", json!({"action": "create", "name": "OWNED"})),
        (
            "/resource",
            json!({"action": "create", "name": "OWNED-App", "spec": {
                "group": "OWNED", "type": "generic-application",
                "properties": {"command": "touch owned"}}}),
        ),
        ("/group", json!({"action": "online", "name": "OWNED"})),
        ("/partition", json!({"net": "both", "cut": true})),
        ("/node", json!({"action": "pause", "node": all[1]})),
        ("/node", json!({"action": "evict", "node": all[2]})),
        ("/db", json!({"op": "put", "key": "owned", "value": "x"})),
    ];
    for n in &all {
        for (path, body) in &attack {
            let (code, v) = lab
                .rt
                .block_on(busrig_http::request(
                    &lab.admin_of(n),
                    "POST",
                    path,
                    Some(body),
                    None,
                ))
                .unwrap();
            assert_eq!(code, 401, "POST {path} to {n} without the credential: {v}");
        }
    }
    let (code, _) = lab
        .rt
        .block_on(busrig_http::request(
            &lab.admin_of(&owner),
            "GET",
            "/status",
            None,
            None,
        ))
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        config_of(&lab.db(&owner)),
        json!({}),
        "the database changed"
    );
    for n in &all {
        assert_eq!(lab.status(n).unwrap().state_of(&all[2]), Some("online"));
    }
    // Nor does it reach the bus: its faults need the lab's bus token.
    let (code, _) = lab
        .rt
        .block_on(busrig_http::request(
            &lab.control,
            "POST",
            "/lun",
            Some(&json!({"lun": 1, "action": "offline"})),
            None,
        ))
        .unwrap();
    assert_eq!(code, 401);

    // With the cluster file, `--config` works as `--lab` does.
    let file = busrig_lab::cluster_file(lab.path());
    let out = busrig(&[
        "cluster",
        "--config",
        file.to_str().unwrap(),
        "db",
        "set",
        "via/config",
        "yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli_ok(&lab, &["db", "delete", "via/config"]);

    // Updates, backup, more updates, restore: back to the backup's state.
    cli_ok(&lab, &["db", "set", "group/EVS1/owner", "NODE1"]);
    cli_ok(&lab, &["db", "set", "group/EVS2/owner", "NODE2"]);
    let file = lab.path().join("db.bak");
    let f = file.to_str().unwrap();
    cli_ok(&lab, &["backup", f]);
    assert!(
        !cli(&lab, &["backup", f]).status.success(),
        "backup overwrote a file"
    );
    cli_ok(&lab, &["db", "set", "group/EVS1/owner", "NODE3"]);
    cli_ok(&lab, &["db", "delete", "group/EVS2/owner"]);
    cli_ok(&lab, &["db", "set", "extra", "x"]);
    cli_ok(&lab, &["restore", f]);
    // The configuration is back; the event log (history) is not touched.
    let config = config_of;
    let db = lab.db(&owner);
    assert_eq!(
        config(&db),
        json!({"group/EVS1/owner": "NODE1", "group/EVS2/owner": "NODE2"})
    );
    assert_eq!(
        cli_ok(&lab, &["db", "get", "group/EVS2/owner"]).trim(),
        "NODE2"
    );
    let mut bad = std::fs::read(&file).unwrap();
    bad[45] ^= 0xff;
    std::fs::write(lab.path().join("bad.bak"), bad).unwrap();
    let out = cli(
        &lab,
        &["restore", lab.path().join("bad.bak").to_str().unwrap()],
    );
    assert!(!out.status.success(), "a corrupt backup was restored");
    assert_eq!(
        config(&lab.db(&owner)),
        config(&db),
        "a refused restore changed the database"
    );

    // Pause and resume a node that is not the owner, sent to any node.
    let other = all.iter().find(|n| **n != owner).unwrap().clone();
    cli_ok(&lab, &["node", "pause", &other]);
    assert_eq!(lab.status(&owner).unwrap().state_of(&other), Some("paused"));
    cli_ok(&lab, &["node", "resume", &other]);
    assert_eq!(lab.status(&owner).unwrap().state_of(&other), Some("online"));
    assert!(!cli(&lab, &["node", "pause", "NOSUCH"]).status.success());

    // Status still answers with the first node in the file killed.
    let first = all[0].clone();
    lab.lab(&["kill", &first]);
    let bound = lab.takeover_bound();
    lab.wait("the others see the first node offline", bound, |l| {
        all[1..].iter().any(|n| {
            l.status(n)
                .is_some_and(|s| s.acting_owner && s.state_of(&first) == Some("offline"))
        })
    });
    let v: Value = serde_json::from_str(&cli_ok(&lab, &["status", "--json"])).unwrap();
    assert_ne!(v["node"], json!(first), "answered by the dead node");
    assert_ne!(v["quorum_owner"], json!(first));

    // Bus faults by node name through the lab.
    let d = lab.path().to_str().unwrap().to_string();
    let out = busrig(&["bus", "--lab", &d, "delay", &all[2], "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "a logged-in node warned: {err}");
    // Issue 22: a node name the lab does not have is an error naming the
    // nodes, and no fault is set.
    let out = busrig(&["bus", "--lab", &d, "cut", "NODE9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cut NODE9 was accepted");
    assert!(
        err.contains("no node \"NODE9\"") && err.contains(&all[0]),
        "{err}"
    );
    // An iSCSI name the bus has not seen is accepted, with a warning.
    let ghost = "iqn.2026-11.io.busrig:ghost";
    let out = busrig(&["bus", "--lab", &d, "freeze", ghost]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("matches no logged-in or configured initiator"),
        "{err}"
    );
    let out = busrig(&["bus", "--lab", &d, "clear", ghost]);
    assert!(out.status.success());
    let out = busrig(&["bus", "--lab", &d, "status", "--json"]);
    let st: Value = serde_json::from_slice(&out.stdout).expect("bus status json");
    let want = format!("iqn.2026-11.io.busrig:{}", all[2].to_ascii_lowercase());
    assert!(
        st["faults"]["paths"].get(&want).is_some(),
        "no fault for {want}: {}",
        st["faults"]
    );
    let out = busrig(&["bus", "--lab", &d, "clear", &all[2]]);
    assert!(out.status.success());

    // Evict the third node: it leaves the view.
    let owner = lab.owner();
    let victim = all[1..].iter().find(|n| **n != owner).unwrap().clone();
    cli_ok(&lab, &["node", "evict", &victim]);
    assert_eq!(
        lab.status(&owner).unwrap().state_of(&victim),
        Some("offline")
    );

    // Issue 22: a misspelt property is refused by its own name, with the
    // type's valid ones, not reported as the missing property.
    cli_ok(&lab, &["group", "create", "TYPO"]);
    let out = cli(
        &lab,
        &[
            "resource",
            "create",
            "TYPO-IP",
            "--group",
            "TYPO",
            "--type",
            "ip-address",
            "--prop",
            "adress=127.0.2.9",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "adress= was accepted");
    assert!(
        err.contains("no property \"adress\"") && err.contains("known: address"),
        "{err}"
    );
    cli_ok(&lab, &["group", "delete", "TYPO"]);
}

/// Two nodes under `majority` use the witness disk (LUN 0) as the third
/// vote: the survivor of a kill -9 holds the witness and acts as owner.
#[test]
fn majority_two_nodes_with_witness_survive_a_kill() {
    let lab = Lab::up(2, "majority", "fast");
    let all = lab.names();
    assert!(lab.settled(&all), "formed{}", lab.logs());
    let owner = lab.owner();
    lab.wait("the owner holds the witness", lab.takeover_bound(), |l| {
        l.bus_holder() == Some(owner.clone())
    });
    let victim = lab.owner();
    let survivor = all.iter().find(|n| **n != victim).unwrap().clone();
    lab.lab(&["kill", &victim]);
    lab.wait("the survivor owns the quorum", lab.takeover_bound(), |l| {
        l.status(&survivor).is_some_and(|s| s.acting_owner)
    });
    lab.wait("the witness moved", lab.takeover_bound(), |l| {
        l.bus_holder() == Some(survivor.clone())
    });
    lab.lab(&["start", &victim, "--wait"]);
    lab.wait("both members again", lab.takeover_bound(), |l| {
        l.settled(&all)
    });
}

/// `busrig lab up`, `status` and `down` through the command line (the
/// other tests bring labs up and down through the `busrig-lab` crate).
#[test]
fn lab_up_status_down_through_the_cli() {
    /// Brings the lab down even when an assertion fails.
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = busrig(&["lab", "down", "--dir", self.0]);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().unwrap();
    let out = busrig(&["lab", "up", "--dir", d, "--nodes", "2"]);
    let _down = Down(d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab up: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("members NODE1=online NODE2=online"), "{text}");
    let out = busrig(&["lab", "status", "--dir", d, "--json"]);
    assert!(out.status.success());
    let st: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(st["cluster"]["cluster"], json!("LAB"));
    let running: Vec<&str> = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["process"] == json!("running"))
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["target", "NODE1", "NODE2"]);
    let out = busrig(&["lab", "down", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value =
        serde_json::from_slice(&busrig(&["lab", "status", "--dir", d, "--json"]).stdout).unwrap();
    assert_eq!(st["cluster"], Value::Null, "nobody answers after down");
    assert!(st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["pid"].is_null()));
}
