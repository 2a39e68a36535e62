//! Intake's adapters: one file per technology. AWS SDK types stay here.
//!
//! - [`dynamodb`]: [`crate::ports::AccountStore`] on intake's table.
//! - [`post_signer`]: signs upload policies with SigV4.
//! - [`s3`]: [`crate::ports::ObjectStore`] on the bucket.

pub mod dynamodb;
pub mod post_signer;
pub mod s3;
