//! Kernel network faults on one link of a lab host, and how they are
//! written for the kernel: the nftables table that drops (a cut, random
//! loss), the tc queueing discipline that shapes (tbf for a rate limit,
//! netem for delay, jitter, duplication and reordering), and the link
//! state (a pulled cable). Pure: [`nft_ruleset`] and [`tc_args`] return
//! text and arguments; `netns` runs them in the host's namespace.
//! docs/hosts.md has the table of what each fault does in kernel terms.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Link;

/// Which way a drop applies, seen from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Packets arriving at the host.
    In,
    /// Packets the host sends.
    Out,
    #[default]
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }

    fn covers(self, d: Direction) -> bool {
        self == Direction::Both || self == d
    }
}

/// A delay on the host's outgoing packets, with optional jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
}

/// What is in force on one link of one host. Every field is independent;
/// `clear` empties them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFaults {
    /// Every packet dropped (a partition), one way or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Direction>,
    /// Percentage of packets dropped at random, and which way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<(u8, Direction)>,
    /// A tc rate (`10mbit`) for the host's sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Percentage of sent packets duplicated (netem only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<u8>,
    /// Percentage of sent packets sent out of order (netem only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<u8>,
    /// The link is down (the cable pulled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

impl LinkFaults {
    pub fn is_empty(&self) -> bool {
        *self == LinkFaults::default()
    }

    /// Whether tc netem is needed for what is in force.
    pub fn needs_netem(&self) -> bool {
        self.delay.is_some() || self.duplicate.is_some() || self.reorder.is_some()
    }
}

/// One `busrig lab net` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFault {
    Cut(Direction),
    Loss(u8, Direction),
    Rate(String),
    Delay(Delay),
    Duplicate(u8),
    Reorder(u8),
    Down,
    Up,
    Clear,
}

/// The words `busrig lab net` takes, for its help and its errors.
pub const FAULT_WORDS: &str = "cut [in|out], loss PCT% [in|out], rate RATE (e.g. 10mbit), \
     delay MS[ms] [JITTER[ms]], duplicate PCT%, reorder PCT%, down, up, clear";

fn percent(w: &str) -> Result<u8, String> {
    let n = w.strip_suffix('%').unwrap_or(w);
    match n.parse::<u8>() {
        Ok(p) if (1..=99).contains(&p) => Ok(p),
        _ => Err(format!(
            "{w:?} is not a percentage from 1% to 99% (100% is `cut`)"
        )),
    }
}

fn millis(w: &str) -> Result<u64, String> {
    let n = w.strip_suffix("ms").unwrap_or(w);
    match n.parse::<u64>() {
        Ok(ms) if ms <= 60_000 => Ok(ms),
        _ => Err(format!("{w:?} is not a delay in milliseconds (0 to 60000)")),
    }
}

/// A tc rate: a number and a unit tc knows (`bit`, `kbit`, `mbit`, `gbit`);
/// its bits per second.
pub fn rate_bits(w: &str) -> Result<u64, String> {
    let units = [
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ];
    let bad = || format!("{w:?} is not a rate like 10mbit, 512kbit or 1gbit");
    let (n, mult) = units
        .iter()
        .find_map(|(u, m)| w.strip_suffix(u).map(|n| (n, *m)))
        .ok_or_else(bad)?;
    let bits = n.parse::<u64>().map_err(|_| bad())?.saturating_mul(mult);
    if bits < 8_000 {
        return Err(format!(
            "{w:?} is below 8kbit, too slow to carry a heartbeat"
        ));
    }
    Ok(bits)
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "both" => Ok(Direction::Both),
            _ => Err(format!("{s:?} is not a direction (in, out or both)")),
        }
    }
}

