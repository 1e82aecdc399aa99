//! The `busrpc` command as a user runs it: `serve-echo` in one process,
//! `call` and `notify` in others, through a real broker.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::Command as Cmd;
use predicates::str::contains;

#[path = "cli/operator.rs"]
mod operator;

fn redis_url() -> String {
    std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn kafka_url() -> String {
    std::env::var("BUSRPC_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".to_owned())
}

fn busrpc() -> Cmd {
    let mut cmd = Cmd::cargo_bin("busrpc").expect("the busrpc binary");
    cmd.env_remove("BUSRPC_BROKER");
    cmd
}

/// `busrpc serve-echo` in the background, interrupted on drop.
struct ServeEcho {
    child: Option<Child>,
    output: BufReader<std::process::ChildStdout>,
    /// The server's name, as its first line says.
    name: String,
}

impl ServeEcho {
    fn start(broker: &str, service: &str) -> Self {
        Self::start_with(broker, service, &[])
    }

    /// [`start`](Self::start), with `env` set for the server.
    fn start_with(broker: &str, service: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("busrpc"))
            .args(["serve-echo", "--broker", broker, service])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve-echo starts");
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let prefix = format!("serving {service} (echo, add, sleep) as ");
        let name = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split(" on ").next())
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        ServeEcho {
            child: Some(child),
            output,
            name,
        }
    }

    /// Ctrl-C, then everything it printed while shutting down.
    fn interrupt(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = String::new();
        for line in (&mut self.output).lines() {
            rest += &line.unwrap();
            rest.push('\n');
        }
        assert!(
            child.wait().unwrap().success(),
            "serve-echo exits 0 after Ctrl-C"
        );
        rest
    }
}

