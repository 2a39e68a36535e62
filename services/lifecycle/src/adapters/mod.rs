//! The lifecycle service's adapters: one file per technology. AWS SDK types
//! stay here.
//!
//! - [`dynamodb`]: [`crate::ports::Projection`] and [`crate::ports::DueIndex`]
//!   on the lifecycle table.
//! - [`s3`]: [`crate::ports::Bucket`]: head, conditional copies, restores.
//! - [`eventbridge`]: [`crate::ports::LifecyclePublisher`] on the event bus.

pub mod dynamodb;
pub mod eventbridge;
pub mod s3;
