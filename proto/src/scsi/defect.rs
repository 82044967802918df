//! READ DEFECT DATA parameter data (SBC-3 §5.18, §5.19): the header of a
//! defect list. busrig's media have no defects, so the lists it reports
//! are empty, in the format asked for.
//!
//! ```text
//! READ DEFECT DATA(10): byte 1 PLISTV(4) GLISTV(3) DEFECT LIST FORMAT(2..0)
//!                       bytes 2-3 DEFECT LIST LENGTH
//! READ DEFECT DATA(12): byte 1 as above | bytes 2-3 GENERATION CODE
//!                       bytes 4-7 DEFECT LIST LENGTH
//! ```

/// DEFECT LIST FORMAT 110b is vendor specific and 111b reserved (SBC-3
/// Table 42); the others are address descriptor formats an empty list can
/// be reported in.
pub fn format_supported(format: u8) -> bool {
    format < 6
}

/// The header of an empty defect list: PLISTV and GLISTV say the lists
/// asked for are valid (and empty).
pub fn empty_list(twelve: bool, plist: bool, glist: bool, format: u8) -> Vec<u8> {
    let mut b = vec![0u8; if twelve { 8 } else { 4 }];
    b[1] = (u8::from(plist) << 4) | (u8::from(glist) << 3) | (format & 7);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists() {
        assert_eq!(empty_list(false, true, true, 5), vec![0, 0x1d, 0, 0]);
        assert_eq!(
            empty_list(true, false, true, 0),
            vec![0, 0x08, 0, 0, 0, 0, 0, 0]
        );
        assert!(format_supported(0) && format_supported(5));
        assert!(!format_supported(6) && !format_supported(7));
    }
}
