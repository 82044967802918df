//! Live reconfiguration of a running bus (docs/semantics.md "Live
//! reconfiguration"): every verb of `busrig_target::reconfig`, with the
//! unit attentions it raises, sessions that keep working through it, and
//! the control plane's `/config/...` endpoints with their token and their
//! answers to bad input.

mod common;

use std::time::Duration;

use busrig_proto::pdu::{login_status, Header, ScsiCommand};
use busrig_proto::scsi::report_luns::decode_lun;
use busrig_target::config::{ChapConfig, Config, LunConfig, SizeValue, TargetConfig};
use busrig_target::control::Control;
use busrig_target::reconfig::{self, AclChange, ReconfigError};
use busrig_target::server::TargetServer;
use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

const N2: &str = "iqn.2026-11.test:init2";
const T2: &str = "iqn.2026-11.io.busrig:second";
const MIB: u64 = 1 << 20;

/// The common bus, without the failed-login delay (the CHAP test fails
/// logins on purpose).
fn bus() -> Harness {
    Harness::new(&config(
        "",
        "[iscsi.login_failures]\nfirst_delay_ms = 0\nmax_delay_ms = 0\n",
    ))
}

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

const REPORT_LUNS: [u8; 12] = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
const READ_CAPACITY10: [u8; 10] = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const RESERVE6: [u8; 6] = [0x16, 0, 0, 0, 0, 0];

/// (status, sense key, ASC/ASCQ) of one command without data.
async fn run(c: &mut Client, lun: u64, bytes: &[u8], edtl: u32) -> (u8, u8, (u8, u8)) {
    let r = c.command(lun, cdb(bytes), edtl, None, edtl > 0).await;
    (r.status, r.sense_key(), r.asc())
}

const GOOD: (u8, u8, (u8, u8)) = (0, 0, (0, 0));
const LUNS_CHANGED: (u8, u8, (u8, u8)) = (2, 6, (0x3f, 0x0e));
const CAPACITY_CHANGED: (u8, u8, (u8, u8)) = (2, 6, (0x2a, 0x09));
const NOT_SUPPORTED: (u8, u8, (u8, u8)) = (2, 5, (0x25, 0x00));

/// The LUNs REPORT LUNS lists.
async fn report_luns(c: &mut Client, lun: u64) -> Vec<u64> {
    let r = c.command(lun, cdb(&REPORT_LUNS), 4096, None, true).await;
    assert_eq!(r.status, 0, "REPORT LUNS: {r:?}");
    let len = u32::from_be_bytes(r.data[..4].try_into().unwrap()) as usize;
    r.data[8..8 + len]
        .chunks(8)
        .map(|e| decode_lun(u64::from_be_bytes(e.try_into().unwrap())).unwrap())
        .collect()
}

/// (last LBA, block length) from READ CAPACITY(10).
async fn capacity(c: &mut Client, lun: u64) -> (u32, u32) {
    let r = c.command(lun, cdb(&READ_CAPACITY10), 8, None, true).await;
    assert_eq!(r.status, 0, "READ CAPACITY: {r:?}");
    (
        u32::from_be_bytes(r.data[..4].try_into().unwrap()),
        u32::from_be_bytes(r.data[4..8].try_into().unwrap()),
    )
}

