//! `busrig mailstore`: open the shared disk, recover the store (docs/
//! mailstore.md "Recovery"), then serve SMTP until the shutdown future
//! completes or the disk fails. A failed disk ends the process non-zero,
//! so the cluster restarts or fails over the group.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::device::{Device, DeviceError};
use crate::smtp;
use crate::store::{MailStore, StoreError, StoreOptions};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The shared LUN's URL (or `unix:PATH`, the cluster disk proxy).
    pub disk: String,
    /// SMTP address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Name in the SMTP greeting.
    pub hostname: String,
    pub store: StoreOptions,
}

/// Why the store did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The disk could not be opened.
    #[error("cannot open {disk}")]
    Open {
        disk: String,
        #[source]
        source: DeviceError,
    },
    /// Soft recovery failed (or the disk holds something else).
    #[error("mail store recovery failed")]
    Recovery(#[source] StoreError),
    /// The SMTP address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The store stopped serving: its disk failed.
    #[error("the mail store stopped: {0}")]
    Stopped(String),
}

/// Recovers the store on `o.disk` and serves it on `o.listen` until
/// `shutdown` completes. `ready` gets the bound address once recovery is
/// done and the listener is up.
pub async fn serve(
    o: ServeOptions,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let dev = Device::open(&o.disk)
        .await
        .map_err(|source| ServeError::Open {
            disk: o.disk.clone(),
            source,
        })?;
    let (store, rec) = MailStore::open(dev, o.store)
        .await
        .map_err(ServeError::Recovery)?;
    tracing::info!(
        formatted = rec.formatted,
        database_messages = rec.db_messages,
        log_records = rec.log_records,
        log_messages = rec.log_messages,
        checkpoint_lsn = rec.checkpoint_lsn,
        log_end = rec.log_end,
        "soft recovery done"
    );
    let listen = |source| ServeError::Listen {
        addr: o.listen,
        source,
    };
    let listener = TcpListener::bind(o.listen).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    ready(addr);
    tracing::info!(%addr, hostname = %o.hostname, "mail store serving");
    smtp::run(listener, Arc::new(store), o.hostname, shutdown)
        .await
        .map_err(|why| {
            tracing::error!(reason = %why, "the mail store stopped");
            ServeError::Stopped(why)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_disk_url_is_refused_before_anything_listens() {
        let o = ServeOptions {
            disk: "not-a-url".into(),
            listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            hostname: "mailstore".into(),
            store: StoreOptions::default(),
        };
        let r = serve(o, std::future::pending(), |_| panic!("not ready")).await;
        assert!(matches!(r, Err(ServeError::Open { .. })), "{r:?}");
    }
}
