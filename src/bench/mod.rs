//! `busrig bench URL`: storage-aligned I/O benchmarks through busrig's
//! initiator, against `busrig target` or any iSCSI target.
//!
//! A run is one or more jobs (one, or two with `--profile exchange2003`).
//! A job drives one LUN from `--sessions` sessions with `--qd` commands in
//! flight on each; every command is timed from just before it is handed
//! to the session to its SCSI status, and the latencies go into
//! HdrHistograms merged at the end.
//!
//! I/O offsets are `--offset + k * --bs` for slots `k` within `--range`:
//! sequential jobs walk the slots in order from one shared cursor (so
//! `--qd` commands go to consecutive slots, as fio does), random jobs draw
//! them uniformly. `--offset 32256` reproduces the classic partition start
//! at sector 63, which puts every 64 KiB I/O across a 64 KiB stripe unit.
//!
//! With `--verify` each slot has an owner: a worker claims a slot before
//! its I/O and releases it after, so no two commands touch the same bytes
//! at once and every read of a written slot is checked against the stamp
//! of its last write (see [`pattern`]). After the timed run every written
//! slot is read back once more.
//!
//! Before anything is written the bench asks the LUN, with a zero-length
//! WRITE, whether this I_T nexus may write; a RESERVATION CONFLICT is
//! reported with what PERSISTENT RESERVE IN says about the holder, and the
//! exit status is 24 as in `busrig disk`.

// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

mod pattern;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busrig_initiator::scsi::cdb;
use busrig_initiator::{Disk, Error, IscsiUrl, Isid, Session, SessionConfig};
use busrig_proto::scsi::pr::PrType;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use report::{Series, Side};

/// Exit status for RESERVATION CONFLICT, as sg3_utils and `busrig disk`.
const EXIT_CONFLICT: u8 = 24;
/// Exit status for data that did not read back as written.
const EXIT_MISCOMPARE: u8 = 14;
/// Exit status for a transport or command failure during the run.
const EXIT_FAILED: u8 = 99;

/// Slot state bits when verifying: the slot is in use by one command.
const SLOT_BUSY: u64 = 1 << 63;
/// Slot content unknown (a write to it failed): not checked.
const SLOT_UNKNOWN: u64 = 1 << 62;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RwMode {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential, reads and writes mixed by --read-pct.
    #[value(alias = "rw")]
    Readwrite,
    /// Random, reads and writes mixed by --read-pct.
    Randrw,
}

impl RwMode {
    fn random(self) -> bool {
        matches!(self, RwMode::Randread | RwMode::Randwrite | RwMode::Randrw)
    }

    /// Percentage of reads.
    fn read_pct(self, mixed: u8) -> u8 {
        match self {
            RwMode::Read | RwMode::Randread => 100,
            RwMode::Write | RwMode::Randwrite => 0,
            RwMode::Readwrite | RwMode::Randrw => mixed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RwMode::Read => "read",
            RwMode::Write => "write",
            RwMode::Randread => "randread",
            RwMode::Randwrite => "randwrite",
            RwMode::Readwrite => "readwrite",
            RwMode::Randrw => "randrw",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Jetstress-like: 4 KiB random database I/O at 2 reads per write on
    /// the URL's LUN, sequential 4 KiB FUA log writes on --log-lun.
    Exchange2003,
}

#[derive(clap::Args)]
#[command(about = "I/O benchmark of one LUN (or two, with --profile) through busrig's initiator")]
pub struct BenchArgs {
    /// iscsi://[user%secret@]host[:port]/target-iqn/lun
    #[arg(value_name = "URL")]
    url: String,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    rw: RwMode,
    /// Share of reads in readwrite and randrw, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    read_pct: u8,
    /// Bytes per I/O (4k, 64KiB, 1M, 4096).
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_bytes)]
    bs: u64,
    /// Commands in flight per session.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    qd: u32,
    /// Byte offset of the first I/O slot; 32256 is the classic 63-sector
    /// partition start. A multiple of the LUN's block length.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_bytes)]
    offset: u64,
    /// Bytes from --offset that the I/O covers (default: to the end of the LUN).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    range: Option<u64>,
    /// Seconds to run (default 10 unless --count is given).
    #[arg(long, value_name = "SECS", conflicts_with = "count")]
    duration: Option<f64>,
    /// Stop after N I/Os (per job).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Writes with Force Unit Access (durable before they are acknowledged).
    #[arg(long)]
    fua: bool,
    /// Sessions per job, each its own I_T nexus (same initiator name,
    /// different ISIDs).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    sessions: u32,
    /// A named mix instead of --rw/--bs/--fua.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// The log LUN of --profile exchange2003 (default: the URL's LUN + 1).
    #[arg(long, value_name = "LUN")]
    log_lun: Option<u16>,
    /// Write self-describing data and check every read of it.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write the latency histogram as an SVG plot.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Overlay an earlier run (its --json output) on the --svg plot.
    #[arg(long, value_name = "JSON", requires = "svg")]
    svg_baseline: Option<PathBuf>,
    /// Control address of a `busrig target`: report its disk model counters
    /// (back-end operations, split I/Os) for the LUNs of this run.
    #[arg(long, value_name = "ADDR")]
    control: Option<String>,
    /// Initiator name to log in with.
    #[arg(long, value_name = "NAME", default_value = busrig_initiator::DEFAULT_INITIATOR_NAME)]
    initiator: String,
    /// Seed of the random offsets and of the verify stamps.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Time limit of one command, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
}

