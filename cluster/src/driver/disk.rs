//! Shared-disk operations: a [`DiskExecutor`] performs one [`DiskOp`] and
//! returns the [`DiskResult`] the node expects, and [`InitiatorDisks`] does
//! so over the iSCSI initiator.
//!
//! Status mapping (one place, STYLE rule 6):
//!
//! ```text
//! initiator result                        DiskResult
//! Ok                                      Good / Data(bytes)
//! Err(ReservationConflict)                Conflict       (SPC-2 §5.5.1, SPC-4 §5.9)
//! Err(UNIT ATTENTION), retries exhausted  Failed("unit attention: ..")
//! Err(anything else: I/O, timeout, ..)    Failed(error text)
//! ```
//!
//! Unit attentions after a bus reset or a reservation change are retried by
//! the [`Disk`] itself when it was built with
//! [`Disk::with_reset_retries`]; the node learns of a preemption
//! from READ KEYS, so it does not need to see the unit attention.

// `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use busrig_initiator::scsi::cdb;
use busrig_initiator::{Disk, Error};
use busrig_proto::scsi::pr::{PrInAction, PrOutAction, PrOutParams, PrType};
use bytes::Bytes;

use crate::arbiter::{DiskId, DiskOp, DiskResult};

/// Allocation length for PR IN: room for hundreds of keys.
const PR_IN_ALLOC: u16 = 8192;

/// Performs the node's disk operations.
pub trait DiskExecutor {
    /// Issues `op` on `disk` and reports how it ended; never panics on a
    /// device error.
    fn execute(&self, disk: DiskId, op: DiskOp) -> impl Future<Output = DiskResult> + Send;
}

/// The node's shared disks reached through the iSCSI initiator, and the
/// majority model's local replica file.
#[derive(Debug)]
pub struct InitiatorDisks {
    pub quorum: Option<Disk>,
    pub witness: Option<Disk>,
    /// `DiskId::Local`: the majority model's replica of the quorum log.
    pub local: Option<LocalDisk>,
}

impl InitiatorDisks {
    fn disk(&self, id: DiskId) -> Option<&Disk> {
        match id {
            DiskId::Quorum => self.quorum.as_ref(),
            DiskId::Witness => self.witness.as_ref(),
            DiskId::Local => None,
        }
    }
}

impl DiskExecutor for InitiatorDisks {
    async fn execute(&self, id: DiskId, op: DiskOp) -> DiskResult {
        if id == DiskId::Local {
            return match &self.local {
                Some(l) => l.execute(op).await,
                None => DiskResult::Failed("no local replica file is configured".into()),
            };
        }
        let Some(disk) = self.disk(id) else {
            return DiskResult::Failed(format!("no {id:?} disk is configured"));
        };
        let kind = op_name(&op);
        let result = issue(disk, op).await;
        if let DiskResult::Failed(why) = &result {
            tracing::warn!(disk = ?id, op = kind, error = %why, "disk operation failed");
        }
        result
    }
}

/// The majority model's local replica of the quorum log: a file in the
/// node's data folder, of a fixed size (`log_manager::region_config(limit)
/// .region_len`). WRITE with FUA is a positioned write followed by
/// `fdatasync` (docs/semantics.md "Durability"); READ past the end of what was
/// written reads zeros. It is no shared disk: reservation operations fail.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    file: Arc<File>,
    size: u64,
}

impl LocalDisk {
    /// Opens (creating if needed) the replica file at `path` and sets its
    /// length to `size` bytes.
    pub fn open(path: &Path, size: u64) -> io::Result<LocalDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != size {
            file.set_len(size)?;
            file.sync_all()?;
        }
        Ok(LocalDisk {
            file: Arc::new(file),
            size,
        })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn in_range(&self, offset: u64, len: usize) -> Result<(), DiskResult> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DiskResult::Failed(format!(
                "{len} bytes at {offset} are outside the {}-byte local replica",
                self.size
            ))),
        }
    }

    /// Performs `op` on a blocking thread (file I/O with fdatasync).
    pub async fn execute(&self, op: DiskOp) -> DiskResult {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.execute_blocking(op)).await {
            Ok(r) => r,
            Err(e) => DiskResult::Failed(format!("local replica I/O task failed: {e}")),
        }
    }

    /// Performs `op` on the calling thread.
    pub fn execute_blocking(&self, op: DiskOp) -> DiskResult {
        match op {
            DiskOp::Write { offset, data } => {
                if let Err(r) = self.in_range(offset, data.len()) {
                    return r;
                }
                let r = self
                    .file
                    .write_all_at(&data, offset)
                    .and_then(|()| self.file.sync_data());
                match r {
                    Ok(()) => DiskResult::Good,
                    Err(e) => DiskResult::Failed(format!("local replica write: {e}")),
                }
            }
            DiskOp::Read { offset, len } => {
                if let Err(r) = self.in_range(offset, len) {
                    return r;
                }
                let mut buf = vec![0u8; len];
                match self.file.read_exact_at(&mut buf, offset) {
                    Ok(()) => DiskResult::Data(buf),
                    Err(e) => DiskResult::Failed(format!("local replica read: {e}")),
                }
            }
            other => DiskResult::Failed(format!(
                "{} is not supported on the local replica file",
                op_name(&other)
            )),
        }
    }
}

