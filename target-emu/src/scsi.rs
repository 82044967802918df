//! The SCSI executor: the one place every command passes through.
//!
//! For each command, in order (SAM-5 §5.14, SPC-4 §5.14, SPC-4 §5.9.1):
//! 1. a LUN that does not exist: INQUIRY answers peripheral qualifier 011b,
//!    REPORT LUNS and REQUEST SENSE work, anything else is LOGICAL UNIT NOT
//!    SUPPORTED;
//! 2. a pending unit attention is reported (and cleared) to any command
//!    but INQUIRY, REPORT LUNS and REQUEST SENSE;
//! 3. the reservation check: RESERVATION CONFLICT status;
//! 4. CDB decoding and field checks, then the command itself.
//!
//! Writes check [`TaskGuard::is_aborted`] before they touch the medium and
//! are never abandoned half way, so a task management function that waited
//! for the task knows no more I/O follows.
//!
//! Resets (SAM-5 §6.3, RFC 7143 §11.5.1), with the unit attention each one
//! establishes for every I_T nexus, the resetting one included:
//! - LOGICAL UNIT RESET: 29/03 BUS DEVICE RESET FUNCTION OCCURRED;
//! - TARGET WARM RESET: 29/03 as well, the code SPC-4 gives for a reset
//!   task management function;
//! - TARGET COLD RESET: 29/01 POWER ON OCCURRED (RFC 7143: a cold reset is
//!   a power-on of the target);
//! - bus reset (parallel SCSI, FC-AL): 29/02 SCSI BUS RESET OCCURRED.
//!
//! Each aborts the affected tasks and waits for them, clears SCSI-2
//! reservations (persistent reservations survive), PREVENT MEDIUM REMOVAL
//! and the stopped state, and returns mode parameters to their defaults
//! (busrig saves none; SAM-5 §6.3.4 item d). An unloaded removable medium
//! stays unloaded.
//!
//! A cold reset ends every iSCSI session of the target (RFC 7143 §11.5.1),
//! so the 29/01 it queues would die with the nexuses. SAM-5 §6.3.1 wants
//! the power-on condition seen on every I_T nexus, so after a cold reset
//! each I_T nexus that logs in gets 29/01 once on every LU (as a disk
//! reports POWER ON once to each initiator port after power-up; tgt does
//! the same on every new nexus, and libiscsi's login consumes it with TEST
//! UNIT READY).
//!
//! Removable media (RMB 1, SBC-3 §5.25, §5.13): START STOP UNIT with LOEJ 1
//! unloads (START 0) or loads (START 1) the medium; while it is unloaded
//! media commands and READ CAPACITY get NOT READY, MEDIUM NOT PRESENT.
//! Any I_T nexus holding PREVENT makes LOEJ fail with MEDIUM REMOVAL
//! PREVENTED. Loading posts 28/00 NOT READY TO READY CHANGE to the other
//! nexuses (SPC-4 §5.14), which did not ask for the change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use busrig_proto::scsi::cdb::{opcode, Cdb, PageControl};
use busrig_proto::scsi::inquiry::{self, BlockLimits, DeviceIds};
use busrig_proto::scsi::mode::{self, ModeHeader};
use busrig_proto::scsi::provisioning::parse_unmap;
use busrig_proto::scsi::sense::{status, Asc, Sense};
use busrig_proto::scsi::{capacity, opcodes, report_luns};
use bytes::Bytes;
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};
use tracing::{debug, info, warn};

use crate::fault::Faults;
use crate::lu::{LogicalUnit, UaScope, PRODUCT_REVISION};
use crate::nexus::ItNexus;
use crate::tasks::{TaskGuard, TaskRegistry};
use crate::write_data::WriteData;

/// Largest READ/WRITE/VERIFY transfer, in bytes (Block Limits VPD).
const MAX_TRANSFER_BYTES: u32 = 8 << 20;
/// Largest WRITE SAME, in bytes of medium written: no more than one READ
/// can check afterwards.
const MAX_WRITE_SAME_BYTES: u64 = MAX_TRANSFER_BYTES as u64;
/// Largest UNMAP, in blocks (libiscsi and SBC-3 want <= 1 Mi when finite).
const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
const MAX_UNMAP_DESCRIPTORS: u32 = 2048;
/// GET LBA STATUS answers at most this many extents.
const MAX_LBA_STATUS_DESCRIPTORS: usize = 64;
/// After a cold reset, how many distinct I_T nexuses are told of the
/// power-on before the target stops keeping track (bounds the memory a
/// stream of logins with fresh ISIDs can take).
const POWER_ON_NEXUS_LIMIT: usize = 4096;
/// Relative port identifier and target port group of our single port.
const RELATIVE_PORT: u16 = 1;
const PORT_GROUP: u16 = 0;

/// Which reset a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// TARGET WARM RESET task management function.
    Warm,
    /// TARGET COLD RESET task management function.
    Cold,
    /// A reset of the emulated parallel SCSI bus / FC arbitrated loop.
    Bus,
}

impl ResetKind {
    /// The unit attention the reset establishes (see the module docs).
    pub fn unit_attention(self) -> Asc {
        match self {
            ResetKind::Warm => Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
            ResetKind::Cold => Asc::POWER_ON_OCCURRED,
            ResetKind::Bus => Asc::SCSI_BUS_RESET_OCCURRED,
        }
    }
}

/// A task management function named a LUN this target does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no logical unit {0}")]
pub struct NoSuchLun(pub u64);

/// One command as the session layer hands it over.
pub struct ScsiRequest<'a> {
    pub nexus: &'a ItNexus,
    pub lun: u64,
    pub cdb: &'a [u8],
    /// Data-Out received for this command (the initiator's Expected Data
    /// Transfer Length worth, or less).
    pub data_out: WriteData,
    /// The initiator's Expected Data Transfer Length for Data-In.
    pub expected_in: u32,
    pub task: &'a TaskGuard,
}

impl ScsiRequest<'_> {
    /// The first `len` bytes of the Data-Out buffer (fewer if fewer came)
    /// in one piece: a parameter list to parse.
    fn param_list(&self, len: u32) -> Bytes {
        self.data_out.slice(0, len as usize).contiguous()
    }
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiReply {
    /// A `sense::status` code.
    pub status: u8,
    /// Sense data, fixed or descriptor format per the LU's D_SENSE.
    pub sense: Option<Bytes>,
    /// Data-In; may exceed the Expected Data Transfer Length, the session
    /// layer truncates and reports the residual overflow.
    pub data_in: Bytes,
    /// For Data-Out commands: the bytes the CDB asked to transfer.
    pub data_out_wanted: Option<u32>,
}

impl ScsiReply {
    pub fn good(data: Bytes) -> Self {
        ScsiReply {
            status: status::GOOD,
            sense: None,
            data_in: data,
            data_out_wanted: None,
        }
    }
    pub fn check(sense: Sense, d_sense: bool) -> Self {
        ScsiReply {
            status: status::CHECK_CONDITION,
            sense: Some(Bytes::from(sense.encode(d_sense))),
            data_in: Bytes::new(),
            data_out_wanted: None,
        }
    }
    pub fn status(status: u8) -> Self {
        ScsiReply {
            status,
            sense: None,
            data_in: Bytes::new(),
            data_out_wanted: None,
        }
    }
    /// TASK ABORTED status.
    pub fn aborted() -> Self {
        ScsiReply::status(status::TASK_ABORTED)
    }
    /// The sense data decoded (for logs and tests).
    pub fn decoded_sense(&self) -> Option<Sense> {
        self.sense.as_deref().and_then(Sense::decode)
    }
}

/// Truncates parameter data to the CDB's ALLOCATION LENGTH (SPC-4 §4.2.5.6).
fn alloc(mut data: Vec<u8>, len: u32) -> Bytes {
    data.truncate(len as usize);
    Bytes::from(data)
}

/// Why a command did not complete with GOOD.
enum Fail {
    Check(Sense),
    Status(u8),
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Fail {
        Fail::Check(s)
    }
}

impl From<Asc> for Fail {
    fn from(a: Asc) -> Fail {
        Fail::Check(Sense::new(a))
    }
}

type Outcome = Result<ScsiReply, Fail>;

fn invalid_cdb(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(byte, bit))
}

/// The byte of the TRANSFER LENGTH field, for field pointers.
fn length_byte(cdb: &[u8]) -> u16 {
    match cdb[0] >> 5 {
        0 => 4,
        1 | 2 => 7,
        5 => 6,
        _ => 10,
    }
}

/// The SCSI target: its logical units and the I_T nexuses it knows.
pub struct ScsiTarget {
    name: String,
    luns: BTreeMap<u64, Arc<LogicalUnit>>,
    tasks: TaskRegistry,
    nexuses: Mutex<BTreeSet<ItNexus>>,
    /// Injected faults (LUN offline, failing commands of one initiator).
    faults: Arc<Faults>,
    /// I_T nexuses still owed the POWER ON of the last cold reset.
    power_on: Mutex<PowerOnWindow>,
    /// The bus's modelled bandwidth, shared with the other targets on it.
    link: Option<Arc<crate::model::Link>>,
}

/// Which I_T nexuses have been told of the last TARGET COLD RESET (see the
/// module docs). Closed until the first cold reset.
#[derive(Debug, Default)]
struct PowerOnWindow {
    open: bool,
    told: BTreeSet<ItNexus>,
}

impl PowerOnWindow {
    /// A cold reset: every nexus from now on is owed 29/01 once.
    fn reopen(&mut self) {
        self.open = true;
        self.told.clear();
    }

    /// Whether `nexus` is owed the power-on now; it is not owed again.
    fn owed(&mut self, nexus: &ItNexus) -> bool {
        if !self.open || !self.told.insert(nexus.clone()) {
            return false;
        }
        if self.told.len() >= POWER_ON_NEXUS_LIMIT {
            self.open = false;
            self.told.clear();
        }
        true
    }
}

/// Commands that write the medium: the audit records their writers.
fn is_media_write(op: u8) -> bool {
    use opcode::*;
    matches!(
        op,
        WRITE_6
            | WRITE_10
            | WRITE_12
            | WRITE_16
            | ORWRITE_16
            | WRITE_AND_VERIFY_10
            | WRITE_AND_VERIFY_12
            | WRITE_AND_VERIFY_16
            | WRITE_SAME_10
            | WRITE_SAME_16
            | UNMAP
            | COMPARE_AND_WRITE
    )
}

/// Commands that access the medium: the ones an injected `fail` fault hits.
fn is_media_access(op: u8) -> bool {
    use opcode::*;
    is_media_write(op)
        || matches!(
            op,
            READ_6
                | READ_10
                | READ_12
                | READ_16
                | VERIFY_10
                | VERIFY_12
                | VERIFY_16
                | SYNCHRONIZE_CACHE_10
                | SYNCHRONIZE_CACHE_16
                | PRE_FETCH_10
                | PRE_FETCH_16
        )
}

impl ScsiTarget {
    pub fn new(name: &str, luns: Vec<Arc<LogicalUnit>>, tasks: TaskRegistry) -> ScsiTarget {
        ScsiTarget {
            name: name.to_string(),
            luns: luns.into_iter().map(|l| (l.lun(), l)).collect(),
            tasks,
            nexuses: Mutex::new(BTreeSet::new()),
            faults: Arc::new(Faults::new()),
            power_on: Mutex::new(PowerOnWindow::default()),
            link: None,
        }
    }

    /// Moves data over the bus's modelled link (crate::model::Link).
    pub fn with_link(mut self, link: Option<Arc<crate::model::Link>>) -> ScsiTarget {
        self.link = link;
        self
    }

    /// The bus's modelled link, if any.
    pub fn link(&self) -> Option<&Arc<crate::model::Link>> {
        self.link.as_ref()
    }

