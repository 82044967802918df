//! The resource host of one node: the Resource Monitor for the groups this
//! node owns, and, on the quorum owner, the Failover Manager's loop.
//!
//! It lives beside the node's event loop in the node process and talks to
//! it only through the admin channels: it reads the published
//! [`NodeStatus`], fetches the cluster database when its sequence number
//! moves, and proposes changes (owners, states, name registrations) as
//! global updates. So every decision is in the quorum log before any node
//! acts on it.
//!
//! For each group whose owner is this node the host runs a group task:
//! it waits until the previous owner reports the group offline (or has
//! left the cluster), brings the resources online in dependency order,
//! polls LooksAlive and IsAlive, restarts a failed resource (with the
//! resources that depend on it) up to its restart threshold, and reports
//! the group failed beyond it, which the Failover Manager turns into a
//! failover. When the owner changes, or the group is set offline, the task
//! takes the resources offline in reverse order. When the cluster service
//! stops, every group goes offline at once.
//!
//! Which group tasks run, and what the Failover Manager proposes, is
//! decided by the pure [`ResourceHost`] (`machine`); what a group task does
//! is decided by the pure [`GroupRunner`] (`group`). [`run`] and
//! `group_task` only observe, perform the machines' actions with the real
//! resources (`resources`) and feed back the results, and
//! `tests/group_sim.rs` drives the same machines under seeded faults.

pub mod group;
pub mod machine;
pub mod resources;
pub mod vip;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{ClusterConfig, NodeId};
use crate::db::{Change, DbSnapshot};
use crate::driver::{Command, NodePhase, NodeStatus};
use crate::resource::{
    group_key, put_json, resource_key, Catalog, GroupState, GroupStatus, ResourceState,
    ResourceStatus,
};

pub use group::{Check, GroupAction, GroupInput, GroupLog, GroupRunner, OnlineError};
pub use machine::{HostAction, HostInput, ResourceHost, EVENTS_KEPT, EVENT_PREFIX};
use resources::{ResourceError, Running};

/// Why a change the host proposed did not commit. The messages reach the
/// event log and, inside [`ResourceError`], resource state reasons.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The node's event loop is gone (the cluster service never started).
    #[error("the cluster service is not running")]
    NotRunning,
    /// The event loop stopped before the change was decided.
    #[error("the cluster service stopped")]
    Stopped,
    /// The change was not committed within the admin change timeout.
    #[error("not committed in time")]
    NotCommitted,
    /// The node refused the change (Global Update).
    #[error(transparent)]
    Refused(#[from] crate::driver::ProposeError),
    /// Not waited for: the cluster service is shutting down, and a commit
    /// may never come (the node may be between two service lives).
    #[error("not waited for: the cluster service is shutting down")]
    ShuttingDown,
}

/// What the host needs from its node.
#[derive(Clone)]
pub struct HostContext {
    pub cfg: Arc<ClusterConfig>,
    pub me: NodeId,
    /// The node's own folder: cluster disk proxy sockets live here.
    pub data_dir: std::path::PathBuf,
    pub commands: mpsc::UnboundedSender<Command>,
    pub status: watch::Receiver<NodeStatus>,
    /// The cluster service life (incarnation) these proposals belong to:
    /// the node refuses them once the service restarted, since the command
    /// channel outlives it ([`HostContext::for_life`]). `None`: any life.
    pub life: Option<u64>,
    /// True once the service is shutting down: proposals are then sent but
    /// not waited for.
    pub stopping: watch::Receiver<bool>,
}

impl HostContext {
    pub fn name(&self) -> &str {
        &self.cfg.nodes[usize::from(self.me)].name
    }

    /// Where physical-disk resource `r` serves its cluster disk proxy.
    pub fn disk_socket(&self, r: &str) -> std::path::PathBuf {
        let safe: String = r
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.data_dir.join(format!("disk-{safe}.sock"))
    }

    /// This context for what is decided in service life `incarnation`
    /// (a group task, one round of the host loop): its proposals are
    /// refused once the cluster service restarted, so a task that outlived
    /// its service commits nothing into the new membership's database
    /// (issue 16, defect 1).
    pub fn for_life(&self, incarnation: u64) -> Arc<HostContext> {
        Arc::new(HostContext {
            life: Some(incarnation),
            ..self.clone()
        })
    }

