//! Reservations of one logical unit: SCSI-2 RESERVE/RELEASE (SPC-2 §7.21,
//! §7.17) and SPC-4 persistent reservations (SPC-4 §5.9, §6.15, §6.16).
//!
//! The SCSI executor asks [`Reservations::check`] before running any command
//! and hands RESERVE, RELEASE, PERSISTENT RESERVE IN and OUT to the methods
//! below. Nothing here does network I/O; the only I/O is the APTPL file.

mod aptpl;
mod conflict;
mod persistent;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use busrig_proto::scsi::pr::{PrDecodeError, PrInAction, PrInCdb, PrOutCdb};
use busrig_proto::scsi::sense::{Asc, Sense};

use crate::nexus::ItNexus;
use conflict::Class;
use persistent::{Holder, PrState};

pub use persistent::{MAX_REGISTRATIONS, RELATIVE_TARGET_PORT_ID};

/// The command may not run now: answer RESERVATION CONFLICT status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// Why a PERSISTENT RESERVE IN or OUT command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrError {
    /// RESERVATION CONFLICT status (SPC-4 §5.9.1).
    #[error("reservation conflict")]
    Conflict,
    /// CHECK CONDITION status with this sense data.
    #[error("check condition: {0}")]
    Sense(Sense),
}

impl From<Conflict> for PrError {
    fn from(_: Conflict) -> PrError {
        PrError::Conflict
    }
}

impl From<PrDecodeError> for PrError {
    fn from(e: PrDecodeError) -> PrError {
        PrError::Sense(e.sense())
    }
}

impl From<Asc> for PrError {
    fn from(a: Asc) -> PrError {
        PrError::Sense(Sense::new(a))
    }
}

/// Why the reservation state of a logical unit could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// The APTPL file exists but could not be read.
    #[error("reading APTPL state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The APTPL file is damaged; refusing to start rather than lose state.
    #[error("APTPL state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What a PERSISTENT RESERVE OUT did to other I_T nexuses; the executor
/// performs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrOutEffects {
    /// Unit attention conditions to establish (SPC-4 §5.9.11, §5.9.12).
    pub unit_attentions: Vec<(ItNexus, Asc)>,
    /// PREEMPT AND ABORT: abort every task of these nexuses on this logical
    /// unit, except the PERSISTENT RESERVE OUT command itself, which may be
    /// among them when the preempting nexus preempts its own key (SPC-4
    /// §5.9.11.5). Whether the owners of the aborted tasks also get COMMANDS
    /// CLEARED BY ANOTHER INITIATOR follows the TAS bit (SAM-5 §5.6), which
    /// is the task manager's business.
    pub abort_tasks_of: Vec<ItNexus>,
}

/// Reservation type of a persistent reservation (SPC-4 §6.15.3.4, Table 177).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrType {
    /// 1h Write Exclusive.
    WriteExclusive,
    /// 3h Exclusive Access.
    ExclusiveAccess,
    /// 5h Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// 6h Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// 7h Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants,
    /// 8h Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    pub fn from_code(code: u8) -> Option<PrType> {
        use PrType::*;
        Some(match code {
            0x1 => WriteExclusive,
            0x3 => ExclusiveAccess,
            0x5 => WriteExclusiveRegistrantsOnly,
            0x6 => ExclusiveAccessRegistrantsOnly,
            0x7 => WriteExclusiveAllRegistrants,
            0x8 => ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        use PrType::*;
        match self {
            WriteExclusive => 0x1,
            ExclusiveAccess => 0x3,
            WriteExclusiveRegistrantsOnly => 0x5,
            ExclusiveAccessRegistrantsOnly => 0x6,
            WriteExclusiveAllRegistrants => 0x7,
            ExclusiveAccessAllRegistrants => 0x8,
        }
    }

    /// Short name as sg_persist prints it.
    /// The abbreviation used in docs/semantics.md, status JSON and logs.
    pub fn short_name(self) -> &'static str {
        use PrType::*;
        match self {
            WriteExclusive => "WE",
            ExclusiveAccess => "EA",
            WriteExclusiveRegistrantsOnly => "WERO",
            ExclusiveAccessRegistrantsOnly => "EARO",
            WriteExclusiveAllRegistrants => "WEAR",
            ExclusiveAccessAllRegistrants => "EAAR",
        }
    }

    pub fn name(self) -> &'static str {
        use PrType::*;
        match self {
            WriteExclusive => "Write Exclusive",
            ExclusiveAccess => "Exclusive Access",
            WriteExclusiveRegistrantsOnly => "Write Exclusive, registrants only",
            ExclusiveAccessRegistrantsOnly => "Exclusive Access, registrants only",
            WriteExclusiveAllRegistrants => "Write Exclusive, all registrants",
            ExclusiveAccessAllRegistrants => "Exclusive Access, all registrants",
        }
    }

    /// Write Exclusive family: reads stay open to everyone.
    pub fn write_exclusive(self) -> bool {
        use PrType::*;
        matches!(
            self,
            WriteExclusive | WriteExclusiveRegistrantsOnly | WriteExclusiveAllRegistrants
        )
    }

    /// Registrants-only and all-registrants types admit every registrant
    /// (SPC-4 §5.9.10 Table 66 "From registered I_T nexus").
    pub fn admits_registrants(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// All-registrants types: every registered I_T nexus is a reservation
    /// holder (SPC-4 §5.9.10).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// One registration as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationView {
    pub nexus: ItNexus,
    pub key: u64,
}

