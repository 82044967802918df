//! `busrig lab`: a whole cluster on loopback — one `busrig target` and N
//! `busrig node` processes in the background — and the faults to throw at
//! it.
//!
//! `lab up` writes everything under DIR: `bus.toml` (the shared bus),
//! `cluster.toml` (the cluster file every node reads), `lab.json` (pids and
//! addresses, read by every other verb and by `busrig bus --lab` /
//! `busrig cluster --lab`), `bus/` (LUN files) and `logs/` (one log per
//! process). It returns once every node is a member of one view with a
//! quorum owner, or fails with the reason and the tail of the log of the
//! process that failed.
//!
//! Ports are chosen by binding port 0 on loopback and releasing the socket
//! just before the process that uses it starts; another program grabbing
//! the same port in that instant makes `lab up` fail with the bind error in
//! the node's log, never a silent mix-up.
//!
//! Layout: with up to two nodes the bus is parallel SCSI (`scsi`, as the
//! seeds' two-node clusters); with more it is a switched fabric. LUN 0 is
//! the quorum disk (the witness under `majority` with an even node count),
//! LUNs 1..=`--data-luns` are data disks.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use busrig_cluster::admin::{self, ClusterStatus};
use busrig_cluster::config::ClusterConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The lab's target name.
pub const LAB_TARGET: &str = "iqn.2026-11.io.busrig:lab";
/// How often readiness and failover conditions are polled.
const POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Args, Clone)]
struct DirArg {
    /// The lab folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NetArg {
    Private,
    Public,
    Both,
}

impl NetArg {
    fn name(self) -> &'static str {
        match self {
            NetArg::Private => "private",
            NetArg::Public => "public",
            NetArg::Both => "both",
        }
    }
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Start a bus and N nodes; return once the cluster has formed.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// Number of nodes (NODE1 .. NODEn).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Quorum model: disk-scsi2, disk-pr or majority.
        #[arg(long, default_value = "disk-scsi2")]
        quorum: String,
        /// Timing profile: fast or mscs2003.
        #[arg(long, default_value = "fast")]
        profile: String,
        /// Data LUNs besides the quorum LUN.
        #[arg(long, default_value_t = 3)]
        data_luns: u16,
        /// Give up waiting for the cluster to form after this many seconds
        /// (default: from the profile).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Processes and cluster state.
    Status {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
    },
    /// Stop every node cleanly, then the bus.
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGKILL a node (or `target`).
    Kill {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGSTOP a node: it stops answering while holding what it held.
    Pause {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGCONT a paused node.
    Resume {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a node that is not running (after kill, or after it stopped).
    Start {
        node: String,
        #[command(flatten)]
        dir: DirArg,
        /// Return only once it is a member again.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a node's cluster traffic on a network, both directions.
    Partition {
        node: String,
        #[arg(long, value_enum)]
        net: NetArg,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Undo `partition`.
    Heal {
        node: String,
        #[arg(long, value_enum, default_value = "both")]
        net: NetArg,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Run a scenario file on a fresh lab and write a JSON report.
    Run {
        scenario: PathBuf,
        /// The lab folder (default: a new temporary folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Kill the quorum owner N times and measure how long until another
    /// node acts as owner (each killed node is restarted and rejoins).
    Failover {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, default_value_t = 5)]
        kills: usize,
        #[arg(long)]
        json: bool,
    },
}

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

/// The cluster file of the lab in `dir`.
pub fn cluster_file(dir: &Path) -> PathBuf {
    dir.join("cluster.toml")
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

impl LabState {
    pub fn load(dir: &Path) -> anyhow::Result<LabState> {
        let p = state_file(dir);
        let text = fs::read_to_string(&p).with_context(|| {
            format!(
                "{} is not a lab folder (no lab.json; run `busrig lab up --dir {}`)",
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", p.display()))
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let p = state_file(dir);
        let tmp = dir.join("lab.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))
    }

    fn node_mut(&mut self, name: &str) -> anyhow::Result<&mut LabProcess> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| anyhow!("no node {name:?} in this lab (nodes: {})", names.join(", ")))
    }

    /// The node or the target named `name` (`target` is the bus).
    fn process_mut(&mut self, name: &str) -> anyhow::Result<&mut LabProcess> {
        if name.eq_ignore_ascii_case("target") || name.eq_ignore_ascii_case("bus") {
            return Ok(&mut self.target);
        }
        self.node_mut(name)
    }
}

/// Whether `pid` is a live process (a zombie counts as dead: its parent may
/// be gone and nobody reaps it).
fn alive(pid: u32) -> bool {
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

fn process_state(pid: Option<u32>) -> &'static str {
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

fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("cannot send {sig} to pid {pid}"))
}

/// Waits until `pid` has exited, up to `limit`.
fn wait_exit(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(POLL);
    }
    !alive(pid)
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

fn free_tcp() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback TCP port")
}

fn free_udp() -> anyhow::Result<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0").context("cannot bind a loopback UDP port")
}

fn addr_of<T>(s: &T, f: impl Fn(&T) -> std::io::Result<SocketAddr>) -> anyhow::Result<String> {
    Ok(f(s)?.to_string())
}

/// Starts `binary args...` in its own session (so a Ctrl-C meant for the
/// shell does not reach the lab, and `kill` can take the node's whole
/// "server" — the node and every application it started — down at once),
/// logging to `log`.
fn spawn(binary: &Path, args: &[String], log: &Path) -> anyhow::Result<u32> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(binary)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("BUSRIG_LAB_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn_in_new_session()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(child.id())
}

trait NewSession {
    fn spawn_in_new_session(&mut self) -> std::io::Result<std::process::Child>;
}

impl NewSession for Command {
    fn spawn_in_new_session(&mut self) -> std::io::Result<std::process::Child> {
        // SAFETY: setsid is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            self.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        self.spawn()
    }
}

/// Every live process in session `sid` (the lab's node and what it started).
fn session_members(sid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command: state ppid pgrp session ...
                    let rest = s.rsplit(')').next()?.to_string();
                    rest.split_whitespace().nth(3)?.parse::<u32>().ok()
                })
                == Some(sid)
        })
        .collect()
}

