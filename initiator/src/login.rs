//! The login phase from the initiator's side (RFC 7143 §6.3, §11.12,
//! §11.13), sans-IO: it turns each Login Response into the next Login
//! Request until the target moves us to full feature phase.
//!
//! ```text
//!  CSG=0 security ──T=1──► CSG=1 operational ──T=1──► full feature (NSG=3)
//!  InitiatorName, TargetName,      HeaderDigest, DataDigest, MaxRecvDataSegmentLength,
//!  SessionType, AuthMethod,        MaxBurstLength, FirstBurstLength, ImmediateData,
//!  CHAP_A / CHAP_N,CHAP_R[,I,C]    InitialR2T, ErrorRecoveryLevel=0, MaxConnections=1 ...
//! ```
//!
//! Key negotiation and CHAP are `busrig_proto::negotiation` and
//! `busrig_proto::chap`; this module owns the PDU fields (stages, T and C
//! bits, ISID/TSIH, sequence numbers), login status handling and the
//! mutual-CHAP rule that the target must prove itself before we leave the
//! security stage.

use busrig_proto::chap::{self, ChapInitiator, MutualChap};
use busrig_proto::negotiation::{
    AuthMethod, DigestType, InitiatorConfig, InitiatorNegotiator, NegotiationError, SessionParams,
    SessionType, Stage,
};
use busrig_proto::pdu::{Header, LoginRequest, LoginResponse, Pdu};
use busrig_proto::text::{TextAccumulator, TextPairs};
use bytes::Bytes;

use crate::config::{DigestPreference, SessionConfig};
use crate::engine::SeqNumbers;
use crate::error::{login_status_name, Error};

/// Login text beyond this is refused: RFC 7143 §6.1 requires peers to
/// handle 8192 bytes per PDU; we never need more than one PDU.
const MAX_LOGIN_SEGMENT: usize = 8192;

/// A target that keeps a login going longer than this is broken.
const MAX_ROUND_TRIPS: u32 = 32;

/// What a finished login hands to the full feature phase.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub params: SessionParams,
    pub tsih: u16,
    pub sn: SeqNumbers,
}

/// What to do after a Login Response.
#[derive(Debug)]
pub enum LoginStep {
    /// Send this Login Request and wait for the next response.
    Send(Pdu),
    /// Full feature phase reached.
    Done(LoggedIn),
    /// The target redirects us (status class 1) to `address` (`host:port`).
    Redirect { address: String, permanent: bool },
}

fn digests(p: DigestPreference) -> Vec<DigestType> {
    match p {
        DigestPreference::None => vec![DigestType::None],
        DigestPreference::Crc32c => vec![DigestType::Crc32c],
        DigestPreference::PreferCrc32c => vec![DigestType::Crc32c, DigestType::None],
        DigestPreference::PreferNone => vec![DigestType::None, DigestType::Crc32c],
    }
}

fn clamp_len(v: u32) -> u32 {
    v.clamp(
        busrig_proto::negotiation::MIN_DATA_LENGTH,
        busrig_proto::negotiation::MAX_DATA_LENGTH,
    )
}

fn neg_error(e: NegotiationError) -> Error {
    match e {
        NegotiationError::Chap(c) => Error::Authentication(c.to_string()),
        NegotiationError::NoCommonAuthMethod | NegotiationError::AuthenticationRequired => {
            Error::Authentication(e.to_string())
        }
        other => Error::Negotiation(other.to_string()),
    }
}

/// One login attempt on one TCP connection.
#[derive(Debug)]
pub struct Login {
    neg: InitiatorNegotiator,
    isid: [u8; 6],
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    csg: Stage,
    accum: TextAccumulator,
    wants_mutual: bool,
    mutual_verified: bool,
    sent_challenge: bool,
    round_trips: u32,
}

