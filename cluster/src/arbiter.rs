//! Quorum arbiter: challenge and defense of the quorum disk.
//!
//! `disk-scsi2` (MSCS): the owner renews RESERVE every `renew`. A challenger
//! resets the bus (clearing every SCSI-2 reservation), waits
//! `challenge_wait`, and tries RESERVE: a live owner has re-reserved in the
//! meantime, so the challenger gets RESERVATION CONFLICT and loses; a dead
//! owner has not, so the challenger wins and goes online `online_delay`
//! after its reset.
//!
//! `disk-pr` (Windows Server 2008 style, SPC-4 §5.9): a challenger registers
//! its own key, reads the reservation holder, waits `challenge_wait`, and
//! checks that its key is still registered: a live owner checks the keys
//! every `pr_interval` and removes (PREEMPT, SPC-4 §5.9.11.4) every key but
//! its own, so a surviving key means the owner is gone and the challenger
//! preempts the holder's key, which atomically moves the Write Exclusive
//! reservation to it. An owner that finds its own key gone was preempted and
//! stops at once.
//!
//! The owner's writes are fenced by a lease: after a defense *sent* at time
//! `t` succeeds, the owner acts (and writes) only until `t +
//! challenge_wait / 2`. A challenger's RESERVE or PREEMPT succeeds no
//! earlier than `challenge_wait` after the defense it beat, and a winner
//! goes online no earlier than one lease after winning, so two nodes never
//! act as owner at once. A paused owner that resumes finds its lease expired
//! and writes nothing until it has defended again — or learns that it lost.
//!
//! A data disk's new owner (a physical-disk resource coming online) first
//! *claims* the disk ([`Arbiter::become_claimant`]): the Failover Manager
//! brings a group online only once its previous owner reported it offline
//! or failed or left the view (docs/semantics.md "Resource Monitor"), so a
//! reservation nobody holds is nobody's to defend. SCSI-2: a bare RESERVE;
//! if it succeeds the disk is won at once (a killed owner's reservation
//! ended with its nexus, or the quorum challenge's reset cleared it), and
//! the claimant acts from one lease after the RESERVE, the rule every
//! winner keeps, so an owner whose reservation a reset just cleared has
//! stopped acting first. A conflict means a holder, live or not: the
//! claimant challenges as above. PR: REGISTER, READ RESERVATION, and with
//! no holder RESERVE at once; with a holder the challenge's wait as above.
//! The quorum disk is never claimed: its arbitration is the reference
//! protocol of docs/semantics.md "Timing profiles".
//!
//! SCSI-2 has one window the protocol cannot close: a bus reset by a third
//! node (another challenger) clears the owner's reservation between two
//! renewals, and a challenger whose wait ends inside that window gets the
//! reservation. The owner keeps its lease until its next renewal conflicts
//! (at most one renew interval later) and then stops; the bus fences its
//! writes meanwhile. SCSI-3 PR has no such window, which is why Windows
//! Server 2008 moved to it.

use std::time::Duration;

use busrig_proto::scsi::pr::{ReadKeys, ReadReservation};

use crate::config::{QuorumModel, Timing};

/// Which disk an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskId {
    /// The shared quorum disk (disk models).
    Quorum,
    /// The shared witness disk (majority model): reservations only.
    Witness,
    /// Majority model: this node's own replica of the quorum log, a file
    /// in its data folder (not shared; reservation operations fail).
    Local,
}

