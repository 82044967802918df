//! `busrig bus`: the control plane's client (`busrig_target::control::client`
//! and `::report`). Watches a running `busrig target` and injects faults.

use std::process::ExitCode;

use anyhow::Context;
use busrig_target::control::client::{ControlClient, LunAction, PathAction};
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
  busrig bus --lab DIR power-cycle 1";

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
        Verb::Offline(l) => lun(l, LunAction::Offline).await?,
        Verb::Online(l) => lun(l, LunAction::Online).await?,
        Verb::PowerCycle(l) => lun(l, LunAction::PowerCycle).await?,
    };
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}
