//! Intake's account store on the DynamoDB emulator: accounts written as
//! updates of what changed (or whole, when much changed) read back exactly
//! as written, and two processes each keeping their own copy of an account
//! never overwrite each other's writes.

use std::{collections::BTreeMap, sync::Arc};

use stowage_e2e::Stack;
use stowage_intake::{
    adapters::dynamodb::DynamoAccountStore,
    domain::{
        keys::UserId,
        quota::{Account, Reservation},
    },
    ports::{AccountStore, GrantRecord, GrantState, StoreError, Versioned},
};

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Dice(u64);

impl Dice {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Adds or changes the reservation of one of a few hundred keys.
fn reserve(account: &mut Account, dice: &mut Dice, step: u64) {
    let key = format!("users/u/{} file #{}", dice.below(90), dice.below(3));
    let reservation = Arc::make_mut(account.reservations.entry(key.into()).or_insert_with(|| {
        Arc::new(Reservation {
            max_size: 0,
            held: 0,
            lapses_at: 0,
            revision: 0,
            grants: Vec::new(),
        })
    }));
    reservation.max_size = dice.below(1 << 40);
    reservation.held = dice.below(reservation.max_size + 1);
    reservation.lapses_at = i64::try_from(dice.below(1 << 33)).expect("fits");
    reservation.revision = step;
    reservation.grants.push(format!("g{step}"));
}

/// One random change to an account: reservations added, changed or dropped
/// (sometimes nearly all at once, more than an update names), committed
/// bytes, classes and missing revisions, and the quota override.
fn change(account: &mut Account, dice: &mut Dice, step: u64) {
    match dice.below(9) {
        0..=2 => reserve(account, dice, step),
        3 => {
            for _ in 0..70 {
                reserve(account, dice, step);
            }
        }
        4 => {
            let keys: Vec<Arc<str>> = account.reservations.keys().cloned().collect();
            for key in keys {
                if dice.below(10) < 9 {
                    account.reservations.remove(&key);
                }
            }
        }
        5 => {
            if let Some(key) = account.reservations.keys().next().cloned() {
                account.reservations.remove(&key);
            }
        }
        6 => {
            account.used_bytes = dice.below(1 << 45);
            account.object_count = dice.below(10_000);
            account.revision = step;
            account.by_storage_class = BTreeMap::from([
                ("STANDARD".to_string(), dice.below(1 << 40)),
                ("GLACIER".to_string(), dice.below(3)),
            ]);
            if dice.below(2) == 0 {
                account.by_storage_class.remove("GLACIER");
            }
            // Reports skipped on the way to this one, or none.
            account.missing = (0..dice.below(3)).map(|i| step * 10 + i).collect();
        }
        7 => account.quota_override = Some(dice.below(1 << 50)),
        _ => account.quota_override = None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_written_by_two_processes_read_back_exactly_as_written() {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let table = stack.get("STOWAGE_INTAKE_TABLE");
    let stores = [
        DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table),
        DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table),
    ];
    // A third process only reads, so that the writers' copies stay theirs.
    let reader = DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table);
    let user = UserId::parse("u").expect("valid id");
    let mut dice = Dice(0x5eed_1234_abcd_0001);
    let mut written = Account::new();
    let mut conflicts = 0;
    let mut large_changes = 0;
    for step in 1..=300 {
        let store = &stores[usize::from(dice.below(2) == 0)];
        // Each process starts from its own copy, which is behind whenever
        // the other process wrote last.
        let mut before = store.load_recent(&user).await.expect("account");
        let mut after = before.value.clone();
        change(&mut after, &mut dice, step);
        loop {
            match store.save(&user, &before, after.clone(), None).await {
                Ok(()) => break,
                Err(StoreError::Conflict) => {
                    conflicts += 1;
                    before = std::sync::Arc::new(store.load(&user).await.expect("account"));
                    after = before.value.clone();
                    change(&mut after, &mut dice, step);
                }
                Err(error) => panic!("step {step}: {error:#}"),
            }
        }
        let changed = after
            .reservations
            .iter()
            .filter(|(k, r)| before.value.reservations.get(*k) != Some(*r))
            .count()
            + before
                .value
                .reservations
                .keys()
                .filter(|k| !after.reservations.contains_key(*k))
                .count();
        if changed > 64 {
            large_changes += 1;
        }
        written = after;
        let stored: Versioned<Account> = reader.load(&user).await.expect("account");
        assert_eq!(stored.value, written, "step {step}");
        assert_eq!(stored.version, Some(before.version.map_or(1, |v| v + 1)));
    }
    assert!(written.reservations.len() > 1, "{written:?}");
    // Both ways of writing and the lost race were exercised.
    assert!(conflicts > 0, "no write ever started from a stale copy");
    assert!(
        large_changes > 0,
        "no write changed most of the reservations"
    );
}

