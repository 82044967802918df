//! Which accepted connections the portal serves: at most
//! `iscsi.max_connections` in all and `iscsi.max_connections_per_source`
//! from one source address (docs/limits.md). A refused connection is
//! closed right after accept. Refusals are logged at most once per source
//! and [`REFUSAL_LOG_INTERVAL`], with the number left unlogged since, so a
//! flood cannot flood the log as well.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often refusals of one source are logged.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The portal serves `max_connections` already.
    PortalFull { limit: u32 },
    /// This source has `max_connections_per_source` open already.
    SourceFull { limit: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PortalFull { limit } => {
                write!(f, "the portal serves its maximum of {limit} connections")
            }
            Refusal::SourceFull { limit } => {
                write!(
                    f,
                    "this address has its maximum of {limit} connections open"
                )
            }
        }
    }
}

#[derive(Default)]
struct Source {
    open: u32,
    /// When a refusal of this source was last logged, and how many were
    /// refused without a log line since.
    logged: Option<Instant>,
    unlogged: u64,
}

#[derive(Default)]
struct Inner {
    total: u32,
    by_source: HashMap<IpAddr, Source>,
}

/// The open connections per source, shared by the accept loop and the
/// connections (each holds an [`Admitted`] that gives its place back).
pub struct Admission {
    max_total: u32,
    max_per_source: u32,
    inner: Mutex<Inner>,
    refused: AtomicU64,
}

/// A connection's place; dropping it frees the place.
pub struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.source);
    }
}

impl Admission {
    pub fn new(max_total: u32, max_per_source: u32) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_source,
            inner: Mutex::new(Inner::default()),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open from `source`.
    pub fn open_from(&self, source: IpAddr) -> u32 {
        self.lock().by_source.get(&source).map_or(0, |s| s.open)
    }

    /// Admits a connection from `source`, or refuses it and logs the
    /// refusal if this source's interval has passed.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let mut inner = self.lock();
        let open = inner.by_source.get(&source).map_or(0, |s| s.open);
        let refusal = if inner.total >= self.max_total {
            Some(Refusal::PortalFull {
                limit: self.max_total,
            })
        } else if open >= self.max_per_source {
            Some(Refusal::SourceFull {
                limit: self.max_per_source,
            })
        } else {
            None
        };
        let entry = inner.by_source.entry(source).or_default();
        if let Some(refusal) = refusal {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let due = entry
                .logged
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL);
            if due {
                tracing::warn!(
                    source = %source,
                    open = entry.open,
                    refused_since_last_report = entry.unlogged,
                    "connection refused right after accept: {refusal}"
                );
                entry.logged = Some(now);
                entry.unlogged = 0;
            } else {
                entry.unlogged += 1;
            }
            if entry.open == 0 && entry.unlogged == 0 {
                // Nothing to remember (a portal-full refusal of a new source).
                inner.by_source.remove(&source);
            }
            return Err(refusal);
        }
        entry.open += 1;
        inner.total += 1;
        Ok(Admitted {
            admission: self.clone(),
            source,
        })
    }

    fn release(&self, source: IpAddr) {
        let mut inner = self.lock();
        inner.total = inner.total.saturating_sub(1);
        let Some(entry) = inner.by_source.get_mut(&source) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if entry.open == 0 {
            if entry.unlogged > 0 {
                tracing::warn!(
                    source = %source,
                    refused_since_last_report = entry.unlogged,
                    "connections from this address were refused (its last connection has closed)"
                );
            }
            // The table holds only sources with open connections.
            inner.by_source.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_leaves_other_sources_alone() {
        let a = Admission::new(10, 2);
        let now = Instant::now();
        let one = a.admit(ip("127.0.0.1"), now).unwrap();
        let _two = a.admit(ip("127.0.0.1"), now).unwrap();
        assert_eq!(
            a.admit(ip("127.0.0.1"), now).err(),
            Some(Refusal::SourceFull { limit: 2 })
        );
        let _other = a.admit(ip("127.0.0.2"), now).unwrap();
        drop(one);
        assert_eq!(a.open_from(ip("127.0.0.1")), 1);
        assert!(a.admit(ip("127.0.0.1"), now).is_ok());
        assert_eq!(a.refused(), 1);
    }

    #[test]
    fn portal_cap_counts_every_source() {
        let a = Admission::new(2, 2);
        let now = Instant::now();
        let _x = a.admit(ip("10.0.0.1"), now).unwrap();
        let _y = a.admit(ip("10.0.0.2"), now).unwrap();
        assert_eq!(
            a.admit(ip("10.0.0.3"), now).err(),
            Some(Refusal::PortalFull { limit: 2 })
        );
        // A refused new source leaves nothing behind.
        assert_eq!(a.lock().by_source.len(), 2);
    }

    #[test]
    fn refusals_are_counted_between_log_lines() {
        let a = Admission::new(10, 1);
        let t0 = Instant::now();
        let _held = a.admit(ip("127.0.0.1"), t0).unwrap();
        for i in 0..5 {
            let _ = a.admit(ip("127.0.0.1"), t0 + Duration::from_millis(i));
        }
        let unlogged = |a: &Admission| a.lock().by_source[&ip("127.0.0.1")].unlogged;
        // The first refusal was logged, the next four were counted.
        assert_eq!(unlogged(&a), 4);
        let _ = a.admit(ip("127.0.0.1"), t0 + REFUSAL_LOG_INTERVAL);
        assert_eq!(unlogged(&a), 0, "a new interval logs and resets the count");
    }
}
