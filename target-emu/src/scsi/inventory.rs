//! The logical unit inventory of a running target: LUs added and removed
//! while sessions run (docs/semantics.md "Live reconfiguration").
//!
//! A change of the inventory establishes 3F/0E REPORTED LUNS DATA HAS
//! CHANGED for every I_T nexus of the target (SPC-4 §5.14, and the REPORT
//! LUNS command clause), queued on every LU that stays, so a nexus sees it
//! on the next command to whichever LU it uses. An added LU gets none of its
//! own: no command can have reached it before. A REPORT LUNS that completes
//! clears the condition for its nexus on every LU: the nexus has just read
//! the inventory the condition told it to read.
//!
//! Removal takes the LU out of the table first, so no command that starts
//! afterwards finds it; the caller then waits for (or aborts) the commands
//! that found it before, which are in the task set under its LUN.

use std::sync::Arc;

use busrig_proto::scsi::sense::Asc;

use super::ScsiTarget;
use crate::lu::{LogicalUnit, UaScope};
use crate::nexus::ItNexus;

/// The LUN is taken already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("LUN {0} exists already")]
pub struct LunTaken(pub u64);

impl ScsiTarget {
    /// Adds `lu` to the inventory. Every I_T nexus of the target is made
    /// known to it (so unit attentions reach them) and gets 3F/0E on every
    /// other LU.
    pub fn add_lun(&self, lu: Arc<LogicalUnit>) -> Result<(), LunTaken> {
        let id = lu.lun();
        {
            let mut luns = self.luns.write().unwrap_or_else(|p| p.into_inner());
            if luns.contains_key(&id) {
                return Err(LunTaken(id));
            }
            luns.insert(id, lu.clone());
        }
        // After the insert: a nexus created from now on finds the LU itself.
        for n in self.nexuses() {
            lu.add_nexus(&n);
        }
        self.inventory_changed(Some(id));
        Ok(())
    }

    /// Takes LU `lun` out of the inventory; commands that start from now
    /// on get LOGICAL UNIT NOT SUPPORTED. Every I_T nexus gets 3F/0E on the
    /// LUs that stay. Returns the LU, whose commands may still be running.
    pub fn remove_lun(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        let lu = self
            .luns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lun)?;
        self.inventory_changed(None);
        Some(lu)
    }

    /// Posts 3F/0E to every nexus on every LU but `except`.
    fn inventory_changed(&self, except: Option<u64>) {
        for lu in self.luns() {
            if Some(lu.lun()) != except {
                lu.post_unit_attention(UaScope::All, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
    }

    /// A REPORT LUNS from `nexus` completed: its pending 3F/0E conditions
    /// are cleared on every LU.
    pub(super) fn inventory_reported(&self, nexus: &ItNexus) {
        for lu in self.luns() {
            lu.clear_unit_attention(nexus, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        }
    }
}
