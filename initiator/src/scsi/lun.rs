//! LUN addressing on the wire (SAM-5 §4.7). The iSCSI LUN field carries the
//! eight-byte SAM LUN as is (RFC 7143 §11.2.1.3).
//!
//! ```text
//! peripheral device addressing (LUN < 256):   00b | bus 0  , LUN    , 0 x 6
//! flat space addressing (LUN < 16384):        01b | LUN(13..8), LUN(7..0), 0 x 6
//! ```
//!
//! This is the choice libiscsi and the Linux SCSI midlayer make, and what
//! targets report in REPORT LUNS.

/// The 8-byte LUN field for a LUN number, as a big-endian u64.
pub fn encode(lun: u16) -> u64 {
    let b0 = if lun < 256 {
        0u8
    } else {
        0x40 | ((lun >> 8) as u8 & 0x3f)
    };
    u64::from_be_bytes([b0, lun as u8, 0, 0, 0, 0, 0, 0])
}

/// The LUN number of a single-level LUN field in the peripheral or flat
/// addressing method; `None` for other methods or multi-level LUNs.
pub fn decode(field: u64) -> Option<u16> {
    let b = field.to_be_bytes();
    if b[2..].iter().any(|x| *x != 0) {
        return None;
    }
    match b[0] >> 6 {
        0b00 if b[0] == 0 => Some(b[1] as u16),
        0b01 => Some((((b[0] & 0x3f) as u16) << 8) | b[1] as u16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_luns_use_peripheral_addressing() {
        assert_eq!(encode(0), 0);
        assert_eq!(encode(2), 0x0002_0000_0000_0000);
        assert_eq!(decode(0x0002_0000_0000_0000), Some(2));
    }

    #[test]
    fn large_luns_use_flat_space_addressing() {
        assert_eq!(encode(300), 0x412c_0000_0000_0000);
        for l in [0u16, 1, 255, 256, 300, 16383] {
            assert_eq!(decode(encode(l)), Some(l));
        }
    }

    #[test]
    fn multi_level_luns_are_not_numbers() {
        assert_eq!(decode(0x0001_0001_0000_0000), None);
        assert_eq!(decode(0x8001_0000_0000_0000), None);
    }
}
