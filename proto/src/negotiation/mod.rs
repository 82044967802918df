//! Login and full-feature text negotiation (RFC 7143 §6.2-§6.7, §13).
//!
//! Two sans-IO negotiators share one rule engine:
//!
//! * [`TargetNegotiator`] answers the keys of each login request, declares
//!   what a target must declare unprompted (TargetPortalGroupTag in the
//!   first response, MaxRecvDataSegmentLength in the operational stage),
//!   offers keys whose target value differs from the RFC default, runs CHAP
//!   through an attached [`ChapTarget`], and answers full-feature Text
//!   requests (SendTargets).
//! * [`InitiatorNegotiator`] offers keys per stage, checks the target's
//!   answers against the result functions, and answers keys the target
//!   offers first.
//!
//! Both produce a [`SessionParams`] with the negotiated values. Splitting
//! text over several PDUs (C bit) and setting the T bit are the caller's
//! job: see [`crate::text::TextAccumulator`] and the `ready_to_leave`
//! methods.
//!
//! Key rules implemented (RFC 7143 §13 "Use", "Result function"):
//!
//! | key | kind | result |
//! |-----|------|--------|
//! | HeaderDigest, DataDigest | list (IO) | first offered value we support |
//! | AuthMethod | list (security stage) | first offered value we support |
//! | MaxConnections | 1..65535 (LO) | min |
//! | InitialR2T | boolean (LO) | OR |
//! | ImmediateData | boolean (LO) | AND |
//! | DataPDUInOrder, DataSequenceInOrder | boolean (LO) | OR |
//! | MaxBurstLength, FirstBurstLength | 512..2^24-1 (LO) | min |
//! | DefaultTime2Wait | 0..3600 (LO) | max |
//! | DefaultTime2Retain | 0..3600 (LO) | min |
//! | MaxOutstandingR2T | 1..65535 (LO) | min |
//! | ErrorRecoveryLevel | 0..2 (LO) | min |
//! | MaxRecvDataSegmentLength | 512..2^24-1 (ALL) | declarative, per direction |
//! | InitiatorName, TargetName, aliases, SessionType, TargetAddress, TargetPortalGroupTag | | declarative |
//!
//! Note: RFC 7143 §13.19 and §13.20 give DataPDUInOrder and
//! DataSequenceInOrder the OR result function (Yes wins), not AND.
//!
//! # Target usage
//!
//! ```
//! use busrig_proto::negotiation::{Stage, TargetLimits, TargetNegotiator};
//! use busrig_proto::text::TextPairs;
//!
//! let mut target = TargetNegotiator::new(TargetLimits::default());
//! // First login request, CSG=0 (security), T=1 NSG=1.
//! let req: TextPairs = [
//!     ("InitiatorName", "iqn.2024-01.org.example:node1"),
//!     ("TargetName", "iqn.2024-01.org.example:disk"),
//!     ("SessionType", "Normal"),
//!     ("AuthMethod", "None"),
//! ].into_iter().collect();
//! let resp = target.on_login_request(Stage::Security, &req).unwrap();
//! assert_eq!(resp.get("AuthMethod"), Some("None"));
//! assert_eq!(resp.get("TargetPortalGroupTag"), Some("1"));
//! // The response may set T=1 when the initiator asked for it and:
//! assert!(target.ready_to_leave(Stage::Security).unwrap());
//! // Operational stage.
//! let req: TextPairs = [("HeaderDigest", "CRC32C,None"), ("MaxRecvDataSegmentLength", "65536")]
//!     .into_iter().collect();
//! let resp = target.on_login_request(Stage::Operational, &req).unwrap();
//! assert_eq!(resp.get("HeaderDigest"), Some("CRC32C"));
//! assert!(resp.contains_key("MaxRecvDataSegmentLength"));
//! assert!(target.ready_to_leave(Stage::Operational).unwrap());
//! let params = target.params();
//! assert_eq!(params.peer_max_recv_data_segment_length, 65536);
//! ```
//!
//! On `Err(e)` the target answers with a Login Response carrying
//! `e.login_status()` and closes the connection.
//!
//! # Initiator usage
//!
//! ```
//! use busrig_proto::negotiation::{InitiatorConfig, InitiatorNegotiator, Stage};
//!
//! let mut config = InitiatorConfig::new("iqn.2024-01.org.example:node1");
//! config.target_name = Some("iqn.2024-01.org.example:disk".into());
//! let mut ini = InitiatorNegotiator::new(config);
//! let first = ini.offer(Stage::Security);
//! assert_eq!(first.get("AuthMethod"), Some("None"));
//! // send `first` with T = ini.ready_to_leave(Stage::Security)?, then feed
//! // each response to `ini.on_login_response(stage, &keys)?`, which returns
//! // the keys for the next request; on entering a new stage add
//! // `ini.offer(stage)`.
//! ```

