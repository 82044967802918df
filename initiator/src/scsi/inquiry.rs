//! The VPD pages the CLI decodes (SPC-4 §7.8, SBC-3 §6.6); standard INQUIRY
//! data is `busrig_proto::scsi::inquiry::StandardInquiry`.
//!
//! ```text
//! VPD page:
//! byte 0      qualifier | device type
//! byte 1      PAGE CODE
//! bytes 2-3   PAGE LENGTH (n - 3)
//! bytes 4..   page data
//! ```

use serde::Serialize;

use busrig_proto::scsi::inquiry::{ascii_field as ascii, InquiryDecodeError};

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

/// VPD page codes (SPC-4 §7.8, SBC-3 §6.6).
pub mod page {
    pub const SUPPORTED_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
    pub const BLOCK_LIMITS: u8 = 0xb0;
    pub const BLOCK_DEVICE_CHARACTERISTICS: u8 = 0xb1;
    pub const LOGICAL_BLOCK_PROVISIONING: u8 = 0xb2;
}

/// Names the CLI accepts for `vpd PAGE` besides a number.
pub fn page_by_name(name: &str) -> Option<u8> {
    Some(match name {
        "sp" | "supported" => page::SUPPORTED_PAGES,
        "sn" | "serial" => page::UNIT_SERIAL_NUMBER,
        "di" | "id" | "device-id" => page::DEVICE_IDENTIFICATION,
        "bl" | "block-limits" => page::BLOCK_LIMITS,
        "bdc" | "characteristics" => page::BLOCK_DEVICE_CHARACTERISTICS,
        "lbpv" | "provisioning" => page::LOGICAL_BLOCK_PROVISIONING,
        _ => return None,
    })
}

/// One designation descriptor of the Device Identification page (SPC-4 §7.8.6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Designator {
    /// 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// 0 logical unit, 1 target port, 2 target device.
    pub association: u8,
    /// 1 T10 vendor ID, 2 EUI-64, 3 NAA, 4 relative target port, 5 target
    /// port group, 8 SCSI name string.
    pub designator_type: u8,
    pub type_name: &'static str,
    /// The designator as text (ASCII/UTF-8) or hex (binary).
    pub value: String,
}

