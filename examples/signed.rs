//! Signed messages: a server and a client sharing a key answer each other;
//! an unsigned call and a forged reply are dropped, unseen, and counted.
//!
//! ```text
//! cargo run --features auth --example signed                  # in-process broker
//! cargo run --features auth --example signed -- --broker URL  # any broker busrpc speaks
//! ```
//!
//! The key would come from a secret store; `BUSRPC_KEYS` gives the CLI the
//! same (`busrpc call` signs with it).

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use busrpc::auth::{Authenticated, Keys};
use busrpc::{Client, ClientConfig, Error, Message, Router, RpcError, Server};

fn main() -> ExitCode {
    common::run(run)
}

async fn run(url: String) -> Result<(), Box<dyn std::error::Error>> {
    // 32 random bytes in real life; its id travels with each signature.
    let keys = Keys::new("2026-12", b"an example key, 32 bytes long!!!")?;
    let broker = busrpc::connect(&url).await?;
    let signed = Authenticated::new(broker.clone(), keys);

    let router = Router::new().method("echo", |(text,): (String,)| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, RpcError>(format!("RPC {text}!"))
    });
    let server_transport = Authenticated::new(broker.clone(), signed.keys().clone());
    let server = Server::new(Arc::new(server_transport.clone()), "signed", router)
        .start()
        .await?;
    println!("serving service \"signed\" on {url}, signing with key 2026-12");

    let client = Client::connect(Arc::new(signed.clone())).await?;
    let reply: String = client.call("signed", "echo", ("hello",)).await?;
    println!("signed call: {reply}");

    // Someone who can write to the broker, but has no key.
    let stranger = Client::connect_with(
        broker.clone(),
        ClientConfig::default().timeout(Duration::from_secs(1)),
    )
    .await?;
    match stranger.call::<String>("signed", "echo", ("forged",)).await {
        Err(Error::Timeout(after)) => println!("unsigned call: no reply ({after:?})"),
        other => return Err(format!("an unsigned call got {other:?}").into()),
    }
    // On a slow broker the request may reach the server after the caller
    // gave up: wait for the count rather than read it once.
    let counted = async {
        while server_transport.stats().requests_rejected == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted).await?;
    println!(
        "the server rejected {} request(s)",
        server_transport.stats().requests_rejected
    );

    // A forged reply for the client's next call, sent while it waits.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call::<String>("signed", "echo", ("again",)).await }
    });
    let forged = Message::new(r#"{"jsonrpc":"2.0","result":"forged","id":2}"#);
    broker.publish(client.inbox_address(), forged).await?;
    println!("the waiting call got: {}", call.await??);
    println!(
        "the client rejected {} reply(ies)",
        signed.stats().replies_rejected
    );

    stranger.close().await;
    client.close().await;
    server.shutdown().await;
    Ok(())
}
