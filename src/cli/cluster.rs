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

/// Where `busrig cluster` finds the cluster, for its `--help`.
const CLUSTER_HELP: &str = "\
Which cluster: --lab DIR (a lab made by `busrig lab up`), --config FILE (the
cluster file: admin addresses and the secret), or --node ADDR. These global
options go before or after the verb.

Examples:
  busrig cluster --lab DIR status
  busrig cluster --lab DIR group create G --preferred NODE1,NODE2
  busrig cluster --lab DIR resource types
  busrig cluster --lab DIR evs create EVS1 --ip 127.0.2.1 --disk iscsi://127.0.0.1:PORT/iqn.2026-11.io.busrig:bus0/1";

#[derive(clap::Args)]
#[command(after_help = CLUSTER_HELP)]
pub struct ClusterArgs {
    /// A node's admin address (repeatable; tried in order).
    #[arg(long = "node", value_name = "ADDR", global = true, help_heading = super::GLOBAL)]
    nodes: Vec<String>,
    /// The cluster file: every node's admin address and the shared secret.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "lab", help_heading = super::GLOBAL)]
    config: Option<PathBuf>,
    /// A lab folder made by `busrig lab up`.
    #[arg(long, value_name = "DIR", global = true, help_heading = super::GLOBAL)]
    lab: Option<PathBuf>,
    /// JSON output for scripts.
    #[arg(long, global = true, help_heading = super::GLOBAL)]
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
    Resolve {
        /// The network name (the `name` property of a network-name resource).
        name: String,
    },
    /// The cluster event log (group and resource states, failovers,
    /// membership), the same on every node.
    Log {
        /// Only the last N events.
        #[arg(long, value_name = "N")]
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
    Backup {
        /// Where to write the backup.
        file: PathBuf,
    },
    /// Bring the cluster database back to the state saved in FILE, as
    /// global updates (each one logged and replicated).
    Restore {
        /// A file written by `busrig cluster backup`.
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
    Pause {
        /// The node's name (NODE1, ...).
        node: String,
    },
    /// Undo pause.
    Resume {
        /// The node's name.
        node: String,
    },
    /// Remove a node from the cluster; it stops its cluster service.
    Evict {
        /// The node's name.
        node: String,
    },
}

#[derive(clap::Args, Clone, Default)]
struct GroupOpts {
    /// Preferred owners, most preferred first (comma-separated).
    #[arg(long, value_name = "NODES", value_delimiter = ',')]
    preferred: Option<Vec<String>>,
    /// Failback policy: prevent (the default) or allow.
    #[arg(long, value_name = "POLICY", value_parser = ["prevent", "allow"])]
    failback: Option<String>,
    /// Failback only between these UTC hours, START-END (e.g. 22-4).
    #[arg(long, value_name = "START-END")]
    failback_window: Option<String>,
    /// AntiAffinityClassNames (comma-separated): groups sharing a class
    /// avoid sharing a node.
    #[arg(long, value_name = "CLASSES", value_delimiter = ',')]
    anti_affinity: Option<Vec<String>>,
    /// Failovers allowed per period (default 10).
    #[arg(long, value_name = "N")]
    failover_threshold: Option<u32>,
    /// The failover period in seconds (default 21600, 6 h).
    #[arg(long, value_name = "SECS")]
    failover_period: Option<u64>,
    /// Mark the group an Exchange virtual server (for `validate`).
    #[arg(long, value_name = "BOOL")]
    evs: Option<bool>,
}

// The one argument of a verb that names its group or resource.
#[derive(clap::Args)]
struct Named {
    /// Its name, as `list` shows it.
    name: String,
}

#[derive(clap::Subcommand)]
enum GroupVerb {
    /// Every group with its owner and state.
    List,
    /// Create an empty group; add resources to it with `resource create
    /// --group NAME` or make a whole virtual server with `evs create`.
    #[command(
        after_help = "Example:\n  busrig cluster --lab DIR group create G --preferred NODE1,NODE2 --failback allow --failback-window 22-4"
    )]
    Create {
        /// The group's name (letters, digits, - _ . and spaces).
        name: String,
        #[command(flatten)]
        opts: GroupOpts,
    },
    /// Change a group's properties (only those given).
    Set {
        /// The group's name.
        name: String,
        #[command(flatten)]
        opts: GroupOpts,
    },
    /// Delete an empty group.
    Delete(Named),
    /// Move to NODE, or to the best possible other node.
    Move {
        /// The group's name.
        name: String,
        /// The node to move it to (default: the best other possible owner).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
    },
    /// Want the group online: it is placed on a node and its resources come
    /// online in dependency order; a failed group's failover count starts afresh.
    Online(Named),
    /// Want the group offline: its resources go offline, dependents first,
    /// and it stays offline, with no failover, until `group online`.
    Offline(Named),
}

