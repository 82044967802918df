//! busrig's initiator library against a spawned `busrig target`: login,
//! discovery, CHAP, digests, data round trips that need R2T and several
//! Data-In PDUs, pipelining, reservations, resets, COMPARE AND WRITE and
//! session recovery.

mod common;

use std::sync::Arc;
use std::time::Duration;

use busrig_initiator::{
    send_targets, DigestPreference, Disk, Error, IscsiUrl, Isid, Portal, Session, SessionConfig,
};
use busrig_proto::scsi::pr::{
    PrOutAction, PrOutParams, PrType, RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::sense::SenseKey;
use bytes::Bytes;
use common::{TargetProcess, DEFAULT_TARGET};

fn config(name: &str, isid: u8) -> SessionConfig {
    SessionConfig {
        initiator_name: format!("iqn.2026-11.io.busrig.test:{name}"),
        isid: Isid([0x80, 0, 0, 0, 0, isid]),
        command_timeout: Duration::from_secs(20),
        ..SessionConfig::default()
    }
}

async fn open(t: &TargetProcess, lun: u32, cfg: SessionConfig) -> Disk {
    let url = IscsiUrl::parse(&t.url(lun)).unwrap();
    Disk::open(&url, cfg)
        .await
        .expect("login")
        .with_reset_retries(8)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn login_inquiry_capacity_and_report_luns() {
    let t = TargetProcess::start(&[]);
    let d = open(&t, 0, config("smoke", 1)).await;
    let inq = d.inquiry().await.unwrap();
    assert_eq!(inq.device_type, 0);
    let cap = d.capacity().await.unwrap();
    assert_eq!(cap.bytes, 64 << 20, "LUN 0 is the 64 MiB quorum disk");
    let luns = d.report_luns().await.unwrap();
    assert_eq!(luns.luns.len(), 3);
    let info = d.session().info();
    assert_eq!(info.target_name.as_deref(), Some(DEFAULT_TARGET));
    assert_ne!(info.tsih, 0);
    assert_eq!(info.target_portal_group_tag, Some(1));
    d.session().logout().await.unwrap();
    assert!(matches!(d.inquiry().await, Err(Error::SessionLost(_))));
}

#[tokio::test]
async fn discovery_lists_the_default_target() {
    let t = TargetProcess::start(&[]);
    let portal = Portal {
        host: t.addr.ip().to_string(),
        port: t.addr.port(),
    };
    let found = send_targets(&portal, config("disc", 2)).await.unwrap();
    let ours = found
        .iter()
        .find(|f| f.name == DEFAULT_TARGET)
        .expect("default target listed");
    assert!(!ours.portals.is_empty());
}

/// 3 MiB + 1 block in one command with our receive segments at 4 KiB:
/// the write needs R2Ts past FirstBurstLength, the read arrives in many
/// Data-In PDUs.
#[tokio::test]
async fn large_round_trip_needs_r2t_and_many_data_in_pdus() {
    let t = TargetProcess::start(&[]);
    let mut cfg = config("bulk", 3);
    cfg.proposal.max_recv_data_segment_length = 4096;
    cfg.proposal.first_burst_length = 16384;
    let d = open(&t, 1, cfg).await.with_max_transfer(8 << 20);
    let info = d.session().info();
    assert_eq!(info.max_recv_data_segment_length, 4096);
    assert!(info.first_burst_length <= 16384);
    let data = pattern((3 << 20) + 512, 7);
    d.write(100, data.clone(), false).await.unwrap();
    let back = d.read(100, (data.len() / 512) as u32).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "data read back differs");
    d.session().logout().await.unwrap();
}

#[tokio::test]
async fn header_and_data_digests() {
    let t = TargetProcess::start(&[]);
    let mut cfg = config("digest", 4);
    cfg.proposal.header_digest = DigestPreference::Crc32c;
    cfg.proposal.data_digest = DigestPreference::Crc32c;
    let d = open(&t, 1, cfg).await;
    let info = d.session().info();
    assert!(info.header_digest && info.data_digest);
    let data = pattern(256 * 1024, 3);
    d.write(0, data.clone(), true).await.unwrap();
    assert_eq!(d.read(0, 512).await.unwrap(), data);
}

#[tokio::test]
async fn digests_from_the_url_query() {
    let t = TargetProcess::start(&[]);
    let url = IscsiUrl::parse(&format!("{}?header_digest=crc32c", t.url(1))).unwrap();
    let d = Disk::open(&url, config("urldigest", 5)).await.unwrap();
    assert!(d.session().info().header_digest);
    assert!(!d.session().info().data_digest);
    d.test_unit_ready()
        .await
        .or_else(|e| {
            if e.is_unit_attention() {
                Ok(())
            } else {
                Err(e)
            }
        })
        .unwrap();
}

#[tokio::test]
async fn pipelined_commands_from_many_tasks() {
    let t = TargetProcess::start(&[]);
    let d = Arc::new(open(&t, 2, config("pipe", 6)).await);
    d.capacity().await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..48u64 {
        let d = d.clone();
        set.spawn(async move {
            let data = pattern(8192, i as u8);
            d.write(i * 16, data.clone(), false).await.unwrap();
            assert_eq!(d.read(i * 16, 16).await.unwrap(), data, "chunk {i}");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

fn chap_config(dir: &std::path::Path, mutual: bool) -> std::path::PathBuf {
    let mutual = if mutual {
        r#", mutual_user = "bus0", mutual_secret = "bus0-secret-4567""#
    } else {
        ""
    };
    let toml = format!(
        r#"
[[bus]]
name = "bus0"
[[target]]
name = "{DEFAULT_TARGET}"
chap = {{ user = "node1", secret = "node1-secret-123"{mutual} }}
[[target.lun]]
id = 0
path = "chap.img"
size = "8MiB"
"#
    );
    let p = dir.join("chap.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

#[tokio::test]
async fn one_way_and_mutual_chap() {
    for mutual in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = chap_config(dir.path(), mutual);
        let t = TargetProcess::start_in(dir.path(), &["--config", cfg_path.to_str().unwrap()]);
        let q = if mutual {
            "?target_user=bus0&target_password=bus0-secret-4567"
        } else {
            ""
        };
        let good = IscsiUrl::parse(&format!(
            "iscsi://node1%node1-secret-123@{}/{DEFAULT_TARGET}/0{q}",
            t.addr
        ))
        .unwrap();
        let d = Disk::open(&good, config("chap", 7))
            .await
            .expect("CHAP login");
        assert_eq!(
            d.capacity()
                .await
                .map(|c| c.bytes)
                .or_else(|e| if e.is_unit_attention() {
                    Ok(8 << 20)
                } else {
                    Err(e)
                })
                .unwrap(),
            8 << 20
        );
        d.session().logout().await.unwrap();

        let bad = IscsiUrl::parse(&format!(
            "iscsi://node1%wrong-secret-000@{}/{DEFAULT_TARGET}/0{q}",
            t.addr
        ))
        .unwrap();
        let e = Disk::open(&bad, config("chap", 7)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::LoginRefused {
                    class: 2,
                    detail: 1,
                    ..
                }
            ),
            "{e}"
        );

        let none = IscsiUrl::parse(&t.url(0)).unwrap();
        assert!(
            Disk::open(&none, config("chap", 7)).await.is_err(),
            "a CHAP target refuses AuthMethod=None"
        );
        if mutual {
            // The target does not know the secret we expect it to prove.
            let liar = IscsiUrl::parse(&format!(
                "iscsi://node1%node1-secret-123@{}/{DEFAULT_TARGET}/0?target_user=bus0&target_password=other-secret-99",
                t.addr
            ))
            .unwrap();
            let e = Disk::open(&liar, config("chap", 7)).await.unwrap_err();
            assert!(matches!(e, Error::Authentication(_)), "{e}");
        }
    }
}

#[tokio::test]
async fn scsi2_reservation_conflict_and_reset_unit_attention() {
    let t = TargetProcess::start(&[]);
    let owner = open(&t, 0, config("owner", 10)).await;
    let other = Disk::new(
        Session::open(&IscsiUrl::parse(&t.url(0)).unwrap(), config("other", 11))
            .await
            .unwrap(),
        0,
    )
    .with_reset_retries(8);
    owner.reserve6().await.unwrap();
    assert!(matches!(
        other.read(0, 1).await,
        Err(Error::ReservationConflict)
    ));
    assert!(matches!(
        other.reserve10().await,
        Err(Error::ReservationConflict)
    ));
    // RELEASE from a non-holder is GOOD and does nothing (SPC-2 §7.19).
    other.release6().await.unwrap();
    assert!(matches!(
        other.write(0, pattern(512, 1), false).await,
        Err(Error::ReservationConflict)
    ));
    // A LUN reset clears SCSI-2 reservations and leaves a unit attention.
    other.lun_reset().await.unwrap();
    other.reserve6().await.unwrap();
    let strict = Disk::new(owner.session().clone(), 0);
    let e = strict.test_unit_ready().await.unwrap_err();
    assert!(e.is_unit_attention(), "{e}");
    assert!(matches!(
        strict.read(0, 1).await,
        Err(Error::ReservationConflict)
    ));
    other.release10().await.unwrap();
    owner.read(0, 1).await.unwrap();
}

/// A SCSI-2 holder whose write meets a reset's unit attention takes the
/// reservation back before the write is re-issued (issue 16, defect 3: a
/// bus reset cleared the owner's reservation and its next write landed
/// with none held, the unit attention retried silently). So the write
/// lands reserved and the other initiator's RESERVE afterwards conflicts;
/// and when the other took the reservation first, the write conflicts
/// instead of landing.
#[tokio::test]
async fn a_holders_write_after_a_reset_reserves_again_first() {
    let t = TargetProcess::start(&[]);
    let owner = open(&t, 1, config("ua-owner", 20))
        .await
        .with_reserve_after_reset(true);
    let other = open(&t, 1, config("ua-other", 21)).await;
    owner.reserve6().await.unwrap();
    other.lun_reset().await.unwrap();
    owner.write(0, pattern(512, 3), true).await.unwrap();
    assert!(
        owner.take_unit_attentions().iter().any(|s| s.asc == 0x29),
        "the owner saw the reset"
    );
    assert!(
        matches!(other.reserve6().await, Err(Error::ReservationConflict)),
        "the owner wrote without the reservation"
    );
    // The other takes the reservation after a second reset: the owner's
    // write now conflicts rather than landing.
    other.lun_reset().await.unwrap();
    other.reserve6().await.unwrap();
    assert!(matches!(
        owner.write(0, pattern(512, 4), true).await,
        Err(Error::ReservationConflict)
    ));
}

/// A SCSI-2 holder's write of several commands after a reset: only the
/// first command meets the unit attention (the target reports it once per
/// nexus), so pieces pipelined behind it landed with no reservation held
/// before the holder took it back (issue 16, chaos seed 403 `disk-scsi2`).
/// The pieces now go one at a time, so the bus audit shows every write by
/// the holder.
#[tokio::test]
async fn a_holders_pieces_after_a_reset_all_land_reserved() {
    let t = TargetProcess::start(&[]);
    let owner = open(&t, 1, config("ua-pieces", 22))
        .await
        .with_reserve_after_reset(true)
        .with_max_transfer(512);
    let other = open(&t, 1, config("ua-resetter", 23)).await;
    owner.reserve6().await.unwrap();
    // Known before the reset, so the write's first piece is the first
    // command to meet the unit attention.
    owner.block_length().await.unwrap();
    other.lun_reset().await.unwrap();
    owner.write(0, pattern(8 * 512, 5), true).await.unwrap();
    assert_eq!(owner.read(0, 8).await.unwrap(), pattern(8 * 512, 5));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args([
            "bus",
            "--control",
            &t.control.to_string(),
            "audit",
            "1",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run busrig bus audit");
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let runs = audit["history"].as_array().expect("a writer history");
    assert!(!runs.is_empty(), "{audit}");
    for r in runs {
        assert_eq!(r["reserved_by_writer"], true, "{audit}");
    }
}

#[tokio::test]
async fn warm_reset_clears_reservations_of_every_lun() {
    let t = TargetProcess::start(&[]);
    let a = open(&t, 1, config("warm-a", 12)).await;
    let b = open(&t, 1, config("warm-b", 13)).await;
    a.reserve10().await.unwrap();
    assert!(matches!(
        b.write(0, pattern(512, 2), false).await,
        Err(Error::ReservationConflict)
    ));
    b.target_warm_reset().await.unwrap();
    b.write(0, pattern(512, 2), false).await.unwrap();
    let uas = b.take_unit_attentions();
    assert!(
        uas.iter()
            .all(|s| s.key == SenseKey::UnitAttention && s.asc == 0x29),
        "{uas:?}"
    );
}

/// A quorum owner's log writes while a challenger resets the bus again and
/// again (the race a cluster lab hit): every write completes, none waits
/// for its command timeout, because the target answers a command that
/// another initiator's reset aborted with TASK ABORTED (TAS=1) and the
/// disk re-issues it like a unit attention. Before the target set TAS,
/// one of these writes went unanswered within the first few hundred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_complete_while_another_initiator_resets_the_target() {
    let t = TargetProcess::start(&[]);
    let mut cfg = config("race-writer", 14);
    cfg.command_timeout = Duration::from_secs(30);
    let writer = open(&t, 1, cfg).await;
    let resetter = open(&t, 1, config("race-resetter", 15)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let resets = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            resetter.target_warm_reset().await.unwrap();
            n += 1;
            // Irregular gaps, so resets land in every phase of a write.
            tokio::time::sleep(Duration::from_micros(200 + (n * 7919) % 2500)).await;
        }
        n
    });
    let mut aborted = 0;
    for i in 0..1500usize {
        let len = [512, 4096, 65536][i % 3];
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            writer.write(0, pattern(len, i as u8), true),
        )
        .await
        .unwrap_or_else(|_| panic!("write {i} ({len} bytes) unanswered for 10 s"));
        match r {
            Ok(()) => {}
            // Retries exhausted by a reset landing on every try: allowed,
            // as long as it is a reset's answer and not silence.
            Err(e) if e.is_reset_condition() => aborted += 1,
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let resets = resets.await.unwrap();
    assert!(resets > 50, "only {resets} resets raced the writes");
    assert!(aborted < 100, "{aborted} of 1500 writes gave up");
}

#[tokio::test]
async fn compare_and_write_matches_and_miscompares() {
    let t = TargetProcess::start(&[]);
    let d = open(&t, 1, config("caw", 14)).await;
    let old = pattern(512, 1);
    let new = pattern(512, 2);
    d.write(5, old.clone(), false).await.unwrap();
    d.compare_and_write(5, &old, &new, false).await.unwrap();
    assert_eq!(d.read(5, 1).await.unwrap(), new);
    let e = d.compare_and_write(5, &old, &new, false).await.unwrap_err();
    let s = e
        .sense()
        .copied()
        .unwrap_or_else(|| panic!("no sense: {e}"));
    assert_eq!(s.key, SenseKey::Miscompare);
    assert_eq!(
        d.read(5, 1).await.unwrap(),
        new,
        "a miscompare writes nothing"
    );
}

/// Every PR OUT service action and PR IN report, and the fence_scsi
/// sequence: both register-and-ignore, one reserves WERO, the other
/// preempts and aborts it, and the fenced nexus can read but not write.
#[tokio::test]
async fn persistent_reservations_and_fence_scsi_sequence() {
    let t = TargetProcess::start(&[]);
    let n1 = open(&t, 2, config("n1", 21)).await;
    let n2 = open(&t, 2, config("n2", 22)).await;
    let p = |reservation_key: u64, service_action_key: u64| PrOutParams {
        reservation_key,
        service_action_key,
        ..Default::default()
    };
    let caps = n1.pr_report_capabilities().await.unwrap();
    assert_eq!(caps.types().len(), 6);
    n1.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, None, &p(0, 0x11))
        .await
        .unwrap();
    n2.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, None, &p(0, 0x22))
        .await
        .unwrap();
    let wero = Some(PrType::WriteExclusiveRegistrantsOnly);
    n1.pr_out(PrOutAction::Reserve, wero, &p(0x11, 0))
        .await
        .unwrap();
    let keys = n2.pr_read_keys().await.unwrap();
    assert_eq!(keys.keys, vec![0x11, 0x22]);
    let r = n2.pr_read_reservation().await.unwrap().reservation.unwrap();
    assert_eq!((r.key, PrType::from_code(r.type_code)), (0x11, wero));
    n2.pr_out(PrOutAction::PreemptAndAbort, wero, &p(0x22, 0x11))
        .await
        .unwrap();
    // The fenced node: writes conflict, reads succeed.
    assert!(matches!(
        n1.write(0, pattern(512, 9), false).await,
        Err(Error::ReservationConflict)
    ));
    n1.read(0, 1).await.unwrap();
    let status = n1.pr_read_full_status().await.unwrap();
    assert_eq!(status.descriptors.len(), 1);
    let holder = &status.descriptors[0];
    assert!(holder.holder);
    assert_eq!(holder.transport_id.name, "iqn.2026-11.io.busrig.test:n2");
    // REGISTER with a wrong key conflicts; the fenced node registers anew.
    assert!(matches!(
        n1.pr_out(PrOutAction::Register, None, &p(0x99, 0x12)).await,
        Err(Error::ReservationConflict)
    ));
    n1.pr_out(PrOutAction::Register, None, &p(0, 0x12))
        .await
        .unwrap();
    n1.write(0, pattern(512, 9), false).await.unwrap();
    // PREEMPT (without abort) moves the reservation back.
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
    // REGISTER AND MOVE hands it to n2 under a new key.
    n2.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, None, &p(0, 0x22))
        .await
        .unwrap();
    let mv = RegisterAndMoveParams {
        reservation_key: 0x12,
        service_action_key: 0x23,
        unreg: false,
        aptpl: false,
        relative_target_port: 1,
        transport_id: TransportId::port("iqn.2026-11.io.busrig.test:n2", [0x80, 0, 0, 0, 0, 22]),
    };
    n1.pr_register_and_move(PrType::WriteExclusiveRegistrantsOnly, &mv)
        .await
        .unwrap();
    assert_eq!(
        n1.pr_read_reservation()
            .await
            .unwrap()
            .reservation
            .unwrap()
            .key,
        0x23
    );
    n2.pr_out(PrOutAction::Release, wero, &p(0x23, 0))
        .await
        .unwrap();
    assert!(n2
        .pr_read_reservation()
        .await
        .unwrap()
        .reservation
        .is_none());
    n2.pr_out(
        PrOutAction::Reserve,
        Some(PrType::ExclusiveAccess),
        &p(0x23, 0),
    )
    .await
    .unwrap();
    n2.pr_out(PrOutAction::Clear, None, &p(0x23, 0))
        .await
        .unwrap();
    assert!(n1.pr_read_keys().await.unwrap().keys.is_empty());
}

/// The target drops every connection (TARGET COLD RESET from another
/// nexus): the session logs in again with the same name and ISID, keeps
/// its registration, and commands go on working.
#[tokio::test]
async fn session_recovers_after_the_target_drops_the_connection() {
    let t = TargetProcess::start(&[]);
    let mut cfg = config("survivor", 30);
    cfg.recovery_timeout = Duration::from_secs(20);
    let a = open(&t, 1, cfg).await;
    a.pr_out(
        PrOutAction::RegisterAndIgnoreExistingKey,
        None,
        &PrOutParams {
            service_action_key: 0xa,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let isid_before = a.session().info().isid;
    let b = open(&t, 1, config("resetter", 31)).await;
    b.target_cold_reset().await.unwrap();
    // This command is sent (or queued) while the connection is gone and
    // completes after the reinstatement.
    let data = pattern(64 * 1024, 4);
    a.write(1000, data.clone(), false).await.unwrap();
    assert_eq!(a.read(1000, 128).await.unwrap(), data);
    let info = a.session().info();
    assert_eq!(info.reconnects, 1);
    assert_eq!(info.isid, isid_before);
    assert_eq!(
        a.pr_read_keys().await.unwrap().keys,
        vec![0xa],
        "registration kept across reinstatement"
    );
}

#[tokio::test]
async fn requested_connection_drop_replays_in_flight_commands() {
    let t = TargetProcess::start(&[]);
    let d = open(&t, 2, config("replay", 32)).await;
    d.capacity().await.unwrap();
    let data = pattern(1 << 20, 5);
    d.write(0, data.clone(), false).await.unwrap();
    let pending: Vec<_> = (0..8u64)
        .map(|i| {
            d.start(busrig_initiator::scsi::cdb::read(i * 256, 256, 512, false))
                .unwrap()
        })
        .collect();
    d.session().drop_connection();
    for (i, p) in pending.into_iter().enumerate() {
        match p.wait().await.unwrap() {
            busrig_initiator::Answer::Scsi(o) => {
                let got = o
                    .into_result()
                    .or_else(|e| {
                        if e.is_unit_attention() {
                            Ok(Bytes::new())
                        } else {
                            Err(e)
                        }
                    })
                    .unwrap();
                if !got.is_empty() {
                    assert_eq!(&got[..], &data[i * 131072..(i + 1) * 131072]);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(d.session().info().reconnects, 1);
}

#[tokio::test]
async fn lost_target_gives_a_clear_error() {
    let mut t = TargetProcess::start(&[]);
    let mut cfg = config("orphan", 33);
    cfg.recovery_timeout = Duration::from_secs(2);
    cfg.proposal.default_time2wait = 0;
    let d = open(&t, 1, cfg).await;
    d.capacity().await.unwrap();
    t.kill();
    let e = d.read(0, 1).await.unwrap_err();
    assert!(matches!(e, Error::SessionLost(_)), "{e}");
    assert!(e.to_string().contains("could not log in again"), "{e}");
    assert!(matches!(d.read(0, 1).await, Err(Error::SessionLost(_))));
}
