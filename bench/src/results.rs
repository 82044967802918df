//! The report of one bench run: per job and in total, for people and as
//! JSON, and its latency plot.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{BenchConfig, JobSpec};
use crate::error::BenchError;
use crate::plot::{self, Curve, Direction, Entry, Plot};
use crate::report::{self, Side, Tally};

/// One job of a finished run.
pub struct JobResult {
    pub spec: JobSpec,
    /// The LUN's block length in bytes.
    pub block_len: u32,
}

/// What a finished run measured. A run stopped by a failure still has
/// results, up to the failure.
pub struct Results {
    pub config: BenchConfig,
    /// The target IQN of the URL.
    pub target: Option<String>,
    pub jobs: Vec<JobResult>,
    /// What each job measured, in the order of `jobs`.
    pub tallies: Vec<Tally>,
    pub secs: f64,
    pub seed: u64,
    /// Disk model counters of the run's LUNs, with a control address.
    pub model: Option<Value>,
    /// What stopped the run early.
    pub failure: Option<BenchError>,
    /// Ctrl-C (or SIGTERM) stopped the run: the figures are those of the
    /// I/O done until then (see [`crate::Interrupt`]).
    pub interrupted: bool,
    /// Commands still in flight after the interrupt's drain, given up
    /// and not counted.
    pub abandoned: u64,
}

impl Results {
    /// Both directions of every job.
    pub fn total(&self) -> Side {
        let mut t = Side::default();
        for x in &self.tallies {
            t.add(&x.read);
            t.add(&x.write);
        }
        t
    }

