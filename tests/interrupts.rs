//! Ctrl-C (issue 22): the real binary in a process group of its own gets a
//! real SIGINT sent to the whole group, as a terminal sends it, once it has
//! said it is under way; then what it leaves behind is checked.
//!
//! - `busrig bench`: the first Ctrl-C reports the figures so far (and
//!   writes the SVG), exit 130; the commands in flight get a bounded drain;
//!   a second Ctrl-C quits at once without a report.
//! - `busrig lab up`: interrupted while the cluster forms, it kills the bus
//!   and the nodes it started.
//! - `busrig demo`: interrupted under load, it stops within a bound and
//!   leaves no process of its lab running.
//!
//! Bounds are generous for a loaded 2-core machine; the README records
//! what a quiet machine measures.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TargetProcess;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a verb may take to exit after Ctrl-C in these tests.
const EXIT_BOUND: Duration = Duration::from_secs(15);
/// How long a verb may take to say it is under way.
const READY_BOUND: Duration = Duration::from_secs(120);

/// A `busrig` child that leads its own process group; killed (the whole
/// group) on drop, even when a test fails.
struct Verb {
    child: Child,
    /// Lines of its stderr (or stdout) as they come, read by a thread.
    lines: mpsc::Receiver<String>,
    /// Everything read from that stream so far.
    seen: Vec<String>,
    /// The other stream, read to the end by a thread.
    rest: Option<std::thread::JoinHandle<String>>,
}

enum Watch {
    Stdout,
    Stderr,
}

impl Verb {
    fn start(args: &[&str], watch: Watch) -> Verb {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busrig"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn busrig");
        let (out, err): (ChildStdout, ChildStderr) =
            (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (watched, other): (Box<dyn Read + Send>, Box<dyn Read + Send>) = match watch {
            Watch::Stdout => (Box::new(out), Box::new(err)),
            Watch::Stderr => (Box::new(err), Box::new(out)),
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(watched).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(other).read_to_string(&mut s);
            s
        });
        Verb {
            child,
            lines,
            seen: Vec::new(),
            rest: Some(rest),
        }
    }

    /// Waits for a line of the watched stream containing `needle`.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGINT to the whole process group, as a terminal's Ctrl-C.
    fn ctrl_c(&self) {
        killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT");
    }

    /// Waits for the exit, up to `limit`; returns the status, how long it
    /// took, the rest of the watched stream and the other stream.
    fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Duration, String, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                t0.elapsed() < limit,
                "still running {limit:?} after Ctrl-C; so far:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = t0.elapsed();
        // The pipes close with the process: both readers finish.
        let watched: Vec<String> = self.seen.drain(..).chain(self.lines.iter()).collect();
        let other = self
            .rest
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (status, took, watched.join("\n"), other)
    }
}

impl Drop for Verb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.trim().chars().next()),
            Some('Z') | Some('X') | None
        ),
        Err(_) => false,
    }
}

