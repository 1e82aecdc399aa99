//! One scriptable fake transport for tests (feature `testing`), in the
//! spirit of tower-test's mock service: the in-memory broker underneath,
//! and on top whatever the test scripts through its [`Script`] handle —
//! publishes that fail or never finish, deliveries the test hands out
//! itself (read errors and readiness included), redelivery counts,
//! settlements written down or held back — and a record of every publish.
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use busrpc_core::testing::ScriptedTransport;
//! # use busrpc_core::{Client, ClientConfig, Router, RpcError, Server, TransportError};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (transport, script) = ScriptedTransport::new();
//! let transport = Arc::new(transport);
//! let router = Router::new().method("id", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
//! let _server = Server::new(transport.clone(), "svc", router).start().await.unwrap();
//! // The broker is away for the first two tries of the request.
//! let queue = "busrpc.svc";
//! script.fail_publishes(queue, 2, || TransportError::Unavailable("connection reset".into()));
//! let client = Client::connect_with(transport, ClientConfig::default().timeout(Duration::from_secs(5)))
//!     .await
//!     .unwrap();
//! assert_eq!(client.call::<u64>("svc", "id", (7,)).await.unwrap(), 7);
//! assert_eq!(script.publish_tries(queue), 3);
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::memory::MemoryTransport;
use crate::transport::{
    Acknowledge, Deliveries, Delivery, Demand, Inbox, Member, OnSettled, ReadinessSignal, Settle,
    SettleError, Transport, TransportError,
};
use crate::wire::Message;

/// Makes the error a scripted failure returns, each time it is returned.
type MakeError = Arc<dyn Fn() -> TransportError + Send + Sync>;

/// A [`Transport`] whose faults a test scripts through its [`Script`].
/// Cheap to clone; clones share the script.
#[derive(Clone)]
pub struct ScriptedTransport {
    broker: MemoryTransport,
    script: Arc<Mutex<Rules>>,
}

/// What a test has scripted so far, and what happened.
#[derive(Default)]
struct Rules {
    /// Publishes to an address that fail, how many more times and how.
    failing: HashMap<String, (u32, MakeError)>,
    /// Every publish waits for ever.
    stalled: bool,
    /// Tries of a publish, by address.
    tries: HashMap<String, u32>,
    /// Every publish that reached the broker, in order.
    published: Vec<(String, Message)>,
    /// Inboxes fail to open with this.
    inbox_error: Option<MakeError>,
    /// The deliveries the test hands out itself, once it asked to.
    feed: Option<mpsc::UnboundedReceiver<Result<Delivery, TransportError>>>,
    readiness: Option<ReadinessSignal>,
    /// The attempt every delivery is marked with.
    attempt: Option<u32>,
    /// Settlements asked for, written down: `ack`, `release`,
    /// `dead-letter`, or `reply <to> <payload>`.
    settlements: Vec<String>,
    /// Whether `settle_then` outcomes are held until reported.
    holding: bool,
    held: Vec<OnSettled>,
}

/// The test's handle on a [`ScriptedTransport`]: what to do, and what
/// was done.
#[derive(Clone)]
pub struct Script {
    rules: Arc<Mutex<Rules>>,
}

/// Where a test sends the deliveries (and read errors) a
/// [`ScriptedTransport`]'s consumer hands out, once
/// [`Script::feed`] has taken its consumer over.
#[derive(Clone, Debug)]
pub struct Feed(mpsc::UnboundedSender<Result<Delivery, TransportError>>);

fn lock(rules: &Mutex<Rules>) -> MutexGuard<'_, Rules> {
    rules.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScriptedTransport {
    /// A scripted transport over a private memory broker, and its script.
    pub fn new() -> (Self, Script) {
        Self::over(MemoryTransport::new())
    }

    /// A scripted transport over `broker` (a named memory broker, shared
    /// with plain transports the test also uses), and its script.
    pub fn over(broker: MemoryTransport) -> (Self, Script) {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let script = Script {
            rules: rules.clone(),
        };
        (
            Self {
                broker,
                script: rules,
            },
            script,
        )
    }

    /// `delivery` with the script's attempt, settled through the script.
    fn wrap(rules: &Arc<Mutex<Rules>>, delivery: Delivery) -> Delivery {
        let attempt = lock(rules).attempt;
        let delivery = match attempt {
            Some(attempt) => delivery.with_attempt(attempt),
            None => delivery,
        };
        delivery.map_acker(|acker| ScriptedAck {
            acker,
            rules: rules.clone(),
        })
    }
}

