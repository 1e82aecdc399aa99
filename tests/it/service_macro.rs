//! `#[busrpc::service]`: the generated server against exact wire strings,
#![allow(missing_docs)]
//! the generated client's requests, typed errors both ways, the context.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc::memory::MemoryTransport;
use busrpc::{header, Client, Context, Error, Message, RpcError, Transport};
use busrpc_core::testing::ScriptedTransport;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Receipt {
    pub id: u64,
    pub cents: u64,
}

#[derive(Debug, PartialEq)]
pub enum BillingError {
    /// Code 1001, with the balance as data.
    InsufficientFunds {
        balance: u64,
    },
    Unknown(RpcError),
    Call(String),
}

/// What `rpc.discover` lists for every method returning a `BillingError`.
impl busrpc::openrpc::DeclaredErrors for BillingError {
    const ERRORS: &'static [(i32, &'static str)] = &[(1001, "insufficient funds")];
}

impl From<BillingError> for RpcError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::InsufficientFunds { balance } => {
                RpcError::new(1001, "insufficient funds")
                    .with_data(&serde_json::json!({ "balance": balance }))
            }
            BillingError::Unknown(e) => e,
            BillingError::Call(why) => RpcError::internal_error().with_data(&why),
        }
    }
}

impl From<Error> for BillingError {
    fn from(e: Error) -> Self {
        match e {
            Error::Rpc(e) if e.code() == 1001 => {
                let balance = e
                    .data_as::<serde_json::Value>()
                    .and_then(Result::ok)
                    .and_then(|d| d["balance"].as_u64())
                    .unwrap_or(0);
                BillingError::InsufficientFunds { balance }
            }
            Error::Rpc(e) => BillingError::Unknown(e),
            other => BillingError::Call(other.to_string()),
        }
    }
}

/// Money in, money out.
#[busrpc::service(name = "billing", version = "1.2.3")]
pub trait Billing {
    /// Charges an account.
    ///
    /// Fails with 1001 when the balance is short.
    async fn charge(&self, account: String, cents: u64) -> Result<Receipt, BillingError>;
    #[method(name = "refund.full")]
    async fn refund(&self, receipt: u64) -> Result<(), BillingError>;
    #[notification]
    async fn audit(&self, line: String);
    async fn whoami(&self, ctx: Context) -> Result<(String, String, Option<u32>), BillingError>;
    async fn optional(&self, a: u64, b: Option<u64>) -> Result<u64, Error>;
    #[method(params = "whole")]
    async fn sum(&self, numbers: Vec<i64>) -> Result<i64, RpcError>;
}

#[derive(Default)]
struct Bank {
    balance: AtomicU64,
    audit: Mutex<Vec<String>>,
}

impl Billing for Bank {
    async fn charge(&self, _account: String, cents: u64) -> Result<Receipt, BillingError> {
        let balance = self.balance.load(Ordering::SeqCst);
        if cents > balance {
            return Err(BillingError::InsufficientFunds { balance });
        }
        self.balance.fetch_sub(cents, Ordering::SeqCst);
        Ok(Receipt { id: 7, cents })
    }

    async fn refund(&self, _receipt: u64) -> Result<(), BillingError> {
        Ok(())
    }

    async fn audit(&self, line: String) {
        self.audit.lock().unwrap().push(line);
    }

    async fn whoami(&self, ctx: Context) -> Result<(String, String, Option<u32>), BillingError> {
        let who = ctx
            .headers()
            .get("x-caller")
            .unwrap_or("anonymous")
            .to_owned();
        Ok((ctx.method().to_owned(), who, ctx.attempt()))
    }

    async fn optional(&self, a: u64, b: Option<u64>) -> Result<u64, Error> {
        Ok(a + b.unwrap_or(100))
    }

    async fn sum(&self, numbers: Vec<i64>) -> Result<i64, RpcError> {
        Ok(numbers.iter().sum())
    }
}

async fn bank(balance: u64) -> (Arc<dyn Transport>, Arc<Bank>, busrpc::ServerHandle) {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let bank = Arc::new(Bank::default());
    bank.balance.store(balance, Ordering::SeqCst);
    let server = BillingServer::from_arc(bank.clone())
        .into_server(transport.clone())
        .start()
        .await
        .unwrap();
    (transport, bank, server)
}

