//! Logout Response (RFC 7143 §11.15), opcode 0x26.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x26      |1| Reserved    | Response      | Reserved      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8/ Reserved                                                      /
//!   +/                                                               /
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
//!  36| Reserved                                                      |
//!    +---------------------------------------------------------------+
//!  40| Time2Wait                     | Time2Retain                   |
//!    +---------------+---------------+---------------+---------------+
//!  44| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//! ```

use super::bhs::{set_u16, set_u32, set_u8, u16_at, u32_at, u8_at, FINAL};
use super::{opcode, LogoutResponse, BHS_LEN};

impl LogoutResponse {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        LogoutResponse {
            response: u8_at(b, 2),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            time2wait: u16_at(b, 40),
            time2retain: u16_at(b, 42),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::LOGOUT_RESPONSE);
        set_u8(b, 1, FINAL);
        set_u8(b, 2, self.response);
        set_u32(b, 16, self.itt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u16(b, 40, self.time2wait);
        set_u16(b, 42, self.time2retain);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (LogoutResponse, [u8; BHS_LEN]) {
        let rsp = LogoutResponse {
            response: 0,
            itt: 0x0000_0099,
            stat_sn: 0x77,
            exp_cmd_sn: 0x41,
            max_cmd_sn: 0x60,
            time2wait: 2,
            time2retain: 20,
        };
        let wire = hex48(
            "26 80 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             00 00 00 99 00 00 00 00  00 00 00 77 00 00 00 41
             00 00 00 60 00 00 00 00  00 02 00 14 00 00 00 00",
        );
        (rsp, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rsp, wire) = sample();
        assert_eq!(Header::LogoutResponse(rsp).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rsp, mut wire) = sample();
        wire[1] |= 0x7f;
        wire[3] = 0xff;
        wire[36] = 0xff;
        wire[44] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::LogoutResponse(rsp))
        );
    }
}
