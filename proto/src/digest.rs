//! CRC32C digests as iSCSI carries them (RFC 7143 §13.1, HeaderDigest and
//! DataDigest).
//!
//! The algorithm is CRC-32C (Castagnoli, generator 0x11EDC6F41, reflected,
//! initial value and final XOR 0xFFFFFFFF). What needs care is the byte order
//! on the wire: the 32-bit value goes out least significant byte first. That
//! is what RFC 3720 Appendix B.4 shows (32 zero bytes give the wire bytes
//! `aa 36 91 8a`, the CRC value 0x8A9136AA), and what the implementations we
//! interoperate with do: libiscsi (`iscsi_pdu_update_headerdigest` in
//! `lib/socket.c` stores `crc` then `crc >> 8`, `>> 16`, `>> 24`), and the
//! Linux kernel's crc32c shash that open-iscsi and LIO use (`chksum_final`
//! writes `put_unaligned_le32(~crc)`).
//!
//! ```text
//! wire byte:   k      k+1     k+2     k+3
//!            crc&ff  crc>>8  crc>>16  crc>>24
//! ```

use bytes::BufMut;

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC-32C of `data` (RFC 7143 §13.1).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC-32C: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`. Lets
/// a digest cover a segment and its padding without copying them together.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The four wire bytes of a digest value (least significant byte first).
pub fn to_wire(crc: u32) -> [u8; DIGEST_LEN] {
    crc.to_le_bytes()
}

/// The digest value carried by four wire bytes.
pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// Append the wire form of `crc` to `dst`.
pub fn put_digest<B: BufMut>(dst: &mut B, crc: u32) {
    dst.put_slice(&to_wire(crc));
}

/// A received digest that does not match the bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestMismatch {
    /// The CRC-32C we computed over the covered bytes.
    pub expected: u32,
    /// The value the peer sent (`0` when fewer than four digest bytes were given).
    pub received: u32,
}

/// Check the digest in `wire` (four bytes as received) against `crc`, the
/// CRC-32C we computed over the covered bytes.
pub fn verify(crc: u32, wire: &[u8]) -> Result<(), DigestMismatch> {
    let received = match <[u8; DIGEST_LEN]>::try_from(wire) {
        Ok(bytes) => from_wire(bytes),
        Err(_) => {
            return Err(DigestMismatch {
                expected: crc,
                received: 0,
            })
        }
    };
    if received == crc {
        Ok(())
    } else {
        Err(DigestMismatch {
            expected: crc,
            received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 Appendix B.4 "CRC Examples": input and the CRC bytes exactly
    /// as the RFC prints them, which are the wire bytes.
    fn rfc3720_b4() -> Vec<(&'static str, Vec<u8>, [u8; 4])> {
        let read10_pdu: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, //
            0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, //
            0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        ];
        vec![
            (
                "32 bytes of zeroes",
                vec![0x00; 32],
                [0xaa, 0x36, 0x91, 0x8a],
            ),
            ("32 bytes of ones", vec![0xff; 32], [0x43, 0xab, 0xa8, 0x62]),
            (
                "32 bytes of incrementing 00..1f",
                (0u8..32).collect(),
                [0x4e, 0x79, 0xdd, 0x46],
            ),
            (
                "32 bytes of decrementing 1f..00",
                (0u8..32).rev().collect(),
                [0x5c, 0xdb, 0x3f, 0x11],
            ),
            (
                "an iSCSI SCSI Read (10) command PDU",
                read10_pdu.to_vec(),
                [0x56, 0x3a, 0x96, 0xd9],
            ),
        ]
    }

    #[test]
    fn rfc3720_appendix_b4_vectors_match_on_the_wire() {
        for (name, input, wire) in rfc3720_b4() {
            assert_eq!(to_wire(crc32c(&input)), wire, "{name}");
            assert_eq!(verify(crc32c(&input), &wire), Ok(()), "{name}");
        }
    }

    #[test]
    fn wire_order_is_least_significant_byte_first() {
        // RFC 3720 B.4: 32 zero bytes, CRC value 0x8A9136AA, wire aa 36 91 8a.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(from_wire([0xaa, 0x36, 0x91, 0x8a]), 0x8A91_36AA);
        let mut out = Vec::new();
        put_digest(&mut out, 0x8A91_36AA);
        assert_eq!(out, [0xaa, 0x36, 0x91, 0x8a]);
    }

    #[test]
    fn check_value_of_the_crc_catalogue() {
        // CRC-32/ISCSI check value over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn append_continues_a_digest() {
        let all: Vec<u8> = (0u8..=200).collect();
        let (a, b) = all.split_at(77);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&all));
    }

    #[test]
    fn verify_reports_both_values() {
        let crc = crc32c(b"abc");
        let mut wire = to_wire(crc);
        wire[0] ^= 1;
        assert_eq!(
            verify(crc, &wire),
            Err(DigestMismatch {
                expected: crc,
                received: crc ^ 1
            })
        );
        assert_eq!(
            verify(crc, &wire[..3]),
            Err(DigestMismatch {
                expected: crc,
                received: 0
            })
        );
    }
}
