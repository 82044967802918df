//! Network-namespace hosts (`busrig lab up --hosts netns`): the target and
//! each node in a network namespace of its own, joined by veth links to
//! one bridge per network, so heartbeats, iSCSI and admin traffic cross
//! real kernel links, and faults are nftables rules, tc queueing
//! disciplines and link states in the host's namespace.
//!
//! Address plan (docs/hosts.md): lab block B (0 to 63, the first one free
//! on this machine) owns 10.77.(4B+N).0/24 for network N: 0 management
//! (the lab reaches admin endpoints and the bus control plane there; no
//! fault touches it), 1 private, 2 public, 3 storage. On every network
//! the target is .1, NODEi is .(10+i), the lab's own end (the bridge, in
//! the machine's namespace, where clients like `busrig mailload` run) is
//! .254; virtual IPs take free public addresses (.1 to .9, .100 and up).
//! The target is on management and storage only.
//!
//! Names carry a tag drawn at random per lab (`TAG`, 6 hex digits):
//! namespaces `busrig-TAG-target` / `busrig-TAG-node1`, bridges
//! `brg-TAG-priv`, root-side veth ends `vTAG` + host + network; inside a
//! namespace the interfaces are `mgmt`, `priv`, `pub` and `stor`. Every
//! bridge and veth end carries the alias `busrig-lab:TAG`, and so does
//! `lo` in every namespace; `down` deletes only what `hosts.json` records
//! *and* still carries the alias.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::faults::{self, LinkFaults, SwitchDelay};
use super::{Hosts, Link};
use crate::error::{fail, LabError, Result};

/// Lab blocks of four /24 networks in 10.77.0.0/16.
const BLOCKS: u8 = 64;
/// Where a lab claims its block, so two labs starting at once never take
/// the same one.
const CLAIMS: &str = "/run/busrig/netns";
/// A claim older than this whose lab has no bridge is left over from a
/// crash and may be taken.
const STALE_CLAIM: Duration = Duration::from_secs(120);

/// The target's host number on its networks.
pub const TARGET_HOST: u8 = 1;
/// The lab's own end of every network (the bridge's address).
pub const LAB_HOST: u8 = 254;
/// The bus's iSCSI portal port (RFC 7143 §13.1: 3260).
pub const PORTAL_PORT: u16 = 3260;
/// The bus's control plane port.
pub const CONTROL_PORT: u16 = 7000;
/// The cluster network port on private and public (the reference
/// cluster's 3343).
pub const CLUSTER_PORT: u16 = 3343;
/// A node's admin endpoint port.
pub const ADMIN_PORT: u16 = 7001;

/// NODEi's (1-based) host number.
pub fn node_host(i: usize) -> u8 {
    10 + i as u8
}

/// The namespace bound at `/run/netns/NAME` (where `ip netns` keeps them).
pub fn namespace_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// One network of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    Mgmt,
    Private,
    Public,
    Storage,
}

impl Network {
    pub const ALL: [Network; 4] = [
        Network::Mgmt,
        Network::Private,
        Network::Public,
        Network::Storage,
    ];

    fn index(self) -> u8 {
        self as u8
    }

    /// Interface name in a namespace, and the bridge's suffix.
    pub fn interface(self) -> &'static str {
        match self {
            Network::Mgmt => "mgmt",
            Network::Private => Link::Private.interface(),
            Network::Public => Link::Public.interface(),
            Network::Storage => Link::Storage.interface(),
        }
    }
}

impl From<Link> for Network {
    fn from(l: Link) -> Network {
        match l {
            Link::Private => Network::Private,
            Link::Public => Network::Public,
            Link::Storage => Network::Storage,
        }
    }
}

/// One host: a lab process's namespace and the networks it is on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetnsHost {
    /// `target` or a node name.
    pub name: String,
    pub namespace: String,
    pub networks: Vec<Network>,
}

/// Something the lab made, recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Created {
    /// The block claim file.
    Claim {
        path: PathBuf,
    },
    Bridge {
        name: String,
    },
    /// The root-side end of a veth pair (the other end is in a namespace).
    Veth {
        name: String,
    },
    Namespace {
        name: String,
    },
}

