//! Accounts and grants in intake's DynamoDB table (partition key `pk`).
//!
//! - `USER#<id>`: quota override, committed bytes and revision from the
//!   ledger, reservations by key, and `version`, which every write checks and
//!   increments, so concurrent writers cannot lose each other's updates.
//! - `GRANT#<id>`: one upload grant; expires by TTL a week after the grant.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, HashMap},
    num::NonZeroUsize,
    sync::{Arc, Mutex, OnceLock},
};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, TransactWriteItem, Update},
};
use lru::LruCache;
use stowage_shared::dynamo::{
    Item, classify, get_num, get_str_list, n, req_num, req_str, s, str_list,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::grant_writes::GrantWrites;
use crate::{
    domain::{
        keys::UserId,
        quota::{Account, Reservation, Reservations},
    },
    ports::{AccountStore, GrantRecord, GrantState, StoreError, Versioned},
};

/// How long a grant's record outlives the grant.
const GRANT_RECORD_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Accounts whose last read or written state this process keeps.
const RECENT_ACCOUNTS: usize = 10_000;

/// Reservations changed in one write above which the whole account item is
/// written instead of an update naming each one (an update expression is
/// limited to 4 KB).
const MAX_CHANGED_RESERVATIONS: usize = 64;

/// [`AccountStore`] on DynamoDB.
#[derive(Debug)]
pub struct DynamoAccountStore {
    client: Client,
    table: String,
    /// Each account as this process last read or wrote it, by user, for
    /// [`AccountStore::load_recent`]; the least recently used go first.
    recent: Mutex<LruCache<String, Arc<Versioned<Account>>>>,
    /// Commits grants together with other users' grants of the moment;
    /// started on the first grant.
    grant_writes: OnceLock<GrantWrites>,
}

impl DynamoAccountStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            recent: Mutex::new(LruCache::new(
                NonZeroUsize::new(RECENT_ACCOUNTS).expect("not zero"),
            )),
            grant_writes: OnceLock::new(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<Versioned<Account>>>> {
        // The cache holds only copies: one left by a panicking thread is as
        // good as any.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `account` as the newest known state of `user`'s (unless a newer
    /// one is kept already: reads and writes of the same account overlap),
    /// or forgets it.
    fn remember(&self, user: &UserId, account: Option<Arc<Versioned<Account>>>) {
        match account {
            Some(account) => {
                let mut recent = self.recent();
                if recent
                    .peek(user.as_str())
                    .is_none_or(|kept| kept.version <= account.version)
                {
                    recent.put(user.to_string(), account);
                }
            }
            None => {
                self.recent().pop(user.as_str());
            }
        }
    }

    /// Reads an account with a strongly consistent read and keeps it.
    async fn read(&self, user: &UserId) -> Result<Arc<Versioned<Account>>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", user_pk(user))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        let stored = match output.item {
            Some(item) => {
                let (account, version) = account_from_item(&item)?;
                Versioned {
                    value: account,
                    version: Some(version),
                }
            }
            None => Versioned {
                value: Account::new(),
                version: None,
            },
        };
        let stored = Arc::new(stored);
        self.remember(user, Some(Arc::clone(&stored)));
        Ok(stored)
    }

    async fn write_account(
        &self,
        user: &UserId,
        before: &Versioned<Account>,
        after: &Account,
        grant: Option<&GrantRecord>,
    ) -> Result<(), StoreError> {
        let write = account_write(&self.table, user, before, after)?;
        let Some(grant) = grant else {
            return match write {
                AccountWrite::Put(put) => self
                    .client
                    .put_item()
                    .table_name(put.table_name)
                    .set_item(Some(put.item))
                    .set_condition_expression(put.condition_expression)
                    .set_expression_attribute_values(put.expression_attribute_values)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("PutItem", e)),
                AccountWrite::Update(update) => self
                    .client
                    .update_item()
                    .table_name(update.table_name)
                    .set_key(Some(update.key))
                    .update_expression(update.update_expression)
                    .set_condition_expression(update.condition_expression)
                    .set_expression_attribute_names(update.expression_attribute_names)
                    .set_expression_attribute_values(update.expression_attribute_values)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("UpdateItem", e)),
            };
        };
        let account_item = match write {
            AccountWrite::Put(put) => TransactWriteItem::builder().put(put),
            AccountWrite::Update(update) => TransactWriteItem::builder().update(update),
        };
        let grant_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(grant_to_item(grant)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        self.grant_writes
            .get_or_init(|| GrantWrites::start(self.client.clone()))
            .write(
                user.as_str(),
                [
                    account_item.build(),
                    TransactWriteItem::builder().put(grant_put).build(),
                ],
            )
            .await
    }
}

