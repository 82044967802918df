//! Byte layouts of the quorum log region: geometry, the region header, the
//! checkpoint slot header and the log record header.
//!
//! Every integer is little-endian. Every structure starts on a 4 KiB block
//! boundary. The region header and slot headers each fill one block and end
//! with a CRC32 (crc32fast, the IEEE polynomial) of the block's first 4092
//! bytes, so a torn write of the block (new prefix, old suffix) fails the
//! check.
//!
//! Region header (block 0 of the region):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "BRIGQLOG"
//!      8     4  format version (1)
//!     12     4  block size (4096)
//!     16     8  region offset on the LUN, bytes
//!     24     8  region length, bytes
//!     32     8  log limit, bytes (checkpoint threshold)
//!     40     8  checkpoint slot length, blocks (each slot)
//!     48     8  log area length, blocks (each log area)
//!     56     2  cluster id length n (at most 256)
//!     58   256  cluster id, UTF-8, first n bytes used, rest zero
//!    314  3778  zero
//!   4092     4  CRC32 of bytes 0..4092
//! ```
//!
//! Checkpoint slot header (first block of each slot; the snapshot follows in
//! the slot's next blocks, zero-padded to a whole block):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "BRIGQCKP"
//!      8     4  format version (1)
//!     12     1  slot index (0 or 1)
//!     13     1  state: 0 empty (formatted), 1 pending (checkpoint being
//!               written), 2 complete
//!     14     2  zero
//!     16     8  generation (the epoch stamped on this slot's log records)
//!     24     8  checkpoint LSN: the snapshot covers LSNs 1..=this
//!     32     8  snapshot length, bytes
//!     40     4  CRC32 of the snapshot bytes
//!     44  4048  zero
//!   4092     4  CRC32 of bytes 0..4092
//! ```
//!
//! Log record (starts on a block boundary, zero-padded to a whole block):
//!
//! ```text
//! offset  size  field
//!      0     4  magic "QREC"
//!      4     4  payload length, bytes
//!      8     8  generation (must equal the current slot's generation)
//!     16     8  LSN
//!     24     4  zero
//!     28     4  CRC32 of bytes 0..28 followed by the payload
//!     32     n  payload
//!   32+n     -  zero padding to the next 4096-byte boundary
//! ```

use super::{LogConfig, LogError, Lsn};

/// The unit of every offset and length in the region.
pub const BLOCK_SIZE: usize = 4096;
pub(crate) const BLOCK: u64 = BLOCK_SIZE as u64;

pub(crate) const REGION_MAGIC: [u8; 8] = *b"BRIGQLOG";
pub(crate) const SLOT_MAGIC: [u8; 8] = *b"BRIGQCKP";
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"QREC";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Longest cluster id the region header can hold, in bytes.
pub const MAX_CLUSTER_ID_LEN: usize = 256;
/// Bytes of a record header; the payload follows.
pub const RECORD_HEADER_LEN: usize = 32;

/// Where a block's trailing CRC32 lives.
const CRC_AT: usize = BLOCK_SIZE - 4;
const CLUSTER_ID_AT: usize = 58;

/// Number of whole blocks needed for `bytes`.
pub(crate) fn blocks_for(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK)
}

/// Pads `v` with zeros to a whole number of blocks (at least one if `v` is
/// not empty).
pub(crate) fn pad_to_blocks(mut v: Vec<u8>) -> Vec<u8> {
    let len = blocks_for(v.len() as u64) as usize * BLOCK_SIZE;
    v.resize(len, 0);
    v
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Stores the CRC32 of the block's first 4092 bytes in its last four.
fn seal_block(block: &mut [u8]) {
    let crc = crc32fast::hash(&block[..CRC_AT]);
    put_u32(block, CRC_AT, crc);
}

fn block_crc_ok(block: &[u8]) -> bool {
    crc32fast::hash(&block[..CRC_AT]) == get_u32(block, CRC_AT)
}

/// Where everything lives, derived from a [`LogConfig`]:
///
/// ```text
/// block 0                      region header
/// 1 ..= S                      checkpoint slot 0 (header block + snapshot)
/// S+1 ..= 2S                   checkpoint slot 1
/// 2S+1 .. 2S+1+L               log area 0 (paired with slot 0)
/// 2S+1+L .. 2S+1+2L            log area 1 (paired with slot 1)
/// ```
///
/// `L` is the log limit in blocks plus a quarter (at least one block) of
/// headroom, so the append that crosses the limit still fits and the owner
/// checkpoints afterwards; `S` takes half of what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub region_offset: u64,
    pub region_len: u64,
    pub log_limit: u64,
    pub slot_blocks: u64,
    pub log_blocks: u64,
}

