//! `busrig demo`, the README's main job, end to end: it must pass its own
//! checks (no acknowledged message lost, exclusive disk ownership in the
//! bus audit, failover to the passive node, failback) and clean up.

use std::process::Command;

#[test]
fn demo_passes_and_cleans_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = dir.path().join("lab");
    let out = Command::new(env!("CARGO_BIN_EXE_busrig"))
        .arg("demo")
        .arg("--dir")
        .arg(&lab)
        .output()
        .expect("run busrig demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("All checks passed"), "{stdout}");
    for evs in ["EVS1", "EVS2", "EVS3"] {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(evs) && l.contains("exclusive"))
            .unwrap_or_else(|| panic!("no summary row for {evs}:\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // EVS before after final downtime "s" acked lost dups ...
        assert_eq!(cols[7], "0", "{evs} lost messages: {row}");
    }
    // Every process of the lab is gone.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.join("lab.json")).unwrap()).unwrap();
    for p in std::iter::once(&state["target"]).chain(state["nodes"].as_array().unwrap()) {
        assert!(p["pid"].is_null(), "still running after the demo: {p}");
    }
}
