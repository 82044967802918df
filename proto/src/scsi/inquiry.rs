//! INQUIRY data (SPC-4 §6.6): the standard page and the vital product data
//! pages busrig serves (SPC-4 §7.8, SBC-3 §6.5).
//!
//! Standard INQUIRY data, 96 bytes:
//!
//! ```text
//! byte 0      PERIPHERAL QUALIFIER(7..5) | DEVICE TYPE(4..0)
//! byte 1      RMB(7)
//! byte 2      VERSION (06h = SPC-4)
//! byte 3      NORMACA(5) HISUP(4) | RESPONSE DATA FORMAT (2)
//! byte 4      ADDITIONAL LENGTH (n - 4)
//! byte 5      SCCS ACC TPGS(5..4) 3PC PROTECT
//! byte 6      ENCSERV MULTIP ...
//! byte 7      CMDQUE(1)
//! bytes 8-15  T10 VENDOR IDENTIFICATION (ASCII, space padded)
//! bytes 16-31 PRODUCT IDENTIFICATION
//! bytes 32-35 PRODUCT REVISION LEVEL
//! bytes 58-73 VERSION DESCRIPTORS (8 x 2 bytes)
//! ```
//!
//! Every VPD page starts with a 4-byte header:
//!
//! ```text
//! byte 0      PERIPHERAL QUALIFIER | DEVICE TYPE
//! byte 1      PAGE CODE
//! bytes 2-3   PAGE LENGTH (n - 3)
//! ```

/// Peripheral device type of a direct-access block device (SPC-4 Table 139).
pub const DEVICE_TYPE_DISK: u8 = 0x00;
/// Peripheral qualifier 011b, type 1Fh: no logical unit at this LUN
/// (SPC-4 §6.6.2).
pub const NO_LUN: u8 = 0x7f;

/// VPD page codes busrig serves, in ascending order (SPC-4 §7.8.13).
pub mod vpd {
    pub const SUPPORTED_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
    pub const THIRD_PARTY_COPY: u8 = 0x8f;
    pub const BLOCK_LIMITS: u8 = 0xb0;
    pub const BLOCK_DEVICE_CHARACTERISTICS: u8 = 0xb1;
    pub const LOGICAL_BLOCK_PROVISIONING: u8 = 0xb2;
    pub const ALL: &[u8] = &[
        SUPPORTED_PAGES,
        UNIT_SERIAL_NUMBER,
        DEVICE_IDENTIFICATION,
        THIRD_PARTY_COPY,
        BLOCK_LIMITS,
        BLOCK_DEVICE_CHARACTERISTICS,
        LOGICAL_BLOCK_PROVISIONING,
    ];
}

/// Version descriptors claimed (SPC-4 Table 146): SAM-5, SPC-4, SBC-3, iSCSI.
pub const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0460, 0x04c0, 0x0960];

/// Why INQUIRY data could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InquiryDecodeError {
    /// Fewer bytes arrived than the fields decoded need.
    #[error("{what}: need {need} bytes, got {got}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
}

/// Peripheral device type names (SPC-4 Table 141).
pub fn device_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "direct access block device",
        0x01 => "sequential access device",
        0x05 => "CD/DVD device",
        0x08 => "media changer",
        0x0c => "storage array controller",
        0x0d => "enclosure services device",
        0x1f => "unknown or no device type",
        _ => "other",
    }
}

/// Copies `s` into `out` as printable ASCII padded with spaces (SPC-4 §4.4.1:
/// only 20h..7Eh in ASCII fields).
fn put_ascii(out: &mut [u8], s: &str) {
    out.fill(b' ');
    for (o, c) in out.iter_mut().zip(s.bytes()) {
        *o = if (0x20..=0x7e).contains(&c) { c } else { b'_' };
    }
}

/// An ASCII field without its padding (SPC-4 §4.4.1 pads with spaces; some
/// targets pad with NULs).
pub fn ascii_field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .trim_start()
        .to_string()
}

