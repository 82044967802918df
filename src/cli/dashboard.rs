//! `busrig dashboard`: the live web page over a cluster and its bus
//! (`busrig_dashboard`). This verb picks the sources and the token from
//! its arguments, prints the address to open and serves until Ctrl-C or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busrig_dashboard::{Dashboard, Sources, DEFAULT_LISTEN, READY_LINE};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  busrig dashboard --lab DIR
  busrig dashboard --config cluster.toml --control 127.0.0.1:3261 --listen 127.0.0.1:8080

Open the address it prints: with a lab, the token its actions need is in the
address's #fragment (derived from the lab's cluster file); otherwise set
BUSRIG_DASHBOARD_TOKEN. Bus actions need BUSRIG_CONTROL_TOKEN (a lab's is
derived), cluster actions the cluster file.")]
pub struct DashboardArgs {
    /// A lab folder made by `busrig lab up`: its nodes, its bus and its
    /// logs, and the lab's actions (kill, start, partition, heal).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "nodes", "control"])]
    lab: Option<PathBuf>,
    /// A cluster file: its nodes, and the secret cluster actions need.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A node's admin address (repeat for more nodes).
    #[arg(long = "node", value_name = "ADDR")]
    nodes: Vec<String>,
    /// The bus's control plane address.
    #[arg(long, value_name = "ADDR")]
    control: Option<String>,
    /// Where to serve the page. Off loopback every request needs the
    /// token, which a browser does not send by itself: from another
    /// machine, tunnel to loopback (`ssh -L`).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// How often the nodes and the bus are asked.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_ms: u64,
}

pub async fn run(a: DashboardArgs) -> anyhow::Result<ExitCode> {
    let (sources, token) = match &a.lab {
        Some(dir) => {
            let binary = std::env::current_exe().context("cannot find the busrig binary")?;
            let (s, t) = busrig_dashboard::for_lab(dir, binary)?;
            (s, Some(t))
        }
        None => {
            let cfg = match &a.config {
                Some(f) => Some(busrig_cluster::cluster_file::load(f)?),
                None => None,
            };
            let s = Sources::direct(
                a.nodes.clone(),
                cfg.as_ref(),
                a.control.clone(),
                crate::control_token(),
            );
            if s.is_empty() {
                return Err(busrig_dashboard::DashboardError::NoSources.into());
            }
            let token = std::env::var("BUSRIG_DASHBOARD_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            (s, token)
        }
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    if !busrig_http::is_loopback(addr.ip()) {
        tracing::warn!(%addr, "serving off loopback: every request needs the token");
    }
    if token.is_none() {
        tracing::warn!(
            "no token (BUSRIG_DASHBOARD_TOKEN): the dashboard only shows, its actions are refused"
        );
    }
    println!(
        "{READY_LINE}{}",
        busrig_dashboard::url(&addr, token.as_deref())
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    Dashboard::new(sources, token)
        .poll(Duration::from_millis(a.poll_ms))
        .serve(listener, shutdown)
        .await;
    Ok(ExitCode::SUCCESS)
}
