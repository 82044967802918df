use super::*;
use crate::lu::LunSpec;
use crate::tasks::TaskInfo;
use busrig_proto::scsi::cdb::PageControl;
use busrig_proto::scsi::mode;
use busrig_proto::scsi::provisioning::{encode_unmap, UnmapDescriptor};
use busrig_proto::scsi::sense::SenseKey;
use std::sync::atomic::{AtomicU32, Ordering};

const BLOCKS: u64 = 2048;

struct Rig {
    _dir: tempfile::TempDir,
    target: Arc<ScsiTarget>,
    a: ItNexus,
    b: ItNexus,
}

static ITT: AtomicU32 = AtomicU32::new(1);

fn rig_with(bs: u32, read_only: bool) -> Rig {
    rig_spec(bs, |s| s.read_only = read_only)
}

/// LUN 0 configured by `lun0`, LUN 2 a plain disk.
fn rig_spec(bs: u32, lun0: impl FnOnce(&mut LunSpec)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mk = |lun: u64| {
        LunSpec::new(
            lun,
            dir.path().join(format!("lun{lun}.img")),
            BLOCKS * u64::from(bs),
            bs,
            false,
            format!("SER{lun}"),
        )
    };
    let mut spec0 = mk(0);
    lun0(&mut spec0);
    let luns = [spec0, mk(2)]
        .into_iter()
        .map(|spec| Arc::new(LogicalUnit::open(spec, "iqn.2024-01.test:t").unwrap()))
        .collect();
    let target = Arc::new(ScsiTarget::new(
        "iqn.2024-01.test:t",
        luns,
        TaskRegistry::new(),
    ));
    let a = ItNexus::new(
        "iqn.2024-01.test:a",
        [0x40, 0, 0, 0, 0, 1],
        "iqn.2024-01.test:t",
        1,
    );
    let b = ItNexus::new(
        "iqn.2024-01.test:b",
        [0x40, 0, 0, 0, 0, 2],
        "iqn.2024-01.test:t",
        1,
    );
    target.nexus_created(&a);
    target.nexus_created(&b);
    Rig {
        _dir: dir,
        target,
        a,
        b,
    }
}

fn rig() -> Rig {
    rig_with(512, false)
}

async fn exec(t: &ScsiTarget, n: &ItNexus, lun: u64, cdb: &[u8], data: &[u8]) -> ScsiReply {
    let itt = ITT.fetch_add(1, Ordering::Relaxed);
    let guard = t.tasks().register(TaskInfo {
        nexus: n.clone(),
        lun,
        itt,
        cmd_sn: itt,
    });
    let mut c = cdb.to_vec();
    c.resize(16, 0);
    t.execute(ScsiRequest {
        nexus: n,
        lun,
        cdb: &c,
        data_out: Bytes::copy_from_slice(data).into(),
        expected_in: 1 << 24,
        task: &guard,
    })
    .await
}

impl Rig {
    async fn cmd(&self, cdb: &[u8], data: &[u8]) -> ScsiReply {
        exec(&self.target, &self.a, 0, cdb, data).await
    }
}

fn sense(r: &ScsiReply) -> (SenseKey, u8, u8) {
    assert_eq!(
        r.status,
        status::CHECK_CONDITION,
        "expected CHECK CONDITION, got {r:?}"
    );
    let s = r.decoded_sense().unwrap();
    (s.key, s.asc, s.ascq)
}

fn good(r: &ScsiReply) -> &[u8] {
    assert_eq!(
        r.status,
        status::GOOD,
        "expected GOOD, got {:?} {:?}",
        r.status,
        r.decoded_sense()
    );
    &r.data_in
}

const INVALID_FIELD: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x24, 0);
const OOB: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x21, 0);

fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&n.to_be_bytes());
    c.push(0);
    c
}

