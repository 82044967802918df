//! Other sessions' reads while one session loops APTPL PR OUTs (issue 14,
//! defect 6). Each PR OUT with APTPL writes the reservation state with two
//! fsyncs before it is answered (SPC-4 §5.9.4); those must not stall the
//! reads of the other sessions on the same connection thread.
//!
//! Two phases on loopback against busrig's target in this process, both
//! sessions on one connection thread (`io_threads = 1`, the worst case):
//! a reader issuing 4 KiB READs one at a time alone (the baseline), then
//! the same reader while a second initiator sends PERSISTENT RESERVE OUT
//! REGISTER with APTPL set in a loop. It prints the reads, their rate, and
//! their latency percentiles per phase, and the ratio to the baseline.
//!
//! `cargo bench --bench aptpl_contention`; `BUSRIG_BENCH_SECS` sets each
//! phase's length (default 5). Without `--bench` (as `cargo test
//! --benches` runs it) each phase lasts 200 ms. The LU lives under
//! `CARGO_TARGET_TMPDIR`, on a real disk, not on a tmpfs where fsync is
//! free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busrig_initiator::{Disk, IscsiUrl, SessionConfig};
use busrig_proto::scsi::pr::{PrOutAction, PrOutParams};
use busrig_target::config::Config;
use busrig_target::server::TargetServer;

const TARGET: &str = "iqn.2026-11.io.busrig:aptpl-bench";

fn config() -> String {
    format!(
        r#"
[[target]]
name = "{TARGET}"
[[target.lun]]
id = 0
path = "lun0.img"
size = "64MiB"

[iscsi]
io_threads = 1
"#
    )
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i]
    }

    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }

    fn report(&mut self, phase: &str, secs: f64) {
        self.0.sort();
        println!(
            "{phase:<22} reads {:>8} ({:>8.0}/s)  mean {:>9.1?}  p50 {:>9.1?}  p99 {:>9.1?}  p99.9 {:>9.1?}  max {:>9.1?}",
            self.0.len(),
            self.0.len() as f64 / secs,
            self.mean(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(0.999),
            self.0.last().copied().unwrap_or_default(),
        );
    }
}

async fn reads_for(disk: &Disk, how_long: Duration) -> Latencies {
    let mut lat = Latencies::default();
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        let t = Instant::now();
        disk.read(8, 8).await.expect("read");
        lat.0.push(t.elapsed());
    }
    lat
}

async fn open(addr: std::net::SocketAddr, initiator: &str) -> Disk {
    let url = IscsiUrl::parse(&format!("iscsi://{addr}/{TARGET}/0")).expect("url");
    let config = SessionConfig {
        initiator_name: initiator.into(),
        ..SessionConfig::default()
    };
    let d = Disk::open(&url, config).await.expect("login");
    d.capacity().await.expect("capacity");
    d
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let phase = if benching {
        let secs = std::env::var("BUSRIG_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        Duration::from_secs(secs)
    } else {
        Duration::from_millis(200)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let valid = Config::parse(&config(), "bench")
        .and_then(|c| c.validate(dir.path()))
        .expect("bench config");
    rt.block_on(async {
        let server = TargetServer::build(valid).expect("target");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let _ = server
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let reader = open(addr, "iqn.2026-11.io.busrig:reader").await;
        let writer = Arc::new(open(addr, "iqn.2026-11.io.busrig:pr-writer").await);
        // Warm the page cache and both sessions.
        reads_for(&reader, phase / 10).await;

        let mut baseline = reads_for(&reader, phase).await;

        let running = Arc::new(AtomicBool::new(true));
        let pr_outs = Arc::new(AtomicU64::new(0));
        let pr_loop = {
            let (running, pr_outs, writer) = (running.clone(), pr_outs.clone(), writer.clone());
            tokio::spawn(async move {
                let mut key = 0u64;
                while running.load(Ordering::Relaxed) {
                    let next = key % 2 + 1;
                    let params = PrOutParams {
                        reservation_key: key,
                        service_action_key: next,
                        aptpl: true,
                        ..PrOutParams::default()
                    };
                    writer
                        .pr_out(PrOutAction::Register, None, &params)
                        .await
                        .expect("PR OUT REGISTER with APTPL");
                    key = next;
                    pr_outs.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut contended = reads_for(&reader, phase).await;
        running.store(false, Ordering::Relaxed);
        pr_loop.await.expect("PR OUT loop");

        let secs = phase.as_secs_f64();
        println!("aptpl_contention: 4 KiB READs, one at a time, {secs:.1} s per phase, one connection thread");
        baseline.report("baseline", secs);
        contended.report("during APTPL PR OUTs", secs);
        let n = pr_outs.load(Ordering::Relaxed);
        println!(
            "PR OUT REGISTER APTPL=1: {n} in {secs:.1} s ({:.0}/s)",
            n as f64 / secs
        );
        println!(
            "ratio to baseline: mean {:.2}x  p99 {:.2}x  read rate {:.2}x",
            contended.mean().as_secs_f64() / baseline.mean().as_secs_f64(),
            contended.percentile(0.99).as_secs_f64() / baseline.percentile(0.99).as_secs_f64(),
            contended.0.len() as f64 / baseline.0.len() as f64,
        );

        let _ = reader.session().logout().await;
        let _ = writer.session().logout().await;
        let _ = stop.send(());
        let _ = served.await;
    });
}
