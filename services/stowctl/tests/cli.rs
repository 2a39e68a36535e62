//! Arguments the operators' tool refuses before it touches anything: each
//! gets a clear message and a failing exit status, with no AWS endpoint
//! configured (`AWS_ENDPOINT_URL` points at a closed port, so a command
//! that went ahead would fail on the network instead).

use std::process::{Command, Output};

fn stowctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stowctl"))
        .args(args)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("stowctl runs")
}

/// The command failed (not by a panic) and said `message`.
fn refused(args: &[&str], message: &str) {
    let output = stowctl(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(1 | 2)),
        "{args:?}: {:?}\n{stderr}",
        output.status
    );
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?}");
}

#[test]
fn a_sweep_runs_as_of_now_only() {
    refused(
        &["tier", "run", "--at", "+90d"],
        "unexpected argument '--at'",
    );
}

#[test]
fn names_that_are_no_user_id_are_refused() {
    let message = "user id must match";
    refused(&["reconcile", "--user", "Bad.Name", "--fix"], message);
    refused(&["tier", "plan", "--user", "a b"], message);
    refused(&["tier", "run", "--user", "../x"], message);
    refused(&["tier", "backfill", "--user", ""], message);
}

#[test]
fn times_that_are_no_time_are_refused_without_a_panic() {
    for at in ["-1é", "-9999999999d", "+99999999999999999999d"] {
        refused(&["tier", "plan", "--at", at], "is not a time");
    }
}

/// Logs go to stderr, so that stdout holds only the command's answer, here
/// a token that a shell reads with `$(stowctl token alice)`.
#[test]
fn logs_stay_off_the_answer() {
    let output = Command::new(env!("CARGO_BIN_EXE_stowctl"))
        .args(["token", "alice"])
        .env("STOWAGE_ENV_FILE", "/dev/null")
        .env("STOWAGE_JWT_SECRET", "a-secret-of-enough-length")
        .env("RUST_LOG", "debug")
        .output()
        .expect("stowctl runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let token = stdout.trim_end();
    assert_eq!(token.lines().count(), 1, "{stdout}");
    assert_eq!(token.split('.').count(), 3, "a JWT: {stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("telemetry initialised"), "{stderr}");
}
