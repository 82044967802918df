//! The `mscs2003` profile end to end: a two-node `disk-scsi2` cluster on a
//! parallel SCSI bus with Windows Server 2003's timing (heartbeat 1.2 s,
//! regroup after 6 misses, renew 3 s, challenge wait 7 s, online 10 s after
//! the reset). The quorum owner is killed; the survivor's log must show the
//! challenge as MSCS runs it — bus reset, 7 s wait, RESERVE, online 10 s
//! after the reset — and the takeover time is measured.
//!
//! This test takes about a minute of wall time (the profile's own numbers).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use busrig_cluster::admin;
use busrig_cluster::config::ClusterConfig;

fn busrig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(args)
        .output()
        .expect("run busrig")
}

fn ok(out: &Output, what: &str, dir: &Path) {
    if !out.status.success() {
        let mut logs = String::new();
        for n in ["NODE1", "NODE2", "target"] {
            logs += &format!(
                "\n===== {n}\n{}",
                std::fs::read_to_string(dir.join(format!("logs/{n}.log"))).unwrap_or_default()
            );
        }
        panic!(
            "{what} failed:\n{}\n{}{logs}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Seconds since midnight of a tracing line's RFC 3339 timestamp
/// (`2026-11-22T00:54:08.866068Z ...`).
fn line_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split('T').nth(1)?;
    let t = t.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The time of the first line after byte `from` of `log` containing `needle`.
fn first(log: &str, from: usize, needle: &str) -> Option<f64> {
    log[from..]
        .lines()
        .find(|l| l.contains(needle))
        .and_then(line_time)
}

#[test]
fn mscs2003_takeover_shows_reset_wait_and_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.to_str().unwrap();
    let out = busrig(&[
        "lab",
        "up",
        "--dir",
        d,
        "--nodes",
        "2",
        "--quorum",
        "disk-scsi2",
        "--profile",
        "mscs2003",
    ]);
    ok(&out, "lab up", dir);
    let guard = Down(d.to_string());

    let cfg = ClusterConfig::from_toml(&std::fs::read_to_string(dir.join("cluster.toml")).unwrap())
        .unwrap();
    assert_eq!(cfg.timing.challenge_wait, Duration::from_secs(7));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = |n: usize| {
        rt.block_on(admin::status(
            &cfg.nodes[n].admin.to_string(),
            Some(&cfg.secret),
        ))
    };
    let owner = status(0)
        .ok()
        .and_then(|s| s.quorum_owner)
        .expect("formed cluster has an owner");
    let (victim, survivor) = if owner == "NODE1" { (0, 1) } else { (1, 0) };
    let survivor_name = &cfg.nodes[survivor].name;
    let log_path = dir.join(format!("logs/{survivor_name}.log"));
    let log_mark = std::fs::read_to_string(&log_path).unwrap().len();

    let killed = Instant::now();
    ok(
        &busrig(&["lab", "kill", &owner, "--dir", d]),
        "lab kill",
        dir,
    );
    let limit = Duration::from_secs(60);
    let took = loop {
        if status(survivor).is_ok_and(|s| s.acting_owner) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < limit, "no takeover within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = victim;
    eprintln!("mscs2003 takeover after kill -9 of {owner}: {took:?}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    let silent = first(&log, log_mark, "peer silent on all networks").expect("suspicion logged");
    let reset = first(&log, log_mark, "challenger: bus reset sent").expect("bus reset logged");
    let reset_done =
        first(&log, log_mark, "challenger: bus reset done").expect("reset done logged");
    let reserve = first(&log, log_mark, "challenger: RESERVE sent").expect("RESERVE logged");
    let online = first(&log, log_mark, "arbitration=owner (online)").expect("online logged");
    eprintln!(
        "suspected +0.0 s, bus reset +{:.3} s, RESERVE +{:.3} s, online +{:.3} s",
        reset - silent,
        reserve - silent,
        online - silent
    );
    // The order of the challenge.
    assert!(silent <= reset && reset <= reset_done && reset_done < reserve && reserve < online);
    // The 7 s wait between the reset and RESERVE.
    let wait = reserve - reset_done;
    assert!((7.0..8.0).contains(&wait), "challenge wait {wait:.3} s");
    // Online 10 s after the reset.
    let to_online = online - reset;
    assert!(
        (10.0..11.0).contains(&to_online),
        "online {to_online:.3} s after the reset"
    );
    // Detection (6 x 1.2 s) plus the challenge bound the takeover.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(7 + 10 + 8),
        "takeover {took:?}"
    );
    drop(guard);
}

struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = busrig(&["lab", "down", "--dir", &self.0]);
    }
}
