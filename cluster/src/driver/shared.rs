//! The node's shared disks over iSCSI, with the session kept alive across
//! target restarts and path faults.
//!
//! [`SharedDisk`] logs in lazily and logs in again after a transport error
//! (the session's own recovery gave up, the target restarted, the path was
//! cut). The I_T nexus stays the same across logins — the same initiator
//! name (`PREFIX:NODE`, docs/semantics.md "Interface contracts") and a fixed ISID derived from the node
//! number — so the target sees one initiator, as a real HBA's port would be.
//!
//! [`NodeDisks`] routes each [`DiskOp`] to the quorum or witness disk.

use std::sync::Arc;
use std::time::Duration;

use busrig_initiator::{Disk, IscsiUrl, Isid, SessionConfig};
use tokio::sync::Mutex;

use crate::arbiter::{DiskId, DiskOp, DiskResult};
use crate::config::{ClusterConfig, NodeId};

use super::disk::{issue, op_name, DiskExecutor};

/// Why a shared disk or a node's quorum disks could not be set up. The
/// messages reach the arbiter's `Failed` results and the CLI.
#[derive(Debug, thiserror::Error)]
pub enum SharedDiskError {
    /// The iSCSI login to a shared disk failed (RFC 7143 §6).
    #[error("login to the {what} disk failed: {source}")]
    Login {
        what: &'static str,
        source: busrig_initiator::Error,
    },
    /// A disk URL in the cluster file does not parse.
    #[error("{what} disk URL {url:?}: {source}")]
    BadUrl {
        what: &'static str,
        url: String,
        source: busrig_initiator::UrlError,
    },
    /// The majority model's data directory could not be created.
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// The local quorum log replica could not be opened.
    #[error("cannot open the quorum log replica {path}: {source}")]
    Replica {
        path: String,
        source: std::io::Error,
    },
}

/// The ISID busrig nodes use: a random-class prefix naming busrig, then the
/// node number, so every login of one node is the same I_T nexus.
pub fn node_isid(node: NodeId) -> Isid {
    let [hi, lo] = node.to_be_bytes();
    Isid([0x80, 0x62, 0x72, 0x4e, hi, lo])
}

/// The ISID of node `node`'s session for data disk `index` (a physical-disk
/// resource): its own I_T nexus, stable across logins, distinct from the
/// quorum session and from the node's other data disks.
pub fn data_isid(node: NodeId, index: u8) -> Isid {
    let [hi, lo] = node.to_be_bytes();
    Isid([0x80, 0x62, 0x44, index, hi, lo])
}

/// The session settings of node `me` (which must be in `cfg`): its
/// initiator name, its ISID, and command and recovery limits of twice the
/// challenge wait (at least 5 s). Safety never depends on them (the lease
/// and the bus's fencing do); they bound how long a frozen path keeps the
/// node waiting, and must not be so short that a busy machine's slow
/// command counts as a failed quorum disk.
pub fn node_session_config(cfg: &ClusterConfig, me: NodeId) -> SessionConfig {
    let name = cfg.nodes[usize::from(me)].name.clone();
    let limit = (cfg.timing.challenge_wait * 2).max(Duration::from_secs(5));
    SessionConfig {
        initiator_name: cfg.initiator_name(me),
        initiator_alias: Some(name),
        isid: node_isid(me),
        command_timeout: limit,
        login_timeout: limit,
        recovery_timeout: limit,
        nop_interval: Duration::from_secs(1),
        ..SessionConfig::default()
    }
}

/// One LUN reached by URL, logged in on demand.
#[derive(Debug)]
pub struct SharedDisk {
    url: IscsiUrl,
    config: SessionConfig,
    what: &'static str,
    disk: Mutex<Option<Arc<Disk>>>,
    /// A SCSI-2 holder's writes re-reserve after a reset's unit attention.
    reserve_after_reset: bool,
}

impl SharedDisk {
    /// `what` names the disk in logs ("quorum", "witness").
    pub fn new(url: IscsiUrl, config: SessionConfig, what: &'static str) -> SharedDisk {
        SharedDisk {
            url,
            config,
            what,
            disk: Mutex::new(None),
            reserve_after_reset: false,
        }
    }

    /// Under SCSI-2 reservations: a write that meets a reset's unit
    /// attention takes the reservation back before it is re-issued, so the
    /// owner never writes without it (issue 16, defect 3: the ownership
    /// stamp landed after a bus reset, before the next renewal).
    pub fn reserving_after_reset(mut self, on: bool) -> SharedDisk {
        self.reserve_after_reset = on;
        self
    }

    /// The logged-in disk (logging in if needed).
    pub async fn get(&self) -> Result<Arc<Disk>, SharedDiskError> {
        let mut slot = self.disk.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let config = self.config.clone().with_url(&self.url);
        match Disk::open(&self.url, config).await {
            Ok(d) => {
                // A defender renewing after a bus reset sees the reset's unit
                // attention first; the arbiter learns of preemption from
                // READ KEYS, so unit attentions are retried here.
                let d = Arc::new(
                    d.with_reset_retries(4)
                        .with_reserve_after_reset(self.reserve_after_reset),
                );
                tracing::info!(disk = self.what, url = %self.url, "logged in to the {} disk", self.what);
                *slot = Some(d.clone());
                Ok(d)
            }
            Err(source) => Err(SharedDiskError::Login {
                what: self.what,
                source,
            }),
        }
    }

