//! `busrig mailstore`: serve a `busrig_mailstore` store on a shared LUN
//! over SMTP (docs/mailstore.md).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use busrig_mailstore::serve::{serve, ServeOptions};
use busrig_mailstore::store::StoreOptions;

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
    let store = StoreOptions {
        format: a.format,
        max_message_bytes: a.max_message_size,
        checkpoint_delay: std::time::Duration::from_millis(a.test_checkpoint_delay_ms),
    };
    let o = ServeOptions {
        disk: a.disk,
        listen: a.listen,
        hostname,
        store,
    };
    let shutdown = async {
        crate::interrupted().await;
        tracing::info!("shutting down");
    };
    let ready = |addr| {
        println!("busrig mailstore listening on {addr}");
        let _ = std::io::stdout().flush();
    };
    serve(o, shutdown, ready).await?;
    Ok(ExitCode::SUCCESS)
}
