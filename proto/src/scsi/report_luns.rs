//! REPORT LUNS parameter data (SPC-4 §6.33) and LUN encoding (SAM-5 §4.7).
//! The iSCSI LUN field carries the eight-byte SAM LUN as is (RFC 7143
//! §11.2.1.3), so the same encoding serves PDUs and REPORT LUNS.
//!
//! ```text
//! bytes 0-3  LUN LIST LENGTH (n - 7)
//! bytes 4-7  reserved
//! bytes 8-   one 8-byte LUN per logical unit
//! LUN < 256:    peripheral device addressing, 00b: byte 0 = 00h, byte 1 = LUN
//! LUN < 16384:  flat space addressing, 01b: byte 0 = 40h | LUN(13..8), byte 1 = LUN(7..0)
//! ```
//!
//! This is the choice libiscsi and the Linux SCSI midlayer make.

/// The 8-byte LUN field (as a big-endian u64) for a LUN number
/// (SAM-5 §4.7.3, §4.7.7). Numbers of 16384 and up have no single-level
/// form and are passed through as the whole field.
pub fn encode_lun(lun: u64) -> u64 {
    if lun < 256 {
        lun << 48
    } else if lun < 0x4000 {
        (0x4000 | lun) << 48
    } else {
        lun
    }
}

/// The LUN number of a single-level LUN field in the peripheral (bus 0) or
/// flat space addressing method; `None` for the other methods and for
/// multi-level LUNs (a non-zero second level names another unit).
pub fn decode_lun(field: u64) -> Option<u64> {
    let b = field.to_be_bytes();
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    match b[0] >> 6 {
        0b00 if b[0] == 0 => Some(u64::from(b[1])),
        0b01 => Some((u64::from(b[0] & 0x3f) << 8) | u64::from(b[1])),
        _ => None,
    }
}

/// Why REPORT LUNS parameter data could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportLunsError {
    /// Fewer bytes than the 8-byte header.
    #[error("REPORT LUNS data is {0} bytes, shorter than its 8-byte header")]
    Short(usize),
}

/// REPORT LUNS parameter data: the 8-byte LUN fields and LUN LIST LENGTH,
/// which is larger than what arrived when the allocation length was too
/// small to hold the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunList {
    /// LUN fields as big-endian u64, in the order the device server sent them.
    pub luns: Vec<u64>,
    /// LUN LIST LENGTH in bytes.
    pub list_length: u32,
}

impl LunList {
    /// The list for the LUN numbers `luns` (sorted by the caller).
    pub fn from_numbers(luns: &[u64]) -> LunList {
        LunList {
            luns: luns.iter().map(|&l| encode_lun(l)).collect(),
            list_length: (luns.len() * 8) as u32,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 8 * self.luns.len());
        b.extend_from_slice(&self.list_length.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        for l in &self.luns {
            b.extend_from_slice(&l.to_be_bytes());
        }
        b
    }

    /// Decodes what arrived; a list cut short by the allocation length
    /// keeps the LUNs that fit.
    pub fn decode(b: &[u8]) -> Result<LunList, ReportLunsError> {
        if b.len() < 8 {
            return Err(ReportLunsError::Short(b.len()));
        }
        let list_length = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let end = (8 + list_length as usize).min(b.len());
        let luns = b[8..end]
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(LunList { luns, list_length })
    }
}

/// REPORT LUNS as `busrig disk --json` prints it: each LUN field with
/// its number when it has one (`{"luns": [{"lun": 1, "field": "0001..."}]}`).
impl serde::Serialize for LunList {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        struct Field(u64);
        impl serde::Serialize for Field {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(2))?;
                m.serialize_entry("lun", &decode_lun(self.0))?;
                m.serialize_entry("field", &format!("{:016x}", self.0))?;
                m.end()
            }
        }
        let luns: Vec<Field> = self.luns.iter().map(|&f| Field(f)).collect();
        let mut st = ser.serialize_struct("LunList", 1)?;
        st.serialize_field("luns", &luns)?;
        st.end()
    }
}

/// One LUN per line: its number, or the whole 8-byte field in hex when it
/// is not a peripheral or flat-space LUN.
impl std::fmt::Display for LunList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, field) in self.luns.iter().enumerate() {
            f.write_str(if i == 0 { "" } else { "\n" })?;
            match decode_lun(*field) {
                Some(n) => write!(f, "{n}")?,
                None => write!(f, "{field:016x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_luns_use_peripheral_addressing() {
        assert_eq!(encode_lun(0), 0);
        assert_eq!(encode_lun(2), 0x0002_0000_0000_0000);
        assert_eq!(decode_lun(0x0002_0000_0000_0000), Some(2));
    }

    #[test]
    fn large_luns_use_flat_space_addressing() {
        assert_eq!(encode_lun(300), 0x412c_0000_0000_0000);
        assert_eq!(decode_lun(0x4101_0000_0000_0000), Some(0x101));
        for l in [0, 1, 255, 256, 300, 0x3fff] {
            assert_eq!(decode_lun(encode_lun(l)), Some(l));
        }
    }

    #[test]
    fn other_methods_and_multi_level_luns_are_not_numbers() {
        assert_eq!(decode_lun(0x0001_0001_0000_0000), None);
        assert_eq!(decode_lun(0x8001_0000_0000_0000), None);
        assert_eq!(decode_lun(0x8000_0000_0000_0000), None);
        assert_eq!(decode_lun(0x0100_0000_0000_0000), None);
    }

    #[test]
    fn report_luns_bytes() {
        assert_eq!(
            LunList::from_numbers(&[0, 2]).encode(),
            vec![0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn truncated_list_keeps_its_length() {
        let mut b = vec![0, 0, 0, 24, 0, 0, 0, 0];
        for l in [0u64, 1 << 48, 2 << 48] {
            b.extend_from_slice(&l.to_be_bytes());
        }
        let l = LunList::decode(&b).unwrap();
        assert_eq!(l.luns, vec![0, 1 << 48, 2 << 48]);
        let t = LunList::decode(&b[..16]).unwrap();
        assert_eq!((t.luns.len(), t.list_length), (1, 24));
        assert_eq!(LunList::decode(&b[..7]), Err(ReportLunsError::Short(7)));
    }

    #[test]
    fn lun_lists_read_one_per_line() {
        let mut l = LunList::from_numbers(&[0, 1, 300]);
        l.luns.push(0xc100_0000_0000_0000);
        assert_eq!(l.to_string(), "0\n1\n300\nc100000000000000");
    }

    #[test]
    fn lun_lists_serialize_with_numbers_and_fields() {
        let mut l = LunList::from_numbers(&[1]);
        l.luns.push(0xc100_0000_0000_0000);
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({ "luns": [
                { "lun": 1, "field": "0001000000000000" },
                { "lun": null, "field": "c100000000000000" },
            ] })
        );
    }
}
