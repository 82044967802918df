//! Unit tests of the node state machine with a scripted disk.

use super::*;

fn cfg(model: &str) -> Arc<ClusterConfig> {
    let mut s = format!(
        "name = \"T\"\nsecret = \"0123456789abcdef\"\n\
         quorum-disk = \"iscsi://127.0.0.1/iqn.x:bus/0\"\nquorum-log-limit = 65536\n\
         [quorum]\nmodel = \"{model}\"\n"
    );
    for i in 0..3 {
        s += &format!(
            "[[node]]\nname = \"N{i}\"\nprivate = \"127.0.0.1:{}\"\npublic = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
            7000 + i,
            7100 + i,
            7200 + i
        );
    }
    Arc::new(ClusterConfig::from_toml(&s).unwrap())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn disk_ops(actions: &[Action]) -> Vec<(u64, DiskOp)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Disk { id, op, .. } => Some((*id, op.clone())),
            _ => None,
        })
        .collect()
}

/// Drives N0 through forming a cluster alone on an answering SCSI-2 disk.
fn formed_owner() -> (Node, Duration) {
    let mut n = Node::new(cfg("disk-scsi2"), "N0", 1, ms(0)).unwrap();
    let mut now = ms(0);
    n.tick(now);
    let asks = n
        .take_actions()
        .iter()
        .filter(|a| matches!(a, Action::Send { env, .. } if env.body == Body::JoinRequest))
        .count();
    assert_eq!(asks, 4, "join request to both peers on both networks");
    let mut region = vec![0u8; log_manager::region_config(65536).region_len as usize];
    while now < ms(3000) {
        now += ms(10);
        n.tick(now);
        for (id, op) in disk_ops(&n.take_actions()) {
            let r = match op {
                DiskOp::Read { offset, len } => {
                    DiskResult::Data(region[offset as usize..offset as usize + len].to_vec())
                }
                DiskOp::Write { offset, data } => {
                    region[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                    DiskResult::Good
                }
                _ => DiskResult::Good,
            };
            n.disk_done(now, id, r);
        }
    }
    (n, now)
}

#[test]
fn a_lone_node_forms_after_the_join_timeout_and_takes_updates() {
    let (mut n, now) = formed_owner();
    assert!(n.is_acting_owner(now));
    assert_eq!(n.view().unwrap().members, vec![0]);
    assert!(!n.writes_held());
    let id = n
        .propose(
            now,
            Change::Put {
                key: "a".into(),
                value: "1".into(),
            },
        )
        .unwrap();
    let acts = n.take_actions();
    let ops = disk_ops(&acts);
    assert!(matches!(&ops[..], [(_, DiskOp::Write { .. })]), "{acts:?}");
    // Not applied before the log write completes.
    assert_eq!(n.db().get("a"), None);
    n.disk_done(now, ops[0].0, DiskResult::Good);
    let acts = n.take_actions();
    assert!(acts.contains(&Action::Committed { id, seq: 1 }));
    assert_eq!(n.db().get("a"), Some("1"));
}

#[test]
fn a_failed_log_write_stops_the_owner() {
    let (mut n, now) = formed_owner();
    n.propose(
        now,
        Change::Put {
            key: "a".into(),
            value: "1".into(),
        },
    );
    let ops = disk_ops(&n.take_actions());
    n.disk_done(now, ops[0].0, DiskResult::Conflict);
    assert!(n.is_stopped());
    assert!(!n.is_acting_owner(now));
}

#[test]
fn an_invalid_change_is_rejected_not_logged() {
    let (mut n, now) = formed_owner();
    let id = n
        .propose(now, Change::Delete { key: "nope".into() })
        .unwrap();
    let acts = n.take_actions();
    assert!(disk_ops(&acts).is_empty());
    assert!(matches!(&acts[..], [Action::Rejected { id: i, .. }] if *i == id));
}

fn env(from: NodeId, to: NodeId, body: Body) -> Envelope {
    Envelope {
        cluster: "T".into(),
        from,
        to,
        incarnation: 1,
        body,
    }
}

#[test]
fn owner_admits_a_joiner_with_the_database_and_evicts_a_member_that_fails_an_update() {
    let (mut n, now) = formed_owner();
    n.step(now, Net::Private, env(1, 0, Body::JoinRequest));
    let acts = n.take_actions();
    let accept = acts.iter().find_map(|a| match a {
        Action::Send { env, .. } => match &env.body {
            Body::JoinAccept { view, .. } => Some(view.clone()),
            _ => None,
        },
        _ => None,
    });
    let view = accept.expect("join accepted");
    assert_eq!(view.members, vec![0, 1]);
    assert_eq!(view.owner, Some(0));
    n.step(
        now,
        Net::Public,
        env(
            1,
            0,
            Body::GumNack {
                seq: 1,
                reason: "diverged".into(),
            },
        ),
    );
    let acts = n.take_actions();
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Send { env, .. } if env.to == 1 && env.body == Body::Evict)));
    assert_eq!(n.view().unwrap().members, vec![0]);
}

