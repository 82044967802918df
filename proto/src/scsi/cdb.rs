//! Command descriptor blocks (SPC-4 §4.2, SBC-3 §5): one table of every
//! command busrig supports, and a decoder from CDB bytes to a typed [`Cdb`].
//!
//! The table row of each command carries its CDB usage data (SPC-4
//! §6.35.3): byte 0 is the operation code, byte 1 of a command with service
//! actions holds the service action, and every other bit is 1 exactly when
//! the device server evaluates it. The same bytes answer REPORT SUPPORTED
//! OPERATION CODES and validate incoming CDBs: a 1 bit in a CDB where the
//! usage data has a 0 is a reserved or unsupported field, answered with
//! ILLEGAL REQUEST, INVALID FIELD IN CDB and a field pointer at that bit
//! (SPC-4 §4.5.2.4.2). That keeps what we advertise and what we accept from
//! drifting apart.
//!
//! Common layouts (big endian):
//!
//! ```text
//! 6-byte  READ/WRITE(6):  op | LBA(20..16) | LBA(15..8) | LBA(7..0) | LEN (0 = 256) | CONTROL
//! 10-byte READ(10) etc.:  op | flags | LBA(4) | GROUP | LEN(2) | CONTROL
//! 12-byte READ(12) etc.:  op | flags | LBA(4) | LEN(4) | GROUP | CONTROL
//! 16-byte READ(16) etc.:  op | flags | LBA(8) | LEN(4) | GROUP | CONTROL
//! flags (byte 1):         RDPROTECT/WRPROTECT(7..5) DPO(4) FUA(3) BYTCHK(2..1) FUA_NV(1)
//! CONTROL:                vendor(7..6) | NACA(2) | LINK(0)
//! ```

use super::sense::{Asc, Sense};

pub use super::opcode;
use super::pr::{PrInCdb, PrOutCdb};

/// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
pub mod service_action {
    pub const READ_CAPACITY_16: u16 = 0x10;
    pub const GET_LBA_STATUS: u16 = 0x12;
    pub const REPORT_SUPPORTED_OPERATION_CODES: u16 = 0x0c;
    /// SANITIZE (SBC-4 §5.30).
    pub const SANITIZE_OVERWRITE: u8 = 0x01;
    pub const SANITIZE_BLOCK_ERASE: u8 = 0x02;
    pub const SANITIZE_EXIT_FAILURE_MODE: u8 = 0x1f;
    /// RECEIVE COPY RESULTS (SPC-4 §6.18).
    pub const COPY_STATUS: u8 = 0x00;
    pub const OPERATING_PARAMETERS: u8 = 0x03;
    pub const FAILED_SEGMENT_DETAILS: u8 = 0x04;
}

/// One supported command: its name, CDB usage data and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    pub opcode: u8,
    /// The service action for opcodes that have them (SERVACTV).
    pub service_action: Option<u16>,
    pub name: &'static str,
    /// CDB usage data (SPC-4 §6.35.3); its length is the CDB length.
    pub usage: &'static [u8],
    /// Nominal and recommended command timeouts in seconds (SPC-4 §6.35.4).
    pub nominal_timeout: u32,
    pub recommended_timeout: u32,
}

