//! Keys as S3 events carry them, and who owns them, shared with the
//! lifecycle service through [`stowage_events::keys`].

pub use stowage_events::keys::{candidates, is_user_id, owner};
