//! Holding and challenging a SCSI-2 reservation as an MSCS node does
//! (docs/semantics.md "Timing profiles"): the defender re-issues RESERVE
//! every renewal period and stops the moment one meets RESERVATION
//! CONFLICT; the challenger resets the bus, waits longer than a live
//! owner's renewal period, and RESERVEs (SPC-2 §7.21: a reset releases
//! SCSI-2 reservations).
//!
//! The caller decides when to stop (a shutdown future, for example Ctrl-C)
//! and what to print: [`Disk::hold_reservation`] calls back after each
//! renewal so the caller can report it, and returns how the hold ended.

use std::future::Future;
use std::time::Duration;

use crate::disk::Disk;
use crate::error::Error;

/// Which CDB size the SCSI-2 RESERVE and RELEASE use (SPC-2 §7.21, §7.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scsi2Cdb {
    /// RESERVE(6) / RELEASE(6).
    Six,
    /// RESERVE(10) / RELEASE(10).
    Ten,
}

/// What the challenger resets before it waits and RESERVEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbitrationReset {
    /// LOGICAL UNIT RESET of this LUN.
    Lun,
    /// TARGET WARM RESET.
    Target,
    /// No reset: just wait and RESERVE.
    None,
}

impl ArbitrationReset {
    /// The short name `busrig disk arbitrate --json` reports ("lun", "target", "none").
    pub fn name(self) -> &'static str {
        match self {
            ArbitrationReset::Lun => "lun",
            ArbitrationReset::Target => "target",
            ArbitrationReset::None => "none",
        }
    }
}

/// The outcome of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arbitration {
    /// The RESERVE after the wait succeeded: this nexus holds the LUN.
    Won,
    /// The RESERVE met RESERVATION CONFLICT: a live owner renewed in time.
    Lost,
}

impl Arbitration {
    /// `won` or `lost`, as `busrig disk arbitrate` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Arbitration::Won => "won",
            Arbitration::Lost => "lost",
        }
    }

    /// 0 for won; a lost challenge is RESERVATION CONFLICT's status (24).
    pub fn exit_status(self) -> u8 {
        match self {
            Arbitration::Won => 0,
            Arbitration::Lost => Error::ReservationConflict.exit_status(),
        }
    }
}

/// A challenge that failed before it could be won or lost.
#[derive(Debug, thiserror::Error)]
pub enum ArbitrationError {
    /// The reset itself failed (nothing was reserved).
    #[error(transparent)]
    Reset(Error),
    /// The RESERVE after the wait failed with something other than RESERVATION CONFLICT.
    #[error(transparent)]
    Reserve(Error),
}

impl ArbitrationError {
    /// The initiator error underneath.
    pub fn into_inner(self) -> Error {
        match self {
            ArbitrationError::Reset(e) | ArbitrationError::Reserve(e) => e,
        }
    }
}

/// How a held reservation ended.
#[derive(Debug)]
pub enum HoldEnd {
    /// The stop future resolved; the reservation was released (or the
    /// RELEASE failed, with this error).
    Released(Result<(), Error>),
    /// A renewal failed: RESERVATION CONFLICT means another nexus took the
    /// LUN (see [`Error::is_reservation_conflict`]); anything else is a
    /// failed renewal.
    Failed(Error),
}

impl HoldEnd {
    /// The event that ended the hold: `released`, `lost` (another nexus
    /// took the LUN) or `renewal failed`.
    pub fn name(&self) -> &'static str {
        match self {
            HoldEnd::Released(_) => "released",
            HoldEnd::Failed(e) if e.is_reservation_conflict() => "lost",
            HoldEnd::Failed(_) => "renewal failed",
        }
    }

    /// 0 once released, else the failed renewal's exit status
    /// ([`Error::exit_status`]).
    pub fn exit_status(&self) -> u8 {
        match self {
            HoldEnd::Released(_) => 0,
            HoldEnd::Failed(e) => e.exit_status(),
        }
    }
}

