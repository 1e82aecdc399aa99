//! An XREADGROUP reply in RESP, as a Redis server (or something posing as
//! one) could send it: its entries are read without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|resp: &[u8]| {
    if let Some(entries) = busrpc_redis::fuzzing::read_entries(resp) {
        // Touch what a server goes on to read.
        for (_, message) in entries {
            let _ = message.headers.deadline();
            let _ = message.headers.get("reply-to").map(str::len);
        }
    }
});
