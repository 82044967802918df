//! `busrig demo`: the main job. A four-node cluster on a switched fabric
//! with three Exchange-style virtual servers and one passive node, mail
//! load on every virtual server, then the node owning EVS1 is killed.
//! EVS1 comes up on the passive node, the killed node is restarted, EVS1
//! fails back, the load stops and every mailbox is checked.
//!
//! Everything runs in a temporary folder as real processes (`busrig
//! target`, `busrig node` x N, `busrig mailstore` as cluster applications,
//! `busrig mailload` as clients). The demo prints a timeline relative to the
//! fault, read from the nodes' logs and the load's acknowledgement records,
//! and a summary table; it exits non-zero if any check fails and cleans up
//! its processes on exit, Ctrl-C and failure (`--keep` leaves the lab up).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use busrig_cluster::config::ClusterConfig;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::lab::{self, LabState};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Leave the lab running afterwards (for `busrig cluster` / `busrig bus`).
    #[arg(long)]
    keep: bool,
    /// Nodes: N-1 active virtual servers and one passive node.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Quorum model: disk-scsi2, disk-pr or majority.
    #[arg(long, default_value = "disk-scsi2")]
    quorum: String,
    /// Timing profile: fast or mscs2003.
    #[arg(long, default_value = "fast")]
    profile: String,
    /// Messages per second to each virtual server.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Folder for the lab (default: a new temporary folder, removed
    /// afterwards unless --keep).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch of a tracing line's RFC 3339 time
/// (`2026-11-22T00:54:08.866068Z ...`).
fn line_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let h: u64 = t.next()?.parse().ok()?;
    let mi: u64 = t.next()?.parse().ok()?;
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    Some(((days * 86_400 + h * 3600 + mi * 60) as f64 * 1000.0 + s * 1000.0) as u64)
}

/// Shows what the demo waits for; on a terminal one line that updates.
struct Progress {
    what: String,
    start: Instant,
    tty: bool,
    last: Instant,
}

impl Progress {
    fn new(what: &str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            eprintln!("  ... {what}");
        }
        Progress {
            what: what.into(),
            start: Instant::now(),
            tty,
            last: Instant::now(),
        }
    }

    fn tick(&mut self) {
        if self.tty && self.last.elapsed() > Duration::from_millis(100) {
            let spin = ['|', '/', '-', '\\'][(self.start.elapsed().as_millis() / 100 % 4) as usize];
            eprint!(
                "\r  {spin} {} ({:.1} s)   ",
                self.what,
                self.start.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            self.last = Instant::now();
        }
    }

    fn done(self) -> Duration {
        let t = self.start.elapsed();
        if self.tty {
            eprint!("\r{:80}\r", "");
        }
        t
    }
}