#[test]
fn a_non_owner_refuses_joins_and_a_clean_exit_needs_no_regroup() {
    let (mut n, now) = formed_owner();
    n.step(now, Net::Private, env(1, 0, Body::JoinRequest));
    n.take_actions();
    let epoch = n.view().unwrap().epoch;
    n.step(now, Net::Private, env(1, 0, Body::Exit));
    let v = n.view().unwrap();
    assert_eq!(v.members, vec![0]);
    assert_eq!(v.epoch, epoch + 1);
    assert!(n.is_settled_member());
}

#[test]
fn unknown_node_and_majority_are_refused() {
    assert_eq!(
        Node::new(cfg("disk-pr"), "N9", 1, ms(0)).unwrap_err(),
        NodeError::UnknownNode("N9".into())
    );
    let mut c = (*cfg("disk-pr")).clone();
    c.quorum = QuorumModel::Majority { witness: None };
    assert_eq!(
        Node::new(Arc::new(c), "N0", 1, ms(0)).unwrap_err(),
        NodeError::MajorityUnsupported
    );
}

fn sends(acts: &[Action], to: NodeId, pred: impl Fn(&Body) -> bool) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Send { env, .. } if env.to == to && pred(&env.body)))
}

/// A member asks the owner of every view it adopts for the database: the
/// owner's own DbSync can arrive before the view (sim seeds 1040, 4291).
#[test]
fn a_member_asks_the_owner_of_a_new_view_for_the_database() {
    let mut n = Node::new(cfg("disk-scsi2"), "N1", 1, ms(0)).unwrap();
    n.tick(ms(0));
    n.take_actions();
    let view = View {
        epoch: 2,
        members: vec![0, 1],
        owner: Some(0),
        paused: vec![],
    };
    let db = DbSnapshot::default();
    n.step(
        ms(5),
        Net::Private,
        env(0, 1, Body::JoinAccept { view, db }),
    );
    let acts = n.take_actions();
    assert!(sends(&acts, 0, |b| *b == Body::SyncRequest), "{acts:?}");
}

/// Whom a regroup's sender saw joins the regroup (sim seed 3497): the
/// coordinator installs the view to a node it only heard of through others.
#[test]
fn a_regroup_counts_the_nodes_its_senders_saw() {
    let (mut n, now) = formed_owner();
    n.step(now, Net::Private, env(1, 0, Body::JoinRequest));
    n.take_actions();
    let epoch = n.view().unwrap().epoch;
    let regroup = Body::Regroup {
        epoch: epoch + 1,
        seen: vec![1, 2],
        holds_quorum: false,
    };
    n.step(now, Net::Private, env(1, 0, regroup));
    n.take_actions();
    let mut t = now;
    while t < now + ms(3000) && !n.is_settled_member() {
        t += ms(10);
        n.tick(t);
        let acts = n.take_actions();
        if sends(&acts, 2, |b| matches!(b, Body::Install { .. })) {
            assert_eq!(n.view().unwrap().members, vec![0, 1, 2]);
            return;
        }
    }
    panic!("no install to node 2; view {:?}", n.view());
}
