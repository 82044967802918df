//! `busrig echo-server --listen ADDR`: the echo service of failover tests
//! (`busrig_cluster::echo`), answering each line with `NODE PID: line`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use busrig_cluster::echo;
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
}

pub async fn run(a: EchoArgs) -> anyhow::Result<ExitCode> {
    let node = echo::node_tag();
    let l = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    tracing::info!(addr = %a.listen, %node, "echo server listening");
    echo::serve(l, node).await;
    Ok(ExitCode::SUCCESS)
}
