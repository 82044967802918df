//! EXTENDED COPY(LID1) parameter data (SPC-4 §6.4), RECEIVE COPY RESULTS
//! parameter data (SPC-4 §6.18) and the Third-party Copy VPD page
//! (SPC-4 §7.8.17), for block-to-block copies between logical units named
//! by NAA identification descriptors.
//!
//! ```text
//! parameter list header (16 bytes):
//!   byte 0     LIST IDENTIFIER
//!   byte 1     STR(5) | LIST ID USAGE(4..3) | PRIORITY(2..0)
//!   bytes 2-3  CSCD (target) DESCRIPTOR LIST LENGTH
//!   bytes 4-7  reserved
//!   bytes 8-11 SEGMENT DESCRIPTOR LIST LENGTH
//!   bytes 12-15 INLINE DATA LENGTH
//! identification CSCD descriptor E4h (32 bytes):
//!   byte 0     E4h | byte 1 LU ID TYPE(7..6) NUL(5) PERIPHERAL DEVICE TYPE(4..0)
//!   bytes 2-3  RELATIVE INITIATOR PORT IDENTIFIER
//!   bytes 4-27 designation descriptor: CODE SET | ASSOCIATION, TYPE |
//!              reserved | LENGTH (<= 20) | DESIGNATOR
//!   bytes 28-31 block device parameters: PAD(2) | DISK BLOCK LENGTH (3 bytes)
//! block device to block device segment descriptor 02h (28 bytes):
//!   byte 0     02h | byte 1 DC(1) CAT(0) | bytes 2-3 DESCRIPTOR LENGTH (0018h)
//!   bytes 4-5  SOURCE CSCD DESCRIPTOR INDEX | bytes 6-7 DESTINATION INDEX
//!   bytes 8-9  reserved | bytes 10-11 BLOCK DEVICE NUMBER OF BLOCKS
//!   bytes 12-19 SOURCE BLOCK DEVICE LBA | bytes 20-27 DESTINATION LBA
//! ```

use super::cdb::{be16, be32, be64};
use super::sense::{Asc, Sense};

/// Length of the parameter list header.
pub const HEADER_LEN: usize = 16;
/// Length of the CSCD descriptors with type codes E0h..E9h.
pub const CSCD_DESCRIPTOR_LEN: usize = 32;
/// Length of the longer CSCD descriptors (EAh IPv6, EBh IP copy service).
const LONG_CSCD_DESCRIPTOR_LEN: usize = 64;
/// CSCD descriptor type code: identification descriptor.
pub const IDENTIFICATION_CSCD: u8 = 0xe4;
/// Segment descriptor type code: block device to block device.
pub const BLOCK_TO_BLOCK: u8 = 0x02;
/// Length of a block to block segment descriptor.
pub const BLOCK_TO_BLOCK_LEN: usize = 28;

/// What the copy manager accepts; RECEIVE COPY RESULTS OPERATING
/// PARAMETERS and the Third-party Copy VPD page report the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    pub max_cscd_descriptors: u16,
    pub max_segment_descriptors: u16,
    /// Longest CSCD plus segment descriptor lists, in bytes.
    pub max_descriptor_list_length: u32,
    /// Largest segment, in bytes.
    pub max_segment_length: u32,
    /// Copies the copy manager runs at once.
    pub total_concurrent_copies: u16,
    /// Held data limit, in bytes (copy status and failed segment details).
    pub held_data_limit: u32,
}

/// LIST ID USAGE (SPC-4 §6.4.3.2, Table 111).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListIdUsage {
    /// 00b: hold copy status and failed segment details for RECEIVE COPY
    /// RESULTS; the list identifier is unique.
    Hold,
    /// 10b: hold nothing; the list identifier is unique.
    NoHold,
    /// 11b: hold nothing; the list identifier is not checked.
    Discard,
}

