//! What an operator's tool reads and does on a broker beside serving: the
//! services it finds, how each one's queue stands, and its dead letters.
//! Read-only but for removing a dead letter: nothing here joins a group,
//! moves an offset or takes a request.

use std::time::SystemTime;

use async_trait::async_trait;

use super::TransportError;
use crate::wire::Message;

/// A transport's operator side ([`Transport::admin`](super::Transport::admin)).
#[async_trait]
pub trait Admin: Send + Sync {
    /// The services that have a request queue under this transport's
    /// prefix (made by their first server), sorted.
    async fn services(&self) -> Result<Vec<String>, TransportError>;

    /// How the request queue of `service` stands, or `None` when it has
    /// none (no server of it ever started on this broker).
    async fn queue(&self, service: &str) -> Result<Option<QueueState>, TransportError>;

    /// The dead letters of `service`, oldest first, at most `limit`.
    async fn dead_letters(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError>;

    /// Removes the dead letter `id` of `service` (once it has been replayed,
    /// or to purge it): `false` when there is none by that id.
    async fn remove_dead_letter(&self, service: &str, id: &str) -> Result<bool, TransportError>;
}

/// A service's request queue as the broker sees it, for its group (the
/// service's servers). What a broker cannot say is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueState {
    /// Requests the broker holds: Redis the stream's length (answered
    /// entries linger until trimmed), Kafka the records between each
    /// partition's start and end.
    pub length: u64,
    /// Requests not yet delivered to any server: Redis the group's lag,
    /// Kafka the sum over partitions of end minus committed offset.
    pub undelivered: Option<u64>,
    /// Requests delivered and not yet settled (Redis: the group's pending
    /// entries); Kafka cannot tell them from the undelivered.
    pub pending: Option<u64>,
    /// Per partition, where the broker has them (Kafka).
    pub partitions: Vec<PartitionLag>,
    /// How many dead letters the service has.
    pub dead_letters: u64,
}

impl QueueState {
    /// A queue holding `length` requests, with nothing else known.
    pub fn new(length: u64) -> Self {
        Self {
            length,
            ..Self::default()
        }
    }
}

/// One partition of a Kafka request topic.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// The offset the next record will have.
    pub end: i64,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Partition `partition`, ending at `end`, committed up to `committed`.
    pub fn new(partition: i32, end: i64, committed: Option<i64>) -> Self {
        Self {
            partition,
            end,
            committed,
        }
    }

    /// Records not yet committed: `None` before the group commits.
    pub fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.end - c).max(0))
    }
}

/// A request a service's servers gave up on: delivered more than
/// `max_deliveries` times (each time its server died or stopped with it),
/// never run, answered -32001 and kept here.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter queue: a Redis entry id, a Kafka
    /// `partition:offset`.
    pub id: String,
    /// The request as it came, with the headers the transport added
    /// (`dead-deliveries`, and where it was: `dead-id`, `dead-offset`).
    pub message: Message,
    /// When it was dead-lettered, if the broker says.
    pub at: Option<SystemTime>,
}

impl DeadLetter {
    /// The dead letter `id`, holding `message`.
    pub fn new(id: impl Into<String>, message: Message) -> Self {
        Self {
            id: id.into(),
            message,
            at: None,
        }
    }

    /// Sets [`at`](Self::at).
    #[must_use]
    pub fn with_at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }

    /// The dead request, decoded (MessagePack too) to JSON: one call or
    /// one notification. A batch, or a payload that is no JSON-RPC
    /// request, is [`TransportError::Rejected`] saying which.
    pub fn request(&self) -> Result<serde_json::Value, TransportError> {
        use crate::wire::codec::Codec;
        use serde_json::Value;
        let rejected = |why: String| TransportError::Rejected(why);
        let codec =
            Codec::from_content_type(self.message.headers.get(crate::wire::header::CONTENT_TYPE))
                .map_err(|e| rejected(e.to_string()))?;
        let json = codec
            .decode(&self.message.payload)
            .map_err(|e| rejected(e.to_string()))?;
        let request: Value =
            serde_json::from_slice(&json).map_err(|e| rejected(format!("not JSON: {e}")))?;
        match &request {
            Value::Object(o) if o.get("method").is_some_and(Value::is_string) => Ok(request),
            Value::Array(_) => Err(rejected(
                "it is a batch: replay its calls one by one".to_owned(),
            )),
            _ => Err(rejected("it is not a JSON-RPC request".to_owned())),
        }
    }

    /// How many times it was delivered, as its transport counted.
    pub fn deliveries(&self) -> Option<u64> {
        self.message.headers.get(DEAD_DELIVERIES)?.parse().ok()
    }
}

/// The header a transport adds to a dead letter: how often the request
/// was delivered.
pub const DEAD_DELIVERIES: &str = "dead-deliveries";

/// The header a replayed request carries: the id of the dead letter it
/// came from (docs/PROTOCOL.md).
pub const REPLAY_OF: &str = "replay-of";
