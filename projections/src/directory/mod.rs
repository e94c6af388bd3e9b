//! The directory read model: tenants, members, invitations and API keys, as
//! the API lists them and authenticates against them. A batch loads the rows
//! of the tenants it touches, folds the events in memory (`fold`) and writes
//! back the rows that changed (one statement per table), which keeps
//! catch-up fast. `rows` defines them once; `queries` is how they are read.

mod fold;
pub mod queries;
pub mod rows;

pub use rows::{ApiKeyRow, InvitationRow, MemberRow, TenantRow};

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use anyhow::Context;
use async_trait::async_trait;
use coverwatch_domain::ids::TenantId;
use fold::{State, Table};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use std::collections::BTreeSet;

pub struct Directory;

impl<K: Ord + Copy, R: Serialize + DeserializeOwned> Table<K, R> {
    /// The rows of `tenants` in `table` (`key` is the tenant column).
    async fn load(
        conn: &mut PgConnection,
        table: &str,
        key: &str,
        tenants: &[TenantId],
        id: fn(&R) -> K,
    ) -> anyhow::Result<Self> {
        let json: serde_json::Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM {table} t WHERE {key} = ANY($1)"
        ))
        .bind(tenants)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("loading {table}"))?;
        let rows: Vec<R> = serde_json::from_value(json).with_context(|| format!("decoding {table}"))?;
        let mut table = Self::empty();
        table.rows = rows.into_iter().map(|r| (id(&r), r)).collect();
        Ok(table)
    }

    /// Upsert the changed rows in one statement. An update in place (not a
    /// delete and insert) lets PostgreSQL keep it on the page without touching
    /// indexes when no indexed column changed, so hot rows stay cheap.
    async fn save(self, conn: &mut PgConnection, table: &str) -> anyhow::Result<()> {
        let rows: Vec<serde_json::Value> = self
            .dirty
            .iter()
            .filter_map(|id| self.rows.get(id))
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        let Some(serde_json::Value::Object(first)) = rows.first() else {
            return Ok(());
        };
        let columns: Vec<&str> = first.keys().map(String::as_str).filter(|c| *c != "id").collect();
        let targets = columns.join(", ");
        let sources = columns
            .iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1)
             ON CONFLICT (id) DO UPDATE SET ({targets}) = ROW({sources})"
        ))
        .bind(serde_json::Value::Array(rows))
        .execute(&mut *conn)
        .await
        .with_context(|| format!("writing {table}"))?;
        Ok(())
    }
}

#[async_trait]
impl Subscriber for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }

    /// In the order the API's authentication join reads them, so a rebuild
    /// switch locks them in that order too (no lock-order cycle).
    fn tables(&self) -> &'static [&'static str] {
        &["api_keys", "members", "tenants", "invitations"]
    }

    /// Authentication and every tenant query read it.
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let tenant_events: Vec<&StoredEvent> = events.iter().filter(|e| e.aggregate_type == "tenant").collect();
        if tenant_events.is_empty() {
            return Ok(());
        }
        let touched: Vec<TenantId> = tenant_events
            .iter()
            .filter_map(|e| e.aggregate_id.parse().ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut state = State {
            tenants: Table::load(conn, "tenants", "id", &touched, |r: &TenantRow| r.id).await?,
            members: Table::load(conn, "members", "tenant_id", &touched, |r: &MemberRow| r.id).await?,
            invitations: Table::load(conn, "invitations", "tenant_id", &touched, |r: &InvitationRow| r.id).await?,
            api_keys: Table::load(conn, "api_keys", "tenant_id", &touched, |r: &ApiKeyRow| r.id).await?,
        };
        for event in tenant_events {
            state.apply_event(event)?;
        }
        state.tenants.save(conn, "tenants").await?;
        state.members.save(conn, "members").await?;
        state.invitations.save(conn, "invitations").await?;
        state.api_keys.save(conn, "api_keys").await?;
        Ok(())
    }
}

pub use fold::{Folded, fold};
