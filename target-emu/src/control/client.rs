//! A client of the control plane, as `busrig bus` uses it: one typed call
//! per endpoint of the table in [`crate::control`]. Answers are the
//! endpoints' JSON; [`super::report`] renders `GET /status` and
//! `GET /audit` for people.

use busrig_http::{request, HttpError};
use serde_json::{json, Value};

/// A refused or failed control plane request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No answer: nothing listens there, or the connection failed.
    #[error("control plane at {addr} (is `busrig target` running with --control {addr}?)")]
    Unreachable {
        addr: String,
        #[source]
        source: HttpError,
    },
    /// The control plane answered with an error status.
    #[error("control plane refused ({code}): {message}")]
    Refused { code: u16, message: String },
}

/// A path fault of `POST /path` (docs/semantics.md "Fault injection").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAction {
    Freeze,
    Thaw,
    Delay {
        ms: u64,
    },
    Drop,
    Cut,
    Restore,
    /// Fail the next `count` media commands with `sense` (`KEY/ASC/ASCQ`).
    Fail {
        count: u32,
        sense: String,
    },
    Clear,
}

impl PathAction {
    /// The request body for `initiator`.
    fn body(&self, initiator: &str) -> Value {
        let mut body = json!({ "initiator": initiator });
        let (action, extra) = match self {
            PathAction::Freeze => ("freeze", json!({})),
            PathAction::Thaw => ("thaw", json!({})),
            PathAction::Delay { ms } => ("delay", json!({ "ms": ms })),
            PathAction::Drop => ("drop", json!({})),
            PathAction::Cut => ("cut", json!({})),
            PathAction::Restore => ("restore", json!({})),
            PathAction::Fail { count, sense } => {
                ("fail", json!({ "count": count, "sense": sense }))
            }
            PathAction::Clear => ("clear", json!({})),
        };
        body["action"] = json!(action);
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    }
}

/// A LUN fault of `POST /lun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LunAction {
    Offline,
    Online,
    /// Unflushed writes in a volatile write cache are lost, then 29/01.
    PowerCycle,
}

impl LunAction {
    fn name(self) -> &'static str {
        match self {
            LunAction::Offline => "offline",
            LunAction::Online => "online",
            LunAction::PowerCycle => "power-cycle",
        }
    }
}

/// A live reconfiguration, one of the `/config/...` endpoints
/// (docs/semantics.md "Live reconfiguration").
#[derive(Debug, Clone, PartialEq)]
pub enum Reconfig {
    /// Add a LUN: `table` holds the keys of a `[[target.lun]]`.
    LunAdd {
        target: Option<String>,
        table: Value,
    },
    /// Remove a LUN; `force` even when reserved or busy.
    LunRemove {
        target: Option<String>,
        lun: u64,
        force: bool,
    },
    /// Set a LUN's capacity (`size` in bytes or with a unit); `force` to shrink.
    LunResize {
        target: Option<String>,
        lun: u64,
        size: String,
        force: bool,
    },
    /// Add a target: `definition` holds the keys of a `[[target]]`.
    TargetAdd { definition: Value },
    /// Remove a target; `force` ends its sessions.
    TargetRemove { target: String, force: bool },
    /// Add an initiator to a target's ACL.
    AclAdd {
        target: Option<String>,
        initiator: String,
        keep_sessions: bool,
    },
    /// Remove an initiator from a target's ACL.
    AclRemove {
        target: Option<String>,
        initiator: String,
        keep_sessions: bool,
    },
    /// Set CHAP for new logins; `mutual` is the target's own name and secret.
    ChapSet {
        target: Option<String>,
        user: String,
        secret: String,
        mutual: Option<(String, String)>,
    },
    /// Log in without CHAP from now on.
    ChapClear { target: Option<String> },
}

impl Reconfig {
    /// The endpoint and its request body.
    fn request(&self) -> (&'static str, Value) {
        match self {
            Reconfig::LunAdd { target, table } => (
                "/config/lun",
                json!({ "action": "add", "target": target, "lun": table }),
            ),
            Reconfig::LunRemove { target, lun, force } => (
                "/config/lun",
                json!({ "action": "remove", "target": target, "lun": lun, "force": force }),
            ),
            Reconfig::LunResize {
                target,
                lun,
                size,
                force,
            } => (
                "/config/lun",
                json!({ "action": "resize", "target": target, "lun": lun, "size": size, "force": force }),
            ),
            Reconfig::TargetAdd { definition } => (
                "/config/target",
                json!({ "action": "add", "definition": definition }),
            ),
            Reconfig::TargetRemove { target, force } => (
                "/config/target",
                json!({ "action": "remove", "target": target, "force": force }),
            ),
            Reconfig::AclAdd {
                target,
                initiator,
                keep_sessions,
            } => (
                "/config/acl",
                json!({ "action": "add", "target": target, "initiator": initiator, "keep_sessions": keep_sessions }),
            ),
            Reconfig::AclRemove {
                target,
                initiator,
                keep_sessions,
            } => (
                "/config/acl",
                json!({ "action": "remove", "target": target, "initiator": initiator, "keep_sessions": keep_sessions }),
            ),
            Reconfig::ChapSet {
                target,
                user,
                secret,
                mutual,
            } => {
                let mut body =
                    json!({ "action": "set", "target": target, "user": user, "secret": secret });
                if let Some((u, s)) = mutual {
                    body["mutual_user"] = json!(u);
                    body["mutual_secret"] = json!(s);
                }
                ("/config/chap", body)
            }
            Reconfig::ChapClear { target } => (
                "/config/chap",
                json!({ "action": "clear", "target": target }),
            ),
        }
    }
}

