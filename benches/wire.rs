//! Wire formats on the I/O path: PDU encode and decode (with and without
//! digests) and CRC32C over typical data segments (RFC 7143 §12.1).

use busrig_proto::digest::crc32c;
use busrig_proto::pdu::{DataIn, Header, Pdu, ScsiCommand, WireConfig};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn read_command() -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]);
    Pdu {
        header: Header::ScsiCommand(ScsiCommand {
            final_: true,
            read: true,
            attr: 1,
            lun: 1 << 48,
            itt: 7,
            expected_data_transfer_length: 4096,
            cmd_sn: 42,
            exp_stat_sn: 41,
            cdb,
            ..Default::default()
        }),
        ahs: Bytes::new(),
        data: Bytes::new(),
    }
}

fn data_in(len: usize) -> Pdu {
    Pdu {
        header: Header::DataIn(DataIn {
            final_: true,
            status_present: true,
            lun: 1 << 48,
            itt: 7,
            ttt: 0xffff_ffff,
            stat_sn: 41,
            exp_cmd_sn: 43,
            max_cmd_sn: 170,
            ..Default::default()
        }),
        ahs: Bytes::new(),
        data: Bytes::from(vec![0x5a; len]),
    }
}

fn wire(digests: bool) -> WireConfig {
    WireConfig {
        header_digest: digests,
        data_digest: digests,
        max_recv_data_segment_length: 1 << 20,
    }
}

fn pdu(c: &mut Criterion) {
    let mut g = c.benchmark_group("pdu");
    for digests in [false, true] {
        let cfg = wire(digests);
        let tag = if digests { "crc32c" } else { "none" };
        let cmd = read_command();
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("encode_scsi_command", tag), |b| {
            let mut buf = BytesMut::with_capacity(128);
            b.iter(|| {
                buf.clear();
                cmd.encode(&cfg, &mut buf);
                buf.len()
            })
        });
        let mut encoded = BytesMut::new();
        cmd.encode(&cfg, &mut encoded);
        g.bench_function(BenchmarkId::new("decode_scsi_command", tag), |b| {
            b.iter(|| {
                let mut src = encoded.clone();
                Pdu::decode(&mut src, &cfg).map(|p| p.is_some())
            })
        });
        for len in [4096usize, 65536] {
            let p = data_in(len);
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_function(
                BenchmarkId::new(format!("encode_data_in_{len}"), tag),
                |b| {
                    let mut buf = BytesMut::with_capacity(len + 64);
                    b.iter(|| {
                        buf.clear();
                        p.encode(&cfg, &mut buf);
                        buf.len()
                    })
                },
            );
            let mut encoded = BytesMut::new();
            p.encode(&cfg, &mut encoded);
            g.bench_function(
                BenchmarkId::new(format!("decode_data_in_{len}"), tag),
                |b| {
                    b.iter(|| {
                        let mut src = encoded.clone();
                        Pdu::decode(&mut src, &cfg).map(|p| p.is_some())
                    })
                },
            );
        }
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for len in [48usize, 4096, 65536, 1 << 20] {
        let data = vec![0xa5u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, d| {
            b.iter(|| crc32c(d))
        });
    }
    g.finish();
}

criterion_group!(benches, pdu, crc);
criterion_main!(benches);
