//! Logical units: a backing file, its identity, and the per-LU SCSI state
//! (mode parameters, unit attentions, medium removal, start/stop) that the
//! executor in [`crate::scsi`] reads and changes.
//!
//! Backing file: created sparse (`set_len`) when missing. An existing file
//! whose length differs from the configured size is refused unless the
//! LUN's [`Resize`] permission allows the change: `grow` extends it, sparse,
//! keeping its data; only `any` truncates a longer file to the size (the
//! data before the new end is kept, the rest is gone). A configuration
//! whose `size` was edited by mistake therefore never costs data.
//!
//! Identity: the NAA 6 identifier is derived from CRC32C hashes of the
//! target name and LUN, so it is the same after every restart (SPC-4
//! §7.8.6.6.5 wants it to be worldwide unique and stable; it is not random).
//!
//! Data path: positioned reads and writes on the blocking pool. FUA writes,
//! writes with the write cache disabled (WCE 0) and SYNCHRONIZE CACHE call
//! `fdatasync` before they answer (SBC-3 §4.15). Deallocation punches holes
//! (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`), so unmapped blocks read
//! as zeros (LBPRZ 1), and GET LBA STATUS asks the file system with
//! `SEEK_DATA`/`SEEK_HOLE`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::write_data::WriteData;

use busrig_proto::scsi::inquiry;
use busrig_proto::scsi::mode::ModeParams;
use busrig_proto::scsi::provisioning::{LbaStatus, Provisioning};
use busrig_proto::scsi::sense::Asc;
use nix::errno::Errno;
use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};
use nix::unistd::{lseek, Whence};
use tokio::sync::RwLock;

use crate::nexus::ItNexus;
use crate::reservation::{ReservationError, Reservations};

pub const DEFAULT_VENDOR: &str = "BUSRIG";
pub const DEFAULT_PRODUCT: &str = "SHARED DISK";
pub const PRODUCT_REVISION: &str = "0001";

/// IEEE company_id used in NAA 6 identifiers. busrig has no IEEE
/// assignment, so it uses a value with the X ("local") bit set (bit 1 of
/// the first octet, IEEE 802-2014 §8.2): assigned CIDs and OUIs never have
/// that combination, so these identifiers cannot collide with a real
/// vendor's.
pub const LOCAL_COMPANY_ID: u32 = 0x0a_b5_12;

/// Largest physical block emulated (64 KiB).
pub const MAX_PHYSICAL_BLOCK_SIZE: u32 = 64 << 10;

/// log2 of the logical blocks per physical block when `physical` is a
/// power-of-two multiple of `logical` no larger than
/// [`MAX_PHYSICAL_BLOCK_SIZE`]; None otherwise.
pub fn lbppb_exponent(logical: u32, physical: u32) -> Option<u8> {
    if logical == 0 || physical > MAX_PHYSICAL_BLOCK_SIZE || !physical.is_multiple_of(logical) {
        return None;
    }
    let ratio = physical / logical;
    ratio
        .is_power_of_two()
        .then(|| ratio.trailing_zeros() as u8)
}

/// Unit attentions kept per I_T nexus before new ones are dropped
/// (SPC-4 §5.14: the queue depth is vendor specific).
const UA_QUEUE_DEPTH: usize = 16;

/// The most dirty data an emulated volatile write cache holds; beyond it the
/// cache destages (writes back and fdatasyncs) as a real disk would.
const VOLATILE_CACHE_LIMIT: usize = 64 << 20;

/// Largest write done on the connection's thread when the file system
/// cannot say whether a buffered write would wait (no RWF_NOWAIT).
const INLINE_WRITE_MAX: usize = 64 << 10;

/// Writer runs the audit keeps per LU (oldest dropped first).
const AUDIT_LEN: usize = 4096;

/// Where an acknowledged write lives until it is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteCache {
    /// In the host's page cache: it survives a power cycle of the LUN (only
    /// the emulated disk loses power, not the host).
    #[default]
    PageCache,
    /// In an emulated volatile disk cache: a power cycle discards every
    /// write that SYNCHRONIZE CACHE or FUA has not made durable.
    Volatile,
}

/// What opening a LUN may do to an existing backing file whose length
/// differs from the configured size (the `resize` key of a LUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Refuse to open the LUN: the file keeps its length and its data.
    #[default]
    Refuse,
    /// Grow a shorter file (sparse); refuse a longer one.
    Grow,
    /// Grow a shorter file, truncate a longer one to the size.
    Any,
}

impl Resize {
    /// The configuration word.
    pub fn name(self) -> &'static str {
        match self {
            Resize::Refuse => "refuse",
            Resize::Grow => "grow",
            Resize::Any => "any",
        }
    }
}

impl WriteCache {
    pub fn name(self) -> &'static str {
        match self {
            WriteCache::PageCache => "page-cache",
            WriteCache::Volatile => "volatile",
        }
    }
}

/// Dirty blocks of an emulated volatile write cache, by LBA.
#[derive(Debug, Default)]
struct VolatileCache {
    blocks: BTreeMap<u64, bytes::Bytes>,
    bytes: usize,
}

/// One run of writes to a LU by one I_T nexus: the audit records a new run
/// each time the writing nexus changes, with the reservation state then.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriterRun {
    /// First and last write of the run, milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub initiator: String,
    pub isid: String,
    pub writes: u64,
    /// The reservation state when the run started, in words.
    pub reservation: String,
    /// Whether the writer held (or, for all-registrants types, shared) the
    /// reservation when the run started.
    pub reserved_by_writer: bool,
    /// One line for people (without the times: `start_ms` and `end_ms`).
    pub summary: String,
}

/// Wall-clock milliseconds since the Unix epoch, for event and audit times.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How a logical unit is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    pub lun: u64,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Logical block length: 512 or 4096.
    pub block_size: u32,
    /// Physical block length: `block_size` times a power of two, at most
    /// [`MAX_PHYSICAL_BLOCK_SIZE`] (4096 on 512-byte blocks is "512e").
    /// Reported in READ CAPACITY(16) and the Block Limits VPD page.
    pub physical_block_size: u32,
    pub read_only: bool,
    /// The medium is removable (RMB 1): START STOP UNIT may eject and load
    /// it, PREVENT ALLOW MEDIUM REMOVAL guards it. Off for cluster disks:
    /// Windows failover clustering refuses removable disks.
    pub removable: bool,
    pub vendor: String,
    pub product: String,
    /// Unit serial number (VPD 80h), stable per LUN.
    pub serial: String,
    /// Where acknowledged writes live until flushed.
    pub write_cache: WriteCache,
    /// The modelled back end (crate::model); `None`: full speed.
    pub model: Option<crate::model::DiskModelSpec>,
    /// What may happen to an existing backing file of another length.
    pub resize: Resize,
}

