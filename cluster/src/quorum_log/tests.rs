//! Behaviour of the quorum log over an in-memory disk: recovery after
//! crashes and torn writes at every point, corruption, limits, backup and
//! restore.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// A small region so that proptests reach the log limit, wrap between log
/// areas and checkpoint often: 5-block log areas, 122-block slots.
fn small_cfg() -> LogConfig {
    LogConfig {
        region_offset: 2 * 4096,
        region_len: 256 * 4096,
        log_limit: 16 * 1024,
    }
}

/// Room for a few dozen records per log area.
fn roomy_cfg() -> LogConfig {
    LogConfig {
        region_offset: 3 * 4096,
        region_len: 256 * 4096,
        log_limit: 64 * 1024,
    }
}

/// How the write in progress at a crash reaches the disk.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// Not at all.
    Drop,
    /// Only its first `n % (len + 1)` bytes.
    Prefix(u32),
    /// A random subset of its 512-byte sectors (a disk that reorders).
    Sectors(u64),
}

/// A LUN in memory that checks every write is 4 KiB aligned and inside the
/// region.
struct Disk {
    cfg: LogConfig,
    bytes: Vec<u8>,
}

impl Disk {
    /// A disk full of non-zero garbage, as a reused LUN would be.
    fn new(cfg: LogConfig) -> Self {
        let len = (cfg.region_offset + cfg.region_len + 4096) as usize;
        // 251 is prime, so the pattern does not repeat on block boundaries.
        // Runs of 509 bytes (a prime, so not block-aligned), each a
        // different non-zero value; cheap to build in a debug test binary.
        let mut bytes = vec![0u8; len];
        for (i, run) in bytes.chunks_mut(509).enumerate() {
            run.fill((i * 37 % 255) as u8 + 1);
        }
        Disk { cfg, bytes }
    }

    fn formatted(cfg: LogConfig, cluster: &str) -> Self {
        let mut d = Disk::new(cfg);
        d.apply_all(&QuorumLog::format(&cfg, cluster).unwrap());
        d
    }

    fn check(&self, w: &BlockWrite) {
        assert_eq!(w.offset % 4096, 0, "{w:?}");
        assert_eq!(w.data.len() % 4096, 0, "{w:?}");
        assert!(w.offset >= self.cfg.region_offset, "{w:?}");
        assert!(
            w.offset + w.data.len() as u64 <= self.cfg.region_offset + self.cfg.region_len,
            "{w:?}"
        );
    }

    fn apply(&mut self, w: &BlockWrite) {
        self.check(w);
        let at = w.offset as usize;
        self.bytes[at..at + w.data.len()].copy_from_slice(&w.data);
    }

    fn apply_all(&mut self, ws: &[BlockWrite]) {
        ws.iter().for_each(|w| self.apply(w));
    }

    fn apply_torn(&mut self, w: &BlockWrite, tear: Tear) {
        self.check(w);
        let at = w.offset as usize;
        match tear {
            Tear::Drop => {}
            Tear::Prefix(n) => {
                let n = n as usize % (w.data.len() + 1);
                self.bytes[at..at + n].copy_from_slice(&w.data[..n]);
            }
            Tear::Sectors(seed) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for (i, sector) in w.data.chunks(512).enumerate() {
                    if rng.gen_bool(0.5) {
                        let s = at + i * 512;
                        self.bytes[s..s + 512].copy_from_slice(sector);
                    }
                }
            }
        }
    }

    fn open_cfg(&self, cfg: &LogConfig) -> Result<(QuorumLog, Recovered), LogError> {
        let bytes = &self.bytes;
        QuorumLog::open(cfg, &mut |offset, len| {
            let at = offset as usize;
            Ok(bytes[at..at + len].to_vec())
        })
    }

    fn open(&self) -> (QuorumLog, Recovered) {
        self.open_cfg(&self.cfg).expect("open")
    }
}

/// The test's "cluster database": the list of changes, serialized as a
/// count and length-prefixed payloads.
fn encode_db(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut b = (changes.len() as u32).to_le_bytes().to_vec();
    for c in changes {
        b.extend_from_slice(&(c.len() as u32).to_le_bytes());
        b.extend_from_slice(c);
    }
    b
}

fn decode_db(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut take = |n: usize| {
        let (h, t) = b.split_at(n);
        b = t;
        h
    };
    let count = u32::from_le_bytes(take(4).try_into().unwrap());
    (0..count)
        .map(|_| {
            let len = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
            take(len).to_vec()
        })
        .collect()
}