impl CommandInfo {
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

macro_rules! cmd {
    ($op:expr, $sa:expr, $name:expr, [$($b:expr),* $(,)?]) => {
        CommandInfo {
            opcode: $op,
            service_action: $sa,
            name: $name,
            usage: &[$op, $($b),*],
            nominal_timeout: 1,
            recommended_timeout: 30,
        }
    };
}

const FF: u8 = 0xff;

/// Every command busrig executes, in REPORT SUPPORTED OPERATION CODES
/// order (by operation code, then service action).
pub const COMMANDS: &[CommandInfo] = &[
    cmd!(0x00, None, "TEST UNIT READY", [0, 0, 0, 0, 0]),
    cmd!(0x03, None, "REQUEST SENSE", [0x01, 0, 0, FF, 0]),
    cmd!(0x08, None, "READ(6)", [0x1f, FF, FF, FF, 0]),
    cmd!(0x0a, None, "WRITE(6)", [0x1f, FF, FF, FF, 0]),
    cmd!(0x12, None, "INQUIRY", [0x01, FF, FF, FF, 0]),
    cmd!(0x15, None, "MODE SELECT(6)", [0x11, 0, 0, FF, 0]),
    cmd!(0x16, None, "RESERVE(6)", [0, 0, 0, 0, 0]),
    cmd!(0x17, None, "RELEASE(6)", [0, 0, 0, 0, 0]),
    cmd!(0x1a, None, "MODE SENSE(6)", [0x08, FF, FF, FF, 0]),
    cmd!(0x1b, None, "START STOP UNIT", [0x01, 0, 0x0f, 0xf7, 0]),
    cmd!(
        0x1e,
        None,
        "PREVENT ALLOW MEDIUM REMOVAL",
        [0, 0, 0, 0x03, 0]
    ),
    cmd!(
        0x25,
        None,
        "READ CAPACITY(10)",
        [0, FF, FF, FF, FF, 0, 0, 0x01, 0]
    ),
    cmd!(
        0x28,
        None,
        "READ(10)",
        [0x1a, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x2a,
        None,
        "WRITE(10)",
        [0x1a, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x2e,
        None,
        "WRITE AND VERIFY(10)",
        [0x12, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x2f,
        None,
        "VERIFY(10)",
        [0x16, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x34,
        None,
        "PRE-FETCH(10)",
        [0x02, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x35,
        None,
        "SYNCHRONIZE CACHE(10)",
        [0x06, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(
        0x37,
        None,
        "READ DEFECT DATA(10)",
        [0, 0x1f, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x41,
        None,
        "WRITE SAME(10)",
        [0x08, FF, FF, FF, FF, 0x1f, FF, FF, 0]
    ),
    cmd!(0x42, None, "UNMAP", [0, 0, 0, 0, 0, 0x1f, FF, FF, 0]),
    cmd!(
        0x48,
        Some(0x01),
        "SANITIZE / OVERWRITE",
        [0xa1, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x48,
        Some(0x02),
        "SANITIZE / BLOCK ERASE",
        [0xa2, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x48,
        Some(0x1f),
        "SANITIZE / EXIT FAILURE MODE",
        [0x9f, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x55,
        None,
        "MODE SELECT(10)",
        [0x11, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(0x56, None, "RESERVE(10)", [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    cmd!(0x57, None, "RELEASE(10)", [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    cmd!(
        0x5a,
        None,
        "MODE SENSE(10)",
        [0x18, FF, FF, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x5e,
        Some(0x00),
        "PERSISTENT RESERVE IN / READ KEYS",
        [0x00, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x5e,
        Some(0x01),
        "PERSISTENT RESERVE IN / READ RESERVATION",
        [0x01, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x5e,
        Some(0x02),
        "PERSISTENT RESERVE IN / REPORT CAPABILITIES",
        [0x02, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x5e,
        Some(0x03),
        "PERSISTENT RESERVE IN / READ FULL STATUS",
        [0x03, 0, 0, 0, 0, 0, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x00),
        "PERSISTENT RESERVE OUT / REGISTER",
        [0x00, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x01),
        "PERSISTENT RESERVE OUT / RESERVE",
        [0x01, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x02),
        "PERSISTENT RESERVE OUT / RELEASE",
        [0x02, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x03),
        "PERSISTENT RESERVE OUT / CLEAR",
        [0x03, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x04),
        "PERSISTENT RESERVE OUT / PREEMPT",
        [0x04, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x05),
        "PERSISTENT RESERVE OUT / PREEMPT AND ABORT",
        [0x05, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x06),
        "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY",
        [0x06, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x5f,
        Some(0x07),
        "PERSISTENT RESERVE OUT / REGISTER AND MOVE",
        [0x07, FF, 0, 0, FF, FF, FF, FF, 0]
    ),
    cmd!(
        0x83,
        Some(0x00),
        "EXTENDED COPY(LID1)",
        [0x00, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0x84,
        Some(0x00),
        "RECEIVE COPY RESULTS / COPY STATUS(LID1)",
        [0x00, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0x84,
        Some(0x03),
        "RECEIVE COPY RESULTS / OPERATING PARAMETERS",
        [0x03, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0x84,
        Some(0x04),
        "RECEIVE COPY RESULTS / FAILED SEGMENT DETAILS(LID1)",
        [0x04, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0x88,
        None,
        "READ(16)",
        [0x1a, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x89,
        None,
        "COMPARE AND WRITE",
        [0x1a, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0x1f, 0]
    ),
    cmd!(
        0x8a,
        None,
        "WRITE(16)",
        [0x1a, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x8b,
        None,
        "ORWRITE(16)",
        [0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x8e,
        None,
        "WRITE AND VERIFY(16)",
        [0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x8f,
        None,
        "VERIFY(16)",
        [0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x90,
        None,
        "PRE-FETCH(16)",
        [0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x91,
        None,
        "SYNCHRONIZE CACHE(16)",
        [0x06, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x93,
        None,
        "WRITE SAME(16)",
        [0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x9c,
        None,
        "WRITE ATOMIC(16)",
        [0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0x9e,
        Some(0x10),
        "READ CAPACITY(16)",
        [0x10, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0x9e,
        Some(0x12),
        "GET LBA STATUS",
        [0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0xa0,
        None,
        "REPORT LUNS",
        [0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0xa3,
        Some(0x0c),
        "REPORT SUPPORTED OPERATION CODES",
        [0x0c, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0]
    ),
    cmd!(
        0xa8,
        None,
        "READ(12)",
        [0x1a, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0xaa,
        None,
        "WRITE(12)",
        [0x1a, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0xae,
        None,
        "WRITE AND VERIFY(12)",
        [0x12, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0xaf,
        None,
        "VERIFY(12)",
        [0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]
    ),
    cmd!(
        0xb7,
        None,
        "READ DEFECT DATA(12)",
        [0x1f, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]
    ),
];

/// True when `op` is one of the opcodes whose byte 1 carries a service
/// action (SERVACTV in REPORT SUPPORTED OPERATION CODES).
pub fn has_service_actions(op: u8) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.opcode == op && c.service_action.is_some())
}

/// The service action of a CDB whose opcode has them (SPC-4 §4.2.5.1: the
/// low five bits of byte 1).
pub fn service_action_of(cdb: &[u8]) -> Option<u16> {
    (!cdb.is_empty() && has_service_actions(cdb[0]))
        .then(|| cdb.get(1).map_or(0, |b| u16::from(b & 0x1f)))
}

/// The table row for an opcode (and service action, for opcodes with them).
pub fn command_info(op: u8, sa: Option<u16>) -> Option<&'static CommandInfo> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == op && c.service_action == sa)
}

/// The table row for a CDB.
pub fn lookup(cdb: &[u8]) -> Option<&'static CommandInfo> {
    let op = *cdb.first()?;
    command_info(op, service_action_of(cdb))
}

/// Page control of MODE SENSE (SPC-4 §6.11.1, Table 167).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    Current,
    Changeable,
    Default,
    Saved,
}

impl PageControl {
    /// The two-bit PC field.
    pub fn bits(self) -> u8 {
        match self {
            PageControl::Current => 0,
            PageControl::Changeable => 1,
            PageControl::Default => 2,
            PageControl::Saved => 3,
        }
    }

    pub fn from_bits(v: u8) -> PageControl {
        match v & 3 {
            0 => PageControl::Current,
            1 => PageControl::Changeable,
            2 => PageControl::Default,
            _ => PageControl::Saved,
        }
    }
}

/// A decoded CDB. Lengths are in logical blocks, allocation and parameter
/// list lengths in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cdb {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u32,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReadCapacity10 {
        lba: u32,
        pmi: bool,
    },
    ReadCapacity16 {
        alloc: u32,
    },
    Read {
        lba: u64,
        blocks: u32,
        dpo: bool,
        fua: bool,
    },
    Write {
        lba: u64,
        blocks: u32,
        dpo: bool,
        fua: bool,
    },
    /// ORWRITE(16) (SBC-3 §5.9): the Data-Out buffer is ORed into the
    /// blocks, atomically with respect to every other command on the LU.
    OrWrite {
        lba: u64,
        blocks: u32,
        dpo: bool,
        fua: bool,
    },
    /// WRITE AND VERIFY(10/12/16); `bytchk`: compare the data after writing.
    WriteAndVerify {
        lba: u64,
        blocks: u32,
        dpo: bool,
        bytchk: bool,
    },
    /// VERIFY(10/12/16); `bytchk` 0: medium check only, 1: compare the
    /// Data-Out buffer, 3: compare one block against every block (SBC-4 §5.29).
    Verify {
        lba: u64,
        blocks: u32,
        dpo: bool,
        bytchk: u8,
    },
    SynchronizeCache {
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    PreFetch {
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    ModeSense {
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: PageControl,
        page: u8,
        subpage: u8,
        alloc: u32,
    },
    ModeSelect {
        ten: bool,
        pf: bool,
        sp: bool,
        len: u32,
    },
    StartStopUnit {
        immed: bool,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    },
    PreventAllow {
        prevent: u8,
    },
    CompareAndWrite {
        lba: u64,
        blocks: u8,
        dpo: bool,
        fua: bool,
    },
    /// WRITE SAME(10/16); `ndob`: no Data-Out buffer, write zeros (SBC-3 §5.43).
    WriteSame {
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    },
    Unmap {
        len: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: u32,
    },
    /// RESERVE(6) or, with `ten`, RESERVE(10) (SPC-2 §7.21, §7.22).
    Reserve {
        ten: bool,
    },
    /// RELEASE(6) or, with `ten`, RELEASE(10) (SPC-2 §7.19, §7.20).
    Release {
        ten: bool,
    },
    /// WRITE ATOMIC(16) (SBC-4 §5.48): the blocks are written all or not
    /// at all, within the Block Limits VPD atomic limits.
    WriteAtomic {
        lba: u64,
        blocks: u16,
        dpo: bool,
        fua: bool,
    },
    /// READ DEFECT DATA(10) or, with `twelve`, (12) (SBC-3 §5.18, §5.19):
    /// which lists are asked for, in which DEFECT LIST FORMAT; `index` is
    /// the (12)'s ADDRESS DESCRIPTOR INDEX.
    ReadDefectData {
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        index: u32,
        alloc: u32,
    },
    /// SANITIZE (SBC-4 §5.30) with its service action `action`.
    Sanitize {
        immed: bool,
        ause: bool,
        action: u8,
        len: u32,
    },
    /// EXTENDED COPY(LID1) (SPC-4 §6.4): a parameter list of `len` bytes.
    ExtendedCopy {
        len: u32,
    },
    /// RECEIVE COPY RESULTS (SPC-4 §6.18), service action `action`, for
    /// the copy named `list_id`.
    ReceiveCopyResults {
        action: u8,
        list_id: u8,
        alloc: u32,
    },
    /// PERSISTENT RESERVE IN (SPC-4 §6.15), decoded by [`PrInCdb`].
    PersistentReserveIn(PrInCdb),
    /// PERSISTENT RESERVE OUT (SPC-4 §6.16), decoded by [`PrOutCdb`].
    PersistentReserveOut(PrOutCdb),
    /// An operation code busrig does not implement: ILLEGAL REQUEST,
    /// INVALID COMMAND OPERATION CODE.
    Unsupported(u8),
}

pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
pub(crate) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn invalid_field(byte: usize, bits: u8) -> Sense {
    // Point at the most significant offending bit (SPC-4 §4.5.2.4.2).
    let bit = 7 - bits.leading_zeros() as u8;
    Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(byte as u16, Some(bit))
}

/// Checks the CDB against the usage data: every bit we do not evaluate must
/// be zero. The control byte's NACA and LINK bits are refused because
/// busrig supports neither ACA nor linked commands (SAM-5 §5.2, §5.9); its
/// vendor-specific bits are ignored.
fn check_usage(cdb: &[u8], info: &CommandInfo) -> Result<(), Sense> {
    let n = info.cdb_len();
    for (i, (&byte, &usage)) in cdb.iter().zip(info.usage).enumerate().take(n - 1).skip(1) {
        let mut allowed = usage;
        if i == 1 && info.service_action.is_some() {
            allowed |= 0x1f;
        }
        let bad = byte & !allowed;
        if bad != 0 {
            return Err(invalid_field(i, bad));
        }
    }
    let bad = cdb[n - 1] & 0x05;
    if bad != 0 {
        return Err(invalid_field(n - 1, bad));
    }
    Ok(())
}

impl Cdb {
    /// Decodes a CDB. Unknown opcodes are `Ok(Unsupported)`; a known
    /// opcode with an unknown service action, a truncated CDB, or a set bit
    /// in a field we do not support is `Err` with the sense to report.
    pub fn decode(cdb: &[u8]) -> Result<Cdb, Sense> {
        use opcode::*;
        let Some(&op) = cdb.first() else {
            return Ok(Cdb::Unsupported(0));
        };
        let info = match lookup(cdb) {
            Some(info) => info,
            None if has_service_actions(op) => {
                // SPC-4 §4.2.5.1: an unsupported service action of a
                // supported opcode is an invalid field in the CDB.
                return Err(Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(1, Some(4)));
            }
            None => return Ok(Cdb::Unsupported(op)),
        };
        if cdb.len() < info.cdb_len() {
            return Err(Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(cdb.len() as u16, None));
        }
        check_usage(cdb, info)?;
        let b = cdb;
        let dpo = b[1] & 0x10 != 0;
        let fua = b[1] & 0x08 != 0;
        Ok(match op {
            TEST_UNIT_READY => Cdb::TestUnitReady,
            REQUEST_SENSE => Cdb::RequestSense {
                desc: b[1] & 1 != 0,
                alloc: b[4].into(),
            },
            INQUIRY => Cdb::Inquiry {
                evpd: b[1] & 1 != 0,
                page: b[2],
                alloc: be16(&b[3..]).into(),
            },
            REPORT_LUNS => Cdb::ReportLuns {
                select: b[2],
                alloc: be32(&b[6..]),
            },
            READ_CAPACITY_10 => Cdb::ReadCapacity10 {
                lba: be32(&b[2..]),
                pmi: b[8] & 1 != 0,
            },
            READ_6 | WRITE_6 => {
                let lba = u64::from(be32(&[0, b[1] & 0x1f, b[2], b[3]]));
                // SBC-3 §5.15: a TRANSFER LENGTH of zero means 256 blocks.
                let blocks = if b[4] == 0 { 256 } else { u32::from(b[4]) };
                if op == READ_6 {
                    Cdb::Read {
                        lba,
                        blocks,
                        dpo: false,
                        fua: false,
                    }
                } else {
                    Cdb::Write {
                        lba,
                        blocks,
                        dpo: false,
                        fua: false,
                    }
                }
            }
            READ_10 | READ_12 | READ_16 | WRITE_10 | WRITE_12 | WRITE_16 => {
                let (lba, blocks) = lba_len(b);
                if matches!(op, READ_10 | READ_12 | READ_16) {
                    Cdb::Read {
                        lba,
                        blocks,
                        dpo,
                        fua,
                    }
                } else {
                    Cdb::Write {
                        lba,
                        blocks,
                        dpo,
                        fua,
                    }
                }
            }
            ORWRITE_16 => {
                let (lba, blocks) = lba_len(b);
                Cdb::OrWrite {
                    lba,
                    blocks,
                    dpo,
                    fua,
                }
            }
            WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_12 | WRITE_AND_VERIFY_16 => {
                let (lba, blocks) = lba_len(b);
                Cdb::WriteAndVerify {
                    lba,
                    blocks,
                    dpo,
                    bytchk: b[1] & 0x02 != 0,
                }
            }
            VERIFY_10 | VERIFY_12 | VERIFY_16 => {
                let (lba, blocks) = lba_len(b);
                let bytchk = (b[1] >> 1) & 3;
                if bytchk == 2 {
                    // SBC-4 §5.29.2: BYTCHK 10b is reserved.
                    return Err(invalid_field(1, 0x04));
                }
                Cdb::Verify {
                    lba,
                    blocks,
                    dpo,
                    bytchk,
                }
            }
            SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 => {
                let (lba, blocks) = lba_len(b);
                Cdb::SynchronizeCache {
                    lba,
                    blocks,
                    immed: b[1] & 0x02 != 0,
                }
            }
            PRE_FETCH_10 | PRE_FETCH_16 => {
                let (lba, blocks) = lba_len(b);
                Cdb::PreFetch {
                    lba,
                    blocks,
                    immed: b[1] & 0x02 != 0,
                }
            }
            MODE_SENSE_6 | MODE_SENSE_10 => Cdb::ModeSense {
                ten: op == MODE_SENSE_10,
                dbd: b[1] & 0x08 != 0,
                llbaa: op == MODE_SENSE_10 && b[1] & 0x10 != 0,
                pc: PageControl::from_bits(b[2] >> 6),
                page: b[2] & 0x3f,
                subpage: b[3],
                alloc: if op == MODE_SENSE_6 {
                    b[4].into()
                } else {
                    be16(&b[7..]).into()
                },
            },
            MODE_SELECT_6 | MODE_SELECT_10 => Cdb::ModeSelect {
                ten: op == MODE_SELECT_10,
                pf: b[1] & 0x10 != 0,
                sp: b[1] & 0x01 != 0,
                len: if op == MODE_SELECT_6 {
                    b[4].into()
                } else {
                    be16(&b[7..]).into()
                },
            },
            START_STOP_UNIT => Cdb::StartStopUnit {
                immed: b[1] & 1 != 0,
                power_condition: b[4] >> 4,
                no_flush: b[4] & 0x04 != 0,
                loej: b[4] & 0x02 != 0,
                start: b[4] & 0x01 != 0,
            },
            PREVENT_ALLOW_MEDIUM_REMOVAL => Cdb::PreventAllow { prevent: b[4] & 3 },
            COMPARE_AND_WRITE => Cdb::CompareAndWrite {
                lba: be64(&b[2..]),
                blocks: b[13],
                dpo,
                fua,
            },
            WRITE_SAME_10 | WRITE_SAME_16 => {
                let (lba, blocks) = lba_len(b);
                Cdb::WriteSame {
                    lba,
                    blocks,
                    unmap: b[1] & 0x08 != 0,
                    ndob: op == WRITE_SAME_16 && b[1] & 0x01 != 0,
                }
            }
            UNMAP => Cdb::Unmap {
                len: be16(&b[7..]).into(),
            },
            SERVICE_ACTION_IN_16 => match u16::from(b[1] & 0x1f) {
                service_action::READ_CAPACITY_16 => Cdb::ReadCapacity16 {
                    alloc: be32(&b[10..]),
                },
                _ => Cdb::GetLbaStatus {
                    lba: be64(&b[2..]),
                    alloc: be32(&b[10..]),
                },
            },
            MAINTENANCE_IN => Cdb::ReportSupportedOpcodes {
                rctd: b[2] & 0x80 != 0,
                options: b[2] & 0x07,
                opcode: b[3],
                sa: be16(&b[4..]),
                alloc: be32(&b[6..]),
            },
            RESERVE_6 | RESERVE_10 => Cdb::Reserve {
                ten: op == RESERVE_10,
            },
            RELEASE_6 | RELEASE_10 => Cdb::Release {
                ten: op == RELEASE_10,
            },
            WRITE_ATOMIC_16 => Cdb::WriteAtomic {
                lba: be64(&b[2..]),
                blocks: be16(&b[12..]),
                dpo,
                fua,
            },
            READ_DEFECT_DATA_10 => Cdb::ReadDefectData {
                twelve: false,
                plist: b[2] & 0x10 != 0,
                glist: b[2] & 0x08 != 0,
                format: b[2] & 0x07,
                index: 0,
                alloc: be16(&b[7..]).into(),
            },
            READ_DEFECT_DATA_12 => Cdb::ReadDefectData {
                twelve: true,
                plist: b[1] & 0x10 != 0,
                glist: b[1] & 0x08 != 0,
                format: b[1] & 0x07,
                index: be32(&b[2..]),
                alloc: be32(&b[6..]),
            },
            SANITIZE => Cdb::Sanitize {
                immed: b[1] & 0x80 != 0,
                ause: b[1] & 0x20 != 0,
                action: b[1] & 0x1f,
                len: be16(&b[7..]).into(),
            },
            EXTENDED_COPY => Cdb::ExtendedCopy {
                len: be32(&b[10..]),
            },
            RECEIVE_COPY_RESULTS => Cdb::ReceiveCopyResults {
                action: b[1] & 0x1f,
                list_id: b[2],
                alloc: be32(&b[10..]),
            },
            PERSISTENT_RESERVE_IN => {
                Cdb::PersistentReserveIn(PrInCdb::decode(b).map_err(|e| e.sense())?)
            }
            PERSISTENT_RESERVE_OUT => {
                Cdb::PersistentReserveOut(PrOutCdb::decode(b).map_err(|e| e.sense())?)
            }
            other => Cdb::Unsupported(other),
        })
    }

    /// The CDB bytes of this command, the inverse of [`Cdb::decode`].
    ///
    /// Commands with 10- and 16-byte forms use the 10-byte form whenever
    /// it can express the request, as sg_dd and the Linux sd driver do:
    /// older targets implement only the smaller CDBs. Allocation and
    /// parameter list lengths wider than their CDB field are cut to it;
    /// callers pass lengths the field can hold. `Unsupported(op)` encodes
    /// as a 16-byte CDB of that opcode and zeros.
    pub fn encode(&self) -> Vec<u8> {
        use opcode::*;
        let rw_flags = |dpo: bool, fua: bool| (u8::from(dpo) << 4) | (u8::from(fua) << 3);
        match *self {
            Cdb::TestUnitReady => vec![TEST_UNIT_READY, 0, 0, 0, 0, 0],
            Cdb::RequestSense { desc, alloc } => {
                vec![REQUEST_SENSE, u8::from(desc), 0, 0, alloc as u8, 0]
            }
            Cdb::Inquiry { evpd, page, alloc } => {
                let a = (alloc as u16).to_be_bytes();
                vec![INQUIRY, u8::from(evpd), page, a[0], a[1], 0]
            }
            Cdb::ReportLuns { select, alloc } => {
                let mut b = vec![0u8; 12];
                b[0] = REPORT_LUNS;
                b[2] = select;
                b[6..10].copy_from_slice(&alloc.to_be_bytes());
                b
            }
            Cdb::ReadCapacity10 { lba, pmi } => {
                let mut b = vec![0u8; 10];
                b[0] = READ_CAPACITY_10;
                b[2..6].copy_from_slice(&lba.to_be_bytes());
                b[8] = u8::from(pmi);
                b
            }
            Cdb::ReadCapacity16 { alloc } => {
                let mut b = vec![0u8; 16];
                b[0] = SERVICE_ACTION_IN_16;
                b[1] = service_action::READ_CAPACITY_16 as u8;
                b[10..14].copy_from_slice(&alloc.to_be_bytes());
                b
            }
            Cdb::Read {
                lba,
                blocks,
                dpo,
                fua,
            } => lba_len_cdb(READ_10, READ_16, rw_flags(dpo, fua), lba, blocks),
            Cdb::Write {
                lba,
                blocks,
                dpo,
                fua,
            } => lba_len_cdb(WRITE_10, WRITE_16, rw_flags(dpo, fua), lba, blocks),
            Cdb::OrWrite {
                lba,
                blocks,
                dpo,
                fua,
            } => cdb16(ORWRITE_16, rw_flags(dpo, fua), lba, blocks),
            Cdb::WriteAndVerify {
                lba,
                blocks,
                dpo,
                bytchk,
            } => lba_len_cdb(
                WRITE_AND_VERIFY_10,
                WRITE_AND_VERIFY_16,
                (u8::from(dpo) << 4) | (u8::from(bytchk) << 1),
                lba,
                blocks,
            ),
            Cdb::Verify {
                lba,
                blocks,
                dpo,
                bytchk,
            } => lba_len_cdb(
                VERIFY_10,
                VERIFY_16,
                (u8::from(dpo) << 4) | ((bytchk & 3) << 1),
                lba,
                blocks,
            ),
            Cdb::SynchronizeCache { lba, blocks, immed } => lba_len_cdb(
                SYNCHRONIZE_CACHE_10,
                SYNCHRONIZE_CACHE_16,
                u8::from(immed) << 1,
                lba,
                blocks,
            ),
            Cdb::PreFetch { lba, blocks, immed } => lba_len_cdb(
                PRE_FETCH_10,
                PRE_FETCH_16,
                u8::from(immed) << 1,
                lba,
                blocks,
            ),
            Cdb::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc,
            } => {
                let page_byte = (pc.bits() << 6) | (page & 0x3f);
                if ten {
                    let a = (alloc as u16).to_be_bytes();
                    let flags = (u8::from(llbaa) << 4) | (u8::from(dbd) << 3);
                    vec![
                        MODE_SENSE_10,
                        flags,
                        page_byte,
                        subpage,
                        0,
                        0,
                        0,
                        a[0],
                        a[1],
                        0,
                    ]
                } else {
                    let flags = u8::from(dbd) << 3;
                    vec![MODE_SENSE_6, flags, page_byte, subpage, alloc as u8, 0]
                }
            }
            Cdb::ModeSelect { ten, pf, sp, len } => {
                let flags = (u8::from(pf) << 4) | u8::from(sp);
                if ten {
                    let l = (len as u16).to_be_bytes();
                    vec![MODE_SELECT_10, flags, 0, 0, 0, 0, 0, l[0], l[1], 0]
                } else {
                    vec![MODE_SELECT_6, flags, 0, 0, len as u8, 0]
                }
            }
            Cdb::StartStopUnit {
                immed,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                let b4 = ((power_condition & 0x0f) << 4)
                    | (u8::from(no_flush) << 2)
                    | (u8::from(loej) << 1)
                    | u8::from(start);
                vec![START_STOP_UNIT, u8::from(immed), 0, 0, b4, 0]
            }
            Cdb::PreventAllow { prevent } => {
                vec![PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, prevent & 3, 0]
            }
            Cdb::CompareAndWrite {
                lba,
                blocks,
                dpo,
                fua,
            } => {
                // NUMBER OF LOGICAL BLOCKS is byte 13 alone (SBC-3 §5.2).
                let mut b = cdb16(COMPARE_AND_WRITE, rw_flags(dpo, fua), lba, 0);
                b[13] = blocks;
                b
            }
            Cdb::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => {
                let flags = (u8::from(unmap) << 3) | u8::from(ndob);
                // NDOB exists only in WRITE SAME(16) (SBC-3 §5.43).
                if ndob {
                    cdb16(WRITE_SAME_16, flags, lba, blocks)
                } else {
                    lba_len_cdb(WRITE_SAME_10, WRITE_SAME_16, flags, lba, blocks)
                }
            }
            Cdb::Unmap { len } => {
                let l = (len as u16).to_be_bytes();
                vec![UNMAP, 0, 0, 0, 0, 0, 0, l[0], l[1], 0]
            }
            Cdb::GetLbaStatus { lba, alloc } => {
                let mut b = cdb16(SERVICE_ACTION_IN_16, 0, lba, alloc);
                b[1] = service_action::GET_LBA_STATUS as u8;
                b
            }
            Cdb::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc,
            } => {
                let mut b = vec![0u8; 12];
                b[0] = MAINTENANCE_IN;
                b[1] = service_action::REPORT_SUPPORTED_OPERATION_CODES as u8;
                b[2] = (u8::from(rctd) << 7) | (options & 0x07);
                b[3] = opcode;
                b[4..6].copy_from_slice(&sa.to_be_bytes());
                b[6..10].copy_from_slice(&alloc.to_be_bytes());
                b
            }
            Cdb::Reserve { ten: false } => vec![RESERVE_6, 0, 0, 0, 0, 0],
            Cdb::Reserve { ten: true } => vec![RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Cdb::Release { ten: false } => vec![RELEASE_6, 0, 0, 0, 0, 0],
            Cdb::Release { ten: true } => vec![RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Cdb::WriteAtomic {
                lba,
                blocks,
                dpo,
                fua,
            } => {
                let mut b = cdb16(WRITE_ATOMIC_16, rw_flags(dpo, fua), lba, 0);
                b[10..14].copy_from_slice(&[0, 0, (blocks >> 8) as u8, blocks as u8]);
                b
            }
            Cdb::ReadDefectData {
                twelve: false,
                plist,
                glist,
                format,
                alloc,
                ..
            } => {
                let a = (alloc as u16).to_be_bytes();
                let flags = (u8::from(plist) << 4) | (u8::from(glist) << 3) | (format & 7);
                vec![READ_DEFECT_DATA_10, 0, flags, 0, 0, 0, 0, a[0], a[1], 0]
            }
            Cdb::ReadDefectData {
                twelve: true,
                plist,
                glist,
                format,
                index,
                alloc,
            } => {
                let mut b = vec![0u8; 12];
                b[0] = READ_DEFECT_DATA_12;
                b[1] = (u8::from(plist) << 4) | (u8::from(glist) << 3) | (format & 7);
                b[2..6].copy_from_slice(&index.to_be_bytes());
                b[6..10].copy_from_slice(&alloc.to_be_bytes());
                b
            }
            Cdb::Sanitize {
                immed,
                ause,
                action,
                len,
            } => {
                let l = (len as u16).to_be_bytes();
                let b1 = (u8::from(immed) << 7) | (u8::from(ause) << 5) | (action & 0x1f);
                vec![SANITIZE, b1, 0, 0, 0, 0, 0, l[0], l[1], 0]
            }
            Cdb::ExtendedCopy { len } => {
                let mut b = vec![0u8; 16];
                b[0] = EXTENDED_COPY;
                b[10..14].copy_from_slice(&len.to_be_bytes());
                b
            }
            Cdb::ReceiveCopyResults {
                action,
                list_id,
                alloc,
            } => {
                let mut b = vec![0u8; 16];
                b[0] = RECEIVE_COPY_RESULTS;
                b[1] = action & 0x1f;
                b[2] = list_id;
                b[10..14].copy_from_slice(&alloc.to_be_bytes());
                b
            }
            Cdb::PersistentReserveIn(c) => c.encode().to_vec(),
            Cdb::PersistentReserveOut(c) => c.encode().to_vec(),
            Cdb::Unsupported(op) => {
                let mut b = vec![0u8; 16];
                b[0] = op;
                b
            }
        }
    }

    /// INQUIRY, REPORT LUNS and REQUEST SENSE run despite a pending unit
    /// attention (SPC-4 §5.14; SAM-5 §5.14).
    pub fn ignores_unit_attention(op: u8) -> bool {
        matches!(
            op,
            opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
        )
    }
}

/// Whether an LBA and length fit the 10-byte layout: a 32-bit LBA whose
/// range ends within the 32-bit space, and a 16-bit length.
fn fits_10(lba: u64, blocks: u32) -> bool {
    // An LBA near u64::MAX (a READ(16) decoded from the wire) must not
    // overflow the sum, and an LBA of exactly 2^32 with no blocks ends
    // "within" the space but does not fit the field (both found by the
    // scsi_decode fuzz target).
    u32::try_from(lba).is_ok()
        && lba
            .checked_add(u64::from(blocks))
            .is_some_and(|end| end <= u64::from(u32::MAX) + 1)
        && blocks <= u32::from(u16::MAX)
}

/// A 10-byte CDB (`op10`) when the request fits it, else a 16-byte one.
fn lba_len_cdb(op10: u8, op16: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    if fits_10(lba, blocks) {
        let mut b = vec![0u8; 10];
        b[0] = op10;
        b[1] = flags;
        b[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        b[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
        b
    } else {
        cdb16(op16, flags, lba, blocks)
    }
}

/// The 16-byte layout: LBA in bytes 2-9, length in bytes 10-13.
fn cdb16(op: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0] = op;
    b[1] = flags;
    b[2..10].copy_from_slice(&lba.to_be_bytes());
    b[10..14].copy_from_slice(&blocks.to_be_bytes());
    b
}

/// LBA and transfer length of the 10, 12 and 16 byte layouts.
fn lba_len(b: &[u8]) -> (u64, u32) {
    match b[0] >> 5 {
        // Group 1 and 2 opcodes (0x20..0x5f) are 10 bytes.
        1 | 2 => (be32(&b[2..]).into(), be16(&b[7..]).into()),
        // Group 5 (0xa0..0xbf) is 12 bytes.
        5 => (be32(&b[2..]).into(), be32(&b[6..])),
        // Group 4 (0x80..0x9f) is 16 bytes.
        _ => (be64(&b[2..]), be32(&b[10..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::pr::PrOutAction;
    use crate::scsi::sense::SenseKey;

    fn pad16(b: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        v.resize(16, 0);
        v
    }

    #[test]
    fn table_is_sorted_and_usage_starts_with_opcode() {
        for w in COMMANDS.windows(2) {
            assert!(
                (w[0].opcode, w[0].service_action) < (w[1].opcode, w[1].service_action),
                "{}",
                w[1].name
            );
        }
        for c in COMMANDS {
            assert_eq!(c.usage[0], c.opcode, "{}", c.name);
            assert!(matches!(c.cdb_len(), 6 | 10 | 12 | 16), "{}", c.name);
            if let Some(sa) = c.service_action {
                assert_eq!(u16::from(c.usage[1] & 0x1f), sa, "{}", c.name);
            }
        }
    }

    #[test]
    fn read10_with_dpo_fua() {
        let cdb = [0x28, 0x18, 0, 0, 0x12, 0x34, 0, 0, 8, 0];
        assert_eq!(
            Cdb::decode(&pad16(&cdb)),
            Ok(Cdb::Read {
                lba: 0x1234,
                blocks: 8,
                dpo: true,
                fua: true
            })
        );
    }

    #[test]
    fn read10_rdprotect_is_invalid_field_byte1_bit7() {
        let cdb = [0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0];
        let s = Cdb::decode(&cdb).unwrap_err();
        assert_eq!((s.key, s.asc, s.ascq), (SenseKey::IllegalRequest, 0x24, 0));
        let f = s.field.unwrap();
        assert!(f.in_cdb);
        assert_eq!((f.byte, f.bit), (1, Some(5)));
    }

    #[test]
    fn read6_zero_length_means_256() {
        let cdb = [0x08, 0x01, 0x02, 0x03, 0, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::Read {
                lba: 0x10203,
                blocks: 256,
                dpo: false,
                fua: false
            })
        );
    }

    #[test]
    fn write16_and_read12() {
        let cdb = [0x8a, 0x08, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0x01, 0, 0x03, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::Write {
                lba: 0x1_0000_0002,
                blocks: 0x100,
                dpo: false,
                fua: true
            })
        );
        let cdb = [0xa8, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::Read {
                lba: 9,
                blocks: 3,
                dpo: false,
                fua: false
            })
        );
    }

    #[test]
    fn orwrite16_fields_and_protect_refused() {
        let cdb = [0x8b, 0x18, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 8, 0, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::OrWrite {
                lba: 0x100,
                blocks: 8,
                dpo: true,
                fua: true
            })
        );
        // ORPROTECT is not in the usage mask: no protection information.
        let mut bad = cdb;
        bad[1] |= 0x20;
        assert!(Cdb::decode(&bad).is_err());
    }

    #[test]
    fn unknown_opcode_is_unsupported() {
        assert_eq!(
            Cdb::decode(&[0x8c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Cdb::Unsupported(0x8c))
        );
        assert_eq!(Cdb::decode(&[0x8d; 16]), Ok(Cdb::Unsupported(0x8d)));
    }

    #[test]
    fn unknown_service_action_is_invalid_field() {
        let s = Cdb::decode(&pad16(&[0x9e, 0x11])).unwrap_err();
        assert_eq!(s.asc, 0x24);
        assert_eq!(s.field.unwrap().byte, 1);
    }

    #[test]
    fn naca_in_control_byte_is_refused() {
        let s = Cdb::decode(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(s.field.unwrap().byte, 5);
        assert_eq!(s.field.unwrap().bit, Some(2));
        // Vendor-specific control bits are ignored.
        assert_eq!(
            Cdb::decode(&[0x00, 0, 0, 0, 0, 0xc0]),
            Ok(Cdb::TestUnitReady)
        );
    }

    #[test]
    fn read_capacity16_and_get_lba_status() {
        let cdb = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        assert_eq!(Cdb::decode(&cdb), Ok(Cdb::ReadCapacity16 { alloc: 32 }));
        let cdb = [0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 24, 0, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::GetLbaStatus { lba: 7, alloc: 24 })
        );
    }

    #[test]
    fn compare_and_write_and_write_same() {
        let cdb = [0x89, 0x08, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0];
        assert_eq!(
            Cdb::decode(&cdb),
            Ok(Cdb::CompareAndWrite {
                lba: 5,
                blocks: 2,
                dpo: false,
                fua: true
            })
        );
        let cdb = [0x41, 0x08, 0, 0, 0, 1, 0, 0, 4, 0];
        assert_eq!(
            Cdb::decode(&pad16(&cdb)),
            Ok(Cdb::WriteSame {
                lba: 1,
                blocks: 4,
                unmap: true,
                ndob: false
            })
        );
        // ANCHOR (byte 1 bit 4) is refused: ANC_SUP is zero in the LBP VPD page.
        let s = Cdb::decode(&pad16(&[0x41, 0x18, 0, 0, 0, 1, 0, 0, 4, 0])).unwrap_err();
        assert_eq!((s.field.unwrap().byte, s.field.unwrap().bit), (1, Some(4)));
    }

    #[test]
    fn verify_bytchk_values() {
        assert_eq!(
            Cdb::decode(&pad16(&[0x2f, 0x12, 0, 0, 0, 0, 0, 0, 1, 0])),
            Ok(Cdb::Verify {
                lba: 0,
                blocks: 1,
                dpo: true,
                bytchk: 1
            })
        );
        assert!(Cdb::decode(&pad16(&[0x2f, 0x04, 0, 0, 0, 0, 0, 0, 1, 0])).is_err());
    }

    #[test]
    fn mode_sense_fields() {
        let cdb = [0x5a, 0x18, 0x7f, 0, 0, 0, 0, 0x01, 0x00, 0];
        assert_eq!(
            Cdb::decode(&pad16(&cdb)),
            Ok(Cdb::ModeSense {
                ten: true,
                dbd: true,
                llbaa: true,
                pc: PageControl::Changeable,
                page: 0x3f,
                subpage: 0,
                alloc: 256
            })
        );
    }

    #[test]
    fn report_supported_opcodes_fields() {
        let cdb = [0xa3, 0x0c, 0x81, 0x28, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(
            Cdb::decode(&pad16(&cdb)),
            Ok(Cdb::ReportSupportedOpcodes {
                rctd: true,
                options: 1,
                opcode: 0x28,
                sa: 0,
                alloc: 4096
            })
        );
    }

    #[test]
    fn a_read16_at_the_last_lbas_encodes_as_16_bytes() {
        let c = Cdb::Read {
            lba: u64::MAX - 3,
            blocks: 8,
            dpo: false,
            fua: false,
        };
        let b = c.encode();
        assert_eq!(b.len(), 16);
        assert_eq!(Cdb::decode(&b), Ok(c));
    }

    #[test]
    fn an_lba_of_2_pow_32_with_no_blocks_encodes_as_16_bytes() {
        // PRE-FETCH(16) at LBA 2^32, length 0: the range ends at 2^32, but
        // the LBA itself does not fit the 10-byte field.
        let c = Cdb::PreFetch {
            lba: 1 << 32,
            blocks: 0,
            immed: false,
        };
        let b = c.encode();
        assert_eq!(b.len(), 16);
        assert_eq!(Cdb::decode(&b), Ok(c));
    }

    #[test]
    fn pr_out_keeps_scope_and_length() {
        let cdb = [0x5f, 0x06, 0x00, 0, 0, 0, 0, 0, 24, 0];
        assert_eq!(
            Cdb::decode(&pad16(&cdb)),
            Ok(Cdb::PersistentReserveOut(PrOutCdb {
                action: PrOutAction::RegisterAndIgnoreExistingKey,
                scope: 0,
                type_code: 0,
                parameter_list_length: 24,
            }))
        );
    }
}