fn rw16(op: u8, lba: u64, n: u32, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&n.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn caw(lba: u64, n: u8, flags: u8) -> Vec<u8> {
    let mut c = rw16(opcode::COMPARE_AND_WRITE, lba, 0, flags);
    c[13] = n;
    c
}

#[tokio::test]
async fn inquiry_standard_vpd_and_field_checks() {
    let r = rig();
    let std = good(&r.cmd(&[0x12, 0, 0, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(std.len(), 96);
    assert_eq!(std[0], 0);
    assert_eq!(std[4] as usize, std.len() - 5);
    assert_eq!(&std[8..16], b"BUSRIG  ");
    // Allocation length truncates.
    assert_eq!(good(&r.cmd(&[0x12, 0, 0, 0, 5, 0], &[]).await).len(), 5);
    // EVPD 0 with a page code: INVALID FIELD IN CDB pointing at byte 2.
    let rep = r.cmd(&[0x12, 0, 1, 0, 255, 0], &[]).await;
    assert_eq!(sense(&rep), INVALID_FIELD);
    assert_eq!(rep.decoded_sense().unwrap().field.unwrap().byte, 2);
    let pages = good(&r.cmd(&[0x12, 1, 0, 0, 255, 0], &[]).await).to_vec();
    for &p in &pages[4..] {
        let d = good(&r.cmd(&[0x12, 1, p, 0, 255, 0], &[]).await).to_vec();
        assert_eq!(d[1], p);
        assert_eq!(u16::from_be_bytes([d[2], d[3]]) as usize, d.len() - 4);
    }
    assert_eq!(
        sense(&r.cmd(&[0x12, 1, 0x85, 0, 255, 0], &[]).await),
        INVALID_FIELD
    );
    let sn = good(&r.cmd(&[0x12, 1, 0x80, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(&sn[4..], b"SER0");
    let id = good(&r.cmd(&[0x12, 1, 0x83, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(&id[4..8], &[0x01, 0x03, 0, 16]);
    assert_eq!(&id[8..24], &r.target.lun(0).unwrap().naa());
    let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
    assert_eq!(bl.len(), 64);
    assert_eq!(bl[3], 0x3c);
    assert_eq!(
        u32::from_be_bytes(bl[8..12].try_into().unwrap()),
        MAX_TRANSFER_BYTES / 512
    );
    let lbp = good(&r.cmd(&[0x12, 1, 0xb2, 0, 64, 0], &[]).await).to_vec();
    assert_eq!(lbp[5] & 0xe4, 0xe4, "LBPU, LBPWS, LBPWS10, LBPRZ");
}

#[tokio::test]
async fn missing_lun_behaviour() {
    let r = rig();
    let inq = exec(&r.target, &r.a, 7, &[0x12, 0, 0, 0, 96, 0], &[]).await;
    assert_eq!(good(&inq)[0], 0x7f);
    assert_eq!(
        sense(&exec(&r.target, &r.a, 7, &[0, 0, 0, 0, 0, 0], &[]).await),
        (SenseKey::IllegalRequest, 0x25, 0)
    );
    let rl = exec(
        &r.target,
        &r.a,
        7,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    )
    .await;
    assert_eq!(
        good(&rl),
        &[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
    );
    let rs = exec(&r.target, &r.a, 7, &[0x03, 0, 0, 0, 18, 0], &[]).await;
    let s = Sense::decode(good(&rs)).unwrap();
    assert_eq!((s.asc, s.ascq), (0x25, 0));
}

#[tokio::test]
async fn report_luns_and_allocation_minimum() {
    let r = rig();
    let d = good(&r.cmd(&[0xa0, 0, 2, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await).to_vec();
    assert_eq!(d.len(), 24);
    assert_eq!(
        sense(&r.cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0], &[]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&[0xa0, 0, 3, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await),
        INVALID_FIELD
    );
}

#[tokio::test]
async fn read_capacity_10_and_16() {
    let r = rig_with(4096, false);
    let d = good(&r.cmd(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await).to_vec();
    assert_eq!(d, [0, 0, 0x07, 0xff, 0, 0, 0x10, 0]);
    assert_eq!(
        sense(&r.cmd(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]).await),
        INVALID_FIELD
    );
    let d = good(
        &r.cmd(
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), BLOCKS - 1);
    assert_eq!(d[14] & 0xc0, 0xc0, "LBPME and LBPRZ");
    // libiscsi's mandatory SBC test asks for 15 bytes.
    assert_eq!(
        good(
            &r.cmd(
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0],
                &[]
            )
            .await
        )
        .len(),
        15
    );
}

#[tokio::test]
async fn write_read_every_size_and_flags() {
    let r = rig();
    let data: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
    good(&r.cmd(&rw10(0x2a, 10, 4, 0x08), &data).await);
    assert_eq!(good(&r.cmd(&rw10(0x28, 10, 4, 0x18), &[]).await), &data[..]);
    assert_eq!(
        good(&r.cmd(&rw16(0x88, 11, 1, 0), &[]).await),
        &data[512..1024]
    );
    assert_eq!(
        good(&r.cmd(&[0xa8, 0, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0], &[]).await),
        &data[1024..]
    );
    assert_eq!(
        good(&r.cmd(&[0x08, 0, 0, 13, 1, 0], &[]).await),
        &data[1536..]
    );
    good(&r.cmd(&[0x0a, 0, 0, 20, 1, 0], &data[..512]).await);
    good(
        &r.cmd(
            &[0xaa, 0x08, 0, 0, 0, 21, 0, 0, 0, 1, 0, 0],
            &data[512..1024],
        )
        .await,
    );
    good(&r.cmd(&rw16(0x8a, 22, 1, 0x10), &data[1024..1536]).await);
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 20, 3, 0), &[]).await),
        &data[..1536]
    );
    // RDPROTECT without protection information is an invalid field.
    assert_eq!(
        sense(&r.cmd(&rw10(0x28, 0, 1, 0x20), &[]).await),
        INVALID_FIELD
    );
    // Zero blocks is fine.
    assert!(good(&r.cmd(&rw10(0x28, 0, 0, 0), &[]).await).is_empty());
    // READ(6) with transfer length 0 reads 256 blocks.
    assert_eq!(
        good(&r.cmd(&[0x08, 0, 0, 0, 0, 0], &[]).await).len(),
        256 * 512
    );
}

#[tokio::test]
async fn beyond_end_of_lun() {
    let r = rig();
    let last = (BLOCKS - 1) as u32;
    good(&r.cmd(&rw10(0x28, last, 1, 0), &[]).await);
    assert_eq!(sense(&r.cmd(&rw10(0x28, last, 2, 0), &[]).await), OOB);
    assert_eq!(
        sense(&r.cmd(&rw10(0x28, BLOCKS as u32 + 1, 0, 0), &[]).await),
        OOB
    );
    assert_eq!(
        sense(&r.cmd(&rw10(0x28, 0x8000_0000, 0, 0), &[]).await),
        OOB
    );
    assert_eq!(sense(&r.cmd(&rw16(0x88, u64::MAX, 1, 0), &[]).await), OOB);
    assert_eq!(
        sense(&r.cmd(&rw16(0x8a, u64::MAX, 1, 0), &[0; 512]).await),
        OOB
    );
    assert_eq!(sense(&r.cmd(&rw16(0x8f, 1 << 63, 1, 0), &[]).await), OOB);
    // Transfers above the Block Limits maximum.
    assert_eq!(
        sense(
            &r.cmd(&rw16(0x88, 0, MAX_TRANSFER_BYTES / 512 + 1, 0), &[])
                .await
        ),
        INVALID_FIELD
    );
}

#[tokio::test]
async fn short_data_out_writes_only_whole_received_blocks() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 0, 2, 0), &[b'a'; 1024]).await);
    let rep = r.cmd(&rw10(0x2a, 0, 2, 0), &[b'b'; 512]).await;
    good(&rep);
    assert_eq!(rep.data_out_wanted, Some(1024));
    let d = good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await).to_vec();
    assert!(d[..512].iter().all(|&c| c == b'b'));
    assert!(d[512..].iter().all(|&c| c == b'a'));
    // No data at all: nothing written, GOOD.
    good(&r.cmd(&rw10(0x2a, 0, 1, 0), &[]).await);
}

#[tokio::test]
async fn read_only_lun_refuses_writes_and_reports_wp() {
    let r = rig_with(512, true);
    assert_eq!(
        sense(&r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await),
        (SenseKey::DataProtect, 0x27, 0)
    );
    assert_eq!(
        sense(
            &r.cmd(
                &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
                &encode_unmap(&[UnmapDescriptor { lba: 0, blocks: 1 }])
            )
            .await
        )
        .0,
        SenseKey::DataProtect
    );
    let ms = good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(ms[2] & 0x80, 0x80);
    good(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await);
}

#[tokio::test]
async fn verify_bytchk_and_miscompare_offset() {
    let r = rig();
    let data = vec![0x5a; 1024];
    good(&r.cmd(&rw10(0x2a, 100, 2, 0), &data).await);
    good(&r.cmd(&rw10(0x2f, 100, 2, 0), &[]).await);
    good(&r.cmd(&rw10(0x2f, 100, 2, 0x02), &data).await);
    let mut bad = data.clone();
    bad[700] ^= 0xff;
    let rep = r.cmd(&rw10(0x2f, 100, 2, 0x02), &bad).await;
    assert_eq!(sense(&rep), (SenseKey::Miscompare, 0x1d, 0));
    assert_eq!(rep.decoded_sense().unwrap().information, Some(700));
    // BYTCHK 0 does not compare.
    good(&r.cmd(&rw16(0x8f, 100, 2, 0x10), &bad).await);
    // BYTCHK 11b: one block against each.
    good(
        &r.cmd(&[0xaf, 0x06, 0, 0, 0, 100, 0, 0, 0, 2, 0, 0], &data[..512])
            .await,
    );
    assert_eq!(
        sense(
            &r.cmd(&[0xaf, 0x06, 0, 0, 0, 99, 0, 0, 0, 2, 0, 0], &data[..512])
                .await
        )
        .0,
        SenseKey::Miscompare
    );
}

#[tokio::test]
async fn write_and_verify() {
    let r = rig();
    good(&r.cmd(&rw10(0x2e, 5, 1, 0x02), &[7; 512]).await);
    good(&r.cmd(&rw16(0x8e, 6, 1, 0), &[8; 512]).await);
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 5, 2, 0), &[]).await),
        &[[7u8; 512], [8u8; 512]].concat()[..]
    );
    assert_eq!(
        sense(&r.cmd(&rw10(0x2e, BLOCKS as u32, 1, 0), &[0; 512]).await),
        OOB
    );
}

