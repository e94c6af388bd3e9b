//! What records activity: AWS Config (recorders, rules, conformance packs)
//! and CloudTrail (the trails homed in the region: logging, multi-region,
//! management and data events).

use super::{Read, RegionClients};
use crate::adapters::aws::throttle::Throttle;
use coverwatch_domain::scan::Service;

/// Recorders (recording or not), rules (AWS managed by identifier, custom
/// by name; active or not) and conformance packs.
pub(super) async fn config(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_config::Client::new(&clients.config);
    let service = Service::Config;
    let mut found = vec![];
    throttle.wait("config:DescribeConfigurationRecorders").await;
    let recorders = client
        .describe_configuration_recorders()
        .send()
        .await
        .map_err(|e| clients.failure(service, "config:DescribeConfigurationRecorders", &e))?;
    if !recorders.configuration_recorders().is_empty() {
        throttle.wait("config:DescribeConfigurationRecorderStatus").await;
        let statuses = client
            .describe_configuration_recorder_status()
            .send()
            .await
            .map_err(|e| clients.failure(service, "config:DescribeConfigurationRecorderStatus", &e))?;
        for recorder in recorders.configuration_recorders() {
            let name = recorder.name().unwrap_or("default");
            let recording = statuses
                .configuration_recorders_status()
                .iter()
                .any(|s| s.name() == Some(name) && s.recording());
            let mut observation = clients.observe(service, "recorder", name, recording);
            let all = recorder.recording_group().is_some_and(|g| g.all_supported());
            observation.detail.insert(
                "resource_types".into(),
                if all { "all supported" } else { "selected" }.into(),
            );
            found.push(observation);
        }
    }
    let mut token = None;
    loop {
        throttle.wait("config:DescribeConfigRules").await;
        let page = client
            .describe_config_rules()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "config:DescribeConfigRules", &e))?;
        for rule in page.config_rules() {
            let name = rule.config_rule_name().unwrap_or("rule");
            let active = rule.config_rule_state().is_none_or(|s| s.as_str() == "ACTIVE");
            let managed = rule
                .source()
                .filter(|s| s.owner().as_str() == "AWS")
                .and_then(|s| s.source_identifier());
            let kind = match managed {
                Some(identifier) => format!("rule:{identifier}"),
                None => "custom-rule".to_owned(),
            };
            found.push(clients.observe(service, kind, name, active));
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let mut token = None;
    loop {
        throttle.wait("config:DescribeConformancePacks").await;
        let page = client
            .describe_conformance_packs()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "config:DescribeConformancePacks", &e))?;
        for pack in page.conformance_pack_details() {
            found.push(clients.observe(service, "conformance-pack", pack.conformance_pack_name(), true));
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(found)
}

/// The trails homed in this region (a multi-region trail is read once, in
/// its home region): logging or not, and what they record.
pub(super) async fn cloudtrail(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_cloudtrail::Client::new(&clients.config);
    let service = Service::Cloudtrail;
    throttle.wait("cloudtrail:DescribeTrails").await;
    let trails = client
        .describe_trails()
        .include_shadow_trails(false)
        .send()
        .await
        .map_err(|e| clients.failure(service, "cloudtrail:DescribeTrails", &e))?;
    let mut found = vec![];
    for trail in trails.trail_list() {
        let Some(arn) = trail.trail_arn() else { continue };
        if trail.home_region().is_some_and(|home| home != clients.region.as_str()) {
            continue;
        }
        throttle.wait("cloudtrail:GetTrailStatus").await;
        let status = client
            .get_trail_status()
            .name(arn)
            .send()
            .await
            .map_err(|e| clients.failure(service, "cloudtrail:GetTrailStatus", &e))?;
        throttle.wait("cloudtrail:GetEventSelectors").await;
        let selectors = client
            .get_event_selectors()
            .trail_name(arn)
            .send()
            .await
            .map_err(|e| clients.failure(service, "cloudtrail:GetEventSelectors", &e))?;
        // A trail without selectors records management events (AWS's default).
        let management = selectors.event_selectors().is_empty() && selectors.advanced_event_selectors().is_empty()
            || selectors
                .event_selectors()
                .iter()
                .any(|s| s.include_management_events().unwrap_or(true))
            || !selectors.advanced_event_selectors().is_empty();
        let data = selectors
            .event_selectors()
            .iter()
            .any(|s| !s.data_resources().is_empty())
            || !selectors.advanced_event_selectors().is_empty();
        let logging = status.is_logging().unwrap_or(false);
        let mut observation = clients.observe(service, "trail", arn, logging);
        let flag = |b: bool| if b { "true" } else { "false" }.to_owned();
        observation.detail.insert(
            "multi_region".into(),
            flag(trail.is_multi_region_trail().unwrap_or(false)),
        );
        observation.detail.insert(
            "organization".into(),
            flag(trail.is_organization_trail().unwrap_or(false)),
        );
        observation.detail.insert("management_events".into(), flag(management));
        observation.detail.insert("data_events".into(), flag(data));
        found.push(observation);
    }
    Ok(found)
}
