//! Framing of whole PDUs on a byte stream (RFC 7143 §11.2): lengths,
//! padding and digests.
//!
//! ```text
//! offset                         what                      present when
//! 0                              BHS (48)                  always
//! 48                             AHS (TotalAHSLength * 4)  TotalAHSLength > 0
//! 48 + A                         HeaderDigest (4)          cfg.header_digest
//! 48 + A + H                     DataSegment               DataSegmentLength > 0
//!                                padding to 4 (zeros)      length % 4 != 0
//! 48 + A + H + pad4(D)           DataDigest (4)            cfg.data_digest and D > 0
//! ```
//!
//! The header digest covers BHS and AHS; the data digest covers the data
//! segment and its padding (RFC 7143 §13.1: "Padding bytes ... are
//! included in the CRC"). A PDU without data carries no data digest, as
//! libiscsi, open-iscsi and LIO all do.
//!
//! Decoding follows docs/architecture.md, convention 2: [`check`] finds out from the buffered
//! bytes alone whether a whole PDU is there (refusing an oversized data
//! segment as soon as the header is known, before waiting for it), and
//! only then is the PDU split off and parsed.

use bytes::{BufMut, Bytes, BytesMut};

use super::bhs::{self, padding};
use super::{Header, Pdu, PduError, BHS_LEN};
use crate::digest::{self, DIGEST_LEN};

/// Per-connection framing parameters (digests and the receive limit we declared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireConfig {
    /// HeaderDigest=CRC32C was negotiated (RFC 7143 §13.1).
    pub header_digest: bool,
    /// DataDigest=CRC32C was negotiated (RFC 7143 §13.1).
    pub data_digest: bool,
    /// The MaxRecvDataSegmentLength we declared to the peer (RFC 7143 §13.12).
    pub max_recv_data_segment_length: u32,
}

/// MaxRecvDataSegmentLength in force until negotiated, and during login
/// (RFC 7143 §13.12: default 8192).
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

impl Default for WireConfig {
    /// No digests and 8192 bytes, as at the start of every login
    /// (RFC 7143 §13.1, §13.12).
    fn default() -> Self {
        WireConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
        }
    }
}

impl WireConfig {
    fn header_digest_len(&self) -> usize {
        if self.header_digest {
            DIGEST_LEN
        } else {
            0
        }
    }

    fn data_digest_len(&self, data_len: usize) -> usize {
        if self.data_digest && data_len > 0 {
            DIGEST_LEN
        } else {
            0
        }
    }
}

/// Where the parts of one buffered PDU lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    bhs: [u8; BHS_LEN],
    ahs_len: usize,
    /// Offset of the data segment (after the header digest).
    data_start: usize,
    data_len: usize,
    /// The whole PDU, digests and padding included.
    total: usize,
}

/// What the buffered bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Not a whole PDU yet; `needed` is the PDU's full length once the
    /// header has been read and accepted.
    Incomplete { needed: Option<usize> },
    /// A whole PDU.
    Complete(Layout),
}

/// Step 1: is a whole PDU buffered? Verifies the header digest and the
/// data segment limit as soon as the header is in, so neither a corrupt nor
/// an oversized length ever makes us wait for (or reserve room for) data.
fn check(src: &[u8], cfg: &WireConfig) -> Result<Check, PduError> {
    let Some(bhs) = src
        .get(..BHS_LEN)
        .and_then(|b| <[u8; BHS_LEN]>::try_from(b).ok())
    else {
        return Ok(Check::Incomplete { needed: None });
    };
    let ahs_len = bhs::total_ahs_len(&bhs);
    let header_len = BHS_LEN + ahs_len;
    let data_start = header_len + cfg.header_digest_len();
    if src.len() < data_start {
        return Ok(Check::Incomplete { needed: None });
    }
    if cfg.header_digest {
        let covered = src.get(..header_len).unwrap_or_default();
        let wire = src.get(header_len..data_start).unwrap_or_default();
        digest::verify(digest::crc32c(covered), wire).map_err(|m| PduError::HeaderDigest {
            expected: m.expected,
            received: m.received,
        })?;
    }
    let data_len = bhs::data_segment_len(&bhs);
    if data_len > cfg.max_recv_data_segment_length as usize {
        return Err(PduError::DataSegmentTooLong {
            bhs,
            length: u32::try_from(data_len).unwrap_or(u32::MAX),
            limit: cfg.max_recv_data_segment_length,
        });
    }
    let total = data_start + data_len + padding(data_len) + cfg.data_digest_len(data_len);
    if src.len() < total {
        return Ok(Check::Incomplete {
            needed: Some(total),
        });
    }
    Ok(Check::Complete(Layout {
        bhs,
        ahs_len,
        data_start,
        data_len,
        total,
    }))
}

