//! CDB building for the commands the initiator issues (SPC-4, SBC-3).
//!
//! Each builder returns a [`Cdb`] with the command's data direction and
//! transfer length, so the session can fill in the SCSI Command PDU's R/W
//! bits and ExpectedDataTransferLength (RFC 7143 §11.3.5) without knowing
//! the command set.
//!
//! ```text
//! 6-byte CDB:  opcode | ... | ALLOCATION/TRANSFER LENGTH (1) | CONTROL
//! 10-byte CDB: opcode | flags | LBA (4) | group | LENGTH (2) | CONTROL
//! 16-byte CDB: opcode | flags | LBA (8) | LENGTH (4) | group | CONTROL
//! ```

use bytes::Bytes;

/// Operation codes (SPC-4 Annex E, SBC-3 §5).
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
}

/// Service action of SERVICE ACTION IN(16) for READ CAPACITY(16) (SBC-3 §5.16).
pub const SA_READ_CAPACITY_16: u8 = 0x10;

/// Which way data moves for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirection {
    /// No data phase.
    None,
    /// Data-In: up to this many bytes from the target.
    Read(u32),
    /// Data-Out: these bytes go to the target.
    Write(Bytes),
}

impl DataDirection {
    /// ExpectedDataTransferLength (RFC 7143 §11.3.5).
    pub fn expected_length(&self) -> u32 {
        match self {
            DataDirection::None => 0,
            DataDirection::Read(n) => *n,
            DataDirection::Write(b) => b.len() as u32,
        }
    }
}

/// One command descriptor block with its data phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdb {
    pub bytes: Vec<u8>,
    pub data: DataDirection,
}

impl Cdb {
    fn new(bytes: Vec<u8>, data: DataDirection) -> Cdb {
        Cdb { bytes, data }
    }

