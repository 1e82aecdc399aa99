//! `busrpc status`: which servers of each service are alive, how its queue
//! stands, its dead letters, and a verdict. Read-only: it asks the broker
//! (`Transport::members`, the transport's `Admin`) and never joins a group,
//! moves an offset or takes a request.

use std::fmt::Write;
use std::sync::Arc;

use busrpc::transport::{Admin, Member, QueueState};
use busrpc::Transport;
use serde_json::{json, Value};

use crate::broker::connect_within;
use crate::{BrokerArgs, Failure};

/// How a service stands; ordered from good to bad, so the worst decides
/// the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// Live servers, no dead letters.
    Serving,
    /// The broker cannot say who serves (the mock cluster describes no
    /// group; Tansu 0.6.0 has been seen not to list a group with members).
    Unknown,
    /// Live servers, but dead letters wait for someone to look at them.
    Degraded,
    /// A queue and nobody serving it: calls fail at once (-32005).
    NobodyServing,
    /// No queue: no server of it ever started on this broker.
    NoSuchService,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Unknown => "unknown",
            Self::Degraded => "degraded",
            Self::NobodyServing => "nobody serving",
            Self::NoSuchService => "no such service",
        }
    }

    /// The exit status a health script reads: 0 serving (or unknown: the
    /// broker cannot tell, which is no failure of the service), 1 degraded,
    /// 7 nobody serving, 6 no such service (as for `call`).
    fn exit_code(self) -> u8 {
        match self {
            Self::Serving | Self::Unknown => 0,
            Self::Degraded => 1,
            Self::NobodyServing => 7,
            Self::NoSuchService => 6,
        }
    }
}

/// One service's state.
struct Report {
    service: String,
    queue: Option<QueueState>,
    servers: Option<Vec<Member>>,
    verdict: Verdict,
}

pub(crate) async fn status(
    broker: &BrokerArgs,
    services: Vec<String>,
    json: bool,
) -> Result<(), Failure> {
    let transport = connect_within(broker).await?;
    let Some(admin) = transport.admin() else {
        return Err(Failure::usage(format!(
            "{} cannot be inspected: status needs a redis:// or kafka:// broker",
            busrpc::transport::redact_url(&broker.broker)
        )));
    };
    let services = if services.is_empty() {
        admin.services().await?
    } else {
        services
    };
    let mut reports = Vec::new();
    for service in services {
        reports.push(report(&transport, admin, service).await?);
    }
    if json {
        println!("{}", to_json(&reports));
    } else {
        print!("{}", table(&reports));
    }
    let worst = reports.iter().map(|r| r.verdict).max();
    match worst.map(Verdict::exit_code) {
        Some(code) if code != 0 => Err(Failure {
            code,
            message: String::new(),
        }),
        _ => Ok(()),
    }
}

async fn report(
    transport: &Arc<dyn Transport>,
    admin: &dyn Admin,
    service: String,
) -> Result<Report, Failure> {
    let queue = admin.queue(&service).await?;
    let servers = match &queue {
        Some(_) => {
            let address = transport.service_address(&service);
            transport.members(&address, &service).await?
        }
        None => None,
    };
    let verdict = match (&queue, &servers) {
        (None, _) => Verdict::NoSuchService,
        (Some(_), Some(servers)) if servers.is_empty() => Verdict::NobodyServing,
        (Some(queue), _) if queue.dead_letters > 0 => Verdict::Degraded,
        (Some(_), None) => Verdict::Unknown,
        (Some(_), Some(_)) => Verdict::Serving,
    };
    Ok(Report {
        service,
        queue,
        servers,
        verdict,
    })
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no services on this broker\n");
        return out;
    }
    for r in reports {
        let _ = writeln!(out, "{}: {}", r.service, r.verdict.word());
        let Some(queue) = &r.queue else { continue };
        let _ = writeln!(
            out,
            "  queue: {} held, {} undelivered, {} pending, {} dead letters",
            queue.length,
            or_dash(queue.undelivered),
            or_dash(queue.pending),
            queue.dead_letters
        );
        for p in &queue.partitions {
            let _ = writeln!(
                out,
                "  partition {}: end {}, committed {}, lag {}",
                p.partition,
                p.end,
                or_dash(p.committed),
                or_dash(p.lag())
            );
        }
        match &r.servers {
            None => out.push_str("  servers: the broker cannot say\n"),
            Some(servers) => {
                let _ = writeln!(out, "  servers: {}", servers.len());
                for s in servers {
                    let name = if s.name.is_empty() {
                        "(the broker gives no name)"
                    } else {
                        &s.name
                    };
                    let _ = writeln!(
                        out,
                        "    {name}  pending {}  idle {}",
                        or_dash(s.pending),
                        s.idle.map_or_else(
                            || "-".to_owned(),
                            |d| humantime::format_duration(std::time::Duration::from_millis(
                                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                            ))
                            .to_string()
                        )
                    );
                }
            }
        }
    }
    out
}

fn to_json(reports: &[Report]) -> Value {
    let services: Vec<Value> = reports
        .iter()
        .map(|r| {
            let queue = r.queue.as_ref().map(|q| {
                json!({
                    "length": q.length,
                    "undelivered": q.undelivered,
                    "pending": q.pending,
                    "dead_letters": q.dead_letters,
                    "partitions": q.partitions.iter().map(|p| json!({
                        "partition": p.partition,
                        "end": p.end,
                        "committed": p.committed,
                        "lag": p.lag(),
                    })).collect::<Vec<_>>(),
                })
            });
            let servers = r.servers.as_ref().map(|servers| {
                servers
                    .iter()
                    .map(|s| {
                        json!({
                            "name": s.name,
                            "pending": s.pending,
                            "idle_ms": s.idle.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        })
                    })
                    .collect::<Vec<_>>()
            });
            json!({
                "service": r.service,
                "verdict": r.verdict.word(),
                "queue": queue,
                "servers": servers,
            })
        })
        .collect();
    json!({ "services": services })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_decides_the_exit_status() {
        let mut all = [
            Verdict::Degraded,
            Verdict::Serving,
            Verdict::NobodyServing,
            Verdict::Unknown,
        ];
        all.sort();
        assert_eq!(all.last().map(|v| v.exit_code()), Some(7));
        assert_eq!(
            Verdict::Unknown.exit_code(),
            0,
            "the broker's limit, not the service's"
        );
        assert_eq!(Verdict::NoSuchService.exit_code(), 6);
    }
}
