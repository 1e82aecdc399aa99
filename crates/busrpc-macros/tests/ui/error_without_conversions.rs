#[derive(Debug)]
struct CalcError;

#[busrpc::service(name = "calc")]
trait Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
}

fn main() {}
