//! One connection: login, then the full feature phase (RFC 7143 §3.2, §4.2).
//!
//! ```text
//!  socket read half ──> PduReader ──> Conn (actor) ──Out──> writer task ──> socket write half
//!                                      ▲      │
//!                      Event::Done ────┘      └── spawn: one task per SCSI command,
//!                      Event::Tmf                     one per task management function
//! ```
//!
//! The actor owns all per-connection state: the CmdSN window and its queue
//! of out-of-order commands, the commands in progress, the write data being
//! collected, StatSN. Everything the initiator receives passes through it,
//! so StatSN, ExpCmdSN and MaxCmdSN are stamped in the order the PDUs go
//! out. Commands execute concurrently in their own tasks; a command waiting
//! for its CmdSN turn or for Data-Out can be aborted at any time because its
//! task holds the `TaskGuard` (crate::tasks) from the moment the
//! command arrives.
//!
//! At ErrorRecoveryLevel 0 there is no recovery within a command or a
//! connection (RFC 7143 §7.1.5). A write-data violation (bad DataSN, offset
//! or TTT, data beyond the EDTL or the burst) is answered with a Reject and
//! ends that command without a response; a digest error in a command or
//! its data, a DataSegmentLength above our limit, or a header digest error
//! closes the connection (after a Reject where the header can be trusted);
//! other malformed PDUs only get the Reject. None of this touches other
//! sessions.
//!
//! Memory is bounded (docs/limits.md): every byte the connection holds for
//! its initiator is counted in a [`Meter`]. An initiator that stops reading
//! is throttled: above `WRITE_HIGH_WATER` queued bytes the connection stops
//! reading requests. Without room, a READ waits before it runs, a WRITE
//! before its next R2T, an out-of-order request with data is rejected, and
//! MaxCmdSN stops advancing. Write data promised and not sent within
//! `iscsi.data_out_timeout_secs` aborts its command.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrig_proto::negotiation::{SessionParams, TargetNegotiator};
use busrig_proto::pdu::{
    opcode, reject_reason, DataOut, Header, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, R2t,
    Reject, ScsiCommand, TaskMgmtRequest, TextRequest, WireConfig, RESERVED_TAG,
};
use busrig_proto::scsi::report_luns::{decode_lun, encode_lun};
use busrig_proto::scsi::sense::{status, Asc, Sense};
use busrig_proto::serial;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{CodecError, PduReader, PduWriter};
use super::discovery::TextState;
use super::login::{self, Established, SessionKind};
use super::memory::{piece_charge, Meter};
use super::session::{CmdWindow, SessionHandle};
use super::tmf::{self, TmfPlan};
use super::transfer::{reply_pdus, CommandResult, DataError, ReplyShape, WriteLimits, WriteState};
use super::Portal;
use crate::nexus::ItNexus;
use crate::scsi::{ScsiRequest, ScsiTarget};
use crate::tasks::{AbortBy, TaskGuard, TaskInfo};
use crate::write_data::WriteData;

/// How long closing waits for queued responses to reach a slow initiator.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes the writer batches before it flushes.
const WRITE_BATCH: usize = 256 * 1024;

/// Bytes queued for the initiator above which the connection stops
/// reading requests until the initiator has taken some: an initiator that
/// sends but never reads cannot make us buffer without bound.
const WRITE_HIGH_WATER: usize = 8 * 1024 * 1024;

/// Bytes queued for the writer task, shared between the actor (adds) and
/// the writer (subtracts once written), and counted in the connection's
/// memory as well.
pub struct Backlog {
    bytes: AtomicUsize,
    meter: Meter,
}

impl Backlog {
    fn new(meter: Meter) -> Backlog {
        Backlog {
            bytes: AtomicUsize::new(0),
            meter,
        }
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.meter.add(n as u64);
    }

    fn written(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        // Wakes the actor (a permit is kept if it is not waiting yet).
        self.meter.sub(n as u64);
    }

    /// Whether the connection should stop reading requests until the
    /// initiator has taken some of its responses: above `WRITE_HIGH_WATER`,
    /// or above one write batch while the target has no memory left, so
    /// that under pressure no connection queues more than that
    /// (docs/limits.md "Bound"). Only queued responses count here: they
    /// drain whether or not we read, so stopping cannot deadlock.
    fn over(&self) -> bool {
        let queued = self.bytes.load(Ordering::Relaxed);
        queued >= WRITE_HIGH_WATER || (queued >= WRITE_BATCH && !self.meter.pool_has_room())
    }
}

fn wire_size(p: &Pdu) -> usize {
    48 + p.ahs.len() + p.data.len()
}

/// The most a read's Data-In PDUs and its status take in the send queue:
/// one header per segment of at most the initiator's
/// MaxRecvDataSegmentLength, segments cut at burst boundaries, and one
/// SCSI Response.
fn data_in_wire_size(shape: &ReplyShape) -> u64 {
    let edtl = u64::from(shape.edtl);
    let seg = u64::from(shape.initiator_mrdsl.max(512));
    let burst = u64::from(shape.max_burst_length.max(512));
    let headers = edtl.div_ceil(seg) + edtl.div_ceil(burst) + 1;
    edtl + 48 * headers
}

/// Serves one connection from its first byte to its close.
pub async fn serve<S>(portal: Arc<Portal>, stream: S, peer: String, local: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rx = PduReader::new(rd, WireConfig::default());
    let mut tx = PduWriter::new(wr, WireConfig::default());
    let shutdown = portal.shutdown.clone();
    let login_timeout = Duration::from_secs(portal.tuning.login_timeout_secs);
    let login = login::run(&portal, &mut rx, &mut tx, &peer, &shutdown);
    let login = if login_timeout.is_zero() {
        login.await
    } else {
        match tokio::time::timeout(login_timeout, login).await {
            Ok(r) => r,
            Err(_) => {
                // A socket that never logs in holds a place of the portal
                // and of its source address (docs/limits.md).
                tracing::info!(peer = %peer, timeout_secs = login_timeout.as_secs(), "login not completed in time, closing the connection");
                let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, tx.shutdown()).await;
                return;
            }
        }
    };
    let est = match login {
        Ok(est) => est,
        Err(e) => {
            // A refusal was logged by `login::run`, with the names and
            // under its flood limit.
            tracing::debug!(peer = %peer, "login ended: {e}");
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, tx.shutdown()).await;
            return;
        }
    };
    rx.set_config(est.rx_wire);
    tx.set_config(est.tx_wire);
    let handle = est.handle.clone();
    let (target_name, nexus, scsi) = match &est.kind {
        SessionKind::Discovery => ("(discovery)".to_string(), None, None),
        SessionKind::Normal { target, nexus } => {
            // Removed, or its ACL changed to shut this initiator out, while
            // this login completed: the change did not see this session
            // yet, so it ends here (docs/semantics.md "Live
            // reconfiguration").
            let pt = portal
                .target(*target)
                .filter(|pt| pt.def.admits(&handle.initiator));
            let Some(pt) = pt else {
                tracing::info!(initiator = %handle.initiator, target = %nexus.target, peer = %peer, "target removed or ACL changed during login, closing the session");
                portal.sessions.remove(&handle);
                handle.ended.cancel();
                let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, tx.shutdown()).await;
                return;
            };
            (
                pt.def.name.clone(),
                Some(nexus.clone()),
                Some(pt.scsi.clone()),
            )
        }
    };
    tracing::info!(
        initiator = %handle.initiator,
        isid = %handle.isid_hex(),
        target = %target_name,
        peer = %peer,
        tsih = handle.tsih,
        header_digest = est.rx_wire.header_digest,
        data_digest = est.rx_wire.data_digest,
        "login"
    );
    if let (Some(scsi), Some(nexus)) = (&scsi, &nexus) {
        scsi.nexus_created(nexus);
    }

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writer_failed = CancellationToken::new();
    let meter = Meter::new(
        handle.memory.clone(),
        portal.memory.clone(),
        portal.tuning.connection_memory,
    );
    let backlog = Arc::new(Backlog::new(meter.clone()));
    let mut writer = tokio::spawn(writer_task(
        tx,
        out_rx,
        writer_failed.clone(),
        backlog.clone(),
    ));
    let mut conn = Conn::new(
        portal.clone(),
        est,
        scsi.clone(),
        local,
        out_tx,
        backlog,
        meter.clone(),
    );
    let end = conn.run(&mut rx, &writer_failed).await;
    // Every command of the session ends with it (RFC 7143 §6.3.5, ERL 0):
    // dropping the actor's state wakes commands still waiting for their
    // turn or their data; running ones are aborted and waited for.
    let _ = conn.out.send(Out::Close);
    drop(conn);
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        // An initiator that does not read its responses does not keep
        // them in memory either.
        writer.abort();
        let _ = writer.await;
    }
    drop(rx);
    // Nothing of this connection is held any more: whatever is still
    // counted (unsent PDUs, data of commands that ended with it) goes back
    // to the target's pool.
    meter.close();
    if let Some(nexus) = &nexus {
        let n = portal
            .tasks
            .abort_matching(AbortBy::Nexus(nexus), |t| &t.nexus == nexus)
            .await;
        if n > 0 {
            tracing::debug!(nexus = %nexus, aborted = n, "tasks of the closed session aborted");
        }
    }
    if let (Some(scsi), Some(nexus)) = (&scsi, &nexus) {
        scsi.nexus_lost(nexus);
    }
    portal.sessions.remove(&handle);
    handle.ended.cancel();
    tracing::info!(
        initiator = %handle.initiator,
        isid = %handle.isid_hex(),
        target = %target_name,
        peer = %peer,
        tsih = handle.tsih,
        reason = %end,
        "logout"
    );
}

