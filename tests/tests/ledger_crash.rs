//! The ledger process is killed with SIGKILL at random moments while a few
//! thousand real S3 events stream through it; after the last restart the
//! ledger must equal the bucket exactly: nothing lost, nothing counted twice.
//!
//! The emulator gives every event of a key the same sequencer, so it cannot
//! order two events of one key that arrive out of order (AWS can; that order
//! is proven by the ledger's property tests). Each phase therefore touches a
//! key once: phase one creates keys, phase two, once the first is consumed,
//! deletes some of them.

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use stowage_e2e::{Stack, queue_depth, service_binary};
use stowage_ledger::reconcile::Reconciler;
use tokio::process::{Child, Command};

const USERS: usize = 4;
const KEYS_PER_USER: usize = 375;
const DELETED_PER_USER: usize = 125;
const KILLS_PER_PHASE: usize = 4;

/// A small deterministic generator, seeded from the clock and printed, so a
/// failing schedule can be replayed with `CRASH_SEED`.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn start_ledger(binary: &std::path::Path, stack: &Stack) -> Child {
    Command::new(binary)
        .args(["--bucket", stack.get("STOWAGE_BUCKET")])
        .args(["--s3-path-style", "true"])
        .args(["--table", stack.get("STOWAGE_LEDGER_TABLE")])
        .args(["--queue-url", stack.get("STOWAGE_LEDGER_QUEUE_URL")])
        .args(["--event-bus", stack.get("STOWAGE_EVENT_BUS")])
        .args([
            "--workers",
            "4",
            "--wait-seconds",
            "1",
            "--visibility-seconds",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ledger starts")
}

/// Kills and restarts the ledger `times` times at random moments.
async fn crash_repeatedly(
    binary: &std::path::Path,
    stack: &Stack,
    ledger: &mut Child,
    rng: &mut Lcg,
    times: usize,
) {
    for _ in 0..times {
        tokio::time::sleep(Duration::from_millis(200 + rng.next(1200))).await;
        ledger.kill().await.expect("SIGKILL");
        *ledger = start_ledger(binary, stack);
    }
}

/// Waits until the ledger equals the bucket. Events reach the queue a
/// while after the S3 call that caused them, so an empty queue does not mean
/// every event was applied; a lost event keeps the ledger from ever matching,
/// and the wait fails with the last report.
async fn wait_until_reconciled(
    reconciler: &Reconciler,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    seed: u64,
) {
    let mut last = None;
    let limit = Duration::from_secs(600);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        // Reconciling lists everything; only do it once the queue is quiet.
        if queue_depth(sqs, queue).await.is_ok_and(|depth| depth == 0) {
            let report = reconciler.run(None, false).await.expect("reconcile");
            if report.clean() && report.users.len() == USERS {
                return;
            }
            last = Some(report);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    panic!("seed {seed}: after {limit:?} the ledger still differs from the bucket: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_survives_being_killed_at_random_moments() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let s3 = stowage_shared::aws::s3(&sdk, true);
    let sqs = stowage_shared::aws::sqs(&sdk);
    let queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    let bucket = stack.get("STOWAGE_BUCKET").to_string();
    let binary = service_binary("stowage-ledger");
    let mut ledger = start_ledger(&binary, &stack);
    let reconciler = stowage_ledger::startup::reconciler(
        &bucket,
        true,
        stack.get("STOWAGE_LEDGER_TABLE"),
        stack.get("STOWAGE_EVENT_BUS"),
    )
    .await;

    // (key, size, deleted in phase two)
    let keys: Vec<(String, usize, bool)> = (0..USERS)
        .flat_map(|u| {
            (0..KEYS_PER_USER).map(move |k| {
                (
                    format!("users/crash{u}/file {k}.bin"),
                    1 + (u * 7919 + k * 104_729) % 4096,
                    k < DELETED_PER_USER,
                )
            })
        })
        .collect();

    // Phase one: create every key while the ledger keeps dying.
    let puts = futures::stream::iter(keys.iter().cloned())
        .map(|(key, size, _)| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(vec![b'x'; size].into())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("PutObject {key}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let (_, ()) = tokio::join!(
        puts,
        crash_repeatedly(&binary, &stack, &mut ledger, &mut rng, KILLS_PER_PHASE)
    );
    wait_until_reconciled(&reconciler, &sqs, &queue, seed).await;

    // Phase two: delete a third of them, again with crashes.
    let deletes = futures::stream::iter(keys.iter().filter(|(_, _, deleted)| *deleted).cloned())
        .map(|(key, _, _)| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                s3.delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DeleteObject {key}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let (_, ()) = tokio::join!(
        deletes,
        crash_repeatedly(&binary, &stack, &mut ledger, &mut rng, KILLS_PER_PHASE)
    );
    wait_until_reconciled(&reconciler, &sqs, &queue, seed).await;
    ledger.kill().await.expect("ledger stops");

    let report = reconciler.run(None, false).await.expect("reconcile");
    let expected_objects = (KEYS_PER_USER - DELETED_PER_USER) as u64;
    for user in &report.users {
        assert_eq!(user.bucket_objects, expected_objects, "{user:?}");
        assert_eq!(
            (user.ledger_objects, user.ledger_bytes),
            (user.bucket_objects, user.bucket_bytes),
            "{user:?}"
        );
    }
}
