//! Organization-level reads beside the hierarchy: delegated administrators
//! (Organizations), SCPs and their targets (Organizations), organization
//! CloudTrail trails (CloudTrail) and Config aggregators (Config). GuardDuty
//! and Security Hub administrators are the delegated administrators of their
//! service principals. Each part fails on its own: its error is reported and
//! the part is marked unread, so nothing it held before is dropped.

use super::{DiscoveryProgress, PAGE_SIZE, describe, each_page};
use crate::adapters::aws::throttle::Throttle;
use coverwatch_domain::cloud::sources::{
    DelegatedAdministrator, OrganizationSource, PolicyTarget, ServiceControlPolicy, SourceDetail,
};

pub(super) const GUARDDUTY: &str = "guardduty.amazonaws.com";
pub(super) const SECURITY_HUB: &str = "securityhub.amazonaws.com";

pub(super) async fn delegated_administrators(
    client: &aws_sdk_organizations::Client,
    throttle: &Throttle,
    progress: &DiscoveryProgress,
) -> Option<Vec<DelegatedAdministrator>> {
    let mut admins = vec![];
    let read = each_page(
        throttle,
        progress,
        "ListDelegatedAdministrators",
        |token| {
            client
                .list_delegated_administrators()
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
        },
        |page| {
            for admin in page.delegated_administrators() {
                let Some(id) = admin.id() else { continue };
                admins.push(DelegatedAdministrator {
                    account_id: id.to_owned(),
                    name: admin.name().unwrap_or_default().to_owned(),
                    service_principals: vec![],
                });
            }
            page.next_token().map(str::to_owned)
        },
    )
    .await;
    if let Err(error) = read {
        progress.error(error);
        return None;
    }
    for admin in &mut admins {
        let principals = &mut admin.service_principals;
        let read = each_page(
            throttle,
            progress,
            "ListDelegatedServicesForAccount",
            |token| {
                client
                    .list_delegated_services_for_account()
                    .account_id(&admin.account_id)
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                principals.extend(
                    page.delegated_services()
                        .iter()
                        .filter_map(|s| s.service_principal().map(str::to_owned)),
                );
                page.next_token().map(str::to_owned)
            },
        )
        .await;
        if let Err(error) = read {
            progress.error(format!("{error} ({})", admin.account_id));
            return None;
        }
        principals.sort();
        principals.dedup();
    }
    admins.sort();
    Some(admins)
}

/// GuardDuty and Security Hub administrators, from the delegated ones.
pub(super) fn administrator_sources(admins: &[DelegatedAdministrator]) -> Vec<OrganizationSource> {
    let mut sources = vec![];
    for admin in admins {
        for principal in &admin.service_principals {
            let (prefix, name, detail) = match principal.as_str() {
                GUARDDUTY => (
                    "guardduty",
                    "GuardDuty delegated administrator",
                    SourceDetail::Guardduty {
                        administrator_account_id: admin.account_id.clone(),
                    },
                ),
                SECURITY_HUB => (
                    "securityhub",
                    "Security Hub administrator",
                    SourceDetail::SecurityHub {
                        administrator_account_id: admin.account_id.clone(),
                    },
                ),
                _ => continue,
            };
            sources.push(OrganizationSource {
                id: format!("{prefix}:{}", admin.account_id),
                name: name.to_owned(),
                account_id: admin.account_id.clone(),
                detail,
            });
        }
    }
    sources
}

pub(super) async fn service_control_policies(
    client: &aws_sdk_organizations::Client,
    throttle: &Throttle,
    progress: &DiscoveryProgress,
) -> Option<Vec<ServiceControlPolicy>> {
    use aws_sdk_organizations::types::PolicyType;
    let mut policies = vec![];
    let read = each_page(
        throttle,
        progress,
        "ListPolicies",
        |token| {
            client
                .list_policies()
                .filter(PolicyType::ServiceControlPolicy)
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
        },
        |page| {
            for policy in page.policies() {
                let Some(id) = policy.id() else { continue };
                policies.push(ServiceControlPolicy {
                    id: id.to_owned(),
                    name: policy.name().unwrap_or_default().to_owned(),
                    aws_managed: policy.aws_managed(),
                    targets: vec![],
                });
            }
            page.next_token().map(str::to_owned)
        },
    )
    .await;
    if let Err(error) = read {
        progress.error(error);
        return None;
    }
    for policy in &mut policies {
        let targets = &mut policy.targets;
        let read = each_page(
            throttle,
            progress,
            "ListTargetsForPolicy",
            |token| {
                client
                    .list_targets_for_policy()
                    .policy_id(&policy.id)
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                for target in page.targets() {
                    let Some(id) = target.target_id() else { continue };
                    targets.push(PolicyTarget {
                        target_id: id.to_owned(),
                        kind: target.r#type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                        name: target.name().unwrap_or_default().to_owned(),
                    });
                }
                page.next_token().map(str::to_owned)
            },
        )
        .await;
        if let Err(error) = read {
            progress.error(format!("{error} ({})", policy.id));
            return None;
        }
        targets.sort();
    }
    policies.sort();
    Some(policies)
}

