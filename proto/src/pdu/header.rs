//! Dispatch between the typed [`Header`] and the 48-byte BHS
//! (RFC 7143 §11.2.1): the opcode in byte 0 picks the PDU module, the
//! lengths in bytes 4-7 are written here for every PDU alike.
//!
//! ```text
//! byte 0   .|I|Opcode      -> Header variant (unknown -> Unsupported)
//! byte 4   TotalAHSLength  -> from ahs_len (bytes, rounded up to words)
//! byte 5-7 DataSegmentLength -> from data_len
//! ```

use super::bhs::{self, IMMEDIATE, ITT, OPCODE_MASK};
use super::{
    opcode, AsyncMessage, DataIn, DataOut, Header, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, NopIn, NopOut, PduError, R2t, Reject, ScsiCommand, ScsiResponse, SnackRequest,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, BHS_LEN,
};

/// The tag carried by PDUs that are not tied to a task (RFC 7143 §11.9,
/// §11.17: Asynchronous Message and Reject set ITT to 0xffffffff).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

impl Header {
    /// The opcode (RFC 7143 §11.2.1.2), without the I bit.
    pub fn opcode(&self) -> u8 {
        match self {
            Header::NopOut(_) => opcode::NOP_OUT,
            Header::ScsiCommand(_) => opcode::SCSI_COMMAND,
            Header::TaskMgmtRequest(_) => opcode::TASK_MGMT_REQUEST,
            Header::LoginRequest(_) => opcode::LOGIN_REQUEST,
            Header::TextRequest(_) => opcode::TEXT_REQUEST,
            Header::DataOut(_) => opcode::DATA_OUT,
            Header::LogoutRequest(_) => opcode::LOGOUT_REQUEST,
            Header::Snack(_) => opcode::SNACK_REQUEST,
            Header::NopIn(_) => opcode::NOP_IN,
            Header::ScsiResponse(_) => opcode::SCSI_RESPONSE,
            Header::TaskMgmtResponse(_) => opcode::TASK_MGMT_RESPONSE,
            Header::LoginResponse(_) => opcode::LOGIN_RESPONSE,
            Header::TextResponse(_) => opcode::TEXT_RESPONSE,
            Header::DataIn(_) => opcode::DATA_IN,
            Header::LogoutResponse(_) => opcode::LOGOUT_RESPONSE,
            Header::R2t(_) => opcode::R2T,
            Header::AsyncMessage(_) => opcode::ASYNC_MESSAGE,
            Header::Reject(_) => opcode::REJECT,
            Header::Unsupported { opcode, .. } => *opcode,
        }
    }

    /// The Initiator Task Tag, or 0xffffffff for the PDUs that carry none
    /// (Asynchronous Message, Reject). For an unsupported opcode, bytes
    /// 16-19, where every RFC 7143 PDU keeps its ITT.
    pub fn itt(&self) -> u32 {
        match self {
            Header::NopOut(h) => h.itt,
            Header::ScsiCommand(h) => h.itt,
            Header::TaskMgmtRequest(h) => h.itt,
            Header::LoginRequest(h) => h.itt,
            Header::TextRequest(h) => h.itt,
            Header::DataOut(h) => h.itt,
            Header::LogoutRequest(h) => h.itt,
            Header::Snack(h) => h.itt,
            Header::NopIn(h) => h.itt,
            Header::ScsiResponse(h) => h.itt,
            Header::TaskMgmtResponse(h) => h.itt,
            Header::LoginResponse(h) => h.itt,
            Header::TextResponse(h) => h.itt,
            Header::DataIn(h) => h.itt,
            Header::LogoutResponse(h) => h.itt,
            Header::R2t(h) => h.itt,
            Header::AsyncMessage(_) | Header::Reject(_) => RESERVED_TAG,
            Header::Unsupported { bhs, .. } => bhs::u32_at(bhs, ITT),
        }
    }

    /// The I bit (RFC 7143 §11.2.1.1). Login Requests are always immediate
    /// (§11.12); Data-Out, SNACK and every target PDU have no I bit. For an
    /// unsupported opcode, bit 6 of byte 0 as received.
    pub fn immediate(&self) -> bool {
        match self {
            Header::NopOut(h) => h.immediate,
            Header::ScsiCommand(h) => h.immediate,
            Header::TaskMgmtRequest(h) => h.immediate,
            Header::LoginRequest(_) => true,
            Header::TextRequest(h) => h.immediate,
            Header::LogoutRequest(h) => h.immediate,
            Header::Unsupported { bhs, .. } => bhs::flag(bhs, 0, IMMEDIATE),
            Header::DataOut(_)
            | Header::Snack(_)
            | Header::NopIn(_)
            | Header::ScsiResponse(_)
            | Header::TaskMgmtResponse(_)
            | Header::LoginResponse(_)
            | Header::TextResponse(_)
            | Header::DataIn(_)
            | Header::LogoutResponse(_)
            | Header::R2t(_)
            | Header::AsyncMessage(_)
            | Header::Reject(_) => false,
        }
    }

