//! One schedule's timeline as an SVG picture, in the manner of Jepsen's
//! timelines: a lane per node with its quorum-owner and group-online
//! intervals (from the role checker's input), the faults as bands on the
//! lane of the node they hit (bus faults across every lane), the moment
//! everything was healed, and the register clients' answers as ticks
//! (green: answered, grey: indeterminate) under the lanes.

use std::fmt::Write as _;

use super::check::linear::{Operation, Outcome};
use super::check::{Interval, Role};
use super::schedule::FaultKind;
use super::Applied;

/// What the picture shows.
pub struct Timeline<'a> {
    pub title: String,
    pub nodes: Vec<String>,
    /// The workloads' start and the healing, Unix ms.
    pub start_ms: u64,
    pub healed_ms: u64,
    pub intervals: &'a [Interval],
    pub faults: &'a [Applied],
    pub ops: &'a [Operation],
}

const LEFT: f64 = 80.0;
const WIDTH: f64 = 1000.0;
const LANE: f64 = 46.0;

fn colour(k: FaultKind) -> &'static str {
    match k {
        FaultKind::Kill => "#d62728",
        FaultKind::Pause => "#ff7f0e",
        FaultKind::Partition => "#9467bd",
        FaultKind::Freeze | FaultKind::Delay | FaultKind::Cut | FaultKind::Sense => "#8c564b",
        FaultKind::Reset | FaultKind::PowerCycle => "#e377c2",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document.
pub fn timeline(t: &Timeline<'_>) -> String {
    let lanes = t.nodes.len().max(1) as f64;
    let end = t
        .ops
        .iter()
        .filter_map(|o| o.complete_ms)
        .chain(t.intervals.iter().filter_map(|i| i.end_ms))
        .chain([t.healed_ms + 1000])
        .max()
        .unwrap_or(t.start_ms + 1000);
    let span = (end.saturating_sub(t.start_ms)).max(1) as f64;
    let x = |ms: u64| LEFT + (ms.saturating_sub(t.start_ms) as f64) / span * WIDTH;
    let top = 30.0;
    let height = top + lanes * LANE + 60.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        LEFT + WIDTH + 20.0
    );
    let _ = write!(
        s,
        r#"<text x="4" y="16" font-size="13">{}</text>"#,
        esc(&t.title)
    );
    for (i, n) in t.nodes.iter().enumerate() {
        let y = top + i as f64 * LANE;
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{y}" width="{WIDTH}" height="{}" fill="#f4f4f4"/><text x="4" y="{}">{}</text>"##,
            LANE - 6.0,
            y + 18.0,
            esc(n)
        );
    }
    // Fault bands first, under the roles.
    for a in t.faults.iter().filter(|a| !a.skipped) {
        let (x0, x1) = (
            x(a.start_ms),
            x(a.end_ms.max(a.start_ms)).max(x(a.start_ms) + 2.0),
        );
        let lane = a
            .node
            .as_ref()
            .and_then(|n| t.nodes.iter().position(|m| m == n));
        let (y, h) = match lane {
            Some(i) => (top + i as f64 * LANE, LANE - 6.0),
            None => (top, lanes * LANE - 6.0),
        };
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{h}" fill="{}" opacity="0.25"><title>{}</title></rect>"#,
            x1 - x0,
            colour(a.fault.kind),
            esc(&format!(
                "{} {}: {}",
                a.fault.kind.as_str(),
                a.node.as_deref().unwrap_or("bus"),
                a.outcome
            ))
        );
    }
    for iv in t.intervals {
        let Some(i) = t.nodes.iter().position(|n| *n == iv.node) else {
            continue;
        };
        let (dy, fill) = match iv.role {
            Role::QuorumOwner => (6.0, "#1f77b4"),
            Role::GroupOnline(_) => (22.0, "#2ca02c"),
        };
        let y = top + i as f64 * LANE + dy;
        let x0 = x(iv.start_ms);
        let x1 = x(iv.end_ms.unwrap_or(end));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="12" fill="{fill}"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            esc(&format!("{} {}", iv.node, iv.role))
        );
    }
    let hx = x(t.healed_ms);
    let bottom = top + lanes * LANE;
    let _ = write!(
        s,
        r##"<line x1="{hx:.1}" y1="{top}" x2="{hx:.1}" y2="{}" stroke="#000" stroke-dasharray="4 3"/><text x="{:.1}" y="{}">healed</text>"##,
        bottom + 24.0,
        hx + 3.0,
        bottom + 34.0
    );
    let _ = write!(s, r#"<text x="4" y="{}">clients</text>"#, bottom + 16.0);
    for o in t.ops {
        let (at, stroke) = match (o.outcome, o.complete_ms) {
            (Outcome::Unknown, _) | (_, None) => (o.invoke_ms, "#999"),
            (_, Some(c)) => (c, "#2ca02c"),
        };
        let ox = x(at);
        let _ = write!(
            s,
            r#"<line x1="{ox:.1}" y1="{}" x2="{ox:.1}" y2="{}" stroke="{stroke}"/>"#,
            bottom + 6.0,
            bottom + 20.0
        );
    }
    let legend = [
        ("#1f77b4", "acting quorum owner"),
        ("#2ca02c", "group online"),
        ("#d62728", "kill"),
        ("#ff7f0e", "pause"),
        ("#9467bd", "partition"),
        ("#8c564b", "storage path"),
        ("#e377c2", "bus reset / power cycle"),
    ];
    for (i, (c, what)) in legend.iter().enumerate() {
        let lx = LEFT + i as f64 * 140.0;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{c}"/><text x="{}" y="{}">{what}</text>"#,
            height - 16.0,
            lx + 14.0,
            height - 7.0
        );
    }
    s += "</svg>\n";
    s
}
