//! The shared bus through the real protocol: reset scope per topology,
//! every fault verb of the control plane, a power cycle that loses exactly
//! the unflushed writes, and the writer audit.

mod common;

use std::time::{Duration, Instant};

use busrig_proto::pdu::{tmf, Header, ScsiCommand};
use busrig_target::control::Control;
use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

const N1: &str = "iqn.2026-11.test:node1";
const N2: &str = "iqn.2026-11.test:node2";

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

const TUR: [u8; 6] = [0; 6];
const RESERVE6: [u8; 6] = [0x16, 0, 0, 0, 0, 0];
const RELEASE6: [u8; 6] = [0x17, 0, 0, 0, 0, 0];
const SYNC_CACHE10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 96, 0];

fn write10_fua(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = write10(lba, blocks);
    c[1] |= 0x08;
    c
}

/// One request to the control plane, with the token, on a loopback socket.
async fn control_request(c: &Control, method: &str, path: &str, body: Value) -> (u16, Value) {
    control_request_as(c, method, path, body, Some(CONTROL_TOKEN)).await
}

async fn control_call(c: &Control, method: &str, path: &str, body: Value) -> Value {
    let (status, body) = control_request(c, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {body}");
    body
}

async fn login_to(h: &Harness, initiator: &str, target: &str) -> Client {
    let mut c = h.connect();
    let opts = LoginOpts {
        target: Some(target.into()),
        ..LoginOpts::normal(initiator)
    };
    c.login(&opts).await.expect("login");
    c.tur_until_good(0).await;
    c
}

async fn run(c: &mut Client, lun: u64, bytes: &[u8]) -> (u8, u8, (u8, u8)) {
    let r = c.command(lun, cdb(bytes), 0, None, false).await;
    (r.status, r.sense_key(), r.asc())
}

fn lun_status<'a>(status: &'a Value, target: &str, lun: u64) -> &'a Value {
    status["luns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["target"] == target && l["lun"] == lun)
        .unwrap_or_else(|| panic!("no LUN {lun} of {target} in {status}"))
}

fn holder(status: &Value, target: &str) -> Value {
    lun_status(status, target, 0)["scsi2_holder"].clone()
}

const TA: &str = "iqn.2026-11.io.busrig:a";
const TB: &str = "iqn.2026-11.io.busrig:b";
const TC: &str = "iqn.2026-11.io.busrig:c";
const TD: &str = "iqn.2026-11.io.busrig:d";

fn topology_config() -> String {
    let mut s = String::from(
        "[[bus]]\nname = \"scsi0\"\ntopology = \"scsi\"\n\n[[bus]]\nname = \"fab0\"\ntopology = \"fc-fabric\"\n",
    );
    for (t, bus) in [(TA, "scsi0"), (TB, "scsi0"), (TC, "fab0"), (TD, "fab0")] {
        s.push_str(&format!("\n[[target]]\nname = \"{t}\"\nbus = \"{bus}\"\n[[target.lun]]\nid = 0\nsize = \"1MiB\"\n"));
    }
    s
}