/// A namespace lab, as `hosts.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetnsLab {
    pub tag: String,
    pub block: u8,
    /// Whether this kernel has tc netem (sch_netem); without it delays go
    /// through busrig's own switches.
    pub netem: bool,
    /// What was made, in order; `down` undoes it in reverse.
    pub created: Vec<Created>,
    pub hosts: Vec<NetnsHost>,
    /// Faults in force: host -> link -> faults.
    #[serde(default)]
    pub faults: BTreeMap<String, BTreeMap<Link, LinkFaults>>,
}

/// Refuses, in one line, when this machine cannot make namespace hosts.
pub fn check_requirements() -> Result<()> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for (tool, arg, package) in [
        ("ip", "-V", "iproute2"),
        ("tc", "-V", "iproute2"),
        ("nft", "--version", "nftables"),
    ] {
        let runs = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !runs {
            missing.push(format!("{tool} (Debian package {package})"));
        }
    }
    if !missing.is_empty() {
        fail!(
            "--hosts netns needs root, iproute2 and nftables; missing: {}; the single-stack lab (the default) needs none of them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs `program args`; its stdout, or an error with the command and its
/// stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let shown = || format!("`{program} {}`", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Io {
            what: format!("cannot run {}", shown()),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        fail!(
            "{} failed: {}",
            shown(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Six random hex digits.
fn new_tag() -> String {
    use rand::Rng;
    format!("{:06x}", rand::thread_rng().gen_range(0..0x100_0000u32))
}

/// The third octets of the 10.77.x.y addresses and routes this machine
/// already uses (in its own namespace).
fn used_subnets() -> Result<Vec<u8>> {
    let mut used = Vec::new();
    let text = run("ip", &["-4", "-o", "address", "show"])? + &run("ip", &["-4", "route", "show"])?;
    for word in text.split_whitespace() {
        let mut oct = word.split(['.', '/']);
        if let (Some("10"), Some("77"), Some(c)) = (oct.next(), oct.next(), oct.next()) {
            if let Ok(c) = c.parse() {
                used.push(c);
            }
        }
    }
    Ok(used)
}

impl NetnsLab {
    /// The alias every link and namespace of this lab carries.
    pub fn marker(&self) -> String {
        format!("busrig-lab:{}", self.tag)
    }

    /// `10.77.X` of `net`.
    pub fn subnet(&self, net: Network) -> String {
        format!("10.77.{}", self.block * 4 + net.index())
    }

    /// Host `host`'s address on `net`.
    pub fn addr(&self, net: Network, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.block * 4 + net.index(), host)
    }

    /// The namespace of lab process `name` (any case).
    pub fn namespace_of(&self, name: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.namespace.as_str())
    }

    fn host(&self, name: &str) -> Result<&NetnsHost> {
        self.hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| LabError::NoSuchNode {
                name: name.to_string(),
                nodes: self.hosts.iter().map(|h| h.name.clone()).collect(),
            })
    }

    fn bridge(&self, net: Network) -> String {
        format!("brg-{}-{}", self.tag, net.interface())
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Hosts::Netns(self.clone()).save(dir)
    }

    /// Records `c` in `hosts.json` before it is made.
    fn record(&mut self, dir: &Path, c: Created) -> Result<()> {
        self.created.push(c);
        self.save(dir)
    }

    /// Makes the hosts of a lab with `nodes` nodes: claims a block, makes
    /// the bridges, the namespaces and their links, and finds out whether
    /// the kernel has netem. Everything is in `hosts.json` in `dir` as it
    /// is made; on failure the caller tears down what was recorded.
    pub fn create(dir: &Path, nodes: usize) -> Result<NetnsLab> {
        let mut hosts = vec![NetnsHost {
            name: "target".into(),
            namespace: String::new(),
            networks: vec![Network::Mgmt, Network::Storage],
        }];
        for i in 1..=nodes {
            hosts.push(NetnsHost {
                name: format!("NODE{i}"),
                namespace: String::new(),
                networks: Network::ALL.to_vec(),
            });
        }
        // A tag no namespace or bridge on this machine uses yet.
        let tag = loop {
            let t = new_tag();
            let taken = Path::new("/sys/class/net")
                .join(format!("brg-{t}-mgmt"))
                .exists()
                || fs::read_dir("/run/netns").is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("busrig-{t}-"))
                    })
                });
            if !taken {
                break t;
            }
        };
        for h in &mut hosts {
            h.namespace = format!("busrig-{tag}-{}", h.name.to_ascii_lowercase());
        }
        let mut lab = NetnsLab {
            tag,
            block: 0,
            netem: false,
            created: Vec::new(),
            hosts,
            faults: BTreeMap::new(),
        };
        lab.save(dir)?;
        lab.claim_block(dir)?;
        let marker = lab.marker();
        for net in Network::ALL {
            let br = lab.bridge(net);
            lab.record(dir, Created::Bridge { name: br.clone() })?;
            run("ip", &["link", "add", "name", &br, "type", "bridge"])?;
            run("ip", &["link", "set", "dev", &br, "alias", &marker])?;
            let a = format!("{}/24", lab.addr(net, LAB_HOST));
            run("ip", &["address", "add", &a, "dev", &br])?;
            run("ip", &["link", "set", "dev", &br, "up"])?;
        }
        for (k, h) in lab.hosts.clone().iter().enumerate() {
            let ns = h.namespace.as_str();
            lab.record(dir, Created::Namespace { name: ns.into() })?;
            run("ip", &["netns", "add", ns])?;
            run(
                "ip",
                &["-n", ns, "link", "set", "dev", "lo", "alias", &marker],
            )?;
            run("ip", &["-n", ns, "link", "set", "dev", "lo", "up"])?;
            let host_no = if k == 0 { TARGET_HOST } else { node_host(k) };
            // `t` for the target, the node's number otherwise.
            let who = if k == 0 {
                "t".to_string()
            } else {
                k.to_string()
            };
            for &net in &h.networks {
                let veth = format!("v{}{who}{}", lab.tag, net.index());
                let inner = net.interface();
                lab.record(dir, Created::Veth { name: veth.clone() })?;
                run(
                    "ip",
                    &[
                        "link", "add", &veth, "type", "veth", "peer", "name", inner, "netns", ns,
                    ],
                )?;
                run("ip", &["link", "set", "dev", &veth, "alias", &marker])?;
                run(
                    "ip",
                    &[
                        "link",
                        "set",
                        "dev",
                        &veth,
                        "master",
                        &lab.bridge(net),
                        "up",
                    ],
                )?;
                let a = format!("{}/24", lab.addr(net, host_no));
                run("ip", &["-n", ns, "address", "add", &a, "dev", inner])?;
                run("ip", &["-n", ns, "link", "set", "dev", inner, "up"])?;
            }
        }
        lab.netem = netem_available(&lab.hosts[0].namespace);
        lab.save(dir)?;
        tracing::info!(
            tag = %lab.tag, block = lab.block, netem = lab.netem,
            "namespace hosts made: {} namespaces on 10.77.{}.0/22",
            lab.hosts.len(), lab.block * 4
        );
        Ok(lab)
    }

    /// Takes the first block whose networks nothing on this machine uses,
    /// with a claim file only one lab can create.
    fn claim_block(&mut self, dir: &Path) -> Result<()> {
        fs::create_dir_all(CLAIMS).map_err(|source| LabError::Io {
            what: format!("cannot create {CLAIMS}"),
            source,
        })?;
        let used = used_subnets()?;
        for b in 0..BLOCKS {
            if (0..4).any(|n| used.contains(&(b * 4 + n))) {
                continue;
            }
            let path = Path::new(CLAIMS).join(format!("block-{b}"));
            if let Ok(old) = fs::read_to_string(&path) {
                if !claim_is_stale(&path, &old) {
                    continue;
                }
                tracing::info!(block = b, "taking over the stale claim {}", path.display());
                let _ = fs::remove_file(&path);
            }
            let made = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            if let Ok(mut f) = made {
                self.block = b;
                self.record(dir, Created::Claim { path: path.clone() })?;
                writeln!(f, "{} {}", self.tag, dir.display())?;
                return Ok(());
            }
        }
        fail!("no free lab block in 10.77.0.0/16 ({BLOCKS} labs at most on one machine)")
    }

    /// The faults in force on `host`'s links.
    pub fn faults_of(&self, host: &str) -> BTreeMap<Link, LinkFaults> {
        self.faults.get(host).cloned().unwrap_or_default()
    }

    /// Puts `new` in force on `host`'s `link` in the kernel (nftables for
    /// drops, tc for shaping, the link state) and records it. The delay of
    /// busrig's switch (no netem) is the caller's: it has the clients.
    pub fn apply(&mut self, dir: &Path, host: &str, link: Link, new: LinkFaults) -> Result<()> {
        self.check(host, link, &new)?;
        let h = self.host(host)?.clone();
        let mut all = self.faults_of(&h.name);
        let old = all.get(&link).cloned().unwrap_or_default();
        all.insert(link, new.clone());
        all.retain(|_, f| !f.is_empty());
        let ns = h.namespace.as_str();
        let dev = link.interface();
        run_with_input(
            "ip",
            &["netns", "exec", ns, "nft", "-f", "-"],
            Some(&faults::nft_ruleset(&all)),
        )?;
        let (was, now) = (
            faults::tc_args(dev, &old, self.netem),
            faults::tc_args(dev, &new, self.netem),
        );
        if was != now {
            match &now {
                Some(args) => {
                    let mut a = vec!["-n", ns];
                    a.extend(args.iter().map(String::as_str));
                    run("tc", &a)?;
                }
                None => {
                    run("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
                }
            }
        }
        if old.down != new.down {
            let state = if new.down { "down" } else { "up" };
            run("ip", &["-n", ns, "link", "set", "dev", dev, state])?;
        }
        match all.is_empty() {
            true => self.faults.remove(&h.name),
            false => self.faults.insert(h.name.clone(), all),
        };
        self.save(dir)?;
        tracing::info!(host = %h.name, link = link.as_str(), "network faults now: {:?}", new);
        Ok(())
    }

    /// Refuses `new` on `host`'s `link` when this lab cannot put it in
    /// force (the host is not on that network, or it needs netem).
    pub fn check(&self, host: &str, link: Link, new: &LinkFaults) -> Result<()> {
        let h = self.host(host)?;
        if !h.networks.contains(&Network::from(link)) {
            fail!("{} is not on the {} network", h.name, link.as_str());
        }
        if !self.netem {
            if new.duplicate.is_some() || new.reorder.is_some() {
                fail!("duplicate and reorder need tc netem, and this kernel has no sch_netem; nothing changed");
            }
            if new.delay.is_some_and(|d| d.jitter_ms > 0) {
                fail!("jitter needs tc netem, and this kernel has no sch_netem (busrig's switch delays by a fixed amount); nothing changed");
            }
            if new.delay.is_some() && h.name.eq_ignore_ascii_case("target") {
                fail!("without tc netem a delay is busrig's switch, which sits in the nodes and the bus, not on the target's link; put it on a node's storage link; nothing changed");
            }
        }
        Ok(())
    }

    /// The delay busrig's switch must carry on `host`'s `link` for `f`
    /// (none when the kernel has netem).
    pub fn switch_delay(&self, link: Link, f: &LinkFaults) -> Option<(SwitchDelay, u64)> {
        match (self.netem, f.delay) {
            (false, Some(d)) => Some((faults::switch_for(link), d.ms)),
            _ => None,
        }
    }

    /// Removes the virtual IPs (host addresses) from `host`'s public
    /// interface: what a dead server's network stack no longer answers
    /// for. The host's own address stays.
    pub fn flush_virtual_ips(&self, host: &str) -> Result<Vec<String>> {
        let h = self.host(host)?;
        if !h.networks.contains(&Network::Public) {
            return Ok(Vec::new());
        }
        let ns = h.namespace.as_str();
        let dev = Link::Public.interface();
        let text = run("ip", &["-n", ns, "-4", "-o", "address", "show", "dev", dev])?;
        let mut removed = Vec::new();
        for a in text
            .split_whitespace()
            .filter(|w| w.ends_with("/32") && w.starts_with("10."))
        {
            run("ip", &["-n", ns, "address", "del", a, "dev", dev])?;
            removed.push(a.trim_end_matches("/32").to_string());
        }
        Ok(removed)
    }

    /// Removes every namespace, link and bridge this lab recorded that is
    /// still there and still carries its marker, killing what still runs
    /// in its namespaces; what does not match is left alone and named in
    /// the answer. `hosts.json` goes once nothing is left.
    pub fn teardown(&mut self, dir: &Path) -> Result<Vec<String>> {
        let marker = self.marker();
        let mut left = Vec::new();
        for c in self.created.clone().iter().rev() {
            match c {
                Created::Namespace { name } => {
                    if !namespace_path(name).exists() {
                        continue;
                    }
                    let lo =
                        run("ip", &["-n", name, "link", "show", "dev", "lo"]).unwrap_or_default();
                    if !lo.contains(&format!("alias {marker}")) {
                        left.push(format!("namespace {name} (not marked {marker})"));
                        continue;
                    }
                    kill_namespace_processes(name);
                    run("ip", &["netns", "del", name])?;
                }
                Created::Bridge { name } | Created::Veth { name } => {
                    let sys = Path::new("/sys/class/net").join(name);
                    if !sys.exists() {
                        continue;
                    }
                    let alias = fs::read_to_string(sys.join("ifalias")).unwrap_or_default();
                    if alias.trim() != marker {
                        left.push(format!(
                            "link {name} (alias {:?}, not {marker})",
                            alias.trim()
                        ));
                        continue;
                    }
                    run("ip", &["link", "del", "dev", name])?;
                }
                Created::Claim { path } => {
                    let ours = fs::read_to_string(path)
                        .is_ok_and(|t| t.split_whitespace().next() == Some(self.tag.as_str()));
                    if ours {
                        fs::remove_file(path)?;
                    }
                }
            }
        }
        if left.is_empty() {
            match fs::remove_file(super::hosts_file(dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        } else {
            self.save(dir)?;
        }
        Ok(left)
    }
}

/// Whether a claim file (`TAG DIR`) is left over from a lab that crashed:
/// its lab has no bridge, and it is not so young that the lab may still
/// be making them.
fn claim_is_stale(path: &Path, text: &str) -> bool {
    let Some(tag) = text.split_whitespace().next() else {
        return true;
    };
    let bridge = Path::new("/sys/class/net").join(format!("brg-{tag}-mgmt"));
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    !bridge.exists() && age > STALE_CLAIM
}

/// Whether tc netem works, tried on `lo` in namespace `ns`.
fn netem_available(ns: &str) -> bool {
    let added = run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    match added {
        Ok(_) => {
            let _ = run("tc", &["-n", ns, "qdisc", "del", "dev", "lo", "root"]);
            true
        }
        Err(e) => {
            tracing::info!(error = %e, "no tc netem in this kernel; delays go through busrig's switch");
            false
        }
    }
}

/// SIGKILLs every process still in namespace `ns` (`ip netns pids`) and
/// waits for them to go, so the namespace is freed when it is deleted.
fn kill_namespace_processes(ns: &str) {
    let pids: Vec<i32> = run("ip", &["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &p in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && pids.iter().any(|&p| crate::alive(p as u32)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(block: u8) -> NetnsLab {
        NetnsLab {
            tag: "abc123".into(),
            block,
            netem: false,
            created: Vec::new(),
            hosts: vec![NetnsHost {
                name: "NODE1".into(),
                namespace: "busrig-abc123-node1".into(),
                networks: Network::ALL.to_vec(),
            }],
            faults: BTreeMap::new(),
        }
    }

    #[test]
    fn the_address_plan_gives_each_lab_four_networks() {
        let l = lab(3);
        assert_eq!(
            l.addr(Network::Mgmt, TARGET_HOST),
            Ipv4Addr::new(10, 77, 12, 1)
        );
        assert_eq!(
            l.addr(Network::Private, node_host(1)),
            Ipv4Addr::new(10, 77, 13, 11)
        );
        assert_eq!(
            l.addr(Network::Public, LAB_HOST),
            Ipv4Addr::new(10, 77, 14, 254)
        );
        assert_eq!(l.subnet(Network::Storage), "10.77.15");
        assert_eq!(l.bridge(Network::Private), "brg-abc123-priv");
        // Interface names fit IFNAMSIZ.
        assert!(l.bridge(Network::Storage).len() <= 15);
        assert!(format!("v{}{}{}", l.tag, 8, 3).len() <= 15);
        assert_eq!(l.namespace_of("node1"), Some("busrig-abc123-node1"));
    }

    #[test]
    fn a_claim_is_stale_only_when_old_and_bridgeless() {
        let dir = std::env::temp_dir().join(format!("busrig-claim-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("block-0");
        fs::write(&p, "ffffff /tmp/x\n").unwrap();
        // Just made: its lab may still be making its bridges.
        assert!(!claim_is_stale(&p, "ffffff /tmp/x"));
        assert!(claim_is_stale(&p, ""));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hosts_json_names_the_mode() {
        let h = Hosts::Netns(lab(0));
        let text = serde_json::to_string(&h).unwrap();
        assert!(text.starts_with("{\"mode\":\"netns\""), "{text}");
        let back: Hosts = serde_json::from_str(&text).unwrap();
        assert_eq!(back.mode(), super::super::HostsMode::Netns);
        let single: Hosts = serde_json::from_str("{\"mode\":\"single\"}").unwrap();
        assert_eq!(single.mode(), super::super::HostsMode::Single);
    }
}