impl LunSpec {
    /// A spec with the default vendor and product strings.
    pub fn new(
        lun: u64,
        path: PathBuf,
        size_bytes: u64,
        block_size: u32,
        read_only: bool,
        serial: String,
    ) -> LunSpec {
        LunSpec {
            lun,
            path,
            size_bytes,
            block_size,
            physical_block_size: block_size,
            read_only,
            removable: false,
            vendor: DEFAULT_VENDOR.into(),
            product: DEFAULT_PRODUCT.into(),
            serial,
            write_cache: WriteCache::PageCache,
            model: None,
            resize: Resize::Refuse,
        }
    }
}

/// Why a logical unit could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// Only 512 and 4096 byte logical blocks are emulated.
    #[error("LUN {lun}: block size {block_size} is not 512 or 4096")]
    BlockSize { lun: u64, block_size: u32 },
    /// The physical block is not a power-of-two multiple of the logical
    /// block up to [`MAX_PHYSICAL_BLOCK_SIZE`].
    #[error(
        "LUN {lun}: physical block size {physical_block_size} is not a power-of-two multiple of the block size {block_size} up to {MAX_PHYSICAL_BLOCK_SIZE}"
    )]
    PhysicalBlockSize {
        lun: u64,
        block_size: u32,
        physical_block_size: u32,
    },
    /// The size is zero or not a whole number of blocks.
    #[error(
        "LUN {lun}: size {size_bytes} is not a positive multiple of the block size {block_size}"
    )]
    Size {
        lun: u64,
        size_bytes: u64,
        block_size: u32,
    },
    /// The existing backing file's length differs from the configured size
    /// and the LUN's `resize` permission does not allow that change.
    #[error(
        "LUN {lun}: backing file {path} is {file_len} bytes but the configured size is {size_bytes} bytes; {hint}",
        path = path.display(),
        hint = resize_hint(*file_len, *size_bytes, *allowed)
    )]
    SizeMismatch {
        lun: u64,
        path: PathBuf,
        file_len: u64,
        size_bytes: u64,
        allowed: Resize,
    },
    /// The backing file could not be created, opened or grown.
    #[error("LUN {lun}: backing file {path}: {source}")]
    Io {
        lun: u64,
        path: PathBuf,
        source: io::Error,
    },
    /// The persistent reservation state next to the file is unreadable.
    #[error("LUN {lun}: {0}", lun = .1)]
    Reservations(#[source] ReservationError, u64),
}

/// How to let a refused size change through, for [`LunError::SizeMismatch`].
fn resize_hint(file_len: u64, size_bytes: u64, allowed: Resize) -> String {
    let keep = format!("set size = {file_len} to keep the file as it is");
    if file_len < size_bytes {
        format!("{keep}, or resize = \"grow\" on this LUN to grow it (its data is kept)")
    } else if allowed == Resize::Grow {
        format!(
            "resize = \"grow\" never shrinks a file: {keep}, or resize = \"any\" to truncate it (the last {} bytes are lost)",
            file_len - size_bytes
        )
    } else {
        format!(
            "{keep}, or resize = \"any\" on this LUN to truncate it (the last {} bytes are lost)",
            file_len - size_bytes
        )
    }
}

/// What opening `spec` does to its existing backing file of `file_len`
/// bytes: `Ok(None)` leaves it as it is, `Ok(Some(len))` sets its length.
fn resize_to(spec: &LunSpec, file_len: u64) -> Result<Option<u64>, LunError> {
    let size = spec.size_bytes;
    let allowed = match spec.resize {
        _ if file_len == size => return Ok(None),
        Resize::Grow => file_len < size,
        Resize::Any => true,
        Resize::Refuse => false,
    };
    if !allowed {
        return Err(LunError::SizeMismatch {
            lun: spec.lun,
            path: spec.path.clone(),
            file_len,
            size_bytes: size,
            allowed: spec.resize,
        });
    }
    Ok(Some(size))
}

/// Checks, without changing anything, that `spec` may open its backing
/// file: a missing file will be created, an existing one must have the
/// configured length or a `resize` permission for the change. The server
/// checks every LUN this way before it opens any.
pub fn check_backing_file(spec: &LunSpec) -> Result<(), LunError> {
    match std::fs::metadata(&spec.path) {
        Ok(m) => resize_to(spec, m.len()).map(|_| ()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LunError::Io {
            lun: spec.lun,
            path: spec.path.clone(),
            source,
        }),
    }
}

/// Which I_T nexuses a unit attention is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaScope {
    One(ItNexus),
    All,
    AllExcept(ItNexus),
}

#[derive(Debug, Default)]
struct LuState {
    mode: ModeParams,
    /// START STOP UNIT with START 0 stopped the unit (SBC-3 §5.25).
    stopped: bool,
    /// START STOP UNIT with LOEJ 1 and START 0 unloaded the removable
    /// medium; LOEJ 1 with START 1 loads it again.
    ejected: bool,
    /// I_T nexuses holding a PREVENT MEDIUM REMOVAL (SBC-3 §5.13).
    prevent: BTreeSet<ItNexus>,
    /// Pending unit attentions of every known I_T nexus, oldest first.
    ua: HashMap<ItNexus, VecDeque<Asc>>,
}

/// One logical unit on the bus.
pub struct LogicalUnit {
    spec: LunSpec,
    target_name: String,
    file: Arc<File>,
    /// Capacity in logical blocks; changed only by [`Self::resize`].
    blocks: std::sync::atomic::AtomicU64,
    naa: [u8; 16],
    /// COMPARE AND WRITE takes it exclusively, every other media command
    /// shared, so the compare and the write are atomic with respect to all
    /// other commands on this LU (SBC-3 §5.2).
    pub(crate) media_lock: RwLock<()>,
    state: Mutex<LuState>,
    /// SCSI-2 and persistent reservations of this LU.
    pub reservations: Mutex<Reservations>,
    /// PERSISTENT RESERVE OUT commands take turns, held from applying the
    /// service action until its APTPL state is durable, so states reach the
    /// disk in the order they were applied. Only PR OUT waits on it; every
    /// other command takes `reservations` for a moment, never across a save.
    pub(crate) pr_out_turn: Arc<tokio::sync::Mutex<()>>,
    /// The emulated volatile write cache, when configured.
    volatile: Option<Mutex<VolatileCache>>,
    /// Serializes destaging with write-through writes and deallocation on a
    /// volatile cache, so a destage never writes back a block older than
    /// what a concurrent FUA write or UNMAP put in the file.
    flush_lock: tokio::sync::Mutex<()>,
    /// Writes that go to the blocking pool take turns: buffered writes to
    /// one file serialise on its inode lock in the kernel anyway, and
    /// several pool threads contending for it spin on a CPU the connection
    /// threads need (README "Performance").
    pool_write: tokio::sync::Mutex<()>,
    /// Writer history for `busrig bus audit`.
    audit: Mutex<VecDeque<WriterRun>>,
    /// A SANITIZE running or failed on this LU (SBC-4 §4.11).
    pub(crate) sanitize: Mutex<crate::scsi::SanitizeState>,
    /// EXTENDED COPY results held for RECEIVE COPY RESULTS (SPC-4 §6.18).
    pub(crate) copy_results: Mutex<crate::scsi::HeldCopyResults>,
    /// The modelled back end, when configured.
    model: Option<crate::model::DiskModel>,
    /// The file system takes RWF_NOWAIT reads, and writes (each cleared
    /// the first time it refuses them).
    nowait_read: std::sync::atomic::AtomicBool,
    nowait_write: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LogicalUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalUnit")
            .field("spec", &self.spec)
            .field("blocks", &self.blocks)
            .finish()
    }
}

