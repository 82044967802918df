//! Cluster disk access for applications: a node-local proxy that sends an
//! application's block I/O through the node's own I_T nexus, the one that
//! holds the physical-disk resource's reservation.
//!
//! On Windows every application on the owning node reaches a cluster disk
//! through the node's HBA, and the cluster disk driver stops its I/O the
//! moment the node loses the disk. Here the physical-disk resource serves
//! a Unix socket (`disk-RESOURCE.sock` in the node's data folder) while it
//! is online; the application finds it in `$BUSRIG_DISK_<RESOURCE>` as
//! `unix:PATH`. Requests are refused (status 3) whenever the node is not
//! acting owner of the disk (lease expired, reservation lost, going
//! offline), and the bus refuses anything that slips past with
//! RESERVATION CONFLICT — so the bus audit shows only the owning node's
//! initiator writing, one node at a time.
//!
//! Wire format, big-endian, one request then one response at a time:
//!
//! ```text
//! request:  op u8 | flags u8 | lba u64 | blocks u32 | len u32 | data[len]
//!           op 1 READ, 2 WRITE (flags bit 0 = FUA), 3 CAPACITY, 4 FLUSH
//! response: status u8 | len u32 | payload[len]
//!           status 0 GOOD (READ: the data; CAPACITY: blocks u64, block size u32)
//!                  1 RESERVATION CONFLICT, 2 FAILED, 3 NOT OWNER (payload: text)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

/// Largest data a request or response may carry (16 MiB).
pub const MAX_DATA: u32 = 16 << 20;

pub const OP_READ: u8 = 1;
pub const OP_WRITE: u8 = 2;
pub const OP_CAPACITY: u8 = 3;
pub const OP_FLUSH: u8 = 4;

pub const ST_GOOD: u8 = 0;
pub const ST_CONFLICT: u8 = 1;
pub const ST_FAILED: u8 = 2;
pub const ST_NOT_OWNER: u8 = 3;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusDiskError {
    /// The proxy socket failed.
    #[error("cluster disk proxy: {0}")]
    Io(#[from] std::io::Error),
    /// The target answered with status RESERVATION CONFLICT.
    #[error("reservation conflict: this node does not hold the disk")]
    Conflict,
    /// The node does not act as the disk's owner now; says why.
    #[error("the node is not the disk's owner right now: {0}")]
    NotOwner(String),
    /// The I/O itself failed on the target or the transport.
    #[error("disk I/O failed: {0}")]
    Failed(String),
    /// The proxy's answer did not follow the protocol.
    #[error("cluster disk proxy: bad answer: {0}")]
    Protocol(String),
}

/// A request as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: u8,
    pub fua: bool,
    pub lba: u64,
    pub blocks: u32,
    pub data: Bytes,
}

/// What a server does with requests.
pub trait Backend: Send + Sync + 'static {
    /// Why I/O may not go out; its text is the `ST_NOT_OWNER` payload.
    type Refusal: std::error::Error + Send;

    /// Whether I/O may go out now; may wait a while for a pending defense;
    /// `Err` says why not.
    fn may_io(&self) -> impl std::future::Future<Output = Result<(), Self::Refusal>> + Send;
    fn read(
        &self,
        lba: u64,
        blocks: u32,
    ) -> impl std::future::Future<Output = Result<Bytes, ClusDiskError>> + Send;
    fn write(
        &self,
        lba: u64,
        data: Bytes,
        fua: bool,
    ) -> impl std::future::Future<Output = Result<(), ClusDiskError>> + Send;
    fn capacity(
        &self,
    ) -> impl std::future::Future<Output = Result<(u64, u32), ClusDiskError>> + Send;
    fn flush(&self) -> impl std::future::Future<Output = Result<(), ClusDiskError>> + Send;
}

