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

use std::collections::{HashMap, HashSet};

use crate::chap::{ChapError, ChapInitiator, ChapTarget};
use crate::pdu::login_status;
use crate::text::{self, TextError, TextPairs};

/// Smallest MaxRecvDataSegmentLength / MaxBurstLength / FirstBurstLength
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

/// What a target supports and prefers. `Default` matches busrig: digests
/// None or CRC32C, no authentication, ErrorRecoveryLevel 0, one connection,
/// RFC default burst sizes, 256 KiB receive segments, portal group tag 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLimits {
    /// MaxRecvDataSegmentLength the target declares (512..=2^24-1).
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength accepted (min function).
    pub max_burst_length: u32,
    /// Largest FirstBurstLength accepted (min function).
    pub first_burst_length: u32,
    /// Largest MaxOutstandingR2T accepted (min function).
    pub max_outstanding_r2t: u16,
    /// Smallest DefaultTime2Wait we insist on (max function).
    pub default_time2wait: u16,
    /// Largest DefaultTime2Retain accepted (min function).
    pub default_time2retain: u16,
    /// InitialR2T we ask for (OR: Yes forces Yes).
    pub initial_r2t: bool,
    /// ImmediateData we allow (AND: No forces No).
    pub immediate_data: bool,
    /// DataPDUInOrder we ask for (OR: Yes forces Yes).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder we ask for (OR: Yes forces Yes).
    pub data_sequence_in_order: bool,
    /// Header digests supported.
    pub header_digests: Vec<DigestType>,
    /// Data digests supported.
    pub data_digests: Vec<DigestType>,
    /// Authentication methods accepted. Without `None` authentication is
    /// required; with `Chap` a [`ChapTarget`] must be attached.
    pub auth_methods: Vec<AuthMethod>,
    /// Largest MaxConnections accepted (busrig: 1).
    pub max_connections: u16,
    /// Largest ErrorRecoveryLevel accepted (busrig: 0).
    pub error_recovery_level: u8,
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
            max_recv_data_segment_length: 262_144,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            max_outstanding_r2t: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            initial_r2t: true,
            immediate_data: true,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            header_digests: vec![DigestType::None, DigestType::Crc32c],
            data_digests: vec![DigestType::None, DigestType::Crc32c],
            auth_methods: vec![AuthMethod::None],
            max_connections: 1,
            error_recovery_level: 0,
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
    /// HeaderDigest offer, in preference order.
    pub header_digests: Vec<DigestType>,
    /// DataDigest offer, in preference order.
    pub data_digests: Vec<DigestType>,
    /// MaxRecvDataSegmentLength we declare.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength offered.
    pub max_burst_length: u32,
    /// FirstBurstLength offered.
    pub first_burst_length: u32,
    /// MaxOutstandingR2T offered.
    pub max_outstanding_r2t: u16,
    /// DefaultTime2Wait offered.
    pub default_time2wait: u16,
    /// DefaultTime2Retain offered.
    pub default_time2retain: u16,
    /// InitialR2T offered.
    pub initial_r2t: bool,
    /// ImmediateData offered.
    pub immediate_data: bool,
    /// DataPDUInOrder offered.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder offered.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel offered.
    pub error_recovery_level: u8,
    /// MaxConnections offered.
    pub max_connections: u16,
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
            header_digests: vec![DigestType::None],
            data_digests: vec![DigestType::None],
            max_recv_data_segment_length: 262_144,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            max_outstanding_r2t: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            initial_r2t: false,
            immediate_data: true,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            max_connections: 1,
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

/// A SendTargets request seen in a full-feature Text request (RFC 7143
/// Appendix C). The caller answers it with [`send_targets_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTargetsRequest {
    /// `SendTargets=All` in a discovery session: every target this
    /// initiator may see.
    All,
    /// `SendTargets=<name>`: that target only.
    Target(String),
    /// `SendTargets=` (empty) in a normal session: the session's target.
    SessionTarget,
}

/// One target in a SendTargets response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTargetsEntry {
    /// The target's iSCSI name.
    pub name: String,
    /// `(address, portal group tag)` pairs, the address as `host:port`
    /// with IPv6 literals in brackets (RFC 7143 §13.8).
    pub addresses: Vec<(String, u16)>,
}

/// Encodes a SendTargets response: per target a TargetName and one
/// `TargetAddress=<address>,<tag>` per portal (RFC 7143 Appendix C, §13.8).
pub fn send_targets_response(entries: &[SendTargetsEntry]) -> TextPairs {
    let mut out = TextPairs::new();
    for entry in entries {
        out.push("TargetName", entry.name.clone());
        for (addr, tag) in &entry.addresses {
            out.push("TargetAddress", format!("{addr},{tag}"));
        }
    }
    out
}

/// Reads a SendTargets response (RFC 7143 Appendix C): each TargetName
/// starts an entry, each following `TargetAddress=<address>[,<tag>]` adds a
/// portal (a missing tag reads as 1). Parse the text with
/// [`TextPairs::parse_allow_repeats`]. Addresses before any TargetName are
/// refused.
pub fn parse_send_targets(keys: &TextPairs) -> Result<Vec<SendTargetsEntry>, NegotiationError> {
    let mut out: Vec<SendTargetsEntry> = Vec::new();
    for (k, v) in keys.iter() {
        match k {
            "TargetName" => out.push(SendTargetsEntry {
                name: v.to_string(),
                addresses: Vec::new(),
            }),
            "TargetAddress" => {
                let bad = || NegotiationError::BadDeclaration {
                    key: k.to_string(),
                    value: v.chars().take(80).collect(),
                };
                let entry = out.last_mut().ok_or_else(bad)?;
                // The tag follows the last comma; IPv6 literals are
                // bracketed and contain no comma.
                let (addr, tag) = match v.rsplit_once(',') {
                    Some((a, t)) => {
                        let n = text::decode_number(t).map_err(|_| bad())?;
                        (a, u16::try_from(n).map_err(|_| bad())?)
                    }
                    None => (v, 1),
                };
                if addr.is_empty() {
                    return Err(bad());
                }
                entry.addresses.push((addr.to_string(), tag));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The answer to a full-feature Text request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextReply {
    /// Answers to the negotiable keys of the request.
    pub keys: TextPairs,
    /// A SendTargets request the caller must answer by appending
    /// [`send_targets_response`] to `keys`.
    pub send_targets: Option<SendTargetsRequest>,
}

// ---------------------------------------------------------------------------
// Key table (RFC 7143 §13)

/// Who may send a key (RFC 7143 §13 "Senders").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Senders {
    Initiator,
    Target,
    Both,
}

/// When a key may be used (RFC 7143 §13 "Use").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    /// Leading connection login only.
    LeadingOnly,
    /// Any login, never in full feature phase.
    InitializeOnly,
    /// Login and full feature phase.
    All,
    /// Full feature phase only.
    FullFeatureOnly,
    /// Security stage only (AuthMethod).
    SecurityOnly,
}

/// How a key's result is computed (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Min(u64, u64),
    Max(u64, u64),
    And,
    Or,
    List,
    Declarative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    AuthMethod,
    TaskReporting,
    ProtocolLevel,
    IfMarker,
    OfMarker,
    IfMarkInt,
    OfMarkInt,
}

const DATA_LEN: (u64, u64) = (MIN_DATA_LENGTH as u64, MAX_DATA_LENGTH as u64);

impl Key {
    const ALL: [Key; 29] = [
        Key::HeaderDigest,
        Key::DataDigest,
        Key::MaxConnections,
        Key::SendTargets,
        Key::TargetName,
        Key::InitiatorName,
        Key::TargetAlias,
        Key::InitiatorAlias,
        Key::TargetAddress,
        Key::TargetPortalGroupTag,
        Key::InitialR2T,
        Key::ImmediateData,
        Key::MaxRecvDataSegmentLength,
        Key::MaxBurstLength,
        Key::FirstBurstLength,
        Key::DefaultTime2Wait,
        Key::DefaultTime2Retain,
        Key::MaxOutstandingR2T,
        Key::DataPduInOrder,
        Key::DataSequenceInOrder,
        Key::ErrorRecoveryLevel,
        Key::SessionType,
        Key::AuthMethod,
        Key::TaskReporting,
        Key::ProtocolLevel,
        Key::IfMarker,
        Key::OfMarker,
        Key::IfMarkInt,
        Key::OfMarkInt,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::HeaderDigest => "HeaderDigest",
            Key::DataDigest => "DataDigest",
            Key::MaxConnections => "MaxConnections",
            Key::SendTargets => "SendTargets",
            Key::TargetName => "TargetName",
            Key::InitiatorName => "InitiatorName",
            Key::TargetAlias => "TargetAlias",
            Key::InitiatorAlias => "InitiatorAlias",
            Key::TargetAddress => "TargetAddress",
            Key::TargetPortalGroupTag => "TargetPortalGroupTag",
            Key::InitialR2T => "InitialR2T",
            Key::ImmediateData => "ImmediateData",
            Key::MaxRecvDataSegmentLength => "MaxRecvDataSegmentLength",
            Key::MaxBurstLength => "MaxBurstLength",
            Key::FirstBurstLength => "FirstBurstLength",
            Key::DefaultTime2Wait => "DefaultTime2Wait",
            Key::DefaultTime2Retain => "DefaultTime2Retain",
            Key::MaxOutstandingR2T => "MaxOutstandingR2T",
            Key::DataPduInOrder => "DataPDUInOrder",
            Key::DataSequenceInOrder => "DataSequenceInOrder",
            Key::ErrorRecoveryLevel => "ErrorRecoveryLevel",
            Key::SessionType => "SessionType",
            Key::AuthMethod => "AuthMethod",
            Key::TaskReporting => "TaskReporting",
            Key::ProtocolLevel => "iSCSIProtocolLevel",
            Key::IfMarker => "IFMarker",
            Key::OfMarker => "OFMarker",
            Key::IfMarkInt => "IFMarkInt",
            Key::OfMarkInt => "OFMarkInt",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.name() == name)
    }

    fn rule(self) -> Rule {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::AuthMethod | Key::TaskReporting => {
                Rule::List
            }
            Key::MaxConnections | Key::MaxOutstandingR2T => Rule::Min(1, 65535),
            Key::MaxBurstLength | Key::FirstBurstLength => Rule::Min(DATA_LEN.0, DATA_LEN.1),
            Key::DefaultTime2Wait => Rule::Max(0, 3600),
            Key::DefaultTime2Retain => Rule::Min(0, 3600),
            Key::ErrorRecoveryLevel => Rule::Min(0, 2),
            // RFC 7144 §13.24 (referenced by RFC 7143): 0..31, minimum.
            Key::ProtocolLevel => Rule::Min(0, 31),
            Key::InitialR2T | Key::DataPduInOrder | Key::DataSequenceInOrder => Rule::Or,
            Key::ImmediateData => Rule::And,
            // The obsolete marker keys are booleans/ranges, but RFC 7143
            // §13.25 fixes the answer; treat them specially.
            Key::IfMarker | Key::OfMarker => Rule::And,
            Key::IfMarkInt | Key::OfMarkInt => Rule::Declarative,
            Key::SendTargets
            | Key::TargetName
            | Key::InitiatorName
            | Key::TargetAlias
            | Key::InitiatorAlias
            | Key::TargetAddress
            | Key::TargetPortalGroupTag
            | Key::MaxRecvDataSegmentLength
            | Key::SessionType => Rule::Declarative,
        }
    }

    fn usage(self) -> Usage {
        match self {
            Key::AuthMethod => Usage::SecurityOnly,
            Key::SendTargets => Usage::FullFeatureOnly,
            Key::HeaderDigest
            | Key::DataDigest
            | Key::InitiatorName
            | Key::TargetName
            | Key::TargetPortalGroupTag => Usage::InitializeOnly,
            Key::TargetAlias
            | Key::InitiatorAlias
            | Key::TargetAddress
            | Key::MaxRecvDataSegmentLength => Usage::All,
            _ => Usage::LeadingOnly,
        }
    }

    fn senders(self) -> Senders {
        match self {
            Key::SendTargets | Key::InitiatorName | Key::InitiatorAlias | Key::SessionType => {
                Senders::Initiator
            }
            Key::TargetAlias | Key::TargetAddress | Key::TargetPortalGroupTag => Senders::Target,
            _ => Senders::Both,
        }
    }

    /// "Irrelevant when: SessionType=Discovery" (RFC 7143 §13).
    fn irrelevant_in_discovery(self) -> bool {
        matches!(
            self,
            Key::MaxConnections
                | Key::InitialR2T
                | Key::ImmediateData
                | Key::MaxBurstLength
                | Key::FirstBurstLength
                | Key::MaxOutstandingR2T
                | Key::DataPduInOrder
                | Key::DataSequenceInOrder
                | Key::TaskReporting
                | Key::ProtocolLevel
        )
    }

    /// Keys that shape the operational stage (refused while authentication
    /// is under way, RFC 7143 §6.3.3).
    fn is_operational(self) -> bool {
        !matches!(
            self,
            Key::AuthMethod
                | Key::InitiatorName
                | Key::TargetName
                | Key::InitiatorAlias
                | Key::TargetAlias
                | Key::SessionType
                | Key::TargetPortalGroupTag
                | Key::TargetAddress
        )
    }

    /// The RFC 7143 §13 default value, as it would appear on the wire.
    fn default_value(self) -> &'static str {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::AuthMethod => "None",
            Key::MaxConnections | Key::MaxOutstandingR2T => "1",
            Key::InitialR2T
            | Key::ImmediateData
            | Key::DataPduInOrder
            | Key::DataSequenceInOrder => "Yes",
            Key::MaxBurstLength => "262144",
            Key::FirstBurstLength => "65536",
            Key::DefaultTime2Wait => "2",
            Key::DefaultTime2Retain => "20",
            Key::ErrorRecoveryLevel => "0",
            Key::MaxRecvDataSegmentLength => "8192",
            Key::TaskReporting => "RFC3720",
            Key::ProtocolLevel => "1",
            Key::SessionType => "Normal",
            _ => "",
        }
    }
}

