//! The data segment of a SCSI Response that carries sense data
//! (RFC 7143 §11.4.7): a 2-byte SenseLength, the sense data, and then
//! optional iSCSI response data that we neither send nor need.
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0| SenseLength                   | Sense Data                    |
//!    +---------------+---------------+---------------+---------------+
//!   x/ Sense Data (continued)                                        /
//!    +---------------+---------------+---------------+---------------+
//!   y/ Response Data (optional)                                      /
//!    +---------------+---------------+---------------+---------------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::ScsiResponse;

/// Sense data in a SCSI Response's data segment: 2-byte SenseLength then
/// the sense bytes (RFC 7143 §11.4.7). Sense longer than SenseLength can
/// say (65535 bytes) is cut there; real sense data is at most 252 bytes
/// (SPC-4 §4.5.1).
pub fn sense_segment(sense: &[u8]) -> Bytes {
    let len = u16::try_from(sense.len()).unwrap_or(u16::MAX);
    let sense = sense.get(..usize::from(len)).unwrap_or(sense);
    let mut out = BytesMut::with_capacity(2 + sense.len());
    out.put_u16(len);
    out.put_slice(sense);
    out.freeze()
}

/// The sense bytes of a SCSI Response's data segment, or `None` when there
/// is no segment or SenseLength claims more bytes than it holds. Any
/// response data after the sense is ignored.
pub fn parse_sense_segment(data: &[u8]) -> Option<&[u8]> {
    let (len, rest) = match data {
        [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
        _ => return None,
    };
    rest.get(..len)
}

impl ScsiResponse {
    /// The data segment for a SCSI Response carrying `sense`; see
    /// [`sense_segment`].
    pub fn sense_segment(sense: &[u8]) -> Bytes {
        sense_segment(sense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_is_length_then_sense() {
        // Fixed-format sense, ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
        let sense = [
            0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0,
        ];
        let seg = sense_segment(&sense);
        assert_eq!(&seg[..2], &[0x00, 0x12]);
        assert_eq!(&seg[2..], &sense);
        assert_eq!(parse_sense_segment(&seg), Some(&sense[..]));
        assert_eq!(ScsiResponse::sense_segment(&sense), seg);
    }

    #[test]
    fn parse_ignores_trailing_response_data() {
        assert_eq!(
            parse_sense_segment(&[0, 2, 0x70, 0x00, 9, 9]),
            Some(&[0x70, 0][..])
        );
    }

    #[test]
    fn parse_refuses_short_segments() {
        assert_eq!(parse_sense_segment(&[]), None);
        assert_eq!(parse_sense_segment(&[0]), None);
        assert_eq!(parse_sense_segment(&[0, 3, 1, 2]), None);
        assert_eq!(parse_sense_segment(&[0, 0]), Some(&[][..]));
    }
}