impl Login {
    /// Prepares a login to `target` (a normal session) or a discovery
    /// session when `target` is `None`. `cmd_sn` is the session's first
    /// CmdSN; the Login Request carries it without consuming it (RFC 7143
    /// §11.12.6).
    pub fn new(cfg: &SessionConfig, target: Option<&str>, cmd_sn: u32) -> Login {
        let mut ic = InitiatorConfig::new(cfg.initiator_name.clone());
        ic.initiator_alias = cfg.initiator_alias.clone();
        ic.target_name = target.map(str::to_string);
        ic.session_type = if target.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        };
        let p = &cfg.proposal;
        ic.operational.header_digests = digests(p.header_digest);
        ic.operational.data_digests = digests(p.data_digest);
        ic.operational.max_recv_data_segment_length = clamp_len(p.max_recv_data_segment_length);
        ic.operational.max_burst_length = clamp_len(p.max_burst_length);
        ic.operational.first_burst_length = clamp_len(p.first_burst_length.min(p.max_burst_length));
        ic.operational.immediate_data = p.immediate_data;
        ic.operational.initial_r2t = p.initial_r2t;
        ic.operational.max_outstanding_r2t = p.max_outstanding_r2t.clamp(1, 65535) as u16;
        ic.operational.default_time2wait = p.default_time2wait.min(3600) as u16;
        ic.operational.default_time2retain = p.default_time2retain.min(3600) as u16;
        // busrig implements ErrorRecoveryLevel 0 and one connection per
        // session only (docs/semantics.md "The wire"), so that is all we offer.
        ic.operational.error_recovery_level = 0;
        ic.operational.max_connections = 1;
        ic.auth_methods = match (&cfg.chap, &cfg.mutual_chap) {
            // Mutual CHAP is the point: never let the target skip it.
            (Some(_), Some(_)) => vec![AuthMethod::Chap],
            // With credentials we prefer CHAP but accept a target without
            // authentication, as libiscsi and open-iscsi do.
            (Some(_), None) => vec![AuthMethod::Chap, AuthMethod::None],
            (None, _) => vec![AuthMethod::None],
        };
        let mut neg = InitiatorNegotiator::new(ic);
        if let Some(c) = &cfg.chap {
            let mutual = cfg.mutual_chap.as_ref().map(|m| {
                let mut challenge: [u8; 16] = rand::random();
                // A challenge of all zeros would be a poor one; RFC 1994 §2.3
                // wants it unpredictable, which random() gives.
                if challenge == [0; 16] {
                    challenge[0] = 1;
                }
                MutualChap {
                    target: chap::ChapCredentials::new(m.user.clone(), &m.secret),
                    id: rand::random(),
                    challenge,
                }
            });
            neg.set_chap(ChapInitiator::new(
                chap::ChapCredentials::new(c.user.clone(), &c.secret),
                mutual,
            ));
        }
        Login {
            neg,
            isid: cfg.isid.bytes(),
            itt: 0,
            cmd_sn,
            exp_stat_sn: 0,
            csg: Stage::Security,
            accum: TextAccumulator::new(),
            wants_mutual: cfg.chap.is_some() && cfg.mutual_chap.is_some(),
            mutual_verified: false,
            sent_challenge: false,
            round_trips: 0,
        }
    }

    fn request(&mut self, keys: TextPairs, allow_transit: bool) -> Result<Pdu, Error> {
        let transit = allow_transit && self.neg.ready_to_leave(self.csg).map_err(neg_error)?;
        let nsg = match self.csg {
            Stage::Security => Stage::Operational,
            _ => Stage::FullFeature,
        };
        if keys.contains_key("CHAP_C") {
            self.sent_challenge = true;
        }
        let data = keys.to_bytes();
        if data.len() > MAX_LOGIN_SEGMENT {
            return Err(Error::Negotiation(format!(
                "login text of {} bytes does not fit one PDU",
                data.len()
            )));
        }
        let hdr = LoginRequest {
            transit,
            continue_: false,
            csg: self.csg.code(),
            nsg: if transit { nsg.code() } else { 0 },
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            // TSIH 0 with our ISID: a new session, or the reinstatement of
            // the one we lost (RFC 7143 §6.3.5), which keeps the I_T nexus.
            tsih: 0,
            itt: self.itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        Ok(Pdu {
            header: Header::LoginRequest(hdr),
            ahs: Bytes::new(),
            data: Bytes::from(data),
        })
    }

    /// The first Login Request: security stage with names, SessionType and
    /// AuthMethod, asking to move on at once when no authentication is
    /// wanted.
    pub fn start(&mut self) -> Result<Pdu, Error> {
        let keys = self.neg.offer(Stage::Security);
        self.request(keys, true)
    }

    /// Takes one PDU received during login.
    pub fn on_pdu(&mut self, pdu: Pdu) -> Result<LoginStep, Error> {
        let Header::LoginResponse(h) = pdu.header else {
            return Err(Error::Protocol(format!(
                "opcode {:#04x} during login",
                pdu.header.opcode()
            )));
        };
        self.on_response(h, &pdu.data)
    }

    fn on_response(&mut self, h: LoginResponse, data: &[u8]) -> Result<LoginStep, Error> {
        self.round_trips += 1;
        if self.round_trips > MAX_ROUND_TRIPS {
            return Err(Error::Protocol("login did not finish".into()));
        }
        self.exp_stat_sn = h.stat_sn.wrapping_add(1);
        // A refusal is reported whatever else the response says: tgtd, for
        // one, zeroes the ISID in its authentication-failure response.
        if h.status_class != 0 {
            let keys = TextPairs::parse_allow_repeats(data).unwrap_or_default();
            if h.status_class == 1 {
                if let Some(addr) = keys.get("TargetAddress") {
                    // "host:port,tag": the portal group tag is not needed to connect.
                    let address = addr
                        .rsplit_once(',')
                        .map(|(a, _)| a)
                        .unwrap_or(addr)
                        .to_string();
                    return Ok(LoginStep::Redirect {
                        address,
                        permanent: h.status_detail == 0x02,
                    });
                }
            }
            return Err(Error::LoginRefused {
                class: h.status_class,
                detail: h.status_detail,
                message: login_status_name(h.status_class, h.status_detail),
            });
        }
        if h.itt != self.itt || h.isid != self.isid {
            return Err(Error::Protocol(
                "login response for another login (ITT or ISID differ)".into(),
            ));
        }
        let csg = Stage::from_code(h.csg)
            .ok_or_else(|| Error::Protocol(format!("login response CSG {}", h.csg)))?;
        if csg != self.csg {
            return Err(Error::Protocol(format!(
                "login response in stage {:?}, we are in {:?}",
                csg, self.csg
            )));
        }
        // RFC 7143 §11.13.3: a response with C=1 is followed, after an empty
        // request from us, by the rest of the text.
        let Some(keys) = self
            .accum
            .push(data, h.continue_)
            .map_err(|e| Error::Negotiation(e.to_string()))?
        else {
            return self.request(TextPairs::new(), false).map(LoginStep::Send);
        };
        let had_chap_r = keys.contains_key("CHAP_R");
        let mut out = self.neg.on_login_response(csg, &keys).map_err(neg_error)?;
        if csg == Stage::Security && had_chap_r && self.sent_challenge {
            // on_login_response verified the target's answer to our challenge.
            self.mutual_verified = true;
        }
        if h.transit {
            let next = Stage::from_code(h.nsg)
                .ok_or_else(|| Error::Protocol(format!("login response NSG {}", h.nsg)))?;
            if csg == Stage::Security && self.wants_mutual && !self.mutual_verified {
                return Err(Error::Authentication(
                    "the target left the security stage without answering our CHAP challenge"
                        .into(),
                ));
            }
            if next == Stage::FullFeature {
                if !out.is_empty() {
                    return Err(Error::Protocol(
                        "target ended the login while keys were still to be answered".into(),
                    ));
                }
                let params = self.neg.params().clone();
                if params.error_recovery_level != 0 || params.max_connections != 1 {
                    return Err(Error::Negotiation(format!(
                        "target agreed to ErrorRecoveryLevel {} and MaxConnections {}; we offered 0 and 1",
                        params.error_recovery_level, params.max_connections
                    )));
                }
                return Ok(LoginStep::Done(LoggedIn {
                    params,
                    tsih: h.tsih,
                    sn: SeqNumbers {
                        cmd_sn: self.cmd_sn,
                        exp_cmd_sn: h.exp_cmd_sn,
                        max_cmd_sn: h.max_cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                    },
                }));
            }
            if next != self.csg {
                self.csg = next;
                out.extend(self.neg.offer(next));
            }
        }
        self.request(out, true).map(LoginStep::Send)
    }
}

