//! `busrpc`: call and notify busrpc services from the shell, the way grpcurl
//! pokes gRPC, run a demo service to poke, and compare brokers.

mod bench;
mod broker;
mod dlq;
mod status;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use busrpc::openrpc::MethodDoc;
use busrpc::transport::redact_url;
use busrpc::{ClientConfig, Error, Router, RpcError, Server, ServerConfig};
use clap::{Parser, Subcommand};

use crate::broker::{client_for, connect};
use serde_json::{json, Value};

/// What each failure exits with, so scripts can tell them apart.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 the service answered with a JSON-RPC error; \
2 bad usage (arguments, a malformed or unsupported broker URL, memory:// for call, notify or describe, \
params that are not a JSON array or object); 3 the broker is unreachable or refused; 4 no reply \
within the timeout; 5 anything else; 6 no such service on this broker (no server of it has ever \
started there: a typo?); 7 nobody is serving the service (its servers all stopped or died); 130 interrupted (bench deletes what it created first).

Signed messages: set BUSRPC_KEYS to id:hex-secret[,id:hex-secret...] (the first signs, all are \
accepted) and call, notify, describe and serve-echo sign what they send and drop what is unsigned \
or wrongly signed; a call its service rejects gets no reply (exit 4).";

#[derive(Parser)]
#[command(name = "busrpc", version, about = "JSON-RPC 2.0 over message brokers, from the shell", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calls METHOD of SERVICE and prints the result as JSON.
    #[command(after_help = EXIT_CODES)]
    Call {
        #[command(flatten)]
        target: Target,
        /// How long to wait for the reply: 500ms, 10s, 1m30s (plain numbers are seconds).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Sends METHOD of SERVICE as a notification: no reply, no waiting beyond the publish.
    #[command(after_help = EXIT_CODES)]
    Notify {
        #[command(flatten)]
        target: Target,
    },
    /// Lists the methods SERVICE serves and their signatures, from the
    /// OpenRPC document its servers answer rpc.discover with (the document
    /// itself: `busrpc call SERVICE rpc.discover`).
    #[command(after_help = EXIT_CODES)]
    Describe {
        #[command(flatten)]
        broker: BrokerArgs,
        /// How long to wait for the answer: 500ms, 10s, 1m30s.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// The service to describe.
        service: String,
    },
    /// Measures each broker: its raw round trip without busrpc, then the
    /// busrpc call round trip, with the same settings; prints a table. What
    /// it creates on a broker (under a prefix of its own) it deletes, also
    /// when interrupted; a broker that fails gets a row saying why, and the
    /// others are measured all the same.
    #[command(after_help = EXIT_CODES)]
    Bench {
        /// A broker to measure (repeatable): memory://, kafka-mock://,
        /// redis://host:port, kafka://host:port, with options. Default: the
        /// embedded ones, memory:// and kafka-mock://, which need nothing
        /// installed.
        #[arg(long = "broker", visible_alias = "brokers")]
        brokers: Vec<String>,
        /// How long to wait for each broker before reporting it unreachable.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        connect_timeout: Duration,
        /// Round trips per side and broker.
        #[arg(long, default_value_t = 2000)]
        calls: u64,
        /// Round trips in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also draw the latency distributions to this SVG file.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
    },
    /// For each service: its live servers (name, pending, idle), its queue
    /// (held, undelivered, pending; Kafka: lag per partition), its dead
    /// letters, and a verdict: serving, degraded (dead letters wait),
    /// nobody serving, no such service, or unknown (the broker cannot say
    /// who serves). Without SERVICE, every service found on the broker.
    /// Read-only: it joins no group and moves no offset. Exits 0 when
    /// every service is serving, 1 when one is degraded, 7 when one has
    /// nobody serving, 6 when one does not exist.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The services to report on (default: all found).
        services: Vec<String>,
    },
    /// Lists, shows, replays and purges a service's dead letters: requests
    /// delivered more than max_deliveries times, never run.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Serves a demo service (echo, add, sleep) until interrupted, then shuts
    /// down gracefully.
    ServeEcho {
        /// The broker: memory://, redis://host:port, kafka://host:port, kafka-mock://
        #[arg(long, default_value = "memory://")]
        broker: String,
        /// The service name to serve under.
        #[arg(default_value = "echo")]
        service: String,
    },
}

