//! MODE SENSE(6)/(10) (SPC-4 §6.11, §6.12) and MODE SELECT(6)/(10) (SPC-4 §6.9,
//! §6.10) on the LU's mode parameters.

use super::{alloc, invalid_cdb, Outcome, ScsiReply, ScsiRequest, ScsiTarget};
use crate::lu::LogicalUnit;
use crate::lu::UaScope;
use busrig_proto::scsi::cdb::PageControl;
use busrig_proto::scsi::mode;
use busrig_proto::scsi::mode::ModeHeader;
use busrig_proto::scsi::sense::Asc;
use bytes::Bytes;

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

    /// MODE SELECT(6)/(10) (SPC-4 §6.9, §6.10).
    pub(super) fn mode_select(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        ten: bool,
        pf: bool,
        sp: bool,
        len: u32,
    ) -> Outcome {
        if len == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        if !pf {
            return Err(invalid_cdb(1, Some(4)));
        }
        if sp {
            // SPC-4 §6.9: no page is saveable.
            return Err(invalid_cdb(1, Some(0)));
        }
        let data = &req.param_list(len)[..];
        let old = lu.mode();
        let new = mode::parse_mode_select(ten, data, &old, lu.blocks(), lu.block_size())?;
        if new != old {
            lu.set_mode(new);
            // SPC-4 §7.5.1: the other I_T nexuses learn of it.
            lu.post_unit_attention(
                UaScope::AllExcept(req.nexus.clone()),
                Asc::MODE_PARAMETERS_CHANGED,
            );
        }
        Ok(ScsiReply::good(Bytes::new()))
    }
}
