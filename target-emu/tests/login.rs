//! Login, discovery, logout and session reinstatement through the real
//! protocol (RFC 7143 §6.3, §11.12-§11.15, Appendix C).

mod common;

use std::time::Duration;

use busrig_proto::pdu::login_status;
use common::*;

fn refused(status: (u8, u8)) -> Result<busrig_proto::text::TextPairs, LoginRefused> {
    Err(LoginRefused(status.0, status.1))
}

#[tokio::test]
async fn login_none_then_io_and_logout() {
    let h = Harness::default();
    let mut c = h.connect();
    let keys = c.login(&LoginOpts::normal(INITIATOR)).await.unwrap();
    // RFC 7143 §13.9: the first response names the portal group.
    assert_eq!(keys.get("TargetPortalGroupTag"), Some("1"));
    c.tur_until_good(0).await;
    let sessions = h.server.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].initiator, INITIATOR);
    assert_eq!(sessions[0].target.as_deref(), Some(TARGET));
    assert_eq!(c.logout().await, 0);
    // The session is gone once the connection closed.
    for _ in 0..50 {
        if h.server.sessions().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session still listed after logout");
}

fn chap_config(mutual: bool) -> String {
    let chap = if mutual {
        r#"chap = { user = "alice", secret = "alice-secret-12", mutual_user = "bus0", mutual_secret = "target-secret-34" }"#
    } else {
        r#"chap = { user = "alice", secret = "alice-secret-12" }"#
    };
    config(chap, "")
}

#[tokio::test]
async fn chap_one_way() {
    let h = Harness::new(&chap_config(false));
    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.chap = Some(("alice".into(), b"alice-secret-12".to_vec()));
    c.login(&o).await.unwrap();
    c.tur_until_good(0).await;
}

#[tokio::test]
async fn chap_mutual() {
    let h = Harness::new(&chap_config(true));
    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.chap = Some(("alice".into(), b"alice-secret-12".to_vec()));
    o.mutual = Some(("bus0".into(), b"target-secret-34".to_vec()));
    c.login(&o).await.unwrap();
    c.tur_until_good(1).await;
}

#[tokio::test]
async fn chap_wrong_secret_or_name_is_refused() {
    let h = Harness::new(&chap_config(false));
    for (name, secret) in [("alice", "wrong-secret-1"), ("mallory", "alice-secret-12")] {
        let mut c = h.connect();
        let mut o = LoginOpts::normal(INITIATOR);
        o.chap = Some((name.into(), secret.as_bytes().to_vec()));
        assert_eq!(
            c.login(&o).await,
            refused(login_status::AUTHENTICATION_FAILURE)
        );
        c.expect_closed().await;
    }
    // Without CHAP at all, a target that requires it refuses too.
    let mut c = h.connect();
    assert_eq!(
        c.login(&LoginOpts::normal(INITIATOR)).await,
        refused(login_status::AUTHENTICATION_FAILURE)
    );
    assert!(h.server.sessions().is_empty());
}

#[tokio::test]
async fn mutual_chap_without_target_credentials_is_refused() {
    let h = Harness::new(&chap_config(false));
    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.chap = Some(("alice".into(), b"alice-secret-12".to_vec()));
    o.mutual = Some(("bus0".into(), b"target-secret-34".to_vec()));
    assert_eq!(
        c.login(&o).await,
        refused(login_status::AUTHENTICATION_FAILURE)
    );
}

#[tokio::test]
async fn unknown_target_acl_and_tsih_rules() {
    let h = Harness::new(&config(
        r#"allowed_initiators = ["iqn.2026-11.test:init1"]"#,
        "",
    ));
    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.target = Some("iqn.2026-11.io.busrig:nope".into());
    assert_eq!(c.login(&o).await, refused(login_status::NOT_FOUND));

    let mut c = h.connect();
    assert_eq!(
        c.login(&LoginOpts::normal("iqn.2026-11.test:intruder"))
            .await,
        refused(login_status::AUTHORIZATION_FAILURE)
    );

    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.tsih = 0x4242;
    assert_eq!(
        c.login(&o).await,
        refused(login_status::SESSION_DOES_NOT_EXIST)
    );

    // A second connection to a live session: MaxConnections is 1.
    let mut first = h.session(INITIATOR).await;
    let mut c = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.isid = Some(first.isid);
    o.tsih = first.tsih;
    assert_eq!(
        c.login(&o).await,
        refused(login_status::TOO_MANY_CONNECTIONS)
    );
    first.tur_until_good(0).await;
}

