//! Read models without HTTP: given events (as the log stores them), the
//! subscriber writes its rows, and its own queries read them back. Each test
//! runs on a fresh database; the events are built from the domain's types,
//! so they are exactly what the aggregates would have appended.

use crate::helpers::fresh_database;
use chrono::{DateTime, TimeZone, Utc};
use coverwatch_domain::attack::{self, Confidence, PlatformSet, TechniqueId};
use coverwatch_domain::cloud::hierarchy::DiscoveredAccount;
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Provider, Region, RoleArn};
use coverwatch_domain::cloud::{AccountSource, CloudAccountsEvent, CloudOrganizationEvent, NewAccount};
use coverwatch_domain::detection::{DetectionEvent, DetectionScope, DetectionSource, Techniques};
use coverwatch_domain::ids::{ApiKeyId, DetectionId, InvitationId, MemberId, OrganizationId, TenantId};
use coverwatch_domain::tenant::TenantEvent;
use coverwatch_domain::values::{Email, Name, Role, Slug};
use coverwatch_projections::cloud::Cloud;
use coverwatch_projections::coverage::Coverage;
use coverwatch_projections::directory::{Directory, queries as directory};
use coverwatch_projections::{StoredEvent, Subscriber, coverage};
use cqrs_es::DomainEvent;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, second).unwrap()
}

/// Events of one aggregate as the log holds them, numbered from `position`.
struct Log {
    events: Vec<StoredEvent>,
    position: i64,
}

impl Log {
    fn new() -> Self {
        Self {
            events: vec![],
            position: 0,
        }
    }

    fn append<E: DomainEvent + Serialize>(
        &mut self,
        aggregate_type: &str,
        aggregate_id: impl ToString,
        tenant_id: TenantId,
        event: E,
    ) {
        self.position += 1;
        let aggregate_id = aggregate_id.to_string();
        let sequence = self
            .events
            .iter()
            .filter(|e| e.aggregate_type == aggregate_type && e.aggregate_id == aggregate_id)
            .count() as i64
            + 1;
        self.events.push(StoredEvent {
            position: self.position,
            event_id: Uuid::new_v4(),
            aggregate_type: aggregate_type.into(),
            aggregate_id,
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            recorded_at: at(self.position as u32),
            tenant_id: Some(tenant_id),
            payload: serde_json::to_value(&event).unwrap(),
            metadata: serde_json::json!({"actor": "member:test", "tenant_id": tenant_id.to_string()}),
            prev_hash: String::new(),
            hash: String::new(),
        });
    }
}

/// Applies the events in one transaction, as the runtime does a batch.
async fn apply(pool: &PgPool, subscriber: &dyn Subscriber, events: &[StoredEvent]) {
    let mut tx = pool.begin().await.unwrap();
    subscriber.handle(&mut tx, events).await.unwrap();
    tx.commit().await.unwrap();
}

fn email(text: &str) -> Email {
    Email::parse(text).unwrap()
}

const TENANT: TenantId = TenantId::from_u128(1);
const OWNER: MemberId = MemberId::from_u128(10);
const ANN: MemberId = MemberId::from_u128(11);
const INVITATION: InvitationId = InvitationId::from_u128(20);
const OWNER_KEY: ApiKeyId = ApiKeyId::from_u128(30);
const ANN_KEY: ApiKeyId = ApiKeyId::from_u128(31);

fn team() -> Log {
    let mut log = Log::new();
    let tenant = |log: &mut Log, event: TenantEvent| log.append("tenant", TENANT, TENANT, event);
    tenant(
        &mut log,
        TenantEvent::TenantCreated {
            tenant_id: TENANT,
            name: Name::parse("Acme").unwrap(),
            slug: Slug::parse("acme").unwrap(),
            owner_member_id: OWNER,
            owner_email: email("owner@acme.test"),
            industry: None,
            company_size: None,
            contact_email: None,
            billing_email: Some(email("billing@acme.test")),
            parent_tenant_id: None,
            hierarchy_path: vec![],
        },
    );
    let key = |key_id: ApiKeyId, member_id: MemberId| TenantEvent::ApiKeyCreated {
        key_id,
        member_id,
        name: Name::parse("default").unwrap(),
        prefix: format!("cwk_{}", &key_id.to_string()[..8]),
        secret_hash: format!("hash-{key_id}"),
    };
    tenant(&mut log, key(OWNER_KEY, OWNER));
    tenant(
        &mut log,
        TenantEvent::MemberInvited {
            invitation_id: INVITATION,
            email: email("ann@acme.test"),
            role: Role::Analyst,
            token_hash: "token-hash".into(),
            expires_at: at(59),
        },
    );
    tenant(
        &mut log,
        TenantEvent::InvitationAccepted {
            invitation_id: INVITATION,
            member_id: ANN,
            email: email("ann@acme.test"),
            role: Role::Analyst,
        },
    );
    tenant(&mut log, key(ANN_KEY, ANN));
    tenant(
        &mut log,
        TenantEvent::MemberRoleChanged {
            member_id: ANN,
            from: Role::Analyst,
            to: Role::Auditor,
        },
    );
    log
}

