//! Each node's admin endpoint, and its client (`busrig cluster`, the lab).
//!
//! HTTP/1.1 with JSON bodies, the bus control plane's transport
//! (`busrig-http`: an axum [`Router`] behind its access rule and limits), on
//! the node's `admin` address from the cluster file. Every `POST` changes the
//! cluster and needs the cluster's admin credential ([`admin_credential`],
//! derived from the cluster file's secret) as `Authorization: Bearer`, from
//! loopback too; the `GET`s are open to loopback clients and need the
//! credential from anywhere else (docs/security.md).
//!
//! | method and path | body | what |
//! |---|---|---|
//! | `GET /status` | | [`ClusterStatus`]: this node's view of the cluster |
//! | `GET /db` | | the cluster database: `{"seq": N, "entries": {..}}`; 503 from a node not yet a member with the cluster's copy |
//! | `POST /db` | `{"op": "put", "key": K, "value": V}` or `{"op": "delete", "key": K}` | a global update; answers once it is committed |
//! | `POST /node` | `{"action": "pause" \| "resume" \| "evict", "node": NAME}` | membership changes; only the quorum owner takes them (409 names the owner otherwise) |
//! | `POST /partition` | `{"net": "private" \| "public" \| "both", "cut": BOOL}` | the lab's network partition switch for this node |
//! | `POST /net-delay` | `{"net": "private" \| "public" \| "both", "ms": N}` | the lab's delay switch: this node's sends on the network wait N ms (0: none) |
//! | `GET /catalog` | | groups (spec, owner, target, state, failovers), resources (spec, state), names |
//! | `POST /group` | `{"action": "create" \| "set" \| "delete" \| "move" \| "online" \| "offline", "name": G, "spec": {..}?, "to": NODE?}` | group administration |
//! | `POST /resource` | `{"action": "create" \| "set" \| "delete" \| "depend" \| "fail", "name": R, "spec": {..}?, "on": R2?}` | resource administration |
//! | `GET /resolve?name=NAME` | | the address a network name registered |
//!
//! Errors come back as a non-200 status with `{"error": "..."}`; a refused
//! request changes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use busrig_http::{HttpError, HttpResponse, JsonBody, Limits, Query, Server, DEFAULT_LIMITS};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{ClusterConfig, NodeId};
use crate::db::Change;
use crate::driver::{ClusterTransport, Command, NodePhase, NodeStatus};
use crate::failover;
use crate::message::Net;
use crate::resource::{
    group_key, put_json, resource_key, Catalog, GroupSpec, GroupStatus, ResourceSpec, Target,
};

/// The label the admin credential is derived under: the same secret also
/// keys the cluster's datagrams (docs/security.md "Credentials").
pub const ADMIN_CREDENTIAL_LABEL: &str = "busrig cluster admin credential v1";

/// HMAC-SHA256 of `label` keyed with `secret`, as lowercase hex: a
/// credential for one purpose that does not reveal the secret, so a
/// credential leaked from one endpoint opens nothing else.
pub fn derive_credential(secret: &str, label: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(label.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bearer token of the cluster's admin endpoints, derived from the
/// cluster file's `secret`.
pub fn admin_credential(secret: &str) -> String {
    derive_credential(secret, ADMIN_CREDENTIAL_LABEL)
}

/// The limits of the admin endpoint: few clients (the CLI, the lab, other
/// nodes forwarding), and changes that may wait [`WRITE_TIMEOUT`] for a
/// commit.
pub const ADMIN_LIMITS: Limits = Limits {
    max_connections: 32,
    ..DEFAULT_LIMITS
};

/// How long the endpoint waits for a global update or a membership change
/// to take effect before answering 504 (the change may still happen).
pub fn change_timeout(cfg: &ClusterConfig) -> Duration {
    (cfg.timing.detection() * 4).max(Duration::from_secs(5))
}

/// A node's membership as another node sees it. The serde names are the
/// `GET /status` words scripts compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// A member of the answering node's view.
    Online,
    /// A member the quorum owner paused: it takes no groups.
    Paused,
    /// Not a member (or the answering node is in no view).
    Offline,
}

impl NodeState {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Paused => "paused",
            NodeState::Offline => "offline",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as another node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub state: NodeState,
    /// Its admin address, so a client can ask another member.
    pub admin: String,
}

/// `GET /status`: the keys scripts rely on are `cluster`, `epoch`,
/// `quorum_owner` and `nodes` (docs/semantics.md "Interface contracts").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    /// The node that answered.
    pub node: String,
    /// Its phase: `joining`, `forming`, `member`, `regrouping`, `stopped`.
    pub phase: NodePhase,
    /// Whether the node that answered is a member of a view; when it is
    /// not, its `epoch`, `quorum_owner` and node states are not the
    /// cluster's, and a client should ask another node.
    pub member: bool,
    pub epoch: Option<u64>,
    pub quorum_owner: Option<String>,
    pub quorum_model: String,
    pub profile: String,
    /// Sequence number of the last cluster database update applied on the
    /// node that answered (its quorum log position).
    pub log_seq: u64,
    pub writes_held: bool,
    /// Whether the node that answered acts as quorum owner right now.
    pub acting_owner: bool,
    /// The node's quorum arbitration step, in words.
    pub arbitration: String,
    pub nodes: Vec<NodeEntry>,
    /// How long ago the answering node last heard each peer it watches,
    /// on each cluster network (absent from older nodes).
    #[serde(default)]
    pub heartbeats: Vec<HeartbeatAge>,
}

