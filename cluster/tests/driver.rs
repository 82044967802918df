//! The tokio driver over real loopback sockets (STYLE rule 10: port 0).

use std::net::SocketAddr;
use std::time::Duration;

use busrig_cluster::driver::ClusterTransport;
use busrig_cluster::message::{self, Body, Envelope, Net};
use tokio::net::UdpSocket;

const SECRET: &[u8] = b"driver test secret";
const CLUSTER: &str = "DRV";

async fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback")
}

/// Two transports (nodes 0 and 1) that know each other's addresses.
async fn pair() -> (ClusterTransport, ClusterTransport) {
    let a = [socket().await, socket().await];
    let b = [socket().await, socket().await];
    let addrs = |s: &[UdpSocket; 2]| -> [SocketAddr; 2] {
        [s[0].local_addr().unwrap(), s[1].local_addr().unwrap()]
    };
    let peers = vec![addrs(&a), addrs(&b)];
    (
        ClusterTransport::from_sockets(SECRET, CLUSTER, a, peers.clone()),
        ClusterTransport::from_sockets(SECRET, CLUSTER, b, peers),
    )
}

fn heartbeat(from: u16, to: u16, seq: u64) -> Envelope {
    Envelope {
        cluster: CLUSTER.into(),
        from,
        to,
        incarnation: 7,
        to_incarnation: 0,
        seq: seq + 1,
        body: Body::Heartbeat {
            seq,
            view: None,
            db_seq: 0,
        },
    }
}

async fn recv_within(t: &ClusterTransport, ms: u64) -> Option<(Net, Envelope)> {
    tokio::time::timeout(Duration::from_millis(ms), t.recv())
        .await
        .ok()
        .map(|r| r.expect("recv"))
}

#[tokio::test]
async fn round_trip_on_both_networks() {
    let (a, b) = pair().await;
    for (seq, net) in Net::ALL.into_iter().enumerate() {
        let env = heartbeat(0, 1, seq as u64);
        a.send(net, &env).await.unwrap();
        let got = recv_within(&b, 2000).await.expect("delivered");
        assert_eq!(got, (net, env));
    }
    assert_eq!(b.dropped(), 0);
}

#[tokio::test]
async fn tampered_datagram_is_dropped_and_counted() {
    let (_a, b) = pair().await;
    let raw = socket().await;
    let to = b.local_addr(Net::Public).unwrap();
    let mut bytes = message::encode(SECRET, &heartbeat(0, 1, 1));
    bytes[8] ^= 0x01;
    raw.send_to(&bytes, to).await.unwrap();
    raw.send_to(b"garbage", to).await.unwrap();
    // Wrong secret.
    raw.send_to(&message::encode(b"other", &heartbeat(0, 1, 2)), to)
        .await
        .unwrap();
    // A good one after them proves the bad ones were consumed, not queued.
    let good = heartbeat(0, 1, 3);
    raw.send_to(&message::encode(SECRET, &good), to)
        .await
        .unwrap();
    let got = recv_within(&b, 2000)
        .await
        .expect("good datagram delivered");
    assert_eq!(got, (Net::Public, good));
    assert_eq!(b.dropped(), 3);
}

#[tokio::test]
async fn partitioned_network_drops_both_ways() {
    let (a, b) = pair().await;
    b.set_partitioned(Net::Private, true);
    // Outgoing from the partitioned node: swallowed.
    b.send(Net::Private, &heartbeat(1, 0, 1)).await.unwrap();
    assert!(recv_within(&a, 200).await.is_none());
    // Incoming to the partitioned node: discarded.
    a.send(Net::Private, &heartbeat(0, 1, 2)).await.unwrap();
    assert!(recv_within(&b, 200).await.is_none());
    // The other network still works.
    let env = heartbeat(0, 1, 3);
    a.send(Net::Public, &env).await.unwrap();
    assert_eq!(recv_within(&b, 2000).await, Some((Net::Public, env)));
    // Healed: traffic flows again.
    b.set_partitioned(Net::Private, false);
    let env = heartbeat(1, 0, 4);
    b.send(Net::Private, &env).await.unwrap();
    assert_eq!(recv_within(&a, 2000).await, Some((Net::Private, env)));
    assert_eq!(a.dropped() + b.dropped(), 0);
}

