//! The ledger's rows in its DynamoDB table (`pk`, `sk`):
//!
//! - `USER#<id>` / `OBJ#<key>`: one object or tombstone, with the sequencer it
//!   last applied and `ver`, checked and incremented by every write; `rev`,
//!   the usage revision its last change made, and `violation`, how the upload
//!   that brought it broke its grant. Tombstones carry `expires_at_epoch` and
//!   expire by TTL.
//! - `USER#<id>` / `USAGE`: the user's totals; `revision` doubles as the
//!   version every write checks.
//! - `USER#<id>` / `GRANT#<key>`: the newest upload grant for a key, with
//!   the trace it was issued in.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem},
};
use stowage_events::{TraceContext, stowage::UploadViolation};
use stowage_shared::dynamo::{
    Cancelled, Item, classify, classify_transaction, get_num, get_str, get_str_list, item_failure,
    n, query_partition, req_num, req_str, s, scan_all, str_list, transact_groups,
};

use crate::{
    domain::{
        sequencer::Sequencer,
        usage::{ObjectRow, Usage},
    },
    ports::{GrantNote, LedgerRows, LedgerStore, Snapshot, StoreError, UserCommit},
};

/// [`LedgerStore`] on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoLedgerStore {
    client: Client,
    table: String,
    /// How long a tombstone is kept; longer than queue retention plus the
    /// replay window, so no delayed event can outlive it.
    tombstone_ttl: Duration,
}

fn pk(user: &str) -> AttributeValue {
    s(format!("USER#{user}"))
}

fn key_of(user: &str, sk: String) -> Item {
    HashMap::from([("pk".to_string(), pk(user)), ("sk".to_string(), s(sk))])
}

fn object_sk(key: &str) -> String {
    format!("OBJ#{key}")
}

fn grant_sk(key: &str) -> String {
    format!("GRANT#{key}")
}

/// Items a `TransactWriteItems` may carry.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// Transactions sent for a batch's grants before those still cancelled by
/// other transactions are reported as conflicts (their messages come again).
const GRANT_TRANSACTION_ATTEMPTS: usize = 3;

/// The put that remembers `grant` for its key, unless a newer grant for the
/// key is stored: a newer grant replaces an older one, never the reverse.
fn grant_put(table: &str, grant: &GrantNote) -> Put {
    let mut item = key_of(&grant.user_id, grant_sk(&grant.key));
    item.extend([
        ("grant_id".to_string(), s(&grant.grant_id)),
        ("max_size".to_string(), n(grant.max_size)),
        ("issued_at".to_string(), n(grant.issued_at)),
        ("expires_at".to_string(), n(grant.expires_at)),
        (
            "expires_at_epoch".to_string(),
            n(grant.expires_at + 7 * 24 * 3600),
        ),
    ]);
    for (name, value) in [
        ("traceparent", &grant.trace.traceparent),
        ("tracestate", &grant.trace.tracestate),
    ] {
        if let Some(value) = value {
            item.insert(name.to_string(), s(value));
        }
    }
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk) OR expires_at <= :exp")
        .expression_attribute_values(":exp", n(grant.expires_at))
        .build()
        .expect("table, item and condition are set")
}

fn grant_from_item(user: &str, key: &str, item: &Item) -> Result<GrantNote, StoreError> {
    Ok(GrantNote {
        user_id: user.to_string(),
        key: key.to_string(),
        grant_id: req_str(item, "grant_id")?.to_string(),
        max_size: req_num(item, "max_size")?,
        issued_at: get_num(item, "issued_at")?.unwrap_or(0),
        expires_at: req_num(item, "expires_at")?,
        trace: TraceContext {
            traceparent: get_str(item, "traceparent")?.map(str::to_string),
            tracestate: get_str(item, "tracestate")?.map(str::to_string),
        },
    })
}

const USAGE_SK: &str = "USAGE";

