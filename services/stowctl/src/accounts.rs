//! `stowctl usage` and `stowctl quota set`: a user's account as intake keeps
//! it (quota, stored bytes as the ledger last reported them, reservations,
//! cost), read and changed in intake's table with the same conditional
//! writes the API uses.

use std::collections::BTreeMap;

use serde::Serialize;
use stowage_intake::{
    domain::{keys::UserId, quota::Account},
    ports::AccountStore,
};
use stowage_shared::pricing::PriceTable;

/// One user's usage, as `GET /v1/usage` reports it to the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub user_id: String,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub quota_bytes: u64,
    /// True when an administrator set this user's quota; false when the
    /// deployment's default applies.
    pub quota_is_own: bool,
    pub object_count: u64,
    /// Keys whose outstanding upload grants still hold bytes.
    pub reserved_keys: usize,
    pub by_storage_class: BTreeMap<String, u64>,
    pub estimated_monthly_cost_usd: f64,
    /// The ledger revision the stored figures reflect.
    pub revision: u64,
}

impl UsageReport {
    pub fn new(
        user: &UserId,
        account: &Account,
        default_quota: u64,
        prices: &PriceTable,
        now: i64,
    ) -> Self {
        Self {
            user_id: user.to_string(),
            used_bytes: account.used_bytes,
            reserved_bytes: account.reserved_bytes(now),
            quota_bytes: account.quota(default_quota),
            quota_is_own: account.quota_override.is_some(),
            object_count: account.object_count,
            reserved_keys: account
                .reservations
                .values()
                .filter(|r| r.lapses_at > now && account.held(r) > 0)
                .count(),
            by_storage_class: account.by_storage_class.clone(),
            estimated_monthly_cost_usd: prices.monthly_total(
                account
                    .by_storage_class
                    .iter()
                    .map(|(class, bytes)| (class.as_str(), *bytes)),
            ),
            revision: account.revision,
        }
    }

    /// The report as a two-column table.
    pub fn table(&self) -> comfy_table::Table {
        let mut table = comfy_table::Table::new();
        table.set_header(["user", &self.user_id]);
        let quota = format!(
            "{} ({})",
            self.quota_bytes,
            if self.quota_is_own { "own" } else { "default" }
        );
        table.add_row(["used bytes", &self.used_bytes.to_string()]);
        table.add_row(["reserved bytes", &self.reserved_bytes.to_string()]);
        table.add_row(["quota bytes", &quota]);
        table.add_row(["objects", &self.object_count.to_string()]);
        table.add_row(["keys reserved", &self.reserved_keys.to_string()]);
        for (class, bytes) in &self.by_storage_class {
            table.add_row([format!("bytes in {class}"), bytes.to_string()]);
        }
        table.add_row([
            "estimated monthly cost (USD)".to_string(),
            format!("{:.6}", self.estimated_monthly_cost_usd),
        ]);
        table.add_row(["ledger revision", &self.revision.to_string()]);
        table
    }
}

/// Reads `user`'s account.
pub async fn usage(
    store: &dyn AccountStore,
    user: &UserId,
    default_quota: u64,
    prices: &PriceTable,
) -> anyhow::Result<UsageReport> {
    let account = store.load(user).await?.value;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(UsageReport::new(user, &account, default_quota, prices, now))
}