/// How long ago one peer was last heard on each network, milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAge {
    pub node: String,
    pub private_ms: u64,
    pub public_ms: u64,
}

impl ClusterStatus {
    /// Builds node `me`'s answer from its published status.
    pub fn from_node(cfg: &ClusterConfig, me: NodeId, st: &NodeStatus) -> ClusterStatus {
        let name = |id: NodeId| cfg.nodes.get(usize::from(id)).map(|n| n.name.clone());
        let nodes = cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let id = i as NodeId;
                let state = match &st.view {
                    Some(v) if v.paused.contains(&id) => NodeState::Paused,
                    Some(v) if v.contains(id) => NodeState::Online,
                    _ => NodeState::Offline,
                };
                NodeEntry {
                    name: n.name.clone(),
                    state,
                    admin: n.admin.to_string(),
                }
            })
            .collect();
        ClusterStatus {
            cluster: cfg.name.clone(),
            node: name(me).unwrap_or_default(),
            phase: st.phase,
            member: st.view.is_some(),
            epoch: st.view.as_ref().map(|v| v.epoch),
            quorum_owner: st.view.as_ref().and_then(|v| v.owner).and_then(name),
            quorum_model: cfg.quorum.name().into(),
            profile: cfg.profile.clone(),
            log_seq: st.db_seq,
            writes_held: st.writes_held,
            acting_owner: st.acts_as_owner(tokio::time::Instant::now()),
            arbitration: st.arbitration.clone(),
            nodes,
            heartbeats: {
                let now = tokio::time::Instant::now();
                let ms =
                    |t: tokio::time::Instant| now.saturating_duration_since(t).as_millis() as u64;
                st.heard
                    .iter()
                    .filter_map(|(id, [private, public])| {
                        Some(HeartbeatAge {
                            node: name(*id)?,
                            private_ms: ms(*private),
                            public_ms: ms(*public),
                        })
                    })
                    .collect()
            },
        }
    }

    /// The state of node `name` in this answer.
    pub fn node_state(&self, name: &str) -> Option<NodeState> {
        self.nodes
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .map(|n| n.state)
    }

    /// The state of node `name` as its JSON word, the form scripts and the
    /// lab compare with.
    pub fn state_of(&self, name: &str) -> Option<&'static str> {
        self.node_state(name).map(NodeState::as_str)
    }
}

/// What the admin endpoint needs from the running node.
#[derive(Clone)]
pub struct Admin {
    cfg: Arc<ClusterConfig>,
    me: NodeId,
    status: watch::Receiver<NodeStatus>,
    commands: mpsc::UnboundedSender<Command>,
    transport: Arc<ClusterTransport>,
    limits: Limits,
}

impl Admin {
    pub fn new(
        cfg: Arc<ClusterConfig>,
        me: NodeId,
        status: watch::Receiver<NodeStatus>,
        commands: mpsc::UnboundedSender<Command>,
        transport: Arc<ClusterTransport>,
    ) -> Admin {
        Admin {
            cfg,
            me,
            status,
            commands,
            transport,
            limits: ADMIN_LIMITS,
        }
    }

    /// Serves with `limits` instead of [`ADMIN_LIMITS`].
    pub fn with_limits(mut self, limits: Limits) -> Admin {
        self.limits = limits;
        self
    }

