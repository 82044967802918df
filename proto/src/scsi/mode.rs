//! Mode parameters (SPC-4 §7.5, SBC-3 §6.4): MODE SENSE data and MODE
//! SELECT parameter lists for the caching (08h), control (0Ah) and
//! informational exceptions control (1Ch) pages.
//!
//! Mode parameter header(6) and header(10):
//!
//! ```text
//! (6)  byte 0 MODE DATA LENGTH | 1 MEDIUM TYPE | 2 DEVICE-SPECIFIC | 3 BLOCK DESCRIPTOR LENGTH
//! (10) bytes 0-1 MODE DATA LENGTH | 2 MEDIUM TYPE | 3 DEVICE-SPECIFIC | 4 LONGLBA(0)
//!      bytes 6-7 BLOCK DESCRIPTOR LENGTH
//! DEVICE-SPECIFIC for disks (SBC-3 §6.4.1): WP(7) | DPOFUA(4)
//! short block descriptor (8): NUMBER OF BLOCKS(4) | reserved | BLOCK LENGTH(3)
//! long block descriptor (16): NUMBER OF BLOCKS(8) | reserved(4) | BLOCK LENGTH(4)
//! ```
//!
//! Pages (byte 0 PS(7) SPF(6) PAGE CODE(5..0), byte 1 PAGE LENGTH):
//!
//! ```text
//! 08h caching, 20 bytes:       byte 2 WCE(2) RCD(0)
//! 0Ah control, 12 bytes:       byte 2 D_SENSE(2) | byte 3 QAM(7..4) QERR(2..1)
//!                              byte 4 SWP(3) | byte 5 TAS(6)
//!                              bytes 8-9 BUSY TIMEOUT PERIOD
//! 1Ch info exceptions, 12 bytes: byte 2 DEXCPT(3) | byte 3 MRIE(3..0)
//! ```

use super::cdb::{be16, be32, be64, PageControl};
use super::sense::{Asc, Sense};

pub const PAGE_CACHING: u8 = 0x08;
pub const PAGE_CONTROL: u8 = 0x0a;
pub const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1c;
/// Return all pages (SPC-4 §7.5.1).
pub const PAGE_ALL: u8 = 0x3f;
/// Pages in the order MODE SENSE returns them for 3Fh.
pub const PAGES: [u8; 3] = [PAGE_CACHING, PAGE_CONTROL, PAGE_INFORMATIONAL_EXCEPTIONS];

/// The changeable mode parameters of one logical unit. Everything else in
/// the pages is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeParams {
    /// Write cache enable (caching page). Clear: every write is written
    /// through, as if FUA were set (SBC-3 §6.4.5).
    pub wce: bool,
    /// Descriptor-format sense data (control page, SPC-4 §7.5.8).
    pub d_sense: bool,
    /// Software write protect (control page): the medium is read-only.
    pub swp: bool,
}

impl Default for ModeParams {
    fn default() -> Self {
        ModeParams {
            wce: true,
            d_sense: false,
            swp: false,
        }
    }
}

impl ModeParams {
    /// Which bits a MODE SELECT may change: all of the fields above.
    pub const CHANGEABLE: ModeParams = ModeParams {
        wce: true,
        d_sense: true,
        swp: true,
    };

    /// One page's bytes; `pc` must not be [`PageControl::Saved`] (saving is
    /// not supported).
    pub fn page(&self, code: u8, pc: PageControl) -> Option<Vec<u8>> {
        let v = match pc {
            PageControl::Current => *self,
            PageControl::Default | PageControl::Saved => ModeParams::default(),
            PageControl::Changeable => ModeParams::CHANGEABLE,
        };
        let fixed = pc != PageControl::Changeable;
        Some(match code {
            PAGE_CACHING => {
                let mut p = vec![0u8; 20];
                p[0] = PAGE_CACHING;
                p[1] = 0x12;
                if v.wce {
                    p[2] |= 0x04;
                }
                p
            }
            PAGE_CONTROL => {
                let mut p = vec![0u8; 12];
                p[0] = PAGE_CONTROL;
                p[1] = 0x0a;
                if v.d_sense {
                    p[2] |= 0x04;
                }
                if fixed {
                    // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
                    // allowed; QERR 0. TAS 1: a command aborted by another
                    // I_T nexus ends with TASK ABORTED status (SAM-5 §5.6).
                    // BUSY TIMEOUT PERIOD FFFFh: unlimited.
                    p[3] = 0x10;
                    p[5] = 0x40;
                    p[8] = 0xff;
                    p[9] = 0xff;
                }
                if v.swp {
                    p[4] |= 0x08;
                }
                p
            }
            PAGE_INFORMATIONAL_EXCEPTIONS => {
                let mut p = vec![0u8; 12];
                p[0] = PAGE_INFORMATIONAL_EXCEPTIONS;
                p[1] = 0x0a;
                if fixed {
                    // DEXCPT: no informational exception reporting.
                    p[2] = 0x08;
                }
                p
            }
            _ => return None,
        })
    }
}

