//! One group's Resource Monitor as a pure state machine.
//!
//! A [`GroupRunner`] runs one group on this node from the moment the
//! [`ResourceHost`](super::ResourceHost) starts its task until the group is
//! offline or failed here. It waits for the previous owner to report the
//! group down (or to leave the cluster, or for the pending timeout), brings
//! the resources online in dependency order, polls LooksAlive and IsAlive
//! at each resource's intervals, counts failures (polls, failed onlines,
//! the administrator's `resource fail` counter) against the restart
//! threshold, restarts a failed resource with its dependents, fails the
//! group beyond the threshold (unless the resource does not affect the
//! group), and takes the resources offline in reverse order when told to
//! stop.
//!
//! It does no I/O and reads no clock: [`GroupRunner::handle`] takes the
//! time and one [`GroupInput`] and returns [`GroupAction`]s. At most one
//! action is an operation on a resource (start, stop, poll), always the
//! last one; the driver performs it and feeds back its result before
//! anything else. While a start is outstanding, [`GroupRunner::wake_at`]
//! is its pending deadline: if that passes first, the driver abandons the
//! start and feeds [`GroupInput::Wake`]. The async `group_task` in `super`
//! is such a driver, and `tests/group_sim.rs` is another
//! (`docs/architecture.md` "Pure cores and drivers").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::placement::{RestartDecision, RestartTracker, Threshold};
use crate::resource::{
    Catalog, GroupStatus, ResourceSpec, ResourceStatus, ResourceType, PENDING_TIMEOUT_SECS,
};

use super::resources::disk_indices;

/// How often the wait for the previous owner looks again without news.
pub const WAIT_POLL: Duration = Duration::from_millis(200);
/// How far ahead the next wake-up is when no resource is online to poll.
pub const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// The reason of an administrator's `resource fail`.
pub const ADMIN_FAILURE: &str = "failed by the administrator";

/// Why a resource did not come online; the message is its `reason` in
/// `resource/R/state` and, prefixed with the resource, the group's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnlineError {
    /// The resource was deleted from the catalog before it came online.
    #[error("deleted")]
    Deleted,
    /// The resource stayed online-pending past its pending timeout.
    #[error("still pending after {0:?}")]
    StillPending(Duration),
    /// The resource type's online entry point failed (its message).
    #[error("{0}")]
    Resource(String),
}

/// Which poll to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The cheap check, every `looks-alive-ms`.
    LooksAlive,
    /// The thorough check, every `is-alive-ms` (it also counts as a look).
    IsAlive,
}

/// What happened, for the driver and the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupInput {
    /// A newer catalog.
    Catalog(Arc<Catalog>),
    /// The names of the nodes in the current view.
    Members(BTreeSet<String>),
    /// The group is to go offline here (owner changed, set offline, the
    /// cluster service stops).
    Stop,
    /// The start of `resource` finished: `Err` carries the entry point's
    /// message.
    Started {
        resource: String,
        result: Result<(), String>,
    },
    /// The stop of `resource` finished.
    Stopped { resource: String },
    /// A poll of `resource` finished.
    Polled {
        resource: String,
        result: Result<(), String>,
    },
    /// [`GroupRunner::wake_at`] passed (an outstanding start is abandoned).
    Wake,
}

/// A line for the node's log; the driver writes it with `tracing` at the
/// level each variant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLog {
    /// warn: the previous owner did not report offline within the limit.
    PreviousOwnerLate,
    /// info: leaving the wait.
    BringingOnline,
    /// info: every wanted resource is online.
    GroupOnline,
    /// warn: the group failed here.
    GroupFailed { reason: String },
    /// info: a stop was requested.
    TakingOffline,
    /// info: a resource came online.
    ResourceOnline {
        resource: String,
        kind: ResourceType,
    },
    /// info: an initial online failed within the threshold.
    OnlineRetry { resource: String, reason: String },
    /// info: new `resource fail` requests.
    FailRequests { resource: String, requests: u64 },
    /// info: a resource was set offline or left the group.
    ResourceRemoved { resource: String },
    /// warn: a resource added while online did not start.
    DidNotStart { resource: String, reason: String },
    /// warn: a poll failed, or the administrator failed a resource.
    ResourceFailed { resource: String, reason: String },
    /// info: restarting a failed resource here.
    Restarting { resource: String },
    /// warn: a resource that does not affect the group used up its
    /// threshold: it stays failed, the group stays online.
    ResourceLeftFailed { resource: String },
    /// info: a resource went offline.
    ResourceOffline { resource: String },
}

/// One thing for the driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAction {
    /// Record the group's state (and log the event for online, offline
    /// and failed).
    ReportGroup {
        state: GroupStatus,
        reason: Option<String>,
    },
    /// Record a resource's state (and log the event for failed).
    ReportResource {
        resource: String,
        state: ResourceStatus,
        reason: Option<String>,
    },
    /// Write a line to the node's log.
    Log(GroupLog),
    /// Bring `resource` online with `spec`, reading `catalog` (network
    /// names find their address, applications their environment there);
    /// feed back [`GroupInput::Started`].
    Start {
        resource: String,
        spec: Box<ResourceSpec>,
        disk_index: u8,
        catalog: Arc<Catalog>,
    },
    /// Take `resource` offline; feed back [`GroupInput::Stopped`].
    Stop { resource: String },
    /// Poll `resource`; feed back [`GroupInput::Polled`].
    Poll {
        resource: String,
        check: Check,
        spec: Box<ResourceSpec>,
    },
    /// The task is over: the group is offline or failed here.
    Done,
}

impl GroupAction {
    /// Whether the driver must feed back a result before anything else.
    pub fn is_operation(&self) -> bool {
        matches!(
            self,
            GroupAction::Start { .. } | GroupAction::Stop { .. } | GroupAction::Poll { .. }
        )
    }
}

/// An online resource and its next poll times.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    name: String,
    next_looks: Duration,
    next_is: Duration,
}

/// Why a start was asked for, which says what its result leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartFor {
    /// Bringing the group online: `order[index]`, retried within its
    /// threshold.
    Online { index: usize },
    /// A resource added (or set online) while the group is online; the
    /// round goes on at `order_pos` of the round's order.
    Added { order_pos: usize },
    /// Restarting a failed resource and its dependents: the rest to go.
    Restart { rest: Vec<String> },
}

