//! The workload runner: opens the sessions (or the local file of a
//! `file://` URL, see [`crate::device`]), checks each job against its
//! LUN, runs the workers until the time or the count is up, reads back
//! what `verify` wrote, and collects the disk model counters.

// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busrig_initiator::scsi::cdb;
use busrig_initiator::{Disk, IscsiUrl, Isid, Session, SessionConfig};
use busrig_proto::scsi::pr::PrType;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::config::{jobs, BenchConfig, JobSpec};
use crate::device::{Device, DeviceError, LocalFile};
use crate::error::BenchError;
use crate::pattern;
use crate::report::Tally;
use crate::results::{JobResult, Results};

/// Slot state bits when verifying: the slot is in use by one command.
const SLOT_BUSY: u64 = 1 << 63;
/// Slot content unknown (a write to it failed): not checked.
const SLOT_UNKNOWN: u64 = 1 << 62;

/// Where a run is, for a progress display.
pub trait Progress: Send + Sync + 'static {
    /// The timed run starts. `len` is its length in milliseconds when
    /// `by_time`, else the number of I/Os it will do.
    fn start(&self, len: u64, by_time: bool);
    /// About every 250 ms: the position (milliseconds or I/Os, as in
    /// `start`) and the rates since the last update.
    fn update(&self, position: u64, iops: f64, mb_per_sec: f64);
    /// The timed run is over.
    fn finish(&self);
}