/// Which side the engine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Target,
    Initiator,
}

/// This side's values: a limit (numbers), a wish (booleans) or the
/// supported list (lists), in wire form.
#[derive(Debug, Clone)]
struct Prefs {
    values: HashMap<Key, String>,
}

impl Prefs {
    fn value(&self, key: Key) -> &str {
        self.values
            .get(&key)
            .map(String::as_str)
            .unwrap_or(key.default_value())
    }
}

fn join_list<T: Copy>(items: &[T], f: impl Fn(T) -> &'static str) -> String {
    items.iter().map(|&i| f(i)).collect::<Vec<_>>().join(",")
}

fn bool_str(b: bool) -> String {
    text::encode_boolean(b).to_string()
}

fn parse_ranged(value: &str, lo: u64, hi: u64) -> Option<u64> {
    text::decode_number(value)
        .ok()
        .filter(|n| (lo..=hi).contains(n))
}

/// Responder side of one key (RFC 7143 §6.2): our answer to the peer's
/// offer, or `Reject` when the offer is unusable.
fn respond(rule: Rule, ours: &str, offer: &str) -> String {
    match rule {
        Rule::Min(lo, hi) | Rule::Max(lo, hi) => {
            let (Some(theirs), Some(mine)) =
                (parse_ranged(offer, lo, hi), parse_ranged(ours, lo, hi))
            else {
                return REJECT.to_string();
            };
            let result = if matches!(rule, Rule::Min(..)) {
                theirs.min(mine)
            } else {
                theirs.max(mine)
            };
            text::encode_decimal(result)
        }
        Rule::And | Rule::Or => {
            let (Ok(theirs), Ok(mine)) = (text::decode_boolean(offer), text::decode_boolean(ours))
            else {
                return REJECT.to_string();
            };
            bool_str(if rule == Rule::And {
                theirs && mine
            } else {
                theirs || mine
            })
        }
        Rule::List => {
            // RFC 7143 §6.2.1: the responder picks the first value of the
            // offer that it supports; unknown values are ignored.
            let supported: Vec<&str> = ours.split(',').collect();
            offer
                .split(',')
                .find(|v| supported.contains(v))
                .unwrap_or(REJECT)
                .to_string()
        }
        Rule::Declarative => String::new(),
    }
}

/// Originator side of one key: checks the peer's answer to our offer
/// against the result function and returns the result (RFC 7143 §6.2: an
/// answer that violates the function is a protocol error).
fn check_answer(rule: Rule, offered: &str, answer: &str) -> Option<String> {
    match rule {
        Rule::Min(lo, hi) | Rule::Max(lo, hi) => {
            let a = parse_ranged(answer, lo, hi)?;
            let o = parse_ranged(offered, lo, hi)?;
            let ok = if matches!(rule, Rule::Min(..)) {
                a <= o
            } else {
                a >= o
            };
            ok.then(|| text::encode_decimal(a))
        }
        Rule::And | Rule::Or => {
            let a = text::decode_boolean(answer).ok()?;
            let o = text::decode_boolean(offered).ok()?;
            // AND: an offered No must come back No; OR: an offered Yes must
            // come back Yes (RFC 7143 §6.2.2).
            let ok = if rule == Rule::And { o || !a } else { !o || a };
            ok.then(|| bool_str(a))
        }
        Rule::List => offered
            .split(',')
            .any(|v| v == answer)
            .then(|| answer.to_string()),
        Rule::Declarative => Some(answer.to_string()),
    }
}

/// Shared negotiation state of one side of one session.
#[derive(Debug, Clone)]
struct Engine {
    role: Role,
    prefs: Prefs,
    params: SessionParams,
    /// Keys settled (negotiated or declared) during login.
    settled: HashSet<Key>,
    /// Our offers awaiting the peer's answer, with the offered value.
    pending: HashMap<Key, String>,
    /// Whether we declared our MaxRecvDataSegmentLength already.
    declared_mrdsl: bool,
}

impl Engine {
    fn new(role: Role, prefs: Prefs) -> Self {
        Engine {
            role,
            prefs,
            params: SessionParams::default(),
            settled: HashSet::new(),
            pending: HashMap::new(),
            declared_mrdsl: false,
        }
    }

    fn peer_may_send(&self, key: Key) -> bool {
        match key.senders() {
            Senders::Both => true,
            Senders::Initiator => self.role == Role::Target,
            Senders::Target => self.role == Role::Initiator,
        }
    }

