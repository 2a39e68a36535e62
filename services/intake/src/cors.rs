//! Cross-origin access for browser frontends served from another origin
//! than the API (`STOWAGE_CORS_ORIGINS`). Tokens travel in the
//! `Authorization` header, never in cookies, so credentials are not allowed.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// One configured origin, or none for an empty item (an empty setting,
/// a trailing comma).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(Option<HeaderValue>);

/// Reads one configured origin: `http` or `https`, a host and an optional
/// port, nothing else, as browsers send it in `Origin` (lower case, without
/// the scheme's default port). Host names and IPv4 addresses; IPv6
/// literals are not accepted.
pub fn parse_origin(value: &str) -> Result<Origin, String> {
    let origin = value.trim().to_ascii_lowercase();
    if origin.is_empty() {
        return Ok(Origin(None));
    }
    let (scheme, rest, default_port) = if let Some(rest) = origin.strip_prefix("https://") {
        ("https", rest, "443")
    } else if let Some(rest) = origin.strip_prefix("http://") {
        ("http", rest, "80")
    } else {
        return Err(format!(
            "{value:?} is no origin: it must start with https:// or http://"
        ));
    };
    let (host, port) = rest
        .split_once(':')
        .map_or((rest, None), |(h, p)| (h, Some(p)));
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid_host {
        return Err(format!(
            "{value:?} is no origin: only a scheme, a host name and a port (no path, no wildcard)"
        ));
    }
    let origin = match port {
        Some(port) if port.parse::<u16>().is_err() => {
            return Err(format!("{value:?} has no valid port"));
        }
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    HeaderValue::from_str(&origin)
        .map(|origin| Origin(Some(origin)))
        .map_err(|error| format!("{value:?}: {error}"))
}

/// The layer answering preflights and marking the answers to `origins`, or
/// none when no origin is configured (the API is then same-origin only).
pub fn layer(origins: &[Origin]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.0.clone()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_a_scheme_a_host_and_a_port() {
        let read = |value: &str| parse_origin(value).map(|o| o.0);
        for (given, origin) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://app.example.com:80", "http://app.example.com"),
            ("https://app.example.com:80", "https://app.example.com:80"),
            ("http://localhost:5173", "http://localhost:5173"),
            (" HTTPS://App.Example.com ", "https://app.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(read(given).unwrap().unwrap(), origin, "{given}");
        }
        // An empty item is none: an empty setting, a trailing comma.
        for empty in ["", "  "] {
            assert_eq!(read(empty), Ok(None));
        }
        assert!(layer(&[parse_origin("").unwrap()]).is_none());
        for refused in [
            "app.example.com",
            "ftp://app.example.com",
            "https://",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com",
            "*",
            "https://app.example.com:port",
            "https://app.example.com:99999",
            "https://user@app.example.com",
            "null",
            "http://[::1]:8080",
        ] {
            assert!(parse_origin(refused).is_err(), "{refused} was accepted");
        }
    }
}
