//! The resource types: how each one goes online, is polled, and goes
//! offline on this node (the Resource Monitor's resource DLLs).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use busrig_initiator::IscsiUrl;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::arbiter::{ArbOut, Arbiter, DiskResult};
use crate::config::{QuorumModel, Timing};
use crate::db::Change;
use crate::driver::shared::{data_isid, node_session_config, SharedDisk};
use crate::node::pr_key;
use crate::resource::{name_key, name_node_key, Catalog, ResourceSpec, ResourceType};

use super::vip::KernelAddress;
use super::{CommitError, HostContext};

/// Why a resource did not come online, failed a poll, or refused I/O. The
/// messages become the resource's `reason` in the database (`resource/R/state`).
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A poll named a resource this node does not run.
    #[error("not running on this node")]
    NotRunning,
    /// An ip-address resource's `address` property is not an IP address.
    #[error("bad address {0:?}")]
    BadAddress(String),
    /// The address could not be claimed: it is not configured on this node.
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: IpAddr,
        source: std::io::Error,
    },
    /// The address could not be added to the node's public interface.
    #[error(transparent)]
    Kernel(#[from] super::vip::VipError),
    /// A network-name resource without an ip-address resource to depend on.
    #[error("network name {0} has no ip-address dependency")]
    NoIpDependency(String),
    /// The name's registration did not commit.
    #[error("cannot register {name}: {source}")]
    Register { name: String, source: CommitError },
    /// A claimed address disappeared from this node (IsAlive).
    #[error("address {address} is gone: {source}")]
    AddressGone {
        address: IpAddr,
        source: std::io::Error,
    },
    /// A script entry point exited unsuccessfully.
    #[error("{path} {verb} exited with {status}")]
    ScriptFailed {
        path: String,
        verb: String,
        status: std::process::ExitStatus,
    },
    /// A script could not be run at all.
    #[error("cannot run {path}: {source}")]
    ScriptNotRun {
        path: String,
        source: std::io::Error,
    },
    /// A script entry point outlived its limit.
    #[error("{path} {verb} did not finish within {limit:?}")]
    ScriptTimeout {
        path: String,
        verb: String,
        limit: Duration,
    },
    /// A generic application's command could not be started.
    #[error("cannot start {command:?}: {source}")]
    AppNotStarted {
        command: String,
        source: std::io::Error,
    },
    /// The generic application's process ended.
    #[error("the application exited ({0})")]
    AppExited(std::process::ExitStatus),
    /// Waiting on the application's process failed.
    #[error("cannot check the application: {0}")]
    AppUnchecked(std::io::Error),
    /// The `probe-tcp` property is not a socket address.
    #[error("bad probe-tcp {0:?}")]
    BadProbeTcp(String),
    /// The TCP probe was refused.
    #[error("probe connect to {addr}: {source}")]
    ProbeRefused {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TCP probe did not connect in time.
    #[error("probe connect to {0} timed out")]
    ProbeTcpTimeout(SocketAddr),
    /// The probe command exited unsuccessfully.
    #[error("probe {command:?} exited with {status}")]
    ProbeFailed {
        command: String,
        status: std::process::ExitStatus,
    },
    /// The probe command could not be run.
    #[error("cannot run probe {command:?}: {source}")]
    ProbeNotRun {
        command: String,
        source: std::io::Error,
    },
    /// The probe command did not finish in time.
    #[error("probe {0:?} timed out")]
    ProbeTimeout(String),
    /// A physical disk's `disk` property is not an iSCSI URL.
    #[error("disk URL {url:?}: {source}")]
    BadDiskUrl {
        url: String,
        source: busrig_initiator::UrlError,
    },
    /// The disk proxy socket could not be served.
    #[error("cannot serve the disk proxy {path}: {source}")]
    ProxyNotServed {
        path: String,
        source: std::io::Error,
    },
    /// Another node won the disk's reservation.
    #[error("reservation not won: {0}")]
    NotWon(String),
    /// The disk's arbitration task ended before a result.
    #[error("disk arbitration ended")]
    ArbitrationEnded,
    /// The reservation was lost after it was won.
    #[error("reservation lost: {0}")]
    Lost(String),
    /// The task defending the reservation stopped.
    #[error("disk defense stopped")]
    DefenseStopped,
    /// The ownership stamp write met a reservation conflict.
    #[error("reservation conflict writing the ownership stamp")]
    StampConflict,
    /// The ownership stamp write failed.
    #[error("writing the ownership stamp: {0}")]
    StampFailed(String),
    /// The disk resource went away while I/O waited.
    #[error("the disk resource stopped")]
    DiskStopped,
    /// The lease stayed expired for the whole wait.
    #[error("the disk's lease did not come back within {0:?}")]
    LeaseNotBack(Duration),
}

/// A resource running on this node.
pub enum Running {
    Disk(DiskResource),
    Ip {
        _claim: UdpSocket,
        address: IpAddr,
        /// Set when the address was added to the public interface.
        kernel: Option<KernelAddress>,
    },
    Name {
        name: String,
        address: String,
    },
    App(AppResource),
    Script {
        path: String,
        env: Vec<(String, String)>,
    },
}

/// Environment variable suffix for a resource name.
fn env_name(r: &str) -> String {
    r.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment a group's applications and scripts get: which node and
/// group they run in, and the group's addresses, names and disks.
pub fn group_env(
    ctx: &HostContext,
    cat: &Catalog,
    group: &str,
    resource: &str,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("BUSRIG_NODE".to_string(), ctx.name().to_string()),
        ("BUSRIG_GROUP".to_string(), group.to_string()),
        ("BUSRIG_RESOURCE".to_string(), resource.to_string()),
        (
            "BUSRIG_INITIATOR_NAME".to_string(),
            ctx.cfg.initiator_name(ctx.me),
        ),
    ];
    let mut first_ip = None;
    let mut first_disk = None;
    for (name, r) in cat.members(group) {
        let key = env_name(name);
        match r.spec.kind {
            ResourceType::IpAddress => {
                if let Some(a) = r.spec.prop("address") {
                    first_ip.get_or_insert_with(|| a.to_string());
                    env.push((format!("BUSRIG_IP_{key}"), a.to_string()));
                }
            }
            ResourceType::PhysicalDisk => {
                // Applications reach the disk through the node's proxy
                // (the reservation-holding I_T nexus); the URL is for
                // information.
                let sock = format!("unix:{}", ctx.disk_socket(name).display());
                first_disk.get_or_insert_with(|| sock.clone());
                env.push((format!("BUSRIG_DISK_{key}"), sock));
                if let Some(d) = r.spec.prop("disk") {
                    env.push((format!("BUSRIG_DISK_URL_{key}"), d.to_string()));
                }
            }
            ResourceType::NetworkName => {
                if let Some(n) = r.spec.prop("name") {
                    env.push(("BUSRIG_NETWORK_NAME".to_string(), n.to_string()));
                }
            }
            _ => {}
        }
    }
    if let Some(ip) = first_ip {
        env.push(("BUSRIG_IP".to_string(), ip));
    }
    if let Some(d) = first_disk {
        env.push(("BUSRIG_DISK".to_string(), d));
    }
    env
}

impl Running {
    /// Brings resource `name` online; an error says why it could not.
    pub async fn start(
        ctx: &Arc<HostContext>,
        cat: &Catalog,
        name: &str,
        spec: &ResourceSpec,
        disk_index: u8,
    ) -> Result<Running, ResourceError> {
        match spec.kind {
            ResourceType::PhysicalDisk => {
                DiskResource::start(ctx, name, spec.prop("disk").unwrap_or_default(), disk_index)
                    .await
                    .map(Running::Disk)
            }
            ResourceType::IpAddress => {
                let a = spec.prop("address").unwrap_or_default();
                let address: IpAddr = a
                    .parse()
                    .map_err(|_| ResourceError::BadAddress(a.to_string()))?;
                let interface = ctx.cfg.nodes[usize::from(ctx.me)]
                    .public_interface
                    .as_deref();
                let kernel = match interface {
                    Some(i) => Some(KernelAddress::claim(address, i).await?),
                    None => None,
                };
                // Holding a socket on the address claims it on this node
                // and proves the address is configured here.
                match UdpSocket::bind(SocketAddr::new(address, 0)) {
                    Ok(claim) => Ok(Running::Ip {
                        _claim: claim,
                        address,
                        kernel,
                    }),
                    Err(source) => {
                        if let Some(k) = kernel {
                            k.release().await;
                        }
                        Err(ResourceError::Bind { address, source })
                    }
                }
            }
            ResourceType::NetworkName => {
                let n = spec.prop("name").unwrap_or_default().to_string();
                let address = spec
                    .depends_on
                    .iter()
                    .filter_map(|d| cat.resources.get(d))
                    .find(|r| r.spec.kind == ResourceType::IpAddress)
                    .and_then(|r| r.spec.prop("address"))
                    .ok_or_else(|| ResourceError::NoIpDependency(n.clone()))?
                    .to_string();
                // Who registers first, then the address: a registration
                // always names its node when it resolves.
                for (key, value) in [
                    (name_node_key(&n), ctx.name().to_string()),
                    (name_key(&n), address.clone()),
                ] {
                    ctx.propose(Change::Put { key, value })
                        .await
                        .map_err(|source| ResourceError::Register {
                            name: n.clone(),
                            source,
                        })?;
                }
                Ok(Running::Name { name: n, address })
            }
            ResourceType::GenericApplication => {
                let env = group_env(ctx, cat, &spec.group, name);
                AppResource::start(spec, env).map(Running::App)
            }
            ResourceType::GenericScript => {
                let path = spec.prop("script").unwrap_or_default().to_string();
                let env = group_env(ctx, cat, &spec.group, name);
                run_script(
                    &path,
                    "online",
                    &env,
                    Duration::from_secs(spec.pending_timeout_secs),
                )
                .await?;
                Ok(Running::Script { path, env })
            }
        }
    }

    /// The cheap check (LooksAlive).
    pub async fn looks_alive(&mut self) -> Result<(), ResourceError> {
        match self {
            Running::Disk(d) => d.check(),
            Running::Ip { .. } | Running::Name { .. } => Ok(()),
            Running::App(a) => a.running(),
            Running::Script { path, env } => {
                run_script(path, "looks-alive", env, Duration::from_secs(30)).await
            }
        }
    }

    /// The thorough check (IsAlive).
    pub async fn is_alive(&mut self, spec: &ResourceSpec) -> Result<(), ResourceError> {
        match self {
            Running::Disk(d) => d.is_alive().await,
            Running::Ip { address, .. } => UdpSocket::bind(SocketAddr::new(*address, 0))
                .map(|_| ())
                .map_err(|source| ResourceError::AddressGone {
                    address: *address,
                    source,
                }),
            Running::Name { .. } => Ok(()),
            Running::App(a) => {
                a.running()?;
                a.probe(spec).await
            }
            Running::Script { path, env } => {
                run_script(path, "is-alive", env, Duration::from_secs(60)).await
            }
        }
    }

    /// Takes the resource offline.
    pub async fn stop(self, ctx: &Arc<HostContext>) {
        match self {
            Running::Disk(d) => d.stop().await,
            Running::Ip { kernel, .. } => {
                if let Some(k) = kernel {
                    k.release().await;
                }
            }
            Running::Name { name, address } => {
                // Only remove the registration if it is still ours: the
                // address is the same on every node, so the registering
                // node decides (issue 16, defect 1: an old task removed
                // the new owner's registration).
                if let Some(db) = ctx.snapshot().await {
                    if is_our_registration(&db, &name, &address, ctx.name()) {
                        for key in [name_key(&name), name_node_key(&name)] {
                            if let Err(e) = ctx.propose(Change::Delete { key }).await {
                                tracing::warn!(%name, error = %e, "could not remove the name registration");
                                break;
                            }
                        }
                    }
                }
            }
            Running::App(a) => a.stop().await,
            Running::Script { path, env } => {
                if let Err(e) = run_script(&path, "offline", &env, Duration::from_secs(60)).await {
                    tracing::warn!(script = %path, error = %e, "offline entry point failed");
                }
            }
        }
    }
}

/// Whether `name` is registered to `address` by node `me` in `db`.
fn is_our_registration(db: &crate::db::DbSnapshot, name: &str, address: &str, me: &str) -> bool {
    db.get(&name_key(name)) == Some(address) && db.get(&name_node_key(name)) == Some(me)
}

/// Runs `path VERB`; exit status 0 is success.
async fn run_script(
    path: &str,
    verb: &str,
    env: &[(String, String)],
    limit: Duration,
) -> Result<(), ResourceError> {
    let mut cmd = Command::new(path);
    cmd.arg(verb)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(status)) => Err(ResourceError::ScriptFailed {
            path: path.into(),
            verb: verb.into(),
            status,
        }),
        Ok(Err(source)) => Err(ResourceError::ScriptNotRun {
            path: path.into(),
            source,
        }),
        Err(_) => Err(ResourceError::ScriptTimeout {
            path: path.into(),
            verb: verb.into(),
            limit,
        }),
    }
}

