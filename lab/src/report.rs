//! What `busrig lab` and `busrig demo` print: the lab's status (text and
//! JSON), the failover measurement, a partition's result, a scenario
//! step, and the demo's story and summary.

use std::fmt;
use std::path::Path;

use serde_json::{json, Value};

use crate::demo::{DemoEvent, DemoOptions, DemoReport};
use crate::hosts::netns::NetnsLab;
use crate::hosts::{faults, Hosts, Link};
use crate::scenario::StepReport;
use crate::state::process_state;
use crate::{Cut, FailoverReport, LabStatus, Takeover};

impl LabStatus {
    /// `busrig lab status --json`: the folder, the layout, each process
    /// with its state now, and the cluster's status (null when no node
    /// answers).
    pub fn to_json(&self, dir: &Path) -> Value {
        let s = &self.state;
        let procs: Vec<Value> = std::iter::once(&s.target)
            .chain(&s.nodes)
            .map(|p| json!({ "name": p.name, "pid": p.pid, "process": process_state(p.pid), "addr": p.addr, "log": p.log }))
            .collect();
        json!({
            "dir": dir, "quorum": s.quorum, "profile": s.profile,
            "hosts": self.hosts_json(),
            "processes": procs, "cluster": self.cluster,
        })
    }

    /// The hosts part of the JSON: the mode and, for namespace hosts,
    /// each host's namespace and every fault in force with its mechanism.
    fn hosts_json(&self) -> Value {
        match &self.hosts {
            Hosts::Single => json!({ "mode": "single" }),
            Hosts::Netns(n) => {
                let faults: Vec<Value> = fault_lines(n)
                    .into_iter()
                    .map(|(host, link, what, how)| {
                        json!({ "host": host, "net": link.as_str(), "fault": what, "mechanism": how })
                    })
                    .collect();
                json!({
                    "mode": "netns",
                    "tag": n.tag,
                    "networks": format!("10.77.{}.0/22", n.block * 4),
                    "netem": n.netem,
                    "namespaces": n.hosts.iter().map(|h| json!({"host": h.name, "namespace": h.namespace})).collect::<Vec<_>>(),
                    "faults": faults,
                })
            }
        }
    }

    /// `busrig lab status`: one line for the lab, one per process, one for
    /// the cluster.
    pub fn render(&self, dir: &Path) -> String {
        let s = &self.state;
        let mut out = format!(
            "Lab {} ({} nodes, quorum {}, profile {})\n  {:<8} {:<8} {:<12} ADDRESS",
            dir.display(),
            s.nodes.len(),
            s.quorum,
            s.profile,
            "NAME",
            "PID",
            "PROCESS"
        );
        for p in std::iter::once(&s.target).chain(&s.nodes) {
            let pid = p.pid.map_or("-".into(), |p| p.to_string());
            let state = process_state(p.pid);
            out += &format!("\n  {:<8} {:<8} {:<12} {}", p.name, pid, state, p.addr);
        }
        match &self.cluster {
            Some(c) => {
                let members: Vec<String> = c
                    .nodes
                    .iter()
                    .map(|n| format!("{}={}", n.name, n.state))
                    .collect();
                out += &format!(
                    "\n  cluster {}: epoch {}, quorum owner {}, members {}",
                    c.cluster,
                    c.epoch.map_or("-".into(), |e| e.to_string()),
                    c.quorum_owner.as_deref().unwrap_or("none"),
                    members.join(" ")
                );
            }
            None => out += "\n  cluster: no node answers",
        }
        if let Hosts::Netns(n) = &self.hosts {
            let netem = match n.netem {
                true => "tc netem available",
                false => "no tc netem in this kernel: delays go through busrig's switch",
            };
            out += &format!(
                "\n  hosts: network namespaces busrig-{}-*, networks 10.77.{}.0/22 (management, private, public, storage), {netem}",
                n.tag,
                n.block * 4
            );
            let lines = fault_lines(n);
            if lines.is_empty() {
                out += "\n  network faults: none";
            }
            for (host, link, what, how) in lines {
                out += &format!("\n  fault {host} {}: {what} [{how}]", link.as_str());
            }
        }
        out
    }
}

/// Every fault in force: host, link, the fault, its mechanism.
fn fault_lines(n: &NetnsLab) -> Vec<(String, Link, String, String)> {
    let mut out = Vec::new();
    for (host, links) in &n.faults {
        for (&link, f) in links {
            for (what, how) in faults::describe(link, f, n.netem) {
                out.push((host.clone(), link, what, how));
            }
        }
    }
    out
}

/// `private cut, public up`.
impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |cut: bool| if cut { "cut" } else { "up" };
        write!(
            f,
            "private {}, public {}",
            word(self.private),
            word(self.public)
        )
    }
}

/// One round of `busrig lab failover`.
impl fmt::Display for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, o, ms) = (&self.killed, &self.new_owner, self.ms);
        write!(f, "{k} killed, {o} owns the quorum after {ms} ms")
    }
}