/// How a resource is taken offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// Offline-pending, stop, offline: the group goes down or restarts.
    Offline,
    /// A resource set offline or removed from the group (reported offline
    /// only if still in the catalog).
    Removed,
}

/// What follows when the resources being stopped are all offline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AfterStop {
    /// Report the group offline and end.
    GroupOffline,
    /// Report the group failed and end (`warn`: also log it).
    GroupFailed { reason: String, warn: bool },
    /// A resource failed and the affected ones are down: restart them, or
    /// fail the group.
    Failure {
        name: String,
        affected: BTreeSet<String>,
        decision: RestartDecision,
    },
    /// The round's removals are done: start what was added.
    RoundAdds,
}

/// Where the runner is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting since `since` for the previous owner to report the group
    /// down; looked last at `looked`.
    Waiting { since: Duration, looked: Duration },
    /// A start is outstanding, due by `deadline`.
    Starting {
        resource: String,
        /// Its spec when asked (none: deleted).
        spec: Option<Box<ResourceSpec>>,
        deadline: Duration,
        limit: Duration,
        purpose: StartFor,
    },
    /// Online (or partly, while stopping), waiting for the next round.
    Idle,
    /// A stop of `current` is outstanding; `rest` go next (last first).
    Stopping {
        current: String,
        kind: StopKind,
        rest: Vec<Live>,
        then: AfterStop,
    },
    /// The poll of `live[index]` is outstanding.
    Polling { index: usize },
    /// Over.
    Done,
}

/// One group's Resource Monitor on this node.
#[derive(Debug, Clone)]
pub struct GroupRunner {
    group: String,
    me: String,
    phase: Phase,
    stop: bool,
    /// The newest catalog.
    catalog: Arc<Catalog>,
    members: BTreeSet<String>,
    /// The catalog the group came online with, its order and disk indices
    /// (restarts follow that order).
    base: Arc<Catalog>,
    order: Vec<String>,
    indices: BTreeMap<String, u8>,
    /// The time failures count from (when the wait ended).
    t0: Duration,
    live: Vec<Live>,
    trackers: BTreeMap<String, RestartTracker>,
    /// `resource fail` counters seen, and failures still owed for them.
    fails: BTreeMap<String, u64>,
    owed: BTreeMap<String, u64>,
    /// Resources that do not affect the group and used up their
    /// threshold: they stay failed until set offline and online again.
    left_failed: BTreeSet<String>,
    /// The current poll round: its time, catalog, order and indices.
    round_now: Duration,
    round_cat: Arc<Catalog>,
    /// The catalog `round_order` and `round_indices` were worked out for.
    round_for: Option<Arc<Catalog>>,
    /// A restart brought resources online without asking whether they
    /// are wanted: the next round checks `live` even on the same catalog.
    recheck_live: bool,
    round_order: Vec<String>,
    round_indices: BTreeMap<String, u8>,
    /// A failure found in this round: the resource and why.
    round_failure: Option<(String, String)>,
}

/// The threshold a resource's spec sets.
fn threshold(spec: Option<&ResourceSpec>) -> Threshold {
    spec.map(|s| Threshold {
        count: s.restart_threshold,
        period: Duration::from_secs(s.restart_period_secs),
    })
    .unwrap_or(Threshold::RESTART_DEFAULT)
}

