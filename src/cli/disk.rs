//! `busrig disk URL VERB`: one SCSI command (or a reservation holder or
//! challenger) against one LUN, through busrig's initiator
//! (`busrig_initiator::reservation` holds and challenges; the text and JSON
//! of the SCSI data are `busrig_proto::scsi`'s `Display` and `Serialize`).
//! Exit statuses follow sg3_utils (`--help` lists them); errors are also
//! printed in words on stderr, and with `--json` stdout carries one JSON
//! object per invocation (one per event for `--hold`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use busrig_cluster::config::Timing;
use busrig_cluster::storage_validation::{
    validate, CheckId, Report, ValidateOptions, Verdict, DEFAULT_INITIATOR_PREFIX,
};
use busrig_initiator::blocks::{block_data, BlockDataError};
use busrig_initiator::{
    Arbitration, ArbitrationError, ArbitrationReset, Disk, Error, HoldEnd, IscsiUrl, Isid,
    Scsi2Cdb, SessionConfig,
};
use busrig_proto::hexdump::{hex, hexdump, parse_byte};
use busrig_proto::scsi::pr::{
    parse_key, PrOutAction, PrOutParams, PrType, RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::vpd::parse_page;
use serde_json::{json, Value};

/// Default renewal interval of a held SCSI-2 reservation: the 3 s a
/// Windows 2003 quorum owner uses (docs/semantics.md "Timing profiles").
const DEFAULT_RENEW_SECS: f64 = 3.0;
/// Default wait between the challenger's reset and its RESERVE (mscs2003).
const DEFAULT_ARBITRATE_WAIT_SECS: f64 = 7.0;

/// The exit statuses, for `busrig disk --help` (sg3_utils' numbering).
const EXIT_STATUS_HELP: &str = "\
Exit status (as sg3_utils):
   0  GOOD                          14  MISCOMPARE (caw)
   1  bad option value or URL       15  file error (--in, --out)
   2  NOT READY                     20  NO SENSE
   3  MEDIUM or HARDWARE ERROR      21  RECOVERED ERROR
   5  ILLEGAL REQUEST               22  LOGICAL BLOCK ADDRESS OUT OF RANGE
   6  UNIT ATTENTION                24  RESERVATION CONFLICT; arbitrate lost
   4  validate: a check failed
   7  DATA PROTECT                  26  BUSY      27  TASK SET FULL
   9  INVALID COMMAND OPERATION     28  ACA ACTIVE
  10  COPY ABORTED                  29  TASK ABORTED
  11  ABORTED COMMAND               33  command timed out
  97  malformed response            98  other sense data
  99  transport, login or session failure
inquiry exits 5 when no logical unit is at the LUN (peripheral qualifier
3), as every other command to it fails with LOGICAL UNIT NOT SUPPORTED.
The sense data is decoded in words on stderr; with --json stdout carries a
JSON object with \"exit_status\" and the decoded sense.";

#[derive(clap::Args)]
#[command(
    about = "Run SCSI commands against one LUN through busrig's iSCSI initiator",
    after_long_help = EXIT_STATUS_HELP,
    // `busrig disk validate URL...` names its disks after the verb.
    subcommand_negates_reqs = true,
    override_usage = "busrig disk [OPTIONS] <URL> <COMMAND>\n       busrig disk validate [OPTIONS] <URL>..."
)]
pub struct DiskArgs {
    /// iscsi://[user%secret@]host[:port]/target-iqn/lun (libiscsi's form;
    /// ?target_user=..&target_password=.. for mutual CHAP,
    /// ?header_digest=crc32c, ?data_digest=crc32c)
    #[arg(value_name = "URL", required = true)]
    url: Option<String>,

    #[command(subcommand)]
    verb: Verb,

    /// Initiator name to log in with (the I_T nexus is name + ISID).
    #[arg(long, global = true, value_name = "NAME", default_value = busrig_initiator::DEFAULT_INITIATOR_NAME, help_heading = super::GLOBAL)]
    initiator: String,

    /// ISID as 12 hex digits; the default is fixed so that successive
    /// invocations are the same I_T nexus.
    #[arg(long, global = true, value_name = "HEX", help_heading = super::GLOBAL)]
    isid: Option<Isid>,

    /// Print one JSON object (per event for --hold) on stdout.
    #[arg(long, global = true, help_heading = super::GLOBAL)]
    json: bool,

    /// Time limit for each command, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30.0, help_heading = super::GLOBAL)]
    timeout: f64,