#[tokio::test]
async fn compare_and_write_outcomes() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 0, 2, 0), &[b'A'; 1024]).await);
    let mut buf = vec![b'A'; 1024];
    buf.extend_from_slice(&[b'B'; 1024]);
    buf[1024 - 27] = b'C';
    let rep = r.cmd(&caw(0, 2, 0), &buf).await;
    assert_eq!(sense(&rep), (SenseKey::Miscompare, 0x1d, 0));
    assert_eq!(rep.decoded_sense().unwrap().information, Some(1024 - 27));
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await),
        &[b'A'; 1024][..]
    );
    buf[1024 - 27] = b'A';
    good(&r.cmd(&caw(0, 2, 0x08), &buf).await);
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 0, 2, 0), &[]).await),
        &[b'B'; 1024][..]
    );
    // Zero blocks: nothing happens, GOOD (the DPO/FUA probe of libiscsi).
    good(&r.cmd(&caw(0, 0, 0x18), &[0; 512]).await);
    // 256 blocks wrap NUMBER OF LOGICAL BLOCKS to zero; the Data-Out
    // length still shows more than MAXIMUM COMPARE AND WRITE LENGTH.
    assert_eq!(
        sense(&r.cmd(&caw(0, 0, 0), &vec![0; 2 * 256 * 512]).await),
        INVALID_FIELD
    );
    // Data-Out that does not match NUMBER OF LOGICAL BLOCKS.
    assert_eq!(
        sense(&r.cmd(&caw(0, 1, 0), &[b'B'; 2048]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&caw(0, 3, 0), &[b'B'; 2048]).await),
        INVALID_FIELD
    );
    assert_eq!(sense(&r.cmd(&caw(BLOCKS - 1, 2, 0), &[0; 2048]).await), OOB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_write_is_atomic_against_concurrent_commands() {
    // Each worker increments a counter in block 0 with read + CAW and
    // retries on miscompare; concurrent plain writes hit block 1. If
    // compare and write were not atomic, increments would be lost.
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await);
    let workers = 4;
    let per = 25u32;
    let mut handles = Vec::new();
    for w in 0..workers {
        let t = r.target.clone();
        let n = if w % 2 == 0 { r.a.clone() } else { r.b.clone() };
        handles.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per {
                let cur = exec(&t, &n, 0, &rw10(0x28, 0, 1, 0), &[])
                    .await
                    .data_in
                    .to_vec();
                let v = u32::from_be_bytes(cur[..4].try_into().unwrap());
                let mut next = cur.clone();
                next[..4].copy_from_slice(&(v + 1).to_be_bytes());
                let mut buf = cur.clone();
                buf.extend_from_slice(&next);
                let rep = exec(&t, &n, 0, &caw(0, 1, 0), &buf).await;
                if rep.status == status::GOOD {
                    done += 1;
                }
                exec(&t, &n, 0, &rw10(0x2a, 1, 1, 0), &[w as u8; 512]).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let d = good(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await).to_vec();
    assert_eq!(
        u32::from_be_bytes(d[..4].try_into().unwrap()),
        workers * per
    );
}

#[tokio::test]
async fn write_same_pattern_unmap_and_limits() {
    let r = rig();
    let ws10 = |lba: u32, n: u16, flags: u8| rw10(0x41, lba, n, flags);
    good(&r.cmd(&ws10(8, 300, 0), &[0x33; 512]).await);
    let d = good(&r.cmd(&rw10(0x28, 8, 300, 0), &[]).await).to_vec();
    assert!(d.iter().all(|&c| c == 0x33));
    good(&r.cmd(&ws10(8, 16, 0x08), &[0xff; 512]).await);
    let d = good(&r.cmd(&rw10(0x28, 8, 16, 0), &[]).await).to_vec();
    assert!(d.iter().all(|&c| c == 0), "UNMAP with LBPRZ reads zeros");
    // WRITE SAME(16) with NDOB writes zeros without a Data-Out buffer.
    good(&r.cmd(&rw16(0x93, 200, 8, 0), &[0x44; 512]).await);
    good(&r.cmd(&rw16(0x93, 200, 8, 0x01), &[]).await);
    assert!(good(&r.cmd(&rw10(0x28, 200, 8, 0), &[]).await)
        .iter()
        .all(|&c| c == 0));
    // Zero blocks: to the end of the LUN, within MAXIMUM WRITE SAME
    // LENGTH; beyond the end reports the LBA.
    good(&r.cmd(&ws10(BLOCKS as u32 - 4, 0, 0), &[0x66; 512]).await);
    let d = good(&r.cmd(&rw10(0x28, BLOCKS as u32 - 4, 4, 0), &[]).await).to_vec();
    assert!(d.iter().all(|&c| c == 0x66));
    good(&r.cmd(&ws10(BLOCKS as u32 - 2, 0, 0x08), &[0x66; 512]).await);
    let d = good(&r.cmd(&rw10(0x28, BLOCKS as u32 - 4, 4, 0), &[]).await).to_vec();
    assert!(d[..1024].iter().all(|&c| c == 0x66) && d[1024..].iter().all(|&c| c == 0));
    good(&r.cmd(&ws10(BLOCKS as u32, 0, 0), &[0; 512]).await);
    assert_eq!(
        sense(&r.cmd(&ws10(BLOCKS as u32 + 1, 0, 0), &[0; 512]).await),
        OOB
    );
    assert_eq!(sense(&r.cmd(&ws10(u32::MAX, 1, 0), &[0; 512]).await), OOB);
    // Above MAXIMUM WRITE SAME LENGTH.
    let over = (MAX_WRITE_SAME_BYTES / 512 + 1) as u32;
    assert_eq!(
        sense(&r.cmd(&rw16(0x93, 0, over, 0x08), &[0; 512]).await),
        INVALID_FIELD
    );
    // ANCHOR is not supported.
    assert_eq!(
        sense(&r.cmd(&ws10(0, 1, 0x18), &[0; 512]).await),
        INVALID_FIELD
    );
    // The Data-Out buffer must be exactly one block.
    assert_eq!(
        sense(&r.cmd(&ws10(0, 1, 0x08), &[0; 256]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&ws10(0, 1, 0x08), &[0; 1024]).await),
        INVALID_FIELD
    );
}

#[tokio::test]
async fn unmap_lists_and_lba_status() {
    let r = rig_with(4096, false);
    good(&r.cmd(&rw10(0x2a, 0, 16, 0), &[b'a'; 16 * 4096]).await);
    let list = encode_unmap(&[
        UnmapDescriptor { lba: 2, blocks: 3 },
        UnmapDescriptor { lba: 9, blocks: 0 },
    ]);
    let mut cdb = vec![0x42, 0, 0, 0, 0, 0, 0];
    cdb.extend_from_slice(&(list.len() as u16).to_be_bytes());
    cdb.push(0);
    good(&r.cmd(&cdb, &list).await);
    let d = good(&r.cmd(&rw10(0x28, 0, 6, 0), &[]).await).to_vec();
    assert!(d[..8192].iter().all(|&c| c == b'a'));
    assert!(d[8192..20480].iter().all(|&c| c == 0));
    assert!(d[20480..].iter().all(|&c| c == b'a'));
    let st = good(
        &r.cmd(
            &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 24, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(st.len(), 24);
    assert_eq!(
        &st[8..24],
        &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 1, 0, 0, 0]
    );
    let st = good(
        &r.cmd(
            &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 24, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(&st[8..16], &5u64.to_be_bytes());
    assert_eq!(st[20], 0, "mapped");
    assert_eq!(
        sense(
            &r.cmd(
                &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 24, 0, 0],
                &[]
            )
            .await
        ),
        OOB
    );
    assert_eq!(
        sense(
            &r.cmd(
                &[0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 24, 0, 0],
                &[]
            )
            .await
        ),
        OOB
    );
    // Zero-block descriptor at the end of the LUN, no descriptors, and
    // an empty list are all GOOD.
    let end = encode_unmap(&[UnmapDescriptor {
        lba: BLOCKS,
        blocks: 0,
    }]);
    good(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &end).await);
    good(
        &r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 8, 0], &encode_unmap(&[]))
            .await,
    );
    good(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await);
    let past = encode_unmap(&[UnmapDescriptor {
        lba: BLOCKS - 1,
        blocks: 2,
    }]);
    assert_eq!(
        sense(&r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &past).await),
        OOB
    );
    assert_eq!(
        sense(
            &r.cmd(&[0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0, 2, 0, 0])
                .await
        ),
        (SenseKey::IllegalRequest, 0x1a, 0)
    );
}

