//! `busrig bus`: the control plane's client (`busrig_target::control::client`
//! and `::report`). Watches a running `busrig target` and injects faults.

use std::process::ExitCode;

use anyhow::Context;
use busrig_target::control::client::{ControlClient, LunAction, PathAction};
use busrig_target::control::report::{Audit, BusStatus};
use busrig_target::control::DEFAULT_CONTROL_ADDR;

#[derive(clap::Args)]
pub struct BusArgs {
    /// Control address of the target (its `--control`).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL_ADDR, global = true)]
    control: String,
    /// A lab folder (`busrig lab up`): its bus's control address, and node
    /// names (NODE1, ...) accepted wherever an initiator name is.
    #[arg(long, value_name = "DIR", global = true)]
    lab: Option<std::path::PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

/// A LUN, of `--target` when the bus has more than one.
#[derive(clap::Args)]
struct LunArg {
    lun: u64,
    #[arg(long)]
    target: Option<String>,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Buses, targets, LUNs with their reservations, sessions and faults.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Bus reset: SCSI-2 reservations cleared, 29/02 on every nexus.
    Reset {
        /// Bus name (optional when the target has one bus).
        bus: Option<String>,
    },
    /// Hold the initiator's commands unanswered until `thaw`.
    Freeze { initiator: String },
    /// Release the commands a `freeze` held.
    Thaw { initiator: String },
    /// Delay each of the initiator's commands by MS milliseconds (0 clears).
    Delay { initiator: String, ms: u64 },
    /// Close the initiator's connections now (it may log in again).
    Drop { initiator: String },
    /// Close the initiator's connections and refuse its logins until `restore`.
    Cut { initiator: String },
    /// Undo `cut`.
    Restore { initiator: String },
    /// Fail the initiator's next N media commands with SENSE (KEY/ASC/ASCQ in hex, e.g. 3/11/00).
    Fail {
        initiator: String,
        count: u32,
        sense: String,
    },
    /// Clear every path fault of the initiator.
    Clear { initiator: String },
    /// Take a LUN offline (NOT READY).
    Offline(LunArg),
    /// Bring a LUN back online.
    Online(LunArg),
    /// Power-cycle a LUN: unflushed writes in a volatile write cache are lost, then 29/01.
    PowerCycle(LunArg),
    /// The LUN's writer history: each change of the I_T nexus writing to it.
    Audit {
        lun: u64,
        #[arg(long)]
        target: Option<String>,
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
        Verb::Audit { lun, target, json } => {
            let v = c.audit(lun, target.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let a: Audit = serde_json::from_value(v).context("the control plane's audit")?;
                println!("{a}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Verb::Reset { bus } => c.reset(bus.as_deref()).await?,
        Verb::Freeze { initiator } => path(&initiator, PathAction::Freeze).await?,
        Verb::Thaw { initiator } => path(&initiator, PathAction::Thaw).await?,
        Verb::Delay { initiator, ms } => path(&initiator, PathAction::Delay { ms }).await?,
        Verb::Drop { initiator } => path(&initiator, PathAction::Drop).await?,
        Verb::Cut { initiator } => path(&initiator, PathAction::Cut).await?,
        Verb::Restore { initiator } => path(&initiator, PathAction::Restore).await?,
        Verb::Fail {
            initiator,
            count,
            sense,
        } => path(&initiator, PathAction::Fail { count, sense }).await?,
        Verb::Clear { initiator } => path(&initiator, PathAction::Clear).await?,
        Verb::Offline(l) => lun(l, LunAction::Offline).await?,
        Verb::Online(l) => lun(l, LunAction::Online).await?,
        Verb::PowerCycle(l) => lun(l, LunAction::PowerCycle).await?,
    };
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}
