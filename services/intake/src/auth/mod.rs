//! Bearer-token authentication. Tokens are JWTs whose `sub` is the user id,
//! verified one of two ways:
//!
//! - against the keys an identity provider publishes as a JWKS document
//!   (RS256 and ES256; [`jwks`] caches them by `kid` and refreshes on an
//!   unknown one), which is how Cognito user pools work;
//! - with a shared HS256 secret, for the local stack.
//!
//! Either way issuer, audience, expiry and not-before are checked, and a token
//! is only verified with the algorithm its key is for, so `alg: none` and
//! algorithm confusion (an HS256 token "signed" with a public key) never pass.
//!
//! A token that passed is kept for a while (see [`verified`]), so the same
//! token again costs a digest and a lookup instead of a signature check.
//!
//! # Layout
//! - this file: [`Authenticator`], [`TokenRules`], [`Caller`], [`AuthError`].
//! - [`jwks`]: fetching, parsing and caching the provider's keys.
//! - [`verified`]: tokens that passed, by digest.

pub mod jwks;
pub mod verified;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::domain::keys::UserId;

pub use jwks::JwksOptions;
use verified::Verified;

/// Default of [`TokenRules::admin_claim`]: Cognito puts a user's groups there.
pub const DEFAULT_ADMIN_CLAIM: &str = "cognito:groups";
/// Default of [`TokenRules::admin_value`].
pub const DEFAULT_ADMIN_VALUE: &str = "stowage-admins";

/// Allowed clock skew, in seconds, when checking `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Default of how many verified tokens an [`Authenticator`] keeps.
pub const DEFAULT_VERIFIED_TOKENS: usize = 4096;

/// Who is calling, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    /// The token carries the configured admin claim (see [`TokenRules`]).
    pub admin: bool,
}

/// Why a request is not authenticated; shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid bearer token: {0}")]
    Invalid(String),
    /// The token could not be checked because the identity provider's keys
    /// could not be fetched; the token may well be valid.
    #[error("cannot verify bearer tokens: {0}")]
    Unavailable(String),
}

/// What a valid token must claim, and who counts as an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (a string equal to it, or an array containing it).
    pub audience: String,
    /// Also accept a token without `aud` whose `client_id` equals
    /// [`Self::audience`]: Cognito access tokens carry the app client id
    /// there and have no `aud`.
    pub client_id_audience: bool,
    /// Required `token_use` claim, when set (Cognito: `access` or `id`).
    pub token_use: Option<String>,
    /// Claim that marks administrators; empty means nobody is one.
    pub admin_claim: String,
    /// Value of [`Self::admin_claim`] (the claim itself, or one element of
    /// it when it is an array) that makes the caller an administrator.
    pub admin_value: String,
}

impl TokenRules {
    /// Rules requiring `issuer` and `audience`, with the default admin claim.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            client_id_audience: false,
            token_use: None,
            admin_claim: DEFAULT_ADMIN_CLAIM.to_string(),
            admin_value: DEFAULT_ADMIN_VALUE.to_string(),
        }
    }

    /// The library-side checks for tokens signed with `algorithm`: signature
    /// algorithm, `exp`, `nbf`, `iss`, and `aud` when present.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        if self.client_id_audience {
            validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        }
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        validation
    }

    /// The checks beyond the library's, on claims whose signature, times and
    /// issuer are already verified; returns the caller they name.
    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, AuthError> {
        let addressed = match claims.get("aud") {
            Some(aud) => names(aud, &self.audience),
            None => {
                self.client_id_audience
                    && claims.get("client_id").and_then(Value::as_str) == Some(&self.audience)
            }
        };
        if !addressed {
            return Err(AuthError::Invalid(
                "the token is for another audience".into(),
            ));
        }
        if let Some(token_use) = &self.token_use
            && claims.get("token_use").and_then(Value::as_str) != Some(token_use)
        {
            return Err(AuthError::Invalid(format!(
                "token_use must be {token_use:?}"
            )));
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid("sub must be a string".into()))?;
        let user = UserId::parse(sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        let admin = !self.admin_claim.is_empty()
            && claims
                .get(&self.admin_claim)
                .is_some_and(|v| names(v, &self.admin_value));
        Ok(Caller { user, admin })
    }
}