/// Standard INQUIRY data (SPC-4 §6.6.2), the fields busrig serves and reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// PERIPHERAL QUALIFIER, 3 bits: 000b a LU is there, 011b none can be.
    pub peripheral_qualifier: u8,
    /// PERIPHERAL DEVICE TYPE, 5 bits (SPC-4 Table 141).
    pub device_type: u8,
    /// RMB: the medium is removable.
    pub removable: bool,
    /// VERSION: 05h SPC-3, 06h SPC-4.
    pub version: u8,
    /// HISUP: LUNs are hierarchical (SAM-5 §4.7).
    pub hisup: bool,
    /// RESPONSE DATA FORMAT, 4 bits (always 2).
    pub response_data_format: u8,
    /// TPGS, 2 bits: asymmetric logical unit access support.
    pub tpgs: u8,
    pub protect: bool,
    /// CMDQUE: the full task management model (SAM-5 §8).
    pub cmdque: bool,
    /// T10 VENDOR IDENTIFICATION, at most 8 characters.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, at most 16 characters.
    pub product: String,
    /// PRODUCT REVISION LEVEL, at most 4 characters.
    pub revision: String,
    /// VERSION DESCRIPTORS, at most 8, zero ones left out.
    pub version_descriptors: Vec<u16>,
}

impl StandardInquiry {
    /// What busrig reports for a disk (or, with `present == false`, for a
    /// LUN that is not there: qualifier 011b, type 1Fh).
    pub fn disk(vendor: &str, product: &str, revision: &str, present: bool) -> StandardInquiry {
        StandardInquiry {
            peripheral_qualifier: if present { 0 } else { NO_LUN >> 5 },
            device_type: if present {
                DEVICE_TYPE_DISK
            } else {
                NO_LUN & 0x1f
            },
            removable: false,
            version: 0x06,
            hisup: true,
            response_data_format: 2,
            tpgs: 0,
            protect: false,
            cmdque: true,
            vendor: vendor.to_string(),
            product: product.to_string(),
            revision: revision.to_string(),
            version_descriptors: VERSION_DESCRIPTORS.to_vec(),
        }
    }

    /// The 96-byte form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 96];
        b[0] = (self.peripheral_qualifier << 5) | (self.device_type & 0x1f);
        b[1] = u8::from(self.removable) << 7;
        b[2] = self.version;
        b[3] = (u8::from(self.hisup) << 4) | (self.response_data_format & 0x0f);
        b[4] = (b.len() - 5) as u8;
        b[5] = ((self.tpgs & 0x03) << 4) | u8::from(self.protect);
        b[7] = u8::from(self.cmdque) << 1;
        put_ascii(&mut b[8..16], &self.vendor);
        put_ascii(&mut b[16..32], &self.product);
        put_ascii(&mut b[32..36], &self.revision);
        for (i, d) in self.version_descriptors.iter().take(8).enumerate() {
            b[58 + 2 * i..60 + 2 * i].copy_from_slice(&d.to_be_bytes());
        }
        b
    }

    /// Decodes the first 36 bytes, and the version descriptors if they
    /// arrived: a target may cut the data to the allocation length
    /// (SPC-4 §4.2.5.6).
    pub fn decode(b: &[u8]) -> Result<StandardInquiry, InquiryDecodeError> {
        if b.len() < 36 {
            return Err(InquiryDecodeError::Short {
                what: "standard INQUIRY data",
                need: 36,
                got: b.len(),
            });
        }
        let version_descriptors = b
            .get(58..74.min(b.len()))
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .filter(|&d| d != 0)
            .collect();
        Ok(StandardInquiry {
            peripheral_qualifier: b[0] >> 5,
            device_type: b[0] & 0x1f,
            removable: b[1] & 0x80 != 0,
            version: b[2],
            hisup: b[3] & 0x10 != 0,
            response_data_format: b[3] & 0x0f,
            tpgs: (b[5] >> 4) & 0x03,
            protect: b[5] & 0x01 != 0,
            cmdque: b[7] & 0x02 != 0,
            vendor: ascii_field(&b[8..16]),
            product: ascii_field(&b[16..32]),
            revision: ascii_field(&b[32..36]),
            version_descriptors,
        })
    }
}

fn page(code: u8, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + body.len());
    b.extend_from_slice(&[DEVICE_TYPE_DISK, code]);
    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
    b.extend_from_slice(body);
    b
}

/// VPD 00h: the pages above.
pub fn supported_pages() -> Vec<u8> {
    page(vpd::SUPPORTED_PAGES, vpd::ALL)
}

/// VPD 80h: unit serial number (SPC-4 §7.8.15).
pub fn unit_serial(serial: &str) -> Vec<u8> {
    let mut s = vec![0u8; serial.len()];
    put_ascii(&mut s, serial);
    page(vpd::UNIT_SERIAL_NUMBER, &s)
}

