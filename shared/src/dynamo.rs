//! Small helpers for reading and writing DynamoDB items, so adapters convert
//! at the edge without repeating the attribute plumbing.

use std::collections::HashMap;

use crate::store::StoreError;
use aws_sdk_dynamodb::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::AttributeValue,
};

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Every item `query` finds, page after page.
pub async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<Item>, StoreError> {
    query
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("Query", e))
}

/// Every item of partition `pk` of `table` whose sort key `sk` starts with
/// `sk_prefix`, strongly consistent, page after page.
pub async fn query_partition(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: AttributeValue,
    sk_prefix: &str,
) -> Result<Vec<Item>, StoreError> {
    query_all(
        client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", pk)
            .expression_attribute_values(":prefix", s(sk_prefix))
            .consistent_read(true),
    )
    .await
}

/// Every item `scan` finds, page after page.
pub async fn scan_all(
    scan: aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
) -> Result<Vec<Item>, StoreError> {
    scan.into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("Scan", e))
}

/// A string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Why an item could not be read.
#[derive(Debug, thiserror::Error)]
#[error("attribute {name}: {problem}")]
pub struct AttributeError {
    pub name: String,
    pub problem: &'static str,
}

/// An item that cannot be read is a store failure like any other.
impl From<AttributeError> for StoreError {
    fn from(error: AttributeError) -> Self {
        StoreError::Other(error.into())
    }
}

fn error(name: &str, problem: &'static str) -> AttributeError {
    AttributeError {
        name: name.to_string(),
        problem,
    }
}

/// An optional number attribute.
pub fn get_num<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, AttributeError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| error(name, "number out of range")),
        Some(_) => Err(error(name, "not a number")),
    }
}

/// A required number attribute.
pub fn req_num<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, AttributeError> {
    get_num(item, name)?.ok_or_else(|| error(name, "missing"))
}

/// An optional string attribute.
pub fn get_str<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, AttributeError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(error(name, "not a string")),
    }
}

/// A required string attribute.
pub fn req_str<'a>(item: &'a Item, name: &str) -> Result<&'a str, AttributeError> {
    get_str(item, name)?.ok_or_else(|| error(name, "missing"))
}

/// A list of strings (missing means empty).
pub fn get_str_list(item: &Item, name: &str) -> Result<Vec<String>, AttributeError> {
    match item.get(name) {
        None => Ok(Vec::new()),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| {
                v.as_s()
                    .cloned()
                    .map_err(|_| error(name, "not a list of strings"))
            })
            .collect(),
        Some(_) => Err(error(name, "not a list")),
    }
}

/// A list of strings as an attribute.
pub fn str_list<S: AsRef<str>>(values: &[S]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.as_ref())).collect())
}

/// Classifies a failed call; `operation` names it in the message.
pub fn classify<E, R>(operation: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string);
    match code.as_deref() {
        Some("ConditionalCheckFailedException" | "TransactionConflictException") => {
            StoreError::Conflict
        }
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException"
            | "SlowDown",
        ) => StoreError::Throttled(anyhow::anyhow!("{operation}: {}", DisplayErrorContext(err))),
        _ => StoreError::Other(anyhow::anyhow!("{operation}: {}", DisplayErrorContext(err))),
    }
}

/// Why a cancelled `TransactWriteItems` failed, item by item, in the
/// request's order: `None` for an item that was fine (it failed only
/// because another did), the reason's code otherwise. `None` when the
/// error is not a cancellation naming each of the `items` items.
pub fn cancellation_reasons(
    err: &SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
    items: usize,
) -> Option<Vec<Option<String>>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    else {
        return None;
    };
    let reasons = cancelled.cancellation_reasons();
    (reasons.len() == items).then(|| {
        reasons
            .iter()
            .map(|r| r.code().filter(|c| *c != "None").map(str::to_string))
            .collect()
    })
}

/// The first reason among each group's items, for groups of `sizes` items
/// laid end to end in `reasons` (as [`cancellation_reasons`] gives them).
/// Every group reads its own items only, whichever of them failed.
fn first_reason_per_group(
    reasons: Vec<Option<String>>,
    sizes: impl IntoIterator<Item = usize>,
) -> Vec<Option<String>> {
    let mut reasons = reasons.into_iter();
    sizes
        .into_iter()
        .map(|size| {
            reasons
                .by_ref()
                .take(size)
                .fold(None, |first, reason| first.or(reason))
        })
        .collect()
}

