//! Errors of the PDU layer and, in one place, what each one means on the
//! wire: close the connection, or answer with a Reject (RFC 7143 §11.17)
//! and go on.
//!
//! ```text
//! error                  fatal  Reject reason                 src after decode
//! HeaderDigest           yes    none (header not trusted)     untouched
//! DataSegmentTooLong     yes    0x04 protocol error (then close) untouched
//! DataDigest             no     0x02 data digest error        whole PDU consumed
//! InvalidAhs             no     0x09 invalid PDU field        (not from decode)
//! NotScsiCommand         no     none (caller asked wrongly)   (not from decode)
//! ```

use super::{reject_reason, BHS_LEN};

/// An error decoding or interpreting a PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The header digest over BHS and AHS did not match; the lengths cannot be trusted (RFC 7143 §7.8).
    #[error("header digest mismatch: computed {expected:#010x}, received {received:#010x}")]
    HeaderDigest { expected: u32, received: u32 },

    /// The data digest did not match; the whole PDU was consumed and must be rejected (RFC 7143 §7.8).
    #[error("data digest mismatch: computed {expected:#010x}, received {received:#010x}")]
    DataDigest {
        bhs: [u8; BHS_LEN],
        expected: u32,
        received: u32,
    },

    /// DataSegmentLength exceeds the MaxRecvDataSegmentLength we declared (RFC 7143 §13.12).
    #[error("data segment of {length} bytes exceeds MaxRecvDataSegmentLength {limit}")]
    DataSegmentTooLong {
        bhs: [u8; BHS_LEN],
        length: u32,
        limit: u32,
    },

    /// An AHS that overruns TotalAHSLength or whose content is malformed (RFC 7143 §11.2.2).
    #[error("invalid AHS: {reason}")]
    InvalidAhs {
        bhs: [u8; BHS_LEN],
        reason: &'static str,
    },

    /// A SCSI-command accessor was used on a PDU with another opcode.
    #[error("opcode {opcode:#04x} is not a SCSI Command")]
    NotScsiCommand { opcode: u8 },
}

impl PduError {
    /// Whether the connection must be closed (header digest error, data
    /// segment over the limit: the stream can no longer be framed) rather
    /// than the PDU answered with a Reject and the connection continued
    /// (data digest error, with the whole PDU consumed; an invalid field
    /// in a well-framed PDU).
    pub fn is_fatal(&self) -> bool {
        match self {
            PduError::HeaderDigest { .. } | PduError::DataSegmentTooLong { .. } => true,
            PduError::DataDigest { .. }
            | PduError::InvalidAhs { .. }
            | PduError::NotScsiCommand { .. } => false,
        }
    }

    /// The Reject reason to send (RFC 7143 §11.17.1) with the offending BHS,
    /// when there is one to send. For a fatal error this is what to send
    /// before closing, if anything: a header with a bad digest is not
    /// trusted enough to be echoed (RFC 7143 §7.8), so it gets none.
    pub fn reject(&self) -> Option<(u8, [u8; BHS_LEN])> {
        match self {
            PduError::DataDigest { bhs, .. } => Some((reject_reason::DATA_DIGEST_ERROR, *bhs)),
            PduError::DataSegmentTooLong { bhs, .. } => Some((reject_reason::PROTOCOL_ERROR, *bhs)),
            PduError::InvalidAhs { bhs, .. } => Some((reject_reason::INVALID_PDU_FIELD, *bhs)),
            PduError::HeaderDigest { .. } | PduError::NotScsiCommand { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per error: (error, fatal, Reject reason).
    #[test]
    fn wire_answer_table() {
        let bhs = [0x42u8; BHS_LEN];
        let rows: [(PduError, bool, Option<u8>); 5] = [
            (
                PduError::HeaderDigest {
                    expected: 1,
                    received: 2,
                },
                true,
                None,
            ),
            (
                PduError::DataSegmentTooLong {
                    bhs,
                    length: 9000,
                    limit: 8192,
                },
                true,
                Some(reject_reason::PROTOCOL_ERROR),
            ),
            (
                PduError::DataDigest {
                    bhs,
                    expected: 1,
                    received: 2,
                },
                false,
                Some(reject_reason::DATA_DIGEST_ERROR),
            ),
            (
                PduError::InvalidAhs {
                    bhs,
                    reason: "test",
                },
                false,
                Some(reject_reason::INVALID_PDU_FIELD),
            ),
            (PduError::NotScsiCommand { opcode: 0 }, false, None),
        ];
        for (err, fatal, reason) in rows {
            assert_eq!(err.is_fatal(), fatal, "{err}");
            assert_eq!(err.reject().map(|(r, _)| r), reason, "{err}");
            if let Some((_, b)) = err.reject() {
                assert_eq!(b, bhs, "{err}");
            }
        }
    }
}
