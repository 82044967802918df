//! A small in-process iSCSI target for protocol tests of the initiator:
//! a RAM disk behind a login negotiator (proto's `TargetNegotiator`) and a
//! full-feature loop whose behaviour the test chooses — how it splits
//! Data-In, how it asks for write data (R2T bursts), how wide its CmdSN
//! window is, whether it pings, drops the connection, asks for a logout,
//! redirects, or sits on commands. It records what the initiator sent so
//! tests can assert on the wire behaviour, not just on results.
//!
//! It is deliberately independent of `target-emu` (docs/architecture.md "Crates": the
//! initiator depends on proto only) and implements just enough SCSI:
//! TEST UNIT READY, INQUIRY, READ CAPACITY(10/16), READ/WRITE(10/16),
//! SYNCHRONIZE CACHE, REPORT LUNS.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use busrig_proto::negotiation::{DigestType, Stage, TargetLimits, TargetNegotiator};
use busrig_proto::pdu::{
    self, DataIn, DataOut, Header, LoginRequest, LoginResponse, LogoutResponse, NopIn, Pdu, R2t,
    ScsiCommand, ScsiResponse, TaskMgmtResponse, TextResponse, WireConfig, RESERVED_TAG,
};
use busrig_proto::scsi::sense::{Asc, Sense};
use busrig_proto::text::TextPairs;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TARGET: &str = "iqn.2026-11.io.busrig.fake:t0";
pub const BLOCK: usize = 512;

/// How the fake behaves.
#[derive(Clone)]
pub struct Options {
    pub limits: TargetLimits,
    /// MaxCmdSN - ExpCmdSN + 1 counted over commands not yet answered.
    pub window: u32,
    /// Largest Data-In segment the fake sends (also capped by the initiator's MRDSL).
    pub data_in_segment: usize,
    /// Send status in a separate SCSI Response instead of the last Data-In.
    pub separate_status: bool,
    /// Close the connection, unanswered, when the Nth SCSI command (1-based,
    /// counted over all connections) arrives.
    pub drop_on_command: Option<usize>,
    /// Send an Asynchronous Message "logout requested" after the Nth command.
    pub logout_request_after: Option<usize>,
    /// Ping the initiator (NOP-In with a TTT) right after login.
    pub ping_after_login: bool,
    /// Never answer READs of this LBA (for timeouts and ABORT TASK).
    pub hold_lba: Option<u64>,
    /// Answer the first login with a redirection to this address.
    pub redirect_to: Option<String>,
    pub blocks: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: TargetLimits::default(),
            window: 32,
            data_in_segment: 1 << 20,
            separate_status: false,
            drop_on_command: None,
            logout_request_after: None,
            ping_after_login: false,
            hold_lba: None,
            redirect_to: None,
            blocks: 4096,
        }
    }
}

/// What the initiator did, as seen on the wire.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// (InitiatorName, ISID, TSIH asked for) of each completed login.
    pub logins: Vec<(String, [u8; 6], u16)>,
    pub commands: usize,
    pub r2ts: usize,
    pub data_outs: usize,
    /// Data-Out PDUs sent without an R2T (TTT ffffffff).
    pub unsolicited_data_outs: usize,
    pub immediate_data_bytes: usize,
    pub data_ins: usize,
    pub nop_outs_from_initiator: usize,
    pub ping_replies: usize,
    /// (referenced task tag, RefCmdSN) of each ABORT TASK.
    pub aborts: Vec<(u32, u32)>,
    /// Commands that arrived with CmdSN beyond the MaxCmdSN we announced.
    pub window_violations: usize,
    /// Most commands outstanding at once.
    pub max_outstanding: usize,
    pub redirects: usize,
}

pub struct FakeTarget {
    pub addr: SocketAddr,
    pub stats: Arc<Mutex<Stats>>,
    pub disk: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTarget {
    pub async fn start(opts: Options) -> FakeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Mutex::new(Stats::default()));
        let disk = Arc::new(Mutex::new(vec![0u8; opts.blocks as usize * BLOCK]));
        let shared = Arc::new(Common {
            opts,
            stats: stats.clone(),
            disk: disk.clone(),
            commands: AtomicUsize::new(0),
            next_tsih: AtomicUsize::new(1),
            redirected: AtomicUsize::new(0),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let c = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(s, c).await;
                });
            }
        });
        FakeTarget {
            addr,
            stats,
            disk,
            task,
        }
    }

    pub fn url(&self, lun: u16) -> String {
        format!("iscsi://{}/{}/{}", self.addr, TARGET, lun)
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }
}

