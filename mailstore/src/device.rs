//! The block device the mail store keeps everything on, kept narrow so a
//! second backend (a node-local proxy through the cluster node's reserved
//! I_T nexus) can be added as one more [`Device`] variant:
//! `read(lba, blocks)`, `write(lba, data, fua)`, `flush()`, `block_size()`,
//! `blocks()`.
//!
//! [`IscsiDevice`] goes through busrig's initiator. Unit attentions are
//! retried, except POWER ON (29/00, 29/01) after start-up: the LUN lost its
//! volatile cache, so writes acknowledged without FUA and not yet flushed
//! may be gone, and the store must stop and recover from the disk.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use busrig_initiator::{Disk, IscsiUrl, Isid, SessionConfig};
use bytes::Bytes;

/// Initiator name used when `$BUSRIG_INITIATOR_NAME` is not set.
pub const DEFAULT_MAILSTORE_INITIATOR: &str = "iqn.2026-11.io.busrig:mailstore";

/// What can go wrong talking to the disk. Every variant is fatal to the
/// store: it answers 451 and exits so the cluster can restart or fail it over.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Another I_T nexus holds the LUN: this node lost the disk.
    #[error("RESERVATION CONFLICT: the disk belongs to another node")]
    ReservationConflict,
    /// The LUN reported a power-on: unflushed writes may have been lost.
    #[error("the LUN was power-cycled ({0}); unflushed writes may be lost")]
    PowerLoss(String),
    /// The disk URL or the request is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Any other transport or SCSI failure.
    #[error("disk I/O failed: {0}")]
    Io(String),
}

/// A disk of fixed-size logical blocks.
pub trait BlockDevice: Send + Sync + 'static {
    /// Bytes per logical block.
    fn block_size(&self) -> u32;
    /// Number of logical blocks.
    fn blocks(&self) -> u64;
    /// Reads `blocks` blocks from `lba`.
    fn read(
        &self,
        lba: u64,
        blocks: u32,
    ) -> impl Future<Output = Result<Bytes, DeviceError>> + Send;
    /// Writes whole blocks at `lba`; with `fua` the call returns only once
    /// the data is on stable storage.
    fn write(
        &self,
        lba: u64,
        data: Bytes,
        fua: bool,
    ) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Makes every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> impl Future<Output = Result<(), DeviceError>> + Send;
}

/// The backends `--disk` can name.
#[derive(Debug)]
pub enum Device {
    /// `iscsi://[user%secret@]host[:port]/target-iqn/lun`
    Iscsi(IscsiDevice),
    /// `unix:PATH`: the cluster node's disk proxy (`busrig_cluster::clusdisk`),
    /// which sends I/O through the node's reserved I_T nexus; what a mail
    /// store running as a cluster resource uses (`$BUSRIG_DISK`).
    Cluster(ClusterDevice),
}

impl Device {
    /// Opens the device a `--disk` URL names.
    pub async fn open(url: &str) -> Result<Device, DeviceError> {
        if let Some(path) = url.strip_prefix("unix:") {
            return Ok(Device::Cluster(ClusterDevice::open(path).await?));
        }
        if url.starts_with("iscsi://") {
            let name = std::env::var("BUSRIG_INITIATOR_NAME")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_MAILSTORE_INITIATOR.to_string());
            return Ok(Device::Iscsi(IscsiDevice::open(url, &name).await?));
        }
        Err(DeviceError::Invalid(format!(
            "unsupported disk URL {url:?} (expected iscsi://host[:port]/target-iqn/lun or unix:PATH)"
        )))
    }
}

impl BlockDevice for Device {
    fn block_size(&self) -> u32 {
        match self {
            Device::Iscsi(d) => d.block_size(),
            Device::Cluster(d) => d.block_size(),
        }
    }
    fn blocks(&self) -> u64 {
        match self {
            Device::Iscsi(d) => d.blocks(),
            Device::Cluster(d) => d.blocks(),
        }
    }
    async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, DeviceError> {
        match self {
            Device::Iscsi(d) => d.read(lba, blocks).await,
            Device::Cluster(d) => d.read(lba, blocks).await,
        }
    }
    async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        match self {
            Device::Iscsi(d) => d.write(lba, data, fua).await,
            Device::Cluster(d) => d.write(lba, data, fua).await,
        }
    }
    async fn flush(&self) -> Result<(), DeviceError> {
        match self {
            Device::Iscsi(d) => d.flush().await,
            Device::Cluster(d) => d.flush().await,
        }
    }
}