/// Polls `cond` every 50 ms until it holds, showing progress.
fn wait_for(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let mut p = Progress::new(what);
    loop {
        interrupted()?;
        if cond()? {
            return Ok(p.done());
        }
        if p.start.elapsed() > limit {
            p.done();
            bail!("{what}: not within {limit:?}");
        }
        p.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cleans the lab up however the demo ends.
struct Cleanup {
    dir: PathBuf,
    keep: bool,
    remove_dir: bool,
    loads: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.loads {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.keep {
            eprintln!(
                "\nThe lab is still running in {} (busrig cluster --lab {} status; busrig lab down --dir {}).",
                self.dir.display(),
                self.dir.display(),
                self.dir.display()
            );
            return;
        }
        if let Err(e) = lab::down(&self.dir) {
            eprintln!("busrig demo: cleanup: {e:#}");
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Cluster {
    cfg: ClusterConfig,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// The catalog from the first node that answers.
    /// The node group `g` is online on (as its owner reports it).
    fn online_on(&self, g: &str) -> Option<String> {
        lab::group_online_on(&self.rt, &self.cfg, g)
    }

    fn audit(&self, control: &str, lun: usize) -> anyhow::Result<Vec<Value>> {
        let (code, v) = self.rt.block_on(busrig_http::request(
            control,
            "GET",
            &format!("/audit?lun={lun}"),
            None,
            None,
        ))?;
        if code != 200 {
            bail!("bus audit: {v}");
        }
        Ok(v["history"].as_array().cloned().unwrap_or_default())
    }
}

/// One timeline entry: time after the fault and what happened.
fn first_after(dir: &Path, nodes: &[String], t0: u64, needle: &str) -> Option<(u64, String)> {
    let mut best: Option<(u64, String)> = None;
    for n in nodes {
        let text = std::fs::read_to_string(dir.join(format!("logs/{n}.log"))).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(needle)) {
            if let Some(t) = line_ms(line).filter(|t| *t >= t0) {
                if best.as_ref().is_none_or(|(b, _)| t < *b) {
                    best = Some((t, n.clone()));
                }
                break;
            }
        }
    }
    best
}

/// Whether an SMTP server answers its greeting at `addr`.
fn smtp_ready(addr: &str) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(a) = addr.parse() else { return false };
    let Ok(s) = std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220")
}

/// The client's longest wait between two acknowledgements (the outage it
/// saw), from the load's records; the start-up before the first one does
/// not count.
fn ack_gap(records: &Path) -> u64 {
    let mut acks: Vec<u64> = std::fs::read_to_string(records)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["ack_unix_ms"].as_u64())
        .collect();
    acks.sort_unstable();
    acks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

fn ms(d: u64) -> String {
    format!("{:>8.3} s", d as f64 / 1000.0)
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if a.nodes < 2 || a.nodes > 4 {
        bail!("--nodes must be 2 to 4 (one passive node and up to three virtual servers on three data LUNs)");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let h = nix::sys::signal::SigHandler::Handler(on_signal);
        let _ = nix::sys::signal::signal(Signal::SIGINT, h);
        let _ = nix::sys::signal::signal(Signal::SIGTERM, h);
    }
    let (dir, remove_dir) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("busrig-demo-{}-{}", std::process::id(), now_ms())),
            true,
        ),
    };
    let evs_count = a.nodes - 1;
    let passive = format!("NODE{}", a.nodes);
    println!("busrig demo: {} nodes ({} active virtual servers, {passive} passive), quorum {}, profile {}", a.nodes, evs_count, a.quorum, a.profile);
    println!("  lab folder {}", dir.display());

    let mut cleanup = Cleanup {
        dir: dir.clone(),
        keep: a.keep,
        remove_dir: remove_dir && !a.keep,
        loads: Vec::new(),
    };
    let p = Progress::new("starting the bus and the nodes");
    lab::up(&dir, a.nodes, &a.quorum, &a.profile, evs_count as u16, None)?;
    println!("  cluster formed in {:.1} s", p.done().as_secs_f64());

    let cfg = busrig_cluster::cluster_file::load(&lab::cluster_file(&dir))?;
    let state = LabState::load(&dir)?;
    let control = state
        .target
        .control
        .clone()
        .ok_or_else(|| anyhow!("the lab has no bus control address"))?;
    let bin = std::env::current_exe().context("cannot find the busrig binary")?;
    let cl = Cluster {
        cfg: cfg.clone(),
        rt: lab::runtime()?,
    };
    let timing = cfg.timing;
    let bound = timing.detection() * 3
        + timing.challenge_wait * 3
        + timing.online_delay * 3
        + Duration::from_secs(20);
    let nodes: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();

    // The virtual servers' addresses: a loopback /24 of this demo's own
    // (chosen by process id, and checked unused), so two demos on one
    // machine never answer each other's clients.
    let net = (0..200u32)
        .map(|k| format!("127.{}.2", 20 + (std::process::id() + k) % 200))
        .find(|net| {
            !smtp_ready(&format!("{net}.1:2525"))
                && std::net::TcpStream::connect_timeout(
                    &format!("{net}.1:2525").parse().expect("address"),
                    Duration::from_millis(100),
                )
                .is_err()
        })
        .ok_or_else(|| anyhow!("no free loopback network for the virtual servers"))?;
    // Virtual servers EVSi on NODEi, the passive node second on each list.
    let evs: Vec<String> = (1..=evs_count).map(|i| format!("EVS{i}")).collect();
    for (i, g) in evs.iter().enumerate() {
        let n = i + 1;
        let out = Command::new(&bin)
            .args(["cluster", "--lab"])
            .arg(&dir)
            .args(["evs", "create", g, "--ip", &format!("{net}.{n}")])
            .args([
                "--disk",
                &format!("iscsi://{}/{}/{n}", state.target.addr, state.target_iqn),
            ])
            .args([
                "--preferred",
                &format!("NODE{n},{passive}"),
                "--failback",
                "allow",
            ])
            .output()?;
        if !out.status.success() {
            bail!("creating {g}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let mut before: BTreeMap<String, String> = BTreeMap::new();
    for (i, g) in evs.iter().enumerate() {
        let want = format!("NODE{}", i + 1);
        wait_for(&format!("{g} online on {want}"), bound, || {
            Ok(cl.online_on(g).as_deref() == Some(want.as_str()))
        })?;
        before.insert(g.clone(), want);
    }
    println!(
        "  virtual servers online: {}",
        before
            .iter()
            .map(|(g, n)| format!("{g} on {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Load on every virtual server, long enough to cover the fault, the
    // restart and the failback.
    let duration = Duration::from_secs(12) + bound;
    for (i, g) in evs.iter().enumerate() {
        let records = dir.join(format!("{g}-acks.jsonl"));
        let child = Command::new(&bin)
            .args(["mailload", "--lab"])
            .arg(&dir)
            .args(["--to", &format!("evs{}:2525", i + 1)])
            .args(["--rate", &a.rate.to_string()])
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .arg("--json")
            .arg("--records")
            .arg(&records)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("logs/mailload-{g}.log")),
            )?))
            .process_group(0)
            .spawn()
            .context("cannot start mailload")?;
        cleanup.loads.push(child);
    }
    println!(
        "  mail load: {} msg/s to each virtual server for {:.0} s",
        a.rate,
        duration.as_secs_f64()
    );
    // Let the load run before the fault.
    let warm = Instant::now() + Duration::from_secs(4);
    wait_for("mail load running", Duration::from_secs(10), || {
        Ok(Instant::now() >= warm)
    })?;

    // The fault.
    let victim = before["EVS1"].clone();
    let t0 = now_ms();
    lab::send_signal(&dir, &victim, Signal::SIGKILL, "killed")?;
    println!("\n  t = 0: {victim} (owner of EVS1) killed with SIGKILL");
    let moved = wait_for("EVS1 online on another node", bound, || {
        Ok(cl.online_on("EVS1").is_some_and(|o| o != victim))
    })?;
    let after_owner = cl.online_on("EVS1").unwrap_or_default();
    println!(
        "  EVS1 online on {after_owner} {:.3} s after the fault",
        moved.as_secs_f64()
    );
    // Let EVS1 serve mail from its new node for a while before the killed
    // node comes back (and EVS1 fails back).
    let ip = format!("{net}.1:2525");
    let ip = ip.as_str();
    wait_for("EVS1 answering SMTP on its new node", bound, || {
        Ok(smtp_ready(ip))
    })?;
    let serve_until = Instant::now() + Duration::from_secs(4);
    wait_for(
        &format!("EVS1 serving mail on {after_owner}"),
        Duration::from_secs(10),
        || Ok(Instant::now() >= serve_until),
    )?;

    // Timeline from the logs and the load's acknowledgements.
    let survivors: Vec<String> = nodes.iter().filter(|n| **n != victim).cloned().collect();
    let mut timeline: Vec<(u64, String)> = Vec::new();
    let mut add = |needle: &str, what: &str, on: &[String]| {
        if let Some((t, n)) = first_after(&dir, on, t0, needle) {
            timeline.push((t - t0, format!("{what} ({n})")));
        }
    };
    add(
        "peer silent on all networks",
        "heartbeat loss detected",
        &survivors,
    );
    add("regroup installs view", "regroup done", &survivors);
    add(
        "physical disk: owned and online resource=EVS1-Disk1",
        "disk arbitration won for EVS1-Disk1",
        &survivors,
    );
    for r in ["EVS1-Disk1", "EVS1-IP", "EVS1-Name", "EVS1-Store"] {
        add(
            &format!("resource online resource={r} "),
            &format!("{r} online"),
            std::slice::from_ref(&after_owner),
        );
    }
    add(
        "host: group online group=EVS1",
        "EVS1 online",
        std::slice::from_ref(&after_owner),
    );

    // Restart the killed node; EVS1 fails back (policy: allow, at once).
    let restart_at = now_ms();
    lab::start(&dir, &victim, true)?;
    timeline.push((restart_at - t0, format!("{victim} restarted")));
    let fb = wait_for("EVS1 failing back", bound, || {
        Ok(cl.online_on("EVS1").as_deref() == Some(victim.as_str()))
    });
    let failed_back = fb.is_ok();
    if let Ok(d) = fb {
        timeline.push((
            (now_ms() - t0).min(restart_at - t0 + d.as_millis() as u64),
            format!("EVS1 failed back to {victim}"),
        ));
    }

    // Stop the load (it ends by itself) and read its reports.
    let mut reports: BTreeMap<String, Value> = BTreeMap::new();
    let mut p = Progress::new("mail load finishing and checking every mailbox");
    for (g, mut child) in evs.iter().cloned().zip(std::mem::take(&mut cleanup.loads)) {
        let mut out = String::new();
        if let Some(mut so) = child.stdout.take() {
            use std::io::Read;
            while !INTERRUPTED.load(Ordering::SeqCst) {
                let mut buf = [0u8; 4096];
                match so.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
                p.tick();
            }
        }
        let _ = child.wait();
        interrupted()?;
        let v: Value = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                anyhow!("mailload for {g} printed no report (see logs/mailload-{g}.log)")
            })?;
        reports.insert(g, v);
    }
    p.done();
    // First acknowledged EVS1 message after the fault.
    let acks = std::fs::read_to_string(dir.join("EVS1-acks.jsonl")).unwrap_or_default();
    if let Some(first) = acks
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["ack_unix_ms"].as_u64())
        .filter(|t| *t > t0)
        .min()
    {
        timeline.push((
            first - t0,
            "first EVS1 message acknowledged after the fault".into(),
        ));
    }
    timeline.sort();
    println!("\nTimeline (relative to the fault):");
    for (t, what) in &timeline {
        println!("  {}  {what}", ms(*t));
    }

    // Audit: one writer at a time on every data LUN, each holding the
    // reservation when it started writing.
    let mut failures = Vec::new();
    println!("\nSummary:");
    println!(
        "  {:<6} {:<8} {:<12} {:<8} {:>10} {:>6} {:>5} {:>5}  bus audit",
        "EVS", "before", "after fault", "final", "downtime", "acked", "lost", "dups"
    );
    for (i, g) in evs.iter().enumerate() {
        let r = &reports[g];
        let runs = cl.audit(&control, i + 1)?;
        let exclusive = runs
            .iter()
            .all(|x| x["reserved_by_writer"] == Value::Bool(true));
        let writers: Vec<String> = runs
            .iter()
            .filter_map(|x| x["initiator"].as_str())
            .map(|i| i.rsplit(':').next().unwrap_or("").to_ascii_uppercase())
            .collect();
        let mut w = writers.clone();
        w.dedup();
        let verdict = if exclusive {
            format!("exclusive ({})", w.join(" -> "))
        } else {
            "SHARED WRITES".to_string()
        };
        let lost = r["acknowledged_but_missing"].as_u64().unwrap_or(u64::MAX);
        let final_owner = cl.online_on(g).unwrap_or_else(|| "-".into());
        let after = if g == "EVS1" {
            after_owner.clone()
        } else {
            before[g].clone()
        };
        println!(
            "  {:<6} {:<8} {:<12} {:<8} {:>10} {:>6} {:>5} {:>5}  {}",
            g,
            before[g],
            after,
            final_owner,
            ms(ack_gap(&dir.join(format!("{g}-acks.jsonl")))),
            r["acknowledged"].as_u64().unwrap_or(0),
            lost,
            r["duplicates"].as_u64().unwrap_or(0),
            verdict
        );
        if lost != 0 {
            failures.push(format!("{g}: {lost} acknowledged messages missing"));
        }
        if r["acknowledged"].as_u64().unwrap_or(0) == 0 {
            failures.push(format!("{g}: no message was acknowledged"));
        }
        if !exclusive {
            failures.push(format!(
                "{g}: the bus audit shows writes without the reservation"
            ));
        }
    }
    if after_owner != passive && a.nodes > 2 {
        failures.push(format!(
            "EVS1 went to {after_owner}, not the passive node {passive}"
        ));
    }
    if !failed_back {
        failures.push("EVS1 did not fail back to its preferred owner".into());
    }
    if failures.is_empty() {
        println!("\nAll checks passed: 0 acknowledged messages lost, exclusive disk ownership, failover to the passive node and failback.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nChecks failed:");
        for f in &failures {
            println!("  - {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

use std::os::unix::process::CommandExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_parse() {
        // 2026-11-22T00:00:00Z = 1795305600 s.
        assert_eq!(
            line_ms("2026-11-22T00:00:00.000000Z  INFO x"),
            Some(1_795_305_600_000)
        );
        assert_eq!(
            line_ms("2026-11-22T01:02:03.5Z  INFO x"),
            Some(1_795_305_600_000 + 3_723_500)
        );
        assert_eq!(line_ms("not a log line"), None);
    }
}
