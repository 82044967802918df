//! Log Manager boundary: how the node uses the quorum log.
//!
//! The node only needs five sans-IO operations: format an empty region,
//! recover checkpoint plus records from a read function, append a record
//! (returning the block writes to issue with FUA), ask whether a checkpoint
//! is due, and checkpoint. [`QuorumLogStore`] is that boundary; the node
//! uses [`ActiveLog`], so swapping the implementation is one line.
//!
//! [`InterimLog`] is a deliberately small implementation used until the
//! full quorum log (`crate::quorum_log`, with two checkpoint slots and
//! 4 KiB-aligned records) lands:
//!
//! ```text
//! offset 0      header block (4096): "BRQLOG01", generation u32 LE
//! offset 4096   records: len u32 LE | generation u32 LE | crc32 u32 LE | payload
//!               crc32 covers generation and payload; a record with another
//!               generation, a bad CRC or a zero length ends the log
//! ```
//! A checkpoint is one write at offset 0: the header with the next
//! generation followed by the snapshot record, so older records (with the
//! old generation) are cut off by the same write.

use std::io;

/// One write the caller must issue (with FUA) for the log to be durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What recovery found in the log region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// False: the region holds no log yet and must be formatted.
    pub formatted: bool,
    pub checkpoint: Option<Vec<u8>>,
    pub records: Vec<Vec<u8>>,
}

/// Why a log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFailure {
    /// Reading the region failed.
    #[error("reading the quorum log: {0}")]
    Read(String),
    /// The record does not fit; checkpoint first.
    #[error("quorum log full")]
    Full,
    /// The snapshot does not fit in the region at all.
    #[error("checkpoint of {0} bytes does not fit in the quorum log")]
    TooLarge(usize),
}

/// The operations the node needs from a quorum log (sans-IO).
pub trait QuorumLogStore: Sized {
    /// Writes that lay an empty log over `limit` bytes.
    fn format(limit: u64) -> Vec<LogWrite>;
    /// Recovers the log through `read(offset, len)`.
    fn open(
        limit: u64,
        read: &mut dyn FnMut(u64, usize) -> io::Result<Vec<u8>>,
    ) -> Result<(Self, Recovery), LogFailure>;
    /// Appends one record.
    fn append(&mut self, payload: &[u8]) -> Result<Vec<LogWrite>, LogFailure>;
    /// Whether the owner should checkpoint before the log fills.
    fn needs_checkpoint(&self) -> bool;
    /// Replaces the log by one snapshot record.
    fn checkpoint(&mut self, snapshot: &[u8]) -> Result<Vec<LogWrite>, LogFailure>;
}

/// The implementation the node uses.
pub type ActiveLog = InterimLog;

const MAGIC: &[u8; 8] = b"BRQLOG01";
const HEADER: u64 = 4096;
const REC_HDR: usize = 12;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct InterimLog {
    limit: u64,
    generation: u32,
    end: u64,
}

fn header(generation: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&generation.to_le_bytes());
    h
}

