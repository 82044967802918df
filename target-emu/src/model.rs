//! The disk model: what makes alignment matter on an emulated bus.
//!
//! Off by default: a LUN without a model answers as fast as its backing
//! file, and a bus without a bandwidth moves data as fast as the host.
//!
//! **A LUN's back end** ([`DiskModel`]) is a striped set of `spindles`
//! disks with a stripe unit of `stripe_unit` bytes (stripe unit `k` lives
//! on spindle `k mod spindles`, as in RAID 0). An I/O costs one back-end
//! operation per stripe unit it touches, so an I/O that crosses a
//! stripe-unit boundary costs two:
//!
//! ```text
//!  stripe units   |<----- 64 KiB ----->|<----- 64 KiB ----->|
//!  aligned I/O    [=====  64 KiB  =====]                       1 back-end op
//!  offset 32256         [=====  64 KiB  =====]                 2 back-end ops (split)
//! ```
//!
//! Each spindle serves one operation at a time in `service_time`; the
//! operations of one I/O run on their spindles in parallel and the I/O
//! completes when the last of them does. A spindle keeps a "free at" time
//! and an operation starts at max(now, free at), so queueing costs no
//! thread: the command simply completes later.
//!
//! **A bus's link** ([`Link`]) limits the bytes per second the bus moves:
//! an Ultra320 parallel SCSI bus shares 320 MB/s among everything on it;
//! on Fibre Channel each initiator port has its own link (2GFC: 200 MB/s
//! after 8b/10b coding, 4GFC: 400 MB/s).
//!
//! The counters (I/Os, back-end operations, split I/Os, time queued and
//! busy) are in `busrig bus status`, so a user sees why misaligned I/O is
//! slower.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A named back-end preset: service time per back-end operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub service_time: Duration,
    pub what: &'static str,
}

/// The named models. Service times are the average random-access time of
/// such a device for a small I/O: seek plus half a rotation for disks.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "hdd-7200",
        service_time: Duration::from_micros(12_500),
        what: "7,200 rpm disk: 8.3 ms seek + 4.2 ms half rotation (~80 IOPS)",
    },
    Preset {
        name: "hdd-10k",
        service_time: Duration::from_micros(7_000),
        what: "10,000 rpm disk: 4 ms seek + 3 ms half rotation (~140 IOPS)",
    },
    Preset {
        name: "hdd-15k",
        service_time: Duration::from_micros(5_500),
        what: "15,000 rpm disk: 3.5 ms seek + 2 ms half rotation (~180 IOPS)",
    },
    Preset {
        name: "ssd",
        service_time: Duration::from_micros(100),
        what: "SATA flash: 100 µs per operation (~10,000 IOPS per device)",
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// How a LUN's back end is modelled (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskModelSpec {
    /// The preset the values came from, if any.
    pub preset: Option<String>,
    /// Bytes per stripe unit; `None` treats every I/O as one operation.
    pub stripe_unit: Option<u64>,
    /// Time one spindle takes per back-end operation (zero: only count).
    pub service_time: Duration,
    /// Disks the stripe units are spread over, round-robin.
    pub spindles: u32,
}

/// Counters of a model; monotonic, read by the control plane.
#[derive(Debug, Default)]
struct Counters {
    ios: AtomicU64,
    bytes: AtomicU64,
    backend_ops: AtomicU64,
    split_ios: AtomicU64,
    busy_ns: AtomicU64,
    queued_ns: AtomicU64,
}

/// A LUN's back end at run time.
#[derive(Debug)]
pub struct DiskModel {
    spec: DiskModelSpec,
    /// When each spindle is next free.
    spindles: Vec<Mutex<Instant>>,
    counters: Counters,
}

impl DiskModel {
    pub fn new(spec: DiskModelSpec) -> DiskModel {
        let now = Instant::now();
        DiskModel {
            spindles: (0..spec.spindles.max(1)).map(|_| Mutex::new(now)).collect(),
            counters: Counters::default(),
            spec,
        }
    }

    pub fn spec(&self) -> &DiskModelSpec {
        &self.spec
    }

