//! Every SCSI-side decoder in busrig-proto on arbitrary bytes: CDBs, sense
//! data, UNMAP and MODE SELECT parameter lists, and the persistent
//! reservation formats (CDBs, PR OUT parameter lists, PR IN responses,
//! TransportIDs). None may panic, whatever the input.
#![no_main]

use busrig_proto::scsi::cdb::Cdb;
use busrig_proto::scsi::mode::{parse_mode_select, ModeParams};
use busrig_proto::scsi::pr::{
    Capabilities, FullStatus, PrInCdb, PrOutCdb, PrOutParams, ReadKeys, ReadReservation,
    RegisterAndMoveParams, TransportId,
};
use busrig_proto::scsi::provisioning::parse_unmap;
use busrig_proto::scsi::sense::Sense;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Cdb::decode(data);
    let _ = Sense::decode(data);
    let _ = parse_unmap(data);
    for ten in [false, true] {
        let _ = parse_mode_select(ten, data, &ModeParams::default(), 1 << 21, 512);
    }
    let _ = PrInCdb::decode(data);
    let _ = PrOutCdb::decode(data);
    for spec_i_pt in [false, true] {
        let _ = PrOutParams::decode(data, spec_i_pt);
    }
    let _ = RegisterAndMoveParams::decode(data);
    let _ = ReadKeys::decode(data);
    let _ = ReadReservation::decode(data);
    let _ = Capabilities::decode(data);
    let _ = FullStatus::decode(data);
    let _ = TransportId::decode(data, 0);
});