/// Where the service is, and how long reaching it may take.
#[derive(clap::Args)]
struct BrokerArgs {
    /// The broker the service is on: redis://host:port, kafka://host:port.
    /// memory:// lives inside one process, so no other process can be
    /// reached through it.
    #[arg(long, env = "BUSRPC_BROKER")]
    broker: String,
    /// How long to wait for the broker before giving up on it.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

#[derive(clap::Args)]
struct Target {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The service to call.
    service: String,
    /// The method to call.
    method: String,
    /// The params as JSON: an array (by position) or an object (by name).
    params: Option<String>,
}

/// A duration as humantime writes it (`500ms`, `10s`, `1m30s`, `2h`), or
/// a plain number of seconds; more than zero.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Ok(Duration::from_secs_f64(seconds))
        }
        Ok(_) => Err(format!(
            "{text:?} is not a duration: it must be more than zero"
        )),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 500ms, 10s or 1m30s ({e})")),
    }?;
    if parsed.is_zero() {
        return Err(format!("{text:?}: the duration must be more than zero"));
    }
    Ok(parsed)
}

/// A failure and the exit code it gets.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Rpc(_) => 1,
            Error::Encode(_) | Error::MessageTooLarge { .. } => 2,
            Error::Transport(_) | Error::Closed => 3,
            Error::Timeout(_) => 4,
            Error::NoService { .. } => 6,
            Error::NoServers { .. } => 7,
            _ => 5,
        };
        let message = match &e {
            Error::Rpc(rpc) => match rpc.data() {
                Some(data) => format!(
                    "error {}: {}\ndata: {}",
                    rpc.code(),
                    rpc.message(),
                    data.get()
                ),
                None => format!("error {}: {}", rpc.code(), rpc.message()),
            },
            Error::Timeout(after) => format!("no reply within {after:?}"),
            other => other.to_string(),
        };
        Failure { code, message }
    }
}

impl From<busrpc::TransportError> for Failure {
    fn from(e: busrpc::TransportError) -> Self {
        Failure {
            code: 3,
            message: e.to_string(),
        }
    }
}

/// The params as a JSON array or object; `Value::Null` (none) when absent.
fn params(text: Option<&str>) -> Result<Value, Failure> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    match serde_json::from_str::<Value>(text) {
        Ok(value @ (Value::Array(_) | Value::Object(_))) => Ok(value),
        Ok(_) => Err(Failure::usage(format!(
            "params must be a JSON array (by position) or object (by name), like '[\"hello\"]'; got {text}"
        ))),
        Err(e) => Err(Failure::usage(format!("params are not valid JSON: {e}"))),
    }
}

#[allow(clippy::print_stderr)] // which server answered, beside the result
async fn call(target: Target, timeout: Duration) -> Result<(), Failure> {
    let params = params(target.params.as_deref())?;
    let client = client_for(&target.broker, ClientConfig::default().timeout(timeout)).await?;
    let outcome = client
        .call_reply::<Box<serde_json::value::RawValue>>(&target.service, &target.method, params)
        .await;
    client.close().await;
    let reply = outcome?;
    println!("{}", reply.value.get());
    // Beside the result, not in it: stdout stays the JSON a script reads.
    if let Some(server) = reply.served_by() {
        eprintln!("served by {server}");
    }
    Ok(())
}

async fn notify(target: Target) -> Result<(), Failure> {
    let params = params(target.params.as_deref())?;
    let client = client_for(&target.broker, ClientConfig::default()).await?;
    let outcome = client.notify(&target.service, &target.method, params).await;
    client.close().await;
    outcome.map_err(Failure::from)
}

async fn describe(broker: &BrokerArgs, timeout: Duration, service: &str) -> Result<(), Failure> {
    let client = client_for(broker, ClientConfig::default().timeout(timeout)).await?;
    let mut outcome = client
        .call_raw(service, busrpc::DISCOVER_METHOD, Value::Null)
        .await;
    if matches!(&outcome, Err(Error::Rpc(e)) if e.code() == busrpc::jsonrpc::METHOD_NOT_FOUND_CODE)
    {
        // A server from before rpc.discover: its method names at least.
        outcome = client
            .call_raw(service, busrpc::DESCRIBE_METHOD, Value::Null)
            .await;
    }
    client.close().await;
    let described: Value = serde_json::from_str(outcome?.get()).map_err(|e| Failure {
        code: 5,
        message: format!("the description is not JSON: {e}"),
    })?;
    print!("{}", readable_description(service, &described));
    Ok(())
}

