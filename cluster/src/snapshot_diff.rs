//! Cluster database backups and the changes that restore one: a backup is a
//! quorum log backup file (`quorum_log::backup`) whose checkpoint is the
//! database snapshot, and a restore commits the difference between the live
//! database and the backup as ordinary global updates (docs/architecture.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::db::{Change, DbSnapshot, LogEntry};
use crate::host::EVENT_PREFIX;
use crate::quorum_log::{self, LogError, Lsn, Recovered};

/// A backup file that does not hold a usable cluster database.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not an intact quorum log backup.
    #[error(transparent)]
    File(#[from] LogError),
    /// The checkpoint does not decode as a database snapshot.
    #[error("the backup's checkpoint is not a cluster database: {0}")]
    Checkpoint(serde_json::Error),
    /// A record after the checkpoint does not decode as a database update.
    #[error("record {lsn} is not a cluster database update: {error}")]
    Record { lsn: u64, error: serde_json::Error },
    /// A record decodes but does not apply on top of the ones before it.
    #[error("record {lsn} does not apply: {error}")]
    Apply {
        lsn: u64,
        error: crate::db::ApplyError,
    },
}

/// The changes that turn `have` into `want`. The event log is history, not
/// configuration: a restore neither removes nor replays events.
pub fn diff(have: &DbSnapshot, want: &DbSnapshot) -> Vec<Change> {
    let event = |k: &str| k.starts_with(EVENT_PREFIX);
    let mut out: Vec<Change> = have
        .entries
        .keys()
        .filter(|k| !event(k) && !want.entries.contains_key(*k))
        .map(|k| Change::Delete { key: k.clone() })
        .collect();
    for (k, v) in want.entries.iter().filter(|(k, _)| !event(k)) {
        if have.entries.get(k) != Some(v) {
            out.push(Change::Put {
                key: k.clone(),
                value: v.clone(),
            });
        }
    }
    out
}

/// A backup file holding `db` as its checkpoint, in the node's snapshot
/// encoding (JSON), so it also restores as a quorum log region.
pub fn backup_bytes(cluster: &str, db: &DbSnapshot) -> Vec<u8> {
    let snap = serde_json::to_vec(db).expect("a DbSnapshot always serializes");
    quorum_log::backup(
        cluster,
        &Recovered {
            checkpoint: Some((Lsn(db.seq.max(1)), snap)),
            records: Vec::new(),
            cut: None,
        },
    )
}

/// The cluster name and database in a backup file: its checkpoint with
/// every record after it replayed by [`DbSnapshot::replay`]. Unlike a live
/// quorum log, a backup is checksummed as a whole, so a record that stops
/// the replay is an error rather than the end of the log.
pub fn read_backup(bytes: &[u8]) -> Result<(String, DbSnapshot), BackupError> {
    let c = quorum_log::parse_backup(bytes)?;
    let mut db = match &c.checkpoint {
        Some((_, snap)) => {
            serde_json::from_slice::<DbSnapshot>(snap).map_err(BackupError::Checkpoint)?
        }
        None => DbSnapshot::default(),
    };
    db.replay(c.records.iter().map(|(_, r)| r.as_slice()));
    // Find the record replay stopped at, if any, to say why.
    for (lsn, r) in &c.records {
        let e: LogEntry =
            serde_json::from_slice(r).map_err(|error| BackupError::Record { lsn: lsn.0, error })?;
        if e.seq > db.seq {
            let error = db
                .clone()
                .apply(e.seq, &e.change)
                .expect_err("replay stops only at a change that does not apply");
            return Err(BackupError::Apply { lsn: lsn.0, error });
        }
    }
    Ok((c.cluster_id, db))
}

/// A backup file that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    /// The file could not be created (it may exist already: backups never
    /// overwrite).
    #[error("cannot create {}: {error}", path.display())]
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing or syncing the new file failed.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file was read but is not a usable backup.
    #[error("{}: {error}", path.display())]
    Invalid { path: PathBuf, error: BackupError },
}

