//! A logical unit's size and geometry as the initiator reports it, from
//! READ CAPACITY(16) or, for a target without it, READ CAPACITY(10)
//! (SBC-3 §5.16, §5.17). The parameter data itself is
//! `busrig_proto::scsi::capacity`'s.

use serde::Serialize;

use busrig_proto::scsi::capacity::{Capacity10, Capacity16, CapacityDecodeError};

use super::data::{short, DataError};

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

impl From<Capacity10> for Capacity {
    fn from(c: Capacity10) -> Capacity {
        Capacity::new(c.blocks(), c.block_length, 0, false)
    }
}

impl From<Capacity16> for Capacity {
    fn from(c: Capacity16) -> Capacity {
        Capacity::new(c.blocks(), c.block_length, c.lbppb_exponent, c.lbpme)
    }
}

impl From<CapacityDecodeError> for DataError {
    fn from(e: CapacityDecodeError) -> DataError {
        match e {
            CapacityDecodeError::Short { what, need, got } => short(what, need, got),
        }
    }
}

/// Blocks, block length and bytes, one per line.
impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, l, n) = (self.blocks, self.block_length, self.bytes);
        write!(f, "blocks: {b}\nblock length: {l}\nbytes: {n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_10_counts_blocks_not_last_lba() {
        let c = Capacity::from(Capacity10::decode(&[0, 0x01, 0xff, 0xff, 0, 0, 2, 0]).unwrap());
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
        let c = Capacity::from(Capacity16::decode(&b).unwrap());
        assert_eq!(c.blocks, 0x20_0000);
        assert_eq!(c.physical_block_exponent, 3);
        assert!(c.thin_provisioned);
        assert_eq!(
            DataError::from(Capacity16::decode(&b[..10]).unwrap_err()).to_string(),
            "malformed READ CAPACITY(16) data: need 15 bytes, got 10"
        );
    }

    #[test]
    fn capacity_reads_for_people() {
        let c = Capacity::from(Capacity10::decode(&[0, 0, 0, 0x7f, 0, 0, 2, 0]).unwrap());
        assert_eq!(
            c.to_string(),
            "blocks: 128\nblock length: 512\nbytes: 65536"
        );
    }
}