/// A generic application: a child process in its own process group.
pub struct AppResource {
    child: Child,
    pid: Option<u32>,
}

impl AppResource {
    fn start(
        spec: &ResourceSpec,
        env: Vec<(String, String)>,
    ) -> Result<AppResource, ResourceError> {
        let command = spec.prop("command").unwrap_or_default();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .envs(env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = spec.prop("cwd") {
            cmd.current_dir(dir);
        }
        // Its own process group, so offline reaches everything it started;
        // and it dies with the node (a killed node is a dead server).
        cmd.as_std_mut().process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|source| ResourceError::AppNotStarted {
            command: command.into(),
            source,
        })?;
        let pid = child.id();
        tracing::info!(command, pid, "application started");
        Ok(AppResource { child, pid })
    }

    fn running(&mut self) -> Result<(), ResourceError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(ResourceError::AppExited(s)),
            Err(e) => Err(ResourceError::AppUnchecked(e)),
        }
    }

    async fn probe(&mut self, spec: &ResourceSpec) -> Result<(), ResourceError> {
        if let Some(addr) = spec.prop("probe-tcp") {
            let a: SocketAddr = addr
                .parse()
                .map_err(|_| ResourceError::BadProbeTcp(addr.to_string()))?;
            return match tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(a),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(ResourceError::ProbeRefused { addr: a, source }),
                Err(_) => Err(ResourceError::ProbeTcpTimeout(a)),
            };
        }
        if let Some(p) = spec.prop("probe-command") {
            let out = tokio::time::timeout(
                Duration::from_secs(30),
                Command::new("sh")
                    .arg("-c")
                    .arg(p)
                    .stdin(Stdio::null())
                    .status(),
            )
            .await;
            return match out {
                Ok(Ok(s)) if s.success() => Ok(()),
                Ok(Ok(status)) => Err(ResourceError::ProbeFailed {
                    command: p.into(),
                    status,
                }),
                Ok(Err(source)) => Err(ResourceError::ProbeNotRun {
                    command: p.into(),
                    source,
                }),
                Err(_) => Err(ResourceError::ProbeTimeout(p.into())),
            };
        }
        Ok(())
    }

    async fn stop(mut self) {
        if let Some(pid) = self.pid {
            let pg = nix::unistd::Pid::from_raw(-(pid as i32));
            let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(pid, "application ignored SIGTERM; killing it");
                let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.wait().await;
            }
        }
    }
}

