//! Measurements of a bench run: latency summaries from HdrHistogram,
//! one report line per direction, and the latency histogram in plot bins
//! and as an SVG plot.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in nanoseconds, 3 significant digits, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}

/// Counts and latencies of one direction (or both) of one job.
#[derive(Clone)]
pub struct Side {
    pub ios: u64,
    pub bytes: u64,
    pub hist: Histogram<u64>,
}

impl Default for Side {
    fn default() -> Side {
        Side {
            ios: 0,
            bytes: 0,
            hist: new_histogram(),
        }
    }
}

impl Side {
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.ios += 1;
        self.bytes += bytes;
        self.hist
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    pub fn add(&mut self, other: &Side) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// IOPS, MB/s (10^6 bytes) and latency percentiles in microseconds.
    pub fn json(&self, secs: f64) -> Value {
        let secs = secs.max(1e-9);
        json!({
            "ios": self.ios,
            "bytes": self.bytes,
            "iops": round2(self.ios as f64 / secs),
            "mb_per_sec": round2(self.bytes as f64 / secs / 1e6),
            "lat_us": {
                "mean": round2(if self.ios > 0 { self.hist.mean() / 1000.0 } else { 0.0 }),
                "p50": round2(self.us(0.5)),
                "p99": round2(self.us(0.99)),
                "p99_9": round2(self.us(0.999)),
                "max": round2(self.hist.max() as f64 / 1000.0),
            },
        })
    }

    /// One line for people.
    pub fn line(&self, label: &str, secs: f64) -> String {
        let secs = secs.max(1e-9);
        format!(
            "  {label:<6} {:>10.0} IOPS {:>9.1} MB/s   lat p50 {}  p99 {}  p99.9 {}  max {}   ({} I/Os)",
            self.ios as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            human_us(self.us(0.5)),
            human_us(self.us(0.99)),
            human_us(self.us(0.999)),
            human_us(self.hist.max() as f64 / 1000.0),
            self.ios
        )
    }
}

/// What one worker (or one job, summed) measured.
#[derive(Default)]
pub struct Tally {
    pub read: Side,
    pub write: Side,
    /// Reads of written data that matched.
    pub verified: u64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Microseconds in a short human unit.
pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// Plot bins: ten per decade of microseconds, bin k covering
/// [10^(k/10), 10^((k+1)/10)) µs, from 1 µs to 100 s.
pub const BINS_PER_DECADE: f64 = 10.0;
const MAX_BIN: usize = 80;

fn bin_edge_us(k: usize) -> f64 {
    10f64.powf(k as f64 / BINS_PER_DECADE)
}

/// The latency histogram in plot bins: `(bin, count)` for every bin with
/// a count.
pub fn bins(h: &Histogram<u64>) -> Vec<(usize, u64)> {
    let mut counts = vec![0u64; MAX_BIN + 1];
    for v in h.iter_recorded() {
        let us = v.value_iterated_to() as f64 / 1000.0;
        let k = if us <= 1.0 {
            0
        } else {
            ((us.log10() * BINS_PER_DECADE).floor() as usize).min(MAX_BIN)
        };
        counts[k] += v.count_at_value();
    }
    counts
        .into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .collect()
}

/// The bins as JSON, for scripts and for `--svg-baseline`.
pub fn bins_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        bins(h)
            .into_iter()
            .map(|(k, c)| {
                json!({ "bin": k, "lo_us": round2(bin_edge_us(k)), "hi_us": round2(bin_edge_us(k + 1)), "count": c })
            })
            .collect(),
    )
}

/// Bins read back from an earlier run's `--json` output.
pub fn bins_from_json(v: &Value) -> Option<Vec<(usize, u64)>> {
    v.get("latency_histogram")?
        .as_array()?
        .iter()
        .map(|b| Some((b.get("bin")?.as_u64()? as usize, b.get("count")?.as_u64()?)))
        .collect()
}

