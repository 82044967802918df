//! Persistent reservations from the initiator's side (SPC-4 §5.9, §6.13,
//! §6.14): service actions and types, PR OUT parameter lists to send and
//! PR IN parameter data to decode.
//!
//! ```text
//! PR OUT basic parameter list (SPC-4 §6.14.3), 24 bytes:
//!   0-7   RESERVATION KEY
//!   8-15  SERVICE ACTION RESERVATION KEY
//!   20    SPEC_I_PT(3) | ALL_TG_PT(2) | APTPL(0)
//! PR OUT REGISTER AND MOVE parameter list (SPC-4 §6.14.4):
//!   0-7   RESERVATION KEY          8-15 SERVICE ACTION RESERVATION KEY
//!   17    UNREG(1) | APTPL(0)      18-19 RELATIVE TARGET PORT IDENTIFIER
//!   20-23 TRANSPORTID LENGTH       24..  TransportID
//! iSCSI TransportID (SPC-4 §7.6.4.6):
//!   0     FORMAT CODE(7..6) | PROTOCOL IDENTIFIER 5h
//!   2-3   ADDITIONAL LENGTH (multiple of 4)
//!   4..   "iqn...\0" (format 00b) or "iqn...,i,0x<ISID>\0" (format 01b), zero padded
//! PR IN READ KEYS / READ RESERVATION / READ FULL STATUS:
//!   0-3 PRGENERATION | 4-7 ADDITIONAL LENGTH | 8.. keys / reservation / descriptors
//! ```

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;

use busrig_proto::scsi::pr::PrOutAction;

use super::inquiry::{short, DataError};
use crate::config::Isid;

/// Persistent reservation types (SPC-4 §6.13.3.4, Table 164).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// An iSCSI TransportID (SPC-4 §7.6.4.6): an initiator name, and the ISID
/// when it names one initiator port (format 01b).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransportId {
    pub name: String,
    pub isid: Option<Isid>,
}

/// SPC-4 §7.6.4.1: PROTOCOL IDENTIFIER for iSCSI.
const PROTOCOL_ISCSI: u8 = 0x05;

impl TransportId {
    pub fn encode(&self) -> Vec<u8> {
        let (format, mut s) = match self.isid {
            None => (0u8, self.name.clone()),
            Some(isid) => (1u8, format!("{},i,0x{}", self.name, isid)),
        };
        s.push('\0');
        let mut body = s.into_bytes();
        // ADDITIONAL LENGTH is a multiple of four and at least 20 (SPC-4 §7.6.4.6).
        while body.len() % 4 != 0 || body.len() < 20 {
            body.push(0);
        }
        let mut b = vec![(format << 6) | PROTOCOL_ISCSI, 0];
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(&body);
        b
    }

    /// Decodes one TransportID and returns it with its encoded length.
    pub fn decode(b: &[u8]) -> Result<(TransportId, usize), DataError> {
        if b.len() < 4 {
            return Err(short("TransportID", 4, b.len()));
        }
        let err = |d: String| DataError {
            what: "TransportID",
            detail: d,
        };
        if b[0] & 0x0f != PROTOCOL_ISCSI {
            return Err(err(format!(
                "protocol identifier {:#x} is not iSCSI",
                b[0] & 0x0f
            )));
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let body = b
            .get(4..4 + len)
            .ok_or_else(|| short("TransportID", 4 + len, b.len()))?;
        let text = body.split(|c| *c == 0).next().unwrap_or_default();
        let text = String::from_utf8_lossy(text).into_owned();
        let tid = match text.split_once(",i,") {
            Some((name, isid)) => {
                let isid = isid.parse::<Isid>().map_err(|e| err(e.to_string()))?;
                TransportId {
                    name: name.to_string(),
                    isid: Some(isid),
                }
            }
            None => TransportId {
                name: text,
                isid: None,
            },
        };
        Ok((tid, 4 + len))
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.isid {
            Some(i) => write!(f, "{},i,0x{}", self.name, i),
            None => f.write_str(&self.name),
        }
    }
}

/// What a PR OUT command carries besides its service action.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrOutParams {
    /// RESERVATION KEY: the key this I_T nexus is registered with (0 if none).
    pub key: u64,
    /// SERVICE ACTION RESERVATION KEY: the new key (REGISTER*), the key to
    /// preempt (PREEMPT*), or the key to give the moved registration.
    pub sa_key: u64,
    /// TYPE for RESERVE, RELEASE, PREEMPT*, REGISTER AND MOVE.
    pub pr_type: Option<PrType>,
    /// Activate Persist Through Power Loss.
    pub aptpl: bool,
    /// ALL_TG_PT: register on every target port.
    pub all_tg_pt: bool,
    /// REGISTER AND MOVE: the I_T nexus that receives the reservation.
    pub move_to: Option<TransportId>,
    /// REGISTER AND MOVE: RELATIVE TARGET PORT IDENTIFIER of that nexus.
    pub relative_target_port: u16,
    /// REGISTER AND MOVE: UNREG, unregister the sender afterwards.
    pub unreg: bool,
}

