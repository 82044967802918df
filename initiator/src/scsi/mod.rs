//! The SCSI side of the initiator: CDBs to send, the capacity summary and
//! the VPD pages it decodes. Sense data, standard INQUIRY, READ CAPACITY and
//! persistent reservation data are `busrig_proto::scsi`'s.

pub mod capacity;
pub mod cdb;
pub mod inquiry;

pub use capacity::Capacity;
pub use cdb::{Command, DataDirection};
pub use inquiry::{DataError, Vpd};
