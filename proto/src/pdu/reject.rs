//! Reject (RFC 7143 §11.17), opcode 0x3f. The data segment is the complete
//! header (the BHS) of the rejected PDU.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|.| 0x3f      |1| Reserved    | Reason        | Reserved      |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8/ Reserved                                                      /
//!   +/                                                               /
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
//!  36| DataSN/R2TSN or Reserved                                      |
//!    +---------------+---------------+---------------+---------------+
//!  40| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  44| Reserved                                                      |
//!    +---------------+---------------+---------------+---------------+
//!  48/ DataSegment: the BHS of the rejected PDU (48 bytes)           /
//! ```

use bytes::Bytes;

use super::bhs::{set_u32, set_u8, u32_at, u8_at, FINAL};
use super::header::RESERVED_TAG;
use super::{opcode, Header, Pdu, Reject, BHS_LEN};

impl Reject {
    pub(crate) fn read_bhs(b: &[u8; BHS_LEN]) -> Self {
        Reject {
            reason: u8_at(b, 2),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn_or_r2t_sn: u32_at(b, 36),
        }
    }

    pub(crate) fn write_bhs(&self, b: &mut [u8; BHS_LEN]) {
        set_u8(b, 0, opcode::REJECT);
        set_u8(b, 1, FINAL);
        set_u8(b, 2, self.reason);
        // Not tied to a task: ITT is 0xffffffff (RFC 7143 §11.17).
        set_u32(b, 16, RESERVED_TAG);
        set_u32(b, 24, self.stat_sn);
        set_u32(b, 28, self.exp_cmd_sn);
        set_u32(b, 32, self.max_cmd_sn);
        set_u32(b, 36, self.data_sn_or_r2t_sn);
    }

    /// The whole Reject PDU, carrying the rejected PDU's BHS as its data
    /// segment (RFC 7143 §11.17), e.g. from [`super::PduError::reject`].
    pub fn into_pdu(self, rejected: &[u8; BHS_LEN]) -> Pdu {
        Pdu {
            header: Header::Reject(self),
            ahs: Bytes::new(),
            data: Bytes::copy_from_slice(rejected),
        }
    }

    /// The rejected BHS in a Reject's data segment, if it holds one.
    pub fn rejected_bhs(data: &[u8]) -> Option<[u8; BHS_LEN]> {
        data.get(..BHS_LEN)
            .and_then(|b| <[u8; BHS_LEN]>::try_from(b).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex48;
    use super::super::{reject_reason, WireConfig};
    use super::*;

    fn sample() -> (Reject, [u8; BHS_LEN]) {
        let rej = Reject {
            reason: reject_reason::DATA_DIGEST_ERROR,
            stat_sn: 0x33,
            exp_cmd_sn: 0x44,
            max_cmd_sn: 0x55,
            data_sn_or_r2t_sn: 0,
        };
        let wire = hex48(
            "3f 80 02 00 00 00 00 30  00 00 00 00 00 00 00 00
             ff ff ff ff 00 00 00 00  00 00 00 33 00 00 00 44
             00 00 00 55 00 00 00 00  00 00 00 00 00 00 00 00",
        );
        (rej, wire)
    }

    #[test]
    fn encodes_byte_exact() {
        let (rej, wire) = sample();
        assert_eq!(Header::Reject(rej).encode_bhs(0, BHS_LEN), wire);
    }

    #[test]
    fn decodes_byte_exact_and_ignores_reserved_bits() {
        let (rej, mut wire) = sample();
        wire[1] |= 0x7f;
        wire[3] = 0xff;
        wire[16] = 0;
        wire[40] = 0xff;
        assert_eq!(Header::decode_bhs(&wire).ok(), Some(Header::Reject(rej)));
    }

    #[test]
    fn into_pdu_carries_the_rejected_header() {
        let (rej, wire) = sample();
        let rejected = [0x5au8; BHS_LEN];
        let pdu = rej.into_pdu(&rejected);
        let bytes = pdu.to_bytes(&WireConfig::default());
        assert_eq!(&bytes[..48], &wire);
        assert_eq!(&bytes[48..], &rejected);
        assert_eq!(Reject::rejected_bhs(&pdu.data), Some(rejected));
        assert_eq!(Reject::rejected_bhs(&pdu.data[..47]), None);
    }
}