#[tokio::test]
async fn mode_sense_pages_and_page_control() {
    let r = rig();
    let all = good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(all[0] as usize, all.len() - 1);
    assert_eq!(all[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(all[3], 8);
    let pages: Vec<u8> = {
        let mut v = Vec::new();
        let mut i = 12;
        while i < all.len() {
            v.push(all[i] & 0x3f);
            i += all[i + 1] as usize + 2;
        }
        v
    };
    assert_eq!(pages, vec![0x08, 0x0a, 0x1c]);
    // Four bytes asked: four given, no more.
    assert_eq!(good(&r.cmd(&[0x1a, 0, 0x3f, 0, 4, 0], &[]).await).len(), 4);
    let ch = good(&r.cmd(&[0x1a, 0x08, 0x4a, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(&ch[4..], &[0x0a, 0x0a, 0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        sense(&r.cmd(&[0x1a, 0, 0xca, 0, 255, 0], &[]).await),
        (SenseKey::IllegalRequest, 0x39, 0)
    );
    assert_eq!(
        sense(&r.cmd(&[0x1a, 0, 0x01, 0, 255, 0], &[]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&[0x1a, 0, 0x0a, 0x01, 255, 0], &[]).await),
        INVALID_FIELD
    );
    let ten = good(&r.cmd(&[0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 255, 0], &[]).await).to_vec();
    assert_eq!(&ten[4..8], &[1, 0, 0, 16]);
    assert_eq!(ten.len(), 8 + 16 + 20);
}

#[tokio::test]
async fn mode_select_swp_d_sense_and_unit_attention() {
    let r = rig();
    let mut page = r
        .target
        .lun(0)
        .unwrap()
        .mode()
        .page(mode::PAGE_CONTROL, PageControl::Current)
        .unwrap();
    page[2] |= 0x04;
    page[4] |= 0x08;
    let mut list = vec![0, 0, 0, 0];
    list.extend_from_slice(&page);
    good(&r.cmd(&[0x15, 0x10, 0, 0, list.len() as u8, 0], &list).await);
    assert!(r.target.lun(0).unwrap().write_protected());
    let rep = r.cmd(&rw10(0x2a, 0, 1, 0), &[0; 512]).await;
    assert_eq!(rep.sense.as_ref().unwrap()[0], 0x72, "descriptor format");
    assert_eq!(sense(&rep), (SenseKey::DataProtect, 0x27, 0));
    // The other nexus gets MODE PARAMETERS CHANGED, once.
    let rep = exec(&r.target, &r.b, 0, &[0, 0, 0, 0, 0, 0], &[]).await;
    assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x2a, 0x01));
    good(&exec(&r.target, &r.b, 0, &[0, 0, 0, 0, 0, 0], &[]).await);
    // SP is refused; a fixed bit changed is refused with a pointer.
    assert_eq!(
        sense(&r.cmd(&[0x15, 0x11, 0, 0, list.len() as u8, 0], &list).await),
        INVALID_FIELD
    );
    let mut bad = list.clone();
    bad[4 + 5] ^= 0x80; // ATO, fixed at 0
    let rep = r.cmd(&[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad).await;
    assert_eq!(sense(&rep), (SenseKey::IllegalRequest, 0x26, 0));
    assert_eq!(rep.decoded_sense().unwrap().field.unwrap().byte, 9);
    // LUN reset restores the defaults.
    r.target.lun_reset(0, &r.a).await.unwrap();
    assert!(!r.target.lun(0).unwrap().write_protected());
}

#[tokio::test]
async fn report_supported_opcodes_matches_what_runs() {
    let r = rig();
    let all = good(
        &r.cmd(&[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
            .await,
    )
    .to_vec();
    let n = u32::from_be_bytes(all[..4].try_into().unwrap()) as usize;
    assert_eq!(n, all.len() - 4);
    for d in all[4..].chunks(8) {
        let (op, sa, servactv) = (d[0], u16::from_be_bytes([d[2], d[3]]), d[5] & 1 != 0);
        let opts = if servactv { 2 } else { 1 };
        let mut c = vec![0xa3, 0x0c, opts, op];
        c.extend_from_slice(&sa.to_be_bytes());
        c.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0]);
        let one = good(&r.cmd(&c, &[]).await).to_vec();
        assert_eq!(one[1] & 7, 3, "opcode {op:#x} supported");
        assert_eq!(one[4], op);
        // The wrong reporting option for this opcode is refused.
        c[2] = if servactv { 1 } else { 2 };
        assert_eq!(sense(&r.cmd(&c, &[]).await), INVALID_FIELD);
        // Every listed command is really executed: no INVALID COMMAND
        // OPERATION CODE for it.
        let mut probe = vec![0u8; 16];
        probe[0] = op;
        if servactv {
            probe[1] = sa as u8;
        }
        let rep = exec(&r.target, &r.b, 2, &probe, &[]).await;
        if rep.status == status::CHECK_CONDITION {
            assert_ne!(rep.decoded_sense().unwrap().asc, 0x20, "opcode {op:#x}");
        }
    }
    let rctd = good(
        &r.cmd(&[0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
            .await,
    )
    .to_vec();
    assert!(rctd[4..]
        .chunks(20)
        .all(|d| d[5] & 2 == 2 && d[8..10] == [0, 0x0a]));
    let read10 = good(
        &r.cmd(&[0xa3, 0x0c, 1, 0x28, 0, 0, 0, 0, 0xff, 0xff, 0, 0], &[])
            .await,
    )
    .to_vec();
    assert_eq!(read10[5] & 0x18, 0x18, "DPO and FUA usable");
}

#[tokio::test]
async fn orwrite_ors_data_into_the_medium() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 4, 1, 0), &[0x0f; 512]).await);
    let orw = |fua: u8| {
        let mut c = vec![0x8b, fua, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0];
        c.truncate(16);
        c
    };
    good(&r.cmd(&orw(0x08), &[0xa0; 512]).await);
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 4, 1, 0), &[]).await),
        &[0xaf; 512][..]
    );
    // Past the end of the LUN: LBA OUT OF RANGE, nothing written.
    let mut c = orw(0);
    c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(
        sense(&r.cmd(&c, &[0xff; 512]).await),
        (SenseKey::IllegalRequest, 0x21, 0)
    );
}

#[tokio::test]
async fn unknown_opcode_is_invalid_command_operation_code() {
    let r = rig();
    for op in [0x8c, 0x8d, 0x3b, 0x3c, 0xa4, 0x44] {
        assert_eq!(
            sense(&r.cmd(&[op, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await),
            (SenseKey::IllegalRequest, 0x20, 0)
        );
    }
}

#[tokio::test]
async fn unit_attentions_in_order_and_request_sense_clears() {
    let r = rig();
    let lu = r.target.lun(0).unwrap();
    lu.post_unit_attention(UaScope::One(r.a.clone()), Asc::RESERVATIONS_PREEMPTED);
    lu.post_unit_attention(UaScope::All, Asc::POWER_ON_OCCURRED);
    // INQUIRY and REPORT LUNS neither report nor clear it.
    good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
    good(&r.cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], &[]).await);
    assert_eq!(
        sense(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await),
        (SenseKey::UnitAttention, 0x2a, 0x03)
    );
    // REQUEST SENSE returns the next one as data and clears it.
    let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
    let s = Sense::decode(&rs).unwrap();
    assert_eq!(
        (s.key, s.asc, s.ascq),
        (SenseKey::UnitAttention, 0x29, 0x01)
    );
    good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
    let rs = good(&r.cmd(&[0x03, 1, 0, 0, 18, 0], &[]).await).to_vec();
    assert_eq!(&rs[..4], &[0x72, 0, 0, 0], "descriptor NO SENSE");
    // The other nexus still has its own copy.
    assert_eq!(
        sense(&exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await).1,
        0x29
    );
}

#[tokio::test]
async fn lun_reset_aborts_a_running_task_and_posts_unit_attentions() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 3, 1, 0), &[1; 512]).await);
    good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
    let lu = r.target.lun(0).unwrap().clone();
    // Hold the medium as a COMPARE AND WRITE would, so the write waits.
    let held = lu.media_lock.write().await;
    let t = r.target.clone();
    let a = r.a.clone();
    let write = tokio::spawn(async move { exec(&t, &a, 0, &rw10(0x2a, 3, 1, 0), &[2; 512]).await });
    while r.target.tasks().count(|t| t.lun == 0) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    r.target.lun_reset(0, &r.b).await.unwrap();
    assert_eq!(write.await.unwrap().status, status::TASK_ABORTED);
    drop(held);
    // Every nexus, the resetting one included, sees 29/03 once.
    for n in [&r.a, &r.b] {
        let rep = exec(&r.target, n, 0, &rw10(0x28, 3, 1, 0), &[]).await;
        assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x29, 0x03));
        assert_eq!(
            good(&exec(&r.target, n, 0, &rw10(0x28, 3, 1, 0), &[]).await),
            &[1; 512][..]
        );
    }
    // The SCSI-2 reservation is gone: b may reserve now.
    good(&exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[]).await);
    // LUN 2 was not reset.
    good(&exec(&r.target, &r.a, 2, &[0, 0, 0, 0, 0, 0], &[]).await);
    assert_eq!(r.target.lun_reset(9, &r.a).await, Err(NoSuchLun(9)));
}

#[tokio::test]
async fn target_resets_post_their_unit_attention_on_every_lun() {
    for (kind, ascq) in [
        (ResetKind::Warm, 0x03),
        (ResetKind::Cold, 0x01),
        (ResetKind::Bus, 0x02),
    ] {
        let r = rig();
        good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
        r.target.target_reset(kind, AbortBy::Nexus(&r.a), 0).await;
        for lun in [0, 2] {
            for n in [&r.a, &r.b] {
                assert_eq!(
                    sense(&exec(&r.target, n, lun, &[0, 0, 0, 0, 0, 0], &[]).await),
                    (SenseKey::UnitAttention, 0x29, ascq)
                );
            }
        }
        good(&exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[]).await);
    }
}

#[tokio::test]
async fn reservation_conflict_and_nexus_loss() {
    let r = rig();
    good(&r.cmd(&[0x16, 0, 0, 0, 0, 0], &[]).await);
    let rep = exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await;
    assert_eq!(rep.status, status::RESERVATION_CONFLICT);
    assert_eq!(
        exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[])
            .await
            .status,
        status::RESERVATION_CONFLICT
    );
    // RELEASE from a non-holder is GOOD and changes nothing.
    good(&exec(&r.target, &r.b, 0, &[0x17, 0, 0, 0, 0, 0], &[]).await);
    assert_eq!(
        exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[])
            .await
            .status,
        status::RESERVATION_CONFLICT
    );
    good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
    r.target.nexus_lost(&r.a);
    good(&exec(&r.target, &r.b, 0, &rw10(0x28, 0, 1, 0), &[]).await);
}

#[tokio::test]
async fn start_stop_unit_and_prevent_allow() {
    let r = rig();
    good(&r.cmd(&[0x1b, 0, 0, 0, 0x00, 0], &[]).await);
    assert_eq!(
        sense(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await),
        (SenseKey::NotReady, 0x04, 0x02)
    );
    assert_eq!(
        sense(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await).0,
        SenseKey::NotReady
    );
    let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
    assert_eq!((rs[2], rs[12], rs[13]), (0x02, 0x04, 0x02));
    good(&r.cmd(&[0x1b, 1, 0, 0, 0x01, 0], &[]).await);
    good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
    // LOEJ on a non-removable medium is refused; power conditions are
    // accepted and change nothing.
    assert_eq!(
        sense(&r.cmd(&[0x1b, 1, 0, 0, 0x02, 0], &[]).await),
        INVALID_FIELD
    );
    good(&r.cmd(&[0x1b, 0, 0, 0, 0x30, 0], &[]).await);
    assert_eq!(
        sense(&r.cmd(&[0x1b, 0, 0, 0, 0x40, 0], &[]).await),
        INVALID_FIELD
    );
    good(&r.cmd(&[0, 0, 0, 0, 0, 0], &[]).await);
    good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
    assert!(r.target.lun(0).unwrap().removal_prevented());
    assert_eq!(
        sense(&r.cmd(&[0x1e, 0, 0, 0, 2, 0], &[]).await),
        INVALID_FIELD
    );
    r.target.nexus_lost(&r.a);
    assert!(!r.target.lun(0).unwrap().removal_prevented());
}

