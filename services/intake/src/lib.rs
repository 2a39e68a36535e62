//! Stowage intake: the HTTP API a frontend calls. It authenticates users,
//! reserves quota and signs S3 POST policies for uploads, and reports usage
//! from the ledger's `UsageChanged` events, which it consumes from its own
//! queue. No file byte passes through it.
//!
//! # Layout
//! - [`settings`]: typed configuration from `STOWAGE_*` variables.
//! - [`startup`]: wiring; [`startup::App`] binds its listener and runs the API
//!   and the usage projection until shutdown.
//! - [`domain`]: pure rules: user ids and object keys, quota accounting, the
//!   POST policy document.
//! - [`ports`]: what the API needs from storage, as small traits.
//! - [`adapters`]: DynamoDB store, S3 bucket and the POST policy signer.
//! - [`auth`]: bearer-token verification (JWKS of an identity provider, or an
//!   HS256 secret locally) and the admin claim.
//! - [`routes`]: the HTTP handlers; [`error`] renders problem+json.
//! - [`projection`]: applies `UsageChanged.v1` to the accounts.
//! - [`rate`]: per-user rate limiting of grant requests.
//! - [`accounts`]: account operations shared with `stowctl` (quota changes).
//! - [`http_trace`]: the server span of every request.

pub mod accounts;
pub mod adapters;
pub mod auth;
pub mod cors;
pub mod domain;
pub mod error;
pub mod http_trace;
pub mod ports;
pub mod projection;
pub mod rate;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::App;
