//! Task management functions (RFC 7143 §11.5, §11.6; SAM-5 §7).
//!
//! The connection decides synchronously which of its own commands a TMF
//! affects (so their responses are suppressed even if they finish in the
//! meantime), then [`execute`] runs in its own task: it aborts the affected
//! commands through the target-wide task registry and waits until none of
//! them can run any more, performs the reset, and only then builds the TMF
//! response (RFC 7143 §11.6.1: "the response ... is sent only after the
//! affected tasks have been terminated").
//!
//! Resets follow the bus topology (docs/semantics.md "Bus reset"): on a parallel
//! SCSI bus or an FC arbitrated loop a target reset is a bus reset that
//! reaches every target on the bus; on a switched fabric it reaches the
//! addressed target only.

use std::sync::Arc;

use busrig_proto::pdu::{tmf, Header, Pdu, TaskMgmtResponse};

/// The function and response codes (RFC 7143 §11.5.1, §11.6.1).
pub use busrig_proto::pdu::tmf::*;
use bytes::Bytes;

use super::Portal;
use crate::nexus::ItNexus;
use crate::scsi::{ResetKind, ScsiTarget};
use crate::tasks::AbortBy;

/// What a TMF does, decided by the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmfPlan {
    /// Answer at once with this response code.
    Respond(u8),
    /// ABORT TASK of one of this session's commands.
    AbortTask { itt: u32 },
    /// ABORT TASK SET (this session's tasks on the LU) or, with
    /// `all_initiators`, CLEAR TASK SET (every task on the LU).
    AbortTaskSet { lun: u64, all_initiators: bool },
    /// LOGICAL UNIT RESET.
    LunReset { lun: u64 },
    /// TARGET WARM RESET or TARGET COLD RESET of target `target`.
    TargetReset { cold: bool, target: usize },
}

/// Who asked, for the response and the log.
pub struct TmfCtx {
    pub portal: Arc<Portal>,
    pub scsi: Arc<ScsiTarget>,
    pub nexus: ItNexus,
    pub itt: u32,
    pub function: u8,
    pub initiator: String,
    pub isid: String,
    pub peer: String,
}

/// The function's name for logs.
pub fn name(function: u8) -> &'static str {
    match function {
        tmf::ABORT_TASK => "ABORT TASK",
        tmf::ABORT_TASK_SET => "ABORT TASK SET",
        tmf::CLEAR_ACA => "CLEAR ACA",
        tmf::CLEAR_TASK_SET => "CLEAR TASK SET",
        tmf::LOGICAL_UNIT_RESET => "LOGICAL UNIT RESET",
        tmf::TARGET_WARM_RESET => "TARGET WARM RESET",
        tmf::TARGET_COLD_RESET => "TARGET COLD RESET",
        tmf::TASK_REASSIGN => "TASK REASSIGN",
        _ => "unknown function",
    }
}

fn response_name(code: u8) -> &'static str {
    match code {
        tmf::RESP_COMPLETE => "function complete",
        tmf::RESP_NO_TASK => "task does not exist",
        tmf::RESP_NO_LUN => "LUN does not exist",
        tmf::RESP_STILL_ALLEGIANT => "task still allegiant",
        tmf::RESP_REASSIGN_UNSUPPORTED => "task reassignment not supported",
        tmf::RESP_NOT_SUPPORTED => "function not supported",
        tmf::RESP_AUTH_FAILED => "function authorization failed",
        _ => "function rejected",
    }
}

/// The TMF response PDU, logged; `close_targets` travels with it.
pub fn response(ctx: &TmfCtx, code: u8, close_targets: Vec<usize>) -> (Pdu, Vec<usize>) {
    tracing::info!(
        initiator = %ctx.initiator,
        isid = %ctx.isid,
        target = %ctx.nexus.target,
        peer = %ctx.peer,
        function = name(ctx.function),
        response = response_name(code),
        "task management response"
    );
    let h = TaskMgmtResponse {
        response: code,
        itt: ctx.itt,
        ..Default::default()
    };
    (
        Pdu {
            header: Header::TaskMgmtResponse(h),
            ahs: Bytes::new(),
            data: Bytes::new(),
        },
        close_targets,
    )
}

/// Carries out a TMF and returns its response, plus the targets whose
/// sessions must be closed once the response is out (cold reset).
pub async fn execute(ctx: TmfCtx, plan: TmfPlan) -> (Pdu, Vec<usize>) {
    let tasks = ctx.portal.tasks().clone();
    let me = ctx.nexus.clone();
    match plan {
        TmfPlan::Respond(code) => response(&ctx, code, Vec::new()),
        TmfPlan::AbortTask { itt } => {
            // The connection already marked the command aborted, so even if
            // it finished just now its response is not sent: "function
            // complete" is consistent with what the initiator sees.
            tasks
                .abort_matching(AbortBy::Nexus(&me), |t| t.nexus == me && t.itt == itt)
                .await;
            response(&ctx, tmf::RESP_COMPLETE, Vec::new())
        }
        TmfPlan::AbortTaskSet {
            lun,
            all_initiators,
        } => {
            // ABORT TASK SET: this I_T nexus's tasks on the LU; CLEAR TASK
            // SET: every task on the LU, whoever sent it (SAM-5 §7.3, §7.4).
            tasks
                .abort_matching(AbortBy::Nexus(&me), |t| {
                    t.lun == lun
                        && if all_initiators {
                            t.nexus.target == me.target
                        } else {
                            t.nexus == me
                        }
                })
                .await;
            response(&ctx, tmf::RESP_COMPLETE, Vec::new())
        }
        TmfPlan::LunReset { lun } => {
            // Every task on the LU ends before the reset takes effect
            // (SAM-5 §7.7).
            tasks
                .abort_matching(AbortBy::Nexus(&me), |t| {
                    t.lun == lun && t.nexus.target == me.target
                })
                .await;
            let code = match ctx.scsi.lun_reset(lun, &me).await {
                Ok(()) => tmf::RESP_COMPLETE,
                Err(_) => tmf::RESP_NO_LUN,
            };
            response(&ctx, code, Vec::new())
        }
        TmfPlan::TargetReset { cold, target } => {
            let portal = &ctx.portal;
            let (affected, whole_bus) = portal.reset_scope(target);
            portal
                .reset_targets(
                    &affected,
                    |t| match (t == target, cold, whole_bus) {
                        (true, true, _) => ResetKind::Cold,
                        (_, _, true) => ResetKind::Bus,
                        _ => ResetKind::Warm,
                    },
                    AbortBy::Nexus(&me),
                )
                .await;
            if let (true, Some(bus)) = (whole_bus, portal.target(target).map(|t| t.def.bus)) {
                tracing::info!(
                    bus = %portal.buses[bus].name,
                    topology = %portal.buses[bus].topology,
                    targets = affected.len(),
                    "target reset propagated to the whole bus"
                );
                portal.faults().record(format!(
                    "bus reset of {} by {me} (target reset)",
                    portal.buses[bus].name
                ));
            }
            let close = if cold { vec![target] } else { Vec::new() };
            response(&ctx, tmf::RESP_COMPLETE, close)
        }
    }
}
