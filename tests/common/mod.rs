//! Shared helpers for busrig's end-to-end tests: spawn real `busrig`
//! processes on free loopback ports, wait for their readiness line, and find
//! third-party tools (skip visibly when missing, fail under
//! `BUSRIG_EXTERNAL=require`).

#![allow(dead_code)]

pub mod lab;
pub mod tgtd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The control token every test target is started with
/// (`BUSRIG_CONTROL_TOKEN`); `busrig bus` presents it from the same variable.
pub const CONTROL_TOKEN: &str = "busrig-test-control-token";

/// How long a spawned process may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `busrig target` child process; killed on drop, even when a test panics.
pub struct TargetProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The control plane address (`busrig bus --control`).
    pub control: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TargetProcess {
    /// Starts `busrig target --listen 127.0.0.1:0` with a fresh data dir.
    pub fn start(extra: &[&str]) -> TargetProcess {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut t = TargetProcess::start_in(&dir, extra);
        t._tmp = Some(tmp);
        t
    }

    /// Starts a target whose LUN files live in `dir` (kept after the process ends).
    pub fn start_in(dir: &Path, extra: &[&str]) -> TargetProcess {
        TargetProcess::spawn_in(dir, extra, None)
    }

    /// Starts a target that may open at most `nofile` file descriptors
    /// (RLIMIT_NOFILE, soft and hard), so a test can show what exhausts them.
    pub fn start_with_fd_limit(extra: &[&str], nofile: u64) -> TargetProcess {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut t = TargetProcess::spawn_in(&dir, extra, Some(nofile));
        t._tmp = Some(tmp);
        t
    }

    fn spawn_in(dir: &Path, extra: &[&str], nofile: Option<u64>) -> TargetProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busrig"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt as _;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // child between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.arg("target")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--control")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("BUSRIG_CONTROL_TOKEN", CONTROL_TOKEN)
            // Quiet by default; BUSRIG_TEST_LOG=info (or debug) shows the target's log.
            .env(
                "RUST_LOG",
                std::env::var("BUSRIG_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn busrig target");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // The reader thread keeps draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut control = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("busrig target control on ") {
                    control = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("busrig target listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((rest.trim().to_string(), control.clone()));
                    }
                }
            }
        });
        let (addr, control) = match rx.recv_timeout(READY_TIMEOUT) {
            Ok((a, c)) => (
                a.parse().expect("readiness line carries an address"),
                c.expect("control line printed before the readiness line")
                    .parse()
                    .expect("control address"),
            ),
            Err(_) => {
                let _ = child.kill();
                panic!("busrig target did not print its readiness line within {READY_TIMEOUT:?}");
            }
        };
        TargetProcess {
            child,
            addr,
            control,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// libiscsi URL of `lun` on the default target.
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://{}/{}/{}", self.addr, DEFAULT_TARGET, lun)
    }

    /// The target's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `busrig` binary under test with `args`, not yet started.
pub fn busrig_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_busrig"));
    c.args(args);
    c
}

/// Runs the `busrig` binary with `args` (its log at warn) and waits.
pub fn busrig(args: &[&str]) -> std::process::Output {
    busrig_command(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run busrig")
}

/// The target name of the embedded default bus.
pub const DEFAULT_TARGET: &str = "iqn.2026-11.io.busrig:bus0";

/// Returns true when `tool` is on PATH. When it is missing, prints a visible
/// skip notice and returns false, or panics when `BUSRIG_EXTERNAL=require`.
pub fn external_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("BUSRIG_EXTERNAL").as_deref() == Ok("require") {
        panic!("{tool} is required (BUSRIG_EXTERNAL=require) but not installed; install Debian package {package}");
    }
    eprintln!("SKIPPED: {tool} not found (install Debian package {package}); set BUSRIG_EXTERNAL=require to make this a failure");
    false
}

/// Returns true when the tests run as root (network namespaces, bridges
/// and nftables need it). Otherwise prints a visible skip notice and
/// returns false, or panics when `BUSRIG_EXTERNAL=require`.
pub fn running_as_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BUSRIG_EXTERNAL").as_deref() == Ok("require") {
        panic!("{what} needs root (BUSRIG_EXTERNAL=require)");
    }
    eprintln!("SKIPPED: {what} needs root; set BUSRIG_EXTERNAL=require to make this a failure");
    false
}
