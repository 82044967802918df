//! Which commands a reservation lets through, by command class.
//!
//! Persistent reservations: SPC-4 §5.9.1 Table 63 "SPC commands that are
//! allowed in the presence of various reservations" and SBC-3 §4.17 Table 13
//! (the SBC commands). Each row there has six columns:
//!
//! ```text
//!                   from any I_T nexus   from registered I_T    from not registered
//!                                        nexus (RO/AR types)    I_T nexus (RO/AR types)
//!                   WE      EA           WE      EA             WE      EA
//! Always            A       A            A       A              A       A
//! SharedUnderWe     A       C            A       A              A       C
//! Exclusive         C       C            A       A              C       C
//! ```
//!
//! The holder itself is never in conflict. Commands the tables do not list
//! get the Exclusive row, the tables' default for anything that could change
//! the logical unit.
//!
//! We report ALLOW COMMANDS = 011b in REPORT CAPABILITIES (SPC-4 §6.15.4,
//! Table 208): TEST UNIT READY passes Write Exclusive and Exclusive Access,
//! and MODE SENSE, READ BUFFER, RECEIVE DIAGNOSTIC RESULTS, REPORT SUPPORTED
//! OPERATION CODES, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS and READ
//! DEFECT DATA pass Write Exclusive; that fixes the footnoted cells.
//!
//! SCSI-2 reservations (SPC-2 §5.5.1, §7.21): another initiator may only
//! run the commands that cannot disturb the holder: INQUIRY, REQUEST SENSE,
//! REPORT LUNS, LOG SENSE, REPORT TARGET PORT GROUPS, PREVENT ALLOW MEDIUM
//! REMOVAL with PREVENT zero, and RELEASE (which then does nothing).

use super::PrType;

/// How a command fares under reservations it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Allowed under every persistent reservation.
    Always,
    /// Reads: allowed through the Write Exclusive family, not through the
    /// Exclusive Access family (unless registered under RO/AR).
    SharedUnderWe,
    /// Changes the medium or the logical unit: only the holder and, for
    /// RO/AR types, registrants.
    Exclusive,
    /// RESERVE(6)/(10), RELEASE(6)/(10): SPC-2 rules, with the SPC-4
    /// §5.9.3 exceptions when registrations exist.
    Scsi2Reservation,
    /// PERSISTENT RESERVE IN/OUT: PR IN is always allowed; PR OUT is checked
    /// per service action by the PR OUT handling itself (SPC-4 §5.9.1
    /// Table 64); both conflict with a SCSI-2 reservation (SPC-2 §5.5.1).
    Persistent,
}

/// Opcode and, where it matters, service action or CDB bits -> class.
pub(crate) fn classify(cdb: &[u8]) -> Class {
    let Some(&op) = cdb.first() else {
        return Class::Exclusive;
    };
    let byte = |i: usize| cdb.get(i).copied().unwrap_or(0);
    match op {
        // TEST UNIT READY, REQUEST SENSE, INQUIRY, REPORT LUNS, LOG SENSE.
        0x00 | 0x03 | 0x12 | 0xa0 | 0x4d => Class::Always,
        // READ CAPACITY(10): SBC-3 Table 13, allowed in every column.
        0x25 => Class::Always,
        // SERVICE ACTION IN(16): READ CAPACITY(16) always; GET LBA STATUS reads.
        0x9e => match byte(1) & 0x1f {
            0x10 => Class::Always,
            0x12 => Class::SharedUnderWe,
            _ => Class::Exclusive,
        },
        // MAINTENANCE IN.
        0xa3 => match byte(1) & 0x1f {
            // REPORT IDENTIFYING INFORMATION, REPORT TARGET PORT GROUPS,
            // REPORT ALIASES, REPORT PRIORITY, REPORT TIMESTAMP.
            0x05 | 0x0a | 0x0b | 0x0e | 0x0f => Class::Always,
            // REPORT SUPPORTED OPERATION CODES / TMFs, MANAGEMENT PROTOCOL IN.
            0x0c | 0x0d | 0x10 => Class::SharedUnderWe,
            _ => Class::Exclusive,
        },
        // EXTENDED COPY: the copy manager checks each segment's READ and
        // WRITE against the copy source's and destination's reservations
        // (SPC-4 §5.9.1 Table 63 "policy"; target-emu scsi::xcopy).
        0x83 => Class::Always,
        // RECEIVE COPY RESULTS reads held data only (SPC-4 Table 63).
        0x84 => Class::SharedUnderWe,
        // RESERVE(6), RELEASE(6), RESERVE(10), RELEASE(10).
        0x16 | 0x17 | 0x56 | 0x57 => Class::Scsi2Reservation,
        0x5e | 0x5f => Class::Persistent,
        // READ(6/10/12/16), VERIFY(10/12/16), PRE-FETCH(10/16).
        0x08 | 0x28 | 0xa8 | 0x88 | 0x2f | 0xaf | 0x8f | 0x34 | 0x90 => Class::SharedUnderWe,
        // MODE SENSE(6/10), READ BUFFER, RECEIVE DIAGNOSTIC RESULTS,
        // READ DEFECT DATA(10/12): allowed through WE per ALLOW COMMANDS 011b.
        0x1a | 0x5a | 0x3c | 0x1c | 0x37 | 0xb7 => Class::SharedUnderWe,
        // START STOP UNIT: START=1 with POWER CONDITION 0h is allowed
        // everywhere, every other form conflicts (SBC-3 Table 13).
        0x1b => {
            if byte(4) & 0x01 != 0 && byte(4) >> 4 == 0 {
                Class::Always
            } else {
                Class::Exclusive
            }
        }
        // PREVENT ALLOW MEDIUM REMOVAL: PREVENT=0 allowed, else conflict
        // (SBC-3 Table 13).
        0x1e => {
            if byte(4) & 0x03 == 0 {
                Class::Always
            } else {
                Class::Exclusive
            }
        }
        // WRITE, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE, WRITE SAME, UNMAP,
        // SYNCHRONIZE CACHE, MODE SELECT, FORMAT UNIT and every opcode the
        // tables do not list.
        _ => Class::Exclusive,
    }
}

/// SPC-2 §5.5.1: may a nexus that does not hold the SCSI-2 reservation run
/// this command?
pub(crate) fn passes_scsi2_reservation(cdb: &[u8]) -> bool {
    let byte = |i: usize| cdb.get(i).copied().unwrap_or(0);
    match byte(0) {
        // INQUIRY, REQUEST SENSE, REPORT LUNS, LOG SENSE, RELEASE(6)/(10).
        0x12 | 0x03 | 0xa0 | 0x4d | 0x17 | 0x57 => true,
        // PREVENT ALLOW MEDIUM REMOVAL with PREVENT zero.
        0x1e => byte(4) & 0x03 == 0,
        // REPORT TARGET PORT GROUPS.
        0xa3 => byte(1) & 0x1f == 0x0a,
        _ => false,
    }
}

/// SPC-4 §5.9.1 Table 63 / SBC-3 Table 13 for a nexus that does not hold
/// the persistent reservation of type `pr_type`.
pub(crate) fn passes_persistent_reservation(
    class: Class,
    pr_type: PrType,
    registered: bool,
) -> bool {
    let registrant_access = registered && pr_type.admits_registrants();
    match class {
        Class::Always | Class::Persistent | Class::Scsi2Reservation => true,
        Class::SharedUnderWe => pr_type.write_exclusive() || registrant_access,
        Class::Exclusive => registrant_access,
    }
}
