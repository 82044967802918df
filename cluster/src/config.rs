//! The cluster file: what every node of one cluster shares.
//!
//! ```text
//! name = "EXCH1"
//! secret = "at least sixteen characters"
//! quorum-disk = "iscsi://127.0.0.1:3260/iqn.2026-11.io.busrig:bus/0"
//! quorum-log-limit = 4194304          # bytes, default 4 MiB
//! initiator-prefix = "iqn.2026-11.io.busrig"   # node N logs in as PREFIX:N
//!
//! [quorum]
//! model = "disk-scsi2"                # or "disk-pr", or "majority"
//! # witness = "iscsi://..."           # majority only: one extra vote
//!
//! [timing]
//! profile = "mscs2003"                # default "fast"
//! # heartbeat-ms = 1200, warn-misses = 2, regroup-misses = 6, renew-ms = 3000,
//! # challenge-wait-ms = 7000, online-delay-ms = 10000, pr-interval-ms = 3000
//!
//! [[node]]
//! name = "NODE1"
//! private = "10.0.0.1:3343"
//! public = "192.168.1.1:3343"
//! admin = "127.0.0.1:7001"
//! # public-interface = "pub"        # virtual IPs become kernel addresses here
//! ```
//!
//! Node ids are positions in the `[[node]]` list, so every node must use the
//! same file. [`ClusterConfig::from_toml`] parses and validates; validation
//! refuses timing that would let two nodes own the quorum at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Position of a node in the cluster file's `[[node]]` list.
pub type NodeId = u16;

/// Default quorum log limit (docs/semantics.md "Timing profiles": 4 MiB, then checkpoint and truncate).
pub const DEFAULT_LOG_LIMIT: u64 = 4 * 1024 * 1024;
/// Default initiator name prefix; node N uses `PREFIX:N`.
pub const DEFAULT_INITIATOR_PREFIX: &str = "iqn.2026-11.io.busrig";

/// Why a cluster file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or named an unknown field.
    #[error("cluster file: {0}")]
    Syntax(String),
    /// A required value is empty or missing.
    #[error("cluster file: {0} must not be empty")]
    Empty(&'static str),
    /// The shared secret is too short to authenticate cluster messages.
    #[error("cluster file: secret must be at least {min} characters (got {got})")]
    WeakSecret { min: usize, got: usize },
    /// Two nodes share a name.
    #[error("cluster file: node name {0:?} is used twice")]
    DuplicateNode(String),
    /// A node name has characters that cannot end an initiator name.
    #[error("cluster file: node name {0:?} may only use letters, digits, '-' and '_'")]
    BadNodeName(String),
    /// Too many nodes.
    #[error("cluster file: {0} nodes; at most {max} are supported", max = MAX_NODES)]
    TooManyNodes(usize),
    /// An address did not parse as host:port.
    #[error("cluster file: node {node}: {field} address {value:?} is not IP:PORT")]
    BadAddress {
        node: String,
        field: &'static str,
        value: String,
    },
    /// Two listeners would bind the same address.
    #[error("cluster file: address {0} is used twice")]
    DuplicateAddress(SocketAddr),
    /// An iSCSI URL did not parse.
    #[error("cluster file: {field} {value:?} is not an iSCSI URL: {reason}")]
    BadUrl {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A disk quorum model without a quorum disk.
    #[error("cluster file: quorum model {0} needs quorum-disk = \"iscsi://...\"")]
    MissingQuorumDisk(&'static str),
    /// A witness given for a disk model, where it means nothing.
    #[error("cluster file: a witness disk is only used with the majority model")]
    WitnessWithoutMajority,
    /// Majority on two nodes without a witness cannot survive any failure.
    #[error(
        "cluster file: majority on 2 nodes without a witness needs both nodes up \
         (2 of 2 votes), so any failure stops the cluster; add witness = \"iscsi://...\" \
         or use disk-scsi2 / disk-pr"
    )]
    TwoNodeMajorityWithoutWitness,
    /// An unknown timing profile.
    #[error("cluster file: unknown timing profile {0:?} (fast, mscs2003)")]
    UnknownProfile(String),
    /// A timing combination that breaks safety or liveness.
    #[error("cluster file: unsafe timing: {0}")]
    UnsafeTiming(String),
    /// The quorum log limit is unusable.
    #[error("cluster file: quorum-log-limit {0} must be a multiple of 4096 and at least 65536")]
    BadLogLimit(u64),
}