impl NetFault {
    /// Parses `busrig lab net`'s fault words (see [`FAULT_WORDS`]).
    pub fn parse(words: &[String]) -> Result<NetFault, String> {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let dir = |rest: &[&str]| -> Result<Direction, String> {
            match rest {
                [] => Ok(Direction::Both),
                [d] => d.parse(),
                _ => Err(format!("too many words: {}", rest.join(" "))),
            }
        };
        let f = match w.as_slice() {
            ["cut", rest @ ..] => NetFault::Cut(dir(rest)?),
            ["loss", p, rest @ ..] => NetFault::Loss(percent(p)?, dir(rest)?),
            ["rate", r] => {
                rate_bits(r)?;
                NetFault::Rate(r.to_string())
            }
            ["delay", d] => NetFault::Delay(Delay {
                ms: millis(d)?,
                jitter_ms: 0,
            }),
            ["delay", d, j] => NetFault::Delay(Delay {
                ms: millis(d)?,
                jitter_ms: millis(j)?,
            }),
            ["duplicate", p] => NetFault::Duplicate(percent(p)?),
            ["reorder", p] => NetFault::Reorder(percent(p)?),
            ["down"] => NetFault::Down,
            ["up"] => NetFault::Up,
            ["clear"] => NetFault::Clear,
            _ => {
                return Err(format!(
                    "{:?} is not a network fault; one of: {FAULT_WORDS}",
                    words.join(" ")
                ))
            }
        };
        Ok(f)
    }

    /// `f` with this fault added (or, for `up` and `clear`, taken away).
    pub fn apply_to(&self, f: &LinkFaults) -> LinkFaults {
        let mut f = f.clone();
        match self {
            NetFault::Cut(d) => f.cut = Some(*d),
            NetFault::Loss(p, d) => f.loss = Some((*p, *d)),
            NetFault::Rate(r) => f.rate = Some(r.clone()),
            NetFault::Delay(d) => f.delay = Some(*d).filter(|d| d.ms > 0 || d.jitter_ms > 0),
            NetFault::Duplicate(p) => f.duplicate = Some(*p),
            NetFault::Reorder(p) => f.reorder = Some(*p),
            NetFault::Down => f.down = true,
            NetFault::Up => f.down = false,
            NetFault::Clear => f = LinkFaults::default(),
        }
        f
    }
}

/// The name of the nftables table the lab owns in each host's namespace.
pub const NFT_TABLE: &str = "busrig";

/// The whole nftables script for a host's links: the lab's table deleted
/// and written again in one transaction (`nft -f`), so a fault changes
/// atomically and nothing else in the namespace is touched. `netdev`
/// chains on each interface's ingress and egress hooks see every frame,
/// ARP included, like a switch port that stops forwarding.
pub fn nft_ruleset(links: &BTreeMap<Link, LinkFaults>) -> String {
    // Creating it first makes the delete valid when it does not exist yet.
    let mut s = format!("table netdev {NFT_TABLE}\ndelete table netdev {NFT_TABLE}\n");
    let mut chains = String::new();
    for (link, f) in links {
        let dev = link.interface();
        for (hook, way) in [("ingress", Direction::In), ("egress", Direction::Out)] {
            let mut rules = Vec::new();
            if f.cut.is_some_and(|d| d.covers(way)) {
                rules.push("drop".to_string());
            } else if let Some((p, _)) = f.loss.filter(|(_, d)| d.covers(way)) {
                rules.push(format!("numgen random mod 100 < {p} drop"));
            }
            if rules.is_empty() {
                continue;
            }
            chains += &format!(
                "  chain {dev}_{hook} {{\n    type filter hook {hook} device \"{dev}\" priority 0;\n"
            );
            for r in rules {
                chains += &format!("    {r}\n");
            }
            chains += "  }\n";
        }
    }
    if !chains.is_empty() {
        s += &format!("table netdev {NFT_TABLE} {{\n{chains}}}\n");
    }
    s
}