impl Pdu {
    /// If `src` holds a whole PDU, remove it from `src` and return it;
    /// `Ok(None)` if more bytes are needed.
    ///
    /// Two steps (docs/architecture.md, convention 2): check that the whole PDU is buffered,
    /// then parse. A DataSegmentLength above
    /// `cfg.max_recv_data_segment_length` is refused as soon as the header
    /// is in, before waiting for the data; the decoder reserves room for at
    /// most one PDU within that limit and otherwise copies nothing (the AHS
    /// and data are slices of `src`'s buffer).
    ///
    /// On a data digest error the whole PDU has been removed from `src`, so
    /// the connection can answer with a Reject and go on with the next PDU.
    /// On the fatal errors (see [`PduError::is_fatal`]) `src` is left as it
    /// was.
    pub fn decode(src: &mut BytesMut, cfg: &WireConfig) -> Result<Option<Pdu>, PduError> {
        let layout = match check(src, cfg)? {
            Check::Incomplete { needed } => {
                if let Some(needed) = needed {
                    // The header passed the limit check, so this reserves at
                    // most one PDU of the size we declared we accept.
                    src.reserve(needed.saturating_sub(src.len()));
                }
                return Ok(None);
            }
            Check::Complete(layout) => layout,
        };
        let frame = src.split_to(layout.total).freeze();
        let data_end = layout.data_start + layout.data_len;
        if cfg.data_digest && layout.data_len > 0 {
            let padded_end = data_end + padding(layout.data_len);
            let covered = frame.get(layout.data_start..padded_end).unwrap_or_default();
            let wire = frame.get(padded_end..layout.total).unwrap_or_default();
            digest::verify(digest::crc32c(covered), wire).map_err(|m| PduError::DataDigest {
                bhs: layout.bhs,
                expected: m.expected,
                received: m.received,
            })?;
        }
        let header = Header::decode_bhs(&layout.bhs)?;
        Ok(Some(Pdu {
            header,
            ahs: frame.slice(BHS_LEN..BHS_LEN + layout.ahs_len),
            data: frame.slice(layout.data_start..data_end),
        }))
    }

    /// Append the wire form (with padding and digests per `cfg`) to `dst`.
    ///
    /// An AHS whose length is not a multiple of four is padded with zeros
    /// (TotalAHSLength counts words, RFC 7143 §11.2.1.4). Lengths beyond
    /// what the BHS fields can carry ([`super::MAX_AHS_LEN`],
    /// [`super::MAX_DATA_SEGMENT_LENGTH`]) are a bug in the caller; they
    /// are cut to the maximum so the stream stays framed.
    pub fn encode(&self, cfg: &WireConfig, dst: &mut BytesMut) {
        let data = self.wire_data();
        dst.reserve(self.wire_len(cfg));
        self.encode_head(cfg, dst);
        dst.put_slice(data);
        self.encode_tail(cfg, dst);
    }

    /// Bytes of the wire form per `cfg`; what [`Pdu::encode`] appends.
    pub fn wire_len(&self, cfg: &WireConfig) -> usize {
        let ahs = self.ahs.len().min(super::MAX_AHS_LEN);
        let data = self.wire_data().len();
        BHS_LEN
            + ahs
            + padding(ahs)
            + cfg.header_digest_len()
            + data
            + padding(data)
            + cfg.data_digest_len(data)
    }

