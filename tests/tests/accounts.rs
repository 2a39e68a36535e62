//! Intake's account store on the DynamoDB emulator: accounts written as
//! updates of what changed (or whole, when much changed) read back exactly
//! as written, and two processes each keeping their own copy of an account
//! never overwrite each other's writes.

use std::collections::BTreeMap;

use stowage_e2e::Stack;
use stowage_intake::{
    adapters::dynamodb::DynamoAccountStore,
    domain::{
        keys::UserId,
        quota::{Account, Reservation},
    },
    ports::{AccountStore, StoreError, Versioned},
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
    let reservation = account
        .reservations
        .entry(key)
        .or_insert_with(|| Reservation {
            max_size: 0,
            held: 0,
            lapses_at: 0,
            revision: 0,
            grants: Vec::new(),
        });
    reservation.max_size = dice.below(1 << 40);
    reservation.held = dice.below(reservation.max_size + 1);
    reservation.lapses_at = i64::try_from(dice.below(1 << 33)).expect("fits");
    reservation.revision = step;
    reservation.grants.push(format!("g{step}"));
}

/// One random change to an account: reservations added, changed or dropped
/// (sometimes nearly all at once, more than an update names), committed
/// bytes, classes and the quota override.
fn change(account: &mut Account, dice: &mut Dice, step: u64) {
    match dice.below(9) {
        0..=2 => reserve(account, dice, step),
        3 => {
            for _ in 0..70 {
                reserve(account, dice, step);
            }
        }
        4 => {
            let keys: Vec<String> = account.reservations.keys().cloned().collect();
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
                    before = store.load(&user).await.expect("account");
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
