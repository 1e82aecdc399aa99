#[busrpc::service(name = "calc")]
trait Calc {
    #[method(name = "rpc.add")]
    async fn add(&self, a: i64, b: i64) -> Result<i64, busrpc::Error>;
}

fn main() {}
