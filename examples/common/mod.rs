//! What every example shares: the `--broker URL` argument, busrpc's logs
//! and error reporting.

pub(crate) mod logging;

use std::future::Future;
use std::process::ExitCode;

/// The broker URL from `--broker URL` (or `--broker=URL`); `memory://`, the
/// in-process broker, when absent.
fn broker_url() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut url = "memory://".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => url = args.next().ok_or("--broker needs a URL")?,
            _ if arg.starts_with("--broker=") => url = arg["--broker=".len()..].to_owned(),
            _ => return Err(format!("unknown argument {arg:?}; usage: [--broker URL]")),
        }
    }
    Ok(url)
}

/// Runs an example's body on a tokio runtime with busrpc's logs on stderr
/// (see [`logging`]); an error is printed plainly and exits 1.
pub(crate) fn run<F, Fut>(body: F) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    logging::init();
    let result = broker_url().map_err(Into::into).and_then(|url| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(body(url))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)] // an example reports its failure where errors go
            {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
