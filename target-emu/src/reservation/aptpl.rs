//! Persist through power loss (APTPL, SPC-4 §5.9.4): the registrations
//! and the reservation of a logical unit saved durably and restored at
//! start.
//!
//! File layout: one header line, then a JSON body.
//!
//! ```text
//! BUSRIG-APTPL 1 <body length, decimal> <crc32c of body, 8 hex digits>\n
//! {"generation":..,"aptpl":..,"registrations":[..],"reservation":..}
//! ```
//!
//! Writes go to `<file>.tmp` in the same directory, are fsynced, renamed
//! over the file and the directory is fsynced, so after a crash the file is
//! either the old state or the new one. A file that fails any check is
//! reported, never silently dropped: registrations a cluster relies on for
//! fencing must not vanish.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::persistent::{Holder, PrState, Registration, Reservation};
use super::{PrType, ReservationError};
use crate::nexus::ItNexus;

const MAGIC: &str = "BUSRIG-APTPL";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SavedRegistration {
    initiator: String,
    /// 12 hex digits.
    isid: String,
    target: String,
    tpgt: u16,
    key: u64,
    all_tg_pt: bool,
}

#[derive(Serialize, Deserialize)]
struct SavedReservation {
    type_code: u8,
    /// Index of the holder in `registrations`; absent for all-registrants types.
    holder: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    generation: u32,
    aptpl: bool,
    registrations: Vec<SavedRegistration>,
    reservation: Option<SavedReservation>,
}

fn encode(state: &PrState) -> Vec<u8> {
    let registrations = state
        .registrations
        .iter()
        .map(|r| SavedRegistration {
            initiator: r.nexus.initiator.to_string(),
            isid: r.nexus.isid_hex(),
            target: r.nexus.target.to_string(),
            tpgt: r.nexus.tpgt,
            key: r.key,
            all_tg_pt: r.all_tg_pt,
        })
        .collect();
    let reservation = state.reservation.as_ref().map(|res| SavedReservation {
        type_code: res.pr_type.code(),
        holder: match &res.holder {
            Holder::AllRegistrants => None,
            Holder::Registrant(h) => state.registrations.iter().position(|r| r.nexus == *h),
        },
    });
    let saved = Saved {
        generation: state.generation,
        aptpl: state.aptpl,
        registrations,
        reservation,
    };
    let body = serde_json::to_vec(&saved).expect("plain data serializes");
    let mut out = format!(
        "{MAGIC} {VERSION} {} {:08x}\n",
        body.len(),
        crc32c::crc32c(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn parse_isid(hex: &str) -> Option<[u8; 6]> {
    if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut isid = [0u8; 6];
    for (i, b) in isid.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(isid)
}

/// Parses and checks a saved file; the error is the reason it is corrupt.
fn decode(bytes: &[u8]) -> Result<PrState, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let body = &bytes[nl + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, len, crc] = fields[..] else {
        return Err(format!("malformed header {header:?}"));
    };
    if magic != MAGIC {
        return Err(format!("not an APTPL file (magic {magic:?})"));
    }
    if version != VERSION.to_string() {
        return Err(format!("unsupported version {version}"));
    }
    let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    if len != body.len() {
        return Err(format!(
            "truncated or extended: header says {len} bytes, body has {}",
            body.len()
        ));
    }
    let crc = u32::from_str_radix(crc, 16).map_err(|_| format!("bad checksum field {crc:?}"))?;
    let actual = crc32c::crc32c(body);
    if crc != actual {
        return Err(format!(
            "checksum mismatch: header {crc:08x}, body {actual:08x}"
        ));
    }
    let saved: Saved = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let mut registrations = Vec::with_capacity(saved.registrations.len());
    for r in &saved.registrations {
        let isid = parse_isid(&r.isid).ok_or_else(|| format!("bad ISID {:?}", r.isid))?;
        registrations.push(Registration {
            nexus: ItNexus::new(&r.initiator, isid, &r.target, r.tpgt),
            key: r.key,
            all_tg_pt: r.all_tg_pt,
        });
    }
    let reservation = match saved.reservation {
        None => None,
        Some(res) => {
            let pr_type = PrType::from_code(res.type_code)
                .ok_or_else(|| format!("bad type {}", res.type_code))?;
            let holder = match (pr_type.all_registrants(), res.holder) {
                (true, None) => Holder::AllRegistrants,
                (false, Some(i)) => Holder::Registrant(
                    registrations
                        .get(i)
                        .ok_or_else(|| format!("holder index {i} out of range"))?
                        .nexus
                        .clone(),
                ),
                _ => return Err("holder does not fit the reservation type".into()),
            };
            if registrations.is_empty() {
                return Err("reservation without registrations".into());
            }
            Some(Reservation { holder, pr_type })
        }
    };
    Ok(PrState {
        generation: saved.generation,
        registrations,
        reservation,
        aptpl: saved.aptpl,
    })
}

/// Reads the saved state; `Ok(None)` when there is no file yet.
pub(crate) fn load(path: &Path) -> Result<Option<PrState>, ReservationError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReservationError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| ReservationError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Atomically replaces the saved state with `state`.
pub(crate) fn save(path: &Path, state: &PrState) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut f = File::create(&tmp)?;
    f.write_all(&encode(state))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PrState {
        let a = ItNexus::new("iqn.a", [0x80, 0, 0, 0, 0, 1], "iqn.t", 1);
        let b = ItNexus::new("iqn.b", [0x80, 0, 0, 0, 0, 2], "iqn.t", 1);
        PrState {
            generation: 7,
            registrations: vec![
                Registration {
                    nexus: a.clone(),
                    key: 0xa,
                    all_tg_pt: false,
                },
                Registration {
                    nexus: b,
                    key: 0xb,
                    all_tg_pt: true,
                },
            ],
            reservation: Some(Reservation {
                holder: Holder::Registrant(a),
                pr_type: PrType::WriteExclusiveRegistrantsOnly,
            }),
            aptpl: true,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = state();
        assert_eq!(decode(&encode(&s)), Ok(s));
        let ar = PrState {
            reservation: Some(Reservation {
                holder: Holder::AllRegistrants,
                pr_type: PrType::ExclusiveAccessAllRegistrants,
            }),
            ..state()
        };
        assert_eq!(decode(&encode(&ar)), Ok(ar));
    }

    #[test]
    fn header_is_text_with_length_and_crc() {
        let b = encode(&state());
        let header =
            String::from_utf8(b[..b.iter().position(|&c| c == b'\n').unwrap()].to_vec()).unwrap();
        let body = &b[header.len() + 1..];
        assert_eq!(
            header,
            format!("BUSRIG-APTPL 1 {} {:08x}", body.len(), crc32c::crc32c(body))
        );
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let good = encode(&state());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let good = encode(&state());
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated to {n} accepted");
        }
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun0.aptpl");
        save(&path, &state()).unwrap();
        let mut next = state();
        next.generation = 8;
        save(&path, &next).unwrap();
        assert_eq!(load(&path).unwrap(), Some(next));
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("absent")).unwrap(), None);
    }
}