    /// Serves admin requests on `listener` until `shutdown` completes;
    /// changes, and every request from off the host, present the admin
    /// credential.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let token = Some(admin_credential(&self.cfg.secret));
        let limits = self.limits;
        Server::new(self.router())
            .token(token)
            .limits(limits)
            .serve(listener, shutdown)
            .await;
    }

    /// The endpoints, to be served by [`busrig_http::Server`].
    pub fn router(self) -> Router {
        type A = State<Arc<Admin>>;
        Router::new()
            .route(
                "/status",
                get(|State(a): A| async move {
                    match serde_json::to_value(a.current()) {
                        Ok(v) => HttpResponse::ok(v),
                        Err(e) => HttpResponse::error(500, e.to_string()),
                    }
                }),
            )
            .route(
                "/db",
                get(|State(a): A| async move { a.db().await })
                    .post(|State(a): A, JsonBody(b): JsonBody| async move { a.update(&b).await }),
            )
            .route(
                "/node",
                post(|State(a): A, JsonBody(b): JsonBody| async move { a.node_verb(&b).await }),
            )
            .route(
                "/partition",
                post(|State(a): A, JsonBody(b): JsonBody| async move { a.partition(&b) }),
            )
            .route(
                "/net-delay",
                post(|State(a): A, JsonBody(b): JsonBody| async move { a.net_delay(&b) }),
            )
            .route(
                "/catalog",
                get(|State(a): A| async move {
                    match a.catalog().await {
                        Ok(c) => HttpResponse::ok(catalog_json(&c)),
                        Err(r) => r,
                    }
                }),
            )
            .route(
                "/group",
                post(|State(a): A, JsonBody(b): JsonBody| async move { a.group_verb(&b).await }),
            )
            .route(
                "/resource",
                post(|State(a): A, JsonBody(b): JsonBody| async move { a.resource_verb(&b).await }),
            )
            .route(
                "/resolve",
                get(|State(a): A, q: Query| async move { a.resolve(&q).await }),
            )
            .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
                HttpResponse::error(405, format!("{method} is not allowed on {}", uri.path()))
            })
            .fallback(|uri: Uri| async move {
                HttpResponse::error(404, format!("no such endpoint: {}", uri.path()))
            })
            .with_state(Arc::new(self))
    }

    fn current(&self) -> ClusterStatus {
        ClusterStatus::from_node(&self.cfg, self.me, &self.status.borrow())
    }

    async fn resolve(&self, query: &Query) -> HttpResponse {
        let Some(n) = query.get("name") else {
            return HttpResponse::error(400, "resolve needs ?name=NAME");
        };
        match self.catalog().await {
            Ok(c) => match c.resolve(n) {
                Some(a) => HttpResponse::ok(json!({ "name": n, "address": a })),
                None => HttpResponse::error(404, format!("no network name {n:?} is online")),
            },
            Err(r) => r,
        }
    }

    async fn snapshot(&self) -> Result<crate::db::DbSnapshot, HttpResponse> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Snapshot(tx)).is_err() {
            return Err(HttpResponse::error(
                503,
                "the cluster service is not running",
            ));
        }
        rx.await
            .map_err(|_| HttpResponse::error(503, "the cluster service stopped"))
    }

    async fn catalog(&self) -> Result<Catalog, HttpResponse> {
        Ok(Catalog::from_db(&self.snapshot().await?))
    }

    /// Proposes `changes` in order; the first refusal stops and is reported.
    async fn commit(&self, changes: Vec<Change>) -> HttpResponse {
        let mut last = 0;
        for c in changes {
            let (tx, rx) = oneshot::channel();
            if self.commands.send(Command::Propose(c, Some(tx))).is_err() {
                return HttpResponse::error(503, "the cluster service is not running");
            }
            match tokio::time::timeout(change_timeout(&self.cfg), rx).await {
                Ok(Ok(Ok(seq))) => last = seq,
                Ok(Ok(Err(reason))) => return HttpResponse::error(409, reason.to_string()),
                Ok(Err(_)) => return HttpResponse::error(503, "the cluster service stopped"),
                Err(_) => return HttpResponse::error(504, "the update was not committed in time"),
            }
        }
        HttpResponse::ok(json!({ "seq": last }))
    }

    fn node_names(&self) -> Vec<String> {
        self.cfg.nodes.iter().map(|n| n.name.clone()).collect()
    }

    async fn group_verb(&self, body: &Value) -> HttpResponse {
        let (Some(action), Some(name)) = (
            body.get("action").and_then(Value::as_str),
            body.get("name").and_then(Value::as_str),
        ) else {
            return HttpResponse::error(400, "a group request needs \"action\" and \"name\"");
        };
        let cat = match self.catalog().await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let exists = cat.groups.get(name);
        let spec = || -> Result<GroupSpec, HttpResponse> {
            match body.get("spec") {
                None | Some(Value::Null) => Ok(GroupSpec::default()),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| HttpResponse::error(400, format!("group spec: {e}"))),
            }
        };
        let changes = match (action, exists) {
            ("create", Some(_)) => {
                return HttpResponse::error(409, format!("group {name:?} exists"))
            }
            ("create", None) | ("set", Some(_)) => {
                let spec = match spec() {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                if let Err(e) = cat.check_group(name, &spec, &self.node_names()) {
                    return HttpResponse::error(400, e.to_string());
                }
                vec![put_json(group_key(name, "spec"), &spec)]
            }
            (_, None) => return HttpResponse::error(404, format!("no group {name:?}")),
            ("delete", Some(_)) => {
                let members: Vec<&String> = cat.members(name).into_iter().map(|(n, _)| n).collect();
                if !members.is_empty() {
                    return HttpResponse::error(
                        409,
                        format!("group {name} still has resources: {members:?}; delete them first"),
                    );
                }
                let g = exists.expect("matched Some");
                ["spec", "owner", "target", "state", "failovers"]
                    .iter()
                    .filter(|f| match **f {
                        "spec" => true,
                        "owner" => g.owner.is_some(),
                        "target" => g.target == Target::Offline,
                        "state" => g.state.is_some(),
                        _ => !g.failovers.is_empty(),
                    })
                    .map(|f| Change::Delete {
                        key: group_key(name, f),
                    })
                    .collect()
            }
            ("online", Some(g)) => {
                let mut c = vec![Change::Put {
                    key: group_key(name, "target"),
                    value: Target::Online.as_str().into(),
                }];
                // Bringing a failed group online starts its counts afresh.
                if g.state
                    .as_ref()
                    .is_some_and(|s| s.state == GroupStatus::Failed)
                {
                    c.push(Change::Delete {
                        key: group_key(name, "state"),
                    });
                }
                if !g.failovers.is_empty() {
                    c.push(Change::Delete {
                        key: group_key(name, "failovers"),
                    });
                }
                c
            }
            ("offline", Some(_)) => vec![Change::Put {
                key: group_key(name, "target"),
                value: Target::Offline.as_str().into(),
            }],
            ("move", Some(g)) => {
                let view = match self.status.borrow().view.clone() {
                    Some(v) => v,
                    None => return HttpResponse::error(503, "this node is not a member"),
                };
                let place = failover::placement_of(&self.cfg, &cat, name, g);
                let mut nodes = failover::node_views(&self.cfg, &cat, &view);
                let current = g.owner.as_deref().and_then(|o| self.cfg.node_id(o));
                let to = match body.get("to").and_then(Value::as_str) {
                    Some(t) => {
                        let Some(id) = self.cfg.node_id(t) else {
                            return HttpResponse::error(404, format!("no node {t:?}"));
                        };
                        let n = nodes.iter().find(|n| n.id == id).expect("every node");
                        if n.state != crate::placement::NodeState::Up {
                            return HttpResponse::error(
                                409,
                                format!("node {t} cannot take groups now ({:?})", n.state),
                            );
                        }
                        if !place.is_possible_owner(id) {
                            return HttpResponse::error(
                                409,
                                format!(
                                    "node {t} is not a possible owner of every resource in {name}"
                                ),
                            );
                        }
                        id
                    }
                    None => {
                        // Best possible among the other nodes.
                        nodes.retain(|n| Some(n.id) != current);
                        match crate::placement::choose_move_best_possible(&place, &nodes, |c| c[0])
                        {
                            Some(id) => id,
                            None => {
                                return HttpResponse::error(
                                    409,
                                    format!("no other node can take {name}"),
                                )
                            }
                        }
                    }
                };
                vec![Change::Put {
                    key: group_key(name, "owner"),
                    value: self.cfg.nodes[usize::from(to)].name.clone(),
                }]
            }
            (other, _) => {
                return HttpResponse::error(
                    400,
                    format!(
                    "unknown group action {other:?} (create, set, delete, move, online, offline)"
                ),
                )
            }
        };
        self.commit(changes).await
    }

    async fn resource_verb(&self, body: &Value) -> HttpResponse {
        let (Some(action), Some(name)) = (
            body.get("action").and_then(Value::as_str),
            body.get("name").and_then(Value::as_str),
        ) else {
            return HttpResponse::error(400, "a resource request needs \"action\" and \"name\"");
        };
        let cat = match self.catalog().await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let exists = cat.resources.get(name).cloned();
        let nodes = self.node_names();
        let changes = match (action, exists) {
            ("create", Some(_)) => {
                return HttpResponse::error(409, format!("resource {name:?} exists"))
            }
            ("create", None) | ("set", Some(_)) => {
                let spec: ResourceSpec = match body
                    .get("spec")
                    .map(|v| serde_json::from_value(v.clone()))
                {
                    Some(Ok(s)) => s,
                    Some(Err(e)) => return HttpResponse::error(400, format!("resource spec: {e}")),
                    None => return HttpResponse::error(400, "a resource needs a \"spec\""),
                };
                if let Err(e) = cat.check_resource(name, &spec, &nodes) {
                    return HttpResponse::error(400, e.to_string());
                }
                vec![put_json(resource_key(name, "spec"), &spec)]
            }
            (_, None) => return HttpResponse::error(404, format!("no resource {name:?}")),
            ("delete", Some(r)) => {
                let deps: Vec<&String> = cat.dependents(name).collect();
                if !deps.is_empty() {
                    return HttpResponse::error(
                        409,
                        format!("{deps:?} depend on {name}; delete them first"),
                    );
                }
                let mut c = vec![Change::Delete {
                    key: resource_key(name, "spec"),
                }];
                if r.state.is_some() {
                    c.push(Change::Delete {
                        key: resource_key(name, "state"),
                    });
                }
                c
            }
            ("depend", Some(r)) => {
                let Some(on) = body.get("on").and_then(Value::as_str) else {
                    return HttpResponse::error(400, "depend needs \"on\": RESOURCE");
                };
                let mut spec = r.spec.clone();
                if !spec.depends_on.iter().any(|d| d == on) {
                    spec.depends_on.push(on.to_string());
                }
                if let Err(e) = cat.check_resource(name, &spec, &nodes) {
                    return HttpResponse::error(400, e.to_string());
                }
                vec![put_json(resource_key(name, "spec"), &spec)]
            }
            ("online" | "offline", Some(_)) => vec![Change::Put {
                key: resource_key(name, "target"),
                value: action.to_string(),
            }],
            ("fail", Some(r)) => {
                // A counter: the owner fails the resource once per increment.
                let n: u64 = r
                    .fail_request
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                vec![Change::Put {
                    key: resource_key(name, "fail"),
                    value: (n + 1).to_string(),
                }]
            }
            (other, _) => {
                return HttpResponse::error(
                    400,
                    format!(
                        "unknown resource action {other:?} (create, set, delete, depend, online, offline, fail)"
                    ),
                )
            }
        };
        self.commit(changes).await
    }

    /// `GET /db`: this node's copy, only once it is the cluster's; a
    /// joining or restarted node refuses with 503 rather than answer from
    /// an empty or earlier life's copy (docs/semantics.md, "Reading the
    /// database").
    async fn db(&self) -> HttpResponse {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Read(tx)).is_err() {
            return HttpResponse::error(503, "the cluster service is not running");
        }
        match rx.await {
            Ok(Ok(db)) => HttpResponse::ok(json!({ "seq": db.seq, "entries": db.entries })),
            Ok(Err(why)) => HttpResponse::error(503, why.to_string()),
            Err(_) => HttpResponse::error(503, "the cluster service stopped"),
        }
    }

    async fn update(&self, body: &Value) -> HttpResponse {
        let key = match body.get("key").and_then(Value::as_str) {
            Some(k) if !k.is_empty() => k.to_string(),
            _ => return HttpResponse::error(400, "\"key\" must be a non-empty string"),
        };
        let change = match body.get("op").and_then(Value::as_str) {
            Some("put") => match body.get("value").and_then(Value::as_str) {
                Some(v) => Change::Put {
                    key,
                    value: v.to_string(),
                },
                None => return HttpResponse::error(400, "put needs a string \"value\""),
            },
            Some("delete") => Change::Delete { key },
            Some("cas") => {
                let expect = match body.get("expect") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(e)) => Some(e.clone()),
                    Some(_) => {
                        return HttpResponse::error(400, "cas needs \"expect\": a string or null")
                    }
                };
                match body.get("value").and_then(Value::as_str) {
                    Some(v) => Change::CompareAndSet {
                        key,
                        expect,
                        value: v.to_string(),
                    },
                    None => return HttpResponse::error(400, "cas needs a string \"value\""),
                }
            }
            _ => return HttpResponse::error(400, "\"op\" must be \"put\", \"delete\" or \"cas\""),
        };
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Propose(change, Some(tx)))
            .is_err()
        {
            return HttpResponse::error(503, "the cluster service is not running");
        }
        match tokio::time::timeout(change_timeout(&self.cfg), rx).await {
            Ok(Ok(Ok(seq))) => HttpResponse::ok(json!({ "seq": seq })),
            Ok(Ok(Err(reason))) => HttpResponse::error(409, reason.to_string()),
            Ok(Err(_)) => HttpResponse::error(
                503,
                "the cluster service stopped before the update committed",
            ),
            Err(_) => HttpResponse::error(
                504,
                "the update was not committed in time (it may still commit)",
            ),
        }
    }

    async fn node_verb(&self, body: &Value) -> HttpResponse {
        let Some(action) = body.get("action").and_then(Value::as_str) else {
            return HttpResponse::error(400, "\"action\" must be pause, resume or evict");
        };
        let Some(name) = body.get("node").and_then(Value::as_str) else {
            return HttpResponse::error(400, "\"node\" must name a node");
        };
        let Some(id) = self.cfg.node_id(name) else {
            return HttpResponse::error(404, format!("no node {name:?} in this cluster"));
        };
        let name = self.cfg.nodes[usize::from(id)].name.clone();
        let st = self.current();
        let Some(owner) = st.quorum_owner.clone() else {
            return HttpResponse::error(503, "no quorum owner right now; try again");
        };
        if owner != st.node {
            let admin = self
                .cfg
                .node_id(&owner)
                .map(|o| self.cfg.nodes[usize::from(o)].admin.to_string());
            return HttpResponse {
                status: 409,
                body: json!({
                    "error": format!("membership changes go to the quorum owner, {owner}"),
                    "owner": owner,
                    "owner_admin": admin,
                }),
            };
        }
        let (command, want): (Command, NodeState) = match action {
            "pause" => (Command::SetPaused(id, true), NodeState::Paused),
            "resume" => (Command::SetPaused(id, false), NodeState::Online),
            "evict" => {
                if id == self.me {
                    return HttpResponse::error(
                        409,
                        "the quorum owner cannot evict itself; stop it or evict it from another node after a move",
                    );
                }
                (Command::Evict(id), NodeState::Offline)
            }
            other => {
                return HttpResponse::error(
                    400,
                    format!("unknown action {other:?} (pause, resume, evict)"),
                )
            }
        };
        match st.node_state(&name) {
            Some(NodeState::Offline) if action != "evict" => {
                return HttpResponse::error(409, format!("node {name} is not a member"))
            }
            Some(s) if s == want => return HttpResponse::ok(json!({ "node": name, "state": s })),
            _ => {}
        }
        if self.commands.send(command).is_err() {
            return HttpResponse::error(503, "the cluster service is not running");
        }
        let mut rx = self.status.clone();
        let cfg = self.cfg.clone();
        let me = self.me;
        let done = async {
            rx.wait_for(|s| ClusterStatus::from_node(&cfg, me, s).node_state(&name) == Some(want))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(change_timeout(&self.cfg), done).await {
            Ok(Ok(())) => HttpResponse::ok(json!({ "node": name, "state": want })),
            Ok(Err(_)) => HttpResponse::error(503, "the cluster service stopped"),
            Err(_) => {
                HttpResponse::error(504, format!("node {name} did not become {want} in time"))
            }
        }
    }

    fn partition(&self, body: &Value) -> HttpResponse {
        let nets = match body_nets(body) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(cut) = body.get("cut").and_then(Value::as_bool) else {
            return HttpResponse::error(400, "\"cut\" must be true or false");
        };
        for &n in nets {
            self.transport.set_partitioned(n, cut);
            tracing::warn!(net = ?n, cut, "network partition switch set by the administrator");
        }
        HttpResponse::ok(json!({
            "private": self.transport.is_partitioned(Net::Private),
            "public": self.transport.is_partitioned(Net::Public),
        }))
    }

    fn net_delay(&self, body: &Value) -> HttpResponse {
        let nets = match body_nets(body) {
            Ok(n) => n,
            Err(r) => return r,
        };
        // An hour is far beyond any heartbeat timeout; more is a typo.
        let Some(ms) = body
            .get("ms")
            .and_then(Value::as_u64)
            .filter(|&ms| ms <= 3_600_000)
        else {
            return HttpResponse::error(400, "\"ms\" must be 0 to 3600000");
        };
        for &n in nets {
            self.transport.set_delay(n, Duration::from_millis(ms));
            tracing::warn!(net = ?n, ms, "network delay switch set by the administrator");
        }
        HttpResponse::ok(json!({
            "private_ms": self.transport.delay(Net::Private).as_millis() as u64,
            "public_ms": self.transport.delay(Net::Public).as_millis() as u64,
        }))
    }
}

