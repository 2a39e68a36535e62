//! `stowctl replay`: sends the events of a time window from the bus's archive
//! through the bus again (EventBridge `StartReplay`), waits for the replay and
//! reports it. The consumers are idempotent, so a replay repairs what was
//! lost and changes nothing that was already applied.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_eventbridge::{
    Client,
    primitives::DateTime,
    types::{ReplayDestination, ReplayState},
};
use serde::Serialize;
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::errors::{Api, failed};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The bus whose archive holds the events, and where they go again.
    pub bus: String,
    /// The archive; `None` finds the bus's only archive.
    pub archive: Option<String>,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// Replay only to the rules that route events of this source.
    pub source: Option<String>,
    /// Replay only to the rules that route events of this detail-type.
    pub detail_type: Option<String>,
}

/// How a replay went.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub replay: String,
    pub archive: String,
    /// `COMPLETED`, `FAILED` or `CANCELLED`.
    pub state: String,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// The rules the events were replayed to; empty means every rule.
    pub rules: Vec<String>,
    /// Time of the last event replayed, when EventBridge reports it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_replayed: Option<OffsetDateTime>,
    pub seconds: f64,
    /// Events in the whole archive (EventBridge counts no replay's events;
    /// the consumers' `stowage.consumer.messages` metric shows what arrived).
    pub archive_events: i64,
}

impl ReplayReport {
    pub fn completed(&self) -> bool {
        self.state == ReplayState::Completed.as_str()
    }

    /// One sentence for a terminal.
    pub fn summary(&self) -> String {
        let rules = if self.rules.is_empty() {
            "every rule".to_string()
        } else {
            self.rules.join(", ")
        };
        let window = format!(
            "{} to {}",
            self.from.format(&Rfc3339).unwrap_or_default(),
            self.to.format(&Rfc3339).unwrap_or_default()
        );
        let mut line = format!(
            "Replay {} of {} ({window}) to {rules}: {} after {:.1} s.",
            self.replay, self.archive, self.state, self.seconds
        );
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" Reason: {reason}."));
        }
        line.push_str(&format!(
            " The archive holds {} event(s) in all.",
            self.archive_events
        ));
        line
    }
}

/// True when a rule with this event pattern may route an event of `source`
/// and `detail_type` (`None`: any). Only exact string values are compared;
/// content filters (prefix, anything-but, ...) count as a possible match.
pub fn may_route(pattern: &Value, source: Option<&str>, detail_type: Option<&str>) -> bool {
    let Some(fields) = pattern.as_object() else {
        return true;
    };
    let admits = |name: &str, wanted: Option<&str>| match (fields.get(name), wanted) {
        (Some(Value::Array(allowed)), Some(wanted)) => {
            allowed.iter().any(|allowed| match allowed {
                Value::String(value) => value == wanted,
                _ => true,
            })
        }
        _ => true,
    };
    admits("source", source)
        && admits("detail-type", detail_type)
        && fields
            .get("$or")
            .and_then(Value::as_array)
            .is_none_or(|branches| {
                branches
                    .iter()
                    .any(|branch| may_route(branch, source, detail_type))
            })
}

/// Days a replayed event may wait in the queues before the ledger handles
/// it: the dead-letter queues' retention, for one dead-lettered and then
/// redriven.
pub const QUEUED_DAYS: u64 = 14;

/// Refuses a window that starts before the ledger's tombstones reach back,
/// unless `force`d. The ledger keeps a deleted object's tombstone for
/// `tombstone_days` (`STOWAGE_TOMBSTONE_TTL_DAYS`) after the delete; an
/// `Object Created` replayed and handled later than that after a delete of
/// its object finds no tombstone and would count the object in its owner's
/// usage again. A replayed event is handled at most [`QUEUED_DAYS`] after
/// the replay, so the window may start `tombstone_days - QUEUED_DAYS` back.
pub fn check_window_start(
    from: OffsetDateTime,
    now: OffsetDateTime,
    tombstone_days: u64,
    force: bool,
) -> anyhow::Result<()> {
    let allowed = tombstone_days.saturating_sub(QUEUED_DAYS);
    let days = i64::try_from(allowed).unwrap_or(i64::MAX);
    let oldest = now
        .checked_sub(time::Duration::days(days.min(1_000_000)))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if from >= oldest || force {
        return Ok(());
    }
    anyhow::bail!(
        "--from {} lies more than {allowed} days back: the ledger keeps tombstones \
         {tombstone_days} days (STOWAGE_TOMBSTONE_TTL_DAYS) and a replayed event may wait up \
         to {QUEUED_DAYS} days in the queues, so it might no longer know which objects of that \
         time were deleted since, and replaying their Object Created events would count \
         deleted objects in their owners' usage again. Start the window at {} or later, or \
         pass --force to replay anyway (then run `stowctl reconcile --fix`)",
        from.format(&Rfc3339).unwrap_or_default(),
        oldest.format(&Rfc3339).unwrap_or_default()
    )
}

