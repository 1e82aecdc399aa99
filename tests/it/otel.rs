//! One trace across the broker (feature `otel`): the caller's span, the
//! client's `busrpc.call`, the server's `busrpc.request` and a span the
//! handler opens after an `.await` share a trace id, each the parent of the
//! next, exported through OpenTelemetry's in-memory exporter. Run on the
//! memory transport and on Redis.
#![cfg(feature = "otel")]

use std::sync::Arc;
use std::time::Duration;

use busrpc::{Client, Router, RpcError, Server, Transport};
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

fn router() -> Router {
    Router::new()
        .method("echo", |(text,): (String,)| async move {
            // Past a real wait: the handler goes on in a task of its own,
            // and what it does there must still be inside the request span.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let inner = tracing::info_span!("handler.inner");
            async { tokio::task::yield_now().await }
                .instrument(inner)
                .await;
            Ok::<_, RpcError>(format!("RPC {text}!"))
        })
        .method("fail", |(): ()| async {
            Err::<(), _>(RpcError::new(-32042, "no such thing"))
        })
}

fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} among {:?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| &*s.name).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Runs a call and a failing call under a root span on `transport`
/// (made by `connect` inside the traced runtime), and checks the spans.
fn one_trace_across<F, Fut>(connect: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Transport>>,
{
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("busrpc-test")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let transport = connect().await;
            let service = format!("otel-{}", std::process::id());
            let server = Server::new(transport.clone(), service.as_str(), router())
                .start()
                .await
                .unwrap();
            let client = Client::connect(transport).await.unwrap();
            let root = tracing::info_span!("test.root");
            let (reply, failed) = async {
                let reply: String = client.call(&service, "echo", ("hi",)).await.unwrap();
                let failed = client.call::<()>(&service, "fail", ()).await.unwrap_err();
                (reply, failed)
            }
            .instrument(root)
            .await;
            assert_eq!(reply, "RPC hi!");
            assert!(failed.to_string().contains("-32042"), "{failed}");
            client.close().await;
            server.shutdown().await;
        });
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let root = find(&spans, "test.root");
    let trace = root.span_context.trace_id();
    for span in &spans {
        // busrpc.server, the server's own span, lives as long as it does,
        // in a trace of its own.
        if span.name != "busrpc.server" {
            assert_eq!(
                span.span_context.trace_id(),
                trace,
                "{} is in another trace",
                span.name
            );
        }
    }
    // Exported under their `otel.name`, "service/method", and their kind.
    let of_kind = |kind: SpanKind| -> Vec<&SpanData> {
        spans.iter().filter(|s| s.span_kind == kind).collect()
    };
    let (calls, requests) = (of_kind(SpanKind::Client), of_kind(SpanKind::Server));
    for span in calls.iter().chain(&requests) {
        let method = attribute(span, "rpc.method").unwrap().to_string();
        assert_eq!(span.name, format!("otel-{}/{method}", std::process::id()));
        assert_eq!(attribute(span, "rpc.system"), Some("jsonrpc".into()));
    }
    assert_eq!((calls.len(), requests.len()), (2, 2), "{:?}", names(&spans));
    for call in &calls {
        assert_eq!(call.parent_span_id, root.span_context.span_id());
        // The server's span is the child of the client's, across the broker.
        let request = requests
            .iter()
            .find(|r| r.parent_span_id == call.span_context.span_id())
            .unwrap_or_else(|| panic!("no request span under call {call:?}"));
        assert_eq!(
            attribute(call, "rpc.method"),
            attribute(request, "rpc.method")
        );
        assert_eq!(
            attribute(call, "rpc.jsonrpc.request_id").map(|v| v.to_string()),
            attribute(request, "rpc.jsonrpc.request_id").map(|v| v.to_string()),
            "the same id on both sides"
        );
    }
    let echo = requests
        .iter()
        .find(|r| attribute(r, "rpc.method") == Some("echo".into()))
        .unwrap();
    assert_eq!(attribute(echo, "busrpc.outcome"), Some("ok".into()));
    assert!(attribute(echo, "rpc.service").is_some());
    let inner = find(&spans, "handler.inner");
    assert_eq!(
        inner.parent_span_id,
        echo.span_context.span_id(),
        "the handler's span after its first .await is inside the request's"
    );
    let fail = requests
        .iter()
        .find(|r| attribute(r, "rpc.method") == Some("fail".into()))
        .unwrap();
    assert_eq!(attribute(fail, "busrpc.outcome"), Some("error".into()));
    assert_eq!(
        attribute(fail, "rpc.jsonrpc.error_code"),
        Some(Value::I64(-32042))
    );
    assert_ne!(fail.parent_span_id, SpanId::INVALID);
}

#[test]
fn one_trace_across_the_memory_transport() {
    one_trace_across(|| async { busrpc::connect("memory://").await.unwrap() });
}

#[cfg(feature = "redis")]
#[test]
fn one_trace_across_redis() {
    let url = std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("busrpc-otel-{}", busrpc::transport::unique_id());
    let with_prefix = format!("{url}?prefix={prefix}");
    one_trace_across(move || async move { busrpc::connect(&with_prefix).await.unwrap() });
    // The service's stream outlives its server (requests would wait in it):
    // delete what the test made, with redis-cli (scripts/test.sh installs it
    // with the server; without it the keys stay, as they did before).
    let server = url.split('?').next().unwrap_or(&url);
    let redis_cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-u", server])
            .args(args)
            .output()
            .ok()
    };
    if let Some(found) = redis_cli(&["--scan", "--pattern", &format!("{prefix}:*")]) {
        let keys = String::from_utf8_lossy(&found.stdout).into_owned();
        let keys: Vec<&str> = keys.lines().collect();
        assert!(!keys.is_empty(), "the test made keys under {prefix}");
        let mut del = vec!["del"];
        del.extend(&keys);
        redis_cli(&del);
        let left = redis_cli(&["--scan", "--pattern", &format!("{prefix}:*")]).unwrap();
        assert!(left.stdout.is_empty(), "left behind: {left:?}");
    }
}
