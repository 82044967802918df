//! The commands the initiator issues (SPC-4, SBC-3): each builder returns
//! a [`Command`], the CDB bytes `busrig_proto::scsi::cdb::Cdb::encode`
//! lays out together with the command's data phase, so the session can
//! fill in the SCSI Command PDU's R/W bits and ExpectedDataTransferLength
//! (RFC 7143 §11.3.5) without knowing the command set.

use busrig_proto::scsi::cdb::Cdb;
use busrig_proto::scsi::pr::{PrInAction, PrInCdb, PrOutAction, PrOutCdb, SCOPE_LU};
use bytes::Bytes;

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

/// One command: its CDB bytes and its data phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub bytes: Vec<u8>,
    pub data: DataDirection,
}

impl Command {
    fn new(cdb: Cdb, data: DataDirection) -> Command {
        Command {
            bytes: cdb.encode(),
            data,
        }
    }

    /// The operation code, for messages.
    pub fn opcode(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
}

/// TEST UNIT READY (SPC-4 §6.47).
pub fn test_unit_ready() -> Command {
    Command::new(Cdb::TestUnitReady, DataDirection::None)
}

/// REQUEST SENSE (SPC-4 §6.39), fixed format.
pub fn request_sense(alloc: u8) -> Command {
    Command::new(
        Cdb::RequestSense {
            desc: false,
            alloc: alloc.into(),
        },
        DataDirection::Read(alloc.into()),
    )
}

/// INQUIRY (SPC-4 §6.6): standard data, or the VPD page `page` when `Some`.
pub fn inquiry(page: Option<u8>, alloc: u16) -> Command {
    Command::new(
        Cdb::Inquiry {
            evpd: page.is_some(),
            page: page.unwrap_or(0),
            alloc: alloc.into(),
        },
        DataDirection::Read(alloc.into()),
    )
}

/// READ CAPACITY(10) (SBC-3 §5.15): 8 bytes back.
pub fn read_capacity_10() -> Command {
    Command::new(
        Cdb::ReadCapacity10 { lba: 0, pmi: false },
        DataDirection::Read(8),
    )
}

/// READ CAPACITY(16) (SBC-3 §5.16).
pub fn read_capacity_16(alloc: u32) -> Command {
    Command::new(Cdb::ReadCapacity16 { alloc }, DataDirection::Read(alloc))
}

/// REPORT LUNS (SPC-4 §6.33), SELECT REPORT 00h (all LUNs the nexus may address).
pub fn report_luns(alloc: u32) -> Command {
    Command::new(
        Cdb::ReportLuns { select: 0, alloc },
        DataDirection::Read(alloc),
    )
}

/// READ(10) or READ(16) of `blocks` blocks of `block_len` bytes.
pub fn read(lba: u64, blocks: u32, block_len: u32, fua: bool) -> Command {
    Command::new(
        Cdb::Read {
            lba,
            blocks,
            dpo: false,
            fua,
        },
        DataDirection::Read(blocks * block_len),
    )
}

/// WRITE(10) or WRITE(16); `data` is a whole number of blocks.
pub fn write(lba: u64, blocks: u32, data: Bytes, fua: bool) -> Command {
    Command::new(
        Cdb::Write {
            lba,
            blocks,
            dpo: false,
            fua,
        },
        DataDirection::Write(data),
    )
}

/// SYNCHRONIZE CACHE(10) or (16) (SBC-3 §5.22); `blocks == 0` means "to the end".
pub fn synchronize_cache(lba: u64, blocks: u32) -> Command {
    Command::new(
        Cdb::SynchronizeCache {
            lba,
            blocks,
            immed: false,
        },
        DataDirection::None,
    )
}

/// COMPARE AND WRITE (SBC-3 §5.2): `data` is `blocks` blocks of verify data
/// followed by `blocks` blocks of write data.
pub fn compare_and_write(lba: u64, blocks: u8, data: Bytes, fua: bool) -> Command {
    Command::new(
        Cdb::CompareAndWrite {
            lba,
            blocks,
            dpo: false,
            fua,
        },
        DataDirection::Write(data),
    )
}

/// RESERVE(6) (SPC-2 §7.21): the whole logical unit for this I_T nexus.
pub fn reserve_6() -> Command {
    Command::new(Cdb::Reserve { ten: false }, DataDirection::None)
}

/// RELEASE(6) (SPC-2 §7.19).
pub fn release_6() -> Command {
    Command::new(Cdb::Release { ten: false }, DataDirection::None)
}

/// RESERVE(10) (SPC-2 §7.22) without third-party or extent reservation.
pub fn reserve_10() -> Command {
    Command::new(Cdb::Reserve { ten: true }, DataDirection::None)
}

/// RELEASE(10) (SPC-2 §7.20).
pub fn release_10() -> Command {
    Command::new(Cdb::Release { ten: true }, DataDirection::None)
}

/// PERSISTENT RESERVE IN (SPC-4 §6.15) with service action `action`.
pub fn persistent_reserve_in(action: PrInAction, alloc: u16) -> Command {
    Command {
        bytes: PrInCdb {
            action,
            allocation_length: alloc,
        }
        .encode()
        .to_vec(),
        data: DataDirection::Read(alloc.into()),
    }
}

/// PERSISTENT RESERVE OUT (SPC-4 §6.16) of LU scope with TYPE `type_code`
/// and the parameter list `params`.
pub fn persistent_reserve_out(action: PrOutAction, type_code: u8, params: Bytes) -> Command {
    Command {
        bytes: PrOutCdb {
            action,
            scope: SCOPE_LU,
            type_code,
            parameter_list_length: params.len() as u32,
        }
        .encode()
        .to_vec(),
        data: DataDirection::Write(params),
    }
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
        let c = persistent_reserve_out(PrOutAction::Reserve, 5, Bytes::from(vec![0u8; 24]));
        assert_eq!(c.bytes, vec![0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0]);
    }

    #[test]
    fn pr_in_allocation_length() {
        assert_eq!(
            persistent_reserve_in(PrInAction::ReadFullStatus, 0x2000).bytes,
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