/// A short name of the operation, for logs.
pub fn op_name(op: &DiskOp) -> &'static str {
    match op {
        DiskOp::Reserve => "reserve6",
        DiskOp::Release => "release6",
        DiskOp::BusReset => "bus-reset",
        DiskOp::PrRegister { .. } => "pr-register",
        DiskOp::PrUnregister { .. } => "pr-unregister",
        DiskOp::PrReserve { .. } => "pr-reserve",
        DiskOp::PrPreempt { .. } => "pr-preempt",
        DiskOp::PrReadKeys => "pr-read-keys",
        DiskOp::PrReadReservation => "pr-read-reservation",
        DiskOp::Write { .. } => "write-fua",
        DiskOp::Read { .. } => "read",
    }
}

/// The PR OUT service action, the reservation type for the CDB and the
/// parameter list for a PR operation, or None for operations that are not
/// PR OUT.
pub fn pr_out_params(op: &DiskOp) -> Option<(PrOutAction, Option<PrType>, PrOutParams)> {
    let we = Some(PrType::WriteExclusive);
    let p = |reservation_key, service_action_key| PrOutParams {
        reservation_key,
        service_action_key,
        ..PrOutParams::default()
    };
    Some(match *op {
        DiskOp::PrRegister { key } => (PrOutAction::RegisterAndIgnoreExistingKey, None, p(0, key)),
        // REGISTER with a zero service action key unregisters (SPC-4 §5.9.7).
        DiskOp::PrUnregister { key } => (PrOutAction::Register, None, p(key, 0)),
        DiskOp::PrReserve { key } => (PrOutAction::Reserve, we, p(key, 0)),
        DiskOp::PrPreempt { key, victim_key } => (PrOutAction::Preempt, we, p(key, victim_key)),
        _ => return None,
    })
}

/// Which blocks cover bytes `offset..offset + len`, and where the bytes
/// start in the first block: `(lba, blocks, skip)`.
pub fn block_span(offset: u64, len: usize, block: u32) -> (u64, u32, usize) {
    let b = u64::from(block);
    let lba = offset / b;
    let end = offset + len as u64;
    let blocks = end.div_ceil(b) - lba;
    (lba, blocks as u32, (offset % b) as usize)
}

/// Maps an initiator outcome to what the node expects.
pub fn map_result(r: Result<Option<Bytes>, Error>) -> DiskResult {
    match r {
        Ok(None) => DiskResult::Good,
        Ok(Some(b)) => DiskResult::Data(b.to_vec()),
        Err(Error::ReservationConflict) => DiskResult::Conflict,
        Err(e) if e.is_unit_attention() => DiskResult::Failed(format!("unit attention: {e}")),
        Err(e) => DiskResult::Failed(e.to_string()),
    }
}

/// Performs `op` on `disk` and maps the outcome (the table above).
pub async fn issue(disk: &Disk, op: DiskOp) -> DiskResult {
    if let Some((action, pr_type, params)) = pr_out_params(&op) {
        return map_result(disk.pr_out(action, pr_type, &params).await.map(|()| None));
    }
    let none = |r: Result<(), Error>| map_result(r.map(|()| None));
    match op {
        DiskOp::Reserve => none(disk.reserve6().await),
        DiskOp::Release => none(disk.release6().await),
        // A SCSI bus reset clears every SCSI-2 reservation on every LUN of
        // the bus: the target-wide warm reset (SAM-5 §7.8).
        DiskOp::BusReset => none(disk.target_warm_reset().await),
        DiskOp::PrReadKeys => pr_in(disk, PrInAction::ReadKeys).await,
        DiskOp::PrReadReservation => pr_in(disk, PrInAction::ReadReservation).await,
        DiskOp::Write { offset, data } => write(disk, offset, data).await,
        DiskOp::Read { offset, len } => read(disk, offset, len).await,
        DiskOp::PrRegister { .. }
        | DiskOp::PrUnregister { .. }
        | DiskOp::PrReserve { .. }
        | DiskOp::PrPreempt { .. } => unreachable!("PR OUT handled above"),
    }
}

/// PR IN returning the raw parameter data, which the arbiter parses.
async fn pr_in(disk: &Disk, action: PrInAction) -> DiskResult {
    map_result(
        disk.execute(cdb::persistent_reserve_in(action, PR_IN_ALLOC))
            .await
            .map(Some),
    )
}

