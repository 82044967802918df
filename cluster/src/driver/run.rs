//! The node's event loop: feeds a [`Node`] time, authenticated messages,
//! disk results and administrator commands, and performs its [`Action`]s.
//!
//! Time given to the node is the monotonic time since the loop started
//! (tokio's clock, so tests may pause it). Disk operations go to the
//! executor in two lanes, each one operation at a time in the order the
//! node issued them: arbitration (RESERVE, bus reset, the PR challenge and
//! defense) and data (quorum log reads and writes, then RELEASE or
//! unregister, which must follow the writes). A defender's renewal thus
//! never waits behind a long log read or a slow FUA write, as clusdisk's
//! renewal timer does not wait for the disk's I/O; its lease is half the
//! challenge wait (docs/semantics.md, "Timing profiles"). Heartbeats keep
//! flowing meanwhile: a hung disk never silences the node on the
//! networks. The loop returns when the shutdown future completes (after a
//! clean exit announcement) or when the node stops its cluster service.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::arbiter::{Challenge, DiskId, DiskOp, DiskResult, Role};
use crate::config::NodeId;
use crate::db::{Change, DbSnapshot};
use crate::message::View;
use crate::node::{Action, Node, Phase, ReadStart};

use super::disk::{op_name, DiskExecutor};
use super::udp::ClusterTransport;

/// How long a clean shutdown waits for the disk operations it issues (the
/// quorum owner's RELEASE) before giving up.
pub const SHUTDOWN_DISK_GRACE: Duration = Duration::from_secs(2);

/// Why a proposed change was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is in no settled view with a quorum owner (Global Update needs a locker).
    #[error("this node cannot take updates now (not a member, or no quorum owner)")]
    NotAccepting,
    /// The quorum owner refused the change, with the node's reason.
    #[error("{0}")]
    Rejected(String),
    /// Proposed for an earlier life of the cluster service, which stopped
    /// (and was restarted) since.
    #[error("proposed for an earlier life of the cluster service (incarnation {0})")]
    OtherLife(u64),
}

/// How a proposed change ended: committed as this sequence number, or
/// refused.
pub type ProposeResult = Result<u64, ProposeError>;

/// An administrator's request to the running node.
#[derive(Debug)]
pub enum Command {
    /// Propose a cluster database change (Global Update); the outcome goes
    /// to the reply channel, if any.
    Propose(Change, Option<oneshot::Sender<ProposeResult>>),
    /// As `Propose`, for service life `incarnation` only: refused
    /// (`OtherLife`) by any other, since the channel outlives a restart.
    ProposeIn {
        incarnation: u64,
        change: Change,
        reply: oneshot::Sender<ProposeResult>,
    },
    /// A copy of this node's cluster database.
    Snapshot(oneshot::Sender<DbSnapshot>),
    /// A copy of the database for a client's read, once the owner has
    /// confirmed it ([`Node::read`]): refused while the node is not a
    /// settled member, its copy is not yet the cluster's, or the owner does
    /// not confirm it (docs/semantics.md, "Reading the database").
    Read(oneshot::Sender<Result<DbSnapshot, NotReadable>>),
    /// Evict a node.
    Evict(NodeId),
    /// Pause (true) or resume (false) a node.
    SetPaused(NodeId, bool),
}

pub use crate::node::NotReadable;

/// What the node looks like now, published after every input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub view: Option<View>,
    /// Acted as quorum owner when published. Readers that may look later
    /// (the admin endpoint) ask [`NodeStatus::acts_as_owner`], which also
    /// checks the lease: a node stopped (SIGSTOP) past its lease publishes
    /// nothing until its loop runs again.
    pub acting_owner: bool,
    /// While acting, the end of the lease that makes it so (the instant it
    /// stops acting unless a renewal or acknowledgement comes first).
    pub acting_until: Option<Instant>,
    pub writes_held: bool,
    /// Why the cluster service stopped, once it has.
    pub stopped: Option<String>,
    pub phase: NodePhase,
    /// Sequence number of the last database update applied here (the
    /// quorum log position).
    pub db_seq: u64,
    /// The cluster service life publishing (its incarnation).
    pub incarnation: u64,
    /// The database is the cluster's, not the stale copy a restarted
    /// node's majority replica holds until the owner's replaces it.
    pub db_current: bool,
    /// The quorum arbiter's role, in words.
    pub arbitration: String,
    /// When each peer was last heard on the private and the public
    /// network (`Net::index` order).
    pub heard: Vec<(NodeId, [Instant; 2])>,
}

