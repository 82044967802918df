//! `busrig node --config CLUSTER.toml --name NODE`: one cluster node
//! process (the cluster service of one server).
//!
//! It binds its private and public cluster networks and its admin endpoint
//! from the cluster file, logs in to the quorum (or witness) disk as
//! `PREFIX:NODE`, prints `busrig node NODE admin on ADDR` once it serves,
//! and runs until SIGINT/SIGTERM (a clean exit: it releases the quorum and
//! announces its exit, so no regroup follows).
//!
//! When the node stops its cluster service (lost arbitration, evicted, no
//! quorum) the process plays the Windows service manager's part: it logs the
//! reason, waits `--restart-delay-ms` (default: the profile's detection
//! time) and starts the cluster service again as a new incarnation, which
//! joins the cluster or challenges for the quorum again. With
//! `--restart never` it exits with status 3 and the reason on stderr
//! instead. The admin endpoint stays up across restarts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use busrig_cluster::admin::Admin;
use busrig_cluster::driver::{self, ClusterTransport, Exit, Io, NodeDisks, NodeStatus};
use busrig_cluster::host::{self, HostContext};
use busrig_cluster::node::Node;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

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
    restart: Restart,
    /// Wait before a restart, in milliseconds (default: the profile's
    /// detection time, heartbeat x regroup-misses).
    #[arg(long, value_name = "MS")]
    restart_delay_ms: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Restart {
    /// Restart the cluster service after it stops.
    OnStop,
    /// Exit with status 3 when the cluster service stops.
    Never,
}

pub async fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    let cfg = Arc::new(busrig_cluster::cluster_file::load(&a.config)?);
    let me = cfg.node_id(&a.name).ok_or_else(|| {
        let names: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow!(
            "node {:?} is not in {} (nodes: {})",
            a.name,
            a.config.display(),
            names.join(", ")
        )
    })?;
    let nc = cfg.nodes[usize::from(me)].clone();
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("busrig-node-{}", nc.name)));
    let disks = NodeDisks::from_config(&cfg, me, &data_dir).map_err(|e| anyhow!("{e}"))?;
    let transport = Arc::new(ClusterTransport::bind(&cfg, me).await.with_context(|| {
        format!(
            "cannot bind cluster networks {} and {}",
            nc.private, nc.public
        )
    })?);
    let listener = TcpListener::bind(nc.admin)
        .await
        .with_context(|| format!("cannot bind admin address {}", nc.admin))?;

    let (status_tx, status_rx) = watch::channel(NodeStatus::default());
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let host_ctx = Arc::new(HostContext {
        cfg: cfg.clone(),
        me,
        data_dir: data_dir.clone(),
        commands: cmd_tx.clone(),
        status: status_rx.clone(),
    });
    let admin = Admin::new(cfg.clone(), me, status_rx, cmd_tx, transport.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    let admin_task = tokio::spawn(admin.serve(listener, stopping()));
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    // The resource host takes its groups offline on shutdown before the
    // cluster service announces its exit.
    let (host_done_tx, host_done_rx) = watch::channel(false);
    let host_task = tokio::spawn({
        let stop = stopping();
        async move {
            host::run(host_ctx, stop).await;
            let _ = host_done_tx.send(true);
        }
    });
    let host_done = move || {
        let mut rx = host_done_rx.clone();
        async move {
            let _ = rx.wait_for(|d| *d).await;
        }
    };
    let delay = a
        .restart_delay_ms
        .map(Duration::from_millis)
        .unwrap_or_else(|| cfg.timing.detection());

    println!("busrig node {} admin on {}", nc.name, nc.admin);
    let _ = std::io::stdout().flush();

    let mut io = Io {
        commands: Some(cmd_rx),
        events: None,
        status: Some(status_tx),
    };
    let mut last_incarnation = 0;
    let code = loop {
        // A new incarnation every start: the start time in milliseconds,
        // always above the last one.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(last_incarnation + 1);
        last_incarnation = incarnation;
        let node = Node::new(cfg.clone(), &nc.name, incarnation, Duration::ZERO)
            .map_err(|e| anyhow!("{e}"))?;
        tracing::info!(
            node = %nc.name,
            cluster = %cfg.name,
            model = cfg.quorum.name(),
            profile = %cfg.profile,
            initiator = %cfg.initiator_name(me),
            incarnation,
            "cluster service starting"
        );
        let (_node, exit) = driver::run(node, &transport, &disks, &mut io, host_done()).await;
        match exit {
            Exit::Shutdown => {
                tracing::info!(node = %nc.name, "cluster service stopped cleanly");
                break ExitCode::SUCCESS;
            }
            Exit::Stopped(reason) if a.restart == Restart::Never => {
                eprintln!("busrig node {}: cluster service stopped: {reason}", nc.name);
                break ExitCode::from(EXIT_STOPPED);
            }
            Exit::Stopped(reason) => {
                tracing::warn!(
                    node = %nc.name,
                    %reason,
                    delay_ms = delay.as_millis() as u64,
                    "cluster service stopped; restarting it after the delay"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopping() => break ExitCode::SUCCESS,
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = host_task.await;
    let _ = admin_task.await;
    Ok(code)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the node cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}
