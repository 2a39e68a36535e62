//! Intake's benchmarks. Run both with `make bench`; each prints a Markdown
//! table.
//!
//! - `bench_intake sign --python <python with boto3> --script
//!   infra/local/bench_presign.py`: mean microseconds (CPU and wall clock) to
//!   build and sign one upload's POST policy with intake's signer, beside
//!   boto3's `generate_presigned_post` for the same policy, on this machine.
//! - `bench_intake verify`: mean microseconds (CPU) to verify one bearer
//!   token, RS256 and ES256 against keys served as a JWKS on loopback and
//!   HS256 with a shared secret, in full and when the same token was
//!   verified before.
//! - `bench_intake floor`: CPU microseconds a minimal blocking server (a
//!   thread that reads one 200-byte message from a loopback connection and
//!   writes it back) spends per message, and a minimal axum server (on a
//!   tokio runtime of one thread, answering `ok` to `GET /`) per request,
//!   at several request rates: what any server, and any tokio, hyper and
//!   axum server, pays this machine per request before any work of its own.
//! - `bench_intake load <release stowage-intake>` (inside `stack.py run`):
//!   starts the release intake on a freshly deployed stack and has 64
//!   concurrent clients ask it for upload grants; prints grants per second,
//!   latency percentiles, AWS requests per grant (counted in the emulators'
//!   request logs), intake's CPU time per grant and its resident memory idle
//!   and under the load (from `/proc` of the intake process). Then requests
//!   that make no AWS request: grants of a refused content type (415) back
//!   to back and at the rate the grants were answered, and health checks at
//!   that rate.
//! - `bench_intake load --stub <release stowage-intake>` (no emulators):
//!   the same load with intake's AWS endpoints answered at once by
//!   [`stowage_e2e::aws_stub`], so the figures are intake's own work when
//!   its backend keeps up, requests counted by the stub. With
//!   `--stub-delay-ms` it waits that long before each answer: about 140 ms
//!   brings the rate down to the emulators', without their work on the same
//!   cores.
//! - `bench_intake load --stub --instructions <release stowage-intake>`:
//!   the same load with intake run under valgrind's callgrind, reporting
//!   the instructions intake executes per grant and per request of each
//!   kind instead of time and memory: a count that does not change with
//!   how busy the machine is, to compare builds by.

