//! The target configuration: buses, targets, LUNs, ACLs and CHAP, read from
//! TOML and validated completely before anything touches the disk.
//!
//! ```toml
//! [[bus]]
//! name = "shared0"
//! topology = "scsi"          # "scsi" | "fc-al" | "fc-fabric" (default)
//! max_initiators = 2         # optional
//! bandwidth = "ultra320"     # optional: ultra160/ultra320 (shared by the bus,
//!                            # scsi topology), fc1g/fc2g/fc4g/fc8g (per
//!                            # initiator port, fc topologies), or "250MB/s"
//!
//! [[target]]
//! name = "iqn.2026-11.io.busrig:bus0"
//! bus = "shared0"            # optional when there is exactly one bus
//! tpgt = 1                   # optional, default 1
//! allowed_initiators = ["iqn.2026-11.io.busrig:node1"]   # empty = everyone
//! chap = { user = "u", secret = "0123456789ab",
//!          mutual_user = "t", mutual_secret = "ba9876543210" }
//!
//! [[target.lun]]
//! id = 0
//! path = "quorum.img"        # relative to the data dir, or absolute
//! size = "64MiB"             # or an integer number of bytes
//! block_size = 512           # 512 or 4096
//! physical_block_size = 4096 # optional, default block_size: a power-of-two
//!                            # multiple of block_size up to 65536 (4096 on
//!                            # 512-byte blocks = "512e")
//! read_only = false
//! removable = false          # RMB 1: START STOP UNIT may eject the medium;
//!                            # never for cluster disks (Windows refuses them)
//! write_cache = "page-cache" # or "volatile": unflushed writes die in a power-cycle fault
//! resize = "refuse"          # an existing file of another length: "refuse"
//!                            # (default), "grow" (extend it, data kept) or
//!                            # "any" (also truncate it to `size`)
//!
//! # The disk model (optional, off by default: full speed). See crate::model.
//! disk_model = "hdd-10k"     # a named back end: hdd-7200, hdd-10k, hdd-15k, ssd
//! service_time_us = 7000     # per back-end operation; overrides the named model's
//! stripe_unit = "64KiB"      # an I/O costs one back-end operation per stripe unit
//!                            # it touches: crossing a boundary costs two
//! spindles = 1               # disks the stripe units are spread over (RAID 0)
//!
//! [iscsi]                    # optional tunables, all have defaults
//! queue_depth = 128
//! nop_interval_secs = 30
//! nop_timeout_secs = 30
//! io_threads = 0             # connection threads; 0: one per CPU
//! poll_us = 100              # a connection thread spins this long before it
//!                            # sleeps (poll mode, see iscsi::poll); 0: off
//! # Limits against hostile or broken initiators (docs/limits.md):
//! connection_memory = 67108864     # bytes one connection may hold
//! target_memory = 1073741824       # bytes all connections together may hold
//! data_out_timeout_secs = 20       # promised write data must arrive in this time
//! login_timeout_secs = 15          # a connection must finish login in this time
//! max_connections = 1024           # connections served at once
//! max_connections_per_source = 128 # connections from one source address
//!
//! [iscsi.login_failures]     # failed-CHAP delay per (initiator name, source)
//! first_delay_ms = 100       # before the first refusal; doubles per failure
//! max_delay_ms = 10000       # the cap; 0 for both turns the delay off
//! forget_after_secs = 600    # failures older than this are forgotten
//! tracked = 4096             # (initiator, source) pairs remembered at most
//! ```
//!
//! With no file, [`Config::embedded_default`] gives the bus of the interface
//! contract in docs/semantics.md "Interface contracts": one target [`DEFAULT_TARGET_NAME`] on one
//! fc-fabric bus, LUN 0 a 64 MiB quorum disk and LUNs 1 and 2 1 GiB data
//! disks.
//!
//! [`Config::validate`] checks every rule and returns the first violation as
//! one [`ConfigError`] whose message names the offending key; it only looks
//! at paths as strings, so no LUN file is created or opened before the whole
//! configuration is known to be good.

use std::collections::{HashMap, HashSet};

use busrig_proto::chap::{MIN_SECRET_LEN, RECOMMENDED_SECRET_LEN};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the target in the embedded default configuration. The naming
/// authority `io.busrig` with the date the name space was taken, as RFC 7143
/// §4.2.7.2 asks of `iqn.` names; the part after the colon is the bus name.
pub const DEFAULT_TARGET_NAME: &str = "iqn.2026-11.io.busrig:bus0";

/// Name of the bus a target joins when the configuration declares none.
pub const DEFAULT_BUS_NAME: &str = "bus0";

/// The embedded default configuration (docs/semantics.md "Interface contracts").
pub const EMBEDDED_DEFAULT: &str = r#"
[[bus]]
name = "bus0"
topology = "fc-fabric"

[[target]]
name = "iqn.2026-11.io.busrig:bus0"
bus = "bus0"

[[target.lun]]
id = 0
path = "bus0-lun0-quorum.img"
size = "64MiB"
serial = "BUSRIG-Q0"

[[target.lun]]
id = 1
path = "bus0-lun1-data.img"
size = "1GiB"
serial = "BUSRIG-D1"

[[target.lun]]
id = 2
path = "bus0-lun2-data.img"
size = "1GiB"
serial = "BUSRIG-D2"
"#;

/// Highest LUN we accept: the flat-space addressing method of SAM-5
/// §4.7.7.3 encodes 14 bits, which is what we decode from the iSCSI LUN
/// field.
pub const MAX_LUN_ID: u64 = 16383;

/// Longest iSCSI name (RFC 7143 §4.2.7: "not larger than 223 bytes").
pub const MAX_ISCSI_NAME_LEN: usize = 223;

/// One configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (includes unknown keys).
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    /// The TOML parsed but a value breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// How a reset propagates on the bus (docs/semantics.md "Bus reset").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Parallel SCSI: a reset reaches every target on the bus.
    Scsi,
    /// FC arbitrated loop: like parallel SCSI, a reset reaches the whole loop.
    FcAl,
    /// FC switched fabric: a target reset reaches that target only.
    #[default]
    FcFabric,
}

impl Topology {
    /// True when a target reset is seen by every target of the bus.
    pub fn reset_reaches_whole_bus(self) -> bool {
        matches!(self, Topology::Scsi | Topology::FcAl)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::Scsi => "scsi",
            Topology::FcAl => "fc-al",
            Topology::FcFabric => "fc-fabric",
        })
    }
}

/// A size: an integer number of bytes or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// `[[bus]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub max_initiators: Option<u32>,
    /// Bytes per second the bus moves: a name or a rate (crate::model).
    #[serde(default)]
    pub bandwidth: Option<String>,
}

/// `chap = { ... }` of a target as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    pub user: String,
    pub secret: String,
    #[serde(default)]
    pub mutual_user: Option<String>,
    #[serde(default)]
    pub mutual_secret: Option<String>,
}

/// `[[target.lun]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    pub id: u64,
    #[serde(default)]
    pub path: Option<PathBuf>,
    pub size: SizeValue,
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Physical block length in bytes; defaults to `block_size`.
    #[serde(default)]
    pub physical_block_size: Option<u32>,
    #[serde(default)]
    pub read_only: bool,
    /// Removable medium (RMB 1). Default false: failover cluster disks must
    /// not be removable.
    #[serde(default)]
    pub removable: bool,
    /// Unit serial number (VPD page 0x80); generated when absent.
    #[serde(default)]
    pub serial: Option<String>,
    /// `page-cache` (default) or `volatile`.
    #[serde(default)]
    pub write_cache: Option<String>,
    /// `refuse` (default), `grow` or `any`: what may happen to an existing
    /// backing file whose length is not `size` (crate::lu::Resize).
    #[serde(default)]
    pub resize: Option<String>,
    /// A named back-end model (crate::model::PRESETS).
    #[serde(default)]
    pub disk_model: Option<String>,
    /// Microseconds per back-end operation.
    #[serde(default)]
    pub service_time_us: Option<u64>,
    /// Bytes per stripe unit of the modelled back end.
    #[serde(default)]
    pub stripe_unit: Option<SizeValue>,
    /// Disks of the modelled back end.
    #[serde(default)]
    pub spindles: Option<u32>,
}

