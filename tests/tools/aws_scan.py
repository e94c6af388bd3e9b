"""Deploys detections into moto accounts for the scanning tests and the
scanning benchmark, with boto3 (the `x-moto-account-id` header selects the
account, as SCANNING-FAKES.md describes), and scans the plain way (boto3,
sequential) as the benchmark's baseline.

  aws_scan.py seed  --endpoint URL < plan.json     deploys the plan
  aws_scan.py scan  --endpoint URL < targets.json  a sequential boto3 scan, timed (JSON)

A plan: {"<account>": {"<region>": {
    "guardduty": {"enabled": true, "features": ["S3_DATA_EVENTS"]},
    "securityhub": true,
    "config": {"recording": true, "rules": ["CLOUD_TRAIL_ENABLED"]},
    "cis": {"root-usage": true, "cloudtrail-changes": false},   (true: with an alarm)
    "eventbridge": {"ConsoleLogin": true, "StopLogging": false}, (true: with a target)
    "trail": {"multi_region": true, "logging": true},
    "inspector": true,
    "macie": false}}}
"""

import argparse
import json
import sys
import time

import boto3

# Filter patterns of the CIS AWS Foundations Benchmark's monitoring
# recommendations (section 4), as they are commonly deployed.
CIS = {
    "unauthorized-api-calls": '{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }',
    "console-signin-without-mfa": '{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") }',
    "root-usage": '{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }',
    "iam-policy-changes": "{ ($.eventName=DeleteGroupPolicy) || ($.eventName=DeleteRolePolicy) || ($.eventName=DeleteUserPolicy) || ($.eventName=PutGroupPolicy) || ($.eventName=PutRolePolicy) || ($.eventName=PutUserPolicy) || ($.eventName=CreatePolicy) || ($.eventName=DeletePolicy) || ($.eventName=CreatePolicyVersion) || ($.eventName=DeletePolicyVersion) || ($.eventName=AttachRolePolicy) || ($.eventName=DetachRolePolicy) || ($.eventName=AttachUserPolicy) || ($.eventName=DetachUserPolicy) || ($.eventName=AttachGroupPolicy) || ($.eventName=DetachGroupPolicy) }",
    "cloudtrail-changes": "{ ($.eventName = CreateTrail) || ($.eventName = UpdateTrail) || ($.eventName = DeleteTrail) || ($.eventName = StartLogging) || ($.eventName = StopLogging) }",
    "console-auth-failures": '{ ($.eventName = ConsoleLogin) && ($.errorMessage = "Failed authentication") }',
}

API = {
    "ConsoleLogin": ("aws.signin", "AWS Console Sign In via CloudTrail"),
}


def client(service, endpoint, region, account):
    made = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def select(request, **_):
        request.headers["x-moto-account-id"] = account

    made.meta.events.register("before-send.*.*", select)
    return made