fn default_timeout(cfg: &ClusterConfig) -> Duration {
    let t = &cfg.timing;
    // Forming: the last node's join wait, the challenge and the online
    // delay, with generous slack for a loaded machine.
    let form = t.heartbeat * (6 + 2 * cfg.nodes.len() as u32) + t.challenge_wait + t.online_delay;
    (form * 3).max(Duration::from_secs(20))
}

fn node_start_args(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "node".into(),
        "--config".into(),
        cluster_file(dir).display().to_string(),
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        dir.join("nodes").join(name).display().to_string(),
    ]
}

fn bus_toml(nodes: usize, data_luns: u16) -> String {
    let topology = if nodes <= 2 { "scsi" } else { "fc-fabric" };
    let mut s = format!(
        "# Written by `busrig lab up`.\n[[bus]]\nname = \"lab\"\ntopology = \"{topology}\"\n\n\
         [[target]]\nname = \"{LAB_TARGET}\"\nbus = \"lab\"\n\n\
         [[target.lun]]\nid = 0\npath = \"quorum.img\"\nsize = \"64MiB\"\nserial = \"LAB-Q0\"\n"
    );
    for i in 1..=data_luns {
        s += &format!(
            "\n[[target.lun]]\nid = {i}\npath = \"data{i}.img\"\nsize = \"1GiB\"\nserial = \"LAB-D{i}\"\n"
        );
    }
    s
}

struct NodePorts {
    private: UdpSocket,
    public: UdpSocket,
    admin: TcpListener,
}

