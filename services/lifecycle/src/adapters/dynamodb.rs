//! The projection in the lifecycle table (`pk`, `sk`), one row per key:
//! `USER#<id>` / `OBJ#<key>`, with the sequencer it last applied and `ver`,
//! checked and incremented by every write. Deleted objects keep a tombstone
//! that expires by TTL (`expires_at_epoch`). One more row, `POLICY` /
//! `INDEXED_DAYS`, holds the days the due dates follow.
//!
//! The due index is the sparse global secondary index `due`: only rows that
//! a sweep should look at carry its keys, `due_shard` (`DUE#0` to `DUE#7`,
//! from a hash of the key, so that index writes spread over partitions) and
//! `due_at` (unix seconds). A sweep queries each shard for `due_at <= now`,
//! so it reads the due objects and nothing else.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, TransactWriteItem, Update},
};
use futures::{StreamExt, stream::BoxStream};
use stowage_events::{TraceContext, sequencer::Sequencer};
use stowage_shared::dynamo::{
    Cancelled, Item, classify, get_num, get_str, get_str_list, item_failure, n, query_all,
    query_partition, req_num, req_str, s, str_list, transact_groups,
};

use crate::{
    domain::{
        policy::IndexedDays,
        projection::{Encryption, ObjectRecord, Restore, Verdict},
    },
    ports::{DueIndex, DueObject, Projection, Settlement, StoreError, Versioned},
};

/// The due index's name.
pub const DUE_INDEX: &str = "due";
/// Partitions of the due index; a sweep makes one query (or more, past
/// 1 MB of results) per shard.
pub const DUE_SHARDS: u32 = 8;
/// Items in one `TransactWriteItems` request.
const TRANSACTION_ITEMS: usize = 100;

/// The row holding the days the due index's dates follow.
const POLICY_PK: &str = "POLICY";
const INDEXED_DAYS_SK: &str = "INDEXED_DAYS";

/// Rows in one page of a walk over the whole due index: a page's writes
/// follow its read closely, and progress shows.
const INDEX_PAGE_ROWS: i32 = 250;

/// Transactions sent for one chunk of settlements before those still
/// cancelled by other transactions are written one by one.
const SETTLE_ATTEMPTS: usize = 3;
/// Days a tombstone is kept: longer than the queue's retention.
const TOMBSTONE_DAYS: i64 = 45;

/// [`Projection`] and [`DueIndex`] on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoProjection {
    client: Client,
    table: String,
}

fn pk(user: &str) -> AttributeValue {
    s(format!("USER#{user}"))
}

fn sk(key: &str) -> AttributeValue {
    s(format!("OBJ#{key}"))
}

fn key_of(user: &str, key: &str) -> Item {
    HashMap::from([("pk".to_string(), pk(user)), ("sk".to_string(), sk(key))])
}

/// The due-index shard of `key`: FNV-1a, stable across builds and versions.
pub fn shard(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("DUE#{}", hash % u64::from(DUE_SHARDS))
}

