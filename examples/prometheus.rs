//! busrpc's metrics (feature `metrics`) exported for Prometheus with
//! metrics-exporter-prometheus: a server and a client on one broker, the
//! client calling every 100 ms (one call in ten names a method the service
//! does not have, so an error code shows too), and `/metrics` on an HTTP
//! port in Prometheus' text format.
//!
//! ```text
//! cargo run --features metrics --example prometheus                 # in-process broker
//! cargo run --features metrics --example prometheus -- --broker URL --listen 127.0.0.1:9464
//! curl localhost:9464/metrics
//! ```
//!
//! Install the recorder before starting servers and clients, once per
//! process. Latencies are histograms with the buckets set below (the
//! exporter renders histograms without buckets as summaries).

#[path = "common/logging.rs"]
mod logging;

use std::process::ExitCode;
use std::time::Duration;

use axum::routing::get;
use axum::Router as Routes;
use busrpc::{Client, Router, RpcError, Server};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const SERVICE: &str = "metered";

/// Latency buckets, seconds: from a broker round trip on loopback (well
/// under a millisecond) to a call near the default 30 s timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder for the whole process.
fn install_recorder() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    busrpc::metrics::describe();
    Ok(handle)
}

fn service() -> Router {
    Router::new().method("echo", |(text,): (String,)| async move {
        Ok::<_, RpcError>(format!("RPC {text}!"))
    })
}

/// Serves the service on `broker` and `/metrics` on `listener`, and calls
/// the service every `every` until `shutdown`.
async fn serve(
    broker: &str,
    metrics: PrometheusHandle,
    listener: tokio::net::TcpListener,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(broker).await?;
    let server = Server::new(transport.clone(), SERVICE, service())
        .start()
        .await?;
    let client = Client::connect(transport).await?;
    let load = tokio::spawn({
        let client = client.clone();
        async move {
            let mut tick = tokio::time::interval(every);
            for n in 0u64.. {
                tick.tick().await;
                let method = if n % 10 == 9 {
                    "no-such-method"
                } else {
                    "echo"
                };
                // Failures are what the metrics are for: counted, not fatal.
                let _ = client
                    .call::<String>(SERVICE, method, (n.to_string(),))
                    .await;
            }
        }
    });
    // Render on each scrape; the recorder also needs its upkeep now and
    // then (it drains histograms into their buckets), which rendering does.
    let routes = Routes::new().route("/metrics", get(move || async move { metrics.render() }));
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await?;
    load.abort();
    client.close().await;
    server.shutdown().await;
    Ok(())
}

fn listen_address() -> Result<(String, String), String> {
    let mut args = std::env::args().skip(1);
    let (mut broker, mut listen) = ("memory://".to_owned(), "127.0.0.1:9464".to_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => broker = args.next().ok_or("--broker needs a URL")?,
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            _ => {
                return Err(format!(
                    "unknown argument {arg:?}; usage: [--broker URL] [--listen HOST:PORT]"
                ))
            }
        }
    }
    Ok((broker, listen))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (broker, listen) = listen_address()?;
    let metrics = install_recorder()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("metrics on http://{}/metrics", listener.local_addr()?);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(
        &broker,
        metrics,
        listener,
        Duration::from_millis(100),
        ctrl_c,
    )
    .await
}

fn main() -> ExitCode {
    logging::init();
    let result = tokio::runtime::Runtime::new()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(run()));
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

/// Run by `cargo test --all-targets --all-features`: scrapes `/metrics`
/// twice and finds the counters moving between the scrapes.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    fn scrape(address: &str) -> String {
        let mut stream = TcpStream::connect(address).expect("the exporter accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("a response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The value of the sample whose name and labels start `series`
    /// (`name{label="value",...`), 0 if absent.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn its_counters_move_between_scrapes() {
        let metrics = super::install_recorder().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            super::serve(
                "memory://",
                metrics,
                listener,
                Duration::from_millis(5),
                shutdown,
            )
            .await
            .map_err(|e| e.to_string())
        });
        let scrape_now = || {
            let address = address.clone();
            async move {
                tokio::task::spawn_blocking(move || scrape(&address))
                    .await
                    .unwrap()
            }
        };
        let ok = r#"busrpc_server_requests_total{service="metered",method="echo",kind="call",code="ok"}"#;
        let unknown = r#"busrpc_server_requests_total{service="metered",method="(unknown)",kind="call",code="-32601"}"#;
        let client_ok =
            r#"busrpc_client_calls_total{service="metered",method="echo",kind="call",code="ok"}"#;
        let latency = r#"busrpc_client_call_duration_seconds_bucket{service="metered",method="echo",le="+Inf"}"#;
        let give_up = Instant::now() + Duration::from_secs(30);
        let first = loop {
            let text = scrape_now().await;
            if value(&text, unknown) >= 1.0 {
                break text;
            }
            assert!(Instant::now() < give_up, "no error counted yet:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(value(&first, ok) >= 9.0, "{first}");
        assert!(value(&first, latency) >= 9.0, "{first}");
        assert!(first.contains("# TYPE busrpc_server_request_duration_seconds histogram"));
        assert!(first.contains("# HELP busrpc_server_requests_total Calls and notifications"));
        let second = loop {
            let text = scrape_now().await;
            if value(&text, ok) > value(&first, ok)
                && value(&text, client_ok) > value(&first, client_ok)
            {
                break text;
            }
            assert!(
                Instant::now() < give_up,
                "the counters did not move:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            value(&second, "busrpc_server_messages_received_total")
                > value(&first, "busrpc_server_messages_received_total")
        );
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
    }
}
