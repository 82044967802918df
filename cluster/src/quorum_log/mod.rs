//! The Log Manager's quorum log: a write-ahead log of cluster database
//! changes on the shared quorum disk, with two checkpoint slots, as a pure
//! state machine.
//!
//! In a Windows Server 2003 server cluster the node that owns the quorum
//! resource records every cluster database change in the quorum log
//! (`quolog.log`) before acknowledging it; when the log reaches its maximum
//! size (4096 KB by default on Windows Server 2003) the Log Manager saves a
//! checkpoint of the database and resets the log. A node that forms the
//! cluster replays checkpoint + log. This module reproduces that on a raw
//! block region of the quorum LUN.
//!
//! It does no I/O, reads no clock and holds no lock (docs/architecture.md "Pure cores and drivers"): every
//! operation returns the [`BlockWrite`]s the caller must perform, in order,
//! each with FUA, before the operation counts as done; [`QuorumLog::open`]
//! reads through a callback. If a write fails, the caller must drop the
//! `QuorumLog` and [`open`](QuorumLog::open) the region again: the in-memory
//! state has already moved on.
//!
//! # Region layout
//!
//! ```text
//! +--------+-----------------+-----------------+------------+------------+
//! | header | checkpoint      | checkpoint      | log area 0 | log area 1 |
//! | 1 blk  | slot 0 (S blks) | slot 1 (S blks) | (L blks)   | (L blks)   |
//! +--------+-----------------+-----------------+------------+------------+
//!             ^ paired with log area 0   ^ paired with log area 1
//! ```
//!
//! Each slot is paired with one log area. The *current* slot is the valid
//! slot with the highest generation; the records that follow its snapshot
//! are in its paired log area, stamped with its generation and numbered
//! from its checkpoint LSN + 1. Byte layouts are in [`layout`] and
//! `docs/quorum-log.md`.
//!
//! # Appending
//!
//! Each record starts on a fresh block and is written as whole blocks
//! (header, payload, zero padding) right after the previous record. A block
//! holding an acknowledged record is never written again in the same
//! generation, so a torn append can only damage the record being appended.
//!
//! # Checkpointing
//!
//! A checkpoint goes to the *other* slot, with generation `g + 1` where `g`
//! is the highest generation ever seen in either slot header. Its writes,
//! in order:
//!
//! ```text
//! 1. other slot header, state PENDING, generation g+1   (claims g+1)
//! 2. records after `upto`, re-stamped g+1, into the
//!    other slot's log area from its first block        (if any)
//! 3. snapshot blocks into the other slot                (if non-empty)
//! 4. other slot header, state COMPLETE, generation g+1  (commit point)
//! ```
//!
//! Until write 4 lands whole, the current slot, its snapshot and its log
//! area are untouched and recovery uses them; after it, recovery uses the
//! new slot, whose log area already holds every record after `upto`. The
//! old log area is simply abandoned (truncated) and its records carry an
//! older generation, so they are never replayed.
//!
//! # Recovery
//!
//! [`QuorumLog::open`] picks the valid slot (state empty or complete,
//! header CRC and snapshot CRC good) with the highest generation, then
//! walks its log area from the first block, accepting each record whose
//! magic, generation, length, CRC and LSN (previous + 1) are right. It stops
//! at the first record that is not: a block of an older generation or zeros
//! is the normal end; anything that looks like a damaged record of the
//! current generation is a cut ([`CutReason`]). The next append overwrites
//! the first block after the last good record.
//!
//! After a cut caused by corruption in the middle of the log, valid records
//! of the current generation may still lie beyond the cut, with LSNs that the
//! appends after recovery will reuse. `open` scans the rest of the log area
//! for such headers and the first append afterwards zeroes them (before
//! writing its record), so they can never be replayed after a later crash.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

mod backup;
pub mod layout;

#[cfg(test)]
mod tests;

pub use backup::{backup, backup_region, parse_backup, restore, BackupContents};
pub use layout::{BLOCK_SIZE, MAX_CLUSTER_ID_LEN, RECORD_HEADER_LEN};

use layout::{
    blocks_for, encode_record, pad_to_blocks, record_blocks, record_crc, Geometry, RecordHeader,
    RegionHeader, SlotHeader, SlotState, BLOCK,
};

