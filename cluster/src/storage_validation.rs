//! Storage validation against any iSCSI target (`busrig disk validate`):
//! the checks a failover cluster's validation wizard runs on shared disks
//! before it trusts them, played from one machine with one I_T nexus per
//! simulated node. Not to be confused with [`crate::validate`], which
//! checks a cluster file.
//!
//! The checks carry the names of the storage tests of the Windows
//! Server validation wizard:
//!
//! ```text
//! list-disks            List Potential Cluster Disks: every node sees every
//!                       disk (INQUIRY, READ CAPACITY), and nobody else uses it
//! vpd                   Validate SCSI Device Vital Product Data (VPD): a
//!                       logical-unit identifier in page 83h, the same from
//!                       every node and unique per disk; a serial in page 80h
//! persistent-reservation Validate SCSI-3 Persistent Reservation: register,
//!                       read keys and reservation from every nexus, reserve,
//!                       preempt, preempt and abort, release, clear; writes
//!                       of non-holders refused
//! arbitration           Validate Disk Arbitration: each node wins an
//!                       uncontested PR challenge; a live owner defends
//!                       against the next node's challenge
//! scsi2-arbitration     the same with SCSI-2 challenge (bus reset, wait,
//!                       RESERVE) and defense (renewal), as MSCS 2003 did
//! multiple-arbitration  Validate Multiple Arbitration: every node
//!                       challenges at once (PR, then SCSI-2); exactly one wins
//! disk-failover         Validate Disk Failover: ownership moves round the
//!                       nodes as each owner fails; the data stays and the
//!                       failed owner's writes are refused
//! simultaneous-failover Validate Simultaneous Failover: every disk moves
//!                       from one node to another at once
//! disk-access-latency   Validate Disk Access Latency: read and write
//!                       latency from every node against the arbitration
//!                       timing
//! ```
//!
//! Challenge and defense are the cluster's own: every arbitration runs
//! [`Arbiter`], the state machine the nodes use (docs/semantics.md "Timing
//! profiles"), through a small driver here, and its disk operations go
//! through [`crate::driver::disk::issue`]. Only the bus reset differs: a
//! target that refuses TARGET WARM RESET is challenged with LOGICAL UNIT
//! RESET instead, and the check says so (a warning).
//!
//! The checks write: each disk's last [`SCRATCH_BLOCKS`] blocks are read
//! first and written back at the end, and every registration and
//! reservation the run made is removed (PR CLEAR, RELEASE). A disk that
//! someone else holds or has registered with is left alone and fails
//! `list-disks`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busrig_initiator::{Disk, Error, IscsiUrl, Isid, Session, SessionConfig};
use busrig_proto::scsi::pr::{PrOutAction, PrOutParams, PrType};
use busrig_proto::scsi::sense::SenseKey;
use busrig_proto::scsi::vpd::Vpd;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::arbiter::{ArbOut, Arbiter, DiskOp, DiskResult};
use crate::config::{QuorumModel, Timing};
use crate::driver::disk::{issue, map_result};

/// Blocks at the end of each disk that the checks write (saved first and
/// written back at the end).
pub const SCRATCH_BLOCKS: u64 = 8;

/// The top 24 bits of every reservation key a run registers ("BRV"), so
/// that keys a run interrupted before its cleanup left behind are known
/// as ours and cleared by the next run.
pub const KEY_PREFIX: u64 = 0x42_52_56 << 40;

/// The initiator names of the simulated nodes are this prefix and the
/// node name (docs/semantics.md: a node's name ends its initiator name).
pub const DEFAULT_INITIATOR_PREFIX: &str = "iqn.2026-11.io.busrig.validate:";

/// At most this many simulated nodes (a switched fabric's eight, and room
/// for more).
pub const MAX_NODES: usize = 16;

/// One of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    ListDisks,
    Vpd,
    PersistentReservation,
    Arbitration,
    Scsi2Arbitration,
    MultipleArbitration,
    DiskFailover,
    SimultaneousFailover,
    DiskAccessLatency,
}

impl CheckId {
    /// Every check, in the order they run.
    pub const ALL: [CheckId; 9] = [
        CheckId::ListDisks,
        CheckId::Vpd,
        CheckId::PersistentReservation,
        CheckId::Arbitration,
        CheckId::Scsi2Arbitration,
        CheckId::MultipleArbitration,
        CheckId::DiskFailover,
        CheckId::SimultaneousFailover,
        CheckId::DiskAccessLatency,
    ];

    /// The short name (`--check NAME`, the JSON's `check`).
    pub fn name(self) -> &'static str {
        match self {
            CheckId::ListDisks => "list-disks",
            CheckId::Vpd => "vpd",
            CheckId::PersistentReservation => "persistent-reservation",
            CheckId::Arbitration => "arbitration",
            CheckId::Scsi2Arbitration => "scsi2-arbitration",
            CheckId::MultipleArbitration => "multiple-arbitration",
            CheckId::DiskFailover => "disk-failover",
            CheckId::SimultaneousFailover => "simultaneous-failover",
            CheckId::DiskAccessLatency => "disk-access-latency",
        }
    }

    /// The validation wizard's name of the test.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::ListDisks => "List Potential Cluster Disks",
            CheckId::Vpd => "Validate SCSI Device Vital Product Data (VPD)",
            CheckId::PersistentReservation => "Validate SCSI-3 Persistent Reservation",
            CheckId::Arbitration => "Validate Disk Arbitration",
            CheckId::Scsi2Arbitration => "Validate Disk Arbitration (SCSI-2)",
            CheckId::MultipleArbitration => "Validate Multiple Arbitration",
            CheckId::DiskFailover => "Validate Disk Failover",
            CheckId::SimultaneousFailover => "Validate Simultaneous Failover",
            CheckId::DiskAccessLatency => "Validate Disk Access Latency",
        }
    }

    /// The check named `name` ([`CheckId::name`]).
    pub fn parse(name: &str) -> Option<CheckId> {
        CheckId::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// How a check ended: the cluster file check's pass, warn or fail.
pub use crate::validate::Verdict;

/// One check's result on one disk (or on all of them).
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: CheckId,
    pub title: &'static str,
    /// The disk's URL (credentials left out); `None` for all disks at once.
    pub disk: Option<String>,
    pub verdict: Verdict,
    /// What was shown, or what went wrong.
    pub reason: String,
    /// The `busrig disk` command that showed it (the failing one for a fail).
    pub command: Option<String>,
    pub elapsed_ms: u64,
    /// Measurements (latency).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// A simulated node: its name and I_T nexus.
#[derive(Debug, Clone, Serialize)]
pub struct NodeIdentity {
    pub name: String,
    pub initiator: String,
    pub isid: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: Vec<NodeIdentity>,
    pub disks: Vec<String>,
    pub timing: &'static str,
    pub results: Vec<CheckResult>,
}

impl Report {
    /// How many results have verdict `v`.
    pub fn count(&self, v: Verdict) -> usize {
        self.results.iter().filter(|r| r.verdict == v).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Verdict::Fail) > 0
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub urls: Vec<IscsiUrl>,
    /// Simulated nodes, 2 to [`MAX_NODES`].
    pub nodes: usize,
    pub timing: Timing,
    /// `fast` or `mscs2003`, for the report.
    pub timing_name: &'static str,
    pub initiator_prefix: String,
    /// The checks to run; empty runs all.
    pub checks: Vec<CheckId>,
    /// Reads and writes per node and disk in the latency check.
    pub latency_samples: u32,
}

/// Why the run could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Fewer than 2 or more than [`MAX_NODES`] nodes.
    #[error("--nodes must be between 2 and {MAX_NODES}, not {0}")]
    Nodes(usize),
    /// No disk URL.
    #[error("no disk URL given")]
    NoDisks,
    /// A URL names no LUN.
    #[error("{0}: the URL names no LUN")]
    NoLun(String),
    /// The same URL twice.
    #[error("{0} is given twice")]
    Duplicate(String),
}

