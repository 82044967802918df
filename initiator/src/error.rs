//! The initiator's one error enum (docs/architecture.md, convention 5): transport and login
//! failures, protocol violations by the target, and the SCSI outcomes that
//! are not GOOD, each its own variant so callers can match on RESERVATION
//! CONFLICT or a unit attention without digging in status bytes.

use std::time::Duration;

use busrig_proto::scsi::sense::{Sense, SenseKey};

use crate::scsi::DataError;

/// Everything that can go wrong between a call and the SCSI status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed or dropped.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),

    /// The target sent bytes that do not frame as a PDU (digest error, oversized segment).
    #[error("bad PDU from target: {0}")]
    Pdu(#[from] busrig_proto::pdu::PduError),

    /// The target answered the login with a non-zero status class (RFC 7143 §11.13.5).
    #[error("login refused: {message} (status class {class:#04x}, detail {detail:#04x})")]
    LoginRefused {
        class: u8,
        detail: u8,
        message: &'static str,
    },

    /// CHAP failed on our side: the target offered no method we accept, or
    /// failed mutual authentication (RFC 7143 §12.1.3).
    #[error("authentication failed: {0}")]
    Authentication(String),

    /// The operational parameters could not be agreed on (RFC 7143 §6.2).
    #[error("login negotiation failed: {0}")]
    Negotiation(String),

    /// The target broke RFC 7143 (unexpected PDU, bad offsets, wrong tags).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The target rejected one of our PDUs (RFC 7143 §11.17).
    #[error("target rejected the PDU (reason {reason:#04x}: {})", reject_reason_name(*reason))]
    Rejected { reason: u8 },

    /// No answer within the time limit.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },

    /// CHECK CONDITION, with the sense data when the target sent it (SAM-5 §5.3.1).
    #[error("CHECK CONDITION: {}", sense.map(|s| s.to_string()).unwrap_or_else(|| "no sense data".into()))]
    CheckCondition { sense: Option<Sense> },

    /// RESERVATION CONFLICT: another I_T nexus holds a reservation (SPC-4 §5.9, SPC-2 §5.5.1).
    #[error("RESERVATION CONFLICT")]
    ReservationConflict,

    /// BUSY: the logical unit cannot accept the command now.
    #[error("BUSY")]
    Busy,

    /// TASK SET FULL: too many commands queued at the logical unit.
    #[error("TASK SET FULL")]
    TaskSetFull,

    /// ACA ACTIVE: an auto contingent allegiance is in effect.
    #[error("ACA ACTIVE")]
    AcaActive,

    /// TASK ABORTED: another I_T nexus aborted the command (TAS=1, SAM-5 §5.3.1).
    #[error("TASK ABORTED")]
    TaskAborted,

    /// A status byte SAM-5 does not define for a completed command.
    #[error("unexpected SCSI status {0:#04x}")]
    Status(u8),

    /// The iSCSI response was "target failure" (RFC 7143 §11.4.3), not a SCSI status.
    #[error("target failure (iSCSI response {0:#04x})")]
    TargetFailure(u8),

    /// A task management function was not carried out (RFC 7143 §11.6.1).
    #[error("task management function {function} answered {}", tmf_response_name(*response))]
    TaskManagement {
        function: &'static str,
        response: u8,
    },

    /// The command was aborted by our own ABORT TASK or by a reset we sent.
    #[error("command aborted")]
    Aborted,

    /// The session is gone: recovery failed or the caller closed it.
    #[error("session lost: {0}")]
    SessionLost(String),

    /// The target returned parameter data we cannot decode.
    #[error("{0}")]
    Data(#[from] DataError),

    /// The target returned persistent reservation data we cannot decode (SPC-4 §6.15).
    #[error("persistent reservation data: {0}")]
    PrData(#[from] busrig_proto::scsi::pr::PrDecodeError),

    /// The request itself is impossible (for example a write that is not a whole number of blocks).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Error {
    /// The decoded sense of a CHECK CONDITION.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            Error::CheckCondition { sense } => sense.as_ref(),
            _ => None,
        }
    }

    /// Whether this is a CHECK CONDITION with sense key UNIT ATTENTION.
    pub fn is_unit_attention(&self) -> bool {
        self.sense()
            .is_some_and(|s| s.key == SenseKey::UnitAttention)
    }

    /// Whether this is what a reset by someone else leaves behind: a unit
    /// attention, or TASK ABORTED status (the target aborted the command
    /// for another initiator's reset or PREEMPT AND ABORT).
    pub fn is_reset_condition(&self) -> bool {
        self.is_unit_attention() || matches!(self, Error::TaskAborted)
    }

    /// Whether this is RESERVATION CONFLICT.
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(self, Error::ReservationConflict)
    }

    /// Whether the failure is in the transport or session rather than a
    /// SCSI outcome (what sg3_utils calls "other error").
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Pdu(_)
                | Error::LoginRefused { .. }
                | Error::Authentication(_)
                | Error::Negotiation(_)
                | Error::Protocol(_)
                | Error::Rejected { .. }
                | Error::SessionLost(_)
        )
    }
}

