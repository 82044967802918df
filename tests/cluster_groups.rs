//! Resource groups on real processes (`busrig lab`): a virtual server group
//! with an IP address, a network name on it, a physical disk and an
//! application fails over when its node is killed; the disk's reservation
//! moves and the bus audit shows one writer at a time; the application's
//! client reaches the same address afterwards; a resource failed again and
//! again is restarted, then its group moves; a paused node receives no
//! group; failback happens inside its window and not outside it; a
//! property change survives kill -9 of every node in turn.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::lab::{Lab, POLL};

impl Lab {
    fn catalog(&self) -> Value {
        serde_json::from_str(&self.cluster(&["group", "list", "--json"])).unwrap()
    }

    fn group(&self, g: &str) -> (Option<String>, Option<String>) {
        let c = self.catalog();
        (
            c[g]["owner"].as_str().map(String::from),
            c[g]["state"]["state"].as_str().map(String::from),
        )
    }

    fn online_on(&self, g: &str, node: &str) -> bool {
        self.group(g) == (Some(node.to_string()), Some("online".into()))
            && self.catalog()[g]["state"]["node"] == json!(node)
    }

    fn bound(&self) -> Duration {
        let t = &self.cfg.timing;
        t.detection() * 3 + t.challenge_wait * 2 + t.online_delay * 2 + Duration::from_secs(5)
    }
}

/// Asks the echo application on `addr` who answers: its node.
fn who(addr: &str) -> Option<String> {
    answer(addr).map(|(n, _)| n)
}

/// The echo application's node and process id.
fn answer(addr: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"ping\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let head = line.split(':').next()?;
    let mut it = head.split_whitespace();
    Some((it.next()?.to_string(), it.next()?.to_string()))
}

