//! How tenant events fold into directory rows: the same code serves the live
//! subscriber (over the rows a batch loaded) and "state as of" replays (over
//! nothing), so a reconstruction shows exactly what the read model showed.

use super::rows::{ApiKeyRow, InvitationRow, MemberRow, TenantRow};
use crate::event::StoredEvent;
use anyhow::Context;
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use coverwatch_domain::tenant::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Rows of one table keyed by id, with the ids changed in this batch.
pub(super) struct Table<K, R> {
    pub(super) rows: BTreeMap<K, R>,
    pub(super) dirty: BTreeSet<K>,
}

impl<K: Ord + Copy, R> Table<K, R> {
    pub(super) fn empty() -> Self {
        Self {
            rows: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn update(&mut self, id: K, change: impl FnOnce(&mut R)) {
        if let Some(row) = self.rows.get_mut(&id) {
            change(row);
            self.dirty.insert(id);
        }
    }

    fn insert(&mut self, id: K, row: R) {
        self.rows.insert(id, row);
        self.dirty.insert(id);
    }
}

/// The rows of the tenants one batch (or one reconstruction) touches.
pub(super) struct State {
    pub(super) tenants: Table<TenantId, TenantRow>,
    pub(super) members: Table<MemberId, MemberRow>,
    pub(super) invitations: Table<InvitationId, InvitationRow>,
    pub(super) api_keys: Table<ApiKeyId, ApiKeyRow>,
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
    pub(super) fn apply_event(&mut self, event: &StoredEvent) -> anyhow::Result<()> {
        let tenant_id: TenantId = event.aggregate_id.parse().context("tenant aggregate id")?;
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
        let payload: TenantEvent = event.decode()?;
        self.apply(tenant_id, event, payload);
        Ok(())
    }

    fn apply(&mut self, tenant_id: TenantId, event: &StoredEvent, payload: TenantEvent) {
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

    fn member_status(&mut self, member_id: MemberId, status: MemberStatus, at: DateTime<Utc>) {
        self.members.update(member_id, |m| {
            m.status = text(&status);
            m.updated_at = at;
        });
    }
}