//!
//! The pieces: [`keys`] is the key table of RFC 7143 §13, [`engine`] the
//! rule engine both sides share (RFC 7143 §6.2 result functions),
//! [`target`] and [`initiator`] the two negotiators, and [`send_targets`]
//! the SendTargets text of RFC 7143 Appendix C.

mod engine;
mod initiator;
mod keys;
mod send_targets;
mod target;

pub use initiator::InitiatorNegotiator;
pub use send_targets::{
    parse_send_targets, send_targets_response, SendTargetsEntry, SendTargetsRequest,
};
pub use target::{TargetNegotiator, TextReply};

use crate::chap::{ChapError, ChapInitiator, ChapTarget};
use crate::pdu::login_status;
use crate::text::TextError;

/// (RFC 7143 §13.12-§13.14).
pub const MIN_DATA_LENGTH: u32 = 512;
/// Largest MaxRecvDataSegmentLength / MaxBurstLength / FirstBurstLength:
/// 2^24 - 1 (RFC 7143 §13.12-§13.14).
pub const MAX_DATA_LENGTH: u32 = (1 << 24) - 1;

/// The `Reject` answer constant (RFC 7143 §6.2).
pub const REJECT: &str = "Reject";
/// The `Irrelevant` answer constant (RFC 7143 §6.2).
pub const IRRELEVANT: &str = "Irrelevant";
/// The `NotUnderstood` answer constant (RFC 7143 §6.2).
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";

/// Login stage, as in the CSG/NSG fields (RFC 7143 §11.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    Security,
    /// 1: LoginOperationalNegotiation.
    Operational,
    /// 3: FullFeaturePhase (text requests after login).
    FullFeature,
}

impl Stage {
    /// The stage of a CSG/NSG code; 2 is reserved.
    pub fn from_code(code: u8) -> Option<Stage> {
        match code {
            0 => Some(Stage::Security),
            1 => Some(Stage::Operational),
            3 => Some(Stage::FullFeature),
            _ => None,
        }
    }

    /// The CSG/NSG code.
    pub fn code(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::FullFeature => 3,
        }
    }
}

/// SessionType (RFC 7143 §13.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionType {
    /// A session for SCSI commands (default).
    #[default]
    Normal,
    /// A session for SendTargets only.
    Discovery,
}

impl SessionType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Normal => "Normal",
            SessionType::Discovery => "Discovery",
        }
    }

    /// Parses a wire value.
    pub fn parse(value: &str) -> Option<SessionType> {
        match value {
            "Normal" => Some(SessionType::Normal),
            "Discovery" => Some(SessionType::Discovery),
            _ => None,
        }
    }
}

/// HeaderDigest / DataDigest values (RFC 7143 §13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestType {
    /// No digest (default).
    #[default]
    None,
    /// CRC32C (RFC 7143 §13.1, Castagnoli polynomial).
    Crc32c,
}

impl DigestType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestType::None => "None",
            DigestType::Crc32c => "CRC32C",
        }
    }

    /// Parses a wire value.
    pub fn parse(value: &str) -> Option<DigestType> {
        match value {
            "None" => Some(DigestType::None),
            "CRC32C" => Some(DigestType::Crc32c),
            _ => None,
        }
    }
}

