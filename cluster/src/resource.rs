//! Resources and groups as the cluster database holds them, and the rules
//! a change must pass before it becomes a global update.
//!
//! Keys (values are JSON unless noted):
//!
//! ```text
//! group/G/spec        GroupSpec            administrator
//! group/G/target      "online"|"offline"   administrator (default online)
//! group/G/owner       node name (text)     Failover Manager, `group move`
//! group/G/state       GroupState           the owner's Resource Monitor
//! group/G/failovers   [ms, ...]            Failover Manager (threshold window)
//! resource/R/spec     ResourceSpec         administrator
//! resource/R/state    ResourceState        the owner's Resource Monitor
//! resource/R/fail     counter (text)       `resource fail`: the owner fails it once per increment
//! resource/R/target   "online"|"offline"   administrator (default online)
//! name/NAME           address (text)       network-name resources
//! name/NAME/node      node name (text)     the node that registered NAME
//! ```
//!
//! A group's resources are the resources whose spec names it. Dependencies
//! stay inside one group and form a DAG; [`Catalog::check_resource`]
//! refuses anything else with a message that says what is wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::db::{Change, DbSnapshot};

/// The default cluster group (cluster IP, name and quorum disk in Windows);
/// docs/semantics.md "Exchange rules": nothing of a virtual server lives in it.
pub const DEFAULT_GROUP: &str = "Cluster Group";

/// Resource Monitor defaults (docs/semantics.md "Timing profiles").
pub const LOOKS_ALIVE_MS: u64 = 5_000;
pub const IS_ALIVE_MS: u64 = 60_000;
pub const RESTART_THRESHOLD: u32 = 3;
pub const RESTART_PERIOD_SECS: u64 = 900;
pub const FAILOVER_THRESHOLD: u32 = 10;
pub const FAILOVER_PERIOD_SECS: u64 = 6 * 3600;
pub const PENDING_TIMEOUT_SECS: u64 = 180;

fn d_looks() -> u64 {
    LOOKS_ALIVE_MS
}
fn d_is() -> u64 {
    IS_ALIVE_MS
}
fn d_rt() -> u32 {
    RESTART_THRESHOLD
}
fn d_rp() -> u64 {
    RESTART_PERIOD_SECS
}
fn d_ft() -> u32 {
    FAILOVER_THRESHOLD
}
fn d_fp() -> u64 {
    FAILOVER_PERIOD_SECS
}
fn d_pending() -> u64 {
    PENDING_TIMEOUT_SECS
}

/// Failback: `prevent`, or `allow` at once or inside `[start, end)` hours
/// (UTC, 0..=23; a window may wrap midnight).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Failback {
    #[serde(default)]
    pub allow: bool,
    #[serde(default)]
    pub window: Option<(u8, u8)>,
}

/// What the administrator says about a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupSpec {
    /// Preferred owners, most preferred first.
    #[serde(default)]
    pub preferred_owners: Vec<String>,
    #[serde(default)]
    pub failback: Failback,
    /// AntiAffinityClassNames.
    #[serde(default)]
    pub anti_affinity: Vec<String>,
    #[serde(default = "d_ft")]
    pub failover_threshold: u32,
    #[serde(default = "d_fp")]
    pub failover_period_secs: u64,
    /// An Exchange virtual server (checked by `busrig cluster validate`).
    #[serde(default)]
    pub exchange_virtual_server: bool,
}

impl Default for GroupSpec {
    fn default() -> Self {
        GroupSpec {
            preferred_owners: Vec::new(),
            failback: Failback::default(),
            anti_affinity: Vec::new(),
            failover_threshold: FAILOVER_THRESHOLD,
            failover_period_secs: FAILOVER_PERIOD_SECS,
            exchange_virtual_server: false,
        }
    }
}

/// Resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    /// A data LUN owned exclusively: property `disk` (iSCSI URL).
    PhysicalDisk,
    /// A virtual address: property `address` (an IP the owner binds).
    IpAddress,
    /// A name in the cluster's name table: property `name`; depends on an
    /// ip-address resource of its group.
    NetworkName,
    /// A child process: property `command` (run by `sh -c`), optional
    /// `probe-command` or `probe-tcp` (HOST:PORT) for IsAlive.
    GenericApplication,
    /// A script called with `online`, `offline`, `looks-alive`, `is-alive`:
    /// property `script`.
    GenericScript,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::PhysicalDisk,
        ResourceType::IpAddress,
        ResourceType::NetworkName,
        ResourceType::GenericApplication,
        ResourceType::GenericScript,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::PhysicalDisk => "physical-disk",
            ResourceType::IpAddress => "ip-address",
            ResourceType::NetworkName => "network-name",
            ResourceType::GenericApplication => "generic-application",
            ResourceType::GenericScript => "generic-script",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// What a resource of this type is and does, in one sentence.
    pub fn summary(self) -> &'static str {
        match self {
            ResourceType::PhysicalDisk => {
                "A data LUN the owning node holds exclusively: challenge and defense on that \
                 LUN alone (LUN reset), an ownership stamp on its last block at IsAlive; \
                 applications of the group reach it through the node ($BUSRIG_DISK_<RESOURCE>)."
            }
            ResourceType::IpAddress => {
                "A virtual IP address the owning node claims with a bound socket \
                 ($BUSRIG_IP_<RESOURCE>, and $BUSRIG_IP for the group's first)."
            }
            ResourceType::NetworkName => {
                "A name in the cluster's name table (busrig cluster resolve NAME) pointing \
                 at the address of the ip-address resource it depends on."
            }
            ResourceType::GenericApplication => {
                "A child process run by sh -c in its own process group that dies with its \
                 node; LooksAlive checks it runs, IsAlive runs the probe."
            }
            ResourceType::GenericScript => {
                "A script called as SCRIPT online|offline|looks-alive|is-alive; exit status \
                 0 is success."
            }
        }
    }

    /// Every property the type understands, required ones first
    /// (`busrig cluster resource types`, README "Resource types").
    pub fn properties(self) -> &'static [PropertyDoc] {
        match self {
            ResourceType::PhysicalDisk => PHYSICAL_DISK_PROPS,
            ResourceType::IpAddress => IP_ADDRESS_PROPS,
            ResourceType::NetworkName => NETWORK_NAME_PROPS,
            ResourceType::GenericApplication => GENERIC_APPLICATION_PROPS,
            ResourceType::GenericScript => GENERIC_SCRIPT_PROPS,
        }
    }

    /// A command that creates one (group G, on a lab), for the help and
    /// the README.
    pub fn example(self) -> &'static str {
        match self {
            ResourceType::PhysicalDisk => {
                "busrig cluster --lab DIR resource create G-Disk --group G --type physical-disk \
                 --prop disk=iscsi://127.0.0.1:3260/iqn.2026-11.io.busrig:bus0/1"
            }
            ResourceType::IpAddress => {
                "busrig cluster --lab DIR resource create G-IP --group G --type ip-address \
                 --prop address=127.0.2.1"
            }
            ResourceType::NetworkName => {
                "busrig cluster --lab DIR resource create G-Name --group G --type network-name \
                 --prop name=g --depends-on G-IP"
            }
            ResourceType::GenericApplication => {
                "busrig cluster --lab DIR resource create G-App --group G --type generic-application \
                 --prop 'command=exec busrig echo-server --listen $BUSRIG_IP:7000' \
                 --prop probe-tcp=127.0.2.1:7000 --depends-on G-IP,G-Disk"
            }
            ResourceType::GenericScript => {
                "busrig cluster --lab DIR resource create G-Script --group G --type generic-script \
                 --prop script=/usr/local/bin/g-resource.sh"
            }
        }
    }

    /// Properties that must be set.
    pub fn required(self) -> impl Iterator<Item = &'static str> {
        self.properties()
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
    }

    /// Whether the type understands property `name`.
    pub fn knows(self, name: &str) -> bool {
        self.properties().iter().any(|p| p.name == name)
    }

    /// Every property name the type understands, comma-separated.
    pub fn known_list(self) -> String {
        let names: Vec<&str> = self.properties().iter().map(|p| p.name).collect();
        names.join(", ")
    }
}

const fn req(name: &'static str, what: &'static str) -> PropertyDoc {
    PropertyDoc {
        name,
        required: true,
        what,
    }
}

const fn opt(name: &'static str, what: &'static str) -> PropertyDoc {
    PropertyDoc {
        name,
        required: false,
        what,
    }
}

const PHYSICAL_DISK_PROPS: &[PropertyDoc] = &[req(
    "disk",
    "the LUN's iSCSI URL, iscsi://host[:port]/target-iqn/lun",
)];
const IP_ADDRESS_PROPS: &[PropertyDoc] = &[req("address", "an IPv4 or IPv6 address")];
const NETWORK_NAME_PROPS: &[PropertyDoc] = &[req(
    "name",
    "the name to register (the resource must depend on an ip-address resource of its group)",
)];
const GENERIC_APPLICATION_PROPS: &[PropertyDoc] = &[
    req("command", "a shell command line, run by sh -c"),
    opt(
        "probe-tcp",
        "IP:PORT; IsAlive connects to it (tried before probe-command)",
    ),
    opt(
        "probe-command",
        "a shell command; IsAlive passes when it exits 0",
    ),
    opt("cwd", "the folder the command starts in"),
];
const GENERIC_SCRIPT_PROPS: &[PropertyDoc] = &[req(
    "script",
    "path of an executable called with online, offline, looks-alive or is-alive",
)];

/// One property of a resource type: its name, whether it must be set, and
/// what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyDoc {
    pub name: &'static str,
    pub required: bool,
    pub what: &'static str,
}

