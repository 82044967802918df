//! A `busrig lab` in a temporary folder for the cluster tests: brought up
//! with real processes, asked through the CLI, the admin endpoint and the
//! bus's control plane, and brought down on drop. Test files add their own
//! helpers in `impl Lab` blocks of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use busrig_cluster::admin::{self, ClusterStatus};
use busrig_cluster::config::ClusterConfig;
use serde_json::Value;

/// How often [`Lab::wait`] looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Runs the busrig binary under test.
pub fn busrig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(args)
        .output()
        .expect("run busrig")
}

/// A lab in a temporary folder; brought down on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub cfg: ClusterConfig,
    pub rt: tokio::runtime::Runtime,
    /// The bus's iSCSI portal.
    pub portal: String,
    /// The bus's control plane.
    pub control: String,
}

impl Lab {
    /// `busrig lab up` with `nodes` nodes, a quorum model and a timing
    /// profile.
    pub fn up(nodes: usize, quorum: &str, profile: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_str().unwrap().to_string();
        let n = nodes.to_string();
        let out = busrig(&[
            "lab",
            "up",
            "--dir",
            &d,
            "--nodes",
            &n,
            "--quorum",
            quorum,
            "--profile",
            profile,
        ]);
        assert!(
            out.status.success(),
            "lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("cluster.toml")).unwrap();
        let cfg = ClusterConfig::from_toml(&text).expect("lab cluster file");
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("lab.json")).unwrap())
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Lab {
            portal: state["target"]["addr"].as_str().unwrap().into(),
            control: state["target"]["control"].as_str().unwrap().into(),
            dir,
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

    /// `busrig lab VERB... --dir DIR`, which must succeed.
    pub fn lab(&self, verb: &[&str]) {
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
        let mut s = String::new();
        let Ok(rd) = std::fs::read_dir(self.path().join("logs")) else {
            return s;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s += &format!("\n===== {} (last 40 lines)\n", f.display());
            s += &lines[lines.len().saturating_sub(40)..].join("\n");
        }
        s
    }

    /// One node's whole log.
    pub fn log_of(&self, node: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("logs/{node}.log"))).unwrap_or_default()
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
        self.rt
            .block_on(admin::status(&self.admin_of(node), Some(&self.cfg.secret)))
            .ok()
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
        let _ = busrig(&["lab", "down", "--dir", self.d()]);
    }
}