fn lun_table(id: u64, size: &str) -> LunConfig {
    serde_json::from_value(json!({ "id": id, "size": size })).unwrap()
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

/// docs/semantics.md "Live reconfiguration": LUN 3 comes and goes while a
/// session works on LUN 1; it sees 3F/0E once per change and nothing
/// else, its data stays, and REPORT LUNS follows the inventory.
#[tokio::test]
async fn a_session_on_lun_1_keeps_working_while_lun_3_comes_and_goes() {
    let h = bus();
    let portal = h.server.portal().clone();
    let mut c = h.session(INITIATOR).await;
    c.tur_until_good(1).await;
    assert_eq!(c.write(1, 8, &pattern(1)).await.status, 0);
    assert_eq!(report_luns(&mut c, 1).await, vec![0, 1]);

    let (target, def) = reconfig::add_lun(&portal, None, &lun_table(3, "1MiB"))
        .await
        .unwrap();
    assert_eq!(target, TARGET);
    assert!(def.path.exists(), "the backing file is created");
    // The next command on LUN 1 reports the change, once; the one after
    // runs as before.
    assert_eq!(run(&mut c, 1, &[0; 6], 0).await, LUNS_CHANGED);
    assert_eq!(c.read(1, 8, 8).await, pattern(1));
    assert_eq!(run(&mut c, 1, &[0; 6], 0).await, GOOD);
    assert_eq!(report_luns(&mut c, 1).await, vec![0, 1, 3]);
    // The new LUN works and brings no unit attention of its own.
    assert_eq!(c.write(3, 0, &pattern(3)).await.status, 0);
    assert_eq!(c.read(3, 0, 8).await, pattern(3));

    let r = reconfig::remove_lun(&portal, None, 3, false).await.unwrap();
    assert_eq!((r.aborted, r.completed, r.flush_error), (0, 0, None));
    assert_eq!(run(&mut c, 1, &[0; 6], 0).await, LUNS_CHANGED);
    assert_eq!(c.read(1, 8, 8).await, pattern(1));
    assert_eq!(run(&mut c, 1, &[0; 6], 0).await, GOOD);
    assert_eq!(report_luns(&mut c, 0).await, vec![0, 1]);
    assert_eq!(run(&mut c, 3, &[0; 6], 0).await, NOT_SUPPORTED);

    // The file stayed: added again, LUN 3 has its data. A REPORT LUNS
    // (here on LUN 0) clears the pending 3F/0E on every LUN.
    reconfig::add_lun(&portal, None, &lun_table(3, "1MiB"))
        .await
        .unwrap();
    assert_eq!(report_luns(&mut c, 0).await, vec![0, 1, 3]);
    assert_eq!(run(&mut c, 1, &[0; 6], 0).await, GOOD);
    assert_eq!(c.read(3, 0, 8).await, pattern(3));

    // The events record each change.
    let events = Control::new(portal.clone()).status()["events"].to_string();
    assert!(events.contains("lun 3 added"), "{events}");
    assert!(events.contains("lun 3 removed"), "{events}");
}

/// 2A/09 reaches every nexus of the resized LUN and no other LUN; READ
/// CAPACITY and the range checks follow the new size; shrinking needs
/// force.
#[tokio::test]
async fn resize_raises_capacity_data_has_changed_on_that_lun_only() {
    let h = bus();
    let portal = h.server.portal().clone();
    let mut a = h.session(INITIATOR).await;
    let mut b = h.session(N2).await;
    for c in [&mut a, &mut b] {
        c.tur_until_good(0).await;
        c.tur_until_good(1).await;
    }
    assert_eq!(capacity(&mut a, 1).await, (2047, 512));
    assert_eq!(a.write(1, 2040, &pattern(9)).await.status, 0);

    let (name, from, to) =
        reconfig::resize_lun(&portal, None, 1, &SizeValue::Text("2MiB".into()), false)
            .await
            .unwrap();
    assert_eq!((name, from, to), (TARGET.to_string(), MIB, 2 * MIB));
    for c in [&mut a, &mut b] {
        assert_eq!(run(c, 0, &[0; 6], 0).await, GOOD, "LUN 0 is untouched");
        assert_eq!(run(c, 1, &[0; 6], 0).await, CAPACITY_CHANGED);
        assert_eq!(run(c, 1, &[0; 6], 0).await, GOOD);
        assert_eq!(capacity(c, 1).await, (4095, 512));
    }
    assert_eq!(a.read(1, 2040, 8).await, pattern(9), "grown, data kept");
    assert_eq!(a.write(1, 4088, &pattern(4)).await.status, 0);
    let file = h.dir.path().join("iqn.2026-11.io.busrig_test-lun1.img");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 * MIB);

    // Shrinking loses data: refused without force, nothing changes.
    let e = reconfig::resize_lun(&portal, None, 1, &SizeValue::Bytes(MIB), false)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::Shrink { .. }), "{e}");
    assert_eq!(e.http_status(), 409);
    assert_eq!(
        run(&mut a, 1, &[0; 6], 0).await,
        GOOD,
        "no 2A/09 for a refusal"
    );
    reconfig::resize_lun(&portal, None, 1, &SizeValue::Bytes(MIB), true)
        .await
        .unwrap();
    assert_eq!(run(&mut a, 1, &[0; 6], 0).await, CAPACITY_CHANGED);
    assert_eq!(capacity(&mut a, 1).await, (2047, 512));
    let past_end = a.command(1, read10(4088, 8), 4096, None, true).await;
    assert_eq!((past_end.sense_key(), past_end.asc()), (5, (0x21, 0x00)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), MIB);
    // A size that is not whole blocks is refused.
    let e = reconfig::resize_lun(&portal, None, 1, &SizeValue::Bytes(MIB + 100), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a positive multiple"), "{e}");
}

