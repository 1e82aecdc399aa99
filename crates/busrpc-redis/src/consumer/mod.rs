//! A server's consumer of its service's group: claims what dead consumers
//! left pending ([`claim`]), then reads new entries, no more at a time
//! than its server can take now; keeps what it holds alive, removes dead
//! consumers from the group ([`forget`]) and leaves the
//! group cleanly ([`keep_alive`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busrpc_core::transport::{
    Deliveries, Delivery, Demand, Exhausted, Readiness, ReadinessSignal, TransportError,
};
use futures_util::stream;
use redis::Value;
use tokio::sync::oneshot;

use crate::connection::{millis, unavailable, BlockingConnection, Connection};
use crate::entries::{entries_of_first_stream, Entry};
use crate::settle::{dead_letter_address, release_cmd, InHand, RedisAck, SettleQueue};

mod claim;
mod forget;
mod keep_alive;
mod members;

use keep_alive::{keep_alive, leave, vouch};
pub(crate) use members::members;

/// Joins `group` of the request stream at `address` (creating both if need
/// be) as a new consumer.
pub(crate) async fn join(
    connection: Arc<Connection>,
    address: &str,
    group: &str,
    demand: Demand,
) -> Result<Deliveries, TransportError> {
    create_group(&connection, address, group).await?;
    let (address, group): (Arc<str>, Arc<str>) = (address.into(), group.into());
    let consumer: Arc<str> =
        busrpc_core::transport::member_name(connection.config.name.as_deref()).into();
    // Counted as a live server from here on (see `members`): the consumer
    // exists before its first read, and vouches for itself.
    let mut pipe = redis::pipe();
    pipe.cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&*address)
        .arg(&*group)
        .arg(&*consumer)
        .ignore();
    vouch(
        &mut pipe,
        &forget::alive_key(&address, &consumer),
        &connection.config,
    );
    connection.run(&pipe).await?;
    let settle = SettleQueue::start(connection.clone(), address.clone(), group.clone());
    let in_hand = Arc::new(InHand::default());
    let (stop_keeping, stopped) = oneshot::channel();
    let (closing, left_in_hand) = oneshot::channel();
    tokio::spawn(keep_alive(
        connection.clone(),
        [address.clone(), group.clone(), consumer.clone()],
        in_hand.clone(),
        stopped,
    ));
    let readiness = ReadinessSignal::new(Readiness::Ready);
    let reader = GroupReader {
        readiness: readiness.clone(),
        reported_ready: true,
        reads: connection.blocking().await?,
        consumer,
        settle,
        address,
        group,
        buffer: VecDeque::new(),
        next_claim: Instant::now(),
        away: false,
        next_forget: Instant::now(),
        forget_failed: false,
        in_hand,
        demand,
        _stop_keeping: stop_keeping,
        closing: Some(closing),
        connection: connection.clone(),
    };
    let names = [
        reader.address.clone(),
        reader.group.clone(),
        reader.consumer.clone(),
    ];
    tracing::debug!(address = %reader.address, group = %reader.group, consumer = %reader.consumer, "joined the group");
    let deliveries = Deliveries::new(stream::unfold(reader, |mut reader| async move {
        let next = reader.next().await;
        Some((next, reader))
    }));
    Ok(deliveries
        .with_member(names[2].clone())
        .with_readiness(readiness)
        .on_close(leave(connection, names, left_in_hand)))
}

/// Creates the group, and the stream if need be, reading from the
/// beginning so that requests sent before any server started are served.
pub(crate) async fn create_group(
    connection: &Connection,
    address: &str,
    group: &str,
) -> Result<(), TransportError> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(address)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM");
    match cmd.query_async::<Value>(&mut connection.commands()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(unavailable(e)),
    }
}

/// One consumer of a service's group: claims what dead consumers left
/// pending, then reads new entries, no more at a time than its server can
/// take now.
struct GroupReader {
    connection: Arc<Connection>,
    /// Ready while the group's commands succeed; told only of changes
    /// (`reported_ready` is what it was last told).
    readiness: ReadinessSignal,
    reported_ready: bool,
    settle: SettleQueue,
    reads: BlockingConnection,
    address: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
    /// Taken entries not yet handed out, each with which delivery it is.
    buffer: VecDeque<(Entry, u64)>,
    next_claim: Instant,
    /// The last group command failed: Redis is away, or was until now.
    away: bool,
    /// When to look for dead consumers next ([`forget`]).
    next_forget: Instant,
    /// Looking for them has failed once (warned about then, not again).
    forget_failed: bool,
    in_hand: Arc<InHand>,
    demand: Demand,
    /// Dropped with the reader: stops [`keep_alive`].
    _stop_keeping: oneshot::Sender<()>,
    /// Where the reader, dropped, hands what it still holds to a clean
    /// close ([`leave`]) instead of handing it back in the background.
    closing: Option<oneshot::Sender<Vec<String>>>,
}

impl GroupReader {
    /// Most entries to read or claim now: what the server can take.
    fn wanted(&self) -> u64 {
        let demand = u64::try_from(self.demand.now()).unwrap_or(u64::MAX);
        self.connection.config.read_count.min(demand).max(1)
    }

    /// Adds `entry` to what this consumer holds and will hand out.
    fn hold(&mut self, entry: Entry, attempt: u64) {
        self.in_hand.lock().insert(entry.id.clone());
        self.buffer.push_back((entry, attempt));
    }

