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

/// Checks the request, starts the replay, and follows it until it ends,
/// calling `progress` with the fraction of the window replayed so far.
/// Cancelled (`CancelReplay`) when `cancel` resolves first.
pub async fn replay(
    events: &Client,
    request: &ReplayRequest,
    poll: Duration,
    mut progress: impl FnMut(f64),
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
    let described = events
        .describe_archive()
        .archive_name(&archive)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "DescribeArchive", &archive_what, e))?;
    let archive_arn = described
        .archive_arn
        .with_context(|| format!("EventBridge returned no ARN for {archive_what}"))?;
    let rules = rules_for(events, request, &bus_what).await?;

    let replay = format!(
        "stowctl-{}-{}",
        OffsetDateTime::now_utc().unix_timestamp(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let started = std::time::Instant::now();
    let mut destination = ReplayDestination::builder().arn(&bus_arn);
    for (_, arn) in &rules {
        destination = destination.filter_arns(arn);
    }
    events
        .start_replay()
        .replay_name(&replay)
        .event_source_arn(&archive_arn)
        .event_start_time(DateTime::from_secs(request.from.unix_timestamp()))
        .event_end_time(DateTime::from_secs(request.to.unix_timestamp()))
        .destination(destination.build()?)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "StartReplay", &archive_what, e))?;

    let replay_what = format!("the replay {replay}");
    tokio::pin!(cancel);
    let mut cancelled = false;
    let described = loop {
        let described = events
            .describe_replay()
            .replay_name(&replay)
            .send()
            .await
            .map_err(|e| failed(Api::EventBridge, "DescribeReplay", &replay_what, e))?;
        let state = described.state.clone().unwrap_or(ReplayState::Starting);
        if matches!(
            state,
            ReplayState::Completed | ReplayState::Failed | ReplayState::Cancelled
        ) {
            break described;
        }
        if let Some(last) = described.event_last_replayed_time.and_then(to_time) {
            let done = (last - request.from) / (request.to - request.from);
            progress(done.clamp(0.0, 1.0));
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut cancel, if !cancelled => {
                cancelled = true;
                events
                    .cancel_replay()
                    .replay_name(&replay)
                    .send()
                    .await
                    .map_err(|e| failed(Api::EventBridge, "CancelReplay", &replay_what, e))?;
            }
        }
    };
    let archive_events = events
        .describe_archive()
        .archive_name(&archive)
        .send()
        .await
        .map_err(|e| failed(Api::EventBridge, "DescribeArchive", &archive_what, e))?
        .event_count;
    Ok(ReplayReport {
        replay,
        archive,
        state: described
            .state
            .map_or_else(|| "UNKNOWN".to_string(), |s| s.as_str().to_string()),
        reason: described.state_reason.filter(|r| !r.is_empty()),
        from: request.from,
        to: request.to,
        rules: rules.into_iter().map(|(name, _)| name).collect(),
        last_replayed: described.event_last_replayed_time.and_then(to_time),
        seconds: started.elapsed().as_secs_f64(),
        archive_events,
    })
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
    use serde_json::json;

    use super::*;

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
