//! SCSI Data-In (RFC 7143 §11.7), opcode 0x25: read data, optionally with
//! the command's status in the last PDU (S bit, "phase collapse",
//! RFC 7143 §11.7.4).
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x25      |F|A|0 0 0|O|U|S| Reserved      |Status or Rsvd |
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
//!  24| StatSN or Reserved                                            |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| DataSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  40| Buffer Offset                                                 |
//!    +---------------+---------------+---------------+---------------+
//!  44| Residual Count                                                |
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment                                                   /
//! ```
//!
//! The fields are carried as they are whatever S says; which of them mean
//! something without S (RFC 7143 §11.7.4) is the session's business.

use super::bhs::{bit, flag, set_u32, set_u64, set_u8, u32_at, u64_at, u8_at, FINAL};
use super::{opcode, DataIn, BHS_LEN};

/// Byte 1: Acknowledge requested (RFC 7143 §11.7.2).
const ACKNOWLEDGE: u8 = 0x40;
/// Byte 1: residual overflow (RFC 7143 §11.7.5).
const OVERFLOW: u8 = 0x04;
/// Byte 1: residual underflow.
const UNDERFLOW: u8 = 0x02;
/// Byte 1: status present (RFC 7143 §11.7.3).
const STATUS: u8 = 0x01;

impl DataIn {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        DataIn {
            final_: flag(b, 1, FINAL),
            acknowledge: flag(b, 1, ACKNOWLEDGE),
            overflow: flag(b, 1, OVERFLOW),
            underflow: flag(b, 1, UNDERFLOW),
            status_present: flag(b, 1, STATUS),
            status: u8_at(b, 3),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            residual_count: u32_at(b, 44),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::DATA_IN);
        set_u8(
            b,
            1,
            bit(self.final_, FINAL)
                | bit(self.acknowledge, ACKNOWLEDGE)
                | bit(self.overflow, OVERFLOW)
                | bit(self.underflow, UNDERFLOW)
                | bit(self.status_present, STATUS),
        );
        set_u8(b, 3, self.status);
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.ttt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u32(b, 36, self.data_sn);
        set_u32(b, 40, self.buffer_offset);
        set_u32(b, 44, self.residual_count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (DataIn, [u8; BHS_LEN]) {
        // The last 36 bytes of an INQUIRY that asked for 96: final, status
        // GOOD collapsed into the PDU, 60 bytes of underflow.
        let din = DataIn {
            final_: true,
            acknowledge: false,
            overflow: false,
            underflow: true,
            status_present: true,
            status: 0x00,
            lun: 0,
            itt: 0x0000_0005,
            ttt: 0xffff_ffff,
            stat_sn: 0x21,
            exp_cmd_sn: 0x06,
            max_cmd_sn: 0x25,
            data_sn: 0,
            buffer_offset: 0,
            residual_count: 60,
        };
        let wire = hex48(
            "25 83 00 00 00 00 00 24  00 00 00 00 00 00 00 00
             00 00 00 05 ff ff ff ff  00 00 00 21 00 00 00 06
             00 00 00 25 00 00 00 00  00 00 00 00 00 00 00 3c",
        );
        (din, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (din, wire) = sample();
        assert_eq!(Header::DataIn(din).encode_bhs(0, 36), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (din, mut wire) = sample();
        wire[0] |= 0xc0;
        wire[1] |= 0x38;
        wire[2] = 0xff;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::DataIn(din)));
    }

    #[test]
    fn acknowledge_and_overflow_bits() {
        let din = DataIn {
            acknowledge: true,
            overflow: true,
            status: 0x02,
            ..DataIn::default()
        };
        let b = Header::DataIn(din).encode_bhs(0, 0);
        assert_eq!(b[1], 0x44);
        assert_eq!(b[3], 0x02);
    }
}
