//! The SCSI side of the wire: status codes, sense data, CDB decoding, VPD and
//! mode pages, persistent-reservation parameter data (SPC-4, SBC-3).

pub mod capacity;
pub mod cdb;
pub mod defect;
pub mod inquiry;
pub mod mode;
pub mod opcode;
pub mod opcodes;
pub mod pr;
pub mod provisioning;
pub mod report_luns;
#[cfg(test)]
mod roundtrip;
pub mod sense;
pub mod vpd;
pub mod xcopy;