/// Whether a claim is `value`, or an array holding it.
fn names(claim: &Value, value: &str) -> bool {
    match claim {
        Value::String(s) => s == value,
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(value)),
        _ => false,
    }
}

/// Where verification keys come from.
enum Keys {
    /// One shared HS256 secret.
    Secret(DecodingKey),
    /// The identity provider's published keys.
    Jwks(Box<jwks::KeyCache>),
}

/// Verifies bearer tokens. Keys are parsed once (at construction, or when
/// the JWKS is fetched), so a verification costs one signature check, and
/// a token verified before costs none while it is kept.
pub struct Authenticator {
    keys: Keys,
    rules: TokenRules,
    /// One validation per accepted algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    verified: Verified,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Secret(_) => "HS256 secret".to_string(),
            Keys::Jwks(cache) => format!("JWKS {}", cache.url()),
        };
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Tokens signed with a shared HS256 secret (local use).
    pub fn hs256(secret: &SecretString, rules: TokenRules) -> Self {
        Self {
            keys: Keys::Secret(DecodingKey::from_secret(secret.expose_secret().as_bytes())),
            validations: vec![(Algorithm::HS256, rules.validation(Algorithm::HS256))],
            rules,
            verified: Verified::new(DEFAULT_VERIFIED_TOKENS),
        }
    }

    /// Keeps up to `capacity` verified tokens instead of
    /// [`DEFAULT_VERIFIED_TOKENS`]; 0 verifies every token in full.
    pub fn keeping(mut self, capacity: usize) -> Self {
        self.verified = Verified::new(capacity);
        self
    }

    /// Tokens signed with RS256 or ES256 keys published at `url`. Fails only
    /// on a bad URL or TLS setup; the keys are fetched when first needed
    /// (or by [`Authenticator::preload`]).
    pub fn jwks(url: &str, rules: TokenRules, options: JwksOptions) -> anyhow::Result<Self> {
        Ok(Self {
            keys: Keys::Jwks(Box::new(jwks::KeyCache::new(url, options)?)),
            validations: jwks::ALGORITHMS
                .iter()
                .map(|&alg| (alg, rules.validation(alg)))
                .collect(),
            rules,
            verified: Verified::new(DEFAULT_VERIFIED_TOKENS),
        })
    }

    /// Fetches the JWKS now rather than on the first request; nothing to do
    /// with a shared secret.
    pub async fn preload(&self) -> Result<(), AuthError> {
        match &self.keys {
            Keys::Secret(_) => Ok(()),
            Keys::Jwks(cache) => cache.preload().await,
        }
    }

    /// Checks a token and returns the caller it names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let digest = verified::digest(token);
        if let Some(caller) = self.verified.get(&digest, now) {
            return Ok(caller);
        }
        let (caller, until) = self.verify_in_full(token, now).await?;
        if let Some(until) = until {
            self.verified.put(digest, caller.clone(), until, now);
        }
        Ok(caller)
    }

    /// Checks a token's signature and claims; returns the caller it names
    /// and until when (Unix seconds) that may be taken as verified: the
    /// token's expiry, or sooner when the key it was verified with is due
    /// to be fetched again.
    async fn verify_in_full(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Caller, Option<i64>), AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::Invalid(e.to_string());
        let header = decode_header(token).map_err(invalid)?;
        // Until when (Unix seconds) the key used stays fresh.
        let (claims, fresh_until) = match &self.keys {
            Keys::Secret(key) => (
                decode::<Map<String, Value>>(token, key, self.validation(Algorithm::HS256)?),
                i64::MAX,
            ),
            Keys::Jwks(cache) => {
                if !jwks::ALGORITHMS.contains(&header.alg) {
                    return Err(AuthError::Invalid(format!(
                        "algorithm {:?} is not accepted",
                        header.alg
                    )));
                }
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
                let key = cache.key(kid).await?;
                if key.algorithm != header.alg {
                    return Err(AuthError::Invalid(format!(
                        "key {kid:?} is for {:?}, not {:?}",
                        key.algorithm, header.alg
                    )));
                }
                let fresh = i64::try_from(cache.fresh_for(&key).as_secs()).unwrap_or(i64::MAX);
                (
                    decode::<Map<String, Value>>(token, &key.key, self.validation(key.algorithm)?),
                    now.saturating_add(fresh),
                )
            }
        };
        let claims = claims.map_err(invalid)?;
        let exp = claims.claims.get("exp").and_then(Value::as_i64);
        let until = exp.map(|exp| exp.min(fresh_until));
        Ok((self.rules.caller(&claims.claims)?, until))
    }

    /// Checks an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        // The scheme is case-insensitive (RFC 9110).
        let token = header
            .trim_start()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| AuthError::Invalid("expected 'Authorization: Bearer <token>'".into()))?;
        self.verify(token.trim()).await
    }

    fn validation(&self, algorithm: Algorithm) -> Result<&Validation, AuthError> {
        self.validations
            .iter()
            .find(|(alg, _)| *alg == algorithm)
            .map(|(_, validation)| validation)
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {algorithm:?} is not accepted")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-enough-length";

    fn authenticator() -> Authenticator {
        Authenticator::hs256(&SecretString::from(SECRET), TokenRules::new("iss", "aud"))
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_valid_token_names_its_user() {
        let t = token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}));
        let caller = authenticator().verify(&t).await.unwrap();
        assert_eq!(caller.user.as_str(), "alice");
        assert!(!caller.admin);
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        let exp = now() + 60;
        let cases = [
            token(json!({"sub": "alice", "iss": "other", "aud": "aud", "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "aud": "other", "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "aud": ["other"], "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "aud": 7, "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "exp": exp, "client_id": "aud"})),
            token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() - 120})),
            token(json!({"sub": "alice", "iss": "iss", "aud": "aud"})),
            token(
                json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp, "nbf": now() + 600}),
            ),
            token(json!({"sub": "../bob", "iss": "iss", "aud": "aud", "exp": exp})),
            token(json!({"sub": "", "iss": "iss", "aud": "aud", "exp": exp})),
            token(json!({"sub": "a".repeat(129), "iss": "iss", "aud": "aud", "exp": exp})),
            token(json!({"sub": 42, "iss": "iss", "aud": "aud", "exp": exp})),
            token(json!({"iss": "iss", "aud": "aud", "exp": exp})),
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp}),
                &EncodingKey::from_secret(b"another-secret-entirely"),
            )
            .unwrap(),
            encode(
                &Header::new(Algorithm::HS384),
                &json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ];
        for t in cases {
            let refused = authenticator().verify(&t).await;
            assert!(
                matches!(refused, Err(AuthError::Invalid(_))),
                "{t}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = B64.encode(
            json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}).to_string(),
        );
        for t in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(authenticator().verify(&t).await.is_err());
        }
    }

    #[tokio::test]
    async fn the_header_must_carry_a_bearer_token() {
        let auth = authenticator();
        assert_eq!(auth.verify_header(None).await, Err(AuthError::Missing));
        assert!(auth.verify_header(Some("Basic abc")).await.is_err());
        assert!(auth.verify_header(Some("Bearerabc")).await.is_err());
        let t = token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}));
        let caller = auth.verify_header(Some(&format!("Bearer {t}"))).await;
        assert_eq!(caller.unwrap().user.as_str(), "alice");
    }

    #[tokio::test]
    async fn the_admin_claim_makes_an_admin() {
        let exp = now() + 60;
        let claims = |extra: serde_json::Value| {
            let mut all = json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp});
            all.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            token(all)
        };
        let cases = [
            (json!({"cognito:groups": ["staff", "stowage-admins"]}), true),
            (json!({"cognito:groups": "stowage-admins"}), true),
            (json!({"cognito:groups": ["staff"]}), false),
            (json!({"cognito:groups": "stowage-admins-not"}), false),
            (json!({"cognito:groups": {"stowage-admins": true}}), false),
            (json!({"groups": ["stowage-admins"]}), false),
            (json!({}), false),
        ];
        for (extra, admin) in cases {
            let caller = authenticator()
                .verify(&claims(extra.clone()))
                .await
                .unwrap();
            assert_eq!(caller.admin, admin, "{extra}");
        }

        let mut rules = TokenRules::new("iss", "aud");
        rules.admin_claim = "role".into();
        rules.admin_value = "operator".into();
        let custom = Authenticator::hs256(&SecretString::from(SECRET), rules.clone());
        assert!(
            custom
                .verify(&claims(json!({"role": "operator"})))
                .await
                .unwrap()
                .admin
        );
        let t = claims(json!({"cognito:groups": ["stowage-admins"]}));
        assert!(!custom.verify(&t).await.unwrap().admin);

        rules.admin_claim = String::new();
        let nobody = Authenticator::hs256(&SecretString::from(SECRET), rules);
        assert!(
            !nobody
                .verify(&claims(json!({"": "operator"})))
                .await
                .unwrap()
                .admin
        );
    }

    #[tokio::test]
    async fn cognito_access_tokens_name_their_client_instead_of_an_audience() {
        let mut rules = TokenRules::new("iss", "client-1");
        rules.client_id_audience = true;
        rules.token_use = Some("access".into());
        let auth = Authenticator::hs256(&SecretString::from(SECRET), rules);
        let exp = now() + 60;
        let access = |client: &str, token_use: &str| {
            token(
                json!({"sub": "alice", "iss": "iss", "exp": exp, "client_id": client, "token_use": token_use}),
            )
        };
        assert_eq!(
            auth.verify(&access("client-1", "access"))
                .await
                .unwrap()
                .user
                .as_str(),
            "alice"
        );
        assert!(auth.verify(&access("client-2", "access")).await.is_err());
        assert!(auth.verify(&access("client-1", "id")).await.is_err());
        // With an `aud`, the audience decides, whatever `client_id` says.
        let id = token(
            json!({"sub": "alice", "iss": "iss", "exp": exp, "aud": "client-2", "client_id": "client-1", "token_use": "access"}),
        );
        assert!(auth.verify(&id).await.is_err());
        let no_client =
            token(json!({"sub": "alice", "iss": "iss", "exp": exp, "token_use": "access"}));
        assert!(auth.verify(&no_client).await.is_err());
    }

    #[tokio::test]
    async fn a_kept_token_stands_for_itself_alone() {
        let auth = authenticator();
        let exp = now() + 60;
        let alice = token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp}));
        assert_eq!(auth.verify(&alice).await.unwrap().user.as_str(), "alice");
        assert_eq!(auth.verified.len(), 1);
        assert_eq!(auth.verify(&alice).await.unwrap().user.as_str(), "alice");

        let (signed, signature) = alice.rsplit_once('.').unwrap();
        // Another signature on the same claims.
        let mut forged = signature.to_string();
        let last = if forged.ends_with('A') { "B" } else { "A" };
        forged.replace_range(forged.len() - 1.., last);
        assert!(auth.verify(&format!("{signed}.{forged}")).await.is_err());
        // The same signature on other claims.
        let mallory = token(json!({"sub": "mallory", "iss": "iss", "aud": "aud", "exp": exp}));
        let (mallory_signed, _) = mallory.rsplit_once('.').unwrap();
        assert!(
            auth.verify(&format!("{mallory_signed}.{signature}"))
                .await
                .is_err()
        );
        // Refused tokens are not kept.
        assert_eq!(auth.verified.len(), 1);
    }

    #[tokio::test]
    async fn without_room_every_token_is_verified_in_full() {
        let auth = authenticator().keeping(0);
        let t = token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}));
        assert_eq!(auth.verify(&t).await.unwrap().user.as_str(), "alice");
        assert!(auth.verified.is_empty());
    }
}