/// The summary line of `busrig lab failover`.
impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kills ({}, {}): median {} ms, min {} ms, max {} ms",
            self.kills.len(),
            self.quorum,
            self.profile,
            self.median_ms,
            self.min_ms,
            self.max_ms
        )
    }
}

/// A finished scenario step: when, which, what it did.
impl fmt::Display for StepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at_ms as f64 / 1000.0;
        write!(
            f,
            "  {at:>8.3} s  step {:>2} {:<12} {}",
            self.step, self.action, self.outcome
        )
    }
}

/// The demo's layout: `4 nodes (3 active virtual servers, NODE4
/// passive), quorum disk-scsi2, profile fast`.
impl fmt::Display for DemoOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, passive) = (self.nodes, self.passive());
        let active = n.saturating_sub(1);
        write!(
            f,
            "{n} nodes ({active} active virtual servers, {passive} passive), "
        )?;
        write!(f, "quorum {}, profile {}", self.quorum, self.profile)?;
        match self.hosts {
            crate::hosts::HostsMode::Single => Ok(()),
            h => write!(f, ", hosts {}", h.as_str()),
        }
    }
}

/// Milliseconds as seconds, right-aligned: `   1.250 s`.
fn secs(ms: u64) -> String {
    format!("{:>8.3} s", ms as f64 / 1000.0)
}

/// The summary table, then the checks.
impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nSummary:")?;
        write!(
            f,
            "  {:<6} {:<8} {:<12} {:<8} {:>10} {:>6} {:>5} {:>5}  bus audit",
            "EVS", "before", "after fault", "final", "downtime", "acked", "lost", "dups"
        )?;
        for r in &self.rows {
            write!(
                f,
                "\n  {:<6} {:<8} {:<12} {:<8} {:>10} {:>6} {:>5} {:>5}  {}",
                r.group,
                r.before,
                r.after_fault,
                r.final_owner,
                secs(r.downtime_ms),
                r.acked,
                r.lost,
                r.dups,
                r.audit
            )?;
        }
        if self.failures.is_empty() {
            return write!(f, "\n\nAll checks passed: 0 acknowledged messages lost, exclusive disk ownership, failover to the passive node and failback.");
        }
        write!(f, "\n\nChecks failed:")?;
        self.failures
            .iter()
            .try_for_each(|e| write!(f, "\n  - {e}"))
    }
}

impl DemoEvent<'_> {
    /// Whether the event is trouble or housekeeping (stderr) rather than
    /// part of the demo's story (stdout).
    pub fn on_stderr(&self) -> bool {
        matches!(
            self,
            DemoEvent::ForcedKill { .. }
                | DemoEvent::Kept(_)
                | DemoEvent::CleanupFailed(_)
                | DemoEvent::Interrupted { .. }
                | DemoEvent::Down { .. }
        )
    }
}

