//! `busrpc bench`: for each broker, in one run, the broker's raw round trip
//! without busrpc and the busrpc call round trip, with the same settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use busrpc::{
    Client, ClientConfig, Router, RpcError, Server, ServerConfig, Transport, TransportError,
};
use busrpc_conformance::measure::{under_load, Figures, TransportPingPong};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::Failure;

/// How every broker is measured.
pub(crate) struct Settings {
    pub(crate) calls: u64,
    pub(crate) concurrency: u64,
    pub(crate) payload: usize,
}

/// One side's measurement.
pub(crate) struct Side {
    latencies: Histogram<u64>,
    figures: Figures,
}

/// One broker's measurements.
pub(crate) struct Outcome {
    broker: String,
    raw: Side,
    busrpc: Side,
}

/// A raw ping-pong on whichever broker the URL names.
enum Raw {
    Memory(TransportPingPong),
    #[cfg(feature = "redis")]
    Redis(Box<busrpc::redis::raw::PingPong>),
    #[cfg(feature = "kafka")]
    Kafka(Box<busrpc::kafka::raw::PingPong>),
}

impl Raw {
    async fn start(url: &str, tag: &str) -> Result<Self, TransportError> {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            #[cfg(feature = "redis")]
            Some("redis" | "rediss") => {
                // The redis crate takes the URL without busrpc's options.
                let plain = url.split('?').next().unwrap_or(url);
                Ok(Raw::Redis(Box::new(
                    busrpc::redis::raw::PingPong::start(plain, tag).await?,
                )))
            }
            #[cfg(feature = "kafka")]
            Some("kafka" | "kafka-mock") => Ok(Raw::Kafka(Box::new(
                busrpc::kafka::raw::PingPong::start(url, tag).await?,
            ))),
            Some("memory") => {
                let transport = busrpc::connect(url).await?;
                Ok(Raw::Memory(
                    TransportPingPong::start(transport, &format!("raw-{tag}")).await?,
                ))
            }
            _ => Err(busrpc::connect(url)
                .await
                .err()
                .unwrap_or(TransportError::Closed)),
        }
    }

    async fn ping(&self, payload: &[u8]) -> Result<(), TransportError> {
        match self {
            Raw::Memory(raw) => raw.ping(payload).await,
            #[cfg(feature = "redis")]
            Raw::Redis(raw) => raw.ping(payload).await,
            #[cfg(feature = "kafka")]
            Raw::Kafka(raw) => raw.ping(payload).await,
        }
    }
}

fn progress(bar: &ProgressBar) -> impl Fn() + Send + Sync + 'static {
    let bar = bar.clone();
    move || bar.inc(1)
}

fn bar(len: u64, what: String) -> ProgressBar {
    // indicatif draws on stderr only when it is a terminal.
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:38} {bar:30} {pos}/{len} {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what);
    bar
}

