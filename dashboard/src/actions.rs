//! `POST /action`: what the page's buttons do, each through the endpoint
//! the matching CLI verb uses, with that endpoint's credential:
//!
//! | action | fields | through |
//! |---|---|---|
//! | `group-move` | `group`, `to` (a node, or absent: the best possible) | node admin `POST /group` (`busrig cluster group move`) |
//! | `group-online`, `group-offline` | `group` | node admin `POST /group` |
//! | `resource-online`, `resource-offline` | `resource` | node admin `POST /resource` |
//! | `node-pause`, `node-resume` | `node` | node admin `POST /node` |
//! | `lab-kill`, `lab-start` | `node` | the lab (`busrig lab kill`, `start`) |
//! | `lab-partition`, `lab-heal` | `node`, `net` (`private`, `public`, `both`) | the lab (`busrig lab partition`, `heal`) |
//! | `path-cut`, `path-restore` | `initiator` | bus control `POST /path` |
//! | `bus-reset` | `bus` (absent: the only one) | bus control `POST /reset` |
//! | `lun-power-cycle` | `lun`, `target` (absent: the only one) | bus control `POST /lun` |
//!
//! The dashboard's own token guards the endpoint (crate docs); the
//! credentials behind it are the cluster's admin credential and the bus's
//! control token. Bad input is a 400 and changes nothing.

use std::sync::{Arc, Mutex};

use busrig_cluster::admin_client::{AdminClient, GroupChange, ResourceChange};
use busrig_http::HttpResponse;
use busrig_lab::{Net, Signal};
use busrig_lograte::text::now_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::collect::Sources;
use crate::timeline::Timeline;

/// One action, as the page sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    GroupMove {
        group: String,
        #[serde(default)]
        to: Option<String>,
    },
    GroupOnline {
        group: String,
    },
    GroupOffline {
        group: String,
    },
    ResourceOnline {
        resource: String,
    },
    ResourceOffline {
        resource: String,
    },
    NodePause {
        node: String,
    },
    NodeResume {
        node: String,
    },
    LabKill {
        node: String,
    },
    LabStart {
        node: String,
    },
    LabPartition {
        node: String,
        net: Net,
    },
    LabHeal {
        node: String,
        #[serde(default)]
        net: Net,
    },
    PathCut {
        initiator: String,
    },
    PathRestore {
        initiator: String,
    },
    BusReset {
        #[serde(default)]
        bus: Option<String>,
    },
    LunPowerCycle {
        lun: u64,
        #[serde(default)]
        target: Option<String>,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::GroupMove { group, to } => match to {
                Some(n) => write!(f, "move group {group} to {n}"),
                None => write!(f, "move group {group} to the best possible node"),
            },
            Action::GroupOnline { group } => write!(f, "bring group {group} online"),
            Action::GroupOffline { group } => write!(f, "take group {group} offline"),
            Action::ResourceOnline { resource } => write!(f, "bring resource {resource} online"),
            Action::ResourceOffline { resource } => write!(f, "take resource {resource} offline"),
            Action::NodePause { node } => write!(f, "pause node {node}"),
            Action::NodeResume { node } => write!(f, "resume node {node}"),
            Action::LabKill { node } => write!(f, "kill {node} (SIGKILL)"),
            Action::LabStart { node } => write!(f, "start {node}"),
            Action::LabPartition { node, net } => {
                write!(f, "partition {node} from the {} network", net.as_str())
            }
            Action::LabHeal { node, net } => {
                write!(f, "heal {node} on the {} network", net.as_str())
            }
            Action::PathCut { initiator } => write!(f, "cut the path of {initiator}"),
            Action::PathRestore { initiator } => write!(f, "restore the path of {initiator}"),
            Action::BusReset { bus } => match bus {
                Some(b) => write!(f, "reset bus {b}"),
                None => write!(f, "reset the bus"),
            },
            Action::LunPowerCycle { lun, target } => match target {
                Some(t) => write!(f, "power-cycle LUN {lun} of {t}"),
                None => write!(f, "power-cycle LUN {lun}"),
            },
        }
    }
}

