//! `busrig disk URL VERB`: one SCSI command (or a reservation holder or
//! challenger) against one LUN, through busrig's initiator. This file parses
//! the arguments and prints; the hold and the challenge are
//! `busrig_initiator::reservation`, the JSON of the SCSI structures is their
//! `Serialize` in `busrig_proto::scsi`.
//!
//! Exit statuses follow sg3_utils (sg3_utils(8), "EXIT STATUS") so scripts
//! written for sg_persist and friends read them the same way (the mapping
//! of an initiator error is `busrig_initiator::Error::exit_status`):
//!
//! ```text
//!  0 GOOD                      14 MISCOMPARE (COMPARE AND WRITE)
//!  1 usage error (bad value)   15 file error (--in / --out)
//!  2 NOT READY                 20 NO SENSE          21 RECOVERED ERROR
//!  3 MEDIUM / HARDWARE ERROR   22 LBA OUT OF RANGE
//!  5 ILLEGAL REQUEST           24 RESERVATION CONFLICT (and `arbitrate` lost)
//!  6 UNIT ATTENTION            26 BUSY   27 TASK SET FULL   28 ACA ACTIVE
//!  7 DATA PROTECT              29 TASK ABORTED (or aborted by a reset)
//!  9 INVALID OPERATION CODE    33 timeout
//! 10 COPY ABORTED              97 malformed response    98 other sense data
//! 11 ABORTED COMMAND           99 transport, login or session failure
//! ```
//!
//! Errors are also printed in words on stderr (the decoded sense key and
//! additional sense code); with `--json` stdout carries one JSON object
//! per invocation (`reserve --hold` and `arbitrate --hold` print one JSON
//! object per line, one per event).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use busrig_initiator::{
    Arbitration, ArbitrationError, ArbitrationReset, Disk, Error, HoldEnd, IscsiUrl, Isid,
    Scsi2Cdb, SessionConfig,
};
use busrig_proto::scsi::inquiry::device_type_name;
use busrig_proto::scsi::pr::{
    PrOutAction, PrOutParams, PrType, RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::report_luns::decode_lun;
use busrig_proto::scsi::sense::Sense;
use busrig_proto::scsi::vpd::{page_by_name, Vpd};
use bytes::Bytes;
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
   7  DATA PROTECT                  26  BUSY      27  TASK SET FULL
   9  INVALID COMMAND OPERATION     28  ACA ACTIVE
  10  COPY ABORTED                  29  TASK ABORTED
  11  ABORTED COMMAND               33  command timed out
  97  malformed response            98  other sense data
  99  transport, login or session failure
The sense data is decoded in words on stderr; with --json stdout carries a
JSON object with \"exit_status\" and the decoded sense.";

#[derive(clap::Args)]
#[command(
    about = "Run SCSI commands against one LUN through busrig's iSCSI initiator",
    after_long_help = EXIT_STATUS_HELP
)]
pub struct DiskArgs {
    /// iscsi://[user%secret@]host[:port]/target-iqn/lun (libiscsi's form;
    /// ?target_user=..&target_password=.. for mutual CHAP,
    /// ?header_digest=crc32c, ?data_digest=crc32c)
    #[arg(value_name = "URL")]
    url: String,

    #[command(subcommand)]
    verb: Verb,

    /// Initiator name to log in with (the I_T nexus is name + ISID).
    #[arg(long, global = true, value_name = "NAME", default_value = busrig_initiator::DEFAULT_INITIATOR_NAME)]
    initiator: String,

    /// ISID as 12 hex digits; the default is fixed so that successive
    /// invocations are the same I_T nexus.
    #[arg(long, global = true, value_name = "HEX")]
    isid: Option<Isid>,

    /// Print one JSON object (per event for --hold) on stdout.
    #[arg(long, global = true)]
    json: bool,

    /// Time limit for each command, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,

