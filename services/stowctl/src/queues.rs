//! The consumers' queues and their dead-letter queues: depths, a look at the
//! dead letters without consuming them, and moving them back.
//!
//! A consumer's dead-letter queue is found through its queue's
//! `RedrivePolicy` (`deadLetterTargetArn`), as SQS itself finds it, so only
//! the consumers' queue URLs need to be configured, on AWS as locally.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use anyhow::Context;
use aws_sdk_sqs::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{MessageSystemAttributeName, QueueAttributeName as A},
};
use serde::Serialize;
use serde_json::Value;

/// A service that consumes a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Consumer {
    Intake,
    Ledger,
    Lifecycle,
}

impl Consumer {
    /// Every consumer, in display order.
    pub const ALL: [Consumer; 3] = [Consumer::Intake, Consumer::Ledger, Consumer::Lifecycle];

    /// `intake`, `ledger` or `lifecycle`.
    pub fn name(self) -> &'static str {
        match self {
            Consumer::Intake => "intake",
            Consumer::Ledger => "ledger",
            Consumer::Lifecycle => "lifecycle",
        }
    }

    /// The setting that holds the consumer's queue URL.
    pub fn setting(self) -> &'static str {
        match self {
            Consumer::Intake => "STOWAGE_INTAKE_QUEUE_URL",
            Consumer::Ledger => "STOWAGE_LEDGER_QUEUE_URL",
            Consumer::Lifecycle => "STOWAGE_LIFECYCLE_QUEUE_URL",
        }
    }
}

impl std::fmt::Display for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The consumers' queue URLs.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    urls: Vec<(Consumer, String)>,
}

impl Queues {
    /// Queue URLs given directly.
    pub fn new(urls: impl IntoIterator<Item = (Consumer, String)>) -> Self {
        Self {
            urls: urls.into_iter().collect(),
        }
    }

    /// Queue URLs from settings looked up by name (e.g. the environment).
    pub fn from_settings(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self::new(
            Consumer::ALL
                .into_iter()
                .filter_map(|c| lookup(c.setting()).map(|url| (c, url))),
        )
    }

    fn url(&self, consumer: Consumer) -> anyhow::Result<&str> {
        self.urls
            .iter()
            .find(|(c, _)| *c == consumer)
            .map(|(_, url)| url.as_str())
            .ok_or_else(|| {
                crate::settings::MissingSetting {
                    name: consumer.setting().to_string(),
                }
                .into()
            })
    }
}

/// Whether a row is a consumer's queue or its dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Queue,
    Dlq,
}

/// One queue's state.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub consumer: Consumer,
    pub role: Role,
    pub name: String,
    pub url: String,
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted.
    pub in_flight: u64,
    /// Dead-letter queues only: seconds since the oldest message of a sample
    /// of up to ten was first sent (`SentTimestamp`, which a message keeps
    /// when it is dead-lettered). `None` for an empty queue and for the
    /// consumers' own queues.
    pub oldest_age_seconds: Option<u64>,
}

/// A consumer's queue and its dead-letter queue, as SQS knows them.
#[derive(Debug, Clone)]
struct Resolved {
    consumer: Consumer,
    url: String,
    arn: String,
    dlq_url: String,
    dlq_arn: String,
}

/// The last part of an SQS ARN or URL: the queue name.
fn queue_name(arn_or_url: &str) -> &str {
    arn_or_url.rsplit([':', '/']).next().unwrap_or(arn_or_url)
}

/// Explains a failed SQS call: which call, on what, why, and what to do.
fn failed<E, R>(call: &str, what: &str, error: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    crate::errors::failed(crate::errors::Api::Sqs, call, what, error)
}