/// What the writer task is asked to do.
#[derive(Debug)]
pub enum Out {
    Pdu(Pdu),
    /// Flush what is queued and close the write side.
    Close,
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut tx: PduWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    failed: CancellationToken,
    backlog: Arc<Backlog>,
) {
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut batch = 0;
        match first {
            Out::Pdu(p) => {
                batch += wire_size(&p);
                tx.feed(p);
            }
            Out::Close => close = true,
        }
        while !close && tx.pending() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(Out::Pdu(p)) => {
                    batch += wire_size(&p);
                    tx.feed(p);
                }
                Ok(Out::Close) => close = true,
                Err(_) => break,
            }
        }
        let flushed = tx.flush().await;
        backlog.written(batch);
        if let Err(e) = flushed {
            tracing::debug!(error = %e, "write failed");
            failed.cancel();
            return;
        }
        if close {
            let _ = tx.shutdown().await;
            return;
        }
    }
    let _ = tx.shutdown().await;
}

/// Why the full feature phase ended.
#[derive(Debug, Clone)]
pub enum End {
    Logout,
    ClosedByInitiator,
    /// Another login reinstated the session, a cold reset or shutdown.
    Killed,
    WriteFailed,
    Protocol(String),
    NopTimeout,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Logout => f.write_str("logout request"),
            End::ClosedByInitiator => f.write_str("connection closed by the initiator"),
            End::Killed => {
                f.write_str("session closed by the target (reinstatement, reset or shutdown)")
            }
            End::WriteFailed => f.write_str("connection write failed"),
            End::Protocol(why) => write!(f, "protocol error: {why}"),
            End::NopTimeout => f.write_str("initiator did not answer the NOP-In ping"),
        }
    }
}

/// Messages from spawned command and TMF tasks to the actor.
pub enum Event {
    /// A command finished; `pdus` is `None` when it was aborted.
    Done {
        itt: u32,
        serial: u64,
        pdus: Option<Vec<Pdu>>,
    },
    /// A task management function finished.
    Tmf { pdu: Pdu, close_targets: Vec<usize> },
    /// A logout's aborts are done: answer it and close.
    Logout { itt: u32 },
}

/// A PDU accepted in the CmdSN window, waiting for its turn.
enum Ordered {
    Scsi {
        itt: u32,
        serial: u64,
    },
    Pdu(Pdu),
    /// A command that was rejected but used up its CmdSN.
    Consumed,
}

/// A SCSI command between arrival and its response.
struct Cmd {
    serial: u64,
    lun: u64,
    shape: ReplyShape,
    delivered: bool,
    /// Counted in the CmdSN window's in-flight commands.
    counted: bool,
    /// Started, i.e. handed to its task with all its data.
    launched: bool,
    /// A TMF of this session aborted it: its response must not go out.
    abort_requested: bool,
    write: Option<WriteState>,
    /// Bytes counted in the connection's memory for this command until it
    /// ends: read data reserved before it runs, write data received and
    /// write data its R2Ts asked for.
    charged: u64,
    /// Waiting in `mem_waiting` for memory to run or to send an R2T.
    waiting_memory: bool,
    /// Since when write data is promised and not yet in (an R2T is out or
    /// unsolicited data is expected); `None` when nothing is awaited.
    awaiting_since: Option<Instant>,
    go: Option<oneshot::Sender<WriteData>>,
    /// A response decided before execution (e.g. too large a transfer).
    early: Option<CommandResult>,
}

/// The full feature phase state of one connection.
pub struct Conn {
    portal: Arc<Portal>,
    handle: Arc<SessionHandle>,
    target: Option<usize>,
    nexus: Option<ItNexus>,
    scsi: Option<Arc<ScsiTarget>>,
    params: SessionParams,
    negotiator: TargetNegotiator,
    cid: u16,
    local: Option<SocketAddr>,
    window: CmdWindow,
    stat_sn: u32,
    out: mpsc::UnboundedSender<Out>,
    backlog: Arc<Backlog>,
    /// This connection's memory and the target's (docs/limits.md).
    meter: Meter,
    /// Delivered commands waiting for memory, oldest first.
    mem_waiting: Vec<u32>,
    /// How long promised write data may take, and when to look next.
    data_timeout: Duration,
    data_check: Option<Instant>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    cmds: HashMap<u32, Cmd>,
    pending: HashMap<u32, Ordered>,
    /// CmdSNs an ABORT TASK named before they arrived (RFC 7143 §11.5.1).
    aborted_ahead: Vec<u32>,
    next_serial: u64,
    next_ttt: u32,
    text: TextState,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    closing: Option<End>,
}

