//! The directory read model: tenants, members, invitations and API keys, as
//! the API lists them and authenticates against them. A batch loads the rows
//! of the tenants it touches, folds the events in memory and writes back the
//! rows that changed (one statement per table), which keeps catch-up fast.

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coverwatch_domain::tenant::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub struct Directory;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub industry: Option<String>,
    pub company_size: Option<String>,
    pub contact_email: Option<String>,
    pub billing_email: Option<String>,
    pub owner_member_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub hierarchy_path: Vec<Uuid>,
    pub status: String,
    pub suspended_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub joined_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub invited_by: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Rows of one table keyed by id, with the ids changed in this batch.
struct Table<R> {
    rows: BTreeMap<Uuid, R>,
    dirty: BTreeSet<Uuid>,
}

impl<R> Table<R> {
    fn empty() -> Self {
        Self {
            rows: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<R: Serialize + DeserializeOwned> Table<R> {
    async fn load(
        conn: &mut PgConnection,
        table: &str,
        key: &str,
        tenants: &[Uuid],
        id: fn(&R) -> Uuid,
    ) -> anyhow::Result<Self> {
        let json: serde_json::Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM {table} t WHERE {key} = ANY($1)"
        ))
        .bind(tenants)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("loading {table}"))?;
        let rows: Vec<R> = serde_json::from_value(json).with_context(|| format!("decoding {table}"))?;
        Ok(Self {
            rows: rows.into_iter().map(|r| (id(&r), r)).collect(),
            dirty: BTreeSet::new(),
        })
    }

    fn update(&mut self, id: Uuid, change: impl FnOnce(&mut R)) {
        if let Some(row) = self.rows.get_mut(&id) {
            change(row);
            self.dirty.insert(id);
        }
    }

    fn insert(&mut self, id: Uuid, row: R) {
        self.rows.insert(id, row);
        self.dirty.insert(id);
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

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let tenant_events: Vec<&StoredEvent> = events.iter().filter(|e| e.aggregate_type == "tenant").collect();
        if tenant_events.is_empty() {
            return Ok(());
        }
        let touched: Vec<Uuid> = tenant_events
            .iter()
            .filter_map(|e| Uuid::parse_str(&e.aggregate_id).ok())
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
            let tenant_id = Uuid::parse_str(&event.aggregate_id).context("tenant aggregate id")?;
            // Rows already at or past this version were written by an earlier
            // run of the same events: skip, so replays are idempotent.
            if state
                .tenants
                .rows
                .get(&tenant_id)
                .is_some_and(|t| t.version >= event.sequence)
            {
                continue;
            }
            let payload: TenantEvent = serde_json::from_value(event.payload.clone())
                .with_context(|| format!("decoding {} at position {}", event.event_type, event.position))?;
            state.apply(tenant_id, event, payload);
        }
        state.tenants.save(conn, "tenants").await?;
        state.members.save(conn, "members").await?;
        state.invitations.save(conn, "invitations").await?;
        state.api_keys.save(conn, "api_keys").await?;
        Ok(())
    }
}

struct State {
    tenants: Table<TenantRow>,
    members: Table<MemberRow>,
    invitations: Table<InvitationRow>,
    api_keys: Table<ApiKeyRow>,
}

/// What a sequence of tenant events folds into.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Folded {
    pub tenants: Vec<TenantRow>,
    pub members: Vec<MemberRow>,
    pub invitations: Vec<InvitationRow>,
    pub api_keys: Vec<ApiKeyRow>,
}

/// Fold events in memory with the very code the live subscriber uses (for
/// "state as of" reconstructions). Non-tenant events are ignored.
pub fn fold(events: &[StoredEvent]) -> anyhow::Result<Folded> {
    let mut state = State {
        tenants: Table::empty(),
        members: Table::empty(),
        invitations: Table::empty(),
        api_keys: Table::empty(),
    };
    for event in events.iter().filter(|e| e.aggregate_type == "tenant") {
        state.apply_event(event)?;
    }
    Ok(Folded {
        tenants: state.tenants.rows.into_values().collect(),
        members: state.members.rows.into_values().collect(),
        invitations: state.invitations.rows.into_values().collect(),
        api_keys: state.api_keys.rows.into_values().collect(),
    })
}

fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

impl State {
    fn apply_event(&mut self, event: &StoredEvent) -> anyhow::Result<()> {
        let tenant_id = Uuid::parse_str(&event.aggregate_id).context("tenant aggregate id")?;
        // Rows already at or past this version were written by an earlier
        // run of the same events: skip, so replays are idempotent.
        if self
            .tenants
            .rows
            .get(&tenant_id)
            .is_some_and(|t| t.version >= event.sequence)
        {
            return Ok(());
        }
        let payload: TenantEvent = serde_json::from_value(event.payload.clone())
            .with_context(|| format!("decoding {} at position {}", event.event_type, event.position))?;
        self.apply(tenant_id, event, payload);
        Ok(())
    }