/// A decoded VPD page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "page", rename_all = "kebab-case")]
pub enum Vpd {
    SupportedPages {
        pages: Vec<u8>,
    },
    UnitSerialNumber {
        serial: String,
    },
    DeviceIdentification {
        designators: Vec<Designator>,
    },
    BlockLimits {
        max_compare_and_write_length: u8,
        optimal_transfer_length_granularity: u16,
        max_transfer_length: u32,
        optimal_transfer_length: u32,
        max_unmap_lba_count: u32,
        max_unmap_block_descriptor_count: u32,
    },
    BlockDeviceCharacteristics {
        medium_rotation_rate: u16,
        nominal_form_factor: u8,
    },
    LogicalBlockProvisioning {
        lbpu: bool,
        lbpws: bool,
        lbpws10: bool,
        provisioning_type: u8,
    },
    /// A page this decoder does not know: its code and payload in hex.
    Raw {
        code: u8,
        hex: String,
    },
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

impl Vpd {
    /// Decodes page `want` from INQUIRY EVPD=1 data.
    pub fn decode(want: u8, b: &[u8]) -> Result<Vpd, DataError> {
        if b.len() < 4 {
            return Err(short("VPD page", 4, b.len()));
        }
        if b[1] != want {
            return Err(DataError {
                what: "VPD page",
                detail: format!("asked for page {want:#04x}, got page {:#04x}", b[1]),
            });
        }
        let len = be16(b, 2) as usize;
        let body = &b[4..(4 + len).min(b.len())];
        Ok(match want {
            page::SUPPORTED_PAGES => Vpd::SupportedPages {
                pages: body.to_vec(),
            },
            page::UNIT_SERIAL_NUMBER => Vpd::UnitSerialNumber {
                serial: ascii(body),
            },
            page::DEVICE_IDENTIFICATION => {
                let mut designators = Vec::new();
                let mut i = 0;
                while i + 4 <= body.len() {
                    let d = &body[i..];
                    let dlen = d[3] as usize;
                    let value = &d[4..(4 + dlen).min(d.len())];
                    let code_set = d[0] & 0x0f;
                    let designator_type = d[1] & 0x0f;
                    designators.push(Designator {
                        code_set,
                        association: (d[1] >> 4) & 0x03,
                        designator_type,
                        type_name: match designator_type {
                            0 => "vendor specific",
                            1 => "T10 vendor ID",
                            2 => "EUI-64",
                            3 => "NAA",
                            4 => "relative target port",
                            5 => "target port group",
                            6 => "logical unit group",
                            7 => "MD5 logical unit",
                            8 => "SCSI name string",
                            _ => "reserved",
                        },
                        value: if matches!(code_set, 2 | 3) {
                            ascii(value)
                        } else {
                            hex(value)
                        },
                    });
                    i += 4 + dlen;
                }
                Vpd::DeviceIdentification { designators }
            }
            page::BLOCK_LIMITS => Vpd::BlockLimits {
                max_compare_and_write_length: b.get(5).copied().unwrap_or(0),
                optimal_transfer_length_granularity: be16(b, 6),
                max_transfer_length: be32(b, 8),
                optimal_transfer_length: be32(b, 12),
                max_unmap_lba_count: be32(b, 20),
                max_unmap_block_descriptor_count: be32(b, 24),
            },
            page::BLOCK_DEVICE_CHARACTERISTICS => Vpd::BlockDeviceCharacteristics {
                medium_rotation_rate: be16(b, 4),
                nominal_form_factor: b.get(7).map(|v| v & 0x0f).unwrap_or(0),
            },
            page::LOGICAL_BLOCK_PROVISIONING => {
                let f = b.get(5).copied().unwrap_or(0);
                Vpd::LogicalBlockProvisioning {
                    lbpu: f & 0x80 != 0,
                    lbpws: f & 0x40 != 0,
                    lbpws10: f & 0x20 != 0,
                    provisioning_type: b.get(6).map(|v| v & 0x07).unwrap_or(0),
                }
            }
            code => Vpd::Raw {
                code,
                hex: hex(body),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use busrig_proto::scsi::inquiry::StandardInquiry;

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
    fn device_identification_designators() {
        let mut b = vec![0x00, 0x83, 0x00, 0x00];
        // NAA binary designator, LU association.
        b.extend_from_slice(&[0x01, 0x03, 0x00, 0x08, 0x60, 1, 2, 3, 4, 5, 6, 7]);
        // SCSI name string, target device association, UTF-8.
        b.extend_from_slice(&[0x53, 0x28, 0x00, 0x08]);
        b.extend_from_slice(b"iqn.x\0\0\0");
        let n = (b.len() - 4) as u16;
        b[2..4].copy_from_slice(&n.to_be_bytes());
        match Vpd::decode(0x83, &b).unwrap() {
            Vpd::DeviceIdentification { designators } => {
                assert_eq!(designators.len(), 2);
                assert_eq!(designators[0].type_name, "NAA");
                assert_eq!(designators[0].value, "6001020304050607");
                assert_eq!(designators[1].association, 2);
                assert_eq!(designators[1].value, "iqn.x");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_page_is_an_error() {
        assert!(Vpd::decode(0x80, &[0, 0x83, 0, 0]).is_err());
    }

    #[test]
    fn block_limits_and_unknown_page() {
        let mut b = vec![0u8; 64];
        b[1] = 0xb0;
        b[3] = 0x3c;
        b[5] = 1;
        b[8..12].copy_from_slice(&65536u32.to_be_bytes());
        match Vpd::decode(0xb0, &b).unwrap() {
            Vpd::BlockLimits {
                max_compare_and_write_length,
                max_transfer_length,
                ..
            } => {
                assert_eq!(max_compare_and_write_length, 1);
                assert_eq!(max_transfer_length, 65536);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Vpd::decode(0xc0, &[0, 0xc0, 0, 2, 0xab, 0xcd]).unwrap(),
            Vpd::Raw {
                code: 0xc0,
                hex: "abcd".into()
            }
        );
    }

    #[test]
    fn page_names() {
        assert_eq!(page_by_name("sn"), Some(0x80));
        assert_eq!(page_by_name("bogus"), None);
    }
}
