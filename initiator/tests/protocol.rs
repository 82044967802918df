//! The initiator's protocol paths against an in-process fake target whose
//! wire behaviour each test chooses: R2T bursts, immediate and unsolicited
//! data, Data-In split into many PDUs, target NOP-In pings, our idle
//! pings, the CmdSN window, timeouts with ABORT TASK, login redirection,
//! an asynchronous logout request, and reconnect with replay.

mod fake_target;

use std::time::Duration;

use busrig_initiator::{Disk, Error, IscsiUrl, Isid, Portal, SessionConfig};
use busrig_proto::negotiation::{OperationalValues, TargetLimits};
use bytes::Bytes;
use fake_target::{FakeTarget, Options, TARGET};

fn config() -> SessionConfig {
    SessionConfig {
        initiator_name: "iqn.2026-11.io.busrig.test:proto".into(),
        isid: Isid([0x80, 1, 2, 3, 4, 5]),
        command_timeout: Duration::from_secs(10),
        nop_interval: Duration::ZERO,
        ..SessionConfig::default()
    }
}

async fn open(t: &FakeTarget, cfg: SessionConfig) -> Disk {
    Disk::open(&IscsiUrl::parse(&t.url(0)).unwrap(), cfg)
        .await
        .expect("login to the fake target")
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| ((i * 13) as u8) ^ seed)
            .collect::<Vec<_>>(),
    )
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// InitialR2T=Yes, ImmediateData=No: every byte is asked for by R2T, in
/// MaxBurstLength bursts of Data-Out PDUs no larger than the target's
/// MaxRecvDataSegmentLength; reads come back in 3000-byte Data-In PDUs.
#[tokio::test]
async fn r2t_bursts_and_split_data_in() {
    let limits = TargetLimits {
        operational: OperationalValues {
            max_recv_data_segment_length: 4096,
            max_burst_length: 16384,
            first_burst_length: 8192,
            initial_r2t: true,
            immediate_data: false,
            ..TargetLimits::default().operational
        },
        ..TargetLimits::default()
    };
    let t = FakeTarget::start(Options {
        limits,
        data_in_segment: 3000,
        ..Options::default()
    })
    .await;
    let d = open(&t, config()).await;
    let info = d.session().info();
    assert_eq!(info.max_xmit_data_segment_length, 4096);
    assert!(info.initial_r2t && !info.immediate_data);
    let data = pattern(100 * 1024, 1);
    d.write(10, data.clone(), false).await.unwrap();
    let s = t.stats();
    assert_eq!(s.r2ts, 7, "100 KiB in 16 KiB bursts");
    assert_eq!(s.data_outs, 25, "4 KiB Data-Out PDUs");
    assert_eq!(s.unsolicited_data_outs, 0);
    assert_eq!(s.immediate_data_bytes, 0);
    let back = d.read(10, 200).await.unwrap();
    assert_eq!(back, data);
    assert!(t.stats().data_ins >= 35, "102400 bytes in 3000-byte pieces");
}

/// ImmediateData=Yes and InitialR2T=No: the first burst travels with the
/// command and as unsolicited Data-Out; only the rest needs R2Ts.
#[tokio::test]
async fn immediate_and_unsolicited_data() {
    let limits = TargetLimits {
        operational: OperationalValues {
            max_recv_data_segment_length: 8192,
            max_burst_length: 65536,
            first_burst_length: 32768,
            initial_r2t: false,
            immediate_data: true,
            ..TargetLimits::default().operational
        },
        ..TargetLimits::default()
    };
    let t = FakeTarget::start(Options {
        limits,
        separate_status: true,
        ..Options::default()
    })
    .await;
    let d = open(&t, config()).await;
    let small = pattern(24 * 1024, 2);
    d.write(0, small.clone(), false).await.unwrap();
    let s = t.stats();
    assert_eq!(s.r2ts, 0, "24 KiB fits the first burst");
    assert_eq!(s.immediate_data_bytes, 8192);
    assert_eq!(s.unsolicited_data_outs, 2);
    let big = pattern(96 * 1024, 3);
    d.write(100, big.clone(), true).await.unwrap();
    assert_eq!(
        t.stats().r2ts,
        1,
        "64 KiB beyond the 32 KiB first burst: one R2T of MaxBurstLength"
    );
    assert_eq!(d.read(0, 48).await.unwrap(), small);
    assert_eq!(d.read(100, 192).await.unwrap(), big);
}

#[tokio::test]
async fn digests_on_both_sides() {
    let t = FakeTarget::start(Options::default()).await;
    let mut cfg = config();
    cfg.proposal.header_digest = busrig_initiator::DigestPreference::Crc32c;
    cfg.proposal.data_digest = busrig_initiator::DigestPreference::Crc32c;
    let d = open(&t, cfg).await;
    assert!(d.session().info().data_digest);
    let data = pattern(70000 / 512 * 512, 4);
    d.write(1, data.clone(), false).await.unwrap();
    assert_eq!(d.read(1, (data.len() / 512) as u32).await.unwrap(), data);
}

#[tokio::test]
async fn target_ping_is_answered() {
    let t = FakeTarget::start(Options {
        ping_after_login: true,
        ..Options::default()
    })
    .await;
    let d = open(&t, config()).await;
    eventually("the NOP-Out answer to the target's ping", || {
        t.stats().ping_replies == 1
    })
    .await;
    d.test_unit_ready().await.unwrap();
}