#[tokio::test]
async fn synchronize_cache_and_prefetch() {
    let r = rig();
    good(&r.cmd(&rw10(0x35, 0, 0, 0), &[]).await);
    good(&r.cmd(&rw16(0x91, 0, 16, 0x02), &[]).await);
    assert_eq!(
        sense(&r.cmd(&rw10(0x35, BLOCKS as u32, 1, 0), &[]).await),
        OOB
    );
    for i in [1u16, 17, 256] {
        good(&r.cmd(&rw10(0x34, 0, i, 0), &[]).await);
        good(
            &r.cmd(&rw10(0x34, (BLOCKS - u64::from(i)) as u32, i, 0x02), &[])
                .await,
        );
    }
    let mut grp = rw10(0x34, 0, 1, 0x02);
    grp[6] = 3;
    good(&r.cmd(&grp, &[]).await);
    good(&r.cmd(&rw16(0x90, 0, 0, 0), &[]).await);
    assert_eq!(sense(&r.cmd(&rw16(0x90, BLOCKS + 1, 0, 0), &[]).await), OOB);
    assert_eq!(sense(&r.cmd(&rw16(0x90, u64::MAX, 1, 0), &[]).await), OOB);
}

#[tokio::test]
async fn aborted_task_does_not_write() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 7, 1, 0), &[9; 512]).await);
    let guard = r.target.tasks().register(TaskInfo {
        nexus: r.a.clone(),
        lun: 0,
        itt: 999,
        cmd_sn: 999,
    });
    let reg = r.target.tasks().clone();
    let waiter = tokio::spawn(async move {
        reg.abort_matching(AbortBy::ControlPlane, |t| t.itt == 999)
            .await
    });
    guard.aborted().await;
    let mut c = rw10(0x2a, 7, 1, 0);
    c.resize(16, 0);
    let rep = r
        .target
        .execute(ScsiRequest {
            nexus: &r.a,
            lun: 0,
            cdb: &c,
            data_out: vec![1u8; 512].into(),
            expected_in: 0,
            task: &guard,
        })
        .await;
    assert_eq!(rep.status, status::TASK_ABORTED);
    drop(guard);
    assert_eq!(waiter.await.unwrap(), 1);
    assert_eq!(good(&r.cmd(&rw10(0x28, 7, 1, 0), &[]).await), &[9; 512][..]);
}

#[tokio::test]
async fn persistent_reserve_commands_reach_the_reservation_module() {
    let r = rig();
    // Whatever the reservation module answers, it is not "unknown opcode"
    // from the executor: the command was dispatched.
    let rep = r.cmd(&[0x5e, 0x00, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]).await;
    if rep.status == status::GOOD {
        assert!(rep.data_in.len() <= 0x1000);
    }
    let rep = r
        .cmd(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], &[0; 24])
        .await;
    assert_eq!(rep.data_out_wanted, Some(24));
}

fn nexus(name: &str, isid: u8) -> ItNexus {
    ItNexus::new(name, [0x40, 0, 0, 0, 0, isid], "iqn.2024-01.test:t", 1)
}

const NO_MEDIUM: (SenseKey, u8, u8) = (SenseKey::NotReady, 0x3a, 0x00);
const REMOVAL_PREVENTED: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x53, 0x02);
const EJECT: [u8; 6] = [0x1b, 0, 0, 0, 0x02, 0];
const LOAD: [u8; 6] = [0x1b, 0, 0, 0, 0x03, 0];
const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

#[tokio::test]
async fn non_removable_lun_reports_rmb_zero() {
    let r = rig();
    assert_eq!(good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await)[1], 0);
    assert_eq!(sense(&r.cmd(&EJECT, &[]).await), INVALID_FIELD);
    good(&r.cmd(&TUR, &[]).await);
}

#[tokio::test]
async fn removable_medium_unloads_and_loads() {
    let r = rig_spec(512, |s| s.removable = true);
    assert_eq!(
        good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await)[1],
        0x80,
        "RMB"
    );
    good(&r.cmd(&rw10(0x2a, 5, 1, 0), &[7; 512]).await);
    good(&r.cmd(&EJECT, &[]).await);
    // SBC-3 §5.25: without a medium, media access and the capacity are
    // NOT READY, MEDIUM NOT PRESENT, for every nexus.
    for n in [&r.a, &r.b] {
        for cdb in [
            TUR.to_vec(),
            rw10(0x28, 0, 1, 0),
            rw10(0x2a, 0, 1, 0),
            rw16(0x88, 0, 1, 0),
            rw10(0x35, 0, 0, 0),
            rw10(0x34, 0, 1, 0),
            rw10(0x2f, 0, 1, 0),
            vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            vec![0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0],
            caw(0, 1, 0),
            rw10(0x41, 0, 1, 0),
            vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
        ] {
            let rep = exec(&r.target, n, 0, &cdb, &[0; 1024]).await;
            assert_eq!(sense(&rep), NO_MEDIUM, "opcode {:#04x}", cdb[0]);
        }
    }
    let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
    assert_eq!((rs[2], rs[12], rs[13]), (0x02, 0x3a, 0x00));
    // Unloading an unloaded medium is not an error; neither are INQUIRY
    // and MODE SENSE.
    good(&r.cmd(&EJECT, &[]).await);
    good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
    good(&r.cmd(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).await);
    // A reset does not put the medium back.
    r.target.lun_reset(0, &r.a).await.unwrap();
    for n in [&r.a, &r.b] {
        let rep = exec(&r.target, n, 0, &TUR, &[]).await;
        assert_eq!(sense(&rep), (SenseKey::UnitAttention, 0x29, 0x03));
    }
    assert_eq!(sense(&r.cmd(&TUR, &[]).await), NO_MEDIUM);
    // Loading makes the LU ready with its data; the other nexus is told
    // the medium may have changed, once; the loader is not.
    good(&r.cmd(&[0x1b, 0, 0, 0, 0x00, 0], &[]).await);
    good(&r.cmd(&LOAD, &[]).await);
    good(&r.cmd(&TUR, &[]).await);
    assert_eq!(good(&r.cmd(&rw10(0x28, 5, 1, 0), &[]).await), &[7; 512][..]);
    assert_eq!(
        sense(&exec(&r.target, &r.b, 0, &TUR, &[]).await),
        (SenseKey::UnitAttention, 0x28, 0x00)
    );
    good(&exec(&r.target, &r.b, 0, &TUR, &[]).await);
    // Loading a loaded medium changes nothing and tells nobody.
    good(&r.cmd(&LOAD, &[]).await);
    good(&exec(&r.target, &r.b, 0, &TUR, &[]).await);
    // LUN 2 is not removable and was never affected.
    assert_eq!(
        sense(&exec(&r.target, &r.a, 2, &EJECT, &[]).await),
        INVALID_FIELD
    );
}

