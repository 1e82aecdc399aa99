struct Opaque;

#[busrpc::service(name = "calc")]
trait Calc {
    async fn add(&self, a: Opaque) -> Result<i64, busrpc::Error>;
}

fn main() {}
