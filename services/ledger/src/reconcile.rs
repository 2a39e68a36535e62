//! Reconciliation: compares the ledger with what the bucket holds, reports
//! the drift, and on request corrects the ledger, one conditional transaction
//! per key (the same kind of write that applies events), then the totals.
//!
//! The rows are read before the bucket is listed, and a key is corrected only
//! if its row has not changed since: a listing is never applied over an event
//! committed after the rows were read. Run it when the bucket is quiet, or run
//! it twice: events in flight while it lists can show up as drift that their
//! own delivery corrects a moment later.
//!
//! Correcting announces each user's totals, even when nothing was left to
//! correct, so that a correction whose announcement failed in an earlier run
//! reaches intake.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;
use stowage_events::UsageChangedV1;

use crate::{
    domain::{
        keys,
        usage::{ObjectRow, Observed, Usage, reconcile, totals},
    },
    ledger::usage_changed,
    ports::{BucketLister, LedgerRows, LedgerStore, UsagePublisher},
};

/// How one key differs between the ledger and the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub user: String,
    pub key: String,
    /// Size and class the ledger counts; `None` when it counts nothing.
    pub ledger: Option<Counted>,
    /// Size and class the bucket holds; `None` when it holds nothing.
    pub bucket: Option<Counted>,
    /// The ledger was corrected to the bucket. False when no correction was
    /// asked for, or when the key's row changed while it was compared (an
    /// event came for it) and was left to its events.
    pub corrected: bool,
}

/// Bytes of one storage class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counted {
    pub size: u64,
    pub storage_class: String,
}

/// One user's totals before and after reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserTotals {
    pub user: String,
    pub ledger_bytes: u64,
    pub ledger_objects: u64,
    pub bucket_bytes: u64,
    pub bucket_objects: u64,
}

/// What a reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub users: Vec<UserTotals>,
    pub drift: Vec<Drift>,
    /// True when corrections were asked for.
    pub fixed: bool,
}

impl Report {
    /// True when the ledger matched the bucket.
    pub fn clean(&self) -> bool {
        self.drift.is_empty()
            && self
                .users
                .iter()
                .all(|u| u.ledger_bytes == u.bucket_bytes && u.ledger_objects == u.bucket_objects)
    }

    /// True when the ledger matches the bucket now: it did, or every key
    /// that drifted was corrected.
    pub fn settled(&self) -> bool {
        self.clean() || (self.fixed && self.drift.iter().all(|d| d.corrected))
    }
}

/// Compares and corrects the ledger.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn LedgerStore>,
    rows: Arc<dyn LedgerRows>,
    bucket: Arc<dyn BucketLister>,
    publisher: Arc<dyn UsagePublisher>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

