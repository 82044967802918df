//! Real-process tests of the namespace hosts (`busrig lab up --hosts
//! netns`): the target and every node in a network namespace of its own,
//! faults applied by the kernel (nftables, tc, link state), virtual IPs as
//! kernel addresses announced by gratuitous ARP (README "Network-namespace
//! hosts", docs/hosts.md).
//!
//! They need root, iproute2, nftables and arping: without them they skip
//! with a visible message, and fail under `BUSRIG_EXTERNAL=require`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use busrig_lab::hosts::netns::{NetnsLab, Network};
use busrig_lab::hosts::{Hosts, HostsMode};

mod common;
use common::lab::{busrig, Lab, POLL};
use common::{external_tool, running_as_root};

/// Whether this machine can run namespace labs (or the test skips).
fn netns_ready() -> bool {
    running_as_root("--hosts netns")
        & external_tool("ip", "iproute2")
        & external_tool("tc", "iproute2")
        & external_tool("nft", "nftables")
        & external_tool("arping", "iputils-arping")
}

impl Lab {
    fn netns(&self) -> NetnsLab {
        match self.handle.hosts().expect("hosts.json") {
            Hosts::Netns(n) => n,
            Hosts::Single => panic!("the lab is not on namespace hosts"),
        }
    }

    /// The quorum owner that members agree on, waiting for one.
    fn agreed_owner(&self, among: &[String]) -> String {
        let mut owner = None;
        self.wait(
            "the members name one quorum owner",
            Duration::from_secs(30),
            |l| {
                let named: Vec<Option<String>> = among
                    .iter()
                    .map(|n| {
                        l.status(n)
                            .filter(|s| s.member)
                            .and_then(|s| s.quorum_owner)
                    })
                    .collect();
                owner = named[0].clone();
                owner.is_some() && named.iter().all(|o| *o == owner)
            },
        );
        owner.unwrap()
    }

    /// The node a group is online on, reported by that node.
    fn online_on(&self, group: &str) -> Option<String> {
        busrig_lab::group_online_on(&self.rt, &self.cfg, group)
    }

    /// `busrig cluster evs create` of a mail virtual server on data LUN 1.
    fn virtual_server(&self, group: &str, ip: &str, preferred: &str) {
        let disk = format!("iscsi://{}/{}/1", self.portal, busrig_lab::LAB_TARGET);
        self.cluster(&[
            "evs",
            "create",
            group,
            "--ip",
            ip,
            "--disk",
            &disk,
            "--preferred",
            preferred,
        ]);
    }

    /// EVS1, a mail virtual server at public address `.host`, online on
    /// the quorum owner (preferred; another node second): the lab's hosts,
    /// the nodes, the owner and the address.
    fn evs1_on_the_owner(
        &self,
        host: u8,
        bound: Duration,
    ) -> (NetnsLab, Vec<String>, String, String) {
        let n = self.netns();
        let all = self.names();
        let owner = self.agreed_owner(&all);
        let other = all.iter().find(|x| **x != owner).unwrap().clone();
        let vip = format!("{}.{host}", n.subnet(Network::Public));
        self.virtual_server("EVS1", &vip, &format!("{owner},{other}"));
        self.wait("EVS1 online on the quorum owner", bound, |l| {
            l.online_on("EVS1").as_deref() == Some(owner.as_str())
        });
        (n, all, owner, vip)
    }
}

/// `ip ARGS...`'s stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hardware address of interface `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    let text = ip(&["-n", ns, "link", "show", "dev", dev]);
    let at = text.find("link/ether ").expect("an ethernet link") + "link/ether ".len();
    text[at..at + 17].to_string()
}

/// Whether an SMTP server greets at `addr` (from the test's own network
/// stack, the lab's end of the public bridge).
fn smtp_greets(addr: &str) -> bool {
    let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220")
}

/// Names of the namespaces and links of lab `tag` still on this machine.
fn leftovers(tag: &str) -> Vec<String> {
    let mut left: Vec<String> = ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(tag))
        .map(String::from)
        .collect();
    left.extend(
        ip(&["-o", "link", "show"])
            .lines()
            // `7: NAME@PEER: <FLAGS> ...`
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| n.contains(tag))
            .map(String::from),
    );
    left
}

