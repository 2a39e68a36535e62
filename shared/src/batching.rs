//! Group commit: items handed over by concurrent callers go to AWS together,
//! in shared requests, so that under load an item costs a fraction of a
//! request while a caller alone is still sent at once.

use std::{collections::VecDeque, future::Future};

use tokio::{sync::mpsc, task::JoinSet};

/// Sends the items arriving on `receiver` in shared requests, until the
/// channel is closed and every item is sent.
///
/// `take` takes the next request's items from those waiting (in the order
/// they came): at least one, at most `full`. A request of `full` items goes
/// as soon as fewer than `in_flight` are out; one with room left only when
/// none is out (or the channel is closed), so that under load items gather
/// while a request is out instead of each going alone. Items of a request
/// not worth sending yet go back in front of the others. `send` makes one
/// request and tells its items' callers their fate.
pub async fn send_in_batches<T, F>(
    mut receiver: mpsc::UnboundedReceiver<T>,
    in_flight: usize,
    full: usize,
    mut take: impl FnMut(&mut VecDeque<T>) -> Vec<T>,
    send: impl Fn(Vec<T>) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let mut out = JoinSet::new();
    let mut waiting: VecDeque<T> = VecDeque::new();
    let mut open = true;
    loop {
        while open {
            match receiver.try_recv() {
                Ok(item) => waiting.push_back(item),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let may_go = |len: usize, out: &JoinSet<()>| len >= full || out.is_empty() || !open;
        // Fewer waiting items than a full request holds can only fill one
        // with room left.
        if !waiting.is_empty() && out.len() < in_flight.max(1) && may_go(waiting.len(), &out) {
            let batch = take(&mut waiting);
            if may_go(batch.len(), &out) {
                out.spawn(send(batch));
                continue;
            }
            for item in batch.into_iter().rev() {
                waiting.push_front(item);
            }
        }
        if !open && waiting.is_empty() && out.is_empty() {
            return;
        }
        tokio::select! {
            item = receiver.recv(), if open => match item {
                Some(item) => waiting.push_back(item),
                None => open = false,
            },
            Some(_) = out.join_next(), if !out.is_empty() => {}
        }
    }
}

/// The first `full` waiting items (or all of them): a [`send_in_batches`]
/// `take` for requests that hold any items alike.
pub fn first<T>(full: usize) -> impl FnMut(&mut VecDeque<T>) -> Vec<T> {
    move |waiting| {
        let count = waiting.len().min(full);
        waiting.drain(..count).collect()
    }
}
