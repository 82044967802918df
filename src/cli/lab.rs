//! `busrig lab`: a whole cluster on loopback — one `busrig target` and N
//! `busrig node` processes in the background — and the faults to throw at
//! it. The verbs parse their arguments, call the `busrig-lab` crate and
//! print; what `lab up` writes under DIR and how it chooses ports is
//! described in that crate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busrig_lab::hosts::faults::NetFault;
use busrig_lab::hosts::{HostsMode, Link};
use busrig_lab::{
    interrupt, scenario, Lab, LabError, Net, Signal, UpOptions, UpProgress, STOP_GRACE,
};

use crate::cli::progress::WaitLine;

/// Exit status of a verb stopped by Ctrl-C (128 + SIGINT, as a shell
/// reports a process that SIGINT ended).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args, Clone)]
pub(crate) struct DirArg {
    /// The lab folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

/// `--hosts`: one of `HostsMode::ALL` by name.
pub(crate) fn hosts_mode() -> impl clap::builder::TypedValueParser<Value = HostsMode> {
    use clap::builder::TypedValueParser as _;
    let names = HostsMode::ALL.map(HostsMode::as_str);
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<HostsMode>())
}

/// `lab net --net`: one of `Link::ALL` by name.
fn link() -> impl clap::builder::TypedValueParser<Value = Link> {
    use clap::builder::TypedValueParser as _;
    let names = Link::ALL.map(Link::as_str);
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<Link>())
}

/// `--net`: one of `Net::ALL` by name.
fn net() -> impl clap::builder::TypedValueParser<Value = Net> {
    use clap::builder::TypedValueParser as _;
    let names = Net::ALL.map(Net::as_str);
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<Net>())
}