/// A cluster disk reached through the owning node's proxy.
#[derive(Debug)]
pub struct ClusterDevice {
    client: busrig_cluster::clusdisk::Client,
    block_size: u32,
    blocks: u64,
}

fn map_cluster(e: busrig_cluster::clusdisk::ClusDiskError) -> DeviceError {
    use busrig_cluster::clusdisk::ClusDiskError as E;
    match e {
        E::Conflict => DeviceError::ReservationConflict,
        // The node no longer owns the disk: as fatal as a conflict.
        E::NotOwner(why) => DeviceError::Io(format!("the node does not own the disk: {why}")),
        other => DeviceError::Io(other.to_string()),
    }
}

impl ClusterDevice {
    pub async fn open(path: &str) -> Result<ClusterDevice, DeviceError> {
        let client = busrig_cluster::clusdisk::Client::connect(std::path::Path::new(path))
            .await
            .map_err(map_cluster)?;
        let (blocks, block_size) = client.capacity().await.map_err(map_cluster)?;
        Ok(ClusterDevice {
            client,
            block_size,
            blocks,
        })
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn blocks(&self) -> u64 {
        self.blocks
    }

    async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, DeviceError> {
        self.client.read(lba, blocks).await.map_err(map_cluster)
    }

    async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        self.client
            .write(lba, &data, fua)
            .await
            .map_err(map_cluster)
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.client.flush().await.map_err(map_cluster)
    }
}

/// A LUN reached through busrig's iSCSI initiator.
#[derive(Debug)]
pub struct IscsiDevice {
    disk: Disk,
    block_size: u32,
    blocks: u64,
    /// Set once a power-on unit attention was seen after start-up.
    power_lost: AtomicBool,
}

/// Unit attentions absorbed per command: resets and reservation changes
/// can stack several.
const UA_RETRIES: u32 = 8;

impl IscsiDevice {
    pub async fn open(url: &str, initiator_name: &str) -> Result<IscsiDevice, DeviceError> {
        let u = IscsiUrl::parse(url).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        let cfg = SessionConfig {
            initiator_name: initiator_name.to_string(),
            isid: Isid::random(),
            command_timeout: Duration::from_secs(15),
            ..SessionConfig::default()
        };
        let disk = Disk::open(&u, cfg)
            .await
            .map_err(map_err)?
            .with_reset_retries(UA_RETRIES);
        let cap = disk.capacity().await.map_err(map_err)?;
        // The power-on unit attention every new I_T nexus sees is expected.
        let seen = disk.take_unit_attentions();
        tracing::info!(
            url,
            initiator = initiator_name,
            blocks = cap.blocks,
            block_size = cap.block_length,
            unit_attentions = seen.len(),
            "disk opened"
        );
        Ok(IscsiDevice {
            disk,
            block_size: cap.block_length,
            blocks: cap.blocks,
            power_lost: AtomicBool::new(false),
        })
    }

    /// Fails when a power-on unit attention arrived since the last check.
    fn check_power(&self) -> Result<(), DeviceError> {
        for s in self.disk.take_unit_attentions() {
            if s.asc == 0x29 && s.ascq <= 0x01 {
                tracing::error!(sense = %s, "the LUN was power-cycled");
                self.power_lost.store(true, Ordering::SeqCst);
            } else {
                tracing::info!(sense = %s, "unit attention");
            }
        }
        if self.power_lost.load(Ordering::SeqCst) {
            return Err(DeviceError::PowerLoss("POWER ON OCCURRED".into()));
        }
        Ok(())
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn blocks(&self) -> u64 {
        self.blocks
    }

    async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, DeviceError> {
        let r = self.disk.read(lba, blocks).await.map_err(map_err);
        self.check_power()?;
        r
    }

    async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        let r = self.disk.write(lba, data, fua).await.map_err(map_err);
        self.check_power()?;
        r
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        let r = self.disk.synchronize_cache().await.map_err(map_err);
        self.check_power()?;
        r
    }
}

