//! stowctl: the Stowage operators' tool.
//!
//! Settings come from the environment and a settings file: the one named with
//! `--env-file`, or else `.stowage/dev.env` (written by `make dev`) in the
//! current directory or above, when the environment configures no deployment
//! of its own (see [`stowctl::settings`]). The file fills in whatever the
//! environment does not set, so the tool reaches the local stack as is.

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use stowage_intake::{
    accounts::set_quota, adapters::dynamodb::DynamoAccountStore, domain::keys::UserId,
};
use stowage_shared::pricing::PriceTable;
use stowctl::{
    accounts::{self, UsageReport},
    queues::{self, Consumer, Queues},
    replay::{self, ReplayReport, ReplayRequest},
    settings::{self, EnvFile, MissingSetting},
};

#[derive(Debug, Parser)]
#[command(name = "stowctl", about = "Operate a Stowage deployment", version)]
struct Cli {
    /// Settings file of a local stack (KEY=value lines), read whatever the
    /// environment holds; variables already set win. Without it,
    /// .stowage/dev.env in the current directory or above is read unless
    /// the environment configures a deployment (a STOWAGE_* setting,
    /// AWS_PROFILE, AWS credentials or a role to assume, or
    /// AWS_ENDPOINT_URL*).
    #[arg(long, global = true, env = "STOWAGE_ENV_FILE")]
    env_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a bearer token for USER, signed with the local stack's HS256
    /// secret (`STOWAGE_JWT_SECRET`). Real deployments use their identity
    /// provider's tokens instead.
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Make USER an administrator: the token carries the admin claim
        /// (`STOWAGE_ADMIN_CLAIM`, default `cognito:groups`, holding
        /// `STOWAGE_ADMIN_VALUE`, default `stowage-admins`).
        #[arg(long)]
        admin: bool,
    },
    /// Compare the ledger with the bucket and print the drift; with --fix,
    /// correct the ledger (each key in one conditional transaction with its
    /// owner's totals) and announce the new totals. Exits 1 when drift was
    /// found and not fixed.
    Reconcile {
        /// Only this user (default: every user the ledger or bucket knows).
        #[arg(long)]
        user: Option<String>,
        /// Correct the ledger.
        #[arg(long)]
        fix: bool,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Show every consumer's queue and dead-letter queue: messages visible
    /// (waiting) and in flight (received, not yet deleted), and for
    /// dead-letter queues the age of the oldest message.
    ///
    /// Queue URLs come from STOWAGE_INTAKE_QUEUE_URL, STOWAGE_LEDGER_QUEUE_URL
    /// and STOWAGE_LIFECYCLE_QUEUE_URL; each dead-letter queue is the one the
    /// queue's RedrivePolicy names. The counts are SQS's approximate ones.
    ///
    /// Age: SQS reports no age for a standard queue except through
    /// CloudWatch's ApproximateAgeOfOldestMessage. For a dead-letter queue,
    /// stowctl receives a sample of up to 10 messages with visibility timeout
    /// 0 (they stay available; their receive counts go up by one) and shows
    /// the time since the oldest of them was first sent (SentTimestamp): with
    /// more than 10 dead letters it may miss the very oldest. The consumers'
    /// own queues are not sampled, because each receive there counts towards
    /// maxReceiveCount and could dead-letter a message: their age shows as
    /// "-"; read it in CloudWatch.
    #[command(verbatim_doc_comment)]
    Queues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show USER's usage as intake reports it: stored bytes and objects (as
    /// the ledger last reported them), reserved bytes, quota, bytes per
    /// storage class and the estimated monthly cost (STOWAGE_STORAGE_PRICES).
    /// Reads intake's table (STOWAGE_INTAKE_TABLE); needs dynamodb:GetItem.
    Usage {
        /// The user id (their tokens' `sub`).
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's quota.
    Quota {
        #[command(subcommand)]
        command: Quota,
    },
    /// Send the events of a time window from the bus's archive through the
    /// bus again (EventBridge StartReplay), follow the replay (a progress
    /// bar on a terminal; Ctrl-C cancels it) and report how it ended. The
    /// consumers are idempotent: a replay repairs what was lost and changes
    /// nothing that was applied.
    ///
    /// --source and --detail-type replay only to the rules that route such
    /// events (EventBridge replays to rules, not by event): each such rule
    /// gets every archived event of the window that its own pattern matches.
    /// EventBridge does not count a replay's events; the report gives the
    /// archive's total, and the consumers' stowage.consumer.messages metric
    /// what arrived.
    ///
    /// A window that starts further back than the ledger's tombstones
    /// (STOWAGE_TOMBSTONE_TTL_DAYS, default 45 days) less the 14 days a
    /// replayed event may wait in the queues, 31 days by default, is
    /// refused without --force: the ledger might no longer know which of
    /// its objects were deleted since, and a replayed Object Created would
    /// count a deleted object again.
    ///
    /// Ctrl-C before the replay starts starts nothing; after, it cancels the
    /// replay and reports how it ended; a second Ctrl-C leaves at once (exit
    /// status 130) with the replay's name. If the replay cannot be followed,
    /// stowctl asks EventBridge to cancel it and says whether it may still
    /// be running.
    ///
    /// Needs events:DescribeEventBus, events:ListArchives,
    /// events:DescribeArchive, events:ListRules, events:StartReplay,
    /// events:DescribeReplay and events:CancelReplay. Exits 1 unless the
    /// replay completes.
    #[command(verbatim_doc_comment)]
    Replay {
        /// Start of the window: RFC 3339, `now`, or relative like `-1h`.
        #[arg(long, value_parser = stowctl::parse_time, allow_hyphen_values = true)]
        from: time::OffsetDateTime,
        /// End of the window (default: now).
        #[arg(long, value_parser = stowctl::parse_time, allow_hyphen_values = true)]
        to: Option<time::OffsetDateTime>,
        /// Only to the rules routing events of this source, e.g. aws.s3.
        #[arg(long)]
        source: Option<String>,
        /// Only to the rules routing events of this detail-type, e.g.
        /// "Object Created".
        #[arg(long)]
        detail_type: Option<String>,
        /// The archive (default: the bus's only archive).
        #[arg(long)]
        archive: Option<String>,
        /// Replay a window that starts further back than the ledger's
        /// tombstones allow (STOWAGE_TOMBSTONE_TTL_DAYS less 14 days, 31 by
        /// default), though it may count objects deleted since in their
        /// owners' usage again.
        #[arg(long)]
        force: bool,
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or redrive a consumer's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: Dlq,
    },
    /// Tiering: what the lifecycle service's next sweep would do, doing it,
    /// re-indexing a user after a policy change. The policy, prices and
    /// multipart settings are the lifecycle service's own STOWAGE_TIER_*,
    /// STOWAGE_STORAGE_PRICES and STOWAGE_TRANSITION_PRICES variables.
    Tier {
        #[command(subcommand)]
        command: Tier,
    },
}

#[derive(Debug, Subcommand)]
enum Tier {
    /// Print what the next sweep would do with each due object: tier it,
    /// skip it (too small, costs more than it saves within the class's
    /// minimum storage duration, customer-encrypted) or postpone it (read
    /// since), with the reason and the estimated monthly saving. Changes
    /// nothing.
    Plan {
        /// Only this user's objects.
        #[arg(long)]
        user: Option<String>,
        /// Plan as of this time instead of now: RFC 3339 or relative, e.g. `+90d`.
        #[arg(long, value_parser = stowctl::parse_time, allow_hyphen_values = true)]
        at: Option<time::OffsetDateTime>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sweep now: copy every object the plan tiers onto itself in its
    /// target class (conditional on the entity tag planned, so an object
    /// overwritten meanwhile is left alone), record every decision and
    /// publish ObjectTiered.v1. Exits 1 when a copy failed.
    Run {
        /// Only this user's objects.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recompute due dates under the policy in force: of USER's objects
    /// after lowering their days (STOWAGE_TIER_USER_POLICIES), or of every
    /// indexed object (--all) after lowering STOWAGE_TIER_AFTER_DAYS.
    Reindex {
        /// The user whose objects to re-index.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        user: Option<String>,
        /// Every object the due index holds, a page at a time.
        #[arg(long)]
        all: bool,
    },
    /// Bring objects stored before the lifecycle service knew of them (it was
    /// deployed later, or its table was lost) into its projection, so that
    /// sweeps consider them: lists the bucket under users/ and gives each
    /// unknown object a row from HeadObject. Objects the service learnt of
    /// from S3's events are left alone; safe to run while it runs, or again.
    /// Needs s3:ListBucket, s3:GetObject and the lifecycle table.
    Backfill {
        /// Only this user's objects.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Quota {
    /// Set USER's quota to BYTES, as `PUT /v1/admin/quotas/{user}` does: a
    /// version-conditioned write to intake's table (STOWAGE_INTAKE_TABLE),
    /// retried while grants race with it. Lowering it below what the user
    /// stores deletes nothing; it refuses new uploads until usage drops.
    /// Needs dynamodb:GetItem and dynamodb:PutItem on the table.
    #[command(verbatim_doc_comment)]
    Set {
        /// The user id (their tokens' `sub`).
        user: String,
        /// The new quota in bytes; 0 stops new uploads.
        bytes: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// Show the dead-lettered messages of QUEUE's dead-letter queue, decoded
    /// (detail-type, version, source, user, key), with their receive count
    /// and message id, without consuming them.
    ///
    /// Messages are received in batches of up to 10, each batch hidden for
    /// 30 s plus 2 s per batch the peek asks for (-n 10: 32 s, -n 100: 50 s)
    /// so that the next receive returns others, and all of them are made
    /// visible again (ChangeMessageVisibility to 0) before stowctl exits;
    /// nothing is deleted. Each peek adds one to the messages' receive
    /// counts, which is harmless in a dead-letter queue (it has no redrive
    /// policy of its own). If stowctl is interrupted, or SQS refuses to make
    /// some visible again (a warning on stderr; the messages are still
    /// shown and it exits 0), they reappear when that time ends. A body that
    /// is not an EventBridge event is shown as undecodable (--json carries
    /// the reason and the body).
    ///
    /// Needs sqs:GetQueueAttributes on QUEUE, and sqs:GetQueueUrl,
    /// sqs:GetQueueAttributes, sqs:ReceiveMessage and
    /// sqs:ChangeMessageVisibility on the dead-letter queue.
    #[command(verbatim_doc_comment)]
    Peek {
        /// The consumer whose dead letters to show.
        queue: Consumer,
        /// How many messages to show at most.
        #[arg(short, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        n: u16,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every message of QUEUE's dead-letter queue back to QUEUE with an
    /// SQS message move task (StartMessageMoveTask), wait until it ends
    /// (ListMessageMoveTasks, showing progress on a terminal) and report how
    /// many were moved and how many are left in the dead-letter queue. Fix
    /// the cause first, or they come back.
    ///
    /// Ctrl-C before the task starts starts nothing; after, it cancels the
    /// task (CancelMessageMoveTask) and reports what was moved; a second
    /// Ctrl-C leaves at once (exit status 130). If the task cannot be
    /// followed, stowctl says it may still be running, with its handle.
    ///
    /// Needs sqs:GetQueueAttributes on QUEUE; sqs:GetQueueUrl,
    /// sqs:StartMessageMoveTask, sqs:ListMessageMoveTasks,
    /// sqs:CancelMessageMoveTask, sqs:ReceiveMessage, sqs:DeleteMessage and
    /// sqs:GetQueueAttributes on the dead-letter queue; and sqs:SendMessage
    /// on QUEUE. Exits 1 when the task fails or is cancelled.
    #[command(verbatim_doc_comment)]
    Redrive {
        /// The consumer whose dead letters to move back.
        queue: Consumer,
        /// At most this many messages a second (1-500; default: as fast as
        /// SQS moves them).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=500))]
        rate: Option<i32>,
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

fn setting(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(_) => default.map(str::to_string).ok_or_else(|| {
            MissingSetting {
                name: name.to_string(),
            }
            .into()
        }),
    }
}

fn token(user: &str, ttl: i64, admin: bool) -> anyhow::Result<String> {
    let valid = (1..=128).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    anyhow::ensure!(valid, "user id must match ^[A-Za-z0-9_-]{{1,128}}$");
    anyhow::ensure!(ttl > 0, "--ttl must be positive");
    let secret = setting("STOWAGE_JWT_SECRET", None)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({
        "sub": user,
        "iss": setting("STOWAGE_JWT_ISSUER", Some("stowage-local"))?,
        "aud": setting("STOWAGE_JWT_AUDIENCE", Some("stowage"))?,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    });
    if admin {
        let claim = setting("STOWAGE_ADMIN_CLAIM", Some("cognito:groups"))?;
        anyhow::ensure!(
            !claim.is_empty(),
            "STOWAGE_ADMIN_CLAIM is empty: this deployment has no administrators"
        );
        let value = setting("STOWAGE_ADMIN_VALUE", Some("stowage-admins"))?;
        // An array, as Cognito writes its groups; intake also accepts a string.
        claims[claim] = json!([value]);
    }
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

async fn reconcile(user: Option<String>, fix: bool, json: bool) -> anyhow::Result<bool> {
    if let Some(user) = &user {
        user_id(user)?;
    }
    let path_style = setting("STOWAGE_S3_PATH_STYLE", Some("false"))? == "true";
    let reconciler = stowage_ledger::startup::reconciler(
        &setting("STOWAGE_BUCKET", None)?,
        path_style,
        &setting("STOWAGE_LEDGER_TABLE", None)?,
        &setting("STOWAGE_EVENT_BUS", Some("stowage"))?,
    )
    .await;
    let report = reconciler
        .run(user.as_deref(), fix)
        .await
        .context(reconcile_failed(fix))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(report.settled())
}

/// What a failed reconciliation tells the operator. A correction is one
/// conditional transaction per key, committed as it goes, so a run that
/// fails part way leaves the corrections before the failure in place; a new
/// run compares afresh, corrects only what still differs and announces every
/// user's totals again, so it is safe to run it again.
fn reconcile_failed(fix: bool) -> String {
    let check = "check the bucket, the ledger table, the event bus and your credentials";
    if fix {
        format!(
            "reconciliation failed ({check}); the corrections made before the \
             failure may already be committed. Running `stowctl reconcile --fix` again is \
             safe: it compares the ledger with the bucket afresh, corrects only what still \
             differs and announces the totals again"
        )
    } else {
        format!("reconciliation failed ({check}); nothing was changed")
    }
}

fn print_report(report: &stowage_ledger::reconcile::Report) {
    let mut users = comfy_table::Table::new();
    users.set_header([
        "user",
        "ledger bytes",
        "ledger objects",
        "bucket bytes",
        "bucket objects",
        "state",
    ]);
    for u in &report.users {
        let agree = u.ledger_bytes == u.bucket_bytes && u.ledger_objects == u.bucket_objects;
        users.add_row([
            u.user.clone(),
            u.ledger_bytes.to_string(),
            u.ledger_objects.to_string(),
            u.bucket_bytes.to_string(),
            u.bucket_objects.to_string(),
            if agree { "ok" } else { "drift" }.to_string(),
        ]);
    }
    println!("{users}");
    if report.drift.is_empty() {
        println!("No drift: the ledger matches the bucket.");
        return;
    }
    let shown = |c: &Option<stowage_ledger::reconcile::Counted>| {
        c.as_ref().map_or("-".to_string(), |c| {
            format!("{} B {}", c.size, c.storage_class)
        })
    };
    let mut drift = comfy_table::Table::new();
    drift.set_header(["user", "key", "ledger", "bucket"]);
    for d in &report.drift {
        drift.add_row([
            d.user.clone(),
            d.key.clone(),
            shown(&d.ledger),
            shown(&d.bucket),
        ]);
    }
    println!("{drift}");
    let left = report.drift.iter().filter(|d| !d.corrected).count();
    if report.fixed && left == 0 {
        println!(
            "Corrected {} key(s); the totals now match the bucket.",
            report.drift.len()
        );
    } else if report.fixed {
        println!(
            "Corrected {} key(s); {left} changed while they were compared and are left to their own events: run reconcile again to check them.",
            report.drift.len() - left
        );
    } else {
        println!(
            "{} key(s) drifted; run again with --fix to correct the ledger.",
            report.drift.len()
        );
    }
}

fn user_id(user: &str) -> anyhow::Result<UserId> {
    UserId::parse(user).map_err(|e| anyhow::anyhow!("{}", e.0))
}

async fn account_store() -> anyhow::Result<DynamoAccountStore> {
    let table = setting("STOWAGE_INTAKE_TABLE", None)?;
    let sdk = stowage_shared::aws::load().await;
    Ok(DynamoAccountStore::new(
        stowage_shared::aws::dynamodb(&sdk),
        table,
    ))
}

fn default_quota() -> anyhow::Result<u64> {
    setting("STOWAGE_DEFAULT_QUOTA_BYTES", Some("1073741824"))?
        .parse()
        .context("STOWAGE_DEFAULT_QUOTA_BYTES must be a number of bytes")
}

fn prices() -> anyhow::Result<PriceTable> {
    setting("STOWAGE_STORAGE_PRICES", Some(""))?
        .parse()
        .context("STOWAGE_STORAGE_PRICES is invalid")
}

async fn usage(user: &str, json: bool) -> anyhow::Result<bool> {
    let user = user_id(user)?;
    let (default_quota, prices) = (default_quota()?, prices()?);
    let store = account_store().await?;
    let report = accounts::usage(&store, &user, default_quota, &prices)
        .await
        .context("cannot read intake's table (check STOWAGE_INTAKE_TABLE and your credentials)")?;
    print(&report, json, UsageReport::table)
}

async fn quota(command: Quota) -> anyhow::Result<bool> {
    let Quota::Set { user, bytes, json } = command;
    let user = user_id(&user)?;
    let (default_quota, prices) = (default_quota()?, prices()?);
    let store = account_store().await?;
    let account = set_quota(&store, &user, bytes)
        .await
        .context("cannot change the quota in intake's table (check STOWAGE_INTAKE_TABLE and your credentials)")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let report = UsageReport::new(&user, &account, default_quota, &prices, now);
    print(&report, json, UsageReport::table)
}

/// Prints `value` as pretty JSON or in its human form.
fn print<T: serde::Serialize, H: std::fmt::Display>(
    value: &T,
    json: bool,
    human: impl FnOnce(&T) -> H,
) -> anyhow::Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(true)
}

/// A progress bar on a terminal; none when printing JSON or into a pipe.
fn progress_bar(json: bool, template: &str, message: String) -> Option<indicatif::ProgressBar> {
    (std::io::stdout().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    })
}

/// Ctrl-C while a command runs: the first resolves the future returned, so
/// that the command cancels what it started and reports how it ended; a
/// second leaves at once (exit status 130), saying `left_running`.
///
/// Listening starts when this is called: an interrupt at any point after
/// reaches the command instead of ending the process with its work running
/// on.
fn interrupts(left_running: String) -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (first, first_seen) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if interrupt.recv().await.is_none() {
            return;
        }
        eprintln!("stowctl: interrupted (Ctrl-C again to leave at once)");
        let _ = first.send(());
        if interrupt.recv().await.is_some() {
            eprintln!("stowctl: interrupted again, leaving at once: {left_running}");
            std::process::exit(130);
        }
    });
    Ok(async move {
        if first_seen.await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

async fn replay(request: ReplayRequest, json: bool) -> anyhow::Result<bool> {
    let events = stowage_shared::aws::eventbridge(&stowage_shared::aws::load().await);
    let name = replay::replay_name();
    let cancel = interrupts(format!(
        "the replay {name} may still be running (`aws events cancel-replay --replay-name {name}` cancels it)"
    ))?;
    let bar = progress_bar(
        json,
        "{spinner} {msg} [{elapsed}] {wide_bar} {percent}%",
        format!("replaying from the {} bus's archive", request.bus),
    );
    if let Some(bar) = &bar {
        bar.set_length(1000);
    }
    let report = replay::replay_named(
        &events,
        &request,
        &name,
        Duration::from_secs(1),
        |done| {
            if let Some(bar) = &bar {
                bar.set_position((done * 1000.0) as u64);
            }
        },
        cancel,
    )
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    print(&report, json, ReplayReport::summary)?;
    Ok(report.completed())
}

/// Days the ledger keeps a deleted object's tombstone, read as the ledger
/// reads them.
fn tombstone_ttl_days() -> anyhow::Result<u64> {
    setting(
        "STOWAGE_TOMBSTONE_TTL_DAYS",
        Some(&stowage_ledger::settings::DEFAULT_TOMBSTONE_TTL_DAYS.to_string()),
    )?
    .parse()
    .context("STOWAGE_TOMBSTONE_TTL_DAYS must be a whole number of days")
}

async fn tier(command: Tier) -> anyhow::Result<bool> {
    let user = match &command {
        Tier::Plan { user, .. }
        | Tier::Run { user, .. }
        | Tier::Reindex { user, .. }
        | Tier::Backfill { user, .. } => user.as_deref(),
    };
    if let Some(user) = user {
        user_id(user)?;
    }
    let now = time::OffsetDateTime::now_utc();
    // Parsed after the env file is loaded, from the same variables the
    // lifecycle service reads; the two without defaults are named first.
    setting("STOWAGE_BUCKET", None)?;
    setting("STOWAGE_LIFECYCLE_TABLE", None)?;
    let settings = stowage_lifecycle::settings::SweepSettings::try_parse_from(["stowctl"])
        .map_err(|e| {
            anyhow::anyhow!("the lifecycle settings (STOWAGE_TIER_*, prices) do not parse: {e}")
        })?;
    let sweeper = stowage_lifecycle::startup::sweeper(&settings).await?;
    match command {
        Tier::Plan { user, at, json } => {
            let plan = sweeper
                .plan(at.unwrap_or(now), user.as_deref())
                .await
                .context("planning failed (check the lifecycle table and your credentials)")?;
            print(&plan, json, stowctl::tier::plan_table)
        }
        // Always as of now: an object is cold only once it has been, and a
        // claim lasts a day from the time the sweep runs as of.
        Tier::Run { user, json } => {
            let report = sweeper.run(now, user.as_deref()).await.context(
                "the sweep failed (check the bucket, the lifecycle table and your credentials)",
            )?;
            print(&report, json, stowctl::tier::report_table)?;
            Ok(report.failed == 0)
        }
        Tier::Reindex {
            user: Some(user), ..
        } => {
            let changed = sweeper.reindex(&user).await?;
            println!("Re-indexed {changed} object(s) of {user}.");
            Ok(true)
        }
        Tier::Reindex { user: None, .. } => {
            let bar = progress_bar(
                false,
                "{spinner} {msg} [{elapsed}]",
                "reading the due index".to_string(),
            );
            let changed = sweeper
                .reindex_all(|read, changed| {
                    if let Some(bar) = &bar {
                        bar.set_message(format!(
                            "{read} indexed object(s) read, {changed} re-dated"
                        ));
                    }
                })
                .await
                .context("re-indexing failed (check the lifecycle table and your credentials)")?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            println!("Re-indexed {changed} object(s).");
            Ok(true)
        }
        Tier::Backfill { user, json } => {
            let bar = progress_bar(
                json,
                "{spinner} {msg} [{elapsed}]",
                "listing the bucket".to_string(),
            );
            let report = sweeper
                .backfill(user.as_deref(), |so_far| {
                    if let Some(bar) = &bar {
                        bar.set_message(format!(
                            "{} object(s) looked at, {} added",
                            so_far.listed, so_far.added
                        ));
                    }
                })
                .await
                .context("the backfill failed (check the bucket, the lifecycle table and your credentials)")?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            print(&report, json, stowctl::tier::backfill_summary)
        }
    }
}

async fn sqs() -> aws_sdk_sqs::Client {
    stowage_shared::aws::sqs(&stowage_shared::aws::load().await)
}

fn configured_queues() -> Queues {
    Queues::from_settings(|name| std::env::var(name).ok())
}

async fn show_queues(json: bool) -> anyhow::Result<bool> {
    let rows = queues::status(&sqs().await, &configured_queues()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", queues::status_table(&rows));
    }
    Ok(true)
}

async fn dlq(command: Dlq) -> anyhow::Result<bool> {
    let sqs = sqs().await;
    let queues = configured_queues();
    match command {
        Dlq::Peek { queue, n, json } => {
            let peek = queues::peek(&sqs, &queues, queue, n.into()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peek)?);
            } else {
                println!("{}", queues::peek_table(&peek));
            }
            // The peek showed what it was asked for; messages left hidden
            // reappear by themselves, so this is a warning, not a failure.
            if let Some(warning) = peek.release_warning() {
                eprintln!("{warning}");
            }
            Ok(true)
        }
        Dlq::Redrive { queue, rate, json } => {
            let bar = progress_bar(
                json,
                "{spinner} {msg} [{elapsed}] {wide_bar} {pos}/{len}",
                format!("moving the {queue} dead letters back"),
            );
            let outcome = queues::redrive(
                &sqs,
                &queues,
                queue,
                rate,
                Duration::from_secs(1),
                |progress| {
                    if let Some(bar) = &bar {
                        if let Some(total) = progress.to_move {
                            bar.set_length(total.max(progress.moved).max(0) as u64);
                        }
                        bar.set_position(progress.moved.max(0) as u64);
                    }
                },
                interrupts(format!(
                    "the move task from the {queue} dead-letter queue may still be running \
                     (`aws sqs list-message-move-tasks --source-arn <its ARN>` shows it)"
                ))?,
            )
            .await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let outcome = outcome?;
            print(&outcome, json, queues::redrive_summary)?;
            Ok(outcome.completed())
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let env_file = EnvFile::choose(
        cli.env_file.clone(),
        std::env::current_dir()
            .ok()
            .and_then(|dir| settings::find_local_file(&dir)),
        std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()),
    );
    if let Some(file) = env_file.to_read() {
        // Variables already set in the environment win over the file.
        dotenvy::from_path(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    if let Some(notice) = env_file.notice() {
        eprintln!("{notice}");
    }
    // Sweeps and corrections publish events and count what they do, in
    // traces and metrics of their own when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = stowage_shared::telemetry::init_cli("stowctl");
    let ok = run(cli.command);
    telemetry.shutdown();
    let ok = ok.map_err(|error| {
        match error
            .downcast_ref::<MissingSetting>()
            .and_then(|missing| env_file.explain_missing(missing))
        {
            Some(explained) => anyhow::anyhow!(explained),
            None => error,
        }
    })?;
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Runs one command; false when it did not do all it was asked to.
fn run(command: Command) -> anyhow::Result<bool> {
    Ok(match command {
        Command::Token { user, ttl, admin } => {
            println!("{}", token(&user, ttl, admin)?);
            true
        }
        Command::Reconcile { user, fix, json } => {
            runtime()?.block_on(reconcile(user, fix, json))?
        }
        Command::Usage { user, json } => runtime()?.block_on(usage(&user, json))?,
        Command::Quota { command } => runtime()?.block_on(quota(command))?,
        Command::Replay {
            from,
            to,
            source,
            detail_type,
            archive,
            force,
            json,
        } => {
            replay::check_window_start(
                from,
                time::OffsetDateTime::now_utc(),
                tombstone_ttl_days()?,
                force,
            )?;
            let request = ReplayRequest {
                bus: setting("STOWAGE_EVENT_BUS", Some("stowage"))?,
                archive,
                from,
                to: to.unwrap_or_else(time::OffsetDateTime::now_utc),
                source,
                detail_type,
            };
            runtime()?.block_on(replay(request, json))?
        }
        Command::Queues { json } => runtime()?.block_on(show_queues(json))?,
        Command::Dlq { command } => runtime()?.block_on(dlq(command))?,
        Command::Tier { command } => runtime()?.block_on(tier(command))?,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