    /// Proposes `change` and waits for it to commit, but no longer than
    /// the change timeout, and not at all once the service is shutting
    /// down or while this life's node loop is stopped: a proposal queued
    /// while the cluster service waits to restart, or at shutdown, is never
    /// taken (issue 16: nodes did not stop in 20 s on SIGTERM, their groups
    /// waiting 5 s for each state record).
    pub async fn propose(&self, change: Change) -> Result<u64, CommitError> {
        let (tx, rx) = oneshot::channel();
        let command = match self.life {
            Some(incarnation) => Command::ProposeIn {
                incarnation,
                change,
                reply: tx,
            },
            None => Command::Propose(change, Some(tx)),
        };
        self.commands
            .send(command)
            .map_err(|_| CommitError::NotRunning)?;
        let mut stopping = self.stopping.clone();
        let mut status = self.status.clone();
        tokio::select! {
            r = tokio::time::timeout(crate::admin::change_timeout(&self.cfg), rx) => match r {
                Ok(Ok(r)) => Ok(r?),
                Ok(Err(_)) => Err(CommitError::Stopped),
                Err(_) => Err(CommitError::NotCommitted),
            },
            // A sender gone (Err) disables its branch.
            Ok(_) = stopping.wait_for(|s| *s) => Err(CommitError::ShuttingDown),
            // A later life's loop takes the command and refuses it.
            Ok(_) = status.wait_for(|s| s.phase == NodePhase::Stopped) => Err(CommitError::Stopped),
        }
    }

