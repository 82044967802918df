//! `busrig bench URL`: I/O benchmarks through busrig's initiator (the
//! `busrig-bench` crate). This file parses the arguments, draws the
//! progress bar, turns Ctrl-C into a [`busrig_bench::Interrupt`] (a
//! second one quits at once) and prints the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use busrig_bench::error::EXIT_INTERRUPTED;
use busrig_bench::{BenchConfig, BenchError, Interrupt, Profile, Progress, Results, RwMode};
use serde_json::json;

/// Access pattern (`busrig_bench::RwMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RwArg {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// Jetstress-like: 4 KiB random database I/O at 2 reads per write on
    /// the URL's LUN, sequential 4 KiB FUA log writes on --log-lun.
    Exchange2003,
}

#[derive(clap::Args)]
#[command(about = "I/O benchmark of one LUN (or two, with --profile) through busrig's initiator")]
pub struct BenchArgs {
    /// iscsi://[user%secret@]host[:port]/target-iqn/lun, or file:///path
    /// to run the same workload on a local file with no network (buffered,
    /// 512-byte blocks, as `busrig target` uses a backing file).
    #[arg(value_name = "URL")]
    url: String,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    rw: RwArg,
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
    profile: Option<ProfileArg>,
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

impl From<RwArg> for RwMode {
    fn from(a: RwArg) -> RwMode {
        match a {
            RwArg::Read => RwMode::Read,
            RwArg::Write => RwMode::Write,
            RwArg::Randread => RwMode::Randread,
            RwArg::Randwrite => RwMode::Randwrite,
            RwArg::Readwrite => RwMode::Readwrite,
            RwArg::Randrw => RwMode::Randrw,
        }
    }
}

impl From<ProfileArg> for Profile {
    fn from(a: ProfileArg) -> Profile {
        match a {
            ProfileArg::Exchange2003 => Profile::Exchange2003,
        }
    }
}

fn config(args: &BenchArgs) -> BenchConfig {
    BenchConfig {
        url: args.url.clone(),
        rw: args.rw.into(),
        read_pct: args.read_pct,
        bs: args.bs,
        qd: args.qd,
        offset: args.offset,
        range: args.range,
        duration: args.duration,
        count: args.count,
        fua: args.fua,
        sessions: args.sessions,
        profile: args.profile.map(Profile::from),
        log_lun: args.log_lun,
        verify: args.verify,
        control: args.control.clone(),
        control_token: crate::control_token(),
        initiator: args.initiator.clone(),
        seed: args.seed,
        timeout: args.timeout,
    }
}

/// The progress bar on stderr, hidden with --json.
struct Bar {
    json: bool,
    bar: OnceLock<indicatif::ProgressBar>,
    /// Whether the first completed I/O has been announced (without a bar).
    announced: std::sync::atomic::AtomicBool,
}

impl Bar {
    /// A line on stderr, above the bar when there is one.
    fn say(&self, line: &str) {
        match self.bar.get().filter(|pb| !pb.is_hidden()) {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Bar {
    fn start(&self, len: u64, by_time: bool) {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = if by_time {
            "{spinner} [{elapsed_precise}] {wide_bar} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} I/Os {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style);
        }
        if self.json {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        let _ = self.bar.set(pb);
    }

    fn update(&self, position: u64, iops: f64, mb_per_sec: f64) {
        if let Some(pb) = self.bar.get() {
            pb.set_message(format!("{iops:.0} IOPS {mb_per_sec:.1} MB/s"));
            pb.set_position(position);
            // Without a bar to watch (not a terminal, or --json), one line
            // says that I/O is flowing and how to stop it.
            if pb.is_hidden()
                && iops > 0.0
                && !self
                    .announced
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!(
                    "busrig bench: I/O under way ({iops:.0} IOPS); Ctrl-C stops the run and reports the figures so far"
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.bar.get() {
            pb.finish_and_clear();
        }
    }
}

/// Runs the bench on a thread of its own (`busrig_bench::run_isolated`),
/// then writes the plot and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::alloc::keep_freed_io_buffers();
    let progress = Arc::new(Bar {
        json: args.json,
        bar: OnceLock::new(),
        announced: Default::default(),
    });
    let interrupt = Interrupt::new();
    let signals = on_signals(interrupt.clone(), progress.clone())?;
    let result = busrig_bench::run_isolated(config(&args), progress, interrupt).await;
    signals.abort();
    let code = match result.and_then(|r| report(&args, &r)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("busrig bench: {}: {}", f.kind(), f.message());
            if args.json {
                let j =
                    json!({ "error": f.message(), "kind": f.kind(), "exit_status": f.status() });
                println!("{j}");
            }
            f.status()
        }
    };
    Ok(ExitCode::from(code))
}

/// SIGINT or SIGTERM interrupts the run (it reports what it measured); a
/// second one ends the process at once with [`EXIT_INTERRUPTED`].
fn on_signals(interrupt: Interrupt, bar: Arc<Bar>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the run starts, so no Ctrl-C falls between them.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        let mut first = true;
        loop {
            tokio::select! {
                Some(()) = int.recv() => {}
                Some(()) = term.recv() => {}
                else => return,
            }
            if !first {
                // Leave the terminal clean: no half-drawn bar before the prompt.
                bar.finish();
                eprintln!("busrig bench: interrupted again; quitting without a report");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            first = false;
            bar.say(&format!(
                "busrig bench: interrupted; waiting up to {:?} for the I/O in flight, then reporting (Ctrl-C again quits at once)",
                busrig_bench::DRAIN
            ));
            interrupt.interrupt();
        }
    }))
}

fn report(args: &BenchArgs, result: &Results) -> Result<u8, BenchError> {
    if let Some(path) = &args.svg {
        result.write_svg(path, args.svg_baseline.as_deref())?;
    }
    match args.json {
        true => println!("{}", result.json()),
        false => print!("{}", result.text()),
    }
    Ok(result.exit_status())
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
        let j = busrig_bench::jobs(&config(&p.b), 1);
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
