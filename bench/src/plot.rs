//! The latency plot of `busrig bench --svg`: for every job, its reads and
//! its writes as separate step curves of the share of I/Os per latency
//! bin ([`crate::report::bins`]) on a logarithmic latency axis.
//!
//! ```text
//!            title: target, LUN(s)
//!            subtitle: duration, I/Os, IOPS
//!   share  +-------------------------------+
//!   of I/Os|      ___                      |
//!   per bin|   __|   |__ _  - -            |
//!          +--+----+----+----+----+----+---+
//!            10 µs 20  50  100 µs ...        ticks at 1, 2 and 5 per decade
//!                    latency (log scale)
//!   [colour] job: LUN 1 randrw bs=4096 ...   one legend entry per job
//!      ---- read   N I/Os, p50, p99          solid: reads
//!      - -  write  N I/Os, p50, p99          dashed: writes
//! ```
//!
//! Nothing is placed by guesswork at the edges: the legend sits below the
//! axis, and the document is made wide and tall enough for its longest
//! line of text, measured with [`text_width`] (an upper bound of the
//! advance of sans-serif glyphs), so no label is cut off.

use std::fmt::Write as _;

use crate::report::BINS_PER_DECADE;

/// One direction of one job (or a baseline's I/Os of both directions).
pub struct Curve {
    /// Reads, writes, or all I/Os (a baseline's total).
    pub direction: Direction,
    /// `(bin, count)` as [`crate::report::bins`] gives them.
    pub bins: Vec<(usize, u64)>,
    pub ios: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Which I/Os a curve shows; it sets the line's dash pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
    All,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::All => "all",
        }
    }

    /// The line's `stroke-dasharray` attribute (none: solid).
    fn dash_attr(self) -> &'static str {
        match self {
            Direction::Read => "",
            Direction::Write => r#" stroke-dasharray="7 4""#,
            Direction::All => r#" stroke-dasharray="2 3""#,
        }
    }
}

/// One legend entry: a job (or the baseline) with its curves.
pub struct Entry {
    /// The job's name and real parameters.
    pub label: String,
    pub colour: &'static str,
    pub curves: Vec<Curve>,
}

/// A whole plot.
pub struct Plot {
    /// Names the target, the LUN(s) and the run.
    pub title: String,
    /// Duration, I/Os and IOPS.
    pub subtitle: String,
    pub entries: Vec<Entry>,
}

/// Job colours, in order (a colour-blind-safe set); the baseline is grey.
pub const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];
pub const BASELINE_COLOUR: &str = "#7f7f7f";

