//! Typed SCSI operations on one logical unit of a session: what the CLI,
//! the cluster nodes and the benches call.
//!
//! Two answers are what every initiator sees when something else reset
//! the device: a unit attention (SAM-5 §5.14, SPC-4 §4.5.6) after resets,
//! power-on and reservation changes, and TASK ABORTED status for a command
//! that another initiator's reset or PREEMPT AND ABORT ended while it was
//! queued or running (the control mode page's TAS bit, SAM-5 §5.6). A
//! caller that expects them (a defender renewing its reservation after a
//! bus reset, a quorum log write cut short by a challenger's reset, a
//! one-shot command from the CLI) sets [`Disk::with_reset_retries`]: the
//! command is re-issued and the unit attentions are kept for
//! [`Disk::take_unit_attentions`]. With the default of zero retries both are
//! returned as errors, because a cluster node must see RESERVATIONS
//! PREEMPTED (2A/03) itself. A command this initiator aborted itself ends
//! as [`Error::Aborted`] and is never retried.

// `usize::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use busrig_proto::pdu::tmf;
use busrig_proto::scsi::sense::{Sense, SenseKey};
use bytes::{Bytes, BytesMut};

use crate::config::SessionConfig;
use crate::error::Error;
use crate::scsi::{cdb, Capacity, Command, DataError};
use crate::session::{PendingTask, Session};
use crate::url::IscsiUrl;
use busrig_proto::scsi::capacity::{Capacity10, Capacity16};
use busrig_proto::scsi::inquiry::StandardInquiry;
use busrig_proto::scsi::pr::{
    Capabilities, FullStatus, PrInAction, PrOutAction, PrOutParams, PrType, ReadKeys,
    ReadReservation, RegisterAndMoveParams,
};
use busrig_proto::scsi::report_luns::{encode_lun, LunList};
use busrig_proto::scsi::vpd::Vpd;

/// Largest transfer per READ or WRITE command unless the target's Block
/// Limits page says less: 1 MiB keeps every command well inside common
/// MaxBurstLength-based R2T sequences while still pipelining.
pub const DEFAULT_MAX_TRANSFER: u32 = 1 << 20;

/// What a unit attention tells its initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAttentionKind {
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29/00) or POWER ON
    /// OCCURRED (29/01) before the LUN gave this disk any other answer: a
    /// logical unit reports it once to every I_T nexus it has not seen
    /// since it powered on (SAM-5 §5.14, SPC-4 §4.5.6), so a new login
    /// meets it every time. Logged at debug.
    AfterLogin,
    /// Anything else: a reset or power cycle during the session, a
    /// reservation preempted or released, a changed mode or ALUA state.
    /// Logged at info.
    Event,
}

impl UnitAttentionKind {
    /// The kind of `sense` met while the disk `answered` before (had any
    /// answer but a unit attention) or not.
    pub fn classify(sense: &Sense, answered: bool) -> UnitAttentionKind {
        let power_on = sense.key == SenseKey::UnitAttention
            && sense.asc == 0x29
            && matches!(sense.ascq, 0x00 | 0x01);
        if power_on && !answered {
            UnitAttentionKind::AfterLogin
        } else {
            UnitAttentionKind::Event
        }
    }
}

/// One logical unit reached through a session.
pub struct Disk {
    session: Session,
    lun: u16,
    field: u64,
    block_length: Mutex<Option<u32>>,
    reset_retries: u32,
    reserve_after_reset: bool,
    /// A reset's unit attention was seen: RESERVE before the next write.
    reserve_due: AtomicBool,
    /// Under [`Disk::with_reserve_after_reset`]: a write runs alone, other
    /// commands side by side. The target reports a reset's unit attention
    /// to one command per nexus; a write in flight beside that command
    /// would land without the reservation the reset cleared.
    write_gate: tokio::sync::RwLock<()>,
    unit_attentions: Mutex<Vec<(Sense, UnitAttentionKind)>>,
    /// Whether the LUN has answered this disk with anything but a unit
    /// attention (for [`UnitAttentionKind::classify`]).
    answered: AtomicBool,
    max_transfer: u32,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("lun", &self.lun)
            .field("session", &self.session)
            .finish()
    }
}