    /// Applies a settled value to the parameters. Values were validated by
    /// `respond` / `check_answer`, so parse failures keep the default.
    fn apply(&mut self, key: Key, value: &str) {
        let p = &mut self.params;
        let num = || text::decode_number(value).ok();
        let yes = value == "Yes";
        match key {
            Key::HeaderDigest => p.header_digest = DigestType::parse(value).unwrap_or_default(),
            Key::DataDigest => p.data_digest = DigestType::parse(value).unwrap_or_default(),
            Key::AuthMethod => p.auth_method = AuthMethod::parse(value).unwrap_or_default(),
            Key::MaxConnections => {
                if let Some(n) = num() {
                    p.max_connections = n as u16;
                }
            }
            Key::MaxOutstandingR2T => {
                if let Some(n) = num() {
                    p.max_outstanding_r2t = n as u16;
                }
            }
            Key::MaxBurstLength => {
                if let Some(n) = num() {
                    p.max_burst_length = n as u32;
                }
            }
            Key::FirstBurstLength => {
                if let Some(n) = num() {
                    p.first_burst_length = n as u32;
                }
            }
            Key::DefaultTime2Wait => {
                if let Some(n) = num() {
                    p.default_time2wait = n as u16;
                }
            }
            Key::DefaultTime2Retain => {
                if let Some(n) = num() {
                    p.default_time2retain = n as u16;
                }
            }
            Key::ErrorRecoveryLevel => {
                if let Some(n) = num() {
                    p.error_recovery_level = n as u8;
                }
            }
            Key::InitialR2T => p.initial_r2t = yes,
            Key::ImmediateData => p.immediate_data = yes,
            Key::DataPduInOrder => p.data_pdu_in_order = yes,
            Key::DataSequenceInOrder => p.data_sequence_in_order = yes,
            _ => {}
        }
    }