    /// How many times a command that returns UNIT ATTENTION is re-issued
    /// (the unit attentions are reported); 0 reports the first one as an error.
    #[arg(long, global = true, value_name = "N", default_value_t = 8, help_heading = super::GLOBAL)]
    ua_retries: u32,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Standard INQUIRY data.
    Inquiry,
    /// A VPD page: a number (0x83, 131) or sp, sn, di, bl, bdc, lbpv.
    Vpd {
        /// The page: a number (0x83, 131) or sp, sn, di, bl, bdc, lbpv.
        #[arg(value_name = "PAGE")]
        page: String,
    },
    /// READ CAPACITY(16) (or (10)).
    Capacity,
    /// REPORT LUNS.
    Luns,
    /// READ COUNT blocks from LBA.
    Read {
        /// The first logical block.
        lba: u64,
        /// Number of blocks.
        count: u32,
        /// Write the data to FILE instead of a hex dump.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Force Unit Access: read from the medium.
        #[arg(long)]
        fua: bool,
    },
    /// WRITE at LBA from a file or a repeated byte.
    #[command(
        after_help = "Examples:\n  busrig disk URL write 0 --in boot.img\n  busrig disk URL write 2048 --pattern 0x5a --count 8 --fua"
    )]
    Write {
        /// The first logical block.
        lba: u64,
        /// Data to write (whole blocks unless --count cuts it).
        #[arg(
            long = "in",
            value_name = "FILE",
            conflicts_with = "pattern",
            required_unless_present = "pattern"
        )]
        input: Option<PathBuf>,
        /// Fill the blocks with this byte (0x5a, 90).
        #[arg(long, value_name = "BYTE", value_parser = parse_byte)]
        pattern: Option<u8>,
        /// Number of blocks (default: the file's length, or 1 with --pattern).
        #[arg(long, value_name = "N")]
        count: Option<u32>,
        /// Force Unit Access: acknowledged only once durable.
        #[arg(long)]
        fua: bool,
    },
    /// SYNCHRONIZE CACHE.
    Sync,
    /// SCSI-2 RESERVE. The reservation belongs to this command's I_T
    /// nexus and so ends when the command logs out as it exits; with
    /// --hold the command stays, renewing it, until interrupted.
    Reserve {
        /// Keep the session and the reservation; exit non-zero the moment a renewal is refused.
        #[arg(long)]
        hold: bool,
        /// Re-issue RESERVE every SECS while holding (default 3).
        #[arg(long, value_name = "SECS", requires = "hold")]
        renew: Option<f64>,
        /// Use RESERVE(10) instead of RESERVE(6).
        #[arg(long)]
        ten: bool,
    },
    /// SCSI-2 RELEASE.
    Release {
        /// Use RELEASE(10) instead of RELEASE(6).
        #[arg(long)]
        ten: bool,
    },
    /// LOGICAL UNIT RESET, TARGET WARM RESET or TARGET COLD RESET.
    Reset {
        /// Which reset.
        #[arg(value_enum)]
        what: ResetKind,
    },
    /// COMPARE AND WRITE at LBA: write only if the blocks hold the expected data.
    #[command(
        after_help = "Example:\n  busrig disk URL caw 100 --compare-pattern 0 --pattern 0xff --count 1"
    )]
    Caw {
        /// The first logical block.
        lba: u64,
        /// Expected current contents (file).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "compare_pattern",
            required_unless_present = "compare_pattern"
        )]
        compare: Option<PathBuf>,
        /// Expected current contents: this byte repeated.
        #[arg(long, value_name = "BYTE", value_parser = parse_byte)]
        compare_pattern: Option<u8>,
        /// New contents (file).
        #[arg(
            long = "in",
            value_name = "FILE",
            conflicts_with = "pattern",
            required_unless_present = "pattern"
        )]
        input: Option<PathBuf>,
        /// New contents: this byte repeated.
        #[arg(long, value_name = "BYTE", value_parser = parse_byte)]
        pattern: Option<u8>,
        /// Number of blocks (default 1).
        #[arg(long, value_name = "N", default_value_t = 1)]
        count: u32,
        /// Force Unit Access: acknowledged only once durable.
        #[arg(long)]
        fua: bool,
    },
    /// Challenge for the LUN as an MSCS node does: reset, wait, RESERVE;
    /// prints won (exit 0) or lost (exit 24).
    Arbitrate {
        /// What to reset first.
        #[arg(long, value_enum, default_value = "target")]
        reset: ArbitrateReset,
        /// Seconds between the reset and the RESERVE (a live owner renews within it).
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_ARBITRATE_WAIT_SECS)]
        wait: f64,
        /// After winning, hold the reservation as `reserve --hold` does.
        #[arg(long)]
        hold: bool,
        /// Re-issue RESERVE every SECS while holding (default 3).
        #[arg(long, value_name = "SECS", requires = "hold")]
        renew: Option<f64>,
    },
    /// Run VERB lines from FILE (or stdin, `-`) in one session, one I_T
    /// nexus, as a series of sg_persist calls over one kernel session.
    #[command(after_help = "\
One verb a line, as after `busrig disk URL`; blank lines and lines
starting with # are skipped; 'single' or \"double\" quotes group words.
Every line is checked before the first one runs. Example:
  pr register --param-sark 0xa
  pr reserve --param-rk 0xa --prout-type 5
  pr read-reservation")]
    Batch {
        /// The file of verb lines; `-` or nothing reads stdin.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Run every line even after one fails (the exit status is the
        /// first failure's).
        #[arg(long)]
        keep_going: bool,
    },
    /// Cluster storage validation: the failover cluster validation
    /// wizard's storage checks, one I_T nexus per simulated node.
    #[command(
        override_usage = "busrig disk validate [OPTIONS] <URL>...",
        after_help = VALIDATE_HELP
    )]
    Validate(ValidateArgs),
    /// Persistent reservations (sg_persist's option names).
    #[command(
        subcommand,
        after_help = "\
Examples (node a holds WERO, type 5; node b fences it out):
  busrig disk URL --initiator iqn.2026-11.io.busrig:a pr register --param-sark 0xa
  busrig disk URL --initiator iqn.2026-11.io.busrig:a pr reserve --param-rk 0xa --prout-type 5
  busrig disk URL --initiator iqn.2026-11.io.busrig:b pr register --param-sark 0xb
  busrig disk URL --initiator iqn.2026-11.io.busrig:b pr preempt-abort --param-rk 0xb --param-sark 0xa --prout-type 5"
    )]
    Pr(PrVerb),
}

