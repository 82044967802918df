//! `GET /status` and `GET /audit` as `busrig bus` shows them to people.
//!
//! The answers are read back into the types below (only the keys the
//! text uses; `--json` prints the answer itself), so a client renders
//! them without linking the server's state.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// `GET /status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BusStatus {
    pub buses: Vec<BusEntry>,
    pub luns: Vec<LunEntry>,
    pub sessions: Vec<SessionEntry>,
    pub faults: FaultsEntry,
    /// The fault and reset log, oldest first.
    pub events: Vec<EventEntry>,
    /// The server's clock when it answered (absent from older servers).
    pub now_ms: Option<u64>,
}

/// How many of the latest events the text shows (`--json` has them all).
pub const EVENTS_SHOWN: usize = 20;

/// One fault or reset event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventEntry {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BusEntry {
    pub name: String,
    pub topology: String,
    pub max_initiators: Option<u64>,
    pub bandwidth: Option<Bandwidth>,
}

/// The bus's bandwidth model and its counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Bandwidth {
    pub name: String,
    pub bytes_per_sec: u64,
    pub shared_by: String,
    pub counters: LinkCounters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LinkCounters {
    pub bytes: u64,
    pub transfers: u64,
    pub queued_us: u64,
}

/// An I_T nexus as the status names it; no initiator means every
/// registrant (an all-registrants reservation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Nexus {
    pub initiator: Option<String>,
    pub isid: Option<String>,
}

impl fmt::Display for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} isid {}",
            self.initiator.as_deref().unwrap_or("(all registrants)"),
            self.isid.as_deref().unwrap_or("-")
        )
    }
}

/// A nexus that may be absent: `-`.
struct MaybeNexus<'a>(Option<&'a Nexus>);

impl fmt::Display for MaybeNexus<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => n.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LunEntry {
    pub target: String,
    pub lun: u64,
    pub size_bytes: u64,
    pub block_size: u64,
    pub read_only: bool,
    pub offline: bool,
    pub scsi2_holder: Option<Nexus>,
    pub disk_model: Option<DiskModel>,
    pub pr_reservation: Option<PrReservation>,
    pub pr_generation: u64,
    pub aptpl: bool,
    pub registrations: Vec<Registration>,
    pub unit_attentions: Vec<PendingUnitAttentions>,
}

