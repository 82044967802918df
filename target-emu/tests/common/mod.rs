//! A minimal test-only iSCSI initiator speaking to an in-process target
//! over `tokio::io::duplex`, built on busrig-proto's PDU codec, text and
//! CHAP modules. It does exactly what each test asks and nothing more, so
//! tests can also send what a real initiator never would.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrig_proto::chap::chap_md5_response;
use busrig_proto::pdu::{
    DataOut, Header, LoginRequest, LoginResponse, LogoutRequest, NopOut, Pdu, ScsiCommand,
    TaskMgmtRequest, TextRequest, WireConfig,
};
use busrig_proto::text::{self, TextPairs};
use busrig_target::config::Config;
use busrig_target::server::TargetServer;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const RESERVED: u32 = 0xffff_ffff;
pub const TARGET: &str = "iqn.2026-11.io.busrig:test";
pub const INITIATOR: &str = "iqn.2026-11.test:init1";

/// A small bus: one target with two LUNs of 1 MiB (512-byte blocks), with
/// extra TOML appended inside the `[[target]]` table (ACL, CHAP) and after
/// it (`[iscsi]` tunables, more targets).
pub fn config(target_extra: &str, tail: &str) -> String {
    format!(
        r#"
[[bus]]
name = "b0"
max_initiators = 4

[[target]]
name = "{TARGET}"
bus = "b0"
{target_extra}

[[target.lun]]
id = 0
size = "1MiB"

[[target.lun]]
id = 1
size = "1MiB"

{tail}
"#
    )
}

/// A target server on a temporary data directory.
pub struct Harness {
    pub server: Arc<TargetServer>,
    pub dir: tempfile::TempDir,
    next_conn: AtomicU32,
}

impl Harness {
    pub fn new(toml: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(toml, "test")
            .unwrap()
            .validate(dir.path())
            .unwrap();
        let server = TargetServer::build(config).unwrap();
        server
            .portal()
            .set_advertised_address("127.0.0.1:3260".parse().unwrap());
        Harness {
            server: Arc::new(server),
            dir,
            next_conn: AtomicU32::new(1),
        }
    }

    pub fn default() -> Harness {
        Harness::new(&config("", ""))
    }

    /// A new connection to the target, served in a background task.
    pub fn connect(&self) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let server = self.server.clone();
        tokio::spawn(async move { server.serve_stream(theirs, format!("duplex-{n}")).await });
        Client::over(ours, n)
    }

    /// A connection logged in to [`TARGET`] with default options.
    pub async fn session(&self, initiator: &str) -> Client {
        let mut c = self.connect();
        c.login(&LoginOpts::normal(initiator)).await.expect("login");
        c
    }
}

/// What a login offers.
#[derive(Clone)]
pub struct LoginOpts {
    pub initiator: String,
    pub target: Option<String>,
    pub isid: Option<[u8; 6]>,
    pub tsih: u16,
    /// CHAP name and secret; with `mutual`, also the target's expected
    /// name and secret.
    pub chap: Option<(String, Vec<u8>)>,
    pub mutual: Option<(String, Vec<u8>)>,
    pub ops: Vec<(&'static str, String)>,
}

impl LoginOpts {
    pub fn normal(initiator: &str) -> LoginOpts {
        LoginOpts {
            initiator: initiator.into(),
            target: Some(TARGET.into()),
            isid: None,
            tsih: 0,
            chap: None,
            mutual: None,
            ops: vec![
                ("HeaderDigest", "None".into()),
                ("DataDigest", "None".into()),
                ("MaxRecvDataSegmentLength", "8192".into()),
                ("InitialR2T", "No".into()),
                ("ImmediateData", "Yes".into()),
                ("FirstBurstLength", "4096".into()),
                ("MaxBurstLength", "16384".into()),
                ("MaxOutstandingR2T", "1".into()),
                ("ErrorRecoveryLevel", "0".into()),
                ("MaxConnections", "1".into()),
                ("DataPDUInOrder", "Yes".into()),
                ("DataSequenceInOrder", "Yes".into()),
                ("DefaultTime2Wait", "0".into()),
                ("DefaultTime2Retain", "0".into()),
            ],
        }
    }

