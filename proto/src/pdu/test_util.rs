//! Helpers for writing wire vectors in tests.

use super::BHS_LEN;

/// Bytes from whitespace-separated hex pairs.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("test vector is hex"))
        .collect()
}

/// A 48-byte BHS from 48 hex pairs.
pub(crate) fn hex48(s: &str) -> [u8; BHS_LEN] {
    let v = hex(s);
    <[u8; BHS_LEN]>::try_from(v.as_slice()).expect("test vector is 48 bytes")
}