#[tokio::test]
async fn a_delayed_network_holds_its_datagrams_without_holding_the_sender() {
    let (a, b) = pair().await;
    b.set_delay(Net::Private, std::time::Duration::from_millis(400));
    let slow = heartbeat(1, 0, 1);
    let fast = heartbeat(1, 0, 2);
    b.send(Net::Private, &slow).await.unwrap();
    // Sent after the delayed one, it arrives first: the delay is the
    // link's, not the sender's.
    b.send(Net::Public, &fast).await.unwrap();
    assert_eq!(recv_within(&a, 2000).await, Some((Net::Public, fast)));
    assert_eq!(recv_within(&a, 2000).await, Some((Net::Private, slow)));
    b.set_delay(Net::Private, std::time::Duration::ZERO);
    assert!(b.delay(Net::Private).is_zero());
}

// --- the event loop -------------------------------------------------------

use std::future::Future;
use std::sync::{Arc, Mutex};

use busrig_cluster::arbiter::{DiskId, DiskOp, DiskResult};
use busrig_cluster::config::ClusterConfig;
use busrig_cluster::driver::{run, DiskExecutor, Exit, Io, NodeStatus};
use busrig_cluster::node::Node;
use tokio::sync::watch;

/// An in-memory shared disk with SCSI-2 reservation rules.
#[derive(Debug, Default)]
struct SharedDisk {
    holder: Option<u16>,
    region: Vec<u8>,
}

/// One node's path to the shared disk; reads and writes answer after
/// `data_delay` (a slow or busy disk), reservation commands at once.
#[derive(Debug, Clone)]
struct MemDisk {
    me: u16,
    disk: Arc<Mutex<SharedDisk>>,
    data_delay: Duration,
}

impl DiskExecutor for MemDisk {
    fn execute(&self, _id: DiskId, op: DiskOp) -> impl Future<Output = DiskResult> + Send {
        let delay = if matches!(op, DiskOp::Write { .. } | DiskOp::Read { .. }) {
            self.data_delay
        } else {
            Duration::ZERO
        };
        let mut d = self.disk.lock().unwrap();
        let me = self.me;
        let fenced = d.holder.is_some_and(|h| h != me);
        let r = match op {
            DiskOp::Reserve if fenced => DiskResult::Conflict,
            DiskOp::Reserve => {
                d.holder = Some(me);
                DiskResult::Good
            }
            DiskOp::Release => {
                if d.holder == Some(me) {
                    d.holder = None;
                }
                DiskResult::Good
            }
            DiskOp::BusReset => {
                d.holder = None;
                DiskResult::Good
            }
            DiskOp::Write { .. } | DiskOp::Read { .. } if fenced => DiskResult::Conflict,
            DiskOp::Write { offset, data } => {
                let end = offset as usize + data.len();
                if d.region.len() < end {
                    d.region.resize(end, 0);
                }
                d.region[offset as usize..end].copy_from_slice(&data);
                DiskResult::Good
            }
            DiskOp::Read { offset, len } => {
                let end = offset as usize + len;
                if d.region.len() < end {
                    d.region.resize(end, 0);
                }
                DiskResult::Data(d.region[offset as usize..end].to_vec())
            }
            other => DiskResult::Failed(format!("{other:?} unsupported")),
        };
        async move {
            tokio::time::sleep(delay).await;
            r
        }
    }
}

fn cluster_config(nodes: usize) -> Arc<ClusterConfig> {
    let mut s = format!(
        "name = \"{CLUSTER}\"\nsecret = \"driver test secret\"\n\
         quorum-disk = \"iscsi://127.0.0.1/iqn.2026-11.io.busrig:drv/0\"\nquorum-log-limit = 65536\n\
         [quorum]\nmodel = \"disk-scsi2\"\n"
    );
    for i in 0..nodes {
        s += &format!(
            "[[node]]\nname = \"N{i}\"\nprivate = \"127.0.0.1:{}\"\n\
             public = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
            20000 + i,
            21000 + i,
            22000 + i
        );
    }
    Arc::new(ClusterConfig::from_toml(&s).expect("config"))
}

async fn wait_for(
    rx: &mut watch::Receiver<NodeStatus>,
    what: &str,
    f: impl Fn(&NodeStatus) -> bool,
) {
    let done = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|_| ()));
    match done {
        Ok(r) => r.expect("driver alive"),
        Err(_) => panic!("timed out waiting for {what}: {:?}", *rx.borrow()),
    }
}

type Running = (
    watch::Receiver<NodeStatus>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<(Node, Exit)>,
);

