//! `busrig bus`: the control plane client. Watches a running `busrig target`
//! and injects faults into it.

use std::process::ExitCode;

use anyhow::{bail, Context};
use busrig_http::request;
use busrig_target::control::DEFAULT_CONTROL_ADDR;
use serde_json::{json, Value};

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
    Offline {
        lun: u64,
        #[arg(long)]
        target: Option<String>,
    },
    /// Bring a LUN back online.
    Online {
        lun: u64,
        #[arg(long)]
        target: Option<String>,
    },
    /// Power-cycle a LUN: unflushed writes in a volatile write cache are lost, then 29/01.
    PowerCycle {
        lun: u64,
        #[arg(long)]
        target: Option<String>,
    },
    /// The LUN's writer history: each change of the I_T nexus writing to it.
    Audit {
        lun: u64,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The control plane and the token presented to it: `BUSRIG_CONTROL_TOKEN`,
/// else a lab's bus token (derived from its cluster file).
struct Endpoint {
    addr: String,
    token: Option<String>,
}

async fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let control = endpoint.addr.as_str();
    let token = endpoint.token.as_deref();
    let (code, v) = request(control, method, path, body.as_ref(), token)
        .await
        .with_context(|| {
            format!(
                "control plane at {control} (is `busrig target` running with --control {control}?)"
            )
        })?;
    if code != 200 {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        bail!("control plane refused ({code}): {msg}");
    }
    Ok(v)
}

fn nexus(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        v => format!(
            "{} isid {}",
            v["initiator"].as_str().unwrap_or("(all registrants)"),
            v["isid"].as_str().unwrap_or("-")
        ),
    }
}

fn print_status(v: &Value) {
    for b in v["buses"].as_array().into_iter().flatten() {
        println!(
            "bus {} ({}{})",
            b["name"].as_str().unwrap_or("?"),
            b["topology"].as_str().unwrap_or("?"),
            b["max_initiators"]
                .as_u64()
                .map(|m| format!(", at most {m} initiators"))
                .unwrap_or_default()
        );
        if let Some(bw) = b["bandwidth"].as_object() {
            println!(
                "  bandwidth {} ({} MB/s per {}): {} bytes in {} transfers, {} µs queued",
                bw["name"].as_str().unwrap_or("?"),
                bw["bytes_per_sec"].as_u64().unwrap_or(0) / 1_000_000,
                bw["shared_by"].as_str().unwrap_or("?"),
                bw["counters"]["bytes"],
                bw["counters"]["transfers"],
                bw["counters"]["queued_us"]
            );
        }
    }
    for l in v["luns"].as_array().into_iter().flatten() {
        println!(
            "\n{} lun {}: {} bytes, block {}{}{}",
            l["target"].as_str().unwrap_or("?"),
            l["lun"],
            l["size_bytes"],
            l["block_size"],
            if l["read_only"].as_bool() == Some(true) {
                ", read-only"
            } else {
                ""
            },
            if l["offline"].as_bool() == Some(true) {
                ", OFFLINE"
            } else {
                ""
            },
        );
        println!("  scsi-2 holder:   {}", nexus(&l["scsi2_holder"]));
        if let Some(m) = l["disk_model"].as_object() {
            let c = &m["counters"];
            println!(
                "  disk model:      {}stripe unit {}, {} µs per back-end op, {} spindle(s)",
                m["model"]
                    .as_str()
                    .map(|n| format!("{n}, "))
                    .unwrap_or_default(),
                m["stripe_unit"]
                    .as_u64()
                    .map(|b| format!("{b} bytes"))
                    .unwrap_or_else(|| "none".into()),
                m["service_time_us"],
                m["spindles"],
            );
            println!(
                "  model counters:  {} I/Os, {} back-end ops, {} split I/Os (crossing a stripe unit), {} µs queued",
                c["ios"], c["backend_ops"], c["split_ios"], c["queued_us"]
            );
        }
        match &l["pr_reservation"] {
            Value::Null => println!("  pr reservation:  -"),
            r => println!(
                "  pr reservation:  {} by {}",
                r["type"].as_str().unwrap_or("?"),
                nexus(r)
            ),
        }
        println!(
            "  pr generation:   {}{}",
            l["pr_generation"],
            if l["aptpl"].as_bool() == Some(true) {
                " (APTPL)"
            } else {
                ""
            }
        );
        for r in l["registrations"].as_array().into_iter().flatten() {
            println!(
                "  registered:      key {} {}",
                r["key"].as_str().unwrap_or("?"),
                nexus(r)
            );
        }
        for u in l["unit_attentions"].as_array().into_iter().flatten() {
            let pending: Vec<&str> = u["pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!("  pending UA:      {}: {}", nexus(u), pending.join(", "));
        }
    }
    println!();
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        println!("no sessions");
    }
    for s in sessions {
        println!(
            "session tsih {} {} -> {} from {} ({} in flight)",
            s["tsih"],
            nexus(&s),
            s["target"].as_str().unwrap_or("(discovery)"),
            s["peer"].as_str().unwrap_or("?"),
            s["commands_in_flight"]
        );
    }
    if let Some(paths) = v["faults"]["paths"].as_object() {
        for (ini, f) in paths {
            println!("fault on path of {ini}: {f}");
        }
    }
    for l in v["faults"]["offline_luns"].as_array().into_iter().flatten() {
        println!(
            "fault: lun {} of {} offline",
            l["lun"],
            l["target"].as_str().unwrap_or("?")
        );
    }
}