    /// How many times a command that returns UNIT ATTENTION is re-issued
    /// (the unit attentions are reported); 0 reports the first one as an error.
    #[arg(long, global = true, value_name = "N", default_value_t = 8)]
    ua_retries: u32,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Standard INQUIRY data.
    Inquiry,
    /// A VPD page: a number (0x83, 131) or sp, sn, di, bl, bdc, lbpv.
    Vpd {
        #[arg(value_name = "PAGE")]
        page: String,
    },
    /// READ CAPACITY(16) (or (10)).
    Capacity,
    /// REPORT LUNS.
    Luns,
    /// READ COUNT blocks from LBA.
    Read {
        lba: u64,
        count: u32,
        /// Write the data to FILE instead of a hex dump.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Force Unit Access: read from the medium.
        #[arg(long)]
        fua: bool,
    },
    /// WRITE at LBA from a file or a repeated byte.
    Write {
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
    /// SCSI-2 RESERVE; with --hold keep it, renewing, until interrupted.
    Reserve {
        /// Keep the session and the reservation; exit non-zero the moment a renewal is refused.
        #[arg(long)]
        hold: bool,
        /// Re-issue RESERVE every SECS while holding.
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
        #[arg(value_enum)]
        what: ResetKind,
    },
    /// COMPARE AND WRITE at LBA: write only if the blocks hold the expected data.
    Caw {
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
        #[arg(long, value_name = "SECS", requires = "hold")]
        renew: Option<f64>,
    },
    /// Persistent reservations (sg_persist's option names).
    #[command(subcommand)]
    Pr(PrVerb),
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
    Lun,
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
        #[arg(long = "transport-id", value_name = "TID", value_parser = parse_transport_id)]
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

fn parse_byte(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse::<u8>(),
    };
    r.map_err(|_| format!("{s:?} is not a byte (0..255 or 0x00..0xff)"))
}

/// Keys are hex with or without 0x, as sg_persist takes them.
fn parse_key(s: &str) -> Result<u64, String> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(h, 16).map_err(|_| format!("{s:?} is not a hex reservation key"))
}

fn parse_transport_id(s: &str) -> Result<TransportId, String> {
    match s.split_once(",i,") {
        Some((name, isid)) => {
            let isid: Isid = isid
                .parse()
                .map_err(|e: busrig_initiator::config::IsidParseError| e.to_string())?;
            Ok(TransportId::port(name, isid.bytes()))
        }
        None if !s.is_empty() => Ok(TransportId::device(s)),
        None => Err("an empty transport ID".into()),
    }
}

fn parse_page(s: &str) -> Result<u8, String> {
    if let Some(p) = page_by_name(s) {
        return Ok(p);
    }
    parse_byte(s)
        .map_err(|_| format!("{s:?} is not a VPD page (a number, or sp, sn, di, bl, bdc, lbpv)"))
}

/// A failure of the command, with its exit status.
struct Failure {
    status: u8,
    message: String,
    json: Value,
}

impl Failure {
    fn usage(msg: impl Into<String>) -> Failure {
        let message = msg.into();
        Failure {
            status: 1,
            json: json!({ "error": message, "kind": "usage" }),
            message,
        }
    }

    fn file(msg: impl Into<String>) -> Failure {
        let message = msg.into();
        Failure {
            status: 15,
            json: json!({ "error": message, "kind": "file" }),
            message,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = e.exit_status();
        let mut j = json!({ "error": e.to_string() });
        if let Some(s) = e.sense() {
            j["sense"] = json!(s);
        }
        if e.is_reservation_conflict() {
            j["status"] = json!("RESERVATION CONFLICT");
        }
        Failure {
            status,
            message: e.to_string(),
            json: j,
        }
    }
}

/// Human output or JSON, chosen once.
struct Out {
    json: bool,
}

/// Prints a line on stdout. A closed pipe (`busrig disk ... | head`) is
/// not an error worth a panic: the reader has what it wanted.
fn say(line: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}").and_then(|_| o.flush());
}

impl Out {
    fn emit(&self, human: impl FnOnce() -> String, value: Value) {
        if self.json {
            say(&value.to_string());
        } else {
            let h = human();
            if !h.is_empty() {
                say(&h);
            }
        }
    }
}

fn ua_json(uas: &[Sense]) -> Value {
    json!(uas)
}

fn report_uas(out: &Out, disk: &Disk) -> Vec<Sense> {
    let uas = disk.take_unit_attentions();
    if !out.json {
        for u in &uas {
            eprintln!("unit attention: {u}");
        }
    }
    uas
}

