//! `busrig bus` against a spawned `busrig target`: the status JSON contract
//! that scripts rely on, fault verbs from the command line, APTPL state
//! that survives kill -9 of the target, and live reconfiguration with a
//! saved configuration the target starts from again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{TargetProcess, CONTROL_TOKEN};
use serde_json::Value;

fn busrig(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(args)
        .env("BUSRIG_CONTROL_TOKEN", CONTROL_TOKEN)
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
    // NODE has not logged in yet: the fault is set, with a warning.
    let (ok, _, err) = busrig(&["bus", "--control", c, "fail", NODE, "1", "3/11/00"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("matches no logged-in or configured initiator"),
        "{err}"
    );
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
    // NODE has logged out and its fault is used up: a new fault warns
    // again; one on an initiator that has a fault already does not.
    let (ok, _, err) = busrig(&["bus", "--control", c, "delay", NODE, "1"]);
    assert!(ok && err.contains("matches no logged-in"), "{err}");
    let (ok, _, err) = busrig(&["bus", "--control", c, "delay", NODE, "2"]);
    assert!(ok && !err.contains("warning"), "{err}");
    let (ok, _, err) = busrig(&["bus", "--control", c, "clear", NODE]);
    assert!(ok, "{err}");

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

/// docs/security.md: without the token `busrig bus` can read the status on
/// loopback but cannot change anything.
#[test]
fn fault_verbs_need_the_control_token() {
    let t = TargetProcess::start(&[]);
    let control = t.control.to_string();
    let c = control.as_str();
    let run = |args: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busrig"));
        cmd.args(args).env_remove("BUSRIG_CONTROL_TOKEN");
        if let Some(t) = token {
            cmd.env("BUSRIG_CONTROL_TOKEN", t);
        }
        let out = cmd.output().expect("run busrig");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for token in [None, Some("not-the-token")] {
        for verb in [
            &["offline", "2"][..],
            &["reset"][..],
            &["cut", NODE][..],
            &["fail", NODE, "1", "3/11/00"][..],
            &["lun", "add", "3", "--size", "1MiB"][..],
            &["lun", "remove", "2", "--force"][..],
            &["acl", "add", NODE][..],
            &["chap", "clear"][..],
            &["save", "/nonexistent/never-written.toml"][..],
        ] {
            let args: Vec<&str> = ["bus", "--control", c]
                .iter()
                .chain(verb)
                .copied()
                .collect();
            let (ok, err) = run(&args, token);
            assert!(!ok, "{verb:?} with {token:?} went through");
            assert!(err.contains("refused (401)"), "{verb:?}: {err}");
        }
    }
    let st = status(&t);
    assert_eq!(st["luns"].as_array().map(Vec::len), Some(3), "{st}");
    assert_eq!(st["faults"]["offline_luns"], serde_json::json!([]), "{st}");
    assert_eq!(st["faults"]["paths"], serde_json::json!({}), "{st}");
    let (ok, err) = run(
        &["bus", "--control", c, "offline", "2"],
        Some(CONTROL_TOKEN),
    );
    assert!(ok, "{err}");
    assert_eq!(lun(&status(&t), 2)["offline"], true);
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Connections waiting in the accept queue of the listening socket on
/// loopback `port` (the `rx_queue` of its LISTEN line in /proc/net/tcp).
fn accept_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        if u16::from_str_radix(local_port, 16).ok()? != port || *f.get(3)? != "0A" {
            return None;
        }
        u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
    })
}

