//! Decoding the vital product data pages (SPC-4 §7.8, SBC-3 §6.6) an
//! initiator asks for with INQUIRY EVPD=1; the pages busrig serves are
//! built by the encoders in [`super::inquiry`], and the round-trip tests
//! below decode what those encoders produce.
//!
//! ```text
//! VPD page:
//! byte 0      qualifier | device type
//! byte 1      PAGE CODE
//! bytes 2-3   PAGE LENGTH (n - 3)
//! bytes 4..   page data
//! ```

use std::fmt;

use serde::Serialize;

use super::inquiry::{ascii_field as ascii, vpd as page};

/// Why a VPD page could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VpdDecodeError {
    /// Shorter than the 4-byte page header.
    #[error("VPD page: need {need} bytes, got {got}")]
    Short { need: usize, got: usize },
    /// The device answered with another page than the one asked for.
    #[error("VPD page: asked for page {want:#04x}, got page {got:#04x}")]
    WrongPage { want: u8, got: u8 },
}

/// Names the CLI accepts for a page besides its number.
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

/// One designation descriptor of the Device Identification page (SPC-4
/// §7.8.6.1).
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

/// Designator type names (SPC-4 Table 471).
fn designator_type_name(t: u8) -> &'static str {
    match t {
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
    }
}

/// A decoded VPD page. The serde names are the JSON keys of `busrig disk
/// vpd --json`.
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Big-endian fields at page offsets; a field past the end of a short
/// page reads as zero (devices may return fewer bytes than SBC-3 lists).
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

/// The designation descriptors of a Device Identification page body
/// (SPC-4 §7.8.6.1, Table 467); a truncated last descriptor keeps what
/// arrived.
fn designators(body: &[u8]) -> Vec<Designator> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= body.len() {
        let d = &body[i..];
        let len = usize::from(d[3]);
        let value = &d[4..(4 + len).min(d.len())];
        let code_set = d[0] & 0x0f;
        let designator_type = d[1] & 0x0f;
        out.push(Designator {
            code_set,
            association: (d[1] >> 4) & 0x03,
            designator_type,
            type_name: designator_type_name(designator_type),
            value: if matches!(code_set, 2 | 3) {
                ascii(value)
            } else {
                hex(value)
            },
        });
        i += 4 + len;
    }
    out
}

