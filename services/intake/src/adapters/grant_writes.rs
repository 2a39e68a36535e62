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
use std::sync::Arc;

use aws_sdk_dynamodb::{Client, types::TransactWriteItem};
use stowage_shared::dynamo::{Cancelled, item_failure, transact_groups};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ports::StoreError;

/// Grants per transaction (two items each; DynamoDB allows 100 items).
pub const MAX_GRANTS_PER_TRANSACTION: usize = 16;

/// Transactions out at once; grants arriving meanwhile share the next ones.
/// Two rather than one, so that one slow transaction does not hold up every
/// grant; more made transactions smaller and the grant path dearer (1.6×
/// the requests per grant with four under 64 concurrent clients).
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
        tokio::spawn(run(client, receiver));
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

async fn run(client: Client, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Grants that met another grant of the same user in a transaction; they
    // go first into the next one, in their order.
    let mut deferred: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        // Waiting for a free slot first lets grants gather meanwhile.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match deferred.pop_front() {
            Some(pending) => pending,
            None if open => match receiver.recv().await {
                Some(pending) => pending,
                None => return,
            },
            None => return,
        };
        let mut users = HashSet::from([first.user.clone()]);
        let mut batch = vec![first];
        let mut later = VecDeque::new();
        while batch.len() < MAX_GRANTS_PER_TRANSACTION {
            let next = match deferred.pop_front() {
                Some(pending) => pending,
                None if open => match receiver.try_recv() {
                    Ok(pending) => pending,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
                None => break,
            };
            if users.insert(next.user.clone()) {
                batch.push(next);
            } else {
                later.push_back(next);
            }
        }
        later.extend(deferred.drain(..));
        deferred = later;
        let client = client.clone();
        tokio::spawn(async move {
            commit(&client, batch).await;
            drop(slot);
        });
    }
}

/// Commits `batch`, sending again without them while grants fail their
/// conditions, and tells each grant its fate.
async fn commit(client: &Client, batch: Vec<Pending>) {
    let attempts = batch.len();
    let groups = batch
        .into_iter()
        .map(|p| (p.fate, p.items.to_vec()))
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
