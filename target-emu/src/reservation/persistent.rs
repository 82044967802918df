//! SPC-4 persistent reservations of one logical unit: registrations, the
//! reservation, PRgeneration, and what every PERSISTENT RESERVE IN / OUT
//! service action does to them (SPC-4 §5.9.5 - §5.9.12, §6.15, §6.16).
//!
//! Pure state: the caller applies an action to a copy, persists the copy
//! when APTPL asks for it, and only then makes it current, so a failed
//! write leaves the logical unit as it was.

use busrig_proto::scsi::pr::{
    Capabilities, FullStatus, FullStatusDescriptor, PrOutAction, PrOutCdb, PrOutParams, ReadKeys,
    ReadReservation, RegisterAndMoveParams, ReservationDescriptor, TransportId, SCOPE_LU,
};
use busrig_proto::scsi::sense::{Asc, Sense};

use super::{PrError, PrOutEffects, PrType};
use crate::nexus::ItNexus;

/// Relative target port identifier of the one target port each busrig
/// target has (SPC-4 §3.1.120); VPD page 83h must report the same value.
pub const RELATIVE_TARGET_PORT_ID: u16 = 1;

/// Registrations one logical unit holds at most; beyond this, REGISTER gets
/// INSUFFICIENT REGISTRATION RESOURCES (SPC-4 §5.9.7).
pub const MAX_REGISTRATIONS: usize = 1024;

/// One registered I_T nexus and its reservation key (SPC-4 §5.9.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    /// The I_T nexus the registration was made through (or for, with
    /// SPEC_I_PT / REGISTER AND MOVE).
    pub nexus: ItNexus,
    pub key: u64,
    /// Registered with ALL_TG_PT: valid through every target port.
    pub all_tg_pt: bool,
}

impl Registration {
    /// Does this registration cover `n`? Same initiator port, and the same
    /// target port unless it was made with ALL_TG_PT (SPC-4 §6.16.3).
    pub fn covers(&self, n: &ItNexus) -> bool {
        self.nexus.initiator == n.initiator
            && self.nexus.isid == n.isid
            && (self.all_tg_pt || (self.nexus.target == n.target && self.nexus.tpgt == n.tpgt))
    }
}

/// Who holds the persistent reservation (SPC-4 §5.9.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The registration made through this nexus.
    Registrant(ItNexus),
    /// All-registrants types: every registered I_T nexus.
    AllRegistrants,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub holder: Holder,
    pub pr_type: PrType,
}

/// Everything SPC-4 keeps for persistent reservations of one logical unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PrState {
    pub generation: u32,
    /// In registration order, which READ KEYS and READ FULL STATUS follow.
    pub registrations: Vec<Registration>,
    pub reservation: Option<Reservation>,
    /// APTPL of the last successful REGISTER, REGISTER AND IGNORE EXISTING
    /// KEY or REGISTER AND MOVE (SPC-4 §5.9.4).
    pub aptpl: bool,
}

fn conflict<T>() -> Result<T, PrError> {
    Err(PrError::Conflict)
}

fn param_field(byte: u16, bit: Option<u8>) -> PrError {
    PrError::Sense(Sense::new(Asc::INVALID_FIELD_IN_PARAMETER_LIST).param_field(byte, bit))
}

fn cdb_field(byte: u16, bit: Option<u8>) -> PrError {
    PrError::Sense(Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(byte, bit))
}

/// SCOPE must be LU_SCOPE and TYPE one of the six types whenever a
/// reservation is being created (SPC-4 §6.15.3.3, §6.15.3.4).
fn reservation_type(cdb: &PrOutCdb) -> Result<PrType, PrError> {
    if cdb.scope != SCOPE_LU {
        return Err(cdb_field(2, Some(7)));
    }
    PrType::from_code(cdb.type_code).ok_or_else(|| cdb_field(2, Some(3)))
}