/// Performs actions; one at a time (the page waits for each answer).
pub struct Actor {
    sources: Sources,
    timeline: Arc<Mutex<Timeline>>,
}

/// A refusal or a failure, with its HTTP status.
struct Failed(u16, String);

impl Actor {
    pub fn new(sources: Sources, timeline: Arc<Mutex<Timeline>>) -> Actor {
        Actor { sources, timeline }
    }

    /// Parses and performs `body`; the answer says what was done.
    pub async fn perform(&mut self, body: &Value) -> HttpResponse {
        let action: Action = match serde_json::from_value(body.clone()) {
            Ok(a) => a,
            Err(e) => return HttpResponse::error(400, format!("not an action: {e}")),
        };
        let what = action.to_string();
        let r = self.run(&action).await;
        let line = match &r {
            Ok(_) => format!("dashboard: {what}: done"),
            Err(Failed(_, e)) => format!("dashboard: {what}: failed: {e}"),
        };
        tracing::info!("{line}");
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_action(now_ms(), line);
        match r {
            Ok(result) => HttpResponse::ok(json!({ "done": what, "result": result })),
            Err(Failed(code, e)) => HttpResponse::error(code, format!("{what}: {e}")),
        }
    }

    fn admin(&self) -> Result<AdminClient, Failed> {
        let cfg = self.sources.config.as_ref().ok_or_else(|| {
            Failed(
                403,
                "the dashboard has no cluster file, so no admin credential: start it with --config FILE or --lab DIR".into(),
            )
        })?;
        // Nodes given by address besides the cluster file's.
        let extra: Vec<String> = self
            .sources
            .nodes
            .iter()
            .map(|n| n.admin.clone())
            .filter(|a| !cfg.nodes.iter().any(|n| n.admin.to_string() == *a))
            .collect();
        AdminClient::new(extra, Some(cfg)).map_err(|e| Failed(400, e.to_string()))
    }

    fn lab(&self) -> Result<busrig_lab::Lab, Failed> {
        self.sources.lab.clone().ok_or_else(|| {
            Failed(
                403,
                "kill, start, partition and heal need a lab: start the dashboard with --lab DIR"
                    .into(),
            )
        })
    }

    /// A `POST` to the bus's control plane with its token.
    async fn bus(&self, path: &str, body: Value) -> Result<Value, Failed> {
        let control = match &self.sources.lab {
            Some(l) => busrig_lab::bus_control(l.dir()).ok(),
            None => self.sources.control.clone(),
        }
        .ok_or_else(|| Failed(403, "the dashboard watches no bus (--control ADDR)".into()))?;
        let token = self.sources.bus_token.as_deref().ok_or_else(|| {
            Failed(
                403,
                "the dashboard has no bus token: set BUSRIG_CONTROL_TOKEN when starting it".into(),
            )
        })?;
        match busrig_http::request(&control, "POST", path, Some(&body), Some(token)).await {
            Ok((200, v)) => Ok(v),
            Ok((code, v)) => Err(Failed(
                code,
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("refused")
                    .to_string(),
            )),
            Err(e) => Err(Failed(502, e.to_string())),
        }
    }

