//! The waiting line of `busrig demo` and `busrig lab up`, on stderr: on a
//! terminal one line that updates with a spinner, the elapsed time and
//! what is being waited for; otherwise one line when a wait begins and
//! one each time its detail changes (so a log keeps the story without a
//! line per poll).

use std::io::Write;
use std::time::{Duration, Instant};

/// One wait at a time.
pub struct WaitLine {
    tty: bool,
    /// What is waited for, since when, when the line was drawn, and the
    /// detail last shown.
    wait: Option<Wait>,
}

struct Wait {
    what: String,
    start: Instant,
    drawn: Instant,
    detail: String,
}

impl WaitLine {
    pub fn new(tty: bool) -> WaitLine {
        WaitLine { tty, wait: None }
    }

    /// A wait for `what` begins.
    pub fn begin(&mut self, what: &str) {
        self.end();
        if !self.tty {
            eprintln!("  ... {what}");
        }
        let now = Instant::now();
        self.wait = Some(Wait {
            what: what.into(),
            start: now,
            drawn: now,
            detail: String::new(),
        });
    }

    /// Still waiting; `detail` says how far it got (empty: nothing new).
    pub fn tick(&mut self, detail: &str) {
        let Some(w) = &mut self.wait else {
            return;
        };
        if !self.tty {
            if !detail.is_empty() && detail != w.detail {
                eprintln!("      {:.1} s: {detail}", w.start.elapsed().as_secs_f64());
                w.detail = detail.into();
            }
            return;
        }
        if !detail.is_empty() {
            w.detail = detail.into();
        }
        if w.drawn.elapsed() > Duration::from_millis(100) {
            let spin = ['|', '/', '-', '\\'][(w.start.elapsed().as_millis() / 100 % 4) as usize];
            let mut line = format!(
                "  {spin} {} ({:.1} s)",
                w.what,
                w.start.elapsed().as_secs_f64()
            );
            if !w.detail.is_empty() {
                line += ": ";
                line += &w.detail;
            }
            // One terminal line: cut to the width and clear the rest.
            let width = terminal_width();
            let line: String = line.chars().take(width.saturating_sub(1)).collect();
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
            w.drawn = Instant::now();
        }
    }

    /// The wait is over: the updating line is cleared.
    pub fn end(&mut self) {
        if self.wait.take().is_some() && self.tty {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// The terminal's width from `COLUMNS`, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(80)
}
