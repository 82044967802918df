//! TCP and framing: dialing a portal, running the login exchange on the
//! socket, and the two tasks that serve one logged-in connection.
//!
//! ```text
//!            ┌──────────── reader task ─────────────┐
//!  socket ──►│ read_buf ─► Pdu::decode ─► ConnectionEvents::on_pdu      │
//!            └───────── idle? ─► NOP-Out ping ──────┘
//!            ┌──────────── writer task ─────────────┐
//!  socket ◄──│ encode ◄─ mpsc<Pdu> ◄─ engine.poll_transmit (under lock)│
//!            └──────────────────────────────────────┘
//! ```
//!
//! Digests and the receive limit switch on with the first PDU after the
//! final Login Response (RFC 7143 §13.1, §13.12); during login the
//! defaults (no digests, 8192 bytes) apply.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use busrig_proto::pdu::{Pdu, WireConfig, WireQueue};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::login::{Login, LoginStep};

/// What the connection tasks report to the session that owns them. The
/// session implements this, so the connection depends on nothing of the
/// session and the session alone depends on the connection.
pub trait ConnectionEvents: Send + Sync + 'static {
    /// A PDU arrived on connection `generation`; an error ends the connection.
    fn on_pdu(&self, generation: u64, p: Pdu) -> Result<(), Error>;
    /// Nothing arrived for `interval` (RFC 7143 §11.18 NOP-Out ping); an
    /// error ends the connection.
    fn on_idle(&self, generation: u64, interval: Duration) -> Result<(), Error>;
    /// Connection `generation` broke; both of its tasks are ending.
    fn connection_failed(self: &Arc<Self>, generation: u64, err: Error);
}

/// The writer gathers queued PDUs into one buffer up to this size before
/// a write, so pipelined commands share system calls.
const WRITE_BATCH: usize = 1 << 20;

/// Opens a TCP connection to `addr` (`host:port`) within `limit`.
pub async fn dial(addr: &str, limit: Duration) -> Result<TcpStream, Error> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout {
            what: "TCP connect",
            after: limit,
        })??;
    // Commands are small and latency-bound; Nagle would hold them back.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one whole PDU, keeping any bytes after it in `buf`.
pub async fn read_pdu<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    wire: &WireConfig,
) -> Result<Pdu, Error> {
    loop {
        if let Some(p) = Pdu::decode(buf, wire)? {
            return Ok(p);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the target closed the connection",
            )));
        }
    }
}

/// Runs the login exchange on a fresh connection.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    mut login: Login,
) -> Result<LoginStep, Error> {
    let wire = WireConfig::default();
    let mut req = login.start()?;
    loop {
        s.write_all(&req.to_bytes(&wire)).await?;
        let resp = read_pdu(s, buf, &wire).await?;
        match login.on_pdu(resp)? {
            LoginStep::Send(next) => req = next,
            other => return Ok(other),
        }
    }
}

/// The running tasks of one logged-in connection.
#[derive(Debug)]
pub struct Connection {
    pub generation: u64,
    pub tx: mpsc::UnboundedSender<Pdu>,
    reader: JoinHandle<()>,
}

impl Connection {
    /// Stops both tasks: the reader at once, the writer once it has
    /// written what was queued (its channel closes when `tx` drops).
    pub fn shut_down(self) {
        self.reader.abort();
    }
}

/// Starts the reader and writer tasks for a logged-in stream. `leftover`
/// holds bytes read past the last Login Response.
pub fn spawn<E: ConnectionEvents>(
    stream: TcpStream,
    leftover: BytesMut,
    wire: WireConfig,
    shared: Arc<E>,
    generation: u64,
    nop_interval: Duration,
) -> Connection {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(wr, rx, wire, shared.clone(), generation));
    let reader = tokio::spawn(reader(rd, leftover, wire, shared, generation, nop_interval));
    Connection {
        generation,
        tx,
        reader,
    }
}

async fn writer<W: AsyncWrite + Unpin, E: ConnectionEvents>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Pdu>,
    wire: WireConfig,
    shared: Arc<E>,
    generation: u64,
) {
    // Large Data-Out payloads go to the socket by reference (WireQueue).
    let mut queue = WireQueue::new();
    while let Some(p) = rx.recv().await {
        queue.push(&p, &wire);
        while queue.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(p) => queue.push(&p, &wire),
                Err(_) => break,
            }
        }
        if let Err(e) = write_queue(&mut wr, &mut queue).await {
            shared.connection_failed(generation, Error::Io(e));
            return;
        }
    }
    // The session dropped this connection: say goodbye to the peer's reader.
    let _ = wr.shutdown().await;
}

/// Writes everything in `queue` with vectored writes.
async fn write_queue<W: AsyncWrite + Unpin>(
    wr: &mut W,
    queue: &mut WireQueue,
) -> std::io::Result<()> {
    while !queue.is_empty() {
        let n = {
            let mut iov = [IoSlice::new(&[]); 64];
            let k = queue.slices(&mut iov);
            wr.write_vectored(&iov[..k]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        queue.advance(n);
    }
    Ok(())
}

async fn reader<R: AsyncRead + Unpin, E: ConnectionEvents>(
    mut rd: R,
    mut buf: BytesMut,
    wire: WireConfig,
    shared: Arc<E>,
    generation: u64,
    nop_interval: Duration,
) {
    let err = 'conn: loop {
        loop {
            match Pdu::decode(&mut buf, &wire) {
                Ok(Some(p)) => {
                    if let Err(e) = shared.on_pdu(generation, p) {
                        break 'conn e;
                    }
                }
                Ok(None) => break,
                // At ErrorRecoveryLevel 0 a digest error or an oversized
                // PDU ends the connection; recovery replays what it carried
                // (RFC 7143 §7.1.4.1, §7.8).
                Err(e) => break 'conn Error::Pdu(e),
            }
        }
        let read = if nop_interval.is_zero() {
            rd.read_buf(&mut buf).await
        } else {
            match tokio::time::timeout(nop_interval, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    if let Err(e) = shared.on_idle(generation, nop_interval) {
                        break 'conn e;
                    }
                    continue;
                }
            }
        };
        match read {
            Ok(0) => {
                break Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the target closed the connection",
                ))
            }
            Ok(_) => {}
            Err(e) => break Error::Io(e),
        }
    };
    shared.connection_failed(generation, err);
}
