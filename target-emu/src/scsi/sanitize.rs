//! SANITIZE (SBC-4 §5.30, §4.11): OVERWRITE and BLOCK ERASE as a
//! background job on the logical unit, and EXIT FAILURE MODE.
//!
//! The job runs on its own tokio task, holding the LU's medium lock
//! exclusively, so the target keeps serving every other LU and every
//! other command. While it runs, every command to the LU but INQUIRY,
//! REPORT LUNS and REQUEST SENSE gets NOT READY, LOGICAL UNIT NOT READY,
//! SANITIZE IN PROGRESS (02/04/1B) with a progress indication, and REQUEST
//! SENSE reports the same condition (SBC-4 §4.11.2). Task management
//! functions and resets do not stop it; with IMMED 0 the command waits for
//! the job, and an abort of that command ends only the waiting.
//!
//! A job that fails (an I/O error on the backing file) leaves the LU in
//! sanitize failure mode: media access gets MEDIUM ERROR, SANITIZE COMMAND
//! FAILED (03/31/03) until a SANITIZE completes, or until EXIT FAILURE MODE
//! when the failed command had AUSE set (SBC-4 §4.11.3).
//!
//! Not emulated: a restart of the target during a sanitize forgets it (a
//! real device resumes it after power on); CRYPTOGRAPHIC ERASE (busrig does
//! not encrypt) answers INVALID FIELD IN CDB.
//!
//! OVERWRITE parameter list (SBC-4 §5.30.3):
//!
//! ```text
//! byte 0     INVERT(7) | TEST(6..5) | OVERWRITE COUNT(4..0)
//! byte 1     reserved
//! bytes 2-3  INITIALIZATION PATTERN LENGTH (1 ..= logical block length)
//! bytes 4..  INITIALIZATION PATTERN, repeated to fill each block
//! ```

use std::sync::Arc;

use busrig_proto::scsi::cdb::{opcode, service_action};
use busrig_proto::scsi::sense::{status, Asc, Sense};
use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::media::ready;
use super::rw::protect;
use super::{invalid_cdb, Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget};
use crate::lu::LogicalUnit;
use crate::write_data::WriteData;

/// Bytes one write of an OVERWRITE pass covers; each is durable before
/// the next starts, so an overwrite runs at the backing store's durable
/// write rate (on the CI machine about 180 MB/s: 6 s for a 1 GiB LUN).
const CHUNK_BYTES: usize = 1 << 20;
/// Blocks one deallocation of a BLOCK ERASE covers (progress steps).
const ERASE_CHUNK_BYTES: u64 = 64 << 20;

/// Where a logical unit stands with SANITIZE.
#[derive(Debug, Default)]
pub(crate) enum SanitizeState {
    #[default]
    Idle,
    /// A job runs: `done` of `total` units of work.
    Running { done: u64, total: u64 },
    /// The last job failed; `ause` says EXIT FAILURE MODE may end it.
    Failed { ause: bool },
}

/// What the job does.
#[derive(Debug, Clone)]
enum Operation {
    /// Write `block` (the pattern repeated) over every block, `passes`
    /// times, inverting it between passes when `invert`.
    Overwrite {
        block: Vec<u8>,
        passes: u8,
        invert: bool,
    },
    /// Deallocate every block (they read back as zeros, LBPRZ).
    BlockErase,
}

impl LogicalUnit {
    /// The progress of a running SANITIZE, in 65536ths.
    pub(crate) fn sanitize_progress(&self) -> Option<u16> {
        match *self.sanitize.lock().unwrap() {
            SanitizeState::Running { done, total } => {
                Some((u128::from(done) * 65536 / u128::from(total.max(1))).min(65535) as u16)
            }
            _ => None,
        }
    }

    fn sanitize_failed(&self) -> bool {
        matches!(*self.sanitize.lock().unwrap(), SanitizeState::Failed { .. })
    }
}

/// NOT READY, SANITIZE IN PROGRESS with the job's progress.
pub(super) fn not_ready(lu: &LogicalUnit) -> Sense {
    Sense::new(Asc::SANITIZE_IN_PROGRESS).with_progress(lu.sanitize_progress().unwrap_or(0))
}