impl Geometry {
    // `u64::is_multiple_of` is newer than the workspace's rust-version (1.80).
    #[allow(clippy::manual_is_multiple_of)]
    pub fn from_config(cfg: &LogConfig) -> Result<Self, LogError> {
        let invalid = |reason: String| Err(LogError::InvalidConfig { reason });
        if cfg.region_offset % BLOCK != 0 {
            return invalid(format!(
                "region_offset {} is not a multiple of {BLOCK}",
                cfg.region_offset
            ));
        }
        if cfg.region_len % BLOCK != 0 {
            return invalid(format!(
                "region_len {} is not a multiple of {BLOCK}",
                cfg.region_len
            ));
        }
        if cfg.log_limit == 0 {
            return invalid("log_limit must be greater than zero".into());
        }
        if cfg.region_offset.checked_add(cfg.region_len).is_none() {
            return invalid("region_offset + region_len overflows".into());
        }
        let limit_blocks = blocks_for(cfg.log_limit);
        let log_blocks = limit_blocks + (limit_blocks / 4).max(1);
        let total = cfg.region_len / BLOCK;
        // Header, two log areas, and two slots of at least two blocks each
        // (a header block and one snapshot block).
        let fixed = log_blocks.checked_mul(2).and_then(|v| v.checked_add(1));
        let slot_blocks = match fixed {
            Some(fixed) if total >= fixed + 4 => (total - fixed) / 2,
            _ => {
                return invalid(format!(
                    "region_len {} is too small for a {}-byte log limit: it needs \
                     room for a header block, two log areas of {} bytes and two \
                     checkpoint slots of at least 2 blocks",
                    cfg.region_len,
                    cfg.log_limit,
                    log_blocks.saturating_mul(BLOCK)
                ))
            }
        };
        Ok(Geometry {
            region_offset: cfg.region_offset,
            region_len: cfg.region_len,
            log_limit: cfg.log_limit,
            slot_blocks,
            log_blocks,
        })
    }

    fn block(&self, index: u64) -> u64 {
        self.region_offset + index * BLOCK
    }

    pub fn header_offset(&self) -> u64 {
        self.region_offset
    }

    /// Offset of slot `slot`'s header block.
    pub fn slot_offset(&self, slot: usize) -> u64 {
        self.block(1 + slot as u64 * self.slot_blocks)
    }

    /// Offset of slot `slot`'s first snapshot block.
    pub fn snapshot_offset(&self, slot: usize) -> u64 {
        self.slot_offset(slot) + BLOCK
    }

    /// Largest snapshot a slot holds, in bytes.
    pub fn max_snapshot(&self) -> u64 {
        (self.slot_blocks - 1) * BLOCK
    }

    /// Offset of log area `area`'s first block.
    pub fn log_offset(&self, area: usize) -> u64 {
        self.block(1 + 2 * self.slot_blocks + area as u64 * self.log_blocks)
    }

    /// Bytes in one log area.
    pub fn log_capacity(&self) -> u64 {
        self.log_blocks * BLOCK
    }

    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> u64 {
        (self.log_capacity() - RECORD_HEADER_LEN as u64).min(u32::MAX as u64)
    }
}

/// Block 0 of the region: who the log belongs to and its geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionHeader {
    pub cluster_id: String,
    pub geometry: Geometry,
}