#[tokio::test]
async fn the_directory_holds_the_tenant_its_members_invitations_and_keys() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let log = team();
    apply(&pool, &Directory, &log.events).await;

    let tenant = directory::tenant(&pool, TENANT).await.unwrap().expect("the tenant");
    assert_eq!((tenant.name.as_str(), tenant.slug.as_str()), ("Acme", "acme"));
    assert_eq!(tenant.owner_member_id, OWNER);
    assert_eq!(tenant.billing_email.as_deref(), Some("billing@acme.test"));
    assert_eq!(tenant.status, "active");
    assert_eq!(tenant.version, 6, "the version is the last event's sequence");
    assert_eq!(directory::tenant_version(&pool, TENANT).await.unwrap(), Some(6));

    let members = directory::members_page(&pool, TENANT, None, None, 10).await.unwrap();
    let roles: Vec<(MemberId, &str)> = members.iter().map(|m| (m.id, m.role.as_str())).collect();
    assert_eq!(roles, [(OWNER, "owner"), (ANN, "auditor")]);
    let invitations = directory::invitations_page(&pool, TENANT, None, 10).await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(
        (invitations[0].id, invitations[0].status.as_str()),
        (INVITATION, "accepted")
    );
    assert_eq!(invitations[0].invited_by, "member:test");

    let keys = directory::api_keys_page(&pool, TENANT, None, None, 10).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), [OWNER_KEY, ANN_KEY]);
    let anns = directory::api_keys_page(&pool, TENANT, Some(ANN), None, 10)
        .await
        .unwrap();
    assert_eq!(anns.iter().map(|k| k.id).collect::<Vec<_>>(), [ANN_KEY]);
    let holder = directory::key_holder(&pool, ANN_KEY)
        .await
        .unwrap()
        .expect("a live key");
    assert_eq!((holder.tenant_id, holder.member_id), (TENANT, ANN));
    assert_eq!(
        (
            holder.role.as_str(),
            holder.member_status.as_str(),
            holder.tenant_status.as_str()
        ),
        ("auditor", "active", "active")
    );
    assert_eq!(holder.secret_hash, format!("hash-{ANN_KEY}"));
}

#[tokio::test]
async fn the_directory_applies_a_replayed_batch_once() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let log = team();
    apply(&pool, &Directory, &log.events).await;
    let before = directory::members_page(&pool, TENANT, None, None, 10).await.unwrap();
    // A batch applied again (a crash after the writes, before the
    // checkpoint, is rolled back whole; a rebuild may run over its rows).
    apply(&pool, &Directory, &log.events).await;
    apply(&pool, &Directory, &log.events[2..]).await;
    let after = directory::members_page(&pool, TENANT, None, None, 10).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(directory::tenant_version(&pool, TENANT).await.unwrap(), Some(6));
}

#[tokio::test]
async fn suspension_revocation_and_removal_reach_authentication() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let mut log = team();
    log.append(
        "tenant",
        TENANT,
        TENANT,
        TenantEvent::TenantSuspended {
            reason: "unpaid".into(),
        },
    );
    log.append(
        "tenant",
        TENANT,
        TENANT,
        TenantEvent::ApiKeyRevoked { key_id: OWNER_KEY },
    );
    log.append("tenant", TENANT, TENANT, TenantEvent::MemberRemoved { member_id: ANN });
    // Two batches: the directory folds across them.
    apply(&pool, &Directory, &log.events[..6]).await;
    apply(&pool, &Directory, &log.events[6..]).await;

    let tenant = directory::tenant(&pool, TENANT).await.unwrap().unwrap();
    assert_eq!(tenant.status, "suspended");
    assert_eq!(tenant.suspended_reason.as_deref(), Some("unpaid"));
    assert!(
        directory::key_holder(&pool, OWNER_KEY).await.unwrap().is_none(),
        "a revoked key authenticates nobody"
    );
    let ann = directory::key_holder(&pool, ANN_KEY).await.unwrap().unwrap();
    assert_eq!(
        (ann.member_status.as_str(), ann.tenant_status.as_str()),
        ("removed", "suspended")
    );
    let listed = directory::members_page(&pool, TENANT, None, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [OWNER],
        "removed members are not listed"
    );
    let removed = directory::members_page(&pool, TENANT, Some("removed"), None, 10)
        .await
        .unwrap();
    assert_eq!(removed.iter().map(|m| m.id).collect::<Vec<_>>(), [ANN]);
}

