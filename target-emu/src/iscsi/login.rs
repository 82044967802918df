//! The login phase of one connection (RFC 7143 §6.3, §11.12, §11.13).
//!
//! ```text
//! Login Request  CSG=0 (security)     ---->  AuthMethod, CHAP_A ...
//!                                     <----  TargetPortalGroupTag, AuthMethod, CHAP_C ...
//! Login Request  CSG=0 T=1 NSG=1      ---->  CHAP_N, CHAP_R [CHAP_I, CHAP_C]
//!                                     <----  [CHAP_N, CHAP_R]  T=1
//! Login Request  CSG=1 T=1 NSG=3      ---->  HeaderDigest, MaxRecvDataSegmentLength ...
//!                                     <----  answers, TSIH       T=1 -> full feature phase
//! ```
//!
//! Key negotiation itself is `busrig_proto::negotiation::TargetNegotiator`;
//! this module checks the PDU fields, finds the target, applies the ACL, the
//! bus's initiator limit and the TSIH rules, and on success enters the
//! session in the portal's table (reinstating an older one if needed).

use std::sync::Arc;
use std::time::Duration;

use busrig_lograte::Verdict;
use busrig_proto::chap::{ChapCredentials, ChapTarget, ChapTargetConfig};
use busrig_proto::negotiation::{
    AuthMethod, DigestType, OperationalValues, SessionParams, SessionType, Stage, TargetLimits,
    TargetNegotiator,
};
use busrig_proto::pdu::{login_status, Header, LoginRequest, LoginResponse, Pdu, WireConfig};
use busrig_proto::text::{TextAccumulator, TextPairs};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::codec::{CodecError, PduReader, PduWriter};
use super::session::{NewSession, SessionHandle};
use super::throttle::{LoginKey, Source};
use super::Portal;
use crate::nexus::ItNexus;

/// How long a login may wait for the initiator's next request. RFC 7143
/// leaves this to the implementation; without it an idle socket could hold
/// a half-open login forever.
pub const LOGIN_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a whole login may take, so a peer trickling requests cannot
/// hold a login open forever either.
pub const LOGIN_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// MaxRecvDataSegmentLength in force during login (RFC 7143 §13.12).
const LOGIN_MAX_SEGMENT: usize = 8192;

/// The only version RFC 7143 defines (§11.12.4).
const ISCSI_VERSION: u8 = 0;

/// A session that reached full feature phase.
pub struct Established {
    pub handle: Arc<SessionHandle>,
    pub kind: SessionKind,
    pub params: SessionParams,
    pub negotiator: TargetNegotiator,
    pub cid: u16,
    /// CmdSN of the login requests: the first ExpCmdSN (RFC 7143 §4.2.2.1).
    pub exp_cmd_sn: u32,
    /// The next StatSN on this connection.
    pub stat_sn: u32,
    /// Framing for reading (our limit) and writing (the initiator's limit).
    pub rx_wire: WireConfig,
    pub tx_wire: WireConfig,
}

/// What kind of session logged in.
#[derive(Debug, Clone)]
pub enum SessionKind {
    Discovery,
    Normal { target: usize, nexus: ItNexus },
}

/// Why a login ended without a session; logged by the caller.
#[derive(Debug, thiserror::Error)]
pub enum LoginFailure {
    /// We refused the login with this status (sent to the initiator).
    #[error("refused with status {:02x}/{:02x}: {reason}", .status.0, .status.1)]
    Refused { status: (u8, u8), reason: String },
    /// The connection closed or failed during login.
    #[error("connection: {0}")]
    Connection(String),
    /// The initiator did not send its next request in time.
    #[error("login timed out")]
    TimedOut,
    /// The portal is shutting down.
    #[error("shutting down")]
    Shutdown,
}

fn refused(status: (u8, u8), reason: impl Into<String>) -> LoginFailure {
    LoginFailure::Refused {
        status,
        reason: reason.into(),
    }
}