fn map_err(e: busrig_initiator::Error) -> DeviceError {
    if e.is_reservation_conflict() {
        DeviceError::ReservationConflict
    } else {
        DeviceError::Io(e.to_string())
    }
}

/// An in-memory disk with a volatile write cache, for deterministic tests
/// of commit, checkpoint and recovery.
#[cfg(test)]
pub mod mem {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct State {
        /// What survives a power cycle.
        medium: Vec<u8>,
        /// Written, acknowledged, not yet flushed: lost on power cycle.
        cache: BTreeMap<u64, Vec<u8>>,
        /// Fail every command from now on (the disk is gone).
        failed: bool,
        /// Fail after this many more writes.
        writes_left: Option<u64>,
    }

    pub struct MemDevice {
        block_size: u32,
        blocks: u64,
        state: Mutex<State>,
    }

    impl MemDevice {
        pub fn new(block_size: u32, blocks: u64) -> MemDevice {
            MemDevice {
                block_size,
                blocks,
                state: Mutex::new(State {
                    medium: vec![0; (block_size as u64 * blocks) as usize],
                    ..State::default()
                }),
            }
        }

        /// Drops the cache and fails every further command, as a power
        /// cycle seen by a running store does.
        pub fn power_cycle(&self) {
            let mut s = self.state.lock().unwrap();
            s.cache.clear();
            s.failed = true;
        }

        /// Lets the next `n` writes succeed, then the disk fails.
        pub fn fail_after_writes(&self, n: u64) {
            self.state.lock().unwrap().writes_left = Some(n);
        }

        /// The surviving medium as a fresh, working disk.
        pub fn reboot(&self) -> MemDevice {
            let s = self.state.lock().unwrap();
            let d = MemDevice::new(self.block_size, self.blocks);
            d.state.lock().unwrap().medium = s.medium.clone();
            d
        }
    }

    impl BlockDevice for MemDevice {
        fn block_size(&self) -> u32 {
            self.block_size
        }
        fn blocks(&self) -> u64 {
            self.blocks
        }
        async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, DeviceError> {
            let s = self.state.lock().unwrap();
            if s.failed {
                return Err(DeviceError::Io("disk failed".into()));
            }
            let bs = self.block_size as usize;
            let mut out = Vec::with_capacity(blocks as usize * bs);
            for b in lba..lba + blocks as u64 {
                if b >= self.blocks {
                    return Err(DeviceError::Io("read beyond the end".into()));
                }
                match s.cache.get(&b) {
                    Some(c) => out.extend_from_slice(c),
                    None => {
                        out.extend_from_slice(&s.medium[b as usize * bs..(b as usize + 1) * bs])
                    }
                }
            }
            Ok(out.into())
        }
        async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
            let mut s = self.state.lock().unwrap();
            if s.failed {
                return Err(DeviceError::Io("disk failed".into()));
            }
            let bs = self.block_size as usize;
            assert_eq!(data.len() % bs, 0, "whole blocks");
            let mut land = data.len() / bs;
            if let Some(n) = s.writes_left.as_mut() {
                if *n == 0 {
                    // The failing write is torn: its first half lands.
                    s.failed = true;
                    land /= 2;
                } else {
                    *n -= 1;
                }
            }
            for (i, chunk) in data.chunks(bs).take(land).enumerate() {
                let b = lba + i as u64;
                if b >= self.blocks {
                    return Err(DeviceError::Io("write beyond the end".into()));
                }
                if fua {
                    s.cache.remove(&b);
                    s.medium[b as usize * bs..(b as usize + 1) * bs].copy_from_slice(chunk);
                } else {
                    s.cache.insert(b, chunk.to_vec());
                }
            }
            if s.failed {
                return Err(DeviceError::Io("disk failed".into()));
            }
            Ok(())
        }
        async fn flush(&self) -> Result<(), DeviceError> {
            let mut s = self.state.lock().unwrap();
            if s.failed {
                return Err(DeviceError::Io("disk failed".into()));
            }
            let bs = self.block_size as usize;
            let cache = std::mem::take(&mut s.cache);
            for (b, c) in cache {
                s.medium[b as usize * bs..(b as usize + 1) * bs].copy_from_slice(&c);
            }
            Ok(())
        }
    }
}
