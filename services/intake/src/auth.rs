//! Bearer-token authentication. Tokens are JWTs whose `sub` is the user id;
//! issuer, audience, expiry and not-before are checked, and only the
//! configured algorithm is accepted (so `alg: none` never is).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::keys::UserId;

/// Who is calling, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
}

/// Why a request is not authenticated; shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Tokens signed with a shared HS256 secret (local use).
    pub fn hs256(secret: &SecretString, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// Checks a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let user =
            UserId::parse(&data.claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        Ok(Caller { user })
    }

    /// Checks an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Invalid("expected 'Authorization: Bearer <token>'".into()))?;
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-enough-length";

    fn authenticator() -> Authenticator {
        Authenticator::hs256(&SecretString::from(SECRET), "iss", "aud")
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

    #[test]
    fn a_valid_token_names_its_user() {
        let t = token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}));
        assert_eq!(authenticator().verify(&t).unwrap().user.as_str(), "alice");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let exp = now() + 60;
        let cases = [
            token(json!({"sub": "alice", "iss": "other", "aud": "aud", "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "aud": "other", "exp": exp})),
            token(json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() - 120})),
            token(
                json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp, "nbf": now() + 600}),
            ),
            token(json!({"sub": "../bob", "iss": "iss", "aud": "aud", "exp": exp})),
            token(json!({"iss": "iss", "aud": "aud", "exp": exp})),
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp}),
                &EncodingKey::from_secret(b"another-secret-entirely"),
            )
            .unwrap(),
        ];
        for t in cases {
            assert!(authenticator().verify(&t).is_err(), "{t}");
        }
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = B64.encode(
            json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 60}).to_string(),
        );
        for t in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(authenticator().verify(&t).is_err());
        }
    }

    #[test]
    fn the_header_must_carry_a_bearer_token() {
        let auth = authenticator();
        assert_eq!(auth.verify_header(None), Err(AuthError::Missing));
        assert!(auth.verify_header(Some("Basic abc")).is_err());
    }
}
