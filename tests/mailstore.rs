//! `busrig mailstore` end to end: a real `busrig target`, a real store
//! process reached over SMTP, kill -9 and LUN power cycles, then recovery.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::TargetProcess;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `busrig mailstore` child; killed on drop.
pub struct StoreProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl StoreProcess {
    pub fn start(disk: &str, listen: &str) -> StoreProcess {
        StoreProcess::start_with(disk, listen, &[])
    }

    pub fn start_with(disk: &str, listen: &str, extra: &[&str]) -> StoreProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busrig"))
            .args(["mailstore", "--disk", disk, "--listen", listen])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("BUSRIG_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn busrig mailstore");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("busrig mailstore listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(a) => a.parse().expect("readiness line carries an address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("busrig mailstore was not ready within {READY_TIMEOUT:?} ({status:?})");
            }
        };
        StoreProcess { child, addr }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "busrig mailstore still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal blocking SMTP client.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Smtp> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Smtp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        let (code, _) = c.reply()?;
        if code != 220 {
            return Err(std::io::Error::other(format!("greeting {code}")));
        }
        Ok(c)
    }

    /// A reply: its code and every line's text.
    pub fn reply(&mut self) -> std::io::Result<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            let l = l.trim_end().to_string();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad reply {l:?}")))?;
            lines.push(l.get(4..).unwrap_or("").to_string());
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> std::io::Result<(u16, Vec<String>)> {
        self.w.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// A whole transaction: the final reply to DATA.
    pub fn send(&mut self, mailbox: &str, body: &str) -> std::io::Result<(u16, String)> {
        for (c, want) in [
            ("EHLO test".to_string(), 250),
            ("MAIL FROM:<t@test>".to_string(), 250),
            (format!("RCPT TO:<{mailbox}@test>"), 250),
            ("DATA".to_string(), 354),
        ] {
            let (code, text) = self.cmd(&c)?;
            if code != want {
                return Ok((code, text.join(" ")));
            }
        }
        let mut data = String::new();
        for line in body.split("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.w.write_all(data.as_bytes())?;
        let (code, text) = self.reply()?;
        Ok((code, text.join(" ")))
    }

    /// (uid, size, Message-ID) of a mailbox.
    pub fn list(&mut self, mailbox: &str) -> Vec<(u64, usize, String)> {
        let (code, lines) = self.cmd(&format!("XLIST {mailbox}")).expect("XLIST");
        assert_eq!(code, 250, "{lines:?}");
        lines[..lines.len() - 1]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                )
            })
            .collect()
    }

    pub fn fetch(&mut self, mailbox: &str, uid: u64) -> Vec<u8> {
        let (code, lines) = self
            .cmd(&format!("XFETCH {mailbox} {uid}"))
            .expect("XFETCH");
        assert_eq!(code, 250, "{lines:?}");
        let size: usize = lines[0].split_whitespace().nth(2).unwrap().parse().unwrap();
        let mut body = vec![0; size];
        self.r.read_exact(&mut body).expect("body");
        body
    }
}

fn message(id: &str, filler: usize) -> String {
    let mut b = format!("Message-ID: {id}\r\nSubject: test {id}\r\n\r\n.leading dot\r\n");
    let mut n = 0;
    while b.len() < filler {
        b.push_str(&format!("filler line {n} of {id}\r\n"));
        n += 1;
    }
    b
}

/// What the store must hand back: the body with CRLF line ends.
fn stored(body: &str) -> Vec<u8> {
    format!("{body}\r\n").into_bytes()
}

fn uid_of(text: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("uid="))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {text:?}"))
}

#[test]
fn delivery_retrieval_dedup_malformed_input_and_kill_9() {
    let target = TargetProcess::start(&[]);
    let url = target.url(1);
    let mut store = StoreProcess::start(&url, "127.0.0.1:0");
    let mut c = Smtp::connect(store.addr).unwrap();
    let mut sent: HashMap<String, (String, u64, String)> = HashMap::new();
    for i in 0..30 {
        let mailbox = if i % 3 == 0 { "alice" } else { "bob" };
        let id = format!("<kill9.{i}@test>");
        let body = message(&id, 100 + i * 300);
        let (code, text) = c.send(mailbox, &body).unwrap();
        assert_eq!(code, 250, "{text}");
        assert!(!text.contains("duplicate"), "{text}");
        sent.insert(id, (mailbox.to_string(), uid_of(&text), body));
    }

    // A retried delivery with the same Message-ID is acknowledged with the
    // first copy's uid and not stored again.
    let (id, (mailbox, uid, body)) = sent.iter().next().unwrap();
    let (code, text) = c.send(mailbox, body).unwrap();
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("duplicate"), "{text}");
    assert_eq!(uid_of(&text), *uid);
    let copies = c.list(mailbox).iter().filter(|e| &e.2 == id).count();
    assert_eq!(copies, 1);

    // Malformed SMTP gets 5xx and the session goes on.
    for (line, want) in [
        ("FROBNICATE", 500),
        ("MAIL FROM:no-brackets", 501),
        ("RCPT TO:<a@b>", 503),
        ("DATA", 503),
        ("XFETCH alice notanumber", 501),
        ("XLIST bad/name", 553),
    ] {
        let (code, text) = c.cmd(line).unwrap();
        assert_eq!(code, want, "{line}: {text:?}");
    }
    let (code, _) = c.cmd(&"X".repeat(10_000)).unwrap();
    assert_eq!(code, 500);
    let (code, _) = c.cmd("NOOP").unwrap();
    assert_eq!(code, 250);

    let check = |addr: SocketAddr| {
        let mut c = Smtp::connect(addr).unwrap();
        for mb in ["alice", "bob"] {
            let listed = c.list(mb);
            let want: Vec<_> = sent.iter().filter(|(_, v)| v.0 == mb).collect();
            assert_eq!(listed.len(), want.len(), "{mb}: {listed:?}");
            for (id, (_, uid, body)) in want {
                let e = listed.iter().find(|e| &e.2 == id).expect("listed");
                assert_eq!(e.0, *uid, "uids are stable");
                assert_eq!(c.fetch(mb, *uid), stored(body));
            }
        }
    };
    check(store.addr);

    store.kill9();
    let store = StoreProcess::start(&url, "127.0.0.1:0");
    check(store.addr);
}

