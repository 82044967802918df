//! REPORT LUNS parameter data (SPC-4 §6.33) and LUN encoding (SAM-5 §4.7).
//!
//! ```text
//! bytes 0-3  LUN LIST LENGTH (n - 7)
//! bytes 4-7  reserved
//! bytes 8-   one 8-byte LUN per logical unit
//! LUN < 256:    peripheral device addressing, 00b: byte 0 = 00h, byte 1 = LUN
//! LUN < 16384:  flat space addressing, 01b: byte 0 = 40h | LUN(13..8), byte 1 = LUN(7..0)
//! ```

/// Encodes a LUN as its 8-byte form (SAM-5 §4.7.3, §4.7.7).
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | (lun >> 8) as u8;
        b[1] = lun as u8;
    } else {
        // Larger numbers are passed through as the full 64-bit LUN field.
        b = lun.to_be_bytes();
    }
    b
}

/// Decodes the 8-byte LUN field of an iSCSI PDU into the LUN number used in
/// busrig's configuration (the inverse of [`encode_lun`]).
pub fn decode_lun(b: [u8; 8]) -> u64 {
    match b[0] >> 6 {
        0 if b[0] == 0 && b[2..].iter().all(|&x| x == 0) => u64::from(b[1]),
        1 if b[2..].iter().all(|&x| x == 0) => (u64::from(b[0] & 0x3f) << 8) | u64::from(b[1]),
        _ => u64::from_be_bytes(b),
    }
}

/// REPORT LUNS parameter data for `luns` (sorted by the caller).
pub fn report_luns(luns: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 8 * luns.len());
    b.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for &l in luns {
        b.extend_from_slice(&encode_lun(l));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_peripheral_and_flat() {
        assert_eq!(encode_lun(0), [0; 8]);
        assert_eq!(encode_lun(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(300), [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
        for l in [0, 1, 255, 256, 300, 0x3fff] {
            assert_eq!(decode_lun(encode_lun(l)), l);
        }
    }

    #[test]
    fn report_luns_bytes() {
        assert_eq!(
            report_luns(&[0, 2]),
            vec![0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
        );
    }
}
