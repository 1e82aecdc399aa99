//! The brokers a scenario runs on, private to it: a redis-server and a
//! Tansu started here on free ports, reached through proxies that can cut
//! the network, or librdkafka's mock cluster hosted by this process and
//! reached by the others over TCP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busrpc::kafka::MockBrokers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::proxy::Proxy;

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Redis,
    KafkaMock,
    Tansu,
}

impl Kind {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "redis" => Some(Self::Redis),
            "kafka-mock" => Some(Self::KafkaMock),
            "tansu" => Some(Self::Tansu),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::KafkaMock => "kafka-mock",
            Self::Tansu => "tansu",
        }
    }
}

/// Which processes a URL or a cut is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Servers,
    Clients,
    /// Both: the one proxy of a Tansu, whose listener has one address
    /// (what it advertises), or the mock cluster's brokers themselves.
    Everyone,
}

/// A running broker.
pub(crate) struct Broker {
    pub(crate) kind: Kind,
    port: u16,
    /// Redis: the servers' and the clients' proxies; Tansu: one proxy,
    /// the address it advertises (a Kafka client connects to what the
    /// broker's metadata names, whatever it bootstrapped from), so it
    /// cuts everyone at once; the mock cluster: none (its brokers go down).
    proxies: Vec<(Side, Proxy)>,
    dir: PathBuf,
    durable: bool,
    process: Option<Child>,
    mock: Option<Arc<MockBrokers>>,
    /// URLs without the tuning options (see [`Broker::url`]).
    defaults: bool,
}

/// Errors of the harness itself: a broker that will not start, a process
/// that will not run.
pub(crate) type Failure = String;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Options that keep recovery within a short scenario: a Redis server
/// claims a dead consumer's requests after 2 s, a Kafka group notices a
/// dead member after 6 s; an inbox left by a dead client goes after 3 s
/// (Kafka: the servers' sweep, which needs the short retention too; Redis:
/// its TTL, set by its client alone, so only the client that is killed has
/// it: another's inbox would expire while Redis is away).
const REDIS_OPTIONS: &str = "claim_idle_ms=2000&block_ms=200";
const REDIS_SHORT_INBOX: &str = "&inbox_ttl_ms=3000";
/// Kafka's members keep the partitions that do not move through a
/// rebalance (cooperative-sticky): a graceful leave answers nothing twice.
const KAFKA_OPTIONS: &str = "partitions=6&session.timeout.ms=6000&heartbeat.interval.ms=500\
    &inbox_retention_ms=3000&partition.assignment.strategy=cooperative-sticky&reconnect.backoff.max.ms=1000";
/// The mock cluster reached over TCP creates no topics: clients share the
/// reply topic the harness makes (see [`Broker::prepare`]).
const MOCK_CLIENT_OPTIONS: &str = "&inbox=shared&shared_inbox_partitions=4";

