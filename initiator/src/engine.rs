//! The sans-IO session engine: everything a full-feature-phase connection
//! does between "the caller wants a command run" and "these PDUs go on the
//! wire", without touching a socket or a clock (docs/architecture.md, convention 1).
//!
//! ```text
//!   submit(Request) ──► queue ──(CmdSN window open)──► transmit: Command (+ immediate data)
//!                                                         + unsolicited Data-Out
//!   handle(Pdu) ◄── R2T ───────────────────────────────► transmit: Data-Out sequence
//!               ◄── Data-In* / SCSI Response ──────────► completion(ITT, Answer)
//!               ◄── NOP-In (TTT != ffffffff) ──────────► transmit: NOP-Out reply
//!               ◄── Async Message ─────────────────────► event
//! ```
//!
//! Numbering follows RFC 7143 §4.2.2: every non-immediate command takes
//! the next CmdSN and may only be sent while CmdSN <= MaxCmdSN (serial
//! arithmetic, RFC 1982); immediate commands carry the current CmdSN
//! without advancing it. ExpStatSN acknowledges every status the target
//! sent. Tasks are named by Initiator Task Tags the engine hands out.
//!
//! On connection loss the engine keeps every unanswered task; after a new
//! login ([`Engine::resume`]) they are sent again in their original order
//! with fresh CmdSNs (session reinstatement, RFC 7143 §6.3.5: the target
//! drops the old session's tasks, so nothing runs twice on its side unless
//! it had already run and only its response was lost).

use std::collections::{BTreeMap, VecDeque};

use busrig_proto::pdu::{
    self, tmf, AsyncMessage, DataIn, DataOut, Header, LogoutRequest, NopIn, NopOut, Pdu, R2t,
    Reject, ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, BHS_LEN, RESERVED_TAG,
};
use busrig_proto::scsi::sense::{status, Sense};
use busrig_proto::serial;
use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::scsi::{Command, DataDirection};

/// Negotiated values that shape what the engine sends (RFC 7143 §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The target's MaxRecvDataSegmentLength: the most data we may put in one PDU.
    pub max_xmit_data_segment_length: u32,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
}

impl Default for Limits {
    /// RFC 7143 defaults: 8192-byte segments, 64 KiB first burst, 256 KiB
    /// bursts, ImmediateData=Yes, InitialR2T=Yes.
    fn default() -> Limits {
        Limits {
            max_xmit_data_segment_length: 8192,
            first_burst_length: 65536,
            max_burst_length: 262_144,
            immediate_data: true,
            initial_r2t: true,
        }
    }
}

/// Sequence numbers at the start of full feature phase, from the last login response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqNumbers {
    pub cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SAM-5 task attributes as RFC 7143 §11.3.1 encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAttr {
    Untagged = 0,
    #[default]
    Simple = 1,
    Ordered = 2,
    HeadOfQueue = 3,
}

/// What a caller asks the session to do.
#[derive(Debug, Clone)]
pub enum Request {
    /// A SCSI command to the LUN field `lun` (already in wire form).
    Scsi {
        lun: u64,
        cdb: Command,
        attr: TaskAttr,
    },
    /// A task management function (RFC 7143 §11.5); `referenced` is the ITT
    /// of the task ABORT TASK names, and `ref_cmd_sn` its CmdSN when the
    /// caller already forgot the task (otherwise the engine looks it up).
    TaskMgmt {
        function: u8,
        lun: u64,
        referenced: Option<u32>,
        ref_cmd_sn: Option<u32>,
    },
    /// A NOP-Out ping (RFC 7143 §11.18) that the target answers with a NOP-In.
    Ping,
    /// A text exchange (RFC 7143 §11.10), for example `SendTargets=All`.
    Text { data: Bytes },
    /// Logout (RFC 7143 §11.14): 0 close the session, 1 close the connection.
    Logout { reason: u8 },
}

/// The SCSI outcome of a command the target completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiOutcome {
    /// SCSI status byte (SAM-5 §5.3.1).
    pub status: u8,
    /// The raw sense bytes, if any, and their decoded form.
    pub sense_data: Bytes,
    pub sense: Option<Sense>,
    /// Data-In received (for reads), cut to the residual.
    pub data: Bytes,
    /// Residual count: positive for underflow, negative for overflow.
    pub residual: i64,
}

impl ScsiOutcome {
    /// GOOD (or CONDITION MET) gives the data; every other status becomes
    /// its own [`Error`] variant.
    pub fn into_result(self) -> Result<Bytes, Error> {
        match self.status {
            status::GOOD | status::CONDITION_MET => Ok(self.data),
            status::CHECK_CONDITION => Err(Error::CheckCondition { sense: self.sense }),
            status::RESERVATION_CONFLICT => Err(Error::ReservationConflict),
            status::BUSY => Err(Error::Busy),
            status::TASK_SET_FULL => Err(Error::TaskSetFull),
            status::ACA_ACTIVE => Err(Error::AcaActive),
            status::TASK_ABORTED => Err(Error::TaskAborted),
            other => Err(Error::Status(other)),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Scsi(ScsiOutcome),
    /// The TMF response code (RFC 7143 §11.6.1).
    TaskMgmt(u8),
    Pong(Bytes),
    Text(Bytes),
    /// Logout response code, Time2Wait and Time2Retain (RFC 7143 §11.15).
    Logout {
        response: u8,
        time2wait: u16,
        time2retain: u16,
    },
}

/// Something the target said that is not an answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A SCSI asynchronous event report with its sense data (AsyncEvent 0).
    ScsiEvent { lun: u64, sense: Option<Sense> },
    /// The target asks us to log out within `within_secs` (AsyncEvent 1).
    LogoutRequested { within_secs: u16 },
    /// The target will drop this connection (AsyncEvent 2) or all of the
    /// session's connections (AsyncEvent 3); reconnect after `time2wait`.
    ConnectionDropping { time2wait: u16, time2retain: u16 },
    /// The target asks for renegotiation (AsyncEvent 4).
    RenegotiationRequested,
}

#[derive(Debug)]
struct Task {
    req: Request,
    /// Order of submission, for replay after reconnecting.
    seq: u64,
    /// The CmdSN the command went out with, once sent.
    cmd_sn: Option<u32>,
    /// Data-In collected so far (reads) and the highest byte seen.
    data_in: BytesMut,
    data_in_len: usize,
    /// Text response accumulated across continuation PDUs (RFC 7143 §11.11.2).
    text: BytesMut,
}

/// The Data-Out bytes of a write command.
fn write_data(req: &Request) -> Option<&Bytes> {
    match req {
        Request::Scsi {
            cdb:
                Command {
                    data: DataDirection::Write(d),
                    ..
                },
            ..
        } => Some(d),
        _ => None,
    }
}

/// What [`Engine::cancel`] tells the caller about a task it gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    pub lun: u64,
    /// Set when the command reached the wire, so an ABORT TASK can name it.
    pub cmd_sn: Option<u32>,
}