impl RegionHeader {
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.cluster_id.len() <= MAX_CLUSTER_ID_LEN);
        let g = &self.geometry;
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(&REGION_MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION);
        put_u32(&mut b, 12, BLOCK_SIZE as u32);
        put_u64(&mut b, 16, g.region_offset);
        put_u64(&mut b, 24, g.region_len);
        put_u64(&mut b, 32, g.log_limit);
        put_u64(&mut b, 40, g.slot_blocks);
        put_u64(&mut b, 48, g.log_blocks);
        put_u16(&mut b, 56, self.cluster_id.len() as u16);
        let id = self.cluster_id.as_bytes();
        b[CLUSTER_ID_AT..CLUSTER_ID_AT + id.len()].copy_from_slice(id);
        seal_block(&mut b);
        b
    }

    /// Parses block 0. `NotFormatted` when the magic is absent (a blank or
    /// foreign region), `HeaderCorrupt` when it is present but the block
    /// fails its CRC or holds impossible values.
    pub fn decode(b: &[u8]) -> Result<Self, LogError> {
        if b.len() < BLOCK_SIZE || b[0..8] != REGION_MAGIC {
            return Err(LogError::NotFormatted);
        }
        if !block_crc_ok(b) {
            return Err(LogError::HeaderCorrupt {
                reason: "CRC mismatch",
            });
        }
        let version = get_u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(LogError::UnsupportedVersion(version));
        }
        if get_u32(b, 12) != BLOCK_SIZE as u32 {
            return Err(LogError::HeaderCorrupt {
                reason: "block size is not 4096",
            });
        }
        let id_len = get_u16(b, 56) as usize;
        if id_len > MAX_CLUSTER_ID_LEN {
            return Err(LogError::HeaderCorrupt {
                reason: "cluster id length out of range",
            });
        }
        let cluster_id = std::str::from_utf8(&b[CLUSTER_ID_AT..CLUSTER_ID_AT + id_len])
            .map_err(|_| LogError::HeaderCorrupt {
                reason: "cluster id is not UTF-8",
            })?
            .to_owned();
        Ok(RegionHeader {
            cluster_id,
            geometry: Geometry {
                region_offset: get_u64(b, 16),
                region_len: get_u64(b, 24),
                log_limit: get_u64(b, 32),
                slot_blocks: get_u64(b, 40),
                log_blocks: get_u64(b, 48),
            },
        })
    }

    /// Refuses a region laid down for a different configuration: the
    /// geometry decides where the slots and log areas are, so guessing would
    /// read the wrong blocks.
    pub fn check_geometry(&self, configured: &Geometry) -> Result<(), LogError> {
        let g = &self.geometry;
        let pairs = [
            ("region_offset", g.region_offset, configured.region_offset),
            ("region_len", g.region_len, configured.region_len),
            ("log_limit", g.log_limit, configured.log_limit),
            ("slot_blocks", g.slot_blocks, configured.slot_blocks),
            ("log_blocks", g.log_blocks, configured.log_blocks),
        ];
        for (field, on_disk, configured) in pairs {
            if on_disk != configured {
                return Err(LogError::GeometryMismatch {
                    field,
                    on_disk,
                    configured,
                });
            }
        }
        Ok(())
    }
}

/// Lifecycle of a checkpoint slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Laid down by format: no snapshot, the log starts at LSN 1.
    Empty = 0,
    /// A checkpoint is being written here; not usable for recovery, but its
    /// generation is taken so that a retry never reuses it.
    Pending = 1,
    /// Snapshot written and checked; usable for recovery.
    Complete = 2,
}

/// The header block of a checkpoint slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotHeader {
    pub index: u8,
    pub state: SlotState,
    pub generation: u64,
    pub lsn: Lsn,
    pub snapshot_len: u64,
    pub snapshot_crc: u32,
}

impl SlotHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(&SLOT_MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION);
        b[12] = self.index;
        b[13] = self.state as u8;
        put_u64(&mut b, 16, self.generation);
        put_u64(&mut b, 24, self.lsn.0);
        put_u64(&mut b, 32, self.snapshot_len);
        put_u32(&mut b, 40, self.snapshot_crc);
        seal_block(&mut b);
        b
    }

    /// Parses the header block of slot `index`; `None` when it is blank,
    /// torn, corrupt, or belongs to the other slot.
    pub fn decode(b: &[u8], index: usize) -> Option<Self> {
        if b.len() < BLOCK_SIZE || b[0..8] != SLOT_MAGIC || !block_crc_ok(b) {
            return None;
        }
        if get_u32(b, 8) != FORMAT_VERSION || b[12] as usize != index {
            return None;
        }
        let state = match b[13] {
            0 => SlotState::Empty,
            1 => SlotState::Pending,
            2 => SlotState::Complete,
            _ => return None,
        };
        Some(SlotHeader {
            index: b[12],
            state,
            generation: get_u64(b, 16),
            lsn: Lsn(get_u64(b, 24)),
            snapshot_len: get_u64(b, 32),
            snapshot_crc: get_u32(b, 40),
        })
    }
}

