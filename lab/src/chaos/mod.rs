//! `busrig lab chaos`: random fault schedules on a real lab, with the
//! recorded histories checked afterwards (docs/chaos.md).
//!
//! For each schedule: start a lab (3 nodes, one virtual server group with
//! an IP, a network name, a disk and a mail store), run the workloads (the
//! mail load client and the register clients), apply the seeded faults at
//! their times, heal everything, wait for the cluster to converge, stop
//! the workloads, collect the histories (register operations, mail
//! report, the nodes' logs, the bus audit and reservation state), bring
//! the lab down and run the checkers. The schedule as it ran (owners
//! resolved to node names) is written out as a scenario file that `busrig
//! lab run` replays.

pub mod check;
pub mod logs;
pub mod register;
pub mod schedule;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busrig_cluster::config::ClusterConfig;
use busrig_lograte::text::now_ms;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Context as _, Result};
use crate::scenario::{BusStep, GroupDef, LoadStep, NodeStep, Runner, Step};
use crate::{Lab, Net, Signal, UpOptions};
use check::{linear, NodeEvent, NodeRecord, Violation};
use schedule::{Fault, FaultKind, Schedule, ScheduleSpec};

/// The quorum models a run can cover.
pub const QUORUMS: [&str; 3] = ["disk-scsi2", "disk-pr", "majority"];
/// The virtual server every schedule's lab runs.
pub const GROUP: &str = "EVS1";
const GROUP_IP: &str = "127.0.3.1";
const GROUP_PORT: u16 = 2525;

/// The workloads a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workloads {
    pub mail: bool,
    pub register: bool,
}

impl std::str::FromStr for Workloads {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Workloads, String> {
        let mut w = Workloads {
            mail: false,
            register: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "mail" => w.mail = true,
                "register" => w.register = true,
                other => return Err(format!("unknown workload {other:?} (mail, register)")),
            }
        }
        if !w.mail && !w.register {
            return Err("--workload needs mail, register or both".into());
        }
        Ok(w)
    }
}

/// What `busrig lab chaos` runs.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Where each schedule's lab folder and the report go.
    pub dir: PathBuf,
    /// Schedules per quorum model.
    pub schedules: usize,
    /// The first schedule's seed; schedule i has seed + i.
    pub seed: u64,
    /// The fault window of one schedule.
    pub duration: Duration,
    pub quorums: Vec<String>,
    pub faults: Vec<FaultKind>,
    pub workloads: Workloads,
    pub nodes: usize,
    pub profile: String,
}

/// A fault as it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    #[serde(flatten)]
    pub fault: Fault,
    /// The node it hit (owners resolved when it started).
    pub node: Option<String>,
    /// When it started and ended, Unix ms.
    pub start_ms: u64,
    pub end_ms: u64,
    /// What happened, or why it was skipped.
    pub outcome: String,
    pub skipped: bool,
    /// From its end to the first convergence seen after it (the cluster
    /// is polled every 100 ms during the window, so up to a poll late).
    pub recovered_after_ms: Option<u64>,
}

/// One schedule's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleResult {
    pub seed: u64,
    pub quorum: String,
    pub dir: PathBuf,
    pub faults: Vec<Applied>,
    /// Register operations checked (with answers) and indeterminate ones.
    pub register_ops: usize,
    pub register_indeterminate: usize,
    pub mail_acknowledged: u64,
    /// Writer runs in the bus audit.
    pub audit_runs: usize,
    /// Role records read from the nodes' logs and the runner.
    pub role_records: usize,
    /// Milliseconds from healing to convergence.
    pub converged_after_ms: Option<u64>,
    /// The longest of the faults' `recovered_after_ms`: the slowest
    /// recovery from a fault's end (healing may come long after the last
    /// fault ended, so `converged_after_ms` alone says little).
    pub slowest_recovery_ms: Option<u64>,
    pub liveness_bound_ms: u64,
    pub violations: Vec<Violation>,
    /// The run itself failed (the lab did not start, ...): not a verdict.
    pub error: Option<String>,
    pub took_ms: u64,
    /// The scenario file that replays the schedule with `busrig lab run`.
    pub scenario: Option<PathBuf>,
    pub timeline: Option<PathBuf>,
}