/// The control plane at one address.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addr: String,
    token: Option<String>,
}

impl ControlClient {
    /// `token` is presented as the bearer token (needed off loopback).
    pub fn new(addr: impl Into<String>, token: Option<String>) -> ControlClient {
        ControlClient {
            addr: addr.into(),
            token,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ControlError> {
        let (code, v) = request(
            &self.addr,
            method,
            path,
            body.as_ref(),
            self.token.as_deref(),
        )
        .await
        .map_err(|source| ControlError::Unreachable {
            addr: self.addr.clone(),
            source,
        })?;
        if code != 200 {
            let message = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(ControlError::Refused {
                code,
                message: message.to_string(),
            });
        }
        Ok(v)
    }

    /// `GET /status` ([`super::report::BusStatus`] reads it).
    pub async fn status(&self) -> Result<Value, ControlError> {
        self.call("GET", "/status", None).await
    }

    /// `GET /audit`: the writer history of LUN `lun` (of `target`, when
    /// the bus has more than one).
    pub async fn audit(&self, lun: u64, target: Option<&str>) -> Result<Value, ControlError> {
        let mut q = format!("/audit?lun={lun}");
        if let Some(t) = target {
            q.push_str(&format!("&target={}", t.replace(':', "%3A")));
        }
        self.call("GET", &q, None).await
    }

    /// `POST /reset`: a bus reset (`bus` may be omitted on a one-bus target).
    pub async fn reset(&self, bus: Option<&str>) -> Result<Value, ControlError> {
        self.call("POST", "/reset", Some(json!({ "bus": bus })))
            .await
    }

    /// `POST /path`: sets or clears a fault on `initiator`'s path.
    pub async fn path(&self, initiator: &str, action: &PathAction) -> Result<Value, ControlError> {
        self.call("POST", "/path", Some(action.body(initiator)))
            .await
    }

    /// `POST /lun`: a fault of LUN `lun` (of `target`, when given).
    pub async fn lun(
        &self,
        lun: u64,
        target: Option<&str>,
        action: LunAction,
    ) -> Result<Value, ControlError> {
        let body = json!({ "lun": lun, "target": target, "action": action.name() });
        self.call("POST", "/lun", Some(body)).await
    }

    /// A live reconfiguration (`POST /config/...`).
    pub async fn reconfigure(&self, change: &Reconfig) -> Result<Value, ControlError> {
        let (path, body) = change.request();
        self.call("POST", path, Some(body)).await
    }

    /// `POST /config/save`: the running configuration as TOML.
    pub async fn running_config(&self) -> Result<String, ControlError> {
        let v = self.call("POST", "/config/save", Some(json!({}))).await?;
        v.get("toml")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ControlError::Refused {
                code: 200,
                message: "the answer has no \"toml\"".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_bodies_carry_the_action_and_its_arguments() {
        assert_eq!(
            PathAction::Delay { ms: 250 }.body("iqn.x:n1"),
            json!({ "initiator": "iqn.x:n1", "action": "delay", "ms": 250 })
        );
        let fail = PathAction::Fail {
            count: 2,
            sense: "3/11/00".into(),
        };
        assert_eq!(
            fail.body("n"),
            json!({ "initiator": "n", "action": "fail", "count": 2, "sense": "3/11/00" })
        );
        assert_eq!(
            PathAction::Cut.body("n"),
            json!({ "initiator": "n", "action": "cut" })
        );
        assert_eq!(LunAction::PowerCycle.name(), "power-cycle");
    }

    #[test]
    fn reconfiguration_bodies_name_the_endpoint_action_and_fields() {
        let (path, body) = Reconfig::LunResize {
            target: None,
            lun: 3,
            size: "2MiB".into(),
            force: true,
        }
        .request();
        assert_eq!(path, "/config/lun");
        assert_eq!(
            body,
            json!({ "action": "resize", "target": null, "lun": 3, "size": "2MiB", "force": true })
        );
        let (path, body) = Reconfig::ChapSet {
            target: Some("iqn.t".into()),
            user: "u".into(),
            secret: "s".into(),
            mutual: Some(("t".into(), "m".into())),
        }
        .request();
        assert_eq!(path, "/config/chap");
        assert_eq!(body["mutual_user"], "t");
        assert_eq!(body["mutual_secret"], "m");
        let (_, body) = Reconfig::ChapClear { target: None }.request();
        assert!(body.get("user").is_none());
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        // Port 1 on loopback: nothing listens there (it needs root to bind).
        let c = ControlClient::new("127.0.0.1:1", None);
        let e = c
            .status()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("control plane at 127.0.0.1:1 (is `busrig target`"),
            "{e}"
        );
    }
}
