//! The skip path, as CI machines (no Docker engine) take it: the command is
//! not run, `skipped: ...` is printed and the exit is 0; with `--require`,
//! the exit is 3 and the reason on stderr.

use std::process::Command;

fn tool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_busrpc-testcontainers"));
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("BUSRPC_TESTCONTAINERS");
    cmd
}

#[test]
fn without_docker_the_command_is_skipped() {
    let marker = std::env::temp_dir().join(format!("busrpc-tc-skip-{}", std::process::id()));
    let out = tool()
        .args(["touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        said,
        format!(
            "skipped: touch {}: no Docker engine: /nonexistent/docker.sock does not exist\n",
            marker.display()
        )
    );
    assert!(!marker.exists(), "the command did not run");
}

#[test]
fn without_docker_a_required_run_fails_plainly() {
    for required in [
        tool().args(["--require", "true"]).output().unwrap(),
        tool()
            .env("BUSRPC_TESTCONTAINERS", "require")
            .arg("true")
            .output()
            .unwrap(),
    ] {
        assert_eq!(required.status.code(), Some(3));
        assert_eq!(
            String::from_utf8(required.stderr).unwrap(),
            "busrpc-testcontainers: no Docker engine: /nonexistent/docker.sock does not exist\n"
        );
    }
}