/// A new replay's name: `stowctl-<unix time>-<8 hex digits>`.
pub fn replay_name() -> String {
    format!(
        "stowctl-{}-{}",
        OffsetDateTime::now_utc().unix_timestamp(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Checks the request, starts the replay, and follows it until it ends,
/// calling `progress` with the fraction of the window replayed so far.
/// Cancelled (`CancelReplay`) when `cancel` resolves first.
pub async fn replay(
    events: &Client,
    request: &ReplayRequest,
    poll: Duration,
    progress: impl FnMut(f64),
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ReplayReport> {
    replay_named(events, request, &replay_name(), poll, progress, cancel).await
}

/// [`replay`], naming the replay `name` (see [`replay_name`]), so that the
/// caller can name it too, e.g. when it leaves without waiting for it.
///
/// When `cancel` resolves before the replay is started, nothing is started.
/// When the replay was started and cannot be followed to its end, it is
/// cancelled if EventBridge lets it be, and the error says whether it may
/// still be running and how to find it. A cancellation EventBridge refuses
/// because the replay has just ended reports how it ended.
pub async fn replay_named(
    events: &Client,
    request: &ReplayRequest,
    name: &str,
    poll: Duration,
    progress: impl FnMut(f64),
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ReplayReport> {
    anyhow::ensure!(
        request.from < request.to,
        "--from must be before --to (from {} to {})",
        request.from.format(&Rfc3339).unwrap_or_default(),
        request.to.format(&Rfc3339).unwrap_or_default()
    );
    anyhow::ensure!(
        request.to <= OffsetDateTime::now_utc() + time::Duration::seconds(60),
        "--to lies in the future: EventBridge replays only events already archived"
    );
    tokio::pin!(cancel);
    let source = tokio::select! {
        biased;
        () = &mut cancel => anyhow::bail!("interrupted before the replay was started: nothing was replayed"),
        source = ReplaySource::find(events, request) => source?,
    };

    let started = std::time::Instant::now();
    let mut destination = ReplayDestination::builder().arn(&source.bus_arn);
    for (_, arn) in &source.rules {
        destination = destination.filter_arns(arn);
    }
    let archive_what = format!("the archive {}", source.archive);
    events
        .start_replay()
        .replay_name(name)
        .event_source_arn(&source.archive_arn)
        .event_start_time(DateTime::from_secs(request.from.unix_timestamp()))
        .event_end_time(DateTime::from_secs(request.to.unix_timestamp()))
        .destination(destination.build()?)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "StartReplay", &archive_what, e))?;

    let described = match follow(events, request, name, poll, progress, cancel).await {
        Ok(described) => described,
        Err(error) => return Err(unfollowed(events, name, error).await),
    };
    let state = described
        .state
        .map_or_else(|| "UNKNOWN".to_string(), |s| s.as_str().to_string());
    let archive_events = events
        .describe_archive()
        .archive_name(&source.archive)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "DescribeArchive", &archive_what, e))
        .with_context(|| format!("the replay {name} ended {state}, but its report is incomplete"))?
        .event_count;
    Ok(ReplayReport {
        replay: name.to_string(),
        archive: source.archive,
        state,
        reason: described.state_reason.filter(|r| !r.is_empty()),
        from: request.from,
        to: request.to,
        rules: source.rules.into_iter().map(|(name, _)| name).collect(),
        last_replayed: described.event_last_replayed_time.and_then(to_time),
        seconds: started.elapsed().as_secs_f64(),
        archive_events,
    })
}

/// Where a replay's events come from and go to.
struct ReplaySource {
    bus_arn: String,
    archive: String,
    archive_arn: String,
    /// The rules (name, ARN) to replay to; empty means every rule.
    rules: Vec<(String, String)>,
}

impl ReplaySource {
    async fn find(events: &Client, request: &ReplayRequest) -> anyhow::Result<Self> {
        let bus_what = format!("the event bus {}", request.bus);
        let bus_arn = events
            .describe_event_bus()
            .name(&request.bus)
            .send()
            .await
            .map_err(|e| failed(Api::EventBridge, "DescribeEventBus", &bus_what, e))?
            .arn
            .with_context(|| format!("EventBridge returned no ARN for {bus_what}"))?;
        let archive = match &request.archive {
            Some(name) => name.clone(),
            None => only_archive(events, &bus_arn, &bus_what).await?,
        };
        let archive_what = format!("the archive {archive}");
        let archive_arn = events
            .describe_archive()
            .archive_name(&archive)
            .send()
            .await
            .map_err(|e| failed(Api::EventBridge, "DescribeArchive", &archive_what, e))?
            .archive_arn
            .with_context(|| format!("EventBridge returned no ARN for {archive_what}"))?;
        let rules = rules_for(events, request, &bus_what).await?;
        Ok(Self {
            bus_arn,
            archive,
            archive_arn,
            rules,
        })
    }
}

/// Follows a started replay until it ends; cancels it when `cancel`
/// resolves. A cancellation that fails is no error when the replay has
/// ended meanwhile: the next `DescribeReplay` tells how.
async fn follow(
    events: &Client,
    request: &ReplayRequest,
    name: &str,
    poll: Duration,
    mut progress: impl FnMut(f64),
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<aws_sdk_eventbridge::operation::describe_replay::DescribeReplayOutput> {
    let replay_what = format!("the replay {name}");
    tokio::pin!(cancel);
    let mut cancelled = false;
    let mut refused: Option<anyhow::Error> = None;
    loop {
        let described = events
            .describe_replay()
            .replay_name(name)
            .send()
            .await
            .map_err(|e| failed(Api::EventBridge, "DescribeReplay", &replay_what, e))?;
        let state = described.state.clone().unwrap_or(ReplayState::Starting);
        if matches!(
            state,
            ReplayState::Completed | ReplayState::Failed | ReplayState::Cancelled
        ) {
            return Ok(described);
        }
        if let Some(error) = refused.take() {
            // Cancelling failed and the replay goes on.
            return Err(error);
        }
        if let Some(last) = described.event_last_replayed_time.and_then(to_time) {
            let done = (last - request.from) / (request.to - request.from);
            progress(done.clamp(0.0, 1.0));
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut cancel, if !cancelled => {
                cancelled = true;
                if let Err(error) = events.cancel_replay().replay_name(name).send().await {
                    refused = Some(failed(Api::EventBridge, "CancelReplay", &replay_what, error));
                }
            }
        }
    }
}

/// The error for a replay that was started and could not be followed to its
/// end: cancels it if EventBridge lets it be, and says whether it may still
/// be running and how to look after it.
async fn unfollowed(events: &Client, name: &str, error: anyhow::Error) -> anyhow::Error {
    let look = format!("aws events describe-replay --replay-name {name}");
    match events.cancel_replay().replay_name(name).send().await {
        Ok(_) => error.context(format!(
            "the replay {name} was started and could not be followed, so stowctl asked \
             EventBridge to cancel it; the events it replayed so far stay replayed (the \
             consumers are idempotent). See how it ended with `{look}`, and run replay again"
        )),
        Err(cancel_error) => {
            let cancel_error = failed(
                Api::EventBridge,
                "CancelReplay",
                &format!("the replay {name}"),
                cancel_error,
            );
            error.context(format!(
                "the replay {name} was started and may still be running: follow it with \
                 `{look}`, cancel it with `aws events cancel-replay --replay-name {name}` \
                 (stowctl's own attempt failed: {cancel_error:#})"
            ))
        }
    }
}

fn to_time(value: DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(value.secs()) * 1_000_000_000 + i128::from(value.subsec_nanos()),
    )
    .ok()
}

/// The bus's archive, when it has exactly one.
async fn only_archive(events: &Client, bus_arn: &str, bus_what: &str) -> anyhow::Result<String> {
    let archives = events
        .list_archives()
        .event_source_arn(bus_arn)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "ListArchives", bus_what, e))?
        .archives
        .unwrap_or_default();
    let names: Vec<String> = archives
        .into_iter()
        .filter_map(|a| a.archive_name)
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("{bus_what} has no archive, so there is nothing to replay"),
        _ => anyhow::bail!(
            "{bus_what} has {} archives ({}): name one with --archive",
            names.len(),
            names.join(", ")
        ),
    }
}

