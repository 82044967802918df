//! Cluster messages and their authenticated wire form.
//!
//! ```text
//! bytes 0-3     MAGIC "BRC2"
//! bytes 4-n     JSON of the Envelope: cluster, from, to, incarnation,
//!               to_incarnation, seq, body
//! bytes n+1..   HMAC-SHA256(secret, bytes 0-n), 32 bytes
//! ```
//!
//! The tag covers the magic and the whole body, so any changed byte is
//! refused. Authentication alone does not make a message fresh: a
//! captured datagram authenticates as well the hundredth time. So the
//! envelope carries, under the tag, the sender's incarnation, the
//! receiver's incarnation as the sender last heard it, and a sequence
//! number per receiver, which the node checks after the tag (`node::replay`,
//! docs/semantics.md "Replayed messages"). `BRC1`, the format without
//! them, is refused as not a cluster datagram. The driver calls [`decode`] on every datagram and logs and drops
//! whatever fails; the state machines only ever see authenticated
//! [`Envelope`]s. Datagrams are small: the largest is a join reply or a
//! database sync carrying the cluster database.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::NodeId;
use crate::db::{Change, DbSnapshot, Replica};

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every cluster datagram.
pub const MAGIC: &[u8; 4] = b"BRC2";
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;

/// Which cluster network a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    Private,
    Public,
}

impl Net {
    pub const ALL: [Net; 2] = [Net::Private, Net::Public];

    pub fn index(self) -> usize {
        match self {
            Net::Private => 0,
            Net::Public => 1,
        }
    }
}

/// A membership view: who is in the cluster at this epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub epoch: u64,
    pub members: Vec<NodeId>,
    /// The quorum owner, which is also the Global Update locker.
    pub owner: Option<NodeId>,
    /// Members paused by the administrator (they stay members).
    #[serde(default)]
    pub paused: Vec<NodeId>,
}

impl View {
    pub fn contains(&self, n: NodeId) -> bool {
        self.members.contains(&n)
    }
}

/// Why a node refuses a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinRefusal {
    /// The node asked is not the quorum owner; ask this one.
    NotOwner { owner: Option<NodeId> },
    /// The cluster is regrouping; try again.
    Busy,
    /// The node was evicted and must be restarted by an administrator.
    Evicted,
}

/// What a cluster message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Node Manager heartbeat, sent on every network.
    Heartbeat {
        seq: u64,
        /// The sender's view epoch and members (None while not a member),
        /// so diverging views are noticed and regrouped.
        view: Option<(u64, Vec<NodeId>)>,
        /// The sender's database sequence number. A member that is still
        /// behind its owner's number of the previous heartbeat lost an
        /// update on every network and asks for the database again.
        #[serde(default)]
        db_seq: u64,
    },
    /// Regroup, phase 1 (activate): the sender takes part in regroup
    /// `epoch`, has heard these participants so far, and says whether it
    /// holds the quorum disk.
    Regroup {
        epoch: u64,
        seen: Vec<NodeId>,
        holds_quorum: bool,
        /// Majority model: the sender's replica of the cluster database,
        /// so the coordinator can adopt the most up-to-date one.
        #[serde(default)]
        replica: Option<Replica>,
    },
    /// Regroup, phase 2 (install): the coordinator's agreed view.
    Install {
        view: View,
        /// Majority model: the regroup this view ends and the replica the
        /// coordinator adopted; only members still in that regroup take
        /// the view, and replace their replica with it (dropping any
        /// uncommitted suffix).
        #[serde(default)]
        replica: Option<(u64, Replica)>,
    },
    /// A starting node asks to join.
    JoinRequest,
    /// The owner admits the joiner: its view and the cluster database.
    JoinAccept { view: View, db: DbSnapshot },
    /// The node asked will not sponsor the join.
    JoinRefuse { reason: JoinRefusal },
    /// A clean stop: the sender leaves; no regroup is needed.
    Exit,
    /// Global update: a member asks the locker to apply a change.
    GumRequest { id: u64, change: Change },
    /// Global update: apply change `seq` (the locker already logged it);
    /// `origin` is the proposer and its request id.
    GumApply {
        seq: u64,
        change: Change,
        origin: Option<(NodeId, u64)>,
    },
    /// Global update: the member could not apply `seq` (sent only on
    /// failure; the locker evicts it).
    GumNack { seq: u64, reason: String },
    /// Global update: the locker refused a request (invalid change).
    GumReject { id: u64, reason: String },
    /// The locker's whole database, after a regroup or on a gap.
    DbSync { db: DbSnapshot },
    /// A member that missed updates asks for a sync.
    SyncRequest,
    /// The receiver is evicted: stop the cluster service.
    Evict,
    /// Majority model: a member answers its owner's heartbeat `seq` of
    /// view `epoch`, renewing the owner's lease with its vote.
    LeaseAck { epoch: u64, seq: u64 },
    /// Majority model: the owner's change `seq`, written in view `epoch`,
    /// to append after the replica tagged `prev` (epoch of the last
    /// change, seq).
    Replicate {
        epoch: u64,
        prev: (u64, u64),
        seq: u64,
        change: Change,
        origin: Option<(NodeId, u64)>,
    },
    /// Majority model: change `seq` of view `epoch` is in the member's
    /// local log (written with FUA).
    ReplicateAck { epoch: u64, seq: u64 },
    /// Majority model: the owner committed the sender's request `id` as
    /// `seq`.
    GumCommitted { id: u64, seq: u64 },
    /// Majority model: the owner's replica; a member of view `epoch`
    /// replaces its own with it.
    ReplicaSync { epoch: u64, replica: Replica },
    /// A member asks its owner for a read index before answering a
    /// client's read from its copy (the read barrier, Raft's ReadIndex,
    /// docs/semantics.md "Reading the database").
    ReadIndex { id: u64 },
    /// The owner's answer to `ReadIndex` `id`: its database sequence
    /// number while it acts as owner and the asker is a member of its
    /// view, `None` otherwise.
    ReadIndexReply { id: u64, seq: Option<u64> },
}

