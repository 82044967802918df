//! Random fault schedules, fully determined by a seed (ChaCha8, whose
//! stream is fixed across platforms and `rand` versions).
//!
//! A schedule is a list of faults, each with a start, a duration and a
//! target; at least half of the node faults aim at the quorum owner or a
//! group's owner (resolved when the fault starts), and about one in three
//! starts while the previous one is still in force. Every fault ends by
//! the end of the schedule's fault window; the runner then heals whatever
//! is left and waits for the cluster to converge (docs/chaos.md).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::Net;

/// The kinds of fault a schedule draws from (`--faults` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the node (and its applications); start it again at the end.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Cut the node's cluster traffic on one network or both, then heal.
    Partition,
    /// Freeze the node's storage paths (commands wait), then thaw.
    Freeze,
    /// Delay every command on the node's paths, then clear.
    Delay,
    /// Cut the node's paths (sessions closed, logins refused), then restore.
    Cut,
    /// Fail the node's next media commands with a sense code, then clear.
    Sense,
    /// A bus reset: SCSI-2 reservations cleared, unit attention 29/02.
    Reset,
    /// Power-cycle a data LUN: unflushed cached writes lost, 29/01.
    PowerCycle,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Freeze,
        FaultKind::Delay,
        FaultKind::Cut,
        FaultKind::Sense,
        FaultKind::Reset,
        FaultKind::PowerCycle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Freeze => "freeze",
            FaultKind::Delay => "delay",
            FaultKind::Cut => "cut",
            FaultKind::Sense => "sense",
            FaultKind::Reset => "reset",
            FaultKind::PowerCycle => "power-cycle",
        }
    }

    /// Whether the fault aims at a node (the others hit the bus or a LUN).
    pub fn on_node(self) -> bool {
        !matches!(self, FaultKind::Reset | FaultKind::PowerCycle)
    }

    /// Whether it stops the node's process (two of these never overlap on
    /// one node).
    pub fn on_process(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Pause)
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown fault {s:?} (one of {})", all.join(", "))
            })
    }
}

/// Parses a comma-separated `--faults` list (`all` for every kind).
pub fn parse_faults(list: &str) -> Result<Vec<FaultKind>, String> {
    if list.trim() == "all" {
        return Ok(FaultKind::ALL.to_vec());
    }
    let mut v: Vec<FaultKind> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err("--faults needs at least one fault".into());
    }
    Ok(v)
}

/// Whom a fault hits; owners are resolved when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "target", content = "name", rename_all = "kebab-case")]
pub enum Target {
    QuorumOwner,
    /// The owner of this group.
    GroupOwner(String),
    Node(String),
    /// The whole bus (resets).
    Bus,
    /// A data LUN.
    Lun(u16),
}

impl Target {
    /// The scenario file's node form: `quorum-owner`, `owner:G` or a name.
    pub fn node_spec(&self) -> Option<String> {
        match self {
            Target::QuorumOwner => Some("quorum-owner".into()),
            Target::GroupOwner(g) => Some(format!("owner:{g}")),
            Target::Node(n) => Some(n.clone()),
            Target::Bus | Target::Lun(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Bus => f.write_str("bus"),
            Target::Lun(l) => write!(f, "LUN {l}"),
            other => f.write_str(&other.node_spec().unwrap_or_default()),
        }
    }
}

/// One fault: what, whom, when (ms after the workloads started) and for
/// how long; the details a kind needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    pub at_ms: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<Net>,
    /// Delay: milliseconds per command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Sense: how many commands fail, and with what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sense: Option<String>,
}

impl Fault {
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.duration_ms
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6.1}s {} {}",
            self.at_ms as f64 / 1000.0,
            self.kind.as_str(),
            self.target
        )?;
        if let Some(n) = self.net {
            write!(f, " ({})", n.as_str())?;
        }
        if let Some(d) = self.delay_ms {
            write!(f, " ({d} ms per command)")?;
        }
        if let (Some(c), Some(s)) = (self.count, &self.sense) {
            write!(f, " ({c} commands, sense {s})")?;
        }
        if self.on_node_or_lasting() {
            write!(f, " for {:.1}s", self.duration_ms as f64 / 1000.0)?;
        }
        Ok(())
    }
}

impl Fault {
    fn on_node_or_lasting(&self) -> bool {
        self.duration_ms > 0
    }
}

/// What a schedule is drawn from.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// The fault window, ms: faults start after 1 s and end by its end.
    pub window_ms: u64,
    pub nodes: Vec<String>,
    pub groups: Vec<String>,
    pub data_luns: u16,
    pub kinds: Vec<FaultKind>,
    /// The longest single fault, ms (from the profile: a little over the
    /// time a failover takes, so faults both do and do not outlast it).
    pub max_fault_ms: u64,
}

/// A seeded list of faults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub window_ms: u64,
    pub faults: Vec<Fault>,
}

