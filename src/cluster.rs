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

use anyhow::{bail, Context};
use busrig_cluster::admin::ClusterStatus;
use busrig_cluster::admin_client::{self, AdminClient, EvsOpts, GroupChange, ResourceChange};
use busrig_cluster::config::ClusterConfig;
use busrig_cluster::db::Change;
use busrig_cluster::snapshot_diff::{backup_bytes, read_backup};
use busrig_cluster::validate::Verdict;
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

#[derive(clap::Args, Clone, Default)]
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

#[derive(clap::Args, Clone, Default)]
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

impl From<GroupOpts> for admin_client::GroupOpts {
    fn from(o: GroupOpts) -> Self {
        admin_client::GroupOpts {
            preferred: o.preferred,
            failback: o.failback,
            failback_window: o.failback_window,
            anti_affinity: o.anti_affinity,
            failover_threshold: o.failover_threshold,
            failover_period: o.failover_period,
            evs: o.evs,
        }
    }
}

impl From<ResourceOpts> for admin_client::ResourceOpts {
    fn from(o: ResourceOpts) -> Self {
        admin_client::ResourceOpts {
            group: o.group,
            kind: o.kind,
            props: o.props,
            depends_on: o.depends_on,
            possible_owners: o.possible_owners,
            looks_alive_ms: o.looks_alive_ms,
            is_alive_ms: o.is_alive_ms,
            restart_threshold: o.restart_threshold,
            restart_period: o.restart_period,
            pending_timeout: o.pending_timeout,
        }
    }
}

/// The cluster file named by --config or --lab, if any.
fn cluster_config(a: &ClusterArgs) -> anyhow::Result<Option<ClusterConfig>> {
    Ok(match (&a.config, &a.lab) {
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
    })
}

pub async fn run(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let cfg = cluster_config(&a)?;
    let t = AdminClient::new(a.nodes.clone(), cfg.as_ref())?;
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
            let v = t.node_action(action, node).await?;
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
            let events = admin_client::events(&db);
            let skip = last.map_or(0, |n| events.len().saturating_sub(n));
            for e in events.into_iter().skip(skip) {
                let (ms, node, text) = (e.ms, e.node, e.text);
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
            let bin = std::env::current_exe().context("cannot find the busrig binary")?;
            t.create_evs(&EvsOpts {
                name: name.clone(),
                ip: ip.clone(),
                disks: disks.clone(),
                port: *port,
                preferred: preferred.clone(),
                anti_affinity: anti_affinity.clone(),
                failback_allow: failback == "allow",
                bin: bin.display().to_string(),
            })
            .await?;
            println!(
                "virtual server {name} created: {ip}:{port}, name {}",
                name.to_ascii_lowercase()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Resolve { name } => {
            let v = t.resolve(name).await?;
            if a.json {
                println!("{v}");
            } else {
                println!("{}", v["address"].as_str().unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Backup { file } => {
            let db = t.db().await?;
            let cluster = t.cluster_name().await?;
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
            let changes = t.restore(&want).await?;
            if a.json {
                println!("{}", json!({ "changes": changes }));
            } else {
                println!(
                    "restored cluster database from {}: {} change(s) applied",
                    file.display(),
                    changes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn validate(
    a: &ClusterArgs,
    t: &AdminClient,
    bus: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = match (&a.config, &a.lab) {
        (Some(f), _) => cluster_file::load(f)?,
        (None, Some(d)) => cluster_file::load(&busrig_lab::cluster_file(d))?,
        (None, None) => bail!("validate needs the cluster file: --config FILE or --lab DIR"),
    };
    let bus = bus.or_else(|| {
        let d = a.lab.as_ref()?;
        busrig_lab::LabState::load(d).ok()?.target.control
    });
    let (catalog, facts) = busrig_cluster::validate::gather(t, bus.as_deref()).await?;
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

fn done(v: &Value, as_json: bool, what: String) {
    if as_json {
        println!("{v}");
    } else {
        println!("{what}");
    }
}

async fn group_verb(t: &AdminClient, verb: &GroupVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let (change, what) = match verb {
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
        GroupVerb::Create { name, opts } => (
            GroupChange::Create {
                name: name.clone(),
                opts: opts.clone().into(),
            },
            format!("group {name} created"),
        ),
        GroupVerb::Set { name, opts } => (
            GroupChange::Set {
                name: name.clone(),
                opts: opts.clone().into(),
            },
            format!("group {name} changed"),
        ),
        GroupVerb::Delete { name } => (
            GroupChange::Delete { name: name.clone() },
            format!("group {name} deleted"),
        ),
        GroupVerb::Move { name, to } => (
            GroupChange::Move {
                name: name.clone(),
                to: to.clone(),
            },
            format!("group {name} moving"),
        ),
        GroupVerb::Online { name } => (
            GroupChange::Online { name: name.clone() },
            format!("group {name} set online"),
        ),
        GroupVerb::Offline { name } => (
            GroupChange::Offline { name: name.clone() },
            format!("group {name} set offline"),
        ),
    };
    let v = t.group(&change).await?;
    done(&v, as_json, what);
    Ok(ExitCode::SUCCESS)
}

async fn resource_verb(
    t: &AdminClient,
    verb: &ResourceVerb,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let (change, what) = match verb {
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
        ResourceVerb::Create { name, opts } => (
            ResourceChange::Create {
                name: name.clone(),
                opts: opts.clone().into(),
            },
            format!("resource {name} created"),
        ),
        ResourceVerb::Set { name, opts } => (
            ResourceChange::Set {
                name: name.clone(),
                opts: opts.clone().into(),
            },
            format!("resource {name} changed"),
        ),
        ResourceVerb::Delete { name } => (
            ResourceChange::Delete { name: name.clone() },
            format!("resource {name} deleted"),
        ),
        ResourceVerb::Depend { name, on } => (
            ResourceChange::Depend {
                name: name.clone(),
                on: on.clone(),
            },
            format!("{name} now depends on {on}"),
        ),
        ResourceVerb::Online { name } => (
            ResourceChange::Online { name: name.clone() },
            format!("resource {name} set online"),
        ),
        ResourceVerb::Offline { name } => (
            ResourceChange::Offline { name: name.clone() },
            format!("resource {name} set offline"),
        ),
        ResourceVerb::Fail { name } => (
            ResourceChange::Fail { name: name.clone() },
            format!("resource {name} failed"),
        ),
    };
    let v = t.resource(&change).await?;
    done(&v, as_json, what);
    Ok(ExitCode::SUCCESS)
}

async fn db_verb(t: &AdminClient, verb: &DbVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let change = match verb {
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
        DbVerb::Set { key, value } => Change::Put {
            key: key.clone(),
            value: value.clone(),
        },
        DbVerb::Delete { key } => Change::Delete { key: key.clone() },
    };
    let v = t.db_change(&change).await?;
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
