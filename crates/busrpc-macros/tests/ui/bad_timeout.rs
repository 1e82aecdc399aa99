#[busrpc::service(name = "calc")]
trait Calc {
    #[method(timeout = "2 seconds")]
    async fn add(&self, a: i64, b: i64) -> Result<i64, busrpc::Error>;
}

fn main() {}