    /// Drops the session after a transport error, so the next operation
    /// logs in again.
    async fn forget(&self, d: &Arc<Disk>) {
        let mut slot = self.disk.lock().await;
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, d)) {
            tracing::warn!(
                disk = self.what,
                "session to the {} disk lost; will log in again",
                self.what
            );
            *slot = None;
        }
    }

    /// Performs `op` on a data disk: as [`SharedDisk::execute`], except that
    /// a challenger's reset is a LOGICAL UNIT RESET of this disk alone (it
    /// clears the LUN's SCSI-2 reservation, SPC-2 §5.5.1) rather than a
    /// reset of the whole bus.
    pub async fn execute_data(&self, op: DiskOp) -> DiskResult {
        if op != DiskOp::BusReset {
            return self.execute(op).await;
        }
        let d = match self.get().await {
            Ok(d) => d,
            Err(e) => return DiskResult::Failed(e.to_string()),
        };
        super::disk::map_result(d.lun_reset().await.map(|()| None))
    }

    /// Writes `data` (padded to one block) with FUA to the last block of
    /// the disk: the physical-disk resource's ownership stamp.
    pub async fn stamp_last_block(&self, data: &[u8]) -> DiskResult {
        let d = match self.get().await {
            Ok(d) => d,
            Err(e) => return DiskResult::Failed(e.to_string()),
        };
        let cap = match d.capacity().await {
            Ok(c) => c,
            Err(e) => return super::disk::map_result(Err(e)),
        };
        let mut block = vec![0u8; cap.block_length as usize];
        let n = data.len().min(block.len());
        block[..n].copy_from_slice(&data[..n]);
        let lba = cap.blocks.saturating_sub(1);
        super::disk::map_result(
            d.write(lba, bytes::Bytes::from(block), true)
                .await
                .map(|()| None),
        )
    }

    /// Performs `op`.
    pub async fn execute(&self, op: DiskOp) -> DiskResult {
        let d = match self.get().await {
            Ok(d) => d,
            Err(e) => return DiskResult::Failed(e.to_string()),
        };
        let kind = op_name(&op);
        let result = issue(&d, op).await;
        if let DiskResult::Failed(why) = &result {
            tracing::warn!(disk = self.what, op = kind, error = %why, "disk operation failed");
            // `Error::SessionLost` (map_result keeps its text): the session's
            // own recovery gave up, so only a new login helps. While it is
            // still recovering, the same session is kept.
            if why.starts_with("session lost") && !d.session().is_up() {
                self.forget(&d).await;
            }
        }
        result
    }
}

/// A node's disks: the shared quorum (or witness) disk over iSCSI, and
/// under the majority model its local quorum log replica, a file.
#[derive(Debug, Default)]
pub struct NodeDisks {
    pub quorum: Option<SharedDisk>,
    pub witness: Option<SharedDisk>,
    pub local: Option<super::disk::LocalDisk>,
}

impl NodeDisks {
    /// The disks the cluster file names, for node `me`; the majority
    /// model's replica file goes in `data_dir`.
    pub fn from_config(
        cfg: &ClusterConfig,
        me: NodeId,
        data_dir: &std::path::Path,
    ) -> Result<NodeDisks, SharedDiskError> {
        let sc = node_session_config(cfg, me);
        let open = |url: &str, what: &'static str| -> Result<SharedDisk, SharedDiskError> {
            let u = IscsiUrl::parse(url).map_err(|source| SharedDiskError::BadUrl {
                what,
                url: url.into(),
                source,
            })?;
            let scsi2 = matches!(cfg.quorum, crate::config::QuorumModel::DiskScsi2);
            Ok(SharedDisk::new(u, sc.clone(), what).reserving_after_reset(scsi2))
        };
        let quorum = cfg
            .quorum_disk
            .as_deref()
            .map(|u| open(u, "quorum"))
            .transpose()?;
        let witness = match &cfg.quorum {
            crate::config::QuorumModel::Majority { witness: Some(w) } => Some(open(w, "witness")?),
            _ => None,
        };
        let local = match &cfg.quorum {
            crate::config::QuorumModel::Majority { .. } => {
                std::fs::create_dir_all(data_dir).map_err(|source| SharedDiskError::DataDir {
                    path: data_dir.display().to_string(),
                    source,
                })?;
                let path = data_dir.join("quorum-replica.img");
                let size = crate::log_manager::region_config(cfg.log_limit).region_len;
                Some(super::disk::LocalDisk::open(&path, size).map_err(|source| {
                    SharedDiskError::Replica {
                        path: path.display().to_string(),
                        source,
                    }
                })?)
            }
            _ => None,
        };
        Ok(NodeDisks {
            quorum,
            witness,
            local,
        })
    }
}

impl DiskExecutor for NodeDisks {
    async fn execute(&self, id: DiskId, op: DiskOp) -> DiskResult {
        let disk = match id {
            DiskId::Quorum => self.quorum.as_ref(),
            DiskId::Witness => self.witness.as_ref(),
            DiskId::Local => {
                return match &self.local {
                    Some(l) => l.execute(op).await,
                    None => DiskResult::Failed("no local quorum log replica is configured".into()),
                }
            }
        };
        match disk {
            Some(d) => d.execute(op).await,
            None => DiskResult::Failed(format!("no {id:?} disk is configured")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isid_is_stable_per_node_and_distinct() {
        assert_eq!(node_isid(3), node_isid(3));
        assert_ne!(node_isid(3), node_isid(4));
        // Random-qualifier format (RFC 7143 §11.12.5): top two bits 10.
        assert_eq!(node_isid(0).0[0] >> 6, 0b10);
    }
}