/// What the disk's arbitration task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DiskState {
    Arbitrating,
    /// Owned: writes may go out until `until` (the lease), and not after,
    /// whatever this task has managed to publish since (after a pause the
    /// proxy may run before this task does).
    Online {
        until: Instant,
    },
    /// Owned, but the lease ran out (a late defense, a pause): no writes
    /// until the next successful defense.
    Suspended,
    Lost(String),
}

/// A physical disk: reserved and defended by an [`Arbiter`] (the quorum
/// disk's challenge and defense, on this LUN alone), plus an ownership
/// stamp written while this node owns it.
pub struct DiskResource {
    disk: Arc<SharedDisk>,
    state: watch::Receiver<DiskState>,
    /// The cluster disk proxy for applications, while online.
    proxy: Option<crate::clusdisk::Server>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    stamp: String,
}

impl DiskResource {
    async fn start(
        ctx: &Arc<HostContext>,
        name: &str,
        url: &str,
        index: u8,
    ) -> Result<DiskResource, ResourceError> {
        let u = IscsiUrl::parse(url).map_err(|source| ResourceError::BadDiskUrl {
            url: url.into(),
            source,
        })?;
        let mut sc = node_session_config(&ctx.cfg, ctx.me);
        sc.isid = data_isid(ctx.me, index);
        // The witness of the majority model and data disks use the same
        // protocols; a majority cluster reserves data disks with PR.
        let model = match &ctx.cfg.quorum {
            QuorumModel::Majority { .. } => QuorumModel::DiskPr,
            m => m.clone(),
        };
        let scsi2 = matches!(model, QuorumModel::DiskScsi2);
        let disk = Arc::new(SharedDisk::new(u, sc, "data").reserving_after_reset(scsi2));
        let mut arb = Arbiter::new(&model, data_disk_timing(ctx.cfg.timing), pr_key(ctx.me));
        let (tx, rx) = watch::channel(DiskState::Arbitrating);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let d = disk.clone();
        let rname = name.to_string();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let now = || t0.elapsed();
            let mut queue: Vec<ArbOut> = arb.become_claimant(now());
            tracing::info!(resource = %rname, "physical disk: arbitrating for the reservation");
            loop {
                while !queue.is_empty() {
                    let outs = std::mem::take(&mut queue);
                    for o in outs {
                        match o {
                            ArbOut::Issue(op) => {
                                let r: DiskResult = d.execute_data(op).await;
                                queue.extend(arb.on_result(now(), r));
                            }
                            ArbOut::Won => {
                                tracing::info!(resource = %rname, "physical disk: reservation won")
                            }
                            ArbOut::Online => {
                                tracing::info!(resource = %rname, "physical disk: owned and online");
                                let until = lease_deadline(&arb, t0).unwrap_or_else(Instant::now);
                                let _ = tx.send(DiskState::Online { until });
                            }
                            ArbOut::Lost(why) => {
                                tracing::warn!(resource = %rname, %why, "physical disk: reservation lost");
                                let _ = tx.send(DiskState::Lost(why));
                                return;
                            }
                        }
                    }
                }
                // Writes only while the lease is valid.
                let announced = *tx.borrow() != DiskState::Arbitrating;
                if announced {
                    let want = match lease_deadline(&arb, t0) {
                        Some(until) if arb.is_acting_owner(now()) => DiskState::Online { until },
                        _ => DiskState::Suspended,
                    };
                    tx.send_if_modified(|s| {
                        if *s != want {
                            *s = want;
                            true
                        } else {
                            false
                        }
                    });
                }
                let wake = arb.next_deadline(now()).map(|d| t0 + d);
                tokio::select! {
                    _ = &mut stop_rx => {
                        if let Some(op) = arb.release() {
                            let _ = d.execute_data(op).await;
                        }
                        tracing::info!(resource = %rname, "physical disk: released");
                        return;
                    }
                    () = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))) => {
                        queue.extend(arb.tick(now()));
                    }
                }
            }
        });
        let mut res = DiskResource {
            disk: disk.clone(),
            state: rx.clone(),
            proxy: None,
            stop: Some(stop_tx),
            task,
            stamp: format!("busrig physical disk {name} owned by {}", ctx.name()),
        };
        let got = res
            .state
            .wait_for(|s| *s != DiskState::Arbitrating)
            .await
            .map(|s| s.clone());
        match got {
            Ok(DiskState::Online { .. } | DiskState::Suspended) => {
                res.write_stamp().await?;
                let path = ctx.disk_socket(name);
                let backend = Arc::new(ProxyBackend { disk, state: rx });
                res.proxy = Some(crate::clusdisk::Server::start(&path, backend).map_err(
                    |source| ResourceError::ProxyNotServed {
                        path: path.display().to_string(),
                        source,
                    },
                )?);
                Ok(res)
            }
            Ok(DiskState::Lost(why)) => Err(ResourceError::NotWon(why)),
            _ => Err(ResourceError::ArbitrationEnded),
        }
    }

    fn check(&self) -> Result<(), ResourceError> {
        match &*self.state.borrow() {
            DiskState::Lost(why) => Err(ResourceError::Lost(why.clone())),
            _ if self.task.is_finished() => Err(ResourceError::DefenseStopped),
            _ => Ok(()),
        }
    }

    async fn write_stamp(&self) -> Result<(), ResourceError> {
        self.check()?;
        if !may_write(&self.state.borrow()) {
            // Not acting owner right now: skip this write, the defense
            // decides whether the disk is still ours.
            return Ok(());
        }
        match self.disk.stamp_last_block(self.stamp.as_bytes()).await {
            DiskResult::Good | DiskResult::Data(_) => Ok(()),
            DiskResult::Conflict => Err(ResourceError::StampConflict),
            DiskResult::Failed(e) => Err(ResourceError::StampFailed(e)),
        }
    }

    async fn is_alive(&self) -> Result<(), ResourceError> {
        self.write_stamp().await
    }

    async fn stop(mut self) {
        // Applications lose the disk before the reservation goes.
        self.proxy = None;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A disk dropped without `stop` (its start abandoned at the pending
/// timeout or at a stop) ends its arbitration: left running, the task went
/// on challenging for the disk after the group left this node (issue 16,
/// defect 1).
impl Drop for DiskResource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a proxied request waits for a late defense.
const PROXY_WAIT: Duration = Duration::from_secs(5);

/// The timing data disks use: the profile's, except that sub-second
/// profiles (`fast`) get a 500 ms renewal with a challenge wait of four
/// renewals, so a renewal stuck behind a burst of application I/O does
/// not lapse the lease (the quorum disk carries no application I/O).
pub fn data_disk_timing(t: Timing) -> Timing {
    if t.renew >= Duration::from_secs(1) {
        return t;
    }
    let renew = Duration::from_millis(500);
    Timing {
        renew,
        pr_interval: renew,
        challenge_wait: renew * 4,
        online_delay: renew * 5,
        ..t
    }
}

/// When the arbiter's lease ends, as an instant, if it owns the disk.
fn lease_deadline(arb: &Arbiter, t0: Instant) -> Option<Instant> {
    match arb.role() {
        crate::arbiter::Role::Owner(o) => o.lease_until.map(|l| t0 + l),
        _ => None,
    }
}

/// Whether a write may go out now: online and inside the lease.
fn may_write(s: &DiskState) -> bool {
    matches!(s, DiskState::Online { until } if Instant::now() < *until)
}

/// Per-resource data disk index (its ISID qualifier), stable per name.
pub fn disk_indices(cat: &Catalog) -> BTreeMap<String, u8> {
    cat.resources
        .iter()
        .filter(|(_, r)| r.spec.kind == ResourceType::PhysicalDisk)
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), (i % 250) as u8 + 1))
        .collect()
}

