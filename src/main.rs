//! `busrig`: one binary, one subcommand per tool. Each subcommand is a thin
//! clap wrapper around a library crate (docs/architecture.md, convention 6).

mod alloc;
mod cli;

use cli::{
    bench, bus, cluster, dashboard, demo, disk, echo, lab, mailload, mailstore, manual, node,
};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "busrig",
    version,
    about = "Shared SCSI / Fibre Channel bus emulator and failover-cluster test rig"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulated shared bus: an iSCSI target with file-backed LUNs.
    Target(TargetArgs),
    /// Watch a running bus and inject faults through its control plane.
    Bus(bus::BusArgs),
    /// Talk to a LUN through busrig's iSCSI initiator.
    Disk(disk::DiskArgs),
    /// I/O benchmark through busrig's initiator: IOPS, MB/s, latency percentiles.
    Bench(bench::BenchArgs),
    /// Run one cluster node (the cluster service of one server).
    Node(node::NodeArgs),
    /// Administer a running cluster through its nodes.
    Cluster(cluster::ClusterArgs),
    /// A whole cluster on loopback (a bus and N nodes) and faults to throw at it.
    #[command(subcommand)]
    Lab(lab::Verb),
    /// A live web page over a cluster and its bus, with actions.
    Dashboard(dashboard::DashboardArgs),
    /// The main job: a four-node cluster with mail-serving virtual servers,
    /// a node killed under load, failover, failback and every message checked.
    Demo(demo::DemoArgs),
    /// A tiny TCP echo service that names its node (for failover tests).
    #[command(hide = true)]
    EchoServer(echo::EchoArgs),
    /// A mail store that keeps everything on a shared LUN (SMTP delivery).
    Mailstore(mailstore::MailstoreArgs),
    /// Mail load: deliver, retry across failovers, verify every mailbox.
    Mailload(mailload::MailloadArgs),
    /// Shell completions (bash, zsh, fish) on stdout.
    Completions(manual::CompletionsArgs),
    /// Man pages: busrig(1) on stdout, or one page per subcommand with --dir.
    Man(manual::ManArgs),
}

#[derive(clap::Args)]
struct TargetArgs {
    /// TOML bus configuration; without it, the embedded default bus (one
    /// target, LUN 0 a 64 MiB quorum disk, LUNs 1 and 2 sparse 1 GiB data disks).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// iSCSI portal address (port 0 picks a free port; the chosen address is
    /// printed as `busrig target listening on ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3260")]
    listen: SocketAddr,
    /// Folder for LUN backing files named by relative paths.
    #[arg(long, value_name = "DIR", default_value = "busrig-data")]
    data_dir: PathBuf,
    /// Control plane address (HTTP+JSON, used by `busrig bus`). Clients that
    /// are not on loopback must present the token in BUSRIG_CONTROL_TOKEN.
    #[arg(long, value_name = "ADDR", default_value = busrig_target::control::DEFAULT_CONTROL_ADDR)]
    control: SocketAddr,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout carries readiness lines and command output.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    // Usage errors exit 1, as sg3_utils' tools do (2 means NOT READY there);
    // --help and --version exit 0.
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Short-lived clients piped into `head` and the like end quietly when
    // the reader goes away, as other command-line tools do, instead of
    // panicking. Servers (target, node) keep Rust's default of ignoring
    // SIGPIPE, so a vanished peer is an EPIPE error, not a dead process.
    if matches!(
        cli.command,
        Command::Bus(_)
            | Command::Cluster(_)
            | Command::Lab(_)
            | Command::Demo(_)
            | Command::Completions(_)
            | Command::Man(_)
    ) {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: restoring a signal's default action at start-up, before
        // any thread exists.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
    if matches!(cli.command, Command::Demo(_) | Command::Lab(_))
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The demo and the lab print their own story; logs only for trouble.
        std::env::set_var("RUST_LOG", "warn");
    }
    init_tracing();
    // The lab and the demo drive processes and make their own small runtimes.
    let (verb, result) = match cli.command {
        Command::Demo(a) => ("busrig demo", demo::run(a)),
        Command::Lab(a) => ("busrig lab", lab::run(a)),
        Command::Completions(a) => (
            "busrig completions",
            Ok(manual::run_completions(command(), a)),
        ),
        Command::Man(a) => ("busrig man", manual::man(command(), a)),
        other => ("busrig", runtime().and_then(|rt| rt.block_on(run(other)))),
    };
    result.unwrap_or_else(|e| {
        // One prefix, then the message and each cause once, even where a
        // library error writes its cause into its message and returns it
        // as its source too.
        eprintln!("{verb}: {}", busrig_lograte::text::error_chain(&*e));
        ExitCode::FAILURE
    })
}

