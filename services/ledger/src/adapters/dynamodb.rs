//! The ledger's rows in its DynamoDB table (`pk`, `sk`):
//!
//! - `USER#<id>` / `OBJ#<key>`: one object or tombstone, with the sequencer it
//!   last applied and `ver`, checked and incremented by every write.
//!   Tombstones carry `expires_at_epoch` and expire by TTL.
//! - `USER#<id>` / `USAGE`: the user's totals; `revision` doubles as the
//!   version every write checks.
//! - `USER#<id>` / `GRANT#<key>`: the newest upload grant for a key, with
//!   the trace it was issued in.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem},
};
use stowage_events::TraceContext;
use stowage_shared::dynamo::{
    AttributeError, Item, classify, classify_transaction, get_num, get_str, get_str_list, n,
    req_num, req_str, s, str_list,
};

use crate::{
    domain::{
        sequencer::Sequencer,
        usage::{ObjectRow, Usage},
    },
    ports::{GrantNote, LedgerRows, LedgerStore, Snapshot, StoreError},
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

fn bad_item(error: AttributeError) -> StoreError {
    StoreError::Other(error.into())
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

fn grant_from_item(user: &str, key: &str, item: &Item) -> Result<GrantNote, StoreError> {
    Ok(GrantNote {
        user_id: user.to_string(),
        key: key.to_string(),
        grant_id: req_str(item, "grant_id").map_err(bad_item)?.to_string(),
        max_size: req_num(item, "max_size").map_err(bad_item)?,
        expires_at: req_num(item, "expires_at").map_err(bad_item)?,
        trace: TraceContext {
            traceparent: get_str(item, "traceparent")
                .map_err(bad_item)?
                .map(str::to_string),
            tracestate: get_str(item, "tracestate")
                .map_err(bad_item)?
                .map(str::to_string),
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
    let sequencer = Sequencer::parse(req_str(item, "seq").map_err(bad_item)?)
        .map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
    let row = ObjectRow {
        live,
        size: req_num(item, "size").map_err(bad_item)?,
        storage_class: req_str(item, "storage_class")
            .map_err(bad_item)?
            .to_string(),
        etag: get_str(item, "etag").map_err(bad_item)?.map(str::to_string),
        sequencer,
        applied: get_str_list(item, "applied").map_err(bad_item)?,
    };
    Ok((row, req_num(item, "ver").map_err(bad_item)?))
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
        used_bytes: req_num(item, "used_bytes").map_err(bad_item)?,
        object_count: req_num(item, "object_count").map_err(bad_item)?,
        by_storage_class,
        revision: get_num(item, "revision").map_err(bad_item)?.unwrap_or(0),
    })
}

#[async_trait]
impl LedgerStore for DynamoLedgerStore {
    async fn snapshot(&self, user: &str, key: &str) -> Result<Snapshot, StoreError> {
        let wanted = [
            key_of(user, object_sk(key)),
            key_of(user, USAGE_SK.to_string()),
            key_of(user, grant_sk(key)),
        ];
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(wanted.to_vec()))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let mut items = Vec::new();
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
        let mut snapshot = Snapshot {
            object: None,
            object_version: None,
            usage: Usage::default(),
            usage_exists: false,
            grant: None,
        };
        for item in &items {
            match req_str(item, "sk").map_err(bad_item)? {
                USAGE_SK => {
                    snapshot.usage = usage_from_item(item)?;
                    snapshot.usage_exists = true;
                }
                sk if sk.starts_with("GRANT#") => {
                    snapshot.grant = Some(grant_from_item(user, key, item)?)
                }
                _ => {
                    let (row, version) = object_from_item(item)?;
                    snapshot.object = Some(row);
                    snapshot.object_version = Some(version);
                }
            }
        }
        Ok(snapshot)
    }

    async fn commit(
        &self,
        user: &str,
        key: &str,
        before: &Snapshot,
        object: &ObjectRow,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        let next_version = before.object_version.map_or(1, |v| v + 1);
        let object_put = match before.object_version {
            Some(version) => Put::builder()
                .condition_expression("ver = :ver")
                .expression_attribute_values(":ver", n(version)),
            None => Put::builder().condition_expression("attribute_not_exists(pk)"),
        }
        .table_name(&self.table)
        .set_item(Some(self.object_item(user, key, object, next_version)))
        .build()
        .map_err(|e| StoreError::Other(e.into()))?;
        let usage_put = if before.usage_exists {
            Put::builder()
                .condition_expression("revision = :rev")
                .expression_attribute_values(":rev", n(before.usage.revision))
        } else {
            Put::builder().condition_expression("attribute_not_exists(pk)")
        }
        .table_name(&self.table)
        .set_item(Some(usage_item(user, usage)))
        .build()
        .map_err(|e| StoreError::Other(e.into()))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(object_put).build())
            .transact_items(TransactWriteItem::builder().put(usage_put).build())
            .send()
            .await
            .map(drop)
            .map_err(classify_transaction)
    }

    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError> {
        let mut item = key_of(&grant.user_id, grant_sk(&grant.key));
        item.extend([
            ("grant_id".to_string(), s(&grant.grant_id)),
            ("max_size".to_string(), n(grant.max_size)),
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
        // A newer grant for the key replaces an older one, never the reverse.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :exp")
            .expression_attribute_values(":exp", n(grant.expires_at))
            .send()
            .await
            .map(drop)
            .or_else(|e| match classify("PutItem", e) {
                StoreError::Conflict => Ok(()),
                other => Err(other),
            })
    }
}

#[async_trait]
impl LedgerRows for DynamoLedgerStore {
    async fn objects(&self, user: &str) -> Result<Vec<(String, ObjectRow, u64)>, StoreError> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :obj)")
                .expression_attribute_values(":pk", pk(user))
                .expression_attribute_values(":obj", s("OBJ#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Query", e))?;
            for item in page.items() {
                let key = req_str(item, "sk")
                    .map_err(bad_item)?
                    .trim_start_matches("OBJ#")
                    .to_string();
                let (row, version) = object_from_item(item)?;
                rows.push((key, row, version));
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(rows),
            }
        }
    }

    async fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut users = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :usage")
                .expression_attribute_values(":usage", s(USAGE_SK))
                .projection_expression("pk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Scan", e))?;
            for item in page.items() {
                users.push(
                    req_str(item, "pk")
                        .map_err(bad_item)?
                        .trim_start_matches("USER#")
                        .to_string(),
                );
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(users),
            }
        }
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
        };
        let item = store.object_item("alice", "users/alice/x", &row, 3);
        assert!(item.contains_key("expires_at_epoch"), "tombstones expire");
        assert_eq!(object_from_item(&item).unwrap(), (row, 3));

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
