//! busrig's emulated shared bus: an iSCSI target whose logical units behave
//! like disks on a shared SCSI or Fibre Channel bus.
//!
//! Layers, from the wire inwards:
//! - [`iscsi`]: portal, login, sessions and connections (RFC 7143);
//! - [`scsi`]: the SCSI executor, the one place every command passes through
//!   (unit attentions, reservation checks, then the command itself);
//! - [`reservation`]: SCSI-2 and SPC-4 persistent reservations per LUN;
//! - [`lu`]: logical units and their backing files;
//! - [`reconfig`]: LUNs, targets, ACLs and CHAP changed on a running bus;
//! - [`tasks`]: the target-wide task set used by aborts and resets.

pub mod config;
pub mod control;
pub mod fault;
pub mod iscsi;
pub mod lu;
pub mod model;
pub mod nexus;
pub mod reconfig;
pub mod reservation;
pub mod scsi;
pub mod server;
pub mod tasks;
pub mod write_data;