/// The SBC-4 §4.11 gate every command to a LU passes, after unit
/// attentions: a running job answers NOT READY, a failed one MEDIUM
/// ERROR for media access.
pub(super) fn gate(lu: &LogicalUnit, op: u8, media_access: bool) -> Result<(), Sense> {
    if matches!(
        op,
        opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
    ) {
        return Ok(());
    }
    if lu.sanitize_progress().is_some() {
        return Err(not_ready(lu));
    }
    if media_access && lu.sanitize_failed() {
        return Err(Sense::new(Asc::SANITIZE_COMMAND_FAILED));
    }
    Ok(())
}

/// Decodes the OVERWRITE parameter list into the block to write.
fn overwrite_params(param: &[u8], block_size: usize) -> Result<Operation, Fail> {
    let passes = param[0] & 0x1f;
    if param[0] & 0x60 != 0 {
        // TEST: vendor-specific test modes, none supported.
        return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
            .param_field(0, Some(6))
            .into());
    }
    if passes == 0 {
        return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
            .param_field(0, Some(4))
            .into());
    }
    let len = usize::from(u16::from_be_bytes([param[2], param[3]]));
    if len == 0 || len > block_size || 4 + len > param.len() {
        return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
            .param_field(2, None)
            .into());
    }
    let pattern = &param[4..4 + len];
    let block = pattern.iter().copied().cycle().take(block_size).collect();
    Ok(Operation::Overwrite {
        block,
        passes,
        invert: param[0] & 0x80 != 0,
    })
}