/// Default log limit (the Windows Server 2003 default maximum quorum log
/// size, docs/semantics.md "Timing profiles").
pub const DEFAULT_LOG_LIMIT: u64 = 4 << 20;
/// Default region length: room for two 5 MiB log areas and two ~3 MiB
/// checkpoint slots with the default limit.
pub const DEFAULT_REGION_LEN: u64 = 16 << 20;
/// Zeroing is issued in writes of at most this many bytes.
const ZERO_CHUNK: u64 = 1 << 20;

/// A log sequence number. Records are numbered 1, 2, 3, ... without gaps;
/// LSN 0 means "nothing" (the state right after format).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One write the caller must perform, in order, each with FUA
/// (write-through), before the operation counts as done. `offset` is an
/// absolute byte offset on the LUN; `offset` and `data.len()` are multiples
/// of 4096.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

impl fmt::Debug for BlockWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Writes can be megabytes long; the bytes are not useful in a log.
        f.debug_struct("BlockWrite")
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Where the log lives on the quorum LUN and when to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// First byte of the region on the LUN; a multiple of 4096.
    pub region_offset: u64,
    /// Length of the region; a multiple of 4096.
    pub region_len: u64,
    /// Once the current log area holds this many bytes,
    /// [`QuorumLog::needs_checkpoint`] says so. Each log area is this plus a
    /// quarter of headroom.
    pub log_limit: u64,
}

impl LogConfig {
    /// A region at `region_offset` of `region_len` bytes with the default
    /// 4 MiB log limit.
    pub fn new(region_offset: u64, region_len: u64) -> Self {
        LogConfig {
            region_offset,
            region_len,
            log_limit: DEFAULT_LOG_LIMIT,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::new(0, DEFAULT_REGION_LEN)
    }
}

/// Why replay stopped before the end of the written log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CutReason {
    /// The block where record `lsn` should start has a damaged header
    /// (bad magic or generation) and is not a plain end of log.
    BadHeader { offset: u64, lsn: Lsn },
    /// Record `lsn` fails its CRC: a torn write or corruption.
    Checksum { offset: u64, lsn: Lsn },
    /// Record `lsn` claims a length that runs past the end of the log area.
    Overrun { offset: u64, lsn: Lsn, len: u32 },
    /// A record with a good CRC carries `found` where `expected` was due.
    OutOfSequence {
        offset: u64,
        expected: Lsn,
        found: Lsn,
    },
}

impl CutReason {
    /// Absolute byte offset of the first record not replayed.
    pub fn offset(&self) -> u64 {
        match *self {
            CutReason::BadHeader { offset, .. }
            | CutReason::Checksum { offset, .. }
            | CutReason::Overrun { offset, .. }
            | CutReason::OutOfSequence { offset, .. } => offset,
        }
    }

    /// The LSN the first record not replayed should have had.
    pub fn lsn(&self) -> Lsn {
        match *self {
            CutReason::BadHeader { lsn, .. }
            | CutReason::Checksum { lsn, .. }
            | CutReason::Overrun { lsn, .. } => lsn,
            CutReason::OutOfSequence { expected, .. } => expected,
        }
    }
}

impl fmt::Display for CutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CutReason::BadHeader { offset, lsn } => {
                write!(
                    f,
                    "damaged header where LSN {lsn} should be at byte {offset}"
                )
            }
            CutReason::Checksum { offset, lsn } => {
                write!(
                    f,
                    "CRC mismatch in LSN {lsn} at byte {offset} (torn or corrupt)"
                )
            }
            CutReason::Overrun { offset, lsn, len } => write!(
                f,
                "LSN {lsn} at byte {offset} claims {len} bytes, past the end of the log"
            ),
            CutReason::OutOfSequence {
                offset,
                expected,
                found,
            } => write!(f, "LSN {found} at byte {offset} where {expected} was due"),
        }
    }
}

/// What [`QuorumLog::open`] recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The newest valid checkpoint: its LSN and snapshot. `None` when the
    /// log has never been checkpointed (the log starts at LSN 1).
    pub checkpoint: Option<(Lsn, Vec<u8>)>,
    /// Records after the checkpoint, in LSN order without gaps.
    pub records: Vec<(Lsn, Vec<u8>)>,
    /// Why replay stopped early, if it did; `None` at a clean end.
    pub cut: Option<CutReason>,
}

