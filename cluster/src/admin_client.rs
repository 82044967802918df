//! The cluster administrator's client (`busrig cluster`): which node to
//! ask, the admin requests built from the administrator's options, and
//! their answers. The server side is `crate::admin`.
//!
//! Status asks the nodes in order and takes the first answer from a
//! member, so it works while the node asked first is down. Changes go to
//! the quorum owner: a node that is not the owner names it (HTTP 409 with
//! `owner_admin`), and the request is sent there (docs/architecture.md
//! "A heartbeat loss, to the group online on another node").

use std::num::ParseIntError;

use serde_json::{json, Value};

use crate::admin::{self, AdminError, ClusterStatus};
use crate::config::ClusterConfig;
use crate::db::{Change, DbSnapshot};
use crate::resource::{Failback, GroupSpec, ResourceSpec, ResourceType};
use crate::snapshot_diff::diff;

/// A failed administration step.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node to ask was given.
    #[error("say which cluster: --node ADDR, --config FILE or --lab DIR")]
    NoNodes,
    /// Every node was asked and none answered (one line per node).
    #[error("no node answered:\n  {}", .0.join("\n  "))]
    NoAnswer(Vec<String>),
    /// An admin request failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The node's database answer did not decode.
    #[error("the node's database answer")]
    BadDb(#[source] serde_json::Error),
    /// A node's answer (or a spec in it) did not decode.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An option's value has the wrong form.
    #[error("{0}")]
    BadOption(String),
    /// An hour of `--failback-window` is not a number.
    #[error(transparent)]
    BadHour(#[from] ParseIntError),
    /// The group named is not in the catalog.
    #[error("no group {0:?}")]
    NoGroup(String),
    /// The resource named is not in the catalog.
    #[error("no resource {0:?}")]
    NoResource(String),
    /// Creating one part of a virtual server failed (the name is shown as
    /// JSON, quoted).
    #[error("creating {name}")]
    Creating {
        name: String,
        #[source]
        source: Box<ClientError>,
    },
    /// A restore stopped part way; the changes before `done` are applied.
    #[error("restore stopped after {done} of {total} changes")]
    RestoreStopped {
        done: usize,
        total: usize,
        #[source]
        source: Box<ClientError>,
    },
}

/// Group properties to change; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupOpts {
    /// Preferred owners, most preferred first (empty names dropped).
    pub preferred: Option<Vec<String>>,
    /// `prevent` or `allow`.
    pub failback: Option<String>,
    /// `START-END` UTC hours, or `none`/empty for no window.
    pub failback_window: Option<String>,
    /// AntiAffinityClassNames (empty names dropped).
    pub anti_affinity: Option<Vec<String>>,
    /// Failovers allowed per period.
    pub failover_threshold: Option<u32>,
    /// The failover period in seconds.
    pub failover_period: Option<u64>,
    /// Whether the group is an Exchange virtual server.
    pub evs: Option<bool>,
}

