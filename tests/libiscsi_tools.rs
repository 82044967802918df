//! libiscsi's command-line tools see busrig's default bus: discovery lists
//! the target and its LUNs, INQUIRY and READ CAPACITY(16) answer.

mod common;

use std::process::Command;

use common::{external_tool, TargetProcess, DEFAULT_TARGET};

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn iscsi_ls_shows_target_and_luns() {
    if !external_tool("iscsi-ls", "libiscsi-bin") {
        return;
    }
    let t = TargetProcess::start(&[]);
    let portal = format!("iscsi://{}", t.addr);
    let out = run("iscsi-ls", &["-i", "iqn.2026-11.test:ls", "-s", &portal]);
    assert!(out.contains(&format!("Target:{DEFAULT_TARGET}")), "{out}");
    assert!(
        out.contains(&t.addr.to_string()),
        "portal address missing: {out}"
    );
    for lun in 0..3 {
        assert!(
            out.contains(&format!("Lun:{lun}")),
            "LUN {lun} missing: {out}"
        );
    }
    // LUN 0 is the 64 MiB quorum disk, LUNs 1 and 2 are 1 GiB data disks.
    assert!(
        out.contains("(Size:64M)") || out.contains("Size:67108864"),
        "{out}"
    );
    assert!(
        out.contains("(Size:1G)") || out.contains("Size:1073741824"),
        "{out}"
    );
}

#[test]
fn iscsi_inq_and_readcapacity16_answer() {
    if !external_tool("iscsi-inq", "libiscsi-bin")
        || !external_tool("iscsi-readcapacity16", "libiscsi-bin")
    {
        return;
    }
    let t = TargetProcess::start(&[]);
    let url = t.url(1);
    let inq = run("iscsi-inq", &["-i", "iqn.2026-11.test:inq", &url]);
    assert!(
        inq.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{inq}"
    );
    assert!(inq.contains("Vendor:BUSRIG"), "{inq}");

    // VPD page 0x83 carries the NAA identifier.
    let vpd = run(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test:inq", "-e", "1", "-c", "0x83", &url],
    );
    assert!(vpd.contains("NAA"), "{vpd}");

    let size = run(
        "iscsi-readcapacity16",
        &["-i", "iqn.2026-11.test:rc", "-s", &url],
    );
    assert_eq!(size.trim(), "1073741824", "{size}");
}