/// The state of one session's full feature phase.
#[derive(Debug)]
pub struct Engine {
    limits: Limits,
    sn: SeqNumbers,
    connected: bool,
    next_itt: u32,
    next_seq: u64,
    tasks: BTreeMap<u32, Task>,
    /// ITTs of non-immediate requests waiting for the CmdSN window.
    queue: VecDeque<u32>,
    /// ITTs of immediate requests (TMF, ping, logout) not yet sent.
    urgent: VecDeque<u32>,
    out: VecDeque<Pdu>,
    done: VecDeque<(u32, Result<Answer, Error>)>,
    events: VecDeque<Event>,
}

fn pdu(header: Header, data: Bytes) -> Pdu {
    Pdu {
        header,
        ahs: Bytes::new(),
        data,
    }
}

fn is_immediate(req: &Request) -> bool {
    // TMFs, pings and logout go immediately so they are not stuck behind a
    // closed CmdSN window (RFC 7143 §3.2.2.1: the target may deliver them
    // ahead of queued commands, which is what an abort or a reset needs).
    matches!(
        req,
        Request::TaskMgmt { .. } | Request::Ping | Request::Logout { .. }
    )
}

impl Engine {
    pub fn new(limits: Limits, sn: SeqNumbers) -> Engine {
        Engine {
            limits,
            sn,
            connected: true,
            next_itt: 1,
            next_seq: 0,
            tasks: BTreeMap::new(),
            queue: VecDeque::new(),
            urgent: VecDeque::new(),
            out: VecDeque::new(),
            done: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn seq_numbers(&self) -> SeqNumbers {
        self.sn
    }

    /// Number of tasks not yet answered.
    pub fn outstanding(&self) -> usize {
        self.tasks.len()
    }

    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    /// Accepts a request and returns its Initiator Task Tag. Its PDUs come
    /// out of [`Engine::poll_transmit`] when the CmdSN window allows.
    pub fn submit(&mut self, req: Request) -> u32 {
        let itt = self.alloc_itt();
        if let Request::Scsi { cdb, .. } = &req {
            if cdb.bytes.is_empty() || cdb.bytes.len() > 16 {
                // Longer CDBs need an Extended CDB AHS (RFC 7143 §11.2.2.3),
                // which no command this initiator builds requires.
                self.done.push_back((
                    itt,
                    Err(Error::InvalidRequest(format!(
                        "a CDB of {} bytes",
                        cdb.bytes.len()
                    ))),
                ));
                return itt;
            }
        }
        let urgent = is_immediate(&req);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tasks.insert(
            itt,
            Task {
                req,
                seq,
                cmd_sn: None,
                data_in: BytesMut::new(),
                data_in_len: 0,
                text: BytesMut::new(),
            },
        );
        if urgent {
            self.urgent.push_back(itt);
        } else {
            self.queue.push_back(itt);
        }
        itt
    }

    /// Forgets a task (timed out or no longer wanted). A late answer for
    /// its tag is ignored.
    pub fn cancel(&mut self, itt: u32) -> Option<Cancelled> {
        let t = self.tasks.remove(&itt)?;
        self.queue.retain(|i| *i != itt);
        self.urgent.retain(|i| *i != itt);
        let lun = match &t.req {
            Request::Scsi { lun, .. } | Request::TaskMgmt { lun, .. } => *lun,
            _ => 0,
        };
        Some(Cancelled {
            lun,
            cmd_sn: t.cmd_sn,
        })
    }

    /// The next PDU to write, in order. Call until `None` after every
    /// `submit` and `handle`.
    pub fn poll_transmit(&mut self) -> Option<Pdu> {
        if !self.connected {
            return None;
        }
        loop {
            if let Some(p) = self.out.pop_front() {
                return Some(p);
            }
            if let Some(itt) = self.urgent.pop_front() {
                self.start(itt);
                continue;
            }
            // RFC 7143 §4.2.2.1: a non-immediate command may be sent only
            // while its CmdSN is within [ExpCmdSN, MaxCmdSN].
            if !self.queue.is_empty() && serial::le(self.sn.cmd_sn, self.sn.max_cmd_sn) {
                let itt = self.queue.pop_front().expect("checked non-empty");
                self.start(itt);
                continue;
            }
            return None;
        }
    }

    /// The next answered request.
    pub fn poll_completion(&mut self) -> Option<(u32, Result<Answer, Error>)> {
        self.done.pop_front()
    }

    /// The next unsolicited event from the target.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn complete(&mut self, itt: u32, r: Result<Answer, Error>) {
        if self.tasks.remove(&itt).is_some() {
            self.done.push_back((itt, r));
        }
    }

    /// Builds the PDUs for one request and stamps its CmdSN.
    fn start(&mut self, itt: u32) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let immediate = is_immediate(&task.req);
        let cmd_sn = self.sn.cmd_sn;
        if !immediate {
            self.sn.cmd_sn = self.sn.cmd_sn.wrapping_add(1);
        }
        task.cmd_sn = Some(cmd_sn);
        let req = task.req.clone();
        let exp_stat_sn = self.sn.exp_stat_sn;
        match &req {
            Request::Scsi { lun, cdb, attr } => {
                let mut cdb16 = [0u8; 16];
                let n = cdb.bytes.len().min(16);
                cdb16[..n].copy_from_slice(&cdb.bytes[..n]);
                let (lun, attr) = (*lun, *attr as u8);
                let edtl = cdb.data.expected_length();
                let mut hdr = ScsiCommand {
                    immediate: false,
                    final_: true,
                    read: matches!(cdb.data, DataDirection::Read(n) if n > 0),
                    write: matches!(&cdb.data, DataDirection::Write(d) if !d.is_empty()),
                    attr,
                    lun,
                    itt,
                    expected_data_transfer_length: edtl,
                    cmd_sn,
                    exp_stat_sn,
                    cdb: cdb16,
                };
                let mut immediate_data = Bytes::new();
                let mut unsolicited = Vec::new();
                if let Some(w) = write_data(&req) {
                    let lim = self.limits;
                    // Unsolicited data (immediate plus Data-Out without R2T)
                    // may not exceed FirstBurstLength (RFC 7143 §13.14).
                    let burst = (lim.first_burst_length as usize).min(w.len());
                    let seg = lim.max_xmit_data_segment_length.max(512) as usize;
                    let mut off = 0usize;
                    if lim.immediate_data {
                        let n = burst.min(seg);
                        immediate_data = w.slice(0..n);
                        off = n;
                    }
                    if !lim.initial_r2t {
                        let mut data_sn = 0;
                        while off < burst {
                            let n = (burst - off).min(seg);
                            unsolicited.push(pdu(
                                Header::DataOut(DataOut {
                                    final_: off + n == burst,
                                    lun,
                                    itt,
                                    ttt: RESERVED_TAG,
                                    exp_stat_sn,
                                    data_sn,
                                    buffer_offset: off as u32,
                                }),
                                w.slice(off..off + n),
                            ));
                            data_sn += 1;
                            off += n;
                        }
                    }
                }
                // F = 1 unless unsolicited Data-Out PDUs follow (RFC 7143 §11.3.1).
                hdr.final_ = unsolicited.is_empty();
                self.out
                    .push_back(pdu(Header::ScsiCommand(hdr), immediate_data));
                self.out.extend(unsolicited);
            }
            Request::TaskMgmt {
                function,
                lun,
                referenced,
                ref_cmd_sn,
            } => {
                let (ref_tag, ref_cmd_sn) = match referenced {
                    Some(r) => (
                        *r,
                        ref_cmd_sn
                            .or_else(|| self.tasks.get(r).and_then(|t| t.cmd_sn))
                            .unwrap_or(cmd_sn),
                    ),
                    None => (RESERVED_TAG, cmd_sn),
                };
                let hdr = TaskMgmtRequest {
                    immediate: true,
                    function: *function,
                    // LUN is reserved for the target-wide functions, but
                    // harmless; RFC 7143 §11.5.
                    lun: *lun,
                    itt,
                    referenced_task_tag: ref_tag,
                    cmd_sn,
                    exp_stat_sn,
                    ref_cmd_sn,
                    exp_data_sn: 0,
                };
                self.out
                    .push_back(pdu(Header::TaskMgmtRequest(hdr), Bytes::new()));
            }
            Request::Ping => {
                let hdr = NopOut {
                    immediate: true,
                    lun: 0,
                    itt,
                    ttt: RESERVED_TAG,
                    cmd_sn,
                    exp_stat_sn,
                };
                self.out.push_back(pdu(Header::NopOut(hdr), Bytes::new()));
            }
            Request::Text { data } => {
                let hdr = TextRequest {
                    immediate: false,
                    final_: true,
                    continue_: false,
                    lun: 0,
                    itt,
                    ttt: RESERVED_TAG,
                    cmd_sn,
                    exp_stat_sn,
                };
                let data = data.clone();
                self.out.push_back(pdu(Header::TextRequest(hdr), data));
            }
            Request::Logout { reason } => {
                let hdr = LogoutRequest {
                    immediate: true,
                    reason: *reason,
                    itt,
                    cid: 0,
                    cmd_sn,
                    exp_stat_sn,
                };
                self.out
                    .push_back(pdu(Header::LogoutRequest(hdr), Bytes::new()));
            }
        }
    }