#[tokio::test]
async fn idle_connection_is_pinged() {
    let t = FakeTarget::start(Options::default()).await;
    let mut cfg = config();
    cfg.nop_interval = Duration::from_millis(100);
    let d = open(&t, cfg).await;
    eventually("NOP-Out pings while idle", || {
        t.stats().nop_outs_from_initiator >= 3
    })
    .await;
    assert!(d.session().is_up());
    assert!(d.session().ping().await.unwrap() < Duration::from_secs(1));
}

/// Commands the target sits on keep the CmdSN window shut: with a window
/// of 2 only two are on the wire; each times out, is aborted (ABORT TASK
/// naming its tag and CmdSN), and the answer to the abort opens the window
/// for the next.
#[tokio::test]
async fn cmdsn_window_timeouts_and_abort_task() {
    let t = FakeTarget::start(Options {
        window: 2,
        hold_lba: Some(7),
        ..Options::default()
    })
    .await;
    let mut cfg = config();
    cfg.command_timeout = Duration::from_millis(400);
    let d = open(&t, cfg).await;
    d.capacity().await.unwrap();
    let pending: Vec<_> = (0..4)
        .map(|_| {
            d.start(busrig_initiator::scsi::cdb::read(7, 1, 512, false))
                .unwrap()
        })
        .collect();
    let tags: Vec<u32> = pending.iter().map(|p| p.tag()).collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        t.stats().commands,
        2 + 1,
        "READ CAPACITY plus the two the window allows"
    );
    for p in pending {
        assert!(matches!(p.wait().await, Err(Error::Timeout { .. })));
    }
    eventually("aborts for the timed-out reads", || {
        t.stats().aborts.len() >= 2
    })
    .await;
    let s = t.stats();
    assert_eq!(s.window_violations, 0);
    assert!(s.max_outstanding <= 2);
    assert!(s.aborts.iter().all(|(tag, _)| tags.contains(tag)));
    // The window is open again: other commands go through.
    d.test_unit_ready().await.unwrap();
}

#[tokio::test]
async fn explicit_abort_task() {
    let t = FakeTarget::start(Options {
        hold_lba: Some(3),
        ..Options::default()
    })
    .await;
    let d = open(&t, config()).await;
    d.capacity().await.unwrap();
    let p = d
        .start(busrig_initiator::scsi::cdb::read(3, 1, 512, false))
        .unwrap();
    let tag = p.tag();
    eventually("the held read to arrive", || t.stats().commands == 2).await;
    d.abort_task(tag).await.unwrap();
    assert!(matches!(p.wait().await, Err(Error::Aborted)));
    let (ref_tag, _) = t.stats().aborts[0];
    assert_eq!(ref_tag, tag);
    // Aborting a task the target does not know is reported as such.
    let e = d.abort_task(0x1234).await.unwrap_err();
    assert!(
        matches!(e, Error::TaskManagement { response: 1, .. }),
        "{e}"
    );
}

/// The target closes the connection when the third command arrives; the
/// initiator logs in again with the same name and ISID and replays every
/// command that was not answered, in order.
#[tokio::test]
async fn reconnect_and_replay_after_connection_loss() {
    let t = FakeTarget::start(Options {
        drop_on_command: Some(3),
        ..Options::default()
    })
    .await;
    let mut cfg = config();
    cfg.proposal.default_time2wait = 0;
    let d = open(&t, cfg).await;
    d.capacity().await.unwrap();
    let data = pattern(64 * 1024, 9);
    d.write(0, data.clone(), false).await.unwrap();
    // Command 3 is this read: it is lost with the connection and replayed.
    assert_eq!(d.read(0, 128).await.unwrap(), data);
    let s = t.stats();
    assert_eq!(s.logins.len(), 2);
    assert_eq!(s.logins[0].1, s.logins[1].1, "same ISID");
    assert_eq!(s.logins[1].2, 0, "TSIH 0: session reinstatement");
    assert_eq!(s.logins[1].0, "iqn.2026-11.io.busrig.test:proto");
    assert_eq!(d.session().info().reconnects, 1);
}

#[tokio::test]
async fn asynchronous_logout_request_reinstates_the_session() {
    let t = FakeTarget::start(Options {
        logout_request_after: Some(2),
        ..Options::default()
    })
    .await;
    let mut cfg = config();
    cfg.proposal.default_time2wait = 0;
    let d = open(&t, cfg).await;
    d.test_unit_ready().await.unwrap();
    d.test_unit_ready().await.unwrap();
    eventually("a second login", || t.stats().logins.len() == 2).await;
    d.test_unit_ready().await.unwrap();
    assert!(d
        .session()
        .take_events()
        .iter()
        .any(|e| matches!(e, busrig_initiator::Event::LogoutRequested { .. })));
}

#[tokio::test]
async fn login_redirection_is_followed() {
    let real = FakeTarget::start(Options::default()).await;
    let front = FakeTarget::start(Options {
        redirect_to: Some(real.addr.to_string()),
        ..Options::default()
    })
    .await;
    let d = open(&front, config()).await;
    assert_eq!(front.stats().redirects, 1);
    assert_eq!(real.stats().logins.len(), 1);
    assert_eq!(d.session().info().portal, real.addr.to_string());
    d.test_unit_ready().await.unwrap();
}

#[tokio::test]
async fn check_condition_and_discovery() {
    let t = FakeTarget::start(Options {
        blocks: 64,
        ..Options::default()
    })
    .await;
    let d = open(&t, config()).await;
    let e = d.read(100, 1).await.unwrap_err();
    assert_eq!(e.sense().unwrap().asc, 0x21, "{e}");
    let portal = Portal {
        host: "127.0.0.1".into(),
        port: t.addr.port(),
    };
    let found = busrig_initiator::send_targets(&portal, config())
        .await
        .unwrap();
    assert_eq!(found[0].name, TARGET);
}