use std::{
    collections::BTreeMap,
    hint::black_box,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use stowage_e2e::{
    AUDIENCE, ISSUER, JWT_SECRET, Stack,
    aws_stub::{AwsStub, StubOptions},
    emulator_requests, eventually, process_usage, token_with,
};
use stowage_intake::{adapters::post_signer::PostSigner, domain::policy::UploadPolicy};
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(about = "Intake's benchmarks; `make bench` runs them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Microseconds to build and sign one upload policy, beside boto3.
    Sign {
        /// A Python with boto3 installed.
        #[arg(long)]
        python: PathBuf,
        /// `infra/local/bench_presign.py`.
        #[arg(long)]
        script: PathBuf,
        /// Rounds of each signer, taken in turns.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Policies intake's signer signs per round (one more round warms up).
        #[arg(long, default_value_t = 50_000)]
        iterations: u32,
        /// Policies boto3 signs per round (after 1,000 to warm up).
        #[arg(long, default_value_t = 5_000)]
        boto3_iterations: u32,
    },
    /// Microseconds to verify one bearer token, in full and when kept.
    Verify {
        /// Verifications per round (one more round warms up).
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
        /// Rounds of each kind, taken in turns.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// CPU microseconds a minimal echo server, and a minimal axum server,
    /// spend per request, by rate.
    Floor {
        /// Messages per second sent, one at a time; 0 sends each as soon as
        /// the previous one is answered.
        #[arg(long, value_delimiter = ',', default_value = "200,500,2000,10000,0")]
        rates: Vec<u32>,
        /// Messages per rate.
        #[arg(long, default_value_t = 3_000)]
        messages: u32,
    },
    /// Grants per second, latency, CPU and memory of the release intake
    /// against the running emulators.
    Load {
        /// The release `stowage-intake` binary.
        intake: PathBuf,
        /// Grants measured, after one per client to warm up.
        #[arg(long, default_value_t = 3_000)]
        grants: usize,
        /// Concurrent clients, each a user of its own on one keep-alive pool.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Answer intake's AWS requests with the in-process stub instead of
        /// the emulators.
        #[arg(long)]
        stub: bool,
        /// With `--stub`: milliseconds the stub waits before each answer,
        /// as a service across the network would.
        #[arg(long, default_value_t = 0)]
        stub_delay_ms: u64,
        /// Run intake under valgrind's callgrind and report the instructions
        /// it executes per grant and per request instead of CPU time and
        /// memory: a count that does not depend on how busy the machine is.
        #[arg(long)]
        instructions: bool,
    },
}

/// What answers intake's AWS requests, and counts them.
enum Backend {
    Emulators { stack: Stack, logs: PathBuf },
    Stub { stack: Stack, stub: AwsStub },
}

impl Backend {
    async fn start(stub: bool, delay: Duration) -> Self {
        if !stub {
            let logs = PathBuf::from(
                std::env::var("STOWAGE_EMULATOR_LOGS")
                    .expect("run inside `stack.py run` (`make bench`), or pass --stub"),
            );
            let stack = Stack::deploy().expect("stack deploys");
            return Self::Emulators { stack, logs };
        }
        let stub = AwsStub::start(StubOptions {
            delay,
            ..StubOptions::default()
        })
        .await
        .expect("the stub starts");
        let settings = [
            ("STOWAGE_BUCKET", "stub-bucket"),
            ("STOWAGE_S3_PUBLIC_URL", "http://127.0.0.1:9/stub-bucket"),
            ("STOWAGE_S3_PATH_STYLE", "true"),
            ("STOWAGE_INTAKE_TABLE", "stub-intake"),
            ("STOWAGE_EVENT_BUS", "stub-bus"),
            (
                "STOWAGE_INTAKE_QUEUE_URL",
                "http://127.0.0.1/000000000000/stub-intake",
            ),
        ];
        let stack = Stack {
            name: "stub".to_string(),
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Self::Stub { stack, stub }
    }

    fn stack(&self) -> &Stack {
        match self {
            Self::Emulators { stack, .. } | Self::Stub { stack, .. } => stack,
        }
    }

    /// Sends every AWS request of `command` here.
    fn point(&self, command: &mut tokio::process::Command) {
        if let Self::Stub { stub, .. } = self {
            stub.point(command);
        }
    }

    /// Requests answered so far by operation, where the backend tells.
    fn operations(&self) -> BTreeMap<String, usize> {
        match self {
            Self::Emulators { .. } => BTreeMap::new(),
            Self::Stub { stub, .. } => stub.requests(),
        }
    }

    /// Requests answered since `before` (an earlier
    /// [`Backend::operations`]), by operation, where the backend tells.
    fn operations_since(&self, before: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
        match self {
            Self::Emulators { .. } => BTreeMap::new(),
            Self::Stub { stub, .. } => stub.requests_since(before),
        }
    }

    /// AWS requests answered so far.
    fn requests(&self) -> usize {
        match self {
            Self::Emulators { logs, .. } => emulator_requests(logs),
            Self::Stub { stub, .. } => stub.total_requests(),
        }
    }
}

/// The upload both signers sign: the policy intake makes for a grant of a
/// 12,345-byte JPEG, valid for 900 s.
const BUCKET: &str = "stowage-bench";
const KEY: &str = "users/bench/photos/cat.jpg";
const SIZE: u64 = 12_345;
const CONTENT_TYPE: &str = "image/jpeg";
const EXPIRES_IN: Duration = Duration::from_secs(900);
/// How long intake is watched idle; CPU time is counted in 10 ms ticks, so
/// 30 s resolve its idle cost to about 0.3 ms per second.
const IDLE: Duration = Duration::from_secs(30);

/// What a grant request does to make its policy: read the clock, build the
/// policy, sign it (credentials come from the signer's cache).
async fn sign_one(signer: &PostSigner) {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let policy = UploadPolicy {
        bucket: BUCKET.to_string(),
        key: KEY.to_string(),
        content_type: CONTENT_TYPE.to_string(),
        max_size: SIZE,
        expires_at: now + EXPIRES_IN,
    };
    black_box(signer.sign(black_box(&policy), now).await.expect("signs"));
}

/// CPU time of the calling thread so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Mean microseconds per call of one measured stretch: wall clock and CPU
/// time of the measuring thread.
#[derive(Debug, Clone, Copy)]
struct Round {
    wall_us: f64,
    cpu_us: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn sign(python: &Path, script: &Path, rounds: usize, iterations: u32, boto3_iterations: u32) {
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "bench",
    );
    let signer = PostSigner::new(
        SharedCredentialsProvider::new(credentials),
        "us-east-1",
        format!("https://{BUCKET}.s3.us-east-1.amazonaws.com"),
    );
    // The signer's futures never wait (its credentials are static), so they
    // run to completion on this thread without a runtime.
    let ours = || {
        futures::executor::block_on(async {
            let (started, cpu_started) = (Instant::now(), thread_cpu_ns());
            for _ in 0..iterations {
                sign_one(&signer).await;
            }
            Round {
                cpu_us: thread_cpu_ns().saturating_sub(cpu_started) as f64
                    / 1e3
                    / f64::from(iterations),
                wall_us: started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations),
            }
        })
    };
    let mut boto3_version = String::new();
    let mut theirs = || {
        let output = std::process::Command::new(python)
            .arg(script)
            .args(["--iterations", &boto3_iterations.to_string()])
            .output()
            .expect("the boto3 benchmark runs");
        assert!(
            output.status.success(),
            "the boto3 benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value =
            serde_json::from_slice(&output.stdout).expect("the boto3 benchmark's JSON");
        boto3_version = answer["boto3"].as_str().unwrap_or("?").to_string();
        let field = |name: &str| answer[name].as_f64().expect("a mean");
        Round {
            wall_us: field("wall_us"),
            cpu_us: field("cpu_us"),
        }
    };

    // Warm-up, then rounds in turns, so that both meet the same load of
    // the machine.
    ours();
    let (mut intake, mut boto3) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        intake.push(ours());
        boto3.push(theirs());
    }
    let summary = |rounds: &[Round]| {
        (
            median(rounds.iter().map(|r| r.cpu_us).collect()),
            median(rounds.iter().map(|r| r.wall_us).collect()),
        )
    };
    let (intake_cpu, intake_wall) = summary(&intake);
    let (boto3_cpu, boto3_wall) = summary(&boto3);

    println!("| signer | policies signed | CPU µs per policy | wall µs per policy |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| intake `PostSigner` | {rounds} × {iterations} | {intake_cpu:.1} | {intake_wall:.1} |"
    );
    println!(
        "| boto3 {boto3_version} `generate_presigned_post` | {rounds} × {boto3_iterations} | {boto3_cpu:.1} | {boto3_wall:.1} |"
    );
    println!(
        "| boto3 / intake | | {:.0}× | {:.0}× |",
        boto3_cpu / intake_cpu,
        boto3_wall / intake_wall
    );
    println!();
    println!(
        "Medians of {rounds} rounds taken in turns; CPU time is the measuring thread's, \
         wall time includes waiting for the CPU when the machine is busy."
    );
}

/// Outcomes of a batch of grant requests.
#[derive(Debug, Default)]
struct Outcomes {
    latencies: Vec<Duration>,
    /// Non-201 answers and transport errors, by status or error.
    failures: BTreeMap<String, usize>,
}

impl Outcomes {
    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        for (what, count) in other.failures {
            *self.failures.entry(what).or_default() += count;
        }
    }

    fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let rank = ((p * self.latencies.len() as f64).ceil() as usize).max(1);
        self.latencies
            .get(rank - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// What each request of a batch asks.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// `POST /v1/uploads` for `<prefix>/file-<i>.bin` of `content_type`.
    Grant {
        prefix: &'static str,
        content_type: &'static str,
    },
    /// `GET /healthz`: a request intake answers without any work of its own.
    Health,
}

impl Ask {
    fn request(
        self,
        http: &reqwest::Client,
        url: &str,
        token: &str,
        i: usize,
    ) -> reqwest::RequestBuilder {
        match self {
            Self::Grant {
                prefix,
                content_type,
            } => http
                .post(format!("{url}/v1/uploads"))
                .bearer_auth(token)
                .json(&json!({
                    "path": format!("{prefix}/file-{i}.bin"),
                    "size": 1_000 + i % 1_000,
                    "content_type": content_type,
                })),
            Self::Health => http.get(format!("{url}/healthz")),
        }
    }
}

/// `count` requests, `tokens.len()` at a time: client `c` sends `ask` with
/// `tokens[c]` until `count` are answered; any answer but `expected` is a
/// failure. With a `pace`, request `i` is sent no earlier than `i × pace`
/// after the start.
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    tokens: &[String],
    (ask, expected): (Ask, u16),
    count: usize,
    pace: Option<Duration>,
) -> Outcomes {
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = tokens
        .iter()
        .map(|token| {
            let (http, token, next) = (http.clone(), token.clone(), Arc::clone(&next));
            let url = url.to_string();
            tokio::spawn(async move {
                let mut outcomes = Outcomes::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return outcomes;
                    }
                    if let Some(pace) = pace {
                        tokio::time::sleep_until(start + pace * i as u32).await;
                    }
                    let request = ask.request(&http, &url, &token, i);
                    let started = Instant::now();
                    let answer = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(_) if status == expected => None,
                                Ok(_) => Some(format!("HTTP {status}")),
                                Err(error) => Some(format!("reading the answer: {error}")),
                            }
                        }
                        Err(error) => Some(format!("request: {error}")),
                    };
                    outcomes.latencies.push(started.elapsed());
                    if let Some(failure) = answer {
                        *outcomes.failures.entry(failure).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    let mut all = Outcomes::default();
    for task in tasks {
        all.merge(task.await.expect("client"));
    }
    all
}

/// Intake running under valgrind's callgrind, whose instruction counts are
/// read phase by phase.
struct Callgrind {
    pid: u32,
    /// Where callgrind writes its dumps (`callgrind.out.1`, `.2`, ...).
    dir: PathBuf,
}

impl Callgrind {
    /// The command that runs `intake` under callgrind, dumping into `dir`.
    fn command(intake: &Path, dir: &Path) -> tokio::process::Command {
        let found = std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            found,
            "--instructions runs intake under valgrind, which is not installed (Debian package `valgrind`)"
        );
        std::fs::create_dir_all(dir).expect("a directory for callgrind's dumps");
        let mut command = tokio::process::Command::new("valgrind");
        command
            .arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}",
                dir.join("callgrind.out").display()
            ))
            .arg(intake);
        command
    }

    /// Instructions intake executed since the last dump (or its start):
    /// has callgrind dump them and reads the dump's total.
    async fn since_last(&self) -> u64 {
        let output = tokio::process::Command::new("callgrind_control")
            .args(["--dump", &self.pid.to_string()])
            .output()
            .await
            .expect("callgrind_control runs");
        assert!(
            output.status.success(),
            "callgrind_control --dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let newest = std::fs::read_dir(&self.dir)
            .expect("callgrind's dumps")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let part: u32 = path.extension()?.to_str()?.parse().ok()?;
                Some((part, path))
            })
            .max()
            .expect("a dump")
            .1;
        let dump = std::fs::read_to_string(&newest).expect("the dump reads");
        dump.lines()
            .find_map(|line| line.strip_prefix("summary: "))
            .and_then(|total| total.trim().parse().ok())
            .expect("the dump's total of instructions")
    }
}

