//! Node Manager failure detection: heartbeats on every cluster network.
//!
//! A peer is suspected only when it has been silent on *all* networks for
//! the detection time (`heartbeat x regroup_misses`); silence on one
//! network alone raises a warning after `warn_misses` heartbeats, so losing
//! only the private network fails nothing over.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{NodeId, Timing};
use crate::message::Net;

/// What the detector noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The peer missed `warn_misses` heartbeats on this network.
    NetworkWarning { peer: NodeId, net: Net },
    /// The peer is heard again on this network.
    NetworkRecovered { peer: NodeId, net: Net },
    /// The peer was silent on every network for the detection time.
    Suspect { peer: NodeId },
}

#[derive(Debug, Clone)]
struct Peer {
    /// Last time heard on each network, or when watching started.
    last: [Duration; 2],
    warned: [bool; 2],
    suspected: bool,
}

/// Per-peer, per-network silence tracking.
#[derive(Debug, Clone)]
pub struct Detector {
    timing: Timing,
    peers: BTreeMap<NodeId, Peer>,
}

impl Detector {
    pub fn new(timing: Timing) -> Detector {
        Detector {
            timing,
            peers: BTreeMap::new(),
        }
    }

    /// Watches exactly `peers`, keeping the history of those already
    /// watched and starting new ones as if just heard at `now`.
    pub fn watch_only(&mut self, peers: impl IntoIterator<Item = NodeId>, now: Duration) {
        let mut next = BTreeMap::new();
        for p in peers {
            let e = self.peers.remove(&p).unwrap_or(Peer {
                last: [now; 2],
                warned: [false; 2],
                suspected: false,
            });
            next.insert(p, e);
        }
        self.peers = next;
    }

    /// Forgets every suspicion and restarts every peer's clock at `now`
    /// (after a regroup, or after this node was paused).
    pub fn reset(&mut self, now: Duration) {
        for p in self.peers.values_mut() {
            *p = Peer {
                last: [now; 2],
                warned: [false; 2],
                suspected: false,
            };
        }
    }

    /// A heartbeat (or any message) from `peer` arrived on `net`.
    pub fn heard(&mut self, peer: NodeId, net: Net, now: Duration) -> Option<Liveness> {
        let p = self.peers.get_mut(&peer)?;
        let i = net.index();
        p.last[i] = p.last[i].max(now);
        p.suspected = false;
        if std::mem::take(&mut p.warned[i]) {
            return Some(Liveness::NetworkRecovered { peer, net });
        }
        None
    }

    /// When each watched peer was last heard on each network (indexed by
    /// `Net::index`), for the status report.
    pub fn last_heard(&self) -> Vec<(NodeId, [Duration; 2])> {
        self.peers.iter().map(|(&id, p)| (id, p.last)).collect()
    }

    /// Time since `peer` was last heard on any network.
    pub fn silence(&self, peer: NodeId, now: Duration) -> Option<Duration> {
        let p = self.peers.get(&peer)?;
        Some(now.saturating_sub(p.last[0].max(p.last[1])))
    }

    pub fn tick(&mut self, now: Duration) -> Vec<Liveness> {
        let warn = self.timing.heartbeat * self.timing.warn_misses;
        let detect = self.timing.detection();
        let mut out = Vec::new();
        for (&peer, p) in self.peers.iter_mut() {
            for net in Net::ALL {
                let i = net.index();
                if !p.warned[i] && now.saturating_sub(p.last[i]) >= warn {
                    p.warned[i] = true;
                    out.push(Liveness::NetworkWarning { peer, net });
                }
            }
            let quiet = now.saturating_sub(p.last[0].max(p.last[1]));
            if !p.suspected && quiet >= detect {
                p.suspected = true;
                out.push(Liveness::Suspect { peer });
            }
        }
        out
    }

    /// The next instant at which `tick` may report something.
    pub fn next_deadline(&self) -> Option<Duration> {
        let warn = self.timing.heartbeat * self.timing.warn_misses;
        let detect = self.timing.detection();
        self.peers
            .values()
            .flat_map(|p| {
                let mut v = Vec::new();
                for i in 0..2 {
                    if !p.warned[i] {
                        v.push(p.last[i] + warn);
                    }
                }
                if !p.suspected {
                    v.push(p.last[0].max(p.last[1]) + detect);
                }
                v
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn one_network_down_warns_but_never_suspects() {
        let mut d = Detector::new(Timing::fast());
        d.watch_only([1], ms(0));
        let mut events = Vec::new();
        for t in (0..2000).step_by(100) {
            d.heard(1, Net::Public, ms(t));
            events.extend(d.tick(ms(t)));
        }
        assert_eq!(
            events,
            vec![Liveness::NetworkWarning {
                peer: 1,
                net: Net::Private
            }]
        );
        assert_eq!(
            d.heard(1, Net::Private, ms(2000)),
            Some(Liveness::NetworkRecovered {
                peer: 1,
                net: Net::Private
            })
        );
    }

    #[test]
    fn silent_on_all_networks_is_suspected_after_detection() {
        let mut d = Detector::new(Timing::fast());
        d.watch_only([1, 2], ms(0));
        d.heard(2, Net::Private, ms(550));
        assert!(!d.tick(ms(599)).contains(&Liveness::Suspect { peer: 1 }));
        assert_eq!(
            d.tick(ms(600))
                .into_iter()
                .filter(|e| matches!(e, Liveness::Suspect { .. }))
                .collect::<Vec<_>>(),
            vec![Liveness::Suspect { peer: 1 }]
        );
        // Reported once.
        assert!(d.tick(ms(700)).is_empty());
        assert_eq!(d.silence(1, ms(700)), Some(ms(700)));
        assert!(d.next_deadline().is_some());
    }
}
