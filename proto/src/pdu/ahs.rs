//! Additional Header Segments (RFC 7143 §11.2.2).
//!
//! Each AHS is a 3-byte header and `AHSLength` bytes of type-specific
//! content, padded to a multiple of four; TotalAHSLength in the BHS counts
//! all of them in 4-byte words.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0| AHSLength                     | AHSType       | AHS-Specific  |
//!    +---------------+---------------+---------------+---------------+
//!   4/ AHS-Specific (continued), then padding to a word boundary     /
//!    +---------------+---------------+---------------+---------------+
//!
//! Extended CDB AHS (type 1, §11.2.2.3): AHSLength = CDB length - 15
//!   0| AHSLength                     | 0x01          | Reserved      |
//!   4/ ExtendedCDB: CDB bytes 16.. , padded                          /
//!
//! Bidirectional Read Expected Data Transfer Length AHS (type 2, §11.2.2.4)
//!   0| AHSLength (0x0005)            | 0x02          | Reserved      |
//!   4| Bidirectional Read Expected Data Transfer Length              |
//! ```
//!
//! [`Pdu::decode`] only frames the AHS (it keeps the raw bytes); the
//! content is judged here, when asked for, so a malformed AHS becomes a
//! Reject with reason "Invalid PDU Field" rather than a lost connection.

use bytes::{BufMut, Bytes, BytesMut};

use super::bhs::padding;
use super::{Header, Pdu, PduError, BHS_LEN};

/// AHSType of the Extended CDB AHS (RFC 7143 §11.2.2.2).
pub const EXTENDED_CDB: u8 = 1;
/// AHSType of the Bidirectional Read Expected Data Transfer Length AHS.
pub const BIDI_READ_EXPECTED_LENGTH: u8 = 2;
/// Bits 7-6 of AHSType are reserved.
const AHS_TYPE_MASK: u8 = 0x3f;
/// Bytes of the AHS header before the type-specific content.
const AHS_HEADER_LEN: usize = 3;
/// Length of the CDB field in the SCSI Command BHS (RFC 7143 §11.3.5).
pub const BHS_CDB_LEN: usize = 16;

/// One AHS: its type and its type-specific content (`AHSLength` bytes,
/// starting with byte 3 of the AHS, without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AhsSegment<'a> {
    pub ahs_type: u8,
    pub specific: &'a [u8],
}

/// Iterator over the AHS of a PDU; see [`Pdu::ahs_segments`].
#[derive(Debug, Clone)]
pub struct AhsSegments<'a> {
    rest: &'a [u8],
    bhs: [u8; BHS_LEN],
}

impl<'a> Iterator for AhsSegments<'a> {
    type Item = Result<AhsSegment<'a>, PduError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let invalid = |reason| {
            Some(Err(PduError::InvalidAhs {
                bhs: self.bhs,
                reason,
            }))
        };
        let (len, ahs_type) = match self.rest {
            [hi, lo, ty, ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), *ty),
            _ => {
                self.rest = &[];
                return invalid("AHS header runs past TotalAHSLength");
            }
        };
        let end = AHS_HEADER_LEN + len;
        let Some(specific) = self.rest.get(AHS_HEADER_LEN..end) else {
            self.rest = &[];
            return invalid("AHSLength runs past TotalAHSLength");
        };
        // The padding of the last AHS may be cut off by a peer that does
        // not pad; accept that rather than reject an otherwise sound PDU.
        self.rest = self.rest.get(end + padding(end)..).unwrap_or_default();
        Some(Ok(AhsSegment {
            ahs_type: ahs_type & AHS_TYPE_MASK,
            specific,
        }))
    }
}

/// The wire form of one AHS with `specific` content, padded to a word.
pub fn encode_segment(ahs_type: u8, specific: &[u8], dst: &mut BytesMut) {
    let len = u16::try_from(specific.len()).unwrap_or(u16::MAX);
    let specific = specific.get(..usize::from(len)).unwrap_or(specific);
    dst.put_u16(len);
    dst.put_u8(ahs_type & AHS_TYPE_MASK);
    dst.put_slice(specific);
    dst.put_bytes(0, padding(AHS_HEADER_LEN + specific.len()));
}