/// A reserved LUN, or one with a command in flight, is only removed by
/// force; forced, the holder loses it and its held command is aborted.
#[tokio::test]
async fn removing_a_reserved_or_busy_lun_is_refused_unless_forced() {
    let h = bus();
    let portal = h.server.portal().clone();
    let mut holder = h.session(INITIATOR).await;
    holder.tur_until_good(1).await;
    assert_eq!(run(&mut holder, 1, &RESERVE6, 0).await, GOOD);

    let e = reconfig::remove_lun(&portal, None, 1, false)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::Reserved { .. }), "{e}");
    assert!(e.to_string().contains(INITIATOR), "{e}");
    assert_eq!(
        run(&mut holder, 1, &[0; 6], 0).await,
        GOOD,
        "nothing changed"
    );

    // A command held by a frozen path is in flight.
    portal.faults().freeze(N2);
    let mut busy = h.session(N2).await;
    let itt = busy.next_itt();
    let cmd = ScsiCommand {
        final_: true,
        attr: 1,
        lun: lun_field(0),
        itt,
        cmd_sn: busy.next_cmd_sn(),
        exp_stat_sn: busy.exp_stat_sn,
        cdb: cdb(&[0; 6]),
        ..Default::default()
    };
    busy.send(pdu(cmd, Bytes::new())).await;
    let in_flight = || portal.tasks().count(|t| t.lun == 0) == 1;
    for _ in 0..200 {
        if in_flight() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(in_flight(), "the held command is in the task set");
    let e = reconfig::remove_lun(&portal, None, 0, false)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::InFlight { count: 1, .. }), "{e}");
    let r = reconfig::remove_lun(&portal, None, 0, true).await.unwrap();
    assert_eq!(r.aborted, 1);
    portal.faults().thaw(N2);
    match busy.recv_skip_pings().await.header {
        Header::ScsiResponse(r) => {
            assert_eq!(r.itt, itt);
            assert_eq!(r.status, 0x40, "TASK ABORTED");
        }
        other => panic!("expected the aborted command's answer, got {other:?}"),
    }

    // Forced removal of the reserved LUN 1 is refused only because it is
    // the last one left; with another LUN there it goes.
    let e = reconfig::remove_lun(&portal, None, 1, true)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::LastOne(_)), "{e}");
    reconfig::add_lun(&portal, None, &lun_table(2, "1MiB"))
        .await
        .unwrap();
    reconfig::remove_lun(&portal, None, 1, true).await.unwrap();
    assert_eq!(run(&mut holder, 1, &[0; 6], 0).await, NOT_SUPPORTED);
    // LUN 2 stays, so it carries the removal's 3F/0E (not the addition's:
    // an added LU has none of its own).
    assert_eq!(run(&mut holder, 2, &[0; 6], 0).await, LUNS_CHANGED);
    assert_eq!(run(&mut holder, 2, &[0; 6], 0).await, GOOD);
    assert_eq!(report_luns(&mut holder, 2).await, vec![2]);
}

