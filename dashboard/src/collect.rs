//! One polling round: ask every node, the bus and (in a lab) the lab's
//! files, and make the [`Snapshot`] the page shows (docs/dashboard.md,
//! "Where the data comes from").
//!
//! Each request is bounded by [`ASK_TIMEOUT`], so a node stopped with
//! SIGSTOP (which accepts connections in the kernel and never answers)
//! delays a round by that much and no more; it shows as offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrig_cluster::admin::{self, ClusterStatus};
use busrig_cluster::config::ClusterConfig;
use busrig_lab::chaos::check::{NodeEvent, NodeRecord, WriterRun};
use busrig_lograte::text::now_ms;
use serde::Serialize;
use serde_json::Value;

use crate::alarms::{Alarm, Alarms};
use crate::timeline::{LogTail, Timeline};

/// How long one request of a round may take.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(1200);

/// The bus audit is asked every this many rounds (one request per LUN).
const AUDIT_EVERY: u64 = 4;

/// How many role records the alarms keep. The oldest go first, which can
/// only hide an old overlap, never make one up: a role's start is older
/// than its end.
const RECORDS_KEPT: usize = 20_000;

/// How many points of each rate the bench view keeps.
const BENCH_POINTS: usize = 120;

/// One node to ask: its admin address, and its name when known before it
/// answers (from a cluster file).
#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub name: Option<String>,
    pub admin: String,
}

/// What the dashboard watches, and the credentials its actions use.
#[derive(Debug, Clone)]
pub struct Sources {
    /// A lab: its folder (`lab.json` is read every round, for the
    /// processes and the bus address) and the binary its processes run.
    pub lab: Option<busrig_lab::Lab>,
    pub nodes: Vec<NodeAddr>,
    /// The bus's control plane.
    pub control: Option<String>,
    /// The cluster file: the nodes' names and the secret the admin
    /// credential is derived from.
    pub config: Option<ClusterConfig>,
    /// The bus's control token.
    pub bus_token: Option<String>,
}

impl Sources {
    /// The lab in `dir`, whose cluster file is `cfg`.
    pub fn lab(dir: &Path, binary: PathBuf, cfg: &ClusterConfig) -> Sources {
        let control = busrig_lab::bus_control(dir).ok();
        Sources {
            lab: Some(busrig_lab::Lab::new(binary, dir)),
            nodes: nodes_of(cfg),
            control,
            config: Some(cfg.clone()),
            bus_token: Some(busrig_lab::bus_token(cfg)),
        }
    }

    /// Nodes by address, then every node of the cluster file `cfg` (whose
    /// secret is used), and a control plane with its token.
    pub fn direct(
        nodes: Vec<String>,
        cfg: Option<&ClusterConfig>,
        control: Option<String>,
        bus_token: Option<String>,
    ) -> Sources {
        let mut all: Vec<NodeAddr> = nodes
            .into_iter()
            .map(|admin| NodeAddr { name: None, admin })
            .collect();
        for n in cfg.map(nodes_of).unwrap_or_default() {
            if !all.iter().any(|a| a.admin == n.admin) {
                all.push(n);
            }
        }
        Sources {
            lab: None,
            nodes: all,
            control,
            config: cfg.cloned(),
            bus_token: bus_token.filter(|t| !t.is_empty()),
        }
    }

    /// The cluster secret.
    pub fn secret(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.secret.as_str())
    }

    /// Whether there is anything to watch.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.control.is_none()
    }
}

fn nodes_of(cfg: &ClusterConfig) -> Vec<NodeAddr> {
    cfg.nodes
        .iter()
        .map(|n| NodeAddr {
            name: Some(n.name.clone()),
            admin: n.admin.to_string(),
        })
        .collect()
}

/// A node's state as the page shows it: the member's view, and whether
/// the node itself answers while outside the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Online,
    Paused,
    /// Answers, and is asking to join (or forming, or regrouping).
    Joining,
    Offline,
}

/// Which way a pending group or resource is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Online,
    Offline,
}

