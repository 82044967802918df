//! The cluster service of one server, as `busrig node` runs it: the
//! cluster networks and the admin endpoint bound from the cluster file,
//! the resource host, and the node's driver, started again as a new
//! incarnation each time the node stops its cluster service (lost
//! arbitration, evicted, no quorum), the way the Windows service manager
//! restarts the cluster service. The admin endpoint stays up across
//! restarts.
//!
//! A clean shutdown (the caller's shutdown future) takes the groups
//! offline first, then the node releases the quorum and announces its
//! exit, so no regroup follows.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::Admin;
use crate::cluster_file::{self, ClusterFileError};
use crate::driver::shared::SharedDiskError;
use crate::driver::{self, ClusterTransport, Exit, Io, NodeDisks, NodeStatus};
use crate::host::{self, HostContext};
use crate::node::{Node, NodeError};

/// What to do when the node stops its cluster service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Wait the restart delay and start the cluster service again.
    OnStop,
    /// Return [`ServiceExit::Stopped`].
    Never,
}

/// How `busrig node` runs one node.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The cluster file (the same on every node).
    pub config: PathBuf,
    /// This node's name in the cluster file.
    pub name: String,
    /// Folder for this node's own files (the majority model's quorum log
    /// replica); `None` is `busrig-node-NAME`.
    pub data_dir: Option<PathBuf>,
    pub restart: Restart,
    /// Wait before a restart; `None` is the profile's detection time
    /// (heartbeat x regroup misses, docs/semantics.md "Timing profiles").
    pub restart_delay: Option<Duration>,
}

/// How the service ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceExit {
    /// The shutdown future completed and the node left cleanly.
    Shutdown,
    /// The node (named as in the cluster file) stopped its cluster
    /// service, for this reason, under [`Restart::Never`].
    Stopped { node: String, reason: String },
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The cluster file could not be read or is invalid.
    #[error(transparent)]
    ClusterFile(#[from] ClusterFileError),
    /// The node's name is not in the cluster file.
    #[error("node {name:?} is not in {} (nodes: {})", file.display(), nodes.join(", "))]
    UnknownNode {
        name: String,
        file: PathBuf,
        nodes: Vec<String>,
    },
    /// A shared disk's URL in the cluster file does not parse.
    #[error("{0}")]
    Disks(SharedDiskError),
    /// A cluster network's address could not be bound.
    #[error("cannot bind cluster networks {private} and {public}: {error}")]
    BindNetworks {
        private: SocketAddr,
        public: SocketAddr,
        error: std::io::Error,
    },
    /// The admin endpoint's address could not be bound.
    #[error("cannot bind admin address {addr}: {error}")]
    BindAdmin {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The node refused to start.
    #[error("{0}")]
    Node(NodeError),
}

/// Runs the node `o.name` until `shutdown` completes (or, under
/// [`Restart::Never`], until it stops its cluster service). `ready` is
/// called with the node's name and admin address once the admin endpoint
/// listens, before the cluster service first starts.
pub async fn run<S, R>(
    o: &ServiceOptions,
    shutdown: S,
    ready: R,
) -> Result<ServiceExit, ServiceError>
where
    S: Future<Output = ()> + Send + 'static,
    R: FnOnce(&str, SocketAddr),
{
    let cfg = Arc::new(cluster_file::load(&o.config)?);
    let me = cfg
        .node_id(&o.name)
        .ok_or_else(|| ServiceError::UnknownNode {
            name: o.name.clone(),
            file: o.config.clone(),
            nodes: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        })?;
    let nc = cfg.nodes[usize::from(me)].clone();
    let data_dir = o
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("busrig-node-{}", nc.name)));
    let disks = NodeDisks::from_config(&cfg, me, &data_dir).map_err(ServiceError::Disks)?;
    let transport = Arc::new(ClusterTransport::bind(&cfg, me).await.map_err(|error| {
        ServiceError::BindNetworks {
            private: nc.private,
            public: nc.public,
            error,
        }
    })?);
    let listener = TcpListener::bind(nc.admin)
        .await
        .map_err(|error| ServiceError::BindAdmin {
            addr: nc.admin,
            error,
        })?;

    let (status_tx, status_rx) = watch::channel(NodeStatus::default());
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let host_ctx = Arc::new(HostContext {
        cfg: cfg.clone(),
        me,
        data_dir: data_dir.clone(),
        commands: cmd_tx.clone(),
        status: status_rx.clone(),
        life: None,
        stopping: stop_rx.clone(),
    });
    let admin = Admin::new(cfg.clone(), me, status_rx, cmd_tx, transport.clone());
    let stopping = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let admin_task = tokio::spawn(admin.serve(listener, stopping()));
    let stop_tx = Arc::new(stop_tx);
    let on_shutdown = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = on_shutdown.send(true);
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
    let delay = o.restart_delay.unwrap_or_else(|| cfg.timing.detection());
    ready(&nc.name, nc.admin);

    let mut io = Io {
        commands: Some(cmd_rx),
        events: None,
        status: Some(status_tx),
    };
    let mut last_incarnation = 0;
    let exit = loop {
        // A new incarnation every start: the start time in milliseconds,
        // always above the last one.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(last_incarnation + 1);
        last_incarnation = incarnation;
        let node = match Node::new(cfg.clone(), &nc.name, incarnation, Duration::ZERO) {
            Ok(n) => n,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = host_task.await;
                let _ = admin_task.await;
                return Err(ServiceError::Node(e));
            }
        };
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
                break ServiceExit::Shutdown;
            }
            Exit::Stopped(reason) if o.restart == Restart::Never => {
                break ServiceExit::Stopped {
                    node: nc.name.clone(),
                    reason,
                };
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
                    () = stopping() => break ServiceExit::Shutdown,
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = host_task.await;
    let _ = admin_task.await;
    Ok(exit)
}

/// Completes on SIGINT or SIGTERM: the shutdown of `busrig node`.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config: PathBuf, name: &str) -> ServiceOptions {
        ServiceOptions {
            config,
            name: name.into(),
            data_dir: None,
            restart: Restart::Never,
            restart_delay: None,
        }
    }

    #[tokio::test]
    async fn a_missing_cluster_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let o = options(dir.path().join("none.toml"), "NODE1");
        let e = run(&o, std::future::pending(), |_, _| panic!("not ready"))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("cannot read cluster file"), "{e}");
    }
}