impl PrState {
    fn position(&self, n: &ItNexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.covers(n))
    }

    pub fn registration(&self, n: &ItNexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.covers(n))
    }

    pub fn is_registered(&self, n: &ItNexus) -> bool {
        self.registration(n).is_some()
    }

    /// SPC-4 §5.9.10: the holder is the nexus that reserved, or for the
    /// all-registrants types every registered nexus.
    pub fn is_holder(&self, n: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(Reservation {
                holder: Holder::AllRegistrants,
                ..
            }) => self.is_registered(n),
            Some(Reservation {
                holder: Holder::Registrant(h),
                ..
            }) => self.registration(n).is_some_and(|r| r.nexus == *h),
        }
    }

    /// The holder's reservation key as READ RESERVATION reports it: zero for
    /// all-registrants types (SPC-4 §5.9.10).
    fn holder_key(&self) -> u64 {
        match &self.reservation {
            Some(Reservation {
                holder: Holder::Registrant(h),
                ..
            }) => self.registration(h).map_or(0, |r| r.key),
            _ => 0,
        }
    }

    fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    // ---- PERSISTENT RESERVE IN (SPC-4 §6.15) ----

    pub fn read_keys(&self) -> Vec<u8> {
        ReadKeys {
            generation: self.generation,
            keys: self.registrations.iter().map(|r| r.key).collect(),
        }
        .encode()
    }

    pub fn read_reservation(&self) -> Vec<u8> {
        ReadReservation {
            generation: self.generation,
            reservation: self.reservation.as_ref().map(|r| ReservationDescriptor {
                key: self.holder_key(),
                scope: SCOPE_LU,
                type_code: r.pr_type.code(),
            }),
        }
        .encode()
    }

    pub fn report_capabilities(&self, ptpl_c: bool) -> Vec<u8> {
        Capabilities {
            rlr_c: false,
            // SPC-4 §5.9.3 exceptions to SPC-2 RESERVE/RELEASE are implemented.
            crh: true,
            sip_c: true,
            atp_c: true,
            ptpl_c,
            tmv: true,
            // TUR through WE and EA; MODE SENSE & co. through WE (Table 208).
            allow_commands: 0b011,
            ptpl_a: self.aptpl,
            type_mask: [1u8, 3, 5, 6, 7, 8]
                .iter()
                .map(|&t| Capabilities::type_bit(t))
                .sum(),
        }
        .encode()
    }

    pub fn read_full_status(&self) -> Vec<u8> {
        let descriptors = self
            .registrations
            .iter()
            .map(|r| {
                let holder = self.is_holder(&r.nexus);
                let type_code = match (&self.reservation, holder) {
                    (Some(res), true) => res.pr_type.code(),
                    _ => 0,
                };
                FullStatusDescriptor {
                    key: r.key,
                    all_tg_pt: r.all_tg_pt,
                    holder,
                    scope: SCOPE_LU,
                    type_code,
                    // SPC-4 §6.15.5: with ALL_TG_PT the field is not defined.
                    relative_target_port: if r.all_tg_pt {
                        0
                    } else {
                        RELATIVE_TARGET_PORT_ID
                    },
                    transport_id: TransportId::port(&r.nexus.initiator, r.nexus.isid),
                }
            })
            .collect();
        FullStatus {
            generation: self.generation,
            descriptors,
        }
        .encode()
    }

    // ---- PERSISTENT RESERVE OUT (SPC-4 §6.16) ----

    /// Applies one PR OUT service action from `nexus`. `ptpl_c`: whether
    /// APTPL can be honoured. `known`: the I_T nexuses logged in to this
    /// target port, for TransportIDs that name an initiator device only.
    pub fn apply(
        &mut self,
        nexus: &ItNexus,
        cdb: &PrOutCdb,
        param: &[u8],
        known: &[ItNexus],
        ptpl_c: bool,
    ) -> Result<PrOutEffects, PrError> {
        let mut fx = PrOutEffects::default();
        if cdb.action == PrOutAction::RegisterAndMove {
            let p = RegisterAndMoveParams::decode(param)?;
            if p.aptpl && !ptpl_c {
                return Err(param_field(17, Some(0)));
            }
            self.register_and_move(nexus, &p, known)?;
            return Ok(fx);
        }
        let p = PrOutParams::decode(param, cdb.action == PrOutAction::Register)?;
        match cdb.action {
            PrOutAction::Register | PrOutAction::RegisterAndIgnoreExistingKey => {
                if p.aptpl && !ptpl_c {
                    return Err(param_field(20, Some(0)));
                }
                let ignore = cdb.action == PrOutAction::RegisterAndIgnoreExistingKey;
                self.register(nexus, &p, ignore, known, &mut fx)?;
            }
            PrOutAction::Reserve => self.reserve(nexus, cdb, &p)?,
            PrOutAction::Release => self.release(nexus, cdb, &p, &mut fx)?,
            PrOutAction::Clear => self.clear(nexus, &p, &mut fx)?,
            PrOutAction::Preempt => self.preempt(nexus, cdb, &p, false, &mut fx)?,
            PrOutAction::PreemptAndAbort => self.preempt(nexus, cdb, &p, true, &mut fx)?,
            PrOutAction::RegisterAndMove => unreachable!("handled above"),
        }
        Ok(fx)
    }

    /// The registered key of `nexus`, or RESERVATION CONFLICT when it is
    /// not registered or RESERVATION KEY does not match (SPC-4 §5.9.1
    /// Table 64; §5.9.9, §5.9.11).
    fn checked_registration(
        &self,
        nexus: &ItNexus,
        reservation_key: u64,
    ) -> Result<usize, PrError> {
        match self.position(nexus) {
            Some(i) if self.registrations[i].key == reservation_key => Ok(i),
            _ => conflict(),
        }
    }

    /// I_T nexuses a TransportID names on the issuer's target port (SPC-4
    /// §6.16.3 SPEC_I_PT). Format 01b names one initiator port; format 00b
    /// names the initiator device, which here means its logged-in ports.
    fn resolve(
        &self,
        tid: &TransportId,
        issuer: &ItNexus,
        known: &[ItNexus],
    ) -> Result<Vec<ItNexus>, PrError> {
        match tid.isid {
            Some(isid) => Ok(vec![ItNexus::new(
                &tid.name,
                isid,
                &issuer.target,
                issuer.tpgt,
            )]),
            None => {
                let found: Vec<ItNexus> = known
                    .iter()
                    .filter(|k| {
                        *k.initiator == *tid.name
                            && k.target == issuer.target
                            && k.tpgt == issuer.tpgt
                    })
                    .cloned()
                    .collect();
                if found.is_empty() {
                    // No port of that initiator is known, so there is no
                    // I_T nexus to register.
                    return Err(PrError::Sense(Sense::new(
                        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
                    )));
                }
                Ok(found)
            }
        }
    }

    /// REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.9.7, Tables 48/49).
    fn register(
        &mut self,
        nexus: &ItNexus,
        p: &PrOutParams,
        ignore_key: bool,
        known: &[ItNexus],
        fx: &mut PrOutEffects,
    ) -> Result<(), PrError> {
        match self.position(nexus) {
            None => {
                // An unregistered nexus must send RESERVATION KEY zero.
                if !ignore_key && p.reservation_key != 0 {
                    return conflict();
                }
                // SERVICE ACTION RESERVATION KEY zero: GOOD, nothing registered.
                if p.service_action_key != 0 {
                    let mut new = vec![Registration {
                        nexus: nexus.clone(),
                        key: p.service_action_key,
                        all_tg_pt: p.all_tg_pt,
                    }];
                    for tid in &p.transport_ids {
                        for n in self.resolve(tid, nexus, known)? {
                            // Ports already registered keep their registration.
                            if self.position(&n).is_none() && !new.iter().any(|r| r.covers(&n)) {
                                new.push(Registration {
                                    nexus: n,
                                    key: p.service_action_key,
                                    all_tg_pt: p.all_tg_pt,
                                });
                            }
                        }
                    }
                    // All or nothing (SPC-4 §6.16.3 SPEC_I_PT).
                    if self.registrations.len() + new.len() > MAX_REGISTRATIONS {
                        return Err(Asc::INSUFFICIENT_REGISTRATION_RESOURCES.into());
                    }
                    self.registrations.extend(new);
                }
            }
            Some(i) => {
                if !ignore_key && p.reservation_key != self.registrations[i].key {
                    return conflict();
                }
                if p.spec_i_pt {
                    return Err(param_field(20, Some(3)));
                }
                if p.service_action_key == 0 {
                    self.unregister(i, fx);
                } else {
                    self.registrations[i].key = p.service_action_key;
                }
            }
        }
        self.aptpl = p.aptpl;
        // SPC-4 §6.15.2: every REGISTER / REGISTER AND IGNORE EXISTING KEY
        // that is not terminated increments PRgeneration.
        self.bump_generation();
        Ok(())
    }

    /// Removes registration `i`; releases the reservation it held (SPC-4
    /// §5.9.11.3 Unregistering).
    fn unregister(&mut self, i: usize, fx: &mut PrOutEffects) {
        let gone = self.registrations.remove(i);
        let Some(res) = &self.reservation else {
            return;
        };
        match &res.holder {
            Holder::Registrant(h) if *h == gone.nexus => {
                let pr_type = res.pr_type;
                self.reservation = None;
                // Registrants-only: everyone else learns the reservation is gone.
                if matches!(
                    pr_type,
                    PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
                ) {
                    for r in &self.registrations {
                        fx.unit_attentions
                            .push((r.nexus.clone(), Asc::RESERVATIONS_RELEASED));
                    }
                }
            }
            // All registrants: released only with the last registration.
            Holder::AllRegistrants if self.registrations.is_empty() => self.reservation = None,
            _ => {}
        }
    }

    /// RESERVE (SPC-4 §5.9.9). PRgeneration unchanged.
    fn reserve(&mut self, nexus: &ItNexus, cdb: &PrOutCdb, p: &PrOutParams) -> Result<(), PrError> {
        let pr_type = reservation_type(cdb)?;
        let i = self.checked_registration(nexus, p.reservation_key)?;
        match &self.reservation {
            None => {
                let holder = if pr_type.all_registrants() {
                    Holder::AllRegistrants
                } else {
                    Holder::Registrant(self.registrations[i].nexus.clone())
                };
                self.reservation = Some(Reservation { holder, pr_type });
                Ok(())
            }
            // The holder repeating its reservation: GOOD, no change.
            Some(r) if r.pr_type == pr_type && self.is_holder(nexus) => Ok(()),
            // Another nexus, or the holder changing the type.
            Some(_) => conflict(),
        }
    }

    /// RELEASE (SPC-4 §5.9.11.2). PRgeneration unchanged.
    fn release(
        &mut self,
        nexus: &ItNexus,
        cdb: &PrOutCdb,
        p: &PrOutParams,
        fx: &mut PrOutEffects,
    ) -> Result<(), PrError> {
        self.checked_registration(nexus, p.reservation_key)?;
        let Some(res) = self.reservation.clone() else {
            return Ok(());
        };
        // From a registrant that is not the holder: GOOD, nothing released.
        if !self.is_holder(nexus) {
            return Ok(());
        }
        if cdb.scope != SCOPE_LU || cdb.type_code != res.pr_type.code() {
            return Err(Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION.into());
        }
        self.reservation = None;
        // RO and AR types: every other registrant gets RESERVATIONS RELEASED.
        if res.pr_type.admits_registrants() {
            for r in self.registrations.iter().filter(|r| !r.covers(nexus)) {
                fx.unit_attentions
                    .push((r.nexus.clone(), Asc::RESERVATIONS_RELEASED));
            }
        }
        Ok(())
    }

    /// CLEAR (SPC-4 §5.9.11.6).
    fn clear(
        &mut self,
        nexus: &ItNexus,
        p: &PrOutParams,
        fx: &mut PrOutEffects,
    ) -> Result<(), PrError> {
        self.checked_registration(nexus, p.reservation_key)?;
        for r in self.registrations.iter().filter(|r| !r.covers(nexus)) {
            fx.unit_attentions
                .push((r.nexus.clone(), Asc::RESERVATIONS_PREEMPTED));
        }
        self.registrations.clear();
        self.reservation = None;
        self.bump_generation();
        Ok(())
    }

    /// PREEMPT and PREEMPT AND ABORT (SPC-4 §5.9.11.4, §5.9.11.5).
    fn preempt(
        &mut self,
        nexus: &ItNexus,
        cdb: &PrOutCdb,
        p: &PrOutParams,
        abort: bool,
        fx: &mut PrOutEffects,
    ) -> Result<(), PrError> {
        let me = self.checked_registration(nexus, p.reservation_key)?;
        let me = self.registrations[me].nexus.clone();
        let sark = p.service_action_key;
        let before = self.registrations.clone();
        let holder_key = self.holder_key();
        match self.reservation.clone() {
            // §5.9.11.4.3: all-registrants reservation and SERVICE ACTION
            // RESERVATION KEY zero: every other registration goes, and the
            // preempting nexus gets a new reservation of the CDB's type.
            Some(res) if res.pr_type.all_registrants() && sark == 0 => {
                let pr_type = reservation_type(cdb)?;
                self.remove_registrations(|r| r.nexus != me, &me, fx);
                self.establish(&me, pr_type, res.pr_type, fx);
                if abort {
                    fx.abort_tasks_of = before.iter().map(|r| r.nexus.clone()).collect();
                }
            }
            // §5.9.11.4.3: SERVICE ACTION RESERVATION KEY names the holder:
            // its registrations (all with that key, except the preempting
            // nexus, which may preempt itself) go and the reservation moves.
            Some(res) if !res.pr_type.all_registrants() && sark != 0 && sark == holder_key => {
                let pr_type = reservation_type(cdb)?;
                self.remove_registrations(|r| r.key == sark && r.nexus != me, &me, fx);
                self.establish(&me, pr_type, res.pr_type, fx);
                if abort {
                    fx.abort_tasks_of = keyed(&before, sark);
                }
            }
            // §5.9.11.4.4: no reservation, or the key is not the holder's (or
            // an all-registrants reservation with a non-zero key): only
            // registrations are removed; SCOPE and TYPE are ignored.
            res => {
                if sark == 0 {
                    return Err(param_field(8, None));
                }
                if !self.registrations.iter().any(|r| r.key == sark) {
                    return conflict();
                }
                // Under an all-registrants reservation the preempting nexus
                // keeps its registration, so it keeps holding.
                let all_reg = res.is_some_and(|r| r.pr_type.all_registrants());
                self.remove_registrations(
                    |r| r.key == sark && !(all_reg && r.nexus == me),
                    &me,
                    fx,
                );
                if self.registrations.is_empty() {
                    self.reservation = None;
                }
                if abort {
                    fx.abort_tasks_of = keyed(&before, sark);
                }
            }
        }
        self.bump_generation();
        Ok(())
    }

    /// Removes the registrations `doomed` picks; each nexus that lost one,
    /// except the preempting nexus, gets REGISTRATIONS PREEMPTED.
    fn remove_registrations(
        &mut self,
        doomed: impl Fn(&Registration) -> bool,
        me: &ItNexus,
        fx: &mut PrOutEffects,
    ) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.registrations.drain(..).partition(|r| doomed(r));
        self.registrations = kept;
        for r in gone.into_iter().filter(|r| r.nexus != *me) {
            fx.unit_attentions
                .push((r.nexus, Asc::REGISTRATIONS_PREEMPTED));
        }
    }

    /// The preempting nexus takes the reservation; if the type changed,
    /// every remaining registrant but it gets RESERVATIONS RELEASED (SPC-4
    /// §5.9.11.4.3 item f).
    fn establish(&mut self, me: &ItNexus, pr_type: PrType, old: PrType, fx: &mut PrOutEffects) {
        let holder = if pr_type.all_registrants() {
            Holder::AllRegistrants
        } else {
            Holder::Registrant(me.clone())
        };
        self.reservation = Some(Reservation { holder, pr_type });
        if pr_type != old {
            for r in self.registrations.iter().filter(|r| r.nexus != *me) {
                fx.unit_attentions
                    .push((r.nexus.clone(), Asc::RESERVATIONS_RELEASED));
            }
        }
    }

    /// REGISTER AND MOVE (SPC-4 §5.9.8, Table 50).
    fn register_and_move(
        &mut self,
        nexus: &ItNexus,
        p: &RegisterAndMoveParams,
        known: &[ItNexus],
    ) -> Result<(), PrError> {
        let me = self.checked_registration(nexus, p.reservation_key)?;
        let me = self.registrations[me].nexus.clone();
        // Only the holder of a reservation that is not all-registrants may move it.
        let pr_type = match &self.reservation {
            Some(r) if !r.pr_type.all_registrants() && self.is_holder(nexus) => r.pr_type,
            _ => return conflict(),
        };
        if p.service_action_key == 0 {
            return Err(param_field(8, None));
        }
        if p.relative_target_port != RELATIVE_TARGET_PORT_ID {
            return Err(param_field(18, None));
        }
        let mut dest = self.resolve(&p.transport_id, nexus, known)?;
        if dest.len() != 1 {
            // A device TransportID with several logged-in ports is ambiguous.
            return Err(param_field(24, None));
        }
        let dest = dest.remove(0);
        // Moving to the issuing nexus itself is an error (SPC-4 §5.9.8).
        if self
            .registrations
            .iter()
            .any(|r| r.nexus == me && r.covers(&dest))
        {
            return Err(param_field(24, None));
        }
        let dest_id = match self.position(&dest) {
            Some(i) => {
                self.registrations[i].key = p.service_action_key;
                self.registrations[i].nexus.clone()
            }
            None => {
                if self.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Asc::INSUFFICIENT_REGISTRATION_RESOURCES.into());
                }
                self.registrations.push(Registration {
                    nexus: dest.clone(),
                    key: p.service_action_key,
                    all_tg_pt: false,
                });
                dest
            }
        };
        self.reservation = Some(Reservation {
            holder: Holder::Registrant(dest_id),
            pr_type,
        });
        if p.unreg {
            self.registrations.retain(|r| r.nexus != me);
        }
        self.aptpl = p.aptpl;
        self.bump_generation();
        Ok(())
    }
}

/// Nexuses registered with `key`: the ones PREEMPT AND ABORT aborts.
fn keyed(regs: &[Registration], key: u64) -> Vec<ItNexus> {
    regs.iter()
        .filter(|r| r.key == key)
        .map(|r| r.nexus.clone())
        .collect()
}