/// A new account with one reservation for `grant`, and the grant.
fn granted(user: &UserId, n: u64) -> (Account, GrantRecord) {
    let grant = GrantRecord {
        grant_id: uuid::Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        key: format!("users/{user}/f{n}"),
        max_size: 100 + n,
        content_type: "text/plain".to_string(),
        state: GrantState::Initiated,
        size: None,
        created_at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time"),
        expires_at: time::OffsetDateTime::from_unix_timestamp(1_800_000_900).expect("time"),
    };
    let mut account = Account::new();
    account.reservations.insert(
        grant.key.as_str().into(),
        Arc::new(Reservation {
            max_size: grant.max_size,
            held: grant.max_size,
            lapses_at: 1_800_001_000,
            revision: 0,
            grants: vec![grant.grant_id.clone()],
        }),
    );
    (account, grant)
}

/// A store whose DynamoDB requests `counter` counts.
async fn counted_store(table: &str, counter: &stowage_e2e::RequestCounter) -> DynamoAccountStore {
    let sdk = stowage_shared::aws::load().await;
    DynamoAccountStore::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        table,
    )
}

/// Grants of different users made at the same time are committed together,
/// each with its account, and every one of them is stored.
#[tokio::test(flavor = "current_thread")]
async fn grants_of_different_users_at_the_same_time_share_transactions() {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let table = stack.get("STOWAGE_INTAKE_TABLE");
    let counter = stowage_e2e::RequestCounter::default();
    let store = counted_store(table, &counter).await;
    let users: Vec<UserId> = (0..20)
        .map(|i| UserId::parse(&format!("user{i}")).expect("valid id"))
        .collect();
    let writes: Vec<(Account, GrantRecord)> =
        users.iter().zip(0..).map(|(u, n)| granted(u, n)).collect();
    let new = Versioned {
        value: Account::new(),
        version: None,
    };
    // Every caller hands over its grant before any transaction is sent.
    let results = futures::future::join_all(
        users
            .iter()
            .zip(&writes)
            .map(|(user, (account, grant))| store.save(user, &new, account.clone(), Some(grant))),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        counter.get(),
        20usize.div_ceil(stowage_intake::adapters::grant_writes::MAX_GRANTS_PER_TRANSACTION),
        "20 grants in as few transactions as fit them"
    );

    let reader = DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table);
    for (user, (account, grant)) in users.iter().zip(&writes) {
        let stored = reader.load(user).await.expect("account");
        assert_eq!(&stored.value, account, "{user}");
        assert_eq!(stored.version, Some(1));
        let record = reader.grant(&grant.grant_id).await.expect("grant");
        assert_eq!(record.as_ref(), Some(grant), "{user}");
    }
}

