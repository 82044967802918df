//! `busrig disk validate` (the cluster validation wizard's storage checks)
//! and `busrig disk URL batch` (verbs in one session), against a spawned
//! `busrig target`, where every check passes, and against tgtd, whose
//! known gaps show as failures and warnings with their reasons: no PREEMPT
//! AND ABORT, no TARGET WARM RESET, and registrations that no later session holds.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::tgtd::Tgtd;
use common::{busrig, TargetProcess};
use serde_json::Value;

/// `busrig disk URL` with `args`, fed `stdin`.
fn batch(url: &str, who: &str, args: &[&str], stdin: &str) -> Output {
    let initiator = format!("iqn.2026-11.io.busrig.batch:{who}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(["disk", url, "--initiator", &initiator])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn busrig disk");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `busrig disk validate --json ARGS`: the exit status and the report.
fn validate(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["disk", "validate", "--json"];
    all.extend_from_slice(args);
    let o = busrig(&all);
    let report = json_lines(&o)
        .pop()
        .unwrap_or_else(|| panic!("{}", text(&o)));
    (code(&o), report, text(&o))
}

/// The results of check `name` (one per disk, or one for all).
fn results<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"] == name)
        .collect()
}

/// `busrig disk URL --json --initiator ...:WHO ARGS`, which must succeed.
fn disk_ok(url: &str, who: &str, args: &[&str]) -> Value {
    let initiator = format!("iqn.2026-11.io.busrig.test:{who}");
    let mut all = vec!["disk", url, "--json", "--initiator", &initiator];
    all.extend_from_slice(args);
    let o = busrig(&all);
    assert_eq!(code(&o), 0, "{}", text(&o));
    json_lines(&o).pop().unwrap()
}

/// The verdict the latency check must give for its own numbers.
fn latency_verdict(r: &Value) -> &'static str {
    let d = &r["details"];
    let slowest = d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| [n["read"]["max_us"].as_u64(), n["write"]["max_us"].as_u64()])
        .map(Option::unwrap)
        .max()
        .unwrap();
    match slowest {
        s if s > d["fail_us"].as_u64().unwrap() => "fail",
        s if s > d["warn_us"].as_u64().unwrap() => "warn",
        _ => "pass",
    }
}

