//! `busrig cluster`: cluster administration through the nodes' admin
//! endpoints (`busrig_cluster::admin`).
//!
//! The nodes to ask come from `--node ADDR` (repeatable), `--config FILE`
//! (every node's admin address) or `--lab DIR` (the lab's cluster file).
//! Status asks them in order and takes the first answer from a member, so
//! it works while the node asked first is down. Membership verbs go to the
//! quorum owner (a node that is not the owner names it, and the request is
//! sent there).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use busrig_cluster::admin::{self, AdminError, ClusterStatus};
use busrig_cluster::config::ClusterConfig;
use busrig_cluster::db::{Change, DbSnapshot};
use busrig_cluster::resource::{Catalog, GroupSpec, ResourceSpec, ResourceType};
use busrig_cluster::snapshot_diff::{backup_bytes, diff, read_backup};
use busrig_cluster::validate::{BusFacts, Verdict};
use serde_json::{json, Value};

use busrig_cluster::cluster_file;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// A node's admin address (repeatable; tried in order).
    #[arg(long = "node", value_name = "ADDR", global = true)]
    nodes: Vec<String>,
    /// The cluster file: every node's admin address and the shared secret.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "lab")]
    config: Option<PathBuf>,
    /// A lab folder made by `busrig lab up`.
    #[arg(long, value_name = "DIR", global = true)]
    lab: Option<PathBuf>,
    /// JSON output for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Cluster name, epoch, quorum owner, quorum log position, node states.
    Status,
    /// Pause, resume or evict a node.
    Node {
        #[command(subcommand)]
        verb: NodeVerb,
    },
    /// Read or change the cluster database (every change is a global
    /// update written to the quorum log before it is acknowledged).
    Db {
        #[command(subcommand)]
        verb: DbVerb,
    },
    /// Resource groups: list, create, set, delete, move, online, offline.
    Group {
        #[command(subcommand)]
        verb: GroupVerb,
    },
    /// Resources: list, create, set, delete, depend, fail.
    Resource {
        #[command(subcommand)]
        verb: ResourceVerb,
    },
    /// Exchange-style virtual servers.
    Evs {
        #[command(subcommand)]
        verb: EvsVerb,
    },
    /// The address a network name resource registered.
    Resolve { name: String },
    /// The cluster event log (group and resource states, failovers,
    /// membership), the same on every node.
    Log {
        /// Only the last N events.
        #[arg(long)]
        last: Option<usize>,
    },
    /// Check the cluster (file, groups, bus) against the seeds' rules:
    /// pass, warn or fail per rule; exit status 1 on any fail.
    Validate {
        /// The bus control address (`busrig target --control`), to learn
        /// the topology and the LUNs; taken from the lab with --lab.
        #[arg(long, value_name = "ADDR")]
        bus: Option<String>,
    },
    /// Save the cluster database to FILE (quorum log backup format).
    Backup { file: PathBuf },
    /// Bring the cluster database back to the state saved in FILE, as
    /// global updates (each one logged and replicated).
    Restore {
        file: PathBuf,
        /// Accept a backup of a cluster with another name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand)]
enum NodeVerb {
    /// Every node and its state.
    List,
    /// A paused node stays a member but accepts no groups.
    Pause { node: String },
    /// Undo pause.
    Resume { node: String },
    /// Remove a node from the cluster; it stops its cluster service.
    Evict { node: String },
}

#[derive(clap::Args, Default)]
struct GroupOpts {
    /// Preferred owners, most preferred first (comma-separated).
    #[arg(long, value_delimiter = ',')]
    preferred: Option<Vec<String>>,
    /// Failback policy: prevent or allow.
    #[arg(long, value_parser = ["prevent", "allow"])]
    failback: Option<String>,
    /// Failback only between these UTC hours, START-END (e.g. 22-4).
    #[arg(long, value_name = "START-END")]
    failback_window: Option<String>,
    /// AntiAffinityClassNames (comma-separated).
    #[arg(long, value_delimiter = ',')]
    anti_affinity: Option<Vec<String>>,
    /// Failovers allowed per period (default 10).
    #[arg(long)]
    failover_threshold: Option<u32>,
    /// The failover period in seconds (default 21600, 6 h).
    #[arg(long)]
    failover_period: Option<u64>,
    /// Mark the group an Exchange virtual server (for `validate`).
    #[arg(long)]
    evs: Option<bool>,
}

#[derive(clap::Subcommand)]
enum GroupVerb {
    /// Every group with its owner and state.
    List,
    Create {
        name: String,
        #[command(flatten)]
        opts: GroupOpts,
    },
    /// Change a group's properties (only those given).
    Set {
        name: String,
        #[command(flatten)]
        opts: GroupOpts,
    },
    /// Delete an empty group.
    Delete {
        name: String,
    },
    /// Move to NODE, or to the best possible other node.
    Move {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
    Online {
        name: String,
    },
    Offline {
        name: String,
    },
}

#[derive(clap::Args, Default)]
struct ResourceOpts {
    /// The group the resource belongs to.
    #[arg(long)]
    group: Option<String>,
    /// physical-disk, ip-address, network-name, generic-application, generic-script.
    #[arg(long = "type")]
    kind: Option<String>,
    /// A property, KEY=VALUE (repeatable).
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
    /// Resources it depends on (comma-separated).
    #[arg(long, value_delimiter = ',')]
    depends_on: Option<Vec<String>>,
    /// Nodes that may host it (comma-separated; default every node).
    #[arg(long, value_delimiter = ',')]
    possible_owners: Option<Vec<String>>,
    #[arg(long)]
    looks_alive_ms: Option<u64>,
    #[arg(long)]
    is_alive_ms: Option<u64>,
    #[arg(long)]
    restart_threshold: Option<u32>,
    #[arg(long)]
    restart_period: Option<u64>,
    #[arg(long)]
    pending_timeout: Option<u64>,
}

#[derive(clap::Subcommand)]
enum ResourceVerb {
    /// Every resource with its group, type and state.
    List,
    Create {
        name: String,
        #[command(flatten)]
        opts: ResourceOpts,
    },
    /// Change a resource (only what is given).
    Set {
        name: String,
        #[command(flatten)]
        opts: ResourceOpts,
    },
    Delete {
        name: String,
    },
    /// Make NAME depend on another resource of its group.
    Depend {
        name: String,
        #[arg(long)]
        on: String,
    },
    /// Tell the owner the resource failed (a restart or failover follows).
    Fail {
        name: String,
    },
    /// Bring a resource online (the resources it depends on must be too).
    Online {
        name: String,
    },
    /// Take a resource offline; resources that depend on it go offline too.
    Offline {
        name: String,
    },
}

#[derive(clap::Subcommand)]
enum EvsVerb {
    /// One group NAME with an IP address, a network name on it, the
    /// physical disks and a mail store on them, as the seeds lay out an
    /// Exchange virtual server.
    Create {
        name: String,
        /// The virtual server's IP address (e.g. 127.0.2.1 on a lab).
        #[arg(long)]
        ip: String,
        /// A data LUN's iSCSI URL (repeatable; the first holds the store).
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        /// The mail store's SMTP port on the IP address.
        #[arg(long, default_value_t = 2525)]
        port: u16,
        /// Preferred owners, most preferred first (comma-separated).
        #[arg(long, value_delimiter = ',')]
        preferred: Vec<String>,
        /// AntiAffinityClassNames (default EVS, so virtual servers spread
        /// over the nodes and fail over to a passive one).
        #[arg(long, value_delimiter = ',', default_value = "EVS")]
        anti_affinity: Vec<String>,
        /// Failback: prevent or allow.
        #[arg(long, default_value = "prevent", value_parser = ["prevent", "allow"])]
        failback: String,
    },
}

#[derive(clap::Subcommand)]
enum DbVerb {
    /// Every key, or one.
    Get { key: Option<String> },
    /// Set KEY to VALUE.
    Set { key: String, value: String },
    /// Remove KEY.
    Delete { key: String },
}

/// Where the nodes are and how to authenticate.
struct Target {
    addrs: Vec<String>,
    secret: Option<String>,
    cluster: Option<String>,
}

fn target(a: &ClusterArgs) -> anyhow::Result<Target> {
    let cfg: Option<ClusterConfig> = match (&a.config, &a.lab) {
        (Some(f), _) => Some(cluster_file::load(f)?),
        (None, Some(dir)) => Some(
            cluster_file::load(&busrig_lab::cluster_file(dir)).with_context(|| {
                format!(
                    "{} is not a lab folder (run `busrig lab up --dir {}`)",
                    dir.display(),
                    dir.display()
                )
            })?,
        ),
        (None, None) => None,
    };
    let mut addrs = a.nodes.clone();
    if let Some(c) = &cfg {
        addrs.extend(c.nodes.iter().map(|n| n.admin.to_string()));
    }
    if addrs.is_empty() {
        bail!("say which cluster: --node ADDR, --config FILE or --lab DIR");
    }
    Ok(Target {
        addrs,
        secret: cfg.as_ref().map(|c| c.secret.clone()),
        cluster: cfg.map(|c| c.name),
    })
}

impl Target {
    /// The first member's status, or the first answer when no member
    /// answers; the error of every node when none answers.
    async fn status(&self) -> anyhow::Result<(String, ClusterStatus)> {
        let mut first: Option<(String, ClusterStatus)> = None;
        let mut errors = Vec::new();
        for addr in &self.addrs {
            match admin::status(addr, self.secret.as_deref()).await {
                Ok(s) if s.member => return Ok((addr.clone(), s)),
                Ok(s) => {
                    first.get_or_insert((addr.clone(), s));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        first.ok_or_else(|| anyhow!("no node answered:\n  {}", errors.join("\n  ")))
    }

    /// Sends a request to a member, following a redirect to the owner.
    async fn to_member(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (addr, _) = self.status().await?;
        match admin::request(&addr, method, path, Some(body), self.secret.as_deref()).await {
            Err(AdminError::Refused {
                status: 409,
                body: b,
                ..
            }) if b.get("owner_admin").and_then(Value::as_str).is_some() => {
                let owner = b["owner_admin"].as_str().unwrap_or_default().to_string();
                Ok(
                    admin::request(&owner, method, path, Some(body), self.secret.as_deref())
                        .await?,
                )
            }
            r => Ok(r?),
        }
    }

    async fn db(&self) -> anyhow::Result<DbSnapshot> {
        let (addr, _) = self.status().await?;
        let v = admin::request(&addr, "GET", "/db", None, self.secret.as_deref()).await?;
        serde_json::from_value(v).context("the node's database answer")
    }
}

pub async fn run(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let t = target(&a)?;
    match &a.verb {
        Verb::Status
        | Verb::Node {
            verb: NodeVerb::List,
        } => {
            let (_, s) = t.status().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Node { verb } => {
            let (action, node) = match verb {
                NodeVerb::Pause { node } => ("pause", node),
                NodeVerb::Resume { node } => ("resume", node),
                NodeVerb::Evict { node } => ("evict", node),
                NodeVerb::List => unreachable!("handled with status"),
            };
            let v = t
                .to_member("POST", "/node", &json!({ "action": action, "node": node }))
                .await?;
            if a.json {
                println!("{v}");
            } else {
                println!(
                    "node {} is {}",
                    v["node"].as_str().unwrap_or(node),
                    v["state"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Db { verb } => db_verb(&t, verb, a.json).await,
        Verb::Group { verb } => group_verb(&t, verb, a.json).await,
        Verb::Resource { verb } => resource_verb(&t, verb, a.json).await,
        Verb::Validate { bus } => validate(&a, &t, bus.clone(), a.json).await,
        Verb::Log { last } => {
            let db = t.db().await?;
            let events: Vec<(u64, String, String)> = db
                .entries
                .iter()
                .filter_map(|(k, v)| {
                    let rest = k.strip_prefix(busrig_cluster::host::EVENT_PREFIX)?;
                    let mut it = rest.splitn(3, '-');
                    let ms: u64 = it.next()?.parse().ok()?;
                    let node = it.next()?.to_string();
                    Some((ms, node, v.clone()))
                })
                .collect();
            let skip = last.map_or(0, |n| events.len().saturating_sub(n));
            for (ms, node, text) in events.into_iter().skip(skip) {
                if a.json {
                    println!("{}", json!({ "ms": ms, "node": node, "event": text }));
                } else {
                    println!("{} {node:<8} {text}", format_ms(ms));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Evs {
            verb:
                EvsVerb::Create {
                    name,
                    ip,
                    disks,
                    port,
                    preferred,
                    anti_affinity,
                    failback,
                },
        } => {
            let spec = GroupSpec {
                preferred_owners: preferred.clone(),
                anti_affinity: anti_affinity.clone(),
                failback: busrig_cluster::resource::Failback {
                    allow: failback == "allow",
                    window: None,
                },
                exchange_virtual_server: true,
                ..GroupSpec::default()
            };
            let bin = std::env::current_exe().context("cannot find the busrig binary")?;
            for (kind, body) in
                evs_requests(name, ip, disks, *port, &bin.display().to_string(), spec)
            {
                t.to_member("POST", kind, &body)
                    .await
                    .with_context(|| format!("creating {}", body["name"]))?;
            }
            println!(
                "virtual server {name} created: {ip}:{port}, name {}",
                name.to_ascii_lowercase()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Resolve { name } => {
            let (addr, _) = t.status().await?;
            let path = format!("/resolve?name={}", url_escape(name));
            let v = admin::request(&addr, "GET", &path, None, t.secret.as_deref()).await?;
            if a.json {
                println!("{v}");
            } else {
                println!("{}", v["address"].as_str().unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Backup { file } => {
            let db = t.db().await?;
            let cluster = match &t.cluster {
                Some(c) => c.clone(),
                None => t.status().await?.1.cluster,
            };
            let bytes = backup_bytes(&cluster, &db);
            write_new(file, &bytes)?;
            if a.json {
                println!(
                    "{}",
                    json!({ "file": file, "seq": db.seq, "keys": db.entries.len() })
                );
            } else {
                println!(
                    "backed up cluster {cluster} at update {} ({} keys) to {}",
                    db.seq,
                    db.entries.len(),
                    file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Restore { file, force } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let (cluster, want) =
                read_backup(&bytes).with_context(|| file.display().to_string())?;
            let (_, st) = t.status().await?;
            if cluster != st.cluster && !force {
                bail!(
                    "{} is a backup of cluster {cluster}, not {} (use --force to restore it anyway)",
                    file.display(),
                    st.cluster
                );
            }
            let have = t.db().await?;
            let changes = diff(&have, &want);
            for (i, c) in changes.iter().enumerate() {
                let body = match c {
                    Change::Put { key, value } => {
                        json!({ "op": "put", "key": key, "value": value })
                    }
                    Change::Delete { key } => json!({ "op": "delete", "key": key }),
                };
                t.to_member("POST", "/db", &body).await.with_context(|| {
                    format!("restore stopped after {i} of {} changes", changes.len())
                })?;
            }
            if a.json {
                println!("{}", json!({ "changes": changes.len() }));
            } else {
                println!(
                    "restored cluster database from {}: {} change(s) applied",
                    file.display(),
                    changes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn validate(
    a: &ClusterArgs,
    t: &Target,
    bus: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = match (&a.config, &a.lab) {
        (Some(f), _) => cluster_file::load(f)?,
        (None, Some(d)) => cluster_file::load(&busrig_lab::cluster_file(d))?,
        (None, None) => bail!("validate needs the cluster file: --config FILE or --lab DIR"),
    };
    // The running cluster's groups, if it answers; the file alone if not.
    let catalog = match t.status().await {
        Ok((addr, _)) => {
            let db = admin::request(&addr, "GET", "/db", None, t.secret.as_deref()).await?;
            let db: DbSnapshot = serde_json::from_value(db)?;
            Catalog::from_db(&db)
        }
        Err(_) => Catalog::default(),
    };
    let bus = bus.or_else(|| {
        let d = a.lab.as_ref()?;
        busrig_lab::LabState::load(d).ok()?.target.control
    });
    let mut facts = BusFacts::default();
    if let Some(b) = &bus {
        let (code, v) = busrig_http::request(b, "GET", "/status", None, None)
            .await
            .with_context(|| format!("bus control {b}"))?;
        if code == 200 {
            facts.topology = v["buses"][0]["topology"].as_str().map(String::from);
            for l in v["luns"].as_array().into_iter().flatten() {
                if let (Some(t), Some(n)) = (l["target"].as_str(), l["lun"].as_u64()) {
                    facts.luns.insert((t.to_ascii_lowercase(), n as u16));
                }
            }
        }
    }
    let checks = busrig_cluster::validate::validate(&cfg, &catalog, &facts);
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let v = match c.verdict {
                Verdict::Pass => "pass",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            println!("{v:<5} {:<32} {}", c.rule, c.detail);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The admin requests that create virtual server `name`: the group, then
/// its resources with dependencies as the seeds show them (name on IP;
/// the store on name and disks).
pub fn evs_requests(
    name: &str,
    ip: &str,
    disks: &[String],
    port: u16,
    bin: &str,
    spec: GroupSpec,
) -> Vec<(&'static str, Value)> {
    let mut out = vec![(
        "/group",
        json!({"action": "create", "name": name, "spec": spec}),
    )];
    let res = |r: String, kind: ResourceType, deps: Vec<String>, props: Vec<(&str, String)>| {
        let mut s = ResourceSpec::new(name, kind);
        s.depends_on = deps;
        s.properties = props.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if kind == ResourceType::GenericApplication {
            s.looks_alive_ms = 500;
            s.is_alive_ms = 2000;
        }
        (
            "/resource",
            json!({"action": "create", "name": r, "spec": s}),
        )
    };
    let ip_r = format!("{name}-IP");
    let name_r = format!("{name}-Name");
    out.push(res(
        ip_r.clone(),
        ResourceType::IpAddress,
        vec![],
        vec![("address", ip.to_string())],
    ));
    out.push(res(
        name_r.clone(),
        ResourceType::NetworkName,
        vec![ip_r],
        vec![("name", name.to_ascii_lowercase())],
    ));
    let mut deps = vec![name_r];
    for (i, d) in disks.iter().enumerate() {
        let r = format!("{name}-Disk{}", i + 1);
        out.push(res(
            r.clone(),
            ResourceType::PhysicalDisk,
            vec![],
            vec![("disk", d.clone())],
        ));
        deps.push(r);
    }
    out.push(res(
        format!("{name}-Store"),
        ResourceType::GenericApplication,
        deps,
        vec![
            (
                "command",
                format!("exec {bin} mailstore --disk \"$BUSRIG_DISK\" --listen {ip}:{port}"),
            ),
            ("probe-tcp", format!("{ip}:{port}")),
        ],
    ));
    out
}

/// `HH:MM:SS.mmm` UTC of a Unix time in milliseconds.
fn format_ms(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// Percent-encodes a query value.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Target {
    async fn catalog(&self) -> anyhow::Result<Value> {
        let (addr, _) = self.status().await?;
        Ok(admin::request(&addr, "GET", "/catalog", None, self.secret.as_deref()).await?)
    }
}

fn apply_group_opts(spec: &mut GroupSpec, o: &GroupOpts) -> anyhow::Result<()> {
    if let Some(p) = &o.preferred {
        spec.preferred_owners = p.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(f) = &o.failback {
        spec.failback.allow = f == "allow";
    }
    if let Some(w) = &o.failback_window {
        if w == "none" || w.is_empty() {
            spec.failback.window = None;
        } else {
            let (a, b) = w
                .split_once('-')
                .ok_or_else(|| anyhow!("--failback-window START-END, e.g. 22-4"))?;
            spec.failback.window = Some((a.trim().parse()?, b.trim().parse()?));
        }
    }
    if let Some(a) = &o.anti_affinity {
        spec.anti_affinity = a.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(n) = o.failover_threshold {
        spec.failover_threshold = n;
    }
    if let Some(n) = o.failover_period {
        spec.failover_period_secs = n;
    }
    if let Some(e) = o.evs {
        spec.exchange_virtual_server = e;
    }
    Ok(())
}

fn apply_resource_opts(spec: &mut ResourceSpec, o: &ResourceOpts) -> anyhow::Result<()> {
    if let Some(g) = &o.group {
        spec.group = g.clone();
    }
    if let Some(k) = &o.kind {
        spec.kind = ResourceType::parse(k).ok_or_else(|| {
            anyhow!(
                "unknown resource type {k:?} ({})",
                ResourceType::ALL.map(|t| t.name()).join(", ")
            )
        })?;
    }
    for p in &o.props {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--prop {p:?}: use KEY=VALUE"))?;
        spec.properties.insert(k.trim().to_string(), v.to_string());
    }
    if let Some(d) = &o.depends_on {
        spec.depends_on = d.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(p) = &o.possible_owners {
        spec.possible_owners = p.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(v) = o.looks_alive_ms {
        spec.looks_alive_ms = v;
    }
    if let Some(v) = o.is_alive_ms {
        spec.is_alive_ms = v;
    }
    if let Some(v) = o.restart_threshold {
        spec.restart_threshold = v;
    }
    if let Some(v) = o.restart_period {
        spec.restart_period_secs = v;
    }
    if let Some(v) = o.pending_timeout {
        spec.pending_timeout_secs = v;
    }
    Ok(())
}

fn done(v: &Value, as_json: bool, what: String) {
    if as_json {
        println!("{v}");
    } else {
        println!("{what}");
    }
}

async fn group_verb(t: &Target, verb: &GroupVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let (body, what) = match verb {
        GroupVerb::List => {
            let c = t.catalog().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&c["groups"])?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<10} {:<10} {:<18} RESOURCES",
                "GROUP", "OWNER", "TARGET", "STATE"
            );
            if let Some(groups) = c["groups"].as_object() {
                for (n, g) in groups {
                    let res: Vec<&str> = g["resources"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<20} {:<10} {:<10} {:<18} {}",
                        n,
                        g["owner"].as_str().unwrap_or("-"),
                        g["target"].as_str().unwrap_or("-"),
                        g["state"]["state"].as_str().unwrap_or("-"),
                        res.join(", ")
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        GroupVerb::Create { name, opts } => {
            let mut spec = GroupSpec::default();
            apply_group_opts(&mut spec, opts)?;
            (
                json!({"action": "create", "name": name, "spec": spec}),
                format!("group {name} created"),
            )
        }
        GroupVerb::Set { name, opts } => {
            let c = t.catalog().await?;
            let cur = c["groups"]
                .get(name)
                .ok_or_else(|| anyhow!("no group {name:?}"))?;
            let mut spec: GroupSpec = serde_json::from_value(cur["spec"].clone())?;
            apply_group_opts(&mut spec, opts)?;
            (
                json!({"action": "set", "name": name, "spec": spec}),
                format!("group {name} changed"),
            )
        }
        GroupVerb::Delete { name } => (
            json!({"action": "delete", "name": name}),
            format!("group {name} deleted"),
        ),
        GroupVerb::Move { name, to } => (
            json!({"action": "move", "name": name, "to": to}),
            format!("group {name} moving"),
        ),
        GroupVerb::Online { name } => (
            json!({"action": "online", "name": name}),
            format!("group {name} set online"),
        ),
        GroupVerb::Offline { name } => (
            json!({"action": "offline", "name": name}),
            format!("group {name} set offline"),
        ),
    };
    let v = t.to_member("POST", "/group", &body).await?;
    done(&v, as_json, what);
    Ok(ExitCode::SUCCESS)
}

async fn resource_verb(t: &Target, verb: &ResourceVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let (body, what) = match verb {
        ResourceVerb::List => {
            let c = t.catalog().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&c["resources"])?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<16} {:<16} {:<20} {:<15} {:<8} DEPENDS ON",
                "RESOURCE", "GROUP", "TYPE", "STATE", "NODE"
            );
            if let Some(rs) = c["resources"].as_object() {
                for (n, r) in rs {
                    let deps: Vec<&str> = r["spec"]["depends-on"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<16} {:<16} {:<20} {:<15} {:<8} {}",
                        n,
                        r["spec"]["group"].as_str().unwrap_or("-"),
                        r["spec"]["type"].as_str().unwrap_or("-"),
                        r["state"]["state"].as_str().unwrap_or("-"),
                        r["state"]["node"].as_str().unwrap_or("-"),
                        deps.join(", ")
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ResourceVerb::Create { name, opts } => {
            let group = opts
                .group
                .clone()
                .ok_or_else(|| anyhow!("--group is required"))?;
            let kind = opts
                .kind
                .as_deref()
                .ok_or_else(|| anyhow!("--type is required"))?;
            let kind = ResourceType::parse(kind)
                .ok_or_else(|| anyhow!("unknown resource type {kind:?}"))?;
            let mut spec = ResourceSpec::new(&group, kind);
            apply_resource_opts(&mut spec, opts)?;
            (
                json!({"action": "create", "name": name, "spec": spec}),
                format!("resource {name} created"),
            )
        }
        ResourceVerb::Set { name, opts } => {
            let c = t.catalog().await?;
            let cur = c["resources"]
                .get(name)
                .ok_or_else(|| anyhow!("no resource {name:?}"))?;
            let mut spec: ResourceSpec = serde_json::from_value(cur["spec"].clone())?;
            apply_resource_opts(&mut spec, opts)?;
            (
                json!({"action": "set", "name": name, "spec": spec}),
                format!("resource {name} changed"),
            )
        }
        ResourceVerb::Delete { name } => (
            json!({"action": "delete", "name": name}),
            format!("resource {name} deleted"),
        ),
        ResourceVerb::Depend { name, on } => (
            json!({"action": "depend", "name": name, "on": on}),
            format!("{name} now depends on {on}"),
        ),
        ResourceVerb::Online { name } => (
            json!({"action": "online", "name": name}),
            format!("resource {name} set online"),
        ),
        ResourceVerb::Offline { name } => (
            json!({"action": "offline", "name": name}),
            format!("resource {name} set offline"),
        ),
        ResourceVerb::Fail { name } => (
            json!({"action": "fail", "name": name}),
            format!("resource {name} failed"),
        ),
    };
    let v = t.to_member("POST", "/resource", &body).await?;
    done(&v, as_json, what);
    Ok(ExitCode::SUCCESS)
}

async fn db_verb(t: &Target, verb: &DbVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let body = match verb {
        DbVerb::Get { key } => {
            let db = t.db().await?;
            match key {
                Some(k) => match db.get(k) {
                    Some(v) if as_json => println!("{}", json!({ "key": k, "value": v })),
                    Some(v) => println!("{v}"),
                    None => {
                        eprintln!("busrig cluster db get: no key {k:?}");
                        return Ok(ExitCode::from(2));
                    }
                },
                None if as_json => println!("{}", json!({ "seq": db.seq, "entries": db.entries })),
                None => {
                    for (k, v) in &db.entries {
                        println!("{k} = {v}");
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        DbVerb::Set { key, value } => json!({ "op": "put", "key": key, "value": value }),
        DbVerb::Delete { key } => json!({ "op": "delete", "key": key }),
    };
    let v = t.to_member("POST", "/db", &body).await?;
    if as_json {
        println!("{v}");
    } else {
        println!("committed as update {}", v["seq"]);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &ClusterStatus) {
    println!(
        "Cluster {} ({}, profile {})",
        s.cluster, s.quorum_model, s.profile
    );
    if !s.member {
        println!(
            "  no member answered; {} is {} ({})",
            s.node, s.phase, s.arbitration
        );
    } else {
        println!(
            "  epoch {}, quorum owner {}, quorum log at update {}{}",
            s.epoch.unwrap_or(0),
            s.quorum_owner.as_deref().unwrap_or("none"),
            s.log_seq,
            if s.writes_held { ", writes held" } else { "" }
        );
    }
    println!("  {:<16} {:<8} ADMIN", "NODE", "STATE");
    for n in &s.nodes {
        let mark = if s.quorum_owner.as_deref() == Some(n.name.as_str()) {
            "  (quorum owner)"
        } else {
            ""
        };
        println!("  {:<16} {:<8} {}{mark}", n.name, n.state, n.admin);
    }
    println!("  (answered by {})", s.node);
}

/// Writes `bytes` to a new file; refuses to overwrite.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
