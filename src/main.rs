//! `busrig`: one binary, one subcommand per tool. Each subcommand is a thin
//! clap wrapper around a library crate (docs/architecture.md, convention 6).

mod alloc;
mod cli;

use cli::{bench, bus, cluster, demo, disk, echo, lab, mailload, mailstore, node};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    let cli = match Cli::try_parse() {
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
        Command::Bus(_) | Command::Cluster(_) | Command::Lab(_) | Command::Demo(_)
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
        Command::EchoServer(a) => echo::run(a).await,
        Command::Mailstore(a) => mailstore::run(a).await,
        Command::Mailload(a) => mailload::run(a).await,
        Command::Lab(_) | Command::Demo(_) => unreachable!("run without a runtime"),
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