/// AuthMethod values we implement (RFC 7143 §12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// No authentication (default).
    #[default]
    None,
    /// CHAP with MD5 (RFC 7143 §12.1.3).
    Chap,
}

impl AuthMethod {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "None",
            AuthMethod::Chap => "CHAP",
        }
    }

    /// Parses a wire value (KRB5, SRP, SPKM1/2 are not implemented).
    pub fn parse(value: &str) -> Option<AuthMethod> {
        match value {
            "None" => Some(AuthMethod::None),
            "CHAP" => Some(AuthMethod::Chap),
            _ => None,
        }
    }
}

/// The outcome of a negotiation: every session and connection parameter,
/// seen from one side. `Default` gives the RFC 7143 §13 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// SessionType (default Normal).
    pub session_type: SessionType,
    /// InitiatorName, once declared.
    pub initiator_name: Option<String>,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// TargetName, once declared (absent in discovery sessions).
    pub target_name: Option<String>,
    /// TargetAlias, if declared.
    pub target_alias: Option<String>,
    /// TargetPortalGroupTag declared by the target.
    pub target_portal_group_tag: Option<u16>,
    /// TargetAddress values declared by the target (login redirection or
    /// text).
    pub target_addresses: Vec<String>,
    /// AuthMethod agreed (default None).
    pub auth_method: AuthMethod,
    /// HeaderDigest (default None).
    pub header_digest: DigestType,
    /// DataDigest (default None).
    pub data_digest: DigestType,
    /// MaxConnections (default 1).
    pub max_connections: u16,
    /// InitialR2T (default Yes).
    pub initial_r2t: bool,
    /// ImmediateData (default Yes).
    pub immediate_data: bool,
    /// The MaxRecvDataSegmentLength this side declared: the largest data
    /// segment it accepts (default 8192 when never declared).
    pub local_max_recv_data_segment_length: u32,
    /// The MaxRecvDataSegmentLength the peer declared: the largest data
    /// segment this side may send (default 8192).
    pub peer_max_recv_data_segment_length: u32,
    /// MaxBurstLength (default 262144).
    pub max_burst_length: u32,
    /// FirstBurstLength (default 65536), never above MaxBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait in seconds (default 2).
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (default 20).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (default 1).
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder (default Yes).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (default Yes).
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (default 0).
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            target_alias: None,
            target_portal_group_tag: None,
            target_addresses: Vec::new(),
            auth_method: AuthMethod::None,
            header_digest: DigestType::None,
            data_digest: DigestType::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            local_max_recv_data_segment_length: 8192,
            peer_max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// The operational values one side brings to login negotiation (RFC 7143
/// §13): for a target the limits it enforces — the other operand of each
/// result function — and for an initiator what it offers. `Default` gives
/// the RFC 7143 §13 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalValues {
    /// MaxRecvDataSegmentLength this side declares (RFC 7143 §13.12,
    /// 512..=2^24-1).
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength (RFC 7143 §13.13, min function).
    pub max_burst_length: u32,
    /// FirstBurstLength (RFC 7143 §13.14, min function).
    pub first_burst_length: u32,
    /// MaxOutstandingR2T (RFC 7143 §13.17, min function).
    pub max_outstanding_r2t: u16,
    /// DefaultTime2Wait in seconds (RFC 7143 §13.15, max function).
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (RFC 7143 §13.16, min function).
    pub default_time2retain: u16,
    /// InitialR2T (RFC 7143 §13.10, OR: Yes forces Yes).
    pub initial_r2t: bool,
    /// ImmediateData (RFC 7143 §13.11, AND: No forces No).
    pub immediate_data: bool,
    /// DataPDUInOrder (RFC 7143 §13.19, OR: Yes forces Yes).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (RFC 7143 §13.20, OR: Yes forces Yes).
    pub data_sequence_in_order: bool,
    /// HeaderDigest values, in preference order (RFC 7143 §13.1).
    pub header_digests: Vec<DigestType>,
    /// DataDigest values, in preference order (RFC 7143 §13.1).
    pub data_digests: Vec<DigestType>,
    /// MaxConnections (RFC 7143 §13.2, min function; busrig: 1).
    pub max_connections: u16,
    /// ErrorRecoveryLevel (RFC 7143 §13.21, min function; busrig: 0).
    pub error_recovery_level: u8,
}

