//! `busrig demo`: the main job (`busrig_lab::demo` runs it). This verb
//! parses the arguments, shows the waits and prints the story; it exits
//! non-zero if any check fails (`--keep` leaves the lab up).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use busrig_lab::demo::{self, DemoEvent, DemoOptions, DemoUi};
use nix::sys::signal::Signal;

use crate::cli::progress::WaitLine;

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

/// The terminal side of the demo: its story on stdout, its waits on
/// stderr (`progress::WaitLine`).
struct Terminal {
    wait: WaitLine,
}

impl DemoUi for Terminal {
    fn event(&mut self, e: DemoEvent<'_>) {
        match e.on_stderr() {
            true => eprintln!("{e}"),
            false => println!("{e}"),
        }
    }

    fn wait_begin(&mut self, what: &str) {
        self.wait.begin(what);
    }

    fn wait_tick(&mut self) {
        self.wait.tick("");
    }

    fn wait_end(&mut self) {
        self.wait.end();
    }

    fn interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let (dir, remove_dir) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (busrig_lab::temp_lab_dir("demo"), true),
    };
    let o = DemoOptions {
        keep: a.keep,
        nodes: a.nodes,
        quorum: a.quorum,
        profile: a.profile,
        rate: a.rate,
        remove_dir,
    };
    o.check()?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let h = nix::sys::signal::SigHandler::Handler(on_signal);
        let _ = nix::sys::signal::signal(Signal::SIGINT, h);
        let _ = nix::sys::signal::signal(Signal::SIGTERM, h);
    }
    println!("busrig demo: {o}\n  lab folder {}", dir.display());
    let lab = crate::cli::lab::open(&dir)?;
    let tty = std::io::stderr().is_terminal();
    let wait = WaitLine::new(tty);
    let report = demo::run(&lab, &o, &mut Terminal { wait })?;
    Ok(match report.failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