/// A disk operation for the driver to issue; its result comes back as
/// [`DiskResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// SCSI-2 RESERVE(6).
    Reserve,
    /// SCSI-2 RELEASE(6).
    Release,
    /// Bus reset (clears SCSI-2 reservations on every LUN).
    BusReset,
    /// PR OUT REGISTER AND IGNORE EXISTING KEY with `key`.
    PrRegister { key: u64 },
    /// PR OUT REGISTER with service action key 0 (unregister; releases the
    /// reservation if this nexus holds it).
    PrUnregister { key: u64 },
    /// PR OUT RESERVE, Write Exclusive, with `key`.
    PrReserve { key: u64 },
    /// PR OUT PREEMPT `victim_key` with `key`, Write Exclusive.
    PrPreempt { key: u64, victim_key: u64 },
    /// PR IN READ KEYS; the result is the parameter data.
    PrReadKeys,
    /// PR IN READ RESERVATION; the result is the parameter data.
    PrReadReservation,
    /// WRITE with FUA.
    Write { offset: u64, data: Vec<u8> },
    /// READ.
    Read { offset: u64, len: usize },
}

impl DiskOp {
    pub fn is_write(&self) -> bool {
        matches!(self, DiskOp::Write { .. })
    }
}

/// How a disk operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskResult {
    /// GOOD status, no data.
    Good,
    /// GOOD status with data (READ, PR IN).
    Data(Vec<u8>),
    /// RESERVATION CONFLICT status.
    Conflict,
    /// Anything else: path down, timeout, CHECK CONDITION.
    Failed(String),
}

/// What the arbiter tells its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArbOut {
    /// Issue this operation; hand its result to [`Arbiter::on_result`].
    Issue(DiskOp),
    /// This node now holds the disk (not yet online).
    Won,
    /// This node acts as owner from now on.
    Online,
    /// Arbitration lost or ownership gone: stop the cluster service.
    Lost(String),
}

/// Challenger progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// SCSI-2 claim: a bare RESERVE in flight (no reset before it).
    Claiming { sent: Duration },
    /// SCSI-2: bus reset in flight.
    Resetting,
    /// SCSI-2: waiting for the defender to re-reserve.
    AwaitDefender { reset_at: Duration },
    /// SCSI-2: RESERVE in flight.
    Reserving { reset_at: Duration, sent: Duration },
    /// PR: REGISTER in flight.
    Registering,
    /// PR: READ RESERVATION in flight.
    ReadingHolder { registered_at: Duration },
    /// PR: waiting for a live owner to scrub our key.
    AwaitScrub {
        registered_at: Duration,
        holder: Option<u64>,
    },
    /// PR: READ KEYS in flight.
    CheckingKey { holder: Option<u64> },
    /// PR: RESERVE or PREEMPT in flight.
    Taking,
}

/// Owner's defense progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defense {
    /// Nothing in flight; next defense at this time.
    Idle { next: Duration },
    /// SCSI-2 RESERVE (renewal) in flight.
    Renewing { sent: Duration },
    /// PR READ KEYS in flight.
    Checking { sent: Duration },
    /// PR: removing challengers' keys found by the check sent at `sent`.
    Scrubbing { sent: Duration, left: Vec<u64> },
}

/// The owner's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// Acts as owner from this instant (SCSI-2: reset + online delay).
    pub online_at: Duration,
    /// Writes allowed until this instant.
    pub lease_until: Option<Duration>,
    pub defense: Defense,
    /// Whether `Online` was reported.
    pub announced: bool,
    /// First of the defenses that failed in a row (path down, timeout).
    pub failing_since: Option<Duration>,
}

/// Arbiter role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Idle,
    Challenger(Challenge),
    Owner(Ownership),
    Lost(String),
}

/// The quorum arbiter for one disk.
#[derive(Debug, Clone)]
pub struct Arbiter {
    pr: bool,
    key: u64,
    timing: Timing,
    interval: Duration,
    lease: Duration,
    role: Role,
    /// A claim (data disk): take an unheld disk without the challenge's wait.
    claim: bool,
}

impl Arbiter {
    /// The arbiter for the majority model's witness disk. It uses the
    /// SCSI-3 PR protocol: unlike SCSI-2 it has no window in which a third
    /// node's bus reset lets a challenger in while the holder still counts
    /// the witness's vote, and a partition can count the vote only while
    /// its arbiter acts as owner (within its lease).
    pub fn witness(timing: Timing, key: u64) -> Arbiter {
        Arbiter::new(&QuorumModel::DiskPr, timing, key)
    }

