//! Login Request (RFC 7143 §11.12), opcode 0x03. Always immediate: the I
//! bit is set on encode and not recorded on decode.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|1| 0x03      |T|C|.|.|CSG|NSG| Version-max   | Version-min   |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| ISID                                                          |
//!    +                               +---------------+---------------+
//!  12|                               | TSIH                          |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| CID                           | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!  24| CmdSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN or Reserved                                         |
//!    +---------------+---------------+---------------+---------------+
//!  32/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: login keys in text format                        /
//! ```

use super::bhs::{
    bit, bytes_at, flag, set_bytes, set_u16, set_u32, set_u8, u16_at, u32_at, u8_at, IMMEDIATE,
};
use super::{opcode, LoginRequest, BHS_LEN};

/// Byte 1: Transit (RFC 7143 §11.12.1).
pub(crate) const TRANSIT: u8 = 0x80;
/// Byte 1: Continue (RFC 7143 §11.12.2).
pub(crate) const CONTINUE: u8 = 0x40;
/// Byte 1: mask of a two-bit stage field.
pub(crate) const STAGE_MASK: u8 = 0x03;
/// Byte 1: CSG sits in bits 3-2, NSG in bits 1-0 (RFC 7143 §11.12.3).
pub(crate) const CSG_SHIFT: u8 = 2;

/// Login stages (RFC 7143 §11.12.3); 2 is reserved.
pub mod stage {
    pub const SECURITY_NEGOTIATION: u8 = 0;
    pub const LOGIN_OPERATIONAL_NEGOTIATION: u8 = 1;
    pub const FULL_FEATURE_PHASE: u8 = 3;
}

/// Byte 1 of a Login Request or Response.
pub(crate) fn stage_byte(transit: bool, continue_: bool, csg: u8, nsg: u8) -> u8 {
    bit(transit, TRANSIT)
        | bit(continue_, CONTINUE)
        | ((csg & STAGE_MASK) << CSG_SHIFT)
        | (nsg & STAGE_MASK)
}

impl LoginRequest {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        let flags = u8_at(b, 1);
        LoginRequest {
            transit: flag(b, 1, TRANSIT),
            continue_: flag(b, 1, CONTINUE),
            csg: (flags >> CSG_SHIFT) & STAGE_MASK,
            nsg: flags & STAGE_MASK,
            version_max: u8_at(b, 2),
            version_min: u8_at(b, 3),
            isid: bytes_at(b, 8),
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        // A Login Request is always immediate (RFC 7143 §11.12).
        set_u8(b, 0, opcode::LOGIN_REQUEST | IMMEDIATE);
        set_u8(
            b,
            1,
            stage_byte(self.transit, self.continue_, self.csg, self.nsg),
        );
        set_u8(b, 2, self.version_max);
        set_u8(b, 3, self.version_min);
        set_bytes(b, 8, self.isid);
        set_u16(b, 14, self.tsih);
        set_u32(b, 16, self.itt);
        set_u16(b, 20, self.cid);
        set_u32(b, 24, self.cmd_sn);
        set_u32(b, 28, self.exp_stat_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (LoginRequest, [u8; BHS_LEN]) {
        // Operational stage, asking to go to full feature phase.
        let req = LoginRequest {
            transit: true,
            continue_: false,
            csg: stage::LOGIN_OPERATIONAL_NEGOTIATION,
            nsg: stage::FULL_FEATURE_PHASE,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            tsih: 0,
            itt: 0x0000_0001,
            cid: 0x0007,
            cmd_sn: 0x0000_0010,
            exp_stat_sn: 0x0000_0002,
        };
        let wire = hex48(
            "43 87 00 00 00 00 01 00  80 12 34 56 78 9a 00 00
             00 00 00 01 00 07 00 00  00 00 00 10 00 00 00 02
             00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (req, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (req, wire) = sample();
        assert_eq!(Header::LoginRequest(req).encode_bhs(0, 256), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (req, mut wire) = sample();
        wire[1] |= 0x30;
        wire[22] = 0xff;
        wire[32] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::LoginRequest(req))
        );
    }

    #[test]
    fn continue_and_security_stage_bits() {
        let req = LoginRequest {
            continue_: true,
            csg: stage::SECURITY_NEGOTIATION,
            nsg: stage::LOGIN_OPERATIONAL_NEGOTIATION,
            tsih: 0x1234,
            ..LoginRequest::default()
        };
        let b = Header::LoginRequest(req).encode_bhs(0, 0);
        assert_eq!(b[0], 0x43);
        assert_eq!(b[1], 0x41);
        assert_eq!(&b[14..16], &[0x12, 0x34]);
    }
}
