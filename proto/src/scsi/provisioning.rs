//! Logical block provisioning: the UNMAP parameter list (SBC-3 §5.28) and
//! GET LBA STATUS parameter data (SBC-3 §5.6).
//!
//! ```text
//! UNMAP parameter list:
//!   bytes 0-1  UNMAP DATA LENGTH (n - 1)
//!   bytes 2-3  UNMAP BLOCK DESCRIPTOR DATA LENGTH (n - 7)
//!   bytes 4-7  reserved
//!   then 16-byte descriptors: LBA(8) | NUMBER OF LOGICAL BLOCKS(4) | reserved(4)
//! GET LBA STATUS data:
//!   bytes 0-3  PARAMETER DATA LENGTH (n - 3)
//!   bytes 4-7  reserved
//!   then 16-byte descriptors: LBA(8) | NUMBER OF LOGICAL BLOCKS(4) | PROVISIONING STATUS(3..0) | reserved(3)
//! ```

use super::cdb::{be16, be32, be64};
use super::sense::{Asc, Sense};

/// One range to deallocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmapDescriptor {
    pub lba: u64,
    pub blocks: u32,
}

/// Parses an UNMAP parameter list. A list shorter than its header, or
/// lengths that disagree with the list, are PARAMETER LIST LENGTH ERROR
/// or INVALID FIELD IN PARAMETER LIST (SBC-3 §5.28.2). An empty list (the
/// CDB's PARAMETER LIST LENGTH is zero) is no descriptors.
pub fn parse_unmap(data: &[u8]) -> Result<Vec<UnmapDescriptor>, Sense> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.len() < 8 {
        return Err(Sense::new(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let data_len = usize::from(be16(data));
    let desc_len = usize::from(be16(&data[2..]));
    if data_len + 2 > data.len() || desc_len + 8 > data.len() {
        return Err(Sense::new(Asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    if desc_len % 16 != 0 {
        return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST).param_field(2, None));
    }
    Ok(data[8..8 + desc_len]
        .chunks_exact(16)
        .map(|d| UnmapDescriptor {
            lba: be64(d),
            blocks: be32(&d[8..]),
        })
        .collect())
}

/// Provisioning status of an extent (SBC-3 Table 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    Mapped = 0,
    Deallocated = 1,
    Anchored = 2,
}

/// One extent for GET LBA STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbaStatus {
    pub lba: u64,
    pub blocks: u32,
    pub status: Provisioning,
}

/// GET LBA STATUS parameter data for `extents`, in LBA order.
pub fn lba_status(extents: &[LbaStatus]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 16 * extents.len());
    b.extend_from_slice(&((4 + 16 * extents.len()) as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for e in extents {
        b.extend_from_slice(&e.lba.to_be_bytes());
        b.extend_from_slice(&e.blocks.to_be_bytes());
        b.extend_from_slice(&[e.status as u8, 0, 0, 0]);
    }
    b
}

/// Builds an UNMAP parameter list (for initiators and tests).
pub fn encode_unmap(descs: &[UnmapDescriptor]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 16 * descs.len());
    b.extend_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
    b.extend_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for d in descs {
        b.extend_from_slice(&d.lba.to_be_bytes());
        b.extend_from_slice(&d.blocks.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmap_list_roundtrip() {
        let d = [
            UnmapDescriptor { lba: 7, blocks: 3 },
            UnmapDescriptor {
                lba: 1 << 40,
                blocks: 0,
            },
        ];
        let b = encode_unmap(&d);
        assert_eq!(
            &b[..24],
            &[0, 38, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0]
        );
        assert_eq!(parse_unmap(&b).unwrap(), d.to_vec());
    }

    #[test]
    fn unmap_errors() {
        assert_eq!(parse_unmap(&[0, 6, 0, 0]).unwrap_err().asc, 0x1a);
        assert_eq!(
            parse_unmap(&[0, 22, 0, 16, 0, 0, 0, 0]).unwrap_err().asc,
            0x1a
        );
        let mut b = encode_unmap(&[UnmapDescriptor { lba: 0, blocks: 1 }]);
        b[3] = 15;
        assert_eq!(parse_unmap(&b).unwrap_err().asc, 0x26);
        assert_eq!(parse_unmap(&[]).unwrap(), vec![]);
        assert_eq!(parse_unmap(&encode_unmap(&[])).unwrap(), vec![]);
    }

    #[test]
    fn lba_status_bytes() {
        let b = lba_status(&[LbaStatus {
            lba: 2,
            blocks: 5,
            status: Provisioning::Deallocated,
        }]);
        assert_eq!(
            b,
            vec![0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5, 1, 0, 0, 0]
        );
    }
}