async fn resolve(sqs: &Client, queues: &Queues, consumer: Consumer) -> anyhow::Result<Resolved> {
    let url = queues.url(consumer)?.to_string();
    let what = format!("the {consumer} queue ({url})");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::QueueArn)
        .attribute_names(A::RedrivePolicy)
        .send()
        .await
        .map_err(|e| failed("GetQueueAttributes", &what, e))?;
    let get = |name: A| attributes.attributes().and_then(|a| a.get(&name)).cloned();
    let arn = get(A::QueueArn).with_context(|| format!("{what} has no QueueArn attribute"))?;
    let policy = get(A::RedrivePolicy).with_context(|| {
        format!("{what} has no RedrivePolicy, so it has no dead-letter queue (deploy infra/stowage.yaml)")
    })?;
    let dlq_arn = serde_json::from_str::<Value>(&policy)
        .ok()
        .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string))
        .with_context(|| {
            format!("{what} has a RedrivePolicy without deadLetterTargetArn: {policy}")
        })?;
    // arn:<partition>:sqs:<region>:<account>:<name>
    let parts: Vec<&str> = dlq_arn.split(':').collect();
    anyhow::ensure!(
        parts.len() == 6,
        "{what} names a dead-letter queue with an unexpected ARN: {dlq_arn}"
    );
    let dlq_what = format!("the {consumer} dead-letter queue ({dlq_arn})");
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(parts[5])
        .queue_owner_aws_account_id(parts[4])
        .send()
        .await
        .map_err(|e| failed("GetQueueUrl", &dlq_what, e))?
        .queue_url
        .with_context(|| format!("GetQueueUrl returned no URL for {dlq_what}"))?;
    Ok(Resolved {
        consumer,
        url,
        arn,
        dlq_url,
        dlq_arn,
    })
}

async fn counts(sqs: &Client, url: &str, what: &str) -> anyhow::Result<(u64, u64)> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| failed("GetQueueAttributes", what, e))?;
    let count = |name: A| -> anyhow::Result<u64> {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .with_context(|| format!("{what}: SQS did not return {name}"))?
            .parse()
            .with_context(|| format!("{what}: {name} is not a number"))
    };
    Ok((
        count(A::ApproximateNumberOfMessages)?,
        count(A::ApproximateNumberOfMessagesNotVisible)?,
    ))
}

/// Receives up to `max` messages (at most 10), hidden for `hide` seconds
/// (0: visible again at once). Each receive counts towards the message's
/// `ApproximateReceiveCount`.
async fn receive(
    sqs: &Client,
    url: &str,
    what: &str,
    max: i32,
    hide: i32,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    Ok(sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10))
        .visibility_timeout(hide)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| failed("ReceiveMessage", what, e))?
        .messages
        .unwrap_or_default())
}

/// The receipt handle of each message a peek received, the latest only: a
/// message received again (its hiding ran out during a long scan) gets a new
/// handle, and only that one can change its visibility.
#[derive(Debug, Default)]
struct Receipts {
    /// The latest receipt handle of each message, in the order first received.
    handles: Vec<String>,
    /// Message id → its place in `handles`.
    index: HashMap<String, usize>,
}

impl Receipts {
    fn record(&mut self, message_id: &str, handle: &str) {
        match self.index.get(message_id) {
            Some(&at) => self.handles[at] = handle.to_string(),
            None => {
                self.index
                    .insert(message_id.to_string(), self.handles.len());
                self.handles.push(handle.to_string());
            }
        }
    }

    fn handles(&self) -> impl Iterator<Item = &str> {
        self.handles.iter().map(String::as_str)
    }
}

/// Whether a `ChangeMessageVisibilityBatch` entry failed because its message
/// is no longer hidden by this receipt: visible again, received by someone
/// else, or deleted. Such a message needs no releasing. SQS names this
/// `MessageNotInflight` or `ReceiptHandleIsInvalid` (with or without the
/// `AWS.SimpleQueueService.` prefix); for a handle replaced by a later
/// receive it answers `InvalidParameterValue` with "not available for
/// visibility timeout change".
fn already_released(code: &str, message: Option<&str>) -> bool {
    let code = code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code);
    match code {
        "MessageNotInflight" | "ReceiptHandleIsInvalid" => true,
        "InvalidParameterValue" | "InvalidParameterValueException" => {
            message.is_some_and(|m| m.contains("not available for visibility timeout change"))
        }
        _ => false,
    }
}

/// How making a peek's messages visible again went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Released {
    /// Messages SQS refused to make visible; they reappear when their
    /// hiding ends.
    refused: usize,
    /// Why, for the first refusals (`code: message`).
    reasons: Vec<String>,
}

impl Released {
    /// Counts the failed entries of one batch, leaving out those whose
    /// messages were not hidden any more.
    fn count(&mut self, failed: &[aws_sdk_sqs::types::BatchResultErrorEntry]) {
        for entry in failed {
            if already_released(entry.code(), entry.message()) {
                continue;
            }
            self.refused += 1;
            if self.reasons.len() < 3 {
                self.reasons.push(match entry.message() {
                    Some(message) => format!("{}: {message}", entry.code()),
                    None => entry.code().to_string(),
                });
            }
        }
    }
}