    /// A blocking lab verb, off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(busrig_lab::Lab) -> busrig_lab::Result<T> + Send + 'static,
    ) -> Result<T, Failed> {
        let lab = self.lab()?;
        match tokio::task::spawn_blocking(move || f(lab)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failed(409, e.chain())),
            Err(e) => Err(Failed(500, e.to_string())),
        }
    }

    async fn run(&self, a: &Action) -> Result<Value, Failed> {
        let cluster = |r: Result<Value, busrig_cluster::admin_client::ClientError>| {
            r.map_err(|e| Failed(409, busrig_lograte::text::error_chain(&e)))
        };
        match a.clone() {
            Action::GroupMove { group, to } => cluster(
                self.admin()?
                    .group(&GroupChange::Move { name: group, to })
                    .await,
            ),
            Action::GroupOnline { group } => cluster(
                self.admin()?
                    .group(&GroupChange::Online { name: group })
                    .await,
            ),
            Action::GroupOffline { group } => cluster(
                self.admin()?
                    .group(&GroupChange::Offline { name: group })
                    .await,
            ),
            Action::ResourceOnline { resource } => cluster(
                self.admin()?
                    .resource(&ResourceChange::Online { name: resource })
                    .await,
            ),
            Action::ResourceOffline { resource } => cluster(
                self.admin()?
                    .resource(&ResourceChange::Offline { name: resource })
                    .await,
            ),
            Action::NodePause { node } => cluster(self.admin()?.node_action("pause", &node).await),
            Action::NodeResume { node } => {
                cluster(self.admin()?.node_action("resume", &node).await)
            }
            Action::LabKill { node } => {
                let (name, pid) = self
                    .blocking(move |l| l.send_signal(&node, Signal::SIGKILL, "killed"))
                    .await?;
                Ok(json!({ "node": name, "pid": pid }))
            }
            Action::LabStart { node } => {
                let n = node.clone();
                self.blocking(move |l| l.start(&n, false)).await?;
                Ok(json!({ "node": node }))
            }
            Action::LabPartition { node, net } | Action::LabHeal { node, net } => {
                let cut = matches!(a, Action::LabPartition { .. });
                let (name, now) = self.blocking(move |l| l.partition(&node, net, cut)).await?;
                Ok(json!({ "node": name, "private_cut": now.private, "public_cut": now.public }))
            }
            Action::PathCut { initiator } => {
                self.bus("/path", json!({ "initiator": initiator, "action": "cut" }))
                    .await
            }
            Action::PathRestore { initiator } => {
                self.bus(
                    "/path",
                    json!({ "initiator": initiator, "action": "restore" }),
                )
                .await
            }
            Action::BusReset { bus } => {
                let body = match bus {
                    Some(b) => json!({ "bus": b }),
                    None => json!({}),
                };
                self.bus("/reset", body).await
            }
            Action::LunPowerCycle { lun, target } => {
                let mut body = json!({ "lun": lun, "action": "power-cycle" });
                if let Some(t) = target {
                    body["target"] = json!(t);
                }
                self.bus("/lun", body).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_from_the_page_json() {
        let a: Action =
            serde_json::from_value(json!({"action": "group-move", "group": "G", "to": "NODE2"}))
                .unwrap();
        assert_eq!(
            a,
            Action::GroupMove {
                group: "G".into(),
                to: Some("NODE2".into())
            }
        );
        let a: Action =
            serde_json::from_value(json!({"action": "lab-heal", "node": "NODE1"})).unwrap();
        assert_eq!(
            a,
            Action::LabHeal {
                node: "NODE1".into(),
                net: Net::Both
            }
        );
        for bad in [
            json!({"action": "format-disk"}),
            json!({"action": "group-move"}),
            json!({"action": "lab-partition", "node": "NODE1", "net": "everything"}),
            json!({"action": "lun-power-cycle", "lun": "two"}),
        ] {
            assert!(
                serde_json::from_value::<Action>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_action_without_its_credential_is_refused_and_logged() {
        let tl = Arc::new(Mutex::new(Timeline::default()));
        let mut actor = Actor::new(
            Sources::direct(vec!["127.0.0.1:9".into()], None, None, None),
            tl.clone(),
        );
        let r = actor
            .perform(&json!({"action": "group-offline", "group": "G"}))
            .await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        let r = actor.perform(&json!({"action": "bus-reset"})).await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        let r = actor
            .perform(&json!({"action": "lab-kill", "node": "NODE1"}))
            .await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        let r = actor.perform(&json!({"nothing": 1})).await;
        assert_eq!(r.status, 400);
        let entries = tl.lock().unwrap().since(0);
        assert_eq!(entries.len(), 3, "each refused action is on the timeline");
        assert!(entries[0].text.contains("failed"), "{}", entries[0].text);
    }
}
