//! SNACK Request (RFC 7143 §11.16), opcode 0x10: the initiator asks for
//! Data-In, R2T or status to be resent, or acknowledges data. busrig
//! negotiates ErrorRecoveryLevel=0 and answers SNACKs with a Reject, but
//! still decodes them exactly.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x10      |1|.|.|.| Type  | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN or Reserved                                               |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag or 0xffffffff                              |
//!    +---------------+---------------+---------------+---------------+
//!  20| Target Transfer Tag or SNACK Tag or 0xffffffff                |
//!    +---------------+---------------+---------------+---------------+
//!  24| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  40| BegRun                                                        |
//!    +---------------------------------------------------------------+
//!  44| RunLength                                                     |
//!    +---------------------------------------------------------------+
//! ```

use super::bhs::{set_u32, set_u64, set_u8, u32_at, u64_at, u8_at, FINAL};
use super::{opcode, SnackRequest, BHS_LEN};

/// Byte 1: the SNACK type, four bits (RFC 7143 §11.16.1).
const TYPE_MASK: u8 = 0x0f;

/// SNACK types (RFC 7143 §11.16.1).
pub mod snack_type {
    pub const DATA_R2T: u8 = 0;
    pub const STATUS: u8 = 1;
    pub const DATA_ACK: u8 = 2;
    pub const R_DATA: u8 = 3;
}

impl SnackRequest {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        SnackRequest {
            snack_type: u8_at(b, 1) & TYPE_MASK,
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            beg_run: u32_at(b, 40),
            run_length: u32_at(b, 44),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::SNACK_REQUEST);
        set_u8(b, 1, FINAL | (self.snack_type & TYPE_MASK));
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 28, self.exp_stat_sn);
        set_u32(b, 40, self.beg_run);
        set_u32(b, 44, self.run_length);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (SnackRequest, [u8; BHS_LEN]) {
        // Resend status StatSN 0x20..0x21 (RunLength 2).
        let snack = SnackRequest {
            snack_type: snack_type::STATUS,
            lun: 0,
            itt: 0xffff_ffff,
            ttt: 0,
            exp_stat_sn: 0x20,
            beg_run: 0x20,
            run_length: 2,
        };
        let wire = hex48(
            "10 81 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             ff ff ff ff 00 00 00 00  00 00 00 00 00 00 00 20
             00 00 00 00 00 00 00 00  00 00 00 20 00 00 00 02",
        );
        (snack, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (snack, wire) = sample();
        assert_eq!(Header::Snack(snack).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (snack, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x70;
        wire[2] = 0xff;
        wire[24] = 0xff;
        wire[32] = 0xff;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::Snack(snack)));
    }
}