impl GroupOpts {
    /// Writes the given options into `spec`.
    pub fn apply(&self, spec: &mut GroupSpec) -> Result<(), ClientError> {
        if let Some(p) = &self.preferred {
            spec.preferred_owners = p.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(f) = &self.failback {
            spec.failback.allow = f == "allow";
        }
        if let Some(w) = &self.failback_window {
            if w == "none" || w.is_empty() {
                spec.failback.window = None;
            } else {
                let (a, b) = w.split_once('-').ok_or_else(|| {
                    ClientError::BadOption("--failback-window START-END, e.g. 22-4".into())
                })?;
                spec.failback.window = Some((a.trim().parse()?, b.trim().parse()?));
            }
        }
        if let Some(a) = &self.anti_affinity {
            spec.anti_affinity = a.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(n) = self.failover_threshold {
            spec.failover_threshold = n;
        }
        if let Some(n) = self.failover_period {
            spec.failover_period_secs = n;
        }
        if let Some(e) = self.evs {
            spec.exchange_virtual_server = e;
        }
        Ok(())
    }
}

/// Resource properties to change; `None` (or no props) leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct ResourceOpts {
    /// The group the resource belongs to.
    pub group: Option<String>,
    /// The resource type's name (`ResourceType::parse`).
    pub kind: Option<String>,
    /// Properties, `KEY=VALUE`.
    pub props: Vec<String>,
    /// Resources it depends on (empty names dropped).
    pub depends_on: Option<Vec<String>>,
    /// Nodes that may host it (empty names dropped).
    pub possible_owners: Option<Vec<String>>,
    pub looks_alive_ms: Option<u64>,
    pub is_alive_ms: Option<u64>,
    pub restart_threshold: Option<u32>,
    pub restart_period: Option<u64>,
    pub pending_timeout: Option<u64>,
}

impl ResourceOpts {
    /// Writes the given options into `spec`.
    pub fn apply(&self, spec: &mut ResourceSpec) -> Result<(), ClientError> {
        if let Some(g) = &self.group {
            spec.group = g.clone();
        }
        if let Some(k) = &self.kind {
            spec.kind = ResourceType::parse(k).ok_or_else(|| {
                ClientError::BadOption(format!(
                    "unknown resource type {k:?} ({})",
                    ResourceType::ALL.map(|t| t.name()).join(", ")
                ))
            })?;
        }
        for p in &self.props {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| ClientError::BadOption(format!("--prop {p:?}: use KEY=VALUE")))?;
            spec.properties.insert(k.trim().to_string(), v.to_string());
        }
        if let Some(d) = &self.depends_on {
            spec.depends_on = d.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(p) = &self.possible_owners {
            spec.possible_owners = p.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(v) = self.looks_alive_ms {
            spec.looks_alive_ms = v;
        }
        if let Some(v) = self.is_alive_ms {
            spec.is_alive_ms = v;
        }
        if let Some(v) = self.restart_threshold {
            spec.restart_threshold = v;
        }
        if let Some(v) = self.restart_period {
            spec.restart_period_secs = v;
        }
        if let Some(v) = self.pending_timeout {
            spec.pending_timeout_secs = v;
        }
        Ok(())
    }
}

/// A change to a resource group (`POST /group`).
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// A new group with the options given over the defaults.
    Create {
        name: String,
        opts: GroupOpts,
    },
    /// The group's current spec with the options given.
    Set {
        name: String,
        opts: GroupOpts,
    },
    /// Delete an empty group.
    Delete {
        name: String,
    },
    /// Move to a node, or to the best possible other node.
    Move {
        name: String,
        to: Option<String>,
    },
    Online {
        name: String,
    },
    Offline {
        name: String,
    },
}

/// A change to a resource (`POST /resource`).
#[derive(Debug, Clone)]
pub enum ResourceChange {
    /// A new resource; `opts.group` and `opts.kind` are required.
    Create {
        name: String,
        opts: ResourceOpts,
    },
    /// The resource's current spec with the options given.
    Set {
        name: String,
        opts: ResourceOpts,
    },
    Delete {
        name: String,
    },
    /// Make `name` depend on `on`, a resource of its group.
    Depend {
        name: String,
        on: String,
    },
    /// Report the resource failed (a restart or failover follows).
    Fail {
        name: String,
    },
    Online {
        name: String,
    },
    Offline {
        name: String,
    },
}

/// What a virtual server is made of (`busrig cluster evs create`).
#[derive(Debug, Clone)]
pub struct EvsOpts {
    pub name: String,
    /// The virtual server's IP address.
    pub ip: String,
    /// The data LUNs' iSCSI URLs; the first holds the store.
    pub disks: Vec<String>,
    /// The mail store's SMTP port on the IP address.
    pub port: u16,
    /// Preferred owners, most preferred first.
    pub preferred: Vec<String>,
    /// AntiAffinityClassNames.
    pub anti_affinity: Vec<String>,
    /// Whether failback is allowed.
    pub failback_allow: bool,
    /// The busrig binary the store's command runs.
    pub bin: String,
}

/// One entry of the cluster event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix time in milliseconds.
    pub ms: u64,
    /// The node that logged it.
    pub node: String,
    pub text: String,
}

/// The cluster event log in a database snapshot, oldest first (keys
/// `event/<ms>-<node>-<n>`, `crate::host::EVENT_PREFIX`).
pub fn events(db: &DbSnapshot) -> Vec<Event> {
    db.entries
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(crate::host::EVENT_PREFIX)?;
            let mut it = rest.splitn(3, '-');
            let ms: u64 = it.next()?.parse().ok()?;
            let node = it.next()?.to_string();
            Some(Event {
                ms,
                node,
                text: v.clone(),
            })
        })
        .collect()
}