#[cfg(test)]
mod tests {
    use busrig_proto::chap::{ChapCredentials as PChap, ChapStep, ChapTarget, ChapTargetConfig};
    use busrig_proto::negotiation::{TargetLimits, TargetNegotiator};

    use super::*;
    use crate::config::ChapCredentials;

    const TARGET: &str = "iqn.2026-11.io.busrig:bus0";

    /// Drives a login against proto's target negotiator, playing the
    /// target's PDU fields by hand.
    fn run(
        cfg: &SessionConfig,
        mut target: TargetNegotiator,
        tamper: impl Fn(&mut TextPairs),
    ) -> Result<LoggedIn, Error> {
        let mut login = Login::new(cfg, Some(TARGET), 1);
        let mut req = login.start()?;
        for stat_sn in 0..20u32 {
            let Header::LoginRequest(h) = req.header.clone() else {
                panic!()
            };
            assert_eq!(h.isid, cfg.isid.bytes());
            assert_eq!(h.tsih, 0);
            assert_eq!(h.cmd_sn, 1);
            let stage = Stage::from_code(h.csg).unwrap();
            let keys = TextPairs::parse(&req.data).unwrap();
            let mut resp_keys = match target.on_login_request(stage, &keys) {
                Ok(k) => k,
                Err(e) => {
                    let (class, detail) = e.login_status();
                    let r = LoginResponse {
                        status_class: class,
                        status_detail: detail,
                        isid: h.isid,
                        ..Default::default()
                    };
                    let step = login.on_pdu(Pdu {
                        header: Header::LoginResponse(r),
                        ahs: Bytes::new(),
                        data: Bytes::new(),
                    })?;
                    panic!("login went on after a refusal: {step:?}");
                }
            };
            tamper(&mut resp_keys);
            let transit = h.transit && target.ready_to_leave(stage).unwrap();
            let r = LoginResponse {
                transit,
                csg: h.csg,
                nsg: if transit { h.nsg } else { 0 },
                isid: h.isid,
                tsih: if transit && h.nsg == 3 { 7 } else { 0 },
                itt: h.itt,
                stat_sn: 50 + stat_sn,
                exp_cmd_sn: 1,
                max_cmd_sn: 32,
                ..Default::default()
            };
            let data = Bytes::from(resp_keys.to_bytes());
            match login.on_pdu(Pdu {
                header: Header::LoginResponse(r),
                ahs: Bytes::new(),
                data,
            })? {
                LoginStep::Send(p) => req = p,
                LoginStep::Done(d) => return Ok(d),
                LoginStep::Redirect { .. } => panic!(),
            }
        }
        panic!("login did not finish")
    }

