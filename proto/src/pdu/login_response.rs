//! Login Response (RFC 7143 §11.13), opcode 0x23.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x23      |T|C|.|.|CSG|NSG| Version-max   |Version-active |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| ISID                                                          |
//!    +                               +---------------+---------------+
//!  12|                               | TSIH                          |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  24| StatSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| Status-Class  | Status-Detail | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!  40/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: login keys in text format                        /
//! ```

use super::bhs::{bytes_at, flag, set_bytes, set_u16, set_u32, set_u8, u16_at, u32_at, u8_at};
use super::login_request::{stage_byte, CONTINUE, CSG_SHIFT, STAGE_MASK, TRANSIT};
use super::{opcode, LoginResponse, BHS_LEN};

impl LoginResponse {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        let flags = u8_at(b, 1);
        LoginResponse {
            transit: flag(b, 1, TRANSIT),
            continue_: flag(b, 1, CONTINUE),
            csg: (flags >> CSG_SHIFT) & STAGE_MASK,
            nsg: flags & STAGE_MASK,
            version_max: u8_at(b, 2),
            version_active: u8_at(b, 3),
            isid: bytes_at(b, 8),
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            status_class: u8_at(b, 36),
            status_detail: u8_at(b, 37),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::LOGIN_RESPONSE);
        set_u8(
            b,
            1,
            stage_byte(self.transit, self.continue_, self.csg, self.nsg),
        );
        set_u8(b, 2, self.version_max);
        set_u8(b, 3, self.version_active);
        set_bytes(b, 8, self.isid);
        set_u16(b, 14, self.tsih);
        set_u32(b, 16, self.itt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u8(b, 36, self.status_class);
        set_u8(b, 37, self.status_detail);
    }

    /// Status-Class and Status-Detail as one pair, comparable with the
    /// constants in [`super::login_status`].
    pub fn status(&self) -> (u8, u8) {
        (self.status_class, self.status_detail)
    }
}

#[cfg(test)]
mod tests {
    use super::super::login_request::stage;
    use super::super::test_util::hex48;
    use super::super::{login_status, Header};
    use super::*;

    fn sample() -> (LoginResponse, [u8; BHS_LEN]) {
        // The final operational response: transit to full feature phase,
        // a new session with TSIH 0x0101.
        let rsp = LoginResponse {
            transit: true,
            continue_: false,
            csg: stage::LOGIN_OPERATIONAL_NEGOTIATION,
            nsg: stage::FULL_FEATURE_PHASE,
            version_max: 0,
            version_active: 0,
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            tsih: 0x0101,
            itt: 0x0000_0001,
            stat_sn: 0x0000_0003,
            exp_cmd_sn: 0x0000_0010,
            max_cmd_sn: 0x0000_0030,
            status_class: 0,
            status_detail: 0,
        };
        let wire = hex48(
            "23 87 00 00 00 00 00 40  80 12 34 56 78 9a 01 01
             00 00 00 01 00 00 00 00  00 00 00 03 00 00 00 10
             00 00 00 30 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (rsp, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rsp, wire) = sample();
        assert_eq!(Header::LoginResponse(rsp).encode_bhs(0, 64), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rsp, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x30;
        wire[20] = 0xff;
        wire[38] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::LoginResponse(rsp))
        );
    }

    #[test]
    fn status_sits_in_bytes_36_and_37() {
        let (class, detail) = login_status::AUTHENTICATION_FAILURE;
        let rsp = LoginResponse {
            status_class: class,
            status_detail: detail,
            ..LoginResponse::default()
        };
        let b = Header::LoginResponse(rsp.clone()).encode_bhs(0, 0);
        assert_eq!(&b[36..38], &[0x02, 0x01]);
        assert_eq!(rsp.status(), login_status::AUTHENTICATION_FAILURE);
    }
}
