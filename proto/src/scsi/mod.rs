//! The SCSI side of the wire: status codes, sense data, CDB decoding, VPD and
//! mode pages, persistent-reservation parameter data (SPC-4, SBC-3).

pub mod pr;
pub mod sense;
