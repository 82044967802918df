//! The lab's processes: one `busrig target` and N `busrig node` in the
//! background, started, stopped, killed, paused and partitioned through a
//! [`Lab`] handle.
//!
//! `up` writes everything under the lab folder: `bus.toml` (the shared
//! bus), `cluster.toml` (the cluster file every node reads), `lab.json`,
//! `bus/` (LUN files) and `logs/` (one log per process). It returns once
//! every node is a member of one view with a quorum owner, or fails with
//! the reason and the tail of the log of the process that failed.
//!
//! Ports are chosen by binding port 0 on loopback and releasing the socket
//! just before the process that uses it starts; another program grabbing
//! the same port in that instant makes `up` fail with the bind error in
//! the node's log, never a silent mix-up.
//!
//! Layout: with up to two nodes the bus is parallel SCSI (`scsi`, as the
//! seeds' two-node clusters); with more it is a switched fabric. LUN 0 is
//! the quorum disk (the witness under `majority` with an even node count),
//! LUNs 1..=`data_luns` are data disks.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use busrig_cluster::admin::{self, ClusterStatus};
use busrig_cluster::config::ClusterConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{fail, Context as _, LabError, Result};
use crate::hosts::faults::{NetFault, SwitchDelay};
use crate::hosts::netns::{self, NetnsLab, Network};
use crate::hosts::{Hosts, HostsMode, Link, Placement};
use crate::state::{alive, bus_token, cluster_file, log_tail, write_private, LabProcess, LabState};

/// The lab's target name.
pub const LAB_TARGET: &str = "iqn.2026-11.io.busrig:lab";
/// How long `down` waits for a node to stop before it kills it.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long the processes get to stop cleanly when the user interrupted
/// (`busrig demo` on Ctrl-C): the user is waiting, so a node that is still
/// taking its groups offline after this is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(1500);
/// How often readiness and failover conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// A lab folder and the `busrig` binary its processes run.
#[derive(Debug, Clone)]
pub struct Lab {
    binary: PathBuf,
    dir: PathBuf,
}

/// The layout `Lab::up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes (NODE1 .. NODEn).
    pub nodes: usize,
    /// Quorum model: disk-scsi2, disk-pr or majority.
    pub quorum: String,
    /// Timing profile: fast or mscs2003.
    pub profile: String,
    /// Data LUNs besides the quorum LUN.
    pub data_luns: u16,
    /// How long the cluster may take to form (default: from the profile).
    pub timeout: Option<Duration>,
    /// Where the processes run: one network stack, or a namespace each.
    pub hosts: HostsMode,
}

/// How far `Lab::up_with` has got, for a progress line (README, "A
/// cluster: `busrig lab`").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpProgress {
    /// The bus is starting.
    StartingBus,
    /// The bus answers on its portal and its control address.
    BusReady,
    /// The nodes were started; the cluster forms within `limit`.
    NodesStarted { nodes: usize, limit: Duration },
    /// Polled while the cluster forms: each node's phase and arbitration
    /// as its admin endpoint reports them (`NODE1: joining (challenger)`),
    /// or that it does not answer yet.
    Forming { nodes: Vec<String> },
    /// Every node is a member of one view with a quorum owner.
    Formed,
}

/// The cluster networks a partition cuts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Net {
    Private,
    Public,
    #[default]
    Both,
}

impl Net {
    /// Every value, in the order `busrig lab partition --help` lists them.
    pub const ALL: [Net; 3] = [Net::Private, Net::Public, Net::Both];

    /// The `busrig lab partition --net` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Net::Private => "private",
            Net::Public => "public",
            Net::Both => "both",
        }
    }
}

/// The inverse of [`Net::as_str`].
impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Net, String> {
        let known = Net::ALL.into_iter().find(|n| n.as_str() == s);
        known.ok_or_else(|| format!("{s:?} is not a cluster network (private, public or both)"))
    }
}

/// Which of a node's networks are cut, after `partition` or `heal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub private: bool,
    pub public: bool,
}

/// The lab's processes and what its nodes say.
#[derive(Debug)]
pub struct LabStatus {
    pub state: LabState,
    /// A member's status (or any node's), None when no node answers.
    pub cluster: Option<ClusterStatus>,
    /// The lab's hosts and the network faults in force.
    pub hosts: Hosts,
}

/// One measured failover.
#[derive(Debug, Clone, Serialize)]
pub struct Takeover {
    pub killed: String,
    pub new_owner: String,
    pub ms: u64,
}

