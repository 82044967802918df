//! Issue 14, defect 1, with real processes: authenticated cluster traffic
//! of a killed node, sent again, must not keep it "online" nor leave the
//! survivors without a quorum owner (docs/semantics.md "Replayed messages").
//!
//! A three-node `busrig lab` forms (`disk-scsi2`, then `majority`); the test kills the quorum owner with
//! kill -9 and then, every 50 ms, sends each survivor on both networks the
//! heartbeats the dead owner could have sent — signed with the lab's
//! cluster secret, so they pass the HMAC — in the three forms a captured
//! datagram takes: the owner's own incarnation with sequence numbers it
//! already used, an earlier incarnation of the owner, and addressed to an
//! earlier life of the survivor. Each is refused after the tag, and the
//! survivors fail over within the profile's bound while it goes on. Their
//! logs report the refusals, a few lines rather than one per datagram.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrig_cluster::config::NodeId;
use busrig_cluster::message::{self, Body, Envelope};

mod common;
use common::lab::Lab;

/// How often the replaying sender repeats itself (the reported attack).
const REPLAY_EVERY: Duration = Duration::from_millis(50);

/// The log line a node writes, rate-limited, when it refuses replays.
const REFUSED_LINE: &str = "refused replayed cluster messages";

impl Lab {
    /// How long a takeover may take in this profile: detection, a regroup,
    /// the challenge and the online delay, with slack for a busy machine
    /// (as in `tests/cluster_lab.rs`).
    fn takeover_bound(&self) -> Duration {
        let t = &self.cfg.timing;
        t.detection() * 3 + t.challenge_wait + t.online_delay + Duration::from_secs(3)
    }

    /// The incarnation node `name` last started as, from the line its
    /// cluster service logs on every start.
    fn incarnation(&self, name: &str) -> u64 {
        let log = self.log_of(name);
        log.lines()
            .filter(|l| l.contains("cluster service starting"))
            .filter_map(|l| {
                let rest = &l[l.find("incarnation=")? + "incarnation=".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .next_back()
            .unwrap_or_else(|| panic!("{name} logged no incarnation{}", self.logs()))
    }

    /// The one survivor acting as owner, once every survivor is a member of
    /// its view, writes released, and shows `gone` offline.
    fn failed_over(&self, survivors: &[String], gone: &str) -> bool {
        let st: Vec<_> = survivors.iter().filter_map(|n| self.status(n)).collect();
        if st.len() != survivors.len() || st.iter().any(|s| !s.member || s.writes_held) {
            return false;
        }
        let owner = st[0].quorum_owner.clone();
        st.iter()
            .all(|s| s.epoch == st[0].epoch && s.quorum_owner == owner)
            && owner.is_some_and(|o| {
                survivors.contains(&o) && self.status(&o).is_some_and(|s| s.acting_owner)
            })
            && st.iter().all(|s| s.state_of(gone) != Some("online"))
    }
}

/// The datagrams a replaying attacker sends in one round: to each survivor
/// on both networks, heartbeats of `victim` in the three captured forms.
fn replay_round(
    lab: &Lab,
    victim: NodeId,
    victim_inc: u64,
    survivors: &[(NodeId, u64)],
) -> Vec<(SocketAddr, Vec<u8>)> {
    let secret = lab.cfg.secret.as_bytes();
    let mut out = Vec::new();
    for &(to, to_inc) in survivors {
        let forms = [
            // Its own incarnation, numbers it used in its first seconds.
            (victim_inc, to_inc, 1),
            (victim_inc, to_inc, 2),
            (victim_inc, to_inc, 3),
            (victim_inc, to_inc, 4),
            // An earlier incarnation, with a number far ahead.
            (victim_inc - 1, to_inc, 1 << 40),
            // Addressed to the survivor's earlier life.
            (victim_inc, to_inc - 1, 1 << 40),
        ];
        for (incarnation, to_incarnation, seq) in forms {
            let env = Envelope {
                cluster: lab.cfg.name.clone(),
                from: victim,
                to,
                incarnation,
                to_incarnation,
                seq,
                body: Body::Heartbeat {
                    seq,
                    view: None,
                    db_seq: 0,
                },
            };
            let bytes = message::encode(secret, &env);
            let node = &lab.cfg.nodes[usize::from(to)];
            out.push((node.private, bytes.clone()));
            out.push((node.public, bytes));
        }
    }
    out
}

#[test]
fn replayed_heartbeats_of_a_killed_disk_owner_do_not_stop_the_failover() {
    replayed_heartbeats_of_a_killed_owner("disk-scsi2");
}

#[test]
fn replayed_heartbeats_of_a_killed_majority_owner_do_not_stop_the_failover() {
    replayed_heartbeats_of_a_killed_owner("majority");
}

fn replayed_heartbeats_of_a_killed_owner(quorum: &str) {
    let lab = Lab::up(3, quorum, "fast");
    let all = lab.names();
    let bound = lab.takeover_bound();
    lab.wait("the cluster forms", bound, |l| {
        let st: Vec<_> = all.iter().filter_map(|n| l.status(n)).collect();
        st.len() == all.len()
            && st.iter().all(|s| s.member && !s.writes_held)
            && st.iter().any(|s| s.acting_owner)
    });
    let victim = all
        .iter()
        .find(|n| lab.status(n).is_some_and(|s| s.acting_owner))
        .expect("an acting owner")
        .clone();
    let survivors: Vec<String> = all.iter().filter(|n| **n != victim).cloned().collect();
    let victim_id = lab.cfg.node_id(&victim).unwrap();
    let victim_inc = lab.incarnation(&victim);
    let targets: Vec<(NodeId, u64)> = survivors
        .iter()
        .map(|n| (lab.cfg.node_id(n).unwrap(), lab.incarnation(n)))
        .collect();
    let round = replay_round(&lab, victim_id, victim_inc, &targets);

    lab.lab(&["kill", &victim]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("replay socket");
            while !stop.load(Ordering::Relaxed) {
                for (to, bytes) in &round {
                    // A survivor's socket is always there; a send error is
                    // the test's, not the cluster's.
                    sock.send_to(bytes, to).expect("replay send");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(REPLAY_EVERY);
            }
        })
    };
    let took = lab.wait(
        "failover while the dead owner's heartbeats are replayed",
        bound,
        |l| l.failed_over(&survivors, &victim),
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("replay thread");
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{quorum}: failover after kill -9 of the owner {victim} in {took:?} \
         (bound {bound:?}) while {sent} replayed datagrams arrived"
    );
    assert!(sent > 0, "the replay sent nothing");

    // Every survivor refused them, and said so in a few lines: at most one
    // report per ten seconds, not one per datagram.
    for n in &survivors {
        let log = lab.log_of(n);
        let reports = log.lines().filter(|l| l.contains(REFUSED_LINE)).count();
        assert!(reports > 0, "{n} did not report the replays{}", lab.logs());
        let most = took.as_secs() / 10 + 2;
        assert!(
            reports as u64 <= most,
            "{n} reported the replays {reports} times in {took:?}"
        );
        assert!(
            !log.contains("dropped cluster datagram"),
            "{n}: the replays must pass the HMAC (signed with the cluster secret)"
        );
    }
}