    /// Takes one I/O of `len` bytes at byte `offset`: counts its back-end
    /// operations and books them on their spindles. Returns when the I/O
    /// completes, or `None` when the model has no service time.
    pub fn admit(&self, offset: u64, len: u64) -> Option<Instant> {
        let len = len.max(1);
        let (first, units) = match self.spec.stripe_unit {
            Some(su) if su > 0 => {
                let first = offset / su;
                (first, (offset + len - 1) / su - first + 1)
            }
            _ => (0, 1),
        };
        let c = &self.counters;
        c.ios.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len, Ordering::Relaxed);
        c.backend_ops.fetch_add(units, Ordering::Relaxed);
        if units > 1 {
            c.split_ios.fetch_add(1, Ordering::Relaxed);
        }
        let t = self.spec.service_time;
        if t.is_zero() {
            return None;
        }
        let now = Instant::now();
        let n = self.spindles.len() as u64;
        let mut done = now;
        let mut queued = Duration::ZERO;
        // One operation per touched spindle and stripe unit; more units
        // than spindles queue behind each other on the same spindle.
        for u in first..first + units {
            let mut free = self.spindles[(u % n) as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let start = (*free).max(now);
            *free = start + t;
            queued += start - now;
            done = done.max(*free);
        }
        c.busy_ns
            .fetch_add(duration_ns(t) * units, Ordering::Relaxed);
        c.queued_ns
            .fetch_add(duration_ns(queued), Ordering::Relaxed);
        Some(done)
    }

    /// The model and its counters, for `busrig bus status`.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "model": self.spec.preset,
            "stripe_unit": self.spec.stripe_unit,
            "service_time_us": self.spec.service_time.as_micros() as u64,
            "spindles": self.spec.spindles,
            "counters": {
                "ios": c.ios.load(Ordering::Relaxed),
                "bytes": c.bytes.load(Ordering::Relaxed),
                "backend_ops": c.backend_ops.load(Ordering::Relaxed),
                "split_ios": c.split_ios.load(Ordering::Relaxed),
                "busy_us": c.busy_ns.load(Ordering::Relaxed) / 1000,
                "queued_us": c.queued_ns.load(Ordering::Relaxed) / 1000,
            },
        })
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How a bus's bandwidth is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSharing {
    /// One link for the whole bus (parallel SCSI).
    Bus,
    /// One link per initiator port (Fibre Channel).
    PerInitiator,
}

/// A bus's bandwidth (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// As configured: `ultra320`, `fc2g`, `fc4g`, or a rate like `250MB/s`.
    pub name: String,
    pub bytes_per_sec: u64,
    pub sharing: LinkSharing,
}

/// The named bus bandwidths: (name, bytes per second, sharing, parallel SCSI?).
pub const BANDWIDTHS: &[(&str, u64, LinkSharing, bool)] = &[
    ("ultra160", 160_000_000, LinkSharing::Bus, true),
    ("ultra320", 320_000_000, LinkSharing::Bus, true),
    // FC line rates after 8b/10b coding: 1.0625 Gbaud carries 100 MB/s.
    ("fc1g", 100_000_000, LinkSharing::PerInitiator, false),
    ("fc2g", 200_000_000, LinkSharing::PerInitiator, false),
    ("fc4g", 400_000_000, LinkSharing::PerInitiator, false),
    ("fc8g", 800_000_000, LinkSharing::PerInitiator, false),
];

/// A bus's link at run time.
#[derive(Debug)]
pub struct Link {
    spec: LinkSpec,
    /// When each link (the bus's, or each initiator's) is next free.
    free: Mutex<HashMap<String, Instant>>,
    bytes: AtomicU64,
    transfers: AtomicU64,
    queued_ns: AtomicU64,
}

impl Link {
    pub fn new(spec: LinkSpec) -> Link {
        Link {
            spec,
            free: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            queued_ns: AtomicU64::new(0),
        }
    }

    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    /// Books a transfer of `bytes` for `initiator`; returns when it is done.
    pub fn admit(&self, initiator: &str, bytes: u64) -> Instant {
        let key = match self.spec.sharing {
            LinkSharing::Bus => "",
            LinkSharing::PerInitiator => initiator,
        };
        let took = Duration::from_nanos(
            u64::try_from(
                u128::from(bytes) * 1_000_000_000 / u128::from(self.spec.bytes_per_sec.max(1)),
            )
            .unwrap_or(u64::MAX),
        );
        let now = Instant::now();
        let start = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded by the initiators on the bus: entries are never removed
            // but one exists per initiator name that moved data.
            let f = free.entry(key.to_string()).or_insert(now);
            let start = (*f).max(now);
            *f = start + took;
            start
        };
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.queued_ns
            .fetch_add(duration_ns(start - now), Ordering::Relaxed);
        start + took
    }

    /// The link and its counters, for `busrig bus status`.
    pub fn status(&self) -> Value {
        json!({
            "name": self.spec.name,
            "bytes_per_sec": self.spec.bytes_per_sec,
            "shared_by": match self.spec.sharing {
                LinkSharing::Bus => "bus",
                LinkSharing::PerInitiator => "initiator",
            },
            "counters": {
                "bytes": self.bytes.load(Ordering::Relaxed),
                "transfers": self.transfers.load(Ordering::Relaxed),
                "queued_us": self.queued_ns.load(Ordering::Relaxed) / 1000,
            },
        })
    }
}

