//! `busrig lab`: a whole cluster on loopback — one `busrig target` and N
//! `busrig node` processes in the background — and the faults to throw at
//! it. The verbs parse their arguments, call the `busrig-lab` crate and
//! print; what `lab up` writes under DIR and how it chooses ports is
//! described in that crate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busrig_lab::{process_state, scenario, Lab, Net, Signal, UpOptions, STOP_GRACE};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Args, Clone)]
struct DirArg {
    /// The lab folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NetArg {
    Private,
    Public,
    Both,
}

impl NetArg {
    fn net(self) -> Net {
        match self {
            NetArg::Private => Net::Private,
            NetArg::Public => Net::Public,
            NetArg::Both => Net::Both,
        }
    }
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Start a bus and N nodes; return once the cluster has formed.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// Number of nodes (NODE1 .. NODEn).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Quorum model: disk-scsi2, disk-pr or majority.
        #[arg(long, default_value = "disk-scsi2")]
        quorum: String,
        /// Timing profile: fast or mscs2003.
        #[arg(long, default_value = "fast")]
        profile: String,
        /// Data LUNs besides the quorum LUN.
        #[arg(long, default_value_t = 3)]
        data_luns: u16,
        /// Give up waiting for the cluster to form after this many seconds
        /// (default: from the profile).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Processes and cluster state.
    Status {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
    },
    /// Stop every node cleanly, then the bus.
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGKILL a node (or `target`).
    Kill {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGSTOP a node: it stops answering while holding what it held.
    Pause {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGCONT a paused node.
    Resume {
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a node that is not running (after kill, or after it stopped).
    Start {
        node: String,
        #[command(flatten)]
        dir: DirArg,
        /// Return only once it is a member again.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a node's cluster traffic on a network, both directions.
    Partition {
        node: String,
        #[arg(long, value_enum)]
        net: NetArg,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Undo `partition`.
    Heal {
        node: String,
        #[arg(long, value_enum, default_value = "both")]
        net: NetArg,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Run a scenario file on a fresh lab and write a JSON report.
    Run {
        scenario: PathBuf,
        /// The lab folder (default: a new temporary folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Kill the quorum owner N times and measure how long until another
    /// node acts as owner (each killed node is restarted and rejoins).
    Failover {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, default_value_t = 5)]
        kills: usize,
        #[arg(long)]
        json: bool,
    },
}

/// The lab in `dir`, run by this binary.
pub fn open(dir: &Path) -> anyhow::Result<Lab> {
    let binary = std::env::current_exe().context("cannot find the busrig binary")?;
    Ok(Lab::new(binary, dir))
}

/// `lab down`, printing the nodes that had to be killed.
pub fn down(lab: &Lab) -> busrig_lab::Result<()> {
    for n in lab.down()? {
        eprintln!("{n} did not stop in {STOP_GRACE:?}; killing it");
    }
    Ok(())
}

fn status(lab: &Lab, as_json: bool) -> anyhow::Result<ExitCode> {
    let dir = lab.dir();
    let busrig_lab::LabStatus { state, cluster } = lab.status()?;
    let cluster = cluster.as_ref();
    if as_json {
        let procs: Vec<Value> = std::iter::once(&state.target)
            .chain(&state.nodes)
            .map(|p| json!({ "name": p.name, "pid": p.pid, "process": process_state(p.pid), "addr": p.addr, "log": p.log }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": dir, "quorum": state.quorum, "profile": state.profile,
                "processes": procs, "cluster": cluster,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Lab {} ({} nodes, quorum {}, profile {})",
        dir.display(),
        state.nodes.len(),
        state.quorum,
        state.profile
    );
    println!("  {:<8} {:<8} {:<12} ADDRESS", "NAME", "PID", "PROCESS");
    for p in std::iter::once(&state.target).chain(&state.nodes) {
        println!(
            "  {:<8} {:<8} {:<12} {}",
            p.name,
            p.pid.map_or("-".into(), |p| p.to_string()),
            process_state(p.pid),
            p.addr
        );
    }
    match cluster {
        Some(s) => println!(
            "  cluster {}: epoch {}, quorum owner {}, members {}",
            s.cluster,
            s.epoch.map_or("-".into(), |e| e.to_string()),
            s.quorum_owner.as_deref().unwrap_or("none"),
            s.nodes
                .iter()
                .map(|n| format!("{}={}", n.name, n.state))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => println!("  cluster: no node answers"),
    }
    Ok(ExitCode::SUCCESS)
}

fn signal_verb(lab: &Lab, name: &str, sig: Signal, verb: &str) -> anyhow::Result<ExitCode> {
    let (name, pid) = lab.send_signal(name, sig, verb)?;
    println!("{name} {verb} (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

fn partition(lab: &Lab, name: &str, net: NetArg, cut: bool) -> anyhow::Result<()> {
    let (name, now) = lab.partition(name, net.net(), cut)?;
    println!(
        "{}: private {}, public {}",
        name,
        if now.private { "cut" } else { "up" },
        if now.public { "cut" } else { "up" }
    );
    Ok(())
}

fn failover(lab: &Lab, kills: usize, as_json: bool) -> anyhow::Result<ExitCode> {
    let r = lab.failover(kills, |round, t| {
        if !as_json {
            println!(
                "kill {}: {} killed, {} owns the quorum after {} ms",
                round + 1,
                t.killed,
                t.new_owner,
                t.ms
            );
        }
    })?;
    let (median, min, max) = (r.median_ms, r.min_ms, r.max_ms);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "quorum": r.quorum, "profile": r.profile, "nodes": r.nodes,
                "kills": r.kills, "median_ms": median, "min_ms": min, "max_ms": max,
            }))?
        );
    } else {
        println!(
            "{} kills ({}, {}): median {median} ms, min {min} ms, max {max} ms",
            r.kills.len(),
            r.quorum,
            r.profile
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab run`: the scenario runner, printing each step as it finishes.
fn run_scenario(lab: &Lab, file: &Path, keep: bool) -> anyhow::Result<ExitCode> {
    let sc = scenario::load(file)?;
    println!("scenario {}: {}", file.display(), sc.name);
    let out = scenario::run(lab, &sc, file, keep, |s| {
        println!(
            "  {:>8.3} s  step {:>2} {:<12} {}",
            s.at_ms as f64 / 1000.0,
            s.step,
            s.action,
            s.outcome
        );
    })?;
    println!("report: {}", out.report.display());
    Ok(if out.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn run(a: LabArgs) -> anyhow::Result<ExitCode> {
    match a.verb {
        Verb::Up {
            dir,
            nodes,
            quorum,
            profile,
            data_luns,
            timeout,
        } => {
            let lab = open(&dir.dir)?;
            lab.up(&UpOptions {
                nodes,
                quorum,
                profile,
                data_luns,
                timeout: timeout.map(Duration::from_secs),
            })?;
            status(&lab, false)
        }
        Verb::Status { dir, json } => status(&open(&dir.dir)?, json),
        Verb::Down { dir } => {
            down(&open(&dir.dir)?)?;
            println!(
                "lab {} is down (logs kept in {})",
                dir.dir.display(),
                dir.dir.join("logs").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Kill { node, dir } => signal_verb(&open(&dir.dir)?, &node, Signal::SIGKILL, "killed"),
        Verb::Pause { node, dir } => {
            signal_verb(&open(&dir.dir)?, &node, Signal::SIGSTOP, "paused")
        }
        Verb::Resume { node, dir } => {
            signal_verb(&open(&dir.dir)?, &node, Signal::SIGCONT, "resumed")
        }
        Verb::Start { node, dir, wait } => {
            open(&dir.dir)?.start(&node, wait)?;
            println!("{node} started");
            Ok(ExitCode::SUCCESS)
        }
        Verb::Partition { node, net, dir } => {
            partition(&open(&dir.dir)?, &node, net, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Heal { node, net, dir } => {
            partition(&open(&dir.dir)?, &node, net, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Failover { dir, kills, json } => failover(&open(&dir.dir)?, kills, json),
        Verb::Run {
            scenario,
            dir,
            keep,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "busrig-scenario-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                ))
            });
            run_scenario(&open(&dir)?, &scenario, keep)
        }
    }
}
