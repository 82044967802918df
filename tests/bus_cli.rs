//! `busrig bus` against a spawned `busrig target`: the status JSON contract
//! that scripts rely on, fault verbs from the command line, and APTPL state
//! that survives kill -9 of the target.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::TargetProcess;
use serde_json::Value;

fn busrig(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(args)
        .output()
        .expect("run busrig");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(t: &TargetProcess) -> Value {
    let control = t.control.to_string();
    let (ok, out, err) = busrig(&["bus", "--control", &control, "status", "--json"]);
    assert!(ok, "bus status failed: {err}");
    serde_json::from_str(&out).expect("status is JSON")
}

fn lun(st: &Value, n: u64) -> &Value {
    st["luns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lun"] == n)
        .expect("LUN in status")
}

const NODE: &str = "iqn.2026-11.io.busrig:test:node1";

#[test]
fn status_json_shows_holder_registrations_and_sessions() {
    let t = TargetProcess::start(&[]);
    let url = t.url(1);
    let st = status(&t);
    for l in st["luns"].as_array().unwrap() {
        for key in [
            "target",
            "lun",
            "scsi2_holder",
            "pr_reservation",
            "registrations",
        ] {
            assert!(l.get(key).is_some(), "LUN entry lacks {key}: {l}");
        }
        assert_eq!(l["scsi2_holder"], Value::Null);
    }

    // A holder that keeps its session open, as a quorum owner does.
    let mut hold = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args([
            "disk",
            &url,
            "reserve",
            "--hold",
            "--renew",
            "1",
            "--json",
            "--initiator",
            NODE,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn busrig disk reserve --hold");
    let mut first = String::new();
    BufReader::new(hold.stdout.take().unwrap())
        .read_line(&mut first)
        .expect("first event");
    let st = status(&t);
    let _ = hold.kill();
    let _ = hold.wait();
    assert!(!first.is_empty(), "reserve --hold printed nothing");
    let holder = &lun(&st, 1)["scsi2_holder"];
    assert_eq!(holder["initiator"], NODE, "{st}");
    assert_eq!(holder["isid"].as_str().map(str::len), Some(12));
    let sessions = st["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s["initiator"] == NODE && s["isid"] == holder["isid"]),
        "session of the holder missing: {sessions:?}"
    );
}

#[test]
fn fault_verbs_from_the_command_line() {
    let t = TargetProcess::start(&[]);
    let control = t.control.to_string();
    let c = control.as_str();
    let (ok, _, err) = busrig(&["bus", "--control", c, "fail", NODE, "1", "3/11/00"]);
    assert!(ok, "{err}");
    let (ok, _, err) = busrig(&["bus", "--control", c, "offline", "2"]);
    assert!(ok, "{err}");
    let st = status(&t);
    assert_eq!(st["faults"]["paths"][NODE]["fail_remaining"], 1);
    assert_eq!(lun(&st, 2)["offline"], true);

    // The injected failure reaches the initiator's next media command.
    let url = t.url(1);
    let (ok, out, err) = busrig(&[
        "disk",
        &url,
        "read",
        "0",
        "1",
        "--initiator",
        NODE,
        "--json",
    ]);
    assert!(!ok, "read should fail with the injected sense: {out}");
    assert!(
        err.contains("11/00") || err.contains("MEDIUM ERROR") || out.contains("11/00"),
        "{out}{err}"
    );
    let (ok, out, err) = busrig(&[
        "disk",
        &url,
        "read",
        "0",
        "1",
        "--initiator",
        NODE,
        "--json",
    ]);
    assert!(ok, "second read succeeds: {out}{err}");

    // A bad verb argument gets a clear error and a non-zero exit.
    let (ok, _, err) = busrig(&["bus", "--control", c, "fail", NODE, "1", "medium"]);
    assert!(!ok);
    assert!(err.contains("KEY/ASC/ASCQ"), "{err}");
    let (ok, _, err) = busrig(&["bus", "--control", c, "reset", "nosuchbus"]);
    assert!(!ok);
    assert!(err.contains("no bus named nosuchbus"), "{err}");
}

/// SPC-4 §5.9.4: with APTPL the registrations and the reservation persist
/// across power loss. The target saves before it answers, so kill -9 right
/// after the command loses nothing.
#[test]
fn aptpl_state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TargetProcess::start_in(dir.path(), &[]);
    let url = t.url(1);
    let (ok, out, err) = busrig(&[
        "disk",
        &url,
        "pr",
        "register",
        "--param-sark",
        "0xfeed",
        "--param-aptpl",
        "--initiator",
        NODE,
    ]);
    assert!(ok, "register: {out}{err}");
    let (ok, out, err) = busrig(&[
        "disk",
        &url,
        "pr",
        "reserve",
        "--param-rk",
        "0xfeed",
        "--prout-type",
        "5",
        "--initiator",
        NODE,
    ]);
    assert!(ok, "reserve: {out}{err}");
    t.kill(); // SIGKILL: no shutdown path runs.

    let t = TargetProcess::start_in(dir.path(), &[]);
    let st = status(&t);
    let l = lun(&st, 1);
    assert_eq!(l["registrations"][0]["key"], "0x000000000000feed", "{l}");
    assert_eq!(l["registrations"][0]["initiator"], NODE);
    assert_eq!(l["pr_reservation"]["type"], "WERO");
    assert_eq!(l["pr_reservation"]["initiator"], NODE);
    let url = t.url(1);
    let (ok, out, err) = busrig(&[
        "disk",
        &url,
        "pr",
        "read-keys",
        "--json",
        "--initiator",
        NODE,
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("read-keys JSON");
    assert_eq!(v["keys"][0], "0xfeed", "{v}");
}
