fn main() {
    // Two params where the router wants one (a tuple).
    let _ = busrpc::Router::new().method("add", |a: i64, b: i64| async move {
        Ok::<_, busrpc::RpcError>(a + b)
    });
}