    /// RFC 7143 §4.2.2.1: take ExpCmdSN/MaxCmdSN from the target unless
    /// MaxCmdSN < ExpCmdSN - 1, and never move either backwards.
    fn update_window(&mut self, exp_cmd_sn: u32, max_cmd_sn: u32) {
        if serial::lt(max_cmd_sn, exp_cmd_sn.wrapping_sub(1)) {
            return;
        }
        if serial::lt(self.sn.exp_cmd_sn, exp_cmd_sn) {
            self.sn.exp_cmd_sn = exp_cmd_sn;
        }
        if serial::lt(self.sn.max_cmd_sn, max_cmd_sn) {
            self.sn.max_cmd_sn = max_cmd_sn;
        }
    }

    /// Acknowledges a status-carrying PDU (RFC 7143 §4.2.2.2).
    fn ack_status(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if serial::lt(self.sn.exp_stat_sn, next) {
            self.sn.exp_stat_sn = next;
        }
    }

    /// Takes one PDU from the target. An `Err` means the connection can no
    /// longer be trusted and must be dropped (ERL 0, RFC 7143 §7.1.5).
    pub fn handle(&mut self, p: Pdu) -> Result<(), Error> {
        match p.header {
            Header::DataIn(h) => self.on_data_in(h, p.data),
            Header::ScsiResponse(h) => self.on_response(h, p.data),
            Header::R2t(h) => self.on_r2t(h),
            Header::NopIn(h) => {
                self.on_nop_in(h, p.data);
                Ok(())
            }
            Header::TaskMgmtResponse(h) => {
                self.on_tmf_response(h);
                Ok(())
            }
            Header::TextResponse(h) => self.on_text_response(h, p.data),
            Header::LogoutResponse(h) => {
                self.ack_status(h.stat_sn);
                self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
                self.complete(
                    h.itt,
                    Ok(Answer::Logout {
                        response: h.response,
                        time2wait: h.time2wait,
                        time2retain: h.time2retain,
                    }),
                );
                Ok(())
            }
            Header::AsyncMessage(h) => {
                self.on_async(h, p.data);
                Ok(())
            }
            Header::Reject(h) => {
                self.on_reject(h, p.data);
                Ok(())
            }
            other => Err(Error::Protocol(format!(
                "unexpected opcode {:#04x} from the target in full feature phase",
                other.opcode()
            ))),
        }
    }

    fn on_data_in(&mut self, h: DataIn, data: Bytes) -> Result<(), Error> {
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        if h.status_present {
            self.ack_status(h.stat_sn);
        }
        let Some(task) = self.tasks.get_mut(&h.itt) else {
            // A task we gave up on (timeout): its data is no longer wanted.
            return Ok(());
        };
        let expected = match &task.req {
            Request::Scsi {
                cdb:
                    Command {
                        data: DataDirection::Read(n),
                        ..
                    },
                ..
            } => *n as usize,
            _ => {
                return Err(Error::Protocol(format!(
                    "Data-In for task {:#x}, which reads nothing",
                    h.itt
                )))
            }
        };
        let off = h.buffer_offset as usize;
        let end = off + data.len();
        if end > expected {
            // RFC 7143 §11.7.4: the target must not send more than
            // ExpectedDataTransferLength.
            return Err(Error::Protocol(format!(
                "Data-In up to byte {end} beyond the expected {expected}"
            )));
        }
        if off == task.data_in.len() {
            // In order (DataPDUInOrder=Yes): appended, with room for the
            // whole transfer taken once and never zero-filled first.
            if task.data_in.capacity() < expected {
                task.data_in.reserve(expected - task.data_in.len());
            }
            task.data_in.extend_from_slice(&data);
        } else {
            if task.data_in.len() < end {
                task.data_in.resize(end, 0);
            }
            task.data_in[off..end].copy_from_slice(&data);
        }
        task.data_in_len = task.data_in_len.max(end);
        if h.status_present {
            let residual = if h.underflow {
                h.residual_count as i64
            } else if h.overflow {
                -(h.residual_count as i64)
            } else {
                0
            };
            self.finish_scsi(h.itt, h.status, Bytes::new(), residual);
        }
        Ok(())
    }