/// What the device identification page says about the logical unit and
/// the target port the command arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIds<'a> {
    /// NAA IEEE Registered Extended identifier (NAA 6), 16 bytes.
    pub naa: [u8; 16],
    pub vendor: &'a str,
    pub serial: &'a str,
    pub target_name: &'a str,
    pub tpgt: u16,
    pub relative_port: u16,
    pub port_group: u16,
}

/// Designators name iSCSI with the SCSI protocol identifier (SPC-4 Table 362).
use super::pr::PROTOCOL_ISCSI;

/// One designation descriptor (SPC-4 §7.8.6.1, Table 467):
///
/// ```text
/// byte 0  PROTOCOL IDENTIFIER(7..4) | CODE SET(3..0)
/// byte 1  PIV(7) | ASSOCIATION(5..4) | DESIGNATOR TYPE(3..0)
/// byte 3  DESIGNATOR LENGTH
/// ```
fn designator(out: &mut Vec<u8>, code_set: u8, piv_assoc: u8, ty: u8, d: &[u8]) {
    let proto = if piv_assoc & 0x80 != 0 {
        PROTOCOL_ISCSI << 4
    } else {
        0
    };
    out.extend_from_slice(&[proto | code_set, piv_assoc | ty, 0, d.len() as u8]);
    out.extend_from_slice(d);
}

/// A SCSI name string designator value: UTF-8, null terminated, padded to
/// a multiple of four bytes (SPC-4 §7.8.6.11).
fn scsi_name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v.resize(v.len().div_ceil(4) * 4, 0);
    v
}

/// VPD 83h: device identification (SPC-4 §7.8.6), with the designators an
/// iSCSI target usually gives: the logical unit's NAA and T10 vendor ID,
/// the target port's relative port and name, its target port group, and
/// the target device's name.
pub fn device_identification(ids: &DeviceIds<'_>) -> Vec<u8> {
    const ASSOC_LU: u8 = 0x00;
    const ASSOC_PORT: u8 = 0x90; // PIV + target port
    const ASSOC_DEVICE: u8 = 0xa0; // PIV + target device
    let mut d = Vec::new();
    designator(&mut d, 1, ASSOC_LU, 3, &ids.naa);
    let mut t10 = vec![0u8; 8];
    put_ascii(&mut t10, ids.vendor);
    t10.extend_from_slice(ids.serial.as_bytes());
    designator(&mut d, 2, ASSOC_LU, 1, &t10);
    designator(
        &mut d,
        1,
        ASSOC_PORT,
        4,
        &[
            0,
            0,
            (ids.relative_port >> 8) as u8,
            ids.relative_port as u8,
        ],
    );
    designator(
        &mut d,
        1,
        ASSOC_PORT,
        5,
        &[0, 0, (ids.port_group >> 8) as u8, ids.port_group as u8],
    );
    let port = format!("{},t,0x{:04x}", ids.target_name, ids.tpgt);
    designator(&mut d, 3, ASSOC_PORT, 8, &scsi_name(&port));
    designator(&mut d, 3, ASSOC_DEVICE, 8, &scsi_name(ids.target_name));
    page(vpd::DEVICE_IDENTIFICATION, &d)
}

/// Builds an NAA 6 (IEEE Registered Extended) identifier (SPC-4 §7.8.6.6.5):
///
/// ```text
/// NAA(4)=6 | IEEE COMPANY_ID(24) | VENDOR SPECIFIC IDENTIFIER(36) | EXTENSION(64)
/// ```
pub fn naa6(company_id: u32, vendor_id: u64, extension: u64) -> [u8; 16] {
    let hi: u64 =
        (6u64 << 60) | (u64::from(company_id & 0xff_ffff) << 36) | (vendor_id & 0xf_ffff_ffff);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&extension.to_be_bytes());
    b
}

/// Contents of the Block Limits page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLimits {
    pub max_compare_and_write: u8,
    pub optimal_granularity: u16,
    pub max_transfer: u32,
    pub optimal_transfer: u32,
    pub max_prefetch: u32,
    pub max_unmap_lba_count: u32,
    pub max_unmap_descriptors: u32,
    pub optimal_unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT, reported valid (UGAVALID) when set: the
    /// first LBA of the first whole unmap granule.
    pub unmap_granularity_alignment: Option<u32>,
    pub max_write_same: u64,
    /// WRITE ATOMIC(16) limits (SBC-4 §6.6.4), in blocks: the longest
    /// atomic write, its LBA alignment and length granularity; 0 for none.
    pub max_atomic_transfer: u32,
    pub atomic_alignment: u32,
    pub atomic_granularity: u32,
}