/// A check step that went wrong: what, and the command that showed it.
#[derive(Debug)]
struct Failed {
    reason: String,
    command: Option<String>,
}

impl Failed {
    fn new(reason: impl Into<String>) -> Failed {
        Failed {
            reason: reason.into(),
            command: None,
        }
    }
}

/// A check that ran to its end: pass or warn, what it showed, and the
/// command that showed it.
struct Shown {
    verdict: Verdict,
    reason: String,
    command: Option<String>,
    details: Value,
}

impl Shown {
    fn pass(reason: impl Into<String>, command: String) -> Shown {
        Shown {
            verdict: Verdict::Pass,
            reason: reason.into(),
            command: Some(command),
            details: Value::Null,
        }
    }

    /// A warning when `warnings` is not empty (they lead the reason).
    fn with_warnings(mut self, warnings: &[String]) -> Shown {
        if !warnings.is_empty() {
            self.verdict = Verdict::Warn;
            self.reason = format!("{}; {}", warnings.join("; "), self.reason);
        }
        self
    }
}

type Outcome = Result<Shown, Failed>;

/// One node's I_T nexus to one disk.
struct Nexus {
    /// The node's index, from 0.
    node: usize,
    name: String,
    initiator: String,
    isid: Isid,
    /// The disk's URL without credentials, for the commands shown.
    url: String,
    disk: Disk,
    key: u64,
    /// The arbiter's last operation, as a `busrig disk` verb.
    last: Mutex<String>,
    /// Set when TARGET WARM RESET was refused and LOGICAL UNIT RESET used.
    reset_refused: Mutex<Option<String>>,
}

fn hex(k: u64) -> String {
    format!("0x{k:x}")
}

/// The `busrig disk` verb that performs `op` (sg_persist's option names).
fn op_verb(op: &DiskOp) -> String {
    match op {
        DiskOp::Reserve => "reserve".into(),
        DiskOp::Release => "release".into(),
        DiskOp::BusReset => "reset target".into(),
        DiskOp::PrRegister { key } => format!("pr register-ignore --param-sark {}", hex(*key)),
        DiskOp::PrUnregister { key } => format!("pr register --param-rk {}", hex(*key)),
        DiskOp::PrReserve { key } => format!("pr reserve --param-rk {} --prout-type 1", hex(*key)),
        DiskOp::PrPreempt { key, victim_key } => format!(
            "pr preempt --param-rk {} --param-sark {} --prout-type 1",
            hex(*key),
            hex(*victim_key)
        ),
        DiskOp::PrReadKeys => "pr read-keys".into(),
        DiskOp::PrReadReservation => "pr read-reservation".into(),
        DiskOp::Write { offset, data } => format!("write (offset {offset}, {} bytes)", data.len()),
        DiskOp::Read { offset, len } => format!("read (offset {offset}, {len} bytes)"),
    }
}

impl Nexus {
    fn command(&self, verb: &str) -> String {
        format!(
            "busrig disk {} --initiator {} --isid {} {verb}",
            self.url, self.initiator, self.isid
        )
    }

    fn failed(&self, verb: &str, why: impl std::fmt::Display) -> Failed {
        Failed {
            reason: format!("{}: {verb}: {why}", self.name),
            command: Some(self.command(verb)),
        }
    }

