#[busrpc::service]
trait Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, busrpc::Error>;
}

fn main() {}