/// The `resource fail` counter of `r`.
fn fail_count(c: &Catalog, r: &str) -> u64 {
    c.resources
        .get(r)
        .and_then(|x| x.fail_request.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl GroupRunner {
    /// The runner of `group` on node `me`, started at `now` with the
    /// current catalog and view members. Call [`GroupRunner::begin`] next.
    pub fn new(
        group: &str,
        me: &str,
        catalog: Arc<Catalog>,
        members: BTreeSet<String>,
        now: Duration,
    ) -> GroupRunner {
        GroupRunner {
            group: group.to_string(),
            me: me.to_string(),
            phase: Phase::Waiting {
                since: now,
                looked: now,
            },
            stop: false,
            base: catalog.clone(),
            round_cat: catalog.clone(),
            catalog,
            members,
            order: Vec::new(),
            indices: BTreeMap::new(),
            t0: now,
            live: Vec::new(),
            trackers: BTreeMap::new(),
            fails: BTreeMap::new(),
            owed: BTreeMap::new(),
            left_failed: BTreeSet::new(),
            round_now: now,
            round_for: None,
            recheck_live: false,
            round_order: Vec::new(),
            round_indices: BTreeMap::new(),
            round_failure: None,
        }
    }

    /// The first look: the actions of starting at `now`.
    pub fn begin(&mut self, now: Duration) -> Vec<GroupAction> {
        let mut out = Vec::new();
        self.look_previous_owner(now, &mut out);
        out
    }

    /// The group this runner runs.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// When to feed [`GroupInput::Wake`] if nothing else happens; while a
    /// start is outstanding, its pending deadline.
    pub fn wake_at(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Waiting { looked, .. } => Some(*looked + WAIT_POLL),
            Phase::Starting { deadline, .. } => Some(*deadline),
            Phase::Idle => Some(
                self.live
                    .iter()
                    .map(|l| l.next_looks.min(l.next_is))
                    .min()
                    .unwrap_or(self.round_now + IDLE_WAKE),
            ),
            Phase::Stopping { .. } | Phase::Polling { .. } | Phase::Done => None,
        }
    }

    /// Whether the task is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the group is online here and polling (not stopping); a
    /// resource that does not affect the group may be left failed.
    pub fn is_online(&self) -> bool {
        self.phase == Phase::Idle && !self.stop
    }

    /// The resources online here, in the order they came online.
    pub fn live(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(|l| l.name.as_str())
    }

    /// Takes one input at `now`.
    pub fn handle(&mut self, now: Duration, input: GroupInput) -> Vec<GroupAction> {
        let mut out = Vec::new();
        match input {
            GroupInput::Catalog(c) => {
                self.catalog = c;
                match self.phase {
                    Phase::Waiting { .. } => self.look_previous_owner(now, &mut out),
                    Phase::Idle => self.begin_round(now, &mut out),
                    _ => {}
                }
            }
            GroupInput::Members(m) => self.members = m,
            GroupInput::Stop => {
                self.stop = true;
                match self.phase {
                    // Nothing is up yet: end without a report.
                    Phase::Waiting { .. } => self.finish(&mut out),
                    Phase::Idle => self.take_offline(now, &mut out),
                    _ => {}
                }
            }
            GroupInput::Wake => match &self.phase {
                Phase::Waiting { .. } => self.look_previous_owner(now, &mut out),
                Phase::Idle => self.begin_round(now, &mut out),
                Phase::Starting {
                    resource, limit, ..
                } => {
                    let resource = resource.clone();
                    let why = OnlineError::StillPending(*limit);
                    self.start_failed(now, resource, why, &mut out);
                }
                _ => {}
            },
            GroupInput::Started { resource, result } => {
                if matches!(&self.phase, Phase::Starting { resource: r, .. } if *r == resource) {
                    match result {
                        Ok(()) => self.start_succeeded(now, resource, &mut out),
                        Err(e) => {
                            self.start_failed(now, resource, OnlineError::Resource(e), &mut out)
                        }
                    }
                }
            }
            GroupInput::Stopped { resource } => {
                if matches!(&self.phase, Phase::Stopping { current, .. } if *current == resource) {
                    self.stopped(now, &mut out);
                }
            }
            GroupInput::Polled { resource, result } => {
                if let Phase::Polling { index } = self.phase {
                    if self.live.get(index).is_some_and(|l| l.name == resource) {
                        match result {
                            Ok(()) => self.poll_from(now, index + 1, &mut out),
                            Err(why) => {
                                self.round_failure = Some((resource, why));
                                self.end_round(now, &mut out);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    // --- 1. The wait for the previous owner.

    fn look_previous_owner(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        let Phase::Waiting { since, .. } = self.phase else {
            return;
        };
        let busy = self
            .catalog
            .groups
            .get(&self.group)
            .and_then(|g| g.state.as_ref())
            .is_some_and(|s| {
                s.node != self.me && self.members.contains(&s.node) && !s.state.is_down()
            });
        if busy {
            if now.saturating_sub(since) <= Duration::from_secs(PENDING_TIMEOUT_SECS) {
                self.phase = Phase::Waiting { since, looked: now };
                return;
            }
            out.push(GroupAction::Log(GroupLog::PreviousOwnerLate));
        }
        out.push(GroupAction::Log(GroupLog::BringingOnline));
        out.push(GroupAction::ReportGroup {
            state: GroupStatus::Pending,
            reason: None,
        });
        self.base = self.catalog.clone();
        self.order = self.base.online_order(&self.group);
        self.indices = disk_indices(&self.base);
        self.t0 = now;
        self.online_from(now, 0, out);
    }

    // --- 2. Online in dependency order.

    /// Starts the first resource from `order[index]` on that is wanted
    /// online, or reports the group online when none is left.
    fn online_from(&mut self, now: Duration, index: usize, out: &mut Vec<GroupAction>) {
        let next = (index..self.order.len()).find(|&i| {
            let r = &self.order[i];
            self.base.wanted_online(r) && !self.blocked(&self.base, r)
        });
        match next {
            Some(i) => {
                let (r, cat) = (self.order[i].clone(), self.base.clone());
                let disk_index = self.indices.get(&r).copied().unwrap_or(1);
                self.start(now, r, cat, disk_index, StartFor::Online { index: i }, out);
            }
            None => {
                if !self.stop {
                    out.push(GroupAction::Log(GroupLog::GroupOnline));
                    out.push(GroupAction::ReportGroup {
                        state: GroupStatus::Online,
                        reason: None,
                    });
                }
                self.fails = self
                    .base
                    .resources
                    .keys()
                    .map(|r| (r.clone(), fail_count(&self.base, r)))
                    .collect();
                self.round_now = now;
                self.enter_idle(now, out);
            }
        }
    }

    /// Whether `r` waits on a resource left failed (it cannot start).
    fn blocked(&self, cat: &Catalog, r: &str) -> bool {
        if self.left_failed.contains(r) {
            return true;
        }
        cat.resources.get(r).is_some_and(|x| {
            x.spec
                .depends_on
                .iter()
                .any(|d| self.left_failed.contains(d))
        })
    }

    /// Asks for `r` to start (or fails it at once if it was deleted).
    fn start(
        &mut self,
        now: Duration,
        r: String,
        cat: Arc<Catalog>,
        disk_index: u8,
        purpose: StartFor,
        out: &mut Vec<GroupAction>,
    ) {
        let Some(spec) = cat.resources.get(&r).map(|x| Box::new(x.spec.clone())) else {
            // Deleted: nothing to start or report.
            self.phase = Phase::Starting {
                resource: r.clone(),
                spec: None,
                deadline: now,
                limit: Duration::ZERO,
                purpose,
            };
            self.start_failed(now, r, OnlineError::Deleted, out);
            return;
        };
        let limit = Duration::from_secs(spec.pending_timeout_secs);
        out.push(GroupAction::ReportResource {
            resource: r.clone(),
            state: ResourceStatus::OnlinePending,
            reason: None,
        });
        out.push(GroupAction::Start {
            resource: r.clone(),
            spec: spec.clone(),
            disk_index,
            catalog: cat,
        });
        self.phase = Phase::Starting {
            resource: r,
            spec: Some(spec),
            deadline: now + limit,
            limit,
            purpose,
        };
    }

    fn start_succeeded(&mut self, now: Duration, r: String, out: &mut Vec<GroupAction>) {
        let Phase::Starting {
            purpose,
            spec: Some(spec),
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        let (looks, is) = (spec.looks_alive_ms, spec.is_alive_ms);
        out.push(GroupAction::Log(GroupLog::ResourceOnline {
            resource: r.clone(),
            kind: spec.kind,
        }));
        out.push(GroupAction::ReportResource {
            resource: r.clone(),
            state: ResourceStatus::Online,
            reason: None,
        });
        self.live.push(Live {
            name: r,
            next_looks: now + Duration::from_millis(looks),
            next_is: now + Duration::from_millis(is),
        });
        match purpose {
            StartFor::Online { index } => {
                if self.stop {
                    // Stopped while coming online: straight to offline.
                    self.take_offline(now, out);
                } else {
                    self.online_from(now, index + 1, out);
                }
            }
            StartFor::Added { order_pos } => self.add_from(now, order_pos + 1, out),
            StartFor::Restart { rest } => {
                self.recheck_live = true;
                self.restart_next(now, rest, out)
            }
        }
    }

    fn start_failed(
        &mut self,
        now: Duration,
        r: String,
        why: OnlineError,
        out: &mut Vec<GroupAction>,
    ) {
        let Phase::Starting { purpose, spec, .. } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        let spec = spec.map(|s| *s);
        if self.stop {
            // Stopped while it came online (the driver abandons the start
            // at the stop): no restart and no failure; what is up goes
            // offline (issue 16, defect 1: an old task went on arbitrating
            // for its disk and failed the group over the new owner's).
            out.push(GroupAction::ReportResource {
                resource: r,
                state: ResourceStatus::Offline,
                reason: None,
            });
            self.take_offline(now, out);
            return;
        }
        if why != OnlineError::Deleted {
            out.push(GroupAction::ReportResource {
                resource: r.clone(),
                state: ResourceStatus::Failed,
                reason: Some(why.to_string()),
            });
        }
        match purpose {
            StartFor::Online { index } => {
                if self.count_failure(now, &r, spec.as_ref()) == RestartDecision::RestartLocally {
                    out.push(GroupAction::Log(GroupLog::OnlineRetry {
                        resource: r.clone(),
                        reason: why.to_string(),
                    }));
                    let (cat, disk_index) = (
                        self.base.clone(),
                        self.indices.get(&r).copied().unwrap_or(1),
                    );
                    self.start(now, r, cat, disk_index, StartFor::Online { index }, out);
                } else if spec.as_ref().is_some_and(|s| !s.affects_group) {
                    self.leave_failed(r, out);
                    self.online_from(now, index + 1, out);
                } else {
                    let reason = format!("{r}: {why}");
                    self.stop_all(AfterStop::GroupFailed { reason, warn: true }, now, out);
                }
            }
            StartFor::Added { .. } => {
                out.push(GroupAction::Log(GroupLog::DidNotStart {
                    resource: r.clone(),
                    reason: why.to_string(),
                }));
                // Counted like any failure: restarts within the threshold
                // (at the next round), then the group fails.
                if self.count_failure(now, &r, spec.as_ref()) == RestartDecision::FailGroup {
                    if spec.as_ref().is_some_and(|s| !s.affects_group) {
                        self.leave_failed(r, out);
                    } else {
                        let reason = format!("{r} used up its restart threshold: {why}");
                        self.stop_all(AfterStop::GroupFailed { reason, warn: true }, now, out);
                        return;
                    }
                }
                self.poll_from(now, 0, out);
            }
            StartFor::Restart { .. } => {
                let failed = self.round_failure.as_ref().map(|(n, _)| n.clone());
                let affects = failed
                    .as_deref()
                    .and_then(|n| self.round_cat.resources.get(n))
                    .is_none_or(|x| x.spec.affects_group);
                if affects {
                    let reason = format!("{r}: restart failed: {why}");
                    self.round_failure = None;
                    self.stop_all(
                        AfterStop::GroupFailed {
                            reason,
                            warn: false,
                        },
                        now,
                        out,
                    );
                } else {
                    // The rest of the restart waits for the next rounds,
                    // which start what is wanted and missing.
                    self.round_failure = None;
                    self.enter_idle(now, out);
                }
            }
        }
    }

    /// Counts a failure of `r` at `now` against its restart threshold.
    fn count_failure(
        &mut self,
        now: Duration,
        r: &str,
        spec: Option<&ResourceSpec>,
    ) -> RestartDecision {
        let t = threshold(spec);
        self.trackers
            .entry(r.to_string())
            .or_insert_with(|| RestartTracker::new(t))
            .on_failure(now.saturating_sub(self.t0))
    }

    /// `r` does not affect the group and used up its threshold.
    fn leave_failed(&mut self, r: String, out: &mut Vec<GroupAction>) {
        out.push(GroupAction::Log(GroupLog::ResourceLeftFailed {
            resource: r.clone(),
        }));
        self.left_failed.insert(r);
    }

    // --- 3. Rounds while online.

    fn enter_idle(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        if self.stop {
            self.take_offline(now, out);
        } else {
            self.phase = Phase::Idle;
        }
    }

    /// A round: the administrator's failures, removals, additions, polls.
    fn begin_round(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        if self.stop {
            self.take_offline(now, out);
            return;
        }
        let cat = self.catalog.clone();
        // The host hands over its catalog every round; what follows from
        // the catalog alone is worked out once per catalog.
        let new_catalog = !self
            .round_for
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &cat));
        self.round_now = now;
        self.round_cat = cat.clone();
        self.round_failure = None;
        if new_catalog {
            self.round_for = Some(cat.clone());
            self.round_order = cat.online_order(&self.group);
            self.round_indices = disk_indices(&cat);
        }
        // Each increment of a `resource fail` counter is one failure, even
        // when several arrive between two rounds; one is taken per round.
        let counters = if new_catalog {
            &cat.resources
        } else {
            &BTreeMap::new()
        };
        for r in counters.keys() {
            let count = fail_count(&cat, r);
            let before = self.fails.insert(r.clone(), count).unwrap_or(0);
            if count > before {
                out.push(GroupAction::Log(GroupLog::FailRequests {
                    resource: r.clone(),
                    requests: count - before,
                }));
                *self.owed.entry(r.clone()).or_default() += count - before;
            }
        }
        self.owed
            .retain(|r, n| *n > 0 && cat.resources.contains_key(r));
        let owed = self
            .live
            .iter()
            .find(|l| self.owed.contains_key(&l.name))
            .map(|l| l.name.clone());
        if let Some(r) = owed {
            if let Some(n) = self.owed.get_mut(&r) {
                *n -= 1;
            }
            self.round_failure = Some((r, ADMIN_FAILURE.to_string()));
            self.end_round(now, out);
            return;
        }
        if !new_catalog && !self.recheck_live {
            // Nothing was set offline or moved since the last round.
            self.add_from(now, 0, out);
            return;
        }
        self.recheck_live = false;
        // A resource left failed starts again once set offline.
        self.left_failed.retain(|r| cat.wanted_online(r));
        // Resources set offline or moved out of the group since: dependents
        // first (`live` is in online order).
        let mut keep = Vec::new();
        let mut gone = Vec::new();
        for l in self.live.drain(..) {
            let stays = cat
                .resources
                .get(&l.name)
                .is_some_and(|r| r.spec.group == self.group)
                && cat.wanted_online(&l.name);
            if stays {
                keep.push(l);
            } else {
                gone.push(l);
            }
        }
        // Keep the removed ones in `live` while they stop, in place.
        self.live = keep;
        if gone.is_empty() {
            self.add_from(now, 0, out);
        } else {
            self.stop_next(gone, StopKind::Removed, AfterStop::RoundAdds, now, out);
        }
    }

    /// Starts the first resource from `round_order[pos]` on that is wanted,
    /// not online and whose dependencies are online; then polls.
    fn add_from(&mut self, now: Duration, pos: usize, out: &mut Vec<GroupAction>) {
        let cat = self.round_cat.clone();
        let next = (pos..self.round_order.len()).find(|&i| {
            let r = &self.round_order[i];
            if self.live.iter().any(|l| l.name == *r)
                || !cat.wanted_online(r)
                || self.blocked(&cat, r)
            {
                return false;
            }
            cat.resources[r]
                .spec
                .depends_on
                .iter()
                .all(|d| self.live.iter().any(|l| l.name == *d))
        });
        match next {
            Some(i) => {
                let r = self.round_order[i].clone();
                let disk_index = self.round_indices.get(&r).copied().unwrap_or(1);
                self.start(
                    now,
                    r,
                    cat,
                    disk_index,
                    StartFor::Added { order_pos: i },
                    out,
                );
            }
            None => self.poll_from(now, 0, out),
        }
    }

    /// Polls the first resource from `live[index]` on that is due at the
    /// round's time, or ends the round.
    fn poll_from(&mut self, now: Duration, index: usize, out: &mut Vec<GroupAction>) {
        let t = self.round_now;
        for i in index..self.live.len() {
            let l = &mut self.live[i];
            let Some(spec) = self.round_cat.resources.get(&l.name).map(|r| &r.spec) else {
                continue;
            };
            let check = if t >= l.next_is {
                l.next_is = t + Duration::from_millis(spec.is_alive_ms);
                l.next_looks = t + Duration::from_millis(spec.looks_alive_ms);
                Check::IsAlive
            } else if t >= l.next_looks {
                l.next_looks = t + Duration::from_millis(spec.looks_alive_ms);
                Check::LooksAlive
            } else {
                continue;
            };
            out.push(GroupAction::Poll {
                resource: l.name.clone(),
                check,
                spec: Box::new(spec.clone()),
            });
            self.phase = Phase::Polling { index: i };
            return;
        }
        self.end_round(now, out);
    }

    /// The round's failure, if any: report it, take the failed resource
    /// and its dependents offline, then restart or fail.
    fn end_round(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        let Some((name, why)) = self.round_failure.clone() else {
            self.enter_idle(now, out);
            return;
        };
        out.push(GroupAction::Log(GroupLog::ResourceFailed {
            resource: name.clone(),
            reason: why.clone(),
        }));
        out.push(GroupAction::ReportResource {
            resource: name.clone(),
            state: ResourceStatus::Failed,
            reason: Some(why),
        });
        let cat = self.round_cat.clone();
        // The failed resource and everything that depends on it.
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
        let decision = self.count_failure(now, &name, spec.as_ref());
        let (down, keep): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| affected.contains(&l.name));
        self.live = keep;
        let then = AfterStop::Failure {
            name,
            affected,
            decision,
        };
        self.stop_next(down, StopKind::Offline, then, now, out);
    }

    fn after_failure(
        &mut self,
        now: Duration,
        name: String,
        affected: BTreeSet<String>,
        decision: RestartDecision,
        out: &mut Vec<GroupAction>,
    ) {
        let affects = self
            .round_cat
            .resources
            .get(&name)
            .is_none_or(|r| r.spec.affects_group);
        match decision {
            RestartDecision::RestartLocally => {
                out.push(GroupAction::Log(GroupLog::Restarting { resource: name }));
                let rest: Vec<String> = self
                    .order
                    .iter()
                    .filter(|r| affected.contains(*r))
                    .rev()
                    .cloned()
                    .collect();
                self.restart_next(now, rest, out);
            }
            RestartDecision::FailGroup if !affects => {
                self.round_failure = None;
                self.leave_failed(name, out);
                self.enter_idle(now, out);
            }
            RestartDecision::FailGroup => {
                self.round_failure = None;
                let reason = format!("{name} used up its restart threshold");
                self.stop_all(AfterStop::GroupFailed { reason, warn: true }, now, out);
            }
        }
    }

    /// Starts the next of `rest` (kept last first), or goes idle.
    fn restart_next(&mut self, now: Duration, mut rest: Vec<String>, out: &mut Vec<GroupAction>) {
        match rest.pop() {
            Some(r) => {
                let cat = self.round_cat.clone();
                let disk_index = self.indices.get(&r).copied().unwrap_or(1);
                self.start(now, r, cat, disk_index, StartFor::Restart { rest }, out);
            }
            None => {
                self.round_failure = None;
                self.enter_idle(now, out);
            }
        }
    }

    // --- Offline.

    /// Stop requested while online: every resource offline, reverse order.
    fn take_offline(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        out.push(GroupAction::Log(GroupLog::TakingOffline));
        out.push(GroupAction::ReportGroup {
            state: GroupStatus::OfflinePending,
            reason: None,
        });
        self.stop_all(AfterStop::GroupOffline, now, out);
    }

    /// Every live resource offline (last online first), then `then`.
    fn stop_all(&mut self, then: AfterStop, now: Duration, out: &mut Vec<GroupAction>) {
        let all = std::mem::take(&mut self.live);
        self.stop_next(all, StopKind::Offline, then, now, out);
    }

    /// Stops the last of `rest`, or goes on with `then` when none is left.
    fn stop_next(
        &mut self,
        mut rest: Vec<Live>,
        kind: StopKind,
        then: AfterStop,
        now: Duration,
        out: &mut Vec<GroupAction>,
    ) {
        let Some(l) = rest.pop() else {
            self.after_stop(then, now, out);
            return;
        };
        if kind == StopKind::Removed {
            out.push(GroupAction::Log(GroupLog::ResourceRemoved {
                resource: l.name.clone(),
            }));
        }
        out.push(GroupAction::ReportResource {
            resource: l.name.clone(),
            state: ResourceStatus::OfflinePending,
            reason: None,
        });
        out.push(GroupAction::Stop {
            resource: l.name.clone(),
        });
        self.phase = Phase::Stopping {
            current: l.name,
            kind,
            rest,
            then,
        };
    }

    fn stopped(&mut self, now: Duration, out: &mut Vec<GroupAction>) {
        let Phase::Stopping {
            current,
            kind,
            rest,
            then,
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        match kind {
            StopKind::Offline => {
                out.push(GroupAction::Log(GroupLog::ResourceOffline {
                    resource: current.clone(),
                }));
                out.push(GroupAction::ReportResource {
                    resource: current,
                    state: ResourceStatus::Offline,
                    reason: None,
                });
            }
            StopKind::Removed => {
                if self.round_cat.resources.contains_key(&current) {
                    out.push(GroupAction::ReportResource {
                        resource: current,
                        state: ResourceStatus::Offline,
                        reason: None,
                    });
                }
            }
        }
        self.stop_next(rest, kind, then, now, out);
    }

    fn after_stop(&mut self, then: AfterStop, now: Duration, out: &mut Vec<GroupAction>) {
        match then {
            AfterStop::GroupOffline => {
                out.push(GroupAction::ReportGroup {
                    state: GroupStatus::Offline,
                    reason: None,
                });
                self.finish(out);
            }
            AfterStop::GroupFailed { reason, warn } => {
                if warn {
                    out.push(GroupAction::Log(GroupLog::GroupFailed {
                        reason: reason.clone(),
                    }));
                }
                out.push(GroupAction::ReportGroup {
                    state: GroupStatus::Failed,
                    reason: Some(reason),
                });
                self.finish(out);
            }
            AfterStop::Failure {
                name,
                affected,
                decision,
            } => self.after_failure(now, name, affected, decision, out),
            AfterStop::RoundAdds => self.add_from(now, 0, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<GroupAction>) {
        self.phase = Phase::Done;
        out.push(GroupAction::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{GroupRecord, GroupState, ResourceRecord, Target};

    const ME: &str = "NODE1";
    const G: &str = "G";

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// A group G with disk D <- ip I <- name N <- app A (each depends on
    /// the one before), restart threshold 2 in 60 s.
    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.groups.insert(G.into(), GroupRecord::default());
        let chain = [
            ("D", ResourceType::PhysicalDisk, None),
            ("I", ResourceType::IpAddress, Some("D")),
            ("N", ResourceType::NetworkName, Some("I")),
            ("A", ResourceType::GenericApplication, Some("N")),
        ];
        for (name, kind, dep) in chain {
            let mut spec = ResourceSpec::new(G, kind);
            spec.depends_on = dep.into_iter().map(String::from).collect();
            spec.restart_threshold = 2;
            spec.restart_period_secs = 60;
            c.resources.insert(
                name.into(),
                ResourceRecord {
                    spec,
                    state: None,
                    fail_request: None,
                    target: Target::Online,
                },
            );
        }
        c
    }

    /// A scripted world: answers each operation at once (starts fail
    /// while `start_fails` says so; polls fail once per entry of
    /// `poll_fails`) and records every action.
    struct World {
        runner: GroupRunner,
        now: Duration,
        actions: Vec<GroupAction>,
        start_fails: BTreeMap<String, u32>,
        poll_fails: Vec<String>,
        /// Leave starts outstanding instead of answering them.
        hold_starts: bool,
    }

    impl World {
        fn new(cat: Catalog, members: &[&str]) -> World {
            World::with(cat, members, |_| {})
        }

        /// A world set up by `setup` before the runner begins.
        fn with(cat: Catalog, members: &[&str], setup: impl FnOnce(&mut World)) -> World {
            let members = members.iter().map(|m| m.to_string()).collect();
            let mut w = World {
                runner: GroupRunner::new(G, ME, Arc::new(cat), members, Duration::ZERO),
                now: Duration::ZERO,
                actions: Vec::new(),
                start_fails: BTreeMap::new(),
                poll_fails: Vec::new(),
                hold_starts: false,
            };
            setup(&mut w);
            let first = w.runner.begin(w.now);
            w.perform(first);
            w
        }

        fn feed(&mut self, input: GroupInput) {
            let out = self.runner.handle(self.now, input);
            self.perform(out);
        }

        fn perform(&mut self, mut out: Vec<GroupAction>) {
            loop {
                let op = out.last().filter(|a| a.is_operation()).cloned();
                assert!(
                    out.iter().filter(|a| a.is_operation()).count() <= 1,
                    "one operation at a time: {out:?}"
                );
                self.actions.append(&mut out);
                let input = match op {
                    Some(GroupAction::Start { resource, .. }) => {
                        if self.hold_starts {
                            return;
                        }
                        let fail = self.start_fails.get_mut(&resource).filter(|n| **n > 0);
                        let result = match fail {
                            Some(n) => {
                                *n -= 1;
                                Err("boom".to_string())
                            }
                            None => Ok(()),
                        };
                        GroupInput::Started { resource, result }
                    }
                    Some(GroupAction::Stop { resource }) => GroupInput::Stopped { resource },
                    Some(GroupAction::Poll { resource, .. }) => {
                        let result = match self.poll_fails.iter().position(|r| *r == resource) {
                            Some(i) => {
                                self.poll_fails.remove(i);
                                Err("dead".to_string())
                            }
                            None => Ok(()),
                        };
                        GroupInput::Polled { resource, result }
                    }
                    _ => return,
                };
                out = self.runner.handle(self.now, input);
            }
        }

        /// Moves time to the runner's next wake-up and wakes it.
        fn wake(&mut self) {
            self.now = self.runner.wake_at().expect("a wake-up");
            self.feed(GroupInput::Wake);
        }

        fn take(&mut self) -> Vec<GroupAction> {
            std::mem::take(&mut self.actions)
        }
    }

    fn starts(a: &[GroupAction]) -> Vec<&str> {
        a.iter()
            .filter_map(|a| match a {
                GroupAction::Start { resource, .. } => Some(resource.as_str()),
                _ => None,
            })
            .collect()
    }

    fn stops(a: &[GroupAction]) -> Vec<&str> {
        a.iter()
            .filter_map(|a| match a {
                GroupAction::Stop { resource } => Some(resource.as_str()),
                _ => None,
            })
            .collect()
    }

    fn group_reports(a: &[GroupAction]) -> Vec<(GroupStatus, Option<String>)> {
        a.iter()
            .filter_map(|a| match a {
                GroupAction::ReportGroup { state, reason } => Some((*state, reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn polls(a: &[GroupAction]) -> Vec<(&str, Check)> {
        a.iter()
            .filter_map(|a| match a {
                GroupAction::Poll {
                    resource, check, ..
                } => Some((resource.as_str(), *check)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn online_in_dependency_order_and_offline_in_reverse() {
        let mut w = World::new(catalog(), &[ME]);
        let a = w.take();
        assert_eq!(starts(&a), ["D", "I", "N", "A"]);
        assert_eq!(
            group_reports(&a),
            [(GroupStatus::Pending, None), (GroupStatus::Online, None)]
        );
        // Each resource is reported online-pending, then online.
        let states: Vec<(String, ResourceStatus)> = a
            .iter()
            .filter_map(|a| match a {
                GroupAction::ReportResource {
                    resource, state, ..
                } => Some((resource.clone(), *state)),
                _ => None,
            })
            .collect();
        assert_eq!(states[0], ("D".into(), ResourceStatus::OnlinePending));
        assert_eq!(states[1], ("D".into(), ResourceStatus::Online));
        assert!(w.runner.is_online());
        w.feed(GroupInput::Stop);
        let a = w.take();
        assert_eq!(stops(&a), ["A", "N", "I", "D"]);
        assert_eq!(
            group_reports(&a),
            [
                (GroupStatus::OfflinePending, None),
                (GroupStatus::Offline, None)
            ]
        );
        assert_eq!(a.last(), Some(&GroupAction::Done));
        assert!(w.runner.is_done());
    }

    #[test]
    fn a_failure_within_the_threshold_restarts_beyond_it_fails_the_group() {
        let mut w = World::new(catalog(), &[ME]);
        w.take();
        // The disk fails its IsAlive: it and its dependents go offline
        // (dependents first) and come back in order; the group stays up.
        for round in 0..2 {
            w.poll_fails.push("D".into());
            while !w.take_polls_include("D") {}
            let a = w.take();
            assert_eq!(stops(&a), ["A", "N", "I", "D"], "round {round}");
            assert_eq!(starts(&a), ["D", "I", "N", "A"], "round {round}");
            assert!(group_reports(&a).is_empty(), "round {round}: {a:?}");
            assert!(w.runner.is_online());
        }
        // The third failure inside the period uses up the threshold of 2.
        w.poll_fails.push("D".into());
        while !w.take_polls_include("D") {}
        let a = w.take();
        assert!(starts(&a).is_empty());
        assert_eq!(
            group_reports(&a),
            [(
                GroupStatus::Failed,
                Some("D used up its restart threshold".into())
            )]
        );
        assert!(w.runner.is_done());
    }

    impl World {
        /// Wakes once; whether `r` was polled (the actions are kept).
        fn take_polls_include(&mut self, r: &str) -> bool {
            let before = self.actions.len();
            self.wake();
            polls(&self.actions[before..]).iter().any(|(x, _)| *x == r)
        }
    }

    #[test]
    fn a_resource_that_does_not_affect_the_group_is_left_failed() {
        let mut cat = catalog();
        cat.resources.get_mut("A").unwrap().spec.affects_group = false;
        let mut w = World::new(cat, &[ME]);
        w.take();
        for _ in 0..3 {
            w.poll_fails.push("A".into());
            while !w.take_polls_include("A") {}
        }
        let a = w.take();
        assert!(a.contains(&GroupAction::Log(GroupLog::ResourceLeftFailed {
            resource: "A".into()
        })));
        assert!(group_reports(&a).is_empty(), "the group stays: {a:?}");
        assert!(w.runner.is_online());
        assert_eq!(w.runner.live().collect::<Vec<_>>(), ["D", "I", "N"]);
        // Later rounds do not start it again.
        w.wake();
        w.wake();
        assert!(starts(&w.take()).is_empty());
        // Set offline and online again by the administrator, it starts.
        let mut off = catalog();
        off.resources.get_mut("A").unwrap().spec.affects_group = false;
        off.resources.get_mut("A").unwrap().target = Target::Offline;
        w.feed(GroupInput::Catalog(Arc::new(off.clone())));
        off.resources.get_mut("A").unwrap().target = Target::Online;
        w.feed(GroupInput::Catalog(Arc::new(off)));
        assert_eq!(starts(&w.take()), ["A"]);
    }

    #[test]
    fn a_fail_counter_step_of_two_is_two_failures() {
        let mut cat = catalog();
        // Threshold 1: the second failure fails the group.
        cat.resources.get_mut("A").unwrap().spec.restart_threshold = 1;
        let mut w = World::new(cat.clone(), &[ME]);
        w.take();
        cat.resources.get_mut("A").unwrap().fail_request = Some("2".into());
        w.feed(GroupInput::Catalog(Arc::new(cat)));
        let a = w.take();
        assert!(a.contains(&GroupAction::Log(GroupLog::FailRequests {
            resource: "A".into(),
            requests: 2
        })));
        assert!(a.contains(&GroupAction::ReportResource {
            resource: "A".into(),
            state: ResourceStatus::Failed,
            reason: Some(ADMIN_FAILURE.into()),
        }));
        assert_eq!(starts(&a), ["A"], "the first is restarted");
        // The second is taken at the next round.
        w.wake();
        let a = w.take();
        assert_eq!(
            group_reports(&a),
            [(
                GroupStatus::Failed,
                Some("A used up its restart threshold".into())
            )]
        );
    }

    /// A stop while D's start is pending, then the start's `result`: the
    /// runner's actions after the result, and the world.
    fn stop_during_start(result: Result<(), String>) -> (Vec<GroupAction>, World) {
        let mut w = World::with(catalog(), &[ME], |w| w.hold_starts = true);
        assert_eq!(starts(&w.take()), ["D"]);
        // The stop acts when the start finishes.
        assert!(w.runner.handle(w.now, GroupInput::Stop).is_empty());
        w.hold_starts = false;
        w.feed(GroupInput::Started {
            resource: "D".into(),
            result,
        });
        (w.take(), w)
    }

    #[test]
    fn stop_while_a_start_is_pending_takes_the_group_offline() {
        let (a, w) = stop_during_start(Ok(()));
        assert!(starts(&a).is_empty(), "nothing more starts: {a:?}");
        assert_eq!(stops(&a), ["D"]);
        assert_eq!(
            group_reports(&a),
            [
                (GroupStatus::OfflinePending, None),
                (GroupStatus::Offline, None)
            ]
        );
        assert!(w.runner.is_done());
    }

    /// The driver abandons a pending start when the stop comes (the
    /// cluster service stopped): the runner neither restarts it nor fails
    /// the group, and takes the group offline (issue 16, defect 1).
    #[test]
    fn a_start_abandoned_for_a_stop_is_not_restarted_or_failed() {
        let (a, w) = stop_during_start(Err("abandoned: the group is going offline".into()));
        assert!(starts(&a).is_empty(), "restarted after the stop: {a:?}");
        assert!(
            !a.iter().any(|x| matches!(
                x,
                GroupAction::ReportResource {
                    state: ResourceStatus::Failed,
                    ..
                }
            )),
            "reported failed after the stop: {a:?}"
        );
        assert_eq!(
            group_reports(&a),
            [
                (GroupStatus::OfflinePending, None),
                (GroupStatus::Offline, None)
            ]
        );
        assert!(w.runner.is_done());
    }

    #[test]
    fn a_start_past_its_pending_timeout_fails() {
        let mut cat = catalog();
        cat.resources
            .get_mut("D")
            .unwrap()
            .spec
            .pending_timeout_secs = 5;
        cat.resources.get_mut("D").unwrap().spec.restart_threshold = 0;
        let mut w = World::with(cat, &[ME], |w| w.hold_starts = true);
        assert_eq!(w.runner.wake_at(), Some(Duration::from_secs(5)));
        w.wake();
        let a = w.take();
        assert!(a.contains(&GroupAction::ReportResource {
            resource: "D".into(),
            state: ResourceStatus::Failed,
            reason: Some("still pending after 5s".into()),
        }));
        assert_eq!(
            group_reports(&a),
            [
                (GroupStatus::Pending, None),
                (
                    GroupStatus::Failed,
                    Some("D: still pending after 5s".into())
                )
            ]
        );
        // A late result of the abandoned start changes nothing.
        assert!(w
            .runner
            .handle(
                w.now,
                GroupInput::Started {
                    resource: "D".into(),
                    result: Ok(())
                }
            )
            .is_empty());
    }

    #[test]
    fn failed_onlines_retry_within_the_threshold() {
        let mut w = World::with(catalog(), &[ME], |w| {
            w.start_fails.insert("I".into(), 2);
        });
        let a = w.take();
        assert_eq!(starts(&a), ["D", "I", "I", "I", "N", "A"]);
        assert!(w.runner.is_online());
        // Three failures with a threshold of 2: the group fails.
        let mut w = World::with(catalog(), &[ME], |w| {
            w.start_fails.insert("I".into(), 3);
        });
        let a = w.take();
        assert_eq!(starts(&a), ["D", "I", "I", "I"]);
        assert_eq!(stops(&a), ["D"]);
        assert_eq!(
            group_reports(&a).last(),
            Some(&(GroupStatus::Failed, Some("I: boom".into())))
        );
    }

    fn held_by(node: &str, state: GroupStatus) -> Catalog {
        let mut c = catalog();
        c.groups.get_mut(G).unwrap().state = Some(GroupState {
            state,
            node: node.into(),
            reason: None,
        });
        c
    }

    #[test]
    fn a_live_previous_owner_blocks_until_it_reports_offline() {
        let mut w = World::new(held_by("NODE2", GroupStatus::Online), &[ME, "NODE2"]);
        assert!(w.take().is_empty(), "waits");
        assert_eq!(w.runner.wake_at(), Some(WAIT_POLL));
        w.wake();
        assert!(w.take().is_empty(), "still waits");
        w.feed(GroupInput::Catalog(Arc::new(held_by(
            "NODE2",
            GroupStatus::Offline,
        ))));
        assert_eq!(starts(&w.take()), ["D", "I", "N", "A"]);
    }

    #[test]
    fn a_previous_owner_that_left_or_is_late_does_not_block() {
        // Not in the view: no wait.
        let mut w = World::new(held_by("NODE2", GroupStatus::Online), &[ME]);
        assert_eq!(starts(&w.take()).len(), 4);
        // In the view but silent: the pending timeout ends the wait.
        let mut w = World::new(held_by("NODE2", GroupStatus::Online), &[ME, "NODE2"]);
        while w.now <= Duration::from_secs(PENDING_TIMEOUT_SECS) {
            assert!(w.take().is_empty(), "waits at {:?}", w.now);
            w.wake();
        }
        let a = w.take();
        assert_eq!(a[0], GroupAction::Log(GroupLog::PreviousOwnerLate));
        assert_eq!(starts(&a).len(), 4);
        // A stop while waiting ends the task without a report.
        let mut w = World::new(held_by("NODE2", GroupStatus::Online), &[ME, "NODE2"]);
        w.feed(GroupInput::Stop);
        assert_eq!(w.take(), [GroupAction::Done]);
    }

    #[test]
    fn polls_follow_the_looks_alive_and_is_alive_intervals() {
        let mut cat = Catalog::default();
        cat.groups.insert(G.into(), GroupRecord::default());
        let mut spec = ResourceSpec::new(G, ResourceType::GenericApplication);
        spec.looks_alive_ms = 1_000;
        spec.is_alive_ms = 5_000;
        cat.resources.insert(
            "A".into(),
            ResourceRecord {
                spec,
                state: None,
                fail_request: None,
                target: Target::Online,
            },
        );
        let mut w = World::new(cat, &[ME]);
        w.take();
        let mut seen = Vec::new();
        for _ in 0..10 {
            w.wake();
            for (r, c) in polls(&w.take()) {
                assert_eq!(r, "A");
                seen.push((w.now, c));
            }
        }
        use Check::{IsAlive as I, LooksAlive as L};
        let want: Vec<(Duration, Check)> = [
            (1, L),
            (2, L),
            (3, L),
            (4, L),
            (5, I),
            (6, L),
            (7, L),
            (8, L),
            (9, L),
            (10, I),
        ]
        .into_iter()
        .map(|(s, c)| (ms(s * 1000), c))
        .collect();
        assert_eq!(seen, want);
    }
}