/// The checks `busrig disk validate` runs, for its `--help`.
const VALIDATE_HELP: &str = "\
Checks (--check NAME, repeatable; all by default):
  list-disks              List Potential Cluster Disks
  vpd                     Validate SCSI Device Vital Product Data (VPD)
  persistent-reservation  Validate SCSI-3 Persistent Reservation
  arbitration             Validate Disk Arbitration (PR challenge and defense)
  scsi2-arbitration       Validate Disk Arbitration (SCSI-2 challenge and defense)
  multiple-arbitration    Validate Multiple Arbitration
  disk-failover           Validate Disk Failover
  simultaneous-failover   Validate Simultaneous Failover
  disk-access-latency     Validate Disk Access Latency
The checks write the last 8 blocks of every disk (saved first and written
back) and remove every registration and reservation they made. A disk with
someone else's registrations or reservation is left alone and fails
list-disks. Exit status 0 when no check failed, 4 when one did.";

/// `busrig disk validate`'s own options (the global --initiator, --isid
/// and --timeout do not apply: every node has its own nexus, and the
/// limits follow the timing profile).
#[derive(clap::Args)]
struct ValidateArgs {
    /// The disks: iscsi://[user%secret@]host[:port]/target-iqn/lun, each
    /// one LUN.
    #[arg(value_name = "URL")]
    urls: Vec<String>,
    /// Simulated nodes, each its own initiator name and I_T nexus (2 to 16).
    #[arg(long, value_name = "N", default_value_t = 2)]
    nodes: usize,
    /// Arbitration timing: fast (challenge wait 0.4 s) or mscs2003 (7 s).
    #[arg(long, value_enum, default_value = "fast")]
    timing: TimingProfile,
    /// Run only this check (repeatable; see below).
    #[arg(long = "check", value_name = "NAME", value_parser = parse_check)]
    checks: Vec<CheckId>,
    /// Initiator names are this and the node name (NODE1, NODE2, ...).
    #[arg(long, value_name = "IQN", default_value = DEFAULT_INITIATOR_PREFIX)]
    initiator_prefix: String,
    /// Reads and writes per node and disk in disk-access-latency.
    #[arg(long, value_name = "N", default_value_t = 32)]
    latency_samples: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TimingProfile {
    /// The cluster's test timing: challenge wait 0.4 s, defense every 0.15 s.
    Fast,
    /// Windows Server 2003's: challenge wait 7 s, defense every 3 s.
    Mscs2003,
}

fn parse_check(s: &str) -> Result<CheckId, String> {
    CheckId::parse(s).ok_or_else(|| {
        let names: Vec<&str> = CheckId::ALL.iter().map(|c| c.name()).collect();
        format!("no check {s:?}; the checks are {}", names.join(", "))
    })
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ResetKind {
    /// LOGICAL UNIT RESET of this LUN.
    Lun,
    /// TARGET WARM RESET.
    Target,
    /// TARGET COLD RESET (the target then drops every connection).
    Cold,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ArbitrateReset {
    /// LOGICAL UNIT RESET of this LUN.
    Lun,
    /// TARGET WARM RESET.
    Target,
    /// No reset: just wait and RESERVE.
    None,
}

#[derive(clap::Args, Clone, Default)]
struct PrOpts {
    /// RESERVATION KEY (hex, as sg_persist).
    #[arg(long = "param-rk", value_name = "RK", value_parser = parse_key, default_value = "0")]
    rk: u64,
    /// SERVICE ACTION RESERVATION KEY (hex).
    #[arg(long = "param-sark", value_name = "SARK", value_parser = parse_key, default_value = "0")]
    sark: u64,
    /// Reservation type: 1 WE, 3 EA, 5 WERO, 6 EARO, 7 WEAR, 8 EAAR.
    #[arg(long = "prout-type", value_name = "TYPE")]
    prout_type: Option<PrType>,
    /// Activate Persist Through Power Loss.
    #[arg(long = "param-aptpl")]
    aptpl: bool,
    /// ALL_TG_PT: register on all target ports.
    #[arg(long = "param-alltgpt")]
    all_tg_pt: bool,
}

#[derive(clap::Subcommand)]
enum PrVerb {
    /// PR IN READ KEYS.
    ReadKeys,
    /// PR IN READ RESERVATION.
    ReadReservation,
    /// PR IN REPORT CAPABILITIES.
    Capabilities,
    /// PR IN READ FULL STATUS.
    ReadFullStatus,
    /// PR OUT REGISTER (--param-rk current key, --param-sark new key; 0 unregisters).
    Register(PrOpts),
    /// PR OUT REGISTER AND IGNORE EXISTING KEY (--param-sark new key).
    RegisterIgnore(PrOpts),
    /// PR OUT RESERVE (--param-rk, --prout-type).
    Reserve(PrOpts),
    /// PR OUT RELEASE (--param-rk, --prout-type).
    Release(PrOpts),
    /// PR OUT CLEAR (--param-rk).
    Clear(PrOpts),
    /// PR OUT PREEMPT (--param-rk, --param-sark key to preempt, --prout-type).
    Preempt(PrOpts),
    /// PR OUT PREEMPT AND ABORT (--param-rk, --param-sark, --prout-type).
    PreemptAbort(PrOpts),
    /// PR OUT REGISTER AND MOVE to another I_T nexus.
    RegisterMove {
        #[command(flatten)]
        opts: PrOpts,
        /// The new holder: iqn...,i,0x<ISID> (sg_persist's --transport-id for iSCSI).
        #[arg(long = "transport-id", value_name = "TID")]
        transport_id: TransportId,
        /// RELATIVE TARGET PORT IDENTIFIER of the new holder's nexus.
        #[arg(
            long = "relative-target-port",
            value_name = "RTPI",
            default_value_t = 1
        )]
        relative_target_port: u16,
        /// Unregister this I_T nexus after the move.
        #[arg(long)]
        unreg: bool,
    },
}

/// `cmd` (the whole CLI) with `<URL>` in the usage lines of `busrig disk
/// URL VERB` and `busrig disk URL pr VERB`: clap leaves the URL out of
/// them, because `busrig disk validate` takes its URLs after the verb
/// (`subcommand_negates_reqs`) and a grandparent's positional is never
/// shown, but every other verb requires it.
pub fn usage_with_url(cmd: clap::Command) -> clap::Command {
    let mut built = cmd.clone();
    built.build();
    let with_url = |verbs: &clap::Command| -> Vec<(String, String)> {
        verbs
            .get_subcommands()
            .filter(|v| !matches!(v.get_name(), "help" | "validate"))
            .map(|v| {
                let u = v.clone().render_usage().to_string();
                let u = u.trim_start_matches("Usage:").trim();
                (
                    v.get_name().to_string(),
                    u.replacen("busrig disk ", "busrig disk <URL> ", 1),
                )
            })
            .collect()
    };
    let Some(disk) = built.find_subcommand("disk") else {
        return cmd;
    };
    let verbs = with_url(disk);
    let pr_verbs = disk.find_subcommand("pr").map(with_url).unwrap_or_default();
    cmd.mut_subcommand("disk", |mut d| {
        for (name, usage) in verbs {
            d = d.mut_subcommand(name, |v| v.override_usage(usage));
        }
        d.mut_subcommand("pr", |mut pr| {
            for (name, usage) in pr_verbs {
                pr = pr.mut_subcommand(name, |v| v.override_usage(usage));
            }
            pr
        })
    })
}

/// A failure of the command: its exit status and its JSON, whose
/// `error` is the message.
struct Failure {
    status: u8,
    json: Value,
}

impl Failure {
    fn usage(msg: impl Into<String>) -> Failure {
        let json = json!({ "error": msg.into(), "kind": "usage" });
        Failure { status: 1, json }
    }

