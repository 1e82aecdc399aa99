//! A JSON payload through the engine: a response is valid JSON-RPC, or
//! there is none for notifications only.
#![no_main]

use std::sync::OnceLock;

use busrpc_core::fuzzing::Requests;
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static (Requests, tokio::runtime::Runtime) {
    static ENGINE: OnceLock<(Requests, tokio::runtime::Runtime)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (Requests::new(busrpc_fuzz::router(), 64), runtime)
    })
}

fuzz_target!(|payload: &[u8]| {
    let (requests, runtime) = engine();
    if let Some(response) = runtime.block_on(requests.respond(payload)) {
        busrpc_fuzz::assert_response(&response);
    }
});
