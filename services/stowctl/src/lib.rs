//! stowctl's operations, as functions that return what the commands print, so
//! that the end-to-end tests check the same tables and JSON an operator sees.
//! `main.rs` parses the command line and prints.
//!
//! # Layout
//! - [`accounts`]: a user's usage and quota (`usage`, `quota set`).
//! - [`queues`]: the consumers' queues and dead-letter queues (`queues`,
//!   `dlq peek`, `dlq redrive`).
//! - [`replay`]: events of a time window sent again from the bus's archive.
//! - [`errors`]: failed AWS calls explained.

pub mod accounts;
pub mod errors;
pub mod queues;
pub mod replay;