/// docs/semantics.md "Live reconfiguration": ACL and CHAP changes apply to
/// the next login; an initiator the ACL no longer admits loses its session
/// unless the change keeps sessions.
#[tokio::test]
async fn acl_and_chap_changes_affect_the_next_login() {
    let h = bus();
    let portal = h.server.portal().clone();
    let mut a = h.session(INITIATOR).await;
    let mut b = h.session(N2).await;
    a.tur_until_good(0).await;
    b.tur_until_good(0).await;

    // An ACL of one: the other initiator's session ends, its login fails.
    let r = reconfig::change_acl(&portal, None, INITIATOR, AclChange::Add, false)
        .await
        .unwrap();
    assert_eq!(r.allowed_initiators, vec![INITIATOR.to_string()]);
    assert_eq!(r.sessions_ended, 1);
    b.expect_closed().await;
    assert_eq!(a.tur(0).await, 0, "the admitted session carries on");
    let refused = |s: (u8, u8)| Err(LoginRefused(s.0, s.1));
    assert_eq!(
        h.connect().login(&LoginOpts::normal(N2)).await,
        refused(login_status::AUTHORIZATION_FAILURE)
    );
    let e = reconfig::change_acl(&portal, None, INITIATOR, AclChange::Add, false)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 409);
    let e = reconfig::change_acl(&portal, None, "not-a-name", AclChange::Add, false)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);

    // keep_sessions: the removed initiator's session stays, new logins fail.
    reconfig::change_acl(&portal, None, N2, AclChange::Add, false)
        .await
        .unwrap();
    let mut b = h.session(N2).await;
    b.tur_until_good(0).await;
    let r = reconfig::change_acl(&portal, None, N2, AclChange::Remove, true)
        .await
        .unwrap();
    assert_eq!(r.sessions_ended, 0);
    assert_eq!(b.tur(0).await, 0);
    assert_eq!(
        h.connect()
            .login(&LoginOpts {
                isid: Some([0x80, 0, 0, 0, 0, 9]),
                ..LoginOpts::normal(N2)
            })
            .await,
        refused(login_status::AUTHORIZATION_FAILURE)
    );

    // CHAP for new logins; the sessions already in are not disturbed.
    let chap: ChapConfig = serde_json::from_value(json!({
        "user": "alice", "secret": "alice-secret-12",
        "mutual_user": "bus0", "mutual_secret": "target-secret-34",
    }))
    .unwrap();
    reconfig::set_chap(&portal, None, Some(&chap))
        .await
        .unwrap();
    assert_eq!(a.tur(0).await, 0);
    let again = || LoginOpts {
        isid: Some([0x80, 0, 0, 0, 0, 7]),
        ..LoginOpts::normal(INITIATOR)
    };
    assert_eq!(
        h.connect().login(&again()).await,
        refused(login_status::AUTHENTICATION_FAILURE)
    );
    let mut o = again();
    o.chap = Some(("alice".into(), b"alice-secret-12".to_vec()));
    o.mutual = Some(("bus0".into(), b"target-secret-34".to_vec()));
    let mut c = h.connect();
    c.login(&o).await.expect("mutual CHAP login");
    c.tur_until_good(0).await;
    let weak: ChapConfig =
        serde_json::from_value(json!({ "user": "alice", "secret": "short" })).unwrap();
    let e = reconfig::set_chap(&portal, None, Some(&weak))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
    reconfig::set_chap(&portal, None, None).await.unwrap();
    let mut c = h.connect();
    c.login(&LoginOpts {
        isid: Some([0x80, 0, 0, 0, 0, 8]),
        ..LoginOpts::normal(INITIATOR)
    })
    .await
    .expect("login without CHAP once it is cleared");
}

fn second_target() -> TargetConfig {
    serde_json::from_value(json!({
        "name": T2,
        "lun": [{ "id": 0, "size": "1MiB" }, { "id": 5, "size": "2MiB", "path": "t2/five.img" }],
    }))
    .unwrap()
}