/// One node on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub name: String,
    pub admin: String,
    pub state: NodeState,
    /// Its own phase (`member`, `joining`, ...), when it answers.
    pub phase: Option<String>,
    /// Its quorum arbitration step, in words.
    pub arbitration: Option<String>,
    /// How long ago the node whose view is shown last heard it, on each
    /// network (none for that node itself).
    pub heartbeat: Option<admin::HeartbeatAge>,
    pub acting_owner: bool,
    pub writes_held: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// In a lab: its process (`running`, `stopped`, `exited`).
    pub process: Option<String>,
    pub pid: Option<u32>,
}

/// One resource of a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceView {
    pub name: String,
    pub kind: String,
    /// `online`, `offline`, `pending`, `failed` (or `unknown`).
    pub state: String,
    pub pending: Option<Direction>,
    /// The node that reported the state.
    pub node: Option<String>,
    pub reason: Option<String>,
}

/// One group: the Failover Manager's record of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub name: String,
    pub owner: Option<String>,
    /// `online`, `offline`, `pending`, `failed`, `partially-online` (or
    /// `unknown` before any node reported).
    pub state: String,
    pub pending: Option<Direction>,
    /// The node that reported the state.
    pub state_node: Option<String>,
    pub reason: Option<String>,
    /// The administrator's intent: `online` or `offline`.
    pub target: String,
    pub preferred: Vec<String>,
    /// Failovers inside the group's failover period.
    pub failovers: usize,
    pub resources: Vec<ResourceView>,
}

/// The cluster on the page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: Option<String>,
    /// The node whose view is shown (a member, the acting owner first).
    pub asked: Option<String>,
    pub epoch: Option<u64>,
    pub quorum_owner: Option<String>,
    pub quorum_model: Option<String>,
    pub profile: Option<String>,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
    /// Why the groups could not be read.
    pub error: Option<String>,
}

/// The bus: its control plane's `GET /status` as it answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusView {
    pub control: Option<String>,
    pub status: Option<Value>,
    pub error: Option<String>,
}

/// One rate series of the bench view, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rate {
    /// `bus NAME` or `TARGET LUN N`.
    pub what: String,
    pub ops_per_s: f64,
    pub bytes_per_s: f64,
    /// Mean time an I/O (or a transfer) waited in the model's queue in the
    /// last interval, microseconds.
    pub mean_queue_us: f64,
    /// Mean busy (service) time per I/O, microseconds (disk models only).
    pub mean_service_us: Option<f64>,
    /// Operations per second, one point per round.
    pub history: Vec<f64>,
}

/// Live I/O rates from the bus's counters (disk models and bandwidth
/// models); empty when the bus has neither.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bench {
    pub rates: Vec<Rate>,
}

/// What each action needs is at hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Can {
    /// The cluster secret: group, resource and node actions.
    pub cluster: bool,
    /// The bus token: resets, path faults, LUN faults.
    pub bus: bool,
    /// A lab: kill, start, partition, heal.
    pub lab: bool,
}

/// Everything the page shows, but the timeline (sent apart).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub now_ms: u64,
    /// What is watched, in words.
    pub source: String,
    pub can: Can,
    pub cluster: ClusterView,
    pub bus: BusView,
    pub alarms: Vec<Alarm>,
    pub bench: Bench,
}

/// Counters of one rate at the previous round.
#[derive(Debug, Clone, Copy)]
struct Counters {
    ms: u64,
    ops: u64,
    bytes: u64,
    queued_us: u64,
    busy_us: Option<u64>,
}

/// The polling state kept between rounds.
pub struct Collector {
    sources: Sources,
    timeline: Arc<Mutex<Timeline>>,
    round: u64,
    prev: Option<Snapshot>,
    tails: BTreeMap<String, LogTail>,
    /// The role records of the nodes' logs and processes (lab only).
    records: Vec<NodeRecord>,
    /// Each lab node's process at the last round: pid, running, when.
    procs: BTreeMap<String, (Option<u32>, &'static str, u64)>,
    counters: BTreeMap<String, Counters>,
    rates: BTreeMap<String, Rate>,
    audit: Vec<WriterRun>,
    alarms: Alarms,
}

async fn ask<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(ASK_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: no answer within {ASK_TIMEOUT:?}")),
    }
}

/// `GET path` on the bus's control plane.
async fn bus_get(control: &str, path: &str) -> Result<Value, String> {
    ask(control, async {
        match busrig_http::request(control, "GET", path, None, None).await {
            Ok((200, v)) => Ok(v),
            Ok((code, v)) => Err(format!(
                "bus control {control}: HTTP {code}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("")
            )),
            Err(e) => Err(format!("bus control {control}: {e}")),
        }
    })
    .await
}

