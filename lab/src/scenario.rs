//! The scenario runner (`busrig lab run SCENARIO.toml`): a layout and a
//! list of steps, run on a fresh lab, with a JSON report of the timeline.
//!
//! ```toml
//! name = "two-node active/passive on parallel SCSI"
//! [layout]
//! nodes = 2                 # NODE1 .. NODEn
//! quorum = "disk-scsi2"     # disk-scsi2 | disk-pr | majority
//! profile = "fast"          # fast | mscs2003
//! data_luns = 1
//!
//! [[group]]                 # an Exchange-style virtual server
//! name = "EVS1"
//! ip = "127.0.3.1"
//! luns = [1]                # data LUNs of the lab bus
//! preferred = ["NODE1", "NODE2"]
//! failback = "prevent"      # or "allow"
//!
//! [[step]]
//! action = "load"           # mail load on a group, in the background
//! group = "EVS1"
//! rate = 20.0
//! duration = "20s"
//!
//! [[step]]
//! action = "kill"           # kill | pause | resume | start
//! node = "owner:EVS1"       # a node name, owner:GROUP or quorum-owner
//!
//! [[step]]
//! action = "wait"
//! until = "group-online"    # group-online | quorum-owner-changed | load-done
//! group = "EVS1"
//! not_on = "NODE1"          # or on = "NODE2"
//! timeout = "30s"
//!
//! [[step]]
//! action = "assert"
//! check = "no-lost-messages"   # no-lost-messages | exclusive-ownership | group-owner
//! ```
//!
//! Other steps: `partition` / `heal` (`node`, `net` = private | public |
//! both), `bus` (`fault` = freeze | thaw | cut | restore | drop | delay
//! (`ms`) | fail (`count`, `sense`) | clear | reset | power-cycle, `node`
//! or `lun`), `move` (`group`, optional `to`), `pause-node` /
//! `resume-node` (cluster pause, `node`), `sleep` (`duration`). `node` accepts the
//! same forms everywhere. Names resolved at the step (`owner:EVS1`) are
//! recorded in the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use busrig_lograte::text::now_ms;

use busrig_cluster::admin;
use busrig_cluster::config::ClusterConfig;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{fail, Context as _, LabError, Result};
use crate::{Lab, LabState, UpOptions};

pub use crate::Net;

/// A [`LabError::Failed`] with a formatted message.
macro_rules! failed {
    ($($t:tt)*) => {
        LabError::Failed(format!($($t)*))
    };
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub layout: Layout,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupDef>,
    /// Decoded one by one in [`Scenario::parse`], so errors name the step.
    #[serde(default, rename = "step")]
    raw_steps: Vec<toml::Value>,
    #[serde(skip)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub nodes: usize,
    #[serde(default = "d_quorum")]
    pub quorum: String,
    #[serde(default = "d_profile")]
    pub profile: String,
    #[serde(default = "d_luns")]
    pub data_luns: u16,
}

fn d_quorum() -> String {
    "disk-scsi2".into()
}
fn d_profile() -> String {
    "fast".into()
}
fn d_luns() -> u16 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    pub name: String,
    pub ip: String,
    pub luns: Vec<u16>,
    #[serde(default)]
    pub preferred: Vec<String>,
    #[serde(default = "d_failback")]
    pub failback: String,
    #[serde(default)]
    pub port: Option<u16>,
}

fn d_failback() -> String {
    "prevent".into()
}

/// One `[[step]]` of a scenario, tagged by its `action` key; each action
/// carries only the fields it uses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Step {
    /// SIGKILL a node's process.
    Kill(NodeStep),
    /// SIGSTOP a node's process.
    Pause(NodeStep),
    /// SIGCONT a node's process.
    Resume(NodeStep),
    /// Start a stopped node and wait until it rejoins.
    Start(NodeStep),
    /// Cut a node off a cluster network.
    Partition(NetStep),
    /// Reconnect a node to a cluster network.
    Heal(NetStep),
    /// A fault on the shared bus, through the target's control plane.
    Bus(BusStep),
    /// Move a group, to a node or to the best other one.
    Move(MoveStep),
    /// Cluster pause of a node (it stays a member and hosts nothing).
    PauseNode(NodeStep),
    /// Cluster resume of a paused node.
    ResumeNode(NodeStep),
    /// Mail load on a group's virtual server, in the background.
    Load(LoadStep),
    /// Wait until a condition holds.
    Wait(WaitStep),
    /// Check a condition now.
    Assert(AssertStep),
    /// Do nothing for a while (`duration`), e.g. while a fault lasts.
    Sleep(SleepStep),
}

