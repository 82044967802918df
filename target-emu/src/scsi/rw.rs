//! The read/write path helpers: range and transfer-length checks
//! (SBC-3 §4.5, §6.5.3), write protection (SBC-3 §4.13), medium locking,
//! and COMPARE AND WRITE (SBC-3 §5.2).

use super::identify::block_limits;
use super::media::ready;
use super::{
    invalid_cdb, length_byte, Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget, MAX_TRANSFER_BYTES,
};
use crate::lu::LogicalUnit;
use crate::tasks::TaskGuard;
use crate::write_data::WriteData;
use busrig_proto::scsi::cdb::Cdb;
use busrig_proto::scsi::sense::{status, Asc, Sense};
use bytes::Bytes;
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};
use tracing::warn;

impl ScsiTarget {
    pub(super) async fn compare_and_write(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u8,
        fua: bool,
    ) -> Outcome {
        ready(lu)?;
        // A Data-Out buffer longer than the largest COMPARE AND WRITE we
        // accept asks for more than MAXIMUM COMPARE AND WRITE LENGTH, even
        // when the one-byte NUMBER OF LOGICAL BLOCKS wrapped to zero (SBC-3
        // §5.3, §6.5.3).
        let bs = lu.block_size() as usize;
        if req.data_out.len() > 2 * usize::from(block_limits(lu).max_compare_and_write) * bs {
            return Err(invalid_cdb(13, None));
        }
        in_range(lu, lba, blocks.into())?;
        // SBC-3 §5.3: zero blocks is not an error and transfers nothing.
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        protect(lu)?;
        let half = blocks as usize * bs;
        if req.data_out.len() != 2 * half {
            // The Data-Out buffer must hold the verify and the write data
            // for exactly NUMBER OF LOGICAL BLOCKS.
            return Err(invalid_cdb(13, None));
        }
        let _g = exclusive(lu, req.task).await?;
        let medium = lu
            .read(lba, blocks.into())
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        if let Some(at) = first_difference(&medium, &req.data_out.slice(0, half).contiguous()) {
            // SBC-3 §5.3: INFORMATION is the offset of the first byte that
            // did not match.
            return Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                .with_information(at as u64)
                .into());
        }
        write(
            lu,
            req.task,
            lba,
            req.data_out.slice(half, usize::MAX),
            fua || !lu.mode().wce,
        )
        .await?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// READ(6/10/12/16) (SBC-3 §5.11 to §5.14).
    pub(super) async fn read_blocks(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
    ) -> Outcome {
        ready(lu)?;
        max_transfer(lu, req.cdb, blocks)?;
        in_range(lu, lba, blocks.into())?;
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let _g = shared(lu, req.task).await?;
        let data = lu
            .read(lba, blocks)
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        Ok(ScsiReply::good(Bytes::from(data)))
    }