    fn file(msg: impl Into<String>) -> Failure {
        let json = json!({ "error": msg.into(), "kind": "file" });
        Failure { status: 15, json }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let (status, json) = (e.exit_status(), e.json());
        Failure { status, json }
    }
}

impl From<BlockDataError> for Failure {
    fn from(e: BlockDataError) -> Failure {
        match e.is_usage() {
            true => Failure::usage(e.to_string()),
            false => Failure::file(e.to_string()),
        }
    }
}

/// Human output or JSON, chosen once; in a batch, the line each verb's
/// output belongs to (the JSON's `line`).
struct Out {
    json: bool,
    line: Option<usize>,
}

/// Prints a line on stdout. A closed pipe (`busrig disk ... | head`) is
/// not an error worth a panic: the reader has what it wanted.
fn say(line: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}").and_then(|_| o.flush());
}

impl Out {
    fn emit(&self, human: impl FnOnce() -> String, mut value: Value) {
        if let (Some(n), Some(o)) = (self.line, value.as_object_mut()) {
            o.insert("line".into(), json!(n));
        }
        if self.json {
            say(&value.to_string());
        } else {
            let h = human();
            if !h.is_empty() {
                say(&h);
            }
        }
    }

    /// Reports the unit attentions the command met (on stderr, or as the
    /// JSON's `unit_attentions`), then emits.
    fn done(&self, disk: &Disk, human: impl FnOnce() -> String, mut value: Value) {
        value["unit_attentions"] = json!(report_uas(self, disk));
        self.emit(human, value);
    }
}

/// The power-on unit attention every new login meets is in the JSON but
/// not printed (`busrig_initiator::UnitAttentionKind`).
fn report_uas(out: &Out, disk: &Disk) -> Vec<busrig_proto::scsi::sense::Sense> {
    let uas = disk.take_classified_unit_attentions();
    if !out.json {
        for (u, kind) in &uas {
            if *kind == busrig_initiator::UnitAttentionKind::Event {
                eprintln!("unit attention: {u}");
            }
        }
    }
    uas.into_iter().map(|(u, _)| u).collect()
}

/// Prints what a command read: its `Display`, or its JSON (under `key`
/// when given) with the unit attentions met.
fn show<T: std::fmt::Display + serde::Serialize>(disk: &Disk, out: &Out, key: Option<&str>, t: T) {
    let mut j = json!({});
    match key {
        Some(k) => j[k] = json!(&t),
        None => j = json!(&t),
    }
    out.done(disk, || t.to_string(), j);
}

pub async fn run(args: DiskArgs) -> anyhow::Result<ExitCode> {
    let out = Out {
        json: args.json,
        line: None,
    };
    match run_inner(&args, &out).await {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(f) => {
            eprintln!(
                "busrig disk: {}",
                f.json["error"].as_str().unwrap_or_default()
            );
            if out.json {
                let mut j = f.json;
                j["exit_status"] = json!(f.status);
                say(&j.to_string());
            }
            Ok(ExitCode::from(f.status))
        }
    }
}

