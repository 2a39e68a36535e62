//! Group commit of grants: the account update and grant record of grants
//! made at the same time by different users go to DynamoDB in one
//! `TransactWriteItems`, so that under load a grant costs a fraction of a
//! request.
//!
//! Each grant keeps its own all-or-nothing: its two items are in the same
//! transaction, and a transaction holds at most one grant per user. When
//! DynamoDB cancels a transaction it says which items failed their
//! condition; those grants learn of their conflict (and read the account
//! again), and the others are sent again without them, so one user's lost
//! race never fails another user's grant.

use std::collections::{HashSet, VecDeque};

use aws_sdk_dynamodb::{Client, types::TransactWriteItem};
use stowage_shared::{
    batching::send_in_batches,
    dynamo::{Cancelled, item_failure, transact_groups},
};
use tokio::sync::{mpsc, oneshot};

use crate::ports::StoreError;

/// Grants per transaction (two items each; DynamoDB allows 100 items).
pub const MAX_GRANTS_PER_TRANSACTION: usize = 16;

/// Full transactions out at once (one with room left goes only when none
/// is, see [`send_in_batches`]): more than one, so that one slow
/// transaction does not hold up every grant.
const IN_FLIGHT: usize = 2;

/// One grant's items waiting for a transaction, and where its fate goes.
#[derive(Debug)]
struct Pending {
    user: String,
    /// The account's conditional update or put, then the grant's put.
    items: [TransactWriteItem; 2],
    fate: oneshot::Sender<Result<(), StoreError>>,
}

/// Hands grants' items to the task that commits them together.
#[derive(Debug, Clone)]
pub struct GrantWrites {
    sender: mpsc::UnboundedSender<Pending>,
}

impl GrantWrites {
    /// Starts the committing task; it ends when the last clone is dropped
    /// and every grant handed to it is answered. Must be called within a
    /// Tokio runtime.
    pub fn start(client: Client) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(send_in_batches(
            receiver,
            IN_FLIGHT,
            MAX_GRANTS_PER_TRANSACTION,
            next_batch,
            move |batch| {
                let client = client.clone();
                async move { commit(&client, batch).await }
            },
        ));
        Self { sender }
    }

    /// Writes one grant's account item and grant item atomically, in a
    /// transaction shared with other users' grants.
    pub async fn write(&self, user: &str, items: [TransactWriteItem; 2]) -> Result<(), StoreError> {
        let (fate, told) = oneshot::channel();
        let pending = Pending {
            user: user.to_string(),
            items,
            fate,
        };
        if self.sender.send(pending).is_err() {
            return Err(StoreError::Other(anyhow::anyhow!(
                "grant writes are shutting down"
            )));
        }
        told.await.unwrap_or_else(|_| {
            Err(StoreError::Other(anyhow::anyhow!(
                "the grant's transaction was abandoned"
            )))
        })
    }
}

/// Takes the next transaction's grants from `waiting`: the first waiting
/// grant of each user, up to [`MAX_GRANTS_PER_TRANSACTION`]. The others
/// stay, in their order.
fn next_batch(waiting: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut users = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(waiting.len());
    for pending in waiting.drain(..) {
        if batch.len() < MAX_GRANTS_PER_TRANSACTION && users.insert(pending.user.clone()) {
            batch.push(pending);
        } else {
            rest.push_back(pending);
        }
    }
    *waiting = rest;
    batch
}

/// Commits `batch`, sending again without them while grants fail their
/// conditions, and tells each grant its fate.
async fn commit(client: &Client, batch: Vec<Pending>) {
    let attempts = batch.len();
    let groups = batch
        .into_iter()
        .map(|p| (p.fate, Vec::from(p.items)))
        .collect();
    // Each round drops at least the grant whose item failed.
    let outcomes = transact_groups(client, groups, attempts, |reason| match reason {
        None => Cancelled::Retry,
        Some(code) => Cancelled::Done(Err(item_failure(code))),
    })
    .await;
    for (fate, outcome) in outcomes {
        let _ = fate.send(outcome);
    }
}
