//! NOP-In (RFC 7143 §11.19), opcode 0x20: the answer to a NOP-Out, or a
//! target's own ping (ITT 0xffffffff, and a TTT other than 0xffffffff when
//! it wants a NOP-Out back).
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x20      |1| Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN or Reserved                                               |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag or 0xffffffff                              |
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
//!  48| DataSegment: the ping data of the NOP-Out                     |
//! ```

use super::bhs::{set_u32, set_u64, set_u8, u32_at, u64_at, FINAL};
use super::{opcode, NopIn, BHS_LEN};

impl NopIn {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        NopIn {
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::NOP_IN);
        set_u8(b, 1, FINAL);
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

    fn sample() -> (NopIn, [u8; BHS_LEN]) {
        // A target-initiated ping asking for an answer.
        let nop = NopIn {
            lun: 0,
            itt: 0xffff_ffff,
            ttt: 0x0000_0abc,
            stat_sn: 0x10,
            exp_cmd_sn: 0x20,
            max_cmd_sn: 0x40,
        };
        let wire = hex48(
            "20 80 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             ff ff ff ff 00 00 0a bc  00 00 00 10 00 00 00 20
             00 00 00 40 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (nop, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (nop, wire) = sample();
        assert_eq!(Header::NopIn(nop).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (nop, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[2] = 0xff;
        wire[44] = 0x01;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::NopIn(nop)));
    }
}
