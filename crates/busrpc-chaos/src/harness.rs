//! Scenarios: servers and clients of one service as processes, a steady
//! load, one fault at a chosen moment, and what the clients and servers
//! saw, counted.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::brokers::{signal, Broker, Failure, Kind, Side};
use crate::roles::now_ms;

/// How long each call's handler works.
const WORK_MS: u64 = 50;

/// One process of a scenario and what it printed.
struct Process {
    label: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    peak_rss_kb: Arc<Mutex<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The peak resident set of process `pid`, in KiB (Linux: VmHWM).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Process {
    /// Starts this binary in `role` with `args`, and waits for its `ready`.
    async fn start(label: String, role: &str, args: &[String]) -> Result<Self, Failure> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg(role)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {label}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let collected = lines.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if line == "ready" {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                lock(&collected).push(line);
            }
        });
        let peak = Arc::new(Mutex::new(0));
        if let Some(pid) = child.id() {
            let peak = peak.clone();
            tokio::spawn(async move {
                while let Some(kb) = peak_rss_kb(pid) {
                    {
                        let mut p = lock(&peak);
                        *p = (*p).max(kb);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        match tokio::time::timeout(Duration::from_secs(60), ready).await {
            Ok(Ok(())) => Ok(Process {
                label,
                child,
                lines,
                peak_rss_kb: peak,
            }),
            _ => {
                let said = lock(&lines).join(" | ");
                Err(format!(
                    "{label} did not get ready within 60 s; it said: {said}"
                ))
            }
        }
    }

    fn kill(&self, how: &str) {
        signal(&self.child, how);
    }

    /// Waits up to `within` for the process to end: `None` if it has not,
    /// else how it ended.
    async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => None,
        }
    }

    fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    fn peak_mb(&self) -> f64 {
        *lock(&self.peak_rss_kb) as f64 / 1024.0
    }
}

/// The faults, one per scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// kill -9 of one server.
    KillOne,
    /// kill -9 of every server, then a fresh one.
    KillAllThenFresh,
    /// SIGTERM of one server: it finishes what it holds and leaves.
    TermOne,
    /// The broker stopped and started again, keeping what it stored.
    BrokerRestart,
    /// The broker stopped and started again with nothing kept (Redis
    /// without persistence, Tansu's memory storage): queues, groups and
    /// inboxes gone; servers and clients must make them again.
    BrokerLost,
    /// The broker unreachable for a while.
    BrokerAway,
    /// kill -9 of a client: its inbox must go.
    KillClient,
    /// No fault: many clients, a long load.
    Sustained,
    /// The network between a side and the broker cut for this many
    /// milliseconds: every connection closed, new ones refused.
    Cut(Side, u64),
}

pub(crate) const ALL: [Fault; 13] = [
    Fault::KillOne,
    Fault::KillAllThenFresh,
    Fault::TermOne,
    Fault::BrokerRestart,
    Fault::BrokerLost,
    Fault::BrokerAway,
    Fault::KillClient,
    Fault::Sustained,
    Fault::Cut(Side::Everyone, 500),
    Fault::Cut(Side::Everyone, 5_000),
    Fault::Cut(Side::Everyone, 30_000),
    Fault::Cut(Side::Servers, 5_000),
    Fault::Cut(Side::Clients, 5_000),
];

impl Fault {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::KillOne => "kill-one",
            Fault::KillAllThenFresh => "kill-all-then-fresh",
            Fault::TermOne => "sigterm-one",
            Fault::BrokerRestart => "broker-restart",
            Fault::BrokerLost => "broker-lost",
            Fault::BrokerAway => "broker-away",
            Fault::KillClient => "kill-client",
            Fault::Sustained => "sustained",
            Fault::Cut(Side::Everyone, 500) => "cut-0.5s",
            Fault::Cut(Side::Everyone, 5_000) => "cut-5s",
            Fault::Cut(Side::Everyone, 30_000) => "cut-30s",
            Fault::Cut(Side::Servers, 5_000) => "cut-servers-5s",
            Fault::Cut(Side::Clients, 5_000) => "cut-clients-5s",
            Fault::Cut(..) => "cut",
        }
    }

    /// Whether the short run leaves it out: it lasts too long.
    pub(crate) fn long_only(self) -> bool {
        matches!(self, Fault::Cut(_, ms) if ms > 5_000)
    }

    /// How long the broker stays out of reach, for the faults that take it
    /// away for a set time (a cut; `broker-away` takes the run's `away`).
    fn cut_length(self) -> Option<Duration> {
        match self {
            Fault::Cut(_, ms) => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    /// Why the fault cannot be made on `kind`, if it cannot.
    pub(crate) fn not_on(self, kind: Kind) -> Option<&'static str> {
        match (self, kind) {
            (Fault::BrokerLost, Kind::KafkaMock) => Some("the mock cluster cannot lose its topics"),
            (Fault::Cut(..), Kind::KafkaMock) => Some(
                "the mock's brokers advertise their own ports (no proxy between); broker-away takes them down",
            ),
            (Fault::Cut(Side::Servers | Side::Clients, _), Kind::Tansu) => {
                Some("a Kafka client connects where the broker's metadata says: one side cannot be cut alone")
            }
            _ => None,
        }
    }
}

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Size {
    pub(crate) servers: usize,
    pub(crate) clients: u32,
    pub(crate) calls: u64,
    pub(crate) per_second: u64,
    /// When the fault comes, after the load starts.
    pub(crate) fault_at: Duration,
    /// How long the broker is away.
    pub(crate) away: Duration,
    /// The long run: it makes the figures of docs/RELIABILITY.md on a
    /// machine of its own, so a cut beyond its bound breaks a promise
    /// there (the short run, on shared machines, reports the bound only).
    pub(crate) long: bool,
}