/// Reject reason names (RFC 7143 §11.17.1).
pub fn reject_reason_name(reason: u8) -> &'static str {
    match reason {
        0x02 => "data digest error",
        0x03 => "SNACK reject",
        0x04 => "protocol error",
        0x05 => "command not supported",
        0x06 => "immediate command reject",
        0x07 => "task in progress",
        0x08 => "invalid data ack",
        0x09 => "invalid PDU field",
        0x0a => "long operation reject",
        0x0b => "deprecated",
        0x0c => "waiting for logout",
        _ => "reserved",
    }
}

/// TMF response names (RFC 7143 §11.6.1).
pub fn tmf_response_name(r: u8) -> &'static str {
    match r {
        0 => "function complete",
        1 => "task does not exist",
        2 => "LUN does not exist",
        3 => "task still allegiant",
        4 => "task allegiance reassignment not supported",
        5 => "task management function not supported",
        6 => "function authorization failed",
        255 => "function rejected",
        _ => "reserved response",
    }
}

/// Login status names (RFC 7143 §11.13.5).
pub fn login_status_name(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (0x01, 0x01) => "target moved temporarily",
        (0x01, 0x02) => "target moved permanently",
        (0x02, 0x00) => "initiator error",
        (0x02, 0x01) => "authentication failure",
        (0x02, 0x02) => "authorization failure",
        (0x02, 0x03) => "target not found",
        (0x02, 0x04) => "target removed",
        (0x02, 0x05) => "unsupported version",
        (0x02, 0x06) => "too many connections",
        (0x02, 0x07) => "missing parameter",
        (0x02, 0x08) => "can't include in session",
        (0x02, 0x09) => "session type not supported",
        (0x02, 0x0a) => "session does not exist",
        (0x02, 0x0b) => "invalid request during login",
        (0x03, 0x00) => "target error",
        (0x03, 0x01) => "service unavailable",
        (0x03, 0x02) => "out of resources",
        (0x01, _) => "redirection",
        (0x02, _) => "initiator error",
        (0x03, _) => "target error",
        _ => "unknown status",
    }
}

impl Error {
    /// The error as `busrig disk --json` reports a failed command: its
    /// message, the decoded sense data when there is any, and `status`
    /// for RESERVATION CONFLICT.
    pub fn json(&self) -> serde_json::Value {
        let mut j = serde_json::json!({ "error": self.to_string() });
        if let Some(s) = self.sense() {
            j["sense"] = serde_json::json!(s);
        }
        if self.is_reservation_conflict() {
            j["status"] = serde_json::json!("RESERVATION CONFLICT");
        }
        j
    }

