//! MessagePack to JSON and back: never a panic or an abort; what
//! transcodes is JSON, and it transcodes back to the same JSON.
#![no_main]

use busrpc_core::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let Ok(json) = Codec::MessagePack.to_json(payload) else {
        return;
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&json).expect("transcoded to JSON");
    let packed = Codec::MessagePack
        .from_json(json.to_vec())
        .expect("JSON from MessagePack packs again");
    let again = Codec::MessagePack.to_json(&packed).expect("and unpacks");
    assert_eq!(&*again, &*json, "a round trip changed it");
});
