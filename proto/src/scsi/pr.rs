//! Persistent reservation CDBs and parameter data (SPC-4 §6.15 PERSISTENT
//! RESERVE IN, §6.16 PERSISTENT RESERVE OUT, §7.6.4.6 iSCSI TransportID).
//!
//! Sans-IO: every type decodes from `&[u8]` and encodes into a `Vec<u8>`.
//! Decoding errors carry the sense data they are answered with
//! ([`PrDecodeError::sense`]).
//!
//! PERSISTENT RESERVE IN CDB (opcode 5Eh, SPC-4 §6.15.1):
//!
//! ```text
//! byte 0     OPERATION CODE 5Eh
//! byte 1     SERVICE ACTION (bits 4..0)
//! bytes 7-8  ALLOCATION LENGTH
//! byte 9     CONTROL
//! ```
//!
//! PERSISTENT RESERVE OUT CDB (opcode 5Fh, SPC-4 §6.16.1):
//!
//! ```text
//! byte 0     OPERATION CODE 5Fh
//! byte 1     SERVICE ACTION (bits 4..0)
//! byte 2     SCOPE (bits 7..4) | TYPE (bits 3..0)
//! bytes 5-8  PARAMETER LIST LENGTH
//! byte 9     CONTROL
//! ```

use std::fmt;
use std::str::FromStr;

use crate::scsi::opcode::{PERSISTENT_RESERVE_IN, PERSISTENT_RESERVE_OUT};
use crate::scsi::sense::{Asc, Sense};

/// SCSI protocol identifier for iSCSI (SPC-4 §7.6.2, Table 444).
pub const PROTOCOL_ISCSI: u8 = 0x5;

/// The only scope SPC-4 keeps: the whole logical unit (SPC-4 §6.15.3.3).
pub const SCOPE_LU: u8 = 0x0;

/// Why PR parameter data or a PR CDB could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrDecodeError {
    /// The parameter list is not as long as the spec requires (SPC-4 §6.16.3).
    #[error("parameter list length error")]
    ParameterListLength,
    /// A CDB field holds a value the device server does not accept.
    #[error("invalid field in CDB byte {byte}")]
    InvalidCdbField { byte: u16, bit: Option<u8> },
    /// A parameter-list field holds a value the device server does not accept.
    #[error("invalid field in parameter list byte {byte}")]
    InvalidParameterField { byte: u16, bit: Option<u8> },
    /// Response data is shorter than its own length fields say (initiator side).
    #[error("truncated persistent reservation data")]
    Truncated,
}

impl PrDecodeError {
    /// The CHECK CONDITION sense data this error is reported with.
    pub fn sense(&self) -> Sense {
        match *self {
            PrDecodeError::ParameterListLength => Sense::new(Asc::PARAMETER_LIST_LENGTH_ERROR),
            PrDecodeError::InvalidCdbField { byte, bit } => {
                Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(byte, bit)
            }
            PrDecodeError::InvalidParameterField { byte, bit } => {
                Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST).param_field(byte, bit)
            }
            // Only initiators decode responses; a target never reports this.
            PrDecodeError::Truncated => Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// PERSISTENT RESERVE IN service actions (SPC-4 §6.15.1, Table 202).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrInAction {
    ReadKeys = 0x00,
    ReadReservation = 0x01,
    ReportCapabilities = 0x02,
    ReadFullStatus = 0x03,
}

impl PrInAction {
    pub fn from_code(code: u8) -> Option<PrInAction> {
        Some(match code {
            0x00 => PrInAction::ReadKeys,
            0x01 => PrInAction::ReadReservation,
            0x02 => PrInAction::ReportCapabilities,
            0x03 => PrInAction::ReadFullStatus,
            _ => return None,
        })
    }
}

/// A decoded PERSISTENT RESERVE IN CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrInCdb {
    pub action: PrInAction,
    pub allocation_length: u16,
}

impl PrInCdb {
    pub fn decode(cdb: &[u8]) -> Result<PrInCdb, PrDecodeError> {
        if cdb.len() < 10 {
            return Err(PrDecodeError::InvalidCdbField { byte: 0, bit: None });
        }
        let action =
            PrInAction::from_code(cdb[1] & 0x1f).ok_or(PrDecodeError::InvalidCdbField {
                byte: 1,
                bit: Some(4),
            })?;
        Ok(PrInCdb {
            action,
            allocation_length: be16(cdb, 7),
        })
    }

    pub fn encode(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = PERSISTENT_RESERVE_IN;
        c[1] = self.action as u8;
        c[7..9].copy_from_slice(&self.allocation_length.to_be_bytes());
        c
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 §6.16.2, Table 211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrOutAction {
    Register = 0x00,
    Reserve = 0x01,
    Release = 0x02,
    Clear = 0x03,
    Preempt = 0x04,
    PreemptAndAbort = 0x05,
    RegisterAndIgnoreExistingKey = 0x06,
    RegisterAndMove = 0x07,
}

impl PrOutAction {
    pub fn from_code(code: u8) -> Option<PrOutAction> {
        use PrOutAction::*;
        Some(match code {
            0x00 => Register,
            0x01 => Reserve,
            0x02 => Release,
            0x03 => Clear,
            0x04 => Preempt,
            0x05 => PreemptAndAbort,
            0x06 => RegisterAndIgnoreExistingKey,
            0x07 => RegisterAndMove,
            _ => return None,
        })
    }

    /// The name SPC-4 gives the service action, for messages.
    pub fn name(self) -> &'static str {
        match self {
            PrOutAction::Register => "REGISTER",
            PrOutAction::Reserve => "RESERVE",
            PrOutAction::Release => "RELEASE",
            PrOutAction::Clear => "CLEAR",
            PrOutAction::Preempt => "PREEMPT",
            PrOutAction::PreemptAndAbort => "PREEMPT AND ABORT",
            PrOutAction::RegisterAndIgnoreExistingKey => "REGISTER AND IGNORE EXISTING KEY",
            PrOutAction::RegisterAndMove => "REGISTER AND MOVE",
        }
    }

    /// Whether the TYPE field of the CDB is meaningful (SPC-4 §6.16.2:
    /// RESERVE, RELEASE, PREEMPT, PREEMPT AND ABORT and REGISTER AND MOVE).
    pub fn uses_type(self) -> bool {
        matches!(
            self,
            PrOutAction::Reserve
                | PrOutAction::Release
                | PrOutAction::Preempt
                | PrOutAction::PreemptAndAbort
                | PrOutAction::RegisterAndMove
        )
    }
}

/// A decoded PERSISTENT RESERVE OUT CDB. SCOPE and TYPE stay raw: which
/// values are acceptable depends on the service action and on the current
/// reservation (SPC-4 §6.16.2 says when they are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrOutCdb {
    pub action: PrOutAction,
    pub scope: u8,
    pub type_code: u8,
    pub parameter_list_length: u32,
}