/// The persistent reservation as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationView {
    /// The holder; `None` for all-registrants types, where every registrant
    /// holds it.
    pub holder: Option<ItNexus>,
    pub pr_type: PrType,
}

/// Persistent reservation state for the control plane status JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrSnapshot {
    pub generation: u32,
    pub registrations: Vec<RegistrationView>,
    pub reservation: Option<ReservationView>,
    pub aptpl: bool,
}

/// SPC-4 §5.9.3 (exceptions to SPC-2 RESERVE and RELEASE, CRH=1): what a
/// RESERVE or RELEASE does while registrations exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crh {
    /// No registrations: SPC-2 RESERVE/RELEASE as usual.
    Spc2,
    /// From the PR holder, or from a registrant under a registrants-only or
    /// all-registrants reservation: GOOD, nothing reserved or released.
    Ignored,
    /// Every other case: SPC-2 §5.5.1, while any registration exists all
    /// RESERVE and RELEASE commands conflict.
    Conflict,
}

/// Reservation state of one logical unit.
#[derive(Debug)]
pub struct Reservations {
    /// SCSI-2 logical unit reservation holder (SPC-2 §7.21).
    scsi2: Option<ItNexus>,
    pr: PrState,
    /// Where APTPL state lives; `None`: APTPL unsupported (PTPL_C zero).
    aptpl_file: Option<PathBuf>,
    /// A PR OUT's new state is being made durable (between
    /// [`Reservations::begin_persistent_reserve_out`] and
    /// [`Reservations::finish_persistent_reserve_out`]).
    saving: bool,
    /// Counts power-on events, so a save that finishes after one knows
    /// the state it was computed from was lost meanwhile.
    power_epoch: u64,
}

/// A PERSISTENT RESERVE OUT whose new state must be durable before it is
/// made current and the command answered (SPC-4 §5.9.4). The caller writes
/// it with [`PendingPrOut::save`], off the I/O threads and without holding
/// the logical unit's lock, then hands the result to
/// [`Reservations::finish_persistent_reserve_out`].
#[derive(Debug)]
#[must_use = "a pending PR OUT must be saved and finished"]
pub struct PendingPrOut {
    next: PrState,
    effects: PrOutEffects,
    path: PathBuf,
    power_epoch: u64,
}

impl PendingPrOut {
    /// Writes the new state (temporary file, fsync, rename, fsync of the
    /// directory: docs/semantics.md "Persistent reservations"). Blocks on the disk.
    pub fn save(&self) -> std::io::Result<()> {
        aptpl::save(&self.path, &self.next)
    }

    /// The PRgeneration the new state will have.
    pub fn generation(&self) -> u32 {
        self.next.generation
    }
}

/// What [`Reservations::begin_persistent_reserve_out`] decided.
#[derive(Debug)]
pub enum PrOutStep {
    /// Nothing to persist: the new state is current.
    Done(PrOutEffects),
    /// The new state waits for its durable write.
    Save(PendingPrOut),
}

impl Reservations {
    /// `aptpl_file`: where APTPL state is persisted; restored here if
    /// present and valid (checksummed with CRC32C), else a clear error.
    /// A saved state with APTPL cleared restores nothing.
    pub fn new(aptpl_file: Option<PathBuf>) -> Result<Reservations, ReservationError> {
        let pr = match &aptpl_file {
            Some(path) => match aptpl::load(path)? {
                Some(saved) if saved.aptpl => saved,
                _ => PrState::default(),
            },
            None => PrState::default(),
        };
        Ok(Reservations {
            scsi2: None,
            pr,
            aptpl_file,
            saving: false,
            power_epoch: 0,
        })
    }

    fn crh(&self, nexus: &ItNexus) -> Crh {
        if self.pr.registrations.is_empty() {
            return Crh::Spc2;
        }
        let registrant_type = self
            .pr
            .reservation
            .as_ref()
            .is_some_and(|r| r.pr_type.admits_registrants());
        if self.pr.is_holder(nexus) || (registrant_type && self.pr.is_registered(nexus)) {
            Crh::Ignored
        } else {
            Crh::Conflict
        }
    }