fn counted(row: &ObjectRow) -> Option<Counted> {
    row.live.then(|| Counted {
        size: row.size,
        storage_class: row.storage_class.clone(),
    })
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn LedgerStore>,
        rows: Arc<dyn LedgerRows>,
        bucket: Arc<dyn BucketLister>,
        publisher: Arc<dyn UsagePublisher>,
    ) -> Self {
        Self {
            store,
            rows,
            bucket,
            publisher,
        }
    }

    /// Reconciles one user, or every user the ledger or the bucket knows.
    /// Folders under `users/` that name no user id hold no user's objects
    /// and are left out.
    #[tracing::instrument(name = "reconcile", skip(self), fields(otel.name = "ledger reconcile"))]
    pub async fn run(&self, user: Option<&str>, fix: bool) -> anyhow::Result<Report> {
        let users = match user {
            Some(user) if keys::is_user_id(user) => vec![user.to_string()],
            Some(user) => anyhow::bail!(
                "{user:?} is not a user id: 1 to 128 ASCII letters, digits, `_` or `-`"
            ),
            None => {
                let mut users = self.rows.users().await?;
                users.extend(self.bucket.users().await?);
                users.retain(|user| keys::is_user_id(user));
                users.sort();
                users.dedup();
                users
            }
        };
        let mut report = Report {
            fixed: fix,
            ..Report::default()
        };
        for user in users {
            self.user(&user, fix, &mut report).await?;
        }
        Ok(report)
    }

    async fn user(&self, user: &str, fix: bool, report: &mut Report) -> anyhow::Result<()> {
        let before = self.store.snapshot(user, "").await?;
        let rows: BTreeMap<String, (ObjectRow, u64)> = self
            .rows
            .objects(user)
            .await?
            .into_iter()
            .map(|(key, row, version)| (key, (row, version)))
            .collect();
        let prefix = format!("users/{user}/");
        let listed: BTreeMap<String, Observed> = self
            .bucket
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|o| keys::owner(&o.key) == Some(user))
            .map(|o| {
                (
                    o.key,
                    Observed {
                        size: o.size,
                        storage_class: o.storage_class,
                        etag: o.etag,
                    },
                )
            })
            .collect();

        let mut keys: Vec<&String> = listed.keys().chain(rows.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let ledger = rows.get(key).and_then(|(row, _)| counted(row));
            let bucket = listed.get(key).map(|o| Counted {
                size: o.size,
                storage_class: o.storage_class.clone(),
            });
            if ledger != bucket {
                let corrected = if fix {
                    let read = rows.get(key).map(|(_, version)| *version);
                    self.fix_key(user, key, read, listed.get(key)).await?
                } else {
                    false
                };
                report.drift.push(Drift {
                    user: user.to_string(),
                    key: key.clone(),
                    ledger,
                    bucket,
                    corrected,
                });
            }
        }
        if fix && !self.fix_totals(user).await? {
            let usage = self.store.snapshot(user, "").await?.usage;
            self.publisher
                .publish(&UsageChangedV1 {
                    repeated: true,
                    ..usage_changed(user, &prefix, None, &usage, None, None, None)
                })
                .await?;
        }
        report.users.push(UserTotals {
            user: user.to_string(),
            ledger_bytes: before.usage.used_bytes,
            ledger_objects: before.usage.object_count,
            bucket_bytes: listed.values().map(|o| o.size).sum(),
            bucket_objects: listed.len() as u64,
        });
        Ok(())
    }

    /// Corrects `key`'s row towards what the listing `observed`, unless the
    /// row changed since it was read (`read`: its version then, `None` when
    /// there was none) before the listing: an event committed since may be
    /// newer than the listing. True when the row is as the listing shows.
    async fn fix_key(
        &self,
        user: &str,
        key: &str,
        read: Option<u64>,
        observed: Option<&Observed>,
    ) -> anyhow::Result<bool> {
        for attempt in 0..25u32 {
            let snapshot = self.store.snapshot(user, key).await?;
            if snapshot.object_version != read {
                tracing::info!(%key, "changed since it was read; left to its events");
                return Ok(false);
            }
            let Some((row, usage)) = reconcile(snapshot.object.as_ref(), &snapshot.usage, observed)
            else {
                return Ok(true);
            };
            match self.store.commit(user, key, &snapshot, &row, &usage).await {
                Ok(()) => {
                    self.publish(user, key, Some(&row), &usage).await?;
                    return Ok(true);
                }
                Err(error) if error.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await
                }
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::bail!("rows of {key} kept changing; run reconcile again")
    }

    /// Makes the totals row equal the sum of the live rows. True when it
    /// changed them (and announced the new totals).
    async fn fix_totals(&self, user: &str) -> anyhow::Result<bool> {
        for attempt in 0..25u32 {
            let before = self.store.snapshot(user, "").await?;
            let rows = self.rows.objects(user).await?;
            let mut usage = totals(
                rows.iter().map(|(_, row, _)| row),
                before.usage.revision + 1,
            );
            usage.by_storage_class.retain(|_, bytes| *bytes > 0);
            let mut current = before.usage.clone();
            current.by_storage_class.retain(|_, bytes| *bytes > 0);
            if (
                current.used_bytes,
                current.object_count,
                &current.by_storage_class,
            ) == (
                usage.used_bytes,
                usage.object_count,
                &usage.by_storage_class,
            ) {
                return Ok(false);
            }
            match self.rows.replace_usage(user, &before, &usage).await {
                Ok(()) => {
                    self.publish(user, &format!("users/{user}/"), None, &usage)
                        .await?;
                    return Ok(true);
                }
                Err(error) if error.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await
                }
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::bail!("totals of {user} kept changing; run reconcile again")
    }

    async fn publish(
        &self,
        user: &str,
        key: &str,
        row: Option<&ObjectRow>,
        usage: &Usage,
    ) -> anyhow::Result<()> {
        self.publisher
            .publish(&usage_changed(user, key, row, usage, None, None, None))
            .await
    }
}