    /// This node's copy of the cluster database.
    pub async fn snapshot(&self) -> Option<DbSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Snapshot(tx)).ok()?;
        rx.await.ok()
    }

    fn members(&self) -> BTreeSet<String> {
        let st = self.status.borrow();
        st.view
            .as_ref()
            .map(|v| {
                v.members
                    .iter()
                    .map(|&m| self.cfg.nodes[usize::from(m)].name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends to the cluster event log (replicated like every change).
    pub async fn event(&self, text: String) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let key = format!(
            "{EVENT_PREFIX}{:013}-{}-{}",
            wall_ms(),
            self.name(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = self.propose(Change::Put { key, value: text }).await {
            tracing::debug!(error = %e, "event not logged");
        }
    }

    async fn report_group(&self, group: &str, state: GroupStatus, reason: Option<String>) {
        if matches!(
            state,
            GroupStatus::Online | GroupStatus::Offline | GroupStatus::Failed
        ) {
            let why = reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            self.event(format!("group {group} {state} on {}{why}", self.name()))
                .await;
        }
        let st = GroupState {
            state,
            node: self.name().into(),
            reason,
        };
        if let Err(e) = self.propose(put_json(group_key(group, "state"), &st)).await {
            tracing::warn!(%group, %state, error = %e, "could not record the group state");
        }
    }

    async fn report_resource(&self, r: &str, state: ResourceStatus, reason: Option<String>) {
        if state == ResourceStatus::Failed {
            let why = reason.as_deref().unwrap_or("failed");
            self.event(format!("resource {r} failed on {}: {why}", self.name()))
                .await;
        }
        let st = ResourceState {
            state,
            node: self.name().into(),
            reason,
        };
        if let Err(e) = self.propose(put_json(resource_key(r, "state"), &st)).await {
            tracing::warn!(resource = %r, %state, error = %e, "could not record the resource state");
        }
    }
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The UTC hour, for failback windows.
fn utc_hour() -> u8 {
    ((wall_ms() / 3_600_000) % 24) as u8
}

struct GroupTask {
    catalog: watch::Sender<Arc<Catalog>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the host until `shutdown` completes (every group is then taken
/// offline): the driver of a [`ResourceHost`], which makes every decision
/// from what this loop observes.
pub async fn run(ctx: Arc<HostContext>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut host = ResourceHost::new(ctx.me, rand::random());
    let mut tasks: BTreeMap<String, GroupTask> = BTreeMap::new();
    let mut status = ctx.status.clone();
    let mut last_seq = u64::MAX;
    let mut catalog = Arc::new(Catalog::default());
    let mut event_keys: Vec<String> = Vec::new();
    let period = (ctx.cfg.timing.heartbeat * 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            r = status.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let st = status.borrow_and_update().clone();
        if !ResourceHost::is_active(&st) {
            last_seq = u64::MAX;
        } else if st.db_seq != last_seq || catalog.groups.is_empty() {
            if let Some(db) = ctx.snapshot().await {
                last_seq = db.seq;
                catalog = Arc::new(Catalog::from_db(&db));
                event_keys = db
                    .entries
                    .range(EVENT_PREFIX.to_string()..)
                    .take_while(|(k, _)| k.starts_with(EVENT_PREFIX))
                    .map(|(k, _)| k.clone())
                    .collect();
            }
        }
        // Finished tasks (failed groups) go away.
        tasks.retain(|g, t| {
            if t.task.is_finished() {
                tracing::debug!(group = %g, "group task ended");
                false
            } else {
                true
            }
        });
        let running: BTreeSet<String> = tasks.keys().cloned().collect();
        // What this round decides belongs to this service life.
        let life = ctx.for_life(st.incarnation);
        let actions = host.step(
            &ctx.cfg,
            HostInput {
                status: &st,
                catalog: &catalog,
                event_keys: &event_keys,
                running: &running,
                now_ms: wall_ms(),
                hour: utc_hour(),
            },
        );
        let mut failover_broken = false;
        for a in actions {
            match a {
                HostAction::StopAll => {
                    tracing::warn!("cluster service not running: taking every group offline");
                    stop_all(&mut tasks).await;
                }
                HostAction::Event(text) => life.event(text).await,
                HostAction::PruneEvent(key) => {
                    // Asked once per snapshot: the next one shows the log
                    // as the deletes left it.
                    event_keys.retain(|k| *k != key);
                    let _ = life.propose(Change::Delete { key }).await;
                }
                HostAction::Failover { event, decision } => {
                    if failover_broken {
                        continue;
                    }
                    tracing::info!(group = %decision.group, reason = %decision.reason, "failover manager");
                    if let Some(text) = event {
                        life.event(text).await;
                    }
                    if let Err(e) = life.propose(decision.change).await {
                        tracing::warn!(group = %decision.group, error = %e, "failover manager change not committed");
                        failover_broken = true;
                    }
                }
                HostAction::ReportOffline(g) => {
                    tracing::info!(group = %g, "reporting a group this node no longer runs as offline");
                    life.report_group(&g, GroupStatus::Offline, None).await;
                }
                HostAction::Update(g) => {
                    if let Some(t) = tasks.get(&g) {
                        let _ = t.catalog.send(catalog.clone());
                    }
                }
                HostAction::Stop(g) => {
                    if let Some(t) = tasks.get(&g) {
                        let _ = t.stop.send(true);
                    }
                }
                HostAction::Start(g) => {
                    let (ctx_tx, ctx_rx) = watch::channel(catalog.clone());
                    let (stop_tx, stop_rx) = watch::channel(false);
                    let task = tokio::spawn(group_task(life.clone(), g.clone(), ctx_rx, stop_rx));
                    tasks.insert(
                        g,
                        GroupTask {
                            catalog: ctx_tx,
                            stop: stop_tx,
                            task,
                        },
                    );
                }
            }
        }
    }
    stop_all(&mut tasks).await;
}

async fn stop_all(tasks: &mut BTreeMap<String, GroupTask>) {
    for t in tasks.values() {
        let _ = t.stop.send(true);
    }
    for (g, t) in std::mem::take(tasks) {
        if tokio::time::timeout(Duration::from_secs(30), t.task)
            .await
            .is_err()
        {
            tracing::warn!(group = %g, "group did not go offline in 30 s");
        }
    }
}

/// Runs group `group` here: the driver of its [`GroupRunner`], which makes
/// every decision. It performs the runner's actions with the real
/// resources (`resources`), feeds back their results, and wakes it at its
/// deadlines and on catalog changes and stop requests.
async fn group_task(
    ctx: Arc<HostContext>,
    group: String,
    mut catalog: watch::Receiver<Arc<Catalog>>,
    mut stop: watch::Receiver<bool>,
) {
    let t0 = Instant::now();
    let now = || t0.elapsed();
    let first = catalog.borrow_and_update().clone();
    let mut members = ctx.members();
    let mut runner = GroupRunner::new(&group, ctx.name(), first, members.clone(), now());
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut stop_fed = false;
    let mut actions = runner.begin(now());
    loop {
        let mut result = None;
        for a in actions {
            let deadline = runner.wake_at().map(|d| t0 + d);
            if let Some(input) = perform(&ctx, &group, deadline, &mut stop, &mut running, a).await {
                result = Some(input);
            }
        }
        if runner.is_done() {
            break;
        }
        // The view's members, then a stop asked for during an operation
        // (the runner acts on it after the operation's result), then the
        // input; the first two only inform the runner.
        let mut inputs = Vec::with_capacity(3);
        let mut early_stop = false;
        let input = match result {
            Some(input) => {
                if *stop.borrow() && !stop_fed {
                    stop_fed = true;
                    early_stop = true;
                }
                input
            }
            None => {
                let wake = runner.wake_at().map(|d| t0 + d);
                tokio::select! {
                    r = stop.changed(), if !stop_fed => {
                        if r.is_err() || *stop.borrow() {
                            stop_fed = true;
                            GroupInput::Stop
                        } else {
                            actions = Vec::new();
                            continue;
                        }
                    }
                    // After a stop the runner only takes its resources
                    // offline: it needs no catalog.
                    r = catalog.changed(), if !stop_fed => {
                        if r.is_err() {
                            // The host is gone: take the group offline.
                            stop_fed = true;
                            GroupInput::Stop
                        } else {
                            GroupInput::Catalog(catalog.borrow_and_update().clone())
                        }
                    }
                    () = sleep_until_some(wake) => GroupInput::Wake,
                }
            }
        };
        let m = ctx.members();
        if m != members {
            members = m.clone();
            inputs.push(GroupInput::Members(m));
        }
        if early_stop {
            inputs.push(GroupInput::Stop);
        }
        inputs.push(input);
        actions = inputs
            .into_iter()
            .flat_map(|i| runner.handle(now(), i))
            .collect();
    }
    tracing::debug!(%group, "group runner done");
}

/// Completes once a stop is asked for (or the host is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Performs one action; an operation returns its result for the runner.
async fn perform(
    ctx: &Arc<HostContext>,
    group: &str,
    deadline: Option<Instant>,
    stop: &mut watch::Receiver<bool>,
    running: &mut BTreeMap<String, Running>,
    action: GroupAction,
) -> Option<GroupInput> {
    match action {
        GroupAction::ReportGroup { state, reason } => {
            ctx.report_group(group, state, reason).await;
            None
        }
        GroupAction::ReportResource {
            resource,
            state,
            reason,
        } => {
            ctx.report_resource(&resource, state, reason).await;
            None
        }
        GroupAction::Log(line) => {
            log(group, line);
            None
        }
        GroupAction::Start {
            resource,
            spec,
            disk_index,
            catalog,
        } => {
            // The runner's wake-up is the pending deadline: past it the
            // start is abandoned (dropped) and the runner told. A stop
            // abandons it too: the group goes offline at once instead of
            // after the start (a disk's arbitration) has run its course.
            let started = tokio::select! {
                r = Running::start(ctx, &catalog, &resource, &spec, disk_index) => Some(Ok(r)),
                () = sleep_until_some(deadline) => None,
                () = stopped(stop) => Some(Err(())),
            };
            Some(match started {
                Some(Ok(Ok(r))) => {
                    running.insert(resource.clone(), r);
                    GroupInput::Started {
                        resource,
                        result: Ok(()),
                    }
                }
                Some(Ok(Err(e))) => GroupInput::Started {
                    resource,
                    result: Err(e.to_string()),
                },
                Some(Err(())) => GroupInput::Started {
                    resource,
                    result: Err("abandoned: the group is going offline".into()),
                },
                None => GroupInput::Wake,
            })
        }
        GroupAction::Stop { resource } => {
            if let Some(r) = running.remove(&resource) {
                r.stop(ctx).await;
            }
            Some(GroupInput::Stopped { resource })
        }
        GroupAction::Poll {
            resource,
            check,
            spec,
        } => {
            let result = match running.get_mut(&resource) {
                Some(r) => match check {
                    Check::LooksAlive => r.looks_alive().await,
                    Check::IsAlive => r.is_alive(&spec).await,
                },
                None => Err(ResourceError::NotRunning),
            };
            Some(GroupInput::Polled {
                resource,
                result: result.map_err(|e| e.to_string()),
            })
        }
        GroupAction::Done => None,
    }
}

/// Writes a runner's log line.
fn log(group: &str, line: GroupLog) {
    match line {
        GroupLog::PreviousOwnerLate => {
            tracing::warn!(%group, "previous owner did not report the group offline; going on")
        }
        GroupLog::BringingOnline => tracing::info!(%group, "bringing the group online"),
        GroupLog::GroupOnline => tracing::info!(%group, "group online"),
        GroupLog::GroupFailed { reason } => {
            tracing::warn!(%group, %reason, "group failed on this node")
        }
        GroupLog::TakingOffline => tracing::info!(%group, "taking the group offline"),
        GroupLog::ResourceOnline { resource, kind } => {
            tracing::info!(%resource, kind = kind.name(), "resource online")
        }
        GroupLog::OnlineRetry { resource, reason } => {
            tracing::info!(%resource, %reason, "online failed; retrying on this node")
        }
        GroupLog::FailRequests { resource, requests } => {
            tracing::info!(%resource, requests, "administrator failure requests")
        }
        GroupLog::ResourceRemoved { resource } => {
            tracing::info!(%group, %resource, "resource set offline or removed")
        }
        GroupLog::DidNotStart { resource, reason } => {
            tracing::warn!(%group, %resource, %reason, "resource did not come online")
        }
        GroupLog::ResourceFailed { resource, reason } => {
            tracing::warn!(%group, %resource, %reason, "resource failed")
        }
        GroupLog::Restarting { resource } => {
            tracing::info!(%group, %resource, "restarting on this node")
        }
        GroupLog::ResourceLeftFailed { resource } => tracing::warn!(
            %group,
            %resource,
            "resource used up its restart threshold; it does not affect the group, which stays online"
        ),
        GroupLog::ResourceOffline { resource } => tracing::info!(%resource, "resource offline"),
    }
}