    /// The data segment as sent: [`Pdu::encode_head`], then these bytes,
    /// then [`Pdu::encode_tail`] is the wire form, for writers that hand
    /// the data segment to the socket without copying it.
    pub fn data_segment(&self) -> Bytes {
        self.data.slice(..self.wire_data().len())
    }

    /// Appends what precedes the data segment: BHS, AHS and its padding,
    /// header digest.
    pub fn encode_head(&self, cfg: &WireConfig, dst: &mut BytesMut) {
        let ahs = self.ahs.get(..super::MAX_AHS_LEN).unwrap_or(&self.ahs);
        let ahs_pad = padding(ahs.len());
        let bhs = self.header.encode_bhs(ahs.len(), self.wire_data().len());
        dst.put_slice(&bhs);
        dst.put_slice(ahs);
        dst.put_bytes(0, ahs_pad);
        if cfg.header_digest {
            let crc = digest::crc32c_append(digest::crc32c(&bhs), ahs);
            let crc = digest::crc32c_append(crc, &[0u8; 3][..ahs_pad]);
            digest::put_digest(dst, crc);
        }
    }

    /// Appends what follows the data segment: its padding and digest.
    pub fn encode_tail(&self, cfg: &WireConfig, dst: &mut BytesMut) {
        let data = self.wire_data();
        let data_pad = padding(data.len());
        dst.put_bytes(0, data_pad);
        if cfg.data_digest && !data.is_empty() {
            let crc = digest::crc32c_append(digest::crc32c(data), &[0u8; 3][..data_pad]);
            digest::put_digest(dst, crc);
        }
    }

    /// The data segment, cut to what the BHS can describe.
    fn wire_data(&self) -> &[u8] {
        self.data
            .get(..super::MAX_DATA_SEGMENT_LENGTH)
            .unwrap_or(&self.data)
    }