/// A target added live takes logins and lists in discovery; with a
/// session it is only removed by force, which ends the session.
#[tokio::test]
async fn targets_come_and_go_and_forced_removal_ends_their_sessions() {
    let h = bus();
    let portal = h.server.portal().clone();
    let mut first = h.session(INITIATOR).await;
    first.tur_until_good(0).await;
    let def = reconfig::add_target(&portal, &second_target())
        .await
        .unwrap();
    assert_eq!(
        def.luns.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![0, 5]
    );
    assert!(h.dir.path().join("t2/five.img").exists());
    let e = reconfig::add_target(&portal, &second_target())
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::TargetTaken(_)), "{e}");

    let mut c = h.connect();
    let o = LoginOpts {
        target: Some(T2.into()),
        ..LoginOpts::normal(N2)
    };
    c.login(&o).await.expect("login to the new target");
    c.tur_until_good(5).await;
    assert_eq!(capacity(&mut c, 5).await, (4095, 512));
    assert_eq!(report_luns(&mut c, 0).await, vec![0, 5]);
    let mut d = h.connect();
    d.login(&LoginOpts::discovery(N2)).await.unwrap();
    let listed = d.text(&[("SendTargets", "All")]).await;
    assert!(format!("{listed:?}").contains(T2), "{listed:?}");

    let e = reconfig::remove_target(&portal, T2, false)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ReconfigError::HasSessions { count: 1, .. }),
        "{e}"
    );
    assert_eq!(c.tur(5).await, 0, "a refused removal changes nothing");
    assert_eq!(reconfig::remove_target(&portal, T2, true).await.unwrap(), 1);
    c.expect_closed().await;
    assert!(h
        .server
        .sessions()
        .iter()
        .all(|s| s.target.as_deref() != Some(T2)));
    assert_eq!(
        h.connect().login(&o).await,
        Err(LoginRefused(
            login_status::NOT_FOUND.0,
            login_status::NOT_FOUND.1
        ))
    );
    // The first target never noticed.
    assert_eq!(first.tur(0).await, 0);
    let e = reconfig::remove_target(&portal, TARGET, true)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconfigError::LastOne(_)), "{e}");
    // The name is free again, and the files are still there.
    reconfig::add_target(&portal, &second_target())
        .await
        .unwrap();
}

/// The running configuration, written as TOML and read back, is the same
/// configuration, and a server starts on it with the same files.
#[tokio::test]
async fn the_saved_configuration_reads_back_as_the_running_one() {
    let h = bus();
    let portal = h.server.portal().clone();
    reconfig::add_lun(&portal, None, &lun_table(3, "4MiB"))
        .await
        .unwrap();
    reconfig::resize_lun(&portal, None, 1, &SizeValue::Text("3MiB".into()), false)
        .await
        .unwrap();
    reconfig::change_acl(&portal, None, N2, AclChange::Add, false)
        .await
        .unwrap();
    let chap: ChapConfig =
        serde_json::from_value(json!({ "user": "alice", "secret": "alice-secret-12" })).unwrap();
    reconfig::set_chap(&portal, None, Some(&chap))
        .await
        .unwrap();
    reconfig::add_target(&portal, &second_target())
        .await
        .unwrap();

    let running = reconfig::running_config(&portal).await;
    let toml = running.to_config().to_toml().unwrap();
    let back = Config::parse(&toml, "saved")
        .unwrap()
        .validate(h.dir.path())
        .unwrap();
    assert_eq!(back, running, "{toml}");
    assert_eq!(
        back.targets[0]
            .luns
            .iter()
            .map(|l| (l.id, l.size_bytes))
            .collect::<Vec<_>>(),
        vec![(0, MIB), (1, 3 * MIB), (3, 4 * MIB)]
    );
    h.server.flush().await.unwrap();
    // Every file has the saved size: a server opens them all as they are.
    let again = TargetServer::build(back).unwrap();
    let t = again.target(TARGET).unwrap();
    assert_eq!(t.lun(1).unwrap().size_bytes(), 3 * MIB);
    assert_eq!(again.target(T2).unwrap().lun_ids(), vec![0, 5]);
}