/// The first 32 bytes of a record, parsed without judging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub magic_ok: bool,
    pub len: u32,
    pub generation: u64,
    pub lsn: Lsn,
    pub crc: u32,
}

impl RecordHeader {
    pub fn parse(b: &[u8]) -> Self {
        RecordHeader {
            magic_ok: b[0..4] == RECORD_MAGIC,
            len: get_u32(b, 4),
            generation: get_u64(b, 8),
            lsn: Lsn(get_u64(b, 16)),
            crc: get_u32(b, 28),
        }
    }

    /// Blocks the whole record occupies.
    pub fn blocks(&self) -> u64 {
        record_blocks(self.len as u64)
    }
}

/// Blocks a record with a `payload_len`-byte payload occupies.
pub(crate) fn record_blocks(payload_len: u64) -> u64 {
    blocks_for(RECORD_HEADER_LEN as u64 + payload_len)
}

/// CRC32 of a record: header bytes 0..28, then the payload.
pub(crate) fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..28]);
    h.update(payload);
    h.finalize()
}

/// A whole record, padded to blocks. `payload.len()` must fit in a u32
/// (checked by the caller against [`Geometry::max_payload`]).
pub(crate) fn encode_record(generation: u64, lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(record_blocks(payload.len() as u64) as usize * BLOCK_SIZE);
    b.extend_from_slice(&RECORD_MAGIC);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&lsn.0.to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    let crc = record_crc(&b, payload);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(payload);
    pad_to_blocks(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry::from_config(&LogConfig {
            region_offset: 1 << 20,
            region_len: 16 << 20,
            log_limit: 4 << 20,
        })
        .unwrap()
    }

    #[test]
    fn default_geometry_places_areas_in_order() {
        let g = geo();
        assert_eq!(g.log_blocks, 1024 + 256);
        // 4096 blocks - header - 2 * 1280 log blocks = 1535, halved.
        assert_eq!(g.slot_blocks, 767);
        assert_eq!(g.header_offset(), 1 << 20);
        assert_eq!(g.slot_offset(0), (1 << 20) + 4096);
        assert_eq!(g.snapshot_offset(0), (1 << 20) + 8192);
        assert_eq!(g.slot_offset(1), (1 << 20) + 4096 * 768);
        assert_eq!(g.log_offset(0), (1 << 20) + 4096 * (1 + 2 * 767));
        assert_eq!(g.log_offset(1), g.log_offset(0) + 1280 * 4096);
        assert!(g.log_offset(1) + g.log_capacity() <= (1 << 20) + (16 << 20));
        assert_eq!(g.max_snapshot(), 766 * 4096);
        assert_eq!(g.max_payload(), 1280 * 4096 - 32);
    }

    #[test]
    fn geometry_refuses_misaligned_or_small_regions() {
        let bad = [
            (100, 1 << 20, 4096),
            (0, (1 << 20) + 1, 4096),
            (0, 1 << 20, 0),
            (0, 8 * 4096, 4 * 4096), // 1 + 2*5 blocks leaves no slots
        ];
        for (region_offset, region_len, log_limit) in bad {
            let cfg = LogConfig {
                region_offset,
                region_len,
                log_limit,
            };
            assert!(
                matches!(
                    Geometry::from_config(&cfg),
                    Err(LogError::InvalidConfig { .. })
                ),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn region_header_bytes() {
        let h = RegionHeader {
            cluster_id: "EXCLUSTER".into(),
            geometry: geo(),
        };
        let b = h.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[0..8], b"BRIGQLOG");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[0x00, 0x10, 0, 0]);
        assert_eq!(&b[16..24], &(1u64 << 20).to_le_bytes());
        assert_eq!(&b[24..32], &(16u64 << 20).to_le_bytes());
        assert_eq!(&b[32..40], &(4u64 << 20).to_le_bytes());
        assert_eq!(&b[40..48], &767u64.to_le_bytes());
        assert_eq!(&b[48..56], &1280u64.to_le_bytes());
        assert_eq!(&b[56..58], &[9, 0]);
        assert_eq!(&b[58..67], b"EXCLUSTER");
        assert!(b[67..4092].iter().all(|&x| x == 0));
        let crc = crc32fast::hash(&b[..4092]);
        assert_eq!(&b[4092..], &crc.to_le_bytes());
        assert_eq!(RegionHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn region_header_refusals() {
        let h = RegionHeader {
            cluster_id: "c".into(),
            geometry: geo(),
        };
        assert!(matches!(
            RegionHeader::decode(&[0u8; 4096]),
            Err(LogError::NotFormatted)
        ));
        let mut torn = h.encode();
        torn[60] ^= 0x20;
        assert!(matches!(
            RegionHeader::decode(&torn),
            Err(LogError::HeaderCorrupt { .. })
        ));
        let mut v2 = h.encode();
        v2[8] = 2;
        seal_block(&mut v2);
        assert!(matches!(
            RegionHeader::decode(&v2),
            Err(LogError::UnsupportedVersion(2))
        ));
        let mut other = geo();
        other.log_limit = 1 << 20;
        assert!(matches!(
            h.check_geometry(&other),
            Err(LogError::GeometryMismatch {
                field: "log_limit",
                ..
            })
        ));
    }

    #[test]
    fn slot_header_bytes() {
        let s = SlotHeader {
            index: 1,
            state: SlotState::Complete,
            generation: 0x0102_0304_0506_0708,
            lsn: Lsn(42),
            snapshot_len: 5000,
            snapshot_crc: 0xdead_beef,
        };
        let b = s.encode();
        assert_eq!(&b[0..8], b"BRIGQCKP");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(b[12], 1);
        assert_eq!(b[13], 2);
        assert_eq!(&b[14..16], &[0, 0]);
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[24..32], &42u64.to_le_bytes());
        assert_eq!(&b[32..40], &5000u64.to_le_bytes());
        assert_eq!(&b[40..44], &[0xef, 0xbe, 0xad, 0xde]);
        assert!(b[44..4092].iter().all(|&x| x == 0));
        assert_eq!(&b[4092..], &crc32fast::hash(&b[..4092]).to_le_bytes());
        assert_eq!(SlotHeader::decode(&b, 1), Some(s));
        // A header found in the wrong slot, or torn, is not a checkpoint.
        assert_eq!(SlotHeader::decode(&b, 0), None);
        let mut torn = b.clone();
        torn[2048..].copy_from_slice(&[0u8; 2048]);
        assert_eq!(SlotHeader::decode(&torn, 1), None);
    }

    #[test]
    fn record_bytes() {
        let payload = b"set group 'EXVS1' owner=NODE2";
        let r = encode_record(7, Lsn(0x1122), payload);
        assert_eq!(r.len(), 4096);
        assert_eq!(&r[0..4], b"QREC");
        assert_eq!(&r[4..8], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&r[8..16], &7u64.to_le_bytes());
        assert_eq!(&r[16..24], &[0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[24..28], &[0, 0, 0, 0]);
        let mut h = crc32fast::Hasher::new();
        h.update(&r[..28]);
        h.update(payload);
        assert_eq!(&r[28..32], &h.finalize().to_le_bytes());
        assert_eq!(&r[32..32 + payload.len()], payload);
        assert!(r[32 + payload.len()..].iter().all(|&x| x == 0));
        let parsed = RecordHeader::parse(&r);
        assert!(parsed.magic_ok);
        assert_eq!(parsed.lsn, Lsn(0x1122));
        assert_eq!(parsed.generation, 7);
        assert_eq!(parsed.blocks(), 1);
    }

    #[test]
    fn record_block_counts_at_boundaries() {
        assert_eq!(record_blocks(0), 1);
        assert_eq!(record_blocks(4096 - 32), 1);
        assert_eq!(record_blocks(4096 - 31), 2);
        assert_eq!(encode_record(1, Lsn(1), &[0xaa; 4065]).len(), 8192);
        assert_eq!(encode_record(1, Lsn(1), &[]).len(), 4096);
    }
}