    fn apply(&mut self, tenant_id: Uuid, event: &StoredEvent, payload: TenantEvent) {
        let at = event.recorded_at;
        match payload {
            TenantEvent::TenantCreated {
                name,
                slug,
                owner_member_id,
                owner_email,
                industry,
                company_size,
                contact_email,
                billing_email,
                parent_tenant_id,
                hierarchy_path,
                ..
            } => {
                self.tenants.insert(
                    tenant_id,
                    TenantRow {
                        id: tenant_id,
                        slug: slug.into(),
                        name: name.into(),
                        industry: industry.map(Into::into),
                        company_size: company_size.map(Into::into),
                        contact_email: contact_email.map(Into::into),
                        billing_email: billing_email.map(Into::into),
                        owner_member_id,
                        parent_id: parent_tenant_id,
                        hierarchy_path,
                        status: text(&TenantStatus::Active),
                        suspended_reason: None,
                        version: 0,
                        created_at: at,
                        updated_at: at,
                        deleted_at: None,
                    },
                );
                self.members.insert(
                    owner_member_id,
                    MemberRow {
                        id: owner_member_id,
                        tenant_id,
                        email: owner_email.into(),
                        role: "owner".into(),
                        status: text(&MemberStatus::Active),
                        joined_at: at,
                        updated_at: at,
                    },
                );
            }
            TenantEvent::ProfileUpdated {
                name,
                industry,
                company_size,
                contact_email,
                billing_email,
            } => self.tenants.update(tenant_id, |t| {
                if let Some(name) = name {
                    t.name = name.into();
                }
                if let Some(v) = industry {
                    t.industry = v.map(Into::into);
                }
                if let Some(v) = company_size {
                    t.company_size = v.map(Into::into);
                }
                if let Some(v) = contact_email {
                    t.contact_email = v.map(Into::into);
                }
                if let Some(v) = billing_email {
                    t.billing_email = v.map(Into::into);
                }
            }),
            TenantEvent::TenantDeleted { .. } => self.tenants.update(tenant_id, |t| {
                t.status = text(&TenantStatus::Deleted);
                t.deleted_at = Some(at);
            }),
            TenantEvent::MemberInvited {
                invitation_id,
                email,
                role,
                expires_at,
                ..
            } => self.invitations.insert(
                invitation_id,
                InvitationRow {
                    id: invitation_id,
                    tenant_id,
                    email: email.into(),
                    role: text(&role),
                    status: text(&InvitationStatus::Pending),
                    invited_by: event.meta("actor").unwrap_or("unknown").to_owned(),
                    expires_at,
                    created_at: at,
                    updated_at: at,
                },
            ),
            TenantEvent::InvitationRevoked { invitation_id } => self.invitations.update(invitation_id, |i| {
                i.status = text(&InvitationStatus::Revoked);
                i.updated_at = at;
            }),
            TenantEvent::InvitationAccepted {
                invitation_id,
                member_id,
                email,
                role,
            } => {
                self.invitations.update(invitation_id, |i| {
                    i.status = text(&InvitationStatus::Accepted);
                    i.updated_at = at;
                });
                self.members.insert(
                    member_id,
                    MemberRow {
                        id: member_id,
                        tenant_id,
                        email: email.into(),
                        role: text(&role),
                        status: text(&MemberStatus::Active),
                        joined_at: at,
                        updated_at: at,
                    },
                );
            }
            TenantEvent::MemberRoleChanged { member_id, to, .. } => self.members.update(member_id, |m| {
                m.role = text(&to);
                m.updated_at = at;
            }),
            TenantEvent::MemberSuspended { member_id } => self.member_status(member_id, MemberStatus::Suspended, at),
            TenantEvent::MemberReactivated { member_id } => self.member_status(member_id, MemberStatus::Active, at),
            TenantEvent::MemberRemoved { member_id } => self.member_status(member_id, MemberStatus::Removed, at),
            TenantEvent::OwnershipTransferred {
                from_member_id,
                to_member_id,
                previous_owner_role,
            } => {
                self.members.update(from_member_id, |m| {
                    m.role = text(&previous_owner_role);
                    m.updated_at = at;
                });
                self.members.update(to_member_id, |m| {
                    m.role = "owner".into();
                    m.updated_at = at;
                });
                self.tenants.update(tenant_id, |t| t.owner_member_id = to_member_id);
            }
            TenantEvent::ApiKeyCreated {
                key_id,
                member_id,
                name,
                prefix,
                secret_hash,
            } => self.api_keys.insert(
                key_id,
                ApiKeyRow {
                    id: key_id,
                    tenant_id,
                    member_id,
                    name: name.into(),
                    prefix,
                    secret_hash,
                    created_at: at,
                    revoked_at: None,
                },
            ),
            TenantEvent::ApiKeyRevoked { key_id } => self.api_keys.update(key_id, |k| k.revoked_at = Some(at)),
            TenantEvent::TenantSuspended { reason } => self.tenants.update(tenant_id, |t| {
                t.status = text(&TenantStatus::Suspended);
                t.suspended_reason = Some(reason);
            }),
            TenantEvent::TenantReactivated {} => self.tenants.update(tenant_id, |t| {
                t.status = text(&TenantStatus::Active);
                t.suspended_reason = None;
            }),
        }
        self.tenants.update(tenant_id, |t| {
            t.version = event.sequence;
            t.updated_at = at;
        });
    }

    fn member_status(&mut self, member_id: Uuid, status: MemberStatus, at: DateTime<Utc>) {
        self.members.update(member_id, |m| {
            m.status = text(&status);
            m.updated_at = at;
        });
    }
}