const VOLATILE_BUS: &str = r#"
[[bus]]
name = "bus0"

[[target]]
name = "iqn.2026-11.io.busrig:bus0"
bus = "bus0"

[[target.lun]]
id = 0
path = "mail.img"
size = "16MiB"
block_size = 512
write_cache = "volatile"
"#;

fn power_cycle(target: &TargetProcess, lun: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args([
            "bus",
            "--control",
            &target.control.to_string(),
            "power-cycle",
        ])
        .arg(lun.to_string())
        .env("BUSRIG_CONTROL_TOKEN", common::CONTROL_TOKEN)
        .output()
        .expect("busrig bus power-cycle");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An acknowledged delivery: (Message-ID, mailbox, uid, body).
type Acked = (String, String, u64, String);

/// Unflushed blocks in the volatile cache of `lun`, from `busrig bus status --json`.
fn dirty_blocks(target: &TargetProcess, lun: u64) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args([
            "bus",
            "--control",
            &target.control.to_string(),
            "status",
            "--json",
        ])
        .output()
        .expect("busrig bus status");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["luns"]
        .as_array()
        .expect("luns")
        .iter()
        .find(|l| l["lun"].as_u64() == Some(lun))
        .and_then(|l| l["write_cache"]["dirty_blocks"].as_u64())
        .expect("write_cache.dirty_blocks")
}

/// Delivers from `threads` connections until `stop`; returns every ack
/// as (Message-ID, mailbox, uid, body).
fn load(
    addr: SocketAddr,
    round: usize,
    threads: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = Smtp::connect(addr) else {
                    return;
                };
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("<pc.{round}.{t}.{i}@test>");
                    let mailbox = format!("box{}", i % 3);
                    let body = message(&id, 2000 + (i * 997) % 12000);
                    match c.send(&mailbox, &body) {
                        Ok((250, text)) => {
                            acked
                                .lock()
                                .unwrap()
                                .push((id, mailbox, uid_of(&text), body))
                        }
                        // 451 / 421 / a closed connection: the store stopped.
                        _ => return,
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

#[test]
fn power_cycle_of_a_volatile_cache_lun_mid_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bus.toml");
    std::fs::write(&cfg, VOLATILE_BUS).unwrap();
    let target = TargetProcess::start(&["--config", cfg.to_str().unwrap()]);
    let url = target.url(0);
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Each round: load, power-cycle the LUN mid-load (the store must stop
    // and exit non-zero), restart the store: everything acknowledged in
    // every round so far is there exactly once. In the last round the
    // checkpoint pauses before its flush and the power cycle is sent while
    // the LUN's volatile cache holds its page writes: they are lost, and
    // recovery must not depend on them.
    for round in 0..3 {
        let in_checkpoint = round == 2;
        let mut store = if in_checkpoint {
            StoreProcess::start_with(&url, "127.0.0.1:0", &["--test-checkpoint-delay-ms", "3000"])
        } else {
            StoreProcess::start(&url, "127.0.0.1:0")
        };
        verify(store.addr, &acked.lock().unwrap());
        let before = acked.lock().unwrap().len();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = load(store.addr, round, 3, stop.clone(), acked.clone());
        // Mid-load: wait for progress (the ack count, or unflushed blocks
        // in the cache, is the readiness signal).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no progress under load");
            if in_checkpoint {
                if dirty_blocks(&target, 0) > 0 {
                    break;
                }
            } else if acked.lock().unwrap().len() >= before + 150 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let answer = power_cycle(&target, 0);
        eprintln!("round {round}: power-cycle answered {answer}");
        if in_checkpoint {
            let v: serde_json::Value = serde_json::from_str(answer.trim()).expect("JSON answer");
            assert!(
                v["discarded_writes"].as_u64().expect("discarded_writes") > 0,
                "the power cycle should have caught the checkpoint's writes: {answer}"
            );
        }
        let status = store.wait_exit(Duration::from_secs(60));
        assert!(
            !status.success(),
            "the store must exit non-zero after losing its cache: {status:?}"
        );
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
    }
    let store = StoreProcess::start(&url, "127.0.0.1:0");
    let all = acked.lock().unwrap();
    assert!(all.len() >= 2 * 150);
    verify(store.addr, &all);
}

fn verify(addr: SocketAddr, acked: &[Acked]) {
    let mut c = Smtp::connect(addr).unwrap();
    let mut listed: HashMap<String, Vec<(u64, usize, String)>> = HashMap::new();
    for mb in ["box0", "box1", "box2"] {
        listed.insert(mb.into(), c.list(mb));
    }
    for (n, (id, mb, uid, body)) in acked.iter().enumerate() {
        let hits: Vec<_> = listed[mb].iter().filter(|e| &e.2 == id).collect();
        assert_eq!(
            hits.len(),
            1,
            "acknowledged {id} listed {} times",
            hits.len()
        );
        assert_eq!(hits[0].0, *uid, "{id}: uid changed");
        // Bodies of a sample (all would be slow on a debug build).
        if n % 17 == 0 {
            assert_eq!(c.fetch(mb, *uid), stored(body), "{id}");
        }
    }
}
