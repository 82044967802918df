//! `busrig echo-server --listen ADDR`: a tiny TCP service that answers each
//! line with `NODE PID: line`, where NODE is `$BUSRIG_NODE` (set for
//! generic applications by the node that runs them) and PID its process id. Failover tests run it as a
//! cluster application so a client can see which node answers on the
//! group's address.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
}

pub async fn run(a: EchoArgs) -> anyhow::Result<ExitCode> {
    let node = format!(
        "{} {}",
        std::env::var("BUSRIG_NODE").unwrap_or_else(|_| "echo".into()),
        std::process::id()
    );
    let l = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    tracing::info!(addr = %a.listen, %node, "echo server listening");
    loop {
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("{node}: {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            tracing::debug!(%peer, "echo client gone");
        });
    }
}
