//! Tenants over HTTP: sign-up, profile with ETags, concurrency, hierarchy,
//! deletion and platform suspension.

use crate::helpers::{ADMIN_TOKEN, expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn sign_up_creates_the_tenant_and_its_owner_with_a_key_shown_once() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/v1/tenants", None)
        .json(
            &json!({"name": "Acme", "slug": "acme", "owner_email": "Owner@Acme.test", "industry": "retail",
                      "company_size": "51-200", "contact_email": "sec@acme.test", "billing_email": "ap@acme.test"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let created = expect_status(response, StatusCode::CREATED).await;
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme");
    assert_eq!(created["owner_email"], "owner@acme.test");
    let key = created["api_key"].as_str().unwrap();
    assert!(key.starts_with("cwk_"));
    let id = created["id"].as_str().unwrap();

    let tenant = expect_status(app.get(&format!("/v1/tenants/{id}"), key).await, StatusCode::OK).await;
    assert_eq!(tenant["industry"], "retail");
    assert_eq!(tenant["company_size"], "51-200");
    assert_eq!(tenant["billing_email"], "ap@acme.test");
    assert_eq!(tenant["status"], "active");
    assert_eq!(tenant["owner_member_id"], created["owner_member_id"]);

    let members = expect_status(app.get(&format!("/v1/tenants/{id}/members"), key).await, StatusCode::OK).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    assert_eq!(members["items"][0]["role"], "owner");
    assert_eq!(members["items"][0]["email"], "owner@acme.test");

    // The key is stored only as a hash.
    let stored: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|p| !p.contains(key)));
}

#[tokio::test]
async fn a_slug_is_taken_once_even_under_concurrent_sign_ups() {
    let app = spawn_app().await;
    let attempts = futures::future::join_all((0..12).map(|i| {
        app.request(Method::POST, "/v1/tenants", None)
            .json(&json!({"name": format!("Racer {i}"), "slug": "contested", "owner_email": format!("o{i}@race.test")}))
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = attempts.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TenantCreated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(created, 1);

    let again = app
        .request(Method::POST, "/v1/tenants", None)
        .json(&json!({"name": "Late", "slug": "contested", "owner_email": "late@race.test"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(again, StatusCode::CONFLICT, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("contested"));
}

#[tokio::test]
async fn if_match_guards_profile_updates() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("etags").await;
    let path = format!("/v1/tenants/{}", tenant.id);
    let response = app.get(&path, &tenant.key).await;
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"2\"");

    let updated = app
        .request(Method::PATCH, &path, Some(&tenant.key))
        .header("if-match", &etag)
        .json(&json!({"name": "New name", "industry": "finance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.headers()["etag"], "\"3\"");
    let body = expect_status(updated, StatusCode::OK).await;
    assert_eq!(body["name"], "New name");
    assert_eq!(body["version"], 3);

    // The same (now stale) ETag is refused and changes nothing.
    let events = app.event_count().await;
    let stale = app
        .request(Method::PATCH, &path, Some(&tenant.key))
        .header("if-match", &etag)
        .json(&json!({"name": "Lost update"}))
        .send()
        .await
        .unwrap();
    expect_problem(stale, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    assert_eq!(app.event_count().await, events);

    // null clears an optional field; absent fields stay.
    let cleared = expect_status(
        app.patch(&path, &tenant.key, json!({"industry": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["industry"], serde_json::Value::Null);
    assert_eq!(cleared["name"], "New name");
}

#[tokio::test]
async fn concurrent_conflicting_writes_never_lose_an_update() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("contended").await;
    let path = format!("/v1/tenants/{}", tenant.id);

    // Twenty writers all holding version 2: exactly one wins.
    let attempts = futures::future::join_all((0..20).map(|i| {
        app.request(Method::PATCH, &path, Some(&tenant.key))
            .header("if-match", "\"2\"")
            .json(&json!({"name": format!("Writer {i}")}))
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = attempts.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::OK, StatusCode::CONFLICT, StatusCode::PRECONDITION_FAILED].contains(s)),
        "{statuses:?}"
    );

    // Without If-Match: every write either lands or is told 409; none is lost.
    let attempts = futures::future::join_all((0..20).map(|i| {
        app.request(Method::PATCH, &path, Some(&tenant.key))
            .json(&json!({"company_size": format!("size {i}")}))
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = attempts.into_iter().map(|r| r.unwrap().status()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::OK, StatusCode::CONFLICT].contains(s)),
        "{statuses:?}"
    );
    let landed = statuses.iter().filter(|s| **s == StatusCode::OK).count() as i64;
    let updates: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ProfileUpdated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(updates, landed + 1, "each 200 is exactly one appended event");
    let version = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await["version"]
        .as_i64()
        .unwrap();
    assert_eq!(version, 2 + landed + 1);
}

#[tokio::test]
async fn child_tenants_record_their_ancestry_up_to_five_levels() {
    let app = spawn_app().await;
    let root = app.create_tenant("mssp").await;
    let mut parent = root.clone();
    let mut ancestry = vec![root.id.clone()];
    for level in 2..=5 {
        let response = app
            .post(
                "/v1/tenants",
                &parent.key,
                json!({"name": format!("Level {level}"), "slug": format!("level-{level}"), "owner_email": format!("o@l{level}.test"), "parent_tenant_id": parent.id}),
            )
            .await;
        let child = expect_status(response, StatusCode::CREATED).await;
        assert_eq!(child["parent_tenant_id"], parent.id.as_str());
        assert_eq!(child["hierarchy_path"], json!(ancestry));
        let view = expect_status(
            app.get(
                &format!("/v1/tenants/{}", child["id"].as_str().unwrap()),
                child["api_key"].as_str().unwrap(),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(view["hierarchy_path"], json!(ancestry));
        parent = crate::helpers::TestTenant {
            id: child["id"].as_str().unwrap().into(),
            slug: format!("level-{level}"),
            owner_member_id: child["owner_member_id"].as_str().unwrap().into(),
            key: child["api_key"].as_str().unwrap().into(),
        };
        ancestry.push(parent.id.clone());
    }
    let too_deep = app
        .post(
            "/v1/tenants",
            &parent.key,
            json!({"name": "Level 6", "slug": "level-6", "owner_email": "o@l6.test", "parent_tenant_id": parent.id}),
        )
        .await;
    expect_problem(too_deep, StatusCode::UNPROCESSABLE_ENTITY, "rule-violated").await;

    // Only a member of the parent may create a child under it.
    let stranger = app.create_tenant("stranger").await;
    let foreign = app
        .post(
            "/v1/tenants",
            &stranger.key,
            json!({"name": "Sneaky", "slug": "sneaky", "owner_email": "o@sneaky.test", "parent_tenant_id": root.id}),
        )
        .await;
    expect_problem(foreign, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn only_the_owner_deletes_a_tenant_and_only_with_its_slug() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("doomed").await;
    let (_, admin_key) = app.add_member(&tenant, "admin@doomed.test", "admin").await;
    let path = format!("/v1/tenants/{}", tenant.id);

    expect_problem(
        app.delete(&format!("{path}?confirm_slug=doomed"), &admin_key).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.delete(&format!("{path}?confirm_slug=wrong"), &tenant.key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "rule-violated",
    )
    .await;
    expect_problem(
        app.delete(&path, &tenant.key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    let deleted = app.delete(&format!("{path}?confirm_slug=doomed"), &tenant.key).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // Gone for everyone, but the history stays.
    assert_eq!(app.get(&path, &tenant.key).await.status(), StatusCode::UNAUTHORIZED);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(events >= 6);
    let reuse = app
        .request(Method::POST, "/v1/tenants", None)
        .json(&json!({"name": "Squatter", "slug": "doomed", "owner_email": "x@x.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reuse.status(),
        StatusCode::CONFLICT,
        "a deleted tenant's slug is never reissued"
    );
}

#[tokio::test]
async fn a_suspended_tenant_reads_but_does_not_write() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("suspect").await;
    let path = format!("/v1/tenants/{}", tenant.id);

    expect_problem(
        app.post(
            &format!("/v1/admin/tenants/{}/suspend", tenant.id),
            &tenant.key,
            json!({"reason": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let suspended = expect_status(
        app.post(
            &format!("/v1/admin/tenants/{}/suspend", tenant.id),
            ADMIN_TOKEN,
            json!({"reason": "payment review"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["suspended_reason"], "payment review");

    expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
    expect_problem(
        app.patch(&path, &tenant.key, json!({"name": "Nope"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let listed = expect_status(
        app.get("/v1/admin/tenants?status=suspended", ADMIN_TOKEN).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let reactivated = expect_status(
        app.post(
            &format!("/v1/admin/tenants/{}/reactivate", tenant.id),
            ADMIN_TOKEN,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(reactivated["status"], "active");
    expect_status(
        app.patch(&path, &tenant.key, json!({"name": "Back"})).await,
        StatusCode::OK,
    )
    .await;

    // The admin list is admin-only and paginates.
    app.create_tenant("second").await;
    app.create_tenant("third").await;
    assert_eq!(
        app.get("/v1/admin/tenants", &tenant.key).await.status(),
        StatusCode::FORBIDDEN
    );
    let page = expect_status(app.get("/v1/admin/tenants?limit=2", ADMIN_TOKEN).await, StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = expect_status(
        app.get(&format!("/v1/admin/tenants?limit=2&cursor={next}"), ADMIN_TOKEN)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], serde_json::Value::Null);
}

/// In production nothing is invented: without a database URL, an audit
/// signing key and Coverwatch's AWS principal the server does not start
/// (each replica would sign with its own key, or trust a placeholder).
#[tokio::test]
async fn production_refuses_to_start_without_its_own_key_database_and_principal() {
    let mut settings = coverwatch_api::Settings::defaults();
    settings.production = true;
    let error = coverwatch_api::Application::build(settings.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    for missing in [
        "database.url",
        "database.owner_url",
        "audit.signing_key",
        "aws.principal_arn",
    ] {
        assert!(error.contains(missing), "{missing} is named: {error}");
    }
    // Configured, it starts (on a fresh database), serving as a role that
    // does not own the log.
    let database_url = crate::helpers::fresh_database().await;
    let serving = crate::helpers::serving_url(&database_url);
    settings.database.url = Some(serving.clone().into());
    settings.database.owner_url = Some(database_url.clone().into());
    settings.audit.signing_key = Some(crate::helpers::SIGNING_KEY.to_owned().into());
    settings.aws.principal_arn = "arn:aws:iam::111122223333:role/Coverwatch".into();
    settings.http.bind = "127.0.0.1:0".into();
    let clock = || std::sync::Arc::new(coverwatch_domain::clock::SystemClock);
    let owner = sqlx::PgPool::connect(&database_url).await.unwrap();
    let refused = coverwatch_api::Application::build_with(settings.clone(), owner, clock())
        .await
        .err()
        .expect("serving as the log's owner is refused")
        .to_string();
    assert!(refused.contains("owner of the event log"), "{refused}");
    let pool = sqlx::PgPool::connect(&serving).await.unwrap();
    let application = coverwatch_api::Application::build_with(settings, pool, clock())
        .await
        .expect("a complete production configuration starts");
    assert!(application.port() > 0);
}