/// docs/semantics.md "Bus reset": on parallel SCSI a target reset is a bus reset
/// that clears every SCSI-2 reservation on the bus and posts 29/02 on every
/// nexus; on a switched fabric it reaches that target only. Persistent
/// reservations survive every reset.
#[tokio::test]
async fn reset_scope_follows_the_topology() {
    let h = Harness::new(&topology_config());
    let control = Control::new(h.server.portal().clone());
    let mut c = Vec::new();
    for t in [TA, TB, TC, TD] {
        let mut cl = login_to(&h, N1, t).await;
        assert_eq!(run(&mut cl, 0, &RESERVE6).await.0, 0, "RESERVE(6) on {t}");
        c.push(cl);
    }
    // A persistent registration on target a (PR OUT REGISTER, key 0xabc).
    let mut param = vec![0u8; 24];
    param[8..16].copy_from_slice(&0xabcu64.to_be_bytes());
    let r = c[0]
        .command(
            0,
            cdb(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
            24,
            Some(&param),
            false,
        )
        .await;
    // SPC-2 §5.5.1: PERSISTENT RESERVE OUT while a SCSI-2 reservation
    // exists conflicts, for the holder too. Release, then register.
    assert_eq!(
        r.status, 0x18,
        "PR OUT under a SCSI-2 reservation conflicts"
    );
    assert_eq!(run(&mut c[0], 0, &RELEASE6).await.0, 0);
    let r = c[0]
        .command(
            0,
            cdb(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]),
            24,
            Some(&param),
            false,
        )
        .await;
    assert_eq!(r.status, 0, "PR OUT REGISTER: {r:?}");

    let st = control.status();
    assert_eq!(holder(&st, TA), Value::Null);
    for t in [TB, TC, TD] {
        assert_eq!(holder(&st, t)["initiator"], N1, "{t} reserved");
    }

    // TARGET WARM RESET of target a, on the parallel SCSI bus: a bus reset.
    let sn = c[0].cmd_sn;
    assert_eq!(
        c[0].tmf(tmf::TARGET_WARM_RESET, 0, 0xffff_ffff, sn).await,
        tmf::RESP_COMPLETE
    );
    let st = control.status();
    assert_eq!(
        holder(&st, TB),
        Value::Null,
        "bus reset clears b's SCSI-2 reservation"
    );
    assert_eq!(
        holder(&st, TC)["initiator"],
        N1,
        "fabric target c is not on that bus"
    );
    assert_eq!(holder(&st, TD)["initiator"], N1);
    let regs = &lun_status(&st, TA, 0)["registrations"];
    assert_eq!(
        regs[0]["key"], "0x0000000000000abc",
        "PR registrations survive resets: {regs}"
    );
    assert_eq!(
        run(&mut c[1], 0, &TUR).await,
        (2, 6, (0x29, 0x02)),
        "29/02 on target b"
    );
    assert_eq!(
        run(&mut c[0], 0, &TUR).await,
        (2, 6, (0x29, 0x02)),
        "29/02 on target a"
    );
    assert_eq!(
        run(&mut c[2], 0, &TUR).await.0,
        0,
        "no unit attention on the fabric"
    );

    // On the fabric a warm reset reaches target c only: 29/03 there.
    let sn = c[2].cmd_sn;
    assert_eq!(
        c[2].tmf(tmf::TARGET_WARM_RESET, 0, 0xffff_ffff, sn).await,
        tmf::RESP_COMPLETE
    );
    let st = control.status();
    assert_eq!(holder(&st, TC), Value::Null);
    assert_eq!(
        holder(&st, TD)["initiator"],
        N1,
        "target d keeps its reservation"
    );
    assert_eq!(run(&mut c[2], 0, &TUR).await, (2, 6, (0x29, 0x03)));
    assert_eq!(run(&mut c[3], 0, &TUR).await.0, 0);

    // A bus reset from the control plane on the fabric resets each target.
    let v = control_call(&control, "POST", "/reset", json!({"bus": "fab0"})).await;
    assert_eq!(v["targets_reset"], 2);
    assert_eq!(holder(&control.status(), TD), Value::Null);
    assert_eq!(run(&mut c[3], 0, &TUR).await, (2, 6, (0x29, 0x02)));
    let events: Vec<String> = control.status()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("bus reset of scsi0")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("bus reset of fab0")),
        "{events:?}"
    );
}

fn scsi_pdu(c: &mut Client, lun: u64, bytes: &[u8]) -> (u32, busrig_proto::pdu::Pdu) {
    let itt = c.next_itt();
    let h = ScsiCommand {
        final_: true,
        attr: 1,
        lun: lun_field(lun),
        itt,
        cmd_sn: c.next_cmd_sn(),
        exp_stat_sn: c.exp_stat_sn,
        cdb: cdb(bytes),
        ..Default::default()
    };
    (itt, pdu(h, Bytes::new()))
}

