//! Every example scenario under `examples/` runs with `busrig lab run` and
//! passes: the four-node demo layout, a two-node `disk-scsi2` cluster with
//! the `mscs2003` profile (the longest, about two minutes), a split-brain
//! attempt and a storage path cut on the owner. Each writes a JSON report
//! whose steps all succeeded.

use std::path::Path;
use std::process::Command;

fn run(name: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.toml"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .args(["lab", "run"])
        .arg(&file)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run busrig lab run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = std::fs::read_to_string(dir.path().join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let logs = || -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(dir.path().join("logs")) {
            for e in rd.flatten() {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                s += &format!(
                    "\n===== {}\n{}",
                    e.path().display(),
                    lines[lines.len().saturating_sub(25)..].join("\n")
                );
            }
        }
        s
    };
    assert!(
        out.status.success() && report["passed"] == serde_json::json!(true),
        "scenario {name} failed:\n{stdout}\n{}\n{report:#}{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    let steps = report["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.iter().all(|s| s["ok"] == serde_json::json!(true)));
}

#[test]
fn four_node_demo() {
    run("four-node-demo");
}

#[test]
fn split_brain() {
    run("split-brain");
}

#[test]
fn path_cut() {
    run("path-cut");
}

#[test]
fn two_node_scsi2_mscs2003() {
    run("two-node-scsi2-mscs2003");
}
