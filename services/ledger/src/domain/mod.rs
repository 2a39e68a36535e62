//! The ledger's rules, free of I/O and of AWS types.
//!
//! - [`sequencer`]: the order of S3 events of one key.
//! - [`keys`]: who owns a key, and the ways an event may have encoded it.
//! - [`usage`]: object rows, usage totals, and how one event changes them.

pub mod keys;
pub mod sequencer;
pub mod usage;