/// The pids of the lab's bus and nodes as `lab.json` records them.
fn lab_pids(dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(dir.join("lab.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    std::iter::once(&v["target"])
        .chain(v["nodes"].as_array().into_iter().flatten())
        .filter_map(|p| p["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// Live processes whose command line names `dir` (lab processes, the
/// demo's mail load): none may outlive an interrupted verb.
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && alive(pid) {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// Polls until `lab.json` in `dir` records `n` live pids (written by `lab
/// up` right after it starts them): the verb is under way.
fn wait_lab_pids(dir: &Path, n: usize, verb: &mut Verb) -> Vec<u32> {
    let end = Instant::now() + READY_BOUND;
    loop {
        let pids = lab_pids(dir);
        if pids.len() >= n && pids.iter().all(|&p| alive(p)) {
            return pids;
        }
        if let Ok(Some(s)) = verb.child.try_wait() {
            panic!("exited with {s} before its processes started");
        }
        assert!(Instant::now() < end, "lab.json never listed {n} pids");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `busrig target` and a two-minute `busrig bench --json --svg` against
/// it, `--qd 4`, once the bench says its I/O is under way.
struct BenchRun {
    target: TargetProcess,
    svg: std::path::PathBuf,
    bench: Verb,
    _tmp: tempfile::TempDir,
}

impl BenchRun {
    fn start(extra: &[&str]) -> BenchRun {
        let target = TargetProcess::start(&[]);
        let tmp = tempfile::tempdir().unwrap();
        let svg = tmp.path().join("lat.svg");
        let url = target.url(1);
        let mut args = vec!["bench", &url, "--json", "--svg", svg.to_str().unwrap()];
        args.extend_from_slice(&["--duration", "120", "--qd", "4"]);
        args.extend_from_slice(extra);
        let mut bench = Verb::start(&args, Watch::Stderr);
        bench.wait_line("I/O under way", READY_BOUND);
        BenchRun {
            target,
            svg,
            bench,
            _tmp: tmp,
        }
    }

    /// SIGSTOP or SIGCONT to the target: with SIGSTOP it stops answering
    /// and the commands in flight never end.
    fn target_signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.target.pid() as i32), sig).unwrap();
    }

    /// Stops the target and waits until the bench has sent it a command
    /// it will not read (bytes queued on the target's side of the iSCSI
    /// connection, `/proc/net/tcp`): at least one command now hangs.
    fn hang_target(&self) {
        self.target_signal(Signal::SIGSTOP);
        let end = Instant::now() + READY_BOUND;
        while unread_bytes(self.target.addr.port()) == 0 {
            assert!(
                Instant::now() < end,
                "the bench sent the stopped target nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit after Ctrl-C (the target answering again);
    /// returns the status, stderr and stdout.
    fn exit(&mut self) -> (ExitStatus, String, String) {
        let r = self.bench.exit_within(EXIT_BOUND);
        self.target_signal(Signal::SIGCONT);
        (r.0, r.2, r.3)
    }
}

/// Bytes received and not yet read on established loopback TCP
/// connections whose local port is `port` (the rx_queue of
/// `/proc/net/tcp`).
fn unread_bytes(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            (local_port == port && *f.get(3)? == "01").then_some(rx)
        })
        .sum()
}

/// The bench's `--json` report on `stdout`, which must be interrupted.
fn interrupted_report(stdout: &str, stderr: &str) -> Value {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    assert_eq!(v["interrupted"], true, "{v}");
    assert_eq!(v["error"], Value::Null, "{v}");
    assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{v}");
    v
}

#[test]
fn bench_reports_the_figures_so_far_on_ctrl_c() {
    let mut run = BenchRun::start(&["--rw", "randrw"]);
    run.bench.ctrl_c();
    let (status, stderr, stdout) = run.exit();
    assert_eq!(status.code(), Some(130), "{stderr}\n{stdout}");
    assert!(stderr.contains("interrupted; waiting up to"), "{stderr}");
    let v = interrupted_report(&stdout, &stderr);
    let ios = v["total"]["ios"].as_u64().unwrap();
    let secs = v["duration_secs"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 120.0, "{v}");
    let job = &v["jobs"][0];
    assert_eq!(
        job["read"]["ios"].as_u64().unwrap() + job["write"]["ios"].as_u64().unwrap(),
        ios
    );
    let plot = std::fs::read_to_string(&run.svg).expect("the SVG is written");
    // The plot is of this run: its I/O count is in it.
    assert!(
        plot.contains("<svg") && plot.contains(&ios.to_string()),
        "{plot}"
    );
}

#[test]
fn bench_drains_a_hung_target_for_a_bounded_time() {
    let mut run = BenchRun::start(&[]);
    run.hang_target();
    run.bench.ctrl_c();
    let (status, stderr, stdout) = run.exit();
    assert_eq!(status.code(), Some(130), "{stderr}\n{stdout}");
    let v = interrupted_report(&stdout, &stderr);
    // Answers already on their way when the target stopped still arrive;
    // at least one of the four commands in flight never ends, and the
    // run ended anyway, giving it up.
    let abandoned = v["abandoned_ios"].as_u64().unwrap();
    assert!((1..=4).contains(&abandoned), "{v}");
    assert!(run.svg.exists());
}

#[test]
fn bench_quits_at_once_on_a_second_ctrl_c() {
    let mut run = BenchRun::start(&[]);
    // A hung target keeps the first Ctrl-C draining, so the second one
    // comes while the bench still waits.
    run.hang_target();
    run.bench.ctrl_c();
    run.bench
        .wait_line("interrupted; waiting up to", EXIT_BOUND);
    run.bench.ctrl_c();
    let (status, stderr, stdout) = run.exit();
    assert_eq!(status.code(), Some(130), "{stderr}\n{stdout}");
    assert!(stderr.contains("quitting without a report"), "{stderr}");
    assert_eq!(stdout.trim(), "", "no report after the second Ctrl-C");
    assert!(!run.svg.exists(), "no plot after the second Ctrl-C");
}

#[test]
fn interrupted_lab_up_takes_down_what_it_started() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let d = dir.to_str().unwrap();
    // mscs2003 timing: the cluster takes many seconds to form, so the
    // interrupt lands while `up` still waits for it.
    let mut up = Verb::start(
        &[
            "lab",
            "up",
            "--dir",
            d,
            "--nodes",
            "2",
            "--profile",
            "mscs2003",
        ],
        Watch::Stderr,
    );
    let pids = wait_lab_pids(&dir, 3, &mut up);
    up.ctrl_c();
    let (status, _, stderr, stdout) = up.exit_within(EXIT_BOUND);
    assert_eq!(status.code(), Some(130), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("interrupted while starting the lab")
            && stderr.contains("target, NODE1, NODE2"),
        "{stderr}"
    );
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(lab_pids(&dir).is_empty(), "lab.json still lists pids");
    let others = processes_naming(&dir);
    assert!(others.is_empty(), "still running: {others:?}");
    // The logs stay for the user.
    assert!(dir.join("logs/target.log").exists());
}

#[test]
fn interrupted_demo_stops_promptly_and_leaves_nothing_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let d = dir.to_str().unwrap();
    let mut demo = Verb::start(&["demo", "--dir", d, "--nodes", "2"], Watch::Stdout);
    // The load is running: the lab, its virtual server and the clients.
    demo.wait_line("mail load:", READY_BOUND);
    let pids = lab_pids(&dir);
    assert_eq!(pids.len(), 3, "the bus and two nodes");
    demo.ctrl_c();
    let (status, took, stdout, stderr) = demo.exit_within(EXIT_BOUND);
    assert_eq!(status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupted: stopping the mail load, taking down the lab"),
        "{stderr}"
    );
    assert!(stderr.contains("the lab is down"), "{stderr}");
    eprintln!("busrig demo exited {took:?} after Ctrl-C");
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    let others = processes_naming(&dir);
    assert!(others.is_empty(), "still running: {others:?}");
    // --dir is the user's: kept, with its logs.
    assert!(dir.join("logs").is_dir());
}