async fn read_request(s: &mut UnixStream) -> std::io::Result<Option<Request>> {
    let mut head = [0u8; 18];
    match s.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let op = head[0];
    let fua = head[1] & 1 == 1;
    let lba = u64::from_be_bytes(head[2..10].try_into().expect("8"));
    let blocks = u32::from_be_bytes(head[10..14].try_into().expect("4"));
    let len = u32::from_be_bytes(head[14..18].try_into().expect("4"));
    if len > MAX_DATA {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request of {len} bytes exceeds {MAX_DATA}"),
        ));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).await?;
    Ok(Some(Request {
        op,
        fua,
        lba,
        blocks,
        data: Bytes::from(data),
    }))
}

async fn write_response(s: &mut UnixStream, status: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(status);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    s.write_all(&out).await
}

fn error_response(e: &ClusDiskError) -> (u8, Vec<u8>) {
    match e {
        ClusDiskError::Conflict => (ST_CONFLICT, b"reservation conflict".to_vec()),
        ClusDiskError::NotOwner(m) => (ST_NOT_OWNER, m.as_bytes().to_vec()),
        other => (ST_FAILED, other.to_string().into_bytes()),
    }
}

async fn serve_one<B: Backend>(mut s: UnixStream, backend: Arc<B>) {
    loop {
        let req = match read_request(&mut s).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cluster disk client sent a bad request");
                let _ = write_response(&mut s, ST_FAILED, e.to_string().as_bytes()).await;
                return;
            }
        };
        let (status, payload) = match backend.may_io().await {
            Err(why) => (ST_NOT_OWNER, why.to_string().into_bytes()),
            Ok(()) => match req.op {
                OP_READ => match backend.read(req.lba, req.blocks).await {
                    Ok(d) => (ST_GOOD, d.to_vec()),
                    Err(e) => error_response(&e),
                },
                OP_WRITE => match backend.write(req.lba, req.data, req.fua).await {
                    Ok(()) => (ST_GOOD, Vec::new()),
                    Err(e) => error_response(&e),
                },
                OP_CAPACITY => match backend.capacity().await {
                    Ok((b, bs)) => {
                        let mut p = b.to_be_bytes().to_vec();
                        p.extend_from_slice(&bs.to_be_bytes());
                        (ST_GOOD, p)
                    }
                    Err(e) => error_response(&e),
                },
                OP_FLUSH => match backend.flush().await {
                    Ok(()) => (ST_GOOD, Vec::new()),
                    Err(e) => error_response(&e),
                },
                other => (ST_FAILED, format!("unknown operation {other}").into_bytes()),
            },
        };
        if write_response(&mut s, status, &payload).await.is_err() {
            return;
        }
    }
}

