//! `busrig mailload`: delivers messages to a mail store at a fixed rate,
//! keeps delivering across a failover (reconnecting, resolving the network
//! name again, retrying the unacknowledged message with the same
//! Message-ID), then lists every mailbox and checks that every
//! acknowledged message is there exactly once.
//!
//! This file parses the arguments, finds the lab's cluster nodes and prints;
//! the load generator is `busrig_mailstore::load`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busrig_mailstore::load::{self, LoadConfig, Report};

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

/// Parses `30s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
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
        let cfg = busrig_cluster::cluster_file::load(&busrig_lab::cluster_file(dir))?;
        config
            .admin
            .extend(cfg.nodes.iter().map(|n| n.admin.to_string()));
        config.secret = Some(cfg.secret.clone());
    }
    let out = load::run(config).await?;
    let report = out.report;
    if let Some(path) = &a.records {
        let mut text = String::new();
        for r in &out.acks {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.acknowledged_but_missing > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &Report) {
    println!("sent                      {}", r.sent);
    println!("acknowledged              {}", r.acknowledged);
    println!("acknowledged but missing  {}", r.acknowledged_but_missing);
    println!("duplicates                {}", r.duplicates);
    println!("rejected (5xx)            {}", r.rejected);
    println!("unacknowledged (gave up)  {}", r.unacknowledged);
    println!("reconnects                {}", r.reconnects);
    println!("longest gap without acks  {} ms", r.longest_ack_gap_ms);
    let l = &r.latency_ms;
    println!(
        "latency ms                p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    for m in r.missing.iter().take(20) {
        println!("missing {m}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }
}
