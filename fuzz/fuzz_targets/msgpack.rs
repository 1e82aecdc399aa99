//! MessagePack to JSON and back: never a panic or an abort; what
//! transcodes is JSON, and it transcodes back to JSON of the same values.
#![no_main]

use busrpc_core::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let Ok(json) = Codec::MessagePack.decode(payload) else {
        return;
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&json).expect("transcoded to JSON");
    let packed = Codec::MessagePack
        .encode(json.to_vec())
        .expect("JSON from MessagePack packs again");
    let again = Codec::MessagePack.decode(&packed).expect("and unpacks");
    // The same values, not the same bytes: a float32 comes out first in
    // f32's shortest form (-9922124000000000.0) and, packed back as a
    // float64, in f64's (-9.922124e15), the same number.
    let value = |json: &[u8]| serde_json::from_slice::<serde_json::Value>(json).expect("JSON");
    assert_eq!(value(&again), value(&json), "a round trip changed it");
});