const ORG: OrganizationId = OrganizationId::from_u128(40);
const MEMBER: &str = "111111111111";
const STANDALONE: &str = "222222222222";

fn technique(id: &str) -> TechniqueId {
    let technique = TechniqueId::parse(id).unwrap();
    assert!(attack::latest().get(&technique).is_some(), "{id} is in the catalog");
    technique
}

fn techniques(list: &[(&str, f64)]) -> Techniques {
    list.iter()
        .map(|(t, c)| (technique(t), Confidence::parse(*c).unwrap()))
        .collect()
}

fn connected(account_id: &str, source: AccountSource) -> CloudAccountsEvent {
    CloudAccountsEvent::CloudAccountConnected {
        tenant_id: TENANT,
        account: NewAccount {
            account_id: AwsAccountId::parse(account_id).unwrap(),
            alias: None,
            region: Region::parse("us-east-1").unwrap(),
            role_arn: RoleArn::parse(&format!("arn:aws:iam::{account_id}:role/CoverwatchAudit")).unwrap(),
            environment: Environment::Production,
            source,
        },
    }
}

fn registered(id: DetectionId, name: &str, techniques: Techniques, scope: DetectionScope) -> DetectionEvent {
    DetectionEvent::DetectionRegistered {
        detection_id: id,
        tenant_id: TENANT,
        name: Name::parse(name).unwrap(),
        source: DetectionSource::Custom,
        techniques,
        scope,
        attack_version: attack::latest().attack_version.clone(),
        derived_from: None,
    }
}

/// A member of ORG in `Root/Production` and a standalone account, both
/// connected; an account detection on each and one organization detection.
fn estate() -> Log {
    let mut log = Log::new();
    log.append(
        "cloud_organization",
        ORG,
        TENANT,
        CloudOrganizationEvent::CloudOrganizationRegistered {
            organization_id: ORG,
            tenant_id: TENANT,
            provider: Provider::Aws,
            external_org_id: "o-a1b2c3d4e5".into(),
            management_account_id: AwsAccountId::parse("123456789012").unwrap(),
            role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/CoverwatchAudit").unwrap(),
            external_id: format!("coverwatch-{TENANT}"),
            name: Name::parse("Acme").unwrap(),
            member_role_name: "CoverwatchAudit".into(),
        },
    );
    log.append(
        "cloud_organization",
        ORG,
        TENANT,
        CloudOrganizationEvent::MemberAccountFound {
            account: DiscoveredAccount {
                id: MEMBER.into(),
                name: "web".into(),
                email: "web@acme.test".into(),
                status: "ACTIVE".into(),
                parent_id: "ou-prod".into(),
                path_names: vec!["Root".into(), "Production".into()],
                path_ids: vec!["r-root".into(), "ou-prod".into()],
            },
        },
    );
    log.append(
        "cloud_accounts",
        TENANT,
        TENANT,
        connected(MEMBER, AccountSource::Organization(ORG)),
    );
    log.append(
        "cloud_accounts",
        TENANT,
        TENANT,
        connected(STANDALONE, AccountSource::Standalone),
    );
    let account = |id: &str| DetectionScope::Account {
        account_id: AwsAccountId::parse(id).unwrap(),
    };
    log.append(
        "detection",
        DetectionId::from_u128(50),
        TENANT,
        registered(
            DetectionId::from_u128(50),
            "root login alarm",
            // T1530 counts (0.9); T1078.004 at 0.3 does not.
            techniques(&[("T1530", 0.9), ("T1078.004", 0.3)]),
            account(MEMBER),
        ),
    );
    log.append(
        "detection",
        DetectionId::from_u128(51),
        TENANT,
        registered(
            DetectionId::from_u128(51),
            "guardduty everywhere",
            techniques(&[("T1078.004", 0.6), ("T1530", 0.6)]),
            DetectionScope::Organization {
                organization_id: ORG,
                accounts: None,
            },
        ),
    );
    log.append(
        "detection",
        DetectionId::from_u128(52),
        TENANT,
        registered(
            DetectionId::from_u128(52),
            "standalone only",
            techniques(&[("T1078.004", 0.9)]),
            account(STANDALONE),
        ),
    );
    log
}

