//! Task Management Function Response (RFC 7143 §11.6), opcode 0x22.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x22      |1| Reserved    | Response      | Reserved      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8/ Reserved                                                      /
//!   +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20| Reserved                                                      |
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
//! ```

use super::bhs::{set_u32, set_u8, u32_at, u8_at, FINAL};
use super::{opcode, TaskMgmtResponse, BHS_LEN};

impl TaskMgmtResponse {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        TaskMgmtResponse {
            response: u8_at(b, 2),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::TASK_MGMT_RESPONSE);
        set_u8(b, 1, FINAL);
        set_u8(b, 2, self.response);
        set_u32(b, 16, self.itt);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::{tmf, Header};
    use super::*;

    fn sample() -> (TaskMgmtResponse, [u8; BHS_LEN]) {
        let rsp = TaskMgmtResponse {
            response: tmf::RESP_NO_TASK,
            itt: 0x0000_00a0,
            stat_sn: 0x55,
            exp_cmd_sn: 0x31,
            max_cmd_sn: 0x50,
        };
        let wire = hex48(
            "22 80 01 00 00 00 00 00  00 00 00 00 00 00 00 00
             00 00 00 a0 00 00 00 00  00 00 00 55 00 00 00 31
             00 00 00 50 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (rsp, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rsp, wire) = sample();
        assert_eq!(Header::TaskMgmtResponse(rsp).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rsp, mut wire) = sample();
        wire[1] |= 0x7f;
        wire[3] = 0xee;
        wire[20] = 0xee;
        wire[40] = 0xee;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::TaskMgmtResponse(rsp))
        );
    }

    #[test]
    fn rejected_response_code_is_255() {
        let rsp = TaskMgmtResponse {
            response: tmf::RESP_REJECTED,
            ..TaskMgmtResponse::default()
        };
        assert_eq!(Header::TaskMgmtResponse(rsp).encode_bhs(0, 0)[2], 0xff);
    }
}