/// Builds the parameter list for `action`.
pub fn encode_out(action: PrOutAction, p: &PrOutParams) -> Bytes {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&p.key.to_be_bytes());
    b.extend_from_slice(&p.sa_key.to_be_bytes());
    if action == PrOutAction::RegisterAndMove {
        let tid = p
            .move_to
            .as_ref()
            .map(TransportId::encode)
            .unwrap_or_default();
        b.push(0);
        b.push(((p.unreg as u8) << 1) | p.aptpl as u8);
        b.extend_from_slice(&p.relative_target_port.to_be_bytes());
        b.extend_from_slice(&(tid.len() as u32).to_be_bytes());
        b.extend_from_slice(&tid);
    } else {
        b.extend_from_slice(&[0; 4]);
        b.push(((p.all_tg_pt as u8) << 2) | p.aptpl as u8);
        b.extend_from_slice(&[0; 3]);
    }
    Bytes::from(b)
}

/// READ KEYS data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keys {
    pub generation: u32,
    pub keys: Vec<u64>,
}

/// The reservation READ RESERVATION reports, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub generation: u32,
    pub holder: Option<ReservationHolder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationHolder {
    pub key: u64,
    pub scope: u8,
    /// The TYPE code; `pr_type` is its decoded form when it is a known type.
    pub type_code: u8,
    pub pr_type: Option<PrType>,
}

/// REPORT CAPABILITIES data (SPC-4 §6.13.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub replace_lost_reservation_capable: bool,
    pub compatible_reservation_handling: bool,
    pub specify_initiator_ports_capable: bool,
    pub all_target_ports_capable: bool,
    pub persist_through_power_loss_capable: bool,
    pub type_mask_valid: bool,
    pub allow_commands: u8,
    pub persist_through_power_loss_activated: bool,
    pub types: Vec<PrType>,
}

/// One registration of READ FULL STATUS (SPC-4 §6.13.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullStatusEntry {
    pub key: u64,
    pub all_tg_pt: bool,
    pub reservation_holder: bool,
    pub scope: u8,
    pub type_code: u8,
    pub pr_type: Option<PrType>,
    pub relative_target_port: u16,
    pub transport_id: Option<TransportId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullStatus {
    pub generation: u32,
    pub registrations: Vec<FullStatusEntry>,
}

fn header<'a>(what: &'static str, b: &'a [u8]) -> Result<(u32, &'a [u8]), DataError> {
    if b.len() < 8 {
        return Err(short(what, 8, b.len()));
    }
    let gen = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
    // A short allocation length truncates the list; decode what arrived.
    Ok((gen, &b[8..(8 + len).min(b.len())]))
}

impl Keys {
    pub fn decode(b: &[u8]) -> Result<Keys, DataError> {
        let (generation, body) = header("READ KEYS data", b)?;
        let keys = body
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Keys { generation, keys })
    }
}