/// At most this many nodes (switched fabric: 8; leave room for labs).
pub const MAX_NODES: usize = 16;
/// Minimum secret length.
pub const MIN_SECRET: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    name: String,
    secret: String,
    #[serde(default)]
    quorum_disk: Option<String>,
    #[serde(default)]
    quorum_log_limit: Option<u64>,
    #[serde(default)]
    initiator_prefix: Option<String>,
    quorum: RawQuorum,
    #[serde(default)]
    timing: RawTiming,
    #[serde(rename = "node")]
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawQuorum {
    model: String,
    #[serde(default)]
    witness: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTiming {
    profile: Option<String>,
    heartbeat_ms: Option<u64>,
    warn_misses: Option<u32>,
    regroup_misses: Option<u32>,
    renew_ms: Option<u64>,
    challenge_wait_ms: Option<u64>,
    online_delay_ms: Option<u64>,
    pr_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: String,
    private: String,
    public: String,
    admin: String,
    public_interface: Option<String>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// Private (heartbeat-only) cluster network.
    pub private: SocketAddr,
    /// Public network, also used for cluster traffic.
    pub public: SocketAddr,
    /// Admin endpoint (`busrig cluster --node`).
    pub admin: SocketAddr,
    /// The interface of the public network on this node's host: when set,
    /// an ip-address resource adds its address there and announces it
    /// (`host::vip`); unset, the address must already be configured.
    pub public_interface: Option<String>,
}

/// How the cluster decides which partition may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumModel {
    /// SCSI-2 RESERVE with challenge (bus reset) and defense (renewal).
    DiskScsi2,
    /// SCSI-3 persistent reservations: register, reserve, preempt.
    DiskPr,
    /// Majority Node Set: (nodes / 2) + 1 votes; a witness disk adds one.
    Majority { witness: Option<String> },
}

impl QuorumModel {
    pub fn name(&self) -> &'static str {
        match self {
            QuorumModel::DiskScsi2 => "disk-scsi2",
            QuorumModel::DiskPr => "disk-pr",
            QuorumModel::Majority { .. } => "majority",
        }
    }
}

/// Timing of the cluster protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat interval on every network.
    pub heartbeat: Duration,
    /// Missed heartbeats on one network before a warning.
    pub warn_misses: u32,
    /// Missed heartbeats on all networks before a peer is suspected.
    pub regroup_misses: u32,
    /// SCSI-2: the owner renews RESERVE this often.
    pub renew: Duration,
    /// Challenger's wait after its bus reset (SCSI-2) or registration (PR).
    pub challenge_wait: Duration,
    /// SCSI-2: the winner brings the quorum online this long after its reset.
    pub online_delay: Duration,
    /// PR: the owner checks its key and scrubs challengers this often.
    pub pr_interval: Duration,
}