fn default_block_size() -> u32 {
    512
}

/// `[[target]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    #[serde(default)]
    pub bus: Option<String>,
    #[serde(default)]
    pub tpgt: Option<u16>,
    #[serde(default)]
    pub allowed_initiators: Vec<String>,
    #[serde(default)]
    pub chap: Option<ChapConfig>,
    #[serde(default, rename = "lun")]
    pub luns: Vec<LunConfig>,
}

/// `[iscsi]`: protocol tunables of the portal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IscsiTuning {
    /// Commands a session may have outstanding (the CmdSN window,
    /// RFC 7143 §4.2.2.1).
    pub queue_depth: u32,
    /// Idle seconds before the target pings with a NOP-In (RFC 7143 §11.19);
    /// 0 disables the keepalive.
    pub nop_interval_secs: u64,
    /// Seconds the initiator has to answer that ping before the connection
    /// is closed.
    pub nop_timeout_secs: u64,
    /// Our MaxRecvDataSegmentLength (RFC 7143 §13.12), 512..=16777215.
    pub max_recv_data_segment_length: u32,
    /// Largest burst we accept or offer (RFC 7143 §13.13).
    pub max_burst_length: u32,
    /// Largest unsolicited burst (RFC 7143 §13.14).
    pub first_burst_length: u32,
    /// Largest Expected Data Transfer Length of one command we accept; a
    /// bigger command gets CHECK CONDITION instead of a buffer of that size.
    pub max_command_bytes: u32,
    /// Threads that serve connections, each with its own single-threaded
    /// scheduler, connections spread over them in turn; 0 means one per
    /// CPU. A connection's reads, command tasks and writes then stay on one
    /// thread instead of waking another core per step.
    pub io_threads: u32,
    /// Microseconds a connection thread with nothing to do keeps polling
    /// its sockets before it sleeps (see `iscsi::poll`); 0 turns poll mode
    /// off. Saves a wake-up per command at low queue depth for at most
    /// this much CPU per idle period.
    pub poll_us: u32,
    /// Bytes one connection may hold for its initiator: PDUs queued for
    /// sending, read data being produced, write data received or asked
    /// for, out-of-order requests (docs/limits.md). At the limit the
    /// connection stops admitting work and MaxCmdSN stops advancing.
    pub connection_memory: u64,
    /// Bytes all connections together may hold (docs/limits.md); at least
    /// `max_command_bytes`, so the largest command can always run.
    pub target_memory: u64,
    /// Seconds write data that was promised (an R2T sent, or unsolicited
    /// data expected) may take to arrive before the command is aborted
    /// with CHECK CONDITION, ABORTED COMMAND, INITIATOR RESPONSE TIMEOUT;
    /// 0 waits for ever.
    pub data_out_timeout_secs: u64,
    /// Seconds a new connection has to complete its login before it is
    /// closed; 0 waits for ever.
    pub login_timeout_secs: u64,
    /// Connections the portal serves at once; more are closed right after
    /// accept.
    pub max_connections: u32,
    /// Connections one source address may have open at once (logged in
    /// or not); more are closed right after accept.
    pub max_connections_per_source: u32,
    /// `[iscsi.login_failures]`: the delay before a failed authentication
    /// is answered.
    pub login_failures: LoginFailureLimits,
}

/// The default poll window: longer than an initiator on the same machine
/// takes to send its next command after a reply (README "Performance").
pub const DEFAULT_POLL_US: u32 = 100;

/// The longest poll window accepted: beyond this the CPU spent spinning
/// buys nothing a sleep would not.
pub const MAX_POLL_US: u32 = 10_000;

impl Default for IscsiTuning {
    fn default() -> Self {
        IscsiTuning {
            queue_depth: 128,
            nop_interval_secs: 30,
            nop_timeout_secs: 30,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_command_bytes: 64 * 1024 * 1024,
            io_threads: 0,
            poll_us: DEFAULT_POLL_US,
            connection_memory: 64 << 20,
            target_memory: 1 << 30,
            data_out_timeout_secs: 20,
            login_timeout_secs: 15,
            max_connections: 1024,
            max_connections_per_source: 128,
            login_failures: LoginFailureLimits::default(),
        }
    }
}

/// `[iscsi.login_failures]`: how the portal slows down CHAP guessing. Each
/// (initiator name, source address) that fails authentication waits before
/// its refusal is sent, `first_delay_ms` the first time and twice as long
/// each time after, up to `max_delay_ms` (docs/semantics.md "The wire").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginFailureLimits {
    pub first_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A pair with no failure for this long starts again from the first
    /// delay.
    pub forget_after_secs: u64,
    /// Pairs remembered at most; the one idle longest makes room.
    pub tracked: usize,
}

/// The longest failed-login delay accepted: well inside the initiator's
/// own login timeout (open-iscsi waits 15 s, Windows 15 s by default).
pub const MAX_LOGIN_FAILURE_DELAY_MS: u64 = 10_000;

impl Default for LoginFailureLimits {
    fn default() -> Self {
        LoginFailureLimits {
            first_delay_ms: 100,
            max_delay_ms: MAX_LOGIN_FAILURE_DELAY_MS,
            forget_after_secs: 600,
            tracked: 4096,
        }
    }
}

fn validate_login_failures(l: &LoginFailureLimits) -> Result<(), ConfigError> {
    let ctx = "iscsi.login_failures";
    if l.max_delay_ms > MAX_LOGIN_FAILURE_DELAY_MS {
        return Err(invalid(format!(
            "{ctx}.max_delay_ms must be 0..={MAX_LOGIN_FAILURE_DELAY_MS}, got {}",
            l.max_delay_ms
        )));
    }
    if l.first_delay_ms > l.max_delay_ms {
        return Err(invalid(format!(
            "{ctx}.first_delay_ms must be at most max_delay_ms ({}), got {}",
            l.max_delay_ms, l.first_delay_ms
        )));
    }
    if l.forget_after_secs == 0 {
        return Err(invalid(format!(
            "{ctx}.forget_after_secs must be at least 1"
        )));
    }
    if !(1..=1_000_000).contains(&l.tracked) {
        return Err(invalid(format!(
            "{ctx}.tracked must be 1..=1000000, got {}",
            l.tracked
        )));
    }
    Ok(())
}

/// The whole file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "bus")]
    pub buses: Vec<BusConfig>,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub iscsi: IscsiTuning,
}

/// A validated bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusSpec {
    pub name: String,
    pub topology: Topology,
    pub max_initiators: Option<u32>,
    /// The modelled bandwidth; `None` moves data at host speed.
    pub bandwidth: Option<crate::model::LinkSpec>,
}

/// Validated CHAP settings of a target (RFC 7143 §12.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapSpec {
    /// The name the initiator must give in CHAP_N.
    pub user: String,
    pub secret: Vec<u8>,
    /// Name and secret the target answers with when the initiator asks to
    /// authenticate the target too (mutual CHAP).
    pub mutual: Option<(String, Vec<u8>)>,
}

