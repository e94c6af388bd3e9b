//! What alerts on activity: CloudWatch Logs metric filters with the alarms
//! on their metrics (recognised as CIS recommendations where they match
//! one), and EventBridge rules on CloudTrail API events with a target.

use super::{Read, RegionClients};
use crate::adapters::aws::throttle::Throttle;
use coverwatch_domain::scan::Service;
use coverwatch_domain::scan::mapping::recognise_cis;
use std::collections::BTreeSet;

/// Metric filters, each observed once per CIS recommendation it matches
/// (or as a plain `metric-filter`), enabled when an alarm with an enabled
/// action watches its metric.
pub(super) async fn cloudwatch(clients: &RegionClients, throttle: &Throttle) -> Read {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&clients.config);
    let alarms = aws_sdk_cloudwatch::Client::new(&clients.config);
    let service = Service::Cloudwatch;
    let mut watched: BTreeSet<(String, String)> = BTreeSet::new();
    let mut token = None;
    loop {
        throttle.wait("cloudwatch:DescribeAlarms").await;
        let page = alarms
            .describe_alarms()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "cloudwatch:DescribeAlarms", &e))?;
        for alarm in page.metric_alarms() {
            let acts = alarm.actions_enabled().unwrap_or(true) && !alarm.alarm_actions().is_empty();
            if let (true, Some(namespace), Some(metric)) = (acts, alarm.namespace(), alarm.metric_name()) {
                watched.insert((namespace.to_owned(), metric.to_owned()));
            }
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let mut found = vec![];
    let mut token = None;
    loop {
        throttle.wait("logs:DescribeMetricFilters").await;
        let page = logs
            .describe_metric_filters()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "logs:DescribeMetricFilters", &e))?;
        for filter in page.metric_filters() {
            let resource = format!(
                "{}/{}",
                filter.log_group_name().unwrap_or_default(),
                filter.filter_name().unwrap_or_default()
            );
            let alarmed = filter
                .metric_transformations()
                .iter()
                .any(|t| watched.contains(&(t.metric_namespace().to_owned(), t.metric_name().to_owned())));
            let recognised = recognise_cis(filter.filter_pattern().unwrap_or_default());
            if recognised.is_empty() {
                found.push(clients.observe(service, "metric-filter", &resource, alarmed));
            }
            for pattern in recognised {
                let mut observation = clients.observe(service, format!("cis:{}", pattern.id), &resource, alarmed);
                observation.detail.insert("recommendation".into(), pattern.name.clone());
                found.push(observation);
            }
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(found)
}

/// What a rule's pattern selects of CloudTrail's events: the API names in
/// `detail.eventName` when it selects CloudTrail events at all.
pub(crate) fn cloudtrail_events(pattern: &str) -> Vec<String> {
    let Ok(pattern) = serde_json::from_str::<serde_json::Value>(pattern) else {
        return vec![];
    };
    let strings = |value: Option<&serde_json::Value>| -> Vec<String> {
        match value {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
            }
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    };
    let detail_types = strings(pattern.get("detail-type"));
    let from_cloudtrail = detail_types.is_empty()
        || detail_types
            .iter()
            .any(|t| t == "AWS API Call via CloudTrail" || t == "AWS Console Sign In via CloudTrail");
    if !from_cloudtrail {
        return vec![];
    }
    strings(pattern.get("detail").and_then(|d| d.get("eventName")))
}

/// Rules on the default bus, each observed once per CloudTrail API it
/// selects, enabled when the rule is and has a target.
pub(super) async fn eventbridge(clients: &RegionClients, throttle: &Throttle) -> Read {
    let client = aws_sdk_eventbridge::Client::new(&clients.config);
    let service = Service::Eventbridge;
    let mut found = vec![];
    let mut token = None;
    loop {
        throttle.wait("events:ListRules").await;
        let page = client
            .list_rules()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| clients.failure(service, "events:ListRules", &e))?;
        for rule in page.rules() {
            let (Some(name), Some(pattern)) = (rule.name(), rule.event_pattern()) else {
                continue;
            };
            let events = cloudtrail_events(pattern);
            if events.is_empty() {
                continue;
            }
            throttle.wait("events:ListTargetsByRule").await;
            let targets = client
                .list_targets_by_rule()
                .rule(name)
                .send()
                .await
                .map_err(|e| clients.failure(service, "events:ListTargetsByRule", &e))?;
            let enabled = rule.state().is_some_and(|s| s.as_str() == "ENABLED") && !targets.targets().is_empty();
            let resource = rule.arn().unwrap_or(name);
            for event in events {
                found.push(clients.observe(service, format!("event:{event}"), resource, enabled));
            }
        }
        match page.next_token().filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::cloudtrail_events;

    #[test]
    fn rules_are_read_for_the_cloudtrail_apis_they_select() {
        let console = r#"{"source":["aws.signin"],"detail-type":["AWS Console Sign In via CloudTrail"],"detail":{"eventName":["ConsoleLogin"]}}"#;
        assert_eq!(cloudtrail_events(console), ["ConsoleLogin"]);
        let api = r#"{"source":["aws.cloudtrail"],"detail-type":["AWS API Call via CloudTrail"],"detail":{"eventName":["StopLogging","DeleteTrail"]}}"#;
        assert_eq!(cloudtrail_events(api), ["StopLogging", "DeleteTrail"]);
        let other = r#"{"source":["aws.ec2"],"detail-type":["EC2 Instance State-change Notification"]}"#;
        assert!(cloudtrail_events(other).is_empty());
        assert!(cloudtrail_events("not json").is_empty());
    }
}