    /// The wire form as a fresh buffer; see [`Pdu::encode`].
    pub fn to_bytes(&self, cfg: &WireConfig) -> BytesMut {
        let mut dst = BytesMut::new();
        self.encode(cfg, &mut dst);
        dst
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_util::hex;
    use super::super::{NopIn, NopOut, ScsiCommand};
    use super::*;

    const DIGESTS: WireConfig = WireConfig {
        header_digest: true,
        data_digest: true,
        max_recv_data_segment_length: 8192,
    };

    fn ping(data: &'static [u8]) -> Pdu {
        Pdu {
            header: Header::NopOut(NopOut {
                immediate: true,
                lun: 0,
                itt: 1,
                ttt: 0xffff_ffff,
                cmd_sn: 2,
                exp_stat_sn: 3,
            }),
            ahs: Bytes::new(),
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn head_data_tail_is_the_wire_form() {
        for cfg in [WireConfig::default(), DIGESTS] {
            for data in [&b""[..], b"x", b"seven!!", b"eight!!!"] {
                let pdu = Pdu {
                    ahs: Bytes::from_static(b"ahs"),
                    ..ping(data)
                };
                let mut parts = BytesMut::new();
                pdu.encode_head(&cfg, &mut parts);
                parts.extend_from_slice(&pdu.data_segment());
                pdu.encode_tail(&cfg, &mut parts);
                assert_eq!(parts, pdu.to_bytes(&cfg), "{cfg:?} {data:?}");
                assert_eq!(parts.len(), pdu.wire_len(&cfg));
            }
        }
    }

    #[test]
    fn default_is_the_login_time_configuration() {
        let cfg = WireConfig::default();
        assert!(!cfg.header_digest && !cfg.data_digest);
        assert_eq!(cfg.max_recv_data_segment_length, 8192);
    }

    #[test]
    fn data_is_padded_with_zeros_to_four_bytes() {
        let wire = ping(b"abcde").to_bytes(&WireConfig::default());
        assert_eq!(wire.len(), 48 + 8);
        assert_eq!(&wire[4..8], &[0, 0, 0, 5]);
        assert_eq!(&wire[48..], b"abcde\0\0\0");
    }

    /// RFC 3720 Appendix B.4's SCSI Read (10) command PDU, sent with a
    /// header digest: the digest bytes are exactly the RFC's `56 3a 96 d9`.
    #[test]
    fn header_digest_of_the_rfc3720_read10_example() {
        let bhs = hex("01 c0 00 00 00 00 00 00  00 00 00 00 00 00 00 00
             14 00 00 00 00 00 04 00  00 00 00 14 00 00 00 18
             28 00 00 00 00 00 00 00  02 00 00 00 00 00 00 00");
        let mut cdb = [0u8; 16];
        cdb[0] = 0x28;
        cdb[8] = 0x02;
        let pdu = Pdu {
            header: Header::ScsiCommand(ScsiCommand {
                immediate: false,
                final_: true,
                read: true,
                write: false,
                attr: 0,
                lun: 0,
                itt: 0x1400_0000,
                expected_data_transfer_length: 0x400,
                cmd_sn: 0x14,
                exp_stat_sn: 0x18,
                cdb,
            }),
            ahs: Bytes::new(),
            data: Bytes::new(),
        };
        let cfg = WireConfig {
            header_digest: true,
            ..WireConfig::default()
        };
        let wire = pdu.to_bytes(&cfg);
        assert_eq!(&wire[..48], bhs.as_slice());
        assert_eq!(&wire[48..], &[0x56, 0x3a, 0x96, 0xd9]);
        let mut src = wire.clone();
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(pdu)));
        assert!(src.is_empty());
    }

    #[test]
    fn digests_are_placed_and_cover_what_rfc7143_says() {
        let pdu = Pdu {
            ahs: Bytes::from_static(&[0, 5, 2, 0, 0, 0, 1, 0]),
            ..ping(b"xyz")
        };
        let wire = pdu.to_bytes(&DIGESTS);
        assert_eq!(wire.len(), 48 + 8 + 4 + 4 + 4);
        let hd = digest::to_wire(digest::crc32c(&wire[..56]));
        assert_eq!(&wire[56..60], &hd);
        assert_eq!(&wire[60..64], b"xyz\0");
        let dd = digest::to_wire(digest::crc32c(b"xyz\0"));
        assert_eq!(&wire[64..68], &dd);
    }

    #[test]
    fn no_data_digest_without_data() {
        let wire = ping(b"").to_bytes(&DIGESTS);
        assert_eq!(wire.len(), 48 + 4);
    }

    #[test]
    fn decode_waits_for_every_part() {
        let pdu = Pdu {
            ahs: Bytes::from_static(&[0, 1, 0x3f, 0]),
            ..ping(b"hello")
        };
        for cfg in [WireConfig::default(), DIGESTS] {
            let wire = pdu.to_bytes(&cfg);
            for cut in 0..wire.len() {
                let mut src = BytesMut::from(&wire[..cut]);
                assert_eq!(Pdu::decode(&mut src, &cfg), Ok(None), "cut {cut}");
                assert_eq!(src.len(), cut);
            }
        }
    }

    #[test]
    fn decode_takes_one_pdu_and_leaves_the_next() {
        let cfg = DIGESTS;
        let mut src = ping(b"one").to_bytes(&cfg);
        ping(b"second").encode(&cfg, &mut src);
        src.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(ping(b"one"))));
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(ping(b"second"))));
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(None));
        assert_eq!(&src[..], &[1, 2, 3]);
    }

    #[test]
    fn oversized_data_segment_is_refused_from_the_header_alone() {
        let cfg = WireConfig {
            max_recv_data_segment_length: 16,
            ..WireConfig::default()
        };
        let mut bhs = Header::NopOut(NopOut::default()).encode_bhs(0, 17);
        bhs[16] = 0x77;
        let mut src = BytesMut::from(&bhs[..]);
        let err = Pdu::decode(&mut src, &cfg);
        assert_eq!(
            err,
            Err(PduError::DataSegmentTooLong {
                bhs,
                length: 17,
                limit: 16
            })
        );
        assert!(err.as_ref().err().is_some_and(PduError::is_fatal));
        // Nothing was reserved for the refused data.
        assert!(src.capacity() < 48 + 17);
    }

    #[test]
    fn the_largest_allowed_segment_is_accepted() {
        let cfg = WireConfig {
            max_recv_data_segment_length: 16,
            ..WireConfig::default()
        };
        let pdu = ping(b"0123456789abcdef");
        let mut src = pdu.to_bytes(&cfg);
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(pdu)));
    }

    #[test]
    fn header_digest_error_is_fatal_and_leaves_src() {
        let mut src = ping(b"data").to_bytes(&DIGESTS);
        src[20] ^= 0x01;
        let before = src.clone();
        let err = Pdu::decode(&mut src, &DIGESTS);
        assert!(matches!(err, Err(PduError::HeaderDigest { .. })));
        assert!(err.as_ref().err().is_some_and(PduError::is_fatal));
        assert_eq!(err.err().and_then(|e| e.reject()), None);
        assert_eq!(src, before);
    }

    #[test]
    fn header_digest_is_checked_before_the_length_limit() {
        // A corrupted DataSegmentLength must read as a digest error, not as
        // an oversized segment.
        let mut src = ping(b"data").to_bytes(&DIGESTS);
        src[5] = 0xff;
        assert!(matches!(
            Pdu::decode(&mut src, &DIGESTS),
            Err(PduError::HeaderDigest { .. })
        ));
    }

    #[test]
    fn data_digest_error_consumes_the_pdu_and_the_next_one_decodes() {
        let cfg = DIGESTS;
        let bad = ping(b"corrupt me");
        let mut src = bad.to_bytes(&cfg);
        let bhs: [u8; 48] = src[..48].try_into().expect("48 bytes");
        src[48 + 4 + 2] ^= 0x10;
        ping(b"next").encode(&cfg, &mut src);
        let err = Pdu::decode(&mut src, &cfg).expect_err("digest mismatch");
        assert!(matches!(err, PduError::DataDigest { .. }));
        assert!(!err.is_fatal());
        assert_eq!(
            err.reject(),
            Some((super::super::reject_reason::DATA_DIGEST_ERROR, bhs))
        );
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(ping(b"next"))));
        assert!(src.is_empty());
    }

    #[test]
    fn a_bad_padding_byte_is_a_data_digest_error() {
        // Padding is covered by the data digest (RFC 7143 §13.1).
        let mut src = ping(b"abc").to_bytes(&DIGESTS);
        src[48 + 4 + 3] = 0xee;
        assert!(matches!(
            Pdu::decode(&mut src, &DIGESTS),
            Err(PduError::DataDigest { .. })
        ));
        assert!(src.is_empty());
    }

    #[test]
    fn padding_is_ignored_without_digests() {
        let mut src = ping(b"abc").to_bytes(&WireConfig::default());
        src[48 + 3] = 0xee;
        assert_eq!(
            Pdu::decode(&mut src, &WireConfig::default()),
            Ok(Some(ping(b"abc")))
        );
    }

    #[test]
    fn decode_reserves_room_for_an_accepted_pdu_only() {
        let cfg = WireConfig::default();
        let pdu = Pdu {
            header: Header::NopIn(NopIn::default()),
            ahs: Bytes::new(),
            data: Bytes::from(vec![7u8; 4000]),
        };
        let wire = pdu.to_bytes(&cfg);
        let mut src = BytesMut::with_capacity(64);
        src.extend_from_slice(&wire[..60]);
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(None));
        assert!(src.capacity() >= wire.len());
        src.extend_from_slice(&wire[60..]);
        assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(pdu)));
    }

    #[test]
    fn unpadded_ahs_is_padded_on_encode() {
        let pdu = Pdu {
            ahs: Bytes::from_static(&[0, 2, 0x3f]),
            ..ping(b"")
        };
        let wire = pdu.to_bytes(&WireConfig::default());
        assert_eq!(wire[4], 1);
        assert_eq!(&wire[48..52], &[0, 2, 0x3f, 0]);
    }
}
