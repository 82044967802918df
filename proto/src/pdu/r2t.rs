//! Ready To Transfer (RFC 7143 §11.8), opcode 0x31: the target asks for
//! a range of write data.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x31      |1| Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| Logical Unit Number (LUN)                                     |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Target Transfer Tag                                           |
//!    +---------------+---------------+---------------+---------------+
//!  24| StatSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| R2TSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  40| Buffer Offset                                                 |
//!    +---------------+---------------+---------------+---------------+
//!  44| Desired Data Transfer Length                                  |
//!    +---------------------------------------------------------------+
//! ```

use super::bhs::{set_u32, set_u64, set_u8, u32_at, u64_at, FINAL};
use super::{opcode, R2t, BHS_LEN};

impl R2t {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        R2t {
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            r2t_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            desired_data_transfer_length: u32_at(b, 44),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::R2T);
        set_u8(b, 1, FINAL);
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u32(b, 36, self.r2t_sn);
        set_u32(b, 40, self.buffer_offset);
        set_u32(b, 44, self.desired_data_transfer_length);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (R2t, [u8; BHS_LEN]) {
        // Second R2T of a write: 256 KiB from offset 256 KiB.
        let r2t = R2t {
            lun: 0x0001_0000_0000_0000,
            itt: 0x0000_0042,
            ttt: 0x0000_0077,
            stat_sn: 0x12,
            exp_cmd_sn: 0x43,
            max_cmd_sn: 0x62,
            r2t_sn: 1,
            buffer_offset: 0x0004_0000,
            desired_data_transfer_length: 0x0004_0000,
        };
        let wire = hex48(
            "31 80 00 00 00 00 00 00  00 01 00 00 00 00 00 00
             00 00 00 42 00 00 00 77  00 00 00 12 00 00 00 43
             00 00 00 62 00 00 00 01  00 04 00 00 00 04 00 00",
        );
        (r2t, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (r2t, wire) = sample();
        assert_eq!(Header::R2t(r2t).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (r2t, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x7f;
        wire[2] = 0xff;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::R2t(r2t)));
    }
}
