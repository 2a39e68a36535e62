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

/// A directory holding a local stack's `.stowage/dev.env`, removed on drop.
struct LocalCheckout {
    root: std::path::PathBuf,
}

impl LocalCheckout {
    fn new(settings: &str) -> Self {
        let root = std::env::temp_dir().join(format!("stowctl-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join(".stowage")).expect("temp dir");
        std::fs::write(root.join(".stowage").join("dev.env"), settings).expect("dev.env");
        Self { root }
    }

    fn file(&self) -> std::path::PathBuf {
        self.root.join(".stowage").join("dev.env")
    }

    /// stowctl run in a subdirectory, with none of this process's Stowage or
    /// AWS settings and with `env` instead.
    fn stowctl(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let dir = self.root.join("src");
        std::fs::create_dir_all(&dir).expect("subdirectory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_stowctl"));
        command.args(args).current_dir(dir);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("STOWAGE_") || text.starts_with("AWS_") {
                command.env_remove(&name);
            }
        }
        command.envs(env.iter().copied());
        command.output().expect("stowctl runs")
    }
}

impl Drop for LocalCheckout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `TOKEN=$(stowctl token alice)` in a checkout after `make dev`: the local
/// stack's settings are found above the current directory, stdout holds only
/// the token, and stderr says where the settings came from.
#[test]
fn a_local_stack_file_found_above_is_read_and_named() {
    let checkout = LocalCheckout::new("STOWAGE_JWT_SECRET=a-local-secret-of-enough-length\n");
    let output = checkout.stowctl(&["token", "alice"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(stdout.trim_end().split('.').count(), 3, "a JWT: {stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stderr.contains(&format!(
            "stowctl: local stack settings from {} (--env-file /dev/null to use none)",
            checkout.file().display()
        )),
        "{stderr}"
    );
}

/// With a deployment configured in the environment, the local stack's file
/// is not mixed into it, and a setting it would have supplied is reported
/// missing with the file, the reason and the way to use it.
#[test]
fn a_local_stack_file_found_above_is_not_read_over_a_configured_deployment() {
    let checkout = LocalCheckout::new("STOWAGE_JWT_SECRET=a-local-secret-of-enough-length\n");
    let file = checkout.file().display().to_string();
    for (name, value) in [
        ("AWS_PROFILE", "production"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_ENDPOINT_URL_SQS", "https://sqs.example.com"),
        ("STOWAGE_EVENT_BUS", "stowage-prod"),
    ] {
        let output = checkout.stowctl(&["token", "alice"], &[(name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
        assert!(output.stdout.is_empty(), "{name}: {output:?}");
        assert!(!stderr.contains("local stack settings from"), "{stderr}");
        for part in [
            "STOWAGE_JWT_SECRET is not set",
            &format!("{file} was found but not read, because {name} is set"),
            &format!("--env-file {file}"),
        ] {
            assert!(stderr.contains(part), "{name}: {part} missing in {stderr}");
        }
    }
    // Named explicitly, the file is read whatever the environment holds.
    let output = checkout.stowctl(
        &["token", "alice", "--env-file", &file],
        &[("AWS_PROFILE", "production")],
    );
    assert!(output.status.success(), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("local stack settings from"));
    // And /dev/null reads none.
    let output = checkout.stowctl(&["token", "alice"], &[("STOWAGE_ENV_FILE", "/dev/null")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr.contains("STOWAGE_JWT_SECRET is not set (start the local stack"),
        "{stderr}"
    );
}

/// Settings of a deployment whose AWS endpoint answers nothing: every call
/// fails at once.
const UNREACHABLE_AWS: [(&str, &str); 6] = [
    ("STOWAGE_ENV_FILE", "/dev/null"),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
    ("AWS_MAX_ATTEMPTS", "1"),
];

/// A correcting reconciliation that fails says what may already be done and
/// that running it again is safe; one that only compares changed nothing.
#[test]
fn a_failed_reconciliation_says_what_it_may_have_changed() {
    let checkout = LocalCheckout::new("");
    let env = [
        UNREACHABLE_AWS.as_slice(),
        &[("STOWAGE_BUCKET", "b"), ("STOWAGE_LEDGER_TABLE", "t")],
    ]
    .concat();
    let output = checkout.stowctl(&["reconcile", "--user", "alice", "--fix"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    for part in [
        "the corrections made before the failure may already be committed",
        "Running `stowctl reconcile --fix` again is safe",
    ] {
        assert!(stderr.contains(part), "{part} missing in {stderr}");
    }
    let output = checkout.stowctl(&["reconcile", "--user", "alice"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(!stderr.contains("already be committed"), "{stderr}");
}

/// A replay reaching back beyond the ledger's tombstones could count deleted
/// objects again: refused unless forced, by the ledger's own setting.
#[test]
fn a_replay_older_than_the_tombstones_is_refused_unless_forced() {
    let checkout = LocalCheckout::new("");
    let env = UNREACHABLE_AWS;
    let output = checkout.stowctl(&["replay", "--from", "-32d"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    for part in [
        "lies more than 31 days back: the ledger keeps tombstones 45 days",
        "STOWAGE_TOMBSTONE_TTL_DAYS",
        "--force",
    ] {
        assert!(stderr.contains(part), "{part} missing in {stderr}");
    }
    assert!(!stderr.contains("DescribeEventBus"), "{stderr}");
    let longer = [env.as_slice(), &[("STOWAGE_TOMBSTONE_TTL_DAYS", "60")]].concat();
    let output = checkout.stowctl(&["replay", "--from", "-45d"], &longer);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("tombstones"), "{stderr}");
    assert!(
        stderr.contains("DescribeEventBus on the event bus stowage failed"),
        "{stderr}"
    );
    let forced = checkout.stowctl(&["replay", "--from", "-90d", "--force"], &env);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(!stderr.contains("tombstones"), "{stderr}");
    assert!(stderr.contains("DescribeEventBus"), "{stderr}");
}