    /// `key`: this node's PR key (unused for SCSI-2). The witness disk of
    /// the majority model uses [`Arbiter::witness`] (SCSI-3 PR).
    pub fn new(model: &QuorumModel, timing: Timing, key: u64) -> Arbiter {
        let pr = matches!(model, QuorumModel::DiskPr);
        let m = if pr {
            QuorumModel::DiskPr
        } else {
            QuorumModel::DiskScsi2
        };
        Arbiter {
            pr,
            key,
            timing,
            interval: timing.defend_interval(&m),
            lease: timing.lease(&m),
            role: Role::Idle,
            claim: false,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.role, Role::Idle)
    }

    /// Holds the disk (online or not yet).
    pub fn holds(&self) -> bool {
        matches!(self.role, Role::Owner(_))
    }

    /// Acts as owner now: online and within its lease.
    pub fn is_acting_owner(&self, now: Duration) -> bool {
        match &self.role {
            Role::Owner(o) => now >= o.online_at && o.lease_until.is_some_and(|l| now < l),
            _ => false,
        }
    }

    /// While acting as owner, the end of its lease: with no further input
    /// it stops acting then.
    pub fn acting_until(&self, now: Duration) -> Option<Duration> {
        match &self.role {
            Role::Owner(o) if self.is_acting_owner(now) => o.lease_until,
            _ => None,
        }
    }

    /// Starts a challenge (forming, or after a regroup without the owner).
    pub fn become_challenger(&mut self, _now: Duration) -> Vec<ArbOut> {
        if self.pr {
            self.role = Role::Challenger(Challenge::Registering);
            vec![ArbOut::Issue(DiskOp::PrRegister { key: self.key })]
        } else {
            self.role = Role::Challenger(Challenge::Resetting);
            vec![ArbOut::Issue(DiskOp::BusReset)]
        }
    }

    /// Claims a data disk (module docs): takes it at once if nobody holds
    /// it, and challenges otherwise.
    pub fn become_claimant(&mut self, now: Duration) -> Vec<ArbOut> {
        self.claim = true;
        if self.pr {
            return self.become_challenger(now);
        }
        self.role = Role::Challenger(Challenge::Claiming { sent: now });
        vec![ArbOut::Issue(DiskOp::Reserve)]
    }

    fn become_owner(&mut self, online_at: Duration, lease_until: Option<Duration>, now: Duration) {
        self.role = Role::Owner(Ownership {
            online_at,
            lease_until,
            defense: Defense::Idle { next: now },
            announced: false,
            failing_since: None,
        });
    }

    fn become_lost(&mut self, why: impl Into<String>) -> Vec<ArbOut> {
        let why = why.into();
        self.role = Role::Lost(why.clone());
        vec![ArbOut::Lost(why)]
    }

    /// Gives up ownership for a clean stop: the operation that releases.
    pub fn release(&mut self) -> Option<DiskOp> {
        let held = self.holds();
        self.role = Role::Idle;
        held.then_some({
            if self.pr {
                DiskOp::PrUnregister { key: self.key }
            } else {
                DiskOp::Release
            }
        })
    }

