//! Why parameter data a device returned could not be decoded: one error
//! for the initiator's callers, whichever `busrig_proto::scsi` decoder
//! refused the bytes.

use busrig_proto::scsi::inquiry::InquiryDecodeError;
use busrig_proto::scsi::vpd::VpdDecodeError;

/// Why returned parameter data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DataError {
    pub what: &'static str,
    pub detail: String,
}

pub(crate) fn short(what: &'static str, need: usize, got: usize) -> DataError {
    DataError {
        what,
        detail: format!("need {need} bytes, got {got}"),
    }
}

impl From<InquiryDecodeError> for DataError {
    fn from(e: InquiryDecodeError) -> DataError {
        match e {
            InquiryDecodeError::Short { what, need, got } => short(what, need, got),
        }
    }
}

impl From<VpdDecodeError> for DataError {
    fn from(e: VpdDecodeError) -> DataError {
        match e {
            VpdDecodeError::Short { need, got } => short("VPD page", need, got),
            VpdDecodeError::WrongPage { want, got } => DataError {
                what: "VPD page",
                detail: format!("asked for page {want:#04x}, got page {got:#04x}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use busrig_proto::scsi::inquiry::StandardInquiry;
    use busrig_proto::scsi::vpd::Vpd;

    use super::*;

    fn std_inquiry() -> Vec<u8> {
        let mut b = vec![0u8; 36];
        b[0] = 0x00;
        b[2] = 0x06;
        b[3] = 0x02;
        b[4] = 31;
        b[5] = 0x10;
        b[8..16].copy_from_slice(b"BUSRIG  ");
        b[16..32].copy_from_slice(b"QUORUM DISK     ");
        b[32..36].copy_from_slice(b"0001");
        b
    }

    #[test]
    fn standard_inquiry_fields() {
        let i = StandardInquiry::decode(&std_inquiry()).unwrap();
        assert_eq!(i.device_type, 0);
        assert_eq!(i.version, 6);
        assert_eq!(i.tpgs, 1);
        assert_eq!(i.vendor, "BUSRIG");
        assert_eq!(i.product, "QUORUM DISK");
        assert_eq!(i.revision, "0001");
        assert_eq!(
            DataError::from(StandardInquiry::decode(&std_inquiry()[..20]).unwrap_err()).to_string(),
            "malformed standard INQUIRY data: need 36 bytes, got 20"
        );
    }

    #[test]
    fn vpd_errors_read_as_before() {
        let e = |b: &[u8]| DataError::from(Vpd::decode(0x80, b).unwrap_err()).to_string();
        assert_eq!(e(&[0, 0x80]), "malformed VPD page: need 4 bytes, got 2");
        assert_eq!(
            e(&[0, 0x83, 0, 0]),
            "malformed VPD page: asked for page 0x80, got page 0x83"
        );
    }
}
