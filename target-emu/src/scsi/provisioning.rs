//! Logical block provisioning: WRITE SAME(10)/(16) (SBC-3 §5.42, §5.43)
//! and UNMAP (SBC-3 §5.28).

use super::identify::block_limits;
use super::media::ready;
use super::rw::{in_range, io_fail, protect, shared};
use super::{
    alloc, invalid_cdb, length_byte, Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget,
    MAX_LBA_STATUS_DESCRIPTORS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS,
};
use crate::lu::LogicalUnit;
use busrig_proto::scsi::provisioning::parse_unmap;
use busrig_proto::scsi::sense::{status, Asc, Sense};
use bytes::Bytes;

impl ScsiTarget {
    pub(super) async fn write_same(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    ) -> Outcome {
        ready(lu)?;
        let max = block_limits(lu).max_write_same;
        if u64::from(blocks) > max {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        in_range(lu, lba, blocks.into())?;
        // SBC-3 §5.42: with WSNZ clear, zero blocks means from LBA to the
        // last block, and MAXIMUM WRITE SAME LENGTH still applies.
        let blocks = if blocks == 0 {
            lu.blocks() - lba
        } else {
            u64::from(blocks)
        };
        if blocks > max {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        let blocks = blocks as u32;
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        protect(lu)?;
        let bs = lu.block_size() as usize;
        if !ndob && req.data_out.len() != bs {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        let _g = shared(lu, req.task).await?;
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        if unmap {
            lu.deallocate(lba, blocks.into())
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let one = if ndob {
            Bytes::new()
        } else {
            req.data_out.contiguous()
        };
        let one = &one[..];
        let chunk_blocks = (1usize << 20) / bs;
        let mut pattern = Vec::with_capacity(chunk_blocks * bs);
        for _ in 0..chunk_blocks.min(blocks as usize) {
            if ndob {
                pattern.resize(pattern.len() + bs, 0);
            } else {
                pattern.extend_from_slice(one);
            }
        }
        let pattern = Bytes::from(pattern);
        let mut done = 0u32;
        while done < blocks {
            let n = (blocks - done).min(chunk_blocks as u32);
            let data = pattern.slice(..n as usize * bs);
            lu.write(lba + u64::from(done), data.into(), false)
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
            done += n;
        }
        if !lu.mode().wce {
            lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    pub(super) async fn unmap(&self, lu: &LogicalUnit, req: &ScsiRequest<'_>, len: u32) -> Outcome {
        ready(lu)?;
        protect(lu)?;
        let data = &req.param_list(len)[..];
        let descs = parse_unmap(data)?;
        if descs.len() > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                .param_field(2, None)
                .into());
        }
        // Check every descriptor before deallocating anything.
        let mut total = 0u64;
        for (i, d) in descs.iter().enumerate() {
            if d.lba
                .checked_add(d.blocks.into())
                .is_none_or(|end| end > lu.blocks())
            {
                return Err(Sense::new(Asc::LBA_OUT_OF_RANGE).into());
            }
            total += u64::from(d.blocks);
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                    .param_field((8 + 16 * i + 8) as u16, None)
                    .into());
            }
        }
        let _g = shared(lu, req.task).await?;
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        for d in descs.iter().filter(|d| d.blocks > 0) {
            lu.deallocate(d.lba, d.blocks.into())
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    /// GET LBA STATUS (SBC-3 §5.7).
    pub(super) async fn get_lba_status(&self, lu: &LogicalUnit, lba: u64, len: u32) -> Outcome {
        ready(lu)?;
        if lba >= lu.blocks() {
            return Err(Asc::LBA_OUT_OF_RANGE.into());
        }
        let max = ((len as usize).saturating_sub(8) / 16).clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
        let extents = lu
            .lba_status(lba, max)
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        let data = busrig_proto::scsi::provisioning::lba_status(&extents);
        Ok(ScsiReply::good(alloc(data, len)))
    }
}
