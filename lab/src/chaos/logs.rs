//! The role checker's input from the nodes' own logs: each node logs its
//! quorum arbitration steps and its groups' transitions through tracing,
//! one line each, stamped with the machine's clock (RFC 3339, UTC), e.g.
//!
//! ```text
//! 2026-12-02T16:51:19.892967Z  INFO busrig_cluster::driver::run: quorum arbitration arbitration=owner (online)
//! 2026-12-02T16:51:21.013210Z  INFO busrig_cluster::host: group online group=EVS1
//! ```
//!
//! A quorum owner's lease that ran out (`quorum-owner lease ran out
//! lease_end=...`) ends the owner role at `lease_end`, however much later
//! the line was written: a node paused past its lease logs it on resume.
//!
//! Under Majority Node Set the owner acts while it holds a majority:
//! `gained a majority: acting as owner` / `lost the majority: holding
//! writes`. Lines that say nothing about roles are skipped.

use super::check::{NodeEvent, NodeRecord};

/// The role events in `text`, node `node`'s log.
pub fn parse(node: &str, text: &str) -> Vec<NodeRecord> {
    text.lines()
        .filter_map(|l| {
            let (ms, rest) = stamp(l)?;
            // A lease that ran out is logged once the loop runs again
            // (after a pause, much later): the role ended at the lease's
            // end, which the line names.
            if rest.contains(": quorum-owner lease ran out ") {
                let end = field(rest, "lease_end").and_then(busrig_lograte::text::parse_rfc3339)?;
                return Some(NodeRecord {
                    ms: end.min(ms),
                    node: node.to_string(),
                    event: NodeEvent::OwnerOff,
                });
            }
            let event = event(rest)?;
            Some(NodeRecord {
                ms,
                node: node.to_string(),
                event,
            })
        })
        .collect()
}

fn field<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    let at = rest.find(&format!(" {name}="))? + name.len() + 2;
    rest[at..].split_whitespace().next()
}

fn event(rest: &str) -> Option<NodeEvent> {
    if let Some(i) = rest.find("quorum arbitration arbitration=") {
        let role = &rest[i + "quorum arbitration arbitration=".len()..];
        return Some(if role.trim_end() == "owner (online)" {
            NodeEvent::OwnerOn
        } else {
            NodeEvent::OwnerOff
        });
    }
    // Majority Node Set: the owner acts while it has a majority.
    if rest.contains(": gained a majority: acting as owner") {
        return Some(NodeEvent::OwnerOn);
    }
    if rest.contains(": lost the majority: holding writes") {
        return Some(NodeEvent::OwnerOff);
    }
    if rest.contains(": cluster service stopping") {
        return Some(NodeEvent::OwnerOff);
    }
    if rest.contains("cluster service not running: taking every group offline") {
        return Some(NodeEvent::AllGroupsOff);
    }
    let group = || field(rest, "group").map(String::from);
    if rest.contains(": group online ") {
        return group().map(NodeEvent::GroupOn);
    }
    // A failed resource leaves the group short of online until the group
    // is brought online again (a restart on the node logs no new "group
    // online"; the group failing may log nothing more).
    if rest.contains(": taking the group offline ")
        || rest.contains(": group failed on this node ")
        || rest.contains(": resource failed ")
        || rest.contains(": resource did not come online ")
    {
        return group().map(NodeEvent::GroupOff);
    }
    None
}

/// The Unix-ms time stamp at the start of a line and the rest of it.
fn stamp(line: &str) -> Option<(u64, &str)> {
    let (ts, rest) = line.split_once(' ')?;
    busrig_lograte::text::parse_rfc3339(ts).map(|ms| (ms, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lines_become_events() {
        let log = "\
2026-12-02T16:51:19.686070Z  INFO busrig_cluster::driver::run: quorum arbitration arbitration=challenger: RESERVE sent
2026-12-02T16:51:19.690514Z  INFO busrig_cluster::driver::run: quorum arbitration arbitration=owner (online at 1.249s)
2026-12-02T16:51:19.892967Z  INFO busrig_cluster::driver::run: quorum arbitration arbitration=owner (online)
2026-12-02T16:51:20.000000Z  INFO busrig_cluster::host: bringing the group online group=EVS1
2026-12-02T16:51:21.013210Z  INFO busrig_cluster::host: group online group=EVS1
----- busrig lab start NODE1 -----
2026-12-02T16:51:22.5Z  WARN busrig_cluster::host: group failed on this node group=EVS1 reason=disk lost
2026-12-02T16:51:22.6Z  WARN busrig_cluster::host: resource failed group=EVS1 resource=EVS1-Store reason=the application exited (exit status: 1)
2026-12-02T16:51:23.000001Z  WARN busrig_cluster::driver::run: cluster service stopping reason=lost
2026-12-02T16:51:24.000Z  INFO busrig_cluster::node::majority: gained a majority: acting as owner node=1 votes=2 need=2
2026-12-02T16:51:25.000Z  WARN busrig_cluster::node::majority: lost the majority: holding writes node=1 votes=1 need=2
2026-12-02T16:51:27.000Z  INFO busrig_cluster::driver::run: quorum-owner lease ran out lease_end=2026-12-02T16:51:26.250Z ago_ms=750
";
        let ev: Vec<(u64, NodeEvent)> = parse("NODE1", log)
            .into_iter()
            .map(|r| (r.ms, r.event))
            .collect();
        let base = 1_796_230_279_000u64; // 2026-12-02T16:51:19Z
        assert_eq!(
            ev,
            vec![
                (base + 686, NodeEvent::OwnerOff),
                (base + 690, NodeEvent::OwnerOff),
                (base + 892, NodeEvent::OwnerOn),
                (base + 2013, NodeEvent::GroupOn("EVS1".into())),
                (base + 3500, NodeEvent::GroupOff("EVS1".into())),
                (base + 3600, NodeEvent::GroupOff("EVS1".into())),
                (base + 4000, NodeEvent::OwnerOff),
                (base + 5000, NodeEvent::OwnerOn),
                (base + 6000, NodeEvent::OwnerOff),
                (base + 7250, NodeEvent::OwnerOff),
            ]
        );
    }
}
