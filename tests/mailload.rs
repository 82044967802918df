//! `busrig mailload` against a real `busrig mailstore` on a real target:
//! a short clean run, and a run during which the store is killed with
//! SIGKILL and restarted on the same address (what a failover looks like to
//! a client): every acknowledged message is there, none twice.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TargetProcess;

struct Store(Child, SocketAddr);

impl Store {
    fn start(disk: &str, listen: &str) -> Store {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busrig"))
            .args(["mailstore", "--disk", disk, "--listen", listen])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn busrig mailstore");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("busrig mailstore listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(a.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("mailstore readiness line")
            .parse()
            .unwrap();
        Store(child, addr)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mailload(addr: SocketAddr, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(["mailload", "--to", &addr.to_string(), "--json"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn busrig mailload")
}

fn report(child: Child) -> (serde_json::Value, std::process::ExitStatus) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (v, out.status)
}

/// Messages listed in `mailbox` right now (0 when the store is unreachable).
fn listed(addr: SocketAddr, mailbox: &str) -> usize {
    let Ok(s) = TcpStream::connect(addr) else {
        return 0;
    };
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut l = String::new();
    let _ = r.read_line(&mut l);
    let _ = w.write_all(format!("XLIST {mailbox}\r\nQUIT\r\n").as_bytes());
    let mut n = 0;
    loop {
        l.clear();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return n;
        }
        if l.starts_with("250-") {
            n += 1;
        } else if l.starts_with("250 ") {
            return n;
        }
    }
}

#[test]
fn a_short_run_loses_nothing() {
    let target = TargetProcess::start(&[]);
    let store = Store::start(&target.url(1), "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("acks.jsonl");
    let child = mailload(
        store.1,
        &[
            "--rate",
            "60",
            "--duration",
            "3s",
            "--mailboxes",
            "3",
            "--records",
            records.to_str().unwrap(),
        ],
    );
    let (r, status) = report(child);
    assert!(status.success(), "{r}");
    assert_eq!(r["acknowledged_but_missing"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["sent"], 180, "{r}");
    assert_eq!(r["acknowledged"], 180, "{r}");
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    let lines = std::fs::read_to_string(&records).unwrap();
    assert_eq!(lines.lines().count(), 180);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(
        first["ack_unix_ms"].as_u64() >= first["send_unix_ms"].as_u64(),
        "{first}"
    );
}

#[test]
fn retries_across_a_store_restart_without_loss_or_duplicates() {
    let target = TargetProcess::start(&[]);
    // A fixed port, so the restarted store is where the client reconnects.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut store = Store::start(&target.url(1), &listen);
    let addr = store.1;
    let child = mailload(
        addr,
        &[
            "--rate",
            "40",
            "--duration",
            "6s",
            "--mailboxes",
            "2",
            "--drain",
            "30s",
        ],
    );
    // Mid-load: wait until messages are arriving, then kill -9 the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    while listed(addr, "user0") < 20 {
        assert!(Instant::now() < deadline, "mailload made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = store.0.kill();
    let _ = store.0.wait();
    drop(store);
    let _store = Store::start(&target.url(1), &listen);
    let (r, status) = report(child);
    assert!(status.success(), "{r}");
    assert_eq!(r["acknowledged_but_missing"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["unacknowledged"], 0, "{r}");
    assert_eq!(r["acknowledged"], r["sent"], "{r}");
    assert!(r["reconnects"].as_u64().unwrap() > 0, "{r}");
}

/// `busrig mailload ... | head -1` where the reader has gone before the
/// report: the report is lost, the run is not, and nothing panics.
#[test]
fn a_closed_stdout_ends_it_quietly() {
    let target = TargetProcess::start(&[]);
    let store = Store::start(&target.url(1), "127.0.0.1:0");
    for json in [true, false] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busrig"));
        cmd.args(["mailload", "--to", &store.1.to_string()])
            .args(["--rate", "20", "--duration", "300ms", "--mailboxes", "1"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.spawn().expect("spawn busrig mailload");
        // The reader goes away before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "json={json}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "json={json}: {stderr}");
    }
}