/// VPD B0h: block limits (SBC-3 §6.5.3), page length 3Ch. WSNZ is clear:
/// WRITE SAME with zero blocks means "to the end of the medium", which
/// MAXIMUM WRITE SAME LENGTH still bounds.
pub fn block_limits(l: &BlockLimits) -> Vec<u8> {
    let mut b = vec![0u8; 0x3c];
    b[1] = l.max_compare_and_write;
    b[2..4].copy_from_slice(&l.optimal_granularity.to_be_bytes());
    b[4..8].copy_from_slice(&l.max_transfer.to_be_bytes());
    b[8..12].copy_from_slice(&l.optimal_transfer.to_be_bytes());
    b[12..16].copy_from_slice(&l.max_prefetch.to_be_bytes());
    b[16..20].copy_from_slice(&l.max_unmap_lba_count.to_be_bytes());
    b[20..24].copy_from_slice(&l.max_unmap_descriptors.to_be_bytes());
    b[24..28].copy_from_slice(&l.optimal_unmap_granularity.to_be_bytes());
    if let Some(a) = l.unmap_granularity_alignment {
        // UGAVALID is bit 7 of page byte 32; the alignment its low 31 bits.
        b[28..32].copy_from_slice(&(a & 0x7fff_ffff | 0x8000_0000).to_be_bytes());
    }
    b[32..40].copy_from_slice(&l.max_write_same.to_be_bytes());
    // Page bytes 44-55; no atomic boundaries (bytes 56-63 zero).
    b[40..44].copy_from_slice(&l.max_atomic_transfer.to_be_bytes());
    b[44..48].copy_from_slice(&l.atomic_alignment.to_be_bytes());
    b[48..52].copy_from_slice(&l.atomic_granularity.to_be_bytes());
    page(vpd::BLOCK_LIMITS, &b)
}

/// VPD B1h: block device characteristics (SBC-3 §6.5.2): a non-rotating
/// medium (rotation rate 1), form factor not reported; WABEREQ 01b (SBC-4
/// §6.6.2): after a SANITIZE BLOCK ERASE, reads succeed (and return
/// zeros, as deallocated blocks do).
pub fn block_device_characteristics() -> Vec<u8> {
    let mut b = vec![0u8; 0x3c];
    b[1] = 0x01;
    b[3] = 0x40;
    page(vpd::BLOCK_DEVICE_CHARACTERISTICS, &b)
}

/// VPD B2h: logical block provisioning (SBC-3 §6.5.4): UNMAP and WRITE SAME
/// (10 and 16) with UNMAP deallocate, deallocated blocks read as zeros
/// (LBPRZ), no anchored state (ANC_SUP 0), thin provisioned (type 010b).
pub fn logical_block_provisioning() -> Vec<u8> {
    page(
        vpd::LOGICAL_BLOCK_PROVISIONING,
        &[0x00, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0x00],
    )
}

/// Standard INQUIRY as `busrig disk --json` prints it (SPC-4 §6.6.2), with
/// the device type's name.
impl serde::Serialize for StandardInquiry {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("StandardInquiry", 11)?;
        st.serialize_field("peripheral_qualifier", &self.peripheral_qualifier)?;
        st.serialize_field("device_type", &self.device_type)?;
        st.serialize_field("device_type_name", device_type_name(self.device_type))?;
        st.serialize_field("removable", &self.removable)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("response_data_format", &self.response_data_format)?;
        st.serialize_field("tpgs", &self.tpgs)?;
        st.serialize_field("protect", &self.protect)?;
        st.serialize_field("vendor", &self.vendor)?;
        st.serialize_field("product", &self.product)?;
        st.serialize_field("revision", &self.revision)?;
        st.end()
    }
}

/// What a PERIPHERAL QUALIFIER says about the LUN (SPC-4 §6.6.2, Table 140).
pub fn peripheral_qualifier_name(q: u8) -> &'static str {
    match q {
        0 => "a logical unit is at this LUN",
        1 => "a logical unit could be at this LUN but none is connected",
        3 => "no logical unit can be at this LUN",
        _ => "reserved",
    }
}