#[tokio::test]
async fn freeze_holds_commands_until_thaw_and_delay_slows_them() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let mut other = h.session(N2).await;
    other.tur_until_good(0).await;

    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "freeze"}),
    )
    .await;
    let (itt, p) = scsi_pdu(&mut c, 0, &TUR);
    c.send(p).await;
    c.expect_silence(Duration::from_millis(300)).await;
    // Another initiator on the same LUN is not held.
    assert_eq!(other.tur(0).await, 0);
    let st = control.status();
    assert_eq!(st["faults"]["paths"][INITIATOR]["frozen"], true);
    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "thaw"}),
    )
    .await;
    let p = c.recv_skip_pings().await;
    match p.header {
        Header::ScsiResponse(r) => {
            assert_eq!(r.itt, itt);
            assert_eq!(r.status, 0);
        }
        other => panic!("expected the held command's response, got {other:?}"),
    }

    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "delay", "ms": 200}),
    )
    .await;
    let t0 = Instant::now();
    assert_eq!(c.tur(0).await, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "delayed by {:?}",
        t0.elapsed()
    );
    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "delay", "ms": 0}),
    )
    .await;
    assert!(
        control.status()["faults"]["paths"].get(INITIATOR).is_none(),
        "delay 0 clears the fault"
    );
}

#[tokio::test]
async fn fail_hits_the_next_media_commands_only() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "fail", "count": 2, "sense": "3/11/00"}),
    )
    .await;
    // TEST UNIT READY does not access the medium: unaffected.
    assert_eq!(c.tur(0).await, 0);
    for _ in 0..2 {
        let r = c.command(0, read10(0, 1), 512, None, true).await;
        assert_eq!(
            (r.status, r.sense_key(), r.asc()),
            (2, 3, (0x11, 0)),
            "{r:?}"
        );
    }
    let r = c.command(0, read10(0, 1), 512, None, true).await;
    assert_eq!(r.status, 0, "the third read succeeds: {r:?}");
    // A bad sense is refused with a clear error.
    let (status, body) = control_request(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "fail", "count": 1, "sense": "medium"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("KEY/ASC/ASCQ"),
        "{body}"
    );
}

#[tokio::test]
async fn drop_closes_connections_and_cut_refuses_logins_until_restore() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let mut c = h.session(INITIATOR).await;
    let mut other = h.session(N2).await;
    let v = control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "drop"}),
    )
    .await;
    assert_eq!(v["sessions_closed"], 1);
    c.expect_closed().await;
    // It may log in again at once; the other initiator never noticed.
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    other.tur_until_good(0).await;

    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "cut"}),
    )
    .await;
    c.expect_closed().await;
    let mut again = h.connect();
    assert_eq!(
        again
            .login(&LoginOpts::normal(INITIATOR))
            .await
            .unwrap_err(),
        LoginRefused(3, 1)
    );
    other.tur_until_good(0).await;
    control_call(
        &control,
        "POST",
        "/path",
        json!({"initiator": INITIATOR, "action": "restore"}),
    )
    .await;
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
}

#[tokio::test]
async fn offline_lun_is_not_ready_but_answers_inquiry() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(1).await;
    control_call(
        &control,
        "POST",
        "/lun",
        json!({"lun": 1, "action": "offline"}),
    )
    .await;
    assert_eq!(run(&mut c, 1, &TUR).await, (2, 2, (0x04, 0x12)));
    let r = c.command(1, cdb(&INQUIRY), 96, None, true).await;
    assert_eq!(r.status, 0, "INQUIRY works on an offline LUN");
    assert_eq!(c.tur(0).await, 0, "LUN 0 is unaffected");
    assert_eq!(lun_status(&control.status(), TARGET, 1)["offline"], true);
    control_call(
        &control,
        "POST",
        "/lun",
        json!({"lun": 1, "action": "online"}),
    )
    .await;
    assert_eq!(c.tur(1).await, 0);
}