fn print_audit(v: &Value) {
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        println!("no writes recorded");
    }
    for h in history {
        println!(
            "{}",
            h["summary"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| h.to_string())
        );
    }
}

pub async fn run(args: BusArgs) -> anyhow::Result<ExitCode> {
    // With a lab: its control address, and node names as initiators.
    let (control, cluster) = match &args.lab {
        Some(dir) => {
            let state = busrig_lab::LabState::load(dir)?;
            let cfg = busrig_cluster::cluster_file::load(&busrig_lab::cluster_file(dir))?;
            let control = state
                .target
                .control
                .clone()
                .context("the lab records no bus control address")?;
            (control, Some(cfg))
        }
        None => (args.control.clone(), None),
    };
    let token = std::env::var("BUSRIG_CONTROL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cluster.as_ref().map(busrig_lab::bus_token));
    let c = &Endpoint {
        addr: control,
        token,
    };
    let initiator_of = |name: &str| -> String {
        match cluster
            .as_ref()
            .and_then(|cfg| cfg.node_id(name).map(|id| cfg.initiator_name(id)))
        {
            Some(i) => i,
            None => name.to_string(),
        }
    };
    let path = |initiator: &str, action: &str, extra: Value| {
        let initiator = initiator_of(initiator);
        let mut body = json!({ "initiator": initiator, "action": action });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let lun = |lun: u64, target: &Option<String>, action: &str| json!({ "lun": lun, "target": target, "action": action });
    let v = match &args.verb {
        Verb::Status { json } => {
            let v = call(c, "GET", "/status", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Verb::Audit { lun, target, json } => {
            let mut q = format!("/audit?lun={lun}");
            if let Some(t) = target {
                q.push_str(&format!("&target={}", t.replace(':', "%3A")));
            }
            let v = call(c, "GET", &q, None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_audit(&v);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Verb::Reset { bus } => call(c, "POST", "/reset", Some(json!({ "bus": bus }))).await?,
        Verb::Freeze { initiator } => {
            call(
                c,
                "POST",
                "/path",
                Some(path(initiator, "freeze", json!({}))),
            )
            .await?
        }
        Verb::Thaw { initiator } => {
            call(c, "POST", "/path", Some(path(initiator, "thaw", json!({})))).await?
        }
        Verb::Delay { initiator, ms } => {
            call(
                c,
                "POST",
                "/path",
                Some(path(initiator, "delay", json!({ "ms": ms }))),
            )
            .await?
        }
        Verb::Drop { initiator } => {
            call(c, "POST", "/path", Some(path(initiator, "drop", json!({})))).await?
        }
        Verb::Cut { initiator } => {
            call(c, "POST", "/path", Some(path(initiator, "cut", json!({})))).await?
        }
        Verb::Restore { initiator } => {
            call(
                c,
                "POST",
                "/path",
                Some(path(initiator, "restore", json!({}))),
            )
            .await?
        }
        Verb::Fail {
            initiator,
            count,
            sense,
        } => {
            call(
                c,
                "POST",
                "/path",
                Some(path(
                    initiator,
                    "fail",
                    json!({ "count": count, "sense": sense }),
                )),
            )
            .await?
        }
        Verb::Clear { initiator } => {
            call(
                c,
                "POST",
                "/path",
                Some(path(initiator, "clear", json!({}))),
            )
            .await?
        }
        Verb::Offline { lun: l, target } => {
            call(c, "POST", "/lun", Some(lun(*l, target, "offline"))).await?
        }
        Verb::Online { lun: l, target } => {
            call(c, "POST", "/lun", Some(lun(*l, target, "online"))).await?
        }
        Verb::PowerCycle { lun: l, target } => {
            call(c, "POST", "/lun", Some(lun(*l, target, "power-cycle"))).await?
        }
    };
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}
