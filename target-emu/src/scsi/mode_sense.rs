//! MODE SENSE(6)/(10) (SPC-4 §6.11, §6.12) from the LU's mode parameters.

use super::{alloc, invalid_cdb, Outcome, ScsiReply, ScsiTarget};
use crate::lu::LogicalUnit;
use busrig_proto::scsi::cdb::PageControl;
use busrig_proto::scsi::mode;
use busrig_proto::scsi::mode::ModeHeader;
use busrig_proto::scsi::sense::Asc;

impl ScsiTarget {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mode_sense(
        &self,
        lu: &LogicalUnit,
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: PageControl,
        page: u8,
        subpage: u8,
        len: u32,
    ) -> Outcome {
        if pc == PageControl::Saved {
            return Err(Asc::SAVING_PARAMETERS_NOT_SUPPORTED.into());
        }
        let codes: Vec<u8> = match (page, subpage) {
            (mode::PAGE_ALL, 0x00 | 0xff) => mode::PAGES.to_vec(),
            (p, 0) if mode::PAGES.contains(&p) => vec![p],
            (p, _) if p == mode::PAGE_ALL || mode::PAGES.contains(&p) => {
                return Err(invalid_cdb(3, Some(7)))
            }
            _ => return Err(invalid_cdb(2, Some(5))),
        };
        let current = lu.mode();
        let pages: Vec<Vec<u8>> = codes.iter().filter_map(|&c| current.page(c, pc)).collect();
        let header = ModeHeader {
            write_protect: lu.write_protected(),
            dpofua: true,
            block_descriptor: (!dbd).then(|| (lu.blocks(), lu.block_size())),
            long_lba: llbaa,
        };
        Ok(ScsiReply::good(alloc(
            mode::mode_sense_data(ten, &header, &pages),
            len,
        )))
    }
}