impl Default for OperationalValues {
    fn default() -> Self {
        OperationalValues {
            max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            max_outstanding_r2t: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            initial_r2t: true,
            immediate_data: true,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            header_digests: vec![DigestType::None],
            data_digests: vec![DigestType::None],
            max_connections: 1,
            error_recovery_level: 0,
        }
    }
}

/// What a target supports and prefers. `Default` matches busrig: digests
/// None or CRC32C, no authentication, ErrorRecoveryLevel 0, one connection,
/// RFC default burst sizes, 256 KiB receive segments, portal group tag 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLimits {
    /// The limits of the operational keys.
    pub operational: OperationalValues,
    /// Authentication methods accepted. Without `None` authentication is
    /// required; with `Chap` a [`ChapTarget`] must be attached.
    pub auth_methods: Vec<AuthMethod>,
    /// TargetAlias declared in the first response of a normal session.
    pub target_alias: Option<String>,
    /// TargetPortalGroupTag declared in the first response when the
    /// initiator named a target (RFC 7143 §13.9).
    pub portal_group_tag: Option<u16>,
    /// Whether discovery sessions are allowed (else 02/09).
    pub allow_discovery: bool,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            operational: OperationalValues {
                max_recv_data_segment_length: 262_144,
                header_digests: vec![DigestType::None, DigestType::Crc32c],
                data_digests: vec![DigestType::None, DigestType::Crc32c],
                ..OperationalValues::default()
            },
            auth_methods: vec![AuthMethod::None],
            target_alias: None,
            portal_group_tag: Some(1),
            allow_discovery: true,
        }
    }
}

/// What an initiator offers. Build with [`InitiatorConfig::new`] and adjust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// InitiatorName (required).
    pub initiator_name: String,
    /// InitiatorAlias, optional.
    pub initiator_alias: Option<String>,
    /// TargetName (required for normal sessions).
    pub target_name: Option<String>,
    /// SessionType.
    pub session_type: SessionType,
    /// AuthMethod offer, in preference order. With `Chap` a
    /// [`ChapInitiator`] must be attached.
    pub auth_methods: Vec<AuthMethod>,
    /// The operational keys offered.
    pub operational: OperationalValues,
}

impl InitiatorConfig {
    /// A normal-session configuration with RFC defaults, except
    /// MaxRecvDataSegmentLength 262144 and InitialR2T=No so that writes may
    /// carry unsolicited data.
    pub fn new(initiator_name: impl Into<String>) -> Self {
        InitiatorConfig {
            initiator_name: initiator_name.into(),
            initiator_alias: None,
            target_name: None,
            session_type: SessionType::Normal,
            auth_methods: vec![AuthMethod::None],
            operational: OperationalValues {
                max_recv_data_segment_length: 262_144,
                initial_r2t: false,
                ..OperationalValues::default()
            },
        }
    }
}

