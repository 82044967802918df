//! Lab hosts: where each lab process runs and how network faults reach it
//! (`busrig lab up --hosts MODE`, README "Network-namespace hosts",
//! docs/hosts.md).
//!
//! - [`Hosts::Single`]: every process shares the machine's network stack
//!   (loopback); a partition is busrig's own switch in the node's sockets.
//! - [`Hosts::Netns`]: the target and each node are hosts of their own, a
//!   network namespace each, joined by veth links to one bridge per
//!   network; faults are the kernel's (nftables, tc, link state).
//!
//! The lab keeps its hosts in `hosts.json` in the lab folder, written as
//! each namespace, bridge and link is made, so `busrig lab down` removes
//! exactly those, also after the lab crashed. Another kind of host (a
//! machine reached over SSH) is another variant: it answers the same
//! questions — where does process P run ([`Hosts::placement`]), which
//! addresses does it use, how is a fault applied — with its own tools.

pub mod faults;
pub mod netns;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, LabError, Result};

/// `--hosts`: where the lab's processes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostsMode {
    /// One network stack for all (the default).
    #[default]
    Single,
    /// A network namespace per process.
    Netns,
}

impl HostsMode {
    pub const ALL: [HostsMode; 2] = [HostsMode::Single, HostsMode::Netns];

    /// The `--hosts` value.
    pub fn as_str(self) -> &'static str {
        match self {
            HostsMode::Single => "single",
            HostsMode::Netns => "netns",
        }
    }
}

impl std::str::FromStr for HostsMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<HostsMode, String> {
        let known = HostsMode::ALL.into_iter().find(|m| m.as_str() == s);
        known.ok_or_else(|| format!("{s:?} is not a hosts mode (single or netns)"))
    }
}

/// A network of a lab host that faults can be put on (the management
/// network, which the lab itself uses to reach the hosts, takes none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// The private cluster network (heartbeats only).
    Private,
    /// The public network: heartbeats, clients, virtual IPs.
    Public,
    /// The storage fabric: iSCSI to the bus.
    Storage,
}

impl Link {
    pub const ALL: [Link; 3] = [Link::Private, Link::Public, Link::Storage];

    /// The `--net` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Private => "private",
            Link::Public => "public",
            Link::Storage => "storage",
        }
    }

    /// The interface's name inside a host's namespace.
    pub fn interface(self) -> &'static str {
        match self {
            Link::Private => "priv",
            Link::Public => "pub",
            Link::Storage => "stor",
        }
    }
}

impl std::str::FromStr for Link {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Link, String> {
        let known = Link::ALL.into_iter().find(|l| l.as_str() == s);
        known.ok_or_else(|| format!("{s:?} is not a lab network (private, public or storage)"))
    }
}

/// Where a lab process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In the lab's own network stack.
    Local,
    /// In the network namespace bound at this path (`/run/netns/NAME`).
    Namespace(PathBuf),
}

/// `hosts.json`: the lab's hosts and everything made for them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Hosts {
    #[default]
    Single,
    Netns(netns::NetnsLab),
}

/// `hosts.json` of the lab in `dir`.
pub fn hosts_file(dir: &Path) -> PathBuf {
    dir.join("hosts.json")
}

impl Hosts {
    /// The lab's hosts; a lab folder without `hosts.json` is single-stack.
    pub fn load(dir: &Path) -> Result<Hosts> {
        let p = hosts_file(dir);
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| LabError::Damaged { path: p, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Hosts::Single),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// Writes `hosts.json` (atomically: a crash leaves the old or the new).
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let p = hosts_file(dir);
        let tmp = dir.join("hosts.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))
    }

    pub fn mode(&self) -> HostsMode {
        match self {
            Hosts::Single => HostsMode::Single,
            Hosts::Netns(_) => HostsMode::Netns,
        }
    }

    /// Where lab process `name` (a node or `target`) runs.
    pub fn placement(&self, name: &str) -> Placement {
        match self {
            Hosts::Single => Placement::Local,
            Hosts::Netns(n) => match n.namespace_of(name) {
                Some(ns) => Placement::Namespace(netns::namespace_path(ns)),
                None => Placement::Local,
            },
        }
    }
}
