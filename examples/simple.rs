//! Serve a function and call it: the `simple` example of the library busrpc
//! grew out of.
//!
//! ```text
//! cargo run --example simple                       # in-process broker
//! cargo run --example simple -- --broker URL       # any broker busrpc speaks
//! ```

mod common;

use std::process::ExitCode;

use busrpc::{Client, Router, RpcError, Server};

async fn echo((message,): (String,)) -> Result<String, RpcError> {
    Ok(format!("RPC {message}!"))
}

fn main() -> ExitCode {
    common::run(run)
}

async fn run(url: String) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(&url).await?;

    let router = Router::new().method("echo", echo);
    let server = Server::new(transport.clone(), "test", router)
        .start()
        .await?;
    println!("serving service \"test\" on {url}");

    let client = Client::connect(transport).await?;
    println!("calling test.echo(\"hello\")");
    let reply: String = client.call("test", "echo", ("hello",)).await?;
    println!("reply: {reply}");

    client.close().await;
    server.shutdown().await;
    Ok(())
}