/// Measures one broker.
pub(crate) async fn measure(url: &str, settings: &Settings) -> Result<Outcome, Failure> {
    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        busrpc::transport::unique_id()
    );
    let raw = Arc::new(Raw::start(url, &tag).await.map_err(|e| Failure {
        code: 3,
        message: format!("cannot use broker {url}: {e}"),
    })?);
    let transport: Arc<dyn Transport> = busrpc::connect(url).await?;
    let router = Router::new().method("echo", |(value,): (Value,)| async move {
        Ok::<_, RpcError>(value)
    });
    let service = tag.clone();
    let server = Server::new(transport, &service, router)
        .with_config(
            ServerConfig::default().concurrency(
                usize::try_from(settings.concurrency)
                    .unwrap_or(usize::MAX)
                    .max(1)
                    * 2,
            ),
        )
        .start()
        .await?;
    let client_transport = busrpc::connect(url).await?;
    let client = Arc::new(
        Client::connect_with(
            client_transport,
            ClientConfig::default().timeout(Duration::from_secs(60)),
        )
        .await?,
    );
    let payload = Arc::new("x".repeat(settings.payload));

    // Warm both sides up (a Kafka group joins, topics become known).
    raw.ping(payload.as_bytes()).await?;
    let echoed: String = client.call(&service, "echo", (payload.as_str(),)).await?;
    if echoed != *payload {
        return Err(Failure {
            code: 5,
            message: "the echo differs from the request".into(),
        });
    }

    let raw_bar = bar(settings.calls, format!("{url} raw"));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (latencies, per_second) = under_load(
        settings.calls,
        settings.concurrency,
        |_| {
            let (raw, payload, failures) = (raw.clone(), payload.clone(), failures.clone());
            move |_| {
                let (raw, payload, failures) = (raw.clone(), payload.clone(), failures.clone());
                async move {
                    if raw.ping(payload.as_bytes()).await.is_err() {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        },
        progress(&raw_bar),
    )
    .await;
    raw_bar.finish_and_clear();
    let raw_side = Side {
        figures: Figures::new(&latencies, per_second),
        latencies,
    };

    let rpc_bar = bar(settings.calls, format!("{url} busrpc"));
    let (latencies, per_second) = under_load(
        settings.calls,
        settings.concurrency,
        |_| {
            let (client, service, payload, failures) = (
                client.clone(),
                service.clone(),
                payload.clone(),
                failures.clone(),
            );
            move |_| {
                let (client, service, payload, failures) = (
                    client.clone(),
                    service.clone(),
                    payload.clone(),
                    failures.clone(),
                );
                async move {
                    if client
                        .call::<String>(&service, "echo", (payload.as_str(),))
                        .await
                        .is_err()
                    {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        },
        progress(&rpc_bar),
    )
    .await;
    rpc_bar.finish_and_clear();
    let busrpc_side = Side {
        figures: Figures::new(&latencies, per_second),
        latencies,
    };
    server.shutdown().await;
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(Failure {
            code: 5,
            message: format!("{url}: {failed} round trips failed; no figures"),
        });
    }
    Ok(Outcome {
        broker: url.to_owned(),
        raw: raw_side,
        busrpc: busrpc_side,
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The results as a table.
pub(crate) fn table(outcomes: &[Outcome], settings: &Settings) -> String {
    let mut out = format!(
        "{} calls per side, {} in flight, {}-byte payload\n{:<44} {:<10} {:>10} {:>10} {:>11} {:>10}\n",
        settings.calls, settings.concurrency, settings.payload, "broker", "", "p50 (us)", "p99 (us)", "p99.9 (us)", "calls/s"
    );
    for o in outcomes {
        for (side, f) in [("raw", &o.raw.figures), ("busrpc", &o.busrpc.figures)] {
            out += &format!(
                "{:<44} {side:<10} {:>10.1} {:>10.1} {:>11.1} {:>10.0}\n",
                o.broker,
                us(f.p50),
                us(f.p99),
                us(f.p999),
                f.per_second
            );
        }
        let r = ratio(o);
        out += &format!(
            "{:<44} {:<10} {:>9.2}x {:>9.2}x {:>10.2}x {:>9.2}x\n",
            o.broker, "busrpc/raw", r[0], r[1], r[2], r[3]
        );
    }
    out
}

/// busrpc/raw for p50, p99, p99.9 and throughput.
fn ratio(o: &Outcome) -> [f64; 4] {
    let (raw, rpc) = (&o.raw.figures, &o.busrpc.figures);
    [
        us(rpc.p50) / us(raw.p50),
        us(rpc.p99) / us(raw.p99),
        us(rpc.p999) / us(raw.p999),
        rpc.per_second / raw.per_second,
    ]
}

/// The results as JSON.
pub(crate) fn to_json(outcomes: &[Outcome], settings: &Settings) -> Value {
    let side = |f: &Figures| json!({"p50_us": us(f.p50), "p99_us": us(f.p99), "p999_us": us(f.p999), "calls_per_s": f.per_second});
    json!({
        "settings": {"calls": settings.calls, "concurrency": settings.concurrency, "payload_bytes": settings.payload},
        "brokers": outcomes.iter().map(|o| {
            let r = ratio(o);
            json!({
                "broker": o.broker,
                "raw": side(&o.raw.figures),
                "busrpc": side(&o.busrpc.figures),
                "ratio": {"p50": r[0], "p99": r[1], "p999": r[2], "throughput": r[3]},
            })
        }).collect::<Vec<_>>(),
    })
}

/// Latency by percentile, per broker and side, as an SVG picture.
pub(crate) fn plot(outcomes: &[Outcome], path: &Path) -> Result<(), Failure> {
    use plotters::prelude::*;
    let fail = |e: String| Failure {
        code: 5,
        message: format!("plotting to {}: {e}", path.display()),
    };
    // x is the percentile on a "nines" scale: 0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%.
    let curve = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        (0..=300)
            .map(|i| {
                let x = f64::from(i) / 100.0;
                (
                    x,
                    h.value_at_quantile(1.0 - 10f64.powf(-x)).max(1) as f64 / 1000.0,
                )
            })
            .collect()
    };
    let curves: Vec<(String, Vec<(f64, f64)>)> = outcomes
        .iter()
        .flat_map(|o| {
            [
                (format!("{} raw", o.broker), curve(&o.raw.latencies)),
                (format!("{} busrpc", o.broker), curve(&o.busrpc.latencies)),
            ]
        })
        .collect();
    let all = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
    let (low, high) = all.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "busrpc bench: round-trip latency by percentile",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..3f64, (low * 0.8..high * 1.25).log_scale())
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(4)
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| format!("{}%", ((1.0 - 10f64.powf(-x)) * 1000.0).round() / 10.0))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (index, (name, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(index / 2).mix(if index % 2 == 0 { 0.45 } else { 1.0 });
        let width = if index % 2 == 0 { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(width)))
            .map_err(|e| fail(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}
