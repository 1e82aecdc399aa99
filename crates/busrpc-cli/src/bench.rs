//! `busrpc bench`: for each broker, in one run, the broker's raw round trip
//! without busrpc and the busrpc call round trip, with the same settings.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc::{
    Client, ClientConfig, Router, RpcError, Server, ServerConfig, Transport, TransportError,
};
use busrpc_bench::measure::{under_load, Figures};
use busrpc_bench::ping::PING_TIMEOUT;
use busrpc_bench::{Baseline, TransportPingPong};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::Failure;

/// How every broker is measured.
pub(crate) struct Settings {
    pub(crate) calls: u64,
    pub(crate) concurrency: u64,
    pub(crate) payload: usize,
    /// How long reaching a broker may take before it counts as unreachable.
    pub(crate) connect_timeout: Duration,
}

/// One side's measurement.
pub(crate) struct Side {
    latencies: Histogram<u64>,
    figures: Figures,
}

/// Both sides of one broker.
pub(crate) struct Sides {
    raw: Side,
    busrpc: Side,
}

/// One broker's measurements, or why there are none.
pub(crate) struct Outcome {
    pub(crate) broker: String,
    pub(crate) sides: Result<Sides, Failure>,
}

/// The broker being measured, for the interrupt handler to clean up after:
/// its baseline once started, its URL (with the run's prefix) from before
/// the baseline starts, which already makes keys or topics.
pub(crate) type Current = Arc<Mutex<Option<Measured>>>;

/// What [`Current`] holds.
pub(crate) enum Measured {
    /// The baseline of this URL is starting.
    Starting(String),
    /// It has started.
    Started(Arc<dyn Baseline>),
}

impl Measured {
    /// Deletes what the bench made on this broker: through the baseline,
    /// or, if it was still starting, through one started for the purpose
    /// on the same prefix (its own keys or topics go with the rest).
    pub(crate) async fn clean_up(self) -> Result<(), TransportError> {
        match self {
            Measured::Started(baseline) => baseline.clean_up().await,
            Measured::Starting(url) => baseline(&url).await?.clean_up().await,
        }
    }
}

/// The raw baseline of whichever broker the URL names.
async fn baseline(url: &str) -> Result<Arc<dyn Baseline>, TransportError> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        #[cfg(feature = "redis")]
        Some("redis" | "rediss") => Ok(Arc::new(busrpc::redis::raw::PingPong::start(url).await?)),
        #[cfg(feature = "kafka")]
        Some("kafka" | "kafka-mock") => {
            Ok(Arc::new(busrpc::kafka::raw::PingPong::start(url).await?))
        }
        Some("memory") => {
            let transport = busrpc::connect(url).await?;
            Ok(Arc::new(TransportPingPong::start(transport, "raw").await?))
        }
        // Whatever this build cannot connect to, with busrpc's own words.
        _ => Err(busrpc::connect(url)
            .await
            .err()
            .unwrap_or(TransportError::Closed)),
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

fn unreachable(shown: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 3,
        message: format!("cannot use broker {shown}: {e}"),
    }
}

/// Measures one broker, shown as `shown` and reached at `url` (on the
/// run's own prefix); deletes what it created there, however it ends.
pub(crate) async fn measure(
    shown: &str,
    url: &str,
    settings: &Settings,
    current: &Current,
) -> Outcome {
    *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Measured::Starting(url.to_owned()));
    let started = tokio::time::timeout(settings.connect_timeout, baseline(url)).await;
    let raw = match started {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => {
            let code = if matches!(e, TransportError::InvalidUrl { .. }) {
                2
            } else {
                3
            };
            current.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Outcome {
                broker: shown.to_owned(),
                sides: Err(Failure {
                    code,
                    ..unreachable(shown, e)
                }),
            };
        }
        Err(_) => {
            current.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Outcome {
                broker: shown.to_owned(),
                sides: Err(unreachable(
                    shown,
                    format!(
                        "no answer within {} (--connect-timeout)",
                        humantime::format_duration(settings.connect_timeout)
                    ),
                )),
            };
        }
    };
    *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Measured::Started(raw.clone()));
    let sides = measure_sides(shown, url, settings, &raw).await;
    let cleaned = raw.clean_up().await;
    current.lock().unwrap_or_else(|e| e.into_inner()).take();
    let sides = match (sides, cleaned) {
        (Ok(_), Err(e)) => Err(Failure {
            code: 3,
            message: format!(
                "{shown}: measured, but deleting the bench's keys or topics failed: {e}"
            ),
        }),
        (sides, _) => sides,
    };
    Outcome {
        broker: shown.to_owned(),
        sides,
    }
}

