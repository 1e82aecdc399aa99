#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lowest first; an import only points to a lower one, and the pipeline
// dialect never imports the busrpc dialect (scripts/check-layers.sh).
mod admin; // the operator's side: services, lag, dead letters
mod config; // KafkaConfig: the URL and the builder
mod connection; // the producer, the admin client, what errors mean
mod consumer; // the consumer-thread kit both dialects read with
mod members; // who serves a queue: its group's members
mod mock; // librdkafka's in-process mock cluster
mod native; // the busrpc dialect: KafkaTransport
mod pipeline; // the original library's dialect: PipelineTransport
#[cfg(feature = "raw")]
#[cfg_attr(docsrs, doc(cfg(feature = "raw")))]
pub mod raw;
mod record; // a record as a message
mod topics; // topics made, looked up, remembered

use std::sync::Arc;

use busrpc_core::transport::{Transport, TransportError};

pub use config::{
    Brokers, Dialect, InboxMode, KafkaConfig, SaslMechanism, BROKER_DEFAULT_REPLICATION,
    LIBRDKAFKA_DEFAULTS, URL_OPTIONS,
};
use connection::of_url;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use mock::MockBrokers;
pub use native::{KafkaStats, KafkaTransport};
pub use pipeline::{PipelineTransport, RESULTS_TOPIC};

/// Connects to a `kafka://` or `kafka-mock://` URL with the transport of
/// its dialect: [`KafkaTransport`], or [`PipelineTransport`] for
/// `dialect=pipeline`.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>, TransportError> {
    let config = KafkaConfig::from_url(url)?;
    let transport: Arc<dyn Transport> = match config.dialect {
        Dialect::Busrpc => Arc::new(
            KafkaTransport::connect_with(config)
                .await
                .map_err(|e| of_url(url, e))?,
        ),
        Dialect::Pipeline { .. } => Arc::new(
            PipelineTransport::connect_with(config)
                .await
                .map_err(|e| of_url(url, e))?,
        ),
    };
    Ok(transport)
}
