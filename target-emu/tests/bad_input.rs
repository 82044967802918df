//! Bad input from one initiator: each case checks the answer (Reject, no
//! answer, or a closed connection) and that another session on the same
//! target keeps working (RFC 7143 §6, §7.1, §11.17).

mod common;

use std::time::Duration;

use busrig_proto::pdu::{
    reject_reason, DataOut, Header, NopOut, Pdu, ScsiCommand, SnackRequest, WireConfig,
};
use bytes::Bytes;
use common::*;

/// A second session that must be unaffected.
async fn bystander(h: &Harness) -> Client {
    let mut b = h.session("iqn.2026-11.test:bystander").await;
    b.tur_until_good(0).await;
    b
}

async fn still_works(b: &mut Client) {
    let data = vec![0x5au8; 1024];
    assert_eq!(b.write(1, 64, &data).await.status, 0);
    assert_eq!(b.read(1, 64, 2).await, data);
}

fn expect_reject(p: &Pdu, reason: u8) -> [u8; 48] {
    let Header::Reject(r) = &p.header else {
        panic!("expected a Reject, got {p:?}")
    };
    assert_eq!(r.reason, reason, "{p:?}");
    assert_eq!(p.data.len(), 48, "a Reject carries the rejected BHS");
    let mut bhs = [0u8; 48];
    bhs.copy_from_slice(&p.data);
    bhs
}

#[tokio::test]
async fn unknown_opcode_is_rejected_and_the_session_continues() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c; // not an initiator opcode of RFC 7143
    bhs[16..20].copy_from_slice(&0x77u32.to_be_bytes());
    c.send_raw(&bhs).await;
    let p = c.recv().await;
    let got = expect_reject(&p, reject_reason::COMMAND_NOT_SUPPORTED);
    assert_eq!(got[0] & 0x3f, 0x1c);
    // A target opcode sent by the initiator is a protocol error.
    let nop_in = busrig_proto::pdu::NopIn {
        itt: 3,
        ttt: RESERVED,
        ..Default::default()
    };
    c.send(pdu(nop_in, Bytes::new())).await;
    expect_reject(&c.recv().await, reject_reason::PROTOCOL_ERROR);
    c.tur_until_good(0).await;
    still_works(&mut b).await;
}

#[tokio::test]
async fn snack_is_rejected_at_error_recovery_level_0() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    let s = SnackRequest {
        snack_type: 1,
        itt: RESERVED,
        ttt: RESERVED,
        exp_stat_sn: c.exp_stat_sn,
        ..Default::default()
    };
    c.send(pdu(s, Bytes::new())).await;
    expect_reject(&c.recv().await, reject_reason::PROTOCOL_ERROR);
    c.tur_until_good(0).await;
}

#[tokio::test]
async fn truncated_pdu_then_close_leaves_other_sessions_alone() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    let nop = NopOut {
        immediate: true,
        itt: 9,
        ttt: RESERVED,
        cmd_sn: c.cmd_sn,
        ..Default::default()
    };
    let wire = pdu(nop, Bytes::from(vec![1u8; 100])).to_bytes(&WireConfig::default());
    c.send_raw(&wire[..60]).await;
    c.shutdown().await;
    c.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.server.sessions().len(), 1);
    still_works(&mut b).await;
}

#[tokio::test]
async fn malformed_fields_are_rejected() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // A ping with a TTT (only answers to target pings carry one).
    let nop = NopOut {
        immediate: true,
        itt: 11,
        ttt: 5,
        cmd_sn: c.cmd_sn,
        ..Default::default()
    };
    c.send(pdu(nop, Bytes::new())).await;
    expect_reject(&c.recv().await, reject_reason::INVALID_PDU_FIELD);
    // Data with a command that has no write direction.
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let cmd = ScsiCommand {
        final_: true,
        read: true,
        attr: 1,
        itt,
        expected_data_transfer_length: 512,
        cmd_sn,
        cdb: read10(0, 1),
        ..Default::default()
    };
    c.send(pdu(cmd, Bytes::from(vec![0u8; 512]))).await;
    expect_reject(&c.recv().await, reject_reason::PROTOCOL_ERROR);
    // A CDB AHS that overruns its length.
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let cmd = ScsiCommand {
        final_: true,
        attr: 1,
        itt,
        cmd_sn,
        ..Default::default()
    };
    let bad_ahs = Bytes::from_static(&[0x00, 0x40, 0x01, 0x00, 0, 0, 0, 0]);
    c.send(Pdu {
        header: cmd.into(),
        ahs: bad_ahs,
        data: Bytes::new(),
    })
    .await;
    expect_reject(&c.recv().await, reject_reason::INVALID_PDU_FIELD);
    // The rejected commands used up their CmdSNs: the next one runs.
    c.tur_until_good(0).await;
    still_works(&mut b).await;
}

#[tokio::test]
async fn oversized_data_segment_closes_only_that_connection() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    // Claim 16 MiB of data: more than the 256 KiB we declared. Only the
    // header is sent; the target must not wait for (or allocate) the rest.
    let nop = NopOut {
        immediate: true,
        itt: 12,
        ttt: RESERVED,
        cmd_sn: c.cmd_sn,
        ..Default::default()
    };
    let mut bhs = pdu(nop, Bytes::new()).to_bytes(&WireConfig::default());
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xf0]);
    c.send_raw(&bhs).await;
    let seen = c.expect_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    expect_reject(&seen[0], reject_reason::PROTOCOL_ERROR);
    still_works(&mut b).await;
}

