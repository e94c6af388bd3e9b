"""Deploys detections into moto accounts for the scanning tests and the
scanning benchmark, with boto3 (the `x-moto-account-id` header selects the
account, as SCANNING-FAKES.md describes), and scans the plain way (boto3,
sequential) as the benchmark's baseline.

  aws_scan.py seed  --endpoint URL [--threads N] < plan.json   deploys the plan
  aws_scan.py scan  --endpoint URL < accounts.json   a sequential boto3 scan, timed (JSON):
                    Coverwatch's calls, in its order, with assumed-role credentials

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
import concurrent.futures
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


def seed(endpoint, threads=1):
    plan = json.load(sys.stdin)
    work = [(account, region, what) for account, regions in plan.items() for region, what in regions.items()]
    if threads <= 1:
        for account, region, what in work:
            seed_region(endpoint, account, region, what)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for done in pool.map(lambda w: seed_region(endpoint, *w), work):
                del done
    print(json.dumps({"seeded": len(plan)}))


def pages(call, key, **kwargs):
    """Every item of a paginated call, and the number of calls made."""
    items, calls = [], 0
    while True:
        page = call(**kwargs)
        calls += 1
        items.extend(page.get(key, []))
        token = page.get("NextToken") or page.get("nextToken")
        if not token:
            return items, calls
        kwargs["NextToken" if "NextToken" in page else "nextToken"] = token


def scan_region(c, account, region):
    """Coverwatch's reads of one account and region, in its order (the
    answers are read, not interpreted: the baseline is the calls)."""
    calls = 0
    gd = c("guardduty")
    detectors, n = pages(gd.list_detectors, "DetectorIds")
    calls += n
    for detector in detectors:
        gd.get_detector(DetectorId=detector)
        calls += 1
    sh = c("securityhub")
    calls += 1
    try:
        sh.describe_hub()
        enabled = True
    except sh.exceptions.InvalidAccessException:
        enabled = False
    if enabled:
        standards, n = pages(sh.get_enabled_standards, "StandardsSubscriptions")
        calls += n
        for standard in standards:
            if standard.get("StandardsStatus") == "READY":
                _, n = pages(
                    sh.describe_standards_controls, "Controls",
                    StandardsSubscriptionArn=standard["StandardsSubscriptionArn"],
                )
                calls += n
    cfg = c("config")
    recorders = cfg.describe_configuration_recorders()["ConfigurationRecorders"]
    calls += 1
    if recorders:
        cfg.describe_configuration_recorder_status()
        calls += 1
    calls += pages(cfg.describe_config_rules, "ConfigRules")[1]
    calls += pages(cfg.describe_conformance_packs, "ConformancePackDetails")[1]
    calls += pages(c("cloudwatch").describe_alarms, "MetricAlarms")[1]
    calls += pages(c("logs").describe_metric_filters, "metricFilters")[1]
    bridge = c("events")
    rules, n = pages(bridge.list_rules, "Rules")
    calls += n
    for rule in rules:
        if "cloudtrail" in rule.get("EventPattern", "") or "signin" in rule.get("EventPattern", ""):
            bridge.list_targets_by_rule(Rule=rule["Name"])
            calls += 1
    ct = c("cloudtrail")
    calls += 1
    for trail in ct.describe_trails(includeShadowTrails=False)["trailList"]:
        if trail.get("HomeRegion", region) != region:
            continue
        ct.get_trail_status(Name=trail["TrailARN"])
        ct.get_event_selectors(TrailName=trail["TrailARN"])
        calls += 2
    calls += pages(c("accessanalyzer").list_analyzers, "analyzers")[1]
    c("inspector2").batch_get_account_status(accountIds=[account])
    calls += 1
    mc = c("macie2")
    calls += 1
    try:
        mc.get_macie_session()
    except Exception:  # noqa: BLE001 (not enabled: AccessDenied)
        pass
    return calls


def scan(endpoint, threads=1):
    """The same reads as Coverwatch's scan, with the same credentials (an
    assumed role per account), one call after the other."""
    del threads
    targets = json.load(sys.stdin)
    session = boto3.Session()  # one session: the service models load once
    base = {"endpoint_url": endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sts = session.client("sts", region_name="us-east-1", **base)
    calls = 0
    started = time.monotonic()
    for account in targets:
        assumed = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/CoverwatchAudit",
            RoleSessionName="baseline",
            ExternalId="baseline",
            DurationSeconds=3600,
        )["Credentials"]
        keys = {
            "endpoint_url": endpoint,
            "aws_access_key_id": assumed["AccessKeyId"],
            "aws_secret_access_key": assumed["SecretAccessKey"],
            "aws_session_token": assumed["SessionToken"],
        }
        identity = session.client("sts", region_name="us-east-1", **keys).get_caller_identity()
        assert identity["Account"] == account, identity
        calls += 2
        regions, n = pages(
            session.client("account", region_name="us-east-1", **keys).list_regions,
            "Regions",
            RegionOptStatusContains=["ENABLED", "ENABLED_BY_DEFAULT"],
            MaxResults=50,
        )
        calls += n
        for region in sorted(r["RegionName"] for r in regions):
            c = lambda service: session.client(service, region_name=region, **keys)  # noqa: E731
            calls += scan_region(c, account, region)
    print(json.dumps({"seconds": time.monotonic() - started, "calls": calls, "accounts": len(targets)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["seed", "scan"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    {"seed": seed, "scan": scan}[args.command](args.endpoint, args.threads)


if __name__ == "__main__":
    main()
