//! The OpenAPI 3.1 document, generated from the handlers' annotations by
//! utoipa as the router is assembled (so every route is in it).

use axum::Json;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Coverwatch API", description = "Multi-tenant cloud detection coverage (event-sourced)."),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("admin_token", bearer());
    }
}

pub static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(
        DOCUMENT
            .get()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .unwrap_or_default(),
    )
}