impl ScheduleResult {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// The one verdict line the command prints.
    pub fn verdict_line(&self) -> String {
        let applied = self.faults.iter().filter(|f| !f.skipped).count();
        let head = format!(
            "seed {} {:<10} {} faults, {} register ops ({} indeterminate), {} mails, converged {}, slowest recovery {}",
            self.seed,
            self.quorum,
            applied,
            self.register_ops,
            self.register_indeterminate,
            self.mail_acknowledged,
            self.converged_after_ms
                .map_or("never".into(), |m| format!("in {:.1}s", m as f64 / 1000.0)),
            self.slowest_recovery_ms.map_or("none seen".into(), |m| format!(
                "{:.1}s after a fault's end",
                m as f64 / 1000.0
            )),
        );
        match (&self.error, self.violations.len()) {
            (Some(e), _) => format!("ERROR  {head}: {e}"),
            (None, 0) => format!("ok     {head}"),
            (None, n) => format!(
                "FAILED {head}: {n} violations; first: {}",
                self.violations[0]
            ),
        }
    }
}

/// The whole run, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub schedules_per_model: usize,
    pub duration_s: f64,
    pub quorums: Vec<String>,
    pub faults: Vec<FaultKind>,
    pub workloads: Workloads,
    pub profile: String,
    pub results: Vec<ScheduleResult>,
    pub violations: usize,
    pub errors: usize,
    pub operations_checked: usize,
}