/// Errors of negotiation. Each maps to one login status
/// ([`NegotiationError::login_status`]); on the initiator side any error
/// means the connection is dropped (RFC 7143 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The text could not be parsed (RFC 7143 §6.1).
    #[error(transparent)]
    Text(#[from] TextError),
    /// The first login request lacks InitiatorName (RFC 7143 §13.6).
    #[error("InitiatorName missing from the first login request")]
    MissingInitiatorName,
    /// A normal session's first login request lacks TargetName (RFC 7143
    /// §13.4).
    #[error("TargetName missing from the first login request of a normal session")]
    MissingTargetName,
    /// SessionType is unknown or not offered here.
    #[error("session type {0:?} not supported")]
    SessionTypeNotSupported(String),
    /// A key was negotiated or declared twice in one login (RFC 7143 §6.2:
    /// the target answers with Login reject, Initiator Error).
    #[error("key {0} renegotiated")]
    Renegotiated(String),
    /// A declarative key carries a value that cannot be used.
    #[error("bad value {value:?} for {key}")]
    BadDeclaration { key: String, value: String },
    /// A key is not allowed in this stage (e.g. AuthMethod outside the
    /// security stage, operational keys while authentication is under way).
    #[error("key {key} not allowed in stage {stage:?}")]
    KeyNotAllowedInStage { key: String, stage: Stage },
    /// No offered AuthMethod is acceptable (RFC 7143 §12: Authentication
    /// Failure).
    #[error("no acceptable authentication method")]
    NoCommonAuthMethod,
    /// The initiator tried to leave the security stage, or skipped it,
    /// without the authentication we require.
    #[error("authentication required")]
    AuthenticationRequired,
    /// CHAP failed.
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    /// CHAP was agreed but no CHAP state was attached by the caller.
    #[error("CHAP selected but not configured")]
    ChapNotConfigured,
    /// The peer answered a key against its rules (e.g. a min-function
    /// answer above our offer, a list answer we did not offer).
    #[error("bad answer {value:?} for {key}")]
    BadAnswer { key: String, value: String },
    /// The peer refused a key we had to offer.
    #[error("our offer of {key} was answered {value}")]
    OfferRefused { key: String, value: String },
}

impl NegotiationError {
    /// Login status (class, detail) for a Login Response reporting this
    /// error (RFC 7143 §11.13.5).
    pub fn login_status(&self) -> (u8, u8) {
        match self {
            NegotiationError::MissingInitiatorName | NegotiationError::MissingTargetName => {
                login_status::MISSING_PARAMETER
            }
            NegotiationError::SessionTypeNotSupported(_) => {
                login_status::SESSION_TYPE_NOT_SUPPORTED
            }
            NegotiationError::NoCommonAuthMethod | NegotiationError::AuthenticationRequired => {
                login_status::AUTHENTICATION_FAILURE
            }
            NegotiationError::Chap(e) => e.login_status(),
            NegotiationError::ChapNotConfigured => login_status::TARGET_ERROR,
            NegotiationError::Text(_)
            | NegotiationError::Renegotiated(_)
            | NegotiationError::BadDeclaration { .. }
            | NegotiationError::KeyNotAllowedInStage { .. }
            | NegotiationError::BadAnswer { .. }
            | NegotiationError::OfferRefused { .. } => login_status::INITIATOR_ERROR,
        }
    }
}

/// What the tests of every part share.
#[cfg(test)]
mod test_support {
    pub(super) const INITIATOR: &str = "iqn.2024-01.org.example:node1";
    pub(super) const TARGET: &str = "iqn.2024-01.org.example:disk";

