//! Intake's API fuzzed by schemathesis from the OpenAPI document intake
//! serves (`GET /openapi.json`): requests generated from the document, valid
//! and invalid, and sequences that follow its links. No response may be a
//! 5xx, and every response must be documented: status, content type,
//! headers and body. Runs are seeded, so a failure reproduces.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use stowage_e2e::{Parts, System, token_with};

/// What schemathesis checks. Left out is `positive_data_acceptance` (every
/// request the schema allows is accepted): what a deployment accepts depends
/// on its settings (allowed content types, largest upload) and on rules the
/// document states in words only (a path has no control characters, no `.`
/// or `..` segments and at most 880 bytes of UTF-8 after NFC normalisation;
/// a cursor must be one intake issued), so some schema-valid requests are
/// rightly refused with 400 or 415.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,allow_header_conformance,use_after_free,\
ensure_resource_availability,ignored_auth";

/// The user the fuzzer acts as, and what it owns before the run: the
/// objects the document's examples name.
const USER: &str = "fuzz";

/// One schemathesis run's outcome.
struct Run {
    passed: bool,
    /// What schemathesis printed.
    output: String,
    /// `METHOD /template -> status` of every request it made.
    exchanges: BTreeSet<String>,
}

/// Runs schemathesis against `system`'s intake, sending `authorization`
/// with every request.
async fn schemathesis(system: &System, authorization: &str, max_examples: u32) -> Run {
    let program = std::env::var("STOWAGE_SCHEMATHESIS")
        .expect("the end-to-end tests need schemathesis: run them with `make test`");
    let workdir = std::env::temp_dir().join(format!("stowage-schemathesis-{}", system.stack.name));
    std::fs::create_dir_all(&workdir).expect("work directory");
    let har = workdir.join("run.har");
    let output = tokio::process::Command::new(program)
        .current_dir(&workdir)
        .arg("run")
        .arg(format!("{}/openapi.json", system.intake_url))
        .args(["--url", &system.intake_url])
        .args(["--header", &format!("Authorization: {authorization}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--seed", "20260101"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .arg("--no-color")
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let exchanges = std::fs::read(&har)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .map(|har| exchanges(&har, &system.intake_url))
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&workdir);
    Run {
        passed: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        exchanges,
    }
}

/// `METHOD /template -> status` of each entry of a HAR log: the path
/// without its query, with the document's path parameters put back.
fn exchanges(har: &Value, base: &str) -> BTreeSet<String> {
    har["log"]["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let url = entry["request"]["url"].as_str().unwrap_or_default();
            let path = url.strip_prefix(base).unwrap_or(url);
            let path = path.split('?').next().unwrap_or(path);
            let template = if let Some(rest) = path.strip_prefix("/v1/uploads/") {
                if rest.is_empty() {
                    path
                } else {
                    "/v1/uploads/{grant_id}"
                }
            } else if let Some(rest) = path.strip_prefix("/v1/objects/") {
                if rest.is_empty() {
                    path
                } else {
                    "/v1/objects/{path}"
                }
            } else {
                path
            };
            format!(
                "{} {template} -> {}",
                entry["request"]["method"].as_str().unwrap_or_default(),
                entry["response"]["status"]
            )
        })
        .collect()
}

/// Asserts that `run` passed and made each of `expected` exchanges.
fn assert_passed_reaching(run: &Run, expected: &[&str]) {
    assert!(run.passed, "schemathesis found problems:\n{}", run.output);
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !run.exchanges.contains(**e))
        .collect();
    assert!(
        missing.is_empty(),
        "the run never saw {missing:?}; it saw {:#?}",
        run.exchanges
    );
}

async fn fuzzed_system() -> System {
    // Grants must not be throttled, or the fuzzer would see little but 429
    // after its first few; the quota stays the default 1 GiB, so large
    // grants are refused with 403. Lifecycle is left out: it would carry
    // out the fuzzer's restore requests (the emulator restores at once),
    // and the archived object must stay archived for its 409.
    System::start_parts(
        &[
            ("grant-rate-per-minute", "6000000"),
            ("grant-burst", "100000"),
            ("max-outstanding-grants", "100000"),
        ],
        Parts::WITHOUT_LIFECYCLE,
    )
    .await
    .expect("system starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let system = fuzzed_system().await;
    for (path, class) in [
        ("photos/cat.jpg", "STANDARD"),
        ("photos/old.jpg", "STANDARD"),
        ("archive/2019/taxes.pdf", "GLACIER"),
    ] {
        system
            .put_object(&format!("users/{USER}/{path}"), vec![7; 1000], class)
            .await;
    }
    // Valid for an hour: a slow run must not outlive its token, or every
    // later request would meet a 401.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = token_with(json!({ "sub": USER, "exp": now + 3600 }));

    let run = schemathesis(&system, &format!("Bearer {token}"), 100).await;
    // Every operation answered with success and with its refusals, so the
    // run reached intake's logic rather than bouncing off validation.
    assert_passed_reaching(
        &run,
        &[
            "POST /v1/uploads -> 201",
            "POST /v1/uploads -> 400",
            "POST /v1/uploads -> 401",
            "POST /v1/uploads -> 403",
            "POST /v1/uploads -> 415",
            "GET /v1/uploads/{grant_id} -> 200",
            "GET /v1/uploads/{grant_id} -> 404",
            "GET /v1/objects -> 200",
            "GET /v1/objects -> 400",
            "GET /v1/objects/{path} -> 200",
            "GET /v1/objects/{path} -> 400",
            "GET /v1/objects/{path} -> 404",
            "GET /v1/objects/{path} -> 409",
            "DELETE /v1/objects/{path} -> 204",
            "DELETE /v1/objects/{path} -> 400",
            "POST /v1/restores -> 202",
            "POST /v1/restores -> 400",
            "POST /v1/restores -> 404",
            "POST /v1/restores -> 409",
            "GET /v1/usage -> 200",
            "GET /healthz -> 200",
            "GET /readyz -> 200",
        ],
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_with_a_bad_token_meets_only_documented_refusals() {
    let system = fuzzed_system().await;
    let run = schemathesis(&system, "Bearer not-a-token", 20).await;
    assert_passed_reaching(
        &run,
        &[
            "POST /v1/uploads -> 401",
            "GET /v1/uploads/{grant_id} -> 401",
            "GET /v1/objects -> 401",
            "GET /v1/objects/{path} -> 401",
            "DELETE /v1/objects/{path} -> 401",
            "POST /v1/restores -> 401",
            "GET /v1/usage -> 401",
        ],
    );
    let admitted: Vec<&String> = run
        .exchanges
        .iter()
        .filter(|e| e.contains(" /v1/") && e.contains(" -> 2"))
        .collect();
    assert!(
        admitted.is_empty(),
        "admitted without a valid token: {admitted:?}"
    );
    system.stop().await;
}