impl DynamoLedgerStore {
    pub fn new(client: Client, table: impl Into<String>, tombstone_ttl: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            tombstone_ttl,
        }
    }

    fn object_item(&self, user: &str, key: &str, row: &ObjectRow, version: u64) -> Item {
        let mut item = key_of(user, object_sk(key));
        item.extend([
            ("live".to_string(), AttributeValue::Bool(row.live)),
            ("size".to_string(), n(row.size)),
            ("storage_class".to_string(), s(&row.storage_class)),
            ("seq".to_string(), s(row.sequencer.as_str())),
            ("applied".to_string(), str_list(&row.applied)),
            ("ver".to_string(), n(version)),
        ]);
        if row.reclassified {
            item.insert("reclassified".to_string(), AttributeValue::Bool(true));
        }
        if row.revision > 0 {
            item.insert("rev".to_string(), n(row.revision));
        }
        if let Some(violation) = row.violation {
            item.insert("violation".to_string(), s(violation.as_str()));
        }
        if let Some(etag) = &row.etag {
            item.insert("etag".to_string(), s(etag));
        }
        if !row.live {
            let expires = time::OffsetDateTime::now_utc() + self.tombstone_ttl;
            item.insert("expires_at_epoch".to_string(), n(expires.unix_timestamp()));
        }
        item
    }
}

fn object_from_item(item: &Item) -> Result<(ObjectRow, u64), StoreError> {
    let live = match item.get("live") {
        Some(AttributeValue::Bool(b)) => *b,
        _ => {
            return Err(StoreError::Other(anyhow::anyhow!(
                "object row without 'live'"
            )));
        }
    };
    let sequencer = Sequencer::parse(req_str(item, "seq")?)
        .map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
    let row = ObjectRow {
        live,
        size: req_num(item, "size")?,
        storage_class: req_str(item, "storage_class")?.to_string(),
        etag: get_str(item, "etag")?.map(str::to_string),
        sequencer,
        applied: get_str_list(item, "applied")?,
        reclassified: matches!(item.get("reclassified"), Some(AttributeValue::Bool(true))),
        revision: get_num(item, "rev")?.unwrap_or(0),
        violation: get_str(item, "violation")?.and_then(UploadViolation::from_name),
    };
    Ok((row, req_num(item, "ver")?))
}

fn usage_item(user: &str, usage: &Usage) -> Item {
    let mut item = key_of(user, USAGE_SK.to_string());
    let classes = usage
        .by_storage_class
        .iter()
        .map(|(class, bytes)| (class.clone(), n(bytes)))
        .collect();
    item.extend([
        ("user_id".to_string(), s(user)),
        ("used_bytes".to_string(), n(usage.used_bytes)),
        ("object_count".to_string(), n(usage.object_count)),
        ("by_storage_class".to_string(), AttributeValue::M(classes)),
        ("revision".to_string(), n(usage.revision)),
    ]);
    item
}

fn usage_from_item(item: &Item) -> Result<Usage, StoreError> {
    let mut by_storage_class = std::collections::BTreeMap::new();
    if let Some(AttributeValue::M(classes)) = item.get("by_storage_class") {
        for (class, bytes) in classes {
            let bytes = bytes
                .as_n()
                .ok()
                .and_then(|b| b.parse().ok())
                .ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!("by_storage_class.{class} is not a number"))
                })?;
            by_storage_class.insert(class.clone(), bytes);
        }
    }
    Ok(Usage {
        used_bytes: req_num(item, "used_bytes")?,
        object_count: req_num(item, "object_count")?,
        by_storage_class,
        revision: get_num(item, "revision")?.unwrap_or(0),
    })
}

/// Keys per `BatchGetItem` request, DynamoDB's limit.
const MAX_BATCH_GET: usize = 100;

impl DynamoLedgerStore {
    /// Reads `keys` (distinct), strongly consistent, retrying what DynamoDB
    /// leaves unprocessed.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BATCH_GET) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Other(e.into()))?;
            let mut complete = false;
            for attempt in 0..10u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(5))).await;
                }
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| classify("BatchGetItem", e))?;
                if let Some(found) = output.responses.and_then(|mut r| r.remove(&self.table)) {
                    items.extend(found);
                }
                match output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                {
                    Some(rest) if !rest.keys().is_empty() => pending = rest,
                    _ => {
                        complete = true;
                        break;
                    }
                }
            }
            if !complete {
                return Err(StoreError::Throttled(anyhow::anyhow!(
                    "BatchGetItem left keys unprocessed after 10 attempts"
                )));
            }
        }
        Ok(items)
    }

    fn put(&self, item: Item, version_read: Option<u64>, name: &str) -> Result<Put, StoreError> {
        match version_read {
            Some(version) => Put::builder()
                .condition_expression(format!("{name} = :v"))
                .expression_attribute_values(":v", n(version)),
            None => Put::builder().condition_expression("attribute_not_exists(pk)"),
        }
        .table_name(&self.table)
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Other(e.into()))
    }
}