/// Below this a wait is slept on a blocking thread (the tokio timer's
/// granularity is a millisecond, too coarse for a 100 µs flash operation).
pub const FINE_WAIT: Duration = Duration::from_millis(2);

/// Waits until `deadline`: on the tokio timer for the bulk, then with a
/// thread sleep for the sub-millisecond rest.
pub async fn wait_until(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return;
    }
    if left > FINE_WAIT {
        tokio::time::sleep_until((deadline - Duration::from_millis(1)).into()).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(su: Option<u64>, us: u64, spindles: u32) -> DiskModel {
        DiskModel::new(DiskModelSpec {
            preset: None,
            stripe_unit: su,
            service_time: Duration::from_micros(us),
            spindles,
        })
    }

    fn count(m: &DiskModel, k: &str) -> u64 {
        m.status()["counters"][k].as_u64().unwrap()
    }

    #[test]
    fn an_io_across_a_stripe_unit_costs_two_operations() {
        let m = model(Some(65536), 0, 1);
        assert_eq!(m.admit(0, 65536), None, "no service time: count only");
        assert_eq!(m.admit(65536, 4096), None);
        assert_eq!((count(&m, "backend_ops"), count(&m, "split_ios")), (2, 0));
        // The 63-sector partition start: every 64 KiB I/O straddles.
        m.admit(32256, 65536);
        m.admit(32256 + 65536, 65536);
        assert_eq!((count(&m, "backend_ops"), count(&m, "split_ios")), (6, 2));
        assert_eq!(count(&m, "ios"), 4);
        // Without a stripe unit everything is one operation.
        let m = model(None, 0, 1);
        m.admit(32256, 1 << 20);
        assert_eq!(count(&m, "backend_ops"), 1);
    }

    #[test]
    fn operations_queue_on_their_spindle() {
        let m = model(Some(4096), 1000, 2);
        let t0 = Instant::now();
        let a = m.admit(0, 4096).unwrap(); // spindle 0
        let b = m.admit(4096, 4096).unwrap(); // spindle 1, in parallel
        let c = m.admit(0, 4096).unwrap(); // spindle 0 again: queued
        let ms = |t: Instant| t.duration_since(t0).as_micros() as u64;
        assert!((1000..1500).contains(&ms(a)), "{}", ms(a));
        assert!((1000..1500).contains(&ms(b)), "{}", ms(b));
        assert!((2000..2500).contains(&ms(c)), "{}", ms(c));
        // A split I/O waits for both of its operations.
        let d = m.admit(2048, 4096).unwrap();
        assert!(ms(d) >= 3000, "{}", ms(d));
        assert_eq!(count(&m, "split_ios"), 1);
    }

    #[test]
    fn a_link_spaces_transfers_by_its_rate() {
        let l = Link::new(LinkSpec {
            name: "ultra320".into(),
            bytes_per_sec: 320_000_000,
            sharing: LinkSharing::Bus,
        });
        let t0 = Instant::now();
        l.admit("a", 320_000);
        let done = l.admit("b", 320_000);
        // Two 1 ms transfers on one shared bus: the second ends at 2 ms.
        assert!(done.duration_since(t0) >= Duration::from_millis(2));
        let fc = Link::new(LinkSpec {
            name: "fc2g".into(),
            bytes_per_sec: 200_000_000,
            sharing: LinkSharing::PerInitiator,
        });
        let t0 = Instant::now();
        fc.admit("a", 200_000);
        let b = fc.admit("b", 200_000);
        // Separate ports: b does not wait for a.
        assert!(b.duration_since(t0) < Duration::from_micros(1900));
        assert_eq!(fc.status()["counters"]["transfers"], 2);
    }

    #[test]
    fn presets_are_named() {
        assert_eq!(
            preset("hdd-10k").map(|p| p.service_time),
            Some(Duration::from_millis(7))
        );
        assert!(preset("floppy").is_none());
    }
}