/// `sleep`: wait `duration` before the next step.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    pub duration: String,
}

/// A step on one node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStep {
    /// A node name, `owner:GROUP` or `quorum-owner`.
    pub node: String,
}

/// `partition` / `heal`: a node and the networks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetStep {
    pub node: String,
    #[serde(default)]
    pub net: Net,
}

/// `bus`: `fault` is the control plane's LUN action (power-cycle, offline,
/// online), its path action (freeze, thaw, cut, restore, drop, for `node`)
/// or `reset`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusStep {
    pub fault: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u16>,
    /// `delay`: milliseconds per command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// `fail`: how many media commands fail, and the sense (`KEY/ASC/ASCQ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sense: Option<String>,
}

/// `move`: a group, optionally to a node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MoveStep {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `load`: mail load on a group; `rate` messages/s (20) for `duration` (20s).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadStep {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// `wait`: until a condition holds, within `timeout` (60s).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    pub until: Until,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What a `wait` step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// `group` online (on `on`, not on `not_on`).
    GroupOnline,
    /// The quorum owner differs from the one before the last fault.
    QuorumOwnerChanged,
    /// The mail load on `group` finished.
    LoadDone,
}

/// `assert`: a check.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssertStep {
    pub check: Check,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u16>,
}

/// What an `assert` step checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Every acknowledged message of the loads (or `group`'s) is there.
    NoLostMessages,
    /// Every writer run on the data LUNs (or `lun`) held the reservation.
    ExclusiveOwnership,
    /// `group` is online on `on`.
    GroupOwner,
}

impl Until {
    /// The `until` value, as written in the scenario file.
    pub fn as_str(self) -> &'static str {
        match self {
            Until::GroupOnline => "group-online",
            Until::QuorumOwnerChanged => "quorum-owner-changed",
            Until::LoadDone => "load-done",
        }
    }
}

impl Step {
    /// The step's `action` key, as written in the scenario file.
    pub fn action(&self) -> &'static str {
        match self {
            Step::Kill(_) => "kill",
            Step::Pause(_) => "pause",
            Step::Resume(_) => "resume",
            Step::Start(_) => "start",
            Step::Partition(_) => "partition",
            Step::Heal(_) => "heal",
            Step::Bus(_) => "bus",
            Step::Move(_) => "move",
            Step::PauseNode(_) => "pause-node",
            Step::ResumeNode(_) => "resume-node",
            Step::Load(_) => "load",
            Step::Wait(_) => "wait",
            Step::Assert(_) => "assert",
            Step::Sleep(_) => "sleep",
        }
    }

    /// Decodes step number `n` (from 1), naming it and its action in errors.
    fn decode(n: usize, v: toml::Value) -> Result<Step> {
        let action = match v.get("action") {
            Some(toml::Value::String(a)) => a.clone(),
            Some(_) => fail!("step {n}: action must be a string"),
            None => fail!("step {n}: needs action"),
        };
        Step::deserialize(v).map_err(|e| failed!("step {n} ({action}): {}", e.message()))
    }
}

/// Parses `30s`, `500ms`, `2m` or plain seconds.
pub(crate) fn duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| failed!("bad duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => fail!("bad duration {s:?} (e.g. 30s, 500ms, 2m)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Scenario {
    /// Parses and checks a scenario file: every step's action and fields.
    pub fn parse(text: &str) -> Result<Scenario> {
        let mut sc: Scenario = toml::from_str(text)?;
        if sc.layout.nodes == 0 || sc.layout.nodes > 8 {
            fail!("layout.nodes must be 1 to 8");
        }
        for g in &sc.groups {
            for l in &g.luns {
                if *l == 0 || *l > sc.layout.data_luns {
                    fail!(
                        "group {}: LUN {l} is not a data LUN (1..={})",
                        g.name,
                        sc.layout.data_luns
                    );
                }
            }
        }
        sc.steps = std::mem::take(&mut sc.raw_steps)
            .into_iter()
            .enumerate()
            .map(|(i, v)| Step::decode(i + 1, v))
            .collect::<Result<_>>()?;
        for (i, s) in sc.steps.iter().enumerate() {
            let durations = match s {
                Step::Wait(w) => w.timeout.as_deref(),
                Step::Load(l) => l.duration.as_deref(),
                Step::Sleep(z) => Some(z.duration.as_str()),
                _ => None,
            };
            if let Some(d) = durations {
                duration(d).with_context(|| format!("step {}", i + 1))?;
            }
        }
        Ok(sc)
    }
}

/// What one step did, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's number, from 1.
    pub step: usize,
    pub action: String,
    /// Milliseconds after the scenario started.
    pub at_ms: u64,
    pub took_ms: u64,
    pub outcome: String,
    pub ok: bool,
}