/// "4k", "64KiB", "1M", "32256": binary units, as fio reads them.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let norm = match t.char_indices().last() {
        Some((i, c)) if matches!(c, 'k' | 'm' | 'g' | 't') => {
            format!("{}{}", &t[..i], c.to_ascii_uppercase())
        }
        _ => t.to_string(),
    };
    busrig_target::config::parse_size(&norm).map_err(|e| format!("size {e}"))
}

/// One job as asked for.
#[derive(Clone, Debug)]
struct JobSpec {
    name: &'static str,
    lun: u16,
    mode: RwMode,
    read_pct: u8,
    bs: u64,
    qd: u32,
    offset: u64,
    range: Option<u64>,
    fua: bool,
}

impl JobSpec {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "lun": self.lun,
            "rw": self.mode.name(),
            "read_pct": self.mode.read_pct(self.read_pct),
            "bs": self.bs,
            "qd": self.qd,
            "offset": self.offset,
            "fua": self.fua,
        })
    }
}

fn jobs(args: &BenchArgs, lun: u16) -> Vec<JobSpec> {
    match args.profile {
        None => vec![JobSpec {
            name: "main",
            lun,
            mode: args.rw,
            read_pct: args.read_pct,
            bs: args.bs,
            qd: args.qd,
            offset: args.offset,
            range: args.range,
            fua: args.fua,
        }],
        // Jetstress's database mix is about two reads per write on 4 KiB
        // (Exchange 2003's page size), random over the database; the log
        // is written sequentially, 4 KiB-aligned, each write durable
        // before it is acknowledged, one at a time.
        Some(Profile::Exchange2003) => vec![
            JobSpec {
                name: "database",
                lun,
                mode: RwMode::Randrw,
                read_pct: 67,
                bs: 4096,
                qd: args.qd,
                offset: args.offset,
                range: args.range,
                fua: false,
            },
            JobSpec {
                name: "log",
                lun: args.log_lun.unwrap_or(lun.saturating_add(1)),
                mode: RwMode::Write,
                read_pct: 0,
                bs: 4096,
                qd: 1,
                offset: 0,
                range: args.range,
                fua: true,
            },
        ],
    }
}

/// A job ready to run: its geometry checked against the LUN.
struct Job {
    spec: JobSpec,
    block_len: u32,
    slots: u64,
    cursor: AtomicU64,
    issued: AtomicU64,
    /// Per-slot stamp of the last write, with `--verify`.
    owners: Option<Vec<AtomicU64>>,
    disks: Vec<Arc<Disk>>,
    /// The same data for every write when not verifying.
    payload: Bytes,
}

/// What stops the run and what went wrong in it.
struct RunCtl {
    deadline: Option<Instant>,
    count: Option<u64>,
    stop: AtomicBool,
    stamps: AtomicU64,
    seed: u64,
    ios: AtomicU64,
    bytes: AtomicU64,
    failure: Mutex<Option<Failure>>,
}

