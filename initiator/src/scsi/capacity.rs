//! READ CAPACITY (SBC-3 §5.15, §5.16) data.
//!
//! ```text
//! READ CAPACITY(10):  bytes 0-3 RETURNED LOGICAL BLOCK ADDRESS | 4-7 BLOCK LENGTH
//! READ CAPACITY(16):  bytes 0-7 RETURNED LBA | 8-11 BLOCK LENGTH |
//!                     12 P_TYPE/PROT_EN | 13 LBPPBE (3..0) |
//!                     14 LBPME(7) LBPRZ(6) LOWEST ALIGNED LBA (13..0)
//! ```

use serde::Serialize;

use super::inquiry::{short, DataError};

/// Size and geometry of a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// Number of logical blocks (RETURNED LOGICAL BLOCK ADDRESS + 1).
    pub blocks: u64,
    pub block_length: u32,
    /// Logical blocks per physical block, as a power of two.
    pub physical_block_exponent: u8,
    pub thin_provisioned: bool,
    pub bytes: u64,
}

impl Capacity {
    pub fn decode_10(b: &[u8]) -> Result<Capacity, DataError> {
        if b.len() < 8 {
            return Err(short("READ CAPACITY(10) data", 8, b.len()));
        }
        let last = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let block_length = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        Ok(Capacity::new(last + 1, block_length, 0, false))
    }

    pub fn decode_16(b: &[u8]) -> Result<Capacity, DataError> {
        if b.len() < 15 {
            return Err(short("READ CAPACITY(16) data", 15, b.len()));
        }
        let last = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        let block_length = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        Ok(Capacity::new(
            last.wrapping_add(1),
            block_length,
            b[13] & 0x0f,
            b[14] & 0x80 != 0,
        ))
    }

    fn new(blocks: u64, block_length: u32, exp: u8, thin: bool) -> Capacity {
        Capacity {
            blocks,
            block_length,
            physical_block_exponent: exp,
            thin_provisioned: thin,
            bytes: blocks.saturating_mul(block_length as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_10_counts_blocks_not_last_lba() {
        let c = Capacity::decode_10(&[0, 0x01, 0xff, 0xff, 0, 0, 2, 0]).unwrap();
        assert_eq!(c.blocks, 0x20000);
        assert_eq!(c.block_length, 512);
        assert_eq!(c.bytes, 64 << 20);
    }

    #[test]
    fn capacity_16_with_thin_provisioning() {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&(0x1f_ffffu64).to_be_bytes());
        b[8..12].copy_from_slice(&512u32.to_be_bytes());
        b[13] = 3;
        b[14] = 0x80;
        let c = Capacity::decode_16(&b).unwrap();
        assert_eq!(c.blocks, 0x20_0000);
        assert_eq!(c.physical_block_exponent, 3);
        assert!(c.thin_provisioned);
        assert!(Capacity::decode_16(&b[..10]).is_err());
    }
}