impl Size {
    pub(crate) fn new(long: bool, fault: Fault) -> Self {
        let sustained = fault == Fault::Sustained;
        let size = match (long, sustained) {
            (false, false) => Size {
                servers: 3,
                clients: 2,
                calls: 300,
                per_second: 100,
                fault_at: Duration::from_millis(1500),
                away: Duration::from_secs(3),
                long,
            },
            (false, true) => Size {
                servers: 3,
                clients: 4,
                calls: 250,
                per_second: 250,
                fault_at: Duration::ZERO,
                away: Duration::ZERO,
                long,
            },
            (true, false) => Size {
                servers: 3,
                clients: 4,
                calls: 2000,
                per_second: 100,
                fault_at: Duration::from_secs(5),
                away: Duration::from_secs(30),
                long,
            },
            (true, true) => Size {
                servers: 3,
                clients: 20,
                calls: 1000,
                per_second: 100,
                fault_at: Duration::ZERO,
                away: Duration::ZERO,
                long,
            },
        };
        match fault.cut_length() {
            // Calls go on being made through the whole cut and after it.
            Some(cut) if !long => Size {
                away: cut,
                calls: 100 * (cut.as_secs() + 4),
                ..size
            },
            Some(cut) => Size { away: cut, ..size },
            None => size,
        }
    }
}

/// What a scenario saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) broker: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) misrouted: u64,
    pub(crate) executions_beyond_one: u64,
    /// From the fault to the answer of the last call in flight at it.
    pub(crate) stranded_ms: Option<u64>,
    /// What `stranded_ms` may be at most, for a cut: its length and 1 s on
    /// Redis, 3 s on Kafka (docs/RELIABILITY.md).
    pub(crate) bound_ms: Option<u64>,
    /// The longest time after the fault, while calls were being made, in
    /// which none was answered.
    pub(crate) gap_ms: Option<u64>,
    /// Kill-client: how long its inbox outlived it.
    pub(crate) inbox_gone_ms: Option<u64>,
    /// From the fault to the answer of the first call each client sent
    /// once the fault was over (a restart: the broker back), the longest of
    /// them: how long the service took to serve every client again.
    pub(crate) recovered_ms: Option<u64>,
    /// Calls lost that their client sent after the first call it sent
    /// after the fault was answered, that is, once it was served again.
    pub(crate) lost_after_recovery: u64,
    pub(crate) peak_rss_mb: Vec<(String, f64)>,
    /// Why calls were lost (the first few reasons).
    pub(crate) lost_reasons: Vec<String>,
    /// What the scenario promises and did not keep.
    pub(crate) broken: Vec<String>,
    pub(crate) note: Option<String>,
}

impl Report {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "broker": self.broker,
            "scenario": self.scenario,
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "duplicate_replies": self.duplicates,
            "misrouted": self.misrouted,
            "executions_beyond_one": self.executions_beyond_one,
            "stranded_answered_after_ms": self.stranded_ms,
            "stranded_bound_ms": self.bound_ms,
            "longest_gap_after_fault_ms": self.gap_ms,
            "dead_client_inbox_gone_after_ms": self.inbox_gone_ms,
            "recovered_after_ms": self.recovered_ms,
            "lost_after_recovery": self.lost_after_recovery,
            "peak_rss_mb": self.peak_rss_mb.iter().map(|(p, mb)| serde_json::json!({"process": p, "mb": (mb * 10.0).round() / 10.0})).collect::<Vec<_>>(),
            "lost_reasons": self.lost_reasons,
            "broken_promises": self.broken,
            "note": self.note,
        })
    }
}

