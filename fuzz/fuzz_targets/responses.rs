//! A reply payload as a client reads it, in either encoding: never a
//! panic, and never more calls answered than were waiting.
#![no_main]

use busrpc_core::fuzzing::deliver_replies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let content_type = (selector & 1 == 1).then_some("application/msgpack");
    let (answered, _dropped) = deliver_replies(payload, content_type, 4);
    assert!(answered <= 4);
});
