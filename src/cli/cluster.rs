//! `busrig cluster`: cluster administration through the nodes' admin
//! endpoints. Which node to ask and the requests are
//! `busrig_cluster::admin_client`; the text is `busrig_cluster::report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use busrig_cluster::admin_client::{self, AdminClient, EvsOpts, GroupChange, ResourceChange};
use busrig_cluster::db::Change;
use busrig_cluster::validate::{self, Verdict};
use busrig_cluster::{cluster_file, report, snapshot_diff};
use serde_json::{json, Value};

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
    #[command(subcommand)]
    Node(NodeVerb),
    /// Read or change the cluster database (every change is a global
    /// update written to the quorum log before it is acknowledged).
    #[command(subcommand)]
    Db(DbVerb),
    /// Resource groups: list, create, set, delete, move, online, offline.
    #[command(subcommand)]
    Group(GroupVerb),
    /// Resources: list, create, set, delete, depend, fail.
    #[command(subcommand)]
    Resource(ResourceVerb),
    /// Exchange-style virtual servers.
    #[command(subcommand)]
    Evs(EvsVerb),
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

// The one argument of a verb that names its group or resource.
#[derive(clap::Args)]
struct Named {
    name: String,
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
    Delete(Named),
    /// Move to NODE, or to the best possible other node.
    Move {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
    Online(Named),
    Offline(Named),
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
    Delete(Named),
    /// Make NAME depend on another resource of its group.
    Depend {
        name: String,
        #[arg(long)]
        on: String,
    },
    /// Tell the owner the resource failed (a restart or failover follows).
    Fail(Named),
    /// Bring a resource online (the resources it depends on must be too).
    Online(Named),
    /// Take a resource offline; resources that depend on it go offline too.
    Offline(Named),
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

pub async fn run(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let cfg = match (&a.config, &a.lab) {
        (Some(f), _) => Some(cluster_file::load(f)?),
        (None, Some(dir)) => Some(busrig_lab::lab_config(dir)?),
        (None, None) => None,
    };
    let t = AdminClient::new(a.nodes.clone(), cfg.as_ref())?;
    let as_json = a.json;
    match a.verb {
        Verb::Status | Verb::Node(NodeVerb::List) => {
            let (_, s) = t.status().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{s}");
            }
        }
        Verb::Node(verb) => {
            let (action, node) = match verb {
                NodeVerb::Pause { node } => ("pause", node),
                NodeVerb::Resume { node } => ("resume", node),
                NodeVerb::Evict { node } => ("evict", node),
                NodeVerb::List => unreachable!("handled with status"),
            };
            let v = t.node_action(action, &node).await?;
            let (name, state) = (v["node"].as_str().unwrap_or(&node), v["state"].as_str());
            done(
                &v,
                as_json,
                format!("node {name} is {}", state.unwrap_or("?")),
            );
        }
        Verb::Db(verb) => return db_verb(&t, verb, as_json).await,
        Verb::Group(verb) => group_verb(&t, verb, as_json).await?,
        Verb::Resource(verb) => resource_verb(&t, verb, as_json).await?,
        Verb::Validate { bus } => {
            let Some(cfg) = &cfg else {
                bail!("validate needs the cluster file: --config FILE or --lab DIR");
            };
            let bus = bus.or_else(|| busrig_lab::bus_control(a.lab.as_ref()?).ok());
            let checks = validate::check_running(cfg, &t, bus.as_deref()).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                checks.iter().for_each(|c| println!("{c}"));
            }
            if checks.iter().any(|c| c.verdict == Verdict::Fail) {
                return Ok(ExitCode::from(1));
            }
        }
        Verb::Log { last } => {
            let events = admin_client::events(&t.db().await?);
            let skip = last.map_or(0, |n| events.len().saturating_sub(n));
            for e in events.into_iter().skip(skip) {
                let j = json!({ "ms": e.ms, "node": e.node, "event": e.text });
                done(&j, as_json, e.to_string());
            }
        }
        Verb::Evs(EvsVerb::Create {
            name,
            ip,
            disks,
            port,
            preferred,
            anti_affinity,
            failback,
        }) => {
            let bin = std::env::current_exe().context("cannot find the busrig binary")?;
            let (failback_allow, bin) = (failback == "allow", bin.display().to_string());
            let o = EvsOpts {
                name,
                ip,
                disks,
                port,
                preferred,
                anti_affinity,
                failback_allow,
                bin,
            };
            t.create_evs(&o).await?;
            println!("{o}");
        }
        Verb::Resolve { name } => {
            let v = t.resolve(&name).await?;
            done(&v, as_json, v["address"].as_str().unwrap_or("").to_string());
        }
        Verb::Backup { file } => {
            let db = t.db().await?;
            let cluster = t.cluster_name().await?;
            snapshot_diff::write_backup(&file, &cluster, &db)?;
            let (seq, keys) = (db.seq, db.entries.len());
            let j = json!({ "file": file, "seq": seq, "keys": keys });
            let what = format!(
                "backed up cluster {cluster} at update {seq} ({keys} keys) to {}",
                file.display()
            );
            done(&j, as_json, what);
        }
        Verb::Restore { file, force } => {
            let (cluster, want) = snapshot_diff::read_backup_file(&file)?;
            let (_, st) = t.status().await?;
            if cluster != st.cluster && !force {
                bail!(
                    "{} is a backup of cluster {cluster}, not {} (use --force to restore it anyway)",
                    file.display(),
                    st.cluster
                );
            }
            let changes = t.restore(&want).await?;
            let what = format!(
                "restored cluster database from {}: {changes} change(s) applied",
                file.display()
            );
            done(&json!({ "changes": changes }), as_json, what);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the answer `v` with --json, else `what`.
fn done(v: &Value, as_json: bool, what: String) {
    if as_json {
        println!("{v}");
    } else {
        println!("{what}");
    }
}

async fn group_verb(t: &AdminClient, verb: GroupVerb, as_json: bool) -> anyhow::Result<()> {
    let change = match verb {
        GroupVerb::List => return list(t, "groups", report::group_table, as_json).await,
        GroupVerb::Create { name, opts } => GroupChange::Create {
            name,
            opts: opts.into(),
        },
        GroupVerb::Set { name, opts } => GroupChange::Set {
            name,
            opts: opts.into(),
        },
        GroupVerb::Delete(Named { name }) => GroupChange::Delete { name },
        GroupVerb::Move { name, to } => GroupChange::Move { name, to },
        GroupVerb::Online(Named { name }) => GroupChange::Online { name },
        GroupVerb::Offline(Named { name }) => GroupChange::Offline { name },
    };
    done(&t.group(&change).await?, as_json, change.to_string());
    Ok(())
}

async fn resource_verb(t: &AdminClient, verb: ResourceVerb, as_json: bool) -> anyhow::Result<()> {
    let change = match verb {
        ResourceVerb::List => return list(t, "resources", report::resource_table, as_json).await,
        ResourceVerb::Create { name, opts } => ResourceChange::Create {
            name,
            opts: opts.into(),
        },
        ResourceVerb::Set { name, opts } => ResourceChange::Set {
            name,
            opts: opts.into(),
        },
        ResourceVerb::Delete(Named { name }) => ResourceChange::Delete { name },
        ResourceVerb::Depend { name, on } => ResourceChange::Depend { name, on },
        ResourceVerb::Online(Named { name }) => ResourceChange::Online { name },
        ResourceVerb::Offline(Named { name }) => ResourceChange::Offline { name },
        ResourceVerb::Fail(Named { name }) => ResourceChange::Fail { name },
    };
    done(&t.resource(&change).await?, as_json, change.to_string());
    Ok(())
}

/// `group list` and `resource list`: the catalog's `key` as JSON, or its table.
async fn list(
    t: &AdminClient,
    key: &str,
    table: fn(&Value) -> String,
    as_json: bool,
) -> anyhow::Result<()> {
    let c = t.catalog().await?;
    match as_json {
        true => println!("{}", serde_json::to_string_pretty(&c[key])?),
        false => println!("{}", table(&c)),
    }
    Ok(())
}

async fn db_verb(t: &AdminClient, verb: DbVerb, as_json: bool) -> anyhow::Result<ExitCode> {
    let change = match verb {
        DbVerb::Get { key } => {
            let db = t.db().await?;
            match key {
                Some(k) => match db.get(&k) {
                    Some(v) if as_json => println!("{}", json!({ "key": k, "value": v })),
                    Some(v) => println!("{v}"),
                    None => {
                        eprintln!("busrig cluster db get: no key {k:?}");
                        return Ok(ExitCode::from(2));
                    }
                },
                None if as_json => println!("{}", json!({ "seq": db.seq, "entries": db.entries })),
                None => db.entries.iter().for_each(|(k, v)| println!("{k} = {v}")),
            }
            return Ok(ExitCode::SUCCESS);
        }
        DbVerb::Set { key, value } => Change::Put { key, value },
        DbVerb::Delete { key } => Change::Delete { key },
    };
    let v = t.db_change(&change).await?;
    done(&v, as_json, format!("committed as update {}", v["seq"]));
    Ok(ExitCode::SUCCESS)
}