/// An upper bound of the width of `s` in pixels at `font_size` in a
/// sans-serif face: 0.62 em per character covers the widest common
/// glyphs of Helvetica, Arial and DejaVu Sans in mixed text (digits and
/// lower case are about 0.55 em; `m`, `w` and capitals are wider).
pub fn text_width(s: &str, font_size: f64) -> f64 {
    s.chars().count() as f64 * font_size * 0.62
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A tick label: `1 µs`, `20 µs`, `500 µs`, `2 ms`, `10 s`.
pub fn tick_label(us: f64) -> String {
    let (v, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    // Ticks are 1, 2 and 5 times a power of ten: at most one decimal.
    let v = (v * 10.0).round() / 10.0;
    format!("{v} {unit}")
}

/// The plot bins' decade range `[d0, d1)` in log10(µs), whole decades
/// around every non-empty bin.
fn decades(p: &Plot) -> (f64, f64) {
    let ks = p
        .entries
        .iter()
        .flat_map(|e| e.curves.iter())
        .flat_map(|c| c.bins.iter().map(|(k, _)| *k));
    let (lo, hi) = ks.fold((usize::MAX, 0), |(lo, hi), k| (lo.min(k), hi.max(k + 1)));
    let (lo, hi) = if lo == usize::MAX { (10, 30) } else { (lo, hi) };
    let d0 = (lo as f64 / BINS_PER_DECADE).floor();
    let d1 = (hi as f64 / BINS_PER_DECADE).ceil().max(d0 + 1.0);
    (d0, d1)
}

/// The ticks of the latency axis: `(log10 µs, labelled)`, at 1, 2 and 5
/// times each power of ten (every one labelled when a decade is wide
/// enough for three labels, else only the powers of ten), and unlabelled
/// minor ticks at 3, 4, 6, 7, 8 and 9.
fn ticks(d0: f64, d1: f64, px_per_decade: f64) -> Vec<(f64, bool)> {
    let label_125 = px_per_decade >= 150.0;
    let mut out = Vec::new();
    let mut d = d0;
    while d < d1 - 1e-9 {
        for m in 1..=9u32 {
            let major = matches!(m, 1 | 2 | 5);
            out.push((d + f64::from(m).log10(), m == 1 || (major && label_125)));
        }
        d += 1.0;
    }
    out.push((d1, true));
    out
}

/// Share of a curve's I/Os in one bin, in percent.
fn share(c: &Curve, count: u64) -> f64 {
    let total: u64 = c.bins.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        0.0
    } else {
        count as f64 * 100.0 / total as f64
    }
}

fn curve_line(c: &Curve) -> String {
    use crate::report::human_us;
    format!(
        "{:<8} {} I/Os, p50 {}, p99 {}",
        c.direction.name(),
        c.ios,
        human_us(c.p50_us),
        human_us(c.p99_us)
    )
}

const FONT: f64 = 12.0;
const TITLE_FONT: f64 = 15.0;
const LEGEND_ROW: f64 = 17.0;
/// Where legend text starts right of its sample line or swatch.
const LEGEND_TEXT_X: f64 = 44.0;

/// The plot as an SVG document.
pub fn svg(p: &Plot) -> String {
    let (left, right, top) = (72.0f64, 48.0f64, 64.0f64);
    // Below the plot area: tick labels, the axis title, then the legend.
    let axis_space = 52.0;
    let legend_rows: usize = p.entries.iter().map(|e| 1 + e.curves.len()).sum();
    let legend_h = legend_rows as f64 * LEGEND_ROW + 16.0;
    let ph = 300.0;
    let h = top + ph + axis_space + legend_h;
    // Wide enough for the longest title or legend line.
    let legend_w = p
        .entries
        .iter()
        .flat_map(|e| {
            std::iter::once(text_width(&e.label, FONT))
                .chain(e.curves.iter().map(|c| text_width(&curve_line(c), FONT)))
        })
        .fold(0.0, f64::max)
        + LEGEND_TEXT_X;
    let w = [
        900.0,
        text_width(&p.title, TITLE_FONT) + 40.0,
        text_width(&p.subtitle, FONT) + 40.0,
        left + legend_w + 20.0,
    ]
    .into_iter()
    .fold(0.0, f64::max)
    .ceil();
    let pw = w - left - right;
    let (d0, d1) = decades(p);
    let x_of = |log_us: f64| left + (log_us - d0) / (d1 - d0) * pw;
    let ymax = p
        .entries
        .iter()
        .flat_map(|e| e.curves.iter())
        .flat_map(|c| c.bins.iter().map(move |(_, n)| share(c, *n)))
        .fold(1.0f64, f64::max);
    let ymax = ((ymax / 10.0).ceil() * 10.0).min(100.0);
    let y_of = |pct: f64| top + ph - pct / ymax * ph;
    let y0 = y_of(0.0);

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text class="title" x="{}" y="24" text-anchor="middle" font-size="{TITLE_FONT}">{}</text>"#,
        w / 2.0,
        esc(&p.title)
    );
    let _ = writeln!(
        o,
        r##"<text class="subtitle" x="{}" y="44" text-anchor="middle" fill="#444">{}</text>"##,
        w / 2.0,
        esc(&p.subtitle)
    );
    // Grid and ticks of the latency axis.
    for (d, labelled) in ticks(d0, d1, pw / (d1 - d0)) {
        let x = x_of(d);
        let (class, grid, len) = if labelled {
            ("tick-major", "#d8d8d8", 6.0)
        } else {
            ("tick-minor", "#f0f0f0", 3.0)
        };
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{y0}" stroke="{grid}"/><line class="{class}" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
            y0 + len
        );
        if labelled {
            let _ = writeln!(
                o,
                r#"<text class="tick-label" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y0 + 20.0,
                esc(&tick_label(10f64.powf(d)))
            );
        }
    }
    for i in 0..=5 {
        let pct = ymax * f64::from(i) / 5.0;
        let y = y_of(pct);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{pct:.0}%</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        o,
        r##"<path d="M{left} {top} V{y0} H{}" stroke="#333" fill="none"/>"##,
        left + pw
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"#,
        left + pw / 2.0,
        y0 + 40.0
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(20 {}) rotate(-90)" text-anchor="middle">share of I/Os per bin</text>"#,
        top + ph / 2.0
    );
    // The curves, each a step line over its bins.
    for e in &p.entries {
        for c in &e.curves {
            let dash = c.direction.dash_attr();
            let _ = writeln!(
                o,
                r#"<path class="curve" data-entry="{}" data-direction="{}" d="{}" stroke="{}" stroke-width="2"{dash} fill="{}" fill-opacity="0.08"/>"#,
                esc(&e.label),
                c.direction.name(),
                step_path(c, &x_of, &y_of),
                e.colour,
                e.colour
            );
        }
    }
    // The legend, below the axis title.
    let mut y = y0 + axis_space + 14.0;
    for e in &p.entries {
        let _ = writeln!(
            o,
            r#"<rect x="{left}" y="{:.1}" width="30" height="10" fill="{}"/><text class="legend" x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 9.0,
            e.colour,
            left + LEGEND_TEXT_X,
            esc(&e.label)
        );
        y += LEGEND_ROW;
        for c in &e.curves {
            let dash = c.direction.dash_attr();
            let _ = writeln!(
                o,
                r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text class="legend-curve" x="{:.1}" y="{y:.1}" xml:space="preserve">{}</text>"#,
                y - 4.0,
                left + 30.0,
                y - 4.0,
                e.colour,
                left + LEGEND_TEXT_X,
                esc(&curve_line(c))
            );
            y += LEGEND_ROW;
        }
    }
    o.push_str("</svg>\n");
    o
}

