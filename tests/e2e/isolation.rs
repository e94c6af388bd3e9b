//! Tenant isolation: a member of tenant A gets 404 for everything of tenant B,
//! on every tenant route the OpenAPI document lists; and roles limit reads.

use crate::helpers::{ADMIN_TOKEN, expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A body the route accepts, so a refusal can only come from access control.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("patch", "/v1/tenants/{tenant_id}") => Some(json!({"name": "Hijacked"})),
        ("post", "/v1/tenants/{tenant_id}/invitations") => Some(json!({"email": "spy@evil.test", "role": "admin"})),
        ("patch", "/v1/tenants/{tenant_id}/members/{member_id}") => Some(json!({"role": "admin"})),
        ("post", "/v1/tenants/{tenant_id}/transfer-ownership") => Some(json!({"member_id": uuid::Uuid::nil()})),
        ("post", "/v1/tenants/{tenant_id}/api-keys") => Some(json!({"name": "stolen"})),
        ("post", "/v1/tenants/{tenant_id}/subscription/checkout")
        | ("post", "/v1/tenants/{tenant_id}/subscription/change-plan") => Some(json!({"tier": "PRO"})),
        ("post", "/v1/tenants/{tenant_id}/cloud-accounts") => Some(json!({"account_id": "123456789012",
            "region": "us-east-1", "role_arn": "arn:aws:iam::123456789012:role/X", "environment": "production"})),
        ("post", "/v1/tenants/{tenant_id}/cloud-organizations") => Some(json!({"provider": "aws",
            "organization_id": "o-a1b2c3d4e5", "management_account_id": "123456789012",
            "role_arn": "arn:aws:iam::123456789012:role/X", "name": "Stolen"})),
        ("post", "/v1/tenants/{tenant_id}/detections") => Some(json!({"name": "Stolen", "source": "custom",
            "techniques": [{"id": "T1078", "confidence": 0.9}],
            "scope": {"type": "account", "account_id": "123456789012"}})),
        ("put", "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/scan-regions")
        | ("put", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/scan-regions") => {
            Some(json!({"regions": ["us-east-1"]}))
        }
        ("post", _) | ("patch", _) | ("put", _) => Some(json!({})),
        _ => None,
    }
}

#[tokio::test]
async fn a_foreign_key_gets_404_on_every_tenant_route() {
    let app = spawn_app().await;
    let attacker = app.create_tenant("attacker").await;
    let victim = app.create_tenant("victim").await;
    let (victim_member, _) = app.add_member(&victim, "member@victim.test", "analyst").await;
    let invitation = expect_status(
        app.post(
            &format!("/v1/tenants/{}/invitations", victim.id),
            &victim.key,
            json!({"email": "p@victim.test", "role": "analyst"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let keys = expect_status(
        app.get(&format!("/v1/tenants/{}/api-keys", victim.id), &victim.key)
            .await,
        StatusCode::OK,
    )
    .await;
    let victim_key_id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let victim_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&victim.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let document = expect_status(
        app.request(Method::GET, "/openapi.json", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let mut walked = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        if !template.contains("{tenant_id}") || template.starts_with("/v1/admin") {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            let mut path = template
                .replace("{tenant_id}", &victim.id)
                .replace("{member_id}", &victim_member)
                .replace("{key_id}", &victim_key_id)
                .replace("{invitation_id}", invitation["id"].as_str().unwrap())
                .replace("{org_id}", &uuid::Uuid::now_v7().to_string())
                .replace("{account_id}", "123456789012")
                .replace("{run_id}", &uuid::Uuid::now_v7().to_string())
                .replace("{detection_id}", &uuid::Uuid::now_v7().to_string());
            if method == "delete" && template == "/v1/tenants/{tenant_id}" {
                path.push_str("?confirm_slug=victim");
            }
            let mut request = app.request(method.to_uppercase().parse().unwrap(), &path, Some(&attacker.key));
            if let Some(body) = body_for(method, template) {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let body = expect_problem(response, StatusCode::NOT_FOUND, "not-found").await;
            assert!(
                !body.to_string().contains(&victim.slug),
                "{method} {path} leaked: {body}"
            );
            walked += 1;
        }
    }
    assert!(walked >= 17, "only {walked} tenant routes were walked");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&victim.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(after, victim_events, "the attacker changed nothing");

    // Admin routes are for the platform admin only.
    assert_eq!(
        app.get("/v1/admin/tenants", &attacker.key).await.status(),
        StatusCode::FORBIDDEN
    );
    expect_status(app.get("/v1/admin/tenants", ADMIN_TOKEN).await, StatusCode::OK).await;
    // No credentials, or a made-up key: 401.
    let anonymous = app
        .request(Method::GET, &format!("/v1/tenants/{}", victim.id), None)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let forged = format!("cwk_{}_{}", victim_key_id.replace('-', ""), "a".repeat(64));
    expect_problem(
        app.get(&format!("/v1/tenants/{}", victim.id), &forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn roles_decide_who_reads_what() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("roles").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let (_, read_only) = app.add_member(&tenant, "ro@roles.test", "read_only").await;
    let (_, auditor) = app.add_member(&tenant, "audit@roles.test", "auditor").await;
    let (_, analyst) = app.add_member(&tenant, "an@roles.test", "analyst").await;
    let (_, admin) = app.add_member(&tenant, "ad@roles.test", "admin").await;

    for key in [&read_only, &auditor, &analyst, &admin] {
        expect_status(app.get(&base, key).await, StatusCode::OK).await;
        expect_status(app.get(&format!("{base}/members"), key).await, StatusCode::OK).await;
    }
    for key in [&auditor, &admin, &tenant.key] {
        expect_status(app.get(&format!("{base}/audit-log"), key).await, StatusCode::OK).await;
    }
    for key in [&read_only, &analyst] {
        expect_problem(
            app.get(&format!("{base}/audit-log"), key).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_problem(
            app.get(&format!("{base}/invitations"), key).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    for key in [&read_only, &auditor, &analyst] {
        expect_problem(
            app.patch(&base, key, json!({"name": "x"})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_problem(
            app.post(
                &format!("{base}/invitations"),
                key,
                json!({"email": "n@roles.test", "role": "read_only"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    expect_status(
        app.patch(&base, &admin, json!({"name": "By admin"})).await,
        StatusCode::OK,
    )
    .await;
}