/// Makes received messages visible again at once. A batch call that fails
/// as a whole counts all its messages as refused.
async fn release<'a>(
    sqs: &Client,
    url: &str,
    what: &str,
    handles: impl Iterator<Item = &'a str>,
) -> Released {
    let handles: Vec<&str> = handles.collect();
    let mut released = Released::default();
    for chunk in handles.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        match sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(outcome) => released.count(outcome.failed()),
            Err(error) => {
                released.refused += chunk.len();
                if released.reasons.len() < 3 {
                    released.reasons.push(format!(
                        "{:#}",
                        failed("ChangeMessageVisibilityBatch", what, error)
                    ));
                }
            }
        }
    }
    released
}

fn system_attribute(
    message: &aws_sdk_sqs::types::Message,
    name: MessageSystemAttributeName,
) -> Option<u64> {
    message.attributes()?.get(&name)?.parse().ok()
}

fn now_millis() -> u64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64
}

/// The state of every consumer's queue and dead-letter queue.
pub async fn status(sqs: &Client, queues: &Queues) -> anyhow::Result<Vec<QueueStatus>> {
    let mut rows = Vec::new();
    for consumer in Consumer::ALL {
        let resolved = resolve(sqs, queues, consumer).await?;
        let what = format!("the {consumer} queue ({})", resolved.url);
        let (visible, in_flight) = counts(sqs, &resolved.url, &what).await?;
        rows.push(QueueStatus {
            consumer,
            role: Role::Queue,
            name: queue_name(&resolved.arn).to_string(),
            url: resolved.url.clone(),
            visible,
            in_flight,
            oldest_age_seconds: None,
        });
        let what = format!("the {consumer} dead-letter queue ({})", resolved.dlq_url);
        let (visible, in_flight) = counts(sqs, &resolved.dlq_url, &what).await?;
        let oldest_age_seconds = if visible > 0 {
            let now = now_millis();
            receive(sqs, &resolved.dlq_url, &what, 10, 0)
                .await?
                .iter()
                .filter_map(|m| system_attribute(m, MessageSystemAttributeName::SentTimestamp))
                .min()
                .map(|sent| now.saturating_sub(sent) / 1000)
        } else {
            None
        };
        rows.push(QueueStatus {
            consumer,
            role: Role::Dlq,
            name: queue_name(&resolved.dlq_arn).to_string(),
            url: resolved.dlq_url,
            visible,
            in_flight,
            oldest_age_seconds,
        });
    }
    Ok(rows)
}

/// `90` → `1m 30s`.
fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The table `stowctl queues` prints.
pub fn status_table(rows: &[QueueStatus]) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header(["consumer", "queue", "visible", "in flight", "oldest"]);
    for row in rows {
        table.add_row([
            match row.role {
                Role::Queue => row.consumer.name().to_string(),
                Role::Dlq => format!("{} DLQ", row.consumer),
            },
            row.name.clone(),
            row.visible.to_string(),
            row.in_flight.to_string(),
            row.oldest_age_seconds.map_or("-".to_string(), age),
        ]);
    }
    table.to_string()
}

/// One dead-lettered message, decoded as far as it goes.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// `ApproximateReceiveCount`, including the receives of peeks.
    pub receive_count: Option<u64>,
    /// When the message was first sent (RFC 3339).
    pub sent_at: Option<String>,
    /// The EventBridge `detail-type`, e.g. `Object Created`, `UsageChanged.v1`.
    pub detail_type: Option<String>,
    /// The event's major version (`1` of `UsageChanged.v1`), or S3's detail
    /// `version`.
    pub version: Option<String>,
    pub source: Option<String>,
    /// `user_id` of a Stowage event, or the owner of an S3 key
    /// (`users/<user>/…`).
    pub user: Option<String>,
    pub key: Option<String>,
    /// Why the body is not an EventBridge event, when it is not.
    pub undecodable: Option<String>,
    pub body: String,
}