    /// The 48-byte BHS of this header for a PDU with `ahs_len` bytes of AHS
    /// (rounded up to whole words, at most [`super::MAX_AHS_LEN`]) and
    /// `data_len` bytes of data (without padding, at most
    /// [`super::MAX_DATA_SEGMENT_LENGTH`]); larger values are clamped, since
    /// the fields cannot carry them. Reserved fields are zero. An
    /// `Unsupported` header is written back as it was received, with the
    /// lengths replaced.
    pub fn encode_bhs(&self, ahs_len: usize, data_len: usize) -> [u8; BHS_LEN] {
        debug_assert!(ahs_len <= super::MAX_AHS_LEN, "AHS too long: {ahs_len}");
        debug_assert!(
            data_len <= super::MAX_DATA_SEGMENT_LENGTH,
            "data segment too long: {data_len}"
        );
        let mut b = [0u8; BHS_LEN];
        match self {
            Header::NopOut(h) => h.write_bhs(&mut b),
            Header::ScsiCommand(h) => h.write_bhs(&mut b),
            Header::TaskMgmtRequest(h) => h.write_bhs(&mut b),
            Header::LoginRequest(h) => h.write_bhs(&mut b),
            Header::TextRequest(h) => h.write_bhs(&mut b),
            Header::DataOut(h) => h.write_bhs(&mut b),
            Header::LogoutRequest(h) => h.write_bhs(&mut b),
            Header::Snack(h) => h.write_bhs(&mut b),
            Header::NopIn(h) => h.write_bhs(&mut b),
            Header::ScsiResponse(h) => h.write_bhs(&mut b),
            Header::TaskMgmtResponse(h) => h.write_bhs(&mut b),
            Header::LoginResponse(h) => h.write_bhs(&mut b),
            Header::TextResponse(h) => h.write_bhs(&mut b),
            Header::DataIn(h) => h.write_bhs(&mut b),
            Header::LogoutResponse(h) => h.write_bhs(&mut b),
            Header::R2t(h) => h.write_bhs(&mut b),
            Header::AsyncMessage(h) => h.write_bhs(&mut b),
            Header::Reject(h) => h.write_bhs(&mut b),
            Header::Unsupported { bhs, .. } => b = *bhs,
        }
        bhs::set_lengths(&mut b, ahs_len, data_len);
        b
    }

    /// The typed header of a 48-byte BHS. Reserved bits and fields are
    /// ignored, and an opcode RFC 7143 does not define becomes
    /// [`Header::Unsupported`] so the session can answer it with a Reject
    /// instead of dropping the connection. Field values the RFC reserves
    /// (a CSG of 2, say) are passed up unchanged: during login they must be
    /// answered with a Login Response status, not a Reject (RFC 7143
    /// §11.13.5), so judging them is the session's job. Every 48-byte input
    /// therefore decodes; the `Result` is kept for the callers' sake.
    pub fn decode_bhs(bhs: &[u8; BHS_LEN]) -> Result<Header, PduError> {
        let op = bhs::u8_at(bhs, 0) & OPCODE_MASK;
        Ok(match op {
            opcode::NOP_OUT => Header::NopOut(NopOut::read_bhs(bhs)),
            opcode::SCSI_COMMAND => Header::ScsiCommand(ScsiCommand::read_bhs(bhs)),
            opcode::TASK_MGMT_REQUEST => Header::TaskMgmtRequest(TaskMgmtRequest::read_bhs(bhs)),
            opcode::LOGIN_REQUEST => Header::LoginRequest(LoginRequest::read_bhs(bhs)),
            opcode::TEXT_REQUEST => Header::TextRequest(TextRequest::read_bhs(bhs)),
            opcode::DATA_OUT => Header::DataOut(DataOut::read_bhs(bhs)),
            opcode::LOGOUT_REQUEST => Header::LogoutRequest(LogoutRequest::read_bhs(bhs)),
            opcode::SNACK_REQUEST => Header::Snack(SnackRequest::read_bhs(bhs)),
            opcode::NOP_IN => Header::NopIn(NopIn::read_bhs(bhs)),
            opcode::SCSI_RESPONSE => Header::ScsiResponse(ScsiResponse::read_bhs(bhs)),
            opcode::TASK_MGMT_RESPONSE => Header::TaskMgmtResponse(TaskMgmtResponse::read_bhs(bhs)),
            opcode::LOGIN_RESPONSE => Header::LoginResponse(LoginResponse::read_bhs(bhs)),
            opcode::TEXT_RESPONSE => Header::TextResponse(TextResponse::read_bhs(bhs)),
            opcode::DATA_IN => Header::DataIn(DataIn::read_bhs(bhs)),
            opcode::LOGOUT_RESPONSE => Header::LogoutResponse(LogoutResponse::read_bhs(bhs)),
            opcode::R2T => Header::R2t(R2t::read_bhs(bhs)),
            opcode::ASYNC_MESSAGE => Header::AsyncMessage(AsyncMessage::read_bhs(bhs)),
            opcode::REJECT => Header::Reject(Reject::read_bhs(bhs)),
            other => Header::Unsupported {
                opcode: other,
                bhs: *bhs,
            },
        })
    }
}

