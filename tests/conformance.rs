//! libiscsi's conformance suite (`iscsi-test-cu`, Debian package
//! libiscsi-bin) against a spawned `busrig target`, the same way
//! `shared/checks/conformance.py` runs it: two initiator names and the same
//! URL given again as the multipath URL, on a 1 GiB data LUN.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{external_tool, TargetProcess};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// Classifies iscsi-test-cu's CUnit log into one outcome per `Suite.Test`.
fn classify(log: &str) -> BTreeMap<String, Outcome> {
    let mut res = BTreeMap::new();
    let mut suite = String::new();
    let mut cur: Option<String> = None;
    let mut skipped = false;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("Suite: ") {
            suite = rest.split_whitespace().next().unwrap_or("").to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("  Test: ") {
            if let Some((name, tail)) = rest.split_once(" ...") {
                let name = format!("{suite}.{}", name.trim());
                skipped = tail.contains("[SKIPPED]");
                // CUnit prints the result right after "..."; libiscsi may log
                // its teardown on the same line after it ("passed  [FAILED]
                // PRIN command ..."), which does not change the result.
                let t = tail.trim_start();
                if t.starts_with("passed") || (skipped && t.trim_end().ends_with("passed")) {
                    res.insert(
                        name,
                        if skipped {
                            Outcome::Skip
                        } else {
                            Outcome::Pass
                        },
                    );
                    cur = None;
                } else if t.starts_with("FAILED") || t.trim_end().ends_with("FAILED") {
                    res.insert(name, Outcome::Fail);
                    cur = None;
                } else {
                    cur = Some(name);
                }
                continue;
            }
        }
        let Some(name) = cur.as_ref() else { continue };
        if line.contains("[SKIPPED]") {
            skipped = true;
        }
        let s = line.trim();
        if s == "passed" || s.ends_with("...passed") || s.starts_with("passed") {
            res.insert(
                name.clone(),
                if skipped {
                    Outcome::Skip
                } else {
                    Outcome::Pass
                },
            );
            cur = None;
        } else if s.starts_with("FAILED") || s.ends_with("FAILED") {
            res.insert(name.clone(), Outcome::Fail);
            cur = None;
        }
    }
    res
}

/// Tests the full run skips by design: the Sanitize suite runs only with
/// --allow-sanitize, which [`libiscsi_sanitize_suite`] passes.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[(
    "Sanitize.",
    "SANITIZE (the suite needs --allow-sanitize; see libiscsi_sanitize_suite)",
)];

/// The Sanitize tests run with --allow-sanitize, each on its own, and the
/// outcome each must have. CryptoErase skips (busrig has no encryption, so
/// no CRYPTOGRAPHIC ERASE); Readonly and Reservations check OVERWRITE and
/// BLOCK ERASE and then print a skip for CRYPTOGRAPHIC ERASE, which makes
/// them count as skipped. Reset is left out: it sleeps 60 s while polling
/// and needs an OVERWRITE that outlasts its 4 s of resets and reconnects
/// (README "Conformance" runs it).
const SANITIZE_TESTS: &[(&str, Outcome)] = &[
    ("BlockErase", Outcome::Pass),
    ("BlockEraseReserved", Outcome::Pass),
    ("CryptoErase", Outcome::Skip),
    ("CryptoEraseReserved", Outcome::Pass),
    ("ExitFailureMode", Outcome::Pass),
    ("InvalidServiceAction", Outcome::Pass),
    ("Overwrite", Outcome::Pass),
    ("OverwriteReserved", Outcome::Pass),
    ("Readonly", Outcome::Skip),
    ("Reservations", Outcome::Skip),
];

/// Tests the default data LUN skips because they need a LUN property it
/// does not have (cluster disks are not removable, have 512-byte physical
/// blocks and are writable). Each must pass on a LUN configured with the
/// property: (test or suite prefix, LUN of [`EXTRA_LUNS`]).
const ON_CONFIGURED_LUN: &[(&str, u32)] = &[
    ("PreventAllow.", 3),
    ("StartStopUnit.Simple", 3),
    ("NoMedia.NoMediaSBC", 3),
    ("ReadOnly.ReadOnlySBC", 5),
    ("CompareAndWrite.InvalidDataOutSize", 4),
    ("WriteSame10.InvalidDataOutSize", 4),
    ("WriteSame16.InvalidDataOutSize", 4),
    ("WriteSame10.UnmapUnaligned", 4),
    ("WriteSame16.UnmapUnaligned", 4),
];

/// A bus with LUNs that have those properties: 3 removable, 4 with 4 KiB
/// physical blocks (512e), 5 read-only; 6 a small disk that SANITIZE
/// overwrites in well under a second.
const EXTRA_LUNS: &str = r#"
[[target]]
name = "iqn.2026-11.io.busrig:bus0"

[[target.lun]]
id = 1
size = "1GiB"

[[target.lun]]
id = 3
size = "1GiB"
removable = true

[[target.lun]]
id = 4
size = "1GiB"
physical_block_size = 4096

[[target.lun]]
id = 5
size = "1GiB"
read_only = true