impl Conn {
    fn new(
        portal: Arc<Portal>,
        est: Established,
        scsi: Option<Arc<ScsiTarget>>,
        local: Option<SocketAddr>,
        out: mpsc::UnboundedSender<Out>,
        backlog: Arc<Backlog>,
        meter: Meter,
    ) -> Conn {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (target, nexus) = match &est.kind {
            SessionKind::Discovery => (None, None),
            SessionKind::Normal { target, nexus } => (Some(*target), Some(nexus.clone())),
        };
        let depth = portal.tuning.queue_depth;
        Conn {
            handle: est.handle,
            target,
            nexus,
            scsi,
            params: est.params,
            negotiator: est.negotiator,
            cid: est.cid,
            local,
            window: CmdWindow::new(est.exp_cmd_sn, depth),
            stat_sn: est.stat_sn,
            out,
            backlog,
            meter,
            mem_waiting: Vec::new(),
            data_timeout: Duration::from_secs(portal.tuning.data_out_timeout_secs),
            data_check: None,
            events_tx,
            events_rx,
            cmds: HashMap::new(),
            pending: HashMap::new(),
            aborted_ahead: Vec::new(),
            next_serial: 0,
            next_ttt: rand::random::<u32>() & 0x00ff_ffff,
            text: TextState::default(),
            last_rx: Instant::now(),
            ping: None,
            closing: None,
            portal,
        }
    }

    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        rx: &mut PduReader<R>,
        writer_failed: &CancellationToken,
    ) -> End {
        let kill = self.handle.kill.clone();
        let backlog = self.backlog.clone();
        let wake = self.meter.wake.clone();
        let nop_interval = Duration::from_secs(self.portal.tuning.nop_interval_secs);
        let nop_timeout = Duration::from_secs(self.portal.tuning.nop_timeout_secs);
        loop {
            let nop_deadline = match self.ping {
                _ if nop_interval.is_zero() => None,
                Some((_, sent)) => Some(sent + nop_timeout),
                None => Some(self.last_rx + nop_interval),
            };
            let deadline = match (nop_deadline, self.data_check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let waiting = !self.mem_waiting.is_empty();
            tokio::select! {
                biased;
                _ = kill.cancelled() => return End::Killed,
                _ = writer_failed.cancelled() => return End::WriteFailed,
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                // Memory was released here or in the pool.
                _ = wake.notified(), if backlog.over() || waiting => self.retry_memory(),
                next = rx.next(), if !backlog.over() => match next {
                    None => return End::ClosedByInitiator,
                    Some(Ok(pdu)) => {
                        self.last_rx = Instant::now();
                        // Any PDU shows the initiator is alive; its NOP-Out
                        // answer (RFC 7143 §11.18) is one such PDU.
                        self.ping = None;
                        self.on_pdu(pdu);
                    }
                    Some(Err(e)) => self.on_codec_error(e),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = Instant::now();
                    if self.data_check.is_some_and(|t| t <= now) {
                        self.check_data_timeouts(now);
                        continue;
                    }
                    if nop_deadline.is_none_or(|t| t > now) {
                        continue;
                    }
                    if self.ping.is_some() {
                        tracing::warn!(
                            initiator = %self.handle.initiator,
                            isid = %self.handle.isid_hex(),
                            peer = %self.handle.peer,
                            timeout_secs = nop_timeout.as_secs(),
                            "no answer to NOP-In, closing the connection"
                        );
                        return End::NopTimeout;
                    }
                    self.send_ping();
                }
            }
            if let Some(end) = self.closing.take() {
                return end;
            }
        }
    }

    // ----- sending -----------------------------------------------------

    fn alloc_ttt(&mut self) -> u32 {
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 0;
        }
        self.next_ttt
    }

    /// Stamps StatSN, ExpCmdSN and MaxCmdSN (RFC 7143 §4.2.2) and queues
    /// the PDU. StatSN advances for every PDU that carries status; R2T,
    /// Data-In without status and target-initiated NOP-In carry the next
    /// StatSN without advancing it (§11.7.4, §11.8.3, §11.19.2).
    fn send(&mut self, mut pdu: Pdu) {
        let exp = self.window.exp_cmd_sn();
        let max = self.max_cmd_sn();
        let cur = self.stat_sn;
        let mut advance = true;
        match &mut pdu.header {
            Header::ScsiResponse(h) => (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max),
            Header::DataIn(h) => {
                advance = h.status_present;
                h.stat_sn = if advance { cur } else { 0 };
                (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max);
            }
            Header::NopIn(h) => {
                advance = h.itt != RESERVED_TAG;
                (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max);
            }
            Header::R2t(h) => {
                advance = false;
                (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max);
            }
            Header::TaskMgmtResponse(h) => {
                (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max)
            }
            Header::TextResponse(h) => (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max),
            Header::LogoutResponse(h) => (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max),
            Header::Reject(h) => (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max),
            Header::AsyncMessage(h) => (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn) = (cur, exp, max),
            _ => advance = false,
        }
        if advance {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        tracing::trace!(header = ?pdu.header, data_len = pdu.data.len(), "sending");
        self.backlog.add(wire_size(&pdu));
        // A closed channel means the writer is gone; the loop notices.
        let _ = self.out.send(Out::Pdu(pdu));
    }

    /// MaxCmdSN now: held while this connection or the target has no
    /// memory left, or commands already wait for it, so the initiator
    /// sends no more than it was already allowed (RFC 7143 §4.2.2.1,
    /// docs/limits.md).
    fn max_cmd_sn(&mut self) -> u32 {
        self.window
            .hold(!self.mem_waiting.is_empty() || !self.meter.has_room());
        let max = self.window.max_cmd_sn();
        self.handle.memory.set_max_cmd_sn(max);
        max
    }

    fn send_header(&mut self, header: Header, data: Bytes) {
        self.send(Pdu {
            header,
            ahs: Bytes::new(),
            data,
        });
    }

    /// Rejects a PDU (RFC 7143 §11.17): the data segment is its BHS.
    fn reject(&mut self, reason: u8, bhs: [u8; 48]) {
        let h = Reject {
            reason,
            data_sn_or_r2t_sn: 0,
            ..Default::default()
        };
        self.send_header(Header::Reject(h), Bytes::copy_from_slice(&bhs));
    }

    fn reject_pdu(&mut self, reason: u8, pdu: &Pdu) {
        let bhs = pdu.header.encode_bhs(pdu.ahs.len(), pdu.data.len());
        self.reject(reason, bhs);
    }

    fn close(&mut self, end: End) {
        if self.closing.is_none() {
            self.closing = Some(end);
        }
    }

    /// Target-initiated NOP-In ping (RFC 7143 §11.19): TTT set so the
    /// initiator must answer, ITT reserved, StatSN not advanced.
    fn send_ping(&mut self) {
        let ttt = self.alloc_ttt();
        self.ping = Some((ttt, Instant::now()));
        let h = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            ..Default::default()
        };
        self.send_header(Header::NopIn(h), Bytes::new());
    }

    // ----- receiving ---------------------------------------------------

    fn on_codec_error(&mut self, e: CodecError) {
        match e {
            CodecError::Io(e) => self.close(End::Protocol(format!("read: {e}"))),
            CodecError::Pdu(e) => {
                tracing::warn!(
                    initiator = %self.handle.initiator,
                    peer = %self.handle.peer,
                    error = %e,
                    fatal = e.is_fatal(),
                    "bad PDU"
                );
                let bhs = e.reject();
                if let Some((reason, bhs)) = bhs {
                    self.reject(reason, bhs);
                }
                if e.is_fatal() {
                    self.close(End::Protocol(e.to_string()));
                    return;
                }
                // A digest error in a command or its data loses data that
                // ERL 0 cannot ask for again (RFC 7143 §7.8, §7.1.5).
                let op = bhs.map(|(_, b)| b[0] & 0x3f);
                if matches!(op, Some(opcode::SCSI_COMMAND) | Some(opcode::DATA_OUT)) {
                    self.close(End::Protocol(e.to_string()));
                }
            }
        }
    }

    fn on_pdu(&mut self, pdu: Pdu) {
        tracing::trace!(header = ?pdu.header, data_len = pdu.data.len(), "received");
        let discovery = self.target.is_none();
        match &pdu.header {
            Header::NopOut(h) => {
                let h = h.clone();
                self.on_nop_out(h, pdu)
            }
            Header::ScsiCommand(h) if !discovery => {
                let h = h.clone();
                self.on_scsi_command(h, pdu)
            }
            Header::DataOut(h) if !discovery => {
                let h = h.clone();
                self.on_data_out(&h, &pdu)
            }
            Header::TaskMgmtRequest(h) if !discovery => {
                let h = h.clone();
                if h.immediate {
                    self.on_tmf(h);
                } else {
                    self.order(h.cmd_sn, Ordered::Pdu(pdu));
                }
            }
            Header::TextRequest(h) => {
                if h.immediate {
                    let h = h.clone();
                    self.on_text(&h, &pdu);
                } else {
                    let sn = h.cmd_sn;
                    self.order(sn, Ordered::Pdu(pdu));
                }
            }
            Header::LogoutRequest(h) => {
                if h.immediate {
                    let h = h.clone();
                    self.on_logout(h);
                } else {
                    let sn = h.cmd_sn;
                    self.order(sn, Ordered::Pdu(pdu));
                }
            }
            Header::ScsiCommand(_) | Header::DataOut(_) | Header::TaskMgmtRequest(_) => {
                // A discovery session carries only Text, NOP and Logout
                // (RFC 7143 §4.3, Appendix C).
                self.reject_pdu(reject_reason::PROTOCOL_ERROR, &pdu);
                self.consume_rejected(&pdu.header);
            }
            Header::Snack(_) => {
                // SNACK is only meaningful at ErrorRecoveryLevel > 0; we
                // negotiate 0 (RFC 7143 §11.16, §7.1.5).
                self.reject_pdu(reject_reason::PROTOCOL_ERROR, &pdu);
            }
            Header::LoginRequest(_) => {
                // Login in full feature phase is a protocol error (§6.3).
                self.reject_pdu(reject_reason::PROTOCOL_ERROR, &pdu);
            }
            Header::Unsupported { bhs, opcode } => {
                tracing::debug!(opcode = *opcode, "unsupported opcode");
                let bhs = *bhs;
                self.reject(reject_reason::COMMAND_NOT_SUPPORTED, bhs);
            }
            // Target-to-initiator opcodes sent by an initiator.
            _ => self.reject_pdu(reject_reason::PROTOCOL_ERROR, &pdu),
        }
    }

    /// Lets a rejected non-immediate request use up its CmdSN, so the
    /// window keeps moving.
    fn consume_rejected(&mut self, h: &Header) {
        let (imm, sn) = match h {
            Header::ScsiCommand(c) => (c.immediate, c.cmd_sn),
            Header::TaskMgmtRequest(c) => (c.immediate, c.cmd_sn),
            Header::TextRequest(c) => (c.immediate, c.cmd_sn),
            Header::NopOut(c) => (c.immediate, c.cmd_sn),
            Header::LogoutRequest(c) => (c.immediate, c.cmd_sn),
            _ => return,
        };
        if !imm {
            self.order(sn, Ordered::Consumed);
        }
    }

    /// CmdSN ordering (RFC 7143 §3.2.2.1, §4.2.2.1): a non-immediate
    /// request outside [ExpCmdSN, MaxCmdSN] is silently ignored; inside,
    /// it is delivered when every lower CmdSN has been.
    fn order(&mut self, cmd_sn: u32, item: Ordered) {
        let _ = self.max_cmd_sn();
        if !self.window.accepts(cmd_sn) {
            tracing::debug!(
                cmd_sn,
                exp_cmd_sn = self.window.exp_cmd_sn(),
                initiator = %self.handle.initiator,
                "CmdSN outside the window, ignored"
            );
            if let Ordered::Scsi { itt, serial } = item {
                self.forget(itt, serial);
            }
            return;
        }
        if cmd_sn != self.window.exp_cmd_sn() {
            if self.pending.contains_key(&cmd_sn) {
                // A second PDU with a CmdSN already queued: a duplicate,
                // ignored like any CmdSN that is not expected.
                if let Ordered::Scsi { itt, serial } = item {
                    self.forget(itt, serial);
                }
                return;
            }
            if let Ordered::Pdu(pdu) = &item {
                // Out of order with data (a NOP-Out ping, a Text request):
                // it waits only if there is room for it, otherwise it is
                // rejected and uses up its CmdSN (RFC 7143 §11.17.1).
                let charge = piece_charge(pdu.data.len());
                if charge > 0 {
                    if !self.meter.fits(charge, false) {
                        tracing::debug!(
                            cmd_sn,
                            initiator = %self.handle.initiator,
                            "out-of-order request with data and no memory for it, rejected"
                        );
                        let bhs = pdu.header.encode_bhs(pdu.ahs.len(), pdu.data.len());
                        self.reject(reject_reason::LONG_OP_REJECT, bhs);
                        self.pending.insert(cmd_sn, Ordered::Consumed);
                        return;
                    }
                    self.meter.add(charge);
                }
            }
            self.pending.insert(cmd_sn, item);
            return;
        }
        let mut next = Some(item);
        let mut queued = false;
        while let Some(item) = next {
            self.window.advance();
            let charge = match &item {
                Ordered::Pdu(pdu) if queued => piece_charge(pdu.data.len()),
                _ => 0,
            };
            self.deliver(item);
            self.meter.sub(charge);
            next = self.pending.remove(&self.window.exp_cmd_sn());
            queued = true;
        }
    }

    fn deliver(&mut self, item: Ordered) {
        match item {
            Ordered::Consumed => {}
            Ordered::Scsi { itt, serial } => self.deliver_cmd(itt, serial),
            Ordered::Pdu(pdu) => match pdu.header.clone() {
                Header::TaskMgmtRequest(h) => self.on_tmf(h),
                Header::TextRequest(h) => self.on_text(&h, &pdu),
                Header::LogoutRequest(h) => self.on_logout(h),
                Header::NopOut(h) => self.answer_ping(&h, &pdu),
                _ => {}
            },
        }
    }

    // ----- NOP ---------------------------------------------------------

    fn on_nop_out(&mut self, h: NopOut, pdu: Pdu) {
        if h.itt == RESERVED_TAG {
            // An answer to our NOP-In or a ping that wants no answer
            // (RFC 7143 §11.18.1); it must be immediate and consumes no CmdSN.
            return;
        }
        if h.ttt != RESERVED_TAG {
            // An initiator ping carries TTT 0xffffffff (§11.18.4).
            self.reject_pdu(reject_reason::INVALID_PDU_FIELD, &pdu);
            return;
        }
        if h.immediate {
            self.answer_ping(&h, &pdu);
        } else {
            self.order(h.cmd_sn, Ordered::Pdu(pdu));
        }
    }

    /// NOP-In echoing the ping's data (RFC 7143 §11.19.3), cut to what the
    /// initiator accepts.
    fn answer_ping(&mut self, h: &NopOut, pdu: &Pdu) {
        let limit = self.params.peer_max_recv_data_segment_length as usize;
        let data = pdu.data.slice(..pdu.data.len().min(limit));
        if !data.is_empty() && !self.meter.fits(data.len() as u64, false) {
            // An echo the initiator does not read would pile up: without
            // room the ping is rejected as out of resources instead
            // (RFC 7143 §11.17.1, docs/limits.md).
            self.reject_pdu(reject_reason::LONG_OP_REJECT, pdu);
            return;
        }
        let r = NopIn {
            lun: h.lun,
            itt: h.itt,
            ttt: RESERVED_TAG,
            ..Default::default()
        };
        self.send_header(Header::NopIn(r), data);
    }

    // ----- SCSI commands -------------------------------------------------

    fn write_limits(&self) -> WriteLimits {
        WriteLimits {
            immediate_data: self.params.immediate_data,
            initial_r2t: self.params.initial_r2t,
            first_burst_length: self.params.first_burst_length,
            max_burst_length: self.params.max_burst_length,
            max_outstanding_r2t: u32::from(self.params.max_outstanding_r2t),
        }
    }

    fn on_scsi_command(&mut self, h: ScsiCommand, pdu: Pdu) {
        // Silently ignore a command outside the window before doing any work
        // for it (RFC 7143 §3.2.2.1; libiscsi's iSCSICmdSnTooHigh/TooLow
        // expect no answer at all).
        let _ = self.max_cmd_sn();
        if !h.immediate && !self.window.accepts(h.cmd_sn) {
            tracing::debug!(
                cmd_sn = h.cmd_sn,
                exp_cmd_sn = self.window.exp_cmd_sn(),
                "command outside the CmdSN window ignored"
            );
            return;
        }
        if !h.immediate {
            if let Some(pos) = self.aborted_ahead.iter().position(|sn| *sn == h.cmd_sn) {
                // ABORT TASK named this command before it arrived
                // (RFC 7143 §11.5.1): it is received but never executed.
                self.aborted_ahead.swap_remove(pos);
                self.order(h.cmd_sn, Ordered::Consumed);
                return;
            }
        }
        if self.cmds.contains_key(&h.itt) {
            self.reject_pdu(reject_reason::TASK_IN_PROGRESS, &pdu);
            self.consume_rejected(&pdu.header);
            return;
        }
        let cdb = match pdu.cdb() {
            Ok(cdb) => cdb,
            Err(e) => {
                tracing::debug!(error = %e, "bad CDB AHS");
                self.reject_pdu(reject_reason::INVALID_PDU_FIELD, &pdu);
                self.consume_rejected(&pdu.header);
                return;
            }
        };
        if !h.write && !pdu.data.is_empty() {
            // Data with a command that has no write direction (§11.3.4).
            self.reject_pdu(reject_reason::PROTOCOL_ERROR, &pdu);
            self.consume_rejected(&pdu.header);
            return;
        }
        let shape = ReplyShape {
            itt: h.itt,
            read: h.read,
            write: h.write,
            edtl: h.expected_data_transfer_length,
            initiator_mrdsl: self.params.peer_max_recv_data_segment_length,
            max_burst_length: self.params.max_burst_length,
        };
        // A LUN field no LU has (another addressing method, a second
        // level) finds no unit: u64::MAX is never a configured LUN.
        let lun = decode_lun(h.lun).unwrap_or(u64::MAX);
        let depth = self.portal.tuning.queue_depth as usize;
        let mut early = None;
        let mut write = None;
        // Write data the initiator may send without an R2T: the immediate
        // data, and up to FirstBurstLength if it announced more (F clear).
        let unsolicited = if !h.write {
            0
        } else if h.final_ {
            pdu.data.len() as u64
        } else {
            u64::from(
                self.params
                    .first_burst_length
                    .min(h.expected_data_transfer_length),
            )
        };
        if self.cmds.len() >= depth.saturating_mul(2) {
            // More commands than the task set holds (SAM-5 §5.3.1).
            early = Some(CommandResult {
                status: status::TASK_SET_FULL,
                ..Default::default()
            });
        } else if (h.read && h.write)
            || h.expected_data_transfer_length > self.portal.tuning.max_command_bytes
        {
            // Bidirectional commands are not supported, and a transfer
            // beyond max_command_bytes would need a buffer that large.
            let sense = Sense::new(Asc::INVALID_FIELD_IN_CDB).to_fixed();
            early = Some(CommandResult {
                status: status::CHECK_CONDITION,
                sense: Some(Bytes::copy_from_slice(&sense)),
                ..Default::default()
            });
        } else if h.write && unsolicited > 0 && !self.meter.pool_fits(unsolicited) {
            // Data arrives with this command unasked, and the target has
            // no memory left to hold it: the command is refused and its
            // data dropped; the initiator retries it later (SAM-5 §5.3.1,
            // docs/limits.md).
            early = Some(CommandResult {
                status: status::TASK_SET_FULL,
                ..Default::default()
            });
        } else if h.write {
            match WriteState::new(
                h.expected_data_transfer_length,
                pdu.data.clone(),
                h.final_,
                self.write_limits(),
            ) {
                Ok(w) => write = Some(w),
                Err(e) => {
                    self.data_protocol_error(&pdu, e);
                    self.consume_rejected(&pdu.header);
                    return;
                }
            }
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let mut go = None;
        if early.is_none() {
            let (go_tx, go_rx) = oneshot::channel();
            go = Some(go_tx);
            let (scsi, nexus) = match (&self.scsi, &self.nexus) {
                (Some(s), Some(n)) => (s.clone(), n.clone()),
                _ => return,
            };
            let guard = self.portal.tasks.register(TaskInfo {
                nexus: nexus.clone(),
                lun,
                itt: h.itt,
                cmd_sn: h.cmd_sn,
            });
            let expected_in = if h.read {
                h.expected_data_transfer_length
            } else {
                0
            };
            tokio::spawn(command_task(CommandCtx {
                scsi,
                faults: self.portal.faults().clone(),
                nexus,
                lun,
                cdb,
                expected_in,
                shape,
                serial,
                guard,
                go: go_rx,
                events: self.events_tx.clone(),
            }));
        }
        self.cmds.insert(
            h.itt,
            Cmd {
                serial,
                lun,
                shape,
                delivered: false,
                counted: false,
                launched: false,
                abort_requested: false,
                write,
                charged: 0,
                waiting_memory: false,
                awaiting_since: None,
                go,
                early,
            },
        );
        if self.cmds.get(&h.itt).is_some_and(|c| c.write.is_some()) {
            // The data that may come unasked is counted at once, so the
            // check above covered all of it (later pieces only add what a
            // small piece costs beyond its length).
            let promised = piece_charge(pdu.data.len()).max(unsolicited);
            if let Some(cmd) = self.cmds.get_mut(&h.itt) {
                cmd.charged += promised;
            }
            self.meter.add(promised);
            if !h.final_ {
                // Unsolicited Data-Out is promised from now on, whether or
                // not the command's CmdSN turn has come.
                self.await_data(h.itt, self.last_rx);
            }
        }
        if h.immediate {
            // Immediate commands skip CmdSN ordering (RFC 7143 §3.2.2.1).
            self.deliver_cmd(h.itt, serial);
        } else {
            self.order(h.cmd_sn, Ordered::Scsi { itt: h.itt, serial });
        }
    }

    /// Drops a command that was never delivered (ignored CmdSN).
    fn forget(&mut self, itt: u32, serial: u64) {
        if self.cmds.get(&itt).is_some_and(|c| c.serial == serial) {
            self.remove_cmd(itt);
        }
    }

    /// Ends a command's bookkeeping: its place in the window and its write
    /// budget are released. Dropping its `go` sender ends a task that has
    /// not started, which releases its task guard.
    fn remove_cmd(&mut self, itt: u32) -> Option<Cmd> {
        let cmd = self.cmds.remove(&itt)?;
        if cmd.counted {
            self.window.finished();
        }
        if cmd.waiting_memory {
            self.mem_waiting.retain(|i| *i != itt);
            self.handle.memory.set_waiting(self.mem_waiting.len());
        }
        // Room opened: the release wakes the loop, which retries the
        // commands waiting for memory.
        self.release(cmd.charged);
        Some(cmd)
    }

    fn release(&mut self, n: u64) {
        self.meter.sub(n);
    }

    /// Gives every command waiting for memory another try, oldest first.
    fn retry_memory(&mut self) {
        if self.mem_waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.mem_waiting);
        let mut rest = waiting.into_iter();
        for itt in rest.by_ref() {
            if let Some(c) = self.cmds.get_mut(&itt) {
                c.waiting_memory = false;
            }
            self.progress(itt);
            if self.cmds.get(&itt).is_some_and(|c| c.waiting_memory) {
                // Still no room: the later ones wait their turn.
                break;
            }
        }
        self.mem_waiting.extend(rest);
        self.handle.memory.set_waiting(self.mem_waiting.len());
    }

    fn wait_for_memory(&mut self, itt: u32) {
        if let Some(c) = self.cmds.get_mut(&itt) {
            if !c.waiting_memory {
                c.waiting_memory = true;
                c.awaiting_since = None;
                self.mem_waiting.push(itt);
                self.handle.memory.set_waiting(self.mem_waiting.len());
            }
        }
    }

    /// Aborts the writes whose promised data has not come within
    /// `data_out_timeout_secs`: ERL 0 cannot ask for it again (RFC 7143
    /// §7.1.5), so the command ends with CHECK CONDITION, ABORTED COMMAND,
    /// INITIATOR RESPONSE TIMEOUT and its buffers are freed; data that
    /// still comes for it is discarded as data for no command.
    fn check_data_timeouts(&mut self, now: Instant) {
        let timeout = self.data_timeout;
        let expired: Vec<u32> = self
            .cmds
            .iter()
            .filter(|(_, c)| c.awaiting_since.is_some_and(|t| t + timeout <= now))
            .map(|(i, _)| *i)
            .collect();
        for itt in expired {
            let Some(cmd) = self.remove_cmd(itt) else {
                continue;
            };
            let received = cmd.write.as_ref().map_or(0, WriteState::received);
            tracing::warn!(
                initiator = %self.handle.initiator,
                isid = %self.handle.isid_hex(),
                peer = %self.handle.peer,
                itt,
                expected = cmd.shape.edtl,
                received,
                timeout_secs = timeout.as_secs(),
                "write data did not arrive in time, command aborted"
            );
            let sense = Sense::new(Asc::INITIATOR_RESPONSE_TIMEOUT).to_fixed();
            let outcome = CommandResult {
                status: status::CHECK_CONDITION,
                sense: Some(Bytes::copy_from_slice(&sense)),
                ..Default::default()
            };
            for p in reply_pdus(&cmd.shape, outcome) {
                self.send(p);
            }
        }
        self.data_check = self
            .cmds
            .values()
            .filter_map(|c| c.awaiting_since)
            .min()
            .map(|t| t + timeout);
    }

    /// Starts the clock of a write that now awaits data.
    fn await_data(&mut self, itt: u32, now: Instant) {
        if self.data_timeout.is_zero() {
            return;
        }
        let Some(cmd) = self.cmds.get_mut(&itt) else {
            return;
        };
        cmd.awaiting_since = Some(now);
        let at = now + self.data_timeout;
        if self.data_check.is_none_or(|t| at < t) {
            self.data_check = Some(at);
        }
    }

    fn deliver_cmd(&mut self, itt: u32, serial: u64) {
        let Some(cmd) = self.cmds.get_mut(&itt).filter(|c| c.serial == serial) else {
            // Aborted while it waited for its turn.
            return;
        };
        cmd.delivered = true;
        if let Some(outcome) = cmd.early.take() {
            let shape = cmd.shape;
            self.remove_cmd(itt);
            for p in reply_pdus(&shape, outcome) {
                self.send(p);
            }
            return;
        }
        cmd.counted = true;
        self.window.started();
        self.progress(itt);
    }

    /// Starts a delivered command once its data is in and its memory
    /// counted, or asks for more data as far as memory allows.
    fn progress(&mut self, itt: u32) {
        let mut r2ts = Vec::new();
        let mut launch = None;
        let mut no_memory = false;
        let mut awaiting = false;
        {
            let mut ttt = self.next_ttt;
            let others = self.meter.conn().used();
            let Some(cmd) = self.cmds.get_mut(&itt) else {
                return;
            };
            if !cmd.delivered || cmd.launched || cmd.abort_requested || cmd.waiting_memory {
                return;
            }
            // Nothing else of this connection is counted (no other
            // command, nothing queued to send): only the target's limit
            // applies, so one command larger than the connection's limit
            // still runs.
            let alone = others <= cmd.charged;
            match cmd.write.as_mut() {
                Some(w) if !w.is_complete() => {
                    let mut budget = self.meter.room(alone);
                    let before = budget;
                    let specs = w.next_r2ts(&mut budget, || {
                        ttt = ttt.wrapping_add(1);
                        if ttt == RESERVED_TAG {
                            ttt = 0;
                        }
                        ttt
                    });
                    let used = before - budget;
                    cmd.charged += used;
                    self.meter.add(used);
                    let outstanding = w.ttts().next().is_some();
                    if specs.is_empty() && !outstanding && w.wants_r2t() {
                        no_memory = true;
                        let need = w.next_r2t_len().map_or(0, u64::from);
                        if self.meter.park_for(need, alone) {
                            // Released in the meantime: try again soon.
                            self.meter.wake.notify_one();
                        }
                    } else {
                        // Unsolicited data or R2T'd data is on its way.
                        awaiting = true;
                    }
                    r2ts = specs.into_iter().map(|s| (cmd.shape.itt, s)).collect();
                }
                Some(_) => {
                    let data = cmd
                        .write
                        .take()
                        .map(WriteState::into_data)
                        .unwrap_or_default();
                    cmd.awaiting_since = None;
                    launch = cmd.go.take().map(|g| (g, data));
                    cmd.launched = true;
                }
                None => {
                    // A read's data is counted before it is produced, with
                    // the headers of the Data-In PDUs that will carry it.
                    let need = if cmd.shape.read && cmd.shape.edtl > 0 {
                        data_in_wire_size(&cmd.shape)
                    } else {
                        0
                    };
                    if need > 0 && cmd.charged == 0 {
                        if self.meter.try_take(need, alone) {
                            cmd.charged = need;
                        } else {
                            no_memory = true;
                        }
                    }
                    if !no_memory {
                        launch = cmd.go.take().map(|g| (g, WriteData::new()));
                        cmd.launched = true;
                    }
                }
            }
            self.next_ttt = ttt;
        }
        if no_memory {
            self.wait_for_memory(itt);
        } else if awaiting {
            let since = self.cmds.get(&itt).and_then(|c| c.awaiting_since);
            if since.is_none() || !r2ts.is_empty() {
                self.await_data(itt, Instant::now());
            }
        }
        if let Some((go, data)) = launch {
            // If the task already ended (aborted), its Done event cleans up.
            let _ = go.send(data);
        }
        let lun_raw = encode_lun(self.cmds.get(&itt).map(|c| c.lun).unwrap_or(0));
        for (itt, s) in r2ts {
            let h = R2t {
                lun: lun_raw,
                itt,
                ttt: s.ttt,
                r2t_sn: s.r2t_sn,
                buffer_offset: s.offset,
                desired_data_transfer_length: s.len,
                ..Default::default()
            };
            self.send_header(Header::R2t(h), Bytes::new());
        }
    }

    fn on_data_out(&mut self, h: &DataOut, pdu: &Pdu) {
        let Some(cmd) = self.cmds.get_mut(&h.itt) else {
            // Data for a command that was aborted, ignored (CmdSN outside
            // the window) or already answered: discarded (RFC 7143 §11.5.1
            // lets data for aborted tasks arrive after the abort).
            tracing::debug!(itt = h.itt, "Data-Out for no command, discarded");
            return;
        };
        if cmd.early.is_some() || cmd.abort_requested {
            return;
        }
        let Some(w) = cmd.write.as_mut() else {
            if cmd.launched && cmd.shape.write {
                let e = DataError::BeyondEdtl {
                    end: u64::from(h.buffer_offset) + pdu.data.len() as u64,
                    edtl: cmd.shape.edtl,
                };
                self.data_protocol_error(pdu, e);
            } else {
                self.data_protocol_error(pdu, DataError::UnsolicitedNotAllowed);
            }
            return;
        };
        if let Err(e) = w.on_data_out(h, pdu.data.clone()) {
            self.data_protocol_error(pdu, e);
            return;
        }
        // Unsolicited data was counted with its command, solicited data
        // by its R2T; what remains is what a small piece costs beyond its
        // length (memory::piece_charge).
        let len = pdu.data.len();
        let charge = piece_charge(len) - len as u64;
        cmd.charged += charge;
        if cmd.awaiting_since.is_some() {
            // Data came: the initiator is not stalling this command.
            cmd.awaiting_since = Some(self.last_rx);
        }
        self.meter.add(charge);
        self.progress(h.itt);
    }

    /// A write-data violation: the PDU is rejected as a protocol error
    /// (RFC 7143 §11.17.1) and the command ends without a response. The
    /// initiator fails the command when it sees the Reject (libiscsi's
    /// iSCSIDataSnInvalid expects exactly that, on the same connection);
    /// ERL 0 has no way to resume it (RFC 7143 §7.1.5), and any further
    /// Data-Out for it is discarded as data for no command.
    fn data_protocol_error(&mut self, pdu: &Pdu, e: DataError) {
        let itt = pdu.header.itt();
        tracing::warn!(
            initiator = %self.handle.initiator,
            isid = %self.handle.isid_hex(),
            peer = %self.handle.peer,
            itt,
            error = %e,
            "write data protocol error, command rejected"
        );
        self.reject_pdu(reject_reason::PROTOCOL_ERROR, pdu);
        self.remove_cmd(itt);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Done { itt, serial, pdus } => {
                let Some(cmd) = self.cmds.get_mut(&itt).filter(|c| c.serial == serial) else {
                    return;
                };
                let suppressed = cmd.abort_requested;
                // The command's memory is released once its response is
                // queued (and counted as such), so the data never goes
                // uncounted in between.
                let charged = std::mem::take(&mut cmd.charged);
                self.remove_cmd(itt);
                match pdus {
                    // An aborted task gets no response; the TMF response
                    // speaks for it (RFC 7143 §11.5.1, SAM-5 §7.2).
                    Some(pdus) if !suppressed => {
                        for p in pdus {
                            self.send(p);
                        }
                    }
                    _ => {}
                }
                self.release(charged);
            }
            Event::Logout { itt } => {
                let r = LogoutResponse {
                    response: 0,
                    itt,
                    ..Default::default()
                };
                self.send_header(Header::LogoutResponse(r), Bytes::new());
                self.close(End::Logout);
            }
            Event::Tmf { pdu, close_targets } => {
                self.send(pdu);
                for t in close_targets {
                    // TARGET COLD RESET: the target drops every session
                    // after answering (RFC 7143 §11.5.1).
                    for s in self.portal.sessions.select(|s| s.target == Some(t)) {
                        if !Arc::ptr_eq(&s, &self.handle) {
                            s.kill.cancel();
                        }
                    }
                    if self.target == Some(t) {
                        self.close(End::Killed);
                    }
                }
            }
        }
    }

    // ----- task management ----------------------------------------------

    fn on_tmf(&mut self, h: TaskMgmtRequest) {
        let (Some(scsi), Some(nexus), Some(target)) =
            (self.scsi.clone(), self.nexus.clone(), self.target)
        else {
            return;
        };
        // A LUN field no LU has (another addressing method, a second
        // level) finds no unit: u64::MAX is never a configured LUN.
        let lun = decode_lun(h.lun).unwrap_or(u64::MAX);
        tracing::info!(
            initiator = %self.handle.initiator,
            isid = %self.handle.isid_hex(),
            target = %nexus.target,
            peer = %self.handle.peer,
            function = tmf::name(h.function),
            lun,
            referenced_task_tag = h.referenced_task_tag,
            "task management request"
        );
        let lun_known = scsi.lun_ids().contains(&lun);
        let plan = match h.function {
            tmf::ABORT_TASK => {
                let rtt = h.referenced_task_tag;
                match self.cmds.get_mut(&rtt) {
                    Some(cmd) => {
                        cmd.abort_requested = true;
                        if cmd.early.is_some() {
                            // Never registered: nothing runs, forget it now.
                            self.remove_cmd(rtt);
                            TmfPlan::Respond(tmf::RESP_COMPLETE)
                        } else {
                            TmfPlan::AbortTask { itt: rtt }
                        }
                    }
                    None => {
                        // RFC 7143 §11.5.1: a referenced command that has
                        // not arrived but whose CmdSN is in the window and
                        // before the TMF's counts as existing; it is
                        // discarded when it arrives. Anything else (e.g. a
                        // command already answered) does not exist.
                        let ref_sn = h.ref_cmd_sn;
                        if self.window.accepts(ref_sn)
                            && !self.pending.contains_key(&ref_sn)
                            && serial::lt(ref_sn, h.cmd_sn)
                        {
                            // Once per CmdSN, so repeated TMFs cannot grow
                            // the list beyond the window.
                            if !self.aborted_ahead.contains(&ref_sn) {
                                self.aborted_ahead.push(ref_sn);
                            }
                            TmfPlan::Respond(tmf::RESP_COMPLETE)
                        } else {
                            TmfPlan::Respond(tmf::RESP_NO_TASK)
                        }
                    }
                }
            }
            tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET | tmf::LOGICAL_UNIT_RESET if !lun_known => {
                TmfPlan::Respond(tmf::RESP_NO_LUN)
            }
            tmf::ABORT_TASK_SET => {
                self.mark_aborted(|c| c.lun == lun);
                TmfPlan::AbortTaskSet {
                    lun,
                    all_initiators: false,
                }
            }
            tmf::CLEAR_TASK_SET => {
                self.mark_aborted(|c| c.lun == lun);
                TmfPlan::AbortTaskSet {
                    lun,
                    all_initiators: true,
                }
            }
            tmf::LOGICAL_UNIT_RESET => {
                self.mark_aborted(|c| c.lun == lun);
                TmfPlan::LunReset { lun }
            }
            tmf::TARGET_WARM_RESET | tmf::TARGET_COLD_RESET => {
                self.mark_aborted(|_| true);
                TmfPlan::TargetReset {
                    cold: h.function == tmf::TARGET_COLD_RESET,
                    target,
                }
            }
            // ACA is not supported, so there is nothing to clear (§11.5.1).
            tmf::CLEAR_ACA => TmfPlan::Respond(tmf::RESP_NOT_SUPPORTED),
            // Task reassignment needs ErrorRecoveryLevel 2 (§11.5.1, §6.2.2).
            tmf::TASK_REASSIGN => TmfPlan::Respond(tmf::RESP_REASSIGN_UNSUPPORTED),
            _ => TmfPlan::Respond(tmf::RESP_REJECTED),
        };
        let ctx = tmf::TmfCtx {
            portal: self.portal.clone(),
            scsi,
            nexus,
            itt: h.itt,
            function: h.function,
            initiator: self.handle.initiator.clone(),
            isid: self.handle.isid_hex(),
            peer: self.handle.peer.clone(),
        };
        match plan {
            TmfPlan::Respond(code) => {
                let (pdu, _) = tmf::response(&ctx, code, Vec::new());
                self.send(pdu);
            }
            plan => {
                let events = self.events_tx.clone();
                tokio::spawn(async move {
                    let (pdu, close_targets) = tmf::execute(ctx, plan).await;
                    let _ = events.send(Event::Tmf { pdu, close_targets });
                });
            }
        }
    }

    fn mark_aborted(&mut self, pred: impl Fn(&Cmd) -> bool) {
        let mut early_done = Vec::new();
        for (itt, c) in self.cmds.iter_mut() {
            if pred(c) {
                c.abort_requested = true;
                if c.early.is_some() {
                    early_done.push(*itt);
                }
            }
        }
        for itt in early_done {
            self.remove_cmd(itt);
        }
    }

    // ----- text and logout ----------------------------------------------

    fn on_text(&mut self, h: &TextRequest, pdu: &Pdu) {
        let ctx = super::discovery::TextCtx {
            portal: &self.portal,
            initiator: &self.handle.initiator,
            session_target: self.target,
            local: self.local,
            peer_mrdsl: self.params.peer_max_recv_data_segment_length,
        };
        let mut next_ttt = self.next_ttt;
        let result = self
            .text
            .on_request(&ctx, &mut self.negotiator, h, &pdu.data, || {
                next_ttt = next_ttt.wrapping_add(1);
                if next_ttt == RESERVED_TAG {
                    next_ttt = 0;
                }
                next_ttt
            });
        self.next_ttt = next_ttt;
        match result {
            Ok((header, data)) => self.send_header(Header::TextResponse(header), data),
            Err(reason) => {
                tracing::debug!(reason = %reason, "text request rejected");
                self.reject_pdu(reject_reason::PROTOCOL_ERROR, pdu);
            }
        }
    }

    fn on_logout(&mut self, h: LogoutRequest) {
        let response = match h.reason {
            // Close the session, or this connection, its only one.
            0 => 0,
            1 if h.cid == self.cid => 0,
            // CID not found (RFC 7143 §11.15.1).
            1 => 1,
            // Removing a connection for recovery needs ERL 2 (§11.15.1:
            // "connection recovery is not supported").
            2 => 2,
            _ => {
                let pdu = Pdu {
                    header: Header::LogoutRequest(h),
                    ahs: Bytes::new(),
                    data: Bytes::new(),
                };
                self.reject_pdu(reject_reason::INVALID_PDU_FIELD, &pdu);
                return;
            }
        };
        tracing::debug!(initiator = %self.handle.initiator, reason = h.reason, response, "logout request");
        if response != 0 {
            let r = LogoutResponse {
                response,
                itt: h.itt,
                ..Default::default()
            };
            self.send_header(Header::LogoutResponse(r), Bytes::new());
            return;
        }
        // The session ends with the logout: its outstanding commands are
        // aborted, and the response goes out once none of them can run
        // any more (RFC 7143 §11.14.1).
        self.mark_aborted(|_| true);
        let idle: Vec<u32> = self
            .cmds
            .iter()
            .filter(|(_, c)| !c.launched)
            .map(|(i, _)| *i)
            .collect();
        for itt in idle {
            self.remove_cmd(itt);
        }
        let events = self.events_tx.clone();
        let tasks = self.portal.tasks.clone();
        let nexus = self.nexus.clone();
        let itt = h.itt;
        tokio::spawn(async move {
            if let Some(nexus) = nexus {
                tasks
                    .abort_matching(AbortBy::Nexus(&nexus), |t| t.nexus == nexus)
                    .await;
            }
            let _ = events.send(Event::Logout { itt });
        });
    }
}