impl NodeStatus {
    /// Whether the node acts as quorum owner at `now`: it did when it
    /// published and its lease has not run out since (docs/semantics.md,
    /// "Acting owner").
    pub fn acts_as_owner(&self, now: Instant) -> bool {
        self.acting_owner && self.acting_until.is_some_and(|t| now < t)
    }
}

/// The node's phase in one word, as the status output names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodePhase {
    /// Asking the members for a view that includes this node (also the
    /// phase before the node's first published status).
    #[default]
    Joining,
    /// Forming a new cluster after arbitrating for the quorum.
    Forming,
    /// A member of a settled view.
    Member,
    /// A member taking part in a regroup.
    Regrouping,
    /// The cluster service has stopped on this node.
    Stopped,
}

impl NodePhase {
    /// The phase of a [`Phase`].
    pub fn of(phase: &Phase) -> NodePhase {
        match phase {
            Phase::Joining { .. } => NodePhase::Joining,
            Phase::Forming => NodePhase::Forming,
            Phase::Member(m) if m.regroup.is_some() => NodePhase::Regrouping,
            Phase::Member(_) => NodePhase::Member,
            Phase::Stopped(_) => NodePhase::Stopped,
        }
    }

    /// The word itself.
    pub fn as_str(self) -> &'static str {
        match self {
            NodePhase::Joining => "joining",
            NodePhase::Forming => "forming",
            NodePhase::Member => "member",
            NodePhase::Regrouping => "regrouping",
            NodePhase::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for NodePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The arbiter's role in words, for logs and status: every arbitration
/// step is logged when it begins (docs/architecture.md, convention 11).
pub fn role_text(role: &Role) -> String {
    match role {
        Role::Idle => "idle".into(),
        Role::Lost(why) => format!("lost: {why}"),
        Role::Owner(o) if o.announced => "owner (online)".into(),
        Role::Owner(o) => format!("owner (online at {:.3}s)", o.online_at.as_secs_f64()),
        Role::Challenger(c) => match c {
            Challenge::Claiming { .. } => {
                "claimant: RESERVE sent (takes the disk if nobody holds it)".into()
            }
            Challenge::Resetting => "challenger: bus reset sent".into(),
            Challenge::AwaitDefender { reset_at } => format!(
                "challenger: bus reset done at {:.3}s; waiting for a defender before RESERVE",
                reset_at.as_secs_f64()
            ),
            Challenge::Reserving { .. } => "challenger: RESERVE sent".into(),
            Challenge::Registering => "challenger: registering its key".into(),
            Challenge::ReadingHolder { .. } => "challenger: reading the reservation holder".into(),
            Challenge::AwaitScrub { holder, .. } => format!(
                "challenger: waiting for the holder (key {}) to defend",
                holder.map_or("none".into(), |k| format!("{k:#x}"))
            ),
            Challenge::CheckingKey { .. } => "challenger: checking its key survived".into(),
            Challenge::Taking => "challenger: taking the reservation (RESERVE/PREEMPT)".into(),
        },
    }
}

/// Whether two roles are the same arbitration step (defense progress and
/// lease renewals are not steps worth a log line).
fn same_step(a: &Role, b: &Role) -> bool {
    match (a, b) {
        (Role::Owner(x), Role::Owner(y)) => x.announced == y.announced,
        (Role::Challenger(x), Role::Challenger(y)) => {
            std::mem::discriminant(x) == std::mem::discriminant(y)
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown future completed; the node announced its exit.
    Shutdown,
    /// The node stopped its cluster service.
    Stopped(String),
}

/// The loop's connections to the rest of the process; all optional.
#[derive(Debug, Default)]
pub struct Io {
    /// Administrator commands.
    pub commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// Actions the driver does not perform itself (hold writes, commits,
    /// rejections, stop), for the resource layer and the admin endpoint.
    pub events: Option<mpsc::UnboundedSender<Action>>,
    /// The node's status.
    pub status: Option<watch::Sender<NodeStatus>>,
}

type DiskFuture<'a> = Pin<Box<dyn Future<Output = (u64, DiskResult)> + Send + 'a>>;

/// The two disk lanes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneKind {
    Arbitration,
    Data,
}

/// The lane of `op`: data I/O, and the RELEASE or unregister that ends a
/// node's use of the disk after its last writes, go in order in the data
/// lane; every other reservation operation in the arbitration lane.
fn lane(op: &DiskOp) -> LaneKind {
    match op {
        DiskOp::Write { .. }
        | DiskOp::Read { .. }
        | DiskOp::Release
        | DiskOp::PrUnregister { .. } => LaneKind::Data,
        DiskOp::Reserve
        | DiskOp::BusReset
        | DiskOp::PrRegister { .. }
        | DiskOp::PrReserve { .. }
        | DiskOp::PrPreempt { .. }
        | DiskOp::PrReadKeys
        | DiskOp::PrReadReservation => LaneKind::Arbitration,
    }
}

/// One lane: operations waiting, and the one in flight.
struct Lane<'a> {
    queue: VecDeque<(u64, DiskId, DiskOp)>,
    in_flight: Option<DiskFuture<'a>>,
}

impl Lane<'_> {
    fn new() -> Self {
        Lane {
            queue: VecDeque::new(),
            in_flight: None,
        }
    }
}

struct Driver<'a, D> {
    node: Node,
    transport: &'a ClusterTransport,
    disks: &'a D,
    io: &'a mut Io,
    start: Instant,
    arbitration: Lane<'a>,
    data: Lane<'a>,
    /// Replies owed for proposals, by request id.
    replies: BTreeMap<u64, oneshot::Sender<ProposeResult>>,
    /// Replies owed for client reads waiting for the owner, by read id.
    reads: BTreeMap<u64, oneshot::Sender<Result<DbSnapshot, NotReadable>>>,
    /// The arbiter role last logged.
    logged_role: Role,
    /// The end of the quorum-owner lease last published while acting.
    lease_end: Option<Instant>,
}

