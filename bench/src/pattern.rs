//! The data `busrig bench --verify` writes, and the check of what it reads.
//!
//! Every 512-byte sector of a written buffer says where it belongs and
//! which write put it there, then carries bytes derived from both:
//!
//! ```text
//! 0        8        16                                512
//! | offset | stamp  | xorshift64(offset, stamp) ...   |
//! ```
//!
//! `offset` is the sector's byte address on the LUN (little-endian), so a
//! write that lands in the wrong place, a torn write, or a stale sector
//! from an older write are each seen, and the first bad byte is named.
//! The granularity is 512 bytes whatever the LUN's block length, since
//! both 512 and 4096 are multiples of it.

/// Bytes per self-describing chunk.
pub const SECTOR: usize = 512;

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn seed(offset: u64, stamp: u64) -> u64 {
    // Never zero: xorshift would stay at zero.
    (offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stamp.rotate_left(29)) | 1
}

fn fill_sector(out: &mut [u8], offset: u64, stamp: u64) {
    out[..8].copy_from_slice(&offset.to_le_bytes());
    out[8..16].copy_from_slice(&stamp.to_le_bytes());
    let mut x = seed(offset, stamp);
    for chunk in out[16..].chunks_mut(8) {
        x = xorshift(x);
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// The buffer a verified write of `len` bytes at byte `offset` carries.
pub fn fill(len: usize, offset: u64, stamp: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, s) in v.chunks_mut(SECTOR).enumerate() {
        fill_sector(s, offset + (i * SECTOR) as u64, stamp);
    }
    v
}

/// Where read data first differs from what the write stamped `stamp`
/// left at byte `offset`: the byte address on the LUN, or `None` when all
/// of it matches.
pub fn check(data: &[u8], offset: u64, stamp: u64) -> Option<u64> {
    let mut want = [0u8; SECTOR];
    for (i, got) in data.chunks(SECTOR).enumerate() {
        let at = offset + (i * SECTOR) as u64;
        fill_sector(&mut want[..got.len()], at, stamp);
        if let Some(p) = got.iter().zip(want.iter()).position(|(a, b)| a != b) {
            return Some(at + p as u64);
        }
    }
    None
}

/// The stamp of the write that left `data` (its first sector's), for
/// messages about a mismatch.
pub fn stamp_of(data: &[u8]) -> Option<u64> {
    data.get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_first_difference() {
        let d = fill(4096, 32256, 7);
        assert_eq!(check(&d, 32256, 7), None);
        assert_eq!(stamp_of(&d), Some(7));
        // Another write's data, or the right data in the wrong place.
        assert_eq!(check(&d, 32256, 8), Some(32256 + 8));
        // The offset field differs first in its second byte (0x7e00 vs
        // 0x8000 little-endian).
        assert_eq!(check(&d, 32768, 7), Some(32768 + 1));
        let mut torn = d.clone();
        torn[1000] ^= 1;
        assert_eq!(check(&torn, 32256, 7), Some(32256 + 1000));
    }
}