/// The LUN's disk model and its counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DiskModel {
    pub model: Option<String>,
    pub stripe_unit: Option<u64>,
    pub service_time_us: u64,
    pub spindles: u64,
    pub counters: ModelCounters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelCounters {
    pub ios: u64,
    pub backend_ops: u64,
    pub split_ios: u64,
    pub queued_us: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PrReservation {
    #[serde(rename = "type")]
    pub pr_type: Option<String>,
    #[serde(flatten)]
    pub holder: Nexus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Registration {
    pub key: Option<String>,
    #[serde(flatten)]
    pub nexus: Nexus,
}

/// The unit attentions pending for one nexus.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PendingUnitAttentions {
    #[serde(flatten)]
    pub nexus: Nexus,
    pub pending: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SessionEntry {
    pub tsih: u64,
    #[serde(flatten)]
    pub nexus: Nexus,
    /// None for a discovery session.
    pub target: Option<String>,
    pub peer: Option<String>,
    pub commands_in_flight: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FaultsEntry {
    /// Initiator name -> its path faults.
    pub paths: BTreeMap<String, PathFaults>,
    pub offline_luns: Vec<OfflineLun>,
}

/// The faults set on one initiator's path (`crate::fault::PathFault`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PathFaults {
    pub frozen: bool,
    pub delay_ms: u64,
    pub cut: bool,
    pub fail_remaining: u32,
    pub fail_sense: Option<String>,
}

/// The faults in words, `; ` between them.
impl fmt::Display for PathFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        if self.frozen {
            words.push("frozen (commands held until thaw)".to_string());
        }
        if self.delay_ms > 0 {
            words.push(format!("each command delayed {} ms", self.delay_ms));
        }
        if self.cut {
            words.push("cut (connections closed, logins refused until restore)".to_string());
        }
        if self.fail_remaining > 0 {
            words.push(format!(
                "next {} media command{} fail with sense {}",
                self.fail_remaining,
                if self.fail_remaining == 1 { "" } else { "s" },
                q(&self.fail_sense)
            ));
        }
        if words.is_empty() {
            words.push("none".into());
        }
        f.write_str(&words.join("; "))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OfflineLun {
    pub target: Option<String>,
    pub lun: u64,
}

fn q(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("?")
}

impl fmt::Display for BusEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let most = self
            .max_initiators
            .map(|m| format!(", at most {m} initiators"));
        write!(
            f,
            "bus {} ({}{})",
            self.name,
            self.topology,
            most.unwrap_or_default()
        )?;
        if let Some(bw) = &self.bandwidth {
            let c = &bw.counters;
            write!(
                f,
                "\n  bandwidth {} ({} MB/s per {}): {} bytes in {} transfers, {} µs queued",
                bw.name,
                bw.bytes_per_sec / 1_000_000,
                bw.shared_by,
                c.bytes,
                c.transfers,
                c.queued_us
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for LunEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} lun {}: {} bytes, block {}{}{}",
            self.target,
            self.lun,
            self.size_bytes,
            self.block_size,
            if self.read_only { ", read-only" } else { "" },
            if self.offline { ", OFFLINE" } else { "" },
        )?;
        write!(
            f,
            "  scsi-2 holder:   {}",
            MaybeNexus(self.scsi2_holder.as_ref())
        )?;
        if let Some(m) = &self.disk_model {
            let c = &m.counters;
            write!(
                f,
                "\n  disk model:      {}stripe unit {}, {} µs per back-end op, {} spindle(s)",
                m.model
                    .as_ref()
                    .map(|n| format!("{n}, "))
                    .unwrap_or_default(),
                m.stripe_unit
                    .map_or("none".into(), |b| format!("{b} bytes")),
                m.service_time_us,
                m.spindles,
            )?;
            write!(
                f,
                "\n  model counters:  {} I/Os, {} back-end ops, {} split I/Os (crossing a stripe unit), {} µs queued",
                c.ios, c.backend_ops, c.split_ios, c.queued_us
            )?;
        }
        match &self.pr_reservation {
            None => write!(f, "\n  pr reservation:  -")?,
            Some(r) => write!(f, "\n  pr reservation:  {} by {}", q(&r.pr_type), r.holder)?,
        }
        let aptpl = if self.aptpl { " (APTPL)" } else { "" };
        write!(f, "\n  pr generation:   {}{aptpl}", self.pr_generation)?;
        for r in &self.registrations {
            write!(f, "\n  registered:      key {} {}", q(&r.key), r.nexus)?;
        }
        for u in &self.unit_attentions {
            write!(
                f,
                "\n  pending UA:      {}: {}",
                u.nexus,
                u.pending.join(", ")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for SessionEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session tsih {} {} -> {} from {} ({} in flight)",
            self.tsih,
            self.nexus,
            self.target.as_deref().unwrap_or("(discovery)"),
            q(&self.peer),
            self.commands_in_flight
        )
    }
}

/// The buses, each LUN after a blank line, then the sessions and the
/// faults set.
impl fmt::Display for BusStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.buses {
            writeln!(f, "{b}")?;
        }
        for l in &self.luns {
            writeln!(f, "\n{l}")?;
        }
        writeln!(f)?;
        if self.sessions.is_empty() {
            write!(f, "no sessions")?;
        }
        for (i, s) in self.sessions.iter().enumerate() {
            write!(f, "{}{s}", if i == 0 { "" } else { "\n" })?;
        }
        for (ini, fault) in &self.faults.paths {
            write!(f, "\nfault on path of {ini}: {fault}")?;
        }
        for l in &self.faults.offline_luns {
            write!(
                f,
                "\nfault: lun {} of {} offline (NOT READY until online)",
                l.lun,
                q(&l.target)
            )?;
        }
        if self.faults.paths.is_empty() && self.faults.offline_luns.is_empty() {
            write!(f, "\nno faults set")?;
        }
        let shown = self.events.len().min(EVENTS_SHOWN);
        match self.events.len() {
            0 => write!(f, "\n\nno fault or reset events")?,
            n if n == shown => write!(f, "\n\nevents:")?,
            n => write!(f, "\n\nevents (latest {shown} of {n}; --json has all):")?,
        }
        for e in &self.events[self.events.len() - shown..] {
            write!(
                f,
                "\n  {}  {}",
                busrig_lograte::text::when(e.time_ms, self.now_ms),
                e.what
            )?;
        }
        Ok(())
    }
}

