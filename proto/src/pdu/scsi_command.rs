//! SCSI Command (RFC 7143 §11.3), opcode 0x01.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| 0x01      |F|R|W|. .|ATTR | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| Logical Unit Number (LUN)                                     |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Expected Data Transfer Length                                 |
//!    +---------------+---------------+---------------+---------------+
//!  24| CmdSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32/ SCSI Command Descriptor Block (CDB)                           /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48/ AHS: Extended CDB (type 1), Bidirectional Read length (type 2)/
//!    +---------------+---------------+---------------+---------------+
//!    / DataSegment: immediate data for a write                       /
//! ```

use super::bhs::{
    bit, bytes_at, flag, request_byte0, set_bytes, set_u32, set_u64, set_u8, u32_at, u64_at, u8_at,
    FINAL, IMMEDIATE,
};
use super::{opcode, ScsiCommand, BHS_LEN};

/// Byte 1: the command reads from the target (RFC 7143 §11.3.1).
const READ: u8 = 0x40;
/// Byte 1: the command writes to the target.
const WRITE: u8 = 0x20;
/// Byte 1: task attribute, three bits (RFC 7143 §11.3.1).
const ATTR_MASK: u8 = 0x07;

/// Task attributes (RFC 7143 §11.3.1, SAM-5).
pub mod task_attr {
    pub const UNTAGGED: u8 = 0;
    pub const SIMPLE: u8 = 1;
    pub const ORDERED: u8 = 2;
    pub const HEAD_OF_QUEUE: u8 = 3;
    pub const ACA: u8 = 4;
}

impl ScsiCommand {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        ScsiCommand {
            immediate: flag(b, 0, IMMEDIATE),
            final_: flag(b, 1, FINAL),
            read: flag(b, 1, READ),
            write: flag(b, 1, WRITE),
            attr: u8_at(b, 1) & ATTR_MASK,
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            expected_data_transfer_length: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            cdb: bytes_at(b, 32),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, request_byte0(opcode::SCSI_COMMAND, self.immediate));
        set_u8(
            b,
            1,
            bit(self.final_, FINAL)
                | bit(self.read, READ)
                | bit(self.write, WRITE)
                | (self.attr & ATTR_MASK),
        );
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.expected_data_transfer_length);
        set_u32(b, 24, self.cmd_sn);
        set_u32(b, 28, self.exp_stat_sn);
        set_bytes(b, 32, self.cdb);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (ScsiCommand, [u8; BHS_LEN]) {
        // WRITE(10) of 8 blocks at LBA 0x1234 on LUN 1, simple task,
        // 512 bytes of immediate data.
        let mut cdb = [0u8; 16];
        cdb[..10].copy_from_slice(&[0x2a, 0, 0, 0, 0x12, 0x34, 0, 0, 8, 0]);
        let cmd = ScsiCommand {
            immediate: false,
            final_: false,
            read: false,
            write: true,
            attr: task_attr::SIMPLE,
            lun: 0x0001_0000_0000_0000,
            itt: 0x0000_0042,
            expected_data_transfer_length: 4096,
            cmd_sn: 0x0102_0304,
            exp_stat_sn: 0x0506_0708,
            cdb,
        };
        let wire = hex48(
            "01 21 00 00 00 00 02 00  00 01 00 00 00 00 00 00
             00 00 00 42 00 00 10 00  01 02 03 04 05 06 07 08
             2a 00 00 00 12 34 00 00  08 00 00 00 00 00 00 00",
        );
        (cmd, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (cmd, wire) = sample();
        assert_eq!(Header::ScsiCommand(cmd).encode_bhs(0, 512), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (cmd, mut wire) = sample();
        wire[0] |= 0x80;
        wire[1] |= 0x18;
        wire[2] = 0xff;
        wire[3] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::ScsiCommand(cmd))
        );
    }

    #[test]
    fn flag_bits_are_where_rfc7143_11_3_1_puts_them() {
        let cmd = ScsiCommand {
            immediate: true,
            final_: true,
            read: true,
            attr: task_attr::ACA,
            ..ScsiCommand::default()
        };
        let b = Header::ScsiCommand(cmd).encode_bhs(0, 0);
        assert_eq!(b[0], 0x41);
        assert_eq!(b[1], 0x80 | 0x40 | 0x04);
    }
}