/// A validated LUN, its path resolved against the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunDef {
    pub id: u64,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub block_size: u32,
    /// Physical block length, a power-of-two multiple of `block_size`.
    pub physical_block_size: u32,
    pub read_only: bool,
    pub removable: bool,
    pub serial: String,
    pub write_cache: crate::lu::WriteCache,
    /// The modelled back end; `None` runs at the backing file's speed.
    pub model: Option<crate::model::DiskModelSpec>,
    /// What may happen to an existing backing file of another length.
    pub resize: crate::lu::Resize,
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDef {
    pub name: String,
    /// Index into [`ValidConfig::buses`].
    pub bus: usize,
    pub tpgt: u16,
    /// Allowed initiator names, lowercased; empty admits everyone.
    pub allowed_initiators: Vec<String>,
    pub chap: Option<ChapSpec>,
    pub luns: Vec<LunDef>,
}

impl TargetDef {
    /// ACL check (RFC 7143 §11.13.5 status 02/02 when it fails). iSCSI names
    /// compare case-insensitively (RFC 7143 §4.2.7.1 normalises them).
    pub fn admits(&self, initiator: &str) -> bool {
        self.allowed_initiators.is_empty()
            || self
                .allowed_initiators
                .iter()
                .any(|a| a.eq_ignore_ascii_case(initiator))
    }
}

/// A configuration that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig {
    pub buses: Vec<BusSpec>,
    pub targets: Vec<TargetDef>,
    pub iscsi: IscsiTuning,
    pub data_dir: PathBuf,
}

impl ValidConfig {
    /// The configuration as a file would say it, so that
    /// [`Config::validate`] against the same data directory gives this
    /// configuration back (`busrig bus save`). Every key is written out,
    /// LUN paths absolute, so nothing depends on defaults; CHAP secrets
    /// are in it.
    pub fn to_config(&self) -> Config {
        let buses = self
            .buses
            .iter()
            .map(|b| BusConfig {
                name: b.name.clone(),
                topology: b.topology,
                max_initiators: b.max_initiators,
                bandwidth: b.bandwidth.as_ref().map(|l| l.name.clone()),
            })
            .collect();
        let targets = self
            .targets
            .iter()
            .map(|t| TargetConfig {
                name: t.name.clone(),
                bus: self.buses.get(t.bus).map(|b| b.name.clone()),
                tpgt: Some(t.tpgt),
                allowed_initiators: t.allowed_initiators.clone(),
                chap: t.chap.as_ref().map(ChapSpec::to_config),
                luns: t.luns.iter().map(LunDef::to_config).collect(),
            })
            .collect();
        Config {
            buses,
            targets,
            iscsi: self.iscsi.clone(),
        }
    }
}

impl ChapSpec {
    /// `chap = { ... }` as written (the secrets came from TOML strings).
    pub fn to_config(&self) -> ChapConfig {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        ChapConfig {
            user: self.user.clone(),
            secret: text(&self.secret),
            mutual_user: self.mutual.as_ref().map(|(u, _)| u.clone()),
            mutual_secret: self.mutual.as_ref().map(|(_, s)| text(s)),
        }
    }
}

impl LunDef {
    /// `[[target.lun]]` as written, every key explicit.
    pub fn to_config(&self) -> LunConfig {
        let model = self.model.as_ref();
        LunConfig {
            id: self.id,
            path: Some(self.path.clone()),
            size: SizeValue::Bytes(self.size_bytes),
            block_size: self.block_size,
            physical_block_size: Some(self.physical_block_size),
            read_only: self.read_only,
            removable: self.removable,
            serial: Some(self.serial.clone()),
            write_cache: Some(self.write_cache.name().to_string()),
            resize: Some(self.resize.name().to_string()),
            disk_model: model.and_then(|m| m.preset.clone()),
            service_time_us: model.map(|m| m.service_time.as_micros() as u64),
            stripe_unit: model.and_then(|m| m.stripe_unit).map(SizeValue::Bytes),
            spindles: model.map(|m| m.spindles),
        }
    }
}

impl Config {
    /// The configuration as TOML that [`Config::parse`] reads back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse {
            origin: "running configuration".into(),
            message: e.to_string(),
        })
    }

    /// Parses TOML text; `origin` names it in errors (a path or "embedded").
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default bus.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, "embedded default")
            .expect("the embedded default configuration is valid TOML")
    }

    /// Checks every rule and resolves paths against `data_dir`. Nothing on
    /// disk is touched.
    pub fn validate(&self, data_dir: &Path) -> Result<ValidConfig, ConfigError> {
        let iscsi = validate_tuning(&self.iscsi)?;

        let mut buses = Vec::new();
        let mut bus_index = HashMap::new();
        for (i, b) in self.buses.iter().enumerate() {
            if b.name.trim().is_empty() {
                return Err(invalid(format!("bus {}: name must not be empty", i + 1)));
            }
            if bus_index.insert(b.name.clone(), buses.len()).is_some() {
                return Err(invalid(format!("bus {}: duplicate bus name", b.name)));
            }
            if b.max_initiators == Some(0) {
                return Err(invalid(format!(
                    "bus {}: max_initiators must be at least 1, got 0",
                    b.name
                )));
            }
            let bandwidth = match &b.bandwidth {
                None => None,
                Some(text) => Some(
                    parse_bandwidth(text, b.topology)
                        .map_err(|why| invalid(format!("bus {}: bandwidth {why}", b.name)))?,
                ),
            };
            buses.push(BusSpec {
                name: b.name.clone(),
                topology: b.topology,
                max_initiators: b.max_initiators,
                bandwidth,
            });
        }

        if self.targets.is_empty() {
            return Err(invalid("config declares no [[target]]"));
        }

        let mut targets = Vec::new();
        let mut target_names = HashSet::new();
        let mut all_paths: HashMap<PathBuf, String> = HashMap::new();
        for (ti, t) in self.targets.iter().enumerate() {
            let def = validate_target(ti + 1, t, &mut buses, &mut bus_index, data_dir)?;
            let name = def.name.clone();
            if !target_names.insert(name.clone()) {
                return Err(invalid(format!("target {name}: duplicate target name")));
            }
            for lun in &def.luns {
                if let Some(other) =
                    all_paths.insert(lun.path.clone(), format!("lun {} of target {name}", lun.id))
                {
                    return Err(invalid(format!(
                        "lun {} of target {name}: path {} is already used by {other}",
                        lun.id,
                        lun.path.display()
                    )));
                }
            }
            targets.push(def);
        }
        Ok(ValidConfig {
            buses,
            targets,
            iscsi,
            data_dir: data_dir.to_path_buf(),
        })
    }
}

