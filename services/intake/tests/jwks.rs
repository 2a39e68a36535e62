//! Bearer tokens verified against a JWKS served for real: a loopback HTTP
//! server publishes the public halves of the test keys in `fixtures/`
//! (see `fixtures/generate.sh`), and tokens are signed with the private ones.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use stowage_intake::auth::{AuthError, Authenticator, Caller, JwksOptions, TokenRules};
use tokio::sync::Notify;

const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test";
const AUDIENCE: &str = "app-client-1";

const RSA_1: &str = include_str!("fixtures/rsa-1.key.pem");
const RSA_1_PUBLIC: &str = include_str!("fixtures/rsa-1.pub.pem");
const RSA_2: &str = include_str!("fixtures/rsa-2.key.pem");
const EC_1: &str = include_str!("fixtures/ec-1.key.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

/// The identity provider's JWKS endpoint, on loopback.
struct Provider {
    url: String,
    state: Arc<Published>,
}

#[derive(Default)]
struct Published {
    /// The kids of the fixture keys currently published.
    kids: Mutex<Vec<&'static str>>,
    /// Requests served, failed ones included.
    fetches: AtomicUsize,
    /// Answer 500 instead of the document.
    failing: AtomicBool,
    /// When set, each request waits for [`Published::release`] first.
    gated: AtomicBool,
    release: Notify,
}

async fn jwks(State(state): State<Arc<Published>>) -> Result<Json<Value>, StatusCode> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if state.gated.load(Ordering::SeqCst) {
        state.release.notified().await;
    }
    if state.failing.load(Ordering::SeqCst) {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let all: Value = serde_json::from_str(JWKS).expect("fixture JWKS parses");
    let kids = state.kids.lock().unwrap().clone();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| kids.iter().any(|kid| key["kid"] == *kid))
        .cloned()
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

impl Provider {
    async fn start(kids: &[&'static str]) -> Self {
        let state = Arc::new(Published::default());
        state.kids.lock().unwrap().extend_from_slice(kids);
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn publish(&self, kids: &[&'static str]) {
        *self.state.kids.lock().unwrap() = kids.to_vec();
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// An authenticator trusting this provider, with Cognito-like rules.
    fn authenticator(&self, options: JwksOptions) -> Authenticator {
        Authenticator::jwks(&self.url, TokenRules::new(ISSUER, AUDIENCE), options).unwrap()
    }
}

/// Refreshes never rate-limited, keys never too old.
fn eager() -> JwksOptions {
    JwksOptions {
        min_refresh_interval: Duration::ZERO,
        ..JwksOptions::default()
    }
}

/// At most one fetch for the whole test.
fn once() -> JwksOptions {
    JwksOptions {
        min_refresh_interval: Duration::from_secs(3600),
        ..JwksOptions::default()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Valid claims for alice, with `extra` added or overriding.
fn claims(extra: Value) -> Value {
    let mut all = json!({
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 600, "token_use": "id",
    });
    let all_map = all.as_object_mut().unwrap();
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            all_map.remove(name);
        } else {
            all_map.insert(name.clone(), value.clone());
        }
    }
    all
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    encode(&header, claims, key).expect("token encodes")
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

fn ec(pem: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
}

fn rs256(kid: &str, extra: Value) -> String {
    sign(Algorithm::RS256, kid, &rsa(RSA_1), &claims(extra))
}

fn es256(extra: Value) -> String {
    sign(Algorithm::ES256, "ec-1", &ec(EC_1), &claims(extra))
}

fn user(caller: Result<Caller, AuthError>) -> String {
    caller.expect("token accepted").user.to_string()
}

fn assert_refused(result: Result<Caller, AuthError>, why: &str) {
    assert!(
        matches!(result, Err(AuthError::Invalid(_))),
        "{why}: {result:?}"
    );
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_accepted() {
    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let auth = provider.authenticator(once());

    let caller = auth.verify(&rs256("rsa-1", json!({}))).await.unwrap();
    assert_eq!(caller.user.as_str(), "alice");
    assert!(!caller.admin);
    let admin = json!({"sub": "bob", "cognito:groups": ["staff", "stowage-admins"]});
    let caller = auth.verify(&es256(admin)).await.unwrap();
    assert_eq!(caller.user.as_str(), "bob");
    assert!(caller.admin);
    let header = format!("Bearer {}", es256(json!({})));
    assert_eq!(user(auth.verify_header(Some(&header)).await), "alice");

    assert_eq!(provider.fetches(), 1, "both keys come from one fetch");
}

#[tokio::test]
async fn tokens_with_bad_claims_are_refused() {
    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let auth = provider.authenticator(once());
    let cases = [
        (
            json!({"iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"}),
            "other issuer",
        ),
        (json!({"iss": null}), "no issuer"),
        (json!({"aud": "app-client-2"}), "other audience"),
        (
            json!({"aud": null, "client_id": AUDIENCE}),
            "no audience, client_id not accepted",
        ),
        (json!({"exp": now() - 120}), "expired"),
        (json!({"exp": null}), "no expiry"),
        (json!({"nbf": now() + 600}), "not yet valid"),
        (json!({"sub": "alice/../bob"}), "bad sub"),
        (json!({"sub": "a".repeat(129)}), "long sub"),
        (json!({"sub": null}), "no sub"),
    ];
    for (extra, why) in cases {
        assert_refused(auth.verify(&rs256("rsa-1", extra.clone())).await, why);
        assert_refused(auth.verify(&es256(extra)).await, why);
    }
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};

    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let auth = provider.authenticator(once());
    assert_eq!(user(auth.verify(&rs256("rsa-1", json!({}))).await), "alice");

    let valid = rs256("rsa-1", json!({}));
    let (signed, signature) = valid.rsplit_once('.').unwrap();
    let (header, _) = signed.split_once('.').unwrap();
    let as_bob = B64.encode(claims(json!({"sub": "bob"})).to_string());
    let no_kid = encode(
        &Header::new(Algorithm::RS256),
        &claims(json!({})),
        &rsa(RSA_1),
    )
    .unwrap();
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let body = B64.encode(claims(json!({})).to_string());
    let cases = [
        (
            sign(Algorithm::RS256, "rsa-1", &rsa(RSA_2), &claims(json!({}))),
            "signed by another key",
        ),
        (format!("{header}.{as_bob}.{signature}"), "claims altered"),
        (format!("{none_header}.{body}."), "alg none"),
        (
            format!("{none_header}.{body}"),
            "alg none, no signature part",
        ),
        (
            sign(
                Algorithm::HS256,
                "rsa-1",
                &EncodingKey::from_secret(RSA_1_PUBLIC.as_bytes()),
                &claims(json!({})),
            ),
            "HS256 keyed with the RSA public key",
        ),
        (
            sign(Algorithm::ES256, "rsa-1", &ec(EC_1), &claims(json!({}))),
            "ES256 naming an RSA key",
        ),
        (
            sign(Algorithm::RS256, "ec-1", &rsa(RSA_1), &claims(json!({}))),
            "RS256 naming an EC key",
        ),
        (
            sign(Algorithm::PS256, "rsa-1", &rsa(RSA_1), &claims(json!({}))),
            "PS256 with an RS256 key",
        ),
        (no_kid, "no kid"),
        ("not.a.token".to_string(), "garbage"),
    ];
    for (token, why) in cases {
        assert_refused(auth.verify(&token).await, why);
    }
    assert_eq!(provider.fetches(), 1, "no forged token caused a fetch");
}

#[tokio::test]
async fn an_unknown_kid_causes_one_refresh_then_is_refused() {
    let provider = Provider::start(&["rsa-1"]).await;
    let auth = provider.authenticator(once());
    assert_eq!(user(auth.verify(&rs256("rsa-1", json!({}))).await), "alice");
    assert_eq!(provider.fetches(), 1);

    // The refresh is rate-limited, so made-up kids cannot make intake
    // hammer the provider.
    let fresh = provider.authenticator(once());
    for i in 0..20 {
        let made_up = rs256(&format!("made-up-{i}"), json!({}));
        assert_refused(fresh.verify(&made_up).await, "unknown kid");
    }
    assert_eq!(provider.fetches(), 2, "one fetch for twenty unknown kids");
    assert_eq!(
        user(fresh.verify(&rs256("rsa-1", json!({}))).await),
        "alice"
    );
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_withdrawn_ones_dropped() {
    let provider = Provider::start(&["rsa-1"]).await;
    let auth = provider.authenticator(eager());
    let old = rs256("rsa-1", json!({}));
    let new = sign(Algorithm::RS256, "rsa-2", &rsa(RSA_2), &claims(json!({})));
    assert_eq!(user(auth.verify(&old).await), "alice");
    assert_refused(auth.verify(&new).await, "not yet published");
    assert_eq!(provider.fetches(), 2);

    provider.publish(&["rsa-1", "rsa-2"]);
    assert_eq!(user(auth.verify(&new).await), "alice");
    assert_eq!(provider.fetches(), 3);
    assert_eq!(user(auth.verify(&old).await), "alice");
    assert_eq!(user(auth.verify(&new).await), "alice");
    assert_eq!(
        provider.fetches(),
        3,
        "known keys are served from the cache"
    );

    // A key the provider withdraws stops working once the cache is too old.
    let expiring = provider.authenticator(JwksOptions {
        max_age: Duration::ZERO,
        ..eager()
    });
    assert_eq!(user(expiring.verify(&old).await), "alice");
    provider.publish(&["rsa-2"]);
    assert_refused(expiring.verify(&old).await, "withdrawn key");
    assert_eq!(user(expiring.verify(&new).await), "alice");
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let provider = Provider::start(&["rsa-1", "ec-1"]).await;
    let auth = Arc::new(provider.authenticator(eager()));
    provider.state.gated.store(true, Ordering::SeqCst);

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..16 {
        let auth = Arc::clone(&auth);
        let token = if i % 2 == 0 {
            rs256("rsa-1", json!({}))
        } else {
            es256(json!({}))
        };
        requests.spawn(async move { auth.verify(&token).await });
    }
    // The first request is at the provider; the others, spawned before its
    // HTTP exchange could progress, are waiting for that fetch.
    while provider.fetches() == 0 {
        tokio::task::yield_now().await;
    }
    provider.state.gated.store(false, Ordering::SeqCst);
    provider.state.release.notify_waiters();
    while let Some(result) = requests.join_next().await {
        assert_eq!(user(result.unwrap()), "alice");
    }
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_provider_makes_tokens_uncheckable_not_invalid() {
    let provider = Provider::start(&["rsa-1"]).await;
    provider.fail(true);
    let auth = provider.authenticator(once());
    let token = rs256("rsa-1", json!({}));
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
    // Rate-limited: the failure stands without another fetch.
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
    assert_eq!(provider.fetches(), 1);

    // Once it answers again, the next allowed refresh succeeds.
    let auth = provider.authenticator(eager());
    assert!(auth.preload().await.is_err());
    provider.fail(false);
    assert_eq!(user(auth.verify(&token).await), "alice");

    // Keys already held keep working while a refresh of old keys fails.
    let expiring = provider.authenticator(JwksOptions {
        max_age: Duration::ZERO,
        ..eager()
    });
    assert_eq!(user(expiring.verify(&token).await), "alice");
    provider.fail(true);
    let before = provider.fetches();
    assert_eq!(user(expiring.verify(&token).await), "alice");
    assert_eq!(provider.fetches(), before + 1, "a refresh was attempted");

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let nowhere = Authenticator::jwks(&url, TokenRules::new(ISSUER, AUDIENCE), once()).unwrap();
    assert!(matches!(
        nowhere.verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
}

#[tokio::test]
async fn cognito_access_tokens_work_by_configuration() {
    let provider = Provider::start(&["rsa-1"]).await;
    let rules = TokenRules {
        client_id_audience: true,
        token_use: Some("access".into()),
        ..TokenRules::new(ISSUER, AUDIENCE)
    };
    let auth = Authenticator::jwks(&provider.url, rules, once()).unwrap();
    // The shape of a Cognito user-pool access token.
    let access = json!({
        "sub": "6b2c0e4a-1f0d-4c3e-9d7a-0f8f7b0c2d11",
        "cognito:groups": ["stowage-admins"],
        "iss": ISSUER,
        "client_id": AUDIENCE,
        "origin_jti": "0a3a4b0e-6a51-4f7e-9c66-41c7e8f1c6d2",
        "event_id": "f1f0d0a4-3d22-4b38-8d52-6c2f0a3c1e9b",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": now(),
        "exp": now() + 3600,
        "iat": now(),
        "jti": "8c6f0d2e-5b1a-4e0f-a1d7-3f9e2b4c6a80",
        "username": "alice",
        "aud": null,
    });
    let caller = auth.verify(&rs256("rsa-1", access.clone())).await.unwrap();
    assert_eq!(caller.user.as_str(), "6b2c0e4a-1f0d-4c3e-9d7a-0f8f7b0c2d11");
    assert!(caller.admin);

    let other_client = json!({"client_id": "app-client-2"});
    let mut forged = claims(access.clone());
    forged
        .as_object_mut()
        .unwrap()
        .extend(other_client.as_object().unwrap().clone());
    assert_refused(
        auth.verify(&sign(Algorithm::RS256, "rsa-1", &rsa(RSA_1), &forged))
            .await,
        "other app client",
    );
    // An ID token of the same pool is not an access token.
    assert_refused(auth.verify(&rs256("rsa-1", json!({}))).await, "ID token");
}
