//! Task Management Function Request (RFC 7143 §11.5), opcode 0x02.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| 0x02      |1| Function    | Reserved                      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| Logical Unit Number (LUN) or Reserved                         |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Referenced Task Tag or 0xffffffff                             |
//!    +---------------+---------------+---------------+---------------+
//!  24| CmdSN                                                         |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpStatSN                                                     |
//!    +---------------+---------------+---------------+---------------+
//!  32| RefCmdSN or Reserved                                          |
//!    +---------------+---------------+---------------+---------------+
//!  36| ExpDataSN or Reserved                                         |
//!    +---------------+---------------+---------------+---------------+
//!  40/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//! ```

use super::bhs::{
    flag, request_byte0, set_u32, set_u64, set_u8, u32_at, u64_at, u8_at, FINAL, IMMEDIATE,
};
use super::{opcode, TaskMgmtRequest, BHS_LEN};

/// Byte 1: the function code, 7 bits under the always-set F bit.
const FUNCTION_MASK: u8 = 0x7f;

impl TaskMgmtRequest {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        TaskMgmtRequest {
            immediate: flag(b, 0, IMMEDIATE),
            function: u8_at(b, 1) & FUNCTION_MASK,
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            referenced_task_tag: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            ref_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(
            b,
            0,
            request_byte0(opcode::TASK_MGMT_REQUEST, self.immediate),
        );
        set_u8(b, 1, FINAL | (self.function & FUNCTION_MASK));
        set_u64(b, 8, self.lun);
        set_u32(b, 16, self.itt);
        set_u32(b, 20, self.referenced_task_tag);
        set_u32(b, 24, self.cmd_sn);
        set_u32(b, 28, self.exp_stat_sn);
        set_u32(b, 32, self.ref_cmd_sn);
        set_u32(b, 36, self.exp_data_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::{tmf, Header};
    use super::*;

    fn sample() -> (TaskMgmtRequest, [u8; BHS_LEN]) {
        // ABORT TASK of ITT 0x99 on LUN 2, sent immediate.
        let req = TaskMgmtRequest {
            immediate: true,
            function: tmf::ABORT_TASK,
            lun: 0x0002_0000_0000_0000,
            itt: 0x0000_00a0,
            referenced_task_tag: 0x0000_0099,
            cmd_sn: 0x30,
            exp_stat_sn: 0x31,
            ref_cmd_sn: 0x2f,
            exp_data_sn: 0,
        };
        let wire = hex48(
            "42 81 00 00 00 00 00 00  00 02 00 00 00 00 00 00
             00 00 00 a0 00 00 00 99  00 00 00 30 00 00 00 31
             00 00 00 2f 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (req, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (req, wire) = sample();
        assert_eq!(Header::TaskMgmtRequest(req).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (req, mut wire) = sample();
        wire[0] |= 0x80;
        wire[1] &= 0x7f; // F is fixed at 1; a 0 there is not a field.
        wire[3] = 0xff;
        wire[47] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::TaskMgmtRequest(req))
        );
    }

    #[test]
    fn target_cold_reset_function_code() {
        let req = TaskMgmtRequest {
            function: tmf::TARGET_COLD_RESET,
            ..TaskMgmtRequest::default()
        };
        assert_eq!(Header::TaskMgmtRequest(req).encode_bhs(0, 0)[1], 0x87);
    }
}