impl DeadLetter {
    fn decode(message_id: String, body: String) -> Self {
        let mut letter = DeadLetter {
            message_id,
            receive_count: None,
            sent_at: None,
            detail_type: None,
            version: None,
            source: None,
            user: None,
            key: None,
            undecodable: None,
            body,
        };
        let envelope = match stowage_events::RawEnvelope::parse(&letter.body) {
            Ok(envelope) => envelope,
            Err(error) => {
                letter.undecodable = Some(error.to_string());
                return letter;
            }
        };
        let detail = &envelope.detail;
        letter.version = envelope
            .detail_type
            .rsplit_once(".v")
            .filter(|(_, major)| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, major)| major.to_string())
            .or_else(|| detail["version"].as_str().map(str::to_string));
        letter.key = detail["key"]
            .as_str()
            .or_else(|| detail["object"]["key"].as_str())
            .map(str::to_string);
        letter.user = detail["user_id"].as_str().map(str::to_string).or_else(|| {
            letter
                .key
                .as_deref()?
                .strip_prefix("users/")?
                .split_once('/')
                .map(|(user, _)| user.to_string())
        });
        letter.detail_type = Some(envelope.detail_type);
        letter.source = Some(envelope.source);
        letter
    }
}

/// What `stowctl dlq peek` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Peek {
    pub consumer: Consumer,
    pub dlq_url: String,
    /// `ApproximateNumberOfMessages` of the dead-letter queue.
    pub visible: u64,
    pub messages: Vec<DeadLetter>,
    /// Messages SQS refused to make visible again after the peek; they
    /// reappear when their hiding ends, `hidden_seconds` after they were
    /// received.
    pub not_released: usize,
    /// How long the peek hid each batch it received.
    pub hidden_seconds: i32,
    /// Why SQS refused, for the first few refusals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub release_errors: Vec<String>,
}

impl Peek {
    /// A warning for stderr when messages stay hidden after the peek.
    pub fn release_warning(&self) -> Option<String> {
        (self.not_released > 0).then(|| {
            format!(
                "stowctl: {} message(s) of the {} dead-letter queue could not be made visible again; they reappear within {} s of the peek ({})",
                self.not_released,
                self.consumer,
                self.hidden_seconds,
                self.release_errors.join("; ")
            )
        })
    }
}

/// How long a peek of up to `limit` messages hides the messages it has seen,
/// so that its next receive returns others: 30 s, and 2 s more for every
/// batch of ten it asks for, so that a long scan does not outlast it (SQS's
/// longest is 12 hours). They are made visible again as soon as the peek is
/// done.
pub fn peek_hide_seconds(limit: usize) -> i32 {
    let batches = limit.div_ceil(10);
    i32::try_from(30 + 2 * batches)
        .unwrap_or(i32::MAX)
        .min(43_200)
}

/// Up to `limit` messages of a consumer's dead-letter queue, left in place.
///
/// Messages are received in batches of up to ten, each batch hidden for
/// [`peek_hide_seconds`] so the next receive returns others (with visibility
/// timeout 0, LocalStack keeps returning the same ten), and all of them are
/// made visible again (`ChangeMessageVisibility` to 0) before this returns.
/// Each peek adds one to the messages' receive counts.
pub async fn peek(
    sqs: &Client,
    queues: &Queues,
    consumer: Consumer,
    limit: usize,
) -> anyhow::Result<Peek> {
    peek_hiding(sqs, queues, consumer, limit, peek_hide_seconds(limit)).await
}