    fn on_response(&mut self, h: ScsiResponse, data: Bytes) -> Result<(), Error> {
        self.ack_status(h.stat_sn);
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        if !self.tasks.contains_key(&h.itt) {
            return Ok(());
        }
        if h.response != 0 {
            // "Target failure": there is no SCSI status (RFC 7143 §11.4.3).
            self.complete(h.itt, Err(Error::TargetFailure(h.response)));
            return Ok(());
        }
        let sense = pdu::parse_sense_segment(&data)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        let residual = if h.underflow {
            h.residual_count as i64
        } else if h.overflow {
            -(h.residual_count as i64)
        } else {
            0
        };
        self.finish_scsi(h.itt, h.status, sense, residual);
        Ok(())
    }

    fn finish_scsi(&mut self, itt: u32, status: u8, sense_data: Bytes, residual: i64) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let mut data = std::mem::take(&mut task.data_in);
        let mut len = task.data_in_len;
        if let Request::Scsi {
            cdb:
                Command {
                    data: DataDirection::Read(n),
                    ..
                },
            ..
        } = &task.req
        {
            if residual > 0 {
                len = len.min((*n as i64 - residual).max(0) as usize);
            }
        }
        data.truncate(len);
        let sense = if sense_data.is_empty() {
            None
        } else {
            Sense::decode(&sense_data)
        };
        let outcome = ScsiOutcome {
            status,
            sense_data,
            sense,
            data: data.freeze(),
            residual,
        };
        self.complete(itt, Ok(Answer::Scsi(outcome)));
    }

    fn on_r2t(&mut self, h: R2t) -> Result<(), Error> {
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        let Some(task) = self.tasks.get(&h.itt) else {
            return Ok(());
        };
        let Some(w) = write_data(&task.req).cloned() else {
            return Err(Error::Protocol(format!(
                "R2T for task {:#x}, which writes nothing",
                h.itt
            )));
        };
        let lun = match &task.req {
            Request::Scsi { lun, .. } => *lun,
            _ => 0,
        };
        let start = h.buffer_offset as usize;
        let end = start + h.desired_data_transfer_length as usize;
        if end > w.len() || h.desired_data_transfer_length == 0 {
            return Err(Error::Protocol(format!(
                "R2T asks for bytes {start}..{end} of a {}-byte write",
                w.len()
            )));
        }
        // One Data-Out sequence per R2T: DataSN from 0, F on the last PDU,
        // each PDU within the target's MaxRecvDataSegmentLength (RFC 7143 §11.7).
        let seg = self.limits.max_xmit_data_segment_length.max(512) as usize;
        let mut off = start;
        let mut data_sn = 0;
        while off < end {
            let n = (end - off).min(seg);
            self.out.push_back(pdu(
                Header::DataOut(DataOut {
                    final_: off + n == end,
                    lun,
                    itt: h.itt,
                    ttt: h.ttt,
                    exp_stat_sn: self.sn.exp_stat_sn,
                    data_sn,
                    buffer_offset: off as u32,
                }),
                w.slice(off..off + n),
            ));
            data_sn += 1;
            off += n;
        }
        Ok(())
    }

    fn on_nop_in(&mut self, h: NopIn, data: Bytes) {
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        if h.itt != RESERVED_TAG {
            // The answer to our ping; it carries a status number (RFC 7143 §11.19).
            self.ack_status(h.stat_sn);
            self.complete(h.itt, Ok(Answer::Pong(data)));
        } else if h.ttt != RESERVED_TAG {
            // The target's ping: answer with ITT ffffffff and its TTT, as an
            // immediate NOP-Out that does not advance CmdSN (RFC 7143 §11.18.3).
            let hdr = NopOut {
                immediate: true,
                lun: h.lun,
                itt: RESERVED_TAG,
                ttt: h.ttt,
                cmd_sn: self.sn.cmd_sn,
                exp_stat_sn: self.sn.exp_stat_sn,
            };
            self.out.push_back(pdu(Header::NopOut(hdr), Bytes::new()));
        }
    }

    fn on_tmf_response(&mut self, h: TaskMgmtResponse) {
        self.ack_status(h.stat_sn);
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        let Some(task) = self.tasks.get(&h.itt) else {
            return;
        };
        let Request::TaskMgmt {
            function,
            lun,
            referenced,
            ..
        } = task.req.clone()
        else {
            return;
        };
        if h.response == tmf::RESP_COMPLETE {
            // The affected tasks get no response of their own once the TMF
            // is answered (RFC 7143 §4.2.3.3, SAM-5 §7.1): end them here.
            let tmf_seq = task.seq;
            let affected: Vec<u32> = self
                .tasks
                .iter()
                .filter(|(itt, t)| {
                    **itt != h.itt
                        && t.seq < tmf_seq
                        && t.cmd_sn.is_some()
                        && match (&t.req, function) {
                            (_, tmf::ABORT_TASK) => Some(**itt) == referenced,
                            (
                                Request::Scsi { lun: l, .. },
                                tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET | tmf::LOGICAL_UNIT_RESET,
                            ) => *l == lun,
                            (
                                Request::Scsi { .. },
                                tmf::TARGET_WARM_RESET | tmf::TARGET_COLD_RESET,
                            ) => true,
                            _ => false,
                        }
                })
                .map(|(itt, _)| *itt)
                .collect();
            for itt in affected {
                self.complete(itt, Err(Error::Aborted));
            }
        }
        self.complete(h.itt, Ok(Answer::TaskMgmt(h.response)));
    }

    fn on_text_response(&mut self, h: TextResponse, data: Bytes) -> Result<(), Error> {
        self.ack_status(h.stat_sn);
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        let Some(task) = self.tasks.get_mut(&h.itt) else {
            return Ok(());
        };
        task.text.extend_from_slice(&data);
        if h.final_ && !h.continue_ {
            let text = std::mem::take(&mut task.text).freeze();
            self.complete(h.itt, Ok(Answer::Text(text)));
            return Ok(());
        }
        if task.text.len() > 1 << 20 {
            return Err(Error::Protocol("text response longer than 1 MiB".into()));
        }
        // More to come: an empty Text Request with the target's TTT asks for
        // the next part (RFC 7143 §11.10.4, §11.11.4).
        let cmd_sn = self.sn.cmd_sn;
        self.sn.cmd_sn = self.sn.cmd_sn.wrapping_add(1);
        task.cmd_sn = Some(cmd_sn);
        let hdr = TextRequest {
            immediate: false,
            final_: true,
            continue_: false,
            lun: 0,
            itt: h.itt,
            ttt: h.ttt,
            cmd_sn,
            exp_stat_sn: self.sn.exp_stat_sn,
        };
        self.out
            .push_back(pdu(Header::TextRequest(hdr), Bytes::new()));
        Ok(())
    }

    fn on_async(&mut self, h: AsyncMessage, data: Bytes) {
        self.ack_status(h.stat_sn);
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        let ev = match h.async_event {
            0 => Event::ScsiEvent {
                lun: h.lun,
                sense: pdu::parse_sense_segment(&data).and_then(Sense::decode),
            },
            1 => Event::LogoutRequested {
                within_secs: h.parameter3,
            },
            2 | 3 => Event::ConnectionDropping {
                time2wait: h.parameter2,
                time2retain: h.parameter3,
            },
            4 => Event::RenegotiationRequested,
            _ => return,
        };
        self.events.push_back(ev);
    }

    fn on_reject(&mut self, h: Reject, data: Bytes) {
        self.ack_status(h.stat_sn);
        self.update_window(h.exp_cmd_sn, h.max_cmd_sn);
        // The data segment is the rejected PDU's header; its ITT is at bytes
        // 16..20 in every PDU layout (RFC 7143 §11.17.3).
        if data.len() >= BHS_LEN {
            let itt = u32::from_be_bytes([data[16], data[17], data[18], data[19]]);
            self.complete(itt, Err(Error::Rejected { reason: h.reason }));
        }
    }

    /// The connection is gone: stop transmitting and keep the unanswered
    /// tasks for [`Engine::resume`]. Requests whose purpose is served by
    /// the loss itself complete now: a logout, and a TARGET COLD RESET
    /// (the target drops every connection after it, RFC 7143 §11.5.1). An
    /// ABORT TASK completes too, and its referenced task ends as aborted
    /// rather than being sent again.
    pub fn connection_lost(&mut self) {
        self.connected = false;
        self.out.clear();
        let mut finished = Vec::new();
        for (itt, t) in &self.tasks {
            match &t.req {
                Request::Logout { .. } if t.cmd_sn.is_some() => finished.push((
                    *itt,
                    Ok(Answer::Logout {
                        response: 0,
                        time2wait: 0,
                        time2retain: 0,
                    }),
                )),
                Request::TaskMgmt {
                    function: tmf::TARGET_COLD_RESET,
                    ..
                } if t.cmd_sn.is_some() => {
                    finished.push((*itt, Ok(Answer::TaskMgmt(tmf::RESP_COMPLETE))))
                }
                Request::TaskMgmt {
                    function: tmf::ABORT_TASK,
                    referenced,
                    ..
                } => {
                    finished.push((*itt, Ok(Answer::TaskMgmt(tmf::RESP_COMPLETE))));
                    if let Some(r) = referenced {
                        finished.push((*r, Err(Error::Aborted)));
                    }
                }
                _ => {}
            }
        }
        for (itt, r) in finished {
            self.complete(itt, r);
        }
    }

    /// A new connection is logged in: take its numbers and limits and queue
    /// every unanswered request again, oldest first.
    pub fn resume(&mut self, limits: Limits, sn: SeqNumbers) {
        self.limits = limits;
        self.sn = sn;
        self.connected = true;
        self.out.clear();
        let mut order: Vec<(u64, u32)> = self.tasks.iter().map(|(itt, t)| (t.seq, *itt)).collect();
        order.sort_unstable();
        self.queue.clear();
        self.urgent.clear();
        for (_, itt) in order {
            let t = self.tasks.get_mut(&itt).expect("listed above");
            t.cmd_sn = None;
            t.data_in.clear();
            t.data_in_len = 0;
            t.text.clear();
            if is_immediate(&t.req) {
                self.urgent.push_back(itt);
            } else {
                self.queue.push_back(itt);
            }
        }
    }

    /// Ends every task with an error made by `err` (the session is lost).
    pub fn fail_all(&mut self, err: impl Fn() -> Error) {
        let itts: Vec<u32> = self.tasks.keys().copied().collect();
        for itt in itts {
            self.complete(itt, Err(err()));
        }
        self.queue.clear();
        self.urgent.clear();
        self.out.clear();
    }
}

