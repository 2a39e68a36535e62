//! The ledger's adapters: one file per technology. AWS SDK types stay here.
//!
//! - [`dynamodb`]: [`crate::ports::LedgerStore`] on the ledger's table.
//! - [`s3`]: [`crate::ports::ObjectProbe`] with `HeadObject`.
//! - [`eventbridge`]: [`crate::ports::UsagePublisher`] on the event bus.

pub mod dynamodb;
pub mod eventbridge;
pub mod s3;
