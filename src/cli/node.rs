//! `busrig node --config CLUSTER.toml --name NODE`: one cluster node
//! process (the cluster service of one server, `busrig_cluster::service`).
//!
//! It prints `busrig node NODE admin on ADDR` once its admin endpoint
//! serves, and runs until SIGINT/SIGTERM (a clean exit: it releases the
//! quorum and announces its exit, so no regroup follows). When the node
//! stops its cluster service it starts it again after the restart delay,
//! as the Windows service manager does; with `--restart never` it exits
//! with status 3 and the reason on stderr instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use busrig_cluster::service::{self, Restart, ServiceExit, ServiceOptions};

/// Exit status when the node stopped its cluster service.
pub const EXIT_STOPPED: u8 = 3;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The cluster file (the same on every node).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// This node's name in the cluster file.
    #[arg(long, value_name = "NODE")]
    name: String,
    /// Folder for this node's own files (the majority model's quorum log
    /// replica); default `busrig-node-NAME`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// What to do when the cluster service stops: start it again, or exit.
    #[arg(long, value_enum, default_value = "on-stop")]
    restart: RestartArg,
    /// Wait before a restart, in milliseconds (default: the profile's
    /// detection time, heartbeat x regroup-misses).
    #[arg(long, value_name = "MS")]
    restart_delay_ms: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RestartArg {
    /// Restart the cluster service after it stops.
    OnStop,
    /// Exit with status 3 when the cluster service stops.
    Never,
}

pub async fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    let o = ServiceOptions {
        config: a.config,
        name: a.name,
        data_dir: a.data_dir,
        restart: match a.restart {
            RestartArg::OnStop => Restart::OnStop,
            RestartArg::Never => Restart::Never,
        },
        restart_delay: a.restart_delay_ms.map(Duration::from_millis),
    };
    let ready = |name: &str, admin| {
        println!("busrig node {name} admin on {admin}");
        let _ = std::io::stdout().flush();
    };
    Ok(
        match service::run(&o, service::shutdown_signal(), ready).await? {
            ServiceExit::Shutdown => ExitCode::SUCCESS,
            ServiceExit::Stopped { node, reason } => {
                eprintln!("busrig node {node}: cluster service stopped: {reason}");
                ExitCode::from(EXIT_STOPPED)
            }
        },
    )
}