fn ids(set: &coverwatch_domain::attack::TechniqueSet) -> Vec<String> {
    attack::latest()
        .ids_of(set)
        .into_iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test]
async fn coverage_counts_own_and_inherited_techniques_per_account() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let log = estate();
    // The organization itself is the cloud read model's: an organization with
    // no account in view is found there.
    apply(&pool, &Cloud, &log.events).await;
    apply(&pool, &Coverage, &log.events).await;
    let denominator = attack::latest().denominator_set(&PlatformSet::cloud());

    let (member, _) = coverage::queries::account(&pool, TENANT, MEMBER)
        .await
        .unwrap()
        .expect("connected");
    assert_eq!(member.organization_id, Some(ORG));
    assert_eq!(member.path.as_deref(), Some("Root/Production"));
    let breakdown = member.breakdown(&denominator);
    assert_eq!(ids(&breakdown.account_only), Vec::<String>::new());
    assert_eq!(ids(&breakdown.organization_only), ["T1078.004"]);
    assert_eq!(
        ids(&breakdown.overlap),
        ["T1530"],
        "covered by its own and by the organization's"
    );

    let (standalone, _) = coverage::queries::account(&pool, TENANT, STANDALONE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(standalone.organization_id, None);
    let breakdown = standalone.breakdown(&denominator);
    assert_eq!(ids(&breakdown.account_only), ["T1078.004"]);
    assert!(
        breakdown.organization_only.is_empty(),
        "a standalone account inherits nothing"
    );

    let organization = coverage::queries::organization(&pool, TENANT, ORG, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        organization
            .rows
            .iter()
            .map(|r| r.account_id.as_str())
            .collect::<Vec<_>>(),
        [MEMBER]
    );
    assert_eq!(organization.org_detection_count, 1);
    let subtree = coverage::queries::organization(&pool, TENANT, ORG, Some("Root/Staging"))
        .await
        .unwrap()
        .unwrap();
    assert!(subtree.rows.is_empty(), "no account under another subtree");
    assert!(
        coverage::queries::organization(&pool, TenantId::from_u128(9), ORG, None)
            .await
            .unwrap()
            .is_none(),
        "another tenant does not see the organization"
    );

    let detection = coverage::queries::detection(&pool, TENANT, DetectionId::from_u128(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (detection.name.as_str(), detection.status.as_str(), detection.version),
        ("root login alarm", "enabled", 1)
    );
    assert_eq!(coverage::queries::detections_in_force(&pool, TENANT).await.unwrap(), 3);
    let covering = coverage::queries::covering(&pool, TENANT, std::slice::from_ref(&member))
        .await
        .unwrap();
    let (best, names) = &covering[&technique("T1530")];
    assert_eq!(*best, 0.9);
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        ["guardduty everywhere", "root login alarm"]
    );
}

#[tokio::test]
async fn a_retired_organization_detection_leaves_every_account_and_is_snapshotted() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let mut log = estate();
    apply(&pool, &Coverage, &log.events).await;
    let first = log.events.len();
    log.append(
        "detection",
        DetectionId::from_u128(51),
        TENANT,
        DetectionEvent::DetectionRetired,
    );
    apply(&pool, &Coverage, &log.events[first..]).await;
    let denominator = attack::latest().denominator_set(&PlatformSet::cloud());

    let (member, _) = coverage::queries::account(&pool, TENANT, MEMBER)
        .await
        .unwrap()
        .unwrap();
    let breakdown = member.breakdown(&denominator);
    assert!(breakdown.organization_only.is_empty() && breakdown.overlap.is_empty());
    assert_eq!(
        ids(&breakdown.account_only),
        ["T1530"],
        "its own detection still covers it"
    );
    assert_eq!(coverage::queries::detections_in_force(&pool, TENANT).await.unwrap(), 2);
    let organization = coverage::queries::organization(&pool, TENANT, ORG, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(organization.org_detection_count, 0);

    // Every change of a figure is a snapshot at the event's position.
    let history = coverage::snapshots::page(&pool, TENANT, "account", MEMBER, at(0), None, None, 100)
        .await
        .unwrap();
    let covered: Vec<u64> = history.iter().map(|s| s.figures["covered"].as_u64().unwrap()).collect();
    assert_eq!(covered.last(), Some(&1), "after the retirement: {covered:?}");
    assert_eq!(history.last().unwrap().position, log.position);
    let organization_history =
        coverage::snapshots::page(&pool, TENANT, "organization", &ORG.to_string(), at(0), None, None, 100)
            .await
            .unwrap();
    let union = organization_history.last().unwrap().figures["union"]["covered"].as_u64();
    assert_eq!(union, Some(1));
}
