//! The copy manager: EXTENDED COPY(LID1) (SPC-4 §6.4) with block device to
//! block device segments between logical units named by NAA
//! identification descriptors, on this target or on any other target of
//! the same bus, and RECEIVE COPY RESULTS (SPC-4 §6.18).
//!
//! Each segment is carried out as the READ of its source and the WRITE of
//! its destination would be, sent by the I_T nexus of the EXTENDED COPY
//! (on another target: the same initiator port through that target's
//! port): a copy target that is not ready, write protected, out of range
//! or reserved by someone else aborts the copy with COPY ABORTED, and the
//! status and sense data the READ or WRITE would have got are kept as the
//! copy's FAILED SEGMENT DETAILS. Segments run in order; data moves in
//! chunks under the shared medium lock of both LUs, checking for an abort
//! between chunks (a chunk once started is written completely).
//!
//! Held data (LIST ID USAGE 00b) belongs to the I_T nexus that sent the
//! copy and goes with it; at most [`HELD_LISTS`] copies per nexus are
//! kept, the oldest dropped first. A LIST IDENTIFIER still in progress on
//! the same nexus is refused with OPERATION IN PROGRESS.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};

use busrig_proto::scsi::cdb::{opcode, service_action, Cdb};
use busrig_proto::scsi::sense::{status, Asc, Sense};
use busrig_proto::scsi::xcopy::{
    self, BlockSegment, CopyLimits, CopyParams, CopyState, CopyStatus, IdentificationCscd,
    ListIdUsage,
};
use bytes::Bytes;
use tracing::{info, warn};

use super::media::ready;
use super::rw::{in_range, io_fail, protect, shared};
use super::{alloc, invalid_cdb, Fail, Outcome, ScsiReply, ScsiRequest, ScsiTarget};
use crate::lu::LogicalUnit;
use crate::nexus::ItNexus;

/// What the copy manager accepts (reported by OPERATING PARAMETERS and the
/// Third-party Copy VPD page).
pub(crate) const COPY_LIMITS: CopyLimits = CopyLimits {
    max_cscd_descriptors: 8,
    max_segment_descriptors: 64,
    max_descriptor_list_length: 8 * 32 + 64 * 28,
    // NUMBER OF BLOCKS is 16 bits: no segment of 4 KiB blocks is longer.
    max_segment_length: 65535 * 4096,
    total_concurrent_copies: 16,
    held_data_limit: 4096,
};
/// Copies whose results one I_T nexus can have held at once.
pub(crate) const HELD_LISTS: usize = 16;
/// Bytes moved per read and write of a segment.
const CHUNK_BYTES: u64 = 1 << 20;

/// The targets of a bus, for copies between them: filled once every
/// target of the bus exists, and kept current by live reconfiguration
/// (docs/semantics.md "Live reconfiguration").
#[derive(Debug, Default)]
pub struct BusPeers(std::sync::Mutex<Vec<(u16, Weak<ScsiTarget>)>>);

impl BusPeers {
    /// Every target of the bus with its target portal group tag.
    pub fn set(&self, targets: Vec<(u16, Weak<ScsiTarget>)>) {
        *self.lock() = targets;
    }

    /// A target added to the running bus.
    pub fn add(&self, tpgt: u16, target: &Arc<ScsiTarget>) {
        self.lock().push((tpgt, Arc::downgrade(target)));
    }

