//! The control plane: watch the bus and break it on purpose.
//!
//! Served over HTTP/1.1 with JSON bodies (the `busrig-http` transport: an
//! axum [`Router`] behind its access rule and limits) on a loopback address
//! by default; `busrig bus` is its client and `curl` works too. Endpoints:
//!
//! | method and path | body | what |
//! |---|---|---|
//! | `GET /status` | | buses (with the bandwidth model's counters), targets, LUNs (SCSI-2 holder, PR reservation, registrations, PRgeneration, pending unit attentions, disk model counters), sessions, faults |
//! | `POST /reset` | `{"bus": NAME}` | a bus reset (on `fc-fabric`, a reset of every target on that fabric) |
//! | `POST /path` | `{"initiator": NAME, "action": A, ...}` | path faults: `freeze`, `thaw`, `delay` (`ms`), `drop`, `cut`, `restore`, `fail` (`count`, `sense` as `KEY/ASC/ASCQ`), `clear` |
//! | `POST /lun` | `{"target": NAME?, "lun": N, "action": A}` | LUN faults: `offline`, `online`, `power-cycle` |
//! | `GET /audit?target=NAME&lun=N` | | the LUN's writer history |
//! | `POST /config/lun` | `{"action": "add", "target": NAME?, "lun": {TABLE}}` | adds a LUN: `TABLE` holds the keys of a `[[target.lun]]` (`id`, `size`, `path`, ...) |
//! | `POST /config/lun` | `{"action": "remove", "target": NAME?, "lun": N, "force": B?}` | removes a LUN; refused while it is reserved or has commands in flight unless `force` |
//! | `POST /config/lun` | `{"action": "resize", "target": NAME?, "lun": N, "size": SIZE, "force": B?}` | sets a LUN's capacity (2A/09); shrinking needs `force` |
//! | `POST /config/target` | `{"action": "add", "definition": {TABLE}}` | adds a target: `TABLE` holds the keys of a `[[target]]`, its LUNs under `lun` |
//! | `POST /config/target` | `{"action": "remove", "target": NAME, "force": B?}` | removes a target; refused while it has sessions unless `force`, which ends them |
//! | `POST /config/acl` | `{"action": "add"\|"remove", "target": NAME?, "initiator": NAME, "keep_sessions": B?}` | changes `allowed_initiators`; sessions it no longer admits end unless `keep_sessions` |
//! | `POST /config/chap` | `{"action": "set", "target": NAME?, "user", "secret", "mutual_user"?, "mutual_secret"?}` or `{"action": "clear", ...}` | CHAP for new logins |
//! | `POST /config/save` | `{}` | the running configuration as TOML (`{"toml": ...}`); a `POST` because it holds the CHAP secrets |
//!
//! The `/config/...` changes are described in [`crate::reconfig`] and
//! docs/semantics.md "Live reconfiguration"; each is logged and recorded in
//! the status's `events`.
//!
//! Errors come back as a non-200 status with `{"error": "..."}`.
//!
//! Access (docs/security.md): the `GET`s are open to loopback clients; every
//! `POST` (faults, resets, LUN changes) needs the target's token
//! (`BUSRIG_CONTROL_TOKEN` when `busrig target` starts) as
//! `Authorization: Bearer TOKEN`, from loopback too, and a client off the
//! host needs it for everything. Started without a token, the control plane
//! only reports. Its connections are capped apart from the iSCSI portal's
//! ([`CONTROL_LIMITS`]).

pub mod client;
pub mod report;

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::Router;
use busrig_http::{HttpResponse, JsonBody, Limits, Query, DEFAULT_LIMITS};
use serde_json::{json, Value};

use crate::config::{ChapConfig, LunConfig, SizeValue, TargetConfig};
use crate::fault::{parse_sense, Faults};
use crate::iscsi::Portal;
use crate::lu::{now_ms, LogicalUnit};
use crate::reconfig::{self, AclChange, ReconfigError};
use crate::reservation::ReservationView;

/// Default control address, next to the default portal (3260).
pub const DEFAULT_CONTROL_ADDR: &str = "127.0.0.1:3261";

