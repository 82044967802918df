//! `busrig mailstore`: serve a `busrig_mailstore` store on a shared LUN
//! over SMTP (docs/mailstore.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use busrig_mailstore::device::Device;
use busrig_mailstore::smtp;
use busrig_mailstore::store::{MailStore, StoreOptions};
use tokio::io::AsyncWriteExt;

#[derive(clap::Args)]
pub struct MailstoreArgs {
    /// The shared LUN: iscsi://[user%secret@]host[:port]/target-iqn/lun.
    /// The initiator name is $BUSRIG_INITIATOR_NAME, else
    /// iqn.2026-11.io.busrig:mailstore.
    #[arg(long, value_name = "URL")]
    disk: String,
    /// SMTP address (port 0 picks a free port; the chosen address is
    /// printed as `busrig mailstore listening on ADDR` once recovery is done).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525")]
    listen: SocketAddr,
    /// Format the disk even if it holds something that is not a mail store
    /// (a blank disk is formatted without asking).
    #[arg(long)]
    format: bool,
    /// Largest message accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_message_size: usize,
    /// Test hook: milliseconds a checkpoint waits between its page writes
    /// and its flush (to power-cycle a LUN while they are unflushed).
    #[arg(long, value_name = "MS", default_value_t = 0, hide = true)]
    test_checkpoint_delay_ms: u64,
    /// Name in the greeting (default: $BUSRIG_NETWORK_NAME, else "mailstore").
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
}

/// `busrig mailstore`: recover, then serve until the disk fails (exit
/// non-zero, so the cluster restarts or fails over the group) or SIGTERM.
pub async fn run(a: MailstoreArgs) -> anyhow::Result<ExitCode> {
    let hostname = a
        .hostname
        .or_else(|| std::env::var("BUSRIG_NETWORK_NAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mailstore".into());
    let dev = Device::open(&a.disk)
        .await
        .with_context(|| format!("cannot open {}", a.disk))?;
    let opts = StoreOptions {
        format: a.format,
        max_message_bytes: a.max_message_size,
        checkpoint_delay: std::time::Duration::from_millis(a.test_checkpoint_delay_ms),
    };
    let (store, rec) = MailStore::open(dev, opts)
        .await
        .context("mail store recovery failed")?;
    tracing::info!(
        formatted = rec.formatted,
        database_messages = rec.db_messages,
        log_records = rec.log_records,
        log_messages = rec.log_messages,
        checkpoint_lsn = rec.checkpoint_lsn,
        log_end = rec.log_end,
        "soft recovery done"
    );
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("busrig mailstore listening on {addr}\n").as_bytes())
        .await?;
    out.flush().await?;
    tracing::info!(%addr, %hostname, "mail store serving");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    match smtp::run(listener, Arc::new(store), hostname, shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(why) => {
            tracing::error!(reason = %why, "the mail store stopped");
            anyhow::bail!("the mail store stopped: {why}")
        }
    }
}
