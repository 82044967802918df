//! Every SCSI-side decoder in busrig-proto on arbitrary bytes: CDBs, sense
//! data, UNMAP, MODE SELECT and EXTENDED COPY parameter lists, COPY STATUS, REPORT LUNS data, VPD
//! pages and INQUIRY data, and the
//! persistent reservation formats (CDBs, PR OUT parameter lists, PR IN
//! responses, TransportIDs). None may panic, whatever the input; and for
//! every type with an encoder, whatever decodes must encode to bytes that
//! decode to the same value.
#![no_main]

use busrig_proto::scsi::cdb::Cdb;
use busrig_proto::scsi::mode::{parse_mode_select, ModeParams};
use busrig_proto::scsi::pr::{
    Capabilities, FullStatus, PrInCdb, PrOutCdb, PrOutParams, ReadKeys, ReadReservation,
    RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::provisioning::parse_unmap;
use busrig_proto::scsi::report_luns::LunList;
use busrig_proto::scsi::sense::Sense;
use busrig_proto::scsi::inquiry::StandardInquiry;
use busrig_proto::scsi::vpd::Vpd;
use busrig_proto::scsi::xcopy::{CopyLimits, CopyParams, CopyStatus};
use libfuzzer_sys::fuzz_target;

/// Decode, and when that succeeds, check that encoding round-trips.
macro_rules! round_trip {
    ($decoded:expr, $redecode:expr) => {
        if let Ok(v) = $decoded {
            assert_eq!($redecode(&v), Ok(v.clone()));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    // An empty CDB decodes as Unsupported(0), which has no bytes to give back.
    if !data.is_empty() {
        round_trip!(Cdb::decode(data), |c: &Cdb| Cdb::decode(&c.encode()));
    }
    let _ = Sense::decode(data);
    let _ = StandardInquiry::decode(data);
    if let Some(&code) = data.get(1) {
        let _ = Vpd::decode(code, data);
    }
    let _ = parse_unmap(data);
    // EXTENDED COPY parameter lists under generous limits, and COPY STATUS.
    let limits = CopyLimits {
        max_cscd_descriptors: u16::MAX,
        max_segment_descriptors: u16::MAX,
        max_descriptor_list_length: u32::MAX,
        max_segment_length: u32::MAX,
        total_concurrent_copies: 1,
        held_data_limit: 0,
    };
    round_trip!(CopyParams::decode(data, &limits), |p: &CopyParams| {
        CopyParams::decode(&p.encode(), &limits)
    });
    if let Some(s) = CopyStatus::decode(data) {
        assert_eq!(CopyStatus::decode(&s.encode()), Some(s));
    }
    for ten in [false, true] {
        let _ = parse_mode_select(ten, data, &ModeParams::default(), 1 << 21, 512);
    }
    round_trip!(PrInCdb::decode(data), |c: &PrInCdb| PrInCdb::decode(&c.encode()));
    round_trip!(PrOutCdb::decode(data), |c: &PrOutCdb| PrOutCdb::decode(&c.encode()));
    for spec_i_pt in [false, true] {
        round_trip!(PrOutParams::decode(data, spec_i_pt), |p: &PrOutParams| {
            PrOutParams::decode(&p.encode(), spec_i_pt)
        });
    }
    round_trip!(
        RegisterAndMoveParams::decode(data),
        |p: &RegisterAndMoveParams| RegisterAndMoveParams::decode(&p.encode())
    );
    round_trip!(ReadKeys::decode(data), |k: &ReadKeys| ReadKeys::decode(&k.encode()));
    round_trip!(ReadReservation::decode(data), |r: &ReadReservation| {
        ReadReservation::decode(&r.encode())
    });
    round_trip!(Capabilities::decode(data), |c: &Capabilities| {
        Capabilities::decode(&c.encode())
    });
    round_trip!(FullStatus::decode(data), |s: &FullStatus| FullStatus::decode(&s.encode()));
    if let Ok((t, _)) = TransportId::decode(data, 0) {
        assert_eq!(TransportId::decode(&t.encode(), 0).map(|(back, _)| back), Ok(t));
    }
    round_trip!(LunList::decode(data), |l: &LunList| LunList::decode(&l.encode()));
});