fn user_pk(user: &UserId) -> AttributeValue {
    s(format!("USER#{user}"))
}

fn reservation_value(r: &Reservation) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("max".to_string(), n(r.max_size)),
        ("held".to_string(), n(r.held)),
        ("lapses".to_string(), n(r.lapses_at)),
        ("rev".to_string(), n(r.revision)),
        ("grants".to_string(), str_list(&r.grants)),
    ]))
}

fn classes_value(account: &Account) -> AttributeValue {
    AttributeValue::M(
        account
            .by_storage_class
            .iter()
            .map(|(class, bytes)| (class.clone(), n(*bytes)))
            .collect(),
    )
}

fn account_to_item(user: &UserId, account: &Account, version: u64) -> Item {
    let reservations = account
        .reservations
        .iter()
        .map(|(key, r)| (key.to_string(), reservation_value(r)))
        .collect();
    let mut item = HashMap::from([
        ("pk".to_string(), user_pk(user)),
        ("used_bytes".to_string(), n(account.used_bytes)),
        ("object_count".to_string(), n(account.object_count)),
        ("by_class".to_string(), classes_value(account)),
        ("revision".to_string(), n(account.revision)),
        ("version".to_string(), n(version)),
        ("reservations".to_string(), AttributeValue::M(reservations)),
    ]);
    if let Some(quota) = account.quota_override {
        item.insert("quota_bytes".to_string(), n(quota));
    }
    if !account.missing.is_empty() {
        item.insert("missing_revisions".to_string(), missing_value(account));
    }
    item
}

/// The account's missing revisions as a number set (which DynamoDB does not
/// allow empty: an account missing none has no such attribute).
fn missing_value(account: &Account) -> AttributeValue {
    AttributeValue::Ns(account.missing.iter().map(u64::to_string).collect())
}

fn missing_from_item(item: &Item) -> Result<BTreeSet<u64>, StoreError> {
    match item.get("missing_revisions") {
        None => Ok(BTreeSet::new()),
        Some(AttributeValue::Ns(values)) => values
            .iter()
            .map(|v| {
                v.parse().map_err(|_| {
                    StoreError::Other(anyhow::anyhow!("missing revision {v} is not a number"))
                })
            })
            .collect(),
        Some(_) => Err(StoreError::Other(anyhow::anyhow!(
            "missing revisions are not a number set"
        ))),
    }
}

fn account_from_item(item: &Item) -> Result<(Account, u64), StoreError> {
    let mut reservations = BTreeMap::new();
    if let Some(AttributeValue::M(map)) = item.get("reservations") {
        for (key, value) in map {
            let AttributeValue::M(r) = value else {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "reservation {key} is not a map"
                )));
            };
            reservations.insert(
                key.as_str().into(),
                Arc::new(Reservation {
                    max_size: req_num(r, "max")?,
                    held: req_num(r, "held")?,
                    lapses_at: req_num(r, "lapses")?,
                    revision: req_num(r, "rev")?,
                    grants: get_str_list(r, "grants")?,
                }),
            );
        }
    }
    let mut by_storage_class = BTreeMap::new();
    if let Some(AttributeValue::M(map)) = item.get("by_class") {
        for class in map.keys() {
            by_storage_class.insert(class.clone(), req_num(map, class)?);
        }
    }
    let account = Account {
        quota_override: get_num(item, "quota_bytes")?,
        used_bytes: get_num(item, "used_bytes")?.unwrap_or(0),
        object_count: get_num(item, "object_count")?.unwrap_or(0),
        by_storage_class,
        revision: get_num(item, "revision")?.unwrap_or(0),
        missing: missing_from_item(item)?,
        reservations,
    };
    Ok((account, req_num(item, "version")?))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn grant_to_item(grant: &GrantRecord) -> Item {
    let mut item = HashMap::from([
        ("pk".to_string(), s(format!("GRANT#{}", grant.grant_id))),
        ("user_id".to_string(), s(&grant.user_id)),
        ("key".to_string(), s(&grant.key)),
        ("max_size".to_string(), n(grant.max_size)),
        ("content_type".to_string(), s(&grant.content_type)),
        ("state".to_string(), s(grant.state.as_str())),
        ("created_at".to_string(), s(rfc3339(grant.created_at))),
        ("expires_at".to_string(), s(rfc3339(grant.expires_at))),
        (
            "expires_at_epoch".to_string(),
            n(grant.expires_at.unix_timestamp() + GRANT_RECORD_TTL_SECONDS),
        ),
    ]);
    if let Some(size) = grant.size {
        item.insert("size".to_string(), n(size));
    }
    item
}