/// Runs every schedule; `before` sees (index, seed, quorum) as each starts
/// and `after` each result. Writes `report.json` in `o.dir`.
pub fn run(
    binary: &Path,
    o: &ChaosOptions,
    mut before: impl FnMut(usize, u64, &str),
    mut after: impl FnMut(&ScheduleResult),
) -> Result<ChaosReport> {
    std::fs::create_dir_all(&o.dir)
        .with_context(|| format!("cannot create {}", o.dir.display()))?;
    let mut results = Vec::new();
    let mut i = 0;
    for q in &o.quorums {
        for n in 0..o.schedules {
            let seed = o.seed.wrapping_add(n as u64);
            before(i, seed, q);
            let r = run_one(binary, o, q, seed);
            after(&r);
            results.push(r);
            i += 1;
        }
    }
    let report = ChaosReport {
        seed: o.seed,
        schedules_per_model: o.schedules,
        duration_s: o.duration.as_secs_f64(),
        quorums: o.quorums.clone(),
        faults: o.faults.clone(),
        workloads: o.workloads,
        profile: o.profile.clone(),
        violations: results.iter().map(|r| r.violations.len()).sum(),
        errors: results.iter().filter(|r| r.error.is_some()).count(),
        operations_checked: results
            .iter()
            .map(|r| r.register_ops + r.mail_acknowledged as usize)
            .sum(),
        results,
    };
    std::fs::write(
        o.dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

/// The schedule `seed` draws for a lab of `o` (what `--seed S` replays).
pub fn schedule_of(o: &ChaosOptions, seed: u64) -> Schedule {
    let nodes = (1..=o.nodes).map(|i| format!("NODE{i}")).collect();
    Schedule::generate(
        seed,
        &ScheduleSpec {
            window_ms: o.duration.as_millis() as u64,
            nodes,
            groups: vec![GROUP.into()],
            data_luns: 1,
            kinds: o.faults.clone(),
            max_fault_ms: max_fault_ms(&o.profile),
        },
    )
}

/// The longest fault: a little longer than a failover takes in the
/// profile (docs/chaos.md), so some faults outlast a takeover.
fn max_fault_ms(profile: &str) -> u64 {
    match profile {
        "mscs2003" => 25_000,
        _ => 4_000,
    }
}

fn run_one(binary: &Path, o: &ChaosOptions, quorum: &str, seed: u64) -> ScheduleResult {
    let dir = o.dir.join(format!("{quorum}-{seed}"));
    let t = Instant::now();
    let mut r = ScheduleResult {
        seed,
        quorum: quorum.to_string(),
        dir: dir.clone(),
        faults: Vec::new(),
        register_ops: 0,
        register_indeterminate: 0,
        mail_acknowledged: 0,
        audit_runs: 0,
        role_records: 0,
        converged_after_ms: None,
        slowest_recovery_ms: None,
        liveness_bound_ms: 0,
        violations: Vec::new(),
        error: None,
        took_ms: 0,
        scenario: None,
        timeline: None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let lab = Lab::new(binary, &dir);
    let up = lab.up(&UpOptions {
        nodes: o.nodes,
        quorum: quorum.to_string(),
        profile: o.profile.clone(),
        data_luns: 1,
        timeout: None,
        hosts: crate::hosts::HostsMode::Single,
    });
    if let Err(e) = up {
        r.error = Some(format!("the lab did not start: {}", e.chain()));
        r.took_ms = t.elapsed().as_millis() as u64;
        return r;
    }
    let outcome = drive(&lab, o, quorum, seed, &mut r);
    let _ = lab.down();
    reap_children();
    if let Err(e) = outcome {
        r.error = Some(e.chain());
    } else {
        r.error = collect_roles(&lab, o, &mut r).err().map(|e| e.chain());
    }
    r.took_ms = t.elapsed().as_millis() as u64;
    let _ = std::fs::write(
        dir.join("result.json"),
        serde_json::to_vec_pretty(&r).unwrap_or_default(),
    );
    r
}

/// Collects the exit status of every lab process this process started
/// and that has exited, so a long run leaves no zombies behind. Called
/// between schedules, when the runner has no other child to wait for
/// (the mail load and `busrig cluster` commands were waited already).
fn reap_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(st) = waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Polls the cluster every 100 ms until `stop`, recording the instants it
/// is converged: one view with every node, an acting quorum owner and the
/// group online.
fn watch_convergence(cfg: &ClusterConfig, stop: &AtomicBool, seen: &std::sync::Mutex<Vec<u64>>) {
    let Ok(rt) = crate::runtime() else { return };
    let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    while !stop.load(Ordering::Relaxed) {
        let st = rt.block_on(crate::process::all_status(cfg));
        if crate::process::formed(&st, cfg, &names)
            && crate::group_online_on(&rt, cfg, GROUP).is_some()
        {
            if let Ok(mut s) = seen.lock() {
                s.push(now_ms());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the runner recorded while driving one schedule.
struct Record {
    roles: Vec<NodeRecord>,
    start_ms: u64,
    healed_ms: u64,
}

/// Everything from the lab start to the convergence check, while the lab
/// is up.
fn drive(
    lab: &Lab,
    o: &ChaosOptions,
    quorum: &str,
    seed: u64,
    r: &mut ScheduleResult,
) -> Result<()> {
    let mut run = Runner::open(lab, 1)?;
    let cfg = Arc::new(run.cfg().clone());
    let state = lab.state()?;
    let group = GroupDef {
        name: GROUP.into(),
        ip: GROUP_IP.into(),
        luns: vec![1],
        preferred: Vec::new(),
        failback: "prevent".into(),
        port: Some(GROUP_PORT),
    };
    run.setup(std::slice::from_ref(&group))?;
    let sched = schedule_of(o, seed);
    let heal_slack = Duration::from_secs(2);
    if o.workloads.mail {
        let d = o.duration + heal_slack;
        run.step(&Step::Load(LoadStep {
            group: GROUP.into(),
            rate: Some(20.0),
            duration: Some(format!("{}ms", d.as_millis())),
        }))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let history = register::History::default();
    let clients = if o.workloads.register {
        let (cfg, stop, h) = (cfg.clone(), stop.clone(), history.clone());
        let n = o.nodes;
        Some(std::thread::spawn(move || {
            if let Ok(rt) = crate::runtime() {
                rt.block_on(register::run(cfg, n, seed, stop, h));
            }
        }))
    } else {
        None
    };
    // Convergence as seen during the window, for each fault's recovery.
    let watch_stop = Arc::new(AtomicBool::new(false));
    let converged_seen = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let watcher = {
        let (cfg, stop, seen) = (cfg.clone(), watch_stop.clone(), converged_seen.clone());
        std::thread::spawn(move || watch_convergence(&cfg, &stop, &seen))
    };
    let mut rec = Record {
        roles: Vec::new(),
        start_ms: now_ms(),
        healed_ms: 0,
    };
    let applied = apply_schedule(lab, &mut run, &sched, &mut rec);
    r.faults = applied;
    // The workloads run for the whole window, faults or not.
    let window_end = rec.start_ms + sched.window_ms;
    if let Some(left) = window_end.checked_sub(now_ms()) {
        std::thread::sleep(Duration::from_millis(left));
    }
    heal_all(lab, &mut run, &state, &mut rec);
    rec.healed_ms = now_ms();

    // Liveness: one view with every node, an acting quorum owner and the
    // group online, within the profile's bound.
    let bound = crate::process::default_timeout(&cfg);
    r.liveness_bound_ms = bound.as_millis() as u64;
    let deadline = Instant::now() + bound + Duration::from_secs(5);
    let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    let mut seen = String::new();
    while Instant::now() < deadline {
        let st = run.rt().block_on(crate::process::all_status(&cfg));
        let online = run.group_online_on(GROUP);
        if crate::process::formed(&st, &cfg, &names) && online.is_some() {
            r.converged_after_ms = Some(now_ms() - rec.healed_ms);
            break;
        }
        seen = crate::process::describe(&st, &cfg)
            + &format!(
                "; {GROUP} online on {}",
                online.as_deref().unwrap_or("no node")
            );
        std::thread::sleep(Duration::from_millis(50));
    }
    watch_stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let mut converged_at =
        std::mem::take(&mut *converged_seen.lock().unwrap_or_else(|e| e.into_inner()));
    converged_at.extend(r.converged_after_ms.map(|m| rec.healed_ms + m));
    for a in r.faults.iter_mut().filter(|a| !a.skipped) {
        a.recovered_after_ms = converged_at
            .iter()
            .find(|&&t| t >= a.end_ms)
            .map(|t| t - a.end_ms);
    }
    r.slowest_recovery_ms = r.faults.iter().filter_map(|a| a.recovered_after_ms).max();
    if let Some(v) = check::liveness(
        rec.healed_ms,
        r.converged_after_ms.map(|m| rec.healed_ms + m),
        r.liveness_bound_ms,
        &seen,
    ) {
        r.violations.push(v);
    }
    // A second more of register operations on the healed cluster.
    if clients.is_some() {
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = clients {
        let _ = c.join();
    }

    // The quorum owner holds the quorum disk's reservation.
    let bus = run.control("GET", "/status", json!({}))?;
    if quorum != "majority" && r.converged_after_ms.is_some() {
        if let Some(owner) = run.quorum_owner() {
            let lun0 = bus["luns"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["lun"] == 0);
            let holder = lun0.and_then(|l| {
                l["scsi2_holder"]["initiator"]
                    .as_str()
                    .or(l["pr_reservation"]["initiator"].as_str())
            });
            r.violations.extend(check::owner_is_holder(&owner, holder));
        }
    }
    // Exclusive disk ownership from the bus audit.
    let mut runs = Vec::new();
    for lun in 0..=1u16 {
        let v = run.control("GET", &format!("/audit?lun={lun}"), json!({}))?;
        for w in v["history"].as_array().into_iter().flatten() {
            let mut w: check::WriterRun = serde_json::from_value(w.clone())
                .context("the bus audit has an unexpected shape")?;
            w.lun = lun;
            runs.push(w);
        }
    }
    r.audit_runs = runs.len();
    r.violations.extend(check::exclusive_writes(&runs));

    // Mail: every acknowledged message there, once.
    if o.workloads.mail {
        let v = run.finish_load(GROUP)?;
        let m: check::MailReport =
            serde_json::from_value(v).context("the mail load report has an unexpected shape")?;
        r.mail_acknowledged = m.acknowledged;
        r.violations.extend(check::mail(GROUP, &m));
    }
    run.kill_loads();

    // Linearizability of the register history.
    let ops = history.take();
    r.register_indeterminate = ops.iter().filter(|o| o.complete_ms.is_none()).count();
    r.register_ops = ops.len() - r.register_indeterminate;
    for (key, verdict) in linear::check(&ops) {
        match verdict {
            linear::Verdict::Linearizable => {}
            linear::Verdict::Violation(v) => r.violations.push(Violation::Linearizability(v)),
            linear::Verdict::TooLarge(states) => r
                .violations
                .push(Violation::LinearizabilityUndecided { key, states }),
        }
    }
    std::fs::write(
        lab.dir().join("history.json"),
        serde_json::to_vec_pretty(&ops)?,
    )?;
    std::fs::write(
        lab.dir().join("runner-events.json"),
        serde_json::to_vec_pretty(&json!({
            "start_ms": rec.start_ms,
            "healed_ms": rec.healed_ms,
            "roles": rec.roles,
        }))?,
    )?;
    let scenario = lab.dir().join("schedule.toml");
    std::fs::write(&scenario, scenario_text(quorum, o, seed, &r.faults))?;
    r.scenario = Some(scenario);
    Ok(())
}

/// After the lab is down: the role records from the nodes' logs and the
/// runner, the role checker, and the timeline picture.
fn collect_roles(lab: &Lab, o: &ChaosOptions, r: &mut ScheduleResult) -> Result<()> {
    let ev: Value = serde_json::from_slice(&std::fs::read(lab.dir().join("runner-events.json"))?)?;
    let mut roles: Vec<NodeRecord> =
        serde_json::from_value(ev["roles"].clone()).unwrap_or_default();
    for i in 1..=o.nodes {
        let name = format!("NODE{i}");
        let text = std::fs::read_to_string(lab.log_file(&name)).unwrap_or_default();
        roles.extend(logs::parse(&name, &text));
    }
    roles.sort_by_key(|x| x.ms);
    r.role_records = roles.len();
    let intervals = check::intervals(&roles);
    r.violations.extend(
        check::exclusive_roles(&intervals)
            .into_iter()
            .map(Violation::Overlap),
    );
    let ops: Vec<linear::Operation> =
        serde_json::from_slice(&std::fs::read(lab.dir().join("history.json"))?).unwrap_or_default();
    let start = ev["start_ms"].as_u64().unwrap_or(0);
    let healed = ev["healed_ms"].as_u64().unwrap_or(0);
    let picture = svg::timeline(&svg::Timeline {
        title: format!("seed {} {} ({} faults)", r.seed, r.quorum, r.faults.len()),
        nodes: (1..=o.nodes).map(|i| format!("NODE{i}")).collect(),
        start_ms: start,
        healed_ms: healed,
        intervals: &intervals,
        faults: &r.faults,
        ops: &ops,
    });
    let path = lab.dir().join("timeline.svg");
    std::fs::write(&path, picture)?;
    r.timeline = Some(path);
    Ok(())
}

/// A scheduled action: a fault's start or its end.
enum At {
    Start(usize),
    End(usize),
}

/// Applies the schedule's faults at their times; returns what was done.
fn apply_schedule(lab: &Lab, run: &mut Runner<'_>, s: &Schedule, rec: &mut Record) -> Vec<Applied> {
    let mut plan: Vec<(u64, At)> = Vec::new();
    for (i, f) in s.faults.iter().enumerate() {
        plan.push((f.at_ms, At::Start(i)));
        if f.kind.on_node() {
            plan.push((f.end_ms(), At::End(i)));
        }
    }
    plan.sort_by_key(|(t, a)| (*t, matches!(a, At::Start(_))));
    let mut applied: Vec<Applied> = s
        .faults
        .iter()
        .map(|f| Applied {
            fault: f.clone(),
            node: None,
            start_ms: 0,
            end_ms: 0,
            outcome: String::new(),
            skipped: true,
            recovered_after_ms: None,
        })
        .collect();
    // Nodes whose process is stopped or killed, by the fault that did it.
    let mut process_busy: BTreeMap<String, usize> = BTreeMap::new();
    for (t, what) in plan {
        let due = rec.start_ms + t;
        let now = now_ms();
        if due > now {
            std::thread::sleep(Duration::from_millis(due - now));
        }
        match what {
            At::Start(i) => {
                let f = &s.faults[i];
                let a = &mut applied[i];
                a.start_ms = now_ms();
                let node = match f.target.node_spec() {
                    Some(spec) => match run.node(&spec) {
                        Ok(n) => Some(n),
                        Err(e) => {
                            a.outcome = format!("skipped: {spec}: {}", e.chain());
                            continue;
                        }
                    },
                    None => None,
                };
                if let Some(n) = &node {
                    if process_busy.contains_key(n) {
                        a.outcome = format!("skipped: {n} is already killed or paused");
                        continue;
                    }
                }
                a.node = node.clone();
                match start_fault(lab, run, f, node.as_deref(), rec) {
                    Ok(what) => {
                        a.outcome = what;
                        a.skipped = false;
                        if f.kind.on_process() {
                            if let Some(n) = node {
                                process_busy.insert(n, i);
                            }
                        }
                    }
                    Err(e) => a.outcome = format!("skipped: {}", e.chain()),
                }
                a.end_ms = now_ms();
            }
            At::End(i) => {
                let a = &mut applied[i];
                if a.skipped {
                    continue;
                }
                if let Some(n) = &a.node {
                    if process_busy.get(n) == Some(&i) {
                        process_busy.remove(n);
                    }
                }
                if let Err(e) = end_fault(lab, run, &a.fault, a.node.as_deref(), rec) {
                    a.outcome += &format!("; ending it failed: {}", e.chain());
                }
                a.end_ms = now_ms();
            }
        }
    }
    applied
}

fn bus(fault: &str, node: Option<&str>) -> Step {
    Step::Bus(BusStep {
        fault: fault.into(),
        node: node.map(String::from),
        lun: None,
        ms: None,
        count: None,
        sense: None,
    })
}

fn start_fault(
    lab: &Lab,
    run: &mut Runner<'_>,
    f: &Fault,
    node: Option<&str>,
    rec: &mut Record,
) -> Result<String> {
    let n = || node.map(String::from).unwrap_or_default();
    let role = |rec: &mut Record, event| {
        rec.roles.push(NodeRecord {
            ms: now_ms(),
            node: n(),
            event,
        })
    };
    Ok(match f.kind {
        FaultKind::Kill => {
            let out = run.step(&Step::Kill(NodeStep { node: n() }))?;
            role(rec, NodeEvent::Killed);
            out
        }
        FaultKind::Pause => {
            let out = run.step(&Step::Pause(NodeStep { node: n() }))?;
            role(rec, NodeEvent::Paused);
            out
        }
        FaultKind::Partition => {
            let net = f.net.unwrap_or_default();
            let (_, cut) = lab.partition(&n(), net, true)?;
            format!("partitioned {} ({}): {cut}", n(), net.as_str())
        }
        FaultKind::Freeze => run.step(&bus("freeze", node))?,
        FaultKind::Cut => run.step(&bus("cut", node))?,
        FaultKind::Delay => {
            let mut s = bus("delay", node);
            if let Step::Bus(b) = &mut s {
                b.ms = f.delay_ms;
            }
            run.step(&s)?
        }
        FaultKind::Sense => {
            let mut s = bus("fail", node);
            if let Step::Bus(b) = &mut s {
                b.count = f.count;
                b.sense = f.sense.clone();
            }
            run.step(&s)?
        }
        FaultKind::Reset => run.step(&bus("reset", None))?,
        FaultKind::PowerCycle => {
            let lun = match f.target {
                schedule::Target::Lun(l) => l,
                _ => 1,
            };
            let mut s = bus("power-cycle", None);
            if let Step::Bus(b) = &mut s {
                b.lun = Some(lun);
            }
            run.step(&s)?
        }
    })
}

fn end_fault(
    lab: &Lab,
    run: &mut Runner<'_>,
    f: &Fault,
    node: Option<&str>,
    rec: &mut Record,
) -> Result<()> {
    let n = node.map(String::from).unwrap_or_default();
    match f.kind {
        FaultKind::Kill => lab.start(&n, false)?,
        FaultKind::Pause => {
            rec.roles.push(NodeRecord {
                ms: now_ms(),
                node: n.clone(),
                event: NodeEvent::Resumed,
            });
            lab.send_signal(&n, Signal::SIGCONT, "resume")?;
        }
        FaultKind::Partition => {
            lab.partition(&n, f.net.unwrap_or_default(), false)?;
        }
        FaultKind::Freeze => {
            run.step(&bus("thaw", node))?;
        }
        FaultKind::Cut => {
            run.step(&bus("restore", node))?;
        }
        FaultKind::Delay | FaultKind::Sense => {
            run.step(&bus("clear", node))?;
        }
        FaultKind::Reset | FaultKind::PowerCycle => {}
    }
    Ok(())
}

/// Heals whatever is left: every node running (resumed or restarted),
/// connected on both networks, with clean storage paths.
fn heal_all(lab: &Lab, run: &mut Runner<'_>, state: &crate::LabState, rec: &mut Record) {
    let now = lab.state().unwrap_or_else(|_| state.clone());
    for p in &now.nodes {
        match p.pid {
            Some(pid) if crate::alive(pid) => {
                if crate::process_state(Some(pid)) == "stopped" {
                    rec.roles.push(NodeRecord {
                        ms: now_ms(),
                        node: p.name.clone(),
                        event: NodeEvent::Resumed,
                    });
                }
                let _ = lab.send_signal(&p.name, Signal::SIGCONT, "heal: resume");
            }
            _ => {
                let _ = lab.start(&p.name, false);
            }
        }
    }
    for p in &now.nodes {
        let _ = lab.partition(&p.name, Net::Both, false);
        let _ = run.step(&bus("clear", Some(&p.name)));
    }
}

/// The schedule as it ran, with owners resolved to the nodes they were,
/// as a scenario file for `busrig lab run` (a regression test's start).
fn scenario_text(quorum: &str, o: &ChaosOptions, seed: u64, faults: &[Applied]) -> String {
    let mut s = format!(
        "# Written by `busrig lab chaos`: seed {seed}, quorum {quorum}, profile {}.\n\
         # Replay the schedule with `busrig lab chaos --seed {seed} --schedules 1 --quorum {quorum}`,\n\
         # or these steps with `busrig lab run FILE`.\n\
         name = \"chaos seed {seed} ({quorum})\"\n\n[layout]\nnodes = {}\nquorum = \"{quorum}\"\nprofile = \"{}\"\ndata_luns = 1\n\n\
         [[group]]\nname = \"{GROUP}\"\nip = \"{GROUP_IP}\"\nluns = [1]\nport = {GROUP_PORT}\n",
        o.profile, o.nodes, o.profile
    );
    let mut steps: Vec<(u64, Step)> = Vec::new();
    if o.workloads.mail {
        steps.push((
            0,
            Step::Load(LoadStep {
                group: GROUP.into(),
                rate: Some(20.0),
                duration: Some(format!("{}ms", o.duration.as_millis() + 2000)),
            }),
        ));
    }
    for a in faults.iter().filter(|a| !a.skipped) {
        let f = &a.fault;
        let n = a.node.clone().unwrap_or_default();
        let (start, end): (Step, Option<Step>) = match f.kind {
            FaultKind::Kill => (
                Step::Kill(NodeStep { node: n.clone() }),
                Some(Step::Start(NodeStep { node: n.clone() })),
            ),
            FaultKind::Pause => (
                Step::Pause(NodeStep { node: n.clone() }),
                Some(Step::Resume(NodeStep { node: n.clone() })),
            ),
            FaultKind::Partition => {
                let net = f.net.unwrap_or_default();
                (
                    Step::Partition(crate::scenario::NetStep {
                        node: n.clone(),
                        net,
                    }),
                    Some(Step::Heal(crate::scenario::NetStep {
                        node: n.clone(),
                        net,
                    })),
                )
            }
            FaultKind::Freeze => (bus("freeze", Some(&n)), Some(bus("thaw", Some(&n)))),
            FaultKind::Cut => (bus("cut", Some(&n)), Some(bus("restore", Some(&n)))),
            FaultKind::Delay | FaultKind::Sense => {
                let mut s = bus(
                    if f.kind == FaultKind::Delay {
                        "delay"
                    } else {
                        "fail"
                    },
                    Some(&n),
                );
                if let Step::Bus(b) = &mut s {
                    b.ms = f.delay_ms;
                    b.count = f.count;
                    b.sense = f.sense.clone();
                }
                (s, Some(bus("clear", Some(&n))))
            }
            FaultKind::Reset => (bus("reset", None), None),
            FaultKind::PowerCycle => {
                let mut s = bus("power-cycle", None);
                if let (Step::Bus(b), schedule::Target::Lun(l)) = (&mut s, &f.target) {
                    b.lun = Some(*l);
                }
                (s, None)
            }
        };
        steps.push((f.at_ms, start));
        if let Some(e) = end {
            steps.push((f.end_ms(), e));
        }
    }
    steps.sort_by_key(|(t, _)| *t);
    let mut t = 0;
    let mut out: Vec<Step> = Vec::new();
    for (at, step) in steps {
        if at > t {
            out.push(Step::Sleep(crate::scenario::SleepStep {
                duration: format!("{}ms", at - t),
            }));
            t = at;
        }
        out.push(step);
    }
    out.push(Step::Wait(crate::scenario::WaitStep {
        until: crate::scenario::Until::GroupOnline,
        group: Some(GROUP.into()),
        on: None,
        not_on: None,
        timeout: Some("60s".into()),
    }));
    if o.workloads.mail {
        out.push(Step::Assert(crate::scenario::AssertStep {
            check: crate::scenario::Check::NoLostMessages,
            group: Some(GROUP.into()),
            on: None,
            lun: None,
        }));
    }
    out.push(Step::Assert(crate::scenario::AssertStep {
        check: crate::scenario::Check::ExclusiveOwnership,
        group: None,
        on: None,
        lun: None,
    }));
    #[derive(Serialize)]
    struct Steps {
        step: Vec<Step>,
    }
    s += "\n";
    s += &toml::to_string(&Steps { step: out }).unwrap_or_default();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ChaosOptions {
        ChaosOptions {
            dir: PathBuf::from("/nonexistent"),
            schedules: 1,
            seed: 42,
            duration: Duration::from_secs(15),
            quorums: vec!["disk-scsi2".into()],
            faults: FaultKind::ALL.to_vec(),
            workloads: "mail,register".parse().unwrap(),
            nodes: 3,
            profile: "fast".into(),
        }
    }

    #[test]
    fn the_written_schedule_is_a_scenario_the_runner_accepts() {
        let o = opts();
        let s = schedule_of(&o, 42);
        let applied: Vec<Applied> = s
            .faults
            .iter()
            .map(|f| Applied {
                fault: f.clone(),
                node: f.kind.on_node().then(|| "NODE2".to_string()),
                start_ms: 0,
                end_ms: 0,
                outcome: String::new(),
                skipped: false,
                recovered_after_ms: None,
            })
            .collect();
        let text = scenario_text("disk-scsi2", &o, 42, &applied);
        let sc =
            crate::scenario::Scenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        let kills = sc.steps.iter().filter(|s| s.action() != "sleep").count();
        assert!(kills > s.faults.len(), "{text}");
        assert_eq!(sc.layout.quorum, "disk-scsi2");
        assert!(text.contains("seed 42"));
    }

    #[test]
    fn workloads_parse() {
        assert_eq!(
            "register".parse::<Workloads>().unwrap(),
            Workloads {
                mail: false,
                register: true
            }
        );
        assert!("disk".parse::<Workloads>().is_err());
        assert!("".parse::<Workloads>().is_err());
    }
}
