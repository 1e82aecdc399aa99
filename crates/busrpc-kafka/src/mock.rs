//! librdkafka's in-process mock cluster, behind a handle that can cross
//! threads.
//!
//! The cluster is a C object that is neither `Send` nor `Sync`, so it lives
//! on a thread of its own and is driven by messages; the handle is a channel
//! to that thread. When the last handle goes, so do the thread and the cluster.
//!
//! Without the `mock` feature the module is compiled all the same, so that
//! the transport keeps one code path, but `kafka-mock://` URLs are refused
//! and nothing here is public: its fault-injection methods go unused.
#![cfg_attr(not(feature = "mock"), allow(dead_code, unreachable_pub))]

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use busrpc_core::TransportError;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

type Reply = mpsc::Sender<Result<(), String>>;

enum Command {
    CreateTopic(String, i32, Reply),
    BrokerDown(i32, Reply),
    BrokerUp(i32, Reply),
    RoundTripTime(i32, Duration, Reply),
    GroupCoordinator(String, i32, Reply),
    PartitionLeader(String, i32, i32, Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
}

/// A running mock cluster.
#[derive(Debug)]
pub struct MockBrokers {
    commands: Mutex<mpsc::Sender<Command>>,
    bootstrap: String,
}

impl MockBrokers {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self, TransportError> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (ready, started) = mpsc::channel();
        std::thread::Builder::new()
            .name("kafka-mock".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok(cluster.bootstrap_servers()));
                // Serve until every handle is gone, then drop the cluster here.
                for command in inbox {
                    let (outcome, reply) = match command {
                        Command::CreateTopic(topic, partitions, reply) => {
                            (cluster.create_topic(&topic, partitions, 1), reply)
                        }
                        Command::BrokerDown(id, reply) => (cluster.broker_down(id), reply),
                        Command::BrokerUp(id, reply) => (cluster.broker_up(id), reply),
                        Command::RoundTripTime(id, delay, reply) => {
                            (cluster.broker_round_trip_time(id, delay), reply)
                        }
                        Command::GroupCoordinator(group, id, reply) => (
                            cluster.coordinator(MockCoordinator::Group(group), id),
                            reply,
                        ),
                        Command::PartitionLeader(topic, partition, id, reply) => {
                            (cluster.partition_leader(&topic, partition, Some(id)), reply)
                        }
                        Command::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            (Ok(()), reply)
                        }
                    };
                    let _ = reply.send(outcome.map_err(|e| e.to_string()));
                }
            })
            .map_err(|e| TransportError::Other(Box::new(e)))?;
        let bootstrap = started
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| TransportError::Other(Box::new(e)))?
            .map_err(|e| TransportError::Other(e.into()))?;
        Ok(Self {
            commands: Mutex::new(commands),
            bootstrap,
        })
    }

    /// The process-wide mock cluster called `name`, started on first use and
    /// stopped when no transport refers to it any more.
    pub fn named(name: &str, brokers: i32) -> Result<Arc<Self>, TransportError> {
        static NAMED: OnceLock<Mutex<HashMap<String, Weak<MockBrokers>>>> = OnceLock::new();
        let mut named = NAMED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        named.retain(|_, cluster| cluster.strong_count() > 0);
        if let Some(cluster) = named.get(name).and_then(Weak::upgrade) {
            return Ok(cluster);
        }
        let cluster = Arc::new(Self::start(brokers)?);
        named.insert(name.to_owned(), Arc::downgrade(&cluster));
        Ok(cluster)
    }

    /// `bootstrap.servers` for clients of this cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn ask(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), TransportError> {
        let (reply, outcome) = mpsc::channel();
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(make(reply))
            .map_err(|_| TransportError::Closed)?;
        outcome
            .recv()
            .map_err(|_| TransportError::Closed)?
            .map_err(TransportError::Rejected)
    }

    /// Creates a topic (the mock cluster has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TransportError> {
        self.ask(|reply| Command::CreateTopic(topic.to_owned(), partitions, reply))
    }

    /// Takes broker `id` (1-based) down: its connections drop, requests fail.
    pub fn broker_down(&self, id: i32) -> Result<(), TransportError> {
        self.ask(|reply| Command::BrokerDown(id, reply))
    }

    /// Brings broker `id` back.
    pub fn broker_up(&self, id: i32) -> Result<(), TransportError> {
        self.ask(|reply| Command::BrokerUp(id, reply))
    }

    /// Delays every response of broker `id` by `delay` (a slow broker, or a
    /// slow network), until set back to zero.
    pub fn round_trip_time(&self, id: i32, delay: Duration) -> Result<(), TransportError> {
        self.ask(|reply| Command::RoundTripTime(id, delay, reply))
    }

    /// Makes broker `id` the coordinator of consumer group `group` (the
    /// full group id, prefix included).
    pub fn group_coordinator(&self, group: &str, id: i32) -> Result<(), TransportError> {
        self.ask(|reply| Command::GroupCoordinator(group.to_owned(), id, reply))
    }

    /// Makes broker `id` the leader of `topic`'s `partition`.
    pub fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        id: i32,
    ) -> Result<(), TransportError> {
        self.ask(|reply| Command::PartitionLeader(topic.to_owned(), partition, id, reply))
    }

    /// Makes the next produce requests fail with `errors`, one each, in order.
    pub fn fail_next_produces(&self, errors: Vec<RDKafkaRespErr>) -> Result<(), TransportError> {
        self.ask(|reply| Command::RequestErrors(RDKafkaApiKey::Produce, errors, reply))
    }

    /// Makes the next group joins (JoinGroup requests) fail with `errors`,
    /// one each, in order: a group ACL that refuses the server, say.
    pub fn fail_next_joins(&self, errors: Vec<RDKafkaRespErr>) -> Result<(), TransportError> {
        self.ask(|reply| Command::RequestErrors(RDKafkaApiKey::JoinGroup, errors, reply))
    }

    /// Makes the next heartbeats of group members fail with `errors`, one
    /// each, in order: a group ACL withdrawn while the server serves, say.
    pub fn fail_next_heartbeats(&self, errors: Vec<RDKafkaRespErr>) -> Result<(), TransportError> {
        self.ask(|reply| Command::RequestErrors(RDKafkaApiKey::Heartbeat, errors, reply))
    }

    /// Makes the next offset commits fail with `errors`, one each, in order.
    pub fn fail_next_commits(&self, errors: Vec<RDKafkaRespErr>) -> Result<(), TransportError> {
        self.ask(|reply| Command::RequestErrors(RDKafkaApiKey::OffsetCommit, errors, reply))
    }
}