/// Runs `node` until `shutdown` completes or the node stops; returns the
/// node for inspection and why the loop ended. `io` stays the caller's, so
/// a restarted cluster service (a new [`Node`]) can reuse the channels.
pub async fn run<D, S>(
    node: Node,
    transport: &ClusterTransport,
    disks: &D,
    io: &mut Io,
    shutdown: S,
) -> (Node, Exit)
where
    D: DiskExecutor + Sync,
    S: Future<Output = ()>,
{
    let mut d = Driver {
        node,
        transport,
        disks,
        io,
        start: Instant::now(),
        arbitration: Lane::new(),
        data: Lane::new(),
        replies: BTreeMap::new(),
        reads: BTreeMap::new(),
        logged_role: Role::Idle,
        lease_end: None,
    };
    let exit = d.event_loop(shutdown).await;
    (d.node, exit)
}

impl<'a, D: DiskExecutor + Sync> Driver<'a, D> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn event_loop<S: Future<Output = ()>>(&mut self, shutdown: S) -> Exit {
        tokio::pin!(shutdown);
        let mut commands_open = self.io.commands.is_some();
        let now = self.now();
        self.node.tick(now);
        loop {
            self.perform().await;
            if let Some(reason) = self.stopped() {
                self.drain_disk().await;
                return Exit::Stopped(reason);
            }
            self.start_next_disk_op();
            let deadline = self.node.next_deadline(self.now());
            let wake = deadline.map(|d| self.start + d);
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    let now = self.now();
                    self.node.shutdown(now);
                    self.perform().await;
                    self.drain_disk().await;
                    return Exit::Shutdown;
                }
                r = async { self.arbitration.in_flight.as_mut().expect("guarded").await },
                    if self.arbitration.in_flight.is_some() => {
                    self.arbitration.in_flight = None;
                    let now = self.now();
                    self.node.disk_done(now, r.0, r.1);
                }
                r = async { self.data.in_flight.as_mut().expect("guarded").await },
                    if self.data.in_flight.is_some() => {
                    self.data.in_flight = None;
                    let now = self.now();
                    self.node.disk_done(now, r.0, r.1);
                }
                r = self.transport.recv() => match r {
                    Ok((net, env)) => {
                        let now = self.now();
                        self.node.step(now, net, env);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster socket error");
                        // Do not spin on a persistent socket error.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    let now = self.now();
                    self.node.tick(now);
                }
                c = recv_command(&mut self.io.commands), if commands_open => match c {
                    Some(c) => self.command(c),
                    None => commands_open = false,
                },
            }
            self.publish();
        }
    }

    fn stopped(&self) -> Option<String> {
        match self.node.phase() {
            crate::node::Phase::Stopped(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Propose(change, reply) => match self.node.propose(now, change) {
                Some(id) => {
                    if let Some(r) = reply {
                        self.replies.insert(id, r);
                    }
                }
                None => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(ProposeError::NotAccepting));
                    }
                }
            },
            Command::ProposeIn {
                incarnation,
                change,
                reply,
            } => {
                if incarnation == self.node.incarnation() {
                    self.command(Command::Propose(change, Some(reply)));
                } else {
                    tracing::info!(
                        incarnation,
                        "change proposed for an earlier life of the cluster service refused"
                    );
                    let _ = reply.send(Err(ProposeError::OtherLife(incarnation)));
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.node.db().clone());
            }
            Command::Read(reply) => match self.node.read(now) {
                Ok(ReadStart::Now) => {
                    let _ = reply.send(Ok(self.node.db().clone()));
                }
                Ok(ReadStart::Pending(id)) => {
                    self.reads.insert(id, reply);
                }
                Err(why) => {
                    let _ = reply.send(Err(why));
                }
            },
            Command::Evict(n) => self.node.evict(now, n),
            Command::SetPaused(n, p) => self.node.set_paused(now, n, p),
        }
    }

    /// Performs every action the node has collected, in order.
    async fn perform(&mut self) {
        for action in self.node.take_actions() {
            match action {
                Action::Send { net, env } => {
                    if let Err(e) = self.transport.send(net, &env).await {
                        tracing::warn!(?net, to = env.to, error = %e, "send failed");
                    }
                }
                Action::Disk { id, disk, op } => self.queue_disk(id, disk, op),
                Action::ReadReady { id } => {
                    if let Some(r) = self.reads.remove(&id) {
                        let _ = r.send(Ok(self.node.db().clone()));
                    }
                }
                Action::ReadRefused { id, why } => {
                    if let Some(r) = self.reads.remove(&id) {
                        let _ = r.send(Err(why));
                    }
                }
                other => {
                    match &other {
                        Action::StopClusterService { reason } => {
                            tracing::warn!(%reason, "cluster service stopping");
                        }
                        Action::Committed { id, seq } => {
                            if let Some(r) = self.replies.remove(id) {
                                let _ = r.send(Ok(*seq));
                            }
                        }
                        Action::Rejected { id, reason } => {
                            if let Some(r) = self.replies.remove(id) {
                                let _ = r.send(Err(ProposeError::Rejected(reason.clone())));
                            }
                        }
                        _ => {}
                    }
                    if let Some(tx) = &self.io.events {
                        let _ = tx.send(other);
                    }
                }
            }
        }
        self.publish();
    }

    fn lane(&mut self, which: LaneKind) -> &mut Lane<'a> {
        match which {
            LaneKind::Arbitration => &mut self.arbitration,
            LaneKind::Data => &mut self.data,
        }
    }

    fn queue_disk(&mut self, id: u64, disk: DiskId, op: DiskOp) {
        self.lane(lane(&op)).queue.push_back((id, disk, op));
    }

    /// Starts the next operation of each idle lane.
    fn start_next_disk_op(&mut self) {
        let disks = self.disks;
        for lane in [&mut self.arbitration, &mut self.data] {
            if lane.in_flight.is_some() {
                continue;
            }
            if let Some((id, disk, op)) = lane.queue.pop_front() {
                tracing::debug!(id, ?disk, op = op_name(&op), "disk operation");
                lane.in_flight = Some(Box::pin(async move { (id, disks.execute(disk, op).await) }));
            }
        }
    }

    /// Finishes the disk operations still queued, within the grace period;
    /// their results go to the node (which may queue more, e.g. a RELEASE).
    async fn drain_disk(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_DISK_GRACE;
        loop {
            self.start_next_disk_op();
            let done = match (
                self.arbitration.in_flight.as_mut(),
                self.data.in_flight.as_mut(),
            ) {
                (None, None) => return,
                (Some(f), None) => tokio::time::timeout_at(deadline, f)
                    .await
                    .map(|r| (LaneKind::Arbitration, r)),
                (None, Some(f)) => tokio::time::timeout_at(deadline, f)
                    .await
                    .map(|r| (LaneKind::Data, r)),
                (Some(fa), Some(fd)) => {
                    tokio::time::timeout_at(deadline, async {
                        tokio::select! {
                            r = fa => (LaneKind::Arbitration, r),
                            r = fd => (LaneKind::Data, r),
                        }
                    })
                    .await
                }
            };
            let Ok((lane, (id, r))) = done else {
                tracing::warn!("disk operations still pending at exit; abandoned");
                return;
            };
            self.lane(lane).in_flight = None;
            let now = self.now();
            self.node.disk_done(now, id, r);
            for a in self.node.take_actions() {
                match a {
                    Action::Disk { id, disk, op } => self.queue_disk(id, disk, op),
                    Action::Send { net, env } => {
                        let _ = self.transport.send(net, &env).await;
                    }
                    // The loop is ending: its readers' replies are dropped.
                    Action::ReadReady { .. } | Action::ReadRefused { .. } => {}
                    other => {
                        if let Some(tx) = &self.io.events {
                            let _ = tx.send(other);
                        }
                    }
                }
            }
        }
    }

    fn publish(&mut self) {
        let role = self.node.arbiter().role();
        if !same_step(role, &self.logged_role) {
            tracing::info!(arbitration = %role_text(role), "quorum arbitration");
            self.logged_role = role.clone();
        }
        let now = self.now();
        let acting_until = self.node.acting_owner_until(now).map(|d| {
            // An own vote that never expires (a one-node majority).
            self.start
                .checked_add(d)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400))
        });
        log_lease_end(&mut self.lease_end, acting_until);
        let Some(tx) = &self.io.status else { return };
        let status = NodeStatus {
            view: self.node.view().cloned(),
            acting_owner: self.node.is_acting_owner(now),
            acting_until,
            writes_held: self.node.writes_held(),
            stopped: self.stopped(),
            phase: NodePhase::of(self.node.phase()),
            db_seq: self.node.db().seq,
            db_current: self.node.db_current(),
            incarnation: self.node.incarnation(),
            arbitration: role_text(role),
            heard: self
                .node
                .last_heard()
                .into_iter()
                .map(|(id, at)| (id, at.map(|d| self.start + d)))
                .collect(),
        };
        // A renewal that only moves the lease's end updates the value
        // without waking the watchers: readers check it when they look.
        tx.send_if_modified(|s| {
            let notify = NodeStatus {
                acting_until: s.acting_until,
                heard: s.heard.clone(),
                ..status.clone()
            } != *s;
            *s = status;
            notify
        });
    }
}