    pub(super) fn kv(list: &[(&str, &str)]) -> crate::text::TextPairs {
        list.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::chap::{ChapCredentials, ChapTargetConfig, MutualChap};
    use crate::text::TextPairs;

    // -- both sides: whole logins ------------------------------------------

    /// Runs a login between the two negotiators the way the session layers
    /// would, through encoded bytes. Returns the number of round trips.
    fn run_login(
        ini: &mut InitiatorNegotiator,
        tgt: &mut TargetNegotiator,
    ) -> Result<usize, NegotiationError> {
        let mut stage = Stage::Security;
        let mut req = ini.offer(stage);
        for round in 1..=10 {
            let transit = ini.ready_to_leave(stage)?;
            let wire = TextPairs::parse(&req.to_bytes())?;
            let resp = tgt.on_login_request(stage, &wire)?;
            let target_transit = transit && tgt.ready_to_leave(stage)?;
            let wire = TextPairs::parse(&resp.to_bytes())?;
            let mut next = ini.on_login_response(stage, &wire)?;
            if target_transit {
                stage = match stage {
                    Stage::Security => Stage::Operational,
                    _ => return Ok(round),
                };
                next.extend(ini.offer(stage));
            }
            req = next;
        }
        panic!("login did not finish in 10 round trips");
    }

    fn assert_agree(ini: &SessionParams, tgt: &SessionParams) {
        // Session-wide results are the same on both sides...
        let mut mirrored = tgt.clone();
        std::mem::swap(
            &mut mirrored.local_max_recv_data_segment_length,
            &mut mirrored.peer_max_recv_data_segment_length,
        );
        assert_eq!(ini, &mirrored);
    }

    #[test]
    fn login_round_trip_without_authentication() {
        let mut config = InitiatorConfig::new(INITIATOR);
        config.target_name = Some(TARGET.into());
        config.operational.header_digests = vec![DigestType::Crc32c, DigestType::None];
        config.operational.max_recv_data_segment_length = 65_536;
        let mut ini = InitiatorNegotiator::new(config);
        let mut tgt = TargetNegotiator::new(TargetLimits::default());
        let rounds = run_login(&mut ini, &mut tgt).unwrap();
        assert_eq!(rounds, 2);
        assert_agree(ini.params(), tgt.params());
        let p = tgt.params();
        assert_eq!(p.header_digest, DigestType::Crc32c);
        assert_eq!(p.data_digest, DigestType::None);
        assert_eq!(p.peer_max_recv_data_segment_length, 65_536);
        assert_eq!(p.local_max_recv_data_segment_length, 262_144);
        assert_eq!(p.target_portal_group_tag, Some(1));
        assert!(p.initial_r2t, "target's InitialR2T=Yes wins (OR)");
        assert_eq!(p.auth_method, AuthMethod::None);
        assert!(tgt.is_authenticated());
    }

    #[test]
    fn discovery_login_round_trip_and_send_targets() {
        let mut config = InitiatorConfig::new(INITIATOR);
        config.session_type = SessionType::Discovery;
        let mut ini = InitiatorNegotiator::new(config);
        let mut tgt = TargetNegotiator::new(TargetLimits::default());
        run_login(&mut ini, &mut tgt).unwrap();
        assert_agree(ini.params(), tgt.params());
        assert_eq!(tgt.params().session_type, SessionType::Discovery);
        assert_eq!(tgt.params().target_portal_group_tag, None);
        let reply = tgt.on_text_request(&kv(&[("SendTargets", "All")])).unwrap();
        assert_eq!(reply.send_targets, Some(SendTargetsRequest::All));
    }

    fn chap_pair(mutual: bool, initiator_secret: &str) -> (InitiatorNegotiator, TargetNegotiator) {
        let mut config = InitiatorConfig::new(INITIATOR);
        config.target_name = Some(TARGET.into());
        config.auth_methods = vec![AuthMethod::Chap, AuthMethod::None];
        let mut ini = InitiatorNegotiator::new(config);
        let m = mutual.then(|| MutualChap {
            target: ChapCredentials::new(TARGET, "target-secret-0001"),
            id: 200,
            challenge: [0x77; 16],
        });
        ini.set_chap(ChapInitiator::new(
            ChapCredentials::new("node1", initiator_secret),
            m,
        ));
        let mut tgt = TargetNegotiator::new(TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        });
        let config = ChapTargetConfig::mutual(
            ChapCredentials::new("node1", "initiator-secret-1"),
            ChapCredentials::new(TARGET, "target-secret-0001"),
        );
        tgt.set_chap(ChapTarget::new(config, 17, [0x11; 16]));
        (ini, tgt)
    }

