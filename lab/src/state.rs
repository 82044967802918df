//! The lab on disk: `lab.json` (pids and addresses, read by every verb and
//! by `busrig bus --lab` / `busrig cluster --lab`), `cluster.toml`, the
//! logs, and what `/proc` says about the lab's processes.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, LabError, Result};

/// One process of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    pub name: String,
    pub pid: Option<u32>,
    /// Node: the admin address; target: the portal.
    pub addr: String,
    /// Target only: the control plane address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Log file, relative to the lab folder.
    pub log: String,
}

/// `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub binary: PathBuf,
    pub quorum: String,
    pub profile: String,
    pub target_iqn: String,
    pub target: LabProcess,
    pub nodes: Vec<LabProcess>,
}

/// The cluster file of the lab in `dir`, read: what `busrig cluster
/// --lab`, `busrig bus --lab` and `busrig mailload --lab` talk to.
pub fn lab_config(dir: &Path) -> Result<busrig_cluster::config::ClusterConfig> {
    busrig_cluster::cluster_file::load(&cluster_file(dir)).with_context(|| {
        let d = dir.display();
        format!("{d} is not a lab folder (run `busrig lab up --dir {d}`)")
    })
}

/// The control plane address of the lab's bus.
pub fn bus_control(dir: &Path) -> Result<String> {
    match LabState::load(dir)?.target.control {
        Some(c) => Ok(c),
        None => Err(LabError::Failed(
            "the lab records no bus control address".into(),
        )),
    }
}

/// A new folder name under the system's temporary folder for a lab that
/// `what` (`demo`, `scenario`) makes for itself: `busrig-WHAT-PID-MS`.
pub fn temp_lab_dir(what: &str) -> PathBuf {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    std::env::temp_dir().join(format!("busrig-{what}-{}-{ms}", std::process::id()))
}

/// The label the lab's bus control token is derived under from the
/// cluster secret (docs/security.md "Credentials").
pub const BUS_TOKEN_LABEL: &str = "busrig lab bus control token v1";

/// The token the lab starts its `busrig target` with
/// (`BUSRIG_CONTROL_TOKEN`), derived from the secret of the lab's cluster
/// file: whoever can read that file can drive the lab's bus, nobody else.
pub fn bus_token(cfg: &busrig_cluster::config::ClusterConfig) -> String {
    busrig_cluster::admin::derive_credential(&cfg.secret, BUS_TOKEN_LABEL)
}

/// Writes `contents` to `path` readable and writable by the owner only
/// (mode 0600), a file that existed with a wider mode included: the
/// permissions are narrowed after truncating and before the secret is
/// written.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let what = || format!("cannot write {}", path.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(what)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(what)?;
    f.write_all(contents).with_context(what)
}

/// The cluster file of the lab in `dir`.
pub fn cluster_file(dir: &Path) -> PathBuf {
    dir.join("cluster.toml")
}

/// `lab.json` of the lab in `dir`.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

impl LabState {
    /// Reads `lab.json` of the lab in `dir`.
    pub fn load(dir: &Path) -> Result<LabState> {
        let p = state_file(dir);
        let text = fs::read_to_string(&p).map_err(|source| LabError::NotALab {
            dir: dir.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LabError::Damaged { path: p, source })
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let p = state_file(dir);
        let tmp = dir.join("lab.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))
    }

    /// The node named `name` (any case).
    pub fn node_mut(&mut self, name: &str) -> Result<&mut LabProcess> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| LabError::NoSuchNode {
                name: name.to_string(),
                nodes: names,
            })
    }

    /// The node or the target named `name` (`target` is the bus).
    pub fn process_mut(&mut self, name: &str) -> Result<&mut LabProcess> {
        if name.eq_ignore_ascii_case("target") || name.eq_ignore_ascii_case("bus") {
            return Ok(&mut self.target);
        }
        self.node_mut(name)
    }

    /// The target, then every node.
    pub fn processes(&self) -> impl Iterator<Item = &LabProcess> {
        std::iter::once(&self.target).chain(&self.nodes)
    }
}

/// Whether `pid` is a live process (a zombie counts as dead: its parent may
/// be gone and nobody reaps it).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// What a lab process is doing: `running`, `stopped` (SIGSTOP), `exited`
/// or `not started`.
pub fn process_state(pid: Option<u32>) -> &'static str {
    match pid {
        Some(p) if alive(p) => match fs::read_to_string(format!("/proc/{p}/stat")) {
            Ok(s) if s.rsplit(')').next().and_then(|r| r.trim().chars().next()) == Some('T') => {
                "stopped"
            }
            _ => "running",
        },
        Some(_) => "exited",
        None => "not started",
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return String::from("(no log)"),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_private_file_is_0600_even_over_a_wider_one() {
        let dir = std::env::temp_dir().join(format!("busrig-lab-private-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cluster.toml");
        fs::write(&p, "old secret, longer than the new one").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        let text = fs::read_to_string(&p).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(text, "new");
    }
}
