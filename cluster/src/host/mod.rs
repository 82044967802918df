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
//! decided by the pure [`ResourceHost`] (`machine`); [`run`] only observes,
//! performs its [`HostAction`]s and runs the group tasks, and
//! `tests/group_sim.rs` drives the same machine under seeded faults.

pub mod machine;
pub mod resources;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{ClusterConfig, NodeId};
use crate::db::{Change, DbSnapshot};
use crate::driver::{Command, NodeStatus};
use crate::placement::{RestartDecision, RestartTracker, Threshold};
use crate::resource::{
    group_key, put_json, resource_key, Catalog, GroupState, GroupStatus, ResourceState,
    ResourceStatus,
};

pub use machine::{HostAction, HostInput, ResourceHost, EVENTS_KEPT, EVENT_PREFIX};
use resources::{disk_indices, ResourceError, Running};

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
}

/// Why a resource did not come online; the message is its `reason` in
/// `resource/R/state` and, prefixed with the resource, the group's.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The resource was deleted from the catalog before it came online.
    #[error("deleted")]
    Deleted,
    /// The resource stayed online-pending past its pending timeout.
    #[error("still pending after {0:?}")]
    StillPending(Duration),
    /// The resource type's online entry point failed.
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

/// What the host needs from its node.
pub struct HostContext {
    pub cfg: Arc<ClusterConfig>,
    pub me: NodeId,
    /// The node's own folder: cluster disk proxy sockets live here.
    pub data_dir: std::path::PathBuf,
    pub commands: mpsc::UnboundedSender<Command>,
    pub status: watch::Receiver<NodeStatus>,
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

