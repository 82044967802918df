//! REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 §6.35), built
//! from the command table in [`super::cdb::COMMANDS`].
//!
//! ```text
//! all commands (REPORTING OPTIONS 000b):
//!   bytes 0-3  COMMAND DATA LENGTH
//!   then per command, 8 bytes:
//!     byte 0 OPERATION CODE | byte 1 reserved | bytes 2-3 SERVICE ACTION
//!     byte 4 reserved | byte 5 CTDP(1) SERVACTV(0) | bytes 6-7 CDB LENGTH
//!     (+ 12-byte command timeouts descriptor when CTDP is set)
//! one command (REPORTING OPTIONS 001b..011b):
//!   byte 1 CTDP(7) | SUPPORT(2..0) | bytes 2-3 CDB SIZE | CDB USAGE DATA
//!   (+ command timeouts descriptor when CTDP is set)
//! command timeouts descriptor (SPC-4 §6.35.4):
//!   bytes 0-1 DESCRIPTOR LENGTH (0Ah) | 3 command specific
//!   bytes 4-7 NOMINAL COMMAND PROCESSING TIMEOUT | 8-11 RECOMMENDED COMMAND TIMEOUT
//! ```

use super::cdb::{has_service_actions, CommandInfo, COMMANDS};
use super::sense::{Asc, Sense};

fn timeouts(out: &mut Vec<u8>, c: &CommandInfo) {
    out.extend_from_slice(&[0, 0x0a, 0, 0]);
    out.extend_from_slice(&c.nominal_timeout.to_be_bytes());
    out.extend_from_slice(&c.recommended_timeout.to_be_bytes());
}

/// Every supported command (REPORTING OPTIONS 000b).
pub fn all_commands(rctd: bool) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    for c in COMMANDS {
        b.push(c.opcode);
        b.push(0);
        b.extend_from_slice(&c.service_action.unwrap_or(0).to_be_bytes());
        b.push(0);
        b.push(if rctd { 0x02 } else { 0 } | u8::from(c.service_action.is_some()));
        b.extend_from_slice(&(c.cdb_len() as u16).to_be_bytes());
        if rctd {
            timeouts(&mut b, c);
        }
    }
    let n = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&n.to_be_bytes());
    b
}

/// One command (REPORTING OPTIONS 001b, 010b, 011b). Asking with 001b for
/// an opcode that has service actions, or with 010b for one that has none,
/// is INVALID FIELD IN CDB (SPC-4 §6.35.1, Table 262); an unsupported
/// command is reported with SUPPORT 001b.
pub fn one_command(options: u8, opcode: u8, sa: u16, rctd: bool) -> Result<Vec<u8>, Sense> {
    let invalid = || Sense::new(Asc::INVALID_FIELD_IN_CDB).cdb_field(2, Some(2));
    let with_sa = has_service_actions(opcode);
    let key = match options {
        1 if with_sa => return Err(invalid()),
        1 => None,
        2 if !with_sa => return Err(invalid()),
        2 => Some(sa),
        3 => with_sa.then_some(sa),
        _ => return Err(invalid()),
    };
    let found = COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && c.service_action == key);
    let mut b = vec![0u8; 4];
    match found {
        Some(c) => {
            b[1] = if rctd { 0x80 } else { 0 } | 0x03;
            b[2..4].copy_from_slice(&(c.cdb_len() as u16).to_be_bytes());
            b.extend_from_slice(c.usage);
            if rctd {
                timeouts(&mut b, c);
            }
        }
        None => b[1] = 0x01,
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_commands_layout() {
        let b = all_commands(false);
        assert_eq!(
            u32::from_be_bytes(b[..4].try_into().unwrap()) as usize,
            b.len() - 4
        );
        assert_eq!((b.len() - 4) / 8, COMMANDS.len());
        // First descriptor: TEST UNIT READY, 6 bytes.
        assert_eq!(&b[4..12], &[0x00, 0, 0, 0, 0, 0, 0, 6]);
        let with = all_commands(true);
        assert_eq!((with.len() - 4) / 20, COMMANDS.len());
        assert_eq!(
            &with[4..24],
            &[0, 0, 0, 0, 0, 2, 0, 6, 0, 0x0a, 0, 0, 0, 0, 0, 1, 0, 0, 0, 30]
        );
    }

    #[test]
    fn servactv_descriptors_carry_sa() {
        let b = all_commands(false);
        let rc16 = b[4..]
            .chunks(8)
            .find(|d| d[0] == 0x9e && d[3] == 0x10)
            .unwrap();
        assert_eq!(rc16, &[0x9e, 0, 0, 0x10, 0, 1, 0, 16]);
    }

    #[test]
    fn one_command_read10() {
        let b = one_command(1, 0x28, 0, false).unwrap();
        assert_eq!(
            b,
            vec![0, 3, 0, 10, 0x28, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0]
        );
    }

    #[test]
    fn one_command_option_rules() {
        assert!(one_command(1, 0x9e, 0x10, false).is_err());
        assert!(one_command(2, 0x28, 0, false).is_err());
        let b = one_command(2, 0x9e, 0x10, true).unwrap();
        assert_eq!(&b[..6], &[0, 0x83, 0, 16, 0x9e, 0x10]);
        assert_eq!(b.len(), 4 + 16 + 12);
        assert_eq!(one_command(1, 0xc1, 0, false).unwrap(), vec![0, 1, 0, 0]);
        assert_eq!(one_command(3, 0x28, 7, false).unwrap()[1], 3);
        assert!(one_command(4, 0x28, 0, false).is_err());
    }
}
