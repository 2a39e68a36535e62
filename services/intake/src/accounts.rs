//! Account operations shared by the API and the operators' tool.

use crate::{
    domain::{keys::UserId, quota::Account},
    ports::{AccountStore, StoreError},
};

/// Attempts before a quota change that keeps losing races gives up.
const MAX_ATTEMPTS: usize = 50;

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