#[tokio::test]
async fn prevent_is_per_nexus_and_cleared_by_loss_and_resets() {
    let r = rig_spec(512, |s| s.removable = true);
    // SBC-3 §5.13: one nexus's PREVENT stops every nexus's eject.
    good(&exec(&r.target, &r.b, 0, &[0x1e, 0, 0, 0, 1, 0], &[]).await);
    for n in [&r.a, &r.b] {
        assert_eq!(
            sense(&exec(&r.target, n, 0, &EJECT, &[]).await),
            REMOVAL_PREVENTED
        );
    }
    good(&r.cmd(&TUR, &[]).await);
    // ALLOW from another nexus does not lift b's PREVENT.
    good(&r.cmd(&[0x1e, 0, 0, 0, 0, 0], &[]).await);
    assert_eq!(sense(&r.cmd(&EJECT, &[]).await), REMOVAL_PREVENTED);
    // Losing b's nexus (logout or connection loss) lifts it.
    r.target.nexus_lost(&r.b);
    good(&r.cmd(&EJECT, &[]).await);
    assert_eq!(sense(&r.cmd(&TUR, &[]).await), NO_MEDIUM);
    // Loading is refused while removal is prevented (libiscsi's
    // PreventAllow.Eject), then allowed.
    good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
    assert_eq!(sense(&r.cmd(&LOAD, &[]).await), REMOVAL_PREVENTED);
    good(&r.cmd(&[0x1e, 0, 0, 0, 0, 0], &[]).await);
    good(&r.cmd(&LOAD, &[]).await);
    // Every reset lifts PREVENT.
    for reset in 0..4 {
        good(&r.cmd(&[0x1e, 0, 0, 0, 1, 0], &[]).await);
        assert_eq!(sense(&r.cmd(&EJECT, &[]).await), REMOVAL_PREVENTED);
        match reset {
            0 => r.target.lun_reset(0, &r.a).await.unwrap(),
            1 => {
                r.target
                    .target_reset(ResetKind::Warm, AbortBy::Nexus(&r.a), 0)
                    .await
            }
            2 => {
                r.target
                    .target_reset(ResetKind::Cold, AbortBy::Nexus(&r.a), 0)
                    .await
            }
            _ => {
                r.target
                    .target_reset(ResetKind::Bus, AbortBy::Nexus(&r.a), 0)
                    .await
            }
        }
        assert_eq!(sense(&r.cmd(&TUR, &[]).await).0, SenseKey::UnitAttention);
        good(&r.cmd(&EJECT, &[]).await);
        good(&r.cmd(&LOAD, &[]).await);
    }
}

#[tokio::test]
async fn physical_block_size_is_reported_in_capacity_and_block_limits() {
    // 512-byte blocks: one per physical block, unmap granules of the
    // file system's 4 KiB.
    let r = rig();
    let rc = good(
        &r.cmd(
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(rc[13], 0);
    let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
    assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 1);
    assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 8);
    assert_eq!(&bl[32..36], &[0x80, 0, 0, 0], "UGAVALID, alignment 0");
    // 512e: eight logical blocks per 4 KiB physical block.
    let r = rig_spec(512, |s| s.physical_block_size = 4096);
    let rc = good(
        &r.cmd(
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(rc[13], 3, "LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT");
    assert_eq!(&rc[14..16], &[0xc0, 0], "LBPME LBPRZ, lowest aligned LBA 0");
    let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
    assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 8);
    assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 8);
    // 4Kn on 64 KiB physical blocks: 16 per physical block.
    let r = rig_spec(4096, |s| s.physical_block_size = 65536);
    let rc = good(
        &r.cmd(
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(rc[13], 4);
    let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
    assert_eq!(u16::from_be_bytes([bl[6], bl[7]]), 16);
    assert_eq!(u32::from_be_bytes(bl[28..32].try_into().unwrap()), 16);
}

#[tokio::test]
async fn unaligned_unmap_and_data_out_sizes_on_512e() {
    let r = rig_spec(512, |s| s.physical_block_size = 4096);
    good(&r.cmd(&rw10(0x2a, 0, 16, 0), &[0xa6; 512 * 16]).await);
    // WRITE SAME with UNMAP need not start or end on a physical block
    // boundary (libiscsi's WriteSame*.UnmapUnaligned); the range reads
    // back as zeros (LBPRZ) and its neighbours keep their data.
    for i in 1..8u32 {
        good(
            &r.cmd(&rw10(0x41, i, (8 - i) as u16, 0x08), &[0xa6; 512])
                .await,
        );
        good(
            &r.cmd(&rw16(0x93, u64::from(i), 8 - i, 0x08), &[0xa6; 512])
                .await,
        );
    }
    let back = good(&r.cmd(&rw10(0x28, 0, 9, 0), &[]).await).to_vec();
    assert_eq!(&back[..512], &[0xa6; 512][..]);
    assert!(back[512..8 * 512].iter().all(|&b| b == 0));
    assert_eq!(&back[8 * 512..], &[0xa6; 512][..]);
    // A Data-Out buffer that is not one logical block is refused
    // (WriteSame*.InvalidDataOutSize).
    for len in [256, 1024] {
        for cdb in [rw10(0x41, 0, 1, 0x08), rw16(0x93, 0, 1, 0x08)] {
            let rep = r.cmd(&cdb, &vec![0xa6; len]).await;
            assert_eq!(sense(&rep).0, SenseKey::IllegalRequest);
        }
    }
    // COMPARE AND WRITE of 1 or 3 blocks with a 4-block Data-Out buffer
    // (CompareAndWrite.InvalidDataOutSize).
    for n in [1, 3] {
        let rep = r.cmd(&caw(0, n, 0), &[0xa6; 4 * 512]).await;
        assert_eq!(sense(&rep).0, SenseKey::IllegalRequest);
    }
}

#[tokio::test]
async fn nexus_formed_after_a_cold_reset_sees_power_on_once() {
    let r = rig();
    // Before any cold reset a new nexus starts without unit attention.
    let c = nexus("iqn.2024-01.test:c", 3);
    r.target.nexus_created(&c);
    good(&exec(&r.target, &c, 0, &TUR, &[]).await);
    r.target
        .target_reset(ResetKind::Warm, AbortBy::Nexus(&r.a), 0)
        .await;
    r.target.nexus_lost(&c);
    r.target.nexus_created(&c);
    good(&exec(&r.target, &c, 0, &TUR, &[]).await);

    // A cold reset ends every session (RFC 7143 §11.5.1); the nexuses
    // that log in afterwards, old and new, see 29/01 once on each LU.
    r.target
        .target_reset(ResetKind::Cold, AbortBy::Nexus(&r.a), 0)
        .await;
    for n in [&r.a, &r.b, &c] {
        r.target.nexus_lost(n);
    }
    let d = nexus("iqn.2024-01.test:d", 4);
    for n in [&r.a, &c, &d] {
        r.target.nexus_created(n);
        for lun in [0, 2] {
            assert_eq!(
                sense(&exec(&r.target, n, lun, &TUR, &[]).await),
                (SenseKey::UnitAttention, 0x29, 0x01),
                "{n} lun {lun}"
            );
            good(&exec(&r.target, n, lun, &TUR, &[]).await);
        }
    }
    // A nexus that never logged in but sends a command is told too.
    let e = nexus("iqn.2024-01.test:e", 5);
    assert_eq!(
        sense(&exec(&r.target, &e, 2, &TUR, &[]).await),
        (SenseKey::UnitAttention, 0x29, 0x01)
    );
    // Once only: logging in again does not repeat it.
    r.target.nexus_lost(&d);
    r.target.nexus_created(&d);
    good(&exec(&r.target, &d, 0, &TUR, &[]).await);
    // The next cold reset owes it to everyone again.
    r.target
        .target_reset(ResetKind::Cold, AbortBy::Nexus(&r.a), 0)
        .await;
    r.target.nexus_lost(&d);
    r.target.nexus_created(&d);
    assert_eq!(
        sense(&exec(&r.target, &d, 0, &TUR, &[]).await),
        (SenseKey::UnitAttention, 0x29, 0x01)
    );
    good(&exec(&r.target, &d, 0, &TUR, &[]).await);
}

#[test]
fn power_on_window_is_bounded() {
    let mut w = PowerOnWindow::default();
    assert!(!w.owed(&nexus("iqn.x", 1)), "closed before a cold reset");
    w.reopen();
    for i in 0..POWER_ON_NEXUS_LIMIT {
        assert!(w.owed(&ItNexus::new(
            &format!("iqn.x{i}"),
            [0; 6],
            "iqn.2024-01.test:t",
            1
        )));
    }
    assert!(w.told.is_empty() && !w.open);
    assert!(!w.owed(&nexus("iqn.late", 1)));
}

// --- WRITE ATOMIC(16), READ DEFECT DATA, SANITIZE, EXTENDED COPY ---

fn write_atomic(lba: u64, blocks: u16, flags: u8) -> Vec<u8> {
    Cdb::WriteAtomic {
        lba,
        blocks,
        dpo: flags & 0x10 != 0,
        fua: flags & 0x08 != 0,
    }
    .encode()
}

#[tokio::test]
async fn write_atomic_within_the_block_limits_atomic_fields() {
    let r = rig();
    let bl = good(&r.cmd(&[0x12, 1, 0xb0, 0, 64, 0], &[]).await).to_vec();
    let field = |at: usize| u32::from_be_bytes(bl[at..at + 4].try_into().unwrap());
    let (max, align, gran) = (field(44), field(48), field(52));
    assert_eq!((align, gran), (8, 8), "4 KiB alignment and granularity");
    assert!(max >= gran && max <= field(8), "max atomic <= max transfer");
    let data = vec![0x5a; 8 * 512];
    good(&r.cmd(&write_atomic(8, 8, 0x08), &data).await);
    assert_eq!(good(&r.cmd(&rw10(0x28, 8, 8, 0), &[]).await), &data[..]);
    // SBC-4 §4.29.2: misaligned LBA, length not a multiple of the
    // granularity, longer than the maximum, beyond the end.
    assert_eq!(
        sense(&r.cmd(&write_atomic(1, 8, 0), &data).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&write_atomic(0, 1, 0), &data[..512]).await),
        INVALID_FIELD
    );
    let over = (max + gran) as u16;
    assert_eq!(
        sense(&r.cmd(&write_atomic(0, over, 0), &[]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&write_atomic(BLOCKS - 8, 16, 0), &data).await),
        OOB
    );
    good(&r.cmd(&write_atomic(0, 0, 0), &[]).await);
    // WRPROTECT without protection information.
    let mut wrprotect = write_atomic(0, 8, 0);
    wrprotect[1] |= 0x20;
    assert_eq!(sense(&r.cmd(&wrprotect, &data).await), INVALID_FIELD);
}

#[tokio::test]
async fn read_defect_data_reports_empty_lists_in_the_format_asked() {
    let r = rig();
    let ten = [0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 32, 0];
    assert_eq!(good(&r.cmd(&ten, &[]).await), &[0, 0x1d, 0, 0]);
    let twelve = [0xb7, 0x08, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    assert_eq!(
        good(&r.cmd(&twelve, &[]).await),
        &[0, 0x08, 0, 0, 0, 0, 0, 0]
    );
    // 110b vendor specific, 111b reserved.
    let vendor = [0x37, 0, 6, 0, 0, 0, 0, 0, 32, 0];
    assert_eq!(sense(&r.cmd(&vendor, &[]).await), INVALID_FIELD);
}

const SANITIZE_IN_PROGRESS: (SenseKey, u8, u8) = (SenseKey::NotReady, 0x04, 0x1b);

fn sanitize_cdb(action: u8, immed: bool, len: u16) -> Vec<u8> {
    Cdb::Sanitize {
        immed,
        ause: false,
        action,
        len: len.into(),
    }
    .encode()
}

fn overwrite_params(pattern: &[u8]) -> Vec<u8> {
    let mut p = vec![0x01, 0];
    p.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
    p.extend_from_slice(pattern);
    p
}

#[tokio::test]
async fn sanitize_runs_in_the_background_with_not_ready_and_progress() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 0, 1, 0), &[b'a'; 512]).await);
    let lu = r.target.lun(0).unwrap().clone();
    // Hold the medium, as a command in flight does: the job waits for it.
    let medium = lu.media_lock.read().await;
    let params = overwrite_params(&[0xaa, 0x55]);
    let (t, a) = (r.target.clone(), r.a.clone());
    let cdb = sanitize_cdb(0x01, false, params.len() as u16);
    let job = tokio::spawn(async move { exec(&t, &a, 0, &cdb, &params).await });
    // The command is in: the LU says so to every nexus (SBC-4 §4.11.2).
    while lu.sanitize_progress().is_none() {
        tokio::task::yield_now().await;
    }
    let tur = exec(&r.target, &r.b, 0, &TUR, &[]).await;
    assert_eq!(sense(&tur), SANITIZE_IN_PROGRESS);
    assert_eq!(tur.decoded_sense().unwrap().progress, Some(0));
    assert_eq!(
        sense(&r.cmd(&rw10(0x28, 0, 1, 0), &[]).await),
        SANITIZE_IN_PROGRESS
    );
    good(&r.cmd(&[0x12, 0, 0, 0, 96, 0], &[]).await);
    let rs = good(&r.cmd(&[0x03, 0, 0, 0, 18, 0], &[]).await).to_vec();
    assert_eq!((rs[2], rs[12], rs[13]), (0x02, 0x04, 0x1b));
    assert_eq!(rs[15] & 0x80, 0x80, "SKSV: progress indication");
    // Another LU of the target is not held up.
    good(&exec(&r.target, &r.a, 2, &TUR, &[]).await);
    drop(medium);
    good(&job.await.unwrap());
    good(&r.cmd(&TUR, &[]).await);
    let back = good(&r.cmd(&rw10(0x28, BLOCKS as u32 - 1, 1, 0), &[]).await).to_vec();
    assert!(back.chunks(2).all(|c| c == [0xaa, 0x55]));
}