/// How long the commands in flight may take to finish after an
/// interrupt; those still running then are abandoned and not counted.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Ctrl-C for a running bench, like fio's: the run stops issuing I/O,
/// waits up to [`DRAIN`] for the commands in flight and reports what it
/// measured until then ([`Results::interrupted`]). Before the timed run it
/// ends the run with [`BenchError::Interrupted`].
#[derive(Clone)]
pub struct Interrupt(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Interrupt {
    fn default() -> Interrupt {
        Interrupt(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Interrupt {
    /// Not interrupted yet.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Asks the run to stop (from any thread or runtime).
    pub fn interrupt(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`Interrupt::interrupt`] was called.
    pub fn is_interrupted(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once interrupted.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = rx.wait_for(|&v| v).await;
    }
}

/// No progress display.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _len: u64, _by_time: bool) {}
    fn update(&self, _position: u64, _iops: f64, _mb_per_sec: f64) {}
    fn finish(&self) {}
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
    disks: Vec<Arc<Device>>,
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
    failure: Mutex<Option<BenchError>>,
    /// Set by an [`Interrupt`]: no new I/O, then `abandon` after [`DRAIN`].
    interrupted: AtomicBool,
    /// The workers give up the command they wait for.
    abandon: tokio::sync::watch::Sender<bool>,
    /// Commands given up after the drain.
    abandoned: AtomicU64,
}

impl RunCtl {
    fn fail(&self, f: BenchError) {
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

/// [`run`] on a thread of its own with a single-threaded scheduler: the
/// client's sessions, their reader and writer tasks and the workers then
/// take turns on one core instead of waking each other across cores, so
/// the client spends its CPU on I/O and leaves the other core to the
/// target under test (the same for every target compared).
pub async fn run_isolated(
    config: BenchConfig,
    progress: Arc<dyn Progress>,
    interrupt: Interrupt,
) -> Result<Results, BenchError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("busrig-bench".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let r = rt.block_on(run(&config, progress, interrupt));
                    // The report does not wait for the sessions' tasks
                    // to be torn down.
                    let _ = tx.send(r);
                    rt.shutdown_background();
                }
                Err(e) => {
                    let _ = tx.send(Err(BenchError::Io(format!(
                        "cannot start the runtime: {e}"
                    ))));
                }
            }
        })
        .map_err(|e| BenchError::Io(format!("cannot start the bench thread: {e}")))?;
    rx.await.unwrap_or_else(|_| {
        Err(BenchError::Io(
            "the bench thread ended without a result".into(),
        ))
    })
}

/// Runs the bench. A failure before the timed run is the error; one
/// during it stops the run and is reported in the [`Results`]. So is an
/// `interrupt` during the timed run; one before it is the error
/// [`BenchError::Interrupted`].
pub async fn run(
    config: &BenchConfig,
    progress: Arc<dyn Progress>,
    interrupt: Interrupt,
) -> Result<Results, BenchError> {
    let endpoint = Endpoint::parse(config)?;
    let lun = match &endpoint {
        Endpoint::Iscsi(url) => url
            .lun
            .ok_or_else(|| BenchError::Usage("the URL names no LUN".into()))?,
        Endpoint::File(_) => 0,
    };
    if !(config.timeout > 0.0 && config.timeout.is_finite()) {
        return Err(BenchError::Usage("--timeout must be positive".into()));
    }
    if config.sessions == 0 || config.qd == 0 {
        return Err(BenchError::Usage(
            "--sessions and --qd must be at least 1".into(),
        ));
    }
    if config.read_pct > 100 {
        return Err(BenchError::Usage("--read-pct must be 0 to 100".into()));
    }
    if config.bs == 0 || config.bs > u64::from(busrig_initiator::disk::DEFAULT_MAX_TRANSFER) {
        return Err(BenchError::Usage(format!(
            "--bs must be 1 block to {} bytes, got {}",
            busrig_initiator::disk::DEFAULT_MAX_TRANSFER,
            config.bs
        )));
    }
    let duration = match (config.duration, config.count) {
        (Some(d), _) if !(d > 0.0 && d.is_finite()) => {
            return Err(BenchError::Usage("--duration must be positive".into()))
        }
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(0)) => return Err(BenchError::Usage("--count must be positive".into())),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let specs = jobs(config, lun);
    let seed = config.seed.unwrap_or_else(rand::random);

    let setup = async {
        let sessions = match &endpoint {
            Endpoint::Iscsi(url) => open_sessions(config, url).await?,
            Endpoint::File(_) => Vec::new(),
        };
        let mut jobs = Vec::new();
        for spec in specs {
            let devices = endpoint.devices(config, &sessions, spec.lun)?;
            jobs.push(Arc::new(prepare(spec, devices, config.verify, seed).await?));
        }
        let before = match (&config.control, &endpoint) {
            (Some(c), Endpoint::Iscsi(url)) => {
                Some(model_counters(c, config.control_token.as_deref(), url, &jobs).await?)
            }
            _ => None,
        };
        Ok::<_, BenchError>((sessions, jobs, before))
    };
    let (sessions, jobs, before) = tokio::select! {
        r = setup => r?,
        () = interrupt.wait() => {
            return Err(BenchError::Interrupted(
                "before the timed run started; nothing was measured".into(),
            ))
        }
    };

    let started = Instant::now();
    let ctl = Arc::new(RunCtl {
        deadline: duration.map(|d| started + d),
        count: config.count,
        stop: AtomicBool::new(false),
        stamps: AtomicU64::new(1),
        seed,
        ios: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failure: Mutex::new(None),
        interrupted: AtomicBool::new(false),
        abandon: tokio::sync::watch::channel(false).0,
        abandoned: AtomicU64::new(0),
    });
    // An interrupt stops new I/O at once and the wait for the rest after DRAIN.
    let drain = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            interrupt.wait().await;
            ctl.interrupted.store(true, Ordering::Relaxed);
            ctl.stop.store(true, Ordering::Relaxed);
            tokio::time::sleep(DRAIN).await;
            ctl.abandon.send_replace(true);
        })
    };

    match duration {
        Some(d) => progress.start(d.as_millis() as u64, true),
        None => progress.start(config.count.unwrap_or(0) * jobs.len() as u64, false),
    }
    let ticker = {
        let ctl = ctl.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64, 0u64);
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let now = Instant::now();
                let ios = ctl.ios.load(Ordering::Relaxed);
                let bytes = ctl.bytes.load(Ordering::Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let position = match ctl.deadline {
                    Some(_) => now.duration_since(started).as_millis() as u64,
                    None => ios,
                };
                progress.update(
                    position,
                    (ios - last.1) as f64 / dt,
                    (bytes - last.2) as f64 / dt / 1e6,
                );
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
            Err(e) => ctl.fail(BenchError::Io(format!("worker failed: {e}"))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    drain.abort();
    progress.finish();
    let interrupted = ctl.interrupted.load(Ordering::Relaxed);

    // Counted before the read-back, so the counters describe the timed run.
    let after = match (&config.control, &endpoint) {
        (Some(c), Endpoint::Iscsi(url)) => {
            Some(model_counters(c, config.control_token.as_deref(), url, &jobs).await?)
        }
        _ => None,
    };

    // The read-back pass of --verify, untimed; an interrupted run skips it.
    if config.verify && !interrupted && ctl.failure.lock().map(|g| g.is_none()).unwrap_or(false) {
        for (ji, job) in jobs.iter().enumerate() {
            tallies[ji].verified += read_back(job, &ctl).await;
        }
    }

    let logouts: Vec<_> = sessions
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.logout().await })
        })
        .collect();
    let logged_out = async {
        for h in logouts {
            if let Ok(Err(e)) = h.await {
                tracing::debug!(error = %e, "logout");
            }
        }
    };
    // After an interrupt a target that does not answer gets DRAIN, not
    // the login timeout.
    let limit = match interrupted {
        true => DRAIN,
        false => Duration::MAX,
    };
    if tokio::time::timeout(limit, logged_out).await.is_err() {
        tracing::debug!("logout not answered within {DRAIN:?}");
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
    Ok(Results {
        config: config.clone(),
        target: match &endpoint {
            Endpoint::Iscsi(url) => url.target.clone(),
            Endpoint::File(_) => None,
        },
        jobs: jobs
            .iter()
            .map(|j| JobResult {
                spec: j.spec.clone(),
                block_len: j.block_len,
            })
            .collect(),
        tallies,
        secs: elapsed,
        seed,
        model,
        failure,
        interrupted,
        abandoned: ctl.abandoned.load(Ordering::Relaxed),
    })
}

