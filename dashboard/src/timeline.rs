//! The timeline: the cluster event log, the bus's event log, the role
//! lines of the nodes' own logs (in a lab), the dashboard's actions and
//! what the dashboard saw change between two rounds, on one time axis.
//! Each entry names the nodes, groups and LUNs it is about, so the page
//! can filter by them.

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use busrig_cluster::admin_client::Event;
use busrig_lab::chaos::check::{NodeEvent, NodeRecord};
use serde::Serialize;
use serde_json::Value;

use crate::collect::Snapshot;

/// How many entries the timeline keeps; older ones are dropped.
pub const KEPT: usize = 2000;

/// At most this much of a log is read when the dashboard first opens it.
const FIRST_READ: u64 = 1 << 20;

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The cluster event log (the database's `event/` keys).
    Cluster,
    /// The bus's fault and reset log.
    Bus,
    /// A node's own log (arbitration steps, group transitions).
    NodeLog,
    /// A change the dashboard saw between two rounds.
    Observed,
    /// An action taken through the dashboard.
    Action,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Increases by one per entry added (the page asks for the entries
    /// after the last it has).
    pub seq: u64,
    /// Unix ms.
    pub ms: u64,
    pub source: Source,
    pub text: String,
    /// The nodes, groups and LUNs it is about.
    pub nodes: Vec<String>,
    pub groups: Vec<String>,
    pub luns: Vec<u64>,
}

/// The entries, oldest first by the order they were added.
#[derive(Debug, Default)]
pub struct Timeline {
    entries: VecDeque<Entry>,
    seq: u64,
    cluster_seen: BTreeSet<(u64, String, String)>,
    bus_seen: BTreeSet<(u64, String)>,
    /// Node and group names known so far, to tag entries with.
    nodes: BTreeSet<String>,
    groups: BTreeSet<String>,
}

/// The LUN numbers a text names: `LUN 2`, `lun 2`, `lun=2`.
fn luns_in(text: &str) -> Vec<u64> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == ':')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<u64> = words
        .windows(2)
        .filter(|w| w[0].eq_ignore_ascii_case("lun"))
        .filter_map(|w| {
            w[1].trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .collect();
    out.dedup();
    out
}

/// The names of `known` that `text` mentions as whole words.
fn named_in(text: &str, known: &BTreeSet<String>) -> Vec<String> {
    let words: BTreeSet<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .collect();
    known
        .iter()
        .filter(|k| words.contains(k.as_str()))
        .cloned()
        .collect()
}

impl Timeline {
    fn push(&mut self, ms: u64, source: Source, text: String, mut nodes: Vec<String>) {
        for n in named_in(&text, &self.nodes) {
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        self.seq += 1;
        let entry = Entry {
            seq: self.seq,
            ms,
            source,
            groups: named_in(&text, &self.groups),
            luns: luns_in(&text),
            nodes,
            text,
        };
        self.entries.push_back(entry);
        while self.entries.len() > KEPT {
            self.entries.pop_front();
        }
    }

    /// The newest entry's sequence number (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The entries after `seq`, sorted by time.
    pub fn since(&self, seq: u64) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect();
        v.sort_by_key(|e| (e.ms, e.seq));
        v
    }

    /// Remembers the names of the nodes and groups on the page.
    pub fn know(
        &mut self,
        nodes: impl IntoIterator<Item = String>,
        groups: impl IntoIterator<Item = String>,
    ) {
        self.nodes.extend(nodes);
        self.groups.extend(groups);
    }

    /// The cluster event log's entries not seen before.
    pub fn add_cluster_events(&mut self, events: &[Event]) {
        for e in events {
            if self
                .cluster_seen
                .insert((e.ms, e.node.clone(), e.text.clone()))
            {
                self.push(e.ms, Source::Cluster, e.text.clone(), vec![e.node.clone()]);
            }
        }
        // What is older than the oldest event the log still holds cannot
        // come back: forget it, so the set stays as small as the log.
        if let Some(oldest) = events.iter().map(|e| e.ms).min() {
            self.cluster_seen =
                self.cluster_seen
                    .split_off(&(oldest, String::new(), String::new()));
        }
    }

    /// The bus's events (`events` of `GET /status`) not seen before.
    pub fn add_bus_events(&mut self, status: &Value) {
        let none = Vec::new();
        for e in status["events"].as_array().unwrap_or(&none) {
            let (Some(ms), Some(what)) = (e["time_ms"].as_u64(), e["what"].as_str()) else {
                continue;
            };
            if self.bus_seen.insert((ms, what.to_string())) {
                self.push(ms, Source::Bus, what.to_string(), Vec::new());
            }
        }
        let oldest = status["events"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|e| e["time_ms"].as_u64()).min());
        if let Some(oldest) = oldest {
            self.bus_seen = self.bus_seen.split_off(&(oldest, String::new()));
        }
    }

    /// Lines of a node's log ([`LogTail::read`]).
    pub fn add_node_lines(&mut self, lines: Vec<(u64, String, String)>) {
        for (ms, node, text) in lines {
            self.push(ms, Source::NodeLog, text, vec![node]);
        }
    }

    /// What changed between two rounds.
    pub fn add_observed(&mut self, ms: u64, changes: Vec<String>) {
        for c in changes {
            self.push(ms, Source::Observed, c, Vec::new());
        }
    }

    /// An action taken, and how it went.
    pub fn add_action(&mut self, ms: u64, text: String) {
        self.push(ms, Source::Action, text, Vec::new());
    }
}