/// Node `me` (named `N{me}`) running over `t` against the shared disk.
fn start(
    cfg: &Arc<ClusterConfig>,
    me: u16,
    t: Arc<ClusterTransport>,
    shared: &Arc<Mutex<SharedDisk>>,
) -> Running {
    spawn_node(cfg, me, t, shared, Duration::ZERO, None)
}

/// [`start`] with a disk whose reads and writes take `data_delay`, taking
/// commands from `commands` if given.
fn spawn_node(
    cfg: &Arc<ClusterConfig>,
    me: u16,
    t: Arc<ClusterTransport>,
    shared: &Arc<Mutex<SharedDisk>>,
    data_delay: Duration,
    commands: Option<tokio::sync::mpsc::UnboundedReceiver<busrig_cluster::driver::Command>>,
) -> Running {
    let cfg = cfg.clone();
    let disk = MemDisk {
        me,
        disk: shared.clone(),
        data_delay,
    };
    let (stx, srx) = watch::channel(NodeStatus::default());
    let (qtx, qrx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let node = Node::new(cfg, &format!("N{me}"), 1, Duration::ZERO).expect("node");
        let mut io = Io {
            commands,
            status: Some(stx),
            ..Io::default()
        };
        run(node, &t, &disk, &mut io, async {
            let _ = qrx.await;
        })
        .await
    });
    (srx, qtx, task)
}

/// Loopback transports for `n` nodes that know each other's addresses.
async fn transports(n: usize) -> Vec<Arc<ClusterTransport>> {
    let mut socks = Vec::new();
    for _ in 0..n {
        socks.push([socket().await, socket().await]);
    }
    let peers: Vec<[SocketAddr; 2]> = socks
        .iter()
        .map(|s| [s[0].local_addr().unwrap(), s[1].local_addr().unwrap()])
        .collect();
    socks
        .into_iter()
        .map(|s| {
            Arc::new(ClusterTransport::from_sockets(
                SECRET,
                CLUSTER,
                s,
                peers.clone(),
            ))
        })
        .collect()
}

/// A two-node cluster: N0 formed it and owns the quorum, N1 joined.
async fn formed_pair(
    cfg: &Arc<ClusterConfig>,
    shared: &Arc<Mutex<SharedDisk>>,
) -> (Vec<Arc<ClusterTransport>>, Running, Running) {
    let t = transports(2).await;
    let mut n0 = start(cfg, 0, t[0].clone(), shared);
    wait_for(&mut n0.0, "N0 forms the cluster", |s| s.acting_owner).await;
    let mut n1 = start(cfg, 1, t[1].clone(), shared);
    wait_for(&mut n1.0, "N1 joins", |s| {
        s.view.as_ref().is_some_and(|v| v.members.len() == 2)
    })
    .await;
    (t, n0, n1)
}

#[tokio::test]
async fn killed_owner_fails_over() {
    let cfg = cluster_config(2);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let (_t, n0, mut n1) = formed_pair(&cfg, &shared).await;
    // kill -9: no exit announcement, the reservation stays until a reset.
    n0.2.abort();
    wait_for(&mut n1.0, "N1 takes the quorum", |s| {
        s.acting_owner && s.view.as_ref().is_some_and(|v| v.owner == Some(1))
    })
    .await;
    assert_eq!(shared.lock().unwrap().holder, Some(1));
    n1.1.send(()).unwrap();
    assert_eq!(n1.2.await.unwrap().1, Exit::Shutdown);
}

#[tokio::test]
async fn isolated_member_loses_arbitration_and_stops() {
    let cfg = cluster_config(2);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let (t, mut n0, n1) = formed_pair(&cfg, &shared).await;
    // Both networks of N1 cut: it challenges, the live owner defends, and
    // N1 stops its cluster service; the run loop returns.
    t[1].set_partitioned(Net::Private, true);
    t[1].set_partitioned(Net::Public, true);
    let (node, exit) = tokio::time::timeout(Duration::from_secs(20), n1.2)
        .await
        .expect("N1 stops")
        .unwrap();
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
    assert!(node.is_stopped());
    assert!(n0.0.borrow_and_update().acting_owner);
    assert_eq!(shared.lock().unwrap().holder, Some(0));
    n0.1.send(()).unwrap();
    assert_eq!(n0.2.await.unwrap().1, Exit::Shutdown);
}

