//! Logout Request (RFC 7143 §11.14), opcode 0x06.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| 0x06      |1| Reason Code | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| CID or Reserved               | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!  24| CmdSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//! ```

use super::bhs::{
    flag, request_byte0, set_u16, set_u32, set_u8, u16_at, u32_at, u8_at, FINAL, IMMEDIATE,
};
use super::{opcode, LogoutRequest, BHS_LEN};

/// Byte 1: the reason code, 7 bits under the always-set F bit.
const REASON_MASK: u8 = 0x7f;

/// Logout reason codes (RFC 7143 §11.14.1).
pub mod logout_reason {
    pub const CLOSE_SESSION: u8 = 0;
    pub const CLOSE_CONNECTION: u8 = 1;
    pub const REMOVE_CONNECTION_FOR_RECOVERY: u8 = 2;
}

impl LogoutRequest {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        LogoutRequest {
            immediate: flag(b, 0, IMMEDIATE),
            reason: u8_at(b, 1) & REASON_MASK,
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, request_byte0(opcode::LOGOUT_REQUEST, self.immediate));
        set_u8(b, 1, FINAL | (self.reason & REASON_MASK));
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

    fn sample() -> (LogoutRequest, [u8; BHS_LEN]) {
        let req = LogoutRequest {
            immediate: true,
            reason: logout_reason::CLOSE_CONNECTION,
            itt: 0x0000_0099,
            cid: 0x0003,
            cmd_sn: 0x40,
            exp_stat_sn: 0x41,
        };
        let wire = hex48(
            "46 81 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             00 00 00 99 00 03 00 00  00 00 00 40 00 00 00 41
             00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (req, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (req, wire) = sample();
        assert_eq!(Header::LogoutRequest(req).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (req, mut wire) = sample();
        wire[0] |= 0x80;
        wire[2] = 0xff;
        wire[8] = 0xff;
        wire[22] = 0xff;
        wire[32] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::LogoutRequest(req))
        );
    }
}