/// `GET /audit`: the LUN's writer history.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Audit {
    pub history: Vec<Value>,
    /// The server's clock when it answered.
    pub now_ms: Option<u64>,
}

/// One line per run of writes: when it started (and how long ago), how
/// many writes until when, and its `summary`; or `no writes recorded`.
impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use busrig_lograte::text::{time_of_day, when};
        if self.history.is_empty() {
            return f.write_str("no writes recorded");
        }
        for (i, h) in self.history.iter().enumerate() {
            let line = h["summary"]
                .as_str()
                .map_or_else(|| h.to_string(), str::to_string);
            write!(f, "{}", if i == 0 { "" } else { "\n" })?;
            if let Some(start) = h["start_ms"].as_u64() {
                let end = h["end_ms"].as_u64().unwrap_or(start);
                let writes = h["writes"].as_u64().unwrap_or(0);
                write!(
                    f,
                    "{}: {writes} write{} to {}: ",
                    when(start, self.now_ms),
                    if writes == 1 { "" } else { "s" },
                    time_of_day(end)
                )?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> BusStatus {
        let v = json!({
            "buses": [{ "name": "scsi0", "topology": "parallel-scsi", "max_initiators": 2, "bandwidth": null }],
            "targets": [],
            "luns": [{
                "target": "iqn.t:disks", "lun": 0, "path": "q.img", "size_bytes": 67108864, "block_size": 512,
                "read_only": false, "offline": true,
                "scsi2_holder": { "initiator": "iqn.n:node1", "isid": "400001370000" },
                "pr_reservation": { "initiator": null, "isid": null, "type": "WEAR", "all_registrants": true },
                "pr_generation": 3, "aptpl": true,
                "registrations": [{ "key": "0x0000000000000001", "initiator": "iqn.n:node1", "isid": "400001370000" }],
                "unit_attentions": [{ "initiator": "iqn.n:node2", "isid": "400001370000", "pending": ["29/02 bus reset"] }],
                "write_cache": null, "disk_model": null,
            }],
            "sessions": [],
            "faults": { "paths": { "iqn.n:node2": { "frozen": true } }, "offline_luns": [{ "target": "iqn.t:disks", "lun": 0 }] },
            "events": [
                { "time_ms": 1_796_229_772_000u64, "time": "2026-12-02T16:42:52.000Z", "what": "freeze iqn.n:node2" },
                { "time_ms": 1_796_229_784_120u64, "time": "2026-12-02T16:43:04.120Z", "what": "lun 0 of iqn.t:disks offline" },
            ],
            "now_ms": 1_796_229_790_000u64,
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("status: {e}"))
    }

    #[test]
    fn status_reads_back_and_renders_each_lun() {
        let text = status().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "bus scsi0 (parallel-scsi, at most 2 initiators)",
                "",
                "iqn.t:disks lun 0: 67108864 bytes, block 512, OFFLINE",
                "  scsi-2 holder:   iqn.n:node1 isid 400001370000",
                "  pr reservation:  WEAR by (all registrants) isid -",
                "  pr generation:   3 (APTPL)",
                "  registered:      key 0x0000000000000001 iqn.n:node1 isid 400001370000",
                "  pending UA:      iqn.n:node2 isid 400001370000: 29/02 bus reset",
                "",
                "no sessions",
                "fault on path of iqn.n:node2: frozen (commands held until thaw)",
                "fault: lun 0 of iqn.t:disks offline (NOT READY until online)",
                "",
                "events:",
                "  16:42:52.000 (18 s ago)  freeze iqn.n:node2",
                "  16:43:04.120 (5 s ago)  lun 0 of iqn.t:disks offline",
            ]
        );
    }

    /// A word of 13 or more decimal digits: an epoch in milliseconds (a
    /// PR key is written `0x...`, one word with its `x`).
    fn has_epoch_ms(text: &str) -> bool {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w.len() >= 13 && w.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn faults_are_words_and_times_are_wall_clock() {
        let mut s = status();
        s.faults.paths.insert(
            "iqn.n:node3".into(),
            serde_json::from_value(json!({ "frozen": false, "delay_ms": 50, "cut": true,
                "fail_remaining": 3, "fail_sense": "3/11/00" }))
            .unwrap_or_default(),
        );
        // More events than the text shows: the latest ones, and a count.
        for i in 0..30u64 {
            s.events.push(EventEntry {
                time_ms: 1_796_229_785_000 + i,
                what: format!("event {i}"),
            });
        }
        let text = s.to_string();
        assert!(text.contains("\nfault on path of iqn.n:node3: each command delayed 50 ms; cut (connections closed, logins refused until restore); next 3 media commands fail with sense 3/11/00"), "{text}");
        assert!(
            text.contains(&format!(
                "\nevents (latest {EVENTS_SHOWN} of 32; --json has all):"
            )),
            "{text}"
        );
        assert!(
            text.contains("\n  16:43:05.029 (4 s ago)  event 29"),
            "{text}"
        );
        assert!(!text.contains("event 9\n"), "{text}");
        assert!(!text.contains('{'), "no JSON in the text: {text}");
        assert!(has_epoch_ms("at 1796229785029 event 29"));
        assert!(!has_epoch_ms(&text), "{text}");
        // Without the server's clock: times of day only.
        s.now_ms = None;
        assert!(s.to_string().contains("\n  16:43:05.029  event 29"));
        // Nothing set, nothing happened.
        let quiet = BusStatus::default().to_string();
        assert!(quiet.contains("no faults set") && quiet.contains("no fault or reset events"));
    }

    #[test]
    fn sessions_bandwidth_and_disk_model_render() {
        let mut s = status();
        s.luns[0].scsi2_holder = None;
        s.luns[0].disk_model = Some(DiskModel {
            model: None,
            stripe_unit: Some(65536),
            service_time_us: 100,
            spindles: 1,
            counters: ModelCounters::default(),
        });
        s.buses[0].bandwidth = Some(Bandwidth {
            name: "u320".into(),
            bytes_per_sec: 320_000_000,
            shared_by: "bus".into(),
            counters: LinkCounters::default(),
        });
        s.sessions.push(SessionEntry {
            tsih: 1,
            nexus: Nexus {
                initiator: Some("iqn.n:node1".into()),
                isid: Some("400001370000".into()),
            },
            target: None,
            peer: Some("127.0.0.1:4000".into()),
            commands_in_flight: 0,
        });
        let text = s.to_string();
        assert!(
            text.contains(
                "\n  bandwidth u320 (320 MB/s per bus): 0 bytes in 0 transfers, 0 µs queued\n"
            ),
            "{text}"
        );
        assert!(text.contains("\n  scsi-2 holder:   -\n  disk model:      stripe unit 65536 bytes, 100 µs per back-end op, 1 spindle(s)\n"), "{text}");
        assert!(text.contains("\n\nsession tsih 1 iqn.n:node1 isid 400001370000 -> (discovery) from 127.0.0.1:4000 (0 in flight)\n"), "{text}");
    }

    #[test]
    fn audit_lines_are_the_summaries() {
        let empty: Audit = serde_json::from_value(json!({ "history": [] })).unwrap_or_default();
        assert_eq!(empty.to_string(), "no writes recorded");
        let a: Audit = serde_json::from_value(json!({ "target": "t", "lun": 1, "history": [
            { "summary": "writer A" }, { "writes": 2 } ] }))
        .unwrap_or_default();
        assert_eq!(a.to_string(), "writer A\n{\"writes\":2}");
        let a: Audit = serde_json::from_value(json!({ "target": "t", "lun": 1, "now_ms": 1_796_229_790_000u64,
            "history": [{ "start_ms": 1_796_229_784_120u64, "end_ms": 1_796_229_786_000u64, "writes": 7,
                "summary": "iqn.n:node1 isid 400001370000 starts writing; reservation: none" }] }))
        .unwrap_or_default();
        assert_eq!(
            a.to_string(),
            "16:43:04.120 (5 s ago): 7 writes to 16:43:06.000: iqn.n:node1 isid 400001370000 starts writing; reservation: none"
        );
    }
}