impl ListIdUsage {
    fn from_bits(b: u8) -> Option<ListIdUsage> {
        match b & 3 {
            0 => Some(ListIdUsage::Hold),
            2 => Some(ListIdUsage::NoHold),
            3 => Some(ListIdUsage::Discard),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            ListIdUsage::Hold => 0,
            ListIdUsage::NoHold => 2,
            ListIdUsage::Discard => 3,
        }
    }
}

/// An identification CSCD descriptor (type E4h): the logical unit is the
/// one whose Device Identification VPD page has this designator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentificationCscd {
    /// LU ID TYPE, NUL and PERIPHERAL DEVICE TYPE (byte 1), as sent.
    pub byte1: u8,
    pub relative_initiator_port: u16,
    pub code_set: u8,
    pub association: u8,
    pub designator_type: u8,
    pub designator: Vec<u8>,
    /// PAD (byte 28, bit 2).
    pub pad: bool,
    /// DISK BLOCK LENGTH.
    pub block_length: u32,
}

impl IdentificationCscd {
    /// The peripheral device type the descriptor names.
    pub fn peripheral_type(&self) -> u8 {
        self.byte1 & 0x1f
    }

    /// Whether the designator is an NAA identifier of a logical unit.
    pub fn names_lu_by_naa(&self) -> bool {
        self.designator_type == 3 && self.association == 0
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut d = [0u8; CSCD_DESCRIPTOR_LEN];
        d[0] = IDENTIFICATION_CSCD;
        d[1] = self.byte1;
        d[2..4].copy_from_slice(&self.relative_initiator_port.to_be_bytes());
        d[4] = self.code_set & 0x0f;
        d[5] = ((self.association & 3) << 4) | (self.designator_type & 0x0f);
        let n = self.designator.len().min(20);
        d[7] = n as u8;
        d[8..8 + n].copy_from_slice(&self.designator[..n]);
        d[28] = u8::from(self.pad) << 2;
        d[29..32].copy_from_slice(&self.block_length.to_be_bytes()[1..]);
        out.extend_from_slice(&d);
    }

    fn decode(d: &[u8], at: usize) -> Result<IdentificationCscd, Sense> {
        let len = usize::from(d[7]);
        if len > 20 {
            return Err(param_field(at + 7));
        }
        Ok(IdentificationCscd {
            byte1: d[1],
            relative_initiator_port: be16(&d[2..]),
            code_set: d[4] & 0x0f,
            association: (d[5] >> 4) & 3,
            designator_type: d[5] & 0x0f,
            designator: d[8..8 + len].to_vec(),
            pad: d[28] & 0x04 != 0,
            block_length: be32(&[0, d[29], d[30], d[31]]),
        })
    }
}

/// A block device to block device segment (type 02h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSegment {
    /// DC: NUMBER OF BLOCKS counts destination blocks.
    pub dc: bool,
    /// CAT: an inexact segment may leave a residue.
    pub cat: bool,
    pub source: u16,
    pub destination: u16,
    pub blocks: u16,
    pub source_lba: u64,
    pub destination_lba: u64,
}

impl BlockSegment {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut d = [0u8; BLOCK_TO_BLOCK_LEN];
        d[0] = BLOCK_TO_BLOCK;
        d[1] = (u8::from(self.dc) << 1) | u8::from(self.cat);
        d[2..4].copy_from_slice(&((BLOCK_TO_BLOCK_LEN - 4) as u16).to_be_bytes());
        d[4..6].copy_from_slice(&self.source.to_be_bytes());
        d[6..8].copy_from_slice(&self.destination.to_be_bytes());
        d[10..12].copy_from_slice(&self.blocks.to_be_bytes());
        d[12..20].copy_from_slice(&self.source_lba.to_be_bytes());
        d[20..28].copy_from_slice(&self.destination_lba.to_be_bytes());
        out.extend_from_slice(&d);
    }

    fn decode(d: &[u8]) -> BlockSegment {
        BlockSegment {
            dc: d[1] & 0x02 != 0,
            cat: d[1] & 0x01 != 0,
            source: be16(&d[4..]),
            destination: be16(&d[6..]),
            blocks: be16(&d[10..]),
            source_lba: be64(&d[12..]),
            destination_lba: be64(&d[20..]),
        }
    }
}

