//! Runtime plumbing shared by the Stowage services. No domain logic lives
//! here: only how a service reaches AWS, logs, publishes events, consumes its
//! queue and stops, and the S3 price table the services estimate costs with.
//!
//! # Layout
//! - [`aws`]: the SDK configuration and clients, honouring `AWS_ENDPOINT_URL`.
//! - [`telemetry`]: logs, OTLP export of traces and metrics, and the trace
//!   context events carry from producer to consumer.
//! - [`publisher`]: puts Stowage events on the event bus.
//! - [`batching`]: sends what concurrent callers hand over in shared
//!   requests.
//! - [`dynamo`]: DynamoDB item and error helpers.
//! - [`consumer`]: the SQS consumer loop (long polling, batch deletes,
//!   backoff, workers, graceful shutdown).
//! - [`store`]: the storage failures adapters report.
//! - [`pricing`]: S3 storage prices per class.
//! - [`shutdown`]: a cancellation token tripped by SIGINT or SIGTERM.

pub mod aws;
pub mod batching;
pub mod consumer;
pub mod dynamo;
pub mod pricing;
pub mod publisher;
pub mod shutdown;
pub mod store;
pub mod telemetry;
