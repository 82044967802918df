//! Field access shared by every Basic Header Segment (RFC 7143 §11.2.1).
//!
//! ```text
//! Byte/     0       |       1       |       2       |       3       |
//!    +---------------+---------------+---------------+---------------+
//!   0|.|I| Opcode    |F|  Opcode-specific fields                     |
//!    +---------------+---------------+---------------+---------------+
//!   4|TotalAHSLength | DataSegmentLength                             |
//!    +---------------+---------------+---------------+---------------+
//!   8| LUN or Opcode-specific fields                                 |
//!    +                                                               +
//!  12|                                                               |
//!    +---------------+---------------+---------------+---------------+
//!  16| Initiator Task Tag                                            |
//!    +---------------+---------------+---------------+---------------+
//!  20/ Opcode-specific fields                                        /
//!  +/                                                               /
//!    +---------------+---------------+---------------+---------------+
//!  48
//! ```
//!
//! All multi-byte fields are big endian. The accessors take constant
//! offsets into a fixed 48-byte array and go through `get`, so a wrong
//! offset could only yield zeros, never a panic.

use super::BHS_LEN;

/// Byte 0: the Immediate bit, requests only (RFC 7143 §11.2.1.1).
pub(crate) const IMMEDIATE: u8 = 0x40;
/// Byte 0: the opcode proper; bit 7 is reserved.
pub(crate) const OPCODE_MASK: u8 = 0x3f;
/// Byte 1: the Final bit (RFC 7143 §11.2.1.3).
pub(crate) const FINAL: u8 = 0x80;

/// Offset of TotalAHSLength (in 4-byte words).
pub(crate) const TOTAL_AHS_LENGTH: usize = 4;
/// Offset of the 24-bit DataSegmentLength.
pub(crate) const DATA_SEGMENT_LENGTH: usize = 5;
/// Offset of the Initiator Task Tag, the same in every PDU.
pub(crate) const ITT: usize = 16;

/// The largest DataSegmentLength the 24-bit field can carry.
pub const MAX_DATA_SEGMENT_LENGTH: usize = 0x00ff_ffff;
/// The most AHS bytes TotalAHSLength (one byte, in words) can describe.
pub const MAX_AHS_LEN: usize = 255 * 4;