impl Timing {
    /// The defaults for tests and the lab: the same protocol, sub-second
    /// detection.
    pub fn fast() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            warn_misses: 2,
            regroup_misses: 6,
            renew: Duration::from_millis(150),
            challenge_wait: Duration::from_millis(400),
            online_delay: Duration::from_millis(500),
            pr_interval: Duration::from_millis(150),
        }
    }

    /// Windows Server 2003 numbers (docs/semantics.md "Timing profiles"); the PR
    /// interval is Windows Server 2008's.
    pub fn mscs2003() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(1200),
            warn_misses: 2,
            regroup_misses: 6,
            renew: Duration::from_secs(3),
            challenge_wait: Duration::from_secs(7),
            online_delay: Duration::from_secs(10),
            pr_interval: Duration::from_secs(3),
        }
    }

    /// A peer silent on every network this long is suspected.
    pub fn detection(&self) -> Duration {
        self.heartbeat * self.regroup_misses
    }

    /// How often the quorum owner proves it still holds the disk under
    /// `model`: the renew interval (SCSI-2) or the PR interval.
    pub fn defend_interval(&self, model: &QuorumModel) -> Duration {
        match model {
            QuorumModel::DiskPr | QuorumModel::Majority { witness: Some(_) } => self.pr_interval,
            _ => self.renew,
        }
    }

    /// How long after an owner's successful defense (counted from when it
    /// was sent) it may still act as owner and write: half the challenge
    /// wait. A challenger's RESERVE or PREEMPT can succeed no earlier than
    /// `challenge_wait` after the defense it beat, and the new owner goes
    /// online no earlier than one lease after winning, so the old owner's
    /// lease has run out by then; validation (`challenge_wait > 2 x
    /// interval`) makes the lease longer than one defend interval, so
    /// regular defenses keep it alive without gaps.
    pub fn lease(&self, _model: &QuorumModel) -> Duration {
        self.challenge_wait / 2
    }

    /// Majority model: how long a member's acknowledgement of the owner's
    /// heartbeat counts as its vote (from when the heartbeat was sent).
    /// Half the detection time, so several heartbeats renew it and a
    /// member that stops hearing the owner still suspects it later than
    /// the lease runs out.
    pub fn majority_lease(&self) -> Duration {
        self.detection() / 2
    }

    /// Checks the rules that keep arbitration safe and detection sane.
    pub fn validate(&self, model: &QuorumModel) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::UnsafeTiming(m));
        if self.heartbeat.is_zero() {
            return bad("heartbeat must be greater than 0".into());
        }
        // The majority lease (half the detection time) must outlast a
        // heartbeat interval, or the owner's votes lapse between two rounds.
        if matches!(model, QuorumModel::Majority { .. }) && self.majority_lease() <= self.heartbeat
        {
            return bad(format!(
                "majority lease {:?} (detection / 2) must exceed the heartbeat {:?}",
                self.majority_lease(),
                self.heartbeat
            ));
        }
        if self.regroup_misses < 3 {
            return bad(format!(
                "regroup-misses {} is below 3: one delayed packet would start a regroup",
                self.regroup_misses
            ));
        }
        if self.warn_misses == 0 || self.warn_misses >= self.regroup_misses {
            return bad(format!(
                "warn-misses {} must be at least 1 and below regroup-misses {}",
                self.warn_misses, self.regroup_misses
            ));
        }
        let (interval, what) = match model {
            // The majority model's witness is arbitrated with SCSI-3 PR.
            QuorumModel::DiskPr | QuorumModel::Majority { witness: Some(_) } => {
                (self.pr_interval, "pr-interval")
            }
            _ => (self.renew, "renew"),
        };
        if interval.is_zero() {
            return bad(format!("{what} must be greater than 0"));
        }
        // The defender must get at least two chances to defend inside the
        // challenger's wait, or a single late renewal loses the quorum to a
        // challenger while the owner still writes.
        if self.challenge_wait <= interval * 2 {
            return bad(format!(
                "challenge-wait {:?} must exceed 2 x {what} ({:?})",
                self.challenge_wait,
                interval * 2
            ));
        }
        // The new owner must not go online before the old owner's lease
        // (at most challenge-wait after its last defense) has run out.
        if matches!(model, QuorumModel::DiskScsi2) && self.online_delay <= self.challenge_wait {
            return bad(format!(
                "online-delay {:?} must exceed challenge-wait {:?}",
                self.online_delay, self.challenge_wait
            ));
        }
        Ok(())
    }
}

