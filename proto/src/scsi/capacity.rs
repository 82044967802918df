//! READ CAPACITY(10) and READ CAPACITY(16) parameter data (SBC-3 §5.16,
//! §5.17).
//!
//! ```text
//! READ CAPACITY(10), 8 bytes:
//!   bytes 0-3  RETURNED LOGICAL BLOCK ADDRESS (last LBA, FFFFFFFFh if it does not fit)
//!   bytes 4-7  LOGICAL BLOCK LENGTH IN BYTES
//! READ CAPACITY(16), 32 bytes:
//!   bytes 0-7  RETURNED LOGICAL BLOCK ADDRESS
//!   bytes 8-11 LOGICAL BLOCK LENGTH IN BYTES
//!   byte 12    P_TYPE(3..1) PROT_EN(0)
//!   byte 13    P_I_EXPONENT(7..4) | LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT(3..0)
//!   bytes 14-15 LBPME(15) LBPRZ(14) | LOWEST ALIGNED LBA(13..0)
//! ```

/// READ CAPACITY(10) data for a medium of `blocks` blocks.
pub fn read_capacity10(blocks: u64, block_len: u32) -> [u8; 8] {
    let last = u32::try_from(blocks.saturating_sub(1)).unwrap_or(u32::MAX);
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&last.to_be_bytes());
    b[4..].copy_from_slice(&block_len.to_be_bytes());
    b
}

/// READ CAPACITY(16) data: no protection information, 2^`lbppb_exponent`
/// logical blocks per physical block with LBA 0 at the start of a physical
/// block (LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0), and optionally logical
/// block provisioning management (LBPME) with unmapped blocks reading as
/// zeros (LBPRZ).
///
/// The exponent field is four bits (SBC-3 §5.17.2), so at most 2^15
/// logical blocks per physical block can be described.
pub fn read_capacity16(
    blocks: u64,
    block_len: u32,
    lbppb_exponent: u8,
    lbpme: bool,
    lbprz: bool,
) -> [u8; 32] {
    debug_assert!(lbppb_exponent <= 0x0f, "LBPPB exponent is a 4-bit field");
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&blocks.saturating_sub(1).to_be_bytes());
    b[8..12].copy_from_slice(&block_len.to_be_bytes());
    b[13] = lbppb_exponent & 0x0f;
    if lbpme {
        b[14] |= 0x80;
    }
    if lbprz {
        b[14] |= 0x40;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc10_bytes() {
        assert_eq!(
            read_capacity10(0x20000, 512),
            [0, 1, 0xff, 0xff, 0, 0, 2, 0]
        );
        assert_eq!(read_capacity10(1 << 33, 512)[..4], [0xff; 4]);
    }

    #[test]
    fn rc16_bytes() {
        let b = read_capacity16(0x20000, 4096, 0, true, true);
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0x10, 0, 0, 0, 0xc0, 0]
        );
        assert!(b[16..].iter().all(|&x| x == 0));
    }

    #[test]
    fn rc16_512e_reports_eight_logical_blocks_per_physical_block() {
        // 512-byte logical blocks on 4096-byte physical blocks: exponent 3
        // in the low nibble of byte 13, lowest aligned LBA 0.
        let b = read_capacity16(2048, 512, 3, false, false);
        assert_eq!(&b[8..16], &[0, 0, 2, 0, 0, 0x03, 0, 0]);
    }
}
