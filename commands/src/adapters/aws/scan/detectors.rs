//! The detection services: GuardDuty (detectors and their features),
//! Security Hub (hub, standards, controls), IAM Access Analyzer, Inspector
//! and Macie. A service that is simply not enabled is not an error: its
//! answer says so (and nothing is observed).

use super::{Read, RegionClients};
use crate::adapters::aws::throttle::Throttle;
use coverwatch_domain::scan::Service;

/// Detectors (one per account and region), enabled or not, and each
/// enabled detector's features.
pub(super) async fn guardduty(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_guardduty::Client::new(&clients.config);
    let service = Service::Guardduty;
    let mut found = vec![];
    let mut detectors = vec![];
    let mut token = None;
    loop {
        throttle.wait("guardduty:ListDetectors").await;
        let page = client
            .list_detectors()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "guardduty:ListDetectors", &e))?;
        detectors.extend(page.detector_ids().iter().cloned());
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    for id in detectors {
        throttle.wait("guardduty:GetDetector").await;
        let detector = client
            .get_detector()
            .detector_id(&id)
            .send()
            .await
            .map_err(|e| clients.failure(service, "guardduty:GetDetector", &e))?;
        let status = detector.status().map(|s| s.as_str()).unwrap_or("UNKNOWN");
        let enabled = status == "ENABLED";
        let mut observation = clients.observe(service, "detector", &id, enabled);
        observation.detail.insert("status".into(), status.to_owned());
        found.push(observation);
        if !enabled {
            continue;
        }
        let mut features: Vec<(String, bool)> = detector
            .features()
            .iter()
            .filter_map(|f| {
                let name = f.name()?.as_str().to_owned();
                Some((name, f.status().is_some_and(|s| s.as_str() == "ENABLED")))
            })
            .collect();
        if features.is_empty() {
            features = legacy_data_sources(&detector);
        }
        for (name, on) in features {
            // The foundational sources are the detector itself.
            if ["CLOUD_TRAIL", "DNS_LOGS", "FLOW_LOGS"].contains(&name.as_str()) {
                continue;
            }
            found.push(clients.observe(service, format!("feature:{name}"), &id, on));
        }
    }
    Ok(found)
}

/// Detectors set up before features existed report data sources instead
/// (the field AWS deprecated for features, still answered).
#[expect(deprecated, reason = "the only place older detectors report S3 and EKS protection")]
fn legacy_data_sources(
    detector: &aws_sdk_guardduty::operation::get_detector::GetDetectorOutput,
) -> Vec<(String, bool)> {
    let on = |s: Option<&aws_sdk_guardduty::types::DataSourceStatus>| s.is_some_and(|s| s.as_str() == "ENABLED");
    let mut features = vec![];
    if let Some(sources) = detector.data_sources() {
        if let Some(s3) = sources.s3_logs() {
            features.push(("S3_DATA_EVENTS".into(), on(s3.status())));
        }
        if let Some(audit) = sources.kubernetes().and_then(|k| k.audit_logs()) {
            features.push(("EKS_AUDIT_LOGS".into(), on(audit.status())));
        }
    }
    features
}

/// The hub, its enabled standards and their controls (enabled or not).
pub(super) async fn securityhub(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_securityhub::Client::new(&clients.config);
    let service = Service::Securityhub;
    throttle.wait("securityhub:DescribeHub").await;
    let hub = match client.describe_hub().send().await {
        Ok(hub) => hub,
        // Not enabled in this region: AWS answers InvalidAccessException.
        Err(error)
            if error
                .as_service_error()
                .and_then(aws_sdk_securityhub::error::ProvideErrorMetadata::code)
                == Some("InvalidAccessException") =>
        {
            return Ok(vec![]);
        }
        Err(error) => return Err(clients.failure(service, "securityhub:DescribeHub", &error)),
    };
    let hub_arn = hub.hub_arn().unwrap_or("hub").to_owned();
    let mut found = vec![clients.observe(service, "hub", &hub_arn, true)];
    let mut subscriptions = vec![];
    let mut token = None;
    loop {
        throttle.wait("securityhub:GetEnabledStandards").await;
        let page = client
            .get_enabled_standards()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "securityhub:GetEnabledStandards", &e))?;
        for subscription in page.standards_subscriptions() {
            let (Some(arn), Some(standard)) = (subscription.standards_subscription_arn(), subscription.standards_arn())
            else {
                continue;
            };
            let status = subscription.standards_status().map(|s| s.as_str()).unwrap_or("UNKNOWN");
            let mut observation = clients.observe(service, "standard", standard, status == "READY");
            observation.detail.insert("status".into(), status.to_owned());
            found.push(observation);
            if status == "READY" {
                subscriptions.push(arn.to_owned());
            }
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    for subscription in subscriptions {
        let mut token = None;
        loop {
            throttle.wait("securityhub:DescribeStandardsControls").await;
            let page = client
                .describe_standards_controls()
                .standards_subscription_arn(&subscription)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| clients.failure(service, "securityhub:DescribeStandardsControls", &e))?;
            for control in page.controls() {
                let Some(id) = control.control_id() else { continue };
                let enabled = control.control_status().is_some_and(|s| s.as_str() == "ENABLED");
                let resource = control.standards_control_arn().unwrap_or(id);
                found.push(clients.observe(service, format!("control:{id}"), resource, enabled));
            }
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
    }
    Ok(found)
}