/// With `write_cache = "volatile"`, a power cycle discards exactly the
/// writes that neither FUA nor SYNCHRONIZE CACHE made durable.
#[tokio::test]
async fn power_cycle_loses_exactly_the_unflushed_writes() {
    let h = Harness::new(&config("", "").replace(
        "[[target.lun]]\nid = 0\nsize = \"1MiB\"",
        "[[target.lun]]\nid = 0\nsize = \"1MiB\"\nwrite_cache = \"volatile\"",
    ));
    let control = Control::new(h.server.portal().clone());
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(0).await;
    let block = |b: u8| vec![b; 512];
    // Block 0: FUA. Block 1: cached, then SYNCHRONIZE CACHE. Block 2:
    // cached only. Block 3: FUA after a cached write of other data.
    assert_eq!(
        c.command(0, write10_fua(0, 1), 512, Some(&block(0xaa)), false)
            .await
            .status,
        0
    );
    assert_eq!(c.write(0, 1, &block(0xbb)).await.status, 0);
    assert_eq!(run(&mut c, 0, &SYNC_CACHE10).await.0, 0);
    assert_eq!(c.write(0, 2, &block(0xcc)).await.status, 0);
    assert_eq!(c.write(0, 3, &block(0x11)).await.status, 0);
    assert_eq!(
        c.command(0, write10_fua(3, 1), 512, Some(&block(0xdd)), false)
            .await
            .status,
        0
    );
    // Before the fault every acknowledged write is visible.
    let before = c.read(0, 0, 4).await;
    assert_eq!(
        before,
        [block(0xaa), block(0xbb), block(0xcc), block(0xdd)].concat()
    );
    assert_eq!(
        lun_status(&control.status(), TARGET, 0)["write_cache"]["dirty_blocks"],
        1
    );
    // The file itself does not hold block 2 yet.
    let file = std::fs::read(
        lun_status(&control.status(), TARGET, 0)["path"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&file[1024..1536], &[0u8; 512][..]);

    let v = control_call(
        &control,
        "POST",
        "/lun",
        json!({"lun": 0, "action": "power-cycle"}),
    )
    .await;
    assert_eq!(v["discarded_writes"], 1);
    assert_eq!(
        run(&mut c, 0, &TUR).await,
        (2, 6, (0x29, 0x01)),
        "29/01 after power on"
    );
    let after = c.read(0, 0, 4).await;
    assert_eq!(
        after,
        [block(0xaa), block(0xbb), vec![0u8; 512], block(0xdd)].concat()
    );

    // A LUN on the host page cache loses nothing.
    c.tur_until_good(1).await;
    assert_eq!(c.write(1, 0, &block(0x77)).await.status, 0);
    let v = control_call(
        &control,
        "POST",
        "/lun",
        json!({"lun": 1, "action": "power-cycle"}),
    )
    .await;
    assert_eq!(v["discarded_writes"], 0);
    c.tur_until_good(1).await;
    assert_eq!(c.read(1, 0, 1).await, block(0x77));
}

#[tokio::test]
async fn audit_records_each_change_of_writer_with_the_reservation_state() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let mut a = h.session(N1).await;
    let mut b = h.session(N2).await;
    a.tur_until_good(0).await;
    b.tur_until_good(0).await;
    let data = vec![5u8; 512];
    assert_eq!(run(&mut a, 0, &RESERVE6).await.0, 0);
    assert_eq!(a.write(0, 0, &data).await.status, 0);
    assert_eq!(a.write(0, 1, &data).await.status, 0);
    // b is fenced while a holds the reservation: not recorded as a writer.
    assert_eq!(b.write(0, 2, &data).await.status, 0x18);
    assert_eq!(run(&mut a, 0, &RELEASE6).await.0, 0);
    assert_eq!(b.write(0, 2, &data).await.status, 0);
    assert_eq!(a.write(0, 3, &data).await.status, 0);

    let v = control_call(&control, "GET", "/audit?lun=0", Value::Null).await;
    let runs = v["history"].as_array().unwrap();
    let who: Vec<(&str, u64, bool)> = runs
        .iter()
        .map(|r| {
            (
                r["initiator"].as_str().unwrap(),
                r["writes"].as_u64().unwrap(),
                r["reserved_by_writer"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(who, [(N1, 2, true), (N2, 1, false), (N1, 1, false)]);
    assert!(runs[0]["reservation"]
        .as_str()
        .unwrap()
        .starts_with("SCSI-2 held by iqn.2026-11.test:node1"));
    assert_eq!(runs[1]["reservation"], "none");
    assert!(runs[1]["start_ms"].as_u64() >= runs[0]["end_ms"].as_u64());
}

fn pr_out(service_action: u8, pr_type: u8, key: u64, sa_key: u64) -> ([u8; 16], Vec<u8>) {
    let mut param = vec![0u8; 24];
    param[..8].copy_from_slice(&key.to_be_bytes());
    param[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (
        cdb(&[0x5f, service_action, pr_type, 0, 0, 0, 0, 0, 24, 0]),
        param,
    )
}

/// RFC 7143 §4.4.2 and SPC-4 §5.9.2: the I_T nexus is (initiator name,
/// ISID, target port). Logging in again with the same name and ISID is the
/// same nexus and keeps its registration; another ISID is another nexus.
#[tokio::test]
async fn relogin_with_same_isid_keeps_registration_new_isid_is_new_nexus() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let isid_a = [0x80, 0, 0, 0, 0, 0x0a];
    let isid_b = [0x80, 0, 0, 0, 0, 0x0b];
    let login = |isid| LoginOpts {
        isid: Some(isid),
        ..LoginOpts::normal(N1)
    };

    let mut c = h.connect();
    c.login(&login(isid_a)).await.unwrap();
    c.tur_until_good(0).await;
    let (register, param) = pr_out(0x00, 0, 0, 0x1234);
    assert_eq!(
        c.command(0, register, 24, Some(&param), false).await.status,
        0
    );
    assert_eq!(c.logout().await, 0);

    let mut again = h.connect();
    again.login(&login(isid_a)).await.unwrap();
    again.tur_until_good(0).await;
    let (reserve, param) = pr_out(0x01, 0x01, 0x1234, 0);
    assert_eq!(
        again
            .command(0, reserve, 24, Some(&param), false)
            .await
            .status,
        0,
        "registration kept"
    );

    let mut other = h.connect();
    other.login(&login(isid_b)).await.unwrap();
    other.tur_until_good(0).await;
    let (reserve, param) = pr_out(0x01, 0x01, 0x1234, 0);
    assert_eq!(
        other
            .command(0, reserve, 24, Some(&param), false)
            .await
            .status,
        0x18,
        "new ISID: not registered"
    );

    let st = control.status();
    let lun = lun_status(&st, TARGET, 0);
    assert_eq!(lun["registrations"].as_array().unwrap().len(), 1);
    assert_eq!(lun["registrations"][0]["isid"], "80000000000a");
    assert_eq!(lun["pr_reservation"]["isid"], "80000000000a");
    assert_eq!(lun["pr_reservation"]["type"], "WE");
    let sessions = st["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s["initiator"] == N1 && s["isid"] == "80000000000b"),
        "{sessions:?}"
    );
}

/// docs/security.md: on loopback too, a fault, a reset or a LUN change
/// needs the token; reading the status does not.
#[tokio::test]
async fn changes_without_the_token_are_refused_and_change_nothing() {
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let (addr, stop, server) = serve_control(&control).await;
    let attempts = [
        ("/lun", json!({"lun": 0, "action": "offline"})),
        ("/path", json!({"initiator": N1, "action": "cut"})),
        ("/reset", json!({})),
    ];
    for (path, body) in &attempts {
        for token in [None, Some("wrong-token")] {
            let (code, v) = busrig_http::request(&addr, "POST", path, Some(body), token)
                .await
                .unwrap();
            assert_eq!(code, 401, "POST {path} with {token:?}: {v}");
        }
    }
    let (code, st) = busrig_http::request(&addr, "GET", "/status", None, None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(st["faults"]["offline_luns"], json!([]), "{st}");
    assert_eq!(st["faults"]["paths"], json!({}), "{st}");
    assert!(st["events"].as_array().unwrap().is_empty(), "{st}");
    // With the token the same request goes through.
    let (code, v) = busrig_http::request(
        &addr,
        "POST",
        "/lun",
        Some(&json!({"lun": 0, "action": "offline"})),
        Some(CONTROL_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!((code, &v["offline"]), (200, &json!(true)), "{v}");
    let _ = stop.send(());
    server.await.unwrap();
}

/// The token is checked on the request head: a client that announces a
/// megabyte and sends none of it is refused at once.
#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::default();
    let control = Control::new(h.server.portal().clone());
    let (addr, stop, server) = serve_control(&control).await;
    for auth in ["", "Authorization: Bearer wrong-token\r\n"] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /lun HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // The body timeout is 10 s: an answer within 3 s did not wait for it.
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
            .await
            .expect("the 401 arrives without the body being sent")
            .unwrap();
        let answer = String::from_utf8_lossy(&out);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let _ = stop.send(());
    server.await.unwrap();
}