def seed_region(endpoint, account, region, plan):
    c = lambda service: client(service, endpoint, region, account)  # noqa: E731
    guardduty = plan.get("guardduty")
    if guardduty:
        features = [{"Name": f, "Status": "ENABLED"} for f in guardduty.get("features", [])]
        detector = c("guardduty").create_detector(Enable=True, Features=features)["DetectorId"]
        if not guardduty.get("enabled", True):
            c("guardduty").update_detector(DetectorId=detector, Enable=False)
    if plan.get("securityhub"):
        c("securityhub").enable_security_hub(EnableDefaultStandards=False)
    config = plan.get("config")
    if config:
        cfg = c("config")
        cfg.put_configuration_recorder(
            ConfigurationRecorder={"name": "default", "roleARN": f"arn:aws:iam::{account}:role/config"}
        )
        bucket = f"config-{account}-{region}"
        s3 = c("s3")
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        cfg.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": bucket})
        if config.get("recording", True):
            cfg.start_configuration_recorder(ConfigurationRecorderName="default")
        for rule in config.get("rules", []):
            cfg.put_config_rule(
                ConfigRule={"ConfigRuleName": rule.lower(), "Source": {"Owner": "AWS", "SourceIdentifier": rule}}
            )
    cis = plan.get("cis", {})
    if cis:
        logs, watch, sns = c("logs"), c("cloudwatch"), c("sns")
        logs.create_log_group(logGroupName="cloudtrail")
        topic = sns.create_topic(Name="security-alarms")["TopicArn"]
        for name, alarmed in cis.items():
            metric = name.replace("-", "_")
            logs.put_metric_filter(
                logGroupName="cloudtrail",
                filterName=name,
                filterPattern=CIS[name],
                metricTransformations=[{"metricName": metric, "metricNamespace": "CISBenchmark", "metricValue": "1"}],
            )
            if alarmed:
                watch.put_metric_alarm(
                    AlarmName=name,
                    MetricName=metric,
                    Namespace="CISBenchmark",
                    Statistic="Sum",
                    Period=300,
                    EvaluationPeriods=1,
                    Threshold=1,
                    ComparisonOperator="GreaterThanOrEqualToThreshold",
                    AlarmActions=[topic],
                )
    events = plan.get("eventbridge", {})
    if events:
        bridge = c("events")
        for name, targeted in events.items():
            source, detail_type = API.get(name, ("aws.cloudtrail", "AWS API Call via CloudTrail"))
            pattern = {"source": [source], "detail-type": [detail_type], "detail": {"eventName": [name]}}
            bridge.put_rule(Name=f"watch-{name}", EventPattern=json.dumps(pattern), State="ENABLED")
            if targeted:
                bridge.put_targets(
                    Rule=f"watch-{name}",
                    Targets=[{"Id": "alarm", "Arn": f"arn:aws:sns:{region}:{account}:security-alarms"}],
                )
    trail = plan.get("trail")
    if trail:
        bucket = f"trail-{account}-{region}"
        s3 = c("s3")
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        ct = c("cloudtrail")
        ct.create_trail(Name="main", S3BucketName=bucket, IsMultiRegionTrail=trail.get("multi_region", True))
        if trail.get("logging", True):
            ct.start_logging(Name="main")
    if plan.get("inspector"):
        c("inspector2").enable(accountIds=[account], resourceTypes=["EC2", "ECR"])
    if plan.get("macie") is False:
        c("macie2").disable_macie()


def seed(endpoint):
    plan = json.load(sys.stdin)
    for account, regions in plan.items():
        for region, what in regions.items():
            seed_region(endpoint, account, region, what)
    print(json.dumps({"seeded": len(plan)}))


def scan(endpoint):
    """The same reads as Coverwatch's scan, one call after the other."""
    targets = json.load(sys.stdin)
    calls = 0
    started = time.monotonic()
    for target in targets:
        account, regions = target["account"], target["regions"]
        sts = boto3.client(
            "sts", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/CoverwatchAudit", RoleSessionName="baseline")
        calls += 1
        for region in regions:
            c = lambda service: client(service, endpoint, region, account)  # noqa: E731
            gd = c("guardduty")
            for detector in gd.list_detectors()["DetectorIds"]:
                gd.get_detector(DetectorId=detector)
                calls += 1
            calls += 1
            try:
                c("securityhub").describe_hub()
            except Exception:  # noqa: BLE001 (not enabled)
                pass
            calls += 1
            cfg = c("config")
            cfg.describe_configuration_recorders()
            cfg.describe_configuration_recorder_status()
            cfg.describe_config_rules()
            calls += 3
            c("logs").describe_metric_filters()
            c("cloudwatch").describe_alarms()
            calls += 2
            bridge = c("events")
            for rule in bridge.list_rules()["Rules"]:
                bridge.list_targets_by_rule(Rule=rule["Name"])
                calls += 1
            calls += 1
            ct = c("cloudtrail")
            for trail in ct.describe_trails(includeShadowTrails=False)["trailList"]:
                ct.get_trail_status(Name=trail["TrailARN"])
                ct.get_event_selectors(TrailName=trail["TrailARN"])
                calls += 2
            calls += 1
            c("inspector2").batch_get_account_status(accountIds=[account])
            calls += 1
            try:
                c("macie2").get_macie_session()
            except Exception:  # noqa: BLE001 (not enabled)
                pass
            calls += 1
    print(json.dumps({"seconds": time.monotonic() - started, "calls": calls}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["seed", "scan"])
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    {"seed": seed, "scan": scan}[args.command](args.endpoint)


if __name__ == "__main__":
    main()
