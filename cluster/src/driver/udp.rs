//! Cluster traffic over UDP: one socket per cluster network.
//!
//! Every datagram is an authenticated [`message`](crate::message) envelope.
//! Whatever fails [`message::decode`] (wrong secret, tampered, malformed,
//! another cluster) is dropped here and counted; the node only ever sees
//! authenticated envelopes. The drop is logged with the sender's address,
//! at most once per sender and network every [`DROP_LOG_INTERVAL`], with
//! the number of drops held back since the previous line, so a peer
//! sending junk as fast as it can does not flood the log.
//!
//! A per-network partition switch drops this node's traffic on that network
//! in both directions while the process keeps running (the lab's
//! `partition` verb). A per-network delay switch holds each datagram this
//! node sends on that network for a while before it goes out: the lab's
//! stand-in for `tc netem delay` on a kernel without netem (docs/hosts.md).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busrig_lograte::{RateLimitedLog, Verdict};
use tokio::net::UdpSocket;

use crate::config::{ClusterConfig, NodeId};
use crate::message::{self, Envelope, Net};

/// Largest datagram we accept (UDP's limit).
const MAX_DATAGRAM: usize = 65_536;

/// At most one "dropped cluster datagram" line per sender and network in
/// this interval.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Senders whose drops are logged separately; beyond that they share one
/// line per interval.
const DROP_LOG_SENDERS: usize = 64;

/// The UDP sockets of one node, one per cluster network.
#[derive(Debug)]
pub struct ClusterTransport {
    secret: Vec<u8>,
    cluster: String,
    sockets: [Arc<UdpSocket>; 2],
    /// Each node's address on each network, indexed by [`Net::index`].
    peers: Mutex<Vec<[SocketAddr; 2]>>,
    partitioned: [AtomicBool; 2],
    /// Milliseconds each send on a network is held back (0: none).
    delay_ms: [AtomicU64; 2],
    dropped: AtomicU64,
    drop_log: Mutex<RateLimitedLog<(Net, IpAddr)>>,
}