#[cfg(test)]
mod tests {
    use busrig_proto::pdu::{opcode, LogoutResponse};
    use busrig_proto::scsi::sense::{Asc, SenseKey};

    use super::*;
    use crate::scsi::cdb;

    fn engine(limits: Limits) -> Engine {
        Engine::new(
            limits,
            SeqNumbers {
                cmd_sn: 10,
                exp_cmd_sn: 10,
                max_cmd_sn: 11,
                exp_stat_sn: 100,
            },
        )
    }

    fn drain(e: &mut Engine) -> Vec<Pdu> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn read_req(blocks: u32) -> Request {
        Request::Scsi {
            lun: 0,
            cdb: cdb::read(0, blocks, 512, false),
            attr: TaskAttr::Simple,
        }
    }

    fn write_req(len: usize) -> Request {
        let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        Request::Scsi {
            lun: 1 << 48,
            cdb: cdb::write(0, (len / 512) as u32, data, false),
            attr: TaskAttr::Simple,
        }
    }

    fn good(itt: u32, stat_sn: u32, max_cmd_sn: u32) -> Pdu {
        pdu(
            Header::ScsiResponse(ScsiResponse {
                itt,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn,
                ..Default::default()
            }),
            Bytes::new(),
        )
    }

    #[test]
    fn oversized_cdb_is_refused_without_touching_the_wire() {
        let mut e = engine(Limits::default());
        let cdb = Command {
            bytes: vec![0; 32],
            data: DataDirection::None,
        };
        let itt = e.submit(Request::Scsi {
            lun: 0,
            cdb,
            attr: TaskAttr::Simple,
        });
        assert!(drain(&mut e).is_empty());
        assert!(
            matches!(e.poll_completion(), Some((i, Err(Error::InvalidRequest(_)))) if i == itt)
        );
        assert_eq!(e.seq_numbers().cmd_sn, 10);
    }