    pub fn discovery(initiator: &str) -> LoginOpts {
        LoginOpts {
            target: None,
            ..LoginOpts::normal(initiator)
        }
    }

    pub fn set(mut self, key: &'static str, value: &str) -> LoginOpts {
        self.ops.retain(|(k, _)| *k != key);
        self.ops.push((key, value.into()));
        self
    }
}

/// A refused login: the status class and detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRefused(pub u8, pub u8);

/// The outcome of one SCSI command.
#[derive(Debug, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    pub overflow: bool,
    pub underflow: bool,
    pub residual: u32,
    /// Every R2T seen: (offset, length).
    pub r2ts: Vec<(u32, u32)>,
    /// Number of Data-In PDUs.
    pub data_ins: usize,
}

impl ScsiResult {
    pub fn sense_key(&self) -> u8 {
        self.sense.get(2).map(|b| b & 0x0f).unwrap_or(0)
    }
    pub fn asc(&self) -> (u8, u8) {
        (
            self.sense.get(12).copied().unwrap_or(0),
            self.sense.get(13).copied().unwrap_or(0),
        )
    }
}

/// One connection of the test initiator.
pub struct Client {
    rd: Box<dyn AsyncRead + Unpin + Send>,
    wr: Box<dyn AsyncWrite + Unpin + Send>,
    buf: BytesMut,
    rx_cfg: WireConfig,
    tx_cfg: WireConfig,
    pub itt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub isid: [u8; 6],
    pub tsih: u16,
}

pub fn pdu(header: impl Into<Header>, data: impl Into<Bytes>) -> Pdu {
    Pdu {
        header: header.into(),
        ahs: Bytes::new(),
        data: data.into(),
    }
}

pub fn lun_field(lun: u64) -> u64 {
    lun << 48
}

pub fn read10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn write10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

pub const TEST_UNIT_READY: [u8; 16] = [0; 16];

