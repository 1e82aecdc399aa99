//! busrpc's chaos harness: a service's servers and clients as separate
//! processes on a real broker (a private redis-server, librdkafka's mock
//! cluster, a private Tansu), a steady load of calls with payloads of their
//! own, one fault per scenario, and what came of it counted: calls lost,
//! duplicate replies, misrouted replies, handler runs beyond one, time to
//! recovery, peak memory of every process.
//!
//! ```text
//! busrpc-chaos run [--long] [--defaults] [--json FILE] [--scenario NAME]... [BROKER...]
//! ```
//!
//! BROKER is `redis`, `kafka-mock` or `tansu` (default: all three); the
//! scenarios are kill-one, kill-all-then-fresh, sigterm-one, broker-restart,
//! broker-lost (a restart that keeps nothing; not on the mock cluster),
//! broker-away, kill-client, sustained, and cuts of the network through a
//! proxy in front of the broker (every connection closed, new ones
//! refused): cut-0.5s, cut-5s, cut-30s (`--long` only), and on Redis
//! cut-servers-5s and cut-clients-5s (not on the mock cluster, whose
//! brokers advertise their own ports) (default: all). The exit code is 1
//! if any scenario broke a promise: a call misrouted; a call lost (except
//! on Kafka when the broker restarts or goes away, and in broker-lost before
//! the service serves again, which it must); for sigterm-one and
//! sustained, a duplicate reply or a second run (except on Tansu). A cut's
//! bound on how long calls in flight wait (its length and 1 s on Redis,
//! 3 s on Kafka) is reported beside what was measured; `--long` also
//! checks it (the short run runs on shared machines, where timings are
//! not held to).
//! `--defaults` runs with every setting at its default (no tuning in the
//! broker URLs, the clients' default 30 s timeout), as a new user's
//! service would; by default the URLs carry options that keep recovery
//! within a short scenario. Set
//! `BUSRPC_CHAOS_LOG` to a tracing filter to see what every process logs,
//! `BUSRPC_CHAOS_TIMELINE=1` for answers per 100 ms around each fault,
//! `BUSRPC_CHAOS_OPTIONS` to URL options added to every broker URL (a
//! setting to try, librdkafka's `debug=...`).
//! scripts/chaos.sh runs it; docs/RELIABILITY.md has the figures.

mod brokers;
mod harness;
mod proxy;
mod roles;

use std::process::ExitCode;
use std::time::Duration;

use brokers::Kind;
use harness::{Fault, Size};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn main() -> ExitCode {
    // BUSRPC_CHAOS_LOG=busrpc_redis=debug: what every process logs, on stderr.
    if let Ok(filter) = std::env::var("BUSRPC_CHAOS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match words.as_slice() {
        ["server", url, service] => runtime().block_on(roles::server(url, service)).map_err(|e| e.to_string()),
        ["client", url, service, id, calls, per_second, timeout_ms, work_ms] => {
            let number = |w: &str| w.parse::<u64>().map_err(|e| format!("{w}: {e}"));
            let load = (|| {
                Ok::<_, String>(roles::Load {
                    id: id.parse().map_err(|e| format!("{id}: {e}"))?,
                    calls: number(calls)?,
                    per_second: number(per_second)?,
                    timeout: Duration::from_millis(number(timeout_ms)?),
                    work_ms: number(work_ms)?,
                })
            })();
            load.and_then(|load| runtime().block_on(roles::client(url, service, load)).map_err(|e| e.to_string()))
        }
        ["idle-client", url] => runtime().block_on(roles::idle_client(url)).map_err(|e| e.to_string()),
        ["run", rest @ ..] => return run(rest),
        _ => Err("usage: busrpc-chaos run [--long] [--defaults] [--json FILE] [--scenario NAME]... [redis|kafka-mock|tansu]...".to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[&str]) -> ExitCode {
    let mut long = false;
    let mut defaults = false;
    let mut json = None;
    let mut faults = Vec::new();
    let mut kinds = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--long" => long = true,
            "--defaults" => defaults = true,
            "--json" => json = args.next().map(|s| s.to_string()),
            "--scenario" => match args.next().and_then(|s| Fault::parse(s)) {
                Some(fault) => faults.push(fault),
                None => {
                    println!(
                        "--scenario takes one of: {}",
                        harness::ALL.map(Fault::name).join(", ")
                    );
                    return ExitCode::from(2);
                }
            },
            other => match Kind::parse(other) {
                Some(kind) => kinds.push(kind),
                None => {
                    println!("unknown broker {other:?}: redis, kafka-mock or tansu");
                    return ExitCode::from(2);
                }
            },
        }
    }
    if faults.is_empty() {
        faults = harness::ALL
            .into_iter()
            .filter(|f| long || !f.long_only())
            .collect();
    }
    if kinds.is_empty() {
        kinds = vec![Kind::Redis, Kind::KafkaMock, Kind::Tansu];
    }
    let dir = std::env::temp_dir().join(format!("busrpc-chaos-{}", std::process::id()));
    let runtime = runtime();
    let mut reports = Vec::new();
    let mut failed = false;
    if defaults {
        println!("every setting at its default: untuned broker URLs, the clients' default timeout");
    }
    println!(
        "{:<11} {:<20} {:>6} {:>6} {:>5} {:>5} {:>9} {:>6} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8}  broken",
        "broker",
        "scenario",
        "sent",
        "ok",
        "lost",
        "dup",
        "misrouted",
        "reruns",
        "stranded",
        "bound",
        "gap",
        "recovered",
        "inbox",
        "peak MB"
    );
    for kind in &kinds {
        for fault in &faults {
            if let Some(why) = fault.not_on(*kind) {
                println!("{:<11} {:<20} not made: {why}", kind.name(), fault.name());
                continue;
            }
            let size = Size::new(long, *fault);
            let dir = dir.join(kind.name());
            let outcome = runtime.block_on(harness::run(*kind, *fault, size, defaults, &dir));
            match outcome {
                Ok(report) => {
                    let ms = |v: Option<u64>| {
                        v.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
                    };
                    println!(
                        "{:<11} {:<20} {:>6} {:>6} {:>5} {:>5} {:>9} {:>6} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8.1}  {}",
                        report.broker,
                        report.scenario,
                        report.sent,
                        report.answered,
                        report.lost,
                        report.duplicates,
                        report.misrouted,
                        report.executions_beyond_one,
                        ms(report.stranded_ms),
                        ms(report.bound_ms),
                        ms(report.gap_ms),
                        ms(report.recovered_ms),
                        ms(report.inbox_gone_ms),
                        report.peak_rss_mb.iter().map(|(_, mb)| *mb).fold(0.0, f64::max),
                        report.broken.join("; ")
                    );
                    failed |= !report.broken.is_empty();
                    reports.push(report.json());
                }
                Err(e) => {
                    println!(
                        "{:<11} {:<20} failed to run: {e}",
                        kind.name(),
                        fault.name()
                    );
                    reports.push(serde_json::json!({"broker": kind.name(), "scenario": fault.name(), "error": e}));
                    failed = true;
                }
            }
        }
    }
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&reports).expect("JSON");
        if let Err(e) = std::fs::write(&path, text) {
            println!("writing {path}: {e}");
            return ExitCode::from(2);
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
