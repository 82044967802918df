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
    assert!(
        out.contains(&format!("Target:{DEFAULT_TARGET} Portal:{},1", t.addr)),
        "{out}"
    );
    for lun in 0..3 {
        assert!(
            out.contains(&format!("Lun:{lun}    Type:DIRECT_ACCESS")),
            "LUN {lun} missing: {out}"
        );
    }
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

    // VPD page 0x83 (the tool takes the page code in decimal) carries the
    // NAA identifier, and page 0x80 the unit serial number.
    let vpd = run(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test:inq", "-e", "1", "-c", "131", &url],
    );
    assert!(vpd.contains("Designator Type:(3) NAA"), "{vpd}");
    let serial = run(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test:inq", "-e", "1", "-c", "128", &url],
    );
    assert!(serial.contains("Unit Serial Number:[BUSRIG-"), "{serial}");

    // LUN 0 is the 64 MiB quorum disk, LUNs 1 and 2 are 1 GiB data disks.
    // (iscsi-ls derives its size from the last LBA, so exact sizes come from here.)
    for (lun, bytes) in [(0, "67108864"), (1, "1073741824"), (2, "1073741824")] {
        let size = run(
            "iscsi-readcapacity16",
            &["-i", "iqn.2026-11.test:rc", "-s", &t.url(lun)],
        );
        assert_eq!(size.trim(), bytes, "LUN {lun}: {size}");
    }
}
