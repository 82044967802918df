//! SCSI Response (RFC 7143 §11.4), opcode 0x21.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x21      |1|. .|o|u|O|U|.| Response      | Status        |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| Reserved                                                      |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| SNACK Tag or Reserved                                         |
//!    +---------------+---------------+---------------+---------------+
//!  24| StatSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| ExpDataSN or Reserved                                         |
//!    +---------------+---------------+---------------+---------------+
//!  40| Bidirectional Read Residual Count or Reserved                 |
//!    +---------------+---------------+---------------+---------------+
//!  44| Residual Count or Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: SenseLength + sense data (see `sense_segment`)   /
//! ```
//!
//! o: bidirectional read overflow, u: bidirectional read underflow,
//! O: overflow, U: underflow (RFC 7143 §11.4.1).

use super::bhs::{bit, flag, set_u32, set_u8, u32_at, u8_at, FINAL};
use super::{opcode, ScsiResponse, BHS_LEN};

const BIDI_OVERFLOW: u8 = 0x10;
const BIDI_UNDERFLOW: u8 = 0x08;
const OVERFLOW: u8 = 0x04;
const UNDERFLOW: u8 = 0x02;

/// iSCSI service responses (RFC 7143 §11.4.3).
pub mod service_response {
    pub const COMMAND_COMPLETED: u8 = 0x00;
    pub const TARGET_FAILURE: u8 = 0x01;
}

impl ScsiResponse {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        ScsiResponse {
            bidi_overflow: flag(b, 1, BIDI_OVERFLOW),
            bidi_underflow: flag(b, 1, BIDI_UNDERFLOW),
            overflow: flag(b, 1, OVERFLOW),
            underflow: flag(b, 1, UNDERFLOW),
            response: u8_at(b, 2),
            status: u8_at(b, 3),
            itt: u32_at(b, 16),
            snack_tag: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
            bidi_residual_count: u32_at(b, 40),
            residual_count: u32_at(b, 44),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::SCSI_RESPONSE);
        set_u8(
            b,
            1,
            FINAL
                | bit(self.bidi_overflow, BIDI_OVERFLOW)
                | bit(self.bidi_underflow, BIDI_UNDERFLOW)
                | bit(self.overflow, OVERFLOW)
                | bit(self.underflow, UNDERFLOW),
        );
        set_u8(b, 2, self.response);
        set_u8(b, 3, self.status);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.snack_tag);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u32(b, 36, self.exp_data_sn);
        set_u32(b, 40, self.bidi_residual_count);
        set_u32(b, 44, self.residual_count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (ScsiResponse, [u8; BHS_LEN]) {
        // CHECK CONDITION with 20 bytes of sense segment, 512 bytes short.
        let rsp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: true,
            overflow: false,
            underflow: true,
            response: service_response::COMMAND_COMPLETED,
            status: 0x02,
            itt: 0x0000_0042,
            snack_tag: 0,
            stat_sn: 0x11,
            exp_cmd_sn: 0x22,
            max_cmd_sn: 0x33,
            exp_data_sn: 2,
            bidi_residual_count: 0x10,
            residual_count: 0x200,
        };
        let wire = hex48(
            "21 8a 00 02 00 00 00 14  00 00 00 00 00 00 00 00
             00 00 00 42 00 00 00 00  00 00 00 11 00 00 00 22
             00 00 00 33 00 00 00 02  00 00 00 10 00 00 02 00",
        );
        (rsp, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rsp, wire) = sample();
        assert_eq!(Header::ScsiResponse(rsp).encode_bhs(0, 20), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rsp, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x61;
        wire[8] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::ScsiResponse(rsp))
        );
    }
}