/// [`peek`], hiding the messages it has seen for `hide_seconds`. A scan that
/// takes longer meets them again; it ends at the first batch that brings no
/// message it has not seen. Messages SQS refuses to make visible again are
/// counted in [`Peek::not_released`]; that is no error, since they reappear
/// by themselves.
pub async fn peek_hiding(
    sqs: &Client,
    queues: &Queues,
    consumer: Consumer,
    limit: usize,
    hide_seconds: i32,
) -> anyhow::Result<Peek> {
    let resolved = resolve(sqs, queues, consumer).await?;
    let what = format!("the {consumer} dead-letter queue ({})", resolved.dlq_url);
    let (visible, _) = counts(sqs, &resolved.dlq_url, &what).await?;
    let mut seen = HashSet::new();
    let mut messages = Vec::new();
    let mut receipts = Receipts::default();
    let mut outcome = Ok(());
    while messages.len() < limit {
        let wanted = (limit - messages.len()).min(10) as i32;
        let batch = match receive(sqs, &resolved.dlq_url, &what, wanted, hide_seconds).await {
            Ok(batch) => batch,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        let known = messages.len();
        if batch.is_empty() {
            break;
        }
        for message in batch {
            let id = message.message_id().unwrap_or_default().to_string();
            if let Some(handle) = message.receipt_handle() {
                receipts.record(&id, handle);
            }
            if messages.len() == limit || !seen.insert(id.clone()) {
                continue;
            }
            let mut letter = DeadLetter::decode(id, message.body().unwrap_or_default().into());
            letter.receive_count = system_attribute(
                &message,
                MessageSystemAttributeName::ApproximateReceiveCount,
            );
            letter.sent_at = system_attribute(&message, MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .ok()?
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            messages.push(letter);
        }
        if messages.len() == known {
            // Only messages already seen: the queue has come round again.
            break;
        }
    }
    // Release what was seen even when a receive failed.
    let released = release(sqs, &resolved.dlq_url, &what, receipts.handles()).await;
    outcome?;
    Ok(Peek {
        consumer,
        dlq_url: resolved.dlq_url,
        visible,
        messages,
        not_released: released.refused,
        hidden_seconds: hide_seconds,
        release_errors: released.reasons,
    })
}

/// The table `stowctl dlq peek` prints.
pub fn peek_table(peek: &Peek) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "message id",
        "receives",
        "detail-type",
        "version",
        "source",
        "user",
        "key",
    ]);
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    for m in &peek.messages {
        let detail_type = match &m.undecodable {
            Some(_) => format!("(undecodable) {}", excerpt(&m.body)),
            None => or_dash(&m.detail_type),
        };
        table.add_row([
            m.message_id.clone(),
            m.receive_count.map_or("-".to_string(), |c| c.to_string()),
            detail_type,
            or_dash(&m.version),
            or_dash(&m.source),
            or_dash(&m.user),
            or_dash(&m.key),
        ]);
    }
    format!(
        "{table}\n{} of about {} message(s) in the {} dead-letter queue.",
        peek.messages.len(),
        peek.visible,
        peek.consumer
    )
}

/// The first 40 characters of a body, on one line.
fn excerpt(body: &str) -> String {
    let line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(40)
        .collect();
    if body.chars().count() > 40 {
        format!("{line}…")
    } else {
        line
    }
}

/// The outcome of `stowctl dlq redrive`.
#[derive(Debug, Clone, Serialize)]
pub struct Redrive {
    pub consumer: Consumer,
    /// The dead-letter queue's ARN.
    pub source_arn: String,
    /// The consumer's queue's ARN.
    pub destination_arn: String,
    /// The move task's handle, as `StartMessageMoveTask` returned it.
    pub task_handle: String,
    /// The move task's final status: `COMPLETED`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// Messages the task expected to move when it started.
    pub to_move: Option<i64>,
    pub moved: i64,
    pub failure_reason: Option<String>,
    /// Whether stowctl cancelled the task (on an interrupt).
    pub cancelled_by_stowctl: bool,
    /// `ApproximateNumberOfMessages` of the dead-letter queue once the task
    /// ended (dead letters that arrived meanwhile, or were left behind);
    /// `None` when it could not be read.
    pub left_in_dlq: Option<u64>,
}

impl Redrive {
    /// Whether every message the task found was moved.
    pub fn completed(&self) -> bool {
        self.status == "COMPLETED"
    }
}

/// How far a running move task got.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub moved: i64,
    pub to_move: Option<i64>,
}