#[derive(clap::Args, Clone, Default)]
struct ResourceOpts {
    /// The group the resource belongs to.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// physical-disk, ip-address, network-name, generic-application or
    /// generic-script (`busrig cluster resource types` lists their properties).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// A property of the type, KEY=VALUE (repeatable), e.g. address=127.0.2.1.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
    /// Resources of the same group it depends on (comma-separated); they
    /// come online before it and go offline after it.
    #[arg(long, value_name = "RESOURCES", value_delimiter = ',')]
    depends_on: Option<Vec<String>>,
    /// Nodes that may host it (comma-separated; default every node).
    #[arg(long, value_name = "NODES", value_delimiter = ',')]
    possible_owners: Option<Vec<String>>,
    /// LooksAlive poll interval in milliseconds, the cheap check (default 5000).
    #[arg(long, value_name = "MS")]
    looks_alive_ms: Option<u64>,
    /// IsAlive poll interval in milliseconds, the thorough check (default 60000).
    #[arg(long, value_name = "MS")]
    is_alive_ms: Option<u64>,
    /// Restarts in place allowed per restart period before the group fails
    /// over (default 3).
    #[arg(long, value_name = "N")]
    restart_threshold: Option<u32>,
    /// The restart period in seconds (default 900).
    #[arg(long, value_name = "SECS")]
    restart_period: Option<u64>,
    /// Seconds a resource may take to come online or go offline before it
    /// counts as failed (default 180).
    #[arg(long, value_name = "SECS")]
    pending_timeout: Option<u64>,
}

#[derive(clap::Subcommand)]
enum ResourceVerb {
    /// Every resource with its group, type and state.
    List,
    /// Every resource type with its properties and an example.
    Types,
    /// Create a resource in a group (--group and --type are required; see
    /// `resource types` for each type's properties).
    #[command(after_help = RESOURCE_CREATE_HELP)]
    Create {
        /// The resource's name (letters, digits, - _ . and spaces).
        name: String,
        #[command(flatten)]
        opts: ResourceOpts,
    },
    /// Change a resource (only what is given; --prop adds or replaces one property).
    Set {
        /// The resource's name.
        name: String,
        #[command(flatten)]
        opts: ResourceOpts,
    },
    /// Delete a resource no other resource depends on.
    Delete(Named),
    /// Make NAME depend on another resource of its group.
    Depend {
        /// The dependent resource.
        name: String,
        /// The resource it comes to depend on (same group).
        #[arg(long, value_name = "RESOURCE")]
        on: String,
    },
    /// Tell the owner the resource failed (a restart or failover follows).
    Fail(Named),
    /// Bring a resource online (the resources it depends on must be too).
    Online(Named),
    /// Take a resource offline; resources that depend on it go offline too.
    Offline(Named),
}

/// Examples for `resource create --help`, one per common type.
const RESOURCE_CREATE_HELP: &str = "\
Examples (a group G on a lab; `busrig cluster resource types` lists every type):
  busrig cluster --lab DIR resource create G-IP --group G --type ip-address --prop address=127.0.2.1
  busrig cluster --lab DIR resource create G-Name --group G --type network-name --prop name=g --depends-on G-IP
  busrig cluster --lab DIR resource create G-Disk --group G --type physical-disk \\
      --prop disk=iscsi://127.0.0.1:PORT/iqn.2026-11.io.busrig:bus0/1
  busrig cluster --lab DIR resource create G-App --group G --type generic-application \\
      --prop 'command=exec busrig echo-server --listen $BUSRIG_IP:7000' --prop probe-tcp=127.0.2.1:7000 \\
      --depends-on G-IP,G-Disk";

#[derive(clap::Subcommand)]
enum EvsVerb {
    /// One group NAME with an IP address, a network name on it, the
    /// physical disks and a mail store on them, as the seeds lay out an
    /// Exchange virtual server.
    #[command(after_help = "\
Creates group NAME (marked an Exchange virtual server) with NAME-IP (ip-address),
NAME-Name (network-name, depends on NAME-IP), NAME-Disk1.. (physical-disk) and
NAME-Store (generic-application: busrig mailstore on the first disk, listening on
IP:PORT, depends on the name and the disks).

Example:
  busrig cluster --lab DIR evs create EVS1 --ip 127.0.2.1 --preferred NODE1,NODE2 \\
      --disk iscsi://127.0.0.1:PORT/iqn.2026-11.io.busrig:bus0/1")]
    Create {
        /// The virtual server's name: its group, and the prefix of its resources.
        name: String,
        /// The virtual server's IP address (e.g. 127.0.2.1 on a lab).
        #[arg(long, value_name = "IP")]
        ip: String,
        /// A data LUN's iSCSI URL (repeatable; the first holds the store).
        #[arg(long = "disk", value_name = "URL", required = true)]
        disks: Vec<String>,
        /// The mail store's SMTP port on the IP address.
        #[arg(long, value_name = "PORT", default_value_t = 2525)]
        port: u16,
        /// Preferred owners, most preferred first (comma-separated).
        #[arg(long, value_name = "NODES", value_delimiter = ',')]
        preferred: Vec<String>,
        /// AntiAffinityClassNames (default EVS, so virtual servers spread
        /// over the nodes and fail over to a passive one).
        #[arg(
            long,
            value_name = "CLASSES",
            value_delimiter = ',',
            default_value = "EVS"
        )]
        anti_affinity: Vec<String>,
        /// Failback: prevent or allow.
        #[arg(long, value_name = "POLICY", default_value = "prevent", value_parser = ["prevent", "allow"])]
        failback: String,
    },
}

#[derive(clap::Subcommand)]
enum DbVerb {
    /// Every key, or one (exit status 2 when it is not there).
    Get {
        /// The key (default: every key).
        key: Option<String>,
    },
    /// Set KEY to VALUE.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove KEY.
    Delete {
        /// The key.
        key: String,
    },
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
    // The type reference needs no cluster.
    if let Verb::Resource(ResourceVerb::Types) = a.verb {
        print!("{}", busrig_cluster::resource::type_reference());
        return Ok(ExitCode::SUCCESS);
    }
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
        ResourceVerb::Types => unreachable!("answered without a cluster"),
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
