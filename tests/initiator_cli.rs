//! `busrig disk URL VERB` against a spawned `busrig target`: every verb,
//! JSON output, and the sg3_utils exit statuses (24 on RESERVATION
//! CONFLICT), including a reservation defender and a challenger played by
//! two identities of the same binary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TargetProcess;
use serde_json::Value;

/// `busrig disk URL --json --initiator iqn...:<who> ARGS...`.
fn disk(url: &str, who: &str, args: &[&str]) -> Output {
    let initiator = format!("iqn.2026-11.io.busrig.cli:{who}");
    Command::new(env!("CARGO_BIN_EXE_busrig"))
        .arg("disk")
        .arg(url)
        .args(["--json", "--initiator", &initiator])
        .args(args)
        .output()
        .expect("run busrig disk")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json(o: &Output) -> Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[track_caller]
fn ok(o: Output) -> Value {
    assert_eq!(
        code(&o),
        0,
        "stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    json(&o)
}

/// A long-running `busrig disk` (reserve --hold, arbitrate --hold) whose
/// JSON event lines arrive on a channel; killed on drop.
struct Holder {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Holder {
    fn start(url: &str, who: &str, args: &[&str]) -> Holder {
        let initiator = format!("iqn.2026-11.io.busrig.cli:{who}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_busrig"))
            .arg("disk")
            .arg(url)
            .args(["--json", "--initiator", &initiator])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn busrig disk");
        let out = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Holder { child, events }
    }

    /// The next event whose `key` is one of `values`.
    fn wait_for(&self, key: &str, values: &[&str]) -> Value {
        loop {
            let v = self
                .events
                .recv_timeout(Duration::from_secs(30))
                .expect("holder event in time");
            if values.iter().any(|want| v[key] == *want) {
                return v;
            }
        }
    }

    fn exit_code(&mut self, limit: Duration) -> i32 {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(t0.elapsed() < limit, "holder still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn information_verbs_print_json() {
    let t = TargetProcess::start(&[]);
    let u = t.url(1);
    let inq = ok(disk(&u, "info", &["inquiry"]));
    assert_eq!(inq["inquiry"]["device_type"], 0);
    let cap = ok(disk(&u, "info", &["capacity"]));
    assert_eq!(cap["capacity"]["bytes"], 1u64 << 30);
    assert_eq!(cap["capacity"]["block_length"], 512);
    let luns = ok(disk(&u, "info", &["luns"]));
    let numbers: Vec<i64> = luns["luns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lun"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    let sp = ok(disk(&u, "info", &["vpd", "0"]));
    let pages = sp["vpd"]["pages"].as_array().unwrap().clone();
    assert!(pages.contains(&Value::from(0x83)));
    let di = ok(disk(&u, "info", &["vpd", "di"]));
    assert_eq!(di["vpd"]["page"], "device-identification");
    assert!(!di["vpd"]["designators"].as_array().unwrap().is_empty());

    // Issue 22: INQUIRY of a LUN without a logical unit succeeds on the
    // wire (peripheral qualifier 3, SPC-4 §6.6.2) but is no device: exit
    // status 5, as every other command to that LUN gets.
    let o = disk(&t.url(9), "info", &["inquiry"]);
    assert_eq!(code(&o), 5, "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&o);
    assert_eq!(j["inquiry"]["peripheral_qualifier"], 3);
    assert_eq!(j["kind"], "no-logical-unit");
    let text = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(["disk", &t.url(9), "inquiry"])
        .output()
        .expect("run busrig disk");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(5));
    assert!(
        stdout.starts_with("peripheral qualifier: 3 (no logical unit can be at this LUN)"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&text.stderr).contains("no logical unit at LUN 9"));
}

#[test]
fn write_read_sync_round_trip_through_files() {
    let t = TargetProcess::start(&[]);
    let u = t.url(2);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let data: Vec<u8> = (0..(300 * 1024)).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let w = ok(disk(
        &u,
        "io",
        &["write", "64", "--in", input.to_str().unwrap(), "--fua"],
    ));
    assert_eq!(w["blocks"], 600);
    ok(disk(&u, "io", &["sync"]));
    let output = dir.path().join("out.bin");
    let r = ok(disk(
        &u,
        "io",
        &["read", "64", "600", "--out", output.to_str().unwrap()],
    ));
    assert_eq!(r["bytes"], data.len());
    assert_eq!(r["crc32c"], w["crc32c"]);
    assert_eq!(std::fs::read(&output).unwrap(), data);
    ok(disk(
        &u,
        "io",
        &["write", "0", "--pattern", "0x5a", "--count", "2"],
    ));
    let r = ok(disk(&u, "io", &["read", "0", "2"]));
    assert_eq!(r["data"].as_str().unwrap(), "5a".repeat(1024));
}

#[test]
fn usage_and_file_errors_have_their_exit_statuses() {
    let t = TargetProcess::start(&[]);
    assert_eq!(code(&disk("http://nowhere/x/0", "u", &["inquiry"])), 1);
    let missing = Path::new("/nonexistent/busrig-in.bin");
    assert_eq!(
        code(&disk(
            &t.url(1),
            "u",
            &["write", "0", "--in", missing.to_str().unwrap()]
        )),
        15
    );
    // LBA beyond the end: ILLEGAL REQUEST, LBA OUT OF RANGE (sg3_utils 22).
    let o = disk(&t.url(0), "u", &["read", "999999999", "1"]);
    assert_eq!(code(&o), 22, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["sense"]["key"], "ILLEGAL REQUEST");
    assert!(String::from_utf8_lossy(&o.stderr).contains("LOGICAL BLOCK ADDRESS OUT OF RANGE"));
}

#[test]
fn caw_writes_on_match_and_exits_14_on_miscompare() {
    let t = TargetProcess::start(&[]);
    let u = t.url(1);
    ok(disk(&u, "caw", &["write", "9", "--pattern", "0x11"]));
    ok(disk(
        &u,
        "caw",
        &["caw", "9", "--compare-pattern", "0x11", "--pattern", "0x22"],
    ));
    let o = disk(
        &u,
        "caw",
        &["caw", "9", "--compare-pattern", "0x11", "--pattern", "0x33"],
    );
    assert_eq!(code(&o), 14);
    assert_eq!(json(&o)["sense"]["key"], "MISCOMPARE");
    assert_eq!(
        ok(disk(&u, "caw", &["read", "9", "1"]))["data"]
            .as_str()
            .unwrap(),
        "22".repeat(512)
    );
}

#[test]
fn resets_complete() {
    let t = TargetProcess::start(&[]);
    let u = t.url(0);
    assert_eq!(
        ok(disk(&u, "r", &["reset", "lun"]))["reset"],
        "LOGICAL UNIT RESET"
    );
    assert_eq!(
        ok(disk(&u, "r", &["reset", "target"]))["reset"],
        "TARGET WARM RESET"
    );
    assert_eq!(
        ok(disk(&u, "r", &["reset", "cold"]))["reset"],
        "TARGET COLD RESET"
    );
    // The target is still there after the cold reset dropped every connection.
    ok(disk(&u, "r", &["capacity"]));
}

#[test]
fn held_reservation_conflicts_and_defends_against_a_challenger() {
    let t = TargetProcess::start(&[]);
    let u = t.url(0);
    // Without --hold the reservation ends at the command's logout, and the
    // output says so: another initiator can write right after.
    let r = ok(disk(&u, "brief", &["reserve"]));
    assert_eq!(
        (&r["event"], &r["until"]),
        (&"reserved".into(), &"logout".into())
    );
    ok(disk(&u, "other", &["write", "0", "--pattern", "1"]));
    let mut defender = Holder::start(&u, "defender", &["reserve", "--hold", "--renew", "1"]);
    defender.wait_for("event", &["reserved"]);
    // Others meet RESERVATION CONFLICT for media access: exit status 24.
    let w = disk(&u, "other", &["write", "0", "--pattern", "1"]);
    assert_eq!(code(&w), 24);
    assert_eq!(json(&w)["status"], "RESERVATION CONFLICT");
    assert_eq!(code(&disk(&u, "other", &["read", "0", "1"])), 24);
    // A challenger resets, waits longer than the renewal period: the live
    // defender has re-reserved, so the challenger loses (24).
    let c = disk(
        &u,
        "challenger",
        &["arbitrate", "--reset", "target", "--wait", "2.5"],
    );
    assert_eq!(code(&c), 24, "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(json(&c)["result"], "lost");
    // The defender saw the reset's unit attention and renewed through it.
    let renewed = defender.wait_for("event", &["renewed"]);
    assert!(renewed["unit_attentions"].is_array());
    // A challenger that does not wait wins and holds; the defender's next
    // renewal conflicts and it exits at once with 24.
    let challenger = Holder::start(
        &u,
        "challenger",
        &[
            "arbitrate",
            "--reset",
            "lun",
            "--wait",
            "0",
            "--hold",
            "--renew",
            "1",
        ],
    );
    assert_eq!(
        challenger.wait_for("result", &["won", "lost"])["result"],
        "won"
    );
    assert_eq!(
        defender.wait_for("event", &["lost", "renewal failed"])["event"],
        "lost"
    );
    assert_eq!(defender.exit_code(Duration::from_secs(10)), 24);
    drop(challenger);
    // With the holder gone (its I_T nexus lost) the LUN is free again.
    let won = disk(&u, "late", &["arbitrate", "--reset", "none", "--wait", "0"]);
    assert_eq!(json(&won)["result"], "won");
}

#[test]
fn every_pr_verb_and_the_fence_scsi_sequence() {
    let t = TargetProcess::start(&[]);
    let u = t.url(2);
    let caps = ok(disk(&u, "n1", &["pr", "capabilities"]));
    assert_eq!(caps["capabilities"]["types"].as_array().unwrap().len(), 6);
    ok(disk(
        &u,
        "n1",
        &["pr", "register-ignore", "--param-sark", "0x1"],
    ));
    ok(disk(
        &u,
        "n2",
        &["pr", "register-ignore", "--param-sark", "0x2"],
    ));
    ok(disk(
        &u,
        "n1",
        &["pr", "reserve", "--param-rk", "0x1", "--prout-type", "5"],
    ));
    let keys = ok(disk(&u, "n2", &["pr", "read-keys"]));
    assert_eq!(keys["keys"], serde_json::json!(["0x1", "0x2"]));
    let res = ok(disk(&u, "n2", &["pr", "read-reservation"]));
    assert_eq!(res["reservation"]["key"], "0x1");
    assert_eq!(res["reservation"]["type_name"], "WERO");
    // fence_scsi: n2 preempts and aborts n1.
    ok(disk(
        &u,
        "n2",
        &[
            "pr",
            "preempt-abort",
            "--param-rk",
            "0x2",
            "--param-sark",
            "0x1",
            "--prout-type",
            "5",
        ],
    ));
    assert_eq!(
        code(&disk(&u, "n1", &["write", "0", "--pattern", "7"])),
        24,
        "a fenced node cannot write"
    );
    ok(disk(&u, "n1", &["read", "0", "1"]));
    let full = ok(disk(&u, "n1", &["pr", "read-full-status"]));
    let regs = full["registrations"].as_array().unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["reservation_holder"], true);
    assert!(regs[0]["transport_id"]
        .as_str()
        .unwrap()
        .starts_with("iqn.2026-11.io.busrig.cli:n2,i,0x"));
    // n1 comes back: REGISTER, PREEMPT, REGISTER AND MOVE, RELEASE, CLEAR.
    ok(disk(&u, "n1", &["pr", "register", "--param-sark", "0x11"]));
    assert_eq!(
        code(&disk(
            &u,
            "n1",
            &[
                "pr",
                "register",
                "--param-rk",
                "0x99",
                "--param-sark",
                "0x12"
            ]
        )),
        24
    );
    ok(disk(
        &u,
        "n1",
        &[
            "pr",
            "preempt",
            "--param-rk",
            "0x11",
            "--param-sark",
            "0x2",
            "--prout-type",
            "5",
        ],
    ));
    ok(disk(
        &u,
        "n2",
        &[
            "pr",
            "register-ignore",
            "--param-sark",
            "0x2",
            "--param-aptpl",
        ],
    ));
    let n2_tid = format!("iqn.2026-11.io.busrig.cli:n2,i,0x{}", "806275730001");
    ok(disk(
        &u,
        "n1",
        &[
            "pr",
            "register-move",
            "--param-rk",
            "0x11",
            "--param-sark",
            "0x21",
            "--prout-type",
            "5",
            "--transport-id",
            &n2_tid,
        ],
    ));
    assert_eq!(
        ok(disk(&u, "n1", &["pr", "read-reservation"]))["reservation"]["key"],
        "0x21"
    );
    ok(disk(
        &u,
        "n2",
        &["pr", "release", "--param-rk", "0x21", "--prout-type", "5"],
    ));
    assert!(ok(disk(&u, "n2", &["pr", "read-reservation"]))["reservation"].is_null());
    ok(disk(
        &u,
        "n2",
        &["pr", "reserve", "--param-rk", "0x21", "--prout-type", "3"],
    ));
    ok(disk(&u, "n2", &["pr", "clear", "--param-rk", "0x21"]));
    assert_eq!(
        ok(disk(&u, "n2", &["pr", "read-keys"]))["keys"],
        serde_json::json!([])
    );
    // A missing type is a usage error.
    assert_eq!(
        code(&disk(&u, "n2", &["pr", "reserve", "--param-rk", "0x21"])),
        1
    );
}