async fn run_inner(args: &DiskArgs, out: &Out) -> Result<u8, Failure> {
    if let Verb::Validate(v) = &args.verb {
        return run_validate(args.url.as_deref(), v, out).await;
    }
    let url = args
        .url
        .as_deref()
        .ok_or_else(|| Failure::usage("a URL is needed before the verb: busrig disk URL VERB"))?;
    let url = IscsiUrl::parse(url).map_err(|e| Failure::usage(e.to_string()))?;
    let timeout = secs(
        args.timeout,
        "--timeout must be a positive number of seconds",
    )?;
    let cfg = SessionConfig {
        initiator_name: args.initiator.clone(),
        isid: args.isid.unwrap_or(Isid::CLI_DEFAULT),
        command_timeout: timeout,
        ..SessionConfig::default()
    };
    // A batch reads and checks every line before it logs in.
    let lines = match &args.verb {
        Verb::Batch { file, .. } => Some(batch_lines(file.as_deref())?),
        _ => None,
    };
    let disk = Disk::open(&url, cfg)
        .await?
        .with_reset_retries(args.ua_retries);
    let r = match (&args.verb, lines) {
        (Verb::Batch { keep_going, .. }, Some(lines)) => {
            Ok(batch(&disk, &lines, *keep_going, out).await)
        }
        (v, _) => verb(&disk, v, out).await,
    };
    // Logging out ends the I_T nexus cleanly; errors here do not change the
    // verb's outcome (a cold reset, for one, already ended the connection).
    if let Err(e) = disk.session().logout().await {
        tracing::debug!(error = %e, "logout");
    }
    r
}

/// A positive, finite number of seconds, else a usage error saying `why`.
fn secs(s: f64, why: &str) -> Result<Duration, Failure> {
    match s > 0.0 && s.is_finite() {
        true => Ok(Duration::from_secs_f64(s)),
        false => Err(Failure::usage(why)),
    }
}

async fn verb(disk: &Disk, verb: &Verb, out: &Out) -> Result<u8, Failure> {
    match verb {
        Verb::Inquiry => {
            let inq = disk.inquiry().await?;
            if !inq.logical_unit_present() {
                return Ok(no_logical_unit(disk, out, inq));
            }
            show(disk, out, Some("inquiry"), inq)
        }
        Verb::Vpd { page } => {
            let code = parse_page(page).map_err(|e| Failure::usage(e.to_string()))?;
            let (v, raw) = disk.vpd(code).await?;
            let j = json!({ "page": format!("{code:#04x}"), "vpd": v, "raw": hex(&raw) });
            out.done(disk, || v.to_string(), j);
        }
        Verb::Capacity => show(disk, out, Some("capacity"), disk.capacity().await?),
        Verb::Luns => show(disk, out, None, disk.report_luns().await?),
        Verb::Read {
            lba,
            count,
            out: file,
            fua,
        } => {
            let data = match fua {
                true => disk.read_fua(*lba, *count).await?,
                false => disk.read(*lba, *count).await?,
            };
            let uas = report_uas(out, disk);
            let crc = format!("{:08x}", busrig_proto::digest::crc32c(&data));
            let mut j = json!({ "lba": lba, "blocks": count, "bytes": data.len(), "crc32c": crc, "unit_attentions": uas });
            if let Some(f) = file {
                std::fs::write(f, &data)
                    .map_err(|e| Failure::file(format!("{}: {e}", f.display())))?;
                j["file"] = json!(f);
                out.emit(
                    || format!("read {} bytes to {}", data.len(), f.display()),
                    j,
                );
            } else {
                j["data"] = json!(hex(&data));
                out.emit(|| hexdump(&data), j);
            }
        }
        Verb::Write {
            lba,
            input,
            pattern,
            count,
            fua,
        } => {
            let bl = disk.block_length().await? as usize;
            let data = block_data(input.as_deref(), *pattern, count.map(|c| c as usize), bl)?;
            disk.write(*lba, data.clone(), *fua).await?;
            let (blocks, crc) = (data.len() / bl, busrig_proto::digest::crc32c(&data));
            let fua_note = if *fua { " (FUA)" } else { "" };
            let j = json!({ "lba": lba, "blocks": blocks, "bytes": data.len(), "fua": fua, "crc32c": format!("{crc:08x}") });
            out.done(
                disk,
                || format!("wrote {blocks} blocks at LBA {lba}{fua_note}"),
                j,
            );
        }
        Verb::Sync => {
            disk.synchronize_cache().await?;
            out.done(
                disk,
                || "cache synchronized".into(),
                json!({ "synchronized": true }),
            );
        }
        Verb::Reserve { hold, renew, ten } => {
            let cdb = scsi2_cdb(*ten);
            disk.reserve_scsi2(cdb).await?;
            if *hold {
                out.done(disk, || "reserved".into(), json!({ "event": "reserved" }));
                return hold_reservation(disk, cdb, *renew, out).await;
            }
            // The reservation belongs to this command's I_T nexus, which
            // ends at logout (docs/semantics.md: loss of the holder's
            // nexus releases it); say so rather than let "reserved" read
            // as lasting.
            out.done(
                disk,
                || "reserved, until this command logs out (released again as it exits; --hold keeps it)".into(),
                json!({ "event": "reserved", "until": "logout" }),
            );
        }
        Verb::Release { ten } => {
            disk.release_scsi2(scsi2_cdb(*ten)).await?;
            out.done(disk, || "released".into(), json!({ "released": true }));
        }
        Verb::Reset { what } => {
            let name = match what {
                ResetKind::Lun => disk.lun_reset().await.map(|()| "LOGICAL UNIT RESET")?,
                ResetKind::Target => disk
                    .target_warm_reset()
                    .await
                    .map(|()| "TARGET WARM RESET")?,
                ResetKind::Cold => disk
                    .target_cold_reset()
                    .await
                    .map(|()| "TARGET COLD RESET")?,
            };
            out.emit(
                || format!("{name}: function complete"),
                json!({ "reset": name, "response": "function complete" }),
            );
        }
        Verb::Caw {
            lba,
            compare,
            compare_pattern,
            input,
            pattern,
            count,
            fua,
        } => {
            let bl = disk.block_length().await? as usize;
            let n = Some(*count as usize);
            let expected = block_data(compare.as_deref(), *compare_pattern, n, bl)?;
            let new = block_data(input.as_deref(), *pattern, n, bl)?;
            if expected.len() != new.len() {
                return Err(Failure::usage(
                    "the compare data and the new data differ in length",
                ));
            }
            disk.compare_and_write(*lba, &expected, &new, *fua).await?;
            out.done(
                disk,
                || format!("compared and wrote {count} blocks at LBA {lba}"),
                json!({ "lba": lba, "blocks": count, "written": true }),
            );
        }
        Verb::Arbitrate {
            reset,
            wait,
            hold,
            renew,
        } => {
            return arbitrate(disk, *reset, *wait, hold.then_some(*renew), out).await;
        }
        Verb::Pr(PrVerb::ReadKeys) => show(disk, out, None, disk.pr_read_keys().await?),
        Verb::Pr(PrVerb::ReadReservation) => {
            show(disk, out, None, disk.pr_read_reservation().await?)
        }
        Verb::Pr(PrVerb::Capabilities) => {
            let c = disk.pr_report_capabilities().await?;
            show(disk, out, Some("capabilities"), c)
        }
        Verb::Pr(PrVerb::ReadFullStatus) => {
            show(disk, out, None, disk.pr_read_full_status().await?)
        }
        Verb::Pr(p) => pr_out(disk, p, out).await?,
        Verb::Batch { .. } | Verb::Validate(_) => {
            unreachable!("batch and validate run before any single verb")
        }
    }
    Ok(0)
}