/// A lab with its groups set up, performing steps one at a time: the
/// scenario runner's engine, which the chaos runner drives too.
pub(crate) struct Runner<'l> {
    lab: &'l Lab,
    dir: PathBuf,
    cfg: ClusterConfig,
    state: LabState,
    rt: tokio::runtime::Runtime,
    bin: PathBuf,
    loads: BTreeMap<String, (Child, PathBuf)>,
    load_reports: BTreeMap<String, Value>,
    last_quorum_owner: Option<String>,
    /// Each virtual server's SMTP port.
    groups_ports: BTreeMap<String, u16>,
    data_luns: u16,
}

impl<'l> Runner<'l> {
    /// The runner for the running lab `lab` (with `data_luns` data LUNs).
    pub(crate) fn open(lab: &'l Lab, data_luns: u16) -> Result<Runner<'l>> {
        Ok(Runner {
            lab,
            dir: lab.dir().to_path_buf(),
            state: lab.state()?,
            cfg: lab.config()?,
            rt: crate::runtime()?,
            bin: lab.binary().to_path_buf(),
            loads: BTreeMap::new(),
            load_reports: BTreeMap::new(),
            last_quorum_owner: None,
            groups_ports: BTreeMap::new(),
            data_luns,
        })
    }

    /// The cluster file, parsed.
    pub(crate) fn cfg(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The runner's runtime, for admin requests.
    pub(crate) fn rt(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Kills every mail load still running.
    pub(crate) fn kill_loads(&mut self) {
        for (_, (mut c, _)) in std::mem::take(&mut self.loads) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn catalog(&self) -> Result<Value> {
        crate::catalog(&self.rt, &self.cfg)
    }

    pub(crate) fn quorum_owner(&self) -> Option<String> {
        self.cfg.nodes.iter().find_map(|n| {
            let s = self
                .rt
                .block_on(admin::status(&n.admin.to_string(), Some(&self.cfg.secret)))
                .ok()?;
            if s.member && s.acting_owner {
                Some(s.node)
            } else {
                None
            }
        })
    }

    pub(crate) fn group_online_on(&self, g: &str) -> Option<String> {
        crate::group_online_on(&self.rt, &self.cfg, g)
    }

    /// A node name from `NODE`, `owner:GROUP` or `quorum-owner`.
    pub(crate) fn node(&self, spec: &str) -> Result<String> {
        if spec == "quorum-owner" {
            return self
                .quorum_owner()
                .ok_or_else(|| failed!("no acting quorum owner"));
        }
        if let Some(g) = spec.strip_prefix("owner:") {
            return self.catalog()?["groups"][g]["owner"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| failed!("group {g} has no owner"));
        }
        let id = self
            .cfg
            .node_id(spec)
            .ok_or_else(|| failed!("no node {spec:?}"))?;
        Ok(self.cfg.nodes[usize::from(id)].name.clone())
    }

    fn cluster(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["cluster", "--lab"])
            .arg(&self.dir)
            .args(args)
            .output()?;
        if !out.status.success() {
            fail!(
                "busrig cluster {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn control(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let control = self
            .state
            .target
            .control
            .clone()
            .ok_or_else(|| failed!("no bus control"))?;
        let token = crate::bus_token(&self.cfg);
        let (code, v) = self.rt.block_on(busrig_http::request(
            &control,
            method,
            path,
            Some(&body),
            Some(&token),
        ))?;
        if code != 200 {
            fail!("bus control {path}: {v}");
        }
        Ok(v)
    }

    pub(crate) fn finish_load(&mut self, g: &str) -> Result<Value> {
        if let Some(v) = self.load_reports.get(g) {
            return Ok(v.clone());
        }
        let (child, _) = self
            .loads
            .remove(g)
            .ok_or_else(|| failed!("no load was started on {g}"))?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                let log = self.dir.join(format!("logs/mailload-{g}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let mut tail: Vec<&str> = text.lines().rev().take(5).collect();
                tail.reverse();
                failed!(
                    "mailload on {g} printed no report ({}); the end of {}: {}",
                    out.status,
                    log.display(),
                    tail.join(" | ")
                )
            })?;
        self.load_reports.insert(g.to_string(), v.clone());
        Ok(v)
    }

    pub(crate) fn step(&mut self, s: &Step) -> Result<String> {
        match s {
            Step::Kill(n) | Step::Pause(n) | Step::Resume(n) => {
                let n = self.node(&n.node)?;
                let sig = match s {
                    Step::Kill(_) => Signal::SIGKILL,
                    Step::Pause(_) => Signal::SIGSTOP,
                    _ => Signal::SIGCONT,
                };
                self.last_quorum_owner = self.quorum_owner();
                self.lab.send_signal(&n, sig, s.action())?;
                Ok(format!("{} {n}", s.action()))
            }
            Step::Start(n) => {
                let n = self.node(&n.node)?;
                self.lab.start(&n, true)?;
                Ok(format!("{n} started and rejoined"))
            }
            Step::Partition(p) | Step::Heal(p) => {
                let n = self.node(&p.node)?;
                let net = p.net.as_str();
                self.last_quorum_owner = self.quorum_owner();
                let out = Command::new(&self.bin)
                    .args(["lab", s.action(), &n, "--net", net, "--dir"])
                    .arg(&self.dir)
                    .output()?;
                if !out.status.success() {
                    fail!("{}", String::from_utf8_lossy(&out.stderr).trim());
                }
                Ok(format!("{} {n} ({net})", s.action()))
            }
            Step::PauseNode(n) | Step::ResumeNode(n) => {
                let n = self.node(&n.node)?;
                let verb = if matches!(s, Step::PauseNode(_)) {
                    "pause"
                } else {
                    "resume"
                };
                self.cluster(&["node", verb, &n])?;
                Ok(format!("cluster {verb} {n}"))
            }
            Step::Move(m) => {
                let g = m.group.as_str();
                let mut args = vec!["group", "move", g];
                let to;
                if let Some(t) = &m.to {
                    to = self.node(t)?;
                    args.extend(["--to", to.as_str()]);
                }
                self.cluster(&args)?;
                Ok(format!("moving {g}"))
            }
            Step::Bus(b) => {
                let fault = b.fault.as_str();
                match fault {
                    "reset" => {
                        self.control("POST", "/reset", json!({}))?;
                        Ok("bus reset".into())
                    }
                    "power-cycle" | "offline" | "online" => {
                        let lun = b.lun.ok_or_else(|| failed!("bus {fault} needs lun"))?;
                        self.control("POST", "/lun", json!({"lun": lun, "action": fault}))?;
                        Ok(format!("LUN {lun} {fault}"))
                    }
                    _ => {
                        let n = self.node(
                            b.node
                                .as_deref()
                                .ok_or_else(|| failed!("bus {fault} needs node"))?,
                        )?;
                        let id = self
                            .cfg
                            .node_id(&n)
                            .ok_or_else(|| failed!("no node {n} in the cluster file"))?;
                        let ini = self.cfg.initiator_name(id);
                        self.last_quorum_owner = self.quorum_owner();
                        let mut body = json!({"initiator": ini, "action": fault});
                        if let Some(ms) = b.ms {
                            body["ms"] = json!(ms);
                        }
                        if let Some(c) = b.count {
                            body["count"] = json!(c);
                        }
                        if let Some(sense) = &b.sense {
                            body["sense"] = json!(sense);
                        }
                        self.control("POST", "/path", body)?;
                        Ok(format!("path {fault} for {n}"))
                    }
                }
            }
            Step::Load(l) => {
                let g = l.group.clone();
                let idx = self
                    .groups_ports
                    .get(&g)
                    .copied()
                    .ok_or_else(|| failed!("no virtual server {g} in the layout"))?;
                let rate = l.rate.unwrap_or(20.0);
                let d = l.duration.clone().unwrap_or_else(|| "20s".into());
                let records = self.dir.join(format!("{g}-acks.jsonl"));
                let child = Command::new(&self.bin)
                    .args(["mailload", "--lab"])
                    .arg(&self.dir)
                    .args(["--to", &format!("{}:{}", g.to_ascii_lowercase(), idx)])
                    .args([
                        "--rate",
                        &rate.to_string(),
                        "--duration",
                        &d,
                        "--json",
                        "--records",
                    ])
                    .arg(&records)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::from(std::fs::File::create(
                        self.dir.join(format!("logs/mailload-{g}.log")),
                    )?))
                    .spawn()?;
                self.loads.insert(g.clone(), (child, records));
                Ok(format!("mail load on {g}: {rate}/s for {d}"))
            }
            Step::Wait(w) => {
                let timeout = w
                    .timeout
                    .as_deref()
                    .map(duration)
                    .transpose()?
                    .unwrap_or(Duration::from_secs(60));
                let t = Instant::now();
                let ok = |r: &mut Runner<'_>| -> Result<Option<String>> {
                    Ok(match w.until {
                        Until::GroupOnline => {
                            let g = w
                                .group
                                .as_deref()
                                .ok_or_else(|| failed!("wait group-online needs group"))?;
                            let on = w.on.as_deref().map(|n| r.node(n)).transpose()?;
                            let not_on = w.not_on.as_deref().map(|n| r.node(n)).transpose()?;
                            r.group_online_on(g)
                                .filter(|o| {
                                    on.as_ref().is_none_or(|n| n == o)
                                        && not_on.as_ref().is_none_or(|n| n != o)
                                })
                                .map(|o| format!("{g} online on {o}"))
                        }
                        Until::QuorumOwnerChanged => r
                            .quorum_owner()
                            .filter(|o| Some(o) != r.last_quorum_owner.as_ref())
                            .map(|o| format!("quorum owner now {o}")),
                        Until::LoadDone => {
                            let g = w
                                .group
                                .clone()
                                .ok_or_else(|| failed!("wait load-done needs group"))?;
                            r.finish_load(&g)?;
                            Some(format!("load on {g} finished"))
                        }
                    })
                };
                loop {
                    if let Some(what) = ok(self)? {
                        return Ok(format!("{what} after {:.3} s", t.elapsed().as_secs_f64()));
                    }
                    if t.elapsed() > timeout {
                        fail!("{} not reached within {timeout:?}", w.until.as_str());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Step::Sleep(z) => {
                let d = duration(&z.duration)?;
                std::thread::sleep(d);
                Ok(format!("slept {d:?}"))
            }
            Step::Assert(a) => match a.check {
                Check::NoLostMessages => {
                    let groups: Vec<String> = match &a.group {
                        Some(g) => vec![g.clone()],
                        None => self
                            .loads
                            .keys()
                            .chain(self.load_reports.keys())
                            .cloned()
                            .collect(),
                    };
                    let mut acked = 0;
                    for g in groups {
                        let r = self.finish_load(&g)?;
                        let lost = r["acknowledged_but_missing"].as_u64().unwrap_or(u64::MAX);
                        if lost != 0 {
                            fail!("{g}: {lost} acknowledged messages missing");
                        }
                        acked += r["acknowledged"].as_u64().unwrap_or(0);
                    }
                    Ok(format!("{acked} acknowledged, 0 lost"))
                }
                Check::ExclusiveOwnership => {
                    let mut luns: Vec<u16> = match a.lun {
                        Some(l) => vec![l],
                        None => (1..=self.data_luns).collect(),
                    };
                    luns.sort();
                    let mut seen = Vec::new();
                    for l in luns {
                        let v = self.control("GET", &format!("/audit?lun={l}"), json!({}))?;
                        for run in v["history"].as_array().into_iter().flatten() {
                            if run["reserved_by_writer"] != json!(true) {
                                fail!("LUN {l}: {}", run["summary"]);
                            }
                        }
                        seen.push(format!(
                            "LUN {l}: {} writer runs",
                            v["history"].as_array().map_or(0, Vec::len)
                        ));
                    }
                    Ok(format!("exclusive: {}", seen.join(", ")))
                }
                Check::GroupOwner => {
                    let g = a
                        .group
                        .as_deref()
                        .ok_or_else(|| failed!("group-owner needs group"))?;
                    let want = self.node(
                        a.on.as_deref()
                            .ok_or_else(|| failed!("group-owner needs on"))?,
                    )?;
                    match self.group_online_on(g) {
                        Some(o) if o == want => Ok(format!("{g} on {o}")),
                        other => fail!("{g} is on {other:?}, not {want}"),
                    }
                }
            },
        }
    }
}

// Per-runner facts from the layout.
impl Runner<'_> {
    /// Creates each group as a virtual server and waits until it is online.
    pub(crate) fn setup(&mut self, groups: &[GroupDef]) -> Result<()> {
        for (i, g) in groups.iter().enumerate() {
            let port = g.port.unwrap_or(2525 + i as u16);
            let mut args: Vec<String> = vec![
                "evs".into(),
                "create".into(),
                g.name.clone(),
                "--ip".into(),
                g.ip.clone(),
                "--port".into(),
                port.to_string(),
                "--failback".into(),
                g.failback.clone(),
            ];
            for l in &g.luns {
                args.push("--disk".into());
                args.push(format!(
                    "iscsi://{}/{}/{l}",
                    self.state.target.addr, self.state.target_iqn
                ));
            }
            if !g.preferred.is_empty() {
                args.push("--preferred".into());
                args.push(g.preferred.join(","));
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            self.cluster(&a)?;
            self.groups_ports.insert(g.name.clone(), port);
        }
        for g in groups {
            let t = Instant::now();
            while self.group_online_on(&g.name).is_none() {
                if t.elapsed() > Duration::from_secs(120) {
                    fail!("group {} did not come online", g.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// Reads and checks the scenario file at `path`.
pub fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Scenario::parse(&text).with_context(|| path.display().to_string())
}

/// Where a scenario's report was written and whether every step passed.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// `report.json` in the lab folder.
    pub report: PathBuf,
    pub passed: bool,
}

/// Runs `sc` (read from `file`) on a fresh lab; `on_step` sees each step's
/// report as it finishes. Writes `report.json` in the lab folder and, unless
/// `keep`, brings the lab down.
pub fn run(
    lab: &Lab,
    sc: &Scenario,
    file: &Path,
    keep: bool,
    on_step: impl FnMut(&StepReport),
) -> Result<ScenarioResult> {
    let dir = lab.dir();
    lab.up(&UpOptions {
        nodes: sc.layout.nodes,
        quorum: sc.layout.quorum.clone(),
        profile: sc.layout.profile.clone(),
        data_luns: sc.layout.data_luns,
        timeout: None,
        hosts: crate::hosts::HostsMode::Single,
    })?;
    let result = run_in(lab, sc, on_step);
    if !keep {
        let _ = lab.down();
    }
    let (reports, ok) = result?;
    let report = json!({
        "scenario": sc.name,
        "file": file,
        "layout": { "nodes": sc.layout.nodes, "quorum": sc.layout.quorum, "profile": sc.layout.profile },
        "steps": reports,
        "passed": ok,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(ScenarioResult {
        report: dir.join("report.json"),
        passed: ok,
    })
}

fn run_in(
    lab: &Lab,
    sc: &Scenario,
    mut on_step: impl FnMut(&StepReport),
) -> Result<(Vec<StepReport>, bool)> {
    let mut r = Runner::open(lab, sc.layout.data_luns)?;
    r.setup(&sc.groups)?;
    let t0 = now_ms();
    let mut out = Vec::new();
    let mut ok = true;
    for (i, s) in sc.steps.iter().enumerate() {
        let at = now_ms() - t0;
        let t = Instant::now();
        let res = r.step(s);
        let took = t.elapsed().as_millis() as u64;
        let (outcome, good) = match res {
            Ok(o) => (o, true),
            Err(e) => (format!("FAILED: {}", e.chain()), false),
        };
        let report = StepReport {
            step: i + 1,
            action: s.action().to_string(),
            at_ms: at,
            took_ms: took,
            outcome,
            ok: good,
        };
        on_step(&report);
        out.push(report);
        if !good {
            ok = false;
            break;
        }
    }
    r.kill_loads();
    Ok((out, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                Scenario::parse(&text)
                    .unwrap_or_else(|err| panic!("{}: {err:#}", e.path().display()));
                n += 1;
            }
        }
        assert!(n >= 4, "expected the four example scenarios, found {n}");
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let base = "name = \"x\"\n[layout]\nnodes = 2\n";
        assert!(Scenario::parse(&format!("{base}[[step]]\naction = \"explode\"\n")).is_err());
        assert!(Scenario::parse(&format!("{base}[[step]]\naction = \"kill\"\n")).is_err());
        assert!(Scenario::parse(&format!(
            "{base}[[step]]\naction = \"wait\"\nuntil = \"group-online\"\ntimeout = \"soon\"\n"
        ))
        .is_err());
        assert!(Scenario::parse(&format!(
            "{base}[[group]]\nname = \"G\"\nip = \"127.0.3.1\"\nluns = [9]\n"
        ))
        .is_err());
        assert!(Scenario::parse(&format!("{base}bogus = 1\n")).is_err());
        Scenario::parse(&format!(
            "{base}[[step]]\naction = \"kill\"\nnode = \"owner:G\"\n"
        ))
        .unwrap();
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
    }

    fn parse_err(steps: &str) -> String {
        let base = "name = \"x\"\n[layout]\nnodes = 2\n";
        format!(
            "{:#}",
            Scenario::parse(&format!("{base}{steps}")).unwrap_err()
        )
    }

    #[test]
    fn bad_steps_name_the_step_and_the_problem() {
        let ok = "[[step]]\naction = \"kill\"\nnode = \"NODE1\"\n";
        let e = parse_err(&format!("{ok}[[step]]\naction = \"explode\"\n"));
        assert!(
            e.contains("step 2 (explode)") && e.contains("unknown variant"),
            "{e}"
        );
        let e = parse_err(&format!("{ok}[[step]]\naction = \"kill\"\n"));
        assert!(
            e.contains("step 2 (kill)") && e.contains("missing field `node`"),
            "{e}"
        );
        let e = parse_err("[[step]]\naction = \"kill\"\nnode = \"N\"\ncheck = \"x\"\n");
        assert!(
            e.contains("step 1 (kill)") && e.contains("unknown field `check`"),
            "{e}"
        );
        let e = parse_err("[[step]]\naction = \"wait\"\nuntil = \"dawn\"\n");
        assert!(e.contains("step 1 (wait)") && e.contains("dawn"), "{e}");
        let e = parse_err("[[step]]\nnode = \"N\"\n");
        assert!(e.contains("step 1: needs action"), "{e}");
    }

    #[test]
    fn steps_decode_to_their_typed_fields() {
        let base = "name = \"x\"\n[layout]\nnodes = 2\n";
        let sc = Scenario::parse(&format!(
            "{base}[[step]]\naction = \"partition\"\nnode = \"NODE2\"\nnet = \"private\"\n\
             [[step]]\naction = \"heal\"\nnode = \"NODE2\"\n\
             [[step]]\naction = \"pause-node\"\nnode = \"owner:G\"\n\
             [[step]]\naction = \"wait\"\nuntil = \"quorum-owner-changed\"\ntimeout = \"5s\"\n\
             [[step]]\naction = \"assert\"\ncheck = \"exclusive-ownership\"\nlun = 1\n"
        ))
        .unwrap();
        assert_eq!(
            sc.steps[0],
            Step::Partition(NetStep {
                node: "NODE2".into(),
                net: Net::Private
            })
        );
        assert_eq!(
            sc.steps[1],
            Step::Heal(NetStep {
                node: "NODE2".into(),
                net: Net::Both
            })
        );
        assert_eq!(sc.steps[2].action(), "pause-node");
        assert!(matches!(
            &sc.steps[3],
            Step::Wait(WaitStep { until: Until::QuorumOwnerChanged, timeout: Some(t), .. }) if t == "5s"
        ));
        assert!(matches!(
            &sc.steps[4],
            Step::Assert(AssertStep {
                check: Check::ExclusiveOwnership,
                lun: Some(1),
                ..
            })
        ));
    }

    #[test]
    fn every_example_scenario_parses_step_by_step() {
        for file in [
            "two-node-scsi2-mscs2003.toml",
            "path-cut.toml",
            "split-brain.toml",
            "four-node-demo.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let sc = Scenario::parse(&text).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            let raw: toml::Value = toml::from_str(&text).unwrap();
            let want: Vec<&str> = raw["step"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["action"].as_str().unwrap())
                .collect();
            let got: Vec<&str> = sc.steps.iter().map(Step::action).collect();
            assert_eq!(got, want, "{file}");
        }
    }
}