/// The SVG path of a curve: a step per bin, back to the axis across gaps.
fn step_path(c: &Curve, x_of: &impl Fn(f64) -> f64, y_of: &impl Fn(f64) -> f64) -> String {
    let y0 = y_of(0.0);
    let mut path = String::new();
    let mut last_hi: Option<usize> = None;
    for (k, n) in &c.bins {
        let x0 = x_of(*k as f64 / BINS_PER_DECADE);
        let x1 = x_of((*k + 1) as f64 / BINS_PER_DECADE);
        let y = y_of(share(c, *n));
        match last_hi {
            Some(prev) if prev == *k => {
                let _ = write!(path, " V{y:.1} H{x1:.1}");
            }
            Some(_) => {
                let _ = write!(path, " V{y0:.1} M{x0:.1} {y0:.1} V{y:.1} H{x1:.1}");
            }
            None => {
                let _ = write!(path, "M{x0:.1} {y0:.1} V{y:.1} H{x1:.1}");
            }
        }
        last_hi = Some(k + 1);
    }
    if last_hi.is_some() {
        let _ = write!(path, " V{y0:.1}");
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{bins, Side};
    use std::time::Duration;

    fn curve(direction: Direction, us: &[u64]) -> Curve {
        let mut s = Side::default();
        for u in us {
            s.record(4096, Duration::from_micros(*u));
        }
        Curve {
            direction,
            bins: bins(&s.hist),
            ios: s.ios,
            p50_us: s.hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: s.hist.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }

    /// Two jobs as the exchange2003 profile runs them: the database job
    /// reads and writes, the log job only writes.
    fn exchange() -> Plot {
        Plot {
            title: "busrig bench latency: iqn.2026-12.org.busrig:exchange-virtual-server-1 LUN 1, log LUN 2".into(),
            subtitle: "10.0 s, 12000 I/Os, 1200 IOPS, 1 session per job".into(),
            entries: vec![
                Entry {
                    label: "database on LUN 1: randrw bs=4096 qd=8 offset=0 read-pct=67".into(),
                    colour: COLOURS[0],
                    curves: vec![
                        curve(Direction::Read, &[80, 90, 100, 110, 400]),
                        curve(Direction::Write, &[200, 250, 300, 2000]),
                    ],
                },
                Entry {
                    label: "log on LUN 2: write bs=4096 qd=1 offset=0 fua".into(),
                    colour: COLOURS[1],
                    curves: vec![curve(Direction::Write, &[900, 1000, 1200, 15000])],
                },
            ],
        }
    }

    /// Every `<text ...>content</text>`: its attributes and its content.
    fn texts(doc: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = doc;
        while let Some(i) = rest.find("<text ") {
            let tail = &rest[i + 6..];
            let gt = tail.find('>').unwrap_or(0);
            let end = tail.find("</text>").unwrap_or(tail.len());
            out.push((tail[..gt].to_string(), tail[gt + 1..end].to_string()));
            rest = &tail[end..];
        }
        out
    }

    fn attr(attrs: &str, name: &str) -> Option<f64> {
        let key = format!(" {name}=\"");
        let s = format!(" {attrs}");
        let i = s.find(&key)? + key.len();
        s[i..].split('"').next()?.parse().ok()
    }

    fn view_box(doc: &str) -> (f64, f64) {
        let s = &doc[doc.find("viewBox=\"0 0 ").unwrap_or(0) + 13..];
        let mut it = s.split(['"', ' ']).map(|x| x.parse::<f64>().unwrap_or(0.0));
        (it.next().unwrap_or(0.0), it.next().unwrap_or(0.0))
    }

    /// The contents of the texts of one class.
    fn of_class(doc: &str, class: &str) -> Vec<String> {
        let key = format!("class=\"{class}\"");
        texts(doc)
            .into_iter()
            .filter(|(a, _)| a.starts_with(&key))
            .map(|(_, t)| t)
            .collect()
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    #[test]
    fn one_legend_entry_per_job_with_its_parameters() {
        let doc = svg(&exchange());
        let legend: Vec<String> = of_class(&doc, "legend");
        assert_eq!(
            legend,
            [
                "database on LUN 1: randrw bs=4096 qd=8 offset=0 read-pct=67",
                "log on LUN 2: write bs=4096 qd=1 offset=0 fua"
            ]
        );
    }

    #[test]
    fn reads_and_writes_are_separate_curves() {
        let doc = svg(&exchange());
        let curves: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("<path class=\"curve\""))
            .collect();
        assert_eq!(curves.len(), 3, "{doc}");
        let db = "data-entry=\"database on LUN 1: randrw bs=4096 qd=8 offset=0 read-pct=67\"";
        assert!(curves[0].contains(db) && curves[0].contains("data-direction=\"read\""));
        assert!(!curves[0].contains("stroke-dasharray"), "reads are solid");
        assert!(curves[1].contains(db) && curves[1].contains("data-direction=\"write\""));
        assert!(
            curves[1].contains("stroke-dasharray=\"7 4\""),
            "writes are dashed"
        );
        assert!(curves[2].contains("data-entry=\"log on LUN 2") && curves[2].contains("\"write\""));
        // Each curve's own counts and percentiles are in the legend.
        let lines: Vec<String> = of_class(&doc, "legend-curve");
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("read     5 I/Os, p50 100 µs"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("write    4 I/Os, p50 250 µs"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("write    4 I/Os, p50 1.00 ms"),
            "{lines:?}"
        );
    }

    #[test]
    fn ticks_at_one_two_and_five_per_decade() {
        let doc = svg(&exchange());
        let labels: Vec<String> = of_class(&doc, "tick-label");
        // Data from 80 µs to 15 ms: the decades 10 µs to 100 ms.
        assert_eq!(
            labels,
            [
                "10 µs", "20 µs", "50 µs", "100 µs", "200 µs", "500 µs", "1 ms", "2 ms", "5 ms",
                "10 ms", "20 ms", "50 ms", "100 ms"
            ]
        );
        // Nine ticks a decade (four decades), and the last edge.
        let major = doc.matches("class=\"tick-major\"").count();
        let minor = doc.matches("class=\"tick-minor\"").count();
        assert_eq!((major, minor), (13, 24));
        // Narrow decades: the powers of ten labelled, the rest still ticked.
        let t = ticks(0.0, 8.0, 100.0);
        assert_eq!(t.len(), 8 * 9 + 1);
        assert_eq!(t.iter().filter(|(_, l)| *l).count(), 9);
    }

    #[test]
    fn the_title_names_target_lun_and_duration() {
        let doc = svg(&exchange());
        let t = texts(&doc);
        let title = &t
            .iter()
            .find(|(a, _)| a.starts_with("class=\"title\""))
            .unwrap()
            .1;
        let sub = &t
            .iter()
            .find(|(a, _)| a.starts_with("class=\"subtitle\""))
            .unwrap()
            .1;
        assert!(title.contains("iqn.2026-12.org.busrig:exchange-virtual-server-1"));
        assert!(title.contains("LUN 1, log LUN 2"));
        assert!(sub.starts_with("10.0 s, "));
    }

    /// Every text's box, as far as [`text_width`] bounds it, lies inside
    /// the viewBox, however long the labels.
    #[test]
    fn all_text_is_inside_the_view_box() {
        let mut long = exchange();
        long.entries[0].label = format!("{} {}", long.entries[0].label, "x".repeat(150));
        long.title = format!("{} {}", long.title, "y".repeat(60));
        for p in [exchange(), long] {
            let doc = svg(&p);
            let (w, h) = view_box(&doc);
            assert!(w >= 900.0 && h > 400.0, "{w} {h}");
            for (attrs, content) in texts(&doc) {
                if attrs.contains("rotate(-90)") {
                    // The axis title: 20 px from the left edge, centred on
                    // the plot's height.
                    let len = text_width(&content, FONT);
                    assert!(len / 2.0 < 64.0 + 150.0 && len / 2.0 < h, "{content}");
                    continue;
                }
                let size = attr(&attrs, "font-size").unwrap_or(FONT);
                let (x, y) = (attr(&attrs, "x").unwrap(), attr(&attrs, "y").unwrap());
                let len = text_width(&unescape(&content), size);
                let (x0, x1) = if attrs.contains("text-anchor=\"middle\"") {
                    (x - len / 2.0, x + len / 2.0)
                } else if attrs.contains("text-anchor=\"end\"") {
                    (x - len, x)
                } else {
                    (x, x + len)
                };
                assert!(x0 >= 0.0 && x1 <= w, "{content:?} spans {x0}..{x1} of {w}");
                assert!(
                    y - size >= 0.0 && y + size * 0.3 <= h,
                    "{content:?} at y {y} of {h}"
                );
            }
        }
    }

    #[test]
    fn tick_labels_read_as_round_numbers() {
        assert_eq!(tick_label(1.0), "1 µs");
        assert_eq!(tick_label(500.0), "500 µs");
        assert_eq!(tick_label(2000.0), "2 ms");
        assert_eq!(tick_label(10f64.powf(0.69897) * 1e3), "5 ms");
        assert_eq!(tick_label(1e7), "10 s");
    }
}