/// Checks one `[[target]]` (number `label` in the file, for messages) on
/// its own: name, bus, tpgt, ACL, CHAP and LUNs with ids unique within it.
/// A target with no `bus` joins the only bus, or creates the default one
/// when none is declared. Uniqueness across targets is the caller's.
pub(crate) fn validate_target(
    label: usize,
    t: &TargetConfig,
    buses: &mut Vec<BusSpec>,
    bus_index: &mut HashMap<String, usize>,
    data_dir: &Path,
) -> Result<TargetDef, ConfigError> {
    let name = t.name.trim().to_ascii_lowercase();
    check_iscsi_name(&name).map_err(|why| invalid(format!("target {label}: name {why}")))?;
    let bus = match &t.bus {
        Some(b) => *bus_index.get(b).ok_or_else(|| {
            invalid(format!(
                "target {name}: bus {b:?} is not declared in any [[bus]]"
            ))
        })?,
        None => match buses.len() {
            // No bus declared at all: one default fc-fabric bus.
            0 => {
                bus_index.insert(DEFAULT_BUS_NAME.to_string(), 0);
                buses.push(BusSpec {
                    name: DEFAULT_BUS_NAME.to_string(),
                    topology: Topology::FcFabric,
                    max_initiators: None,
                    bandwidth: None,
                });
                0
            }
            1 => 0,
            // With several buses, "the" default would be a guess.
            _ => {
                return Err(invalid(format!(
                    "target {name}: bus must be set when the config declares several buses"
                )))
            }
        },
    };
    let tpgt = t.tpgt.unwrap_or(1);
    if tpgt == 0 {
        // RFC 7143 §13.9: TargetPortalGroupTag is 1..65535 in practice;
        // open-iscsi and libiscsi treat 0 as "not given".
        return Err(invalid(format!(
            "target {name}: tpgt must be 1..=65535, got 0"
        )));
    }
    let mut acl = Vec::new();
    for (ai, a) in t.allowed_initiators.iter().enumerate() {
        acl.push(
            acl_name(a)
                .map_err(|why| invalid(format!("target {name}: allowed_initiators[{ai}] {why}")))?,
        );
    }
    let chap = match &t.chap {
        None => None,
        Some(c) => Some(validate_chap(&name, c)?),
    };
    if t.luns.is_empty() {
        return Err(invalid(format!(
            "target {name}: declares no [[target.lun]]"
        )));
    }
    let mut luns = Vec::new();
    let mut ids = HashSet::new();
    for l in &t.luns {
        let lun = validate_lun(&name, l, data_dir)?;
        if !ids.insert(lun.id) {
            return Err(invalid(format!(
                "lun {} of target {name}: duplicate LUN id",
                lun.id
            )));
        }
        luns.push(lun);
    }
    luns.sort_by_key(|l| l.id);
    Ok(TargetDef {
        name,
        bus,
        tpgt,
        allowed_initiators: acl,
        chap,
        luns,
    })
}

/// An initiator name for an ACL: checked and lowercased.
pub(crate) fn acl_name(a: &str) -> Result<String, String> {
    let a = a.trim().to_ascii_lowercase();
    check_iscsi_name(&a)?;
    Ok(a)
}

fn validate_tuning(t: &IscsiTuning) -> Result<IscsiTuning, ConfigError> {
    if !(1..=65536).contains(&t.queue_depth) {
        return Err(invalid(format!(
            "iscsi.queue_depth must be 1..=65536, got {}",
            t.queue_depth
        )));
    }
    // RFC 7143 §13.12: MaxRecvDataSegmentLength is 512..2^24-1.
    if !(512..=16_777_215).contains(&t.max_recv_data_segment_length) {
        return Err(invalid(format!(
            "iscsi.max_recv_data_segment_length must be 512..=16777215, got {}",
            t.max_recv_data_segment_length
        )));
    }
    // RFC 7143 §13.13/§13.14: 512..2^24-1, and FirstBurstLength <= MaxBurstLength.
    if !(512..=16_777_215).contains(&t.max_burst_length) {
        return Err(invalid(format!(
            "iscsi.max_burst_length must be 512..=16777215, got {}",
            t.max_burst_length
        )));
    }
    if !(512..=t.max_burst_length).contains(&t.first_burst_length) {
        return Err(invalid(format!(
            "iscsi.first_burst_length must be 512..=max_burst_length ({}), got {}",
            t.max_burst_length, t.first_burst_length
        )));
    }
    if t.max_command_bytes < t.max_burst_length {
        return Err(invalid(format!(
            "iscsi.max_command_bytes must be at least max_burst_length ({}), got {}",
            t.max_burst_length, t.max_command_bytes
        )));
    }
    if t.io_threads > 256 {
        return Err(invalid(format!(
            "iscsi.io_threads must be 0..=256, got {}",
            t.io_threads
        )));
    }
    if t.poll_us > MAX_POLL_US {
        return Err(invalid(format!(
            "iscsi.poll_us must be 0..={MAX_POLL_US}, got {}",
            t.poll_us
        )));
    }
    if t.connection_memory < u64::from(t.max_burst_length) {
        return Err(invalid(format!(
            "iscsi.connection_memory must be at least max_burst_length ({}), got {}",
            t.max_burst_length, t.connection_memory
        )));
    }
    if t.target_memory < t.connection_memory || t.target_memory < u64::from(t.max_command_bytes) {
        return Err(invalid(format!(
            "iscsi.target_memory must be at least connection_memory ({}) and max_command_bytes ({}), got {}",
            t.connection_memory, t.max_command_bytes, t.target_memory
        )));
    }
    if !(1..=1_000_000).contains(&t.max_connections) {
        return Err(invalid(format!(
            "iscsi.max_connections must be 1..=1000000, got {}",
            t.max_connections
        )));
    }
    if !(1..=t.max_connections).contains(&t.max_connections_per_source) {
        return Err(invalid(format!(
            "iscsi.max_connections_per_source must be 1..=max_connections ({}), got {}",
            t.max_connections, t.max_connections_per_source
        )));
    }
    if t.nop_interval_secs > 0 && t.nop_timeout_secs == 0 {
        return Err(invalid(
            "iscsi.nop_timeout_secs must be at least 1 when nop_interval_secs is set",
        ));
    }
    validate_login_failures(&t.login_failures)?;
    Ok(t.clone())
}

pub(crate) fn validate_chap(target: &str, c: &ChapConfig) -> Result<ChapSpec, ConfigError> {
    let ctx = format!("target {target}: chap");
    if c.user.is_empty() {
        return Err(invalid(format!("{ctx}.user must not be empty")));
    }
    if c.secret.is_empty() {
        return Err(invalid(format!("{ctx}.secret must not be empty")));
    }
    // RFC 7143 §12.1.3: at least 96 bits, 128 recommended; CHAP over an
    // unencrypted link falls to an off-line dictionary attack otherwise.
    if c.secret.len() < MIN_SECRET_LEN {
        return Err(invalid(format!(
            "{ctx}.secret is {} bytes; CHAP secrets must be at least {MIN_SECRET_LEN} bytes \
             (RFC 7143 §12.1.3), {RECOMMENDED_SECRET_LEN} recommended",
            c.secret.len()
        )));
    }
    // RFC 7143 §12.1.3 caps CHAP binary values at 1024 bytes.
    if c.secret.len() > 1024 {
        return Err(invalid(format!(
            "{ctx}.secret must be at most 1024 bytes, got {}",
            c.secret.len()
        )));
    }
    let mutual = match (&c.mutual_user, &c.mutual_secret) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(format!(
                "{ctx}.mutual_secret is required with mutual_user"
            )))
        }
        (None, Some(_)) => {
            return Err(invalid(format!(
                "{ctx}.mutual_user is required with mutual_secret"
            )))
        }
        (Some(u), Some(s)) => {
            if u.is_empty() {
                return Err(invalid(format!("{ctx}.mutual_user must not be empty")));
            }
            if s.len() < MIN_SECRET_LEN || s.len() > 1024 {
                return Err(invalid(format!(
                    "{ctx}.mutual_secret is {} bytes; CHAP secrets must be \
                     {MIN_SECRET_LEN}..=1024 bytes (RFC 7143 §12.1.3), \
                     {RECOMMENDED_SECRET_LEN} recommended",
                    s.len()
                )));
            }
            // RFC 7143 §12.1.3: a secret used to authenticate initiators must
            // not also authenticate the target, or a reflection attack works.
            if s == &c.secret {
                return Err(invalid(format!(
                    "{ctx}.mutual_secret must differ from chap.secret"
                )));
            }
            Some((u.clone(), s.as_bytes().to_vec()))
        }
    };
    Ok(ChapSpec {
        user: c.user.clone(),
        secret: c.secret.as_bytes().to_vec(),
        mutual,
    })
}

