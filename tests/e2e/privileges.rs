//! The server's database credential (a login role in `coverwatch_app`, as
//! every server under test uses) cannot rewrite history: no trigger
//! control, no UPDATE or DELETE of events or signed checkpoints, no change
//! to any table's structure. And aggregate snapshots, which it must write,
//! cannot override the log: one the server did not seal is not used.

use crate::helpers::{expect_status, serving_url, spawn_app};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn the_serving_credential_cannot_rewrite_history_or_change_structure() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("guarded").await;
    let mut conn = PgConnection::connect(&serving_url(&app.database_url)).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        user,
        crate::helpers::SERVING_ROLE,
        "the credential the servers under test use"
    );
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete",
        "UPDATE events SET payload = '{}'::json",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE digest_checkpoints SET digest = 'forged'",
        "DELETE FROM digest_checkpoints",
        "ALTER TABLE audit_log ADD COLUMN forged text",
        "ALTER TABLE snapshots DROP COLUMN payload",
        "DROP TABLE subscriptions",
        "CREATE TABLE shadow (id int)",
        "DROP TRIGGER events_refuse_update_delete ON events",
        "CREATE OR REPLACE FUNCTION coverwatch_visible_horizon() RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'",
    ] {
        let error = sqlx::query(statement).execute(&mut conn).await.expect_err(statement);
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
    // What it needs it has: the server signed this tenant up through it.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1::uuid")
        .bind(&tenant.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(events >= 2);
}

/// A snapshot written behind the server's back (here: a member removed from
/// the tenant's state) is not used: the next command decides on the log.
#[tokio::test]
async fn a_snapshot_the_server_did_not_seal_does_not_override_the_log() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("sealed").await;
    let (ann, _) = app.add_member(&tenant, "ann@sealed.test", "analyst").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    // Enough events for a snapshot (one every 20).
    for i in 0..20 {
        expect_status(
            app.patch(&base, &tenant.key, json!({"name": format!("Sealed {i}")}))
                .await,
            StatusCode::OK,
        )
        .await;
    }
    let (payload,): (serde_json::Value,) =
        sqlx::query_as("SELECT payload::jsonb FROM snapshots WHERE aggregate_type = 'tenant' AND aggregate_id = $1")
            .bind(&tenant.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(payload["seal"].is_string(), "snapshots are sealed: {payload}");
    let mut state: serde_json::Value = serde_json::from_str(payload["state"].as_str().unwrap()).unwrap();
    assert!(state["members"][&ann].is_object(), "ann is in the snapshot");
    // Forge: ann was never a member; keep the seal (it no longer matches).
    state["members"].as_object_mut().unwrap().remove(&ann);
    let forged = json!({"state": state.to_string(), "seal": payload["seal"]});
    sqlx::query("UPDATE snapshots SET payload = $2::json WHERE aggregate_type = 'tenant' AND aggregate_id = $1")
        .bind(&tenant.id)
        .bind(forged.to_string())
        .execute(&app.pool)
        .await
        .unwrap();
    // The log says ann is a member: changing her role works.
    expect_status(
        app.patch(
            &format!("{base}/members/{ann}"),
            &tenant.key,
            json!({"role": "auditor"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
}

/// A command whose events cross a snapshot point with more to spare (an
/// acceptance appends two: the member and its key) loses none of them
/// (cqrs-es would snapshot the first and postgres-es record the second as
/// folded in): the new member's key is known to the next command.
#[tokio::test]
async fn a_commit_that_crosses_a_snapshot_point_loses_none_of_its_events() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("crossing").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let sequence = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT max(sequence) FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1",
        )
        .bind(&tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    // Up to 18: the invitation makes 19, the acceptance 20 and 21.
    while sequence().await < 18 {
        expect_status(
            app.patch(&base, &tenant.key, json!({"industry": "x"})).await,
            StatusCode::OK,
        )
        .await;
        expect_status(
            app.patch(&base, &tenant.key, json!({"industry": "y"})).await,
            StatusCode::OK,
        )
        .await;
    }
    if sequence().await == 19 {
        // One too many: move on to the next point (38, then 39 and 40).
        while sequence().await < 38 {
            let n = sequence().await;
            expect_status(
                app.patch(&base, &tenant.key, json!({"industry": format!("z{n}")}))
                    .await,
                StatusCode::OK,
            )
            .await;
        }
    }
    let before = sequence().await;
    assert_eq!(before % 20, 18, "{before}");
    let (ann, key) = app.add_member(&tenant, "ann@crossing.test", "analyst").await;
    assert_eq!(sequence().await, before + 3, "invited, accepted, her key");
    let keys = expect_status(app.get(&format!("{base}/api-keys"), &key).await, StatusCode::OK).await;
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    // The aggregate knows her key: she may revoke it.
    let revoked = app.delete(&format!("{base}/api-keys/{key_id}"), &key).await;
    assert_eq!(
        revoked.status(),
        StatusCode::NO_CONTENT,
        "{ann}: {}",
        revoked.text().await.unwrap()
    );
}

/// A snapshot folds each event once (cqrs-es 0.5 folds a commit's events
/// into the aggregate its sink already applied them to): past any number of
/// snapshot points the tenant's version is its number of events, so a
/// chain of writes each guarded by the ETag the last one returned never
/// fails with 412.
#[tokio::test]
async fn versions_stay_exact_across_snapshots() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("exact").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let first = app.get(&base, &tenant.key).await;
    let mut etag = first.headers()["etag"].to_str().unwrap().to_owned();
    for i in 0..45 {
        let response = app
            .request(reqwest::Method::PATCH, &base, Some(&tenant.key))
            .header("if-match", &etag)
            .json(&json!({"name": format!("Exact {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "write {i} after {etag}");
        etag = response.headers()["etag"].to_str().unwrap().to_owned();
    }
    let (state,): (serde_json::Value,) =
        sqlx::query_as("SELECT payload::jsonb FROM snapshots WHERE aggregate_type = 'tenant' AND aggregate_id = $1")
            .bind(&tenant.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (last,): (i64,) = sqlx::query_as("SELECT last_sequence FROM snapshots WHERE aggregate_id = $1")
        .bind(&tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let folded: serde_json::Value = serde_json::from_str(state["state"].as_str().unwrap()).unwrap();
    assert_eq!(
        folded["version"], last,
        "the snapshot's version is the sequence it was taken at"
    );
}
