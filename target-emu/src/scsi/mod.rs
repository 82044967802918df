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
//! `run` is the dispatch table, one line per command; each command is
//! carried out in the module of its family: `rw` (READ, WRITE, VERIFY,
//! COMPARE AND WRITE, caching), `media` (capacity, START STOP UNIT,
//! removable media), `identify` (INQUIRY, VPD, REPORT LUNS, REQUEST SENSE,
//! REPORT SUPPORTED OPERATION CODES), `mode_params` (MODE SENSE/SELECT),
//! `provisioning` (WRITE SAME, UNMAP, GET LBA STATUS) and `pr` (SCSI-2 and
//! persistent reservations, with the rules in `crate::reservation`).
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
use std::sync::{Arc, Mutex, RwLock};

use busrig_proto::scsi::cdb::{opcode, Cdb};
use busrig_proto::scsi::inquiry::{self};
use busrig_proto::scsi::sense::{status, Asc, Sense};
use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::fault::Faults;
use crate::lu::{LogicalUnit, UaScope, PRODUCT_REVISION};
use crate::nexus::ItNexus;
use crate::tasks::{AbortBy, TaskGuard, TaskRegistry};
use crate::write_data::WriteData;

mod identify;
mod inventory;
mod media;
mod mode_params;
mod pr;
mod provisioning;
mod rw;
mod sanitize;
#[cfg(test)]
mod tests;
mod xcopy;

pub(crate) use sanitize::SanitizeState;
pub use xcopy::BusPeers;
pub(crate) use xcopy::HeldCopyResults;

use identify::{report_supported_opcodes, request_sense};
use media::{prevent_allow, ready};
use pr::pr_fail;
use rw::data_out_wanted;