/// A parsed and validated cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub secret: String,
    pub nodes: Vec<NodeConfig>,
    pub quorum: QuorumModel,
    pub timing: Timing,
    /// Name of the profile the timing started from.
    pub profile: String,
    pub quorum_disk: Option<String>,
    pub log_limit: u64,
    pub initiator_prefix: String,
}

impl ClusterConfig {
    /// Parses and validates a cluster file.
    pub fn from_toml(text: &str) -> Result<ClusterConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let profile = raw.timing.profile.clone().unwrap_or_else(|| "fast".into());
        let mut timing = match profile.as_str() {
            "fast" => Timing::fast(),
            "mscs2003" => Timing::mscs2003(),
            other => return Err(ConfigError::UnknownProfile(other.into())),
        };
        let t = &raw.timing;
        let ms = Duration::from_millis;
        if let Some(v) = t.heartbeat_ms {
            timing.heartbeat = ms(v);
        }
        if let Some(v) = t.warn_misses {
            timing.warn_misses = v;
        }
        if let Some(v) = t.regroup_misses {
            timing.regroup_misses = v;
        }
        if let Some(v) = t.renew_ms {
            timing.renew = ms(v);
        }
        if let Some(v) = t.challenge_wait_ms {
            timing.challenge_wait = ms(v);
        }
        if let Some(v) = t.online_delay_ms {
            timing.online_delay = ms(v);
        }
        if let Some(v) = t.pr_interval_ms {
            timing.pr_interval = ms(v);
        }
        let quorum = match raw.quorum.model.as_str() {
            "disk-scsi2" => QuorumModel::DiskScsi2,
            "disk-pr" => QuorumModel::DiskPr,
            "majority" => QuorumModel::Majority {
                witness: raw.quorum.witness.clone(),
            },
            other => {
                return Err(ConfigError::Syntax(format!(
                    "unknown quorum model {other:?} (disk-scsi2, disk-pr, majority)"
                )))
            }
        };
        if raw.quorum.witness.is_some() && !matches!(quorum, QuorumModel::Majority { .. }) {
            return Err(ConfigError::WitnessWithoutMajority);
        }
        let mut nodes = Vec::new();
        for n in raw.nodes {
            let addr = |field: &'static str, value: &str| {
                value
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::BadAddress {
                        node: n.name.clone(),
                        field,
                        value: value.into(),
                    })
            };
            nodes.push(NodeConfig {
                private: addr("private", &n.private)?,
                public: addr("public", &n.public)?,
                admin: addr("admin", &n.admin)?,
                public_interface: n.public_interface.filter(|i| !i.is_empty()),
                name: n.name,
            });
        }
        let cfg = ClusterConfig {
            name: raw.name,
            secret: raw.secret,
            nodes,
            quorum,
            timing,
            profile,
            quorum_disk: raw.quorum_disk,
            log_limit: raw.quorum_log_limit.unwrap_or(DEFAULT_LOG_LIMIT),
            initiator_prefix: raw
                .initiator_prefix
                .unwrap_or_else(|| DEFAULT_INITIATOR_PREFIX.into()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything [`ClusterConfig::from_toml`] checks; call it again
    /// after changing a parsed config in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::Empty("name"));
        }
        if self.secret.len() < MIN_SECRET {
            return Err(ConfigError::WeakSecret {
                min: MIN_SECRET,
                got: self.secret.len(),
            });
        }
        if self.nodes.is_empty() {
            return Err(ConfigError::Empty("[[node]] list"));
        }
        if self.nodes.len() > MAX_NODES {
            return Err(ConfigError::TooManyNodes(self.nodes.len()));
        }
        if self.initiator_prefix.is_empty() {
            return Err(ConfigError::Empty("initiator-prefix"));
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for n in &self.nodes {
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::BadNodeName(n.name.clone()));
            }
            if !names.insert(n.name.to_ascii_lowercase()) {
                return Err(ConfigError::DuplicateNode(n.name.clone()));
            }
            for a in [n.private, n.public, n.admin] {
                if !addrs.insert(a) {
                    return Err(ConfigError::DuplicateAddress(a));
                }
            }
        }
        let url = |field: &'static str, v: &str| {
            busrig_initiator::IscsiUrl::parse(v)
                .map(|_| ())
                .map_err(|e| ConfigError::BadUrl {
                    field,
                    value: v.into(),
                    reason: e.to_string(),
                })
        };
        match &self.quorum {
            QuorumModel::DiskScsi2 | QuorumModel::DiskPr => match &self.quorum_disk {
                Some(u) => url("quorum-disk", u)?,
                None => return Err(ConfigError::MissingQuorumDisk(self.quorum.name())),
            },
            QuorumModel::Majority { witness } => {
                if let Some(w) = witness {
                    url("witness", w)?;
                } else if self.nodes.len() == 2 {
                    // Refused rather than warned: a 2-node majority cluster
                    // stops on any single failure, the opposite of what a
                    // failover cluster is for (the seeds' MNS guidance).
                    return Err(ConfigError::TwoNodeMajorityWithoutWitness);
                }
                if let Some(u) = &self.quorum_disk {
                    url("quorum-disk", u)?;
                }
            }
        }
        if self.log_limit < 65536 || !self.log_limit.is_multiple_of(4096) {
            return Err(ConfigError::BadLogLimit(self.log_limit));
        }
        self.timing.validate(&self.quorum)
    }

    /// The node with this name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
            .map(|i| i as NodeId)
    }

    /// The iSCSI initiator name node `id` logs in with: `PREFIX:NAME`, so the
    /// bus status and the cluster status can be joined on the node name.
    pub fn initiator_name(&self, id: NodeId) -> String {
        format!("{}:{}", self.initiator_prefix, self.nodes[id as usize].name)
    }

    /// What `busrig bus --lab` means by `name` where an initiator name
    /// goes: the initiator name of the node called `name` (any case), or
    /// `name` itself when it is an iSCSI name (`iqn.`, `eui.` or `naa.`,
    /// RFC 7143 §4.2.7.1) such as a mail store's or a CLI's. Anything else
    /// is a node name this cluster does not have.
    pub fn initiator_for(&self, name: &str) -> Result<String, UnknownNode> {
        if let Some(id) = self.node_id(name) {
            return Ok(self.initiator_name(id));
        }
        let lower = name.to_ascii_lowercase();
        if ["iqn.", "eui.", "naa."]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Ok(name.to_string());
        }
        Err(UnknownNode {
            name: name.to_string(),
            cluster: self.name.clone(),
            nodes: self.nodes.iter().map(|n| n.name.clone()).collect(),
        })
    }
}