/// Every resource type with what it is, its properties and an example
/// (`busrig cluster resource types`): the same facts the checks use.
pub fn type_reference() -> String {
    let mut out = String::new();
    for t in ResourceType::ALL {
        out += &format!("{}\n  {}\n  properties:\n", t.name(), t.summary());
        let width = t
            .properties()
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0);
        for p in t.properties() {
            let need = if p.required { "required" } else { "optional" };
            out += &format!("    {:width$}  {need}  {}\n", p.name, p.what);
        }
        out += &format!("  example:\n    {}\n\n", t.example());
    }
    out += "Every type also takes --depends-on, --possible-owners, --looks-alive-ms, \
            --is-alive-ms, --restart-threshold, --restart-period and --pending-timeout \
            (busrig cluster resource create --help).\n";
    out
}

/// What the administrator says about a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResourceSpec {
    pub group: String,
    #[serde(rename = "type")]
    pub kind: ResourceType,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Nodes that may host it; empty: every node.
    #[serde(default)]
    pub possible_owners: Vec<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default = "d_looks")]
    pub looks_alive_ms: u64,
    #[serde(default = "d_is")]
    pub is_alive_ms: u64,
    #[serde(default = "d_rt")]
    pub restart_threshold: u32,
    #[serde(default = "d_rp")]
    pub restart_period_secs: u64,
    #[serde(default = "d_pending")]
    pub pending_timeout_secs: u64,
    /// Whether using up the restart threshold fails the group (MSCS's
    /// "Affect the group"); when false the resource stays failed and the
    /// group stays online. Stored only when false.
    #[serde(default = "d_affects", skip_serializing_if = "is_true")]
    pub affects_group: bool,
}

fn d_affects() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ResourceSpec {
    /// A spec with the defaults.
    pub fn new(group: &str, kind: ResourceType) -> ResourceSpec {
        ResourceSpec {
            group: group.into(),
            kind,
            depends_on: Vec::new(),
            possible_owners: Vec::new(),
            properties: BTreeMap::new(),
            looks_alive_ms: LOOKS_ALIVE_MS,
            is_alive_ms: IS_ALIVE_MS,
            restart_threshold: RESTART_THRESHOLD,
            restart_period_secs: RESTART_PERIOD_SECS,
            pending_timeout_secs: PENDING_TIMEOUT_SECS,
            affects_group: true,
        }
    }

    pub fn prop(&self, k: &str) -> Option<&str> {
        self.properties.get(k).map(String::as_str)
    }
}

/// A group's condition as its owner's Resource Monitor reports it. The
/// serde names are the database and admin JSON form (kebab-case words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupStatus {
    /// Every resource wanted online is online.
    Online,
    /// The group is down on the reporting node.
    Offline,
    /// The owner is bringing the resources online.
    Pending,
    /// The owner is taking the resources offline.
    OfflinePending,
    /// Some resources are online, others are not.
    PartiallyOnline,
    /// A resource used up its restart threshold (or the Failover Manager
    /// stopped moving the group): it stays down until it moves.
    Failed,
}

impl GroupStatus {
    /// The JSON word, for the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Online => "online",
            GroupStatus::Offline => "offline",
            GroupStatus::Pending => "pending",
            GroupStatus::OfflinePending => "offline-pending",
            GroupStatus::PartiallyOnline => "partially-online",
            GroupStatus::Failed => "failed",
        }
    }

    /// Down for good on the reporting node: a new owner need not wait for it.
    pub fn is_down(self) -> bool {
        matches!(self, GroupStatus::Offline | GroupStatus::Failed)
    }
}

impl std::fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource's condition as its owner's Resource Monitor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceStatus {
    /// Online and passing its LooksAlive/IsAlive polls.
    Online,
    /// Offline on the reporting node.
    Offline,
    /// Being brought online.
    OnlinePending,
    /// Being taken offline.
    OfflinePending,
    /// Did not come online, or failed a poll.
    Failed,
}

impl ResourceStatus {
    /// The JSON word, for the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceStatus::Online => "online",
            ResourceStatus::Offline => "offline",
            ResourceStatus::OnlinePending => "online-pending",
            ResourceStatus::OfflinePending => "offline-pending",
            ResourceStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The administrator's intent for a group or resource (`group/G/target`,
/// `resource/R/target`, plain text). The serde names are the words the
/// database holds and `GET /catalog` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Keep it online where it is owned (the default: no key written).
    #[default]
    Online,
    /// Keep it offline until the administrator brings it online.
    Offline,
}

