//! The identity provider's signing keys, fetched from its JWKS URL and cached
//! by `kid`.
//!
//! A token naming a `kid` the cache does not know triggers a refresh (the
//! provider may have rotated its keys), but at most one fetch per
//! [`JwksOptions::min_refresh_interval`], so tokens with made-up `kid`s cannot
//! make intake hammer the provider; concurrent requests that miss share one
//! fetch. Keys older than [`JwksOptions::max_age`] are refetched by the next
//! request that uses them, so a key the provider withdraws stops working;
//! if that refetch fails the old keys keep serving.
//!
//! Only RS256 keys (`kty: RSA`) and ES256 keys (`kty: EC`, `crv: P-256`) meant
//! for signatures are kept; each is parsed once, when fetched.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri, body::Bytes, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

use super::AuthError;

/// The algorithms a JWKS key may be for.
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// Largest JWKS document accepted; real ones are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// How the key cache refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksOptions {
    /// Least time between two fetches, whatever triggers them.
    pub min_refresh_interval: Duration,
    /// Age after which the keys are refetched on their next use.
    pub max_age: Duration,
    /// Limit on one fetch (connecting included).
    pub timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(10),
            max_age: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A published key, parsed and ready to verify with.
#[derive(Debug)]
pub struct PublishedKey {
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// When the document it came from was fetched.
    pub fetched_at: Instant,
}

/// One fetched JWKS document.
#[derive(Debug, Default)]
struct KeySet {
    keys: HashMap<String, Arc<PublishedKey>>,
    /// Grows with every successful fetch, so a request that waited for a
    /// refresh can tell whether one happened since it looked.
    generation: u64,
    /// When it was fetched; `None` before the first fetch.
    fetched_at: Option<Instant>,
}

/// Bookkeeping of fetches, held while one runs.
#[derive(Debug, Default)]
struct Fetches {
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, when it did.
    last_failure: Option<String>,
}