pub async fn run(args: DiskArgs) -> anyhow::Result<ExitCode> {
    let out = Out { json: args.json };
    match run_inner(&args, &out).await {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(f) => {
            eprintln!("busrig disk: {}", f.message);
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
    let url = IscsiUrl::parse(&args.url).map_err(|e| Failure::usage(e.to_string()))?;
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(Failure::usage(
            "--timeout must be a positive number of seconds",
        ));
    }
    let cfg = SessionConfig {
        initiator_name: args.initiator.clone(),
        isid: args.isid.unwrap_or(Isid::CLI_DEFAULT),
        command_timeout: Duration::from_secs_f64(args.timeout),
        ..SessionConfig::default()
    };
    let disk = Disk::open(&url, cfg)
        .await?
        .with_reset_retries(args.ua_retries);
    let r = verb(&disk, &args.verb, out).await;
    // Logging out ends the I_T nexus cleanly; errors here do not change the
    // verb's outcome (a cold reset, for one, already ended the connection).
    if let Err(e) = disk.session().logout().await {
        tracing::debug!(error = %e, "logout");
    }
    r
}

async fn verb(disk: &Disk, verb: &Verb, out: &Out) -> Result<u8, Failure> {
    match verb {
        Verb::Inquiry => {
            let i = disk.inquiry().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || {
                    format!(
                        "vendor: {}\nproduct: {}\nrevision: {}\ndevice type: {} ({})\nversion: {:#04x}",
                        i.vendor, i.product, i.revision, i.device_type, device_type_name(i.device_type), i.version
                    )
                },
                json!({ "inquiry": &i, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Vpd { page } => {
            let code = parse_page(page).map_err(Failure::usage)?;
            let (v, raw) = disk.vpd(code).await?;
            let uas = report_uas(out, disk);
            out.emit(
                || vpd_human(code, &v),
                json!({ "page": format!("{code:#04x}"), "vpd": v, "raw": hex(&raw), "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Capacity => {
            let c = disk.capacity().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || {
                    format!(
                        "blocks: {}\nblock length: {}\nbytes: {}",
                        c.blocks, c.block_length, c.bytes
                    )
                },
                json!({ "capacity": c, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Luns => {
            let l = disk.report_luns().await?;
            let uas = report_uas(out, disk);
            let rows: Vec<Value> = l
                .luns
                .iter()
                .map(|f| json!({ "lun": decode_lun(*f), "field": format!("{f:016x}") }))
                .collect();
            out.emit(
                || {
                    l.luns
                        .iter()
                        .map(|f| match decode_lun(*f) {
                            Some(n) => format!("{n}"),
                            None => format!("{f:016x}"),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                json!({ "luns": rows, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Read {
            lba,
            count,
            out: file,
            fua,
        } => {
            let data = if *fua {
                disk.read_fua(*lba, *count).await?
            } else {
                disk.read(*lba, *count).await?
            };
            let uas = report_uas(out, disk);
            let crc = busrig_proto::digest::crc32c(&data);
            if let Some(f) = file {
                std::fs::write(f, &data)
                    .map_err(|e| Failure::file(format!("{}: {e}", f.display())))?;
                out.emit(
                    || format!("read {} bytes to {}", data.len(), f.display()),
                    json!({ "lba": lba, "blocks": count, "bytes": data.len(), "crc32c": format!("{crc:08x}"), "file": f, "unit_attentions": ua_json(&uas) }),
                );
            } else {
                out.emit(
                    || hexdump(&data),
                    json!({ "lba": lba, "blocks": count, "bytes": data.len(), "crc32c": format!("{crc:08x}"), "data": hex(&data), "unit_attentions": ua_json(&uas) }),
                );
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
            let data = source(input.as_ref(), *pattern, count.map(|c| c as usize), bl)?;
            disk.write(*lba, data.clone(), *fua).await?;
            let uas = report_uas(out, disk);
            out.emit(
                || format!("wrote {} blocks at LBA {lba}{}", data.len() / bl, if *fua { " (FUA)" } else { "" }),
                json!({ "lba": lba, "blocks": data.len() / bl, "bytes": data.len(), "fua": fua, "crc32c": format!("{:08x}", busrig_proto::digest::crc32c(&data)), "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Sync => {
            disk.synchronize_cache().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || "cache synchronized".into(),
                json!({ "synchronized": true, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Reserve { hold, renew, ten } => {
            let cdb = scsi2_cdb(*ten);
            disk.reserve_scsi2(cdb).await?;
            let uas = report_uas(out, disk);
            out.emit(
                || "reserved".into(),
                json!({ "event": "reserved", "unit_attentions": ua_json(&uas) }),
            );
            if *hold {
                return hold_reservation(disk, cdb, renew.unwrap_or(DEFAULT_RENEW_SECS), out).await;
            }
        }
        Verb::Release { ten } => {
            disk.release_scsi2(scsi2_cdb(*ten)).await?;
            let uas = report_uas(out, disk);
            out.emit(
                || "released".into(),
                json!({ "released": true, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Reset { what } => {
            let name = match what {
                ResetKind::Lun => {
                    disk.lun_reset().await?;
                    "LOGICAL UNIT RESET"
                }
                ResetKind::Target => {
                    disk.target_warm_reset().await?;
                    "TARGET WARM RESET"
                }
                ResetKind::Cold => {
                    disk.target_cold_reset().await?;
                    "TARGET COLD RESET"
                }
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
            let expected = source(compare.as_ref(), *compare_pattern, n, bl)?;
            let new = source(input.as_ref(), *pattern, n, bl)?;
            if expected.len() != new.len() {
                return Err(Failure::usage(
                    "the compare data and the new data differ in length",
                ));
            }
            disk.compare_and_write(*lba, &expected, &new, *fua).await?;
            let uas = report_uas(out, disk);
            out.emit(
                || format!("compared and wrote {count} blocks at LBA {lba}"),
                json!({ "lba": lba, "blocks": count, "written": true, "unit_attentions": ua_json(&uas) }),
            );
        }
        Verb::Arbitrate {
            reset,
            wait,
            hold,
            renew,
        } => {
            return arbitrate(disk, *reset, *wait, *hold, *renew, out).await;
        }
        Verb::Pr(p) => pr(disk, p, out).await?,
    }
    Ok(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hexdump(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, row) in b.chunks(16).enumerate() {
        let hexes: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        let text: String = row
            .iter()
            .map(|&c| {
                if (0x20..0x7f).contains(&c) {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        s.push_str(&format!(
            "{:08x}  {:<47}  {}\n",
            i * 16,
            hexes.join(" "),
            text
        ));
    }
    s.pop();
    s
}

fn vpd_human(code: u8, v: &Vpd) -> String {
    match v {
        Vpd::SupportedPages { pages } => {
            format!(
                "supported VPD pages: {}",
                pages
                    .iter()
                    .map(|p| format!("{p:#04x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        Vpd::UnitSerialNumber { serial } => format!("unit serial number: {serial}"),
        Vpd::DeviceIdentification { designators } => designators
            .iter()
            .map(|d| {
                format!(
                    "{} (association {}, code set {}): {}",
                    d.type_name, d.association, d.code_set, d.value
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Vpd::Raw { hex, .. } => format!("page {code:#04x}: {hex}"),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// The data for write and caw: a file (cut or checked to whole blocks) or
/// a pattern byte repeated over `count` blocks.
fn source(
    file: Option<&PathBuf>,
    pattern: Option<u8>,
    count: Option<usize>,
    bl: usize,
) -> Result<Bytes, Failure> {
    match (file, pattern) {
        (Some(f), _) => {
            let mut d =
                std::fs::read(f).map_err(|e| Failure::file(format!("{}: {e}", f.display())))?;
            match count {
                Some(n) => {
                    if d.len() < n * bl {
                        return Err(Failure::file(format!(
                            "{} holds {} bytes, fewer than {n} blocks of {bl}",
                            f.display(),
                            d.len()
                        )));
                    }
                    d.truncate(n * bl);
                }
                None if d.is_empty() || d.len() % bl != 0 => {
                    return Err(Failure::usage(format!(
                        "{} is {} bytes, not whole {bl}-byte blocks (give --count)",
                        f.display(),
                        d.len()
                    )))
                }
                None => {}
            }
            Ok(Bytes::from(d))
        }
        (None, Some(b)) => Ok(Bytes::from(vec![b; count.unwrap_or(1).max(1) * bl])),
        (None, None) => Err(Failure::usage("give --in FILE or --pattern BYTE")),
    }
}

fn scsi2_cdb(ten: bool) -> Scsi2Cdb {
    if ten {
        Scsi2Cdb::Ten
    } else {
        Scsi2Cdb::Six
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The defender's loop (`busrig_initiator::reservation`): re-issue RESERVE
/// every `renew` seconds (absorbing the unit attentions a challenger's
/// reset leaves), stop with exit status 24 the moment a renewal meets
/// RESERVATION CONFLICT, release and exit 0 when interrupted.
async fn hold_reservation(
    disk: &Disk,
    cdb: Scsi2Cdb,
    renew: f64,
    out: &Out,
) -> Result<u8, Failure> {
    if !(renew > 0.0 && renew.is_finite()) {
        return Err(Failure::usage(
            "--renew must be a positive number of seconds",
        ));
    }
    let period = Duration::from_secs_f64(renew);
    let end = disk
        .hold_reservation(cdb, period, interrupted(), || {
            let uas = report_uas(out, disk);
            if !uas.is_empty() || out.json {
                out.emit(
                    || "renewed".into(),
                    json!({ "event": "renewed", "unit_attentions": ua_json(&uas) }),
                );
            }
        })
        .await?;
    match end {
        HoldEnd::Released(r) => {
            out.emit(
                || "interrupted: released".into(),
                json!({ "event": "released", "ok": r.is_ok() }),
            );
            Ok(0)
        }
        HoldEnd::Failed(e) => {
            let uas = report_uas(out, disk);
            let status = e.exit_status();
            let what = if e.is_reservation_conflict() {
                "lost"
            } else {
                "renewal failed"
            };
            eprintln!("busrig disk: {what}: {e}");
            out.emit(
                || format!("{what}: {e}"),
                json!({ "event": what, "error": e.to_string(), "exit_status": status, "unit_attentions": ua_json(&uas) }),
            );
            Ok(status)
        }
    }
}

/// The challenger (`busrig_initiator::reservation`): reset, wait, RESERVE
/// (docs/semantics.md "Timing profiles").
async fn arbitrate(
    disk: &Disk,
    reset: ArbitrateReset,
    wait: f64,
    hold: bool,
    renew: Option<f64>,
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
    let name = match result {
        Arbitration::Won => "won",
        Arbitration::Lost => "lost",
    };
    out.emit(
        || name.into(),
        json!({ "result": name, "reset": reset.name(), "wait_secs": wait, "unit_attentions": ua_json(&uas) }),
    );
    match result {
        Arbitration::Won if hold => {
            hold_reservation(
                disk,
                Scsi2Cdb::Six,
                renew.unwrap_or(DEFAULT_RENEW_SECS),
                out,
            )
            .await
        }
        Arbitration::Won => Ok(0),
        Arbitration::Lost => Ok(Error::ReservationConflict.exit_status()),
    }
}

fn key_hex(k: u64) -> String {
    format!("0x{k:x}")
}

async fn pr(disk: &Disk, verb: &PrVerb, out: &Out) -> Result<(), Failure> {
    let (action, opts, extra) = match verb {
        PrVerb::ReadKeys => {
            let k = disk.pr_read_keys().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || {
                    let mut s = format!("PR generation=0x{:x}, {} registered reservation keys follow:", k.generation, k.keys.len());
                    for key in &k.keys {
                        s.push_str(&format!("\n    {}", key_hex(*key)));
                    }
                    s
                },
                json!({ "generation": k.generation, "keys": k.keys.iter().map(|x| key_hex(*x)).collect::<Vec<_>>(), "unit_attentions": ua_json(&uas) }),
            );
            return Ok(());
        }
        PrVerb::ReadReservation => {
            let r = disk.pr_read_reservation().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || match &r.reservation {
                    None => format!("PR generation=0x{:x}, there is NO reservation held", r.generation),
                    Some(h) => format!(
                        "PR generation=0x{:x}, Reservation follows:\n    Key={}\n    scope: {}, type: {}",
                        r.generation,
                        key_hex(h.key),
                        if h.scope == 0 { "LU_SCOPE" } else { "other" },
                        PrType::from_code(h.type_code).map(|t| t.name()).unwrap_or("unknown")
                    ),
                },
                json!({ "generation": r.generation, "reservation": r.reservation, "unit_attentions": ua_json(&uas) }),
            );
            return Ok(());
        }
        PrVerb::Capabilities => {
            let c = disk.pr_report_capabilities().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || {
                    format!(
                        "Compatible Reservation Handling(CRH): {}\nSpecify Initiator Ports Capable(SIP_C): {}\nAll Target Ports Capable(ATP_C): {}\nPersist Through Power Loss Capable(PTPL_C): {}\nPersist Through Power Loss Active(PTPL_A): {}\nSupported types: {}",
                        c.crh as u8,
                        c.sip_c as u8,
                        c.atp_c as u8,
                        c.ptpl_c as u8,
                        c.ptpl_a as u8,
                        c.types().iter().map(|t| t.abbrev()).collect::<Vec<_>>().join(" ")
                    )
                },
                json!({ "capabilities": &c, "unit_attentions": ua_json(&uas) }),
            );
            return Ok(());
        }
        PrVerb::ReadFullStatus => {
            let s = disk.pr_read_full_status().await?;
            let uas = report_uas(out, disk);
            out.emit(
                || {
                    let mut h = format!("PR generation=0x{:x}", s.generation);
                    for e in &s.descriptors {
                        h.push_str(&format!(
                            "\n    Key={}{}\n      relative target port: {}\n      transport id: {}",
                            key_hex(e.key),
                            if e.holder {
                                format!(
                                    "\n      >> Reservation holder, type: {}",
                                    PrType::from_code(e.type_code).map(|t| t.name()).unwrap_or("unknown")
                                )
                            } else {
                                String::new()
                            },
                            e.relative_target_port,
                            e.transport_id
                        ));
                    }
                    h
                },
                json!({ "generation": s.generation, "registrations": s.descriptors, "unit_attentions": ua_json(&uas) }),
            );
            return Ok(());
        }
        PrVerb::Register(o) => (PrOutAction::Register, o, None),
        PrVerb::RegisterIgnore(o) => (PrOutAction::RegisterAndIgnoreExistingKey, o, None),
        PrVerb::Reserve(o) => (PrOutAction::Reserve, o, None),
        PrVerb::Release(o) => (PrOutAction::Release, o, None),
        PrVerb::Clear(o) => (PrOutAction::Clear, o, None),
        PrVerb::Preempt(o) => (PrOutAction::Preempt, o, None),
        PrVerb::PreemptAbort(o) => (PrOutAction::PreemptAndAbort, o, None),
        PrVerb::RegisterMove {
            opts,
            transport_id,
            relative_target_port,
            unreg,
        } => (
            PrOutAction::RegisterAndMove,
            opts,
            Some((transport_id.clone(), *relative_target_port, *unreg)),
        ),
    };
    let needs_type = || Failure::usage(format!("PR OUT {} needs --prout-type", action.name()));
    if action.uses_type() && opts.prout_type.is_none() {
        return Err(needs_type());
    }
    match extra {
        Some((transport_id, relative_target_port, unreg)) => {
            let params = RegisterAndMoveParams {
                reservation_key: opts.rk,
                service_action_key: opts.sark,
                unreg,
                aptpl: opts.aptpl,
                relative_target_port,
                transport_id,
            };
            let pr_type = opts.prout_type.ok_or_else(needs_type)?;
            disk.pr_register_and_move(pr_type, &params).await?;
        }
        None => {
            let params = PrOutParams {
                reservation_key: opts.rk,
                service_action_key: opts.sark,
                all_tg_pt: opts.all_tg_pt,
                aptpl: opts.aptpl,
                ..PrOutParams::default()
            };
            disk.pr_out(action, opts.prout_type, &params).await?;
        }
    }
    let uas = report_uas(out, disk);
    out.emit(
        || format!("PR OUT {}: done", action.name()),
        json!({
            "action": action.name(),
            "key": key_hex(opts.rk),
            "sa_key": key_hex(opts.sark),
            "type": opts.prout_type.map(|t| t.code()),
            "aptpl": opts.aptpl,
            "done": true,
            "unit_attentions": ua_json(&uas),
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sg_persist_style_values_parse() {
        assert_eq!(parse_key("abc"), Ok(0xabc));
        assert_eq!(parse_key("0x1234"), Ok(0x1234));
        assert!(parse_key("xyz").is_err());
        assert_eq!(parse_byte("0x5a"), Ok(0x5a));
        assert_eq!(parse_byte("90"), Ok(90));
        assert_eq!(parse_page("sn"), Ok(0x80));
        assert_eq!(parse_page("0xb0"), Ok(0xb0));
        let t = parse_transport_id("iqn.x:n2,i,0x800000000002").unwrap();
        assert_eq!(t.isid, Some([0x80, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn hexdump_rows() {
        let d = hexdump(b"ABCDEFGHIJKLMNOPQ");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000000  41 42"));
        assert!(lines[0].ends_with("ABCDEFGHIJKLMNOP"));
        assert!(lines[1].starts_with("00000010  51"));
    }

    #[test]
    fn pattern_source_fills_blocks() {
        let b = source(None, Some(0xa5), Some(2), 512).unwrap_or_else(|_| panic!("pattern"));
        assert_eq!(b.len(), 1024);
        assert!(b.iter().all(|x| *x == 0xa5));
    }
}