/// What the mode parameter header and block descriptor say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeHeader {
    pub write_protect: bool,
    /// DPOFUA: DPO and FUA are supported in READ/WRITE CDBs.
    pub dpofua: bool,
    /// (number of blocks, block length); `None` when DBD is set.
    pub block_descriptor: Option<(u64, u32)>,
    /// LLBAA was set (MODE SENSE(10) only): use the 16-byte descriptor.
    pub long_lba: bool,
}

/// MODE SENSE(6) or (10) parameter data: header, block descriptor, pages.
pub fn mode_sense_data(ten: bool, h: &ModeHeader, pages: &[Vec<u8>]) -> Vec<u8> {
    let mut dev = 0u8;
    if h.write_protect {
        dev |= 0x80;
    }
    if h.dpofua {
        dev |= 0x10;
    }
    let mut bd = Vec::new();
    if let Some((blocks, len)) = h.block_descriptor {
        if ten && h.long_lba {
            bd.extend_from_slice(&blocks.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&len.to_be_bytes());
        } else {
            // SBC-3 §6.4.2: FFFFFFFFh when the capacity does not fit.
            let n = u32::try_from(blocks).unwrap_or(u32::MAX);
            bd.extend_from_slice(&n.to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&len.to_be_bytes()[1..]);
        }
    }
    let mut b = if ten {
        let mut h10 = vec![0, 0, 0, dev, u8::from(h.long_lba && !bd.is_empty()), 0];
        h10.extend_from_slice(&(bd.len() as u16).to_be_bytes());
        h10
    } else {
        vec![0, 0, dev, bd.len() as u8]
    };
    b.extend_from_slice(&bd);
    for p in pages {
        b.extend_from_slice(p);
    }
    if ten {
        let n = (b.len() - 2) as u16;
        b[..2].copy_from_slice(&n.to_be_bytes());
    } else {
        // MODE DATA LENGTH is one byte; our pages keep it well below 255.
        b[0] = (b.len() - 1) as u8;
    }
    b
}