/// An authenticated cluster message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Cluster name; a message for another cluster is refused.
    pub cluster: String,
    pub from: NodeId,
    pub to: NodeId,
    /// Changes every time the sender's cluster service starts.
    pub incarnation: u64,
    /// The receiver's incarnation as the sender last heard it; 0 before
    /// the sender heard from it. A receiver refuses an envelope addressed
    /// to an earlier life of its own.
    pub to_incarnation: u64,
    /// Counts from 1 per receiver within the sender's incarnation, one
    /// number per datagram (a message sent on both networks is two); the
    /// receiver accepts each number once.
    pub seq: u64,
    pub body: Body,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than magic plus tag.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// Does not start with the cluster magic.
    #[error("not a busrig cluster datagram")]
    BadMagic,
    /// The HMAC does not match: wrong secret or tampered.
    #[error("authentication failed")]
    BadTag,
    /// Authenticated but not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Authenticated, but for another cluster.
    #[error("message for cluster {0:?}")]
    WrongCluster(String),
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Serializes and signs an envelope.
pub fn encode(secret: &[u8], env: &Envelope) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(env).expect("envelopes always serialize"));
    let mut m = mac(secret);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Verifies and parses a datagram for `cluster`.
pub fn decode(secret: &[u8], cluster: &str, bytes: &[u8]) -> Result<Envelope, WireError> {
    if bytes.len() < MAGIC.len() + TAG_LEN {
        return Err(WireError::TooShort(bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let mut m = mac(secret);
    m.update(signed);
    m.verify_slice(tag).map_err(|_| WireError::BadTag)?;
    let env: Envelope =
        serde_json::from_slice(&signed[4..]).map_err(|e| WireError::Malformed(e.to_string()))?;
    if env.cluster != cluster {
        return Err(WireError::WrongCluster(env.cluster));
    }
    Ok(env)
}

/// A short name of the message kind, for logs.
pub fn kind(body: &Body) -> &'static str {
    match body {
        Body::Heartbeat { .. } => "heartbeat",
        Body::Regroup { .. } => "regroup",
        Body::Install { .. } => "install",
        Body::JoinRequest => "join-request",
        Body::JoinAccept { .. } => "join-accept",
        Body::JoinRefuse { .. } => "join-refuse",
        Body::Exit => "exit",
        Body::GumRequest { .. } => "gum-request",
        Body::GumApply { .. } => "gum-apply",
        Body::GumNack { .. } => "gum-nack",
        Body::GumReject { .. } => "gum-reject",
        Body::DbSync { .. } => "db-sync",
        Body::SyncRequest => "sync-request",
        Body::Evict => "evict",
        Body::LeaseAck { .. } => "lease-ack",
        Body::Replicate { .. } => "replicate",
        Body::ReplicateAck { .. } => "replicate-ack",
        Body::GumCommitted { .. } => "gum-committed",
        Body::ReplicaSync { .. } => "replica-sync",
        Body::ReadIndex { .. } => "read-index",
        Body::ReadIndexReply { .. } => "read-index-reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    fn samples() -> Vec<Envelope> {
        let db = DbSnapshot {
            seq: 3,
            entries: [("a".to_string(), "1".to_string())].into_iter().collect(),
        };
        let view = View {
            epoch: 4,
            members: vec![0, 2],
            owner: Some(0),
            paused: vec![],
        };
        [
            Body::Heartbeat {
                seq: 9,
                view: Some((4, vec![0, 2])),
                db_seq: 12,
            },
            Body::Regroup {
                epoch: 5,
                seen: vec![0, 1],
                holds_quorum: true,
                replica: Some(Replica {
                    tag: 2,
                    db: db.clone(),
                    max_epoch: 4,
                }),
            },
            Body::Install {
                view: view.clone(),
                replica: Some((
                    5,
                    Replica {
                        tag: 4,
                        db: db.clone(),
                        max_epoch: 4,
                    },
                )),
            },
            Body::JoinRequest,
            Body::JoinAccept {
                view,
                db: db.clone(),
            },
            Body::JoinRefuse {
                reason: JoinRefusal::NotOwner { owner: Some(1) },
            },
            Body::Exit,
            Body::GumRequest {
                id: 1,
                change: Change::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
            },
            Body::GumApply {
                seq: 4,
                change: Change::Delete { key: "k".into() },
                origin: Some((1, 9)),
            },
            Body::GumNack {
                seq: 4,
                reason: "no such key".into(),
            },
            Body::GumReject {
                id: 1,
                reason: "no".into(),
            },
            Body::DbSync { db: db.clone() },
            Body::SyncRequest,
            Body::Evict,
            Body::LeaseAck { epoch: 4, seq: 9 },
            Body::Replicate {
                epoch: 4,
                prev: (3, 3),
                seq: 4,
                change: Change::Delete { key: "k".into() },
                origin: None,
            },
            Body::ReplicateAck { epoch: 4, seq: 4 },
            Body::GumCommitted { id: 1, seq: 4 },
            Body::ReadIndex { id: 7 },
            Body::ReadIndexReply {
                id: 7,
                seq: Some(12),
            },
            Body::ReadIndexReply { id: 8, seq: None },
            Body::ReplicaSync {
                epoch: 4,
                replica: Replica {
                    tag: 4,
                    db: db.clone(),
                    max_epoch: 4,
                },
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, body)| Envelope {
            cluster: "EXCH".into(),
            from: 1,
            to: 0,
            incarnation: 77,
            to_incarnation: 41,
            seq: i as u64 + 1,
            body,
        })
        .collect()
    }

    #[test]
    fn round_trip_every_body() {
        for env in samples() {
            let wire = encode(SECRET, &env);
            assert_eq!(
                decode(SECRET, "EXCH", &wire).unwrap(),
                env,
                "{}",
                kind(&env.body)
            );
        }
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let env = &samples()[1];
        let wire = encode(SECRET, env);
        for i in 0..wire.len() {
            let mut t = wire.clone();
            t[i] ^= 0x01;
            let e = decode(SECRET, "EXCH", &t).unwrap_err();
            assert!(
                matches!(e, WireError::BadTag | WireError::BadMagic),
                "byte {i}: {e}"
            );
        }
    }

    #[test]
    fn wrong_secret_short_and_foreign_are_refused() {
        let env = &samples()[0];
        let wire = encode(SECRET, env);
        assert_eq!(
            decode(b"another secret!!", "EXCH", &wire),
            Err(WireError::BadTag)
        );
        assert_eq!(
            decode(SECRET, "EXCH", &wire[..10]),
            Err(WireError::TooShort(10))
        );
        assert_eq!(
            decode(SECRET, "OTHER", &wire),
            Err(WireError::WrongCluster("EXCH".into()))
        );
        // Authentic but not JSON of an envelope: Malformed, not a panic.
        let mut junk = MAGIC.to_vec();
        junk.extend_from_slice(b"{\"nope\":1}");
        let mut m = mac(SECRET);
        m.update(&junk);
        junk.extend_from_slice(&m.finalize().into_bytes());
        assert!(matches!(
            decode(SECRET, "EXCH", &junk),
            Err(WireError::Malformed(_))
        ));
        // Truncating the tag breaks authentication.
        let mut cut = wire.clone();
        cut.truncate(wire.len() - 1);
        assert_eq!(decode(SECRET, "EXCH", &cut), Err(WireError::BadTag));
    }
}