/// Moves a consumer's dead letters back to its queue with an SQS message move
/// task (`StartMessageMoveTask`, at most `rate` messages a second when set),
/// polls `ListMessageMoveTasks` every `poll` until the task ends, and reports
/// its progress on the way.
///
/// When `cancel` resolves before the task is started, nothing is started;
/// after, the task is cancelled (`CancelMessageMoveTask`) and followed until
/// it stops. When the task cannot be followed to its end, the error says that
/// it may still be running and how to find and cancel it.
pub async fn redrive(
    sqs: &Client,
    queues: &Queues,
    consumer: Consumer,
    rate: Option<i32>,
    poll: Duration,
    mut progress: impl FnMut(Progress),
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Redrive> {
    tokio::pin!(cancel);
    let interrupted =
        || anyhow::anyhow!("interrupted before the move task was started: nothing was moved");
    let resolved = tokio::select! {
        biased;
        () = &mut cancel => return Err(interrupted()),
        resolved = resolve(sqs, queues, consumer) => resolved?,
    };
    let what = format!("the {consumer} dead-letter queue ({})", resolved.dlq_arn);
    let latest = || async {
        sqs.list_message_move_tasks()
            .source_arn(&resolved.dlq_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| failed("ListMessageMoveTasks", &what, e))
            .map(|r| r.results.unwrap_or_default().into_iter().next())
    };
    // A finished task stays listed; remember the last one to tell ours apart.
    let previous = tokio::select! {
        biased;
        () = &mut cancel => return Err(interrupted()),
        previous = latest() => previous?.map(|t| t.started_timestamp),
    };
    let handle = sqs
        .start_message_move_task()
        .source_arn(&resolved.dlq_arn)
        .destination_arn(&resolved.arn)
        .set_max_number_of_messages_per_second(rate)
        .send()
        .await
        .map_err(|e| failed("StartMessageMoveTask", &what, e))?
        .task_handle
        .unwrap_or_default();
    let still_running = |error: anyhow::Error| {
        error.context(format!(
            "the move task {handle} from {} to {} was started and may still be running: \
             follow it with `aws sqs list-message-move-tasks --source-arn {}`, cancel it with \
             `aws sqs cancel-message-move-task --task-handle {handle}`",
            queue_name(&resolved.dlq_arn),
            queue_name(&resolved.arn),
            resolved.dlq_arn
        ))
    };
    let mut cancelled = false;
    let mut refused: Option<anyhow::Error> = None;
    loop {
        let task = latest().await.map_err(still_running)?;
        if let Some(task) = task {
            let status = task.status.clone().unwrap_or_default();
            let ours = task.task_handle.as_deref() == Some(handle.as_str())
                || (task.task_handle.is_none() && Some(task.started_timestamp) != previous);
            if ours {
                progress(Progress {
                    moved: task.approximate_number_of_messages_moved,
                    to_move: task.approximate_number_of_messages_to_move,
                });
                if matches!(status.as_str(), "COMPLETED" | "CANCELLED" | "FAILED") {
                    let dlq_what =
                        format!("the {consumer} dead-letter queue ({})", resolved.dlq_url);
                    let left_in_dlq = counts(sqs, &resolved.dlq_url, &dlq_what)
                        .await
                        .ok()
                        .map(|(visible, _)| visible);
                    return Ok(Redrive {
                        consumer: resolved.consumer,
                        source_arn: resolved.dlq_arn.clone(),
                        destination_arn: resolved.arn.clone(),
                        task_handle: handle,
                        status,
                        to_move: task.approximate_number_of_messages_to_move,
                        moved: task.approximate_number_of_messages_moved,
                        failure_reason: task.failure_reason,
                        cancelled_by_stowctl: cancelled && refused.is_none(),
                        left_in_dlq,
                    });
                }
            }
        }
        if let Some(error) = refused.take() {
            // Cancelling failed and the task has not ended.
            return Err(still_running(error));
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut cancel, if !cancelled => {
                cancelled = true;
                if let Err(error) = sqs.cancel_message_move_task().task_handle(&handle).send().await {
                    refused = Some(failed("CancelMessageMoveTask", &what, error));
                }
            }
        }
    }
}

/// What `stowctl dlq redrive` prints.
pub fn redrive_summary(redrive: &Redrive) -> String {
    let queue = queue_name(&redrive.destination_arn);
    let mut summary = match redrive.status.as_str() {
        "COMPLETED" => format!(
            "Moved {} message(s) from the {} dead-letter queue back to {queue}.",
            redrive.moved, redrive.consumer
        ),
        "CANCELLED" if redrive.cancelled_by_stowctl => format!(
            "Interrupted: cancelled the move task after it moved {} message(s) back to {queue}.",
            redrive.moved
        ),
        status => format!(
            "The move task ended {status} after moving {} message(s) back to {queue}{}.",
            redrive.moved,
            redrive
                .failure_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    };
    if let Some(left) = redrive.left_in_dlq {
        summary.push_str(&format!(
            " About {left} message(s) are left in the dead-letter queue."
        ));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_stowage_and_s3_events_and_keeps_other_bodies_as_they_are() {
        let usage = DeadLetter::decode(
            "1".into(),
            r#"{"version":"0","id":"x","detail-type":"UsageChanged.v9","source":"stowage.ledger","time":"2026-11-23T10:00:00Z","detail":{"user_id":"ann","key":"users/ann/a.txt"}}"#.into(),
        );
        assert_eq!(usage.detail_type.as_deref(), Some("UsageChanged.v9"));
        assert_eq!(usage.version.as_deref(), Some("9"));
        assert_eq!(usage.source.as_deref(), Some("stowage.ledger"));
        assert_eq!(usage.user.as_deref(), Some("ann"));
        assert_eq!(usage.key.as_deref(), Some("users/ann/a.txt"));
        assert!(usage.undecodable.is_none());

        let s3 = DeadLetter::decode(
            "2".into(),
            r#"{"version":"0","id":"y","detail-type":"Object Created","source":"aws.s3","time":"2026-11-23T10:00:00Z","detail":{"version":"0","object":{"key":"users/bob/b.bin","size":3}}}"#.into(),
        );
        assert_eq!(s3.version.as_deref(), Some("0"));
        assert_eq!(s3.user.as_deref(), Some("bob"));
        assert_eq!(s3.key.as_deref(), Some("users/bob/b.bin"));

        let junk = DeadLetter::decode("3".into(), "this is not JSON".into());
        assert!(junk.undecodable.is_some());
        assert_eq!(junk.detail_type, None);
        assert_eq!(junk.body, "this is not JSON");
    }

    #[test]
    fn a_message_received_again_is_released_with_its_latest_handle_only() {
        let mut receipts = Receipts::default();
        receipts.record("m1", "h1-first");
        receipts.record("m2", "h2");
        receipts.record("m1", "h1-second");
        receipts.record("m3", "h3");
        receipts.record("m1", "h1-third");
        assert_eq!(
            receipts.handles().collect::<Vec<_>>(),
            ["h1-third", "h2", "h3"]
        );
    }

    #[test]
    fn messages_no_longer_hidden_count_as_released_and_other_refusals_do_not() {
        let entry = |code: &str, message: Option<&str>| {
            aws_sdk_sqs::types::BatchResultErrorEntry::builder()
                .id("0")
                .sender_fault(true)
                .code(code)
                .set_message(message.map(str::to_string))
                .build()
                .expect("an entry")
        };
        let mut released = Released::default();
        released.count(&[
            entry("AWS.SimpleQueueService.MessageNotInflight", None),
            entry("MessageNotInflight", Some("Message not in flight")),
            entry("ReceiptHandleIsInvalid", Some("The receipt handle is invalid")),
            entry(
                "InvalidParameterValue",
                Some("Value h for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."),
            ),
        ]);
        assert_eq!(released, Released::default());

        released.count(&[
            entry("AccessDenied", Some("not allowed")),
            entry(
                "InvalidParameterValue",
                Some("VisibilityTimeout is out of range"),
            ),
            entry("InternalError", None),
            entry("ServiceUnavailable", None),
        ]);
        assert_eq!(released.refused, 4);
        assert_eq!(
            released.reasons,
            [
                "AccessDenied: not allowed",
                "InvalidParameterValue: VisibilityTimeout is out of range",
                "InternalError"
            ]
        );
    }

    #[test]
    fn a_longer_peek_hides_what_it_saw_for_longer() {
        assert_eq!(peek_hide_seconds(1), 32);
        assert_eq!(peek_hide_seconds(10), 32);
        assert_eq!(peek_hide_seconds(11), 34);
        assert_eq!(peek_hide_seconds(1000), 230);
        assert_eq!(peek_hide_seconds(usize::from(u16::MAX)), 13_138);
        assert_eq!(peek_hide_seconds(usize::MAX), 43_200);
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(90), "1m 30s");
        assert_eq!(age(7260), "2h 01m");
        assert_eq!(age(90_000), "1d 01h");
    }

    #[test]
    fn queue_names_come_from_arns_and_urls() {
        assert_eq!(
            queue_name("arn:aws:sqs:us-east-1:1:s-ledger-dlq"),
            "s-ledger-dlq"
        );
        assert_eq!(
            queue_name("https://sqs.us-east-1.amazonaws.com/1/s-ledger"),
            "s-ledger"
        );
    }
}