/// The owner of a virtual server and of the quorum is cut off on both
/// cluster networks by nftables in its namespace: the majority side takes
/// the quorum and the group, and a client in the machine's own namespace
/// reaches the virtual server's address on its new host through the kernel
/// (the neighbour entry moved to the new host's interface).
#[test]
fn a_partitioned_owner_loses_quorum_and_group_and_clients_follow_the_address() {
    if !netns_ready() {
        return;
    }
    let lab = Lab::up_on(3, "majority", "fast", HostsMode::Netns);
    let bound = Duration::from_secs(40);
    let (n, all, owner, vip) = lab.evs1_on_the_owner(1, bound);
    let smtp = format!("{vip}:2525");
    lab.wait("EVS1 answering at its address", bound, |_| {
        smtp_greets(&smtp)
    });
    let owner_ns = n.namespace_of(&owner).unwrap().to_string();
    assert!(
        ip(&["-n", &owner_ns, "address", "show", "dev", "pub"]).contains(&format!("{vip}/32")),
        "the virtual IP is a kernel address on {owner}'s public interface"
    );

    let out = lab.lab(&["partition", &owner, "--net", "both"]);
    assert!(out.contains("private cut, public cut"), "{out}");
    let rules = Command::new("ip")
        .args([
            "netns", "exec", &owner_ns, "nft", "list", "table", "netdev", "busrig",
        ])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for chain in ["priv_ingress", "priv_egress", "pub_ingress", "pub_egress"] {
        assert!(rules.contains(chain), "nftables chain {chain} in {rules}");
    }

    let rest: Vec<String> = all.iter().filter(|x| **x != owner).cloned().collect();
    lab.wait("the majority side takes the quorum", bound, |l| {
        rest.iter()
            .any(|x| l.status(x).is_some_and(|s| s.acting_owner))
    });
    let new_owner = lab.agreed_owner(&rest);
    assert_ne!(new_owner, owner);
    lab.wait("EVS1 online on the majority side", bound, |l| {
        busrig_lab::group_online_seen_by(&l.rt, &l.cfg, &new_owner, "EVS1")
            .is_some_and(|o| o != owner)
    });
    let host = busrig_lab::group_online_seen_by(&lab.rt, &lab.cfg, &new_owner, "EVS1").unwrap();
    lab.wait(
        "EVS1 answering at its address on its new host",
        bound,
        |_| smtp_greets(&smtp),
    );
    let host_ns = n.namespace_of(&host).unwrap().to_string();
    let neigh = ip(&["neigh", "show", &vip]);
    assert!(
        neigh.contains(&mac_of(&host_ns, "pub")),
        "the client's neighbour entry for {vip} points at {host}: {neigh}"
    );
    let old = ip(&["-n", &owner_ns, "address", "show", "dev", "pub"]);
    assert!(
        !old.contains(&format!("{vip}/32")),
        "the cut-off minority let go of the address: {old}"
    );

    lab.lab(&["heal", &owner]);
    lab.wait("the healed node rejoins", bound, |l| {
        l.status(&owner).is_some_and(|s| s.member)
    });
    let tag = n.tag.clone();
    lab.lab(&["down"]);
    assert_eq!(leftovers(&tag), Vec::<String>::new(), "left after down");
}

/// With the `mscs2003` profile, 200 ms of delay on the private network
/// (every node's sends; tc netem where the kernel has it, busrig's switch
/// otherwise) and then the owner's public link pulled (`ip link set pub
/// down`, private intact) each leave the membership, the quorum owner and
/// the group where they were.
#[test]
fn private_delay_and_a_pulled_public_link_cause_no_failover_under_mscs2003() {
    if !netns_ready() {
        return;
    }
    let lab = Lab::up_on(2, "disk-scsi2", "mscs2003", HostsMode::Netns);
    let (n, all, owner, _) = lab.evs1_on_the_owner(2, Duration::from_secs(60));
    let epoch = lab.status(&owner).unwrap().epoch;
    // Six missed heartbeats (7.2 s) start a regroup; watch twice that.
    let watch = lab.cfg.timing.detection() * 2;
    let steady = |what: &str| {
        let until = Instant::now() + watch;
        while Instant::now() < until {
            for x in &all {
                let s = lab.status(x).unwrap_or_else(|| panic!("{x} answers"));
                assert!(
                    s.member && s.epoch == epoch && s.quorum_owner.as_deref() == Some(&owner),
                    "{what}: {x} sees epoch {:?}, owner {:?}, member {}{}",
                    s.epoch,
                    s.quorum_owner,
                    s.member,
                    lab.logs()
                );
            }
            assert_eq!(
                lab.online_on("EVS1").as_deref(),
                Some(owner.as_str()),
                "{what}"
            );
            std::thread::sleep(POLL * 10);
        }
    };

    for x in &all {
        let out = lab.lab(&["net", x, "--net", "private", "delay", "200ms"]);
        let mechanism = if n.netem { "tc netem" } else { "busrig switch" };
        assert!(out.contains(mechanism), "{out}");
    }
    let status = lab.lab(&["status"]);
    assert!(status.contains("delay 200 ms"), "{status}");
    if !n.netem {
        eprintln!("no sch_netem in this kernel: the 200 ms delay went through busrig's switch");
        assert!(lab.log_of(&owner).contains("network delay switch set"));
    }
    steady("200 ms private delay");
    for x in &all {
        lab.lab(&["net", x, "--net", "private", "clear"]);
    }

    let out = lab.lab(&["net", &owner, "--net", "public", "down"]);
    assert!(out.contains("link down [ip link set pub down]"), "{out}");
    let ns = n.namespace_of(&owner).unwrap();
    assert!(ip(&["-n", ns, "link", "show", "dev", "pub"]).contains("state DOWN"));
    steady("public link of the owner pulled");
    lab.lab(&["net", &owner, "--net", "public", "up"]);
}

/// `busrig lab down` after the lab's processes all died removes every
/// namespace and link the lab made, and leaves alone a link whose marker
/// is not the lab's any more.
#[test]
fn down_after_a_crash_removes_what_the_lab_made_and_nothing_else() {
    if !netns_ready() {
        return;
    }
    let lab = Lab::up_on(1, "disk-scsi2", "fast", HostsMode::Netns);
    let n = lab.netns();
    // The lab "crashes": every process dies at once.
    let state = lab.handle.state().unwrap();
    for p in state.processes() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid.unwrap() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Somebody took over one bridge (its alias says so).
    let bridge = format!("brg-{}-stor", n.tag);
    let set = Command::new("ip")
        .args(["link", "set", "dev", &bridge, "alias", "someone-else"])
        .status()
        .unwrap();
    assert!(set.success());
    let out = busrig(&["lab", "down", "--dir", lab.d()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let left = leftovers(&n.tag);
    // Clean up what the test itself re-marked, before any assertion.
    let _ = Command::new("ip")
        .args(["link", "del", "dev", &bridge])
        .status();
    assert!(!out.status.success(), "down names what it left");
    assert!(err.contains(&bridge), "{err}");
    assert_eq!(
        left,
        vec![bridge.clone()],
        "only the re-marked bridge is left"
    );
    assert!(leftovers(&n.tag).is_empty());
}
