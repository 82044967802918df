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
