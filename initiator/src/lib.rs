//! busrig's async iSCSI initiator (RFC 7143), used by `busrig disk`, the
//! cluster nodes and the benches. It is written against `busrig-proto`
//! alone and aims to work with any conforming target.
//!
//! Layers, one module each:
//!
//! ```text
//! url        libiscsi URL form  iscsi://[user%secret@]host[:port]/target-iqn/lun
//! config     identity (initiator name, ISID), CHAP, proposed keys, timeouts
//! login      sans-IO login state machine: security + operational stages
//! engine     sans-IO full feature phase: CmdSN window, tags, R2T, Data-In, NOP-In
//! connection tokio: TCP, framing, one reader and one writer task
//! session    the public handle: commands, timeouts, recovery and replay
//! discovery  SendTargets
//! disk       typed SCSI operations on one LUN
//! reservation holding and challenging a SCSI-2 reservation (renew, reset/wait/RESERVE)
//! scsi       CDB builders and parameter-data decoders
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), busrig_initiator::Error> {
//! use busrig_initiator::{Disk, IscsiUrl, SessionConfig};
//! let url = IscsiUrl::parse("iscsi://127.0.0.1:3260/iqn.2026-11.io.busrig:bus0/1").unwrap();
//! let disk = Disk::open(&url, SessionConfig::default()).await?;
//! let cap = disk.capacity().await?;
//! let first = disk.read(0, 8).await?;
//! disk.write(0, first, true).await?;
//! println!("{} blocks of {} bytes", cap.blocks, cap.block_length);
//! disk.session().logout().await
//! # }
//! ```

pub mod blocks;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod disk;
pub mod engine;
pub mod error;
pub mod login;
pub mod reservation;
pub mod scsi;
pub mod session;
pub mod url;

pub use config::{
    ChapCredentials, DigestPreference, Isid, Proposal, SessionConfig, DEFAULT_INITIATOR_NAME,
};
pub use discovery::{send_targets, DiscoveredTarget};
pub use disk::{Disk, UnitAttentionKind};
pub use engine::{Answer, Event, Request, ScsiOutcome, TaskAttr};
pub use error::Error;
pub use reservation::{Arbitration, ArbitrationError, ArbitrationReset, HoldEnd, Scsi2Cdb};
pub use session::{PendingTask, Session, SessionInfo};
pub use url::{IscsiUrl, Portal, UrlError};