#[async_trait]
impl LedgerStore for DynamoLedgerStore {
    async fn snapshots(&self, wanted: &[(&str, &str)]) -> Result<Vec<Snapshot>, StoreError> {
        let mut keys = Vec::with_capacity(3 * wanted.len());
        let mut seen = HashSet::new();
        for (user, key) in wanted {
            for sk in [object_sk(key), USAGE_SK.to_string(), grant_sk(key)] {
                if seen.insert((*user, sk.clone())) {
                    keys.push(key_of(user, sk));
                }
            }
        }
        let mut found: HashMap<(String, String), Item> = HashMap::with_capacity(keys.len());
        for item in self.batch_get(keys).await? {
            let pk = req_str(&item, "pk")?.to_string();
            let sk = req_str(&item, "sk")?.to_string();
            found.insert((pk, sk), item);
        }
        let get = |user: &str, sk: String| found.get(&(format!("USER#{user}"), sk));
        wanted
            .iter()
            .map(|(user, key)| {
                let object = get(user, object_sk(key))
                    .map(object_from_item)
                    .transpose()?;
                let usage = get(user, USAGE_SK.to_string())
                    .map(usage_from_item)
                    .transpose()?;
                let grant = get(user, grant_sk(key))
                    .map(|item| grant_from_item(user, key, item))
                    .transpose()?;
                Ok(Snapshot {
                    object_version: object.as_ref().map(|(_, version)| *version),
                    object: object.map(|(row, _)| row),
                    usage_exists: usage.is_some(),
                    usage: usage.unwrap_or_default(),
                    grant,
                })
            })
            .collect()
    }

    async fn commit_all(&self, commits: &[UserCommit]) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for commit in commits {
            for object in &commit.objects {
                let version = object.version_read.map_or(1, |v| v + 1);
                let item = self.object_item(&commit.user, &object.key, &object.row, version);
                items.push(self.put(item, object.version_read, "ver")?);
            }
            let item = usage_item(&commit.user, &commit.usage);
            items.push(self.put(item, commit.usage_read, "revision")?);
        }
        if items.is_empty() {
            return Ok(());
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(
                items
                    .into_iter()
                    .map(|put| TransactWriteItem::builder().put(put).build())
                    .collect(),
            ))
            .send()
            .await
            .map(drop)
            .map_err(classify_transaction)
    }

    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError> {
        let put = grant_put(&self.table, grant);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await
            .map(drop)
            .or_else(|e| match classify("PutItem", e) {
                // A newer grant for the key is there already.
                StoreError::Conflict => Ok(()),
                other => Err(other),
            })
    }

    /// One transaction for the grants of a batch (a `PutItem` when there is
    /// one). A grant older than the one stored for its key is done; when
    /// that cancels the transaction, the others are sent again without it.
    async fn record_grants(&self, grants: &[GrantNote]) -> Vec<Result<(), StoreError>> {
        // The newest grant of each key stands for the others of the batch:
        // a transaction may write an item only once.
        let mut newest: HashMap<(&str, &str), usize> = HashMap::new();
        for (index, grant) in grants.iter().enumerate() {
            newest
                .entry((grant.user_id.as_str(), grant.key.as_str()))
                .and_modify(|kept| {
                    if grants[*kept].expires_at <= grant.expires_at {
                        *kept = index;
                    }
                })
                .or_insert(index);
        }
        let mut standing: Vec<usize> = newest.values().copied().collect();
        standing.sort_unstable();
        let mut outcomes: HashMap<usize, Result<(), StoreError>> = HashMap::new();
        if let [only] = standing[..] {
            outcomes.insert(only, self.record_grant(&grants[only]).await);
        } else {
            for chunk in standing.chunks(MAX_TRANSACTION_ITEMS) {
                outcomes.extend(self.put_grants(grants, chunk).await);
            }
        }
        grants
            .iter()
            .map(|grant| {
                let stands_for = newest[&(grant.user_id.as_str(), grant.key.as_str())];
                match &outcomes[&stands_for] {
                    Ok(()) => Ok(()),
                    Err(error) => Err(error.again()),
                }
            })
            .collect()
    }
}