    /// The next instant at which `tick` has something to do (never a past
    /// instant at which it would do nothing).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        match &self.role {
            Role::Challenger(Challenge::AwaitDefender { reset_at }) => {
                Some(*reset_at + self.timing.challenge_wait)
            }
            Role::Challenger(Challenge::AwaitScrub { registered_at, .. }) => {
                Some(*registered_at + self.timing.challenge_wait)
            }
            Role::Owner(o) => {
                let mut d = match o.defense {
                    Defense::Idle { next } => Some(next),
                    _ => None,
                };
                // Going online is a timer only while the lease is valid;
                // otherwise the defense result announces it.
                let at = o.online_at.max(now);
                let lease_ok = o.lease_until.is_some_and(|l| at < l);
                if !o.announced && lease_ok {
                    d = Some(d.map_or(at, |x: Duration| x.min(at)));
                }
                d
            }
            _ => None,
        }
    }

    /// Timers: end of a challenger's wait, the owner's next defense, going
    /// online, lease expiry.
    pub fn tick(&mut self, now: Duration) -> Vec<ArbOut> {
        match &mut self.role {
            Role::Challenger(Challenge::AwaitDefender { reset_at }) => {
                if now >= *reset_at + self.timing.challenge_wait {
                    let reset_at = *reset_at;
                    self.role = Role::Challenger(Challenge::Reserving {
                        reset_at,
                        sent: now,
                    });
                    return vec![ArbOut::Issue(DiskOp::Reserve)];
                }
                vec![]
            }
            Role::Challenger(Challenge::AwaitScrub {
                registered_at,
                holder,
            }) => {
                if now >= *registered_at + self.timing.challenge_wait {
                    let holder = *holder;
                    self.role = Role::Challenger(Challenge::CheckingKey { holder });
                    return vec![ArbOut::Issue(DiskOp::PrReadKeys)];
                }
                vec![]
            }
            Role::Owner(_) => self.step_owner_timers(now),
            _ => vec![],
        }
    }

    fn step_owner_timers(&mut self, now: Duration) -> Vec<ArbOut> {
        let pr = self.pr;
        let Role::Owner(o) = &mut self.role else {
            return vec![];
        };
        let mut out = Vec::new();
        if let Defense::Idle { next } = o.defense {
            let expired = o.lease_until.is_some_and(|l| now >= l);
            if now >= next && expired && !pr {
                // SCSI-2 owner whose lease ran out (it was paused, or the
                // disk did not answer): a bare RESERVE could succeed in the
                // gap after another node's bus reset while that node owns
                // the quorum. It has no standing left and must challenge
                // like anyone else.
                return self.become_challenger(now);
            }
            if now >= next {
                if pr {
                    o.defense = Defense::Checking { sent: now };
                    out.push(ArbOut::Issue(DiskOp::PrReadKeys));
                } else {
                    o.defense = Defense::Renewing { sent: now };
                    out.push(ArbOut::Issue(DiskOp::Reserve));
                }
            }
        }
        let lease_ok = o.lease_until.is_some_and(|l| now < l);
        if !o.announced && now >= o.online_at && lease_ok {
            o.announced = true;
            out.push(ArbOut::Online);
        }
        out
    }

    /// The result of the operation this arbiter issued last.
    pub fn on_result(&mut self, now: Duration, result: DiskResult) -> Vec<ArbOut> {
        let role = std::mem::replace(&mut self.role, Role::Idle);
        match role {
            Role::Challenger(c) => self.step_challenger(now, c, result),
            Role::Owner(o) => self.step_defender(now, o, result),
            other => {
                self.role = other;
                vec![]
            }
        }
    }

    fn step_challenger(&mut self, now: Duration, c: Challenge, r: DiskResult) -> Vec<ArbOut> {
        use Challenge::*;
        match (c, r) {
            (Claiming { sent }, DiskResult::Good) => {
                // Nobody held it. Acting waits one lease from the RESERVE,
                // as for every winner (module docs).
                self.become_owner(now + self.lease, Some(sent + self.lease), now);
                vec![ArbOut::Won]
            }
            (Claiming { .. }, DiskResult::Conflict) => {
                // A holder: let it defend, as any challenger does.
                self.claim = false;
                self.become_challenger(now)
            }
            (Resetting, DiskResult::Good) => {
                self.role = Role::Challenger(AwaitDefender { reset_at: now });
                vec![]
            }
            (Reserving { reset_at, sent }, DiskResult::Good) => {
                // Online `online_delay` after the reset (MSCS), but never
                // before a lease has passed since the RESERVE landed: an old
                // owner whose reservation another node's later reset
                // cleared may hold a lease up to then.
                let online = (reset_at + self.timing.online_delay).max(now + self.lease);
                self.become_owner(online, Some(sent + self.lease), now);
                vec![ArbOut::Won]
            }
            (Reserving { .. }, DiskResult::Conflict) => {
                self.become_lost("reservation conflict after the challenge: the owner defended")
            }
            (Registering, DiskResult::Good) => {
                self.role = Role::Challenger(ReadingHolder { registered_at: now });
                vec![ArbOut::Issue(DiskOp::PrReadReservation)]
            }
            (ReadingHolder { registered_at }, DiskResult::Data(d)) => {
                match ReadReservation::decode(&d) {
                    Ok(rr) if self.claim && rr.reservation.is_none() => {
                        // A claim of a disk nobody reserves: no owner to wait for.
                        self.role = Role::Challenger(Taking);
                        vec![ArbOut::Issue(DiskOp::PrReserve { key: self.key })]
                    }
                    Ok(rr) => {
                        self.role = Role::Challenger(AwaitScrub {
                            registered_at,
                            holder: rr.reservation.map(|r| r.key),
                        });
                        vec![]
                    }
                    Err(e) => self.become_lost(format!("bad READ RESERVATION data: {e:?}")),
                }
            }
            (CheckingKey { holder }, DiskResult::Data(d)) => {
                let keys = match ReadKeys::decode(&d) {
                    Ok(k) => k.keys,
                    Err(e) => return self.become_lost(format!("bad READ KEYS data: {e:?}")),
                };
                if !keys.contains(&self.key) {
                    return self.become_lost("our key was removed: the owner defended");
                }
                match holder {
                    Some(h) if h == self.key => {
                        // A previous incarnation of this node holds it.
                        self.become_owner(now, None, now);
                        vec![ArbOut::Won]
                    }
                    Some(h) => {
                        self.role = Role::Challenger(Taking);
                        vec![ArbOut::Issue(DiskOp::PrPreempt {
                            key: self.key,
                            victim_key: h,
                        })]
                    }
                    None => {
                        self.role = Role::Challenger(Taking);
                        vec![ArbOut::Issue(DiskOp::PrReserve { key: self.key })]
                    }
                }
            }
            (Taking, DiskResult::Good) => {
                // Writes wait for a first completed check (lease), which
                // also scrubs other challengers; the preempted owner's
                // lease ran out before our key could survive the wait.
                self.become_owner(now, None, now);
                vec![ArbOut::Won]
            }
            (Taking, DiskResult::Conflict) => {
                self.become_lost("reservation conflict taking the quorum: another node won")
            }
            (_, DiskResult::Conflict) => self.become_lost("reservation conflict while challenging"),
            (_, DiskResult::Failed(e)) => {
                self.become_lost(format!("quorum disk failed while challenging: {e}"))
            }
            (c, r) => self.become_lost(format!("unexpected result {r:?} in {c:?}")),
        }
    }

    fn step_defender(&mut self, now: Duration, mut o: Ownership, r: DiskResult) -> Vec<ArbOut> {
        let next = now + self.interval;
        match (o.defense.clone(), r) {
            (Defense::Renewing { sent }, DiskResult::Good) => {
                o.lease_until = Some(o.lease_until.unwrap_or(sent).max(sent + self.lease));
                o.defense = Defense::Idle {
                    next: sent + self.interval,
                };
            }
            (Defense::Renewing { .. }, DiskResult::Conflict) => {
                return self
                    .become_lost("reservation conflict on renewal: another node owns the quorum");
            }
            (Defense::Checking { sent }, DiskResult::Data(d)) => {
                let keys = match ReadKeys::decode(&d) {
                    Ok(k) => k.keys,
                    Err(e) => return self.become_lost(format!("bad READ KEYS data: {e:?}")),
                };
                if !keys.contains(&self.key) {
                    return self.become_lost("preempted: our key is gone");
                }
                let left: Vec<u64> = keys.into_iter().filter(|k| *k != self.key).collect();
                o.defense = Defense::Scrubbing { sent, left };
            }
            (Defense::Scrubbing { sent, mut left }, DiskResult::Good) => {
                left.remove(0);
                o.defense = Defense::Scrubbing { sent, left };
            }
            (Defense::Scrubbing { .. }, DiskResult::Conflict) => {
                return self.become_lost("preempted while defending");
            }
            (_, DiskResult::Conflict) => {
                return self.become_lost("reservation conflict while owner");
            }
            (_, _) => {
                // Failed or unexpected: try again next interval. A disk
                // that stays unreachable for a whole lease means this node
                // can no longer defend: stop rather than act on stale
                // beliefs (a paused node accumulates no failures).
                let since = *o.failing_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.lease {
                    return self.become_lost("quorum disk unreachable for a whole lease");
                }
                o.defense = Defense::Idle { next };
                self.role = Role::Owner(o);
                return self.step_owner_timers(now);
            }
        }
        o.failing_since = None;
        if let Defense::Scrubbing { sent, left } = &o.defense {
            match left.first() {
                Some(&victim) => {
                    let op = DiskOp::PrPreempt {
                        key: self.key,
                        victim_key: victim,
                    };
                    self.role = Role::Owner(o);
                    let mut out = vec![ArbOut::Issue(op)];
                    out.extend(self.step_owner_timers(now));
                    return out;
                }
                None => {
                    let sent = *sent;
                    o.lease_until = Some(o.lease_until.unwrap_or(sent).max(sent + self.lease));
                    o.defense = Defense::Idle {
                        next: sent + self.interval,
                    };
                }
            }
        }
        self.role = Role::Owner(o);
        self.step_owner_timers(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busrig_proto::scsi::pr::ReservationDescriptor;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn keys(k: &[u64]) -> DiskResult {
        DiskResult::Data(
            ReadKeys {
                generation: 1,
                keys: k.to_vec(),
            }
            .encode(),
        )
    }

    fn holder(k: Option<u64>) -> DiskResult {
        DiskResult::Data(
            ReadReservation {
                generation: 1,
                reservation: k.map(|key| ReservationDescriptor {
                    key,
                    scope: 0,
                    type_code: 1,
                }),
            }
            .encode(),
        )
    }

    fn scsi2() -> Arbiter {
        Arbiter::new(&QuorumModel::DiskScsi2, Timing::fast(), 0)
    }

    #[test]
    fn scsi2_challenger_resets_waits_reserves_and_goes_online_after_delay() {
        let mut a = scsi2();
        assert_eq!(
            a.become_challenger(ms(0)),
            vec![ArbOut::Issue(DiskOp::BusReset)]
        );
        assert!(a.on_result(ms(10), DiskResult::Good).is_empty());
        assert!(a.tick(ms(409)).is_empty());
        assert_eq!(a.tick(ms(410)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        assert_eq!(a.on_result(ms(415), DiskResult::Good), vec![ArbOut::Won]);
        assert!(!a.is_acting_owner(ms(415)));
        // It renews right away while waiting to go online.
        assert_eq!(a.tick(ms(415)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        a.on_result(ms(420), DiskResult::Good);
        assert_eq!(a.tick(ms(565)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        a.on_result(ms(570), DiskResult::Good);
        // Online at max(reset + online delay, reserve + lease) = 415 + 200.
        assert!(!a.is_acting_owner(ms(614)));
        assert_eq!(a.tick(ms(615)), vec![ArbOut::Online]);
        assert!(a.is_acting_owner(ms(615)));
    }

    #[test]
    fn scsi2_challenger_that_meets_a_defender_loses() {
        let mut a = scsi2();
        a.become_challenger(ms(0));
        a.on_result(ms(1), DiskResult::Good);
        a.tick(ms(401));
        let out = a.on_result(ms(402), DiskResult::Conflict);
        assert!(matches!(&out[..], [ArbOut::Lost(_)]));
        assert!(!a.is_acting_owner(ms(402)));
    }

    #[test]
    fn scsi2_owner_whose_lease_expired_must_challenge_again() {
        let mut a = scsi2();
        a.become_challenger(ms(0));
        a.on_result(ms(0), DiskResult::Good);
        a.tick(ms(400));
        // Lease 200 (challenge wait / 2); online at max(reset + 500, 400 + 200).
        a.on_result(ms(400), DiskResult::Good);
        assert_eq!(a.tick(ms(400)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        a.on_result(ms(405), DiskResult::Good);
        a.tick(ms(550));
        a.on_result(ms(555), DiskResult::Good);
        assert!(!a.is_acting_owner(ms(599)));
        assert_eq!(a.tick(ms(600)), vec![ArbOut::Online]);
        assert!(a.is_acting_owner(ms(749)));
        assert!(!a.is_acting_owner(ms(750)));
        // Paused for long: it resumes without standing and challenges; a
        // defender that re-reserved after the reset wins.
        assert_eq!(a.tick(ms(5000)), vec![ArbOut::Issue(DiskOp::BusReset)]);
        assert!(!a.is_acting_owner(ms(5000)));
        a.on_result(ms(5001), DiskResult::Good);
        assert_eq!(a.tick(ms(5401)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        assert!(matches!(
            &a.on_result(ms(5402), DiskResult::Conflict)[..],
            [ArbOut::Lost(_)]
        ));
    }

    #[test]
    fn pr_challenger_preempts_a_dead_owner_and_checks_before_writing() {
        let mut a = Arbiter::new(&QuorumModel::DiskPr, Timing::fast(), 2);
        assert_eq!(
            a.become_challenger(ms(0)),
            vec![ArbOut::Issue(DiskOp::PrRegister { key: 2 })]
        );
        assert_eq!(
            a.on_result(ms(1), DiskResult::Good),
            vec![ArbOut::Issue(DiskOp::PrReadReservation)]
        );
        assert!(a.on_result(ms(2), holder(Some(1))).is_empty());
        assert!(a.tick(ms(400)).is_empty());
        assert_eq!(a.tick(ms(401)), vec![ArbOut::Issue(DiskOp::PrReadKeys)]);
        assert_eq!(
            a.on_result(ms(402), keys(&[1, 2])),
            vec![ArbOut::Issue(DiskOp::PrPreempt {
                key: 2,
                victim_key: 1
            })]
        );
        assert_eq!(a.on_result(ms(403), DiskResult::Good), vec![ArbOut::Won]);
        assert!(!a.is_acting_owner(ms(403)));
        assert_eq!(a.tick(ms(403)), vec![ArbOut::Issue(DiskOp::PrReadKeys)]);
        // A second challenger's key is scrubbed before the lease starts.
        assert_eq!(
            a.on_result(ms(404), keys(&[2, 3])),
            vec![ArbOut::Issue(DiskOp::PrPreempt {
                key: 2,
                victim_key: 3
            })]
        );
        assert!(!a.is_acting_owner(ms(404)));
        assert_eq!(a.on_result(ms(405), DiskResult::Good), vec![ArbOut::Online]);
        assert!(a.is_acting_owner(ms(405)));
    }

    #[test]
    fn pr_challenger_whose_key_was_scrubbed_loses() {
        let mut a = Arbiter::new(&QuorumModel::DiskPr, Timing::fast(), 2);
        a.become_challenger(ms(0));
        a.on_result(ms(1), DiskResult::Good);
        a.on_result(ms(2), holder(Some(1)));
        a.tick(ms(401));
        assert!(matches!(
            &a.on_result(ms(402), keys(&[1]))[..],
            [ArbOut::Lost(_)]
        ));
    }

    #[test]
    fn pr_owner_stops_the_moment_it_finds_itself_preempted() {
        let mut a = Arbiter::new(&QuorumModel::DiskPr, Timing::fast(), 1);
        a.become_challenger(ms(0));
        a.on_result(ms(0), DiskResult::Good);
        a.on_result(ms(0), holder(None));
        a.tick(ms(400));
        assert_eq!(
            a.on_result(ms(400), keys(&[1])),
            vec![ArbOut::Issue(DiskOp::PrReserve { key: 1 })]
        );
        a.on_result(ms(400), DiskResult::Good);
        a.tick(ms(400));
        a.on_result(ms(400), keys(&[1]));
        assert!(a.is_acting_owner(ms(401)));
        a.tick(ms(550));
        assert!(matches!(
            &a.on_result(ms(551), keys(&[2]))[..],
            [ArbOut::Lost(_)]
        ));
        assert!(!a.is_acting_owner(ms(551)));
    }

    #[test]
    fn scsi2_claimant_takes_an_unheld_disk_at_once_and_acts_one_lease_later() {
        let mut a = scsi2();
        assert_eq!(
            a.become_claimant(ms(0)),
            vec![ArbOut::Issue(DiskOp::Reserve)]
        );
        assert_eq!(a.on_result(ms(5), DiskResult::Good), vec![ArbOut::Won]);
        // Lease 200 ms (challenge wait / 2) from the RESERVE: an owner whose
        // reservation a reset had just cleared stops acting by then.
        assert_eq!(a.tick(ms(5)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        a.on_result(ms(6), DiskResult::Good);
        assert_eq!(a.tick(ms(155)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        a.on_result(ms(156), DiskResult::Good);
        assert!(!a.is_acting_owner(ms(204)));
        assert_eq!(a.tick(ms(205)), vec![ArbOut::Online]);
        assert!(a.is_acting_owner(ms(205)));
    }

    #[test]
    fn scsi2_claimant_that_meets_a_holder_challenges_and_a_live_one_defends() {
        let mut a = scsi2();
        a.become_claimant(ms(0));
        assert_eq!(
            a.on_result(ms(1), DiskResult::Conflict),
            vec![ArbOut::Issue(DiskOp::BusReset)]
        );
        a.on_result(ms(2), DiskResult::Good);
        assert!(a.tick(ms(401)).is_empty());
        assert_eq!(a.tick(ms(402)), vec![ArbOut::Issue(DiskOp::Reserve)]);
        assert!(matches!(
            &a.on_result(ms(403), DiskResult::Conflict)[..],
            [ArbOut::Lost(_)]
        ));
    }

    #[test]
    fn pr_claimant_reserves_an_unreserved_disk_without_waiting() {
        let mut a = Arbiter::new(&QuorumModel::DiskPr, Timing::fast(), 2);
        assert_eq!(
            a.become_claimant(ms(0)),
            vec![ArbOut::Issue(DiskOp::PrRegister { key: 2 })]
        );
        a.on_result(ms(1), DiskResult::Good);
        assert_eq!(
            a.on_result(ms(2), holder(None)),
            vec![ArbOut::Issue(DiskOp::PrReserve { key: 2 })]
        );
        assert_eq!(a.on_result(ms(3), DiskResult::Good), vec![ArbOut::Won]);
        // Writes still wait for the first completed check.
        assert!(!a.is_acting_owner(ms(3)));
        assert_eq!(a.tick(ms(3)), vec![ArbOut::Issue(DiskOp::PrReadKeys)]);
        assert_eq!(a.on_result(ms(4), keys(&[2])), vec![ArbOut::Online]);
    }

    #[test]
    fn pr_claimant_facing_a_holder_waits_for_its_defense_like_a_challenger() {
        let mut a = Arbiter::new(&QuorumModel::DiskPr, Timing::fast(), 2);
        a.become_claimant(ms(0));
        a.on_result(ms(1), DiskResult::Good);
        assert!(a.on_result(ms(2), holder(Some(1))).is_empty());
        assert!(a.tick(ms(400)).is_empty());
        assert_eq!(a.tick(ms(401)), vec![ArbOut::Issue(DiskOp::PrReadKeys)]);
        assert!(matches!(
            &a.on_result(ms(402), keys(&[1]))[..],
            [ArbOut::Lost(_)]
        ));
    }
}