impl RunCtl {
    fn fail(&self, f: Failure) {
        let mut g = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(f);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn next_stamp(&self) -> u64 {
        let n = self.stamps.fetch_add(1, Ordering::Relaxed);
        ((self.seed & 0xff_ffff) << 36 | (n & 0xf_ffff_ffff)) & !(SLOT_BUSY | SLOT_UNKNOWN) | 1
    }
}

/// Why the run did not end well.
#[derive(Debug, Clone)]
enum Failure {
    Conflict(String),
    Miscompare(String),
    Io(String),
    Usage(String),
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Failure::Conflict(_) => EXIT_CONFLICT,
            Failure::Miscompare(_) => EXIT_MISCOMPARE,
            Failure::Io(_) => EXIT_FAILED,
            Failure::Usage(_) => 1,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Conflict(m) | Failure::Miscompare(m) | Failure::Io(m) | Failure::Usage(m) => m,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Failure::Conflict(_) => "reservation conflict",
            Failure::Miscompare(_) => "miscompare",
            Failure::Io(_) => "i/o error",
            Failure::Usage(_) => "usage",
        }
    }
}

/// What one worker measured.
#[derive(Default)]
struct Tally {
    read: Side,
    write: Side,
    verified: u64,
}

/// Runs the bench on a thread of its own with a single-threaded
/// scheduler: the client's sessions, their reader and writer tasks and the
/// workers then take turns on one core instead of waking each other
/// across cores, so the client spends its CPU on I/O and leaves the other
/// core to the target under test (the same for every target compared).
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::alloc::keep_freed_io_buffers();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("busrig-bench".into())
        .spawn(move || {
            let code = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run_here(args)),
                Err(e) => {
                    eprintln!("busrig bench: cannot start the runtime: {e}");
                    EXIT_FAILED
                }
            };
            let _ = tx.send(code);
        })?;
    let code = rx.await.unwrap_or(EXIT_FAILED);
    Ok(ExitCode::from(code))
}

async fn run_here(args: BenchArgs) -> u8 {
    match run_inner(&args).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("busrig bench: {}: {}", f.kind(), f.message());
            if args.json {
                println!(
                    "{}",
                    json!({ "error": f.message(), "kind": f.kind(), "exit_status": f.status() })
                );
            }
            f.status()
        }
    }
}

