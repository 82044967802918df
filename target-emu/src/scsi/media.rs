//! Removable media and the stopped state: START STOP UNIT with LOEJ
//! (SBC-3 §5.25) and the NOT READY checks media access makes (SBC-3 §4.19).

use super::rw::io_fail;
use super::{alloc, invalid_cdb, Fail, Outcome, ScsiReply, ScsiTarget};
use crate::lu::{LogicalUnit, UaScope};
use crate::nexus::ItNexus;
use busrig_proto::scsi::capacity::{Capacity10, Capacity16};
use busrig_proto::scsi::defect;
use busrig_proto::scsi::sense::Asc;
use bytes::Bytes;
use tracing::info;

impl ScsiTarget {
    /// START STOP UNIT with LOEJ 1 (SBC-3 §5.25): unload (START 0) or load
    /// (START 1) a removable medium, unless an I_T nexus prevents removal
    /// (SBC-3 §5.13; libiscsi's PreventAllow.Eject expects loading refused
    /// as well).
    pub(super) async fn load_or_eject(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        start: bool,
        no_flush: bool,
    ) -> Outcome {
        if !lu.removable() {
            // RMB 0: there is nothing to load or unload.
            return Err(invalid_cdb(4, Some(1)));
        }
        if lu.removal_prevented() {
            return Err(Asc::MEDIUM_REMOVAL_PREVENTED.into());
        }
        if start {
            if lu.set_ejected(false) {
                lu.post_unit_attention(
                    UaScope::AllExcept(nexus.clone()),
                    Asc::NOT_READY_TO_READY_CHANGE,
                );
                info!(target = %self.name, lun = lu.lun(), by = %nexus, "medium loaded");
            }
        } else if !lu.ejected() {
            // Cached writes reach the medium before it leaves the drive.
            if !no_flush {
                lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
            }
            lu.set_ejected(true);
            info!(target = %self.name, lun = lu.lun(), by = %nexus, "medium unloaded");
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// READ DEFECT DATA(10/12) (SBC-3 §5.18, §5.19): the medium has no
    /// defects, so both lists are empty, in the format asked for.
    pub(super) fn read_defect_data(
        &self,
        lu: &LogicalUnit,
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        len: u32,
    ) -> Outcome {
        if !defect::format_supported(format) {
            return Err(invalid_cdb(if twelve { 1 } else { 2 }, Some(2)));
        }
        medium_present(lu)?;
        Ok(ScsiReply::good(alloc(
            defect::empty_list(twelve, plist, glist, format),
            len,
        )))
    }

    /// READ CAPACITY(10) (SBC-3 §5.16).
    pub(super) fn read_capacity10(&self, lu: &LogicalUnit, lba: u32, pmi: bool) -> Outcome {
        // SBC-3 §5.16: with PMI zero the LBA field must be zero.
        if !pmi && lba != 0 {
            return Err(invalid_cdb(2, None));
        }
        medium_present(lu)?;
        Ok(ScsiReply::good(Bytes::copy_from_slice(
            &Capacity10::for_blocks(lu.blocks(), lu.block_size()).encode(),
        )))
    }

    /// READ CAPACITY(16) (SBC-3 §5.17).
    pub(super) fn read_capacity16(&self, lu: &LogicalUnit, len: u32) -> Outcome {
        medium_present(lu)?;
        let d = Capacity16 {
            last_lba: lu.blocks().saturating_sub(1),
            block_length: lu.block_size(),
            lbppb_exponent: lu.lbppb_exponent(),
            lbpme: true,
            lbprz: true,
        }
        .encode();
        Ok(ScsiReply::good(alloc(d.to_vec(), len)))
    }

    /// START STOP UNIT (SBC-3 §5.25).
    pub(super) async fn start_stop_unit(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    ) -> Outcome {
        match power_condition {
            0 => {}
            // SBC-3 §5.25: ACTIVE, IDLE, STANDBY, LU_CONTROL,
            // FORCE_IDLE_0, FORCE_STANDBY_0; START and LOEJ are then
            // ignored. An emulated disk has no power states.
            1 | 2 | 3 | 7 | 0xa | 0xb => return Ok(ScsiReply::good(Bytes::new())),
            _ => return Err(invalid_cdb(4, Some(7))),
        }
        if loej {
            return self.load_or_eject(lu, nexus, start, no_flush).await;
        }
        if !start && !no_flush && !lu.ejected() {
            lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
        }
        lu.set_stopped(!start);
        Ok(ScsiReply::good(Bytes::new()))
    }
}

/// Media access needs a medium (SBC-3 §5.25: an unloaded removable medium
/// is NOT READY, MEDIUM NOT PRESENT) and a started unit (SBC-3 §4.19).
pub(super) fn ready(lu: &LogicalUnit) -> Result<(), Fail> {
    medium_present(lu)?;
    if lu.stopped() {
        return Err(Asc::LUN_NOT_READY_INIT_REQUIRED.into());
    }
    Ok(())
}

/// The capacity of an unloaded medium is unknown too (libiscsi's
/// NoMedia.NoMediaSBC expects READ CAPACITY to fail like media access).
pub(super) fn medium_present(lu: &LogicalUnit) -> Result<(), Fail> {
    if lu.ejected() {
        return Err(Asc::MEDIUM_NOT_PRESENT.into());
    }
    Ok(())
}

/// PREVENT ALLOW MEDIUM REMOVAL (SBC-3 §5.13).
pub(super) fn prevent_allow(lu: &LogicalUnit, nexus: &ItNexus, prevent: u8) -> Outcome {
    // SBC-3 §5.13: 10b and 11b are obsolete.
    if prevent > 1 {
        return Err(invalid_cdb(4, Some(1)));
    }
    lu.set_prevent(nexus, prevent == 1);
    Ok(ScsiReply::good(Bytes::new()))
}
