//! A thousand hostile connections against one target (docs/limits.md
//! "Bound"): each logs in, asks for 8 MiB of reads and never reads its
//! socket; a quarter also queue out-of-order pings with data. The target's
//! memory must stay under `target_memory` plus a fixed cost per
//! connection, measured as the growth of this process's RSS.
//!
//! Alone in its file, so no other test shares the process whose RSS is
//! measured. `BUSRIG_FLOOD_CONNECTIONS` changes the number (default 1000).

mod common;

use std::time::{Duration, Instant};

use busrig_proto::pdu::{NopOut, ScsiCommand};
use bytes::Bytes;
use common::*;

const MIB: u64 = 1 << 20;
const TARGET_MEMORY: u64 = 128 * MIB;
/// What one connection costs beside the data it is charged for, on both
/// ends of this in-process test (docs/limits.md): the target's reader
/// buffer, tasks, command table and writer, the client's buffers and the
/// in-memory pipe.
const PER_CONNECTION: u64 = 256 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_thousand_connections_that_never_read_stay_under_the_bound() {
    let n: usize = std::env::var("BUSRIG_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let toml = format!(
        r#"
[[bus]]
name = "b0"

[[target]]
name = "{TARGET}"
bus = "b0"

[[target.lun]]
id = 0
size = "1MiB"

[iscsi]
connection_memory = {}
target_memory = {TARGET_MEMORY}
max_command_bytes = {}
"#,
        4 * MIB,
        4 * MIB
    );
    let h = Harness::new(&toml);
    // One session first, so the baseline includes the runtime and a LUN
    // that has been read once.
    let mut warm = h.session(INITIATOR).await;
    warm.tur_until_good(0).await;
    assert_eq!(warm.read(0, 0, 2048).await.len(), MIB as usize);
    let before = rss_bytes();

    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut opts = LoginOpts::normal(INITIATOR);
    opts.ops
        .retain(|(k, _)| *k != "MaxRecvDataSegmentLength" && *k != "MaxBurstLength");
    opts.ops.push(("MaxRecvDataSegmentLength", "262144".into()));
    opts.ops.push(("MaxBurstLength", "262144".into()));
    for i in 0..n {
        let (ours, theirs) = tokio::io::duplex(16 * 1024);
        let server = h.server.clone();
        tokio::spawn(async move { server.serve_stream(theirs, format!("flood-{i}")).await });
        let mut c = Client::over(ours, 2 + i as u32);
        c.isid = [0x80, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 7];
        c.login(&opts).await.expect("login");
        for _ in 0..8 {
            let itt = c.next_itt();
            let cmd_sn = c.next_cmd_sn();
            let h = ScsiCommand {
                immediate: false,
                final_: true,
                read: true,
                write: false,
                attr: 1,
                lun: lun_field(0),
                itt,
                expected_data_transfer_length: MIB as u32,
                cmd_sn,
                exp_stat_sn: c.exp_stat_sn,
                cdb: read10(0, 2048),
            };
            c.send(pdu(h, Bytes::new())).await;
        }
        if i % 4 == 0 {
            // Pings with data ahead of a CmdSN that never comes.
            c.next_cmd_sn();
            for _ in 0..16 {
                let nop = NopOut {
                    immediate: false,
                    lun: 0,
                    itt: c.next_itt(),
                    ttt: RESERVED,
                    cmd_sn: c.next_cmd_sn(),
                    exp_stat_sn: c.exp_stat_sn,
                };
                c.send(pdu(nop, Bytes::from(vec![1u8; 65536]))).await;
            }
        }
        clients.push(c);
    }
    // Every connection is stalled: its reads wait for memory, or it holds
    // what it may and its initiator does not read.
    let portal = h.server.portal().clone();
    let memories: Vec<_> = clients
        .iter()
        .map(|c| portal.session_memory(c.tsih).expect("session"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stalled = memories
            .iter()
            .filter(|m| m.waiting() > 0 || m.used() >= 4 * MIB)
            .count();
        if stalled == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stalled} of {n} connections stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let pool = portal.memory().used();
    let growth = rss_bytes().saturating_sub(before);
    let bound = TARGET_MEMORY + n as u64 * PER_CONNECTION;
    eprintln!(
        "{n} hostile connections in {elapsed:?}: target counts {} MiB, RSS grew {} MiB (bound {} MiB)",
        pool / MIB,
        growth / MIB,
        bound / MIB
    );
    // Counted bytes: the limit, overshot by at most one command's data
    // headers per connection and the pings that raced the last check.
    assert!(
        pool <= TARGET_MEMORY + n as u64 * 64 * 1024,
        "target counts {pool} bytes"
    );
    assert!(
        growth <= bound,
        "RSS grew by {growth} bytes, above the bound of {bound}"
    );
    drop(clients);
    warm.logout().await;
}