    #[test]
    fn cmdsn_window_holds_commands_until_maxcmdsn_opens() {
        let mut e = engine(Limits::default());
        let a = e.submit(read_req(1));
        let b = e.submit(read_req(1));
        let c = e.submit(read_req(1));
        let sent = drain(&mut e);
        // CmdSN 10 and 11 fit under MaxCmdSN 11; the third waits.
        let sns: Vec<u32> = sent
            .iter()
            .map(|p| match &p.header {
                Header::ScsiCommand(h) => h.cmd_sn,
                _ => panic!(),
            })
            .collect();
        assert_eq!(sns, vec![10, 11]);
        assert_eq!(
            sent.iter().map(|p| p.header.itt()).collect::<Vec<_>>(),
            vec![a, b]
        );
        // The response opens the window (MaxCmdSN 12) and acknowledges StatSN 100.
        e.handle(good(a, 100, 12)).unwrap();
        let next = drain(&mut e);
        assert_eq!(next.len(), 1);
        match &next[0].header {
            Header::ScsiCommand(h) => {
                assert_eq!((h.itt, h.cmd_sn, h.exp_stat_sn), (c, 12, 101));
            }
            _ => panic!(),
        }
        let (itt, r) = e.poll_completion().unwrap();
        assert_eq!(itt, a);
        assert!(matches!(r, Ok(Answer::Scsi(ScsiOutcome { status: 0, .. }))));
    }

    #[test]
    fn window_update_ignored_when_maxcmdsn_below_expcmdsn_minus_one() {
        let mut e = engine(Limits::default());
        e.update_window(20, 5);
        assert_eq!(e.seq_numbers().max_cmd_sn, 11);
        e.update_window(11, 10);
        assert_eq!(e.seq_numbers().exp_cmd_sn, 11, "ExpCmdSN moves forward");
        assert_eq!(
            e.seq_numbers().max_cmd_sn,
            11,
            "MaxCmdSN never moves backwards"
        );
    }

