//! Measurements of a bench run: latency summaries from HdrHistogram,
//! one report line per direction, and the latency histogram in plot bins
//! (drawn by [`crate::plot`]).

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
}
