//! PERSISTENT RESERVE OUT (SPC-4 §6.16): parameter list collection and
//! the hand-over to the LU's reservation state (`crate::reservation`).

use super::{Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget};
use crate::lu::{LogicalUnit, UaScope};
use crate::nexus::ItNexus;
use crate::reservation::PrOutStep;
use crate::tasks::AbortBy;
use busrig_proto::scsi::sense::{status, Asc};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;

impl ScsiTarget {
    pub(super) async fn persistent_reserve_out(
        &self,
        lu: &Arc<LogicalUnit>,
        req: &ScsiRequest<'_>,
        len: u32,
    ) -> Outcome {
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        let param = &req.param_list(len)[..];
        let known = self.nexuses();
        // One PR OUT of this LU at a time, from applying its service action
        // until its state is durable (docs/semantics.md "Persistent reservations").
        let turn = Arc::clone(&lu.pr_out_turn).lock_owned().await;
        let step = lu
            .reservations
            .lock()
            .unwrap()
            .begin_persistent_reserve_out(req.nexus, req.cdb, param, &known);
        let effects = match step.map_err(pr_fail)? {
            PrOutStep::Done(effects) => {
                drop(turn);
                effects
            }
            PrOutStep::Save(pending) => {
                // SPC-4 §5.9.4: answered only once the new state is on
                // disk. The write and fsyncs run on the blocking pool with
                // no LU lock held, so other sessions' I/O goes on. The
                // blocking task finishes the command's state change and
                // releases the turn itself, so it completes even if this
                // future is dropped (the connection closed) meanwhile.
                let lun = lu.lun();
                let lu = Arc::clone(lu);
                let finished = tokio::task::spawn_blocking(move || {
                    let saved = pending.save();
                    let r = lu
                        .reservations
                        .lock()
                        .unwrap()
                        .finish_persistent_reserve_out(pending, saved);
                    drop(turn);
                    r
                })
                .await;
                match finished {
                    Ok(r) => r.map_err(pr_fail)?,
                    Err(e) => {
                        tracing::error!(
                            lun, nexus = %req.nexus, error = %e,
                            "the APTPL save of a PERSISTENT RESERVE OUT did not run to its end"
                        );
                        return Err(Asc::INTERNAL_TARGET_FAILURE.into());
                    }
                }
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lu::LunSpec;
    use crate::reservation::Reservations;
    use crate::scsi::ScsiRequest;
    use crate::tasks::{TaskInfo, TaskRegistry};
    use busrig_proto::scsi::pr::{PrOutAction, PrOutCdb, PrOutParams};

    const TARGET: &str = "iqn.2024-01.test:t";

    fn nexus(i: u8) -> ItNexus {
        ItNexus::new(
            &format!("iqn.2024-01.test:node-{i}"),
            [0x40, 0, 0, 0, 0, i],
            TARGET,
            1,
        )
    }

    async fn register(t: &ScsiTarget, n: &ItNexus, old: u64, new: u64, itt: u32) -> u8 {
        let param = PrOutParams {
            reservation_key: old,
            service_action_key: new,
            aptpl: true,
            ..Default::default()
        }
        .encode();
        let mut cdb = PrOutCdb {
            action: PrOutAction::Register,
            scope: 0,
            type_code: 0,
            parameter_list_length: param.len() as u32,
        }
        .encode()
        .to_vec();
        cdb.resize(16, 0);
        let task = t.tasks().register(TaskInfo {
            nexus: n.clone(),
            lun: 0,
            itt,
            cmd_sn: itt,
        });
        t.execute(ScsiRequest {
            nexus: n,
            lun: 0,
            cdb: &cdb,
            data_out: Bytes::from(param).into(),
            expected_in: 0,
            task: &task,
        })
        .await
        .status
    }

    /// Concurrent APTPL PR OUTs from many nexuses reach the disk in the
    /// order they were applied: after they all complete, the file holds
    /// exactly the state in memory, with every change counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_aptpl_pr_outs_are_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LunSpec::new(
            0,
            dir.path().join("lun0.img"),
            1 << 20,
            512,
            false,
            "S0".into(),
        );
        let lu = Arc::new(LogicalUnit::open(spec, TARGET).unwrap());
        let t = Arc::new(ScsiTarget::new(
            TARGET,
            vec![Arc::clone(&lu)],
            TaskRegistry::new(),
        ));
        const NEXUSES: u8 = 6;
        const ROUNDS: u64 = 5;
        for i in 1..=NEXUSES {
            t.nexus_created(&nexus(i));
        }
        let mut joins = Vec::new();
        for i in 1..=NEXUSES {
            let t = Arc::clone(&t);
            joins.push(tokio::spawn(async move {
                let n = nexus(i);
                let mut key = 0;
                for round in 1..=ROUNDS {
                    let next = u64::from(i) << 8 | round;
                    let itt = u32::from(i) << 16 | round as u32;
                    assert_eq!(register(&t, &n, key, next, itt).await, status::GOOD);
                    key = next;
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
        let in_memory = lu.reservations.lock().unwrap().pr_snapshot();
        assert_eq!(in_memory.generation, u32::from(NEXUSES) * ROUNDS as u32);
        let on_disk = Reservations::new(Some(dir.path().join("lun0.img.pr")))
            .unwrap()
            .pr_snapshot();
        assert_eq!(on_disk, in_memory);
        let mut keys: Vec<u64> = on_disk.registrations.iter().map(|r| r.key).collect();
        keys.sort();
        let expected: Vec<u64> = (1..=NEXUSES).map(|i| u64::from(i) << 8 | ROUNDS).collect();
        assert_eq!(keys, expected);
    }
}