/// Exit status of `inquiry` when no logical unit is at the LUN: 5, as
/// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED (25/00), the answer every
/// other command to that LUN gets (SPC-4 §6.6.2: INQUIRY itself succeeds).
const EXIT_NO_LOGICAL_UNIT: u8 = 5;

/// `inquiry` of a LUN without a logical unit: the data the target sent,
/// its peripheral qualifier in words, and exit status 5.
fn no_logical_unit(
    disk: &Disk,
    out: &Out,
    inq: busrig_proto::scsi::inquiry::StandardInquiry,
) -> u8 {
    let q = inq.peripheral_qualifier;
    let msg = format!(
        "no logical unit at LUN {} (peripheral qualifier {q}: {})",
        disk.lun(),
        busrig_proto::scsi::inquiry::peripheral_qualifier_name(q)
    );
    eprintln!("busrig disk: {msg}");
    let j = json!({
        "inquiry": &inq,
        "error": msg,
        "kind": "no-logical-unit",
        "exit_status": EXIT_NO_LOGICAL_UNIT,
    });
    out.done(disk, || inq.to_string(), j);
    EXIT_NO_LOGICAL_UNIT
}

fn scsi2_cdb(ten: bool) -> Scsi2Cdb {
    if ten {
        Scsi2Cdb::Ten
    } else {
        Scsi2Cdb::Six
    }
}

/// The defender (`busrig_initiator::reservation`), printing each renewal
/// that met unit attentions (every one with --json) and how it ended:
/// exit status 24 the moment a renewal meets RESERVATION CONFLICT, 0 once
/// released on SIGINT or SIGTERM.
async fn hold_reservation(
    disk: &Disk,
    cdb: Scsi2Cdb,
    renew: Option<f64>,
    out: &Out,
) -> Result<u8, Failure> {
    let renew = renew.unwrap_or(DEFAULT_RENEW_SECS);
    let period = secs(renew, "--renew must be a positive number of seconds")?;
    let end = disk
        .hold_reservation(cdb, period, crate::interrupted(), || {
            let uas = report_uas(out, disk);
            if !uas.is_empty() || out.json {
                let j = json!({ "event": "renewed", "unit_attentions": uas });
                out.emit(|| "renewed".into(), j);
            }
        })
        .await?;
    let (what, status) = (end.name(), end.exit_status());
    match end {
        HoldEnd::Released(r) => {
            let j = json!({ "event": what, "ok": r.is_ok() });
            out.emit(|| "interrupted: released".into(), j);
        }
        HoldEnd::Failed(e) => {
            let uas = report_uas(out, disk);
            eprintln!("busrig disk: {what}: {e}");
            let j = json!({ "event": what, "error": e.to_string(), "exit_status": status, "unit_attentions": uas });
            out.emit(|| format!("{what}: {e}"), j);
        }
    }
    Ok(status)
}

