//! Intake's API end to end: uploads, listing, downloads, deletes, restores,
//! quotas under concurrency, rate limits and tenant isolation. Every response
//! is checked against the OpenAPI document by the harness.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use stowage_e2e::{Reply, System, eventually};

const MB: u64 = 1_000_000;

/// Waits until `GET /v1/uploads/{grant}` says `state`.
async fn grant_reaches(system: &System, token: &str, grant_id: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("grant {state}"),
        || async {
            let reply = system.get(token, &format!("/v1/uploads/{grant_id}")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            (reply.body["state"] == state).then_some(reply.body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_round_trips_through_the_api() {
    let system = System::start().await.expect("system starts");
    let token = system.token("alice");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let path = "reports/2026/q3 summary.txt";

    let reply = system
        .grant(
            &token,
            &json!({"path": path, "size": data.len(), "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let grant = reply.body;
    let uploaded = system.upload(&grant, data.clone()).await;
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    let grant_id = grant["grant_id"].as_str().expect("grant id");
    let done = grant_reaches(&system, &token, grant_id, "COMPLETE").await;
    assert_eq!(done["size"], data.len());

    let usage = system.used_bytes_reach(&token, data.len() as u64).await;
    assert_eq!(usage["object_count"], 1);
    assert_eq!(usage["by_storage_class"], json!({"STANDARD": data.len()}));
    let cost = usage["estimated_monthly_cost_usd"].as_f64().expect("cost");
    let expected = data.len() as f64 / (1u64 << 30) as f64 * 0.023;
    assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");

    let listed = system.get(&token, "/v1/objects").await;
    assert_eq!(listed.status, 200);
    let objects = listed.body["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["path"], path);
    assert_eq!(objects[0]["size"], data.len());
    assert_eq!(objects[0]["storage_class"], "STANDARD");
    assert_eq!(listed.body["next_cursor"], Value::Null);

    let shown = system
        .get(&token, "/v1/objects/reports/2026/q3%20summary.txt")
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["content_type"], "text/plain");
    let url = shown.body["download_url"].as_str().expect("download url");
    let download = system.http.get(url).send().await.expect("S3 answers");
    assert_eq!(download.status(), 200);
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        disposition.starts_with("attachment;") && disposition.contains("q3%20summary.txt"),
        "{disposition}"
    );
    assert_eq!(download.bytes().await.expect("bytes").as_ref(), &data[..]);

    for _ in 0..2 {
        let deleted = system
            .call(
                Method::DELETE,
                "/v1/objects/reports/2026/q3%20summary.txt",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(deleted.status, 204);
    }
    let gone = system
        .get(&token, "/v1/objects/reports/2026/q3%20summary.txt")
        .await;
    assert_eq!(gone.status, 404);
    let usage = system.used_bytes_reach(&token, 0).await;
    assert_eq!(usage["object_count"], 0);
    assert_eq!(usage["estimated_monthly_cost_usd"].to_string(), "0.0");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_page_with_cursors_and_stay_in_the_callers_folder() {
    let system = System::start().await.expect("system starts");
    let token = system.token("bob");
    let own = ["a/1.txt", "a/2.txt", "a/3.txt", "b/1.txt", "c.txt"];
    for path in own {
        system
            .put_object(&format!("users/bob/{path}"), b"x".to_vec(), "STANDARD")
            .await;
    }
    for key in [
        "users/bo/a/1.txt",
        "users/bob2/a/1.txt",
        "users/bob-x/c.txt",
    ] {
        system.put_object(key, b"y".to_vec(), "STANDARD").await;
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/objects?limit=2&cursor={c}"),
            None => "/v1/objects?limit=2".to_string(),
        };
        let page = system.get(&token, &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let objects = page.body["objects"].as_array().expect("objects");
        assert!(objects.len() <= 2);
        seen.extend(
            objects
                .iter()
                .map(|o| o["path"].as_str().unwrap().to_string()),
        );
        cursor = page.body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, own.map(String::from).to_vec());

    let under_a = system.get(&token, "/v1/objects?prefix=a/").await;
    let paths: Vec<&str> = under_a.body["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a/1.txt", "a/2.txt", "a/3.txt"]);

    for bad in [
        "/v1/objects?limit=0",
        "/v1/objects?limit=1001",
        "/v1/objects?limit=ten",
        "/v1/objects?cursor=!!!",
        "/v1/objects?prefix=../bob2/",
        "/v1/objects?prefix=/",
        "/v1/objects?prefix=a//",
    ] {
        let reply = system.get(&token, bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    // A cursor only says where a page resumes: one spelling a way out of
    // the caller's folder ("../bob2/a") still lists the caller's own objects.
    let escape = system.get(&token, "/v1/objects?cursor=Li4vYm9iMi9h").await;
    assert_eq!(escape.status, 200, "{}", escape.body);
    let paths: Vec<&str> = escape.body["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, own);
    system.stop().await;
}

/// Reads Stowage events of `detail_type` from a queue nobody consumes.
async fn events(system: &System, queue: &str, detail_type: &str, count: usize) -> Vec<Value> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while found.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {count} {detail_type}"
        );
        // Each empty receive long-polls, so this loop does not spin.
        found.extend(received(system, queue, detail_type).await);
    }
    found
}

/// The details of the events of `detail_type` one receive finds on a
/// queue nobody consumes.
async fn received(system: &System, queue: &str, detail_type: &str) -> Vec<Value> {
    let bodies = system.drain(system.stack.get(queue)).await;
    bodies
        .iter()
        .map(|body| serde_json::from_str::<Value>(body).expect("event JSON"))
        .filter(|event| event["detail-type"] == detail_type)
        .map(|event| event["detail"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archived_objects_answer_409_until_restored_and_restores_are_published() {
    let system = System::start_parts(&[], stowage_e2e::Parts::WITHOUT_LIFECYCLE)
        .await
        .expect("system starts");
    let token = system.token("carol");
    system
        .put_object("users/carol/old/2019.zip", vec![1; 300], "GLACIER")
        .await;
    system
        .put_object("users/carol/new.txt", vec![2; 30], "STANDARD")
        .await;

    let archived = system.get(&token, "/v1/objects/old/2019.zip").await;
    assert_eq!(archived.status, 409, "{}", archived.body);
    assert_eq!(archived.body["type"], "/problems/object-archived");
    assert_eq!(archived.body["storage_class"], "GLACIER");
    assert_eq!(archived.body["restore"], "ARCHIVED");

    let restore = |path: &str, days: i64| {
        let body = json!({"path": path, "days": days});
        let system = &system;
        let token = &token;
        async move {
            system
                .call(Method::POST, "/v1/restores", Some(token), Some(&body))
                .await
        }
    };
    let accepted = restore("old/2019.zip", 3).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.body["state"], "ARCHIVED");
    assert_eq!(restore("new.txt", 3).await.status, 409);
    assert_eq!(restore("missing.zip", 3).await.status, 404);
    // Past the deployment's longest restore (30 days here) is refused, as
    // the lifecycle service would grant no more.
    for days in [0, -1, 31, 366] {
        let refused = restore("old/2019.zip", days).await;
        assert_eq!(refused.status, 400, "{days}");
        assert_eq!(
            refused.body["detail"], "days must be between 1 and 30",
            "{days}"
        );
    }
    assert_eq!(restore("../dave/x.zip", 3).await.status, 400);

    let shown = system.get(&token, "/v1/objects/new.txt").await;
    assert_eq!(shown.status, 200, "{}", shown.body);

    let requested = events(
        &system,
        "STOWAGE_LIFECYCLE_QUEUE_URL",
        "RestoreRequested.v1",
        1,
    )
    .await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["key"], "users/carol/old/2019.zip");
    assert_eq!(requested[0]["user_id"], "carol");
    assert_eq!(requested[0]["days"], 3);
    assert_eq!(requested[0]["storage_class"], "GLACIER");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_publish_object_accessed() {
    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("erin");
    system
        .put_object("users/erin/photo.png", vec![3; 64], "STANDARD")
        .await;
    assert_eq!(
        system.get(&token, "/v1/objects/photo.png").await.status,
        200
    );
    let accessed = events(
        &system,
        "STOWAGE_LIFECYCLE_QUEUE_URL",
        "ObjectAccessed.v1",
        1,
    )
    .await;
    assert_eq!(accessed[0]["key"], "users/erin/photo.png");
    assert_eq!(accessed[0]["user_id"], "erin");
    assert_eq!(accessed[0]["size"], 64);
    assert_eq!(accessed[0]["storage_class"], "STANDARD");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_grants_against_room_for_ten_admit_exactly_ten() {
    let system = System::start_with(&[
        ("default-quota-bytes", "100000000"),
        ("grant-burst", "1000"),
    ])
    .await
    .expect("system starts");
    for round in 0..8 {
        let token = system.token(&format!("racer{round}"));
        let replies = futures::future::join_all((0..50).map(|i| {
            let body = json!({"path": format!("f{i}.bin"), "size": 10 * MB, "content_type": "application/octet-stream"});
            let system = &system;
            let token = &token;
            async move { system.grant(token, &body).await }
        }))
        .await;
        let admitted = replies.iter().filter(|r| r.status == 201).count();
        let refused: Vec<&Value> = replies
            .iter()
            .filter(|r| r.status == 403)
            .map(|r| &r.body)
            .collect();
        assert_eq!(admitted, 10, "round {round}");
        assert_eq!(refused.len(), 40, "round {round}");
        assert!(
            refused
                .iter()
                .all(|p| p["type"] == "/problems/quota-exceeded"
                    && p["usage"]["quota_bytes"] == 100 * MB),
            "round {round}"
        );
        let usage = system.usage(&token).await;
        assert_eq!(usage["reserved_bytes"], 100 * MB, "round {round}");
        if round == 0 {
            for problem in refused {
                let id = problem["grant_id"].as_str().expect("refused grant id");
                let status = system.get(&token, &format!("/v1/uploads/{id}")).await;
                assert_eq!(status.body["state"], "REJECTED");
            }
        }
    }
    system.stop().await;
}

/// The seconds a `429` problem of type `slug` says to wait, checked to be
/// the same in its `Retry-After` header and its body.
fn too_many(reply: &Reply, slug: &str) -> u64 {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["type"], format!("/problems/{slug}"));
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert_eq!(reply.body["retry_after"], retry_after);
    retry_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_requests_beyond_the_rate_get_429_with_retry_after() {
    let system = System::start_with(&[("grant-rate-per-minute", "1"), ("grant-burst", "3")])
        .await
        .expect("system starts");
    let token = system.token("frank");
    let body =
        |i: u32| json!({"path": format!("r{i}.txt"), "size": 10, "content_type": "text/plain"});
    for i in 0..3 {
        assert_eq!(system.grant(&token, &body(i)).await.status, 201);
    }
    // The burst is spent; at one grant a minute the next is refused.
    let limited = system.grant(&token, &body(3)).await;
    let retry_after = too_many(&limited, "rate-limited");
    // One grant a minute: the next is due within the minute.
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let other = system.token("grace");
    assert_eq!(system.grant(&other, &body(0)).await.status, 201);
    assert_eq!(system.usage(&token).await["reserved_bytes"], 30);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_beyond_the_outstanding_cap_get_429_with_the_wait_until_one_lapses() {
    let system = System::start_with(&[
        ("max-outstanding-grants", "2"),
        ("grant-ttl-seconds", "600"),
        ("settle-window-seconds", "300"),
    ])
    .await
    .expect("system starts");
    let token = system.token("heidi");
    let body =
        |i: u32| json!({"path": format!("c{i}.txt"), "size": 10, "content_type": "text/plain"});
    for i in 0..2 {
        assert_eq!(system.grant(&token, &body(i)).await.status, 201);
    }
    let capped = system.grant(&token, &body(2)).await;
    let retry_after = too_many(&capped, "too-many-grants");
    // The first grant lapses 600 + 300 s after it was made, moments ago.
    assert!((840..=900).contains(&retry_after), "{retry_after}");
    let id = capped.body["grant_id"].as_str().expect("refused grant id");
    let status = system.get(&token, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status.body["state"], "REJECTED");
    // Nothing of the refused grant is held, and another user is not capped.
    assert_eq!(system.usage(&token).await["reserved_bytes"], 20);
    let other = system.token("ivan");
    assert_eq!(system.grant(&other, &body(0)).await.status, 201);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_spelling_of_a_path_reaches_another_users_objects() {
    let system = System::start_parts(&[], stowage_e2e::Parts::WITHOUT_LIFECYCLE)
        .await
        .expect("system starts");
    let alice = system.token("alice");
    let bob = system.token("bob");
    let secrets = ["secret.txt", "caf\u{e9}.txt", "vault/deep.txt"];
    for path in secrets {
        system
            .put_object(
                &format!("users/alice/{path}"),
                b"alice only".to_vec(),
                "GLACIER",
            )
            .await;
    }
    let alice_grant = system
        .grant(
            &alice,
            &json!({"path": "next.txt", "size": 5, "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(alice_grant.status, 201);
    let grant_id = alice_grant.body["grant_id"].as_str().expect("grant id");

    // Bob cannot poll Alice's grant, by id or any spelling of it.
    for path in [
        format!("/v1/uploads/{grant_id}"),
        format!("/v1/uploads/{}", grant_id.to_uppercase()),
        format!("/v1/uploads/%20{grant_id}"),
        // Not even UTF-8 once decoded.
        format!("/v1/uploads/{grant_id}%FF"),
    ] {
        let reply = system.raw("GET", &path, &bob).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
    }

    // Every spelling of a way into Alice's folder, as Bob, on every endpoint.
    let long = "a/".repeat(460);
    let spellings = [
        "../alice/secret.txt".to_string(),
        "%2e%2e/alice/secret.txt".into(),
        "%2E%2E%2Falice%2Fsecret.txt".into(),
        "..%2falice%2fsecret.txt".into(),
        "x/../../alice/secret.txt".into(),
        "x/%2e%2e/%2e%2e/alice/secret.txt".into(),
        "/alice/secret.txt".into(),
        "%2Fusers%2Falice%2Fsecret.txt".into(),
        "users/alice/secret.txt".into(),
        "..\\alice\\secret.txt".replace('\\', "%5C"),
        "..%5Calice%5Csecret.txt".into(),
        ".%2e/alice/secret.txt".into(),
        "alice//secret.txt".into(),
        "./../alice/secret.txt".into(),
        "cafe%CC%81.txt".into(),
        "%EF%BC%8E%EF%BC%8E/alice/secret.txt".into(),
        "..%00/alice/secret.txt".into(),
        format!("{long}secret.txt"),
    ];
    for spelling in &spellings {
        let path = format!("/v1/objects/{spelling}");
        let read = system.raw("GET", &path, &bob).await;
        assert!(
            [400, 404].contains(&read.status),
            "GET {path}: {} {}",
            read.status,
            read.body
        );
        let deleted = system.raw("DELETE", &path, &bob).await;
        assert!(
            [204, 400].contains(&deleted.status),
            "DELETE {path}: {}",
            deleted.status
        );
        let decoded = percent_decode(spelling);
        let restore = system
            .call(
                Method::POST,
                "/v1/restores",
                Some(&bob),
                Some(&json!({"path": decoded, "days": 1})),
            )
            .await;
        assert!(
            [400, 404].contains(&restore.status),
            "restore {decoded:?}: {}",
            restore.status
        );
        let grant = system
            .grant(
                &bob,
                &json!({"path": decoded, "size": 1, "content_type": "text/plain"}),
            )
            .await;
        match grant.status {
            400 => {}
            201 => assert!(
                grant.body["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("users/bob/")),
                "{decoded:?}: {}",
                grant.body
            ),
            other => panic!("grant {decoded:?}: {other}"),
        }
        let listed = system
            .raw("GET", &format!("/v1/objects?prefix={spelling}"), &bob)
            .await;
        assert!(
            listed.status == 400
                || listed.body["objects"]
                    .as_array()
                    .is_some_and(|o| o.is_empty()),
            "list {spelling}: {}",
            listed.body
        );
    }
    let everything = system.get(&bob, "/v1/objects").await;
    assert_eq!(everything.body["objects"], json!([]));

    // Alice's objects are all still there, and a look-alike spelling of her
    // own path (decomposed é) names her object for her.
    for path in secrets {
        assert!(
            system.exists(&format!("users/alice/{path}")).await,
            "{path}"
        );
    }
    let own = system
        .raw("GET", "/v1/objects/cafe%CC%81.txt", &alice)
        .await;
    assert_eq!(own.status, 409, "{}", own.body);
    let requested = system
        .call(
            Method::POST,
            "/v1/restores",
            Some(&alice),
            Some(&json!({"path": "vault/deep.txt", "days": 1})),
        )
        .await;
    assert_eq!(requested.status, 202);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_administrators_set_quotas_and_grants_follow_them() {
    let system = System::start().await.expect("system starts");
    let admin = system.admin_token("root");
    let heidi = system.token("heidi");
    let set = |token: String, user: &'static str, body: Value| {
        let system = &system;
        async move {
            system
                .call(
                    Method::PUT,
                    &format!("/v1/admin/quotas/{user}"),
                    Some(&token),
                    Some(&body),
                )
                .await
        }
    };

    let refused = set(heidi.clone(), "heidi", json!({"quota_bytes": 1u64 << 40})).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["type"], "/problems/forbidden");
    assert_eq!(system.usage(&heidi).await["quota_bytes"], 1u64 << 30);

    for (user, body) in [
        ("heidi", json!({"quota_bytes": -1})),
        ("heidi", json!({"quota": 5})),
        ("he.di", json!({"quota_bytes": 5})),
    ] {
        let reply = set(admin.clone(), user, body.clone()).await;
        assert_eq!(reply.status, 400, "{user} {body}: {}", reply.body);
    }
    assert_eq!(system.usage(&heidi).await["quota_bytes"], 1u64 << 30);

    let done = set(admin.clone(), "heidi", json!({"quota_bytes": 15})).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["quota_bytes"], 15);
    assert_eq!(system.usage(&heidi).await["quota_bytes"], 15);
    let grant = |path: &str| json!({"path": path, "size": 10, "content_type": "text/plain"});
    assert_eq!(system.grant(&heidi, &grant("a.txt")).await.status, 201);
    let over = system.grant(&heidi, &grant("b.txt")).await;
    assert_eq!(over.status, 403);
    assert_eq!(over.body["usage"]["quota_bytes"], 15);

    // Another process (the operators' tool) raises the quota: intake's own
    // copy of the account is now behind, and must not refuse on it.
    let sdk = stowage_shared::aws::load().await;
    let elsewhere = stowage_intake::adapters::dynamodb::DynamoAccountStore::new(
        stowage_shared::aws::dynamodb(&sdk),
        system.stack.get("STOWAGE_INTAKE_TABLE"),
    );
    let user = stowage_intake::domain::keys::UserId::parse("heidi").expect("valid id");
    stowage_intake::accounts::set_quota(&elsewhere, &user, 25)
        .await
        .expect("quota set");
    let admitted = system.grant(&heidi, &grant("b.txt")).await;
    assert_eq!(admitted.status, 201, "{}", admitted.body);
    assert_eq!(system.usage(&heidi).await["reserved_bytes"], 20);
    system.stop().await;
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = raw.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_each_publish_their_upload_granted_once() {
    let system = System::start_parts(&[("grant-burst", "1000")], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let replies = futures::future::join_all((0..30).map(|i| {
        let system = &system;
        async move {
            let token = system.token(&format!("burst{}", i % 3));
            let body = json!({"path": format!("f{i}.bin"), "size": 1000, "content_type": "application/octet-stream"});
            system.grant(&token, &body).await
        }
    }))
    .await;
    let mut granted: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["grant_id"].as_str().expect("grant id").to_string()
        })
        .collect();
    let mut published: Vec<String> =
        events(&system, "STOWAGE_LEDGER_QUEUE_URL", "UploadGranted.v1", 30)
            .await
            .iter()
            .map(|e| e["grant_id"].as_str().expect("grant id").to_string())
            .collect();
    granted.sort();
    published.sort();
    assert_eq!(published, granted);
    system.stop().await;
}

/// `UploadGranted.v1` of `user`'s file number `i`.
fn granted(user: &str, i: usize) -> stowage_events::UploadGrantedV1 {
    stowage_events::UploadGrantedV1 {
        meta: stowage_events::EventMeta::new(user, Default::default()),
        grant_id: uuid::Uuid::new_v4(),
        key: format!("users/{user}/f{i}"),
        max_size: 10,
        content_type: "text/plain".to_string(),
        expires_at: time::OffsetDateTime::now_utc(),
    }
}

/// A coalescing bus sends the events of callers publishing at the same time
/// together, ten to a request, and each still arrives once.
#[tokio::test(flavor = "current_thread")]
async fn publishes_at_the_same_time_share_put_events_requests() {
    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let counter = stowage_e2e::RequestCounter::default();
    let sdk = stowage_shared::aws::load().await;
    let client = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let bus =
        stowage_shared::publisher::EventBus::new(client, system.stack.get("STOWAGE_EVENT_BUS"))
            .coalescing(1);
    let sent: Vec<stowage_events::UploadGrantedV1> =
        (0..40).map(|i| granted("coalesced", i)).collect();
    // Every caller hands over its event before the bus sends any request.
    let results = futures::future::join_all(sent.iter().map(|event| bus.publish(event))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        counter.get(),
        4,
        "40 events, 10 per request, one request at a time"
    );

    let mut published: Vec<String> =
        events(&system, "STOWAGE_LEDGER_QUEUE_URL", "UploadGranted.v1", 40)
            .await
            .iter()
            .map(|e| e["grant_id"].as_str().expect("grant id").to_string())
            .collect();
    let mut expected: Vec<String> = sent.iter().map(|e| e.grant_id.to_string()).collect();
    published.sort();
    expected.sort();
    assert_eq!(published, expected);

    // A caller alone is sent at once, in a request of its own.
    bus.publish(&sent[0]).await.expect("published");
    assert_eq!(counter.get(), 5);
    system.stop().await;
}

/// Lets every other task on this current-thread runtime run until it waits.
async fn let_others_run() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Holds the stub's answers and makes request 0 with `make`; once it is
/// out, makes requests 1 to 5 one at a time, each handed over and looked at
/// before the next while slots are free, and checks that none went out
/// meanwhile. Then releases the answers and waits for every request.
async fn first_out_then_five(
    stub: &stowage_e2e::aws_stub::AwsStub,
    make: impl Fn(usize) -> tokio::task::JoinHandle<()>,
) {
    stub.hold();
    let mut made = vec![make(0)];
    eventually(Duration::from_secs(10), "the first request", || async {
        (stub.total_requests() == 1).then_some(())
    })
    .await;
    for i in 1..=5 {
        made.push(make(i));
        let_others_run().await;
    }
    assert_eq!(stub.total_requests(), 1, "the five wait for the first");
    stub.release();
    for outcome in futures::future::join_all(made).await {
        outcome.expect("request made");
    }
}

/// While a shared `PutEvents` is out, events published meanwhile wait for
/// it and then go together, instead of each taking a free slot alone.
#[tokio::test(flavor = "current_thread")]
async fn events_published_while_a_put_events_is_out_go_together() {
    let stub = stowage_e2e::aws_stub::AwsStub::start(Default::default())
        .await
        .expect("stub starts");
    let bus = stowage_shared::publisher::EventBus::new(
        stowage_shared::aws::eventbridge(&stub.sdk_config()),
        "stub-bus",
    )
    .coalescing(4);
    first_out_then_five(&stub, |i| {
        let bus = bus.clone();
        let event = granted("gathered", i);
        tokio::spawn(async move { bus.publish(&event).await.expect("published") })
    })
    .await;
    assert_eq!(
        stub.requests().get("AWSEvents.PutEvents"),
        Some(&2),
        "the first alone, then the five together"
    );
}

/// While a shared grant transaction is out, grants of other users made
/// meanwhile wait for it and then share the next transaction.
#[tokio::test(flavor = "current_thread")]
async fn grants_made_while_a_transaction_is_out_share_the_next() {
    use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
    let stub = stowage_e2e::aws_stub::AwsStub::start(Default::default())
        .await
        .expect("stub starts");
    let writes = stowage_intake::adapters::grant_writes::GrantWrites::start(
        stowage_shared::aws::dynamodb(&stub.sdk_config()),
    );
    first_out_then_five(&stub, |i| {
        let (writes, user) = (writes.clone(), format!("u{i}"));
        let put = |sk: &str| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name("stub-intake")
                        .item("pk", AttributeValue::S(format!("USER#{user}")))
                        .item("sk", AttributeValue::S(sk.to_string()))
                        .build()
                        .expect("a put"),
                )
                .build()
        };
        let items = [put("ACCOUNT"), put("GRANT#1")];
        tokio::spawn(async move { writes.write(&user, items).await.expect("written") })
    })
    .await;
    assert_eq!(
        stub.requests().get("DynamoDB_20120810.TransactWriteItems"),
        Some(&2),
        "the first alone, then the five together"
    );
}

/// An upload the ledger could not credit to a grant it holds (the key's
/// newest grant there was issued after the upload) completes the newest of
/// the key's grants issued before it, never one issued after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_the_ledger_could_not_credit_completes_a_grant_issued_before_it() {
    use std::{collections::BTreeMap, sync::Arc};

    use stowage_events::{EventMeta, UsageChangedV1, stowage::ObjectChange};
    use stowage_intake::{
        adapters::dynamodb::DynamoAccountStore,
        ports::{AccountStore, GrantState},
        projection::UsageProjection,
    };

    let system = System::start().await.expect("system starts");
    let token = system.token("ivy");
    let body = json!({"path": "same.txt", "size": 100, "content_type": "text/plain"});
    let sdk = stowage_shared::aws::load().await;
    let store = Arc::new(DynamoAccountStore::new(
        stowage_shared::aws::dynamodb(&sdk),
        system.stack.get("STOWAGE_INTAKE_TABLE"),
    ));
    let record = |grant: String| {
        let store = store.clone();
        async move { store.grant(&grant).await.expect("read").expect("a grant") }
    };
    let grant = || async {
        let reply = system.grant(&token, &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["grant_id"].as_str().expect("id").to_string()
    };
    let first = grant().await;
    let issued = record(first.clone()).await.created_at;
    // Grants record when they were issued to the second: the second grant
    // is asked for once the first one's second is over.
    let next_second = issued + time::Duration::seconds(1) - time::OffsetDateTime::now_utc();
    tokio::time::sleep(next_second.try_into().unwrap_or_default()).await;
    let second = grant().await;
    let issued_next = record(second.clone()).await.created_at;
    assert!(issued_next > issued);
    // S3 stored the upload between the two grants, as far as the clocks
    // allow; the ledger held only the second by then.
    let uploaded_at = issued - time::Duration::seconds(10) + (issued_next - issued) / 2;
    let report = UsageChangedV1 {
        meta: EventMeta::new("ivy", Default::default()),
        revision: 1,
        used_bytes: 100,
        object_count: 1,
        by_storage_class: BTreeMap::from([("STANDARD".to_string(), 100)]),
        key: "users/ivy/same.txt".into(),
        change: ObjectChange::Created,
        object_size: Some(100),
        storage_class: Some("STANDARD".into()),
        grant_id: None,
        uploaded_at: Some(uploaded_at),
        violation: None,
        repeated: false,
        reclassified: false,
    };
    UsageProjection::new(store.clone())
        .apply(&report)
        .await
        .expect("applied");
    assert_eq!(record(first).await.state, GrantState::Complete);
    assert_eq!(record(second).await.state, GrantState::Initiated);
    system.stop().await;
}

/// An object moved to another class while its key has a grant out (as
/// lifecycle tiers it) leaves the grant waiting for its upload; the upload
/// completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_to_another_class_leaves_the_key_s_grant_waiting_for_its_upload() {
    use std::{collections::BTreeMap, sync::Arc};

    use stowage_events::{EventMeta, UsageChangedV1, stowage::ObjectChange};
    use stowage_intake::{
        adapters::dynamodb::DynamoAccountStore,
        ports::{AccountStore, GrantState},
        projection::UsageProjection,
    };

    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("mona");
    let sdk = stowage_shared::aws::load().await;
    let store = Arc::new(DynamoAccountStore::new(
        stowage_shared::aws::dynamodb(&sdk),
        system.stack.get("STOWAGE_INTAKE_TABLE"),
    ));
    let reply = system
        .grant(
            &token,
            &json!({"path": "old.txt", "size": 100, "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let grant = reply.body["grant_id"].as_str().expect("id").to_string();
    let report = |revision, class: &str, reclassified: bool| UsageChangedV1 {
        meta: EventMeta::new("mona", Default::default()),
        revision,
        used_bytes: 80,
        object_count: 1,
        by_storage_class: BTreeMap::from([(class.to_string(), 80)]),
        key: "users/mona/old.txt".into(),
        change: ObjectChange::Created,
        object_size: Some(80),
        storage_class: Some(class.into()),
        grant_id: None,
        uploaded_at: (!reclassified).then(time::OffsetDateTime::now_utc),
        violation: None,
        repeated: false,
        reclassified,
    };
    let projection = UsageProjection::new(store.clone());
    let state = || async { store.grant(&grant).await.expect("read").expect("a grant") };

    projection
        .apply(&report(1, "GLACIER", true))
        .await
        .expect("applied");
    assert_eq!(state().await.state, GrantState::Initiated);

    projection
        .apply(&report(2, "STANDARD", false))
        .await
        .expect("applied");
    let record = state().await;
    assert_eq!(
        (record.state, record.size),
        (GrantState::Complete, Some(80))
    );
    system.stop().await;
}

/// Objects put in the bucket another way than through the API are listed
/// too, and a page may end on one: its cursor resumes right after it, even
/// for a folder marker or a name in another Unicode form than the API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_page_past_objects_stored_another_way() {
    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("olga");
    let bucket = system.stack.get("STOWAGE_BUCKET");
    // In key order (UTF-8 bytes): the user's folder marker, which a
    // listing leaves out; names with a `..` segment or a tab, which the API
    // could not address; and "cafe\u{301}.txt", whose API form, "caf\u{e9}.txt",
    // would sort after the next.
    let stored = [
        "",
        "a/../b.txt",
        "cafez.txt",
        "cafe\u{301}.txt",
        "cafe\u{301}z.txt",
        "docs/",
        "docs/a.txt",
        "e.txt",
        "tab\there.txt",
    ];
    for path in stored {
        system
            .s3
            .put_object()
            .bucket(bucket)
            .key(format!("users/olga/{path}"))
            .body(b"x".to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }
    assert_eq!(
        system.bucket_keys().await,
        stored.map(|path| format!("users/olga/{path}"))
    );
    let paths = &stored[1..];
    let mut listed = Vec::new();
    let mut cursor = String::new();
    for _ in 0..stored.len() + 1 {
        let page = system
            .get(&token, &format!("/v1/objects?limit=1&cursor={cursor}"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        for object in page.body["objects"].as_array().expect("objects") {
            listed.push(object["path"].as_str().expect("path").to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(listed, paths);
    system.stop().await;
}

/// Where S3 answers `HeadObject` of a missing key with 403, intake still
/// tells a missing object (`None`, a 404 to the user) from a refusal, and so
/// does the `HeadObject` the ledger and lifecycle resolve keys with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_object_is_told_from_a_refusal_when_s3_answers_403() {
    use stowage_intake::{adapters::s3::S3Objects, ports::ObjectStore};

    let stack = stowage_e2e::Stack::deploy().expect("stack deploys");
    let bucket = stack.get("STOWAGE_BUCKET");
    let sdk = stowage_shared::aws::load().await;
    // Keys with a space, `+`, `%` and letters outside ASCII list as they are.
    let stored = ["users/hana/kept.txt", "users/hana/a b+c%2B/été.txt"];
    for key in stored {
        stowage_shared::aws::s3(&sdk, true)
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(b"kept".to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }
    let refusing = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            // Every `HeadObject` answered 403, as S3 answers a caller whose
            // permission to list does not reach the key.
            .interceptor(stowage_e2e::StatusRewrite::new(
                |request| request.method() == "HEAD",
                403,
                None,
            ))
            .build(),
    );
    let store = S3Objects::new(refusing.clone(), bucket);
    let shared_head = |key| stowage_shared::aws::head_object(&refusing, bucket, key);

    for missing in [
        "users/hana/gone.txt",
        "users/hana/kept",
        "users/hana/kept.tx",
        "users/hana/a b+c%2B/été",
        "users/hana/a b+c+/été.txt",
        "users/hana/a%20b+c%2B/été.txt",
    ] {
        let head = store.head(missing).await;
        assert!(matches!(head, Ok(None)), "{missing}: {head:?}");
        let head = shared_head(missing).await;
        assert!(matches!(head, Ok(None)), "{missing}: {head:?}");
    }
    for key in stored {
        let refused = store.head(key).await;
        assert!(refused.is_err(), "a refusal of {key}: {refused:?}");
        let refused = shared_head(key).await;
        assert!(refused.is_err(), "a refusal of {key}: {refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_on_the_configured_origins_may_call_the_api() {
    let frontend = "http://localhost:5173";
    let system = System::start_with(&[(
        "cors-origins",
        &format!("{frontend}, https://App.Example.com"),
    )])
    .await
    .expect("system starts");
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
    };
    let preflight = |origin: &'static str| {
        system
            .http
            .request(Method::OPTIONS, format!("{}/v1/uploads", system.intake_url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };

    for origin in [frontend, "https://app.example.com"] {
        let allowed = preflight(origin).await.expect("intake answers");
        assert_eq!(allowed.status(), 200);
        assert_eq!(
            header(&allowed, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default();
        assert!(
            methods.contains("post") && methods.contains("delete"),
            "{methods}"
        );
        let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        assert!(header(&allowed, "access-control-allow-credentials").is_none());
    }
    let foreign = preflight("https://evil.example")
        .await
        .expect("intake answers");
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);

    // Answers, refusals included, name the page's origin so that it may
    // read them, and let it see how long to wait after a 429.
    let token = system.token("olive");
    let usage = |origin: &'static str, token: Option<&str>| {
        let request = system
            .http
            .get(format!("{}/v1/usage", system.intake_url))
            .header("origin", origin);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let read = usage(frontend, Some(&token)).await.expect("intake answers");
    assert_eq!(read.status(), 200);
    assert_eq!(
        header(&read, "access-control-allow-origin").as_deref(),
        Some(frontend)
    );
    assert!(header(&read, "vary").unwrap_or_default().contains("origin"));
    let exposed = header(&read, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("retry-after"), "{exposed}");
    let refused = usage(frontend, None).await.expect("intake answers");
    assert_eq!(refused.status(), 401);
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some(frontend)
    );
    // Another origin's page gets no permission to read the answer.
    let elsewhere = usage("https://evil.example", Some(&token))
        .await
        .expect("intake answers");
    assert_eq!(header(&elsewhere, "access-control-allow-origin"), None);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_methods_get_problems_and_a_head_reads_nothing() {
    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("hana");

    // A path that exists, with a method it does not take.
    let wrong = system
        .http
        .post(format!("{}/v1/usage", system.intake_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("intake answers");
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    let allow = wrong.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let problem: Value = wrong.json().await.expect("problem JSON");
    assert_eq!(problem["type"], "/problems/method-not-allowed");
    assert_eq!(problem["status"], 405);

    // The bearer scheme is case-insensitive; a header that is not text is a
    // 401 like any other bad token.
    let shouting = system
        .http
        .get(format!("{}/v1/usage", system.intake_url))
        .header("authorization", format!("BEARER {token}"))
        .send()
        .await
        .expect("intake answers");
    assert_eq!(shouting.status(), 200);
    let garbled = system
        .http
        .get(format!("{}/v1/usage", system.intake_url))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        )
        .send()
        .await
        .expect("intake answers");
    assert_eq!(garbled.status(), 401);
    assert_eq!(
        garbled.headers()["content-type"],
        "application/problem+json"
    );

    // Quotas are JSON Schema integers, as the document says: 2e9 is one.
    let admin = system.admin_token("root");
    let body = json!({"quota_bytes": 2e9});
    let set = system
        .call(
            Method::PUT,
            "/v1/admin/quotas/hana",
            Some(&admin),
            Some(&body),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["quota_bytes"], 2_000_000_000u64);

    // A HEAD answers as a GET would, without a body, and publishes no read.
    for path in ["users/hana/headed.png", "users/hana/read.png"] {
        system.put_object(path, vec![1; 8], "STANDARD").await;
    }
    let headed = system
        .http
        .head(format!("{}/v1/objects/headed.png", system.intake_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("intake answers");
    assert_eq!(headed.status(), 200);
    assert_eq!(system.get(&token, "/v1/objects/read.png").await.status, 200);
    // The HEAD came first, so a read it published would be on the bus
    // before the GET's; one more receive collects stragglers.
    let mut accessed = events(
        &system,
        "STOWAGE_LIFECYCLE_QUEUE_URL",
        "ObjectAccessed.v1",
        1,
    )
    .await;
    accessed.extend(received(&system, "STOWAGE_LIFECYCLE_QUEUE_URL", "ObjectAccessed.v1").await);
    let keys: Vec<&str> = accessed
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["users/hana/read.png"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_and_queries_intake_cannot_read_are_told_apart_and_change_nothing() {
    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("ines");
    let admin = system.admin_token("root");
    // Sends `body` with `content_type` and checks the answer against the
    // document.
    let send = |method: Method,
                path: &'static str,
                token: &str,
                content_type: Option<&'static str>,
                body: String| {
        let request = system
            .http
            .request(method.clone(), format!("{}{path}", system.intake_url))
            .bearer_auth(token)
            .body(body);
        let request = match content_type {
            Some(value) => request.header("content-type", value),
            None => request,
        };
        async move {
            let response = request.send().await.expect("intake answers");
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            let bytes = response.bytes().await.expect("intake sends a body");
            stowage_e2e::openapi::check(method.as_str(), path, status, Some(&content_type), &bytes);
            let problem: Value = serde_json::from_slice(&bytes).expect("a problem document");
            (
                status,
                problem["type"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let grant = json!({"path": "a.txt", "size": 5, "content_type": "text/plain"}).to_string();
    let restore = json!({"path": "a.txt", "days": 1}).to_string();
    let quota = json!({"quota_bytes": 5}).to_string();
    let calls = [
        (Method::POST, "/v1/uploads", &token, grant),
        (Method::POST, "/v1/restores", &token, restore),
        (Method::PUT, "/v1/admin/quotas/ines", &admin, quota),
    ];

    for (method, path, token, body) in &calls {
        // A body not sent as JSON.
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let answer = send(method.clone(), path, token, content_type, body.clone()).await;
            assert_eq!(
                answer,
                (415, "/problems/unsupported-media-type".into()),
                "{method} {path} as {content_type:?}"
            );
        }
        // A body longer than any call takes, here of valid JSON.
        let long = format!(r#"{{"pad":"{}",{}"#, "x".repeat(20_000), &body[1..]);
        assert!(long.len() > stowage_intake::routes::MAX_BODY_BYTES);
        let answer = send(method.clone(), path, token, Some("application/json"), long).await;
        assert_eq!(
            answer,
            (413, "/problems/content-too-large".into()),
            "{method} {path}"
        );
        // JSON that does not parse.
        let cut = body[..body.len() - 1].to_string();
        let answer = send(method.clone(), path, token, Some("application/json"), cut).await;
        assert_eq!(
            answer,
            (400, "/problems/bad-request".into()),
            "{method} {path}"
        );
    }

    // A query whose escapes spell no UTF-8 is refused, not read as U+FFFD.
    for query in ["prefix=%FF", "prefix=a%C3", "limit=5&prefix=x%80"] {
        let reply = system
            .raw("GET", &format!("/v1/objects?{query}"), &token)
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(reply.body["type"], "/problems/bad-request", "{query}");
    }
    let listed = system
        .raw("GET", "/v1/objects?prefix=caf%C3%A9%2F", &token)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    // Nothing was reserved or set.
    let usage = system.usage(&token).await;
    assert_eq!(usage["reserved_bytes"], 0);
    assert_eq!(usage["quota_bytes"], 1u64 << 30);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_stall_are_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let system = System::start_parts(
        &[("http-idle-seconds", "1")],
        stowage_e2e::Parts::INTAKE_ONLY,
    )
    .await
    .expect("system starts");
    let address = system.intake_url.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(address.clone());
    // Everything the server sends until it closes the connection; the
    // guard only keeps a broken server from hanging the test.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    // Headers that never end.
    let mut stream = connect().await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: intake\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut stream).await, "");

    // A kept-alive connection with no next request.
    let mut stream = connect().await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: intake\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body that stops coming.
    let mut stream = connect().await.expect("connects");
    let token = system.token("ivan");
    let head = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: intake\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"path\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(system.usage(&token).await["reserved_bytes"], 0);
    system.stop().await;
}