/// The cluster disk proxy's view of a physical disk: I/O through the
/// node's data-disk session, only while the disk's lease is valid.
struct ProxyBackend {
    disk: Arc<SharedDisk>,
    state: watch::Receiver<DiskState>,
}

fn proxy_error(e: busrig_initiator::Error) -> crate::clusdisk::ClusDiskError {
    match e {
        busrig_initiator::Error::ReservationConflict => crate::clusdisk::ClusDiskError::Conflict,
        other => crate::clusdisk::ClusDiskError::Failed(other.to_string()),
    }
}

impl crate::clusdisk::Backend for ProxyBackend {
    /// I/O goes out only inside the disk's lease. While a defense is late
    /// (lease ran out, renewal pending) the request waits for it, up to
    /// `PROXY_WAIT`, as a cluster disk driver holds I/O during a
    /// reservation renewal; a lost disk fails at once.
    type Refusal = ResourceError;

    async fn may_io(&self) -> Result<(), ResourceError> {
        let mut rx = self.state.clone();
        let deadline = tokio::time::Instant::now() + PROXY_WAIT;
        loop {
            {
                let s = rx.borrow_and_update();
                match &*s {
                    DiskState::Online { until } if Instant::now() < *until => return Ok(()),
                    DiskState::Lost(why) => return Err(ResourceError::Lost(why.clone())),
                    _ => {}
                }
            }
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            match changed {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(ResourceError::DiskStopped),
                Err(_) => return Err(ResourceError::LeaseNotBack(PROXY_WAIT)),
            }
        }
    }

