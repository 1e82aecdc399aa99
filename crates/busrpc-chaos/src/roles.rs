//! The processes a scenario runs: servers and clients of one service, each
//! this binary started again in a role. They speak to the harness on stdout,
//! one line per event.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busrpc::{Client, ClientConfig, Error, Router, RpcError, Server, ServerConfig};

/// Unix time in milliseconds: the harness lines up events of many processes.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `server URL SERVICE`: serves `work(client, seq, ms)`, which sleeps `ms`
/// and answers `[client, seq]`, printing `ran CLIENT:SEQ` as it finishes
/// (before the reply: a server killed between the two runs it again). Stops
/// gracefully on SIGTERM and prints `stopped`.
pub(crate) async fn server(url: &str, service: &str) -> Result<(), Error> {
    let transport = busrpc::connect(url).await?;
    let router = Router::new().method("work", |(client, seq, ms): (u32, u64, u64)| async move {
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        println!("ran {client}:{seq}");
        Ok::<_, RpcError>((client, seq))
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    let config = ServerConfig::default().shutdown_grace(Duration::from_secs(10));
    let server = Server::new(transport, service, router)
        .with_config(config)
        .start()
        .await?;
    println!("ready");
    terminate.recv().await;
    server.shutdown().await;
    println!("stopped");
    Ok(())
}

/// What a client is asked to do.
pub(crate) struct Load {
    pub(crate) id: u32,
    pub(crate) calls: u64,
    pub(crate) per_second: u64,
    pub(crate) timeout: Duration,
    pub(crate) work_ms: u64,
}

/// `client URL SERVICE ID CALLS PER_SECOND TIMEOUT_MS WORK_MS`: makes
/// `CALLS` calls, paced at `PER_SECOND`, each with a payload of its own, and
/// prints per call `ok SEQ SENT DONE`, `lost SEQ SENT REASON` or
/// `misrouted SEQ GOT`, then `dropped N` (replies nobody waited for: late
/// or duplicate) and `done`.
pub(crate) async fn client(url: &str, service: &str, load: Load) -> Result<(), Error> {
    let transport = busrpc::connect(url).await?;
    // Calls made while every server is dead wait in the queue for the next
    // one: what the harness proves is that nothing the broker kept is lost
    // (by default such a call would fail at once with NoServers, unsent).
    let config = ClientConfig::default()
        .timeout(load.timeout)
        .max_in_flight(10_000)
        .wait_for_servers();
    let client = Client::connect_with(transport, config).await?;
    println!("ready");
    let gap = Duration::from_micros(1_000_000 / load.per_second.max(1));
    let mut ticks = tokio::time::interval(gap);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    let service: Arc<str> = service.into();
    for seq in 0..load.calls {
        ticks.tick().await;
        let (client, service) = (client.clone(), service.clone());
        let (id, work_ms) = (load.id, load.work_ms);
        calls.spawn(async move {
            let sent = now_ms();
            let outcome = client
                .call::<(u32, u64)>(&service, "work", (id, seq, work_ms))
                .await;
            match outcome {
                Ok(got) if got == (id, seq) => format!("ok {seq} {sent} {}", now_ms()),
                Ok((c, s)) => format!("misrouted {seq} {c}:{s}"),
                Err(e) => format!("lost {seq} {sent} {}", e.to_string().replace('\n', " ")),
            }
        });
    }
    let mut lines = Vec::with_capacity(usize::try_from(load.calls).unwrap_or(0));
    while let Some(line) = calls.join_next().await {
        lines.push(line.unwrap_or_else(|e| format!("lost ? 0 the call's task failed: {e}")));
    }
    // Replies still on their way for calls that gave up are counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("{}", lines.join("\n"));
    println!("dropped {}", client.stats().replies_dropped);
    client.close().await;
    println!("done");
    Ok(())
}

/// `idle-client URL`: connects, prints `inbox ADDRESS` and `ready`, and
/// waits to be killed.
pub(crate) async fn idle_client(url: &str) -> Result<(), Error> {
    let transport = busrpc::connect(url).await?;
    let client = Client::connect(transport).await?;
    println!("inbox {}", client.inbox_address());
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}