/// In a shared transaction, a grant whose account changed meanwhile fails
/// alone: the other users' grants are committed, and of two grants of one
/// user made from the same copy of the account exactly one is.
#[tokio::test(flavor = "current_thread")]
async fn a_grant_that_lost_its_race_fails_alone() {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let table = stack.get("STOWAGE_INTAKE_TABLE");
    let store = DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table);
    let users: Vec<UserId> = (0..10)
        .map(|i| UserId::parse(&format!("racer{i}")).expect("valid id"))
        .collect();
    let mut before = Vec::new();
    for user in &users {
        let new = Versioned {
            value: Account::new(),
            version: None,
        };
        store
            .save(user, &new, Account::new(), None)
            .await
            .expect("account created");
        before.push(store.load(user).await.expect("account"));
    }
    // The last user's account moves on behind the caller's copy.
    let moved = Account {
        used_bytes: 7,
        ..Account::new()
    };
    store
        .save(&users[9], &before[9], moved.clone(), None)
        .await
        .expect("account moved");

    let writes: Vec<(Account, GrantRecord)> =
        users.iter().zip(0..).map(|(u, n)| granted(u, n)).collect();
    let twice = granted(&users[0], 99);
    let saves = users
        .iter()
        .zip(&before)
        .zip(&writes)
        .map(|((user, before), (account, grant))| (user, before, account, grant))
        .chain(std::iter::once((&users[0], &before[0], &twice.0, &twice.1)));
    let results = futures::future::join_all(saves.map(|(user, before, account, grant)| {
        store.save(user, before, account.clone(), Some(grant))
    }))
    .await;

    for (i, result) in results[1..9].iter().enumerate() {
        assert!(result.is_ok(), "racer{}: {result:?}", i + 1);
    }
    assert!(
        matches!(results[9], Err(StoreError::Conflict)),
        "{:?}",
        results[9]
    );
    let first_user = [&results[0], &results[10]];
    assert_eq!(
        first_user.iter().filter(|r| r.is_ok()).count(),
        1,
        "{first_user:?}"
    );
    assert!(
        first_user
            .iter()
            .any(|r| matches!(r, Err(StoreError::Conflict))),
        "{first_user:?}"
    );

    let reader = DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table);
    for (i, user) in users.iter().enumerate().skip(1).take(8) {
        assert_eq!(reader.load(user).await.expect("account").value, writes[i].0);
        assert!(
            reader
                .grant(&writes[i].1.grant_id)
                .await
                .expect("grant")
                .is_some()
        );
    }
    assert_eq!(reader.load(&users[9]).await.expect("account").value, moved);
    assert_eq!(
        reader.grant(&writes[9].1.grant_id).await.expect("grant"),
        None
    );
    let (kept, lost) = if results[0].is_ok() {
        (&writes[0].1, &twice.1)
    } else {
        (&twice.1, &writes[0].1)
    };
    assert!(reader.grant(&kept.grant_id).await.expect("grant").is_some());
    assert_eq!(reader.grant(&lost.grant_id).await.expect("grant"), None);
}

/// A grant whose write was made but whose answer was lost is reserved and
/// recorded once: the write sent again finds it made, and the account read
/// again holds it.
#[tokio::test(flavor = "current_thread")]
async fn a_grant_whose_answer_was_lost_is_reserved_once() {
    use stowage_intake::accounts::{GrantTerms, reserve};

    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let table = stack.get("STOWAGE_INTAKE_TABLE");
    // The answer to the first `TransactWriteItems` is lost once DynamoDB has
    // made it: the caller sees a server error, and the SDK sends the
    // transaction again.
    let losing = stowage_e2e::StatusRewrite::new(
        |request| {
            request.headers().get("x-amz-target") == Some("DynamoDB_20120810.TransactWriteItems")
        },
        500,
        Some(1),
    );
    let store = DynamoAccountStore::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(losing.clone())
                .build(),
        ),
        table,
    );
    let user = UserId::parse("unanswered").expect("valid id");
    let (_, grant) = granted(&user, 1);
    let terms = GrantTerms {
        default_quota: 1 << 30,
        max_outstanding: 10,
        lapses_at: time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    };

    let reserved = reserve(&store, &user, &grant, &terms).await;
    assert!(matches!(reserved, Ok(Ok(()))), "{reserved:?}");
    assert_eq!(losing.rewritten(), 1, "the first answer was lost");

    let reader = DynamoAccountStore::new(stowage_shared::aws::dynamodb(&sdk), table);
    let stored = reader.load(&user).await.expect("account");
    assert_eq!(stored.version, Some(1), "written once");
    let reservation = &stored.value.reservations[grant.key.as_str()];
    assert_eq!(
        (reservation.held, &reservation.grants[..]),
        (grant.max_size, &[grant.grant_id.clone()][..])
    );
    let record = reader.grant(&grant.grant_id).await.expect("grant");
    assert_eq!(record.as_ref(), Some(&grant));
}
