//! A busrpc server and client inside an axum web service, as a long-lived
//! service runs them: `/healthz` and `/readyz` answer from the server's
//! handle, `/stats` gives its counters as JSON, `/echo/{text}` and
//! `/slow/{ms}` call the service through the broker, and SIGTERM or Ctrl-C drains everything before the process exits.
//!
//! ```text
//! cargo run --example axum_service                          # in-process broker
//! cargo run --example axum_service -- --broker URL --listen 127.0.0.1:8080
//! curl localhost:8080/readyz; curl localhost:8080/echo/hello
//! ```
//!
//! On SIGTERM: the web server stops taking connections and finishes the
//! requests it has (each waiting for its busrpc call), then the client
//! closes and the busrpc server finishes what it holds, commits, and leaves
//! its group. Only then does the process exit, 0; it exits 1 if the busrpc
//! server stops by itself (the broker refusing it).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router as Routes;
use busrpc::{Client, Router, RpcError, Server, ServerHandle, ServerStatus};

const SERVICE: &str = "web-demo";

/// What the web routes share: the server's handle (for the probes) and the
/// client (for the calls).
#[derive(Clone)]
struct App {
    server: Arc<ServerHandle>,
    client: Client,
}

/// Liveness: 200 while the server serves (or drains), 503 once it has
/// stopped; a failed server says why.
async fn healthz(State(app): State<App>) -> (StatusCode, String) {
    match app.server.status() {
        ServerStatus::Serving | ServerStatus::Stopping => (StatusCode::OK, "ok".into()),
        ServerStatus::Failed(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {e}")),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "stopped".into()),
    }
}

/// Readiness: 200 when the server takes requests, 503 with the reason when not.
async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    let readiness = app.server.readiness();
    let code = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, readiness.to_string())
}

/// The server's and the client's counters, as JSON.
async fn stats(State(app): State<App>) -> String {
    let stats = serde_json::json!({
        "server": app.server.stats(),
        "client": app.client.stats(),
    });
    stats.to_string()
}

async fn echo(State(app): State<App>, Path(text): Path<String>) -> (StatusCode, String) {
    answer(app.client.call(SERVICE, "echo", (text,)).await)
}

async fn slow(State(app): State<App>, Path(ms): Path<u64>) -> (StatusCode, String) {
    let client = app
        .client
        .with_timeout(Duration::from_millis(ms) + Duration::from_secs(10));
    answer(client.call(SERVICE, "sleep", (ms,)).await)
}

fn answer(reply: Result<String, busrpc::Error>) -> (StatusCode, String) {
    match reply {
        Ok(text) => (StatusCode::OK, text),
        Err(e) if e.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn service() -> Router {
    Router::new()
        .method("echo", |(text,): (String,)| async move {
            Ok::<_, RpcError>(format!("RPC {text}!"))
        })
        .method("sleep", |(ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RpcError>(format!("slept {ms} ms"))
        })
}

/// Resolves at SIGTERM (what an orchestrator sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    println!("signal received; draining");
}

struct Args {
    broker: String,
    listen: String,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        broker: "memory://".into(),
        listen: "127.0.0.1:8080".into(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => parsed.broker = args.next().ok_or("--broker needs a URL")?,
            "--listen" => parsed.listen = args.next().ok_or("--listen needs an address")?,
            _ => {
                return Err(format!(
                    "unknown argument {arg:?}; usage: [--broker URL] [--listen HOST:PORT]"
                ))
            }
        }
    }
    Ok(parsed)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(&args.broker).await?;
    let server = Arc::new(
        Server::new(transport.clone(), SERVICE, service())
            .start()
            .await?,
    );
    let client = Client::connect(transport).await?;
    let app = App {
        server: server.clone(),
        client: client.clone(),
    };
    let routes = Routes::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/echo/{text}", get(echo))
        .route("/slow/{ms}", get(slow))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // Flushed at once: a test or a script waits for this line.
    println!("listening on http://{}", listener.local_addr()?);

    let web = axum::serve(listener, routes).with_graceful_shutdown(shutdown_signal());
    // The busrpc server stopping by itself (the broker refused it) ends the
    // process too, with its error: better than a web service whose calls
    // all time out.
    let failed = async {
        match server.stopped().await {
            Err(e) => e,
            Ok(()) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = web => served?,
        e = failed => return Err(format!("the busrpc server stopped: {e}").into()),
    }
    // The web requests are finished; now the broker side, in that order:
    // nothing can call any more, and the server answers what it holds.
    client.close().await;
    server.shutdown().await;
    println!("drained: {} calls answered", server.stats().calls);
    Ok(())
}

fn main() -> ExitCode {
    let result = args().map_err(Into::into).and_then(|args| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(run(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)] // an example reports its failure where errors go
            {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
