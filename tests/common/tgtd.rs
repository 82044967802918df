//! tgtd (Debian package `tgt`) as a third-party target for the tests:
//! started on a free loopback port with its own control socket and
//! configured with tgtadm; skipped visibly when it is missing or cannot
//! run (a failure under `BUSRIG_EXTERNAL=require`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use busrig_initiator::IscsiUrl;

pub const TGT_TARGET: &str = "iqn.2026-11.io.busrig.test:tgtd";

/// A tgtd child with one target (tid 1) and 64 MiB LUNs from 1; killed on drop.
pub struct Tgtd {
    child: Child,
    pub port: u16,
    /// tgtd's management channel number (-C); it accepts at most 32767.
    control: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // tgtd leaves its control socket and lock file behind, even on a
        // clean shutdown; they are ours to remove.
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.control));
        }
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tgtd {
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tgtadm")
            .args(["-C", &self.control.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Starts tgtd, or returns None (printing SKIPPED) when it is not
    /// installed or cannot run here; with BUSRIG_EXTERNAL=require both panic.
    pub fn start() -> Option<Tgtd> {
        Tgtd::start_with_luns(1)
    }

    /// [`Tgtd::start`] with LUNs 1 to `luns`, 64 MiB each.
    pub fn start_with_luns(luns: u32) -> Option<Tgtd> {
        if !super::external_tool("tgtd", "tgt") || !super::external_tool("tgtadm", "tgt") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<PathBuf> = (1..=luns)
            .map(|l| dir.path().join(format!("lun{l}.img")))
            .collect();
        for img in &images {
            std::fs::File::create(img)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
        }
        let port = free_port();
        // The control channel is a socket named after its number
        // (/var/run/tgtd/socket.N); deriving it from the free iSCSI port
        // keeps tests that run in parallel apart.
        let control = port % 32000 + 1;
        let child = Command::new("tgtd")
            .args([
                "-f",
                "-C",
                &control.to_string(),
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tgtd");
        let t = Tgtd {
            child,
            port,
            control,
            _dir: dir,
        };
        let t0 = Instant::now();
        while t.admin(&["--op", "show", "--mode", "target"]).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                let msg = "tgtd did not start (it needs root for /var/run/tgtd)";
                if std::env::var("BUSRIG_EXTERNAL").as_deref() == Ok("require") {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut commands: Vec<Vec<String>> = vec![words(&[
            "--op", "new", "--mode", "target", "--tid", "1", "-T", TGT_TARGET,
        ])];
        for (l, img) in (1..).zip(&images) {
            commands.push(words(&[
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                &l.to_string(),
                "-b",
                img.to_str().unwrap(),
            ]));
        }
        commands.push(words(&[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ]));
        // tgtd answers "None" to a digest offer it was not configured
        // for, instead of Reject; allow CRC32C explicitly.
        for digest in ["HeaderDigest", "DataDigest"] {
            commands.push(words(&[
                "--op",
                "update",
                "--mode",
                "target",
                "--tid",
                "1",
                "--name",
                digest,
                "--value",
                "CRC32C,None",
            ]));
        }
        for args in commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            t.admin(&args).expect("configure tgtd");
        }
        Some(t)
    }

    /// The libiscsi URL of LUN `lun`.
    pub fn lun_url(&self, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{TGT_TARGET}/{lun}", self.port)
    }

    pub fn url(&self, query: &str) -> IscsiUrl {
        IscsiUrl::parse(&format!(
            "iscsi://127.0.0.1:{}/{TGT_TARGET}/1{query}",
            self.port
        ))
        .unwrap()
    }

    pub fn chap_url(&self, user: &str, secret: &str, query: &str) -> IscsiUrl {
        IscsiUrl::parse(&format!(
            "iscsi://{user}%{secret}@127.0.0.1:{}/{TGT_TARGET}/1{query}",
            self.port
        ))
        .unwrap()
    }
}
