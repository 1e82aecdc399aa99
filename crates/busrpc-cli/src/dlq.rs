//! `busrpc dlq`: a service's dead letters, listed, shown, replayed and
//! purged. A replay is a fresh request (a new id, a new deadline, this
//! tool's inbox for the answer, signed with `BUSRPC_KEYS` if set) with the
//! method, params and application headers of the dead one, and the header
//! `replay-of: <dead letter id>`; the dead letter is removed only once the
//! replay is published.

use std::time::{Duration, SystemTime};

use busrpc::transport::{Admin, DeadLetter};
use busrpc::{Client, ClientConfig, Transport};
use serde_json::{json, Value};

use crate::broker::connect_within;
use crate::{parse_duration, BrokerArgs, Failure};

/// The most dead letters one command reads.
const MOST: usize = 10_000;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Lists SERVICE's dead letters: id, method, deliveries, when.
    List {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The service.
        service: String,
    },
    /// Shows one dead letter in full: headers and request.
    Show {
        #[command(flatten)]
        broker: BrokerArgs,
        /// The service.
        service: String,
        /// The dead letter's id, as `list` prints it.
        id: String,
    },
    /// Publishes dead letters again as fresh requests, waits for each
    /// answer and prints it, and removes each dead letter once its replay
    /// is published.
    Replay {
        #[command(flatten)]
        broker: BrokerArgs,
        /// How long to wait for each answer: 500ms, 10s, 1m30s.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Replay every dead letter of the service.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// The service.
        service: String,
        /// The dead letter to replay (or --all).
        #[arg(required_unless_present = "all")]
        id: Option<String>,
    },
    /// Deletes every dead letter of the service, for good.
    Purge {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Yes, delete them: without it, purge says how many it would.
        #[arg(long)]
        yes: bool,
        /// The service.
        service: String,
    },
}

pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::List {
            broker,
            json,
            service,
        } => {
            let transport = connect_within(&broker).await?;
            let letters = admin(&transport, &broker)?
                .dead_letters(&service, MOST)
                .await?;
            if json {
                let listed: Vec<Value> = letters.iter().map(summary).collect();
                println!("{}", Value::Array(listed));
            } else {
                print!("{}", table(&letters));
            }
            Ok(())
        }
        Command::Show {
            broker,
            service,
            id,
        } => {
            let transport = connect_within(&broker).await?;
            let letter = find(admin(&transport, &broker)?, &service, &id).await?;
            let mut shown = summary(&letter);
            let headers: serde_json::Map<String, Value> = letter
                .message
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), Value::from(value)))
                .collect();
            shown["headers"] = Value::Object(headers);
            shown["request"] = request(&letter).unwrap_or_else(|why| json!({ "unreadable": why }));
            println!("{shown:#}");
            Ok(())
        }
        Command::Replay {
            broker,
            timeout,
            all,
            service,
            id,
        } => {
            let transport = connect_within(&broker).await?;
            let letters = match (all, id) {
                (true, _) => {
                    admin(&transport, &broker)?
                        .dead_letters(&service, MOST)
                        .await?
                }
                (false, Some(id)) => vec![find(admin(&transport, &broker)?, &service, &id).await?],
                (false, None) => return Err(Failure::usage("name a dead letter, or --all")),
            };
            // Queued whether or not a server runs now: the replay waits for
            // one, as the original did.
            let config = ClientConfig::default().timeout(timeout).wait_for_servers();
            let client = Client::connect_with(transport.clone(), config).await?;
            let mut failed = None;
            for letter in &letters {
                match replay(&client, admin(&transport, &broker)?, &service, letter).await {
                    Ok(line) => println!("{}: {line}", letter.id),
                    Err(failure) => {
                        println!("{}: {}", letter.id, failure.message);
                        failed.get_or_insert(failure);
                    }
                }
            }
            client.close().await;
            failed.map_or(Ok(()), Err)
        }
        Command::Purge {
            broker,
            yes,
            service,
        } => {
            let transport = connect_within(&broker).await?;
            let admin = admin(&transport, &broker)?;
            let letters = admin.dead_letters(&service, MOST).await?;
            if !yes {
                return Err(Failure::usage(format!(
                    "{service} has {} dead letters; purge deletes them for good: add --yes",
                    letters.len()
                )));
            }
            let mut removed = 0;
            for letter in &letters {
                if admin.remove_dead_letter(&service, &letter.id).await? {
                    removed += 1;
                }
            }
            println!("purged {removed} dead letters of {service}");
            Ok(())
        }
    }
}

fn admin<'a>(
    transport: &'a std::sync::Arc<dyn Transport>,
    broker: &BrokerArgs,
) -> Result<&'a dyn Admin, Failure> {
    transport.admin().ok_or_else(|| {
        Failure::usage(format!(
            "{} keeps no dead letters busrpc can read: dlq needs a redis:// or kafka:// broker",
            busrpc::transport::redact_url(&broker.broker)
        ))
    })
}

async fn find(admin: &dyn Admin, service: &str, id: &str) -> Result<DeadLetter, Failure> {
    let letters = admin.dead_letters(service, MOST).await?;
    letters
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| Failure {
            code: 6,
            message: format!("{service} has no dead letter {id} (busrpc dlq list shows them)"),
        })
}

/// Sends `letter` again ([`Client::replay`]); what came of it, as one line.
async fn replay(
    client: &Client,
    admin: &dyn Admin,
    service: &str,
    letter: &DeadLetter,
) -> Result<String, Failure> {
    // Said as what it is, not as the broker's failure (exit 3).
    request(letter).map_err(|why| Failure {
        code: 5,
        message: format!("cannot replay it: {why}"),
    })?;
    match client.replay(admin, service, letter).await? {
        Some(result) => Ok(format!("answered {}", result.get())),
        None => Ok("sent again (a notification: no answer)".to_owned()),
    }
}

/// The dead request as JSON, or why it cannot be read as one.
fn request(letter: &DeadLetter) -> Result<Value, String> {
    letter.request().map_err(|e| e.to_string())
}

fn when(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| humantime::format_rfc3339_seconds(at).to_string(),
    )
}

/// One line's worth of a dead letter, as JSON.
fn summary(letter: &DeadLetter) -> Value {
    let request = request(letter).ok();
    json!({
        "id": letter.id,
        "method": request.as_ref().and_then(|r| r["method"].as_str().map(str::to_owned)),
        "request_id": request.as_ref().and_then(|r| r.get("id").cloned()),
        "deliveries": letter.deliveries(),
        "at": letter.at.map(|_| when(letter.at)),
        "why": why(letter),
    })
}

fn why(letter: &DeadLetter) -> String {
    match letter.deliveries() {
        Some(n) => format!("delivered {n} times: its server died or stopped with it each time"),
        None => "delivered too often".to_owned(),
    }
}

fn table(letters: &[DeadLetter]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if letters.is_empty() {
        out.push_str("no dead letters\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24}  {:<20}  {:>10}  WHEN",
        "ID", "METHOD", "DELIVERIES"
    );
    for letter in letters {
        let method = request(letter)
            .ok()
            .and_then(|r| r["method"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        let deliveries = letter
            .deliveries()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<24}  {:<20}  {:>10}  {}",
            letter.id,
            method,
            deliveries,
            when(letter.at)
        );
    }
    out
}
