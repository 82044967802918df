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
    /// Initiator name -> its path faults (shown as JSON).
    pub paths: BTreeMap<String, Value>,
    pub offline_luns: Vec<OfflineLun>,
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
            write!(f, "\nfault: lun {} of {} offline", l.lun, q(&l.target))?;
        }
        Ok(())
    }
}

/// `GET /audit`: the LUN's writer history.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Audit {
    pub history: Vec<Value>,
}

/// One line per run of writes (its `summary`), or `no writes recorded`.
impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.history.is_empty() {
            return f.write_str("no writes recorded");
        }
        for (i, h) in self.history.iter().enumerate() {
            let line = h["summary"]
                .as_str()
                .map_or_else(|| h.to_string(), str::to_string);
            write!(f, "{}{line}", if i == 0 { "" } else { "\n" })?;
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
                "fault on path of iqn.n:node2: {\"frozen\":true}",
                "fault: lun 0 of iqn.t:disks offline",
            ]
        );
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
    }
}
