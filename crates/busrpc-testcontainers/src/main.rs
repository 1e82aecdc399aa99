//! `busrpc-testcontainers [--require] [--] COMMAND [ARGS...]`: starts Redis
//! and Apache Kafka (KRaft, one node) in containers with testcontainers,
//! runs COMMAND with `BUSRPC_REDIS_URL` and `BUSRPC_KAFKA_URL` naming them
//! (the variables every busrpc test that needs a broker reads), stops the
//! containers and exits with COMMAND's status.
//!
//! ```text
//! cargo run --manifest-path crates/busrpc-testcontainers/Cargo.toml -- \
//!     cargo test -p busrpc-redis -p busrpc-kafka --all-features --test it -- conformance
//! ```
//!
//! Without a reachable Docker engine (`DOCKER_HOST`, or the socket
//! /var/run/docker.sock) it prints `skipped: ...` and exits 0, so that
//! machines without Docker can run it blindly; `--require` (or
//! `BUSRPC_TESTCONTAINERS=require`) makes that exit 3 instead.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use testcontainers_modules::kafka::apache::{self, KAFKA_PORT};
use testcontainers_modules::redis::{Redis, REDIS_PORT};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ImageExt;

/// busrpc needs Redis 7 (XAUTOCLAIM's deleted-entry list, XADD's options).
const REDIS_TAG: &str = "7.4-alpine";
/// What docker-compose.yml runs too.
const KAFKA_TAG: &str = "3.9.1";

/// Where the Docker engine is, as the Docker client looks for it.
#[derive(Debug, PartialEq, Eq)]
enum Engine {
    Unix(String),
    Tcp(String),
}

impl Engine {
    fn from_env(docker_host: Option<&str>) -> Result<Self, String> {
        match docker_host {
            None | Some("") => Ok(Engine::Unix("/var/run/docker.sock".to_owned())),
            Some(host) => {
                if let Some(path) = host.strip_prefix("unix://") {
                    Ok(Engine::Unix(path.to_owned()))
                } else if let Some(address) = host.strip_prefix("tcp://") {
                    Ok(Engine::Tcp(address.trim_end_matches('/').to_owned()))
                } else {
                    Err(format!(
                        "DOCKER_HOST={host:?}: only unix:// and tcp:// are understood here"
                    ))
                }
            }
        }
    }

    /// Whether something answers there (a connection is accepted), or why
    /// not.
    fn reachable(&self) -> Result<(), String> {
        match self {
            Engine::Unix(path) => {
                if !Path::new(path).exists() {
                    return Err(format!("no Docker engine: {path} does not exist"));
                }
                #[cfg(unix)]
                std::os::unix::net::UnixStream::connect(path)
                    .map(drop)
                    .map_err(|e| format!("no Docker engine answers at {path}: {e}"))?;
                Ok(())
            }
            Engine::Tcp(address) => {
                let addresses = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                    .map_err(|e| format!("DOCKER_HOST tcp://{address}: {e}"))?;
                for socket in addresses {
                    if std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok()
                    {
                        return Ok(());
                    }
                }
                Err(format!("no Docker engine answers at tcp://{address}"))
            }
        }
    }
}

/// The command line: whether Docker is required, and the command to run.
fn parse(args: Vec<String>, require_env: Option<&str>) -> Result<(bool, Vec<String>), String> {
    let mut require = require_env == Some("require");
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.peek() {
        match arg.as_str() {
            "--require" => require = true,
            "--" => {
                args.next();
                break;
            }
            _ => break,
        }
        args.next();
    }
    let command: Vec<String> = args.collect();
    if command.is_empty() {
        return Err("usage: busrpc-testcontainers [--require] [--] COMMAND [ARGS...]".into());
    }
    Ok((require, command))
}

#[allow(clippy::print_stderr)] // a command-line tool reports where errors go
fn main() -> ExitCode {
    let (require, command) = match parse(
        std::env::args().skip(1).collect(),
        std::env::var("BUSRPC_TESTCONTAINERS").ok().as_deref(),
    ) {
        Ok(parsed) => parsed,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let engine = Engine::from_env(std::env::var("DOCKER_HOST").ok().as_deref())
        .and_then(|engine| engine.reachable());
    if let Err(why) = engine {
        if require {
            eprintln!("busrpc-testcontainers: {why}");
            return ExitCode::from(3);
        }
        println!("skipped: {}: {why}", command.join(" "));
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(&command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("busrpc-testcontainers: {e}");
            ExitCode::from(3)
        }
    }
}

/// Starts the brokers, runs `command` against them, and stops them (when
/// the containers drop).
async fn run(command: &[String]) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let redis = Redis::default().with_tag(REDIS_TAG).start().await?;
    let redis_url = format!(
        "redis://{}:{}",
        redis.get_host().await?,
        redis.get_host_port_ipv4(REDIS_PORT).await?
    );
    let kafka = apache::Kafka::default()
        .with_jvm_image()
        .with_tag(KAFKA_TAG)
        .start()
        .await?;
    let kafka_url = format!(
        "kafka://{}:{}",
        kafka.get_host().await?,
        kafka.get_host_port_ipv4(KAFKA_PORT).await?
    );
    println!("Redis at {redis_url}, Kafka at {kafka_url}");
    let status = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("BUSRPC_REDIS_URL", &redis_url)
        .env("BUSRPC_KAFKA_URL", &kafka_url)
        .status()
        .await?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|&a| a.to_owned()).collect()
    }

    #[test]
    fn the_engine_is_found_where_the_docker_client_looks() {
        let unix = |p: &str| Ok(Engine::Unix(p.into()));
        assert_eq!(Engine::from_env(None), unix("/var/run/docker.sock"));
        assert_eq!(Engine::from_env(Some("")), unix("/var/run/docker.sock"));
        assert_eq!(
            Engine::from_env(Some("unix:///run/d.sock")),
            unix("/run/d.sock")
        );
        assert_eq!(
            Engine::from_env(Some("tcp://10.0.0.2:2375/")),
            Ok(Engine::Tcp("10.0.0.2:2375".into()))
        );
        assert!(Engine::from_env(Some("ssh://host")).is_err());
    }

    #[test]
    fn a_missing_engine_says_where_it_looked() {
        let why = Engine::Unix("/nonexistent/docker.sock".into())
            .reachable()
            .unwrap_err();
        assert_eq!(
            why,
            "no Docker engine: /nonexistent/docker.sock does not exist"
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let why = Engine::Tcp(address.clone()).reachable().unwrap_err();
        assert_eq!(why, format!("no Docker engine answers at tcp://{address}"));
    }

    #[test]
    fn arguments_say_whether_docker_is_required() {
        assert_eq!(
            parse(strings(&["--require", "--", "cargo", "test"]), None),
            Ok((true, strings(&["cargo", "test"])))
        );
        assert_eq!(
            parse(strings(&["cargo", "--require"]), None),
            Ok((false, strings(&["cargo", "--require"])))
        );
        assert_eq!(
            parse(strings(&["cargo"]), Some("require")),
            Ok((true, strings(&["cargo"])))
        );
        assert!(parse(strings(&["--require"]), None).is_err());
    }
}