/// A name that is neither a node of the cluster nor an iSCSI name
/// ([`ClusterConfig::initiator_for`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster {cluster} has no node {name:?} (nodes: {}; or give an iSCSI name, iqn.…)",
    nodes.join(", ")
)]
pub struct UnknownNode {
    pub name: String,
    pub cluster: String,
    pub nodes: Vec<String>,
}

#[cfg(test)]
impl ClusterConfig {
    /// A disk-scsi2 cluster of the named nodes for unit tests: node `i` on
    /// 10.0.0.(i+1) (private) and 192.168.0.(i+1) (public), admin on
    /// 127.0.0.1:(7000+i).
    pub(crate) fn for_tests<S: AsRef<str>>(names: &[S]) -> ClusterConfig {
        let mut s = String::from(
            "name = \"C\"\nsecret = \"0123456789abcdef\"\n\
             quorum-disk = \"iscsi://127.0.0.1/iqn.2026-11.io.busrig:bus0/0\"\n\
             [quorum]\nmodel = \"disk-scsi2\"\n",
        );
        for (i, n) in names.iter().enumerate() {
            s += &format!(
                "[[node]]\nname = \"{}\"\nprivate = \"10.0.0.{}:3343\"\npublic = \"192.168.0.{}:3343\"\nadmin = \"127.0.0.1:{}\"\n",
                n.as_ref(),
                i + 1,
                i + 1,
                7000 + i
            );
        }
        ClusterConfig::from_toml(&s).expect("test cluster file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "iscsi://127.0.0.1:3260/iqn.2026-11.io.busrig:bus/0";

    fn file(model: &str, extra_top: &str, timing: &str, nodes: usize) -> String {
        let mut s = format!(
            "name = \"EXCH\"\nsecret = \"0123456789abcdef\"\n{extra_top}\n\
             [quorum]\nmodel = \"{model}\"\n[timing]\n{timing}\n"
        );
        for i in 0..nodes {
            s += &format!(
                "[[node]]\nname = \"NODE{i}\"\nprivate = \"127.0.0.1:{}\"\n\
                 public = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                7000 + i,
                7100 + i,
                7200 + i
            );
        }
        s
    }

    fn scsi2(timing: &str) -> String {
        file("disk-scsi2", &format!("quorum-disk = \"{URL}\""), timing, 2)
    }

    #[test]
    fn parses_defaults_and_profile() {
        let c = ClusterConfig::from_toml(&scsi2("")).unwrap();
        assert_eq!(c.timing, Timing::fast());
        assert_eq!(c.log_limit, DEFAULT_LOG_LIMIT);
        assert_eq!(c.node_id("node1"), Some(1));
        assert!(c.initiator_name(1).ends_with(":NODE1"));
        let c = ClusterConfig::from_toml(&scsi2("profile = \"mscs2003\"")).unwrap();
        assert_eq!(c.timing.heartbeat, Duration::from_millis(1200));
        assert_eq!(c.timing.detection(), Duration::from_millis(7200));
        assert_eq!(c.timing.challenge_wait, Duration::from_secs(7));
    }

    #[test]
    fn overrides_apply() {
        let c = ClusterConfig::from_toml(&scsi2(
            "profile = \"mscs2003\"\nheartbeat-ms = 1000\nrenew-ms = 2000",
        ))
        .unwrap();
        assert_eq!(c.timing.heartbeat, Duration::from_secs(1));
        assert_eq!(c.timing.renew, Duration::from_secs(2));
        assert_eq!(c.timing.online_delay, Duration::from_secs(10));
    }

    fn err(text: &str) -> ConfigError {
        ClusterConfig::from_toml(text).unwrap_err()
    }

    #[test]
    fn unknown_field_is_refused() {
        assert!(matches!(
            err(&scsi2("heartbeat = 5")),
            ConfigError::Syntax(m) if m.contains("heartbeat")
        ));
    }

    #[test]
    fn each_error_has_its_case() {
        // challenge wait not longer than two renew intervals
        let e = err(&scsi2("renew-ms = 200\nchallenge-wait-ms = 400"));
        assert!(matches!(&e, ConfigError::UnsafeTiming(m) if m.contains("2 x renew")));
        // online before the old owner's lease ends
        let e = err(&scsi2("online-delay-ms = 400"));
        assert!(matches!(&e, ConfigError::UnsafeTiming(m) if m.contains("online-delay")));
        // detection too close to one heartbeat
        let e = err(&scsi2("regroup-misses = 2"));
        assert!(matches!(&e, ConfigError::UnsafeTiming(m) if m.contains("regroup-misses")));
        let e = err(&scsi2("warn-misses = 6"));
        assert!(matches!(&e, ConfigError::UnsafeTiming(m) if m.contains("warn-misses")));
        let e = err(&scsi2("heartbeat-ms = 0"));
        assert!(matches!(&e, ConfigError::UnsafeTiming(_)));
        // PR interval rule
        let pr = file(
            "disk-pr",
            &format!("quorum-disk = \"{URL}\""),
            "pr-interval-ms = 300",
            2,
        );
        assert!(matches!(err(&pr), ConfigError::UnsafeTiming(m) if m.contains("pr-interval")));
        assert_eq!(
            err(&scsi2("profile = \"slow\"")),
            ConfigError::UnknownProfile("slow".into())
        );
        assert_eq!(
            err(&file("disk-pr", "", "", 2)),
            ConfigError::MissingQuorumDisk("disk-pr")
        );
        assert_eq!(
            err(&file("majority", "", "", 2)),
            ConfigError::TwoNodeMajorityWithoutWitness
        );
        assert!(ClusterConfig::from_toml(&file("majority", "", "", 3)).is_ok());
        let witness = file("majority", "", "", 2).replace(
            "model = \"majority\"",
            &format!("model = \"majority\"\nwitness = \"{URL}\""),
        );
        let c = ClusterConfig::from_toml(&witness).unwrap();
        assert_eq!(crate::node::quorum::Votes::of(&c).needed(), 2);
        let w2 = scsi2("").replace(
            "model = \"disk-scsi2\"",
            &format!("model = \"disk-scsi2\"\nwitness = \"{URL}\""),
        );
        assert_eq!(err(&w2), ConfigError::WitnessWithoutMajority);
        assert!(matches!(
            err(&file("disk-scsi2", "quorum-disk = \"http://x\"", "", 2)),
            ConfigError::BadUrl { .. }
        ));
        assert!(matches!(
            err(&scsi2("").replace("0123456789abcdef", "short")),
            ConfigError::WeakSecret { got: 5, .. }
        ));
        assert!(matches!(
            err(&scsi2("").replace("NODE1", "NODE0")),
            ConfigError::DuplicateNode(_)
        ));
        assert!(matches!(
            err(&scsi2("").replace("NODE1", "NO DE")),
            ConfigError::BadNodeName(_)
        ));
        assert!(matches!(
            err(&scsi2("").replace("127.0.0.1:7101", "127.0.0.1:7000")),
            ConfigError::DuplicateAddress(_)
        ));
        assert!(matches!(
            err(&scsi2("").replace("127.0.0.1:7101", "localhost")),
            ConfigError::BadAddress {
                field: "public",
                ..
            }
        ));
        assert_eq!(
            err(&file(
                "disk-scsi2",
                &format!("quorum-disk = \"{URL}\"\nquorum-log-limit = 5000"),
                "",
                2
            )),
            ConfigError::BadLogLimit(5000)
        );
        assert!(matches!(
            err(&file(
                "disk-scsi2",
                &format!("quorum-disk = \"{URL}\""),
                "",
                17
            )),
            ConfigError::TooManyNodes(17)
        ));
        assert_eq!(
            err(&scsi2("").replace("name = \"EXCH\"", "name = \"\"")),
            ConfigError::Empty("name")
        );
    }

    #[test]
    fn lease_fits_between_defenses() {
        for t in [Timing::fast(), Timing::mscs2003()] {
            for m in [QuorumModel::DiskScsi2, QuorumModel::DiskPr] {
                t.validate(&m).unwrap();
                assert!(t.lease(&m) > t.defend_interval(&m));
            }
        }
    }

    #[test]
    fn node_names_stand_for_their_initiators() {
        let c = ClusterConfig::for_tests(&["NODE1", "NODE2"]);
        assert_eq!(c.initiator_for("node2"), Ok(c.initiator_name(1)));
        assert!(c.initiator_for("NODE1").unwrap().ends_with(":NODE1"));
        assert_eq!(c.initiator_for("iqn.x:other").unwrap(), "iqn.x:other");
        assert_eq!(c.initiator_for("EUI.0123").unwrap(), "EUI.0123");
    }

    #[test]
    fn an_unknown_node_name_is_an_error_naming_the_nodes() {
        let c = ClusterConfig::for_tests(&["NODE1", "NODE2"]);
        let e = c.initiator_for("NODE9").unwrap_err();
        assert_eq!(e.nodes, ["NODE1", "NODE2"]);
        let text = e.to_string();
        assert!(text.contains("no node \"NODE9\""), "{text}");
        assert!(text.contains("NODE1, NODE2"), "{text}");
    }
}
