//! busrig's initiator against a third-party target: tgtd (Debian package
//! `tgt`), started on a free loopback port with its own control socket and
//! configured with tgtadm. It shows the initiator is not fitted to busrig's
//! own target: login, discovery, CHAP, digests, R2T and multi-PDU Data-In,
//! SCSI-2 and persistent reservations, and session recovery.
//!
//! Where tgtd differs from busrig's target the tests say so: it does not
//! implement READ FULL STATUS, COMPARE AND WRITE or TARGET WARM/COLD RESET,
//! and it keys PR registrations to its own per-session I_T nexus object.

mod common;

use std::time::Duration;

use busrig_initiator::{send_targets, DigestPreference, Disk, Error, Isid, Portal, SessionConfig};
use busrig_proto::scsi::pr::{PrOutAction, PrOutParams, PrType};
use bytes::Bytes;

use common::tgtd::{Tgtd, TGT_TARGET};

fn config(name: &str, isid: u8) -> SessionConfig {
    SessionConfig {
        initiator_name: format!("iqn.2026-11.io.busrig.test:{name}"),
        isid: Isid([0x80, 0, 0, 0, 1, isid]),
        command_timeout: Duration::from_secs(20),
        ..SessionConfig::default()
    }
}

async fn open(t: &Tgtd, name: &str, isid: u8) -> Disk {
    Disk::open(&t.url(""), config(name, isid))
        .await
        .expect("login to tgtd")
        .with_reset_retries(8)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| ((i / 3) as u8) ^ seed).collect::<Vec<_>>())
}

#[tokio::test]
async fn login_discovery_and_identity() {
    let Some(t) = Tgtd::start() else { return };
    let d = open(&t, "id", 1).await;
    let inq = d.inquiry().await.unwrap();
    assert_eq!(inq.device_type, 0);
    assert_eq!(d.capacity().await.unwrap().bytes, 64 << 20);
    assert!(
        d.report_luns().await.unwrap().luns.len() >= 2,
        "tgtd's LUN 0 controller and LUN 1"
    );
    let portal = Portal {
        host: "127.0.0.1".into(),
        port: t.port,
    };
    let found = send_targets(&portal, config("disc", 2)).await.unwrap();
    assert!(found.iter().any(|f| f.name == TGT_TARGET), "{found:?}");
    d.session().logout().await.unwrap();
}

#[tokio::test]
async fn large_round_trip_and_digests() {
    let Some(t) = Tgtd::start() else { return };
    for (digest, seed) in [(DigestPreference::None, 1u8), (DigestPreference::Crc32c, 2)] {
        let mut cfg = config("bulk", 3);
        cfg.proposal.header_digest = digest;
        cfg.proposal.data_digest = digest;
        let d = Disk::open(&t.url(""), cfg)
            .await
            .unwrap()
            .with_reset_retries(8)
            .with_max_transfer(4 << 20);
        assert_eq!(
            d.session().info().data_digest,
            digest == DigestPreference::Crc32c
        );
        // Larger than tgtd's FirstBurstLength and MaxRecvDataSegmentLength:
        // R2Ts for the write, many Data-In PDUs for the read.
        let data = pattern((3 << 20) + 4096, seed);
        d.write(2048, data.clone(), false).await.unwrap();
        let back = d.read(2048, (data.len() / 512) as u32).await.unwrap();
        assert!(back == data, "data read back from tgtd differs");
        d.session().logout().await.unwrap();
    }
}

#[tokio::test]
async fn chap_one_way_and_mutual() {
    let Some(t) = Tgtd::start() else { return };
    for args in [
        vec![
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            "node1",
            "--password",
            "node1-secret-123",
        ],
        vec![
            "--op", "bind", "--mode", "account", "--tid", "1", "--user", "node1",
        ],
    ] {
        t.admin(&args).unwrap();
    }
    let d = Disk::open(
        &t.chap_url("node1", "node1-secret-123", ""),
        config("chap", 4),
    )
    .await
    .expect("one-way CHAP login");
    d.session().logout().await.unwrap();
    let e = Disk::open(
        &t.chap_url("node1", "bad-secret-0000", ""),
        config("chap", 4),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::LoginRefused { class: 2, .. }), "{e}");
    assert!(Disk::open(&t.url(""), config("chap", 4)).await.is_err());
    for args in [
        vec![
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            "tgt",
            "--password",
            "tgt-secret-4567",
        ],
        vec![
            "--op",
            "bind",
            "--mode",
            "account",
            "--tid",
            "1",
            "--user",
            "tgt",
            "--outgoing",
        ],
    ] {
        t.admin(&args).unwrap();
    }
    let mutual = "?target_user=tgt&target_password=tgt-secret-4567";
    let d = Disk::open(
        &t.chap_url("node1", "node1-secret-123", mutual),
        config("chap", 4),
    )
    .await
    .expect("mutual CHAP login");
    d.session().logout().await.unwrap();
    let liar = "?target_user=tgt&target_password=not-what-tgtd-has";
    let e = Disk::open(
        &t.chap_url("node1", "node1-secret-123", liar),
        config("chap", 4),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e}");
}