/// The item of `key`'s row, as [`Projection::put`] writes it; public so
/// that benchmarks and tests can load many rows in batches.
pub fn record_item(
    user: &str,
    key: &str,
    record: &ObjectRecord,
    due_at: Option<i64>,
    version: u64,
) -> Item {
    let mut item = key_of(user, key);
    item.extend([
        ("live".to_string(), AttributeValue::Bool(record.live)),
        ("size".to_string(), n(record.size)),
        ("storage_class".to_string(), s(&record.storage_class)),
        ("created_at".to_string(), n(record.created_at)),
        ("seq".to_string(), s(record.sequencer.as_str())),
        ("applied".to_string(), str_list(&record.applied)),
        ("ver".to_string(), n(version)),
    ]);
    let mut put = |name: &str, value: Option<AttributeValue>| {
        if let Some(value) = value {
            item.insert(name.to_string(), value);
        }
    };
    put("etag", record.etag.as_deref().map(s));
    put("last_access", record.last_access.map(n));
    match &record.encryption {
        Encryption::Unknown => {}
        Encryption::S3Managed => put("sse", Some(s("AES256"))),
        Encryption::Kms { algorithm, key_id } => {
            put("sse", Some(s(algorithm)));
            put("kms_key_id", key_id.as_deref().map(s));
        }
        Encryption::CustomerKey => put("sse", Some(s("SSE-C"))),
    }
    match &record.restore {
        Restore::None => {}
        Restore::Requested { at, days, .. } => {
            put("restore", Some(s("REQUESTED")));
            put("restore_at", Some(n(at)));
            put("restore_days", Some(n(days)));
        }
        Restore::Restored {
            until,
            requested_at,
            ..
        } => {
            put("restore", Some(s("RESTORED")));
            put("restore_until", until.map(n));
            put("restore_at", requested_at.map(n));
        }
    }
    if let Some(trace) = record.restore.trace() {
        put("restore_traceparent", trace.traceparent.as_deref().map(s));
        put("restore_tracestate", trace.tracestate.as_deref().map(s));
    }
    if let Some(v) = &record.verdict {
        put("verdict", Some(s(&v.outcome)));
        put("verdict_reason", Some(s(&v.reason)));
        put("verdict_at", Some(n(v.at)));
        put("recheck_at", v.recheck_at.map(n));
    }
    if let Some(due) = due_at {
        put("due_shard", Some(s(shard(key))));
        put("due_at", Some(n(due)));
    }
    if !record.live {
        let expires = time::OffsetDateTime::now_utc().unix_timestamp() + TOMBSTONE_DAYS * 86_400;
        put("expires_at_epoch", Some(n(expires)));
    }
    item
}

fn record_from_item(item: &Item) -> Result<Versioned, StoreError> {
    let live = match item.get("live") {
        Some(AttributeValue::Bool(b)) => *b,
        _ => return Err(StoreError::Other(anyhow::anyhow!("row without 'live'"))),
    };
    let text = |name| get_str(item, name).map_err(StoreError::from);
    let num = |name| get_num::<i64>(item, name).map_err(StoreError::from);
    let encryption = match text("sse")? {
        None => Encryption::Unknown,
        Some("AES256") => Encryption::S3Managed,
        Some("SSE-C") => Encryption::CustomerKey,
        Some(algorithm) => Encryption::Kms {
            algorithm: algorithm.to_string(),
            key_id: text("kms_key_id")?.map(str::to_string),
        },
    };
    let trace = || -> Result<TraceContext, StoreError> {
        Ok(TraceContext {
            traceparent: text("restore_traceparent")?.map(str::to_string),
            tracestate: text("restore_tracestate")?.map(str::to_string),
        })
    };
    let restore = match text("restore")? {
        Some("REQUESTED") => Restore::Requested {
            at: num("restore_at")?.unwrap_or(0),
            days: get_num(item, "restore_days")?.unwrap_or(0),
            trace: trace()?,
        },
        Some("RESTORED") => Restore::Restored {
            until: num("restore_until")?,
            requested_at: num("restore_at")?,
            trace: trace()?,
        },
        _ => Restore::None,
    };
    let verdict = match text("verdict")? {
        Some(outcome) => Some(Verdict {
            outcome: outcome.to_string(),
            reason: text("verdict_reason")?.unwrap_or_default().to_string(),
            at: num("verdict_at")?.unwrap_or(0),
            recheck_at: num("recheck_at")?,
        }),
        None => None,
    };
    let record = ObjectRecord {
        live,
        size: req_num(item, "size")?,
        storage_class: req_str(item, "storage_class")?.to_string(),
        etag: text("etag")?.map(str::to_string),
        encryption,
        created_at: req_num(item, "created_at")?,
        last_access: num("last_access")?,
        restore,
        sequencer: Sequencer::parse(req_str(item, "seq")?)
            .map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?,
        applied: get_str_list(item, "applied")?,
        verdict,
    };
    Ok(Versioned {
        record,
        version: req_num(item, "ver")?,
    })
}

/// A row the due index returned.
fn due_object(item: &Item) -> Result<DueObject, StoreError> {
    let (user, key) = names(item)?;
    Ok(DueObject {
        user,
        key,
        due_at: req_num(item, "due_at")?,
        row: record_from_item(item)?,
    })
}