async fn write(disk: &Disk, offset: u64, data: Vec<u8>) -> DiskResult {
    let bl = match disk.block_length().await {
        Ok(b) => b,
        Err(e) => return map_result(Err(e)),
    };
    // The quorum log writes whole 4 KiB-aligned blocks; anything else is
    // a bug in the caller, not a device error to retry.
    if offset % u64::from(bl) != 0 || data.len() % bl as usize != 0 {
        return DiskResult::Failed(format!(
            "write of {} bytes at {offset} is not aligned to {bl}-byte blocks",
            data.len()
        ));
    }
    let lba = offset / u64::from(bl);
    map_result(
        disk.write(lba, Bytes::from(data), true)
            .await
            .map(|()| None),
    )
}

async fn read(disk: &Disk, offset: u64, len: usize) -> DiskResult {
    if len == 0 {
        return DiskResult::Data(Vec::new());
    }
    let bl = match disk.block_length().await {
        Ok(b) => b,
        Err(e) => return map_result(Err(e)),
    };
    let (lba, blocks, skip) = block_span(offset, len, bl);
    match disk.read(lba, blocks).await {
        Ok(b) => DiskResult::Data(b[skip..skip + len].to_vec()),
        Err(e) => map_result(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_span_covers_unaligned_ranges() {
        // (offset, len, block) -> (lba, blocks, skip)
        let rows = [
            ((0, 4096, 512), (0, 8, 0)),
            ((4096, 4096, 4096), (1, 1, 0)),
            ((100, 10, 512), (0, 1, 100)),
            ((510, 4, 512), (0, 2, 510)),
            ((1024, 1, 512), (2, 1, 0)),
        ];
        for ((o, l, b), want) in rows {
            assert_eq!(block_span(o, l, b), want, "offset {o} len {l} block {b}");
        }
    }

    #[test]
    fn pr_out_parameters_follow_spc4() {
        let (a, t, p) = pr_out_params(&DiskOp::PrRegister { key: 5 }).unwrap();
        assert_eq!(
            (a, p.reservation_key, p.service_action_key, t),
            (PrOutAction::RegisterAndIgnoreExistingKey, 0, 5, None)
        );
        let (a, _, p) = pr_out_params(&DiskOp::PrUnregister { key: 5 }).unwrap();
        assert_eq!(
            (a, p.reservation_key, p.service_action_key),
            (PrOutAction::Register, 5, 0)
        );
        let (a, t, p) = pr_out_params(&DiskOp::PrReserve { key: 5 }).unwrap();
        assert_eq!(
            (a, p.reservation_key, t),
            (PrOutAction::Reserve, 5, Some(PrType::WriteExclusive))
        );
        let (a, t, p) = pr_out_params(&DiskOp::PrPreempt {
            key: 5,
            victim_key: 9,
        })
        .unwrap();
        assert_eq!(
            (a, p.reservation_key, p.service_action_key, t),
            (PrOutAction::Preempt, 5, 9, Some(PrType::WriteExclusive))
        );
        assert!(pr_out_params(&DiskOp::Reserve).is_none());
        assert!(pr_out_params(&DiskOp::PrReadKeys).is_none());
    }

    #[test]
    fn local_disk_writes_reads_and_refuses_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.log");
        let d = LocalDisk::open(&path, 8192).unwrap();
        assert_eq!(
            d.execute_blocking(DiskOp::Read {
                offset: 4096,
                len: 4
            }),
            DiskResult::Data(vec![0; 4])
        );
        let w = DiskOp::Write {
            offset: 4096,
            data: b"abcd".to_vec(),
        };
        assert_eq!(d.execute_blocking(w), DiskResult::Good);
        // Reopened: the write is there and the size is kept.
        let d = LocalDisk::open(&path, 8192).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        assert_eq!(
            d.execute_blocking(DiskOp::Read {
                offset: 4096,
                len: 4
            }),
            DiskResult::Data(b"abcd".to_vec())
        );
        for op in [
            DiskOp::Reserve,
            DiskOp::PrReadKeys,
            DiskOp::Write {
                offset: 8190,
                data: vec![1; 4],
            },
            DiskOp::Read {
                offset: u64::MAX,
                len: 2,
            },
        ] {
            assert!(
                matches!(d.execute_blocking(op.clone()), DiskResult::Failed(_)),
                "{op:?}"
            );
        }
    }

    #[test]
    fn initiator_errors_map_to_node_results() {
        assert_eq!(map_result(Ok(None)), DiskResult::Good);
        assert_eq!(
            map_result(Ok(Some(Bytes::from_static(b"ab")))),
            DiskResult::Data(b"ab".to_vec())
        );
        assert_eq!(
            map_result(Err(Error::ReservationConflict)),
            DiskResult::Conflict
        );
        let lost = map_result(Err(Error::SessionLost("connection reset".into())));
        assert!(
            matches!(lost, DiskResult::Failed(ref s) if s.contains("connection reset")),
            "{lost:?}"
        );
        let io = map_result(Err(Error::Io(std::io::Error::other("path down"))));
        assert!(matches!(io, DiskResult::Failed(_)));
    }
}