impl PrOutCdb {
    pub fn decode(cdb: &[u8]) -> Result<PrOutCdb, PrDecodeError> {
        if cdb.len() < 10 {
            return Err(PrDecodeError::InvalidCdbField { byte: 0, bit: None });
        }
        let action =
            PrOutAction::from_code(cdb[1] & 0x1f).ok_or(PrDecodeError::InvalidCdbField {
                byte: 1,
                bit: Some(4),
            })?;
        Ok(PrOutCdb {
            action,
            scope: cdb[2] >> 4,
            type_code: cdb[2] & 0x0f,
            parameter_list_length: be32(cdb, 5),
        })
    }

    pub fn encode(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = PERSISTENT_RESERVE_OUT;
        c[1] = self.action as u8;
        c[2] = (self.scope << 4) | (self.type_code & 0x0f);
        c[5..9].copy_from_slice(&self.parameter_list_length.to_be_bytes());
        c
    }
}

/// Persistent reservation types (SPC-4 §6.16.2, Table 212).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrType {
    /// 1h Write Exclusive.
    WriteExclusive = 1,
    /// 3h Exclusive Access.
    ExclusiveAccess = 3,
    /// 5h Write Exclusive – Registrants Only (what fence_scsi takes).
    WriteExclusiveRegistrantsOnly = 5,
    /// 6h Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly = 6,
    /// 7h Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants = 7,
    /// 8h Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// Every type, in code order.
    pub const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    pub fn from_code(v: u8) -> Option<PrType> {
        PrType::ALL.into_iter().find(|t| *t as u8 == v)
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The short names sg_persist prints (WE, EA, WERO, EARO, WEAR, EAAR).
    pub fn abbrev(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "WE",
            PrType::ExclusiveAccess => "EA",
            PrType::WriteExclusiveRegistrantsOnly => "WERO",
            PrType::ExclusiveAccessRegistrantsOnly => "EARO",
            PrType::WriteExclusiveAllRegistrants => "WEAR",
            PrType::ExclusiveAccessAllRegistrants => "EAAR",
        }
    }

    /// The long name, as sg_persist words it.
    pub fn name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "Write Exclusive",
            PrType::ExclusiveAccess => "Exclusive Access",
            PrType::WriteExclusiveRegistrantsOnly => "Write Exclusive, registrants only",
            PrType::ExclusiveAccessRegistrantsOnly => "Exclusive Access, registrants only",
            PrType::WriteExclusiveAllRegistrants => "Write Exclusive, all registrants",
            PrType::ExclusiveAccessAllRegistrants => "Exclusive Access, all registrants",
        }
    }

    /// The Rust variant name, which machine-readable output uses.
    pub fn ident(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "WriteExclusive",
            PrType::ExclusiveAccess => "ExclusiveAccess",
            PrType::WriteExclusiveRegistrantsOnly => "WriteExclusiveRegistrantsOnly",
            PrType::ExclusiveAccessRegistrantsOnly => "ExclusiveAccessRegistrantsOnly",
            PrType::WriteExclusiveAllRegistrants => "WriteExclusiveAllRegistrants",
            PrType::ExclusiveAccessAllRegistrants => "ExclusiveAccessAllRegistrants",
        }
    }
}

impl fmt::Display for PrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbrev())
    }
}

/// Why a PR type string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a PR type is 1, 3, 5, 6, 7 or 8 (or WE, EA, WERO, EARO, WEAR, EAAR): {0:?}")]
pub struct PrTypeParseError(pub String);

impl FromStr for PrType {
    type Err = PrTypeParseError;
    /// Accepts sg_persist's `--prout-type` numbers and the abbreviations.
    fn from_str(s: &str) -> Result<PrType, PrTypeParseError> {
        let err = || PrTypeParseError(s.to_string());
        if let Ok(n) = s.parse::<u8>() {
            return PrType::from_code(n).ok_or_else(err);
        }
        PrType::ALL
            .into_iter()
            .find(|t| t.abbrev().eq_ignore_ascii_case(s))
            .ok_or_else(err)
    }
}

/// An iSCSI TransportID (SPC-4 §7.6.4.6).
///
/// ```text
/// byte 0     FORMAT CODE (bits 7..6) | PROTOCOL IDENTIFIER 5h (bits 3..0)
/// bytes 2-3  ADDITIONAL LENGTH (n - 3), at least 20, a multiple of 4
/// bytes 4-n  format 00b: ISCSI NAME, null terminated and null padded
///            format 01b: "NAME,i,0xISID", null terminated and null padded
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// iSCSI name of the initiator node.
    pub name: String,
    /// Initiator session ID: present for an initiator port (format 01b),
    /// absent for the whole initiator device (format 00b).
    pub isid: Option<[u8; 6]>,
}

impl TransportId {
    pub fn port(name: &str, isid: [u8; 6]) -> TransportId {
        TransportId {
            name: name.to_string(),
            isid: Some(isid),
        }
    }

    pub fn device(name: &str) -> TransportId {
        TransportId {
            name: name.to_string(),
            isid: None,
        }
    }

    /// Encoded form, padded to a multiple of 4 and at least 24 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let text = self.to_string();
        let format = if self.isid.is_some() { 0x40 } else { 0x00 };
        // The name is null terminated; ADDITIONAL LENGTH is at least 20 and a
        // multiple of four (SPC-4 §7.6.4.6).
        let len = (text.len() + 1).next_multiple_of(4).max(20);
        let mut out = vec![format | PROTOCOL_ISCSI, 0];
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.resize(4 + len, 0);
        out
    }

    /// Decodes one TransportID at the start of `b`; returns it and its
    /// length. `base` is the offset of `b` in the parameter list, for the
    /// field pointer of an error.
    pub fn decode(b: &[u8], base: usize) -> Result<(TransportId, usize), PrDecodeError> {
        let field = |off: usize, bit: Option<u8>| PrDecodeError::InvalidParameterField {
            byte: (base + off) as u16,
            bit,
        };
        if b.len() < 4 {
            return Err(field(0, None));
        }
        if b[0] & 0x0f != PROTOCOL_ISCSI {
            return Err(field(0, Some(3)));
        }
        let format = b[0] >> 6;
        let len = 4 + be16(b, 2) as usize;
        if len > b.len() {
            return Err(field(2, None));
        }
        let raw = &b[4..len];
        // The first null ends the name, whatever ADDITIONAL LENGTH says.
        let text = raw.split(|&c| c == 0).next().unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| field(4, None))?;
        let (name, isid) = match format {
            0 => (text, None),
            1 => {
                let sep = text
                    .to_ascii_lowercase()
                    .find(",i,0x")
                    .ok_or(field(4, None))?;
                let hex = &text[sep + 5..];
                (
                    &text[..sep],
                    Some(parse_isid(hex).ok_or(field(4 + sep + 5, None))?),
                )
            }
            _ => return Err(field(0, Some(7))),
        };
        if name.is_empty() {
            return Err(field(4, None));
        }
        Ok((
            TransportId {
                name: name.to_string(),
                isid,
            },
            len,
        ))
    }
}