/// The `tc qdisc` arguments that put `f`'s shaping on interface `dev`
/// (the host's sends), or None when nothing shapes it (then the root
/// qdisc is deleted). With `netem` false the delay is left out: busrig's
/// switch carries it instead.
pub fn tc_args(dev: &str, f: &LinkFaults, netem: bool) -> Option<Vec<String>> {
    let mut a: Vec<String> = ["qdisc", "replace", "dev", dev, "root"]
        .map(String::from)
        .to_vec();
    if netem && f.needs_netem() {
        a.push("netem".into());
        if let Some(d) = f.delay {
            a.extend(["delay".into(), format!("{}ms", d.ms)]);
            if d.jitter_ms > 0 {
                a.push(format!("{}ms", d.jitter_ms));
            }
        }
        if let Some(p) = f.duplicate {
            a.extend(["duplicate".into(), format!("{p}%")]);
        }
        if let Some(p) = f.reorder {
            // netem reorders only delayed packets: give it a gap to use.
            if f.delay.is_none() {
                a.extend(["delay".into(), "10ms".into()]);
            }
            a.extend(["reorder".into(), format!("{p}%")]);
        }
        if let Some(r) = &f.rate {
            a.extend(["rate".into(), r.clone()]);
        }
        return Some(a);
    }
    let r = f.rate.as_ref()?;
    // A token bucket: 10 ms worth of tokens (at least a full frame) and
    // at most 50 ms of queue, so a slow link delays a little and then drops.
    let bits = rate_bits(r).unwrap_or(8_000);
    let burst = (bits / 8 / 100).max(1600);
    a.extend([
        "tbf".into(),
        "rate".into(),
        r.clone(),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "50ms".into(),
    ]);
    Some(a)
}

/// Who carries a delay on a kernel without netem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchDelay {
    /// The node's cluster transport holds its datagrams (`POST /net-delay`).
    Cluster,
    /// The bus holds every command of the node's initiator (`POST /path`).
    Bus,
}

/// One line per fault in force on `link`, with the mechanism that
/// carries it: what `busrig lab status` shows.
pub fn describe(link: Link, f: &LinkFaults, netem: bool) -> Vec<(String, String)> {
    let dev = link.interface();
    let mut out = Vec::new();
    if let Some(d) = f.cut {
        out.push((
            format!("cut ({})", d.as_str()),
            format!("nftables netdev drop on {dev}"),
        ));
    }
    if let Some((p, d)) = f.loss {
        out.push((
            format!("loss {p}% ({})", d.as_str()),
            format!("nftables numgen random mod 100 < {p} drop on {dev}"),
        ));
    }
    if let Some(r) = &f.rate {
        let how = if netem && f.needs_netem() {
            "tc netem rate"
        } else {
            "tc tbf"
        };
        out.push((format!("rate {r}"), format!("{how} on {dev} (sends)")));
    }
    if let Some(d) = f.delay {
        let what = match d.jitter_ms {
            0 => format!("delay {} ms", d.ms),
            j => format!("delay {} ms jitter {j} ms", d.ms),
        };
        let how = match (netem, switch_for(link)) {
            (true, _) => format!("tc netem on {dev} (sends)"),
            (false, SwitchDelay::Cluster) => {
                "busrig switch: the node's cluster datagrams held (no sch_netem in this kernel)"
                    .to_string()
            }
            (false, SwitchDelay::Bus) => {
                "busrig bus path delay per command (no sch_netem in this kernel)".to_string()
            }
        };
        out.push((what, how));
    }
    if let Some(p) = f.duplicate {
        out.push((format!("duplicate {p}%"), format!("tc netem on {dev}")));
    }
    if let Some(p) = f.reorder {
        out.push((format!("reorder {p}%"), format!("tc netem on {dev}")));
    }
    if f.down {
        out.push(("link down".into(), format!("ip link set {dev} down")));
    }
    out
}

/// Which of busrig's own switches stands in for netem's delay on `link`.
pub fn switch_for(link: Link) -> SwitchDelay {
    match link {
        Link::Private | Link::Public => SwitchDelay::Cluster,
        Link::Storage => SwitchDelay::Bus,
    }
}