impl DynamoLedgerStore {
    /// Puts `grants[i]` for each `i` of `which` (distinct keys) in one
    /// transaction, again without those older than what is stored.
    async fn put_grants(
        &self,
        grants: &[GrantNote],
        which: &[usize],
    ) -> Vec<(usize, Result<(), StoreError>)> {
        let groups = which
            .iter()
            .map(|&i| {
                let put = grant_put(&self.table, &grants[i]);
                (i, vec![TransactWriteItem::builder().put(put).build()])
            })
            .collect();
        transact_groups(
            &self.client,
            groups,
            GRANT_TRANSACTION_ATTEMPTS,
            |reason| match reason {
                // Cancelled only because of another grant or transaction.
                None | Some("TransactionConflict") => Cancelled::Retry,
                // A newer grant for the key is there already.
                Some("ConditionalCheckFailed") => Cancelled::Done(Ok(())),
                Some(code) => Cancelled::Done(Err(item_failure(code))),
            },
        )
        .await
    }
}

#[async_trait]
impl LedgerRows for DynamoLedgerStore {
    async fn objects(&self, user: &str) -> Result<Vec<(String, ObjectRow, u64)>, StoreError> {
        let items = query_partition(&self.client, &self.table, pk(user), "OBJ#").await?;
        items
            .iter()
            .map(|item| {
                let key = req_str(item, "sk")?.trim_start_matches("OBJ#").to_string();
                let (row, version) = object_from_item(item)?;
                Ok((key, row, version))
            })
            .collect()
    }

    async fn users(&self) -> Result<Vec<String>, StoreError> {
        let items = scan_all(
            self.client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :usage")
                .expression_attribute_values(":usage", s(USAGE_SK))
                .projection_expression("pk"),
        )
        .await?;
        items
            .iter()
            .map(|item| Ok(req_str(item, "pk")?.trim_start_matches("USER#").to_string()))
            .collect()
    }

    async fn replace_usage(
        &self,
        user: &str,
        before: &Snapshot,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(usage_item(user, usage)));
        let request = if before.usage_exists {
            request
                .condition_expression("revision = :rev")
                .expression_attribute_values(":rev", n(before.usage.revision))
        } else {
            request.condition_expression("attribute_not_exists(pk)")
        };
        request
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("PutItem", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_round_trip_through_items() {
        let store = DynamoLedgerStore::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version_latest()
                    .build(),
            ),
            "t",
            Duration::from_secs(60),
        );
        let row = ObjectRow {
            live: false,
            size: 0,
            storage_class: "GLACIER".into(),
            etag: None,
            sequencer: Sequencer::parse("00AB").unwrap(),
            applied: vec!["created:e:1:STANDARD".into(), "deleted".into()],
            reclassified: false,
            revision: 0,
            violation: None,
        };
        let item = store.object_item("alice", "users/alice/x", &row, 3);
        assert!(item.contains_key("expires_at_epoch"), "tombstones expire");
        assert_eq!(object_from_item(&item).unwrap(), (row.clone(), 3));

        let moved = ObjectRow {
            live: true,
            size: 1,
            etag: Some("e".into()),
            reclassified: true,
            revision: 7,
            violation: Some(UploadViolation::ExceedsGrant),
            ..row
        };
        let item = store.object_item("alice", "users/alice/x", &moved, 4);
        assert!(!item.contains_key("expires_at_epoch"));
        assert_eq!(object_from_item(&item).unwrap(), (moved, 4));

        let usage = Usage {
            used_bytes: 10,
            object_count: 2,
            by_storage_class: [("STANDARD".to_string(), 10)].into(),
            revision: 4,
        };
        assert_eq!(
            usage_from_item(&usage_item("alice", &usage)).unwrap(),
            usage
        );
    }
}