/// One `POST` to the control plane, with `token`.
async fn control_request(
    c: &Control,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> (u16, Value) {
    control_request_as(c, "POST", path, body, token).await
}

/// Every `/config/...` endpoint needs the token; bad input gets a 4xx with
/// a message that says what is wrong, and changes nothing.
#[tokio::test]
async fn config_endpoints_need_the_token_and_explain_bad_input() {
    let h = bus();
    let control = Control::new(h.server.portal().clone());
    let add = json!({ "action": "add", "lun": { "id": 3, "size": "1MiB" } });
    for path in [
        "/config/lun",
        "/config/target",
        "/config/acl",
        "/config/chap",
        "/config/save",
    ] {
        let (code, _) = control_request(&control, path, add.clone(), None).await;
        assert_eq!(code, 401, "{path} without the token");
    }
    assert_eq!(h.server.target(TARGET).unwrap().lun_ids(), vec![0, 1]);

    let cases = [
        (
            "/config/lun",
            json!({ "action": "grow" }),
            400,
            "unknown action",
        ),
        (
            "/config/lun",
            json!({ "action": "add" }),
            400,
            "missing \"lun\"",
        ),
        (
            "/config/lun",
            json!({ "action": "add", "lun": { "id": 3 } }),
            400,
            "size",
        ),
        (
            "/config/lun",
            json!({ "action": "add", "lun": { "id": 3, "size": "1MiB", "colour": 1 } }),
            400,
            "colour",
        ),
        (
            "/config/lun",
            json!({ "action": "add", "lun": { "id": 1, "size": "1MiB" } }),
            409,
            "LUN 1 already",
        ),
        (
            "/config/lun",
            json!({ "action": "add", "lun": { "id": 3, "size": "1MiB", "block_size": 1000 } }),
            400,
            "block_size",
        ),
        (
            "/config/lun",
            json!({ "action": "remove", "lun": 9 }),
            404,
            "no LUN 9",
        ),
        (
            "/config/lun",
            json!({ "action": "remove", "lun": 1, "force": "yes" }),
            400,
            "true or false",
        ),
        (
            "/config/lun",
            json!({ "action": "resize", "lun": 1, "size": "lots" }),
            400,
            "size",
        ),
        (
            "/config/lun",
            json!({ "action": "add", "target": "iqn.2026-11.x:none", "lun": { "id": 3, "size": "1MiB" } }),
            404,
            "no target named",
        ),
        (
            "/config/target",
            json!({ "action": "remove", "target": TARGET }),
            409,
            "last target",
        ),
        (
            "/config/target",
            json!({ "action": "add", "definition": { "name": "bad name", "lun": [] } }),
            400,
            "name",
        ),
        (
            "/config/acl",
            json!({ "action": "remove", "initiator": N2 }),
            409,
            "not in the ACL",
        ),
        (
            "/config/chap",
            json!({ "action": "set", "user": "u" }),
            400,
            "secret",
        ),
    ];
    for (path, body, want, says) in cases {
        let (code, answer) =
            control_request(&control, path, body.clone(), Some(CONTROL_TOKEN)).await;
        let msg = answer["error"].as_str().unwrap_or_default();
        assert_eq!(code, want, "{path} {body}: {answer}");
        assert!(
            msg.contains(says),
            "{path} {body}: {msg:?} should say {says:?}"
        );
    }
    assert_eq!(h.server.target(TARGET).unwrap().lun_ids(), vec![0, 1]);

    let (code, answer) = control_request(&control, "/config/lun", add, Some(CONTROL_TOKEN)).await;
    assert_eq!((code, answer["lun"].as_u64()), (200, Some(3)), "{answer}");
    assert_eq!(
        answer["target"], TARGET,
        "the answer names the target it chose"
    );
    let (code, answer) =
        control_request(&control, "/config/save", json!({}), Some(CONTROL_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(
        answer["toml"].as_str().unwrap().contains("id = 3"),
        "{answer}"
    );
}