    /// May `nexus` run `cdb` now? SCSI-2 reservation conflicts (SPC-2
    /// §5.5.1), the mixed-use rules, and the persistent reservation conflict
    /// tables (SPC-4 §5.9.1 Table 63, SBC-3 §4.17 Table 13).
    pub fn check(&self, nexus: &ItNexus, cdb: &[u8]) -> Result<(), Conflict> {
        let class = conflict::classify(cdb);
        if let Some(holder) = &self.scsi2 {
            // SPC-2 §5.5.1: while a RESERVE reservation exists, every
            // PERSISTENT RESERVE IN/OUT conflicts, whoever sends it.
            if class == Class::Persistent {
                return Err(Conflict);
            }
            if holder != nexus && !conflict::passes_scsi2_reservation(cdb) {
                return Err(Conflict);
            }
        }
        if class == Class::Scsi2Reservation {
            return match self.crh(nexus) {
                Crh::Conflict => Err(Conflict),
                Crh::Spc2 | Crh::Ignored => Ok(()),
            };
        }
        if let Some(res) = &self.pr.reservation {
            if !self.pr.is_holder(nexus)
                && !conflict::passes_persistent_reservation(
                    class,
                    res.pr_type,
                    self.pr.is_registered(nexus),
                )
            {
                return Err(Conflict);
            }
        }
        Ok(())
    }

    /// RESERVE(6)/(10): `nexus` reserves the logical unit (SPC-2 §7.21).
    /// Conflict if another nexus holds it; with registrations present,
    /// SPC-4 §5.9.3 decides (see [`Crh`]).
    ///
    /// While a PR OUT's state is being saved, RESERVE conflicts: it was
    /// judged against registrations that may be about to change, and a
    /// conflict is what SPC-2 §5.5.1 answers once registrations exist.
    pub fn reserve6(&mut self, nexus: &ItNexus) -> Result<(), Conflict> {
        if self.saving {
            return Err(Conflict);
        }
        match self.crh(nexus) {
            Crh::Conflict => return Err(Conflict),
            Crh::Ignored => return Ok(()),
            Crh::Spc2 => {}
        }
        match &self.scsi2 {
            Some(holder) if holder != nexus => Err(Conflict),
            _ => {
                self.scsi2 = Some(nexus.clone());
                Ok(())
            }
        }
    }

    /// RELEASE(6)/(10): releases if held by `nexus`; from anyone else it is
    /// GOOD and does nothing (SPC-2 §7.17). Never releases a persistent
    /// reservation (SPC-4 §5.9.3); the conflict case is reported by
    /// [`Reservations::check`].
    pub fn release6(&mut self, nexus: &ItNexus) {
        if self.crh(nexus) == Crh::Spc2 && self.scsi2.as_ref() == Some(nexus) {
            self.scsi2 = None;
        }
    }

    /// PERSISTENT RESERVE IN (SPC-4 §6.15): the full parameter data; the
    /// caller truncates it to the allocation length.
    pub fn persistent_reserve_in(&self, _nexus: &ItNexus, cdb: &[u8]) -> Result<Vec<u8>, PrError> {
        if self.scsi2.is_some() {
            return Err(PrError::Conflict);
        }
        let cdb = PrInCdb::decode(cdb)?;
        Ok(match cdb.action {
            PrInAction::ReadKeys => self.pr.read_keys(),
            PrInAction::ReadReservation => self.pr.read_reservation(),
            PrInAction::ReportCapabilities => {
                self.pr.report_capabilities(self.aptpl_file.is_some())
            }
            PrInAction::ReadFullStatus => self.pr.read_full_status(),
        })
    }

    /// PERSISTENT RESERVE OUT (SPC-4 §6.16), saving inline. `param`: the
    /// parameter data transferred; `known`: the I_T nexuses logged in to
    /// the target, used for TransportIDs naming an initiator device (format
    /// 00b). With APTPL active the new state is on disk before this
    /// returns; if it cannot be written the command fails and nothing
    /// changes. The target's I/O path uses the two halves below instead,
    /// so the write runs without the logical unit's lock.
    pub fn persistent_reserve_out(
        &mut self,
        nexus: &ItNexus,
        cdb: &[u8],
        param: &[u8],
        known: &[ItNexus],
    ) -> Result<PrOutEffects, PrError> {
        match self.begin_persistent_reserve_out(nexus, cdb, param, known)? {
            PrOutStep::Done(effects) => Ok(effects),
            PrOutStep::Save(pending) => {
                let saved = pending.save();
                self.finish_persistent_reserve_out(pending, saved)
            }
        }
    }