/// The limits the control plane is served with by default: its own cap on
/// connections, so clients of the control plane cannot take the file
/// descriptors the iSCSI portal needs, and a bound on each request's time.
pub const CONTROL_LIMITS: Limits = Limits {
    max_connections: 64,
    ..DEFAULT_LIMITS
};

/// The control plane's view of one running bus emulator.
#[derive(Clone)]
pub struct Control {
    portal: Arc<Portal>,
}

fn nexus_json(initiator: &str, isid: &str) -> Value {
    json!({ "initiator": initiator, "isid": isid })
}

/// Whether LU `lu` remembers an I_T nexus of initiator `ini`: one it
/// keeps unit attentions for, the SCSI-2 holder, or a PR registrant.
fn lu_knows(lu: &LogicalUnit, ini: &str) -> bool {
    let is = |name: &str| name.eq_ignore_ascii_case(ini);
    if lu.known_nexuses().iter().any(|n| is(&n.initiator)) {
        return true;
    }
    let r = lu.reservations.lock().unwrap_or_else(|p| p.into_inner());
    r.scsi2_holder().is_some_and(|n| is(&n.initiator))
        || r.pr_snapshot()
            .registrations
            .iter()
            .any(|g| is(&g.nexus.initiator))
}

fn lun_json(target: &str, lu: &LogicalUnit, portal: &Portal) -> Value {
    let (holder, pr) = {
        let r = lu.reservations.lock().unwrap_or_else(|p| p.into_inner());
        (r.scsi2_holder().cloned(), r.pr_snapshot())
    };
    let reservation = pr
        .reservation
        .as_ref()
        .map(|ReservationView { holder, pr_type }| {
            json!({
                "initiator": holder.as_ref().map(|n| n.initiator.to_string()),
                "isid": holder.as_ref().map(|n| n.isid_hex()),
                "type": pr_type.short_name(),
                "type_name": pr_type.name(),
                "type_code": pr_type.code(),
                "all_registrants": holder.is_none(),
            })
        });
    let registrations: Vec<Value> = pr
        .registrations
        .iter()
        .map(|r| json!({ "key": format!("0x{:016x}", r.key), "initiator": &*r.nexus.initiator, "isid": r.nexus.isid_hex() }))
        .collect();
    let unit_attentions: Vec<Value> = lu
        .known_nexuses()
        .iter()
        .filter_map(|n| {
            let pending = lu.pending_unit_attentions(n);
            (!pending.is_empty()).then(|| {
                json!({
                    "initiator": &*n.initiator,
                    "isid": n.isid_hex(),
                    "pending": pending.iter().map(|a| format!("{:02x}/{:02x} {}", a.asc, a.ascq, a.name)).collect::<Vec<_>>(),
                })
            })
        })
        .collect();
    let spec = lu.spec();
    json!({
        "target": target,
        "lun": lu.lun(),
        "path": spec.path,
        "size_bytes": lu.size_bytes(),
        "block_size": spec.block_size,
        "read_only": spec.read_only,
        "offline": portal.faults().is_lun_offline(target, lu.lun()),
        "scsi2_holder": holder.map(|n| nexus_json(&n.initiator, &n.isid_hex())),
        "pr_reservation": reservation,
        "pr_generation": pr.generation,
        "aptpl": pr.aptpl,
        "registrations": registrations,
        "unit_attentions": unit_attentions,
        "write_cache": lu.write_cache_status(),
        "disk_model": lu.model_status(),
    })
}

/// `POST /config/...`: the reconfiguration the path names.
async fn config_call(State(c): State<Control>, uri: Uri, JsonBody(body): JsonBody) -> HttpResponse {
    let r = match uri.path() {
        "/config/lun" => c.config_lun(&body).await,
        "/config/target" => c.config_target(&body).await,
        "/config/acl" => c.config_acl(&body).await,
        "/config/chap" => c.config_chap(&body).await,
        "/config/save" => c.config_save().await,
        other => Err(HttpResponse::error(404, format!("no endpoint {other}"))),
    };
    r.map_or_else(|e| e, HttpResponse::ok)
}