impl Broker {
    /// Starts a broker of `kind` keeping its files in `dir`; `durable`
    /// makes what it holds survive a restart (Redis: an append-only file
    /// written on every command; Tansu: SQLite storage).
    /// `defaults` leaves the tuning out of its URLs (see [`Broker::url`]).
    pub(crate) async fn start(
        kind: Kind,
        dir: &Path,
        durable: bool,
        defaults: bool,
    ) -> Result<Self, Failure> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = free_port();
        let mut proxies = Vec::new();
        match kind {
            Kind::Redis => {
                proxies.push((Side::Servers, Proxy::start(port).await?));
                proxies.push((Side::Clients, Proxy::start(port).await?));
            }
            Kind::Tansu => proxies.push((Side::Everyone, Proxy::start(port).await?)),
            Kind::KafkaMock => {}
        }
        let mut broker = Broker {
            kind,
            port,
            proxies,
            dir: dir.to_owned(),
            durable,
            process: None,
            mock: None,
            defaults,
        };
        if kind == Kind::KafkaMock {
            let mock = MockBrokers::start(3).map_err(|e| e.to_string())?;
            broker.mock = Some(Arc::new(mock));
        } else {
            broker.launch().await?;
        }
        Ok(broker)
    }

    async fn launch(&mut self) -> Result<(), Failure> {
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                let appendonly = if self.durable { "yes" } else { "no" };
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", appendonly, "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(&self.dir);
                c
            }
            Kind::Tansu => {
                let mut c = Command::new("tansu");
                let url = format!("tcp://127.0.0.1:{port}");
                let advertised = format!("tcp://127.0.0.1:{}", self.proxy_port(Side::Everyone));
                let storage = if self.durable {
                    "sqlite://tansu.db"
                } else {
                    "memory://tansu/"
                };
                c.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .args(["--storage-engine", storage])
                .current_dir(&self.dir);
                c
            }
            Kind::KafkaMock => return Ok(()),
        };
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.kind.name())))
            .map_err(|e| e.to_string())?;
        let child = command
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.kind.name()))?;
        self.process = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> Result<(), Failure> {
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            if self.answers().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "{} did not start on port {}; see {}",
            self.kind.name(),
            self.port,
            self.dir.display()
        ))
    }

    /// Whether the broker takes connections (and Redis answers PING).
    async fn answers(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if self.kind != Kind::Redis {
            return true;
        }
        let mut reply = [0u8; 5];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG"
    }

    /// The broker URL for the servers or the clients of a scenario;
    /// `short_inbox` for a client whose inbox must go soon after it dies. With
    /// `defaults`, only what the scenario's topology needs (the prefix, the
    /// short inbox it checks, the mock cluster's shared reply topic): no
    /// tuning of recovery.
    pub(crate) fn url(&self, side: Side, prefix: &str, short_inbox: bool) -> String {
        // BUSRPC_CHAOS_OPTIONS: options of one's own after the rest, to
        // try a setting (or librdkafka's `debug`) without a rebuild.
        let own = std::env::var("BUSRPC_CHAOS_OPTIONS").map_or(String::new(), |o| format!("&{o}"));
        let tuning = |options: &str| {
            if self.defaults {
                own.clone()
            } else {
                format!("&{options}{own}")
            }
        };
        match self.kind {
            Kind::Redis => format!(
                "redis://127.0.0.1:{}?prefix={prefix}{}{}",
                self.proxy_port(side),
                tuning(REDIS_OPTIONS),
                if short_inbox { REDIS_SHORT_INBOX } else { "" }
            ),
            Kind::KafkaMock => format!(
                "kafka://{}?prefix={prefix}{}{MOCK_CLIENT_OPTIONS}",
                self.bootstrap(side),
                tuning(KAFKA_OPTIONS)
            ),
            Kind::Tansu => format!(
                "kafka://{}?prefix={prefix}{}",
                self.bootstrap(side),
                tuning(KAFKA_OPTIONS)
            ),
        }
    }

    /// Makes what the service's processes need and cannot make themselves
    /// (the mock cluster takes no CreateTopics over TCP): its request and
    /// dead-letter topics and the shared reply topic.
    pub(crate) fn prepare(&self, prefix: &str, service: &str) -> Result<(), Failure> {
        let Some(mock) = &self.mock else {
            return Ok(());
        };
        for (topic, partitions) in [
            (format!("{prefix}.{service}"), 6),
            (format!("{prefix}.{service}.dead"), 1),
            (format!("{prefix}.inbox.shared"), 4),
        ] {
            mock.create_topic(&topic, partitions)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Whether a dead client's inbox is the broker's to remove: not the
    /// mock's shared reply topic, which holds nothing per client.
    pub(crate) fn has_inboxes_per_client(&self) -> bool {
        self.mock.is_none()
    }

    /// Where `side` reaches the broker: its proxy's port (Tansu's one
    /// proxy for either side).
    fn proxy_port(&self, side: Side) -> u16 {
        let proxy = self
            .proxies
            .iter()
            .find(|(s, _)| *s == side || *s == Side::Everyone)
            .or_else(|| self.proxies.first());
        proxy.map_or(self.port, |(_, p)| p.port())
    }

    /// The bootstrap servers for `side`.
    fn bootstrap(&self, side: Side) -> String {
        match &self.mock {
            Some(mock) => mock.bootstrap_servers().to_owned(),
            None => format!("127.0.0.1:{}", self.proxy_port(side)),
        }
    }

    /// Cuts `side` off the broker for `length`: every connection closed
    /// and new ones refused (the mock cluster: its brokers down), then
    /// back.
    pub(crate) async fn cut(&mut self, side: Side, length: Duration) -> Result<(), Failure> {
        if let Some(mock) = &self.mock {
            return down_for(mock, length).await;
        }
        let parted = |s: Side| side == Side::Everyone || s == side || s == Side::Everyone;
        for (_, proxy) in self.proxies.iter_mut().filter(|(s, _)| parted(*s)) {
            proxy.cut().await;
        }
        tokio::time::sleep(length).await;
        for (_, proxy) in self.proxies.iter_mut().filter(|(s, _)| parted(*s)) {
            proxy.reopen().await?;
        }
        Ok(())
    }

    /// The broker process, for its peak memory.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Child::id)
    }

    /// Stops the broker (Redis: SHUTDOWN's SIGTERM, which writes its
    /// append-only file; Tansu: SIGTERM) and starts it again on the same
    /// port and files; the mock cluster's brokers go down and come up.
    pub(crate) async fn restart(&mut self) -> Result<(), Failure> {
        if let Some(mock) = &self.mock {
            return down_for(mock, Duration::from_millis(500)).await;
        }
        if let Some(mut child) = self.process.take() {
            signal(&child, "TERM");
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        }
        self.launch().await
    }

    /// Makes the broker unreachable for `away`: its process stopped
    /// (SIGSTOP: connections hang, as to a host gone), the mock's brokers
    /// down (connections refused); then back.
    pub(crate) async fn away(&self, away: Duration) -> Result<(), Failure> {
        if let Some(mock) = &self.mock {
            return down_for(mock, away).await;
        }
        let child = self.process.as_ref().ok_or("no broker process")?;
        signal(child, "STOP");
        tokio::time::sleep(away).await;
        signal(child, "CONT");
        Ok(())
    }

    /// Whether the inbox at `address` still exists on the broker.
    pub(crate) async fn inbox_exists(&self, address: &str) -> bool {
        match self.kind {
            Kind::Redis => {
                let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await
                else {
                    return true;
                };
                let command = format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n{address}\r\n", address.len());
                let mut reply = [0u8; 4];
                stream.write_all(command.as_bytes()).await.is_err()
                    || stream.read_exact(&mut reply).await.is_err()
                    || &reply != b":0\r\n"
            }
            Kind::KafkaMock | Kind::Tansu => {
                let (bootstrap, topic) = (self.bootstrap(Side::Everyone), address.to_owned());
                tokio::task::spawn_blocking(move || {
                    let consumer: Result<BaseConsumer, _> = rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", bootstrap)
                        .create();
                    let Ok(consumer) = consumer else { return true };
                    match consumer.fetch_metadata(None, Duration::from_secs(10)) {
                        Ok(metadata) => metadata.topics().iter().any(|t| t.name() == topic),
                        Err(_) => true,
                    }
                })
                .await
                .unwrap_or(true)
            }
        }
    }
}

/// Takes every broker of the mock cluster down for `away`, then up again.
async fn down_for(mock: &MockBrokers, away: Duration) -> Result<(), Failure> {
    for id in 1..=3 {
        mock.broker_down(id).map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(away).await;
    for id in 1..=3 {
        mock.broker_up(id).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Sends `signal` (TERM, KILL, STOP, CONT) to `child`.
pub(crate) fn signal(child: &Child, signal: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status();
    }
}