/// Issue 14, defect 4: clients of the control plane cannot take the file
/// descriptors or the memory the iSCSI portal needs. The target may open
/// 512 descriptors; 600 idle connections are held open on its control
/// plane, and 200 more each announce a megabyte body without the token and
/// send half of it. An iSCSI login and read still succeed at once, the
/// target's memory barely moves, and a control client over the cap is told
/// so at once.
#[test]
fn control_plane_clients_cannot_starve_the_portal() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let t = TargetProcess::start_with_fd_limit(&[], 512);
    let before = rss_kib(t.pid());
    let flood = Instant::now();
    let mut held = Vec::new();
    for _ in 0..600 {
        held.push(TcpStream::connect(t.control).expect("connect to the control plane"));
    }
    // Wait until the target has taken every one of them off its accept
    // queue, or has stopped being able to.
    let deadline = Instant::now() + Duration::from_secs(2);
    while accept_queue(t.control.port()).unwrap_or(0) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    // A login and a read on the portal, before the idle connections' 10 s
    // head timeout would give their descriptors back.
    let url = t.url(1);
    let (ok, out, err) = busrig(&["disk", &url, "read", "0", "1", "--json"]);
    assert!(
        ok,
        "iSCSI login while the control plane is flooded: {out}{err}"
    );
    let took = flood.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the login came {took:?} after the flood"
    );

    // Bodies announced without the token are not read: each client gets
    // what its socket buffers take, and the target's memory barely moves.
    let half = vec![b'x'; 512 * 1024];
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(t.control) else {
            continue;
        };
        let _ = s.write_all(
            b"POST /lun HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
        );
        s.set_nonblocking(true).unwrap();
        let _ = s.write(&half);
        held.push(s);
    }
    let grown = rss_kib(t.pid()).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the target grew by {grown} KiB while the control plane was flooded"
    );

    // A control client over the cap gets an answer, not a hang.
    let started = Instant::now();
    let mut s = TcpStream::connect(t.control).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{read:?}: {answer}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Once the flood ends, the control plane serves again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, _, err) = busrig(&[
            "bus",
            "--control",
            &t.control.to_string(),
            "status",
            "--json",
        ]);
        if ok {
            break;
        }
        assert!(err.contains("503"), "{err}");
        assert!(
            Instant::now() < deadline,
            "the control plane did not recover: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `busrig` run with the control token and `env`.
fn busrig_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(args)
        .env("BUSRIG_CONTROL_TOKEN", CONTROL_TOKEN)
        .envs(env.iter().copied())
        .output()
        .expect("run busrig");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// docs/semantics.md "Live reconfiguration" from the command line: every
/// verb against a running target while a session works on LUN 1 (3F/0E
/// once per inventory change, nothing on a resize of another LUN), and
/// `bus save` writes a file `busrig target --config` starts the same bus
/// from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reconfiguration_from_the_command_line_and_a_saved_config() {
    use busrig_initiator::scsi::cdb::test_unit_ready;
    use busrig_initiator::{IscsiUrl, Session, SessionConfig};

    let dir = tempfile::tempdir().unwrap();
    let mut t = TargetProcess::start_in(dir.path(), &[]);
    let control = t.control.to_string();
    let bus = |verb: &[&str]| {
        let args: Vec<&str> = ["bus", "--control", control.as_str()]
            .iter()
            .chain(verb)
            .copied()
            .collect();
        busrig_with(&args, &[("BUSRIG_CHAP_SECRET", "alice-secret-12")])
    };
    let ok = |verb: &[&str]| {
        let (ok, out, err) = bus(verb);
        assert!(ok, "bus {verb:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{verb:?}: {e}: {out}"))
    };

    let cfg = SessionConfig {
        initiator_name: NODE.into(),
        ..SessionConfig::default()
    };
    let s = Session::open(&IscsiUrl::parse(&t.url(1)).unwrap(), cfg)
        .await
        .expect("login");
    // The session layer takes the LUN field as on the wire.
    let lun1 = busrig_proto::scsi::report_luns::encode_lun(1);
    let tur = || async {
        s.command(lun1, test_unit_ready())
            .await
            .expect("TUR on LUN 1")
    };
    let mut ready = false;
    for _ in 0..8 {
        if tur().await.status == 0 {
            ready = true;
            break;
        }
    }
    assert!(ready, "TEST UNIT READY on LUN 1 never GOOD");
    let ua = |o: &busrig_initiator::ScsiOutcome| o.sense.as_ref().map(|s| (s.asc, s.ascq));

    let v = ok(&["lun", "add", "3", "--size", "4MiB"]);
    assert_eq!(v["lun"], 3, "{v}");
    assert_eq!(ua(&tur().await), Some((0x3f, 0x0e)));
    assert_eq!(tur().await.status, 0, "3F/0E once");
    assert_eq!(lun(&status(&t), 3)["size_bytes"], 4 << 20);
    ok(&["lun", "resize", "3", "8MiB"]);
    assert_eq!(lun(&status(&t), 3)["size_bytes"], 8 << 20);
    assert_eq!(tur().await.status, 0, "2A/09 is for LUN 3's nexuses only");
    let (refused, _, err) = bus(&["lun", "resize", "3", "1MiB"]);
    assert!(!refused && err.contains("force"), "{err}");
    ok(&["lun", "remove", "3"]);
    assert_eq!(ua(&tur().await), Some((0x3f, 0x0e)));
    assert_eq!(tur().await.status, 0);
    ok(&[
        "lun",
        "add",
        "4",
        "--size",
        "2MiB",
        "--block-size",
        "4096",
        "--serial",
        "LIVE4",
    ]);
    assert_eq!(ua(&tur().await), Some((0x3f, 0x0e)));
    let (bad, _, err) = bus(&["lun", "add", "5", "--size", "1MiB", "--block-size", "1000"]);
    assert!(!bad && err.contains("block_size"), "{err}");

    let two = "iqn.2026-11.io.busrig:two";
    ok(&[
        "target",
        "add",
        two,
        "--lun",
        "0:1MiB",
        "--lun",
        "1:2MiB:two-one.img",
    ]);
    let (which, _, err) = bus(&["acl", "add", NODE]);
    assert!(!which && err.contains("several targets"), "{err}");
    let bus0 = "iqn.2026-11.io.busrig:bus0";
    ok(&["acl", "add", NODE, "--target", bus0]);
    ok(&[
        "acl",
        "add",
        "iqn.2026-11.io.busrig:test:node2",
        "--target",
        two,
    ]);
    ok(&["acl", "remove", NODE, "--target", bus0]);
    ok(&["chap", "set", "--user", "alice", "--target", two]);
    assert_eq!(tur().await.status, 0, "the session on LUN 1 never noticed");
    let st = status(&t);
    let events = st["events"].to_string();
    for what in [
        "lun 3 added",
        "lun 3 removed",
        "resized",
        "target iqn.2026-11.io.busrig:two added",
        "CHAP set",
    ] {
        assert!(events.contains(what), "no {what:?} in {events}");
    }

    let saved = dir.path().join("saved.toml");
    ok(&["save", saved.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = s.logout().await;
    t.kill();

    let t = TargetProcess::start_in(dir.path(), &["--config", saved.to_str().unwrap()]);
    let again = status(&t);
    let shape = |st: &Value| -> Vec<(String, u64, u64, u64)> {
        st["luns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["target"].as_str().unwrap().to_string(),
                    l["lun"].as_u64().unwrap(),
                    l["size_bytes"].as_u64().unwrap(),
                    l["block_size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(shape(&again), shape(&st));
    assert!(shape(&again).contains(&("iqn.2026-11.io.busrig:bus0".into(), 4, 2 << 20, 4096)));
}
