//! The iSCSI portal (RFC 7143): listener, login, sessions, the full feature
//! phase, data transfer, task management and discovery.
//!
//! Modules, from the socket inwards:
//! - [`codec`]: PDU framing over a byte stream;
//! - [`login`]: the login phase, up to a session in the table;
//! - [`connection`]: the full feature phase of one connection: CmdSN
//!   ordering, commands, NOP keepalive, logout;
//! - [`transfer`]: write data collection (R2T) and read data / status PDUs;
//! - [`tmf`]: task management functions;
//! - [`discovery`]: Text requests, SendTargets;
//! - [`session`]: the session table and the CmdSN window;
//! - [`memory`]: the bytes held per connection and for the whole target;
//! - [`admission`]: connections per source address and in all.
//!
//! One [`Portal`] serves every configured target. Each accepted connection
//! runs in its own task; a protocol error closes only that connection.

pub mod admission;
pub mod codec;
pub mod connection;
pub mod discovery;
pub mod login;
pub mod memory;
pub mod poll;
pub mod session;
pub mod throttle;
pub mod tmf;
pub mod transfer;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{BusSpec, IscsiTuning, TargetDef};
use crate::fault::Faults;
use crate::scsi::{ResetKind, ScsiTarget};
use crate::tasks::{AbortBy, TaskRegistry};
use busrig_proto::pdu::login_status;
use session::SessionTable;

/// Threads that serve connections, each running a current-thread tokio
/// runtime until the set is dropped.
///
/// On a multi-threaded runtime every step of a command (socket read,
/// command task, blocking-pool I/O, response, socket write) may wake a
/// parked worker on another core; profiling showed those wake-ups, not
/// the SCSI work, dominating a 4 KiB command. A connection pinned to one
/// single-threaded scheduler runs all of its steps in turn on one thread;
/// several connections still use every core. With a spin window, each
/// thread polls its sockets briefly before it sleeps ([`poll`]).
pub struct IoThreads {
    handles: Vec<tokio::runtime::Handle>,
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl IoThreads {
    /// Starts `n` threads (0: one per CPU), each spinning for up to
    /// `poll` before it sleeps (zero: never).
    pub fn start(n: u32, poll: std::time::Duration) -> std::io::Result<IoThreads> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(poll::before_park)
                .build()?;
            let handle = rt.handle().clone();
            handles.push(handle.clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("busrig-io-{i}"))
                    .spawn(move || {
                        if let Err(e) = poll::install(poll, handle) {
                            tracing::warn!(error = %e, "cannot set up poll mode; this connection thread sleeps when idle");
                        }
                        rt.block_on(stop.cancelled())
                    })?,
            );
        }
        Ok(IoThreads {
            handles,
            stop,
            threads,
        })
    }

    /// The thread for the next connection, in turn.
    fn next(&self, cursor: &mut usize) -> Option<&tokio::runtime::Handle> {
        let h = self.handles.get(*cursor % self.handles.len().max(1));
        *cursor = cursor.wrapping_add(1);
        h
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One target behind the portal. A reconfiguration replaces it whole
/// (a new definition, the same SCSI target), so a holder of one always
/// sees a consistent definition.
pub struct PortalTarget {
    pub def: TargetDef,
    pub scsi: Arc<ScsiTarget>,
}

/// What bus status reports about a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    pub tsih: u16,
    pub initiator: String,
    pub isid: String,
    /// `None` for a discovery session.
    pub target: Option<String>,
    pub peer: String,
}

/// The iSCSI portal: targets, sessions and protocol settings.
pub struct Portal {
    /// The targets by index; the index is the target's identity in the
    /// session table, so a removed target leaves an empty slot and indexes
    /// are never reused (docs/semantics.md "Live reconfiguration").
    targets: RwLock<Vec<Option<Arc<PortalTarget>>>>,
    buses: Vec<BusSpec>,
    tuning: IscsiTuning,
    tasks: TaskRegistry,
    sessions: SessionTable,
    /// Injected faults, shared with the control plane and the executors.
    faults: Arc<Faults>,
    /// The address SendTargets reports when a connection has no local
    /// socket address of its own (in-process streams).
    advertised: Mutex<Option<SocketAddr>>,
    /// Cancelled when the portal shuts down.
    shutdown: CancellationToken,
    /// Bytes held for initiators by every connection (docs/limits.md).
    memory: Arc<memory::MemoryPool>,
    /// Connections per source address and in all.
    admission: Arc<admission::Admission>,
    /// Failed-login delays and the refusal log limit (`iscsi::throttle`).
    login_throttle: Mutex<throttle::LoginThrottle>,
    /// What live reconfigurations need besides the targets.
    registry: crate::reconfig::Registry,
}