pub(crate) fn validate_lun(
    target: &str,
    l: &LunConfig,
    data_dir: &Path,
) -> Result<LunDef, ConfigError> {
    let ctx = format!("lun {} of target {target}", l.id);
    if l.id > MAX_LUN_ID {
        return Err(invalid(format!(
            "{ctx}: id must be 0..={MAX_LUN_ID}, got {}",
            l.id
        )));
    }
    if l.block_size != 512 && l.block_size != 4096 {
        return Err(invalid(format!(
            "{ctx}: block_size must be 512 or 4096, got {}",
            l.block_size
        )));
    }
    let physical_block_size = l.physical_block_size.unwrap_or(l.block_size);
    if crate::lu::lbppb_exponent(l.block_size, physical_block_size).is_none() {
        return Err(invalid(format!(
            "{ctx}: physical_block_size must be block_size {} times a power of two, at most {}, got {physical_block_size}",
            l.block_size,
            crate::lu::MAX_PHYSICAL_BLOCK_SIZE
        )));
    }
    let size_bytes = match &l.size {
        SizeValue::Bytes(b) => *b,
        SizeValue::Text(s) => parse_size(s).map_err(|why| invalid(format!("{ctx}: size {why}")))?,
    };
    if size_bytes == 0 {
        return Err(invalid(format!("{ctx}: size must be greater than 0")));
    }
    if size_bytes % u64::from(l.block_size) != 0 {
        return Err(invalid(format!(
            "{ctx}: size must be a multiple of block_size {}, got {size_bytes} bytes",
            l.block_size
        )));
    }
    let path = match &l.path {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(invalid(format!("{ctx}: path must not be empty")))
        }
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => data_dir.join(p),
        None => data_dir.join(format!(
            "{}-lun{}.img",
            target.replace([':', '/'], "_"),
            l.id
        )),
    };
    let serial = match &l.serial {
        Some(s) => {
            // VPD page 0x80 carries ASCII (SPC-4 §7.8.14); keep it printable.
            if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(invalid(format!(
                    "{ctx}: serial must be 1..=32 printable ASCII characters, got {s:?}"
                )));
            }
            s.clone()
        }
        None => default_serial(target, l.id),
    };
    let write_cache = match l.write_cache.as_deref() {
        None | Some("page-cache") => crate::lu::WriteCache::PageCache,
        Some("volatile") => crate::lu::WriteCache::Volatile,
        Some(other) => {
            return Err(invalid(format!(
                "{ctx}: write_cache must be \"page-cache\" or \"volatile\", got {other:?}"
            )))
        }
    };
    let resize = match l.resize.as_deref() {
        None | Some("refuse") => crate::lu::Resize::Refuse,
        Some("grow") => crate::lu::Resize::Grow,
        Some("any") => crate::lu::Resize::Any,
        Some(other) => {
            return Err(invalid(format!(
                "{ctx}: resize must be \"refuse\", \"grow\" or \"any\", got {other:?}"
            )))
        }
    };
    let model = validate_model(&ctx, l)?;
    Ok(LunDef {
        id: l.id,
        path,
        size_bytes,
        block_size: l.block_size,
        physical_block_size,
        read_only: l.read_only,
        removable: l.removable,
        serial,
        write_cache,
        model,
        resize,
    })
}

/// Longest service time accepted: a back end slower than this would only
/// make initiators time out.
const MAX_SERVICE_TIME_US: u64 = 1_000_000;

/// Most spindles a modelled back end may have.
const MAX_SPINDLES: u32 = 256;

/// The disk model keys of a LUN: none of them means no model.
fn validate_model(
    ctx: &str,
    l: &LunConfig,
) -> Result<Option<crate::model::DiskModelSpec>, ConfigError> {
    if l.disk_model.is_none()
        && l.service_time_us.is_none()
        && l.stripe_unit.is_none()
        && l.spindles.is_none()
    {
        return Ok(None);
    }
    let preset = match &l.disk_model {
        None => None,
        Some(name) => Some(crate::model::preset(name).ok_or_else(|| {
            let names: Vec<&str> = crate::model::PRESETS.iter().map(|p| p.name).collect();
            invalid(format!(
                "{ctx}: disk_model must be one of {}, got {name:?}",
                names.join(", ")
            ))
        })?),
    };
    let service_time = match (l.service_time_us, preset) {
        (Some(us), _) if us > MAX_SERVICE_TIME_US => {
            return Err(invalid(format!(
                "{ctx}: service_time_us must be at most {MAX_SERVICE_TIME_US}, got {us}"
            )))
        }
        (Some(us), _) => std::time::Duration::from_micros(us),
        (None, Some(p)) => p.service_time,
        (None, None) => std::time::Duration::ZERO,
    };
    let stripe_unit = match &l.stripe_unit {
        None => None,
        Some(v) => {
            let su = match v {
                SizeValue::Bytes(b) => *b,
                SizeValue::Text(s) => {
                    parse_size(s).map_err(|why| invalid(format!("{ctx}: stripe_unit {why}")))?
                }
            };
            if su == 0 || su % u64::from(l.block_size) != 0 || su > 1 << 30 {
                return Err(invalid(format!(
                    "{ctx}: stripe_unit must be a multiple of block_size {} up to 1GiB, got {su}",
                    l.block_size
                )));
            }
            Some(su)
        }
    };
    let spindles = l.spindles.unwrap_or(1);
    if !(1..=MAX_SPINDLES).contains(&spindles) {
        return Err(invalid(format!(
            "{ctx}: spindles must be 1..={MAX_SPINDLES}, got {spindles}"
        )));
    }
    if spindles > 1 && stripe_unit.is_none() {
        return Err(invalid(format!(
            "{ctx}: spindles {spindles} needs a stripe_unit to spread the data over them"
        )));
    }
    Ok(Some(crate::model::DiskModelSpec {
        preset: preset.map(|p| p.name.to_string()),
        stripe_unit,
        service_time,
        spindles,
    }))
}

/// A bus bandwidth: a name from crate::model::BANDWIDTHS that fits the
/// topology, or a rate such as "250MB/s" shared by the bus.
fn parse_bandwidth(text: &str, topology: Topology) -> Result<crate::model::LinkSpec, String> {
    use crate::model::{LinkSharing, LinkSpec, BANDWIDTHS};
    if let Some((name, rate, sharing, parallel)) = BANDWIDTHS
        .iter()
        .find(|b| b.0.eq_ignore_ascii_case(text.trim()))
    {
        if *parallel != (topology == Topology::Scsi) {
            return Err(format!(
                "{name} is {} but the bus topology is {topology}",
                if *parallel {
                    "a parallel SCSI bus"
                } else {
                    "a Fibre Channel link"
                }
            ));
        }
        return Ok(LinkSpec {
            name: name.to_string(),
            bytes_per_sec: *rate,
            sharing: *sharing,
        });
    }
    let names: Vec<&str> = BANDWIDTHS.iter().map(|b| b.0).collect();
    let Some(amount) = text.trim().strip_suffix("/s") else {
        return Err(format!(
            "must be one of {} or a rate like \"250MB/s\", got {text:?}",
            names.join(", ")
        ));
    };
    let rate = parse_size(amount).map_err(|why| format!("rate {why}"))?;
    if rate < 1_000_000 {
        return Err(format!("must be at least 1MB/s, got {text:?}"));
    }
    Ok(LinkSpec {
        name: text.trim().to_string(),
        bytes_per_sec: rate,
        sharing: LinkSharing::Bus,
    })
}

/// A stable serial derived from the target name and LUN, so a restarted
/// target presents the same unit serial numbers.
fn default_serial(target: &str, lun: u64) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("BR{:08X}L{lun}", (h >> 32) as u32 ^ h as u32)
}