    /// First half of a PERSISTENT RESERVE OUT: checks and applies the
    /// service action to a copy of the state. Without APTPL (before or
    /// after) the copy is made current at once; with it the copy comes
    /// back to be saved, and the current state stays as it was until
    /// [`Reservations::finish_persistent_reserve_out`], so no other command
    /// ever sees a state that is not yet durable.
    ///
    /// One PR OUT at a time may be between the halves: the caller
    /// serialises them (the logical unit's PR OUT turn), so states reach
    /// the disk in the order they were applied and a later one is never
    /// overwritten by an earlier one.
    pub fn begin_persistent_reserve_out(
        &mut self,
        nexus: &ItNexus,
        cdb: &[u8],
        param: &[u8],
        known: &[ItNexus],
    ) -> Result<PrOutStep, PrError> {
        if self.scsi2.is_some() {
            return Err(PrError::Conflict);
        }
        if self.saving {
            tracing::error!(
                %nexus,
                "PR OUT started while another one is being saved; the caller must serialise them"
            );
            return Err(Asc::INTERNAL_TARGET_FAILURE.into());
        }
        let cdb = PrOutCdb::decode(cdb)?;
        let len = cdb.parameter_list_length as usize;
        let param = param.get(..len).ok_or(PrDecodeError::ParameterListLength)?;
        let mut next = self.pr.clone();
        let effects = next.apply(nexus, &cdb, param, known, self.aptpl_file.is_some())?;
        match &self.aptpl_file {
            Some(path) if next.aptpl || self.pr.aptpl => {
                self.saving = true;
                Ok(PrOutStep::Save(PendingPrOut {
                    next,
                    effects,
                    path: path.clone(),
                    power_epoch: self.power_epoch,
                }))
            }
            _ => {
                self.pr = next;
                Ok(PrOutStep::Done(effects))
            }
        }
    }

    /// Second half: `saved` is the result of [`PendingPrOut::save`]. On
    /// success the saved state becomes current; on failure the command
    /// fails with INTERNAL TARGET FAILURE and nothing changes.
    ///
    /// A power-on while the state was being saved comes before the save
    /// completed or after it; the file is what survives power loss, so the
    /// state becomes current and the power-on rule is applied to it again
    /// (kept with APTPL, cleared without).
    pub fn finish_persistent_reserve_out(
        &mut self,
        pending: PendingPrOut,
        saved: std::io::Result<()>,
    ) -> Result<PrOutEffects, PrError> {
        self.saving = false;
        if let Err(e) = saved {
            tracing::error!(
                path = %pending.path.display(),
                error = %e,
                "saving APTPL state failed; the PERSISTENT RESERVE OUT fails and nothing changes"
            );
            return Err(Asc::INTERNAL_TARGET_FAILURE.into());
        }
        self.pr = pending.next;
        if pending.power_epoch != self.power_epoch && !self.pr.aptpl {
            self.pr = PrState::default();
        }
        Ok(pending.effects)
    }

    /// The I_T nexus is gone: the SCSI-2 reservation it held is released;
    /// PR registrations stay (SPC-4 §5.9.7: only PR OUT removes them).
    pub fn nexus_lost(&mut self, nexus: &ItNexus) {
        if self.scsi2.as_ref() == Some(nexus) {
            self.scsi2 = None;
        }
    }

    /// Logical unit, target or bus reset: the SCSI-2 reservation is cleared
    /// (SPC-2 §5.5.1); persistent reservations survive every reset (SPC-4
    /// §5.9.1).
    pub fn reset(&mut self) {
        self.scsi2 = None;
    }

    /// The logical unit lost power and came back (SPC-4 §5.9.4): the SCSI-2
    /// reservation is gone, and persistent registrations and the
    /// reservation survive only when APTPL was set (the state in memory is
    /// then exactly what was saved, since every change is saved first).
    pub fn power_on(&mut self) {
        self.power_epoch += 1;
        self.scsi2 = None;
        if !self.pr.aptpl {
            self.pr = PrState::default();
        }
    }

    /// The SCSI-2 reservation holder, for the control plane.
    pub fn scsi2_holder(&self) -> Option<&ItNexus> {
        self.scsi2.as_ref()
    }

    /// Persistent reservation state, for the control plane.
    pub fn pr_snapshot(&self) -> PrSnapshot {
        PrSnapshot {
            generation: self.pr.generation,
            registrations: self
                .pr
                .registrations
                .iter()
                .map(|r| RegistrationView {
                    nexus: r.nexus.clone(),
                    key: r.key,
                })
                .collect(),
            reservation: self.pr.reservation.as_ref().map(|r| ReservationView {
                holder: match &r.holder {
                    Holder::Registrant(n) => Some(n.clone()),
                    Holder::AllRegistrants => None,
                },
                pr_type: r.pr_type,
            }),
            aptpl: self.pr.aptpl,
        }
    }
}
