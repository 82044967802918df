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

/// Why READ CAPACITY data could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapacityDecodeError {
    /// Fewer bytes arrived than the fields decoded need.
    #[error("{what}: need {need} bytes, got {got}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
}

/// READ CAPACITY(10) parameter data (SBC-3 §5.16.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity10 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA, FFFFFFFFh when the
    /// medium is too large for this form (SBC-3 §5.16.2).
    pub last_lba: u32,
    pub block_length: u32,
}

impl Capacity10 {
    /// The data for a medium of `blocks` blocks.
    pub fn for_blocks(blocks: u64, block_length: u32) -> Capacity10 {
        Capacity10 {
            last_lba: u32::try_from(blocks.saturating_sub(1)).unwrap_or(u32::MAX),
            block_length,
        }
    }

    /// Number of logical blocks: RETURNED LOGICAL BLOCK ADDRESS + 1.
    pub fn blocks(&self) -> u64 {
        u64::from(self.last_lba) + 1
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.last_lba.to_be_bytes());
        b[4..].copy_from_slice(&self.block_length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Capacity10, CapacityDecodeError> {
        let b: &[u8; 8] =
            b.get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(CapacityDecodeError::Short {
                    what: "READ CAPACITY(10) data",
                    need: 8,
                    got: b.len(),
                })?;
        Ok(Capacity10 {
            last_lba: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            block_length: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// READ CAPACITY(16) parameter data (SBC-3 §5.17.2): no protection
/// information and LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0, which is all the
/// emulated media have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity16 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA.
    pub last_lba: u64,
    pub block_length: u32,
    /// 2^exponent logical blocks per physical block; a 4-bit field, so at
    /// most 2^15 (SBC-3 §5.17.2).
    pub lbppb_exponent: u8,
    /// Logical block provisioning management enabled (thin provisioning).
    pub lbpme: bool,
    /// Unmapped blocks read as zeros.
    pub lbprz: bool,
}

impl Capacity16 {
    /// Number of logical blocks: RETURNED LOGICAL BLOCK ADDRESS + 1.
    pub fn blocks(&self) -> u64 {
        self.last_lba.wrapping_add(1)
    }

    pub fn encode(&self) -> [u8; 32] {
        debug_assert!(
            self.lbppb_exponent <= 0x0f,
            "LBPPB exponent is a 4-bit field"
        );
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.last_lba.to_be_bytes());
        b[8..12].copy_from_slice(&self.block_length.to_be_bytes());
        b[13] = self.lbppb_exponent & 0x0f;
        if self.lbpme {
            b[14] |= 0x80;
        }
        if self.lbprz {
            b[14] |= 0x40;
        }
        b
    }

    /// Decodes the first 15 bytes, the last one a field is in: a target
    /// may cut the data to the allocation length (SPC-4 §4.2.5.6).
    pub fn decode(b: &[u8]) -> Result<Capacity16, CapacityDecodeError> {
        if b.len() < 15 {
            return Err(CapacityDecodeError::Short {
                what: "READ CAPACITY(16) data",
                need: 15,
                got: b.len(),
            });
        }
        Ok(Capacity16 {
            last_lba: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            block_length: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            lbppb_exponent: b[13] & 0x0f,
            lbpme: b[14] & 0x80 != 0,
            lbprz: b[14] & 0x40 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc10_bytes() {
        assert_eq!(
            Capacity10::for_blocks(0x20000, 512).encode(),
            [0, 1, 0xff, 0xff, 0, 0, 2, 0]
        );
        assert_eq!(
            Capacity10::for_blocks(1 << 33, 512).encode()[..4],
            [0xff; 4]
        );
    }

    #[test]
    fn rc10_counts_blocks_not_last_lba() {
        let c = Capacity10::decode(&[0, 0x01, 0xff, 0xff, 0, 0, 2, 0]).unwrap();
        assert_eq!((c.blocks(), c.block_length), (0x20000, 512));
        assert_eq!(
            Capacity10::decode(&[0; 7]),
            Err(CapacityDecodeError::Short {
                what: "READ CAPACITY(10) data",
                need: 8,
                got: 7
            })
        );
    }

    #[test]
    fn rc16_bytes() {
        let c = Capacity16 {
            last_lba: 0x1ffff,
            block_length: 4096,
            lbppb_exponent: 0,
            lbpme: true,
            lbprz: true,
        };
        let b = c.encode();
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0x10, 0, 0, 0, 0xc0, 0]
        );
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(Capacity16::decode(&b), Ok(c));
        assert_eq!(c.blocks(), 0x20000);
    }

    #[test]
    fn rc16_512e_reports_eight_logical_blocks_per_physical_block() {
        // 512-byte logical blocks on 4096-byte physical blocks: exponent 3
        // in the low nibble of byte 13, lowest aligned LBA 0.
        let b = Capacity16 {
            last_lba: 2047,
            block_length: 512,
            lbppb_exponent: 3,
            lbpme: false,
            lbprz: false,
        }
        .encode();
        assert_eq!(&b[8..16], &[0, 0, 2, 0, 0, 0x03, 0, 0]);
    }

    #[test]
    fn rc16_decodes_cut_data_and_refuses_shorter() {
        let b = Capacity16 {
            last_lba: 0x1f_ffff,
            block_length: 512,
            lbppb_exponent: 3,
            lbpme: true,
            lbprz: false,
        }
        .encode();
        let c = Capacity16::decode(&b[..15]).unwrap();
        assert_eq!(
            (c.blocks(), c.lbppb_exponent, c.lbpme),
            (0x20_0000, 3, true)
        );
        assert!(Capacity16::decode(&b[..10]).is_err());
    }
}
