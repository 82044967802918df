//! Table tests for the reservation manager; each row is named after the
//! spec clause it checks.

use busrig_proto::scsi::pr::{
    Capabilities, FullStatus, PrOutAction, PrOutCdb, PrOutParams, ReadKeys, ReadReservation,
    RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::sense::Asc;

use super::*;

const TARGET: &str = "iqn.2024-01.org.busrig:bus0";

fn port(name: &str, n: u8) -> ItNexus {
    ItNexus::new(name, [0x80, 0, 0, 0, 0, n], TARGET, 1)
}

fn a() -> ItNexus {
    port("iqn.2024-01.org.busrig:node-a", 1)
}
fn b() -> ItNexus {
    port("iqn.2024-01.org.busrig:node-b", 2)
}
fn c() -> ItNexus {
    port("iqn.2024-01.org.busrig:node-c", 3)
}
fn d() -> ItNexus {
    port("iqn.2024-01.org.busrig:node-d", 4)
}

fn out_cdb(action: PrOutAction, type_code: u8, len: usize) -> [u8; 10] {
    PrOutCdb {
        action,
        scope: 0,
        type_code,
        parameter_list_length: len as u32,
    }
    .encode()
}

fn keys(rk: u64, sark: u64) -> PrOutParams {
    PrOutParams {
        reservation_key: rk,
        service_action_key: sark,
        ..Default::default()
    }
}

fn prout(
    r: &mut Reservations,
    who: &ItNexus,
    action: PrOutAction,
    type_code: u8,
    p: &PrOutParams,
) -> Result<PrOutEffects, PrError> {
    let param = p.encode();
    r.persistent_reserve_out(who, &out_cdb(action, type_code, param.len()), &param, &[])
}

fn register(r: &mut Reservations, who: &ItNexus, key: u64) {
    prout(
        r,
        who,
        PrOutAction::RegisterAndIgnoreExistingKey,
        0,
        &keys(0, key),
    )
    .unwrap();
}

fn reserve(r: &mut Reservations, who: &ItNexus, key: u64, type_code: u8) {
    prout(r, who, PrOutAction::Reserve, type_code, &keys(key, 0)).unwrap();
}

fn prin(r: &Reservations, action: u8) -> Vec<u8> {
    r.persistent_reserve_in(&a(), &[0x5e, action, 0, 0, 0, 0, 0, 0x10, 0, 0])
        .unwrap()
}

fn read_keys(r: &Reservations) -> ReadKeys {
    ReadKeys::decode(&prin(r, 0)).unwrap()
}

fn read_reservation(r: &Reservations) -> ReadReservation {
    ReadReservation::decode(&prin(r, 1)).unwrap()
}

fn ua(n: ItNexus, asc: Asc) -> (ItNexus, Asc) {
    (n, asc)
}

fn sense_of(e: PrError) -> (u8, u8) {
    match e {
        PrError::Sense(s) => (s.asc, s.ascq),
        PrError::Conflict => panic!("expected CHECK CONDITION, got RESERVATION CONFLICT"),
    }
}

/// A registered with key 0xA and holding a reservation of `type_code`;
/// B registered with 0xB; C and D unregistered.
fn fixture(type_code: u8) -> Reservations {
    let mut r = Reservations::new(None).unwrap();
    register(&mut r, &a(), 0xa);
    register(&mut r, &b(), 0xb);
    reserve(&mut r, &a(), 0xa, type_code);
    r
}

// ---------------------------------------------------------------------
// SPC-4 §5.9.1 Table 63 / SBC-3 §4.17 Table 13: the conflict table.
// ---------------------------------------------------------------------

const TYPES: [u8; 6] = [1, 3, 5, 6, 7, 8];
const A: bool = true;
const C: bool = false;
/// Expected results for a nexus that is registered but (for WE/EA) not the
/// holder, and for one that is not registered, per type WE EA WERO EARO WEAR EAAR.
const ALWAYS: ([bool; 6], [bool; 6]) = ([A, A, A, A, A, A], [A, A, A, A, A, A]);
const SHARED_UNDER_WE: ([bool; 6], [bool; 6]) = ([A, C, A, A, A, A], [A, C, A, C, A, C]);
const EXCLUSIVE: ([bool; 6], [bool; 6]) = ([C, C, A, A, A, A], [C, C, C, C, C, C]);

fn cdb16(op: u8, b1: u8) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v[0] = op;
    v[1] = b1;
    v
}

fn cdb10(op: u8) -> Vec<u8> {
    let mut v = vec![0u8; 10];
    v[0] = op;
    v
}

