//! Login text on arbitrary bytes: key=value parsing, value decoders, and a
//! target-side negotiator fed the parsed keys as successive login requests
//! (the first byte picks the stage of each request). Nothing may panic; a
//! bad request must come back as an error the target turns into a login
//! status.
#![no_main]

use busrig_proto::negotiation::{Stage, TargetLimits, TargetNegotiator};
use busrig_proto::text::{decode_binary, decode_boolean, decode_number, TextPairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = TextPairs::parse_allow_repeats(data);
    let mut negotiator = TargetNegotiator::new(TargetLimits::default());
    // Requests are separated by 0xff bytes, which never occur in text keys.
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&stage, text)) = chunk.split_first() else { continue };
        let Ok(pairs) = TextPairs::parse(text) else { continue };
        for (_, value) in pairs.iter() {
            let _ = decode_number(value);
            let _ = decode_binary(value);
            let _ = decode_boolean(value);
        }
        let stage = if stage & 1 == 0 { Stage::Security } else { Stage::Operational };
        if negotiator.on_login_request(stage, &pairs).is_err() {
            break;
        }
        let _ = negotiator.ready_to_leave(stage);
    }
});
