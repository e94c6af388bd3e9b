//! Members, invitations and API keys over HTTP.

use crate::helpers::{expect_problem, expect_status, spawn_app, spawn_app_with_clock};
use chrono::{Duration, Utc};
use coverwatch_domain::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn invite_accept_change_role_suspend_reactivate_remove() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("team").await;
    let base = format!("/v1/tenants/{}", tenant.id);

    let invitation = expect_status(
        app.post(
            &format!("{base}/invitations"),
            &tenant.key,
            json!({"email": "Ann@Team.test", "role": "analyst"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(invitation["token"].as_str().unwrap().starts_with("cwi_"));
    assert!(invitation["expires_at"].as_str().is_some());
    let listed = expect_status(
        app.get(&format!("{base}/invitations"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"][0]["status"], "pending");

    let accepted = expect_status(app.accept_invitation(&invitation["token"]).await, StatusCode::CREATED).await;
    let member_id = accepted["member_id"].as_str().unwrap();
    let ann_key = accepted["api_key"].as_str().unwrap();
    assert_eq!(accepted["role"], "analyst");

    // The new member can read at once with its own key.
    let members = expect_status(app.get(&format!("{base}/members"), ann_key).await, StatusCode::OK).await;
    let items = members["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let ann = items.iter().find(|m| m["id"] == member_id).unwrap();
    assert_eq!(
        (ann["email"].as_str(), ann["role"].as_str(), ann["status"].as_str()),
        (Some("ann@team.test"), Some("analyst"), Some("active"))
    );

    // A token works once.
    let again = app.accept_invitation(&invitation["token"]).await;
    expect_problem(again, StatusCode::GONE, "gone").await;

    // Analysts cannot manage members; admins and owners can.
    expect_problem(
        app.post(
            &format!("{base}/invitations"),
            ann_key,
            json!({"email": "x@team.test", "role": "analyst"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let changed = expect_status(
        app.patch(
            &format!("{base}/members/{member_id}"),
            &tenant.key,
            json!({"role": "auditor"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["role"], "auditor");

    let suspended = expect_status(
        app.post(&format!("{base}/members/{member_id}/suspend"), &tenant.key, json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(
        app.get(&format!("{base}/members"), ann_key).await.status(),
        StatusCode::UNAUTHORIZED,
        "a suspended member's keys stop working"
    );
    let reactivated = expect_status(
        app.post(
            &format!("{base}/members/{member_id}/reactivate"),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(reactivated["status"], "active");
    expect_status(app.get(&format!("{base}/members"), ann_key).await, StatusCode::OK).await;

    assert_eq!(
        app.delete(&format!("{base}/members/{member_id}"), &tenant.key)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("{base}/members"), ann_key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let remaining = expect_status(app.get(&format!("{base}/members"), &tenant.key).await, StatusCode::OK).await;
    assert_eq!(remaining["items"].as_array().unwrap().len(), 1);
    let removed = expect_status(
        app.get(&format!("{base}/members?status=removed"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(removed["items"][0]["id"], member_id);
}

#[tokio::test]
async fn there_is_always_exactly_one_owner() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("owned").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let (admin_id, admin_key) = app.add_member(&tenant, "admin@owned.test", "admin").await;
    let owner = &tenant.owner_member_id;

    for (method, path, body) in [
        (
            Method::PATCH,
            format!("{base}/members/{owner}"),
            json!({"role": "analyst"}),
        ),
        (Method::POST, format!("{base}/members/{owner}/suspend"), json!({})),
    ] {
        let response = app
            .request(method, &path, Some(&admin_key))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "rule-violated").await;
    }
    expect_problem(
        app.delete(&format!("{base}/members/{owner}"), &admin_key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "rule-violated",
    )
    .await;
    expect_problem(
        app.patch(
            &format!("{base}/members/{admin_id}"),
            &tenant.key,
            json!({"role": "owner"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "rule-violated",
    )
    .await;
    // Only the owner transfers.
    expect_problem(
        app.post(
            &format!("{base}/transfer-ownership"),
            &admin_key,
            json!({"member_id": admin_id}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let transferred = expect_status(
        app.post(
            &format!("{base}/transfer-ownership"),
            &tenant.key,
            json!({"member_id": admin_id}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(transferred["owner_member_id"], admin_id.as_str());

    let members = expect_status(app.get(&format!("{base}/members"), &admin_key).await, StatusCode::OK).await;
    let roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(roles.iter().filter(|(_, r)| r == "owner").count(), 1);
    assert!(roles.contains(&(admin_id.clone(), "owner".into())));
    assert!(roles.contains(&(owner.clone(), "admin".into())));
    let tenant_view = expect_status(app.get(&base, &admin_key).await, StatusCode::OK).await;
    assert_eq!(tenant_view["owner_member_id"], admin_id.as_str());
}

#[tokio::test]
async fn expired_revoked_and_forged_invitations_are_refused() {
    let clock = ManualClock::at(Utc::now());
    let app = spawn_app_with_clock(clock.clone()).await;
    let tenant = app.create_tenant("invites").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let invitations = format!("{base}/invitations");
    let invite = |email: &str, hours: i64| {
        app.post(
            &invitations,
            &tenant.key,
            json!({"email": email, "role": "read_only", "expires_in_hours": hours}),
        )
    };

    let short = expect_status(invite("late@invites.test", 1).await, StatusCode::CREATED).await;
    let revoked = expect_status(invite("revoked@invites.test", 48).await, StatusCode::CREATED).await;
    let response = app
        .delete(
            &format!("{base}/invitations/{}", revoked["id"].as_str().unwrap()),
            &tenant.key,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    clock.advance(Duration::hours(2));
    let events = app.event_count().await;
    expect_problem(app.accept_invitation(&short["token"]).await, StatusCode::GONE, "gone").await;
    expect_problem(app.accept_invitation(&revoked["token"]).await, StatusCode::GONE, "gone").await;
    let forged = revoked["token"].as_str().unwrap().chars().rev().collect::<String>();
    expect_problem(
        app.accept_invitation(&json!(forged)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    let mut tampered = revoked["token"].as_str().unwrap().to_owned();
    tampered.pop();
    tampered.push('0');
    let tampered = if tampered == revoked["token"].as_str().unwrap() {
        tampered.replace("0", "1")
    } else {
        tampered
    };
    let response = app.accept_invitation(&json!(tampered)).await;
    assert!([StatusCode::NOT_FOUND, StatusCode::UNPROCESSABLE_ENTITY].contains(&response.status()));
    assert_eq!(app.event_count().await, events, "refused acceptances append nothing");

    // Out-of-range expiry and unknown roles are input errors.
    expect_problem(
        invite("x@invites.test", 0).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    let owner_invite = app
        .post(
            &format!("{base}/invitations"),
            &tenant.key,
            json!({"email": "x@invites.test", "role": "owner"}),
        )
        .await;
    expect_problem(owner_invite, StatusCode::UNPROCESSABLE_ENTITY, "rule-violated").await;
    let bad_role = app
        .post(
            &format!("{base}/invitations"),
            &tenant.key,
            json!({"email": "x@invites.test", "role": "god"}),
        )
        .await;
    let problem = expect_problem(bad_role, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "role");
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_by_prefix_and_revocable() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("keys").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let (_, reader_key) = app.add_member(&tenant, "reader@keys.test", "read_only").await;

    let created = expect_status(
        app.post(&format!("{base}/api-keys"), &reader_key, json!({"name": "ci"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let second_key = created["api_key"].as_str().unwrap();
    expect_status(app.get(&base, second_key).await, StatusCode::OK).await;

    // A read-only member sees its own keys; the owner sees everyone's.
    let own = expect_status(app.get(&format!("{base}/api-keys"), &reader_key).await, StatusCode::OK).await;
    assert_eq!(own["items"].as_array().unwrap().len(), 2);
    let all = expect_status(app.get(&format!("{base}/api-keys"), &tenant.key).await, StatusCode::OK).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("api_key").is_none() && k["prefix"].as_str().unwrap().starts_with("cwk_"))
    );

    // A member cannot revoke someone else's key, but can revoke its own.
    let owner_key_id = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["member_id"] == tenant.owner_member_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_problem(
        app.delete(&format!("{base}/api-keys/{owner_key_id}"), &reader_key)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let response = app
        .delete(
            &format!("{base}/api-keys/{}", created["id"].as_str().unwrap()),
            &reader_key,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&base, second_key).await.status(), StatusCode::UNAUTHORIZED);
    expect_status(app.get(&base, &reader_key).await, StatusCode::OK).await;
}

/// An admin cannot lock the owner out by revoking the owner's keys; the
/// owner can, and so can the platform admin impersonating the owner, which
/// the audit trail records.
#[tokio::test]
async fn nobody_but_the_owner_revokes_the_owners_keys() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("lockout").await;
    let (_, admin_key) = app.add_member(&tenant, "admin@lockout.test", "admin").await;
    let keys = format!("/v1/tenants/{}/api-keys", tenant.id);
    let listed = expect_status(app.get(&keys, &tenant.key).await, StatusCode::OK).await;
    let owner_keys: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["member_id"] == tenant.owner_member_id.as_str())
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(owner_keys.len(), 1);
    let before = app.event_count().await;
    let refused = app.delete(&format!("{keys}/{}", owner_keys[0]), &admin_key).await;
    let problem = expect_problem(refused, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("only the owner"),
        "{problem}"
    );
    assert_eq!(app.event_count().await, before, "nothing written");
    expect_status(
        app.get(&format!("/v1/tenants/{}", tenant.id), &tenant.key).await,
        StatusCode::OK,
    )
    .await;

    // The platform admin, impersonating the owner: allowed and recorded.
    let revoked = app
        .request(
            Method::DELETE,
            &format!("{keys}/{}", owner_keys[0]),
            Some(crate::helpers::ADMIN_TOKEN),
        )
        .header("x-coverwatch-impersonate", &tenant.owner_member_id)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let gone = app.get(&format!("/v1/tenants/{}", tenant.id), &tenant.key).await;
    expect_problem(gone, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let trail = expect_status(
        app.get(
            &format!("/v1/tenants/{}/audit-log?action=ApiKeyRevoked", tenant.id),
            &admin_key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(trail["items"][0]["impersonated_by"], "platform-admin", "{trail}");
}