/// Largest READ/WRITE/VERIFY transfer, in bytes (Block Limits VPD).
const MAX_TRANSFER_BYTES: u32 = 8 << 20;
/// Largest WRITE ATOMIC(16), in bytes (Block Limits VPD).
const MAX_ATOMIC_BYTES: u32 = 1 << 20;
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
    /// The logical unit inventory; LUNs come and go while sessions run
    /// (`inventory`). Held only for a lookup, never across an await.
    luns: RwLock<BTreeMap<u64, Arc<LogicalUnit>>>,
    tasks: TaskRegistry,
    nexuses: Mutex<BTreeSet<ItNexus>>,
    /// Injected faults (LUN offline, failing commands of one initiator).
    faults: Arc<Faults>,
    /// I_T nexuses still owed the POWER ON of the last cold reset.
    power_on: Mutex<PowerOnWindow>,
    /// The bus's modelled bandwidth, shared with the other targets on it.
    link: Option<Arc<crate::model::Link>>,
    /// The targets on the same bus, for EXTENDED COPY between them.
    peers: Arc<BusPeers>,
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
            | WRITE_ATOMIC_16
            | SANITIZE
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
            luns: RwLock::new(luns.into_iter().map(|l| (l.lun(), l)).collect()),
            tasks,
            nexuses: Mutex::new(BTreeSet::new()),
            faults: Arc::new(Faults::new()),
            power_on: Mutex::new(PowerOnWindow::default()),
            link: None,
            peers: Arc::default(),
        }
    }

    /// The other targets on this target's bus (EXTENDED COPY reaches
    /// their LUs).
    pub fn with_peers(mut self, peers: Arc<BusPeers>) -> ScsiTarget {
        self.peers = peers;
        self
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
        self.luns_read().keys().copied().collect()
    }

    pub fn lun(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        self.luns_read().get(&lun).cloned()
    }

    /// Every logical unit, by LUN.
    pub fn luns(&self) -> Vec<Arc<LogicalUnit>> {
        self.luns_read().values().cloned().collect()
    }

    fn luns_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<LogicalUnit>>> {
        self.luns.read().unwrap_or_else(|p| p.into_inner())
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
        for lu in self.luns() {
            lu.add_nexus(nexus);
        }
        self.tell_power_on(nexus);
    }

    /// A nexus formed after a cold reset gets its POWER ON OCCURRED, once.
    fn tell_power_on(&self, nexus: &ItNexus) {
        if self.power_on.lock().unwrap().owed(nexus) {
            for lu in self.luns() {
                lu.post_unit_attention(UaScope::One(nexus.clone()), Asc::POWER_ON_OCCURRED);
            }
        }
    }

    /// The nexus ended: its SCSI-2 reservations are released, its unit
    /// attention queues dropped and its PREVENT MEDIUM REMOVAL cleared.
    /// Persistent reservations and registrations stay (SPC-4 §5.9.2).
    pub fn nexus_lost(&self, nexus: &ItNexus) {
        self.nexuses.lock().unwrap().remove(nexus);
        for lu in self.luns() {
            lu.reservations.lock().unwrap().nexus_lost(nexus);
            lu.copy_results.lock().unwrap().forget(nexus);
            lu.remove_nexus(nexus);
        }
    }

    /// LOGICAL UNIT RESET (SAM-5 §6.3.4): aborts every task on the LUN and
    /// waits until they are gone, then resets the LU's state and posts
    /// 29/03 to every I_T nexus, `by` included.
    pub async fn lun_reset(&self, lun: u64, by: &ItNexus) -> Result<(), NoSuchLun> {
        let lu = self.lun(lun).ok_or(NoSuchLun(lun))?;
        let name = self.name.clone();
        let aborted = self
            .tasks
            .abort_matching(AbortBy::Nexus(by), |t| {
                t.lun == lun && *t.nexus.target == *name
            })
            .await;
        self.reset_lu(&lu, Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        info!(target = %self.name, lun, by = %by, aborted, "logical unit reset");
        Ok(())
    }

    /// TARGET WARM RESET, TARGET COLD RESET or a bus reset: a logical unit
    /// reset of every LUN, with the unit attention of [`ResetKind`]. Tasks
    /// still running end first; `aborted_before` counts those a caller has
    /// already ended (a bus-wide reset ends every target's tasks before it
    /// resets any of them), for the log.
    pub async fn target_reset(&self, kind: ResetKind, by: AbortBy<'_>, aborted_before: usize) {
        let name = self.name.clone();
        let aborted = aborted_before
            + self
                .tasks
                .abort_matching(by, |t| *t.nexus.target == *name)
                .await;
        if kind == ResetKind::Cold {
            // Before the LUs reset, so a nexus logging in meanwhile is told.
            self.power_on.lock().unwrap().reopen();
        }
        for lu in self.luns() {
            self.reset_lu(&lu, kind.unit_attention());
        }
        info!(target = %self.name, ?kind, by = %by, aborted, "target reset");
    }

    /// Power-cycles one LUN (a fault injected by the control plane): its
    /// tasks end first, then [`LogicalUnit::power_cycle`]. Returns the
    /// number of unflushed cached blocks that were lost.
    pub async fn power_cycle(&self, lun: u64) -> Result<usize, NoSuchLun> {
        let lu = self.lun(lun).ok_or(NoSuchLun(lun))?;
        let name = self.name.clone();
        self.tasks
            .abort_matching(AbortBy::ControlPlane, |t| {
                t.lun == lun && *t.nexus.target == *name
            })
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
            for lu in self.luns() {
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
        let lu = self.lun(req.lun);
        self.remember(req.nexus, lu.as_deref());
        let reply = match &lu {
            None => self.no_such_lun(&req),
            Some(lu) => self.execute_on(lu, &req).await,
        };
        if op == opcode::REPORT_LUNS && reply.status == status::GOOD {
            self.inventory_reported(req.nexus);
        }
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
                inquiry::StandardInquiry::disk(
                    crate::lu::DEFAULT_VENDOR,
                    crate::lu::DEFAULT_PRODUCT,
                    PRODUCT_REVISION,
                    false,
                )
                .encode(),
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
        if let Err(sense) = sanitize::gate(lu, op, is_media_access(op)) {
            return ScsiReply::check(sense, lu.d_sense());
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
            Cdb::RequestSense { desc, alloc: len } => request_sense(lu, req.nexus, desc, len),
            Cdb::Inquiry {
                evpd,
                page,
                alloc: len,
            } => self.inquiry(lu, req.nexus, evpd, page, len),
            Cdb::ReportLuns { select, alloc: len } => self.report_luns(select, len),
            Cdb::ReadCapacity10 { lba, pmi } => self.read_capacity10(lu, lba, pmi),
            Cdb::ReadCapacity16 { alloc: len } => self.read_capacity16(lu, len),
            Cdb::Read { lba, blocks, .. } => self.read_blocks(lu, req, lba, blocks).await,
            Cdb::Write {
                lba, blocks, fua, ..
            } => self.write_blocks(lu, req, lba, blocks, fua).await,
            Cdb::OrWrite {
                lba, blocks, fua, ..
            } => self.or_write(lu, req, lba, blocks, fua).await,
            Cdb::WriteAndVerify {
                lba,
                blocks,
                bytchk,
                ..
            } => self.write_and_verify(lu, req, lba, blocks, bytchk).await,
            Cdb::Verify {
                lba,
                blocks,
                bytchk,
                ..
            } => self.verify(lu, req, lba, blocks, bytchk).await,
            Cdb::SynchronizeCache { lba, blocks, .. } => {
                self.synchronize_cache(lu, lba, blocks).await
            }
            Cdb::PreFetch { lba, blocks, .. } => self.prefetch(lu, lba, blocks).await,
            Cdb::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc: len,
            } => self.mode_sense(lu, ten, dbd, llbaa, pc, page, subpage, len),
            Cdb::ModeSelect { ten, pf, sp, len } => self.mode_select(lu, req, ten, pf, sp, len),
            Cdb::StartStopUnit {
                power_condition,
                no_flush,
                loej,
                start,
                ..
            } => {
                self.start_stop_unit(lu, req.nexus, power_condition, no_flush, loej, start)
                    .await
            }
            Cdb::PreventAllow { prevent } => prevent_allow(lu, req.nexus, prevent),
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
            Cdb::GetLbaStatus { lba, alloc: len } => self.get_lba_status(lu, lba, len).await,
            Cdb::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc: len,
            } => report_supported_opcodes(rctd, options, opcode, sa, len),
            Cdb::Reserve { .. } => match lu.reservations.lock().unwrap().reserve6(req.nexus) {
                Ok(()) => Ok(ScsiReply::good(Bytes::new())),
                Err(_) => Err(Fail::Status(status::RESERVATION_CONFLICT)),
            },
            Cdb::Release { .. } => {
                lu.reservations.lock().unwrap().release6(req.nexus);
                Ok(ScsiReply::good(Bytes::new()))
            }
            Cdb::PersistentReserveIn(c) => {
                let r = lu
                    .reservations
                    .lock()
                    .unwrap()
                    .persistent_reserve_in(req.nexus, req.cdb);
                match r {
                    Ok(data) => Ok(ScsiReply::good(alloc(data, c.allocation_length.into()))),
                    Err(e) => Err(pr_fail(e)),
                }
            }
            Cdb::PersistentReserveOut(c) => {
                self.persistent_reserve_out(lu, req, c.parameter_list_length)
                    .await
            }
            Cdb::WriteAtomic {
                lba, blocks, fua, ..
            } => self.write_atomic(lu, req, lba, blocks, fua).await,
            Cdb::ReadDefectData {
                twelve,
                plist,
                glist,
                format,
                alloc: len,
                ..
            } => self.read_defect_data(lu, twelve, plist, glist, format, len),
            Cdb::Sanitize {
                immed,
                ause,
                action,
                len,
            } => self.sanitize(lu, req, immed, ause, action, len).await,
            Cdb::ExtendedCopy { len } => self.extended_copy(lu, req, len).await,
            Cdb::ReceiveCopyResults {
                action,
                list_id,
                alloc: len,
            } => self.receive_copy_results(lu, req.nexus, action, list_id, len),
            Cdb::Unsupported(_) => Err(Asc::INVALID_COMMAND_OPERATION_CODE.into()),
        }
    }
}