/// Everything a command's task needs.
struct CommandCtx {
    scsi: Arc<ScsiTarget>,
    faults: Arc<crate::fault::Faults>,
    nexus: ItNexus,
    lun: u64,
    cdb: Vec<u8>,
    expected_in: u32,
    shape: ReplyShape,
    serial: u64,
    guard: TaskGuard,
    go: oneshot::Receiver<WriteData>,
    events: mpsc::UnboundedSender<Event>,
}

/// One SCSI command: waits for its turn and data (abortable), executes,
/// and hands its response PDUs to the connection.
async fn command_task(ctx: CommandCtx) {
    let CommandCtx {
        scsi,
        faults,
        nexus,
        lun,
        cdb,
        expected_in,
        shape,
        serial,
        guard,
        go,
        events,
    } = ctx;
    let itt = shape.itt;
    let data_out = tokio::select! {
        biased;
        _ = guard.aborted() => {
            return end_aborted(guard, &faults, &nexus.initiator, shape, serial, events).await;
        }
        go = go => match go {
            Ok(data) => data,
            // The connection dropped the command (ignored, or the
            // connection is closing): nothing to answer.
            Err(_) => return,
        },
    };
    // Fault injection: a frozen path holds the command (unanswered, not
    // lost) until thawed; a delayed path waits first. Aborts still work.
    tokio::select! {
        biased;
        _ = guard.aborted() => {
            return end_aborted(guard, &faults, &nexus.initiator, shape, serial, events).await;
        }
        _ = faults.gate(&nexus.initiator) => {}
    }
    let reply = scsi
        .execute(ScsiRequest {
            nexus: &nexus,
            lun,
            cdb: &cdb,
            data_out,
            expected_in,
            task: &guard,
        })
        .await;
    // Aborted while it ran: its own nexus's abort silences it; another's
    // (TAS) lets it answer, TASK ABORTED if the executor stopped early.
    let pdus = if guard.is_aborted() && !guard.aborted_by_another() {
        None
    } else {
        let outcome = CommandResult {
            status: reply.status,
            sense: reply.sense,
            data_in: reply.data_in,
            data_out_wanted: reply.data_out_wanted,
        };
        Some(reply_pdus(&shape, outcome))
    };
    // Sent before the guard is dropped, so a TMF that waited for this task
    // answers after the connection has seen the outcome.
    let _ = events.send(Event::Done { itt, serial, pdus });
    drop(guard);
}

/// Ends a task aborted before it ran. Aborted by its own I_T nexus, it
/// gets no response: the TMF response speaks for it (RFC 7143 §11.5.1).
/// Aborted by another nexus or the control plane, it is answered TASK
/// ABORTED (the control mode page's TAS bit, SPC-4 §7.5.8), once its path
/// lets answers through.
async fn end_aborted(
    guard: TaskGuard,
    faults: &crate::fault::Faults,
    initiator: &str,
    shape: ReplyShape,
    serial: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    let itt = shape.itt;
    if !guard.aborted_by_another() {
        let _ = events.send(Event::Done {
            itt,
            serial,
            pdus: None,
        });
        return;
    }
    // Nothing of this task reaches the medium any more: the abort that
    // waits for it may complete while a frozen path holds the answer.
    drop(guard);
    faults.gate(initiator).await;
    let outcome = CommandResult {
        status: status::TASK_ABORTED,
        ..Default::default()
    };
    let _ = events.send(Event::Done {
        itt,
        serial,
        pdus: Some(reply_pdus(&shape, outcome)),
    });
}
