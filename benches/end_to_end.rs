//! End to end on loopback: busrig's initiator against busrig's target in
//! this process, one 4 KiB or 64 KiB READ or WRITE at a time, at an
//! aligned offset and at the classic 63-sector partition start (byte
//! 32256), on a LUN without a disk model and on one with a 64 KiB stripe
//! unit and 20 µs per back-end operation, where a misaligned 64 KiB I/O
//! costs two operations.

use std::time::Duration;

use busrig_initiator::{Disk, IscsiUrl, SessionConfig};
use busrig_target::config::Config;
use busrig_target::server::TargetServer;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TARGET: &str = "iqn.2026-11.io.busrig:bench";

fn config() -> String {
    format!(
        r#"
[[target]]
name = "{TARGET}"
[[target.lun]]
id = 1
path = "plain.img"
size = "64MiB"
[[target.lun]]
id = 2
path = "modelled.img"
size = "64MiB"
stripe_unit = "64KiB"
service_time_us = 20
"#
    )
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let valid = Config::parse(&config(), "bench")
        .and_then(|c| c.validate(dir.path()))
        .expect("bench config");
    let (addr, stop) = rt.block_on(async {
        let server = TargetServer::build(valid).expect("target");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        (addr, tx)
    });
    let open = |lun: u16| {
        rt.block_on(async {
            let url = IscsiUrl::parse(&format!("iscsi://{addr}/{TARGET}/{lun}")).expect("url");
            let d = Disk::open(&url, SessionConfig::default())
                .await
                .expect("login")
                .with_reset_retries(4);
            d.capacity().await.expect("capacity");
            // Every block written once, so reads find data in the page cache.
            d.write(0, Bytes::from(vec![0x33; 1 << 20]), false)
                .await
                .expect("prefill");
            d
        })
    };
    let disks = [("model_off", open(1)), ("model_on", open(2))];

    let mut g = c.benchmark_group("end_to_end");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for (model, disk) in &disks {
        for size in [4096usize, 65536] {
            let blocks = (size / 512) as u32;
            let data = Bytes::from(vec![0xc3; size]);
            g.throughput(Throughput::Bytes(size as u64));
            for (align, offset) in [("aligned", 0u64), ("misaligned", 32256)] {
                let lba = offset / 512;
                let id = format!("{model}/{align}/{size}");
                g.bench_function(BenchmarkId::new("read", &id), |b| {
                    b.iter(|| rt.block_on(disk.read(lba, blocks)).expect("read").len())
                });
                g.bench_function(BenchmarkId::new("write", &id), |b| {
                    b.iter(|| {
                        rt.block_on(disk.write(lba, data.clone(), false))
                            .expect("write")
                    })
                });
            }
        }
    }
    g.finish();
    for (_, d) in &disks {
        let _ = rt.block_on(d.session().logout());
    }
    let _ = stop.send(());
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
