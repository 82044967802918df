//! `busrig demo`: the main job (`busrig_lab::demo` runs it). This verb
//! parses the arguments, shows the waits and prints the story; it exits
//! non-zero if any check fails (`--keep` leaves the lab up), and 130 when
//! Ctrl-C stopped it (`busrig_lab::interrupt`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use busrig_lab::demo::{self, DemoEvent, DemoOptions, DemoUi};
use busrig_lab::{interrupt, LabError};

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
    /// Serve `busrig dashboard` on the demo's lab once the cluster has
    /// formed, and print its address; it stops with the demo.
    #[arg(long)]
    dashboard: bool,
    /// Where the processes run: single (one network stack, the default)
    /// or netns (a network namespace each; needs root, iproute2, nftables).
    #[arg(long, default_value = "single", value_parser = crate::cli::lab::hosts_mode())]
    hosts: busrig_lab::hosts::HostsMode,
}

/// The terminal side of the demo: its story on stdout, its waits on
/// stderr (`progress::WaitLine`).
struct Terminal {
    wait: WaitLine,
    /// With --dashboard, the lab folder, until the dashboard starts.
    dashboard_for: Option<PathBuf>,
    dashboard: Option<busrig_dashboard::Background>,
}

impl Terminal {
    /// Starts the dashboard on the lab that just formed.
    fn start_dashboard(&mut self) {
        let Some(dir) = self.dashboard_for.take() else {
            return;
        };
        let started = std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|bin| Ok(busrig_dashboard::for_lab(&dir, bin)?))
            .and_then(|(sources, token)| {
                let d = busrig_dashboard::Dashboard::new(sources, Some(token));
                Ok(busrig_dashboard::Background::start(
                    d,
                    ([127, 0, 0, 1], 0).into(),
                )?)
            });
        match started {
            Ok(b) => {
                println!("  dashboard: {}", b.url);
                self.dashboard = Some(b);
            }
            Err(e) => eprintln!("  dashboard did not start: {e:#}"),
        }
    }
}

impl DemoUi for Terminal {
    fn event(&mut self, e: DemoEvent<'_>) {
        let formed = matches!(e, DemoEvent::Formed(_));
        match e.on_stderr() {
            true => eprintln!("{e}"),
            false => println!("{e}"),
        }
        if formed {
            self.start_dashboard();
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
        interrupt::interrupted()
    }

    fn insisted(&self) -> bool {
        interrupt::insisted()
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
        hosts: a.hosts,
    };
    o.check()?;
    // From here on Ctrl-C lets the demo clean up before it exits.
    interrupt::install();
    println!("busrig demo: {o}\n  lab folder {}", dir.display());
    let lab = crate::cli::lab::open(&dir)?;
    let tty = std::io::stderr().is_terminal();
    let wait = WaitLine::new(tty);
    let mut terminal = Terminal {
        wait,
        dashboard_for: a.dashboard.then(|| dir.clone()),
        dashboard: None,
    };
    let report = match demo::run(&lab, &o, &mut terminal) {
        Ok(r) => r,
        Err(LabError::Interrupted) => return Ok(ExitCode::from(crate::cli::lab::EXIT_INTERRUPTED)),
        Err(e) => return Err(e.into()),
    };
    Ok(match report.failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
