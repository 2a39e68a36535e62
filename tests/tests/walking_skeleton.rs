//! One upload through the whole system: token, grant, browser-style POST to
//! S3, S3 → EventBridge → ledger → `UsageChanged` → intake → `GET /v1/usage`.

use serde_json::{Value, json};
use std::time::Duration;

use stowage_e2e::{System, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_is_counted_exactly_in_usage() {
    let system = System::start().await.expect("system starts");
    let token = system.token("alice");
    let data = vec![7u8; 12_345];

    let response = system
        .grant(
            &token,
            &json!({"path": "photos/cat.jpg", "size": data.len(), "content_type": "image/jpeg"}),
        )
        .await;
    assert_eq!(response.status, 201);
    let grant = response.body;
    assert_eq!(grant["key"], "users/alice/photos/cat.jpg");
    assert_eq!(grant["max_size"], 12_345);
    assert!(grant["grant_id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(grant["expires_at"].as_str().is_some());

    let before = system.usage(&token).await;
    assert_eq!(before["used_bytes"], 0);
    assert_eq!(before["reserved_bytes"], 12_345);

    let uploaded = system.upload(&grant, data).await;
    assert!(
        uploaded.status().is_success(),
        "S3 refused the upload: {}",
        uploaded.text().await.unwrap_or_default()
    );

    let usage = system.used_bytes_reach(&token, 12_345).await;
    assert_eq!(usage["user_id"], "alice");
    assert_eq!(usage["object_count"], 1);
    // The upload settled its reservation: it no longer holds bytes back.
    assert_eq!(usage["reserved_bytes"], 0);

    // The grant is complete, for its owner only.
    let grant_url = format!(
        "{}/v1/uploads/{}",
        system.intake_url,
        grant["grant_id"].as_str().unwrap_or_default()
    );
    let status: Value = eventually(Duration::from_secs(30), "the grant to complete", || async {
        let status: Value = system
            .http
            .get(&grant_url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["state"] == "COMPLETE").then_some(status)
    })
    .await;
    assert_eq!(
        (status["size"].as_u64(), status["max_size"].as_u64()),
        (Some(12_345), Some(12_345))
    );
    assert_eq!(status["key"], "users/alice/photos/cat.jpg");
    let as_bob = system
        .http
        .get(&grant_url)
        .bearer_auth(system.token("bob"))
        .send()
        .await
        .expect("intake answers");
    assert_eq!(as_bob.status(), 404);

    // Another user sees none of it.
    let bob = system.usage(&system.token("bob")).await;
    assert_eq!(
        (bob["used_bytes"].as_u64(), bob["object_count"].as_u64()),
        (Some(0), Some(0))
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_larger_than_its_grant_is_refused_by_s3_and_not_counted() {
    let system = System::start().await.expect("system starts");
    let token = system.token("carol");

    let grant: Value = system
        .grant(
            &token,
            &json!({"path": "big.bin", "size": 100, "content_type": "application/octet-stream"}),
        )
        .await
        .body;
    let refused = system.upload(&grant, vec![1u8; 101]).await;
    assert_eq!(refused.status(), 400, "S3 must refuse an oversize upload");
    assert!(
        refused
            .text()
            .await
            .unwrap_or_default()
            .contains("EntityTooLarge")
    );

    // A wrong content type is refused as well: the policy binds it exactly.
    let mut wrong_type = grant.clone();
    wrong_type["fields"]["Content-Type"] = json!("text/html");
    assert_eq!(
        system.upload(&wrong_type, vec![1u8; 10]).await.status(),
        403
    );

    // A good upload after them is counted alone.
    let small: Value = system
        .grant(
            &token,
            &json!({"path": "small.txt", "size": 10, "content_type": "text/plain"}),
        )
        .await
        .body;
    assert!(
        system
            .upload(&small, vec![2u8; 10])
            .await
            .status()
            .is_success()
    );
    let usage = system.used_bytes_reach(&token, 10).await;
    assert_eq!(usage["object_count"], 1);
    assert_eq!(
        system.bucket_keys().await,
        vec!["users/carol/small.txt".to_string()]
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_upload_requests_get_a_problem_and_create_nothing() {
    let system = System::start_with(&[("max-upload-bytes", "1000000")])
        .await
        .expect("system starts");
    let token = system.token("dave");
    let cases = [
        json!({"size": 10, "content_type": "text/plain"}),
        json!({"path": "a.txt", "content_type": "text/plain"}),
        json!({"path": "a.txt", "size": 10}),
        json!({"path": "a.txt", "size": 0, "content_type": "text/plain"}),
        json!({"path": "a.txt", "size": -5, "content_type": "text/plain"}),
        json!({"path": "a.txt", "size": 1_000_001, "content_type": "text/plain"}),
        json!({"path": "a.txt", "size": "ten", "content_type": "text/plain"}),
        json!({"path": "../eve/a.txt", "size": 10, "content_type": "text/plain"}),
        json!({"path": "a/../../eve/a.txt", "size": 10, "content_type": "text/plain"}),
        json!({"path": "/etc/passwd", "size": 10, "content_type": "text/plain"}),
        json!({"path": "a\u{0}b", "size": 10, "content_type": "text/plain"}),
        json!({"path": "line\nbreak", "size": 10, "content_type": "text/plain"}),
        json!({"path": "a\\b", "size": 10, "content_type": "text/plain"}),
        json!({"path": "a//b", "size": 10, "content_type": "text/plain"}),
        json!({"path": "", "size": 10, "content_type": "text/plain"}),
        json!({"path": "a/${filename}", "size": 10, "content_type": "text/plain"}),
        json!("not an object"),
    ];
    for body in &cases {
        let response = system.grant(&token, body).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(
            response.headers["content-type"], "application/problem+json",
            "{body}"
        );
        let problem = response.body;
        assert_eq!(problem["status"], 400);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}: {problem}"
        );
    }

    let html = system
        .grant(
            &token,
            &json!({"path": "x.html", "size": 10, "content_type": "text/html"}),
        )
        .await;
    assert_eq!(html.status, 415);

    let unauthenticated = system
        .call(
            reqwest::Method::POST,
            "/v1/uploads",
            None,
            Some(&json!({"path": "a.txt", "size": 10, "content_type": "text/plain"})),
        )
        .await;
    assert_eq!(unauthenticated.status, 401);

    let usage = system.usage(&token).await;
    assert_eq!(
        (
            usage["reserved_bytes"].as_u64(),
            usage["used_bytes"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(system.bucket_keys().await.is_empty());
    system.stop().await;
}
