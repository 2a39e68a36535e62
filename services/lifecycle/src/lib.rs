//! Stowage lifecycle: will tier cold objects to Glacier classes and handle
//! restores. For now it consumes its queue (S3 object events and intake's
//! access and restore events) and logs what it sees, so its queue never
//! backs up while the tiering itself is built.
//!
//! # Layout
//! - [`settings`]: typed configuration from `STOWAGE_*` variables.
//! - [`observer`]: the queue handler.
//! - [`startup`]: wiring; [`startup::App`] runs the consumer.

pub mod observer;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::App;
