//! The quorum log's decoders on damaged input: a backup file of arbitrary
//! bytes, and a real log region (formatted, three records appended) with
//! the fuzz input XORed in at an input-chosen offset. Recovery must never
//! panic, whatever the damage, and a recovered log must still take appends.
#![no_main]

use busrig_cluster::quorum_log::{parse_backup, BlockWrite, LogConfig, QuorumLog};
use libfuzzer_sys::fuzz_target;

const REGION: usize = 256 * 1024;

fn apply(region: &mut [u8], writes: &[BlockWrite]) {
    for w in writes {
        let start = w.offset as usize;
        if let Some(dst) = region.get_mut(start..start + w.data.len()) {
            dst.copy_from_slice(&w.data);
        }
    }
}

fn reader(region: &[u8]) -> impl FnMut(u64, usize) -> std::io::Result<Vec<u8>> + '_ {
    move |off, len| {
        let start = usize::try_from(off).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        region
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_backup(data);

    let cfg = LogConfig { region_offset: 0, region_len: REGION as u64, log_limit: 48 * 1024 };
    let mut region = vec![0u8; REGION];
    apply(&mut region, &QuorumLog::format(&cfg, "fuzz").expect("format"));
    let (mut log, _) = QuorumLog::open(&cfg, &mut reader(&region)).expect("open fresh log");
    for payload in [&b"node add n1"[..], &[7u8; 5000][..], &b"group move evs1 n2"[..]] {
        let (_, writes) = log.append(payload).expect("append");
        apply(&mut region, &writes);
    }

    let Some((head, damage)) = data.split_first_chunk::<4>() else { return };
    let at = u32::from_le_bytes(*head) as usize % REGION;
    for (i, d) in damage.iter().enumerate().take(REGION - at) {
        region[at + i] ^= d;
    }
    let mut read = reader(&region);
    let reopened = QuorumLog::open(&cfg, &mut read);
    if let Ok((mut log, _recovered)) = reopened {
        let _ = log.append(b"after recovery");
        let _ = log.position();
    }
});