    async fn next(&mut self) -> Result<Delivery, TransportError> {
        loop {
            if let Some((entry, deliveries)) = self.buffer.pop_front() {
                let published = entry.added_at();
                let request = Arc::new(entry.message);
                let max = self.connection.config.max_deliveries;
                let exhausted = deliveries > max;
                let acker = RedisAck {
                    connection: self.connection.clone(),
                    address: self.address.clone(),
                    group: self.group.clone(),
                    consumer: self.consumer.clone(),
                    id: entry.id,
                    deliveries,
                    request: exhausted.then(|| request.clone()),
                    settle: self.settle.clone(),
                    in_hand: self.in_hand.clone(),
                };
                let attempt = u32::try_from(deliveries).unwrap_or(u32::MAX);
                let mut delivery = Delivery::shared(request, acker).with_attempt(attempt);
                if let Some(at) = published {
                    delivery = delivery.with_published(at);
                }
                if exhausted {
                    let dead = dead_letter_address(&self.address);
                    return Ok(delivery.exhausted(Exhausted::new(deliveries, max, dead)));
                }
                return Ok(delivery);
            }
            let now = Instant::now();
            if now >= self.next_claim {
                self.next_claim = now + self.claim_interval();
                self.claim().await?;
                // Dead consumers go once their requests are claimed; as
                // rarely as claims or rarer, so off the reading path.
                if let Some(every) = self.forget_interval().filter(|_| now >= self.next_forget) {
                    self.next_forget = now + every;
                    self.forget_dead_consumers().await;
                }
                continue;
            }
            let block = self
                .next_claim
                .saturating_duration_since(now)
                .min(self.connection.config.block);
            self.read_new(block.max(Duration::from_millis(1))).await?;
        }
    }

    /// Runs a group command on this consumer's connection, expected to take
    /// about `expected` (a read's BLOCK; nothing otherwise); a group lost
    /// with its stream (a Redis restart without persistence) is created
    /// again.
    async fn query(
        &mut self,
        cmd: &redis::Cmd,
        expected: Duration,
    ) -> Result<Value, TransportError> {
        let started = Instant::now();
        let result = match self.reads.query(&self.connection, cmd).await {
            Ok(result) => result,
            Err(e) => {
                self.away = true;
                self.defer_claims(false);
                self.report(Err(&e));
                return Err(e);
            }
        };
        // A failure, or a stall long enough that the keep-alives of every
        // consumer stalled as well (they run every claim_idle / 3), is an
        // outage: while Redis was away, the entries live peers hold grew
        // idle without their owners being able to say otherwise. Claiming
        // them the moment Redis is back would take them from their owners
        // and run them twice, so claims wait claim_idle from here, which
        // gives each peer's keep-alive three tries first. From the first
        // command that succeeds after failures too: a reconnection that
        // began during the outage and ended after it is no stall, and the
        // last failure may be seconds before Redis was back.
        let stalled = started.elapsed() > expected + self.connection.config.claim_idle / 2;
        let back = std::mem::replace(&mut self.away, result.is_err());
        if result.is_err() || stalled || back {
            self.defer_claims(stalled);
        }
        let result = match result {
            Ok(value) => Ok(value),
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(address = %self.address, group = %self.group, "the group is gone; creating it again");
                create_group(&self.connection, &self.address, &self.group)
                    .await
                    .map(|()| Value::Nil)
            }
            Err(e) => Err(unavailable(e)),
        };
        self.report(result.as_ref().map(|_| ()));
        result
    }

    /// Tells the server's readiness how the last group command went.
    fn report(&mut self, outcome: Result<(), &TransportError>) {
        match outcome {
            Ok(()) if !self.reported_ready => {
                self.reported_ready = true;
                self.readiness.ready();
            }
            Ok(()) => {}
            Err(e) => {
                self.reported_ready = false;
                self.readiness
                    .not_ready(format!("reading the request stream failed: {e}"));
            }
        }
    }

    async fn read_new(&mut self, block: Duration) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&*self.consumer)
            .arg("COUNT")
            .arg(self.wanted())
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(&*self.address)
            .arg(">");
        let reply = self.query(&cmd, block).await?;
        // `>`: entries never delivered to the group before.
        for entry in entries_of_first_stream(reply) {
            self.hold(entry, 1);
        }
        Ok(())
    }
}

impl Drop for GroupReader {
    fn drop(&mut self) {
        // Entries read but never handed out, and any handed out still
        // unsettled (a server drops its deliveries only once everything
        // finished is settled): make them claimable at once rather than
        // after `claim_idle`.
        self.buffer.clear();
        let ids = self.in_hand.ids();
        let ids = match self.closing.take() {
            // A clean close hands them back, and waits for it.
            Some(closing) => match closing.send(ids) {
                Ok(()) => return,
                Err(ids) => ids,
            },
            None => ids,
        };
        self.hand_back_in_background(ids);
    }
}

impl GroupReader {
    fn hand_back_in_background(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (connection, address, group, consumer) = (
            self.connection.clone(),
            self.address.clone(),
            self.group.clone(),
            self.consumer.clone(),
        );
        runtime.spawn(async move {
            let cmd = release_cmd(&connection, &address, &group, &consumer, &ids);
            if let Err(e) = connection.query(&cmd).await {
                tracing::debug!(error = %e, "handing back unread entries failed; they will be claimed after claim_idle");
            }
        });
    }
}