#[test]
fn every_check_passes_against_busrig_target_and_nothing_is_left_behind() {
    let t = TargetProcess::start(&[]);
    let (u1, u2) = (t.url(1), t.url(2));
    // What the scratch blocks held before (the last 8 of the 1 GiB LUN).
    let last = (1u64 << 30) / 512 - 8;
    let lba = last.to_string();
    disk_ok(
        &u1,
        "prep",
        &["write", &lba, "--pattern", "0x3c", "--count", "8"],
    );
    let before = disk_ok(&u1, "prep", &["read", &lba, "8"])["crc32c"].clone();

    let (status, report, out) = validate(&[&u1, &u2, "--nodes", "2"]);
    assert_eq!(status, 0, "{out}");
    assert_eq!(report["fail"], 0, "{out}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 2);
    assert!(report["nodes"][1]["initiator"]
        .as_str()
        .unwrap()
        .ends_with(":NODE2"));
    for name in [
        "list-disks",
        "vpd",
        "persistent-reservation",
        "arbitration",
        "scsi2-arbitration",
        "multiple-arbitration",
        "disk-failover",
    ] {
        let r = results(&report, name);
        assert_eq!(r.len(), 2, "{name}: one result per disk\n{out}");
        for r in r {
            assert_eq!(r["verdict"], "pass", "{name}: {r}");
            assert!(
                r["command"]
                    .as_str()
                    .unwrap()
                    .starts_with("busrig disk iscsi://"),
                "{r}"
            );
        }
    }
    let sim = results(&report, "simultaneous-failover");
    assert_eq!(sim.len(), 1);
    assert_eq!(sim[0]["verdict"], "pass", "{}", sim[0]);
    assert!(sim[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("2 disks failed over"));
    // Latency is measured, not judged by this test: the verdict must
    // follow from the check's own numbers and limits.
    for r in results(&report, "disk-access-latency") {
        assert_eq!(r["verdict"], latency_verdict(r), "{r}");
        assert_eq!(r["details"]["nodes"][0]["read"]["samples"], 32, "{r}");
    }
    // The PR check saw NODE2 preempt NODE1 and PREEMPT AND ABORT back.
    let pr = results(&report, "persistent-reservation");
    assert!(
        pr[0]["command"]
            .as_str()
            .unwrap()
            .contains("pr preempt-abort"),
        "{}",
        pr[0]
    );

    // Nothing left: no keys, no PR or SCSI-2 reservation, scratch restored.
    for u in [&u1, &u2] {
        assert_eq!(
            disk_ok(u, "after", &["pr", "read-keys"])["keys"],
            serde_json::json!([])
        );
        assert!(disk_ok(u, "after", &["pr", "read-reservation"])["reservation"].is_null());
        disk_ok(u, "after", &["read", "0", "1"]);
    }
    assert_eq!(
        disk_ok(&u1, "after", &["read", &lba, "8"])["crc32c"],
        before
    );
}

#[test]
fn three_nodes_take_turns_and_the_report_reads_as_text() {
    let t = TargetProcess::start(&[]);
    let o = busrig(&[
        "disk",
        "validate",
        &t.url(1),
        "--nodes",
        "3",
        "--check",
        "persistent-reservation",
        "--check",
        "disk-failover",
    ]);
    let out = text(&o);
    assert_eq!(code(&o), 0, "{out}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("3 nodes"), "{out}");
    assert!(
        stdout.contains("pass  Validate SCSI-3 Persistent Reservation"),
        "{out}"
    );
    assert!(stdout.contains("pass  Validate Disk Failover"), "{out}");
    // Ownership went round all three and back.
    assert!(
        stdout.contains("NODE2 to NODE3") && stdout.contains("NODE3 to NODE1"),
        "{out}"
    );
    assert!(stdout.contains("shown by: busrig disk "), "{out}");
    assert!(
        stdout
            .trim_end()
            .ends_with("2 passed, 0 warnings, 0 failed"),
        "{out}"
    );
}

#[test]
fn a_disk_someone_else_registered_with_is_left_alone() {
    let t = TargetProcess::start(&[]);
    let u = t.url(1);
    disk_ok(&u, "owner", &["pr", "register", "--param-sark", "0x77"]);
    let (status, report, out) = validate(&[
        &u,
        "--check",
        "list-disks",
        "--check",
        "persistent-reservation",
    ]);
    assert_eq!(status, 4, "{out}");
    let list = results(&report, "list-disks");
    assert_eq!(list[0]["verdict"], "fail", "{out}");
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("in use") && reason.contains("0x77"),
        "{reason}"
    );
    let pr = results(&report, "persistent-reservation");
    assert!(
        pr[0]["reason"].as_str().unwrap().starts_with("not run"),
        "{}",
        pr[0]
    );
    assert_eq!(
        disk_ok(&u, "owner", &["pr", "read-keys"])["keys"],
        serde_json::json!(["0x77"])
    );
}

#[test]
fn bad_options_are_usage_errors() {
    let url = "iscsi://127.0.0.1:1/iqn.2026-11.io.busrig:bus0/1";
    for (args, says) in [
        (vec!["disk", "validate", url, "--nodes", "1"], "--nodes"),
        (
            vec!["disk", "validate", url, "--check", "bogus"],
            "no check",
        ),
        (vec!["disk", "validate"], "no disk URL"),
        (vec!["disk", "validate", "iscsi://127.0.0.1:1/iqn.x"], "LUN"),
        (vec!["disk", "inquiry"], "URL"),
    ] {
        let o = busrig(&args);
        assert_eq!(code(&o), 1, "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}

#[test]
fn tgtd_shows_its_gaps_as_failures_with_reasons() {
    let Some(t) = Tgtd::start_with_luns(2) else {
        return;
    };
    let (status, report, out) = validate(&[&t.lun_url(1), &t.lun_url(2)]);
    assert_eq!(status, 4, "{out}");
    for r in results(&report, "persistent-reservation") {
        assert_eq!(r["verdict"], "fail", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("pr preempt-abort") && reason.contains("24/00"),
            "{reason}"
        );
        assert!(
            r["command"].as_str().unwrap().contains("pr preempt-abort"),
            "{r}"
        );
    }
    for name in ["scsi2-arbitration", "multiple-arbitration"] {
        for r in results(&report, name) {
            assert_eq!(r["verdict"], "warn", "{r}");
            assert!(
                r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("TARGET WARM RESET refused"),
                "{r}"
            );
        }
    }
    for name in [
        "list-disks",
        "vpd",
        "arbitration",
        "disk-failover",
        "simultaneous-failover",
    ] {
        for r in results(&report, name) {
            assert_eq!(r["verdict"], "pass", "{name}: {r}");
        }
    }
    assert_eq!(report["fail"], 2, "{out}");
}

#[test]
fn batch_runs_every_line_in_one_session_and_stops_at_a_failure() {
    let t = TargetProcess::start(&[]);
    let u = t.url(2);
    let lines = "# a node takes the disk\n\
                 pr register --param-sark 0xa\n\
                 pr reserve --param-rk 0xa --prout-type 5\n\
                 pr read-reservation\n\
                 pr reserve --param-rk 0xb --prout-type 5\n\
                 pr read-keys\n";
    let o = batch(&u, "n1", &["--json", "batch", "-"], lines);
    assert_eq!(code(&o), 24, "{}", text(&o));
    let out = json_lines(&o);
    let numbers: Vec<u64> = out.iter().map(|j| j["line"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [2, 3, 4, 5], "the last line does not run: {out:?}");
    assert_eq!(out[2]["reservation"]["key"], "0xa", "{}", out[2]);
    assert_eq!(out[3]["exit_status"], 24, "{}", out[3]);
    // --keep-going runs the rest; the status is still the first failure's.
    let o = batch(&u, "n1", &["--json", "batch", "--keep-going"], lines);
    assert_eq!(code(&o), 24, "{}", text(&o));
    let out = json_lines(&o);
    assert_eq!(out.last().unwrap()["line"], 6);
    assert_eq!(out.last().unwrap()["keys"], serde_json::json!(["0xa"]));
    // Text output names each line before its result.
    let o = batch(&u, "n1", &["batch"], "pr read-keys\n");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("> pr read-keys\n"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_batch_with_a_bad_line_runs_nothing() {
    let t = TargetProcess::start(&[]);
    let u = t.url(1);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("steps");
    std::fs::write(&f, "pr register --param-sark 0xc\npr frobnicate\n").unwrap();
    let o = batch(&u, "n1", &["batch", f.to_str().unwrap()], "");
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("line 2"), "{}", text(&o));
    assert_eq!(
        disk_ok(&u, "n1", &["pr", "read-keys"])["keys"],
        serde_json::json!([])
    );
    let o = batch(&u, "n1", &["batch", "/nonexistent/steps"], "");
    assert_eq!(code(&o), 15, "{}", text(&o));
}

/// tgtd ties a registration to the session it was made in: after that
/// session logs out the key is still listed, but no later session holds
/// it, not even one with the same initiator name and ISID. So
/// separate `busrig disk` commands cannot register and then reserve; a
/// batch, one session, can.
#[test]
fn tgtd_honours_a_registration_only_within_its_session() {
    let Some(t) = Tgtd::start() else {
        return;
    };
    let u = t.lun_url(1);
    disk_ok(&u, "n1", &["pr", "register", "--param-sark", "0xa"]);
    let o = batch(
        &u,
        "n1",
        &["pr", "reserve", "--param-rk", "0xa", "--prout-type", "5"],
        "",
    );
    assert_eq!(
        code(&o),
        24,
        "a new session is not the registrant: {}",
        text(&o)
    );
    let o = batch(
        &u,
        "n2",
        &["--json", "batch"],
        "pr register --param-sark 0xb\npr reserve --param-rk 0xb --prout-type 5\npr read-reservation\n",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = json_lines(&o);
    assert_eq!(out[2]["reservation"]["key"], "0xb", "{out:?}");
    assert_eq!(out[2]["reservation"]["type_name"], "WERO", "{out:?}");
}