#[tokio::test]
async fn two_nodes_form_join_and_exit_cleanly() {
    let cfg = cluster_config(2);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let (_t, mut n0, n1) = formed_pair(&cfg, &shared).await;
    assert_eq!(shared.lock().unwrap().holder, Some(0));
    wait_for(&mut n0.0, "N0 sees N1", |s| {
        s.view
            .as_ref()
            .is_some_and(|v| v.members.len() == 2 && v.owner == Some(0))
    })
    .await;

    // N1 leaves cleanly: no regroup, N0 stays owner with one member.
    n1.1.send(()).unwrap();
    assert_eq!(n1.2.await.unwrap().1, Exit::Shutdown);
    wait_for(&mut n0.0, "N0 drops N1", |s| {
        s.view.as_ref().is_some_and(|v| v.members == vec![0])
    })
    .await;
    assert!(n0.0.borrow().acting_owner);

    n0.1.send(()).unwrap();
    let (node, exit) = n0.2.await.unwrap();
    assert_eq!(exit, Exit::Shutdown);
    assert!(node.is_stopped());
    // The owner's clean stop released the quorum disk before returning.
    assert_eq!(shared.lock().unwrap().holder, None);
}

/// The owner's RESERVE renewals do not wait behind its quorum log I/O: with
/// every read and write taking 700 ms (longer than the 200 ms lease of the
/// fast profile), the owner recovers its log and keeps the quorum, and
/// never falls back to challenging. With one queue for all disk
/// operations, the renewals waited behind the log read, the lease ran out
/// and the owner reset the bus to challenge again.
#[tokio::test]
async fn renewals_do_not_wait_behind_slow_log_io() {
    let cfg = cluster_config(1);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let t = transports(1).await;
    let mut n0 = spawn_node(
        &cfg,
        0,
        t[0].clone(),
        &shared,
        Duration::from_millis(700),
        None,
    );
    wait_for(&mut n0.0, "N0 forms the cluster", |s| s.acting_owner).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while let Ok(Ok(())) = tokio::time::timeout_at(until, n0.0.changed()).await {
        seen.push(n0.0.borrow_and_update().arbitration.clone());
    }
    assert!(
        seen.iter().all(|a| !a.starts_with("challenger")),
        "the owner challenged again: {seen:?}"
    );
    let s = n0.0.borrow().clone();
    assert!(s.acting_owner, "{s:?}");
    assert!(
        s.db_seq == 0 && !s.writes_held,
        "the log was recovered: {s:?}"
    );
    assert_eq!(shared.lock().unwrap().holder, Some(0));
    n0.1.send(()).unwrap();
    assert_eq!(n0.2.await.unwrap().1, Exit::Shutdown);
}

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A flood of junk from one sender writes one log line per interval, not
/// one per datagram; every datagram is still counted.
#[tokio::test]
async fn junk_flood_is_logged_once_and_counted_in_full() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_a, b) = pair().await;
    let raw = socket().await;
    let to = b.local_addr(Net::Private).unwrap();
    const JUNK: u64 = 2000;
    let good = heartbeat(0, 1, 1);
    let good_bytes = message::encode(SECRET, &good);
    for i in 0..JUNK {
        raw.send_to(format!("junk {i}").as_bytes(), to)
            .await
            .unwrap();
        // Keep the receive buffer from overflowing: let b drain as we go.
        if i % 200 == 199 {
            raw.send_to(&good_bytes, to).await.unwrap();
            assert_eq!(
                recv_within(&b, 2000).await,
                Some((Net::Private, good.clone()))
            );
        }
    }
    assert_eq!(b.dropped(), JUNK);
    assert_eq!(log.lines_with("dropped cluster datagram"), 1);
    assert!(
        String::from_utf8_lossy(&log.0.lock().unwrap())
            .contains(&raw.local_addr().unwrap().to_string()),
        "the line names the sender"
    );
}

/// A node whose process is stopped (SIGSTOP) for longer than its lease
/// does not say it acts as quorum owner when asked the moment it resumes,
/// before its own loop has run (issue 16, defect 4: a node paused for
/// 1.6 s answered `acting_owner: true` for its old epoch 4 ms after
/// SIGCONT). Blocking this test's single runtime thread stops every task
/// of the node as SIGSTOP stops the process; the status is then read
/// without yielding, as the admin endpoint's task may run first.
#[tokio::test]
async fn status_read_right_after_a_pause_longer_than_the_lease_is_not_owner() {
    use busrig_cluster::admin::ClusterStatus;
    let cfg = cluster_config(1);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let t = transports(1).await;
    let mut n0 = start(&cfg, 0, t[0].clone(), &shared);
    wait_for(&mut n0.0, "N0 forms the cluster", |s| s.acting_owner).await;
    assert!(ClusterStatus::from_node(&cfg, 0, &n0.0.borrow()).acting_owner);
    let lease = cfg.timing.challenge_wait.max(cfg.timing.renew * 4);
    std::thread::sleep(lease * 3);
    let s = ClusterStatus::from_node(&cfg, 0, &n0.0.borrow());
    assert!(
        !s.acting_owner,
        "a node paused past its lease answered acting_owner: {s:?}"
    );
    // Resumed, its loop finds the lease gone (and here stops its cluster
    // service, having missed its renewals).
    let _ = n0.1.send(());
    let _ = n0.2.await.unwrap();
}