/// Writes the backup of `db` ([`backup_bytes`]) to a new file at `path`
/// and syncs it; an existing file is never overwritten.
pub fn write_backup(path: &Path, cluster: &str, db: &DbSnapshot) -> Result<(), BackupFileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| BackupFileError::Create {
            path: path.into(),
            error,
        })?;
    f.write_all(&backup_bytes(cluster, db))
        .and_then(|()| f.sync_all())
        .map_err(|error| BackupFileError::Write {
            path: path.into(),
            error,
        })
}

/// The cluster name and database in the backup file at `path`
/// ([`read_backup`]).
pub fn read_backup_file(path: &Path) -> Result<(String, DbSnapshot), BackupFileError> {
    let bytes = std::fs::read(path).map_err(|error| BackupFileError::Read {
        path: path.into(),
        error,
    })?;
    read_backup(&bytes).map_err(|error| BackupFileError::Invalid {
        path: path.into(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(seq: u64, kv: &[(&str, &str)]) -> DbSnapshot {
        DbSnapshot {
            seq,
            entries: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn backup_round_trips() {
        let d = db(7, &[("a", "1"), ("group/G/owner", "N2")]);
        let (c, back) = read_backup(&backup_bytes("CL", &d)).unwrap();
        assert_eq!(c, "CL");
        assert_eq!(back, d);
        let mut bad = backup_bytes("CL", &d);
        bad[50] ^= 1;
        assert!(read_backup(&bad).is_err());
    }

    #[test]
    fn records_after_the_checkpoint_replay_and_bad_ones_are_errors() {
        let d = db(1, &[("a", "1")]);
        let entry = |seq: u64, change: Change| {
            serde_json::to_vec(&LogEntry {
                seq,
                change,
                epoch: 0,
            })
            .unwrap()
        };
        let with = |records: Vec<Vec<u8>>| {
            quorum_log::backup(
                "CL",
                &Recovered {
                    checkpoint: Some((Lsn(1), serde_json::to_vec(&d).unwrap())),
                    records: records
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| (Lsn(2 + i as u64), r))
                        .collect(),
                    cut: None,
                },
            )
        };
        let put = Change::Put {
            key: "b".into(),
            value: "2".into(),
        };
        let (_, back) = read_backup(&with(vec![entry(2, put.clone())])).unwrap();
        assert_eq!(back.get("b"), Some("2"));
        assert_eq!(back.seq, 2);
        let gone = Change::Delete { key: "zz".into() };
        assert!(matches!(
            read_backup(&with(vec![entry(2, put), entry(3, gone)])),
            Err(BackupError::Apply { lsn: 3, .. })
        ));
        assert!(matches!(
            read_backup(&with(vec![b"not json".to_vec()])),
            Err(BackupError::Record { lsn: 2, .. })
        ));
    }

    #[test]
    fn diff_turns_have_into_want() {
        let have = db(3, &[("a", "1"), ("b", "2"), ("c", "3")]);
        let want = db(9, &[("a", "1"), ("b", "20"), ("d", "4")]);
        let changes = diff(&have, &want);
        let mut x = have.clone();
        for (i, c) in changes.iter().enumerate() {
            x.apply(have.seq + 1 + i as u64, c).unwrap();
        }
        assert_eq!(x.entries, want.entries);
        assert_eq!(changes.len(), 3);
    }

    #[test]
    fn diff_leaves_events_alone() {
        let have = db(3, &[("event/1", "x")]);
        let want = db(3, &[("event/2", "y")]);
        assert!(diff(&have, &want).is_empty());
    }

    #[test]
    fn backup_files_round_trip_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.bak");
        let mut db = DbSnapshot {
            seq: 3,
            ..DbSnapshot::default()
        };
        db.entries.insert("group/EVS1/owner".into(), "NODE1".into());
        write_backup(&p, "LAB", &db).unwrap();
        let (cluster, back) = read_backup_file(&p).unwrap();
        assert_eq!(
            (cluster.as_str(), back.entries),
            ("LAB", db.entries.clone())
        );
        let again = write_backup(&p, "LAB", &db).unwrap_err();
        assert!(matches!(again, BackupFileError::Create { .. }), "{again}");
        std::fs::write(&p, b"not a backup").unwrap();
        let bad = read_backup_file(&p).unwrap_err();
        assert!(
            bad.to_string().starts_with(&p.display().to_string()),
            "{bad}"
        );
        let missing = read_backup_file(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
    }
}