/// Runs `fault` on a fresh broker of `kind`, in `dir`. With `defaults`
/// every setting is at its default (`--defaults`): the broker URLs carry no
/// tuning and the clients wait their default timeout, as a new user's
/// service would; otherwise the options that keep recovery within a short
/// scenario (see `Broker::url`).
pub(crate) async fn run(
    kind: Kind,
    fault: Fault,
    size: Size,
    defaults: bool,
    dir: &Path,
) -> Result<Report, Failure> {
    // BrokerLost restarts a broker that keeps nothing.
    let durable = fault == Fault::BrokerRestart;
    let mut broker = Broker::start(kind, &dir.join(fault.name()), durable, defaults).await?;
    let prefix = format!("chaos-{}-{}", fault.name(), std::process::id());
    let url = broker.url(Side::Servers, &prefix, false);
    let client_url = broker.url(Side::Clients, &prefix, false);
    broker.prepare(&prefix, "work")?;
    let service = "work".to_owned();
    let mut report = Report {
        broker: kind.name(),
        scenario: fault.name(),
        ..Report::default()
    };
    let mut servers = Vec::new();
    for n in 0..size.servers {
        servers.push(
            Process::start(
                format!("server-{n}"),
                "server",
                &[url.clone(), service.clone()],
            )
            .await?,
        );
    }
    // Every server a member before the load (a Kafka group hands partitions
    // to late joiners only in a rebalance): one round of calls reaches all.
    warm_up(&client_url, &service, size.servers).await?;
    let timeout = if defaults {
        busrpc::ClientConfig::default().timeout
    } else {
        Duration::from_secs(60) + size.away * 2
    };
    let mut clients = Vec::new();
    for id in 0..size.clients {
        let args = [
            client_url.clone(),
            service.clone(),
            id.to_string(),
            size.calls.to_string(),
            size.per_second.to_string(),
            timeout.as_millis().to_string(),
            // Long enough that every server holds calls when the fault comes.
            WORK_MS.to_string(),
        ];
        clients.push(Process::start(format!("client-{id}"), "client", &args).await?);
    }
    let started = Instant::now();
    tokio::time::sleep(size.fault_at).await;
    let fault_ms = now_ms();
    // When the fault is over, for faults that take a while (a restart):
    // recovery is counted from here, as calls sent while the broker was
    // still shutting down were answered by it.
    let mut over_ms = fault_ms;
    let mut extra = Vec::new();
    match fault {
        Fault::KillOne => {
            servers[0].kill("KILL");
            if kind == Kind::Tansu {
                // Tansu keeps a dead member (and its partitions) until
                // another joins: a replacement, as an operator would.
                extra.push(
                    Process::start(
                        "replacement".into(),
                        "server",
                        &[url.clone(), service.clone()],
                    )
                    .await?,
                );
                report.note = Some("Tansu keeps a dead member until another joins: a replacement server was started".into());
            }
        }
        Fault::KillAllThenFresh => {
            for s in &servers {
                s.kill("KILL");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            extra.push(
                Process::start("fresh".into(), "server", &[url.clone(), service.clone()]).await?,
            );
        }
        Fault::TermOne => servers[0].kill("TERM"),
        Fault::BrokerRestart | Fault::BrokerLost => {
            broker.restart().await?;
            over_ms = now_ms();
        }
        Fault::BrokerAway => broker.away(size.away).await?,
        Fault::KillClient if !broker.has_inboxes_per_client() => {
            report.note = Some("clients of the mock cluster over TCP share one reply topic: no inbox per client to remove".into());
        }
        Fault::KillClient => {
            let short = broker.url(Side::Clients, &prefix, true);
            let idle = Process::start("idle-client".into(), "idle-client", &[short]).await?;
            let inbox = idle
                .lines()
                .iter()
                .find_map(|l| l.strip_prefix("inbox ").map(str::to_owned))
                .ok_or("the idle client printed no inbox")?;
            idle.kill("KILL");
            let killed = Instant::now();
            let bound = Duration::from_secs(30);
            while broker.inbox_exists(&inbox).await && killed.elapsed() < bound {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if broker.inbox_exists(&inbox).await {
                report.broken.push(format!(
                    "the dead client's inbox {inbox} was still there after {bound:?}"
                ));
            } else {
                report.inbox_gone_ms =
                    Some(u64::try_from(killed.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
        }
        Fault::Sustained => {}
        Fault::Cut(side, _) => {
            broker.cut(side, size.away).await?;
            over_ms = now_ms();
        }
    }
    // The clients end when every call is answered or timed out.
    let end = timeout + Duration::from_secs(120);
    for c in &mut clients {
        match c.wait(end.saturating_sub(started.elapsed())).await {
            None => report.broken.push(format!("{} did not finish", c.label)),
            Some(status) if !status.success() => {
                report.broken.push(format!("{} died ({status})", c.label));
            }
            Some(_) => {}
        }
    }
    for s in servers.iter().chain(&extra) {
        s.kill("TERM");
    }
    for s in servers.iter_mut().chain(extra.iter_mut()) {
        s.wait(Duration::from_secs(30)).await;
    }
    count(
        &mut report,
        &clients,
        servers.iter().chain(&extra),
        (fault_ms, over_ms),
        fault,
    );
    for p in clients.iter().chain(&servers).chain(&extra) {
        report.peak_rss_mb.push((p.label.clone(), p.peak_mb()));
    }
    if let Some(pid) = broker.pid() {
        if let Some(kb) = peak_rss_kb(pid) {
            report
                .peak_rss_mb
                .push((kind.name().to_owned(), kb as f64 / 1024.0));
        }
    }
    promises(&mut report, kind, fault, size.long);
    Ok(report)
}

/// Calls until each of `servers` has answered (or a minute passes).
async fn warm_up(url: &str, service: &str, servers: usize) -> Result<(), Failure> {
    let transport = busrpc::connect(url).await.map_err(|e| e.to_string())?;
    let client = busrpc::Client::connect_with(
        transport,
        busrpc::ClientConfig::default().timeout(Duration::from_secs(5)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    // Not which server answered (the reply does not say): enough calls in a
    // row, fast, that a partition owned by nobody would have shown.
    while answered < servers * 20 {
        match client
            .call::<(u32, u64)>(service, "work", (u32::MAX, 0u64, 0u64))
            .await
        {
            Ok(_) => answered += 1,
            Err(e) if Instant::now() > give_up => {
                return Err(format!("the service never answered: {e}"))
            }
            Err(_) => answered = 0,
        }
    }
    client.close().await;
    Ok(())
}

fn count<'a>(
    report: &mut Report,
    clients: &[Process],
    servers: impl Iterator<Item = &'a Process>,
    (fault_ms, over_ms): (u64, u64),
    fault: Fault,
) {
    let mut in_flight_at_fault = Vec::new();
    let mut last_sent = 0u64;
    let mut answers = Vec::new();
    // Per client: (sent, answered) of its calls sent after the fault, and
    // when its lost calls were sent.
    let mut after_fault: Vec<Vec<(u64, u64)>> = vec![Vec::new(); clients.len()];
    let mut lost_sent: Vec<Vec<u64>> = vec![Vec::new(); clients.len()];
    for (client, c) in clients.iter().enumerate() {
        for line in c.lines() {
            let mut words = line.split(' ');
            match words.next() {
                Some("ok") => {
                    report.sent += 1;
                    report.answered += 1;
                    let _seq = words.next();
                    let sent: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    let done: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    answers.push(done);
                    last_sent = last_sent.max(sent);
                    if sent < fault_ms && done >= fault_ms {
                        in_flight_at_fault.push(done - fault_ms);
                    }
                    if sent >= over_ms {
                        after_fault[client].push((sent, done));
                    }
                }
                Some("lost") => {
                    report.sent += 1;
                    report.lost += 1;
                    let _seq = words.next();
                    let sent: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    lost_sent[client].push(sent);
                    let reason: Vec<&str> = words.collect();
                    let reason = reason.join(" ");
                    if !report.lost_reasons.contains(&reason) && report.lost_reasons.len() < 3 {
                        report.lost_reasons.push(reason);
                    }
                }
                Some("misrouted") => {
                    report.sent += 1;
                    report.misrouted += 1;
                }
                Some("dropped") => {
                    report.duplicates += words
                        .next()
                        .and_then(|w| w.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    let mut runs: HashMap<String, u64> = HashMap::new();
    for s in servers {
        for line in s.lines() {
            if let Some(call) = line.strip_prefix("ran ") {
                if !call.starts_with(&u32::MAX.to_string()) {
                    *runs.entry(call.to_owned()).or_default() += 1;
                }
            }
        }
    }
    report.executions_beyond_one = runs.values().map(|n| n.saturating_sub(1)).sum();
    if std::env::var_os("BUSRPC_CHAOS_TIMELINE").is_some() {
        // Answers per 100 ms around the fault, to see a gap's shape.
        let mut buckets = std::collections::BTreeMap::<i64, u32>::new();
        for t in &answers {
            *buckets
                .entry((*t as i64 - fault_ms as i64).div_euclid(100))
                .or_default() += 1;
        }
        let line: Vec<String> = buckets.iter().map(|(b, n)| format!("{b}:{n}")).collect();
        println!(
            "timeline {} {}: {}",
            report.broker,
            report.scenario,
            line.join(" ")
        );
    }
    if fault != Fault::Sustained {
        // Each client serves again once the first call it sent after the
        // fault was over is answered (its inbox may come back later than
        // another's); the service has recovered when the last of them has.
        for (calls, lost) in after_fault.iter().zip(&lost_sent) {
            let Some(&(_, done)) = calls.iter().min_by_key(|(sent, _)| *sent) else {
                continue;
            };
            let recovered = done.saturating_sub(fault_ms);
            report.recovered_ms = Some(report.recovered_ms.map_or(recovered, |r| r.max(recovered)));
            report.lost_after_recovery += lost.iter().filter(|&&s| s > done).count() as u64;
        }
        report.stranded_ms = in_flight_at_fault.iter().max().copied();
        // While calls were still being made: after the last one, a late
        // answer is no gap in service.
        answers.sort_unstable();
        let during: Vec<u64> = std::iter::once(fault_ms)
            .chain(
                answers
                    .into_iter()
                    .filter(|t| (fault_ms..=last_sent).contains(t)),
            )
            .chain(std::iter::once(last_sent.max(fault_ms)))
            .collect();
        report.gap_ms = during.windows(2).map(|w| w[1] - w[0]).max();
    }
}

/// What each scenario promises on each broker, checked: counts, never
/// timings. docs/RELIABILITY.md gives the reasons for each exception.
fn promises(report: &mut Report, kind: Kind, fault: Fault, bounds_checked: bool) {
    if report.misrouted > 0 {
        report.broken.push(format!(
            "{} replies reached the wrong call",
            report.misrouted
        ));
    }
    if report.sent == 0 {
        report.broken.push("no call was made".into());
    }
    // On Kafka, a broker that goes away stalls the servers' replies until
    // librdkafka's message timeout (30 s), and calls may outlast their own.
    // A broker that keeps nothing loses what was in flight, everywhere; but
    // the service must serve again, and lose nothing sent once it does.
    let outage = matches!(fault, Fault::BrokerRestart | Fault::BrokerAway);
    if let Some(cut) = fault.cut_length() {
        let slack = if kind == Kind::Redis { 1_000 } else { 3_000 };
        let bound = u64::try_from(cut.as_millis()).unwrap_or(u64::MAX) + slack;
        report.bound_ms = Some(bound);
        match report.stranded_ms {
            Some(stranded) if bounds_checked && stranded > bound => report.broken.push(format!(
                "calls in flight waited {stranded} ms, beyond the cut's bound of {bound} ms"
            )),
            _ => {}
        }
    }
    if fault == Fault::BrokerLost {
        if report.recovered_ms.is_none() {
            report
                .broken
                .push("no call made after the broker came back was answered".into());
        }
        if report.lost_after_recovery > 0 {
            report.broken.push(format!(
                "{} calls lost after the service served again ({})",
                report.lost_after_recovery,
                report.lost_reasons.join("; ")
            ));
        }
    }
    let promises_none_lost = (kind == Kind::Redis || !outage) && fault != Fault::BrokerLost;
    if report.lost > 0 && promises_none_lost {
        report.broken.push(format!(
            "{} calls got no reply ({})",
            report.lost,
            report.lost_reasons.join("; ")
        ));
    }
    // Tansu 0.6.0 lets two members own a partition during any rebalance.
    // A cut promises no loss (above), not once-only answers: a settlement
    // or a publish whose connection broke under it may have run, and is
    // tried again (docs/RELIABILITY.md); its reruns and duplicates are
    // counted, and its bound reported, not checked (timings are not
    // checked on shared machines).
    let promises_once = matches!(fault, Fault::TermOne | Fault::Sustained) && kind != Kind::Tansu;
    if promises_once {
        if report.duplicates > 0 {
            report
                .broken
                .push(format!("{} duplicate replies", report.duplicates));
        }
        if report.executions_beyond_one > 0 {
            report.broken.push(format!(
                "{} calls ran more than once",
                report.executions_beyond_one
            ));
        }
    }
}