impl Reservation {
    pub fn decode(b: &[u8]) -> Result<Reservation, DataError> {
        let (generation, body) = header("READ RESERVATION data", b)?;
        let holder = if body.len() >= 16 {
            let type_code = body[13] & 0x0f;
            Some(ReservationHolder {
                key: u64::from_be_bytes(body[0..8].try_into().expect("8 bytes")),
                scope: body[13] >> 4,
                type_code,
                pr_type: PrType::from_code(type_code),
            })
        } else {
            None
        };
        Ok(Reservation { generation, holder })
    }
}

impl Capabilities {
    pub fn decode(b: &[u8]) -> Result<Capabilities, DataError> {
        if b.len() < 6 {
            return Err(short("REPORT CAPABILITIES data", 6, b.len()));
        }
        let mask = u16::from_be_bytes([b[4], b[5]]);
        // PERSISTENT RESERVATION TYPE MASK bit positions (SPC-4 Table 169).
        let bits = [
            (0x8000u16, PrType::WriteExclusiveAllRegistrants),
            (0x4000, PrType::ExclusiveAccessRegistrantsOnly),
            (0x2000, PrType::WriteExclusiveRegistrantsOnly),
            (0x0800, PrType::ExclusiveAccess),
            (0x0200, PrType::WriteExclusive),
            (0x0001, PrType::ExclusiveAccessAllRegistrants),
        ];
        let mut types: Vec<PrType> = bits
            .iter()
            .filter(|(m, _)| mask & m != 0)
            .map(|(_, t)| *t)
            .collect();
        types.sort_by_key(|t| t.code());
        Ok(Capabilities {
            replace_lost_reservation_capable: b[2] & 0x80 != 0,
            compatible_reservation_handling: b[2] & 0x10 != 0,
            specify_initiator_ports_capable: b[2] & 0x08 != 0,
            all_target_ports_capable: b[2] & 0x04 != 0,
            persist_through_power_loss_capable: b[2] & 0x01 != 0,
            type_mask_valid: b[3] & 0x80 != 0,
            allow_commands: (b[3] >> 4) & 0x07,
            persist_through_power_loss_activated: b[3] & 0x01 != 0,
            types,
        })
    }
}

impl FullStatus {
    pub fn decode(b: &[u8]) -> Result<FullStatus, DataError> {
        let (generation, body) = header("READ FULL STATUS data", b)?;
        let mut registrations = Vec::new();
        let mut i = 0;
        while i + 24 <= body.len() {
            let d = &body[i..];
            let extra = u32::from_be_bytes([d[20], d[21], d[22], d[23]]) as usize;
            let tid_bytes = d.get(24..24 + extra).unwrap_or(&d[24..]);
            let type_code = d[13] & 0x0f;
            registrations.push(FullStatusEntry {
                key: u64::from_be_bytes(d[0..8].try_into().expect("8 bytes")),
                all_tg_pt: d[12] & 0x02 != 0,
                reservation_holder: d[12] & 0x01 != 0,
                scope: d[13] >> 4,
                type_code,
                pr_type: PrType::from_code(type_code),
                relative_target_port: u16::from_be_bytes([d[18], d[19]]),
                transport_id: TransportId::decode(tid_bytes).ok().map(|(t, _)| t),
            });
            i += 24 + extra;
        }
        Ok(FullStatus {
            generation,
            registrations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_parameter_list_layout() {
        let p = PrOutParams {
            key: 0,
            sa_key: 0xabc,
            aptpl: true,
            ..Default::default()
        };
        let b = encode_out(PrOutAction::Register, &p);
        assert_eq!(b.len(), 24, "SPC-4 §6.14.3: the basic list is 24 bytes");
        assert_eq!(&b[8..16], &0xabcu64.to_be_bytes());
        assert_eq!(b[20], 0x01, "APTPL is bit 0 of byte 20");
    }

    #[test]
    fn register_and_move_carries_transport_id() {
        let tid = TransportId {
            name: "iqn.x:n2".into(),
            isid: Some(Isid([0x80, 0, 0, 0, 0, 2])),
        };
        let p = PrOutParams {
            key: 1,
            sa_key: 2,
            move_to: Some(tid.clone()),
            relative_target_port: 1,
            unreg: true,
            ..Default::default()
        };
        let b = encode_out(PrOutAction::RegisterAndMove, &p);
        assert_eq!(b[17], 0x02, "UNREG is bit 1 of byte 17");
        assert_eq!(&b[18..20], &[0, 1]);
        let len = u32::from_be_bytes(b[20..24].try_into().unwrap()) as usize;
        assert_eq!(b.len(), 24 + len);
        assert_eq!(b[24], 0x45, "format 01b, protocol iSCSI");
        let (back, used) = TransportId::decode(&b[24..]).unwrap();
        assert_eq!(back, tid);
        assert_eq!(used, len);
        assert_eq!((used - 4) % 4, 0);
    }

    #[test]
    fn transport_id_without_isid_is_padded_to_twenty() {
        let t = TransportId {
            name: "iqn.a".into(),
            isid: None,
        };
        let b = t.encode();
        assert_eq!(b[0], 0x05);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]), 20);
        assert_eq!(TransportId::decode(&b).unwrap().0, t);
    }