/// The command channel outlives a restart of the cluster service (the
/// service manager starts a new node on the same channels): what a group
/// task proposed for the life it started in is refused by the next one,
/// while the new life's own proposals commit (issue 16, defect 1: a task
/// that outlived its service recorded "group failed on this node" into
/// the new membership's database over the new owner's "online").
#[tokio::test]
async fn a_proposal_for_an_earlier_service_life_is_refused_after_a_restart() {
    use busrig_cluster::db::Change;
    use busrig_cluster::driver::{Command, ProposeError};
    use busrig_cluster::host::{CommitError, HostContext};
    let cfg = cluster_config(1);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let t = transports(1).await;
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let (stx, mut srx) = watch::channel(NodeStatus::default());
    let ctx = HostContext {
        cfg: cfg.clone(),
        me: 0,
        data_dir: std::env::temp_dir(),
        commands: cmd_tx,
        status: srx.clone(),
        life: None,
        stopping: watch::channel(false).1,
    };
    let (end1_tx, end1_rx) = tokio::sync::oneshot::channel::<()>();
    let (end2_tx, end2_rx) = tokio::sync::oneshot::channel::<()>();
    let disk = MemDisk {
        me: 0,
        disk: shared.clone(),
        data_delay: Duration::ZERO,
    };
    let node_cfg = cfg.clone();
    let lives = tokio::spawn(async move {
        let mut io = Io {
            commands: Some(cmd_rx),
            events: None,
            status: Some(stx),
        };
        let mut exits = Vec::new();
        for (incarnation, end) in [(1, end1_rx), (2, end2_rx)] {
            let node =
                Node::new(node_cfg.clone(), "N0", incarnation, Duration::ZERO).expect("node");
            let (_, exit) = run(node, &t[0], &disk, &mut io, async {
                let _ = end.await;
            })
            .await;
            exits.push(exit);
        }
        exits
    });
    let put = |k: &str| Change::Put {
        key: k.into(),
        value: "v".into(),
    };
    wait_for(&mut srx, "life 1 forms the cluster", |s| {
        s.incarnation == 1 && s.acting_owner && !s.writes_held
    })
    .await;
    let old = ctx.for_life(1);
    old.propose(put("life1"))
        .await
        .expect("life 1 commits its own");
    end1_tx.send(()).unwrap();
    wait_for(&mut srx, "life 2 forms the cluster", |s| {
        s.incarnation == 2 && s.acting_owner && !s.writes_held
    })
    .await;
    match old.propose(put("stale")).await {
        Err(CommitError::Refused(ProposeError::OtherLife(1))) => {}
        other => panic!("life 2 took life 1's proposal: {other:?}"),
    }
    ctx.for_life(2)
        .propose(put("life2"))
        .await
        .expect("life 2 commits its own");
    let db = ctx.snapshot().await.expect("a snapshot");
    assert_eq!(db.get("stale"), None, "{db:?}");
    assert_eq!(db.get("life2"), Some("v"));
    end2_tx.send(()).unwrap();
    assert_eq!(lives.await.unwrap(), vec![Exit::Shutdown, Exit::Shutdown]);
}

/// Node `me` as [`start`], taking commands (reads) from the returned
/// sender, queued before its loop runs.
fn start_with_commands(
    cfg: &Arc<ClusterConfig>,
    me: u16,
    t: Arc<ClusterTransport>,
    shared: &Arc<Mutex<SharedDisk>>,
) -> (
    Running,
    tokio::sync::mpsc::UnboundedSender<busrig_cluster::driver::Command>,
) {
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let node = spawn_node(cfg, me, t, shared, Duration::ZERO, Some(cmd_rx));
    (node, cmd_tx)
}

type ReadReply = Result<busrig_cluster::db::DbSnapshot, busrig_cluster::driver::NotReadable>;