async fn measure_sides(
    shown: &str,
    url: &str,
    settings: &Settings,
    raw: &Arc<dyn Baseline>,
) -> Result<Sides, Failure> {
    let connect = |url: String| async move {
        match tokio::time::timeout(settings.connect_timeout, busrpc::connect(&url)).await {
            Ok(Ok(transport)) => Ok(transport),
            Ok(Err(e)) => Err(unreachable(shown, e)),
            Err(_) => Err(unreachable(shown, "no answer within the connect timeout")),
        }
    };
    let transport: Arc<dyn Transport> = connect(url.to_owned()).await?;
    let router = Router::new().method("echo", |(value,): (Value,)| async move {
        Ok::<_, RpcError>(value)
    });
    let service = "bench".to_owned();
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
    let client = Arc::new(
        Client::connect_with(
            connect(url.to_owned()).await?,
            ClientConfig::default().timeout(PING_TIMEOUT),
        )
        .await?,
    );
    let measured = measure_started(shown, settings, raw, &client, &service).await;
    client.close().await;
    server.shutdown().await;
    measured
}

async fn measure_started(
    shown: &str,
    settings: &Settings,
    raw: &Arc<dyn Baseline>,
    client: &Arc<Client>,
    service: &str,
) -> Result<Sides, Failure> {
    let payload = Arc::new("x".repeat(settings.payload));
    // Warm both sides up (a Kafka group joins, topics become known).
    raw.ping(payload.as_bytes()).await.map_err(|e| Failure {
        code: 5,
        message: format!("{shown}: the raw round trip failed: {e}"),
    })?;
    let echoed: String = client.call(service, "echo", (payload.as_str(),)).await?;
    if echoed != *payload {
        return Err(Failure {
            code: 5,
            message: format!("{shown}: the echo differs from the request"),
        });
    }

    let raw_bar = bar(settings.calls, format!("{shown} raw"));
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

    let rpc_bar = bar(settings.calls, format!("{shown} busrpc"));
    let service: Arc<str> = service.into();
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
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(Failure {
            code: 5,
            message: format!("{shown}: {failed} round trips failed; no figures"),
        });
    }
    Ok(Sides {
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
        let sides = match &o.sides {
            Ok(sides) => sides,
            Err(failure) => {
                out += &format!("{:<44} {:<10} {}\n", o.broker, "failed", failure.message);
                continue;
            }
        };
        for (side, f) in [
            ("raw", &sides.raw.figures),
            ("busrpc", &sides.busrpc.figures),
        ] {
            out += &format!(
                "{:<44} {side:<10} {:>10.1} {:>10.1} {:>11.1} {:>10.0}\n",
                o.broker,
                us(f.p50),
                us(f.p99),
                us(f.p999),
                f.per_second
            );
        }
        let r = ratio(sides);
        out += &format!(
            "{:<44} {:<10} {:>9.2}x {:>9.2}x {:>10.2}x {:>9.2}x\n",
            o.broker, "busrpc/raw", r[0], r[1], r[2], r[3]
        );
    }
    out
}

/// busrpc/raw for p50, p99, p99.9 and throughput.
fn ratio(sides: &Sides) -> [f64; 4] {
    let (raw, rpc) = (&sides.raw.figures, &sides.busrpc.figures);
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
        "brokers": outcomes.iter().map(|o| match &o.sides {
            Ok(sides) => {
                let r = ratio(sides);
                json!({
                    "broker": o.broker,
                    "raw": side(&sides.raw.figures),
                    "busrpc": side(&sides.busrpc.figures),
                    "ratio": {"p50": r[0], "p99": r[1], "p999": r[2], "throughput": r[3]},
                })
            }
            Err(failure) => json!({"broker": o.broker, "error": failure.message}),
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
        .filter_map(|o| Some((&o.broker, o.sides.as_ref().ok()?)))
        .flat_map(|(broker, sides)| {
            [
                (format!("{broker} raw"), curve(&sides.raw.latencies)),
                (format!("{broker} busrpc"), curve(&sides.busrpc.latencies)),
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