    /// The sg3_utils exit status for this error (sg3_utils(8), "EXIT
    /// STATUS"), as `busrig disk` exits with it: 24 RESERVATION CONFLICT,
    /// 22 LBA OUT OF RANGE, 6 UNIT ATTENTION, 33 timeout, 97 malformed
    /// response, 98 other sense data, 99 transport, login or session failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::ReservationConflict => 24,
            Error::Busy => 26,
            Error::TaskSetFull => 27,
            Error::AcaActive => 28,
            Error::TaskAborted | Error::Aborted => 29,
            Error::Timeout { .. } => 33,
            Error::Data(_) | Error::PrData(_) | Error::Status(_) => 97,
            Error::InvalidRequest(_) => 1,
            Error::CheckCondition { sense: None } => 98,
            Error::CheckCondition { sense: Some(s) } => match s.key {
                SenseKey::NotReady => 2,
                SenseKey::MediumError | SenseKey::HardwareError => 3,
                SenseKey::IllegalRequest if s.asc == 0x20 => 9,
                SenseKey::IllegalRequest if s.asc == 0x21 => 22,
                SenseKey::IllegalRequest => 5,
                SenseKey::UnitAttention => 6,
                SenseKey::DataProtect => 7,
                SenseKey::CopyAborted => 10,
                SenseKey::AbortedCommand => 11,
                SenseKey::Miscompare => 14,
                SenseKey::NoSense => 20,
                SenseKey::RecoveredError => 21,
                _ => 98,
            },
            _ => 99,
        }
    }
}

#[cfg(test)]
mod tests {
    use busrig_proto::scsi::sense::Asc;

    use super::*;

    #[test]
    fn exit_statuses_match_sg3_utils() {
        let cc = |a: Asc| Error::CheckCondition {
            sense: Some(Sense::new(a)),
        };
        assert_eq!(Error::ReservationConflict.exit_status(), 24);
        assert_eq!(cc(Asc::LBA_OUT_OF_RANGE).exit_status(), 22);
        assert_eq!(cc(Asc::INVALID_COMMAND_OPERATION_CODE).exit_status(), 9);
        assert_eq!(cc(Asc::INVALID_FIELD_IN_CDB).exit_status(), 5);
        assert_eq!(cc(Asc::SCSI_BUS_RESET_OCCURRED).exit_status(), 6);
        assert_eq!(cc(Asc::MISCOMPARE_DURING_VERIFY).exit_status(), 14);
        assert_eq!(cc(Asc::MEDIUM_NOT_PRESENT).exit_status(), 2);
        assert_eq!(Error::Busy.exit_status(), 26);
        assert_eq!(Error::SessionLost("x".into()).exit_status(), 99);
    }

    #[test]
    fn unit_attention_is_recognised_from_sense() {
        let e = Error::CheckCondition {
            sense: Some(Sense::new(Asc::SCSI_BUS_RESET_OCCURRED)),
        };
        assert!(e.is_unit_attention());
        assert!(!e.is_transport());
        assert_eq!(
            e.to_string(),
            "CHECK CONDITION: UNIT ATTENTION 29/02 SCSI BUS RESET OCCURRED"
        );
        assert!(!Error::CheckCondition { sense: None }.is_unit_attention());
    }

    #[test]
    fn conflict_and_transport_classes() {
        assert!(Error::ReservationConflict.is_reservation_conflict());
        assert!(Error::SessionLost("x".into()).is_transport());
        assert_eq!(
            Error::TaskManagement {
                function: "TARGET COLD RESET",
                response: 5
            }
            .to_string(),
            "task management function TARGET COLD RESET answered task management function not supported"
        );
    }

    #[test]
    fn json_carries_the_message_and_the_conflict() {
        let j = Error::ReservationConflict.json();
        assert_eq!(j["status"], "RESERVATION CONFLICT");
        assert_eq!(j["error"], Error::ReservationConflict.to_string());
        assert!(j.get("sense").is_none());
        assert!(Error::Busy.json().get("status").is_none());
    }
}
