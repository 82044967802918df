//! Removable media and the stopped state: START STOP UNIT with LOEJ
//! (SBC-3 §5.25) and the NOT READY checks media access makes (SBC-3 §4.19).

use super::rw::io_fail;
use super::{invalid_cdb, Fail, Outcome, ScsiReply, ScsiTarget};
use crate::lu::{LogicalUnit, UaScope};
use crate::nexus::ItNexus;
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