impl Client {
    /// A client over any stream (`n` makes its ISID and ITTs distinct).
    pub fn over<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, n: u32) -> Client {
        let (rd, wr) = tokio::io::split(stream);
        Client {
            rd: Box::new(rd),
            wr: Box::new(wr),
            buf: BytesMut::new(),
            rx_cfg: WireConfig {
                max_recv_data_segment_length: (1 << 24) - 1,
                ..Default::default()
            },
            tx_cfg: WireConfig::default(),
            itt: 0x1000 * n,
            cmd_sn: 1,
            exp_stat_sn: 0,
            isid: [0x80, 0, 0, 0, n as u8, 1],
            tsih: 0,
        }
    }

    /// Takes the write half out, e.g. to write from another task while this
    /// client reads; [`Client::give_writer`] puts it back.
    pub fn take_writer(&mut self) -> Box<dyn AsyncWrite + Unpin + Send> {
        std::mem::replace(&mut self.wr, Box::new(tokio::io::sink()))
    }

    pub fn give_writer(&mut self, wr: Box<dyn AsyncWrite + Unpin + Send>) {
        self.wr = wr;
    }

    /// Switches digests on both directions (after a login that chose them).
    pub fn set_digests(&mut self, header: bool, data: bool) {
        self.rx_cfg.header_digest = header;
        self.rx_cfg.data_digest = data;
        self.tx_cfg.header_digest = header;
        self.tx_cfg.data_digest = data;
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// Takes a CmdSN for a non-immediate request.
    pub fn next_cmd_sn(&mut self) -> u32 {
        let sn = self.cmd_sn;
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        sn
    }

    pub async fn send(&mut self, p: Pdu) {
        let bytes = p.to_bytes(&self.tx_cfg);
        self.wr.write_all(&bytes).await.expect("write to target");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write to target");
    }

    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// The next PDU, `None` when the target closed the connection, or an
    /// error after `wait`.
    pub async fn recv_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Pdu>, tokio::time::error::Elapsed> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(p) =
                    Pdu::decode(&mut self.buf, &self.rx_cfg).expect("target sent a bad PDU")
                {
                    if let Some(sn) = status_sn(&p.header) {
                        self.exp_stat_sn = sn.wrapping_add(1);
                    }
                    return Some(p);
                }
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// The next PDU; panics after 10 s or at end of stream.
    pub async fn recv(&mut self) -> Pdu {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("timed out waiting for a PDU")
            .expect("connection closed")
    }

    /// The next PDU that is not a target NOP-In ping (those are answered).
    pub async fn recv_skip_pings(&mut self) -> Pdu {
        loop {
            let p = self.recv().await;
            if let Header::NopIn(h) = &p.header {
                if h.itt == RESERVED && h.ttt != RESERVED {
                    self.answer_ping(h.ttt, h.lun).await;
                    continue;
                }
            }
            return p;
        }
    }

    pub async fn answer_ping(&mut self, ttt: u32, lun: u64) {
        let h = NopOut {
            immediate: true,
            lun,
            itt: RESERVED,
            ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(pdu(h, Bytes::new())).await;
    }

    /// Asserts the target closes the connection (possibly after some PDUs,
    /// returned).
    pub async fn expect_closed(&mut self) -> Vec<Pdu> {
        let mut seen = Vec::new();
        loop {
            match self.recv_within(Duration::from_secs(10)).await {
                Err(_) => panic!("connection not closed; saw {seen:?}"),
                Ok(None) => return seen,
                Ok(Some(p)) => seen.push(p),
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(p) = self.recv_within(wait).await {
            panic!("expected no PDU, got {p:?}");
        }
    }

    async fn login_request(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &TextPairs,
        itt: u32,
    ) -> (LoginResponse, TextPairs) {
        let h = LoginRequest {
            transit,
            continue_: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt,
            cid: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(pdu(h, Bytes::from(keys.to_bytes()))).await;
        let p = self.recv().await;
        let Header::LoginResponse(r) = p.header else {
            panic!("expected a login response, got {:?}", p.header)
        };
        let keys = TextPairs::parse(&p.data).expect("login response text");
        (r, keys)
    }

    /// Logs in; on success the connection is in full feature phase.
    pub async fn login(&mut self, opts: &LoginOpts) -> Result<TextPairs, LoginRefused> {
        if let Some(isid) = opts.isid {
            self.isid = isid;
        }
        self.tsih = opts.tsih;
        let itt = self.next_itt();
        let mut all = TextPairs::new();
        let mut keys = TextPairs::new();
        keys.push("InitiatorName", opts.initiator.clone());
        match &opts.target {
            Some(t) => {
                keys.push("TargetName", t.clone());
                keys.push("SessionType", "Normal");
            }
            None => keys.push("SessionType", "Discovery"),
        }
        keys.push(
            "AuthMethod",
            if opts.chap.is_some() {
                "CHAP,None"
            } else {
                "None"
            },
        );
        let (r, k) = self
            .login_request(0, 1, opts.chap.is_none(), &keys, itt)
            .await;
        if r.status_class != 0 {
            return Err(LoginRefused(r.status_class, r.status_detail));
        }
        all.extend(k.clone());
        if let Some((name, secret)) = &opts.chap {
            assert_eq!(k.get("AuthMethod"), Some("CHAP"), "target picked {k:?}");
            assert!(!r.transit);
            let keys: TextPairs = [("CHAP_A", "5")].into_iter().collect();
            let (r, k) = self.login_request(0, 1, false, &keys, itt).await;
            if r.status_class != 0 {
                return Err(LoginRefused(r.status_class, r.status_detail));
            }
            let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
            let challenge = text::decode_binary(k.get("CHAP_C").unwrap()).unwrap();
            let mut keys = TextPairs::new();
            keys.push("CHAP_N", name.clone());
            keys.push(
                "CHAP_R",
                text::encode_hex(&chap_md5_response(id, secret, &challenge)),
            );
            let my_challenge = [0x3cu8; 16];
            if opts.mutual.is_some() {
                keys.push("CHAP_I", "77");
                keys.push("CHAP_C", text::encode_hex(&my_challenge));
            }
            let (r, k) = self.login_request(0, 1, true, &keys, itt).await;
            if r.status_class != 0 {
                return Err(LoginRefused(r.status_class, r.status_detail));
            }
            if let Some((tname, tsecret)) = &opts.mutual {
                assert_eq!(k.get("CHAP_N"), Some(tname.as_str()));
                let expect = text::encode_hex(&chap_md5_response(77, tsecret, &my_challenge));
                assert_eq!(
                    k.get("CHAP_R"),
                    Some(expect.as_str()),
                    "target's mutual CHAP response"
                );
            }
            assert!(r.transit, "security stage not left");
        }
        let mut keys = TextPairs::new();
        for (k, v) in &opts.ops {
            keys.push(*k, v.clone());
        }
        let mut answers = TextPairs::new();
        for _ in 0..4 {
            let send = if answers.is_empty() {
                keys.clone()
            } else {
                answers.clone()
            };
            let (r, k) = self.login_request(1, 3, true, &send, itt).await;
            if r.status_class != 0 {
                return Err(LoginRefused(r.status_class, r.status_detail));
            }
            all.extend(k.clone());
            if r.transit {
                assert_eq!(r.nsg, 3);
                self.tsih = r.tsih;
                assert_ne!(self.tsih, 0, "final login response must carry a TSIH");
                let mrdsl =
                    |key: &str, set: &TextPairs| set.get(key).and_then(|v| v.parse::<u32>().ok());
                if let Some(m) = mrdsl("MaxRecvDataSegmentLength", &k) {
                    self.tx_cfg.max_recv_data_segment_length = m;
                }
                return Ok(all);
            }
            // Accept whatever the target offered on its own.
            answers = TextPairs::new();
            for (key, v) in k.iter() {
                if !opts.ops.iter().any(|(o, _)| *o == key) && key != "MaxRecvDataSegmentLength" {
                    answers.push(key, v);
                }
            }
        }
        panic!("login did not reach full feature phase");
    }

    /// Sends a SCSI command and collects its whole outcome, answering R2Ts
    /// from `write` (data beyond what was sent as immediate/unsolicited).
    pub async fn command(
        &mut self,
        lun: u64,
        cdb: [u8; 16],
        edtl: u32,
        write: Option<&[u8]>,
        read: bool,
    ) -> ScsiResult {
        self.command_opts(lun, cdb, edtl, write, read, CommandOpts::default())
            .await
    }

    pub async fn command_opts(
        &mut self,
        lun: u64,
        cdb: [u8; 16],
        edtl: u32,
        write: Option<&[u8]>,
        read: bool,
        opts: CommandOpts,
    ) -> ScsiResult {
        let itt = self.next_itt();
        let cmd_sn = self.next_cmd_sn();
        let data = write.map(Bytes::copy_from_slice).unwrap_or_default();
        let immediate_len = data.len().min(opts.immediate as usize);
        let unsolicited_end = data.len().min(opts.unsolicited as usize).max(immediate_len);
        let h = ScsiCommand {
            immediate: false,
            final_: unsolicited_end == immediate_len,
            read,
            write: write.is_some(),
            attr: 1,
            lun: lun_field(lun),
            itt,
            expected_data_transfer_length: edtl,
            cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb,
        };
        self.send(pdu(h, data.slice(..immediate_len))).await;
        // Unsolicited Data-Out (InitialR2T=No), one PDU per 1 KiB.
        let mut off = immediate_len;
        let mut sn = 0;
        while off < unsolicited_end {
            let end = (off + 1024).min(unsolicited_end);
            let d = DataOut {
                final_: end == unsolicited_end,
                lun: lun_field(lun),
                itt,
                ttt: RESERVED,
                exp_stat_sn: self.exp_stat_sn,
                data_sn: sn,
                buffer_offset: off as u32,
            };
            self.send(pdu(d, data.slice(off..end))).await;
            off = end;
            sn += 1;
        }
        let mut res = ScsiResult::default();
        loop {
            let p = self.recv_skip_pings().await;
            match p.header {
                Header::R2t(r) => {
                    assert_eq!(r.itt, itt);
                    res.r2ts
                        .push((r.buffer_offset, r.desired_data_transfer_length));
                    // Answer in PDUs of at most the target's MaxRecvDataSegmentLength.
                    let seg = self.tx_cfg.max_recv_data_segment_length as usize;
                    let start = r.buffer_offset as usize;
                    let end = start + r.desired_data_transfer_length as usize;
                    let mut off = start;
                    let mut sn = 0;
                    while off < end {
                        let e = (off + seg).min(end);
                        let d = DataOut {
                            final_: e == end,
                            lun: lun_field(lun),
                            itt,
                            ttt: r.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: sn,
                            buffer_offset: off as u32,
                        };
                        self.send(pdu(d, data.slice(off..e))).await;
                        off = e;
                        sn += 1;
                    }
                }
                Header::DataIn(d) => {
                    assert_eq!(d.itt, itt);
                    assert_eq!(d.data_sn as usize, res.data_ins, "DataSN in order");
                    assert_eq!(
                        d.buffer_offset as usize,
                        res.data.len(),
                        "Data-In offsets contiguous"
                    );
                    assert!(
                        p.data.len() <= 8192,
                        "Data-In above our MaxRecvDataSegmentLength"
                    );
                    res.data.extend_from_slice(&p.data);
                    res.data_ins += 1;
                    if d.status_present {
                        res.status = d.status;
                        res.overflow = d.overflow;
                        res.underflow = d.underflow;
                        res.residual = d.residual_count;
                        return res;
                    }
                }
                Header::ScsiResponse(r) => {
                    assert_eq!(r.itt, itt);
                    res.status = r.status;
                    res.overflow = r.overflow;
                    res.underflow = r.underflow;
                    res.residual = r.residual_count;
                    res.sense = busrig_proto::pdu::parse_sense_segment(&p.data)
                        .unwrap_or_default()
                        .to_vec();
                    return res;
                }
                other => panic!("unexpected PDU during a command: {other:?}"),
            }
        }
    }

    /// A command that must succeed; clears a first unit attention.
    pub async fn tur(&mut self, lun: u64) -> u8 {
        self.command(lun, TEST_UNIT_READY, 0, None, false)
            .await
            .status
    }

    /// TEST UNIT READY until GOOD (unit attentions after login or reset).
    pub async fn tur_until_good(&mut self, lun: u64) {
        for _ in 0..8 {
            if self.tur(lun).await == 0 {
                return;
            }
        }
        panic!("TEST UNIT READY never GOOD");
    }

    pub async fn read(&mut self, lun: u64, lba: u32, blocks: u16) -> Vec<u8> {
        let r = self
            .command(
                lun,
                read10(lba, blocks),
                u32::from(blocks) * 512,
                None,
                true,
            )
            .await;
        assert_eq!(r.status, 0, "READ failed: {r:?}");
        r.data
    }

    pub async fn write(&mut self, lun: u64, lba: u32, data: &[u8]) -> ScsiResult {
        let blocks = (data.len() / 512) as u16;
        self.command(
            lun,
            write10(lba, blocks),
            data.len() as u32,
            Some(data),
            false,
        )
        .await
    }

    pub async fn nop_ping(&mut self, data: &[u8]) -> Pdu {
        let itt = self.next_itt();
        let h = NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(pdu(h, Bytes::copy_from_slice(data))).await;
        self.recv_skip_pings().await
    }

    pub async fn tmf(&mut self, function: u8, lun: u64, rtt: u32, ref_cmd_sn: u32) -> u8 {
        let itt = self.next_itt();
        let h = TaskMgmtRequest {
            immediate: true,
            function,
            lun: lun_field(lun),
            itt,
            referenced_task_tag: rtt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        };
        self.send(pdu(h, Bytes::new())).await;
        let p = self.recv_skip_pings().await;
        let Header::TaskMgmtResponse(r) = p.header else {
            panic!("expected a TMF response, got {:?}", p.header)
        };
        assert_eq!(r.itt, itt);
        r.response
    }

    pub async fn text(&mut self, keys: &[(&str, &str)]) -> TextPairs {
        let itt = self.next_itt();
        let cmd_sn = self.next_cmd_sn();
        let kv: TextPairs = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let h = TextRequest {
            immediate: false,
            final_: true,
            continue_: false,
            lun: 0,
            itt,
            ttt: RESERVED,
            cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(pdu(h, Bytes::from(kv.to_bytes()))).await;
        let p = self.recv_skip_pings().await;
        let Header::TextResponse(r) = p.header else {
            panic!("expected a text response, got {:?}", p.header)
        };
        assert!(r.final_);
        TextPairs::parse_allow_repeats(&p.data).unwrap()
    }

    /// Logout (close session); returns the response code and waits for the
    /// close.
    pub async fn logout(&mut self) -> u8 {
        let itt = self.next_itt();
        let h = LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cid: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(pdu(h, Bytes::new())).await;
        let p = self.recv_skip_pings().await;
        let Header::LogoutResponse(r) = p.header else {
            panic!("expected a logout response, got {:?}", p.header)
        };
        assert_eq!(r.itt, itt);
        self.expect_closed().await;
        r.response
    }
}

/// How much of a write goes without R2T.
#[derive(Debug, Clone, Copy)]
pub struct CommandOpts {
    /// Bytes sent as immediate data with the command.
    pub immediate: u32,
    /// Bytes sent (immediate included) before waiting for R2Ts.
    pub unsolicited: u32,
}

impl Default for CommandOpts {
    fn default() -> Self {
        CommandOpts {
            immediate: 4096,
            unsolicited: 4096,
        }
    }
}

fn status_sn(h: &Header) -> Option<u32> {
    match h {
        Header::ScsiResponse(r) => Some(r.stat_sn),
        Header::DataIn(d) if d.status_present => Some(d.stat_sn),
        Header::NopIn(n) if n.itt != RESERVED => Some(n.stat_sn),
        Header::TaskMgmtResponse(r) => Some(r.stat_sn),
        Header::TextResponse(r) => Some(r.stat_sn),
        Header::LogoutResponse(r) => Some(r.stat_sn),
        Header::Reject(r) => Some(r.stat_sn),
        Header::LoginResponse(r) => Some(r.stat_sn),
        _ => None,
    }
}

/// The token the tests' control planes are started with.
pub const CONTROL_TOKEN: &str = "control-token-for-tests";

/// Serves `c` on a loopback socket with [`CONTROL_TOKEN`] until the sender
/// is dropped or fired.
pub async fn serve_control(
    c: &busrig_target::control::Control,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        busrig_http::Server::new(c.clone().router())
            .token(Some(CONTROL_TOKEN.into()))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    (addr, stop, server)
}

/// One request to a control plane served for it on a loopback socket,
/// presenting `token`: the status and the JSON answer.
pub async fn control_request_as(
    c: &busrig_target::control::Control,
    method: &str,
    path: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (addr, stop, server) = serve_control(c).await;
    let answer = busrig_http::request(&addr, method, path, Some(&body), token)
        .await
        .unwrap();
    let _ = stop.send(());
    server.await.unwrap();
    answer
}
