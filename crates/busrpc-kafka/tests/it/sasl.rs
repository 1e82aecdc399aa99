//! SASL/SCRAM against a Tansu of the test's own that requires
//! authentication: a user whose password holds '&', '=', '@' and '%' logs
//! in from a URL (percent-encoded) and from a `KafkaConfig` (as it is),
//! serves and calls; a wrong password is refused without the password in
//! the error.
//!
//! Ignored (run it with `cargo test -p busrpc-kafka --all-features --test
//! it -- --ignored sasl::`): Tansu 0.6.0 keeps users only in its SQLite storage,
//! and there two runs in five crashed librdkafka (a NULL topic name
//! compared in `rd_kafka_metadata_cache_find`, on its main thread) and a
//! group's last commit and leave were never answered. What can run in CI,
//! the configuration against librdkafka's own checks, is in kafka.rs. A
//! crashed run leaves its Tansu running (no destructor runs):
//! `pkill -f sqlite://users.db`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use busrpc_core::{Client, Router, RpcError, Server, Transport, TransportError};
use busrpc_kafka::{KafkaConfig, KafkaTransport, SaslMechanism};

const PASSWORD: &str = "p&ss=w@rd%";

/// A Tansu on a free port whose storage (a SQLite file in a directory of
/// its own) holds the user `app`; killed, and its directory removed, on drop.
struct AuthenticatingTansu {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl AuthenticatingTansu {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("busrpc-sasl-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let mut tansu = Self {
            port,
            dir,
            child: None,
        };
        // Users are created through the broker, so first without
        // authentication, then again with it on the same storage.
        tansu.run(false)?;
        let created = Command::new("tansu")
            .args(["user", "create", "app", PASSWORD, "--mechanism", "scram512"])
            .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        assert!(created.success(), "tansu user create failed");
        tansu.stop();
        tansu.run(true)?;
        Some(tansu)
    }

    fn run(&mut self, authentication: bool) -> Option<()> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new("tansu");
        command
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://users.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            command.arg("--authentication");
        }
        self.child = Some(command.spawn().ok()?);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AuthenticatingTansu {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Tansu 0.6.0's SQLite storage crashes librdkafka now and then; see the top of this file"]
async fn a_scram_user_serves_and_calls_and_a_wrong_password_is_refused() {
    if Command::new("tansu").arg("--version").output().is_err() {
        busrpc_conformance::cannot_run(
            "a_scram_user_serves_and_calls_and_a_wrong_password_is_refused",
            "no tansu binary (scripts/test.sh installs it)",
        );
        return;
    }
    let tansu = AuthenticatingTansu::start().expect("tansu started");
    let port = tansu.port;
    // One record per batch: see conformance_tansu.rs.
    let url = format!(
        "kafka://app:p%26ss%3Dw%40rd%25@127.0.0.1:{port}?sasl.mechanism=SCRAM-SHA-512&batch.num.messages=1"
    );
    let transport: Arc<dyn Transport> = Arc::new(KafkaTransport::connect(&url).await.unwrap());
    let router = Router::new().method("echo", |(text,): (String,)| async move {
        Ok::<_, RpcError>(format!("RPC {text}!"))
    });
    let server = Server::new(transport, "sasl", router)
        .start()
        .await
        .unwrap();
    let config = KafkaConfig::new(format!("127.0.0.1:{port}"))
        .sasl(SaslMechanism::ScramSha512, "app", PASSWORD)
        .option("batch.num.messages", "1");
    let built = KafkaTransport::connect_with(config).await.unwrap();
    let client = Client::connect(Arc::new(built)).await.unwrap();
    let reply: String = client.call("sasl", "echo", ("in",)).await.unwrap();
    assert_eq!(reply, "RPC in!");
    client.close().await;
    // Not `shutdown()`: on Tansu 0.6.0's SQLite storage (the only one that
    // keeps the user across the restart above) the group's last commit and
    // leave are never answered, authentication or not, and a graceful
    // shutdown waits for them. What this test is about is done.
    server.abort();

    let wrong = format!("kafka://app:not-the-secret@127.0.0.1:{port}?sasl.mechanism=SCRAM-SHA-512");
    let err = match KafkaTransport::connect(&wrong).await {
        Ok(_) => panic!("logged in with a wrong password"),
        Err(e) => e,
    };
    // librdkafka reports the failed login only to its error callback,
    // which the transport keeps to say so.
    let shown = err.to_string();
    assert!(
        matches!(err, TransportError::PermissionDenied(_)),
        "final, not worth retrying: {err:?}"
    );
    assert!(shown.contains("refused the login"), "{shown}");
    assert!(
        !shown.contains("not-the-secret") && !shown.contains(PASSWORD),
        "{shown}"
    );
}
