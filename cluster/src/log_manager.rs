//! Log Manager boundary: how the node uses the quorum log.
//!
//! The node keeps its log in a [`QuorumLog`] (`crate::quorum_log`, format
//! in docs/quorum-log.md): 4 KiB-aligned blocks, a region header, two
//! checkpoint slots and two log areas. This module only adds what the node
//! needs around it, all sans-IO:
//!
//! - [`region_config`]: where the region lives, derived from the cluster
//!   file's log limit (the region starts at byte 0 of the quorum LUN and is
//!   four times the limit, the same ratio as the 4 MiB / 16 MiB defaults);
//! - [`open_region`]: recovery from one read of the whole region, mapping
//!   [`LogError::NotFormatted`] to "format it" (the node does so with
//!   [`format_and_open`]);
//! - [`format_and_open`]: the format writes plus the log opened over them,
//!   so the new owner can append without reading the region back;
//! - [`checkpoint_all`]: a checkpoint of the whole database, up to the
//!   log's current position.
//!
//! Every write is returned as a [`LogWrite`] for the caller to issue with
//! FUA, one after the other, in order (the format's crash safety relies on
//! that order).

use std::io;

pub use crate::quorum_log::{
    BlockWrite as LogWrite, CutReason, LogConfig, LogError, QuorumLog, Recovered,
};

/// Region multiple of the log limit (16 MiB for the default 4 MiB).
const REGION_PER_LIMIT: u64 = 4;

/// The quorum log region for a cluster file's `log_limit` (a multiple of
/// 4096, at least 64 KiB: `ClusterConfig::validate` enforces it).
pub fn region_config(log_limit: u64) -> LogConfig {
    LogConfig {
        region_offset: 0,
        region_len: log_limit * REGION_PER_LIMIT,
        log_limit,
    }
}

/// Recovers the log from `region`, the bytes read from
/// `cfg.region_offset` on. `Ok(None)`: the region holds no log yet.
pub fn open_region(
    cfg: &LogConfig,
    region: &[u8],
) -> Result<Option<(QuorumLog, Recovered)>, LogError> {
    let base = cfg.region_offset;
    let opened = QuorumLog::open(cfg, &mut |o, l| {
        let s = o
            .checked_sub(base)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read before the region"))?
            as usize;
        let e = (s + l).min(region.len());
        Ok(region.get(s..e).unwrap_or(&[]).to_vec())
    });
    match opened {
        Ok(x) => Ok(Some(x)),
        Err(LogError::NotFormatted) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lays an empty log for `cluster_id` and opens it: the writes to issue
/// (in order) and the log as it will be once they are done.
pub fn format_and_open(
    cfg: &LogConfig,
    cluster_id: &str,
) -> Result<(QuorumLog, Vec<LogWrite>), LogError> {
    let writes = QuorumLog::format(cfg, cluster_id)?;
    let mut image = vec![0u8; cfg.region_len as usize];
    apply(&mut image, cfg.region_offset, &writes);
    let (log, _) = open_region(cfg, &image)?.ok_or(LogError::NotFormatted)?;
    Ok((log, writes))
}

/// A checkpoint of `snapshot`, which covers every record in the log.
pub fn checkpoint_all(log: &mut QuorumLog, snapshot: &[u8]) -> Result<Vec<LogWrite>, LogError> {
    let upto = log.position().lsn;
    log.checkpoint(snapshot, upto)
}

/// Applies `writes` to an in-memory copy of the region starting at `base`.
fn apply(image: &mut [u8], base: u64, writes: &[LogWrite]) {
    for w in writes {
        let s = (w.offset - base) as usize;
        let e = (s + w.data.len()).min(image.len());
        if s < e {
            image[s..e].copy_from_slice(&w.data[..e - s]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 65536;

    fn open(region: &[u8]) -> Option<(QuorumLog, Recovered)> {
        open_region(&region_config(LIMIT), region).unwrap()
    }

    fn payloads(rec: &Recovered) -> Vec<Vec<u8>> {
        rec.records.iter().map(|(_, p)| p.clone()).collect()
    }

    #[test]
    fn format_append_checkpoint_recover() {
        let cfg = region_config(LIMIT);
        let mut region = vec![0u8; cfg.region_len as usize];
        assert!(open(&region).is_none(), "a blank region is not formatted");
        let (mut log, ws) = format_and_open(&cfg, "SIM").unwrap();
        apply(&mut region, 0, &ws);
        for i in 0..3u8 {
            apply(&mut region, 0, &log.append(&[i; 10]).unwrap().1);
        }
        let (mut log2, rec) = open(&region).unwrap();
        assert_eq!(payloads(&rec), vec![vec![0; 10], vec![1; 10], vec![2; 10]]);
        apply(&mut region, 0, &checkpoint_all(&mut log2, b"snap").unwrap());
        apply(&mut region, 0, &log2.append(b"after").unwrap().1);
        let (_, rec) = open(&region).unwrap();
        assert_eq!(
            rec.checkpoint.clone().map(|c| c.1).as_deref(),
            Some(&b"snap"[..])
        );
        assert_eq!(payloads(&rec), vec![b"after".to_vec()]);
    }

    #[test]
    fn torn_record_cuts_the_log() {
        let cfg = region_config(LIMIT);
        let mut region = vec![0u8; cfg.region_len as usize];
        let (mut log, ws) = format_and_open(&cfg, "SIM").unwrap();
        apply(&mut region, 0, &ws);
        apply(&mut region, 0, &log.append(b"good").unwrap().1);
        let mut torn = log.append(b"torn record").unwrap().1;
        torn.last_mut().unwrap().data.truncate(40);
        apply(&mut region, 0, &torn);
        let (mut log, rec) = open(&region).unwrap();
        assert_eq!(payloads(&rec), vec![b"good".to_vec()]);
        assert!(rec.cut.is_some());
        // The next append goes after the last good record.
        apply(&mut region, 0, &log.append(b"next").unwrap().1);
        let (_, rec) = open(&region).unwrap();
        assert_eq!(payloads(&rec), vec![b"good".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn full_log_asks_for_checkpoint() {
        let cfg = region_config(LIMIT);
        let (mut log, _) = format_and_open(&cfg, "SIM").unwrap();
        let mut n = 0;
        while !log.needs_checkpoint() {
            log.append(&[7; 1000]).unwrap();
            n += 1;
        }
        assert!(n >= 8);
        checkpoint_all(&mut log, b"db").unwrap();
        assert!(!log.needs_checkpoint());
        assert!(checkpoint_all(&mut log, &vec![0; cfg.region_len as usize]).is_err());
    }
}
