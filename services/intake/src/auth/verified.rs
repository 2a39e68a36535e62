//! Tokens that passed verification, so that a client's next requests with
//! the same token skip the signature check: an RS256 check costs tens of
//! microseconds, an ES256 one more, and a frontend sends one token with
//! every request until it expires.
//!
//! An entry is found by the SHA-256 digest of the whole token, so any other
//! token, one byte apart or not, is verified in full. It holds the caller
//! the token named and is used only until the token's `exp` (without the
//! leeway verification allows), at most [`MAX_AGE_SECONDS`] after it was
//! verified, and no longer than the key that verified it is held without
//! being fetched again, so a key the identity provider withdraws stops
//! counting as it would without this. Tokens that fail verification are
//! never kept.

use std::{collections::HashMap, sync::Mutex};

use sha2::{Digest, Sha256};

use super::Caller;

/// Longest an entry is used, in seconds.
pub const MAX_AGE_SECONDS: i64 = 300;

/// The digest a token is kept under.
pub type TokenDigest = [u8; 32];

/// The digest of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// At most `capacity` verified tokens, by digest.
#[derive(Debug)]
pub struct Verified {
    entries: Mutex<HashMap<TokenDigest, Entry>>,
    capacity: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    caller: Caller,
    /// Unix seconds from which the entry is no longer used.
    until: i64,
}

impl Verified {
    /// Keeps up to `capacity` tokens; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The caller a token verified earlier names, if it is still good at
    /// `now` (Unix seconds).
    pub fn get(&self, digest: &TokenDigest, now: i64) -> Option<Caller> {
        if self.capacity == 0 {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(digest)
            .filter(|entry| now < entry.until)
            .map(|entry| entry.caller.clone())
    }

    /// Keeps a token verified at `now` that may be taken as verified until
    /// `exp` (Unix seconds; at most [`MAX_AGE_SECONDS`] on). When full, it
    /// drops the entries no longer good, and then others, down to seven
    /// eighths of the capacity, so that dropping stays rare.
    pub fn put(&self, digest: TokenDigest, caller: Caller, exp: i64, now: i64) {
        let until = exp.min(now.saturating_add(MAX_AGE_SECONDS));
        if self.capacity == 0 || until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, entry| now < entry.until);
            let keep = self.capacity - self.capacity.div_ceil(8);
            let excess: Vec<TokenDigest> = entries
                .keys()
                .take(entries.len().saturating_sub(keep))
                .copied()
                .collect();
            for key in excess {
                entries.remove(&key);
            }
        }
        entries.insert(digest, Entry { caller, until });
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no token is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::UserId;

    fn caller(name: &str) -> Caller {
        Caller {
            user: UserId::parse(name).unwrap(),
            admin: false,
        }
    }

    #[test]
    fn an_entry_is_used_until_the_token_expires_and_no_longer() {
        let verified = Verified::new(8);
        let token = digest("a.b.c");
        verified.put(token, caller("alice"), 1_000, 900);
        assert_eq!(verified.get(&token, 999), Some(caller("alice")));
        assert_eq!(verified.get(&token, 1_000), None);
        assert_eq!(verified.get(&digest("a.b.d"), 999), None);
    }

    #[test]
    fn an_entry_is_used_at_most_its_max_age() {
        let verified = Verified::new(8);
        let token = digest("a.b.c");
        verified.put(token, caller("alice"), 100_000, 1_000);
        assert!(verified.get(&token, 1_000 + MAX_AGE_SECONDS - 1).is_some());
        assert!(verified.get(&token, 1_000 + MAX_AGE_SECONDS).is_none());
    }

    #[test]
    fn an_expired_token_or_no_capacity_keeps_nothing() {
        let verified = Verified::new(8);
        verified.put(digest("old"), caller("alice"), 1_000, 1_000);
        assert!(verified.is_empty());
        let none = Verified::new(0);
        none.put(digest("a.b.c"), caller("alice"), 2_000, 1_000);
        assert!(none.is_empty());
        assert_eq!(none.get(&digest("a.b.c"), 1_000), None);
    }

    #[test]
    fn a_full_cache_stays_within_its_capacity_and_keeps_the_newest() {
        let verified = Verified::new(64);
        // Half of them expire at 1_100.
        for i in 0..64 {
            let exp = if i % 2 == 0 { 1_100 } else { 5_000 };
            verified.put(digest(&format!("t{i}")), caller("alice"), exp, 1_000);
        }
        assert_eq!(verified.len(), 64);
        verified.put(digest("new"), caller("bob"), 5_000, 1_200);
        assert_eq!(verified.len(), 33, "the 32 expired ones dropped");
        for i in 0..1_000 {
            verified.put(digest(&format!("u{i}")), caller("carol"), 5_000, 1_200);
            assert!(verified.len() <= 64);
        }
        assert_eq!(verified.get(&digest("u999"), 1_200), Some(caller("carol")));
    }
}