impl Portal {
    pub fn new(
        targets: Vec<PortalTarget>,
        buses: Vec<BusSpec>,
        tuning: IscsiTuning,
        tasks: TaskRegistry,
        faults: Arc<Faults>,
        registry: crate::reconfig::Registry,
    ) -> Arc<Portal> {
        Arc::new(Portal {
            registry,
            login_throttle: Mutex::new(throttle::LoginThrottle::new(tuning.login_failures.clone())),
            targets: RwLock::new(targets.into_iter().map(|t| Some(Arc::new(t))).collect()),
            buses,
            tasks,
            sessions: SessionTable::new(),
            faults,
            advertised: Mutex::new(None),
            shutdown: CancellationToken::new(),
            memory: Arc::new(memory::MemoryPool::new(tuning.target_memory)),
            admission: admission::Admission::new(
                tuning.max_connections,
                tuning.max_connections_per_source,
            ),
            tuning,
        })
    }

    /// The targets there are now, in the order they were added.
    pub fn targets(&self) -> Vec<Arc<PortalTarget>> {
        self.slots().iter().flatten().cloned().collect()
    }

    /// The target with index `t`, unless it has been removed.
    pub fn target(&self, t: usize) -> Option<Arc<PortalTarget>> {
        self.slots().get(t).cloned().flatten()
    }

    fn slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<PortalTarget>>>> {
        self.targets.read().unwrap_or_else(|p| p.into_inner())
    }

