//! The metadata carried by every event of a commit: who, from where, and in
//! answer to what. The database refuses events that lack the required keys.

use coverwatch_domain::ids::{ApiKeyId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMetadata {
    pub tenant_id: TenantId,
    /// `member:<id>`, `api_key:<id>` style, `system` or `platform-admin`.
    pub actor: String,
    /// The API key the request authenticated with, when there was one.
    pub api_key_id: Option<ApiKeyId>,
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub impersonated_by: Option<String>,
}

impl CommandMetadata {
    /// Metadata for work Coverwatch does on its own (no request behind it).
    pub fn system(tenant_id: TenantId) -> Self {
        let id = Uuid::now_v7().to_string();
        Self {
            tenant_id,
            actor: "system".into(),
            api_key_id: None,
            request_id: id.clone(),
            correlation_id: id.clone(),
            causation_id: id,
            client_ip: None,
            user_agent: None,
            impersonated_by: None,
        }
    }

    /// The key/value form postgres-es stores, plus the id of this commit.
    pub fn to_map(&self, command_id: Uuid) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("tenant_id".to_owned(), self.tenant_id.to_string()),
            ("actor".to_owned(), self.actor.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("command_id".to_owned(), command_id.to_string()),
        ]);
        let optional = [
            ("api_key_id", self.api_key_id.map(|id| id.to_string())),
            ("client_ip", self.client_ip.clone()),
            ("user_agent", self.user_agent.clone()),
            ("impersonated_by", self.impersonated_by.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        map
    }
}
