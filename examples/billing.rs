//! A typed service with everything around it: application errors that
//! carry data and come back to the client as the same Rust error, a
//! handler that reads its request's context, two middleware layers (one
//! logs every call, one refuses calls without a token), a client layer
//! that adds the token, the service's OpenRPC document, and a chain of
//! calls: the example calls billing, whose `charge` calls a third service,
//! the ledger, which runs under the example's own deadline.
//!
//! ```text
//! cargo run --example billing [-- --broker URL]
//! ```

mod common;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use busrpc::{
    CallOutcome, Client, ClientMiddleware, ClientNext, Context, Ending, Error, Middleware, Next,
    OutgoingCall, RpcError,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What a charge leaves behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    /// The receipt's number.
    pub id: u64,
    /// The account charged.
    pub account: String,
    /// How much, in cents.
    pub cents: u64,
}

/// What can go wrong, as the server sends it and the client gets it back.
#[derive(Debug)]
pub enum BillingError {
    /// Code 1001; the data holds the balance.
    InsufficientFunds {
        /// What the account holds, in cents.
        balance: u64,
    },
    /// Code 1002.
    UnknownAccount(String),
    /// Anything else: a timeout, the broker, another server's error.
    Call(Error),
}

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BillingError::InsufficientFunds { balance } => {
                write!(f, "insufficient funds (balance {balance})")
            }
            BillingError::UnknownAccount(a) => write!(f, "unknown account {a:?}"),
            BillingError::Call(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BillingError {}

const INSUFFICIENT_FUNDS: i32 = 1001;
const UNKNOWN_ACCOUNT: i32 = 1002;
/// No valid token: an application code, as the others (the -32000 to
/// -32099 range is busrpc's own, see docs/PROTOCOL.md).
const UNAUTHORIZED: i32 = 1003;

/// The codes every method returning a `BillingError` may answer with, as
/// `rpc.discover` and `busrpc describe` list them.
impl busrpc::openrpc::DeclaredErrors for BillingError {
    const ERRORS: &'static [(i32, &'static str)] = &[
        (INSUFFICIENT_FUNDS, "insufficient funds"),
        (UNKNOWN_ACCOUNT, "unknown account"),
        (UNAUTHORIZED, "unauthorized"),
    ];
}

/// The server's side: the error object sent.
impl From<BillingError> for RpcError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::InsufficientFunds { balance } => {
                RpcError::new(INSUFFICIENT_FUNDS, "insufficient funds")
                    .with_data(&serde_json::json!({ "balance": balance }))
            }
            BillingError::UnknownAccount(account) => {
                RpcError::new(UNKNOWN_ACCOUNT, "unknown account").with_data(&account)
            }
            BillingError::Call(e) => e.into(),
        }
    }
}

/// The client's side: the error object back into the error, by its code.
impl From<Error> for BillingError {
    fn from(e: Error) -> Self {
        let data = |e: &RpcError| e.data_as::<serde_json::Value>().and_then(Result::ok);
        match &e {
            Error::Rpc(rpc) if rpc.code() == INSUFFICIENT_FUNDS => {
                let balance = data(rpc).and_then(|d| d["balance"].as_u64());
                BillingError::InsufficientFunds {
                    balance: balance.unwrap_or(0),
                }
            }
            Error::Rpc(rpc) if rpc.code() == UNKNOWN_ACCOUNT => {
                let account = data(rpc).and_then(|d| d.as_str().map(str::to_owned));
                BillingError::UnknownAccount(account.unwrap_or_default())
            }
            _ => BillingError::Call(e),
        }
    }
}

/// Accounts and their balances.
#[busrpc::service(name = "billing")]
pub trait Billing {
    /// Charges an account once per call, however often the call is
    /// delivered; 1001 if its balance is short.
    async fn charge(
        &self,
        ctx: Context,
        account: String,
        cents: u64,
    ) -> Result<Receipt, BillingError>;
    /// An account's balance; 1002 if there is no such account. Quick, or
    /// nobody waits: the typed client gives it 5 s.
    #[method(timeout = "5s")]
    async fn balance(&self, account: String) -> Result<u64, BillingError>;
    /// Who the server thinks is asking, and how long it has to answer.
    async fn whoami(&self, ctx: Context) -> Result<String, BillingError>;
    /// Records a line in the audit log; nobody waits for it.
    #[notification]
    async fn audit(&self, line: String);
}

/// The book every charge is written in: the third service of the chain,
/// called by billing while it serves a charge.
#[busrpc::service(name = "ledger")]
pub trait Ledger {
    /// Writes `line`; answers the deadline it ran under (Unix ms), which
    /// is its caller's caller's: deadlines follow a chain of calls.
    async fn record(&self, line: String) -> Result<Option<u64>, RpcError>;
}

struct Book(Mutex<Vec<String>>);

impl Ledger for Book {
    async fn record(&self, line: String) -> Result<Option<u64>, RpcError> {
        self.0.lock().unwrap().push(line);
        Ok(busrpc::Deadline::current().map(|d| d.0))
    }
}

struct Bank {
    /// Where charges are written down, through the broker.
    ledger: LedgerClient,
    balances: Mutex<HashMap<String, u64>>,
    /// Each charge's receipt by its call's idempotency key: delivery is
    /// at-least-once, so a request whose server died after charging runs
    /// again, and must not charge again.
    receipts: Mutex<HashMap<String, Receipt>>,
    audit: Mutex<Vec<String>>,
}

