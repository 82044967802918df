//! The full feature phase data path: reads, writes with immediate data,
//! unsolicited data and R2Ts across several bursts, residuals, NOP ping and
//! keepalive (RFC 7143 §4.2.5, §11.3-§11.8, §11.18-§11.19).

mod common;

use std::time::Duration;

use busrig_proto::pdu::{Header, ScsiCommand};
use bytes::Bytes;
use common::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn write_with_immediate_data_then_read_back_in_several_data_ins() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // 4 KiB fits the immediate data allowance: no R2T, no Data-Out.
    let data = pattern(4096, 1);
    let r = c.write(0, 8, &data).await;
    assert_eq!(r.status, 0);
    assert!(r.r2ts.is_empty());
    assert!(!r.overflow && !r.underflow);
    // 16 KiB read: our MaxRecvDataSegmentLength is 8192 -> several Data-In,
    // the last one carrying GOOD status (phase collapse).
    let mut expect = vec![0u8; 4096];
    expect.extend_from_slice(&data);
    expect.extend(vec![0u8; 8192]);
    let r = c.command(0, read10(0, 32), 16384, None, true).await;
    assert_eq!(r.status, 0);
    assert_eq!(r.data_ins, 2);
    assert_eq!(r.data.len(), 16384);
    assert_eq!(&r.data[4096..8192], &data[..]);
    assert_eq!(r.data, expect);
}

#[tokio::test]
async fn write_with_unsolicited_data_and_r2ts_across_bursts() {
    // MaxBurstLength 4096 and FirstBurstLength 2048: a 20 KiB write goes as
    // 1 KiB immediate + 1 KiB unsolicited, then 18 KiB in R2Ts of 4 KiB.
    let h = Harness::default();
    let mut c = h.connect();
    let o = LoginOpts::normal(INITIATOR)
        .set("FirstBurstLength", "2048")
        .set("MaxBurstLength", "4096")
        .set("MaxOutstandingR2T", "2");
    c.login(&o).await.unwrap();
    c.tur_until_good(1).await;
    let data = pattern(20480, 7);
    let opts = CommandOpts {
        immediate: 1024,
        unsolicited: 2048,
    };
    let r = c
        .command_opts(1, write10(100, 40), 20480, Some(&data), false, opts)
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.r2ts,
        vec![
            (2048, 4096),
            (6144, 4096),
            (10240, 4096),
            (14336, 4096),
            (18432, 2048)
        ],
        "R2Ts cover the rest in MaxBurstLength pieces"
    );
    assert_eq!(c.read(1, 100, 40).await, data);

    // InitialR2T-style write: no immediate data at all, everything by R2T.
    let data = pattern(9000 / 512 * 512, 9);
    let opts = CommandOpts {
        immediate: 0,
        unsolicited: 0,
    };
    let r = c
        .command_opts(
            1,
            write10(300, (data.len() / 512) as u16),
            data.len() as u32,
            Some(&data),
            false,
            opts,
        )
        .await;
    assert_eq!(r.status, 0);
    assert_eq!(r.r2ts.first(), Some(&(0, 4096)));
    assert_eq!(c.read(1, 300, (data.len() / 512) as u16).await, data);
}

#[tokio::test]
async fn residuals_for_reads_and_writes() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // READ of one block with EDTL 200: 200 bytes, overflow 312.
    let r = c.command(0, read10(0, 1), 200, None, true).await;
    assert_eq!(
        (r.status, r.data.len(), r.overflow, r.residual),
        (0, 200, true, 312)
    );
    // EDTL 10000: one block, underflow 9488.
    let r = c.command(0, read10(0, 1), 10000, None, true).await;
    assert_eq!(
        (r.status, r.data.len(), r.underflow, r.residual),
        (0, 512, true, 9488)
    );
    // READ with EDTL 0 and no R flag: no data, overflow of the block.
    let r = c.command(0, read10(0, 1), 0, None, false).await;
    assert_eq!(
        (r.status, r.data.len(), r.overflow, r.residual),
        (0, 0, true, 512)
    );
    // WRITE of two blocks with EDTL of one: overflow of one block, and only
    // the first block written.
    let a = vec![b'a'; 1024];
    assert_eq!(c.write(0, 20, &a).await.status, 0);
    let b = vec![b'b'; 512];
    let r = c.command(0, write10(20, 2), 512, Some(&b), false).await;
    assert_eq!((r.status, r.overflow, r.residual), (0, true, 512));
    let back = c.read(0, 20, 2).await;
    assert!(back[..512].iter().all(|x| *x == b'b'));
    assert!(back[512..].iter().all(|x| *x == b'a'));
    // WRITE of one block with EDTL of two: underflow of one block.
    let bb = vec![b'c'; 1024];
    let r = c.command(0, write10(20, 1), 1024, Some(&bb), false).await;
    assert_eq!((r.status, r.underflow, r.residual), (0, true, 512));
    let back = c.read(0, 20, 2).await;
    assert!(
        back[512..].iter().all(|x| *x == b'a'),
        "second block must be untouched"
    );
}