/// Parses "64MiB", "1GiB", "512", "4 KiB", "10MB" into bytes. Binary units
/// (KiB, MiB, GiB, TiB, and the short K, M, G, T) are powers of 1024,
/// decimal units (KB, MB, GB, TB) powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("must start with a number, got {s:?}"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("number too large in {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "has unknown unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Checks the form of an iSCSI name (RFC 7143 §4.2.7): `iqn.`, `eui.` or
/// `naa.` followed by name characters, at most 223 bytes. Returns why not.
pub fn check_iscsi_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_ISCSI_NAME_LEN {
        return Err(format!(
            "must be at most {MAX_ISCSI_NAME_LEN} bytes, got {}",
            name.len()
        ));
    }
    let lower = name.to_ascii_lowercase();
    if !(lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa.")) {
        return Err(format!("must start with iqn., eui. or naa., got {name:?}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')))
    {
        return Err(format!(
            "contains {c:?}, which is not allowed in an iSCSI name: {name:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `busrig bus save`: every key of a configuration survives the trip
    /// to TOML and back, defaults and models included.
    #[test]
    fn to_config_reads_back_as_the_same_configuration() {
        let texts = [
            EMBEDDED_DEFAULT.to_string(),
            r#"
[[bus]]
name = "s"
topology = "scsi"
max_initiators = 2
bandwidth = "ultra320"

[[bus]]
name = "f"
bandwidth = "250MB/s"

[[target]]
name = "iqn.2026-11.io.busrig:a"
bus = "s"
tpgt = 7
allowed_initiators = ["iqn.2026-11.x:n1", "IQN.2026-11.X:N2"]
chap = { user = "u", secret = "0123456789abcdef", mutual_user = "t", mutual_secret = "fedcba9876543210" }

[[target.lun]]
id = 3
size = "1MiB"
physical_block_size = 4096
read_only = true
removable = true
write_cache = "volatile"
resize = "grow"
disk_model = "hdd-10k"
stripe_unit = "64KiB"
spindles = 4

[[target]]
name = "iqn.2026-11.io.busrig:b"
bus = "f"

[[target.lun]]
id = 0
path = "/abs/b0.img"
size = 4096
block_size = 4096
service_time_us = 250

[iscsi]
queue_depth = 7
poll_us = 0

[iscsi.login_failures]
first_delay_ms = 0
max_delay_ms = 0
"#
            .to_string(),
        ];
        for text in texts {
            let c = Config::parse(&text, "test")
                .unwrap()
                .validate(Path::new("/data"))
                .unwrap();
            let toml = c.to_config().to_toml().unwrap();
            let back = Config::parse(&toml, "saved")
                .unwrap()
                .validate(Path::new("/data"))
                .unwrap();
            assert_eq!(back, c, "{toml}");
        }
    }

    fn validate(text: &str) -> Result<ValidConfig, String> {
        Config::parse(text, "test")
            .map_err(|e| e.to_string())?
            .validate(Path::new("/data"))
            .map_err(|e| e.to_string())
    }

    fn err(text: &str) -> String {
        validate(text).expect_err("config should be refused")
    }

    const ONE: &str = r#"
[[target]]
name = "iqn.2026-11.io.busrig:t1"
[[target.lun]]
id = 0
size = "1MiB"
"#;

    #[test]
    fn embedded_default_matches_the_interface_contract() {
        let c = Config::embedded_default()
            .validate(Path::new("/d"))
            .unwrap();
        assert_eq!(c.targets.len(), 1);
        let t = &c.targets[0];
        assert_eq!(t.name, DEFAULT_TARGET_NAME);
        assert_eq!(c.buses[t.bus].topology, Topology::FcFabric);
        let sizes: Vec<_> = t.luns.iter().map(|l| (l.id, l.size_bytes)).collect();
        assert_eq!(sizes, vec![(0, 64 << 20), (1, 1 << 30), (2, 1 << 30)]);
        assert!(t.luns.iter().all(|l| l.path.starts_with("/d")));
        assert!(t.admits("iqn.anyone"));
    }

    #[test]
    fn minimal_target_gets_a_default_fabric_bus_and_path() {
        let c = validate(ONE).unwrap();
        assert_eq!(
            c.buses,
            vec![BusSpec {
                name: "bus0".into(),
                topology: Topology::FcFabric,
                max_initiators: None,
                bandwidth: None,
            }]
        );
        assert_eq!(c.targets[0].tpgt, 1);
        assert_eq!(c.targets[0].luns[0].block_size, 512);
        assert_eq!(
            c.targets[0].luns[0].path,
            Path::new("/data/iqn.2026-11.io.busrig_t1-lun0.img")
        );
    }

    #[test]
    fn full_example_parses() {
        let c = validate(
            r#"
[[bus]]
name = "shared0"
topology = "scsi"
max_initiators = 2
[[target]]
name = "iqn.2026-11.io.busrig:bus0"
bus = "shared0"
tpgt = 3
allowed_initiators = ["iqn.2026-11.io.busrig:Node1"]
chap = { user = "u", secret = "0123456789ab", mutual_user = "t", mutual_secret = "ba9876543210" }
[[target.lun]]
id = 0
path = "/abs/q.img"
size = 67108864
block_size = 4096
read_only = true
[iscsi]
queue_depth = 32
"#,
        )
        .unwrap();
        let t = &c.targets[0];
        assert_eq!(c.buses[0].topology, Topology::Scsi);
        assert_eq!(c.buses[0].max_initiators, Some(2));
        assert_eq!(t.tpgt, 3);
        assert!(t.admits("IQN.2026-11.io.busrig:node1"));
        assert!(!t.admits("iqn.2026-11.io.busrig:node2"));
        let chap = t.chap.as_ref().unwrap();
        assert_eq!(chap.mutual, Some(("t".into(), b"ba9876543210".to_vec())));
        assert_eq!(t.luns[0].path, Path::new("/abs/q.img"));
        assert!(t.luns[0].read_only);
        assert_eq!(c.iscsi.queue_depth, 32);
        assert_eq!(c.iscsi.nop_interval_secs, 30);
    }

    #[test]
    fn bad_block_size_names_lun_and_target() {
        let e = err(&ONE.replace("size = \"1MiB\"", "size = \"1MiB\"\nblock_size = 1000"));
        assert_eq!(
            e,
            "lun 0 of target iqn.2026-11.io.busrig:t1: block_size must be 512 or 4096, got 1000"
        );
    }

    #[test]
    fn resize_defaults_to_refuse_and_takes_grow_or_any() {
        let lun = |extra: &str| {
            validate(&ONE.replace("size = \"1MiB\"", &format!("size = \"1MiB\"\n{extra}")))
                .map(|c| c.targets[0].luns[0].resize)
        };
        use crate::lu::Resize;
        assert_eq!(lun(""), Ok(Resize::Refuse));
        assert_eq!(lun("resize = \"refuse\""), Ok(Resize::Refuse));
        assert_eq!(lun("resize = \"grow\""), Ok(Resize::Grow));
        assert_eq!(lun("resize = \"any\""), Ok(Resize::Any));
        assert_eq!(
            lun("resize = \"shrink\""),
            Err("lun 0 of target iqn.2026-11.io.busrig:t1: resize must be \"refuse\", \"grow\" or \"any\", got \"shrink\"".into())
        );
    }

    #[test]
    fn removable_and_physical_block_size_default_off_and_parse() {
        let c = validate(ONE).unwrap();
        let l = &c.targets[0].luns[0];
        assert!(!l.removable, "cluster disks are not removable by default");
        assert_eq!(l.physical_block_size, 512);
        let c = validate(&ONE.replace(
            "size = \"1MiB\"",
            "size = \"1MiB\"\nremovable = true\nphysical_block_size = 4096",
        ))
        .unwrap();
        let l = &c.targets[0].luns[0];
        assert!(l.removable);
        assert_eq!((l.block_size, l.physical_block_size), (512, 4096));
        // 4Kn with 64 KiB physical blocks is the largest allowed.
        let c = validate(&ONE.replace(
            "size = \"1MiB\"",
            "size = \"1MiB\"\nblock_size = 4096\nphysical_block_size = 65536",
        ))
        .unwrap();
        assert_eq!(c.targets[0].luns[0].physical_block_size, 65536);
    }

    #[test]
    fn bad_physical_block_sizes_name_the_key() {
        for (block, physical) in [
            (512, 256),
            (512, 1536),
            (4096, 512),
            (512, 131072),
            (512, 0),
        ] {
            let e = err(&ONE.replace(
                "size = \"1MiB\"",
                &format!("size = \"1MiB\"\nblock_size = {block}\nphysical_block_size = {physical}"),
            ));
            assert_eq!(
                e,
                format!(
                    "lun 0 of target iqn.2026-11.io.busrig:t1: physical_block_size must be block_size {block} times a power of two, at most 65536, got {physical}"
                )
            );
        }
    }

    #[test]
    fn removable_must_be_a_boolean() {
        let e = err(&ONE.replace("size = \"1MiB\"", "size = \"1MiB\"\nremovable = \"yes\""));
        assert!(e.contains("removable"), "{e}");
    }

    #[test]
    fn duplicate_target_names_are_refused() {
        let e = err(&format!("{ONE}{ONE}"));
        assert_eq!(e, "target iqn.2026-11.io.busrig:t1: duplicate target name");
    }

    #[test]
    fn duplicate_lun_ids_are_refused() {
        let e = err(&format!(
            "{ONE}[[target.lun]]\nid = 0\nsize = \"2MiB\"\npath = \"other.img\"\n"
        ));
        assert_eq!(
            e,
            "lun 0 of target iqn.2026-11.io.busrig:t1: duplicate LUN id"
        );
    }

    #[test]
    fn shared_backing_file_is_refused() {
        let e = err(&format!(
            "{}[[target.lun]]\nid = 1\nsize = \"2MiB\"\npath = \"/data/x.img\"\n",
            ONE.replace("size = \"1MiB\"", "size = \"1MiB\"\npath = \"x.img\"")
        ));
        assert!(e.starts_with("lun 1 of target iqn.2026-11.io.busrig:t1: path /data/x.img is already used by lun 0"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_and_named() {
        let e = err(&ONE.replace("id = 0", "id = 0\nsectors = 9"));
        assert!(e.contains("unknown field `sectors`"), "{e}");
        let e = err(&format!("color = \"red\"\n{ONE}"));
        assert!(e.contains("unknown field `color`"), "{e}");
        let e = err(&format!("{ONE}[iscsi]\nqueue_deep = 3\n"));
        assert!(e.contains("unknown field `queue_deep`"), "{e}");
    }

    #[test]
    fn bad_sizes_are_refused() {
        let e = err(&ONE.replace("\"1MiB\"", "\"12 furlongs\""));
        assert!(
            e.starts_with("lun 0 of target iqn.2026-11.io.busrig:t1: size has unknown unit"),
            "{e}"
        );
        let e = err(&ONE.replace("\"1MiB\"", "\"0\""));
        assert_eq!(
            e,
            "lun 0 of target iqn.2026-11.io.busrig:t1: size must be greater than 0"
        );
        let e = err(&ONE.replace("\"1MiB\"", "1000"));
        assert!(
            e.contains("size must be a multiple of block_size 512, got 1000 bytes"),
            "{e}"
        );
        let e = err(&ONE.replace("\"1MiB\"", "\"99999999999999999999GiB\""));
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn size_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn unknown_bus_is_refused() {
        let e = err(&ONE.replace(
            "name = \"iqn.2026-11.io.busrig:t1\"",
            "name = \"iqn.2026-11.io.busrig:t1\"\nbus = \"nope\"",
        ));
        assert_eq!(
            e,
            "target iqn.2026-11.io.busrig:t1: bus \"nope\" is not declared in any [[bus]]"
        );
    }

    #[test]
    fn bad_topology_is_refused() {
        let e = err(&format!(
            "[[bus]]\nname = \"b\"\ntopology = \"token-ring\"\n{ONE}"
        ));
        assert!(e.contains("unknown variant `token-ring`"), "{e}");
    }

    #[test]
    fn several_buses_need_an_explicit_bus() {
        let e = err(&format!(
            "[[bus]]\nname = \"a\"\n[[bus]]\nname = \"b\"\n{ONE}"
        ));
        assert_eq!(e, "target iqn.2026-11.io.busrig:t1: bus must be set when the config declares several buses");
    }

    #[test]
    fn duplicate_bus_and_zero_max_initiators_are_refused() {
        assert_eq!(
            err(&format!(
                "[[bus]]\nname = \"a\"\n[[bus]]\nname = \"a\"\n{ONE}"
            )),
            "bus a: duplicate bus name"
        );
        assert_eq!(
            err(&format!("[[bus]]\nname = \"a\"\nmax_initiators = 0\n{ONE}")),
            "bus a: max_initiators must be at least 1, got 0"
        );
    }

    #[test]
    fn bad_target_and_acl_names_are_refused() {
        let e = err(&ONE.replace("iqn.2026-11.io.busrig:t1", "target one"));
        assert!(e.starts_with("target 1: name must start with iqn."), "{e}");
        let e = err(&ONE.replace(
            "[[target.lun]]",
            "allowed_initiators = [\"iqn.x\", \"bob\"]\n[[target.lun]]",
        ));
        assert!(
            e.starts_with("target iqn.2026-11.io.busrig:t1: allowed_initiators[1] must start with"),
            "{e}"
        );
    }

    #[test]
    fn chap_rules() {
        let with =
            |chap: &str| ONE.replace("[[target.lun]]", &format!("chap = {chap}\n[[target.lun]]"));
        assert_eq!(
            err(&with("{ user = \"u\", secret = \"\" }")),
            "target iqn.2026-11.io.busrig:t1: chap.secret must not be empty"
        );
        assert_eq!(
            err(&with("{ user = \"u\", secret = \"eleven-byte\" }")),
            "target iqn.2026-11.io.busrig:t1: chap.secret is 11 bytes; CHAP secrets must be \
             at least 12 bytes (RFC 7143 §12.1.3), 16 recommended"
        );
        assert_eq!(
            err(&with("{ user = \"u\", secret = \"s3cretsecret\", mutual_user = \"t\", mutual_secret = \"short\" }")),
            "target iqn.2026-11.io.busrig:t1: chap.mutual_secret is 5 bytes; CHAP secrets must be \
             12..=1024 bytes (RFC 7143 §12.1.3), 16 recommended"
        );
        assert!(validate(&with("{ user = \"u\", secret = \"twelve-bytes\" }")).is_ok());
        assert_eq!(
            err(&with(
                "{ user = \"u\", secret = \"s3cretsecret\", mutual_user = \"t\" }"
            )),
            "target iqn.2026-11.io.busrig:t1: chap.mutual_secret is required with mutual_user"
        );
        assert_eq!(
            err(&with("{ user = \"u\", secret = \"s3cretsecret\", mutual_user = \"t\", mutual_secret = \"s3cretsecret\" }")),
            "target iqn.2026-11.io.busrig:t1: chap.mutual_secret must differ from chap.secret"
        );
        assert!(err(&with("{ user = \"u\", secret = \"x\", pepper = 1 }"))
            .contains("unknown field `pepper`"));
    }

    #[test]
    fn bad_lun_id_tpgt_and_tuning_are_refused() {
        assert_eq!(
            err(&ONE.replace("id = 0", "id = 20000")),
            "lun 20000 of target iqn.2026-11.io.busrig:t1: id must be 0..=16383, got 20000"
        );
        assert_eq!(
            err(&ONE.replace("[[target.lun]]", "tpgt = 0\n[[target.lun]]")),
            "target iqn.2026-11.io.busrig:t1: tpgt must be 1..=65535, got 0"
        );
        assert_eq!(
            err(&format!(
                "{ONE}[iscsi]\nmax_recv_data_segment_length = 100\n"
            )),
            "iscsi.max_recv_data_segment_length must be 512..=16777215, got 100"
        );
        assert_eq!(
            err(&format!(
                "{ONE}[iscsi]\nfirst_burst_length = 2097152\nmax_burst_length = 1048576\n"
            )),
            "iscsi.first_burst_length must be 512..=max_burst_length (1048576), got 2097152"
        );
        assert_eq!(
            err(&format!("{ONE}[iscsi]\npoll_us = 20000\n")),
            "iscsi.poll_us must be 0..=10000, got 20000"
        );
        assert_eq!(
            err(&format!("{ONE}[iscsi]\nconnection_memory = 4096\n")),
            "iscsi.connection_memory must be at least max_burst_length (1048576), got 4096"
        );
        assert_eq!(
            err(&format!("{ONE}[iscsi]\ntarget_memory = 33554432\n")),
            "iscsi.target_memory must be at least connection_memory (67108864) and max_command_bytes (67108864), got 33554432"
        );
        assert_eq!(
            err(&format!("{ONE}[iscsi]\nmax_connections_per_source = 0\n")),
            "iscsi.max_connections_per_source must be 1..=max_connections (1024), got 0"
        );
    }

    #[test]
    fn login_failure_limits() {
        let c = validate(ONE).unwrap();
        assert_eq!(c.iscsi.login_failures, LoginFailureLimits::default());
        let c = validate(&format!(
            "{ONE}[iscsi.login_failures]\nfirst_delay_ms = 50\nmax_delay_ms = 400\n"
        ))
        .unwrap();
        assert_eq!(c.iscsi.login_failures.first_delay_ms, 50);
        assert_eq!(c.iscsi.login_failures.max_delay_ms, 400);
        assert_eq!(
            err(&format!(
                "{ONE}[iscsi.login_failures]\nfirst_delay_ms = 500\nmax_delay_ms = 400\n"
            )),
            "iscsi.login_failures.first_delay_ms must be at most max_delay_ms (400), got 500"
        );
        assert_eq!(
            err(&format!(
                "{ONE}[iscsi.login_failures]\nmax_delay_ms = 60000\n"
            )),
            "iscsi.login_failures.max_delay_ms must be 0..=10000, got 60000"
        );
        assert_eq!(
            err(&format!("{ONE}[iscsi.login_failures]\ntracked = 0\n")),
            "iscsi.login_failures.tracked must be 1..=1000000, got 0"
        );
    }

    #[test]
    fn poll_mode_is_on_by_default_and_can_be_turned_off() {
        let c = validate(ONE).unwrap();
        assert_eq!(c.iscsi.poll_us, DEFAULT_POLL_US);
        let c = validate(&format!("{ONE}[iscsi]\npoll_us = 0\n")).unwrap();
        assert_eq!(c.iscsi.poll_us, 0);
    }

    #[test]
    fn no_targets_or_no_luns_are_refused() {
        assert_eq!(
            err("[[bus]]\nname = \"a\"\n"),
            "config declares no [[target]]"
        );
        assert_eq!(
            err("[[target]]\nname = \"iqn.2026-11.io.busrig:t1\"\n"),
            "target iqn.2026-11.io.busrig:t1: declares no [[target.lun]]"
        );
    }

    #[test]
    fn disk_model_is_off_by_default_and_parses() {
        let c = validate(ONE).unwrap();
        assert_eq!(c.targets[0].luns[0].model, None);
        assert_eq!(c.buses[0].bandwidth, None);
        let c = validate(&ONE.replace(
            "size = \"1MiB\"",
            "size = \"1MiB\"\ndisk_model = \"hdd-10k\"\nstripe_unit = \"64KiB\"\nspindles = 4",
        ))
        .unwrap();
        let m = c.targets[0].luns[0].model.clone().unwrap();
        assert_eq!(m.preset.as_deref(), Some("hdd-10k"));
        assert_eq!(m.stripe_unit, Some(65536));
        assert_eq!(m.service_time, std::time::Duration::from_millis(7));
        assert_eq!(m.spindles, 4);
        // The explicit service time wins over the preset's.
        let c = validate(&ONE.replace(
            "size = \"1MiB\"",
            "size = \"1MiB\"\ndisk_model = \"ssd\"\nservice_time_us = 250",
        ))
        .unwrap();
        let m = c.targets[0].luns[0].model.clone().unwrap();
        assert_eq!(m.service_time, std::time::Duration::from_micros(250));
        assert_eq!(m.stripe_unit, None);
    }

    #[test]
    fn bad_disk_model_values_name_the_key() {
        let with = |extra: &str| {
            err(&ONE.replace("size = \"1MiB\"", &format!("size = \"1MiB\"\n{extra}")))
        };
        assert_eq!(
            with("disk_model = \"floppy\""),
            "lun 0 of target iqn.2026-11.io.busrig:t1: disk_model must be one of hdd-7200, hdd-10k, hdd-15k, ssd, got \"floppy\""
        );
        assert_eq!(
            with("stripe_unit = 1000"),
            "lun 0 of target iqn.2026-11.io.busrig:t1: stripe_unit must be a multiple of block_size 512 up to 1GiB, got 1000"
        );
        assert!(with("stripe_unit = \"64 parsecs\"").contains("stripe_unit has unknown unit"));
        assert_eq!(
            with("service_time_us = 5000000"),
            "lun 0 of target iqn.2026-11.io.busrig:t1: service_time_us must be at most 1000000, got 5000000"
        );
        assert_eq!(
            with("spindles = 0"),
            "lun 0 of target iqn.2026-11.io.busrig:t1: spindles must be 1..=256, got 0"
        );
        assert_eq!(
            with("spindles = 2"),
            "lun 0 of target iqn.2026-11.io.busrig:t1: spindles 2 needs a stripe_unit to spread the data over them"
        );
        assert!(with("service_time_us = -1").contains("service_time_us"));
    }

    #[test]
    fn bus_bandwidth_fits_the_topology() {
        let bus = |topology: &str, bw: &str| {
            format!("[[bus]]\nname = \"b\"\ntopology = \"{topology}\"\nbandwidth = \"{bw}\"\n{ONE}")
        };
        let c = validate(&bus("scsi", "ultra320")).unwrap();
        let l = c.buses[0].bandwidth.clone().unwrap();
        assert_eq!(
            (l.bytes_per_sec, l.sharing),
            (320_000_000, crate::model::LinkSharing::Bus)
        );
        let c = validate(&bus("fc-al", "fc4g")).unwrap();
        let l = c.buses[0].bandwidth.clone().unwrap();
        assert_eq!(
            (l.bytes_per_sec, l.sharing),
            (400_000_000, crate::model::LinkSharing::PerInitiator)
        );
        let c = validate(&bus("fc-fabric", "250MB/s")).unwrap();
        assert_eq!(
            c.buses[0].bandwidth.as_ref().unwrap().bytes_per_sec,
            250_000_000
        );
        assert_eq!(
            err(&bus("fc-fabric", "ultra320")),
            "bus b: bandwidth ultra320 is a parallel SCSI bus but the bus topology is fc-fabric"
        );
        assert_eq!(
            err(&bus("scsi", "fc2g")),
            "bus b: bandwidth fc2g is a Fibre Channel link but the bus topology is scsi"
        );
        assert!(err(&bus("scsi", "fast"))
            .starts_with("bus b: bandwidth must be one of ultra160, ultra320, fc1g"));
        assert_eq!(
            err(&bus("scsi", "10KB/s")),
            "bus b: bandwidth must be at least 1MB/s, got \"10KB/s\""
        );
    }

    #[test]
    fn validation_touches_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("not-yet");
        Config::embedded_default().validate(&sub).unwrap();
        assert!(!sub.exists());
    }
}