#[tokio::test]
async fn bus_initiator_limit_refuses_with_out_of_resources() {
    let h = Harness::new(&config("", "").replace("max_initiators = 4", "max_initiators = 2"));
    let mut a = h.session("iqn.2026-11.test:a").await;
    let mut b = h.session("iqn.2026-11.test:b").await;
    let mut c = h.connect();
    assert_eq!(
        c.login(&LoginOpts::normal("iqn.2026-11.test:c")).await,
        refused(login_status::OUT_OF_RESOURCES)
    );
    // A second session of an initiator already on the bus is fine.
    let mut a2 = h.session("iqn.2026-11.test:a").await;
    a.tur_until_good(0).await;
    b.tur_until_good(0).await;
    a2.tur_until_good(0).await;
    // Once b logs out, c fits.
    b.logout().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = h.connect();
    c.login(&LoginOpts::normal("iqn.2026-11.test:c"))
        .await
        .unwrap();
}

#[tokio::test]
async fn discovery_lists_only_visible_targets() {
    let tail = r#"
[[target]]
name = "iqn.2026-11.io.busrig:private"
bus = "b0"
tpgt = 7
allowed_initiators = ["iqn.2026-11.test:admin"]
[[target.lun]]
id = 0
size = "1MiB"
"#;
    let h = Harness::new(&config("", tail));
    let mut c = h.connect();
    let keys = c.login(&LoginOpts::discovery(INITIATOR)).await.unwrap();
    assert_eq!(keys.get("TargetPortalGroupTag"), None);
    let st = c.text(&[("SendTargets", "All")]).await;
    let names: Vec<_> = st.get_all("TargetName").collect();
    assert_eq!(names, vec![TARGET]);
    assert_eq!(
        st.get_all("TargetAddress").collect::<Vec<_>>(),
        vec!["127.0.0.1:3260,1"]
    );
    assert_eq!(c.logout().await, 0);

    let mut c = h.connect();
    c.login(&LoginOpts::discovery("iqn.2026-11.test:admin"))
        .await
        .unwrap();
    let st = c.text(&[("SendTargets", "All")]).await;
    let pairs: Vec<_> = st.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        pairs,
        vec![
            format!("TargetName={TARGET}"),
            "TargetAddress=127.0.0.1:3260,1".to_string(),
            "TargetName=iqn.2026-11.io.busrig:private".to_string(),
            "TargetAddress=127.0.0.1:3260,7".to_string(),
        ]
    );
    let one = c
        .text(&[("SendTargets", "iqn.2026-11.io.busrig:private")])
        .await;
    assert_eq!(one.get_all("TargetName").count(), 1);
    // A discovery session carries no SCSI commands.
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let cmd = busrig_proto::pdu::ScsiCommand {
        itt,
        cmd_sn,
        final_: true,
        attr: 1,
        ..Default::default()
    };
    c.send(pdu(cmd, bytes::Bytes::new())).await;
    let p = c.recv().await;
    assert!(
        matches!(p.header, busrig_proto::pdu::Header::Reject(_)),
        "{p:?}"
    );
    let st = c.text(&[("SendTargets", "All")]).await;
    assert_eq!(st.get_all("TargetName").count(), 2);
}