impl Billing for Bank {
    async fn charge(
        &self,
        ctx: Context,
        account: String,
        cents: u64,
    ) -> Result<Receipt, BillingError> {
        let key = ctx.idempotency_key();
        let receipt = {
            let mut receipts = self.receipts.lock().unwrap();
            if let Some(done) = key.as_ref().and_then(|key| receipts.get(key)) {
                return Ok(done.clone());
            }
            let mut balances = self.balances.lock().unwrap();
            let Some(balance) = balances.get_mut(&account) else {
                return Err(BillingError::UnknownAccount(account));
            };
            if *balance < cents {
                return Err(BillingError::InsufficientFunds { balance: *balance });
            }
            *balance -= cents;
            let receipt = Receipt {
                id: receipts.len() as u64 + 1,
                account,
                cents,
            };
            if let Some(key) = key {
                receipts.insert(key, receipt.clone());
            }
            receipt
        };
        // A call made while serving: it ends when the caller stops waiting,
        // without passing anything.
        let line = format!(
            "receipt {}: {} cents from {}",
            receipt.id, receipt.cents, receipt.account
        );
        let seen = self
            .ledger
            .record(line)
            .await
            .map_err(|e| BillingError::Call(Error::Rpc(e)))?;
        let same = seen.is_some() && seen == ctx.deadline().map(|d| d.0);
        println!("billing: the ledger's deadline is the caller's: {same}");
        Ok(receipt)
    }

    async fn balance(&self, account: String) -> Result<u64, BillingError> {
        let balances = self.balances.lock().unwrap();
        balances
            .get(&account)
            .copied()
            .ok_or(BillingError::UnknownAccount(account))
    }

    async fn whoami(&self, ctx: Context) -> Result<String, BillingError> {
        let caller = ctx.headers().get("x-caller").unwrap_or("anonymous");
        let left = ctx.deadline().map_or(0, |d| d.remaining().as_secs());
        Ok(format!(
            "{caller}, calling {} (about {left} s left)",
            ctx.method()
        ))
    }

    async fn audit(&self, line: String) {
        self.audit.lock().unwrap().push(line);
    }
}

/// Logs method, latency and outcome of every request it runs, and how
/// each request the server read ended (also those that never ran: skipped
/// as expired, cancelled at their deadline, dead-lettered, replies
/// refused).
struct LogCalls;

#[busrpc::async_trait]
impl Middleware for LogCalls {
    async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome {
        let started = Instant::now();
        let outcome = next.run().await;
        let result = match &outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error {}", e.code()),
        };
        println!(
            "server: {} {} in {} µs",
            ctx.method(),
            result,
            started.elapsed().as_micros()
        );
        outcome
    }

    fn ended(&self, ctx: &Context, ending: &Ending<'_>) {
        println!("server: {} {} {ending}", ctx.method(), ctx.id_text());
    }
}

/// Refuses requests without the right token, before any handler runs.
struct RequireToken(&'static str);

#[busrpc::async_trait]
impl Middleware for RequireToken {
    async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome {
        let expected = format!("Bearer {}", self.0);
        if ctx.headers().get("authorization") != Some(expected.as_str()) {
            return Err(RpcError::new(UNAUTHORIZED, "unauthorized"));
        }
        next.run().await
    }
}

/// Adds the token to every call of a client.
struct Token(&'static str);

#[busrpc::async_trait]
impl ClientMiddleware for Token {
    async fn call(
        &self,
        call: &mut OutgoingCall,
        next: ClientNext<'_>,
    ) -> Result<Box<RawValue>, Error> {
        call.headers
            .insert("authorization", format!("Bearer {}", self.0));
        next.run(call).await
    }
}

fn main() -> ExitCode {
    common::run(run)
}

async fn run(url: String) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(&url).await?;
    let ledger = LedgerServer::new(Book(Mutex::default()))
        .into_server(transport.clone())
        .start()
        .await?;
    let bank = Bank {
        ledger: LedgerClient::new(Client::connect(transport.clone()).await?),
        balances: Mutex::new(HashMap::from([("alice".to_owned(), 500)])),
        receipts: Mutex::default(),
        audit: Mutex::default(),
    };
    let server = BillingServer::new(bank)
        .into_server(transport.clone())
        .middleware(LogCalls)
        .middleware(RequireToken("sesame"))
        .start()
        .await?;

    let client = Client::connect(transport).await?;
    let anonymous = BillingClient::new(client.clone());
    match anonymous.balance("alice".into()).await {
        Err(BillingError::Call(Error::Rpc(e))) => println!("without a token: {e}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    let billing = BillingClient::new(client.with_middleware(Token("sesame")))
        .with_header("x-caller", "the billing example");
    let receipt = billing.charge("alice".into(), 200).await?;
    println!("charged {} cents to {}", receipt.cents, receipt.account);
    match billing.charge("alice".into(), 1_000).await {
        Err(BillingError::InsufficientFunds { balance }) => {
            println!("charging 1000 more: insufficient funds, balance {balance}");
        }
        other => return Err(format!("expected insufficient funds, got {other:?}").into()),
    }
    match billing.balance("bob".into()).await {
        Err(BillingError::UnknownAccount(account)) => {
            println!("balance of {account}: unknown account")
        }
        other => return Err(format!("expected an unknown account, got {other:?}").into()),
    }
    println!("whoami: {}", billing.whoami().await?);
    billing.audit("charged alice 200".into()).await?;

    let document = billing.discover().await?;
    let methods: Vec<&str> = document["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    println!("rpc.discover lists: {}", methods.join(", "));
    let charge = document["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "charge");
    let errors: Vec<String> = charge
        .and_then(|m| m["errors"].as_array())
        .into_iter()
        .flatten()
        .map(|e| format!("{} {}", e["code"], e["message"].as_str().unwrap_or("")))
        .collect();
    println!("charge may answer: {}", errors.join(", "));

    client.close().await;
    server.shutdown().await;
    ledger.shutdown().await;
    Ok(())
}
