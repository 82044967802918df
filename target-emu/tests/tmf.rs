//! Task management through the real protocol (RFC 7143 §11.5, §11.6):
//! responses only once the affected commands can no longer run; commands
//! aborted by their own nexus never answered, and commands aborted by
//! another nexus answered TASK ABORTED (TAS=1, SAM-5 §5.6).

mod common;

use std::time::Duration;

use busrig_proto::pdu::{tmf, DataOut, Header, ScsiCommand};
use bytes::Bytes;
use common::*;

/// Sends a WRITE(10) of `blocks` with no immediate data and F=1, so the
/// target must ask for all of it with R2Ts. Returns (ITT, CmdSN).
async fn write_waiting_for_r2t(c: &mut Client, lun: u64, cmd_sn: u32, blocks: u16) -> (u32, u32) {
    let itt = c.next_itt();
    let w = ScsiCommand {
        final_: true,
        write: true,
        attr: 1,
        lun: lun_field(lun),
        itt,
        expected_data_transfer_length: u32::from(blocks) * 512,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: write10(0, blocks),
        ..Default::default()
    };
    c.send(pdu(w, Bytes::new())).await;
    (itt, cmd_sn)
}

/// Sends the whole Data-Out of an aborted write after the abort and checks
/// that the target discards it without an answer (RFC 7143 §11.5.1).
async fn send_late_data(c: &mut Client, itt: u32, ttt: u32, len: usize) {
    let d = DataOut {
        final_: true,
        itt,
        ttt,
        buffer_offset: 0,
        ..Default::default()
    };
    c.send(pdu(d, Bytes::from(vec![1u8; len]))).await;
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn abort_task_of_a_write_waiting_for_data() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let sn = c.next_cmd_sn();
    let (itt, sn) = write_waiting_for_r2t(&mut c, 0, sn, 4).await;
    let p = c.recv().await;
    let Header::R2t(r2t) = p.header else {
        panic!("expected R2T, got {p:?}")
    };
    assert_eq!(r2t.itt, itt);
    assert_eq!(c.tmf(tmf::ABORT_TASK, 0, itt, sn).await, tmf::RESP_COMPLETE);
    // Data for the aborted command arrives late: discarded, no answer.
    send_late_data(&mut c, itt, r2t.ttt, 2048).await;
    // Nothing was written and the session goes on.
    assert_eq!(c.read(0, 0, 4).await, vec![0u8; 2048]);
    assert_eq!(h.server.portal().tasks().count(|_| true), 0);
}

#[tokio::test]
async fn abort_task_of_a_command_waiting_for_its_cmdsn() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // CmdSN n+1 arrives before n: it waits in the queue.
    let n = c.cmd_sn;
    let itt = c.next_itt();
    let w = ScsiCommand {
        final_: true,
        write: true,
        attr: 1,
        itt,
        expected_data_transfer_length: 512,
        cmd_sn: n + 1,
        exp_stat_sn: c.exp_stat_sn,
        cdb: write10(7, 1),
        ..Default::default()
    };
    c.send(pdu(w, Bytes::from(vec![9u8; 512]))).await;
    assert_eq!(
        c.tmf(tmf::ABORT_TASK, 0, itt, n + 1).await,
        tmf::RESP_COMPLETE
    );
    // Now fill the gap: the TUR runs, the aborted write never does.
    let r = c.command(0, TEST_UNIT_READY, 0, None, false).await;
    assert_eq!(r.status, 0);
    c.cmd_sn = n + 2;
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(c.read(0, 7, 1).await, vec![0u8; 512]);
}