/// An OpenRPC document (or an older `{"methods": [names]}`) as a list of
/// signatures, one method per line.
fn readable_description(service: &str, document: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let info = &document["info"];
    let version = info["version"].as_str().unwrap_or("");
    let _ = write!(out, "{service}");
    if !version.is_empty() {
        let _ = write!(out, " {version}");
    }
    if let Some(d) = info["description"].as_str() {
        let _ = write!(out, ": {}", d.lines().next().unwrap_or(""));
    }
    out.push('\n');
    let type_of = |schema: &Value| -> String {
        schema["title"]
            .as_str()
            .or_else(|| schema["type"].as_str())
            .unwrap_or("any")
            .to_owned()
    };
    for method in document["methods"].as_array().into_iter().flatten() {
        let (name, signature) = match method {
            Value::String(name) => (name.as_str(), "(…)".to_owned()),
            method => {
                let name = method["name"].as_str().unwrap_or("?");
                let signature = if method["x-busrpc-params"] == "undescribed" {
                    "(…)".to_owned()
                } else {
                    let params: Vec<String> = method["params"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            let optional = if p["required"] == true { "" } else { "?" };
                            format!(
                                "{}{optional}: {}",
                                p["name"].as_str().unwrap_or("?"),
                                type_of(&p["schema"])
                            )
                        })
                        .collect();
                    let result = match method.get("result") {
                        Some(r) => format!(" -> {}", type_of(&r["schema"])),
                        None if method["x-busrpc-notification"] == true => {
                            " (notification)".to_owned()
                        }
                        None => String::new(),
                    };
                    format!("({}){result}", params.join(", "))
                };
                (name, signature)
            }
        };
        let _ = write!(out, "  {name}{signature}");
        if let Some(summary) = method["summary"].as_str() {
            let _ = write!(out, "  # {summary}");
        }
        out.push('\n');
        // The errors it declares (OpenRPC's `errors`), one per line.
        for error in method["errors"].as_array().into_iter().flatten() {
            let code = &error["code"];
            let message = error["message"].as_str().unwrap_or("");
            let _ = writeln!(out, "    error {code}: {message}");
        }
    }
    out
}

/// The demo service: `echo` returns its argument, `add` sums two integers,
/// `sleep` waits that many milliseconds and returns them.
fn demo_router() -> Router {
    Router::new()
        .method("echo", |(value,): (Value,)| async move {
            Ok::<_, RpcError>(value)
        })
        .method("add", |(a, b): (i64, i64)| async move {
            a.checked_add(b)
                .ok_or_else(|| RpcError::new(1, "the sum overflows a 64-bit integer"))
        })
        .method("sleep", |(ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RpcError>(ms)
        })
        .document(
            MethodDoc::new("echo")
                .summary("Returns its argument.")
                .param("value", json!({}), true)
                .result("value", json!({})),
        )
        .document(
            MethodDoc::new("add")
                .summary("Sums two integers.")
                .param("a", json!({"type": "integer"}), true)
                .param("b", json!({"type": "integer"}), true)
                .result("sum", json!({"type": "integer"}))
                .errors(&[(1, "the sum overflows a 64-bit integer")]),
        )
        .document(
            MethodDoc::new("sleep")
                .summary("Waits that many milliseconds and returns them.")
                .param("ms", json!({"type": "integer", "minimum": 0}), true)
                .result("ms", json!({"type": "integer"})),
        )
        .service_info(env!("CARGO_PKG_VERSION"), None)
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve_echo(broker: &str, service: &str) -> Result<(), Failure> {
    let transport = connect(broker).await?;
    // A demo: each reply names the server, so `busrpc call` can say which
    // of several answered.
    let config = ServerConfig::default()
        .shutdown_grace(Duration::from_secs(10))
        .name_in_replies(true);
    let server = Server::new(transport, service, demo_router())
        .with_config(config)
        .start()
        .await?;
    println!(
        "serving {service} (echo, add, sleep) as {} on {}; Ctrl-C to stop",
        server.name(),
        redact_url(broker)
    );
    interrupted().await;
    println!("stopping: finishing the calls in hand");
    let stats = server.stats();
    server.shutdown().await;
    println!(
        "stopped after {} calls and {} notifications",
        stats.calls, stats.notifications
    );
    Ok(())
}

/// The brokers `bench` measures when none is named: the embedded ones.
fn embedded_brokers() -> Vec<String> {
    let mut brokers = vec!["memory://".to_owned()];
    if busrpc::SCHEMES.contains(&"kafka-mock://") {
        brokers.push("kafka-mock://busrpc-bench".to_owned());
    }
    brokers
}

async fn run_bench(
    brokers: Vec<String>,
    settings: &bench::Settings,
    json: bool,
    plot: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let brokers = if brokers.is_empty() {
        embedded_brokers()
    } else {
        brokers
    };
    let current: bench::Current = Arc::default();
    let measuring = async {
        let mut outcomes = Vec::new();
        for broker in &brokers {
            let url = busrpc_bench::on_own_prefix(broker, "busrpc-bench");
            let shown = redact_url(broker);
            outcomes.push(bench::measure(&shown, &url, settings, &current).await);
        }
        outcomes
    };
    let outcomes = tokio::select! {
        outcomes = measuring => outcomes,
        () = interrupted() => {
            // The measuring future is gone, its server and client with it;
            // what they and the baseline made is under the run's prefix
            // (a baseline interrupted while starting had made some too).
            let in_hand = current.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(baseline) = in_hand {
                if let Err(e) = baseline.clean_up().await {
                    report(&Failure { code: 5, message: format!("deleting the bench's keys or topics: {e}") });
                }
            }
            return Err(Failure { code: 130, message: "interrupted; what the bench created is deleted".into() });
        }
    };
    if json {
        println!("{}", bench::to_json(&outcomes, settings));
    } else {
        print!("{}", bench::table(&outcomes, settings));
    }
    if let Some(path) = plot {
        bench::plot(&outcomes, path)?;
    }
    // Every failure is reported; the first decides the exit code (and is
    // reported by main).
    let mut failures = outcomes.into_iter().filter_map(|o| o.sides.err());
    let first = failures.next();
    failures.for_each(|failure| report(&failure));
    first.map_or(Ok(()), Err)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&Failure {
                code: 5,
                message: format!("cannot start a runtime: {e}"),
            });
            return ExitCode::from(5);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Call { target, timeout } => call(target, timeout).await,
            Command::Notify { target } => notify(target).await,
            Command::Describe {
                broker,
                timeout,
                service,
            } => describe(&broker, timeout, &service).await,
            Command::ServeEcho { broker, service } => serve_echo(&broker, &service).await,
            Command::Status {
                broker,
                json,
                services,
            } => status::status(&broker, services, json).await,
            Command::Dlq(command) => dlq::run(command).await,
            Command::Bench {
                brokers,
                connect_timeout,
                calls,
                concurrency,
                payload,
                json,
                plot,
            } => {
                let settings = bench::Settings {
                    calls: calls.max(1),
                    concurrency: concurrency.max(1),
                    payload,
                    connect_timeout,
                };
                run_bench(brokers, &settings, json, plot.as_deref()).await
            }
        }
    });
    // Do not wait forever at exit for a broker client to say goodbye to a
    // broker that has gone away.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // A verdict already printed (status) needs no second word.
            if !failure.message.is_empty() {
                report(&failure);
            }
            ExitCode::from(failure.code)
        }
    }
}

