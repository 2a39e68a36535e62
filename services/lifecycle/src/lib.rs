//! Stowage lifecycle: tiers cold objects to Glacier classes and handles
//! restores. It keeps its own projection of every object (size, class,
//! creation, last read, restore state) from S3's events and intake's
//! `ObjectAccessed.v1`; sweeps find the objects that went cold through a
//! sparse index on the date they become due, ask the cost model whether
//! moving each pays off, and copy those that do onto themselves in the
//! target class. `RestoreRequested.v1` starts a restore; S3's
//! `Object Restore Completed` becomes `ObjectRestored.v1`.
//!
//! # Layout
//! - [`settings`]: typed configuration from `STOWAGE_*` variables.
//! - [`startup`]: wiring; [`startup::App`] runs the consumer and the sweeps.
//! - [`domain`]: policy, cost model, projection, sweep decisions.
//! - [`ports`]: what lifecycle needs from storage, S3 and the bus.
//! - [`adapters`]: DynamoDB, S3, EventBridge.
//! - [`handler`]: handles one message from lifecycle's queue.
//! - [`sweep`]: plans and runs sweeps.

pub mod adapters;
pub mod domain;
pub mod handler;
pub mod ports;
pub mod settings;
pub mod startup;
pub mod sweep;

pub use settings::Settings;
pub use startup::App;