    /// A target removed from the running bus (and any that has gone).
    pub fn remove(&self, target: &Arc<ScsiTarget>) {
        self.lock().retain(|(_, t)| {
            t.strong_count() > 0 && !std::ptr::eq(t.as_ptr(), Arc::as_ptr(target))
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u16, Weak<ScsiTarget>)>> {
        // The list stays consistent whatever a panicking holder did.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn targets(&self) -> Vec<(u16, Arc<ScsiTarget>)> {
        self.lock()
            .iter()
            .filter_map(|(tpgt, t)| Some((*tpgt, t.upgrade()?)))
            .collect()
    }
}

/// One copy's held results.
#[derive(Debug, Clone)]
struct HeldCopy {
    nexus: ItNexus,
    list_id: u8,
    status: CopyStatus,
    /// The copy's final status and sense data, when it failed.
    failure: Option<(u8, Vec<u8>)>,
}

/// Held results of the copies this LU's copy manager ran.
#[derive(Debug, Default)]
pub(crate) struct HeldCopyResults {
    lists: VecDeque<HeldCopy>,
}

impl HeldCopyResults {
    fn find(&self, nexus: &ItNexus, list_id: u8) -> Option<&HeldCopy> {
        self.lists
            .iter()
            .find(|h| h.list_id == list_id && h.nexus == *nexus)
    }

    /// Starts holding `list_id` for `nexus`; refused while a copy with
    /// that identifier is in progress (SPC-4 §6.4.1).
    fn begin(&mut self, nexus: &ItNexus, list_id: u8) -> Result<(), Sense> {
        if let Some(h) = self.find(nexus, list_id) {
            if h.status.state == CopyState::InProgress {
                return Err(Sense::new(Asc::OPERATION_IN_PROGRESS));
            }
        }
        self.lists
            .retain(|h| !(h.list_id == list_id && h.nexus == *nexus));
        while self.lists.iter().filter(|h| h.nexus == *nexus).count() >= HELD_LISTS {
            let oldest = self.lists.iter().position(|h| h.nexus == *nexus);
            if let Some(i) = oldest {
                self.lists.remove(i);
            }
        }
        self.lists.push_back(HeldCopy {
            nexus: nexus.clone(),
            list_id,
            status: CopyStatus {
                state: CopyState::InProgress,
                segments_processed: 0,
                bytes: 0,
            },
            failure: None,
        });
        Ok(())
    }

    fn update(&mut self, nexus: &ItNexus, list_id: u8, f: impl FnOnce(&mut HeldCopy)) {
        if let Some(h) = self
            .lists
            .iter_mut()
            .find(|h| h.list_id == list_id && h.nexus == *nexus)
        {
            f(h);
        }
    }

    /// The I_T nexus is gone, and so is its held data.
    pub(crate) fn forget(&mut self, nexus: &ItNexus) {
        self.lists.retain(|h| h.nexus != *nexus);
    }
}

/// A copy source or destination: a logical unit and the I_T nexus the
/// copy reaches it through.
struct CopyTarget {
    lu: Arc<LogicalUnit>,
    nexus: ItNexus,
}

/// How a copy ended badly: the EXTENDED COPY's sense, and what the copy
/// target answered (kept as FAILED SEGMENT DETAILS).
struct CopyFailure {
    sense: Sense,
    target_status: u8,
    target_sense: Option<Sense>,
}

impl CopyFailure {
    fn unreachable(asc: Asc) -> CopyFailure {
        CopyFailure {
            sense: Sense::new(asc),
            target_status: status::CHECK_CONDITION,
            target_sense: None,
        }
    }

    /// The copy target refused the command the segment stands for.
    fn refused(by: Fail) -> CopyFailure {
        match by {
            Fail::Check(s) => CopyFailure {
                sense: Sense::new(Asc::COPY_ABORTED_NO_SENSE),
                target_status: status::CHECK_CONDITION,
                target_sense: Some(s),
            },
            Fail::Status(st) if st == status::TASK_ABORTED => CopyFailure {
                sense: Sense::new(Asc::ABORTED_BY_TARGET),
                target_status: st,
                target_sense: None,
            },
            Fail::Status(st) => CopyFailure {
                sense: Sense::new(Asc::THIRD_PARTY_DEVICE_FAILURE),
                target_status: st,
                target_sense: None,
            },
        }
    }
}

/// A READ(16) or WRITE(16) CDB of the segment's range, for the
/// reservation check of the copy target.
fn segment_cdb(write: bool, lba: u64, blocks: u16) -> Vec<u8> {
    let c = if write {
        Cdb::Write {
            lba,
            blocks: blocks.into(),
            dpo: false,
            fua: false,
        }
    } else {
        Cdb::Read {
            lba,
            blocks: blocks.into(),
            dpo: false,
            fua: false,
        }
    };
    c.encode()
}

impl ScsiTarget {
    /// The logical unit whose NAA designator `cscd` carries: on this target
    /// first, then on the other targets of the bus.
    fn resolve(&self, cscd: &IdentificationCscd, nexus: &ItNexus) -> Option<CopyTarget> {
        if !cscd.names_lu_by_naa() || cscd.peripheral_type() != 0 {
            return None;
        }
        let find = |t: &ScsiTarget| {
            t.lun_ids()
                .into_iter()
                .filter_map(|id| t.lun(id))
                .find(|lu| lu.naa()[..] == cscd.designator[..])
        };
        if let Some(lu) = find(self) {
            return Some(CopyTarget {
                lu,
                nexus: nexus.clone(),
            });
        }
        for (tpgt, t) in self.peers.targets() {
            if t.name == self.name {
                continue;
            }
            if let Some(lu) = find(&t) {
                let nexus = ItNexus::new(&nexus.initiator, nexus.isid, &t.name, tpgt);
                return Some(CopyTarget { lu, nexus });
            }
        }
        None
    }

    /// EXTENDED COPY(LID1) (SPC-4 §6.4).
    pub(super) async fn extended_copy(
        &self,
        lu: &Arc<LogicalUnit>,
        req: &ScsiRequest<'_>,
        len: u32,
    ) -> Outcome {
        // SPC-4 §6.4.1: a zero PARAMETER LIST LENGTH copies nothing.
        if len == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        if req.data_out.len() < len as usize {
            return Err(Asc::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let params = CopyParams::decode(&req.param_list(len), &COPY_LIMITS)?;
        let hold = params.usage == ListIdUsage::Hold;
        if params.usage != ListIdUsage::Discard {
            lu.copy_results
                .lock()
                .unwrap()
                .begin(req.nexus, params.list_id)?;
        }
        let mut done = (0u16, 0u64);
        let result = self.run_segments(&params, req, &mut done, hold, lu).await;
        let (segments, bytes) = done;
        let mut held = lu.copy_results.lock().unwrap();
        match result {
            Ok(()) => {
                held.update(req.nexus, params.list_id, |h| {
                    h.status = CopyStatus {
                        state: CopyState::Completed,
                        segments_processed: segments,
                        bytes,
                    };
                });
                if !hold {
                    held.lists
                        .retain(|h| !(h.list_id == params.list_id && h.nexus == *req.nexus));
                }
                info!(target = %self.name, lun = lu.lun(), nexus = %req.nexus, list_id = params.list_id, segments, bytes, "extended copy");
                Ok(ScsiReply::good(Bytes::new()))
            }
            Err(f) => {
                warn!(target = %self.name, lun = lu.lun(), nexus = %req.nexus, list_id = params.list_id, segment = segments, sense = %f.sense, target_status = format_args!("{:#04x}", f.target_status), target_sense = ?f.target_sense.map(|s| s.to_string()), "extended copy aborted");
                if hold {
                    let d_sense = lu.d_sense();
                    held.update(req.nexus, params.list_id, |h| {
                        h.status = CopyStatus {
                            state: CopyState::Failed,
                            segments_processed: segments,
                            bytes,
                        };
                        h.failure = Some((
                            f.target_status,
                            f.target_sense
                                .map(|s| s.encode(d_sense))
                                .unwrap_or_default(),
                        ));
                    });
                } else {
                    held.lists
                        .retain(|h| !(h.list_id == params.list_id && h.nexus == *req.nexus));
                }
                if f.target_status == status::TASK_ABORTED && f.target_sense.is_none() {
                    return Err(Fail::Status(status::TASK_ABORTED));
                }
                Err(f.sense.into())
            }
        }
    }

    async fn run_segments(
        &self,
        params: &CopyParams,
        req: &ScsiRequest<'_>,
        done: &mut (u16, u64),
        hold: bool,
        manager: &LogicalUnit,
    ) -> Result<(), CopyFailure> {
        let mut targets: BTreeMap<u16, CopyTarget> = BTreeMap::new();
        for seg in &params.segments {
            for index in [seg.source, seg.destination] {
                if targets.contains_key(&index) {
                    continue;
                }
                let cscd = params.cscds.get(usize::from(index)).ok_or_else(|| {
                    CopyFailure::unreachable(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE)
                })?;
                let t = self
                    .resolve(cscd, req.nexus)
                    .ok_or_else(|| CopyFailure::unreachable(Asc::UNREACHABLE_COPY_TARGET))?;
                targets.insert(index, t);
            }
            let src = &targets[&seg.source];
            let dst = &targets[&seg.destination];
            let bytes = copy_segment(seg, src, dst, req).await?;
            done.0 += 1;
            done.1 += bytes;
            if hold {
                let (segments, total) = *done;
                manager
                    .copy_results
                    .lock()
                    .unwrap()
                    .update(req.nexus, params.list_id, |h| {
                        h.status.segments_processed = segments;
                        h.status.bytes = total;
                    });
            }
        }
        Ok(())
    }

    /// RECEIVE COPY RESULTS (SPC-4 §6.18).
    pub(super) fn receive_copy_results(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        action: u8,
        list_id: u8,
        len: u32,
    ) -> Outcome {
        let data = match action {
            service_action::OPERATING_PARAMETERS => xcopy::operating_parameters(&COPY_LIMITS),
            _ => {
                let held = lu.copy_results.lock().unwrap();
                // SPC-4 §6.18.1: no held data for this list identifier.
                let h = held
                    .find(nexus, list_id)
                    .ok_or_else(|| invalid_cdb(2, None))?;
                if action == service_action::COPY_STATUS {
                    h.status.encode()
                } else {
                    match &h.failure {
                        Some((st, sense)) => xcopy::failed_segment_details(*st, sense),
                        None => return Err(invalid_cdb(2, None)),
                    }
                }
            }
        };
        Ok(ScsiReply::good(alloc(data, len)))
    }
}

/// The checks the READ or WRITE a segment stands for would meet on its
/// copy target (SPC-4 §5.9.1, SBC-3 §4.5, §4.13). Unit attentions are
/// left for the initiator's own commands to that LU.
fn check_copy_target(t: &CopyTarget, write: bool, lba: u64, blocks: u16) -> Result<(), Fail> {
    let lu = &t.lu;
    let op = if write {
        opcode::WRITE_16
    } else {
        opcode::READ_16
    };
    super::sanitize::gate(lu, op, true)?;
    if lu
        .reservations
        .lock()
        .unwrap()
        .check(&t.nexus, &segment_cdb(write, lba, blocks))
        .is_err()
    {
        return Err(Fail::Status(status::RESERVATION_CONFLICT));
    }
    ready(lu)?;
    in_range(lu, lba, blocks.into())?;
    if write {
        protect(lu)?;
    }
    Ok(())
}

/// Copies one block to block segment; returns the bytes written.
async fn copy_segment(
    seg: &BlockSegment,
    src: &CopyTarget,
    dst: &CopyTarget,
    req: &ScsiRequest<'_>,
) -> Result<u64, CopyFailure> {
    check_copy_target(src, false, seg.source_lba, seg.blocks).map_err(CopyFailure::refused)?;
    check_copy_target(dst, true, seg.destination_lba, seg.blocks).map_err(CopyFailure::refused)?;
    if src.lu.block_size() != dst.lu.block_size() {
        return Err(CopyFailure::unreachable(Asc::THIRD_PARTY_DEVICE_FAILURE));
    }
    if seg.blocks == 0 {
        return Ok(0);
    }
    let same = Arc::ptr_eq(&src.lu, &dst.lu);
    let _src_lock = shared(&src.lu, req.task)
        .await
        .map_err(CopyFailure::refused)?;
    let _dst_lock = if same {
        None
    } else {
        Some(
            shared(&dst.lu, req.task)
                .await
                .map_err(CopyFailure::refused)?,
        )
    };
    let bs = u64::from(src.lu.block_size());
    let total = u64::from(seg.blocks);
    let per_chunk = CHUNK_BYTES / bs;
    // Overlapping ranges of one LU with the destination after the source
    // are copied from the end, so no block is read after it was written.
    let backwards = same
        && seg.destination_lba > seg.source_lba
        && seg.destination_lba < seg.source_lba + total;
    let mut chunks: Vec<(u64, u64)> = (0..total)
        .step_by(per_chunk as usize)
        .map(|off| (off, per_chunk.min(total - off)))
        .collect();
    if backwards {
        chunks.reverse();
    }
    let sync = !dst.lu.mode().wce;
    for (off, n) in chunks {
        let data = src
            .lu
            .read(seg.source_lba + off, n as u32)
            .await
            .map_err(|e| CopyFailure::refused(io_fail(&src.lu, "read", e)))?;
        super::rw::write(
            &dst.lu,
            req.task,
            seg.destination_lba + off,
            data.into(),
            sync,
        )
        .await
        .map_err(CopyFailure::refused)?;
    }
    dst.lu.record_write(&dst.nexus);
    Ok(total * bs)
}
