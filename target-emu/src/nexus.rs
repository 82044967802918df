//! The I_T nexus: who is talking to a logical unit.
//!
//! SCSI-2 reservations, persistent-reservation registrations and unit
//! attentions all belong to an I_T nexus. For iSCSI the initiator port is the
//! initiator name plus the ISID, and the target port is the target name plus
//! the target portal group tag (RFC 7143 §4.4.2, SAM-5 §4.6). A session that
//! logs in again with the same initiator name and ISID reinstates the same
//! nexus.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItNexus {
    /// iSCSI initiator name (iqn./eui./naa. form), as sent at login.
    pub initiator: Arc<str>,
    /// Initiator Session ID, 6 bytes as on the wire.
    pub isid: [u8; 6],
    /// Target name of the target port.
    pub target: Arc<str>,
    /// Target portal group tag of the target port.
    pub tpgt: u16,
}

impl ItNexus {
    pub fn new(initiator: &str, isid: [u8; 6], target: &str, tpgt: u16) -> ItNexus {
        ItNexus {
            initiator: initiator.into(),
            isid,
            target: target.into(),
            tpgt,
        }
    }

    /// ISID as 12 lowercase hex digits.
    pub fn isid_hex(&self) -> String {
        self.isid.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The iSCSI initiator port name, `NAME,i,0xISID` (RFC 7143 §4.4.2),
    /// as carried in an iSCSI TransportID with format code 01b (SPC-4 §7.6.4.6).
    pub fn initiator_port_name(&self) -> String {
        format!("{},i,0x{}", self.initiator, self.isid_hex())
    }
}

impl fmt::Display for ItNexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {},t,{}",
            self.initiator_port_name(),
            self.target,
            self.tpgt
        )
    }
}
