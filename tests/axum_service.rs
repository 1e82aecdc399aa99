//! Drives examples/axum_service.rs as its operator would: the probes, a
//! call through the broker, and SIGTERM with a call in flight, which must
//! be answered before the process exits 0.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary, built beside this test by `cargo test` (which
/// builds the examples too, as `examples/axum_service-<hash>`; `cargo build
/// --example` adds `examples/axum_service`): the newest of them.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let examples = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples");
    let newest = std::fs::read_dir(&examples)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hashed = name
                .strip_prefix("axum_service-")
                .is_some_and(|hash| hash.bytes().all(|b| b.is_ascii_hexdigit()));
            name == "axum_service" || hashed
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max();
    let source = std::fs::metadata(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/axum_service.rs"
    ))
    .and_then(|m| m.modified())
    .expect("the example's source");
    // `cargo test --test axum_service` builds no example: say so rather
    // than test an old one.
    match newest {
        Some((built, binary)) if built >= source => binary,
        _ => panic!(
            "no axum_service in {} newer than its source: run `cargo test` without --test, or `cargo build --example axum_service` first",
            examples.display()
        ),
    }
}

struct Running {
    child: Child,
    address: String,
    output: BufReader<std::process::ChildStdout>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Running {
    let mut child = Command::new(example_binary())
        .args(["--broker", "memory://", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let mut output = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    output.read_line(&mut line).expect("its first line");
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Running {
        child,
        address,
        output,
    }
}

/// GET `path`: the status code and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the web server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

#[test]
fn the_axum_service_answers_its_probes_and_drains_on_sigterm() {
    let mut service = start();
    let address = service.address.clone();
    assert_eq!(get(&address, "/healthz"), (200, "ok".into()));
    assert_eq!(get(&address, "/readyz"), (200, "ready".into()));
    assert_eq!(get(&address, "/echo/hello"), (200, "RPC hello!".into()));

    // A call in flight when SIGTERM arrives is answered before the exit.
    let slow = std::thread::spawn({
        let address = address.clone();
        move || get(&address, "/slow/1500")
    });
    // Until the busrpc server holds it: it counts requests as it takes them.
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, stats) = get(&address, "/stats");
        assert_eq!(code, 200);
        let stats: serde_json::Value = serde_json::from_str(&stats).expect("JSON");
        if stats["server"]["received"] == 2 {
            assert_eq!(
                stats["server"]["calls"], 1,
                "the slow call is still running"
            );
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the slow call never arrived: {stats}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = service.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    assert_eq!(
        slow.join().unwrap(),
        (200, "slept 1500 ms".into()),
        "the call in flight was answered"
    );
    let mut rest = String::new();
    service.output.read_to_string(&mut rest).unwrap();
    let status = service.child.wait().unwrap();
    assert!(status.success(), "exit status {status}; output {rest:?}");
    assert!(rest.contains("signal received; draining"), "{rest:?}");
    assert!(rest.contains("drained: 2 calls answered"), "{rest:?}");
    // And it no longer listens.
    assert!(TcpStream::connect(&address).is_err());
}