/// The text form sg_persist shows and takes: `NAME` or `NAME,i,0xISID`.
impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(isid) = self.isid {
            f.write_str(",i,0x")?;
            for b in isid {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Why a TransportID string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportIdParseError {
    /// Nothing given.
    #[error("an empty transport ID")]
    Empty,
    /// The ISID after `,i,` is not 6 bytes of hex.
    #[error(
        "an ISID is 12 hex digits (6 bytes), optionally with 0x and ':' or '-' separators: {0:?}"
    )]
    Isid(String),
}

impl FromStr for TransportId {
    type Err = TransportIdParseError;
    /// sg_persist's `--transport-id` for iSCSI: `NAME` (the initiator
    /// device) or `NAME,i,0xISID` (one initiator port); the ISID may have
    /// `:`, `-` or `.` separators.
    fn from_str(s: &str) -> Result<TransportId, TransportIdParseError> {
        match s.split_once(",i,") {
            Some((name, isid)) => {
                let t = isid.trim();
                let t = t
                    .strip_prefix("0x")
                    .or_else(|| t.strip_prefix("0X"))
                    .unwrap_or(t);
                let hex: String = t
                    .chars()
                    .filter(|c| !matches!(c, ':' | '-' | '.'))
                    .collect();
                let isid =
                    parse_isid(&hex).ok_or_else(|| TransportIdParseError::Isid(isid.into()))?;
                Ok(TransportId::port(name, isid))
            }
            None if !s.is_empty() => Ok(TransportId::device(s)),
            None => Err(TransportIdParseError::Empty),
        }
    }
}

/// A reservation key that is not hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a hex reservation key")]
pub struct KeyParseError(pub String);

/// A RESERVATION KEY as sg_persist takes it: hex, with or without `0x`.
pub fn parse_key(s: &str) -> Result<u64, KeyParseError> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(h, 16).map_err(|_| KeyParseError(s.to_string()))
}

fn parse_isid(hex: &str) -> Option<[u8; 6]> {
    if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut isid = [0u8; 6];
    for (i, b) in isid.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(isid)
}

/// Basic PERSISTENT RESERVE OUT parameter list, every service action but
/// REGISTER AND MOVE (SPC-4 §6.16.3, Table 214).
///
/// ```text
/// bytes 0-7    RESERVATION KEY
/// bytes 8-15   SERVICE ACTION RESERVATION KEY
/// bytes 16-19  obsolete
/// byte 20      SPEC_I_PT (bit 3) | ALL_TG_PT (bit 2) | APTPL (bit 0)
/// bytes 22-23  obsolete
/// with SPEC_I_PT:
/// bytes 24-27  TRANSPORTID PARAMETER DATA LENGTH (n - 27)
/// bytes 28-n   TransportIDs
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrOutParams {
    pub reservation_key: u64,
    pub service_action_key: u64,
    pub spec_i_pt: bool,
    pub all_tg_pt: bool,
    pub aptpl: bool,
    /// With SPEC_I_PT: the initiator ports to register as well.
    pub transport_ids: Vec<TransportId>,
}

impl PrOutParams {
    /// Decodes the basic parameter list. `spec_i_pt_allowed` is false for
    /// every service action except REGISTER: SPEC_I_PT set there is an
    /// INVALID FIELD IN PARAMETER LIST (SPC-4 §6.16.3).
    pub fn decode(p: &[u8], spec_i_pt_allowed: bool) -> Result<PrOutParams, PrDecodeError> {
        if p.len() < 24 {
            return Err(PrDecodeError::ParameterListLength);
        }
        let mut out = PrOutParams {
            reservation_key: be64(p, 0),
            service_action_key: be64(p, 8),
            spec_i_pt: p[20] & 0x08 != 0,
            all_tg_pt: p[20] & 0x04 != 0,
            aptpl: p[20] & 0x01 != 0,
            transport_ids: Vec::new(),
        };
        if !out.spec_i_pt {
            // SPEC_I_PT zero: the list is exactly 24 bytes (SPC-4 §6.16.3).
            if p.len() != 24 {
                return Err(PrDecodeError::ParameterListLength);
            }
            return Ok(out);
        }
        if !spec_i_pt_allowed {
            return Err(PrDecodeError::InvalidParameterField {
                byte: 20,
                bit: Some(3),
            });
        }
        if p.len() < 28 {
            return Err(PrDecodeError::ParameterListLength);
        }
        let tpdl = be32(p, 24) as usize;
        if 28 + tpdl != p.len() {
            return Err(PrDecodeError::ParameterListLength);
        }
        let mut at = 28;
        while at < p.len() {
            let (tid, len) = TransportId::decode(&p[at..], at)?;
            out.transport_ids.push(tid);
            at += len;
        }
        Ok(out)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&self.reservation_key.to_be_bytes());
        p[8..16].copy_from_slice(&self.service_action_key.to_be_bytes());
        p[20] = (u8::from(self.spec_i_pt) << 3)
            | (u8::from(self.all_tg_pt) << 2)
            | u8::from(self.aptpl);
        if self.spec_i_pt {
            let tids: Vec<u8> = self.transport_ids.iter().flat_map(|t| t.encode()).collect();
            p.extend_from_slice(&(tids.len() as u32).to_be_bytes());
            p.extend_from_slice(&tids);
        }
        p
    }
}

/// REGISTER AND MOVE parameter list (SPC-4 §6.16.4, Table 216).
///
/// ```text
/// bytes 0-7    RESERVATION KEY
/// bytes 8-15   SERVICE ACTION RESERVATION KEY
/// byte 17      UNREG (bit 1) | APTPL (bit 0)
/// bytes 18-19  RELATIVE TARGET PORT IDENTIFIER
/// bytes 20-23  TRANSPORTID PARAMETER DATA LENGTH (n - 23)
/// bytes 24-n   TransportID
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterAndMoveParams {
    pub reservation_key: u64,
    pub service_action_key: u64,
    pub unreg: bool,
    pub aptpl: bool,
    pub relative_target_port: u16,
    pub transport_id: TransportId,
}

