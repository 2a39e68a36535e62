//! Stowage ledger: the truth of who stores what. It turns S3's
//! `Object Created` / `Object Deleted` events into exact per-user usage,
//! idempotent under duplicates and reordering, and publishes
//! `UsageChanged.v1` after every change.
//!
//! # Layout
//! - [`settings`]: typed configuration from `STOWAGE_*` variables.
//! - [`startup`]: wiring; [`startup::App`] runs the queue consumer.
//! - [`domain`]: sequencer order, key readings, how an event changes usage.
//! - [`ports`]: what the ledger needs from storage and S3.
//! - [`adapters`]: DynamoDB and S3.
//! - [`ledger`]: handles one message from the ledger's queue.
//! - [`reconcile`]: compares the ledger with the bucket and corrects it.

pub mod adapters;
pub mod domain;
pub mod ledger;
pub mod ports;
pub mod reconcile;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::App;