#[tokio::test]
async fn errors_come_as_scsi_response_with_sense() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // Beyond the end of the 1 MiB LUN.
    let r = c.command(0, read10(4096, 1), 512, None, true).await;
    assert_eq!(r.status, 2);
    assert_eq!(r.sense_key(), 5);
    assert_eq!(r.asc(), (0x21, 0x00));
    assert!(r.data.is_empty());
    // A LUN that does not exist.
    let r = c.command(9, TEST_UNIT_READY, 0, None, false).await;
    assert_eq!((r.status, r.asc()), (2, (0x25, 0x00)));
}

#[tokio::test]
async fn nop_ping_echoes_data() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    let p = c.nop_ping(b"are you there").await;
    let Header::NopIn(n) = &p.header else {
        panic!("{p:?}")
    };
    assert_eq!(n.ttt, RESERVED);
    assert_eq!(&p.data[..], b"are you there");
    // A ping without data works too, and so does I/O afterwards.
    let p = c.nop_ping(b"").await;
    assert!(p.data.is_empty());
    c.tur_until_good(0).await;
}

#[tokio::test]
async fn target_keepalive_pings_and_closes_a_silent_initiator() {
    let h = Harness::new(&config(
        "",
        "[iscsi]\nnop_interval_secs = 1\nnop_timeout_secs = 1\n",
    ));
    let mut live = h.session(INITIATOR).await;
    let mut silent = h.session("iqn.2026-11.test:silent").await;
    // The live initiator answers pings and stays connected.
    let p = live
        .recv_within(Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    let Header::NopIn(n) = &p.header else {
        panic!("{p:?}")
    };
    assert_eq!(n.itt, RESERVED);
    assert_ne!(n.ttt, RESERVED);
    live.answer_ping(n.ttt, n.lun).await;
    // The silent one gets a ping, does not answer, and is closed.
    let seen = silent.expect_closed().await;
    assert!(seen
        .iter()
        .any(|p| matches!(&p.header, Header::NopIn(n) if n.ttt != RESERVED)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    live.tur_until_good(0).await;
    assert_eq!(h.server.sessions().len(), 1);
}

#[tokio::test]
async fn commands_are_delivered_in_cmdsn_order() {
    let h = Harness::default();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    // The write with CmdSN n+1 arrives first: it waits, unanswered, until
    // the read with CmdSN n fills the gap (RFC 7143 §3.2.2.1).
    let n = c.cmd_sn;
    let data = pattern(512, 3);
    let w = ScsiCommand {
        final_: true,
        write: true,
        attr: 1,
        itt: 0xa1,
        expected_data_transfer_length: 512,
        cmd_sn: n + 1,
        exp_stat_sn: c.exp_stat_sn,
        cdb: write10(50, 1),
        ..Default::default()
    };
    c.send(pdu(w, Bytes::from(data.clone()))).await;
    c.expect_silence(Duration::from_millis(200)).await;
    let r = ScsiCommand {
        final_: true,
        read: true,
        attr: 1,
        itt: 0xa0,
        expected_data_transfer_length: 512,
        cmd_sn: n,
        exp_stat_sn: c.exp_stat_sn,
        cdb: read10(50, 1),
        ..Default::default()
    };
    c.send(pdu(r, Bytes::new())).await;
    c.cmd_sn = n + 2;
    // Both run now; simple tasks may complete in either order.
    let mut read_done = false;
    let mut write_done = false;
    while !read_done || !write_done {
        let p = c.recv().await;
        match p.header {
            Header::DataIn(d) if d.itt == 0xa0 && d.status_present => read_done = true,
            Header::DataIn(d) if d.itt == 0xa0 => {}
            Header::ScsiResponse(s) if s.itt == 0xa1 => {
                assert_eq!(s.status, 0);
                write_done = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.read(0, 50, 1).await, data);
}
