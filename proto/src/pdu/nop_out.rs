//! NOP-Out (RFC 7143 §11.18), opcode 0x00: a ping from the initiator, or
//! the answer to a target's NOP-In that asked for one.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| 0x00      |1| Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN                                                           |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag or 0xffffffff                              |
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
//!  48| DataSegment: ping data, echoed in the NOP-In                  |
//! ```

use super::bhs::{
    bit, flag, request_byte0, set_u32, set_u64, set_u8, u32_at, u64_at, FINAL, IMMEDIATE,
};
use super::{opcode, NopOut, BHS_LEN};

impl NopOut {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        NopOut {
            immediate: flag(b, 0, IMMEDIATE),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, request_byte0(opcode::NOP_OUT, self.immediate));
        // The F bit is always 1 (RFC 7143 §11.18).
        set_u8(b, 1, bit(true, FINAL));
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

    fn sample() -> (NopOut, [u8; BHS_LEN]) {
        let nop = NopOut {
            immediate: true,
            lun: 0x0001_0000_0000_0000,
            itt: 0x1122_3344,
            ttt: 0xffff_ffff,
            cmd_sn: 7,
            exp_stat_sn: 9,
        };
        let wire = hex48(
            "40 80 00 00 00 00 00 04  00 01 00 00 00 00 00 00
             11 22 33 44 ff ff ff ff  00 00 00 07 00 00 00 09
             00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (nop, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (nop, wire) = sample();
        assert_eq!(Header::NopOut(nop).encode_bhs(0, 4), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (nop, mut wire) = sample();
        // Reserved: bit 7 of byte 0, the rest of byte 1, bytes 32-47.
        wire[0] |= 0x80;
        wire[1] |= 0x7f;
        wire[40] = 0xaa;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::NopOut(nop)));
    }
}
