//! Bounds on messages and batches.

/// Bounds on what a client sends and a server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload in bytes, of a request and of a reply (default
    /// 1 MiB). A transport may have a smaller limit of its own (Kafka:
    /// librdkafka's `message.max.bytes`, 1,000,000 bytes by default, less
    /// room for headers); a server answers a reply over either with a small
    /// -32603 instead of sending it.
    pub max_message_bytes: usize,
    /// Most requests in one batch. Default 1000.
    pub max_batch_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_batch_len: 1000,
        }
    }
}

impl Limits {
    /// Sets the largest payload in bytes.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets the most requests in one batch.
    #[must_use]
    pub fn max_batch_len(mut self, len: usize) -> Self {
        self.max_batch_len = len;
        self
    }
}
