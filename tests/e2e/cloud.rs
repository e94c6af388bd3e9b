//! Cloud accounts and organizations against the plan: the account limit and
//! organization features, decided by the aggregates, under concurrency.

use crate::helpers::{TestApp, TestTenant, expect_status, spawn_app, spawn_app_with};
use coverwatch_domain::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use std::sync::Arc;

fn account(id: &str, environment: &str) -> Value {
    json!({
        "account_id": id,
        "alias": format!("acct-{id}"),
        "region": "eu-west-1",
        "role_arn": format!("arn:aws:iam::{id}:role/CoverwatchAudit"),
        "environment": environment,
    })
}

async fn connect(app: &TestApp, tenant: &TestTenant, body: Value) -> reqwest::Response {
    app.post(&format!("/v1/tenants/{}/cloud-accounts", tenant.id), &tenant.key, body)
        .await
}

#[tokio::test]
async fn only_connected_accounts_count_against_the_plan() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("one-account").await;
    let first = expect_status(
        connect(&app, &tenant, account("111111111111", "production")).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(first["status"], "connected");
    assert_eq!(first["source"], "standalone");

    let refused = expect_status(
        connect(&app, &tenant, account("222222222222", "staging")).await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;
    assert_eq!(refused["type"], "https://coverwatch.dev/problems/plan-limit");
    assert_eq!(refused["metric"], "cloud_accounts");
    assert_eq!(
        (refused["used"].as_u64(), refused["limit"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(refused["upgrade_url"].is_string());

    let usage_path = format!("/v1/tenants/{}/usage", tenant.id);
    let usage = expect_status(app.get(&usage_path, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(usage["metrics"]["cloud_accounts"]["used"], 1);
    assert_eq!(usage["metrics"]["cloud_accounts"]["percent"], 100.0);

    // Disconnected: still listed, no longer counted.
    let disconnected = expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-accounts/111111111111/disconnect", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(disconnected["status"], "disconnected");
    expect_status(
        connect(&app, &tenant, account("222222222222", "staging")).await,
        StatusCode::CREATED,
    )
    .await;
    let all = expect_status(
        app.get(&format!("/v1/tenants/{}/cloud-accounts", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let staging = expect_status(
        app.get(
            &format!(
                "/v1/tenants/{}/cloud-accounts?environment=staging&status=connected",
                tenant.id
            ),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<&str> = staging["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["222222222222"]);

    // 100 % of the account limit is recorded once in the period.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'UsageThresholdCrossed'
            AND payload::text LIKE '%cloud_accounts%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded, 2,
        "80 % and 100 %, once each although the limit was reached twice"
    );
}

#[tokio::test]
async fn twenty_concurrent_connects_for_one_free_slot_give_exactly_one_success() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("racing-accounts").await;
    app.set_overrides(&tenant, json!({"api_rate_per_minute": 1000})).await;
    let ids: Vec<String> = (0..20).map(|i| format!("{:012}", 100_000_000_000u64 + i)).collect();
    let responses =
        futures::future::join_all(ids.iter().map(|id| connect(&app, &tenant, account(id, "production")))).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::PAYMENT_REQUIRED).count(),
        19,
        "{statuses:?}"
    );
    let connected: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'CloudAccountConnected'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(connected, 1);
}

#[tokio::test]
async fn organizations_need_the_organization_features_of_the_plan() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("org-wanted").await;
    let body = json!({
        "provider": "aws",
        "organization_id": "o-a1b2c3d4e5",
        "management_account_id": "123456789012",
        "role_arn": "arn:aws:iam::123456789012:role/CoverwatchAudit",
        "name": "Acme AWS",
    });
    let path = format!("/v1/tenants/{}/cloud-organizations", tenant.id);
    let before = app.event_count().await;
    let refused = expect_status(app.post(&path, &tenant.key, body.clone()).await, StatusCode::FORBIDDEN).await;
    assert_eq!(refused["type"], "https://coverwatch.dev/problems/plan-feature");
    assert_eq!(refused["feature"], "organization features");
    assert_eq!(refused["required_tier"], "PRO");
    assert!(refused["upgrade_url"].is_string());
    assert_eq!(app.event_count().await, before, "nothing written");

    app.set_overrides(&tenant, json!({"org_features": true})).await;
    let created = expect_status(app.post(&path, &tenant.key, body).await, StatusCode::CREATED).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["external_id"], format!("coverwatch-{}", tenant.id));
    let listed = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(created["member_role_name"], "CoverwatchAudit");

    // The audit role, with this tenant's external id, in both formats.
    let template_path = format!("{path}/{}/role-template", created["id"].as_str().unwrap());
    let response = app.get(&template_path, &tenant.key).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let cloudformation: Value = response.json().await.unwrap();
    let role = &cloudformation["Resources"]["CoverwatchAuditRole"]["Properties"];
    assert_eq!(role["RoleName"], "CoverwatchAudit");
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        format!("coverwatch-{}", tenant.id)
    );
    let terraform = app
        .get(&format!("{template_path}?format=terraform"), &tenant.key)
        .await
        .text()
        .await
        .unwrap();
    assert!(terraform.contains(&format!(r#""sts:ExternalId": "coverwatch-{}""#, tenant.id)));
    expect_status(
        app.get(&format!("{template_path}?format=yaml"), &tenant.key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let stranger = app.create_tenant("org-stranger").await;
    let foreign = format!(
        "/v1/tenants/{}/cloud-organizations/{}/role-template",
        stranger.id,
        created["id"].as_str().unwrap()
    );
    expect_status(app.get(&foreign, &stranger.key).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn bad_account_input_is_refused_field_by_field_and_writes_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("careful-cloud").await;
    let before = app.event_count().await;
    let problem = expect_status(
        connect(
            &app,
            &tenant,
            json!({"account_id": "12345", "region": "mars-1", "role_arn": "arn:aws:iam::1:user/x", "environment": "prod"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["account_id", "region", "role_arn", "environment"]);
    let org = app
        .post(
            &format!("/v1/tenants/{}/cloud-organizations", tenant.id),
            &tenant.key,
            json!({"provider": "aws", "organization_id": "o-a1b2c3d4e5", "management_account_id": "123456789012",
                   "role_arn": "arn:aws:iam::999999999999:role/X", "name": "Wrong account"}),
        )
        .await;
    // The tier lacks organization features: that answer comes first.
    expect_status(org, StatusCode::FORBIDDEN).await;
    assert_eq!(app.event_count().await, before);
}

/// A committed write never answers as if it failed: when the read models
/// lag past the wait (a long transaction elsewhere holds the visibility
/// horizon), the answer is 202 with the resource's `Location`, which shows
/// it once the horizon moves on.
#[tokio::test]
async fn a_committed_write_behind_a_held_horizon_answers_202_with_its_location() {
    let app = spawn_app_with(Arc::new(SystemClock), |settings| {
        settings.http.consistency_wait_ms = 300
    })
    .await;
    let tenant = app.create_tenant("horizon").await;
    app.set_overrides(&tenant, json!({"org_features": true, "max_accounts": 5}))
        .await;
    // A transaction with an id, held open: nothing after it is visible.
    let mut holder = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *held)
        .await
        .unwrap();

    let before = app.event_count().await;
    let registered = app
        .post(
            &format!("/v1/tenants/{}/cloud-organizations", tenant.id),
            &tenant.key,
            json!({"provider": "aws", "organization_id": "o-horizon123", "management_account_id": "123456789012",
                   "role_arn": "arn:aws:iam::123456789012:role/CoverwatchAudit", "name": "Held"}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::ACCEPTED);
    let location = registered.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = registered.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["location"], location.as_str());
    assert!(body["position"].as_i64().unwrap() > 0);
    let connected = app
        .post(
            &format!("/v1/tenants/{}/cloud-accounts", tenant.id),
            &tenant.key,
            json!({"account_id": "333344445555", "region": "us-east-1", "environment": "production",
                   "role_arn": "arn:aws:iam::333344445555:role/CoverwatchAudit"}),
        )
        .await;
    assert_eq!(connected.status(), StatusCode::ACCEPTED);
    let account_location = connected.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(app.event_count().await, before + 2, "both writes are committed");

    held.rollback().await.unwrap();
    // A client polls the Location until it shows.
    let poll = async |location: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let response = app.get(location, &tenant.key).await;
            if response.status() == StatusCode::OK {
                return response.json::<Value>().await.unwrap();
            }
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{location}");
            assert!(std::time::Instant::now() < deadline, "{location} never showed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert_eq!(poll(&location).await["name"], "Held");
    assert_eq!(poll(&account_location).await["status"], "connected");
}