/// The user and key a row's primary key names.
fn names(item: &Item) -> Result<(String, String), StoreError> {
    let user = req_str(item, "pk")?;
    let key = req_str(item, "sk")?;
    match (user.strip_prefix("USER#"), key.strip_prefix("OBJ#")) {
        (Some(user), Some(key)) => Ok((user.to_string(), key.to_string())),
        _ => Err(StoreError::Other(anyhow::anyhow!(
            "row {user}/{key} is not an object row"
        ))),
    }
}

fn verdict_values(update: &mut Vec<&'static str>, values: &mut Item, verdict: &Verdict) {
    update.push("verdict = :vo, verdict_reason = :vr, verdict_at = :va");
    values.insert(":vo".into(), s(&verdict.outcome));
    values.insert(":vr".into(), s(&verdict.reason));
    values.insert(":va".into(), n(verdict.at));
}

/// A settlement as an `Update` of its row.
fn update_of(table: &str, settlement: &Settlement) -> Result<Update, StoreError> {
    let mut set = vec!["ver = ver + :one"];
    let mut remove = Vec::new();
    let mut values: Item = HashMap::from([(":one".to_string(), n(1))]);
    let (user, key, condition) = match settlement {
        Settlement::Tiered {
            user,
            key,
            version,
            from_etag,
            storage_class,
            etag,
            verdict,
        } => {
            values.insert(":v".into(), n(version));
            set.push("storage_class = :c, etag = :e");
            values.insert(":c".into(), s(storage_class));
            values.insert(":e".into(), s(etag));
            values.insert(":from".into(), s(from_etag));
            values.insert(":live".into(), AttributeValue::Bool(true));
            verdict_values(&mut set, &mut values, verdict);
            remove.extend(["due_shard", "due_at", "recheck_at"]);
            // As the sweep left the row, or as the copy's own `Object
            // Created` left it when it was applied first.
            (
                user,
                key,
                "(ver = :v AND live = :live AND etag = :from) \
                 OR (live = :live AND etag = :e AND storage_class = :c)",
            )
        }
        Settlement::Kept {
            user,
            key,
            version,
            due_at,
            verdict,
        } => {
            values.insert(":v".into(), n(version));
            if let Some(verdict) = verdict {
                verdict_values(&mut set, &mut values, verdict);
                match verdict.recheck_at {
                    Some(at) => {
                        set.push("recheck_at = :r");
                        values.insert(":r".into(), n(at));
                    }
                    None => remove.push("recheck_at"),
                }
            }
            match due_at {
                Some(due) => {
                    set.push("due_shard = :s, due_at = :d");
                    values.insert(":s".into(), s(shard(key)));
                    values.insert(":d".into(), n(due));
                }
                None => remove.extend(["due_shard", "due_at"]),
            }
            (user, key, "ver = :v")
        }
    };
    let mut expression = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    Update::builder()
        .table_name(table)
        .set_key(Some(key_of(user, key)))
        .update_expression(expression)
        .condition_expression(condition)
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(|e| StoreError::Other(e.into()))
}