#[tokio::test]
async fn cmdsn_outside_the_window_is_silently_ignored() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    for cmd_sn in [c.cmd_sn.wrapping_sub(1), c.cmd_sn.wrapping_add(100_000)] {
        let cmd = ScsiCommand {
            final_: true,
            attr: 1,
            itt: c.next_itt(),
            cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            cdb: TEST_UNIT_READY,
            ..Default::default()
        };
        c.send(pdu(cmd, Bytes::new())).await;
        c.expect_silence(Duration::from_millis(200)).await;
    }
    // A command with the expected CmdSN works (libiscsi iSCSICmdSnTooHigh/Low).
    assert_eq!(c.tur(0).await, 0);
    still_works(&mut b).await;
}

#[tokio::test]
async fn data_out_beyond_edtl_is_rejected_and_the_command_dropped() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    // EDTL 1024, F=0: unsolicited Data-Out follows (InitialR2T=No).
    let cmd = ScsiCommand {
        write: true,
        attr: 1,
        itt,
        expected_data_transfer_length: 1024,
        cmd_sn,
        cdb: write10(0, 2),
        ..Default::default()
    };
    c.send(pdu(cmd, Bytes::new())).await;
    let d = DataOut {
        final_: true,
        itt,
        ttt: RESERVED,
        data_sn: 0,
        buffer_offset: 0,
        ..Default::default()
    };
    c.send(pdu(d, Bytes::from(vec![7u8; 2048]))).await;
    let bhs = expect_reject(&c.recv().await, reject_reason::PROTOCOL_ERROR);
    assert_eq!(bhs[0] & 0x3f, 0x05, "the rejected PDU is the Data-Out");
    // No response for the dropped write, nothing written, session usable.
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(c.read(0, 0, 2).await, vec![0u8; 1024]);
    assert_eq!(h.server.portal().tasks().count(|_| true), 0);
    still_works(&mut b).await;
}

#[tokio::test]
async fn bad_datasn_is_rejected() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let cmd = ScsiCommand {
        write: true,
        attr: 1,
        itt,
        expected_data_transfer_length: 1024,
        cmd_sn,
        cdb: write10(0, 2),
        ..Default::default()
    };
    c.send(pdu(cmd, Bytes::new())).await;
    let d = DataOut {
        final_: false,
        itt,
        ttt: RESERVED,
        data_sn: 27,
        buffer_offset: 0,
        ..Default::default()
    };
    c.send(pdu(d, Bytes::from(vec![7u8; 512]))).await;
    expect_reject(&c.recv().await, reject_reason::PROTOCOL_ERROR);
    // The rest of the data is discarded quietly.
    let d = DataOut {
        final_: true,
        itt,
        ttt: RESERVED,
        data_sn: 28,
        buffer_offset: 512,
        ..Default::default()
    };
    c.send(pdu(d, Bytes::from(vec![7u8; 512]))).await;
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(c.tur(0).await, 0);
    still_works(&mut b).await;
}

#[tokio::test]
async fn duplicate_itt_is_rejected_as_task_in_progress() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let itt = c.next_itt();
    // A write waiting for R2T data keeps its ITT busy.
    let sn = c.next_cmd_sn();
    let w = ScsiCommand {
        final_: true,
        write: true,
        attr: 1,
        itt,
        expected_data_transfer_length: 512,
        cmd_sn: sn,
        cdb: write10(0, 1),
        ..Default::default()
    };
    c.send(pdu(w, Bytes::new())).await;
    assert!(matches!(c.recv().await.header, Header::R2t(_)));
    let sn = c.next_cmd_sn();
    let t = ScsiCommand {
        final_: true,
        attr: 1,
        itt,
        cmd_sn: sn,
        ..Default::default()
    };
    c.send(pdu(t, Bytes::new())).await;
    expect_reject(&c.recv().await, reject_reason::TASK_IN_PROGRESS);
}

#[tokio::test]
async fn garbage_instead_of_a_login_closes_the_connection() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.connect();
    // A BHS claiming 8 MiB of data during login (limit 8192).
    let mut junk = [0xeeu8; 48];
    junk[4] = 0;
    junk[5..8].copy_from_slice(&[0x80, 0, 0]);
    c.send_raw(&junk).await;
    c.expect_closed().await;
    still_works(&mut b).await;
}

#[tokio::test]
async fn an_initiator_that_does_not_read_is_throttled_not_buffered() {
    let h = Harness::default();
    let mut b = bystander(&h).await;
    let mut c = h.session(INITIATOR).await;
    // 4000 pings of 8 KiB each: 32 MiB of answers the initiator does not
    // read at first. The target must stop reading requests once its own
    // send queue is full, so the writer below blocks.
    const PINGS: u32 = 4000;
    let mut wire = bytes::BytesMut::new();
    for i in 0..PINGS {
        let nop = NopOut {
            immediate: true,
            itt: 0x10_0000 + i,
            ttt: RESERVED,
            cmd_sn: c.cmd_sn,
            ..Default::default()
        };
        pdu(nop, Bytes::from(vec![i as u8; 8192])).encode(&WireConfig::default(), &mut wire);
    }
    let mut wr = c.take_writer();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&wire).await.unwrap();
        wr
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !writer.is_finished(),
        "the target kept reading although nobody took its answers"
    );
    still_works(&mut b).await;
    // Now read: every ping is answered, in order, and the writer finishes.
    for i in 0..PINGS {
        let p = c.recv().await;
        let Header::NopIn(n) = &p.header else {
            panic!("{p:?}")
        };
        assert_eq!(n.itt, 0x10_0000 + i);
        assert_eq!(p.data.len(), 8192);
    }
    let wr = writer.await.unwrap();
    c.give_writer(wr);
    c.tur_until_good(0).await;
}