    /// Proposes `change` and waits for it to commit.
    pub async fn propose(&self, change: Change) -> Result<u64, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Propose(change, Some(tx)))
            .map_err(|_| CommitError::NotRunning)?;
        match tokio::time::timeout(crate::admin::change_timeout(&self.cfg), rx).await {
            Ok(Ok(r)) => Ok(r?),
            Ok(Err(_)) => Err(CommitError::Stopped),
            Err(_) => Err(CommitError::NotCommitted),
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
                HostAction::Event(text) => ctx.event(text).await,
                HostAction::PruneEvent(key) => {
                    // Asked once per snapshot: the next one shows the log
                    // as the deletes left it.
                    event_keys.retain(|k| *k != key);
                    let _ = ctx.propose(Change::Delete { key }).await;
                }
                HostAction::Failover { event, decision } => {
                    if failover_broken {
                        continue;
                    }
                    tracing::info!(group = %decision.group, reason = %decision.reason, "failover manager");
                    if let Some(text) = event {
                        ctx.event(text).await;
                    }
                    if let Err(e) = ctx.propose(decision.change).await {
                        tracing::warn!(group = %decision.group, error = %e, "failover manager change not committed");
                        failover_broken = true;
                    }
                }
                HostAction::ReportOffline(g) => {
                    tracing::info!(group = %g, "reporting a group this node no longer runs as offline");
                    ctx.report_group(&g, GroupStatus::Offline, None).await;
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
                    let task = tokio::spawn(group_task(ctx.clone(), g.clone(), ctx_rx, stop_rx));
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

/// One resource of a running group, with its poll times.
struct Live {
    name: String,
    running: Running,
    next_looks: Instant,
    next_is: Instant,
}

async fn group_task(
    ctx: Arc<HostContext>,
    group: String,
    mut catalog: watch::Receiver<Arc<Catalog>>,
    mut stop: watch::Receiver<bool>,
) {
    let me = ctx.name().to_string();
    // 1. The previous owner takes the group offline first.
    let pending_limit = Duration::from_secs(crate::resource::PENDING_TIMEOUT_SECS);
    let waited = Instant::now();
    loop {
        let busy = {
            let cat = catalog.borrow();
            cat.groups
                .get(&group)
                .and_then(|g| g.state.clone())
                .is_some_and(|s| {
                    s.node != me && ctx.members().contains(&s.node) && !s.state.is_down()
                })
        };
        if !busy {
            break;
        }
        if waited.elapsed() > pending_limit {
            tracing::warn!(%group, "previous owner did not report the group offline; going on");
            break;
        }
        tokio::select! {
            _ = catalog.changed() => {}
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    tracing::info!(%group, "bringing the group online");
    ctx.report_group(&group, GroupStatus::Pending, None).await;
    let cat = catalog.borrow().clone();
    let order = cat.online_order(&group);
    let indices = disk_indices(&cat);
    let mut live: Vec<Live> = Vec::new();
    let mut trackers: BTreeMap<String, RestartTracker> = BTreeMap::new();
    let t0 = Instant::now();

    // 2. Online in dependency order, restarting within the threshold.
    let mut failed: Option<String> = None;
    for r in &order {
        if !cat.wanted_online(r) {
            continue;
        }
        match online_with_restarts(&ctx, &cat, r, &indices, &mut trackers, t0).await {
            Ok(l) => live.push(l),
            Err(why) => {
                failed = Some(format!("{r}: {why}"));
                break;
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    if let Some(why) = failed {
        offline_all(&ctx, &mut live).await;
        tracing::warn!(%group, reason = %why, "group failed on this node");
        ctx.report_group(&group, GroupStatus::Failed, Some(why))
            .await;
        return;
    }
    if !*stop.borrow() {
        tracing::info!(%group, "group online");
        ctx.report_group(&group, GroupStatus::Online, None).await;
    }

    // 3. Poll until told to stop.
    // `resource fail` requests are a counter per resource: each increment
    // is one failure, even when several arrive between two looks.
    let fail_count = |c: &Catalog, r: &str| -> u64 {
        c.resources
            .get(r)
            .and_then(|x| x.fail_request.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut fails: BTreeMap<String, u64> = cat
        .resources
        .keys()
        .map(|r| (r.clone(), fail_count(&cat, r)))
        .collect();
    let mut owed: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let next = live
            .iter()
            .map(|l| l.next_looks.min(l.next_is))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.changed() => continue,
            _ = catalog.changed() => {}
            () = tokio::time::sleep_until(next) => {}
        }
        let cat = catalog.borrow().clone();
        let now = Instant::now();
        let mut failed_at: Option<(usize, String)> = None;
        // An administrator's `resource fail`.
        for r in cat.resources.keys() {
            let now_count = fail_count(&cat, r);
            let before = fails.insert(r.clone(), now_count).unwrap_or(0);
            if now_count > before {
                tracing::info!(resource = %r, requests = now_count - before, "administrator failure requests");
                *owed.entry(r.clone()).or_default() += now_count - before;
            }
        }
        owed.retain(|r, n| *n > 0 && cat.resources.contains_key(r));
        for (i, l) in live.iter().enumerate() {
            if let Some(n) = owed.get_mut(&l.name) {
                *n -= 1;
                failed_at = Some((i, "failed by the administrator".into()));
                break;
            }
        }
        // Resources added to the group (or deleted from it) since.
        if failed_at.is_none() {
            let gone: Vec<usize> = live
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    cat.resources
                        .get(&l.name)
                        .is_none_or(|r| r.spec.group != group)
                        || !cat.wanted_online(&l.name)
                })
                .map(|(i, _)| i)
                .collect();
            // Dependents first: `live` is in online order.
            for i in gone.into_iter().rev() {
                let l = live.remove(i);
                tracing::info!(%group, resource = %l.name, "resource set offline or removed");
                ctx.report_resource(&l.name, ResourceStatus::OfflinePending, None)
                    .await;
                l.running.stop(&ctx).await;
                if cat.resources.contains_key(&l.name) {
                    ctx.report_resource(&l.name, ResourceStatus::Offline, None)
                        .await;
                }
            }
            let indices = disk_indices(&cat);
            for r in cat.online_order(&group) {
                if live.iter().any(|l| l.name == r) || !cat.wanted_online(&r) {
                    continue;
                }
                let deps_up = cat.resources[&r]
                    .spec
                    .depends_on
                    .iter()
                    .all(|d| live.iter().any(|l| &l.name == d));
                if !deps_up {
                    continue;
                }
                match start_one(&ctx, &cat, &r, &indices).await {
                    Ok(l) => live.push(l),
                    Err(why) => {
                        tracing::warn!(%group, resource = %r, reason = %why, "resource did not come online");
                        // Counted like any failure: restarts within the
                        // threshold, then the group fails.
                        let spec = &cat.resources[&r].spec;
                        let threshold = Threshold {
                            count: spec.restart_threshold,
                            period: Duration::from_secs(spec.restart_period_secs),
                        };
                        let d = trackers
                            .entry(r.clone())
                            .or_insert_with(|| RestartTracker::new(threshold))
                            .on_failure(t0.elapsed());
                        if d == RestartDecision::FailGroup {
                            offline_all(&ctx, &mut live).await;
                            let why = format!("{r} used up its restart threshold: {why}");
                            tracing::warn!(%group, reason = %why, "group failed on this node");
                            ctx.report_group(&group, GroupStatus::Failed, Some(why))
                                .await;
                            return;
                        }
                        break;
                    }
                }
            }
        }
        for (i, l) in live.iter_mut().enumerate() {
            if failed_at.is_some() {
                break;
            }
            let Some(spec) = cat.resources.get(&l.name).map(|r| r.spec.clone()) else {
                continue;
            };
            let result = if now >= l.next_is {
                l.next_is = now + Duration::from_millis(spec.is_alive_ms);
                l.next_looks = now + Duration::from_millis(spec.looks_alive_ms);
                l.running.is_alive(&spec).await
            } else if now >= l.next_looks {
                l.next_looks = now + Duration::from_millis(spec.looks_alive_ms);
                l.running.looks_alive().await
            } else {
                Ok(())
            };
            if let Err(why) = result {
                failed_at = Some((i, why.to_string()));
                break;
            }
        }
        let Some((i, why)) = failed_at else { continue };
        let name = live[i].name.clone();
        tracing::warn!(%group, resource = %name, reason = %why, "resource failed");
        ctx.report_resource(&name, ResourceStatus::Failed, Some(why.clone()))
            .await;
        // The failed resource and everything that depends on it, in order.
        let mut affected: BTreeSet<String> = BTreeSet::from([name.clone()]);
        loop {
            let more: Vec<String> = cat
                .resources
                .iter()
                .filter(|(n, r)| {
                    !affected.contains(*n) && r.spec.depends_on.iter().any(|d| affected.contains(d))
                })
                .map(|(n, _)| n.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            affected.extend(more);
        }
        let spec = cat.resources.get(&name).map(|r| r.spec.clone());
        let threshold = spec
            .as_ref()
            .map(|s| Threshold {
                count: s.restart_threshold,
                period: Duration::from_secs(s.restart_period_secs),
            })
            .unwrap_or(Threshold::RESTART_DEFAULT);
        let decision = trackers
            .entry(name.clone())
            .or_insert_with(|| RestartTracker::new(threshold))
            .on_failure(t0.elapsed());
        // Offline the affected resources, dependents first.
        let mut keep = Vec::new();
        let mut down = Vec::new();
        for l in live.drain(..) {
            if affected.contains(&l.name) {
                down.push(l);
            } else {
                keep.push(l);
            }
        }
        live = keep;
        offline_all(&ctx, &mut down).await;
        match decision {
            RestartDecision::RestartLocally => {
                tracing::info!(%group, resource = %name, "restarting on this node");
                let mut broke = None;
                for r in order.iter().filter(|r| affected.contains(*r)) {
                    match start_one(&ctx, &cat, r, &indices).await {
                        Ok(l) => live.push(l),
                        Err(why) => {
                            broke = Some(format!("{r}: restart failed: {why}"));
                            break;
                        }
                    }
                }
                if let Some(why) = broke {
                    offline_all(&ctx, &mut live).await;
                    ctx.report_group(&group, GroupStatus::Failed, Some(why))
                        .await;
                    return;
                }
            }
            RestartDecision::FailGroup => {
                offline_all(&ctx, &mut live).await;
                let why = format!("{name} used up its restart threshold");
                tracing::warn!(%group, reason = %why, "group failed on this node");
                ctx.report_group(&group, GroupStatus::Failed, Some(why))
                    .await;
                return;
            }
        }
    }
    tracing::info!(%group, "taking the group offline");
    ctx.report_group(&group, GroupStatus::OfflinePending, None)
        .await;
    offline_all(&ctx, &mut live).await;
    ctx.report_group(&group, GroupStatus::Offline, None).await;
}

async fn start_one(
    ctx: &Arc<HostContext>,
    cat: &Catalog,
    r: &str,
    indices: &BTreeMap<String, u8>,
) -> Result<Live, OnlineError> {
    let spec = cat
        .resources
        .get(r)
        .map(|x| x.spec.clone())
        .ok_or(OnlineError::Deleted)?;
    ctx.report_resource(r, ResourceStatus::OnlinePending, None)
        .await;
    let limit = Duration::from_secs(spec.pending_timeout_secs);
    let idx = indices.get(r).copied().unwrap_or(1);
    match tokio::time::timeout(limit, Running::start(ctx, cat, r, &spec, idx)).await {
        Ok(Ok(running)) => {
            tracing::info!(resource = %r, kind = spec.kind.name(), "resource online");
            ctx.report_resource(r, ResourceStatus::Online, None).await;
            let now = Instant::now();
            Ok(Live {
                name: r.to_string(),
                running,
                next_looks: now + Duration::from_millis(spec.looks_alive_ms),
                next_is: now + Duration::from_millis(spec.is_alive_ms),
            })
        }
        Ok(Err(why)) => {
            ctx.report_resource(r, ResourceStatus::Failed, Some(why.to_string()))
                .await;
            Err(why.into())
        }
        Err(_) => {
            let why = OnlineError::StillPending(limit);
            ctx.report_resource(r, ResourceStatus::Failed, Some(why.to_string()))
                .await;
            Err(why)
        }
    }
}

async fn online_with_restarts(
    ctx: &Arc<HostContext>,
    cat: &Catalog,
    r: &str,
    indices: &BTreeMap<String, u8>,
    trackers: &mut BTreeMap<String, RestartTracker>,
    t0: Instant,
) -> Result<Live, OnlineError> {
    loop {
        match start_one(ctx, cat, r, indices).await {
            Ok(l) => return Ok(l),
            Err(why) => {
                let spec = cat.resources.get(r).map(|x| x.spec.clone());
                let threshold = spec
                    .map(|s| Threshold {
                        count: s.restart_threshold,
                        period: Duration::from_secs(s.restart_period_secs),
                    })
                    .unwrap_or(Threshold::RESTART_DEFAULT);
                let d = trackers
                    .entry(r.to_string())
                    .or_insert_with(|| RestartTracker::new(threshold))
                    .on_failure(t0.elapsed());
                if d == RestartDecision::FailGroup {
                    return Err(why);
                }
                tracing::info!(resource = %r, reason = %why, "online failed; retrying on this node");
            }
        }
    }
}

async fn offline_all(ctx: &Arc<HostContext>, live: &mut Vec<Live>) {
    while let Some(l) = live.pop() {
        ctx.report_resource(&l.name, ResourceStatus::OfflinePending, None)
            .await;
        l.running.stop(ctx).await;
        tracing::info!(resource = %l.name, "resource offline");
        ctx.report_resource(&l.name, ResourceStatus::Offline, None)
            .await;
    }
}