/// Organization trails (multi-region ones appear as shadow trails in other
/// regions, so they are listed wherever they live), with their logging status.
pub(super) async fn organization_trails(
    client: &aws_sdk_cloudtrail::Client,
    throttle: &Throttle,
    progress: &DiscoveryProgress,
) -> Option<Vec<OrganizationSource>> {
    throttle.wait("DescribeTrails").await;
    let trails = match client.describe_trails().include_shadow_trails(true).send().await {
        Ok(trails) => trails,
        Err(error) => {
            progress.error(format!("CloudTrail DescribeTrails: {}", describe(&error)));
            return None;
        }
    };
    progress.page();
    let mut sources = vec![];
    for trail in trails.trail_list() {
        let (Some(arn), Some(name)) = (trail.trail_arn(), trail.name()) else {
            continue;
        };
        if trail.is_organization_trail() != Some(true) {
            continue;
        }
        throttle.wait("GetTrailStatus").await;
        let logging = match client.get_trail_status().name(arn).send().await {
            Ok(status) => {
                progress.page();
                status.is_logging()
            }
            Err(error) => {
                // The trail is known; only its status is not.
                progress.error(format!("CloudTrail GetTrailStatus {name}: {}", describe(&error)));
                None
            }
        };
        sources.push(OrganizationSource {
            id: arn.to_owned(),
            name: name.to_owned(),
            account_id: arn_account(arn),
            detail: SourceDetail::CloudtrailOrganizationTrail {
                home_region: trail.home_region().unwrap_or_default().to_owned(),
                multi_region: trail.is_multi_region_trail().unwrap_or(false),
                logging,
                s3_bucket: trail.s3_bucket_name().map(str::to_owned),
            },
        });
    }
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    Some(sources)
}

pub(super) async fn config_aggregators(
    client: &aws_sdk_config::Client,
    throttle: &Throttle,
    progress: &DiscoveryProgress,
) -> Option<Vec<OrganizationSource>> {
    let mut sources = vec![];
    let read = each_page(
        throttle,
        progress,
        "DescribeConfigurationAggregators",
        |token| client.describe_configuration_aggregators().set_next_token(token).send(),
        |page| {
            sources.extend(page.configuration_aggregators().iter().filter_map(aggregator_source));
            page.next_token().map(str::to_owned)
        },
    )
    .await;
    if let Err(error) = read {
        progress.error(format!("Config {error}"));
        return None;
    }
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    Some(sources)
}

fn aggregator_source(aggregator: &aws_sdk_config::types::ConfigurationAggregator) -> Option<OrganizationSource> {
    let arn = aggregator.configuration_aggregator_arn()?;
    let name = aggregator.configuration_aggregator_name()?;
    let mut regions = vec![];
    let mut all_regions = false;
    let mut account_ids = vec![];
    let organization = aggregator.organization_aggregation_source();
    if let Some(source) = organization {
        all_regions |= source.all_aws_regions();
        regions.extend(source.aws_regions().iter().cloned());
    }
    for source in aggregator.account_aggregation_sources() {
        all_regions |= source.all_aws_regions();
        regions.extend(source.aws_regions().iter().cloned());
        account_ids.extend(source.account_ids().iter().cloned());
    }
    regions.sort();
    regions.dedup();
    account_ids.sort();
    account_ids.dedup();
    Some(OrganizationSource {
        id: arn.to_owned(),
        name: name.to_owned(),
        account_id: arn_account(arn),
        detail: SourceDetail::ConfigAggregator {
            organization: organization.is_some(),
            account_ids,
            all_regions,
            regions,
        },
    })
}

/// The account field of an ARN (`arn:aws:service:region:account:...`).
fn arn_account(arn: &str) -> String {
    arn.split(':').nth(4).unwrap_or_default().to_owned()
}