/// The NAA 6 identifier of `lun` on target `target_name`: vendor specific
/// identifier from CRC32C(target name), extension from CRC32C(target name
/// and LUN) and the LUN itself, so two LUNs of one target always differ.
pub fn naa_for(target_name: &str, lun: u64) -> [u8; 16] {
    let h1 = crc32c::crc32c(target_name.as_bytes());
    let h2 = crc32c::crc32c_append(h1, &lun.to_be_bytes());
    inquiry::naa6(
        LOCAL_COMPANY_ID,
        u64::from(h1) << 4 | (lun >> 32) & 0xf,
        u64::from(h2) << 32 | (lun & 0xffff_ffff),
    )
}

impl LogicalUnit {
    /// Opens (creating when missing) the backing file and the reservation
    /// state, which lives next to it as `<path>.pr`.
    pub fn open(spec: LunSpec, target_name: &str) -> Result<LogicalUnit, LunError> {
        let lun = spec.lun;
        if spec.block_size != 512 && spec.block_size != 4096 {
            return Err(LunError::BlockSize {
                lun,
                block_size: spec.block_size,
            });
        }
        if lbppb_exponent(spec.block_size, spec.physical_block_size).is_none() {
            return Err(LunError::PhysicalBlockSize {
                lun,
                block_size: spec.block_size,
                physical_block_size: spec.physical_block_size,
            });
        }
        if spec.size_bytes == 0 || !spec.size_bytes.is_multiple_of(u64::from(spec.block_size)) {
            return Err(LunError::Size {
                lun,
                size_bytes: spec.size_bytes,
                block_size: spec.block_size,
            });
        }
        let io_err = |source| LunError::Io {
            lun,
            path: spec.path.clone(),
            source,
        };
        // Create (or resize, where `spec.resize` allows it) with write
        // access even for a read-only LU; the handle kept for I/O is
        // read-only then.
        {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&spec.path);
            match f {
                Ok(f) => {
                    let len = f.metadata().map_err(io_err)?.len();
                    // A file this call just created has length 0; an
                    // empty one that was there holds no data to lose.
                    let created = len == 0;
                    let to = if created {
                        Some(spec.size_bytes)
                    } else {
                        resize_to(&spec, len)?
                    };
                    if let Some(to) = to {
                        if !created {
                            tracing::warn!(
                                lun,
                                path = %spec.path.display(),
                                from = len,
                                to,
                                "backing file resized (resize = {})",
                                spec.resize.name()
                            );
                        }
                        f.set_len(to).map_err(io_err)?;
                    }
                }
                Err(e) if spec.read_only && e.kind() == io::ErrorKind::PermissionDenied => {
                    let len = std::fs::metadata(&spec.path).map_err(io_err)?.len();
                    if len != spec.size_bytes {
                        return Err(LunError::SizeMismatch {
                            lun,
                            path: spec.path.clone(),
                            file_len: len,
                            size_bytes: spec.size_bytes,
                            // A file we may not write cannot be resized.
                            allowed: Resize::Refuse,
                        });
                    }
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .open(&spec.path)
            .map_err(io_err)?;
        let mut pr_path = spec.path.clone().into_os_string();
        pr_path.push(".pr");
        let reservations = Reservations::new(Some(PathBuf::from(pr_path)))
            .map_err(|e| LunError::Reservations(e, lun))?;
        Ok(LogicalUnit {
            blocks: (spec.size_bytes / u64::from(spec.block_size)).into(),
            naa: naa_for(target_name, lun),
            target_name: target_name.to_string(),
            file: Arc::new(file),
            media_lock: RwLock::new(()),
            state: Mutex::new(LuState::default()),
            reservations: Mutex::new(reservations),
            pr_out_turn: Arc::default(),
            volatile: (spec.write_cache == WriteCache::Volatile).then(Mutex::default),
            flush_lock: tokio::sync::Mutex::new(()),
            pool_write: tokio::sync::Mutex::new(()),
            audit: Mutex::new(VecDeque::new()),
            sanitize: Mutex::default(),
            copy_results: Mutex::default(),
            model: spec.model.clone().map(crate::model::DiskModel::new),
            nowait_read: std::sync::atomic::AtomicBool::new(nowait::SUPPORTED),
            nowait_write: std::sync::atomic::AtomicBool::new(nowait::SUPPORTED),
            spec,
        })
    }

    pub fn lun(&self) -> u64 {
        self.spec.lun
    }
    pub fn spec(&self) -> &LunSpec {
        &self.spec
    }
    pub fn target_name(&self) -> &str {
        &self.target_name
    }
    /// Capacity in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Capacity in bytes (the configured size until a live resize).
    pub fn size_bytes(&self) -> u64 {
        self.blocks() * u64::from(self.spec.block_size)
    }

    /// Changes the capacity of a running LU to `size_bytes` (a live `lun
    /// resize`, docs/semantics.md "Live reconfiguration"): waits until no
    /// command holds the medium, sets the backing file's length (growing is
    /// sparse; shrinking drops the data past the new end, and any cached
    /// dirty block there) and the capacity, then posts 2A/09 CAPACITY DATA
    /// HAS CHANGED to every I_T nexus (SBC-3 §4.6, SPC-4 §5.14). Returns the
    /// old size in bytes.
    pub async fn resize(&self, size_bytes: u64) -> Result<u64, LunError> {
        let bs = u64::from(self.spec.block_size);
        if size_bytes == 0 || !size_bytes.is_multiple_of(bs) {
            return Err(LunError::Size {
                lun: self.spec.lun,
                size_bytes,
                block_size: self.spec.block_size,
            });
        }
        let _medium = self.media_lock.write().await;
        let _flush = self.flush_lock.lock().await;
        let old = self.size_bytes();
        if old == size_bytes {
            return Ok(old);
        }
        let path = self.spec.path.clone();
        let io_err = |source| LunError::Io {
            lun: self.spec.lun,
            path: path.clone(),
            source,
        };
        if self.spec.read_only {
            return Err(io_err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a read-only LUN cannot be resized",
            )));
        }
        self.blocking(move |f| f.set_len(size_bytes))
            .await
            .map_err(io_err)?;
        let blocks = size_bytes / bs;
        if let Some(cache) = &self.volatile {
            let mut c = cache.lock().unwrap();
            let gone: Vec<u64> = c.blocks.range(blocks..).map(|(b, _)| *b).collect();
            for b in gone {
                c.bytes -= c.blocks.remove(&b).map_or(0, |d| d.len());
            }
        }
        self.blocks
            .store(blocks, std::sync::atomic::Ordering::Release);
        self.post_unit_attention(UaScope::All, Asc::CAPACITY_DATA_HAS_CHANGED);
        tracing::info!(target = %self.target_name, lun = self.spec.lun, from = old, to = size_bytes, "LUN resized");
        Ok(old)
    }