impl Recovered {
    /// LSN of the last change recovered (checkpoint or record).
    pub fn last_lsn(&self) -> Lsn {
        self.records
            .last()
            .map(|(lsn, _)| *lsn)
            .or(self.checkpoint.as_ref().map(|(lsn, _)| *lsn))
            .unwrap_or(Lsn::ZERO)
    }
}

/// The log's position, for `busrig cluster status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// LSN of the last appended record (or of the checkpoint).
    pub lsn: Lsn,
    /// LSN covered by the current checkpoint (0: none yet).
    pub checkpoint_lsn: Lsn,
    /// Generation of the current checkpoint slot.
    pub generation: u64,
    /// Bytes used in the current log area (whole blocks).
    pub bytes_used: u64,
    /// The configured checkpoint threshold.
    pub log_limit: u64,
    /// Bytes in one log area (limit plus headroom).
    pub capacity: u64,
}

/// Errors of the quorum log layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The configuration cannot describe a region.
    #[error("invalid quorum log configuration: {reason}")]
    InvalidConfig { reason: String },
    /// The read callback failed.
    #[error("quorum disk read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The read callback returned fewer or more bytes than asked for.
    #[error("quorum disk read at {offset} returned {got} bytes, wanted {wanted}")]
    ShortRead {
        offset: u64,
        wanted: usize,
        got: usize,
    },
    /// The region holds no quorum log header.
    #[error("no quorum log on the region (header magic missing): format it first")]
    NotFormatted,
    /// The region header is present but damaged.
    #[error("quorum log header is corrupt: {reason}")]
    HeaderCorrupt { reason: &'static str },
    /// The region was written by a format version this code does not know.
    #[error("quorum log format version {0} is not supported")]
    UnsupportedVersion(u32),
    /// The region was laid down with a different configuration.
    #[error("quorum log {field} on disk is {on_disk}, configured {configured}")]
    GeometryMismatch {
        field: &'static str,
        on_disk: u64,
        configured: u64,
    },
    /// Neither checkpoint slot holds a usable checkpoint.
    #[error("neither checkpoint slot is valid; restore from a backup")]
    NoValidCheckpoint,
    /// The cluster id does not fit in the region header.
    #[error("cluster id is {len} bytes, at most {max} fit")]
    ClusterIdTooLong { len: usize, max: usize },
    /// A record is larger than a whole log area.
    #[error("record payload of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: u64, max: u64 },
    /// The current log area has no room for the record: checkpoint first.
    #[error("quorum log full: record needs {needed} bytes, {free} free; checkpoint first")]
    LogFull { needed: u64, free: u64 },
    /// A snapshot is larger than a checkpoint slot.
    #[error("snapshot of {len} bytes does not fit a checkpoint slot of {max} bytes")]
    SnapshotTooLarge { len: u64, max: u64 },
    /// `upto` is outside the range a checkpoint may cover.
    #[error("checkpoint up to LSN {upto} outside {checkpoint}..={last}")]
    CheckpointRange {
        upto: Lsn,
        checkpoint: Lsn,
        last: Lsn,
    },
    /// A backup file failed its checks.
    #[error("backup file is corrupt: {reason}")]
    BackupCorrupt { reason: &'static str },
    /// A backup belongs to another cluster (pass `force` to restore anyway).
    #[error("backup is of cluster {backup:?}, not {expected:?}")]
    ClusterMismatch { backup: String, expected: String },
    /// A backup's records do not fit one log area of this configuration.
    #[error("backup records need {needed} bytes of log, the log area holds {capacity}")]
    BackupDoesNotFit { needed: u64, capacity: u64 },
}

/// The quorum log, positioned for appending. Only the quorum owner holds
/// one; it is the only writer of the region.
#[derive(Debug, Clone)]
pub struct QuorumLog {
    geo: Geometry,
    cluster_id: String,
    /// Index of the current slot and log area (0 or 1).
    slot: usize,
    /// Generation of the current slot; stamped on every record appended.
    generation: u64,
    /// Highest generation in any slot header written or seen, pending
    /// included: the next checkpoint takes the one after it.
    max_generation: u64,
    checkpoint_lsn: Lsn,
    last_lsn: Lsn,
    /// Blocks used in the current log area; the next record starts here.
    used_blocks: u64,
    /// Records after the checkpoint, kept to re-log those a checkpoint with
    /// `upto < last` does not cover.
    tail: VecDeque<(Lsn, Vec<u8>)>,
    /// Stale current-generation headers may lie before this block of the
    /// current log area (see the module docs); the next append zeroes them.
    scrub_until: Option<u64>,
}

/// The read callback of [`QuorumLog::open`]: `read(offset, len)` returns exactly
/// `len` bytes from absolute byte `offset` of the LUN.
pub type ReadFn<'a> = dyn FnMut(u64, usize) -> std::io::Result<Vec<u8>> + 'a;

fn read_exact(read: &mut ReadFn<'_>, offset: u64, len: usize) -> Result<Vec<u8>, LogError> {
    let data = read(offset, len)?;
    if data.len() != len {
        return Err(LogError::ShortRead {
            offset,
            wanted: len,
            got: data.len(),
        });
    }
    Ok(data)
}

/// Writes that zero `blocks` blocks from `offset`, in bounded chunks.
fn zero_writes(offset: u64, blocks: u64) -> Vec<BlockWrite> {
    let mut out = Vec::new();
    let mut at = offset;
    let end = offset + blocks * BLOCK;
    while at < end {
        let len = (end - at).min(ZERO_CHUNK);
        out.push(BlockWrite {
            offset: at,
            data: vec![0; len as usize],
        });
        at += len;
    }
    out
}

fn check_cluster_id(cluster_id: &str) -> Result<(), LogError> {
    if cluster_id.len() > MAX_CLUSTER_ID_LEN {
        return Err(LogError::ClusterIdTooLong {
            len: cluster_id.len(),
            max: MAX_CLUSTER_ID_LEN,
        });
    }
    Ok(())
}

/// Writes that lay down a fresh region holding `checkpoint` (or none) and
/// `records` in slot 0 / log area 0 at generation 1. Shared by format and
/// restore. The header is zeroed first and written last, so a region
/// interrupted half way is refused as unformatted rather than misread; the
/// log areas are zeroed because generations restart at 1 and records of the
/// previous log must not match them.
pub(crate) fn lay_down(
    geo: &Geometry,
    cluster_id: &str,
    checkpoint: Option<(Lsn, &[u8])>,
    records: &[(Lsn, Vec<u8>)],
) -> Result<Vec<BlockWrite>, LogError> {
    check_cluster_id(cluster_id)?;
    if let Some((_, snap)) = checkpoint {
        if snap.len() as u64 > geo.max_snapshot() {
            return Err(LogError::SnapshotTooLarge {
                len: snap.len() as u64,
                max: geo.max_snapshot(),
            });
        }
    }
    let mut log_bytes = Vec::new();
    for (lsn, payload) in records {
        if payload.len() as u64 > geo.max_payload() {
            return Err(LogError::RecordTooLarge {
                len: payload.len() as u64,
                max: geo.max_payload(),
            });
        }
        log_bytes.extend_from_slice(&encode_record(1, *lsn, payload));
    }
    if log_bytes.len() as u64 > geo.log_capacity() {
        return Err(LogError::BackupDoesNotFit {
            needed: log_bytes.len() as u64,
            capacity: geo.log_capacity(),
        });
    }

    let mut w = vec![BlockWrite {
        offset: geo.header_offset(),
        data: vec![0; BLOCK_SIZE],
    }];
    w.extend(zero_writes(geo.log_offset(0), geo.log_blocks));
    w.extend(zero_writes(geo.log_offset(1), geo.log_blocks));
    if !log_bytes.is_empty() {
        w.push(BlockWrite {
            offset: geo.log_offset(0),
            data: log_bytes,
        });
    }
    let slot0 = match checkpoint {
        Some((lsn, snap)) => {
            if !snap.is_empty() {
                w.push(BlockWrite {
                    offset: geo.snapshot_offset(0),
                    data: pad_to_blocks(snap.to_vec()),
                });
            }
            SlotHeader {
                index: 0,
                state: SlotState::Complete,
                generation: 1,
                lsn,
                snapshot_len: snap.len() as u64,
                snapshot_crc: crc32fast::hash(snap),
            }
        }
        None => SlotHeader {
            index: 0,
            state: SlotState::Empty,
            generation: 1,
            lsn: Lsn::ZERO,
            snapshot_len: 0,
            snapshot_crc: crc32fast::hash(&[]),
        },
    };
    w.push(BlockWrite {
        offset: geo.slot_offset(0),
        data: slot0.encode(),
    });
    let slot1 = SlotHeader {
        index: 1,
        state: SlotState::Empty,
        generation: 0,
        lsn: Lsn::ZERO,
        snapshot_len: 0,
        snapshot_crc: crc32fast::hash(&[]),
    };
    w.push(BlockWrite {
        offset: geo.slot_offset(1),
        data: slot1.encode(),
    });
    w.push(BlockWrite {
        offset: geo.header_offset(),
        data: RegionHeader {
            cluster_id: cluster_id.to_owned(),
            geometry: *geo,
        }
        .encode(),
    });
    Ok(w)
}

/// Result of walking one log area.
struct Replay {
    records: Vec<(Lsn, Vec<u8>)>,
    used_blocks: u64,
    cut: Option<CutReason>,
    scrub_until: Option<u64>,
}

/// Walks `log` (a whole log area starting at byte `base` on the LUN) for
/// records of `generation` numbered from `checkpoint + 1`.
fn replay(log: &[u8], base: u64, generation: u64, checkpoint: Lsn) -> Replay {
    let blocks = (log.len() / BLOCK_SIZE) as u64;
    let block_at = |b: u64| &log[(b * BLOCK) as usize..];
    let mut pos = 0u64;
    let mut expected = checkpoint.next();
    let mut records = Vec::new();
    let mut cut = None;
    while pos < blocks {
        let offset = base + pos * BLOCK;
        let bytes = block_at(pos);
        let h = RecordHeader::parse(bytes);
        // The record's bytes if its claimed length fits the area.
        let fits = pos + h.blocks() <= blocks;
        let intact =
            || fits && record_crc(bytes, &bytes[RECORD_HEADER_LEN..][..h.len as usize]) == h.crc;
        if !h.magic_ok {
            // Zeros, an old record's payload, or a record whose magic was
            // damaged: only the last is a cut, and it still names the
            // generation and LSN we expect.
            if h.generation == generation && h.lsn == expected {
                cut = Some(CutReason::BadHeader {
                    offset,
                    lsn: expected,
                });
            }
            break;
        }
        if h.generation != generation {
            // A record of an older generation is the normal end of the
            // log; one due here whose generation field was damaged fails
            // its CRC.
            if h.lsn == expected && !intact() {
                cut = Some(CutReason::Checksum {
                    offset,
                    lsn: expected,
                });
            }
            break;
        }
        if !fits {
            cut = Some(CutReason::Overrun {
                offset,
                lsn: expected,
                len: h.len,
            });
            break;
        }
        if !intact() {
            cut = Some(CutReason::Checksum {
                offset,
                lsn: expected,
            });
            break;
        }
        if h.lsn != expected {
            // Lower: left behind by an interrupted checkpoint that reused
            // this generation's area; it was superseded, so this is the
            // end. Higher: a gap, which a correct writer never leaves.
            if h.lsn > expected {
                cut = Some(CutReason::OutOfSequence {
                    offset,
                    expected,
                    found: h.lsn,
                });
            }
            break;
        }
        let payload = bytes[RECORD_HEADER_LEN..][..h.len as usize].to_vec();
        records.push((h.lsn, payload));
        pos += h.blocks();
        expected = expected.next();
    }
    // Any header of this generation beyond the stop point carrying an LSN
    // that appends will reuse must be erased before it can follow one.
    let mut scrub_until = None;
    for b in pos + 1..blocks {
        let h = RecordHeader::parse(block_at(b));
        if h.magic_ok && h.generation == generation && h.lsn >= expected {
            scrub_until = Some(b + 1);
        }
    }
    Replay {
        records,
        used_blocks: pos,
        cut,
        scrub_until,
    }
}

impl QuorumLog {
    /// Writes that initialise an empty log (header + two empty checkpoint
    /// slots, both log areas zeroed) for cluster `cluster_id`. Perform them
    /// in order, then [`open`](Self::open).
    pub fn format(cfg: &LogConfig, cluster_id: &str) -> Result<Vec<BlockWrite>, LogError> {
        let geo = Geometry::from_config(cfg)?;
        lay_down(&geo, cluster_id, None, &[])
    }

    /// Recovery: reads the region through `read(offset, len)`, picks the
    /// newest valid checkpoint, replays the records after it in LSN order
    /// and stops at the first torn, corrupt or out-of-sequence record (the
    /// log is cut there: later appends go after the last good record).
    pub fn open(
        cfg: &LogConfig,
        read: &mut ReadFn<'_>,
    ) -> Result<(QuorumLog, Recovered), LogError> {
        let geo = Geometry::from_config(cfg)?;
        let header = RegionHeader::decode(&read_exact(read, geo.header_offset(), BLOCK_SIZE)?)?;
        header.check_geometry(&geo)?;

        let mut slots = [None, None];
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = SlotHeader::decode(&read_exact(read, geo.slot_offset(i), BLOCK_SIZE)?, i);
        }
        let max_generation = slots
            .iter()
            .flatten()
            .map(|s| s.generation)
            .max()
            .unwrap_or(0);
        let mut candidates: Vec<SlotHeader> = slots
            .iter()
            .flatten()
            .filter(|s| s.state != SlotState::Pending)
            .copied()
            .collect();
        candidates.sort_by_key(|s| std::cmp::Reverse(s.generation));

        let mut chosen = None;
        for s in candidates {
            let idx = s.index as usize;
            match s.state {
                SlotState::Empty => {
                    chosen = Some((s, None));
                    break;
                }
                SlotState::Complete if s.snapshot_len > geo.max_snapshot() => {
                    tracing::warn!(slot = idx, "checkpoint slot claims an oversized snapshot");
                }
                _ => {
                    let padded = (blocks_for(s.snapshot_len) * BLOCK) as usize;
                    let mut snap = if padded == 0 {
                        Vec::new()
                    } else {
                        read_exact(read, geo.snapshot_offset(idx), padded)?
                    };
                    snap.truncate(s.snapshot_len as usize);
                    if crc32fast::hash(&snap) == s.snapshot_crc {
                        chosen = Some((s, Some(snap)));
                        break;
                    }
                    tracing::warn!(
                        slot = idx,
                        lsn = s.lsn.0,
                        "checkpoint snapshot fails its CRC; trying the older slot"
                    );
                }
            }
        }
        let (slot, snapshot) = chosen.ok_or(LogError::NoValidCheckpoint)?;
        let idx = slot.index as usize;

        let base = geo.log_offset(idx);
        let log = read_exact(read, base, geo.log_capacity() as usize)?;
        let r = replay(&log, base, slot.generation, slot.lsn);
        if let Some(cut) = &r.cut {
            tracing::warn!(%cut, "quorum log cut at the last good record");
        }
        let last_lsn = r.records.last().map(|(l, _)| *l).unwrap_or(slot.lsn);
        let log = QuorumLog {
            geo,
            cluster_id: header.cluster_id,
            slot: idx,
            generation: slot.generation,
            max_generation,
            checkpoint_lsn: slot.lsn,
            last_lsn,
            used_blocks: r.used_blocks,
            tail: r.records.iter().cloned().collect(),
            scrub_until: r.scrub_until,
        };
        let recovered = Recovered {
            checkpoint: snapshot.map(|s| (slot.lsn, s)),
            records: r.records,
            cut: r.cut,
        };
        Ok((log, recovered))
    }

    /// Appends one record (an opaque payload: the serialized database
    /// change); returns its LSN and the writes to perform. The change is
    /// durable, and may be acknowledged, once every write has completed.
    pub fn append(&mut self, payload: &[u8]) -> Result<(Lsn, Vec<BlockWrite>), LogError> {
        let len = payload.len() as u64;
        if len > self.geo.max_payload() {
            return Err(LogError::RecordTooLarge {
                len,
                max: self.geo.max_payload(),
            });
        }
        let blocks = record_blocks(len);
        let free = self.geo.log_blocks - self.used_blocks;
        if blocks > free {
            return Err(LogError::LogFull {
                needed: blocks * BLOCK,
                free: free * BLOCK,
            });
        }
        let lsn = self.last_lsn.next();
        let area = self.geo.log_offset(self.slot);
        let end = self.used_blocks + blocks;
        let mut writes = Vec::new();
        if let Some(until) = self.scrub_until.take() {
            if until > end {
                writes.extend(zero_writes(area + end * BLOCK, until - end));
            }
        }
        writes.push(BlockWrite {
            offset: area + self.used_blocks * BLOCK,
            data: encode_record(self.generation, lsn, payload),
        });
        self.used_blocks = end;
        self.last_lsn = lsn;
        self.tail.push_back((lsn, payload.to_vec()));
        Ok((lsn, writes))
    }

    /// True once the current log area holds `log_limit` bytes: the owner
    /// should checkpoint.
    pub fn needs_checkpoint(&self) -> bool {
        self.used_blocks * BLOCK >= self.geo.log_limit
    }

    /// Writes a full database snapshot (opaque bytes) covering everything
    /// up to and including `upto` into the inactive slot, makes it current
    /// and truncates the log. Records after `upto` are carried into the new
    /// log area. The writes come in the order that keeps the log
    /// recoverable if the writer dies between any two of them (module docs).
    pub fn checkpoint(&mut self, snapshot: &[u8], upto: Lsn) -> Result<Vec<BlockWrite>, LogError> {
        let len = snapshot.len() as u64;
        if len > self.geo.max_snapshot() {
            return Err(LogError::SnapshotTooLarge {
                len,
                max: self.geo.max_snapshot(),
            });
        }
        if upto < self.checkpoint_lsn || upto > self.last_lsn {
            return Err(LogError::CheckpointRange {
                upto,
                checkpoint: self.checkpoint_lsn,
                last: self.last_lsn,
            });
        }
        let target = 1 - self.slot;
        let generation = self.max_generation + 1;
        let mut header = SlotHeader {
            index: target as u8,
            state: SlotState::Pending,
            generation,
            lsn: upto,
            snapshot_len: len,
            snapshot_crc: crc32fast::hash(snapshot),
        };

        let mut writes = vec![BlockWrite {
            offset: self.geo.slot_offset(target),
            data: header.encode(),
        }];
        while self.tail.front().is_some_and(|(lsn, _)| *lsn <= upto) {
            self.tail.pop_front();
        }
        let mut carried = Vec::new();
        for (lsn, payload) in &self.tail {
            carried.extend_from_slice(&encode_record(generation, *lsn, payload));
        }
        let carried_blocks = carried.len() as u64 / BLOCK;
        if !carried.is_empty() {
            writes.push(BlockWrite {
                offset: self.geo.log_offset(target),
                data: carried,
            });
        }
        if !snapshot.is_empty() {
            writes.push(BlockWrite {
                offset: self.geo.snapshot_offset(target),
                data: pad_to_blocks(snapshot.to_vec()),
            });
        }
        header.state = SlotState::Complete;
        writes.push(BlockWrite {
            offset: self.geo.slot_offset(target),
            data: header.encode(),
        });

        self.slot = target;
        self.generation = generation;
        self.max_generation = generation;
        self.checkpoint_lsn = upto;
        self.used_blocks = carried_blocks;
        self.scrub_until = None;
        Ok(writes)
    }

    /// Current LSN, bytes used and checkpoint LSN, for status.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            lsn: self.last_lsn,
            checkpoint_lsn: self.checkpoint_lsn,
            generation: self.generation,
            bytes_used: self.used_blocks * BLOCK,
            log_limit: self.geo.log_limit,
            capacity: self.geo.log_capacity(),
        }
    }

    /// The cluster id recorded in the region header.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Largest snapshot a checkpoint slot holds, in bytes.
    pub fn max_snapshot(&self) -> u64 {
        self.geo.max_snapshot()
    }

    /// Largest payload a single record can carry, in bytes.
    pub fn max_payload(&self) -> u64 {
        self.geo.max_payload()
    }
}