/// Parses a MODE SELECT(6)/(10) parameter list against the current
/// parameters and returns the new ones. A change to a bit that is not
/// changeable, an unknown page, a wrong page length or a block descriptor
/// that would reformat the medium is INVALID FIELD IN PARAMETER LIST with a
/// field pointer (SPC-4 §6.9, §6.10); a list cut short is PARAMETER LIST
/// LENGTH ERROR.
pub fn parse_mode_select(
    ten: bool,
    data: &[u8],
    current: &ModeParams,
    blocks: u64,
    block_len: u32,
) -> Result<ModeParams, Sense> {
    let short = || Sense::new(Asc::PARAMETER_LIST_LENGTH_ERROR);
    let bad =
        |at: usize| Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST).param_field(at as u16, None);
    let (hlen, bdl, long) = if ten {
        if data.len() < 8 {
            return Err(short());
        }
        (8, be16(&data[6..]) as usize, data[4] & 1 != 0)
    } else {
        if data.len() < 4 {
            return Err(short());
        }
        (4, data[3] as usize, false)
    };
    // MEDIUM TYPE is 00h for disks (SBC-3 §6.4.1).
    if data[if ten { 2 } else { 1 }] != 0 {
        return Err(bad(if ten { 2 } else { 1 }));
    }
    if data.len() < hlen + bdl {
        return Err(short());
    }
    let want_bdl = if long { 16 } else { 8 };
    match bdl {
        0 => {}
        n if n == want_bdl => {
            let d = &data[hlen..hlen + bdl];
            let (n, len) = if long {
                (be64(d), be32(&d[12..]))
            } else {
                (u64::from(be32(d)), be32(&[0, d[5], d[6], d[7]]))
            };
            // Zero means "no change"; anything else must match, we cannot
            // reformat (SBC-3 §6.4.2).
            if n != 0
                && n != blocks
                && !(n == u64::from(u32::MAX) && !long && blocks > u64::from(u32::MAX))
            {
                return Err(bad(hlen));
            }
            if len != block_len {
                return Err(bad(hlen + if long { 12 } else { 5 }));
            }
        }
        _ => return Err(bad(if ten { 6 } else { 3 })),
    }
    let mut new = *current;
    let mut i = hlen + bdl;
    while i < data.len() {
        if data.len() < i + 2 {
            return Err(short());
        }
        let code = data[i] & 0x3f;
        if data[i] & 0x40 != 0 {
            // SPF: we have no subpages.
            return Err(bad(i));
        }
        let Some(cur) = current.page(code, PageControl::Current) else {
            return Err(bad(i));
        };
        let len = data[i + 1] as usize + 2;
        if len != cur.len() {
            return Err(bad(i + 1));
        }
        if data.len() < i + len {
            return Err(short());
        }
        let mask = ModeParams::CHANGEABLE
            .page(code, PageControl::Changeable)
            .expect("known page");
        let sent = &data[i..i + len];
        for j in 2..len {
            if (sent[j] ^ cur[j]) & !mask[j] != 0 {
                return Err(bad(i + j));
            }
        }
        match code {
            PAGE_CACHING => new.wce = sent[2] & 0x04 != 0,
            PAGE_CONTROL => {
                new.d_sense = sent[2] & 0x04 != 0;
                new.swp = sent[4] & 0x08 != 0;
            }
            _ => {}
        }
        i += len;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_page_current_and_changeable() {
        let m = ModeParams {
            wce: true,
            d_sense: true,
            swp: false,
        };
        assert_eq!(
            m.page(PAGE_CONTROL, PageControl::Current).unwrap(),
            vec![0x0a, 0x0a, 0x04, 0x10, 0, 0x40, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(
            m.page(PAGE_CONTROL, PageControl::Changeable).unwrap(),
            vec![0x0a, 0x0a, 0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(m.page(0x01, PageControl::Current), None);
    }

    #[test]
    fn caching_page_default() {
        let p = ModeParams::default()
            .page(PAGE_CACHING, PageControl::Default)
            .unwrap();
        assert_eq!(p.len(), 20);
        assert_eq!(&p[..3], &[0x08, 0x12, 0x04]);
    }

    #[test]
    fn mode_sense6_with_block_descriptor() {
        let h = ModeHeader {
            write_protect: true,
            dpofua: true,
            block_descriptor: Some((0x1000, 512)),
            long_lba: false,
        };
        let b = mode_sense_data(false, &h, &[vec![0x0a, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(&b[..12], &[23, 0, 0x90, 8, 0, 0, 0x10, 0, 0, 0, 0x02, 0]);
        assert_eq!(b.len(), 24);
    }

    #[test]
    fn mode_sense10_long_descriptor() {
        let h = ModeHeader {
            write_protect: false,
            dpofua: true,
            block_descriptor: Some((1 << 33, 4096)),
            long_lba: true,
        };
        let b = mode_sense_data(true, &h, &[]);
        assert_eq!(&b[..8], &[0, 22, 0, 0x10, 1, 0, 0, 16]);
        assert_eq!(&b[8..16], &[0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&b[20..24], &[0, 0, 0x10, 0]);
    }

    #[test]
    fn short_descriptor_saturates() {
        let h = ModeHeader {
            write_protect: false,
            dpofua: false,
            block_descriptor: Some((1 << 33, 512)),
            long_lba: false,
        };
        let b = mode_sense_data(false, &h, &[]);
        assert_eq!(&b[4..8], &[0xff; 4]);
    }

    #[test]
    fn select_sets_swp_and_d_sense() {
        let cur = ModeParams::default();
        let mut list = vec![0, 0, 0, 0];
        let mut page = cur.page(PAGE_CONTROL, PageControl::Current).unwrap();
        page[2] |= 0x04;
        page[4] |= 0x08;
        list.extend_from_slice(&page);
        let new = parse_mode_select(false, &list, &cur, 100, 512).unwrap();
        assert_eq!(
            new,
            ModeParams {
                wce: true,
                d_sense: true,
                swp: true
            }
        );
    }

    #[test]
    fn select_refuses_fixed_bits_with_pointer() {
        let cur = ModeParams::default();
        let mut list = vec![0, 0, 0, 0];
        let mut page = cur.page(PAGE_CONTROL, PageControl::Current).unwrap();
        page[5] = 0x80; // ATO is not changeable
        list.extend_from_slice(&page);
        let s = parse_mode_select(false, &list, &cur, 100, 512).unwrap_err();
        assert_eq!((s.asc, s.ascq), (0x26, 0));
        assert_eq!(s.field.unwrap().byte, 9);
        assert!(!s.field.unwrap().in_cdb);
    }

    #[test]
    fn select_block_descriptor_and_truncation() {
        let cur = ModeParams::default();
        // Header(10) + long descriptor matching 100 blocks of 512.
        let mut list = vec![0, 0, 0, 0, 1, 0, 0, 16];
        list.extend_from_slice(&100u64.to_be_bytes());
        list.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(parse_mode_select(true, &list, &cur, 100, 512), Ok(cur));
        let mut wrong = list.clone();
        wrong[23] = 1;
        assert!(parse_mode_select(true, &wrong, &cur, 100, 512).is_err());
        let s = parse_mode_select(true, &list[..12], &cur, 100, 512).unwrap_err();
        assert_eq!(s.asc, 0x1a);
        // A page cut short.
        let mut list6 = vec![0, 0, 0, 0];
        list6.extend_from_slice(&cur.page(PAGE_CACHING, PageControl::Current).unwrap()[..10]);
        assert_eq!(
            parse_mode_select(false, &list6, &cur, 100, 512)
                .unwrap_err()
                .asc,
            0x1a
        );
    }

    #[test]
    fn select_clears_wce() {
        let cur = ModeParams::default();
        let mut list = vec![0, 0, 0, 0];
        let mut page = cur.page(PAGE_CACHING, PageControl::Current).unwrap();
        page[2] = 0;
        list.extend_from_slice(&page);
        assert!(!parse_mode_select(false, &list, &cur, 1, 512).unwrap().wce);
    }
}
