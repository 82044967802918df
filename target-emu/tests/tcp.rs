//! The server over real TCP: `TargetServer::run` with a listener on port 0
//! and a shutdown future (STYLE rule 7), and CRC32C digests end to end.

mod common;

use std::time::Duration;

use busrig_target::config::Config;
use busrig_target::server::TargetServer;
use common::*;

#[tokio::test]
async fn run_serves_tcp_until_shutdown_then_closes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&config("", ""), "test")
        .unwrap()
        .validate(dir.path())
        .unwrap();
    let server = TargetServer::build(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(listener, async {
        let _ = stop_rx.await;
    }));

    let mut d = Client::over(tokio::net::TcpStream::connect(addr).await.unwrap(), 1);
    d.login(&LoginOpts::discovery(INITIATOR)).await.unwrap();
    let st = d.text(&[("SendTargets", "All")]).await;
    // The portal address is the one the connection came in on.
    assert_eq!(st.get("TargetAddress"), Some(format!("{addr},1").as_str()));
    assert_eq!(d.logout().await, 0);

    let mut c = Client::over(tokio::net::TcpStream::connect(addr).await.unwrap(), 2);
    c.login(&LoginOpts::normal(INITIATOR)).await.unwrap();
    c.tur_until_good(0).await;
    let data = vec![0xabu8; 8192];
    assert_eq!(c.write(1, 0, &data).await.status, 0);

    stop_tx.send(()).unwrap();
    c.expect_closed().await;
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Closed means refused now.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The data reached the file.
    let file = std::fs::read(dir.path().join("iqn.2026-11.io.busrig_test-lun1.img")).unwrap();
    assert_eq!(&file[..8192], &data[..]);
}

#[tokio::test]
async fn crc32c_digests_both_ways() {
    let h = Harness::default();
    let mut c = h.connect();
    let o = LoginOpts::normal(INITIATOR)
        .set("HeaderDigest", "CRC32C")
        .set("DataDigest", "CRC32C");
    let keys = c.login(&o).await.unwrap();
    assert_eq!(keys.get("HeaderDigest"), Some("CRC32C"));
    assert_eq!(keys.get("DataDigest"), Some("CRC32C"));
    c.set_digests(true, true);
    c.tur_until_good(0).await;
    let data: Vec<u8> = (0..20480u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write(0, 40, &data).await.status, 0);
    assert_eq!(c.read(0, 40, 40).await, data);
    assert_eq!(c.nop_ping(b"digest").await.data.as_ref(), b"digest");
}

#[tokio::test]
async fn data_digest_error_on_write_data_closes_the_connection() {
    let h = Harness::default();
    let mut b = h.session("iqn.2026-11.test:bystander").await;
    let mut c = h.connect();
    let o = LoginOpts::normal(INITIATOR).set("DataDigest", "CRC32C");
    c.login(&o).await.unwrap();
    c.set_digests(false, true);
    c.tur_until_good(0).await;
    // A write whose immediate data has a wrong digest: the data is lost,
    // which ERL 0 cannot recover, so Reject then close.
    let cmd = busrig_proto::pdu::ScsiCommand {
        final_: true,
        write: true,
        attr: 1,
        itt: 0x99,
        expected_data_transfer_length: 512,
        cmd_sn: c.cmd_sn,
        cdb: write10(0, 1),
        ..Default::default()
    };
    let mut wire =
        pdu(cmd, bytes::Bytes::from(vec![1u8; 512])).to_bytes(&busrig_proto::pdu::WireConfig {
            data_digest: true,
            ..Default::default()
        });
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    c.send_raw(&wire).await;
    let seen = c.expect_closed().await;
    assert!(
        matches!(&seen[..], [p] if matches!(&p.header, busrig_proto::pdu::Header::Reject(r) if r.reason == 0x02)),
        "{seen:?}"
    );
    b.tur_until_good(0).await;
}
