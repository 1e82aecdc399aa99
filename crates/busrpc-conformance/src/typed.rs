//! The suite's service again, written with `#[busrpc::service]`: the
//! `macro_calls` cases run against it, so the generated server proves the
//! same wire behaviour as a hand-built router.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busrpc_core::{Context, Deadline, RpcError};
use serde_json::{json, Value};

use crate::tests::Probe;

/// The methods of the suite's router, one for one.
#[busrpc_macros::service(name = "conformance", crate = "::busrpc_core")]
pub(crate) trait Conformance {
    async fn subtract(&self, minuend: i64, subtrahend: i64) -> Result<i64, RpcError>;
    #[method(params = "whole")]
    async fn sum(&self, numbers: Vec<i64>) -> Result<i64, RpcError>;
    #[method(params = "whole")]
    async fn update(&self, numbers: Vec<i64>) -> Result<(), RpcError>;
    async fn notify_hello(&self, n: i64) -> Result<(), RpcError>;
    async fn get_data(&self) -> Result<Value, RpcError>;
    async fn echo(&self, text: String) -> Result<String, RpcError>;
    async fn whoami(&self, client: u32, call: u32) -> Result<(u32, u32, String), RpcError>;
    async fn sleep(&self, ms: u64) -> Result<String, RpcError>;
    async fn once(&self, n: u64, ms: u64) -> Result<u64, RpcError>;
    async fn deadline(&self) -> Result<Option<u64>, RpcError>;
    async fn big(&self, n: u64) -> Result<String, RpcError>;
    async fn hang_on_a(&self) -> Result<String, RpcError>;
    async fn panic(&self) -> Result<(), RpcError>;
    async fn context(&self, ctx: Context) -> Result<Value, RpcError>;
    async fn fail(&self, code: i32) -> Result<(), RpcError>;
}

/// The implementation, reporting to the test's probe.
pub(crate) struct Typed(pub(crate) Probe);

impl Conformance for Typed {
    async fn subtract(&self, minuend: i64, subtrahend: i64) -> Result<i64, RpcError> {
        Ok(minuend - subtrahend)
    }

    async fn sum(&self, numbers: Vec<i64>) -> Result<i64, RpcError> {
        Ok(numbers.iter().sum())
    }

    async fn update(&self, _numbers: Vec<i64>) -> Result<(), RpcError> {
        Ok(())
    }

    async fn notify_hello(&self, _n: i64) -> Result<(), RpcError> {
        Ok(())
    }

    async fn get_data(&self) -> Result<Value, RpcError> {
        Ok(json!(["hello", 5]))
    }

    async fn echo(&self, text: String) -> Result<String, RpcError> {
        Ok(format!("RPC {text}!"))
    }

    async fn whoami(&self, client: u32, call: u32) -> Result<(u32, u32, String), RpcError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok((client, call, self.0.label.to_owned()))
    }

    async fn sleep(&self, ms: u64) -> Result<String, RpcError> {
        let p = &self.0;
        let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
        p.most_running.fetch_max(now, Ordering::SeqCst);
        let _ = p.started.send(p.label.to_owned());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        p.running.fetch_sub(1, Ordering::SeqCst);
        Ok(p.label.to_owned())
    }

    async fn once(&self, n: u64, ms: u64) -> Result<u64, RpcError> {
        self.0.ran.lock().unwrap().push(n);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(n)
    }

    async fn deadline(&self) -> Result<Option<u64>, RpcError> {
        Ok(Deadline::current().map(|d| d.0))
    }

    async fn big(&self, n: u64) -> Result<String, RpcError> {
        self.0.ran.lock().unwrap().push(n);
        Ok("x".repeat(usize::try_from(n).unwrap_or(0)))
    }

    async fn hang_on_a(&self) -> Result<String, RpcError> {
        let p = &self.0;
        let _ = p.started.send(p.label.to_owned());
        if p.label == "a" {
            std::future::pending::<()>().await;
        }
        Ok(p.label.to_owned())
    }

    async fn panic(&self) -> Result<(), RpcError> {
        panic!("a bug in a handler (expected by the conformance suite)");
    }

    async fn context(&self, ctx: Context) -> Result<Value, RpcError> {
        Ok(crate::tests::context_answer(&ctx))
    }

    async fn fail(&self, code: i32) -> Result<(), RpcError> {
        Err(RpcError::new(code, "it failed").with_data(&json!({"why": "asked to"})))
    }
}
