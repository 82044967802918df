//! Text Response (RFC 7143 §11.11), opcode 0x24.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x24      |F|C| Reserved                                  |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| Logical Unit Number (LUN) or Reserved                         |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Target Transfer Tag or 0xffffffff                             |
//!    +---------------+---------------+---------------+---------------+
//!  24| StatSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: text keys (key=value\0 ...)                      /
//! ```

use super::bhs::{bit, flag, set_u32, set_u64, set_u8, u32_at, u64_at, FINAL};
use super::text_request::CONTINUE;
use super::{opcode, TextResponse, BHS_LEN};

impl TextResponse {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        TextResponse {
            final_: flag(b, 1, FINAL),
            continue_: flag(b, 1, CONTINUE),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::TEXT_RESPONSE);
        set_u8(
            b,
            1,
            bit(self.final_, FINAL) | bit(self.continue_, CONTINUE),
        );
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (TextResponse, [u8; BHS_LEN]) {
        // A SendTargets answer too long for one PDU: C set, a TTT to continue.
        let rsp = TextResponse {
            final_: false,
            continue_: true,
            lun: 0,
            itt: 0x0000_0002,
            ttt: 0x0000_1000,
            stat_sn: 3,
            exp_cmd_sn: 2,
            max_cmd_sn: 0x21,
        };
        let wire = hex48(
            "24 40 00 00 00 00 20 00  00 00 00 00 00 00 00 00
             00 00 00 02 00 00 10 00  00 00 00 03 00 00 00 02
             00 00 00 21 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (rsp, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rsp, wire) = sample();
        assert_eq!(Header::TextResponse(rsp).encode_bhs(0, 8192), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rsp, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x3f;
        wire[40] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::TextResponse(rsp))
        );
    }
}
