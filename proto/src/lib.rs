//! Sans-IO wire formats for busrig: iSCSI PDUs (RFC 7143), login text keys and
//! negotiation, CHAP, CRC32C digests, and the SCSI side (CDBs, sense data,
//! VPD and mode pages, persistent-reservation parameter data).
//!
//! Nothing here does I/O, spawns tasks or reads a clock: callers hand in bytes
//! (and, where needed, randomness) and get bytes or typed values back.

pub mod chap;
pub mod digest;
pub mod hexdump;
pub mod negotiation;
pub mod pdu;
pub mod scsi;
pub mod serial;
pub mod text;