/// A client's read (`GET /db`) through node `commands`.
fn read(
    commands: &tokio::sync::mpsc::UnboundedSender<busrig_cluster::driver::Command>,
) -> impl Future<Output = ReadReply> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    commands
        .send(busrig_cluster::driver::Command::Read(tx))
        .expect("node loop alive");
    async move { rx.await.expect("an answer") }
}

/// A node that has not joined answers no read from its own (here empty)
/// copy: `GET /db` refuses until the node is a member with the cluster's
/// database (issue 16, chaos seed 102: a restarted service answered a read
/// from its empty copy 1 ms before it logged "joined").
#[tokio::test]
async fn a_node_that_has_not_joined_refuses_reads() {
    use busrig_cluster::db::Change;
    use busrig_cluster::driver::{Command, NotReadable};
    let cfg = cluster_config(2);
    let shared = Arc::new(Mutex::new(SharedDisk::default()));
    let t = transports(2).await;
    let (mut n0, c0) = start_with_commands(&cfg, 0, t[0].clone(), &shared);
    wait_for(&mut n0.0, "N0 forms the cluster", |s| {
        s.acting_owner && !s.writes_held
    })
    .await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let put = Change::Put {
        key: "k".into(),
        value: "v".into(),
    };
    c0.send(Command::Propose(put, Some(tx))).unwrap();
    rx.await.unwrap().expect("the put commits");
    let db = read(&c0).await.expect("the owner answers reads");
    assert_eq!(db.get("k"), Some("v"));

    // N1 cut off from N0 cannot join: its read is refused, not answered
    // from the empty copy it starts with.
    for net in [Net::Private, Net::Public] {
        t[1].set_partitioned(net, true);
    }
    let (n1, c1) = start_with_commands(&cfg, 1, t[1].clone(), &shared);
    assert_eq!(read(&c1).await, Err(NotReadable::NotMember));
    let _ = n1.1.send(());
    let _ = n1.2.await.unwrap();

    // Healed, a new N1 joins and then answers with the owner's copy.
    for net in [Net::Private, Net::Public] {
        t[1].set_partitioned(net, false);
    }
    let (mut n1, c1) = start_with_commands(&cfg, 1, t[1].clone(), &shared);
    wait_for(&mut n1.0, "N1 joins", |s| {
        s.view.as_ref().is_some_and(|v| v.members.len() == 2)
            && s.phase == busrig_cluster::driver::NodePhase::Member
    })
    .await;
    let db = read(&c1).await.expect("a member answers reads");
    assert_eq!(db.get("k"), Some("v"));
    for n in [n1, n0] {
        let _ = n.1.send(());
        let _ = n.2.await.unwrap();
    }
}

/// A proposal the node loop will never take (the cluster service is
/// between two lives, or shutting down) is not waited for: a node whose
/// groups each waited the change timeout for their state records did not
/// stop in 20 s on SIGTERM (issue 16).
#[tokio::test]
async fn a_proposal_is_not_waited_for_while_the_service_is_stopped_or_stopping() {
    use busrig_cluster::admin::change_timeout;
    use busrig_cluster::db::Change;
    use busrig_cluster::driver::{Command, NodePhase};
    use busrig_cluster::host::{CommitError, HostContext};
    let cfg = cluster_config(1);
    // Held and never read, as while the service waits to restart.
    let (cmd_tx, _cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let (status_tx, status_rx) = watch::channel(NodeStatus {
        phase: NodePhase::Stopped,
        ..NodeStatus::default()
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = HostContext {
        cfg: cfg.clone(),
        me: 0,
        data_dir: std::env::temp_dir(),
        commands: cmd_tx,
        status: status_rx,
        life: None,
        stopping: stop_rx,
    };
    let change = || Change::Put {
        key: "k".into(),
        value: "v".into(),
    };
    // Without the fix each of these waits the whole change timeout.
    let bound = change_timeout(&cfg) / 2;
    // The node loop stopped.
    let r = tokio::time::timeout(bound, ctx.propose(change())).await;
    assert!(matches!(r, Ok(Err(CommitError::Stopped))), "{r:?}");
    // A running member, but the service is shutting down.
    status_tx.send_modify(|s| s.phase = NodePhase::Member);
    stop_tx.send(true).unwrap();
    let r = tokio::time::timeout(bound, ctx.propose(change())).await;
    assert!(matches!(r, Ok(Err(CommitError::ShuttingDown))), "{r:?}");
}