impl RegisterAndMoveParams {
    pub fn decode(p: &[u8]) -> Result<RegisterAndMoveParams, PrDecodeError> {
        if p.len() < 24 {
            return Err(PrDecodeError::ParameterListLength);
        }
        let tpdl = be32(p, 20) as usize;
        if 24 + tpdl != p.len() {
            return Err(PrDecodeError::ParameterListLength);
        }
        let (transport_id, _) = TransportId::decode(&p[24..], 24)?;
        Ok(RegisterAndMoveParams {
            reservation_key: be64(p, 0),
            service_action_key: be64(p, 8),
            unreg: p[17] & 0x02 != 0,
            aptpl: p[17] & 0x01 != 0,
            relative_target_port: be16(p, 18),
            transport_id,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let tid = self.transport_id.encode();
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&self.reservation_key.to_be_bytes());
        p[8..16].copy_from_slice(&self.service_action_key.to_be_bytes());
        p[17] = (u8::from(self.unreg) << 1) | u8::from(self.aptpl);
        p[18..20].copy_from_slice(&self.relative_target_port.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        p
    }
}

/// Checks the 8-byte PR IN header and returns the data after it, cut to
/// ADDITIONAL LENGTH.
fn pr_in_body(b: &[u8]) -> Result<(u32, &[u8]), PrDecodeError> {
    if b.len() < 8 {
        return Err(PrDecodeError::Truncated);
    }
    let len = be32(b, 4) as usize;
    let body = b.get(8..8 + len).ok_or(PrDecodeError::Truncated)?;
    Ok((be32(b, 0), body))
}

fn pr_in_header(generation: u32, additional_length: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + additional_length);
    b.extend_from_slice(&generation.to_be_bytes());
    b.extend_from_slice(&(additional_length as u32).to_be_bytes());
    b
}

/// READ KEYS parameter data (SPC-4 §6.15.2, Table 204).
///
/// ```text
/// bytes 0-3   PRGENERATION
/// bytes 4-7   ADDITIONAL LENGTH (8 x keys)
/// bytes 8-    one 8-byte RESERVATION KEY per registered I_T nexus
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadKeys {
    pub generation: u32,
    pub keys: Vec<u64>,
}

impl ReadKeys {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = pr_in_header(self.generation, 8 * self.keys.len());
        for k in &self.keys {
            b.extend_from_slice(&k.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<ReadKeys, PrDecodeError> {
        let (generation, body) = pr_in_body(b)?;
        let keys = body.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(ReadKeys { generation, keys })
    }
}

/// The reservation in READ RESERVATION data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationDescriptor {
    /// Holder's key; zero for all-registrants types (SPC-4 §5.9.10).
    pub key: u64,
    pub scope: u8,
    pub type_code: u8,
}

/// READ RESERVATION parameter data (SPC-4 §6.15.3, Tables 205/206).
///
/// ```text
/// bytes 0-3    PRGENERATION
/// bytes 4-7    ADDITIONAL LENGTH (0 or 16)
/// bytes 8-15   RESERVATION KEY
/// bytes 16-19  obsolete
/// byte 21      SCOPE (bits 7..4) | TYPE (bits 3..0)
/// bytes 22-23  obsolete
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReservation {
    pub generation: u32,
    pub reservation: Option<ReservationDescriptor>,
}

impl ReadReservation {
    pub fn encode(&self) -> Vec<u8> {
        match self.reservation {
            None => pr_in_header(self.generation, 0),
            Some(r) => {
                let mut b = pr_in_header(self.generation, 16);
                b.extend_from_slice(&r.key.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0, 0, (r.scope << 4) | (r.type_code & 0x0f), 0, 0]);
                b
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<ReadReservation, PrDecodeError> {
        let (generation, body) = pr_in_body(b)?;
        let reservation = match body.len() {
            0 => None,
            n if n >= 16 => Some(ReservationDescriptor {
                key: be64(body, 0),
                scope: body[13] >> 4,
                type_code: body[13] & 0x0f,
            }),
            _ => return Err(PrDecodeError::Truncated),
        };
        Ok(ReadReservation {
            generation,
            reservation,
        })
    }
}

/// REPORT CAPABILITIES parameter data (SPC-4 §6.15.4, Table 207).
///
/// ```text
/// bytes 0-1  LENGTH (8)
/// byte 2     RLR_C(7) | CRH(4) | SIP_C(3) | ATP_C(2) | PTPL_C(0)
/// byte 3     TMV(7) | ALLOW COMMANDS(6..4) | PTPL_A(0)
/// bytes 4-5  PERSISTENT RESERVATION TYPE MASK:
///            WR_EX_AR(4.7) EX_AC_RO(4.6) WR_EX_RO(4.5) EX_AC(4.3) WR_EX(4.1) EX_AC_AR(5.0)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub rlr_c: bool,
    pub crh: bool,
    pub sip_c: bool,
    pub atp_c: bool,
    pub ptpl_c: bool,
    pub tmv: bool,
    /// ALLOW COMMANDS field, 3 bits (SPC-4 Table 208).
    pub allow_commands: u8,
    pub ptpl_a: bool,
    /// One bit per supported type, indexed by type code (bit 1 = WE, ...).
    pub type_mask: u16,
}

impl Capabilities {
    /// Bit of `type_code` in [`Capabilities::type_mask`].
    pub fn type_bit(type_code: u8) -> u16 {
        1 << type_code
    }

    /// The types the mask says are supported, in code order.
    pub fn types(&self) -> Vec<PrType> {
        PrType::ALL
            .into_iter()
            .filter(|t| self.type_mask & Capabilities::type_bit(t.code()) != 0)
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[1] = 8;
        b[2] = (u8::from(self.rlr_c) << 7)
            | (u8::from(self.crh) << 4)
            | (u8::from(self.sip_c) << 3)
            | (u8::from(self.atp_c) << 2)
            | u8::from(self.ptpl_c);
        b[3] = (u8::from(self.tmv) << 7) | ((self.allow_commands & 7) << 4) | u8::from(self.ptpl_a);
        let m = |code: u8| self.type_mask & Capabilities::type_bit(code) != 0;
        b[4] = (u8::from(m(7)) << 7)
            | (u8::from(m(6)) << 6)
            | (u8::from(m(5)) << 5)
            | (u8::from(m(3)) << 3)
            | (u8::from(m(1)) << 1);
        b[5] = u8::from(m(8));
        b
    }