fn tail_node(initiator: &str) -> String {
    initiator
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// One virtual server group, `EVS1`, on loopback address `ip`.
fn create_evs(lab: &Lab, ip: &str, lun: u32, preferred: &str) {
    let bin = env!("CARGO_BIN_EXE_busrig");
    let disk = format!(
        "disk=iscsi://{}/iqn.2026-11.io.busrig:lab/{lun}",
        lab.portal
    );
    lab.cluster(&[
        "group",
        "create",
        "EVS1",
        "--preferred",
        preferred,
        "--evs",
        "true",
    ]);
    lab.cluster(&[
        "resource",
        "create",
        "IP1",
        "--group",
        "EVS1",
        "--type",
        "ip-address",
        "--prop",
        &format!("address={ip}"),
    ]);
    lab.cluster(&[
        "resource",
        "create",
        "NAME1",
        "--group",
        "EVS1",
        "--type",
        "network-name",
        "--prop",
        "name=evs1",
        "--depends-on",
        "IP1",
    ]);
    lab.cluster(&[
        "resource",
        "create",
        "DISK1",
        "--group",
        "EVS1",
        "--type",
        "physical-disk",
        "--prop",
        &disk,
        "--is-alive-ms",
        "300",
    ]);
    lab.cluster(&[
        "resource",
        "create",
        "APP1",
        "--group",
        "EVS1",
        "--type",
        "generic-application",
        "--prop",
        &format!("command={bin} echo-server --listen {ip}:7777"),
        "--prop",
        &format!("probe-tcp={ip}:7777"),
        "--depends-on",
        "NAME1,DISK1",
        "--looks-alive-ms",
        "100",
        "--is-alive-ms",
        "500",
        "--restart-threshold",
        "2",
        "--restart-period",
        "600",
    ]);
}

#[test]
fn virtual_server_fails_over_with_its_disk_address_and_application() {
    let lab = Lab::up(3, "disk-scsi2", "fast");
    let ip = "127.0.1.11";
    let addr = format!("{ip}:7777");
    // Refused changes say why and change nothing.
    lab.cluster(&["group", "create", "EVS1", "--preferred", "NODE2,NODE3"]);
    let e = lab.cluster_fails(&[
        "resource",
        "create",
        "N",
        "--group",
        "EVS1",
        "--type",
        "network-name",
        "--prop",
        "name=x",
    ]);
    assert!(e.contains("ip-address"), "{e}");
    lab.cluster(&["group", "delete", "EVS1"]);
    create_evs(&lab, ip, 1, "NODE2,NODE3,NODE1");
    let e = lab.cluster_fails(&["resource", "depend", "IP1", "--on", "APP1"]);
    assert!(e.contains("cycle"), "{e}");

    let bound = lab.bound();
    lab.wait("EVS1 online on NODE2", bound, |l| {
        l.online_on("EVS1", "NODE2")
    });
    lab.wait("the application answers", bound, |_| {
        who(&addr).as_deref() == Some("NODE2")
    });
    assert_eq!(lab.cluster(&["resolve", "evs1"]).trim(), ip);
    // The seeds' rules hold for this layout (loopback shares addresses,
    // which is a warning, not a failure).
    let checks: Value = serde_json::from_str(&lab.cluster(&["validate", "--json"])).unwrap();
    let verdict = |rule: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["rule"] == json!(rule))
            .map(|c| c["verdict"].clone())
    };
    assert_eq!(
        verdict("virtual server EVS1"),
        Some(json!("pass")),
        "{checks}"
    );
    assert_eq!(verdict("nodes on the bus"), Some(json!("pass")), "{checks}");
    assert_eq!(
        verdict("disks visible to their owners"),
        Some(json!("pass")),
        "{checks}"
    );

    // Kill NODE2: EVS1 comes up on NODE3 (next preferred), same address.
    lab.lab(&["kill", "NODE2"]);
    let killed = Instant::now();
    lab.wait("EVS1 online on NODE3", bound, |l| {
        l.online_on("EVS1", "NODE3")
    });
    lab.wait("the client reaches the same address", bound, |_| {
        who(&addr).as_deref() == Some("NODE3")
    });
    eprintln!(
        "EVS1 answered from NODE3 {:?} after the kill",
        killed.elapsed()
    );
    // The disk's writers: NODE2, then NODE3, each holding the reservation.
    let runs = lab.audit(1);
    let writers: Vec<String> = runs
        .iter()
        .map(|r| tail_node(r["initiator"].as_str().unwrap()))
        .collect();
    let mut seen: Vec<String> = writers.clone();
    seen.dedup();
    assert_eq!(
        seen,
        vec!["NODE2".to_string(), "NODE3".to_string()],
        "audit {runs:?}"
    );
    assert!(
        runs.iter().all(|r| r["reserved_by_writer"] == json!(true)),
        "audit {runs:?}"
    );
    // The event log, the same on every node, tells the story.
    let log = lab.cluster(&["log"]);
    for line in [
        "group EVS1 online on NODE2",
        "node NODE2 left the cluster",
        "failover manager: group EVS1 to NODE3",
        "group EVS1 online on NODE3",
    ] {
        assert!(log.contains(line), "event log lacks {line:?}:\n{log}");
    }

    // A paused node receives nothing: pause NODE1 (cluster pause), kill
    // NODE3; with NODE2 down too, EVS1 has nowhere to go.
    lab.cluster(&["node", "pause", "NODE1"]);
    lab.lab(&["kill", "NODE3"]);
    let until = Instant::now() + lab.cfg.timing.detection() * 6;
    while Instant::now() < until {
        let (owner, _) = lab.group("EVS1");
        assert_ne!(
            owner.as_deref(),
            Some("NODE1"),
            "a paused node received a group"
        );
        std::thread::sleep(POLL);
    }
    lab.cluster(&["node", "resume", "NODE1"]);
    lab.wait("EVS1 online on NODE1 after resume", bound, |l| {
        l.online_on("EVS1", "NODE1")
    });
    lab.wait("the application answers from NODE1", bound, |_| {
        who(&addr).as_deref() == Some("NODE1")
    });
}

