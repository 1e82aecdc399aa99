//! A clean shutdown logs nothing above INFO: a server and a client on
//! librdkafka's mock cluster serve, call, close and shut down, and neither
//! busrpc (tracing) nor librdkafka (through the `log` crate) says anything
//! at WARN or ERROR. A test binary of its own: it installs the process's
//! logger and subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::{Client, Router, RpcError, Server, Transport};
use busrpc_kafka::KafkaTransport;

/// What was said at WARN or above, by either logging facade.
static LOUD: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            LOUD.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

struct Writer;

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOUD.lock()
            .unwrap()
            .push(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_logs_nothing_above_info() {
    log::set_logger(&Logger).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(|| Writer)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let transport: Arc<dyn Transport> =
        Arc::new(KafkaTransport::connect("kafka-mock://quiet").await.unwrap());
    let router = Router::new().method("echo", |(text,): (String,)| async move {
        Ok::<_, RpcError>(text)
    });
    let server = Server::new(transport.clone(), "quiet", router)
        .start()
        .await
        .unwrap();
    let client = Client::connect(transport.clone()).await.unwrap();
    let reply: String = client.call("quiet", "echo", ("x",)).await.unwrap();
    assert_eq!(reply, "x");
    client.close().await;
    server.shutdown().await;
    drop((client, server, transport));
    // librdkafka's threads report what they saw as they wind down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loud = LOUD.lock().unwrap().clone();
    assert!(loud.is_empty(), "logged above INFO: {loud:#?}");
}
