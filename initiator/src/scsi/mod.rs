//! The SCSI side of the initiator: CDBs to send and parameter data to
//! decode. Sense data and status codes come from `busrig_proto::scsi::sense`.

pub mod capacity;
pub mod cdb;
pub mod inquiry;

pub use capacity::Capacity;
pub use cdb::{Command, DataDirection};
pub use inquiry::{DataError, Vpd};