/// A refused reconfiguration as an HTTP error.
fn refused(e: ReconfigError) -> HttpResponse {
    HttpResponse::error(e.http_status(), busrig_lograte::text::error_chain(&e))
}

/// The request's `action`, one of `allowed`.
fn action<'a>(body: &Value, allowed: &[&'a str]) -> Result<&'a str, HttpResponse> {
    let got = body.get("action").and_then(Value::as_str).unwrap_or("");
    allowed.iter().copied().find(|a| *a == got).ok_or_else(|| {
        HttpResponse::error(
            400,
            format!("unknown action {got:?}: {}", allowed.join(", ")),
        )
    })
}

/// Required field `key` of the body, `what` saying what it should be.
fn field<T: serde::de::DeserializeOwned>(
    body: &Value,
    key: &str,
    what: &str,
) -> Result<T, HttpResponse> {
    let v = body
        .get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| HttpResponse::error(400, format!("missing \"{key}\" ({what})")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| HttpResponse::error(400, format!("\"{key}\" must be {what}: {e}")))
}

/// Optional string field `key`.
fn opt_str<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, HttpResponse> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HttpResponse::error(
            400,
            format!("\"{key}\" must be a string"),
        )),
    }
}

/// Optional boolean field `key` (false when absent).
fn flag(body: &Value, key: &str) -> Result<bool, HttpResponse> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(HttpResponse::error(
            400,
            format!("\"{key}\" must be true or false"),
        )),
    }
}

impl Control {
    pub fn new(portal: Arc<Portal>) -> Control {
        Control { portal }
    }

    fn faults(&self) -> &Faults {
        self.portal.faults()
    }