impl std::fmt::Debug for ScriptedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedTransport").finish_non_exhaustive()
    }
}

impl Script {
    /// The next `times` publishes to `address` fail with `error()`.
    pub fn fail_publishes(
        &self,
        address: &str,
        times: u32,
        error: impl Fn() -> TransportError + Send + Sync + 'static,
    ) {
        lock(&self.rules)
            .failing
            .insert(address.to_owned(), (times, Arc::new(error)));
    }

    /// Every publish from now on waits for ever: a broker that never
    /// confirms.
    pub fn stall_publishes(&self) {
        lock(&self.rules).stalled = true;
    }

    /// How many times a publish to `address` was tried, failures included.
    pub fn publish_tries(&self, address: &str) -> u32 {
        lock(&self.rules).tries.get(address).copied().unwrap_or(0)
    }

    /// Every publish that reached the broker, in order: its address and
    /// message.
    pub fn published(&self) -> Vec<(String, Message)> {
        lock(&self.rules).published.clone()
    }

    /// Inboxes fail to open with `error()` from now on.
    pub fn fail_inboxes(&self, error: impl Fn() -> TransportError + Send + Sync + 'static) {
        lock(&self.rules).inbox_error = Some(Arc::new(error));
    }

    /// Takes the next consumer over: it hands out what the test sends
    /// through the returned [`Feed`] (deliveries it made, or read errors)
    /// instead of the broker's.
    pub fn feed(&self) -> Feed {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.rules).feed = Some(rx);
        Feed(tx)
    }

    /// The fed consumer reports its readiness through `signal`.
    pub fn readiness(&self, signal: ReadinessSignal) {
        lock(&self.rules).readiness = Some(signal);
    }

    /// Every delivery from now on says it is the `attempt`th (as after a
    /// Redis claim or a Kafka redelivery).
    pub fn mark_attempts(&self, attempt: u32) {
        lock(&self.rules).attempt = Some(attempt);
    }

    /// The settlements asked for so far, in order: `ack`, `release`,
    /// `dead-letter <to> <payload>` or `reply <to> <payload>`.
    pub fn settlements(&self) -> Vec<String> {
        lock(&self.rules).settlements.clone()
    }

    /// From now on a settlement handed over with
    /// [`Acknowledge::settle_then`] is held: written down, its outcome not
    /// reported (and the broker not told) until [`report_held`](Self::report_held),
    /// as a transport that settles in batches reports after the request's
    /// task has ended.
    pub fn hold_settlements(&self) {
        lock(&self.rules).holding = true;
    }

    /// How many settlements are held.
    pub fn held(&self) -> usize {
        lock(&self.rules).held.len()
    }

    /// Reports every settlement held so far as done.
    pub fn report_held(&self) {
        let held = std::mem::take(&mut lock(&self.rules).held);
        for then in held {
            then(Ok(()));
        }
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").finish_non_exhaustive()
    }
}

impl Feed {
    /// Hands `delivery` out.
    pub fn deliver(&self, delivery: Delivery) {
        let _ = self.0.send(Ok(delivery));
    }

    /// Hands `message` out, as a delivery whose settlements only the
    /// script sees.
    pub fn send(&self, message: Message) {
        self.deliver(Delivery::new(message, Unsettled));
    }

