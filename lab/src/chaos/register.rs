//! The register workload: clients that write, read and compare-and-set a
//! few keys of the cluster database through different nodes' admin
//! endpoints (`GET /db`, `POST /db`), recording each operation's
//! invocation and completion times and result for the linearizability
//! checker. An operation without an answer within [`OP_TIMEOUT`] is
//! indeterminate; a read is only taken from a node that says it is a
//! member (a client that reads from a stopped or joining node knows it
//! reads an old copy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrig_cluster::admin::{self, AdminError};
use busrig_cluster::config::ClusterConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::check::linear::{Operation, Outcome, RegOp};
use busrig_lograte::text::now_ms;

/// The keys the clients use, under `chaos/` in the cluster database.
pub const KEYS: [&str; 3] = ["chaos/r0", "chaos/r1", "chaos/r2"];
/// How long a client waits for an answer before it counts the operation
/// as indeterminate and moves on.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause between a client's operations.
const THINK: Duration = Duration::from_millis(40);

/// The recorded history, shared by the clients.
#[derive(Debug, Default, Clone)]
pub struct History(Arc<Mutex<Vec<Operation>>>);

impl History {
    fn push(&self, op: Operation) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Vec<Operation> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs `clients` clients until `stop` is set, each starting at a
/// different node and moving to the next after every operation.
pub async fn run(
    cfg: Arc<ClusterConfig>,
    clients: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    h: History,
) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (cfg, stop, h) = (cfg.clone(), stop.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            client(&cfg, c, seed, &stop, &h).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn client(cfg: &ClusterConfig, me: usize, seed: u64, stop: &AtomicBool, h: &History) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(me as u64 + 1)));
    let mut last_seen: [Option<String>; KEYS.len()] = Default::default();
    let mut n = 0u64;
    let mut node = me % cfg.nodes.len();
    while !stop.load(Ordering::Relaxed) {
        let k = rng.gen_range(0..KEYS.len());
        let key = KEYS[k];
        let addr = cfg.nodes[node].admin.to_string();
        let name = cfg.nodes[node].name.clone();
        node = (node + 1) % cfg.nodes.len();
        n += 1;
        let value = format!("c{me}-{n}");
        let roll: f64 = rng.gen();
        let op = if roll < 0.4 {
            None
        } else if roll < 0.7 {
            Some(RegOp::Write { value })
        } else {
            Some(RegOp::Cas {
                expect: last_seen[k].clone(),
                value,
            })
        };
        let record = |op: RegOp, outcome, invoke_ms, complete_ms| Operation {
            client: me,
            node: name.clone(),
            key: key.to_string(),
            op,
            outcome,
            invoke_ms,
            complete_ms,
        };
        match op {
            None => {
                // A read: from a member only, through its copy.
                let invoke = now_ms();
                let answer = tokio::time::timeout(OP_TIMEOUT, async {
                    let st = admin::status(&addr, Some(&cfg.secret)).await.ok()?;
                    if !st.member {
                        return None;
                    }
                    admin::request(&addr, "GET", "/db", None, Some(&cfg.secret))
                        .await
                        .ok()
                })
                .await;
                if let Ok(Some(v)) = answer {
                    let value = v["entries"][key].as_str().map(String::from);
                    last_seen[k] = value.clone();
                    h.push(record(
                        RegOp::Read { value },
                        Outcome::Ok,
                        invoke,
                        Some(now_ms()),
                    ));
                }
            }
            Some(op) => {
                let body = match &op {
                    RegOp::Write { value } => json!({"op": "put", "key": key, "value": value}),
                    RegOp::Cas { expect, value } => {
                        json!({"op": "cas", "key": key, "expect": expect, "value": value})
                    }
                    RegOp::Read { .. } => unreachable!("reads are handled above"),
                };
                let invoke = now_ms();
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    admin::request(&addr, "POST", "/db", Some(&body), Some(&cfg.secret)),
                )
                .await;
                let done = now_ms();
                let outcome = match r {
                    Ok(Ok(_)) => Outcome::Ok,
                    Ok(Err(AdminError::Refused {
                        status: 409,
                        message,
                        ..
                    })) if message.starts_with("compare-and-set failed") => Outcome::Fail,
                    // Refused for another reason, unreachable, timed out:
                    // it may still be ordered and applied.
                    _ => Outcome::Unknown,
                };
                if outcome == Outcome::Ok {
                    if let RegOp::Write { value } | RegOp::Cas { value, .. } = &op {
                        last_seen[k] = Some(value.clone());
                    }
                }
                let complete = (outcome != Outcome::Unknown).then_some(done);
                h.push(record(op, outcome, invoke, complete));
            }
        }
        tokio::time::sleep(THINK).await;
    }
}