/// The whole CLI as clap sees it: the derive's definition with the usage
/// lines it cannot write itself (for parsing, `--help`, completions and
/// man pages alike).
fn command() -> clap::Command {
    disk::usage_with_url(Cli::command())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Target(a) => {
            alloc::keep_freed_io_buffers();
            busrig_target::server::serve(busrig_target::server::ServeOptions {
                config: a.config,
                listen: a.listen,
                data_dir: a.data_dir,
                control: a.control,
                control_token: control_token(),
                control_limits: busrig_target::control::CONTROL_LIMITS,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bus(a) => bus::run(a).await,
        Command::Disk(a) => disk::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Node(a) => node::run(a).await,
        Command::Cluster(a) => cluster::run(a).await,
        Command::Dashboard(a) => dashboard::run(a).await,
        Command::EchoServer(a) => echo::run(a).await,
        Command::Mailstore(a) => mailstore::run(a).await,
        Command::Mailload(a) => mailload::run(a).await,
        Command::Lab(_) | Command::Demo(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("run without a runtime")
        }
    }
}

/// The control plane's token from `BUSRIG_CONTROL_TOKEN` (unset or empty:
/// none), for `busrig target` and its clients.
fn control_token() -> Option<String> {
    std::env::var("BUSRIG_CONTROL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand and every argument of the whole command tree,
    /// with the path of commands that leads to it, that has no help text.
    /// clap's own `--help`, `--version` and `help` are left out.
    fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            let text = a.get_help().or(a.get_long_help()).map(|h| h.to_string());
            if !builtin && !a.is_hide_set() && text.is_none_or(|t| t.trim().is_empty()) {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let here = format!("{path} {}", sub.get_name());
            if sub.get_name() == "help" || sub.is_hide_set() {
                continue;
            }
            let about = sub
                .get_about()
                .or(sub.get_long_about())
                .map(|h| h.to_string());
            if about.is_none_or(|t| t.trim().is_empty()) {
                missing.push(here.clone());
            }
            missing_help(sub, &here, missing);
        }
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        missing_help(&cmd, "busrig", &mut missing);
        assert!(
            missing.is_empty(),
            "no help text for:\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn usage_lines_show_the_url_where_it_is_required() {
        let mut cmd = command();
        cmd.build();
        let disk = cmd.find_subcommand_mut("disk").unwrap();
        let mut verbs: Vec<clap::Command> = disk.get_subcommands().cloned().collect();
        let pr = disk.find_subcommand("pr").unwrap();
        verbs.extend(pr.get_subcommands().cloned());
        for mut v in verbs.into_iter().filter(|v| v.get_name() != "help") {
            let usage = v.render_usage().to_string();
            // `validate` takes its URLs after the verb.
            let want = match v.get_name() {
                "validate" => "busrig disk validate [OPTIONS] <URL>...",
                _ => "busrig disk <URL> ",
            };
            assert!(usage.contains(want), "{usage}");
        }
        let usage = cmd
            .find_subcommand_mut("bench")
            .unwrap()
            .render_usage()
            .to_string();
        assert!(usage.contains("<URL>"), "{usage}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [manual::Shell::Bash, manual::Shell::Zsh, manual::Shell::Fish] {
            let mut out = Vec::new();
            manual::completions(command(), shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for verb in ["disk", "arbitrate", "completions"] {
                assert!(text.contains(verb), "{shell:?} completions lack {verb}");
            }
        }
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = manual::man_pages(command(), dir.path()).unwrap();
        let page = |name: &str| dir.path().join(name);
        assert!(written.contains(&page("busrig.1")), "{written:?}");
        let inquiry = std::fs::read_to_string(page("busrig-disk-inquiry.1")).unwrap();
        assert!(inquiry.contains("INQUIRY"), "{inquiry}");
        let types = std::fs::read_to_string(page("busrig-cluster-resource-types.1")).unwrap();
        assert!(!types.is_empty());
        // Hidden verbs and clap's `help` get no page.
        assert!(!page("busrig-echo-server.1").exists());
        assert!(!page("busrig-help.1").exists());
    }
}