impl Target {
    /// The database word.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Online => "online",
            Target::Offline => "offline",
        }
    }

    /// Reads a stored value. Only `offline` takes a group or resource
    /// down: any other text leaves it at the default, online, so an
    /// unreadable value never stops a service.
    pub fn from_word(v: &str) -> Target {
        if v == Target::Offline.as_str() {
            Target::Offline
        } else {
            Target::Online
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group's state as its owner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupState {
    pub state: GroupStatus,
    /// The node reporting it.
    pub node: String,
    /// Why, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A resource's state as its owner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ResourceState {
    pub state: ResourceStatus,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One group with everything the database says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRecord {
    pub spec: GroupSpec,
    /// Administrator's intent: online unless set offline.
    pub target: Target,
    pub owner: Option<String>,
    pub state: Option<GroupState>,
    /// Failover times (ms since the Unix epoch) inside the threshold window.
    pub failovers: Vec<u64>,
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub spec: ResourceSpec,
    pub state: Option<ResourceState>,
    /// How many `resource fail` requests were made; each increment makes
    /// the owner treat the resource as failed once.
    pub fail_request: Option<String>,
    /// Administrator's intent: online unless set offline (`resource
    /// offline`); resources depending on an offline one stay offline too.
    pub target: Target,
}

/// The groups and resources of a database snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub groups: BTreeMap<String, GroupRecord>,
    pub resources: BTreeMap<String, ResourceRecord>,
    /// NAME -> address, from network-name resources.
    pub names: BTreeMap<String, String>,
}

/// Keys.
pub fn group_key(g: &str, field: &str) -> String {
    format!("group/{g}/{field}")
}
pub fn resource_key(r: &str, field: &str) -> String {
    format!("resource/{r}/{field}")
}
pub fn name_key(n: &str) -> String {
    format!("name/{}", n.to_ascii_lowercase())
}

/// Who registered network name `n`: the same address is registered by
/// every node that hosts the name, so only this tells whose it is.
pub fn name_node_key(n: &str) -> String {
    format!("{}/node", name_key(n))
}

/// A put of `v` as JSON.
pub fn put_json<T: Serialize>(key: String, v: &T) -> Change {
    Change::Put {
        key,
        value: serde_json::to_string(v).expect("plain data serializes"),
    }
}

/// Why a group or resource change was refused before it became a global
/// update; the admin endpoint answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A name that is empty or longer than 64 characters.
    #[error("{what} name must be 1 to 64 characters")]
    NameLength { what: &'static str },
    /// A name with characters other than letters, digits, `-`, `_`, `.` and spaces.
    #[error("{what} name {name:?} may only use letters, digits, '-', '_', '.' and spaces")]
    NameCharacters { what: &'static str, name: String },
    /// A preferred owner that is not a configured node.
    #[error("preferred owner {0:?} is not a node of this cluster")]
    UnknownPreferredOwner(String),
    /// A failback window hour outside 0..=23.
    #[error("failback window {0}..{1}: hours are 0 to 23")]
    FailbackWindow(u8, u8),
    /// A zero failover threshold or period.
    #[error("failover threshold and period must be greater than 0")]
    ZeroFailoverThreshold,
    /// A resource of a group that does not exist.
    #[error("no group {0:?}")]
    NoGroup(String),
    /// A required property of the resource type is missing or blank.
    #[error("a {kind} resource needs the property {property}")]
    MissingProperty {
        kind: &'static str,
        property: &'static str,
    },
    /// A property the resource type does not know.
    #[error("{kind} resources have no property {property:?} (known: {known})")]
    UnknownProperty {
        kind: &'static str,
        property: String,
        known: String,
    },
    /// An `address` property that is not an IP address.
    #[error("address {0:?} is not an IP address")]
    BadAddress(String),
    /// A `probe-tcp` property that is not a socket address.
    #[error("probe-tcp {0:?} is not IP:PORT")]
    BadProbeTcp(String),
    /// A zero poll interval or pending timeout.
    #[error("poll intervals and the pending timeout must be greater than 0")]
    ZeroPollInterval,
    /// A possible owner that is not a configured node.
    #[error("possible owner {0:?} is not a node of this cluster")]
    UnknownPossibleOwner(String),
    /// A resource that depends on itself.
    #[error("{0} cannot depend on itself")]
    SelfDependency(String),
    /// A dependency on a resource that does not exist.
    #[error("{name} depends on {on:?}, which does not exist")]
    NoSuchDependency { name: String, on: String },
    /// A dependency across groups.
    #[error("{name} (group {group}) cannot depend on {on} (group {on_group}): dependencies stay inside one group")]
    CrossGroupDependency {
        name: String,
        group: String,
        on: String,
        on_group: String,
    },
    /// Dependencies that lead back to the resource.
    #[error("dependency cycle through {0}")]
    DependencyCycle(String),
    /// A network name without an ip-address dependency in its group.
    #[error("network name {name} must depend on an ip-address resource of group {group}")]
    NameWithoutAddress { name: String, group: String },
    /// Moving a resource to another group would strand its dependents.
    #[error("{name} has dependents in group {group}; remove them first")]
    HasDependents { name: String, group: String },
}

/// Names: letters, digits, `-`, `_`, `.` and spaces (Windows allows
/// "Cluster Group"), no `/`.
pub fn check_name(what: &'static str, n: &str) -> Result<(), CatalogError> {
    if n.trim().is_empty() || n.len() > 64 {
        return Err(CatalogError::NameLength { what });
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c))
    {
        return Err(CatalogError::NameCharacters {
            what,
            name: n.into(),
        });
    }
    Ok(())
}

impl Catalog {
    /// Reads the groups and resources out of `db`; entries that do not
    /// parse are skipped with a warning (they were checked when written).
    pub fn from_db(db: &DbSnapshot) -> Catalog {
        let mut c = Catalog::default();
        for (k, v) in &db.entries {
            let parts: Vec<&str> = k.splitn(3, '/').collect();
            match parts.as_slice() {
                ["group", g, "spec"] => match serde_json::from_str(v) {
                    Ok(spec) => {
                        let e = c.groups.entry(g.to_string()).or_default();
                        e.spec = spec;
                    }
                    Err(e) => tracing::warn!(key = %k, error = %e, "unreadable group spec"),
                },
                ["resource", r, "spec"] => match serde_json::from_str(v) {
                    Ok(spec) => {
                        c.resources.insert(
                            r.to_string(),
                            ResourceRecord {
                                spec,
                                state: None,
                                fail_request: None,
                                target: Target::Online,
                            },
                        );
                    }
                    Err(e) => tracing::warn!(key = %k, error = %e, "unreadable resource spec"),
                },
                ["name", n] => {
                    c.names.insert(n.to_string(), v.clone());
                }
                _ => {}
            }
        }
        for (k, v) in &db.entries {
            let parts: Vec<&str> = k.splitn(3, '/').collect();
            match parts.as_slice() {
                ["group", g, field] if *field != "spec" => {
                    if let Some(rec) = c.groups.get_mut(*g) {
                        match *field {
                            "target" => rec.target = Target::from_word(v),
                            "owner" => rec.owner = Some(v.clone()),
                            "state" => rec.state = serde_json::from_str(v).ok(),
                            "failovers" => {
                                rec.failovers = serde_json::from_str(v).unwrap_or_default()
                            }
                            _ => {}
                        }
                    }
                }
                ["resource", r, "state"] => {
                    if let Some(rec) = c.resources.get_mut(*r) {
                        rec.state = serde_json::from_str(v).ok();
                    }
                }
                ["resource", r, "target"] => {
                    if let Some(rec) = c.resources.get_mut(*r) {
                        rec.target = Target::from_word(v);
                    }
                }
                ["resource", r, "fail"] => {
                    if let Some(rec) = c.resources.get_mut(*r) {
                        rec.fail_request = Some(v.clone());
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The resources of group `g`, by name.
    pub fn members(&self, g: &str) -> Vec<(&String, &ResourceRecord)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.spec.group == g)
            .collect()
    }

    /// Group `g`'s resources in dependency order (dependencies first);
    /// offline is the reverse. Ties break by name, so every node computes
    /// the same order.
    pub fn online_order(&self, g: &str) -> Vec<String> {
        let members: BTreeMap<&String, &ResourceRecord> = self.members(g).into_iter().collect();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < members.len() {
            let before = out.len();
            for (name, r) in &members {
                if done.contains(*name) {
                    continue;
                }
                if r.spec
                    .depends_on
                    .iter()
                    .all(|d| done.contains(d) || !members.contains_key(d))
                {
                    done.insert((*name).clone());
                    out.push((*name).clone());
                }
            }
            if out.len() == before {
                // A cycle slipped in (refused on write): add the rest by name.
                for name in members.keys() {
                    if done.insert((*name).clone()) {
                        out.push((*name).clone());
                    }
                }
            }
        }
        out
    }

    /// Checks a new or changed group spec.
    pub fn check_group(
        &self,
        name: &str,
        spec: &GroupSpec,
        nodes: &[String],
    ) -> Result<(), CatalogError> {
        check_name("group", name)?;
        for n in &spec.preferred_owners {
            if !nodes.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                return Err(CatalogError::UnknownPreferredOwner(n.clone()));
            }
        }
        if let Some((s, e)) = spec.failback.window {
            if s > 23 || e > 23 {
                return Err(CatalogError::FailbackWindow(s, e));
            }
        }
        if spec.failover_threshold == 0 || spec.failover_period_secs == 0 {
            return Err(CatalogError::ZeroFailoverThreshold);
        }
        Ok(())
    }

    /// Checks a new or changed resource `name` with `spec`: its group
    /// exists, its properties suit its type, its dependencies are in the same
    /// group and make no cycle, its possible owners are nodes.
    pub fn check_resource(
        &self,
        name: &str,
        spec: &ResourceSpec,
        nodes: &[String],
    ) -> Result<(), CatalogError> {
        check_name("resource", name)?;
        if !self.groups.contains_key(&spec.group) {
            return Err(CatalogError::NoGroup(spec.group.clone()));
        }
        // Unknown names first: a misspelt `adress` is reported as itself,
        // not as a missing `address`.
        for p in spec.properties.keys() {
            if !spec.kind.knows(p) {
                return Err(CatalogError::UnknownProperty {
                    kind: spec.kind.name(),
                    property: p.clone(),
                    known: spec.kind.known_list(),
                });
            }
        }
        for p in spec.kind.required() {
            if spec.prop(p).is_none_or(|v| v.trim().is_empty()) {
                return Err(CatalogError::MissingProperty {
                    kind: spec.kind.name(),
                    property: p,
                });
            }
        }
        if let Some(a) = spec.prop("address") {
            a.parse::<std::net::IpAddr>()
                .map_err(|_| CatalogError::BadAddress(a.into()))?;
        }
        if let Some(t) = spec.prop("probe-tcp") {
            t.parse::<std::net::SocketAddr>()
                .map_err(|_| CatalogError::BadProbeTcp(t.into()))?;
        }
        if spec.looks_alive_ms == 0 || spec.is_alive_ms == 0 || spec.pending_timeout_secs == 0 {
            return Err(CatalogError::ZeroPollInterval);
        }
        for n in &spec.possible_owners {
            if !nodes.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                return Err(CatalogError::UnknownPossibleOwner(n.clone()));
            }
        }
        for d in &spec.depends_on {
            if d == name {
                return Err(CatalogError::SelfDependency(name.into()));
            }
            match self.resources.get(d) {
                None => {
                    return Err(CatalogError::NoSuchDependency {
                        name: name.into(),
                        on: d.clone(),
                    })
                }
                Some(r) if r.spec.group != spec.group => {
                    return Err(CatalogError::CrossGroupDependency {
                        name: name.into(),
                        group: spec.group.clone(),
                        on: d.clone(),
                        on_group: r.spec.group.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        // A cycle: can `name` be reached from its own dependencies?
        let mut stack: Vec<&str> = spec.depends_on.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(r) = stack.pop() {
            if r == name {
                return Err(CatalogError::DependencyCycle(name.into()));
            }
            if seen.insert(r) {
                if let Some(rec) = self.resources.get(r) {
                    stack.extend(rec.spec.depends_on.iter().map(String::as_str));
                }
            }
        }
        if spec.kind == ResourceType::NetworkName {
            let on_ip = spec.depends_on.iter().any(|d| {
                self.resources
                    .get(d)
                    .is_some_and(|r| r.spec.kind == ResourceType::IpAddress)
            });
            if !on_ip {
                return Err(CatalogError::NameWithoutAddress {
                    name: name.into(),
                    group: spec.group.clone(),
                });
            }
        }
        // Changing a resource must not break one that depends on it.
        if let Some(old) = self.resources.get(name) {
            if old.spec.group != spec.group && self.dependents(name).next().is_some() {
                return Err(CatalogError::HasDependents {
                    name: name.into(),
                    group: old.spec.group.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether `r` should be online: its own target and every resource it
    /// depends on (transitively).
    pub fn wanted_online(&self, r: &str) -> bool {
        let mut stack = vec![r];
        let mut seen = BTreeSet::new();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            match self.resources.get(x) {
                Some(rec) if rec.target == Target::Online => {
                    stack.extend(rec.spec.depends_on.iter().map(String::as_str))
                }
                Some(_) => return false,
                None => {}
            }
        }
        true
    }

    /// Resources that depend on `name`.
    pub fn dependents<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r.spec.depends_on.iter().any(|d| d == name))
            .map(|(n, _)| n)
    }

    /// The address a name resolves to, if a network-name registered it.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        self.names
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin endpoint answers 400 with these messages word for word.
    #[test]
    fn catalog_error_messages() {
        assert_eq!(
            check_name("group", "").unwrap_err().to_string(),
            "group name must be 1 to 64 characters"
        );
        assert_eq!(
            check_name("resource", "a/b").unwrap_err().to_string(),
            "resource name \"a/b\" may only use letters, digits, '-', '_', '.' and spaces"
        );
        assert_eq!(
            CatalogError::CrossGroupDependency {
                name: "X".into(),
                group: "G1".into(),
                on: "IP".into(),
                on_group: "G2".into(),
            }
            .to_string(),
            "X (group G1) cannot depend on IP (group G2): dependencies stay inside one group"
        );
        assert_eq!(
            CatalogError::FailbackWindow(22, 24).to_string(),
            "failback window 22..24: hours are 0 to 23"
        );
    }

    /// `group/G/target` and `resource/R/target` hold plain words; only
    /// `offline` takes a group or resource down.
    #[test]
    fn target_words_in_the_database() {
        for (t, word) in [(Target::Online, "online"), (Target::Offline, "offline")] {
            assert_eq!(t.as_str(), word);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{word}\""));
            assert_eq!(Target::from_word(word), t);
        }
        assert_eq!(Target::from_word("garbage"), Target::Online);
        let mut db = DbSnapshot::default();
        db.entries.insert(
            group_key("G", "spec"),
            serde_json::to_string(&GroupSpec::default()).unwrap(),
        );
        db.entries
            .insert(group_key("G", "target"), "offline".into());
        assert_eq!(Catalog::from_db(&db).groups["G"].target, Target::Offline);
        db.entries.insert(group_key("G", "target"), "online".into());
        assert_eq!(Catalog::from_db(&db).groups["G"].target, Target::Online);
    }

    /// The states' JSON words are the database and admin wire form: the
    /// same bytes the string fields had.
    #[test]
    fn state_words_on_the_wire() {
        use GroupStatus as G;
        use ResourceStatus as R;
        for (g, word) in [
            (G::Online, "online"),
            (G::Offline, "offline"),
            (G::Pending, "pending"),
            (G::OfflinePending, "offline-pending"),
            (G::PartiallyOnline, "partially-online"),
            (G::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_string(&g).unwrap(), format!("\"{word}\""));
            assert_eq!(g.as_str(), word);
        }
        for (r, word) in [
            (R::Online, "online"),
            (R::Offline, "offline"),
            (R::OnlinePending, "online-pending"),
            (R::OfflinePending, "offline-pending"),
            (R::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{word}\""));
            assert_eq!(r.as_str(), word);
        }
        let st = GroupState {
            state: G::Failed,
            node: "NODE1".into(),
            reason: Some("x".into()),
        };
        let text = r#"{"state":"failed","node":"NODE1","reason":"x"}"#;
        assert_eq!(serde_json::to_string(&st).unwrap(), text);
        assert_eq!(serde_json::from_str::<GroupState>(text).unwrap(), st);
    }

    fn nodes() -> Vec<String> {
        vec!["NODE1".into(), "NODE2".into()]
    }

    fn db_with(entries: &[(&str, String)]) -> DbSnapshot {
        DbSnapshot {
            seq: 1,
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn res(group: &str, kind: ResourceType, deps: &[&str], props: &[(&str, &str)]) -> ResourceSpec {
        let mut s = ResourceSpec::new(group, kind);
        s.depends_on = deps.iter().map(|d| d.to_string()).collect();
        s.properties = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s
    }

    fn evs() -> Catalog {
        let g = serde_json::to_string(&GroupSpec::default()).unwrap();
        let ip = res(
            "EVS1",
            ResourceType::IpAddress,
            &[],
            &[("address", "127.0.1.1")],
        );
        let name = res(
            "EVS1",
            ResourceType::NetworkName,
            &["IP"],
            &[("name", "evs1")],
        );
        let disk = res(
            "EVS1",
            ResourceType::PhysicalDisk,
            &[],
            &[("disk", "iscsi://h/iqn.x:y/1")],
        );
        let app = res(
            "EVS1",
            ResourceType::GenericApplication,
            &["NAME", "DISK"],
            &[("command", "sleep 100")],
        );
        let j = |s: &ResourceSpec| serde_json::to_string(s).unwrap();
        Catalog::from_db(&db_with(&[
            ("group/EVS1/spec", g.clone()),
            ("group/OTHER/spec", g),
            ("group/EVS1/owner", "NODE2".into()),
            ("resource/IP/spec", j(&ip)),
            ("resource/NAME/spec", j(&name)),
            ("resource/DISK/spec", j(&disk)),
            ("resource/APP/spec", j(&app)),
            ("name/evs1", "127.0.1.1".into()),
        ]))
    }

    #[test]
    fn catalog_reads_groups_resources_and_names() {
        let c = evs();
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups["EVS1"].owner.as_deref(), Some("NODE2"));
        assert_eq!(c.groups["EVS1"].target, Target::Online);
        assert_eq!(c.members("EVS1").len(), 4);
        assert_eq!(c.resolve("EVS1"), Some("127.0.1.1"));
    }

    #[test]
    fn online_order_puts_dependencies_first() {
        let order = evs().online_order("EVS1");
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(pos("IP") < pos("NAME"));
        assert!(pos("NAME") < pos("APP"));
        assert!(pos("DISK") < pos("APP"));
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn refuses_cycles_cross_group_and_bad_properties() {
        let c = evs();
        let n = nodes();
        // IP -> APP -> NAME -> IP would be a cycle.
        let cyc = res(
            "EVS1",
            ResourceType::IpAddress,
            &["APP"],
            &[("address", "127.0.1.1")],
        );
        assert!(c
            .check_resource("IP", &cyc, &n)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        let cross = res(
            "OTHER",
            ResourceType::GenericApplication,
            &["DISK"],
            &[("command", "x")],
        );
        assert!(c
            .check_resource("X", &cross, &n)
            .unwrap_err()
            .to_string()
            .contains("inside one group"));
        let selfdep = res(
            "EVS1",
            ResourceType::GenericApplication,
            &["X"],
            &[("command", "x")],
        );
        assert!(c
            .check_resource("X", &selfdep, &n)
            .unwrap_err()
            .to_string()
            .contains("itself"));
        let missing = res("EVS1", ResourceType::PhysicalDisk, &[], &[]);
        assert!(c
            .check_resource("D2", &missing, &n)
            .unwrap_err()
            .to_string()
            .contains("disk"));
        let unknown = res(
            "EVS1",
            ResourceType::IpAddress,
            &[],
            &[("address", "1.2.3.4"), ("mask", "x")],
        );
        assert!(c
            .check_resource("I2", &unknown, &n)
            .unwrap_err()
            .to_string()
            .contains("no property"));
        // A misspelt required property is reported by its own name with
        // the valid ones, not as the missing property it was meant to be.
        let misspelt = res(
            "EVS1",
            ResourceType::IpAddress,
            &[],
            &[("adress", "1.2.3.4")],
        );
        assert_eq!(
            c.check_resource("I4", &misspelt, &n),
            Err(CatalogError::UnknownProperty {
                kind: "ip-address",
                property: "adress".into(),
                known: "address".into(),
            })
        );
        let app = res(
            "EVS1",
            ResourceType::GenericApplication,
            &[],
            &[("comand", "x")],
        );
        let e = c.check_resource("A4", &app, &n).unwrap_err().to_string();
        assert!(
            e.contains("\"comand\"") && e.contains("command, probe-tcp, probe-command, cwd"),
            "{e}"
        );
        let bad_ip = res("EVS1", ResourceType::IpAddress, &[], &[("address", "nope")]);
        assert!(c.check_resource("I3", &bad_ip, &n).is_err());
        let name_no_ip = res(
            "EVS1",
            ResourceType::NetworkName,
            &["DISK"],
            &[("name", "n")],
        );
        assert!(c
            .check_resource("N2", &name_no_ip, &n)
            .unwrap_err()
            .to_string()
            .contains("ip-address"));
        let mut owners = res(
            "EVS1",
            ResourceType::GenericApplication,
            &[],
            &[("command", "x")],
        );
        owners.possible_owners = vec!["NODE9".into()];
        assert!(c.check_resource("A2", &owners, &n).is_err());
        let nogroup = res(
            "NOPE",
            ResourceType::GenericApplication,
            &[],
            &[("command", "x")],
        );
        assert!(c
            .check_resource("A3", &nogroup, &n)
            .unwrap_err()
            .to_string()
            .contains("no group"));
        let good = res(
            "EVS1",
            ResourceType::GenericApplication,
            &["APP"],
            &[("command", "x")],
        );
        c.check_resource("A4", &good, &n).unwrap();
    }

    #[test]
    fn group_checks() {
        let c = Catalog::default();
        let mut g = GroupSpec {
            preferred_owners: vec!["NODE3".into()],
            ..GroupSpec::default()
        };
        assert!(c.check_group("G", &g, &nodes()).is_err());
        g.preferred_owners = vec!["node2".into()];
        c.check_group("G", &g, &nodes()).unwrap();
        g.failback.window = Some((22, 24));
        assert!(c.check_group("G", &g, &nodes()).is_err());
        assert!(c
            .check_group("a/b", &GroupSpec::default(), &nodes())
            .is_err());
    }

    #[test]
    fn specs_refuse_unknown_fields() {
        assert!(serde_json::from_str::<GroupSpec>(r#"{"preferred":["A"]}"#).is_err());
        let r: ResourceSpec = serde_json::from_str(
            r#"{"group":"G","type":"ip-address","properties":{"address":"1.1.1.1"}}"#,
        )
        .unwrap();
        assert_eq!(r.looks_alive_ms, LOOKS_ALIVE_MS);
        assert_eq!(r.restart_threshold, 3);
    }

    #[test]
    fn the_type_reference_lists_every_type_property_and_example() {
        let r = type_reference();
        for t in ResourceType::ALL {
            assert!(r.contains(&format!("{}\n", t.name())), "{r}");
            assert!(
                t.required().count() >= 1,
                "{} has no required property",
                t.name()
            );
            for p in t.properties() {
                assert!(r.contains(p.name), "{} missing from {r}", p.name);
            }
            // The example creates a resource of its own type with every
            // required property.
            let ex = t.example();
            assert!(ex.contains(&format!("--type {}", t.name())), "{ex}");
            for p in t.required() {
                assert!(ex.contains(&format!("{p}=")), "{ex} lacks {p}");
            }
        }
    }
}