/// The challenger (`busrig_initiator::reservation`): reset, wait, RESERVE
/// (docs/semantics.md "Timing profiles"); with `hold`, a won reservation
/// is then held, renewing every `hold` seconds.
async fn arbitrate(
    disk: &Disk,
    reset: ArbitrateReset,
    wait: f64,
    hold: Option<Option<f64>>,
    out: &Out,
) -> Result<u8, Failure> {
    if !(wait >= 0.0 && wait.is_finite()) {
        return Err(Failure::usage("--wait must be a number of seconds"));
    }
    let reset = match reset {
        ArbitrateReset::Lun => ArbitrationReset::Lun,
        ArbitrateReset::Target => ArbitrationReset::Target,
        ArbitrateReset::None => ArbitrationReset::None,
    };
    let r = match disk.arbitrate(reset, Duration::from_secs_f64(wait)).await {
        // A failed reset ends the challenge before anything is collected.
        Err(ArbitrationError::Reset(e)) => return Err(e.into()),
        r => r,
    };
    let uas = report_uas(out, disk);
    let result = r.map_err(ArbitrationError::into_inner)?;
    let j = json!({ "result": result.name(), "reset": reset.name(), "wait_secs": wait, "unit_attentions": uas });
    out.emit(|| result.name().into(), j);
    match (result, hold) {
        (Arbitration::Won, Some(renew)) => hold_reservation(disk, Scsi2Cdb::Six, renew, out).await,
        (result, _) => Ok(result.exit_status()),
    }
}

fn key_hex(k: u64) -> String {
    format!("0x{k:x}")
}

/// PR OUT: the parameter list from the options, then the command.
async fn pr_out(disk: &Disk, verb: &PrVerb, out: &Out) -> Result<(), Failure> {
    let (action, opts) = match verb {
        PrVerb::ReadKeys
        | PrVerb::ReadReservation
        | PrVerb::Capabilities
        | PrVerb::ReadFullStatus => unreachable!("PR IN is shown by verb()"),
        PrVerb::Register(o) => (PrOutAction::Register, o),
        PrVerb::RegisterIgnore(o) => (PrOutAction::RegisterAndIgnoreExistingKey, o),
        PrVerb::Reserve(o) => (PrOutAction::Reserve, o),
        PrVerb::Release(o) => (PrOutAction::Release, o),
        PrVerb::Clear(o) => (PrOutAction::Clear, o),
        PrVerb::Preempt(o) => (PrOutAction::Preempt, o),
        PrVerb::PreemptAbort(o) => (PrOutAction::PreemptAndAbort, o),
        PrVerb::RegisterMove { opts, .. } => (PrOutAction::RegisterAndMove, opts),
    };
    let needs_type = || Failure::usage(format!("PR OUT {} needs --prout-type", action.name()));
    if action.uses_type() && opts.prout_type.is_none() {
        return Err(needs_type());
    }
    if let PrVerb::RegisterMove {
        transport_id,
        relative_target_port,
        unreg,
        ..
    } = verb
    {
        let params = RegisterAndMoveParams {
            reservation_key: opts.rk,
            service_action_key: opts.sark,
            unreg: *unreg,
            aptpl: opts.aptpl,
            relative_target_port: *relative_target_port,
            transport_id: transport_id.clone(),
        };
        let pr_type = opts.prout_type.ok_or_else(needs_type)?;
        disk.pr_register_and_move(pr_type, &params).await?;
    } else {
        let params = PrOutParams {
            reservation_key: opts.rk,
            service_action_key: opts.sark,
            all_tg_pt: opts.all_tg_pt,
            aptpl: opts.aptpl,
            ..PrOutParams::default()
        };
        disk.pr_out(action, opts.prout_type, &params).await?;
    }
    out.done(
        disk,
        || format!("PR OUT {}: done", action.name()),
        json!({
            "action": action.name(),
            "key": key_hex(opts.rk),
            "sa_key": key_hex(opts.sark),
            "type": opts.prout_type.map(|t| t.code()),
            "aptpl": opts.aptpl,
            "done": true,
        }),
    );
    Ok(())
}

/// Exit status of `validate` when a check failed (unused by sg3_utils).
const EXIT_VALIDATION_FAILED: u8 = 4;

/// One line of a batch file, parsed as the words after `busrig disk URL`.
#[derive(clap::Parser)]
#[command(name = "batch line", no_binary_name = true)]
struct BatchLine {
    #[command(subcommand)]
    verb: Verb,
}

/// A checked batch line: its number, its text and its verb.
struct Line {
    number: usize,
    text: String,
    verb: Verb,
}

/// Reads FILE (stdin for `-` or none) and parses every line before
/// anything runs, so a mistake on line 9 costs nothing of lines 1 to 8.
fn batch_lines(file: Option<&std::path::Path>) -> Result<Vec<Line>, Failure> {
    use std::io::Read;
    let text = match file {
        Some(f) if f != std::path::Path::new("-") => std::fs::read_to_string(f)
            .map_err(|e| Failure::file(format!("{}: {e}", f.display())))?,
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::file(format!("stdin: {e}")))?;
            s
        }
    };
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let bad = |why: String| Failure::usage(format!("line {number}: {why}"));
        let words = split_words(raw).map_err(|e| bad(e.into()))?;
        if words.is_empty() {
            continue;
        }
        let parsed = <BatchLine as clap::Parser>::try_parse_from(&words)
            .map_err(|e| bad(e.render().to_string().trim_end().to_string()))?;
        match &parsed.verb {
            Verb::Batch { .. } | Verb::Validate(_) => {
                return Err(bad(format!("{} cannot run inside a batch", words[0])))
            }
            Verb::Reserve { hold: true, .. } | Verb::Arbitrate { hold: true, .. } => {
                return Err(bad("--hold runs until interrupted: not in a batch".into()))
            }
            _ => {}
        }
        lines.push(Line {
            number,
            text: words.join(" "),
            verb: parsed.verb,
        });
    }
    Ok(lines)
}