/// Sends `payload` to the service as a foreign client would; the reply.
async fn ask(transport: &Arc<dyn Transport>, payload: &str) -> String {
    let mut inbox = transport.inbox().await.unwrap();
    let message = Message::new(payload.to_owned()).with_header(header::REPLY_TO, inbox.address());
    transport
        .publish(&transport.service_address("billing"), message)
        .await
        .unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut inbox),
    )
    .await
    .expect("a reply")
    .unwrap()
    .unwrap();
    String::from_utf8(reply.payload.to_vec()).unwrap()
}

#[tokio::test]
async fn the_generated_server_answers_exact_wire_strings() {
    let (transport, _bank, server) = bank(500).await;
    let cases = [
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":["acct-1",200],"id":1}"#,
            r#"{"jsonrpc":"2.0","result":{"id":7,"cents":200},"id":1}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":{"cents":100,"account":"acct-1"},"id":2}"#,
            r#"{"jsonrpc":"2.0","result":{"id":7,"cents":100},"id":2}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":["acct-1",900],"id":3}"#,
            r#"{"jsonrpc":"2.0","error":{"code":1001,"message":"insufficient funds","data":{"balance":200}},"id":3}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"refund.full","params":[7],"id":4}"#,
            r#"{"jsonrpc":"2.0","result":null,"id":4}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"refund","params":[7],"id":5}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":5}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":{"account":"a","cents":1,"tip":2},"id":6}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: unknown field `tip`, expected `account` or `cents` at line 1 column 30"},"id":6}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":["a"],"id":7}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: invalid length 1, expected a tuple of size 2 at line 1 column 5"},"id":7}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","params":["a",1,2],"id":11}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: 1 param(s) more than the method takes at line 1 column 9"},"id":11}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"optional","params":{"a":1},"id":8}"#,
            r#"{"jsonrpc":"2.0","result":101,"id":8}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"sum","params":[1,2,3,4],"id":9}"#,
            r#"{"jsonrpc":"2.0","result":10,"id":9}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"charge","id":10}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: invalid type: no params, expected params by position (an array) or by name (an object) at line 1 column 4"},"id":10}"#,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(ask(&transport, request).await, expected, "{request}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_generated_client_gets_typed_results_and_errors() {
    let (transport, bank, server) = bank(500).await;
    let client = BillingClient::new(Client::connect(transport).await.unwrap());
    assert_eq!(
        client.charge("acct-1".into(), 200).await,
        Ok(Receipt { id: 7, cents: 200 })
    );
    assert_eq!(
        client.charge("acct-1".into(), 900).await,
        Err(BillingError::InsufficientFunds { balance: 300 })
    );
    assert_eq!(client.refund(7).await, Ok(()));
    assert_eq!(client.optional(1, Some(2)).await.unwrap(), 3);
    assert_eq!(client.sum(vec![1, 2, 3]).await.unwrap(), 6);
    client.audit("hello".into()).await.unwrap();
    let caller = client.with_header("x-caller", "tests");
    assert_eq!(
        caller.whoami().await.unwrap(),
        ("whoami".to_owned(), "tests".to_owned(), Some(1))
    );
    let deadline = Duration::from_secs(10);
    let started = std::time::Instant::now();
    while bank.audit.lock().unwrap().is_empty() {
        assert!(started.elapsed() < deadline, "the notification never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*bank.audit.lock().unwrap(), ["hello"]);
    server.shutdown().await;
    client.client().close().await;
}

#[tokio::test]
async fn the_generated_client_sends_what_the_protocol_says() {
    let memory = MemoryTransport::new();
    let transport: Arc<dyn Transport> = Arc::new(memory.clone());
    let server = BillingServer::new(Bank::default())
        .into_server(transport)
        .start()
        .await
        .unwrap();
    // Keeps a copy of every message published through it.
    let (recording, script) = ScriptedTransport::over(memory);
    let client = BillingClient::new(Client::connect(Arc::new(recording)).await.unwrap())
        .with_header("x-tenant", "acme");
    let _ = client.charge("acct-1".into(), 5).await;
    client.audit("line".into()).await.unwrap();
    let _ = client.whoami().await;
    let sent = script.published();
    let requests: Vec<(&str, &str)> = sent
        .iter()
        .filter(|(to, _)| to == "busrpc.billing")
        .map(|(to, m)| (to.as_str(), std::str::from_utf8(&m.payload).unwrap()))
        .collect();
    assert_eq!(
        requests,
        [
            (
                "busrpc.billing",
                r#"{"jsonrpc":"2.0","method":"charge","params":["acct-1",5],"id":1}"#
            ),
            (
                "busrpc.billing",
                r#"{"jsonrpc":"2.0","method":"audit","params":["line"]}"#
            ),
            (
                "busrpc.billing",
                r#"{"jsonrpc":"2.0","method":"whoami","id":2}"#
            ),
        ]
    );
    let call = &sent[0].1.headers;
    assert_eq!(
        call.get(header::REPLY_TO),
        Some(client.client().inbox_address())
    );
    assert!(
        call.deadline().unwrap().is_some(),
        "a call carries its deadline"
    );
    assert_eq!(call.get("x-tenant"), Some("acme"));
    let notification = &sent[1].1.headers;
    assert_eq!(
        notification.get(header::REPLY_TO),
        None,
        "nobody waits for a notification"
    );
    assert_eq!(notification.get("x-tenant"), Some("acme"));
    client.client().close().await;
    server.shutdown().await;
}

fn validate_openrpc(document: &serde_json::Value) {
    let meta: serde_json::Value =
        serde_json::from_str(include_str!("../data/openrpc-meta-schema.json")).unwrap();
    let validator = jsonschema::draft7::new(&meta).expect("the meta-schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{document:#}");
}

#[tokio::test]
async fn every_service_answers_rpc_discover_with_a_valid_openrpc_document() {
    let (transport, _bank, server) = bank(0).await;
    let client = BillingClient::new(Client::connect(transport.clone()).await.unwrap());
    let document = client.discover().await.unwrap();
    validate_openrpc(&document);
    assert_eq!(document["openrpc"], "1.3.2");
    assert_eq!(document["info"]["title"], "billing");
    assert_eq!(document["info"]["version"], "1.2.3");
    assert_eq!(document["info"]["description"], "Money in, money out.");
    let methods = document["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "audit",
            "charge",
            "optional",
            "refund.full",
            "sum",
            "whoami"
        ]
    );
    let charge = &methods[1];
    assert_eq!(charge["summary"], "Charges an account.");
    assert_eq!(
        charge["description"],
        "Charges an account.\n\nFails with 1001 when the balance is short."
    );
    let params: Vec<(&str, bool)> = charge["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["required"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(params, [("account", true), ("cents", true)]);
    assert_eq!(
        charge["errors"].to_string(),
        r#"[{"code":1001,"message":"insufficient funds"}]"#,
        "the errors its error type declares"
    );
    let sum = &methods[4];
    assert!(sum.get("errors").is_none(), "RpcError declares none: {sum}");
    assert_eq!(
        methods[2]["params"][1]["required"], false,
        "an Option is not required"
    );
    assert!(
        methods[0].get("result").is_none(),
        "a notification has no result"
    );
    assert!(
        methods[5]["params"].as_array().unwrap().is_empty(),
        "the context is no param"
    );

    // A Router-built service: its methods by name, params undescribed.
    let plain = busrpc::Router::new().method("echo", |(text,): (String,)| async move {
        Ok::<_, RpcError>(text)
    });
    let plain_server = busrpc::Server::new(transport.clone(), "plain", plain)
        .start()
        .await
        .unwrap();
    let document: serde_json::Value = client
        .client()
        .call("plain", busrpc::DISCOVER_METHOD, ())
        .await
        .unwrap();
    validate_openrpc(&document);
    assert_eq!(document["methods"][0]["name"], "echo");
    assert_eq!(document["methods"][0]["x-busrpc-params"], "undescribed");
    plain_server.shutdown().await;
    client.client().close().await;
    server.shutdown().await;
}

/// Logs method, latency and outcome; and rejects calls without a token.
struct RequireToken {
    seen: Arc<Mutex<Vec<String>>>,
}

#[busrpc::async_trait]
impl busrpc::Middleware for RequireToken {
    async fn call(&self, ctx: &Context, next: busrpc::Next<'_>) -> busrpc::CallOutcome {
        if ctx.headers().get("authorization") != Some("Bearer sesame") {
            self.seen
                .lock()
                .unwrap()
                .push(format!("rejected {}", ctx.method()));
            return Err(RpcError::new(1003, "unauthorized"));
        }
        let outcome = next.run().await;
        let result = match &outcome {
            Ok(r) => r.get().to_owned(),
            Err(e) => e.code().to_string(),
        };
        self.seen
            .lock()
            .unwrap()
            .push(format!("{} {result}", ctx.method()));
        outcome
    }
}

struct Token;

#[busrpc::async_trait]
impl busrpc::ClientMiddleware for Token {
    async fn call(
        &self,
        call: &mut busrpc::OutgoingCall,
        next: busrpc::ClientNext<'_>,
    ) -> Result<Box<serde_json::value::RawValue>, Error> {
        call.headers.insert("authorization", "Bearer sesame");
        next.run(call).await
    }
}

#[tokio::test]
async fn middleware_wraps_every_call_and_can_refuse_one() {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bank = Bank::default();
    bank.balance.store(10, Ordering::SeqCst);
    let server = BillingServer::new(bank)
        .into_server(transport.clone())
        .middleware(RequireToken { seen: seen.clone() })
        .start()
        .await
        .unwrap();
    let plain = BillingClient::new(Client::connect(transport).await.unwrap());
    assert_eq!(
        plain.charge("a".into(), 1).await,
        Err(BillingError::Unknown(RpcError::new(1003, "unauthorized")))
    );
    let authorized = BillingClient::new(plain.client().with_middleware(Token));
    assert_eq!(authorized.charge("a".into(), 1).await.unwrap().cents, 1);
    assert_eq!(
        authorized.charge("a".into(), 100).await,
        Err(BillingError::InsufficientFunds { balance: 9 })
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "rejected charge",
            r#"charge {"id":7,"cents":1}"#,
            "charge 1001"
        ]
    );
    plain.client().close().await;
    server.shutdown().await;
}

/// A service whose methods say how long their callers wait.
#[busrpc::service(name = "reports")]
pub trait Reports {
    /// Quick, or nobody waits.
    #[method(timeout = "150ms")]
    async fn quick(&self, sleep_ms: u64) -> Result<(), Error>;
    /// Takes the client's own timeout.
    async fn plain(&self) -> Result<(), Error>;
}

struct Sleeper;

impl Reports for Sleeper {
    async fn quick(&self, sleep_ms: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        Ok(())
    }

    async fn plain(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn a_methods_own_timeout_holds_unless_the_caller_sets_one() {
    let memory = MemoryTransport::new();
    let transport: Arc<dyn Transport> = Arc::new(memory.clone());
    let server = ReportsServer::new(Sleeper)
        .into_server(transport)
        .start()
        .await
        .unwrap();
    let (recording, script) = ScriptedTransport::over(memory);
    let client = ReportsClient::new(Client::connect(Arc::new(recording)).await.unwrap());
    assert_eq!(client.client().timeout(), Duration::from_secs(30));
    // The method's 150 ms, not the client's 30 s.
    let err = client.quick(10_000).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(t) if t == Duration::from_millis(150)),
        "{err}"
    );
    client.plain().await.unwrap();
    // The caller's own wins, longer or shorter.
    client
        .with_timeout(Duration::from_secs(20))
        .quick(300)
        .await
        .unwrap();
    let err = client
        .with_header("x-tenant", "acme")
        .with_timeout(Duration::from_millis(50))
        .quick(10_000)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(t) if t == Duration::from_millis(50)),
        "{err}"
    );
    // The deadline each request carried: 150 ms, 30 s, 20 s and 50 ms out.
    let sent: Vec<u64> = script
        .published()
        .iter()
        .filter(|(to, _)| to == "busrpc.reports")
        .map(|(_, m)| m.headers.deadline().unwrap().unwrap().0)
        .collect();
    assert_eq!(sent.len(), 4);
    let spans: Vec<u64> = sent.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    assert!(
        spans[0] > 20_000,
        "plain's 30 s is far beyond quick's 150 ms"
    );
    assert!(sent[3] < sent[2], "50 ms ends before 20 s");
    client.client().close().await;
    server.shutdown().await;
}