/// The rules (name, ARN) to replay to: none (meaning every rule) without
/// filters, else the bus's own rules that may route such events.
async fn rules_for(
    events: &Client,
    request: &ReplayRequest,
    bus_what: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    if request.source.is_none() && request.detail_type.is_none() {
        return Ok(Vec::new());
    }
    let mut rules = Vec::new();
    let mut next = None;
    loop {
        let page = events
            .list_rules()
            .event_bus_name(&request.bus)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| failed(Api::EventBridge, "ListRules", bus_what, e))?;
        for rule in page.rules.unwrap_or_default() {
            // Rules EventBridge manages (an archive's own) are not targets.
            if rule.managed_by.is_some() {
                continue;
            }
            let (Some(name), Some(arn), Some(pattern)) = (rule.name, rule.arn, rule.event_pattern)
            else {
                continue;
            };
            let pattern: Value = serde_json::from_str(&pattern).unwrap_or(Value::Null);
            if may_route(
                &pattern,
                request.source.as_deref(),
                request.detail_type.as_deref(),
            ) {
                rules.push((name, arn));
            }
        }
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    anyhow::ensure!(
        !rules.is_empty(),
        "no rule on {bus_what} routes events of {}: nothing would receive them",
        [
            request.source.as_ref().map(|s| format!("source {s}")),
            request
                .detail_type
                .as_ref()
                .map(|d| format!("detail-type {d}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
    );
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// An EventBridge that answers each call with `answer(operation, n)`,
    /// `n` counting that operation's calls from 0, and records the calls.
    struct Stub {
        url: String,
        calls: Arc<Mutex<Vec<String>>>,
    }

    type Answer = dyn Fn(&str, usize) -> (u16, Value) + Send + Sync;

    impl Stub {
        async fn start(
            answer: impl Fn(&str, usize) -> (u16, Value) + Send + Sync + 'static,
        ) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let calls = Arc::new(Mutex::new(Vec::new()));
            let answer: Arc<Answer> = Arc::new(answer);
            let recorded = calls.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, answer.clone(), recorded.clone()));
                }
            });
            Self { url, calls }
        }

        fn client(&self) -> Client {
            use aws_sdk_eventbridge::config::{
                BehaviorVersion, Credentials, Region, retry::RetryConfig,
            };
            Client::from_conf(
                aws_sdk_eventbridge::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("us-east-1"))
                    .credentials_provider(Credentials::new("AKID", "secret", None, None, "stub"))
                    .endpoint_url(&self.url)
                    .retry_config(RetryConfig::disabled())
                    .build(),
            )
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    async fn serve(
        stream: tokio::net::TcpStream,
        answer: Arc<Answer>,
        calls: Arc<Mutex<Vec<String>>>,
    ) {
        let mut stream = BufReader::new(stream);
        loop {
            let (mut operation, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "x-amz-target" => {
                            operation = value.trim().rsplit('.').next().unwrap().to_string()
                        }
                        "content-length" => length = value.trim().parse().unwrap(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
            let nth = {
                let mut calls = calls.lock().unwrap();
                let nth = calls.iter().filter(|c| **c == operation).count();
                calls.push(operation.clone());
                nth
            };
            let (status, body) = answer(&operation, nth);
            let body = body.to_string();
            let response = format!(
                "HTTP/1.1 {status} Stub\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .unwrap();
        }
    }

    /// The answers of an EventBridge with one bus, one archive and one replay
    /// whose `DescribeReplay` and `CancelReplay` answer as given.
    fn eventbridge(
        describe: impl Fn(usize) -> (u16, Value) + Send + Sync + 'static,
        cancel: impl Fn(usize) -> (u16, Value) + Send + Sync + 'static,
    ) -> impl Fn(&str, usize) -> (u16, Value) + Send + Sync + 'static {
        move |operation, nth| match operation {
            "DescribeEventBus" => (
                200,
                json!({"Name": "b", "Arn": "arn:aws:events:us-east-1:1:event-bus/b"}),
            ),
            "ListArchives" => (200, json!({"Archives": [{"ArchiveName": "b-archive"}]})),
            "DescribeArchive" => (
                200,
                json!({"ArchiveName": "b-archive",
                       "ArchiveArn": "arn:aws:events:us-east-1:1:archive/b-archive",
                       "EventCount": 7}),
            ),
            "StartReplay" => (200, json!({"State": "STARTING"})),
            "DescribeReplay" => describe(nth),
            "CancelReplay" => cancel(nth),
            other => (
                400,
                json!({"__type": "UnknownOperationException", "message": other}),
            ),
        }
    }

    fn state(state: &str) -> (u16, Value) {
        (200, json!({"ReplayName": "r", "State": state}))
    }

    fn refused(code: &str, message: &str) -> (u16, Value) {
        (400, json!({"__type": code, "message": message}))
    }

    fn request() -> ReplayRequest {
        let now = OffsetDateTime::now_utc();
        ReplayRequest {
            bus: "b".into(),
            archive: None,
            from: now - time::Duration::hours(1),
            to: now,
            source: None,
            detail_type: None,
        }
    }

    #[tokio::test]
    async fn an_interrupt_before_the_replay_starts_starts_nothing() {
        let stub = Stub::start(eventbridge(|_| state("COMPLETED"), |_| state("CANCELLING"))).await;
        let error = replay_with(&stub, "r", std::future::ready(()))
            .await
            .expect_err("interrupted");
        assert!(
            error.to_string().contains("nothing was replayed"),
            "{error:#}"
        );
        assert!(
            !stub.calls().contains(&"StartReplay".to_string()),
            "{:?}",
            stub.calls()
        );
    }

    /// Replays the last hour as `name` against `stub`, interrupted when
    /// `cancel` resolves.
    async fn replay_with(
        stub: &Stub,
        name: &str,
        cancel: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<ReplayReport> {
        replay_named(
            &stub.client(),
            &request(),
            name,
            Duration::from_secs(3600),
            |_| {},
            cancel,
        )
        .await
    }

    /// Resolves once the stub has been asked to start the replay.
    async fn after_start(stub: &Stub) {
        while !stub.calls().iter().any(|c| c == "StartReplay") {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_cancel_refused_because_the_replay_ended_reports_how_it_ended() {
        let stub = Stub::start(eventbridge(
            |nth| state(if nth == 0 { "RUNNING" } else { "COMPLETED" }),
            |_| {
                refused(
                    "IllegalStatusException",
                    "Replay r is not in a state that can be cancelled",
                )
            },
        ))
        .await;
        let report = replay_with(&stub, "r", after_start(&stub))
            .await
            .expect("the replay's report");
        assert!(report.completed(), "{report:?}");
        assert_eq!(report.archive_events, 7);
        assert_eq!(
            stub.calls(),
            [
                "DescribeEventBus",
                "ListArchives",
                "DescribeArchive",
                "StartReplay",
                "DescribeReplay",
                "CancelReplay",
                "DescribeReplay",
                "DescribeArchive"
            ]
        );
    }

    #[tokio::test]
    async fn an_interrupt_after_the_start_cancels_the_replay_and_reports_it() {
        let stub = Stub::start(eventbridge(
            |nth| state(if nth == 0 { "RUNNING" } else { "CANCELLED" }),
            |_| state("CANCELLING"),
        ))
        .await;
        let report = replay_with(&stub, "r", after_start(&stub))
            .await
            .expect("the replay's report");
        assert_eq!(report.state, "CANCELLED");
        assert!(!report.completed());
        assert!(stub.calls().contains(&"CancelReplay".to_string()));
    }

    #[tokio::test]
    async fn a_replay_that_cannot_be_followed_is_cancelled_or_named_as_maybe_running() {
        let denied = || refused("AccessDeniedException", "not allowed");
        let stub = Stub::start(eventbridge(move |_| denied(), |_| state("CANCELLING"))).await;
        let error = replay_with(&stub, "r-1", std::future::pending())
            .await
            .expect_err("DescribeReplay is refused");
        let text = format!("{error:#}");
        assert!(
            text.starts_with("the replay r-1 was started and could not be followed, so stowctl asked EventBridge to cancel it"),
            "{text}"
        );
        assert!(
            text.contains("DescribeReplay on the replay r-1 failed"),
            "{text}"
        );
        assert_eq!(
            stub.calls().last().map(String::as_str),
            Some("CancelReplay")
        );

        let stub = Stub::start(eventbridge(move |_| denied(), move |_| denied())).await;
        let error = replay_with(&stub, "r-2", std::future::pending())
            .await
            .expect_err("DescribeReplay is refused");
        let text = format!("{error:#}");
        for part in [
            "the replay r-2 was started and may still be running",
            "aws events describe-replay --replay-name r-2",
            "aws events cancel-replay --replay-name r-2",
            "CancelReplay on the replay r-2 failed",
            "DescribeReplay on the replay r-2 failed",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[test]
    fn a_window_older_than_the_tombstones_is_refused_unless_forced() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        let days = |d: i64| now - time::Duration::days(d);
        // 45 days of tombstones, less the 14 a replayed event may wait.
        assert!(check_window_start(days(30), now, 45, false).is_ok());
        assert!(check_window_start(days(31), now, 45, false).is_ok());
        let error = check_window_start(days(31) - time::Duration::seconds(1), now, 45, false)
            .expect_err("older than the tombstones allow");
        let text = error.to_string();
        for part in [
            "--from 2026-10-31T09:59:59Z lies more than 31 days back",
            "STOWAGE_TOMBSTONE_TTL_DAYS",
            "would count deleted objects in their owners' usage again",
            "Start the window at 2026-10-31T10:00:00Z or later",
            "--force",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        assert!(check_window_start(days(400), now, 45, true).is_ok());
        assert!(check_window_start(days(400), now, 500, false).is_ok());
        assert!(check_window_start(days(1), now, 0, false).is_err());
        assert!(check_window_start(days(1), now, 14, false).is_err());
        assert!(check_window_start(days(100_000), now, u64::MAX, false).is_ok());
    }

    #[test]
    fn patterns_route_by_source_and_detail_type_including_or_branches() {
        let ledger = json!({"source": ["aws.s3", "stowage.intake"],
                            "detail-type": ["Object Created", "Object Deleted", "UploadGranted.v1"]});
        let lifecycle = json!({"$or": [
            {"source": ["aws.s3"], "detail-type": ["Object Created", "Object Restore Completed"]},
            {"source": ["stowage.intake"], "detail-type": ["ObjectAccessed.v1"]}
        ]});
        let intake = json!({"source": ["stowage.ledger"], "detail-type": ["UsageChanged.v1"]});
        let routes = |p: &Value, s, d| may_route(p, s, d);

        assert!(routes(&ledger, Some("aws.s3"), None));
        assert!(routes(&ledger, Some("aws.s3"), Some("Object Deleted")));
        assert!(!routes(&ledger, Some("stowage.ledger"), None));
        assert!(routes(
            &lifecycle,
            Some("aws.s3"),
            Some("Object Restore Completed")
        ));
        assert!(!routes(
            &lifecycle,
            Some("aws.s3"),
            Some("ObjectAccessed.v1")
        ));
        assert!(routes(&lifecycle, None, Some("ObjectAccessed.v1")));
        assert!(!routes(&lifecycle, Some("stowage.ledger"), None));
        assert!(routes(&intake, None, Some("UsageChanged.v1")));
        assert!(!routes(&intake, None, Some("Object Created")));
        // A content filter might match anything it is compared with.
        assert!(routes(
            &json!({"source": [{"prefix": "aws."}]}),
            Some("aws.s3"),
            None
        ));
        assert!(routes(&json!({}), Some("x"), Some("y")));
    }
}
