//! stowctl's operations, as functions that return what the commands print, so
//! that the end-to-end tests check the same tables and JSON an operator sees.
//! `main.rs` parses the command line and prints.
//!
//! # Layout
//! - [`queues`]: the consumers' queues and dead-letter queues (`queues`,
//!   `dlq peek`, `dlq redrive`).
//! - [`tier`]: the lifecycle service's sweeps (`tier plan`, `tier run`,
//!   `tier reindex`).

pub mod queues;
pub mod tier;