    /// The operation code, for messages.
    pub fn opcode(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
}

/// TEST UNIT READY (SPC-4 §6.47).
pub fn test_unit_ready() -> Cdb {
    Cdb::new(
        vec![op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
        DataDirection::None,
    )
}

/// REQUEST SENSE (SPC-4 §6.39), fixed format.
pub fn request_sense(alloc: u8) -> Cdb {
    Cdb::new(
        vec![op::REQUEST_SENSE, 0, 0, 0, alloc, 0],
        DataDirection::Read(alloc as u32),
    )
}

/// INQUIRY (SPC-4 §6.6): standard data, or the VPD page `page` when `Some`.
pub fn inquiry(page: Option<u8>, alloc: u16) -> Cdb {
    let (evpd, code) = match page {
        Some(p) => (1, p),
        None => (0, 0),
    };
    let a = alloc.to_be_bytes();
    Cdb::new(
        vec![op::INQUIRY, evpd, code, a[0], a[1], 0],
        DataDirection::Read(alloc as u32),
    )
}

/// READ CAPACITY(10) (SBC-3 §5.15): 8 bytes back.
pub fn read_capacity_10() -> Cdb {
    Cdb::new(
        vec![op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        DataDirection::Read(8),
    )
}

/// READ CAPACITY(16) (SBC-3 §5.16).
pub fn read_capacity_16(alloc: u32) -> Cdb {
    let mut b = vec![0u8; 16];
    b[0] = op::SERVICE_ACTION_IN_16;
    b[1] = SA_READ_CAPACITY_16;
    b[10..14].copy_from_slice(&alloc.to_be_bytes());
    Cdb::new(b, DataDirection::Read(alloc))
}

/// REPORT LUNS (SPC-4 §6.33), SELECT REPORT 00h (all LUNs the nexus may address).
pub fn report_luns(alloc: u32) -> Cdb {
    let mut b = vec![0u8; 12];
    b[0] = op::REPORT_LUNS;
    b[6..10].copy_from_slice(&alloc.to_be_bytes());
    Cdb::new(b, DataDirection::Read(alloc))
}

/// Whether an LBA/length pair fits the 10-byte form. Smaller CDBs are what
/// the oldest targets implement, so they are used whenever they can express
/// the request (as sg_dd and the Linux sd driver do).
fn fits_10(lba: u64, blocks: u32) -> bool {
    lba + blocks as u64 <= u32::MAX as u64 + 1 && blocks <= u16::MAX as u32
}

fn rw(op10: u8, op16: u8, lba: u64, blocks: u32, fua: bool, data: DataDirection) -> Cdb {
    // FUA is bit 3 of byte 1 in READ/WRITE(10) and (16) (SBC-3 §5.8, §5.32).
    let flags = if fua { 0x08 } else { 0 };
    if fits_10(lba, blocks) {
        let mut b = vec![op10, flags, 0, 0, 0, 0, 0, 0, 0, 0];
        b[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        b[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
        Cdb::new(b, data)
    } else {
        let mut b = vec![0u8; 16];
        b[0] = op16;
        b[1] = flags;
        b[2..10].copy_from_slice(&lba.to_be_bytes());
        b[10..14].copy_from_slice(&blocks.to_be_bytes());
        Cdb::new(b, data)
    }
}

/// READ(10) or READ(16) of `blocks` blocks of `block_len` bytes.
pub fn read(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Cdb {
    rw(
        op::READ_10,
        op::READ_16,
        lba,
        blocks,
        fua,
        DataDirection::Read(blocks * block_len),
    )
}

/// WRITE(10) or WRITE(16); `data` is a whole number of blocks.
pub fn write(lba: u64, blocks: u32, data: Bytes, fua: bool) -> Cdb {
    rw(
        op::WRITE_10,
        op::WRITE_16,
        lba,
        blocks,
        fua,
        DataDirection::Write(data),
    )
}

/// SYNCHRONIZE CACHE(10) or (16) (SBC-3 §5.22); `blocks == 0` means "to the end".
pub fn synchronize_cache(lba: u64, blocks: u32) -> Cdb {
    if fits_10(lba, blocks) {
        let mut b = vec![op::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        b[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
        Cdb::new(b, DataDirection::None)
    } else {
        let mut b = vec![0u8; 16];
        b[0] = op::SYNCHRONIZE_CACHE_16;
        b[2..10].copy_from_slice(&lba.to_be_bytes());
        b[10..14].copy_from_slice(&blocks.to_be_bytes());
        Cdb::new(b, DataDirection::None)
    }
}

/// COMPARE AND WRITE (SBC-3 §5.2): `data` is `blocks` blocks of verify data
/// followed by `blocks` blocks of write data; NUMBER OF LOGICAL BLOCKS is
/// one byte.
pub fn compare_and_write(lba: u64, blocks: u8, data: Bytes, fua: bool) -> Cdb {
    let mut b = vec![0u8; 16];
    b[0] = op::COMPARE_AND_WRITE;
    b[1] = if fua { 0x08 } else { 0 };
    b[2..10].copy_from_slice(&lba.to_be_bytes());
    b[13] = blocks;
    Cdb::new(b, DataDirection::Write(data))
}

/// RESERVE(6) (SPC-2 §7.21): the whole logical unit for this I_T nexus.
pub fn reserve_6() -> Cdb {
    Cdb::new(vec![op::RESERVE_6, 0, 0, 0, 0, 0], DataDirection::None)
}

/// RELEASE(6) (SPC-2 §7.19).
pub fn release_6() -> Cdb {
    Cdb::new(vec![op::RELEASE_6, 0, 0, 0, 0, 0], DataDirection::None)
}

/// RESERVE(10) (SPC-2 §7.22) without third-party or extent reservation.
pub fn reserve_10() -> Cdb {
    Cdb::new(
        vec![op::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        DataDirection::None,
    )
}

/// RELEASE(10) (SPC-2 §7.20).
pub fn release_10() -> Cdb {
    Cdb::new(
        vec![op::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        DataDirection::None,
    )
}

/// PERSISTENT RESERVE IN (SPC-4 §6.13) with service action `sa`.
pub fn persistent_reserve_in(sa: u8, alloc: u16) -> Cdb {
    let mut b = vec![0u8; 10];
    b[0] = op::PERSISTENT_RESERVE_IN;
    b[1] = sa & 0x1f;
    b[7..9].copy_from_slice(&alloc.to_be_bytes());
    Cdb::new(b, DataDirection::Read(alloc as u32))
}

/// PERSISTENT RESERVE OUT (SPC-4 §6.14): service action, scope (bits 7..4,
/// 0 = LU_SCOPE) and type (bits 3..0), and the parameter list.
pub fn persistent_reserve_out(sa: u8, pr_type: u8, params: Bytes) -> Cdb {
    let mut b = vec![0u8; 10];
    b[0] = op::PERSISTENT_RESERVE_OUT;
    b[1] = sa & 0x1f;
    b[2] = pr_type & 0x0f;
    b[5..9].copy_from_slice(&(params.len() as u32).to_be_bytes());
    Cdb::new(b, DataDirection::Write(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_uses_10_byte_form_when_it_fits() {
        let c = read(0x1234, 8, 512, false);
        assert_eq!(c.bytes, vec![0x28, 0, 0, 0, 0x12, 0x34, 0, 0, 8, 0]);
        assert_eq!(c.data, DataDirection::Read(4096));
    }

    #[test]
    fn read_switches_to_16_beyond_32_bit_lba() {
        let c = read(1 << 32, 1, 512, true);
        assert_eq!(c.bytes.len(), 16);
        assert_eq!(c.bytes[0], 0x88);
        assert_eq!(c.bytes[1], 0x08, "FUA bit 3 of byte 1");
        assert_eq!(&c.bytes[2..10], &(1u64 << 32).to_be_bytes());
        assert_eq!(&c.bytes[10..14], &[0, 0, 0, 1]);
    }

    #[test]
    fn write_with_fua_and_large_transfer_uses_16() {
        let data = Bytes::from(vec![0u8; 512 * 70000]);
        let c = write(0, 70000, data, true);
        assert_eq!(c.bytes[0], 0x8a);
        assert_eq!(c.bytes[1], 0x08);
        assert_eq!(c.data.expected_length(), 512 * 70000);
    }

    #[test]
    fn inquiry_vpd_sets_evpd() {
        assert_eq!(
            inquiry(Some(0x83), 255).bytes,
            vec![0x12, 1, 0x83, 0, 255, 0]
        );
        assert_eq!(inquiry(None, 96).bytes, vec![0x12, 0, 0, 0, 96, 0]);
    }

    #[test]
    fn read_capacity_16_is_service_action_in() {
        let c = read_capacity_16(32);
        assert_eq!(&c.bytes[..2], &[0x9e, 0x10]);
        assert_eq!(&c.bytes[10..14], &[0, 0, 0, 32]);
    }

    #[test]
    fn pr_out_carries_type_and_parameter_length() {
        let c = persistent_reserve_out(0x01, 5, Bytes::from(vec![0u8; 24]));
        assert_eq!(c.bytes, vec![0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0]);
    }

    #[test]
    fn pr_in_allocation_length() {
        assert_eq!(
            persistent_reserve_in(0x03, 0x2000).bytes,
            vec![0x5e, 3, 0, 0, 0, 0, 0, 0x20, 0, 0]
        );
    }

    #[test]
    fn compare_and_write_block_count_in_byte_13() {
        let c = compare_and_write(7, 1, Bytes::from(vec![0u8; 1024]), false);
        assert_eq!(c.bytes[0], 0x89);
        assert_eq!(c.bytes[9], 7);
        assert_eq!(c.bytes[13], 1);
    }

    #[test]
    fn reserve_release_opcodes() {
        assert_eq!(reserve_6().bytes[0], 0x16);
        assert_eq!(release_6().bytes[0], 0x17);
        assert_eq!(reserve_10().bytes.len(), 10);
        assert_eq!(release_10().bytes[0], 0x57);
    }

    #[test]
    fn sync_cache_whole_unit() {
        assert_eq!(
            synchronize_cache(0, 0).bytes,
            vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
