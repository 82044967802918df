//! What a bench run is asked to do: the access pattern and its geometry,
//! and the jobs a named profile expands to.

use serde_json::{json, Value};

/// Access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwMode {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential, reads and writes mixed by the read percentage.
    Readwrite,
    /// Random, reads and writes mixed by the read percentage.
    Randrw,
}

impl RwMode {
    pub fn random(self) -> bool {
        matches!(self, RwMode::Randread | RwMode::Randwrite | RwMode::Randrw)
    }

    /// Percentage of reads.
    pub fn read_pct(self, mixed: u8) -> u8 {
        match self {
            RwMode::Read | RwMode::Randread => 100,
            RwMode::Write | RwMode::Randwrite => 0,
            RwMode::Readwrite | RwMode::Randrw => mixed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RwMode::Read => "read",
            RwMode::Write => "write",
            RwMode::Randread => "randread",
            RwMode::Randwrite => "randwrite",
            RwMode::Readwrite => "readwrite",
            RwMode::Randrw => "randrw",
        }
    }
}

/// A named mix instead of one access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Jetstress-like: 4 KiB random database I/O at 2 reads per write on
    /// the URL's LUN, sequential 4 KiB FUA log writes on the log LUN.
    Exchange2003,
}

/// One bench run as asked for.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// iscsi://[user%secret@]host[:port]/target-iqn/lun, or file:///path
    /// (see [`crate::device`]).
    pub url: String,
    pub rw: RwMode,
    /// Share of reads in readwrite and randrw, in percent (0 to 100).
    pub read_pct: u8,
    /// Bytes per I/O.
    pub bs: u64,
    /// Commands in flight per session (at least 1).
    pub qd: u32,
    /// Byte offset of the first I/O slot, a multiple of the block length.
    pub offset: u64,
    /// Bytes from `offset` that the I/O covers (default: to the end of the LUN).
    pub range: Option<u64>,
    /// Seconds to run (default 10 unless `count` is given).
    pub duration: Option<f64>,
    /// Stop after N I/Os (per job).
    pub count: Option<u64>,
    /// Writes with Force Unit Access.
    pub fua: bool,
    /// Sessions per job, each its own I_T nexus (at least 1).
    pub sessions: u32,
    pub profile: Option<Profile>,
    /// The log LUN of [`Profile::Exchange2003`] (default: the URL's LUN + 1).
    pub log_lun: Option<u16>,
    /// Write self-describing data and check every read of it.
    pub verify: bool,
    /// Control address of a `busrig target` whose disk model counters
    /// are reported for the LUNs of this run.
    pub control: Option<String>,
    /// The control plane's token.
    pub control_token: Option<String>,
    /// Initiator name to log in with.
    pub initiator: String,
    /// Seed of the random offsets and of the verify stamps.
    pub seed: Option<u64>,
    /// Time limit of one command, in seconds.
    pub timeout: f64,
}

/// One job as asked for.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub name: &'static str,
    pub lun: u16,
    pub mode: RwMode,
    pub read_pct: u8,
    pub bs: u64,
    pub qd: u32,
    pub offset: u64,
    pub range: Option<u64>,
    pub fua: bool,
}

/// A job's parameters in one line, as the report and the plot write
/// them: `randrw bs=4096 qd=8 offset=0 read-pct=67`, `write ... fua`.
pub fn params_line(rw: &str, bs: u64, qd: u64, offset: u64, read_pct: u64, fua: bool) -> String {
    let mixed = matches!(rw, "readwrite" | "randrw");
    format!(
        "{rw} bs={bs} qd={qd} offset={offset}{}{}",
        if mixed {
            format!(" read-pct={read_pct}")
        } else {
            String::new()
        },
        if fua { " fua" } else { "" }
    )
}

impl JobSpec {
    /// The job's parameters in one line ([`params_line`]).
    pub fn params(&self) -> String {
        params_line(
            self.mode.name(),
            self.bs,
            u64::from(self.qd),
            self.offset,
            u64::from(self.mode.read_pct(self.read_pct)),
            self.fua,
        )
    }

    /// [`JobSpec::params`] of a job as `--json` wrote it (`jobs[].job`).
    pub fn params_of_json(job: &Value) -> String {
        let n = |k: &str| job[k].as_u64().unwrap_or(0);
        params_line(
            job["rw"].as_str().unwrap_or("?"),
            n("bs"),
            n("qd"),
            n("offset"),
            n("read_pct"),
            job["fua"].as_bool().unwrap_or(false),
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "lun": self.lun,
            "rw": self.mode.name(),
            "read_pct": self.mode.read_pct(self.read_pct),
            "bs": self.bs,
            "qd": self.qd,
            "offset": self.offset,
            "fua": self.fua,
        })
    }
}

/// The jobs of a run on the URL's LUN `lun`.
pub fn jobs(config: &BenchConfig, lun: u16) -> Vec<JobSpec> {
    match config.profile {
        None => vec![JobSpec {
            name: "main",
            lun,
            mode: config.rw,
            read_pct: config.read_pct,
            bs: config.bs,
            qd: config.qd,
            offset: config.offset,
            range: config.range,
            fua: config.fua,
        }],
        // Jetstress's database mix is about two reads per write on 4 KiB
        // (Exchange 2003's page size), random over the database; the log
        // is written sequentially, 4 KiB-aligned, each write durable
        // before it is acknowledged, one at a time.
        Some(Profile::Exchange2003) => vec![
            JobSpec {
                name: "database",
                lun,
                mode: RwMode::Randrw,
                read_pct: 67,
                bs: 4096,
                qd: config.qd,
                offset: config.offset,
                range: config.range,
                fua: false,
            },
            JobSpec {
                name: "log",
                lun: config.log_lun.unwrap_or(lun.saturating_add(1)),
                mode: RwMode::Write,
                read_pct: 0,
                bs: 4096,
                qd: 1,
                offset: 0,
                range: config.range,
                fua: true,
            },
        ],
    }
}
