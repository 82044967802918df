//! Feeds arbitrary bytes through `Pdu::decode` under every WireConfig
//! combination (no digests, header digest, data digest, both) and a small
//! and the default MaxRecvDataSegmentLength, as a connection would: decode
//! until more bytes are needed or a fatal error, answering non-fatal errors
//! and going on (docs/architecture.md, convention 9).
//!
//! Checks beyond "does not panic": every decode makes progress or stops,
//! fatal errors leave the buffer alone, no accepted data segment exceeds
//! the limit, and every accepted PDU re-encodes and decodes to itself.

#![no_main]

use busrig_proto::pdu::{Pdu, WireConfig};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], cfg: &WireConfig) {
    let mut src = BytesMut::from(data);
    loop {
        let before = src.len();
        match Pdu::decode(&mut src, cfg) {
            Ok(Some(pdu)) => {
                assert!(src.len() < before, "decode made no progress");
                assert!(pdu.data.len() <= cfg.max_recv_data_segment_length as usize);
                let _ = pdu.cdb();
                let _ = pdu.bidi_read_expected_length();
                let _ = pdu.ahs_segments().count();
                let mut wire = pdu.to_bytes(cfg);
                assert_eq!(Pdu::decode(&mut wire, cfg), Ok(Some(pdu)));
                assert!(wire.is_empty());
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => {
                assert_eq!(src.len(), before, "a fatal error consumed input");
                break;
            }
            Err(e) => {
                assert!(src.len() < before, "non-fatal error {e} consumed nothing");
                let _ = e.reject();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for header_digest in [false, true] {
        for data_digest in [false, true] {
            for max_recv_data_segment_length in [512, 8192] {
                run(
                    data,
                    &WireConfig {
                        header_digest,
                        data_digest,
                        max_recv_data_segment_length,
                    },
                );
            }
        }
    }
});