/// An EXTENDED COPY(LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyParams {
    pub list_id: u8,
    pub usage: ListIdUsage,
    pub priority: u8,
    pub cscds: Vec<IdentificationCscd>,
    pub segments: Vec<BlockSegment>,
}

fn param_field(byte: usize) -> Sense {
    Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST).param_field(byte as u16, None)
}

fn length_error() -> Sense {
    Sense::new(Asc::PARAMETER_LIST_LENGTH_ERROR)
}

impl CopyParams {
    /// The parameter list bytes (no inline data).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = self.list_id;
        b[1] = (self.usage.bits() << 3) | (self.priority & 7);
        for c in &self.cscds {
            c.encode(&mut b);
        }
        let cscd_len = b.len() - HEADER_LEN;
        for s in &self.segments {
            s.encode(&mut b);
        }
        let seg_len = b.len() - HEADER_LEN - cscd_len;
        b[2..4].copy_from_slice(&(cscd_len as u16).to_be_bytes());
        b[8..12].copy_from_slice(&(seg_len as u32).to_be_bytes());
        b
    }

    /// Decodes and checks a parameter list against `limits`, in the order
    /// SPC-4 §6.4.3 lists the checks: lengths first (PARAMETER LIST LENGTH
    /// ERROR), then descriptor counts (TOO MANY ... DESCRIPTORS), then
    /// each descriptor's type code and fields.
    pub fn decode(b: &[u8], limits: &CopyLimits) -> Result<CopyParams, Sense> {
        if b.len() < HEADER_LEN {
            return Err(length_error());
        }
        if b[1] & 0x20 != 0 {
            // STR: sequential striped, for stream devices only.
            return Err(param_field(1));
        }
        let usage = ListIdUsage::from_bits(b[1] >> 3).ok_or_else(|| param_field(1))?;
        let cscd_len = usize::from(be16(&b[2..]));
        let seg_len = be32(&b[8..]) as usize;
        let inline_len = be32(&b[12..]) as usize;
        if cscd_len + seg_len > limits.max_descriptor_list_length as usize {
            return Err(length_error());
        }
        if inline_len != 0 {
            // No segment type busrig supports takes inline data.
            return Err(Sense::new(Asc::INLINE_DATA_LENGTH_EXCEEDED).param_field(12, None));
        }
        if b.len() < HEADER_LEN + cscd_len + seg_len {
            return Err(length_error());
        }
        if cscd_len % CSCD_DESCRIPTOR_LEN != 0 {
            return Err(length_error());
        }
        if cscd_len / CSCD_DESCRIPTOR_LEN > usize::from(limits.max_cscd_descriptors) {
            return Err(Sense::new(Asc::TOO_MANY_TARGET_DESCRIPTORS));
        }
        let cscd_list = &b[HEADER_LEN..HEADER_LEN + cscd_len];
        let seg_list = &b[HEADER_LEN + cscd_len..HEADER_LEN + cscd_len + seg_len];
        // Segment descriptors carry their own lengths: count them first.
        let mut bounds = Vec::new();
        let mut at = 0;
        while at < seg_list.len() {
            if seg_list.len() - at < 4 {
                return Err(length_error());
            }
            let n = 4 + usize::from(be16(&seg_list[at + 2..]));
            if at + n > seg_list.len() {
                return Err(length_error());
            }
            bounds.push((at, n));
            at += n;
        }
        if bounds.len() > usize::from(limits.max_segment_descriptors) {
            return Err(Sense::new(Asc::TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        let mut cscds = Vec::new();
        let mut at = 0;
        while at < cscd_list.len() {
            let ty = cscd_list[at];
            let len = if matches!(ty, 0xea | 0xeb) {
                LONG_CSCD_DESCRIPTOR_LEN
            } else {
                CSCD_DESCRIPTOR_LEN
            };
            if ty != IDENTIFICATION_CSCD {
                return Err(Sense::new(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
                    .param_field((HEADER_LEN + at) as u16, None));
            }
            let d = &cscd_list[at..at + len];
            cscds.push(IdentificationCscd::decode(d, HEADER_LEN + at)?);
            at += len;
        }
        let mut segments = Vec::new();
        for (at, n) in bounds {
            let d = &seg_list[at..at + n];
            let pos = HEADER_LEN + cscd_len + at;
            if d[0] != BLOCK_TO_BLOCK {
                return Err(Sense::new(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
                    .param_field(pos as u16, None));
            }
            if n != BLOCK_TO_BLOCK_LEN {
                return Err(param_field(pos + 2));
            }
            segments.push(BlockSegment::decode(d));
        }
        Ok(CopyParams {
            list_id: b[0],
            usage,
            priority: b[1] & 7,
            cscds,
            segments,
        })
    }
}

/// RECEIVE COPY RESULTS, OPERATING PARAMETERS (SPC-4 §6.18.4): the
/// copy manager's limits, and the descriptor type codes it implements.
///
/// ```text
/// bytes 0-3 AVAILABLE DATA | byte 4 SNLID(0) | bytes 8-9 MAXIMUM CSCD
/// DESCRIPTOR COUNT | 10-11 MAXIMUM SEGMENT DESCRIPTOR COUNT | 12-15 MAXIMUM
/// DESCRIPTOR LIST LENGTH | 16-19 MAXIMUM SEGMENT LENGTH | 20-23 MAXIMUM
/// INLINE DATA LENGTH | 24-27 HELD DATA LIMIT | 28-31 MAXIMUM STREAM DEVICE
/// TRANSFER SIZE | 34-35 TOTAL CONCURRENT COPIES | 36 MAXIMUM CONCURRENT
/// COPIES | 37 DATA SEGMENT GRANULARITY (log2) | 38 INLINE DATA GRANULARITY
/// | 39 HELD DATA GRANULARITY | 43 IMPLEMENTED DESCRIPTOR LIST LENGTH |
/// 44.. the type codes
/// ```
pub fn operating_parameters(l: &CopyLimits) -> Vec<u8> {
    let codes = [BLOCK_TO_BLOCK, IDENTIFICATION_CSCD];
    let mut b = vec![0u8; 44];
    b[4] = 0x01; // SNLID: LIST ID USAGE 11b is supported.
    b[8..10].copy_from_slice(&l.max_cscd_descriptors.to_be_bytes());
    b[10..12].copy_from_slice(&l.max_segment_descriptors.to_be_bytes());
    b[12..16].copy_from_slice(&l.max_descriptor_list_length.to_be_bytes());
    b[16..20].copy_from_slice(&l.max_segment_length.to_be_bytes());
    b[24..28].copy_from_slice(&l.held_data_limit.to_be_bytes());
    b[34..36].copy_from_slice(&l.total_concurrent_copies.to_be_bytes());
    b[36] = l.total_concurrent_copies.min(255) as u8;
    // Granularities are log2 values: one byte each.
    b[43] = codes.len() as u8;
    b.extend_from_slice(&codes);
    let avail = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&avail.to_be_bytes());
    b
}

/// COPY MANAGER STATUS of COPY STATUS (SPC-4 §6.18.2, Table 350).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    InProgress,
    Completed,
    /// Completed with errors (the copy was aborted).
    Failed,
}

/// RECEIVE COPY RESULTS, COPY STATUS (SPC-4 §6.18.2).
///
/// ```text
/// bytes 0-3 AVAILABLE DATA (8) | byte 4 HDD(7) COPY MANAGER STATUS(6..0)
/// bytes 5-6 SEGMENTS PROCESSED | byte 7 TRANSFER COUNT UNITS (0: bytes,
/// n: 2^(10n) bytes) | bytes 8-11 TRANSFER COUNT
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStatus {
    pub state: CopyState,
    pub segments_processed: u16,
    /// Bytes written to copy destinations.
    pub bytes: u64,
}

impl CopyStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[3] = 8;
        b[4] = match self.state {
            CopyState::InProgress => 0x00,
            CopyState::Completed => 0x01,
            CopyState::Failed => 0x02,
        };
        b[5..7].copy_from_slice(&self.segments_processed.to_be_bytes());
        // The smallest unit in which the count fits 32 bits.
        let mut units = 0u8;
        let mut count = self.bytes;
        while count > u64::from(u32::MAX) {
            count >>= 10;
            units += 1;
        }
        b[7] = units;
        b[8..12].copy_from_slice(&(count as u32).to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<CopyStatus> {
        if b.len() < 12 || be32(b) < 8 {
            return None;
        }
        let state = match b[4] & 0x7f {
            0x00 => CopyState::InProgress,
            0x01 => CopyState::Completed,
            0x02 => CopyState::Failed,
            _ => return None,
        };
        Some(CopyStatus {
            state,
            segments_processed: be16(&b[5..]),
            bytes: u64::from(be32(&b[8..])) << (10 * u32::from(b[7].min(6))),
        })
    }
}

/// RECEIVE COPY RESULTS, FAILED SEGMENT DETAILS (SPC-4 §6.18.5) of a copy
/// that ended with CHECK CONDITION: the status and sense data it ended with.
///
/// ```text
/// bytes 0-3 AVAILABLE DATA | bytes 4-55 reserved | byte 56 COPY COMMAND
/// STATUS | byte 57 reserved | bytes 58-59 SENSE DATA LENGTH | 60.. SENSE DATA
/// ```
pub fn failed_segment_details(status: u8, sense: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[56] = status;
    b[58..60].copy_from_slice(&(sense.len() as u16).to_be_bytes());
    b.extend_from_slice(sense);
    let avail = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&avail.to_be_bytes());
    b
}

/// The Third-party Copy VPD page (SPC-4 §7.8.17) of a copy manager that
/// implements EXTENDED COPY(LID1) and RECEIVE COPY RESULTS: Supported
/// Commands, Parameter Data, Supported Descriptors, Supported CSCD IDs,
/// General Copy Operations and Held Data descriptors.
///
/// ```text
/// each descriptor: bytes 0-1 TYPE | bytes 2-3 LENGTH (n-3, a multiple of 4)
/// 0001h supported commands: byte 4 list length, then per command:
///       OPERATION CODE | SERVICE ACTION LIST LENGTH | SERVICE ACTIONS
/// 0004h parameter data: 8-9 MAX CSCD DESCRIPTORS | 10-11 MAX SEGMENT
///       DESCRIPTORS | 12-15 MAX DESCRIPTOR LIST LENGTH | 16-19 MAX INLINE DATA
/// 0008h supported descriptors: byte 4 list length, then type codes
/// 000Ch supported CSCD IDs: bytes 4-5 list length (none above 07FFh)
/// 8001h general copy operations: 4-7 TOTAL CONCURRENT COPIES | 8-11 MAX
///       IDENTIFIED CONCURRENT COPIES | 12-15 MAX SEGMENT LENGTH | 16-17
///       DATA SEGMENT / INLINE DATA GRANULARITY (log2)
/// C001h held data: 4-7 HELD DATA LIMIT | 8 HELD DATA GRANULARITY (log2)
/// ```
pub fn third_party_copy_page(l: &CopyLimits) -> Vec<u8> {
    fn descriptor(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
    let mut d = Vec::new();
    // EXTENDED COPY(LID1) (83h/00h) and RECEIVE COPY RESULTS (84h/00h,
    // 03h, 04h).
    let commands = [0x83, 1, 0x00, 0x84, 3, 0x00, 0x03, 0x04];
    let mut body = vec![commands.len() as u8];
    body.extend_from_slice(&commands);
    descriptor(&mut d, 0x0001, &body);
    let mut body = vec![0u8; 28];
    body[4..6].copy_from_slice(&l.max_cscd_descriptors.to_be_bytes());
    body[6..8].copy_from_slice(&l.max_segment_descriptors.to_be_bytes());
    body[8..12].copy_from_slice(&l.max_descriptor_list_length.to_be_bytes());
    descriptor(&mut d, 0x0004, &body);
    descriptor(&mut d, 0x0008, &[2, BLOCK_TO_BLOCK, IDENTIFICATION_CSCD]);
    descriptor(&mut d, 0x000c, &[0, 0]);
    let mut body = vec![0u8; 28];
    body[0..4].copy_from_slice(&u32::from(l.total_concurrent_copies).to_be_bytes());
    body[4..8].copy_from_slice(&u32::from(l.total_concurrent_copies).to_be_bytes());
    body[8..12].copy_from_slice(&l.max_segment_length.to_be_bytes());
    descriptor(&mut d, 0x8001, &body);
    let mut body = vec![0u8; 28];
    body[0..4].copy_from_slice(&l.held_data_limit.to_be_bytes());
    descriptor(&mut d, 0xc001, &body);
    let mut page = vec![0x00, super::inquiry::vpd::THIRD_PARTY_COPY];
    page.extend_from_slice(&(d.len() as u16).to_be_bytes());
    page.extend_from_slice(&d);
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::SenseKey;

    const LIMITS: CopyLimits = CopyLimits {
        max_cscd_descriptors: 8,
        max_segment_descriptors: 64,
        max_descriptor_list_length: 8 * 32 + 64 * 28,
        max_segment_length: 1 << 20,
        total_concurrent_copies: 16,
        held_data_limit: 512,
    };

    fn cscd() -> IdentificationCscd {
        IdentificationCscd {
            byte1: 0,
            relative_initiator_port: 0,
            code_set: 1,
            association: 0,
            designator_type: 3,
            designator: (0..16).collect(),
            pad: false,
            block_length: 512,
        }
    }

    fn segment(blocks: u16) -> BlockSegment {
        BlockSegment {
            dc: false,
            cat: false,
            source: 0,
            destination: 0,
            blocks,
            source_lba: 0,
            destination_lba: 4096,
        }
    }

    fn params(cscds: usize, segments: usize) -> CopyParams {
        CopyParams {
            list_id: 1,
            usage: ListIdUsage::Hold,
            priority: 0,
            cscds: vec![cscd(); cscds],
            segments: vec![segment(8); segments],
        }
    }

    fn asc(r: Result<CopyParams, Sense>) -> (SenseKey, u8, u8) {
        let s = r.unwrap_err();
        (s.key, s.asc, s.ascq)
    }

    #[test]
    fn round_trip() {
        let p = params(2, 3);
        let b = p.encode();
        assert_eq!(b.len(), 16 + 2 * 32 + 3 * 28);
        assert_eq!(&b[2..4], &[0, 64]);
        assert_eq!(&b[8..12], &[0, 0, 0, 84]);
        assert_eq!(CopyParams::decode(&b, &LIMITS), Ok(p));
    }

    /// One row per check of SPC-4 §6.4.3, in the order libiscsi's
    /// ExtendedCopy tests rely on.
    #[test]
    fn parameter_list_checks() {
        let whole = params(1, 1).encode();
        // SPC-4 §6.4.1: a list shorter than its header and descriptors.
        assert_eq!(
            asc(CopyParams::decode(&whole[..47], &LIMITS)),
            (SenseKey::IllegalRequest, 0x1a, 0)
        );
        assert_eq!(
            asc(CopyParams::decode(&whole[..75], &LIMITS)),
            (SenseKey::IllegalRequest, 0x1a, 0)
        );
        assert_eq!(
            asc(CopyParams::decode(&whole[..10], &LIMITS)),
            (SenseKey::IllegalRequest, 0x1a, 0)
        );
        // SPC-4 §6.4.3.1: more CSCD or segment descriptors than allowed.
        let many_cscds = params(9, 1).encode();
        assert_eq!(
            asc(CopyParams::decode(&many_cscds, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0x06)
        );
        let many_segments = params(1, 65).encode();
        assert_eq!(
            asc(CopyParams::decode(&many_segments, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0x08)
        );
        // Past MAXIMUM DESCRIPTOR LIST LENGTH: a length error, checked first.
        let too_long = params(9, 65).encode();
        assert_eq!(
            asc(CopyParams::decode(&too_long, &LIMITS)),
            (SenseKey::IllegalRequest, 0x1a, 0)
        );
        // Unsupported descriptor type codes.
        let mut fc = whole.clone();
        fc[16] = 0xe0;
        assert_eq!(
            asc(CopyParams::decode(&fc, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0x07)
        );
        let mut stream = whole.clone();
        stream[48] = 0x03;
        assert_eq!(
            asc(CopyParams::decode(&stream, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0x09)
        );
        // LIST ID USAGE 01b is reserved; inline data is not supported.
        let mut usage = whole.clone();
        usage[1] = 1 << 3;
        assert_eq!(
            asc(CopyParams::decode(&usage, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0)
        );
        let mut inline = whole.clone();
        inline[15] = 4;
        inline.extend_from_slice(&[0; 4]);
        assert_eq!(
            asc(CopyParams::decode(&inline, &LIMITS)),
            (SenseKey::IllegalRequest, 0x26, 0x0b)
        );
    }

    #[test]
    fn copy_status_round_trip_and_units() {
        let s = CopyStatus {
            state: CopyState::Completed,
            segments_processed: 3,
            bytes: 1 << 20,
        };
        let b = s.encode();
        assert_eq!(&b[..8], &[0, 0, 0, 8, 1, 0, 3, 0]);
        assert_eq!(CopyStatus::decode(&b), Some(s));
        let big = CopyStatus {
            bytes: 1 << 40,
            ..s
        };
        let b = big.encode();
        assert_eq!(b[7], 1, "KiB units once bytes overflow 32 bits");
        assert_eq!(CopyStatus::decode(&b), Some(big));
    }

    #[test]
    fn operating_parameters_layout() {
        let b = operating_parameters(&LIMITS);
        assert_eq!(b.len(), 46);
        assert_eq!(be32(&b), 42);
        assert_eq!(be16(&b[8..]), 8);
        assert_eq!(be16(&b[10..]), 64);
        assert_eq!(be32(&b[12..]), 2048);
        assert_eq!(b[43], 2);
        assert_eq!(&b[44..], &[0x02, 0xe4]);
    }

    #[test]
    fn third_party_copy_page_descriptors() {
        let p = third_party_copy_page(&LIMITS);
        assert_eq!(&p[..2], &[0, 0x8f]);
        assert_eq!(usize::from(be16(&p[2..])), p.len() - 4);
        let mut types = Vec::new();
        let mut at = 4;
        while at < p.len() {
            let len = usize::from(be16(&p[at + 2..]));
            assert_eq!(len % 4, 0, "descriptor lengths are multiples of 4");
            types.push(be16(&p[at..]));
            at += 4 + len;
        }
        assert_eq!(at, p.len());
        assert_eq!(types, vec![0x0001, 0x0004, 0x0008, 0x000c, 0x8001, 0xc001]);
    }

    #[test]
    fn failed_segment_details_layout() {
        let b = failed_segment_details(0x02, &[0x70, 0, 0x0a]);
        assert_eq!(b.len(), 63);
        assert_eq!(be32(&b), 59);
        assert_eq!(b[56], 0x02);
        assert_eq!(&b[58..], &[0, 3, 0x70, 0, 0x0a]);
    }
}
