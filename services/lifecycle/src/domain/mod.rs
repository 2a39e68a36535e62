//! The lifecycle service's rules, free of I/O and of AWS types.
//!
//! - [`policy`]: when an object is cold and where it goes, per deployment and
//!   per user.
//! - [`cost`]: whether a transition pays off within the minimum storage
//!   duration of its class.
//! - [`projection`]: what the service knows of each object, and how each
//!   event changes it.
//! - [`plan`]: what a sweep does with one due object, and why.

pub mod cost;
pub mod plan;
pub mod policy;
pub mod projection;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
