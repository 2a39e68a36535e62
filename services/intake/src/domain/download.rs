//! How a download is presented: always as an attachment, with a content type
//! that no browser renders as a page or runs as a script.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Served when the stored type is missing or could render active content.
pub const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// Characters RFC 8187 allows unencoded in `filename*` (attr-char).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` naming the file by the last segment of
/// its path: an ASCII fallback and the exact UTF-8 name (RFC 6266).
pub fn attachment(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

/// The content type a download is served with: the stored one when it is on
/// the deployment's allowlist and cannot render active content, otherwise
/// [`FALLBACK_CONTENT_TYPE`].
pub fn safe_content_type(stored: Option<&str>, allowed: &[String]) -> String {
    let Some(stored) = stored else {
        return FALLBACK_CONTENT_TYPE.into();
    };
    let essence = stored
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let active = essence.contains("html")
        || essence.contains("xml")
        || essence.contains("javascript")
        || essence.contains("ecmascript")
        || essence.contains("svg");
    let listed = allowed.iter().any(|a| a.eq_ignore_ascii_case(&essence));
    if listed && !active {
        essence
    } else {
        FALLBACK_CONTENT_TYPE.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        ["image/png", "text/plain", "text/html", "image/svg+xml"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn listed_passive_types_are_kept() {
        assert_eq!(
            safe_content_type(Some("image/png"), &allowed()),
            "image/png"
        );
        assert_eq!(
            safe_content_type(Some("Text/Plain; charset=utf-8"), &allowed()),
            "text/plain"
        );
    }

    #[test]
    fn active_unlisted_or_missing_types_fall_back() {
        for stored in [
            Some("text/html"),
            Some("image/svg+xml"),
            Some("application/xhtml+xml"),
            Some("text/javascript"),
            Some("application/x-unknown"),
            None,
        ] {
            assert_eq!(
                safe_content_type(stored, &allowed()),
                FALLBACK_CONTENT_TYPE,
                "{stored:?}"
            );
        }
    }

    #[test]
    fn attachments_name_the_file_safely() {
        assert_eq!(
            attachment("photos/cat.jpg"),
            "attachment; filename=\"cat.jpg\"; filename*=UTF-8''cat.jpg"
        );
        assert_eq!(
            attachment("a/\"x\" caf\u{e9};.txt"),
            "attachment; filename=\"_x_ caf_;.txt\"; filename*=UTF-8''%22x%22%20caf%C3%A9%3B.txt"
        );
    }
}
