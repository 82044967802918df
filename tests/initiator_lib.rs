//! busrig's initiator library against a spawned `busrig target`: login,
//! discovery, data round trips that need R2T and several Data-In PDUs,
//! digests, reservations, resets and session recovery.

mod common;

use std::time::Duration;

use busrig_initiator::scsi::pr::{PrOutAction, PrOutParams, PrType};
use busrig_initiator::{send_targets, DigestPreference, Disk, Error, IscsiUrl, Isid, SessionConfig};
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
    Disk::open(&url, cfg).await.expect("login").with_unit_attention_retries(8)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>())
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
    assert!(info.tsih != 0);
    d.session().logout().await.unwrap();
}

#[tokio::test]
async fn discovery_lists_the_default_target() {
    let t = TargetProcess::start(&[]);
    let portal = busrig_initiator::Portal { host: t.addr.ip().to_string(), port: t.addr.port() };
    let found = send_targets(&portal, config("disc", 2)).await.unwrap();
    assert!(found.iter().any(|f| f.name == DEFAULT_TARGET), "{found:?}");
}