    #[test]
    fn data_in_split_over_pdus_is_reassembled_by_offset() {
        let mut e = engine(Limits::default());
        let itt = e.submit(read_req(4));
        drain(&mut e);
        let payload: Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
        // Out of order on purpose: offsets, not arrival, place the data.
        for (off, last) in [(1024usize, false), (0, false), (1536, true), (512, false)] {
            let h = DataIn {
                final_: last,
                status_present: false,
                itt,
                buffer_offset: off as u32,
                data_sn: 0,
                exp_cmd_sn: 11,
                max_cmd_sn: 12,
                ..Default::default()
            };
            e.handle(pdu(
                Header::DataIn(h),
                Bytes::copy_from_slice(&payload[off..off + 512]),
            ))
            .unwrap();
        }
        assert!(e.poll_completion().is_none());
        e.handle(good(itt, 100, 12)).unwrap();
        match e.poll_completion().unwrap().1.unwrap() {
            Answer::Scsi(o) => assert_eq!(&o.data[..], &payload[..]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn phase_collapsed_status_with_underflow_trims_data() {
        let mut e = engine(Limits::default());
        let itt = e.submit(Request::Scsi {
            lun: 0,
            cdb: cdb::inquiry(None, 255),
            attr: TaskAttr::Simple,
        });
        drain(&mut e);
        let h = DataIn {
            final_: true,
            status_present: true,
            underflow: true,
            residual_count: 255 - 36,
            status: 0,
            itt,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
            ..Default::default()
        };
        e.handle(pdu(Header::DataIn(h), Bytes::from(vec![1u8; 36])))
            .unwrap();
        match e.poll_completion().unwrap().1.unwrap() {
            Answer::Scsi(o) => {
                assert_eq!(o.data.len(), 36);
                assert_eq!(o.residual, 219);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.seq_numbers().exp_stat_sn, 101);
    }

    #[test]
    fn data_in_beyond_expected_length_is_a_protocol_error() {
        let mut e = engine(Limits::default());
        let itt = e.submit(read_req(1));
        drain(&mut e);
        let h = DataIn {
            itt,
            buffer_offset: 256,
            ..Default::default()
        };
        assert!(matches!(
            e.handle(pdu(Header::DataIn(h), Bytes::from(vec![0u8; 512]))),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn check_condition_carries_decoded_sense() {
        let mut e = engine(Limits::default());
        let itt = e.submit(read_req(1));
        drain(&mut e);
        let sense = Sense::new(Asc::SCSI_BUS_RESET_OCCURRED).to_fixed();
        let h = ScsiResponse {
            status: status::CHECK_CONDITION,
            itt,
            stat_sn: 100,
            max_cmd_sn: 12,
            ..Default::default()
        };
        e.handle(pdu(Header::ScsiResponse(h), pdu::sense_segment(&sense)))
            .unwrap();
        let Answer::Scsi(o) = e.poll_completion().unwrap().1.unwrap() else {
            panic!()
        };
        let err = o.into_result().unwrap_err();
        assert!(err.is_unit_attention());
        assert_eq!(err.sense().unwrap().key, SenseKey::UnitAttention);
    }

    #[test]
    fn reservation_conflict_and_busy_are_their_own_errors() {
        let o = |s| ScsiOutcome {
            status: s,
            sense_data: Bytes::new(),
            sense: None,
            data: Bytes::new(),
            residual: 0,
        };
        assert!(matches!(
            o(0x18).into_result(),
            Err(Error::ReservationConflict)
        ));
        assert!(matches!(o(0x08).into_result(), Err(Error::Busy)));
        assert!(matches!(o(0x28).into_result(), Err(Error::TaskSetFull)));
        assert!(matches!(o(0x40).into_result(), Err(Error::TaskAborted)));
    }

    #[test]
    fn immediate_data_only_when_initial_r2t_is_yes() {
        let lim = Limits {
            max_xmit_data_segment_length: 8192,
            first_burst_length: 65536,
            ..Limits::default()
        };
        let mut e = engine(lim);
        e.submit(write_req(20480));
        let sent = drain(&mut e);
        assert_eq!(sent.len(), 1);
        let Header::ScsiCommand(h) = &sent[0].header else {
            panic!()
        };
        assert!(h.final_ && h.write);
        assert_eq!(h.expected_data_transfer_length, 20480);
        assert_eq!(
            sent[0].data.len(),
            8192,
            "immediate data is capped by MaxRecvDataSegmentLength"
        );
    }

    #[test]
    fn unsolicited_data_out_up_to_first_burst_when_initial_r2t_is_no() {
        let lim = Limits {
            max_xmit_data_segment_length: 4096,
            first_burst_length: 16384,
            max_burst_length: 65536,
            immediate_data: true,
            initial_r2t: false,
        };
        let mut e = engine(lim);
        let itt = e.submit(write_req(65536));
        let sent = drain(&mut e);
        // Command with 4096 immediate bytes, then Data-Out for 4096..16384.
        assert_eq!(sent.len(), 4);
        let Header::ScsiCommand(c) = &sent[0].header else {
            panic!()
        };
        assert!(!c.final_, "F=0: unsolicited Data-Out follows");
        let outs: Vec<&DataOut> = sent[1..]
            .iter()
            .map(|p| match &p.header {
                Header::DataOut(d) => d,
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            outs.iter().map(|d| d.buffer_offset).collect::<Vec<_>>(),
            vec![4096, 8192, 12288]
        );
        assert_eq!(
            outs.iter().map(|d| d.data_sn).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(outs.iter().all(|d| d.ttt == RESERVED_TAG && d.itt == itt));
        assert!(outs[2].final_ && !outs[0].final_);
        assert_eq!(sent[3].data[0], (12288 % 256) as u8);
    }

    #[test]
    fn r2t_is_answered_with_a_data_out_sequence() {
        let lim = Limits {
            max_xmit_data_segment_length: 8192,
            first_burst_length: 65536,
            max_burst_length: 262_144,
            immediate_data: false,
            initial_r2t: true,
        };
        let mut e = engine(lim);
        let itt = e.submit(write_req(20480));
        let cmd = drain(&mut e);
        assert_eq!(cmd.len(), 1);
        assert!(cmd[0].data.is_empty());
        let r2t = R2t {
            lun: 1 << 48,
            itt,
            ttt: 0x77,
            r2t_sn: 0,
            buffer_offset: 4096,
            desired_data_transfer_length: 16384,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
            ..Default::default()
        };
        e.handle(pdu(Header::R2t(r2t), Bytes::new())).unwrap();
        let outs = drain(&mut e);
        assert_eq!(outs.len(), 2);
        let d: Vec<&DataOut> = outs
            .iter()
            .map(|p| match &p.header {
                Header::DataOut(d) => d,
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            (d[0].buffer_offset, d[0].data_sn, d[0].final_, d[0].ttt),
            (4096, 0, false, 0x77)
        );
        assert_eq!(
            (d[1].buffer_offset, d[1].data_sn, d[1].final_),
            (12288, 1, true)
        );
        assert_eq!(outs[0].data.len(), 8192);
        assert_eq!(outs[0].data[0], (4096 % 256) as u8);
        assert_eq!(d[0].lun, 1 << 48);
    }

    #[test]
    fn r2t_beyond_the_data_is_a_protocol_error() {
        let mut e = engine(Limits::default());
        let itt = e.submit(write_req(1024));
        drain(&mut e);
        let r2t = R2t {
            itt,
            buffer_offset: 512,
            desired_data_transfer_length: 1024,
            ..Default::default()
        };
        assert!(matches!(
            e.handle(pdu(Header::R2t(r2t), Bytes::new())),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn target_nop_in_is_answered_without_advancing_cmdsn() {
        let mut e = engine(Limits::default());
        let h = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: 0x1234,
            stat_sn: 100,
            exp_cmd_sn: 10,
            max_cmd_sn: 11,
        };
        e.handle(pdu(Header::NopIn(h), Bytes::new())).unwrap();
        let out = drain(&mut e);
        let Header::NopOut(n) = &out[0].header else {
            panic!()
        };
        assert_eq!(
            (n.itt, n.ttt, n.cmd_sn, n.immediate),
            (RESERVED_TAG, 0x1234, 10, true)
        );
        assert_eq!(e.seq_numbers().cmd_sn, 10);
        assert_eq!(
            e.seq_numbers().exp_stat_sn,
            100,
            "a target ping does not advance StatSN"
        );
    }

    #[test]
    fn our_ping_completes_with_the_nop_in() {
        let mut e = engine(Limits::default());
        let itt = e.submit(Request::Ping);
        let out = drain(&mut e);
        assert_eq!(out[0].header.opcode(), opcode::NOP_OUT);
        assert!(out[0].header.immediate());
        let h = NopIn {
            itt,
            ttt: RESERVED_TAG,
            stat_sn: 100,
            exp_cmd_sn: 10,
            max_cmd_sn: 11,
            ..Default::default()
        };
        e.handle(pdu(Header::NopIn(h), Bytes::new())).unwrap();
        assert!(matches!(e.poll_completion(), Some((i, Ok(Answer::Pong(_)))) if i == itt));
    }

    #[test]
    fn lun_reset_ends_that_luns_commands_as_aborted() {
        let mut e = engine(Limits {
            ..Limits::default()
        });
        e.update_window(10, 20);
        let on_lun0 = e.submit(read_req(1));
        let on_lun1 = e.submit(write_req(512));
        let reset = e.submit(Request::TaskMgmt {
            function: tmf::LOGICAL_UNIT_RESET,
            lun: 0,
            referenced: None,
            ref_cmd_sn: None,
        });
        let out = drain(&mut e);
        let Some(Header::TaskMgmtRequest(t)) = out
            .iter()
            .map(|p| p.header.clone())
            .find(|h| h.opcode() == 2)
        else {
            panic!()
        };
        assert!(t.immediate);
        let resp = TaskMgmtResponse {
            response: 0,
            itt: reset,
            stat_sn: 100,
            exp_cmd_sn: 12,
            max_cmd_sn: 20,
        };
        e.handle(pdu(Header::TaskMgmtResponse(resp), Bytes::new()))
            .unwrap();
        let done: Vec<(u32, Result<Answer, Error>)> =
            std::iter::from_fn(|| e.poll_completion()).collect();
        assert!(done
            .iter()
            .any(|(i, r)| *i == on_lun0 && matches!(r, Err(Error::Aborted))));
        assert!(done
            .iter()
            .any(|(i, r)| *i == reset && matches!(r, Ok(Answer::TaskMgmt(0)))));
        assert!(
            !done.iter().any(|(i, _)| *i == on_lun1),
            "LUN 1's write is not affected"
        );
        assert_eq!(e.outstanding(), 1);
    }

    #[test]
    fn abort_task_names_the_referenced_cmdsn() {
        let mut e = engine(Limits::default());
        let victim = e.submit(read_req(1));
        drain(&mut e);
        let abort = e.submit(Request::TaskMgmt {
            function: tmf::ABORT_TASK,
            lun: 0,
            referenced: Some(victim),
            ref_cmd_sn: None,
        });
        let out = drain(&mut e);
        let Header::TaskMgmtRequest(t) = &out[0].header else {
            panic!()
        };
        assert_eq!(
            (t.referenced_task_tag, t.ref_cmd_sn, t.cmd_sn),
            (victim, 10, 11)
        );
        let resp = TaskMgmtResponse {
            response: 0,
            itt: abort,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
        };
        e.handle(pdu(Header::TaskMgmtResponse(resp), Bytes::new()))
            .unwrap();
        assert!(matches!(e.poll_completion(), Some((i, Err(Error::Aborted))) if i == victim));
    }

    #[test]
    fn reject_fails_the_task_it_names() {
        let mut e = engine(Limits::default());
        let itt = e.submit(read_req(1));
        let out = drain(&mut e);
        let bhs = out[0].header.encode_bhs(0, 0);
        let rej = Reject {
            reason: 0x09,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
            data_sn_or_r2t_sn: 0,
        };
        e.handle(pdu(Header::Reject(rej), Bytes::copy_from_slice(&bhs)))
            .unwrap();
        assert!(
            matches!(e.poll_completion(), Some((i, Err(Error::Rejected { reason: 9 }))) if i == itt)
        );
    }

    #[test]
    fn text_response_continuation_is_requested_and_joined() {
        let mut e = engine(Limits::default());
        let itt = e.submit(Request::Text {
            data: Bytes::from_static(b"SendTargets=All\0"),
        });
        let out = drain(&mut e);
        assert_eq!(out[0].data.as_ref(), b"SendTargets=All\0");
        let part = TextResponse {
            final_: false,
            continue_: true,
            itt,
            ttt: 9,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 12,
            ..Default::default()
        };
        e.handle(pdu(
            Header::TextResponse(part),
            Bytes::from_static(b"TargetName=iqn.a\0TargetAdd"),
        ))
        .unwrap();
        let cont = drain(&mut e);
        let Header::TextRequest(t) = &cont[0].header else {
            panic!()
        };
        assert_eq!((t.itt, t.ttt, t.cmd_sn), (itt, 9, 11));
        assert!(cont[0].data.is_empty());
        let last = TextResponse {
            final_: true,
            itt,
            ttt: RESERVED_TAG,
            stat_sn: 101,
            max_cmd_sn: 12,
            ..Default::default()
        };
        e.handle(pdu(
            Header::TextResponse(last),
            Bytes::from_static(b"ress=1.2.3.4:3260,1\0"),
        ))
        .unwrap();
        let Some((_, Ok(Answer::Text(t)))) = e.poll_completion() else {
            panic!()
        };
        assert_eq!(&t[..], b"TargetName=iqn.a\0TargetAddress=1.2.3.4:3260,1\0");
    }

    #[test]
    fn unanswered_commands_are_replayed_in_order_after_reconnect() {
        let mut e = engine(Limits::default());
        e.update_window(10, 40);
        let first = e.submit(read_req(1));
        let second = e.submit(write_req(1024));
        let third = e.submit(read_req(2));
        drain(&mut e);
        e.handle(good(second, 100, 40)).unwrap();
        // Partial data for the third, then the connection dies.
        let h = DataIn {
            itt: third,
            buffer_offset: 0,
            ..Default::default()
        };
        e.handle(pdu(Header::DataIn(h), Bytes::from(vec![9u8; 512])))
            .unwrap();
        e.connection_lost();
        assert!(e.poll_transmit().is_none());
        e.resume(
            Limits::default(),
            SeqNumbers {
                cmd_sn: 1,
                exp_cmd_sn: 1,
                max_cmd_sn: 8,
                exp_stat_sn: 5,
            },
        );
        let replay = drain(&mut e);
        let got: Vec<(u32, u32, u32)> = replay
            .iter()
            .map(|p| match &p.header {
                Header::ScsiCommand(h) => (h.itt, h.cmd_sn, h.exp_stat_sn),
                _ => panic!(),
            })
            .collect();
        assert_eq!(got, vec![(first, 1, 5), (third, 2, 5)]);
        // The replayed read gets fresh data: the old partial Data-In is gone.
        e.handle(good(third, 5, 8)).unwrap();
        let _ = e.poll_completion(); // the second's GOOD from before
        let Some((i, Ok(Answer::Scsi(o)))) = e.poll_completion() else {
            panic!()
        };
        assert_eq!(i, third);
        assert!(o.data.is_empty());
    }

    #[test]
    fn cold_reset_and_logout_complete_when_the_connection_drops() {
        let mut e = engine(Limits::default());
        let cold = e.submit(Request::TaskMgmt {
            function: tmf::TARGET_COLD_RESET,
            lun: 0,
            referenced: None,
            ref_cmd_sn: None,
        });
        let read = e.submit(read_req(1));
        drain(&mut e);
        e.connection_lost();
        assert!(matches!(e.poll_completion(), Some((i, Ok(Answer::TaskMgmt(0)))) if i == cold));
        assert_eq!(e.outstanding(), 1, "the read waits for replay");
        let _ = read;
        let mut e = engine(Limits::default());
        let lo = e.submit(Request::Logout { reason: 0 });
        drain(&mut e);
        e.connection_lost();
        assert!(matches!(e.poll_completion(), Some((i, Ok(Answer::Logout { .. }))) if i == lo));
    }

    #[test]
    fn logout_response_completes() {
        let mut e = engine(Limits::default());
        let lo = e.submit(Request::Logout { reason: 0 });
        let out = drain(&mut e);
        assert_eq!(out[0].header.opcode(), opcode::LOGOUT_REQUEST);
        let r = LogoutResponse {
            response: 0,
            itt: lo,
            stat_sn: 100,
            time2wait: 2,
            time2retain: 20,
            ..Default::default()
        };
        e.handle(pdu(Header::LogoutResponse(r), Bytes::new()))
            .unwrap();
        assert!(matches!(
            e.poll_completion(),
            Some((
                _,
                Ok(Answer::Logout {
                    time2retain: 20,
                    ..
                })
            ))
        ));
    }

    #[test]
    fn async_logout_request_becomes_an_event() {
        let mut e = engine(Limits::default());
        let a = AsyncMessage {
            async_event: 1,
            parameter3: 5,
            stat_sn: 100,
            ..Default::default()
        };
        e.handle(pdu(Header::AsyncMessage(a), Bytes::new()))
            .unwrap();
        assert_eq!(
            e.poll_event(),
            Some(Event::LogoutRequested { within_secs: 5 })
        );
        assert_eq!(e.seq_numbers().exp_stat_sn, 101);
    }

    #[test]
    fn cancelled_tasks_ignore_late_answers() {
        let mut e = engine(Limits::default());
        let itt = e.submit(read_req(1));
        drain(&mut e);
        assert_eq!(
            e.cancel(itt),
            Some(Cancelled {
                lun: 0,
                cmd_sn: Some(10)
            })
        );
        e.handle(good(itt, 100, 12)).unwrap();
        assert!(e.poll_completion().is_none());
    }
}