    /// The whole status report (`GET /status`). Scripts rely on the keys
    /// `luns[].{target, lun, scsi2_holder, pr_reservation, registrations}`
    /// and `sessions[].{initiator, isid}`.
    pub fn status(&self) -> Value {
        let p = &self.portal;
        let buses: Vec<Value> = p
            .buses()
            .iter()
            .enumerate()
            .map(|(i, b)| {
                // Every target of the bus shares the bus's one link.
                let link = p
                    .targets()
                    .iter()
                    .find(|t| t.def.bus == i)
                    .and_then(|t| t.scsi.link().map(|l| l.status()));
                json!({
                    "name": b.name,
                    "topology": b.topology.to_string(),
                    "max_initiators": b.max_initiators,
                    "bandwidth": link,
                    "targets": p.targets().iter().filter(|t| t.def.bus == i).map(|t| t.def.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let targets: Vec<Value> = p
            .targets()
            .iter()
            .map(|t| json!({ "name": t.def.name, "bus": p.buses()[t.def.bus].name, "tpgt": t.def.tpgt, "luns": t.scsi.lun_ids() }))
            .collect();
        let luns: Vec<Value> = p
            .targets()
            .iter()
            .flat_map(|t| t.scsi.luns().into_iter().map(move |lu| (t.clone(), lu)))
            .map(|(t, lu)| lun_json(&t.def.name, &lu, p))
            .collect();
        let sessions: Vec<Value> = p
            .sessions()
            .into_iter()
            .map(|s| {
                let in_flight = p.tasks().count(|t| {
                    *t.nexus.initiator == *s.initiator
                        && t.nexus.isid_hex() == s.isid
                        && s.target.as_deref().is_some_and(|n| *t.nexus.target == *n)
                });
                json!({
                    "tsih": s.tsih,
                    "initiator": s.initiator,
                    "isid": s.isid,
                    "target": s.target,
                    "peer": s.peer,
                    "commands_in_flight": in_flight,
                })
            })
            .collect();
        let f = self.faults();
        json!({
            "buses": buses,
            "targets": targets,
            "luns": luns,
            "sessions": sessions,
            "faults": {
                "paths": f.paths(),
                "offline_luns": f.offline_luns().into_iter().map(|(t, l)| json!({"target": t, "lun": l})).collect::<Vec<_>>(),
            },
            "events": f.events(),
            // The server's clock, so a client shows event times as "ago"
            // against the clock that stamped them.
            "now_ms": now_ms(),
        })
    }

    fn find_lun(
        &self,
        target: Option<&str>,
        lun: u64,
    ) -> Result<(String, Arc<LogicalUnit>), HttpResponse> {
        let targets = self.portal.targets();
        let t = match target {
            Some(name) => targets
                .iter()
                .find(|t| t.def.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| HttpResponse::error(404, format!("no target named {name}")))?,
            None if targets.len() == 1 => &targets[0],
            None => {
                return Err(HttpResponse::error(
                    400,
                    "several targets: say which one with \"target\"",
                ))
            }
        };
        let lu = t.scsi.lun(lun).ok_or_else(|| {
            HttpResponse::error(404, format!("target {} has no LUN {lun}", t.def.name))
        })?;
        Ok((t.def.name.clone(), lu))
    }

    async fn reset(&self, body: &Value) -> HttpResponse {
        let buses = self.portal.buses();
        let name = match body.get("bus").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None if buses.len() == 1 => buses[0].name.clone(),
            None => return HttpResponse::error(400, "several buses: say which one with \"bus\""),
        };
        let Some(idx) = buses.iter().position(|b| b.name == name) else {
            return HttpResponse::error(404, format!("no bus named {name}"));
        };
        let reached = self.portal.reset_bus(idx).await;
        HttpResponse::ok(json!({ "bus": name, "targets_reset": reached }))
    }

    fn path_fault(&self, body: &Value) -> HttpResponse {
        let Some(ini) = body.get("initiator").and_then(Value::as_str) else {
            return HttpResponse::error(400, "missing \"initiator\"");
        };
        let ini = ini.to_ascii_lowercase();
        let f = self.faults();
        match body.get("action").and_then(Value::as_str).unwrap_or("") {
            "freeze" => f.freeze(&ini),
            "thaw" => f.thaw(&ini),
            "delay" => match body.get("ms").and_then(Value::as_u64) {
                Some(ms) => f.delay(&ini, ms),
                None => return HttpResponse::error(400, "delay needs \"ms\" (milliseconds)"),
            },
            "drop" => {
                f.drop_connections(&ini);
                let n = self.portal.kill_sessions_of(&ini);
                return HttpResponse::ok(json!({ "initiator": ini, "sessions_closed": n }));
            }
            "cut" => {
                f.cut(&ini);
                let n = self.portal.kill_sessions_of(&ini);
                return HttpResponse::ok(json!({ "initiator": ini, "sessions_closed": n }));
            }
            "restore" => f.restore(&ini),
            "fail" => {
                let Some(count) = body.get("count").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok()) else {
                    return HttpResponse::error(400, "fail needs \"count\"");
                };
                let sense = match body.get("sense").and_then(Value::as_str).map(parse_sense) {
                    Some(Ok(s)) => s,
                    Some(Err(e)) => return HttpResponse::error(400, e),
                    None => return HttpResponse::error(400, "fail needs \"sense\" as KEY/ASC/ASCQ, for example 3/11/00"),
                };
                f.fail(&ini, count, sense)
            }
            "clear" => f.clear(&ini),
            other => {
                return HttpResponse::error(
                    400,
                    format!("unknown path action {other:?}: freeze, thaw, delay, drop, cut, restore, fail, clear"),
                )
            }
        }
        HttpResponse::ok(json!({ "initiator": ini, "faults": f.paths().get(&ini) }))
    }

    /// Whether the bus knows initiator `ini` (lowercase): it has a session,
    /// an I_T nexus some LU remembers (a PR registration, a reservation or
    /// a unit attention outlives the session), a place in a target's
    /// `allowed_initiators`, or a path fault already.
    fn knows_initiator(&self, ini: &str) -> bool {
        let p = &self.portal;
        p.sessions()
            .iter()
            .any(|s| s.initiator.eq_ignore_ascii_case(ini))
            || p.targets().iter().any(|t| {
                t.def
                    .allowed_initiators
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(ini))
                    || t.scsi.luns().iter().any(|lu| lu_knows(lu, ini))
            })
            || self.faults().paths().contains_key(ini)
    }

    /// `POST /path`: the fault, and a `warning` when the initiator is one
    /// the bus does not know. A fault for an initiator that has yet to log
    /// in is legitimate (cut a node before it starts), so it is set all
    /// the same; but a misspelt name would otherwise look like a fault
    /// that did nothing.
    fn path_fault_checked(&self, body: &Value) -> HttpResponse {
        let unknown = body
            .get("initiator")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|ini| !self.knows_initiator(ini));
        let mut r = self.path_fault(body);
        let ok = r.status == 200;
        if let (Some(ini), Some(obj), true) = (unknown, r.body.as_object_mut(), ok) {
            obj.insert(
                "warning".into(),
                json!(format!(
                    "{ini} matches no logged-in or configured initiator; the fault waits for it to log in"
                )),
            );
        }
        r
    }

    async fn lun_fault(&self, body: &Value) -> HttpResponse {
        let Some(lun) = body.get("lun").and_then(Value::as_u64) else {
            return HttpResponse::error(400, "missing \"lun\"");
        };
        let (target, lu) = match self.find_lun(body.get("target").and_then(Value::as_str), lun) {
            Ok(x) => x,
            Err(e) => return e,
        };
        match body.get("action").and_then(Value::as_str).unwrap_or("") {
            "offline" => self.faults().set_lun_offline(&target, lun, true),
            "online" => self.faults().set_lun_offline(&target, lun, false),
            "power-cycle" => {
                let Some(scsi) = self
                    .portal
                    .targets()
                    .iter()
                    .find(|t| t.def.name == target)
                    .map(|t| t.scsi.clone())
                else {
                    return HttpResponse::error(404, format!("no target named {target}"));
                };
                let discarded = match scsi.power_cycle(lun).await {
                    Ok(n) => n,
                    Err(e) => return HttpResponse::error(404, e.to_string()),
                };
                drop(lu);
                self.faults().record(format!(
                    "power-cycle lun {lun} of {target}: {discarded} unflushed write(s) discarded"
                ));
                return HttpResponse::ok(
                    json!({ "target": target, "lun": lun, "discarded_writes": discarded }),
                );
            }
            other => {
                return HttpResponse::error(
                    400,
                    format!("unknown lun action {other:?}: offline, online, power-cycle"),
                )
            }
        }
        HttpResponse::ok(
            json!({ "target": target, "lun": lun, "offline": self.faults().is_lun_offline(&target, lun) }),
        )
    }

    fn audit(&self, query: &Query) -> HttpResponse {
        let Some(lun) = query.get("lun").and_then(|l| l.parse().ok()) else {
            return HttpResponse::error(400, "audit needs ?lun=N");
        };
        match self.find_lun(query.get("target"), lun) {
            Ok((target, lu)) => HttpResponse::ok(
                json!({ "target": target, "lun": lun, "history": lu.audit(), "now_ms": now_ms() }),
            ),
            Err(e) => e,
        }
    }

    /// `POST /config/lun`.
    async fn config_lun(&self, body: &Value) -> Result<Value, HttpResponse> {
        let p = &self.portal;
        let target = opt_str(body, "target")?;
        let force = flag(body, "force")?;
        match action(body, &["add", "remove", "resize"])? {
            "add" => {
                let table: LunConfig = field(body, "lun", "a [[target.lun]] table")?;
                let (target, def) = reconfig::add_lun(p, target, &table)
                    .await
                    .map_err(refused)?;
                Ok(
                    json!({ "target": target, "lun": def.id, "path": def.path, "size_bytes": def.size_bytes }),
                )
            }
            "remove" => {
                let lun: u64 = field(body, "lun", "a LUN number")?;
                let r = reconfig::remove_lun(p, target, lun, force)
                    .await
                    .map_err(refused)?;
                Ok(json!(r))
            }
            _ => {
                let lun: u64 = field(body, "lun", "a LUN number")?;
                let size: SizeValue = field(body, "size", "bytes or a size like \"2GiB\"")?;
                let (target, from, to) = reconfig::resize_lun(p, target, lun, &size, force)
                    .await
                    .map_err(refused)?;
                Ok(json!({ "target": target, "lun": lun, "from_bytes": from, "size_bytes": to }))
            }
        }
    }

    /// `POST /config/target`.
    async fn config_target(&self, body: &Value) -> Result<Value, HttpResponse> {
        let p = &self.portal;
        match action(body, &["add", "remove"])? {
            "add" => {
                let table: TargetConfig = field(body, "definition", "a [[target]] table")?;
                let def = reconfig::add_target(p, &table).await.map_err(refused)?;
                Ok(
                    json!({ "target": def.name, "tpgt": def.tpgt, "luns": def.luns.iter().map(|l| l.id).collect::<Vec<_>>() }),
                )
            }
            _ => {
                let name: String = field(body, "target", "a target name")?;
                let ended = reconfig::remove_target(p, &name, flag(body, "force")?)
                    .await
                    .map_err(refused)?;
                Ok(json!({ "target": name, "sessions_ended": ended }))
            }
        }
    }

    /// `POST /config/acl`.
    async fn config_acl(&self, body: &Value) -> Result<Value, HttpResponse> {
        let change = match action(body, &["add", "remove"])? {
            "add" => AclChange::Add,
            _ => AclChange::Remove,
        };
        let initiator: String = field(body, "initiator", "an iSCSI initiator name")?;
        let r = reconfig::change_acl(
            &self.portal,
            opt_str(body, "target")?,
            &initiator,
            change,
            flag(body, "keep_sessions")?,
        )
        .await
        .map_err(refused)?;
        Ok(json!(r))
    }

    /// `POST /config/chap`.
    async fn config_chap(&self, body: &Value) -> Result<Value, HttpResponse> {
        let target = opt_str(body, "target")?;
        let chap = match action(body, &["set", "clear"])? {
            "set" => {
                let mut keys = body.clone();
                if let Some(o) = keys.as_object_mut() {
                    o.remove("action");
                    o.remove("target");
                }
                Some(
                    serde_json::from_value::<ChapConfig>(keys)
                        .map_err(|e| HttpResponse::error(400, format!("chap set: {e}")))?,
                )
            }
            _ => None,
        };
        let name = reconfig::set_chap(&self.portal, target, chap.as_ref())
            .await
            .map_err(refused)?;
        Ok(
            json!({ "target": name, "chap": chap.is_some(), "mutual": chap.is_some_and(|c| c.mutual_user.is_some()) }),
        )
    }

    /// `POST /config/save`.
    async fn config_save(&self) -> Result<Value, HttpResponse> {
        let toml = reconfig::running_config(&self.portal)
            .await
            .to_config()
            .to_toml()
            .map_err(|e| HttpResponse::error(500, e.to_string()))?;
        Ok(json!({ "toml": toml }))
    }

    /// The endpoints, to be served by [`busrig_http::Server`].
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/status",
                get(|State(c): State<Control>| async move { HttpResponse::ok(c.status()) }),
            )
            .route(
                "/reset",
                post(
                    |State(c): State<Control>, JsonBody(body): JsonBody| async move {
                        c.reset(&body).await
                    },
                ),
            )
            .route(
                "/path",
                post(
                    |State(c): State<Control>, JsonBody(body): JsonBody| async move {
                        c.path_fault_checked(&body)
                    },
                ),
            )
            .route(
                "/lun",
                post(
                    |State(c): State<Control>, JsonBody(body): JsonBody| async move {
                        c.lun_fault(&body).await
                    },
                ),
            )
            .route("/config/lun", post(config_call))
            .route("/config/target", post(config_call))
            .route("/config/acl", post(config_call))
            .route("/config/chap", post(config_call))
            .route("/config/save", post(config_call))
            .route(
                "/audit",
                get(|State(c): State<Control>, query: Query| async move { c.audit(&query) }),
            )
            .method_not_allowed_fallback(|| async {
                HttpResponse::error(405, "wrong method for this endpoint")
            })
            .fallback(|uri: Uri| async move {
                HttpResponse::error(404, format!("no endpoint {}", uri.path()))
            })
            .with_state(self)
    }
}