async fn load(intake: &Path, backend: Backend, grants: usize, clients: usize, instructions: bool) {
    let stack = backend.stack();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dumps = std::env::temp_dir().join(format!("bench-intake-{}", std::process::id()));
    let mut command = if instructions {
        Callgrind::command(intake, &dumps)
    } else {
        tokio::process::Command::new(intake)
    };
    backend.point(&mut command);
    let mut child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--bucket", stack.get("STOWAGE_BUCKET")])
        .args(["--s3-public-url", stack.get("STOWAGE_S3_PUBLIC_URL")])
        .args(["--s3-path-style", stack.get("STOWAGE_S3_PATH_STYLE")])
        .args(["--table", stack.get("STOWAGE_INTAKE_TABLE")])
        .args(["--event-bus", stack.get("STOWAGE_EVENT_BUS")])
        .args(["--queue-url", stack.get("STOWAGE_INTAKE_QUEUE_URL")])
        .args(["--jwt-secret", JWT_SECRET])
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        // Nothing may be refused: a quota of 1 PiB, no practical grant cap.
        .args(["--default-quota-bytes", &(1_u64 << 50).to_string()])
        .args(["--max-outstanding-grants", "1000000"])
        // Nor rate-limited.
        .args([
            "--grant-rate-per-minute",
            "100000000",
            "--grant-burst",
            "1000000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("intake starts");
    let pid = child.id().expect("pid");
    let callgrind = instructions.then(|| Callgrind {
        pid,
        dir: dumps.clone(),
    });
    let mut counted = Vec::new();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");
    eventually(Duration::from_secs(60), "intake to answer", || async {
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(drop)
    })
    .await;
    // Idle: started, its queue consumer long-polling, no request yet.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_from = (process_usage(pid), Instant::now());
    if callgrind.is_none() {
        tokio::time::sleep(IDLE).await;
    }
    let idle = process_usage(pid);
    let idle_cpu_per_s =
        (idle - idle_from.0).cpu_ns as f64 / 1e3 / idle_from.1.elapsed().as_secs_f64();

    let expires = OffsetDateTime::now_utc().unix_timestamp() + 3_600;
    let tokens: Vec<String> = (0..clients)
        .map(|c| token_with(json!({ "sub": format!("bench{c}"), "exp": expires })))
        .collect();
    let mut outcomes = send_all(
        &http,
        &url,
        &tokens,
        (
            Ask::Grant {
                prefix: "warmup",
                content_type: CONTENT_TYPE,
            },
            201,
        ),
        clients,
        None,
    )
    .await;

    if let Some(callgrind) = &callgrind {
        callgrind.since_last().await;
    }
    let before = process_usage(pid);
    let requests_before = backend.requests();
    let operations_before = backend.operations();
    let started = Instant::now();
    let mut measured = send_all(
        &http,
        &url,
        &tokens,
        (
            Ask::Grant {
                prefix: "bench",
                content_type: CONTENT_TYPE,
            },
            201,
        ),
        grants,
        None,
    )
    .await;
    let elapsed = started.elapsed();
    let after = process_usage(pid);
    if let Some(callgrind) = &callgrind {
        counted.push((format!("{grants} grants"), callgrind.since_last().await));
    }
    let requests = backend.requests() - requests_before;
    let operations = backend.operations_since(&operations_before);

    // Requests that make no AWS request. The grants' requests with a
    // content type intake does not allow: served, authenticated,
    // rate-limited, parsed and refused (415), which is the part of a grant's
    // cost that is intake's alone; first back to back, then no faster than
    // the grants were answered, as requests arrive one by one at the rate
    // the emulators allow. Then health checks at that pace: what a request
    // costs that intake answers without any work of its own, at this rate
    // on this machine.
    let refused = |prefix| {
        (
            Ask::Grant {
                prefix,
                content_type: "application/x-not-allowed",
            },
            415,
        )
    };
    let pace = elapsed / grants as u32;
    let mut light = Vec::new();
    for (what, ask, pace) in [
        ("refused (415), back to back", refused("refused"), None),
        (
            "refused (415), at the grants' rate",
            refused("paced"),
            Some(pace),
        ),
        (
            "health checks (`GET /healthz`), at the grants' rate",
            (Ask::Health, 200),
            Some(pace),
        ),
    ] {
        if let Some(callgrind) = &callgrind {
            callgrind.since_last().await;
        }
        let (before, started) = (process_usage(pid), Instant::now());
        let outcomes = send_all(&http, &url, &tokens, ask, grants, pace).await;
        let (elapsed, after) = (started.elapsed(), process_usage(pid));
        if let Some(callgrind) = &callgrind {
            counted.push((format!("{grants} {what}"), callgrind.since_last().await));
        }
        light.push((what, outcomes, elapsed, after - before));
    }
    child.kill().await.expect("intake stops");
    if callgrind.is_some() {
        let _ = std::fs::remove_dir_all(&dumps);
        report_instructions(&counted, grants, requests, &operations);
        for (failure, count) in [&outcomes, &measured]
            .into_iter()
            .chain(light.iter().map(|(_, outcomes, ..)| outcomes))
            .flat_map(|outcomes| &outcomes.failures)
        {
            println!("- {count} × {failure}");
        }
        return;
    }

    let p50 = measured.percentile_ms(0.50);
    let p99 = measured.percentile_ms(0.99);
    outcomes.merge(measured);
    println!(
        "| clients | grants | refused or failed | grants/s | p50 latency | p99 latency | AWS requests per grant | intake CPU µs per grant | intake context switches per grant | intake CPU idle, µs per second | intake RSS idle | intake peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let used = after - before;
    println!(
        "| {clients} | {grants} | {} | {:.0} | {p50:.0} ms | {p99:.0} ms | {:.2} | {:.0} | {:.2} | {idle_cpu_per_s:.0} | {:.1} MB | {:.1} MB |",
        outcomes.failed(),
        grants as f64 / elapsed.as_secs_f64(),
        requests as f64 / grants as f64,
        used.cpu_ns as f64 / 1e3 / grants as f64,
        used.switches as f64 / grants as f64,
        idle.rss_kb as f64 / 1024.0,
        after.peak_rss_kb as f64 / 1024.0,
    );
    for (failure, count) in &outcomes.failures {
        println!("- {count} × {failure}");
    }
    for (operation, count) in &operations {
        println!(
            "- {operation}: {count} requests, {:.3} per grant",
            *count as f64 / grants as f64
        );
    }
    println!();
    println!(
        "| requests making no AWS request | failed | requests/s | intake CPU µs per request | intake context switches per request |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (what, outcomes, elapsed, used) in &light {
        println!(
            "| {grants} {what} | {} | {:.0} | {:.0} | {:.2} |",
            outcomes.failed(),
            grants as f64 / elapsed.as_secs_f64(),
            used.cpu_ns as f64 / 1e3 / grants as f64,
            used.switches as f64 / grants as f64,
        );
    }
    for (failure, count) in light
        .iter()
        .flat_map(|(_, outcomes, ..)| &outcomes.failures)
    {
        println!("- {count} × {failure}");
    }
}

/// Prints `load --instructions`'s table: instructions per request of each
/// phase, with the AWS requests the grants made.
fn report_instructions(
    counted: &[(String, u64)],
    grants: usize,
    requests: usize,
    operations: &BTreeMap<String, usize>,
) {
    println!("| requests | AWS requests per grant | intake instructions per request |");
    println!("| --- | --- | --- |");
    for (index, (what, instructions)) in counted.iter().enumerate() {
        let aws = if index == 0 {
            format!("{:.2}", requests as f64 / grants as f64)
        } else {
            "0".to_string()
        };
        println!(
            "| {what} | {aws} | {:.0} |",
            *instructions as f64 / grants as f64
        );
    }
    for (operation, count) in operations {
        println!(
            "- {operation}: {count} requests, {:.3} per grant",
            *count as f64 / grants as f64
        );
    }
}

/// Bytes of one `floor` message, about a small HTTP request's.
const FLOOR_MESSAGE: usize = 200;

/// The request `floor` sends its HTTP server, and the body it answers.
const HELLO_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: floor\r\n\r\n";
const HELLO: &str = "ok";

/// The servers `floor` measures.
#[derive(Debug, Clone, Copy)]
enum FloorServer {
    /// A thread that reads [`FLOOR_MESSAGE`] bytes and writes them back.
    Echo,
    /// axum on a tokio runtime of one thread, answering [`HELLO`] to a
    /// `GET /`: the least a tokio, hyper and axum server does per request.
    Hello,
}

/// Echoes `messages` messages of [`FLOOR_MESSAGE`] bytes on the first
/// connection to `listener` and returns the CPU time this took the serving
/// thread, in nanoseconds.
fn echo(listener: std::net::TcpListener, messages: u32) -> u64 {
    use std::io::{Read, Write};
    let (mut stream, _) = listener.accept().expect("the client connects");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut message = [0u8; FLOOR_MESSAGE];
    let started = thread_cpu_ns();
    for _ in 0..messages {
        stream.read_exact(&mut message).expect("a message");
        stream.write_all(&message).expect("the answer");
    }
    thread_cpu_ns().saturating_sub(started)
}

/// Serves [`HELLO`] with axum on a tokio runtime of this thread alone until
/// it has answered `messages` requests, and returns the CPU time this took
/// the thread, in nanoseconds.
fn hello(listener: std::net::TcpListener, messages: u32) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    listener.set_nonblocking(true).expect("non-blocking");
    let served = Arc::new(AtomicUsize::new(0));
    let all_served = Arc::new(tokio::sync::Notify::new());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get({
            let (served, all_served) = (served.clone(), all_served.clone());
            move || async move {
                if served.fetch_add(1, Ordering::Relaxed) + 1 == messages as usize {
                    all_served.notify_one();
                }
                HELLO
            }
        }),
    );
    let started = thread_cpu_ns();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move { all_served.notified().await });
        serving.await.expect("serves");
    });
    thread_cpu_ns().saturating_sub(started)
}