/// A running proxy; the socket file is removed when it is dropped.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `backend` on a Unix socket at `path` (an old socket file
    /// there is replaced).
    pub fn start<B: Backend>(path: &Path, backend: Arc<B>) -> std::io::Result<Server> {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = UnixListener::bind(path)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(serve_one(s, backend.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster disk proxy accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Server {
            path: path.to_path_buf(),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The application side: one connection, one request at a time.
#[derive(Debug)]
pub struct Client {
    stream: Mutex<UnixStream>,
    path: PathBuf,
}

impl Client {
    /// Connects to the proxy at `path` (the part after `unix:`).
    pub async fn connect(path: &Path) -> Result<Client, ClusDiskError> {
        Ok(Client {
            stream: Mutex::new(UnixStream::connect(path).await?),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call(
        &self,
        op: u8,
        fua: bool,
        lba: u64,
        blocks: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, ClusDiskError> {
        let mut s = self.stream.lock().await;
        let mut head = Vec::with_capacity(18 + data.len());
        head.push(op);
        head.push(u8::from(fua));
        head.extend_from_slice(&lba.to_be_bytes());
        head.extend_from_slice(&blocks.to_be_bytes());
        head.extend_from_slice(&(data.len() as u32).to_be_bytes());
        head.extend_from_slice(data);
        s.write_all(&head).await?;
        let mut rh = [0u8; 5];
        s.read_exact(&mut rh).await?;
        let len = u32::from_be_bytes(rh[1..5].try_into().expect("4"));
        if len > MAX_DATA {
            return Err(ClusDiskError::Protocol(format!("{len}-byte answer")));
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await?;
        let text = || String::from_utf8_lossy(&payload).into_owned();
        match rh[0] {
            ST_GOOD => Ok(payload),
            ST_CONFLICT => Err(ClusDiskError::Conflict),
            ST_NOT_OWNER => Err(ClusDiskError::NotOwner(text())),
            ST_FAILED => Err(ClusDiskError::Failed(text())),
            other => Err(ClusDiskError::Protocol(format!("status {other}"))),
        }
    }

    pub async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, ClusDiskError> {
        self.call(OP_READ, false, lba, blocks, &[])
            .await
            .map(Bytes::from)
    }

    pub async fn write(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), ClusDiskError> {
        self.call(OP_WRITE, fua, lba, 0, data).await.map(|_| ())
    }

    /// (blocks, block size).
    pub async fn capacity(&self) -> Result<(u64, u32), ClusDiskError> {
        let p = self.call(OP_CAPACITY, false, 0, 0, &[]).await?;
        if p.len() != 12 {
            return Err(ClusDiskError::Protocol(format!(
                "capacity of {} bytes",
                p.len()
            )));
        }
        Ok((
            u64::from_be_bytes(p[0..8].try_into().expect("8")),
            u32::from_be_bytes(p[8..12].try_into().expect("4")),
        ))
    }

    pub async fn flush(&self) -> Result<(), ClusDiskError> {
        self.call(OP_FLUSH, false, 0, 0, &[]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use tokio::sync::watch;

    struct Mem {
        blocks: StdMutex<Vec<[u8; 512]>>,
        online: watch::Receiver<bool>,
    }

    /// The test backend's one refusal.
    #[derive(Debug, thiserror::Error)]
    #[error("the disk is not online on this node")]
    struct NotOnline;

    impl Backend for Mem {
        type Refusal = NotOnline;

        async fn may_io(&self) -> Result<(), NotOnline> {
            if *self.online.borrow() {
                Ok(())
            } else {
                Err(NotOnline)
            }
        }
        async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, ClusDiskError> {
            let b = self.blocks.lock().unwrap();
            let mut out = Vec::new();
            for i in lba..lba + u64::from(blocks) {
                out.extend_from_slice(
                    b.get(i as usize)
                        .ok_or_else(|| ClusDiskError::Failed("out of range".into()))?,
                );
            }
            Ok(Bytes::from(out))
        }
        async fn write(&self, lba: u64, data: Bytes, _fua: bool) -> Result<(), ClusDiskError> {
            let mut b = self.blocks.lock().unwrap();
            for (i, c) in data.chunks(512).enumerate() {
                let slot = b
                    .get_mut(lba as usize + i)
                    .ok_or_else(|| ClusDiskError::Failed("out of range".into()))?;
                slot[..c.len()].copy_from_slice(c);
            }
            Ok(())
        }
        async fn capacity(&self) -> Result<(u64, u32), ClusDiskError> {
            Ok((self.blocks.lock().unwrap().len() as u64, 512))
        }
        async fn flush(&self) -> Result<(), ClusDiskError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn round_trip_and_fencing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let (tx, rx) = watch::channel(true);
        let mem = Arc::new(Mem {
            blocks: StdMutex::new(vec![[0u8; 512]; 16]),
            online: rx,
        });
        let server = Server::start(&path, mem).unwrap();
        let c = Client::connect(server.path()).await.unwrap();
        assert_eq!(c.capacity().await.unwrap(), (16, 512));
        c.write(3, &[7u8; 1024], true).await.unwrap();
        let r = c.read(3, 2).await.unwrap();
        assert_eq!(&r[..], &[7u8; 1024][..]);
        assert!(matches!(c.read(40, 1).await, Err(ClusDiskError::Failed(_))));
        // Not the owner any more: refused, nothing written.
        tx.send(false).unwrap();
        assert!(matches!(
            c.write(0, &[1u8; 512], true).await,
            Err(ClusDiskError::NotOwner(_))
        ));
        tx.send(true).unwrap();
        assert_eq!(&c.read(0, 1).await.unwrap()[..], &[0u8; 512][..]);
        drop(server);
        assert!(!path.exists(), "socket removed when the server stops");
    }
}
