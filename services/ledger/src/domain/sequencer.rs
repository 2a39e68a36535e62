//! S3's `sequencer`, shared with the lifecycle service through
//! [`stowage_events::sequencer`].

pub use stowage_events::sequencer::Sequencer;