/// Whether `cdb` changes the medium (SBC-3 writes, WRITE SAME, UNMAP,
/// COMPARE AND WRITE), by its operation code.
fn is_medium_write(cdb: &Command) -> bool {
    matches!(
        cdb.bytes.first(),
        Some(0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e | 0x41 | 0x93 | 0x42 | 0x89)
    )
}

fn data_error(what: &'static str, detail: String) -> Error {
    Error::Data(crate::scsi::DataError { what, detail })
}

impl Disk {
    /// Logs in to the URL's target and addresses its LUN.
    pub async fn open(url: &IscsiUrl, config: SessionConfig) -> Result<Disk, Error> {
        let lun = url
            .lun
            .ok_or_else(|| Error::InvalidRequest("the URL names no LUN".into()))?;
        Ok(Disk::new(Session::open(url, config).await?, lun))
    }

    /// LUN `lun` of an existing session.
    pub fn new(session: Session, lun: u16) -> Disk {
        Disk {
            session,
            lun,
            field: encode_lun(u64::from(lun)),
            block_length: Mutex::new(None),
            reset_retries: 0,
            reserve_after_reset: false,
            reserve_due: AtomicBool::new(false),
            write_gate: tokio::sync::RwLock::new(()),
            unit_attentions: Mutex::new(Vec::new()),
            answered: AtomicBool::new(false),
            max_transfer: DEFAULT_MAX_TRANSFER,
        }
    }

    /// Re-issue a command up to `n` times when it returns a unit attention
    /// or TASK ABORTED (see the module documentation).
    pub fn with_reset_retries(mut self, n: u32) -> Disk {
        self.reset_retries = n;
        self
    }

    /// A SCSI-2 reservation holder's rule for its writes: a reset clears
    /// the reservation (SPC-2 §5.5.1), so a write that meets the reset's
    /// unit attention (ASC 29h) is re-issued only after RESERVE(6) took
    /// the reservation back, and ends as RESERVATION CONFLICT when another
    /// initiator took it meanwhile. Without this a retried write would
    /// land with no reservation held. Takes effect with reset retries.
    pub fn with_reserve_after_reset(mut self, on: bool) -> Disk {
        self.reserve_after_reset = on;
        self
    }

    /// Caps the bytes per READ/WRITE command (at least one block is sent).
    pub fn with_max_transfer(mut self, bytes: u32) -> Disk {
        self.max_transfer = bytes.max(512);
        self
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn lun(&self) -> u16 {
        self.lun
    }

    /// Unit attentions absorbed by retries since the last call.
    pub fn take_unit_attentions(&self) -> Vec<Sense> {
        let met = self.take_classified_unit_attentions();
        met.into_iter().map(|(s, _)| s).collect()
    }

    /// [`Disk::take_unit_attentions`] with what each one tells.
    pub fn take_classified_unit_attentions(&self) -> Vec<(Sense, UnitAttentionKind)> {
        std::mem::take(&mut *self.unit_attentions.lock().expect("ua lock"))
    }

    fn note_reset_condition(&self, e: &Error) {
        if let Some(s) = e.sense() {
            if self.reserve_after_reset && s.asc == 0x29 {
                self.reserve_due.store(true, Ordering::SeqCst);
            }
            let kind = UnitAttentionKind::classify(s, self.answered.load(Ordering::Relaxed));
            match kind {
                UnitAttentionKind::AfterLogin => {
                    tracing::debug!(lun = self.lun, sense = %s, "unit attention of a new login")
                }
                UnitAttentionKind::Event => {
                    tracing::info!(lun = self.lun, sense = %s, "unit attention")
                }
            }
            self.unit_attentions
                .lock()
                .expect("ua lock")
                .push((*s, kind));
        } else {
            tracing::info!(
                lun = self.lun,
                "task aborted by another initiator; re-issued"
            );
        }
    }

    /// Remembers that the LUN gave an answer other than a unit attention.
    fn note_answer(&self, r: &Result<Bytes, Error>) {
        if !r.as_ref().err().is_some_and(Error::is_unit_attention) {
            self.answered.store(true, Ordering::Relaxed);
        }
    }

    /// Runs one CDB with the reset retry policy; GOOD gives the Data-In.
    pub async fn execute(&self, cdb: Command) -> Result<Bytes, Error> {
        if is_medium_write(&cdb) {
            let _alone = self.gate_alone().await;
            self.run_one(cdb).await
        } else {
            let _shared = self.gate_shared().await;
            self.run_one(cdb).await
        }
    }

    /// Under [`Disk::with_reserve_after_reset`], the guard a write holds:
    /// no other command of this disk is in flight meanwhile, so a reset
    /// before the write reaches the LUN is reported to the write itself
    /// (or to a command that ended before it began), and the write
    /// re-reserves first (docs/semantics.md, "SCSI-2 reservations").
    async fn gate_alone(&self) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
        if self.reserve_after_reset {
            Some(self.write_gate.write().await)
        } else {
            None
        }
    }

