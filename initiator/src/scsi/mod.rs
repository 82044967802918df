//! The SCSI side of the initiator: CDBs to send, the capacity summary and
//! the error for data that does not decode. Every byte layout (sense data,
//! INQUIRY and VPD pages, READ CAPACITY, persistent reservation data) is
//! `busrig_proto::scsi`'s.

pub mod capacity;
pub mod cdb;
pub mod data;

pub use capacity::Capacity;
pub use cdb::{Command, DataDirection};
pub use data::DataError;