/// `due`'s row written as it was read, at the next version and due at
/// `due_at`, if it is still at the version read: a sweep's claim.
fn claim_of(table: &str, due: &DueObject, due_at: i64) -> Result<TransactWriteItem, StoreError> {
    let item = record_item(
        &due.user,
        &due.key,
        &due.row.record,
        Some(due_at),
        due.row.version + 1,
    );
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("ver = :v")
        .expression_attribute_values(":v", n(due.row.version))
        .build()
        .map_err(|e| StoreError::Other(e.into()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoProjection {
    /// Puts `item` only if the stored row's `ver` is still `before`
    /// (`None`: no row yet).
    async fn put_versioned(&self, item: Item, before: Option<u64>) -> Result<(), StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = match before {
            Some(v) => request
                .condition_expression("ver = :v")
                .expression_attribute_values(":v", n(v)),
            None => request.condition_expression("attribute_not_exists(pk)"),
        };
        request
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("PutItem", e))
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn due_in_shard(&self, shard: String, until: i64) -> Result<Vec<DueObject>, StoreError> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("due_shard = :s AND due_at <= :t")
                .expression_attribute_values(":s", s(&shard))
                .expression_attribute_values(":t", n(until)),
        )
        .await?;
        items.iter().map(due_object).collect()
    }

    async fn update_one(&self, settlement: &Settlement) -> Result<(), StoreError> {
        let update = update_of(&self.table, settlement)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .condition_expression(update.condition_expression.unwrap_or_default())
            .set_expression_attribute_values(update.expression_attribute_values)
            .send()
            .await;
        match result.map_err(|e| classify("UpdateItem", e)) {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Projection for DynamoProjection {
    async fn get(&self, user: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(user, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        output.item.as_ref().map(record_from_item).transpose()
    }

    async fn put(
        &self,
        user: &str,
        key: &str,
        record: &ObjectRecord,
        due_at: Option<i64>,
        before: Option<u64>,
    ) -> Result<(), StoreError> {
        let version = before.map_or(1, |v| v + 1);
        self.put_versioned(record_item(user, key, record, due_at, version), before)
            .await
    }

    /// Claims up to 100 rows to a transaction, and one row alone with a
    /// conditional `PutItem` (half the write capacity of a transaction). A
    /// row that changed, or that another transaction is writing, cancels
    /// the transaction: it is answered [`StoreError::Conflict`] and the
    /// others are sent again without it, so each round settles at least
    /// one row.
    async fn claim(&self, due: &[&DueObject], due_at: i64) -> Vec<Result<(), StoreError>> {
        if due.len() == 1 {
            return crate::ports::claim_each(self, due, due_at).await;
        }
        let mut claimed = Vec::with_capacity(due.len());
        for chunk in due.chunks(TRANSACTION_ITEMS) {
            let groups = chunk
                .iter()
                .enumerate()
                .map(|(i, row)| Ok((i, vec![claim_of(&self.table, row, due_at)?])))
                .collect::<Result<Vec<_>, StoreError>>();
            let mut answers = match groups {
                Ok(groups) => {
                    let attempts = groups.len();
                    transact_groups(&self.client, groups, attempts, |reason| match reason {
                        None => Cancelled::Retry,
                        Some(code) => Cancelled::Done(Err(item_failure(code))),
                    })
                    .await
                }
                Err(error) => (0..chunk.len()).map(|i| (i, Err(error.again()))).collect(),
            };
            answers.sort_by_key(|(i, _)| *i);
            claimed.extend(answers.into_iter().map(|(_, answer)| answer));
        }
        claimed
    }

    async fn indexed_days(&self) -> Result<Option<(IndexedDays, u64)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(POLICY_PK))
            .key("sk", s(INDEXED_DAYS_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let mut users = std::collections::BTreeMap::new();
        if let Some(AttributeValue::M(map)) = item.get("user_days") {
            for user in map.keys() {
                users.insert(user.clone(), req_num(map, user)?);
            }
        }
        let days = IndexedDays {
            default: req_num(&item, "default_days")?,
            users,
        };
        Ok(Some((days, req_num(&item, "ver")?)))
    }

    async fn set_indexed_days(
        &self,
        days: &IndexedDays,
        before: Option<u64>,
    ) -> Result<(), StoreError> {
        let users = days
            .users
            .iter()
            .map(|(user, days)| (user.clone(), n(*days)))
            .collect();
        let item = HashMap::from([
            ("pk".to_string(), s(POLICY_PK)),
            ("sk".to_string(), s(INDEXED_DAYS_SK)),
            ("default_days".to_string(), n(days.default)),
            ("user_days".to_string(), AttributeValue::M(users)),
            ("ver".to_string(), n(before.map_or(1, |v| v + 1))),
        ]);
        self.put_versioned(item, before).await
    }

    async fn rows(&self, user: &str) -> Result<Vec<(String, Versioned, Option<i64>)>, StoreError> {
        let items = query_partition(&self.client, &self.table, pk(user), "OBJ#").await?;
        items
            .iter()
            .map(|item| {
                Ok((
                    names(item)?.1,
                    record_from_item(item)?,
                    get_num(item, "due_at")?,
                ))
            })
            .collect()
    }
}

#[async_trait]
impl DueIndex for DynamoProjection {
    async fn due(&self, until: i64) -> Result<Vec<DueObject>, StoreError> {
        let shards = (0..DUE_SHARDS).map(|i| self.due_in_shard(format!("DUE#{i}"), until));
        let mut due: Vec<DueObject> = futures::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .collect();
        due.sort_by(|a, b| (a.due_at, &a.key).cmp(&(b.due_at, &b.key)));
        Ok(due)
    }

    fn indexed(&self) -> BoxStream<'_, Result<Vec<DueObject>, StoreError>> {
        futures::stream::iter(0..DUE_SHARDS)
            .map(move |shard| {
                let pages = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(DUE_INDEX)
                    .key_condition_expression("due_shard = :s")
                    .expression_attribute_values(":s", s(format!("DUE#{shard}")))
                    .into_paginator()
                    .page_size(INDEX_PAGE_ROWS)
                    .send();
                futures::stream::unfold(pages, |mut pages| async move {
                    let page = pages.next().await?.map_err(|e| classify("Query", e));
                    let rows = page.and_then(|page| page.items().iter().map(due_object).collect());
                    Some((rows, pages))
                })
            })
            .flatten()
            .boxed()
    }

    async fn settle(&self, settlements: &[Settlement]) -> Result<(), StoreError> {
        for chunk in settlements.chunks(TRANSACTION_ITEMS) {
            let groups = chunk
                .iter()
                .map(|s| {
                    let update = TransactWriteItem::builder()
                        .update(update_of(&self.table, s)?)
                        .build();
                    Ok((s, vec![update]))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // A row that changed meanwhile cancels the lot: it is dropped
            // (its object is looked at again), the others are sent again.
            let outcomes =
                transact_groups(
                    &self.client,
                    groups,
                    SETTLE_ATTEMPTS,
                    |reason| match reason {
                        None | Some("TransactionConflict") => Cancelled::Retry,
                        Some("ConditionalCheckFailed") => Cancelled::Done(Ok(())),
                        Some(code) => Cancelled::Done(Err(item_failure(code))),
                    },
                )
                .await;
            for (settlement, outcome) in outcomes {
                match outcome {
                    Ok(()) => {}
                    // Still cancelled by other transactions: one by one.
                    Err(StoreError::Conflict) => self.update_one(settlement).await?,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_round_trip_through_items() {
        let record = ObjectRecord {
            live: true,
            size: 10,
            storage_class: "STANDARD".into(),
            etag: Some("abc".into()),
            encryption: Encryption::Kms {
                algorithm: "aws:kms".into(),
                key_id: Some("k".into()),
            },
            created_at: 5,
            last_access: Some(7),
            restore: Restore::Requested {
                at: 8,
                days: 3,
                trace: TraceContext {
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    ),
                    tracestate: Some("vendor=1".into()),
                },
            },
            sequencer: Sequencer::parse("00AB").unwrap(),
            applied: vec!["created:abc:10:STANDARD".into()],
            verdict: Some(Verdict {
                outcome: "skipped".into(),
                reason: "too small".into(),
                at: 9,
                recheck_at: Some(99),
            }),
        };
        let item = record_item("alice", "users/alice/x y", &record, Some(100), 4);
        assert_eq!(item.get("due_at"), Some(&n(100)));
        assert_eq!(
            names(&item).unwrap(),
            ("alice".into(), "users/alice/x y".into())
        );
        assert_eq!(
            record_from_item(&item).unwrap(),
            Versioned { record, version: 4 }
        );
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard("users/alice/a.txt"), shard("users/alice/a.txt"));
        let used: std::collections::BTreeSet<String> =
            (0..100).map(|i| shard(&format!("users/u/{i}"))).collect();
        assert_eq!(used.len(), DUE_SHARDS as usize);
    }

    #[test]
    fn settlements_are_conditional_updates() {
        let update = update_of(
            "t",
            &Settlement::Kept {
                user: "u".into(),
                key: "users/u/k".into(),
                version: 3,
                due_at: None,
                verdict: None,
            },
        )
        .unwrap();
        assert_eq!(
            update.update_expression,
            "SET ver = ver + :one REMOVE due_shard, due_at"
        );
        assert_eq!(update.condition_expression.as_deref(), Some("ver = :v"));
    }
}
