//! Quorum log backup files (`busrig cluster backup FILE` / `restore FILE`).
//!
//! A backup is the recovered state (checkpoint + records after it) in a
//! self-describing file with a trailing CRC32 over everything before it.
//! Integers are little-endian:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "BRIGQBAK"
//!      8     4  backup format version (1)
//!     12     4  flags: bit 0 = a checkpoint is present
//!     16     8  checkpoint LSN (0 when no checkpoint)
//!     24     8  snapshot length S (0 when no checkpoint)
//!     32     8  record count R
//!     40     2  cluster id length n (at most 256)
//!     42     n  cluster id, UTF-8
//!   42+n     S  snapshot
//!      -     -  R records, each: LSN (8) | payload length m (4) | payload (m)
//!  end-4     4  CRC32 of every byte before it
//! ```
//!
//! Restoring lays the backup down as a fresh region (generation 1, slot 0,
//! log area 0) with the same writes and ordering as a format.

use super::layout::Geometry;
use super::{lay_down, BlockWrite, LogConfig, LogError, Lsn, QuorumLog, Recovered};
use super::{ReadFn, MAX_CLUSTER_ID_LEN};

const BACKUP_MAGIC: [u8; 8] = *b"BRIGQBAK";
const BACKUP_VERSION: u32 = 1;
const FIXED_LEN: usize = 42;
const FLAG_CHECKPOINT: u32 = 1;

/// The contents of a parsed backup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupContents {
    pub cluster_id: String,
    pub checkpoint: Option<(Lsn, Vec<u8>)>,
    pub records: Vec<(Lsn, Vec<u8>)>,
}