/// The networks a lab switch request names (`"net"`), or the 400 answer.
fn body_nets(body: &Value) -> Result<&'static [Net], HttpResponse> {
    match body.get("net").and_then(Value::as_str) {
        Some("private") => Ok(&[Net::Private]),
        Some("public") => Ok(&[Net::Public]),
        Some("both") => Ok(&Net::ALL),
        _ => Err(HttpResponse::error(
            400,
            "\"net\" must be private, public or both",
        )),
    }
}

/// The catalog as JSON for `GET /catalog`.
pub fn catalog_json(c: &Catalog) -> Value {
    let groups: serde_json::Map<String, Value> = c
        .groups
        .iter()
        .map(|(n, g)| {
            (
                n.clone(),
                json!({
                    "spec": g.spec,
                    "owner": g.owner,
                    "target": g.target,
                    "state": g.state,
                    "failovers": g.failovers,
                    "resources": c.online_order(n),
                }),
            )
        })
        .collect();
    let resources: serde_json::Map<String, Value> = c
        .resources
        .iter()
        .map(|(n, r)| (n.clone(), json!({ "spec": r.spec, "state": r.state })))
        .collect();
    json!({ "groups": groups, "resources": resources, "names": c.names })
}

// ----- client -----------------------------------------------------------

/// A failed admin request.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The node could not be reached.
    #[error("node admin {addr}: {source}")]
    Unreachable { addr: String, source: HttpError },
    /// The node answered with an error.
    #[error("node admin {addr}: {message} (HTTP {status})")]
    Refused {
        addr: String,
        status: u16,
        message: String,
        body: Value,
    },
    /// The answer did not have the expected shape.
    #[error("node admin {addr}: unexpected answer: {0}", addr = .1)]
    BadAnswer(String, String),
}