#[test]
fn failing_resource_restarts_then_its_group_moves() {
    let lab = Lab::up(2, "disk-pr", "fast");
    let ip = "127.0.1.12";
    let addr = format!("{ip}:7777");
    create_evs(&lab, ip, 2, "NODE1,NODE2");
    let bound = lab.bound();
    lab.wait("EVS1 online on NODE1", bound, |l| {
        l.online_on("EVS1", "NODE1")
    });
    lab.wait("the application answers", bound, |_| {
        who(&addr).as_deref() == Some("NODE1")
    });
    // The application is killed twice: LooksAlive notices and it is
    // restarted in place (restart threshold 2), a new process each time...
    let kill_app = |pid: &str| {
        let pid: i32 = pid.parse().expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the application");
    };
    let mut pid = answer(&addr).expect("answers").1;
    for _ in 0..2 {
        kill_app(&pid);
        lab.wait("APP1 restarted on NODE1", bound, |_| {
            answer(&addr).is_some_and(|(n, p)| n == "NODE1" && p != pid)
        });
        pid = answer(&addr).unwrap().1;
        assert_eq!(lab.group("EVS1").0.as_deref(), Some("NODE1"));
    }
    // ...the third failure moves the group.
    kill_app(&pid);
    lab.wait("EVS1 moved to NODE2", bound, |l| {
        l.online_on("EVS1", "NODE2")
    });
    lab.wait("answers from NODE2", bound, |_| {
        who(&addr).as_deref() == Some("NODE2")
    });
    let c = lab.catalog();
    assert_eq!(
        c["EVS1"]["failovers"].as_array().map(Vec::len),
        Some(1),
        "{c}"
    );
    // An administrator's failure counts like a crash (a restart here).
    let pid = answer(&addr).unwrap().1;
    lab.cluster(&["resource", "fail", "APP1"]);
    lab.wait("APP1 restarted after resource fail", bound, |_| {
        answer(&addr).is_some_and(|(n, p)| n == "NODE2" && p != pid)
    });
    // Resource offline: the application stops (the group stays); online
    // brings it back on the same node.
    lab.cluster(&["resource", "offline", "APP1"]);
    lab.wait("APP1 offline", bound, |_| who(&addr).is_none());
    assert_eq!(lab.group("EVS1").0.as_deref(), Some("NODE2"));
    lab.cluster(&["resource", "online", "APP1"]);
    lab.wait("APP1 online again", bound, |_| {
        who(&addr).as_deref() == Some("NODE2")
    });
}

fn utc_hour() -> u8 {
    ((std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600)
        % 24) as u8
}

#[test]
fn failback_only_inside_the_window_and_settings_survive_kills() {
    let lab = Lab::up(3, "disk-scsi2", "fast");
    let bound = lab.bound();
    let h = utc_hour();
    // G_IN may fail back now (window covers this hour and the next);
    // G_OUT only in a window that starts three hours from now.
    for (g, window) in [
        ("G_IN", format!("{}-{}", h, (h + 2) % 24)),
        ("G_OUT", format!("{}-{}", (h + 3) % 24, (h + 5) % 24)),
    ] {
        lab.cluster(&[
            "group",
            "create",
            g,
            "--preferred",
            "NODE2,NODE3",
            "--failback",
            "allow",
            "--failback-window",
            &window,
        ]);
        lab.cluster(&[
            "resource",
            "create",
            &format!("{g}_APP"),
            "--group",
            g,
            "--type",
            "generic-application",
            "--prop",
            "command=sleep 1000",
            "--looks-alive-ms",
            "200",
        ]);
    }
    for g in ["G_IN", "G_OUT"] {
        lab.wait("groups online on NODE2", bound, |l| l.online_on(g, "NODE2"));
    }
    lab.lab(&["kill", "NODE2"]);
    for g in ["G_IN", "G_OUT"] {
        lab.wait("groups fail over to NODE3", bound, |l| {
            l.online_on(g, "NODE3")
        });
    }
    lab.lab(&["start", "NODE2", "--wait"]);
    lab.wait("G_IN fails back to NODE2", bound, |l| {
        l.online_on("G_IN", "NODE2")
    });
    // G_OUT stays: give the Failover Manager several rounds.
    std::thread::sleep(lab.cfg.timing.detection() * 4);
    assert!(
        lab.online_on("G_OUT", "NODE3"),
        "G_OUT failed back outside its window{}",
        lab.logs()
    );

    // A property change survives kill -9 of every node in turn.
    lab.cluster(&["group", "set", "G_OUT", "--anti-affinity", "EVS,MAIL"]);
    for n in ["NODE1", "NODE2", "NODE3"] {
        lab.lab(&["kill", n]);
        lab.lab(&["start", n, "--wait"]);
        let all: Vec<String> = lab.cfg.nodes.iter().map(|x| x.name.clone()).collect();
        lab.wait("cluster settles", bound, |l| {
            all.iter()
                .all(|x| l.status(x).is_some_and(|s| s.member && !s.writes_held))
        });
        let c = lab.catalog();
        assert_eq!(
            c["G_OUT"]["spec"]["anti-affinity"],
            json!(["EVS", "MAIL"]),
            "after killing {n}"
        );
    }
    let _ = Path::new(lab.d());
}