/// Serializes recovered state (from [`QuorumLog::open`]) of cluster
/// `cluster_id` into a backup file.
pub fn backup(cluster_id: &str, state: &Recovered) -> Vec<u8> {
    let (flags, lsn, snap): (u32, Lsn, &[u8]) = match &state.checkpoint {
        Some((lsn, snap)) => (FLAG_CHECKPOINT, *lsn, snap),
        None => (0, Lsn::ZERO, &[]),
    };
    let mut b = Vec::with_capacity(
        FIXED_LEN
            + cluster_id.len()
            + snap.len()
            + state
                .records
                .iter()
                .map(|(_, p)| 12 + p.len())
                .sum::<usize>()
            + 4,
    );
    b.extend_from_slice(&BACKUP_MAGIC);
    b.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&lsn.0.to_le_bytes());
    b.extend_from_slice(&(snap.len() as u64).to_le_bytes());
    b.extend_from_slice(&(state.records.len() as u64).to_le_bytes());
    b.extend_from_slice(&(cluster_id.len() as u16).to_le_bytes());
    b.extend_from_slice(cluster_id.as_bytes());
    b.extend_from_slice(snap);
    for (lsn, payload) in &state.records {
        b.extend_from_slice(&lsn.0.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Opens the region through `read` and backs up what it recovers.
pub fn backup_region(cfg: &LogConfig, read: &mut ReadFn<'_>) -> Result<Vec<u8>, LogError> {
    let (log, recovered) = QuorumLog::open(cfg, read)?;
    Ok(backup(log.cluster_id(), &recovered))
}

/// A cursor that refuses to read past the end instead of panicking.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], LogError> {
        if n > self.b.len() as u64 {
            return Err(LogError::BackupCorrupt {
                reason: "truncated",
            });
        }
        let (head, rest) = self.b.split_at(n as usize);
        self.b = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, LogError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, LogError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, LogError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Parses and checks a backup file: magic, version, CRC, lengths, and that
/// the records follow the checkpoint without gaps.
pub fn parse_backup(file: &[u8]) -> Result<BackupContents, LogError> {
    let corrupt = |reason| Err(LogError::BackupCorrupt { reason });
    if file.len() < FIXED_LEN + 4 || file[0..8] != BACKUP_MAGIC {
        return corrupt("not a busrig quorum log backup");
    }
    let (body, crc) = file.split_at(file.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return corrupt("CRC mismatch");
    }
    let mut c = Cursor { b: &body[8..] };
    if c.u32()? != BACKUP_VERSION {
        return corrupt("unsupported backup version");
    }
    let flags = c.u32()?;
    if flags & !FLAG_CHECKPOINT != 0 {
        return corrupt("unknown flags");
    }
    let lsn = Lsn(c.u64()?);
    let snap_len = c.u64()?;
    let count = c.u64()?;
    let id_len = c.u16()? as usize;
    if id_len > MAX_CLUSTER_ID_LEN {
        return corrupt("cluster id too long");
    }
    let cluster_id = std::str::from_utf8(c.take(id_len as u64)?)
        .map_err(|_| LogError::BackupCorrupt {
            reason: "cluster id is not UTF-8",
        })?
        .to_owned();
    let checkpoint = if flags & FLAG_CHECKPOINT != 0 {
        Some((lsn, c.take(snap_len)?.to_vec()))
    } else {
        if lsn != Lsn::ZERO || snap_len != 0 {
            return corrupt("snapshot fields set without a checkpoint");
        }
        None
    };
    // Each record takes at least 12 bytes: refuse an impossible count
    // before allocating for it.
    if count > c.b.len() as u64 / 12 {
        return corrupt("record count exceeds the file");
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut expected = lsn.next();
    for _ in 0..count {
        let rec_lsn = Lsn(c.u64()?);
        if rec_lsn != expected {
            return corrupt("record LSNs do not follow the checkpoint in sequence");
        }
        let len = c.u32()?;
        records.push((rec_lsn, c.take(len as u64)?.to_vec()));
        expected = expected.next();
    }
    if !c.b.is_empty() {
        return corrupt("trailing bytes after the last record");
    }
    Ok(BackupContents {
        cluster_id,
        checkpoint,
        records,
    })
}

/// Writes that lay backup `file` down as a fresh log for cluster
/// `cluster_id` under `cfg`. A corrupt backup is always refused; a backup
/// of another cluster is refused unless `force`, in which case the restored
/// log is labelled `cluster_id`.
pub fn restore(
    file: &[u8],
    cfg: &LogConfig,
    cluster_id: &str,
    force: bool,
) -> Result<Vec<BlockWrite>, LogError> {
    let geo = Geometry::from_config(cfg)?;
    let contents = parse_backup(file)?;
    if contents.cluster_id != cluster_id && !force {
        return Err(LogError::ClusterMismatch {
            backup: contents.cluster_id,
            expected: cluster_id.to_owned(),
        });
    }
    lay_down(
        &geo,
        cluster_id,
        contents
            .checkpoint
            .as_ref()
            .map(|(lsn, snap)| (*lsn, snap.as_slice())),
        &contents.records,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recovered {
        Recovered {
            checkpoint: Some((Lsn(3), b"db@3".to_vec())),
            records: vec![(Lsn(4), b"four".to_vec()), (Lsn(5), Vec::new())],
            cut: None,
        }
    }

    #[test]
    fn backup_bytes() {
        let b = backup("CL", &sample());
        assert_eq!(&b[0..8], b"BRIGQBAK");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[1, 0, 0, 0]);
        assert_eq!(&b[16..24], &3u64.to_le_bytes());
        assert_eq!(&b[24..32], &4u64.to_le_bytes());
        assert_eq!(&b[32..40], &2u64.to_le_bytes());
        assert_eq!(&b[40..42], &[2, 0]);
        assert_eq!(&b[42..44], b"CL");
        assert_eq!(&b[44..48], b"db@3");
        assert_eq!(&b[48..56], &4u64.to_le_bytes());
        assert_eq!(&b[56..60], &4u32.to_le_bytes());
        assert_eq!(&b[60..64], b"four");
        assert_eq!(&b[64..72], &5u64.to_le_bytes());
        assert_eq!(&b[72..76], &0u32.to_le_bytes());
        assert_eq!(b.len(), 80);
        assert_eq!(&b[76..], &crc32fast::hash(&b[..76]).to_le_bytes());
        let parsed = parse_backup(&b).unwrap();
        assert_eq!(parsed.cluster_id, "CL");
        assert_eq!(parsed.checkpoint, sample().checkpoint);
        assert_eq!(parsed.records, sample().records);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let b = backup("CLUSTER", &sample());
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x41;
            assert!(
                matches!(parse_backup(&bad), Err(LogError::BackupCorrupt { .. })),
                "byte {i}"
            );
        }
        for n in 0..b.len() {
            assert!(parse_backup(&b[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn gaps_and_lying_counts_are_refused_even_with_a_good_crc() {
        let mut gap = sample();
        gap.records[1].0 = Lsn(6);
        assert!(matches!(
            parse_backup(&backup("C", &gap)),
            Err(LogError::BackupCorrupt { .. })
        ));
        // Claim a billion records, then re-seal the CRC.
        let mut b = backup("C", &sample());
        b.truncate(b.len() - 4);
        b[32..40].copy_from_slice(&1_000_000_000u64.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            parse_backup(&b),
            Err(LogError::BackupCorrupt {
                reason: "record count exceeds the file"
            })
        ));
    }
}
