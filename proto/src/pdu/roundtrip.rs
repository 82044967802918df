//! Property tests of the whole codec: every PDU type with arbitrary fields,
//! AHS and data, with and without digests.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Opcodes RFC 7143 leaves undefined or to vendors (§11.2.1.2).
const UNDEFINED_OPCODES: [u8; 8] = [0x07, 0x0f, 0x11, 0x1c, 0x1e, 0x27, 0x30, 0x3c];

fn requests() -> impl Strategy<Value = Header> {
    prop_oneof![
        (any::<(bool, u64, u32, u32, u32, u32)>()).prop_map(
            |(immediate, lun, itt, ttt, cmd_sn, exp_stat_sn)| {
                Header::NopOut(NopOut {
                    immediate,
                    lun,
                    itt,
                    ttt,
                    cmd_sn,
                    exp_stat_sn,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool)>(),
            0u8..8,
            any::<(u64, u32, u32, u32, u32)>(),
            any::<[u8; 16]>()
        )
            .prop_map(
                |(
                    (immediate, final_, read, write),
                    attr,
                    (lun, itt, edtl, cmd_sn, exp_stat_sn),
                    cdb,
                )| {
                    Header::ScsiCommand(ScsiCommand {
                        immediate,
                        final_,
                        read,
                        write,
                        attr,
                        lun,
                        itt,
                        expected_data_transfer_length: edtl,
                        cmd_sn,
                        exp_stat_sn,
                        cdb,
                    })
                }
            ),
        (
            any::<bool>(),
            0u8..0x80,
            any::<(u64, u32, u32, u32, u32, u32, u32)>()
        )
            .prop_map(
                |(immediate, function, (lun, itt, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, eds))| {
                    Header::TaskMgmtRequest(TaskMgmtRequest {
                        immediate,
                        function,
                        lun,
                        itt,
                        referenced_task_tag: rtt,
                        cmd_sn,
                        exp_stat_sn,
                        ref_cmd_sn,
                        exp_data_sn: eds,
                    })
                }
            ),
        (
            any::<(bool, bool)>(),
            0u8..4,
            0u8..4,
            any::<(u8, u8, [u8; 6], u16)>(),
            any::<(u32, u16, u32, u32)>()
        )
            .prop_map(
                |(
                    (transit, continue_),
                    csg,
                    nsg,
                    (version_max, version_min, isid, tsih),
                    (itt, cid, cmd_sn, exp_stat_sn),
                )| {
                    Header::LoginRequest(LoginRequest {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max,
                        version_min,
                        isid,
                        tsih,
                        itt,
                        cid,
                        cmd_sn,
                        exp_stat_sn,
                    })
                }
            ),
        (any::<(bool, bool, bool, u64, u32, u32, u32, u32)>()).prop_map(
            |(immediate, final_, continue_, lun, itt, ttt, cmd_sn, exp_stat_sn)| {
                Header::TextRequest(TextRequest {
                    immediate,
                    final_,
                    continue_,
                    lun,
                    itt,
                    ttt,
                    cmd_sn,
                    exp_stat_sn,
                })
            }
        ),
        (any::<(bool, u64, u32, u32, u32, u32, u32)>()).prop_map(
            |(final_, lun, itt, ttt, exp_stat_sn, data_sn, buffer_offset)| {
                Header::DataOut(DataOut {
                    final_,
                    lun,
                    itt,
                    ttt,
                    exp_stat_sn,
                    data_sn,
                    buffer_offset,
                })
            }
        ),
        (any::<bool>(), 0u8..0x80, any::<(u32, u16, u32, u32)>()).prop_map(
            |(immediate, reason, (itt, cid, cmd_sn, exp_stat_sn))| {
                Header::LogoutRequest(LogoutRequest {
                    immediate,
                    reason,
                    itt,
                    cid,
                    cmd_sn,
                    exp_stat_sn,
                })
            }
        ),
        (0u8..16, any::<(u64, u32, u32, u32, u32, u32)>()).prop_map(
            |(snack_type, (lun, itt, ttt, exp_stat_sn, beg_run, run_length))| {
                Header::Snack(SnackRequest {
                    snack_type,
                    lun,
                    itt,
                    ttt,
                    exp_stat_sn,
                    beg_run,
                    run_length,
                })
            }
        ),
    ]
}

fn responses() -> impl Strategy<Value = Header> {
    prop_oneof![
        (any::<(u64, u32, u32, u32, u32, u32)>()).prop_map(
            |(lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn)| {
                Header::NopIn(NopIn {
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, u8, u8)>(),
            any::<(u32, u32, u32, u32, u32, u32, u32, u32)>()
        )
            .prop_map(
                |((bo, bu, o, u, response, status), (itt, snack, ss, ecs, mcs, eds, brc, rc))| {
                    Header::ScsiResponse(ScsiResponse {
                        bidi_overflow: bo,
                        bidi_underflow: bu,
                        overflow: o,
                        underflow: u,
                        response,
                        status,
                        itt,
                        snack_tag: snack,
                        stat_sn: ss,
                        exp_cmd_sn: ecs,
                        max_cmd_sn: mcs,
                        exp_data_sn: eds,
                        bidi_residual_count: brc,
                        residual_count: rc,
                    })
                }
            ),
        (any::<(u8, u32, u32, u32, u32)>()).prop_map(
            |(response, itt, stat_sn, exp_cmd_sn, max_cmd_sn)| {
                Header::TaskMgmtResponse(TaskMgmtResponse {
                    response,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                })
            }
        ),
        (
            any::<(bool, bool)>(),
            0u8..4,
            0u8..4,
            any::<(u8, u8, [u8; 6], u16)>(),
            any::<(u32, u32, u32, u32, u8, u8)>()
        )
            .prop_map(
                |(
                    (transit, continue_),
                    csg,
                    nsg,
                    (version_max, version_active, isid, tsih),
                    (itt, stat_sn, exp_cmd_sn, max_cmd_sn, status_class, status_detail),
                )| {
                    Header::LoginResponse(LoginResponse {
                        transit,
                        continue_,
                        csg,
                        nsg,
                        version_max,
                        version_active,
                        isid,
                        tsih,
                        itt,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        status_class,
                        status_detail,
                    })
                }
            ),
        (any::<(bool, bool, u64, u32, u32, u32, u32, u32)>()).prop_map(
            |(final_, continue_, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn)| {
                Header::TextResponse(TextResponse {
                    final_,
                    continue_,
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, bool, u8)>(),
            any::<(u64, u32, u32, u32, u32)>(),
            any::<(u32, u32, u32, u32)>()
        )
            .prop_map(
                |(
                    (final_, acknowledge, overflow, underflow, status_present, status),
                    (lun, itt, ttt, stat_sn, exp_cmd_sn),
                    (max_cmd_sn, data_sn, buffer_offset, residual_count),
                )| {
                    Header::DataIn(DataIn {
                        final_,
                        acknowledge,
                        overflow,
                        underflow,
                        status_present,
                        status,
                        lun,
                        itt,
                        ttt,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        data_sn,
                        buffer_offset,
                        residual_count,
                    })
                }
            ),
        (any::<(u8, u32, u32, u32, u32, u16, u16)>()).prop_map(
            |(response, itt, stat_sn, exp_cmd_sn, max_cmd_sn, time2wait, time2retain)| {
                Header::LogoutResponse(LogoutResponse {
                    response,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    time2wait,
                    time2retain,
                })
            }
        ),
        (
            any::<(u64, u32, u32, u32, u32)>(),
            any::<(u32, u32, u32, u32)>()
        )
            .prop_map(
                |((lun, itt, ttt, stat_sn, exp_cmd_sn), (max_cmd_sn, r2t_sn, off, ddtl))| {
                    Header::R2t(R2t {
                        lun,
                        itt,
                        ttt,
                        stat_sn,
                        exp_cmd_sn,
                        max_cmd_sn,
                        r2t_sn,
                        buffer_offset: off,
                        desired_data_transfer_length: ddtl,
                    })
                }
            ),
        (any::<(u64, u32, u32, u32, u8, u8, u16, u16, u16)>()).prop_map(
            |(lun, stat_sn, exp_cmd_sn, max_cmd_sn, async_event, async_vcode, p1, p2, p3)| {
                Header::AsyncMessage(AsyncMessage {
                    lun,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    async_event,
                    async_vcode,
                    parameter1: p1,
                    parameter2: p2,
                    parameter3: p3,
                })
            }
        ),
        (any::<(u8, u32, u32, u32, u32)>()).prop_map(
            |(reason, stat_sn, exp_cmd_sn, max_cmd_sn, sn)| {
                Header::Reject(Reject {
                    reason,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data_sn_or_r2t_sn: sn,
                })
            }
        ),
    ]
}

fn unsupported() -> impl Strategy<Value = Header> {
    (
        prop::sample::select(UNDEFINED_OPCODES.to_vec()),
        0u8..4,
        vec(any::<u8>(), BHS_LEN),
    )
        .prop_map(|(opcode, high_bits, raw)| {
            let mut bhs = [0u8; BHS_LEN];
            bhs.copy_from_slice(&raw);
            bhs[0] = (high_bits << 6) | opcode;
            Header::Unsupported { opcode, bhs }
        })
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![requests(), responses(), unsupported()]
}

fn ahs() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just(0usize), 1usize..=8, Just(255)]
        .prop_flat_map(|words| vec(any::<u8>(), words * 4))
        .prop_map(Bytes::from)
}

fn data() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), 1..700)].prop_map(Bytes::from)
}