#[tokio::test]
async fn sanitize_block_erase_deallocates_and_parameter_checks() {
    let r = rig();
    good(&r.cmd(&rw10(0x2a, 0, 8, 0), &[b'a'; 8 * 512]).await);
    good(&r.cmd(&sanitize_cdb(0x02, false, 0), &[]).await);
    assert!(good(&r.cmd(&rw10(0x28, 0, 8, 0), &[]).await)
        .iter()
        .all(|b| *b == 0));
    let status = good(
        &r.cmd(
            &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0],
            &[],
        )
        .await,
    )
    .to_vec();
    assert_eq!(status[20] & 0x0f, 1, "deallocated");
    // SBC-4 §5.30: parameter list lengths and service actions.
    assert_eq!(
        sense(&r.cmd(&sanitize_cdb(0x02, false, 8), &[0; 8]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&sanitize_cdb(0x1f, false, 8), &[0; 8]).await),
        INVALID_FIELD
    );
    good(&r.cmd(&sanitize_cdb(0x1f, false, 0), &[]).await);
    assert_eq!(
        sense(&r.cmd(&sanitize_cdb(0x01, false, 4), &[0; 4]).await),
        INVALID_FIELD
    );
    assert_eq!(
        sense(&r.cmd(&sanitize_cdb(0x01, false, 517), &[1; 517]).await),
        INVALID_FIELD
    );
    let mut cdb = sanitize_cdb(0x01, false, 5);
    cdb[1] = 0x03; // CRYPTOGRAPHIC ERASE: not supported.
    assert_eq!(sense(&r.cmd(&cdb, &[]).await), INVALID_FIELD);
    // Another nexus's reservation conflicts, like a write.
    good(&exec(&r.target, &r.b, 0, &[0x16, 0, 0, 0, 0, 0], &[]).await);
    let rep = r.cmd(&sanitize_cdb(0x02, false, 0), &[]).await;
    assert_eq!(rep.status, status::RESERVATION_CONFLICT);
}

fn naa_cscd(naa: [u8; 16]) -> xcopy_params::IdentificationCscd {
    xcopy_params::IdentificationCscd {
        byte1: 0,
        relative_initiator_port: 0,
        code_set: 1,
        association: 0,
        designator_type: 3,
        designator: naa.to_vec(),
        pad: false,
        block_length: 512,
    }
}

fn copy_list(list_id: u8, cscds: Vec<[u8; 16]>, segs: &[(u16, u16, u16, u64, u64)]) -> Vec<u8> {
    xcopy_params::CopyParams {
        list_id,
        usage: xcopy_params::ListIdUsage::Hold,
        priority: 0,
        cscds: cscds.into_iter().map(naa_cscd).collect(),
        segments: segs
            .iter()
            .map(
                |&(source, destination, blocks, source_lba, destination_lba)| {
                    xcopy_params::BlockSegment {
                        dc: false,
                        cat: false,
                        source,
                        destination,
                        blocks,
                        source_lba,
                        destination_lba,
                    }
                },
            )
            .collect(),
    }
    .encode()
}

fn xcopy_cdb(len: usize) -> Vec<u8> {
    Cdb::ExtendedCopy { len: len as u32 }.encode()
}

fn copy_results(action: u8, list_id: u8) -> Vec<u8> {
    Cdb::ReceiveCopyResults {
        action,
        list_id,
        alloc: 1024,
    }
    .encode()
}

use busrig_proto::scsi::xcopy as xcopy_params;