impl Vpd {
    /// Decodes page `want` from INQUIRY EVPD=1 data `b`.
    pub fn decode(want: u8, b: &[u8]) -> Result<Vpd, VpdDecodeError> {
        if b.len() < 4 {
            return Err(VpdDecodeError::Short {
                need: 4,
                got: b.len(),
            });
        }
        if b[1] != want {
            return Err(VpdDecodeError::WrongPage { want, got: b[1] });
        }
        let len = usize::from(be16(b, 2));
        let body = &b[4..(4 + len).min(b.len())];
        Ok(match want {
            page::SUPPORTED_PAGES => Vpd::SupportedPages {
                pages: body.to_vec(),
            },
            page::UNIT_SERIAL_NUMBER => Vpd::UnitSerialNumber {
                serial: ascii(body),
            },
            page::DEVICE_IDENTIFICATION => Vpd::DeviceIdentification {
                designators: designators(body),
            },
            // SBC-3 §6.6.4, Table 208 (offsets within the page).
            page::BLOCK_LIMITS => Vpd::BlockLimits {
                max_compare_and_write_length: b.get(5).copied().unwrap_or(0),
                optimal_transfer_length_granularity: be16(b, 6),
                max_transfer_length: be32(b, 8),
                optimal_transfer_length: be32(b, 12),
                max_unmap_lba_count: be32(b, 20),
                max_unmap_block_descriptor_count: be32(b, 24),
            },
            // SBC-3 §6.6.2, Table 204.
            page::BLOCK_DEVICE_CHARACTERISTICS => Vpd::BlockDeviceCharacteristics {
                medium_rotation_rate: be16(b, 4),
                nominal_form_factor: b.get(7).map(|v| v & 0x0f).unwrap_or(0),
            },
            // SBC-3 §6.6.5, Table 209.
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

/// A VPD page that is neither a number nor a name [`page_by_name`] knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a VPD page (a number, or sp, sn, di, bl, bdc, lbpv)")]
pub struct PageParseError(pub String);

/// A page as the CLI takes it: a name ([`page_by_name`]) or a number,
/// decimal or `0x` hex.
pub fn parse_page(s: &str) -> Result<u8, PageParseError> {
    page_by_name(s)
        .or_else(|| crate::hexdump::parse_byte(s).ok())
        .ok_or_else(|| PageParseError(s.to_string()))
}

/// The page for people: the supported pages, the serial number, one line
/// per designator; other pages as their JSON.
impl fmt::Display for Vpd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vpd::SupportedPages { pages } => {
                let pages: Vec<String> = pages.iter().map(|p| format!("{p:#04x}")).collect();
                write!(f, "supported VPD pages: {}", pages.join(" "))
            }
            Vpd::UnitSerialNumber { serial } => write!(f, "unit serial number: {serial}"),
            Vpd::DeviceIdentification { designators } => {
                for (i, d) in designators.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "\n" };
                    let (a, c) = (d.association, d.code_set);
                    write!(
                        f,
                        "{sep}{} (association {a}, code set {c}): {}",
                        d.type_name, d.value
                    )?;
                }
                Ok(())
            }
            Vpd::Raw { code, hex } => write!(f, "page {code:#04x}: {hex}"),
            other => f.write_str(&serde_json::to_string_pretty(other).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::inquiry::{self, BlockLimits, DeviceIds};
    use super::*;

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
    fn short_and_wrong_pages_are_errors() {
        assert_eq!(
            Vpd::decode(0x80, &[0, 0x83, 0, 0]),
            Err(VpdDecodeError::WrongPage {
                want: 0x80,
                got: 0x83
            })
        );
        assert_eq!(
            Vpd::decode(0x80, &[0, 0x80]),
            Err(VpdDecodeError::Short { need: 4, got: 2 })
        );
    }

    #[test]
    fn unknown_page_is_kept_raw() {
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

    /// Every page the target serves decodes to what it was built from.
    #[test]
    fn served_pages_round_trip() {
        assert_eq!(
            Vpd::decode(page::SUPPORTED_PAGES, &inquiry::supported_pages()).unwrap(),
            Vpd::SupportedPages {
                pages: page::ALL.to_vec()
            }
        );
        assert_eq!(
            Vpd::decode(page::UNIT_SERIAL_NUMBER, &inquiry::unit_serial("BR0001")).unwrap(),
            Vpd::UnitSerialNumber {
                serial: "BR0001".into()
            }
        );
        let ids = DeviceIds {
            naa: inquiry::naa6(0x00_1405, 0x1234, 0x0102_0304_0506_0708),
            vendor: "BUSRIG",
            serial: "BR0001",
            target_name: "iqn.2026-11.io.busrig:bus0",
            tpgt: 1,
            relative_port: 1,
            port_group: 0,
        };
        let Vpd::DeviceIdentification { designators } = Vpd::decode(
            page::DEVICE_IDENTIFICATION,
            &inquiry::device_identification(&ids),
        )
        .unwrap() else {
            panic!("not a device identification page")
        };
        let got: Vec<(u8, &str, &str)> = designators
            .iter()
            .map(|d| (d.association, d.type_name, d.value.as_str()))
            .collect();
        let naa = hex(&ids.naa);
        assert_eq!(
            got,
            [
                (0, "NAA", naa.as_str()),
                (0, "T10 vendor ID", "BUSRIG  BR0001"),
                (1, "relative target port", "00000001"),
                (1, "target port group", "00000000"),
                (1, "SCSI name string", "iqn.2026-11.io.busrig:bus0,t,0x0001"),
                (2, "SCSI name string", "iqn.2026-11.io.busrig:bus0"),
            ]
        );
        let limits = BlockLimits {
            max_compare_and_write: 1,
            optimal_granularity: 8,
            max_transfer: 0x4000,
            optimal_transfer: 0x800,
            max_prefetch: 0x4000,
            max_unmap_lba_count: 0x40000,
            max_unmap_descriptors: 64,
            optimal_unmap_granularity: 8,
            unmap_granularity_alignment: Some(0),
            max_write_same: 0x10000,
            max_atomic_transfer: 0,
            atomic_alignment: 0,
            atomic_granularity: 0,
        };
        assert_eq!(
            Vpd::decode(page::BLOCK_LIMITS, &inquiry::block_limits(&limits)).unwrap(),
            Vpd::BlockLimits {
                max_compare_and_write_length: 1,
                optimal_transfer_length_granularity: 8,
                max_transfer_length: 0x4000,
                optimal_transfer_length: 0x800,
                max_unmap_lba_count: 0x40000,
                max_unmap_block_descriptor_count: 64,
            }
        );
        assert_eq!(
            Vpd::decode(
                page::BLOCK_DEVICE_CHARACTERISTICS,
                &inquiry::block_device_characteristics()
            )
            .unwrap(),
            Vpd::BlockDeviceCharacteristics {
                medium_rotation_rate: 1,
                nominal_form_factor: 0,
            }
        );
        assert_eq!(
            Vpd::decode(
                page::LOGICAL_BLOCK_PROVISIONING,
                &inquiry::logical_block_provisioning()
            )
            .unwrap(),
            Vpd::LogicalBlockProvisioning {
                lbpu: true,
                lbpws: true,
                lbpws10: true,
                provisioning_type: 2,
            }
        );
    }

    #[test]
    fn pages_parse_by_name_or_number() {
        assert_eq!(parse_page("sn"), Ok(0x80));
        assert_eq!(parse_page("0xb0"), Ok(0xb0));
        assert_eq!(parse_page("131"), Ok(0x83));
        assert!(parse_page("nope").is_err());
    }

    #[test]
    fn pages_read_for_people() {
        let sp = Vpd::SupportedPages {
            pages: vec![0, 0x80, 0x83],
        };
        assert_eq!(sp.to_string(), "supported VPD pages: 0x00 0x80 0x83");
        let raw = Vpd::Raw {
            code: 0xc0,
            hex: "0102".into(),
        };
        assert_eq!(raw.to_string(), "page 0xc0: 0102");
        let d = |t: &'static str, v: &str| Designator {
            code_set: 1,
            association: 0,
            designator_type: 3,
            type_name: t,
            value: v.into(),
        };
        let di = Vpd::DeviceIdentification {
            designators: vec![d("NAA", "6001"), d("EUI-64", "02")],
        };
        assert_eq!(
            di.to_string(),
            "NAA (association 0, code set 1): 6001\nEUI-64 (association 0, code set 1): 02"
        );
        let bdc = Vpd::BlockDeviceCharacteristics {
            medium_rotation_rate: 1,
            nominal_form_factor: 0,
        };
        assert!(
            bdc.to_string().contains("\"medium_rotation_rate\": 1"),
            "{bdc}"
        );
    }
}
