//! User ids, user paths and object keys. A user can only ever name keys under
//! `users/<user_id>/`: every path is validated here before it becomes a key.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Longest path, in UTF-8 bytes, after normalisation. With the
/// `users/<id>/` prefix a key stays under S3's 1024-byte limit.
pub const MAX_PATH_BYTES: usize = 880;

/// S3's longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a user id or path was refused; the message is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// A user id: the token's `sub`, matching `^[A-Za-z0-9_-]{1,128}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        if stowage_events::keys::is_user_id(value) {
            Ok(Self(value.to_string()))
        } else {
            Err(InvalidName(
                "user id must match ^[A-Za-z0-9_-]{1,128}$".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated path inside a user's corner of the bucket: NFC-normalised,
/// relative, made of non-empty segments other than `.` and `..`, without
/// backslashes or control characters, at most [`MAX_PATH_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPath(String);

impl UserPath {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let path = checked(raw, "path")?;
        if path.is_empty() {
            return Err(InvalidName("path must not be empty".into()));
        }
        if path.split('/').any(str::is_empty) {
            return Err(InvalidName(
                "path must not contain empty segments ('//' or a trailing '/')".into(),
            ));
        }
        Ok(Self(path))
    }

    /// A path a new object may be uploaded to: also without `${`, which an
    /// S3 form upload reads as a variable (`${filename}` becomes the name of
    /// the uploaded file), so that the object could land under another key
    /// than the one granted and reserved.
    pub fn parse_upload(raw: &str) -> Result<Self, InvalidName> {
        let path = Self::parse(raw)?;
        if path.0.contains("${") {
            return Err(InvalidName(
                "path of an upload must not contain '${' (S3 reads it as a variable)".into(),
            ));
        }
        Ok(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Normalises `raw` and applies the rules paths and prefixes share.
fn checked(raw: &str, what: &str) -> Result<String, InvalidName> {
    let path: String = raw.nfc().collect();
    within_rules(&path, what)?;
    Ok(path)
}

/// A path as the bucket lists it, to resume a listing after: whatever a
/// listing can show, since objects put in the bucket another way than
/// through the API (a folder marker `docs/`, a name in another Unicode form
/// or with a `..` segment) are listed too. Only what S3 could not be asked
/// to list after is refused.
pub fn listed_path(raw: &str) -> Result<&str, InvalidName> {
    if raw.is_empty() || raw.len() > MAX_KEY_BYTES {
        return Err(InvalidName(format!(
            "listed path must be 1 to {MAX_KEY_BYTES} bytes of UTF-8"
        )));
    }
    if !raw.chars().all(fits_xml) {
        return Err(InvalidName(
            "listed path must not contain characters XML 1.0 cannot carry".into(),
        ));
    }
    Ok(raw)
}

/// Whether S3 can name `c` in its XML answers: XML 1.0 has no control
/// characters below U+0020 but tab and line breaks, and neither U+FFFE nor
/// U+FFFF. A key holding one would make every listing page it is on
/// unreadable.
fn fits_xml(c: char) -> bool {
    (c >= ' ' || matches!(c, '\t' | '\n' | '\r')) && c != '\u{FFFE}' && c != '\u{FFFF}'
}

/// The rules every path obeys, whatever its form.
fn within_rules(path: &str, what: &str) -> Result<(), InvalidName> {
    let refuse = |why: &str| Err(InvalidName(format!("{what} {why}")));
    if path.len() > MAX_PATH_BYTES {
        return refuse(&format!("must be at most {MAX_PATH_BYTES} bytes of UTF-8"));
    }
    if path.starts_with('/') {
        return refuse("must not start with '/'");
    }
    if path.contains('\\') {
        return refuse("must not contain a backslash");
    }
    if path.chars().any(|c| c.is_control() || !fits_xml(c)) {
        return refuse("must not contain control characters, U+FFFE or U+FFFF");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return refuse("must not contain '.' or '..' segments");
    }
    Ok(())
}

/// A validated listing prefix: empty, or the start of a path (it may end in
/// `/` or in the middle of a segment), under the same rules as a path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let prefix = checked(raw, "prefix")?;
        let mut segments: Vec<&str> = prefix.split('/').collect();
        segments.pop();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(InvalidName(
                "prefix must not contain empty segments ('//')".into(),
            ));
        }
        Ok(Self(prefix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where `user`'s keys start: `users/<user_id>/`.
pub fn user_prefix(user: &UserId) -> String {
    format!("users/{}/", user.0)
}

/// The path of `key` within `user`'s folder, if the key is theirs.
pub fn path_of<'k>(user: &UserId, key: &'k str) -> Option<&'k str> {
    key.strip_prefix("users/")?
        .strip_prefix(user.as_str())?
        .strip_prefix('/')
}

/// The object key of `path` for `user`: `users/<user_id>/<path>`.
pub fn object_key(user: &UserId, path: &UserPath) -> String {
    format!("users/{}/{}", user.0, path.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn user_ids_follow_the_token_rule() {
        for ok in ["alice", "A_b-9", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a.b", "ä", "a b", &"x".repeat(129), "../x"] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ordinary_paths_map_to_keys_under_the_user_prefix() {
        let user = UserId::parse("alice").unwrap();
        let path = UserPath::parse("photos/2026/cat 1+2%.jpg").unwrap();
        assert_eq!(
            object_key(&user, &path),
            "users/alice/photos/2026/cat 1+2%.jpg"
        );
    }

    #[test]
    fn traversal_and_malformed_paths_are_refused() {
        let bad = [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            ".",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\u{0}b",
            "line\nbreak",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
            "not-xml\u{FFFE}",
            "not-xml\u{FFFF}",
        ];
        for raw in bad {
            assert!(UserPath::parse(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn listed_paths_are_taken_as_stored() {
        for ok in [
            "docs/",
            "cafe\u{301}.txt",
            "a//b",
            "photos/2026/cat.jpg",
            "a/../b",
            "/a",
            "a\\b",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert_eq!(listed_path(ok), Ok(ok), "{ok:?}");
        }
        let long = "a".repeat(1025);
        for bad in ["", "a\u{0}b", "esc\u{1b}", "a\u{FFFF}", "a\u{FFFE}", &long] {
            assert!(listed_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn uploads_may_not_name_a_form_variable() {
        for raw in ["${filename}", "a/${filename}.jpg", "x${y}"] {
            assert!(UserPath::parse(raw).is_ok(), "{raw:?} may be read");
            assert!(UserPath::parse_upload(raw).is_err(), "{raw:?} refused");
        }
        for raw in ["$5.txt", "a{b}", "{$}", "price$/x"] {
            assert!(UserPath::parse_upload(raw).is_ok(), "{raw:?}");
        }
    }

    #[test]
    fn length_is_counted_in_utf8_bytes_after_normalisation() {
        assert!(UserPath::parse(&"a".repeat(MAX_PATH_BYTES)).is_ok());
        assert!(UserPath::parse(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
        // 'é' is two bytes in UTF-8.
        assert!(UserPath::parse(&"é".repeat(MAX_PATH_BYTES / 2 + 1)).is_err());
    }

    #[test]
    fn prefixes_follow_the_path_rules_but_may_be_partial() {
        for ok in ["", "photos/", "photos/2026/ca", "a", "caf\u{e9}"] {
            assert!(PathPrefix::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "/", "/a", "a//", "a//b/", "../", "a/../", "./", "a\\b", "a\u{0}",
        ] {
            assert!(PathPrefix::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PathPrefix::parse(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn keys_map_back_to_paths_only_for_their_owner() {
        let alice = UserId::parse("alice").unwrap();
        let al = UserId::parse("al").unwrap();
        assert_eq!(path_of(&alice, "users/alice/a/b"), Some("a/b"));
        assert_eq!(path_of(&al, "users/alice/a/b"), None);
        assert_eq!(path_of(&alice, "users/alice2/a"), None);
        assert_eq!(user_prefix(&alice), "users/alice/");
    }

    #[test]
    fn canonically_equal_spellings_name_the_same_key() {
        let composed = UserPath::parse("caf\u{e9}.txt").unwrap();
        let decomposed = UserPath::parse("cafe\u{301}.txt").unwrap();
        assert_eq!(composed, decomposed);
    }

    proptest! {
        #[test]
        fn an_accepted_path_never_leaves_the_user_prefix(raw in "\\PC{0,40}") {
            let user = UserId::parse("bob").unwrap();
            if let Ok(path) = UserPath::parse(&raw) {
                let key = object_key(&user, &path);
                prop_assert!(key.starts_with("users/bob/"));
                let rest = &key["users/bob/".len()..];
                prop_assert!(rest.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            }
        }
    }
}