#[tokio::test]
async fn session_reinstatement_closes_the_old_session() {
    let h = Harness::default();
    let mut old = h.session(INITIATOR).await;
    old.tur_until_good(0).await;
    let old_tsih = old.tsih;
    let isid = old.isid;
    // Same initiator name and ISID, TSIH 0: reinstatement (RFC 7143 §6.3.5).
    let mut new = h.connect();
    let mut o = LoginOpts::normal(INITIATOR);
    o.isid = Some(isid);
    new.login(&o).await.unwrap();
    assert_ne!(new.tsih, old_tsih);
    old.expect_closed().await;
    // The nexus was reported lost and created again: a fresh unit
    // attention may come first, then the session works.
    new.tur_until_good(0).await;
    let sessions = h.server.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].tsih, new.tsih);
}

#[tokio::test]
async fn unsupported_version_and_non_login_pdu_during_login() {
    let h = Harness::default();
    let mut c = h.connect();
    let req = busrig_proto::pdu::LoginRequest {
        transit: true,
        csg: 0,
        nsg: 1,
        version_max: 2,
        version_min: 1,
        isid: [0x80, 0, 0, 0, 0, 9],
        itt: 1,
        ..Default::default()
    };
    let keys: busrig_proto::text::TextPairs =
        [("InitiatorName", INITIATOR), ("TargetName", TARGET)]
            .into_iter()
            .collect();
    c.send(pdu(req, bytes::Bytes::from(keys.to_bytes()))).await;
    let p = c.recv().await;
    let busrig_proto::pdu::Header::LoginResponse(r) = p.header else {
        panic!("{p:?}")
    };
    assert_eq!(
        (r.status_class, r.status_detail),
        login_status::UNSUPPORTED_VERSION
    );
    c.expect_closed().await;

    let mut c = h.connect();
    c.send(pdu(
        busrig_proto::pdu::NopOut {
            itt: 5,
            ttt: RESERVED,
            ..Default::default()
        },
        bytes::Bytes::new(),
    ))
    .await;
    let p = c.recv().await;
    let busrig_proto::pdu::Header::LoginResponse(r) = p.header else {
        panic!("{p:?}")
    };
    assert_eq!(
        (r.status_class, r.status_detail),
        login_status::INVALID_DURING_LOGIN
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn long_sendtargets_answer_comes_in_pieces() {
    // 40 targets with long names: far more text than the 512 bytes the
    // initiator accepts per PDU (RFC 7143 §11.10.4 continuation).
    let mut tail = String::new();
    for i in 0..40 {
        tail.push_str(&format!(
            "[[target]]\nname = \"iqn.2026-11.io.busrig:a-rather-long-target-name-number-{i:03}\"\nbus = \"b0\"\n[[target.lun]]\nid = 0\nsize = \"512\"\n"
        ));
    }
    let h = Harness::new(&config("", &tail));
    let mut c = h.connect();
    c.login(&LoginOpts::discovery(INITIATOR).set("MaxRecvDataSegmentLength", "512"))
        .await
        .unwrap();
    let itt = c.next_itt();
    let cmd_sn = c.next_cmd_sn();
    let keys: busrig_proto::text::TextPairs = [("SendTargets", "All")].into_iter().collect();
    let mut req = busrig_proto::pdu::TextRequest {
        final_: true,
        itt,
        ttt: RESERVED,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        ..Default::default()
    };
    c.send(pdu(req.clone(), bytes::Bytes::from(keys.to_bytes())))
        .await;
    let mut text = Vec::new();
    let mut pieces = 0;
    loop {
        let p = c.recv().await;
        let busrig_proto::pdu::Header::TextResponse(r) = p.header else {
            panic!("{p:?}")
        };
        assert!(p.data.len() <= 512);
        text.extend_from_slice(&p.data);
        pieces += 1;
        if r.final_ {
            assert_eq!(r.ttt, RESERVED);
            break;
        }
        assert!(r.continue_ && r.ttt != RESERVED);
        // Ask for the next piece with the target's TTT and no data.
        req.ttt = r.ttt;
        req.cmd_sn = c.next_cmd_sn();
        req.exp_stat_sn = c.exp_stat_sn;
        c.send(pdu(req.clone(), bytes::Bytes::new())).await;
    }
    assert!(pieces > 5, "{pieces}");
    let st = busrig_proto::text::TextPairs::parse_allow_repeats(&text).unwrap();
    assert_eq!(st.get_all("TargetName").count(), 41);
    assert_eq!(st.get_all("TargetAddress").count(), 41);
}

const ALICE: &str = r#"chap = { user = "alice", secret = "alice-secret-12" }"#;

fn alice(initiator: &str, secret: &str) -> LoginOpts {
    let mut o = LoginOpts::normal(initiator);
    o.chap = Some(("alice".into(), secret.as_bytes().to_vec()));
    o
}

/// RFC 7143 §12.1.3 leaves guessing limits to the target: each failed
/// CHAP login of one (initiator name, source) waits twice as long as the
/// previous one before its refusal, up to the cap, while a login under
/// another initiator name goes through at once. The clock is tokio's,
/// paused, so the delays are exact and the test takes no real time.
#[tokio::test(start_paused = true)]
async fn chap_guesses_wait_longer_each_time_and_other_names_do_not() {
    let h = Harness::new(&config(
        ALICE,
        "[iscsi.login_failures]\nfirst_delay_ms = 100\nmax_delay_ms = 1600\n",
    ));
    let start = tokio::time::Instant::now();
    for _ in 0..5 {
        let mut c = h.connect();
        assert_eq!(
            c.login(&alice(INITIATOR, "guess-secret-1")).await,
            refused(login_status::AUTHENTICATION_FAILURE)
        );
    }
    let guessed = start.elapsed();
    let expected = Duration::from_millis(100 + 200 + 400 + 800 + 1600);
    assert!(
        guessed >= expected && guessed < expected + Duration::from_millis(100),
        "five guesses took {guessed:?}, expected {expected:?}"
    );

    // A sixth guess waits at the cap; meanwhile another initiator name
    // logs in with the right secret, undelayed.
    let mut guess = h.connect();
    let guesser = tokio::spawn(async move {
        let t = tokio::time::Instant::now();
        let r = guess.login(&alice(INITIATOR, "guess-secret-1")).await;
        (r, t.elapsed())
    });
    tokio::task::yield_now().await;
    let t = tokio::time::Instant::now();
    let mut good = h.connect();
    good.login(&alice("iqn.2026-11.test:init2", "alice-secret-12"))
        .await
        .expect("another initiator name is not delayed");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "the good login took {:?}",
        t.elapsed()
    );
    assert!(!guesser.is_finished(), "the guess is still waiting");
    let (r, waited) = guesser.await.unwrap();
    assert_eq!(r, refused(login_status::AUTHENTICATION_FAILURE));
    assert!(
        waited >= Duration::from_millis(1600),
        "capped delay {waited:?}"
    );

    // The right secret under the guessed name still logs in at once, and
    // the success starts its count again from the first delay.
    let mut c = h.connect();
    c.login(&alice(INITIATOR, "alice-secret-12")).await.unwrap();
    let t = tokio::time::Instant::now();
    let mut c = h.connect();
    assert_eq!(
        c.login(&alice(INITIATOR, "guess-secret-1")).await,
        refused(login_status::AUTHENTICATION_FAILURE)
    );
    let after_success = t.elapsed();
    assert!(
        after_success >= Duration::from_millis(100) && after_success < Duration::from_millis(200),
        "a success resets the delay: {after_success:?}"
    );
}

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stream of refused logins writes one line per (initiator, source) and
/// interval, and that line names the initiator and the target.
#[tokio::test]
async fn refused_logins_are_logged_once_with_names() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = Harness::new(&config(
        ALICE,
        "[iscsi.login_failures]\nfirst_delay_ms = 0\nmax_delay_ms = 0\n",
    ));
    for _ in 0..50 {
        let mut c = h.connect();
        assert_eq!(
            c.login(&alice(INITIATOR, "guess-secret-1")).await,
            refused(login_status::AUTHENTICATION_FAILURE)
        );
        c.expect_closed().await;
    }
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains(INITIATOR) && lines[0].contains(TARGET),
        "{}",
        lines[0]
    );
}
