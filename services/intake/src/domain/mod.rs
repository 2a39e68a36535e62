//! Intake's rules, free of I/O and of AWS types.
//!
//! - [`keys`]: user ids, user paths and the object keys they map to.
//! - [`quota`]: an account's committed bytes, reservations and the quota rule.
//! - [`policy`]: the S3 POST policy document of an upload grant.
//! - [`download`]: how downloads are presented (attachment, safe type).

pub mod download;
pub mod keys;
pub mod policy;
pub mod quota;