impl ClusterTransport {
    /// Binds node `me`'s private and public addresses from the cluster file.
    pub async fn bind(cfg: &ClusterConfig, me: NodeId) -> io::Result<ClusterTransport> {
        let node = cfg.nodes.get(usize::from(me)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no node {me} in the cluster file"),
            )
        })?;
        let private = UdpSocket::bind(node.private).await?;
        let public = UdpSocket::bind(node.public).await?;
        let peers = cfg.nodes.iter().map(|n| [n.private, n.public]).collect();
        Ok(Self::from_sockets(
            cfg.secret.as_bytes(),
            &cfg.name,
            [private, public],
            peers,
        ))
    }

    /// A transport over sockets bound by the caller (tests bind port 0);
    /// `peers[node]` is that node's `[private, public]` address.
    pub fn from_sockets(
        secret: &[u8],
        cluster: &str,
        sockets: [UdpSocket; 2],
        peers: Vec<[SocketAddr; 2]>,
    ) -> ClusterTransport {
        ClusterTransport {
            secret: secret.to_vec(),
            cluster: cluster.to_string(),
            sockets: sockets.map(Arc::new),
            peers: Mutex::new(peers),
            partitioned: [AtomicBool::new(false), AtomicBool::new(false)],
            delay_ms: [AtomicU64::new(0), AtomicU64::new(0)],
            dropped: AtomicU64::new(0),
            drop_log: Mutex::new(RateLimitedLog::new(DROP_LOG_INTERVAL, DROP_LOG_SENDERS)),
        }
    }

    /// The local address on `net`.
    pub fn local_addr(&self, net: Net) -> io::Result<SocketAddr> {
        self.sockets[net.index()].local_addr()
    }

    /// Sets (or adds) node `node`'s address on `net`.
    pub fn set_peer(&self, node: NodeId, net: Net, addr: SocketAddr) {
        let mut peers = self.peers.lock().expect("peer table poisoned");
        let i = usize::from(node);
        if peers.len() <= i {
            peers.resize(i + 1, [addr, addr]);
        }
        peers[i][net.index()] = addr;
    }

    /// Cuts (true) or heals (false) this node's traffic on `net`, both ways.
    pub fn set_partitioned(&self, net: Net, cut: bool) {
        self.partitioned[net.index()].store(cut, Ordering::SeqCst);
    }

    pub fn is_partitioned(&self, net: Net) -> bool {
        self.partitioned[net.index()].load(Ordering::SeqCst)
    }

    /// Holds every datagram this node sends on `net` for `delay` (zero:
    /// sends go out at once again).
    pub fn set_delay(&self, net: Net, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms[net.index()].store(ms, Ordering::SeqCst);
    }

    /// The delay set on `net`.
    pub fn delay(&self, net: Net) -> Duration {
        Duration::from_millis(self.delay_ms[net.index()].load(Ordering::SeqCst))
    }

    /// Datagrams refused so far (unauthenticated or malformed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Signs `env` and sends it to `env.to` on `net`. A partitioned network
    /// silently swallows it, like a cut cable.
    pub async fn send(&self, net: Net, env: &Envelope) -> io::Result<()> {
        if self.is_partitioned(net) {
            return Ok(());
        }
        let addr = {
            let peers = self.peers.lock().expect("peer table poisoned");
            peers.get(usize::from(env.to)).map(|a| a[net.index()])
        };
        let Some(addr) = addr else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address for node {}", env.to),
            ));
        };
        let bytes = message::encode(&self.secret, env);
        let delay = self.delay(net);
        if delay.is_zero() {
            self.sockets[net.index()].send_to(&bytes, addr).await?;
            return Ok(());
        }
        // A delayed datagram travels on its own, so the sender (and the
        // datagrams behind it) do not wait: a slow link, not a slow node.
        let socket = Arc::clone(&self.sockets[net.index()]);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = socket.send_to(&bytes, addr).await {
                tracing::debug!(peer = %addr, error = %e, "delayed cluster datagram not sent");
            }
        });
        Ok(())
    }

    /// The next authenticated envelope from either network. Refused and
    /// partitioned datagrams are dropped and never returned.
    pub async fn recv(&self) -> io::Result<(Net, Envelope)> {
        let mut bufs = [vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]];
        loop {
            let [b0, b1] = &mut bufs;
            let (net, res) = tokio::select! {
                r = self.sockets[0].recv_from(b0) => (Net::Private, r),
                r = self.sockets[1].recv_from(b1) => (Net::Public, r),
            };
            let (len, from) = match res {
                Ok(x) => x,
                // ICMP port unreachable from an earlier send to a dead peer
                // surfaces here on some platforms; it is not our failure.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e),
            };
            let buf = &bufs[net.index()];
            if self.is_partitioned(net) {
                continue;
            }
            if let Some(env) = self.accept(net, from, &buf[..len]) {
                return Ok((net, env));
            }
        }
    }

    /// Verifies one datagram; counts it if refused and logs it unless the
    /// sender's drops were logged within [`DROP_LOG_INTERVAL`].
    fn accept(&self, net: Net, from: SocketAddr, bytes: &[u8]) -> Option<Envelope> {
        match message::decode(&self.secret, &self.cluster, bytes) {
            Ok(env) => Some(env),
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let verdict = self
                    .drop_log
                    .lock()
                    .expect("drop log poisoned")
                    .check(&(net, from.ip()), Instant::now());
                match verdict {
                    Verdict::Quiet => {}
                    Verdict::Log { suppressed: 0 } => {
                        tracing::warn!(peer = %from, net = ?net, error = %e, "dropped cluster datagram");
                    }
                    Verdict::Log { suppressed } => {
                        tracing::warn!(
                            peer = %from, net = ?net, error = %e, suppressed,
                            "dropped cluster datagram ({suppressed} more from this sender not logged since the last line)"
                        );
                    }
                }
                None
            }
        }
    }
}

/// Shared handle, so the lab's partition switch can reach a running driver.
pub type SharedTransport = Arc<ClusterTransport>;