    #[test]
    fn login_round_trip_with_one_way_chap() {
        let (mut ini, mut tgt) = chap_pair(false, "initiator-secret-1");
        // AuthMethod, CHAP_A, CHAP_N/R (transit), operational.
        assert_eq!(run_login(&mut ini, &mut tgt).unwrap(), 4);
        assert!(tgt.is_authenticated());
        assert_eq!(tgt.chap().unwrap().authenticated_name(), Some("node1"));
        assert!(!tgt.chap().unwrap().is_mutual());
        assert_eq!(tgt.params().auth_method, AuthMethod::Chap);
        assert_agree(ini.params(), tgt.params());
    }

    #[test]
    fn login_round_trip_with_mutual_chap() {
        let (mut ini, mut tgt) = chap_pair(true, "initiator-secret-1");
        assert_eq!(run_login(&mut ini, &mut tgt).unwrap(), 4);
        assert!(tgt.chap().unwrap().is_mutual());
        assert!(ini.is_authenticated() && ini.chap().unwrap().is_done());
        assert_agree(ini.params(), tgt.params());
    }

    #[test]
    fn login_with_wrong_chap_secret_fails_with_authentication_failure() {
        let (mut ini, mut tgt) = chap_pair(false, "not-the-secret!!");
        let err = run_login(&mut ini, &mut tgt).unwrap_err();
        assert_eq!(err, NegotiationError::Chap(ChapError::BadResponse));
        assert_eq!(err.login_status(), (2, 1));
        assert!(!tgt.is_authenticated());
    }

    #[test]
    fn initiator_detects_a_target_that_fails_mutual_chap() {
        let (mut ini, _) = chap_pair(true, "initiator-secret-1");
        // A target that knows the initiator's secret but not its own.
        let mut tgt = TargetNegotiator::new(TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        });
        tgt.set_chap(ChapTarget::new(
            ChapTargetConfig::mutual(
                ChapCredentials::new("node1", "initiator-secret-1"),
                ChapCredentials::new(TARGET, "wrong-target-secret"),
            ),
            17,
            [0x11; 16],
        ));
        let err = run_login(&mut ini, &mut tgt).unwrap_err();
        assert_eq!(err, NegotiationError::Chap(ChapError::BadResponse));
    }

    #[test]
    fn stage_codes() {
        for s in [Stage::Security, Stage::Operational, Stage::FullFeature] {
            assert_eq!(Stage::from_code(s.code()), Some(s));
        }
        assert_eq!(Stage::from_code(2), None);
    }

    #[test]
    fn defaults_are_the_rfc_defaults() {
        let p = SessionParams::default();
        assert_eq!(
            (
                p.max_burst_length,
                p.first_burst_length,
                p.local_max_recv_data_segment_length
            ),
            (262_144, 65_536, 8192)
        );
        assert_eq!((p.default_time2wait, p.default_time2retain), (2, 20));
        assert_eq!(
            (
                p.max_connections,
                p.max_outstanding_r2t,
                p.error_recovery_level
            ),
            (1, 1, 0)
        );
        assert!(
            p.initial_r2t && p.immediate_data && p.data_pdu_in_order && p.data_sequence_in_order
        );
        assert_eq!(
            (p.header_digest, p.data_digest),
            (DigestType::None, DigestType::None)
        );
    }

    #[test]
    fn each_side_departs_from_the_rfc_defaults_only_where_documented() {
        let rfc = OperationalValues::default();
        let p = SessionParams::default();
        assert_eq!(
            (
                rfc.max_recv_data_segment_length,
                rfc.max_burst_length,
                rfc.first_burst_length
            ),
            (
                p.local_max_recv_data_segment_length,
                p.max_burst_length,
                p.first_burst_length
            )
        );
        assert_eq!(
            TargetLimits::default().operational,
            OperationalValues {
                max_recv_data_segment_length: 262_144,
                header_digests: vec![DigestType::None, DigestType::Crc32c],
                data_digests: vec![DigestType::None, DigestType::Crc32c],
                ..rfc.clone()
            }
        );
        assert_eq!(
            InitiatorConfig::new("iqn.x").operational,
            OperationalValues {
                max_recv_data_segment_length: 262_144,
                initial_r2t: false,
                ..rfc
            }
        );
    }
}