/// `GET path` on a node's admin endpoint.
async fn node_get(addr: &str, path: &str, secret: Option<&str>) -> Result<Value, String> {
    ask(addr, async {
        admin::request(addr, "GET", path, None, secret)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

fn word(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

/// A state word of the catalog as the page's word and direction.
fn pending_of(state: &str) -> (String, Option<Direction>) {
    match state {
        "pending" | "online-pending" => ("pending".into(), Some(Direction::Online)),
        "offline-pending" => ("pending".into(), Some(Direction::Offline)),
        s => (s.to_string(), None),
    }
}

/// The groups and resources of a `GET /catalog` answer.
pub fn groups_of(catalog: &Value) -> Vec<GroupView> {
    let empty = serde_json::Map::new();
    let groups = catalog["groups"].as_object().unwrap_or(&empty);
    let resources = catalog["resources"].as_object().unwrap_or(&empty);
    groups
        .iter()
        .map(|(name, g)| {
            let (state, pending) = pending_of(g["state"]["state"].as_str().unwrap_or("unknown"));
            let mut names: Vec<String> = g["resources"]
                .as_array()
                .map(|a| a.iter().filter_map(word).collect())
                .unwrap_or_default();
            // Resources of the group outside the online order, too.
            for (r, v) in resources {
                if v["spec"]["group"] == *name && !names.contains(r) {
                    names.push(r.clone());
                }
            }
            let resources = names
                .iter()
                .map(|r| {
                    let v = &resources.get(r).cloned().unwrap_or(Value::Null);
                    let (state, pending) =
                        pending_of(v["state"]["state"].as_str().unwrap_or("unknown"));
                    ResourceView {
                        name: r.clone(),
                        kind: v["spec"]["type"].as_str().unwrap_or("?").to_string(),
                        state,
                        pending,
                        node: word(&v["state"]["node"]),
                        reason: word(&v["state"]["reason"]),
                    }
                })
                .collect();
            GroupView {
                name: name.clone(),
                owner: word(&g["owner"]),
                state,
                pending,
                state_node: word(&g["state"]["node"]),
                reason: word(&g["state"]["reason"]),
                target: g["target"].as_str().unwrap_or("online").to_string(),
                preferred: g["spec"]["preferred-owners"]
                    .as_array()
                    .map(|a| a.iter().filter_map(word).collect())
                    .unwrap_or_default(),
                failovers: g["failovers"].as_array().map_or(0, Vec::len),
                resources,
            }
        })
        .collect()
}

/// The page's node states from the answers: the member's view says who
/// is online or paused; a node outside it that answers is joining.
pub fn node_views(
    nodes: &[NodeAddr],
    answers: &[Result<ClusterStatus, String>],
    view: Option<&ClusterStatus>,
) -> Vec<NodeView> {
    nodes
        .iter()
        .zip(answers)
        .map(|(n, a)| {
            let own = a.as_ref().ok();
            let name = n
                .name
                .clone()
                .or_else(|| own.map(|s| s.node.clone()))
                .unwrap_or_else(|| n.admin.clone());
            let in_view = view.and_then(|v| v.node_state(&name));
            let state = match (in_view, own) {
                (Some(admin::NodeState::Online), Some(_)) => NodeState::Online,
                (Some(admin::NodeState::Paused), Some(_)) => NodeState::Paused,
                // The view still lists it but it does not answer: the
                // member will notice within its detection time.
                (Some(admin::NodeState::Online | admin::NodeState::Paused), None) => {
                    NodeState::Offline
                }
                (_, Some(s)) if !s.member || in_view == Some(admin::NodeState::Offline) => {
                    match serde_json::to_value(s.phase)
                        .ok()
                        .as_ref()
                        .and_then(Value::as_str)
                    {
                        Some("stopped") => NodeState::Offline,
                        _ => NodeState::Joining,
                    }
                }
                (_, Some(_)) => NodeState::Online,
                (_, None) => NodeState::Offline,
            };
            let heartbeat = view
                .and_then(|v| v.heartbeats.iter().find(|h| h.node == name))
                .cloned();
            NodeView {
                name,
                admin: n.admin.clone(),
                state,
                phase: own.and_then(|s| word(&serde_json::to_value(s.phase).ok()?)),
                arbitration: own.map(|s| s.arbitration.clone()),
                heartbeat,
                acting_owner: own.is_some_and(|s| s.acting_owner),
                writes_held: own.is_some_and(|s| s.writes_held),
                error: a.as_ref().err().cloned(),
                process: None,
                pid: None,
            }
        })
        .collect()
}

/// The answer whose view the page shows: the acting owner's, else a
/// member's, else any.
fn pick_view(answers: &[Result<ClusterStatus, String>]) -> Option<usize> {
    let ok = |i: &usize| answers[*i].is_ok();
    let idx = 0..answers.len();
    let st = |i: usize| answers[i].as_ref().ok();
    idx.clone()
        .filter(ok)
        .find(|&i| st(i).is_some_and(|s| s.acting_owner && s.member))
        .or_else(|| {
            idx.clone()
                .filter(ok)
                .find(|&i| st(i).is_some_and(|s| s.member))
        })
        .or_else(|| idx.clone().find(ok))
}

impl Collector {
    pub fn new(sources: Sources, timeline: Arc<Mutex<Timeline>>) -> Collector {
        Collector {
            sources,
            timeline,
            round: 0,
            prev: None,
            tails: BTreeMap::new(),
            records: Vec::new(),
            procs: BTreeMap::new(),
            counters: BTreeMap::new(),
            rates: BTreeMap::new(),
            audit: Vec::new(),
            alarms: Alarms::default(),
        }
    }

    /// The sequence number of the timeline's newest entry.
    pub fn timeline_seq(&self) -> u64 {
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seq()
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One round: ask everything, update the timeline and the alarms.
    pub async fn round(&mut self) -> Snapshot {
        self.round += 1;
        let now = now_ms();
        let lab_state = self
            .sources
            .lab
            .as_ref()
            .and_then(|l| busrig_lab::LabState::load(l.dir()).ok());
        let control = lab_state
            .as_ref()
            .and_then(|s| s.target.control.clone())
            .or_else(|| self.sources.control.clone());
        let secret = self.sources.secret().map(String::from);
        let nodes = self.sources.nodes.clone();

        let statuses = futures_util::future::join_all(nodes.iter().map(|n| {
            let secret = secret.clone();
            async move {
                ask(&n.admin, async {
                    admin::status(&n.admin, secret.as_deref())
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
            }
        }));
        let bus = async {
            match &control {
                Some(c) => Some(bus_get(c, "/status").await),
                None => None,
            }
        };
        let (answers, bus) = tokio::join!(statuses, bus);

        let view_at = pick_view(&answers);
        let view = view_at.and_then(|i| answers[i].as_ref().ok());
        let mut cluster = ClusterView {
            nodes: node_views(&nodes, &answers, view),
            ..ClusterView::default()
        };
        if let Some(v) = view {
            cluster.name = Some(v.cluster.clone());
            cluster.asked = Some(v.node.clone());
            cluster.epoch = v.epoch;
            cluster.quorum_owner = v.quorum_owner.clone();
            cluster.quorum_model = Some(v.quorum_model.clone());
            cluster.profile = Some(v.profile.clone());
        }
        self.timeline()
            .know(cluster.nodes.iter().map(|n| n.name.clone()), Vec::new());
        if let Some(i) = view_at.filter(|_| view.is_some_and(|v| v.member)) {
            let addr = &nodes[i].admin;
            let (catalog, db) = tokio::join!(
                node_get(addr, "/catalog", secret.as_deref()),
                node_get(addr, "/db", secret.as_deref())
            );
            match catalog {
                Ok(c) => {
                    cluster.groups = groups_of(&c);
                    self.timeline()
                        .know(Vec::new(), cluster.groups.iter().map(|g| g.name.clone()));
                }
                Err(e) => cluster.error = Some(e),
            }
            if let Ok(db) = db {
                if let Ok(snap) = serde_json::from_value(db) {
                    let events = busrig_cluster::admin_client::events(&snap);
                    self.timeline().add_cluster_events(&events);
                }
            }
        } else if view.is_none() && !nodes.is_empty() {
            cluster.error = Some("no node answers".into());
        }

        let mut busview = BusView {
            control: control.clone(),
            ..BusView::default()
        };
        match bus {
            Some(Ok(st)) => {
                self.timeline().add_bus_events(&st);
                busview.status = Some(st);
            }
            Some(Err(e)) => busview.error = Some(e),
            None => {}
        }
        if let (Some(c), Some(st)) = (&control, &busview.status) {
            if self.round % AUDIT_EVERY == 1 {
                self.audit = audit(c, st).await;
            }
        }

        if let (Some(lab), Some(state)) = (self.sources.lab.clone(), &lab_state) {
            self.lab_round(&lab, state, &mut cluster, now);
        }

        let bench = self.bench(busview.status.as_ref(), now);
        let mut snap = Snapshot {
            now_ms: now,
            source: self.describe(control.as_deref()),
            can: Can {
                cluster: secret.is_some(),
                bus: self.sources.bus_token.is_some() && control.is_some(),
                lab: self.sources.lab.is_some(),
            },
            cluster,
            bus: busview,
            alarms: Vec::new(),
            bench,
        };
        let quorum_lun = self.sources.lab.is_some().then_some(0);
        snap.alarms = self
            .alarms
            .update(&snap, &self.records, &self.audit, quorum_lun, now);
        if let Some(prev) = &self.prev {
            let changes = crate::timeline::changes(prev, &snap);
            self.timeline().add_observed(now, changes);
        }
        self.prev = Some(snap.clone());
        snap
    }

    fn describe(&self, control: Option<&str>) -> String {
        match &self.sources.lab {
            Some(l) => format!("lab {}", l.dir().display()),
            None => {
                let nodes: Vec<&str> = self
                    .sources
                    .nodes
                    .iter()
                    .map(|n| n.admin.as_str())
                    .collect();
                format!(
                    "nodes {}; bus {}",
                    if nodes.is_empty() {
                        "-".into()
                    } else {
                        nodes.join(", ")
                    },
                    control.unwrap_or("-")
                )
            }
        }
    }

    /// The lab's part of a round: process states, and the nodes' logs
    /// tailed for the timeline and the role checker.
    fn lab_round(
        &mut self,
        lab: &busrig_lab::Lab,
        state: &busrig_lab::LabState,
        cluster: &mut ClusterView,
        now: u64,
    ) {
        for p in &state.nodes {
            let path = lab.dir().join(&p.log);
            let tail = self.tails.entry(p.name.clone()).or_default();
            let (entries, records) = tail.read(&path, &p.name);
            let last_logged = tail.last_ms();
            self.records.extend(records);
            self.timeline().add_node_lines(entries);

            let proc_state = busrig_lab::process_state(p.pid);
            if let Some(n) = cluster.nodes.iter_mut().find(|n| n.name == p.name) {
                n.process = Some(proc_state.to_string());
                n.pid = p.pid;
            }
            // A process gone (or replaced) held nothing from the last time
            // it was seen running (one gone before the dashboard started:
            // from its last log line); a stopped one acts on nothing.
            let before = self.procs.get(&p.name).copied();
            let running = matches!(proc_state, "running" | "stopped");
            let mut record = |ms: u64, event: NodeEvent| {
                self.records.push(NodeRecord {
                    ms,
                    node: p.name.clone(),
                    event,
                })
            };
            match before {
                Some((pid, was, seen)) => match (was, proc_state) {
                    ("running" | "stopped", _) if !running || pid != p.pid => {
                        record(seen, NodeEvent::Killed)
                    }
                    ("running", "stopped") => record(seen, NodeEvent::Paused),
                    ("stopped", "running") => record(now, NodeEvent::Resumed),
                    _ => {}
                },
                None if !running => record(last_logged, NodeEvent::Killed),
                None if proc_state == "stopped" => record(now, NodeEvent::Paused),
                None => {}
            }
            let seen = match running {
                true => now,
                false => before.map_or(now, |b| b.2),
            };
            self.procs.insert(p.name.clone(), (p.pid, proc_state, seen));
        }
        if self.records.len() > RECORDS_KEPT {
            let extra = self.records.len() - RECORDS_KEPT;
            self.records.drain(..extra);
        }
    }

    /// Rates from the bus's counters: each LUN's disk model, each bus's
    /// bandwidth model.
    fn bench(&mut self, status: Option<&Value>, now: u64) -> Bench {
        let Some(st) = status else {
            return Bench::default();
        };
        let mut seen = Vec::new();
        let none = Vec::new();
        for l in st["luns"].as_array().unwrap_or(&none) {
            let c = &l["disk_model"]["counters"];
            if c.is_null() {
                continue;
            }
            let what = format!("{} LUN {}", l["target"].as_str().unwrap_or("?"), l["lun"]);
            let counters = Counters {
                ms: now,
                ops: c["ios"].as_u64().unwrap_or(0),
                bytes: c["bytes"].as_u64().unwrap_or(0),
                queued_us: c["queued_us"].as_u64().unwrap_or(0),
                busy_us: c["busy_us"].as_u64(),
            };
            self.rate(&what, counters);
            seen.push(what);
        }
        for b in st["buses"].as_array().unwrap_or(&none) {
            let c = &b["bandwidth"]["counters"];
            if c.is_null() {
                continue;
            }
            let what = format!("bus {}", b["name"].as_str().unwrap_or("?"));
            let counters = Counters {
                ms: now,
                ops: c["transfers"].as_u64().unwrap_or(0),
                bytes: c["bytes"].as_u64().unwrap_or(0),
                queued_us: c["queued_us"].as_u64().unwrap_or(0),
                busy_us: None,
            };
            self.rate(&what, counters);
            seen.push(what);
        }
        self.rates.retain(|k, _| seen.contains(k));
        Bench {
            rates: seen
                .iter()
                .filter_map(|k| self.rates.get(k).cloned())
                .collect(),
        }
    }

    fn rate(&mut self, what: &str, now: Counters) {
        let prev = self.counters.insert(what.to_string(), now);
        let rate = self.rates.entry(what.to_string()).or_insert_with(|| Rate {
            what: what.to_string(),
            ..Rate::default()
        });
        let Some(p) = prev else { return };
        let secs = now.ms.saturating_sub(p.ms) as f64 / 1000.0;
        // A counter that went back: the target restarted.
        if secs <= 0.0 || now.ops < p.ops {
            return;
        }
        let ops = (now.ops - p.ops) as f64;
        rate.ops_per_s = ops / secs;
        rate.bytes_per_s = now.bytes.saturating_sub(p.bytes) as f64 / secs;
        let per_op = |us: u64| if ops > 0.0 { us as f64 / ops } else { 0.0 };
        rate.mean_queue_us = per_op(now.queued_us.saturating_sub(p.queued_us));
        rate.mean_service_us = match (now.busy_us, p.busy_us) {
            (Some(a), Some(b)) => Some(per_op(a.saturating_sub(b))),
            _ => None,
        };
        rate.history.push(rate.ops_per_s);
        if rate.history.len() > BENCH_POINTS {
            rate.history.remove(0);
        }
    }
}

/// The writer history of every LUN of the bus (`GET /audit`).
async fn audit(control: &str, status: &Value) -> Vec<WriterRun> {
    let none = Vec::new();
    let luns: Vec<(String, u64)> = status["luns"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .filter_map(|l| Some((l["target"].as_str()?.to_string(), l["lun"].as_u64()?)))
        .collect();
    let answers = futures_util::future::join_all(luns.iter().map(|(t, lun)| async move {
        let path = format!("/audit?target={}&lun={lun}", escape(t));
        (*lun, bus_get(control, &path).await)
    }))
    .await;
    let mut runs = Vec::new();
    for (lun, a) in answers {
        let Ok(v) = a else { continue };
        for h in v["history"].as_array().unwrap_or(&none) {
            if let Ok(mut r) = serde_json::from_value::<WriterRun>(h.clone()) {
                r.lun = lun as u16;
                runs.push(r);
            }
        }
    }
    runs
}

/// A query value with the characters a target name may hold escaped
/// (RFC 3986 §2.1).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(node: &str, member: bool, states: &[(&str, &str)]) -> ClusterStatus {
        serde_json::from_value(json!({
            "cluster": "c", "node": node, "phase": if member { "member" } else { "joining" },
            "member": member, "epoch": 3, "quorum_owner": "NODE1", "quorum_model": "disk-scsi2",
            "profile": "fast", "log_seq": 1, "writes_held": false, "acting_owner": node == "NODE1",
            "arbitration": "owner (online)",
            "nodes": states.iter().map(|(n, s)| json!({"name": n, "state": s, "admin": "a"})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn addr(n: &str) -> NodeAddr {
        NodeAddr {
            name: Some(n.into()),
            admin: format!("{n}:1"),
        }
    }

    #[test]
    fn node_states_join_the_view_and_the_answers() {
        let view = [
            ("NODE1", "online"),
            ("NODE2", "paused"),
            ("NODE3", "online"),
            ("NODE4", "offline"),
        ];
        let mut answers = vec![
            Ok(status("NODE1", true, &view)),
            Ok(status("NODE2", true, &view)),
            Err("refused".to_string()),
            Ok(status("NODE4", false, &[])),
        ];
        let nodes: Vec<NodeAddr> = ["NODE1", "NODE2", "NODE3", "NODE4"].map(addr).to_vec();
        let at = pick_view(&answers).unwrap();
        assert_eq!(at, 0, "the acting owner's view is shown");
        if let Ok(s) = &mut answers[0] {
            s.heartbeats = vec![admin::HeartbeatAge {
                node: "NODE2".into(),
                private_ms: 120,
                public_ms: 4000,
            }];
        }
        let v = node_views(&nodes, &answers, answers[at].as_ref().ok());
        assert_eq!(
            v[1].heartbeat.as_ref().map(|h| (h.private_ms, h.public_ms)),
            Some((120, 4000))
        );
        assert_eq!(v[0].heartbeat, None);
        let states: Vec<NodeState> = v.iter().map(|n| n.state).collect();
        assert_eq!(
            states,
            vec![
                NodeState::Online,
                NodeState::Paused,
                NodeState::Offline,
                NodeState::Joining
            ]
        );
        assert_eq!(v[2].error.as_deref(), Some("refused"));
    }

    #[test]
    fn groups_carry_owner_state_direction_and_resources() {
        let catalog = json!({
            "groups": {
                "G": {"spec": {"preferred-owners": ["NODE1", "NODE2"]}, "owner": "NODE2",
                      "target": "online", "state": {"state": "offline-pending", "node": "NODE2"},
                      "failovers": [1, 2], "resources": ["D"]},
                "H": {"spec": {}, "owner": null, "target": "offline", "state": null,
                      "failovers": [], "resources": []}
            },
            "resources": {
                "D": {"spec": {"group": "G", "type": "physical-disk"}, "state": {"state": "online-pending", "node": "NODE2"}},
                "E": {"spec": {"group": "G", "type": "ip-address"}, "state": null}
            }
        });
        let g = groups_of(&catalog);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].owner.as_deref(), Some("NODE2"));
        assert_eq!(
            (g[0].state.as_str(), g[0].pending),
            ("pending", Some(Direction::Offline))
        );
        assert_eq!(g[0].preferred, vec!["NODE1", "NODE2"]);
        assert_eq!(g[0].failovers, 2);
        let r: Vec<(&str, &str, Option<Direction>)> = g[0]
            .resources
            .iter()
            .map(|r| (r.name.as_str(), r.state.as_str(), r.pending))
            .collect();
        assert_eq!(
            r,
            vec![
                ("D", "pending", Some(Direction::Online)),
                ("E", "unknown", None)
            ]
        );
        assert_eq!(
            (g[1].state.as_str(), g[1].target.as_str()),
            ("unknown", "offline")
        );
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let mut c = Collector::new(
            Sources::direct(vec![], None, None, None),
            Arc::new(Mutex::new(Timeline::default())),
        );
        let st = |ios: u64, bytes: u64, queued: u64| {
            json!({"luns": [{"target": "t", "lun": 1, "disk_model": {"counters":
                {"ios": ios, "bytes": bytes, "queued_us": queued, "busy_us": ios * 100}}}], "buses": []})
        };
        assert_eq!(c.bench(Some(&st(0, 0, 0)), 1000).rates[0].ops_per_s, 0.0);
        let b = c.bench(Some(&st(500, 500 * 4096, 1000)), 1500);
        assert_eq!(b.rates[0].ops_per_s, 1000.0);
        assert_eq!(b.rates[0].bytes_per_s, 1000.0 * 4096.0);
        assert_eq!(b.rates[0].mean_queue_us, 2.0);
        assert_eq!(b.rates[0].mean_service_us, Some(100.0));
        assert_eq!(b.rates[0].history, vec![1000.0]);
    }
}
