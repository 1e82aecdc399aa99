//! Raw bytes and headers into a service's queue, served by a real server
//! over the memory transport: every message is settled, every reply is
//! JSON-RPC, and no handler panics.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use busrpc_core::memory::MemoryTransport;
use busrpc_core::{header, Codec, Inbox, Message, Server, ServerHandle, Transport};
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;

struct Served {
    runtime: tokio::runtime::Runtime,
    transport: Arc<MemoryTransport>,
    server: ServerHandle,
    inbox: Mutex<Inbox>,
    address: String,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let transport = Arc::new(MemoryTransport::new());
        let (server, inbox) = runtime.block_on(async {
            let server = Server::new(transport.clone(), "fuzz", busrpc_fuzz::router())
                .start()
                .await
                .expect("the server starts");
            (server, transport.inbox().await.expect("an inbox"))
        });
        let address = transport.service_address("fuzz");
        Served {
            runtime,
            transport,
            server,
            inbox: Mutex::new(inbox),
            address,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let s = served();
    let mut inbox = s.inbox.lock().unwrap();
    let mut message = Message::new(payload.to_vec());
    if selector & 1 == 1 {
        message = message.with_header(header::CONTENT_TYPE, "application/msgpack");
    }
    if selector & 2 == 2 {
        message = message.with_header(header::REPLY_TO, inbox.address().to_owned());
    }
    if selector & 4 == 4 {
        message = message.with_header(header::DEADLINE, "99999999999999");
    }
    s.runtime.block_on(async {
        let settled = s.server.stats().acked + 1;
        s.transport
            .publish(&s.address, message)
            .await
            .expect("published");
        // Nothing the handlers do waits: a message is settled within a few
        // turns of the runtime, or never.
        for _ in 0..10_000 {
            if s.server.stats().acked >= settled {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            s.server.stats().acked >= settled,
            "a message was not settled: {:?}",
            s.server.stats()
        );
        while let Some(Some(reply)) = inbox.next().now_or_never() {
            let reply = reply.expect("no inbox error");
            let codec = Codec::from_content_type(reply.headers.get(header::CONTENT_TYPE))
                .expect("a known content type");
            let json = codec.decode(&reply.payload).expect("a reply decodes");
            busrpc_fuzz::assert_response(&json);
        }
        assert_eq!(s.server.stats().panics, 0);
    });
});