    /// Records a declarative key from the peer (RFC 7143 §6.2: no answer).
    fn declare(&mut self, key: Key, value: &str) -> Result<(), NegotiationError> {
        let bad = || NegotiationError::BadDeclaration {
            key: key.name().to_string(),
            value: value.chars().take(80).collect(),
        };
        let p = &mut self.params;
        match key {
            Key::InitiatorName => {
                if value.is_empty() {
                    return Err(bad());
                }
                p.initiator_name = Some(value.to_string());
            }
            Key::TargetName => {
                if value.is_empty() {
                    return Err(bad());
                }
                p.target_name = Some(value.to_string());
            }
            Key::InitiatorAlias => p.initiator_alias = Some(value.to_string()),
            Key::TargetAlias => p.target_alias = Some(value.to_string()),
            Key::TargetAddress => p.target_addresses.push(value.to_string()),
            Key::TargetPortalGroupTag => {
                let n = text::decode_number(value).map_err(|_| bad())?;
                p.target_portal_group_tag = Some(u16::try_from(n).map_err(|_| bad())?);
            }
            Key::MaxRecvDataSegmentLength => {
                let n = parse_ranged(value, DATA_LEN.0, DATA_LEN.1).ok_or_else(bad)?;
                p.peer_max_recv_data_segment_length = n as u32;
            }
            Key::SessionType => {
                p.session_type = SessionType::parse(value).ok_or_else(|| {
                    NegotiationError::SessionTypeNotSupported(value.chars().take(80).collect())
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Processes the peer's keys of one request/response. Returns our
    /// answers and the CHAP_* keys (handed to the caller's CHAP state).
    ///
    /// `login` is false for full-feature Text exchanges, where keys of use
    /// All may be renegotiated and LO/IO keys are refused.
    fn process(
        &mut self,
        keys: &TextPairs,
        stage: Stage,
        ops_allowed: bool,
    ) -> Result<(TextPairs, TextPairs), NegotiationError> {
        let login = stage != Stage::FullFeature;
        let mut out = TextPairs::new();
        let mut auth = TextPairs::new();
        let mut answered_here: Vec<Key> = Vec::new();
        for (name, value) in keys.iter() {
            if name.starts_with("CHAP_") {
                if stage != Stage::Security {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                auth.push(name, value);
                continue;
            }
            let Some(key) = Key::from_name(name) else {
                // Unknown keys, including X- and X# extension keys we do
                // not implement, get NotUnderstood (RFC 7143 §6.2).
                out.push(name, NOT_UNDERSTOOD);
                continue;
            };
            // An answer to one of our offers.
            if let Some(offered) = self.pending.remove(&key) {
                self.take_answer(key, &offered, value)?;
                continue;
            }
            if !self.peer_may_send(key) {
                out.push(name, REJECT);
                continue;
            }
            match (key.usage(), login) {
                (Usage::FullFeatureOnly, true) => {
                    out.push(name, REJECT);
                    continue;
                }
                (Usage::LeadingOnly | Usage::InitializeOnly | Usage::SecurityOnly, false) => {
                    // RFC 7143 §13: LO and IO keys are login-only; after
                    // login we refuse them.
                    out.push(name, REJECT);
                    continue;
                }
                _ => {}
            }
            if login {
                if key.usage() == Usage::SecurityOnly && stage != Stage::Security {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                if stage == Stage::Security && key.is_operational() && !ops_allowed {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                // RFC 7143 §6.2: "An attempt to renegotiate/redeclare
                // parameters not specifically allowed MUST be detected"; the
                // target answers with Login reject (Initiator Error).
                if self.settled.contains(&key) && key != Key::TargetAddress {
                    return Err(NegotiationError::Renegotiated(name.to_string()));
                }
                self.settled.insert(key);
            }
            if self.params.session_type == SessionType::Discovery && key.irrelevant_in_discovery() {
                out.push(name, IRRELEVANT);
                continue;
            }
            match key {
                // RFC 7143 §13.25: obsolete marker keys. OFMarkInt and
                // IFMarkInt MUST be answered Reject; for IFMarker/OFMarker
                // "No" is allowed and is what RFC 3720 peers expect.
                Key::IfMarkInt | Key::OfMarkInt => out.push(name, REJECT),
                Key::IfMarker | Key::OfMarker => out.push(name, "No"),
                _ => match key.rule() {
                    Rule::Declarative => self.declare(key, value)?,
                    rule => {
                        let answer = respond(rule, self.prefs.value(key), value);
                        if answer != REJECT {
                            self.apply(key, &answer);
                        }
                        if key == Key::AuthMethod && answer == REJECT {
                            return Err(NegotiationError::NoCommonAuthMethod);
                        }
                        out.push(name, answer);
                        answered_here.push(key);
                    }
                },
            }
        }
        self.fix_first_burst(&mut out, &answered_here);
        Ok((out, auth))
    }

    /// RFC 7143 §13.14: FirstBurstLength is irrelevant when InitialR2T=Yes
    /// and ImmediateData=No, and must not exceed MaxBurstLength. Both
    /// depend on other keys of the same exchange, so this runs last.
    fn fix_first_burst(&mut self, out: &mut TextPairs, answered_here: &[Key]) {
        if !answered_here.contains(&Key::FirstBurstLength) {
            self.params.first_burst_length = self
                .params
                .first_burst_length
                .min(self.params.max_burst_length);
            return;
        }
        let name = Key::FirstBurstLength.name();
        if out.get(name) == Some(REJECT) {
            return;
        }
        if self.params.initial_r2t && !self.params.immediate_data {
            out.set(name, IRRELEVANT);
            self.params.first_burst_length = 65_536.min(self.params.max_burst_length);
            return;
        }
        let clamped = self
            .params
            .first_burst_length
            .min(self.params.max_burst_length);
        self.params.first_burst_length = clamped;
        out.set(name, text::encode_decimal(u64::from(clamped)));
    }

    /// Handles the peer's answer to our offer.
    fn take_answer(
        &mut self,
        key: Key,
        offered: &str,
        answer: &str,
    ) -> Result<(), NegotiationError> {
        self.settled.insert(key);
        match answer {
            // The default stays in force (RFC 7143 §6.2). If our value was
            // needed (we only offer what differs from the default, and for
            // AuthMethod always), refusing it fails the negotiation.
            REJECT | NOT_UNDERSTOOD => {
                if key == Key::AuthMethod {
                    return Err(NegotiationError::NoCommonAuthMethod);
                }
                if self.role == Role::Target {
                    return Err(NegotiationError::OfferRefused {
                        key: key.name().to_string(),
                        value: answer.to_string(),
                    });
                }
                Ok(())
            }
            IRRELEVANT => Ok(()),
            _ => {
                let result = check_answer(key.rule(), offered, answer).ok_or_else(|| {
                    NegotiationError::BadAnswer {
                        key: key.name().to_string(),
                        value: answer.chars().take(80).collect(),
                    }
                })?;
                if key.rule() == Rule::Declarative {
                    self.declare(key, &result)
                } else {
                    self.apply(key, &result);
                    Ok(())
                }
            }
        }
    }

    /// Records an offer we send.
    fn offer(&mut self, out: &mut TextPairs, key: Key, value: String) {
        self.pending.insert(key, value.clone());
        out.push(key.name(), value);
    }

    /// Declares our MaxRecvDataSegmentLength once per login.
    fn declare_mrdsl(&mut self, out: &mut TextPairs) {
        if self.declared_mrdsl {
            return;
        }
        self.declared_mrdsl = true;
        let v = self.prefs.value(Key::MaxRecvDataSegmentLength).to_string();
        if let Some(n) = parse_ranged(&v, DATA_LEN.0, DATA_LEN.1) {
            self.params.local_max_recv_data_segment_length = n as u32;
        }
        out.push(Key::MaxRecvDataSegmentLength.name(), v);
    }
}

// ---------------------------------------------------------------------------
// Target

/// Target side of login and text negotiation for one connection.
#[derive(Debug, Clone)]
pub struct TargetNegotiator {
    limits: TargetLimits,
    engine: Engine,
    chap: Option<ChapTarget>,
    first_done: bool,
    authenticated: bool,
    offered_ops: bool,
}

impl TargetNegotiator {
    /// A negotiator enforcing `limits`.
    pub fn new(limits: TargetLimits) -> Self {
        let mut values = HashMap::new();
        let mut set = |k: Key, v: String| {
            values.insert(k, v);
        };
        set(
            Key::HeaderDigest,
            join_list(&limits.header_digests, DigestType::as_str),
        );
        set(
            Key::DataDigest,
            join_list(&limits.data_digests, DigestType::as_str),
        );
        set(
            Key::AuthMethod,
            join_list(&limits.auth_methods, AuthMethod::as_str),
        );
        set(Key::MaxConnections, limits.max_connections.to_string());
        set(
            Key::MaxOutstandingR2T,
            limits.max_outstanding_r2t.to_string(),
        );
        set(Key::MaxBurstLength, limits.max_burst_length.to_string());
        set(Key::FirstBurstLength, limits.first_burst_length.to_string());
        set(Key::DefaultTime2Wait, limits.default_time2wait.to_string());
        set(
            Key::DefaultTime2Retain,
            limits.default_time2retain.to_string(),
        );
        set(
            Key::ErrorRecoveryLevel,
            limits.error_recovery_level.to_string(),
        );
        set(Key::InitialR2T, bool_str(limits.initial_r2t));
        set(Key::ImmediateData, bool_str(limits.immediate_data));
        set(Key::DataPduInOrder, bool_str(limits.data_pdu_in_order));
        set(
            Key::DataSequenceInOrder,
            bool_str(limits.data_sequence_in_order),
        );
        set(Key::TaskReporting, "RFC3720".to_string());
        set(Key::ProtocolLevel, "1".to_string());
        set(
            Key::MaxRecvDataSegmentLength,
            limits.max_recv_data_segment_length.to_string(),
        );
        let engine = Engine::new(Role::Target, Prefs { values });
        TargetNegotiator {
            limits,
            engine,
            chap: None,
            first_done: false,
            authenticated: false,
            offered_ops: false,
        }
    }

    /// Attaches the CHAP state. Call it before the request carrying CHAP_A
    /// arrives, e.g. after the first request once TargetName is known (to
    /// pick per-target credentials).
    pub fn set_chap(&mut self, chap: ChapTarget) {
        self.chap = Some(chap);
    }

    /// The attached CHAP state, e.g. for the authenticated name.
    pub fn chap(&self) -> Option<&ChapTarget> {
        self.chap.as_ref()
    }

    fn requires_auth(&self) -> bool {
        !self.limits.auth_methods.contains(&AuthMethod::None)
    }

    /// Processes the keys of one (reassembled) login request in stage
    /// `stage` (the request's CSG) and returns the keys of the response.
    /// On `Err` the login fails with [`NegotiationError::login_status`].
    pub fn on_login_request(
        &mut self,
        stage: Stage,
        keys: &TextPairs,
    ) -> Result<TextPairs, NegotiationError> {
        if stage == Stage::FullFeature {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: "CSG".to_string(),
                stage,
            });
        }
        let first = !self.first_done;
        if first {
            self.first_done = true;
            // SessionType decides which keys are relevant, so read it first.
            if let Some(v) = keys.get("SessionType") {
                let st = SessionType::parse(v)
                    .ok_or_else(|| NegotiationError::SessionTypeNotSupported(v.to_string()))?;
                if st == SessionType::Discovery && !self.limits.allow_discovery {
                    return Err(NegotiationError::SessionTypeNotSupported(v.to_string()));
                }
                self.engine.params.session_type = st;
            }
            // RFC 7143 §13.6 / §13.4: InitiatorName always, TargetName for
            // normal sessions, in the first login request.
            match keys.get("InitiatorName") {
                Some(v) if !v.is_empty() => {}
                _ => return Err(NegotiationError::MissingInitiatorName),
            }
            if self.engine.params.session_type == SessionType::Normal
                && !matches!(keys.get("TargetName"), Some(v) if !v.is_empty())
            {
                return Err(NegotiationError::MissingTargetName);
            }
            // Skipping the security stage is only possible without
            // authentication (RFC 7143 §6.3).
            if stage == Stage::Operational && self.requires_auth() {
                return Err(NegotiationError::AuthenticationRequired);
            }
        }

        // Operational keys may ride in the security stage only if the
        // initiator proposes no security, or immediately after the security
        // negotiation (RFC 7143 §6.3.3): allow them when CHAP is not chosen,
        // already finished, or finishes with this request's CHAP_R (a failed
        // CHAP_R fails the whole login anyway).
        let chap_selected = self.engine.params.auth_method == AuthMethod::Chap
            || keys.get("AuthMethod").is_some_and(|v| {
                respond(Rule::List, self.engine.prefs.value(Key::AuthMethod), v) == "CHAP"
            });
        let ops_allowed = !chap_selected || self.authenticated || keys.contains_key("CHAP_R");

        let (mut out, auth_keys) = self.engine.process(keys, stage, ops_allowed)?;

        // Drive CHAP with the CHAP_* keys of this request.
        if !auth_keys.is_empty() {
            if self.engine.params.auth_method != AuthMethod::Chap || self.authenticated {
                let k = auth_keys.iter().next().map(|(k, _)| k).unwrap_or("CHAP_");
                return Err(NegotiationError::KeyNotAllowedInStage {
                    key: k.to_string(),
                    stage,
                });
            }
            let chap = self
                .chap
                .as_mut()
                .ok_or(NegotiationError::ChapNotConfigured)?;
            let step = chap.step(&auth_keys)?;
            if step.is_done() {
                self.authenticated = true;
            }
            out.extend(step.keys().clone());
        }
        if self.engine.settled.contains(&Key::AuthMethod)
            && self.engine.params.auth_method == AuthMethod::None
        {
            self.authenticated = true;
        }

        if first {
            // SessionType is fixed by the first request (default Normal);
            // declaring it later would change the rules mid-login.
            self.engine.settled.insert(Key::SessionType);
            let p = &self.engine.params;
            // RFC 7143 §13.9: TargetPortalGroupTag in the response to the
            // first login request when TargetName was given.
            if p.target_name.is_some() {
                if let Some(tag) = self.limits.portal_group_tag {
                    out.push(Key::TargetPortalGroupTag.name(), tag.to_string());
                    self.engine.params.target_portal_group_tag = Some(tag);
                }
                if let Some(alias) = &self.limits.target_alias {
                    out.push(Key::TargetAlias.name(), alias.clone());
                    self.engine.params.target_alias = Some(alias.clone());
                }
            }
        }

        // Operational keys in the security stage mean the initiator may go
        // straight to full feature phase, so declare our receive limit now.
        let has_ops = keys
            .iter()
            .any(|(k, _)| Key::from_name(k).is_some_and(Key::is_operational));
        if stage == Stage::Security && has_ops {
            self.engine.declare_mrdsl(&mut out);
        }
        if stage == Stage::Operational {
            // The target always declares its receive limit (RFC 7143
            // §13.12), and offers keys whose value it needs to differ from
            // the RFC default when the initiator did not bring them up.
            self.engine.declare_mrdsl(&mut out);
            if !self.offered_ops {
                self.offered_ops = true;
                self.offer_needed(&mut out);
            }
        }
        Ok(out)
    }

    /// Offers every operational key whose target value would change the
    /// result against the RFC default, and that is still unsettled.
    fn offer_needed(&mut self, out: &mut TextPairs) {
        let discovery = self.engine.params.session_type == SessionType::Discovery;
        for key in Key::ALL {
            if self.engine.settled.contains(&key)
                || !key.is_operational()
                || key.usage() == Usage::FullFeatureOnly
                || matches!(
                    key,
                    Key::IfMarker | Key::OfMarker | Key::IfMarkInt | Key::OfMarkInt
                )
                || (discovery && key.irrelevant_in_discovery())
            {
                continue;
            }
            let rule = key.rule();
            if rule == Rule::Declarative {
                continue;
            }
            let ours = self.engine.prefs.value(key).to_string();
            let default = key.default_value();
            let needed = match rule {
                Rule::List => !ours.split(',').any(|v| v == default),
                _ => respond(rule, &ours, default) != default,
            };
            if needed {
                let value = if rule == Rule::List {
                    ours
                } else {
                    respond(rule, &ours, default)
                };
                self.engine.settled.insert(key);
                self.engine.offer(out, key, value);
            }
        }
    }

    /// Whether the target may set T=1 to leave `stage` (when the initiator
    /// asked to). `Ok(false)`: more exchanges are needed (CHAP under way,
    /// or our offers unanswered). `Err`: the login must fail, e.g. the
    /// initiator wants to leave the security stage unauthenticated.
    pub fn ready_to_leave(&self, stage: Stage) -> Result<bool, NegotiationError> {
        match stage {
            Stage::Security => {
                if self.authenticated {
                    return Ok(true);
                }
                if self.engine.params.auth_method == AuthMethod::Chap {
                    // CHAP agreed but not finished: keep the stage.
                    return Ok(false);
                }
                if self.requires_auth() {
                    return Err(NegotiationError::AuthenticationRequired);
                }
                Ok(true)
            }
            Stage::Operational => Ok(self.engine.pending.is_empty()),
            Stage::FullFeature => Ok(true),
        }
    }

    /// Answers the keys of a full-feature Text request (RFC 7143 §6.6,
    /// Appendix C). LO/IO keys get Reject, unknown keys NotUnderstood;
    /// SendTargets is handed to the caller in [`TextReply::send_targets`].
    pub fn on_text_request(&mut self, keys: &TextPairs) -> Result<TextReply, NegotiationError> {
        let mut filtered = TextPairs::new();
        let mut send_targets = None;
        let mut rejected_st = false;
        for (k, v) in keys.iter() {
            if k == Key::SendTargets.name() {
                let discovery = self.engine.params.session_type == SessionType::Discovery;
                // RFC 7143 Appendix C: "All" only in discovery sessions; an
                // empty value names the session's target (normal sessions).
                send_targets = match (v, discovery) {
                    ("All", true) => Some(SendTargetsRequest::All),
                    ("", false) => Some(SendTargetsRequest::SessionTarget),
                    ("All", false) | ("", true) => {
                        rejected_st = true;
                        None
                    }
                    (name, _) => Some(SendTargetsRequest::Target(name.to_string())),
                };
            } else {
                filtered.push(k, v);
            }
        }
        let (mut out, auth) = self.engine.process(&filtered, Stage::FullFeature, true)?;
        if let Some((k, _)) = auth.iter().next() {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: k.to_string(),
                stage: Stage::FullFeature,
            });
        }
        if rejected_st {
            out.push(Key::SendTargets.name(), REJECT);
        }
        Ok(TextReply {
            keys: out,
            send_targets,
        })
    }

    /// The negotiated parameters so far (final once the login completed).
    pub fn params(&self) -> &SessionParams {
        &self.engine.params
    }

    /// Whether the initiator authenticated, or authentication is not
    /// required and was not chosen.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
            || (!self.requires_auth() && self.engine.params.auth_method == AuthMethod::None)
    }
}

// ---------------------------------------------------------------------------
// Initiator

/// Initiator side of login negotiation.
#[derive(Debug, Clone)]
pub struct InitiatorNegotiator {
    config: InitiatorConfig,
    engine: Engine,
    chap: Option<ChapInitiator>,
    offered: HashSet<Stage>,
    auth_done: bool,
}

impl InitiatorNegotiator {
    /// A negotiator offering `config`.
    pub fn new(config: InitiatorConfig) -> Self {
        let mut values = HashMap::new();
        let mut set = |k: Key, v: String| {
            values.insert(k, v);
        };
        set(
            Key::HeaderDigest,
            join_list(&config.header_digests, DigestType::as_str),
        );
        set(
            Key::DataDigest,
            join_list(&config.data_digests, DigestType::as_str),
        );
        set(
            Key::AuthMethod,
            join_list(&config.auth_methods, AuthMethod::as_str),
        );
        set(Key::MaxConnections, config.max_connections.to_string());
        set(
            Key::MaxOutstandingR2T,
            config.max_outstanding_r2t.to_string(),
        );
        set(Key::MaxBurstLength, config.max_burst_length.to_string());
        set(Key::FirstBurstLength, config.first_burst_length.to_string());
        set(Key::DefaultTime2Wait, config.default_time2wait.to_string());
        set(
            Key::DefaultTime2Retain,
            config.default_time2retain.to_string(),
        );
        set(
            Key::ErrorRecoveryLevel,
            config.error_recovery_level.to_string(),
        );
        set(Key::InitialR2T, bool_str(config.initial_r2t));
        set(Key::ImmediateData, bool_str(config.immediate_data));
        set(Key::DataPduInOrder, bool_str(config.data_pdu_in_order));
        set(
            Key::DataSequenceInOrder,
            bool_str(config.data_sequence_in_order),
        );
        set(Key::TaskReporting, "RFC3720".to_string());
        set(Key::ProtocolLevel, "1".to_string());
        set(
            Key::MaxRecvDataSegmentLength,
            config.max_recv_data_segment_length.to_string(),
        );
        let mut engine = Engine::new(Role::Initiator, Prefs { values });
        engine.params.session_type = config.session_type;
        engine.params.initiator_name = Some(config.initiator_name.clone());
        engine.params.initiator_alias = config.initiator_alias.clone();
        engine.params.target_name = config.target_name.clone();
        InitiatorNegotiator {
            config,
            engine,
            chap: None,
            offered: HashSet::new(),
            auth_done: false,
        }
    }

    /// Attaches the CHAP state (needed when `auth_methods` offers CHAP).
    pub fn set_chap(&mut self, chap: ChapInitiator) {
        self.chap = Some(chap);
    }

    fn only_none_offered(&self) -> bool {
        self.config
            .auth_methods
            .iter()
            .all(|m| *m == AuthMethod::None)
    }

    /// The keys to offer when entering `stage` (once per stage; later calls
    /// return nothing). Security: names, SessionType and AuthMethod.
    /// Operational: every operational key (for discovery sessions only the
    /// digests and MaxRecvDataSegmentLength). Merge the result with what
    /// [`InitiatorNegotiator::on_login_response`] returned.
    pub fn offer(&mut self, stage: Stage) -> TextPairs {
        let mut out = TextPairs::new();
        if stage == Stage::FullFeature || !self.offered.insert(stage) {
            return out;
        }
        let first = self.offered.len() == 1;
        if first {
            out.push("InitiatorName", self.config.initiator_name.clone());
            if let Some(alias) = &self.config.initiator_alias {
                out.push("InitiatorAlias", alias.clone());
            }
            if let Some(t) = &self.config.target_name {
                if self.config.session_type == SessionType::Normal {
                    out.push("TargetName", t.clone());
                }
            }
            out.push("SessionType", self.config.session_type.as_str());
            for k in [
                Key::InitiatorName,
                Key::InitiatorAlias,
                Key::TargetName,
                Key::SessionType,
            ] {
                self.engine.settled.insert(k);
            }
        }
        let e = &mut self.engine;
        match stage {
            Stage::Security => {
                let v = e.prefs.value(Key::AuthMethod).to_string();
                e.settled.insert(Key::AuthMethod);
                e.offer(&mut out, Key::AuthMethod, v);
            }
            Stage::Operational => {
                let discovery = e.params.session_type == SessionType::Discovery;
                let keys: &[Key] = if discovery {
                    &[Key::HeaderDigest, Key::DataDigest]
                } else {
                    &[
                        Key::HeaderDigest,
                        Key::DataDigest,
                        Key::ErrorRecoveryLevel,
                        Key::InitialR2T,
                        Key::ImmediateData,
                        Key::MaxBurstLength,
                        Key::FirstBurstLength,
                        Key::DefaultTime2Wait,
                        Key::DefaultTime2Retain,
                        Key::MaxOutstandingR2T,
                        Key::DataPduInOrder,
                        Key::DataSequenceInOrder,
                        Key::MaxConnections,
                    ]
                };
                for &k in keys {
                    if e.settled.contains(&k) {
                        continue;
                    }
                    let v = e.prefs.value(k).to_string();
                    e.settled.insert(k);
                    e.offer(&mut out, k, v);
                }
                e.declare_mrdsl(&mut out);
            }
            Stage::FullFeature => {}
        }
        out
    }

    /// Processes the keys of one (reassembled) login response in `stage`
    /// (the response's CSG): checks answers to our offers, answers the
    /// target's own offers, runs CHAP. Returns the keys for the next
    /// request (possibly empty). On `Err` drop the connection.
    pub fn on_login_response(
        &mut self,
        stage: Stage,
        keys: &TextPairs,
    ) -> Result<TextPairs, NegotiationError> {
        let (mut out, auth_keys) = self.engine.process(keys, stage, true)?;
        if self.engine.params.auth_method == AuthMethod::None
            && !self.engine.pending.contains_key(&Key::AuthMethod)
        {
            self.auth_done = true;
        }
        if self.engine.params.auth_method == AuthMethod::Chap && !self.auth_done {
            let chap = self
                .chap
                .as_mut()
                .ok_or(NegotiationError::ChapNotConfigured)?;
            if auth_keys.is_empty() {
                // AuthMethod=CHAP was just agreed: start with CHAP_A.
                if !chap.has_started() {
                    out.extend(chap.start());
                }
            } else {
                let step = chap.step(&auth_keys)?;
                if step.is_done() {
                    self.auth_done = true;
                }
                out.extend(step.keys().clone());
            }
        } else if let Some((k, _)) = auth_keys.iter().next() {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: k.to_string(),
                stage,
            });
        }
        Ok(out)
    }

    /// Whether the initiator may set T=1 to leave `stage`. For the
    /// security stage: authentication finished on our side (or only the
    /// target's mutual CHAP answer is awaited), or only AuthMethod=None was
    /// offered (the answer cannot change anything).
    /// For the operational stage: nothing the target offered is left to
    /// answer (we answer at once, so this is true unless CHAP state is
    /// inconsistent).
    pub fn ready_to_leave(&self, stage: Stage) -> Result<bool, NegotiationError> {
        match stage {
            // With mutual CHAP the initiator may ask to transit together
            // with its challenge: the target's answer arrives in the
            // response that transits, and is verified before accepting it.
            Stage::Security => Ok(self.auth_done
                || self
                    .chap
                    .as_ref()
                    .is_some_and(ChapInitiator::awaits_mutual_response)
                || (self.only_none_offered()
                    && self.engine.params.auth_method == AuthMethod::None)),
            Stage::Operational | Stage::FullFeature => Ok(true),
        }
    }

    /// The attached CHAP state, e.g. to see whether the target's mutual
    /// response was verified ([`ChapInitiator::is_done`]).
    pub fn chap(&self) -> Option<&ChapInitiator> {
        self.chap.as_ref()
    }

    /// Whether our part of authentication is complete: AuthMethod=None
    /// agreed, our CHAP response sent (one-way), or the target's mutual
    /// response verified. Whether the target accepted our response shows
    /// only in its login status.
    pub fn is_authenticated(&self) -> bool {
        self.auth_done
    }

    /// Whether every offer we made has been answered.
    pub fn all_answered(&self) -> bool {
        self.engine.pending.is_empty()
    }

    /// The negotiated parameters so far (final once the login completed).
    pub fn params(&self) -> &SessionParams {
        &self.engine.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chap::{ChapCredentials, ChapTargetConfig, MutualChap};

    const INITIATOR: &str = "iqn.2024-01.org.example:node1";
    const TARGET: &str = "iqn.2024-01.org.example:disk";

    fn kv(list: &[(&str, &str)]) -> TextPairs {
        list.iter().copied().collect()
    }

    /// A target that went through a first security-stage request without
    /// authentication, ready for operational keys.
    fn target_after_security(limits: TargetLimits, session: SessionType) -> TargetNegotiator {
        let mut t = TargetNegotiator::new(limits);
        let mut first = kv(&[
            ("InitiatorName", INITIATOR),
            ("SessionType", session.as_str()),
        ]);
        if session == SessionType::Normal {
            first.push("TargetName", TARGET);
        }
        first.push("AuthMethod", "None");
        t.on_login_request(Stage::Security, &first).unwrap();
        assert!(t.ready_to_leave(Stage::Security).unwrap());
        t
    }

    type LimitsFn = fn(&mut TargetLimits);
    /// (clause, limits tweak, session type, offered keys, key, answer)
    type Row = (
        &'static str,
        LimitsFn,
        SessionType,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );

    fn no_change(_: &mut TargetLimits) {}

    /// One row per negotiation rule: (clause, limits tweak, session type,
    /// offered keys, key to check, expected answer).
    #[test]
    fn target_answers_follow_rfc_rules() {
        use SessionType::{Discovery, Normal};
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("§13.13 MaxBurstLength: min of offer and limit", no_change, Normal,
                &[("MaxBurstLength", "1048576")], "MaxBurstLength", "262144"),
            ("§13.13 MaxBurstLength: lower offer wins", no_change, Normal,
                &[("MaxBurstLength", "65536")], "MaxBurstLength", "65536"),
            ("§13.13 MaxBurstLength: hex offer accepted", no_change, Normal,
                &[("MaxBurstLength", "0x10000")], "MaxBurstLength", "65536"),
            ("§13.13 MaxBurstLength: below 512 -> Reject", no_change, Normal,
                &[("MaxBurstLength", "511")], "MaxBurstLength", "Reject"),
            ("§13.13 MaxBurstLength: above 2^24-1 -> Reject", no_change, Normal,
                &[("MaxBurstLength", "16777216")], "MaxBurstLength", "Reject"),
            ("§6.1 numerical value not a number -> Reject", no_change, Normal,
                &[("MaxBurstLength", "lots")], "MaxBurstLength", "Reject"),
            ("§13.14 FirstBurstLength: min", no_change, Normal,
                &[("FirstBurstLength", "262144")], "FirstBurstLength", "65536"),
            ("§13.14 FirstBurstLength: irrelevant when InitialR2T=Yes and ImmediateData=No",
                no_change, Normal,
                &[("FirstBurstLength", "65536"), ("InitialR2T", "Yes"), ("ImmediateData", "No")],
                "FirstBurstLength", "Irrelevant"),
            ("§13.14 FirstBurstLength: not above MaxBurstLength", no_change, Normal,
                &[("FirstBurstLength", "65536"), ("MaxBurstLength", "4096")],
                "FirstBurstLength", "4096"),
            ("§13.17 MaxOutstandingR2T: min", |l| l.max_outstanding_r2t = 4, Normal,
                &[("MaxOutstandingR2T", "16")], "MaxOutstandingR2T", "4"),
            ("§13.17 MaxOutstandingR2T: 0 out of range -> Reject", no_change, Normal,
                &[("MaxOutstandingR2T", "0")], "MaxOutstandingR2T", "Reject"),
            ("§13.2 MaxConnections: min with our 1", no_change, Normal,
                &[("MaxConnections", "8")], "MaxConnections", "1"),
            ("§13.2 MaxConnections: 0 out of range -> Reject", no_change, Normal,
                &[("MaxConnections", "0")], "MaxConnections", "Reject"),
            ("§13.16 DefaultTime2Retain: min", no_change, Normal,
                &[("DefaultTime2Retain", "60")], "DefaultTime2Retain", "20"),
            ("§13.16 DefaultTime2Retain: above 3600 -> Reject", no_change, Normal,
                &[("DefaultTime2Retain", "3601")], "DefaultTime2Retain", "Reject"),
            ("§13.15 DefaultTime2Wait: max, ours wins", no_change, Normal,
                &[("DefaultTime2Wait", "0")], "DefaultTime2Wait", "2"),
            ("§13.15 DefaultTime2Wait: max, offer wins", no_change, Normal,
                &[("DefaultTime2Wait", "10")], "DefaultTime2Wait", "10"),
            ("§13.20 ErrorRecoveryLevel: min with our 0", no_change, Normal,
                &[("ErrorRecoveryLevel", "2")], "ErrorRecoveryLevel", "0"),
            ("§13.20 ErrorRecoveryLevel: 3 out of range -> Reject", no_change, Normal,
                &[("ErrorRecoveryLevel", "3")], "ErrorRecoveryLevel", "Reject"),
            ("§13.10 InitialR2T: OR, our Yes wins", no_change, Normal,
                &[("InitialR2T", "No")], "InitialR2T", "Yes"),
            ("§13.10 InitialR2T: OR, both No", |l| l.initial_r2t = false, Normal,
                &[("InitialR2T", "No")], "InitialR2T", "No"),
            ("§13.10 InitialR2T: OR, offer Yes", |l| l.initial_r2t = false, Normal,
                &[("InitialR2T", "Yes")], "InitialR2T", "Yes"),
            ("§13.11 ImmediateData: AND, both Yes", no_change, Normal,
                &[("ImmediateData", "Yes")], "ImmediateData", "Yes"),
            ("§13.11 ImmediateData: AND, offer No", no_change, Normal,
                &[("ImmediateData", "No")], "ImmediateData", "No"),
            ("§13.11 ImmediateData: AND, our No", |l| l.immediate_data = false, Normal,
                &[("ImmediateData", "Yes")], "ImmediateData", "No"),
            ("§6.1 boolean not Yes/No -> Reject", no_change, Normal,
                &[("ImmediateData", "yes")], "ImmediateData", "Reject"),
            ("§13.19 DataPDUInOrder: OR, our Yes wins", no_change, Normal,
                &[("DataPDUInOrder", "No")], "DataPDUInOrder", "Yes"),
            ("§13.19 DataPDUInOrder: OR, both No", |l| l.data_pdu_in_order = false, Normal,
                &[("DataPDUInOrder", "No")], "DataPDUInOrder", "No"),
            ("§13.20 DataSequenceInOrder: OR, our Yes wins", no_change, Normal,
                &[("DataSequenceInOrder", "No")], "DataSequenceInOrder", "Yes"),
            ("§13.20 DataSequenceInOrder: OR, both No",
                |l| l.data_sequence_in_order = false, Normal,
                &[("DataSequenceInOrder", "No")], "DataSequenceInOrder", "No"),
            ("§13.1 HeaderDigest: first offered value we support", no_change, Normal,
                &[("HeaderDigest", "CRC32C,None")], "HeaderDigest", "CRC32C"),
            ("§13.1 HeaderDigest: offer order decides", no_change, Normal,
                &[("HeaderDigest", "None,CRC32C")], "HeaderDigest", "None"),
            ("§6.2.1 list: unknown values are skipped", no_change, Normal,
                &[("HeaderDigest", "SHA1,CRC32C")], "HeaderDigest", "CRC32C"),
            ("§6.2.1 list: nothing acceptable -> Reject", no_change, Normal,
                &[("HeaderDigest", "SHA1")], "HeaderDigest", "Reject"),
            ("§13.1 DataDigest: only what we support",
                |l| l.data_digests = vec![DigestType::None], Normal,
                &[("DataDigest", "CRC32C,None")], "DataDigest", "None"),
            ("§6.2 unknown key -> NotUnderstood", no_change, Normal,
                &[("FooBar", "1")], "FooBar", "NotUnderstood"),
            ("§13.5.3 X- vendor key -> NotUnderstood", no_change, Normal,
                &[("X-com.example.fast", "Yes")], "X-com.example.fast", "NotUnderstood"),
            ("§13.5.4 X# key we do not implement -> NotUnderstood", no_change, Normal,
                &[("X#NodeArchitecture", "other")], "X#NodeArchitecture", "NotUnderstood"),
            ("§13.25 OFMarkInt (obsolete) -> Reject", no_change, Normal,
                &[("OFMarkInt", "1~65535")], "OFMarkInt", "Reject"),
            ("§13.25 IFMarker (obsolete) -> No", no_change, Normal,
                &[("IFMarker", "No")], "IFMarker", "No"),
            ("§13.22 TaskReporting: RFC3720 only", no_change, Normal,
                &[("TaskReporting", "FastAbort,RFC3720")], "TaskReporting", "RFC3720"),
            ("RFC 7144 §13.24 iSCSIProtocolLevel: min with our 1", no_change, Normal,
                &[("iSCSIProtocolLevel", "2")], "iSCSIProtocolLevel", "1"),
            ("§13 MaxBurstLength irrelevant in discovery", no_change, Discovery,
                &[("MaxBurstLength", "65536")], "MaxBurstLength", "Irrelevant"),
            ("§13 ImmediateData irrelevant in discovery", no_change, Discovery,
                &[("ImmediateData", "Yes")], "ImmediateData", "Irrelevant"),
            ("§13 MaxConnections irrelevant in discovery", no_change, Discovery,
                &[("MaxConnections", "1")], "MaxConnections", "Irrelevant"),
            ("§13.1 HeaderDigest negotiated in discovery", no_change, Discovery,
                &[("HeaderDigest", "CRC32C")], "HeaderDigest", "CRC32C"),
            ("§13.7 TargetAlias has target senders only -> Reject", no_change, Normal,
                &[("TargetAlias", "x")], "TargetAlias", "Reject"),
            ("§13.3 SendTargets is FFPO -> Reject in login", no_change, Normal,
                &[("SendTargets", "All")], "SendTargets", "Reject"),
        ];
        for &(clause, tweak, session, offer, key, want) in rows {
            let mut limits = TargetLimits::default();
            tweak(&mut limits);
            let mut t = target_after_security(limits, session);
            let resp = t
                .on_login_request(Stage::Operational, &kv(offer))
                .unwrap_or_else(|e| panic!("{clause}: {e}"));
            assert_eq!(resp.get(key), Some(want), "{clause}: {resp:?}");
        }
    }

    /// One row per login failure: (clause, requests as (stage, keys),
    /// login status of the failure).
    #[test]
    fn target_login_failures_map_to_status() {
        let chap_only = || TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        };
        let base = [("InitiatorName", INITIATOR), ("TargetName", TARGET)];
        type Row<'a> = (
            &'a str,
            fn() -> TargetLimits,
            Vec<(Stage, Vec<(&'a str, &'a str)>)>,
            (u8, u8),
        );
        let rows: Vec<Row> = vec![
            (
                "§13.6 first request without InitiatorName -> 02/07",
                TargetLimits::default,
                vec![(Stage::Security, vec![("TargetName", TARGET)])],
                (2, 7),
            ),
            (
                "§13.4 normal session without TargetName -> 02/07",
                TargetLimits::default,
                vec![(Stage::Security, vec![("InitiatorName", INITIATOR)])],
                (2, 7),
            ),
            (
                "§13.21 unknown SessionType -> 02/09",
                TargetLimits::default,
                vec![(
                    Stage::Security,
                    vec![("InitiatorName", INITIATOR), ("SessionType", "Bulk")],
                )],
                (2, 9),
            ),
            (
                "§11.13.5 discovery not offered -> 02/09",
                || TargetLimits {
                    allow_discovery: false,
                    ..TargetLimits::default()
                },
                vec![(
                    Stage::Security,
                    vec![("InitiatorName", INITIATOR), ("SessionType", "Discovery")],
                )],
                (2, 9),
            ),
            (
                "§6.2 key renegotiated in a later request -> 02/00",
                TargetLimits::default,
                vec![
                    (
                        Stage::Operational,
                        [&base[..], &[("MaxBurstLength", "65536")]].concat(),
                    ),
                    (Stage::Operational, vec![("MaxBurstLength", "4096")]),
                ],
                (2, 0),
            ),
            (
                "§6.2 declaration repeated in a later request -> 02/00",
                TargetLimits::default,
                vec![
                    (Stage::Security, base.to_vec()),
                    (Stage::Operational, vec![("InitiatorName", INITIATOR)]),
                ],
                (2, 0),
            ),
            (
                "§13.21 SessionType only in the first request -> 02/00",
                TargetLimits::default,
                vec![
                    (Stage::Security, base.to_vec()),
                    (Stage::Operational, vec![("SessionType", "Discovery")]),
                ],
                (2, 0),
            ),
            (
                "§13.12 MaxRecvDataSegmentLength out of range -> 02/00",
                TargetLimits::default,
                vec![(
                    Stage::Operational,
                    [&base[..], &[("MaxRecvDataSegmentLength", "100")]].concat(),
                )],
                (2, 0),
            ),
            (
                "§12 AuthMethod outside the security stage -> 02/00",
                TargetLimits::default,
                vec![(
                    Stage::Operational,
                    [&base[..], &[("AuthMethod", "None")]].concat(),
                )],
                (2, 0),
            ),
            (
                "§12 no acceptable AuthMethod -> 02/01",
                chap_only,
                vec![(
                    Stage::Security,
                    [&base[..], &[("AuthMethod", "None")]].concat(),
                )],
                (2, 1),
            ),
            (
                "§6.3 skipping security when it is required -> 02/01",
                chap_only,
                vec![(Stage::Operational, base.to_vec())],
                (2, 1),
            ),
            (
                "§6.3.3 operational keys while CHAP is under way -> 02/00",
                chap_only,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "CHAP")]].concat(),
                    ),
                    (
                        Stage::Security,
                        vec![("CHAP_A", "5"), ("HeaderDigest", "None")],
                    ),
                ],
                (2, 0),
            ),
            (
                "§12.1.3 CHAP keys without AuthMethod=CHAP -> 02/00",
                TargetLimits::default,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "None")]].concat(),
                    ),
                    (Stage::Security, vec![("CHAP_A", "5")]),
                ],
                (2, 0),
            ),
            (
                "§12.1.3 CHAP chosen but not configured -> 03/00",
                chap_only,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "CHAP")]].concat(),
                    ),
                    (Stage::Security, vec![("CHAP_A", "5")]),
                ],
                (3, 0),
            ),
            (
                "§11.12 CSG=FullFeature in a login request -> 02/00",
                TargetLimits::default,
                vec![(Stage::FullFeature, base.to_vec())],
                (2, 0),
            ),
        ];
        for (clause, limits, requests, status) in rows {
            let mut t = TargetNegotiator::new(limits());
            let last = requests.len() - 1;
            for (i, (stage, keys)) in requests.into_iter().enumerate() {
                let got = t.on_login_request(stage, &kv(&keys));
                if i < last {
                    got.unwrap_or_else(|e| panic!("{clause}: early failure {e}"));
                } else {
                    let err = got.expect_err(clause);
                    assert_eq!(err.login_status(), status, "{clause}: {err}");
                }
            }
        }
    }

    #[test]
    fn leaving_security_unauthenticated_fails_when_auth_required() {
        let mut t = TargetNegotiator::new(TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        });
        // The initiator never offers AuthMethod and asks to transit.
        t.on_login_request(
            Stage::Security,
            &kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]),
        )
        .unwrap();
        let err = t.ready_to_leave(Stage::Security).unwrap_err();
        assert_eq!(err, NegotiationError::AuthenticationRequired);
        assert_eq!(err.login_status(), (2, 1));
        assert!(!t.is_authenticated());
    }

    #[test]
    fn duplicate_key_in_one_request_is_an_initiator_error() {
        let err = TextPairs::parse(b"MaxBurstLength=512\0MaxBurstLength=512\0").unwrap_err();
        assert_eq!(NegotiationError::from(err).login_status(), (2, 0));
    }

    #[test]
    fn first_response_declares_tpgt_and_alias_and_op_stage_declares_mrdsl() {
        let mut t = TargetNegotiator::new(TargetLimits {
            target_alias: Some("busrig disk".into()),
            portal_group_tag: Some(7),
            ..TargetLimits::default()
        });
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("InitiatorAlias", "node1"),
                    ("TargetName", TARGET),
                    ("SessionType", "Normal"),
                    ("AuthMethod", "None"),
                ]),
            )
            .unwrap();
        assert_eq!(
            resp.to_bytes(),
            b"AuthMethod=None\0TargetPortalGroupTag=7\0TargetAlias=busrig disk\0"
        );
        let p = t.params();
        assert_eq!(p.initiator_name.as_deref(), Some(INITIATOR));
        assert_eq!(p.initiator_alias.as_deref(), Some("node1"));
        assert_eq!(p.target_name.as_deref(), Some(TARGET));
        assert_eq!(p.target_portal_group_tag, Some(7));
        // An empty operational request still gets our declaration, once.
        let resp = t
            .on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        assert_eq!(resp.to_bytes(), b"MaxRecvDataSegmentLength=262144\0");
        let resp = t
            .on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        assert!(resp.is_empty());
        assert_eq!(t.params().local_max_recv_data_segment_length, 262_144);
        assert_eq!(t.params().peer_max_recv_data_segment_length, 8192);
    }

    #[test]
    fn discovery_first_response_has_no_tpgt() {
        let mut t = TargetNegotiator::new(TargetLimits::default());
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("SessionType", "Discovery"),
                    ("AuthMethod", "None"),
                ]),
            )
            .unwrap();
        assert_eq!(resp.to_bytes(), b"AuthMethod=None\0");
        assert_eq!(t.params().session_type, SessionType::Discovery);
    }

    /// An open-iscsi style operational request and the target's byte-exact
    /// answer with default limits.
    #[test]
    fn open_iscsi_style_operational_exchange_byte_exact() {
        let mut t = target_after_security(TargetLimits::default(), SessionType::Normal);
        let req = TextPairs::parse(
            b"HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=No\0ImmediateData=Yes\0\
MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0MaxConnections=1\0\
DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0",
        )
        .unwrap();
        let resp = t.on_login_request(Stage::Operational, &req).unwrap();
        assert_eq!(
            String::from_utf8(resp.to_bytes()).unwrap(),
            "HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=Yes\0ImmediateData=Yes\0\
MaxBurstLength=262144\0FirstBurstLength=65536\0MaxOutstandingR2T=1\0MaxConnections=1\0\
DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0"
        );
        assert!(t.ready_to_leave(Stage::Operational).unwrap());
        let p = t.params();
        assert_eq!(p.peer_max_recv_data_segment_length, 262_144);
        assert_eq!(p.default_time2retain, 0);
        assert!(p.initial_r2t && p.immediate_data);
        assert_eq!(
            (p.max_burst_length, p.first_burst_length),
            (262_144, 65_536)
        );
    }

    #[test]
    fn target_offers_what_it_needs_and_waits_for_answers() {
        let limits = TargetLimits {
            immediate_data: false,
            max_burst_length: 65_536,
            header_digests: vec![DigestType::Crc32c],
            ..TargetLimits::default()
        };
        let mut t = target_after_security(limits, SessionType::Normal);
        let resp = t
            .on_login_request(Stage::Operational, &kv(&[("DataDigest", "None")]))
            .unwrap();
        assert_eq!(
            resp.to_bytes(),
            b"DataDigest=None\0MaxRecvDataSegmentLength=262144\0HeaderDigest=CRC32C\0\
ImmediateData=No\0MaxBurstLength=65536\0"
        );
        assert!(!t.ready_to_leave(Stage::Operational).unwrap());
        let resp = t
            .on_login_request(
                Stage::Operational,
                &kv(&[
                    ("HeaderDigest", "CRC32C"),
                    ("ImmediateData", "No"),
                    ("MaxBurstLength", "8192"),
                ]),
            )
            .unwrap();
        assert!(resp.is_empty());
        assert!(t.ready_to_leave(Stage::Operational).unwrap());
        let p = t.params();
        assert_eq!(p.header_digest, DigestType::Crc32c);
        assert!(!p.immediate_data);
        assert_eq!(p.max_burst_length, 8192);
        // FirstBurstLength never exceeds MaxBurstLength (§13.14).
        assert_eq!(p.first_burst_length, 8192);
    }

    #[test]
    fn target_offer_answered_against_the_rules_fails() {
        let limits = TargetLimits {
            immediate_data: false,
            max_burst_length: 65_536,
            ..TargetLimits::default()
        };
        // §6.2.2 AND: an offered No must come back No.
        let mut t = target_after_security(limits.clone(), SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("ImmediateData", "Yes")]))
            .unwrap_err();
        assert!(matches!(err, NegotiationError::BadAnswer { .. }), "{err}");
        assert_eq!(err.login_status(), (2, 0));
        // Min: the answer may not exceed the offer.
        let mut t = target_after_security(limits.clone(), SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("MaxBurstLength", "131072")]))
            .unwrap_err();
        assert!(matches!(err, NegotiationError::BadAnswer { .. }), "{err}");
        // A refused offer we need fails the login.
        let mut t = target_after_security(limits, SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("ImmediateData", "Reject")]))
            .unwrap_err();
        assert!(
            matches!(err, NegotiationError::OfferRefused { .. }),
            "{err}"
        );
    }

    #[test]
    fn operational_keys_in_security_stage_without_auth() {
        // RFC 7143 §6.3.3: allowed from the first request when no security
        // is proposed; the target then declares its limit at once.
        let mut t = TargetNegotiator::new(TargetLimits::default());
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("TargetName", TARGET),
                    ("AuthMethod", "None"),
                    ("HeaderDigest", "CRC32C"),
                ]),
            )
            .unwrap();
        assert_eq!(resp.get("HeaderDigest"), Some("CRC32C"));
        assert_eq!(resp.get("MaxRecvDataSegmentLength"), Some("262144"));
    }

    #[test]
    fn full_feature_text_negotiation() {
        let mut t = target_after_security(TargetLimits::default(), SessionType::Normal);
        t.on_login_request(
            Stage::Operational,
            &kv(&[("MaxRecvDataSegmentLength", "8192")]),
        )
        .unwrap();
        // ALL keys may be declared again after login; LO/IO keys may not.
        let reply = t
            .on_text_request(&kv(&[
                ("MaxRecvDataSegmentLength", "65536"),
                ("MaxBurstLength", "4096"),
                ("HeaderDigest", "CRC32C"),
                ("X-com.example.q", "1"),
                ("SendTargets", ""),
            ]))
            .unwrap();
        assert_eq!(
            reply.keys.to_bytes(),
            b"MaxBurstLength=Reject\0HeaderDigest=Reject\0X-com.example.q=NotUnderstood\0"
        );
        assert_eq!(reply.send_targets, Some(SendTargetsRequest::SessionTarget));
        assert_eq!(t.params().peer_max_recv_data_segment_length, 65_536);
        assert_eq!(t.params().max_burst_length, 262_144);
        // "All" belongs to discovery sessions (Appendix C).
        let reply = t.on_text_request(&kv(&[("SendTargets", "All")])).unwrap();
        assert_eq!(reply.keys.get("SendTargets"), Some("Reject"));
        assert_eq!(reply.send_targets, None);
        let err = t.on_text_request(&kv(&[("CHAP_A", "5")])).unwrap_err();
        assert!(matches!(err, NegotiationError::KeyNotAllowedInStage { .. }));
    }

    #[test]
    fn send_targets_round_trip() {
        let entries = vec![
            SendTargetsEntry {
                name: "iqn.a".into(),
                addresses: vec![("10.0.0.1:3260".into(), 1), ("[fe80::1]:3260".into(), 2)],
            },
            SendTargetsEntry {
                name: "iqn.b".into(),
                addresses: vec![("10.0.0.1:3260".into(), 1)],
            },
        ];
        let pairs = send_targets_response(&entries);
        let bytes = pairs.to_bytes();
        assert_eq!(
            bytes,
            b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[fe80::1]:3260,2\0\
TargetName=iqn.b\0TargetAddress=10.0.0.1:3260,1\0"
        );
        let back = parse_send_targets(&TextPairs::parse_allow_repeats(&bytes).unwrap()).unwrap();
        assert_eq!(back, entries);
        assert!(parse_send_targets(&kv(&[("TargetAddress", "10.0.0.1:3260,1")])).is_err());
    }

    // -- initiator side ----------------------------------------------------

    #[test]
    fn initiator_checks_answers_against_result_functions() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            ("§6.2 min: answer above our offer", "MaxBurstLength", "524288"),
            ("§6.2 max: answer below our offer", "DefaultTime2Wait", "1"),
            ("§6.2.2 OR: our Yes answered No", "DataPDUInOrder", "No"),
            ("§6.2.1 list: value we did not offer", "HeaderDigest", "CRC32C"),
            ("§13.20 ErrorRecoveryLevel above offer", "ErrorRecoveryLevel", "1"),
        ];
        for &(clause, key, answer) in rows {
            let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
            ini.offer(Stage::Operational);
            let err = ini
                .on_login_response(Stage::Operational, &kv(&[(key, answer)]))
                .unwrap_err();
            assert!(
                matches!(err, NegotiationError::BadAnswer { .. }),
                "{clause}: {err}"
            );
        }
        // AND: our No answered Yes.
        let mut config = InitiatorConfig::new(INITIATOR);
        config.immediate_data = false;
        let mut ini = InitiatorNegotiator::new(config);
        ini.offer(Stage::Operational);
        assert!(ini
            .on_login_response(Stage::Operational, &kv(&[("ImmediateData", "Yes")]))
            .is_err());
    }

    #[test]
    fn initiator_answers_keys_the_target_offers_first() {
        let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
        ini.offer(Stage::Security);
        let next = ini
            .on_login_response(
                Stage::Security,
                &kv(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "3")]),
            )
            .unwrap();
        assert!(next.is_empty());
        assert_eq!(ini.params().target_portal_group_tag, Some(3));
        let next = ini
            .on_login_response(
                Stage::Operational,
                &kv(&[
                    ("MaxBurstLength", "65536"),
                    ("ImmediateData", "No"),
                    ("MaxRecvDataSegmentLength", "16384"),
                    ("X-vendor.key", "1"),
                ]),
            )
            .unwrap();
        assert_eq!(
            next.to_bytes(),
            b"MaxBurstLength=65536\0ImmediateData=No\0X-vendor.key=NotUnderstood\0"
        );
        let p = ini.params();
        assert_eq!(p.max_burst_length, 65_536);
        assert!(!p.immediate_data);
        assert_eq!(p.peer_max_recv_data_segment_length, 16_384);
        // Keys already negotiated are not offered again.
        let offer = ini.offer(Stage::Operational);
        assert!(!offer.contains_key("MaxBurstLength") && !offer.contains_key("ImmediateData"));
        assert!(offer.contains_key("FirstBurstLength"));
    }

    #[test]
    fn initiator_keeps_defaults_after_reject_or_irrelevant() {
        let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
        ini.offer(Stage::Operational);
        ini.on_login_response(
            Stage::Operational,
            &kv(&[
                ("MaxConnections", "Reject"),
                ("FirstBurstLength", "Irrelevant"),
            ]),
        )
        .unwrap();
        assert_eq!(ini.params().max_connections, 1);
        assert_eq!(ini.params().first_burst_length, 65_536);
        // The same key again from the target is a renegotiation (§6.2).
        let err = ini
            .on_login_response(Stage::Operational, &kv(&[("MaxConnections", "1")]))
            .unwrap_err();
        assert_eq!(err, NegotiationError::Renegotiated("MaxConnections".into()));
    }

    // -- both sides ---------------------------------------------------------

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
        config.header_digests = vec![DigestType::Crc32c, DigestType::None];
        config.max_recv_data_segment_length = 65_536;
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
}
