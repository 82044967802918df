//! A LUN whose backing file already exists with another length than the
//! configured `size` (README "Configuration", `resize`): the server
//! refuses to start unless the LUN allows the change, and checks every
//! LUN before it creates or resizes any file.

use std::path::Path;

use busrig_target::config::Config;
use busrig_target::server::TargetServer;

const MIB: u64 = 1 << 20;

/// Two LUNs with explicit files; `lun0` and `lun1` are their extra keys.
fn bus(size0: &str, lun0: &str, size1: &str, lun1: &str) -> String {
    format!(
        r#"
[[target]]
name = "iqn.2026-11.io.busrig:resize"

[[target.lun]]
id = 0
path = "zero.img"
size = "{size0}"
{lun0}

[[target.lun]]
id = 1
path = "one.img"
size = "{size1}"
{lun1}
"#
    )
}

fn build(dir: &Path, toml: &str) -> Result<TargetServer, String> {
    let cfg = Config::parse(toml, "test")
        .map_err(|e| e.to_string())?
        .validate(dir)
        .map_err(|e| e.to_string())?;
    // The whole chain, as `busrig target` prints it: the server's error
    // names the target, its source the LUN and the file.
    TargetServer::build(cfg).map_err(|e| busrig_lograte::text::error_chain(&e))
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn the_same_configuration_starts_again_on_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let toml = bus("1MiB", "", "2MiB", "");
    drop(build(dir.path(), &toml).unwrap());
    drop(build(dir.path(), &toml).unwrap());
    assert_eq!(len(&dir.path().join("zero.img")), MIB);
    assert_eq!(len(&dir.path().join("one.img")), 2 * MIB);
}

#[test]
fn a_refused_size_change_touches_no_file_of_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path(), &bus("1MiB", "", "2MiB", "")).unwrap());
    let one = dir.path().join("one.img");
    let data: Vec<u8> = (0..2 * MIB).map(|i| (i / 4096) as u8).collect();
    std::fs::write(&one, &data).unwrap();

    // LUN 0 may grow, LUN 1 may not shrink: nothing changes, not even
    // LUN 0, which comes first.
    let e = build(
        dir.path(),
        &bus("4MiB", "resize = \"grow\"", "1MiB", "resize = \"grow\""),
    )
    .err()
    .expect("shrinking LUN 1 must be refused");
    assert!(e.contains("LUN 1"), "{e}");
    assert!(e.contains(&one.display().to_string()), "{e}");
    assert!(e.contains(&format!("{} bytes", 2 * MIB)), "{e}");
    assert!(e.contains(&format!("{MIB} bytes")), "{e}");
    assert!(e.contains("resize = \"any\""), "{e}");
    assert_eq!(len(&dir.path().join("zero.img")), MIB, "LUN 0 was grown");
    assert_eq!(std::fs::read(&one).unwrap(), data, "LUN 1 changed");

    // Without any permission a bigger size is refused too, naming the key.
    let e = build(dir.path(), &bus("4MiB", "", "2MiB", ""))
        .err()
        .expect("growing LUN 0 without permission must be refused");
    assert!(
        e.contains("LUN 0") && e.contains("resize = \"grow\""),
        "{e}"
    );

    // With "any" on LUN 1 and "grow" on LUN 0 both change, and LUN 1
    // keeps its first MiB.
    drop(
        build(
            dir.path(),
            &bus("4MiB", "resize = \"grow\"", "1MiB", "resize = \"any\""),
        )
        .unwrap(),
    );
    assert_eq!(len(&dir.path().join("zero.img")), 4 * MIB);
    assert_eq!(std::fs::read(&one).unwrap(), data[..MIB as usize]);
}
