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

#[path = "common/logging.rs"]
mod logging;

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
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // Flushed at once: a script waits for this line.
    println!("listening on http://{}", listener.local_addr()?);
    let calls = serve(&args.broker, listener, shutdown_signal()).await?;
    println!("drained: {calls} calls answered");
    Ok(())
}

/// Serves the web routes on `listener` and the busrpc service on `broker`
/// until `shutdown`, then drains both; returns how many calls the busrpc
/// server answered.
async fn serve(
    broker: &str,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<u64, Box<dyn std::error::Error>> {
    let transport = busrpc::connect(broker).await?;
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

    let web = axum::serve(listener, routes).with_graceful_shutdown(shutdown);
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
    Ok(server.stats().calls)
}

fn main() -> ExitCode {
    logging::init();
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

/// Run by `cargo test --all-targets` (which builds examples with the test
/// harness): the probes, a call, then SIGTERM with a call in flight, which
/// must be answered before the service finishes draining.
#[cfg(all(test, unix))]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// GET `path`: the status code and the body.
    fn get(address: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(address).expect("the web server accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("a response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_its_probes_and_drains_on_sigterm() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // The real signal handler: axum polls it (installing it) as it
        // starts serving, before the first request below is answered.
        let signal = super::shutdown_signal();
        let serving = tokio::spawn(async move {
            super::serve("memory://", listener, signal)
                .await
                .map_err(|e| e.to_string())
        });
        let on = |path: &'static str| {
            let address = address.clone();
            tokio::task::spawn_blocking(move || get(&address, path))
        };
        assert_eq!(on("/healthz").await.unwrap(), (200, "ok".into()));
        assert_eq!(on("/readyz").await.unwrap(), (200, "ready".into()));
        assert_eq!(on("/echo/hello").await.unwrap(), (200, "RPC hello!".into()));

        let slow = on("/slow/1500");
        // Until the busrpc server holds it: it counts requests as it takes them.
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, stats) = on("/stats").await.unwrap();
            assert_eq!(code, 200);
            let stats: serde_json::Value = serde_json::from_str(&stats).expect("JSON");
            if stats["server"]["received"] == 2 {
                assert_eq!(
                    stats["server"]["calls"], 1,
                    "the slow call is still running"
                );
                break;
            }
            assert!(
                Instant::now() < give_up,
                "the slow call never arrived: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = std::process::id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());

        assert_eq!(
            slow.await.unwrap(),
            (200, "slept 1500 ms".into()),
            "the call in flight was answered"
        );
        let calls = tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("drained")
            .unwrap()
            .expect("served without an error");
        assert_eq!(calls, 2);
        // And it no longer listens.
        assert!(TcpStream::connect(&address).is_err());
    }
}