fn grant_from_item(item: &Item) -> Result<GrantRecord, StoreError> {
    let text = |name: &str| req_str(item, name).map_err(StoreError::from);
    let time = |name: &str| -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::parse(text(name)?, &Rfc3339)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("attribute {name}: {e}")))
    };
    let state = text("state")?;
    Ok(GrantRecord {
        grant_id: text("pk")?.trim_start_matches("GRANT#").to_string(),
        user_id: text("user_id")?.to_string(),
        key: text("key")?.to_string(),
        max_size: req_num(item, "max_size")?,
        content_type: text("content_type")?.to_string(),
        size: get_num(item, "size")?,
        state: GrantState::parse(state)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("unknown grant state {state}")))?,
        created_at: time("created_at")?,
        expires_at: time("expires_at")?,
    })
}

/// How an account is written, conditioned on the version read: whole, when
/// it is new or much of it changed; otherwise as an update of what changed,
/// so that a write's size follows the change rather than the account (which
/// holds every outstanding reservation).
enum AccountWrite {
    Put(Put),
    Update(Update),
}

fn account_write(
    table: &str,
    user: &UserId,
    before: &Versioned<Account>,
    after: &Account,
) -> Result<AccountWrite, StoreError> {
    let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Other(e.into());
    let Some(version) = before.version else {
        return Put::builder()
            .table_name(table)
            .set_item(Some(account_to_item(user, after, 1)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map(AccountWrite::Put)
            .map_err(built);
    };
    let (changed, dropped) = reservation_changes(&before.value.reservations, &after.reservations);
    if changed.len() + dropped.len() > MAX_CHANGED_RESERVATIONS {
        return Put::builder()
            .table_name(table)
            .set_item(Some(account_to_item(user, after, version + 1)))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(version))
            .build()
            .map(AccountWrite::Put)
            .map_err(built);
    }
    let old = &before.value;
    let mut values = HashMap::from([
        (":expected".to_string(), n(version)),
        (":next".to_string(), n(version + 1)),
    ]);
    let mut sets = vec!["version = :next".to_string()];
    let mut removes = Vec::new();
    let mut names = HashMap::new();
    let mut set = |attribute: &str, value: AttributeValue| {
        let placeholder = format!(":{attribute}");
        sets.push(format!("{attribute} = {placeholder}"));
        values.insert(placeholder, value);
    };
    if old.used_bytes != after.used_bytes {
        set("used_bytes", n(after.used_bytes));
    }
    if old.object_count != after.object_count {
        set("object_count", n(after.object_count));
    }
    if old.revision != after.revision {
        set("revision", n(after.revision));
    }
    if old.by_storage_class != after.by_storage_class {
        set("by_class", classes_value(after));
    }
    if old.missing != after.missing {
        if after.missing.is_empty() {
            removes.push("missing_revisions".to_string());
        } else {
            set("missing_revisions", missing_value(after));
        }
    }
    match after.quota_override {
        Some(quota) if old.quota_override != Some(quota) => set("quota_bytes", n(quota)),
        None if old.quota_override.is_some() => removes.push("quota_bytes".to_string()),
        _ => {}
    }
    for (index, (key, reservation)) in changed.into_iter().enumerate() {
        sets.push(format!("reservations.#r{index} = :r{index}"));
        names.insert(format!("#r{index}"), key.to_string());
        values.insert(format!(":r{index}"), reservation_value(reservation));
    }
    for (index, key) in dropped.into_iter().enumerate() {
        removes.push(format!("reservations.#d{index}"));
        names.insert(format!("#d{index}"), key.to_string());
    }
    let mut expression = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    Update::builder()
        .table_name(table)
        .key("pk", user_pk(user))
        .update_expression(expression)
        .condition_expression("version = :expected")
        // DynamoDB refuses an empty map of names.
        .set_expression_attribute_names((!names.is_empty()).then_some(names))
        .set_expression_attribute_values(Some(values))
        .build()
        .map(AccountWrite::Update)
        .map_err(built)
}

/// The reservations `after` holds and `before` does not hold alike, and the
/// keys only `before` holds: one pass over both maps in key order. A
/// reservation the two share (a copy's unchanged entry) is the same
/// allocation, so most of them compare by address.
fn reservation_changes<'a>(
    before: &'a Reservations,
    after: &'a Reservations,
) -> (Vec<(&'a str, &'a Reservation)>, Vec<&'a str>) {
    let (mut changed, mut dropped) = (Vec::new(), Vec::new());
    let (mut old, mut new) = (before.iter().peekable(), after.iter().peekable());
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((old_key, _)), Some((new_key, _))) => old_key.cmp(new_key),
        };
        match order {
            Ordering::Less => dropped.extend(old.next().map(|(key, _)| &**key)),
            Ordering::Greater => changed.extend(new.next().map(|(key, r)| (&**key, &**r))),
            Ordering::Equal => {
                if let (Some((_, was)), Some((key, r))) = (old.next(), new.next())
                    && !Arc::ptr_eq(was, r)
                    && was != r
                {
                    changed.push((&**key, &**r));
                }
            }
        }
    }
    (changed, dropped)
}

