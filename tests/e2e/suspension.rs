//! Suspension stops every write of the tenant: every write route of the
//! OpenAPI document under the tenant answers 403 problem+json and writes
//! nothing; reads keep working; the platform admin still acts.

use crate::helpers::{ADMIN_TOKEN, TestApp, TestTenant, expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn suspend(app: &TestApp, tenant: &TestTenant) {
    let response = app
        .request(
            Method::POST,
            &format!("/v1/admin/tenants/{}/suspend", tenant.id),
            Some(ADMIN_TOKEN),
        )
        .json(&json!({"reason": "unpaid invoices"}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::OK).await;
}

/// The path with its parameters filled: the tenant's id, a 12-digit
/// account id, a fresh id for anything else.
fn concrete(template: &str, tenant: &TestTenant) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{tenant_id}" => tenant.id.clone(),
            "{account_id}" => "111111111111".into(),
            s if s.starts_with('{') => uuid::Uuid::now_v7().to_string(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn a_suspended_tenant_writes_nothing_on_any_route_but_still_reads() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("suspended").await;
    let (_, admin_key) = app.add_member(&tenant, "admin@suspended.test", "admin").await;
    suspend(&app, &tenant).await;
    let document = expect_status(
        app.request(Method::GET, "/openapi.json", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let before = app.event_count().await;
    let mut walked = vec![];
    for (template, operations) in document["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/tenants/{tenant_id}") {
            continue;
        }
        for method in ["post", "put", "patch", "delete"] {
            if operations.get(method).is_none() {
                continue;
            }
            let path = concrete(template, &tenant);
            let path = if method == "delete" && template == "/v1/tenants/{tenant_id}" {
                format!("{path}?confirm_slug={}", tenant.slug)
            } else {
                path
            };
            for key in [&tenant.key, &admin_key] {
                let response = app
                    .request(method.parse().unwrap(), &path, Some(key))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let problem = expect_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
                assert!(
                    problem["detail"].as_str().unwrap().contains("suspended"),
                    "{method} {template}: {problem}"
                );
            }
            walked.push(format!("{method} {template}"));
        }
    }
    assert!(walked.len() >= 25, "every write route under a tenant: {walked:?}");
    assert_eq!(app.event_count().await, before, "nothing written by {walked:?}");

    // A child tenant under the suspended parent.
    let child = app
        .request(Method::POST, "/v1/tenants", Some(&tenant.key))
        .json(
            &json!({"name": "Child", "slug": "suspended-child", "owner_email": "o@child.test",
                      "parent_tenant_id": tenant.id}),
        )
        .send()
        .await
        .unwrap();
    expect_problem(child, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.event_count().await, before);

    // Reads keep working.
    for path in [
        format!("/v1/tenants/{}", tenant.id),
        format!("/v1/tenants/{}/members", tenant.id),
        format!("/v1/tenants/{}/detections", tenant.id),
        format!("/v1/tenants/{}/subscription", tenant.id),
        format!("/v1/tenants/{}/audit-log", tenant.id),
    ] {
        let read: Value = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
        assert!(!read.is_null(), "{path}");
    }

    // The platform admin still acts: plan overrides, then reactivation.
    app.set_overrides(&tenant, json!({"max_accounts": 7})).await;
    let reactivated = app
        .request(
            Method::POST,
            &format!("/v1/admin/tenants/{}/reactivate", tenant.id),
            Some(ADMIN_TOKEN),
        )
        .send()
        .await
        .unwrap();
    expect_status(reactivated, StatusCode::OK).await;
    let renamed = app
        .patch(
            &format!("/v1/tenants/{}", tenant.id),
            &tenant.key,
            json!({"name": "Back"}),
        )
        .await;
    expect_status(renamed, StatusCode::OK).await;
}
