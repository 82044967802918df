//! SCSI Data-Out (RFC 7143 §11.7), opcode 0x05: write data, unsolicited
//! or in answer to an R2T. No I bit: Data-Out is never immediate.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x05      |F| Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN or Reserved                                               |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Target Transfer Tag or 0xffffffff                             |
//!    +---------------+---------------+---------------+---------------+
//!  24| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| DataSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  40| Buffer Offset                                                 |
//!    +---------------+---------------+---------------+---------------+
//!  44| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment                                                   /
//! ```

use super::bhs::{bit, flag, set_u32, set_u64, set_u8, u32_at, u64_at, FINAL};
use super::{opcode, DataOut, BHS_LEN};

impl DataOut {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        DataOut {
            final_: flag(b, 1, FINAL),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::DATA_OUT);
        set_u8(b, 1, bit(self.final_, FINAL));
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 28, self.exp_stat_sn);
        set_u32(b, 36, self.data_sn);
        set_u32(b, 40, self.buffer_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (DataOut, [u8; BHS_LEN]) {
        // The last 8 KiB burst answering R2T TTT 0x77 at offset 64 KiB.
        let out = DataOut {
            final_: true,
            lun: 0x0001_0000_0000_0000,
            itt: 0x0000_0042,
            ttt: 0x0000_0077,
            exp_stat_sn: 0x12,
            data_sn: 3,
            buffer_offset: 0x0001_0000,
        };
        let wire = hex48(
            "05 80 00 00 00 00 20 00  00 01 00 00 00 00 00 00
             00 00 00 42 00 00 00 77  00 00 00 00 00 00 00 12
             00 00 00 00 00 00 00 03  00 01 00 00 00 00 00 00",
        );
        (out, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (out, wire) = sample();
        assert_eq!(Header::DataOut(out).encode_bhs(0, 8192), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (out, mut wire) = sample();
        // A stray I bit is reserved here: Data-Out has none.
        wire[0] |= 0xc0;
        wire[1] |= 0x7f;
        wire[24] = 0xff;
        wire[32] = 0xff;
        wire[44] = 0xff;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::DataOut(out)));
    }
}