/// Where the nodes are and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addrs: Vec<String>,
    secret: Option<String>,
    cluster: Option<String>,
}

impl AdminClient {
    /// The nodes `addrs`, then every node of the cluster file `cfg` (whose
    /// secret and name are used); at least one node is needed.
    pub fn new(addrs: Vec<String>, cfg: Option<&ClusterConfig>) -> Result<Self, ClientError> {
        let mut addrs = addrs;
        if let Some(c) = cfg {
            addrs.extend(c.nodes.iter().map(|n| n.admin.to_string()));
        }
        if addrs.is_empty() {
            return Err(ClientError::NoNodes);
        }
        Ok(AdminClient {
            addrs,
            secret: cfg.map(|c| c.secret.clone()),
            cluster: cfg.map(|c| c.name.clone()),
        })
    }

    /// The cluster secret: [`admin::request`] presents the admin
    /// credential derived from it.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// The first member's status, or the first answer when no member
    /// answers; the error of every node when none answers.
    pub async fn status(&self) -> Result<(String, ClusterStatus), ClientError> {
        let mut first: Option<(String, ClusterStatus)> = None;
        let mut errors = Vec::new();
        for addr in &self.addrs {
            match admin::status(addr, self.secret()).await {
                Ok(s) if s.member => return Ok((addr.clone(), s)),
                Ok(s) => {
                    first.get_or_insert((addr.clone(), s));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        first.ok_or(ClientError::NoAnswer(errors))
    }

    /// The cluster's name: the cluster file's, or the answering node's.
    pub async fn cluster_name(&self) -> Result<String, ClientError> {
        match &self.cluster {
            Some(c) => Ok(c.clone()),
            None => Ok(self.status().await?.1.cluster),
        }
    }

    /// Sends a request to a member, following a redirect to the owner.
    pub async fn to_member(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let (addr, _) = self.status().await?;
        match admin::request(&addr, method, path, Some(body), self.secret()).await {
            Err(AdminError::Refused {
                status: 409,
                body: b,
                ..
            }) if b.get("owner_admin").and_then(Value::as_str).is_some() => {
                let owner = b["owner_admin"].as_str().unwrap_or_default().to_string();
                Ok(admin::request(&owner, method, path, Some(body), self.secret()).await?)
            }
            r => Ok(r?),
        }
    }

    /// A GET of `path` from a member.
    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let (addr, _) = self.status().await?;
        Ok(admin::request(&addr, "GET", path, None, self.secret()).await?)
    }

    /// The cluster database.
    pub async fn db(&self) -> Result<DbSnapshot, ClientError> {
        let v = self.get("/db").await?;
        serde_json::from_value(v).map_err(ClientError::BadDb)
    }

    /// The groups and resources with their states (`admin::catalog_json`).
    pub async fn catalog(&self) -> Result<Value, ClientError> {
        self.get("/catalog").await
    }

    /// The address a network name resource registered (`GET /resolve`).
    pub async fn resolve(&self, name: &str) -> Result<Value, ClientError> {
        self.get(&format!("/resolve?name={}", url_escape(name)))
            .await
    }

    /// Pauses, resumes or evicts `node` (`action` is `pause`, `resume` or
    /// `evict`).
    pub async fn node_action(&self, action: &str, node: &str) -> Result<Value, ClientError> {
        self.to_member("POST", "/node", &json!({ "action": action, "node": node }))
            .await
    }

    /// Applies one group change; the owner's answer.
    pub async fn group(&self, change: &GroupChange) -> Result<Value, ClientError> {
        let body = match change {
            GroupChange::Create { name, opts } => {
                let mut spec = GroupSpec::default();
                opts.apply(&mut spec)?;
                json!({"action": "create", "name": name, "spec": spec})
            }
            GroupChange::Set { name, opts } => {
                let c = self.catalog().await?;
                let cur = c["groups"]
                    .get(name)
                    .ok_or_else(|| ClientError::NoGroup(name.clone()))?;
                let mut spec: GroupSpec = serde_json::from_value(cur["spec"].clone())?;
                opts.apply(&mut spec)?;
                json!({"action": "set", "name": name, "spec": spec})
            }
            GroupChange::Delete { name } => json!({"action": "delete", "name": name}),
            GroupChange::Move { name, to } => json!({"action": "move", "name": name, "to": to}),
            GroupChange::Online { name } => json!({"action": "online", "name": name}),
            GroupChange::Offline { name } => json!({"action": "offline", "name": name}),
        };
        self.to_member("POST", "/group", &body).await
    }

    /// Applies one resource change; the owner's answer.
    pub async fn resource(&self, change: &ResourceChange) -> Result<Value, ClientError> {
        let body = match change {
            ResourceChange::Create { name, opts } => {
                let group = opts
                    .group
                    .clone()
                    .ok_or_else(|| ClientError::BadOption("--group is required".into()))?;
                let kind = opts
                    .kind
                    .as_deref()
                    .ok_or_else(|| ClientError::BadOption("--type is required".into()))?;
                let kind = ResourceType::parse(kind).ok_or_else(|| {
                    ClientError::BadOption(format!("unknown resource type {kind:?}"))
                })?;
                let mut spec = ResourceSpec::new(&group, kind);
                opts.apply(&mut spec)?;
                json!({"action": "create", "name": name, "spec": spec})
            }
            ResourceChange::Set { name, opts } => {
                let c = self.catalog().await?;
                let cur = c["resources"]
                    .get(name)
                    .ok_or_else(|| ClientError::NoResource(name.clone()))?;
                let mut spec: ResourceSpec = serde_json::from_value(cur["spec"].clone())?;
                opts.apply(&mut spec)?;
                json!({"action": "set", "name": name, "spec": spec})
            }
            ResourceChange::Delete { name } => json!({"action": "delete", "name": name}),
            ResourceChange::Depend { name, on } => {
                json!({"action": "depend", "name": name, "on": on})
            }
            ResourceChange::Online { name } => json!({"action": "online", "name": name}),
            ResourceChange::Offline { name } => json!({"action": "offline", "name": name}),
            ResourceChange::Fail { name } => json!({"action": "fail", "name": name}),
        };
        self.to_member("POST", "/resource", &body).await
    }

    /// Commits one database change as a global update; the owner's answer
    /// (with the update's `seq`).
    pub async fn db_change(&self, change: &Change) -> Result<Value, ClientError> {
        self.to_member("POST", "/db", &db_body(change)).await
    }

    /// Creates the virtual server's group and resources (`evs_requests`).
    pub async fn create_evs(&self, o: &EvsOpts) -> Result<(), ClientError> {
        let spec = GroupSpec {
            preferred_owners: o.preferred.clone(),
            anti_affinity: o.anti_affinity.clone(),
            failback: Failback {
                allow: o.failback_allow,
                window: None,
            },
            exchange_virtual_server: true,
            ..GroupSpec::default()
        };
        for (kind, body) in evs_requests(&o.name, &o.ip, &o.disks, o.port, &o.bin, spec) {
            self.to_member("POST", kind, &body)
                .await
                .map_err(|e| ClientError::Creating {
                    name: body["name"].to_string(),
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    /// Brings the database to `want` as global updates, one per
    /// difference; the number of changes applied.
    pub async fn restore(&self, want: &DbSnapshot) -> Result<usize, ClientError> {
        let have = self.db().await?;
        let changes = diff(&have, want);
        for (i, c) in changes.iter().enumerate() {
            self.db_change(c)
                .await
                .map_err(|e| ClientError::RestoreStopped {
                    done: i,
                    total: changes.len(),
                    source: Box::new(e),
                })?;
        }
        Ok(changes.len())
    }
}

/// The `POST /db` body of a change.
fn db_body(c: &Change) -> Value {
    match c {
        Change::Put { key, value } => json!({ "op": "put", "key": key, "value": value }),
        Change::Delete { key } => json!({ "op": "delete", "key": key }),
        Change::CompareAndSet { key, expect, value } => {
            json!({ "op": "cas", "key": key, "expect": expect, "value": value })
        }
    }
}

/// The admin requests that create virtual server `name`: the group, then
/// its resources with dependencies as the seeds show them (name on IP;
/// the store on name and disks).
pub fn evs_requests(
    name: &str,
    ip: &str,
    disks: &[String],
    port: u16,
    bin: &str,
    spec: GroupSpec,
) -> Vec<(&'static str, Value)> {
    let mut out = vec![(
        "/group",
        json!({"action": "create", "name": name, "spec": spec}),
    )];
    let res = |r: String, kind: ResourceType, deps: Vec<String>, props: Vec<(&str, String)>| {
        let mut s = ResourceSpec::new(name, kind);
        s.depends_on = deps;
        s.properties = props.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if kind == ResourceType::GenericApplication {
            s.looks_alive_ms = 500;
            s.is_alive_ms = 2000;
        }
        (
            "/resource",
            json!({"action": "create", "name": r, "spec": s}),
        )
    };
    let ip_r = format!("{name}-IP");
    let name_r = format!("{name}-Name");
    out.push(res(
        ip_r.clone(),
        ResourceType::IpAddress,
        vec![],
        vec![("address", ip.to_string())],
    ));
    out.push(res(
        name_r.clone(),
        ResourceType::NetworkName,
        vec![ip_r],
        vec![("name", name.to_ascii_lowercase())],
    ));
    let mut deps = vec![name_r];
    for (i, d) in disks.iter().enumerate() {
        let r = format!("{name}-Disk{}", i + 1);
        out.push(res(
            r.clone(),
            ResourceType::PhysicalDisk,
            vec![],
            vec![("disk", d.clone())],
        ));
        deps.push(r);
    }
    out.push(res(
        format!("{name}-Store"),
        ResourceType::GenericApplication,
        deps,
        vec![
            (
                "command",
                format!("exec {bin} mailstore --disk \"$BUSRIG_DISK\" --listen {ip}:{port}"),
            ),
            ("probe-tcp", format!("{ip}:{port}")),
        ],
    ));
    out
}

/// Percent-encodes a query value (RFC 3986 §2.3 unreserved characters
/// pass through).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nodes_is_an_error() {
        assert!(matches!(
            AdminClient::new(vec![], None),
            Err(ClientError::NoNodes)
        ));
    }

    #[test]
    fn group_opts_apply_only_what_is_given() {
        let mut spec = GroupSpec::default();
        let before = spec.failover_threshold;
        GroupOpts {
            preferred: Some(vec!["n2".into(), String::new(), "n1".into()]),
            failback: Some("allow".into()),
            failback_window: Some("22-4".into()),
            ..GroupOpts::default()
        }
        .apply(&mut spec)
        .unwrap();
        assert_eq!(spec.preferred_owners, ["n2", "n1"]);
        assert!(spec.failback.allow);
        assert_eq!(spec.failback.window, Some((22, 4)));
        assert_eq!(spec.failover_threshold, before);
    }

    #[test]
    fn bad_options_are_errors() {
        let mut g = GroupSpec::default();
        let e = GroupOpts {
            failback_window: Some("22".into()),
            ..GroupOpts::default()
        }
        .apply(&mut g)
        .unwrap_err();
        assert_eq!(e.to_string(), "--failback-window START-END, e.g. 22-4");
        let mut r = ResourceSpec::new("g", ResourceType::IpAddress);
        let e = ResourceOpts {
            props: vec!["x".into()],
            ..ResourceOpts::default()
        }
        .apply(&mut r)
        .unwrap_err();
        assert_eq!(e.to_string(), "--prop \"x\": use KEY=VALUE");
    }

    #[test]
    fn evs_requests_lay_out_the_seeds_dependencies() {
        let reqs = evs_requests(
            "EVS1",
            "127.0.2.1",
            &["iscsi://a/1".into()],
            2525,
            "/bin/busrig",
            GroupSpec::default(),
        );
        let names: Vec<&str> = reqs
            .iter()
            .map(|(_, b)| b["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["EVS1", "EVS1-IP", "EVS1-Name", "EVS1-Disk1", "EVS1-Store"]
        );
        assert_eq!(reqs[2].1["spec"]["depends-on"], json!(["EVS1-IP"]));
        assert_eq!(
            reqs[4].1["spec"]["depends-on"],
            json!(["EVS1-Name", "EVS1-Disk1"])
        );
    }

    #[test]
    fn events_parse_their_keys() {
        let mut db = DbSnapshot::default();
        db.entries
            .insert("event/1000-n1-0".into(), "group G online".into());
        db.entries.insert("group/G/spec".into(), "{}".into());
        assert_eq!(
            events(&db),
            [Event {
                ms: 1000,
                node: "n1".into(),
                text: "group G online".into()
            }]
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(url_escape("a b/c~"), "a%20b%2Fc~");
    }
}
