#[busrpc::service(name = "calc")]
trait Calc {
    #[notification]
    #[method(timeout = "2s")]
    async fn log(&self, line: String);
}

fn main() {}