/// The event as the demo tells it.
impl fmt::Display for DemoEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoEvent::Formed(t) => write!(f, "  cluster formed in {:.1} s", t.as_secs_f64()),
            DemoEvent::Online(before) => {
                let on: Vec<String> = before.iter().map(|(g, n)| format!("{g} on {n}")).collect();
                write!(f, "  virtual servers online: {}", on.join(", "))
            }
            DemoEvent::LoadStarted { rate, duration } => write!(
                f,
                "  mail load: {rate} msg/s to each virtual server for {:.0} s",
                duration.as_secs_f64()
            ),
            DemoEvent::Fault { victim } => {
                write!(f, "\n  t = 0: {victim} (owner of EVS1) killed with SIGKILL")
            }
            DemoEvent::Moved { owner, after } => {
                let after = after.as_secs_f64();
                write!(f, "  EVS1 online on {owner} {after:.3} s after the fault")
            }
            DemoEvent::Timeline(timeline) => {
                write!(f, "\nTimeline (relative to the fault):")?;
                timeline
                    .iter()
                    .try_for_each(|(t, what)| write!(f, "\n  {}  {what}", secs(*t)))
            }
            DemoEvent::Report(r) => write!(f, "{r}"),
            DemoEvent::ForcedKill { node, grace } => {
                write!(f, "{node} did not stop in {grace:?}; killing it")
            }
            DemoEvent::Interrupted { keep: false } => write!(
                f,
                "\nbusrig demo: interrupted: stopping the mail load, taking down the lab (Ctrl-C again kills it at once) ..."
            ),
            DemoEvent::Interrupted { keep: true } => write!(
                f,
                "\nbusrig demo: interrupted: stopping the mail load; the lab stays up (--keep)"
            ),
            DemoEvent::Down {
                after,
                dir,
                removed,
            } => {
                let (t, d) = (after.as_secs_f64(), dir.display());
                match removed {
                    true => write!(f, "busrig demo: the lab is down ({t:.1} s); its temporary folder {d} is removed"),
                    false => write!(f, "busrig demo: the lab is down ({t:.1} s); its folder and logs are kept in {d}"),
                }
            }
            DemoEvent::Kept(dir) => {
                let d = dir.display();
                write!(f, "\nThe lab is still running in {d} (busrig cluster --lab {d} status; busrig lab down --dir {d}).")
            }
            DemoEvent::CleanupFailed(e) => write!(f, "busrig demo: cleanup: {}", e.chain()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::SummaryRow;
    use std::time::Duration;

    #[test]
    fn failover_lines_read_as_sentences() {
        let t = Takeover {
            killed: "NODE1".into(),
            new_owner: "NODE2".into(),
            ms: 812,
        };
        assert_eq!(
            t.to_string(),
            "NODE1 killed, NODE2 owns the quorum after 812 ms"
        );
        let r = FailoverReport {
            quorum: "disk-scsi2".into(),
            profile: "fast".into(),
            nodes: 2,
            kills: vec![t],
            median_ms: 812,
            min_ms: 812,
            max_ms: 812,
        };
        assert_eq!(
            r.to_string(),
            "1 kills (disk-scsi2, fast): median 812 ms, min 812 ms, max 812 ms"
        );
        let j = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(j["kills"][0]["new_owner"], "NODE2");
        assert_eq!(j["median_ms"], 812);
        let cut = Cut {
            private: true,
            public: false,
        };
        assert_eq!(cut.to_string(), "private cut, public up");
    }

    #[test]
    fn steps_and_demo_events_line_up() {
        let s = StepReport {
            step: 3,
            action: "kill".into(),
            at_ms: 1250,
            took_ms: 1,
            outcome: "NODE1 killed".into(),
            ok: true,
        };
        assert_eq!(
            s.to_string(),
            "     1.250 s  step  3 kill         NODE1 killed"
        );
        let tl = [
            (0, "NODE1 killed".to_string()),
            (1500, "EVS1 online".to_string()),
        ];
        assert_eq!(
            DemoEvent::Timeline(&tl).to_string(),
            "\nTimeline (relative to the fault):\n     0.000 s  NODE1 killed\n     1.500 s  EVS1 online"
        );
        let moved = DemoEvent::Moved {
            owner: "NODE4",
            after: Duration::from_millis(2500),
        };
        assert_eq!(
            moved.to_string(),
            "  EVS1 online on NODE4 2.500 s after the fault"
        );
        let forced = DemoEvent::ForcedKill {
            node: "NODE1",
            grace: crate::INTERRUPT_GRACE,
        };
        assert_eq!(forced.to_string(), "NODE1 did not stop in 1.5s; killing it");
        assert!(!moved.on_stderr() && forced.on_stderr());
        let down = DemoEvent::Down {
            after: Duration::from_millis(1640),
            dir: std::path::Path::new("/tmp/busrig-demo-1"),
            removed: true,
        };
        assert_eq!(
            down.to_string(),
            "busrig demo: the lab is down (1.6 s); its temporary folder /tmp/busrig-demo-1 is removed"
        );
        assert!(down.on_stderr() && DemoEvent::Interrupted { keep: false }.on_stderr());
    }

    #[test]
    fn the_demo_summary_lists_each_server_and_the_checks() {
        let mut r = DemoReport {
            timeline: Vec::new(),
            rows: vec![SummaryRow {
                group: "EVS1".into(),
                before: "NODE1".into(),
                after_fault: "NODE4".into(),
                final_owner: "NODE1".into(),
                downtime_ms: 2500,
                acked: 100,
                lost: 0,
                dups: 0,
                audit: "ok".into(),
            }],
            failures: Vec::new(),
        };
        let text = r.to_string();
        assert!(text.starts_with("\nSummary:\n  EVS    before"), "{text}");
        assert!(
            text.contains(
                "\n  EVS1   NODE1    NODE4        NODE1       2.500 s    100     0     0  ok\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("\n\nAll checks passed: 0 acknowledged messages lost, exclusive disk ownership, failover to the passive node and failback."));
        r.failures.push("EVS1 lost 1 message".into());
        assert!(r
            .to_string()
            .ends_with("\n\nChecks failed:\n  - EVS1 lost 1 message"));
    }

    #[test]
    fn the_demo_names_its_layout() {
        let o = DemoOptions {
            keep: false,
            nodes: 4,
            quorum: "disk-scsi2".into(),
            profile: "fast".into(),
            rate: 20.0,
            remove_dir: true,
            hosts: crate::hosts::HostsMode::Single,
        };
        assert_eq!(
            o.to_string(),
            "4 nodes (3 active virtual servers, NODE4 passive), quorum disk-scsi2, profile fast"
        );
    }

    #[test]
    fn networks_parse_back_from_their_names() {
        for n in crate::Net::ALL {
            assert_eq!(n.as_str().parse::<crate::Net>(), Ok(n));
        }
        assert!("all".parse::<crate::Net>().is_err());
    }
}