/// Applications write through the owning node's disk proxy (its reserved
/// I_T nexus). When the owner is paused and the group moves, the old
/// owner's proxy refuses writes after it resumes, and the bus audit shows
/// one writer at a time.
#[test]
fn old_owner_cannot_write_through_its_disk_proxy() {
    use busrig_cluster::clusdisk::Client;
    let lab = Lab::up(2, "disk-scsi2", "fast");
    let disk = format!("disk=iscsi://{}/iqn.2026-11.io.busrig:lab/3", lab.portal);
    lab.cluster(&["group", "create", "G", "--preferred", "NODE1,NODE2"]);
    lab.cluster(&[
        "resource",
        "create",
        "D",
        "--group",
        "G",
        "--type",
        "physical-disk",
        "--prop",
        &disk,
    ]);
    let bound = lab.bound();
    lab.wait("G online on NODE1", bound, |l| l.online_on("G", "NODE1"));
    let sock = |n: &str| lab.dir.path().join(format!("nodes/{n}/disk-D.sock"));
    lab.wait("the disk online on NODE1", bound, |_| {
        sock("NODE1").exists()
    });
    let old = lab
        .rt
        .block_on(Client::connect(&sock("NODE1")))
        .expect("proxy on NODE1");
    let block = |b: u8| vec![b; 512];
    lab.rt
        .block_on(old.write(10, &block(1), true))
        .expect("the owner writes");

    lab.lab(&["pause", "NODE1"]);
    lab.wait("G online on NODE2", bound, |l| {
        l.online_on("G", "NODE2") && sock("NODE2").exists()
    });
    let takeover_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let new = lab
        .rt
        .block_on(Client::connect(&sock("NODE2")))
        .expect("proxy on NODE2");
    lab.rt
        .block_on(new.write(10, &block(2), true))
        .expect("the new owner writes");
    lab.lab(&["resume", "NODE1"]);
    let refused = lab.rt.block_on(old.write(10, &block(3), true));
    assert!(refused.is_err(), "the old owner's proxy accepted a write");
    let data = lab.rt.block_on(new.read(10, 1)).expect("read back");
    assert_eq!(
        &data[..],
        &block(2)[..],
        "the old owner's write reached the disk"
    );
    let late: Vec<Value> = lab
        .audit(3)
        .into_iter()
        .filter(|r| {
            tail_node(r["initiator"].as_str().unwrap()) == "NODE1"
                && r["end_ms"].as_u64().unwrap_or(0) >= takeover_ms
        })
        .collect();
    assert!(late.is_empty(), "NODE1 wrote after the takeover: {late:?}");
}