/// Analyzers (account or organization zone of trust), active or not.
pub(super) async fn access_analyzer(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_accessanalyzer::Client::new(&clients.config);
    let service = Service::Accessanalyzer;
    let mut found = vec![];
    let mut token = None;
    loop {
        throttle.wait("access-analyzer:ListAnalyzers").await;
        let page = client
            .list_analyzers()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "access-analyzer:ListAnalyzers", &e))?;
        for analyzer in page.analyzers() {
            let status = analyzer.status().as_str();
            let mut observation = clients.observe(service, "analyzer", analyzer.arn(), status == "ACTIVE");
            observation.detail.insert("status".into(), status.to_owned());
            observation
                .detail
                .insert("type".into(), analyzer.r#type().as_str().to_owned());
            found.push(observation);
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(found)
}

/// Inspector's scanning of the account: which resource types it scans.
pub(super) async fn inspector(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_inspector2::Client::new(&clients.config);
    let service = Service::Inspector;
    throttle.wait("inspector2:BatchGetAccountStatus").await;
    let status = client
        .batch_get_account_status()
        .account_ids(clients.account_id.as_str())
        .send()
        .await
        .map_err(|e| clients.failure(service, "inspector2:BatchGetAccountStatus", &e))?;
    // An account never enabled has no entry: not scanning.
    let Some(account) = status
        .accounts()
        .iter()
        .find(|a| a.account_id() == clients.account_id.as_str())
    else {
        return Ok(vec![]);
    };
    let on = |state: Option<&aws_sdk_inspector2::types::State>| state.is_some_and(|s| s.status().as_str() == "ENABLED");
    let mut types = vec![];
    if let Some(resources) = account.resource_state() {
        for (name, state) in [
            ("ec2", resources.ec2()),
            ("ecr", resources.ecr()),
            ("lambda", resources.lambda()),
            ("lambda_code", resources.lambda_code()),
        ] {
            if on(state) {
                types.push(name);
            }
        }
    }
    let mut observation = clients.observe(service, "scanning", clients.account_id.as_str(), !types.is_empty());
    observation.detail.insert("resource_types".into(), types.join(","));
    Ok(vec![observation])
}

/// Macie's session: enabled, paused, or not enabled at all.
pub(super) async fn macie(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_macie2::Client::new(&clients.config);
    let service = Service::Macie;
    throttle.wait("macie2:GetMacieSession").await;
    match client.get_macie_session().send().await {
        Ok(session) => {
            let status = session.status().map(|s| s.as_str()).unwrap_or("UNKNOWN");
            let mut observation = clients.observe(service, "macie", clients.account_id.as_str(), status == "ENABLED");
            observation.detail.insert("status".into(), status.to_owned());
            Ok(vec![observation])
        }
        Err(error) => {
            let metadata = error.as_service_error().map(|e| {
                use aws_sdk_macie2::error::ProvideErrorMetadata;
                (
                    e.code().unwrap_or_default().to_owned(),
                    e.message().unwrap_or_default().to_owned(),
                )
            });
            match metadata {
                // AWS: AccessDenied "Macie is not enabled"; moto: not found.
                Some((code, message))
                    if code == "ResourceNotFoundException"
                        || (code == "AccessDeniedException" && message.to_lowercase().contains("not enabled")) =>
                {
                    Ok(vec![])
                }
                _ => Err(clients.failure(service, "macie2:GetMacieSession", &error)),
            }
        }
    }
}