/// Sense codes a failing path answers with (KEY/ASC/ASCQ, SPC-4 §4.5.6):
/// unrecovered read error, write fault, logical unit not ready
/// (becoming ready), internal target failure.
const SENSES: [&str; 4] = ["3/11/00", "3/03/00", "2/04/01", "4/44/00"];

impl Schedule {
    /// The schedule of `seed` under `spec`; the same seed and spec always
    /// give the same schedule.
    pub fn generate(seed: u64, spec: &ScheduleSpec) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = 1000u64.min(spec.window_ms / 4);
        let end = spec.window_ms.max(start + 1000);
        // About one fault per 3 s of window, at least 3.
        let count = ((end - start) / 3000).max(3) as usize;
        let count = rng.gen_range(count..=count + 2);
        let kinds = if spec.kinds.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            spec.kinds.clone()
        };
        let mut faults: Vec<Fault> = Vec::new();
        let mut t = start;
        for _ in 0..count {
            if t + 300 >= end {
                break;
            }
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let longest = spec.max_fault_ms.max(600).min(end - t);
            let duration_ms = if kind.on_node() {
                rng.gen_range(300..=longest.max(301))
            } else {
                0
            };
            let target = match kind {
                FaultKind::Reset => Target::Bus,
                FaultKind::PowerCycle => Target::Lun(rng.gen_range(1..=spec.data_luns.max(1))),
                _ => {
                    let roll: f64 = rng.gen();
                    if roll < 0.3 || spec.groups.is_empty() && roll < 0.6 {
                        Target::QuorumOwner
                    } else if roll < 0.6 {
                        Target::GroupOwner(spec.groups[rng.gen_range(0..spec.groups.len())].clone())
                    } else {
                        Target::Node(spec.nodes[rng.gen_range(0..spec.nodes.len())].clone())
                    }
                }
            };
            let mut f = Fault {
                kind,
                target,
                at_ms: t,
                duration_ms,
                net: None,
                delay_ms: None,
                count: None,
                sense: None,
            };
            match kind {
                FaultKind::Partition => f.net = Some(Net::ALL[rng.gen_range(0..Net::ALL.len())]),
                FaultKind::Delay => f.delay_ms = Some(rng.gen_range(20..=400)),
                FaultKind::Sense => {
                    f.count = Some(rng.gen_range(1..=8));
                    f.sense = Some(SENSES[rng.gen_range(0..SENSES.len())].into());
                }
                _ => {}
            }
            // One in three faults overlaps the one before; the others
            // start after it ended, with a pause for the cluster to act.
            t = if rng.gen_bool(1.0 / 3.0) {
                t + rng.gen_range(100..=(duration_ms / 2).max(101))
            } else {
                f.end_ms() + rng.gen_range(200..=spec.max_fault_ms.max(201))
            };
            faults.push(f);
        }
        Schedule {
            seed,
            window_ms: end,
            faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScheduleSpec {
        ScheduleSpec {
            window_ms: 15_000,
            nodes: vec!["NODE1".into(), "NODE2".into(), "NODE3".into()],
            groups: vec!["EVS1".into()],
            data_luns: 1,
            kinds: FaultKind::ALL.to_vec(),
            max_fault_ms: 4000,
        }
    }

    #[test]
    fn the_seed_determines_the_schedule() {
        let a = Schedule::generate(7, &spec());
        assert_eq!(a, Schedule::generate(7, &spec()));
        assert_ne!(a, Schedule::generate(8, &spec()));
        assert!(a.faults.len() >= 3, "{a:?}");
    }

    #[test]
    fn faults_stay_in_the_window_and_aim_at_owners_half_the_time() {
        let mut owners = 0;
        let mut node_faults = 0;
        let mut overlapping = 0;
        for seed in 0..200 {
            let s = Schedule::generate(seed, &spec());
            for (i, f) in s.faults.iter().enumerate() {
                assert!(
                    f.at_ms >= 1000 && f.end_ms() <= s.window_ms,
                    "{seed}: {f:?}"
                );
                if f.kind.on_node() {
                    node_faults += 1;
                    if matches!(f.target, Target::QuorumOwner | Target::GroupOwner(_)) {
                        owners += 1;
                    }
                }
                if i > 0 && f.at_ms < s.faults[i - 1].end_ms() {
                    overlapping += 1;
                }
            }
        }
        assert!(owners * 2 >= node_faults, "{owners} of {node_faults}");
        assert!(overlapping > 0);
    }

    #[test]
    fn the_fault_list_is_checked() {
        assert_eq!(
            parse_faults("kill, pause").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert_eq!(parse_faults("all").unwrap().len(), FaultKind::ALL.len());
        assert!(parse_faults("kill,explode")
            .unwrap_err()
            .contains("explode"));
        assert!(parse_faults("").is_err());
        let only = ScheduleSpec {
            kinds: vec![FaultKind::Reset],
            ..spec()
        };
        let s = Schedule::generate(1, &only);
        assert!(s
            .faults
            .iter()
            .all(|f| f.kind == FaultKind::Reset && f.target == Target::Bus));
    }
}