/// The database a recovered log describes, checking that the snapshot
/// holds exactly `checkpoint LSN` changes and the records follow it.
fn database(rec: &Recovered) -> Vec<Vec<u8>> {
    let (lsn, mut db) = match &rec.checkpoint {
        Some((lsn, snap)) => (*lsn, decode_db(snap)),
        None => (Lsn::ZERO, Vec::new()),
    };
    assert_eq!(db.len() as u64, lsn.0, "snapshot size vs checkpoint LSN");
    for (i, (rlsn, payload)) in rec.records.iter().enumerate() {
        assert_eq!(
            rlsn.0,
            lsn.0 + 1 + i as u64,
            "record LSNs follow the checkpoint"
        );
        db.push(payload.clone());
    }
    db
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    /// Checkpoint at `checkpoint + (last - checkpoint) * f / 255`.
    Checkpoint(u8),
}

/// One run of the owner between (re)opens, with an optional crash.
struct Owner<'a> {
    disk: &'a mut Disk,
    log: QuorumLog,
    /// Changes acknowledged so far; change i has LSN i + 1.
    acked: Vec<Vec<u8>>,
    /// Writes still allowed before the crash.
    crash_in: Option<usize>,
    tear: Tear,
}

impl Owner<'_> {
    /// Performs `ws` in order; false when the crash struck.
    fn perform(&mut self, ws: Vec<BlockWrite>) -> bool {
        for w in ws {
            match self.crash_in {
                Some(0) => {
                    self.disk.apply_torn(&w, self.tear);
                    return false;
                }
                Some(ref mut n) => *n -= 1,
                None => {}
            }
            self.disk.apply(&w);
        }
        true
    }

    fn checkpoint(&mut self, frac: u8) -> bool {
        let pos = self.log.position();
        let (chk, last) = (pos.checkpoint_lsn.0, pos.lsn.0);
        let upto = chk + (last - chk) * frac as u64 / 255;
        let snap = encode_db(&self.acked[..upto as usize]);
        let ws = self.log.checkpoint(&snap, Lsn(upto)).expect("checkpoint");
        self.perform(ws)
    }

    /// Runs `ops`; on a crash returns `Err(payload being appended)`.
    fn run(&mut self, ops: &[Op]) -> Result<(), Option<Vec<u8>>> {
        for op in ops {
            match op {
                Op::Append(p) => {
                    if self.log.needs_checkpoint() && !self.checkpoint(255) {
                        return Err(None);
                    }
                    let (lsn, ws) = match self.log.append(p) {
                        Ok(x) => x,
                        Err(LogError::LogFull { .. }) => {
                            if !self.checkpoint(255) {
                                return Err(None);
                            }
                            self.log.append(p).expect("append after checkpoint")
                        }
                        Err(e) => panic!("append: {e}"),
                    };
                    assert_eq!(lsn.0, self.acked.len() as u64 + 1);
                    if !self.perform(ws) {
                        return Err(Some(p.clone()));
                    }
                    self.acked.push(p.clone());
                }
                Op::Checkpoint(f) => {
                    if !self.checkpoint(*f) {
                        return Err(None);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Opens the disk and checks it holds `acked`, or `acked` plus the change
/// that was in flight when the crash struck. Returns the recovered
/// database.
fn recover(disk: &Disk, acked: &[Vec<u8>], in_flight: Option<&Vec<u8>>) -> Vec<Vec<u8>> {
    let (log, rec) = disk.open();
    let db = database(&rec);
    let with_flight = in_flight.map(|p| {
        let mut v = acked.to_vec();
        v.push(p.clone());
        v
    });
    assert!(
        db == acked || Some(&db) == with_flight.as_ref(),
        "recovered {} changes, acknowledged {} (in flight: {}), cut {:?}",
        db.len(),
        acked.len(),
        in_flight.is_some(),
        rec.cut
    );
    assert_eq!(log.position().lsn.0, db.len() as u64);
    db
}

fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => proptest::collection::vec(any::<u8>(), 0..5000),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => arb_payload().prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::Checkpoint),
    ]
}

fn arb_tear() -> impl Strategy<Value = Tear> {
    prop_oneof![
        Just(Tear::Drop),
        any::<u32>().prop_map(Tear::Prefix),
        any::<u64>().prop_map(Tear::Sectors),
    ]
}

/// A round: operations, then maybe a crash at write `crash` (counted from
/// the round's first write) with `tear` applied to that write.
fn arb_round() -> impl Strategy<Value = (Vec<Op>, Option<usize>, Tear)> {
    (
        proptest::collection::vec(arb_op(), 0..30),
        proptest::option::weighted(0.85, 0usize..60),
        arb_tear(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random appends and checkpoints, crashing at a random write (the
    /// rest dropped, the write itself torn or not), over several rounds of
    /// crash and recovery: each recovery yields exactly the acknowledged
    /// changes (plus, at most, the one in flight), and the log keeps
    /// working afterwards.
    #[test]
    fn crash_anywhere_recovers_the_acknowledged_prefix(
        rounds in proptest::collection::vec(arb_round(), 1..4),
        after in arb_payload(),
    ) {
        let cfg = small_cfg();
        let mut disk = Disk::formatted(cfg, "PROPCLUSTER");
        let mut acked: Vec<Vec<u8>> = Vec::new();
        for (ops, crash, tear) in &rounds {
            let (log, rec) = disk.open();
            prop_assert_eq!(&database(&rec), &acked);
            let mut owner = Owner { disk: &mut disk, log, acked: acked.clone(), crash_in: *crash, tear: *tear };
            let outcome = owner.run(ops);
            let owner_acked = std::mem::take(&mut owner.acked);
            let in_flight = match &outcome {
                Ok(()) => None,
                Err(p) => p.clone(),
            };
            acked = recover(&disk, &owner_acked, in_flight.as_ref());
            // A clean round that appended has overwritten or abandoned
            // whatever an earlier crash left torn. (A round of checkpoints
            // alone leaves a torn record past the end in place; recovery
            // reports it as the cut and the database is still exact.)
            if outcome.is_ok() && ops.iter().any(|o| matches!(o, Op::Append(_))) {
                let (_, rec) = disk.open();
                prop_assert_eq!(rec.cut, None);
            }
        }
        // Appending after the last recovery works and survives a reopen.
        let (mut log, _) = disk.open();
        let (lsn, ws) = match log.append(&after) {
            Ok(x) => x,
            Err(LogError::LogFull { .. }) => {
                let ws = log.checkpoint(&encode_db(&acked), Lsn(acked.len() as u64)).unwrap();
                disk.apply_all(&ws);
                log.append(&after).unwrap()
            }
            Err(e) => panic!("{e}"),
        };
        prop_assert_eq!(lsn.0, acked.len() as u64 + 1);
        disk.apply_all(&ws);
        acked.push(after);
        let (_, rec) = disk.open();
        prop_assert_eq!(database(&rec), acked);
        prop_assert_eq!(rec.cut, None);
    }

    /// Flipping any byte of a record's header or payload cuts the log at
    /// that record; the next append replaces it and nothing after the cut
    /// ever comes back.
    #[test]
    fn corrupt_record_is_cut_there(
        payloads in proptest::collection::vec(arb_payload(), 1..10),
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        replacement in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let cfg = roomy_cfg();
        let mut disk = Disk::formatted(cfg, "C");
        let (mut log, _) = disk.open();
        let mut offsets = Vec::new();
        for p in &payloads {
            let (_, ws) = log.append(p).unwrap();
            offsets.push(ws.last().unwrap().offset);
            disk.apply_all(&ws);
        }
        let k = which.index(payloads.len());
        let at = offsets[k] + byte.index(RECORD_HEADER_LEN + payloads[k].len()) as u64;
        disk.bytes[at as usize] ^= mask;

        let (mut log, rec) = disk.open();
        prop_assert_eq!(&database(&rec), &payloads[..k].to_vec());
        let cut = rec.cut.expect("a cut");
        prop_assert_eq!(cut.lsn(), Lsn(k as u64 + 1));
        prop_assert_eq!(cut.offset(), offsets[k]);

        let (lsn, ws) = log.append(&replacement).unwrap();
        prop_assert_eq!(lsn, Lsn(k as u64 + 1));
        prop_assert_eq!(ws.last().unwrap().offset, offsets[k]);
        disk.apply_all(&ws);
        let (_, rec) = disk.open();
        let mut expect = payloads[..k].to_vec();
        expect.push(replacement);
        prop_assert_eq!(database(&rec), expect);
        prop_assert_eq!(rec.cut, None);
    }

    /// Random damage anywhere in the region never panics `open`.
    #[test]
    fn random_damage_never_panics(
        payloads in proptest::collection::vec(arb_payload(), 0..12),
        checkpoint_after in any::<prop::sample::Index>(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
    ) {
        let cfg = small_cfg();
        let mut disk = Disk::formatted(cfg, "C");
        let (mut log, _) = disk.open();
        let cp = checkpoint_after.index(payloads.len() + 1);
        let mut acked: Vec<Vec<u8>> = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            if i == cp || log.needs_checkpoint() {
                let upto = log.position().lsn;
                disk.apply_all(&log.checkpoint(&encode_db(&acked), upto).unwrap());
            }
            let (_, ws) = match log.append(p) {
                Ok(x) => x,
                Err(_) => {
                    let upto = log.position().lsn;
                    disk.apply_all(&log.checkpoint(&encode_db(&acked), upto).unwrap());
                    log.append(p).unwrap()
                }
            };
            disk.apply_all(&ws);
            acked.push(p.clone());
        }
        let start = cfg.region_offset as usize;
        for (at, v) in damage {
            disk.bytes[start + at.index(cfg.region_len as usize)] = v;
        }
        if let Ok((mut log, rec)) = disk.open_cfg(&cfg) {
            // Whatever survived is a consistent log that can be appended to.
            let n = rec.last_lsn();
            if let Ok((lsn, ws)) = log.append(b"x") {
                prop_assert_eq!(lsn, n.next());
                disk.apply_all(&ws);
                let (_, again) = disk.open();
                prop_assert_eq!(again.last_lsn(), lsn);
            }
        }
    }
}

#[test]
fn format_then_open_is_empty() {
    let disk = Disk::formatted(small_cfg(), "EXCLUSTER");
    let (log, rec) = disk.open();
    assert_eq!(rec.checkpoint, None);
    assert!(rec.records.is_empty());
    assert_eq!(rec.cut, None);
    assert_eq!(log.cluster_id(), "EXCLUSTER");
    assert_eq!(
        log.position(),
        LogPosition {
            lsn: Lsn(0),
            checkpoint_lsn: Lsn(0),
            generation: 1,
            bytes_used: 0,
            log_limit: 16 * 1024,
            capacity: 5 * 4096,
        }
    );
}

#[test]
fn format_writes_header_last_after_invalidating_it() {
    let cfg = small_cfg();
    let ws = QuorumLog::format(&cfg, "C").unwrap();
    assert_eq!(ws.first().unwrap().offset, cfg.region_offset);
    assert!(ws.first().unwrap().data.iter().all(|&b| b == 0));
    assert_eq!(ws.last().unwrap().offset, cfg.region_offset);
    assert_eq!(&ws.last().unwrap().data[..8], b"BRIGQLOG");
    // A format cut short before its last write is refused, not misread.
    let mut disk = Disk::formatted(cfg, "OLD");
    disk.apply_all(&ws[..ws.len() - 1]);
    assert!(matches!(disk.open_cfg(&cfg), Err(LogError::NotFormatted)));
}

#[test]
fn appends_survive_reopen_with_lsns_in_order() {
    let disk_cfg = roomy_cfg();
    let mut disk = Disk::formatted(disk_cfg, "C");
    let (mut log, _) = disk.open();
    let payloads: Vec<Vec<u8>> = vec![
        b"node NODE1 online".to_vec(),
        vec![0x5a; 4064], // exactly one block with its header
        vec![0x33; 4065], // spills into a second block
        Vec::new(),
        vec![7; 10_000],
    ];
    let mut expected_offset = disk_cfg.region_offset + 4096 * (1 + 2 * 107);
    for (i, p) in payloads.iter().enumerate() {
        let (lsn, ws) = log.append(p).unwrap();
        assert_eq!(lsn, Lsn(i as u64 + 1));
        assert_eq!(ws.len(), 1, "one write per append");
        assert_eq!(ws[0].offset, expected_offset, "records are contiguous");
        expected_offset += ws[0].data.len() as u64;
        disk.apply_all(&ws);
    }
    assert_eq!(log.position().bytes_used, 4096 * (1 + 1 + 2 + 1 + 3));
    let (log2, rec) = disk.open();
    assert_eq!(database(&rec), payloads);
    assert_eq!(log2.position(), log.position());
}

#[test]
fn limit_reached_needs_checkpoint_then_log_full() {
    let cfg = small_cfg(); // limit 4 blocks, area 5 blocks
    let mut disk = Disk::formatted(cfg, "C");
    let (mut log, _) = disk.open();
    let mut acked = Vec::new();
    for i in 0..4 {
        assert!(!log.needs_checkpoint(), "after {i} records");
        let (_, ws) = log.append(&[i as u8; 100]).unwrap();
        disk.apply_all(&ws);
        acked.push(vec![i as u8; 100]);
    }
    assert!(log.needs_checkpoint());
    // The headroom takes one more record, then the area is full.
    let (_, ws) = log.append(&[4; 100]).unwrap();
    disk.apply_all(&ws);
    acked.push(vec![4; 100]);
    match log.append(&[5; 100]) {
        Err(LogError::LogFull { needed, free }) => {
            assert_eq!((needed, free), (4096, 0));
        }
        other => panic!("{other:?}"),
    }
    let ws = log.checkpoint(&encode_db(&acked), Lsn(5)).unwrap();
    disk.apply_all(&ws);
    assert!(!log.needs_checkpoint());
    assert_eq!(log.position().bytes_used, 0);
    assert_eq!(log.position().checkpoint_lsn, Lsn(5));
    let (lsn, ws) = log.append(&[5; 100]).unwrap();
    assert_eq!(lsn, Lsn(6));
    disk.apply_all(&ws);
    acked.push(vec![5; 100]);
    let (_, rec) = disk.open();
    assert_eq!(rec.checkpoint.as_ref().unwrap().0, Lsn(5));
    assert_eq!(database(&rec), acked);
}

#[test]
fn too_large_snapshot_and_record_are_refused_without_side_effects() {
    let cfg = small_cfg();
    let mut disk = Disk::formatted(cfg, "C");
    let (mut log, _) = disk.open();
    let (_, ws) = log.append(b"a").unwrap();
    disk.apply_all(&ws);
    let before = log.position();
    let max = log.max_snapshot();
    assert_eq!(max, 121 * 4096);
    let err = log
        .checkpoint(&vec![0; max as usize + 1], Lsn(1))
        .unwrap_err();
    assert!(
        matches!(err, LogError::SnapshotTooLarge { len, max: m } if len == max + 1 && m == max)
    );
    assert!(err.to_string().contains("does not fit a checkpoint slot"));
    // Exactly the maximum fits.
    let mut probe = log.clone();
    assert!(probe.checkpoint(&vec![0; max as usize], Lsn(1)).is_ok());

    let err = log.append(&vec![0; 5 * 4096 - 31]).unwrap_err();
    assert!(
        matches!(err, LogError::RecordTooLarge { len, max } if len == 5 * 4096 - 31 && max == 5 * 4096 - 32)
    );
    assert!(matches!(
        log.checkpoint(b"", Lsn(2)),
        Err(LogError::CheckpointRange { .. })
    ));
    assert_eq!(log.position(), before);
    let (lsn, ws) = log.append(b"b").unwrap();
    assert_eq!(lsn, Lsn(2));
    disk.apply_all(&ws);
    assert_eq!(database(&disk.open().1), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn checkpoint_before_the_head_carries_later_records() {
    let mut disk = Disk::formatted(roomy_cfg(), "C");
    let (mut log, _) = disk.open();
    let changes: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 300 * i as usize]).collect();
    for c in &changes {
        disk.apply_all(&log.append(c).unwrap().1);
    }
    let ws = log.checkpoint(&encode_db(&changes[..3]), Lsn(3)).unwrap();
    // pending header, carried records, snapshot, complete header
    assert_eq!(ws.len(), 4);
    assert_eq!(ws[0].offset, ws[3].offset);
    disk.apply_all(&ws);
    assert_eq!(log.position().checkpoint_lsn, Lsn(3));
    assert_eq!(log.position().bytes_used, 3 * 4096);
    let (_, rec) = disk.open();
    assert_eq!(rec.checkpoint.as_ref().unwrap().0, Lsn(3));
    assert_eq!(
        rec.records.iter().map(|(l, _)| l.0).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(database(&rec), changes);
    // And back to the first slot.
    let ws = log.checkpoint(&encode_db(&changes), Lsn(6)).unwrap();
    assert_eq!(ws.len(), 3, "nothing to carry");
    disk.apply_all(&ws);
    let (log2, rec) = disk.open();
    assert_eq!(rec.checkpoint.as_ref().unwrap().0, Lsn(6));
    assert!(rec.records.is_empty());
    assert_eq!(log2.position().generation, 3);
}

/// Crash between and inside each write of a checkpoint, every tear kind:
/// the acknowledged database always comes back, and a retried checkpoint
/// (which may reuse the generation when the commit write was torn) leaves
/// no stale record behind.
#[test]
fn torn_checkpoint_at_every_write() {
    let cfg = roomy_cfg();
    let tears = [
        Tear::Drop,
        Tear::Prefix(1),
        Tear::Prefix(2048),
        Tear::Prefix(4095),
        Tear::Prefix(9000),
        Tear::Sectors(1),
        Tear::Sectors(2),
    ];
    let changes: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1000 + 700 * i as usize]).collect();
    for crash_at in 0..4 {
        for tear in tears {
            let mut disk = Disk::formatted(cfg, "C");
            let (mut log, _) = disk.open();
            for c in &changes {
                disk.apply_all(&log.append(c).unwrap().1);
            }
            let ws = log.checkpoint(&encode_db(&changes[..2]), Lsn(2)).unwrap();
            assert_eq!(ws.len(), 4);
            disk.apply_all(&ws[..crash_at]);
            disk.apply_torn(&ws[crash_at], tear);
            let (mut log, rec) = disk.open();
            assert_eq!(database(&rec), changes, "crash at {crash_at} {tear:?}");
            // Carry on: fewer records carried this time, then more appends.
            let ws = log.checkpoint(&encode_db(&changes[..7]), Lsn(7)).unwrap();
            disk.apply_all(&ws);
            let mut all = changes.clone();
            for extra in [b"x".to_vec(), vec![9; 5000]] {
                disk.apply_all(&log.append(&extra).unwrap().1);
                all.push(extra);
            }
            let (_, rec) = disk.open();
            assert_eq!(
                database(&rec),
                all,
                "after retry, crash at {crash_at} {tear:?}"
            );
            assert_eq!(rec.cut, None);
        }
    }
}

#[test]
fn torn_append_is_cut_and_overwritten() {
    let mut disk = Disk::formatted(roomy_cfg(), "C");
    let (mut log, _) = disk.open();
    disk.apply_all(&log.append(b"one").unwrap().1);
    let (_, ws) = log.append(&vec![0xee; 6000]).unwrap();
    disk.apply_torn(&ws[0], Tear::Prefix(5000));
    let (mut log, rec) = disk.open();
    assert_eq!(database(&rec), vec![b"one".to_vec()]);
    assert!(matches!(
        rec.cut,
        Some(CutReason::Checksum { lsn: Lsn(2), .. })
    ));
    let (lsn, ws) = log.append(b"two").unwrap();
    assert_eq!(lsn, Lsn(2));
    assert_eq!(ws.len(), 1, "nothing to scrub after a torn tail");
    disk.apply_all(&ws);
    let (_, rec) = disk.open();
    assert_eq!(database(&rec), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(rec.cut, None);
}

/// Every byte of a small record, flipped in turn, is caught.
#[test]
fn every_byte_of_a_record_is_covered() {
    let cfg = roomy_cfg();
    let mut disk = Disk::formatted(cfg, "C");
    let (mut log, _) = disk.open();
    for p in [b"first".as_slice(), b"second change", b"third"] {
        disk.apply_all(&log.append(p).unwrap().1);
    }
    let second = cfg.region_offset + 4096 * (1 + 2 * 107) + 4096;
    for i in 0..(RECORD_HEADER_LEN + 13) as u64 {
        let mut d = Disk {
            cfg,
            bytes: disk.bytes.clone(),
        };
        d.bytes[(second + i) as usize] ^= 0x80;
        let (_, rec) = d.open();
        assert_eq!(database(&rec), vec![b"first".to_vec()], "byte {i}");
        let cut = rec.cut.unwrap_or_else(|| panic!("byte {i} not detected"));
        assert_eq!((cut.lsn(), cut.offset()), (Lsn(2), second), "byte {i}");
    }
}

#[test]
fn damaged_newest_checkpoint_falls_back_to_the_older_slot() {
    let cfg = roomy_cfg();
    let mut disk = Disk::formatted(cfg, "C");
    let (mut log, _) = disk.open();
    let changes: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 50]).collect();
    for c in &changes {
        disk.apply_all(&log.append(c).unwrap().1);
    }
    let ws = log.checkpoint(&encode_db(&changes), Lsn(5)).unwrap();
    let snapshot_at = ws[1].offset;
    disk.apply_all(&ws);
    disk.bytes[snapshot_at as usize + 3] ^= 1;
    // The previous slot and its log area are untouched by the checkpoint,
    // so the same database comes back from them.
    let (log, rec) = disk.open();
    assert_eq!(rec.checkpoint, None);
    assert_eq!(database(&rec), changes);
    assert_eq!(log.position().generation, 1);
    // Its next checkpoint must not reuse generation 2.
    let mut log = log;
    disk.apply_all(&log.checkpoint(&encode_db(&changes), Lsn(5)).unwrap());
    assert_eq!(log.position().generation, 3);
    assert_eq!(database(&disk.open().1), changes);
}

#[test]
fn open_refusals() {
    let cfg = small_cfg();
    let blank = Disk {
        cfg,
        bytes: vec![0; (cfg.region_offset + cfg.region_len) as usize],
    };
    assert!(matches!(blank.open_cfg(&cfg), Err(LogError::NotFormatted)));

    let mut disk = Disk::formatted(cfg, "C");
    let other = LogConfig {
        log_limit: 8 * 1024,
        ..cfg
    };
    assert!(matches!(
        disk.open_cfg(&other),
        Err(LogError::GeometryMismatch { .. })
    ));
    let moved = LogConfig {
        region_offset: 0,
        ..cfg
    };
    assert!(matches!(disk.open_cfg(&moved), Err(LogError::NotFormatted)));

    // Both slot headers gone: nothing to recover from.
    let mut no_slots = Disk {
        cfg,
        bytes: disk.bytes.clone(),
    };
    for off in [cfg.region_offset + 4096, cfg.region_offset + 4096 * 123] {
        no_slots.bytes[off as usize + 100] ^= 1;
    }
    assert!(matches!(
        no_slots.open_cfg(&cfg),
        Err(LogError::NoValidCheckpoint)
    ));

    disk.bytes[cfg.region_offset as usize + 20] ^= 4;
    assert!(matches!(
        disk.open_cfg(&cfg),
        Err(LogError::HeaderCorrupt { .. })
    ));

    let short = QuorumLog::open(&cfg, &mut |_, len| Ok(vec![0; len / 2]));
    assert!(matches!(short, Err(LogError::ShortRead { .. })));
    let failing = QuorumLog::open(&cfg, &mut |_, _| Err(std::io::Error::other("path down")));
    assert!(matches!(failing, Err(LogError::Io(_))));
    assert!(matches!(
        QuorumLog::format(&cfg, &"x".repeat(257)),
        Err(LogError::ClusterIdTooLong { len: 257, max: 256 })
    ));
}

#[test]
fn reformat_forgets_the_previous_log() {
    let cfg = small_cfg();
    let mut disk = Disk::formatted(cfg, "C");
    let (mut log, _) = disk.open();
    for i in 0..4u8 {
        disk.apply_all(&log.append(&[i; 10]).unwrap().1);
    }
    disk.apply_all(&QuorumLog::format(&cfg, "C").unwrap());
    let (mut log, rec) = disk.open();
    assert!(database(&rec).is_empty());
    // New records of generation 1 are not followed by the old ones.
    disk.apply_all(&log.append(&[9; 10]).unwrap().1);
    assert_eq!(database(&disk.open().1), vec![vec![9; 10]]);
}

#[test]
fn position_serializes_for_status() {
    let disk = Disk::formatted(small_cfg(), "C");
    let json = serde_json::to_value(disk.open().0.position()).unwrap();
    assert_eq!(json["lsn"], 0);
    assert_eq!(json["checkpoint_lsn"], 0);
    assert_eq!(json["bytes_used"], 0);
    assert_eq!(json["log_limit"], 16 * 1024);
    let cut = CutReason::Checksum {
        offset: 4096,
        lsn: Lsn(3),
    };
    assert_eq!(
        serde_json::to_value(cut).unwrap(),
        serde_json::json!({"reason": "checksum", "offset": 4096, "lsn": 3})
    );
}

/// A log with a checkpoint and records after it.
fn populated(cfg: LogConfig, cluster: &str) -> (Disk, Vec<Vec<u8>>) {
    let mut disk = Disk::formatted(cfg, cluster);
    let (mut log, _) = disk.open();
    let changes: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 100 * i as usize]).collect();
    for c in &changes[..6] {
        disk.apply_all(&log.append(c).unwrap().1);
    }
    disk.apply_all(&log.checkpoint(&encode_db(&changes[..6]), Lsn(6)).unwrap());
    for c in &changes[6..] {
        disk.apply_all(&log.append(c).unwrap().1);
    }
    (disk, changes)
}

fn backup_of(disk: &Disk) -> Vec<u8> {
    let bytes = &disk.bytes;
    backup_region(&disk.cfg, &mut |offset, len| {
        Ok(bytes[offset as usize..][..len].to_vec())
    })
    .unwrap()
}

#[test]
fn backup_restore_round_trip() {
    let cfg = roomy_cfg();
    let (disk, changes) = populated(cfg, "EXCLUSTER");
    let original = disk.open().1;
    let file = backup_of(&disk);
    assert_eq!(parse_backup(&file).unwrap().cluster_id, "EXCLUSTER");

    // Onto a fresh LUN with a different region offset.
    let cfg2 = LogConfig {
        region_offset: 64 * 4096,
        ..cfg
    };
    let mut fresh = Disk::new(cfg2);
    fresh.apply_all(&restore(&file, &cfg2, "EXCLUSTER", false).unwrap());
    let (mut log, rec) = fresh.open();
    assert_eq!(rec, original);
    assert_eq!(database(&rec), changes);
    assert_eq!(log.cluster_id(), "EXCLUSTER");
    // The restored log carries on from the same LSN.
    let (lsn, ws) = log.append(b"after restore").unwrap();
    assert_eq!(lsn, Lsn(10));
    fresh.apply_all(&ws);
    disk_has(&fresh, &changes, b"after restore");
}

fn disk_has(disk: &Disk, changes: &[Vec<u8>], last: &[u8]) {
    let mut want = changes.to_vec();
    want.push(last.to_vec());
    assert_eq!(database(&disk.open().1), want);
}

#[test]
fn restore_over_a_newer_log_replays_nothing_stale() {
    let cfg = roomy_cfg();
    let (mut disk, changes) = populated(cfg, "C");
    let file = backup_of(&disk);
    // The cluster moves on: more changes, another checkpoint, more changes.
    let (mut log, _) = disk.open();
    for i in 0..5u8 {
        disk.apply_all(&log.append(&[0xf0 | i; 3000]).unwrap().1);
    }
    disk.apply_all(&log.checkpoint(b"newer", Lsn(12)).unwrap());
    disk.apply_all(&log.append(b"newest").unwrap().1);
    // Restore the older backup over it.
    disk.apply_all(&restore(&file, &cfg, "C", false).unwrap());
    let (_, rec) = disk.open();
    assert_eq!(database(&rec), changes);
    assert_eq!(rec.cut, None);
}

#[test]
fn restore_refuses_corrupt_foreign_or_oversized_backups() {
    let cfg = roomy_cfg();
    let (disk, _) = populated(cfg, "CLUSTER-A");
    let file = backup_of(&disk);

    let mut bad = file.clone();
    bad[50] ^= 1;
    assert!(matches!(
        restore(&bad, &cfg, "CLUSTER-A", true),
        Err(LogError::BackupCorrupt { .. })
    ));
    let err = restore(&file, &cfg, "CLUSTER-B", false).unwrap_err();
    assert!(matches!(err, LogError::ClusterMismatch { .. }));
    assert!(err.to_string().contains("CLUSTER-A"));
    // Forced: laid down under the new name.
    let mut other = Disk::new(cfg);
    other.apply_all(&restore(&file, &cfg, "CLUSTER-B", true).unwrap());
    let (log, rec) = other.open();
    assert_eq!(log.cluster_id(), "CLUSTER-B");
    assert_eq!(rec, disk.open().1);

    // A backup whose records outgrow a smaller log area.
    let big = Recovered {
        checkpoint: None,
        records: (1..=6).map(|i| (Lsn(i), vec![0; 4000])).collect(),
        cut: None,
    };
    assert!(matches!(
        restore(&backup("C", &big), &small_cfg(), "C", false),
        Err(LogError::BackupDoesNotFit { .. })
    ));
    let huge = Recovered {
        checkpoint: Some((Lsn(1), vec![0; 200 * 4096])),
        records: Vec::new(),
        cut: None,
    };
    assert!(matches!(
        restore(&backup("C", &huge), &small_cfg(), "C", false),
        Err(LogError::SnapshotTooLarge { .. })
    ));
}