/// Split a CDB for a SCSI Command PDU: the 16 bytes that go in the BHS
/// (zero-filled when the CDB is shorter) and, for a longer CDB, the
/// Extended CDB AHS that carries the rest (RFC 7143 §11.2.2.3; empty
/// otherwise).
pub fn split_cdb(cdb: &[u8]) -> ([u8; BHS_CDB_LEN], Bytes) {
    let mut head = [0u8; BHS_CDB_LEN];
    let n = cdb.len().min(BHS_CDB_LEN);
    if let (Some(dst), Some(src)) = (head.get_mut(..n), cdb.get(..n)) {
        dst.copy_from_slice(src);
    }
    let rest = cdb.get(BHS_CDB_LEN..).unwrap_or_default();
    if rest.is_empty() {
        return (head, Bytes::new());
    }
    let mut specific = Vec::with_capacity(1 + rest.len());
    specific.push(0); // Reserved byte 3.
    specific.extend_from_slice(rest);
    let mut ahs = BytesMut::new();
    encode_segment(EXTENDED_CDB, &specific, &mut ahs);
    (head, ahs.freeze())
}

/// The Bidirectional Read Expected Data Transfer Length AHS
/// (RFC 7143 §11.2.2.4) for a bidirectional SCSI Command.
pub fn bidi_read_expected_length(length: u32) -> Bytes {
    let mut specific = [0u8; 5];
    specific[1..].copy_from_slice(&length.to_be_bytes());
    let mut ahs = BytesMut::new();
    encode_segment(BIDI_READ_EXPECTED_LENGTH, &specific, &mut ahs);
    ahs.freeze()
}