#[async_trait]
impl AccountStore for DynamoAccountStore {
    async fn load(&self, user: &UserId) -> Result<Versioned<Account>, StoreError> {
        self.read(user).await.map(Arc::unwrap_or_clone)
    }

    async fn load_recent(&self, user: &UserId) -> Result<Arc<Versioned<Account>>, StoreError> {
        let recent = self.recent().get(user.as_str()).cloned();
        match recent {
            Some(account) => Ok(account),
            None => self.read(user).await,
        }
    }

    async fn save(
        &self,
        user: &UserId,
        before: &Versioned<Account>,
        after: Account,
        grant: Option<&GrantRecord>,
    ) -> Result<(), StoreError> {
        let result = self.write_account(user, before, &after, grant).await;
        // After a failure the stored account is unknown (a lost race, or a
        // write whose outcome never came back): forget the copy.
        self.remember(
            user,
            result.is_ok().then(|| {
                Arc::new(Versioned {
                    value: after,
                    version: Some(before.version.map_or(1, |v| v + 1)),
                })
            }),
        );
        result
    }

    async fn record_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(grant_to_item(grant)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    /// Reads one grant.
    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("GRANT#{grant_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        output.item.map(|item| grant_from_item(&item)).transpose()
    }

    async fn complete_grant(
        &self,
        user: &UserId,
        grant_id: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("GRANT#{grant_id}")))
            .update_expression("SET #state = :complete, #size = :size")
            .condition_expression(
                "attribute_exists(pk) AND user_id = :user AND #state = :initiated",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#size", "size")
            .expression_attribute_values(":complete", s(GrantState::Complete.as_str()))
            .expression_attribute_values(":initiated", s(GrantState::Initiated.as_str()))
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":size", n(size))
            .send()
            .await;
        match result.map_err(|e| classify("UpdateItem", e)) {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| classify("DescribeTable", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_survive_a_round_trip_through_items() {
        let user = UserId::parse("alice").unwrap();
        let mut account = Account {
            quota_override: Some(10),
            used_bytes: 3,
            object_count: 1,
            by_storage_class: BTreeMap::from([("STANDARD".into(), 2), ("GLACIER".into(), 1)]),
            revision: 4,
            missing: BTreeSet::from([2, 3]),
            ..Account::new()
        };
        account.reservations.insert(
            "users/alice/a b".into(),
            Arc::new(Reservation {
                max_size: 7,
                held: 4,
                lapses_at: -5,
                revision: 2,
                grants: vec!["g1".into(), "g2".into()],
            }),
        );
        let (back, version) = account_from_item(&account_to_item(&user, &account, 9)).unwrap();
        assert_eq!(back, account);
        assert_eq!(version, 9);
    }

    fn reservation(size: u64) -> Arc<Reservation> {
        Arc::new(Reservation {
            max_size: size,
            held: size,
            lapses_at: 1_800_000_000,
            revision: 0,
            grants: vec![format!("g{size}")],
        })
    }

    #[test]
    fn a_new_account_is_put_whole_only_if_absent() {
        let user = UserId::parse("alice").unwrap();
        let before = Versioned {
            value: Account::new(),
            version: None,
        };
        let Ok(AccountWrite::Put(put)) = account_write("t", &user, &before, &Account::new()) else {
            panic!("a new account is put");
        };
        assert_eq!(put.condition_expression(), Some("attribute_not_exists(pk)"));
        assert_eq!(account_from_item(put.item()).unwrap(), (Account::new(), 1));
    }

    #[test]
    fn an_update_names_only_what_changed() {
        let user = UserId::parse("alice").unwrap();
        let mut old = Account::new();
        old.reservations
            .insert("users/alice/gone".into(), reservation(1));
        old.reservations
            .insert("users/alice/same".into(), reservation(2));
        let before = Versioned {
            value: old.clone(),
            version: Some(7),
        };

        let mut counted = old.clone();
        counted.used_bytes = 5;
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &counted) else {
            panic!("an update");
        };
        assert_eq!(
            update.update_expression(),
            "SET version = :next, used_bytes = :used_bytes"
        );
        // DynamoDB refuses an empty map of names.
        assert_eq!(update.expression_attribute_names(), None);
        let values = update.expression_attribute_values().unwrap();
        assert_eq!(values[":expected"], n(7_u64));
        assert_eq!(values[":next"], n(8_u64));
        assert_eq!(values[":used_bytes"], n(5_u64));
        assert_eq!(update.condition_expression(), Some("version = :expected"));

        let mut reserved = old.clone();
        reserved.reservations.remove("users/alice/gone");
        reserved
            .reservations
            .insert("users/alice/new".into(), reservation(3));
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &reserved) else {
            panic!("an update");
        };
        assert_eq!(
            update.update_expression(),
            "SET version = :next, reservations.#r0 = :r0 REMOVE reservations.#d0"
        );
        let names = update.expression_attribute_names().unwrap();
        assert_eq!(names["#r0"], "users/alice/new");
        assert_eq!(names["#d0"], "users/alice/gone");
        assert_eq!(
            update.expression_attribute_values().unwrap()[":r0"],
            reservation_value(&reservation(3))
        );

        // Equal reservations held apart (as in an account read back) are no
        // change; one changed under the same key is.
        let mut reread = Account::new();
        reread
            .reservations
            .insert("users/alice/gone".into(), reservation(1));
        reread
            .reservations
            .insert("users/alice/same".into(), reservation(2));
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &reread) else {
            panic!("an update");
        };
        assert_eq!(update.update_expression(), "SET version = :next");
        let mut settled = reread.clone();
        let same = settled.reservations.get_mut("users/alice/same").unwrap();
        Arc::make_mut(same).held = 0;
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &settled) else {
            panic!("an update");
        };
        assert_eq!(
            update.update_expression(),
            "SET version = :next, reservations.#r0 = :r0"
        );
        assert_eq!(
            update.expression_attribute_names().unwrap()["#r0"],
            "users/alice/same"
        );
    }

    #[test]
    fn missing_revisions_are_set_while_there_are_any_and_removed_after() {
        let user = UserId::parse("alice").unwrap();
        let before = Versioned {
            value: Account::new(),
            version: Some(2),
        };
        let mut waiting = Account::new();
        waiting.missing.insert(4);
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &waiting) else {
            panic!("an update");
        };
        assert_eq!(
            update.update_expression(),
            "SET version = :next, missing_revisions = :missing_revisions"
        );
        assert_eq!(
            update.expression_attribute_values().unwrap()[":missing_revisions"],
            AttributeValue::Ns(vec!["4".into()])
        );
        let before = Versioned {
            value: waiting,
            version: Some(3),
        };
        let Ok(AccountWrite::Update(update)) = account_write("t", &user, &before, &Account::new())
        else {
            panic!("an update");
        };
        assert_eq!(
            update.update_expression(),
            "SET version = :next REMOVE missing_revisions"
        );
    }

    #[test]
    fn changing_most_reservations_puts_the_whole_account_at_the_next_version() {
        let user = UserId::parse("alice").unwrap();
        let before = Versioned {
            value: Account::new(),
            version: Some(3),
        };
        let mut after = Account::new();
        for i in 0..=MAX_CHANGED_RESERVATIONS as u64 {
            after
                .reservations
                .insert(format!("users/alice/{i}").into(), reservation(i));
        }
        let Ok(AccountWrite::Put(put)) = account_write("t", &user, &before, &after) else {
            panic!("a put of the whole account");
        };
        assert_eq!(put.condition_expression(), Some("version = :expected"));
        assert_eq!(
            put.expression_attribute_values().unwrap()[":expected"],
            n(3_u64)
        );
        assert_eq!(account_from_item(put.item()).unwrap(), (after, 4));
    }

    #[test]
    fn grants_survive_a_round_trip_through_items() {
        let grant = GrantRecord {
            grant_id: "g".into(),
            user_id: "alice".into(),
            key: "users/alice/x".into(),
            max_size: 5,
            content_type: "image/png".into(),
            state: GrantState::Rejected,
            size: None,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            expires_at: OffsetDateTime::from_unix_timestamp(1_700_000_900).unwrap(),
        };
        assert_eq!(grant_from_item(&grant_to_item(&grant)).unwrap(), grant);
    }
}