fn cluster_toml(
    name: &str,
    quorum: &str,
    profile: &str,
    portal: &str,
    ports: &[NodePorts],
) -> anyhow::Result<String> {
    let secret: String = {
        use rand::Rng;
        let mut r = rand::thread_rng();
        (0..32)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[r.gen_range(0..36)]))
            .collect()
    };
    let lun0 = format!("iscsi://{portal}/{LAB_TARGET}/0");
    let mut s =
        format!("# Written by `busrig lab up`.\nname = \"{name}\"\nsecret = \"{secret}\"\n");
    // `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
    #[allow(clippy::manual_is_multiple_of)]
    let witness = quorum == "majority" && ports.len() % 2 == 0;
    if quorum != "majority" {
        s += &format!("quorum-disk = \"{lun0}\"\n");
    }
    s += &format!("\n[quorum]\nmodel = \"{quorum}\"\n");
    if witness {
        s += &format!("witness = \"{lun0}\"\n");
    }
    s += &format!("\n[timing]\nprofile = \"{profile}\"\n");
    for (i, p) in ports.iter().enumerate() {
        s += &format!(
            "\n[[node]]\nname = \"NODE{}\"\nprivate = \"{}\"\npublic = \"{}\"\nadmin = \"{}\"\n",
            i + 1,
            addr_of(&p.private, UdpSocket::local_addr)?,
            addr_of(&p.public, UdpSocket::local_addr)?,
            addr_of(&p.admin, TcpListener::local_addr)?
        );
    }
    Ok(s)
}