    /// The guard any other command holds (see [`Disk::gate_alone`]).
    async fn gate_shared(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        if self.reserve_after_reset {
            Some(self.write_gate.read().await)
        } else {
            None
        }
    }

    /// One CDB with the reset retry policy, the caller holding its gate.
    async fn run_one(&self, cdb: Command) -> Result<Bytes, Error> {
        if is_medium_write(&cdb) {
            self.reserve_if_reset().await?;
        }
        let mut tries = 0;
        loop {
            match self.session.execute(self.field, cdb.clone()).await {
                Err(e) if e.is_reset_condition() && tries < self.reset_retries => {
                    self.note_reset_condition(&e);
                    tries += 1;
                    if is_medium_write(&cdb) {
                        self.reserve_if_reset().await?;
                    }
                }
                r => {
                    self.note_answer(&r);
                    return r;
                }
            }
        }
    }

    /// Under [`Disk::with_reserve_after_reset`], once a reset's unit
    /// attention was seen on any command: RESERVE(6) takes the
    /// reservation back before the next write goes out (retrying reset
    /// conditions of its own); a conflict is returned.
    async fn reserve_if_reset(&self) -> Result<(), Error> {
        if !self.reserve_after_reset || !self.reserve_due.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            match self.session.execute(self.field, cdb::reserve_6()).await {
                Ok(_) => {
                    tracing::info!(
                        lun = self.lun,
                        "reservation taken back after a reset, before the next write"
                    );
                    return Ok(());
                }
                Err(e) if e.is_reset_condition() && tries < self.reset_retries => {
                    self.note_reset_condition(&e);
                    self.reserve_due.store(false, Ordering::SeqCst);
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a CDB without waiting, for pipelining and ABORT TASK.
    pub fn start(&self, cdb: Command) -> Result<PendingTask, Error> {
        self.session.start_command(self.field, cdb)
    }

    async fn finish(&self, pending: PendingTask, cdb: Command) -> Result<Bytes, Error> {
        match pending.wait().await {
            Ok(crate::engine::Answer::Scsi(o)) => match o.into_result() {
                Err(e) if e.is_reset_condition() && self.reset_retries > 0 => {
                    self.note_reset_condition(&e);
                    self.run_one(cdb).await
                }
                r => {
                    self.note_answer(&r);
                    r
                }
            },
            Ok(other) => Err(Error::Protocol(format!(
                "SCSI command answered with {other:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// TEST UNIT READY.
    pub async fn test_unit_ready(&self) -> Result<(), Error> {
        self.execute(cdb::test_unit_ready()).await.map(|_| ())
    }

    /// Standard INQUIRY data.
    pub async fn inquiry(&self) -> Result<StandardInquiry, Error> {
        let b = self.execute(cdb::inquiry(None, 96)).await?;
        Ok(StandardInquiry::decode(&b).map_err(DataError::from)?)
    }

    /// A VPD page, decoded, with its raw bytes.
    pub async fn vpd(&self, page: u8) -> Result<(Vpd, Bytes), Error> {
        let mut raw = self.execute(cdb::inquiry(Some(page), 255)).await?;
        if raw.len() >= 4 {
            let need = 4 + u16::from_be_bytes([raw[2], raw[3]]) as usize;
            if need > raw.len() && need <= u16::MAX as usize {
                raw = self.execute(cdb::inquiry(Some(page), need as u16)).await?;
            }
        }
        Ok((Vpd::decode(page, &raw).map_err(DataError::from)?, raw))
    }

    /// READ CAPACITY(16), or (10) for a target that does not know (16).
    /// Remembers the block length for `read` and `write`.
    pub async fn capacity(&self) -> Result<Capacity, Error> {
        let c = match self.execute(cdb::read_capacity_16(32)).await {
            Ok(b) => Capacity::from(Capacity16::decode(&b).map_err(DataError::from)?),
            Err(e) if e.sense().is_some_and(|s| s.key == SenseKey::IllegalRequest) => {
                let b = self.execute(cdb::read_capacity_10()).await?;
                let c = Capacity::from(Capacity10::decode(&b).map_err(DataError::from)?);
                if c.blocks == 1 << 32 {
                    // RETURNED LBA FFFFFFFFh means "use (16)" (SBC-3 §5.15.2).
                    return Err(data_error(
                        "READ CAPACITY",
                        "the LUN is too large for READ CAPACITY(10)".into(),
                    ));
                }
                c
            }
            Err(e) => return Err(e),
        };
        if c.block_length == 0 {
            return Err(data_error("READ CAPACITY data", "block length 0".into()));
        }
        *self.block_length.lock().expect("block length lock") = Some(c.block_length);
        Ok(c)
    }

    /// The logical block length (from READ CAPACITY, asked once).
    pub async fn block_length(&self) -> Result<u32, Error> {
        let known = *self.block_length.lock().expect("block length lock");
        match known {
            Some(b) => Ok(b),
            None => Ok(self.capacity().await?.block_length),
        }
    }

    /// REPORT LUNS, asking again with a larger buffer when the list is longer.
    pub async fn report_luns(&self) -> Result<LunList, Error> {
        let mut alloc = 8 + 8 * 64;
        loop {
            let data = self.execute(cdb::report_luns(alloc)).await?;
            let l = LunList::decode(&data)
                .map_err(|e| data_error("REPORT LUNS data", e.to_string()))?;
            let need = 8 + l.list_length;
            if need <= alloc || alloc >= 1 << 20 {
                return Ok(l);
            }
            alloc = need.min(1 << 20);
        }
    }

    fn blocks_per_command(&self, bl: u32) -> u32 {
        (self.max_transfer / bl).max(1)
    }

    async fn read_inner(&self, lba: u64, blocks: u32, fua: bool) -> Result<Bytes, Error> {
        let bl = self.block_length().await?;
        let per = self.blocks_per_command(bl);
        let _shared = self.gate_shared().await;
        // All pieces go out before the first answer is awaited: the session
        // pipelines them within the CmdSN window.
        let mut pieces = Vec::new();
        let mut done = 0u32;
        while done < blocks {
            let n = per.min(blocks - done);
            let c = cdb::read(lba + done as u64, n, bl, fua);
            pieces.push((self.start(c.clone())?, c));
            done += n;
        }
        let mut out = BytesMut::with_capacity(blocks as usize * bl as usize);
        for (p, c) in pieces {
            let b = self.finish(p, c).await?;
            out.extend_from_slice(&b);
        }
        Ok(out.freeze())
    }

    /// Reads `blocks` blocks from `lba`.
    pub async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, Error> {
        self.read_inner(lba, blocks, false).await
    }

    /// Reads with FUA: from the medium, not a cache (SBC-3 §5.8).
    pub async fn read_fua(&self, lba: u64, blocks: u32) -> Result<Bytes, Error> {
        self.read_inner(lba, blocks, true).await
    }

    /// Writes `data` (whole blocks) at `lba`; with `fua` the target
    /// acknowledges only after the data is durable (SBC-3 §5.32).
    pub async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), Error> {
        let bl = self.block_length().await?;
        if data.is_empty() || data.len() % bl as usize != 0 {
            return Err(Error::InvalidRequest(format!(
                "a write of {} bytes is not whole {bl}-byte blocks",
                data.len()
            )));
        }
        let per = self.blocks_per_command(bl) as usize * bl as usize;
        let piece = |off: usize| {
            let n = per.min(data.len() - off);
            let c = cdb::write(
                lba + (off / bl as usize) as u64,
                (n / bl as usize) as u32,
                data.slice(off..off + n),
                fua,
            );
            (c, off + n)
        };
        if let Some(_alone) = self.gate_alone().await {
            // A SCSI-2 holder's pieces go one at a time: a piece behind
            // one that met a reset's unit attention would land without the
            // reservation the reset cleared (issue 16, chaos seed 403).
            let mut off = 0usize;
            while off < data.len() {
                let (c, next) = piece(off);
                self.run_one(c).await?;
                off = next;
            }
            return Ok(());
        }
        self.reserve_if_reset().await?;
        let mut pieces = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            let (c, next) = piece(off);
            pieces.push((self.start(c.clone())?, c));
            off = next;
        }
        for (p, c) in pieces {
            self.finish(p, c).await?;
        }
        Ok(())
    }

    /// SYNCHRONIZE CACHE for the whole unit.
    pub async fn synchronize_cache(&self) -> Result<(), Error> {
        self.execute(cdb::synchronize_cache(0, 0)).await.map(|_| ())
    }

    /// COMPARE AND WRITE: writes `new` at `lba` only if the blocks there
    /// equal `expected` (SBC-3 §5.2). A mismatch is CHECK CONDITION,
    /// MISCOMPARE, with the offset of the first differing byte in the
    /// sense INFORMATION field.
    pub async fn compare_and_write(
        &self,
        lba: u64,
        expected: &[u8],
        new: &[u8],
        fua: bool,
    ) -> Result<(), Error> {
        let bl = self.block_length().await? as usize;
        if expected.len() != new.len() || expected.is_empty() || expected.len() % bl != 0 {
            return Err(Error::InvalidRequest(
                "COMPARE AND WRITE needs two equal runs of whole blocks".into(),
            ));
        }
        let blocks = expected.len() / bl;
        let blocks = u8::try_from(blocks).map_err(|_| {
            Error::InvalidRequest(format!("COMPARE AND WRITE of {blocks} blocks: at most 255"))
        })?;
        let mut d = BytesMut::with_capacity(expected.len() * 2);
        d.extend_from_slice(expected);
        d.extend_from_slice(new);
        self.execute(cdb::compare_and_write(lba, blocks, d.freeze(), fua))
            .await
            .map(|_| ())
    }

    /// RESERVE(6) (SPC-2 §7.21).
    pub async fn reserve6(&self) -> Result<(), Error> {
        self.execute(cdb::reserve_6()).await.map(|_| ())
    }

    /// RELEASE(6) (SPC-2 §7.19).
    pub async fn release6(&self) -> Result<(), Error> {
        self.execute(cdb::release_6()).await.map(|_| ())
    }

    /// RESERVE(10) (SPC-2 §7.22).
    pub async fn reserve10(&self) -> Result<(), Error> {
        self.execute(cdb::reserve_10()).await.map(|_| ())
    }

    /// RELEASE(10) (SPC-2 §7.20).
    pub async fn release10(&self) -> Result<(), Error> {
        self.execute(cdb::release_10()).await.map(|_| ())
    }

    /// PR IN with `action`, growing the buffer until the whole list fits.
    async fn pr_in(&self, action: PrInAction) -> Result<Bytes, Error> {
        let mut alloc: u16 = 8192;
        loop {
            let b = self
                .execute(cdb::persistent_reserve_in(action, alloc))
                .await?;
            let need = match action {
                PrInAction::ReportCapabilities => 0,
                _ if b.len() >= 8 => 8 + u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize,
                _ => 0,
            };
            if need <= alloc as usize || alloc == u16::MAX {
                return Ok(b);
            }
            alloc = need.min(u16::MAX as usize) as u16;
        }
    }

    /// PR IN READ KEYS (SPC-4 §6.13.2).
    pub async fn pr_read_keys(&self) -> Result<ReadKeys, Error> {
        Ok(ReadKeys::decode(&self.pr_in(PrInAction::ReadKeys).await?)?)
    }

    /// PR IN READ RESERVATION (SPC-4 §6.13.3).
    pub async fn pr_read_reservation(&self) -> Result<ReadReservation, Error> {
        Ok(ReadReservation::decode(
            &self.pr_in(PrInAction::ReadReservation).await?,
        )?)
    }

    /// PR IN REPORT CAPABILITIES (SPC-4 §6.13.4).
    pub async fn pr_report_capabilities(&self) -> Result<Capabilities, Error> {
        Ok(Capabilities::decode(
            &self.pr_in(PrInAction::ReportCapabilities).await?,
        )?)
    }

    /// PR IN READ FULL STATUS (SPC-4 §6.13.5).
    pub async fn pr_read_full_status(&self) -> Result<FullStatus, Error> {
        Ok(FullStatus::decode(
            &self.pr_in(PrInAction::ReadFullStatus).await?,
        )?)
    }

    /// PR OUT with any service action but REGISTER AND MOVE, which takes a
    /// parameter list of its own ([`Disk::pr_register_and_move`]); `pr_type`
    /// goes in the CDB's TYPE field where the action uses one (SPC-4 §6.16.2).
    pub async fn pr_out(
        &self,
        action: PrOutAction,
        pr_type: Option<PrType>,
        params: &PrOutParams,
    ) -> Result<(), Error> {
        if action == PrOutAction::RegisterAndMove {
            return Err(Error::InvalidRequest(
                "REGISTER AND MOVE needs the TransportID of the new holder".into(),
            ));
        }
        let ty = if action.uses_type() {
            pr_type
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "PR OUT {} needs a reservation type",
                        action.name()
                    ))
                })?
                .code()
        } else {
            0
        };
        self.execute(cdb::persistent_reserve_out(
            action,
            ty,
            Bytes::from(params.encode()),
        ))
        .await
        .map(|_| ())
    }

    /// PR OUT REGISTER AND MOVE (SPC-4 §6.16.4): the reservation, of
    /// `pr_type`, goes to the I_T nexus `params.transport_id` names.
    pub async fn pr_register_and_move(
        &self,
        pr_type: PrType,
        params: &RegisterAndMoveParams,
    ) -> Result<(), Error> {
        self.execute(cdb::persistent_reserve_out(
            PrOutAction::RegisterAndMove,
            pr_type.code(),
            Bytes::from(params.encode()),
        ))
        .await
        .map(|_| ())
    }

    /// LOGICAL UNIT RESET (RFC 7143 §11.5.1, SAM-5 §7.7).
    pub async fn lun_reset(&self) -> Result<(), Error> {
        self.session
            .task_management(tmf::LOGICAL_UNIT_RESET, self.field, None)
            .await
    }

    /// TARGET WARM RESET: every LU of the target, every initiator (SAM-5 §7.8).
    pub async fn target_warm_reset(&self) -> Result<(), Error> {
        self.session
            .task_management(tmf::TARGET_WARM_RESET, 0, None)
            .await
    }

    /// TARGET COLD RESET: a warm reset after which the target drops every
    /// connection (RFC 7143 §11.5.1); the session then reconnects.
    pub async fn target_cold_reset(&self) -> Result<(), Error> {
        self.session
            .task_management(tmf::TARGET_COLD_RESET, 0, None)
            .await
    }

    /// ABORT TASK for a command started with [`Disk::start`].
    pub async fn abort_task(&self, tag: u32) -> Result<(), Error> {
        self.session.abort_task(self.field, tag).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(asc: u8, ascq: u8) -> Sense {
        Sense {
            key: SenseKey::UnitAttention,
            asc,
            ascq,
            information: None,
            field: None,
            progress: None,
        }
    }

    /// One row per case: (sense, answered before, kind).
    #[test]
    fn power_on_before_the_first_answer_is_expected_and_the_rest_are_events() {
        use UnitAttentionKind::{AfterLogin, Event};
        let rows = [
            // SPC-4 §4.5.6: every new I_T nexus first meets power-on/reset.
            (ua(0x29, 0x00), false, AfterLogin),
            (ua(0x29, 0x01), false, AfterLogin),
            // The same once the LUN answered: a reset or power cycle now.
            (ua(0x29, 0x00), true, Event),
            (ua(0x29, 0x01), true, Event),
            // A bus reset, a target reset, a lost nexus: events even first.
            (ua(0x29, 0x02), false, Event),
            (ua(0x29, 0x03), false, Event),
            (ua(0x29, 0x07), false, Event),
            // Reservations preempted or released, ALUA state changed.
            (ua(0x2a, 0x03), false, Event),
            (ua(0x2a, 0x04), true, Event),
            (ua(0x2a, 0x06), false, Event),
        ];
        for (sense, answered, kind) in rows {
            assert_eq!(
                UnitAttentionKind::classify(&sense, answered),
                kind,
                "{sense} answered={answered}"
            );
        }
        // 29/00 with another sense key is not a unit attention at all.
        let mut not_ua = ua(0x29, 0x00);
        not_ua.key = SenseKey::NotReady;
        assert_eq!(UnitAttentionKind::classify(&not_ua, false), Event);
    }
}