fn config() -> impl Strategy<Value = WireConfig> {
    any::<(bool, bool)>().prop_map(|(header_digest, data_digest)| WireConfig {
        header_digest,
        data_digest,
        max_recv_data_segment_length: 8192,
    })
}

/// A PDU as decode would return it: an `Unsupported` BHS carries the
/// lengths it was framed with.
fn pdu() -> impl Strategy<Value = Pdu> {
    (header(), ahs(), data()).prop_map(|(mut header, ahs, data)| {
        if let Header::Unsupported { bhs, .. } = &mut header {
            bhs::set_lengths(bhs, ahs.len(), data.len());
        }
        Pdu { header, ahs, data }
    })
}

fn all_configs() -> [WireConfig; 4] {
    [(false, false), (true, false), (false, true), (true, true)].map(|(h, d)| WireConfig {
        header_digest: h,
        data_digest: d,
        max_recv_data_segment_length: 8192,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity_and_consumes_exactly(
        pdu in pdu(),
        cfg in config(),
        trailer in vec(any::<u8>(), 0..60),
    ) {
        let wire = pdu.to_bytes(&cfg);
        let expected_len = BHS_LEN
            + pdu.ahs.len()
            + if cfg.header_digest { 4 } else { 0 }
            + pdu.data.len().div_ceil(4) * 4
            + if cfg.data_digest && !pdu.data.is_empty() { 4 } else { 0 };
        prop_assert_eq!(wire.len(), expected_len);
        let mut src = wire.clone();
        src.extend_from_slice(&trailer);
        let decoded = Pdu::decode(&mut src, &cfg);
        prop_assert_eq!(decoded, Ok(Some(pdu.clone())));
        prop_assert_eq!(&src[..], &trailer[..]);
        // Encoding is deterministic: the decoded PDU encodes to the same bytes.
        prop_assert_eq!(pdu.to_bytes(&cfg), wire);
    }

    #[test]
    fn every_prefix_is_incomplete(pdu in pdu(), cfg in config(), picks in vec(any::<prop::sample::Index>(), 16)) {
        let wire = pdu.to_bytes(&cfg);
        let mut cuts: Vec<usize> = (0..wire.len().min(64)).collect();
        cuts.extend([wire.len() - 1, wire.len().saturating_sub(4), BHS_LEN + pdu.ahs.len()]);
        cuts.extend(picks.iter().map(|i| i.index(wire.len())));
        for cut in cuts.into_iter().filter(|&c| c < wire.len()) {
            let mut src = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(Pdu::decode(&mut src, &cfg), Ok(None), "cut {}", cut);
            prop_assert_eq!(src.len(), cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..2048),
        cfg in config(),
        limit in 0u32..4096,
    ) {
        let cfg = WireConfig { max_recv_data_segment_length: limit, ..cfg };
        let mut src = BytesMut::from(&bytes[..]);
        loop {
            let before = src.len();
            match Pdu::decode(&mut src, &cfg) {
                Ok(Some(pdu)) => {
                    prop_assert!(src.len() < before);
                    prop_assert!(pdu.data.len() <= limit as usize);
                    // Whatever decodes also survives the accessors.
                    let _ = pdu.cdb();
                    let _ = pdu.ahs_segments().count();
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    prop_assert_eq!(src.len(), before);
                    break;
                }
                Err(e) => {
                    let is_data_digest = matches!(e, PduError::DataDigest { .. });
                    prop_assert!(is_data_digest, "{}", e);
                    prop_assert!(src.len() < before);
                }
            }
        }
    }

    #[test]
    fn with_both_digests_no_single_bit_flip_goes_unnoticed(
        pdu in pdu(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let cfg = WireConfig { header_digest: true, data_digest: true, max_recv_data_segment_length: 8192 };
        let mut src = pdu.to_bytes(&cfg);
        let i = at.index(src.len());
        src[i] ^= 1 << bit;
        // A flip in TotalAHSLength or DataSegmentLength may also leave the
        // decoder waiting for bytes that never come (Ok(None)), or read as
        // oversized; what must never happen is a PDU accepted.
        let accepted = matches!(Pdu::decode(&mut src, &cfg), Ok(Some(_)));
        prop_assert!(!accepted, "flip at {} bit {}", i, bit);
    }

    #[test]
    fn pdus_stream_back_to_back(pdus in vec(pdu(), 1..6)) {
        for cfg in all_configs() {
            let mut src = BytesMut::new();
            for p in &pdus {
                p.encode(&cfg, &mut src);
            }
            for p in &pdus {
                prop_assert_eq!(Pdu::decode(&mut src, &cfg), Ok(Some(p.clone())));
            }
            prop_assert!(src.is_empty());
        }
    }

    #[test]
    fn decode_bhs_of_any_48_bytes_reencodes_the_fields_it_read(raw in vec(any::<u8>(), BHS_LEN)) {
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(&raw);
        let header = Header::decode_bhs(&bhs).expect("every BHS decodes");
        let again = Header::decode_bhs(&header.encode_bhs(
            bhs::total_ahs_len(&bhs),
            bhs::data_segment_len(&bhs),
        ));
        prop_assert_eq!(again, Ok(header));
    }

    #[test]
    fn extended_cdbs_survive_the_wire(cdb in vec(any::<u8>(), 1..=260), cfg in config()) {
        let (head, ahs) = ahs::split_cdb(&cdb);
        let pdu = Pdu {
            header: Header::ScsiCommand(ScsiCommand { cdb: head, ..ScsiCommand::default() }),
            ahs,
            data: Bytes::new(),
        };
        let mut src = pdu.to_bytes(&cfg);
        let decoded = Pdu::decode(&mut src, &cfg);
        let framed = matches!(decoded, Ok(Some(_)));
        prop_assert!(framed);
        let mut full = cdb.clone();
        full.resize(cdb.len().max(16), 0);
        prop_assert_eq!(decoded.ok().flatten().map(|p| p.cdb()), Some(Ok(full)));
    }
}