#[tokio::test]
async fn scsi2_reservation_conflict() {
    let Some(t) = Tgtd::start() else { return };
    let a = open(&t, "a", 5).await;
    let b = open(&t, "b", 6).await;
    a.reserve6().await.unwrap();
    assert!(matches!(
        b.write(0, pattern(512, 1), false).await,
        Err(Error::ReservationConflict)
    ));
    a.release6().await.unwrap();
    b.write(0, pattern(512, 1), false).await.unwrap();
    b.lun_reset().await.unwrap();
    // tgtd refuses the target-wide resets (docs/semantics.md "Task management": most software targets do).
    let e = b.target_warm_reset().await.unwrap_err();
    assert!(matches!(e, Error::TaskManagement { .. }), "{e}");
}

/// fence_scsi's sequence on tgtd, each identity keeping its session open
/// (tgtd ties registrations to the session's nexus), with PREEMPT in place
/// of the PREEMPT AND ABORT tgtd lacks.
#[tokio::test]
async fn persistent_reservations_and_fencing() {
    let Some(t) = Tgtd::start() else { return };
    let n1 = open(&t, "n1", 7).await;
    let n2 = open(&t, "n2", 8).await;
    let p = |reservation_key: u64, service_action_key: u64| PrOutParams {
        reservation_key,
        service_action_key,
        ..Default::default()
    };
    let wero = Some(PrType::WriteExclusiveRegistrantsOnly);
    n1.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, None, &p(0, 0x11))
        .await
        .unwrap();
    n2.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, None, &p(0, 0x22))
        .await
        .unwrap();
    n1.pr_out(PrOutAction::Reserve, wero, &p(0x11, 0))
        .await
        .unwrap();
    let mut keys = n2.pr_read_keys().await.unwrap().keys;
    keys.sort_unstable();
    assert_eq!(keys, vec![0x11, 0x22]);
    let holder = n2.pr_read_reservation().await.unwrap().reservation.unwrap();
    assert_eq!(
        (holder.key, PrType::from_code(holder.type_code)),
        (0x11, wero)
    );
    assert!(!n2
        .pr_report_capabilities()
        .await
        .unwrap()
        .types()
        .is_empty());
    // tgtd does not implement PREEMPT AND ABORT (its service action table
    // has it commented out): ILLEGAL REQUEST, INVALID FIELD IN CDB.
    let e = n2
        .pr_out(PrOutAction::PreemptAndAbort, wero, &p(0x22, 0x11))
        .await
        .unwrap_err();
    assert_eq!(e.sense().map(|s| (s.asc, s.ascq)), Some((0x24, 0)), "{e}");
    n2.pr_out(PrOutAction::Preempt, wero, &p(0x22, 0x11))
        .await
        .unwrap();
    assert!(matches!(
        n1.write(0, pattern(512, 3), false).await,
        Err(Error::ReservationConflict)
    ));
    n1.read(0, 1).await.unwrap();
    n2.write(0, pattern(512, 3), false).await.unwrap();
    n1.pr_out(PrOutAction::Register, None, &p(0, 0x12))
        .await
        .unwrap();
    n1.pr_out(PrOutAction::Preempt, wero, &p(0x12, 0x22))
        .await
        .unwrap();
    assert_eq!(
        n2.pr_read_reservation()
            .await
            .unwrap()
            .reservation
            .unwrap()
            .key,
        0x12
    );
    n1.pr_out(PrOutAction::Release, wero, &p(0x12, 0))
        .await
        .unwrap();
    assert!(n1
        .pr_read_reservation()
        .await
        .unwrap()
        .reservation
        .is_none());
    n1.pr_out(PrOutAction::Clear, None, &p(0x12, 0))
        .await
        .unwrap();
    assert!(n2.pr_read_keys().await.unwrap().keys.is_empty());
}

#[tokio::test]
async fn session_recovery_against_tgtd() {
    let Some(t) = Tgtd::start() else { return };
    let mut cfg = config("survivor", 9);
    cfg.proposal.default_time2wait = 0;
    let d = Disk::open(&t.url(""), cfg)
        .await
        .unwrap()
        .with_reset_retries(8);
    d.pr_out(
        PrOutAction::RegisterAndIgnoreExistingKey,
        None,
        &PrOutParams {
            service_action_key: 0x5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let data = pattern(256 * 1024, 4);
    d.write(0, data.clone(), false).await.unwrap();
    d.session().drop_connection();
    assert_eq!(d.read(0, 512).await.unwrap(), data);
    assert_eq!(d.session().info().reconnects, 1);
    assert_eq!(d.pr_read_keys().await.unwrap().keys, vec![0x5]);
}
