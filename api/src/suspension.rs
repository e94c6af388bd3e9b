//! Suspension stops every write of a tenant, on every route, in one place:
//! a member's (or member key's) POST, PUT, PATCH or DELETE under
//! `/v1/tenants/{tenant_id}` of a suspended tenant is 403 before any handler
//! runs, whatever aggregate it would reach. Reads keep working; the platform
//! admin (its own routes, or acting in the tenant by impersonation) still
//! acts; Stripe's webhooks still land. Creating a child under a suspended
//! parent is refused by the sign-up itself.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coverwatch_domain::ids::TenantId;

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let Some(tenant_id) = writes.then(|| tenant_of(request.uri().path())).flatten() else {
        return next.run(request).await;
    };
    // An unauthenticated or foreign request goes on to the handler, which
    // answers 401 or 404 as always: this layer says nothing about a tenant
    // to anyone who is not its member.
    let (mut parts, body) = request.into_parts();
    if let Ok(Principal::Member(member)) = Principal::of_request(&parts.headers, &mut parts.extensions, &state).await
        && member.tenant_id == tenant_id
        && member.tenant_suspended
    {
        return suspended().into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

fn suspended() -> ApiError {
    ApiError::Forbidden(coverwatch_domain::tenant::TenantError::Suspended.to_string())
}

/// The tenant a path is under: `/v1/tenants/{tenant_id}[/...]`.
fn tenant_of(path: &str) -> Option<TenantId> {
    let rest = path.strip_prefix("/v1/tenants/")?;
    rest.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::tenant_of;

    #[test]
    fn tenant_paths_are_recognised() {
        let id = "0192d4e2-3f4a-7b8c-9d0e-1f2a3b4c5d6e";
        assert_eq!(tenant_of(&format!("/v1/tenants/{id}")).unwrap().to_string(), id);
        assert_eq!(
            tenant_of(&format!("/v1/tenants/{id}/detections/x"))
                .unwrap()
                .to_string(),
            id
        );
        assert!(tenant_of("/v1/tenants").is_none());
        assert!(tenant_of("/v1/admin/tenants/x").is_none());
        assert!(tenant_of("/v1/tenants/not-an-id/members").is_none());
    }
}