#[allow(clippy::print_stderr)] // a command reports failures where they belong
fn report(failure: &Failure) {
    eprintln!("busrpc: {}", failure.message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5h").unwrap(), Duration::from_secs(5 * 3600));
        assert!(parse_duration("soon").is_err());
        for zero_or_less in ["0", "0s", "0ms", "-5", "-5s"] {
            assert!(parse_duration(zero_or_less).is_err(), "{zero_or_less}");
        }
        assert!(parse_duration("0").unwrap_err().contains("more than zero"));
    }

    #[test]
    fn params_must_be_an_array_or_object() {
        assert_eq!(params(None).ok(), Some(Value::Null));
        assert!(params(Some("[1,2]")).is_ok());
        assert!(params(Some(r#"{"a":1}"#)).is_ok());
        assert_eq!(params(Some("3")).err().map(|f| f.code), Some(2));
        assert_eq!(params(Some("[1,")).err().map(|f| f.code), Some(2));
    }

    #[test]
    fn errors_map_to_distinct_exit_codes() {
        let code = |e: Error| Failure::from(e).code;
        assert_eq!(code(Error::Rpc(RpcError::method_not_found())), 1);
        assert_eq!(code(Error::Transport(busrpc::TransportError::Closed)), 3);
        assert_eq!(code(Error::Timeout(Duration::from_secs(1))), 4);
        let typo = Failure::from(Error::NoService {
            service: "ecoh".into(),
        });
        assert_eq!(typo.code, 6);
        assert!(
            typo.message.contains("no service \"ecoh\""),
            "{}",
            typo.message
        );
        let nobody = Failure::from(Error::NoServers {
            service: "echo".into(),
        });
        assert_eq!(nobody.code, 7);
        assert!(
            nobody.message.contains("nobody is serving"),
            "{}",
            nobody.message
        );
        let rpc = Failure::from(Error::Rpc(RpcError::new(7, "no").with_data(&[1])));
        assert_eq!(rpc.message, "error 7: no\ndata: [1]");
    }
}
