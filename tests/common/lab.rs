//! A `busrig lab` in a temporary folder for the cluster tests: brought up
//! and down (on drop) through the `busrig-lab` crate's handle with the
//! binary under test, asked through the CLI, the admin endpoint and the
//! bus's control plane. Test files add their own helpers in `impl Lab`
//! blocks of their own.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use busrig_cluster::admin::ClusterStatus;
use busrig_cluster::config::ClusterConfig;
use serde_json::Value;

/// How often [`Lab::wait`] looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Runs the busrig binary under test, with its log as the environment
/// sets it (lab verbs' progress lines are part of what tests read).
pub fn busrig(args: &[&str]) -> Output {
    super::busrig_command(args).output().expect("run busrig")
}

/// A lab in a temporary folder; brought down on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The crate's handle on the lab.
    pub handle: busrig_lab::Lab,
    pub cfg: ClusterConfig,
    pub rt: tokio::runtime::Runtime,
    /// The bus's iSCSI portal.
    pub portal: String,
    /// The bus's control plane.
    pub control: String,
}

impl Lab {
    /// A lab with `nodes` nodes, a quorum model and a timing profile
    /// (what `busrig lab up` starts).
    pub fn up(nodes: usize, quorum: &str, profile: &str) -> Lab {
        Lab::up_on(nodes, quorum, profile, busrig_lab::hosts::HostsMode::Single)
    }

    /// [`Lab::up`] with the processes placed by `hosts` (`--hosts`).
    pub fn up_on(
        nodes: usize,
        quorum: &str,
        profile: &str,
        hosts: busrig_lab::hosts::HostsMode,
    ) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let handle = busrig_lab::Lab::new(env!("CARGO_BIN_EXE_busrig"), dir.path());
        if let Err(e) = handle.up(&busrig_lab::UpOptions {
            nodes,
            quorum: quorum.into(),
            profile: profile.into(),
            data_luns: 3,
            timeout: None,
            hosts,
        }) {
            panic!("lab up failed: {}{}", e.chain(), handle.log_tails(40));
        }
        let cfg = handle.config().expect("lab cluster file");
        let state = handle.state().expect("lab.json");
        let rt = busrig_lab::runtime().expect("runtime");
        Lab {
            portal: state.target.addr.clone(),
            control: state.target.control.clone().expect("bus control"),
            dir,
            handle,
            cfg,
            rt,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The lab folder as a command-line argument.
    pub fn d(&self) -> &str {
        self.path().to_str().unwrap()
    }

    /// `busrig lab VERB... --dir DIR`, which must succeed; its stdout.
    pub fn lab(&self, verb: &[&str]) -> String {
        let mut args = vec!["lab"];
        args.extend_from_slice(verb);
        args.extend_from_slice(&["--dir", self.d()]);
        let out = busrig(&args);
        assert!(
            out.status.success(),
            "busrig {args:?} failed:\n{}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `busrig cluster --lab DIR ARGS...`, which must succeed; its stdout.
    pub fn cluster(&self, args: &[&str]) -> String {
        let mut a = vec!["cluster", "--lab", self.d()];
        a.extend_from_slice(args);
        let out = busrig(&a);
        assert!(
            out.status.success(),
            "busrig {a:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `busrig cluster --lab DIR ARGS...`, which must fail; its stderr.
    pub fn cluster_fails(&self, args: &[&str]) -> String {
        let mut a = vec!["cluster", "--lab", self.d()];
        a.extend_from_slice(args);
        let out = busrig(&a);
        assert!(!out.status.success(), "busrig {a:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    /// The last 40 lines of every log in the lab, for failure messages.
    pub fn logs(&self) -> String {
        self.handle.log_tails(40)
    }

    /// One node's whole log.
    pub fn log_of(&self, node: &str) -> String {
        std::fs::read_to_string(self.handle.log_file(node)).unwrap_or_default()
    }

    pub fn names(&self) -> Vec<String> {
        self.cfg.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// A node's admin endpoint.
    pub fn admin_of(&self, node: &str) -> String {
        let id = self.cfg.node_id(node).expect("node in lab");
        self.cfg.nodes[usize::from(id)].admin.to_string()
    }

    /// A node's status, or None when it does not answer.
    pub fn status(&self, node: &str) -> Option<ClusterStatus> {
        self.handle.node_status(&self.rt, &self.cfg, node).ok()
    }

    /// Waits until `cond` holds, failing with the lab's logs after `limit`;
    /// how long it took.
    pub fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Lab) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond(self) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                panic!("{what}: not within {limit:?}{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }

    /// GET on the bus's control plane, which must answer 200.
    pub fn bus_get(&self, path: &str) -> Value {
        let (code, v) = self
            .rt
            .block_on(busrig_http::request(&self.control, "GET", path, None, None))
            .expect("bus control plane");
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    /// `busrig bus status` as JSON.
    pub fn bus(&self) -> Value {
        self.bus_get("/status")
    }

    /// The writer history of a LUN (`busrig bus audit`).
    pub fn audit(&self, lun: u32) -> Vec<Value> {
        self.bus_get(&format!("/audit?lun={lun}"))["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.handle.down();
    }
}
