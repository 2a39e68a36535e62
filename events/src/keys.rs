//! Keys as S3 events carry them, and who owns them.
//!
//! How an event spells a key depends on who sent it: S3's direct
//! notifications URL-encode keys form-style (a space becomes `+`), LocalStack's
//! EventBridge events percent-encode them, moto's send them as they are. A key
//! whose spellings all agree (no `%` and no `+`) is unambiguous; otherwise
//! [`candidates`] lists every reading, most likely first, and a consumer
//! resolves them against S3 and its own rows (the ledger and the lifecycle
//! service both do).

use percent_encoding::percent_decode_str;

/// Whether `user` is a user id: `^[A-Za-z0-9_-]{1,128}$`, as tokens' `sub`
/// and the folders under `users/` spell them.
pub fn is_user_id(user: &str) -> bool {
    (1..=128).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The user who owns `key`, if it lies under `users/<id>/`.
pub fn owner(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("users/")?;
    let (user, path) = rest.split_once('/')?;
    (is_user_id(user) && !path.is_empty()).then_some(user)
}

/// The possible readings of an event's key, most likely first, without
/// repeats: form-decoded (`+` is a space), as sent, percent-decoded (`+` kept).
pub fn candidates(raw: &str) -> Vec<String> {
    let mut readings = Vec::with_capacity(3);
    let mut push = |reading: Option<String>| {
        if let Some(reading) = reading
            && !readings.contains(&reading)
        {
            readings.push(reading);
        }
    };
    push(decode(&raw.replace('+', " ")));
    push(Some(raw.to_string()));
    push(decode(raw));
    readings
}

fn decode(value: &str) -> Option<String> {
    percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_come_from_the_user_prefix() {
        assert_eq!(owner("users/alice/a.txt"), Some("alice"));
        assert_eq!(owner("users/alice/"), None);
        assert_eq!(owner("users/a.b/x"), None);
        assert_eq!(owner("other/alice/x"), None);
        assert_eq!(owner("users/alice"), None);
    }

    #[test]
    fn plain_keys_have_one_reading() {
        assert_eq!(
            candidates("users/alice/photos/cat.jpg"),
            vec!["users/alice/photos/cat.jpg"]
        );
    }

    #[test]
    fn every_sender_s_spelling_yields_the_true_key_among_its_readings() {
        let key = "users/a/x y+z%41é.txt";
        let localstack = "users/a/x%20y%2Bz%2541%C3%A9.txt";
        let notification = "users/a/x+y%2Bz%2541%C3%A9.txt";
        for spelling in [localstack, notification, key] {
            assert!(
                candidates(spelling).contains(&key.to_string()),
                "{spelling}"
            );
        }
        // Encoded spellings decode to the true key first.
        assert_eq!(candidates(localstack)[0], key);
        assert_eq!(candidates(notification)[0], key);
    }

    #[test]
    fn invalid_percent_sequences_leave_the_raw_reading() {
        assert!(candidates("users/a/100%").contains(&"users/a/100%".to_string()));
        assert!(candidates("users/a/%FF").contains(&"users/a/%FF".to_string()));
    }
}