/// (clause, CDB, (registrant, non-registrant) expectations per type)
type ConflictRow = (&'static str, Vec<u8>, ([bool; 6], [bool; 6]));

fn conflict_table() -> Vec<ConflictRow> {
    vec![
        (
            "SBC-3 Table 13 READ(6)",
            vec![0x08, 0, 0, 0, 1, 0],
            SHARED_UNDER_WE,
        ),
        ("SBC-3 Table 13 READ(10)", cdb10(0x28), SHARED_UNDER_WE),
        (
            "SBC-3 Table 13 READ(12)",
            vec![0xa8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            SHARED_UNDER_WE,
        ),
        ("SBC-3 Table 13 READ(16)", cdb16(0x88, 0), SHARED_UNDER_WE),
        ("SBC-3 Table 13 VERIFY(10)", cdb10(0x2f), SHARED_UNDER_WE),
        ("SBC-3 Table 13 VERIFY(16)", cdb16(0x8f, 0), SHARED_UNDER_WE),
        ("SBC-3 Table 13 PRE-FETCH(10)", cdb10(0x34), SHARED_UNDER_WE),
        (
            "SBC-3 Table 13 PRE-FETCH(16)",
            cdb16(0x90, 0),
            SHARED_UNDER_WE,
        ),
        (
            "SBC-3 Table 13 GET LBA STATUS",
            cdb16(0x9e, 0x12),
            SHARED_UNDER_WE,
        ),
        (
            "SPC-4 Table 63 MODE SENSE(6), ALLOW COMMANDS 011b",
            vec![0x1a, 0, 0x3f, 0, 0xff, 0],
            SHARED_UNDER_WE,
        ),
        (
            "SPC-4 Table 63 MODE SENSE(10), ALLOW COMMANDS 011b",
            cdb10(0x5a),
            SHARED_UNDER_WE,
        ),
        (
            "SPC-4 Table 63 REPORT SUPPORTED OPERATION CODES",
            vec![0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
            SHARED_UNDER_WE,
        ),
        (
            "SBC-3 Table 13 WRITE(6)",
            vec![0x0a, 0, 0, 0, 1, 0],
            EXCLUSIVE,
        ),
        ("SBC-3 Table 13 WRITE(10)", cdb10(0x2a), EXCLUSIVE),
        (
            "SBC-3 Table 13 WRITE(12)",
            vec![0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            EXCLUSIVE,
        ),
        ("SBC-3 Table 13 WRITE(16)", cdb16(0x8a, 0), EXCLUSIVE),
        (
            "SBC-3 Table 13 WRITE AND VERIFY(10)",
            cdb10(0x2e),
            EXCLUSIVE,
        ),
        (
            "SBC-3 Table 13 WRITE AND VERIFY(16)",
            cdb16(0x8e, 0),
            EXCLUSIVE,
        ),
        (
            "SBC-3 Table 13 COMPARE AND WRITE",
            cdb16(0x89, 0),
            EXCLUSIVE,
        ),
        ("SBC-3 Table 13 WRITE SAME(10)", cdb10(0x41), EXCLUSIVE),
        ("SBC-3 Table 13 WRITE SAME(16)", cdb16(0x93, 0), EXCLUSIVE),
        ("SBC-3 Table 13 UNMAP", cdb10(0x42), EXCLUSIVE),
        (
            "SBC-3 Table 13 SYNCHRONIZE CACHE(10)",
            cdb10(0x35),
            EXCLUSIVE,
        ),
        (
            "SBC-3 Table 13 SYNCHRONIZE CACHE(16)",
            cdb16(0x91, 0),
            EXCLUSIVE,
        ),
        (
            "SPC-4 Table 63 MODE SELECT(6)",
            vec![0x15, 0x10, 0, 0, 12, 0],
            EXCLUSIVE,
        ),
        ("SPC-4 Table 63 MODE SELECT(10)", cdb10(0x55), EXCLUSIVE),
        (
            "SBC-3 Table 13 START STOP UNIT START=0",
            vec![0x1b, 0, 0, 0, 0, 0],
            EXCLUSIVE,
        ),
        (
            "SBC-3 Table 13 START STOP UNIT POWER CONDITION",
            vec![0x1b, 0, 0, 0, 0x31, 0],
            EXCLUSIVE,
        ),
        (
            "SBC-3 Table 13 PREVENT ALLOW PREVENT=1",
            vec![0x1e, 0, 0, 0, 1, 0],
            EXCLUSIVE,
        ),
        (
            "SPC-4 §5.9.1 unlisted opcode defaults to conflict",
            cdb10(0xc0),
            EXCLUSIVE,
        ),
        ("SPC-4 Table 63 INQUIRY", vec![0x12, 0, 0, 0, 36, 0], ALWAYS),
        (
            "SPC-4 Table 63 REPORT LUNS",
            vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            ALWAYS,
        ),
        (
            "SPC-4 Table 63 REQUEST SENSE",
            vec![0x03, 0, 0, 0, 18, 0],
            ALWAYS,
        ),
        (
            "SPC-4 Table 63 TEST UNIT READY, ALLOW COMMANDS 011b",
            vec![0; 6],
            ALWAYS,
        ),
        ("SPC-4 Table 63 PERSISTENT RESERVE IN", cdb10(0x5e), ALWAYS),
        (
            "SPC-4 Table 64 PERSISTENT RESERVE OUT checked per service action",
            cdb10(0x5f),
            ALWAYS,
        ),
        (
            "SPC-4 Table 63 REPORT TARGET PORT GROUPS",
            vec![0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            ALWAYS,
        ),
        ("SBC-3 Table 13 READ CAPACITY(10)", cdb10(0x25), ALWAYS),
        (
            "SBC-3 Table 13 READ CAPACITY(16)",
            cdb16(0x9e, 0x10),
            ALWAYS,
        ),
        (
            "SBC-3 Table 13 START STOP UNIT START=1",
            vec![0x1b, 0, 0, 0, 1, 0],
            ALWAYS,
        ),
        (
            "SBC-3 Table 13 PREVENT ALLOW PREVENT=0",
            vec![0x1e, 0, 0, 0, 0, 0],
            ALWAYS,
        ),
    ]
}

#[test]
fn persistent_reservation_conflict_table() {
    let mut failures = Vec::new();
    for (clause, cdb, (registered, unregistered)) in conflict_table() {
        for (i, &t) in TYPES.iter().enumerate() {
            let r = fixture(t);
            let cases = [
                ("holder", a(), true),
                ("registrant", b(), registered[i]),
                ("non-registrant", c(), unregistered[i]),
            ];
            for (role, who, allowed) in cases {
                let got = r.check(&who, &cdb).is_ok();
                if got != allowed {
                    failures.push(format!(
                        "{clause}: type {t} {role}: allowed={got}, want {allowed}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_reservation_no_conflict() {
    let mut r = Reservations::new(None).unwrap();
    register(&mut r, &a(), 1);
    for (clause, cdb, _) in conflict_table() {
        assert!(r.check(&c(), &cdb).is_ok(), "{clause}");
    }
}

// ---------------------------------------------------------------------
// PR OUT error cases: each leaves the state untouched.
// ---------------------------------------------------------------------

enum Want {
    Conflict,
    Sense(Asc),
}

/// (clause, issuing nexus, service action, TYPE, parameter list, outcome)
type ErrorRow = (&'static str, ItNexus, PrOutAction, u8, Vec<u8>, Want);

#[test]
fn persistent_reserve_out_errors() {
    let tid_c = TransportId::port(&c().initiator, c().isid);
    let spec = |rk, sark| PrOutParams {
        reservation_key: rk,
        service_action_key: sark,
        spec_i_pt: true,
        transport_ids: vec![TransportId::port(&d().initiator, d().isid)],
        ..Default::default()
    };
    let mv = |rk: u64, sark: u64, rtpi: u16, tid: &TransportId| RegisterAndMoveParams {
        reservation_key: rk,
        service_action_key: sark,
        unreg: false,
        aptpl: false,
        relative_target_port: rtpi,
        transport_id: tid.clone(),
    };
    use PrOutAction::*;
    let rows: Vec<ErrorRow> = vec![
        (
            "§5.9.7 REGISTER from unregistered with RESERVATION KEY",
            c(),
            Register,
            0,
            keys(5, 7).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.7 REGISTER with the wrong RESERVATION KEY",
            b(),
            Register,
            0,
            keys(0xa, 1).encode(),
            Want::Conflict,
        ),
        (
            "§6.16.3 SPEC_I_PT from a registered nexus",
            b(),
            Register,
            0,
            spec(0xb, 1).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§6.16.3 SPEC_I_PT with REGISTER AND IGNORE",
            c(),
            RegisterAndIgnoreExistingKey,
            0,
            spec(0, 1).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§6.16.3 SPEC_I_PT with RESERVE",
            a(),
            Reserve,
            1,
            spec(0xa, 0).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§6.16.3 SPEC_I_PT naming an unknown initiator device",
            c(),
            Register,
            0,
            PrOutParams {
                service_action_key: 1,
                spec_i_pt: true,
                transport_ids: vec![TransportId::device("iqn.nobody")],
                ..Default::default()
            }
            .encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§5.9.4 APTPL without persistence (PTPL_C=0)",
            b(),
            Register,
            0,
            PrOutParams {
                reservation_key: 0xb,
                service_action_key: 0xb,
                aptpl: true,
                ..Default::default()
            }
            .encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§5.9.9 RESERVE from unregistered",
            c(),
            Reserve,
            1,
            keys(0, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.9 RESERVE with the wrong key",
            b(),
            Reserve,
            1,
            keys(0xa, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.9 RESERVE while another nexus holds",
            b(),
            Reserve,
            1,
            keys(0xb, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.9 RESERVE by the holder changing type",
            a(),
            Reserve,
            3,
            keys(0xa, 0).encode(),
            Want::Conflict,
        ),
        (
            "§6.15.3.4 RESERVE with an invalid type",
            a(),
            Reserve,
            2,
            keys(0xa, 0).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_CDB),
        ),
        (
            "§5.9.11.2 RELEASE from unregistered",
            c(),
            Release,
            1,
            keys(0, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.2 RELEASE with the wrong key",
            a(),
            Release,
            1,
            keys(0xb, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.2 RELEASE by the holder with another type",
            a(),
            Release,
            3,
            keys(0xa, 0).encode(),
            Want::Sense(Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION),
        ),
        (
            "§5.9.11.6 CLEAR from unregistered",
            c(),
            Clear,
            0,
            keys(0, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.6 CLEAR with the wrong key",
            b(),
            Clear,
            0,
            keys(0xa, 0).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.4 PREEMPT from unregistered",
            c(),
            Preempt,
            1,
            keys(0, 0xa).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.4 PREEMPT with the wrong key",
            b(),
            Preempt,
            1,
            keys(0xa, 0xa).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.4.4 PREEMPT of a key nobody holds",
            b(),
            Preempt,
            1,
            keys(0xb, 0x99).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.11.4.4 PREEMPT with zero key, not all registrants",
            b(),
            Preempt,
            1,
            keys(0xb, 0).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§5.9.11.4.3 PREEMPT of the holder with an invalid type",
            b(),
            PreemptAndAbort,
            4,
            keys(0xb, 0xa).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_CDB),
        ),
        (
            "§6.16.3 PARAMETER LIST LENGTH not 24",
            a(),
            Release,
            1,
            [keys(0xa, 0).encode(), vec![0; 4]].concat(),
            Want::Sense(Asc::PARAMETER_LIST_LENGTH_ERROR),
        ),
        (
            "§6.16.3 PARAMETER LIST LENGTH below 24",
            a(),
            Release,
            1,
            keys(0xa, 0).encode()[..20].to_vec(),
            Want::Sense(Asc::PARAMETER_LIST_LENGTH_ERROR),
        ),
        (
            "§5.9.8 REGISTER AND MOVE from a non-holder",
            b(),
            RegisterAndMove,
            0,
            mv(0xb, 0xc, 1, &tid_c).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.8 REGISTER AND MOVE from unregistered",
            c(),
            RegisterAndMove,
            0,
            mv(0, 0xc, 1, &tid_c).encode(),
            Want::Conflict,
        ),
        (
            "§5.9.8 REGISTER AND MOVE with zero key",
            a(),
            RegisterAndMove,
            0,
            mv(0xa, 0, 1, &tid_c).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§5.9.8 REGISTER AND MOVE to the issuing nexus",
            a(),
            RegisterAndMove,
            0,
            mv(0xa, 0xc, 1, &TransportId::port(&a().initiator, a().isid)).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§5.9.8 REGISTER AND MOVE to an unknown target port",
            a(),
            RegisterAndMove,
            0,
            mv(0xa, 0xc, 2, &tid_c).encode(),
            Want::Sense(Asc::INVALID_FIELD_IN_PARAMETER_LIST),
        ),
        (
            "§6.16.4 REGISTER AND MOVE truncated TransportID",
            a(),
            RegisterAndMove,
            0,
            mv(0xa, 0xc, 1, &tid_c).encode()[..40].to_vec(),
            Want::Sense(Asc::PARAMETER_LIST_LENGTH_ERROR),
        ),
    ];
    for (clause, who, action, type_code, param, want) in rows {
        let mut r = fixture(1);
        let before = r.pr_snapshot();
        let got =
            r.persistent_reserve_out(&who, &out_cdb(action, type_code, param.len()), &param, &[]);
        match (want, got) {
            (Want::Conflict, Err(PrError::Conflict)) => {}
            (Want::Sense(asc), Err(PrError::Sense(s))) => {
                assert_eq!(
                    (s.key, s.asc, s.ascq),
                    (asc.key, asc.asc, asc.ascq),
                    "{clause}"
                )
            }
            (_, got) => panic!("{clause}: got {got:?}"),
        }
        assert_eq!(r.pr_snapshot(), before, "{clause}: state changed");
    }
}

#[test]
fn cdb_errors() {
    let mut r = fixture(1);
    let p = keys(0xa, 0).encode();
    // §6.16.1: service action 08h (REPLACE LOST RESERVATION) is not supported.
    let mut cdb = out_cdb(PrOutAction::Release, 1, 24);
    cdb[1] = 0x08;
    assert_eq!(
        sense_of(r.persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap_err()),
        (0x24, 0)
    );
    // §6.16.1: parameter data shorter than PARAMETER LIST LENGTH.
    let cdb = out_cdb(PrOutAction::Release, 1, 24);
    assert_eq!(
        sense_of(
            r.persistent_reserve_out(&a(), &cdb, &p[..20], &[])
                .unwrap_err()
        ),
        (0x1a, 0)
    );
    // §6.15.1: PR IN service action 04h is invalid.
    let e = r
        .persistent_reserve_in(&a(), &[0x5e, 0x04, 0, 0, 0, 0, 0, 0, 8, 0])
        .unwrap_err();
    assert_eq!(sense_of(e), (0x24, 0));
    // §6.15.3.3: scope other than LU_SCOPE.
    let mut cdb = out_cdb(PrOutAction::Reserve, 1, 24);
    cdb[2] = 0x11;
    assert_eq!(
        sense_of(r.persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap_err()),
        (0x24, 0)
    );
}

// ---------------------------------------------------------------------
// Registering (SPC-4 §5.9.7) and PRgeneration (§6.15.2).
// ---------------------------------------------------------------------

#[test]
fn register_change_and_unregister() {
    let mut r = Reservations::new(None).unwrap();
    prout(&mut r, &a(), PrOutAction::Register, 0, &keys(0, 0x11)).unwrap();
    assert_eq!(
        read_keys(&r),
        ReadKeys {
            generation: 1,
            keys: vec![0x11]
        }
    );
    // Changing the key needs the current one.
    prout(&mut r, &a(), PrOutAction::Register, 0, &keys(0x11, 0x22)).unwrap();
    assert_eq!(
        read_keys(&r),
        ReadKeys {
            generation: 2,
            keys: vec![0x22]
        }
    );
    // REGISTER AND IGNORE EXISTING KEY does not look at RESERVATION KEY.
    prout(
        &mut r,
        &a(),
        PrOutAction::RegisterAndIgnoreExistingKey,
        0,
        &keys(0x999, 0x33),
    )
    .unwrap();
    assert_eq!(
        read_keys(&r),
        ReadKeys {
            generation: 3,
            keys: vec![0x33]
        }
    );
    // SERVICE ACTION RESERVATION KEY zero unregisters.
    prout(&mut r, &a(), PrOutAction::Register, 0, &keys(0x33, 0)).unwrap();
    assert_eq!(
        read_keys(&r),
        ReadKeys {
            generation: 4,
            keys: vec![]
        }
    );
}

#[test]
fn generation_counts_exactly_the_spc4_service_actions() {
    use PrOutAction::*;
    // §6.15.2: REGISTER, R&I, CLEAR, PREEMPT, PREEMPT AND ABORT and
    // REGISTER AND MOVE increment; RESERVE, RELEASE, PR IN and failed
    // commands do not.
    let rows: Vec<(&str, PrOutAction, u8, PrOutParams, u32)> = vec![
        (
            "§6.15.2 REGISTER of a new key",
            Register,
            0,
            keys(0, 0xc),
            1,
        ),
        (
            "§6.15.2 REGISTER unregistered with zero key completes",
            Register,
            0,
            keys(0, 0),
            1,
        ),
        (
            "§6.15.2 REGISTER AND IGNORE EXISTING KEY",
            RegisterAndIgnoreExistingKey,
            0,
            keys(0, 0xc),
            1,
        ),
        (
            "§6.15.2 RESERVE does not count",
            Reserve,
            1,
            keys(0xb, 0),
            0,
        ),
        (
            "§6.15.2 terminated command does not count",
            Reserve,
            1,
            keys(0x1, 0),
            0,
        ),
    ];
    for (clause, action, t, p, delta) in rows {
        let mut r = Reservations::new(None).unwrap();
        register(&mut r, &b(), 0xb);
        let g0 = read_keys(&r).generation;
        let who = if matches!(action, Reserve) { b() } else { c() };
        let _ = prout(&mut r, &who, action, t, &p);
        assert_eq!(read_keys(&r).generation, g0 + delta, "{clause}");
    }
    let mut r = fixture(1);
    let g = read_keys(&r).generation;
    prout(&mut r, &a(), Release, 1, &keys(0xa, 0)).unwrap();
    assert_eq!(
        read_keys(&r).generation,
        g,
        "§6.15.2 RELEASE does not count"
    );
    prout(&mut r, &b(), Preempt, 1, &keys(0xb, 0xa)).unwrap();
    assert_eq!(read_keys(&r).generation, g + 1, "§6.15.2 PREEMPT");
    prout(&mut r, &b(), Clear, 0, &keys(0xb, 0)).unwrap();
    assert_eq!(read_keys(&r).generation, g + 2, "§6.15.2 CLEAR");
}

#[test]
fn unregistering_the_holder() {
    // (clause, type, reservation survives, unit attentions for B)
    let rows = [
        (
            "§5.9.11.3 WE holder unregisters: released, no UA",
            1,
            false,
            vec![],
        ),
        (
            "§5.9.11.3 EA holder unregisters: released, no UA",
            3,
            false,
            vec![],
        ),
        (
            "§5.9.11.3 WERO holder unregisters: 2A/04 to registrants",
            5,
            false,
            vec![ua(b(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.11.3 EARO holder unregisters: 2A/04 to registrants",
            6,
            false,
            vec![ua(b(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.10 WEAR: reservation stays while registrants remain",
            7,
            true,
            vec![],
        ),
        (
            "§5.9.10 EAAR: reservation stays while registrants remain",
            8,
            true,
            vec![],
        ),
    ];
    for (clause, t, survives, uas) in rows {
        let mut r = fixture(t);
        let fx = prout(&mut r, &a(), PrOutAction::Register, 0, &keys(0xa, 0)).unwrap();
        assert_eq!(fx.unit_attentions, uas, "{clause}");
        assert_eq!(
            read_reservation(&r).reservation.is_some(),
            survives,
            "{clause}"
        );
        assert_eq!(read_keys(&r).keys, vec![0xb], "{clause}");
    }
    // The last registrant of an all-registrants reservation releases it.
    let mut r = fixture(7);
    prout(&mut r, &a(), PrOutAction::Register, 0, &keys(0xa, 0)).unwrap();
    prout(&mut r, &b(), PrOutAction::Register, 0, &keys(0xb, 0)).unwrap();
    assert_eq!(read_reservation(&r).reservation, None);
}

#[test]
fn spec_i_pt_registers_named_ports() {
    let mut r = Reservations::new(None).unwrap();
    register(&mut r, &b(), 0xb);
    let e_port = ItNexus::new(
        "iqn.2024-01.org.busrig:node-e",
        [0x40, 0, 0, 0, 0, 9],
        TARGET,
        1,
    );
    let p = PrOutParams {
        service_action_key: 0x77,
        spec_i_pt: true,
        transport_ids: vec![
            TransportId::port(&d().initiator, d().isid),
            // Format 00b: every logged-in port of that initiator.
            TransportId::device(&e_port.initiator),
            // Already registered: keeps its key.
            TransportId::port(&b().initiator, b().isid),
        ],
        ..Default::default()
    };
    let param = p.encode();
    let known = [a(), b(), c(), e_port.clone()];
    r.persistent_reserve_out(
        &c(),
        &out_cdb(PrOutAction::Register, 0, param.len()),
        &param,
        &known,
    )
    .unwrap();
    let snap = r.pr_snapshot();
    let regs: Vec<(ItNexus, u64)> = snap
        .registrations
        .into_iter()
        .map(|v| (v.nexus, v.key))
        .collect();
    assert_eq!(
        regs,
        vec![(b(), 0xb), (c(), 0x77), (d(), 0x77), (e_port, 0x77)]
    );
    assert_eq!(snap.generation, 2);
}

#[test]
fn all_tg_pt_registration_covers_every_target_port() {
    let mut r = Reservations::new(None).unwrap();
    let p = PrOutParams {
        service_action_key: 0x5,
        all_tg_pt: true,
        ..Default::default()
    };
    prout(&mut r, &a(), PrOutAction::Register, 0, &p).unwrap();
    reserve(&mut r, &a(), 0x5, 3);
    let other_port = ItNexus::new(&a().initiator, a().isid, TARGET, 2);
    // Same initiator port through another target port: the same registrant
    // and holder (SPC-4 §6.16.3 ALL_TG_PT).
    assert!(r.check(&other_port, &cdb10(0x2a)).is_ok());
    assert!(r.check(&c(), &cdb10(0x2a)).is_err());
    let fs = FullStatus::decode(&prin(&r, 3)).unwrap();
    assert!(fs.descriptors[0].all_tg_pt && fs.descriptors[0].holder);
    // Without ALL_TG_PT the registration is for one I_T nexus only.
    let mut r = fixture(3);
    let other_port = ItNexus::new(&a().initiator, a().isid, TARGET, 2);
    assert!(r.check(&other_port, &cdb10(0x2a)).is_err());
    prout(&mut r, &other_port, PrOutAction::Register, 0, &keys(0, 0x6)).unwrap();
    assert_eq!(read_keys(&r).keys, vec![0xa, 0xb, 0x6]);
}

#[test]
fn insufficient_registration_resources() {
    let mut r = Reservations::new(None).unwrap();
    for i in 0..MAX_REGISTRATIONS {
        let n = ItNexus::new("iqn.many", [0, 0, 0, 0, (i >> 8) as u8, i as u8], TARGET, 1);
        register(&mut r, &n, 1 + i as u64);
    }
    let e = prout(&mut r, &c(), PrOutAction::Register, 0, &keys(0, 9)).unwrap_err();
    assert_eq!(sense_of(e), (0x55, 0x04));
}

// ---------------------------------------------------------------------
// Reserving, releasing, clearing (SPC-4 §5.9.9, §5.9.11.2, §5.9.11.6).
// ---------------------------------------------------------------------

#[test]
fn read_reservation_key_per_type() {
    for t in TYPES {
        let r = fixture(t);
        let res = read_reservation(&r).reservation.unwrap();
        // §5.9.10: all-registrants types report key zero.
        let want = if t >= 7 { 0 } else { 0xa };
        assert_eq!(
            (res.key, res.scope, res.type_code),
            (want, 0, t),
            "type {t}"
        );
    }
}

#[test]
fn reserve_again_same_type_is_good() {
    for t in TYPES {
        let mut r = fixture(t);
        reserve(&mut r, &a(), 0xa, t);
        if t >= 7 {
            // §5.9.10: every registrant holds an all-registrants reservation.
            reserve(&mut r, &b(), 0xb, t);
        }
        assert_eq!(read_reservation(&r).reservation.unwrap().type_code, t);
    }
}

#[test]
fn release_rules() {
    // (clause, type, releasing nexus, key, released, UAs)
    let rows = [
        (
            "§5.9.11.2 WE released by holder, no UA",
            1,
            a(),
            0xa,
            true,
            vec![],
        ),
        (
            "§5.9.11.2 EA released by holder, no UA",
            3,
            a(),
            0xa,
            true,
            vec![],
        ),
        (
            "§5.9.11.2 WERO released: 2A/04 to other registrants",
            5,
            a(),
            0xa,
            true,
            vec![ua(b(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.11.2 EARO released: 2A/04 to other registrants",
            6,
            a(),
            0xa,
            true,
            vec![ua(b(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.11.2 WEAR released by any registrant",
            7,
            b(),
            0xb,
            true,
            vec![ua(a(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.11.2 EAAR released by any registrant",
            8,
            b(),
            0xb,
            true,
            vec![ua(a(), Asc::RESERVATIONS_RELEASED)],
        ),
        (
            "§5.9.11.2 RELEASE from a non-holder registrant: GOOD, no change",
            1,
            b(),
            0xb,
            false,
            vec![],
        ),
        (
            "§5.9.11.2 RELEASE from a non-holder registrant under RO",
            5,
            b(),
            0xb,
            false,
            vec![],
        ),
    ];
    for (clause, t, who, key, released, uas) in rows {
        let mut r = fixture(t);
        let fx = prout(&mut r, &who, PrOutAction::Release, t, &keys(key, 0)).unwrap();
        assert_eq!(fx.unit_attentions, uas, "{clause}");
        assert_eq!(
            read_reservation(&r).reservation.is_none(),
            released,
            "{clause}"
        );
        assert_eq!(
            read_keys(&r).keys,
            vec![0xa, 0xb],
            "{clause}: registrations kept"
        );
    }
    // No reservation at all: GOOD.
    let mut r = Reservations::new(None).unwrap();
    register(&mut r, &a(), 1);
    assert!(prout(&mut r, &a(), PrOutAction::Release, 1, &keys(1, 0)).is_ok());
}

#[test]
fn clear_removes_everything_and_preempts_others() {
    let mut r = fixture(5);
    register(&mut r, &c(), 0xc);
    let fx = prout(&mut r, &b(), PrOutAction::Clear, 0, &keys(0xb, 0)).unwrap();
    // §5.9.11.6: 2A/03 to every other registered nexus.
    assert_eq!(
        fx.unit_attentions,
        vec![
            ua(a(), Asc::RESERVATIONS_PREEMPTED),
            ua(c(), Asc::RESERVATIONS_PREEMPTED)
        ]
    );
    assert_eq!(read_keys(&r).keys, Vec::<u64>::new());
    assert_eq!(read_reservation(&r).reservation, None);
}

// ---------------------------------------------------------------------
// Preempting (SPC-4 §5.9.11.4, §5.9.11.5).
// ---------------------------------------------------------------------

#[test]
fn preempt_the_holder_fence_scsi() {
    // fence_scsi: nodes register with R&I, one reserves WERO, a survivor
    // fences the other with PREEMPT AND ABORT of its key.
    let mut r = fixture(5);
    register(&mut r, &c(), 0xc);
    let fx = prout(
        &mut r,
        &b(),
        PrOutAction::PreemptAndAbort,
        5,
        &keys(0xb, 0xa),
    )
    .unwrap();
    // §5.9.11.4.3 e): the preempted nexus gets 2A/05; type unchanged, so no 2A/04.
    assert_eq!(
        fx.unit_attentions,
        vec![ua(a(), Asc::REGISTRATIONS_PREEMPTED)]
    );
    assert_eq!(fx.abort_tasks_of, vec![a()]);
    assert_eq!(read_keys(&r).keys, vec![0xb, 0xc]);
    let res = read_reservation(&r).reservation.unwrap();
    assert_eq!((res.key, res.type_code), (0xb, 5));
    assert!(
        r.check(&a(), &cdb10(0x2a)).is_err(),
        "fenced node may not write"
    );
    assert!(
        r.check(&c(), &cdb10(0x2a)).is_ok(),
        "registrants still write under WERO"
    );
}

#[test]
fn preempt_changing_type_releases_for_remaining_registrants() {
    let mut r = fixture(1);
    register(&mut r, &c(), 0xc);
    let fx = prout(&mut r, &b(), PrOutAction::Preempt, 3, &keys(0xb, 0xa)).unwrap();
    // §5.9.11.4.3 f): type changed -> 2A/04 to registrants other than the preempter.
    assert_eq!(
        fx.unit_attentions,
        vec![
            ua(a(), Asc::REGISTRATIONS_PREEMPTED),
            ua(c(), Asc::RESERVATIONS_RELEASED)
        ]
    );
    assert!(fx.abort_tasks_of.is_empty(), "PREEMPT aborts nothing");
}

#[test]
fn holder_may_preempt_itself() {
    let mut r = fixture(1);
    let fx = prout(&mut r, &a(), PrOutAction::Preempt, 3, &keys(0xa, 0xa)).unwrap();
    // §5.9.11.4.3: the registration is kept and the new type established.
    assert_eq!(read_keys(&r).keys, vec![0xa, 0xb]);
    assert_eq!(read_reservation(&r).reservation.unwrap().type_code, 3);
    assert_eq!(
        fx.unit_attentions,
        vec![ua(b(), Asc::RESERVATIONS_RELEASED)]
    );
}

#[test]
fn preempt_without_reservation_removes_registrations() {
    let mut r = Reservations::new(None).unwrap();
    register(&mut r, &a(), 0xa);
    register(&mut r, &b(), 0xb);
    register(&mut r, &c(), 0xb);
    let fx = prout(
        &mut r,
        &a(),
        PrOutAction::PreemptAndAbort,
        0,
        &keys(0xa, 0xb),
    )
    .unwrap();
    // §5.9.11.4.4: every registration with that key goes; SCOPE/TYPE ignored.
    assert_eq!(
        fx.unit_attentions,
        vec![
            ua(b(), Asc::REGISTRATIONS_PREEMPTED),
            ua(c(), Asc::REGISTRATIONS_PREEMPTED)
        ]
    );
    assert_eq!(fx.abort_tasks_of, vec![b(), c()]);
    assert_eq!(read_keys(&r).keys, vec![0xa]);
    assert_eq!(read_reservation(&r).reservation, None);
}

#[test]
fn preempt_non_holder_registrant_keeps_reservation() {
    let mut r = fixture(1);
    register(&mut r, &c(), 0xc);
    let fx = prout(&mut r, &a(), PrOutAction::Preempt, 1, &keys(0xa, 0xc)).unwrap();
    assert_eq!(
        fx.unit_attentions,
        vec![ua(c(), Asc::REGISTRATIONS_PREEMPTED)]
    );
    assert_eq!(read_reservation(&r).reservation.unwrap().key, 0xa);
}

#[test]
fn preempt_all_registrants() {
    // §5.9.11.4.3: zero key under an all-registrants reservation removes
    // every other registration and establishes the CDB's type.
    let mut r = fixture(7);
    register(&mut r, &c(), 0xc);
    let fx = prout(&mut r, &b(), PrOutAction::PreemptAndAbort, 1, &keys(0xb, 0)).unwrap();
    assert_eq!(
        fx.unit_attentions,
        vec![
            ua(a(), Asc::REGISTRATIONS_PREEMPTED),
            ua(c(), Asc::REGISTRATIONS_PREEMPTED)
        ]
    );
    // §5.9.11.5: with zero key all registered nexuses' tasks are aborted.
    assert_eq!(fx.abort_tasks_of, vec![a(), b(), c()]);
    let res = read_reservation(&r).reservation.unwrap();
    assert_eq!((res.key, res.type_code), (0xb, 1));
    // A non-zero key removes only those registrations; the reservation stays.
    let mut r = fixture(8);
    register(&mut r, &c(), 0xc);
    let fx = prout(&mut r, &b(), PrOutAction::Preempt, 8, &keys(0xb, 0xc)).unwrap();
    assert_eq!(
        fx.unit_attentions,
        vec![ua(c(), Asc::REGISTRATIONS_PREEMPTED)]
    );
    assert_eq!(read_keys(&r).keys, vec![0xa, 0xb]);
    assert_eq!(read_reservation(&r).reservation.unwrap().type_code, 8);
}

// ---------------------------------------------------------------------
// REGISTER AND MOVE (SPC-4 §5.9.8).
// ---------------------------------------------------------------------

#[test]
fn register_and_move() {
    for unreg in [false, true] {
        let mut r = fixture(5);
        let p = RegisterAndMoveParams {
            reservation_key: 0xa,
            service_action_key: 0xc,
            unreg,
            aptpl: false,
            relative_target_port: RELATIVE_TARGET_PORT_ID,
            transport_id: TransportId::port(&c().initiator, c().isid),
        };
        let param = p.encode();
        let g = read_keys(&r).generation;
        r.persistent_reserve_out(
            &a(),
            &out_cdb(PrOutAction::RegisterAndMove, 0, param.len()),
            &param,
            &[],
        )
        .unwrap();
        let res = read_reservation(&r).reservation.unwrap();
        assert_eq!(
            (res.key, res.type_code),
            (0xc, 5),
            "type kept, new holder's key"
        );
        let want: Vec<u64> = if unreg {
            vec![0xb, 0xc]
        } else {
            vec![0xa, 0xb, 0xc]
        };
        assert_eq!(
            read_keys(&r),
            ReadKeys {
                generation: g + 1,
                keys: want
            }
        );
        assert_eq!(r.pr_snapshot().reservation.unwrap().holder, Some(c()));
    }
    // §5.9.8: not for all-registrants reservations.
    let mut r = fixture(7);
    let p = RegisterAndMoveParams {
        reservation_key: 0xa,
        service_action_key: 0xc,
        unreg: false,
        aptpl: false,
        relative_target_port: 1,
        transport_id: TransportId::port(&c().initiator, c().isid),
    }
    .encode();
    let cdb = out_cdb(PrOutAction::RegisterAndMove, 0, p.len());
    assert_eq!(
        r.persistent_reserve_out(&a(), &cdb, &p, &[]),
        Err(PrError::Conflict)
    );
}

// ---------------------------------------------------------------------
// PR IN formats from live state (SPC-4 §6.15).
// ---------------------------------------------------------------------

#[test]
fn report_capabilities() {
    let r = fixture(1);
    let caps = Capabilities::decode(&prin(&r, 2)).unwrap();
    assert!(caps.crh && caps.sip_c && caps.atp_c && caps.tmv && !caps.rlr_c);
    assert!(!caps.ptpl_c, "no APTPL file: cannot persist");
    assert_eq!(caps.allow_commands, 0b011);
    assert_eq!(caps.type_mask, 0b1_1110_1010);
    let dir = tempfile::tempdir().unwrap();
    let r = Reservations::new(Some(dir.path().join("lu.aptpl"))).unwrap();
    assert!(Capabilities::decode(&prin(&r, 2)).unwrap().ptpl_c);
}

#[test]
fn read_full_status() {
    let r = fixture(5);
    let fs = FullStatus::decode(&prin(&r, 3)).unwrap();
    assert_eq!(fs.generation, 2);
    let d: Vec<_> = fs
        .descriptors
        .iter()
        .map(|d| {
            (
                d.key,
                d.holder,
                d.type_code,
                d.relative_target_port,
                d.transport_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        d,
        vec![
            (0xa, true, 5, 1, TransportId::port(&a().initiator, a().isid)),
            (
                0xb,
                false,
                0,
                1,
                TransportId::port(&b().initiator, b().isid)
            ),
        ]
    );
    // §6.15.5: every registrant is a holder of an all-registrants reservation.
    let fs = FullStatus::decode(&prin(&fixture(8), 3)).unwrap();
    assert!(fs.descriptors.iter().all(|d| d.holder && d.type_code == 8));
    // TransportIDs are format 01b, name,i,0xISID, padded to a multiple of 4.
    let raw = prin(&fixture(1), 3);
    assert_eq!(raw[8 + 24], 0x45);
    let tid_len = u32::from_be_bytes(raw[8 + 20..8 + 24].try_into().unwrap()) as usize;
    assert_eq!(tid_len % 4, 0);
    let text = &raw[8 + 28..8 + 28 + a().initiator_port_name().len()];
    assert_eq!(text, a().initiator_port_name().as_bytes());
}

// ---------------------------------------------------------------------
// APTPL (SPC-4 §5.9.4).
// ---------------------------------------------------------------------

#[test]
fn aptpl_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu0.aptpl");
    let mut r = Reservations::new(Some(path.clone())).unwrap();
    let p = PrOutParams {
        service_action_key: 0xa,
        aptpl: true,
        ..Default::default()
    };
    prout(&mut r, &a(), PrOutAction::Register, 0, &p).unwrap();
    register(&mut r, &b(), 0xb); // APTPL=0 would turn persistence off...
    let p = PrOutParams {
        reservation_key: 0xb,
        service_action_key: 0xb,
        aptpl: true,
        ..Default::default()
    };
    prout(&mut r, &b(), PrOutAction::Register, 0, &p).unwrap(); // ...so turn it back on.
    reserve(&mut r, &a(), 0xa, 5);
    let before = r.pr_snapshot();
    assert!(before.aptpl);

    let restored = Reservations::new(Some(path.clone())).unwrap();
    assert_eq!(restored.pr_snapshot(), before);
    assert!(Capabilities::decode(&prin(&restored, 2)).unwrap().ptpl_a);
    assert!(
        restored.check(&c(), &cdb10(0x2a)).is_err(),
        "reservation enforced after restart"
    );

    // APTPL cleared by a later REGISTER: nothing survives the next restart.
    let mut r = restored;
    prout(&mut r, &b(), PrOutAction::Register, 0, &keys(0xb, 0xb)).unwrap();
    let restored = Reservations::new(Some(path)).unwrap();
    assert_eq!(restored.pr_snapshot().registrations, vec![]);
}

#[test]
fn aptpl_corrupt_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu0.aptpl");
    let mut r = Reservations::new(Some(path.clone())).unwrap();
    let p = PrOutParams {
        service_action_key: 0xa,
        aptpl: true,
        ..Default::default()
    };
    prout(&mut r, &a(), PrOutAction::Register, 0, &p).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    match Reservations::new(Some(path.clone())) {
        Err(ReservationError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("corrupt file accepted: {other:?}"),
    }
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        Reservations::new(Some(path)),
        Err(ReservationError::Corrupt { .. })
    ));
}

#[test]
fn aptpl_write_failure_fails_the_command_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("lu0.aptpl");
    let mut r = Reservations::new(Some(path)).unwrap();
    let p = PrOutParams {
        service_action_key: 0xa,
        aptpl: true,
        ..Default::default()
    };
    let e = prout(&mut r, &a(), PrOutAction::Register, 0, &p).unwrap_err();
    assert_eq!(sense_of(e), (0x44, 0x00));
    assert_eq!(r.pr_snapshot().registrations, vec![]);
}

// ---------------------------------------------------------------------
// SCSI-2 RESERVE / RELEASE (SPC-2 §5.5.1, §7.17, §7.21).
// ---------------------------------------------------------------------

#[test]
fn scsi2_reserve_release() {
    let mut r = Reservations::new(None).unwrap();
    r.reserve6(&a()).unwrap();
    r.reserve6(&a()).unwrap(); // the holder may reserve again
    assert_eq!(r.reserve6(&b()), Err(Conflict));
    r.release6(&b()); // GOOD, does nothing
    assert_eq!(r.scsi2_holder(), Some(&a()));
    r.release6(&a());
    assert_eq!(r.scsi2_holder(), None);
    r.reserve6(&b()).unwrap();
    assert_eq!(r.scsi2_holder(), Some(&b()));
}

#[test]
fn scsi2_conflicts() {
    let mut r = Reservations::new(None).unwrap();
    r.reserve6(&a()).unwrap();
    let rows: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "SPC-2 §5.5.1 INQUIRY passes",
            vec![0x12, 0, 0, 0, 36, 0],
            true,
        ),
        (
            "SPC-2 §5.5.1 REQUEST SENSE passes",
            vec![0x03, 0, 0, 0, 18, 0],
            true,
        ),
        (
            "SPC-2 §5.5.1 REPORT LUNS passes",
            cdb16(0xa0, 0)[..12].to_vec(),
            true,
        ),
        (
            "SPC-2 §7.17 RELEASE(6) passes and does nothing",
            vec![0x17, 0, 0, 0, 0, 0],
            true,
        ),
        ("SPC-2 §7.18 RELEASE(10) passes", cdb10(0x57), true),
        (
            "SPC-2 §5.5.1 PREVENT ALLOW with PREVENT=0",
            vec![0x1e, 0, 0, 0, 0, 0],
            true,
        ),
        (
            "SPC-2 §5.5.1 MODE SENSE conflicts",
            vec![0x1a, 0, 0x3f, 0, 0xff, 0],
            false,
        ),
        ("SPC-2 §5.5.1 TEST UNIT READY conflicts", vec![0; 6], false),
        ("SPC-2 §5.5.1 READ(10) conflicts", cdb10(0x28), false),
        ("SPC-2 §5.5.1 WRITE(10) conflicts", cdb10(0x2a), false),
        ("SPC-2 §5.5.1 READ CAPACITY conflicts", cdb10(0x25), false),
        (
            "SPC-2 §7.21 RESERVE(6) conflicts",
            vec![0x16, 0, 0, 0, 0, 0],
            false,
        ),
        (
            "SPC-2 §5.5.1 PREVENT ALLOW with PREVENT=1 conflicts",
            vec![0x1e, 0, 0, 0, 1, 0],
            false,
        ),
    ];
    for (clause, cdb, allowed) in rows {
        assert_eq!(r.check(&b(), &cdb).is_ok(), allowed, "{clause}");
        assert!(r.check(&a(), &cdb).is_ok(), "{clause}: holder");
    }
}

#[test]
fn scsi2_released_by_nexus_loss_and_reset_but_pr_survives() {
    let mut r = Reservations::new(None).unwrap();
    r.reserve6(&a()).unwrap();
    r.nexus_lost(&b());
    assert_eq!(r.scsi2_holder(), Some(&a()), "another nexus lost: kept");
    r.nexus_lost(&a());
    assert_eq!(r.scsi2_holder(), None);
    r.reserve6(&b()).unwrap();
    r.reset();
    assert_eq!(r.scsi2_holder(), None);

    let mut r = fixture(5);
    let before = r.pr_snapshot();
    r.nexus_lost(&a());
    r.reset();
    assert_eq!(
        r.pr_snapshot(),
        before,
        "SPC-4 §5.9.1: PR state survives resets and nexus loss"
    );
}

// ---------------------------------------------------------------------
// Mixed use: SPC-2 §5.5.1 and SPC-4 §5.9.3 (CRH=1).
// ---------------------------------------------------------------------

#[test]
fn persistent_reserve_under_scsi2_reservation_conflicts_for_everyone() {
    let mut r = Reservations::new(None).unwrap();
    r.reserve6(&a()).unwrap();
    for who in [a(), b()] {
        assert!(r.check(&who, &cdb10(0x5e)).is_err(), "SPC-2 §5.5.1 PR IN");
        assert!(r.check(&who, &cdb10(0x5f)).is_err(), "SPC-2 §5.5.1 PR OUT");
        assert_eq!(
            r.persistent_reserve_in(&who, &[0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
            Err(PrError::Conflict)
        );
        assert_eq!(
            prout(
                &mut r,
                &who,
                PrOutAction::RegisterAndIgnoreExistingKey,
                0,
                &keys(0, 1)
            ),
            Err(PrError::Conflict)
        );
    }
    r.release6(&a());
    register(&mut r, &a(), 1);
}

#[test]
fn scsi2_reserve_release_while_registrations_exist() {
    let reserve6 = vec![0x16, 0, 0, 0, 0, 0];
    let release6 = vec![0x17, 0, 0, 0, 0, 0];
    // (clause, PR type or none, nexus, RESERVE/RELEASE outcome)
    enum Outcome {
        Ignored,
        Conflict,
    }
    let rows = [
        (
            "§5.9.3 a) PR holder: GOOD, nothing reserved",
            Some(1),
            a(),
            Outcome::Ignored,
        ),
        (
            "§5.9.3 b) registrant under WERO: GOOD, nothing reserved",
            Some(5),
            b(),
            Outcome::Ignored,
        ),
        (
            "§5.9.3 b) registrant under EAAR: GOOD, nothing reserved",
            Some(8),
            b(),
            Outcome::Ignored,
        ),
        (
            "§5.9.3 SPC-2 §5.5.1 registrant under WE conflicts",
            Some(1),
            b(),
            Outcome::Conflict,
        ),
        (
            "§5.9.3 SPC-2 §5.5.1 non-registrant conflicts",
            Some(5),
            c(),
            Outcome::Conflict,
        ),
        (
            "§5.9.3 SPC-2 §5.5.1 registrations without reservation conflict",
            None,
            b(),
            Outcome::Conflict,
        ),
    ];
    for (clause, t, who, outcome) in rows {
        let mut r = Reservations::new(None).unwrap();
        register(&mut r, &a(), 0xa);
        register(&mut r, &b(), 0xb);
        if let Some(t) = t {
            reserve(&mut r, &a(), 0xa, t);
        }
        let before = r.pr_snapshot();
        match outcome {
            Outcome::Ignored => {
                assert!(r.check(&who, &reserve6).is_ok(), "{clause}");
                assert!(r.check(&who, &release6).is_ok(), "{clause}");
                assert_eq!(r.reserve6(&who), Ok(()), "{clause}");
                r.release6(&who);
            }
            Outcome::Conflict => {
                assert!(r.check(&who, &reserve6).is_err(), "{clause}");
                assert!(r.check(&who, &release6).is_err(), "{clause}");
                assert_eq!(r.reserve6(&who), Err(Conflict), "{clause}");
            }
        }
        assert_eq!(r.scsi2_holder(), None, "{clause}");
        assert_eq!(
            r.pr_snapshot(),
            before,
            "{clause}: RELEASE never releases a PR"
        );
    }
}

/// REGISTER with APTPL set: parameter data and CDB.
fn aptpl_register(key: u64) -> (Vec<u8>, [u8; 10]) {
    let p = PrOutParams {
        service_action_key: key,
        aptpl: true,
        ..Default::default()
    }
    .encode();
    let cdb = out_cdb(PrOutAction::Register, 0, p.len());
    (p, cdb)
}

#[test]
fn aptpl_state_is_current_only_once_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu0.aptpl");
    let mut r = Reservations::new(Some(path.clone())).unwrap();
    let (p, cdb) = aptpl_register(0xa);
    let PrOutStep::Save(pending) = r.begin_persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap()
    else {
        panic!("APTPL register must be saved first");
    };
    assert_eq!(pending.generation(), 1);
    // Other commands run against the state before the PR OUT meanwhile.
    assert_eq!(r.pr_snapshot().registrations, vec![]);
    assert!(r.check(&b(), &cdb10(0x28)).is_ok());
    // SPC-2 §5.5.1 meets a registration about to appear: RESERVE conflicts.
    assert_eq!(r.reserve6(&b()), Err(Conflict));
    // A second PR OUT must wait its turn; the executor serialises them.
    let (p2, cdb2) = aptpl_register(0xb);
    assert!(r
        .begin_persistent_reserve_out(&b(), &cdb2, &p2, &[])
        .is_err());
    let saved = pending.save();
    r.finish_persistent_reserve_out(pending, saved).unwrap();
    assert_eq!(r.pr_snapshot().registrations.len(), 1);
    assert_eq!(
        Reservations::new(Some(path)).unwrap().pr_snapshot(),
        r.pr_snapshot()
    );
    // The turn is free again.
    r.persistent_reserve_out(&b(), &cdb2, &p2, &[]).unwrap();
    assert_eq!(r.pr_snapshot().generation, 2);
}

#[test]
fn aptpl_failed_save_leaves_state_and_frees_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Reservations::new(Some(dir.path().join("lu0.aptpl"))).unwrap();
    let (p, cdb) = aptpl_register(0xa);
    let PrOutStep::Save(pending) = r.begin_persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap()
    else {
        panic!("APTPL register must be saved first");
    };
    let failed = Err(std::io::Error::other("disk gone"));
    let e = r
        .finish_persistent_reserve_out(pending, failed)
        .unwrap_err();
    assert_eq!(sense_of(e), (0x44, 0x00));
    assert_eq!(r.pr_snapshot().registrations, vec![]);
    r.reserve6(&b()).unwrap();
}

#[test]
fn aptpl_power_on_during_save_keeps_what_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu0.aptpl");
    let mut r = Reservations::new(Some(path.clone())).unwrap();
    // APTPL set: the saved registration survives a power-on that came
    // while it was being written.
    let (p, cdb) = aptpl_register(0xa);
    let PrOutStep::Save(pending) = r.begin_persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap()
    else {
        panic!("APTPL register must be saved first");
    };
    r.power_on();
    let saved = pending.save();
    r.finish_persistent_reserve_out(pending, saved).unwrap();
    assert_eq!(r.pr_snapshot().registrations.len(), 1);
    // APTPL cleared by the saved state: a power-on during the save leaves
    // nothing, as a restart from that file would.
    let p = keys(0xa, 0xa).encode();
    let cdb = out_cdb(PrOutAction::Register, 0, p.len());
    let PrOutStep::Save(pending) = r.begin_persistent_reserve_out(&a(), &cdb, &p, &[]).unwrap()
    else {
        panic!("turning APTPL off must be saved first");
    };
    r.power_on();
    let saved = pending.save();
    r.finish_persistent_reserve_out(pending, saved).unwrap();
    assert_eq!(
        r.pr_snapshot(),
        Reservations::new(Some(path)).unwrap().pr_snapshot()
    );
    assert_eq!(r.pr_snapshot().registrations, vec![]);
}
