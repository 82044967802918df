//! Sense data (SPC-4 §4.5) built from one table of sense keys and additional
//! sense codes, in fixed (0x70) or descriptor (0x72) format.
//!
//! Fixed format, 18 bytes:
//!
//! ```text
//! byte 0     VALID(7) | RESPONSE CODE 0x70
//! byte 2     SENSE KEY (bits 3..0)
//! bytes 3-6  INFORMATION (big endian, meaningful when VALID)
//! byte 7     ADDITIONAL SENSE LENGTH (10)
//! byte 12    ADDITIONAL SENSE CODE
//! byte 13    ADDITIONAL SENSE CODE QUALIFIER
//! bytes 15-17 SENSE KEY SPECIFIC (SKSV(7) | C/D(6) | BPV(3) | BIT POINTER, FIELD POINTER)
//! ```
//!
//! Descriptor format: 8-byte header (0x72, key, ASC, ASCQ, length at byte 7)
//! followed by descriptors: information (type 0) and sense-key specific (type 2).

/// SCSI status codes (SAM-5 §5.3.1).
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Sense keys (SPC-4 §4.5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    BlankCheck = 0x8,
    VendorSpecific = 0x9,
    CopyAborted = 0xa,
    AbortedCommand = 0xb,
    VolumeOverflow = 0xd,
    Miscompare = 0xe,
}