    /// Runs one step; an error fails the check with this verb's command.
    async fn run<T>(
        &self,
        verb: &str,
        f: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Failed> {
        f.await.map_err(|e| self.failed(verb, e))
    }

    /// Runs a step that must meet RESERVATION CONFLICT.
    async fn refused<T>(
        &self,
        verb: &str,
        f: impl Future<Output = Result<T, Error>>,
    ) -> Result<(), Failed> {
        match f.await {
            Err(Error::ReservationConflict) => Ok(()),
            Ok(_) => Err(self.failed(verb, "succeeded; RESERVATION CONFLICT expected")),
            Err(e) => Err(self.failed(verb, format!("{e}; RESERVATION CONFLICT expected"))),
        }
    }

    async fn pr(&self, action: PrOutAction, rk: u64, sark: u64) -> (String, Result<(), Error>) {
        let ty = action.uses_type().then_some(PrType::WriteExclusive);
        let verb = pr_verb(action, rk, sark);
        let params = PrOutParams {
            reservation_key: rk,
            service_action_key: sark,
            ..PrOutParams::default()
        };
        (verb, self.disk.pr_out(action, ty, &params).await)
    }

    /// A PR OUT step that must succeed.
    async fn pr_ok(&self, action: PrOutAction, rk: u64, sark: u64) -> Result<String, Failed> {
        let (verb, r) = self.pr(action, rk, sark).await;
        r.map_err(|e| self.failed(&verb, e))?;
        Ok(verb)
    }

    fn last(&self) -> String {
        self.last.lock().expect("last op").clone()
    }

    /// Performs an arbiter's operation: the cluster's own mapping, except
    /// that a refused TARGET WARM RESET falls back to LOGICAL UNIT RESET
    /// (SAM-5 §7.7: it too clears this LUN's SCSI-2 reservation).
    async fn exec(&self, op: DiskOp) -> DiskResult {
        *self.last.lock().expect("last op") = op_verb(&op);
        if op != DiskOp::BusReset {
            return issue(&self.disk, op).await;
        }
        match self.disk.target_warm_reset().await {
            Err(e @ Error::TaskManagement { .. }) => {
                *self.reset_refused.lock().expect("reset note") = Some(e.to_string());
                *self.last.lock().expect("last op") = "reset lun".into();
                map_result(self.disk.lun_reset().await.map(|()| None))
            }
            r => map_result(r.map(|()| None)),
        }
    }

    /// The byte a node's writes repeat: its own, so whoever reads a
    /// block knows whose write landed.
    fn pattern(&self) -> u8 {
        0xa0 + self.node as u8 + 1
    }

    /// One block of [`Nexus::pattern`], and the `busrig disk` verb that
    /// writes it at `lba`. Without FUA: an owner's write that waits for
    /// the medium would hold up its renewals queued behind it.
    fn stamp(&self, lba: u64, block_length: u32) -> (String, Bytes) {
        let verb = format!("write {lba} --pattern {:#04x} --count 1", self.pattern());
        (
            verb,
            Bytes::from(vec![self.pattern(); block_length as usize]),
        )
    }
}

fn pr_verb(action: PrOutAction, rk: u64, sark: u64) -> String {
    let name = match action {
        PrOutAction::Register => "register",
        PrOutAction::RegisterAndIgnoreExistingKey => "register-ignore",
        PrOutAction::Reserve => "reserve",
        PrOutAction::Release => "release",
        PrOutAction::Clear => "clear",
        PrOutAction::Preempt => "preempt",
        PrOutAction::PreemptAndAbort => "preempt-abort",
        PrOutAction::RegisterAndMove => "register-move",
    };
    let mut v = format!("pr {name}");
    if rk != 0 {
        v += &format!(" --param-rk {}", hex(rk));
    }
    if sark != 0 {
        v += &format!(" --param-sark {}", hex(sark));
    }
    if action.uses_type() {
        v += " --prout-type 1";
    }
    v
}

/// One disk under test: a nexus from every node, its geometry, and the
/// scratch blocks saved before the first write.
struct DiskUnderTest {
    url: String,
    nexus: Vec<Arc<Nexus>>,
    block_length: u32,
    scratch: u64,
    saved: Option<Bytes>,
    /// Why it is left out of the checks that write (from `list-disks`).
    excluded: Option<String>,
}

/// How an arbiter run ended.
#[derive(Debug)]
enum DriveEnd {
    /// Acting as owner (the arbiter said Online).
    Online,
    /// Lost, with the arbiter's reason.
    Lost(String),
    /// The stop future resolved.
    Stopped,
}

/// Drives `arb` against `nx`: performs the operations it asks for and
/// feeds their results and the clock back, until it reports Online (with
/// `until_online`), reports Lost, or `stop` resolves.
async fn drive(
    nx: &Nexus,
    arb: &mut Arbiter,
    clock: Instant,
    first: Vec<ArbOut>,
    until_online: bool,
    stop: impl Future<Output = ()>,
) -> DriveEnd {
    tokio::pin!(stop);
    let mut pending: VecDeque<ArbOut> = first.into();
    let mut online = false;
    loop {
        while let Some(out) = pending.pop_front() {
            match out {
                ArbOut::Issue(op) => {
                    let r = nx.exec(op).await;
                    pending.extend(arb.on_result(clock.elapsed(), r));
                }
                ArbOut::Won => tracing::debug!(node = %nx.name, "won arbitration"),
                ArbOut::Online => online = true,
                ArbOut::Lost(why) => return DriveEnd::Lost(why),
            }
        }
        if online && until_online {
            return DriveEnd::Online;
        }
        let wake = arb.next_deadline(clock.elapsed()).map(|d| clock + d);
        tokio::select! {
            _ = &mut stop => return DriveEnd::Stopped,
            _ = sleep_until(wake) => pending.extend(arb.tick(clock.elapsed())),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The whole run's context.
struct Run {
    timing: Timing,
    clock: Instant,
    run_id: u32,
    latency_samples: u32,
}

impl Run {
    /// The longest a challenge may take before it counts as stuck: three
    /// times the wait and online delay, and the command timeout.
    fn challenge_limit(&self) -> Duration {
        (self.timing.challenge_wait + self.timing.online_delay) * 3 + command_timeout(&self.timing)
    }

    fn arbiter(&self, model: &QuorumModel, nx: &Nexus) -> Arbiter {
        Arbiter::new(model, self.timing, nx.key)
    }

    /// A challenge by `nx` from scratch; Online or a failure.
    async fn challenge(&self, nx: &Nexus, model: &QuorumModel) -> (Arbiter, DriveEnd) {
        let mut arb = self.arbiter(model, nx);
        let first = arb.become_challenger(self.clock.elapsed());
        let limit = tokio::time::sleep(self.challenge_limit());
        let end = drive(nx, &mut arb, self.clock, first, true, limit).await;
        (arb, end)
    }

    /// [`Run::challenge`] that must end Online.
    async fn take(&self, nx: &Nexus, model: &QuorumModel) -> Result<Arbiter, Failed> {
        match self.challenge(nx, model).await {
            (arb, DriveEnd::Online) => Ok(arb),
            (_, DriveEnd::Lost(why)) => {
                Err(nx.failed(&nx.last(), format!("lost an uncontested challenge ({why})")))
            }
            (_, DriveEnd::Stopped) => Err(nx.failed(
                &nx.last(),
                format!(
                    "the challenge did not finish within {:?}",
                    self.challenge_limit()
                ),
            )),
        }
    }

    /// Gives the disk up cleanly (RELEASE, or unregistering the PR key).
    async fn release(&self, nx: &Nexus, arb: &mut Arbiter) -> Result<(), Failed> {
        if let Some(op) = arb.release() {
            let verb = op_verb(&op);
            if let DiskResult::Conflict | DiskResult::Failed(_) = nx.exec(op).await {
                return Err(nx.failed(&verb, "releasing the disk failed"));
            }
        }
        Ok(())
    }
}

/// Command and login limits of the simulated nodes, as the cluster's own
/// (`driver::node_session_config`): twice the challenge wait, at least 5 s.
fn command_timeout(t: &Timing) -> Duration {
    (t.challenge_wait * 2).max(Duration::from_secs(5))
}

fn node_name(i: usize) -> String {
    format!("NODE{}", i + 1)
}

/// The ISID of simulated node `i`: random format, "bV" for busrig
/// validate, then the node number, so every login of the node is the same
/// I_T nexus.
fn node_isid(i: usize) -> Isid {
    Isid([0x80, 0x62, 0x56, 0x4c, 0x00, (i + 1) as u8])
}

/// Runs the checks and reports every result; only bad options are errors.
pub async fn validate(opts: ValidateOptions) -> Result<Report, ValidateError> {
    if !(2..=MAX_NODES).contains(&opts.nodes) {
        return Err(ValidateError::Nodes(opts.nodes));
    }
    if opts.urls.is_empty() {
        return Err(ValidateError::NoDisks);
    }
    let mut seen = std::collections::HashSet::new();
    for u in &opts.urls {
        if u.lun.is_none() {
            return Err(ValidateError::NoLun(u.redacted()));
        }
        if !seen.insert(u.redacted()) {
            return Err(ValidateError::Duplicate(u.redacted()));
        }
    }
    let run = Run {
        timing: opts.timing,
        clock: Instant::now(),
        run_id: rand::random(),
        latency_samples: opts.latency_samples.max(1),
    };
    let identities: Vec<NodeIdentity> = (0..opts.nodes)
        .map(|i| NodeIdentity {
            name: node_name(i),
            initiator: format!("{}{}", opts.initiator_prefix, node_name(i)),
            isid: node_isid(i).to_string(),
        })
        .collect();
    let wanted = |c: CheckId| opts.checks.is_empty() || opts.checks.contains(&c);
    let mut results = Vec::new();
    let (mut disks, open_failures) = open_disks(&run, &opts, &identities).await;
    // list-disks always runs: it decides which disks the other checks touch.
    for (d, failure) in disks.iter_mut().zip(open_failures) {
        let t = Instant::now();
        let outcome = match failure {
            Some(f) => Err(f),
            None => list_disk(d).await,
        };
        if let Err(f) = &outcome {
            d.excluded = Some(f.reason.clone());
        }
        if wanted(CheckId::ListDisks) {
            results.push(result(CheckId::ListDisks, Some(&d.url), t, outcome));
        }
    }
    if wanted(CheckId::Vpd) {
        results.extend(vpd_checks(&disks).await);
    }
    for id in [
        CheckId::PersistentReservation,
        CheckId::Arbitration,
        CheckId::Scsi2Arbitration,
        CheckId::MultipleArbitration,
        CheckId::DiskFailover,
    ] {
        if !wanted(id) {
            continue;
        }
        for d in &disks {
            let t = Instant::now();
            let outcome = match &d.excluded {
                Some(why) => Err(Failed::new(format!("not run: {why}"))),
                None => {
                    let o = match id {
                        CheckId::PersistentReservation => persistent_reservation(d).await,
                        CheckId::Arbitration => arbitration(&run, d, QuorumModel::DiskPr).await,
                        CheckId::Scsi2Arbitration => {
                            arbitration(&run, d, QuorumModel::DiskScsi2).await
                        }
                        CheckId::MultipleArbitration => multiple_arbitration(&run, d).await,
                        _ => disk_failover(&run, d).await,
                    };
                    settle(o, clean_up(d).await)
                }
            };
            results.push(result(id, Some(&d.url), t, outcome));
        }
    }
    if wanted(CheckId::SimultaneousFailover) {
        let t = Instant::now();
        let usable: Vec<&DiskUnderTest> = disks.iter().filter(|d| d.excluded.is_none()).collect();
        let mut outcome = match usable.is_empty() {
            true => Err(Failed::new("not run: no disk passed list-disks")),
            false => simultaneous_failover(&run, &usable).await,
        };
        for d in &usable {
            outcome = settle(outcome, clean_up(d).await);
        }
        results.push(result(CheckId::SimultaneousFailover, None, t, outcome));
    }
    if wanted(CheckId::DiskAccessLatency) {
        for d in &disks {
            let t = Instant::now();
            let outcome = match &d.excluded {
                Some(why) => Err(Failed::new(format!("not run: {why}"))),
                None => disk_access_latency(&run, d).await,
            };
            results.push(result(CheckId::DiskAccessLatency, Some(&d.url), t, outcome));
        }
    }
    for d in &disks {
        if let Err(f) = restore(d).await {
            results.push(result(
                CheckId::ListDisks,
                Some(&d.url),
                Instant::now(),
                Err(f),
            ));
        }
    }
    for d in &disks {
        for nx in &d.nexus {
            if let Err(e) = nx.disk.session().logout().await {
                tracing::debug!(node = %nx.name, error = %e, "logout");
            }
        }
    }
    Ok(Report {
        nodes: identities,
        disks: disks.iter().map(|d| d.url.clone()).collect(),
        timing: opts.timing_name,
        results,
    })
}

fn result(id: CheckId, disk: Option<&str>, t: Instant, o: Outcome) -> CheckResult {
    let elapsed_ms = t.elapsed().as_millis() as u64;
    let (verdict, reason, command, details) = match o {
        Ok(s) => (s.verdict, s.reason, s.command, s.details),
        Err(f) => (Verdict::Fail, f.reason, f.command, Value::Null),
    };
    CheckResult {
        check: id,
        title: id.title(),
        disk: disk.map(str::to_string),
        verdict,
        reason,
        command,
        elapsed_ms,
        details,
    }
}

/// A check's outcome after its clean-up: a failed clean-up fails a check
/// that passed.
fn settle(o: Outcome, cleanup: Result<(), Failed>) -> Outcome {
    match (o, cleanup) {
        (Ok(_), Err(f)) => Err(Failed {
            reason: format!("clean-up after the check: {}", f.reason),
            command: f.command,
        }),
        (o, _) => o,
    }
}

/// Logs every node in to every target (one session, one I_T nexus, per
/// node and target) and makes a nexus per node and disk.
async fn open_disks(
    run: &Run,
    opts: &ValidateOptions,
    ids: &[NodeIdentity],
) -> (Vec<DiskUnderTest>, Vec<Option<Failed>>) {
    let mut disks: Vec<DiskUnderTest> = opts
        .urls
        .iter()
        .map(|u| DiskUnderTest {
            url: u.redacted(),
            nexus: Vec::new(),
            block_length: 0,
            scratch: 0,
            saved: None,
            excluded: None,
        })
        .collect();
    let mut failures: Vec<Option<Failed>> = (0..disks.len()).map(|_| None).collect();
    let limit = command_timeout(&run.timing);
    for (i, id) in ids.iter().enumerate() {
        let mut sessions: HashMap<(String, Option<String>), Result<Session, String>> =
            HashMap::new();
        for (d, url) in opts.urls.iter().enumerate() {
            let key = (url.portal.socket_addr_string(), url.target.clone());
            if !sessions.contains_key(&key) {
                let cfg = SessionConfig {
                    initiator_name: id.initiator.clone(),
                    initiator_alias: Some(id.name.clone()),
                    isid: node_isid(i),
                    command_timeout: limit,
                    login_timeout: limit,
                    recovery_timeout: limit,
                    ..SessionConfig::default()
                };
                let s = Session::open(url, cfg).await.map_err(|e| e.to_string());
                sessions.insert(key.clone(), s);
            }
            match &sessions[&key] {
                Ok(s) => {
                    let lun = url.lun.expect("checked: every URL names a LUN");
                    let shown_url = disks[d].url.clone();
                    disks[d].nexus.push(Arc::new(Nexus {
                        node: i,
                        name: id.name.clone(),
                        initiator: id.initiator.clone(),
                        isid: node_isid(i),
                        url: shown_url,
                        disk: Disk::new(s.clone(), lun).with_reset_retries(4),
                        key: KEY_PREFIX | (u64::from(run.run_id) << 8) | (i as u64 + 1),
                        last: Mutex::new(String::new()),
                        reset_refused: Mutex::new(None),
                    }));
                }
                Err(e) => {
                    if failures[d].is_none() {
                        failures[d] = Some(Failed::new(format!(
                            "{}: login to {} failed: {e}",
                            id.name, disks[d].url
                        )));
                    }
                }
            }
        }
    }
    (disks, failures)
}

/// `list-disks` for one disk: every node sees a direct-access disk of the
/// same size, nobody else holds or registered with it; its scratch
/// blocks are saved.
async fn list_disk(d: &mut DiskUnderTest) -> Outcome {
    let mut seen: Option<((u64, u32), String, String)> = None;
    for nx in &d.nexus {
        let inq = nx.run("inquiry", nx.disk.inquiry()).await?;
        if !inq.logical_unit_present() {
            return Err(nx.failed("inquiry", "no logical unit at this LUN"));
        }
        if inq.device_type != 0 {
            return Err(nx.failed(
                "inquiry",
                format!(
                    "peripheral device type {:#04x}, not a direct-access block device",
                    inq.device_type
                ),
            ));
        }
        let cap = nx.run("capacity", nx.disk.capacity()).await?;
        let this = (cap.blocks, cap.block_length);
        match seen {
            None => seen = Some((this, inq.vendor.clone(), inq.product.clone())),
            Some((s, ..)) if s != this => {
                return Err(nx.failed(
                    "capacity",
                    format!(
                        "{} blocks of {} bytes, but {} sees {} of {}",
                        this.0, this.1, d.nexus[0].name, s.0, s.1
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let Some(((blocks, block_length), vendor, product)) = seen else {
        return Err(Failed::new("no node reached the disk"));
    };
    if blocks < SCRATCH_BLOCKS * 2 {
        return Err(Failed::new(format!(
            "{blocks} blocks: too small for the {SCRATCH_BLOCKS} scratch blocks"
        )));
    }
    d.block_length = block_length;
    d.scratch = blocks - SCRATCH_BLOCKS;
    let first = d.nexus[0].clone();
    in_use(&first).await?;
    let read_verb = format!("read {} {SCRATCH_BLOCKS}", d.scratch);
    d.saved = Some(
        first
            .run(
                &read_verb,
                first.disk.read(d.scratch, SCRATCH_BLOCKS as u32),
            )
            .await?,
    );
    let bytes = blocks * u64::from(block_length);
    Ok(Shown::pass(
        format!(
            "{} nodes see {vendor} {product}, {blocks} blocks of {block_length} bytes ({} MiB); no registrations, no reservation",
            d.nexus.len(),
            bytes >> 20
        ),
        first.command("pr read-reservation"),
    ))
}

/// Fails when someone else uses the disk: PR registrations that are not
/// a previous run's (those are cleared), or any reservation.
async fn in_use(nx: &Nexus) -> Result<(), Failed> {
    let keys = nx.run("pr read-keys", nx.disk.pr_read_keys()).await?.keys;
    let rr = nx
        .run("pr read-reservation", nx.disk.pr_read_reservation())
        .await?;
    let ours = |k: &u64| k & (0xff_ffff << 40) == KEY_PREFIX;
    if !keys.iter().all(ours) {
        let list: Vec<String> = keys.iter().map(|k| hex(*k)).collect();
        return Err(nx.failed(
            "pr read-keys",
            format!(
                "the disk is in use: keys {} are registered; validate leaves it alone",
                list.join(", ")
            ),
        ));
    }
    if !keys.is_empty() || rr.reservation.is_some() {
        tracing::info!(url = %nx.url, keys = keys.len(), "clearing what an interrupted validate run left");
        clear_pr(nx).await?;
    }
    // A SCSI-2 reservation of another initiator conflicts even with READ.
    match nx.disk.test_unit_ready().await {
        Err(Error::ReservationConflict) => Err(nx.failed(
            "read",
            "the disk is in use: another initiator holds a SCSI-2 reservation",
        )),
        _ => match nx.disk.read(0, 1).await {
            Err(Error::ReservationConflict) => Err(nx.failed(
                "read 0 1",
                "the disk is in use: another initiator holds a SCSI-2 reservation",
            )),
            _ => Ok(()),
        },
    }
}

/// Removes every registration and the reservation: register, then CLEAR.
async fn clear_pr(nx: &Nexus) -> Result<(), Failed> {
    nx.pr_ok(PrOutAction::RegisterAndIgnoreExistingKey, 0, nx.key)
        .await?;
    nx.pr_ok(PrOutAction::Clear, nx.key, 0).await?;
    Ok(())
}

/// After each check: no registrations, no reservations (SCSI-2 RELEASE
/// from every nexus is GOOD for a non-holder).
async fn clean_up(d: &DiskUnderTest) -> Result<(), Failed> {
    clear_pr(&d.nexus[0]).await?;
    for nx in &d.nexus {
        nx.run("release", nx.disk.release6()).await?;
        // Unit attentions the check left are its own business.
        nx.disk.take_unit_attentions();
    }
    Ok(())
}

/// Writes the saved scratch blocks back.
async fn restore(d: &DiskUnderTest) -> Result<(), Failed> {
    let (Some(saved), Some(nx)) = (&d.saved, d.nexus.first()) else {
        return Ok(());
    };
    let verb = format!("write {} --in SAVED", d.scratch);
    nx.run(&verb, nx.disk.write(d.scratch, saved.clone(), true))
        .await
        .map_err(|f| Failed {
            reason: format!("restoring the scratch blocks: {}", f.reason),
            command: f.command,
        })
}

/// `vpd`: page 83h has a logical-unit designator (NAA, EUI-64 or SCSI
/// name string, SPC-4 §7.8.6), every node sees the same one, no two disks
/// share one; page 80h has a serial number.
async fn vpd_checks(disks: &[DiskUnderTest]) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut serials: Vec<(String, String)> = Vec::new();
    for d in disks {
        let t = Instant::now();
        let o = match &d.excluded {
            Some(why) => Err(Failed::new(format!("not run: {why}"))),
            None => vpd_disk(d, &mut ids, &mut serials).await,
        };
        out.push(result(CheckId::Vpd, Some(&d.url), t, o));
    }
    out
}

async fn vpd_disk(
    d: &DiskUnderTest,
    ids: &mut Vec<(String, String)>,
    serials: &mut Vec<(String, String)>,
) -> Outcome {
    let mut warnings = Vec::new();
    let mut first: Option<(String, String)> = None;
    for nx in &d.nexus {
        let (v, _) = nx.run("vpd 0x83", nx.disk.vpd(0x83)).await?;
        let Vpd::DeviceIdentification { designators } = v else {
            return Err(nx.failed("vpd 0x83", "not a Device Identification page"));
        };
        // Logical-unit association (0), designator types that identify
        // the LU worldwide: EUI-64 (2), NAA (3), SCSI name string (8).
        let id = designators
            .iter()
            .filter(|g| g.association == 0)
            .find(|g| matches!(g.designator_type, 2 | 3 | 8))
            .or_else(|| designators.iter().find(|g| g.association == 0));
        let Some(id) = id else {
            return Err(nx.failed(
                "vpd 0x83",
                "no designator with logical-unit association: the disk has no unique identifier",
            ));
        };
        if !matches!(id.designator_type, 2 | 3 | 8) && first.is_none() {
            warnings.push(format!(
                "its only logical-unit designator is of type {} (not NAA, EUI-64 or SCSI name string)",
                id.type_name
            ));
        }
        let id_text = format!("{} {}", id.type_name, id.value);
        let serial = match nx.run("vpd 0x80", nx.disk.vpd(0x80)).await {
            Ok((Vpd::UnitSerialNumber { serial }, _)) => serial.trim().to_string(),
            Ok(_) => String::new(),
            Err(f) => {
                if first.is_none() {
                    warnings.push(format!("no serial number ({})", f.reason));
                }
                String::new()
            }
        };
        match &first {
            None => first = Some((id_text, serial)),
            Some((i, s)) if *i != id_text || *s != serial => {
                return Err(nx.failed(
                    "vpd 0x83",
                    format!(
                        "identifier {id_text} serial {serial:?}, but {} sees {i} serial {s:?}",
                        d.nexus[0].name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let (id, serial) = first.expect("every disk has a nexus per node");
    if let Some((other, _)) = ids.iter().find(|(i, _)| *i == id) {
        return Err(Failed {
            reason: format!(
                "the same identifier ({id}) as {other}: one LUN reached twice, or not unique"
            ),
            command: Some(d.nexus[0].command("vpd 0x83")),
        });
    }
    ids.push((id.clone(), d.url.clone()));
    if serial.is_empty() {
        if !warnings.iter().any(|w| w.starts_with("no serial")) {
            warnings.push("an empty serial number".into());
        }
    } else if let Some((_, other)) = serials.iter().find(|(s, _)| *s == serial) {
        warnings.push(format!("the same serial number as {other}"));
    } else {
        serials.push((serial.clone(), d.url.clone()));
    }
    Ok(Shown::pass(
        format!(
            "identifier {id}, serial {serial:?}, the same from all {} nodes and unique among the disks",
            d.nexus.len()
        ),
        d.nexus[0].command("vpd 0x83"),
    )
    .with_warnings(&warnings))
}

/// `persistent-reservation` (SPC-4 §5.9), with the cluster's Write
/// Exclusive type: every node registers and reads every key; NODE1
/// reserves and every node reads the reservation; NODE2's writes are
/// refused and its REGISTER with a wrong key conflicts (§5.9.7); NODE2
/// preempts NODE1 (§5.9.11.4), whose writes are then refused and which
/// hears REGISTRATIONS PREEMPTED; NODE1 registers again and takes the
/// disk back with PREEMPT AND ABORT (§5.9.11.5); it releases (§5.9.11.2)
/// and clears (§5.9.11.6).
async fn persistent_reservation(d: &DiskUnderTest) -> Outcome {
    let (a, b) = (&d.nexus[0], &d.nexus[1]);
    let stamp_lba = d.scratch;
    let write = |nx: &Arc<Nexus>| nx.stamp(stamp_lba, d.block_length);
    let mut warnings = Vec::new();
    for nx in &d.nexus {
        nx.pr_ok(PrOutAction::Register, 0, nx.key).await?;
    }
    let mut want: Vec<u64> = d.nexus.iter().map(|n| n.key).collect();
    want.sort_unstable();
    for nx in &d.nexus {
        let mut keys = nx.run("pr read-keys", nx.disk.pr_read_keys()).await?.keys;
        keys.sort_unstable();
        if keys != want {
            return Err(nx.failed(
                "pr read-keys",
                format!("keys {keys:x?}, expected every node's {want:x?}"),
            ));
        }
    }
    match a.disk.pr_report_capabilities().await {
        Ok(c) if !c.types().contains(&PrType::WriteExclusive) => {
            return Err(a.failed(
                "pr capabilities",
                "Write Exclusive (type 1) is not among the supported types",
            ))
        }
        Ok(_) => {}
        Err(e) => warnings.push(format!(
            "{}: pr capabilities: {e} (REPORT CAPABILITIES is optional)",
            a.name
        )),
    }
    a.pr_ok(PrOutAction::Reserve, a.key, 0).await?;
    expect_holder(d, Some(a.key)).await?;
    let (verb, data) = write(b);
    b.refused(&verb, b.disk.write(stamp_lba, data, false))
        .await?;
    let read_verb = format!("read {stamp_lba} 1");
    b.run(&read_verb, b.disk.read(stamp_lba, 1)).await?;
    let (verb, data) = write(a);
    a.run(&verb, a.disk.write(stamp_lba, data, false)).await?;
    let (verb, r) = b.pr(PrOutAction::Register, b.key ^ 0xff00, 0x77).await;
    b.refused(&verb, async { r }).await?;
    // What NODE1 hears from here on (SPC-4 §5.9.11.4: 2A/05).
    a.disk.take_unit_attentions();
    b.pr_ok(PrOutAction::Preempt, b.key, a.key).await?;
    expect_holder(d, Some(b.key)).await?;
    let keys = b.run("pr read-keys", b.disk.pr_read_keys()).await?.keys;
    if keys.contains(&a.key) {
        return Err(b.failed(
            "pr read-keys",
            format!("{} is still registered after PREEMPT", hex(a.key)),
        ));
    }
    let (verb, data) = write(a);
    a.refused(&verb, a.disk.write(stamp_lba, data, false))
        .await?;
    let heard = a
        .disk
        .take_unit_attentions()
        .iter()
        .any(|s| s.key == SenseKey::UnitAttention && s.asc == 0x2a && s.ascq == 0x05);
    if !heard {
        warnings.push(format!(
            "{} was not told REGISTRATIONS PREEMPTED (2A/05) on its next command (SPC-4 §5.9.11.4)",
            a.name
        ));
    }
    a.pr_ok(PrOutAction::Register, 0, a.key).await?;
    let shown = a.pr_ok(PrOutAction::PreemptAndAbort, a.key, b.key).await?;
    expect_holder(d, Some(a.key)).await?;
    let (verb, data) = write(b);
    b.refused(&verb, b.disk.write(stamp_lba, data, false))
        .await?;
    a.pr_ok(PrOutAction::Release, a.key, 0).await?;
    expect_holder(d, None).await?;
    a.pr_ok(PrOutAction::Clear, a.key, 0).await?;
    let keys = b.run("pr read-keys", b.disk.pr_read_keys()).await?.keys;
    if !keys.is_empty() {
        return Err(b.failed("pr read-keys", format!("keys {keys:x?} after CLEAR")));
    }
    Ok(Shown::pass(
        format!(
            "{} nodes registered and read every key; {a} reserved Write Exclusive and {b}'s writes were refused; {b} preempted {a}, whose writes were then refused; {a} took it back with PREEMPT AND ABORT, released and cleared",
            d.nexus.len(),
            a = a.name,
            b = b.name
        ),
        a.command(&shown),
    )
    .with_warnings(&warnings))
}

/// Every node reads the reservation: held by `key` (Write Exclusive) or none.
async fn expect_holder(d: &DiskUnderTest, key: Option<u64>) -> Result<(), Failed> {
    for nx in &d.nexus {
        let rr = nx
            .run("pr read-reservation", nx.disk.pr_read_reservation())
            .await?;
        let got = rr.reservation.map(|r| (r.key, r.type_code));
        let want = key.map(|k| (k, PrType::WriteExclusive.code()));
        if got != want {
            let show = |v: Option<(u64, u8)>| match v {
                Some((k, t)) => format!("key {} type {t}", hex(k)),
                None => "no reservation".into(),
            };
            return Err(nx.failed(
                "pr read-reservation",
                format!("{}, expected {}", show(got), show(want)),
            ));
        }
    }
    Ok(())
}

/// `arbitration` (PR) and `scsi2-arbitration`: for each node in turn, an
/// uncontested challenge wins and the winner's write lands; then, while
/// it defends, the next node challenges and must lose, its write refused,
/// and the owner still writes (docs/semantics.md "Timing profiles").
async fn arbitration(run: &Run, d: &DiskUnderTest, model: QuorumModel) -> Outcome {
    let n = d.nexus.len();
    let mut shown = String::new();
    for i in 0..n {
        let (a, b) = (&d.nexus[i], &d.nexus[(i + 1) % n]);
        let mut owner = run.take(a, &model).await?;
        // The owner defends all along: an owner left alone longer than
        // its lease loses its standing (the arbiter makes it challenge
        // again), as a paused node does.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let defend = drive(a, &mut owner, run.clock, Vec::new(), false, async move {
            let _ = stop_rx.await;
        });
        let contest = async {
            let r = contest(run, d, a, b, &model).await;
            let _ = stop_tx.send(());
            r
        };
        let (defended, contested) = tokio::join!(defend, contest);
        if !owner.holds() {
            // The arbiter gave up ownership by itself: a defense came back
            // after the lease had run out, so the owner had to challenge
            // again (docs/semantics.md "Timing profiles"). Slow commands,
            // not the target's reservation rules.
            return Err(a.failed(
                &a.last(),
                format!(
                    "stopped acting as owner: a defense took longer than its {} ms lease (see disk-access-latency)",
                    run.timing.lease(&model).as_millis()
                ),
            ));
        }
        if let DriveEnd::Lost(why) = defended {
            return Err(a.failed(
                &a.last(),
                format!("lost the disk while defending against {} ({why})", b.name),
            ));
        }
        shown = contested?;
        run.release(a, &mut owner).await?;
    }
    let mut warnings = Vec::new();
    if let Some(why) = reset_refused(d) {
        warnings.push(format!(
            "TARGET WARM RESET refused ({why}); challenged with LOGICAL UNIT RESET, which reaches this LUN only"
        ));
    }
    let how = match model {
        QuorumModel::DiskScsi2 => "reset, wait, RESERVE",
        _ => "register, wait, preempt",
    };
    Ok(Shown::pass(
        format!(
            "each of {n} nodes won an uncontested challenge ({how}); each owner defended against the next node's challenge, whose writes were refused"
        ),
        shown,
    )
    .with_warnings(&warnings))
}

/// Why the target refused a SCSI-2 challenger's TARGET WARM RESET, if
/// it did on this disk.
fn reset_refused(d: &DiskUnderTest) -> Option<String> {
    d.nexus
        .iter()
        .find_map(|nx| nx.reset_refused.lock().expect("reset note").clone())
}

/// While `a` owns and defends the disk: `a` writes, `b` challenges and
/// must lose, `b`'s write is refused and `a`'s lands. The command that
/// showed `b` losing.
async fn contest(
    run: &Run,
    d: &DiskUnderTest,
    a: &Nexus,
    b: &Nexus,
    model: &QuorumModel,
) -> Result<String, Failed> {
    let (verb, data) = stamp_write(d, a);
    a.run(&verb, a.disk.write(d.scratch, data, false)).await?;
    let shown = match run.challenge(b, model).await.1 {
        DriveEnd::Lost(_) => b.command(&b.last()),
        DriveEnd::Online => {
            return Err(b.failed(
                &b.last(),
                format!("won its challenge while {} was defending", a.name),
            ))
        }
        DriveEnd::Stopped => return Err(b.failed(&b.last(), "the challenge did not finish")),
    };
    let (verb, data) = stamp_write(d, b);
    b.refused(&verb, b.disk.write(d.scratch, data, false))
        .await?;
    let (verb, data) = stamp_write(d, a);
    a.run(&verb, a.disk.write(d.scratch, data, false)).await?;
    Ok(shown)
}

fn stamp_write(d: &DiskUnderTest, nx: &Nexus) -> (String, Bytes) {
    nx.stamp(d.scratch, d.block_length)
}

/// How one node's part of a multiple arbitration ended.
struct Contender {
    end: DriveEnd,
    /// The winner's write, or the loser's refused one.
    write: Result<(), Failed>,
    /// The winner: how its defense ended (until every contender finished).
    defended: Option<DriveEnd>,
}

/// `multiple-arbitration`: every node challenges at once, with PR and
/// then with SCSI-2; exactly one wins, writes and keeps the disk while
/// the others finish; every loser's write is refused.
async fn multiple_arbitration(run: &Run, d: &DiskUnderTest) -> Outcome {
    let mut shown = String::new();
    let mut warnings = Vec::new();
    for model in [QuorumModel::DiskPr, QuorumModel::DiskScsi2] {
        let n = d.nexus.len();
        let done = Arc::new(tokio::sync::watch::channel(0usize).0);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, nx) in d.nexus.iter().enumerate() {
            let (nx, done, model) = (nx.clone(), done.clone(), model.clone());
            let timing = run.timing;
            let (clock, limit) = (run.clock, run.challenge_limit());
            let (lba, (verb, data)) = (d.scratch, nx.stamp(d.scratch, d.block_length));
            tasks.spawn(async move {
                let mut arb = Arbiter::new(&model, timing, nx.key);
                let first = arb.become_challenger(clock.elapsed());
                let end = drive(&nx, &mut arb, clock, first, true, tokio::time::sleep(limit)).await;
                let c = match end {
                    DriveEnd::Online => {
                        // It defends while it writes and until every
                        // contender has finished.
                        let mut rx = done.subscribe();
                        let stop = async move {
                            let _ = rx.wait_for(|c| *c >= n).await;
                        };
                        let write = async {
                            let w = nx.run(&verb, nx.disk.write(lba, data, false)).await;
                            done.send_modify(|c| *c += 1);
                            w
                        };
                        let (defended, write) = tokio::join!(
                            drive(&nx, &mut arb, clock, Vec::new(), false, stop),
                            write
                        );
                        if let Some(op) = arb.release() {
                            nx.exec(op).await;
                        }
                        Contender {
                            end,
                            write,
                            defended: Some(defended),
                        }
                    }
                    end => {
                        let write = nx.refused(&verb, nx.disk.write(lba, data, false)).await;
                        done.send_modify(|c| *c += 1);
                        Contender {
                            end,
                            write,
                            defended: None,
                        }
                    }
                };
                (i, c)
            });
        }
        let mut ends: Vec<(usize, Contender)> = Vec::new();
        while let Some(r) = tasks.join_next().await {
            ends.push(r.map_err(|e| Failed::new(format!("a contender's task failed: {e}")))?);
        }
        ends.sort_by_key(|(i, _)| *i);
        let winners: Vec<usize> = ends
            .iter()
            .filter(|(_, c)| matches!(c.end, DriveEnd::Online))
            .map(|(i, _)| *i)
            .collect();
        let proto = match model {
            QuorumModel::DiskScsi2 => "SCSI-2",
            _ => "PR",
        };
        if winners.len() != 1 {
            let names: Vec<&str> = winners.iter().map(|i| d.nexus[*i].name.as_str()).collect();
            return Err(Failed {
                reason: format!(
                    "{proto}: {} of {n} nodes won at once ({}); exactly one must",
                    winners.len(),
                    names.join(", ")
                ),
                command: Some(d.nexus[0].command(&d.nexus[0].last())),
            });
        }
        for (i, c) in ends {
            let nx = &d.nexus[i];
            match (&c.end, c.defended) {
                (DriveEnd::Stopped, _) => {
                    return Err(
                        nx.failed(&nx.last(), format!("{proto}: the challenge did not finish"))
                    )
                }
                (_, Some(DriveEnd::Lost(why))) => {
                    return Err(nx.failed(
                        &nx.last(),
                        format!(
                            "{proto}: the winner lost the disk before the others finished ({why})"
                        ),
                    ))
                }
                (DriveEnd::Lost(_), _) => shown = nx.command(&nx.last()),
                _ => {}
            }
            c.write.map_err(|f| Failed {
                reason: format!("{proto}: {}", f.reason),
                command: f.command,
            })?;
        }
        clean_up(d).await?;
    }
    if let Some(why) = reset_refused(d) {
        warnings.push(format!(
            "TARGET WARM RESET refused ({why}); SCSI-2 challengers reset the LUN instead"
        ));
    }
    Ok(Shown::pass(
        format!(
            "all {} nodes challenged at once, with PR and with SCSI-2: each time exactly one won and kept the disk, and every loser's write was refused",
            d.nexus.len()
        ),
        shown,
    )
    .with_warnings(&warnings))
}

/// `disk-failover`: ownership goes round the nodes and back to NODE1
/// (PR arbitration): each owner writes its stamp and then fails (stops
/// defending, keeps its session); the next node's challenge must win, it
/// must read the failed owner's stamp, and the failed owner's write must
/// be refused.
async fn disk_failover(run: &Run, d: &DiskUnderTest) -> Outcome {
    let n = d.nexus.len();
    let order: Vec<usize> = (0..n).chain([0]).collect();
    let mut prev: Option<(usize, Arbiter)> = None;
    let mut shown = String::new();
    let mut moves = Vec::new();
    for &i in &order {
        let nx = &d.nexus[i];
        let t = Instant::now();
        let arb = run.take(nx, &QuorumModel::DiskPr).await?;
        if let Some((p, _)) = &prev {
            let old = &d.nexus[*p];
            moves.push(format!(
                "{} to {} in {} ms",
                old.name,
                nx.name,
                t.elapsed().as_millis()
            ));
            let verb = format!("read {} 1", d.scratch);
            let got = nx.run(&verb, nx.disk.read(d.scratch, 1)).await?;
            if got != stamp_write(d, old).1 {
                return Err(nx.failed(
                    &verb,
                    format!("does not hold {}'s last write after the failover", old.name),
                ));
            }
            let (verb, data) = stamp_write(d, old);
            old.refused(&verb, old.disk.write(d.scratch, data, false))
                .await?;
            shown = old.command(&verb);
        }
        let (verb, data) = stamp_write(d, nx);
        nx.run(&verb, nx.disk.write(d.scratch, data, false)).await?;
        // The previous owner's arbiter is dropped here: a failed node
        // no longer defends.
        prev = Some((i, arb));
    }
    if let Some((p, mut arb)) = prev {
        run.release(&d.nexus[p], &mut arb).await?;
    }
    Ok(Shown::pass(
        format!(
            "ownership failed over {}; each new owner read the last owner's write, and each failed owner's write was refused",
            moves.join(", ")
        ),
        shown,
    ))
}

/// `simultaneous-failover`: NODE1 takes every disk at once and writes on
/// each, then fails; NODE2 takes every disk at once; on every disk NODE2
/// reads NODE1's write and NODE1's next write is refused.
async fn simultaneous_failover(run: &Run, disks: &[&DiskUnderTest]) -> Outcome {
    let (old, new) = (&disks[0].nexus[0].name, &disks[0].nexus[1].name);
    take_every(run, disks, 0).await?;
    for d in disks {
        let nx = &d.nexus[0];
        let (verb, data) = stamp_write(d, nx);
        nx.run(&verb, nx.disk.write(d.scratch, data, false)).await?;
    }
    // NODE1 fails: its arbiters are gone and it no longer defends.
    let t = Instant::now();
    let mut arbiters = take_every(run, disks, 1).await?;
    let took = t.elapsed();
    let mut shown = String::new();
    for d in disks {
        let (o, n) = (&d.nexus[0], &d.nexus[1]);
        let verb = format!("read {} 1", d.scratch);
        let got = n.run(&verb, n.disk.read(d.scratch, 1)).await?;
        if got != stamp_write(d, o).1 {
            return Err(n.failed(&verb, format!("does not hold {}'s write", o.name)));
        }
        let (verb, data) = stamp_write(d, o);
        o.refused(&verb, o.disk.write(d.scratch, data, false))
            .await?;
        shown = o.command(&verb);
    }
    for (d, arb) in disks.iter().zip(arbiters.iter_mut()) {
        run.release(&d.nexus[1], arb).await?;
    }
    Ok(Shown::pass(
        format!(
            "{} disks failed over from {old} to {new} at once in {} ms; on each the new owner read the old owner's write and the old owner's write was refused",
            disks.len(),
            took.as_millis()
        ),
        shown,
    ))
}

/// Node `node` challenges for every disk at once (PR); every challenge
/// must win. The arbiters, in the order of `disks`.
async fn take_every(
    run: &Run,
    disks: &[&DiskUnderTest],
    node: usize,
) -> Result<Vec<Arbiter>, Failed> {
    let mut tasks = tokio::task::JoinSet::new();
    for (k, d) in disks.iter().enumerate() {
        let nx = d.nexus[node].clone();
        let (timing, clock, limit) = (run.timing, run.clock, run.challenge_limit());
        tasks.spawn(async move {
            let mut arb = Arbiter::new(&QuorumModel::DiskPr, timing, nx.key);
            let first = arb.become_challenger(clock.elapsed());
            let end = drive(&nx, &mut arb, clock, first, true, tokio::time::sleep(limit)).await;
            (k, arb, end)
        });
    }
    let mut won: Vec<(usize, Arbiter)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (k, arb, end) = r.map_err(|e| Failed::new(format!("a challenge task failed: {e}")))?;
        let nx = &disks[k].nexus[node];
        match end {
            DriveEnd::Online => won.push((k, arb)),
            DriveEnd::Lost(why) => {
                return Err(nx.failed(&nx.last(), format!("lost its challenge ({why})")))
            }
            DriveEnd::Stopped => return Err(nx.failed(&nx.last(), "the challenge did not finish")),
        }
    }
    won.sort_by_key(|(k, _)| *k);
    Ok(won.into_iter().map(|(_, a)| a).collect())
}

/// Latency of one kind of command from one node, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    samples: u32,
    mean_us: u64,
    max_us: u64,
}

fn latency(us: &[u64]) -> Latency {
    Latency {
        samples: us.len() as u32,
        mean_us: us.iter().sum::<u64>() / us.len().max(1) as u64,
        max_us: us.iter().copied().max().unwrap_or(0),
    }
}

/// `disk-access-latency`: READ and WRITE (one block, FUA) from every node
/// in turn. An owner's defense is one such command: one slower than the
/// lease (half the challenge wait) would end its ownership although it is
/// alive, a needless failover, so that fails; one slower than half the
/// defense interval warns.
async fn disk_access_latency(run: &Run, d: &DiskUnderTest) -> Outcome {
    let fail_at = run.timing.lease(&QuorumModel::DiskPr);
    let warn_at = run.timing.defend_interval(&QuorumModel::DiskPr) / 2;
    let mut per_node = Vec::new();
    let mut worst = (0u64, String::new());
    for (i, nx) in d.nexus.iter().enumerate() {
        let lba = d.scratch + 1 + (i as u64 % (SCRATCH_BLOCKS - 1));
        let (wverb, data) = nx.stamp(lba, d.block_length);
        let wverb = format!("{wverb} --fua");
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        let rverb = format!("read {lba} 1 --fua");
        for _ in 0..run.latency_samples {
            let t = Instant::now();
            nx.run(&wverb, nx.disk.write(lba, data.clone(), true))
                .await?;
            writes.push(t.elapsed().as_micros() as u64);
            let t = Instant::now();
            nx.run(&rverb, nx.disk.read_fua(lba, 1)).await?;
            reads.push(t.elapsed().as_micros() as u64);
        }
        let (r, w) = (latency(&reads), latency(&writes));
        for (l, verb) in [(r, &rverb), (w, &wverb)] {
            if l.max_us > worst.0 {
                worst = (l.max_us, nx.command(verb));
            }
        }
        per_node.push(json!({ "node": nx.name, "read": r, "write": w }));
    }
    let details = json!({
        "nodes": per_node,
        "warn_us": warn_at.as_micros() as u64,
        "fail_us": fail_at.as_micros() as u64,
    });
    let max = Duration::from_micros(worst.0);
    let summary = format!(
        "{} reads and {} writes from each of {} nodes; slowest {:.1} ms (warn above {} ms, fail above {} ms)",
        run.latency_samples,
        run.latency_samples,
        d.nexus.len(),
        worst.0 as f64 / 1000.0,
        warn_at.as_millis(),
        fail_at.as_millis()
    );
    if max > fail_at {
        return Err(Failed {
            reason: format!("{summary}: an owner's defense this slow outlasts its lease"),
            command: Some(worst.1),
        });
    }
    let mut s = Shown::pass(summary, worst.1);
    if max > warn_at {
        s = s.with_warnings(&["commands slower than half the defense interval".to_string()]);
    }
    s.details = details;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = CheckId::ALL.iter().map(|c| c.name()).collect();
        for c in CheckId::ALL {
            assert_eq!(CheckId::parse(c.name()), Some(c));
            assert!(c.title().starts_with("List") || c.title().starts_with("Validate"));
        }
        names.dedup();
        assert_eq!(names.len(), CheckId::ALL.len());
        assert_eq!(CheckId::parse("nonsense"), None);
    }

    #[test]
    fn arbiter_operations_read_as_busrig_disk_verbs() {
        let rows = [
            (DiskOp::BusReset, "reset target"),
            (DiskOp::Reserve, "reserve"),
            (
                DiskOp::PrRegister { key: 0xa },
                "pr register-ignore --param-sark 0xa",
            ),
            (
                DiskOp::PrUnregister { key: 0xa },
                "pr register --param-rk 0xa",
            ),
            (
                DiskOp::PrPreempt {
                    key: 0xb,
                    victim_key: 0xa,
                },
                "pr preempt --param-rk 0xb --param-sark 0xa --prout-type 1",
            ),
            (DiskOp::PrReadKeys, "pr read-keys"),
        ];
        for (op, verb) in rows {
            assert_eq!(op_verb(&op), verb);
        }
        assert_eq!(
            pr_verb(PrOutAction::PreemptAndAbort, 1, 2),
            "pr preempt-abort --param-rk 0x1 --param-sark 0x2 --prout-type 1"
        );
        assert_eq!(pr_verb(PrOutAction::Clear, 1, 0), "pr clear --param-rk 0x1");
    }

    #[test]
    fn keys_carry_the_prefix_and_the_node() {
        let k = KEY_PREFIX | (0xdead_beef_u64 << 8) | 3;
        assert_eq!(k & (0xff_ffff << 40), KEY_PREFIX);
        assert_eq!(k & 0xff, 3);
        assert_ne!(node_isid(0), node_isid(1));
    }

    #[test]
    fn warnings_turn_a_pass_into_a_warning_and_lead_the_reason() {
        let s = Shown::pass("fine", "cmd".into()).with_warnings(&[]);
        assert_eq!(s.verdict, Verdict::Pass);
        let s = Shown::pass("fine", "cmd".into()).with_warnings(&["careful".into()]);
        assert_eq!(
            (s.verdict, s.reason.as_str()),
            (Verdict::Warn, "careful; fine")
        );
    }

    #[test]
    fn a_failed_clean_up_fails_a_passing_check_only() {
        let bad = || Err(Failed::new("x"));
        assert!(settle(Ok(Shown::pass("ok", "c".into())), bad()).is_err());
        let f = settle(Err(Failed::new("first")), bad()).err().unwrap();
        assert_eq!(f.reason, "first");
    }
}
