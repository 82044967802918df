//! PERSISTENT RESERVE OUT (SPC-4 §6.16): parameter list collection and
//! the hand-over to the LU's reservation state (`crate::reservation`).

use super::{Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget};
use crate::lu::{LogicalUnit, UaScope};
use crate::nexus::ItNexus;
use crate::tasks::AbortBy;
use busrig_proto::scsi::sense::status;
use bytes::Bytes;
use std::collections::BTreeSet;

impl ScsiTarget {
    pub(super) async fn persistent_reserve_out(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        len: u32,
    ) -> Outcome {
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        let param = &req.param_list(len)[..];
        let known = self.nexuses();
        let r = lu
            .reservations
            .lock()
            .unwrap()
            .persistent_reserve_out(req.nexus, req.cdb, param, &known);
        let effects = r.map_err(pr_fail)?;
        for (n, asc) in &effects.unit_attentions {
            lu.post_unit_attention(UaScope::One(n.clone()), *asc);
        }
        if !effects.abort_tasks_of.is_empty() {
            // SPC-4 §5.9.11.5: PREEMPT AND ABORT aborts the preempted
            // nexuses' tasks on this LU before it completes. The task
            // carrying this command cannot be told apart from its nexus's
            // other tasks, so the requesting nexus's own tasks are left
            // running rather than waiting on ourselves.
            let victims: BTreeSet<ItNexus> = effects
                .abort_tasks_of
                .iter()
                .filter(|n| *n != req.nexus)
                .cloned()
                .collect();
            let lun = lu.lun();
            let name = self.name.clone();
            self.tasks
                .abort_matching(AbortBy::Nexus(req.nexus), |t| {
                    t.lun == lun && *t.nexus.target == *name && victims.contains(&t.nexus)
                })
                .await;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }
}

pub(super) fn pr_fail(e: crate::reservation::PrError) -> Fail {
    match e {
        crate::reservation::PrError::Conflict => Fail::Status(status::RESERVATION_CONFLICT),
        crate::reservation::PrError::Sense(s) => Fail::Check(s),
    }
}
