//! `busrig bench` end to end: real `busrig target` processes, the bench
//! run as the user runs it, its JSON read back. Short `--count` runs only:
//! speed is shown by `scripts/compare-tgt.sh` and `cargo bench`, never by
//! a timed test.

mod common;

use std::path::Path;
use std::process::Output;

use common::{busrig, TargetProcess, DEFAULT_TARGET};
use serde_json::Value;

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn bench(url: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["bench", url, "--json"];
    args.extend_from_slice(extra);
    let out = busrig(&args);
    let v = json_of(&out);
    (out, v)
}

/// Verified random 4 KiB reads and writes, 4 deep on each of 2 sessions.
const VERIFIED_MIX: &[&str] = &[
    "--rw",
    "randrw",
    "--bs",
    "4k",
    "--qd",
    "4",
    "--sessions",
    "2",
    "--verify",
];

#[test]
fn verified_mixed_run_reports_sane_figures() {
    let t = TargetProcess::start(&[]);
    // 16 slots of 4 KiB: reads keep landing on slots the run wrote.
    let (out, v) = bench(
        &t.url(1),
        &[
            VERIFIED_MIX,
            &["--range", "64KiB", "--count", "300", "--seed", "7"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["error"], Value::Null);
    let total = &v["total"];
    assert_eq!(total["ios"], 300);
    assert_eq!(total["bytes"], 300 * 4096);
    assert!(total["iops"].as_f64().unwrap() > 0.0);
    assert!(total["mb_per_sec"].as_f64().unwrap() > 0.0);
    let lat = &total["lat_us"];
    let p = |k: &str| lat[k].as_f64().unwrap();
    assert!(
        p("p50") > 0.0 && p("p50") <= p("p99") && p("p99") <= p("p99_9") && p("p99_9") <= p("max")
    );
    let job = &v["jobs"][0];
    let (r, w) = (
        job["read"]["ios"].as_u64().unwrap(),
        job["write"]["ios"].as_u64().unwrap(),
    );
    assert_eq!(r + w, 300);
    assert!(r > 50 && w > 50, "a 50/50 mix: {r} reads, {w} writes");
    // Every read of a written slot, and the read-back of every written slot.
    assert!(v["verified_ios"].as_u64().unwrap() >= 16.min(w), "{v}");
    assert_eq!(job["job"]["rw"], "randrw");
    assert_eq!(v["sessions"], 2);
    let bins = v["latency_histogram"].as_array().unwrap();
    assert_eq!(
        bins.iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        300
    );
}

#[test]
fn refuses_to_write_where_another_node_holds_the_lun() {
    let t = TargetProcess::start(&[]);
    let url = t.url(2);
    let other = "iqn.2026-11.io.busrig.test:othernode";
    for verb in [
        &["pr", "register", "--param-sark", "0xabc"][..],
        &["pr", "reserve", "--param-rk", "0xabc", "--prout-type", "1"][..],
    ] {
        let mut a = vec!["disk", "--initiator", other, &url];
        a.extend_from_slice(verb);
        let o = busrig(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (out, v) = bench(&url, &["--rw", "write", "--count", "10"]);
    assert_eq!(out.status.code(), Some(24), "{v}");
    assert_eq!(v["kind"], "reservation conflict");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("held by another node"), "{msg}");
    assert!(msg.contains("WE") && msg.contains("0xabc"), "{msg}");
    assert!(msg.contains(other), "the holder is named: {msg}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RESERVATION CONFLICT")
            || String::from_utf8_lossy(&out.stderr).contains("held by another node")
    );
    // Write Exclusive still lets everyone read.
    let (out, v) = bench(&url, &["--rw", "randread", "--count", "20"]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["total"]["ios"], 20);
    // Nothing reached the medium: the writer history is empty.
    let audit = busrig(&[
        "bus",
        "--control",
        &t.control.to_string(),
        "audit",
        "2",
        "--json",
    ]);
    assert_eq!(json_of(&audit)["history"], serde_json::json!([]));
}

const STRIPED: &str = r#"
[[target]]
name = "iqn.2026-11.io.busrig:bus0"
[[target.lun]]
id = 1
path = "striped.img"
size = "64MiB"
stripe_unit = "64KiB"
"#;

fn model_counters(t: &TargetProcess) -> Value {
    let out = busrig(&[
        "bus",
        "--control",
        &t.control.to_string(),
        "status",
        "--json",
    ]);
    let v = json_of(&out);
    v["luns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lun"] == 1 && l["target"] == DEFAULT_TARGET)
        .map(|l| l["disk_model"]["counters"].clone())
        .expect("LUN 1 with a disk model")
}

fn delta(a: &Value, b: &Value, k: &str) -> u64 {
    b[k].as_u64().unwrap() - a[k].as_u64().unwrap()
}

#[test]
fn misaligned_64k_io_costs_twice_the_backend_operations() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("striped.toml");
    std::fs::write(&cfg, STRIPED).unwrap();
    let t = TargetProcess::start_in(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let url = t.url(1);
    let control = t.control.to_string();
    let aligned_json = dir.path().join("aligned.json");
    let svg = dir.path().join("shift.svg");

    let c0 = model_counters(&t);
    let (out, aligned) = bench(
        &url,
        &[
            "--rw",
            "randread",
            "--bs",
            "64k",
            "--count",
            "100",
            "--control",
            &control,
        ],
    );
    assert!(out.status.success(), "{aligned}");
    std::fs::write(&aligned_json, aligned.to_string()).unwrap();
    let c1 = model_counters(&t);
    let (out, misaligned) = bench(
        &url,
        &[
            "--rw",
            "randread",
            "--bs",
            "64k",
            "--offset",
            "32256",
            "--count",
            "100",
            "--control",
            &control,
            "--svg",
            svg.to_str().unwrap(),
            "--svg-baseline",
            aligned_json.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{misaligned}");
    let c2 = model_counters(&t);

    // From `busrig bus status`: the same 100 I/Os, twice the operations.
    assert_eq!(delta(&c0, &c1, "ios"), 100);
    assert_eq!(delta(&c0, &c1, "backend_ops"), 100);
    assert_eq!(delta(&c0, &c1, "split_ios"), 0);
    assert_eq!(delta(&c1, &c2, "ios"), 100);
    assert_eq!(delta(&c1, &c2, "backend_ops"), 200);
    assert_eq!(delta(&c1, &c2, "split_ios"), 100);
    // The bench reports the same counters for its own run.
    assert_eq!(
        aligned["disk_model"]["main"]["counters"]["backend_ops"],
        100
    );
    assert_eq!(
        misaligned["disk_model"]["main"]["counters"]["backend_ops"],
        200
    );
    assert_eq!(misaligned["disk_model"]["main"]["stripe_unit"], 65536);
    // The plot overlays both runs.
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg") && doc.contains("</svg>"));
    assert!(
        doc.contains("baseline: randread bs=65536 qd=1 offset=0"),
        "{doc}"
    );
    assert!(doc.contains("offset=32256"));
}

#[test]
fn bad_disk_model_values_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, STRIPED.replace("\"64KiB\"", "1000")).unwrap();
    let out = busrig(&[
        "target",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stripe_unit must be a multiple of block_size 512 up to 1GiB, got 1000"),
        "{err}"
    );
    assert!(
        !Path::new(&dir.path().join("striped.img")).exists(),
        "no LUN file before the config is good"
    );
}

#[test]
fn bad_options_are_usage_errors() {
    let t = TargetProcess::start(&[]);
    let (out, v) = bench(&t.url(1), &["--bs", "1000", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("not a multiple of the block length 512"));
    let (out, v) = bench(&t.url(1), &["--offset", "100", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{v}");
}

#[test]
fn local_file_mode_runs_the_same_workload_and_verifies_it() {
    use busrig_bench::pattern;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.img");
    // 64 slots of 4 KiB, zeros: reads keep landing on slots the run wrote.
    std::fs::write(&path, vec![0u8; 256 << 10]).unwrap();
    let url = format!("file://{}", path.display());
    let (out, v) = bench(
        &url,
        &[VERIFIED_MIX, &["--duration", "1", "--seed", "11"]].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["target"], Value::Null);
    let job = &v["jobs"][0];
    assert_eq!(job["block_length"], 512);
    let ios = v["total"]["ios"].as_u64().unwrap();
    let writes = job["write"]["ios"].as_u64().unwrap();
    assert!(ios > 0 && writes > 0, "{v}");
    assert!(v["verified_ios"].as_u64().unwrap() > 0, "{v}");

    // What the run left in the file: every slot is either untouched or
    // one whole verified write, stamped for its own offset.
    let data = std::fs::read(&path).unwrap();
    let mut written = 0;
    for (i, slot) in data.chunks(4096).enumerate() {
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        let stamp = pattern::stamp_of(slot).expect("a written slot carries a stamp");
        assert_eq!(
            pattern::check(slot, i as u64 * 4096, stamp),
            None,
            "slot {i}"
        );
        written += 1;
    }
    assert!(written > 0 && written as u64 <= writes);
}

#[test]
fn local_file_mode_refuses_what_needs_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.img");
    let missing = format!("file://{}", dir.path().join("none.img").display());
    let (out, v) = bench(&missing, &["--count", "1"]);
    let failed = busrig_bench::error::EXIT_FAILED;
    assert_eq!(out.status.code(), Some(i32::from(failed)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("none.img"), "{v}");
    std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
    let url = format!("file://{}", path.display());
    let (out, v) = bench(&url, &["--profile", "exchange2003", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["kind"], "usage");
}