[[target.lun]]
id = 6
size = "64MiB"
"#;

fn run_suite(url: &str, filter: &str) -> (String, BTreeMap<String, Outcome>) {
    run_suite_with(url, filter, &[])
}

fn run_suite_with(url: &str, filter: &str, extra: &[&str]) -> (String, BTreeMap<String, Outcome>) {
    let out = Command::new("iscsi-test-cu")
        .args(extra)
        .args([
            "-d",
            "-i",
            "iqn.2026-11.test:init1",
            "-I",
            "iqn.2026-11.test:init2",
            "-t",
            filter,
            url,
            url,
        ])
        .output()
        .expect("run iscsi-test-cu");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let res = classify(&log);
    (log, res)
}

/// A target serving [`EXTRA_LUNS`], and the directory that holds its files.
fn configured_target() -> (tempfile::TempDir, TargetProcess) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bus.toml");
    std::fs::write(&cfg, EXTRA_LUNS).unwrap();
    let target = TargetProcess::start_in(dir.path(), &["--config", cfg.to_str().unwrap()]);
    (dir, target)
}

fn matches(name: &str, prefix: &str) -> bool {
    name == prefix || (prefix.ends_with('.') && name.starts_with(prefix))
}

#[test]
fn libiscsi_conformance_suite() {
    if !external_tool("iscsi-test-cu", "libiscsi-bin") {
        return;
    }
    let target = TargetProcess::start(&[]);
    let (log, res) = run_suite(&target.url(1), "ALL");
    assert!(
        res.len() > 200,
        "iscsi-test-cu ran only {} tests; log:\n{log}",
        res.len()
    );

    let mut problems = Vec::new();
    for (name, outcome) in &res {
        let suite_name = name.as_str();
        let allowed_skip = NOT_IMPLEMENTED.iter().any(|(p, _)| matches(suite_name, p))
            || ON_CONFIGURED_LUN
                .iter()
                .any(|(p, _)| matches(suite_name, p));
        match outcome {
            Outcome::Pass => {}
            Outcome::Skip if allowed_skip => {}
            other => problems.push(format!("{other:?} {name}")),
        }
    }
    let count = |o| res.values().filter(|v| **v == o).count();
    eprintln!(
        "conformance: {} passed, {} failed, {} skipped of {}",
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Skip),
        res.len()
    );
    assert!(
        problems.is_empty(),
        "unexpected outcomes:\n{}\n\nlog:\n{log}",
        problems.join("\n")
    );
}

/// The tests the default LUN skips for want of a LUN property pass on LUNs
/// configured with it.
#[test]
fn libiscsi_property_gated_tests_pass_on_configured_luns() {
    if !external_tool("iscsi-test-cu", "libiscsi-bin") {
        return;
    }
    let (_dir, target) = configured_target();
    for (prefix, lun) in ON_CONFIGURED_LUN {
        let filter = format!("ALL.{}", prefix.trim_end_matches('.'));
        let (log, res) = run_suite(&target.url(*lun), &filter);
        let ran: Vec<_> = res.iter().filter(|(n, _)| matches(n, prefix)).collect();
        assert!(!ran.is_empty(), "{filter} ran nothing on LUN {lun}:\n{log}");
        for (name, outcome) in ran {
            assert_eq!(*outcome, Outcome::Pass, "{name} on LUN {lun}:\n{log}");
        }
    }
}

/// SANITIZE (OVERWRITE, BLOCK ERASE, EXIT FAILURE MODE) against libiscsi's
/// Sanitize tests, with --allow-sanitize.
#[test]
fn libiscsi_sanitize_suite() {
    if !external_tool("iscsi-test-cu", "libiscsi-bin") {
        return;
    }
    let (_dir, target) = configured_target();
    for (test, want) in SANITIZE_TESTS {
        let filter = format!("ALL.Sanitize.{test}");
        let (log, res) = run_suite_with(&target.url(6), &filter, &["-S"]);
        let name = format!("Sanitize.{test}");
        // libiscsi's teardown may log after the result (Reservations leaves
        // a RESERVE(6) that makes its PR IN cleanup conflict); the
        // classified outcome is what counts.
        assert_eq!(res.get(&name), Some(want), "{name}:\n{log}");
    }
}

#[test]
fn classify_reads_cunit_output() {
    let log = "Suite: Read10\n  Test: Simple ...passed\n  Test: BeyondEol ...\n[SKIPPED] no\n passed\n  Test: ZeroBlocks ...FAILED\n  Test: DpoFua ...passed    [FAILED] PRIN command: failed with sense\n  Test: Async ...    [SKIPPED] LBPPB < 2\npassed\n";
    let r = classify(log);
    assert_eq!(r["Read10.Simple"], Outcome::Pass);
    assert_eq!(r["Read10.BeyondEol"], Outcome::Skip);
    assert_eq!(r["Read10.ZeroBlocks"], Outcome::Fail);
    assert_eq!(
        r["Read10.DpoFua"],
        Outcome::Pass,
        "teardown noise after the result"
    );
    assert_eq!(r["Read10.Async"], Outcome::Skip);
}