struct Common {
    opts: Options,
    stats: Arc<Mutex<Stats>>,
    disk: Arc<Mutex<Vec<u8>>>,
    commands: AtomicUsize,
    next_tsih: AtomicUsize,
    redirected: AtomicUsize,
}

struct Conn {
    s: TcpStream,
    buf: BytesMut,
    wire: WireConfig,
    stat_sn: u32,
    exp_cmd_sn: u32,
    /// Commands received and not answered.
    outstanding: Vec<u32>,
    answered: u32,
    first_cmd_sn: u32,
    window: u32,
    peer_mrdsl: usize,
    writes: HashMap<u32, Write>,
    next_ttt: u32,
}

struct Write {
    lun: u64,
    lba: u64,
    data: Vec<u8>,
    got: usize,
    /// End of the data asked for so far (immediate, unsolicited, R2Ts).
    requested: usize,
    max_burst: usize,
}

fn pdu(header: Header, data: Bytes) -> Pdu {
    Pdu {
        header,
        ahs: Bytes::new(),
        data,
    }
}

impl Conn {
    async fn read(&mut self) -> Option<Pdu> {
        loop {
            match Pdu::decode(&mut self.buf, &self.wire) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.s.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn send(&mut self, p: Pdu) -> std::io::Result<()> {
        self.s.write_all(&p.to_bytes(&self.wire)).await
    }

    fn max_cmd_sn(&self) -> u32 {
        self.first_cmd_sn
            .wrapping_add(self.answered)
            .wrapping_add(self.window)
            .wrapping_sub(1)
    }

    fn next_stat(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    fn answered(&mut self, itt: u32) {
        if let Some(i) = self.outstanding.iter().position(|x| *x == itt) {
            self.outstanding.remove(i);
            self.answered += 1;
        }
    }

    async fn respond(&mut self, itt: u32, status: u8, sense: Option<Sense>) -> std::io::Result<()> {
        self.answered(itt);
        let data = sense
            .map(|s| pdu::sense_segment(&s.to_fixed()))
            .unwrap_or_default();
        let h = ScsiResponse {
            status,
            itt,
            stat_sn: self.next_stat(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            ..Default::default()
        };
        self.send(pdu(Header::ScsiResponse(h), data)).await
    }

    async fn send_data_in(
        &mut self,
        c: &Common,
        itt: u32,
        lun: u64,
        data: &[u8],
    ) -> std::io::Result<()> {
        self.answered(itt);
        let seg = c.opts.data_in_segment.min(self.peer_mrdsl).max(1);
        let mut off = 0;
        let pieces = data.len().div_ceil(seg).max(1);
        for (i, data_sn) in (0..pieces).zip(0u32..) {
            let end = (off + seg).min(data.len());
            let last = i + 1 == pieces;
            let with_status = last && !c.opts.separate_status;
            let h = DataIn {
                final_: last,
                status_present: with_status,
                status: 0,
                lun,
                itt,
                ttt: RESERVED_TAG,
                stat_sn: if with_status { self.next_stat() } else { 0 },
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: off as u32,
                ..Default::default()
            };
            c.stats.lock().unwrap().data_ins += 1;
            self.send(pdu(
                Header::DataIn(h),
                Bytes::copy_from_slice(&data[off..end]),
            ))
            .await?;
            off = end;
        }
        if c.opts.separate_status {
            self.outstanding.push(itt);
            self.answered -= 1;
            self.respond(itt, 0, None).await?;
        }
        Ok(())
    }

    /// Asks for the next burst of a write, or completes it.
    async fn advance_write(&mut self, c: &Common, itt: u32) -> std::io::Result<()> {
        let Some(w) = self.writes.get_mut(&itt) else {
            return Ok(());
        };
        if w.got >= w.data.len() {
            let w = self.writes.remove(&itt).expect("present");
            {
                let mut d = c.disk.lock().unwrap();
                let at = w.lba as usize * BLOCK;
                d[at..at + w.data.len()].copy_from_slice(&w.data);
            }
            return self.respond(itt, 0, None).await;
        }
        if w.got < w.requested {
            return Ok(());
        }
        let len = w.max_burst.min(w.data.len() - w.requested);
        let r = R2t {
            lun: w.lun,
            itt,
            ttt: self.next_ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self
                .first_cmd_sn
                .wrapping_add(self.answered)
                .wrapping_add(self.window)
                .wrapping_sub(1),
            r2t_sn: 0,
            buffer_offset: w.requested as u32,
            desired_data_transfer_length: len as u32,
        };
        w.requested += len;
        self.next_ttt += 1;
        c.stats.lock().unwrap().r2ts += 1;
        self.send(pdu(Header::R2t(r), Bytes::new())).await
    }

    async fn command(
        &mut self,
        c: &Common,
        h: ScsiCommand,
        data: Bytes,
        params_first_burst: usize,
    ) -> std::io::Result<bool> {
        let n = c.commands.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut st = c.stats.lock().unwrap();
            st.commands += 1;
            if busrig_proto::serial::lt(self.max_cmd_sn(), h.cmd_sn) {
                st.window_violations += 1;
            }
            st.immediate_data_bytes += data.len();
        }
        if c.opts.drop_on_command == Some(n) {
            return Ok(false);
        }
        if !h.immediate {
            self.exp_cmd_sn = h.cmd_sn.wrapping_add(1);
        }
        self.outstanding.push(h.itt);
        {
            let mut st = c.stats.lock().unwrap();
            st.max_outstanding = st.max_outstanding.max(self.outstanding.len());
        }
        let cdb = h.cdb;
        let blocks_total = c.opts.blocks;
        let (lba, count) = match cdb[0] {
            0x28 | 0x2a => (
                u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as u64,
                u16::from_be_bytes([cdb[7], cdb[8]]) as u64,
            ),
            0x88 | 0x8a => (
                u64::from_be_bytes(cdb[2..10].try_into().unwrap()),
                u32::from_be_bytes([cdb[10], cdb[11], cdb[12], cdb[13]]) as u64,
            ),
            _ => (0, 0),
        };
        match cdb[0] {
            0x00 | 0x35 => self.respond(h.itt, 0, None).await?,
            0x12 => {
                let mut d = [0u8; 36];
                d[2] = 6;
                d[4] = 31;
                d[8..16].copy_from_slice(b"FAKE    ");
                d[16..32].copy_from_slice(b"RAM DISK        ");
                d[32..36].copy_from_slice(b"0001");
                let n = (h.expected_data_transfer_length as usize).min(36);
                self.send_data_in(c, h.itt, 0, &d[..n]).await?;
            }
            0x9e => {
                let mut d = [0u8; 32];
                d[0..8].copy_from_slice(&(blocks_total - 1).to_be_bytes());
                d[8..12].copy_from_slice(&(BLOCK as u32).to_be_bytes());
                let n = (h.expected_data_transfer_length as usize).min(32);
                self.send_data_in(c, h.itt, 0, &d[..n]).await?;
            }
            0x25 => {
                let mut d = vec![0u8; 8];
                d[0..4].copy_from_slice(&((blocks_total - 1) as u32).to_be_bytes());
                d[4..8].copy_from_slice(&(BLOCK as u32).to_be_bytes());
                self.send_data_in(c, h.itt, 0, &d).await?;
            }
            0xa0 => {
                let mut d = vec![0, 0, 0, 8, 0, 0, 0, 0];
                d.extend_from_slice(&[0u8; 8]);
                self.send_data_in(c, h.itt, 0, &d).await?;
            }
            0x28 | 0x88 if lba + count > blocks_total => {
                self.respond(h.itt, 2, Some(Sense::new(Asc::LBA_OUT_OF_RANGE)))
                    .await?
            }
            0x28 | 0x88 => {
                if c.opts.hold_lba == Some(lba) {
                    return Ok(true);
                }
                let d = {
                    let disk = c.disk.lock().unwrap();
                    disk[lba as usize * BLOCK..(lba + count) as usize * BLOCK].to_vec()
                };
                self.send_data_in(c, h.itt, h.lun, &d).await?;
            }
            0x2a | 0x8a => {
                let len = count as usize * BLOCK;
                let mut w = Write {
                    lun: h.lun,
                    lba,
                    data: vec![0; len],
                    got: data.len(),
                    requested: data.len(),
                    max_burst: c.opts.limits.operational.max_burst_length as usize,
                };
                w.data[..data.len()].copy_from_slice(&data);
                // Unsolicited Data-Out follows when F=0 (RFC 7143 §11.3.1);
                // it may fill up to FirstBurstLength.
                if !h.final_ {
                    w.requested = params_first_burst.min(len);
                }
                self.writes.insert(h.itt, w);
                self.advance_write(c, h.itt).await?;
            }
            _ => {
                self.respond(
                    h.itt,
                    2,
                    Some(Sense::new(Asc::INVALID_COMMAND_OPERATION_CODE)),
                )
                .await?
            }
        }
        if c.opts.logout_request_after == Some(n) {
            let a = busrig_proto::pdu::AsyncMessage {
                lun: 0,
                stat_sn: self.next_stat(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                async_event: 1,
                parameter3: 5,
                ..Default::default()
            };
            self.send(pdu(Header::AsyncMessage(a), Bytes::new()))
                .await?;
        }
        Ok(true)
    }
}

async fn serve(s: TcpStream, c: Arc<Common>) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut conn = Conn {
        s,
        buf: BytesMut::new(),
        wire: WireConfig::default(),
        stat_sn: 1000,
        exp_cmd_sn: 0,
        outstanding: Vec::new(),
        answered: 0,
        first_cmd_sn: 0,
        window: c.opts.window,
        peer_mrdsl: 8192,
        writes: HashMap::new(),
        next_ttt: 1,
    };
    let mut neg = TargetNegotiator::new(c.opts.limits.clone());
    // Login phase.
    let (first_burst, discovery) = loop {
        let Some(p) = conn.read().await else {
            return Ok(());
        };
        let Header::LoginRequest(h) = p.header else {
            return Ok(());
        };
        let h: LoginRequest = h;
        if let Some(to) = c
            .opts
            .redirect_to
            .as_ref()
            .filter(|_| c.redirected.fetch_add(1, Ordering::SeqCst) == 0)
        {
            c.stats.lock().unwrap().redirects += 1;
            let r = LoginResponse {
                status_class: 1,
                status_detail: 1,
                isid: h.isid,
                itt: h.itt,
                stat_sn: conn.stat_sn,
                ..Default::default()
            };
            let data = format!("TargetAddress={to},1\0");
            conn.send(pdu(Header::LoginResponse(r), Bytes::from(data)))
                .await?;
            return Ok(());
        }
        let stage = Stage::from_code(h.csg).unwrap_or(Stage::Security);
        let keys = TextPairs::parse(&p.data).unwrap_or_default();
        let resp = match neg.on_login_request(stage, &keys) {
            Ok(k) => k,
            Err(e) => {
                let (class, detail) = e.login_status();
                let r = LoginResponse {
                    status_class: class,
                    status_detail: detail,
                    isid: h.isid,
                    itt: h.itt,
                    ..Default::default()
                };
                conn.send(pdu(Header::LoginResponse(r), Bytes::new()))
                    .await?;
                return Ok(());
            }
        };
        let transit = h.transit && neg.ready_to_leave(stage).unwrap_or(false);
        let done = transit && h.nsg == 3;
        conn.exp_cmd_sn = h.cmd_sn;
        conn.first_cmd_sn = h.cmd_sn;
        let tsih = if done {
            c.next_tsih.fetch_add(1, Ordering::SeqCst) as u16
        } else {
            0
        };
        let r = LoginResponse {
            transit,
            csg: h.csg,
            nsg: if transit { h.nsg } else { 0 },
            isid: h.isid,
            tsih,
            itt: h.itt,
            stat_sn: conn.stat_sn,
            exp_cmd_sn: conn.exp_cmd_sn,
            max_cmd_sn: conn.max_cmd_sn(),
            ..Default::default()
        };
        conn.send(pdu(Header::LoginResponse(r), Bytes::from(resp.to_bytes())))
            .await?;
        if done {
            conn.stat_sn += 1;
            let p = neg.params().clone();
            c.stats.lock().unwrap().logins.push((
                p.initiator_name.clone().unwrap_or_default(),
                h.isid,
                h.tsih,
            ));
            conn.wire = WireConfig {
                header_digest: p.header_digest == DigestType::Crc32c,
                data_digest: p.data_digest == DigestType::Crc32c,
                max_recv_data_segment_length: p.local_max_recv_data_segment_length,
            };
            conn.peer_mrdsl = p.peer_max_recv_data_segment_length as usize;
            break (p.first_burst_length as usize, p.target_name.is_none());
        }
    };
    if c.opts.ping_after_login {
        let n = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: 0x7777,
            stat_sn: conn.stat_sn,
            exp_cmd_sn: conn.exp_cmd_sn,
            max_cmd_sn: conn.max_cmd_sn(),
        };
        conn.send(pdu(Header::NopIn(n), Bytes::new())).await?;
    }
    // Full feature phase.
    while let Some(p) = conn.read().await {
        match p.header {
            Header::ScsiCommand(h) => {
                if !conn.command(&c, h, p.data, first_burst).await? {
                    return Ok(());
                }
            }
            Header::DataOut(h) => {
                let h: DataOut = h;
                {
                    let mut st = c.stats.lock().unwrap();
                    st.data_outs += 1;
                    if h.ttt == RESERVED_TAG {
                        st.unsolicited_data_outs += 1;
                    }
                }
                if let Some(w) = conn.writes.get_mut(&h.itt) {
                    let off = h.buffer_offset as usize;
                    w.data[off..off + p.data.len()].copy_from_slice(&p.data);
                    w.got += p.data.len();
                }
                if h.final_ {
                    conn.advance_write(&c, h.itt).await?;
                }
            }
            Header::NopOut(h) => {
                if h.ttt != RESERVED_TAG {
                    c.stats.lock().unwrap().ping_replies += 1;
                    continue;
                }
                c.stats.lock().unwrap().nop_outs_from_initiator += 1;
                let n = NopIn {
                    lun: 0,
                    itt: h.itt,
                    ttt: RESERVED_TAG,
                    stat_sn: conn.next_stat(),
                    exp_cmd_sn: conn.exp_cmd_sn,
                    max_cmd_sn: conn.max_cmd_sn(),
                };
                conn.send(pdu(Header::NopIn(n), p.data)).await?;
            }
            Header::TaskMgmtRequest(h) => {
                let response = if h.function == pdu::tmf::ABORT_TASK {
                    c.stats
                        .lock()
                        .unwrap()
                        .aborts
                        .push((h.referenced_task_tag, h.ref_cmd_sn));
                    if conn.outstanding.contains(&h.referenced_task_tag) {
                        conn.answered(h.referenced_task_tag);
                        0
                    } else {
                        1
                    }
                } else {
                    0
                };
                let r = TaskMgmtResponse {
                    response,
                    itt: h.itt,
                    stat_sn: conn.next_stat(),
                    exp_cmd_sn: conn.exp_cmd_sn,
                    max_cmd_sn: conn.max_cmd_sn(),
                };
                conn.send(pdu(Header::TaskMgmtResponse(r), Bytes::new()))
                    .await?;
            }
            Header::TextRequest(h) => {
                conn.exp_cmd_sn = h.cmd_sn.wrapping_add(1);
                conn.answered += 1;
                let body = if discovery {
                    format!(
                        "TargetName={TARGET}\0TargetAddress={},1\0",
                        conn.s.local_addr()?
                    )
                } else {
                    String::new()
                };
                let r = TextResponse {
                    final_: true,
                    itt: h.itt,
                    ttt: RESERVED_TAG,
                    stat_sn: conn.next_stat(),
                    exp_cmd_sn: conn.exp_cmd_sn,
                    max_cmd_sn: conn.max_cmd_sn(),
                    ..Default::default()
                };
                conn.send(pdu(Header::TextResponse(r), Bytes::from(body)))
                    .await?;
            }
            Header::LogoutRequest(h) => {
                let r = LogoutResponse {
                    response: 0,
                    itt: h.itt,
                    stat_sn: conn.next_stat(),
                    exp_cmd_sn: conn.exp_cmd_sn,
                    max_cmd_sn: conn.max_cmd_sn(),
                    time2wait: 0,
                    time2retain: 0,
                };
                conn.send(pdu(Header::LogoutResponse(r), Bytes::new()))
                    .await?;
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}