    async fn read(
        &self,
        lba: u64,
        blocks: u32,
    ) -> Result<bytes::Bytes, crate::clusdisk::ClusDiskError> {
        let d = self
            .disk
            .get()
            .await
            .map_err(|e| crate::clusdisk::ClusDiskError::Failed(e.to_string()))?;
        d.read(lba, blocks).await.map_err(proxy_error)
    }

    async fn write(
        &self,
        lba: u64,
        data: bytes::Bytes,
        fua: bool,
    ) -> Result<(), crate::clusdisk::ClusDiskError> {
        let d = self
            .disk
            .get()
            .await
            .map_err(|e| crate::clusdisk::ClusDiskError::Failed(e.to_string()))?;
        d.write(lba, data, fua).await.map_err(proxy_error)
    }

    async fn capacity(&self) -> Result<(u64, u32), crate::clusdisk::ClusDiskError> {
        let d = self
            .disk
            .get()
            .await
            .map_err(|e| crate::clusdisk::ClusDiskError::Failed(e.to_string()))?;
        d.capacity()
            .await
            .map(|c| (c.blocks, c.block_length))
            .map_err(proxy_error)
    }

    async fn flush(&self) -> Result<(), crate::clusdisk::ClusDiskError> {
        let d = self
            .disk
            .get()
            .await
            .map_err(|e| crate::clusdisk::ClusDiskError::Failed(e.to_string()))?;
        d.synchronize_cache().await.map_err(proxy_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The virtual IP is the same on every node, so a registration is ours
    /// only if we registered it (issue 16, defect 1: a resumed node's old
    /// task removed the new owner's registration and clients could not
    /// resolve the virtual server).
    #[test]
    fn a_registration_is_ours_only_if_this_node_made_it() {
        let mut db = crate::db::DbSnapshot::default();
        for (seq, (key, value)) in [
            (name_node_key("EVS1"), "NODE2"),
            (name_key("EVS1"), "127.0.3.1"),
        ]
        .into_iter()
        .enumerate()
        {
            let change = Change::Put {
                key,
                value: value.into(),
            };
            db.apply(seq as u64 + 1, &change).unwrap();
        }
        assert!(is_our_registration(&db, "EVS1", "127.0.3.1", "NODE2"));
        assert!(!is_our_registration(&db, "evs1", "127.0.3.1", "NODE1"));
        assert!(!is_our_registration(&db, "EVS1", "127.0.3.2", "NODE2"));
    }

    /// These messages are the `reason` of failed resources in the database
    /// and the event log, word for word as they were.
    #[test]
    fn resource_error_messages() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for (e, text) in [
            (
                ResourceError::BadAddress("x".into()),
                "bad address \"x\"".to_string(),
            ),
            (
                ResourceError::NoIpDependency("WEB".into()),
                "network name WEB has no ip-address dependency".into(),
            ),
            (
                ResourceError::ScriptTimeout {
                    path: "/s".into(),
                    verb: "online".into(),
                    limit: Duration::from_secs(3),
                },
                "/s online did not finish within 3s".into(),
            ),
            (
                ResourceError::ProbeTcpTimeout(addr),
                "probe connect to 127.0.0.1:9 timed out".into(),
            ),
            (
                ResourceError::Lost("preempted".into()),
                "reservation lost: preempted".into(),
            ),
            (
                ResourceError::LeaseNotBack(PROXY_WAIT),
                format!("the disk's lease did not come back within {PROXY_WAIT:?}"),
            ),
            (
                ResourceError::Register {
                    name: "WEB".into(),
                    source: CommitError::NotCommitted,
                },
                "cannot register WEB: not committed in time".into(),
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }
}
