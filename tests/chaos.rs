//! A short `busrig lab chaos` run: one schedule of 12 s per quorum model
//! (about 80 s in all), each with both workloads and every fault kind.
//! The run must find no violation and no error, and its checkers must
//! have seen real histories: register operations with answers, mail
//! acknowledged, role records from the nodes' logs, writer runs in the
//! bus audit. The long runs (100 schedules per model) are commands whose
//! results are in the README, not tests.

use std::process::Command;

#[test]
fn a_short_chaos_run_finds_nothing_and_checks_something() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args([
            "lab",
            "chaos",
            "--schedules",
            "1",
            "--seed",
            "3",
            "--duration",
            "12",
        ])
        .args(["--quorum", "all", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run busrig lab chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = std::fs::read_to_string(dir.path().join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report.json; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{stdout}");
    for r in results {
        let what = format!("{} seed {}", r["quorum"], r["seed"]);
        assert_eq!(r["error"], serde_json::Value::Null, "{what}: {stdout}");
        assert_eq!(
            r["violations"].as_array().map(Vec::len),
            Some(0),
            "{what}: {}\n{stdout}",
            serde_json::to_string_pretty(&r["violations"]).unwrap_or_default()
        );
        for counter in [
            "register_ops",
            "mail_acknowledged",
            "role_records",
            "audit_runs",
        ] {
            assert!(
                r[counter].as_u64().unwrap_or(0) > 0,
                "{what}: {counter} is 0: {r}"
            );
        }
        assert!(
            r["faults"]
                .as_array()
                .is_some_and(|f| f.iter().any(|a| a["skipped"] == false)),
            "{what}: no fault was applied: {r}"
        );
        // The schedule as it ran is a scenario file; the picture is there.
        for file in ["scenario", "timeline"] {
            let p = r[file].as_str().unwrap_or_default();
            assert!(
                std::path::Path::new(p).is_file(),
                "{what}: no {file} at {p:?}"
            );
        }
    }
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{stdout}"
    );
}
