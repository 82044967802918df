//! Text Request (RFC 7143 §11.10), opcode 0x04: SendTargets and other
//! text negotiation in full feature phase.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| 0x04      |F|C| Reserved                                  |
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
//!  24| CmdSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: text keys (key=value\0 ...)                      /
//! ```

use super::bhs::{
    bit, flag, request_byte0, set_u32, set_u64, set_u8, u32_at, u64_at, FINAL, IMMEDIATE,
};
use super::{opcode, TextRequest, BHS_LEN};

/// Byte 1: Continue, the text does not end in this PDU (RFC 7143 §11.10.2).
pub(crate) const CONTINUE: u8 = 0x40;

impl TextRequest {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        TextRequest {
            immediate: flag(b, 0, IMMEDIATE),
            final_: flag(b, 1, FINAL),
            continue_: flag(b, 1, CONTINUE),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, request_byte0(opcode::TEXT_REQUEST, self.immediate));
        set_u8(
            b,
            1,
            bit(self.final_, FINAL) | bit(self.continue_, CONTINUE),
        );
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 24, self.cmd_sn);
        set_u32(b, 28, self.exp_stat_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (TextRequest, [u8; BHS_LEN]) {
        // "SendTargets=All\0" (16 bytes) on a discovery session.
        let req = TextRequest {
            immediate: true,
            final_: true,
            continue_: false,
            lun: 0,
            itt: 0x0000_0002,
            ttt: 0xffff_ffff,
            cmd_sn: 1,
            exp_stat_sn: 2,
        };
        let wire = hex48(
            "44 80 00 00 00 00 00 10  00 00 00 00 00 00 00 00
             00 00 00 02 ff ff ff ff  00 00 00 01 00 00 00 02
             00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (req, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (req, wire) = sample();
        assert_eq!(Header::TextRequest(req).encode_bhs(0, 16), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (req, mut wire) = sample();
        wire[1] |= 0x3f;
        wire[2] = 0xff;
        wire[36] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::TextRequest(req))
        );
    }

    #[test]
    fn continue_bit() {
        let req = TextRequest {
            continue_: true,
            ..TextRequest::default()
        };
        assert_eq!(Header::TextRequest(req).encode_bhs(0, 0)[1], 0x40);
    }
}