impl StandardInquiry {
    /// Whether a logical unit is there: PERIPHERAL QUALIFIER 000b. Any
    /// other qualifier means the target answered for a LUN without one.
    pub fn logical_unit_present(&self) -> bool {
        self.peripheral_qualifier == 0
    }
}

/// Standard INQUIRY for people: vendor, product, revision, device type
/// and version, one per line; first, when no logical unit is there, the
/// peripheral qualifier that says so.
impl std::fmt::Display for StandardInquiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.logical_unit_present() {
            writeln!(
                f,
                "peripheral qualifier: {} ({})",
                self.peripheral_qualifier,
                peripheral_qualifier_name(self.peripheral_qualifier)
            )?;
        }
        write!(
            f,
            "vendor: {}\nproduct: {}\nrevision: {}\ndevice type: {} ({})\nversion: {:#04x}",
            self.vendor,
            self.product,
            self.revision,
            self.device_type,
            device_type_name(self.device_type),
            self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_json_names_the_device_type() {
        let i = StandardInquiry::disk("BUSRIG", "QUORUM DISK", "0001", true);
        assert_eq!(
            serde_json::to_value(&i).unwrap(),
            serde_json::json!({
                "peripheral_qualifier": 0,
                "device_type": 0,
                "device_type_name": "direct access block device",
                "removable": false,
                "version": 6,
                "response_data_format": 2,
                "tpgs": 0,
                "protect": false,
                "vendor": "BUSRIG",
                "product": "QUORUM DISK",
                "revision": "0001",
            })
        );
    }

    #[test]
    fn standard_inquiry_layout() {
        let b = StandardInquiry::disk("BUSRIG", "shared disk", "0.1", true).encode();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02]);
        assert_eq!(&b[8..16], b"BUSRIG  ");
        assert_eq!(&b[16..32], b"shared disk     ");
        assert_eq!(&b[32..36], b"0.1 ");
        assert_eq!(
            &b[58..66],
            &[0x00, 0xa0, 0x04, 0x60, 0x04, 0xc0, 0x09, 0x60]
        );
    }

    #[test]
    fn standard_inquiry_decodes_what_it_encodes() {
        let mut i = StandardInquiry::disk("BUSRIG", "shared disk", "0.1", true);
        i.removable = true;
        let b = i.encode();
        assert_eq!(b[1], 0x80, "RMB is bit 7 of byte 1");
        assert_eq!(StandardInquiry::decode(&b), Ok(i.clone()));
        // Cut to 36 bytes: no version descriptors arrive.
        let cut = StandardInquiry::decode(&b[..36]).unwrap();
        assert_eq!(cut.version_descriptors, Vec::<u16>::new());
        assert_eq!(cut.vendor, "BUSRIG");
        assert_eq!(
            StandardInquiry::decode(&b[..35]),
            Err(InquiryDecodeError::Short {
                what: "standard INQUIRY data",
                need: 36,
                got: 35
            })
        );
    }

    #[test]
    fn ascii_fields_lose_their_padding() {
        assert_eq!(ascii_field(b"  QUORUM DISK \0\0"), "QUORUM DISK");
        assert_eq!(device_type_name(0x00), "direct access block device");
        assert_eq!(device_type_name(0x1f), "unknown or no device type");
    }

    #[test]
    fn absent_lun_inquiry_qualifier() {
        let b = StandardInquiry::disk("BUSRIG", "x", "1", false).encode();
        assert_eq!(b[0], 0x7f);
        let i = StandardInquiry::decode(&b).unwrap();
        assert!(!i.logical_unit_present());
        assert!(
            i.to_string()
                .starts_with("peripheral qualifier: 3 (no logical unit can be at this LUN)\n"),
            "{i}"
        );
        let present = StandardInquiry::disk("BUSRIG", "x", "1", true);
        assert!(present.logical_unit_present());
        assert!(!present.to_string().contains("qualifier"));
    }

    #[test]
    fn non_ascii_is_replaced() {
        let b = StandardInquiry::disk("BÜS", "p", "r", true).encode();
        assert!(b[8..16].iter().all(|c| (0x20..=0x7e).contains(c)));
    }

    #[test]
    fn supported_pages_bytes() {
        assert_eq!(
            supported_pages(),
            vec![0, 0, 0, 7, 0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2]
        );
    }

    #[test]
    fn serial_page_bytes() {
        assert_eq!(unit_serial("ab1"), vec![0, 0x80, 0, 3, b'a', b'b', b'1']);
    }

    #[test]
    fn naa6_layout() {
        let n = naa6(0x123456, 0xa_bcde_f012, 0x1122_3344_5566_7788);
        assert_eq!(
            n,
            [
                0x61, 0x23, 0x45, 0x6a, 0xbc, 0xde, 0xf0, 0x12, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                0x77, 0x88
            ]
        );
    }

    #[test]
    fn device_identification_designators() {
        let ids = DeviceIds {
            naa: [0x60; 16],
            vendor: "BUSRIG",
            serial: "s1",
            target_name: "iqn.t",
            tpgt: 1,
            relative_port: 1,
            port_group: 0,
        };
        let p = device_identification(&ids);
        assert_eq!(&p[..2], &[0, 0x83]);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len() - 4);
        // First designator: binary, LU association, NAA, 16 bytes.
        assert_eq!(&p[4..8], &[0x01, 0x03, 0x00, 16]);
        assert_eq!(p[8] >> 4, 6);
        // T10 vendor id: ASCII, vendor padded to 8 then serial.
        assert_eq!(&p[24..28], &[0x02, 0x01, 0x00, 10]);
        assert_eq!(&p[28..38], b"BUSRIG  s1");
        // Relative target port: iSCSI, PIV, target port association.
        assert_eq!(&p[38..46], &[0x51, 0x94, 0, 4, 0, 0, 0, 1]);
        // Target port group.
        assert_eq!(&p[46..54], &[0x51, 0x95, 0, 4, 0, 0, 0, 0]);
        // Target port name "iqn.t,t,0x0001" + NUL, padded to 16.
        assert_eq!(&p[54..58], &[0x53, 0x98, 0, 16]);
        assert_eq!(&p[58..72], b"iqn.t,t,0x0001");
        // Target device name.
        assert_eq!(&p[74..78], &[0x53, 0xa8, 0, 8]);
        assert_eq!(&p[78..84], b"iqn.t\0");
    }

    #[test]
    fn block_limits_bytes() {
        let l = BlockLimits {
            max_compare_and_write: 255,
            optimal_granularity: 1,
            max_transfer: 0x4000,
            optimal_transfer: 0x800,
            max_prefetch: 0x4000,
            max_unmap_lba_count: 0x40000,
            max_unmap_descriptors: 2048,
            optimal_unmap_granularity: 8,
            unmap_granularity_alignment: None,
            max_write_same: 0x10000,
            max_atomic_transfer: 0x800,
            atomic_alignment: 8,
            atomic_granularity: 8,
        };
        let p = block_limits(&l);
        assert_eq!(p.len(), 64);
        assert_eq!(&p[32..36], &[0, 0, 0, 0], "UGAVALID clear");
        let aligned = block_limits(&BlockLimits {
            unmap_granularity_alignment: Some(0),
            ..l
        });
        assert_eq!(&aligned[32..36], &[0x80, 0, 0, 0], "UGAVALID, alignment 0");
        assert_eq!(&p[..8], &[0, 0xb0, 0, 0x3c, 0x00, 255, 0, 1]);
        assert_eq!(&p[8..12], &[0, 0, 0x40, 0]);
        assert_eq!(&p[20..24], &[0, 4, 0, 0]);
        assert_eq!(&p[24..28], &[0, 0, 8, 0]);
        assert_eq!(&p[36..44], &[0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(&p[44..56], &[0, 0, 8, 0, 0, 0, 0, 8, 0, 0, 0, 8]);
    }

    #[test]
    fn provisioning_and_characteristics() {
        assert_eq!(
            logical_block_provisioning(),
            vec![0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]
        );
        let c = block_device_characteristics();
        assert_eq!(&c[..8], &[0, 0xb1, 0, 0x3c, 0, 1, 0, 0x40]);
    }

    #[test]
    fn inquiry_reads_for_people() {
        let i = StandardInquiry::disk("BUSRIG", "QUORUM DISK", "0001", true);
        let text = i.to_string();
        assert!(
            text.starts_with("vendor: BUSRIG\nproduct: QUORUM DISK\nrevision: 0001\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("\ndevice type: 0 ({})\n", device_type_name(0))),
            "{text}"
        );
    }
}