#[tokio::test]
async fn abort_unknown_task_and_unsupported_functions() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // A command that already completed (its CmdSN is behind the window).
    assert_eq!(
        c.tmf(tmf::ABORT_TASK, 0, 0xdead, c.cmd_sn.wrapping_sub(1))
            .await,
        tmf::RESP_NO_TASK
    );
    assert_eq!(
        c.tmf(tmf::CLEAR_ACA, 0, RESERVED, 0).await,
        tmf::RESP_NOT_SUPPORTED
    );
    assert_eq!(
        c.tmf(tmf::TASK_REASSIGN, 0, 5, 0).await,
        tmf::RESP_REASSIGN_UNSUPPORTED
    );
    assert_eq!(
        c.tmf(tmf::LOGICAL_UNIT_RESET, 9, RESERVED, 0).await,
        tmf::RESP_NO_LUN
    );
    assert_eq!(
        c.tmf(tmf::ABORT_TASK_SET, 0, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    assert_eq!(
        c.tmf(tmf::CLEAR_TASK_SET, 1, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    assert_eq!(c.tmf(42, 0, RESERVED, 0).await, tmf::RESP_REJECTED);
    c.tur_until_good(0).await;
}

#[tokio::test]
async fn lun_reset_aborts_pending_writes_and_raises_unit_attention() {
    let h = Harness::default();
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.session("iqn.2026-11.test:b").await;
    a.tur_until_good(1).await;
    b.tur_until_good(1).await;
    let sn = a.next_cmd_sn();
    let (_itt, _) = write_waiting_for_r2t(&mut a, 1, sn, 2).await;
    assert!(matches!(a.recv().await.header, Header::R2t(_)));
    assert_eq!(
        a.tmf(tmf::LOGICAL_UNIT_RESET, 1, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    assert_eq!(h.server.portal().tasks().count(|_| true), 0);
    // Every nexus sees 29/03 BUS DEVICE RESET FUNCTION OCCURRED once.
    for c in [&mut a, &mut b] {
        let r = c.command(1, TEST_UNIT_READY, 0, None, false).await;
        assert_eq!((r.status, r.sense_key(), r.asc()), (2, 6, (0x29, 0x03)));
        assert_eq!(c.tur(1).await, 0);
    }
    // LUN 0 was not reset.
    assert_eq!(b.tur(0).await, 0);
}

/// Another initiator's reset ends a's queued write with TASK ABORTED
/// status rather than silence, so a does not wait for its command timeout;
/// nothing of the write reaches the medium. Both LOGICAL UNIT RESET and
/// TARGET WARM RESET, and the control mode page says TAS=1.
#[tokio::test]
async fn another_initiators_reset_answers_the_aborted_write_task_aborted() {
    let h = Harness::default();
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.session("iqn.2026-11.test:b").await;
    a.tur_until_good(1).await;
    // MODE SENSE(6), control page: byte 5 of the page (header 4 + block
    // descriptor 8 + 5) carries TAS in bit 6.
    let r = a
        .command(
            1,
            [0x1a, 0, 0x0a, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            255,
            None,
            true,
        )
        .await;
    assert_eq!(r.status, 0);
    let page = &r.data[4 + usize::from(r.data[3])..];
    assert_eq!((page[0] & 0x3f, page[5] & 0x40), (0x0a, 0x40), "TAS is set");
    for function in [tmf::LOGICAL_UNIT_RESET, tmf::TARGET_WARM_RESET] {
        a.tur_until_good(1).await;
        b.tur_until_good(1).await;
        let sn = a.next_cmd_sn();
        let (itt, _) = write_waiting_for_r2t(&mut a, 1, sn, 2).await;
        let Header::R2t(r2t) = a.recv().await.header else {
            panic!("expected R2T")
        };
        assert_eq!(b.tmf(function, 1, RESERVED, 0).await, tmf::RESP_COMPLETE);
        let p = a.recv().await;
        let Header::ScsiResponse(resp) = p.header else {
            panic!("expected the write's response, got {p:?}")
        };
        assert_eq!((resp.itt, resp.status), (itt, 0x40), "TASK ABORTED");
        // The data a sends late is discarded without an answer.
        send_late_data(&mut a, itt, r2t.ttt, 1024).await;
        assert_eq!(h.server.portal().tasks().count(|_| true), 0);
        // The reset's unit attention, then the medium is untouched.
        let r = a.command(1, TEST_UNIT_READY, 0, None, false).await;
        assert_eq!((r.status, r.sense_key()), (2, 6));
        assert_eq!(a.read(1, 0, 2).await, vec![0u8; 1024]);
    }
}

#[tokio::test]
async fn warm_reset_on_a_shared_scsi_bus_reaches_every_target() {
    let tail = r#"
[[target]]
name = "iqn.2026-11.io.busrig:other"
bus = "b0"
[[target.lun]]
id = 0
size = "1MiB"
"#;
    let h = Harness::new(&config("", tail).replace("max_initiators = 4", "topology = \"scsi\""));
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.connect();
    let mut o = LoginOpts::normal("iqn.2026-11.test:b");
    o.target = Some("iqn.2026-11.io.busrig:other".into());
    b.login(&o).await.unwrap();
    a.tur_until_good(0).await;
    b.tur_until_good(0).await;
    assert_eq!(
        a.tmf(tmf::TARGET_WARM_RESET, 0, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    // The other target on the bus got a bus reset: 29/02.
    let r = b.command(0, TEST_UNIT_READY, 0, None, false).await;
    assert_eq!((r.status, r.asc()), (2, (0x29, 0x02)));
    let r = a.command(0, TEST_UNIT_READY, 0, None, false).await;
    assert_eq!((r.status, r.asc()), (2, (0x29, 0x02)));
}

#[tokio::test]
async fn warm_reset_on_a_fabric_reaches_one_target() {
    let tail = r#"
[[target]]
name = "iqn.2026-11.io.busrig:other"
bus = "b0"
[[target.lun]]
id = 0
size = "1MiB"
"#;
    let h = Harness::new(&config("", tail));
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.connect();
    let mut o = LoginOpts::normal("iqn.2026-11.test:b");
    o.target = Some("iqn.2026-11.io.busrig:other".into());
    b.login(&o).await.unwrap();
    a.tur_until_good(0).await;
    b.tur_until_good(0).await;
    assert_eq!(
        a.tmf(tmf::TARGET_WARM_RESET, 0, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    assert_eq!(b.tur(0).await, 0);
    let r = a.command(0, TEST_UNIT_READY, 0, None, false).await;
    assert_eq!((r.status, r.asc()), (2, (0x29, 0x03)));
}

#[tokio::test]
async fn cold_reset_answers_then_closes_every_session_of_the_target() {
    let h = Harness::default();
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.session("iqn.2026-11.test:b").await;
    a.tur_until_good(0).await;
    assert_eq!(
        a.tmf(tmf::TARGET_COLD_RESET, 0, RESERVED, 0).await,
        tmf::RESP_COMPLETE
    );
    a.expect_closed().await;
    b.expect_closed().await;
    for _ in 0..50 {
        if h.server.sessions().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.server.sessions().is_empty());
    // The target takes new sessions afterwards.
    let mut c = h.session("iqn.2026-11.test:a").await;
    c.tur_until_good(0).await;
}