    #[test]
    fn login_without_authentication_reaches_full_feature() {
        let mut cfg = SessionConfig::default();
        cfg.proposal.header_digest = DigestPreference::PreferCrc32c;
        let done = run(&cfg, TargetNegotiator::new(TargetLimits::default()), |_| {}).unwrap();
        assert_eq!(done.tsih, 7);
        assert_eq!(
            done.sn,
            SeqNumbers {
                cmd_sn: 1,
                exp_cmd_sn: 1,
                max_cmd_sn: 32,
                exp_stat_sn: done.sn.exp_stat_sn
            }
        );
        assert_eq!(done.params.header_digest, DigestType::Crc32c);
        assert_eq!(done.params.data_digest, DigestType::None);
        assert_eq!(done.params.peer_max_recv_data_segment_length, 262_144);
        assert_eq!(done.params.error_recovery_level, 0);
    }

    fn chap_target(mutual: bool) -> TargetNegotiator {
        let limits = TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        };
        let mut t = TargetNegotiator::new(limits);
        let ini = PChap::new("node1", "node1-secret-123");
        let config = if mutual {
            ChapTargetConfig::mutual(ini, PChap::new("bus0", "bus0-secret-4567"))
        } else {
            ChapTargetConfig::one_way(ini)
        };
        t.set_chap(ChapTarget::new(config, 9, [0x33; 16]));
        t
    }

    fn chap_cfg(secret: &str, mutual: Option<(&str, &str)>) -> SessionConfig {
        SessionConfig {
            chap: Some(ChapCredentials::new("node1", secret)),
            mutual_chap: mutual.map(|(u, s)| ChapCredentials::new(u, s)),
            ..SessionConfig::default()
        }
    }

    #[test]
    fn one_way_chap_logs_in() {
        let done = run(
            &chap_cfg("node1-secret-123", None),
            chap_target(false),
            |_| {},
        )
        .unwrap();
        assert_eq!(done.params.auth_method, AuthMethod::Chap);
    }

    #[test]
    fn wrong_chap_secret_is_refused_by_the_target() {
        let err = run(
            &chap_cfg("wrong-secret-000", None),
            chap_target(false),
            |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::LoginRefused {
                    class: 2,
                    detail: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn mutual_chap_verifies_the_target() {
        let done = run(
            &chap_cfg("node1-secret-123", Some(("bus0", "bus0-secret-4567"))),
            chap_target(true),
            |_| {},
        )
        .unwrap();
        assert_eq!(done.params.auth_method, AuthMethod::Chap);
    }

    #[test]
    fn mutual_chap_with_a_target_that_knows_another_secret_fails() {
        let err = run(
            &chap_cfg("node1-secret-123", Some(("bus0", "not-the-secret"))),
            chap_target(true),
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }

    #[test]
    fn mutual_chap_with_a_target_that_does_not_answer_fails() {
        // The target ignores our challenge (its CHAP_N/CHAP_R are dropped).
        let err = run(
            &chap_cfg("node1-secret-123", Some(("bus0", "bus0-secret-4567"))),
            chap_target(true),
            |k| {
                k.remove("CHAP_N");
                k.remove("CHAP_R");
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }

    #[test]
    fn target_demanding_chap_from_an_initiator_without_credentials() {
        let err = run(&SessionConfig::default(), chap_target(false), |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                Error::LoginRefused {
                    class: 2,
                    detail: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn redirect_is_reported_with_the_address() {
        let cfg = SessionConfig::default();
        let mut login = Login::new(&cfg, Some(TARGET), 1);
        login.start().unwrap();
        let r = LoginResponse {
            status_class: 1,
            status_detail: 1,
            isid: cfg.isid.bytes(),
            ..Default::default()
        };
        let data = Bytes::from_static(b"TargetAddress=10.1.1.1:3261,1\0");
        match login
            .on_pdu(Pdu {
                header: Header::LoginResponse(r),
                ahs: Bytes::new(),
                data,
            })
            .unwrap()
        {
            LoginStep::Redirect { address, permanent } => {
                assert_eq!(address, "10.1.1.1:3261");
                assert!(!permanent);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn continued_response_text_is_requested_with_an_empty_request() {
        let cfg = SessionConfig::default();
        let mut login = Login::new(&cfg, Some(TARGET), 1);
        login.start().unwrap();
        let r = LoginResponse {
            continue_: true,
            isid: cfg.isid.bytes(),
            ..Default::default()
        };
        let step = login
            .on_pdu(Pdu {
                header: Header::LoginResponse(r),
                ahs: Bytes::new(),
                data: Bytes::from_static(b"AuthMeth"),
            })
            .unwrap();
        let LoginStep::Send(p) = step else { panic!() };
        let Header::LoginRequest(h) = p.header else {
            panic!()
        };
        assert!(!h.transit && p.data.is_empty());
    }

    #[test]
    fn chap_step_api_matches_what_login_expects() {
        // Guards the contract login relies on: a one-way exchange is done
        // after the response to the challenge.
        let mut i = ChapInitiator::new(PChap::new("a", "secret-secret"), None);
        i.start();
        let ch: TextPairs = [("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x0102")]
            .into_iter()
            .collect();
        assert!(matches!(i.step(&ch).unwrap(), ChapStep::Done(_)));
    }
}
