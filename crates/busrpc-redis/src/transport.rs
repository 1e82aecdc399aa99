//! The Redis Streams transport: what it is, and how it is reached.

use std::sync::Arc;

use async_trait::async_trait;
use busrpc_core::transport::{Deliveries, Demand, Inbox, Member, Transport, TransportError};
use busrpc_core::Message;

use crate::broadcast;
use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::consumer;
use crate::entries::xadd_reply;
use crate::inbox;
use crate::publish::Admission;
use crate::settle;

/// The Redis Streams transport.
///
/// - Requests of service `S` are entries of the stream `{prefix}:S`, read by
///   the consumer group `S`; each server instance is a consumer of its own.
/// - A reply inbox is the stream `{prefix}:inbox:{id}`, capped and expiring.
/// - Entry fields: `payload` (the JSON-RPC bytes) and one field per header.
/// - A request delivered more than `max_deliveries` times is handed to its
///   server marked exhausted; the server answers it -32001 and moves it to
///   `{prefix}:S:dead`.
///
/// Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisTransport {
    connection: Arc<Connection>,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.connection.config)
            .field("instance", &self.connection.instance)
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Connects to `redis://[user:password@]host:port[/db][?options]` (or
    /// `rediss://` with the `tls` feature); see [`RedisConfig`] for the options.
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let config = RedisConfig::from_url(url)?;
        // A setting refused below came from the URL: say so with it.
        Self::connect_with(config).await.map_err(|e| match e {
            TransportError::InvalidConfig(reason) => TransportError::InvalidUrl {
                url: url.to_owned(),
                reason,
            },
            e => e,
        })
    }

    /// Connects with `config`, built with [`RedisConfig::new`] and its
    /// setters (or parsed from a URL). A wrong password or an unknown ACL
    /// user fails with [`TransportError::PermissionDenied`] (Redis' own words, no
    /// secret in them); settings that cannot be used with
    /// [`TransportError::InvalidConfig`].
    pub async fn connect_with(config: RedisConfig) -> Result<Self, TransportError> {
        config.check().map_err(TransportError::InvalidConfig)?;
        Ok(Self {
            connection: Arc::new(Connection::open(config).await?),
            admission: Arc::default(),
        })
    }

    /// The options in force.
    pub fn config(&self) -> &RedisConfig {
        &self.connection.config
    }

    /// The dead-letter stream of the queue at `address`.
    pub fn dead_letter_address(address: &str) -> String {
        settle::dead_letter_address(address)
    }
}

#[async_trait]
impl Transport for RedisTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let connection = &*self.connection;
        if address.starts_with(&connection.inbox_prefix) {
            connection
                .query(&xadd_reply(
                    address,
                    &message,
                    connection.config.inbox_max_len,
                ))
                .await
                .map(drop)
        } else {
            self.admission.add(connection, address, &message).await
        }
    }

    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        consumer::join(self.connection.clone(), address, group, demand).await
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        inbox::open(self.connection.clone()).await
    }

    /// An entry of the stream `{address}:broadcast` (capped at about 1000
    /// entries, expiring 10 minutes after the last), which every server
    /// reads with `XREAD`.
    async fn broadcast(&self, address: &str, message: Message) -> Result<(), TransportError> {
        broadcast::send(&self.connection, address, &message).await
    }

    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        broadcast::subscribe(self.connection.clone(), address)
            .await
            .map(Some)
    }

    /// The group's consumers whose alive key vouches for them: a server
    /// that stopped cleanly is gone at once, one that died within three
    /// keep-alive periods (a third of `claim_idle`, or of
    /// `dead_consumer_idle` if shorter: 5 s with the defaults).
    async fn members(
        &self,
        address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        consumer::members(&self.connection, address, group).await
    }

    fn admin(&self) -> Option<&dyn busrpc_core::transport::Admin> {
        Some(self)
    }

    fn service_address(&self, service: &str) -> String {
        // Called on every call: one allocation, where format! takes two.
        let prefix = &self.connection.config.prefix;
        let mut address = String::with_capacity(prefix.len() + 1 + service.len());
        address.push_str(prefix);
        address.push(':');
        address.push_str(service);
        address
    }
}