    /// The consumer's next read fails with `error`.
    pub fn fail(&self, error: TransportError) {
        let _ = self.0.send(Err(error));
    }
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let (stalled, failure) = {
            let mut rules = lock(&self.script);
            *rules.tries.entry(address.to_owned()).or_default() += 1;
            let failure = match rules.failing.get_mut(address) {
                Some((left, error)) if *left > 0 => {
                    *left -= 1;
                    Some(error())
                }
                _ => None,
            };
            (rules.stalled, failure)
        };
        if stalled {
            std::future::pending::<()>().await;
        }
        if let Some(error) = failure {
            return Err(error);
        }
        lock(&self.script)
            .published
            .push((address.to_owned(), message.clone()));
        self.broker.publish(address, message).await
    }

    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let rules = self.script.clone();
        let (feed, readiness) = {
            let mut script = lock(&self.script);
            (script.feed.take(), script.readiness.clone())
        };
        let deliveries = match feed {
            Some(mut feed) => {
                Deliveries::new(futures_util::stream::poll_fn(move |cx| feed.poll_recv(cx)))
            }
            None => self.broker.consume(address, group, demand).await?,
        };
        let deliveries = deliveries.filter_map(move |delivery| {
            let rules = rules.clone();
            std::future::ready(Some(delivery.map(|d| Self::wrap(&rules, d))))
        });
        Ok(match readiness {
            Some(signal) => deliveries.with_readiness(signal),
            None => deliveries,
        })
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        if let Some(error) = &lock(&self.script).inbox_error {
            return Err(error());
        }
        self.broker.inbox().await
    }

    async fn broadcast(&self, address: &str, message: Message) -> Result<(), TransportError> {
        self.broker.broadcast(address, message).await
    }

    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        self.broker.subscribe(address).await
    }

    async fn members(
        &self,
        address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        self.broker.members(address, group).await
    }

    fn service_address(&self, service: &str) -> String {
        self.broker.service_address(service)
    }
}

/// The acknowledger of a fed message: settling it changes nothing.
struct Unsettled;

#[async_trait]
impl Acknowledge for Unsettled {
    async fn settle(self: Box<Self>, _how: Settle) -> Result<(), SettleError> {
        Ok(())
    }
}

/// Writes each settlement down, holds it if the script says so, and
/// passes it on.
struct ScriptedAck {
    acker: Box<dyn Acknowledge>,
    rules: Arc<Mutex<Rules>>,
}

impl ScriptedAck {
    fn write_down(&self, how: &mut Settle) {
        let mut line = how.as_str().to_owned();
        if let Some((to, message)) = how.reply_mut() {
            line = format!("{line} {to} {}", String::from_utf8_lossy(&message.payload));
        }
        lock(&self.rules).settlements.push(line);
    }
}

#[async_trait]
impl Acknowledge for ScriptedAck {
    async fn settle(self: Box<Self>, mut how: Settle) -> Result<(), SettleError> {
        self.write_down(&mut how);
        self.acker.settle(how).await
    }

    async fn settle_then(self: Box<Self>, mut how: Settle, then: OnSettled) {
        self.write_down(&mut how);
        let then = {
            let mut rules = lock(&self.rules);
            if rules.holding {
                rules.held.push(then);
                return;
            }
            then
        };
        self.acker.settle_then(how, then).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::wire::header;

    #[tokio::test]
    async fn fed_deliveries_are_handed_out_and_their_settlements_written_down() {
        let (transport, script) = ScriptedTransport::new();
        let feed = script.feed();
        script.mark_attempts(3);
        let mut deliveries = transport
            .consume("q", "g", Demand::unbounded())
            .await
            .unwrap();
        feed.send(Message::new("one").with_header(header::REPLY_TO, "inbox"));
        feed.fail(TransportError::Unavailable("away".into()));
        let first = deliveries.next().await.unwrap().unwrap();
        assert_eq!(
            (first.message().payload.as_ref(), first.attempt()),
            (&b"one"[..], Some(3))
        );
        let reply = Message::new("answer");
        first
            .settle(Settle::Reply {
                to: "inbox".into(),
                message: reply,
            })
            .await
            .unwrap();
        assert!(deliveries.next().await.unwrap().is_err());
        assert_eq!(script.settlements(), ["reply inbox answer"]);
    }

    #[tokio::test]
    async fn publishes_fail_as_scripted_then_reach_the_broker() {
        let (transport, script) = ScriptedTransport::new();
        let mut consumer = transport
            .consume("q", "g", Demand::unbounded())
            .await
            .unwrap();
        script.fail_publishes("q", 1, || TransportError::Rejected("no".into()));
        let refused = transport.publish("q", Message::new("a")).await;
        assert!(matches!(refused, Err(TransportError::Rejected(_))));
        transport.publish("q", Message::new("b")).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(delivery.message().payload, "b");
        assert_eq!(script.publish_tries("q"), 2);
        assert_eq!(script.published().len(), 1);
    }
}