    fn slots_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Arc<PortalTarget>>>> {
        self.targets.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a target (its name is unique: the caller checked under the
    /// reconfiguration lock) and returns its index.
    pub(crate) fn add_target(&self, target: PortalTarget) -> usize {
        let mut slots = self.slots_mut();
        slots.push(Some(Arc::new(target)));
        slots.len() - 1
    }

    /// Replaces the definition of target `t`, keeping its SCSI target.
    /// Returns the new definition, or `None` when there is no such target.
    pub(crate) fn update_target(
        &self,
        t: usize,
        change: impl FnOnce(&mut TargetDef),
    ) -> Option<TargetDef> {
        let mut slots = self.slots_mut();
        let slot = slots.get_mut(t)?;
        let old = slot.as_ref()?;
        let mut def = old.def.clone();
        change(&mut def);
        *slot = Some(Arc::new(PortalTarget {
            def: def.clone(),
            scsi: old.scsi.clone(),
        }));
        Some(def)
    }

    /// Empties the slot of target `t`: logins to it are refused from now
    /// on. Its sessions are the caller's to end.
    pub(crate) fn remove_target(&self, t: usize) -> Option<Arc<PortalTarget>> {
        self.slots_mut().get_mut(t)?.take()
    }

    /// The sessions of target `t` that `pred` picks.
    pub(crate) fn sessions_of(
        &self,
        t: usize,
        pred: impl Fn(&session::SessionHandle) -> bool,
    ) -> Vec<Arc<session::SessionHandle>> {
        self.sessions.select(|s| s.target == Some(t) && pred(s))
    }

    /// What live reconfigurations need (`crate::reconfig`).
    pub fn registry(&self) -> &crate::reconfig::Registry {
        &self.registry
    }

    pub fn buses(&self) -> &[BusSpec] {
        &self.buses
    }

    pub fn tuning(&self) -> &IscsiTuning {
        &self.tuning
    }

    pub fn tasks(&self) -> &TaskRegistry {
        &self.tasks
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The bytes every connection together holds for its initiator.
    pub fn memory(&self) -> &memory::MemoryPool {
        &self.memory
    }

    /// Which connections are served, per source and in all.
    pub fn admission(&self) -> &admission::Admission {
        &self.admission
    }

    /// The memory counters of the session with this TSIH.
    pub fn session_memory(&self, tsih: u16) -> Option<Arc<memory::ConnMemory>> {
        self.sessions.by_tsih(tsih).map(|s| s.memory.clone())
    }

    /// Ends every session of `initiator` (a `drop` or `cut` fault). Returns
    /// how many sessions were told to end.
    pub fn kill_sessions_of(&self, initiator: &str) -> usize {
        let victims = self
            .sessions
            .select(|s| s.initiator.eq_ignore_ascii_case(initiator));
        for s in &victims {
            s.kill.cancel();
        }
        victims.len()
    }

    /// The targets a reset of target `target` reaches: every target on its
    /// bus for parallel SCSI and FC-AL, only itself on a switched fabric
    /// (docs/semantics.md "Bus reset").
    pub fn reset_scope(&self, target: usize) -> (Vec<usize>, bool) {
        let Some(bus) = self.target(target).map(|t| t.def.bus) else {
            return (Vec::new(), false);
        };
        let whole_bus = self.buses[bus].topology.reset_reaches_whole_bus();
        if whole_bus {
            (self.targets_on_bus(bus), true)
        } else {
            (vec![target], false)
        }
    }

    fn targets_on_bus(&self, bus: usize) -> Vec<usize> {
        self.slots()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_ref().is_some_and(|t| t.def.bus == bus))
            .map(|(i, _)| i)
            .collect()
    }

    /// Resets the targets in `affected`: the tasks of all of them end
    /// first, then each target resets its LUNs with the unit attention of
    /// `kind_of(target)`.
    pub async fn reset_targets(
        &self,
        affected: &[usize],
        kind_of: impl Fn(usize) -> ResetKind,
        by: AbortBy<'_>,
    ) {
        let mut aborted = Vec::with_capacity(affected.len());
        // A target removed meanwhile has nothing left to reset.
        let affected: Vec<(usize, Arc<PortalTarget>)> = affected
            .iter()
            .filter_map(|t| Some((*t, self.target(*t)?)))
            .collect();
        for (_, pt) in &affected {
            let name = pt.def.name.clone();
            aborted.push(
                self.tasks
                    .abort_matching(by, |x| *x.nexus.target == *name)
                    .await,
            );
        }
        for ((t, pt), n) in affected.iter().zip(aborted) {
            pt.scsi.target_reset(kind_of(*t), by, n).await;
        }
    }

    /// A bus reset from the control plane: every target on bus `bus` gets
    /// a bus reset (29/02 on every nexus, SCSI-2 reservations cleared,
    /// persistent reservations kept). On a switched fabric there is no
    /// shared bus signal, so this resets each target on the fabric in turn.
    /// Returns how many targets were reset.
    pub async fn reset_bus(&self, bus: usize) -> usize {
        let affected = self.targets_on_bus(bus);
        let by = AbortBy::ControlPlane;
        tracing::info!(bus = %self.buses[bus].name, topology = %self.buses[bus].topology, targets = affected.len(), %by, "bus reset");
        self.faults
            .record(format!("bus reset of {} by {by}", self.buses[bus].name));
        self.reset_targets(&affected, |_| ResetKind::Bus, by).await;
        affected.len()
    }

    /// Refuses the login of an initiator whose path is cut by fault injection.
    fn check_path(&self, initiator: &str) -> Result<(), login::LoginFailure> {
        if self.faults.login_refused(initiator) {
            return Err(login::LoginFailure::Refused {
                status: login_status::SERVICE_UNAVAILABLE,
                reason: format!("the path of {initiator} is cut (fault injection)"),
            });
        }
        Ok(())
    }

    /// Sets the address reported in SendTargets for connections without a
    /// local socket address.
    pub fn set_advertised_address(&self, addr: SocketAddr) {
        *self.advertised.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    fn advertised_address(&self) -> Option<SocketAddr> {
        *self.advertised.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Index of the target named `name` (iSCSI names compare
    /// case-insensitively, RFC 7143 §4.2.7.1).
    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.slots().iter().position(|t| {
            t.as_ref()
                .is_some_and(|t| t.def.name.eq_ignore_ascii_case(name))
        })
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .sessions
            .select(|_| true)
            .iter()
            .map(|s| SessionInfo {
                tsih: s.tsih,
                initiator: s.initiator.clone(),
                isid: s.isid_hex(),
                // From the nexus: a session of a target being removed
                // reports its name until it has ended.
                target: s.nexus.as_ref().map(|n| n.target.to_string()),
                peer: s.peer.clone(),
            })
            .collect();
        v.sort_by_key(|s| s.tsih);
        v
    }

    /// Refuses a login that would put one initiator too many on the bus of
    /// target `t` (the bus's `max_initiators`). The status is 03/02 "Out of
    /// resources" (RFC 7143 §11.13.5: "the target has insufficient session,
    /// connection, or other resources"): the limit is a property of the
    /// emulated bus, not an error of the initiator, and 02/06 is about
    /// connections within one session.
    fn check_bus_room(&self, t: usize, initiator: &str) -> Result<(), login::LoginFailure> {
        self.check_path(initiator)?;
        let Some(bus) = self.target(t).map(|pt| pt.def.bus) else {
            return Err(login::LoginFailure::Refused {
                status: login_status::NOT_FOUND,
                reason: "the target has been removed".into(),
            });
        };
        let Some(max) = self.buses[bus].max_initiators else {
            return Ok(());
        };
        let on_bus: HashSet<usize> = self.targets_on_bus(bus).into_iter().collect();
        let present = self.sessions.initiators_on(&on_bus);
        if present.contains(initiator) || (present.len() as u64) < u64::from(max) {
            return Ok(());
        }
        Err(login::LoginFailure::Refused {
            status: login_status::OUT_OF_RESOURCES,
            reason: format!(
                "bus {} allows {max} initiators and {} are logged in",
                self.buses[bus].name,
                present.len()
            ),
        })
    }

    /// Serves one connection (login, then full feature phase) until it
    /// closes. Generic over the stream so tests can use in-memory pipes.
    pub async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: String,
        local: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        connection::serve(self, stream, peer, local).await
    }

    /// Accepts connections until `shutdown` resolves, then closes every
    /// session and waits for all connections to finish. Connections are
    /// served on `iscsi.io_threads` threads of their own (see
    /// [`IoThreads`]); the caller's runtime only accepts.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        if let Ok(addr) = listener.local_addr() {
            if self.advertised_address().is_none() {
                self.set_advertised_address(addr);
            }
        }
        let poll_window = std::time::Duration::from_micros(self.tuning.poll_us.into());
        let io = match IoThreads::start(self.tuning.io_threads, poll_window) {
            Ok(io) => Some(io),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start connection threads; serving on the caller's runtime");
                None
            }
        };
        let mut next_io = 0usize;
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let place = match self.admission.admit(peer.ip(), std::time::Instant::now()) {
                            Ok(place) => place,
                            Err(_) => {
                                // Logged (once per interval) by the admission.
                                drop(stream);
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        let local = stream.local_addr().ok();
                        let portal = self.clone();
                        match io.as_ref().and_then(|io| io.next(&mut next_io)).cloned() {
                            Some(handle) => match stream.into_std() {
                                Ok(std_stream) => {
                                    // Registered with the reactor of the thread that serves it.
                                    conns.spawn_on(async move {
                                        match tokio::net::TcpStream::from_std(std_stream) {
                                            Ok(stream) => {
                                                poll::watch(std::os::fd::AsFd::as_fd(&stream));
                                                portal.serve_connection(stream, peer.to_string(), local).await;
                                                drop(place);
                                            }
                                            Err(e) => tracing::warn!(peer = %peer, error = %e, "cannot serve connection"),
                                        }
                                    }, &handle);
                                }
                                Err(e) => tracing::warn!(peer = %peer, error = %e, "cannot hand the connection over"),
                            },
                            None => {
                                conns.spawn(async move {
                                    portal.serve_connection(stream, peer.to_string(), local).await;
                                    drop(place);
                                });
                            }
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: keep the portal up, back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        self.close_all();
        while conns.join_next().await.is_some() {}
        drop(io);
    }

    /// Ends every session and refuses further logins on open connections.
    pub fn close_all(&self) {
        self.shutdown.cancel();
        for s in self.sessions.select(|_| true) {
            s.kill.cancel();
        }
    }
}
