//! Asynchronous Message (RFC 7143 §11.9), opcode 0x32: SCSI asynchronous
//! events (sense in the data segment) and iSCSI requests such as "please
//! log out" or "connection will be dropped".
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x32      |1| Reserved                                    |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN or Reserved                                               |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| 0xffffffff                                                    |
//!    +---------------+---------------+---------------+---------------+
//!  20| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  24| StatSN                                                        |
//!    +---------------+---------------+---------------+---------------+
//!  28| ExpCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  32| MaxCmdSN                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  36| AsyncEvent    | AsyncVCode    | Parameter1 or Reserved        |
//!    +---------------+---------------+---------------+---------------+
//!  40| Parameter2 or Reserved        | Parameter3 or Reserved        |
//!    +---------------+---------------+---------------+---------------+
//!  44| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: SenseLength + sense (event 0), else optional     /
//! ```

use super::bhs::{set_u16, set_u32, set_u64, set_u8, u16_at, u32_at, u64_at, u8_at, FINAL};
use super::header::RESERVED_TAG;
use super::{opcode, AsyncMessage, BHS_LEN};

/// AsyncEvent codes (RFC 7143 §11.9.1).
pub mod async_event {
    pub const SCSI_EVENT: u8 = 0;
    pub const LOGOUT_REQUEST: u8 = 1;
    pub const DROP_CONNECTION: u8 = 2;
    pub const DROP_ALL_CONNECTIONS: u8 = 3;
    pub const RENEGOTIATE: u8 = 4;
    pub const VENDOR_SPECIFIC: u8 = 255;
}

impl AsyncMessage {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        AsyncMessage {
            lun: u64_at(b, 8),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            async_event: u8_at(b, 36),
            async_vcode: u8_at(b, 37),
            parameter1: u16_at(b, 38),
            parameter2: u16_at(b, 40),
            parameter3: u16_at(b, 42),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::ASYNC_MESSAGE);
        set_u8(b, 1, FINAL);
        set_u64(b, 8, self.lun);
        // Not tied to a task: ITT is 0xffffffff (RFC 7143 §11.9).
        set_u32(b, 16, RESERVED_TAG);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u8(b, 36, self.async_event);
        set_u8(b, 37, self.async_vcode);
        set_u16(b, 38, self.parameter1);
        set_u16(b, 40, self.parameter2);
        set_u16(b, 42, self.parameter3);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::Header;
    use super::*;

    fn sample() -> (AsyncMessage, [u8; BHS_LEN]) {
        // "Please log out": for AsyncEvent 1, Parameter3 is the time limit
        // in seconds for the initiator to log out (RFC 7143 §11.9.1).
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: 0x90,
            exp_cmd_sn: 0x50,
            max_cmd_sn: 0x70,
            async_event: async_event::LOGOUT_REQUEST,
            async_vcode: 0,
            parameter1: 0,
            parameter2: 0,
            parameter3: 5,
        };
        let wire = hex48(
            "32 80 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             ff ff ff ff 00 00 00 00  00 00 00 90 00 00 00 50
             00 00 00 70 01 00 00 00  00 00 00 05 00 00 00 00",
        );
        (msg, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (msg, wire) = sample();
        assert_eq!(Header::AsyncMessage(msg).encode_bhs(0, 0), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (msg, mut wire) = sample();
        wire[1] |= 0x7f;
        wire[20] = 0xff;
        wire[44] = 0xff;
        assert_eq!(
            Header::decode_bhs(&wire).ok(),
            Some(Header::AsyncMessage(msg))
        );
    }

    #[test]
    fn scsi_event_carries_lun_and_parameters() {
        let msg = AsyncMessage {
            lun: 0x0002_0000_0000_0000,
            async_event: async_event::SCSI_EVENT,
            async_vcode: 0x7e,
            parameter1: 0x0102,
            parameter2: 0x0304,
            parameter3: 0x0506,
            ..AsyncMessage::default()
        };
        let b = Header::AsyncMessage(msg).encode_bhs(0, 20);
        assert_eq!(&b[8..10], &[0, 2]);
        assert_eq!(&b[36..44], &[0, 0x7e, 1, 2, 3, 4, 5, 6]);
    }
}
