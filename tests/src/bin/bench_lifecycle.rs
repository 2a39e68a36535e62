//! One lifecycle sweep on the local emulators: 100,000 projected objects of
//! which 100 are due, tiered through the due index, beside a naive sweep's
//! first step, listing the bucket (`ListObjectsV2`, 1,000 keys a page).
//! Requests are counted by an interceptor on the sweeper's own clients.
//!
//! Run with `make bench-lifecycle` (it starts the emulators). Prints a
//! Markdown table. `--objects N --due D --listed L` change the sizes.

use std::time::Instant;

use futures::StreamExt;
use stowage_e2e::{
    RequestCounter, Stack, counted_sweeper, load_projection, put_for_etag, standard_row,
};
use time::OffsetDateTime;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let objects = arg("--objects", 100_000);
    let due = arg("--due", 100);
    let listed = arg("--listed", 100_000);

    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let s3 = stowage_shared::aws::s3(&sdk, true);
    let bucket = stack.get("STOWAGE_BUCKET").to_string();
    let table = stack.get("STOWAGE_LIFECYCLE_TABLE").to_string();
    let now = OffsetDateTime::now_utc().unix_timestamp();

    // The due objects exist in the bucket; the others only in the index,
    // due over the coming 80 days.
    let started = Instant::now();
    let due_rows: Vec<_> = futures::stream::iter(0..due)
        .map(|i| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                let key = format!("users/due{}/cold-{i}.bin", i % 10);
                let etag = put_for_etag(&s3, &bucket, &key, vec![5u8; 1 << 20]).await;
                (
                    key,
                    standard_row(1 << 20, &etag, now - 91 * 86_400),
                    now - 86_400,
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let idle: Vec<_> = (0..objects - due)
        .map(|i| {
            let key = format!("users/u{}/file-{i}.bin", i % 1000);
            (
                key,
                standard_row(1 << 20, "e", now),
                now + (1 + (i as i64) % 80) * 86_400,
            )
        })
        .collect();
    load_projection(&table, &idle, 8).await;
    load_projection(&table, &due_rows, 8).await;
    eprintln!(
        "projection of {objects} loaded in {:.0?}",
        started.elapsed()
    );

    let counter = RequestCounter::default();
    let sweeper = counted_sweeper(&stack_settings(&stack), &counter).await;
    let started = Instant::now();
    let plan = sweeper
        .plan(OffsetDateTime::now_utc(), None)
        .await
        .expect("plan");
    let plan_time = started.elapsed();
    let plan_requests = counter.get();
    assert_eq!(plan.to_tier, due, "every due object is planned");
    let started = Instant::now();
    let report = sweeper
        .run(OffsetDateTime::now_utc(), None)
        .await
        .expect("sweep");
    let run_time = started.elapsed();
    let run_requests = counter.get() - plan_requests;
    assert_eq!(report.tiered, due, "{report:?}");

    // The naive way: list everything, then decide per object.
    let started = Instant::now();
    let keys: Vec<String> = (0..listed)
        .map(|i| format!("users/u{}/file-{i}.bin", i % 1000))
        .collect();
    futures::stream::iter(keys)
        .map(|key| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                s3.put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(Vec::new().into())
                    .send()
                    .await
                    .expect("PutObject");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!("{listed} objects put in {:.0?}", started.elapsed());
    let list_counter = RequestCounter::default();
    let listing = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .interceptor(list_counter.clone())
            .build(),
    );
    let started = Instant::now();
    let mut pages = listing
        .list_objects_v2()
        .bucket(&bucket)
        .into_paginator()
        .send();
    let mut seen = 0;
    while let Some(page) = pages.next().await {
        seen += page.expect("ListObjectsV2").contents().len();
    }
    let list_time = started.elapsed();

    println!("| operation | objects | due | requests | requests per due object | time |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| `tier plan` (index queries only) | {objects} | {due} | {plan_requests} | {:.2} | {:.2} s |",
        plan_requests as f64 / due as f64,
        plan_time.as_secs_f64()
    );
    println!(
        "| `tier run` (queries, copies, transactions, PutEvents) | {objects} | {due} | {run_requests} | {:.2} | {:.2} s |",
        run_requests as f64 / due as f64,
        run_time.as_secs_f64()
    );
    println!(
        "| naive: list the bucket (ListObjectsV2 only) | {seen} | - | {} | {:.2} | {:.2} s |",
        list_counter.get(),
        list_counter.get() as f64 / due as f64,
        list_time.as_secs_f64()
    );
}

fn stack_settings(stack: &Stack) -> stowage_lifecycle::settings::SweepSettings {
    use clap::Parser;
    stowage_lifecycle::settings::SweepSettings::try_parse_from([
        "bench_lifecycle",
        "--bucket",
        stack.get("STOWAGE_BUCKET"),
        "--s3-path-style",
        "true",
        "--table",
        stack.get("STOWAGE_LIFECYCLE_TABLE"),
        "--event-bus",
        stack.get("STOWAGE_EVENT_BUS"),
    ])
    .expect("settings")
}