impl Drop for ServeEcho {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls until the service answers (a Kafka group takes a while to join).
fn first_answer(broker: &str, service: &str) {
    for _ in 0..60 {
        let out = busrpc()
            .args([
                "call",
                "--broker",
                broker,
                service,
                "echo",
                r#"["ping"]"#,
                "--timeout",
                "2s",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{service} on {broker} never answered");
}

/// The README's block of `$ busrpc …` commands and what they print, run
/// against `service` on `broker` (the README's service `echo` and broker
/// URL replaced): the README cannot show an output the command no longer
/// gives.
fn the_readmes_outputs_are_what_the_commands_print(broker: &str, service: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let block: Vec<&str> = readme
        .split("\n```text\n$ busrpc ")
        .nth(1)
        .expect("the README's block of busrpc commands")
        .split("\n```")
        .next()
        .unwrap()
        .lines()
        .collect();
    let mut runs: Vec<(Vec<String>, String)> = Vec::new();
    for (n, line) in block.iter().enumerate() {
        let command = if n == 0 {
            Some(*line)
        } else {
            line.strip_prefix("$ busrpc ")
        };
        match command {
            Some(command) => {
                let args = command
                    .split_whitespace()
                    .map(|arg| match arg.trim_matches('\'') {
                        url if url.contains("://") => broker.to_owned(),
                        arg => arg.to_owned(),
                    })
                    .collect();
                runs.push((args, String::new()));
            }
            None => {
                let out = &mut runs.last_mut().unwrap().1;
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(runs.len() >= 2, "{runs:?}");
    for (mut args, expected) in runs {
        // The service: the argument after the broker URL.
        let at = args.iter().position(|a| a == broker).unwrap() + 1;
        assert_eq!(args[at], "echo", "{args:?}");
        args[at] = service.to_owned();
        let expected = expected.replacen("echo 0.1.0", &format!("{service} 0.1.0"), 1);
        busrpc().args(&args).assert().success().stdout(expected);
    }
}

fn call_notify_and_errors(broker: &str, service: &str) {
    let server = ServeEcho::start(broker, service);
    first_answer(broker, service);
    busrpc()
        .args([
            "call",
            "--broker",
            broker,
            service,
            "echo",
            r#"[{"a":[1,2]}]"#,
        ])
        .assert()
        .success()
        .stdout("{\"a\":[1,2]}\n");
    // The result on stdout; which server answered on stderr.
    busrpc()
        .args(["call", "--broker", broker, service, "add", "[2,3]"])
        .assert()
        .success()
        .stdout("5\n")
        .stderr(format!("served by {}\n", server.name));
    // describe: the demo's methods, from the server itself; the broker from
    // BUSRPC_BROKER.
    busrpc()
        .args(["describe", service])
        .env("BUSRPC_BROKER", broker)
        .assert()
        .success()
        .stdout(format!(
            "{service} 0.1.0\n  add(a: integer, b: integer) -> integer  # Sums two integers.\n    error 1: the sum overflows a 64-bit integer\n  echo(value: any) -> any  # Returns its argument.\n  sleep(ms: integer) -> integer  # Waits that many milliseconds and returns them.\n"
        ));
    the_readmes_outputs_are_what_the_commands_print(broker, service);
    // The document itself, as any client gets it.
    busrpc()
        .args(["call", "--broker", broker, service, "rpc.discover"])
        .assert()
        .success()
        .stdout(contains(r#""openrpc":"1.3.2""#));
    // A JSON-RPC error: code and message, exit 1.
    busrpc()
        .args(["call", "--broker", broker, service, "nope"])
        .assert()
        .code(1)
        .stderr("busrpc: error -32601: Method not found\n");
    busrpc()
        .args(["call", "--broker", broker, service, "add", r#"["x",1]"#])
        .assert()
        .code(1)
        .stderr(contains("error -32602: Invalid params"));
    // A service no server of which has ever started here: exit 6, at once.
    let typo = format!("{service}-typo");
    busrpc()
        .args(["call", "--broker", broker, &typo, "echo", r#"["x"]"#])
        .assert()
        .code(6)
        .stderr(format!(
            "busrpc: no service {typo:?} on this broker: no server of it has ever started here\n"
        ));
    // Too slow for the timeout: exit 4.
    busrpc()
        .args([
            "call",
            "--broker",
            broker,
            service,
            "sleep",
            "[3000]",
            "--timeout",
            "300ms",
        ])
        .assert()
        .code(4)
        .stderr("busrpc: no reply within 300ms\n");
    busrpc()
        .args([
            "notify",
            "--broker",
            broker,
            service,
            "echo",
            r#"["fire and forget"]"#,
        ])
        .assert()
        .success()
        .stdout("");
    std::thread::sleep(Duration::from_secs(1));
    let said = server.interrupt();
    assert!(
        said.contains("stopping: finishing the calls in hand"),
        "{said}"
    );
    assert!(said.contains("and 1 notifications"), "{said}");
}

#[test]
fn call_and_notify_through_redis() {
    call_notify_and_errors(
        &format!("{}?prefix=busrpc-cli-{}", redis_url(), std::process::id()),
        "cli",
    );
}

#[test]
fn call_and_notify_through_kafka() {
    call_notify_and_errors(
        &format!("{}?prefix=busrpc-cli-{}", kafka_url(), std::process::id()),
        "cli",
    );
}

#[test]
fn memory_is_refused_for_calls_and_the_broker_is_required() {
    // memory:// is in-process: a second process can never be reached on it.
    busrpc()
        .args(["call", "--broker", "memory://", "svc", "echo", "[1]"])
        .assert()
        .code(2)
        .stderr(contains("the memory broker lives inside one process"));
    busrpc()
        .args(["notify", "svc", "echo"])
        .env_remove("BUSRPC_BROKER")
        .assert()
        .code(2)
        .stderr(contains("--broker"));
    // BUSRPC_BROKER stands in for --broker.
    busrpc()
        .args(["call", "svc", "echo", "[1]"])
        .env("BUSRPC_BROKER", "memory://")
        .assert()
        .code(2)
        .stderr(contains("the memory broker"));
    for refused in [&["describe", "svc"][..], &["notify", "svc", "echo"][..]] {
        busrpc()
            .args(refused)
            .args(["--broker", "memory://"])
            .assert()
            .code(2)
            .stderr(contains("the memory broker lives inside one process"));
    }
    busrpc()
        .args(["describe", "svc"])
        .env_remove("BUSRPC_BROKER")
        .assert()
        .code(2)
        .stderr(contains("--broker"));
}

#[test]
fn unreachable_brokers_exit_3_and_bad_urls_exit_2() {
    busrpc()
        .args(["call", "--broker", "redis://127.0.0.1:1", "svc", "m"])
        .assert()
        .code(3)
        .stderr(contains("cannot use broker redis://127.0.0.1:1"));
    busrpc()
        .args(["notify", "--broker", "amqp://somewhere", "svc", "m"])
        .assert()
        .code(2)
        .stderr(contains("unknown scheme"));
    busrpc()
        .args([
            "call",
            "--broker",
            "redis://127.0.0.1:6379?no_such_option=1",
            "svc",
            "m",
        ])
        .assert()
        .code(2)
        .stderr(contains("no_such_option"));
}

#[test]
fn a_broker_that_does_not_answer_exits_3_within_the_connect_timeout() {
    // A listener that accepts and never speaks: connecting can only hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    busrpc()
        .args([
            "call",
            "--broker",
            &url,
            "--connect-timeout",
            "1s",
            "svc",
            "m",
        ])
        .assert()
        .code(3)
        .stderr(contains("no answer within 1s"));
    // Not a timing assertion on the machine's speed: only that it gave up
    // instead of waiting for the 10 s call timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(9));
    drop(silent);
}

#[test]
fn durations_are_humantime_and_more_than_zero() {
    for bad in ["0", "-5s", "soon"] {
        busrpc()
            .args([
                "call",
                "--broker",
                "redis://127.0.0.1:1",
                "svc",
                "m",
                "--timeout",
                bad,
            ])
            .assert()
            .code(2);
    }
}

#[test]
fn bad_params_exit_2() {
    busrpc()
        .args(["call", "--broker", "redis://127.0.0.1:1", "svc", "m", "3"])
        .assert()
        .code(2)
        .stderr(contains("params must be a JSON array"));
    busrpc()
        .args(["call", "--broker", "redis://127.0.0.1:1", "svc", "m", "[1,"])
        .assert()
        .code(2);
    busrpc()
        .args([
            "call",
            "--broker",
            "redis://127.0.0.1:1",
            "--timeout",
            "soon",
            "svc",
            "m",
        ])
        .assert()
        .code(2);
}

/// With no --broker, bench measures the embedded brokers; --json gives every
/// figure for raw and busrpc and their ratios; --plot draws an SVG.
#[test]
fn bench_on_the_embedded_brokers_writes_json_and_a_plot() {
    let dir = std::env::temp_dir().join(format!("busrpc-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("latency.svg");
    let out = busrpc()
        .args([
            "bench",
            "--calls",
            "24",
            "--concurrency",
            "4",
            "--payload",
            "10",
            "--json",
            "--plot",
        ])
        .arg(&plot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        results["settings"],
        serde_json::json!({"calls": 24, "concurrency": 4, "payload_bytes": 10})
    );
    let brokers = results["brokers"].as_array().unwrap();
    let names: Vec<&str> = brokers
        .iter()
        .map(|b| b["broker"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["memory://", "kafka-mock://busrpc-bench"]);
    for broker in brokers {
        for side in ["raw", "busrpc"] {
            for figure in ["p50_us", "p99_us", "p999_us", "calls_per_s"] {
                assert!(
                    broker[side][figure].as_f64().is_some_and(|v| v > 0.0),
                    "{side}.{figure} in {broker}"
                );
            }
        }
        for ratio in ["p50", "p99", "p999", "throughput"] {
            assert!(
                broker["ratio"][ratio].as_f64().is_some_and(|v| v > 0.0),
                "ratio.{ratio} in {broker}"
            );
        }
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("memory:// busrpc")
            && svg.contains("kafka-mock://busrpc-bench raw")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The table, through the brokers the test script runs.
#[test]
fn bench_through_redis_and_kafka_prints_a_table() {
    let prefix = format!("busrpc-cli-bench-{}", std::process::id());
    let out = busrpc()
        .args(["bench", "--calls", "16", "--concurrency", "4"])
        .args(["--broker", &format!("{}?prefix={prefix}", redis_url())])
        .args(["--broker", &format!("{}?prefix={prefix}", kafka_url())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("16 calls per side, 4 in flight, 64-byte payload"),
        "{table}"
    );
    for broker in [redis_url(), kafka_url()] {
        let rows = table.lines().filter(|l| l.starts_with(&broker)).count();
        assert_eq!(rows, 3, "raw, busrpc and the ratio for {broker}:\n{table}");
    }
    // The run's keys were under `{prefix}-{pid}-{id}`, and are gone.
    assert_eq!(redis_keys(&format!("{prefix}-*")), Vec::<String>::new());
}

/// The keys matching `pattern` on the test Redis, by redis-cli (which
/// scripts/test.sh installs with the server).
fn redis_keys(pattern: &str) -> Vec<String> {
    let url = redis_url();
    let out = Command::new("redis-cli")
        .args([
            "-u",
            url.split('?').next().unwrap(),
            "--scan",
            "--pattern",
            pattern,
        ])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One broker failing does not cost the others their figures: its row
/// says why, the others are measured, and the exit code is the failure's.
#[test]
fn a_failing_broker_gets_its_row_and_the_others_are_measured() {
    let out = busrpc()
        .args(["bench", "--calls", "8", "--concurrency", "2"])
        .args(["--broker", "redis://127.0.0.1:1", "--brokers", "memory://"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8(out.stdout).unwrap();
    let failed: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("redis://127.0.0.1:1 "))
        .collect();
    assert_eq!(failed.len(), 1, "{table}");
    assert!(
        failed[0].contains("failed") && failed[0].contains("cannot use broker redis://127.0.0.1:1"),
        "{table}"
    );
    let measured = table
        .lines()
        .filter(|l| l.starts_with("memory:// "))
        .count();
    assert_eq!(
        measured, 3,
        "raw, busrpc and the ratio for memory://:\n{table}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot use broker redis://127.0.0.1:1"));
    // And in JSON, the failure is the broker's entry.
    let out = busrpc()
        .args([
            "bench",
            "--calls",
            "8",
            "--json",
            "--broker",
            "redis://127.0.0.1:1",
        ])
        .args(["--broker", "memory://"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(results["brokers"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("cannot use broker")));
    assert!(results["brokers"][1]["ratio"]["p50"].as_f64().is_some());
}

/// Interrupted mid-run, bench deletes its keys before it exits.
#[test]
fn an_interrupted_bench_deletes_what_it_created() {
    let prefix = format!("busrpc-cli-interrupted-{}", std::process::id());
    let mut bench = Command::new(assert_cmd::cargo::cargo_bin("busrpc"))
        .args(["bench", "--calls", "100000000", "--concurrency", "4"])
        .args(["--broker", &format!("{}?prefix={prefix}", redis_url())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pattern = format!("{prefix}-*");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while redis_keys(&pattern).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the bench made no keys in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupt = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = bench.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(bench.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(redis_keys(&pattern), Vec::<String>::new());
}

#[test]
fn bench_of_an_unreachable_broker_exits_3() {
    busrpc()
        .args(["bench", "--calls", "4", "--broker", "redis://127.0.0.1:1"])
        .assert()
        .code(3)
        .stderr(contains("cannot use broker redis://127.0.0.1:1"));
}

/// Anything else exits 5: here, a plot that cannot be written; the
/// measured table is printed first all the same.
#[test]
fn a_plot_that_cannot_be_written_exits_5() {
    busrpc()
        .args(["bench", "--calls", "4", "--broker", "memory://"])
        .args(["--plot", "/nonexistent-busrpc-dir/latency.svg"])
        .assert()
        .code(5)
        .stdout(contains("memory://"))
        .stderr(contains("plotting to /nonexistent-busrpc-dir/latency.svg"));
}

/// `BUSRPC_KEYS` signs what the commands send and checks what they get:
/// a caller with the server's key is answered; one without a key, or with
/// another secret under the same id, is dropped unanswered by the server
/// (exit 4, no reply); a key list that cannot be read is bad usage, and the
/// error shows no secret.
#[test]
fn signed_calls_are_answered_and_unsigned_ones_dropped() {
    const KEYS: &str = "k1:000102030405060708090a0b0c0d0e0f";
    let broker = format!(
        "{}?prefix=busrpc-cli-keys-{}",
        redis_url(),
        std::process::id()
    );
    let service = "signed";
    let server = ServeEcho::start_with(&broker, service, &[("BUSRPC_KEYS", KEYS)]);
    let call = |keys: Option<&str>| {
        let mut cmd = busrpc();
        cmd.args([
            "call",
            "--broker",
            &broker,
            service,
            "echo",
            r#"["hi"]"#,
            "--timeout",
            "2s",
        ]);
        match keys {
            Some(keys) => cmd.env("BUSRPC_KEYS", keys),
            None => cmd.env_remove("BUSRPC_KEYS"),
        };
        cmd.assert()
    };
    call(Some(KEYS)).success().stdout(contains("\"hi\""));
    call(None).code(4).stderr(contains("no reply within 2s"));
    call(Some("k1:ffeeddccbbaa99887766554433221100"))
        .code(4)
        .stderr(contains("no reply within 2s"));
    let bad = call(Some("k1:0011")).code(2);
    let said = String::from_utf8(bad.get_output().stderr.clone()).unwrap();
    assert!(
        said.contains("BUSRPC_KEYS: the secret of key \"k1\" has 2 bytes"),
        "{said}"
    );
    assert!(!said.contains("0011"), "{said}");
    server.interrupt();
}