fn get<const N: usize>(b: &[u8; BHS_LEN], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

fn put<const N: usize>(b: &mut [u8; BHS_LEN], off: usize, v: [u8; N]) {
    if let Some(dst) = b.get_mut(off..off + N) {
        dst.copy_from_slice(&v);
    }
}

pub(crate) fn u8_at(b: &[u8; BHS_LEN], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

pub(crate) fn u16_at(b: &[u8; BHS_LEN], off: usize) -> u16 {
    u16::from_be_bytes(get(b, off))
}

pub(crate) fn u32_at(b: &[u8; BHS_LEN], off: usize) -> u32 {
    u32::from_be_bytes(get(b, off))
}

pub(crate) fn u64_at(b: &[u8; BHS_LEN], off: usize) -> u64 {
    u64::from_be_bytes(get(b, off))
}

pub(crate) fn bytes_at<const N: usize>(b: &[u8; BHS_LEN], off: usize) -> [u8; N] {
    get(b, off)
}

pub(crate) fn set_u8(b: &mut [u8; BHS_LEN], off: usize, v: u8) {
    if let Some(dst) = b.get_mut(off) {
        *dst = v;
    }
}

pub(crate) fn set_u16(b: &mut [u8; BHS_LEN], off: usize, v: u16) {
    put(b, off, v.to_be_bytes());
}

pub(crate) fn set_u32(b: &mut [u8; BHS_LEN], off: usize, v: u32) {
    put(b, off, v.to_be_bytes());
}

pub(crate) fn set_u64(b: &mut [u8; BHS_LEN], off: usize, v: u64) {
    put(b, off, v.to_be_bytes());
}

pub(crate) fn set_bytes<const N: usize>(b: &mut [u8; BHS_LEN], off: usize, v: [u8; N]) {
    put(b, off, v);
}

/// Byte 0 of a request: opcode plus the I bit.
pub(crate) fn request_byte0(opcode: u8, immediate: bool) -> u8 {
    (opcode & OPCODE_MASK) | if immediate { IMMEDIATE } else { 0 }
}

/// Whether `flag` is set in byte `off`.
pub(crate) fn flag(b: &[u8; BHS_LEN], off: usize, flag: u8) -> bool {
    u8_at(b, off) & flag != 0
}

/// `flag` if `on`, else 0: for assembling flag bytes.
pub(crate) fn bit(on: bool, flag: u8) -> u8 {
    if on {
        flag
    } else {
        0
    }
}

/// The AHS length in bytes that byte 4 declares.
pub(crate) fn total_ahs_len(b: &[u8; BHS_LEN]) -> usize {
    usize::from(u8_at(b, TOTAL_AHS_LENGTH)) * 4
}

/// The data segment length (without padding) that bytes 5-7 declare.
pub(crate) fn data_segment_len(b: &[u8; BHS_LEN]) -> usize {
    let [hi, mid, lo] = get::<3>(b, DATA_SEGMENT_LENGTH);
    (usize::from(hi) << 16) | (usize::from(mid) << 8) | usize::from(lo)
}

/// Write TotalAHSLength and DataSegmentLength. `ahs_len` is in bytes and is
/// rounded up to whole words; both are clamped to what the fields can carry.
pub(crate) fn set_lengths(b: &mut [u8; BHS_LEN], ahs_len: usize, data_len: usize) {
    let words = ahs_len.div_ceil(4).min(255);
    set_u8(b, TOTAL_AHS_LENGTH, u8::try_from(words).unwrap_or(u8::MAX));
    let data_len = u32::try_from(data_len.min(MAX_DATA_SEGMENT_LENGTH)).unwrap_or(0);
    let [_, hi, mid, lo] = data_len.to_be_bytes();
    put(b, DATA_SEGMENT_LENGTH, [hi, mid, lo]);
}

/// Bytes needed to pad `len` to a multiple of four (RFC 7143 §11.2.3).
pub(crate) fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_where_rfc7143_11_2_1_puts_them() {
        let mut b = [0u8; BHS_LEN];
        set_lengths(&mut b, 8, 0x01_0203);
        assert_eq!(&b[4..8], &[2, 0x01, 0x02, 0x03]);
        assert_eq!(total_ahs_len(&b), 8);
        assert_eq!(data_segment_len(&b), 0x01_0203);
    }

    #[test]
    fn lengths_round_ahs_up_and_clamp() {
        let mut b = [0u8; BHS_LEN];
        set_lengths(&mut b, 5, MAX_DATA_SEGMENT_LENGTH + 10);
        assert_eq!(&b[4..8], &[2, 0xff, 0xff, 0xff]);
        set_lengths(&mut b, 4096, 0);
        assert_eq!(&b[4..8], &[255, 0, 0, 0]);
    }

    #[test]
    fn fields_are_big_endian() {
        let mut b = [0u8; BHS_LEN];
        set_u16(&mut b, 20, 0x0102);
        set_u32(&mut b, 24, 0x0304_0506);
        set_u64(&mut b, 8, 0x0708_090a_0b0c_0d0e);
        assert_eq!(&b[20..22], &[1, 2]);
        assert_eq!(&b[24..28], &[3, 4, 5, 6]);
        assert_eq!(&b[8..16], &[7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(u16_at(&b, 20), 0x0102);
        assert_eq!(u32_at(&b, 24), 0x0304_0506);
        assert_eq!(u64_at(&b, 8), 0x0708_090a_0b0c_0d0e);
    }

    #[test]
    fn out_of_range_offsets_read_zero_and_write_nothing() {
        let mut b = [0xffu8; BHS_LEN];
        assert_eq!(u32_at(&b, 46), 0);
        set_u32(&mut b, 46, 0);
        assert_eq!(b, [0xff; BHS_LEN]);
    }

    #[test]
    fn padding_to_four() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(padding), [0, 3, 2, 1, 0, 3]);
    }
}