/// Splits a batch line into words: whitespace separates, 'single' and
/// "double" quotes group, and a word starting with # ends the line.
fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed");
    }
    words.extend(word);
    Ok(words)
}

/// Runs the lines in order on one session; stops at the first failure
/// unless `keep_going`. The exit status is the first failure's.
async fn batch(disk: &Disk, lines: &[Line], keep_going: bool, out: &Out) -> u8 {
    let mut status = 0;
    for line in lines {
        let out = Out {
            json: out.json,
            line: Some(line.number),
        };
        if !out.json {
            say(&format!("> {}", line.text));
        }
        let code = match verb(disk, &line.verb, &out).await {
            Ok(code) => code,
            Err(f) => {
                let msg = f.json["error"].as_str().unwrap_or_default().to_string();
                eprintln!("busrig disk: line {}: {msg}", line.number);
                if out.json {
                    let mut j = f.json;
                    j["exit_status"] = json!(f.status);
                    j["line"] = json!(line.number);
                    say(&j.to_string());
                }
                f.status
            }
        };
        if code != 0 && status == 0 {
            status = code;
        }
        if code != 0 && !keep_going {
            break;
        }
    }
    status
}

/// `busrig disk validate`: the checks of `busrig_cluster::storage_validation`
/// and their report; a URL before the verb counts as the first disk.
async fn run_validate(first: Option<&str>, v: &ValidateArgs, out: &Out) -> Result<u8, Failure> {
    let mut urls = Vec::new();
    for u in first.into_iter().chain(v.urls.iter().map(String::as_str)) {
        urls.push(IscsiUrl::parse(u).map_err(|e| Failure::usage(format!("{u}: {e}")))?);
    }
    let (timing, timing_name) = match v.timing {
        TimingProfile::Fast => (Timing::fast(), "fast"),
        TimingProfile::Mscs2003 => (Timing::mscs2003(), "mscs2003"),
    };
    let opts = ValidateOptions {
        urls,
        nodes: v.nodes,
        timing,
        timing_name,
        initiator_prefix: v.initiator_prefix.clone(),
        checks: v.checks.clone(),
        latency_samples: v.latency_samples,
    };
    let report = validate(opts)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    let status = if report.failed() {
        EXIT_VALIDATION_FAILED
    } else {
        0
    };
    let mut j = json!(&report);
    for verdict in [Verdict::Pass, Verdict::Warn, Verdict::Fail] {
        j[verdict.name()] = json!(report.count(verdict));
    }
    j["exit_status"] = json!(status);
    out.emit(|| validation_text(&report), j);
    Ok(status)
}

/// The report for people: a line per check and disk with its verdict,
/// the reason, and the command that showed it.
fn validation_text(r: &Report) -> String {
    let names: Vec<String> = r.nodes.iter().map(|n| n.initiator.clone()).collect();
    let mut s = format!(
        "busrig disk validate: {} disk(s), {} nodes ({}), {} timing\n",
        r.disks.len(),
        r.nodes.len(),
        names.join(", "),
        r.timing
    );
    for c in &r.results {
        s += &format!(
            "{:<4}  {}  {}\n      {}\n",
            c.verdict.name(),
            c.title,
            c.disk.as_deref().unwrap_or("all disks"),
            c.reason
        );
        if let Some(cmd) = &c.command {
            s += &format!("      shown by: {cmd}\n");
        }
    }
    s += &format!(
        "{} passed, {} warnings, {} failed",
        r.count(Verdict::Pass),
        r.count(Verdict::Warn),
        r.count(Verdict::Fail)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_words_split_on_blanks_and_group_in_quotes() {
        let rows: [(&str, &[&str]); 6] = [
            (
                "pr register --param-sark 0xa",
                &["pr", "register", "--param-sark", "0xa"],
            ),
            (
                "  write 0 --in 'my file.img'  ",
                &["write", "0", "--in", "my file.img"],
            ),
            ("read 0 1 # the first block", &["read", "0", "1"]),
            ("# a comment", &[]),
            ("", &[]),
            ("write 0 --in \"a#b\"", &["write", "0", "--in", "a#b"]),
        ];
        for (line, want) in rows {
            assert_eq!(split_words(line).unwrap(), want, "{line:?}");
        }
        assert!(split_words("write 0 --in 'open").is_err());
    }

    #[test]
    fn a_bad_line_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.txt");
        std::fs::write(&f, "pr read-keys\n\nfrobnicate\n").unwrap();
        let e = batch_lines(Some(&f)).err().unwrap();
        assert_eq!(e.status, 1);
        assert!(
            e.json["error"].as_str().unwrap().starts_with("line 3:"),
            "{}",
            e.json
        );
        std::fs::write(&f, "reserve --hold\n").unwrap();
        assert!(batch_lines(Some(&f)).is_err());
        std::fs::write(&f, "# setup\npr register --param-sark 0xa\nread 0 1\n").unwrap();
        let Ok(lines) = batch_lines(Some(&f)) else {
            panic!("a good batch file was refused");
        };
        let numbers: Vec<usize> = lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [2, 3]);
    }
}
