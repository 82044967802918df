//! A tiny TCP service that answers each line with `NAME: line`, where
//! NAME says which node and process answered (`busrig echo-server`).
//! Failover tests run it as a generic application, so a client sees
//! which node serves the group's address.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// `NODE PID`: `$BUSRIG_NODE` (set by the node for the generic
/// applications it runs, else `echo`) and this process's id.
pub fn node_tag() -> String {
    let node = std::env::var("BUSRIG_NODE").unwrap_or_else(|_| "echo".into());
    format!("{node} {}", std::process::id())
}

/// Answers every connection on `listener`, each line as `TAG: line`,
/// until the process ends.
pub async fn serve(listener: TcpListener, tag: String) {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let tag = tag.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("{tag}: {line}\n").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn each_line_comes_back_with_the_tag() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(serve(l, "NODE2 42".into()));
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"hello\nagain\n").await.unwrap();
        let mut lines = BufReader::new(r).lines();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("NODE2 42: hello")
        );
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("NODE2 42: again")
        );
        server.abort();
    }
}
