//! Account operations shared by the API and the operators' tool.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::{
    domain::{
        keys::UserId,
        quota::{Account, Refusal, ReservationRequest},
    },
    ports::{AccountStore, GrantRecord, StoreError},
};

/// Attempts before a quota change that keeps losing races gives up.
const MAX_ATTEMPTS: usize = 50;

/// Concurrent grants for one user race on the account's version; a loser
/// reads again and retries this many times before giving up.
const MAX_RESERVE_ATTEMPTS: usize = 200;

/// What one grant is held to: the account's limits, and when its
/// reservation lapses.
#[derive(Debug, Clone, Copy)]
pub struct GrantTerms {
    /// The quota of a user without one of their own.
    pub default_quota: u64,
    /// Outstanding grants a user may hold.
    pub max_outstanding: usize,
    /// Unix time the grant's reservation lapses (its expiry plus the
    /// settle window).
    pub lapses_at: i64,
}

/// Reserves `grant`'s size against `user`'s quota and records the grant, in
/// one conditional write. `Ok(Err(_))` is a refusal.
///
/// The first attempt works on the account as this process last knew it,
/// which saves a read; if the store has moved on the write fails and the
/// account is read again, and a refusal is only given on an account read
/// from the store. A write that failed may still have been made (its answer
/// lost to a timeout, or the SDK's retries running out after DynamoDB made
/// it): when the account read again holds the grant, which only that write
/// can have put there, the grant is reserved and recorded.
pub async fn reserve(
    store: &dyn AccountStore,
    user: &UserId,
    grant: &GrantRecord,
    terms: &GrantTerms,
) -> Result<Result<(), Refusal>, StoreError> {
    let request = ReservationRequest {
        grant_id: &grant.grant_id,
        key: &grant.key,
        size: grant.max_size,
        lapses_at: terms.lapses_at,
    };
    let mut stored = store.load_recent(user).await?;
    let mut read = false;
    let mut pauses = crate::routes::conflict_pauses();
    for _ in 0..MAX_RESERVE_ATTEMPTS {
        let mut account = stored.value.clone();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut failed = None;
        if let Err(refusal) =
            account.reserve(&request, now, terms.default_quota, terms.max_outstanding)
        {
            if read {
                return Ok(Err(refusal));
            }
        } else {
            match store.save(user, &stored, account, Some(grant)).await {
                Ok(()) => return Ok(Ok(())),
                Err(error) if error.is_retryable() => {
                    if let Some(pause) = pauses.next() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(error) => failed = Some(error),
            }
        }
        stored = Arc::new(store.load(user).await?);
        read = true;
        if stored.value.holds_grant(&grant.key, &grant.grant_id) {
            return Ok(Ok(()));
        }
        if let Some(error) = failed {
            return Err(error);
        }
    }
    Err(StoreError::Conflict)
}

/// Sets `user`'s own quota with a version-conditioned write, retrying (with
/// jittered backoff) while concurrent grants or usage updates change the
/// account in between. Returns the account as written.
pub async fn set_quota(
    store: &dyn AccountStore,
    user: &UserId,
    quota: u64,
) -> Result<Account, StoreError> {
    let mut pauses = crate::routes::conflict_pauses();
    for _ in 0..MAX_ATTEMPTS {
        let stored = store.load(user).await?;
        let mut account = stored.value.clone();
        account.quota_override = Some(quota);
        match store.save(user, &stored, account.clone(), None).await {
            Ok(()) => return Ok(account),
            Err(error) if error.is_retryable() => {
                if let Some(pause) = pauses.next() {
                    tokio::time::sleep(pause).await;
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Conflict)
}