    pub fn decode(b: &[u8]) -> Result<Capabilities, PrDecodeError> {
        if b.len() < 6 {
            return Err(PrDecodeError::Truncated);
        }
        let mut type_mask = 0;
        for (code, byte, bit) in [
            (7, 4, 7),
            (6, 4, 6),
            (5, 4, 5),
            (3, 4, 3),
            (1, 4, 1),
            (8, 5, 0),
        ] {
            if b[byte] & (1 << bit) != 0 {
                type_mask |= Capabilities::type_bit(code);
            }
        }
        Ok(Capabilities {
            rlr_c: b[2] & 0x80 != 0,
            crh: b[2] & 0x10 != 0,
            sip_c: b[2] & 0x08 != 0,
            atp_c: b[2] & 0x04 != 0,
            ptpl_c: b[2] & 0x01 != 0,
            tmv: b[3] & 0x80 != 0,
            allow_commands: (b[3] >> 4) & 7,
            ptpl_a: b[3] & 0x01 != 0,
            type_mask,
        })
    }
}

/// One registration in READ FULL STATUS data (SPC-4 §6.15.5, Table 210).
///
/// ```text
/// bytes 0-7    RESERVATION KEY
/// byte 12      ALL_TG_PT (bit 1) | R_HOLDER (bit 0)
/// byte 13      SCOPE (bits 7..4) | TYPE (bits 3..0), meaningful with R_HOLDER
/// bytes 18-19  RELATIVE TARGET PORT IDENTIFIER
/// bytes 20-23  ADDITIONAL DESCRIPTOR LENGTH (n - 23)
/// bytes 24-n   TransportID
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullStatusDescriptor {
    pub key: u64,
    pub all_tg_pt: bool,
    pub holder: bool,
    pub scope: u8,
    pub type_code: u8,
    pub relative_target_port: u16,
    pub transport_id: TransportId,
}

/// READ FULL STATUS parameter data (SPC-4 §6.15.5, Table 209).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullStatus {
    pub generation: u32,
    pub descriptors: Vec<FullStatusDescriptor>,
}

impl FullStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for d in &self.descriptors {
            let tid = d.transport_id.encode();
            body.extend_from_slice(&d.key.to_be_bytes());
            body.extend_from_slice(&[0; 4]);
            body.push((u8::from(d.all_tg_pt) << 1) | u8::from(d.holder));
            body.push((d.scope << 4) | (d.type_code & 0x0f));
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&d.relative_target_port.to_be_bytes());
            body.extend_from_slice(&(tid.len() as u32).to_be_bytes());
            body.extend_from_slice(&tid);
        }
        let mut b = pr_in_header(self.generation, body.len());
        b.extend_from_slice(&body);
        b
    }

    pub fn decode(b: &[u8]) -> Result<FullStatus, PrDecodeError> {
        let (generation, body) = pr_in_body(b)?;
        let mut descriptors = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let d = body.get(at..at + 24).ok_or(PrDecodeError::Truncated)?;
            let tid_len = be32(d, 20) as usize;
            let tid = body
                .get(at + 24..at + 24 + tid_len)
                .ok_or(PrDecodeError::Truncated)?;
            let (transport_id, _) =
                TransportId::decode(tid, 8 + at + 24).map_err(|_| PrDecodeError::Truncated)?;
            descriptors.push(FullStatusDescriptor {
                key: be64(d, 0),
                all_tg_pt: d[12] & 0x02 != 0,
                holder: d[12] & 0x01 != 0,
                scope: d[13] >> 4,
                type_code: d[13] & 0x0f,
                relative_target_port: be16(d, 18),
                transport_id,
            });
            at += 24 + tid_len;
        }
        Ok(FullStatus {
            generation,
            descriptors,
        })
    }
}

/// A READ RESERVATION holder as `busrig disk --json` prints it: the key in
/// hex as sg_persist writes it, the scope, the type code and its
/// abbreviation (SPC-4 §6.15.3).
impl serde::Serialize for ReservationDescriptor {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("ReservationDescriptor", 4)?;
        st.serialize_field("key", &format!("0x{:x}", self.key))?;
        st.serialize_field("scope", &self.scope)?;
        st.serialize_field("type", &self.type_code)?;
        st.serialize_field(
            "type_name",
            &PrType::from_code(self.type_code).map(|t| t.abbrev()),
        )?;
        st.end()
    }
}

/// A READ FULL STATUS registration as `busrig disk --json` prints it
/// (SPC-4 §6.15.5): the key in hex, the holder and ALL_TG_PT bits, the
/// type, the relative target port and the TransportID in words.
impl serde::Serialize for FullStatusDescriptor {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("FullStatusDescriptor", 8)?;
        st.serialize_field("key", &format!("0x{:x}", self.key))?;
        st.serialize_field("all_tg_pt", &self.all_tg_pt)?;
        st.serialize_field("reservation_holder", &self.holder)?;
        st.serialize_field("scope", &self.scope)?;
        st.serialize_field("type", &self.type_code)?;
        st.serialize_field(
            "type_name",
            &PrType::from_code(self.type_code).map(|t| t.abbrev()),
        )?;
        st.serialize_field("relative_target_port", &self.relative_target_port)?;
        st.serialize_field("transport_id", &self.transport_id.to_string())?;
        st.end()
    }
}

/// READ KEYS as `busrig disk --json` prints it: the keys in hex.
impl serde::Serialize for ReadKeys {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let keys: Vec<String> = self.keys.iter().map(|k| format!("0x{k:x}")).collect();
        let mut st = ser.serialize_struct("ReadKeys", 2)?;
        st.serialize_field("generation", &self.generation)?;
        st.serialize_field("keys", &keys)?;
        st.end()
    }
}

/// READ RESERVATION as `busrig disk --json` prints it (null: none held).
impl serde::Serialize for ReadReservation {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("ReadReservation", 2)?;
        st.serialize_field("generation", &self.generation)?;
        st.serialize_field("reservation", &self.reservation)?;
        st.end()
    }
}

/// READ FULL STATUS as `busrig disk --json` prints it.
impl serde::Serialize for FullStatus {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("FullStatus", 2)?;
        st.serialize_field("generation", &self.generation)?;
        st.serialize_field("registrations", &self.descriptors)?;
        st.end()
    }
}

/// REPORT CAPABILITIES as `busrig disk --json` prints it: SPC-4 §6.15.4's
/// bits spelled out, and the supported types by variant name.
impl serde::Serialize for Capabilities {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("Capabilities", 9)?;
        st.serialize_field("replace_lost_reservation_capable", &self.rlr_c)?;
        st.serialize_field("compatible_reservation_handling", &self.crh)?;
        st.serialize_field("specify_initiator_ports_capable", &self.sip_c)?;
        st.serialize_field("all_target_ports_capable", &self.atp_c)?;
        st.serialize_field("persist_through_power_loss_capable", &self.ptpl_c)?;
        st.serialize_field("type_mask_valid", &self.tmv)?;
        st.serialize_field("allow_commands", &self.allow_commands)?;
        st.serialize_field("persist_through_power_loss_activated", &self.ptpl_a)?;
        let types: Vec<&str> = self.types().iter().map(|t| t.ident()).collect();
        st.serialize_field("types", &types)?;
        st.end()
    }
}