/// Logs the instant a quorum-owner lease ran out, once the loop sees it
/// has: a node stopped (SIGSTOP) past its lease logs this when it runs
/// again, with the lease's end (wall clock), the instant it stopped
/// acting. The chaos role checker ends the owner role there, not at the
/// later line (docs/chaos.md, "Checkers").
fn log_lease_end(last: &mut Option<Instant>, acting_until: Option<Instant>) {
    let ended = match (*last, acting_until) {
        (Some(end), None) if end <= Instant::now() => Some(end),
        _ => None,
    };
    *last = acting_until;
    if let Some(end) = ended {
        let ago = Instant::now().saturating_duration_since(end);
        let wall = busrig_lograte::text::now_ms().saturating_sub(ago.as_millis() as u64);
        tracing::info!(
            lease_end = %busrig_lograte::text::rfc3339(wall),
            ago_ms = ago.as_millis() as u64,
            "quorum-owner lease ran out"
        );
    }
}

async fn recv_command(rx: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin endpoint answers 409 with these messages word for word.
    #[test]
    fn propose_error_messages() {
        assert_eq!(
            ProposeError::NotAccepting.to_string(),
            "this node cannot take updates now (not a member, or no quorum owner)"
        );
        assert_eq!(
            ProposeError::Rejected("no such key".into()).to_string(),
            "no such key"
        );
    }
}