impl ScsiTarget {
    /// SANITIZE (SBC-4 §5.30).
    pub(super) async fn sanitize(
        &self,
        lu: &Arc<LogicalUnit>,
        req: &ScsiRequest<'_>,
        immed: bool,
        ause: bool,
        action: u8,
        len: u32,
    ) -> Outcome {
        ready(lu)?;
        let bs = lu.block_size() as usize;
        let op = match action {
            service_action::SANITIZE_EXIT_FAILURE_MODE => {
                if len != 0 {
                    return Err(invalid_cdb(7, None));
                }
                let mut st = lu.sanitize.lock().unwrap();
                return match *st {
                    SanitizeState::Failed { ause: false } => Err(invalid_cdb(1, Some(4))),
                    SanitizeState::Failed { ause: true } => {
                        *st = SanitizeState::Idle;
                        info!(target = %self.name, lun = lu.lun(), by = %req.nexus, "sanitize failure mode ended");
                        Ok(ScsiReply::good(Bytes::new()))
                    }
                    _ => Ok(ScsiReply::good(Bytes::new())),
                };
            }
            service_action::SANITIZE_BLOCK_ERASE => {
                if len != 0 {
                    return Err(invalid_cdb(7, None));
                }
                Operation::BlockErase
            }
            _ => {
                // OVERWRITE: a header and a pattern of at most one block.
                if len < 5 || len as usize > bs + 4 {
                    return Err(invalid_cdb(7, None));
                }
                if req.data_out.len() < len as usize {
                    return Err(Asc::PARAMETER_LIST_LENGTH_ERROR.into());
                }
                overwrite_params(&req.param_list(len), bs)?
            }
        };
        protect(lu)?;
        let total = match &op {
            Operation::Overwrite { passes, .. } => lu.blocks() * u64::from(*passes),
            Operation::BlockErase => lu.blocks(),
        };
        {
            let mut st = lu.sanitize.lock().unwrap();
            if matches!(*st, SanitizeState::Running { .. }) {
                return Err(not_ready(lu).into());
            }
            *st = SanitizeState::Running { done: 0, total };
        }
        info!(target = %self.name, lun = lu.lun(), by = %req.nexus, ?action, immed, "sanitize started");
        let (tx, rx) = oneshot::channel();
        let job_lu = lu.clone();
        let target = self.name.clone();
        tokio::spawn(async move {
            let result = run_job(&job_lu, op).await;
            let ok = result.is_ok();
            *job_lu.sanitize.lock().unwrap() = match result {
                Ok(()) => {
                    info!(target = %target, lun = job_lu.lun(), "sanitize completed");
                    SanitizeState::Idle
                }
                Err(e) => {
                    warn!(target = %target, lun = job_lu.lun(), error = %e, "sanitize failed: the LU is in sanitize failure mode");
                    SanitizeState::Failed { ause }
                }
            };
            let _ = tx.send(ok);
        });
        if immed {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        tokio::select! {
            ok = rx => match ok {
                Ok(true) => Ok(ScsiReply::good(Bytes::new())),
                _ => Err(Asc::SANITIZE_COMMAND_FAILED.into()),
            },
            // The job goes on (SBC-4 §4.11.1); only this command ends.
            _ = req.task.aborted() => Err(Fail::Status(status::TASK_ABORTED)),
        }
    }
}

/// Carries out one sanitize operation on the whole LU, with the medium
/// lock held, updating the progress as it goes; durable at the end.
async fn run_job(lu: &LogicalUnit, op: Operation) -> std::io::Result<()> {
    let _medium = lu.media_lock.write().await;
    let blocks = lu.blocks();
    let bs = lu.block_size() as usize;
    let progress = |done: u64| {
        if let SanitizeState::Running { done: d, .. } = &mut *lu.sanitize.lock().unwrap() {
            *d = done;
        }
    };
    match op {
        Operation::Overwrite {
            block,
            passes,
            invert,
        } => {
            let per_chunk = (CHUNK_BYTES / bs) as u64;
            for pass in 0..u64::from(passes) {
                let flip = invert && pass % 2 == 1;
                let one: Vec<u8> = block.iter().map(|b| if flip { !b } else { *b }).collect();
                let chunk = Bytes::from(one.repeat(per_chunk as usize));
                let mut lba = 0;
                while lba < blocks {
                    let n = per_chunk.min(blocks - lba);
                    let data = WriteData::from(chunk.slice(..n as usize * bs));
                    // Written through: the progress reported is what is on
                    // the medium, and no cache holds the old data.
                    lu.write(lba, data, true).await?;
                    lba += n;
                    progress(pass * blocks + lba);
                }
            }
        }
        Operation::BlockErase => {
            let per_chunk = ERASE_CHUNK_BYTES / bs as u64;
            let mut lba = 0;
            while lba < blocks {
                let n = per_chunk.min(blocks - lba);
                lu.deallocate(lba, n).await?;
                lba += n;
                progress(lba);
            }
        }
    }
    // No cache may still hold what was there before (SBC-4 §4.11.1).
    lu.sync().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(byte0: u8, pattern: &[u8]) -> Vec<u8> {
        let mut p = vec![byte0, 0];
        p.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
        p.extend_from_slice(pattern);
        p
    }

    #[test]
    fn overwrite_pattern_fills_the_block() {
        match overwrite_params(&params(0x82, &[1, 2, 3]), 8) {
            Ok(Operation::Overwrite {
                block,
                passes,
                invert,
            }) => {
                assert_eq!(block, vec![1, 2, 3, 1, 2, 3, 1, 2]);
                assert_eq!(passes, 2);
                assert!(invert);
            }
            _ => panic!("valid parameters refused"),
        }
    }

    /// SBC-4 §5.30.3: one row per invalid OVERWRITE parameter list.
    #[test]
    fn overwrite_parameter_checks() {
        let bad =
            |p: Vec<u8>| matches!(overwrite_params(&p, 8), Err(Fail::Check(s)) if s.asc == 0x26);
        assert!(bad(params(0x00, &[1])), "OVERWRITE COUNT 0");
        assert!(bad(params(0x21, &[1])), "TEST field");
        assert!(bad(params(0x01, &[])), "INITIALIZATION PATTERN LENGTH 0");
        assert!(bad(params(0x01, &[0; 9])), "pattern longer than a block");
        let mut short = params(0x01, &[1, 2, 3, 4]);
        short.truncate(6);
        assert!(bad(short), "pattern longer than the list");
    }
}