/// Starts a lab in `dir` and waits until the cluster has formed.
pub fn up(
    dir: &Path,
    nodes: usize,
    quorum: &str,
    profile: &str,
    data_luns: u16,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    if nodes == 0 || nodes > 8 {
        bail!("--nodes must be 1 to 8 (a switched fabric's limit in the seeds)");
    }
    if !["disk-scsi2", "disk-pr", "majority"].contains(&quorum) {
        bail!("--quorum must be disk-scsi2, disk-pr or majority (got {quorum:?})");
    }
    if let Ok(old) = LabState::load(dir) {
        let running: Vec<&str> = std::iter::once(&old.target)
            .chain(&old.nodes)
            .filter(|p| p.pid.is_some_and(alive))
            .map(|p| p.name.as_str())
            .collect();
        if !running.is_empty() {
            bail!(
                "a lab is already running in {} ({}); `busrig lab down --dir {}` first",
                dir.display(),
                running.join(", "),
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir.join("logs"))
        .and_then(|()| fs::create_dir_all(dir.join("bus")))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let binary = std::env::current_exe().context("cannot find the busrig binary")?;

    let portal = free_tcp()?;
    let control = free_tcp()?;
    let ports: Vec<NodePorts> = (0..nodes)
        .map(|_| {
            Ok(NodePorts {
                private: free_udp()?,
                public: free_udp()?,
                admin: free_tcp()?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let portal_addr = addr_of(&portal, TcpListener::local_addr)?;
    let control_addr = addr_of(&control, TcpListener::local_addr)?;
    let cluster_text = cluster_toml("LAB", quorum, profile, &portal_addr, &ports)?;
    // Check the cluster file the way the nodes will, before starting anything.
    let cfg = ClusterConfig::from_toml(&cluster_text)
        .map_err(|e| anyhow!("this layout is refused: {e}"))?;
    fs::write(dir.join("bus.toml"), bus_toml(nodes, data_luns))?;
    fs::write(cluster_file(dir), &cluster_text)?;

    let mut state = LabState {
        binary: binary.clone(),
        quorum: quorum.into(),
        profile: profile.into(),
        target_iqn: LAB_TARGET.into(),
        target: LabProcess {
            name: "target".into(),
            pid: None,
            addr: portal_addr.clone(),
            control: Some(control_addr.clone()),
            log: "logs/target.log".into(),
        },
        nodes: cfg
            .nodes
            .iter()
            .map(|n| LabProcess {
                name: n.name.clone(),
                pid: None,
                addr: n.admin.to_string(),
                control: None,
                log: format!("logs/{}.log", n.name),
            })
            .collect(),
    };
    drop((portal, control));
    let target_args: Vec<String> = [
        "target",
        "--config",
        &dir.join("bus.toml").display().to_string(),
        "--listen",
        &portal_addr,
        "--control",
        &control_addr,
        "--data-dir",
        &dir.join("bus").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    state.target.pid = Some(spawn(&binary, &target_args, &dir.join(&state.target.log))?);
    state.save(dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    if let Err(e) = wait_until(deadline, &state.target, dir, || {
        std::net::TcpStream::connect(&control_addr).is_ok()
            && std::net::TcpStream::connect(&portal_addr).is_ok()
    }) {
        kill_all(&mut state, dir);
        return Err(e.context("the bus did not start"));
    }

    drop(ports);
    for n in state.nodes.iter_mut() {
        n.pid = Some(spawn(
            &binary,
            &node_start_args(dir, &n.name),
            &dir.join(&n.log),
        )?);
    }
    state.save(dir)?;
    let limit = timeout
        .map(Duration::from_secs)
        .unwrap_or_else(|| default_timeout(&cfg));
    let deadline = Instant::now() + limit;
    let rt = runtime()?;
    let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    if let Err(e) = rt.block_on(wait_formed(&state, dir, &cfg, &names, deadline)) {
        // Leave nothing running behind a failed `up`.
        kill_all(&mut state, dir);
        return Err(e.context(format!("the cluster did not form within {limit:?}")));
    }
    Ok(())
}

/// SIGKILLs every process of the lab (and what the nodes started) and
/// forgets their pids.
fn kill_all(state: &mut LabState, dir: &Path) {
    for p in state
        .nodes
        .iter_mut()
        .chain(std::iter::once(&mut state.target))
    {
        if let Some(pid) = p.pid.take() {
            for other in session_members(pid) {
                let _ = signal(other, Signal::SIGKILL);
            }
            let _ = signal(pid, Signal::SIGKILL);
            wait_exit(pid, Duration::from_secs(5));
        }
    }
    let _ = state.save(dir);
}

/// The cluster's groups and resources (`GET /catalog`) from the first
/// node that answers.
pub fn catalog(rt: &tokio::runtime::Runtime, cfg: &ClusterConfig) -> anyhow::Result<Value> {
    for n in &cfg.nodes {
        if let Ok(v) = rt.block_on(admin::request(
            &n.admin.to_string(),
            "GET",
            "/catalog",
            None,
            Some(&cfg.secret),
        )) {
            return Ok(v);
        }
    }
    bail!("no node answers")
}

/// The node group `g` is online on: its owner, when the owner itself
/// reports the group online.
pub fn group_online_on(
    rt: &tokio::runtime::Runtime,
    cfg: &ClusterConfig,
    g: &str,
) -> Option<String> {
    let c = catalog(rt, cfg).ok()?;
    let grp = &c["groups"][g];
    let owner = grp["owner"].as_str()?;
    (grp["state"]["state"] == "online" && grp["state"]["node"] == owner).then(|| owner.to_string())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

/// Polls `ok` until it holds, failing early (with its log) if `proc` exits.
fn wait_until(
    deadline: Instant,
    proc: &LabProcess,
    dir: &Path,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    loop {
        if ok() {
            return Ok(());
        }
        if let Some(pid) = proc.pid {
            if !alive(pid) {
                bail!(
                    "{} exited; the end of {}:\n{}",
                    proc.name,
                    proc.log,
                    log_tail(&dir.join(&proc.log), 15)
                );
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not ready in time; the end of {}:\n{}",
                proc.name,
                proc.log,
                log_tail(&dir.join(&proc.log), 15)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Every node's status, by lab position (None: no answer).
async fn all_status(cfg: &ClusterConfig) -> Vec<Option<ClusterStatus>> {
    let mut out = Vec::new();
    for n in &cfg.nodes {
        out.push(
            admin::status(&n.admin.to_string(), Some(&cfg.secret))
                .await
                .ok(),
        );
    }
    out
}

/// Whether `names` are all members of one view with an acting owner.
fn formed(st: &[Option<ClusterStatus>], cfg: &ClusterConfig, names: &[String]) -> bool {
    let ids: Vec<usize> = names
        .iter()
        .filter_map(|n| cfg.node_id(n))
        .map(usize::from)
        .collect();
    let views: Vec<&ClusterStatus> = ids.iter().filter_map(|&i| st[i].as_ref()).collect();
    if views.len() != ids.len() || views.iter().any(|s| !s.member || s.writes_held) {
        return false;
    }
    let first = views[0];
    let same = views
        .iter()
        .all(|s| s.epoch == first.epoch && s.quorum_owner == first.quorum_owner);
    let owner_acts = first.quorum_owner.as_ref().is_some_and(|o| {
        cfg.node_id(o)
            .and_then(|i| st[usize::from(i)].as_ref())
            .is_some_and(|s| s.acting_owner)
    });
    same && owner_acts && names.iter().all(|n| first.state_of(n) == Some("online"))
}

async fn wait_formed(
    state: &LabState,
    dir: &Path,
    cfg: &ClusterConfig,
    names: &[String],
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let st = all_status(cfg).await;
        if formed(&st, cfg, names) {
            return Ok(());
        }
        for n in names {
            let p = state.nodes.iter().find(|p| &p.name == n).expect("lab node");
            if p.pid.is_some_and(|pid| !alive(pid)) {
                bail!(
                    "{} exited; the end of {}:\n{}",
                    p.name,
                    p.log,
                    log_tail(&dir.join(&p.log), 15)
                );
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = st
                .iter()
                .zip(&cfg.nodes)
                .map(|(s, n)| match s {
                    Some(s) => format!("{}: {} ({})", n.name, s.phase, s.arbitration),
                    None => format!("{}: no answer", n.name),
                })
                .collect();
            bail!("node states: {}", seen.join("; "));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status(dir: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let state = LabState::load(dir)?;
    let cfg = busrig_cluster::cluster_file::load(&cluster_file(dir))?;
    let rt = runtime()?;
    let st = rt.block_on(all_status(&cfg));
    let cluster = st
        .iter()
        .flatten()
        .find(|s| s.member)
        .or(st.iter().flatten().next());
    if as_json {
        let procs: Vec<Value> = std::iter::once(&state.target)
            .chain(&state.nodes)
            .map(|p| json!({ "name": p.name, "pid": p.pid, "process": process_state(p.pid), "addr": p.addr, "log": p.log }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": dir, "quorum": state.quorum, "profile": state.profile,
                "processes": procs, "cluster": cluster,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Lab {} ({} nodes, quorum {}, profile {})",
        dir.display(),
        state.nodes.len(),
        state.quorum,
        state.profile
    );
    println!("  {:<8} {:<8} {:<12} ADDRESS", "NAME", "PID", "PROCESS");
    for p in std::iter::once(&state.target).chain(&state.nodes) {
        println!(
            "  {:<8} {:<8} {:<12} {}",
            p.name,
            p.pid.map_or("-".into(), |p| p.to_string()),
            process_state(p.pid),
            p.addr
        );
    }
    match cluster {
        Some(s) => println!(
            "  cluster {}: epoch {}, quorum owner {}, members {}",
            s.cluster,
            s.epoch.map_or("-".into(), |e| e.to_string()),
            s.quorum_owner.as_deref().unwrap_or("none"),
            s.nodes
                .iter()
                .map(|n| format!("{}={}", n.name, n.state))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => println!("  cluster: no node answers"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops every node cleanly, then the bus.
pub fn down(dir: &Path) -> anyhow::Result<()> {
    let mut state = LabState::load(dir)?;
    // A node takes its groups offline (applications stopped, disks
    // released, states recorded) before it exits.
    let grace = Duration::from_secs(20);
    for n in &state.nodes {
        if let Some(pid) = n.pid.filter(|&p| alive(p)) {
            // A stopped (SIGSTOP) node must run to handle SIGTERM.
            let _ = signal(pid, Signal::SIGCONT);
            let _ = signal(pid, Signal::SIGTERM);
        }
    }
    for n in state.nodes.iter_mut() {
        if let Some(pid) = n.pid.take() {
            if !wait_exit(pid, grace) {
                eprintln!("{} did not stop in {grace:?}; killing it", n.name);
                let _ = signal(pid, Signal::SIGKILL);
                wait_exit(pid, grace);
            }
            for other in session_members(pid) {
                let _ = signal(other, Signal::SIGKILL);
            }
        }
    }
    if let Some(pid) = state.target.pid.take() {
        if alive(pid) {
            let _ = signal(pid, Signal::SIGCONT);
            let _ = signal(pid, Signal::SIGTERM);
            if !wait_exit(pid, grace) {
                let _ = signal(pid, Signal::SIGKILL);
                wait_exit(pid, grace);
            }
        }
    }
    state.save(dir)?;
    Ok(())
}

/// Starts node `name` again; with `wait`, returns once it is a member.
pub fn start(dir: &Path, name: &str, wait: bool) -> anyhow::Result<()> {
    let mut state = LabState::load(dir)?;
    let binary = state.binary.clone();
    let p = state.node_mut(name)?;
    if p.pid.is_some_and(alive) {
        bail!("{} is already running (pid {})", p.name, p.pid.unwrap_or(0));
    }
    let name = p.name.clone();
    // Separate this incarnation's log from the last one's.
    let log = dir.join(&p.log);
    if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&log) {
        let _ = writeln!(f, "----- busrig lab start {name} -----");
    }
    p.pid = Some(spawn(&binary, &node_start_args(dir, &name), &log)?);
    state.save(dir)?;
    if wait {
        let cfg = busrig_cluster::cluster_file::load(&cluster_file(dir))?;
        let deadline = Instant::now() + default_timeout(&cfg);
        let rt = runtime()?;
        // Only this node must be back; others may be down on purpose.
        rt.block_on(async {
            loop {
                let st = all_status(&cfg).await;
                let me = cfg.node_id(&name).map(usize::from).unwrap_or(0);
                if st[me].as_ref().is_some_and(|s| s.member && !s.writes_held) {
                    return Ok(());
                }
                let p = state.nodes.iter().find(|p| p.name == name).expect("node");
                if p.pid.is_some_and(|pid| !alive(pid)) {
                    bail!("{name} exited; the end of its log:\n{}", log_tail(&log, 15));
                }
                if Instant::now() >= deadline {
                    bail!("{name} did not rejoin in time");
                }
                tokio::time::sleep(POLL).await;
            }
        })?;
    }
    Ok(())
}

/// Sends `sig` to lab process `name` (SIGKILL takes its whole session, the
/// node and its applications); returns its name and pid.
pub fn send_signal(
    dir: &Path,
    name: &str,
    sig: Signal,
    verb: &str,
) -> anyhow::Result<(String, u32)> {
    let mut state = LabState::load(dir)?;
    let p = state.process_mut(name)?;
    let pid = p
        .pid
        .filter(|&p| alive(p))
        .ok_or_else(|| anyhow!("{} is not running", p.name))?;
    signal(pid, sig)?;
    if sig == Signal::SIGKILL {
        // A killed server takes its applications with it.
        for other in session_members(pid) {
            let _ = signal(other, Signal::SIGKILL);
        }
        wait_exit(pid, Duration::from_secs(5));
    }
    tracing::info!(process = %p.name, pid, signal = %sig, "lab fault: {verb}");
    Ok((p.name.clone(), pid))
}

fn signal_verb(dir: &Path, name: &str, sig: Signal, verb: &str) -> anyhow::Result<ExitCode> {
    let (name, pid) = send_signal(dir, name, sig, verb)?;
    println!("{name} {verb} (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

fn partition(dir: &Path, name: &str, net: NetArg, cut: bool) -> anyhow::Result<()> {
    let mut state = LabState::load(dir)?;
    let cfg = busrig_cluster::cluster_file::load(&cluster_file(dir))?;
    let p = state.node_mut(name)?;
    let rt = runtime()?;
    let v = rt.block_on(admin::request(
        &p.addr,
        "POST",
        "/partition",
        Some(&json!({ "net": net.name(), "cut": cut })),
        Some(&cfg.secret),
    ))?;
    println!(
        "{}: private {}, public {}",
        p.name,
        if v["private"] == json!(true) {
            "cut"
        } else {
            "up"
        },
        if v["public"] == json!(true) {
            "cut"
        } else {
            "up"
        }
    );
    Ok(())
}

/// One measured failover.
#[derive(Debug, Serialize)]
struct Takeover {
    killed: String,
    new_owner: String,
    ms: u64,
}

fn failover(dir: &Path, kills: usize, as_json: bool) -> anyhow::Result<ExitCode> {
    let cfg = busrig_cluster::cluster_file::load(&cluster_file(dir))?;
    let rt = runtime()?;
    let mut results = Vec::new();
    for round in 0..kills {
        let mut state = LabState::load(dir)?;
        let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        let formed_by = Instant::now() + default_timeout(&cfg);
        rt.block_on(wait_formed(&state, dir, &cfg, &names, formed_by))
            .context("the cluster is not formed before the kill")?;
        let st = rt.block_on(all_status(&cfg));
        let owner = st
            .iter()
            .flatten()
            .find_map(|s| s.quorum_owner.clone())
            .ok_or_else(|| anyhow!("no quorum owner"))?;
        let p = state.node_mut(&owner)?;
        let pid = p.pid.ok_or_else(|| anyhow!("{owner} has no pid"))?;
        let killed_at = Instant::now();
        signal(pid, Signal::SIGKILL)?;
        for other in session_members(pid) {
            let _ = signal(other, Signal::SIGKILL);
        }
        let deadline = killed_at + default_timeout(&cfg);
        let new_owner = rt.block_on(async {
            loop {
                for (i, n) in cfg.nodes.iter().enumerate() {
                    if n.name == owner {
                        continue;
                    }
                    if let Ok(s) = admin::status(&n.admin.to_string(), Some(&cfg.secret)).await {
                        if s.acting_owner {
                            return Ok(cfg.nodes[i].name.clone());
                        }
                    }
                }
                if Instant::now() >= deadline {
                    bail!(
                        "no node took over the quorum within {:?}",
                        deadline - killed_at
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })?;
        let ms = killed_at.elapsed().as_millis() as u64;
        if !as_json {
            println!(
                "kill {}: {owner} killed, {new_owner} owns the quorum after {ms} ms",
                round + 1
            );
        }
        results.push(Takeover {
            killed: owner.clone(),
            new_owner,
            ms,
        });
        wait_exit(pid, Duration::from_secs(5));
        start(dir, &owner, true)?;
    }
    let mut ms: Vec<u64> = results.iter().map(|r| r.ms).collect();
    ms.sort_unstable();
    let median = if ms.is_empty() {
        0
    } else if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2
    };
    let (min, max) = (
        ms.first().copied().unwrap_or(0),
        ms.last().copied().unwrap_or(0),
    );
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "quorum": cfg.quorum.name(), "profile": cfg.profile, "nodes": cfg.nodes.len(),
                "kills": results, "median_ms": median, "min_ms": min, "max_ms": max,
            }))?
        );
    } else {
        println!(
            "{} kills ({}, {}): median {median} ms, min {min} ms, max {max} ms",
            results.len(),
            cfg.quorum.name(),
            cfg.profile
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: LabArgs) -> anyhow::Result<ExitCode> {
    match a.verb {
        Verb::Up {
            dir,
            nodes,
            quorum,
            profile,
            data_luns,
            timeout,
        } => {
            up(&dir.dir, nodes, &quorum, &profile, data_luns, timeout)?;
            status(&dir.dir, false)
        }
        Verb::Status { dir, json } => status(&dir.dir, json),
        Verb::Down { dir } => {
            down(&dir.dir)?;
            println!(
                "lab {} is down (logs kept in {})",
                dir.dir.display(),
                dir.dir.join("logs").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Kill { node, dir } => signal_verb(&dir.dir, &node, Signal::SIGKILL, "killed"),
        Verb::Pause { node, dir } => signal_verb(&dir.dir, &node, Signal::SIGSTOP, "paused"),
        Verb::Resume { node, dir } => signal_verb(&dir.dir, &node, Signal::SIGCONT, "resumed"),
        Verb::Start { node, dir, wait } => {
            start(&dir.dir, &node, wait)?;
            println!("{node} started");
            Ok(ExitCode::SUCCESS)
        }
        Verb::Partition { node, net, dir } => {
            partition(&dir.dir, &node, net, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Heal { node, net, dir } => {
            partition(&dir.dir, &node, net, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Failover { dir, kills, json } => failover(&dir.dir, kills, json),
        Verb::Run {
            scenario,
            dir,
            keep,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "busrig-scenario-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                ))
            });
            crate::scenario::run(&scenario, &dir, keep)
        }
    }
}