async fn run_inner(args: &BenchArgs) -> Result<u8, Failure> {
    let url = IscsiUrl::parse(&args.url).map_err(|e| Failure::Usage(e.to_string()))?;
    let lun = url
        .lun
        .ok_or_else(|| Failure::Usage("the URL names no LUN".into()))?;
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(Failure::Usage("--timeout must be positive".into()));
    }
    if args.bs == 0 || args.bs > u64::from(busrig_initiator::disk::DEFAULT_MAX_TRANSFER) {
        return Err(Failure::Usage(format!(
            "--bs must be 1 block to {} bytes, got {}",
            busrig_initiator::disk::DEFAULT_MAX_TRANSFER,
            args.bs
        )));
    }
    let duration = match (args.duration, args.count) {
        (Some(d), _) if !(d > 0.0 && d.is_finite()) => {
            return Err(Failure::Usage("--duration must be positive".into()))
        }
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(0)) => return Err(Failure::Usage("--count must be positive".into())),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let specs = jobs(args, lun);
    let seed = args.seed.unwrap_or_else(rand::random);

    // Sessions: one per --sessions, each addressing every LUN of the run.
    let mut sessions = Vec::new();
    for i in 0..args.sessions {
        let cfg = SessionConfig {
            initiator_name: args.initiator.clone(),
            isid: Isid::random(),
            command_timeout: Duration::from_secs_f64(args.timeout),
            ..SessionConfig::default()
        }
        .with_url(&url);
        let s = Session::open(&url, cfg)
            .await
            .map_err(|e| Failure::Io(format!("login of session {}: {e}", i + 1)))?;
        sessions.push(s);
    }

    let mut jobs = Vec::new();
    for spec in specs {
        jobs.push(Arc::new(prepare(spec, &sessions, args.verify, seed).await?));
    }

    let before = match &args.control {
        Some(c) => Some(model_counters(c, &url, &jobs).await?),
        None => None,
    };

    let started = Instant::now();
    let ctl = Arc::new(RunCtl {
        deadline: duration.map(|d| started + d),
        count: args.count,
        stop: AtomicBool::new(false),
        stamps: AtomicU64::new(1),
        seed,
        ios: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failure: Mutex::new(None),
    });

    let progress = progress_bar(args, duration, jobs.len() as u64);
    let ticker = {
        let ctl = ctl.clone();
        let pb = progress.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64, 0u64);
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let now = Instant::now();
                let ios = ctl.ios.load(Ordering::Relaxed);
                let bytes = ctl.bytes.load(Ordering::Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                pb.set_message(format!(
                    "{:.0} IOPS {:.1} MB/s",
                    (ios - last.1) as f64 / dt,
                    (bytes - last.2) as f64 / dt / 1e6
                ));
                match ctl.deadline {
                    Some(_) => pb.set_position(now.duration_since(started).as_millis() as u64),
                    None => pb.set_position(ios),
                }
                last = (now, ios, bytes);
            }
        })
    };

    let mut handles = Vec::new();
    for (ji, job) in jobs.iter().enumerate() {
        for disk in &job.disks {
            for w in 0..job.spec.qd {
                let job = job.clone();
                let disk = disk.clone();
                let ctl = ctl.clone();
                let rng_seed = seed ^ ((ji as u64) << 48) ^ ((w as u64) << 32) ^ disk.lun() as u64;
                handles.push((
                    ji,
                    tokio::spawn(async move { worker(job, disk, ctl, rng_seed).await }),
                ));
            }
        }
    }
    let mut tallies: Vec<Tally> = jobs.iter().map(|_| Tally::default()).collect();
    for (ji, h) in handles {
        match h.await {
            Ok(t) => {
                tallies[ji].read.add(&t.read);
                tallies[ji].write.add(&t.write);
                tallies[ji].verified += t.verified;
            }
            Err(e) => ctl.fail(Failure::Io(format!("worker failed: {e}"))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();

    // Counted before the read-back, so the counters describe the timed run.
    let after = match &args.control {
        Some(c) => Some(model_counters(c, &url, &jobs).await?),
        None => None,
    };

    // The read-back pass of --verify, untimed.
    if args.verify && ctl.failure.lock().map(|g| g.is_none()).unwrap_or(false) {
        for (ji, job) in jobs.iter().enumerate() {
            tallies[ji].verified += read_back(job, &ctl).await;
        }
    }

    for s in &sessions {
        if let Err(e) = s.logout().await {
            tracing::debug!(error = %e, "logout");
        }
    }

    let failure = ctl
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let model = match (before, after) {
        (Some(b), Some(a)) => Some(model_delta(&b, &a)),
        _ => None,
    };
    let result = Results {
        args,
        url: &url,
        jobs: &jobs,
        tallies: &tallies,
        secs: elapsed,
        seed,
        model,
        failure: failure.clone(),
    };
    if let Some(path) = &args.svg {
        write_svg(path, args.svg_baseline.as_deref(), &result)?;
    }
    result.print();
    Ok(failure.map_or(0, |f| f.status()))
}

fn progress_bar(args: &BenchArgs, duration: Option<Duration>, jobs: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let len = match duration {
        Some(d) => d.as_millis() as u64,
        None => args.count.unwrap_or(0) * jobs,
    };
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = match duration {
        Some(_) => "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
        None => "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} I/Os {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    if args.json {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb
}

/// Checks a job's geometry against its LUN, opens its disks and refuses
/// to write where another I_T nexus holds a reservation.
async fn prepare(
    spec: JobSpec,
    sessions: &[Session],
    verify: bool,
    seed: u64,
) -> Result<Job, Failure> {
    let disks: Vec<Arc<Disk>> = sessions
        .iter()
        .map(|s| Arc::new(Disk::new(s.clone(), spec.lun).with_reset_retries(8)))
        .collect();
    let first = &disks[0];
    let cap = first
        .capacity()
        .await
        .map_err(|e| io_failure(&spec, "READ CAPACITY", e))?;
    for d in &disks[1..] {
        // Each nexus may hold unit attentions of its own; absorb them here.
        d.capacity()
            .await
            .map_err(|e| io_failure(&spec, "READ CAPACITY", e))?;
    }
    let bl = u64::from(cap.block_length);
    let size = cap.blocks * bl;
    let ctx = format!("job {} (LUN {})", spec.name, spec.lun);
    if spec.bs % bl != 0 {
        return Err(Failure::Usage(format!(
            "{ctx}: --bs {} is not a multiple of the block length {bl}",
            spec.bs
        )));
    }
    if spec.offset % bl != 0 {
        return Err(Failure::Usage(format!(
            "{ctx}: --offset {} is not a multiple of the block length {bl}",
            spec.offset
        )));
    }
    if spec.offset >= size {
        return Err(Failure::Usage(format!(
            "{ctx}: --offset {} is beyond the LUN's {size} bytes",
            spec.offset
        )));
    }
    let range = spec.range.unwrap_or(size - spec.offset);
    if spec.offset + range > size {
        return Err(Failure::Usage(format!(
            "{ctx}: --offset {} + --range {range} passes the LUN's end at {size} bytes",
            spec.offset
        )));
    }
    let slots = range / spec.bs;
    if slots == 0 {
        return Err(Failure::Usage(format!(
            "{ctx}: --range {range} holds no {}-byte I/O",
            spec.bs
        )));
    }
    if spec.mode.read_pct(spec.read_pct) < 100 {
        for d in &disks {
            may_write(d, &spec).await?;
        }
    }
    let owners = verify.then(|| (0..slots).map(|_| AtomicU64::new(0)).collect());
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let payload: Vec<u8> = (0..spec.bs).map(|_| rng.gen::<u8>() | 1).collect();
    Ok(Job {
        block_len: cap.block_length,
        slots,
        cursor: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        owners,
        disks,
        payload: Bytes::from(payload),
        spec,
    })
}

fn io_failure(spec: &JobSpec, what: &str, e: Error) -> Failure {
    if e.is_reservation_conflict() {
        Failure::Conflict(format!(
            "LUN {} ({}): {what}: RESERVATION CONFLICT: another I_T nexus holds the LUN",
            spec.lun, spec.name
        ))
    } else {
        Failure::Io(format!("LUN {} ({}): {what}: {e}", spec.lun, spec.name))
    }
}

/// A zero-length WRITE asks exactly "may this nexus write here?" without
/// changing a byte (SBC-3 §5.32: a TRANSFER LENGTH of zero is not an
/// error); RESERVATION CONFLICT means another nexus holds the LUN.
async fn may_write(disk: &Disk, spec: &JobSpec) -> Result<(), Failure> {
    match disk.execute(cdb::write(0, 0, Bytes::new(), false)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_reservation_conflict() => Err(Failure::Conflict(format!(
            "LUN {} is held by another node, refusing to write: {}",
            spec.lun,
            describe_holder(disk).await
        ))),
        Err(e) => Err(io_failure(spec, "write probe", e)),
    }
}

/// Who holds the LUN, as far as PERSISTENT RESERVE IN tells.
async fn describe_holder(disk: &Disk) -> String {
    match disk.pr_read_reservation().await {
        Ok(r) => match r.reservation {
            Some(h) => {
                let who = match disk.pr_read_full_status().await {
                    Ok(fs) => fs
                        .descriptors
                        .iter()
                        .find(|e| e.holder)
                        .map(|e| format!(" ({})", e.transport_id))
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                format!(
                    "persistent reservation {} held by key 0x{:x}{who}",
                    PrType::from_code(h.type_code)
                        .map(|t| t.abbrev())
                        .unwrap_or("of unknown type"),
                    h.key
                )
            }
            None => "a SCSI-2 reservation held by another I_T nexus".into(),
        },
        Err(_) => "a SCSI-2 reservation held by another I_T nexus".into(),
    }
}

/// Claims a slot for one command (with --verify): returns the slot and
/// the stamp of its last write.
fn claim(owners: &[AtomicU64], mut slot: u64, next: &mut impl FnMut() -> u64) -> (u64, u64) {
    loop {
        let cell = &owners[slot as usize];
        let v = cell.load(Ordering::Acquire);
        if v & SLOT_BUSY == 0
            && cell
                .compare_exchange(v, v | SLOT_BUSY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return (slot, v);
        }
        slot = next();
    }
}

async fn worker(job: Arc<Job>, disk: Arc<Disk>, ctl: Arc<RunCtl>, seed: u64) -> Tally {
    let mut tally = Tally::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let spec = &job.spec;
    let read_pct = spec.mode.read_pct(spec.read_pct);
    let bl = u64::from(job.block_len);
    let blocks = (spec.bs / bl) as u32;
    let slots = job.slots;
    loop {
        if ctl.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(d) = ctl.deadline {
            if Instant::now() >= d {
                break;
            }
        }
        if let Some(n) = ctl.count {
            if job.issued.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
        }
        let is_read = match read_pct {
            100 => true,
            0 => false,
            p => rng.gen_range(0..100u8) < p,
        };
        let mut pick = || {
            if spec.mode.random() {
                rng.gen_range(0..slots)
            } else {
                job.cursor.fetch_add(1, Ordering::Relaxed) % slots
            }
        };
        let first = pick();
        let (slot, prev) = match &job.owners {
            Some(o) => claim(o, first, &mut pick),
            None => (first, 0),
        };
        let byte_off = spec.offset + slot * spec.bs;
        let lba = byte_off / bl;
        let stamp = if is_read || job.owners.is_none() {
            0
        } else {
            ctl.next_stamp()
        };
        let cdb = if is_read {
            cdb::read(lba, blocks, job.block_len, false)
        } else {
            let data = if job.owners.is_some() {
                Bytes::from(pattern::fill(spec.bs as usize, byte_off, stamp))
            } else {
                job.payload.clone()
            };
            cdb::write(lba, blocks, data, spec.fua)
        };
        let t0 = Instant::now();
        let r = disk.execute(cdb).await;
        let lat = t0.elapsed();
        let mut release = prev;
        match r {
            Ok(data) => {
                if is_read {
                    tally.read.record(spec.bs, lat);
                    if prev != 0 && prev & SLOT_UNKNOWN == 0 {
                        if let Some(at) = pattern::check(&data, byte_off, prev) {
                            ctl.fail(Failure::Miscompare(format!(
                                "LUN {} byte {at}: read data differs from what write stamp {prev:#x} left (found stamp {:#x})",
                                spec.lun,
                                pattern::stamp_of(&data[(at - byte_off) as usize / pattern::SECTOR * pattern::SECTOR..]).unwrap_or(0)
                            )));
                        } else {
                            tally.verified += 1;
                        }
                    }
                } else {
                    tally.write.record(spec.bs, lat);
                    release = stamp;
                }
                ctl.ios.fetch_add(1, Ordering::Relaxed);
                ctl.bytes.fetch_add(spec.bs, Ordering::Relaxed);
            }
            Err(e) => {
                if !is_read {
                    release = SLOT_UNKNOWN;
                }
                let what = if is_read { "READ" } else { "WRITE" };
                ctl.fail(io_failure(spec, &format!("{what} at byte {byte_off}"), e));
            }
        }
        if let Some(o) = &job.owners {
            o[slot as usize].store(release, Ordering::Release);
        }
    }
    tally
}

/// Reads every slot the run wrote and checks it; returns how many matched.
async fn read_back(job: &Arc<Job>, ctl: &Arc<RunCtl>) -> u64 {
    let Some(owners) = &job.owners else {
        return 0;
    };
    let written: Vec<(u64, u64)> = owners
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64, s.load(Ordering::Acquire)))
        .filter(|(_, v)| *v != 0 && *v & SLOT_UNKNOWN == 0)
        .collect();
    let written = Arc::new(written);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for disk in &job.disks {
        for _ in 0..job.spec.qd {
            let (disk, job, ctl, written, next) = (
                disk.clone(),
                job.clone(),
                ctl.clone(),
                written.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                let bl = u64::from(job.block_len);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((slot, stamp)) = written.get(i).copied() else {
                        break;
                    };
                    if ctl.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let off = job.spec.offset + slot * job.spec.bs;
                    let c = cdb::read(off / bl, (job.spec.bs / bl) as u32, job.block_len, false);
                    match disk.execute(c).await {
                        Ok(d) => match pattern::check(&d, off, stamp) {
                            None => ok += 1,
                            Some(at) => ctl.fail(Failure::Miscompare(format!(
                                "LUN {} byte {at}: read-back differs from write stamp {stamp:#x}",
                                job.spec.lun
                            ))),
                        },
                        Err(e) => ctl.fail(io_failure(&job.spec, "read-back", e)),
                    }
                }
                ok
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    ok
}

/// The disk model counters of the run's LUNs from the control plane.
async fn model_counters(
    control: &str,
    url: &IscsiUrl,
    jobs: &[Arc<Job>],
) -> Result<Value, Failure> {
    let token = std::env::var("BUSRIG_CONTROL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (code, v) = busrig_http::request(control, "GET", "/status", None, token.as_deref())
        .await
        .map_err(|e| Failure::Io(format!("control plane at {control}: {e}")))?;
    if code != 200 {
        return Err(Failure::Io(format!(
            "control plane at {control} answered {code}"
        )));
    }
    let target = url.target.clone().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for j in jobs {
        let entry = v["luns"].as_array().into_iter().flatten().find(|l| {
            l["lun"].as_u64() == Some(u64::from(j.spec.lun))
                && l["target"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&target))
        });
        out.insert(
            j.spec.name.to_string(),
            entry
                .map(|l| l["disk_model"].clone())
                .unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(out))
}

/// Counter differences between two snapshots of [`model_counters`].
fn model_delta(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (job, a) in after.as_object().into_iter().flatten() {
        let b = &before[job];
        let Some(ac) = a["counters"].as_object() else {
            out.insert(job.clone(), Value::Null);
            continue;
        };
        let mut d = serde_json::Map::new();
        for (k, v) in ac {
            let (Some(x), Some(y)) = (v.as_u64(), b["counters"][k].as_u64()) else {
                continue;
            };
            d.insert(k.clone(), json!(x.saturating_sub(y)));
        }
        out.insert(
            job.clone(),
            json!({ "model": a["model"], "stripe_unit": a["stripe_unit"], "service_time_us": a["service_time_us"], "counters": d }),
        );
    }
    Value::Object(out)
}

struct Results<'a> {
    args: &'a BenchArgs,
    url: &'a IscsiUrl,
    jobs: &'a [Arc<Job>],
    tallies: &'a [Tally],
    secs: f64,
    seed: u64,
    model: Option<Value>,
    failure: Option<Failure>,
}

impl Results<'_> {
    fn total(&self) -> Side {
        let mut t = Side::default();
        for x in self.tallies {
            t.add(&x.read);
            t.add(&x.write);
        }
        t
    }

    fn json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .zip(self.tallies)
            .map(|(j, t)| {
                let mut both = t.read.clone();
                both.add(&t.write);
                json!({
                    "job": j.spec.json(),
                    "block_length": j.block_len,
                    "read": t.read.json(self.secs),
                    "write": t.write.json(self.secs),
                    "total": both.json(self.secs),
                    "verified_ios": t.verified,
                })
            })
            .collect();
        let total = self.total();
        json!({
            "url": self.args.url,
            "target": self.url.target,
            "profile": self.args.profile.map(|_| "exchange2003"),
            "sessions": self.args.sessions,
            "verify": self.args.verify,
            "seed": self.seed,
            "duration_secs": (self.secs * 1000.0).round() / 1000.0,
            "jobs": jobs,
            "total": total.json(self.secs),
            "verified_ios": self.tallies.iter().map(|t| t.verified).sum::<u64>(),
            "disk_model": self.model,
            "latency_histogram": report::bins_json(&total.hist),
            "error": self.failure.as_ref().map(|f| json!({ "kind": f.kind(), "message": f.message(), "exit_status": f.status() })),
        })
    }

    fn print(&self) {
        if self.args.json {
            println!("{}", self.json());
            return;
        }
        println!(
            "busrig bench {} ({} session{}, {:.2} s)",
            self.args.url,
            self.args.sessions,
            if self.args.sessions == 1 { "" } else { "s" },
            self.secs
        );
        for (j, t) in self.jobs.iter().zip(self.tallies) {
            let s = &j.spec;
            println!(
                "job {}: LUN {} {} bs={} qd={} offset={}{}{}",
                s.name,
                s.lun,
                s.mode.name(),
                s.bs,
                s.qd,
                s.offset,
                if s.fua { " fua" } else { "" },
                if matches!(s.mode, RwMode::Readwrite | RwMode::Randrw) {
                    format!(" read-pct={}", s.read_pct)
                } else {
                    String::new()
                }
            );
            if t.read.ios > 0 {
                println!("{}", t.read.line("read", self.secs));
            }
            if t.write.ios > 0 {
                println!("{}", t.write.line("write", self.secs));
            }
            if self.args.verify {
                println!("  verified {} reads of written data", t.verified);
            }
            if let Some(m) = self.model.as_ref().map(|m| &m[s.name]) {
                if let Some(c) = m["counters"].as_object() {
                    println!(
                        "  disk model: {} back-end operations, {} split I/Os of {} I/Os",
                        c.get("backend_ops").and_then(Value::as_u64).unwrap_or(0),
                        c.get("split_ios").and_then(Value::as_u64).unwrap_or(0),
                        c.get("ios").and_then(Value::as_u64).unwrap_or(0),
                    );
                }
            }
        }
        if self.jobs.len() > 1 {
            println!("{}", self.total().line("total", self.secs));
        }
        if let Some(f) = &self.failure {
            println!("stopped: {}: {}", f.kind(), f.message());
        }
    }
}

fn write_svg(
    path: &std::path::Path,
    baseline: Option<&std::path::Path>,
    r: &Results<'_>,
) -> Result<(), Failure> {
    let total = r.total();
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let spec = &r.jobs[0].spec;
    let label = format!(
        "{} bs={} qd={} offset={}",
        spec.mode.name(),
        spec.bs,
        spec.qd,
        spec.offset
    );
    let mut series = Vec::new();
    if let Some(b) = baseline {
        let text = std::fs::read_to_string(b)
            .map_err(|e| Failure::Usage(format!("{}: {e}", b.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{}: not bench JSON: {e}", b.display())))?;
        let bins = report::bins_from_json(&v)
            .ok_or_else(|| Failure::Usage(format!("{}: no latency_histogram", b.display())))?;
        let job = &v["jobs"][0]["job"];
        let p = &v["total"]["lat_us"];
        series.push(Series {
            label: format!(
                "baseline: {} bs={} qd={} offset={}",
                job["rw"].as_str().unwrap_or("?"),
                job["bs"],
                job["qd"],
                job["offset"]
            ),
            bins,
            colour: "#7f7f7f",
            marks: vec![
                ("p50", p["p50"].as_f64().unwrap_or(0.0)),
                ("p99", p["p99"].as_f64().unwrap_or(0.0)),
            ],
        });
    }
    series.push(Series {
        label,
        bins: report::bins(&total.hist),
        colour: "#d62728",
        marks: vec![("p50", q(&total.hist, 0.5)), ("p99", q(&total.hist, 0.99))],
    });
    let title = format!(
        "busrig bench latency, {} I/Os, {:.0} IOPS",
        total.ios,
        total.ios as f64 / r.secs.max(1e-9)
    );
    std::fs::write(path, report::svg(&title, &series))
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_fio() {
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        assert_eq!(parse_bytes("32256"), Ok(32256));
        assert!(parse_bytes("four").is_err());
    }

    #[test]
    fn claimed_slots_are_exclusive() {
        let owners: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n % 2
        };
        let (a, _) = claim(&owners, 0, &mut next);
        let (b, _) = claim(&owners, 0, &mut next);
        assert_eq!((a, b), (0, 1));
    }

    #[test]
    fn exchange_profile_has_database_and_log_jobs() {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            b: BenchArgs,
        }
        let p = P::parse_from([
            "x",
            "iscsi://h/iqn.x:t/1",
            "--profile",
            "exchange2003",
            "--qd",
            "8",
        ]);
        let j = jobs(&p.b, 1);
        assert_eq!(j.len(), 2);
        assert_eq!(
            (j[0].lun, j[0].mode, j[0].read_pct, j[0].qd),
            (1, RwMode::Randrw, 67, 8)
        );
        assert_eq!(
            (j[1].lun, j[1].mode, j[1].fua, j[1].bs),
            (2, RwMode::Write, true, 4096)
        );
    }
}
