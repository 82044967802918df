//! The cluster database (Database Manager): an ordered key/value document,
//! changed only through numbered global updates.
//!
//! Keys are paths such as `node/NODE1/state` or `group/EXCH-VS1/owner`; the
//! next issue gives groups and resources their own shape on top. Every
//! change carries the sequence number the locker gave it, so every node
//! applies the same changes in the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One change to the cluster database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Remove `key`; fails if it does not exist.
    Delete { key: String },
    /// Set `key` to `value` if it holds `expect` now (`None`: if it does
    /// not exist). Checked by the locker when it orders the change, so the
    /// comparison happens at the change's place in the global update order
    /// (docs/semantics.md, "Global updates").
    CompareAndSet {
        key: String,
        expect: Option<String>,
        value: String,
    },
}

/// A change that cannot be applied to this database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Delete of a key that is not there: this copy has diverged.
    #[error("key {0:?} does not exist")]
    NoSuchKey(String),
    /// A compare-and-set whose key did not hold the expected value.
    #[error("compare-and-set failed: key {key:?} holds {found:?}, not {expect:?}")]
    Mismatch {
        key: String,
        expect: Option<String>,
        found: Option<String>,
    },
    /// The update is not the next in sequence.
    #[error("update {got} is not the next one after {have}")]
    OutOfOrder { have: u64, got: u64 },
}

/// The whole database with the sequence number of its last update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSnapshot {
    pub seq: u64,
    pub entries: BTreeMap<String, String>,
}

impl DbSnapshot {
    /// Checks that `change` could be applied now, without applying it.
    pub fn check(&self, change: &Change) -> Result<(), ApplyError> {
        match change {
            Change::Put { .. } => Ok(()),
            Change::Delete { key } if !self.entries.contains_key(key) => {
                Err(ApplyError::NoSuchKey(key.clone()))
            }
            Change::Delete { .. } => Ok(()),
            Change::CompareAndSet { key, expect, .. } => {
                let found = self.entries.get(key);
                if found == expect.as_ref() {
                    Ok(())
                } else {
                    Err(ApplyError::Mismatch {
                        key: key.clone(),
                        expect: expect.clone(),
                        found: found.cloned(),
                    })
                }
            }
        }
    }

    /// Applies update `seq`, which must be the next one.
    pub fn apply(&mut self, seq: u64, change: &Change) -> Result<(), ApplyError> {
        if seq != self.seq + 1 {
            return Err(ApplyError::OutOfOrder {
                have: self.seq,
                got: seq,
            });
        }
        self.check(change)?;
        match change {
            Change::Put { key, value } | Change::CompareAndSet { key, value, .. } => {
                self.entries.insert(key.clone(), value.clone());
            }
            Change::Delete { key } => {
                self.entries.remove(key);
            }
        }
        self.seq = seq;
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }
}

impl DbSnapshot {
    /// Replays quorum log record payloads (JSON [`LogEntry`]s) after the
    /// snapshot: entries already applied are skipped, and replay stops at
    /// the first record that does not decode or apply (the log is cut
    /// there). Returns the epoch of the last entry applied, if any.
    pub fn replay<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> Option<u64> {
        let mut last = None;
        for r in records {
            let Ok(entry) = serde_json::from_slice::<LogEntry>(r) else {
                break;
            };
            if entry.seq <= self.seq {
                continue;
            }
            if self.apply(entry.seq, &entry.change).is_err() {
                break;
            }
            last = Some(entry.epoch);
        }
        last
    }
}

/// A quorum log record: one numbered change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub change: Change,
    /// Majority model: the view epoch in which the owner wrote the change
    /// (0 for the disk models, which have one log on the shared disk).
    #[serde(default)]
    pub epoch: u64,
}

/// Majority model: one node's replica of the cluster database, tagged with
/// the view epoch in which its last change was written. Replicas compare
/// by `(tag, db.seq)`, as Raft compares (last term, last index): an
/// installed epoch has one writer, so equal tags and sequence numbers mean
/// equal contents, and the greatest replica of any majority holds every
/// committed change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub tag: u64,
    pub db: DbSnapshot,
    /// The highest view epoch its node has on its disk: a coordinator
    /// installs above every participant's, so epochs grow across restarts
    /// as Raft's persisted current term does.
    #[serde(default)]
    pub max_epoch: u64,
}

impl Replica {
    /// The order in which replicas are compared.
    pub fn position(&self) -> (u64, u64) {
        (self.tag, self.db.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_set_applies_only_on_the_expected_value() {
        let cas = |e: Option<&str>, v: &str| Change::CompareAndSet {
            key: "r".into(),
            expect: e.map(String::from),
            value: v.into(),
        };
        let mut db = DbSnapshot::default();
        assert!(matches!(
            db.check(&cas(Some("1"), "2")),
            Err(ApplyError::Mismatch { found: None, .. })
        ));
        db.apply(1, &cas(None, "1")).unwrap();
        assert_eq!(db.get("r"), Some("1"));
        let e = db.apply(2, &cas(None, "x")).unwrap_err();
        assert!(e.to_string().starts_with("compare-and-set failed"), "{e}");
        assert_eq!((db.seq, db.get("r")), (1, Some("1")));
        db.apply(2, &cas(Some("1"), "2")).unwrap();
        assert_eq!(db.get("r"), Some("2"));
    }

    fn put(k: &str, v: &str) -> Change {
        Change::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn applies_in_order_only() {
        let mut db = DbSnapshot::default();
        db.apply(1, &put("a", "1")).unwrap();
        assert_eq!(
            db.apply(3, &put("b", "2")),
            Err(ApplyError::OutOfOrder { have: 1, got: 3 })
        );
        db.apply(2, &Change::Delete { key: "a".into() }).unwrap();
        assert_eq!(db.get("a"), None);
        assert_eq!(
            db.apply(3, &Change::Delete { key: "a".into() }),
            Err(ApplyError::NoSuchKey("a".into()))
        );
        assert_eq!(db.seq, 2);
    }
}