impl Disk {
    /// SCSI-2 RESERVE(6) or RESERVE(10).
    pub async fn reserve_scsi2(&self, cdb: Scsi2Cdb) -> Result<(), Error> {
        match cdb {
            Scsi2Cdb::Six => self.reserve6().await,
            Scsi2Cdb::Ten => self.reserve10().await,
        }
    }

    /// SCSI-2 RELEASE(6) or RELEASE(10).
    pub async fn release_scsi2(&self, cdb: Scsi2Cdb) -> Result<(), Error> {
        match cdb {
            Scsi2Cdb::Six => self.release6().await,
            Scsi2Cdb::Ten => self.release10().await,
        }
    }

    /// The defender's loop: re-issue RESERVE every `renew` (the first one
    /// `renew` from now; the caller has reserved already), calling
    /// `on_renewed` after each success so the caller can collect the unit
    /// attentions a challenger's reset leaves. Ends at the first failed
    /// renewal, or when `stop` resolves, releasing the reservation then.
    /// A zero `renew` is an [`Error::InvalidRequest`].
    pub async fn hold_reservation<F, R>(
        &self,
        cdb: Scsi2Cdb,
        renew: Duration,
        stop: F,
        mut on_renewed: R,
    ) -> Result<HoldEnd, Error>
    where
        F: Future<Output = ()>,
        R: FnMut(),
    {
        if renew.is_zero() {
            return Err(Error::InvalidRequest(
                "the renewal period must be longer than zero".into(),
            ));
        }
        tokio::pin!(stop);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + renew, renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    return Ok(HoldEnd::Released(self.release_scsi2(cdb).await));
                }
                _ = tick.tick() => {
                    match self.reserve_scsi2(cdb).await {
                        Ok(()) => on_renewed(),
                        Err(e) => return Ok(HoldEnd::Failed(e)),
                    }
                }
            }
        }
    }

    /// The challenger: reset, wait `wait`, RESERVE(6). RESERVATION CONFLICT
    /// is [`Arbitration::Lost`], not an error.
    pub async fn arbitrate(
        &self,
        reset: ArbitrationReset,
        wait: Duration,
    ) -> Result<Arbitration, ArbitrationError> {
        match reset {
            ArbitrationReset::Lun => self.lun_reset().await.map_err(ArbitrationError::Reset)?,
            ArbitrationReset::Target => self
                .target_warm_reset()
                .await
                .map_err(ArbitrationError::Reset)?,
            ArbitrationReset::None => {}
        }
        tokio::time::sleep(wait).await;
        match self.reserve_scsi2(Scsi2Cdb::Six).await {
            Ok(()) => Ok(Arbitration::Won),
            Err(Error::ReservationConflict) => Ok(Arbitration::Lost),
            Err(e) => Err(ArbitrationError::Reserve(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_names_are_the_cli_words() {
        assert_eq!(ArbitrationReset::Lun.name(), "lun");
        assert_eq!(ArbitrationReset::Target.name(), "target");
        assert_eq!(ArbitrationReset::None.name(), "none");
    }

    #[test]
    fn arbitration_error_keeps_the_initiator_error() {
        let e = ArbitrationError::Reserve(Error::Busy);
        assert_eq!(e.to_string(), "BUSY");
        assert_eq!(e.into_inner().exit_status(), 26);
    }

    #[test]
    fn outcomes_name_their_event_and_exit_status() {
        assert_eq!(
            (Arbitration::Won.name(), Arbitration::Won.exit_status()),
            ("won", 0)
        );
        assert_eq!(
            (Arbitration::Lost.name(), Arbitration::Lost.exit_status()),
            ("lost", 24)
        );
        let lost = HoldEnd::Failed(Error::ReservationConflict);
        assert_eq!((lost.name(), lost.exit_status()), ("lost", 24));
        let busy = HoldEnd::Failed(Error::Busy);
        assert_eq!((busy.name(), busy.exit_status()), ("renewal failed", 26));
        let released = HoldEnd::Released(Ok(()));
        assert_eq!((released.name(), released.exit_status()), ("released", 0));
    }
}