    #[test]
    fn read_keys_and_reservation() {
        let mut b = vec![0, 0, 0, 7, 0, 0, 0, 16];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(
            Keys::decode(&b).unwrap(),
            Keys {
                generation: 7,
                keys: vec![1, 2]
            }
        );

        let mut r = vec![0, 0, 0, 9, 0, 0, 0, 16];
        r.extend_from_slice(&0x1234u64.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 0x05, 0, 0]);
        let res = Reservation::decode(&r).unwrap();
        let h = res.holder.unwrap();
        assert_eq!(
            (h.key, h.pr_type),
            (0x1234, Some(PrType::WriteExclusiveRegistrantsOnly))
        );
        assert_eq!(
            Reservation::decode(&[0, 0, 0, 3, 0, 0, 0, 0])
                .unwrap()
                .holder,
            None
        );
    }

    #[test]
    fn capabilities_type_mask() {
        let b = [0, 8, 0x0d, 0x81, 0xea, 0x01, 0, 0];
        let c = Capabilities::decode(&b).unwrap();
        assert!(
            c.persist_through_power_loss_capable
                && c.all_target_ports_capable
                && c.specify_initiator_ports_capable
        );
        assert!(c.type_mask_valid && c.persist_through_power_loss_activated);
        assert_eq!(c.types, PrType::ALL.to_vec());
    }

    #[test]
    fn full_status_descriptors() {
        let tid = TransportId {
            name: "iqn.x:n1".into(),
            isid: Some(Isid([0x80, 0, 0, 0, 0, 1])),
        }
        .encode();
        let mut d = Vec::new();
        d.extend_from_slice(&5u64.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x05, 0, 0, 0, 0, 0, 1]);
        d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
        d.extend_from_slice(&tid);
        let mut b = vec![0, 0, 0, 4];
        b.extend_from_slice(&(d.len() as u32).to_be_bytes());
        b.extend_from_slice(&d);
        let s = FullStatus::decode(&b).unwrap();
        assert_eq!(s.generation, 4);
        let e = &s.registrations[0];
        assert!(e.reservation_holder);
        assert_eq!(e.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
        assert_eq!(e.relative_target_port, 1);
        assert_eq!(e.transport_id.as_ref().unwrap().name, "iqn.x:n1");
    }

    #[test]
    fn pr_type_parsing_accepts_numbers_and_names() {
        assert_eq!(
            "5".parse::<PrType>().unwrap(),
            PrType::WriteExclusiveRegistrantsOnly
        );
        assert_eq!(
            "earo".parse::<PrType>().unwrap(),
            PrType::ExclusiveAccessRegistrantsOnly
        );
        assert!("2".parse::<PrType>().is_err());
    }
}