/// What becomes of one group of items when DynamoDB cancels the
/// transaction that carried it.
#[derive(Debug)]
pub enum Cancelled {
    /// Send it again, without the groups that are done.
    Retry,
    /// Its outcome is known.
    Done(Result<(), StoreError>),
}

/// Writes groups of items (each group one operation's items, all or none)
/// in one `TransactWriteItems`. When DynamoDB cancels it, `judge` decides
/// each group's fate from the first reason among its items (`None` when its
/// items were fine and only others failed); the groups to retry are sent
/// again, for at most `attempts` transactions in all, after which those
/// left are conflicts. Any other failure is every group's. One outcome per
/// group, in no particular order.
pub async fn transact_groups<T>(
    client: &aws_sdk_dynamodb::Client,
    mut groups: Vec<(T, Vec<aws_sdk_dynamodb::types::TransactWriteItem>)>,
    attempts: usize,
    judge: impl Fn(Option<&str>) -> Cancelled,
) -> Vec<(T, Result<(), StoreError>)> {
    let mut done = Vec::with_capacity(groups.len());
    for _ in 0..attempts {
        if groups.is_empty() {
            break;
        }
        let items: Vec<_> = groups.iter().flat_map(|(_, items)| items.clone()).collect();
        let count = items.len();
        let error = match client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => {
                done.extend(groups.into_iter().map(|(group, _)| (group, Ok(()))));
                return done;
            }
            Err(error) => error,
        };
        let Some(reasons) = cancellation_reasons(&error, count) else {
            let error = classify_transaction(error);
            done.extend(
                groups
                    .into_iter()
                    .map(|(group, _)| (group, Err(error.again()))),
            );
            return done;
        };
        let firsts = first_reason_per_group(reasons, groups.iter().map(|(_, items)| items.len()));
        let mut again = Vec::new();
        for ((group, items), first) in groups.into_iter().zip(firsts) {
            match judge(first.as_deref()) {
                Cancelled::Retry => again.push((group, items)),
                Cancelled::Done(outcome) => done.push((group, outcome)),
            }
        }
        groups = again;
    }
    done.extend(
        groups
            .into_iter()
            .map(|(group, _)| (group, Err(StoreError::Conflict))),
    );
    done
}

/// What one item's cancellation reason means for the operation it belongs
/// to: a failed condition or a concurrent transaction is a conflict,
/// throttling is throttling.
pub fn item_failure(code: &str) -> StoreError {
    match code {
        "ConditionalCheckFailed" | "TransactionConflict" => StoreError::Conflict,
        "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded" => {
            StoreError::Throttled(anyhow::anyhow!("TransactWriteItems: {code}"))
        }
        _ => StoreError::Other(anyhow::anyhow!(
            "TransactWriteItems refused an item: {code}"
        )),
    }
}

/// Classifies a failed `TransactWriteItems`: a transaction cancelled because a
/// condition failed or another transaction interfered is a conflict.
pub fn classify_transaction(
    err: SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> StoreError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let conflict = cancelled.cancellation_reasons().iter().any(|r| {
            matches!(
                r.code(),
                Some("ConditionalCheckFailed" | "TransactionConflict")
            )
        });
        if conflict {
            return StoreError::Conflict;
        }
    }
    classify("TransactWriteItems", err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[Option<&str>]) -> Vec<Option<String>> {
        codes.iter().map(|c| c.map(str::to_string)).collect()
    }

    #[test]
    fn each_group_is_judged_on_its_own_items() {
        // Three groups of two items: the first fails on its first item, the
        // second on its second, the third not at all.
        let firsts = first_reason_per_group(
            reasons(&[
                Some("ConditionalCheckFailed"),
                None,
                None,
                Some("ThrottlingError"),
                None,
                None,
            ]),
            [2, 2, 2],
        );
        assert_eq!(
            firsts,
            reasons(&[
                Some("ConditionalCheckFailed"),
                Some("ThrottlingError"),
                None
            ])
        );
    }

    #[test]
    fn a_group_takes_the_first_of_several_reasons() {
        let firsts = first_reason_per_group(
            reasons(&[
                None,
                Some("ValidationError"),
                Some("ConditionalCheckFailed"),
                None,
            ]),
            [3, 1],
        );
        assert_eq!(firsts, reasons(&[Some("ValidationError"), None]));
    }
}