#[tokio::test]
async fn extended_copy_between_luns_and_its_copy_status() {
    let r = rig();
    let naa0 = r.target.lun(0).unwrap().naa();
    let naa2 = r.target.lun(2).unwrap().naa();
    let data: Vec<u8> = (0..4096 * 3).map(|i| (i % 251) as u8).collect();
    good(&r.cmd(&rw10(0x2a, 0, 24, 0), &data).await);
    // No copy held yet for list 7.
    assert_eq!(sense(&r.cmd(&copy_results(0, 7), &[]).await), INVALID_FIELD);
    // Two segments: LUN 0 -> LUN 2 (in 1 MiB chunks and less), and an
    // overlapping copy within LUN 0 towards higher LBAs.
    let list = copy_list(
        7,
        vec![naa0, naa2],
        &[(0, 1, 24, 0, 100), (0, 0, 24, 0, 12)],
    );
    good(&r.cmd(&xcopy_cdb(list.len()), &list).await);
    assert_eq!(
        good(&exec(&r.target, &r.a, 2, &rw10(0x28, 100, 24, 0), &[]).await),
        &data[..]
    );
    assert_eq!(good(&r.cmd(&rw10(0x28, 12, 24, 0), &[]).await), &data[..]);
    let st = good(&r.cmd(&copy_results(0, 7), &[]).await).to_vec();
    let st = xcopy_params::CopyStatus::decode(&st).unwrap();
    assert_eq!(st.state, xcopy_params::CopyState::Completed);
    assert_eq!((st.segments_processed, st.bytes), (2, 2 * 24 * 512));
    // Held data belongs to the nexus that sent the copy, and goes with it.
    assert_eq!(
        sense(&exec(&r.target, &r.b, 0, &copy_results(0, 7), &[]).await),
        INVALID_FIELD
    );
    r.target.nexus_lost(&r.a);
    assert_eq!(sense(&r.cmd(&copy_results(0, 7), &[]).await), INVALID_FIELD);
    // OPERATING PARAMETERS: the limits the parameter list is checked with.
    let op = good(&r.cmd(&copy_results(3, 0), &[]).await).to_vec();
    assert_eq!(u16::from_be_bytes([op[8], op[9]]), 8);
    assert_eq!(u16::from_be_bytes([op[10], op[11]]), 64);
    // The Third-party Copy VPD page is listed and served.
    let pages = good(&r.cmd(&[0x12, 1, 0, 0, 64, 0], &[]).await).to_vec();
    assert!(pages[4..].contains(&0x8f));
    assert_eq!(good(&r.cmd(&[0x12, 1, 0x8f, 1, 0, 0], &[]).await)[1], 0x8f);
}

const COPY_ABORTED: SenseKey = SenseKey::CopyAborted;

#[tokio::test]
async fn extended_copy_honours_reservations_of_source_and_destination() {
    let r = rig();
    let naa0 = r.target.lun(0).unwrap().naa();
    let naa2 = r.target.lun(2).unwrap().naa();
    good(&r.cmd(&rw10(0x2a, 0, 8, 0), &[7; 8 * 512]).await);
    // b holds a SCSI-2 reservation of LUN 2: a's copy may neither write
    // it nor read it (SPC-2 §5.5.1), as a's WRITE or READ could not.
    good(&exec(&r.target, &r.b, 2, &[0x16, 0, 0, 0, 0, 0], &[]).await);
    let to2 = copy_list(1, vec![naa0, naa2], &[(0, 1, 8, 0, 0)]);
    let rep = r.cmd(&xcopy_cdb(to2.len()), &to2).await;
    assert_eq!(sense(&rep), (COPY_ABORTED, 0x0d, 0x01));
    assert!(
        good(&exec(&r.target, &r.b, 2, &rw10(0x28, 0, 8, 0), &[]).await)
            .iter()
            .all(|b| *b == 0)
    );
    // FAILED SEGMENT DETAILS: the destination's RESERVATION CONFLICT.
    let fsd = good(&r.cmd(&copy_results(4, 1), &[]).await).to_vec();
    assert_eq!(fsd[56], status::RESERVATION_CONFLICT);
    let st =
        xcopy_params::CopyStatus::decode(good(&r.cmd(&copy_results(0, 1), &[]).await)).unwrap();
    assert_eq!(
        (st.state, st.segments_processed),
        (xcopy_params::CopyState::Failed, 0)
    );
    let from2 = copy_list(2, vec![naa2, naa0], &[(0, 1, 8, 0, 64)]);
    assert_eq!(
        sense(&r.cmd(&xcopy_cdb(from2.len()), &from2).await),
        (COPY_ABORTED, 0x0d, 0x01)
    );
    // The holder itself copies; after RELEASE, so does a.
    let b_copy = copy_list(3, vec![naa0, naa2], &[(0, 1, 8, 0, 0)]);
    good(&exec(&r.target, &r.b, 0, &xcopy_cdb(b_copy.len()), &b_copy).await);
    good(&exec(&r.target, &r.b, 2, &[0x17, 0, 0, 0, 0, 0], &[]).await);
    good(&r.cmd(&xcopy_cdb(from2.len()), &from2).await);
    assert_eq!(
        good(&r.cmd(&rw10(0x28, 64, 8, 0), &[]).await),
        &[7; 8 * 512][..]
    );
}

#[tokio::test]
async fn extended_copy_aborts_on_unreachable_or_out_of_range_targets() {
    let r = rig();
    let naa0 = r.target.lun(0).unwrap().naa();
    // Index past the CSCD list; an NAA nobody has; beyond the capacity.
    let bad_index = copy_list(1, vec![naa0], &[(0, 1, 8, 0, 0)]);
    assert_eq!(
        sense(&r.cmd(&xcopy_cdb(bad_index.len()), &bad_index).await),
        (COPY_ABORTED, 0x0d, 0x02)
    );
    let nobody = copy_list(1, vec![naa0, [0x60; 16]], &[(0, 1, 8, 0, 0)]);
    assert_eq!(
        sense(&r.cmd(&xcopy_cdb(nobody.len()), &nobody).await),
        (COPY_ABORTED, 0x08, 0x04)
    );
    let beyond = copy_list(1, vec![naa0], &[(0, 0, 8, 0, BLOCKS - 1)]);
    assert_eq!(
        sense(&r.cmd(&xcopy_cdb(beyond.len()), &beyond).await),
        (COPY_ABORTED, 0, 0)
    );
    let fsd = good(&r.cmd(&copy_results(4, 1), &[]).await).to_vec();
    let target_sense = Sense::decode(&fsd[60..]).unwrap();
    assert_eq!(
        (target_sense.key, target_sense.asc),
        (SenseKey::IllegalRequest, 0x21)
    );
    // A zero-length parameter list copies nothing; a short one is an error.
    good(&r.cmd(&xcopy_cdb(0), &[]).await);
    assert_eq!(
        sense(&r.cmd(&xcopy_cdb(beyond.len()), &beyond[..20]).await),
        (SenseKey::IllegalRequest, 0x1a, 0)
    );
}

#[tokio::test]
async fn extended_copy_reaches_the_luns_of_other_targets_on_the_bus() {
    let r = rig();
    let dir = tempfile::tempdir().unwrap();
    let spec = LunSpec::new(
        5,
        dir.path().join("other.img"),
        BLOCKS * 512,
        512,
        false,
        "SER5".into(),
    );
    let other_lu = Arc::new(LogicalUnit::open(spec, "iqn.2024-01.test:u").unwrap());
    let peers = Arc::new(BusPeers::default());
    let other = Arc::new(
        ScsiTarget::new(
            "iqn.2024-01.test:u",
            vec![other_lu.clone()],
            TaskRegistry::new(),
        )
        .with_peers(peers.clone()),
    );
    // The rig's target joins the same bus.
    let mine = Arc::new(
        ScsiTarget::new(
            "iqn.2024-01.test:t",
            vec![r.target.lun(0).unwrap().clone()],
            TaskRegistry::new(),
        )
        .with_peers(peers.clone()),
    );
    peers.set(vec![
        (1, Arc::downgrade(&mine)),
        (2, Arc::downgrade(&other)),
    ]);
    good(&exec(&mine, &r.a, 0, &rw10(0x2a, 0, 8, 0), &[9; 8 * 512]).await);
    let list = copy_list(
        1,
        vec![r.target.lun(0).unwrap().naa(), other_lu.naa()],
        &[(0, 1, 8, 0, 16)],
    );
    good(&exec(&mine, &r.a, 0, &xcopy_cdb(list.len()), &list).await);
    assert_eq!(other_lu.read(16, 8).await.unwrap(), vec![9; 8 * 512]);
    // Another initiator's reservation on that target's LU stops the copy.
    let holder = ItNexus::new(
        "iqn.2024-01.test:b",
        [0x40, 0, 0, 0, 0, 2],
        "iqn.2024-01.test:u",
        2,
    );
    good(&exec(&other, &holder, 5, &[0x16, 0, 0, 0, 0, 0], &[]).await);
    assert_eq!(
        sense(&exec(&mine, &r.a, 0, &xcopy_cdb(list.len()), &list).await),
        (COPY_ABORTED, 0x0d, 0x01)
    );
    good(&exec(&other, &holder, 5, &[0x17, 0, 0, 0, 0, 0], &[]).await);
    // A target removed from the running bus is out of reach; added back,
    // it is reachable again (docs/semantics.md "Live reconfiguration").
    peers.remove(&other);
    assert_eq!(
        sense(&exec(&mine, &r.a, 0, &xcopy_cdb(list.len()), &list).await),
        (COPY_ABORTED, 0x08, 0x04)
    );
    peers.add(2, &other);
    good(&exec(&mine, &r.a, 0, &xcopy_cdb(list.len()), &list).await);
}
