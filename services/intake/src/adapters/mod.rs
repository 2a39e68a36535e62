//! Intake's adapters: one file per technology. AWS SDK types stay here.
//!
//! - [`dynamodb`]: [`crate::ports::AccountStore`] on intake's table.
//! - [`grant_writes`]: commits concurrent grants in shared transactions.
//! - [`post_signer`]: signs upload policies with SigV4.
//! - [`s3`]: [`crate::ports::ObjectStore`] on the bucket.

pub mod dynamodb;
pub mod grant_writes;
pub mod post_signer;
pub mod s3;