impl SenseKey {
    pub fn from_u8(v: u8) -> Option<SenseKey> {
        use SenseKey::*;
        Some(match v & 0x0f {
            0x0 => NoSense,
            0x1 => RecoveredError,
            0x2 => NotReady,
            0x3 => MediumError,
            0x4 => HardwareError,
            0x5 => IllegalRequest,
            0x6 => UnitAttention,
            0x7 => DataProtect,
            0x8 => BlankCheck,
            0x9 => VendorSpecific,
            0xa => CopyAborted,
            0xb => AbortedCommand,
            0xd => VolumeOverflow,
            0xe => Miscompare,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use SenseKey::*;
        match self {
            NoSense => "NO SENSE",
            RecoveredError => "RECOVERED ERROR",
            NotReady => "NOT READY",
            MediumError => "MEDIUM ERROR",
            HardwareError => "HARDWARE ERROR",
            IllegalRequest => "ILLEGAL REQUEST",
            UnitAttention => "UNIT ATTENTION",
            DataProtect => "DATA PROTECT",
            BlankCheck => "BLANK CHECK",
            VendorSpecific => "VENDOR SPECIFIC",
            CopyAborted => "COPY ABORTED",
            AbortedCommand => "ABORTED COMMAND",
            VolumeOverflow => "VOLUME OVERFLOW",
            Miscompare => "MISCOMPARE",
        }
    }
}

/// An additional sense code and qualifier (SPC-4 Annex D), with the sense
/// key it is normally reported under. Every condition busrig reports is a
/// row of [`Asc::TABLE`]; code elsewhere names the constant, never the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    pub name: &'static str,
}

macro_rules! asc_table {
    ($($id:ident = ($key:ident, $asc:expr, $ascq:expr, $name:expr);)*) => {
        impl Asc {
            $(pub const $id: Asc = Asc { key: SenseKey::$key, asc: $asc, ascq: $ascq, name: $name };)*
            /// Every condition busrig knows, for decoding and for display.
            pub const TABLE: &'static [Asc] = &[$(Asc::$id),*];
        }
    };
}

asc_table! {
    NO_ADDITIONAL_SENSE = (NoSense, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION");
    LUN_NOT_READY_CAUSE_NOT_REPORTABLE = (NotReady, 0x04, 0x00, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE");
    LUN_NOT_READY_INIT_REQUIRED = (NotReady, 0x04, 0x02, "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED");
    LUN_NOT_READY_MANUAL_INTERVENTION = (NotReady, 0x04, 0x03, "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED");
    LUN_OFFLINE = (NotReady, 0x04, 0x12, "LOGICAL UNIT NOT READY, OFFLINE");
    SANITIZE_IN_PROGRESS = (NotReady, 0x04, 0x1b, "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS");
    MEDIUM_NOT_PRESENT = (NotReady, 0x3a, 0x00, "MEDIUM NOT PRESENT");
    WRITE_ERROR = (MediumError, 0x0c, 0x00, "WRITE ERROR");
    UNRECOVERED_READ_ERROR = (MediumError, 0x11, 0x00, "UNRECOVERED READ ERROR");
    SANITIZE_COMMAND_FAILED = (MediumError, 0x31, 0x03, "SANITIZE COMMAND FAILED");
    INTERNAL_TARGET_FAILURE = (HardwareError, 0x44, 0x00, "INTERNAL TARGET FAILURE");
    PARAMETER_LIST_LENGTH_ERROR = (IllegalRequest, 0x1a, 0x00, "PARAMETER LIST LENGTH ERROR");
    INVALID_COMMAND_OPERATION_CODE = (IllegalRequest, 0x20, 0x00, "INVALID COMMAND OPERATION CODE");
    LBA_OUT_OF_RANGE = (IllegalRequest, 0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE");
    INVALID_FIELD_IN_CDB = (IllegalRequest, 0x24, 0x00, "INVALID FIELD IN CDB");
    LUN_NOT_SUPPORTED = (IllegalRequest, 0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED");
    INVALID_FIELD_IN_PARAMETER_LIST = (IllegalRequest, 0x26, 0x00, "INVALID FIELD IN PARAMETER LIST");
    PARAMETER_NOT_SUPPORTED = (IllegalRequest, 0x26, 0x01, "PARAMETER NOT SUPPORTED");
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = (IllegalRequest, 0x26, 0x04, "INVALID RELEASE OF PERSISTENT RESERVATION");
    TOO_MANY_TARGET_DESCRIPTORS = (IllegalRequest, 0x26, 0x06, "TOO MANY TARGET DESCRIPTORS");
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = (IllegalRequest, 0x26, 0x07, "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE");
    TOO_MANY_SEGMENT_DESCRIPTORS = (IllegalRequest, 0x26, 0x08, "TOO MANY SEGMENT DESCRIPTORS");
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = (IllegalRequest, 0x26, 0x09, "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE");
    INLINE_DATA_LENGTH_EXCEEDED = (IllegalRequest, 0x26, 0x0b, "INLINE DATA LENGTH EXCEEDED");
    OPERATION_IN_PROGRESS = (IllegalRequest, 0x00, 0x16, "OPERATION IN PROGRESS");
    COPY_ABORTED_NO_SENSE = (CopyAborted, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION");
    UNREACHABLE_COPY_TARGET = (CopyAborted, 0x08, 0x04, "UNREACHABLE COPY TARGET");
    COPY_TARGET_DEVICE_NOT_REACHABLE = (CopyAborted, 0x0d, 0x02, "COPY TARGET DEVICE NOT REACHABLE");
    THIRD_PARTY_DEVICE_FAILURE = (CopyAborted, 0x0d, 0x01, "THIRD PARTY DEVICE FAILURE");
    SAVING_PARAMETERS_NOT_SUPPORTED = (IllegalRequest, 0x39, 0x00, "SAVING PARAMETERS NOT SUPPORTED");
    INSUFFICIENT_REGISTRATION_RESOURCES = (IllegalRequest, 0x55, 0x04, "INSUFFICIENT REGISTRATION RESOURCES");
    MEDIUM_REMOVAL_PREVENTED = (IllegalRequest, 0x53, 0x02, "MEDIUM REMOVAL PREVENTED");
    WRITE_PROTECTED = (DataProtect, 0x27, 0x00, "WRITE PROTECTED");
    POWER_ON_RESET_OR_BUS_DEVICE_RESET = (UnitAttention, 0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED");
    POWER_ON_OCCURRED = (UnitAttention, 0x29, 0x01, "POWER ON OCCURRED");
    SCSI_BUS_RESET_OCCURRED = (UnitAttention, 0x29, 0x02, "SCSI BUS RESET OCCURRED");
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = (UnitAttention, 0x29, 0x03, "BUS DEVICE RESET FUNCTION OCCURRED");
    DEVICE_INTERNAL_RESET = (UnitAttention, 0x29, 0x04, "DEVICE INTERNAL RESET");
    I_T_NEXUS_LOSS_OCCURRED = (UnitAttention, 0x29, 0x07, "I_T NEXUS LOSS OCCURRED");
    PARAMETERS_CHANGED = (UnitAttention, 0x2a, 0x00, "PARAMETERS CHANGED");
    MODE_PARAMETERS_CHANGED = (UnitAttention, 0x2a, 0x01, "MODE PARAMETERS CHANGED");
    RESERVATIONS_PREEMPTED = (UnitAttention, 0x2a, 0x03, "RESERVATIONS PREEMPTED");
    RESERVATIONS_RELEASED = (UnitAttention, 0x2a, 0x04, "RESERVATIONS RELEASED");
    REGISTRATIONS_PREEMPTED = (UnitAttention, 0x2a, 0x05, "REGISTRATIONS PREEMPTED");
    CAPACITY_DATA_HAS_CHANGED = (UnitAttention, 0x2a, 0x09, "CAPACITY DATA HAS CHANGED");
    NOT_READY_TO_READY_CHANGE = (UnitAttention, 0x28, 0x00, "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED");
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (UnitAttention, 0x2f, 0x00, "COMMANDS CLEARED BY ANOTHER INITIATOR");
    COMMANDS_CLEARED_BY_POWER_LOSS = (UnitAttention, 0x2f, 0x02, "COMMANDS CLEARED BY POWER LOSS NOTIFICATION");
    REPORTED_LUNS_DATA_HAS_CHANGED = (UnitAttention, 0x3f, 0x0e, "REPORTED LUNS DATA HAS CHANGED");
    MISCOMPARE_DURING_VERIFY = (Miscompare, 0x1d, 0x00, "MISCOMPARE DURING VERIFY OPERATION");
    ABORTED_BY_TARGET = (AbortedCommand, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION");
    INITIATOR_DETECTED_ERROR = (AbortedCommand, 0x48, 0x00, "INITIATOR DETECTED ERROR MESSAGE RECEIVED");
    INVALID_MESSAGE_ERROR = (AbortedCommand, 0x49, 0x00, "INVALID MESSAGE ERROR");
    DATA_PHASE_ERROR = (AbortedCommand, 0x4b, 0x00, "DATA PHASE ERROR");
    INITIATOR_RESPONSE_TIMEOUT = (AbortedCommand, 0x4b, 0x06, "INITIATOR RESPONSE TIMEOUT");
    OVERLAPPED_COMMANDS = (AbortedCommand, 0x4e, 0x00, "OVERLAPPED COMMANDS ATTEMPTED");
}

impl Asc {
    /// Looks up a reported ASC/ASCQ (any key) for display.
    pub fn lookup(asc: u8, ascq: u8) -> Option<Asc> {
        Asc::TABLE
            .iter()
            .copied()
            .find(|a| a.asc == asc && a.ascq == ascq)
    }
}

/// Sense-key specific field pointer (SPC-4 §4.5.2.4.2): which CDB or
/// parameter-list byte (and optionally bit) was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// true: the error is in the CDB; false: in the parameter list.
    pub in_cdb: bool,
    pub byte: u16,
    pub bit: Option<u8>,
}

/// A sense condition to report: the table row, an optional INFORMATION
/// field (for example the first miscomparing offset) and field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    pub information: Option<u64>,
    pub field: Option<FieldPointer>,
    /// Progress indication (SPC-4 §4.5.2.4.4): how far a long operation
    /// such as SANITIZE has got, in 65536ths. Only without a field pointer.
    pub progress: Option<u16>,
}

impl From<Asc> for Sense {
    fn from(a: Asc) -> Sense {
        Sense {
            key: a.key,
            asc: a.asc,
            ascq: a.ascq,
            information: None,
            field: None,
            progress: None,
        }
    }
}

impl Sense {
    pub fn new(a: Asc) -> Sense {
        a.into()
    }

    pub fn with_information(mut self, info: u64) -> Sense {
        self.information = Some(info);
        self
    }

    /// Points at CDB byte `byte` (and `bit`, when known).
    pub fn cdb_field(mut self, byte: u16, bit: Option<u8>) -> Sense {
        self.field = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        self
    }

    /// Points at parameter-list byte `byte`.
    pub fn param_field(mut self, byte: u16, bit: Option<u8>) -> Sense {
        self.field = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit,
        });
        self
    }

    /// Adds a progress indication of `done` out of 65536.
    pub fn with_progress(mut self, done: u16) -> Sense {
        self.progress = Some(done);
        self
    }

    fn sks(&self) -> Option<[u8; 3]> {
        if self.field.is_none() {
            if let Some(p) = self.progress {
                let p = p.to_be_bytes();
                return Some([0x80, p[0], p[1]]);
            }
        }
        self.field.map(|f| {
            let mut b0 = 0x80; // SKSV
            if f.in_cdb {
                b0 |= 0x40;
            }
            if let Some(bit) = f.bit {
                b0 |= 0x08 | (bit & 0x07);
            }
            [b0, (f.byte >> 8) as u8, f.byte as u8]
        })
    }

    /// Fixed-format sense data (response code 0x70, current error), 18 bytes.
    pub fn to_fixed(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key as u8;
        if let Some(info) = self.information {
            // INFORMATION is 4 bytes in fixed format; larger values cannot be
            // represented and leave VALID clear (SPC-4 §4.5.3).
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(sks) = self.sks() {
            b[15..18].copy_from_slice(&sks);
        }
        b
    }

    /// Descriptor-format sense data (response code 0x72, current error).
    pub fn to_descriptor(&self) -> Vec<u8> {
        let mut b = vec![0x72, self.key as u8, self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.information {
            // Information descriptor (type 0x00, length 0x0a, VALID set).
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sks() {
            // Sense key specific descriptor (type 0x02, length 0x06).
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&sks);
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Encodes in the format selected by the D_SENSE bit of the control mode page.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.to_descriptor()
        } else {
            self.to_fixed().to_vec()
        }
    }

    /// Decodes fixed or descriptor sense data (for initiators and tests).
    pub fn decode(b: &[u8]) -> Option<Sense> {
        let code = *b.first()? & 0x7f;
        match code {
            0x70 | 0x71 if b.len() >= 14 => {
                let information =
                    (b[0] & 0x80 != 0).then(|| u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as u64);
                let key = SenseKey::from_u8(b[2])?;
                let sks = (b.len() >= 18 && b[15] & 0x80 != 0).then(|| [b[15], b[16], b[17]]);
                let (field, progress) = split_sks(key, sks);
                Some(Sense {
                    key,
                    asc: b[12],
                    ascq: b[13],
                    information,
                    field,
                    progress,
                })
            }
            0x72 | 0x73 if b.len() >= 8 => {
                let mut s = Sense {
                    key: SenseKey::from_u8(b[1])?,
                    asc: b[2],
                    ascq: b[3],
                    information: None,
                    field: None,
                    progress: None,
                };
                let end = (8 + b[7] as usize).min(b.len());
                let mut i = 8;
                while i + 2 <= end {
                    let (ty, len) = (b[i], b[i + 1] as usize);
                    let d = &b[i + 2..(i + 2 + len).min(end)];
                    match ty {
                        0x00 if d.len() >= 10 && d[0] & 0x80 != 0 => {
                            s.information = Some(u64::from_be_bytes(d[2..10].try_into().ok()?));
                        }
                        0x02 if d.len() >= 5 && d[2] & 0x80 != 0 => {
                            (s.field, s.progress) = split_sks(s.key, Some([d[2], d[3], d[4]]));
                        }
                        _ => {}
                    }
                    i += 2 + len;
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// The table row for this condition, when busrig knows it.
    pub fn asc_entry(&self) -> Option<Asc> {
        Asc::lookup(self.asc, self.ascq)
    }
}

/// The sense-key specific bytes read as SPC-4 §4.5.2.4 has them for the
/// key: a progress indication under NO SENSE and NOT READY, a field
/// pointer otherwise.
fn split_sks(key: SenseKey, sks: Option<[u8; 3]>) -> (Option<FieldPointer>, Option<u16>) {
    let Some(b) = sks else {
        return (None, None);
    };
    match key {
        SenseKey::NoSense | SenseKey::NotReady => (None, Some(u16::from_be_bytes([b[1], b[2]]))),
        _ => (
            Some(FieldPointer {
                in_cdb: b[0] & 0x40 != 0,
                byte: u16::from_be_bytes([b[1], b[2]]),
                bit: (b[0] & 0x08 != 0).then_some(b[0] & 0x07),
            }),
            None,
        ),
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:02x}/{:02x}", self.key.name(), self.asc, self.ascq)?;
        if let Some(a) = self.asc_entry() {
            write!(f, " {}", a.name)?;
        }
        if let Some(i) = self.information {
            write!(f, " (information {i:#x})")?;
        }
        Ok(())
    }
}

/// Sense data as `busrig disk --json` reports it: the key's name, ASC and
/// ASCQ as two hex digits, the table's description, the INFORMATION field
/// and the one-line text (SPC-4 §4.5).
impl serde::Serialize for Sense {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("Sense", 6)?;
        st.serialize_field("key", self.key.name())?;
        st.serialize_field("asc", &format!("{:02x}", self.asc))?;
        st.serialize_field("ascq", &format!("{:02x}", self.ascq))?;
        st.serialize_field("description", &self.asc_entry().map(|a| a.name))?;
        st.serialize_field("information", &self.information)?;
        st.serialize_field("text", &self.to_string())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_json_names_key_and_code() {
        let mut s = Sense::new(Asc::LBA_OUT_OF_RANGE);
        s.information = Some(7);
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            serde_json::json!({
                "key": "ILLEGAL REQUEST",
                "asc": "21",
                "ascq": "00",
                "description": "LOGICAL BLOCK ADDRESS OUT OF RANGE",
                "information": 7,
                "text": s.to_string(),
            })
        );
        let ua = Sense::new(Asc::SCSI_BUS_RESET_OCCURRED);
        let j = serde_json::to_value(ua).unwrap();
        assert_eq!(j["key"], "UNIT ATTENTION");
        assert_eq!(j["asc"], "29");
        assert_eq!(j["information"], serde_json::Value::Null);
    }

    #[test]
    fn fixed_lba_out_of_range_bytes() {
        let s = Sense::new(Asc::LBA_OUT_OF_RANGE);
        let b = s.to_fixed();
        assert_eq!(
            b,
            [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0]
        );
    }

    #[test]
    fn fixed_with_information_and_field_pointer() {
        let s = Sense::new(Asc::INVALID_FIELD_IN_CDB)
            .with_information(0x1234)
            .cdb_field(1, Some(3));
        let b = s.to_fixed();
        assert_eq!(b[0], 0xf0);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!(&b[15..18], &[0xcb, 0x00, 0x01]);
        assert_eq!(Sense::decode(&b), Some(s));
    }

    #[test]
    fn descriptor_roundtrip() {
        let s = Sense::new(Asc::MISCOMPARE_DURING_VERIFY).with_information(1 << 40);
        let b = s.to_descriptor();
        assert_eq!(&b[..4], &[0x72, 0x0e, 0x1d, 0x00]);
        assert_eq!(b[7] as usize, b.len() - 8);
        assert_eq!(Sense::decode(&b), Some(s));
    }

    #[test]
    fn large_information_leaves_valid_clear_in_fixed() {
        let s = Sense::new(Asc::MISCOMPARE_DURING_VERIFY).with_information(1 << 40);
        assert_eq!(s.to_fixed()[0], 0x70);
    }

    #[test]
    fn table_has_unique_codes() {
        for (i, a) in Asc::TABLE.iter().enumerate() {
            for b in &Asc::TABLE[i + 1..] {
                assert!(
                    !(a.asc == b.asc && a.ascq == b.ascq && a.key == b.key),
                    "duplicate row {} / {}",
                    a.name,
                    b.name
                );
            }
        }
    }
}
