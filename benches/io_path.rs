//! Per-command work on the target's I/O path besides the data itself: the
//! reservation check every media command makes (SPC-4 §5.9.11 conflict
//! table, SPC-2 §5.5.1 for SCSI-2), and the cluster's quorum log append
//! that every cluster database change costs before it is acknowledged.

use busrig_cluster::quorum_log::{LogConfig, QuorumLog};
use busrig_target::nexus::ItNexus;
use busrig_target::reservation::Reservations;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TARGET: &str = "iqn.2026-11.io.busrig:bench";
const READ_10: [u8; 10] = [0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0];
const WRITE_10: [u8; 10] = [0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0];

fn nexus(i: u8) -> ItNexus {
    ItNexus::new(
        &format!("iqn.2026-11.io.busrig:node{i}"),
        [0x80, 0, 0, 0, 0, i],
        TARGET,
        1,
    )
}

fn reservation_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("reservation_check");
    let (a, b) = (nexus(1), nexus(2));

    let none = Reservations::new(None).expect("in-memory reservations");
    g.bench_function("unreserved_write", |bch| {
        bch.iter(|| none.check(&a, &WRITE_10).is_ok())
    });

    let mut scsi2 = Reservations::new(None).expect("in-memory reservations");
    scsi2.reserve6(&a).expect("reserve");
    g.bench_function("scsi2_holder_write", |bch| {
        bch.iter(|| scsi2.check(&a, &WRITE_10).is_ok())
    });
    g.bench_function("scsi2_other_read_conflict", |bch| {
        bch.iter(|| scsi2.check(&b, &READ_10).is_err())
    });
    g.finish();
}

fn quorum_log_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("quorum_log_append");
    // The default region: a 4 MiB log limit, the Windows Server 2003
    // default maximum, with checkpoints once it fills.
    let cfg = LogConfig::default();
    let mut disk = vec![0u8; cfg.region_len as usize];
    for w in QuorumLog::format(&cfg, "bench-cluster").expect("format") {
        let at = w.offset as usize;
        disk[at..at + w.data.len()].copy_from_slice(&w.data);
    }
    for len in [64usize, 1024] {
        let payload = vec![0x42u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &payload, |b, p| {
            let mut read = |off: u64, n: usize| Ok(disk[off as usize..off as usize + n].to_vec());
            let (mut log, _) = QuorumLog::open(&cfg, &mut read).expect("open");
            b.iter(|| {
                if log.needs_checkpoint() {
                    let upto = log.position().lsn;
                    log.checkpoint(b"{}", upto).expect("checkpoint").len()
                } else {
                    log.append(p).expect("append").1.len()
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reservation_check, quorum_log_append);
criterion_main!(benches);