/// One series of the plot.
pub struct Series<'a> {
    pub label: String,
    pub bins: Vec<(usize, u64)>,
    pub colour: &'a str,
    /// Percentile markers: (name, microseconds).
    pub marks: Vec<(&'static str, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The latency histogram as an SVG document: share of I/Os per bin on a
/// logarithmic latency axis, each series a step line, its p50 and p99 as
/// dashed markers.
pub fn svg(title: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (900.0f64, 480.0f64);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let nonempty: Vec<usize> = series
        .iter()
        .flat_map(|s| s.bins.iter().map(|(k, _)| *k))
        .collect();
    let lo_k = nonempty.iter().min().copied().unwrap_or(10);
    let hi_k = nonempty.iter().max().copied().unwrap_or(30) + 1;
    // Whole decades around the data.
    let d0 = (lo_k as f64 / BINS_PER_DECADE).floor();
    let d1 = (hi_k as f64 / BINS_PER_DECADE).ceil().max(d0 + 1.0);
    let x_of = |log_us: f64| left + (log_us - d0) / (d1 - d0) * pw;
    let share = |s: &Series<'_>, c: u64| {
        let total: u64 = s.bins.iter().map(|(_, c)| *c).sum();
        if total == 0 {
            0.0
        } else {
            c as f64 * 100.0 / total as f64
        }
    };
    let ymax = series
        .iter()
        .flat_map(|s| s.bins.iter().map(move |(_, c)| share(s, *c)))
        .fold(1.0f64, f64::max);
    let ymax = (ymax / 10.0).ceil() * 10.0;
    let y_of = |pct: f64| top + ph - pct / ymax * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Axes, grid and labels.
    let _ = writeln!(
        o,
        r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##,
        top + ph,
        left + pw
    );
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let x = x_of(d);
        let us = 10f64.powf(d);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 18.0,
            esc(&human_us(us))
        );
        d += 1.0;
    }
    for i in 0..=5 {
        let pct = ymax * i as f64 / 5.0;
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
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">share of I/Os per bin</text>"#,
        top + ph / 2.0
    );
    // Series as step lines over their bins.
    for (i, s) in series.iter().enumerate() {
        let mut path = String::new();
        let mut last_hi: Option<usize> = None;
        for (k, c) in &s.bins {
            let x0 = x_of(*k as f64 / BINS_PER_DECADE);
            let x1 = x_of((*k + 1) as f64 / BINS_PER_DECADE);
            let y = y_of(share(s, *c));
            match last_hi {
                Some(prev) if prev == *k => {
                    let _ = write!(path, " V{y:.1} H{x1:.1}");
                }
                Some(_) => {
                    let _ = write!(
                        path,
                        " V{:.1} M{x0:.1} {:.1} V{y:.1} H{x1:.1}",
                        y_of(0.0),
                        y_of(0.0)
                    );
                }
                None => {
                    let _ = write!(path, "M{x0:.1} {:.1} V{y:.1} H{x1:.1}", y_of(0.0));
                }
            }
            last_hi = Some(k + 1);
        }
        if last_hi.is_some() {
            let _ = write!(path, " V{:.1}", y_of(0.0));
        }
        let _ = writeln!(
            o,
            r#"<path d="{path}" stroke="{}" stroke-width="2" fill="{}" fill-opacity="0.15"/>"#,
            s.colour, s.colour
        );
        for (name, us) in &s.marks {
            if *us <= 0.0 {
                continue;
            }
            let x = x_of(us.log10());
            let _ = writeln!(
                o,
                r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="{}" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="{}" font-size="10">{name} {}</text>"#,
                top + ph,
                s.colour,
                x + 3.0,
                top + 12.0 + 12.0 * i as f64,
                s.colour,
                esc(&human_us(*us))
            );
        }
        // Legend.
        let ly = top + 8.0 + 16.0 * i as f64;
        let lx = left + pw - 260.0;
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
            ly + 30.0,
            s.colour,
            lx + 18.0,
            ly + 40.0,
            esc(&s.label)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ten_per_decade() {
        let mut s = Side::default();
        s.record(4096, Duration::from_micros(100));
        s.record(4096, Duration::from_micros(100));
        s.record(4096, Duration::from_micros(1000));
        let b = bins(&s.hist);
        assert_eq!(b, vec![(20, 2), (30, 1)]);
        let j = json!({ "latency_histogram": bins_json(&s.hist) });
        assert_eq!(bins_from_json(&j), Some(b));
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let mut s = Side::default();
        for us in [90, 100, 110, 200, 5000] {
            s.record(512, Duration::from_micros(us));
        }
        let doc = svg(
            "t <1>",
            &[Series {
                label: "run".into(),
                bins: bins(&s.hist),
                colour: "#1f77b4",
                marks: vec![("p50", 100.0)],
            }],
        );
        assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
        assert!(doc.contains("t &lt;1&gt;"));
        assert_eq!(doc.matches("<path").count(), 2);
    }
}