    /// WRITE(6/10/12/16) (SBC-3 §5.32 to §5.35); FUA or a disabled write
    /// cache writes through.
    pub(super) async fn write_blocks(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        fua: bool,
    ) -> Outcome {
        let n = write_preamble(lu, req, lba, blocks)?;
        if n == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let _g = shared(lu, req.task).await?;
        let data = req.data_out.slice(0, n as usize * lu.block_size() as usize);
        write(lu, req.task, lba, data, fua || !lu.mode().wce).await?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// WRITE ATOMIC(16) (SBC-4 §5.48, §4.29): within the atomic limits of
    /// [`block_limits`], the blocks are written under the exclusive medium
    /// lock in one write, so no other command sees some of them changed
    /// and not others, and a power-loss fault drops all or none of them.
    pub(super) async fn write_atomic(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u16,
        fua: bool,
    ) -> Outcome {
        ready(lu)?;
        let limits = block_limits(lu);
        if u32::from(blocks) > limits.max_atomic_transfer {
            return Err(invalid_cdb(12, None));
        }
        in_range(lu, lba, blocks.into())?;
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        protect(lu)?;
        // SBC-4 §4.29.2: misaligned or not a multiple of the granularity.
        if !lba.is_multiple_of(u64::from(limits.atomic_alignment)) {
            return Err(invalid_cdb(2, None));
        }
        if u32::from(blocks) % limits.atomic_granularity != 0 {
            return Err(invalid_cdb(12, None));
        }
        let bs = lu.block_size() as usize;
        if req.data_out.len() < usize::from(blocks) * bs {
            // Part of an atomic write is no atomic write.
            return Err(Asc::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let _g = exclusive(lu, req.task).await?;
        let data = req.data_out.slice(0, usize::from(blocks) * bs);
        write(lu, req.task, lba, data, fua || !lu.mode().wce).await?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// ORWRITE(16) (SBC-3 §5.9).
    pub(super) async fn or_write(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        fua: bool,
    ) -> Outcome {
        let n = write_preamble(lu, req, lba, blocks)?;
        if n == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        // SBC-3 §5.9: read, OR and write are one atomic operation
        // with respect to every other command on the LU.
        let _g = exclusive(lu, req.task).await?;
        let mut medium = lu.read(lba, n).await.map_err(|e| io_fail(lu, "read", e))?;
        for (m, d) in medium.iter_mut().zip(req.data_out.contiguous().iter()) {
            *m |= d;
        }
        write(lu, req.task, lba, medium.into(), fua || !lu.mode().wce).await?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// WRITE AND VERIFY(10/12/16) (SBC-3 §5.40).
    pub(super) async fn write_and_verify(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        bytchk: bool,
    ) -> Outcome {
        let n = write_preamble(lu, req, lba, blocks)?;
        if n == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let _g = shared(lu, req.task).await?;
        let data = req.data_out.slice(0, n as usize * lu.block_size() as usize);
        // SBC-3 §5.40: the data is verified on the medium, so it
        // must be there first.
        write(lu, req.task, lba, data.clone(), true).await?;
        let data = data.contiguous();
        let back = lu.read(lba, n).await.map_err(|e| io_fail(lu, "read", e))?;
        if bytchk {
            if let Some(at) = first_difference(&back, &data) {
                return Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                    .with_information(at as u64)
                    .into());
            }
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// VERIFY(10/12/16) (SBC-4 §5.29).
    pub(super) async fn verify(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        bytchk: u8,
    ) -> Outcome {
        ready(lu)?;
        max_transfer(lu, req.cdb, blocks)?;
        in_range(lu, lba, blocks.into())?;
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let _g = shared(lu, req.task).await?;
        let medium = lu
            .read(lba, blocks)
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        let bs = lu.block_size() as usize;
        let miscompare = match bytchk {
            0 => None,
            1 => {
                let n = received_blocks(lu, &req.data_out, blocks) as usize * bs;
                first_difference(&medium[..n], &req.data_out.slice(0, n).contiguous())
            }
            _ => {
                // BYTCHK 11b: one block compared with every block.
                if req.data_out.len() < bs {
                    return Err(Asc::PARAMETER_LIST_LENGTH_ERROR.into());
                }
                let one = req.data_out.slice(0, bs).contiguous();
                let one = &one[..];
                medium
                    .chunks(bs)
                    .enumerate()
                    .find_map(|(i, blk)| first_difference(blk, one).map(|at| i * bs + at))
            }
        };
        match miscompare {
            Some(at) => Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                .with_information(at as u64)
                .into()),
            None => Ok(ScsiReply::good(Bytes::new())),
        }
    }

    /// SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22, §5.23).
    pub(super) async fn synchronize_cache(
        &self,
        lu: &LogicalUnit,
        lba: u64,
        blocks: u32,
    ) -> Outcome {
        ready(lu)?;
        in_range(lu, lba, blocks.into())?;
        lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// PRE-FETCH(10/16) (SBC-3 §5.10).
    pub(super) async fn prefetch(&self, lu: &LogicalUnit, lba: u64, blocks: u32) -> Outcome {
        ready(lu)?;
        in_range(lu, lba, blocks.into())?;
        // SBC-3 §5.10: GOOD (not CONDITION MET) because residency in
        // the host page cache cannot be promised.
        let n = if blocks == 0 {
            lu.blocks() - lba
        } else {
            blocks.into()
        };
        lu.prefetch(lba, n)
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        Ok(ScsiReply::good(Bytes::new()))
    }
}

/// The Data-Out length the CDB asks for.
pub(super) fn data_out_wanted(cdb: &Cdb, bs: u32) -> Option<u32> {
    Some(match *cdb {
        Cdb::Write { blocks, .. }
        | Cdb::WriteAndVerify { blocks, .. }
        | Cdb::OrWrite { blocks, .. } => blocks.saturating_mul(bs),
        Cdb::Verify {
            blocks, bytchk: 1, ..
        } => blocks.saturating_mul(bs),
        Cdb::Verify { bytchk: 3, .. } => bs,
        Cdb::CompareAndWrite { blocks, .. } => 2 * u32::from(blocks) * bs,
        Cdb::WriteSame { ndob, .. } => {
            if ndob {
                0
            } else {
                bs
            }
        }
        Cdb::WriteAtomic { blocks, .. } => u32::from(blocks).saturating_mul(bs),
        Cdb::Unmap { len }
        | Cdb::ModeSelect { len, .. }
        | Cdb::Sanitize { len, .. }
        | Cdb::ExtendedCopy { len } => len,
        Cdb::PersistentReserveOut(c) => c.parameter_list_length,
        _ => return None,
    })
}

/// SBC-3 §4.5: the whole range must lie within the capacity.
pub(super) fn in_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> Result<(), Fail> {
    match lba.checked_add(blocks) {
        Some(end) if lba <= lu.blocks() && end <= lu.blocks() => Ok(()),
        _ => Err(Asc::LBA_OUT_OF_RANGE.into()),
    }
}

/// SBC-3 §6.5.3: a TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH.
pub(super) fn max_transfer(lu: &LogicalUnit, cdb: &[u8], blocks: u32) -> Result<(), Fail> {
    if blocks > MAX_TRANSFER_BYTES / lu.block_size() {
        return Err(invalid_cdb(length_byte(cdb), None));
    }
    Ok(())
}

/// DATA PROTECT, WRITE PROTECTED for read-only LUs and SWP (SBC-3 §4.13).
pub(super) fn protect(lu: &LogicalUnit) -> Result<(), Fail> {
    if lu.write_protected() {
        return Err(Asc::WRITE_PROTECTED.into());
    }
    Ok(())
}

/// Whole blocks of Data-Out actually received, at most `blocks`: when the
/// initiator's Expected Data Transfer Length is shorter than the CDB asks,
/// only what it sent is written (libiscsi's residual tests; RFC 7143
/// §11.4.5.2 residual overflow).
/// The checks every write-type command (WRITE, ORWRITE, WRITE AND VERIFY)
/// makes before touching the medium, in SBC-3's order: ready, transfer
/// length, LBA range, write protection. Returns how many whole blocks the
/// Data-Out buffer holds (zero: nothing to do).
pub(super) fn write_preamble(
    lu: &LogicalUnit,
    req: &ScsiRequest<'_>,
    lba: u64,
    blocks: u32,
) -> Result<u32, Fail> {
    ready(lu)?;
    max_transfer(lu, req.cdb, blocks)?;
    in_range(lu, lba, blocks.into())?;
    protect(lu)?;
    Ok(received_blocks(lu, &req.data_out, blocks))
}

pub(super) fn received_blocks(lu: &LogicalUnit, data: &WriteData, blocks: u32) -> u32 {
    ((data.len() / lu.block_size() as usize) as u64).min(u64::from(blocks)) as u32
}

pub(super) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub(super) fn io_fail(lu: &LogicalUnit, what: &str, e: std::io::Error) -> Fail {
    warn!(lun = lu.lun(), path = %lu.spec().path.display(), error = %e, "{what} failed");
    if what == "read" {
        Asc::UNRECOVERED_READ_ERROR.into()
    } else {
        Asc::WRITE_ERROR.into()
    }
}

/// Shared access to the medium, given up if the task is aborted while
/// waiting (a COMPARE AND WRITE may hold it).
pub(super) async fn shared<'a>(
    lu: &'a LogicalUnit,
    task: &TaskGuard,
) -> Result<RwLockReadGuard<'a, ()>, Fail> {
    tokio::select! {
        biased;
        g = lu.media_lock.read() => Ok(g),
        _ = task.aborted() => Err(Fail::Status(status::TASK_ABORTED)),
    }
}

/// Exclusive access for COMPARE AND WRITE.
pub(super) async fn exclusive<'a>(
    lu: &'a LogicalUnit,
    task: &TaskGuard,
) -> Result<RwLockWriteGuard<'a, ()>, Fail> {
    tokio::select! {
        biased;
        g = lu.media_lock.write() => Ok(g),
        _ = task.aborted() => Err(Fail::Status(status::TASK_ABORTED)),
    }
}

/// The last abort check before the medium changes; after it the write is
/// carried out completely.
pub(super) async fn write(
    lu: &LogicalUnit,
    task: &TaskGuard,
    lba: u64,
    data: WriteData,
    sync: bool,
) -> Result<(), Fail> {
    if task.is_aborted() {
        return Err(Fail::Status(status::TASK_ABORTED));
    }
    lu.write(lba, data, sync)
        .await
        .map_err(|e| io_fail(lu, "write", e))
}