/// How long a read (GET) may take before the node counts as unreachable.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a change (POST) may take: the server answers by itself within
/// its own commit timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends one admin request; with the cluster's `secret`, the admin
/// credential derived from it is presented as the bearer token.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    secret: Option<&str>,
) -> Result<Value, AdminError> {
    // A stopped (SIGSTOP) or hung node accepts the connection in the
    // kernel and never answers: reads give up quickly so a client moves on
    // to the next node; changes may legitimately wait for a commit.
    let limit = if method == "GET" {
        READ_TIMEOUT
    } else {
        WRITE_TIMEOUT
    };
    let credential = secret.map(admin_credential);
    let (status, v) = match tokio::time::timeout(
        limit,
        busrig_http::request(addr, method, path, body, credential.as_deref()),
    )
    .await
    {
        Ok(r) => r.map_err(|source| AdminError::Unreachable {
            addr: addr.into(),
            source,
        })?,
        Err(_) => {
            return Err(AdminError::Unreachable {
                addr: addr.into(),
                source: HttpError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                )),
            })
        }
    };
    if status != 200 {
        let message = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed")
            .to_string();
        return Err(AdminError::Refused {
            addr: addr.into(),
            status,
            message,
            body: v,
        });
    }
    Ok(v)
}

/// `GET /status` of one node.
pub async fn status(addr: &str, secret: Option<&str>) -> Result<ClusterStatus, AdminError> {
    let v = request(addr, "GET", "/status", None, secret).await?;
    serde_json::from_value(v).map_err(|e| AdminError::BadAnswer(e.to_string(), addr.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::View;

    fn cfg() -> ClusterConfig {
        ClusterConfig::for_tests(&["N0", "N1", "N2"])
    }

    #[test]
    fn status_names_owner_and_node_states() {
        let cfg = cfg();
        let st = NodeStatus {
            view: Some(View {
                epoch: 4,
                members: vec![0, 1],
                owner: Some(1),
                paused: vec![0],
            }),
            phase: crate::driver::NodePhase::Member,
            db_seq: 9,
            heard: vec![(1, [tokio::time::Instant::now(); 2])],
            ..NodeStatus::default()
        };
        let s = ClusterStatus::from_node(&cfg, 0, &st);
        assert_eq!(s.heartbeats.len(), 1);
        assert_eq!(s.heartbeats[0].node, "N1");
        assert!(s.heartbeats[0].private_ms < 1000 && s.heartbeats[0].public_ms < 1000);
        assert_eq!(s.cluster, "C");
        assert_eq!(s.epoch, Some(4));
        assert_eq!(s.quorum_owner.as_deref(), Some("N1"));
        assert_eq!(s.state_of("N0"), Some("paused"));
        assert_eq!(s.state_of("n1"), Some("online"));
        assert_eq!(s.state_of("N2"), Some("offline"));
        assert_eq!(s.log_seq, 9);
        let v = serde_json::to_value(&s).unwrap();
        for key in ["cluster", "epoch", "quorum_owner", "nodes"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(
            v["nodes"][2],
            json!({"name": "N2", "state": "offline", "admin": "127.0.0.1:7002"})
        );
    }

    /// The node states' and phases' JSON words are what scripts and the
    /// lab compare with: the same bytes the string fields had.
    #[test]
    fn node_state_and_phase_words_on_the_wire() {
        for (s, word) in [
            (NodeState::Online, "online"),
            (NodeState::Paused, "paused"),
            (NodeState::Offline, "offline"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{word}\""));
            assert_eq!(s.as_str(), word);
        }
        for (p, word) in [
            (NodePhase::Joining, "joining"),
            (NodePhase::Forming, "forming"),
            (NodePhase::Member, "member"),
            (NodePhase::Regrouping, "regrouping"),
            (NodePhase::Stopped, "stopped"),
        ] {
            let st = NodeStatus {
                phase: p,
                ..NodeStatus::default()
            };
            let v = serde_json::to_value(ClusterStatus::from_node(&cfg(), 0, &st)).unwrap();
            assert_eq!(v["phase"], json!(word));
            assert_eq!(p.to_string(), word);
        }
        let s = ClusterStatus::from_node(&cfg(), 0, &NodeStatus::default());
        let back: ClusterStatus =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn non_member_reports_no_epoch_or_owner() {
        let s = ClusterStatus::from_node(&cfg(), 2, &NodeStatus::default());
        assert!(!s.member);
        assert_eq!((s.epoch, s.quorum_owner), (None, None));
        assert!(s.nodes.iter().all(|n| n.state == NodeState::Offline));
    }

    /// A stand-in for the node's driver: applies proposals to a database,
    /// answers snapshots and publishes membership changes, so every admin
    /// verb completes and its effect can be checked.
    struct FakeNode {
        db: Arc<std::sync::Mutex<crate::db::DbSnapshot>>,
        membership_commands: Arc<std::sync::atomic::AtomicUsize>,
        transport: Arc<ClusterTransport>,
        addr: String,
        stop: Option<oneshot::Sender<()>>,
    }

    impl FakeNode {
        async fn start(cfg: ClusterConfig) -> FakeNode {
            let cfg = Arc::new(cfg);
            let view = View {
                epoch: 1,
                members: vec![0, 1, 2],
                owner: Some(0),
                paused: vec![],
            };
            let (status_tx, status_rx) = watch::channel(NodeStatus {
                view: Some(view),
                phase: crate::driver::NodePhase::Member,
                ..NodeStatus::default()
            });
            let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
            let sockets = [
                tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            ];
            let transport = Arc::new(ClusterTransport::from_sockets(
                cfg.secret.as_bytes(),
                &cfg.name,
                sockets,
                vec![],
            ));
            let db = Arc::new(std::sync::Mutex::new(crate::db::DbSnapshot::default()));
            let membership = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (db2, m2) = (db.clone(), membership.clone());
            tokio::spawn(async move {
                while let Some(c) = cmd_rx.recv().await {
                    match c {
                        Command::Propose(change, reply) => {
                            let mut db = db2.lock().unwrap();
                            match change {
                                Change::Put { key, value }
                                | Change::CompareAndSet { key, value, .. } => {
                                    db.entries.insert(key, value);
                                }
                                Change::Delete { key } => {
                                    db.entries.remove(&key);
                                }
                            }
                            db.seq += 1;
                            if let Some(r) = reply {
                                let _ = r.send(Ok(db.seq));
                            }
                        }
                        // The admin endpoint proposes for any life.
                        Command::ProposeIn { .. } => {}
                        Command::Snapshot(reply) => {
                            let _ = reply.send(db2.lock().unwrap().clone());
                        }
                        Command::Read(reply) => {
                            let _ = reply.send(Ok(db2.lock().unwrap().clone()));
                        }
                        Command::Evict(id) => {
                            m2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            status_tx.send_modify(|s| {
                                if let Some(v) = s.view.as_mut() {
                                    v.members.retain(|&m| m != id);
                                }
                            });
                        }
                        Command::SetPaused(id, paused) => {
                            m2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            status_tx.send_modify(|s| {
                                if let Some(v) = s.view.as_mut() {
                                    v.paused.retain(|&m| m != id);
                                    if paused {
                                        v.paused.push(id);
                                    }
                                }
                            });
                        }
                    }
                }
            });
            let admin = Admin::new(cfg, 0, status_rx, cmd_tx, transport.clone());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(admin.serve(listener, async {
                let _ = stopped.await;
            }));
            FakeNode {
                db,
                membership_commands: membership,
                transport,
                addr,
                stop: Some(stop),
            }
        }

        fn entries(&self) -> usize {
            self.db.lock().unwrap().entries.len()
        }

        fn membership_commands(&self) -> usize {
            self.membership_commands
                .load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
        }
    }

    /// Every change the admin endpoint takes, as the attack of issue 14
    /// sent them: create a group and a command-running resource, bring the
    /// group online, cut the network, pause and evict a node, write the
    /// database.
    fn changes() -> Vec<(&'static str, Value)> {
        vec![
            ("/group", json!({"action": "create", "name": "G"})),
            (
                "/resource",
                json!({"action": "create", "name": "R", "spec": {
                    "group": "G", "type": "generic-application",
                    "properties": {"command": "touch /tmp/owned"}}}),
            ),
            ("/group", json!({"action": "online", "name": "G"})),
            ("/partition", json!({"net": "both", "cut": true})),
            ("/net-delay", json!({"net": "private", "ms": 200})),
            ("/node", json!({"action": "pause", "node": "N1"})),
            ("/node", json!({"action": "evict", "node": "N2"})),
            ("/db", json!({"op": "put", "key": "k", "value": "v"})),
        ]
    }

    #[tokio::test]
    async fn changes_without_the_admin_credential_are_refused_and_change_nothing() {
        let cfg = cfg();
        let node = FakeNode::start(cfg.clone()).await;
        let wrong = admin_credential("another-cluster-secret");
        for (path, body) in changes() {
            for token in [None, Some(cfg.secret.as_str()), Some(wrong.as_str())] {
                // The raw secret is not the credential either.
                let (code, v) = busrig_http::request(&node.addr, "POST", path, Some(&body), token)
                    .await
                    .unwrap();
                assert_eq!(code, 401, "POST {path} with {token:?}: {v}");
            }
        }
        assert_eq!(node.entries(), 0, "the database was written");
        assert_eq!(
            node.membership_commands(),
            0,
            "a membership change went through"
        );
        assert!(!node.transport.is_partitioned(Net::Private));
        assert!(!node.transport.is_partitioned(Net::Public));
        assert!(node.transport.delay(Net::Private).is_zero());
        // Reading stays open on loopback.
        let st = status(&node.addr, None).await.unwrap();
        assert_eq!(st.state_of("N1"), Some("online"));
        let (code, _) = busrig_http::request(&node.addr, "GET", "/catalog", None, None)
            .await
            .unwrap();
        assert_eq!(code, 200);
    }

    #[tokio::test]
    async fn changes_with_the_admin_credential_go_through() {
        let cfg = cfg();
        let node = FakeNode::start(cfg.clone()).await;
        for (path, body) in changes() {
            let v = request(&node.addr, "POST", path, Some(&body), Some(&cfg.secret))
                .await
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            assert!(v.is_object(), "POST {path}: {v}");
        }
        assert!(node.transport.is_partitioned(Net::Private));
        assert_eq!(
            node.transport.delay(Net::Private),
            Duration::from_millis(200)
        );
        assert!(node.transport.delay(Net::Public).is_zero());
        assert_eq!(node.membership_commands(), 2);
        let st = status(&node.addr, Some(&cfg.secret)).await.unwrap();
        assert_eq!(st.state_of("N1"), Some("paused"));
        assert_eq!(st.state_of("N2"), Some("offline"));
        let db = request(&node.addr, "GET", "/db", None, Some(&cfg.secret))
            .await
            .unwrap();
        assert_eq!(db["entries"]["k"], "v");
        assert!(db["entries"]["group/G/target"].is_string(), "{db}");
    }

    #[test]
    fn the_credential_is_an_hmac_of_a_fixed_label() {
        let c = admin_credential("0123456789abcdef");
        assert_eq!(c.len(), 64);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c, admin_credential("0123456789abcdef"));
        assert_ne!(c, admin_credential("0123456789abcdeg"));
        assert_ne!(c, derive_credential("0123456789abcdef", "another label"));
        // RFC 4231 §4.3 (test case 2): key "Jefe".
        assert_eq!(
            derive_credential("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