/// What the bench's URL names.
enum Endpoint {
    /// A LUN of an iSCSI target.
    Iscsi(IscsiUrl),
    /// A local file (`file:///path`): the same workload with no network.
    File(PathBuf),
}

impl Endpoint {
    fn parse(config: &BenchConfig) -> Result<Endpoint, BenchError> {
        let Some(path) = config.url.strip_prefix("file://") else {
            return IscsiUrl::parse(&config.url)
                .map(Endpoint::Iscsi)
                .map_err(|e| BenchError::Usage(e.to_string()));
        };
        if path.is_empty() {
            return Err(BenchError::Usage("file:// names no file".into()));
        }
        if config.profile.is_some() {
            return Err(BenchError::Usage(
                "--profile needs two LUNs, an iSCSI URL; a file:// URL is one file".into(),
            ));
        }
        if config.control.is_some() {
            return Err(BenchError::Usage(
                "--control reports a target's disk model; a file:// URL has no target".into(),
            ));
        }
        Ok(Endpoint::File(PathBuf::from(path)))
    }

    /// One device per session for the job on `lun`: a LUN of each
    /// session, or the file opened once per `--sessions`.
    fn devices(
        &self,
        config: &BenchConfig,
        sessions: &[Session],
        lun: u16,
    ) -> Result<Vec<Arc<Device>>, BenchError> {
        match self {
            Endpoint::Iscsi(_) => Ok(sessions
                .iter()
                .map(|s| Arc::new(Device::Lun(Disk::new(s.clone(), lun).with_reset_retries(8))))
                .collect()),
            Endpoint::File(path) => (0..config.sessions)
                .map(|_| {
                    LocalFile::open(path)
                        .map(|f| Arc::new(Device::File(f)))
                        .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))
                })
                .collect(),
        }
    }
}

/// Logs in one session per `--sessions`, each addressing every LUN of the run.
async fn open_sessions(config: &BenchConfig, url: &IscsiUrl) -> Result<Vec<Session>, BenchError> {
    let mut sessions = Vec::new();
    for i in 0..config.sessions {
        let cfg = SessionConfig {
            initiator_name: config.initiator.clone(),
            isid: Isid::random(),
            command_timeout: Duration::from_secs_f64(config.timeout),
            ..SessionConfig::default()
        }
        .with_url(url);
        let s = Session::open(url, cfg)
            .await
            .map_err(|e| BenchError::Io(format!("login of session {}: {e}", i + 1)))?;
        sessions.push(s);
    }
    Ok(sessions)
}

/// Checks a job's geometry against its LUN and refuses to write where
/// another I_T nexus holds a reservation.
async fn prepare(
    spec: JobSpec,
    disks: Vec<Arc<Device>>,
    verify: bool,
    seed: u64,
) -> Result<Job, BenchError> {
    let first = &disks[0];
    let (blocks, block_length) = first
        .capacity()
        .await
        .map_err(|e| io_failure(&spec, "READ CAPACITY", e))?;
    for d in &disks[1..] {
        // Each nexus may hold unit attentions of its own; absorb them here.
        d.capacity()
            .await
            .map_err(|e| io_failure(&spec, "READ CAPACITY", e))?;
    }
    let bl = u64::from(block_length);
    let size = blocks * bl;
    let ctx = format!("job {} (LUN {})", spec.name, spec.lun);
    if spec.bs % bl != 0 {
        return Err(BenchError::Usage(format!(
            "{ctx}: --bs {} is not a multiple of the block length {bl}",
            spec.bs
        )));
    }
    if spec.offset % bl != 0 {
        return Err(BenchError::Usage(format!(
            "{ctx}: --offset {} is not a multiple of the block length {bl}",
            spec.offset
        )));
    }
    if spec.offset >= size {
        return Err(BenchError::Usage(format!(
            "{ctx}: --offset {} is beyond the LUN's {size} bytes",
            spec.offset
        )));
    }
    let range = spec.range.unwrap_or(size - spec.offset);
    if spec.offset + range > size {
        return Err(BenchError::Usage(format!(
            "{ctx}: --offset {} + --range {range} passes the LUN's end at {size} bytes",
            spec.offset
        )));
    }
    let slots = range / spec.bs;
    if slots == 0 {
        return Err(BenchError::Usage(format!(
            "{ctx}: --range {range} holds no {}-byte I/O",
            spec.bs
        )));
    }
    if spec.mode.read_pct(spec.read_pct) < 100 {
        for d in &disks {
            if let Device::Lun(d) = &**d {
                may_write(d, &spec).await?;
            }
        }
    }
    let owners = verify.then(|| (0..slots).map(|_| AtomicU64::new(0)).collect());
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let payload: Vec<u8> = (0..spec.bs).map(|_| rng.gen::<u8>() | 1).collect();
    Ok(Job {
        block_len: block_length,
        slots,
        cursor: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        owners,
        disks,
        payload: Bytes::from(payload),
        spec,
    })
}

