//! `busrig bus`: the control plane's client (`busrig_target::control::client`
//! and `::report`). Watches a running `busrig target`, injects faults and
//! changes its configuration live (LUNs, targets, ACL, CHAP, save).

use std::process::ExitCode;

use anyhow::Context;
use busrig_target::control::client::{ControlClient, LunAction, PathAction, Reconfig};
use busrig_target::control::report::{Audit, BusStatus};
use busrig_target::control::DEFAULT_CONTROL_ADDR;

/// `busrig bus --help`: what INITIATOR is, and examples.
const BUS_HELP: &str = "\
INITIATOR is an iSCSI initiator name (iqn.2026-11.io.busrig:NODE1); with --lab
a node name (NODE1) stands for its node's, and a name that is neither is an
error. A fault for an initiator the bus has not seen is set all the same (it
applies once that initiator logs in), with a warning on stderr.
Changes need BUSRIG_CONTROL_TOKEN (a lab's is derived from its cluster file).

Examples:
  busrig bus --lab DIR status
  busrig bus --lab DIR cut NODE2
  busrig bus --control 127.0.0.1:3261 fail iqn.2026-11.io.busrig:NODE1 3 3/11/00
  busrig bus --lab DIR power-cycle 1
  busrig bus lun add 3 --size 1GiB
  busrig bus lun resize 3 2GiB
  busrig bus lun remove 3 --force
  busrig bus target add iqn.2026-11.io.busrig:bus1 --lun 0:64MiB --lun 1:1GiB
  busrig bus acl remove iqn.2026-11.io.busrig:NODE2
  BUSRIG_CHAP_SECRET=... busrig bus chap set --user NODE
  busrig bus save bus.toml";

#[derive(clap::Args)]
#[command(after_help = BUS_HELP)]
pub struct BusArgs {
    /// Control address of the target (its `--control`).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL_ADDR, global = true, help_heading = super::GLOBAL)]
    control: String,
    /// A lab folder (`busrig lab up`): its bus's control address, and node
    /// names (NODE1, ...) accepted wherever an initiator name is.
    #[arg(long, value_name = "DIR", global = true, help_heading = super::GLOBAL)]
    lab: Option<std::path::PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

/// A LUN, of `--target` when the bus has more than one.
#[derive(clap::Args)]
struct LunArg {
    /// The LUN number.
    lun: u64,
    /// The target's name (needed when the bus has more than one target).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
}

/// The initiator a path fault is for.
#[derive(clap::Args)]
struct Initiator {
    /// iSCSI initiator name, or a node name (NODE1) with --lab.
    initiator: String,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Buses, targets, LUNs with their reservations, sessions and faults.
    Status {
        /// The control plane's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bus reset: SCSI-2 reservations cleared, 29/02 on every nexus.
    Reset {
        /// Bus name (optional when the target has one bus).
        bus: Option<String>,
    },
    /// Hold the initiator's commands unanswered until `thaw`.
    Freeze(Initiator),
    /// Release the commands a `freeze` held.
    Thaw(Initiator),
    /// Delay each of the initiator's commands by MS milliseconds (0 clears).
    Delay {
        #[command(flatten)]
        who: Initiator,
        /// Milliseconds added to each command (0 clears the delay).
        ms: u64,
    },
    /// Close the initiator's connections now (it may log in again).
    Drop(Initiator),
    /// Close the initiator's connections and refuse its logins until `restore`.
    Cut(Initiator),
    /// Undo `cut`.
    Restore(Initiator),
    /// Fail the initiator's next N media commands with SENSE (KEY/ASC/ASCQ in hex, e.g. 3/11/00).
    Fail {
        #[command(flatten)]
        who: Initiator,
        /// How many media commands fail (N).
        count: u32,
        /// The sense as KEY/ASC/ASCQ in hex, e.g. 3/11/00 (MEDIUM ERROR, UNRECOVERED READ ERROR).
        sense: String,
    },
    /// Clear every path fault of the initiator.
    Clear(Initiator),
    /// Take a LUN offline (NOT READY).
    Offline(LunArg),
    /// Bring a LUN back online.
    Online(LunArg),
    /// Power-cycle a LUN: unflushed writes in a volatile write cache are lost, then 29/01.
    PowerCycle(LunArg),
    /// The LUN's writer history: each change of the I_T nexus writing to it.
    Audit {
        #[command(flatten)]
        lun: LunArg,
        /// The control plane's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add, remove or resize a LUN of the running bus (3F/0E, 2A/09 to initiators).
    Lun {
        #[command(subcommand)]
        op: LunOp,
    },
    /// Add or remove a target of the running bus.
    Target {
        #[command(subcommand)]
        op: TargetOp,
    },
    /// Change a target's allowed_initiators (new logins obey it at once).
    Acl {
        #[command(subcommand)]
        op: AclOp,
    },
    /// Set or clear a target's CHAP credentials for new logins.
    Chap {
        #[command(subcommand)]
        op: ChapOp,
    },
    /// Write the running configuration to FILE as the TOML `busrig target --config` reads.
    Save {
        /// Where to write it (mode 0600: it holds the CHAP secrets).
        file: std::path::PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum LunOp {
    /// Open a backing file (created sparse when missing) as a new LUN.
    Add {
        /// The LUN number (0..=16383).
        lun: u64,
        /// Capacity: bytes or with a unit (64MiB, 1GiB).
        #[arg(long)]
        size: String,
        /// Backing file, relative to the target's data directory or absolute
        /// (default: named after the target and LUN).
        #[arg(long)]
        path: Option<String>,
        /// Logical block size: 512 or 4096.
        #[arg(long)]
        block_size: Option<u32>,
        /// Physical block size (4096 on 512-byte blocks is 512e).
        #[arg(long)]
        physical_block_size: Option<u32>,
        /// Refuse writes.
        #[arg(long)]
        read_only: bool,
        /// A removable medium (never for cluster disks).
        #[arg(long)]
        removable: bool,
        /// Unit serial number (VPD page 80h).
        #[arg(long)]
        serial: Option<String>,
        /// page-cache or volatile.
        #[arg(long)]
        write_cache: Option<String>,
        /// An existing file of another length: refuse, grow or any.
        #[arg(long)]
        resize: Option<String>,
        /// A named back-end model: hdd-7200, hdd-10k, hdd-15k, ssd.
        #[arg(long)]
        disk_model: Option<String>,
        /// The target's name (needed when the bus has more than one target).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Take a LUN away; refused while it is reserved or busy unless --force.
    Remove {
        #[command(flatten)]
        lun: LunArg,
        /// Drop its reservation and abort its commands.
        #[arg(long)]
        force: bool,
    },
    /// Change a LUN's capacity; shrinking needs --force (the data past the end is lost).
    Resize {
        #[command(flatten)]
        lun: LunArg,
        /// The new capacity: bytes or with a unit.
        size: String,
        /// Allow shrinking.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand)]
enum TargetOp {
    /// A new target with its LUNs.
    Add {
        /// iSCSI name of the target.
        name: String,
        /// A LUN as ID:SIZE or ID:SIZE:PATH (repeat for more).
        #[arg(long = "lun", value_name = "ID:SIZE[:PATH]", required = true)]
        luns: Vec<String>,
        /// The bus it joins (needed when there are several).
        #[arg(long)]
        bus: Option<String>,
        /// Target portal group tag (default 1).
        #[arg(long)]
        tpgt: Option<u16>,
        /// An initiator allowed to log in (repeat; none: everyone).
        #[arg(long = "allow", value_name = "INITIATOR")]
        allow: Vec<String>,
    },
    /// Remove a target; refused while it has sessions unless --force.
    Remove {
        /// iSCSI name of the target.
        name: String,
        /// End its sessions.
        #[arg(long)]
        force: bool,
    },
}

/// An ACL entry of a target.
#[derive(clap::Args)]
struct AclArg {
    /// iSCSI initiator name, or a node name (NODE1) with --lab.
    initiator: String,
    /// The target's name (needed when the bus has more than one target).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Keep the sessions of initiators the ACL no longer admits (tgt's way);
    /// by default they end (LIO's way).
    #[arg(long)]
    keep_sessions: bool,
}

#[derive(clap::Subcommand)]
enum AclOp {
    /// Admit INITIATOR (an empty ACL admits everyone; after this only those listed).
    Add(AclArg),
    /// No longer admit INITIATOR.
    Remove(AclArg),
}

#[derive(clap::Subcommand)]
enum ChapOp {
    /// Require CHAP: the initiator's name and secret (BUSRIG_CHAP_SECRET), and
    /// for mutual CHAP the target's (BUSRIG_CHAP_MUTUAL_SECRET).
    Set {
        /// The name the initiator gives (CHAP_N).
        #[arg(long)]
        user: String,
        /// The target's own name for mutual CHAP.
        #[arg(long)]
        mutual_user: Option<String>,
        /// The target's name (needed when the bus has more than one target).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Log in without CHAP from now on.
    Clear {
        /// The target's name (needed when the bus has more than one target).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
}

/// A secret from the environment (never the command line, which `ps` shows).
fn secret_from_env(var: &str) -> anyhow::Result<String> {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("set the secret in {var}"))
}

/// `--lun ID:SIZE[:PATH]` as a `[[target.lun]]` table.
fn lun_table(spec: &str) -> anyhow::Result<serde_json::Value> {
    let mut parts = spec.splitn(3, ':');
    let (Some(id), Some(size)) = (parts.next(), parts.next()) else {
        anyhow::bail!("--lun {spec:?}: want ID:SIZE or ID:SIZE:PATH");
    };
    let id: u64 = id
        .parse()
        .with_context(|| format!("--lun {spec:?}: the LUN id is not a number"))?;
    let mut t = serde_json::json!({ "id": id, "size": size });
    if let Some(path) = parts.next() {
        t["path"] = serde_json::json!(path);
    }
    Ok(t)
}

/// Writes `text` to `file` with mode 0600, replacing it only once all of
/// it is written.
fn write_private(file: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))
}

pub async fn run(args: BusArgs) -> anyhow::Result<ExitCode> {
    // With a lab: its control address, and node names as initiators.
    let (control, cluster) = match &args.lab {
        Some(dir) => (
            busrig_lab::bus_control(dir)?,
            Some(busrig_lab::lab_config(dir)?),
        ),
        None => (args.control.clone(), None),
    };
    // BUSRIG_CONTROL_TOKEN, else the lab's bus token (derived from its
    // cluster file; docs/security.md).
    let token = crate::control_token().or_else(|| cluster.as_ref().map(busrig_lab::bus_token));
    let c = &ControlClient::new(control, token);
    let path = |initiator: &str, action: PathAction| {
        // With a lab, a name that is neither one of its nodes nor an iSCSI
        // name is a typo (NODE9): refused before anything changes.
        let initiator = match cluster.as_ref() {
            Some(cfg) => cfg.initiator_for(initiator),
            None => Ok(initiator.to_string()),
        };
        async move {
            let v = c.path(&initiator?, &action).await?;
            // The control plane accepts a fault for an initiator it has not
            // seen (it may log in later) and says so (docs/faults.md).
            if let Some(w) = v.get("warning").and_then(|w| w.as_str()) {
                eprintln!("busrig bus: warning: {w}");
            }
            anyhow::Ok(v)
        }
    };
    let lun = |l: LunArg, action| async move { c.lun(l.lun, l.target.as_deref(), action).await };
    let v = match args.verb {
        Verb::Status { json } => {
            let v = c.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let s: BusStatus =
                    serde_json::from_value(v).context("the control plane's status")?;
                println!("{s}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Verb::Audit { lun, json } => {
            let v = c.audit(lun.lun, lun.target.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let a: Audit = serde_json::from_value(v).context("the control plane's audit")?;
                println!("{a}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Verb::Reset { bus } => c.reset(bus.as_deref()).await?,
        Verb::Freeze(w) => path(&w.initiator, PathAction::Freeze).await?,
        Verb::Thaw(w) => path(&w.initiator, PathAction::Thaw).await?,
        Verb::Delay { who, ms } => path(&who.initiator, PathAction::Delay { ms }).await?,
        Verb::Drop(w) => path(&w.initiator, PathAction::Drop).await?,
        Verb::Cut(w) => path(&w.initiator, PathAction::Cut).await?,
        Verb::Restore(w) => path(&w.initiator, PathAction::Restore).await?,
        Verb::Fail { who, count, sense } => {
            path(&who.initiator, PathAction::Fail { count, sense }).await?
        }
        Verb::Clear(w) => path(&w.initiator, PathAction::Clear).await?,
        Verb::Save { file } => {
            let toml = c.running_config().await?;
            write_private(&file, &toml)?;
            serde_json::json!({ "saved": file })
        }
        Verb::Lun { op } => c.reconfigure(&lun_change(op)?).await?,
        Verb::Target { op } => c.reconfigure(&target_change(op)?).await?,
        Verb::Acl { op } => {
            let (add, a) = match op {
                AclOp::Add(a) => (true, a),
                AclOp::Remove(a) => (false, a),
            };
            let initiator = match cluster.as_ref() {
                Some(cfg) => cfg.initiator_for(&a.initiator)?,
                None => a.initiator,
            };
            let (target, keep_sessions) = (a.target, a.keep_sessions);
            c.reconfigure(&if add {
                Reconfig::AclAdd {
                    target,
                    initiator,
                    keep_sessions,
                }
            } else {
                Reconfig::AclRemove {
                    target,
                    initiator,
                    keep_sessions,
                }
            })
            .await?
        }
        Verb::Chap { op } => c.reconfigure(&chap_change(op)?).await?,
        Verb::Offline(l) => lun(l, LunAction::Offline).await?,
        Verb::Online(l) => lun(l, LunAction::Online).await?,
        Verb::PowerCycle(l) => lun(l, LunAction::PowerCycle).await?,
    };
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}

fn lun_change(op: LunOp) -> anyhow::Result<Reconfig> {
    Ok(match op {
        LunOp::Add {
            lun,
            size,
            path,
            block_size,
            physical_block_size,
            read_only,
            removable,
            serial,
            write_cache,
            resize,
            disk_model,
            target,
        } => {
            let mut table = serde_json::json!({ "id": lun, "size": size });
            let optional = [
                ("path", path.map(serde_json::Value::from)),
                ("block_size", block_size.map(serde_json::Value::from)),
                (
                    "physical_block_size",
                    physical_block_size.map(serde_json::Value::from),
                ),
                ("serial", serial.map(serde_json::Value::from)),
                ("write_cache", write_cache.map(serde_json::Value::from)),
                ("resize", resize.map(serde_json::Value::from)),
                ("disk_model", disk_model.map(serde_json::Value::from)),
                ("read_only", read_only.then_some(true.into())),
                ("removable", removable.then_some(true.into())),
            ];
            for (key, v) in optional {
                if let Some(v) = v {
                    table[key] = v;
                }
            }
            Reconfig::LunAdd { target, table }
        }
        LunOp::Remove { lun, force } => Reconfig::LunRemove {
            target: lun.target,
            lun: lun.lun,
            force,
        },
        LunOp::Resize { lun, size, force } => Reconfig::LunResize {
            target: lun.target,
            lun: lun.lun,
            size,
            force,
        },
    })
}

fn target_change(op: TargetOp) -> anyhow::Result<Reconfig> {
    Ok(match op {
        TargetOp::Add {
            name,
            luns,
            bus,
            tpgt,
            allow,
        } => {
            let mut definition = serde_json::json!({
                "name": name,
                "allowed_initiators": allow,
                "lun": luns.iter().map(|l| lun_table(l)).collect::<anyhow::Result<Vec<_>>>()?,
            });
            if let Some(b) = bus {
                definition["bus"] = b.into();
            }
            if let Some(t) = tpgt {
                definition["tpgt"] = t.into();
            }
            Reconfig::TargetAdd { definition }
        }
        TargetOp::Remove { name, force } => Reconfig::TargetRemove {
            target: name,
            force,
        },
    })
}

fn chap_change(op: ChapOp) -> anyhow::Result<Reconfig> {
    Ok(match op {
        ChapOp::Set {
            user,
            mutual_user,
            target,
        } => Reconfig::ChapSet {
            target,
            user,
            secret: secret_from_env("BUSRIG_CHAP_SECRET")?,
            mutual: match mutual_user {
                Some(u) => Some((u, secret_from_env("BUSRIG_CHAP_MUTUAL_SECRET")?)),
                None => None,
            },
        },
        ChapOp::Clear { target } => Reconfig::ChapClear { target },
    })
}