/// The fixed fields of the first request that every later one must repeat
/// (RFC 7143 §11.12: ISID, TSIH, CID and ITT identify the login).
#[derive(Debug, Clone, Copy)]
struct Identity {
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
}

/// Everything decided from the first request.
struct Start {
    kind_target: Option<usize>,
    initiator: String,
    negotiator: TargetNegotiator,
}

/// State of one login, advanced one request at a time.
struct Login<'a> {
    portal: &'a Arc<Portal>,
    peer: &'a str,
    id: Option<Identity>,
    start: Option<Start>,
    stage: Stage,
    text: TextAccumulator,
    stat_sn: u32,
    /// InitiatorName and TargetName of the first request, for the log
    /// and the failed-login delay.
    asked: Option<(String, String)>,
}

/// Runs the login on a fresh connection. On success the final Login
/// Response has been sent and the session is in the portal's table.
pub async fn run<R, W>(
    portal: &Arc<Portal>,
    rx: &mut PduReader<R>,
    tx: &mut PduWriter<W>,
    peer: &str,
    shutdown: &CancellationToken,
) -> Result<Established, LoginFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut login = Login {
        portal,
        peer,
        id: None,
        start: None,
        stage: Stage::Security,
        text: TextAccumulator::new(),
        stat_sn: 0,
        asked: None,
    };
    let give_up = tokio::time::Instant::now() + LOGIN_TOTAL_TIMEOUT;
    loop {
        let step_deadline = (tokio::time::Instant::now() + LOGIN_STEP_TIMEOUT).min(give_up);
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Err(LoginFailure::Shutdown),
            r = tokio::time::timeout_at(step_deadline, rx.next()) => r,
        };
        let pdu = match next {
            Err(_) => return Err(LoginFailure::TimedOut),
            Ok(None) => return Err(LoginFailure::Connection("closed by initiator".into())),
            Ok(Some(Err(CodecError::Io(e)))) => {
                return Err(LoginFailure::Connection(e.to_string()))
            }
            // Any PDU error during login ends it: there is no Reject in the
            // login phase (RFC 7143 §6.3: errors end the login).
            Ok(Some(Err(CodecError::Pdu(e)))) => {
                return Err(LoginFailure::Connection(format!("bad PDU: {e}")))
            }
            Ok(Some(Ok(pdu))) => pdu,
        };
        let req = match pdu.header {
            Header::LoginRequest(req) => req,
            other => {
                // RFC 7143 §11.13.5, 02/0b: a non-login request during login.
                let fail = refused(
                    login_status::INVALID_DURING_LOGIN,
                    format!("opcode {:#04x} during login", other.opcode()),
                );
                let resp = login.failure_response(other.itt(), &fail);
                send(tx, resp).await?;
                return Err(fail);
            }
        };
        match login.step(&req, &pdu.data).await {
            Ok(Step::Continue(resp)) => send(tx, resp).await?,
            Ok(Step::Done(resp, est)) => {
                if let Err(e) = send(tx, resp).await {
                    // The session was admitted; undo it.
                    est.handle.ended.cancel();
                    portal.sessions.remove(&est.handle);
                    return Err(e);
                }
                portal
                    .login_throttle
                    .lock()
                    .unwrap()
                    .succeeded(&login.key());
                return Ok(*est);
            }
            Err(fail) => {
                let delay = login.refusal(&req, &fail);
                if !delay.is_zero() {
                    // RFC 7143 §12.1.3 leaves guessing limits to the
                    // implementation: this connection alone waits before
                    // its refusal (docs/semantics.md "The wire").
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(LoginFailure::Shutdown),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let resp = login.failure_response(req.itt, &fail);
                send(tx, resp).await?;
                return Err(fail);
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(tx: &mut PduWriter<W>, pdu: Pdu) -> Result<(), LoginFailure> {
    tx.send(pdu)
        .await
        .map_err(|e| LoginFailure::Connection(e.to_string()))
}

enum Step {
    Continue(Pdu),
    Done(Pdu, Box<Established>),
}

impl Login<'_> {
    /// Whose failures this login counts towards.
    fn key(&self) -> LoginKey {
        LoginKey {
            initiator: self
                .asked
                .as_ref()
                .map(|(i, _)| i.clone())
                .unwrap_or_default(),
            source: Source::of_peer(self.peer),
        }
    }

    /// Records and logs a refusal; returns how long to wait before sending
    /// it. Only failed authentication is delayed: the other refusals give
    /// away nothing a guesser could use.
    fn refusal(&self, req: &LoginRequest, fail: &LoginFailure) -> Duration {
        let key = self.key();
        let auth_failed = matches!(
            fail,
            LoginFailure::Refused { status, .. } if *status == login_status::AUTHENTICATION_FAILURE
        );
        // Tokio's clock, so tests can run it paused.
        let now = tokio::time::Instant::now().into_std();
        let (delay, verdict) = {
            let mut t = self.portal.login_throttle.lock().unwrap();
            let delay = if auth_failed {
                t.failed(&key, now)
            } else {
                Duration::ZERO
            };
            (delay, t.log_refusal(&key, now))
        };
        let Verdict::Log { suppressed } = verdict else {
            return delay;
        };
        let target = self.asked.as_ref().map_or("", |(_, t)| t.as_str());
        let isid: String = req.isid.iter().map(|b| format!("{b:02x}")).collect();
        let held_back = if suppressed > 0 {
            format!(
                " ({suppressed} more refusals of this initiator from this address not logged since the last line)"
            )
        } else {
            String::new()
        };
        let delay_ms = delay.as_millis() as u64;
        if auth_failed {
            tracing::warn!(
                initiator = %key.initiator, %isid, %target, peer = %self.peer, delay_ms, suppressed,
                "login refused: {fail}; the refusal waits {delay_ms} ms{held_back}"
            );
        } else {
            tracing::info!(
                initiator = %key.initiator, %isid, %target, peer = %self.peer, suppressed,
                "login refused: {fail}{held_back}"
            );
        }
        delay
    }

    fn response(&mut self, req: &LoginRequest) -> LoginResponse {
        let cmd_sn = self.id.map(|i| i.cmd_sn).unwrap_or(req.cmd_sn);
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit: false,
            continue_: false,
            csg: req.csg,
            nsg: req.nsg,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: cmd_sn,
            max_cmd_sn: cmd_sn.wrapping_add(self.portal.tuning.queue_depth.max(1) - 1),
            status_class: 0,
            status_detail: 0,
        }
    }

    /// The Login Response that refuses the login (RFC 7143 §11.13.5).
    fn failure_response(&mut self, itt: u32, fail: &LoginFailure) -> Pdu {
        let status = match fail {
            LoginFailure::Refused { status, .. } => *status,
            _ => login_status::TARGET_ERROR,
        };
        let req = LoginRequest {
            itt,
            isid: self.id.map(|i| i.isid).unwrap_or_default(),
            tsih: self.id.map(|i| i.tsih).unwrap_or_default(),
            csg: self.stage.code(),
            nsg: self.stage.code(),
            ..Default::default()
        };
        let mut h = self.response(&req);
        h.status_class = status.0;
        h.status_detail = status.1;
        Pdu {
            header: Header::LoginResponse(h),
            ahs: Bytes::new(),
            data: Bytes::new(),
        }
    }

    async fn step(&mut self, req: &LoginRequest, data: &Bytes) -> Result<Step, LoginFailure> {
        self.check_fields(req)?;
        let Some(keys) = self
            .text
            .push(data, req.continue_)
            .map_err(|e| refused(e.login_status(), format!("login text: {e}")))?
        else {
            // More text follows (C bit): acknowledge with an empty response
            // and wait (RFC 7143 §11.12.2).
            let h = self.response(req);
            return Ok(Step::Continue(Pdu {
                header: Header::LoginResponse(h),
                ahs: Bytes::new(),
                data: Bytes::new(),
            }));
        };
        if self.start.is_none() {
            self.start = Some(self.first_request(req, &keys)?);
        }
        let stage = self.stage;
        let start = self.start.as_mut().expect("set above");
        let out = start
            .negotiator
            .on_login_request(stage, &keys)
            .map_err(|e| refused(e.login_status(), format!("negotiation: {e}")))?;

        let mut transit = false;
        let mut nsg = req.nsg;
        if req.transit {
            transit = start
                .negotiator
                .ready_to_leave(stage)
                .map_err(|e| refused(e.login_status(), format!("leaving {stage:?}: {e}")))?;
            if !transit {
                nsg = req.csg;
            }
        }
        let entering_ffp = transit && nsg == Stage::FullFeature.code();
        if entering_ffp && !start.negotiator.is_authenticated() {
            return Err(refused(
                login_status::AUTHENTICATION_FAILURE,
                "full feature phase requested before authentication",
            ));
        }
        // Text must fit the initiator's receive limit, 8192 during login
        // (RFC 7143 §13.12). Our answers are a few hundred bytes, so a
        // longer one means something is wrong rather than a need for
        // C-bit continuation.
        let encoded = out.to_bytes();
        if encoded.len() > LOGIN_MAX_SEGMENT {
            return Err(refused(
                login_status::TARGET_ERROR,
                "login response text too long",
            ));
        }
        let mut h = self.response(req);
        h.transit = transit;
        h.nsg = if transit { nsg } else { req.csg };
        if entering_ffp {
            let est = self.establish().await?;
            h.tsih = est.handle.tsih;
            let data = Bytes::from(out.to_bytes());
            let pdu = Pdu {
                header: Header::LoginResponse(h),
                ahs: Bytes::new(),
                data,
            };
            return Ok(Step::Done(pdu, Box::new(est)));
        }
        if transit {
            self.stage = Stage::from_code(nsg).unwrap_or(self.stage);
        }
        Ok(Step::Continue(Pdu {
            header: Header::LoginResponse(h),
            ahs: Bytes::new(),
            data: Bytes::from(encoded),
        }))
    }

    /// Field checks of every request (RFC 7143 §11.12).
    fn check_fields(&mut self, req: &LoginRequest) -> Result<(), LoginFailure> {
        match self.id {
            None => {
                // RFC 7143 §11.12.4-5: we speak version 0 only.
                if req.version_min > ISCSI_VERSION {
                    return Err(refused(
                        login_status::UNSUPPORTED_VERSION,
                        format!(
                            "version range {}..{} excludes 0",
                            req.version_min, req.version_max
                        ),
                    ));
                }
                self.id = Some(Identity {
                    isid: req.isid,
                    tsih: req.tsih,
                    cid: req.cid,
                    cmd_sn: req.cmd_sn,
                });
                self.stat_sn = req.exp_stat_sn;
            }
            Some(id) => {
                if id.isid != req.isid || id.tsih != req.tsih || id.cid != req.cid {
                    return Err(refused(
                        login_status::INITIATOR_ERROR,
                        "ISID, TSIH or CID changed during login",
                    ));
                }
            }
        }
        let csg = Stage::from_code(req.csg)
            .filter(|s| *s != Stage::FullFeature)
            .ok_or_else(|| {
                refused(
                    login_status::INITIATOR_ERROR,
                    format!("invalid CSG {}", req.csg),
                )
            })?;
        // The first request may skip the security stage (RFC 7143 §6.3);
        // afterwards CSG must be the stage we are in.
        if self.start.is_none() && !self.text.is_pending() {
            self.stage = csg;
        } else if csg != self.stage {
            return Err(refused(
                login_status::INITIATOR_ERROR,
                format!(
                    "CSG {} but the login is in stage {}",
                    req.csg,
                    self.stage.code()
                ),
            ));
        }
        if req.transit {
            let ok = match csg {
                Stage::Security => matches!(req.nsg, 1 | 3),
                Stage::Operational => req.nsg == 3,
                Stage::FullFeature => false,
            };
            if !ok {
                return Err(refused(
                    login_status::INITIATOR_ERROR,
                    format!("invalid transit {} -> {}", req.csg, req.nsg),
                ));
            }
            if req.continue_ {
                // RFC 7143 §11.12.2: T and C must not both be set.
                return Err(refused(
                    login_status::INITIATOR_ERROR,
                    "T and C bits both set",
                ));
            }
        }
        Ok(())
    }

    /// Decisions made once the first request's keys are known.
    fn first_request(
        &mut self,
        req: &LoginRequest,
        keys: &TextPairs,
    ) -> Result<Start, LoginFailure> {
        // Named in every refusal logged from here on, even when the names
        // turn out to be wrong.
        self.asked = Some((
            keys.get("InitiatorName")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            match keys.get("SessionType") {
                Some(t) if t.eq_ignore_ascii_case("Discovery") => "(discovery)".into(),
                _ => keys.get("TargetName").unwrap_or_default().to_string(),
            },
        ));
        let initiator = match keys.get("InitiatorName") {
            Some(n) if !n.is_empty() => n.to_ascii_lowercase(),
            _ => {
                return Err(refused(
                    login_status::MISSING_PARAMETER,
                    "InitiatorName missing",
                ))
            }
        };
        let session_type = match keys.get("SessionType") {
            None => SessionType::Normal,
            Some(v) => SessionType::parse(v).ok_or_else(|| {
                refused(
                    login_status::SESSION_TYPE_NOT_SUPPORTED,
                    format!("SessionType {v:?}"),
                )
            })?,
        };
        let portal = self.portal;
        let tuning = &portal.tuning;
        let mut limits = TargetLimits {
            operational: OperationalValues {
                max_recv_data_segment_length: tuning.max_recv_data_segment_length,
                max_burst_length: tuning.max_burst_length,
                first_burst_length: tuning.first_burst_length,
                // Several R2Ts in flight keep large writes streaming; the
                // initiator's offer (min function) usually brings it down.
                max_outstanding_r2t: 16,
                initial_r2t: false,
                immediate_data: true,
                header_digests: vec![DigestType::None, DigestType::Crc32c],
                data_digests: vec![DigestType::None, DigestType::Crc32c],
                max_connections: 1,
                error_recovery_level: 0,
                ..OperationalValues::default()
            },
            auth_methods: vec![AuthMethod::None],
            portal_group_tag: None,
            allow_discovery: true,
            ..TargetLimits::default()
        };
        let target = match session_type {
            SessionType::Discovery => None,
            SessionType::Normal => {
                let name = match keys.get("TargetName") {
                    Some(n) if !n.is_empty() => n,
                    _ => {
                        return Err(refused(
                            login_status::MISSING_PARAMETER,
                            "TargetName missing",
                        ))
                    }
                };
                let idx = portal.target_index(name).ok_or_else(|| {
                    refused(login_status::NOT_FOUND, format!("no target named {name}"))
                })?;
                Some(idx)
            }
        };

        // A nonzero TSIH adds a connection to an existing session
        // (RFC 7143 §6.3.1). We negotiate MaxConnections=1, so that is
        // always refused; an unknown TSIH is "session does not exist".
        if req.tsih != 0 {
            return Err(match portal.sessions.by_tsih(req.tsih) {
                None => refused(
                    login_status::SESSION_DOES_NOT_EXIST,
                    format!("TSIH {} unknown", req.tsih),
                ),
                Some(_) => refused(
                    login_status::TOO_MANY_CONNECTIONS,
                    format!("TSIH {}: MaxConnections is 1", req.tsih),
                ),
            });
        }

        let mut chap = None;
        if let Some(t) = target {
            let pt = portal
                .target(t)
                .ok_or_else(|| refused(login_status::NOT_FOUND, "the target has been removed"))?;
            if !pt.def.admits(&initiator) {
                return Err(refused(
                    login_status::AUTHORIZATION_FAILURE,
                    format!("{initiator} is not in the ACL of {}", pt.def.name),
                ));
            }
            portal.check_bus_room(t, &initiator)?;
            limits.portal_group_tag = Some(pt.def.tpgt);
            if let Some(c) = &pt.def.chap {
                limits.auth_methods = vec![AuthMethod::Chap];
                let initiator_creds = ChapCredentials::new(c.user.clone(), &c.secret);
                let config = match &c.mutual {
                    None => ChapTargetConfig::one_way(initiator_creds),
                    Some((user, secret)) => ChapTargetConfig::mutual(
                        initiator_creds,
                        ChapCredentials::new(user.clone(), secret),
                    ),
                };
                // A fresh identifier and challenge for every login
                // (RFC 1994 §2.3; RFC 7143 §12.1.3).
                chap = Some(ChapTarget::new(config, rand::random(), rand::random()));
            }
        }
        let mut negotiator = TargetNegotiator::new(limits);
        if let Some(chap) = chap {
            negotiator.set_chap(chap);
        }
        tracing::debug!(peer = self.peer, initiator = %initiator, ?session_type, "login started");
        Ok(Start {
            kind_target: target,
            initiator,
            negotiator,
        })
    }

    /// Enters the session in the table (closing the one it reinstates) and
    /// fixes the session's parameters.
    async fn establish(&mut self) -> Result<Established, LoginFailure> {
        let id = self.id.expect("identity is set by the first request");
        let start = self
            .start
            .as_ref()
            .expect("start is set by the first request");
        let portal = self.portal;
        let (kind, nexus) = match start.kind_target {
            None => (SessionKind::Discovery, None),
            Some(t) => {
                let pt = portal.target(t).ok_or_else(|| {
                    refused(login_status::NOT_FOUND, "the target has been removed")
                })?;
                let def = &pt.def;
                let nexus = ItNexus::new(&start.initiator, id.isid, &def.name, def.tpgt);
                (
                    SessionKind::Normal {
                        target: t,
                        nexus: nexus.clone(),
                    },
                    Some(nexus),
                )
            }
        };
        // Check the bus limit again: another initiator may have logged in
        // while this login was negotiating.
        if let Some(t) = start.kind_target {
            portal.check_bus_room(t, &start.initiator)?;
        }
        let (handle, old) = portal
            .sessions
            .admit(NewSession {
                initiator: start.initiator.clone(),
                isid: id.isid,
                target: start.kind_target,
                nexus,
                peer: self.peer.to_string(),
            })
            .map_err(|_| refused(login_status::OUT_OF_RESOURCES, "no free TSIH"))?;
        if let Some(old) = old {
            // Session reinstatement (RFC 7143 §6.3.5): the old session is
            // closed, its tasks aborted and its nexus loss reported before
            // the new session may issue commands.
            tracing::info!(
                initiator = %old.initiator,
                isid = %old.isid_hex(),
                old_tsih = old.tsih,
                new_tsih = handle.tsih,
                peer = self.peer,
                "session reinstatement: closing the old session"
            );
            old.kill.cancel();
            old.ended.cancelled().await;
        }
        let params = start.negotiator.params().clone();
        let rx_wire = WireConfig {
            header_digest: params.header_digest == DigestType::Crc32c,
            data_digest: params.data_digest == DigestType::Crc32c,
            max_recv_data_segment_length: params.local_max_recv_data_segment_length,
        };
        let tx_wire = WireConfig {
            max_recv_data_segment_length: params.peer_max_recv_data_segment_length,
            ..rx_wire
        };
        Ok(Established {
            handle,
            kind,
            params,
            negotiator: start.negotiator.clone(),
            cid: id.cid,
            exp_cmd_sn: id.cmd_sn,
            stat_sn: self.stat_sn,
            rx_wire,
            tx_wire,
        })
    }
}
