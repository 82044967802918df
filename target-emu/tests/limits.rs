//! Hostile initiators against the portal's limits (docs/limits.md): a
//! client that never reads, writes whose data never comes, out-of-order
//! requests with data, and too many sockets from one address. Each test
//! performs the attack and asserts what the target holds.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use busrig_proto::pdu::{reject_reason, Header, NopOut, ScsiCommand};
use bytes::Bytes;
use common::*;
use tokio::io::AsyncReadExt;

const MIB: u64 = 1 << 20;

/// Polls `cond` until it holds; there is no event to wait for on a
/// counter, so this is the readiness check, with a deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A READ(10) of the whole 1 MiB LUN 1, sent without waiting for it.
async fn send_read(c: &mut Client, cmd_sn: u32) -> u32 {
    let itt = c.next_itt();
    let h = ScsiCommand {
        immediate: false,
        final_: true,
        read: true,
        write: false,
        attr: 1,
        lun: lun_field(1),
        itt,
        expected_data_transfer_length: MIB as u32,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: read10(0, 2048),
    };
    c.send(pdu(h, Bytes::new())).await;
    itt
}

#[tokio::test]
async fn a_client_that_never_reads_is_held_to_its_memory_bound() {
    let limit = 4 * MIB;
    let h = Harness::new(&config(
        "",
        &format!(
            "[iscsi]\nconnection_memory = {limit}\ntarget_memory = {}\n",
            64 * MIB
        ),
    ));
    let mut a = h.session(INITIATOR).await;
    let mem = h.server.portal().session_memory(a.tsih).unwrap();
    let first = a.cmd_sn;
    // The window granted at login: queue_depth 128 commands.
    let granted = first.wrapping_add(127);
    let n = 64;
    for _ in 0..n {
        let sn = a.next_cmd_sn();
        send_read(&mut a, sn).await;
    }
    // The reads beyond the bound wait for memory instead of running.
    eventually("reads wait for memory", || mem.waiting() > 0).await;
    let held = mem.used();
    assert!(
        held <= limit + 64 * 1024,
        "the connection holds {held} bytes, above its bound of {limit}"
    );
    assert!(h.server.portal().memory().used() <= limit + 64 * 1024);
    // Commands finished (their data is queued), yet the window did not
    // open: MaxCmdSN stays where login put it while the bound is reached.
    assert_eq!(mem.max_cmd_sn(), granted, "MaxCmdSN advanced at the bound");

    // Another session of the same target is served meanwhile.
    let mut b = h.session("iqn.2026-11.test:init2").await;
    b.tur_until_good(0).await;
    assert_eq!(b.read(0, 0, 8).await.len(), 4096);
    assert_eq!(mem.max_cmd_sn(), granted);
    assert!(mem.used() <= limit + 64 * 1024);

    // Once A reads, every command completes and the memory goes back.
    let mut done = 0;
    let mut data = 0u64;
    while done < n {
        let p = a.recv_skip_pings().await;
        match p.header {
            Header::DataIn(d) => {
                data += p.data.len() as u64;
                if d.status_present {
                    assert_eq!(d.status, 0);
                    done += 1;
                }
            }
            Header::ScsiResponse(r) => {
                // A unit attention may answer the first command.
                assert!(r.status == 0x02, "unexpected status {}", r.status);
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(data >= (n as u64 - 1) * MIB);
    eventually("the connection's memory is released", || mem.used() == 0).await;
    b.logout().await;
    a.logout().await;
    eventually("the target's memory is released", || {
        h.server.portal().memory().used() == 0
    })
    .await;
}

/// A WRITE of 64 KiB to LUN 1, sent with `immediate` bytes and F set when
/// no unsolicited Data-Out is to follow.
async fn send_write(c: &mut Client, immediate: usize, final_: bool) -> u32 {
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let h = ScsiCommand {
        immediate: false,
        final_,
        read: false,
        write: true,
        attr: 1,
        lun: lun_field(1),
        itt,
        expected_data_transfer_length: 65536,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: write10(0, 128),
    };
    c.send(pdu(h, Bytes::from(vec![0x5a; immediate]))).await;
    itt
}

async fn expect_data_timeout(c: &mut Client, itt: u32) {
    let started = Instant::now();
    loop {
        let p = c.recv_skip_pings().await;
        match p.header {
            // The R2T of a write whose data we never send.
            Header::R2t(r) => assert_eq!(r.itt, itt),
            Header::ScsiResponse(r) => {
                assert_eq!(r.itt, itt);
                assert_eq!(r.status, 0x02, "CHECK CONDITION");
                let sense = busrig_proto::pdu::parse_sense_segment(&p.data).unwrap();
                // ABORTED COMMAND, INITIATOR RESPONSE TIMEOUT (SPC-4 Annex D).
                assert_eq!(sense[2] & 0x0f, 0x0b);
                assert_eq!((sense[12], sense[13]), (0x4b, 0x06));
                assert!(started.elapsed() >= Duration::from_millis(900));
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn write_data_that_never_comes_aborts_the_command_and_frees_it() {
    let h = Harness::new(&config("", "[iscsi]\ndata_out_timeout_secs = 1\n"));
    let mut c = h.connect();
    c.login(
        &LoginOpts::normal(INITIATOR)
            .set("InitialR2T", "Yes")
            .set("ImmediateData", "No"),
    )
    .await
    .unwrap();
    c.tur_until_good(1).await;
    let mem = h.server.portal().session_memory(c.tsih).unwrap();
    // An R2T goes out and its data never comes.
    let itt = send_write(&mut c, 0, true).await;
    expect_data_timeout(&mut c, itt).await;
    eventually("the write's memory is released", || mem.used() == 0).await;
    // Data that comes late belongs to no command and is dropped; the
    // session goes on.
    let late = busrig_proto::pdu::DataOut {
        final_: true,
        lun: lun_field(1),
        itt,
        ttt: 0,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    c.send(pdu(late, Bytes::from(vec![0u8; 512]))).await;
    assert_eq!(c.tur(1).await, 0);

    // Unsolicited data announced (F clear) and never sent.
    let mut u = h.connect();
    u.login(&LoginOpts::normal("iqn.2026-11.test:init2"))
        .await
        .unwrap();
    u.tur_until_good(1).await;
    let umem = h.server.portal().session_memory(u.tsih).unwrap();
    let itt = send_write(&mut u, 1024, false).await;
    expect_data_timeout(&mut u, itt).await;
    eventually("the unsolicited data is released", || umem.used() == 0).await;
    assert_eq!(u.tur(1).await, 0);
    assert_eq!(h.server.portal().memory().used(), 0);
}

#[tokio::test]
async fn out_of_order_pings_with_data_are_bounded_not_queued() {
    let limit = MIB;
    let h = Harness::new(&config(
        "",
        &format!("[iscsi]\nconnection_memory = {limit}\n"),
    ));
    let mut c = h.session(INITIATOR).await;
    let mem = h.server.portal().session_memory(c.tsih).unwrap();
    let gap = c.next_cmd_sn();
    let n = 100u32;
    let mut itts = Vec::new();
    for _ in 0..n {
        let itt = c.next_itt();
        let cmd_sn = c.next_cmd_sn();
        let nop = NopOut {
            immediate: false,
            lun: 0,
            itt,
            ttt: RESERVED,
            cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
        };
        c.send(pdu(nop, Bytes::from(vec![7u8; 65536]))).await;
        itts.push(itt);
    }
    // 100 pings of 64 KiB would be 6.4 MiB waiting for CmdSN `gap`; the
    // ones beyond the connection's bound are rejected at once.
    let mut rejected = 0;
    while rejected < n as usize - (limit as usize / 65536) {
        let p = c.recv_skip_pings().await;
        match p.header {
            Header::Reject(r) => {
                assert_eq!(r.reason, reject_reason::LONG_OP_REJECT);
                rejected += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(mem.used() <= limit, "{} bytes queued", mem.used());
    }
    assert!(mem.used() <= limit);
    // The gap is filled: the queued pings are answered, the rejected ones
    // used up their CmdSN, and the window moves on past all of them.
    let nop = NopOut {
        immediate: false,
        lun: 0,
        itt: c.next_itt(),
        ttt: RESERVED,
        cmd_sn: gap,
        exp_stat_sn: c.exp_stat_sn,
    };
    c.send(pdu(nop, Bytes::new())).await;
    let mut answered = 0;
    while answered < 1 + n as usize - rejected {
        match c.recv_skip_pings().await.header {
            Header::NopIn(_) => answered += 1,
            Header::Reject(r) => {
                assert_eq!(r.reason, reject_reason::LONG_OP_REJECT);
                rejected += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(rejected >= n as usize - 16, "only {rejected} rejected");
    assert_eq!(c.tur(0).await & !0x02, 0);
    eventually("the pings' memory is released", || mem.used() == 0).await;
}

/// A TCP connection to `portal` from the source address `from`.
async fn connect_from(from: IpAddr, portal: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from, 0)).unwrap();
    s.connect(portal).await.unwrap()
}

/// Whether the target closes `s` (end of stream or reset) within 10 s.
async fn closed_by_target(s: &mut tokio::net::TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn one_source_is_capped_others_still_log_in_and_idle_sockets_time_out() {
    let h = Harness::new(&config(
        "",
        "[iscsi]\nmax_connections_per_source = 3\nlogin_timeout_secs = 2\n",
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let portal = h.server.portal().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(portal.clone().run(listener, stop.clone().cancelled_owned()));
    let one: IpAddr = "127.0.0.1".parse().unwrap();
    let two: IpAddr = "127.0.0.2".parse().unwrap();

    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from(one, addr).await);
    }
    eventually("three sockets are admitted", || {
        portal.admission().open_from(one) == 3
    })
    .await;
    let accepted_at = Instant::now();
    // The fourth from the same address is closed right after accept.
    let mut fourth = connect_from(one, addr).await;
    assert!(closed_by_target(&mut fourth).await);
    assert_eq!(portal.admission().refused(), 1);
    // Another address logs in and works.
    let mut c = Client::over(connect_from(two, addr).await, 1);
    c.login(&LoginOpts::normal(INITIATOR)).await.unwrap();
    c.tur_until_good(0).await;
    // The idle sockets never logged in: closed at the deadline.
    for s in &mut idle {
        assert!(closed_by_target(s).await);
    }
    assert!(accepted_at.elapsed() >= Duration::from_millis(1500));
    eventually("the idle sockets' places are free", || {
        portal.admission().open_from(one) == 0
    })
    .await;
    let mut again = Client::over(connect_from(one, addr).await, 2);
    again
        .login(&LoginOpts::normal("iqn.2026-11.test:init2"))
        .await
        .unwrap();
    again.logout().await;
    c.logout().await;
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn unsolicited_write_data_is_refused_while_the_target_is_full() {
    let h = Harness::new(&config(
        "",
        &format!(
            "[iscsi]\nmax_burst_length = 65536\nfirst_burst_length = 65536\nmax_command_bytes = {MIB}\n\
             connection_memory = {MIB}\ntarget_memory = {MIB}\n"
        ),
    ));
    // A fills the whole target with reads it never takes.
    let mut a = h.session(INITIATOR).await;
    let amem = h.server.portal().session_memory(a.tsih).unwrap();
    let n = 96;
    for _ in 0..n {
        let itt = a.next_itt();
        let cmd_sn = a.next_cmd_sn();
        let cmd = ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: lun_field(1),
            itt,
            expected_data_transfer_length: 32768,
            cmd_sn,
            exp_stat_sn: a.exp_stat_sn,
            cdb: read10(0, 64),
        };
        a.send(pdu(cmd, Bytes::new())).await;
    }
    eventually("A's reads wait for memory", || amem.waiting() > 0).await;
    assert!(h.server.portal().memory().used() <= MIB + 64 * 1024);

    // B's write brings 64 KiB unasked: no room for it, TASK SET FULL, and
    // its data is dropped rather than held.
    let mut b = h.connect();
    b.login(
        &LoginOpts::normal("iqn.2026-11.test:init2")
            .set("FirstBurstLength", "65536")
            .set("MaxBurstLength", "65536"),
    )
    .await
    .unwrap();
    b.tur_until_good(1).await;
    let data = vec![0x3c; 65536];
    let opts = CommandOpts {
        immediate: 4096,
        unsolicited: 65536,
    };
    let r = b
        .command_opts(1, write10(0, 128), 65536, Some(&data), false, opts)
        .await;
    assert_eq!(r.status, 0x28, "TASK SET FULL");
    let bmem = h.server.portal().session_memory(b.tsih).unwrap();
    assert_eq!(bmem.used(), 0, "the refused write's data is not held");

    // A reads its data; the target has room again and the retry succeeds.
    let mut done = 0;
    while done < n {
        let p = a.recv_skip_pings().await;
        match p.header {
            Header::DataIn(d) if d.status_present => done += 1,
            Header::DataIn(_) => {}
            Header::ScsiResponse(_) => done += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually("A's memory is released", || amem.used() == 0).await;
    let r = b
        .command_opts(1, write10(0, 128), 65536, Some(&data), false, opts)
        .await;
    assert_eq!(r.status, 0, "the retried write succeeds");
}