    /// Shares the bus's fault state with this target.
    pub fn with_faults(mut self, faults: Arc<Faults>) -> ScsiTarget {
        self.faults = faults;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn lun_ids(&self) -> Vec<u64> {
        self.luns.keys().copied().collect()
    }

    pub fn lun(&self, lun: u64) -> Option<&Arc<LogicalUnit>> {
        self.luns.get(&lun)
    }

    pub fn tasks(&self) -> &TaskRegistry {
        &self.tasks
    }

    /// The I_T nexuses with a session (for status and PR OUT).
    pub fn nexuses(&self) -> Vec<ItNexus> {
        self.nexuses.lock().unwrap().iter().cloned().collect()
    }

    /// A session for this nexus logged in: "all nexuses" unit attentions
    /// reach it from now on.
    pub fn nexus_created(&self, nexus: &ItNexus) {
        self.nexuses.lock().unwrap().insert(nexus.clone());
        for lu in self.luns.values() {
            lu.add_nexus(nexus);
        }
        self.tell_power_on(nexus);
    }

    /// A nexus formed after a cold reset gets its POWER ON OCCURRED, once.
    fn tell_power_on(&self, nexus: &ItNexus) {
        if self.power_on.lock().unwrap().owed(nexus) {
            for lu in self.luns.values() {
                lu.post_unit_attention(UaScope::One(nexus.clone()), Asc::POWER_ON_OCCURRED);
            }
        }
    }

    /// The nexus ended: its SCSI-2 reservations are released, its unit
    /// attention queues dropped and its PREVENT MEDIUM REMOVAL cleared.
    /// Persistent reservations and registrations stay (SPC-4 §5.9.2).
    pub fn nexus_lost(&self, nexus: &ItNexus) {
        self.nexuses.lock().unwrap().remove(nexus);
        for lu in self.luns.values() {
            lu.reservations.lock().unwrap().nexus_lost(nexus);
            lu.remove_nexus(nexus);
        }
    }

    /// LOGICAL UNIT RESET (SAM-5 §6.3.4): aborts every task on the LUN and
    /// waits until they are gone, then resets the LU's state and posts
    /// 29/03 to every I_T nexus, `by` included.
    pub async fn lun_reset(&self, lun: u64, by: &ItNexus) -> Result<(), NoSuchLun> {
        let lu = self.luns.get(&lun).ok_or(NoSuchLun(lun))?;
        let name = self.name.clone();
        let aborted = self
            .tasks
            .abort_matching(|t| t.lun == lun && *t.nexus.target == *name)
            .await;
        self.reset_lu(lu, Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        info!(target = %self.name, lun, by = %by, aborted, "logical unit reset");
        Ok(())
    }

    /// TARGET WARM RESET, TARGET COLD RESET or a bus reset: a logical unit
    /// reset of every LUN, with the unit attention of [`ResetKind`].
    pub async fn target_reset(&self, kind: ResetKind, by: &(dyn std::fmt::Display + Sync)) {
        let name = self.name.clone();
        let aborted = self
            .tasks
            .abort_matching(|t| *t.nexus.target == *name)
            .await;
        if kind == ResetKind::Cold {
            // Before the LUs reset, so a nexus logging in meanwhile is told.
            self.power_on.lock().unwrap().reopen();
        }
        for lu in self.luns.values() {
            self.reset_lu(lu, kind.unit_attention());
        }
        info!(target = %self.name, ?kind, by = %by, aborted, "target reset");
    }

    /// Power-cycles one LUN (a fault injected by the control plane): its
    /// tasks end first, then [`LogicalUnit::power_cycle`]. Returns the
    /// number of unflushed cached blocks that were lost.
    pub async fn power_cycle(&self, lun: u64) -> Result<usize, NoSuchLun> {
        let lu = self.luns.get(&lun).ok_or(NoSuchLun(lun))?;
        let name = self.name.clone();
        self.tasks
            .abort_matching(|t| t.lun == lun && *t.nexus.target == *name)
            .await;
        let lost = lu.power_cycle();
        info!(target = %self.name, lun, lost_blocks = lost, "power cycle");
        Ok(lost)
    }

    fn reset_lu(&self, lu: &LogicalUnit, ua: Asc) {
        lu.reservations.lock().unwrap().reset();
        lu.reset_state();
        lu.post_unit_attention(UaScope::All, ua);
    }

    fn remember(&self, nexus: &ItNexus, lu: Option<&LogicalUnit>) {
        let new = self.nexuses.lock().unwrap().insert(nexus.clone());
        if new {
            for lu in self.luns.values() {
                lu.add_nexus(nexus);
            }
            self.tell_power_on(nexus);
        } else if let Some(lu) = lu {
            lu.add_nexus(nexus);
        }
    }

    /// Executes one command.
    pub async fn execute(&self, req: ScsiRequest<'_>) -> ScsiReply {
        let op = req.cdb.first().copied().unwrap_or(0);
        let lu = self.luns.get(&req.lun).cloned();
        self.remember(req.nexus, lu.as_deref());
        let reply = match &lu {
            None => self.no_such_lun(&req),
            Some(lu) => self.execute_on(lu, &req).await,
        };
        debug!(
            target = %self.name,
            lun = req.lun,
            nexus = %req.nexus,
            op = format_args!("{op:#04x}"),
            status = format_args!("{:#04x}", reply.status),
            sense = ?reply.decoded_sense().map(|s| s.to_string()),
            "scsi command"
        );
        reply
    }

    /// SPC-4 §6.6.2, §6.29, §6.33: commands to a LUN that is not there.
    fn no_such_lun(&self, req: &ScsiRequest<'_>) -> ScsiReply {
        let not_supported = || ScsiReply::check(Sense::new(Asc::LUN_NOT_SUPPORTED), false);
        match Cdb::decode(req.cdb) {
            Ok(Cdb::Inquiry {
                evpd: false,
                page: 0,
                alloc: len,
            }) => ScsiReply::good(alloc(
                inquiry::standard(
                    crate::lu::DEFAULT_VENDOR,
                    crate::lu::DEFAULT_PRODUCT,
                    PRODUCT_REVISION,
                    false,
                ),
                len,
            )),
            Ok(Cdb::ReportLuns { select, alloc: len }) => match self.report_luns(select, len) {
                Ok(r) => r,
                Err(Fail::Check(s)) => ScsiReply::check(s, false),
                Err(Fail::Status(s)) => ScsiReply::status(s),
            },
            Ok(Cdb::RequestSense { desc, alloc: len }) => {
                ScsiReply::good(alloc(Sense::new(Asc::LUN_NOT_SUPPORTED).encode(desc), len))
            }
            Ok(_) => not_supported(),
            Err(s)
                if matches!(
                    req.cdb.first(),
                    Some(&opcode::INQUIRY)
                        | Some(&opcode::REPORT_LUNS)
                        | Some(&opcode::REQUEST_SENSE)
                ) =>
            {
                ScsiReply::check(s, false)
            }
            Err(_) => not_supported(),
        }
    }

    async fn execute_on(&self, lu: &Arc<LogicalUnit>, req: &ScsiRequest<'_>) -> ScsiReply {
        let op = req.cdb.first().copied().unwrap_or(0);
        if !Cdb::ignores_unit_attention(op) {
            if let Some(asc) = lu.take_unit_attention(req.nexus) {
                return ScsiReply::check(Sense::new(asc), lu.d_sense());
            }
        }
        if !Cdb::ignores_unit_attention(op) && self.faults.is_lun_offline(&self.name, lu.lun()) {
            return ScsiReply::check(Sense::new(Asc::LUN_OFFLINE), lu.d_sense());
        }
        if lu
            .reservations
            .lock()
            .unwrap()
            .check(req.nexus, req.cdb)
            .is_err()
        {
            return ScsiReply::status(status::RESERVATION_CONFLICT);
        }
        if is_media_access(op) {
            if let Some(sense) = self.faults.take_failure(&req.nexus.initiator) {
                warn!(target = %self.name, lun = lu.lun(), nexus = %req.nexus, %sense, "injected failure");
                return ScsiReply::check(sense, lu.d_sense());
            }
        }
        let cdb = match Cdb::decode(req.cdb) {
            Ok(c) => c,
            Err(s) => return ScsiReply::check(s, lu.d_sense()),
        };
        let wanted = data_out_wanted(&cdb, lu.block_size());
        let mut reply = match self.run(lu, &cdb, req).await {
            Ok(r) => r,
            Err(Fail::Check(s)) => ScsiReply::check(s, lu.d_sense()),
            Err(Fail::Status(s)) => ScsiReply::status(s),
        };
        reply.data_out_wanted = wanted;
        if reply.status == status::GOOD && is_media_write(op) {
            lu.record_write(req.nexus);
        }
        if let Some(link) = &self.link {
            // The data crosses the bus: Data-Out before, Data-In after the
            // medium; one booking for both keeps the model simple.
            let moved = (reply.data_in.len() + req.data_out.len()) as u64;
            if moved > 0 {
                crate::model::wait_until(link.admit(&req.nexus.initiator, moved)).await;
            }
        }
        reply
    }

    async fn run(&self, lu: &Arc<LogicalUnit>, cdb: &Cdb, req: &ScsiRequest<'_>) -> Outcome {
        match *cdb {
            Cdb::TestUnitReady => {
                ready(lu)?;
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::RequestSense { desc, alloc: len } => {
                // SPC-4 §5.14: REQUEST SENSE reports the oldest unit
                // attention as its parameter data and clears it.
                let sense = match lu.take_unit_attention(req.nexus) {
                    Some(asc) => Sense::new(asc),
                    None if lu.ejected() => Sense::new(Asc::MEDIUM_NOT_PRESENT),
                    None if lu.stopped() => Sense::new(Asc::LUN_NOT_READY_INIT_REQUIRED),
                    None => Sense::new(Asc::NO_ADDITIONAL_SENSE),
                };
                Ok(ScsiReply::good(alloc(sense.encode(desc), len)))
            }
            Cdb::Inquiry {
                evpd,
                page,
                alloc: len,
            } => self.inquiry(lu, req.nexus, evpd, page, len),
            Cdb::ReportLuns { select, alloc: len } => self.report_luns(select, len),
            Cdb::ReadCapacity10 { lba, pmi } => {
                // SBC-3 §5.16: with PMI zero the LBA field must be zero.
                if !pmi && lba != 0 {
                    return Err(invalid_cdb(2, None));
                }
                medium_present(lu)?;
                Ok(ScsiReply::good(Bytes::copy_from_slice(
                    &capacity::read_capacity10(lu.blocks(), lu.block_size()),
                )))
            }
            Cdb::ReadCapacity16 { alloc: len } => {
                medium_present(lu)?;
                let d = capacity::read_capacity16(
                    lu.blocks(),
                    lu.block_size(),
                    lu.lbppb_exponent(),
                    true,
                    true,
                );
                Ok(ScsiReply::good(alloc(d.to_vec(), len)))
            }
            Cdb::Read { lba, blocks, .. } => {
                ready(lu)?;
                max_transfer(lu, req.cdb, blocks)?;
                in_range(lu, lba, blocks.into())?;
                if blocks == 0 {
                    return Ok(ScsiReply::good(Bytes::new()));
                }
                let _g = shared(lu, req.task).await?;
                let data = lu
                    .read(lba, blocks)
                    .await
                    .map_err(|e| io_fail(lu, "read", e))?;
                Ok(ScsiReply::good(Bytes::from(data)))
            }
            Cdb::Write {
                lba, blocks, fua, ..
            } => {
                let n = write_preamble(lu, req, lba, blocks)?;
                if n == 0 {
                    return Ok(ScsiReply::good(Bytes::new()));
                }
                let _g = shared(lu, req.task).await?;
                let data = req.data_out.slice(0, n as usize * lu.block_size() as usize);
                write(lu, req.task, lba, data, fua || !lu.mode().wce).await?;
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::OrWrite {
                lba, blocks, fua, ..
            } => {
                let n = write_preamble(lu, req, lba, blocks)?;
                if n == 0 {
                    return Ok(ScsiReply::good(Bytes::new()));
                }
                // SBC-3 §5.9: read, OR and write are one atomic operation
                // with respect to every other command on the LU.
                let _g = exclusive(lu, req.task).await?;
                let mut medium = lu.read(lba, n).await.map_err(|e| io_fail(lu, "read", e))?;
                for (m, d) in medium.iter_mut().zip(req.data_out.contiguous().iter()) {
                    *m |= d;
                }
                write(lu, req.task, lba, medium.into(), fua || !lu.mode().wce).await?;
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::WriteAndVerify {
                lba,
                blocks,
                bytchk,
                ..
            } => {
                let n = write_preamble(lu, req, lba, blocks)?;
                if n == 0 {
                    return Ok(ScsiReply::good(Bytes::new()));
                }
                let _g = shared(lu, req.task).await?;
                let data = req.data_out.slice(0, n as usize * lu.block_size() as usize);
                // SBC-3 §5.40: the data is verified on the medium, so it
                // must be there first.
                write(lu, req.task, lba, data.clone(), true).await?;
                let data = data.contiguous();
                let back = lu.read(lba, n).await.map_err(|e| io_fail(lu, "read", e))?;
                if bytchk {
                    if let Some(at) = first_difference(&back, &data) {
                        return Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                            .with_information(at as u64)
                            .into());
                    }
                }
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::Verify {
                lba,
                blocks,
                bytchk,
                ..
            } => {
                ready(lu)?;
                max_transfer(lu, req.cdb, blocks)?;
                in_range(lu, lba, blocks.into())?;
                if blocks == 0 {
                    return Ok(ScsiReply::good(Bytes::new()));
                }
                let _g = shared(lu, req.task).await?;
                let medium = lu
                    .read(lba, blocks)
                    .await
                    .map_err(|e| io_fail(lu, "read", e))?;
                let bs = lu.block_size() as usize;
                let miscompare = match bytchk {
                    0 => None,
                    1 => {
                        let n = received_blocks(lu, &req.data_out, blocks) as usize * bs;
                        first_difference(&medium[..n], &req.data_out.slice(0, n).contiguous())
                    }
                    _ => {
                        // BYTCHK 11b: one block compared with every block.
                        if req.data_out.len() < bs {
                            return Err(Asc::PARAMETER_LIST_LENGTH_ERROR.into());
                        }
                        let one = req.data_out.slice(0, bs).contiguous();
                        let one = &one[..];
                        medium
                            .chunks(bs)
                            .enumerate()
                            .find_map(|(i, blk)| first_difference(blk, one).map(|at| i * bs + at))
                    }
                };
                match miscompare {
                    Some(at) => Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                        .with_information(at as u64)
                        .into()),
                    None => Ok(ScsiReply::good(Bytes::new())),
                }
            }
            Cdb::SynchronizeCache { lba, blocks, .. } => {
                ready(lu)?;
                in_range(lu, lba, blocks.into())?;
                lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::PreFetch { lba, blocks, .. } => {
                ready(lu)?;
                in_range(lu, lba, blocks.into())?;
                // SBC-3 §5.10: GOOD (not CONDITION MET) because residency in
                // the host page cache cannot be promised.
                let n = if blocks == 0 {
                    lu.blocks() - lba
                } else {
                    blocks.into()
                };
                lu.prefetch(lba, n)
                    .await
                    .map_err(|e| io_fail(lu, "read", e))?;
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc: len,
            } => self.mode_sense(lu, ten, dbd, llbaa, pc, page, subpage, len),
            Cdb::ModeSelect { ten, pf, sp, len } => {
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
            Cdb::StartStopUnit {
                power_condition,
                no_flush,
                loej,
                start,
                ..
            } => {
                match power_condition {
                    0 => {}
                    // SBC-3 §5.25: ACTIVE, IDLE, STANDBY, LU_CONTROL,
                    // FORCE_IDLE_0, FORCE_STANDBY_0; START and LOEJ are then
                    // ignored. An emulated disk has no power states.
                    1 | 2 | 3 | 7 | 0xa | 0xb => return Ok(ScsiReply::good(Bytes::new())),
                    _ => return Err(invalid_cdb(4, Some(7))),
                }
                if loej {
                    return self.load_or_eject(lu, req.nexus, start, no_flush).await;
                }
                if !start && !no_flush && !lu.ejected() {
                    lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
                }
                lu.set_stopped(!start);
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::PreventAllow { prevent } => {
                // SBC-3 §5.13: 10b and 11b are obsolete.
                if prevent > 1 {
                    return Err(invalid_cdb(4, Some(1)));
                }
                lu.set_prevent(req.nexus, prevent == 1);
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::CompareAndWrite {
                lba, blocks, fua, ..
            } => self.compare_and_write(lu, req, lba, blocks, fua).await,
            Cdb::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => self.write_same(lu, req, lba, blocks, unmap, ndob).await,
            Cdb::Unmap { len } => self.unmap(lu, req, len).await,
            Cdb::GetLbaStatus { lba, alloc: len } => {
                ready(lu)?;
                if lba >= lu.blocks() {
                    return Err(Asc::LBA_OUT_OF_RANGE.into());
                }
                let max =
                    ((len as usize).saturating_sub(8) / 16).clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
                let extents = lu
                    .lba_status(lba, max)
                    .await
                    .map_err(|e| io_fail(lu, "read", e))?;
                let data = busrig_proto::scsi::provisioning::lba_status(&extents);
                Ok(ScsiReply::good(alloc(data, len)))
            }
            Cdb::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc: len,
            } => {
                let data = if options == 0 {
                    opcodes::all_commands(rctd)
                } else {
                    opcodes::one_command(options, opcode, sa, rctd)?
                };
                Ok(ScsiReply::good(alloc(data, len)))
            }
            Cdb::Reserve { .. } => match lu.reservations.lock().unwrap().reserve6(req.nexus) {
                Ok(()) => Ok(ScsiReply::good(Bytes::new())),
                Err(_) => Err(Fail::Status(status::RESERVATION_CONFLICT)),
            },
            Cdb::Release { .. } => {
                lu.reservations.lock().unwrap().release6(req.nexus);
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::PersistentReserveIn { alloc: len, .. } => {
                let r = lu
                    .reservations
                    .lock()
                    .unwrap()
                    .persistent_reserve_in(req.nexus, req.cdb);
                match r {
                    Ok(data) => Ok(ScsiReply::good(alloc(data, len))),
                    Err(e) => Err(pr_fail(e)),
                }
            }
            Cdb::PersistentReserveOut { len, .. } => {
                self.persistent_reserve_out(lu, req, len).await
            }
            Cdb::Unsupported(_) => Err(Asc::INVALID_COMMAND_OPERATION_CODE.into()),
        }
    }

    fn inquiry(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        evpd: bool,
        page: u8,
        len: u32,
    ) -> Outcome {
        let spec = lu.spec();
        let data = if !evpd {
            // SPC-4 §6.6.1: PAGE CODE must be zero without EVPD.
            if page != 0 {
                return Err(invalid_cdb(2, Some(7)));
            }
            let mut std = inquiry::standard(&spec.vendor, &spec.product, PRODUCT_REVISION, true);
            if lu.removable() {
                std[1] |= inquiry::RMB;
            }
            std
        } else {
            match page {
                inquiry::vpd::SUPPORTED_PAGES => inquiry::supported_pages(),
                inquiry::vpd::UNIT_SERIAL_NUMBER => inquiry::unit_serial(&spec.serial),
                inquiry::vpd::DEVICE_IDENTIFICATION => inquiry::device_identification(&DeviceIds {
                    naa: lu.naa(),
                    vendor: &spec.vendor,
                    serial: &spec.serial,
                    target_name: &self.name,
                    tpgt: nexus.tpgt,
                    relative_port: RELATIVE_PORT,
                    port_group: PORT_GROUP,
                }),
                inquiry::vpd::BLOCK_LIMITS => inquiry::block_limits(&block_limits(lu)),
                inquiry::vpd::BLOCK_DEVICE_CHARACTERISTICS => {
                    inquiry::block_device_characteristics()
                }
                inquiry::vpd::LOGICAL_BLOCK_PROVISIONING => inquiry::logical_block_provisioning(),
                _ => return Err(invalid_cdb(2, Some(7))),
            }
        };
        Ok(ScsiReply::good(alloc(data, len)))
    }

    fn report_luns(&self, select: u8, len: u32) -> Outcome {
        // SPC-4 §6.33: at least 16 bytes must be allowed for.
        if len < 16 {
            return Err(invalid_cdb(6, None));
        }
        let luns = match select {
            0 | 2 => self.lun_ids(),
            // Well-known logical units only: busrig has none.
            1 => Vec::new(),
            _ => return Err(invalid_cdb(2, Some(7))),
        };
        Ok(ScsiReply::good(alloc(
            report_luns::LunList::from_numbers(&luns).encode(),
            len,
        )))
    }

    #[allow(clippy::too_many_arguments)]
    fn mode_sense(
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

    /// START STOP UNIT with LOEJ 1 (SBC-3 §5.25): unload (START 0) or load
    /// (START 1) a removable medium, unless an I_T nexus prevents removal
    /// (SBC-3 §5.13; libiscsi's PreventAllow.Eject expects loading refused
    /// as well).
    async fn load_or_eject(
        &self,
        lu: &LogicalUnit,
        nexus: &ItNexus,
        start: bool,
        no_flush: bool,
    ) -> Outcome {
        if !lu.removable() {
            // RMB 0: there is nothing to load or unload.
            return Err(invalid_cdb(4, Some(1)));
        }
        if lu.removal_prevented() {
            return Err(Asc::MEDIUM_REMOVAL_PREVENTED.into());
        }
        if start {
            if lu.set_ejected(false) {
                lu.post_unit_attention(
                    UaScope::AllExcept(nexus.clone()),
                    Asc::NOT_READY_TO_READY_CHANGE,
                );
                info!(target = %self.name, lun = lu.lun(), by = %nexus, "medium loaded");
            }
        } else if !lu.ejected() {
            // Cached writes reach the medium before it leaves the drive.
            if !no_flush {
                lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
            }
            lu.set_ejected(true);
            info!(target = %self.name, lun = lu.lun(), by = %nexus, "medium unloaded");
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    async fn compare_and_write(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u8,
        fua: bool,
    ) -> Outcome {
        ready(lu)?;
        // A Data-Out buffer longer than the largest COMPARE AND WRITE we
        // accept asks for more than MAXIMUM COMPARE AND WRITE LENGTH, even
        // when the one-byte NUMBER OF LOGICAL BLOCKS wrapped to zero (SBC-3
        // §5.3, §6.5.3).
        let bs = lu.block_size() as usize;
        if req.data_out.len() > 2 * usize::from(block_limits(lu).max_compare_and_write) * bs {
            return Err(invalid_cdb(13, None));
        }
        in_range(lu, lba, blocks.into())?;
        // SBC-3 §5.3: zero blocks is not an error and transfers nothing.
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        protect(lu)?;
        let half = blocks as usize * bs;
        if req.data_out.len() != 2 * half {
            // The Data-Out buffer must hold the verify and the write data
            // for exactly NUMBER OF LOGICAL BLOCKS.
            return Err(invalid_cdb(13, None));
        }
        let _g = exclusive(lu, req.task).await?;
        let medium = lu
            .read(lba, blocks.into())
            .await
            .map_err(|e| io_fail(lu, "read", e))?;
        if let Some(at) = first_difference(&medium, &req.data_out.slice(0, half).contiguous()) {
            // SBC-3 §5.3: INFORMATION is the offset of the first byte that
            // did not match.
            return Err(Sense::new(Asc::MISCOMPARE_DURING_VERIFY)
                .with_information(at as u64)
                .into());
        }
        write(
            lu,
            req.task,
            lba,
            req.data_out.slice(half, usize::MAX),
            fua || !lu.mode().wce,
        )
        .await?;
        Ok(ScsiReply::good(Bytes::new()))
    }

    async fn write_same(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    ) -> Outcome {
        ready(lu)?;
        let max = block_limits(lu).max_write_same;
        if u64::from(blocks) > max {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        in_range(lu, lba, blocks.into())?;
        // SBC-3 §5.42: with WSNZ clear, zero blocks means from LBA to the
        // last block, and MAXIMUM WRITE SAME LENGTH still applies.
        let blocks = if blocks == 0 {
            lu.blocks() - lba
        } else {
            u64::from(blocks)
        };
        if blocks > max {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        let blocks = blocks as u32;
        if blocks == 0 {
            return Ok(ScsiReply::good(Bytes::new()));
        }
        protect(lu)?;
        let bs = lu.block_size() as usize;
        if !ndob && req.data_out.len() != bs {
            return Err(invalid_cdb(length_byte(req.cdb), None));
        }
        let _g = shared(lu, req.task).await?;
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        if unmap {
            lu.deallocate(lba, blocks.into())
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
            return Ok(ScsiReply::good(Bytes::new()));
        }
        let one = if ndob {
            Bytes::new()
        } else {
            req.data_out.contiguous()
        };
        let one = &one[..];
        let chunk_blocks = (1usize << 20) / bs;
        let mut pattern = Vec::with_capacity(chunk_blocks * bs);
        for _ in 0..chunk_blocks.min(blocks as usize) {
            if ndob {
                pattern.resize(pattern.len() + bs, 0);
            } else {
                pattern.extend_from_slice(one);
            }
        }
        let pattern = Bytes::from(pattern);
        let mut done = 0u32;
        while done < blocks {
            let n = (blocks - done).min(chunk_blocks as u32);
            let data = pattern.slice(..n as usize * bs);
            lu.write(lba + u64::from(done), data.into(), false)
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
            done += n;
        }
        if !lu.mode().wce {
            lu.sync().await.map_err(|e| io_fail(lu, "write", e))?;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    async fn unmap(&self, lu: &LogicalUnit, req: &ScsiRequest<'_>, len: u32) -> Outcome {
        ready(lu)?;
        protect(lu)?;
        let data = &req.param_list(len)[..];
        let descs = parse_unmap(data)?;
        if descs.len() > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                .param_field(2, None)
                .into());
        }
        // Check every descriptor before deallocating anything.
        let mut total = 0u64;
        for (i, d) in descs.iter().enumerate() {
            if d.lba
                .checked_add(d.blocks.into())
                .is_none_or(|end| end > lu.blocks())
            {
                return Err(Sense::new(Asc::LBA_OUT_OF_RANGE).into());
            }
            total += u64::from(d.blocks);
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                    .param_field((8 + 16 * i + 8) as u16, None)
                    .into());
            }
        }
        let _g = shared(lu, req.task).await?;
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        for d in descs.iter().filter(|d| d.blocks > 0) {
            lu.deallocate(d.lba, d.blocks.into())
                .await
                .map_err(|e| io_fail(lu, "write", e))?;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }

    async fn persistent_reserve_out(
        &self,
        lu: &LogicalUnit,
        req: &ScsiRequest<'_>,
        len: u32,
    ) -> Outcome {
        if req.task.is_aborted() {
            return Err(Fail::Status(status::TASK_ABORTED));
        }
        let param = &req.param_list(len)[..];
        let known = self.nexuses();
        let r = lu
            .reservations
            .lock()
            .unwrap()
            .persistent_reserve_out(req.nexus, req.cdb, param, &known);
        let effects = r.map_err(pr_fail)?;
        for (n, asc) in &effects.unit_attentions {
            lu.post_unit_attention(UaScope::One(n.clone()), *asc);
        }
        if !effects.abort_tasks_of.is_empty() {
            // SPC-4 §5.9.11.5: PREEMPT AND ABORT aborts the preempted
            // nexuses' tasks on this LU before it completes. The task
            // carrying this command cannot be told apart from its nexus's
            // other tasks, so the requesting nexus's own tasks are left
            // running rather than waiting on ourselves.
            let victims: BTreeSet<ItNexus> = effects
                .abort_tasks_of
                .iter()
                .filter(|n| *n != req.nexus)
                .cloned()
                .collect();
            let lun = lu.lun();
            let name = self.name.clone();
            self.tasks
                .abort_matching(|t| {
                    t.lun == lun && *t.nexus.target == *name && victims.contains(&t.nexus)
                })
                .await;
        }
        Ok(ScsiReply::good(Bytes::new()))
    }
}

fn pr_fail(e: crate::reservation::PrError) -> Fail {
    match e {
        crate::reservation::PrError::Conflict => Fail::Status(status::RESERVATION_CONFLICT),
        crate::reservation::PrError::Sense(s) => Fail::Check(s),
    }
}

/// The Block Limits this LU advertises (and enforces).
fn block_limits(lu: &LogicalUnit) -> BlockLimits {
    let bs = lu.block_size();
    // SBC-3 §6.5.3: transfers and unmaps are best in whole physical blocks.
    let per_physical = lu.blocks_per_physical_block();
    BlockLimits {
        max_compare_and_write: 255,
        optimal_granularity: per_physical as u16,
        max_transfer: MAX_TRANSFER_BYTES / bs,
        optimal_transfer: (1 << 20) / bs,
        max_prefetch: MAX_TRANSFER_BYTES / bs,
        max_unmap_lba_count: MAX_UNMAP_BLOCKS,
        max_unmap_descriptors: MAX_UNMAP_DESCRIPTORS,
        // Hole punching works in file system blocks (4 KiB), and a physical
        // block is deallocated as a whole or not at all. Physical blocks
        // start at LBA 0 (LOWEST ALIGNED LBA 0), so granules do too.
        optimal_unmap_granularity: (4096 / bs).max(per_physical),
        unmap_granularity_alignment: Some(0),
        max_write_same: MAX_WRITE_SAME_BYTES / u64::from(bs),
    }
}

/// The Data-Out length the CDB asks for.
fn data_out_wanted(cdb: &Cdb, bs: u32) -> Option<u32> {
    Some(match *cdb {
        Cdb::Write { blocks, .. }
        | Cdb::WriteAndVerify { blocks, .. }
        | Cdb::OrWrite { blocks, .. } => blocks.saturating_mul(bs),
        Cdb::Verify {
            blocks, bytchk: 1, ..
        } => blocks.saturating_mul(bs),
        Cdb::Verify { bytchk: 3, .. } => bs,
        Cdb::CompareAndWrite { blocks, .. } => 2 * u32::from(blocks) * bs,
        Cdb::WriteSame { ndob, .. } => {
            if ndob {
                0
            } else {
                bs
            }
        }
        Cdb::Unmap { len }
        | Cdb::ModeSelect { len, .. }
        | Cdb::PersistentReserveOut { len, .. } => len,
        _ => return None,
    })
}

/// Media access needs a medium (SBC-3 §5.25: an unloaded removable medium
/// is NOT READY, MEDIUM NOT PRESENT) and a started unit (SBC-3 §4.19).
fn ready(lu: &LogicalUnit) -> Result<(), Fail> {
    medium_present(lu)?;
    if lu.stopped() {
        return Err(Asc::LUN_NOT_READY_INIT_REQUIRED.into());
    }
    Ok(())
}

/// The capacity of an unloaded medium is unknown too (libiscsi's
/// NoMedia.NoMediaSBC expects READ CAPACITY to fail like media access).
fn medium_present(lu: &LogicalUnit) -> Result<(), Fail> {
    if lu.ejected() {
        return Err(Asc::MEDIUM_NOT_PRESENT.into());
    }
    Ok(())
}

/// SBC-3 §4.5: the whole range must lie within the capacity.
fn in_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> Result<(), Fail> {
    match lba.checked_add(blocks) {
        Some(end) if lba <= lu.blocks() && end <= lu.blocks() => Ok(()),
        _ => Err(Asc::LBA_OUT_OF_RANGE.into()),
    }
}

/// SBC-3 §6.5.3: a TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH.
fn max_transfer(lu: &LogicalUnit, cdb: &[u8], blocks: u32) -> Result<(), Fail> {
    if blocks > MAX_TRANSFER_BYTES / lu.block_size() {
        return Err(invalid_cdb(length_byte(cdb), None));
    }
    Ok(())
}

/// DATA PROTECT, WRITE PROTECTED for read-only LUs and SWP (SBC-3 §4.13).
fn protect(lu: &LogicalUnit) -> Result<(), Fail> {
    if lu.write_protected() {
        return Err(Asc::WRITE_PROTECTED.into());
    }
    Ok(())
}

/// Whole blocks of Data-Out actually received, at most `blocks`: when the
/// initiator's Expected Data Transfer Length is shorter than the CDB asks,
/// only what it sent is written (libiscsi's residual tests; RFC 7143
/// §11.4.5.2 residual overflow).
/// The checks every write-type command (WRITE, ORWRITE, WRITE AND VERIFY)
/// makes before touching the medium, in SBC-3's order: ready, transfer
/// length, LBA range, write protection. Returns how many whole blocks the
/// Data-Out buffer holds (zero: nothing to do).
fn write_preamble(
    lu: &LogicalUnit,
    req: &ScsiRequest<'_>,
    lba: u64,
    blocks: u32,
) -> Result<u32, Fail> {
    ready(lu)?;
    max_transfer(lu, req.cdb, blocks)?;
    in_range(lu, lba, blocks.into())?;
    protect(lu)?;
    Ok(received_blocks(lu, &req.data_out, blocks))
}

fn received_blocks(lu: &LogicalUnit, data: &WriteData, blocks: u32) -> u32 {
    ((data.len() / lu.block_size() as usize) as u64).min(u64::from(blocks)) as u32
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn io_fail(lu: &LogicalUnit, what: &str, e: std::io::Error) -> Fail {
    warn!(lun = lu.lun(), path = %lu.spec().path.display(), error = %e, "{what} failed");
    if what == "read" {
        Asc::UNRECOVERED_READ_ERROR.into()
    } else {
        Asc::WRITE_ERROR.into()
    }
}

/// Shared access to the medium, given up if the task is aborted while
/// waiting (a COMPARE AND WRITE may hold it).
async fn shared<'a>(
    lu: &'a LogicalUnit,
    task: &TaskGuard,
) -> Result<RwLockReadGuard<'a, ()>, Fail> {
    tokio::select! {
        biased;
        g = lu.media_lock.read() => Ok(g),
        _ = task.aborted() => Err(Fail::Status(status::TASK_ABORTED)),
    }
}

/// Exclusive access for COMPARE AND WRITE.
async fn exclusive<'a>(
    lu: &'a LogicalUnit,
    task: &TaskGuard,
) -> Result<RwLockWriteGuard<'a, ()>, Fail> {
    tokio::select! {
        biased;
        g = lu.media_lock.write() => Ok(g),
        _ = task.aborted() => Err(Fail::Status(status::TASK_ABORTED)),
    }
}

/// The last abort check before the medium changes; after it the write is
/// carried out completely.
async fn write(
    lu: &LogicalUnit,
    task: &TaskGuard,
    lba: u64,
    data: WriteData,
    sync: bool,
) -> Result<(), Fail> {
    if task.is_aborted() {
        return Err(Fail::Status(status::TASK_ABORTED));
    }
    lu.write(lba, data, sync)
        .await
        .map_err(|e| io_fail(lu, "write", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lu::LunSpec;
    use crate::tasks::TaskInfo;
    use busrig_proto::scsi::provisioning::{encode_unmap, UnmapDescriptor};
    use busrig_proto::scsi::sense::SenseKey;
    use std::sync::atomic::{AtomicU32, Ordering};

    const BLOCKS: u64 = 2048;

    struct Rig {
        _dir: tempfile::TempDir,
        target: Arc<ScsiTarget>,
        a: ItNexus,
        b: ItNexus,
    }

    static ITT: AtomicU32 = AtomicU32::new(1);

    fn rig_with(bs: u32, read_only: bool) -> Rig {
        rig_spec(bs, |s| s.read_only = read_only)
    }

    /// LUN 0 configured by `lun0`, LUN 2 a plain disk.
    fn rig_spec(bs: u32, lun0: impl FnOnce(&mut LunSpec)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mk = |lun: u64| {
            LunSpec::new(
                lun,
                dir.path().join(format!("lun{lun}.img")),
                BLOCKS * u64::from(bs),
                bs,
                false,
                format!("SER{lun}"),
            )
        };
        let mut spec0 = mk(0);
        lun0(&mut spec0);
        let luns = [spec0, mk(2)]
            .into_iter()
            .map(|spec| Arc::new(LogicalUnit::open(spec, "iqn.2024-01.test:t").unwrap()))
            .collect();
        let target = Arc::new(ScsiTarget::new(
            "iqn.2024-01.test:t",
            luns,
            TaskRegistry::new(),
        ));
        let a = ItNexus::new(
            "iqn.2024-01.test:a",
            [0x40, 0, 0, 0, 0, 1],
            "iqn.2024-01.test:t",
            1,
        );
        let b = ItNexus::new(
            "iqn.2024-01.test:b",
            [0x40, 0, 0, 0, 0, 2],
            "iqn.2024-01.test:t",
            1,
        );
        target.nexus_created(&a);
        target.nexus_created(&b);
        Rig {
            _dir: dir,
            target,
            a,
            b,
        }
    }

    fn rig() -> Rig {
        rig_with(512, false)
    }

    async fn exec(t: &ScsiTarget, n: &ItNexus, lun: u64, cdb: &[u8], data: &[u8]) -> ScsiReply {
        let itt = ITT.fetch_add(1, Ordering::Relaxed);
        let guard = t.tasks().register(TaskInfo {
            nexus: n.clone(),
            lun,
            itt,
            cmd_sn: itt,
        });
        let mut c = cdb.to_vec();
        c.resize(16, 0);
        t.execute(ScsiRequest {
            nexus: n,
            lun,
            cdb: &c,
            data_out: Bytes::copy_from_slice(data).into(),
            expected_in: 1 << 24,
            task: &guard,
        })
        .await
    }

    impl Rig {
        async fn cmd(&self, cdb: &[u8], data: &[u8]) -> ScsiReply {
            exec(&self.target, &self.a, 0, cdb, data).await
        }
    }

    fn sense(r: &ScsiReply) -> (SenseKey, u8, u8) {
        assert_eq!(
            r.status,
            status::CHECK_CONDITION,
            "expected CHECK CONDITION, got {r:?}"
        );
        let s = r.decoded_sense().unwrap();
        (s.key, s.asc, s.ascq)
    }

    fn good(r: &ScsiReply) -> &[u8] {
        assert_eq!(
            r.status,
            status::GOOD,
            "expected GOOD, got {:?} {:?}",
            r.status,
            r.decoded_sense()
        );
        &r.data_in
    }

    const INVALID_FIELD: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x24, 0);
    const OOB: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x21, 0);

    fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
        let mut c = vec![op, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.push(0);
        c.extend_from_slice(&n.to_be_bytes());
        c.push(0);
        c
    }

    fn rw16(op: u8, lba: u64, n: u32, flags: u8) -> Vec<u8> {
        let mut c = vec![op, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.extend_from_slice(&n.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    fn caw(lba: u64, n: u8, flags: u8) -> Vec<u8> {
        let mut c = rw16(opcode::COMPARE_AND_WRITE, lba, 0, flags);
        c[13] = n;
        c
    }

    #[tokio::test]
    async fn inquiry_standard_vpd_and_field_checks() {
        let r = rig();
        let std = good(&r.cmd(&[0x12, 0, 0, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(std.len(), 96);
        assert_eq!(std[0], 0);
        assert_eq!(std[4] as usize, std.len() - 5);
        assert_eq!(&std[8..16], b"BUSRIG  ");
        // Allocation length truncates.
        assert_eq!(good(&r.cmd(&[0x12, 0, 0, 0, 5, 0], &[]).await).len(), 5);
        // EVPD 0 with a page code: INVALID FIELD IN CDB pointing at byte 2.
        let rep = r.cmd(&[0x12, 0, 1, 0, 255, 0], &[]).await;
        assert_eq!(sense(&rep), INVALID_FIELD);
        assert_eq!(rep.decoded_sense().unwrap().field.unwrap().byte, 2);
        let pages = good(&r.cmd(&[0x12, 1, 0, 0, 255, 0], &[]).await).to_vec();
        for &p in &pages[4..] {
            let d = good(&r.cmd(&[0x12, 1, p, 0, 255, 0], &[]).await).to_vec();
            assert_eq!(d[1], p);
            assert_eq!(u16::from_be_bytes([d[2], d[3]]) as usize, d.len() - 4);
        }
        assert_eq!(
            sense(&r.cmd(&[0x12, 1, 0x85, 0, 255, 0], &[]).await),
            INVALID_FIELD
        );
        let sn = good(&r.cmd(&[0x12, 1, 0x80, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(&sn[4..], b"SER0");
        let id = good(&r.cmd(&[0x12, 1, 0x83, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(&id[4..8], &[0x01, 0x03, 0, 16]);
        assert_eq!(&id[8..24], &r.target.lun(0).unwrap().naa());
        let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
        assert_eq!(bl.len(), 64);
        assert_eq!(bl[3], 0x3c);
        assert_eq!(
            u32::from_be_bytes(bl[8..12].try_into().unwrap()),
            MAX_TRANSFER_BYTES / 512
        );
        let lbp = good(&r.cmd(&[0x12, 1, 0xb2, 0, 64, 0], &[]).await).to_vec();
        assert_eq!(lbp[5] & 0xe4, 0xe4, "LBPU, LBPWS, LBPWS10, LBPRZ");
    }

    #[tokio::test]
    async fn missing_lun_behaviour() {
        let r = rig();
        let inq = exec(&r.target, &r.a, 7, &[0x12, 0, 0, 0, 96, 0], &[]).await;
        assert_eq!(good(&inq)[0], 0x7f);
        assert_eq!(
            sense(&exec(&r.target, &r.a, 7, &[0, 0, 0, 0, 0, 0], &[]).await),
            (SenseKey::IllegalRequest, 0x25, 0)
        );
        let rl = exec(
            &r.target,
            &r.a,
            7,
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            &[],
        )
        .await;
        assert_eq!(
            good(&rl),
            &[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
        );
        let rs = exec(&r.target, &r.a, 7, &[0x03, 0, 0, 0, 18, 0], &[]).await;
        let s = Sense::decode(good(&rs)).unwrap();
        assert_eq!((s.asc, s.ascq), (0x25, 0));
    }

    #[tokio::test]
    async fn report_luns_and_allocation_minimum() {
        let r = rig();
        let d = good(&r.cmd(&[0xa0, 0, 2, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await).to_vec();
        assert_eq!(d.len(), 24);
        assert_eq!(
            sense(&r.cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0], &[]).await),
            INVALID_FIELD
        );
        assert_eq!(
            sense(&r.cmd(&[0xa0, 0, 3, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await),
            INVALID_FIELD
        );
    }

    #[tokio::test]
    async fn read_capacity_10_and_16() {
        let r = rig_with(4096, false);
        let d = good(&r.cmd(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await).to_vec();
        assert_eq!(d, [0, 0, 0x07, 0xff, 0, 0, 0x10, 0]);
        assert_eq!(
            sense(&r.cmd(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]).await),
            INVALID_FIELD
        );
        let d = good(
            &r.cmd(
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), BLOCKS - 1);
        assert_eq!(d[14] & 0xc0, 0xc0, "LBPME and LBPRZ");
        // libiscsi's mandatory SBC test asks for 15 bytes.
        assert_eq!(
            good(
                &r.cmd(
                    &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0],
                    &[]
                )
                .await
            )
            .len(),
            15
        );
    }

    #[tokio::test]
    async fn write_read_every_size_and_flags() {
        let r = rig();
        let data: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
        good(&r.cmd(&rw10(0x2a, 10, 4, 0x08), &data).await);
        assert_eq!(good(&r.cmd(&rw10(0x28, 10, 4, 0x18), &[]).await), &data[..]);
        assert_eq!(
            good(&r.cmd(&rw16(0x88, 11, 1, 0), &[]).await),
            &data[512..1024]
        );
        assert_eq!(
            good(&r.cmd(&[0xa8, 0, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0], &[]).await),
            &data[1024..]
        );
        assert_eq!(
            good(&r.cmd(&[0x08, 0, 0, 13, 1, 0], &[]).await),
            &data[1536..]
        );
        good(&r.cmd(&[0x0a, 0, 0, 20, 1, 0], &data[..512]).await);
        good(
            &r.cmd(
                &[0xaa, 0x08, 0, 0, 0, 21, 0, 0, 0, 1, 0, 0],
                &data[512..1024],
            )
            .await,
        );
        good(&r.cmd(&rw16(0x8a, 22, 1, 0x10), &data[1024..1536]).await);
        assert_eq!(
            good(&r.cmd(&rw10(0x28, 20, 3, 0), &[]).await),
            &data[..1536]
        );
        // RDPROTECT without protection information is an invalid field.
        assert_eq!(
            sense(&r.cmd(&rw10(0x28, 0, 1, 0x20), &[]).await),
            INVALID_FIELD
        );
        // Zero blocks is fine.
        assert!(good(&r.cmd(&rw10(0x28, 0, 0, 0), &[]).await).is_empty());
        // READ(6) with transfer length 0 reads 256 blocks.
        assert_eq!(
            good(&r.cmd(&[0x08, 0, 0, 0, 0, 0], &[]).await).len(),
            256 * 512
        );
    }

    #[tokio::test]
    async fn beyond_end_of_lun() {
        let r = rig();
        let last = (BLOCKS - 1) as u32;
        good(&r.cmd(&rw10(0x28, last, 1, 0), &[]).await);
        assert_eq!(sense(&r.cmd(&rw10(0x28, last, 2, 0), &[]).await), OOB);
        assert_eq!(
            sense(&r.cmd(&rw10(0x28, BLOCKS as u32 + 1, 0, 0), &[]).await),
            OOB
        );
        assert_eq!(
            sense(&r.cmd(&rw10(0x28, 0x8000_0000, 0, 0), &[]).await),
            OOB
        );
        assert_eq!(sense(&r.cmd(&rw16(0x88, u64::MAX, 1, 0), &[]).await), OOB);
        assert_eq!(
            sense(&r.cmd(&rw16(0x8a, u64::MAX, 1, 0), &[0; 512]).await),
            OOB
        );
        assert_eq!(sense(&r.cmd(&rw16(0x8f, 1 << 63, 1, 0), &[]).await), OOB);
        // Transfers above the Block Limits maximum.
        assert_eq!(
            sense(
                &r.cmd(&rw16(0x88, 0, MAX_TRANSFER_BYTES / 512 + 1, 0), &[])
                    .await
            ),
            INVALID_FIELD
        );
    }

    #[tokio::test]
    async fn short_data_out_writes_only_whole_received_blocks() {
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 0, 2, 0), &[b'a'; 1024]).await);
        let rep = r.cmd(&rw10(0x2a, 0, 2, 0), &[b'b'; 512]).await;
        good(&rep);
        assert_eq!(rep.data_out_wanted, Some(1024));
        let d = good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await).to_vec();
        assert!(d[..512].iter().all(|&c| c == b'b'));
        assert!(d[512..].iter().all(|&c| c == b'a'));
        // No data at all: nothing written, GOOD.
        good(&r.cmd(&rw10(0x2a, 0, 1, 0), &[]).await);
    }

    #[tokio::test]
    async fn read_only_lun_refuses_writes_and_reports_wp() {
        let r = rig_with(512, true);
        assert_eq!(
            sense(&r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await),
            (SenseKey::DataProtect, 0x27, 0)
        );
        assert_eq!(
            sense(
                &r.cmd(
                    &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
                    &encode_unmap(&[UnmapDescriptor { lba: 0, blocks: 1 }])
                )
                .await
            )
            .0,
            SenseKey::DataProtect
        );
        let ms = good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(ms[2] & 0x80, 0x80);
        good(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await);
    }

    #[tokio::test]
    async fn verify_bytchk_and_miscompare_offset() {
        let r = rig();
        let data = vec![0x5a; 1024];
        good(&r.cmd(&rw10(0x2a, 100, 2, 0), &data).await);
        good(&r.cmd(&rw10(0x2f, 100, 2, 0), &[]).await);
        good(&r.cmd(&rw10(0x2f, 100, 2, 0x02), &data).await);
        let mut bad = data.clone();
        bad[700] ^= 0xff;
        let rep = r.cmd(&rw10(0x2f, 100, 2, 0x02), &bad).await;
        assert_eq!(sense(&rep), (SenseKey::Miscompare, 0x1d, 0));
        assert_eq!(rep.decoded_sense().unwrap().information, Some(700));
        // BYTCHK 0 does not compare.
        good(&r.cmd(&rw16(0x8f, 100, 2, 0x10), &bad).await);
        // BYTCHK 11b: one block against each.
        good(
            &r.cmd(&[0xaf, 0x06, 0, 0, 0, 100, 0, 0, 0, 2, 0, 0], &data[..512])
                .await,
        );
        assert_eq!(
            sense(
                &r.cmd(&[0xaf, 0x06, 0, 0, 0, 99, 0, 0, 0, 2, 0, 0], &data[..512])
                    .await
            )
            .0,
            SenseKey::Miscompare
        );
    }

    #[tokio::test]
    async fn write_and_verify() {
        let r = rig();
        good(&r.cmd(&rw10(0x2e, 5, 1, 0x02), &[7; 512]).await);
        good(&r.cmd(&rw16(0x8e, 6, 1, 0), &[8; 512]).await);
        assert_eq!(
            good(&r.cmd(&rw10(0x28, 5, 2, 0), &[]).await),
            &[[7u8; 512], [8u8; 512]].concat()[..]
        );
        assert_eq!(
            sense(&r.cmd(&rw10(0x2e, BLOCKS as u32, 1, 0), &[0; 512]).await),
            OOB
        );
    }

    #[tokio::test]
    async fn compare_and_write_outcomes() {
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 0, 2, 0), &[b'A'; 1024]).await);
        let mut buf = vec![b'A'; 1024];
        buf.extend_from_slice(&[b'B'; 1024]);
        buf[1024 - 27] = b'C';
        let rep = r.cmd(&caw(0, 2, 0), &buf).await;
        assert_eq!(sense(&rep), (SenseKey::Miscompare, 0x1d, 0));
        assert_eq!(rep.decoded_sense().unwrap().information, Some(1024 - 27));
        assert_eq!(
            good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await),
            &[b'A'; 1024][..]
        );
        buf[1024 - 27] = b'A';
        good(&r.cmd(&caw(0, 2, 0x08), &buf).await);
        assert_eq!(
            good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await),
            &[b'B'; 1024][..]
        );
        // Zero blocks: nothing happens, GOOD (the DPO/FUA probe of libiscsi).
        good(&r.cmd(&caw(0, 0, 0x18), &[0; 512]).await);
        // 256 blocks wrap NUMBER OF LOGICAL BLOCKS to zero; the Data-Out
        // length still shows more than MAXIMUM COMPARE AND WRITE LENGTH.
        assert_eq!(
            sense(&r.cmd(&caw(0, 0, 0), &vec![0; 2 * 256 * 512]).await),
            INVALID_FIELD
        );
        // Data-Out that does not match NUMBER OF LOGICAL BLOCKS.
        assert_eq!(
            sense(&r.cmd(&caw(0, 1, 0), &[b'B'; 2048]).await),
            INVALID_FIELD
        );
        assert_eq!(
            sense(&r.cmd(&caw(0, 3, 0), &[b'B'; 2048]).await),
            INVALID_FIELD
        );
        assert_eq!(sense(&r.cmd(&caw(BLOCKS - 1, 2, 0), &[0; 2048]).await), OOB);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compare_and_write_is_atomic_against_concurrent_commands() {
        // Each worker increments a counter in block 0 with read + CAW and
        // retries on miscompare; concurrent plain writes hit block 1. If
        // compare and write were not atomic, increments would be lost.
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await);
        let workers = 4;
        let per = 25u32;
        let mut handles = Vec::new();
        for w in 0..workers {
            let t = r.target.clone();
            let n = if w % 2 == 0 { r.a.clone() } else { r.b.clone() };
            handles.push(tokio::spawn(async move {
                let mut done = 0;
                while done < per {
                    let cur = exec(&t, &n, 0, &rw10(0x28, 0, 1, 0), &[])
                        .await
                        .data_in
                        .to_vec();
                    let v = u32::from_be_bytes(cur[..4].try_into().unwrap());
                    let mut next = cur.clone();
                    next[..4].copy_from_slice(&(v + 1).to_be_bytes());
                    let mut buf = cur.clone();
                    buf.extend_from_slice(&next);
                    let rep = exec(&t, &n, 0, &caw(0, 1, 0), &buf).await;
                    if rep.status == status::GOOD {
                        done += 1;
                    }
                    exec(&t, &n, 0, &rw10(0x2a, 1, 1, 0), &[w as u8; 512]).await;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let d = good(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await).to_vec();
        assert_eq!(
            u32::from_be_bytes(d[..4].try_into().unwrap()),
            workers * per
        );
    }

    #[tokio::test]
    async fn write_same_pattern_unmap_and_limits() {
        let r = rig();
        let ws10 = |lba: u32, n: u16, flags: u8| rw10(0x41, lba, n, flags);
        good(&r.cmd(&ws10(8, 300, 0), &[0x33; 512]).await);
        let d = good(&r.cmd(&rw10(0x28, 8, 300, 0), &[]).await).to_vec();
        assert!(d.iter().all(|&c| c == 0x33));
        good(&r.cmd(&ws10(8, 16, 0x08), &[0xff; 512]).await);
        let d = good(&r.cmd(&rw10(0x28, 8, 16, 0), &[]).await).to_vec();
        assert!(d.iter().all(|&c| c == 0), "UNMAP with LBPRZ reads zeros");
        // WRITE SAME(16) with NDOB writes zeros without a Data-Out buffer.
        good(&r.cmd(&rw16(0x93, 200, 8, 0), &[0x44; 512]).await);
        good(&r.cmd(&rw16(0x93, 200, 8, 0x01), &[]).await);
        assert!(good(&r.cmd(&rw10(0x28, 200, 8, 0), &[]).await)
            .iter()
            .all(|&c| c == 0));
        // Zero blocks: to the end of the LUN, within MAXIMUM WRITE SAME
        // LENGTH; beyond the end reports the LBA.
        good(&r.cmd(&ws10(BLOCKS as u32 - 4, 0, 0), &[0x66; 512]).await);
        let d = good(&r.cmd(&rw10(0x28, BLOCKS as u32 - 4, 4, 0), &[]).await).to_vec();
        assert!(d.iter().all(|&c| c == 0x66));
        good(&r.cmd(&ws10(BLOCKS as u32 - 2, 0, 0x08), &[0x66; 512]).await);
        let d = good(&r.cmd(&rw10(0x28, BLOCKS as u32 - 4, 4, 0), &[]).await).to_vec();
        assert!(d[..1024].iter().all(|&c| c == 0x66) && d[1024..].iter().all(|&c| c == 0));
        good(&r.cmd(&ws10(BLOCKS as u32, 0, 0), &[0; 512]).await);
        assert_eq!(
            sense(&r.cmd(&ws10(BLOCKS as u32 + 1, 0, 0), &[0; 512]).await),
            OOB
        );
        assert_eq!(sense(&r.cmd(&ws10(u32::MAX, 1, 0), &[0; 512]).await), OOB);
        // Above MAXIMUM WRITE SAME LENGTH.
        let over = (MAX_WRITE_SAME_BYTES / 512 + 1) as u32;
        assert_eq!(
            sense(&r.cmd(&rw16(0x93, 0, over, 0x08), &[0; 512]).await),
            INVALID_FIELD
        );
        // ANCHOR is not supported.
        assert_eq!(
            sense(&r.cmd(&ws10(0, 1, 0x18), &[0; 512]).await),
            INVALID_FIELD
        );
        // The Data-Out buffer must be exactly one block.
        assert_eq!(
            sense(&r.cmd(&ws10(0, 1, 0x08), &[0; 256]).await),
            INVALID_FIELD
        );
        assert_eq!(
            sense(&r.cmd(&ws10(0, 1, 0x08), &[0; 1024]).await),
            INVALID_FIELD
        );
    }

    #[tokio::test]
    async fn unmap_lists_and_lba_status() {
        let r = rig_with(4096, false);
        good(&r.cmd(&rw10(0x2a, 0, 16, 0), &[b'a'; 16 * 4096]).await);
        let list = encode_unmap(&[
            UnmapDescriptor { lba: 2, blocks: 3 },
            UnmapDescriptor { lba: 9, blocks: 0 },
        ]);
        let mut cdb = vec![0x42, 0, 0, 0, 0, 0, 0];
        cdb.extend_from_slice(&(list.len() as u16).to_be_bytes());
        cdb.push(0);
        good(&r.cmd(&cdb, &list).await);
        let d = good(&r.cmd(&rw10(0x28, 0, 6, 0), &[]).await).to_vec();
        assert!(d[..8192].iter().all(|&c| c == b'a'));
        assert!(d[8192..20480].iter().all(|&c| c == 0));
        assert!(d[20480..].iter().all(|&c| c == b'a'));
        let st = good(
            &r.cmd(
                &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 24, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(st.len(), 24);
        assert_eq!(
            &st[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 1, 0, 0, 0]
        );
        let st = good(
            &r.cmd(
                &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 24, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(&st[8..16], &5u64.to_be_bytes());
        assert_eq!(st[20], 0, "mapped");
        assert_eq!(
            sense(
                &r.cmd(
                    &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 24, 0, 0],
                    &[]
                )
                .await
            ),
            OOB
        );
        assert_eq!(
            sense(
                &r.cmd(
                    &[
                        0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 24, 0,
                        0
                    ],
                    &[]
                )
                .await
            ),
            OOB
        );
        // Zero-block descriptor at the end of the LUN, no descriptors, and
        // an empty list are all GOOD.
        let end = encode_unmap(&[UnmapDescriptor {
            lba: BLOCKS,
            blocks: 0,
        }]);
        good(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &end).await);
        good(
            &r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 8, 0], &encode_unmap(&[]))
                .await,
        );
        good(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await);
        let past = encode_unmap(&[UnmapDescriptor {
            lba: BLOCKS - 1,
            blocks: 2,
        }]);
        assert_eq!(
            sense(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &past).await),
            OOB
        );
        assert_eq!(
            sense(
                &r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0, 2, 0, 0])
                    .await
            ),
            (SenseKey::IllegalRequest, 0x1a, 0)
        );
    }

    #[tokio::test]
    async fn mode_sense_pages_and_page_control() {
        let r = rig();
        let all = good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(all[0] as usize, all.len() - 1);
        assert_eq!(all[2], 0x10, "DPOFUA, not write protected");
        assert_eq!(all[3], 8);
        let pages: Vec<u8> = {
            let mut v = Vec::new();
            let mut i = 12;
            while i < all.len() {
                v.push(all[i] & 0x3f);
                i += all[i + 1] as usize + 2;
            }
            v
        };
        assert_eq!(pages, vec![0x08, 0x0a, 0x1c]);
        // Four bytes asked: four given, no more.
        assert_eq!(good(&r.cmd(&[0x1a, 0, 0x3f, 0, 4, 0], &[]).await).len(), 4);
        let ch = good(&r.cmd(&[0x1a, 0x08, 0x4a, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(&ch[4..], &[0x0a, 0x0a, 0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            sense(&r.cmd(&[0x1a, 0, 0xca, 0, 255, 0], &[]).await),
            (SenseKey::IllegalRequest, 0x39, 0)
        );
        assert_eq!(
            sense(&r.cmd(&[0x1a, 0, 0x01, 0, 255, 0], &[]).await),
            INVALID_FIELD
        );
        assert_eq!(
            sense(&r.cmd(&[0x1a, 0, 0x0a, 0x01, 255, 0], &[]).await),
            INVALID_FIELD
        );
        let ten = good(&r.cmd(&[0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(&ten[4..8], &[1, 0, 0, 16]);
        assert_eq!(ten.len(), 8 + 16 + 20);
    }

    #[tokio::test]
    async fn mode_select_swp_d_sense_and_unit_attention() {
        let r = rig();
        let mut page = r
            .target
            .lun(0)
            .unwrap()
            .mode()
            .page(mode::PAGE_CONTROL, PageControl::Current)
            .unwrap();
        page[2] |= 0x04;
        page[4] |= 0x08;
        let mut list = vec![0, 0, 0, 0];
        list.extend_from_slice(&page);
        good(&r.cmd(&[0x15, 0x10, 0, 0, list.len() as u8, 0], &list).await);
        assert!(r.target.lun(0).unwrap().write_protected());
        let rep = r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await;
        assert_eq!(rep.sense.as_ref().unwrap()[0], 0x72, "descriptor format");
        assert_eq!(sense(&rep), (SenseKey::DataProtect, 0x27, 0));
        // The other nexus gets MODE PARAMETERS CHANGED, once.
        let rep = exec(&r.target, &r.b, 0, &[0, 0, 0, 0, 0, 0], &[]).await;
        assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x2a, 0x01));
        good(&exec(&r.target, &r.b, 0, &[0, 0, 0, 0, 0, 0], &[]).await);
        // SP is refused; a fixed bit changed is refused with a pointer.
        assert_eq!(
            sense(&r.cmd(&[0x15, 0x11, 0, 0, list.len() as u8, 0], &list).await),
            INVALID_FIELD
        );
        let mut bad = list.clone();
        bad[4 + 5] = 0x40;
        let rep = r.cmd(&[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad).await;
        assert_eq!(sense(&rep), (SenseKey::IllegalRequest, 0x26, 0));
        assert_eq!(rep.decoded_sense().unwrap().field.unwrap().byte, 9);
        // LUN reset restores the defaults.
        r.target.lun_reset(0, &r.a).await.unwrap();
        assert!(!r.target.lun(0).unwrap().write_protected());
    }

    #[tokio::test]
    async fn report_supported_opcodes_matches_what_runs() {
        let r = rig();
        let all = good(
            &r.cmd(&[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
                .await,
        )
        .to_vec();
        let n = u32::from_be_bytes(all[..4].try_into().unwrap()) as usize;
        assert_eq!(n, all.len() - 4);
        for d in all[4..].chunks(8) {
            let (op, sa, servactv) = (d[0], u16::from_be_bytes([d[2], d[3]]), d[5] & 1 != 0);
            let opts = if servactv { 2 } else { 1 };
            let mut c = vec![0xa3, 0x0c, opts, op];
            c.extend_from_slice(&sa.to_be_bytes());
            c.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0]);
            let one = good(&r.cmd(&c, &[]).await).to_vec();
            assert_eq!(one[1] & 7, 3, "opcode {op:#x} supported");
            assert_eq!(one[4], op);
            // The wrong reporting option for this opcode is refused.
            c[2] = if servactv { 1 } else { 2 };
            assert_eq!(sense(&r.cmd(&c, &[]).await), INVALID_FIELD);
            // Every listed command is really executed: no INVALID COMMAND
            // OPERATION CODE for it.
            let mut probe = vec![0u8; 16];
            probe[0] = op;
            if servactv {
                probe[1] = sa as u8;
            }
            let rep = exec(&r.target, &r.b, 2, &probe, &[]).await;
            if rep.status == status::CHECK_CONDITION {
                assert_ne!(rep.decoded_sense().unwrap().asc, 0x20, "opcode {op:#x}");
            }
        }
        let rctd = good(
            &r.cmd(&[0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
                .await,
        )
        .to_vec();
        assert!(rctd[4..]
            .chunks(20)
            .all(|d| d[5] & 2 == 2 && d[8..10] == [0, 0x0a]));
        let read10 = good(
            &r.cmd(&[0xa3, 0x0c, 1, 0x28, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
                .await,
        )
        .to_vec();
        assert_eq!(read10[5] & 0x18, 0x18, "DPO and FUA usable");
    }

    #[tokio::test]
    async fn orwrite_ors_data_into_the_medium() {
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 4, 1, 0), &[0x0f; 512]).await);
        let orw = |fua: u8| {
            let mut c = vec![0x8b, fua, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0];
            c.truncate(16);
            c
        };
        good(&r.cmd(&orw(0x08), &[0xa0; 512]).await);
        assert_eq!(
            good(&r.cmd(&rw10(0x28, 4, 1, 0), &[]).await),
            &[0xaf; 512][..]
        );
        // Past the end of the LUN: LBA OUT OF RANGE, nothing written.
        let mut c = orw(0);
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            sense(&r.cmd(&c, &[0xff; 512]).await),
            (SenseKey::IllegalRequest, 0x21, 0)
        );
    }

    #[tokio::test]
    async fn unknown_opcode_is_invalid_command_operation_code() {
        let r = rig();
        for op in [0x8c, 0x9c, 0x48, 0x83, 0xb7, 0x37] {
            assert_eq!(
                sense(&r.cmd(&[op, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await),
                (SenseKey::IllegalRequest, 0x20, 0)
            );
        }
    }

    #[tokio::test]
    async fn unit_attentions_in_order_and_request_sense_clears() {
        let r = rig();
        let lu = r.target.lun(0).unwrap();
        lu.post_unit_attention(UaScope::One(r.a.clone()), Asc::RESERVATIONS_PREEMPTED);
        lu.post_unit_attention(UaScope::All, Asc::POWER_ON_OCCURRED);
        // INQUIRY and REPORT LUNS neither report nor clear it.
        good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
        good(&r.cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await);
        assert_eq!(
            sense(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await),
            (SenseKey::UnitAttention, 0x2a, 0x03)
        );
        // REQUEST SENSE returns the next one as data and clears it.
        let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
        let s = Sense::decode(&rs).unwrap();
        assert_eq!(
            (s.key, s.asc, s.ascq),
            (SenseKey::UnitAttention, 0x29, 0x01)
        );
        good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
        let rs = good(&r.cmd(&[0x03, 1, 0, 0, 18, 0], &[]).await).to_vec();
        assert_eq!(&rs[..4], &[0x72, 0, 0, 0], "descriptor NO SENSE");
        // The other nexus still has its own copy.
        assert_eq!(
            sense(&exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await).1,
            0x29
        );
    }

    #[tokio::test]
    async fn lun_reset_aborts_a_running_task_and_posts_unit_attentions() {
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 3, 1, 0), &[1; 512]).await);
        good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
        let lu = r.target.lun(0).unwrap().clone();
        // Hold the medium as a COMPARE AND WRITE would, so the write waits.
        let held = lu.media_lock.write().await;
        let t = r.target.clone();
        let a = r.a.clone();
        let write =
            tokio::spawn(async move { exec(&t, &a, 0, &rw10(0x2a, 3, 1, 0), &[2; 512]).await });
        while r.target.tasks().count(|t| t.lun == 0) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        r.target.lun_reset(0, &r.b).await.unwrap();
        assert_eq!(write.await.unwrap().status, status::TASK_ABORTED);
        drop(held);
        // Every nexus, the resetting one included, sees 29/03 once.
        for n in [&r.a, &r.b] {
            let rep = exec(&r.target, n, 0, &rw10(0x28, 3, 1, 0), &[]).await;
            assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x29, 0x03));
            assert_eq!(
                good(&exec(&r.target, n, 0, &rw10(0x28, 3, 1, 0), &[]).await),
                &[1; 512][..]
            );
        }
        // The SCSI-2 reservation is gone: b may reserve now.
        good(&exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[]).await);
        // LUN 2 was not reset.
        good(&exec(&r.target, &r.a, 2, &[0, 0, 0, 0, 0, 0], &[]).await);
        assert_eq!(r.target.lun_reset(9, &r.a).await, Err(NoSuchLun(9)));
    }

    #[tokio::test]
    async fn target_resets_post_their_unit_attention_on_every_lun() {
        for (kind, ascq) in [
            (ResetKind::Warm, 0x03),
            (ResetKind::Cold, 0x01),
            (ResetKind::Bus, 0x02),
        ] {
            let r = rig();
            good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
            r.target.target_reset(kind, &r.a).await;
            for lun in [0, 2] {
                for n in [&r.a, &r.b] {
                    assert_eq!(
                        sense(&exec(&r.target, n, lun, &[0, 0, 0, 0, 0, 0], &[]).await),
                        (SenseKey::UnitAttention, 0x29, ascq)
                    );
                }
            }
            good(&exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[]).await);
        }
    }

    #[tokio::test]
    async fn reservation_conflict_and_nexus_loss() {
        let r = rig();
        good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
        let rep = exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await;
        assert_eq!(rep.status, status::RESERVATION_CONFLICT);
        assert_eq!(
            exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[])
                .await
                .status,
            status::RESERVATION_CONFLICT
        );
        // RELEASE from a non-holder is GOOD and changes nothing.
        good(&exec(&r.target, &r.b, 0, &[0x17, 0, 0, 0, 0, 0], &[]).await);
        assert_eq!(
            exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[])
                .await
                .status,
            status::RESERVATION_CONFLICT
        );
        good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
        r.target.nexus_lost(&r.a);
        good(&exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await);
    }

    #[tokio::test]
    async fn start_stop_unit_and_prevent_allow() {
        let r = rig();
        good(&r.cmd(&[0x1b, 0, 0, 0, 0x00, 0], &[]).await);
        assert_eq!(
            sense(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await),
            (SenseKey::NotReady, 0x04, 0x02)
        );
        assert_eq!(
            sense(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await).0,
            SenseKey::NotReady
        );
        let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
        assert_eq!((rs[2], rs[12], rs[13]), (0x02, 0x04, 0x02));
        good(&r.cmd(&[0x1b, 1, 0, 0, 0x01, 0], &[]).await);
        good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
        // LOEJ on a non-removable medium is refused; power conditions are
        // accepted and change nothing.
        assert_eq!(
            sense(&r.cmd(&[0x1b, 1, 0, 0, 0x02, 0], &[]).await),
            INVALID_FIELD
        );
        good(&r.cmd(&[0x1b, 0, 0, 0, 0x30, 0], &[]).await);
        assert_eq!(
            sense(&r.cmd(&[0x1b, 0, 0, 0, 0x40, 0], &[]).await),
            INVALID_FIELD
        );
        good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
        good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
        assert!(r.target.lun(0).unwrap().removal_prevented());
        assert_eq!(
            sense(&r.cmd(&[0x1e, 0, 0, 0, 2, 0], &[]).await),
            INVALID_FIELD
        );
        r.target.nexus_lost(&r.a);
        assert!(!r.target.lun(0).unwrap().removal_prevented());
    }

    #[tokio::test]
    async fn synchronize_cache_and_prefetch() {
        let r = rig();
        good(&r.cmd(&rw10(0x35, 0, 0, 0), &[]).await);
        good(&r.cmd(&rw16(0x91, 0, 16, 0x02), &[]).await);
        assert_eq!(
            sense(&r.cmd(&rw10(0x35, BLOCKS as u32, 1, 0), &[]).await),
            OOB
        );
        for i in [1u16, 17, 256] {
            good(&r.cmd(&rw10(0x34, 0, i, 0), &[]).await);
            good(
                &r.cmd(&rw10(0x34, (BLOCKS - u64::from(i)) as u32, i, 0x02), &[])
                    .await,
            );
        }
        let mut grp = rw10(0x34, 0, 1, 0x02);
        grp[6] = 3;
        good(&r.cmd(&grp, &[]).await);
        good(&r.cmd(&rw16(0x90, 0, 0, 0), &[]).await);
        assert_eq!(sense(&r.cmd(&rw16(0x90, BLOCKS + 1, 0, 0), &[]).await), OOB);
        assert_eq!(sense(&r.cmd(&rw16(0x90, u64::MAX, 1, 0), &[]).await), OOB);
    }

    #[tokio::test]
    async fn aborted_task_does_not_write() {
        let r = rig();
        good(&r.cmd(&rw10(0x2a, 7, 1, 0), &[9; 512]).await);
        let guard = r.target.tasks().register(TaskInfo {
            nexus: r.a.clone(),
            lun: 0,
            itt: 999,
            cmd_sn: 999,
        });
        let reg = r.target.tasks().clone();
        let waiter = tokio::spawn(async move { reg.abort_matching(|t| t.itt == 999).await });
        guard.aborted().await;
        let mut c = rw10(0x2a, 7, 1, 0);
        c.resize(16, 0);
        let rep = r
            .target
            .execute(ScsiRequest {
                nexus: &r.a,
                lun: 0,
                cdb: &c,
                data_out: vec![1u8; 512].into(),
                expected_in: 0,
                task: &guard,
            })
            .await;
        assert_eq!(rep.status, status::TASK_ABORTED);
        drop(guard);
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(good(&r.cmd(&rw10(0x28, 7, 1, 0), &[]).await), &[9; 512][..]);
    }

    #[tokio::test]
    async fn persistent_reserve_commands_reach_the_reservation_module() {
        let r = rig();
        // Whatever the reservation module answers, it is not "unknown opcode"
        // from the executor: the command was dispatched.
        let rep = r.cmd(&[0x5e, 0x00, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]).await;
        if rep.status == status::GOOD {
            assert!(rep.data_in.len() <= 0x1000);
        }
        let rep = r
            .cmd(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], &[0; 24])
            .await;
        assert_eq!(rep.data_out_wanted, Some(24));
    }

    fn nexus(name: &str, isid: u8) -> ItNexus {
        ItNexus::new(name, [0x40, 0, 0, 0, 0, isid], "iqn.2024-01.test:t", 1)
    }

    const NO_MEDIUM: (SenseKey, u8, u8) = (SenseKey::NotReady, 0x3a, 0x00);
    const REMOVAL_PREVENTED: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x53, 0x02);
    const EJECT: [u8; 6] = [0x1b, 0, 0, 0, 0x02, 0];
    const LOAD: [u8; 6] = [0x1b, 0, 0, 0, 0x03, 0];
    const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

    #[tokio::test]
    async fn non_removable_lun_reports_rmb_zero() {
        let r = rig();
        assert_eq!(good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await)[1], 0);
        assert_eq!(sense(&r.cmd(&EJECT, &[]).await), INVALID_FIELD);
        good(&r.cmd(&TUR, &[]).await);
    }

    #[tokio::test]
    async fn removable_medium_unloads_and_loads() {
        let r = rig_spec(512, |s| s.removable = true);
        assert_eq!(
            good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await)[1],
            0x80,
            "RMB"
        );
        good(&r.cmd(&rw10(0x2a, 5, 1, 0), &[7; 512]).await);
        good(&r.cmd(&EJECT, &[]).await);
        // SBC-3 §5.25: without a medium, media access and the capacity are
        // NOT READY, MEDIUM NOT PRESENT, for every nexus.
        for n in [&r.a, &r.b] {
            for cdb in [
                TUR.to_vec(),
                rw10(0x28, 0, 1, 0),
                rw10(0x2a, 0, 1, 0),
                rw16(0x88, 0, 1, 0),
                rw10(0x35, 0, 0, 0),
                rw10(0x34, 0, 1, 0),
                rw10(0x2f, 0, 1, 0),
                vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                vec![0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0],
                caw(0, 1, 0),
                rw10(0x41, 0, 1, 0),
                vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            ] {
                let rep = exec(&r.target, n, 0, &cdb, &[0; 1024]).await;
                assert_eq!(sense(&rep), NO_MEDIUM, "opcode {:#04x}", cdb[0]);
            }
        }
        let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
        assert_eq!((rs[2], rs[12], rs[13]), (0x02, 0x3a, 0x00));
        // Unloading an unloaded medium is not an error; neither are INQUIRY
        // and MODE SENSE.
        good(&r.cmd(&EJECT, &[]).await);
        good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
        good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await);
        // A reset does not put the medium back.
        r.target.lun_reset(0, &r.a).await.unwrap();
        for n in [&r.a, &r.b] {
            let rep = exec(&r.target, n, 0, &TUR, &[]).await;
            assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x29, 0x03));
        }
        assert_eq!(sense(&r.cmd(&TUR, &[]).await), NO_MEDIUM);
        // Loading makes the LU ready with its data; the other nexus is told
        // the medium may have changed, once; the loader is not.
        good(&r.cmd(&[0x1b, 0, 0, 0, 0x00, 0], &[]).await);
        good(&r.cmd(&LOAD, &[]).await);
        good(&r.cmd(&TUR, &[]).await);
        assert_eq!(good(&r.cmd(&rw10(0x28, 5, 1, 0), &[]).await), &[7; 512][..]);
        assert_eq!(
            sense(&exec(&r.target, &r.b, 0, &TUR, &[]).await),
            (SenseKey::UnitAttention, 0x28, 0x00)
        );
        good(&exec(&r.target, &r.b, 0, &TUR, &[]).await);
        // Loading a loaded medium changes nothing and tells nobody.
        good(&r.cmd(&LOAD, &[]).await);
        good(&exec(&r.target, &r.b, 0, &TUR, &[]).await);
        // LUN 2 is not removable and was never affected.
        assert_eq!(
            sense(&exec(&r.target, &r.a, 2, &EJECT, &[]).await),
            INVALID_FIELD
        );
    }

    #[tokio::test]
    async fn prevent_is_per_nexus_and_cleared_by_loss_and_resets() {
        let r = rig_spec(512, |s| s.removable = true);
        // SBC-3 §5.13: one nexus's PREVENT stops every nexus's eject.
        good(&exec(&r.target, &r.b, 0, &[0x1e, 0, 0, 0, 1, 0], &[]).await);
        for n in [&r.a, &r.b] {
            assert_eq!(
                sense(&exec(&r.target, n, 0, &EJECT, &[]).await),
                REMOVAL_PREVENTED
            );
        }
        good(&r.cmd(&TUR, &[]).await);
        // ALLOW from another nexus does not lift b's PREVENT.
        good(&r.cmd(&[0x1e, 0, 0, 0, 0, 0], &[]).await);
        assert_eq!(sense(&r.cmd(&EJECT, &[]).await), REMOVAL_PREVENTED);
        // Losing b's nexus (logout or connection loss) lifts it.
        r.target.nexus_lost(&r.b);
        good(&r.cmd(&EJECT, &[]).await);
        assert_eq!(sense(&r.cmd(&TUR, &[]).await), NO_MEDIUM);
        // Loading is refused while removal is prevented (libiscsi's
        // PreventAllow.Eject), then allowed.
        good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
        assert_eq!(sense(&r.cmd(&LOAD, &[]).await), REMOVAL_PREVENTED);
        good(&r.cmd(&[0x1e, 0, 0, 0, 0, 0], &[]).await);
        good(&r.cmd(&LOAD, &[]).await);
        // Every reset lifts PREVENT.
        for reset in 0..4 {
            good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
            assert_eq!(sense(&r.cmd(&EJECT, &[]).await), REMOVAL_PREVENTED);
            match reset {
                0 => r.target.lun_reset(0, &r.a).await.unwrap(),
                1 => r.target.target_reset(ResetKind::Warm, &r.a).await,
                2 => r.target.target_reset(ResetKind::Cold, &r.a).await,
                _ => r.target.target_reset(ResetKind::Bus, &r.a).await,
            }
            assert_eq!(sense(&r.cmd(&TUR, &[]).await).0, SenseKey::UnitAttention);
            good(&r.cmd(&EJECT, &[]).await);
            good(&r.cmd(&LOAD, &[]).await);
        }
    }

    #[tokio::test]
    async fn physical_block_size_is_reported_in_capacity_and_block_limits() {
        // 512-byte blocks: one per physical block, unmap granules of the
        // file system's 4 KiB.
        let r = rig();
        let rc = good(
            &r.cmd(
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(rc[13], 0);
        let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
        assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 1);
        assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 8);
        assert_eq!(&bl[32..36], &[0x80, 0, 0, 0], "UGAVALID, alignment 0");
        // 512e: eight logical blocks per 4 KiB physical block.
        let r = rig_spec(512, |s| s.physical_block_size = 4096);
        let rc = good(
            &r.cmd(
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(rc[13], 3, "LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT");
        assert_eq!(&rc[14..16], &[0xc0, 0], "LBPME LBPRZ, lowest aligned LBA 0");
        let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
        assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 8);
        assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 8);
        // 4Kn on 64 KiB physical blocks: 16 per physical block.
        let r = rig_spec(4096, |s| s.physical_block_size = 65536);
        let rc = good(
            &r.cmd(
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &[],
            )
            .await,
        )
        .to_vec();
        assert_eq!(rc[13], 4);
        let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
        assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 16);
        assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 16);
    }

    #[tokio::test]
    async fn unaligned_unmap_and_data_out_sizes_on_512e() {
        let r = rig_spec(512, |s| s.physical_block_size = 4096);
        good(&r.cmd(&rw10(0x2a, 0, 16, 0), &[0xa6; 512 * 16]).await);
        // WRITE SAME with UNMAP need not start or end on a physical block
        // boundary (libiscsi's WriteSame*.UnmapUnaligned); the range reads
        // back as zeros (LBPRZ) and its neighbours keep their data.
        for i in 1..8u32 {
            good(
                &r.cmd(&rw10(0x41, i, (8 - i) as u16, 0x08), &[0xa6; 512])
                    .await,
            );
            good(
                &r.cmd(&rw16(0x93, u64::from(i), 8 - i, 0x08), &[0xa6; 512])
                    .await,
            );
        }
        let back = good(&r.cmd(&rw10(0x28, 0, 9, 0), &[]).await).to_vec();
        assert_eq!(&back[..512], &[0xa6; 512][..]);
        assert!(back[512..8 * 512].iter().all(|&b| b == 0));
        assert_eq!(&back[8 * 512..], &[0xa6; 512][..]);
        // A Data-Out buffer that is not one logical block is refused
        // (WriteSame*.InvalidDataOutSize).
        for len in [256, 1024] {
            for cdb in [rw10(0x41, 0, 1, 0x08), rw16(0x93, 0, 1, 0x08)] {
                let rep = r.cmd(&cdb, &vec![0xa6; len]).await;
                assert_eq!(sense(&rep).0, SenseKey::IllegalRequest);
            }
        }
        // COMPARE AND WRITE of 1 or 3 blocks with a 4-block Data-Out buffer
        // (CompareAndWrite.InvalidDataOutSize).
        for n in [1, 3] {
            let rep = r.cmd(&caw(0, n, 0), &[0xa6; 4 * 512]).await;
            assert_eq!(sense(&rep).0, SenseKey::IllegalRequest);
        }
    }

    #[tokio::test]
    async fn nexus_formed_after_a_cold_reset_sees_power_on_once() {
        let r = rig();
        // Before any cold reset a new nexus starts without unit attention.
        let c = nexus("iqn.2024-01.test:c", 3);
        r.target.nexus_created(&c);
        good(&exec(&r.target, &c, 0, &TUR, &[]).await);
        r.target.target_reset(ResetKind::Warm, &r.a).await;
        r.target.nexus_lost(&c);
        r.target.nexus_created(&c);
        good(&exec(&r.target, &c, 0, &TUR, &[]).await);

        // A cold reset ends every session (RFC 7143 §11.5.1); the nexuses
        // that log in afterwards, old and new, see 29/01 once on each LU.
        r.target.target_reset(ResetKind::Cold, &r.a).await;
        for n in [&r.a, &r.b, &c] {
            r.target.nexus_lost(n);
        }
        let d = nexus("iqn.2024-01.test:d", 4);
        for n in [&r.a, &c, &d] {
            r.target.nexus_created(n);
            for lun in [0, 2] {
                assert_eq!(
                    sense(&exec(&r.target, n, lun, &TUR, &[]).await),
                    (SenseKey::UnitAttention, 0x29, 0x01),
                    "{n} lun {lun}"
                );
                good(&exec(&r.target, n, lun, &TUR, &[]).await);
            }
        }
        // A nexus that never logged in but sends a command is told too.
        let e = nexus("iqn.2024-01.test:e", 5);
        assert_eq!(
            sense(&exec(&r.target, &e, 2, &TUR, &[]).await),
            (SenseKey::UnitAttention, 0x29, 0x01)
        );
        // Once only: logging in again does not repeat it.
        r.target.nexus_lost(&d);
        r.target.nexus_created(&d);
        good(&exec(&r.target, &d, 0, &TUR, &[]).await);
        // The next cold reset owes it to everyone again.
        r.target.target_reset(ResetKind::Cold, &r.a).await;
        r.target.nexus_lost(&d);
        r.target.nexus_created(&d);
        assert_eq!(
            sense(&exec(&r.target, &d, 0, &TUR, &[]).await),
            (SenseKey::UnitAttention, 0x29, 0x01)
        );
        good(&exec(&r.target, &d, 0, &TUR, &[]).await);
    }

    #[test]
    fn power_on_window_is_bounded() {
        let mut w = PowerOnWindow::default();
        assert!(!w.owed(&nexus("iqn.x", 1)), "closed before a cold reset");
        w.reopen();
        for i in 0..POWER_ON_NEXUS_LIMIT {
            assert!(w.owed(&ItNexus::new(
                &format!("iqn.x{i}"),
                [0; 6],
                "iqn.2024-01.test:t",
                1
            )));
        }
        assert!(w.told.is_empty() && !w.open);
        assert!(!w.owed(&nexus("iqn.late", 1)));
    }
}