/// What the dashboard saw change from `a` to `b`, in words: node states,
/// lab processes, the epoch and the quorum owner, group owners and
/// states.
pub fn changes(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let (ca, cb) = (&a.cluster, &b.cluster);
    for n in &cb.nodes {
        let Some(old) = ca.nodes.iter().find(|o| o.name == n.name) else {
            continue;
        };
        if old.state != n.state {
            out.push(format!(
                "node {} {} (was {})",
                n.name,
                word(&n.state),
                word(&old.state)
            ));
        }
        if let (Some(p), Some(q)) = (&old.process, &n.process) {
            if p != q || old.pid != n.pid {
                let pid = n.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
                out.push(format!("process of {} {q}{pid} (was {p})", n.name));
            }
        }
    }
    if ca.quorum_owner != cb.quorum_owner && cb.quorum_owner.is_some() {
        out.push(format!(
            "quorum owner {} (was {})",
            cb.quorum_owner.as_deref().unwrap_or("-"),
            ca.quorum_owner.as_deref().unwrap_or("none")
        ));
    }
    if ca.epoch != cb.epoch && cb.epoch.is_some() {
        out.push(format!(
            "epoch {} (was {})",
            cb.epoch.unwrap_or(0),
            ca.epoch.map_or("-".into(), |e| e.to_string())
        ));
    }
    for g in &cb.groups {
        let Some(old) = ca.groups.iter().find(|o| o.name == g.name) else {
            out.push(format!("group {} appeared", g.name));
            continue;
        };
        if old.owner != g.owner {
            out.push(format!(
                "group {} owner {} (was {})",
                g.name,
                g.owner.as_deref().unwrap_or("none"),
                old.owner.as_deref().unwrap_or("none")
            ));
        }
        if (&old.state, old.pending, &old.state_node) != (&g.state, g.pending, &g.state_node) {
            out.push(format!(
                "group {} {}{} (was {})",
                g.name,
                state_words(&g.state, g.pending),
                g.state_node
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default(),
                state_words(&old.state, old.pending),
            ));
        }
    }
    out
}

fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn state_words(state: &str, pending: Option<crate::collect::Direction>) -> String {
    match pending {
        Some(d) => format!("{state} ({})", word(&d)),
        None => state.to_string(),
    }
}

/// Reads a node's log from where it stopped last time.
#[derive(Debug, Default)]
pub struct LogTail {
    offset: u64,
    /// The last time stamp read, for a restart marker.
    last_ms: u64,
}

impl LogTail {
    /// The last time stamp read so far (0: none).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// The complete lines added to `path` since the last read: the role
    /// lines (as the chaos role checker reads them, `busrig_lab::chaos::logs`)
    /// as timeline lines `(ms, node, text)`, and their role records. The
    /// lab's restart marker (`----- busrig lab start NODE -----`) ends
    /// what the previous process held, at its last time stamp.
    pub fn read(
        &mut self,
        path: &Path,
        node: &str,
    ) -> (Vec<(u64, String, String)>, Vec<NodeRecord>) {
        let mut lines = Vec::new();
        let mut records = Vec::new();
        let Ok(mut f) = std::fs::File::open(path) else {
            return (lines, records);
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // A new log under the same name.
            self.offset = 0;
        }
        if self.offset == 0 {
            self.offset = len.saturating_sub(FIRST_READ);
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return (lines, records);
        }
        let mut buf = Vec::new();
        if f.take(len - self.offset).read_to_end(&mut buf).is_err() {
            return (lines, records);
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return (lines, records);
        };
        self.offset += end as u64 + 1;
        let text = String::from_utf8_lossy(&buf[..=end]);
        for line in text.lines() {
            if line.starts_with("----- busrig lab start") {
                records.push(NodeRecord {
                    ms: self.last_ms,
                    node: node.to_string(),
                    event: NodeEvent::Killed,
                });
                continue;
            }
            let parsed = busrig_lab::chaos::logs::parse(node, line);
            let Some(r) = parsed.into_iter().next() else {
                continue;
            };
            self.last_ms = self.last_ms.max(r.ms);
            lines.push((r.ms, node.to_string(), message(line)));
            records.push(r);
        }
        (lines, records)
    }
}

