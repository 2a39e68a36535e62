//! The failures a service's storage adapters report, in terms the domain
//! can act on.

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost a race; read again and retry.
    #[error("the record changed concurrently")]
    Conflict,
    /// The backend asked us to slow down.
    #[error("the store is throttling requests")]
    Throttled(#[source] anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// True when repeating the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict | Self::Throttled(_))
    }

    /// The same failure, for each of several operations that failed
    /// together (one request carried them all).
    pub fn again(&self) -> Self {
        match self {
            Self::Conflict => Self::Conflict,
            Self::Throttled(source) => Self::Throttled(anyhow::anyhow!("{source:#}")),
            Self::Other(source) => Self::Other(anyhow::anyhow!("{source:#}")),
        }
    }
}
