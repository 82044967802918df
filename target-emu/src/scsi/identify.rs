//! INQUIRY (SPC-4 §6.6) with its VPD pages (SPC-4 §7.8, SBC-3 §6.6) and
//! REPORT LUNS (SPC-4 §6.33).

use super::{
    alloc, invalid_cdb, Outcome, ScsiReply, ScsiTarget, MAX_ATOMIC_BYTES, MAX_TRANSFER_BYTES,
    MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BYTES, PORT_GROUP, RELATIVE_PORT,
};
use crate::lu::{LogicalUnit, PRODUCT_REVISION};
use crate::nexus::ItNexus;
use busrig_proto::scsi::inquiry::{BlockLimits, DeviceIds};
use busrig_proto::scsi::sense::{Asc, Sense};
use busrig_proto::scsi::{inquiry, opcodes, report_luns, xcopy};

use super::xcopy::COPY_LIMITS;

impl ScsiTarget {
    pub(super) fn inquiry(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        evpd: bool,
        page: u8,
        len: u32,
    ) -> Outcome {
        let spec = lu.spec();
        let data = if !evpd {
            // SPC-4 §6.6.1: PAGE CODE must be zero without EVPD.
            if page != 0 {
                return Err(invalid_cdb(2, Some(7)));
            }
            let mut std =
                inquiry::StandardInquiry::disk(&spec.vendor, &spec.product, PRODUCT_REVISION, true);
            std.removable = lu.removable();
            std.encode()
        } else {
            match page {
                inquiry::vpd::SUPPORTED_PAGES => inquiry::supported_pages(),
                inquiry::vpd::UNIT_SERIAL_NUMBER => inquiry::unit_serial(&spec.serial),
                inquiry::vpd::DEVICE_IDENTIFICATION => inquiry::device_identification(&DeviceIds {
                    naa: lu.naa(),
                    vendor: &spec.vendor,
                    serial: &spec.serial,
                    target_name: &self.name,
                    tpgt: nexus.tpgt,
                    relative_port: RELATIVE_PORT,
                    port_group: PORT_GROUP,
                }),
                inquiry::vpd::THIRD_PARTY_COPY => xcopy::third_party_copy_page(&COPY_LIMITS),
                inquiry::vpd::BLOCK_LIMITS => inquiry::block_limits(&block_limits(lu)),
                inquiry::vpd::BLOCK_DEVICE_CHARACTERISTICS => {
                    inquiry::block_device_characteristics()
                }
                inquiry::vpd::LOGICAL_BLOCK_PROVISIONING => inquiry::logical_block_provisioning(),
                _ => return Err(invalid_cdb(2, Some(7))),
            }
        };
        Ok(ScsiReply::good(alloc(data, len)))
    }

    pub(super) fn report_luns(&self, select: u8, len: u32) -> Outcome {
        // SPC-4 §6.33: at least 16 bytes must be allowed for.
        if len < 16 {
            return Err(invalid_cdb(6, None));
        }
        let luns = match select {
            0 | 2 => self.lun_ids(),
            // Well-known logical units only: busrig has none.
            1 => Vec::new(),
            _ => return Err(invalid_cdb(2, Some(7))),
        };
        Ok(ScsiReply::good(alloc(
            report_luns::LunList::from_numbers(&luns).encode(),
            len,
        )))
    }
}

/// The Block Limits this LU advertises (and enforces).
pub(super) fn block_limits(lu: &LogicalUnit) -> BlockLimits {
    let bs = lu.block_size();
    // SBC-3 §6.5.3: transfers and unmaps are best in whole physical blocks.
    let per_physical = lu.blocks_per_physical_block();
    BlockLimits {
        max_compare_and_write: 255,
        optimal_granularity: per_physical as u16,
        max_transfer: MAX_TRANSFER_BYTES / bs,
        optimal_transfer: (1 << 20) / bs,
        max_prefetch: MAX_TRANSFER_BYTES / bs,
        max_unmap_lba_count: MAX_UNMAP_BLOCKS,
        max_unmap_descriptors: MAX_UNMAP_DESCRIPTORS,
        // Hole punching works in file system blocks (4 KiB), and a physical
        // block is deallocated as a whole or not at all. Physical blocks
        // start at LBA 0 (LOWEST ALIGNED LBA 0), so granules do too.
        optimal_unmap_granularity: (4096 / bs).max(per_physical),
        unmap_granularity_alignment: Some(0),
        max_write_same: MAX_WRITE_SAME_BYTES / u64::from(bs),
        // Atomic writes in whole file system blocks (4 KiB) or physical
        // blocks, whichever is larger, up to MAX_ATOMIC_BYTES.
        max_atomic_transfer: MAX_ATOMIC_BYTES / bs,
        atomic_alignment: (4096 / bs).max(per_physical),
        atomic_granularity: (4096 / bs).max(per_physical),
    }
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
pub(super) fn report_supported_opcodes(
    rctd: bool,
    options: u8,
    opcode: u8,
    sa: u16,
    len: u32,
) -> Outcome {
    let data = if options == 0 {
        opcodes::all_commands(rctd)
    } else {
        opcodes::one_command(options, opcode, sa, rctd)?
    };
    Ok(ScsiReply::good(alloc(data, len)))
}

/// REQUEST SENSE (SPC-4 §6.39).
pub(super) fn request_sense(lu: &LogicalUnit, nexus: &ItNexus, desc: bool, len: u32) -> Outcome {
    // SPC-4 §5.14: REQUEST SENSE reports the oldest unit
    // attention as its parameter data and clears it.
    let sense = match lu.take_unit_attention(nexus) {
        Some(asc) => Sense::new(asc),
        None if lu.ejected() => Sense::new(Asc::MEDIUM_NOT_PRESENT),
        None if lu.sanitize_progress().is_some() => super::sanitize::not_ready(lu),
        None if lu.stopped() => Sense::new(Asc::LUN_NOT_READY_INIT_REQUIRED),
        None => Sense::new(Asc::NO_ADDITIONAL_SENSE),
    };
    Ok(ScsiReply::good(alloc(sense.encode(desc), len)))
}
