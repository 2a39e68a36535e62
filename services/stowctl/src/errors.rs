//! Failed AWS calls explained for operators: which call, on what, why, and
//! what to do about it.

// Every AWS SDK crate re-exports the same smithy error types.
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// The AWS API a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Sqs,
    EventBridge,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Sqs => "SQS",
            Api::EventBridge => "EventBridge",
        }
    }

    fn action_prefix(self) -> &'static str {
        match self {
            Api::Sqs => "sqs",
            Api::EventBridge => "events",
        }
    }

    fn missing(self) -> &'static str {
        match self {
            Api::Sqs => "the queue does not exist: check the queue URL setting and AWS_REGION",
            Api::EventBridge => {
                "it does not exist: check STOWAGE_EVENT_BUS, the archive name and AWS_REGION"
            }
        }
    }
}

/// Explains a failed call: `call` (e.g. `StartReplay`) on `what` (e.g. "the
/// archive stowage-archive").
pub fn failed<E, R>(api: Api, call: &str, what: &str, error: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error.code().unwrap_or_default().to_string();
    let hint = if matches!(
        error,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        format!(
            "{} could not be reached: check AWS_ENDPOINT_URL, AWS_REGION and the network",
            api.name()
        )
    } else if code.contains("AccessDenied") {
        format!(
            "the credentials may not call {}:{call} there: grant it to them, or use credentials that may",
            api.action_prefix()
        )
    } else if code.contains("NonExistentQueue")
        || code.contains("QueueDoesNotExist")
        || code.contains("ResourceNotFound")
    {
        api.missing().to_string()
    } else if matches!(
        code.as_str(),
        "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch"
    ) || code.contains("ExpiredToken")
    {
        "the credentials were refused: refresh them".to_string()
    } else {
        "see the error above".to_string()
    };
    let cause = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            // The chain of causes, e.g. "dispatch failure: io error: … refused".
            let mut cause = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                cause = format!("{cause}: {inner}");
                source = inner.source();
            }
            cause
        }
    };
    anyhow::anyhow!("{call} on {what} failed ({cause}); {hint}")
}