fn io_failure(spec: &JobSpec, what: &str, e: DeviceError) -> BenchError {
    if e.is_reservation_conflict() {
        BenchError::Conflict(format!(
            "LUN {} ({}): {what}: RESERVATION CONFLICT: another I_T nexus holds the LUN",
            spec.lun, spec.name
        ))
    } else {
        BenchError::Io(format!("LUN {} ({}): {what}: {e}", spec.lun, spec.name))
    }
}

/// A zero-length WRITE asks exactly "may this nexus write here?" without
/// changing a byte (SBC-3 §5.32: a TRANSFER LENGTH of zero is not an
/// error); RESERVATION CONFLICT means another nexus holds the LUN.
async fn may_write(disk: &Disk, spec: &JobSpec) -> Result<(), BenchError> {
    match disk.execute(cdb::write(0, 0, Bytes::new(), false)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_reservation_conflict() => Err(BenchError::Conflict(format!(
            "LUN {} is held by another node, refusing to write: {}",
            spec.lun,
            describe_holder(disk).await
        ))),
        Err(e) => Err(io_failure(spec, "write probe", e.into())),
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

async fn worker(job: Arc<Job>, disk: Arc<Device>, ctl: Arc<RunCtl>, seed: u64) -> Tally {
    let mut tally = Tally::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let spec = &job.spec;
    let read_pct = spec.mode.read_pct(spec.read_pct);
    let bl = u64::from(job.block_len);
    let blocks = (spec.bs / bl) as u32;
    let slots = job.slots;
    let disk = &*disk;
    let mut abandon = ctl.abandon.subscribe();
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
        let data = match (is_read, &job.owners) {
            (true, _) => Bytes::new(),
            (false, Some(_)) => Bytes::from(pattern::fill(spec.bs as usize, byte_off, stamp)),
            (false, None) => job.payload.clone(),
        };
        let t0 = Instant::now();
        let io = async {
            match is_read {
                true => disk.read(lba, blocks, job.block_len).await,
                false => disk
                    .write(lba, job.block_len, data, spec.fua)
                    .await
                    .map(|()| Bytes::new()),
            }
        };
        let r = tokio::select! {
            biased;
            r = io => r,
            _ = abandon.wait_for(|&a| a) => {
                // Given up after an interrupt's drain: not counted, and a
                // write's slot holds unknown data.
                ctl.abandoned.fetch_add(1, Ordering::Relaxed);
                if let Some(o) = &job.owners {
                    o[slot as usize].store(if is_read { prev } else { SLOT_UNKNOWN }, Ordering::Release);
                }
                break;
            }
        };
        let lat = t0.elapsed();
        let mut release = prev;
        match r {
            Ok(data) => {
                if is_read {
                    tally.read.record(spec.bs, lat);
                    if prev != 0 && prev & SLOT_UNKNOWN == 0 {
                        if let Some(at) = pattern::check(&data, byte_off, prev) {
                            ctl.fail(BenchError::Miscompare(format!(
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
                    match disk
                        .read(off / bl, (job.spec.bs / bl) as u32, job.block_len)
                        .await
                    {
                        Ok(d) => match pattern::check(&d, off, stamp) {
                            None => ok += 1,
                            Some(at) => ctl.fail(BenchError::Miscompare(format!(
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
    token: Option<&str>,
    url: &IscsiUrl,
    jobs: &[Arc<Job>],
) -> Result<Value, BenchError> {
    let (code, v) = busrig_http::request(control, "GET", "/status", None, token)
        .await
        .map_err(|e| BenchError::Io(format!("control plane at {control}: {e}")))?;
    if code != 200 {
        return Err(BenchError::Io(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