/// What a server pays this machine per request before doing anything:
/// [`FloorServer`]s answering one client that sends one request at a time,
/// at each of `rates` per second (0: back to back).
fn floor(rates: &[u32], messages: u32) {
    println!(
        "| requests/s asked | requests/s sent | requests | echo thread: CPU µs per message | axum on one tokio thread: CPU µs per request |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &rate in rates {
        let (sent, echo) = exchange(FloorServer::Echo, rate, messages);
        let (_, hello) = exchange(FloorServer::Hello, rate, messages);
        let asked = if rate == 0 {
            "back to back".to_string()
        } else {
            rate.to_string()
        };
        println!("| {asked} | {sent:.0} | {messages} | {echo:.1} | {hello:.1} |");
    }
}

/// Sends `server` `messages` requests at `rate` per second (0: back to
/// back); returns the rate they were sent at and the server's CPU
/// microseconds per request.
fn exchange(server: FloorServer, rate: u32, messages: u32) -> (f64, f64) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let serving = std::thread::spawn(move || match server {
        FloorServer::Echo => echo(listener, messages),
        FloorServer::Hello => hello(listener, messages),
    });
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let gap = (rate > 0).then(|| Duration::from_secs(1) / rate);
    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [7u8; FLOOR_MESSAGE];
    let started = Instant::now();
    for sent in 1..=messages {
        match server {
            FloorServer::Echo => {
                stream.write_all(&chunk).expect("sends");
                stream.read_exact(&mut chunk).expect("is answered");
            }
            FloorServer::Hello => {
                stream.write_all(HELLO_REQUEST).expect("sends");
                answer.clear();
                while !answer.ends_with(HELLO.as_bytes()) {
                    let read = stream.read(&mut chunk).expect("is answered");
                    assert!(read > 0, "the server closed the connection");
                    answer.extend_from_slice(&chunk[..read]);
                }
            }
        }
        if let Some(due) = gap.map(|gap| started + gap * sent) {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let elapsed = started.elapsed();
    drop(stream);
    let cpu_ns = serving.join().expect("the server thread");
    (
        f64::from(messages) / elapsed.as_secs_f64(),
        cpu_ns as f64 / 1e3 / f64::from(messages),
    )
}

/// Keys of the identity provider `verify` pretends to be.
const JWKS: &str = include_str!("../../../services/intake/tests/fixtures/jwks.json");
const RSA_KEY: &str = include_str!("../../../services/intake/tests/fixtures/rsa-1.key.pem");
const EC_KEY: &str = include_str!("../../../services/intake/tests/fixtures/ec-1.key.pem");

/// A token for `bench` signed with `key` under `kid`.
fn signed(
    algorithm: jsonwebtoken::Algorithm,
    kid: &str,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.to_string());
    let claims =
        json!({"sub": "bench", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&header, &claims, key).expect("token encodes")
}

async fn verify(iterations: u32, rounds: usize) {
    use stowage_intake::auth::{Authenticator, JwksOptions, TokenRules};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("address")
    );
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(|| async { ([("content-type", "application/json")], JWKS) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let rules = || TokenRules::new(ISSUER, AUDIENCE);
    let jwks = async |capacity| {
        let auth = Authenticator::jwks(&url, rules(), JwksOptions::default())
            .expect("authenticator")
            .keeping(capacity);
        auth.preload().await.expect("the JWKS loads");
        auth
    };
    let hs256 =
        |capacity| Authenticator::hs256(&JWT_SECRET.to_string().into(), rules()).keeping(capacity);
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("RSA key");
    let ec = jsonwebtoken::EncodingKey::from_ec_pem(EC_KEY.as_bytes()).expect("EC key");
    let kinds = [
        (
            "RS256",
            signed(jsonwebtoken::Algorithm::RS256, "rsa-1", &rsa),
            jwks(0).await,
            jwks(16).await,
        ),
        (
            "ES256",
            signed(jsonwebtoken::Algorithm::ES256, "ec-1", &ec),
            jwks(0).await,
            jwks(16).await,
        ),
        (
            "HS256",
            token_with(json!({"sub": "bench"})),
            hs256(0),
            hs256(16),
        ),
    ];
    // A kept token takes well under a microsecond: its rounds are 50 times
    // longer, so that they span many of the scheduler's ticks, by which the
    // thread's CPU time is counted.
    let kept_iterations = iterations.saturating_mul(50);
    let round = |auth: &Authenticator, token: &str, iterations: u32| {
        let (started, cpu_started) = (Instant::now(), thread_cpu_ns());
        for _ in 0..iterations {
            black_box(
                futures::executor::block_on(auth.verify(black_box(token))).expect("verifies"),
            );
        }
        Round {
            cpu_us: thread_cpu_ns().saturating_sub(cpu_started) as f64
                / 1e3
                / f64::from(iterations),
            wall_us: started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations),
        }
    };
    println!(
        "| token | verifications | in full: CPU µs each | kept: CPU µs each | in full: wall µs | kept: wall µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, token, full, kept) in &kinds {
        round(full, token, iterations);
        round(kept, token, kept_iterations);
        let (mut in_full, mut from_kept) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            in_full.push(round(full, token, iterations));
            from_kept.push(round(kept, token, kept_iterations));
        }
        let cpu = |r: &[Round]| median(r.iter().map(|r| r.cpu_us).collect());
        let wall = |r: &[Round]| median(r.iter().map(|r| r.wall_us).collect());
        println!(
            "| {name} | {rounds} × {iterations}, kept {rounds} × {kept_iterations} | {:.1} | {:.2} | {:.1} | {:.2} |",
            cpu(&in_full),
            cpu(&from_kept),
            wall(&in_full),
            wall(&from_kept)
        );
    }
}

fn main() {
    match Cli::parse().command {
        Command::Sign {
            python,
            script,
            rounds,
            iterations,
            boto3_iterations,
        } => sign(&python, &script, rounds, iterations, boto3_iterations),
        Command::Verify { iterations, rounds } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(verify(iterations, rounds)),
        Command::Floor { rates, messages } => floor(&rates, messages),
        Command::Load {
            intake,
            grants,
            clients,
            stub,
            stub_delay_ms,
            instructions,
        } => tokio::runtime::Runtime::new()
            .expect("tokio runtime")
            .block_on(async {
                let backend = Backend::start(stub, Duration::from_millis(stub_delay_ms)).await;
                load(&intake, backend, grants, clients, instructions).await;
            }),
    }
}