    /// The report as one JSON object (`busrig bench --json`).
    pub fn json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .zip(&self.tallies)
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
            "url": self.config.url,
            "target": self.target,
            "profile": self.config.profile.map(|_| "exchange2003"),
            "sessions": self.config.sessions,
            "verify": self.config.verify,
            "seed": self.seed,
            "duration_secs": (self.secs * 1000.0).round() / 1000.0,
            "jobs": jobs,
            "total": total.json(self.secs),
            "verified_ios": self.tallies.iter().map(|t| t.verified).sum::<u64>(),
            "disk_model": self.model,
            "latency_histogram": report::bins_json(&total.hist),
            "error": self.failure.as_ref().map(|f| json!({ "kind": f.kind(), "message": f.message(), "exit_status": f.status() })),
            "interrupted": self.interrupted,
            "abandoned_ios": self.abandoned,
        })
    }

    /// The report for people, one line per `\n`.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "busrig bench {} ({} session{}, {:.2} s)",
            self.config.url,
            self.config.sessions,
            if self.config.sessions == 1 { "" } else { "s" },
            self.secs
        );
        for (j, t) in self.jobs.iter().zip(&self.tallies) {
            let s = &j.spec;
            let _ = writeln!(o, "job {}: LUN {} {}", s.name, s.lun, s.params());
            if t.read.ios > 0 {
                let _ = writeln!(o, "{}", t.read.line("read", self.secs));
            }
            if t.write.ios > 0 {
                let _ = writeln!(o, "{}", t.write.line("write", self.secs));
            }
            if self.config.verify {
                let _ = writeln!(o, "  verified {} reads of written data", t.verified);
            }
            if let Some(m) = self.model.as_ref().map(|m| &m[s.name]) {
                if let Some(c) = m["counters"].as_object() {
                    let _ = writeln!(
                        o,
                        "  disk model: {} back-end operations, {} split I/Os of {} I/Os",
                        c.get("backend_ops").and_then(Value::as_u64).unwrap_or(0),
                        c.get("split_ios").and_then(Value::as_u64).unwrap_or(0),
                        c.get("ios").and_then(Value::as_u64).unwrap_or(0),
                    );
                }
            }
        }
        if self.jobs.len() > 1 {
            let _ = writeln!(o, "{}", self.total().line("total", self.secs));
        }
        if self.interrupted {
            let _ = writeln!(
                o,
                "interrupted after {:.2} s: the figures are for the I/O done until then{}{}",
                self.secs,
                match self.abandoned {
                    0 => String::new(),
                    n => format!(
                        "; {n} commands still in flight after {:?} not counted",
                        crate::DRAIN
                    ),
                },
                if self.config.verify {
                    "; no read-back"
                } else {
                    ""
                },
            );
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(o, "stopped: {}: {}", f.kind(), f.message());
        }
        o
    }

    /// The latency plot ([`crate::plot`]): a legend entry per job with
    /// its parameters, its reads and its writes as separate curves, and
    /// an earlier run's `--json` output at `baseline` overlaid (its total,
    /// the one histogram that output keeps).
    pub fn plot(&self, baseline: Option<&Value>) -> Result<Plot, BenchError> {
        if self.jobs.is_empty() {
            return Err(BenchError::Usage("a run without jobs has no plot".into()));
        }
        let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let curve = |direction, side: &Side| Curve {
            direction,
            bins: report::bins(&side.hist),
            ios: side.ios,
            p50_us: q(&side.hist, 0.5),
            p99_us: q(&side.hist, 0.99),
        };
        let mut entries = Vec::new();
        if let Some(v) = baseline {
            let bins = report::bins_from_json(v)
                .ok_or_else(|| BenchError::Usage("the baseline has no latency_histogram".into()))?;
            let jobs = v["jobs"].as_array().map_or(&[][..], Vec::as_slice);
            let label = jobs
                .iter()
                .map(|j| {
                    let name = match jobs.len() {
                        1 => String::new(),
                        _ => format!("{} ", j["job"]["name"].as_str().unwrap_or("?")),
                    };
                    let params = JobSpec::params_of_json(&j["job"]);
                    format!("{name}{params} LUN {}", j["job"]["lun"])
                })
                .collect::<Vec<_>>()
                .join("; ");
            let p = &v["total"]["lat_us"];
            entries.push(Entry {
                label: format!("baseline: {label}"),
                colour: plot::BASELINE_COLOUR,
                curves: vec![Curve {
                    direction: Direction::All,
                    bins,
                    ios: v["total"]["ios"].as_u64().unwrap_or(0),
                    p50_us: p["p50"].as_f64().unwrap_or(0.0),
                    p99_us: p["p99"].as_f64().unwrap_or(0.0),
                }],
            });
        }
        for (i, (j, t)) in self.jobs.iter().zip(&self.tallies).enumerate() {
            let s = &j.spec;
            let mut curves = Vec::new();
            if t.read.ios > 0 {
                curves.push(curve(Direction::Read, &t.read));
            }
            if t.write.ios > 0 {
                curves.push(curve(Direction::Write, &t.write));
            }
            entries.push(Entry {
                label: format!("{} on LUN {}: {}", s.name, s.lun, s.params()),
                colour: plot::COLOURS[i % plot::COLOURS.len()],
                curves,
            });
        }
        let first = self.jobs[0].spec.lun;
        let luns = match self.jobs.iter().find(|j| j.spec.lun != first) {
            Some(other) => format!("LUN {first}, {} LUN {}", other.spec.name, other.spec.lun),
            None => format!("LUN {first}"),
        };
        let target = self.target.as_deref().unwrap_or(&self.config.url);
        let total = self.total();
        Ok(Plot {
            title: format!("busrig bench latency: {target} {luns}"),
            subtitle: format!(
                "{} s, {} I/Os, {:.0} IOPS, {} session{} per job",
                // Short runs (`--count`) keep their milliseconds.
                if self.secs < 10.0 {
                    format!("{:.2}", self.secs)
                } else {
                    format!("{:.1}", self.secs)
                },
                total.ios,
                total.ios as f64 / self.secs.max(1e-9),
                self.config.sessions,
                if self.config.sessions == 1 { "" } else { "s" }
            ),
            entries,
        })
    }

    /// Writes [`Results::plot`] as SVG to `path`, with an earlier run's
    /// `--json` output at `baseline` overlaid.
    pub fn write_svg(&self, path: &Path, baseline: Option<&Path>) -> Result<(), BenchError> {
        let baseline = match baseline {
            None => None,
            Some(b) => {
                let text = std::fs::read_to_string(b)
                    .map_err(|e| BenchError::Usage(format!("{}: {e}", b.display())))?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    BenchError::Usage(format!("{}: not bench JSON: {e}", b.display()))
                })?;
                Some(v)
            }
        };
        let doc = plot::svg(&self.plot(baseline.as_ref())?);
        std::fs::write(path, doc).map_err(|e| BenchError::Usage(format!("{}: {e}", path.display())))
    }

    /// The exit status of `busrig bench`: the failure's, else
    /// [`crate::error::EXIT_INTERRUPTED`] after an interrupt, else 0.
    pub fn exit_status(&self) -> u8 {
        match (&self.failure, self.interrupted) {
            (Some(f), _) => f.status(),
            (None, true) => crate::error::EXIT_INTERRUPTED,
            (None, false) => 0,
        }
    }
}