macro_rules! header_from {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Header {
            fn from(h: $ty) -> Header {
                Header::$variant(h)
            }
        })*
    };
}

header_from! {
    NopOut => NopOut,
    ScsiCommand => ScsiCommand,
    TaskMgmtRequest => TaskMgmtRequest,
    LoginRequest => LoginRequest,
    TextRequest => TextRequest,
    DataOut => DataOut,
    LogoutRequest => LogoutRequest,
    SnackRequest => Snack,
    NopIn => NopIn,
    ScsiResponse => ScsiResponse,
    TaskMgmtResponse => TaskMgmtResponse,
    LoginResponse => LoginResponse,
    TextResponse => TextResponse,
    DataIn => DataIn,
    LogoutResponse => LogoutResponse,
    R2t => R2t,
    AsyncMessage => AsyncMessage,
    Reject => Reject,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_opcodes_decode_to_unsupported_with_the_raw_bhs() {
        // 0x1c-0x1e are vendor-specific initiator opcodes (RFC 7143 §11.2.1.2),
        // 0x3c-0x3e the target ones; 0x07 is simply undefined.
        for op in [0x07u8, 0x1c, 0x1e, 0x30, 0x3c] {
            let mut b = [0u8; BHS_LEN];
            b[0] = op | IMMEDIATE;
            b[16..20].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            b[47] = 0x5a;
            let h = Header::decode_bhs(&b).expect("every BHS decodes");
            assert_eq!(h, Header::Unsupported { opcode: op, bhs: b });
            assert_eq!(h.opcode(), op);
            assert_eq!(h.itt(), 0xdead_beef);
            assert!(h.immediate());
            assert_eq!(h.encode_bhs(0, 0), b);
        }
    }

    #[test]
    fn unsupported_encode_rewrites_only_the_lengths() {
        let mut b = [0x11u8; BHS_LEN];
        b[0] = 0x1d;
        let h = Header::Unsupported {
            opcode: 0x1d,
            bhs: b,
        };
        let out = h.encode_bhs(4, 3);
        assert_eq!(&out[4..8], &[1, 0, 0, 3]);
        assert_eq!(&out[..4], &b[..4]);
        assert_eq!(&out[8..], &b[8..]);
    }

    #[test]
    fn every_defined_opcode_decodes_to_its_variant() {
        let defined = [
            opcode::NOP_OUT,
            opcode::SCSI_COMMAND,
            opcode::TASK_MGMT_REQUEST,
            opcode::LOGIN_REQUEST,
            opcode::TEXT_REQUEST,
            opcode::DATA_OUT,
            opcode::LOGOUT_REQUEST,
            opcode::SNACK_REQUEST,
            opcode::NOP_IN,
            opcode::SCSI_RESPONSE,
            opcode::TASK_MGMT_RESPONSE,
            opcode::LOGIN_RESPONSE,
            opcode::TEXT_RESPONSE,
            opcode::DATA_IN,
            opcode::LOGOUT_RESPONSE,
            opcode::R2T,
            opcode::ASYNC_MESSAGE,
            opcode::REJECT,
        ];
        for op in 0u8..=0x3f {
            let mut b = [0u8; BHS_LEN];
            b[0] = op;
            let h = Header::decode_bhs(&b).ok();
            let unsupported = matches!(h, Some(Header::Unsupported { .. }));
            assert_eq!(unsupported, !defined.contains(&op), "opcode {op:#04x}");
            assert_eq!(h.map(|h| h.opcode()), Some(op));
        }
    }

    #[test]
    fn tagless_pdus_report_the_reserved_tag() {
        assert_eq!(Header::from(AsyncMessage::default()).itt(), RESERVED_TAG);
        assert_eq!(Header::from(Reject::default()).itt(), RESERVED_TAG);
    }

    #[test]
    fn i_bit_only_where_the_pdu_has_one() {
        assert!(Header::from(LoginRequest::default()).immediate());
        assert!(!Header::from(DataOut::default()).immediate());
        let nop = NopOut {
            immediate: true,
            ..NopOut::default()
        };
        assert!(Header::from(nop).immediate());
        assert!(!Header::from(NopIn::default()).immediate());
    }
}