impl Fetches {
    fn allowed(&self, options: &JwksOptions) -> bool {
        self.last_attempt
            .is_none_or(|at| at.elapsed() >= options.min_refresh_interval)
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The cache of the provider's keys.
pub struct KeyCache {
    url: Uri,
    client: HttpClient,
    options: JwksOptions,
    /// The latest key set; read on every request, replaced on refresh.
    current: RwLock<Arc<KeySet>>,
    /// Serialises fetches; whoever holds it may fetch.
    fetches: tokio::sync::Mutex<Fetches>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("url", &self.url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache of the keys at `url`, which must be https (or plain http on a
    /// loopback address). Nothing is fetched yet.
    pub fn new(url: &str, options: JwksOptions) -> anyhow::Result<Self> {
        let url: Uri = url
            .parse()
            .with_context(|| format!("JWKS URL {url:?} is not a URL"))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") if is_loopback(url.host().unwrap_or_default()) => false,
            _ => anyhow::bail!(
                "JWKS URL {url} must be https (plain http is allowed on loopback only)"
            ),
        };
        Ok(Self {
            client: http_client(https, options.timeout)?,
            url,
            options,
            current: RwLock::default(),
            fetches: tokio::sync::Mutex::default(),
        })
    }

    /// Where the keys come from.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// Fetches the keys unless a fetch happened recently.
    pub async fn preload(&self) -> Result<(), AuthError> {
        let mut fetches = self.fetches.lock().await;
        if !fetches.allowed(&self.options) {
            return Ok(());
        }
        self.fetch(&mut fetches).await.map(|_| ())
    }

    /// The key named `kid`, refreshing the cache if it is unknown or old.
    /// `Invalid` when the provider does not publish it; `Unavailable` when
    /// the provider's keys cannot be fetched to find out.
    pub async fn key(&self, kid: &str) -> Result<Arc<PublishedKey>, AuthError> {
        let seen = self.snapshot();
        if let Some(key) = seen.keys.get(kid) {
            let stale = seen
                .fetched_at
                .is_some_and(|at| at.elapsed() >= self.options.max_age);
            if stale && let Some(fresh) = self.refresh_stale(&seen).await {
                return fresh.keys.get(kid).cloned().ok_or_else(|| unknown(kid));
            }
            return Ok(Arc::clone(key));
        }

        let mut fetches = self.fetches.lock().await;
        let now = self.snapshot();
        if now.generation != seen.generation {
            // Someone fetched while this request waited: that answer stands.
            return now.keys.get(kid).cloned().ok_or_else(|| unknown(kid));
        }
        if !fetches.allowed(&self.options) {
            return Err(match &fetches.last_failure {
                Some(failure) => AuthError::Unavailable(failure.clone()),
                None => unknown(kid),
            });
        }
        let fresh = self.fetch(&mut fetches).await?;
        fresh.keys.get(kid).cloned().ok_or_else(|| unknown(kid))
    }

    /// How long `key` stays fresh: a token verified with it is not to be
    /// taken as verified for longer, so that a key the provider withdraws
    /// stops counting as soon as it would here.
    pub fn fresh_for(&self, key: &PublishedKey) -> Duration {
        self.options
            .max_age
            .saturating_sub(key.fetched_at.elapsed())
    }

    /// Refetches keys that are too old, unless another request is already at
    /// it or fetches are rate-limited; `None` means "keep using `seen`".
    async fn refresh_stale(&self, seen: &KeySet) -> Option<Arc<KeySet>> {
        let mut fetches = self.fetches.try_lock().ok()?;
        let now = self.snapshot();
        if now.generation != seen.generation {
            return Some(now);
        }
        if !fetches.allowed(&self.options) {
            return None;
        }
        self.fetch(&mut fetches).await.ok()
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches the document and installs its keys; the caller holds the
    /// fetch lock.
    async fn fetch(&self, fetches: &mut Fetches) -> Result<Arc<KeySet>, AuthError> {
        fetches.last_attempt = Some(Instant::now());
        match self.download().await {
            Ok(keys) => {
                fetches.last_failure = None;
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                let fresh = Arc::new(KeySet {
                    keys,
                    generation: current.generation + 1,
                    fetched_at: Some(Instant::now()),
                });
                *current = Arc::clone(&fresh);
                tracing::info!(url = %self.url, keys = fresh.keys.len(), "JWKS fetched");
                Ok(fresh)
            }
            Err(error) => {
                let failure = format!("{error:#}");
                tracing::warn!(url = %self.url, error = failure, "JWKS fetch failed");
                fetches.last_failure = Some(failure.clone());
                Err(AuthError::Unavailable(failure))
            }
        }
    }

    /// Fetches and parses the document, within the configured timeout.
    /// Redirects are not followed.
    async fn download(&self) -> anyhow::Result<HashMap<String, Arc<PublishedKey>>> {
        let request = Request::get(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("stowage-intake/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .context("building the JWKS request")?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .with_context(|| format!("cannot fetch the JWKS from {}", self.url))?;
            let status = response.status();
            anyhow::ensure!(
                status.is_success(),
                "the JWKS at {} answered {status}",
                self.url
            );
            Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("reading the JWKS from {}", self.url))
        };
        let body = tokio::time::timeout(self.options.timeout, exchange)
            .await
            .with_context(|| format!("the JWKS at {} did not answer in time", self.url))??;
        parse_document(&body)
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document, by `kid`; unusable ones are skipped.
fn parse_document(body: &[u8]) -> anyhow::Result<HashMap<String, Arc<PublishedKey>>> {
    let document: Document = serde_json::from_slice(body).context("the JWKS is not valid")?;
    let mut keys = HashMap::new();
    for value in document.keys {
        let kid = value.get("kid").cloned().unwrap_or_default();
        match serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| published_key(&jwk))
        {
            Ok((kid, key)) => {
                keys.entry(kid).or_insert_with(|| Arc::new(key));
            }
            Err(reason) => tracing::debug!(%kid, reason, "JWKS key skipped"),
        }
    }
    Ok(keys)
}

/// Parses one JWK, if it is a signing key for an accepted algorithm.
fn published_key(jwk: &Jwk) -> Result<(String, PublishedKey), String> {
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not a signing key".into());
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => {
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256
                && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Algorithm::ES256
        }
        _ => return Err("not an RS256 or ES256 key".into()),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if algorithm == Algorithm::ES256 && key.try_get_as_bytes().map(<[u8]>::len) != Ok(65) {
        return Err("not a P-256 point".into());
    }
    Ok((
        kid,
        PublishedKey {
            algorithm,
            key,
            fetched_at: Instant::now(),
        },
    ))
}

fn unknown(kid: &str) -> AuthError {
    AuthError::Invalid(format!("unknown signing key {kid:?}"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An HTTP client for the JWKS URL. TLS uses the system's root certificates
/// and the same aws-lc crypto as the AWS SDK; an https client never speaks
/// plain http.
fn http_client(https: bool, timeout: Duration) -> anyhow::Result<HttpClient> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        anyhow::ensure!(
            added > 0,
            "no trusted root certificates found to check the JWKS URL's TLS certificate \
             (install the system's CA certificates)"
        );
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(timeout));
    let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = if https {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    let connector = builder.enable_http1().wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs256_and_es256_signing_keys_are_kept() {
        let n = "n-g7A5gVsAaLfD6cuk3o4wNXSgQCMDoDvAhT6YRgGEDM90TfKOHCp-OpQCmYLrrft0HM1kWBxoSAfitKiFVsj8tOPV3Mx4QNCQHpL5F6LXkqfW66Eqweyi5PCuhj2BPZtQofHjRJgvS2Vku9F43wLpRvelbEdFecQsXH6OVcmPzF95WBBrdh4MEdOtlP-aDMcoE7g0YiIgOXtDbMe7UXfUjn6x2k7kAD_OCyYTvJlWFYYIRQPt2eWF-u07DLgHC_uMDcQrxH0cAK9BgwuHIhyJmHY0ukGP_GaelJRqNyRSj5QDkWZol-KKiaQ5gmwcuAIVmazEeKHjriI-Lx2eXimw";
        let x = "Fi5RnCWvZMFDnvUI4IxCr1QNcrHBE5nEIoWpQh5aBmY";
        let y = "weYtY6UqXJ6SLRktwnK3tPdfOUSq79H57Srz37zYo28";
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "rsa", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-no-alg", "n": n, "e": "AQAB"},
            {"kty": "EC", "alg": "ES256", "kid": "ec", "crv": "P-256", "x": x, "y": y},
            {"kty": "RSA", "alg": "RS512", "kid": "rs512", "n": n, "e": "AQAB"},
            {"kty": "RSA", "alg": "ES256", "kid": "rsa-as-ec", "n": n, "e": "AQAB"},
            {"kty": "RSA", "alg": "RS256", "use": "enc", "kid": "encryption", "n": n, "e": "AQAB"},
            {"kty": "RSA", "alg": "RS256", "n": n, "e": "AQAB"},
            {"kty": "EC", "alg": "ES384", "kid": "p384", "crv": "P-384", "x": x, "y": y},
            {"kty": "EC", "alg": "ES256", "kid": "short-point", "crv": "P-256", "x": x, "y": "AAAA"},
            {"kty": "oct", "alg": "HS256", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "OKP", "alg": "EdDSA", "kid": "ed", "crv": "Ed25519", "x": x},
            {"kty": "weird", "kid": "weird"},
        ]});
        let keys = parse_document(document.to_string().as_bytes()).unwrap();
        let mut kept: Vec<(&str, Algorithm)> = keys
            .iter()
            .map(|(kid, key)| (kid.as_str(), key.algorithm))
            .collect();
        kept.sort_by_key(|(kid, _)| *kid);
        assert_eq!(
            kept,
            [
                ("ec", Algorithm::ES256),
                ("rsa", Algorithm::RS256),
                ("rsa-no-alg", Algorithm::RS256)
            ]
        );
        assert!(parse_document(b"{\"keys\": 3}").is_err());
        assert!(parse_document(b"<html>").is_err());
    }

    #[test]
    fn the_url_must_be_https_unless_on_loopback() {
        let options = JwksOptions::default();
        for url in [
            "http://127.0.0.1:9/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:80/jwks.json",
        ] {
            assert!(KeyCache::new(url, options).is_ok(), "{url}");
        }
        for url in [
            "http://cognito-idp.eu-west-1.amazonaws.com/x/.well-known/jwks.json",
            "http://10.0.0.1/jwks.json",
            "ftp://127.0.0.1/jwks.json",
            "not a url",
        ] {
            assert!(KeyCache::new(url, options).is_err(), "{url}");
        }
    }
}