/// The type of a reservation by its code, or `unknown`.
fn type_name(code: u8) -> &'static str {
    PrType::from_code(code).map_or("unknown", |t| t.name())
}

/// READ KEYS as sg_persist prints it.
impl fmt::Display for ReadKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PR generation=0x{:x}, {} registered reservation keys follow:",
            self.generation,
            self.keys.len()
        )?;
        self.keys
            .iter()
            .try_for_each(|k| write!(f, "\n    0x{k:x}"))
    }
}

/// READ RESERVATION as sg_persist prints it.
impl fmt::Display for ReadReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.generation;
        match &self.reservation {
            None => write!(f, "PR generation=0x{g:x}, there is NO reservation held"),
            Some(h) => write!(
                f,
                "PR generation=0x{g:x}, Reservation follows:\n    Key=0x{:x}\n    scope: {}, type: {}",
                h.key,
                if h.scope == 0 { "LU_SCOPE" } else { "other" },
                type_name(h.type_code)
            ),
        }
    }
}

/// REPORT CAPABILITIES as sg_persist prints it.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<&str> = self.types().iter().map(|t| t.abbrev()).collect();
        write!(
            f,
            "Compatible Reservation Handling(CRH): {}\nSpecify Initiator Ports Capable(SIP_C): {}\nAll Target Ports Capable(ATP_C): {}\nPersist Through Power Loss Capable(PTPL_C): {}\nPersist Through Power Loss Active(PTPL_A): {}\nSupported types: {}",
            self.crh as u8,
            self.sip_c as u8,
            self.atp_c as u8,
            self.ptpl_c as u8,
            self.ptpl_a as u8,
            types.join(" ")
        )
    }
}