impl Pdu {
    /// The AHS of this PDU one by one; an item is an error when the AHS
    /// framing is broken (and the iteration then stops).
    pub fn ahs_segments(&self) -> AhsSegments<'_> {
        AhsSegments {
            rest: &self.ahs,
            bhs: self.header.encode_bhs(self.ahs.len(), self.data.len()),
        }
    }

    fn invalid_ahs(&self, reason: &'static str) -> PduError {
        PduError::InvalidAhs {
            bhs: self.header.encode_bhs(self.ahs.len(), self.data.len()),
            reason,
        }
    }

    /// The full CDB: the 16 bytes of the BHS plus an Extended CDB AHS
    /// (type 1), if present. Error for a non-SCSI-command PDU or a bad AHS.
    pub fn cdb(&self) -> Result<Vec<u8>, PduError> {
        let Header::ScsiCommand(cmd) = &self.header else {
            return Err(PduError::NotScsiCommand {
                opcode: self.header.opcode(),
            });
        };
        let mut cdb = cmd.cdb.to_vec();
        let mut extended = false;
        for seg in self.ahs_segments() {
            let seg = seg?;
            if seg.ahs_type != EXTENDED_CDB {
                continue;
            }
            if extended {
                return Err(self.invalid_ahs("more than one Extended CDB AHS"));
            }
            extended = true;
            // Byte 3 is reserved; the CDB continues at byte 4.
            match seg.specific.split_first() {
                Some((_, rest)) if !rest.is_empty() => cdb.extend_from_slice(rest),
                _ => return Err(self.invalid_ahs("Extended CDB AHS without CDB bytes")),
            }
        }
        Ok(cdb)
    }

    /// The Bidirectional Read Expected Data Transfer Length of a SCSI
    /// Command, if it carries that AHS (RFC 7143 §11.2.2.4).
    pub fn bidi_read_expected_length(&self) -> Result<Option<u32>, PduError> {
        if !matches!(self.header, Header::ScsiCommand(_)) {
            return Err(PduError::NotScsiCommand {
                opcode: self.header.opcode(),
            });
        }
        for seg in self.ahs_segments() {
            let seg = seg?;
            if seg.ahs_type != BIDI_READ_EXPECTED_LENGTH {
                continue;
            }
            return match seg.specific {
                [_, a, b, c, d] => Ok(Some(u32::from_be_bytes([*a, *b, *c, *d]))),
                _ => Err(self.invalid_ahs("Bidirectional Read AHSLength is not 5")),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex;
    use super::super::{reject_reason, NopOut, ScsiCommand};
    use super::*;

    fn command(cdb: &[u8]) -> Pdu {
        let (head, ahs) = split_cdb(cdb);
        Pdu {
            header: Header::ScsiCommand(ScsiCommand {
                cdb: head,
                ..ScsiCommand::default()
            }),
            ahs,
            data: Bytes::new(),
        }
    }

    #[test]
    fn extended_cdb_ahs_is_byte_exact() {
        // A 32-byte CDB (variable length, opcode 0x7f): 16 in the BHS,
        // 16 in an AHS with AHSLength 17 = 32 - 15: 3 + 17 = 20 bytes, no padding.
        let cdb: Vec<u8> = (0x70u8..0x90).collect();
        let (head, ahs) = split_cdb(&cdb);
        assert_eq!(&head[..], &cdb[..16]);
        assert_eq!(
            &ahs[..],
            hex("00 11 01 00  80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f").as_slice()
        );
        assert_eq!(ahs.len() % 4, 0);
        assert_eq!(command(&cdb).cdb(), Ok(cdb));
    }

    #[test]
    fn short_cdbs_need_no_ahs() {
        let (head, ahs) = split_cdb(&[0x12, 0, 0, 0, 0x24, 0]);
        assert!(ahs.is_empty());
        assert_eq!(&head[..6], &[0x12, 0, 0, 0, 0x24, 0]);
        assert_eq!(&head[6..], &[0; 10]);
        assert_eq!(
            command(&[0x12, 0, 0, 0, 0x24, 0]).cdb().map(|c| c.len()),
            Ok(16)
        );
    }

    #[test]
    fn bidi_ahs_is_byte_exact_and_coexists_with_extended_cdb() {
        let bidi = bidi_read_expected_length(0x0102_0304);
        assert_eq!(&bidi[..], hex("00 05 02 00 01 02 03 04").as_slice());
        let cdb: Vec<u8> = (0u8..20).collect();
        let mut pdu = command(&cdb);
        let mut ahs = BytesMut::from(&bidi[..]);
        ahs.extend_from_slice(&pdu.ahs);
        pdu.ahs = ahs.freeze();
        assert_eq!(pdu.bidi_read_expected_length(), Ok(Some(0x0102_0304)));
        assert_eq!(pdu.cdb(), Ok(cdb));
    }

    #[test]
    fn unknown_ahs_types_are_skipped() {
        let mut pdu = command(&[0x28; 16]);
        pdu.ahs = Bytes::from(hex("00 01 3c 00"));
        assert_eq!(pdu.cdb(), Ok(vec![0x28; 16]));
        assert_eq!(pdu.bidi_read_expected_length(), Ok(None));
    }

    #[test]
    fn malformed_ahs_is_an_invalid_pdu_field() {
        let cases = [
            ("AHSLength past the end", "00 09 01 00 01 02 03 04"),
            ("extended CDB with no bytes", "00 01 01 00"),
            (
                "two extended CDB AHS",
                "00 02 01 00 aa 00 00 00 00 02 01 00 bb 00 00 00",
            ),
        ];
        for (name, ahs) in cases {
            let mut pdu = command(&[0x28; 16]);
            pdu.ahs = Bytes::from(hex(ahs));
            let err = pdu.cdb().err();
            assert!(
                matches!(err, Some(PduError::InvalidAhs { .. })),
                "{name}: {err:?}"
            );
            let reject = err.and_then(|e| e.reject());
            assert_eq!(
                reject.map(|r| r.0),
                Some(reject_reason::INVALID_PDU_FIELD),
                "{name}"
            );
            assert_eq!(reject.map(|r| r.1[0] & 0x3f), Some(0x01), "{name}");
        }
        let mut pdu = command(&[0x28; 16]);
        pdu.ahs = Bytes::from(hex("00 04 02 00 00 00 00 00"));
        assert!(matches!(
            pdu.bidi_read_expected_length(),
            Err(PduError::InvalidAhs { .. })
        ));
    }

    #[test]
    fn cdb_of_another_pdu_is_an_error() {
        let pdu = Pdu {
            header: Header::NopOut(NopOut::default()),
            ahs: Bytes::new(),
            data: Bytes::new(),
        };
        assert_eq!(pdu.cdb(), Err(PduError::NotScsiCommand { opcode: 0 }));
    }

    #[test]
    fn segments_iterate_in_order_and_stop_at_a_broken_one() {
        let pdu = Pdu {
            ahs: Bytes::from(hex("00 01 05 aa 00 02 06 bb cc 00 00 00 00 ff")),
            ..command(&[0; 16])
        };
        let segs: Vec<_> = pdu.ahs_segments().collect();
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs[0],
            Ok(AhsSegment {
                ahs_type: 5,
                specific: &[0xaa]
            })
        );
        assert_eq!(
            segs[1],
            Ok(AhsSegment {
                ahs_type: 6,
                specific: &[0xbb, 0xcc]
            })
        );
        assert!(segs[2].is_err());
    }
}