/// The failover measurement; its JSON is `busrig lab failover --json`.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub quorum: String,
    pub profile: String,
    pub nodes: usize,
    pub kills: Vec<Takeover>,
    pub median_ms: u64,
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Lab {
    /// The lab in `dir`, whose processes run `binary` (the `busrig`
    /// executable: `current_exe()` in the binary, `CARGO_BIN_EXE_busrig`
    /// in tests).
    pub fn new(binary: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Lab {
        Lab {
            binary: binary.into(),
            dir: dir.into(),
        }
    }

    /// The lab folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `busrig` binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The lab's cluster file.
    pub fn cluster_file(&self) -> PathBuf {
        cluster_file(&self.dir)
    }

    /// The logs folder.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The log file of lab process `name` (a node, or `target`).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// The last `lines` lines of every log in the lab, each under a
    /// `===== FILE (last N lines)` heading, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        let Ok(rd) = fs::read_dir(self.logs_dir()) else {
            return s;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            s += &format!("\n===== {} (last {lines} lines)\n", f.display());
            s += &all[all.len().saturating_sub(lines)..].join("\n");
        }
        s
    }

    /// Node `name`'s status from its admin endpoint, on `rt`.
    pub fn node_status(
        &self,
        rt: &tokio::runtime::Runtime,
        cfg: &ClusterConfig,
        name: &str,
    ) -> Result<ClusterStatus> {
        let id = cfg.node_id(name).ok_or_else(|| LabError::NoSuchNode {
            name: name.to_string(),
            nodes: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        })?;
        let addr = cfg.nodes[usize::from(id)].admin.to_string();
        Ok(rt.block_on(admin::status(&addr, Some(&cfg.secret)))?)
    }

    /// `lab.json`.
    pub fn state(&self) -> Result<LabState> {
        LabState::load(&self.dir)
    }

    /// The cluster file, parsed.
    pub fn config(&self) -> Result<ClusterConfig> {
        Ok(busrig_cluster::cluster_file::load(&self.cluster_file())?)
    }

    /// Starts a lab and waits until the cluster has formed.
    pub fn up(&self, o: &UpOptions) -> Result<()> {
        self.up_with(o, &mut |_| (), &|| false)
    }

    /// [`Lab::up`], telling `progress` each step and, while the cluster
    /// forms, each node's state every poll; it gives up as soon as `stop`
    /// says so (the user's Ctrl-C, [`crate::interrupt`]), then kills what
    /// it had started and fails with [`LabError::UpInterrupted`] naming
    /// those processes.
    pub fn up_with(
        &self,
        o: &UpOptions,
        progress: &mut dyn FnMut(UpProgress),
        stop: &dyn Fn() -> bool,
    ) -> Result<()> {
        let dir = self.dir.as_path();
        let (nodes, quorum, profile, data_luns) =
            (o.nodes, o.quorum.as_str(), o.profile.as_str(), o.data_luns);
        if nodes == 0 || nodes > 8 {
            fail!("--nodes must be 1 to 8 (a switched fabric's limit in the seeds)");
        }
        if !["disk-scsi2", "disk-pr", "majority"].contains(&quorum) {
            fail!("--quorum must be disk-scsi2, disk-pr or majority (got {quorum:?})");
        }
        if let Ok(old) = LabState::load(dir) {
            let running: Vec<&str> = old
                .processes()
                .filter(|p| p.pid.is_some_and(alive))
                .map(|p| p.name.as_str())
                .collect();
            if !running.is_empty() {
                fail!(
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
        let binary = self.binary.clone();
        if let Hosts::Netns(old) = Hosts::load(dir)? {
            fail!(
                "the namespace hosts of an earlier lab (tag {}) are still recorded in {}; `busrig lab down --dir {}` first",
                old.tag,
                crate::hosts::hosts_file(dir).display(),
                dir.display()
            );
        }
        let hosts = match o.hosts {
            HostsMode::Single => Hosts::Single,
            HostsMode::Netns => {
                netns::check_requirements()?;
                match NetnsLab::create(dir, nodes) {
                    Ok(n) => Hosts::Netns(n),
                    Err(e) => {
                        let e = e.context("cannot make the namespace hosts");
                        return Err(match teardown_hosts(dir) {
                            Ok(()) => e,
                            Err(t) => t.context(e.chain()),
                        });
                    }
                }
            }
        };

        // Single stack: loopback ports, held until their process starts.
        // Namespaces: every host has addresses of its own and fixed ports.
        let mut portal = None;
        let mut control = None;
        let mut ports: Vec<NodePorts> = Vec::new();
        let (portal_addr, control_addr, addrs) = match &hosts {
            Hosts::Single => {
                let (p, c) = (free_tcp()?, free_tcp()?);
                ports = (0..nodes)
                    .map(|_| {
                        Ok(NodePorts {
                            private: free_udp()?,
                            public: free_udp()?,
                            admin: free_tcp()?,
                        })
                    })
                    .collect::<Result<_>>()?;
                let addrs: Vec<NodeAddrs> =
                    ports.iter().map(NodePorts::addrs).collect::<Result<_>>()?;
                let pc = (
                    addr_of(&p, TcpListener::local_addr)?,
                    addr_of(&c, TcpListener::local_addr)?,
                );
                (portal, control) = (Some(p), Some(c));
                (pc.0, pc.1, addrs)
            }
            Hosts::Netns(n) => {
                let on = |net, host, port| format!("{}:{port}", n.addr(net, host));
                let addrs: Vec<NodeAddrs> = (1..=nodes)
                    .map(|i| NodeAddrs {
                        private: on(Network::Private, netns::node_host(i), netns::CLUSTER_PORT),
                        public: on(Network::Public, netns::node_host(i), netns::CLUSTER_PORT),
                        admin: on(Network::Mgmt, netns::node_host(i), netns::ADMIN_PORT),
                        public_interface: Some(Link::Public.interface()),
                    })
                    .collect();
                (
                    on(Network::Storage, netns::TARGET_HOST, netns::PORTAL_PORT),
                    on(Network::Mgmt, netns::TARGET_HOST, netns::CONTROL_PORT),
                    addrs,
                )
            }
        };
        let cluster_text = cluster_toml("LAB", quorum, profile, &portal_addr, &addrs);
        // Check the cluster file the way the nodes will, before starting anything.
        let cfg = match ClusterConfig::from_toml(&cluster_text) {
            Ok(cfg) => cfg,
            Err(e) => {
                let _ = teardown_hosts(dir);
                fail!("this layout is refused: {e}");
            }
        };
        fs::write(dir.join("bus.toml"), bus_toml(nodes, data_luns))?;
        // The cluster file holds the secret every credential derives from.
        write_private(&cluster_file(dir), cluster_text.as_bytes())?;

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
        // The token goes by the environment, which only the lab's user can
        // read (/proc/PID/environ), not by the command line, which anyone can.
        let token = bus_token(&cfg);
        progress(UpProgress::StartingBus);
        let started = spawn(
            &binary,
            &target_args,
            &[("BUSRIG_CONTROL_TOKEN", token.as_str())],
            &dir.join(&state.target.log),
            &hosts.placement("target"),
        );
        state.target.pid = match started {
            Ok(pid) => Some(pid),
            Err(e) => return Err(abandon_up(&mut state, dir, e, "cannot start the bus")),
        };
        state.save(dir)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Err(e) = wait_until(deadline, &state.target, dir, stop, || {
            std::net::TcpStream::connect(&control_addr).is_ok()
                && std::net::TcpStream::connect(&portal_addr).is_ok()
        }) {
            return Err(abandon_up(&mut state, dir, e, "the bus did not start"));
        }
        progress(UpProgress::BusReady);

        drop(ports);
        for i in 0..state.nodes.len() {
            if stop() {
                break;
            }
            let n = &state.nodes[i];
            match spawn(
                &binary,
                &node_start_args(dir, &n.name),
                &[],
                &dir.join(&n.log),
                &hosts.placement(&n.name),
            ) {
                Ok(pid) => state.nodes[i].pid = Some(pid),
                Err(e) => return Err(abandon_up(&mut state, dir, e, "cannot start the nodes")),
            }
        }
        state.save(dir)?;
        let limit = o.timeout.unwrap_or_else(|| default_timeout(&cfg));
        let deadline = Instant::now() + limit;
        let rt = runtime()?;
        let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        progress(UpProgress::NodesStarted {
            nodes: names.len(),
            limit,
        });
        let forming = &mut |st: &[Option<ClusterStatus>]| {
            progress(UpProgress::Forming {
                nodes: node_states(st, &cfg),
            })
        };
        let formed = wait_formed(&state, dir, &cfg, &names, deadline, forming, stop);
        if let Err(e) = rt.block_on(formed) {
            // Leave nothing running behind a failed or interrupted `up`.
            let what = format!("the cluster did not form within {limit:?}");
            return Err(abandon_up(&mut state, dir, e, &what));
        }
        progress(UpProgress::Formed);
        Ok(())
    }

    /// The processes and the cluster state.
    pub fn status(&self) -> Result<LabStatus> {
        let state = self.state()?;
        let cfg = self.config()?;
        let rt = runtime()?;
        let st = rt.block_on(all_status(&cfg));
        let cluster = st
            .iter()
            .flatten()
            .find(|s| s.member)
            .or(st.iter().flatten().next())
            .cloned();
        let hosts = Hosts::load(&self.dir)?;
        Ok(LabStatus {
            state,
            cluster,
            hosts,
        })
    }

    /// The hosts of this lab (`hosts.json`).
    pub fn hosts(&self) -> Result<Hosts> {
        Hosts::load(&self.dir)
    }

    /// Puts `fault` on lab process `name`'s `link` (`busrig lab net`):
    /// kernel faults in the host's namespace, and a delay through busrig's
    /// own switch where the kernel has no netem. Returns the host's name
    /// and each fault now in force on that link with its mechanism.
    pub fn net_fault(
        &self,
        name: &str,
        link: Link,
        fault: &NetFault,
    ) -> Result<(String, Vec<(String, String)>)> {
        let Hosts::Netns(mut n) = Hosts::load(&self.dir)? else {
            fail!("kernel network faults need a lab started with `--hosts netns`; this lab shares one network stack (use `busrig lab partition`)");
        };
        let mut state = LabState::load(&self.dir)?;
        let host = state.process_mut(name)?.name.clone();
        let old = n.faults_of(&host).remove(&link).unwrap_or_default();
        let new = fault.apply_to(&old);
        // A refused fault changes nothing: checked, then the switch (which
        // may not answer), then the kernel and the record.
        n.check(&host, link, &new)?;
        let (was, now) = (n.switch_delay(link, &old), n.switch_delay(link, &new));
        if was != now {
            self.set_switch_delay(&host, link, now.map_or(0, |(_, ms)| ms))?;
        }
        n.apply(&self.dir, &host, link, new.clone())?;
        Ok((host, crate::hosts::faults::describe(link, &new, n.netem)))
    }

    /// Sets busrig's own delay for `host`'s `link`: the node's cluster
    /// transport for private and public, the bus's path delay of the
    /// node's initiator for storage.
    fn set_switch_delay(&self, host: &str, link: Link, ms: u64) -> Result<()> {
        let cfg = self.config()?;
        let rt = runtime()?;
        let id = cfg
            .node_id(host)
            .ok_or_else(|| LabError::Failed(format!("{host} is not a node")))?;
        match crate::hosts::faults::switch_for(link) {
            SwitchDelay::Cluster => {
                let admin = cfg.nodes[usize::from(id)].admin.to_string();
                rt.block_on(admin::request(
                    &admin,
                    "POST",
                    "/net-delay",
                    Some(&json!({ "net": link.as_str(), "ms": ms })),
                    Some(&cfg.secret),
                ))
                .with_context(|| format!("cannot set the switch delay of {host}"))?;
            }
            SwitchDelay::Bus => {
                let control = crate::state::bus_control(&self.dir)?;
                let body = json!({
                    "initiator": cfg.initiator_name(id),
                    "action": "delay",
                    "ms": ms,
                });
                let (code, v) = rt.block_on(busrig_http::request(
                    &control,
                    "POST",
                    "/path",
                    Some(&body),
                    Some(&bus_token(&cfg)),
                ))?;
                if code != 200 {
                    fail!("bus path delay for {host}: {v}");
                }
            }
        }
        tracing::info!(
            host,
            link = link.as_str(),
            ms,
            "busrig switch delay set (no tc netem)"
        );
        Ok(())
    }

    /// After a start of node `name`: its switch delays again, once its
    /// admin endpoint answers.
    fn restore_switch_delays(&self, n: &NetnsLab, name: &str) -> Result<()> {
        let delays: Vec<(Link, u64)> = n
            .faults_of(name)
            .iter()
            .filter_map(|(&l, f)| n.switch_delay(l, f).map(|(_, ms)| (l, ms)))
            .collect();
        let cfg = self.config()?;
        let deadline = Instant::now() + default_timeout(&cfg);
        for (l, ms) in delays {
            loop {
                match self.set_switch_delay(name, l, ms) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        }
        Ok(())
    }

    /// After lab process `name` was killed: with namespace hosts its
    /// virtual IPs leave its interface, as a dead server's do.
    fn host_died(&self, name: &str) -> Result<()> {
        if let Hosts::Netns(n) = Hosts::load(&self.dir)? {
            if !name.eq_ignore_ascii_case("target") {
                let gone = n.flush_virtual_ips(name)?;
                if !gone.is_empty() {
                    tracing::info!(host = name, addresses = ?gone, "virtual IPs gone with the killed node");
                }
            }
        }
        Ok(())
    }

    /// Stops every node cleanly, then the bus; returns the nodes that did
    /// not stop within [`STOP_GRACE`] and were killed.
    pub fn down(&self) -> Result<Vec<String>> {
        self.down_within(STOP_GRACE, &|| false)
    }

    /// [`Lab::down`] with `grace` for each process to stop cleanly; once
    /// `hurry` says so (a second Ctrl-C), it stops waiting and kills.
    ///
    /// Then it removes the lab's namespace hosts, if it has any: also those
    /// of a lab whose `up` crashed before `lab.json` was written.
    pub fn down_within(&self, grace: Duration, hurry: &dyn Fn() -> bool) -> Result<Vec<String>> {
        let dir = self.dir.as_path();
        let forced = match LabState::load(dir) {
            Ok(state) => self.stop_processes(state, grace, hurry)?,
            Err(e @ LabError::NotALab { .. }) => match Hosts::load(dir)? {
                Hosts::Single => return Err(e),
                Hosts::Netns(_) => Vec::new(),
            },
            Err(e) => return Err(e),
        };
        teardown_hosts(dir)?;
        Ok(forced)
    }

    /// [`Lab::down_within`]'s processes part.
    fn stop_processes(
        &self,
        mut state: LabState,
        grace: Duration,
        hurry: &dyn Fn() -> bool,
    ) -> Result<Vec<String>> {
        let dir = self.dir.as_path();
        // A node takes its groups offline (applications stopped, disks
        // released, states recorded) before it exits.
        let mut forced = Vec::new();
        for n in &state.nodes {
            if let Some(pid) = n.pid.filter(|&p| alive(p)) {
                // A stopped (SIGSTOP) node must run to handle SIGTERM.
                let _ = signal(pid, Signal::SIGCONT);
                let _ = signal(pid, Signal::SIGTERM);
            }
        }
        // One grace period for all: the nodes stop side by side, and those
        // still running after it are killed side by side.
        let end = Instant::now() + grace;
        let pids: Vec<(String, u32)> = state
            .nodes
            .iter_mut()
            .filter_map(|n| Some((n.name.clone(), n.pid.take()?)))
            .collect();
        for (name, pid) in &pids {
            if !wait_exit_until(*pid, end, hurry) {
                tracing::warn!(node = %name, "{name} did not stop in {grace:?}; killing it");
                forced.push(name.clone());
                let _ = signal(*pid, Signal::SIGKILL);
            }
        }
        for (_, pid) in &pids {
            wait_exit(*pid, STOP_GRACE);
            // What the node started (its applications) goes with it.
            for other in session_members(*pid) {
                let _ = signal(other, Signal::SIGKILL);
            }
        }
        if let Some(pid) = state.target.pid.take() {
            if alive(pid) {
                let _ = signal(pid, Signal::SIGCONT);
                let _ = signal(pid, Signal::SIGTERM);
                if !wait_exit_until(pid, Instant::now() + grace, hurry) {
                    let _ = signal(pid, Signal::SIGKILL);
                    wait_exit(pid, STOP_GRACE);
                }
            }
        }
        state.save(dir)?;
        Ok(forced)
    }

    /// Starts node `name` again (with the binary that started the lab);
    /// with `wait`, returns once it is a member.
    pub fn start(&self, name: &str, wait: bool) -> Result<()> {
        self.start_until(name, wait, &|| false)
    }

    /// [`Lab::start`] whose wait ends with [`LabError::Interrupted`] as
    /// soon as `stop` says so; the node is left running for the caller's
    /// clean-up.
    pub fn start_until(&self, name: &str, wait: bool, stop: &dyn Fn() -> bool) -> Result<()> {
        let dir = self.dir.as_path();
        let mut state = LabState::load(dir)?;
        let binary = state.binary.clone();
        let p = state.node_mut(name)?;
        if let Some(pid) = p.pid.filter(|&pid| alive(pid)) {
            return Err(LabError::AlreadyRunning {
                name: p.name.clone(),
                pid,
            });
        }
        let name = p.name.clone();
        // Separate this incarnation's log from the last one's.
        let log = dir.join(&p.log);
        if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&log) {
            let _ = writeln!(f, "----- busrig lab start {name} -----");
        }
        let hosts = Hosts::load(dir)?;
        if let Hosts::Netns(n) = &hosts {
            // A server boots with none of the virtual IPs it held.
            n.flush_virtual_ips(&name)?;
        }
        let placement = hosts.placement(&name);
        p.pid = Some(spawn(
            &binary,
            &node_start_args(dir, &name),
            &[],
            &log,
            &placement,
        )?);
        state.save(dir)?;
        if let Hosts::Netns(n) = &hosts {
            // busrig's switch lives in the node: give the new process the
            // delays in force on its links.
            self.restore_switch_delays(n, &name)?;
        }
        if wait {
            let cfg = self.config()?;
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
                    let exited = state
                        .nodes
                        .iter()
                        .find(|p| p.name == name)
                        .and_then(|p| p.pid)
                        .is_some_and(|pid| !alive(pid));
                    if exited {
                        fail!("{name} exited; the end of its log:\n{}", log_tail(&log, 15));
                    }
                    if stop() {
                        return Err(LabError::Interrupted);
                    }
                    if Instant::now() >= deadline {
                        fail!("{name} did not rejoin in time");
                    }
                    tokio::time::sleep(POLL).await;
                }
            })?;
        }
        Ok(())
    }

    /// Sends `sig` to lab process `name` (SIGKILL takes its whole session,
    /// the node and its applications); returns its name and pid.
    pub fn send_signal(&self, name: &str, sig: Signal, verb: &str) -> Result<(String, u32)> {
        let mut state = LabState::load(&self.dir)?;
        let p = state.process_mut(name)?;
        let pid = p
            .pid
            .filter(|&p| alive(p))
            .ok_or_else(|| LabError::NotRunning(p.name.clone()))?;
        signal(pid, sig)?;
        if sig == Signal::SIGKILL {
            // A killed server takes its applications with it.
            for other in session_members(pid) {
                let _ = signal(other, Signal::SIGKILL);
            }
            wait_exit(pid, Duration::from_secs(5));
            self.host_died(&p.name)?;
        }
        tracing::info!(process = %p.name, pid, signal = %sig, "lab fault: {verb}");
        Ok((p.name.clone(), pid))
    }

    /// Cuts (or, with `cut` false, heals) node `name`'s cluster traffic on
    /// `net`; returns the node's name and what is cut now.
    ///
    /// With namespace hosts the cut is the kernel's: nftables drops every
    /// frame on the node's interface of that network, both ways.
    pub fn partition(&self, name: &str, net: Net, cut: bool) -> Result<(String, Cut)> {
        let mut state = LabState::load(&self.dir)?;
        let cfg = self.config()?;
        let p = state.node_mut(name)?;
        if let Hosts::Netns(mut n) = Hosts::load(&self.dir)? {
            let links: &[Link] = match net {
                Net::Private => &[Link::Private],
                Net::Public => &[Link::Public],
                Net::Both => &[Link::Private, Link::Public],
            };
            for &l in links {
                let mut f = n.faults_of(&p.name).remove(&l).unwrap_or_default();
                f.cut = cut.then_some(crate::hosts::faults::Direction::Both);
                n.apply(&self.dir, &p.name, l, f)?;
            }
            let now = n.faults_of(&p.name);
            let is_cut = |l| now.get(&l).is_some_and(|f| f.cut.is_some());
            return Ok((
                p.name.clone(),
                Cut {
                    private: is_cut(Link::Private),
                    public: is_cut(Link::Public),
                },
            ));
        }
        let rt = runtime()?;
        let v = rt.block_on(admin::request(
            &p.addr,
            "POST",
            "/partition",
            Some(&json!({ "net": net.as_str(), "cut": cut })),
            Some(&cfg.secret),
        ))?;
        Ok((
            p.name.clone(),
            Cut {
                private: v["private"] == json!(true),
                public: v["public"] == json!(true),
            },
        ))
    }

    /// Kills the quorum owner `kills` times and measures how long until
    /// another node acts as owner; each killed node is restarted and
    /// rejoins. `each` sees every measured takeover as it happens.
    pub fn failover(
        &self,
        kills: usize,
        mut each: impl FnMut(usize, &Takeover),
    ) -> Result<FailoverReport> {
        let dir = self.dir.as_path();
        let cfg = self.config()?;
        let rt = runtime()?;
        let mut results = Vec::new();
        for round in 0..kills {
            let mut state = LabState::load(dir)?;
            let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
            let formed_by = Instant::now() + default_timeout(&cfg);
            let quiet = &mut |_: &[Option<ClusterStatus>]| ();
            let formed = wait_formed(&state, dir, &cfg, &names, formed_by, quiet, &|| false);
            rt.block_on(formed)
                .context("the cluster is not formed before the kill")?;
            let st = rt.block_on(all_status(&cfg));
            let owner = st
                .iter()
                .flatten()
                .find_map(|s| s.quorum_owner.clone())
                .ok_or_else(|| LabError::Failed("no quorum owner".into()))?;
            let p = state.node_mut(&owner)?;
            let pid = p
                .pid
                .ok_or_else(|| LabError::Failed(format!("{owner} has no pid")))?;
            let killed_at = Instant::now();
            signal(pid, Signal::SIGKILL)?;
            for other in session_members(pid) {
                let _ = signal(other, Signal::SIGKILL);
            }
            self.host_died(&owner)?;
            let deadline = killed_at + default_timeout(&cfg);
            let new_owner = rt.block_on(async {
                loop {
                    for (i, n) in cfg.nodes.iter().enumerate() {
                        if n.name == owner {
                            continue;
                        }
                        if let Ok(s) = admin::status(&n.admin.to_string(), Some(&cfg.secret)).await
                        {
                            if s.acting_owner {
                                return Ok(cfg.nodes[i].name.clone());
                            }
                        }
                    }
                    if Instant::now() >= deadline {
                        fail!(
                            "no node took over the quorum within {:?}",
                            deadline - killed_at
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })?;
            let ms = killed_at.elapsed().as_millis() as u64;
            let t = Takeover {
                killed: owner.clone(),
                new_owner,
                ms,
            };
            each(round, &t);
            results.push(t);
            wait_exit(pid, Duration::from_secs(5));
            self.start(&owner, true)?;
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
        Ok(FailoverReport {
            quorum: cfg.quorum.name().to_string(),
            profile: cfg.profile.clone(),
            nodes: cfg.nodes.len(),
            kills: results,
            median_ms: median,
            min_ms: ms.first().copied().unwrap_or(0),
            max_ms: ms.last().copied().unwrap_or(0),
        })
    }
}

fn signal(pid: u32, sig: Signal) -> Result<()> {
    kill(Pid::from_raw(pid as i32), sig).map_err(|source| LabError::Signal {
        signal: sig,
        pid,
        source,
    })
}

/// Waits until `pid` has exited, up to `limit`.
fn wait_exit(pid: u32, limit: Duration) -> bool {
    wait_exit_until(pid, Instant::now() + limit, &|| false)
}

/// Waits until `pid` has exited, up to `end` or until `hurry` says so.
fn wait_exit_until(pid: u32, end: Instant, hurry: &dyn Fn() -> bool) -> bool {
    while Instant::now() < end && !hurry() {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(POLL);
    }
    !alive(pid)
}

fn free_tcp() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback TCP port")
}

fn free_udp() -> Result<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0").context("cannot bind a loopback UDP port")
}

fn addr_of<T>(s: &T, f: impl Fn(&T) -> std::io::Result<SocketAddr>) -> Result<String> {
    Ok(f(s)?.to_string())
}

/// Starts `binary args...` in its own session (so a Ctrl-C meant for the
/// shell does not reach the lab, and `kill` can take the node's whole
/// "server" — the node and every application it started — down at once),
/// with `env` added to its environment, logging to `log`.
///
/// In a namespace host the child joins the namespace (setns) before exec,
/// so its pid is the lab process itself and kill, SIGSTOP and the session
/// work as in the single stack.
fn spawn(
    binary: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    placement: &Placement,
) -> Result<u32> {
    let netns = match placement {
        Placement::Local => None,
        Placement::Namespace(p) => Some(
            fs::File::open(p).with_context(|| format!("cannot open namespace {}", p.display()))?,
        ),
    };
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .env(
            "RUST_LOG",
            std::env::var("BUSRIG_LAB_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn_in_new_session(netns)
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(child.id())
}

trait NewSession {
    fn spawn_in_new_session(
        &mut self,
        netns: Option<fs::File>,
    ) -> std::io::Result<std::process::Child>;
}

impl NewSession for Command {
    fn spawn_in_new_session(
        &mut self,
        netns: Option<fs::File>,
    ) -> std::io::Result<std::process::Child> {
        // SAFETY: setns and setsid are system calls, async-signal-safe;
        // nothing else runs between fork and exec.
        unsafe {
            self.pre_exec(move || {
                if let Some(ns) = &netns {
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                }
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

pub(crate) fn default_timeout(cfg: &ClusterConfig) -> Duration {
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

impl NodePorts {
    fn addrs(&self) -> Result<NodeAddrs> {
        Ok(NodeAddrs {
            private: addr_of(&self.private, UdpSocket::local_addr)?,
            public: addr_of(&self.public, UdpSocket::local_addr)?,
            admin: addr_of(&self.admin, TcpListener::local_addr)?,
            public_interface: None,
        })
    }
}

/// A node's addresses in the cluster file.
struct NodeAddrs {
    private: String,
    public: String,
    admin: String,
    /// Where its virtual IPs go (namespace hosts).
    public_interface: Option<&'static str>,
}

fn cluster_toml(
    name: &str,
    quorum: &str,
    profile: &str,
    portal: &str,
    nodes: &[NodeAddrs],
) -> String {
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
    let witness = quorum == "majority" && nodes.len() % 2 == 0;
    if quorum != "majority" {
        s += &format!("quorum-disk = \"{lun0}\"\n");
    }
    s += &format!("\n[quorum]\nmodel = \"{quorum}\"\n");
    if witness {
        s += &format!("witness = \"{lun0}\"\n");
    }
    s += &format!("\n[timing]\nprofile = \"{profile}\"\n");
    for (i, n) in nodes.iter().enumerate() {
        s += &format!(
            "\n[[node]]\nname = \"NODE{}\"\nprivate = \"{}\"\npublic = \"{}\"\nadmin = \"{}\"\n",
            i + 1,
            n.private,
            n.public,
            n.admin
        );
        if let Some(dev) = n.public_interface {
            s += &format!("public-interface = \"{dev}\"\n");
        }
    }
    s
}

/// SIGKILLs every process of the lab (and what the nodes started),
/// forgets their pids and returns their names.
fn kill_all(state: &mut LabState, dir: &Path) -> Vec<String> {
    let mut killed = Vec::new();
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
            killed.push(p.name.clone());
        }
    }
    let _ = state.save(dir);
    killed
}

/// Removes the lab's namespace hosts, if it has any (what `hosts.json`
/// records, see [`NetnsLab::teardown`]); fails naming what was left
/// because it did not carry the lab's marker.
fn teardown_hosts(dir: &Path) -> Result<()> {
    if let Hosts::Netns(mut n) = Hosts::load(dir)? {
        let left = n.teardown(dir)?;
        if !left.is_empty() {
            fail!(
                "left alone, as they do not match what this lab made: {}",
                left.join(", ")
            );
        }
    }
    Ok(())
}

/// Leaves nothing running behind an `up` that failed with `e` (`what` was
/// being done) or was interrupted.
fn abandon_up(state: &mut LabState, dir: &Path, e: LabError, what: &str) -> LabError {
    let mut stopped = kill_all(state, dir);
    if let Err(t) = teardown_hosts(dir) {
        tracing::warn!(error = %t.chain(), "could not remove the namespace hosts");
    }
    match e {
        LabError::Interrupted => {
            // The bus first, as it was started.
            stopped.rotate_right(1);
            LabError::UpInterrupted { stopped }
        }
        e => e.context(what),
    }
}

/// The cluster's groups and resources (`GET /catalog`) from the first
/// node that answers.
pub fn catalog(rt: &tokio::runtime::Runtime, cfg: &ClusterConfig) -> Result<Value> {
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
    fail!("no node answers")
}

/// The node group `g` is online on: its owner, when the owner itself
/// reports the group online.
pub fn group_online_on(
    rt: &tokio::runtime::Runtime,
    cfg: &ClusterConfig,
    g: &str,
) -> Option<String> {
    online_in(&catalog(rt, cfg).ok()?, g)
}

/// [`group_online_on`] as node `asked` sees it: a node cut off from the
/// others still answers, with its own view.
pub fn group_online_seen_by(
    rt: &tokio::runtime::Runtime,
    cfg: &ClusterConfig,
    asked: &str,
    g: &str,
) -> Option<String> {
    let id = cfg.node_id(asked)?;
    let addr = cfg.nodes[usize::from(id)].admin.to_string();
    let c = rt
        .block_on(admin::request(
            &addr,
            "GET",
            "/catalog",
            None,
            Some(&cfg.secret),
        ))
        .ok()?;
    online_in(&c, g)
}

/// The owner of group `g` in catalog `c`, when it reports the group online.
fn online_in(c: &Value, g: &str) -> Option<String> {
    let grp = &c["groups"][g];
    let owner = grp["owner"].as_str()?;
    (grp["state"]["state"] == "online" && grp["state"]["node"] == owner).then(|| owner.to_string())
}

/// A small runtime for the lab's admin requests.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

/// Polls `ok` until it holds, failing early (with its log) if `proc`
/// exits, and with [`LabError::Interrupted`] once `stop` says so.
fn wait_until(
    deadline: Instant,
    proc: &LabProcess,
    dir: &Path,
    stop: &dyn Fn() -> bool,
    mut ok: impl FnMut() -> bool,
) -> Result<()> {
    loop {
        if stop() {
            return Err(LabError::Interrupted);
        }
        if ok() {
            return Ok(());
        }
        if let Some(pid) = proc.pid {
            if !alive(pid) {
                fail!(
                    "{} exited; the end of {}:\n{}",
                    proc.name,
                    proc.log,
                    log_tail(&dir.join(&proc.log), 15)
                );
            }
        }
        if Instant::now() >= deadline {
            fail!(
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
pub(crate) async fn all_status(cfg: &ClusterConfig) -> Vec<Option<ClusterStatus>> {
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
pub(crate) fn formed(st: &[Option<ClusterStatus>], cfg: &ClusterConfig, names: &[String]) -> bool {
    let ids: Vec<usize> = names
        .iter()
        .filter_map(|n| cfg.node_id(n))
        .map(usize::from)
        .collect();
    let views: Vec<&ClusterStatus> = ids.iter().filter_map(|&i| st[i].as_ref()).collect();
    if views.is_empty()
        || views.len() != ids.len()
        || views.iter().any(|s| !s.member || s.writes_held)
    {
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

/// Each node's phase and arbitration, or that it does not answer.
fn node_states(st: &[Option<ClusterStatus>], cfg: &ClusterConfig) -> Vec<String> {
    st.iter()
        .zip(&cfg.nodes)
        .map(|(s, n)| match s {
            Some(s) => format!("{}: {} ({})", n.name, s.phase, s.arbitration),
            None => format!("{}: no answer", n.name),
        })
        .collect()
}

async fn wait_formed(
    state: &LabState,
    dir: &Path,
    cfg: &ClusterConfig,
    names: &[String],
    deadline: Instant,
    progress: &mut dyn FnMut(&[Option<ClusterStatus>]),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    loop {
        if stop() {
            return Err(LabError::Interrupted);
        }
        let st = all_status(cfg).await;
        if formed(&st, cfg, names) {
            return Ok(());
        }
        progress(&st);
        for n in names {
            let Some(p) = state.nodes.iter().find(|p| &p.name == n) else {
                continue;
            };
            if p.pid.is_some_and(|pid| !alive(pid)) {
                fail!(
                    "{} exited; the end of {}:\n{}",
                    p.name,
                    p.log,
                    log_tail(&dir.join(&p.log), 15)
                );
            }
        }
        if Instant::now() >= deadline {
            fail!("node states: {}", describe(&st, cfg));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each node's phase and arbitration step on one line, for failure messages.
pub(crate) fn describe(st: &[Option<ClusterStatus>], cfg: &ClusterConfig) -> String {
    node_states(st, cfg).join("; ")
}