#[derive(clap::Subcommand)]
pub enum Verb {
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
        /// Also start `busrig dashboard` on the lab in the background and
        /// print its address (`lab down` stops it).
        #[arg(long)]
        dashboard: bool,
        /// Where the processes run: single (one network stack, the
        /// default) or netns (a network namespace each, joined by bridges;
        /// faults are nftables, tc and link state; needs root, iproute2
        /// and nftables).
        #[arg(long, default_value = "single", value_parser = hosts_mode())]
        hosts: HostsMode,
    },
    /// Processes and cluster state.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// JSON instead of text.
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
        /// A node name (NODE1, ...) or `target` for the bus.
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGSTOP a node: it stops answering while holding what it held.
    Pause {
        /// A node name (NODE1, ...) or `target` for the bus.
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGCONT a paused node.
    Resume {
        /// A node name (NODE1, ...) or `target` for the bus.
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a node that is not running (after kill, or after it stopped).
    Start {
        /// A node name (NODE1, ...).
        node: String,
        #[command(flatten)]
        dir: DirArg,
        /// Return only once it is a member again.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a node's cluster traffic on a network, both directions.
    #[command(after_help = "Example:\n  busrig lab partition NODE2 --net private --dir DIR")]
    Partition {
        /// A node name (NODE1, ...).
        node: String,
        /// Which cluster network: private (heartbeats only), public, or both.
        #[arg(long, value_parser = net())]
        net: Net,
        #[command(flatten)]
        dir: DirArg,
    },
    /// A kernel network fault on a node's (or the target's) link, in a lab
    /// started with `--hosts netns`.
    #[command(
        after_help = "FAULT is one of: cut [in|out], loss PCT% [in|out], rate RATE, \
delay MS[ms] [JITTER[ms]], duplicate PCT%, reorder PCT%, down, up, clear.\n\n\
Examples:\n  busrig lab net NODE2 --net private loss 20% --dir DIR\n  \
busrig lab net NODE1 --net public down --dir DIR\n  busrig lab net NODE1 --net public clear --dir DIR"
    )]
    Net {
        /// A node name (NODE1, ...) or `target`.
        node: String,
        /// Which network: private, public or storage.
        #[arg(long, value_parser = link())]
        net: Link,
        /// The fault, as words (see below).
        #[arg(required = true, num_args = 1.., value_name = "FAULT")]
        fault: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Undo `partition`.
    Heal {
        /// A node name (NODE1, ...).
        node: String,
        /// Which cluster network to heal: private, public, or both.
        #[arg(long, value_parser = net(), default_value = "both")]
        net: Net,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Run a scenario file on a fresh lab and write a JSON report.
    Run {
        /// The scenario file (TOML; README "Scenario files").
        scenario: PathBuf,
        /// The lab folder (default: a new temporary folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Random fault schedules on fresh labs, with the recorded histories
    /// checked (linearizability, one owner at a time, exclusive disk
    /// writes, no lost mail, liveness); exit status 1 on any violation.
    Chaos {
        /// Where each schedule's lab and the JSON report go (default: a
        /// new temporary folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Schedules per quorum model.
        #[arg(long, value_name = "N", default_value_t = 10)]
        schedules: usize,
        /// The first schedule's seed (schedule i has seed + i; default:
        /// from the clock). `--seed S --schedules 1` replays schedule S.
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        /// Length of each schedule's fault window.
        #[arg(long, value_name = "SECS", default_value_t = 20)]
        duration: u64,
        /// Quorum model: disk-scsi2, disk-pr, majority or all.
        #[arg(long, default_value = "all", value_parser = ["disk-scsi2", "disk-pr", "majority", "all"])]
        quorum: String,
        /// Faults to draw from, comma-separated: kill, pause, partition,
        /// freeze, delay, cut, sense, reset, power-cycle (or all).
        #[arg(long, value_name = "LIST", default_value = "all")]
        faults: String,
        /// Workloads: mail, register or both.
        #[arg(long, value_name = "LIST", default_value = "mail,register")]
        workload: busrig_lab::chaos::Workloads,
        /// Nodes per lab.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Timing profile: fast or mscs2003.
        #[arg(long, default_value = "fast")]
        profile: String,
    },
    /// Kill the quorum owner N times and measure how long until another
    /// node acts as owner (each killed node is restarted and rejoins).
    Failover {
        #[command(flatten)]
        dir: DirArg,
        /// How many times to kill the quorum owner.
        #[arg(long, value_name = "N", default_value_t = 5)]
        kills: usize,
        /// The measurements as JSON.
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
/// `Lab::up` with its steps on stderr as the demo shows its waits
/// (`progress::WaitLine`): the bus, then the nodes' states while the
/// cluster forms (about 25 s with the mscs2003 profile's 7 s challenge
/// wait and 10 s online delay).
fn up(lab: &Lab, o: &UpOptions) -> busrig_lab::Result<()> {
    use std::io::IsTerminal;
    let mut line = WaitLine::new(std::io::stderr().is_terminal());
    let start = std::time::Instant::now();
    let r = lab.up_with(
        o,
        &mut |p| match p {
            UpProgress::StartingBus => line.begin("starting the bus"),
            UpProgress::BusReady => {
                line.end();
                eprintln!("  bus ready ({:.1} s)", start.elapsed().as_secs_f64());
            }
            UpProgress::NodesStarted { nodes, limit } => line.begin(&format!(
                "{nodes} node{} forming the cluster (at most {} s)",
                if nodes == 1 { "" } else { "s" },
                limit.as_secs()
            )),
            UpProgress::Forming { nodes } => line.tick(&nodes.join(", ")),
            UpProgress::Formed => {
                line.end();
                eprintln!("  cluster formed ({:.1} s)", start.elapsed().as_secs_f64());
            }
        },
        &interrupt::interrupted,
    );
    line.end();
    r
}

pub fn down(lab: &Lab) -> busrig_lab::Result<()> {
    if let Err(e) = busrig_dashboard::stop_for_lab(lab.dir()) {
        eprintln!("stopping the lab's dashboard: {e}");
    }
    for n in lab.down()? {
        eprintln!("{n} did not stop in {STOP_GRACE:?}; killing it");
    }
    Ok(())
}

fn status(lab: &Lab, as_json: bool) -> anyhow::Result<ExitCode> {
    let s = lab.status()?;
    match as_json {
        true => println!("{}", serde_json::to_string_pretty(&s.to_json(lab.dir()))?),
        false => println!("{}", s.render(lab.dir())),
    }
    Ok(ExitCode::SUCCESS)
}

fn partition(lab: &Lab, name: &str, net: Net, cut: bool) -> anyhow::Result<ExitCode> {
    let (name, now) = lab.partition(name, net, cut)?;
    println!("{name}: {now}");
    Ok(ExitCode::SUCCESS)
}

fn failover(lab: &Lab, kills: usize, as_json: bool) -> anyhow::Result<ExitCode> {
    let r = lab.failover(kills, |round, t| {
        if !as_json {
            println!("kill {}: {t}", round + 1);
        }
    })?;
    match as_json {
        true => println!("{}", serde_json::to_string_pretty(&r)?),
        false => println!("{r}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab chaos`: a progress bar while it runs, one verdict line per
/// schedule, the report's path; failure on any violation.
fn chaos(o: busrig_lab::chaos::ChaosOptions) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("cannot find the busrig binary")?;
    let total = (o.schedules * o.quorums.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} schedules, {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    println!(
        "chaos: {} schedule(s) per model of {:?}, seed {}, {} s each, in {}",
        o.schedules,
        o.quorums,
        o.seed,
        o.duration.as_secs(),
        o.dir.display()
    );
    let report = busrig_lab::chaos::run(
        &binary,
        &o,
        |_, seed, q| bar.set_message(format!("seed {seed} {q}")),
        |r| {
            // A hidden bar (no terminal) prints nothing: print the line.
            match bar.is_hidden() {
                true => println!("{}", r.verdict_line()),
                false => bar.println(r.verdict_line()),
            }
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{} schedules, {} operations checked, {} violations, {} errors; report: {}",
        report.results.len(),
        report.operations_checked,
        report.violations,
        report.errors,
        o.dir.join("report.json").display()
    );
    Ok(match report.violations + report.errors {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// `lab run`: the scenario runner, printing each step as it finishes.
fn run_scenario(lab: &Lab, file: &Path, keep: bool) -> anyhow::Result<ExitCode> {
    let sc = scenario::load(file)?;
    println!("scenario {}: {}", file.display(), sc.name);
    let out = scenario::run(lab, &sc, file, keep, |s| println!("{s}"))?;
    println!("report: {}", out.report.display());
    Ok(match out.passed {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    let signal = |node: &str, dir: &DirArg, sig, verb| -> anyhow::Result<ExitCode> {
        let (name, pid) = open(&dir.dir)?.send_signal(node, sig, verb)?;
        println!("{name} {verb} (pid {pid})");
        Ok(ExitCode::SUCCESS)
    };
    match verb {
        Verb::Up {
            dir,
            nodes,
            quorum,
            profile,
            data_luns,
            timeout,
            dashboard,
            hosts,
        } => {
            let lab = open(&dir.dir)?;
            let timeout = timeout.map(Duration::from_secs);
            // Ctrl-C while starting takes down what was started.
            interrupt::install();
            let o = UpOptions {
                nodes,
                quorum,
                profile,
                data_luns,
                timeout,
                hosts,
            };
            match up(&lab, &o) {
                Err(e @ LabError::UpInterrupted { .. }) => {
                    eprintln!(
                        "busrig lab up: {e} (logs kept in {})",
                        lab.logs_dir().display()
                    );
                    Ok(ExitCode::from(EXIT_INTERRUPTED))
                }
                r => {
                    r?;
                    let code = status(&lab, false)?;
                    if dashboard {
                        let d = busrig_dashboard::spawn_for_lab(lab.binary(), lab.dir())?;
                        println!("dashboard: {} (pid {})", d.url, d.pid);
                    }
                    Ok(code)
                }
            }
        }
        Verb::Status { dir, json } => status(&open(&dir.dir)?, json),
        Verb::Down { dir } => {
            down(&open(&dir.dir)?)?;
            let logs = dir.dir.join("logs");
            println!(
                "lab {} is down (logs kept in {})",
                dir.dir.display(),
                logs.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Kill { node, dir } => signal(&node, &dir, Signal::SIGKILL, "killed"),
        Verb::Pause { node, dir } => signal(&node, &dir, Signal::SIGSTOP, "paused"),
        Verb::Resume { node, dir } => signal(&node, &dir, Signal::SIGCONT, "resumed"),
        Verb::Start { node, dir, wait } => {
            open(&dir.dir)?.start(&node, wait)?;
            println!("{node} started");
            Ok(ExitCode::SUCCESS)
        }
        Verb::Partition { node, net, dir } => partition(&open(&dir.dir)?, &node, net, true),
        Verb::Heal { node, net, dir } => partition(&open(&dir.dir)?, &node, net, false),
        Verb::Net {
            node,
            net,
            fault,
            dir,
        } => {
            let f = NetFault::parse(&fault).map_err(|e| anyhow::anyhow!(e))?;
            let (host, now) = open(&dir.dir)?.net_fault(&node, net, &f)?;
            match now.is_empty() {
                true => println!("{host} {}: no faults", net.as_str()),
                false => {
                    for (what, how) in now {
                        println!("{host} {}: {what} [{how}]", net.as_str());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Chaos {
            dir,
            schedules,
            seed,
            duration,
            quorum,
            faults,
            workload,
            nodes,
            profile,
        } => {
            let quorums = match quorum.as_str() {
                "all" => busrig_lab::chaos::QUORUMS.map(String::from).to_vec(),
                q => vec![q.to_string()],
            };
            let seed = seed.unwrap_or_else(|| busrig_lograte::text::now_ms() % 1_000_000);
            chaos(busrig_lab::chaos::ChaosOptions {
                dir: dir.unwrap_or_else(|| busrig_lab::temp_lab_dir("chaos")),
                schedules,
                seed,
                duration: Duration::from_secs(duration),
                quorums,
                faults: busrig_lab::chaos::schedule::parse_faults(&faults)
                    .map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
                workloads: workload,
                nodes,
                profile,
            })
        }
        Verb::Failover { dir, kills, json } => failover(&open(&dir.dir)?, kills, json),
        Verb::Run {
            scenario,
            dir,
            keep,
        } => {
            let dir = dir.unwrap_or_else(|| busrig_lab::temp_lab_dir("scenario"));
            run_scenario(&open(&dir)?, &scenario, keep)
        }
    }
}