/// READ FULL STATUS as sg_persist prints it: one block per registration.
impl fmt::Display for FullStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PR generation=0x{:x}", self.generation)?;
        for e in &self.descriptors {
            write!(f, "\n    Key=0x{:x}", e.key)?;
            if e.holder {
                write!(
                    f,
                    "\n      >> Reservation holder, type: {}",
                    type_name(e.type_code)
                )?;
            }
            write!(
                f,
                "\n      relative target port: {}\n      transport id: {}",
                e.relative_target_port, e.transport_id
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISID: [u8; 6] = [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a];

    #[test]
    fn reservation_json_has_hex_key_and_type_name() {
        let r = ReservationDescriptor {
            key: 0xab,
            scope: 0,
            type_code: 1,
        };
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({ "key": "0xab", "scope": 0, "type": 1, "type_name": "WE" })
        );
        let odd = ReservationDescriptor {
            key: 0,
            scope: 0,
            type_code: 0xf,
        };
        assert_eq!(
            serde_json::to_value(odd).unwrap()["type_name"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn full_status_json_names_the_fields() {
        let d = FullStatusDescriptor {
            key: 0x1234,
            all_tg_pt: false,
            holder: true,
            scope: 0,
            type_code: 5,
            relative_target_port: 1,
            transport_id: TransportId::port("iqn.x:n1", ISID),
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "key": "0x1234",
                "all_tg_pt": false,
                "reservation_holder": true,
                "scope": 0,
                "type": 5,
                "type_name": "WERO",
                "relative_target_port": 1,
                "transport_id": d.transport_id.to_string(),
            })
        );
    }

    #[test]
    fn capabilities_json_spells_out_the_bits() {
        let c = Capabilities {
            crh: true,
            ptpl_c: true,
            allow_commands: 3,
            type_mask: Capabilities::type_bit(1) | Capabilities::type_bit(5),
            ..Capabilities::default()
        };
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::json!({
                "replace_lost_reservation_capable": false,
                "compatible_reservation_handling": true,
                "specify_initiator_ports_capable": false,
                "all_target_ports_capable": false,
                "persist_through_power_loss_capable": true,
                "type_mask_valid": false,
                "allow_commands": 3,
                "persist_through_power_loss_activated": false,
                "types": ["WriteExclusive", "WriteExclusiveRegistrantsOnly"],
            })
        );
    }

    #[test]
    fn pr_type_parsing_accepts_numbers_and_names() {
        assert_eq!(
            "5".parse::<PrType>(),
            Ok(PrType::WriteExclusiveRegistrantsOnly)
        );
        assert_eq!(
            "earo".parse::<PrType>(),
            Ok(PrType::ExclusiveAccessRegistrantsOnly)
        );
        // 2h and 4h are obsolete (SPC-4 Table 212).
        assert!("2".parse::<PrType>().is_err());
        assert!("4".parse::<PrType>().is_err());
        assert!("WX".parse::<PrType>().is_err());
    }

    #[test]
    fn pr_type_names() {
        let t = PrType::WriteExclusiveAllRegistrants;
        assert_eq!(
            (t.code(), t.abbrev(), t.to_string()),
            (7, "WEAR", "WEAR".into())
        );
        assert_eq!(t.name(), "Write Exclusive, all registrants");
        assert_eq!(t.ident(), "WriteExclusiveAllRegistrants");
        assert_eq!(PrType::from_code(0), None);
    }

    #[test]
    fn transport_id_text_forms() {
        assert_eq!(
            TransportId::port("iqn.x:n2", [0x80, 0, 0, 0, 0, 2]).to_string(),
            "iqn.x:n2,i,0x800000000002"
        );
        assert_eq!(TransportId::device("iqn.x:n2").to_string(), "iqn.x:n2");
    }

    #[test]
    fn capabilities_types_in_code_order() {
        let c = Capabilities::decode(&[0, 8, 0x0d, 0x81, 0xea, 0x01, 0, 0]).unwrap();
        assert_eq!(c.types(), PrType::ALL.to_vec());
        let we_only = Capabilities {
            type_mask: Capabilities::type_bit(1),
            ..Default::default()
        };
        assert_eq!(we_only.types(), vec![PrType::WriteExclusive]);
        assert!(Capabilities::default().types().is_empty());
    }

    #[test]
    fn basic_params_are_24_bytes_with_aptpl_in_byte_20() {
        // SPC-4 §6.16.3: without SPEC_I_PT the basic list is 24 bytes.
        let b = PrOutParams {
            service_action_key: 0xabc,
            aptpl: true,
            ..Default::default()
        }
        .encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[8..16], &0xabcu64.to_be_bytes());
        assert_eq!(b[20], 0x01);
    }

    #[test]
    fn pr_in_cdb_bytes() {
        let c = PrInCdb {
            action: PrInAction::ReadFullStatus,
            allocation_length: 0x1234,
        };
        assert_eq!(c.encode(), [0x5e, 0x03, 0, 0, 0, 0, 0, 0x12, 0x34, 0]);
        assert_eq!(PrInCdb::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn pr_in_cdb_invalid_service_action_points_at_byte_1() {
        let e = PrInCdb::decode(&[0x5e, 0x04, 0, 0, 0, 0, 0, 0, 8, 0]).unwrap_err();
        assert_eq!(
            e,
            PrDecodeError::InvalidCdbField {
                byte: 1,
                bit: Some(4)
            }
        );
        let s = e.sense();
        assert_eq!((s.asc, s.ascq), (0x24, 0x00));
    }

    #[test]
    fn pr_out_cdb_bytes() {
        let c = PrOutCdb {
            action: PrOutAction::Preempt,
            scope: 0,
            type_code: 5,
            parameter_list_length: 24,
        };
        assert_eq!(c.encode(), [0x5f, 0x04, 0x05, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(PrOutCdb::decode(&c.encode()), Ok(c));
        assert_eq!(
            PrOutCdb::decode(&[0x5f, 0x08, 0, 0, 0, 0, 0, 0, 24, 0]),
            Err(PrDecodeError::InvalidCdbField {
                byte: 1,
                bit: Some(4)
            })
        );
    }

    #[test]
    fn transport_id_port_format_bytes() {
        // SPC-4 §7.6.4.6: "iqn.a,i,0x80123456789a" + NUL = 23 bytes, padded to 24.
        let t = TransportId::port("iqn.a", ISID);
        let b = t.encode();
        let mut want = vec![0x45, 0x00, 0x00, 24];
        want.extend_from_slice(b"iqn.a,i,0x80123456789a");
        want.resize(28, 0);
        assert_eq!(b, want);
        assert_eq!(TransportId::decode(&b, 0), Ok((t, 28)));
    }

    #[test]
    fn transport_id_device_format_minimum_length_20() {
        let t = TransportId::device("iqn.b");
        let b = t.encode();
        let mut want = vec![0x05, 0x00, 0x00, 20];
        want.extend_from_slice(b"iqn.b");
        want.resize(24, 0);
        assert_eq!(b, want);
        assert_eq!(TransportId::decode(&b, 0), Ok((t, 24)));
    }

    #[test]
    fn transport_id_length_is_multiple_of_four() {
        for n in 1..64 {
            let name = format!("iqn.{}", "x".repeat(n));
            let b = TransportId::port(&name, ISID).encode();
            assert_eq!(b.len() % 4, 0);
            assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, b.len() - 4);
            assert!(b[4..].contains(&0), "null terminated");
        }
    }

    #[test]
    fn transport_id_rejects() {
        let mut fc = TransportId::device("iqn.b").encode();
        fc[0] = 0x00; // Fibre Channel
        assert_eq!(
            TransportId::decode(&fc, 28),
            Err(PrDecodeError::InvalidParameterField {
                byte: 28,
                bit: Some(3)
            })
        );
        let mut bad_isid = TransportId::port("iqn.a", ISID).encode();
        bad_isid[20] = b'z';
        assert!(matches!(
            TransportId::decode(&bad_isid, 0),
            Err(PrDecodeError::InvalidParameterField { .. })
        ));
        let long = TransportId::device("iqn.b").encode();
        assert!(
            TransportId::decode(&long[..20], 0).is_err(),
            "overruns the data"
        );
    }

    #[test]
    fn basic_params_bytes() {
        let p = PrOutParams {
            reservation_key: 0x0102030405060708,
            service_action_key: 0x1112131415161718,
            all_tg_pt: true,
            aptpl: true,
            ..Default::default()
        };
        let b = p.encode();
        let mut want = vec![
            1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        ];
        want.extend_from_slice(&[0, 0, 0, 0, 0x05, 0, 0, 0]);
        assert_eq!(b, want);
        assert_eq!(PrOutParams::decode(&b, true), Ok(p));
    }

    #[test]
    fn basic_params_length_rules() {
        let b = PrOutParams {
            reservation_key: 1,
            ..Default::default()
        }
        .encode();
        // SPC-4 §6.16.3: without SPEC_I_PT the list is exactly 24 bytes.
        assert_eq!(
            PrOutParams::decode(&b[..23], true),
            Err(PrDecodeError::ParameterListLength)
        );
        let mut longer = b.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(
            PrOutParams::decode(&longer, true),
            Err(PrDecodeError::ParameterListLength)
        );
    }

    #[test]
    fn spec_i_pt_params_bytes() {
        let p = PrOutParams {
            service_action_key: 0xabc,
            spec_i_pt: true,
            transport_ids: vec![
                TransportId::port("iqn.a", ISID),
                TransportId::device("iqn.b"),
            ],
            ..Default::default()
        };
        let b = p.encode();
        assert_eq!(b.len(), 28 + 28 + 24);
        assert_eq!(b[20], 0x08);
        assert_eq!(&b[24..28], &[0, 0, 0, 52]);
        assert_eq!(b[28], 0x45);
        assert_eq!(b[56], 0x05);
        assert_eq!(PrOutParams::decode(&b, true), Ok(p.clone()));
        // SPEC_I_PT on a service action other than REGISTER.
        assert_eq!(
            PrOutParams::decode(&b, false),
            Err(PrDecodeError::InvalidParameterField {
                byte: 20,
                bit: Some(3)
            })
        );
        // TRANSPORTID PARAMETER DATA LENGTH disagreeing with the list length.
        assert_eq!(
            PrOutParams::decode(&b[..b.len() - 4], true),
            Err(PrDecodeError::ParameterListLength)
        );
        assert_eq!(
            PrOutParams::decode(&b[..26], true),
            Err(PrDecodeError::ParameterListLength)
        );
    }

    #[test]
    fn register_and_move_params_bytes() {
        let p = RegisterAndMoveParams {
            reservation_key: 7,
            service_action_key: 9,
            unreg: true,
            aptpl: false,
            relative_target_port: 1,
            transport_id: TransportId::port("iqn.a", ISID),
        };
        let b = p.encode();
        assert_eq!(&b[0..8], &7u64.to_be_bytes());
        assert_eq!(&b[8..16], &9u64.to_be_bytes());
        assert_eq!(&b[16..24], &[0, 0x02, 0, 1, 0, 0, 0, 28]);
        assert_eq!(b.len(), 52);
        assert_eq!(RegisterAndMoveParams::decode(&b), Ok(p));
        assert_eq!(
            RegisterAndMoveParams::decode(&b[..40]),
            Err(PrDecodeError::ParameterListLength)
        );
    }

    #[test]
    fn read_keys_bytes() {
        let r = ReadKeys {
            generation: 3,
            keys: vec![0xa, 0xb],
        };
        let b = r.encode();
        let mut want = vec![0, 0, 0, 3, 0, 0, 0, 16];
        want.extend_from_slice(&0xau64.to_be_bytes());
        want.extend_from_slice(&0xbu64.to_be_bytes());
        assert_eq!(b, want);
        assert_eq!(ReadKeys::decode(&b), Ok(r));
        assert_eq!(ReadKeys::decode(&b[..20]), Err(PrDecodeError::Truncated));
    }

    #[test]
    fn read_reservation_bytes() {
        let none = ReadReservation {
            generation: 1,
            reservation: None,
        };
        assert_eq!(none.encode(), vec![0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(ReadReservation::decode(&none.encode()), Ok(none));
        let some = ReadReservation {
            generation: 2,
            reservation: Some(ReservationDescriptor {
                key: 0x55,
                scope: 0,
                type_code: 5,
            }),
        };
        let b = some.encode();
        let mut want = vec![0, 0, 0, 2, 0, 0, 0, 16];
        want.extend_from_slice(&0x55u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0x05, 0, 0]);
        assert_eq!(b, want);
        assert_eq!(ReadReservation::decode(&b), Ok(some));
    }

    #[test]
    fn report_capabilities_bytes() {
        let c = Capabilities {
            crh: true,
            sip_c: true,
            atp_c: true,
            ptpl_c: true,
            tmv: true,
            allow_commands: 0b011,
            ptpl_a: true,
            type_mask: [1, 3, 5, 6, 7, 8]
                .iter()
                .map(|&t| Capabilities::type_bit(t))
                .sum(),
            ..Default::default()
        };
        assert_eq!(c.encode(), vec![0x00, 0x08, 0x1d, 0xb1, 0xea, 0x01, 0, 0]);
        assert_eq!(Capabilities::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn read_full_status_bytes() {
        let f = FullStatus {
            generation: 9,
            descriptors: vec![
                FullStatusDescriptor {
                    key: 0x11,
                    all_tg_pt: false,
                    holder: true,
                    scope: 0,
                    type_code: 1,
                    relative_target_port: 1,
                    transport_id: TransportId::port("iqn.a", ISID),
                },
                FullStatusDescriptor {
                    key: 0x22,
                    all_tg_pt: true,
                    holder: false,
                    scope: 0,
                    type_code: 0,
                    relative_target_port: 0,
                    transport_id: TransportId::port("iqn.b", ISID),
                },
            ],
        };
        let b = f.encode();
        assert_eq!(&b[0..8], &[0, 0, 0, 9, 0, 0, 0, 104]);
        let d0 = &b[8..60];
        assert_eq!(&d0[0..8], &0x11u64.to_be_bytes());
        assert_eq!(
            &d0[8..24],
            &[0, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 1, 0, 0, 0, 28]
        );
        assert_eq!(d0[24], 0x45);
        assert_eq!(&d0[28..50], b"iqn.a,i,0x80123456789a");
        assert_eq!(b[8 + 52 + 12], 0x02, "ALL_TG_PT, not holder");
        assert_eq!(FullStatus::decode(&b), Ok(f));
    }

    #[test]
    fn transport_ids_parse_as_sg_persist_writes_them() {
        let t: TransportId = "iqn.x:n2,i,0x800000000002".parse().unwrap();
        assert_eq!(t, TransportId::port("iqn.x:n2", [0x80, 0, 0, 0, 0, 2]));
        assert_eq!(t.to_string().parse::<TransportId>(), Ok(t));
        let sep: TransportId = "iqn.x:n2,i,80:00:00:00:00:02".parse().unwrap();
        assert_eq!(sep.isid, Some([0x80, 0, 0, 0, 0, 2]));
        assert_eq!("iqn.x:n3".parse(), Ok(TransportId::device("iqn.x:n3")));
        assert_eq!("".parse::<TransportId>(), Err(TransportIdParseError::Empty));
        assert!(matches!(
            "n,i,0x12".parse::<TransportId>(),
            Err(TransportIdParseError::Isid(_))
        ));
    }

    #[test]
    fn keys_are_hex_with_or_without_0x() {
        assert_eq!(parse_key("abc"), Ok(0xabc));
        assert_eq!(parse_key("0x1234"), Ok(0x1234));
        assert_eq!(parse_key("0XFF"), Ok(0xff));
        assert_eq!(
            parse_key("xyz").unwrap_err().to_string(),
            "\"xyz\" is not a hex reservation key"
        );
    }

    #[test]
    fn pr_in_data_reads_as_sg_persist_prints_it() {
        let k = ReadKeys {
            generation: 5,
            keys: vec![0x1, 0xab],
        };
        assert_eq!(
            k.to_string(),
            "PR generation=0x5, 2 registered reservation keys follow:\n    0x1\n    0xab"
        );
        let none = ReadReservation {
            generation: 2,
            reservation: None,
        };
        assert_eq!(
            none.to_string(),
            "PR generation=0x2, there is NO reservation held"
        );
        let held = ReadReservation {
            generation: 2,
            reservation: Some(ReservationDescriptor {
                key: 0xab,
                scope: 0,
                type_code: 1,
            }),
        };
        assert_eq!(
            held.to_string(),
            format!("PR generation=0x2, Reservation follows:\n    Key=0xab\n    scope: LU_SCOPE, type: {}", PrType::WriteExclusive.name())
        );
        let c = Capabilities {
            crh: true,
            type_mask: Capabilities::type_bit(1) | Capabilities::type_bit(3),
            ..Capabilities::default()
        };
        let text = c.to_string();
        assert!(
            text.starts_with("Compatible Reservation Handling(CRH): 1\n"),
            "{text}"
        );
        assert!(text.ends_with("\nSupported types: WE EA"), "{text}");
        let s = FullStatus {
            generation: 9,
            descriptors: vec![FullStatusDescriptor {
                key: 0x1,
                all_tg_pt: false,
                holder: true,
                scope: 0,
                type_code: 9,
                relative_target_port: 1,
                transport_id: TransportId::port("iqn.x:n1", ISID),
            }],
        };
        assert_eq!(
            s.to_string(),
            "PR generation=0x9\n    Key=0x1\n      >> Reservation holder, type: unknown\n      relative target port: 1\n      transport id: iqn.x:n1,i,0x80123456789a"
        );
    }

    #[test]
    fn pr_in_json_has_the_keys_in_hex() {
        let k = ReadKeys {
            generation: 5,
            keys: vec![0xab],
        };
        let j = serde_json::to_value(&k).unwrap();
        assert_eq!(j, serde_json::json!({ "generation": 5, "keys": ["0xab"] }));
        let r = ReadReservation {
            generation: 2,
            reservation: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({ "generation": 2, "reservation": null })
        );
        let s = FullStatus {
            generation: 1,
            descriptors: Vec::new(),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({ "generation": 1, "registrations": [] })
        );
    }
}