/// A tracing line without its time stamp, level and module path, the
/// arbitration field written as words.
fn message(line: &str) -> String {
    let m = bare_message(line);
    match m.strip_prefix("quorum arbitration arbitration=") {
        Some(step) => format!("quorum arbitration: {step}"),
        None => m,
    }
}

fn bare_message(line: &str) -> String {
    let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
    let rest = rest
        .split_once(' ')
        .filter(|(lvl, _)| matches!(*lvl, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"))
        .map_or(rest, |(_, r)| r)
        .trim_start();
    match rest.split_once(": ") {
        Some((module, msg)) if module.contains("::") || !module.contains(' ') => msg.to_string(),
        _ => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_their_nodes_groups_and_luns() {
        let mut t = Timeline::default();
        t.know(
            ["NODE1".to_string(), "NODE2".to_string()],
            ["EVS1".to_string()],
        );
        t.add_cluster_events(&[Event {
            ms: 5,
            node: "NODE2".into(),
            text: "group EVS1 online on NODE2".into(),
        }]);
        t.add_bus_events(&serde_json::json!({"events": [
            {"time_ms": 3, "what": "LUN 2 of iqn.x power-cycled"},
            {"time_ms": 3, "what": "LUN 2 of iqn.x power-cycled"}
        ]}));
        let all = t.since(0);
        assert_eq!(all.len(), 2, "the bus event is taken once");
        assert_eq!(all[0].luns, vec![2]);
        assert_eq!(all[0].source, Source::Bus);
        assert_eq!(all[1].groups, vec!["EVS1"]);
        assert_eq!(all[1].nodes, vec!["NODE2"]);
        assert_eq!(t.since(all[1].seq.max(all[0].seq)).len(), 0);
        // The same cluster event again is not a new entry.
        t.add_cluster_events(&[Event {
            ms: 5,
            node: "NODE2".into(),
            text: "group EVS1 online on NODE2".into(),
        }]);
        assert_eq!(t.last_seq(), 2);
        // Once the log holds only newer events, the older are forgotten
        // and the newer still taken once.
        let newer = Event {
            ms: 9,
            node: "NODE1".into(),
            text: "node NODE1 joined the cluster (epoch 2)".into(),
        };
        t.add_cluster_events(&[newer.clone()]);
        t.add_cluster_events(&[newer]);
        assert_eq!(t.cluster_seen.len(), 1);
        assert_eq!(t.last_seq(), 3);
    }

    #[test]
    fn a_log_is_read_from_where_it_stopped() {
        let dir = std::env::temp_dir().join(format!("busrig-dash-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("NODE1.log");
        std::fs::write(
            &p,
            "2026-12-02T16:51:19.892Z  INFO busrig_cluster::driver::run: quorum arbitration arbitration=owner (online)\n\
             2026-12-02T16:51:20.000Z  INFO busrig_cluster::host: something else\n\
             2026-12-02T16:51:21.013Z  INFO busrig_cluster::host: group on",
        )
        .unwrap();
        let mut tail = LogTail::default();
        let (lines, records) = tail.read(&p, "NODE1");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].2, "quorum arbitration: owner (online)");
        assert_eq!(records[0].event, NodeEvent::OwnerOn);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "line group=EVS1\n----- busrig lab start NODE1 -----").unwrap();
        let (lines, records) = tail.read(&p, "NODE1");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            lines.len(),
            1,
            "the line finished since is read once: {lines:?}"
        );
        assert_eq!(lines[0].2, "group online group=EVS1");
        assert_eq!(
            records.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
            vec![NodeEvent::GroupOn("EVS1".into()), NodeEvent::Killed]
        );
    }
}
