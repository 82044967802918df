//! `busrig mailload`: mail load across failovers (`busrig_mailstore::load`).
//! This file parses the arguments, finds the lab's cluster nodes and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busrig_mailstore::load::{self, parse_duration, LoadConfig};

#[derive(clap::Args)]
pub struct MailloadArgs {
    /// The mail store: HOST:PORT, or NAME:PORT with a cluster network name
    /// resolved through the cluster (--lab or --node) on every reconnect.
    #[arg(long, value_name = "NAME_OR_ADDR")]
    to: String,
    /// A lab folder made by `busrig lab up`: resolve --to through its cluster.
    #[arg(long, value_name = "DIR", conflicts_with = "nodes")]
    lab: Option<PathBuf>,
    /// A cluster node's admin address to resolve --to through (repeatable).
    #[arg(long = "node", value_name = "ADDR")]
    nodes: Vec<String>,
    /// Messages per second (an open-loop schedule).
    #[arg(long, value_name = "R", default_value_t = 20.0)]
    rate: f64,
    /// How long to send, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Mailboxes the messages are spread over (user0, user1, ...).
    #[arg(long, value_name = "N", default_value_t = 4)]
    mailboxes: u32,
    /// Concurrent SMTP connections.
    #[arg(long, value_name = "N", default_value_t = 4)]
    connections: u32,
    /// Approximate message size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    size: usize,
    /// How long after --duration to keep retrying unacknowledged messages.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_duration)]
    drain: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write every acknowledged message (id, uid, send and ack times) as JSON lines.
    #[arg(long, value_name = "FILE")]
    records: Option<PathBuf>,
}

pub async fn run(a: MailloadArgs) -> anyhow::Result<ExitCode> {
    let mut config = LoadConfig {
        to: a.to.clone(),
        admin: a.nodes.clone(),
        secret: None,
        rate: a.rate,
        duration: a.duration,
        drain: a.drain,
        mailboxes: a.mailboxes,
        connections: a.connections,
        size: a.size,
    };
    config.validate()?;
    if let Some(dir) = &a.lab {
        let cfg = busrig_lab::lab_config(dir)?;
        config
            .admin
            .extend(cfg.nodes.iter().map(|n| n.admin.to_string()));
        config.secret = Some(cfg.secret.clone());
    }
    let out = load::run(config).await?;
    if let Some(path) = &a.records {
        (out.write_records(path)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = match a.json {
        true => serde_json::to_string(&out.report)?,
        false => out.report.to_string(),
    };
    let code = match out.report.acknowledged_but_missing {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    };
    // A reader that went away (`busrig mailload ... | head -1`) loses the
    // report, not the run: the exit status still says how it went.
    print_report(&text).or_else(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(anyhow::Error::new(e).context("cannot write the report to stdout")),
    })?;
    Ok(code)
}

/// Writes the report and its newline to stdout, returning the write error
/// that `println!` would have panicked on.
fn print_report(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}