    /// A command that checked its range before a live shrink may reach
    /// the medium after it: refused here, so nothing lands past the end.
    fn check_extent(&self, lba: u64, blocks: u64) -> io::Result<()> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the range lies past the end of the LUN (resized while the command waited)",
            )),
        }
    }
    pub fn block_size(&self) -> u32 {
        self.spec.block_size
    }
    /// Logical blocks per physical block (1, or 8 on a 512e disk).
    pub fn blocks_per_physical_block(&self) -> u32 {
        self.spec.physical_block_size / self.spec.block_size
    }
    /// log2 of [`Self::blocks_per_physical_block`], as READ CAPACITY(16)
    /// reports it.
    pub fn lbppb_exponent(&self) -> u8 {
        self.blocks_per_physical_block().trailing_zeros() as u8
    }
    /// The medium is removable (RMB 1).
    pub fn removable(&self) -> bool {
        self.spec.removable
    }
    pub fn naa(&self) -> [u8; 16] {
        self.naa
    }

    /// Current mode parameters.
    pub fn mode(&self) -> ModeParams {
        self.state.lock().unwrap().mode
    }
    pub(crate) fn set_mode(&self, m: ModeParams) {
        self.state.lock().unwrap().mode = m;
    }
    /// Sense data format chosen by the control mode page.
    pub fn d_sense(&self) -> bool {
        self.mode().d_sense
    }
    /// Writes are refused: configured read-only, or SWP set.
    pub fn write_protected(&self) -> bool {
        self.spec.read_only || self.mode().swp
    }

    pub fn stopped(&self) -> bool {
        self.state.lock().unwrap().stopped
    }
    pub(crate) fn set_stopped(&self, stopped: bool) {
        self.state.lock().unwrap().stopped = stopped;
    }

    /// The removable medium has been unloaded (never true for a
    /// non-removable LU).
    pub fn ejected(&self) -> bool {
        self.state.lock().unwrap().ejected
    }

    /// Unloads (true) or loads (false) the removable medium. Loading also
    /// starts the unit (SBC-3 §5.25: LOEJ 1 with START 1 loads the medium
    /// and makes the LU ready). Returns whether the state changed.
    pub(crate) fn set_ejected(&self, ejected: bool) -> bool {
        let mut s = self.state.lock().unwrap();
        if !ejected {
            s.stopped = false;
        }
        std::mem::replace(&mut s.ejected, ejected) != ejected
    }

    /// PREVENT (true) or ALLOW (false) medium removal for `nexus`.
    pub(crate) fn set_prevent(&self, nexus: &ItNexus, prevent: bool) {
        let mut s = self.state.lock().unwrap();
        if prevent {
            s.prevent.insert(nexus.clone());
        } else {
            s.prevent.remove(nexus);
        }
    }
    /// Some I_T nexus prevents medium removal.
    pub fn removal_prevented(&self) -> bool {
        !self.state.lock().unwrap().prevent.is_empty()
    }

    /// Makes `nexus` known so that "all nexuses" unit attentions reach it.
    pub fn add_nexus(&self, nexus: &ItNexus) {
        self.state
            .lock()
            .unwrap()
            .ua
            .entry(nexus.clone())
            .or_default();
    }

    /// The nexus is gone: its unit attentions and PREVENT state go with it
    /// (SBC-3 §5.13: an I_T nexus loss clears its prevent).
    pub fn remove_nexus(&self, nexus: &ItNexus) {
        let mut s = self.state.lock().unwrap();
        s.ua.remove(nexus);
        s.prevent.remove(nexus);
    }

    /// Establishes a unit attention condition (SPC-4 §5.14). A condition
    /// already pending for a nexus is not queued twice; a full queue drops
    /// the new condition.
    pub fn post_unit_attention(&self, to: UaScope, asc: Asc) {
        let mut s = self.state.lock().unwrap();
        if let UaScope::One(n) = &to {
            s.ua.entry(n.clone()).or_default();
        }
        for (n, q) in s.ua.iter_mut() {
            let hit = match &to {
                UaScope::One(x) => x == n,
                UaScope::All => true,
                UaScope::AllExcept(x) => x != n,
            };
            if hit && !q.contains(&asc) && q.len() < UA_QUEUE_DEPTH {
                q.push_back(asc);
            }
        }
    }

    /// Removes and returns the oldest pending unit attention of `nexus`.
    pub fn take_unit_attention(&self, nexus: &ItNexus) -> Option<Asc> {
        self.state.lock().unwrap().ua.get_mut(nexus)?.pop_front()
    }

    /// Drops a pending `asc` of `nexus`, wherever it is in the queue.
    pub fn clear_unit_attention(&self, nexus: &ItNexus, asc: Asc) {
        if let Some(q) = self.state.lock().unwrap().ua.get_mut(nexus) {
            q.retain(|a| *a != asc);
        }
    }

    /// Pending unit attentions of `nexus`, oldest first (for status).
    pub fn pending_unit_attentions(&self, nexus: &ItNexus) -> Vec<Asc> {
        self.state
            .lock()
            .unwrap()
            .ua
            .get(nexus)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The state a reset returns to (SAM-5 §6.3.4: mode parameters to
    /// their defaults when none are saved; the unit started; no prevent).
    /// An unloaded medium stays unloaded: a reset does not put a medium
    /// back into the drive.
    pub(crate) fn reset_state(&self) {
        let mut s = self.state.lock().unwrap();
        s.mode = ModeParams::default();
        s.stopped = false;
        s.prevent.clear();
    }

    fn offset(&self, lba: u64) -> u64 {
        lba * u64::from(self.spec.block_size)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("I/O task failed: {e}"))))
    }

    /// Books an I/O with the disk model; when it completes, if the model
    /// makes it wait.
    fn model_admit(&self, lba: u64, blocks: u64) -> Option<std::time::Instant> {
        let m = self.model.as_ref()?;
        m.admit(self.offset(lba), blocks * u64::from(self.spec.block_size))
    }

    /// The disk model and its counters, for the status report.
    pub fn model_status(&self) -> Option<serde_json::Value> {
        self.model.as_ref().map(|m| m.status())
    }

    /// Reads `blocks` blocks at `lba`, as slow as the disk model says.
    pub async fn read(&self, lba: u64, blocks: u32) -> io::Result<Vec<u8>> {
        self.check_extent(lba, blocks.into())?;
        let done = self.model_admit(lba, u64::from(blocks));
        let r = self.read_now(lba, blocks).await;
        if let Some(t) = done {
            crate::model::wait_until(t).await;
        }
        r
    }

    /// Writes whole blocks at `lba` (see [`Self::write_now`]), as slow as
    /// the disk model says.
    pub async fn write(&self, lba: u64, data: WriteData, sync: bool) -> io::Result<()> {
        let blocks = (data.len() / self.spec.block_size as usize) as u64;
        self.check_extent(lba, blocks)?;
        let done = self.model_admit(lba, blocks);
        let r = self.write_now(lba, data, sync).await;
        if let Some(t) = done {
            crate::model::wait_until(t).await;
        }
        r
    }

    async fn read_now(&self, lba: u64, blocks: u32) -> io::Result<Vec<u8>> {
        let off = self.offset(lba);
        let bs = self.spec.block_size as usize;
        let len = blocks as usize * bs;
        // Not zeroed first: the read fills it, and zeroing 1 MiB costs
        // as much as a good part of the copy (README "Performance").
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        // Data in the page cache is copied on this thread: handing a 4 KiB
        // copy to the blocking pool and back costs two thread switches,
        // more than the copy (see README "Performance").
        // Measured, this holds for 1 MiB reads too: copied on the pool, the
        // data then crosses cores to be sent, and throughput dropped by a
        // quarter.
        if self.inline_io(&self.nowait_read, |f| {
            nowait::read(f, &mut buf.spare_capacity_mut()[..len], off)
        }) {
            // SAFETY: the read succeeded in full, so all `len` bytes are
            // initialised.
            unsafe { buf.set_len(len) };
        } else {
            buf = self
                .blocking(move |f| {
                    read_full_at(f, &mut buf.spare_capacity_mut()[..len], off)?;
                    // SAFETY: read_full_at filled all `len` bytes.
                    unsafe { buf.set_len(len) };
                    Ok(buf)
                })
                .await?;
        }
        // Dirty blocks of a volatile cache are newer than the file.
        if let Some(cache) = &self.volatile {
            let cache = cache.lock().unwrap();
            for (b, data) in cache.blocks.range(lba..lba + u64::from(blocks)) {
                let at = (b - lba) as usize * bs;
                buf[at..at + bs].copy_from_slice(data);
            }
        }
        Ok(buf)
    }

    /// Writes whole blocks at `lba`; with `sync`, calls fdatasync before
    /// returning (FUA, or the write cache disabled).
    async fn write_now(&self, lba: u64, data: WriteData, sync: bool) -> io::Result<()> {
        let _flush = match (&self.volatile, sync) {
            (Some(_), true) => Some(self.flush_lock.lock().await),
            _ => None,
        };
        if let Some(cache) = &self.volatile {
            let data = data.contiguous();
            let bs = self.spec.block_size as usize;
            let nblocks = (data.len() / bs) as u64;
            let over = {
                let mut c = cache.lock().unwrap();
                if sync {
                    // Written through below; older cached copies must not
                    // shadow it.
                    let stale: Vec<u64> = c
                        .blocks
                        .range(lba..lba + nblocks)
                        .map(|(b, _)| *b)
                        .collect();
                    for b in stale {
                        c.bytes -= c.blocks.remove(&b).map_or(0, |d| d.len());
                    }
                    false
                } else {
                    for i in 0..nblocks {
                        let block = data.slice(i as usize * bs..(i as usize + 1) * bs);
                        c.bytes += bs;
                        if let Some(old) = c.blocks.insert(lba + i, block) {
                            c.bytes -= old.len();
                        }
                    }
                    c.bytes > VOLATILE_CACHE_LIMIT
                }
            };
            if !sync {
                if over {
                    self.destage_locked().await?;
                }
                return Ok(());
            }
        }
        let off = self.offset(lba);
        // A write the page cache takes without waiting (no dirty-page
        // throttling, no block allocation that needs I/O) is done here;
        // anything else, and every fdatasync, on the blocking pool.
        let mut done = 0;
        if !sync {
            for part in data.parts() {
                let mut n = 0;
                let whole = self.inline_io(&self.nowait_write, |f| {
                    nowait::write(f, part, off + done as u64, &mut n)
                });
                done += n;
                if !whole {
                    break;
                }
            }
            if done == data.len() {
                return Ok(());
            }
            // File systems without RWF_NOWAIT for buffered writes (ext4
            // before Linux 6.x answers EOPNOTSUPP): a small write into the
            // page cache is still done here. It can wait when the kernel
            // throttles dirty pages, holding up this connection thread for
            // that long; measured, that costs less than two thread switches
            // per command (README "Performance").
            if !self.nowait_write.load(std::sync::atomic::Ordering::Relaxed)
                && data.len() - done <= INLINE_WRITE_MAX
            {
                return write_parts_at(
                    &self.file,
                    &data.slice(done, usize::MAX),
                    off + done as u64,
                );
            }
        }
        let rest = data.slice(done, usize::MAX);
        let _turn = self.pool_write.lock().await;
        self.blocking(move |f| {
            write_parts_at(f, &rest, off + done as u64)?;
            if sync {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
    }

    /// Runs a non-blocking attempt at I/O on this thread unless the file
    /// system has said it cannot; true when the attempt did all of it.
    fn inline_io(
        &self,
        supported: &std::sync::atomic::AtomicBool,
        attempt: impl FnOnce(&File) -> nowait::Attempt,
    ) -> bool {
        use std::sync::atomic::Ordering;
        if !supported.load(Ordering::Relaxed) {
            return false;
        }
        match attempt(&self.file) {
            nowait::Attempt::Done => true,
            nowait::Attempt::WouldBlock => false,
            nowait::Attempt::Unsupported => {
                supported.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// fdatasync: everything written so far is on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        if self.volatile.is_some() {
            return self.destage_locked().await;
        }
        self.blocking(|f| f.sync_data()).await
    }

    /// Writes the volatile cache's dirty blocks to the file and fdatasyncs.
    /// Blocks stay readable from the cache until they are durable; a block
    /// rewritten meanwhile stays dirty.
    async fn destage_locked(&self) -> io::Result<()> {
        let _flush = self.flush_lock.lock().await;
        let Some(cache) = &self.volatile else {
            return Ok(());
        };
        let dirty: Vec<(u64, bytes::Bytes)> = cache
            .lock()
            .unwrap()
            .blocks
            .iter()
            .map(|(b, d)| (*b, d.clone()))
            .collect();
        let bs = u64::from(self.spec.block_size);
        let written = dirty.clone();
        self.blocking(move |f| {
            for (b, d) in &written {
                f.write_all_at(d, b * bs)?;
            }
            f.sync_data()
        })
        .await?;
        let mut c = cache.lock().unwrap();
        for (b, d) in dirty {
            if c.blocks
                .get(&b)
                .is_some_and(|cur| cur.as_ptr() == d.as_ptr())
            {
                c.blocks.remove(&b);
                c.bytes -= d.len();
            }
        }
        Ok(())
    }

    /// The LU loses power: a volatile cache's dirty blocks are lost (the
    /// count is returned), reservations behave as after power on (SPC-4
    /// §5.9.4: SCSI-2 cleared; persistent state kept only with APTPL), the
    /// LU state returns to its defaults and every nexus gets 29/01.
    pub fn power_cycle(&self) -> usize {
        let lost = match &self.volatile {
            Some(cache) => {
                let mut c = cache.lock().unwrap();
                c.bytes = 0;
                std::mem::take(&mut c.blocks).len()
            }
            None => 0,
        };
        self.reservations.lock().unwrap().power_on();
        self.reset_state();
        self.post_unit_attention(UaScope::All, Asc::POWER_ON_OCCURRED);
        lost
    }

    /// Cache mode and dirty blocks, for the status report.
    pub fn write_cache_status(&self) -> serde_json::Value {
        let dirty = self
            .volatile
            .as_ref()
            .map_or(0, |c| c.lock().unwrap().blocks.len());
        serde_json::json!({ "mode": self.spec.write_cache.name(), "dirty_blocks": dirty })
    }

    /// Every I_T nexus this LU knows (for the status report).
    pub fn known_nexuses(&self) -> Vec<ItNexus> {
        let mut v: Vec<ItNexus> = self.state.lock().unwrap().ua.keys().cloned().collect();
        v.sort();
        v
    }

    /// Records a successful write by `nexus` in the writer history.
    pub fn record_write(&self, nexus: &ItNexus) {
        let now = now_ms();
        let mut audit = self.audit.lock().unwrap();
        if let Some(run) = audit.back_mut() {
            if *run.initiator == *nexus.initiator && run.isid == nexus.isid_hex() {
                run.writes += 1;
                run.end_ms = now;
                return;
            }
        }
        let (reservation, reserved_by_writer) = self.reservation_words(nexus);
        let summary = format!(
            "{} isid {} starts writing; reservation: {}{}",
            nexus.initiator,
            nexus.isid_hex(),
            reservation,
            if reserved_by_writer {
                ""
            } else {
                " (writer does not hold it)"
            }
        );
        tracing::info!(lun = self.spec.lun, target = %self.target_name, writer = %nexus, %reservation, reserved_by_writer, "writer changed");
        audit.push_back(WriterRun {
            start_ms: now,
            end_ms: now,
            initiator: nexus.initiator.to_string(),
            isid: nexus.isid_hex(),
            writes: 1,
            reservation,
            reserved_by_writer,
            summary,
        });
        while audit.len() > AUDIT_LEN {
            audit.pop_front();
        }
    }

    fn reservation_words(&self, writer: &ItNexus) -> (String, bool) {
        let r = self.reservations.lock().unwrap();
        if let Some(h) = r.scsi2_holder() {
            return (
                format!("SCSI-2 held by {} isid {}", h.initiator, h.isid_hex()),
                h == writer,
            );
        }
        let snap = r.pr_snapshot();
        match snap.reservation {
            Some(res) => match res.holder {
                Some(h) => (
                    format!(
                        "PR {} held by {} isid {}",
                        res.pr_type.short_name(),
                        h.initiator,
                        h.isid_hex()
                    ),
                    &h == writer,
                ),
                None => (
                    format!("PR {} (all registrants)", res.pr_type.short_name()),
                    snap.registrations.iter().any(|g| &g.nexus == writer),
                ),
            },
            None => ("none".to_string(), false),
        }
    }

    /// The writer history, oldest first.
    pub fn audit(&self) -> Vec<WriterRun> {
        self.audit.lock().unwrap().iter().cloned().collect()
    }

    /// Deallocates `blocks` blocks at `lba`: punches a hole so the range
    /// reads back as zeros. A file system without hole punching gets zeros
    /// written instead, which keeps LBPRZ true.
    pub async fn deallocate(&self, lba: u64, blocks: u64) -> io::Result<()> {
        let _flush = match &self.volatile {
            Some(_) => Some(self.flush_lock.lock().await),
            None => None,
        };
        if let Some(cache) = &self.volatile {
            let mut c = cache.lock().unwrap();
            let gone: Vec<u64> = c
                .blocks
                .range(lba..lba.saturating_add(blocks))
                .map(|(b, _)| *b)
                .collect();
            for b in gone {
                c.bytes -= c.blocks.remove(&b).map_or(0, |d| d.len());
            }
        }
        let off = self.offset(lba);
        let len = blocks * u64::from(self.spec.block_size);
        self.blocking(move |f| {
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match fallocate(f.as_raw_fd(), flags, off as i64, len as i64) {
                Ok(()) => Ok(()),
                Err(Errno::EOPNOTSUPP) => {
                    let zeros = vec![0u8; 1 << 20];
                    let mut done = 0u64;
                    while done < len {
                        let n = (len - done).min(zeros.len() as u64) as usize;
                        f.write_all_at(&zeros[..n], off + done)?;
                        done += n as u64;
                    }
                    Ok(())
                }
                Err(e) => Err(io::Error::from(e)),
            }
        })
        .await
    }

    /// Asks the kernel to read ahead (PRE-FETCH, SBC-3 §5.10).
    pub async fn prefetch(&self, lba: u64, blocks: u64) -> io::Result<()> {
        let off = self.offset(lba) as i64;
        let len = (blocks * u64::from(self.spec.block_size)) as i64;
        self.blocking(move |f| {
            posix_fadvise(
                f.as_raw_fd(),
                off,
                len,
                PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            )
            .map_err(io::Error::from)
        })
        .await
    }

    /// Provisioning status from `lba` on, at most `max` extents, from the
    /// file system's idea of data and holes. A block that is only partly a
    /// hole still holds data and is reported mapped.
    pub async fn lba_status(&self, lba: u64, max: usize) -> io::Result<Vec<LbaStatus>> {
        let bs = u64::from(self.spec.block_size);
        let end = self.blocks();
        self.blocking(move |f| {
            let fd = f.as_raw_fd();
            let mut out = Vec::new();
            let mut cur = lba;
            while cur < end && out.len() < max.max(1) {
                let off = (cur * bs) as i64;
                let next_data = match lseek(fd, off, Whence::SeekData) {
                    Ok(d) => Some(d as u64 / bs),
                    Err(Errno::ENXIO) => None,
                    Err(e) => return Err(io::Error::from(e)),
                };
                let (status, stop) = match next_data {
                    Some(d) if d <= cur => {
                        let hole = match lseek(fd, off, Whence::SeekHole) {
                            Ok(h) => (h as u64).div_ceil(bs),
                            Err(Errno::ENXIO) => end,
                            Err(e) => return Err(io::Error::from(e)),
                        };
                        (Provisioning::Mapped, hole.max(cur + 1))
                    }
                    Some(d) => (Provisioning::Deallocated, d),
                    None => (Provisioning::Deallocated, end),
                };
                let stop = stop.min(end).min(cur + u64::from(u32::MAX));
                out.push(LbaStatus {
                    lba: cur,
                    blocks: (stop - cur) as u32,
                    status,
                });
                cur = stop;
            }
            Ok(out)
        })
        .await
    }
}

/// Fills `buf` from the file at `off` with pread(2), which only writes
/// into it, so `buf` need not be initialised; on success all of it is.
fn read_full_at(f: &File, buf: &mut [std::mem::MaybeUninit<u8>], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length for the
        // duration of the call; the fd is open.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                (off + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backing file ends inside the read",
                ))
            }
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Writes the pieces of `data` one after the other from `off`: one
/// positioned write per piece, no copy into one buffer.
fn write_parts_at(f: &File, data: &WriteData, mut off: u64) -> io::Result<()> {
    for part in data.parts() {
        f.write_all_at(part, off)?;
        off += part.len() as u64;
    }
    Ok(())
}

/// Positioned I/O that never waits for the device: `preadv2` and
/// `pwritev2` with `RWF_NOWAIT` (Linux 4.14 for reads; buffered writes on
/// ext4 and XFS in recent kernels). They do what the page cache can do at
/// once and say EAGAIN for the rest, so an async worker thread can call
/// them without stalling other connections.
mod nowait {
    use std::fs::File;

    /// How an attempt went.
    pub enum Attempt {
        /// All of it is done.
        Done,
        /// Part or none is done; the rest needs the blocking pool.
        WouldBlock,
        /// This file (system) does not take RWF_NOWAIT at all.
        Unsupported,
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod imp {
        use super::Attempt;
        use std::fs::File;
        use std::mem::MaybeUninit;
        use std::os::unix::io::AsRawFd;

        pub const SUPPORTED: bool = true;

        fn classify(err: std::io::Error) -> Attempt {
            match err.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    Attempt::Unsupported
                }
                // EAGAIN, and any real error: the blocking path repeats
                // the I/O and reports a real error from there.
                _ => Attempt::WouldBlock,
            }
        }

        pub fn read(f: &File, buf: &mut [MaybeUninit<u8>], off: u64) -> Attempt {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: one iovec describing `buf`, which is valid for writes
            // of its length for the duration of the call (the kernel only
            // writes it, so it need not be initialised); the fd is open.
            let n = unsafe {
                libc::preadv2(f.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_NOWAIT)
            };
            if n < 0 {
                return classify(std::io::Error::last_os_error());
            }
            // A short count is a partly cached range (or the end of the
            // file, which the caller's range check rules out): redo it all.
            if n as usize == buf.len() {
                Attempt::Done
            } else {
                Attempt::WouldBlock
            }
        }

        pub fn write(f: &File, data: &[u8], off: u64, done: &mut usize) -> Attempt {
            let iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            // SAFETY: one iovec describing `data`, valid for reads of its
            // length for the duration of the call (the kernel only reads
            // it); the fd is open.
            let n = unsafe {
                libc::pwritev2(f.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_NOWAIT)
            };
            if n < 0 {
                return classify(std::io::Error::last_os_error());
            }
            // A short write leaves the rest to the blocking path, which
            // continues from `done`.
            *done = n as usize;
            if *done == data.len() {
                Attempt::Done
            } else {
                Attempt::WouldBlock
            }
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    mod imp {
        use super::Attempt;
        use std::fs::File;

        pub const SUPPORTED: bool = false;

        pub fn read(_: &File, _: &mut [std::mem::MaybeUninit<u8>], _: u64) -> Attempt {
            Attempt::Unsupported
        }

        pub fn write(_: &File, _: &[u8], _: u64, _: &mut usize) -> Attempt {
            Attempt::Unsupported
        }
    }

    pub use imp::SUPPORTED;

    /// Reads all of `buf` at `off` from the page cache; `Done` means every
    /// byte of `buf` is now initialised.
    pub fn read(f: &File, buf: &mut [std::mem::MaybeUninit<u8>], off: u64) -> Attempt {
        imp::read(f, buf, off)
    }

    pub fn write(f: &File, data: &[u8], off: u64, done: &mut usize) -> Attempt {
        imp::write(f, data, off, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &tempfile::TempDir, size: u64, bs: u32) -> LunSpec {
        LunSpec::new(3, dir.path().join("lun3.img"), size, bs, false, "S3".into())
    }

    fn nexus(i: &str) -> ItNexus {
        ItNexus::new(i, [0, 2, 0x3d, 0, 0, 1], "iqn.t", 1)
    }

    #[test]
    fn read_full_at_fills_uninitialised_memory_and_reports_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let f = File::open(&path).unwrap();
        let mut buf: Vec<u8> = Vec::with_capacity(6000);
        read_full_at(&f, &mut buf.spare_capacity_mut()[..6000], 4000).unwrap();
        // SAFETY: read_full_at filled all 6000 bytes.
        unsafe { buf.set_len(6000) };
        assert_eq!(buf, content[4000..]);
        let mut buf: Vec<u8> = Vec::with_capacity(100);
        let e = read_full_at(&f, &mut buf.spare_capacity_mut()[..100], 9950).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// `spec` with a resize permission.
    fn resizing(dir: &tempfile::TempDir, size: u64, resize: Resize) -> LunSpec {
        LunSpec {
            resize,
            ..spec(dir, size, 512)
        }
    }

    /// A 1 MiB backing file with a distinct byte in every 4 KiB.
    fn patterned_file(dir: &tempfile::TempDir) -> (PathBuf, Vec<u8>) {
        let path = dir.path().join("lun3.img");
        let content: Vec<u8> = (0..1u32 << 20).map(|i| (i >> 12) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        (path, content)
    }

    fn mismatch(r: Result<LogicalUnit, LunError>) -> LunError {
        match r {
            Err(e @ LunError::SizeMismatch { .. }) => e,
            other => panic!("want SizeMismatch, got {other:?}"),
        }
    }

    #[test]
    fn open_creates_a_missing_file_sparse_and_reopens_it_at_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun3.img");
        let lu = LogicalUnit::open(spec(&dir, 1 << 20, 512), "iqn.t").unwrap();
        assert_eq!(lu.blocks(), 2048);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        drop(lu);
        // The same configuration again: nothing to resize, no permission needed.
        let lu = LogicalUnit::open(spec(&dir, 1 << 20, 4096), "iqn.t").unwrap();
        assert_eq!(lu.blocks(), 256);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_differing_size_is_refused_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content) = patterned_file(&dir);
        for size in [2 << 20, 512 << 10] {
            let s = spec(&dir, size, 512);
            assert!(matches!(
                check_backing_file(&s),
                Err(LunError::SizeMismatch { .. })
            ));
            let e = mismatch(LogicalUnit::open(s, "iqn.t"));
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("is {} bytes", 1 << 20)), "{text}");
            assert!(text.contains(&format!("size is {size} bytes")), "{text}");
            let how = if size > 1 << 20 {
                "resize = \"grow\""
            } else {
                "resize = \"any\""
            };
            assert!(text.contains(how), "{text}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "file changed");
        }
    }

    #[test]
    fn grow_permission_grows_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content) = patterned_file(&dir);
        let s = resizing(&dir, 2 << 20, Resize::Grow);
        check_backing_file(&s).unwrap();
        let lu = LogicalUnit::open(s, "iqn.t").unwrap();
        assert_eq!(lu.blocks(), 4096);
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now.len(), 2 << 20);
        assert_eq!(now[..1 << 20], content[..]);
        assert!(now[1 << 20..].iter().all(|&b| b == 0));
    }

    #[test]
    fn grow_permission_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content) = patterned_file(&dir);
        let s = resizing(&dir, 512 << 10, Resize::Grow);
        assert!(check_backing_file(&s).is_err());
        let text = mismatch(LogicalUnit::open(s, "iqn.t")).to_string();
        assert!(text.contains("never shrinks"), "{text}");
        assert!(text.contains("resize = \"any\""), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "file changed");
    }

    #[test]
    fn any_permission_shrinks_keeping_the_data_before_the_new_end() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content) = patterned_file(&dir);
        let s = resizing(&dir, 512 << 10, Resize::Any);
        check_backing_file(&s).unwrap();
        let lu = LogicalUnit::open(s, "iqn.t").unwrap();
        assert_eq!(lu.blocks(), 1024);
        drop(lu);
        assert_eq!(std::fs::read(&path).unwrap(), content[..512 << 10]);
        // And it grows too.
        let lu = LogicalUnit::open(resizing(&dir, 1 << 20, Resize::Any), "iqn.t").unwrap();
        assert_eq!(lu.blocks(), 2048);
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now[..512 << 10], content[..512 << 10]);
        assert!(now[512 << 10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn open_refuses_bad_geometry() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LogicalUnit::open(spec(&dir, 1 << 20, 1024), "t"),
            Err(LunError::BlockSize { .. })
        ));
        assert!(matches!(
            LogicalUnit::open(spec(&dir, 1000, 512), "t"),
            Err(LunError::Size { .. })
        ));
    }

    #[test]
    fn physical_block_geometry() {
        assert_eq!(lbppb_exponent(512, 512), Some(0));
        assert_eq!(lbppb_exponent(512, 4096), Some(3));
        assert_eq!(lbppb_exponent(4096, 65536), Some(4));
        for (l, p) in [
            (512, 0),
            (512, 256),
            (512, 1536),
            (4096, 512),
            (512, 131072),
        ] {
            assert_eq!(lbppb_exponent(l, p), None, "{l}/{p}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&dir, 1 << 20, 512);
        s.physical_block_size = 4096;
        let lu = LogicalUnit::open(s.clone(), "t").unwrap();
        assert_eq!(
            (lu.blocks_per_physical_block(), lu.lbppb_exponent()),
            (8, 3)
        );
        drop(lu);
        s.physical_block_size = 3072;
        assert!(matches!(
            LogicalUnit::open(s, "t"),
            Err(LunError::PhysicalBlockSize { .. })
        ));
    }

    #[test]
    fn unloaded_medium_survives_resets_and_loading_starts_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let lu = LogicalUnit::open(spec(&dir, 1 << 20, 512), "iqn.t").unwrap();
        assert!(!lu.ejected());
        lu.set_stopped(true);
        assert!(lu.set_ejected(true));
        assert!(!lu.set_ejected(true), "no change");
        lu.reset_state();
        assert!(lu.ejected() && !lu.stopped());
        lu.set_stopped(true);
        assert!(lu.set_ejected(false));
        assert!(!lu.ejected() && !lu.stopped());
    }

    #[test]
    fn naa_is_stable_and_distinct() {
        assert_eq!(naa_for("iqn.a", 0), naa_for("iqn.a", 0));
        assert_ne!(naa_for("iqn.a", 0), naa_for("iqn.a", 1));
        assert_ne!(naa_for("iqn.a", 0), naa_for("iqn.b", 0));
        let n = naa_for("iqn.a", 1);
        assert_eq!(n[0] >> 4, 6);
        assert_eq!(&n[12..], &[0, 0, 0, 1]);
    }

    #[test]
    fn unit_attentions_queue_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let lu = LogicalUnit::open(spec(&dir, 1 << 20, 512), "iqn.t").unwrap();
        let (a, b) = (nexus("a"), nexus("b"));
        lu.add_nexus(&a);
        lu.add_nexus(&b);
        lu.post_unit_attention(UaScope::All, Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        lu.post_unit_attention(UaScope::AllExcept(a.clone()), Asc::MODE_PARAMETERS_CHANGED);
        lu.post_unit_attention(UaScope::All, Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        lu.post_unit_attention(UaScope::One(a.clone()), Asc::RESERVATIONS_PREEMPTED);
        assert_eq!(
            lu.pending_unit_attentions(&a),
            vec![
                Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
                Asc::RESERVATIONS_PREEMPTED
            ]
        );
        assert_eq!(
            lu.take_unit_attention(&b),
            Some(Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        );
        assert_eq!(
            lu.take_unit_attention(&b),
            Some(Asc::MODE_PARAMETERS_CHANGED)
        );
        assert_eq!(lu.take_unit_attention(&b), None);
        lu.remove_nexus(&a);
        assert!(lu.pending_unit_attentions(&a).is_empty());
    }

    #[tokio::test]
    async fn write_read_deallocate_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let lu = LogicalUnit::open(spec(&dir, 4 << 20, 4096), "iqn.t").unwrap();
        let st = lu.lba_status(0, 8).await.unwrap();
        assert_eq!(
            st[0],
            LbaStatus {
                lba: 0,
                blocks: 1024,
                status: Provisioning::Deallocated
            }
        );
        lu.write(16, vec![0xab; 4096 * 4].into(), true)
            .await
            .unwrap();
        assert_eq!(lu.read(17, 1).await.unwrap(), vec![0xab; 4096]);
        let st = lu.lba_status(16, 8).await.unwrap();
        assert_eq!(st[0].status, Provisioning::Mapped);
        assert!(st[0].blocks >= 4);
        lu.deallocate(17, 2).await.unwrap();
        assert_eq!(
            lu.read(16, 4).await.unwrap()[4096..4096 * 3],
            vec![0u8; 8192][..]
        );
        let st = lu.lba_status(17, 1).await.unwrap();
        assert_eq!(
            st,
            vec![LbaStatus {
                lba: 17,
                blocks: 2,
                status: Provisioning::Deallocated
            }]
        );
        lu.sync().await.unwrap();
        lu.prefetch(0, 8).await.unwrap();
    }
}