fn record(generation: u32, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&generation.to_le_bytes());
    crc.update(payload);
    let mut r = Vec::with_capacity(REC_HDR + payload.len());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&generation.to_le_bytes());
    r.extend_from_slice(&crc.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl QuorumLogStore for InterimLog {
    fn format(_limit: u64) -> Vec<LogWrite> {
        vec![LogWrite {
            offset: 0,
            data: header(1),
        }]
    }

    fn open(
        limit: u64,
        read: &mut dyn FnMut(u64, usize) -> io::Result<Vec<u8>>,
    ) -> Result<(InterimLog, Recovery), LogFailure> {
        let rd = |read: &mut dyn FnMut(u64, usize) -> io::Result<Vec<u8>>, o, l| {
            read(o, l).map_err(|e| LogFailure::Read(e.to_string()))
        };
        let h = rd(read, 0, HEADER as usize)?;
        if h.len() < 12 || &h[..8] != MAGIC {
            let log = InterimLog {
                limit,
                generation: 0,
                end: HEADER,
            };
            return Ok((log, Recovery::default()));
        }
        let generation = u32_at(&h, 8);
        let body = rd(read, HEADER, (limit - HEADER) as usize)?;
        let mut at = 0usize;
        let mut rec = Recovery {
            formatted: true,
            ..Recovery::default()
        };
        let mut first = true;
        while at + REC_HDR <= body.len() {
            let len = u32_at(&body, at) as usize;
            if len == 0 || u32_at(&body, at + 4) != generation || at + REC_HDR + len > body.len() {
                break;
            }
            let payload = &body[at + REC_HDR..at + REC_HDR + len];
            let mut crc = crc32fast::Hasher::new();
            crc.update(&generation.to_le_bytes());
            crc.update(payload);
            if crc.finalize() != u32_at(&body, at + 8) {
                break;
            }
            // The first record of a generation above 1 is its checkpoint.
            if first && generation > 1 {
                rec.checkpoint = Some(payload.to_vec());
            } else {
                rec.records.push(payload.to_vec());
            }
            first = false;
            at += REC_HDR + len;
        }
        let log = InterimLog {
            limit,
            generation,
            end: HEADER + at as u64,
        };
        Ok((log, rec))
    }

    fn append(&mut self, payload: &[u8]) -> Result<Vec<LogWrite>, LogFailure> {
        let r = record(self.generation, payload);
        if self.end + r.len() as u64 > self.limit {
            return Err(LogFailure::Full);
        }
        let w = LogWrite {
            offset: self.end,
            data: r,
        };
        self.end += w.data.len() as u64;
        Ok(vec![w])
    }

    fn needs_checkpoint(&self) -> bool {
        self.end > self.limit / 2
    }

    fn checkpoint(&mut self, snapshot: &[u8]) -> Result<Vec<LogWrite>, LogFailure> {
        let generation = self.generation.max(1) + 1;
        let mut data = header(generation);
        data.extend(record(generation, snapshot));
        if data.len() as u64 > self.limit {
            return Err(LogFailure::TooLarge(snapshot.len()));
        }
        self.generation = generation;
        self.end = data.len() as u64;
        Ok(vec![LogWrite { offset: 0, data }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(region: &mut [u8], ws: &[LogWrite]) {
        for w in ws {
            region[w.offset as usize..w.offset as usize + w.data.len()].copy_from_slice(&w.data);
        }
    }

    fn open(region: &[u8]) -> (InterimLog, Recovery) {
        InterimLog::open(region.len() as u64, &mut |o, l| {
            Ok(region[o as usize..o as usize + l].to_vec())
        })
        .unwrap()
    }

    #[test]
    fn format_append_checkpoint_recover() {
        let mut region = vec![0u8; 65536];
        assert!(!open(&region).1.formatted);
        apply(&mut region, &InterimLog::format(65536));
        let (mut log, rec) = open(&region);
        assert!(rec.formatted && rec.records.is_empty());
        for i in 0..3u8 {
            apply(&mut region, &log.append(&[i; 10]).unwrap());
        }
        let (mut log2, rec) = open(&region);
        assert_eq!(rec.records, vec![vec![0; 10], vec![1; 10], vec![2; 10]]);
        apply(&mut region, &log2.checkpoint(b"snap").unwrap());
        apply(&mut region, &log2.append(b"after").unwrap());
        let (_, rec) = open(&region);
        assert_eq!(rec.checkpoint.as_deref(), Some(&b"snap"[..]));
        assert_eq!(rec.records, vec![b"after".to_vec()]);
        // The old instance's view is stale but harmless: its generation is old.
        let _ = log.append(b"x");
    }

    #[test]
    fn torn_record_cuts_the_log() {
        let mut region = vec![0u8; 65536];
        apply(&mut region, &InterimLog::format(65536));
        let (mut log, _) = open(&region);
        apply(&mut region, &log.append(b"good").unwrap());
        let w = log.append(b"torn record").unwrap();
        let mut torn = w[0].clone();
        torn.data.truncate(REC_HDR + 3);
        apply(&mut region, &[torn]);
        let (log, rec) = open(&region);
        assert_eq!(rec.records, vec![b"good".to_vec()]);
        assert_eq!(log.end, HEADER + (REC_HDR + 4) as u64);
    }

    #[test]
    fn full_log_asks_for_checkpoint() {
        let mut region = vec![0u8; 65536];
        apply(&mut region, &InterimLog::format(65536));
        let (mut log, _) = open(&region);
        let mut n = 0;
        while !log.needs_checkpoint() {
            apply(&mut region, &log.append(&[7; 1000]).unwrap());
            n += 1;
        }
        assert!(n > 20);
        while log.append(&[7; 1000]).is_ok() {}
        assert_eq!(log.append(&[7; 1000]), Err(LogFailure::Full));
        assert!(log.checkpoint(&vec![0; 70000]).is_err());
    }
}
