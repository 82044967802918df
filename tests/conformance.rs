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
                let t = tail.trim_end();
                if t.ends_with("passed") {
                    res.insert(
                        name,
                        if skipped {
                            Outcome::Skip
                        } else {
                            Outcome::Pass
                        },
                    );
                    cur = None;
                } else if t.ends_with("FAILED") {
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

/// Tests that may be skipped, each because it needs a feature busrig does not
/// claim (the suite itself decides to skip after probing the target).
const ALLOWED_SKIPS: &[(&str, &str)] = &[];

/// Suites that belong to the reservations issue and may still fail.
const PENDING_SUITES: &[&str] = &[];

fn run_suite(url: &str, filter: &str) -> (String, BTreeMap<String, Outcome>) {
    let out = Command::new("iscsi-test-cu")
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

#[test]
fn libiscsi_conformance_suite() {
    if !external_tool("iscsi-test-cu", "libiscsi-bin") {
        return;
    }
    let target = TargetProcess::start(&[]);
    let (log, res) = run_suite(&target.url(1), "ALL");
    assert!(
        res.len() > 150,
        "iscsi-test-cu ran only {} tests; log:\n{log}",
        res.len()
    );

    let mut problems = Vec::new();
    for (name, outcome) in &res {
        let suite = name.split('.').next().unwrap_or("");
        match outcome {
            Outcome::Pass => {}
            Outcome::Fail if PENDING_SUITES.contains(&suite) => {}
            Outcome::Skip if ALLOWED_SKIPS.iter().any(|(t, _)| t == name) => {}
            Outcome::Skip if PENDING_SUITES.contains(&suite) => {}
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

#[test]
fn classify_reads_cunit_output() {
    let log = "Suite: Read10\n  Test: Simple ...passed\n  Test: BeyondEol ...\n[SKIPPED] no\n passed\n  Test: ZeroBlocks ...FAILED\n";
    let r = classify(log);
    assert_eq!(r["Read10.Simple"], Outcome::Pass);
    assert_eq!(r["Read10.BeyondEol"], Outcome::Skip);
    assert_eq!(r["Read10.ZeroBlocks"], Outcome::Fail);
}