impl fmt::Display for NetFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFault::Cut(d) => write!(f, "cut ({})", d.as_str()),
            NetFault::Loss(p, d) => write!(f, "loss {p}% ({})", d.as_str()),
            NetFault::Rate(r) => write!(f, "rate {r}"),
            NetFault::Delay(d) => write!(f, "delay {} ms jitter {} ms", d.ms, d.jitter_ms),
            NetFault::Duplicate(p) => write!(f, "duplicate {p}%"),
            NetFault::Reorder(p) => write!(f, "reorder {p}%"),
            NetFault::Down => f.write_str("down"),
            NetFault::Up => f.write_str("up"),
            NetFault::Clear => f.write_str("clear"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn fault_words_parse_or_say_why_not() {
        let ok = [
            ("cut", NetFault::Cut(Direction::Both)),
            ("cut in", NetFault::Cut(Direction::In)),
            ("loss 20%", NetFault::Loss(20, Direction::Both)),
            ("loss 5 out", NetFault::Loss(5, Direction::Out)),
            ("rate 10mbit", NetFault::Rate("10mbit".into())),
            (
                "delay 200ms",
                NetFault::Delay(Delay {
                    ms: 200,
                    jitter_ms: 0,
                }),
            ),
            (
                "delay 50 10ms",
                NetFault::Delay(Delay {
                    ms: 50,
                    jitter_ms: 10,
                }),
            ),
            ("duplicate 1%", NetFault::Duplicate(1)),
            ("reorder 25%", NetFault::Reorder(25)),
            ("down", NetFault::Down),
            ("up", NetFault::Up),
            ("clear", NetFault::Clear),
        ];
        for (w, want) in ok {
            assert_eq!(NetFault::parse(&words(w)), Ok(want), "{w}");
        }
        for bad in [
            "",
            "loss",
            "loss 100%",
            "loss 0%",
            "loss 20% sideways",
            "rate fast",
            "rate 10",
            "rate 1kbit",
            "delay soon",
            "delay 999999ms",
            "cut in out",
            "unplug",
        ] {
            assert!(NetFault::parse(&words(bad)).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn no_fault_writes_an_empty_table_delete() {
        let s = nft_ruleset(&BTreeMap::new());
        assert_eq!(s, "table netdev busrig\ndelete table netdev busrig\n");
    }

    #[test]
    fn a_cut_and_a_one_way_loss_become_netdev_chains() {
        let mut links = BTreeMap::new();
        links.insert(
            Link::Private,
            LinkFaults {
                cut: Some(Direction::Both),
                ..LinkFaults::default()
            },
        );
        links.insert(
            Link::Public,
            LinkFaults {
                loss: Some((20, Direction::In)),
                ..LinkFaults::default()
            },
        );
        let s = nft_ruleset(&links);
        assert!(s.contains("chain priv_ingress {\n    type filter hook ingress device \"priv\" priority 0;\n    drop\n"), "{s}");
        assert!(s.contains("chain priv_egress"), "{s}");
        assert!(
            s.contains(
                "hook ingress device \"pub\" priority 0;\n    numgen random mod 100 < 20 drop"
            ),
            "{s}"
        );
        assert!(!s.contains("pub_egress"), "one way only: {s}");
    }

    #[test]
    fn shaping_uses_tbf_without_netem_and_netem_when_there() {
        let f = LinkFaults {
            rate: Some("10mbit".into()),
            delay: Some(Delay {
                ms: 200,
                jitter_ms: 20,
            }),
            ..LinkFaults::default()
        };
        let tbf = tc_args("priv", &f, false).unwrap().join(" ");
        assert_eq!(
            tbf,
            "qdisc replace dev priv root tbf rate 10mbit burst 12500 latency 50ms"
        );
        let netem = tc_args("priv", &f, true).unwrap().join(" ");
        assert_eq!(
            netem,
            "qdisc replace dev priv root netem delay 200ms 20ms rate 10mbit"
        );
        assert_eq!(tc_args("priv", &LinkFaults::default(), true), None);
        // A delay alone has nothing for tc without netem: the switch has it.
        let d = LinkFaults {
            delay: f.delay,
            ..LinkFaults::default()
        };
        assert_eq!(tc_args("priv", &d, false), None);
        let why = describe(Link::Private, &d, false);
        assert!(why[0].1.contains("busrig switch"), "{why:?}");
    }

    #[test]
    fn clear_takes_everything_and_up_only_the_link_state() {
        let f = NetFault::Down
            .apply_to(&NetFault::Loss(3, Direction::Both).apply_to(&LinkFaults::default()));
        assert!(f.down && f.loss.is_some());
        let up = NetFault::Up.apply_to(&f);
        assert!(!up.down && up.loss.is_some());
        assert!(NetFault::Clear.apply_to(&f).is_empty());
    }
}
